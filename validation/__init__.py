"""refscore's validation suite: ``python -m validation`` reproduces the papers'
results on closed-form cases and writes figures and a REPORT."""
