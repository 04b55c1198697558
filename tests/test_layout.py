"""The repository's structural rules, checked on the source text.

* numba is imported only on the kernel floor (``refscore/_kernels``), and
  ``import refscore`` loads none of it;
* the reference runs with numba absent (import blocked in a subprocess);
* no ``getattr`` on private names, no class-name string comparisons;
* nothing cites a file outside the repository;
* no import circle anywhere in the package (lazy imports included), no private
  name imported across packages, no conversion looked up by text.
"""
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "refscore"
FLOOR = PACKAGE / "_kernels"


def _sources(root=PACKAGE):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_numba_is_imported_only_on_the_kernel_floor():
    pattern = re.compile(r"^\s*(import numba|from numba\b)", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in _sources()
                 if FLOOR not in p.parents and pattern.search(p.read_text())]
    assert offenders == []


def test_no_getattr_on_private_names_and_no_class_name_comparisons():
    private_getattr = re.compile(r"getattr\([^,]+,\s*[\"']_")
    names = "|".join(["Gaussian", "GaussianMixture", "StudentT", "Banana", "Perturbed", "GaussianModel",
                      "LinearScore", "GaussianMixtureModel", "MLPScore", "MLPEnergy", "NoiseConditional"])
    class_name_cmp = re.compile(r"\.__name__\s*(==|!=|in\b)|(==|!=|\bin)\s*\(?\s*[\"'](" + names + r")[\"']")
    offenders = []
    # the interop backends are independent re-implementations that read the
    # golden files' model keys ("MLPScore", ...) as data; they never see refscore's classes
    interop = PACKAGE / "validation" / "interop"
    for p in _sources():
        text = p.read_text()
        for rx in (private_getattr,) if interop in p.parents else (private_getattr, class_name_cmp):
            offenders += [f"{p.relative_to(ROOT)}: {m.group(0)}" for m in rx.finditer(text)]
    assert offenders == []


def test_nothing_cites_a_file_outside_the_repository():
    pattern = re.compile(r"\.\./shared|DERIVATIONS\.md|API\.md|[Ii]ssues? \d|seed-score-matching")
    files = (_sources() + _sources(ROOT / "tests") + _sources(ROOT / "benchmarks") + [ROOT / "README.md"]
             + sorted((ROOT / "benchmarks").glob("*.json")) + sorted((ROOT / "docs").glob("*.md")))
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if p != pathlib.Path(__file__).resolve() and pattern.search(p.read_text())]
    assert offenders == []


def test_cited_derivation_sections_exist():
    doc = (ROOT / "docs" / "derivations.md").read_text()
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", doc, re.MULTILINE))
    cited = set()
    for p in _sources() + [ROOT / "README.md"]:
        for group in re.findall(r"docs/derivations\.md`?`? ((?:§\d+(?:\.\d+)?(?:[,–-] ?)?(?: and )?)+)", p.read_text()):
            cited.update(re.findall(r"§(\d+(?:\.\d+)?)", group))
    assert cited, "no citation found: the pattern is wrong"
    assert sorted(cited - sections) == []


_NO_NUMBA = textwrap.dedent("""
    import sys
    sys.modules["numba"] = None  # any "import numba" now raises ImportError
    import numpy as np
    import refscore as rs
    from refscore._kernels import numba_available
    assert not numba_available()
    m = rs.MLPScore(2, (6, 5), "tanh")  # backend "auto": the NumPy engine
    theta = m.init(0)
    x = np.random.default_rng(0).standard_normal((40, 2))
    v, g = rs.ism(m, theta, x, grad=True)
    assert np.isfinite(v) and np.isfinite(g).all() and not m.uses_numba
    rs.ssm(m, theta, x, rs.projections(1, (40, 2), "rademacher"), grad=True)
    rs.dsm(m, theta, x, 0.5, np.ones((40, 2)), grad=True)
    res = rs.ula(rs.Gaussian([0.0, 0.0], np.eye(2)), np.zeros((8, 2)), 0.1, 20, seed=0)
    assert np.isfinite(res.x).all()
    try:
        rs.ula(rs.Gaussian([0.0, 0.0], np.eye(2)), np.zeros((8, 2)), 0.1, 20, seed=0, backend="numba")
    except ImportError as exc:
        assert "needs numba" in str(exc), exc
    else:
        raise AssertionError("backend='numba' ran without numba")
    print("reference ok without numba")
""")


