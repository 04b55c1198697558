"""Golden files: contents, round trip, check's verdicts, and independent checks of the stored values.

The stored values are checked against oracles that do not go through
refscore.losses: closed forms for the affine models, identities linking the
stored quantities of every case (trace = diag sum of the Jacobian, JVP = J u,
ISM/ESM/SSM-VR - SSM from the stored score), and central finite differences
of the losses for their gradients.  The foreign autodiff backends
(tests/test_interop.py) are the other independent route.
"""
import itertools
import json
import math

import numpy as np
import pytest

from refscore import golden
from refscore.models import GaussianModel, LinearScore


@pytest.fixture(scope="module")
def gdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    golden.write(d)
    return d


@pytest.fixture(scope="module")
def g(gdir):
    return golden.load(gdir)


@pytest.fixture(scope="module")
def ref_values(gdir):
    return golden.compute(gdir)


# ----------------------------------------------------------------- contents
def test_cases_cover_dims_models_depths_activations(g):
    seen = set()
    for c in g.cases.values():
        kw = c.spec["kwargs"]
        depth = len(kw.get("hidden", ()))
        seen.add((c.spec["model"], kw.get("activation"), depth, kw["dim"]))
    expected = {(m, None, 0, d) for m in ("GaussianModel", "LinearScore", "GaussianMixtureModel") for d in (1, 2, 5)}
    expected |= set(itertools.product(("MLPScore", "MLPEnergy"), ("tanh", "softplus", "sigmoid", "silu", "gelu"),
                                      (1, 2), (1, 2, 5)))
    assert seen == expected
    assert len(g.cases) == 69


def test_manifest_records_versions_layouts_and_conventions(gdir, g):
    m = json.loads((gdir / "manifest.json").read_text())
    assert m["format"] == "refscore-golden" and m["format_version"] == golden.FORMAT_VERSION
    import refscore

    assert m["refscore_version"] == refscore.__version__
    conv = m["conventions"]
    assert "sqrt(d) z / ||z||" in conv["projections"]
    assert "eps_k / sigma" in conv["dsm"]
    assert "x + eta s(x) + sqrt(2 eta) z" in conv["langevin_step"]
    assert "[k, i, j] = d s_i / d x_j" in conv["jacobian"]
    assert "mean" in conv["reduction"]
    for name, c in g.cases.items():
        meta = m["cases"][name]
        model = c.model
        assert meta["layout"] == model.layout and meta["n_params"] == model.n_params
        assert c.inputs["theta"].shape == (model.n_params,)
        assert set(c.quantities) == set(golden.QUANTITIES) and set(c.inputs) == set(golden.INPUTS)
        for k, shape in meta["shapes"].items():
            arr = c.inputs.get(k, c.quantities.get(k))
            assert list(arr.shape) == shape
        # sigma != 1 so that a DSM without the 1/sigma is visible
        assert abs(float(c.inputs["sigma"]) - 1.0) > 0.05


def test_write_is_deterministic(tmp_path, g):
    golden.write(tmp_path / "again")
    g2 = golden.load(tmp_path / "again")
    for name, c in g.cases.items():
        for k in c.inputs:
            assert np.array_equal(c.inputs[k], g2.cases[name].inputs[k]), (name, k)
        for k in c.quantities:
            assert np.array_equal(c.quantities[k], g2.cases[name].quantities[k]), (name, k)


# ----------------------------------------------------------------- stored values vs oracles
def test_projections_and_sphere_normalisation(g):
    for c in g.cases.values():
        d = c.inputs["x"].shape[1]
        z = c.inputs["z_sphere"]
        v = c.quantities["v_sphere"]
        # radius sqrt(d), direction of z: 1e-13 covers a few ulps of a norm and a division
        np.testing.assert_allclose(np.linalg.norm(v, axis=-1), math.sqrt(d), rtol=1e-13)
        np.testing.assert_allclose(v * np.linalg.norm(z, axis=-1, keepdims=True), math.sqrt(d) * z,
                                   rtol=1e-13, atol=1e-13)
        assert set(np.unique(c.inputs["v_rademacher"])) <= {-1.0, 1.0}


