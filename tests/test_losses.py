"""Losses: gradients against finite differences of the loss value for every model x loss,
reductions and shapes, projections, Monte Carlo agreement with population values,
and one ``pytest.raises`` per validation branch.

Finite differences: central, step ``H = 1e-5`` on each theta entry.  Truncation
``H**2/6 |f'''|`` and round-off ``eps |f| / H`` are both ~1e-11 relative for the
bounded parameters and points drawn here; the tolerance is 1e-6 relative to
``max(1, |grad|)`` (the issue's requirement), so only a wrong gradient fails.
"""
import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refscore import losses
from refscore.distributions import Gaussian, GaussianMixture
from refscore.losses import dsm, dsm_multi, esm, ism, projections, ssm, ssm_vr
from refscore.models import GaussianMixtureModel, GaussianModel, LinearScore
from refscore.quadrature import population_loss
from strategies import points

H = 1e-5


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def models_and_thetas(draw):
    d = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["gaussian", "linear", "mixture"]))
    if kind == "mixture":
        k = draw(st.integers(1, 3))
        m = GaussianMixtureModel(d, k)
        theta = np.concatenate([
            draw(hnp.arrays(np.float64, (k,), elements=_floats(-2.0, 2.0))),
            draw(hnp.arrays(np.float64, (k * d,), elements=_floats(-2.0, 2.0))),
            draw(hnp.arrays(np.float64, (k,), elements=_floats(-1.0, 1.0))),
        ])
    else:
        m = GaussianModel(d) if kind == "gaussian" else LinearScore(d)
        theta = draw(hnp.arrays(np.float64, (m.n_params,), elements=_floats(-2.0, 2.0)))
    return m, theta


def fd_grad(f, theta, h=H):
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def _close_fd(analytic, fd, rtol=1e-6):
    """Relative 1e-6 of the gradient's size (module docstring)."""
    np.testing.assert_allclose(analytic, fd, rtol=0, atol=rtol * max(1.0, np.abs(fd).max()))


class StubConditional:
    """Test-only noise-conditional model s(x, sigma) = base.score(x) / sigma, with the two
    primitives ``dsm_multi`` uses (the same convention as ``NoiseConditional``)."""

    def __init__(self, base):
        self.base, self.dim, self.n_params, self.layout = base, base.dim, base.n_params, base.layout

    def score(self, theta, x, sigma):
        return self.base.score(theta, x) / np.asarray(sigma)[:, None]

    def score_vjp_params(self, theta, x, sigma, ct):
        return self.base.score_vjp_params(theta, x, ct / np.asarray(sigma)[:, None])


def _conditional_classes():
    classes = [StubConditional]
    try:
        from refscore.models import NoiseConditional
    except ImportError:
        pass
    else:
        classes.append(NoiseConditional)
    return classes


# ------------------------------------------------------------------ gradients vs FD
@given(mt=models_and_thetas(), data=st.data(),
       loss=st.sampled_from(["esm", "ism", "dsm", "ssm", "ssm_vr"]), m_proj=st.integers(1, 3))
