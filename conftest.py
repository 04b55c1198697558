"""Repository-level pytest configuration (not installed with the package).

``--doctest-modules`` collects every module under ``refscore/``.  The interop
backends and adapters (``refscore/validation/interop/{jax,torch}_backend.py``,
``refscore/interop/{jax,torch}.py``) import jax or torch at import time, and
both are optional (``refscore[interop]`` installs jax only), so a module whose
library is missing is not collected; its tests (tests/test_interop.py,
tests/test_interop_adapters.py) skip likewise.
"""
import importlib.util

collect_ignore = [path for lib in ("jax", "torch") if importlib.util.find_spec(lib) is None
                  for path in (f"refscore/validation/interop/{lib}_backend.py", f"refscore/interop/{lib}.py")]
