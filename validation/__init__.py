"""Forwarding shim: refscore's validation suite lives in :mod:`refscore.validation`.

This root package only keeps ``python -m validation`` (and
``python -m validation.interop``) working from a clone; it is not installed.
``validation/REPORT.md`` next to it is the committed report, regenerated
deliberately with ``python -m validation --out-dir . --force``; by default the
suite writes ``validation-out/validation/REPORT.md`` and refuses to overwrite.
"""
