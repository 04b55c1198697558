"""Repository-level pytest configuration (not installed with the package).

``--doctest-modules`` collects every module under ``refscore/``.  The interop
backends import jax or torch at import time, and both are optional
(``refscore[interop]`` installs jax only), so a backend whose library is
missing is not collected; its tests (tests/test_interop.py) skip likewise.
"""
import importlib.util

collect_ignore = [f"refscore/validation/interop/{lib}_backend.py"
                  for lib in ("jax", "torch") if importlib.util.find_spec(lib) is None]
