"""refscore.testing: the assertion helpers pass correct code and fail wrong code with its cause named.

Every helper is run on a correct implementation (NumPy, JAX, and torch when it is installed) and
on the classic mistakes: a forgotten 1/2 in ESM, sigma where sigma^2 belongs in DSM (the target
-z), a flipped score, a ULA step in the lr/2 form, MALA without its proposal correction.  The
failing message must carry golden.check's diagnosis line of the failing quantity.  The README's
PyTorch and JAX examples run as written.  JAX compiles once per case, so its tests use a few
cases covering every model class; torch and NumPy run every case.
"""
from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

from refscore import golden, testing

ROOT = pathlib.Path(__file__).resolve().parents[1]
# every model class (energies included), d = 1, 2, 5
JAX_CASES = ["linear_d2", "gaussian_d5", "mixture_d1", "mlpenergy_softplus_depth1_d2", "mlpscore_gelu_depth2_d5"]
LOSS_NAMES = ("esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi")


def _framework(name):
    if name != "numpy":
        pytest.importorskip(name)
    return name


FRAMEWORKS = ["numpy", "jax", "torch"]


# ================================================================== correct implementations
# ------------------------------------------------------------------ numpy: refscore's primitives
def _np_score(theta, x, spec):
    d = x.shape[1]
    model = spec["model"]
    if model == "LinearScore":
        return x @ theta[:d * d].reshape(d, d).T + theta[d * d:]
    L = np.zeros((d, d))
    L[np.tril_indices(d)] = theta[d:]
    return -((x - theta[:d]) @ L) @ L.T  # GaussianModel: -L L^T (x - mu)


def np_esm(model, theta, x, target):
    r = model.score(theta, x) - target
    return 0.5 * np.mean(np.sum(r * r, axis=1)), model.score_vjp_params(theta, x, r / len(x))


def np_ism(model, theta, x):
    s, n = model.score(theta, x), len(x)
    w = np.full(n, 1.0 / n)
    value = np.mean(model.score_trace(theta, x) + 0.5 * np.sum(s * s, axis=1))
    return value, model.trace_grad_params(theta, x, w) + model.score_vjp_params(theta, x, w[:, None] * s)


def np_dsm(model, theta, x, sigma, eps):
    xt = x + sigma * eps
    r = model.score(theta, xt) + eps / sigma
    return 0.5 * np.mean(np.sum(r * r, axis=1)), model.score_vjp_params(theta, xt, r / len(x))


def _np_sliced(model, theta, x, v, variance_reduced):
    m, n, d = v.shape
    xt, vf = np.tile(x, (m, 1)), v.reshape(m * n, d)
    w = np.full(m * n, 1.0 / (m * n))
    vjv = np.sum(vf * model.score_jvp(theta, xt, vf), axis=1)
    s = model.score(theta, xt)
    if variance_reduced:
        second, cot = 0.5 * np.sum(s * s, axis=1), w[:, None] * s
    else:
        vs = np.sum(vf * s, axis=1)
        second, cot = 0.5 * vs**2, (w * vs)[:, None] * vf
    return np.mean(vjv + second), model.vjv_grad_params(theta, xt, vf, w) + model.score_vjp_params(theta, xt, cot)


def np_ssm(model, theta, x, v):
    return _np_sliced(model, theta, x, v, False)


def np_ssm_vr(model, theta, x, v):
    return _np_sliced(model, theta, x, v, True)


def np_dsm_multi(model, theta, x, sigmas, labels, eps, weighting):
    sig = sigmas[labels]
    xt = x + sig[:, None] * eps
    r = model.score(theta, xt, sig) + eps / sig[:, None]
    lam = sig**2 if weighting == "sigma2" else np.ones_like(sig)
    value = np.mean(lam * 0.5 * np.sum(r * r, axis=1))
    return value, model.score_vjp_params(theta, xt, sig, (lam / len(x))[:, None] * r)


# ------------------------------------------------------------------ torch: autograd
def t_esm(net, x, target):
    return 0.5 * ((net(x) - target) ** 2).sum(1).mean()


def _t_jac_rows(net, x):
    import torch

    x = x.detach().requires_grad_(True)
    s = net(x)
    return x, s, torch


