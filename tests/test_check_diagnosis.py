"""check's diagnosis of failing quantities: "wrong backends" built from refscore's own correct values,
perturbed the way real bugs perturb them, must fail and be named.

Each bug is injected where it lives (a factor in a loss, a term left out of a gradient, a
sign, a projection radius, a target), recomputed with refscore's public losses and model
primitives, never by scaling the golden numbers where the bug is not a scaling.
"""
import math
import re

import numpy as np
import pytest

from refscore import conventions, golden, losses


@pytest.fixture(scope="module")
def gdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_diagnosis")
    golden.write(d)
    return d


@pytest.fixture(scope="module")
def g(gdir):
    return golden.load(gdir)


@pytest.fixture(scope="module")
def ref(g):
    return golden.compute(g)


LOSS_KEYS = ("esm", "ism", "dsm") + tuple(f"{l}_{k}" for l in ("ssm", "ssm_vr") for k in golden.PROJECTION_KINDS)


def _by_quantity(res):
    return {d.quantity: d for d in res.diagnosis}


def _row_of(fname):
    """The ledger row (quantity column) whose conversion names ``fname``."""
    for row in conventions.TABLE:
        if re.search(rf"\b{fname}\b", " ".join(row)):
            return row.quantity
    return None


def _terms(case):
    """(model, theta, x, n, d, s, w) of a losses case, refscore's reference engine."""
    model = golden.build_model(case.spec, reference=True)
    th, x = case.inputs["theta"], case.inputs["x"]
    n, d = x.shape
    return model, th, x, n, d, model.score(th, x), np.full(n, 1.0 / n)


def _projections(case, kind):
    if kind == "sphere":
        z = case.inputs["z_sphere"]
        return math.sqrt(z.shape[-1]) * z / np.linalg.norm(z, axis=-1, keepdims=True)
    return case.inputs[f"v_{kind}"]


# ----------------------------------------------------------------- a correct backend
def test_a_correct_backend_gets_no_diagnosis(gdir, ref):
    res = golden.check(gdir, ref)
    assert res.passed and res.diagnosis == [] and "diagnosis" not in str(res)
    # float32 round-off passes under the float32 tolerances, and is not "diagnosed"
    f32 = {k: v.astype(np.float32) for k, v in ref.items()}
    res = golden.check(gdir, f32, precision="float32")
    assert res.passed and res.diagnosis == []


def test_diagnosis_is_printed_under_the_table_one_line_per_quantity(gdir, g, ref):
    vals = {k: 2 * v for k, v in ref.items() if k.rsplit("/", 1)[1] in ("esm", "esm_grad")}
    res = golden.check(gdir, vals)
    text = str(res)
    assert text.index("gaussian_d1/esm") < text.index("diagnosis (") < text.index("RESULT: FAIL")
    lines = res.diagnosis_text().splitlines()
    heads = [l for l in lines[1:] if not l.startswith("    ")]  # one line per quantity, its details indented
    assert heads[0].startswith("  esm: 69 cases;") and heads[1].startswith("  esm_grad:") and len(heads) == 2
    assert lines[2] == "      term-wise: yours = 2 [1/2 ||s||^2] + 2 [-s^T t] + 2 [1/2 ||t||^2]"
    d = res.diagnosis[0]
    assert (d.quantity, d.hypothesis, len(d.cases)) == ("esm", "factor 2", 69)
    assert d.ratio_median == pytest.approx(2.0) and d.ratio_min == pytest.approx(2.0) == d.ratio_max