@settings(max_examples=60)
def test_loss_gradient_is_fd_of_value(mt, data, loss, m_proj):
    model, theta = mt
    x = data.draw(points(model.dim, max_n=5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n, d = x.shape
    if loss == "esm":
        t = rng.standard_normal((n, d))
        f = lambda th, **kw: esm(model, th, x, t, **kw)  # noqa: E731
    elif loss == "ism":
        f = lambda th, **kw: ism(model, th, x, **kw)  # noqa: E731
    elif loss == "dsm":
        eps, sigma = rng.standard_normal((n, d)), rng.uniform(0.2, 2.0)
        f = lambda th, **kw: dsm(model, th, x, sigma, eps, **kw)  # noqa: E731
    else:
        v = rng.standard_normal((m_proj, n, d))
        fn = ssm if loss == "ssm" else ssm_vr
        f = lambda th, **kw: fn(model, th, x, v, **kw)  # noqa: E731
    value, grad = f(theta, grad=True)
    assert value == f(theta)
    _close_fd(grad, fd_grad(f, theta))


@pytest.mark.parametrize("cls", _conditional_classes())
@pytest.mark.parametrize("weighting", ["sigma2", "none"])
@pytest.mark.parametrize("d", [1, 3])
def test_dsm_multi_gradient_is_fd_of_value(cls, weighting, d):
    rng = np.random.default_rng(d)
    base = GaussianModel(d)
    model = cls(base)
    theta = base.init() + 0.4 * rng.standard_normal(base.n_params)
    x, eps = rng.standard_normal((6, d)), rng.standard_normal((6, d))
    sigmas, labels = np.array([2.0, 0.7, 0.1]), np.array([0, 1, 2, 2, 1, 0])
    f = lambda th: dsm_multi(model, th, x, sigmas, labels, eps, weighting=weighting)  # noqa: E731
    value, grad = dsm_multi(model, theta, x, sigmas, labels, eps, weighting=weighting, grad=True)
    assert value == f(theta)
    _close_fd(grad, fd_grad(f, theta))


@pytest.mark.parametrize("cls", _conditional_classes())
def test_dsm_multi_single_level_is_dsm_of_rescaled_gaussian(cls):
    # s(x, sigma) = -(P / sigma)(x - mu) is the GaussianModel with L / sqrt(sigma):
    # with one level and lambda = 1, dsm_multi must equal dsm on that model; with
    # lambda = sigma^2 every per-point value is multiplied by sigma^2.
    rng = np.random.default_rng(3)
    d, sigma = 2, 0.6
    base = GaussianModel(d)
    theta = base.init() + 0.3 * rng.standard_normal(base.n_params)
    x, eps = rng.standard_normal((5, d)), rng.standard_normal((5, d))
    scaled = np.concatenate([theta[:d], theta[d:] / np.sqrt(sigma)])
    labels = np.zeros(5, dtype=int)
    per_none = dsm_multi(cls(base), theta, x, [sigma], labels, eps, weighting="none", reduction="none")
    per_dsm = dsm(base, scaled, x, sigma, eps, reduction="none")
    # Rescaling L by 1/sqrt(sigma) vs dividing the score by sigma: round-off only.
    np.testing.assert_allclose(per_none, per_dsm, rtol=1e-12)
    per_s2 = dsm_multi(cls(base), theta, x, [sigma], labels, eps, reduction="none")
    np.testing.assert_allclose(per_s2, sigma**2 * per_dsm, rtol=1e-12)


# ---------------------------------------------------------------- reductions and shapes
def _setup(d=2, n=4, seed=0):
    rng = np.random.default_rng(seed)
    m = GaussianMixtureModel(d, 2)
    return m, m.init(rng), rng.standard_normal((n, d)), rng


def test_reduction_none_shapes_and_mean():
    m, theta, x, rng = _setup()
    n, d = x.shape
    t, eps, v = rng.standard_normal((n, d)), rng.standard_normal((n, d)), rng.standard_normal((3, n, d))
    calls = [
        lambda **kw: esm(m, theta, x, t, **kw),
        lambda **kw: ism(m, theta, x, **kw),
        lambda **kw: dsm(m, theta, x, 0.5, eps, **kw),
        lambda **kw: ssm(m, theta, x, v, **kw),
        lambda **kw: ssm_vr(m, theta, x, v, **kw),
    ]
    for call in calls:
        per = call(reduction="none")
        assert per.shape == (n,)
        assert isinstance(call(), float)
        np.testing.assert_allclose(call(), per.mean(), rtol=1e-14)  # same sum, same order


def test_many_projections_average_single_ones():
    m, theta, x, rng = _setup()
    v = rng.standard_normal((4,) + x.shape)
    for fn in (ssm, ssm_vr):
        per = fn(m, theta, x, v, reduction="none")
        singles = np.mean([fn(m, theta, x, v[j], reduction="none") for j in range(4)], axis=0)
        np.testing.assert_allclose(per, singles, rtol=1e-13)  # reordered sums only
        g = fn(m, theta, x, v, grad=True)[1]
        g_singles = np.mean([fn(m, theta, x, v[j], grad=True)[1] for j in range(4)], axis=0)
        np.testing.assert_allclose(g, g_singles, rtol=1e-12, atol=1e-13)


def test_single_point_inputs():
    m, theta, x, rng = _setup()
    x0, e0 = x[0], rng.standard_normal(2)
    assert np.shape(ism(m, theta, x0, reduction="none")) == ()
    np.testing.assert_allclose(ism(m, theta, x0), ism(m, theta, x[:1]), rtol=1e-15)
    np.testing.assert_allclose(dsm(m, theta, x0, 0.3, e0), dsm(m, theta, x[:1], 0.3, e0[None]), rtol=1e-15)
    np.testing.assert_allclose(ssm(m, theta, x0, e0), ssm(m, theta, x[:1], e0[None]), rtol=1e-15)
    np.testing.assert_allclose(ssm(m, theta, x0, np.stack([e0, -e0])), ssm(m, theta, x[:1], e0[None]), rtol=1e-15)
    np.testing.assert_allclose(esm(m, theta, x0, e0), esm(m, theta, x[:1], e0[None]), rtol=1e-15)


def test_esm_accepts_callable_target():
    m, theta, x, _ = _setup()
    g = Gaussian(np.zeros(2), np.eye(2))
    assert esm(m, theta, x, g.score) == esm(m, theta, x, g.score(x))
    assert esm(m, theta, x, m.bind(theta).score) == 0.0  # a model against itself


def test_hand_computed_values():
    # LinearScore with A = [[-1, 0], [2, -3]], b = (1, 0) at x = (1, 1):
    # s = (0, -1), tr A = -4, v = (1, 1): A v = (-1, -1), v^T A v = -2, v^T s = -1.
    m = LinearScore(2)
    theta = np.array([-1.0, 0.0, 2.0, -3.0, 1.0, 0.0])
    x, v = np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]])
    assert ism(m, theta, x) == -4.0 + 0.5 * 1.0
    assert esm(m, theta, x, np.array([[1.0, 1.0]])) == 0.5 * (1.0 + 4.0)
    assert ssm(m, theta, x, v) == -2.0 + 0.5 * 1.0
    assert ssm_vr(m, theta, x, v) == -2.0 + 0.5 * 1.0
    # DSM at sigma = 2, eps = (1, 0): x~ = (3, 1), s = (-2, 3), s + eps/sigma = (-1.5, 3).
    assert dsm(m, theta, x, 2.0, np.array([[1.0, 0.0]])) == 0.5 * (2.25 + 9.0)


