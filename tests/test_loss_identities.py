"""Exact identities between the losses, by quadrature or enumeration (no Monte Carlo).

* ESM - ISM = 1/2 E_p |grad log p|^2 (Gaussian: 1/2 tr Sigma^-1) at every theta, and
  grad ESM = grad ISM;
* E_v SSM = E_v SSM-VR = ISM per point, enumerating all 2^d Rademacher vectors;
* DSM(sigma) - ESM(p_sigma) = 1/2 (d / sigma^2 - E_{p_sigma} |grad log p_sigma|^2);
* closed forms of ISM, ESM and DSM for LinearScore and GaussianModel on a Gaussian;
* Hyvarinen (2005): the ISM minimiser of GaussianModel on a sample is the sample mean
  and the inverse biased sample covariance;
* Coreax's published SSM / SSM-VR values.

Exactness: for the affine models (GaussianModel, LinearScore) every integrand is a
polynomial of degree 2 per Gaussian component, so Gauss-Hermite of order >= 2 is exact
and the identities hold to round-off (the theta-free 1/2 E|grad log p|^2 of a mixture
is not polynomial, but the same rule computes it on both sides; see
``population_loss``).  The mixture *model*'s responsibilities are logistic functions
of quadratics with complex poles close to the real axis, on which Gauss-Hermite
converges too slowly for 1e-10; its identities are checked in 1-D with a composite
Gauss-Legendre rule on panels much narrower than the pole distance.

Tolerance ``REL = 1e-10`` relative to the largest term involved: each side is a
weighted sum of at most ~10^4 terms no larger than that, whose round-off is
~1e-16 * sqrt(10^4) relative, so 1e-10 leaves four orders of margin while any
missing or wrong term (O(1) relative) fails.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refscore import losses
from refscore.losses import LossKind
from refscore.distributions import Gaussian, GaussianMixture
from refscore.losses import esm, ism, ssm, ssm_vr
from refscore.models import GaussianMixtureModel, GaussianModel, LinearScore
from refscore.models.base import ScoreModel
from refscore.quadrature import expectation, population_loss
from strategies import gaussian_mixtures, gaussians, points

REL = 1e-10


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def _close(a, b, *terms):
    """|a - b| <= REL * (largest magnitude among a, b, terms, 1): module docstring."""
    scale = max([1.0] + [float(np.max(np.abs(t))) for t in (a, b) + terms])
    np.testing.assert_allclose(a, b, rtol=0, atol=REL * scale)


@st.composite
def affine_models(draw, d):
    m = draw(st.sampled_from([GaussianModel, LinearScore]))(d)
    return m, draw(hnp.arrays(np.float64, (m.n_params,), elements=_floats(-2.0, 2.0)))


@st.composite
def any_models(draw, d):
    if draw(st.booleans()):
        return draw(affine_models(d))
    k = draw(st.integers(1, 3))
    m = GaussianMixtureModel(d, k)
    theta = np.concatenate([
        draw(hnp.arrays(np.float64, (k,), elements=_floats(-2.0, 2.0))),
        draw(hnp.arrays(np.float64, (k * d,), elements=_floats(-2.0, 2.0))),
        draw(hnp.arrays(np.float64, (k,), elements=_floats(-1.0, 1.0))),
    ])
    return m, theta


@st.composite
def targets(draw, d):
    return draw(st.one_of(gaussians(d), gaussian_mixtures(d)))


def _half_mean_sq_score(dist, order):
    """1/2 E_p |grad log p|^2: closed form 1/2 tr Sigma^-1 for a Gaussian, else quadrature."""
    if isinstance(dist, Gaussian):
        return 0.5 * np.trace(np.linalg.inv(dist.cov))
    return 0.5 * float(expectation(lambda x: np.sum(dist.score(x) ** 2, axis=1), dist, order=order))


# ------------------------------------------------------------------- ESM - ISM
@given(d=st.integers(1, 3), data=st.data())
@settings(max_examples=20)
def test_esm_minus_ism_is_half_fisher_and_gradients_agree(d, data):
    model, theta = data.draw(affine_models(d))
    dist = data.draw(targets(d))
    order = 4  # affine model: degree-2 integrands, exact for order >= 2
    e, ge = population_loss("esm", model, theta, dist, order=order, grad=True)
    i, gi = population_loss("ism", model, theta, dist, order=order, grad=True)
    c = _half_mean_sq_score(dist, order)
    _close(e - i, c, e, i)
    _close(ge, gi, c)


def _legendre_rule(lo, hi, panels, nodes_per_panel=10):
    """Composite Gauss-Legendre on [lo, hi]."""
    t, w = np.polynomial.legendre.leggauss(nodes_per_panel)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + half[:, None] * t).ravel(), (half[:, None] * w).ravel()


def _line_rule(dist, panels=400):
    """Rule for E_p on the real line: Legendre nodes over +-14 std of every component,
    weights times the density (tails beyond 14 std weigh < 1e-40)."""
    covs = dist.covs if isinstance(dist, GaussianMixture) else dist.cov[None]
    means = dist.means if isinstance(dist, GaussianMixture) else dist.mean[None]
    sd = np.sqrt(covs[:, 0, 0])
    x, w = _legendre_rule(float(np.min(means[:, 0] - 14 * sd)), float(np.max(means[:, 0] + 14 * sd)), panels)
    return x[:, None], w * np.exp(dist.logpdf(x[:, None]))


@given(mt=any_models(1), dist=targets(1))
@settings(max_examples=10)
def test_esm_minus_ism_for_mixture_model_in_1d(mt, dist):
    # 400 panels of 10-point Legendre over the +-14 std hull (width ~0.07 std for a
    # single Gaussian): measured converged to < 1e-14 relative over 200 random draws
    # at the extremes of the drawn parameter ranges, and unchanged from 40 panels up.
    model, theta = mt
    x, w = _line_rule(dist)
    t = dist.score(x)
    pe, ge = losses.loss_terms(LossKind.RESIDUAL, model, theta, x, w, t, True)
    pi, gi = losses.loss_terms(LossKind.ISM, model, theta, x, w, None, True)
    c = 0.5 * w @ np.sum(t * t, axis=1)
    _close(w @ pe - w @ pi, c, w @ pe, w @ pi)
    _close(ge, gi, c)


# ---------------------------------------------------------------- sliced = ISM
def _sign_vectors(d):
    return np.array(list(itertools.product([-1.0, 1.0], repeat=d)))


@given(d=st.integers(1, 3), data=st.data())
def test_enumerated_ssm_and_ssm_vr_equal_ism_per_point(d, data):
    model, theta = data.draw(any_models(d))
    x = data.draw(points(d, max_n=5))
    v = np.broadcast_to(_sign_vectors(d)[:, None, :], (2**d,) + x.shape)
    per_ism = ism(model, theta, x, reduction="none")
    per_ssm = ssm(model, theta, x, v, reduction="none")
    per_vr = ssm_vr(model, theta, x, v, reduction="none")
    J = model.score_jacobian(theta, x)
    s = model.score(theta, x)
    scale = (np.abs(J).sum(axis=(1, 2)) + np.sum(s * s, axis=1),)
    _close(per_ssm, per_ism, *scale)
    _close(per_vr, per_ism, *scale)
    _, g_ism = ism(model, theta, x, grad=True)
    _, g_ssm = ssm(model, theta, x, v, grad=True)
    _, g_vr = ssm_vr(model, theta, x, v, grad=True)
    _close(g_ssm, g_ism)
    _close(g_vr, g_ism)


@given(d=st.integers(1, 3), data=st.data())
@settings(max_examples=10)
def test_population_sliced_losses_equal_ism(d, data):
    model, theta = data.draw(affine_models(d))
    dist = data.draw(targets(d))
    i, gi = population_loss("ism", model, theta, dist, order=3, grad=True)
    for name in ("ssm", "ssm_vr"):
        for kind in ("rademacher", "gaussian", "sphere"):
            val, g = population_loss(name, model, theta, dist, projection=kind, order=3, grad=True)
            _close(val, i, np.abs(gi).max())
            _close(g, gi)


@given(d=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_rademacher_variance_of_quadratic_form(d, seed):
    # docs/derivations.md §1.7: for v Rademacher, Var(v^T A v) = 2 (|A_s|_F^2 - sum_i A_ii^2),
    # A_s = (A + A^T)/2.  SSM-VR per projection is v^T A v + const for LinearScore.
    rng = np.random.default_rng(seed)
    model = LinearScore(d)
    theta = rng.uniform(-2, 2, model.n_params)
    A, _ = model.unpack(theta)
    x = rng.standard_normal((1, d))
    vals = np.array([ssm_vr(model, theta, x, v[None]) for v in _sign_vectors(d)])
    As = 0.5 * (A + A.T)
    expected = 2 * (np.sum(As**2) - np.sum(np.diag(A) ** 2))
    _close(vals.var(), expected, np.sum(As**2), vals.mean() ** 2)
    _close(vals.mean() - 0.5 * np.sum(model.score(theta, x) ** 2), np.trace(A), np.sum(np.abs(A)))


# ------------------------------------------------------------------- DSM - ESM(p_sigma)
@given(d=st.integers(1, 3), data=st.data(), sigma=_floats(0.2, 2.0))
@settings(max_examples=12)
def test_dsm_minus_esm_on_noised_target(d, data, sigma):
    model, theta = data.draw(affine_models(d))
    dist = data.draw(targets(d))
    ps = dist.noised(sigma)
    dv, gd = population_loss("dsm", model, theta, dist, sigma=sigma, order=3, grad=True)
    ev, ge = population_loss("esm", model, theta, ps, order=4, grad=True)
    c = _half_mean_sq_score(ps, 4)
    _close(dv - ev, 0.5 * d / sigma**2 - c, dv, ev, 0.5 * d / sigma**2)
    _close(gd, ge, c, 0.5 * d / sigma**2)


def test_dsm_minus_esm_for_mixture_model_in_1d():
    # (x, z) on a tensor product of composite Legendre rules (x: density-weighted,
    # z: standard normal density); 40 panels already agree with 120 to 5e-15.
    model = GaussianMixtureModel(1, 2)
    theta = np.array([0.3, -0.2, -1.0, 1.5, 0.5, -0.4])
    dist = GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [[[0.5]], [[1.5]]])
    sigma = 0.6
    x, wx = _line_rule(dist, panels=40)
    z, wz = _line_rule(Gaussian([0.0], [[1.0]]), panels=40)
    X, Z = np.repeat(x, z.size, axis=0), np.tile(z, (x.size, 1))
    W = np.outer(wx, wz).ravel()
    pd, gd = losses.dsm_terms(model, theta, X, sigma, Z, W, True)
    ps = dist.noised(sigma)
    xs, ws = _line_rule(ps)
    t = ps.score(xs)
    pe, ge = losses.loss_terms(LossKind.RESIDUAL, model, theta, xs, ws, t, True)
    c = 0.5 * ws @ np.sum(t * t, axis=1)
    _close(W @ pd - ws @ pe, 0.5 / sigma**2 - c, W @ pd, ws @ pe)
    _close(gd, ge, c)


# ---------------------------------------------------------------------- closed forms
@given(d=st.integers(1, 3), data=st.data(), sigma=_floats(0.2, 2.0))
@settings(max_examples=15)
def test_linear_score_closed_forms(d, data, sigma):
    # s = A x + b on N(mu, Sigma), Lambda = Sigma^-1, c = A mu + b:
    #   ISM = tr A + 1/2 (tr(A Sigma A^T) + |c|^2)
    #   ESM = 1/2 tr((A + Lambda) Sigma (A + Lambda)^T) + 1/2 |c|^2
    #   DSM = 1/2 tr(A Sigma A^T) + 1/2 |c|^2 + 1/2 |sigma A + I / sigma|_F^2
    #   grad ISM: d/dA = I + A Sigma + c mu^T,  d/db = c
    model = LinearScore(d)
    theta = data.draw(hnp.arrays(np.float64, (model.n_params,), elements=_floats(-2.0, 2.0)))
    dist = data.draw(gaussians(d))
    A, b = model.unpack(theta)
    mu, S = dist.mean, dist.cov
    Lam = np.linalg.inv(S)
    c = A @ mu + b
    ism_cf = np.trace(A) + 0.5 * (np.trace(A @ S @ A.T) + c @ c)
    esm_cf = 0.5 * np.trace((A + Lam) @ S @ (A + Lam).T) + 0.5 * c @ c
    dsm_cf = 0.5 * np.trace(A @ S @ A.T) + 0.5 * c @ c + 0.5 * np.sum((sigma * A + np.eye(d) / sigma) ** 2)
    grad_cf = np.concatenate([(np.eye(d) + A @ S + np.outer(c, mu)).ravel(), c])
    i, gi = population_loss("ism", model, theta, dist, order=2, grad=True)
    _close(i, ism_cf, np.trace(A @ S @ A.T), c @ c)
    _close(gi, grad_cf, A @ S, np.outer(c, mu))
    _close(population_loss("esm", model, theta, dist, order=2), esm_cf, np.trace(Lam), c @ c)
    _close(population_loss("dsm", model, theta, dist, sigma=sigma, order=2), dsm_cf, c @ c, 1 / sigma**2)


@given(d=st.integers(1, 3), data=st.data(), sigma=_floats(0.2, 2.0))
@settings(max_examples=15)
def test_gaussian_model_closed_forms(d, data, sigma):
    # docs/derivations.md §7.6, data N(mu, Sigma), model s = -P (x - m):
    #   ISM = -tr P + 1/2 tr(P^2 Sigma) + 1/2 (mu - m)^T P^2 (mu - m);  ESM = ISM + 1/2 tr Sigma^-1;
    #   DSM(sigma) = ESM against N(mu, Sigma + sigma^2 I) + d / (2 sigma^2) - 1/2 tr((Sigma + sigma^2 I)^-1).
    model = GaussianModel(d)
    theta = data.draw(hnp.arrays(np.float64, (model.n_params,), elements=_floats(-2.0, 2.0)))
    dist = data.draw(gaussians(d))
    m, L = model.unpack(theta)
    P = L @ L.T
    mu, S = dist.mean, dist.cov

    def ism_cf(cov):
        return -np.trace(P) + 0.5 * np.trace(P @ P @ cov) + 0.5 * (mu - m) @ P @ P @ (mu - m)

    Ss = S + sigma**2 * np.eye(d)
    esm_cf = ism_cf(S) + 0.5 * np.trace(np.linalg.inv(S))
    dsm_cf = ism_cf(Ss) + 0.5 * d / sigma**2
    scale = (np.trace(P @ P @ Ss), np.trace(np.linalg.inv(S)), (mu - m) @ P @ P @ (mu - m), d / sigma**2)
    _close(population_loss("ism", model, theta, dist, order=2), ism_cf(S), *scale)
    _close(population_loss("esm", model, theta, dist, order=2), esm_cf, *scale)
    _close(population_loss("dsm", model, theta, dist, sigma=sigma, order=2), dsm_cf, *scale)


# --------------------------------------------------------------------- Hyvärinen 2005
@given(d=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), n=st.integers(20, 200))
@settings(max_examples=15)
def test_ism_minimiser_is_sample_mean_and_inverse_biased_covariance(d, seed, n):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.uniform(0.3, 2.0, (d, d)) + rng.uniform(-3, 3, d)
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / n  # biased (1/n)
    prec = np.linalg.inv(cov)
    model = GaussianModel(d)
    theta = GaussianModel.theta_from(mean, prec)
    value, grad = ism(model, theta, x, grad=True)
    # Gradient entries are sums of terms of size ~|P|^2 |Sigma|: relative to that scale.
    scale = max(1.0, np.abs(prec).max() ** 2 * np.abs(cov).max() * np.abs(np.linalg.cholesky(prec)).max())
    assert np.abs(grad).max() <= REL * scale
    # At the minimiser ISM = -tr P + 1/2 tr(P^2 C) = -1/2 tr P.
    _close(value, -0.5 * np.trace(prec), np.trace(prec))
    # Same for LinearScore: A = -C^-1, b = C^-1 mean.
    lin = LinearScore(d)
    g_lin = ism(lin, np.concatenate([(-prec).ravel(), prec @ mean]), x, grad=True)[1]
    assert np.abs(g_lin).max() <= REL * max(scale, np.abs(prec @ mean).max() * np.abs(mean).max())
    # Negative control: moving the mean off the sample mean gives a clearly non-zero gradient.
    off = theta.copy()
    off[0] += 0.1
    assert np.abs(ism(model, off, x, grad=True)[1]).max() > 1e-3 * np.abs(prec).max()


# --------------------------------------------------------------------- Coreax check
class SquareScore(ScoreModel):
    """Test-only model s(x) = theta_0 * x**2 (elementwise): J = diag(2 theta_0 x)."""

    dim, n_params, layout = 2, 1, "[theta_0 (1): s(x) = theta_0 * x**2]"

    def _init(self, rng):
        return np.ones(1)

    def _score(self, theta, x):
        return theta[0] * x**2

    def _score_jacobian(self, theta, x):
        return np.einsum("ni,ij->nij", 2 * theta[0] * x, np.eye(self.dim))

    def _score_vjp_params(self, theta, x, ct):
        return np.array([np.sum(ct * x**2)])

    def _trace_grad_params(self, theta, x, w):
        return np.array([np.sum(w * 2 * x.sum(axis=1))])

    def _vjv_grad_params(self, theta, x, v, w):
        return np.array([np.sum(w * np.sum(2 * x * v * v, axis=1))])


def test_coreax_published_values():
    # Coreax (score_matching tests): s(x) = x^2, x = (2, 7), v = (1, 1):
    # v^T J v = 4 + 14 = 18, 1/2 |s|^2 = (16 + 2401)/2, 1/2 (v^T s)^2 = 53^2 / 2.
    m = SquareScore()
    x, v = np.array([[2.0, 7.0]]), np.array([[1.0, 1.0]])
    assert ssm_vr(m, np.ones(1), x, v) == 1226.5
    assert ssm(m, np.ones(1), x, v) == 1422.5
    # Gradients over theta_0 of the same losses (theta_0 = 1): vJv + theta^2 (...):
    # d/dtheta = 18 + 2 * 1208.5 and 18 + 2 * 1404.5.
    assert ssm_vr(m, np.ones(1), x, v, grad=True)[1][0] == 18 + 2 * 1208.5
    assert ssm(m, np.ones(1), x, v, grad=True)[1][0] == 18 + 2 * 1404.5
