"""The documentation site builds with warnings as errors, covers the API, and renders its math.

Slow (two Sphinx builds, one headless Chromium page), so not in the default run:
``python -m pytest -m slow tests/test_docs.py``.  Skips when the ``docs`` extra
(``pip install -e '.[docs]'``) is not installed; the math check also skips
without the ``chromium`` Debian package.
"""
from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

for _mod in ("sphinx", "myst_parser", "numpydoc", "furo"):
    pytest.importorskip(_mod, reason="the docs extra is not installed: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 900


def _sphinx(builder: str, out: Path, doctrees: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
         "-d", str(doctrees), str(DOCS), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The HTML site, built once per test run (shared by the pytest-xdist workers)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # common to every worker of this run
    tmp = base / "refscore-docs-site"
    tmp.mkdir(exist_ok=True)
    out, log = tmp / "html", tmp / "build.log"
    with open(tmp / "lock", "w") as lock:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no fcntl: each worker builds into its own directory
            tmp = Path(tmp_path_factory.mktemp("docs"))
            out, log = tmp / "html", tmp / "build.log"
        if not log.exists():
            res = _sphinx("html", out, tmp / "doctrees")
            log.write_text(f"rc={res.returncode}\n{res.stdout}\n{res.stderr}", encoding="utf-8")
    text = log.read_text(encoding="utf-8")
    assert text.startswith("rc=0\n"), f"sphinx -W -b html failed:\n{text}"
    return out


def test_site_code_blocks_run_as_doctests(tmp_path):
    res = _sphinx("doctest", tmp_path / "doctest", tmp_path / "doctrees")
    assert res.returncode == 0, f"sphinx -b doctest failed:\n{res.stdout}\n{res.stderr}"
    summary = (tmp_path / "doctest" / "output.txt").read_text(encoding="utf-8")
    m = re.search(r"^\s*(\d+) tests\s*$", summary, re.M)
    assert m and int(m.group(1)) > 0, summary
    assert re.search(r"^\s*0 failures in tests", summary, re.M), summary


def test_every_page_is_built(site):
    for page in ("index", "getting-started", "derivations", "equations", "validate", "gallery",
                 "performance", "api/index"):
        assert (site / f"{page}.html").is_file(), page


def test_internal_links_resolve(site):
    sys.path.insert(0, str(DOCS))
    try:
        import check_links
    finally:
        sys.path.remove(str(DOCS))
    problems, n, _ = check_links.check(site)
    assert n > 1000
    assert not problems, "\n".join(problems[:50])


# ------------------------------------------------------------------ the API
def _public_modules():
    """(dotted name, __all__) for refscore and every public submodule (no ``_`` component)."""
    import refscore

    out = [("refscore", list(refscore.__all__))]
    for info in pkgutil.walk_packages(refscore.__path__, "refscore."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        try:
            names = getattr(importlib.import_module(info.name), "__all__", None)
        except ImportError:  # an optional backend (torch, jax): read __all__ from the source
            spec = importlib.util.find_spec(info.name)
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
            names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                          and any(getattr(t, "id", None) == "__all__" for t in n.targets)), None)
        if names is not None:
            out.append((info.name, list(names)))
    return out


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" and v:
                self.ids.add(v)


def test_every_public_name_is_in_the_api_reference(site):
    modules = _public_modules()
    assert len(modules) > 15
    ids, pages = set(), {}
    for html in (site / "api").glob("*.html"):
        text = html.read_text(encoding="utf-8")
        pages[html.stem] = text
        p = _Ids()
        p.feed(text)
        ids |= p.ids
    exported = {}
    for mod, names in modules:
        for name in names:
            exported.setdefault(name, set()).add(mod)
    missing = []
    for mod, names in modules:
        page = pages.get(mod)
        if page is None:
            missing.append(f"{mod}: no page api/{mod}.html")
            continue
        for name in names:
            if name not in page:
                missing.append(f"{mod}.{name}: not on api/{mod}.html")
            # documented (an anchor) under one of the modules that export it, or a module itself
            if not ({f"{m}.{name}" for m in exported[name]} | {f"module-{mod}.{name}"}) & ids:
                missing.append(f"{mod}.{name}: no documented entry")
    assert not missing, "\n".join(missing)


# ------------------------------------------------------- math, in a browser
class _VisibleText(HTMLParser):
    HIDDEN = {"script", "style", "noscript", "template"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.parts = []
        self.mjx = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.depth += 1
        if tag == "mjx-container":
            self.mjx += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")


def test_derivations_math_renders_offline_in_chromium(site, tmp_path):
    browser = _chromium()
    html = site / "derivations.html"
    # MathJax is served from the build, never a CDN
    assert "mathjax/tex-svg-full.js" in html.read_text(encoding="utf-8")
    assert (site / "_static" / "mathjax" / "tex-svg-full.js").is_file()
    res = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000",
         "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    page = _VisibleText()
    page.feed(res.stdout)
    text = "".join(page.parts)
    assert "Sliced score matching" in text  # the page itself, not an error page
    assert page.mjx > 100, f"only {page.mjx} mjx-container elements: MathJax did not run"
    for raw in ("$$", "\\frac", "\\nabla", "\\tag", "\\mathbb"):
        i = text.find(raw)
        assert i < 0, f"raw TeX {raw!r} left in the page: ...{text[max(0, i - 80):i + 80]}..."


_OVERFLOW_PROBE = """<script>
window.addEventListener("load", function () { MathJax.startup.promise.then(function () {
  var column = (document.querySelector("article") || document.body).getBoundingClientRect().right;
  var rows = [];
  document.querySelectorAll('mjx-container[display="true"]').forEach(function (e) {
    var box = e.getBoundingClientRect();
    rows.push([Math.round(box.right), Math.round(column), e.scrollWidth, e.clientWidth,
               getComputedStyle(e).overflowX].join(","));
  });
  var pre = document.createElement("pre"); pre.id = "overflow-probe"; pre.textContent = rows.join("\\n");
  document.body.appendChild(pre);
}); });
</script></body>"""


def test_wide_display_equations_scroll_instead_of_being_clipped_at_1280px(site, tmp_path):
    """At a 1280 px window every display equation stays inside the text column, and one wider than
    the column (several in derivations.md) scrolls in its own box (overflow-x: auto from
    docs/_static/refscore.css) rather than being cut off at the column's edge."""
    browser = _chromium()
    probe = site / "derivations-overflow-probe.html"
    probe.write_text((site / "derivations.html").read_text(encoding="utf-8").replace("</body>", _OVERFLOW_PROBE),
                     encoding="utf-8")
    try:
        res = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=30000", "--window-size=1280,900", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=300)
    finally:
        probe.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    import html as _html
    import re as _re

    m = _re.search(r'<pre id="overflow-probe">(.*?)</pre>', res.stdout, _re.S)
    assert m, "the probe did not run (MathJax did not finish)"
    rows = [line.split(",") for line in _html.unescape(m.group(1)).splitlines()]
    assert len(rows) > 20
    wide = 0
    for right, column, scroll_width, client_width, overflow in rows:
        assert int(right) <= int(column) + 1, (right, column)  # the box never passes the column
        if int(scroll_width) > int(client_width):
            wide += 1
            assert overflow in ("auto", "scroll"), overflow  # its content scrolls, not clipped
    assert wide > 0  # the page does have equations wider than the column: the rule is exercised