# ----------------------------------------------------------------- x2 and a forgotten 1/2
def test_loss_times_two_is_a_forgotten_half_only_for_a_single_squared_norm(gdir, ref):
    """x2 on ESM or DSM (one squared norm, 1/2 ||.||^2) is a forgotten 1/2; x2 on ISM, SSM or SSM-VR
    doubles the trace term too, which no missing 1/2 does: never called one.  With m = 2 projections
    in every golden case, x2 on a sliced loss is also the sum over the projections: ambiguous."""
    vals = {k: 2 * v for k, v in ref.items()
            if k.rsplit("/", 1)[1].removesuffix("_grad") in LOSS_KEYS and "/" in k and not k.startswith(
                ("dsm_multi", "ksd", "ula", "mala", "annealed"))}
    res = golden.check(gdir, vals)
    assert not res.passed
    diag = _by_quantity(res)
    assert set(diag) == {q + s for q in LOSS_KEYS for s in ("", "_grad")}
    for q, d in diag.items():
        assert d.ratio_median == pytest.approx(2.0)
        base = q.removesuffix("_grad")
        if base in ("esm", "dsm"):
            assert d.hypothesis == "factor 2" and "forgotten 1/2" in d.explanation, d.line()
        elif base == "ism":
            assert d.hypothesis == "factor 2" and "every term doubled" in d.explanation, d.line()
            assert "not a forgotten 1/2" in d.explanation and "a forgotten 1/2 (" not in d.explanation
        else:
            assert d.ambiguous == ("factor 2", "factor m"), d.line()
            assert "summed over the m projections" in d.explanation and "with the same numbers in each" in d.explanation
            assert "a forgotten 1/2 (" not in d.explanation


def test_forgotten_half_on_the_norm_term_of_ism(gdir, g):
    vals = {}
    for name, c in g.cases.items():
        model, th, x, n, d, s, w = _terms(c)
        vals[f"{name}/ism"] = np.mean(model.score_trace(th, x) + np.sum(s * s, axis=1))
        vals[f"{name}/ism_grad"] = model.trace_grad_params(th, x, w) + 2 * model.score_vjp_params(th, x, w[:, None] * s)
    diag = _by_quantity(golden.check(gdir, vals))
    for d in diag.values():
        assert d.hypothesis == "1/2 missing on the 1/2 ||s||^2 term only", d.line()
        assert d.formula == "yours = 1 [tr grad_x s] + 2 [1/2 ||s||^2]"


# ----------------------------------------------------------------- sigma where sigma^2 belongs
def test_dsm_target_with_sigma_where_sigma_squared_belongs(gdir, g):
    """eq. (6) writes eps ~ N(0, sigma^2 I) and the target -eps/sigma^2.  With eps = sigma z, a code
    dividing by sigma instead gets the target -z: 1/2 ||s(x + sigma z) + z||^2.  That is not a
    constant multiple of refscore's 1/2 ||s + z/sigma||^2 (the ratio varies from case to case), so
    the diagnosis re-evaluates the variant rather than fitting a factor."""
    vals = {}
    for name, c in g.cases.items():
        model, th, x = _terms(c)[:3]
        sig, z = float(c.inputs["sigma"]), c.inputs["eps"]
        e = sig * z  # eq. (6)'s noise
        vals[f"{name}/dsm"], vals[f"{name}/dsm_grad"] = losses.esm(model, th, x + e, -e / sig, grad=True)
    res = golden.check(gdir, vals)
    assert not res.passed
    for q in ("dsm", "dsm_grad"):
        d = _by_quantity(res)[q]
        assert d.hypothesis == "DSM target -z" and "sigma where sigma^2 belongs" in d.explanation
        assert d.ratio_max > 1.5 * d.ratio_min  # no constant factor
        assert d.convention is not None and "DSM" in d.convention and "noise" in d.convention.lower()
        assert d.conversion is None  # the ledger's "identical (factor 1)": fix the target, nothing to convert


@pytest.mark.parametrize("power, fname", [(2, "dsm_from_ncsn"), (4, "dsm_from_sigma4_scaled")])
def test_dsm_scalings_name_their_convention(gdir, g, ref, power, fname):
    vals = {}
    for name, c in g.cases.items():
        sig = float(c.inputs["sigma"])
        for q in ("dsm", "dsm_grad"):
            vals[f"{name}/{q}"] = sig**power * ref[f"{name}/{q}"]
    for d in golden.check(gdir, vals).diagnosis:
        assert d.hypothesis == f"factor sigma^{power}"
        assert d.conversion == fname and d.convention == _row_of(fname)
        # the named function does turn these values into refscore's
        c = g.cases["mlpscore_silu_depth2_d5"]
        converted = getattr(conventions, fname)(vals[f"{c.name}/{d.quantity}"], float(c.inputs["sigma"]))
        np.testing.assert_allclose(converted, ref[f"{c.name}/{d.quantity}"], rtol=1e-12)


