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
from pathlib import Path

import numpy as np
import pytest

from refscore import golden
from refscore import noise
from refscore.models import GaussianModel, LinearScore, NoiseConditional

DATA = Path(__file__).resolve().parent / "data"
#: the sampler kinds, in registry (file) order: the first three kept their noise seeds when kinetic Langevin came
SAMPLER_KINDS = ("ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo", "kinetic_aboba")


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
    assert list(g2.all_cases) == list(g.all_cases)
    for name, c in g.all_cases.items():
        for k in c.inputs:
            assert np.array_equal(c.inputs[k], g2.all_cases[name].inputs[k]), (name, k)
        for k in c.quantities:
            assert np.array_equal(c.quantities[k], g2.all_cases[name].quantities[k]), (name, k)


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
def test_round_trip_is_exact(gdir, g, ref_values):
    res = golden.check(gdir, ref_values)
    assert res.passed
    n_keys = sum(len(c.quantities) for c in g.all_cases.values())
    # every case holds its kind's quantities, but those a kind declares optional (a discrete schedule's tables...)
    assert n_keys == 69 * len(golden.QUANTITIES) + sum(
        len(c.quantities) for c in g.all_cases.values() if c.kind != "losses")
    for c in g.all_cases.values():
        kind = golden.cases.KINDS[c.kind]
        assert set(kind.quantities) - set(kind.optional) <= set(c.quantities) <= set(kind.quantities), c.name
    assert len(res.rows) == n_keys == len(ref_values)
    assert all(r.status == "PASS" and r.max_abs == 0.0 and r.max_rel == 0.0 for r in res.rows)
    assert res.cases_not_provided == [] and "RESULT: PASS" in str(res) and res.diagnosis == []
    assert res.coverage["keys"] == (n_keys, n_keys) and res.not_provided == {}
    assert "not provided: nothing" in res.summary()


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


def test_missing_quantity_is_counted_and_fails_only_with_require_all(gdir, ref_values):
    vals = dict(ref_values)
    del vals["linear_d2/jvp"]
    res = golden.check(gdir, vals)
    assert res.passed and res.failures == []  # the verdict covers the keys provided
    assert res.not_provided == {"jvp": 1} and "not provided: jvp (1 case)" in res.summary()
    assert [(r.key, r.status) for r in res.rows if r.status != "PASS"] == [("linear_d2/jvp", "MISSING")]
    assert "MISSING" not in res.table() and "linear_d2/jvp" not in str(res)  # summarised, never listed
    strict = golden.check(gdir, vals, require_all=True)
    assert not strict.passed
    assert [(r.key, r.status) for r in strict.failures] == [("linear_d2/jvp", "MISSING")]
    assert "jvp (1 case; 1 required)" in strict.summary() and "MISSING: 1 key of the provided cases" in strict.summary()
    # the option of format 1: allow_missing=False is require_all=True
    assert not golden.check(gdir, vals, allow_missing=False).passed
    assert golden.check(gdir, vals, allow_missing=True).passed
    with pytest.raises(ValueError, match="contradicts"):
        golden.check(gdir, vals, allow_missing=True, require_all=True)


def test_subset_of_cases_is_allowed_and_counted(gdir, g, ref_values):
    vals = {k: v for k, v in ref_values.items() if k.startswith("gaussian_d2/")}
    res = golden.check(gdir, vals)
    n_cases, n_keys, nq = len(g.all_cases), len(ref_values), len(golden.QUANTITIES)
    assert res.passed and len(res.rows) == nq
    assert len(res.cases_not_provided) == n_cases - 1
    assert res.coverage["cases"] == (1, n_cases) and res.coverage["keys"] == (nq, n_keys)
    assert res.coverage["quantities"] == (nq, nq)  # of the kinds provided
    assert res.coverage["by_kind"]["losses"] == (1, 69) and res.coverage["by_kind"]["ula"] == (0, 3)
    summary = res.summary()
    assert f"coverage: 1 of {n_cases} cases, {nq} of {nq} quantities, {nq} of {n_keys} keys compared" in summary
    assert f"RESULT: PASS (on the {nq} keys provided; see coverage)" in summary
    # one block, one entry per quantity of the kinds provided (the other kinds: "cases by kind")
    assert res.not_provided["score"] == 68 and "states" not in res.not_provided and "ksd_u" not in res.not_provided
    assert "score (68 cases)" in summary and "ksd_u" not in summary and "ksd 0 of 3" in summary
    assert summary.count("not provided:") == 1