def t_ism(net, x):
    x, s, torch = _t_jac_rows(net, x)
    trace = sum(torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
    return (trace + 0.5 * (s**2).sum(1)).mean()


def t_dsm(net, x, sigma, eps):
    r = net(x + sigma * eps) + eps / sigma
    return 0.5 * (r**2).sum(1).mean()


def _t_sliced(net, x, v, variance_reduced):
    x, s, torch = _t_jac_rows(net, x)
    terms = []
    for vj in v:  # v^T J v = v . grad_x (v . s)
        jtv = torch.autograd.grad((vj * s).sum(), x, create_graph=True)[0]
        second = 0.5 * (s**2).sum(1) if variance_reduced else 0.5 * (vj * s).sum(1) ** 2
        terms.append((vj * jtv).sum(1) + second)
    return torch.stack(terms).mean()


def t_ssm(net, x, v):
    return _t_sliced(net, x, v, False)


def t_ssm_vr(net, x, v):
    return _t_sliced(net, x, v, True)


def t_dsm_multi(net, x, sigmas, labels, eps, weighting):
    sig = sigmas[labels]
    r = net(x + sig[:, None] * eps, sig) + eps / sig[:, None]
    lam = sig**2 if weighting == "sigma2" else 1.0
    return (lam * 0.5 * (r**2).sum(1)).mean()


# ------------------------------------------------------------------ jax: jax.grad / jvp
def j_esm(score, params, x, target):
    import jax.numpy as jnp

    return 0.5 * jnp.mean(jnp.sum((score(params, x) - target) ** 2, axis=1))


def j_ism(score, params, x):
    import jax
    import jax.numpy as jnp

    J = jax.vmap(jax.jacfwd(score, 1), (None, 0))(params, x)
    s = score(params, x)
    return jnp.mean(jnp.trace(J, axis1=1, axis2=2) + 0.5 * jnp.sum(s**2, axis=1))


def j_dsm(score, params, x, sigma, eps):
    import jax.numpy as jnp

    r = score(params, x + sigma * eps) + eps / sigma
    return 0.5 * jnp.mean(jnp.sum(r**2, axis=1))


def _j_sliced(score, params, x, v, variance_reduced):
    import jax
    import jax.numpy as jnp

    def one(vj):
        s, jv = jax.jvp(lambda y: score(params, y), (x,), (vj,))
        second = 0.5 * jnp.sum(s**2, axis=1) if variance_reduced else 0.5 * jnp.sum(vj * s, axis=1) ** 2
        return jnp.sum(vj * jv, axis=1) + second

    return jnp.mean(jax.vmap(one)(v))


def j_ssm(score, params, x, v):
    return _j_sliced(score, params, x, v, False)


def j_ssm_vr(score, params, x, v):
    return _j_sliced(score, params, x, v, True)


def j_dsm_multi(score, params, x, sigmas, labels, eps, weighting):
    import jax.numpy as jnp

    sig = sigmas[labels]
    r = score(params, x + sig[:, None] * eps, sig) + eps / sig[:, None]
    lam = sig**2 if weighting == "sigma2" else 1.0
    return jnp.mean(lam * 0.5 * jnp.sum(r**2, axis=1))


LOSS_FUNCTIONS = {
    "numpy": {"esm": np_esm, "ism": np_ism, "dsm": np_dsm, "ssm": np_ssm, "ssm_vr": np_ssm_vr,
              "dsm_multi": np_dsm_multi},
    "torch": {"esm": t_esm, "ism": t_ism, "dsm": t_dsm, "ssm": t_ssm, "ssm_vr": t_ssm_vr,
              "dsm_multi": t_dsm_multi},
    "jax": {"esm": j_esm, "ism": j_ism, "dsm": j_dsm, "ssm": j_ssm, "ssm_vr": j_ssm_vr,
            "dsm_multi": j_dsm_multi},
}


# ------------------------------------------------------------------ samplers, any framework
def _ops(framework):
    if framework == "torch":
        import torch

        return torch.sqrt, torch.log, torch.where, lambda a: a.sum(1)
    if framework == "jax":
        import jax.numpy as jnp

        return jnp.sqrt, jnp.log, jnp.where, lambda a: jnp.sum(a, axis=1)
    return np.sqrt, np.log, np.where, lambda a: np.sum(a, axis=1)


def ula_step_for(framework, lr_form=False):
    def step_fn(x, score, step, z):
        if lr_form:  # x + (lr/2) s + sqrt(lr) z read with lr = refscore's step
            return x + step / 2 * score(x) + math.sqrt(step) * z
        return x + step * score(x) + math.sqrt(2 * step) * z

    return step_fn


def mala_step_for(framework, correction=True, return_log_alpha=True):
    _, log, where, rowsum = _ops(framework)

    def step_fn(x, score, log_prob, step, z, u):
        y = x + step * score(x) + math.sqrt(2 * step) * z
        log_alpha = log_prob(y) - log_prob(x)
        if correction:
            fwd = rowsum((y - x - step * score(x)) ** 2)
            bwd = rowsum((x - y - step * score(y)) ** 2)
            log_alpha = log_alpha - (bwd - fwd) / (4 * step)
        x_next = where((log(u) < log_alpha)[:, None], y, x)
        return (x_next, log_alpha) if return_log_alpha else x_next

    return step_fn


def annealed_step(x, score, sigma, sigmas, step, z):
    eta = step * sigma**2 / sigmas[-1] ** 2
    return x + eta * score(x) + math.sqrt(2 * eta) * z


# ================================================================== the cases, in memory
def test_golden_cases_are_the_written_golden_files_bitwise(tmp_path):
    golden.write(tmp_path)
    written = golden.load(tmp_path)
    mem = testing.golden_cases()
    assert list(mem.all_cases) == list(written.all_cases)
    assert list(mem.cases) == list(written.cases) and len(mem.cases) == 69
    for name, c in written.all_cases.items():
        m = mem.all_cases[name]
        assert (m.kind, m.spec, m.layout) == (c.kind, c.spec, c.layout), name
        for part in ("inputs", "quantities"):
            a, b = getattr(m, part), getattr(c, part)
            assert list(a) == list(b), name
            for k in a:
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{name}/{k}"
                assert not a[k].flags.writeable  # the cache cannot be changed by a caller
    assert golden.check(mem, golden.compute(mem)).passed


@pytest.mark.parametrize("selector, expected", [
    ("linear_d2", ["linear_d2"]),
    ("LinearScore", ["linear_d1", "linear_d2", "linear_d5"]),
    ("mlpscore_tanh_depth1_*", ["mlpscore_tanh_depth1_d1", "mlpscore_tanh_depth1_d2", "mlpscore_tanh_depth1_d5"]),
    (["gaussian_d1", "GaussianModel"], ["gaussian_d1", "gaussian_d2", "gaussian_d5"]),
    (lambda spec: spec["kwargs"]["dim"] == 5 and spec["model"] == "GaussianMixtureModel", ["mixture_d5"]),
])
def test_cases_select_by_name_pattern_class_or_predicate(selector, expected):
    assert list(testing.golden_cases(selector, kind="losses").all_cases) == expected


def test_case_selection_of_other_kinds_and_errors():
    assert list(testing.golden_cases("GaussianMixture", kind="ula").all_cases) == ["ula_mixture_d1", "ula_mixture_d2"]
    assert list(testing.golden_cases("LinearScore", kind="dsm_multi").all_cases) == ["dsm_multi_linear_d2"]
    with pytest.raises(ValueError, match="is a ula case"):
        testing.assert_loss_matches(np_dsm, "dsm", cases="ula_gaussian_d2")
    with pytest.raises(ValueError, match="names no losses case"):
        testing.assert_score_matches(_np_score, "nope_d3")
    with pytest.raises(ValueError, match="selects none"):
        testing.assert_score_matches(_np_score, lambda spec: False)
    with pytest.raises(ValueError, match="loss must be one of"):
        testing.assert_loss_matches(np_dsm, "fisher")
    with pytest.raises(ValueError, match="framework must be one of"):
        testing.assert_score_matches(_np_score, "linear_d1", framework="tensorflow")
    with pytest.raises(ValueError, match="sampler must be one of"):
        testing.assert_sampler_matches(annealed_step, "hmc")


# ================================================================== correct code passes
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_score_passes(framework):
    fw = _framework(framework)
    if fw == "numpy":
        res = testing.assert_score_matches(_np_score, ["LinearScore", "GaussianModel"])
        assert res.count("PASS") == 6
        return
    # the interop adapters of the case, on the flat theta: every model class
    mod = __import__(f"refscore.interop.{fw}", fromlist=["x"])
    if fw == "torch":
        def fn(theta, x, spec):
            return mod.build_module(spec, theta)(x)
        cases = None
    else:
        def fn(theta, x, spec):
            return mod.score_function(spec)(mod.theta_to_params(theta, spec), x)
        cases = JAX_CASES
    res = testing.assert_score_matches(fn, cases, framework=fw)
    assert res.passed and res.count("PASS") == (69 if cases is None else len(cases))


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_passes_value_and_gradient(framework, loss):
    fw = _framework(framework)
    cases = None
    if fw == "jax" and loss != "dsm_multi":  # a compilation per case (and projection kind)
        cases = JAX_CASES[2:] if loss in ("ssm", "ssm_vr") else JAX_CASES
    res = testing.assert_loss_matches(LOSS_FUNCTIONS[fw][loss], loss, framework=fw, cases=cases)
    n_cases = 4 if loss == "dsm_multi" else (len(cases) if cases else 69)
    per_case = {"ssm": 3, "ssm_vr": 3, "dsm_multi": 2}.get(loss, 1) * 2  # value and gradient
    assert res.passed and res.count("PASS") == n_cases * per_case
    assert not any(r.status == "FAIL" for r in res.rows)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_samplers_pass(framework):
    fw = _framework(framework)
    assert testing.assert_sampler_matches(ula_step_for(fw), "ula", framework=fw).count("PASS") == 3
    res = testing.assert_sampler_matches(mala_step_for(fw), "mala", framework=fw)
    assert res.count("PASS") == 9  # states, accept, log_alpha of 3 cases
    res = testing.assert_sampler_matches(mala_step_for(fw, return_log_alpha=False), "mala", framework=fw)
    assert res.count("PASS") == 6  # log_alpha not returned: not compared
    assert testing.assert_sampler_matches(annealed_step, "annealed", framework=fw).count("PASS") == 3
    for kind, word in (("kinetic_baoab", "BAOAB"), ("kinetic_obabo", "OBABO")):
        res = testing.assert_sampler_matches(kinetic_step(word), kind, framework=fw)
        assert res.count("PASS") == 6  # states and momenta of 3 cases

    def baoab_run(x0, v0, score, step, friction, xi):  # your own loop, stacked at the end
        one, q, p, qs, ps = kinetic_step("BAOAB"), x0, v0, [], []
        for t in range(xi.shape[0]):
            q, p = one(q, p, score, step, friction, xi[t])
            qs.append(q)
            ps.append(p)
        return qs, ps

    res = testing.assert_sampler_matches(baoab_run, "kinetic_baoab", form="trajectory", framework=fw)
    assert res.count("PASS") == 6


def kinetic_step(word):
    """BAOAB or OBABO at unit mass, letter by letter, in any framework's arrays."""
    def step_fn(x, v, score, step, friction, xi):
        d = x.shape[1]
        if word == "BAOAB":
            c = math.exp(-friction * step)
            v = v + step / 2 * score(x)
            x = x + step / 2 * v
            v = c * v + math.sqrt(1 - c * c) * xi[:, :d]
            x = x + step / 2 * v
            return x, v + step / 2 * score(x)
        c = math.exp(-friction * step / 2)
        v = c * v + math.sqrt(1 - c * c) * xi[:, :d]
        v = v + step / 2 * score(x)
        x = x + step * v
        v = v + step / 2 * score(x)
        return x, c * v + math.sqrt(1 - c * c) * xi[:, d:]
    return step_fn


def test_projections_and_weightings_subsets():
    res = testing.assert_loss_matches(np_ssm, "ssm", cases="linear_d2", projections=("sphere",))
    assert [r.key for r in res.rows if r.status == "PASS"] == ["linear_d2/ssm_sphere", "linear_d2/ssm_sphere_grad"]
    res = testing.assert_loss_matches(np_dsm_multi, "dsm_multi", weightings=("none",), grad=False)
    assert {r.quantity for r in res.rows if r.status == "PASS"} == {"dsm_multi_none"}


def test_your_own_torch_module_via_model():
    torch = pytest.importorskip("torch")

    def my_net(spec, theta):
        kw = spec["kwargs"]
        net = torch.nn.Sequential(torch.nn.Linear(kw["dim"], kw["hidden"][0]), torch.nn.Tanh(),
                                  torch.nn.Linear(kw["hidden"][0], kw["dim"])).double()
        torch.nn.utils.vector_to_parameters(theta, net.parameters())
        return net

    cases = "mlpscore_tanh_depth1_*"
    res = testing.assert_loss_matches(t_ism, "ism", framework="torch", model=my_net, cases=cases)
    assert res.count("PASS") == 6
    res = testing.assert_score_matches(lambda theta, x, spec: my_net(spec, theta)(x), cases, framework="torch")
    assert res.count("PASS") == 3


def test_your_own_jax_params_via_model():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def linear(spec, theta):  # params as a dict: ravel_pytree reads its leaves in key order, A then b
        d = spec["kwargs"]["dim"]
        return (lambda p, x: x @ p["A"].T + p["b"]), {"A": theta[:d * d].reshape(d, d), "b": theta[d * d:]}

    def dsm(score, params, x, sigma, eps):
        return 0.5 * jnp.mean(jnp.sum((score(params, x + sigma * eps) + eps / sigma) ** 2, axis=1))

    assert testing.assert_loss_matches(dsm, "dsm", framework="jax", model=linear, cases="LinearScore",
                                       jit=False).count("PASS") == 6


def test_torch_float32_uses_the_float32_tolerances():
    pytest.importorskip("torch")
    res = testing.assert_loss_matches(t_dsm, "dsm", framework="torch", dtype="float32", cases="mlpscore_gelu_*")
    assert res.passed and (res.rtol, res.atol) == golden.TOLERANCES["float32"]
    with pytest.raises(AssertionError, match="round-off"):  # float64 tolerances: float32 round-off is named
        testing.assert_loss_matches(t_dsm, "dsm", framework="torch", dtype="float32", cases="mlpscore_gelu_*",
                                    rtol=1e-8, atol=1e-10)


# ================================================================== wrong code fails, cause named
def _message(call):
    with pytest.raises(AssertionError) as info:
        call()
    return str(info.value)


def _diagnosis_line(message, quantity):
    lines = [l.strip() for l in message.splitlines() if l.startswith(f"  {quantity}: ")]
    assert len(lines) == 1, message
    return lines[0]


def esm_without_half_for(framework):
    if framework == "numpy":
        def loss(model, theta, x, target):
            value, grad = np_esm(model, theta, x, target)
            return 2 * value, 2 * grad
    elif framework == "torch":
        def loss(net, x, target):
            return ((net(x) - target) ** 2).sum(1).mean()
    else:
        def loss(score, params, x, target):
            import jax.numpy as jnp

            return jnp.mean(jnp.sum((score(params, x) - target) ** 2, axis=1))
    return loss


def dsm_sigma_for_sigma2_for(framework):
    """The target -eps (= -sigma z / sigma) where eq. (6) has -eps/sigma (= -sigma z / sigma^2)."""
    if framework == "numpy":
        def loss(model, theta, x, sigma, eps):
            xt = x + sigma * eps
            r = model.score(theta, xt) + eps
            return 0.5 * np.mean(np.sum(r * r, axis=1)), model.score_vjp_params(theta, xt, r / len(x))
    elif framework == "torch":
        def loss(net, x, sigma, eps):
            return 0.5 * ((net(x + sigma * eps) + eps) ** 2).sum(1).mean()
    else:
        def loss(score, params, x, sigma, eps):
            import jax.numpy as jnp

            return 0.5 * jnp.mean(jnp.sum((score(params, x + sigma * eps) + eps) ** 2, axis=1))
    return loss


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_esm_without_its_half_is_named(framework):
    fw = _framework(framework)
    msg = _message(lambda: testing.assert_loss_matches(esm_without_half_for(fw), "esm", framework=fw,
                                                       cases=JAX_CASES))
    assert msg.startswith(f"refscore.testing.assert_loss_matches('esm', framework={fw!r}): esm fails in 5 of 5 cases")
    for q in ("esm", "esm_grad"):
        line = _diagnosis_line(msg, q)
        assert "yours/golden = 2 everywhere" in line and "-> factor 2" in line and "forgotten 1/2" in line, line
    assert "gaussian_d5/esm " in msg and "0 passed, 10 failed" in msg


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dsm_sigma_where_sigma2_belongs_is_named(framework):
    fw = _framework(framework)
    msg = _message(lambda: testing.assert_loss_matches(dsm_sigma_for_sigma2_for(fw), "dsm", framework=fw,
                                                       cases=JAX_CASES))
    for q in ("dsm", "dsm_grad"):
        line = _diagnosis_line(msg, q)
        assert re.search(r"yours/golden median [-\d.e]+, range", line), line
        assert "-> DSM target -z" in line and "sigma where sigma^2 belongs" in line, line
        assert "[convention 'DSM noise']" in line, line


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_flipped_score_is_named(framework):
    fw = _framework(framework)
    if fw == "numpy":
        def fn(theta, x, spec):
            return -_np_score(theta, x, spec)
        cases = ["LinearScore", "GaussianModel"]
    else:
        mod = __import__(f"refscore.interop.{fw}", fromlist=["x"])
        if fw == "torch":
            def fn(theta, x, spec):
                return -mod.build_module(spec, theta)(x)
        else:
            def fn(theta, x, spec):
                return -mod.score_function(spec)(mod.theta_to_params(theta, spec), x)
        cases = JAX_CASES
    msg = _message(lambda: testing.assert_score_matches(fn, cases, framework=fw))
    line = _diagnosis_line(msg, "score")
    assert "yours/golden = -1 everywhere" in line and "-> sign flip" in line and "sign of the score" in line, line


def test_flipped_score_inside_a_loss_is_named():
    def ism_of_minus_s(model, theta, x):  # tr grad(-s) + 1/2 ||-s||^2: the trace term flips
        value, grad = np_ism(model, theta, x)
        trace = np.mean(model.score_trace(theta, x))
        trace_grad = model.trace_grad_params(theta, x, np.full(len(x), 1 / len(x)))
        return value - 2 * trace, grad - 2 * trace_grad

    msg = _message(lambda: testing.assert_loss_matches(ism_of_minus_s, "ism", cases="MLPScore"))
    assert "-> score sign flipped" in _diagnosis_line(msg, "ism")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ula_step_in_the_lr_form_is_named(framework):
    fw = _framework(framework)
    msg = _message(lambda: testing.assert_sampler_matches(ula_step_for(fw, lr_form=True), "ula", framework=fw))
    line = _diagnosis_line(msg, "states")
    assert "Langevin step step_from_lr(step)" in line and "= 0.5 step" in line, line
    assert "[convention 'Langevin step', convert with refscore.conventions.lr_from_step]" in line, line


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_mala_without_its_proposal_correction_is_named(framework):
    fw = _framework(framework)
    msg = _message(lambda: testing.assert_sampler_matches(mala_step_for(fw, correction=False), "mala", framework=fw))
    line = _diagnosis_line(msg, "log_alpha")
    assert "-> no proposal correction" in line and "not symmetric" in line, line
    assert re.search(r"log_alpha fails in 3 of 3 cases", msg.splitlines()[0])


def test_annealed_with_one_step_for_every_level_is_named():
    def one_step(x, score, sigma, sigmas, step, z):
        return x + step * score(x) + math.sqrt(2 * step) * z

    msg = _message(lambda: testing.assert_sampler_matches(one_step, "annealed"))
    assert "-> one step for every level" in _diagnosis_line(msg, "states")


def test_message_lists_at_most_twelve_failing_keys():
    msg = _message(lambda: testing.assert_loss_matches(esm_without_half_for("numpy"), "esm"))
    assert "... and 126 more failing keys" in msg
    assert "138 keys compared (rtol=1e-08, atol=1e-10): 0 passed, 138 failed" in msg


# ================================================================== misuse
def test_numpy_grad_needs_a_pair():
    def value_only(model, theta, x):
        return np_ism(model, theta, x)[0]

    with pytest.raises(TypeError, match=r"must return \(value, gradient over theta\)"):
        testing.assert_loss_matches(value_only, "ism", cases="linear_d1")
    assert testing.assert_loss_matches(value_only, "ism", cases="linear_d1", grad=False).passed


def test_an_exception_of_yours_names_the_case():
    def broken(model, theta, x):
        raise ZeroDivisionError("mine")

    with pytest.raises(ZeroDivisionError) as info:
        testing.assert_loss_matches(broken, "ism", cases="mixture_d2")
    assert any("golden case 'mixture_d2'" in n for n in getattr(info.value, "__notes__", []))


def test_a_loss_that_forgets_the_mean_fails_on_its_shape():
    def per_point(model, theta, x):
        s = model.score(theta, x)
        return model.score_trace(theta, x) + 0.5 * np.sum(s * s, axis=1)

    msg = _message(lambda: testing.assert_loss_matches(per_point, "ism", cases="linear_d2", grad=False))
    assert "shape (3,) != golden ()" in msg


# ================================================================== the README's examples, as written
def _readme_examples():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### In your own test suite: `refscore.testing`")
    section = text[start:text.index("\n## ", start)]
    return re.findall(r"^```py\n(.*?)^```", section, re.S | re.M)


def _run_example(code, name):
    ns = {"__name__": name}
    exec(compile(code, name, "exec"), ns)
    tests = [f for k, f in ns.items() if k.startswith("test_") and callable(f)]
    assert len(tests) >= 3
    for test in tests:
        test()


def test_readme_has_a_torch_and_a_jax_example():
    examples = _readme_examples()
    assert len(examples) == 2
    assert "import torch" in examples[0] and "import jax" in examples[1]
    for code in examples:
        assert "assert_loss_matches" in code and "assert_sampler_matches" in code and "assert_score_matches" in code


def test_readme_torch_example_runs():
    pytest.importorskip("torch")
    _run_example(_readme_examples()[0], "test_refscore_torch")


def test_readme_jax_example_runs():
    pytest.importorskip("jax")
    _run_example(_readme_examples()[1], "test_refscore_jax")


def test_readme_message_is_the_real_one():
    pytest.importorskip("torch")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### In your own test suite: `refscore.testing`")
    shown = re.search(r"^```text\n(.*?)^```", text[start:], re.S | re.M).group(1)

    def lr_form(x, score, step, z):
        return x + step / 2 * score(x) + math.sqrt(step) * z

    assert _message(lambda: testing.assert_sampler_matches(lr_form, "ula", framework="torch")) + "\n" == shown


# ================================================================== the tables, and what testing holds
def test_loss_inputs_cover_the_loss_registry_and_step_inputs_the_sampler_kinds():
    from refscore import losses

    assert list(testing.LOSS_INPUTS) == list(losses.LOSSES)
    assert list(testing.LOSS_INPUTS["dsm"]) == ["x", "sigma", "eps"]
    assert list(testing.LOSS_INPUTS["dsm_multi"]) == ["x", "sigmas", "labels", "eps", "weighting"]
    assert list(testing.STEP_INPUTS) == ["ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo", "kinetic_aboba"]
    assert all(kind in golden.CASE_KINDS for kind in testing.STEP_INPUTS)
    assert list(testing.STEP_INPUTS["mala"]) == ["score", "log_prob", "step", "z", "u"]
    assert list(testing.STEP_INPUTS["kinetic_obabo"]) == ["v", "score", "step", "friction", "xi"]
    # a whole trajectory gets the start and the noise of every step, stacked
    assert list(testing.TRAJECTORY_INPUTS) == list(testing.STEP_INPUTS)
    assert list(testing.TRAJECTORY_INPUTS["mala"]) == ["x0", "score", "log_prob", "step", "z", "u"]
    assert list(testing.TRAJECTORY_INPUTS["annealed"]) == ["x0", "score", "sigmas", "step", "z"]
    assert list(testing.TRAJECTORY_INPUTS["kinetic_aboba"]) == ["x0", "v0", "score", "step", "friction", "xi"]
    assert testing.TRAJECTORY_INPUTS["kinetic_aboba"]["xi"].startswith("(T, c, 2 d)")


def test_the_former_table_names_are_deprecated_aliases():
    with pytest.warns(DeprecationWarning, match="LOSS_INPUTS"):
        old = testing.LOSSES
    assert list(old) == list(testing.LOSS_INPUTS)
    assert (old["esm"]["kind"], old["esm"]["quantities"]) == ("losses", ("esm",))
    assert old["ssm_vr"]["quantities"] == ("ssm_vr_gaussian", "ssm_vr_rademacher", "ssm_vr_sphere")
    assert (old["dsm_multi"]["kind"], old["dsm_multi"]["quantities"]) == ("dsm_multi",
                                                                           ("dsm_multi_sigma2", "dsm_multi_none"))
    assert all(old[k]["inputs"] == testing.LOSS_INPUTS[k] for k in old)
    with pytest.warns(DeprecationWarning, match="STEP_INPUTS"):
        old = testing.SAMPLERS
    assert old["mala"]["inputs"] == testing.STEP_INPUTS["mala"]
    assert old["mala"]["returns"].startswith("x_next (c, d), or (x_next, log_alpha (c,))")
    with pytest.raises(AttributeError, match="no attribute 'BACKENDS'"):
        testing.BACKENDS


def test_a_device_with_numpy_is_refused():
    # NumPy arrays have no device: a device given with framework="numpy" was silently ignored
    with pytest.raises(ValueError, match="device is for framework='torch' or 'jax', not 'numpy'"):
        testing.assert_score_matches(_np_score, "linear_d1", device="cpu")
    with pytest.raises(ValueError, match="device is for framework='torch' or 'jax', not 'numpy'"):
        testing.assert_sampler_matches(ula_step_for("numpy"), "ula", device="cpu")


def test_a_torch_loss_returning_no_tensor_names_the_helper():
    pytest.importorskip("torch")

    def as_float(net, x, sigma, eps):
        return t_dsm(net, x, sigma, eps).item()

    with pytest.raises(TypeError, match=r"^refscore\.testing\.assert_loss_matches\('dsm', framework='torch'\): "
                                        r"your loss function must return a torch tensor"):
        testing.assert_loss_matches(as_float, "dsm", framework="torch", cases="linear_d1")


def test_testing_holds_the_assertions_and_no_framework_code():
    """torch and JAX code lives in refscore.interop: testing imports neither, loads no module by name
    and never compares a framework's name."""
    import ast

    tree = ast.parse((ROOT / "refscore" / "testing.py").read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [m for m in imported if m.split(".")[0] in ("torch", "jax", "importlib")] == []
    names = {"numpy", "torch", "jax"}
    compared = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
                and any(isinstance(c, ast.Constant) and c.value in names for c in [n.left, *n.comparators])]
    assert compared == []


def test_importing_testing_imports_neither_framework():
    import subprocess
    import sys

    code = ("import sys\nimport refscore.testing as t\nimport numpy as np\n"
            "t.assert_score_matches(lambda theta, x: x @ theta[:1].reshape(1, 1).T + theta[1:], 'linear_d1')\n"
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules, 'a framework was imported'\n"
            "print('clean')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=_with_root_on_path())
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_missing_framework_says_how_to_install(framework):
    import subprocess
    import sys

    code = (f"import sys\nsys.modules[{framework!r}] = None\nfrom refscore import testing\n"
            "try:\n"
            f"    testing.assert_score_matches(lambda theta, x: x, 'linear_d1', framework={framework!r})\n"
            "except ImportError as exc:\n"
            f"    assert exc.name == {framework!r}, exc.name\n"
            "    print('IMPORTERROR:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=_with_root_on_path())
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTERROR:" in proc.stdout and "pip install" in proc.stdout


def _with_root_on_path():
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_refscores_own_steps_are_the_contract():
    """refscore.sampling.steps, wrapped to the step_fn signature, pass every sampler's golden cases."""
    from refscore.sampling.steps import annealed_level_steps, langevin_step, mala_step

    def ula(x, score, step, z):
        return langevin_step(x, score(x), step, z)

    def mala(x, score, log_prob, step, z, u):
        x_next, _, log_alpha = mala_step(x, score, log_prob, step, z, u)
        return x_next, log_alpha

    def annealed(x, score, sigma, sigmas, step, z):
        return langevin_step(x, score(x), annealed_level_steps(step, sigmas)[sigmas.index(sigma)], z)

    assert testing.assert_sampler_matches(ula, "ula").count("PASS") == 3
    assert testing.assert_sampler_matches(mala, "mala").count("PASS") == 9
    assert testing.assert_sampler_matches(annealed, "annealed").count("PASS") == 3


SAMPLER_NAMES = ["ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo", "kinetic_aboba"]
#: keys compared per sampler: mala's states, accept and log_alpha, kinetic states and momenta, per case
SAMPLER_KEYS = {"ula": 3, "mala": 9, "annealed": 3, "kinetic_baoab": 6, "kinetic_obabo": 6, "kinetic_aboba": 6}


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_registered_step_is_the_contract_and_step_inputs_are_its_inputs(name):
    """The sampler registry's steps are step_fns as they are, and STEP_INPUTS is what each declares."""
    from refscore.sampling.samplers import SAMPLERS

    sampler = SAMPLERS[name]
    assert testing.STEP_INPUTS[name] == sampler.inputs
    assert testing.assert_sampler_matches(sampler.step, name).count("PASS") == SAMPLER_KEYS[name]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_the_single_step_api_looped_is_the_trajectory_contract(name):
    """refscore's single-step API (init, step(state, key)), looped by the user over the stored noise,
    passes as a whole trajectory: its noise is the golden noise (the key's counters name it)."""
    from refscore import noise
    from refscore.sampling.samplers import SAMPLERS
    from refscore.sampling.single_step import CounterKey

    sampler = SAMPLERS[name]
    for c in testing.golden_cases(kind=name).all_cases.values():
        target, p = golden.build_target(c.spec), c.spec["params"]
        if sampler.splitting is not None:
            k = sampler.single_step(target, p["step"], p["friction"])
            state = k.init(c.inputs["x0"], momentum=c.inputs["v0"])
        elif sampler.noise_levels:
            k = sampler.single_step(target.perturbed(), p["sigmas"], p["step"], p["steps"])
            state = k.init(c.inputs["x0"])
        else:
            k = sampler.single_step(target, p["step"])
            state = k.init(c.inputs["x0"])
        T, n = c.quantities["states"].shape[:2]
        for t in range(T):
            state, _ = k.step(state, CounterKey(p["noise_seed"], 0, t))
            np.testing.assert_array_equal(state.position, c.quantities["states"][t])
            if sampler.splitting is not None:
                np.testing.assert_array_equal(state.momentum, c.quantities["momenta"][t])
        key = "xi" if sampler.splitting is not None else "z"
        np.testing.assert_array_equal(c.inputs[key][T - 1], noise.normal(p["noise_seed"], np.arange(n), T - 1,
                                                                        c.inputs[key].shape[-1]))