def test_sigma_weighting_where_ncsn_has_sigma_squared(gdir, g, ref):
    # plain DSM weighted by lambda(sigma) = sigma
    vals = {f"{n}/dsm": float(c.inputs["sigma"]) * ref[f"{n}/dsm"] for n, c in g.cases.items()}
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "factor sigma^1" and "sigma where NCSN's sigma^2 belongs" in d.explanation
    # NCSN's multi-noise loss weighted by sigma instead of sigma^2, per point, with its gradient
    vals = {}
    for name, c in g.of_kind("dsm_multi").items():
        model = golden.build_model(c.spec, reference=True)
        th, x, eps, sig = c.inputs["theta"], c.inputs["x"], c.inputs["eps"], c.inputs["sigma_points"]
        xt = x + sig[:, None] * eps
        r = model.score(th, xt, sig) + eps / sig[:, None]
        vals[f"{name}/dsm_multi_sigma2"] = np.mean(sig * 0.5 * np.sum(r * r, axis=1))
        vals[f"{name}/dsm_multi_sigma2_grad"] = model.score_vjp_params(th, xt, sig, (sig / len(sig))[:, None] * r)
    res = golden.check(gdir, vals)
    assert not res.passed
    for d in res.diagnosis:
        assert d.hypothesis == "weighting sigma^1" and "sigma where sigma^2 belongs" in d.explanation, d.line()
    # and the two weightings swapped are NCSN's convention
    swapped = {f"{n}/dsm_multi_sigma2": ref[f"{n}/dsm_multi_none"] for n in g.of_kind("dsm_multi")}
    (d,) = golden.check(gdir, swapped).diagnosis
    assert d.hypothesis == "weighting sigma^0" and d.convention == _row_of("dsm_from_ncsn")


# ----------------------------------------------------------------- a sign flip of the score
def test_sign_flip_of_the_score(gdir, g, ref):
    vals = {}
    for name, c in g.cases.items():
        model, th, x, n, d, s, w = _terms(c)
        for q in ("score", "jacobian", "trace", "jvp"):
            vals[f"{name}/{q}"] = -ref[f"{name}/{q}"]
        # the losses of -s: 1/2||-s - t||^2 = esm(s, -t); dsm: 1/2||-s(x~) + z/sigma||^2 = esm at x~, target z/sigma
        vals[f"{name}/esm"], vals[f"{name}/esm_grad"] = losses.esm(model, th, x, -c.inputs["target"], grad=True)
        sig, z = float(c.inputs["sigma"]), c.inputs["eps"]
        vals[f"{name}/dsm"], vals[f"{name}/dsm_grad"] = losses.esm(model, th, x + sig * z, z / sig, grad=True)
        # ism of -s: -tr J + 1/2 ||s||^2
        vals[f"{name}/ism"] = np.mean(-model.score_trace(th, x) + 0.5 * np.sum(s * s, axis=1))
        vals[f"{name}/ism_grad"] = -model.trace_grad_params(th, x, w) + model.score_vjp_params(th, x, w[:, None] * s)
    res = golden.check(gdir, vals)
    diag = _by_quantity(res)
    assert set(diag) == {k.rsplit("/", 1)[1] for k in vals}
    for q in ("score", "jacobian", "trace", "jvp"):
        assert diag[q].hypothesis == "sign flip" and diag[q].ratio_median == pytest.approx(-1.0)
        assert "sign of the score" in diag[q].explanation
    for q in ("esm", "esm_grad", "dsm", "dsm_grad", "ism", "ism_grad"):
        assert diag[q].hypothesis == "score sign flipped", diag[q].line()


# ----------------------------------------------------------------- a mean over dimensions
def test_mean_over_dimensions_instead_of_sum(gdir, g, ref):
    vals = {}
    for name, c in g.cases.items():
        for q in LOSS_KEYS:
            for key in (q, f"{q}_grad"):
                vals[f"{name}/{key}"] = ref[f"{name}/{key}"] / c.dim
    res = golden.check(gdir, vals)
    assert not res.passed
    assert {r.case for r in res.rows if r.status == "FAIL"} == {n for n, c in g.cases.items() if c.dim > 1}
    for d in res.diagnosis:
        assert d.hypothesis == "factor 1/d", d.line()
        if d.quantity.startswith("ssm_") and not d.quantity.startswith("ssm_vr"):  # (v^T s)^2 is no sum
            assert "every term divided by d" in d.explanation
        else:
            assert "mean over the d coordinates" in d.explanation
        assert "only d > 1" in d.patterns
        assert d.conversion is None  # every projection kind fails: not the unit-sphere convention
        assert not any(p.startswith("only the ") and "projection" in p for p in d.patterns)