def test_subset_of_quantities_and_of_kinds(gdir, g, ref_values):
    keep = ("score", "ism", "states")
    vals = {k: v for k, v in ref_values.items() if k.rsplit("/", 1)[1] in keep}
    res = golden.check(gdir, vals)
    assert res.passed
    kinds_given = {"losses", *SAMPLER_KINDS, "diffusion_denoiser"}  # every sampler kind records states; the
    available = {q for c in g.all_cases.values() if c.kind in kinds_given for q in c.quantities}  # denoiser a score
    assert res.coverage["quantities"] == (3, len(available))
    assert res.coverage["keys"] == (69 * 2 + 18 + 7, len(ref_values))
    assert not golden.check(gdir, vals, require_all=True).passed  # mala's accept and log_alpha, the momenta


def test_unknown_keys_and_inputs(gdir, g, ref_values):
    vals = dict(ref_values)
    vals["gaussian_d2/score_typo"] = np.zeros(3)
    vals["nocase/score"] = np.zeros(3)
    res = golden.check(gdir, vals)
    assert not res.passed
    assert sorted(r.key for r in res.failures) == ["gaussian_d2/score_typo", "nocase/score"]
    assert all(r.status == "UNKNOWN" for r in res.failures)
    # the whole golden file (inputs and quantities) passes; inputs are counted, not compared
    everything = {f"{n}/{k}": v for n, c in g.all_cases.items() for k, v in {**c.inputs, **c.quantities}.items()}
    res = golden.check(gdir, everything)
    assert res.passed and res.ignored_inputs == sum(len(c.inputs) for c in g.all_cases.values())


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
    with pytest.raises(ValueError, match="format_version 99.*reads format_version 1 and 2"):
        golden.load(bad)
    m["format_version"] = True  # not the integer 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version True"):
        golden.load(bad)
    m = json.loads((gdir / "manifest.json").read_text())
    m["cases"]["ula_gaussian_d2"]["kind"] = "hmc"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="'kind' must be one of losses, dsm_multi"):
        golden.load(bad)
    m = json.loads((gdir / "manifest.json").read_text())
    del m["cases"]["mala_mixture_d1"]["params"]["noise_seed"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="'params' must give 'noise_seed' a number"):
        golden.load(bad)
    m = json.loads((gdir / "manifest.json").read_text())
    m["cases"]["ksd_imq_gaussian_d2"]["kwargs"]["cov"] = [[1.0, 2.0], [2.0, 1.0]]  # not positive definite
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="target 'Gaussian' .* cannot be built"):
        golden.load(bad)
    m = json.loads((gdir / "manifest.json").read_text())
    m["cases"]["dsm_multi_linear_d2"].pop("kind")
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="has no 'kind'"):
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
    nc = golden.build_model({"model": "NoiseConditional", "kwargs": {"model": {"model": "LinearScore",
                                                                               "kwargs": {"dim": 2}}}})
    assert isinstance(nc, NoiseConditional) and isinstance(nc.model, LinearScore)
    with pytest.raises(ValueError, match="NoiseConditional spec needs"):
        golden.build_model({"model": "NoiseConditional", "kwargs": {}})
    with pytest.raises(ValueError, match="spec\\['target'\\] must be one of"):
        golden.build_target({"target": "Banana", "kwargs": {}})


