"""Forwarding shim: refscore's validation suite lives in :mod:`refscore.validation`.

This root package only keeps ``python -m validation`` (and
``python -m validation.interop``) working from a clone; it is not installed.
``validation/REPORT.md`` next to it is the committed report the suite writes
by default (``DIR/validation/REPORT.md`` with ``--out-dir DIR``, default ``.``).
"""
