"""The repository's structural rules, checked on the source text.

* numba is imported only on the kernel floor (``refscore/_kernels``), and
  ``import refscore`` loads none of it;
* the reference runs with numba absent (import blocked in a subprocess);
* no ``getattr`` on private names, no class-name string comparisons;
* nothing cites a file outside the repository.
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