# ----------------------------------------------------------------- a detached term
def test_ssm_gradient_missing_its_second_term(gdir, g, ref):
    """The gradient of vᵀJv alone: 1/2 (vᵀs)^2 detached (its primitive left out)."""
    vals = dict(ref)
    for name, c in g.cases.items():
        model, th, x, n, d = _terms(c)[:5]
        for kind in golden.PROJECTION_KINDS:
            v = _projections(c, kind)
            m = v.shape[0]
            xt = np.broadcast_to(x, (m, n, d)).reshape(m * n, d)
            vals[f"{name}/ssm_{kind}_grad"] = model.vjv_grad_params(th, xt, v.reshape(m * n, d),
                                                                    np.full(m * n, 1.0 / (m * n)))
    res = golden.check(gdir, vals)
    assert not res.passed
    diag = _by_quantity(res)
    assert set(diag) == {f"ssm_{k}_grad" for k in golden.PROJECTION_KINDS}
    for d in diag.values():
        assert d.hypothesis == "gradient misses the 1/2 (v^T s)^2 term", d.line()
        assert "gradient only" in d.patterns and "detached" in d.explanation


def test_ism_gradient_missing_its_trace_term(gdir, g, ref):
    vals = {}
    for name, c in g.cases.items():
        model, th, x, n, d, s, w = _terms(c)
        vals[f"{name}/ism"] = ref[f"{name}/ism"]
        vals[f"{name}/ism_grad"] = model.score_vjp_params(th, x, w[:, None] * s)
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "gradient misses the tr grad_x s term" and d.patterns[0] == "gradient only"


def test_gradient_only_failure_without_a_missing_term(gdir, ref):
    vals = dict(ref)
    for k in [k for k in vals if k.startswith("mlpenergy_") and k.endswith("/ssm_vr_gaussian_grad")]:
        vals[k] = vals[k] + 1e-3 * np.arange(vals[k].size)
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis is None and "gradient only" in d.patterns and "only MLPEnergy" in d.patterns
    assert "detached" in d.explanation and "only the gaussian projection" in d.patterns


# ----------------------------------------------------------------- unit-sphere projections
def test_unit_sphere_projections_instead_of_sqrt_d_sphere(gdir, g, ref):
    vals = dict(ref)
    for name, c in g.cases.items():
        model, th, x = _terms(c)[:3]
        u = _projections(c, "sphere") / math.sqrt(c.dim)  # |u| = 1
        vals[f"{name}/v_sphere"] = u
        vals[f"{name}/ssm_sphere"], vals[f"{name}/ssm_sphere_grad"] = losses.ssm(model, th, x, u, grad=True)
        vals[f"{name}/ssm_vr_sphere"], vals[f"{name}/ssm_vr_sphere_grad"] = losses.ssm_vr(model, th, x, u, grad=True)
    res = golden.check(gdir, vals)
    assert not res.passed
    assert {r.case for r in res.rows if r.status == "FAIL"} == {n for n, c in g.cases.items() if c.dim > 1}
    diag = _by_quantity(res)
    assert set(diag) == {"v_sphere", "ssm_sphere", "ssm_sphere_grad", "ssm_vr_sphere", "ssm_vr_sphere_grad"}
    d = diag["v_sphere"]
    assert d.hypothesis == "factor 1/sqrt(d)" and "unit-sphere" in d.explanation
    assert d.conversion == "projection_scale" and d.convention == _row_of("projection_scale")
    for q, fname in (("ssm_sphere", "sphere_unscaled_ssm_to_ism"), ("ssm_vr_sphere", "sphere_unscaled_ssm_vr_to_ism")):
        for key in (q, f"{q}_grad"):
            d = diag[key]
            assert d.hypothesis == "unit-sphere projections", d.line()
            assert d.conversion == fname and d.convention == _row_of(fname)
            assert "only the sphere projection" in d.patterns and "only d > 1" in d.patterns
    # "sphere quantities / d": SSM is exactly 1/d per sample
    assert diag["ssm_sphere"].ratio_min == pytest.approx(1 / 5) and diag["ssm_sphere"].ratio_max == pytest.approx(1 / 2)