def test_reference_runs_with_numba_absent():
    res = subprocess.run([sys.executable, "-c", _NO_NUMBA], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reference ok without numba" in res.stdout


def test_import_refscore_loads_no_numba():
    code = "import sys, refscore; print(sorted(m for m in sys.modules if m == 'numba' or m.startswith('numba.')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["refscore.models.mlp", "refscore.losses", "refscore.sampling",
                                    "refscore.quadrature", "refscore.golden", "refscore.cli"])
def test_reference_modules_import_without_the_floor_compiling(module):
    code = f"import sys, {module}; print(any(m.startswith('refscore._kernels.') and m.split('.')[-1] in "
    code += "('vecmath', 'mlp_losses', 'cpu_sampler', 'cuda_sampler') for m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# ----------------------------------------------------------------- the import graph
def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in _sources()}


def _imports(module, path, modules):
    """``(target module, imported name or None)`` of every import statement in ``path``, function-level and
    bottom-of-file ones included; ``from package import submodule`` counts as an import of the submodule."""
    import ast

    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub, None) if sub in modules else (target, alias.name)


def _import_graph():
    modules = _modules()
    return {m: {t for t, _ in _imports(m, p, modules) if t in modules and t != m} for m, p in modules.items()}


def _circles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_anywhere_in_the_package():
    """Every import statement counts, lazy ones inside functions too: a circle hidden in a function
    is still two modules that cannot be read (or loaded) one without the other."""
    graph = _import_graph()
    assert len(graph) > 50
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_across_packages():
    """``from X import _name`` only within one package (refscore, refscore.golden, ...): a private
    name used elsewhere is a seam nobody declared."""
    modules = _modules()
    offenders = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for target, name in _imports(module, path, modules):
            if name is None or not name.startswith("_") or name.startswith("__") or not target.startswith("refscore"):
                continue
            target_package = target if modules.get(target, ROOT).name == "__init__.py" else target.rsplit(".", 1)[0]
            if target_package != package:
                offenders.append(f"{module}: from {target} import {name}")
    assert offenders == []


def test_no_conversion_is_looked_up_by_text():
    """The diagnosis iterates the conventions rows' callables: no regular expression, no
    inspect-by-name, no getattr over the ledger (a conversion found by its prose breaks silently)."""
    for path in sorted((PACKAGE / "golden").glob("*.py")) + [PACKAGE / "conventions.py"]:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"^\s*import re\b", r"^\s*from re import", r"^\s*import inspect", r"getattr\(conventions"):
            assert not re.search(pattern, text, re.M), (path.name, pattern)


def test_the_import_reader_sees_lazy_imports():
    modules = _modules()
    targets = {t for t, _ in _imports("refscore.sampling.backends", PACKAGE / "sampling" / "backends.py", modules)}
    # backends.py imports the kernel floor only inside functions: the reader sees it
    assert "refscore.sampling.reference" in targets and "refscore._kernels" in targets


def test_the_backend_registry_is_imported_by_nothing_it_lists():
    """refscore.sampling.registry maps names to backends; a backend that imported it back would be the
    circle the sampling wing once had (backends <-> dask_backend)."""
    importers = sorted(m for m, deps in _import_graph().items() if "refscore.sampling.registry" in deps)
    samplers = {"refscore.sampling._runs"}  # what the samplers share (their backend choice), no backend
    assert [m for m in importers if m.startswith(("refscore.sampling.", "refscore._kernels")) and m not in samplers] == []
    assert "refscore.sampling._runs" in importers  # the samplers read it


def test_the_kernel_floor_imports_nothing_above_it():
    """refscore._kernels is the bottom floor: the reference hands it what it needs (the activation
    registry registers itself), so no module there imports another part of refscore, lazily or not."""
    up = sorted(f"{m} -> {t}" for m, deps in _import_graph().items() if m.startswith("refscore._kernels")
                for t in deps if not t.startswith("refscore._kernels"))
    assert up == []
