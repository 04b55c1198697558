"""Foreign backends (JAX, PyTorch autograd) against the golden files, and wrong variants caught.

These are the independent oracle for every golden quantity: the backends share
nothing with refscore but the stored inputs and the documented layout.  Each
test skips when its library is not importable.
"""
import numpy as np
import pytest

from refscore import golden

# the sphere variant differs from refscore only for d > 1 (sqrt(1) = 1)
SPHERE_QUANTITIES = {"v_sphere", "ssm_sphere", "ssm_sphere_grad", "ssm_vr_sphere", "ssm_vr_sphere_grad"}
DSM_QUANTITIES = {"dsm", "dsm_grad"}
# JAX compiles each case (about a second each), so it checks a subset covering every
# model class, every activation, both depths and every dimension; torch checks all cases
JAX_CASES = ("gaussian_d5", "mixture_d2", "mlpscore_gelu_depth2_d5", "mlpenergy_softplus_depth1_d1")


@pytest.fixture(scope="module")
def gdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_interop")
    golden.write(d)
    return d


def _failing(res):
    return {(r.case, r.quantity) for r in res.rows if r.status != "PASS"}


# ----------------------------------------------------------------- torch
def test_torch_float64_passes_every_case(gdir):
    pytest.importorskip("torch")
    from refscore.validation.interop import torch_backend

    res = golden.check(gdir, torch_backend.values(gdir))
    assert res.passed, res.table(only_failures=True)
    assert len(res.rows) == 69 * len(golden.QUANTITIES)
    # float64 autodiff vs hand-derived: summation order only; measured <= 3e-14 absolute
    assert max(r.max_abs for r in res.rows) < 1e-12


def test_torch_float32_needs_the_float32_tolerances(gdir):
    pytest.importorskip("torch")
    from refscore.validation.interop import torch_backend

    vals = torch_backend.values(gdir, dtype="float32")
    res = golden.check(gdir, vals, precision="float32")
    assert res.passed, res.table(only_failures=True)
    assert not golden.check(gdir, vals).passed  # float32 round-off is far above the float64 rtol 1e-8


@pytest.mark.parametrize("variant, quantities, dims", [
    ("sphere_unscaled", SPHERE_QUANTITIES, (2, 5)),
    ("dsm_no_sigma", DSM_QUANTITIES, (1, 2, 5)),
])
def test_torch_wrong_variants_are_caught_and_named(gdir, variant, quantities, dims):
    pytest.importorskip("torch")
    from refscore.validation.interop import torch_backend

    res = golden.check(gdir, torch_backend.values(gdir, variant=variant))
    assert not res.passed
    expected = {(name, q) for name, spec in golden.case_specs().items()
                if spec["kwargs"]["dim"] in dims for q in quantities}
    assert _failing(res) == expected
    summary = res.summary()
    for q in quantities:
        assert f"{q} (" in summary


# ----------------------------------------------------------------- jax
def test_jax_float64_passes(gdir):
    pytest.importorskip("jax")
    from refscore.validation.interop import jax_backend

    res = golden.check(gdir, jax_backend.values(gdir, cases=JAX_CASES))
    assert res.passed, res.table(only_failures=True)
    assert len(res.rows) == len(JAX_CASES) * len(golden.QUANTITIES)
    assert max(r.max_abs for r in res.rows) < 1e-12  # as for torch: round-off only


def test_jax_wrong_variant_is_caught_and_named(gdir):
    pytest.importorskip("jax")
    from refscore.validation.interop import jax_backend

    res = golden.check(gdir, jax_backend.values(gdir, variant="sphere_unscaled", cases=["linear_d2"]))
    assert not res.passed
    assert _failing(res) == {("linear_d2", q) for q in SPHERE_QUANTITIES}


# ----------------------------------------------------------------- runner
def test_runner_writes_values_that_check_reads(gdir, tmp_path, capsys):
    pytest.importorskip("torch")
    from refscore.validation.interop.run import main

    out = tmp_path / "values.npz"
    assert main([str(gdir), "--backend", "torch", "--out", str(out), "--cases", "linear_d2,mixture_d5"]) == 0
    assert "wrote 46 values from torch" in capsys.readouterr().out
    assert golden.check(gdir, out).passed
    with pytest.raises(SystemExit) as exc:  # never clobbers without --force
        main([str(gdir), "--backend", "torch", "--out", str(out)])
    assert exc.value.code == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([str(gdir), "--backend", "torch", "--out", str(out), "--force", "--cases", "linear_d1",
                 "--variant", "dsm_no_sigma"]) == 0
    res = golden.check(gdir, out)
    assert _failing(res) == {("linear_d1", "dsm"), ("linear_d1", "dsm_grad")}


def test_runner_errors(gdir, tmp_path, capsys):
    from refscore.validation.interop.run import compute, main

    with pytest.raises(ValueError, match="backend must be one of"):
        compute("tensorflow", gdir)
    with pytest.raises(ValueError, match="float64 only"):
        compute("jax", gdir, dtype="float32")
    with pytest.raises(SystemExit) as exc:
        main([str(gdir), "--backend", "torch", "--out", str(tmp_path / "v.txt")])
    assert exc.value.code == 2 and "--out must end in .npz" in capsys.readouterr().err
    pytest.importorskip("torch")
    assert main([str(tmp_path), "--backend", "torch", "--out", str(tmp_path / "v.npz")]) == 2
    assert "manifest.json not found" in capsys.readouterr().err
    from refscore.validation.interop import torch_backend

    with pytest.raises(ValueError, match="variant must be None or one of"):
        torch_backend.values(gdir, variant="nope")
    with pytest.raises(ValueError, match="dtype must be one of"):
        torch_backend.values(gdir, dtype="float16")
    with pytest.raises(ValueError, match="cases not in the golden file"):
        torch_backend.values(gdir, cases=["nope_d3"])


def test_the_foreign_backends_have_their_own_name():
    # "BACKENDS" is the sampler backends' registry (refscore.sampling.BACKENDS); these are others
    import refscore.validation.interop as vi

    assert vi.FOREIGN_BACKENDS == ("jax", "torch")
    with pytest.warns(DeprecationWarning, match="FOREIGN_BACKENDS"):
        assert vi.BACKENDS == vi.FOREIGN_BACKENDS
    with pytest.raises(AttributeError, match="no attribute 'LOSSES'"):
        vi.LOSSES