# ----------------------------------------------------------------- the case kinds of format 2
def test_case_kinds_counts_and_tables(gdir, g):
    m = json.loads((gdir / "manifest.json").read_text())
    assert m["format_version"] == golden.FORMAT_VERSION == 4
    counts = {k: len(g.of_kind(k)) for k in golden.CASE_KINDS}
    assert counts == {"losses": 69, "dsm_multi": 4, "ksd": 3, "ula": 3, "mala": 3, "annealed": 3,
                      "kinetic_baoab": 3, "kinetic_obabo": 3, "kinetic_aboba": 3,
                      "diffusion_schedule": 10, "diffusion_denoiser": 7, "diffusion_coefficients": 7,
                      "diffusion_likelihood": 3,
                      "diffusion_euler": 3, "diffusion_heun": 2, "diffusion_ddim": 2, "diffusion_ddpm": 2,
                      "diffusion_euler_ancestral": 1, "diffusion_dpmpp_2m": 2, "diffusion_pc": 2, "diffusion_pf_ode": 1}
    assert list(g.cases) == list(g.of_kind("losses"))  # .cases: the losses cases only
    assert set(m["kinds"]) == set(golden.CASE_KINDS)
    for name, c in g.all_cases.items():
        assert m["cases"][name]["kind"] == c.kind
        table, optional = golden.CASE_KINDS[c.kind], golden.cases.KINDS[c.kind].optional
        for key in ("inputs", "quantities"):  # the table's order; an optional name may be absent
            held = list(getattr(c, key))
            assert held == [k for k in table[key] if k in held], (c.name, key)
            assert set(table[key]) - set(held) <= set(optional), (c.name, key)
        assert all(a.dtype == np.float64 for a in (*c.inputs.values(), *c.quantities.values()))
    for kind in SAMPLER_KINDS:
        for c in g.of_kind(kind).values():
            noise_key = "xi" if kind.startswith("kinetic") else "z"
            T = c.inputs[noise_key].shape[0]
            assert c.quantities["states"].shape == (T, *c.inputs["x0"].shape)
            if noise_key == "xi":  # 2 d normals per chain and step, and the momenta
                assert c.inputs["xi"].shape == (T, *c.inputs["x0"].shape[:-1], 2 * c.dim)
                assert c.quantities["momenta"].shape == c.quantities["states"].shape
    # the manifest says how (m, n, d) projections map to a duplicated (m*n, d) batch
    assert "v.reshape(m*n, d)" in m["conventions"]["projection_batch"]
    assert "np.tile(x, (m, 1))" in m["conventions"]["projection_batch"]
    assert "refscore.noise.normal(noise_seed, chain j, step t, d)" in m["conventions"]["sampler_noise"]


def test_projection_batch_mapping_as_documented(g):
    """ssm over the documented duplicated batch: np.tile(x, (m, 1)) with v.reshape(m*n, d)."""
    for name in ("mlpscore_tanh_depth2_d5", "linear_d2"):
        c = g.cases[name]
        model, th, x = c.model, c.inputs["theta"], c.inputs["x"]
        v = c.inputs["v_gaussian"]
        m, n, d = v.shape
        xr, vr = np.tile(x, (m, 1)), v.reshape(m * n, d)
        vjv = np.einsum("kd,kd->k", vr, model.score_jvp(th, xr, vr))
        ssm = np.mean(vjv + 0.5 * np.einsum("kd,kd->k", vr, model.score(th, xr)) ** 2)
        np.testing.assert_allclose(ssm, c.quantities["ssm_gaussian"], rtol=1e-12)
        # the other duplication pairs with the transposed projections
        xr, vr = np.repeat(x, m, axis=0), v.transpose(1, 0, 2).reshape(n * m, d)
        vjv = np.einsum("kd,kd->k", vr, model.score_jvp(th, xr, vr))
        ssm = np.mean(vjv + 0.5 * np.einsum("kd,kd->k", vr, model.score(th, xr)) ** 2)
        np.testing.assert_allclose(ssm, c.quantities["ssm_gaussian"], rtol=1e-12)