# ----------------------------------------------------------------- Jacobian layout, KSD, samplers
def test_transposed_jacobian(gdir, g, ref):
    vals = {}
    for name, c in g.cases.items():
        J = ref[f"{name}/jacobian"]
        vals[f"{name}/jacobian"] = np.swapaxes(J, 1, 2)
        vals[f"{name}/jvp"] = np.einsum("kji,kj->ki", J, c.inputs["u"])  # a VJP
    diag = _by_quantity(golden.check(gdir, vals))
    for q in ("jacobian", "jvp"):
        assert diag[q].hypothesis == "transposed Jacobian" and "only d > 1" in diag[q].patterns
    # the symmetric Jacobians (GaussianModel, MLPEnergy, mixtures) pass transposed
    failing = set(diag["jacobian"].cases)
    assert not any(n.startswith(("gaussian_", "mlpenergy_", "mixture_")) for n in failing)


def test_score_array_with_points_in_columns(gdir, ref):
    vals = {"mlpscore_tanh_depth1_d5/score": ref["mlpscore_tanh_depth1_d5/score"].T}
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "transposed array" and "shape (5, 3) != golden (3, 5)" in d.note


def test_ksd_v_statistic_for_u(gdir, g, ref):
    vals = {f"{n}/ksd_u": ref[f"{n}/ksd_v"] for n in g.of_kind("ksd")}
    vals.update({f"{n}/ksd_v": ref[f"{n}/ksd_v"] for n in g.of_kind("ksd")})
    res = golden.check(gdir, vals)
    (d,) = res.diagnosis
    assert d.quantity == "ksd_u" and d.hypothesis == "V-statistic"
    if hasattr(conventions, "ksd_to_u"):  # the ledger's KSD estimator row
        assert d.conversion == "ksd_to_u" and d.convention == _row_of("ksd_to_u")


def test_annealed_langevin_with_ncsn_eps_as_step(gdir, g):
    """NCSN's Algorithm 1 run with its epsilon = the stored step: refscore's at step/2."""
    vals = {}
    for name, c in g.of_kind("annealed").items():
        p = c.target.perturbed()
        x, eps, sig, z = c.inputs["x0"].copy(), float(c.inputs["step"]), c.inputs["sigmas"], c.inputs["z"]
        T, states = z.shape[0] // len(sig), []
        for i, s in enumerate(sig):
            alpha = eps * s**2 / sig[-1] ** 2
            for j in range(T):
                x = x + alpha / 2 * p.score(x, s) + math.sqrt(alpha) * z[i * T + j]
                states.append(x)
        vals[f"{name}/states"] = np.array(states)
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "Langevin step ncsn_step(step)" and d.conversion == "ncsn_eps"
    assert d.convention == _row_of("ncsn_step")