def test_stored_quantities_satisfy_their_identities(g):
    """Every case: the quantities agree with each other by identities computed here."""
    for name, c in g.cases.items():
        q, inp = c.quantities, c.inputs
        s, J = q["score"], q["jacobian"]
        # 1e-12 relative: each identity is a short sum of O(1)-O(30) numbers
        tol = dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(q["trace"], np.einsum("kii->k", J), err_msg=name, **tol)
        np.testing.assert_allclose(q["jvp"], np.einsum("kij,kj->ki", J, inp["u"]), err_msg=name, **tol)
        np.testing.assert_allclose(q["esm"], np.mean(0.5 * np.sum((s - inp["target"]) ** 2, 1)), err_msg=name, **tol)
        np.testing.assert_allclose(q["ism"], np.mean(q["trace"] + 0.5 * np.sum(s**2, 1)), err_msg=name, **tol)
        for kind in golden.PROJECTION_KINDS:
            v = q["v_sphere"] if kind == "sphere" else inp[f"v_{kind}"]
            vjv = np.einsum("mki,kij,mkj->mk", v, J, v)
            ssm = np.mean(vjv + 0.5 * np.einsum("mki,ki->mk", v, s) ** 2)
            ssm_vr = np.mean(vjv + 0.5 * np.sum(s**2, 1)[None, :])
            np.testing.assert_allclose(q[f"ssm_{kind}"], ssm, err_msg=name, **tol)
            np.testing.assert_allclose(q[f"ssm_vr_{kind}"], ssm_vr, err_msg=name, **tol)


