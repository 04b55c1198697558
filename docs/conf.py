"""Sphinx configuration for refscore's documentation site.

Build (warnings are errors)::

    python -m sphinx -W -b html docs docs/_build/html
    python -m sphinx -W -b doctest docs docs/_build/doctest
    python -m sphinx -W -b linkcheck docs docs/_build/linkcheck   # internal links only

Everything that could drift is generated from the code at build time by
``docs/_ext/refscore_docs.py``: the API pages (``docs/api/``, written at build
time, not committed), the conventions ledger (``refscore.conventions.TABLE``),
the validation gallery (``figures/*.png`` + ``validation/REPORT.md``), the
test sources linked from the equations, and the commands of README.md lines 1-2.
MathJax is served from ``docs/_static/mathjax`` so the built site renders math
without internet access.
"""
import importlib.util
import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, os.path.join(DOCS, "_ext"))
sys.path.insert(0, ROOT)  # a clone without `pip install -e .` still builds

import refscore  # noqa: E402

# -- project ---------------------------------------------------------------
project = "refscore"
author = "the refscore authors"
copyright = "the refscore authors, MIT licence"
release = refscore.__version__
version = release

# -- extensions ------------------------------------------------------------
extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "refscore_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path = []

# Warnings are errors (-W), and every cross-reference must resolve.
nitpicky = True
# Names in signatures and docstring types that are not documented here (no
# intersphinx: the build runs without internet).
nitpick_ignore_regex = [
    # other libraries (no intersphinx: the build runs without internet)
    (r"py:.*", r"(numpy|np|scipy|numba|matplotlib|pathlib|os|typing|enum|collections|"
               r"concurrent|dask|distributed|jax|torch)(\..*)?"),
    # private helpers and modules that docstrings name to help find the code
    (r"py:.*", r"(.*\.)?_[A-Za-z0-9]\w*(\..*)?"),
    # builtins and words numpydoc or signatures may turn into references
    (r"py:class", r"(ndarray|array_like|array-like|ArrayLike|callable|Callable|optional|"
                  r"default.*|Path|PosixPath|PathLike|int|float|str|bool|dict|list|tuple|object|type|"
                  r"bytes|complex|None|NoneType|Any|Sequence|Mapping|Iterable|Iterator|"
                  r"Generator|Literal|Union|Optional|NamedTuple|IntEnum|Enum)(\[.*)?"),
]
# numpydoc renames the citations of a "References" section; one that the text
# does not cite is not an error.
suppress_warnings = ["ref.citation"]

# -- MyST ------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_dmath_double_inline = True
myst_heading_anchors = 3

# -- autodoc / numpydoc ------------------------------------------------------
autodoc_typehints = "none"          # the numpydoc Parameters sections say it, in words
autodoc_member_order = "bysource"
autodoc_mock_imports = [m for m in ("torch", "jax") if importlib.util.find_spec(m) is None]
autosummary_generate = False        # the API pages are written by refscore_docs
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- math: MathJax 3, vendored (no CDN) -------------------------------------
mathjax_path = "mathjax/tex-svg-full.js"
mathjax3_config = {"svg": {"fontCache": "global"}}

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"refscore {release}"
html_static_path = ["_static"]
html_css_files = ["refscore.css"]  # wide display equations scroll instead of being clipped
html_show_sourcelink = True

# -- doctest builder -------------------------------------------------------
doctest_global_setup = """
import os
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np
import refscore as rs
"""
# Docstring examples run under pytest --doctest-modules, in their module's
# namespace; here the site's own blocks run ({doctest}, {testcode}/{testoutput}),
# so plain >>> blocks (which autodoc brings in from the docstrings) are skipped.
doctest_test_doctest_blocks = ""

# -- linkcheck: no internet here, so only internal links are checked ----------
linkcheck_ignore = [r"https?://.*", r"mailto:.*"]
linkcheck_anchors = True