def test_annealed_langevin_with_one_step_for_every_level(gdir, g):
    vals = {}
    for name, c in g.of_kind("annealed").items():
        p = c.target.perturbed()
        x, eta, sig, z = c.inputs["x0"].copy(), float(c.inputs["step"]), c.inputs["sigmas"], c.inputs["z"]
        T, states = z.shape[0] // len(sig), []
        for t in range(z.shape[0]):
            x = x + eta * p.score(x, sig[t // T]) + math.sqrt(2 * eta) * z[t]
            states.append(x)
        vals[f"{name}/states"] = np.array(states)
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "one step for every level"


def test_mala_without_the_proposal_correction(gdir, g):
    vals = {}
    for name, c in g.of_kind("mala").items():
        target, eta = c.target, float(c.inputs["step"])
        prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
        y = prev + eta * target.score(prev.reshape(-1, prev.shape[-1])).reshape(prev.shape) \
            + math.sqrt(2 * eta) * c.inputs["z"]
        vals[f"{name}/log_alpha"] = (target.logpdf(y.reshape(-1, y.shape[-1]))
                                     - target.logpdf(prev.reshape(-1, prev.shape[-1]))).reshape(y.shape[:2])
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis == "no proposal correction"


def test_float32_values_checked_at_float64_tolerances(gdir, ref):
    vals = {k: v.astype(np.float32) for k, v in ref.items() if k.startswith("mlpscore_")}
    res = golden.check(gdir, vals)
    assert not res.passed and res.diagnosis
    assert all(d.hypothesis == "round-off" and "--float32" in d.explanation for d in res.diagnosis)


def test_float32_backend_with_a_bug_is_still_named(gdir, ref):
    vals = {k: (2 * v).astype(np.float32) for k, v in ref.items() if k.endswith(("/esm", "/esm_grad"))}
    res = golden.check(gdir, vals, precision="float32")
    assert [d.hypothesis for d in res.diagnosis] == ["factor 2", "factor 2"]


def test_unexplained_failure_says_so(gdir, ref):
    rng = np.random.default_rng(0)
    vals = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in ref.items()
            if k.endswith("/score") and not k.startswith("denoiser_")}  # the models' score, not the denoiser's
    (d,) = golden.check(gdir, vals).diagnosis
    assert d.hypothesis is None and "no tested hypothesis fits" in d.explanation
    assert "not a constant factor" in d.explanation
    assert golden.check(gdir, vals, diagnose=False).diagnosis == []


# ----------------------------------------------------------------- the ledger as data
def test_conventions_are_found_by_their_callables_not_by_the_table_text(gdir, g, ref, monkeypatch):
    """The diagnosis reads the functions each ledger row carries: blanking every conversion cell's
    text changes nothing it names."""
    import dataclasses

    blank = tuple(dataclasses.replace(r, conversion="-") for r in conventions.TABLE)
    monkeypatch.setattr(conventions, "TABLE", blank)
    vals = {}
    for name, c in g.cases.items():
        vals[f"{name}/dsm"] = float(c.inputs["sigma"]) ** 2 * ref[f"{name}/dsm"]
    vals.update({f"{n}/ksd_u": ref[f"{n}/ksd_v"] for n in g.of_kind("ksd")})
    diag = _by_quantity(golden.check(gdir, vals))
    assert (diag["dsm"].conversion, diag["dsm"].convention) == ("dsm_from_ncsn", "DSM scale (NCSN)")
    assert (diag["ksd_u"].conversion, diag["ksd_u"].convention) == ("ksd_to_u", "KSD estimator")


def test_a_conversion_that_raises_is_not_swallowed(gdir, g, ref, monkeypatch):
    """A ledger conversion raising on a golden case's own values is a bug: it reaches the caller."""
    import dataclasses

    def broken(value, diagonal, form):
        raise ZeroDivisionError("a bug in a conversion")

    rows = tuple(dataclasses.replace(r, conversions=tuple(dataclasses.replace(c, inverse=broken)
                                                         for c in r.conversions))
                 if r.quantity == "KSD estimator" else r for r in conventions.TABLE)
    monkeypatch.setattr(conventions, "TABLE", rows)
    vals = {f"{n}/ksd_u": ref[f"{n}/ksd_v"] for n in g.of_kind("ksd")}
    with pytest.raises(ZeroDivisionError, match="a bug in a conversion"):
        golden.check(gdir, vals)


# ----------------------------------------------------------------- unknown keys and the "not provided" block
def test_an_unknown_key_names_the_golden_key_it_is_close_to(gdir, ref):
    vals = {"linear_d2/ISM": ref["linear_d2/ism"], "linaer_d2/esm": ref["linear_d2/esm"],
            "linear_d2/ism_gard": ref["linear_d2/ism_grad"], "nothing_like/it": 1.0,
            "linear_d2/score": ref["linear_d2/score"]}
    res = golden.check(gdir, vals)
    notes = {r.key: r.note for r in res.rows if r.status == "UNKNOWN"}
    assert notes == {"linear_d2/ISM": "not a golden key; did you mean 'linear_d2/ism'?",
                     "linaer_d2/esm": "not a golden key; did you mean 'linear_d2/esm'?",
                     "linear_d2/ism_gard": "not a golden key; did you mean 'linear_d2/ism_grad'?",
                     "nothing_like/it": "not a golden key"}
    assert "did you mean 'linear_d2/ism'?" in res.table() and not res.passed


def test_not_provided_lists_the_kinds_provided_only(gdir, g, ref):
    vals = {k: v for k, v in ref.items() if k.startswith("ksd_imq_gaussian_d2/")}
    res = golden.check(gdir, vals)
    assert res.passed and res.not_provided == {"stein_kernel": 2, "ksd_u": 2, "ksd_v": 2}
    summary = res.summary()
    assert "not provided: stein_kernel (2 cases), ksd_u (2 cases), ksd_v (2 cases)" in summary
    assert "esm" not in summary.split("not provided:")[1] and "losses 0 of 69" in summary