def test_old_format_fixture_still_loads_and_checks():
    """tests/data/golden_v1: two cases written by refscore before format 2 (format_version 1)."""
    g1 = golden.load(DATA / "golden_v1")
    assert g1.format_version == 1
    assert list(g1.cases) == list(g1.all_cases) == ["linear_d2", "mlpenergy_tanh_depth1_d1"]
    assert all(c.kind == "losses" for c in g1.all_cases.values())
    vals = golden.compute(g1)
    res = golden.check(g1, vals)
    assert res.passed and res.coverage["keys"] == (46, 46)
    # the numbers are those this refscore computes from the same inputs and seeds, to round-off:
    # the fixture was written on another CPU, and the BLAS kernel OpenBLAS picks for the CPU (and
    # NumPy's SIMD loops) reorder sums, so the last bits are the machine's (1-2 ulp of an array's
    # largest entry seen; 16 ulp of a small entry). rtol 1e-13 with atol 1e-13 of the largest
    # entry leaves ~100x margin and still fails any change above round-off, 1e5x below check's 1e-8
    for name, c in g1.cases.items():
        for q, v in c.quantities.items():
            np.testing.assert_allclose(vals[f"{name}/{q}"], v, rtol=1e-13, atol=1e-13 * np.abs(v).max(),
                                       err_msg=f"{name}/{q}")
    wrong = dict(vals, **{"linear_d2/esm": 2 * vals["linear_d2/esm"]})
    res = golden.check(g1, wrong)
    # one failing case, at d = 2: x2 and xd give the same numbers, and the diagnosis says both
    assert not res.passed and res.diagnosis[0].ambiguous == ("factor 2", "factor d")


def test_format_2_fixture_still_loads_and_checks():
    """tests/data/golden_v2: one case of each kind of format 2, written by refscore before the kinetic
    kinds (format 3) existed; it loads, and this refscore's values pass it."""
    g2 = golden.load(DATA / "golden_v2")
    assert g2.format_version == 2
    assert [c.kind for c in g2.all_cases.values()] == ["losses", "dsm_multi", "ksd", "ula", "mala", "annealed"]
    res = golden.check(g2, golden.compute(g2))
    assert res.passed, res.table(only_failures=True)


def test_a_format_3_directory_still_loads_and_checks(gdir, tmp_path):
    """A format 3 directory (no diffusion kinds): today's files without their diffusion cases, each case's
    binding untouched (a binding covers one case), read as format 3; a diffusion case in it is refused."""
    import shutil

    d = tmp_path / "v3"
    shutil.copytree(gdir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 3
    diffusion = [n for n, c in m["cases"].items() if c["kind"] in golden.cases.DIFFUSION_KINDS]
    assert len(diffusion) == 42
    kept = {n: c for n, c in m["cases"].items() if n not in diffusion}
    (d / "manifest.json").write_text(json.dumps({**m, "cases": kept}))
    g3 = golden.load(d)
    assert g3.format_version == 3 and len(g3.all_cases) == 94
    assert golden.check(g3, golden.compute(g3)).passed
    (d / "manifest.json").write_text(json.dumps({**m, "cases": {**kept, diffusion[0]: m["cases"][diffusion[0]]}}))
    with pytest.raises(ValueError, match=r"'kind' must be one of .*kinetic_aboba \(format_version 3\), got "
                                         r"\"diffusion_schedule\""):
        golden.load(d)


def test_a_kind_newer_than_its_format_is_refused(tmp_path):
    """A format 2 manifest naming a kinetic case: format 2 knew no such kind."""
    import shutil

    d = tmp_path / "g"
    shutil.copytree(DATA / "golden_v2", d)
    m = json.loads((d / "manifest.json").read_text())
    m["cases"]["ula_gaussian_d2"]["kind"] = "kinetic_baoab"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"'kind' must be one of losses, dsm_multi, ksd, ula, mala, annealed "
                                         r"\(format_version 2\), got \"kinetic_baoab\""):
        golden.load(d)


def test_sampler_noise_is_refscore_noise(g):
    for kind in SAMPLER_KINDS:
        for c in g.of_kind(kind).values():
            noise_key = "xi" if kind.startswith("kinetic") else "z"
            seed, (T, n, d) = c.spec["params"]["noise_seed"], c.inputs[noise_key].shape
            for t in (0, T - 1):
                assert np.array_equal(c.inputs[noise_key][t], noise.normal(seed, np.arange(n), t, d))
                if kind == "mala":
                    assert np.array_equal(c.inputs["u"][t], noise.uniform(seed, np.arange(n), t))