def test_loss_registry():
    assert set(losses.LOSSES) == {"esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi"}
    assert losses.LOSSES["ism"].function is ism
    assert losses.PER_POINT_LOSSES == ("esm", "ism", "dsm", "ssm", "ssm_vr")
    # a registry entry is called like its function
    m = LinearScore(1)
    x = np.array([[1.0]])
    assert losses.LOSSES["ism"](m, m.init(), x) == ism(m, m.init(), x)
    # each per-point kind is the one its weighted kernel computes
    kinds = {k: v.kind for k, v in losses.LOSSES.items()}
    assert kinds == {"esm": losses.LossKind.RESIDUAL, "ism": losses.LossKind.ISM,
                     "dsm": losses.LossKind.DENOISING, "ssm": losses.LossKind.SSM,
                     "ssm_vr": losses.LossKind.SSM_VR, "dsm_multi": None}


def test_registry_entries_declare_their_consumers_needs():
    # only dsm_multi trains a noise-conditional model; the per-point losses are the others
    assert [k for k, v in losses.LOSSES.items() if v.noise_conditional] == ["dsm_multi"]
    assert losses.LOSSES["dsm_multi"].terms is None
    # each per-point entry's weighted form, at weights 1/n (1/(m n) with m projections), is its
    # function: the same kernel call with the same arguments, so the same numbers bit for bit
    m = LinearScore(2)
    rng = np.random.default_rng(4)
    theta, x = rng.standard_normal(m.n_params), rng.standard_normal((5, 2))
    t, eps, v = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), rng.standard_normal((3, 5, 2))
    given = {"target_score": t, "sigma": 0.7, "eps": eps, "v": v}
    for name in losses.PER_POINT_LOSSES:
        spec = losses.LOSSES[name]
        inputs = {k: given[k] for k in spec.inputs}
        w = np.full((3, 5), 1 / 15) if "v" in inputs else np.full(5, 1 / 5)
        per, g = spec.terms(m, theta, x, w, True, **inputs)
        per_only, no_grad = spec.terms(m, theta, x, w, False, **inputs)
        value, grad = spec(m, theta, x, **inputs, grad=True)
        points = spec(m, theta, x, **inputs, reduction="none")
        np.testing.assert_array_equal(per.mean(axis=0) if "v" in inputs else per, points, err_msg=name)
        np.testing.assert_array_equal(per_only, per, err_msg=name)
        np.testing.assert_array_equal(g, grad, err_msg=name)
        assert no_grad is None