def test_affine_cases_against_closed_forms(g):
    for d in golden.DIMS:
        c = g.cases[f"gaussian_d{d}"]
        th, x = c.inputs["theta"], c.inputs["x"]
        L = np.zeros((d, d))
        L[np.tril_indices(d)] = th[d:]
        P = L @ L.T
        s = -(x - th[:d]) @ P  # P symmetric
        # 1e-12: closed forms of O(1) numbers, differing by summation order only
        np.testing.assert_allclose(c.quantities["score"], s, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.quantities["jacobian"], np.broadcast_to(-P, (3, d, d)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.quantities["trace"], -np.sum(L**2) * np.ones(3), rtol=1e-12)
        sig, eps = float(c.inputs["sigma"]), c.inputs["eps"]
        r = -(x + sig * eps - th[:d]) @ P + eps / sig
        np.testing.assert_allclose(c.quantities["dsm"], np.mean(0.5 * np.sum(r**2, 1)), rtol=1e-12)

        c = g.cases[f"linear_d{d}"]
        th, x = c.inputs["theta"], c.inputs["x"]
        A, b = th[: d * d].reshape(d, d), th[d * d :]
        np.testing.assert_allclose(c.quantities["score"], x @ A.T + b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.quantities["jacobian"], np.broadcast_to(A, (3, d, d)), rtol=1e-12, atol=1e-12)
        # d dsm / d b = mean(s(x~) + eps/sigma): the loss is quadratic in b
        sig, eps = float(c.inputs["sigma"]), c.inputs["eps"]
        r = (x + sig * eps) @ A.T + b + eps / sig
        np.testing.assert_allclose(c.quantities["dsm_grad"][d * d :], r.mean(0), rtol=1e-12, atol=1e-13)


def _fd_grad(f, theta, h=1e-5):
    out = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        out[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return out


def test_esm_and_dsm_gradients_vs_finite_differences_every_case(g):
    """Central differences of the losses written here from the model's score alone."""
    for name, c in g.cases.items():
        model, inp = c.model, c.inputs
        x, t, eps, sig = inp["x"], inp["target"], inp["eps"], float(inp["sigma"])

        def esm(th):
            return np.mean(0.5 * np.sum((model.score(th, x) - t) ** 2, 1))

        def dsm(th):
            return np.mean(0.5 * np.sum((model.score(th, x + sig * eps) + eps / sig) ** 2, 1))

        # h = 1e-5: truncation O(h^2 |f'''|) ~ 1e-9 and round-off ~ 1e-16 |f| / h ~ 1e-10 on
        # these O(1)-O(30) losses; 1e-6 absolute (relative to the gradient scale) holds both
        for key, f in (("esm_grad", esm), ("dsm_grad", dsm)):
            gd = c.quantities[key]
            np.testing.assert_allclose(_fd_grad(f, inp["theta"]), gd, rtol=1e-6,
                                       atol=1e-6 * max(1.0, np.abs(gd).max()), err_msg=f"{name}/{key}")


def test_sliced_and_ism_gradients_vs_finite_differences_on_mlps(g):
    from refscore import losses

    for name in ("mlpscore_silu_depth2_d2", "mlpenergy_sigmoid_depth2_d2", "mixture_d2"):
        c = g.cases[name]
        model, inp, q = c.model, c.inputs, c.quantities
        fns = {
            "ism_grad": lambda th: losses.ism(model, th, inp["x"]),
            "ssm_sphere_grad": lambda th: losses.ssm(model, th, inp["x"], q["v_sphere"]),
            "ssm_vr_rademacher_grad": lambda th: losses.ssm_vr(model, th, inp["x"], inp["v_rademacher"]),
        }
        for key, f in fns.items():
            gd = q[key]
            # as above: central differences with h = 1e-5
            np.testing.assert_allclose(_fd_grad(f, inp["theta"]), gd, rtol=1e-6,
                                       atol=1e-6 * max(1.0, np.abs(gd).max()), err_msg=f"{name}/{key}")


# ----------------------------------------------------------------- round trip and verdicts
def test_round_trip_is_exact(gdir, ref_values):
    res = golden.check(gdir, ref_values)
    assert res.passed
    assert len(res.rows) == 69 * len(golden.QUANTITIES)
    assert all(r.status == "PASS" and r.max_abs == 0.0 and r.max_rel == 0.0 for r in res.rows)
    assert res.cases_not_provided == [] and "RESULT: PASS" in str(res)


def test_values_from_npz_path(gdir, ref_values, tmp_path):
    p = tmp_path / "values.npz"
    np.savez(p, **ref_values)
    assert golden.check(gdir, p).passed
    assert golden.check(gdir, str(p)).passed


def test_perturbed_value_fails_and_is_named(gdir, g, ref_values):
    key = "mlpscore_gelu_depth2_d5/dsm_grad"
    vals = {k: v.copy() for k, v in ref_values.items()}
    vals[key][3] *= 1 + 1e-6  # 100x the default rtol
    res = golden.check(gdir, vals)
    assert not res.passed
    bad = [r for r in res.rows if r.status != "PASS"]
    assert [r.key for r in bad] == [key]
    expected_abs = abs(g.cases["mlpscore_gelu_depth2_d5"].quantities["dsm_grad"][3]) * 1e-6
    assert bad[0].max_abs == pytest.approx(expected_abs, rel=1e-6)
    assert bad[0].max_rel == pytest.approx(1e-6, rel=1e-6)
    text = str(res)
    assert key in text and "FAIL" in text and "dsm_grad (1 cases)" in text


def test_tolerance_is_the_isclose_rule(gdir, ref_values):
    key = "linear_d2/ism"
    for factor, ok in ((1 + 1e-10, True), (1 + 1e-7, False)):  # default rtol 1e-8 sits between
        vals = dict(ref_values)
        vals[key] = ref_values[key] * factor
        assert golden.check(gdir, vals).passed is ok
    vals = dict(ref_values)
    vals[key] = ref_values[key] * (1 + 1e-7)
    assert golden.check(gdir, vals, rtol=1e-6).passed
    assert golden.check(gdir, vals, precision="float32").passed


def test_missing_quantity_is_not_a_pass(gdir, ref_values):
    vals = dict(ref_values)
    del vals["linear_d2/jvp"]
    res = golden.check(gdir, vals)
    assert not res.passed
    assert [(r.key, r.status) for r in res.failures] == [("linear_d2/jvp", "MISSING")]
    assert golden.check(gdir, vals, allow_missing=True).passed


def test_subset_of_cases_is_allowed_and_counted(gdir, ref_values):
    vals = {k: v for k, v in ref_values.items() if k.startswith("gaussian_d2/")}
    res = golden.check(gdir, vals)
    assert res.passed and len(res.rows) == len(golden.QUANTITIES)
    assert len(res.cases_not_provided) == 68 and "68 golden cases not provided" in res.summary()


def test_unknown_keys_and_inputs(gdir, g, ref_values):
    vals = dict(ref_values)
    vals["gaussian_d2/score_typo"] = np.zeros(3)
    vals["nocase/score"] = np.zeros(3)
    res = golden.check(gdir, vals)
    assert not res.passed
    assert sorted(r.key for r in res.failures) == ["gaussian_d2/score_typo", "nocase/score"]
    assert all(r.status == "UNKNOWN" for r in res.failures)
    # the whole golden file (inputs and quantities) passes; inputs are counted, not compared
    everything = {f"{n}/{k}": v for n, c in g.cases.items() for k, v in {**c.inputs, **c.quantities}.items()}
    res = golden.check(gdir, everything)
    assert res.passed and res.ignored_inputs == 69 * len(golden.INPUTS)


def test_shape_nonfinite_and_empty(gdir, ref_values):
    vals = dict(ref_values)
    vals["gaussian_d2/score"] = ref_values["gaussian_d2/score"].T
    vals["gaussian_d2/trace"] = np.full(3, np.nan)
    vals["gaussian_d2/ism"] = "abc"
    res = golden.check(gdir, vals)
    notes = {r.key: r.note for r in res.failures}
    assert "shape (2, 3) != golden (3, 2)" in notes["gaussian_d2/score"]
    assert notes["gaussian_d2/trace"] == "non-finite values"
    assert "not numeric" in notes["gaussian_d2/ism"]
    assert not golden.check(gdir, {}).passed  # nothing compared is not a pass


# ----------------------------------------------------------------- errors
def test_refuses_to_overwrite(gdir, tmp_path):
    with pytest.raises(FileExistsError, match="not empty; refusing to overwrite"):
        golden.write(gdir)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        golden.write(other)
    golden.write(other, force=True)
    assert (other / "notes.txt").read_text() == "mine" and (other / "golden.npz").is_file()
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        golden.write(f, force=True)


def test_load_errors(tmp_path, gdir):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        golden.load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "golden.npz").write_bytes((gdir / "golden.npz").read_bytes())
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        golden.load(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a refscore golden manifest"):
        golden.load(bad)
    m = json.loads((gdir / "manifest.json").read_text())
    m["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 99"):
        golden.load(bad)
    with pytest.raises(TypeError, match="directory must be a path"):
        golden.load(3)


def test_check_argument_errors(gdir, ref_values, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        golden.check(gdir, ref_values, precision="float16")
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        golden.check(gdir, ref_values, rtol=-1)
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        golden.check(gdir, ref_values, atol=float("nan"))
    with pytest.raises(TypeError, match="values must be a dict or a path"):
        golden.check(gdir, 3)
    with pytest.raises(FileNotFoundError, match="values file .* not found"):
        golden.check(gdir, tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        golden.check(gdir, tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="must be an .npz archive"):
        golden.check(gdir, tmp_path / "one.npy")


def test_build_model_errors_and_models():
    assert isinstance(golden.build_model({"model": "LinearScore", "kwargs": {"dim": 2}}), LinearScore)
    assert isinstance(golden.build_model({"model": "GaussianModel", "kwargs": {"dim": 1}}), GaussianModel)
    with pytest.raises(ValueError, match="spec\\['model'\\] must be one of"):
        golden.build_model({"model": "Nope", "kwargs": {}})
