"""Analytic score models: every primitive against finite differences of the level below
and against an independent closed form (the distributions of ``refscore.distributions``).

Finite differences: central, step ``H = 1e-5``.  The truncation error is
``H**2/6 * |f'''|`` (~2e-11 times the third derivative) and the round-off error
``eps * |f| / H`` (~2e-11 times the value); with the bounded parameters and points
drawn here, a relative tolerance of 1e-6 of the largest entry (``_close_fd``)
leaves a margin of several orders of magnitude on both while still catching any
wrong term (an error in a derivative is O(1) relative).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refscore.distributions import Gaussian, GaussianMixture
from refscore.models import GaussianMixtureModel, GaussianModel, LinearScore
from strategies import points

H = 1e-5


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def models_and_thetas(draw, dim=None):
    """One of the three analytic models in d = 1..3 with a bounded random theta."""
    d = draw(st.integers(1, 3)) if dim is None else dim
    kind = draw(st.sampled_from(["gaussian", "linear", "mixture"]))
    if kind == "gaussian":
        m = GaussianModel(d)
        theta = draw(hnp.arrays(np.float64, (m.n_params,), elements=_floats(-2.0, 2.0)))
    elif kind == "linear":
        m = LinearScore(d)
        theta = draw(hnp.arrays(np.float64, (m.n_params,), elements=_floats(-2.0, 2.0)))
    else:
        k = draw(st.integers(1, 3))
        m = GaussianMixtureModel(d, k)
        alpha = draw(hnp.arrays(np.float64, (k,), elements=_floats(-2.0, 2.0)))
        mu = draw(hnp.arrays(np.float64, (k * d,), elements=_floats(-2.0, 2.0)))
        log_tau = draw(hnp.arrays(np.float64, (k,), elements=_floats(-1.0, 1.0)))
        theta = np.concatenate([alpha, mu, log_tau])
    return m, theta


def _close_fd(analytic, fd, rtol=1e-6):
    """|analytic - fd| <= rtol * max(1, max|fd|): see the module docstring for 1e-6."""
    scale = max(1.0, float(np.max(np.abs(fd))) if np.size(fd) else 1.0)
    np.testing.assert_allclose(analytic, fd, rtol=0, atol=rtol * scale)


def fd_grad(f, theta, h=H):
    """Central differences of a scalar function of theta."""
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def fd_jacobian_x(score, x, h=H):
    """Central differences of score over x: (n, d, d) with [k, i, j] = d s_i / d x_j."""
    d = x.shape[1]
    cols = [(score(x + h * np.eye(d)[j]) - score(x - h * np.eye(d)[j])) / (2 * h) for j in range(d)]
    return np.stack(cols, axis=-1)


def _data(data, m):
    x = data.draw(points(m.dim, max_n=5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    v = rng.standard_normal(x.shape)
    w = rng.uniform(0.1, 1.0, x.shape[0])
    return x, v, w


# ------------------------------------------------------------------ FD of the level below
@given(mt=models_and_thetas(), data=st.data())
def test_jacobian_is_fd_of_score(mt, data):
    m, theta = mt
    x, _, _ = _data(data, m)
    _close_fd(m.score_jacobian(theta, x), fd_jacobian_x(lambda y: m.score(theta, y), x))


@given(mt=models_and_thetas(), data=st.data())
def test_trace_and_jvp_from_jacobian(mt, data):
    m, theta = mt
    x, v, _ = _data(data, m)
    J = m.score_jacobian(theta, x)
    scale = max(1.0, np.abs(J).max() * max(1.0, np.abs(v).max()))
    # Same numbers summed in a different order: round-off ~1e-15 relative to the entries.
    np.testing.assert_allclose(m.score_trace(theta, x), np.einsum("kii->k", J), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(m.score_jvp(theta, x, v), np.einsum("kij,kj->ki", J, v), rtol=0, atol=1e-12 * scale)


@given(mt=models_and_thetas(), data=st.data())
def test_score_vjp_params_is_fd_over_theta(mt, data):
    m, theta = mt
    x, ct, _ = _data(data, m)
    fd = fd_grad(lambda t: np.sum(ct * m.score(t, x)), theta)
    _close_fd(m.score_vjp_params(theta, x, ct), fd)


@given(mt=models_and_thetas(), data=st.data())
def test_trace_grad_params_is_fd_over_theta(mt, data):
    m, theta = mt
    x, _, w = _data(data, m)
    fd = fd_grad(lambda t: np.sum(w * m.score_trace(t, x)), theta)
    _close_fd(m.trace_grad_params(theta, x, w), fd)


@given(mt=models_and_thetas(), data=st.data())
def test_vjv_grad_params_is_fd_over_theta(mt, data):
    m, theta = mt
    x, v, w = _data(data, m)
    fd = fd_grad(lambda t: np.sum(w * np.einsum("kd,kd->k", v, m.score_jvp(t, x, v))), theta)
    _close_fd(m.vjv_grad_params(theta, x, v, w), fd)


@given(mt=models_and_thetas(), data=st.data())
def test_vjv_grad_params_summed_over_basis_is_trace_grad(mt, data):
    # Independent identity: sum_j e_j^T J e_j = tr J, so the vjv gradients over the
    # d basis vectors sum to the trace gradient (different code paths per model).
    m, theta = mt
    x, _, w = _data(data, m)
    n, d = x.shape
    total = sum(m.vjv_grad_params(theta, x, np.tile(np.eye(d)[j], (n, 1)), w) for j in range(d))
    ref = m.trace_grad_params(theta, x, w)
    # Sums of d terms of the same magnitude: round-off ~1e-15 relative.
    np.testing.assert_allclose(total, ref, rtol=0, atol=1e-11 * max(1.0, np.abs(ref).max()))


# ------------------------------------------------------ independent closed-form oracles
def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.5 * np.eye(d)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_gaussian_model_matches_gaussian_distribution(d):
    rng = np.random.default_rng(d)
    mean, cov = rng.standard_normal(d), _spd(rng, d)
    prec = np.linalg.inv(cov)
    m = GaussianModel(d)
    theta = GaussianModel.theta_from(mean, prec)
    mu, L = m.unpack(theta)
    # theta_from/unpack round trip: Cholesky reconstruction error ~1e-15 * |P|.
    np.testing.assert_allclose(mu, mean, rtol=1e-15, atol=0)
    np.testing.assert_allclose(L @ L.T, prec, rtol=1e-12, atol=1e-12)
    assert np.all(np.triu(L, 1) == 0)
    g = Gaussian(mean, cov)
    x = rng.standard_normal((7, d))
    # Two different factorisations of the same matrix (inv vs cho_solve): ~1e-13 relative.
    np.testing.assert_allclose(m.score(theta, x), g.score(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.score_jacobian(theta, x), g.score_jacobian(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.score_trace(theta, x), -np.trace(prec), rtol=1e-10)


@given(mt=models_and_thetas(), data=st.data())
@settings(max_examples=15)
def test_mixture_model_matches_mixture_distribution(mt, data):
    m, theta = mt
    if not isinstance(m, GaussianMixtureModel):
        m = GaussianMixtureModel(m.dim, 2)
        theta = np.concatenate([[0.3, -0.2], np.linspace(-1, 1, 2 * m.dim), [0.4, -0.5]])
    alpha, mu, log_tau = m.unpack(theta)
    w = np.exp(alpha - alpha.max())
    covs = np.stack([np.eye(m.dim) * np.exp(-lt) for lt in log_tau])
    dist = GaussianMixture(w / w.sum(), mu, covs)
    x, v, _ = _data(data, m)
    # Same density, independently coded (full-covariance Cholesky vs isotropic):
    # agreement to round-off, ~1e-13 of the entries' size.
    for a, b in [
        (m.score(theta, x), dist.score(x)),
        (m.score_jacobian(theta, x), dist.score_jacobian(x)),
        (m.score_trace(theta, x), dist.score_trace(x)),
        (m.score_jvp(theta, x, v), dist.score_jvp(x, v)),
    ]:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * max(1.0, np.abs(b).max()))


def test_mixture_jacobian_is_symmetric():
    m = GaussianMixtureModel(3, 3)
    theta = m.init(0) + 0.3 * np.random.default_rng(1).standard_normal(m.n_params)
    J = m.score_jacobian(theta, np.random.default_rng(2).standard_normal((5, 3)))
    # Hessian of log p: exactly symmetric by construction of the centred form.
    np.testing.assert_allclose(J, np.swapaxes(J, 1, 2), rtol=0, atol=1e-14)


@pytest.mark.parametrize("x0", [60.0, -500.0, 1e4])
def test_mixture_is_stable_far_from_components(x0):
    # Far away the component with the smallest precision takes all the weight
    # (exp(-(tau_j - tau_min) x^2 / 2) underflows), so s = -tau_min (x - mu_min) and
    # J = -tau_min exactly; a naive sum of densities would give 0/0 here.
    m = GaussianMixtureModel(1, 3)
    log_tau = np.log([2.0, 0.5, 1.0])
    theta = np.concatenate([[0.1, 0.2, -0.3], [-1.0, 0.5, 2.0], log_tau])
    x = np.array([[x0]])
    s = m.score(theta, x)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [[-0.5 * (x0 - 0.5)]], rtol=1e-12)
    np.testing.assert_allclose(m.score_jacobian(theta, x), [[[-0.5]]], rtol=1e-9)
    np.testing.assert_allclose(m.score_trace(theta, x), [-0.5], rtol=1e-9)
    g = m.trace_grad_params(theta, x, np.ones(1))
    assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------- init and layout
def test_init_values_and_sizes():
    g = GaussianModel(3)
    assert g.n_params == 3 + 6
    np.testing.assert_array_equal(g.init(), [0, 0, 0, 1, 0, 1, 0, 0, 1])  # mu = 0, L = I row-major tril
    lin = LinearScore(2)
    assert lin.n_params == 6
    np.testing.assert_array_equal(lin.init(), [-1, 0, 0, -1, 0, 0])  # A = -I, b = 0
    A, b = lin.unpack(np.arange(6.0))
    np.testing.assert_array_equal(A, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(b, [4, 5])
    mix = GaussianMixtureModel(2, 3)
    assert mix.n_params == 3 + 6 + 3
    t0, t1 = mix.init(5), mix.init(5)
    np.testing.assert_array_equal(t0, t1)  # seeded
    alpha, mu, log_tau = mix.unpack(t0)
    np.testing.assert_array_equal(alpha, 0)
    np.testing.assert_array_equal(log_tau, 0)
    np.testing.assert_array_equal(mu, np.random.default_rng(5).standard_normal(6).reshape(3, 2))


def test_gaussian_layout_is_row_major_tril():
    m = GaussianModel(2)
    mu, L = m.unpack(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(mu, [1, 2])
    np.testing.assert_array_equal(L, [[3, 0], [4, 5]])
    # s(x) = -L L^T (x - mu) with L L^T = [[9, 12], [12, 41]], at x = mu + e_1:
    np.testing.assert_allclose(m.score(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), [2.0, 2.0]), [-9.0, -12.0])


def test_single_point_drops_batch_axis_and_bind():
    m = GaussianMixtureModel(2, 2)
    theta = m.init(0)
    x = np.array([0.3, -0.4])
    assert m.score(theta, x).shape == (2,)
    assert m.score_jacobian(theta, x).shape == (2, 2)
    assert np.shape(m.score_trace(theta, x)) == ()
    np.testing.assert_array_equal(m.score(theta, x), m.score(theta, x[None])[0])
    b = m.bind(theta)
    np.testing.assert_array_equal(b.score(x[None]), m.score(theta, x[None]))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [GaussianModel, LinearScore])
def test_bad_dim(cls):
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        cls(0)


def test_bad_mixture_k():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        GaussianMixtureModel(2, 0)


@pytest.mark.parametrize("model", [GaussianModel(3), LinearScore(2), GaussianMixtureModel(2, 2)])
def test_wrong_theta_length_names_expected_size_and_layout(model):
    with pytest.raises(ValueError, match=rf"theta must have shape \({model.n_params},\) \(layout: \["):
        model.score(np.zeros(model.n_params + 1), np.zeros(model.dim))


def test_theta_from_bad_mean():
    with pytest.raises(ValueError, match=r"mean must have shape \(d,\)"):
        GaussianModel.theta_from(np.zeros((2, 2)), np.eye(2))


def test_theta_from_shape_mismatch():
    with pytest.raises(ValueError, match=r"precision must have shape \(2, 2\)"):
        GaussianModel.theta_from(np.zeros(2), np.eye(3))


def test_theta_from_not_symmetric():
    with pytest.raises(ValueError, match="precision must be symmetric"):
        GaussianModel.theta_from(np.zeros(2), np.array([[2.0, 1.0], [0.0, 2.0]]))


def test_theta_from_not_positive_definite():
    with pytest.raises(ValueError, match="precision must be positive definite"):
        GaussianModel.theta_from(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_theta_from_non_finite():
    with pytest.raises(ValueError, match="precision must be finite"):
        GaussianModel.theta_from(np.zeros(2), np.array([[np.nan, 0.0], [0.0, 1.0]]))