# plain NumPy targets from the manifest's kwargs: nothing of refscore's distributions
def _gaussian_parts(means, covs, weights, x):
    """log p and score of sum_j w_j N(means_j, covs_j) at x (n, d)."""
    logs, scores = [], []
    for w, mu, S in zip(weights, means, covs):
        P = np.linalg.inv(S)
        r = x - mu
        logs.append(np.log(w) - 0.5 * np.einsum("ni,ij,nj->n", r, P, r)
                    - 0.5 * np.linalg.slogdet(2 * np.pi * S)[1])
        scores.append(-r @ P)
    logs = np.array(logs)
    top = logs.max(axis=0)
    lse = top + np.log(np.exp(logs - top).sum(axis=0))
    resp = np.exp(logs - lse)
    return lse, np.einsum("kn,knd->nd", resp, np.array(scores))


def _target(c, sigma=0.0):
    kw = c.spec["kwargs"]
    if c.spec["target"] == "Gaussian":
        means, covs, weights = [np.array(kw["mean"])], [np.array(kw["cov"])], [1.0]
    else:
        means, covs, weights = np.array(kw["means"]), np.array(kw["covs"]), np.array(kw["weights"])
    covs = [S + sigma**2 * np.eye(len(S)) for S in covs]
    return lambda x: _gaussian_parts(means, covs, weights, x)


def _foreign_samplers(g):
    """ULA, MALA and annealed Langevin in plain NumPy, fed the stored noise."""
    out = {}
    for name, c in {**g.of_kind("ula"), **g.of_kind("mala"), **g.of_kind("annealed")}.items():
        x, z, eta = c.inputs["x0"].copy(), c.inputs["z"], float(c.inputs["step"])
        states = []
        if c.kind == "ula":
            p = _target(c)
            for t in range(z.shape[0]):
                x = x + eta * p(x)[1] + np.sqrt(2 * eta) * z[t]
                states.append(x)
        elif c.kind == "annealed":
            sig = c.inputs["sigmas"]
            T = z.shape[0] // len(sig)
            for i, s in enumerate(sig):
                p, e = _target(c, s), eta * s**2 / sig[-1] ** 2
                for j in range(T):
                    x = x + e * p(x)[1] + np.sqrt(2 * e) * z[i * T + j]
                    states.append(x)
        else:
            p = _target(c)
            accept, log_alpha = [], []
            for t in range(z.shape[0]):
                lp_x, s_x = p(x)
                y = x + eta * s_x + np.sqrt(2 * eta) * z[t]
                lp_y, s_y = p(y)
                fwd = np.sum((y - x - eta * s_x) ** 2, axis=1)
                bwd = np.sum((x - y - eta * s_y) ** 2, axis=1)
                la = lp_y - lp_x - (bwd - fwd) / (4 * eta)
                acc = np.log(c.inputs["u"][t]) < la
                x = np.where(acc[:, None], y, x)
                states.append(x)
                accept.append(acc.astype(float))
                log_alpha.append(la)
            out[f"{name}/accept"], out[f"{name}/log_alpha"] = np.array(accept), np.array(log_alpha)
        out[f"{name}/states"] = np.array(states)
    for name, c in {**g.of_kind("kinetic_baoab"), **g.of_kind("kinetic_obabo"), **g.of_kind("kinetic_aboba")}.items():
        out.update({f"{name}/{k}": v for k, v in _foreign_kinetic(c).items()})
    return out


def _foreign_kinetic(c):
    """BAOAB, OBABO and ABOBA in plain NumPy (unit mass), written out letter by letter from
    docs/derivations.md §8.6, fed the stored x0, v0 and normals xi."""
    score = lambda q: _target(c)(q)[1]  # noqa: E731
    q, p, h, gamma = c.inputs["x0"].copy(), c.inputs["v0"].copy(), float(c.inputs["step"]), float(c.inputs["friction"])
    d = q.shape[1]
    states, momenta = [], []
    for xi in c.inputs["xi"]:
        if c.kind == "kinetic_baoab":
            a = math.exp(-gamma * h)
            p = p + h / 2 * score(q)
            q = q + h / 2 * p
            p = a * p + math.sqrt(1 - a * a) * xi[:, :d]
            q = q + h / 2 * p
            p = p + h / 2 * score(q)
        elif c.kind == "kinetic_obabo":
            a = math.exp(-gamma * h / 2)
            p = a * p + math.sqrt(1 - a * a) * xi[:, :d]
            p = p + h / 2 * score(q)
            q = q + h * p
            p = p + h / 2 * score(q)
            p = a * p + math.sqrt(1 - a * a) * xi[:, d:]
        else:
            a = math.exp(-gamma * h)
            q = q + h / 2 * p
            s_mid = score(q)
            p = p + h / 2 * s_mid
            p = a * p + math.sqrt(1 - a * a) * xi[:, :d]
            p = p + h / 2 * s_mid
            q = q + h / 2 * p
        states.append(q)
        momenta.append(p)
    return {"states": np.array(states), "momenta": np.array(momenta)}