def test_projection_registry_feeds_projections_and_quadrature():
    from refscore.quadrature import PROJECTION_RULES

    assert set(losses.PROJECTIONS) == set(PROJECTION_RULES) == {"gaussian", "rademacher", "sphere"}
    with pytest.raises(ValueError, match="kind must be one of"):
        losses.projections(0, (2, 2), kind="uniform")


# -------------------------------------------------------------------------- projections
@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sphere"])
def test_projection_second_moment_is_identity(kind):
    d, n = 3, 100_000
    v = projections(0, (n, d), kind=kind)
    assert v.shape == (n, d) and v.dtype == np.float64
    outer = np.einsum("ni,nj->nij", v, v)
    mean, se = outer.mean(0), outer.std(0, ddof=1) / np.sqrt(n)
    se = np.where(se == 0, 1e-300, se)  # Rademacher diagonal is exactly 1 with zero spread
    # Each entry within 5 standard errors of I (a false alarm has probability ~6e-7 per entry).
    assert np.all(np.abs(mean - np.eye(d)) <= 5 * se + 1e-15)
    if kind == "rademacher":
        assert set(np.unique(v)) == {-1.0, 1.0}
    if kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), np.sqrt(d), rtol=1e-14)


def test_projections_reproducible_and_3d():
    a, b = projections(7, (2, 5, 3)), projections(np.random.default_rng(7), (2, 5, 3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 5, 3)


# ----------------------------------------------------------------- Monte Carlo agreement
_N_MC = 100_000


def _mc_cases():
    rng = np.random.default_rng(11)
    gauss = Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]])
    mix = GaussianMixture([0.4, 0.6], [[-1.5, 0.0], [1.0, 1.0]], [np.eye(2) * 0.6, [[1.0, 0.3], [0.3, 0.7]]])
    gm = GaussianModel(2)
    th_g = gm.init() + 0.3 * rng.standard_normal(gm.n_params)
    mm = GaussianMixtureModel(2, 2)
    th_m = np.array([0.2, -0.1, -1.0, 0.2, 1.0, 0.5, 0.3, -0.2])
    return [(gm, th_g, gauss), (mm, th_m, mix)]


@pytest.mark.parametrize("case", [0, 1])
def test_monte_carlo_within_five_standard_errors(case):
    model, theta, dist = _mc_cases()[case]
    rng = np.random.default_rng(100 + case)
    x = dist.sample(_N_MC, rng=rng)
    eps = rng.standard_normal(x.shape)
    sigma = 0.5
    # Population values by quadrature (order 32 in 2-D; for the mixture model the
    # quadrature error is < 1e-6, far below the ~1e-3 Monte Carlo standard errors).
    pop = {name: population_loss(name, model, theta, dist, order=32) for name in ("esm", "ism")}
    pop["dsm"] = population_loss("dsm", model, theta, dist, sigma=sigma, order=16)
    per = {
        "esm": esm(model, theta, x, dist.score, reduction="none"),
        "ism": ism(model, theta, x, reduction="none"),
        "dsm": dsm(model, theta, x, sigma, eps, reduction="none"),
    }
    for kind in ("gaussian", "rademacher", "sphere"):
        v = projections(rng, (2,) + x.shape, kind=kind)
        for name, fn in (("ssm", ssm), ("ssm_vr", ssm_vr)):
            per[f"{name}-{kind}"] = fn(model, theta, x, v, reduction="none")
            pop[f"{name}-{kind}"] = population_loss(name, model, theta, dist, projection=kind, order=32)
    for name, vals in per.items():
        se = vals.std(ddof=1) / np.sqrt(vals.size)
        # 5 standard errors: a false alarm has probability ~6e-7 per estimator.
        assert abs(vals.mean() - pop[name]) <= 5 * se, (name, vals.mean(), pop[name], se)
    # Negative control: the test has power -- ESM samples are far (> 5 SE) from the
    # ISM population value, which differs by the constant 1/2 E|grad log p|^2.
    se = per["esm"].std(ddof=1) / np.sqrt(_N_MC)
    assert abs(per["esm"].mean() - pop["ism"]) > 5 * se


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def lin():
    m = LinearScore(2)
    return m, m.init(), np.zeros((3, 2))


