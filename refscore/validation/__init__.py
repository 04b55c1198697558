"""refscore's validation suite: ``python -m refscore.validation`` (or, from a
clone, ``python -m validation``; or ``refscore validate``) reproduces the
papers' results on closed-form cases and writes figures and a REPORT.

One module per reproduced result (``refscore.validation.<name>``, run by
:mod:`refscore.validation.runner`); :mod:`refscore.validation.interop` holds the
JAX and torch backends checked against the golden files.  Importing this
package imports neither matplotlib nor numba: figures are drawn lazily.
"""