def test_foreign_samplers_fed_the_stored_noise_agree_to_round_off(gdir, g):
    vals = _foreign_samplers(g)
    res = golden.check(gdir, vals, rtol=1e-12, atol=1e-12)
    assert res.passed, res.table(only_failures=True)
    assert res.coverage["keys"][0] == 9 + 2 * 3 + 9 * 2  # kinetic: states and momenta
    # the states move, and MALA both accepts and rejects
    acc = np.concatenate([c.quantities["accept"].ravel() for c in g.of_kind("mala").values()])
    assert 0.2 < acc.mean() < 0.9
    for c in g.of_kind("ula").values():
        assert np.all(np.abs(np.diff(c.quantities["states"], axis=0)) > 0)
    # a foreign ULA in the (lr/2, sqrt(lr)) form with lr = the stored step is caught and named
    wrong = {}
    for name, c in g.of_kind("ula").items():
        p, x, lr = _target(c), c.inputs["x0"].copy(), float(c.inputs["step"])
        states = []
        for zt in c.inputs["z"]:
            x = x + lr / 2 * p(x)[1] + np.sqrt(lr) * zt
            states.append(x)
        wrong[f"{name}/states"] = np.array(states)
    res = golden.check(gdir, wrong)
    assert not res.passed
    (d,) = res.diagnosis
    assert d.hypothesis == "Langevin step step_from_lr(step)" and d.conversion == "lr_from_step"
    assert d.convention is not None and "Langevin" in d.convention


def test_dsm_multi_by_hand_and_finite_differences(g):
    for name, c in g.of_kind("dsm_multi").items():
        inner = c.model.model
        th, x, eps, sig = c.inputs["theta"], c.inputs["x"], c.inputs["eps"], c.inputs["sigma_points"]
        labels = c.inputs["labels"].astype(int)
        assert np.array_equal(c.inputs["sigmas"][labels], sig) and set(labels) == {0, 1, 2}
        xt = x + sig[:, None] * eps

        def loss(theta, lam):
            r = inner.score(theta, xt) / sig[:, None] + eps / sig[:, None]
            return np.mean(lam * 0.5 * np.sum(r * r, axis=1))

        np.testing.assert_allclose(c.quantities["score_noised"], inner.score(th, xt) / sig[:, None], rtol=1e-13)
        for weighting, lam in (("sigma2", sig**2), ("none", np.ones_like(sig))):
            q = c.quantities
            np.testing.assert_allclose(q[f"dsm_multi_{weighting}"], loss(th, lam), rtol=1e-12)
            gd = q[f"dsm_multi_{weighting}_grad"]
            # central differences, h = 1e-5, as for the per-point losses above
            np.testing.assert_allclose(_fd_grad(lambda t: loss(t, lam), th), gd, rtol=1e-6,
                                       atol=1e-6 * max(1.0, np.abs(gd).max()), err_msg=name)


