"""NoiseConditional: s(x, σ) = s(x)/σ; primitives against finite differences of
the conditional score itself, per-point σ, bind, dsm_multi gradient, bad input."""
import numpy as np
import pytest

from refscore import losses
from refscore.models import MLPEnergy, MLPScore, NoiseConditional

H = 1e-5


def setup(kind="score", seed=0, n=5, d=3):
    base = (MLPScore if kind == "score" else MLPEnergy)(d, (6, 4), "tanh")
    m = NoiseConditional(base)
    rng = np.random.default_rng(seed)
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    x = rng.standard_normal((n, d))
    sigma = rng.uniform(0.2, 3.0, size=n)
    return m, theta, x, sigma, rng


# central differences, h = 1e-5, on O(1/σ) ≲ 5 smooth quantities: error ≲ 1e-9,
# so 1e-6 (relative to the scale of the values) + 1e-7 absolute.
def close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7 + 1e-6 * np.abs(b).max())


def test_structure_and_score():
    m, theta, x, sigma, _ = setup()
    assert m.n_params == m.model.n_params and m.layout == m.model.layout and m.dim == 3
    s = m.score(theta, x, sigma)
    # scalar sigma broadcasts; division is exact up to one rounding
    np.testing.assert_allclose(m.score(theta, x, 2.0), m.model.score(theta, x) / 2.0, rtol=1e-15)
    np.testing.assert_allclose(s * sigma[:, None], m.model.score(theta, x), rtol=1e-14)


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_input_derivatives_vs_fd(kind):
    m, theta, x, sigma, rng = setup(kind)
    J = m.score_jacobian(theta, x, sigma)
    cols = []
    for j in range(3):
        e = np.eye(3)[j] * H
        cols.append((m.score(theta, x + e, sigma) - m.score(theta, x - e, sigma)) / (2 * H))
    close(J, np.stack(cols, -1))
    v = rng.standard_normal(x.shape)
    # exact algebra, round-off only
    np.testing.assert_allclose(m.score_trace(theta, x, sigma), np.einsum("kii->k", J), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(m.score_jvp(theta, x, sigma, v), np.einsum("kij,kj->ki", J, v), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_parameter_gradients_vs_fd(kind):
    m, theta, x, sigma, rng = setup(kind)
    ct = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)
    w = rng.standard_normal(x.shape[0])
    u = rng.standard_normal(m.n_params)

    def dirfd(f):
        return (f(theta + H * u) - f(theta - H * u)) / (2 * H)

    close(m.score_vjp_params(theta, x, sigma, ct) @ u, dirfd(lambda t: np.sum(ct * m.score(t, x, sigma))))
    close(m.trace_grad_params(theta, x, sigma, w) @ u, dirfd(lambda t: w @ m.score_trace(t, x, sigma)))
    close(
        m.vjv_grad_params(theta, x, sigma, v, w) @ u,
        dirfd(lambda t: w @ np.einsum("kd,kd->k", v, m.score_jvp(t, x, sigma, v))),
    )


def test_dsm_multi_gradient_vs_fd():
    m, theta, x, _, rng = setup(n=8)
    sigmas = np.array([0.1, 0.5, 1.0, 2.0])
    labels = rng.integers(0, 4, size=8)
    eps = rng.standard_normal(x.shape)
    val, g = losses.dsm_multi(m, theta, x, sigmas, labels, eps, grad=True)
    u = rng.standard_normal(m.n_params)
    f = lambda t: losses.dsm_multi(m, t, x, sigmas, labels, eps)  # noqa: E731
    close(np.array(g @ u), np.array((f(theta + H * u) - f(theta - H * u)) / (2 * H)))


def test_single_point_and_bind():
    m, theta, x, sigma, _ = setup()
    s1 = m.score(theta, x[0], sigma[0])
    assert s1.shape == (3,)
    np.testing.assert_array_equal(s1, m.score(theta, x[:1], sigma[:1])[0])
    b = m.bind(theta)
    assert b.model is m and b.dim == 3
    np.testing.assert_array_equal(b.theta, theta)
    assert not b.theta.flags.writeable
    np.testing.assert_array_equal(b.score(x, sigma), m.score(theta, x, sigma))
    np.testing.assert_array_equal(b(x, 0.5), m.score(theta, x, 0.5))


def test_sigma_not_positive():
    m, theta, x, _, _ = setup()
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        m.score(theta, x, 0.0)


def test_sigma_nonfinite():
    m, theta, x, sigma, _ = setup()
    sigma[1] = np.nan
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        m.score_trace(theta, x, sigma)


def test_sigma_wrong_shape():
    m, theta, x, _, _ = setup()
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(5,\)"):
        m.score(theta, x, np.ones(4))


def test_wraps_only_score_models():
    with pytest.raises(TypeError, match="model must be a ScoreModel"):
        NoiseConditional(object())


def test_theta_wrong_length():
    m, _, x, sigma, _ = setup()
    with pytest.raises(ValueError, match="theta must have shape"):
        m.score(np.zeros(3), x, sigma)