def test_bad_theta_length(lin):
    m, _, x = lin
    with pytest.raises(ValueError, match=r"theta must have shape \(6,\) \(layout"):
        ism(m, np.zeros(5), x)


def test_bad_x_shape(lin):
    m, theta, _ = lin
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        ism(m, theta, np.zeros((3, 3)))


def test_bad_reduction(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match="reduction must be one of"):
        ism(m, theta, x, reduction="sum")


def test_grad_needs_mean(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match="grad=True needs reduction='mean'"):
        ism(m, theta, x, reduction="none", grad=True)


def test_target_score_shape_mismatch(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match=r"target_score must have shape \(3, 2\)"):
        esm(m, theta, x, np.zeros((4, 2)))


def test_callable_target_score_wrong_shape(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match="target_score must have shape"):
        esm(m, theta, x, lambda y: y[:, :1])


def test_dsm_sigma_not_positive(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        dsm(m, theta, x, 0.0, np.zeros((3, 2)))


def test_dsm_sigma_not_a_number(lin):
    m, theta, x = lin
    with pytest.raises(TypeError, match="sigma must be a real number"):
        dsm(m, theta, x, "0.5", np.zeros((3, 2)))


def test_dsm_eps_shape_mismatch(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match=r"eps must have shape \(3, 2\)"):
        dsm(m, theta, x, 0.5, np.zeros((2, 2)))


@pytest.mark.parametrize("fn", [ssm, ssm_vr])
def test_v_shape_mismatch(lin, fn):
    m, theta, x = lin
    with pytest.raises(ValueError, match=r"v must have shape \(3, 2\) or \(m, 3, 2\)"):
        fn(m, theta, x, np.zeros((2, 4, 2)))


def test_v_non_finite(lin):
    m, theta, x = lin
    with pytest.raises(ValueError, match="v must be finite"):
        ssm(m, theta, x, np.full((3, 2), np.nan))


@pytest.fixture
def cond():
    base = GaussianModel(2)
    return StubConditional(base), base.init(), np.zeros((3, 2)), np.zeros((3, 2))


def test_dsm_multi_sigmas_not_positive(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match="sigmas must be finite and > 0"):
        dsm_multi(m, theta, x, [1.0, -0.1], [0, 1, 0], eps)


def test_dsm_multi_sigmas_not_1d(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match="sigmas must be a non-empty 1-D array"):
        dsm_multi(m, theta, x, [[1.0]], [0, 0, 0], eps)


def test_dsm_multi_labels_out_of_range(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        dsm_multi(m, theta, x, [1.0, 0.5], [0, 2, 1], eps)


def test_dsm_multi_labels_not_integer(cond):
    m, theta, x, eps = cond
    with pytest.raises(TypeError, match="labels must be an integer array"):
        dsm_multi(m, theta, x, [1.0, 0.5], [0.0, 1.0, 1.0], eps)


def test_dsm_multi_labels_wrong_shape(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        dsm_multi(m, theta, x, [1.0, 0.5], [0, 1], eps)


@pytest.mark.parametrize("grad", [False, True])
def test_dsm_multi_sigma_whose_square_overflows_names_sigmas(grad):
    from refscore.models import NoiseConditional

    m = NoiseConditional(LinearScore(2))
    rng = np.random.default_rng(0)
    theta, x, eps = 0.3 * rng.standard_normal(6), rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    # sigma^2 = 1e600 overflows: the weight, not the model's scores (was 'the model's scores ... at this
    # theta and x', and with grad=True the model's 'ct must be finite')
    with pytest.raises(ValueError) as exc:
        dsm_multi(m, theta, x, [1e300, 1.0], [0, 1, 0], eps, grad=grad)
    msg = str(exc.value)
    assert "sigmas" in msg and "sigma^2" in msg and "1e+300" in msg and "weighting='sigma2'" in msg, msg
    assert "model" not in msg and "ct must be" not in msg
    # 1/sigma^2 = 1e320 overflows in the target eps / sigma: every weighting
    for weighting in ("sigma2", "none"):
        with pytest.raises(ValueError) as exc:
            dsm_multi(m, theta, x, [1.0, 1e-160], [0, 1, 0], eps, weighting=weighting, grad=grad)
        msg = str(exc.value)
        assert "sigmas" in msg and "1e-160" in msg and "eps / sigma" in msg and "model" not in msg, msg
    # inside the range, a huge eps can still overflow the target term: named as such, not the model's
    with pytest.raises(FloatingPointError, match="overflow in the noise target: at point 1, sigma = 1e-150"):
        dsm_multi(m, theta, x, [1.0, 1e-150], [0, 1, 0], 1e6 * eps, weighting="none", grad=grad)


def test_dsm_multi_huge_sigma_without_weight_is_computed():
    # weighting='none' never forms sigma^2: at sigma = 1e300 the NoiseConditional score
    # (A (x + sigma eps) + b) / sigma is A eps to 1e-300, so the residual s + eps/sigma is A eps
    from refscore.models import NoiseConditional

    rng = np.random.default_rng(1)
    theta, x, eps = 0.3 * rng.standard_normal(6), rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    a = theta[:4].reshape(2, 2)
    per = dsm_multi(NoiseConditional(LinearScore(2)), theta, x, [1e300], [0, 0, 0], eps, weighting="none",
                    reduction="none")
    # the dropped terms are 1e-300 relative: only the round-off of A eps (a few ulps) remains
    np.testing.assert_allclose(per, 0.5 * np.sum((eps @ a.T) ** 2, axis=1), rtol=1e-14)


def test_dsm_multi_eps_mismatch(cond):
    m, theta, x, _ = cond
    with pytest.raises(ValueError, match=r"eps must have shape \(3, 2\)"):
        dsm_multi(m, theta, x, [1.0], [0, 0, 0], np.zeros((3, 1)))


def test_dsm_multi_unknown_weighting(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match="weighting must be one of"):
        dsm_multi(m, theta, x, [1.0], [0, 0, 0], eps, weighting="sigma")


def test_dsm_multi_bad_theta(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match=r"theta must have shape \(5,\)"):
        dsm_multi(m, theta[:-1], x, [1.0], [0, 0, 0], eps)


def test_dsm_multi_bad_reduction(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match="reduction must be one of"):
        dsm_multi(m, theta, x, [1.0], [0, 0, 0], eps, reduction="sum")


def test_dsm_multi_grad_needs_mean(cond):
    m, theta, x, eps = cond
    with pytest.raises(ValueError, match="grad=True needs reduction='mean'"):
        dsm_multi(m, theta, x, [1.0], [0, 0, 0], eps, reduction="none", grad=True)


def test_projections_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        projections(0, (3, 2), kind="uniform")


def test_projections_bad_shape():
    with pytest.raises(ValueError, match="shape must be non-negative ints"):
        projections(0, (3, 0))


def test_projections_shape_not_ints():
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        projections(0, None)


# population_loss validation (quadrature.py)
@pytest.fixture
def pop():
    m = GaussianModel(2)
    return m, m.init(), Gaussian(np.zeros(2), np.eye(2))


def test_population_unknown_loss(pop):
    with pytest.raises(ValueError, match="loss must be one of"):
        population_loss("nce", *pop)


def test_population_dsm_needs_sigma(pop):
    with pytest.raises(ValueError, match="sigma is required for loss='dsm'"):
        population_loss("dsm", *pop)


def test_population_sigma_not_positive(pop):
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        population_loss("dsm", *pop, sigma=-1.0)


def test_population_projection_only_for_sliced(pop):
    with pytest.raises(ValueError, match="projection applies to 'ssm' and 'ssm_vr' only"):
        population_loss("ism", *pop, projection="gaussian")


def test_population_unknown_projection(pop):
    with pytest.raises(ValueError, match="projection must be one of"):
        population_loss("ssm", *pop, projection="uniform")


def test_population_dim_mismatch(pop):
    m, theta, _ = pop
    with pytest.raises(ValueError, match="dist must have dim 2"):
        population_loss("ism", m, theta, Gaussian(np.zeros(3), np.eye(3)))


def _registered(monkeypatch, name, of, **changes):
    """Register loss ``of`` again as ``name``, with ``changes`` to its entry."""
    spec = dataclasses.replace(losses.LOSSES[of], name=name, **changes)
    monkeypatch.setitem(losses.LOSSES, name, spec)
    return spec


MIXTURE = GaussianMixture([0.3, 0.7], [[1.0, 0.0], [-0.5, 0.5]], [np.eye(2), 0.5 * np.eye(2)])


@pytest.mark.parametrize("of, kw", [("esm", {}), ("ism", {}), ("ism", {"sigma": 0.4}), ("dsm", {"sigma": 0.5}),
                                    ("ssm", {"projection": "gaussian"}), ("ssm_vr", {})])
def test_population_integrates_a_loss_added_to_the_registry(monkeypatch, of, kw):
    # population_loss reads the entry (its weighted form and its inputs), not the name: the
    # same entry under a new name is integrated by the same calls, bit for bit
    spec = _registered(monkeypatch, "added", of)
    m = GaussianModel(2)
    theta = m.init(3)
    value, grad = population_loss(of, m, theta, MIXTURE, grad=True, **kw)
    for loss in ("added", spec):
        v, g = population_loss(loss, m, theta, MIXTURE, grad=True, **kw)
        assert v == value
        np.testing.assert_array_equal(g, grad)


def test_population_refuses_what_it_cannot_integrate(pop, monkeypatch):
    with pytest.raises(ValueError, match="population_loss cannot integrate loss='dsm_multi': it trains a "
                                         "noise-conditional model"):
        population_loss("dsm_multi", *pop)
    with pytest.raises(ValueError, match="cannot integrate loss='dsm_multi'"):  # by its function too
        population_loss(dsm_multi, *pop)
    _registered(monkeypatch, "pointwise_only", "ism", terms=None)
    with pytest.raises(ValueError, match=r"cannot integrate loss='pointwise_only': its refscore.losses.LOSSES "
                                         r"entry declares no weighted form \(terms=None\)"):
        population_loss("pointwise_only", *pop)
    _registered(monkeypatch, "tempered", "ism", inputs=("temperature",))
    with pytest.raises(ValueError, match="cannot integrate loss='tempered': it takes temperature, for which "
                                         "population_loss has no quadrature rule"):
        population_loss("tempered", *pop)
    # the component-score identity behind ESM's target holds for the residual 1/2 ||s - t||^2 only
    _registered(monkeypatch, "weighted_esm", "esm", kind=None)
    with pytest.raises(ValueError, match="cannot integrate loss='weighted_esm': it takes target_score.*"
                                         "residual 1/2 \\|\\|s - t\\|\\|\\^2.*its kind is None"):
        population_loss("weighted_esm", *pop)


def test_population_dist_type(pop):
    m, theta, _ = pop
    with pytest.raises(TypeError, match="dist must be a Gaussian or GaussianMixture"):
        population_loss("ism", m, theta, object())


def test_population_bad_theta(pop):
    m, theta, dist = pop
    with pytest.raises(ValueError, match=r"theta must have shape \(5,\)"):
        population_loss("ism", m, theta[:4], dist)


@pytest.mark.parametrize("grad", [False, True])
def test_dsm_overflow_at_a_huge_sigma_names_the_noised_points(grad):
    """sigma = 1e300 puts x + sigma*eps at 1e300, where a linear score's ½‖s‖² overflows: the message
    names sigma and the noised points (it said 'at this theta and x', where nothing is wrong)."""
    m = LinearScore(2)
    x, eps = np.zeros((3, 2)), np.ones((3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is the error below, not a RuntimeWarning on the way
        with pytest.raises(FloatingPointError) as exc:
            dsm(m, m.init(), x, 1e300, eps, grad=grad)
    msg = str(exc.value)
    assert "noised points x + sigma*eps" in msg and "sigma = 1e+300" in msg and "this theta and x" not in msg, msg
    # a tiny sigma overflows the target eps / sigma itself: refused up front, naming sigma
    with pytest.raises(ValueError, match=r"sigma must be >= 1e-150.*got sigma = 1e-200"):
        dsm(m, m.init(), x, 1e-200, eps, grad=grad)
    # at the bound itself the loss is computed: with eps = 0 the noise has no effect (x~ = x, target 0),
    # so it equals the value at sigma = 1 exactly
    theta = np.random.default_rng(1).standard_normal(m.n_params)
    assert dsm(m, theta, x + 1.0, 1e-150, np.zeros((3, 2))) == dsm(m, theta, x + 1.0, 1.0, np.zeros((3, 2)))