def test_ksd_by_hand(g):
    """The IMQ Stein kernel written here from its definition (Liu, Lee & Jordan 2016, eq. 8)."""
    for name, c in g.of_kind("ksd").items():
        x, s, cc, beta = c.inputs["x"], c.inputs["score"], float(c.inputs["c"]), float(c.inputs["beta"])
        n, d = x.shape
        np.testing.assert_allclose(s, _target(c)(x)[1], rtol=1e-12, atol=1e-13)
        K = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                r = x[i] - x[j]
                q = cc**2 + r @ r
                k = q**beta
                gx = 2 * beta * q ** (beta - 1) * r  # grad_x k; grad_y k = -gx
                trace = -2 * beta * d * q ** (beta - 1) - 4 * beta * (beta - 1) * q ** (beta - 2) * (r @ r)
                K[i, j] = s[i] @ s[j] * k + s[i] @ (-gx) + s[j] @ gx + trace
        q = c.quantities
        np.testing.assert_allclose(q["stein_kernel"], K, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(q["ksd_u"], (K.sum() - np.trace(K)) / (n * (n - 1)), rtol=1e-12)
        np.testing.assert_allclose(q["ksd_v"], K.mean(), rtol=1e-12)
        assert q["ksd_v"] > 0  # a sample not from the target


def test_write_is_fast(tmp_path):
    """refscore golden stays cold-start fast: NumPy engines only (measured about 1.5 s; budget 20 s)."""
    import time

    t0 = time.perf_counter()
    golden.write(tmp_path / "g")
    assert time.perf_counter() - t0 < 20


# ----------------------------------------------------------------- the package's structure
ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "refscore" / "golden"
#: the floors of the golden package: a module imports only modules of lower floors
FLOORS = {"cases": 0, "terms": 0, "store": 1, "_termfit": 1, "_sampler_hypotheses": 1, "_diffusion_hypotheses": 1,
          "_hypotheses": 2, "diagnosis": 3, "checking": 4, "__init__": 5}


def _imports(path):
    """``[(imported module, name or None)]`` of a source file, relative imports resolved."""
    import ast

    rel = path.relative_to(ROOT).with_suffix("").parts
    module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
    package = module if rel[-1] == "__init__" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = node.module if not node.level else ".".join(p for p in (base, node.module) if p)
            out += [(target, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
    return out


def test_golden_modules_import_only_lower_floors():
    """No import circle in the golden package and no arrow back up: every module imports only
    modules of lower floors (the package itself is the top)."""
    assert {p.stem for p in GOLDEN.glob("*.py")} == set(FLOORS)
    for path in sorted(GOLDEN.glob("*.py")):
        here = FLOORS[path.stem]
        for target, name in _imports(path):
            full = f"{target}.{name}" if name else target
            if full.startswith("refscore.golden.") and full.split(".")[2] in FLOORS:
                target = full  # from . import sibling
            assert "refscore.golden" not in (target, full), (path.name, "imports the package it is part of")
            if target.startswith("refscore.golden."):
                sibling = target.split(".")[2]
                assert FLOORS[sibling] < here, (path.name, "imports", sibling)


def test_no_private_name_of_golden_or_files_is_used_elsewhere():
    """Modules outside refscore/golden use the public names of refscore.golden and refscore._files only."""
    import re

    offenders = []
    for path in sorted((ROOT / "refscore").rglob("*.py")):
        if GOLDEN in path.parents:
            continue
        for target, name in _imports(path):
            if target.startswith(("refscore.golden", "refscore._files")) and name and name.startswith("_"):
                offenders.append(f"{path.relative_to(ROOT)}: {target} {name}")
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"\bgolden\._\w+", path.read_text())]
    assert offenders == []


def test_the_diagnosis_reads_no_text_to_find_conventions():
    """The ledger's conversions are reached through the callables its rows carry: the diagnosis
    imports neither re nor inspect, and looks nothing up by name with getattr."""
    for name in ("diagnosis.py", "_hypotheses.py", "_sampler_hypotheses.py"):
        path = GOLDEN / name
        modules = {target for target, _ in _imports(path)}
        assert not modules & {"re", "inspect"}, name
        assert "getattr(" not in path.read_text(), name


# ================================================================== sampler kinds from the sampler registry
def test_the_sampler_kinds_are_generated_from_the_sampler_registry():
    from refscore.golden.cases import KINDS
    from refscore.sampling.samplers import SAMPLERS

    assert [k for k in KINDS if k in SAMPLERS] == list(SAMPLERS) == list(SAMPLER_KINDS)
    for name, sampler in SAMPLERS.items():
        kind = KINDS[name]
        assert (kind.about, kind.quantities, kind.subject) == (sampler.about, sampler.quantities, "target")
        assert ("u" in kind.inputs, "sigmas" in kind.inputs) == (sampler.has_accept_test, sampler.noise_levels)
        assert ("v0" in kind.inputs, "momenta" in kind.quantities) == (sampler.splitting is not None,) * 2
        assert all({k: s["params"][k] for k in sampler.params} == sampler.params for s in kind.specs().values())


def _half_drift_update(x, score, step, z):
    """A toy sampler: ULA with half its drift, x + (eta/2) s(x) + sqrt(2 eta) z."""
    from refscore.sampling.steps import langevin_step

    return langevin_step(x, 0.5 * score(x), step, z)


@pytest.fixture
def half_drift(monkeypatch):
    """A sampler registered with one entry and its step (no whole-run function), and its case kind."""
    from refscore.golden import cases
    from refscore.sampling.samplers import SAMPLERS, Sampler

    entry = Sampler("half_drift", "ULA with half its drift (a toy)", "x <- x + eta/2 s(x) + sqrt(2 eta) z", None,
                    _half_drift_update, {"score": "callable", "step": "float", "z": "(c, d)"}, "x_next (c, d)",
                    {"states": "(T, c, d) the states after each step"}, {"step": 0.1, "steps": 6})
    monkeypatch.setitem(SAMPLERS, "half_drift", entry)
    kind = cases.sampler_kind(entry)
    monkeypatch.setitem(cases.KINDS, "half_drift", kind)
    monkeypatch.setitem(cases.CASE_KINDS, "half_drift", {"about": kind.about, "inputs": kind.inputs,
                                                         "quantities": kind.quantities})
    return kind


def test_a_new_sampler_gets_its_golden_cases_and_diagnosis_from_its_entry(half_drift, tmp_path):
    from refscore.golden.store import write_cases

    specs = half_drift.specs()
    assert list(specs) == ["half_drift_gaussian_d2", "half_drift_mixture_d1", "half_drift_mixture_d2"]
    # the seventh sampler of the registry: noise seeds 100 + 10 * 6 + j
    assert [s["params"] for s in specs.values()][0] == {"step": 0.1, "steps": 6, "chains": 4, "noise_seed": 160}
    assert list(half_drift.inputs) == ["x0", "step", "z"]
    assert half_drift.inputs["step"] == "() the step eta of x <- x + eta/2 s(x) + sqrt(2 eta) z"
    write_cases(tmp_path, specs)
    g = golden.load(tmp_path)
    assert sorted(g.of_kind("half_drift")) == sorted(specs)
    # the stored states are the toy update, by hand, over the stored noise (the same operations: bitwise)
    for c in g.of_kind("half_drift").values():
        x, eta, want = c.inputs["x0"], float(c.inputs["step"]), []
        for z in c.inputs["z"]:
            x = x + eta * (0.5 * c.target.score(x)) + math.sqrt(2 * eta) * z
            want.append(x)
        np.testing.assert_array_equal(c.quantities["states"], np.array(want))
    # a foreign toy whose noise lacks its 2 fails, and the diagnosis names it from the entry alone
    vals = {}
    for name, c in g.of_kind("half_drift").items():
        x, eta, states = c.inputs["x0"], float(c.inputs["step"]), []
        for z in c.inputs["z"]:
            x = x + eta * (0.5 * c.target.score(x)) + math.sqrt(eta) * z
            states.append(x)
        vals[f"{name}/states"] = np.array(states)
    res = golden.check(tmp_path, vals)
    assert not res.passed
    (d,) = res.diagnosis
    assert d.hypothesis == "noise sqrt(eta)"


def test_every_diffusion_sampler_has_its_kind_and_cases(monkeypatch):
    """A sampler of refscore.diffusion.SAMPLERS gets a kind diffusion_<name> with its cases (its default
    options on EDM's Karras grid when the case table has no row for it), computed by the registry's run."""
    from refscore.diffusion.samplers import SAMPLERS as DIFFUSION_SAMPLERS
    from refscore.golden import cases

    for name in DIFFUSION_SAMPLERS:
        kind = cases.KINDS[cases.diffusion_kind_name(name)]
        assert kind.subject == "diffusion" and cases.diffusion_sampler_of(kind.name) == name
        assert len(kind.specs()) >= 1
    monkeypatch.delitem(cases.DIFFUSION_SAMPLER_CASES, "euler")
    (spec,) = cases.diffusion_sampler_kind("euler").specs().values()
    assert spec["params"]["grid"] == {"rule": "karras", "steps": 8} and spec["params"]["options"] == {}
