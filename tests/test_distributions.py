"""Tests of refscore.distributions: every quantity against an independent oracle.

Oracles: scipy.stats log-densities; central finite differences of the level
below (logpdf -> score -> Jacobian); diagonal sums and matrix products of the
Jacobian (trace, JVP); symmetry of the Hessian; closed-form moments of exact
samples (stated z-scores); 1-D numerical convolution (scipy.integrate.quad) and
Gauss–Hermite quadrature for the noised mixture; the construction of the banana.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import logsumexp

from refscore.distributions import Banana, Gaussian, GaussianMixture, Perturbed, StudentT
from refscore.quadrature import expectation

from strategies import (
    bananas,
    gaussian_mixtures,
    gaussians,
    means,
    mixture_weights,
    points,
    seeds,
    student_ts,
)

EPS = np.finfo(float).eps

# ------------------------------------------------------------------ helpers


def adapted_points(dist, z):
    """Map standardised coordinates ``z (n, d)`` (entries in [-3, 3]) to points near ``dist``."""
    if isinstance(dist, Gaussian):
        return dist.mean + z @ dist.chol.T
    if isinstance(dist, GaussianMixture):
        j = np.arange(z.shape[0]) % dist.n_components
        return dist.means[j] + np.einsum("nij,nj->ni", dist.chols[j], z)
    if isinstance(dist, StudentT):
        return dist.loc + z @ dist.chol.T
    x1 = dist.sigma1 * z[:, 0]
    return np.stack([x1, z[:, 1] - dist.b * (x1**2 - dist.sigma1**2)], axis=1)


def length_scale(dist, x):
    """Smallest length over which log p curves appreciably (sets the FD step)."""
    if isinstance(dist, Gaussian):
        return np.sqrt(np.linalg.eigvalsh(dist.cov)[0])
    if isinstance(dist, GaussianMixture):
        return np.sqrt(min(np.linalg.eigvalsh(c)[0] for c in dist.covs))
    if isinstance(dist, StudentT):
        return np.sqrt(np.linalg.eigvalsh(dist.shape)[0])
    return min(1.0, dist.sigma1) / (1.0 + 2.0 * dist.b * np.max(np.abs(x[:, 0])))


def fd_gradient(f, x, h):
    """Central differences of ``f: (n, d) -> (n,)``: ``(n, d)``."""
    out = np.empty_like(x)
    for i in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[i] = h
        out[:, i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def fd_jacobian(g, x, h):
    """Central differences of ``g: (n, d) -> (n, d)``: ``[k, i, j] = ∂g_i/∂x_j``."""
    n, d = x.shape
    out = np.empty((n, d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        out[:, :, j] = (g(x + e) - g(x - e)) / (2 * h)
    return out


@st.composite
def any_target(draw):
    """One of the four families with points adapted to it."""
    kind = draw(st.sampled_from(["gaussian", "mixture", "student", "banana"]))
    if kind == "gaussian":
        dist = draw(gaussians())
    elif kind == "mixture":
        dist = draw(gaussian_mixtures())
    elif kind == "student":
        dist = draw(student_ts())
    else:
        dist = draw(bananas())
    z = draw(points(dist.dim))
    return dist, adapted_points(dist, z)


# ------------------------------------------------ log-densities vs scipy.stats
# Tolerance, relative to the size of the terms being summed,
# max(1, |log-normaliser| + q/2) with q the Mahalanobis quadratic form (the
# sum can cancel, so the error is relative to the terms, not to the result):
# 1e-12 + 8·cond·eps.  scipy factorises by eigh and builds a pseudo-inverse; its
# error measured against exact rational arithmetic (below) reaches ~4·cond·eps
# (0.9e-12 at cond = 1e3), several times refscore's Cholesky route.
# So 1e-12 is the agreement for well-conditioned covariances, and the
# cond-dependent part covers scipy's own round-off at cond up to 1e3.


def _terms_scale(lognorm, logp):
    return np.maximum(1.0, 2.0 * np.abs(lognorm) + np.abs(logp))


def _scipy_rtol(cov):
    return 1e-12 + 8.0 * np.linalg.cond(cov) * EPS


def _exact_gaussian_logpdf(mean, cov, x):
    """log N(x; mean, cov) with q and det(cov) in exact rational arithmetic (Fractions)."""
    d = len(mean)
    out = []
    for xi in x:
        a = [[Fraction(float(c)) for c in row] + [Fraction(float(xi[i])) - Fraction(float(mean[i]))]
             for i, row in enumerate(cov)]
        dv = [row[-1] for row in a]
        det = Fraction(1)
        for c in range(d):  # Gaussian elimination (SPD: no pivoting needed)
            det *= a[c][c]
            for r in range(c + 1, d):
                f = a[r][c] / a[c][c]
                a[r] = [arc - f * acc for arc, acc in zip(a[r], a[c])]
        y = [Fraction(0)] * d
        for r in reversed(range(d)):
            y[r] = (a[r][-1] - sum(a[r][c] * y[c] for c in range(r + 1, d))) / a[r][r]
        q = sum(dvi * yi for dvi, yi in zip(dv, y))
        logdet = math.log(det.numerator) - math.log(det.denominator)
        out.append(-0.5 * float(q) - 0.5 * d * math.log(2 * math.pi) - 0.5 * logdet)
    return np.array(out)


@given(data=st.data())
def test_gaussian_logpdf_matches_scipy(data):
    g = data.draw(gaussians())
    x = adapted_points(g, data.draw(points(g.dim)))
    ref = stats.multivariate_normal(g.mean, g.cov).logpdf(x).reshape(-1)
    got = g.logpdf(x)
    assert got.shape == (x.shape[0],)
    np.testing.assert_array_less(np.abs(got - ref), _scipy_rtol(g.cov) * _terms_scale(g.log_norm_const, ref))


@given(data=st.data())
def test_gaussian_logpdf_matches_exact_rational_arithmetic(data):
    g = data.draw(gaussians())
    x = adapted_points(g, data.draw(points(g.dim, max_n=3)))
    ref = _exact_gaussian_logpdf(g.mean, g.cov, x)
    # the oracle is exact up to its final float conversions (~eps).  refscore's
    # triangular solves are backward stable, so the forward error of q is
    # O(cond·eps) at worst (typically a few eps); measured over 1500 draws the
    # error stays below 0.55·(1e-14 + cond·eps) of the terms, so the bound is
    # 1e-14 + 2·cond·eps (2.3e-13 at cond = 1e3, about 4x below scipy's error)
    rtol = 1e-14 + 2.0 * np.linalg.cond(g.cov) * EPS
    np.testing.assert_array_less(np.abs(g.logpdf(x) - ref), rtol * _terms_scale(g.log_norm_const, ref))


@given(data=st.data())
def test_mixture_logpdf_matches_scipy_logsumexp(data):
    m = data.draw(gaussian_mixtures(max_condition=1e3))
    x = adapted_points(m, data.draw(points(m.dim)))
    comps = np.stack([
        np.log(w) + stats.multivariate_normal(mu, c).logpdf(x).reshape(-1)
        for w, mu, c in zip(m.weights, m.means, m.covs)
    ])
    ref = logsumexp(comps, axis=0)
    scale = _terms_scale(np.max(np.abs(m.log_norm_consts)), np.max(np.abs(comps), axis=0))
    rtol = max(_scipy_rtol(c) for c in m.covs)
    np.testing.assert_array_less(np.abs(m.logpdf(x) - ref), rtol * scale)


@given(data=st.data())
def test_student_logpdf_matches_scipy(data):
    t = data.draw(student_ts())
    x = adapted_points(t, data.draw(points(t.dim)))
    ref = np.atleast_1d(stats.multivariate_t(t.loc, t.shape, df=t.df).logpdf(x))
    np.testing.assert_array_less(np.abs(t.logpdf(x) - ref),
                                 _scipy_rtol(t.shape) * _terms_scale(t.log_norm_const, ref))


@given(dist=bananas(), z=points(2))
def test_banana_logpdf_matches_construction(dist, z):
    # p(x) = N(x1; 0, s1^2) N(x2 + b(x1^2 - s1^2); 0, 1): unit-Jacobian change of variables
    x = adapted_points(dist, z)
    y = x[:, 1] + dist.b * (x[:, 0] ** 2 - dist.sigma1**2)
    ref = stats.norm(0, dist.sigma1).logpdf(x[:, 0]) + stats.norm.logpdf(y)
    # both routes sum the same three O(|log p|) terms: round-off ~ a few eps·|log p|
    np.testing.assert_allclose(dist.logpdf(x), ref, rtol=1e-13, atol=1e-13)


def test_banana_is_normalised():
    # independent of the density's own algebra: adaptive 2-D quadrature over the
    # curved support, x1 in ±12 sigma1 (mass outside < 1e-32), x2 within ±12 of
    # the ridge x2 = -b(x1^2 - s1^2).  dblquad's default tolerance is 1.5e-8.
    dist = Banana(b=0.1, sigma1=3.0)
    ridge = lambda x1: -dist.b * (x1**2 - dist.sigma1**2)  # noqa: E731
    val, err = integrate.dblquad(
        lambda x2, x1: np.exp(dist.logpdf([x1, x2])),
        -12 * dist.sigma1, 12 * dist.sigma1,
        lambda x1: ridge(x1) - 12, lambda x1: ridge(x1) + 12,
    )
    assert abs(val - 1.0) < 1e-7, (val, err)


# -------------------------------------- derivatives vs the level below (FD)
# Step h = 1e-4·ℓ with ℓ the smallest curvature length of the target.  The
# central-difference truncation error is (h²/6)|∂³| ≈ 2e-9·(derivative scale)
# and the rounding error eps·|f|/h ≈ 2e-12·|f|/ℓ; both sit below the 1e-7
# relative tolerance, which is relative to max|value| + the natural scale
# (1/ℓ for scores, 1/ℓ² for Jacobians).  Measured over 300 random targets the
# worst error is 0.02 of this tolerance (Student t, heavy curvature near loc).


@settings(max_examples=40)
@given(target=any_target())
def test_score_matches_fd_of_logpdf(target):
    dist, x = target
    ell = length_scale(dist, x)
    s = dist.score(x)
    fd = fd_gradient(dist.logpdf, x, 1e-4 * ell)
    tol = 1e-7 * (np.max(np.abs(s)) + 1.0 / ell)
    assert s.shape == x.shape
    np.testing.assert_allclose(s, fd, rtol=0, atol=tol)


@settings(max_examples=40)
@given(target=any_target())
def test_jacobian_matches_fd_of_score(target):
    dist, x = target
    ell = length_scale(dist, x)
    J = dist.score_jacobian(x)
    fd = fd_jacobian(dist.score, x, 1e-4 * ell)
    tol = 1e-7 * (np.max(np.abs(J)) + 1.0 / ell**2)
    assert J.shape == (x.shape[0], dist.dim, dist.dim)
    np.testing.assert_allclose(J, fd, rtol=0, atol=tol)


@settings(max_examples=40)
@given(target=any_target(), seed=seeds())
def test_trace_and_jvp_agree_with_jacobian(target, seed):
    dist, x = target
    J = dist.score_jacobian(x)
    scale = np.max(np.abs(J)) * dist.dim
    # trace: same quantity, separate code path; only summation order differs, so
    # agreement to ~d·eps·max|J| (1e-13 relative to the scale leaves margin)
    np.testing.assert_allclose(dist.score_trace(x), np.einsum("kii->k", J), rtol=0, atol=1e-13 * scale)
    v = np.random.default_rng(seed).standard_normal(x.shape)
    np.testing.assert_allclose(
        dist.score_jvp(x, v), np.einsum("kij,kj->ki", J, v),
        rtol=0, atol=1e-13 * scale * np.max(np.abs(v)),
    )
    # the Jacobian of a score is a Hessian: symmetric to round-off
    np.testing.assert_allclose(J, np.swapaxes(J, 1, 2), rtol=0, atol=1e-13 * scale)


@settings(max_examples=25)
@given(target=any_target())
def test_trace_matches_fd_divergence(target):
    dist, x = target
    ell = length_scale(dist, x)
    h = 1e-4 * ell
    div = np.zeros(x.shape[0])
    for i in range(dist.dim):
        e = np.zeros(dist.dim)
        e[i] = h
        div += (dist.score(x + e)[:, i] - dist.score(x - e)[:, i]) / (2 * h)
    tr = dist.score_trace(x)
    # same FD error budget as the Jacobian test, summed over d diagonal entries
    tol = 1e-7 * dist.dim * (np.max(np.abs(tr)) + 1.0 / ell**2)
    np.testing.assert_allclose(tr, div, rtol=0, atol=tol)


@given(g=gaussians(), z=points(4))
def test_gaussian_closed_forms(g, z):
    x = adapted_points(g, z[:, : g.dim])
    # independent route: LU solve instead of Cholesky; both backward stable with
    # error ~ cond·eps ≤ 1e3·2.2e-16 relative to |P||x - mu|
    ref = -np.linalg.solve(g.cov, (x - g.mean).T).T
    scale = np.linalg.norm(g.precision, 2) * np.max(np.abs(x - g.mean)) + 1.0
    np.testing.assert_allclose(g.score(x), ref, rtol=0, atol=1e-11 * scale)
    # tr Σ⁻¹ = Σ 1/λ_i (eigenvalues); relative error ~ cond·eps
    np.testing.assert_allclose(g.score_trace(x), -np.sum(1.0 / np.linalg.eigvalsh(g.cov)), rtol=1e-11)
    # precision by cho_solve is an inverse of cov to ~ cond·eps
    np.testing.assert_allclose(g.precision @ g.cov, np.eye(g.dim), rtol=0, atol=1e-11)


# ------------------------------------------- mixtures far from every component


def test_mixture_far_tail_known_values_1d():
    # equal unit variances at ±1: r_right = sigmoid(2x) -> 1; at x = 60 the
    # component densities are exp(-1740) and exp(-1860) (underflow to 0 in a
    # naive sum) but the score is exactly -(x - 1) up to e^{-240} corrections.
    m = GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[1.0]], [[1.0]]])
    x = np.array([[60.0], [-60.0], [1000.0]])
    np.testing.assert_allclose(m.score(x)[:, 0], [-59.0, 59.0, -999.0], rtol=1e-15)
    np.testing.assert_allclose(m.score_jacobian(x)[:, 0, 0], -1.0, rtol=1e-15)
    np.testing.assert_allclose(m.score_trace(x), -1.0, rtol=1e-15)
    # log p = log(1/2) + log N(x; 1, 1) + log(1 + e^{-2x}); at x = 60 the last term is e^{-120}
    np.testing.assert_allclose(m.logpdf(x[:1]), np.log(0.5) - 0.5 * np.log(2 * np.pi) - 0.5 * 59.0**2,
                               rtol=1e-15)


@settings(max_examples=25)
@given(m=gaussian_mixtures(min_k=2), seed=seeds())
def test_mixture_finite_50_sd_from_every_component(m, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((8, m.dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    # radius beyond every component's mean by 50 of its largest standard deviations,
    # so the Mahalanobis distance to every component is >= 50
    sd_max = np.sqrt(max(np.linalg.eigvalsh(c)[-1] for c in m.covs))
    R = np.max(np.linalg.norm(m.means, axis=1)) + 50.0 * sd_max
    x = u * R * rng.uniform(1.0, 3.0, size=(8, 1))
    maha = np.stack([np.einsum("ni,ij,nj->n", x - mu, P, x - mu) for mu, P in zip(m.means, m.precisions)])
    assert np.all(np.sqrt(maha) >= 49.99)
    v = rng.standard_normal(x.shape)
    for out in (m.logpdf(x), m.score(x), m.score_jacobian(x), m.score_trace(x), m.score_jvp(x, v)):
        assert np.all(np.isfinite(out))
    # and still correct there: score vs FD of logpdf, relative to its (large) size
    ell = np.sqrt(min(np.linalg.eigvalsh(c)[0] for c in m.covs))
    s = m.score(x)
    np.testing.assert_allclose(s, fd_gradient(m.logpdf, x, 1e-4 * ell), rtol=0,
                               atol=1e-6 * (np.max(np.abs(s)) + 1.0 / ell))
    # Jacobian = -Σ r_j P_j + (PSD): every eigenvalue >= -max λ(P_j)
    lam_min = np.linalg.eigvalsh(m.score_jacobian(x))[:, 0]
    assert np.all(lam_min >= -max(np.linalg.eigvalsh(P)[-1] for P in m.precisions) * (1 + 1e-10))


# --------------------------------------------------------- sampling moments
# Moment checks at |z| <= 5 with the standard error computed from n (two-sided
# false-alarm probability 5.7e-7 per comparison); the tests are also seeded.

Z = 5.0


@settings(max_examples=10)
@given(g=gaussians(), seed=seeds())
def test_gaussian_sample_moments(g, seed):
    n = 20_000
    x = g.sample(n, rng=seed)
    assert x.shape == (n, g.dim)
    sd = np.sqrt(np.diag(g.cov))
    assert np.all(np.abs(x.mean(0) - g.mean) <= Z * sd / np.sqrt(n))
    # Var of (x_i - mu_i)(x_j - mu_j) for a Gaussian is Σ_ii Σ_jj + Σ_ij²
    se = np.sqrt((np.outer(np.diag(g.cov), np.diag(g.cov)) + g.cov**2) / n)
    xc = x - g.mean
    assert np.all(np.abs(xc.T @ xc / n - g.cov) <= Z * se)


@settings(max_examples=10)
@given(m=gaussian_mixtures(), seed=seeds())
def test_mixture_sample_moments(m, seed):
    n = 20_000
    x = m.sample(n, rng=seed)
    mean = m.weights @ m.means
    cov = np.einsum("k,kij->ij", m.weights, m.covs + np.einsum("ki,kj->kij", m.means, m.means)) - np.outer(mean, mean)
    assert np.all(np.abs(x.mean(0) - mean) <= Z * np.sqrt(np.diag(cov) / n))
    # SE of the second moments from the sample's own fourth moments (finite for a mixture)
    xc = x - mean
    prods = xc[:, :, None] * xc[:, None, :]
    se = prods.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - cov) <= Z * se + 1e-12)


def test_student_sample_law():
    t = StudentT([1.0, -2.0, 0.5], [[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], df=7.0)
    n = 20_000
    x = t.sample(n, rng=123)
    # mean: Var x_i = shape_ii·ν/(ν-2)
    var = np.diag(t.shape) * t.df / (t.df - 2)
    assert np.all(np.abs(x.mean(0) - t.loc) <= Z * np.sqrt(var / n))
    # law of the Mahalanobis form: q/d ~ F(d, ν) exactly; KS at p > 1e-6 (≈ |z| < 5)
    xc = x - t.loc
    q = np.einsum("ni,ij,nj->n", xc, t.precision, xc) / t.dim
    assert stats.kstest(q, stats.f(t.dim, t.df).cdf).pvalue > 1e-6
    # negative control: the same statistic rejects a wrong df
    assert stats.kstest(q, stats.f(t.dim, 3.0).cdf).pvalue < 1e-6


def test_banana_sample_law():
    b = Banana(b=0.1, sigma1=10.0)
    n = 20_000
    x = b.sample(n, rng=7)
    # undo the twist: (x1/s1, x2 + b(x1^2 - s1^2)) is N(0, I)
    u = np.stack([x[:, 0] / b.sigma1, x[:, 1] + b.b * (x[:, 0] ** 2 - b.sigma1**2)], axis=1)
    assert np.all(np.abs(u.mean(0)) <= Z / np.sqrt(n))
    # Var of u_i u_j: 2 on the diagonal, 1 off it
    assert np.all(np.abs(u.T @ u / n - np.eye(2)) <= Z * np.sqrt(np.array([[2, 1], [1, 2]]) / n))
    # closed form Var x2 = 1 + 2 b² s1⁴ = 201; Var(x2²) from the sample
    assert abs(np.mean(x[:, 1] ** 2) - (1 + 2 * b.b**2 * b.sigma1**4)) <= Z * np.std(x[:, 1] ** 2) / np.sqrt(n)


def test_sample_edge_cases():
    g = Gaussian([0.0, 0.0], np.eye(2))
    assert g.sample(0).shape == (0, 2)
    np.testing.assert_array_equal(g.sample(5, rng=3), g.sample(5, rng=np.random.default_rng(3)))


# --------------------------------------------------------- noised / perturbed


@settings(max_examples=8)
@given(w=mixture_weights(3), mu=means(3, scale=2.0), sig=st.floats(0.2, 2.0), seed=seeds())
def test_noised_mixture_1d_matches_numerical_convolution(w, mu, sig, seed):
    var = np.random.default_rng(seed).uniform(0.1, 2.0, size=3)
    m = GaussianMixture(w, mu[:, None], var[:, None, None])
    mn = m.noised(sig)
    sd = np.sqrt(var)

    def p(y):  # the unnoised density written out independently of the library
        return float(np.sum(w * np.exp(-0.5 * ((y - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))))

    def kern(u):  # N(u; 0, σ²)
        return math.exp(-0.5 * (u / sig) ** 2) / (sig * math.sqrt(2 * math.pi))

    for x0 in (-3.0, 0.4, 2.5):
        # p_σ(x) = ∫ p(y) N(x − y; 0, σ²) dy and, differentiating under the integral,
        # ∂p_σ/∂x = ∫ p(y) N(x − y; 0, σ²)·(−(x − y)/σ²) dy; adaptive quad with
        # epsabs 1e-13, epsrel 1e-12 (reported error estimates stay below 1e-12)
        dens, _ = integrate.quad(lambda y: p(y) * kern(x0 - y), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12)
        ddens, _ = integrate.quad(lambda y: p(y) * kern(x0 - y) * (-(x0 - y) / sig**2), -np.inf, np.inf,
                                  epsabs=1e-13, epsrel=1e-12)
        # quad's own error estimates are conservative (≤ 4e-10 relative over 200 random
        # cases) while the achieved agreement was ≤ 3e-15 relative for the density and
        # ≤ 1e-15 for the score; 1e-12 / 1e-11 leave > 300x margin
        np.testing.assert_allclose(np.exp(mn.logpdf([x0])), dens, rtol=1e-12)
        np.testing.assert_allclose(mn.score([x0])[0], ddens / dens, rtol=1e-11, atol=1e-12)


def test_noised_mixture_2d_matches_gauss_hermite_tweedie():
    # p_σ(x) = E_{y~p} N(x; y, σ²I) and ∇p_σ(x) = E_{y~p} N(x; y, σ²I)(y - x)/σ²:
    # the integrand is entire and Gaussian in y, so Gauss–Hermite converges
    # geometrically (measured score errors: 6e-7 at order 20, 3e-10 at 30,
    # 1e-13 at 40, 6e-16 at 60); at order 60 a 1e-12 bound leaves 1000x margin.
    m = GaussianMixture([0.3, 0.7], [[0.0, 1.0], [2.0, -1.0]],
                        [[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]]])
    sig = 0.8
    mn = m.noised(sig)
    for x0 in np.array([[0.0, 0.0], [1.0, 0.5], [3.0, -2.0]]):
        kern = lambda y: np.exp(-0.5 * np.sum((x0 - y) ** 2, 1) / sig**2) / (2 * np.pi * sig**2)  # noqa: E731
        dens = expectation(kern, m, order=60)
        grad = expectation(lambda y: kern(y)[:, None] * (y - x0) / sig**2, m, order=60)
        np.testing.assert_allclose(np.exp(mn.logpdf(x0)), dens, rtol=1e-12)
        np.testing.assert_allclose(mn.score(x0), grad / dens, rtol=0, atol=1e-12 * (1 + np.max(np.abs(grad / dens))))


def test_noised_gaussian_is_sum_of_covariances():
    g = Gaussian([1.0, -1.0], [[2.0, 0.5], [0.5, 1.0]])
    gn = g.noised(0.5)
    assert isinstance(gn, Gaussian)
    x = np.array([[0.3, 0.1], [2.0, -3.0]])
    ref = stats.multivariate_normal(g.mean, g.cov + 0.25 * np.eye(2)).logpdf(x)
    np.testing.assert_allclose(gn.logpdf(x), ref, rtol=1e-13)


@settings(max_examples=20)
@given(data=st.data())
def test_perturbed_score_equals_noised_score(data):
    kind = data.draw(st.sampled_from(["gaussian", "mixture"]))
    dist = data.draw(gaussians(max_condition=1e2) if kind == "gaussian" else gaussian_mixtures())
    x = adapted_points(dist, data.draw(points(dist.dim)))
    sig = data.draw(st.lists(st.floats(0.05, 3.0), min_size=x.shape[0], max_size=x.shape[0]))
    sig = np.array(sig)
    p = dist.perturbed()
    assert p.dim == dist.dim
    per_point = p.score(x, sig)
    # eigh route vs Cholesky route: both relative ~ cond·eps ≤ 1e2·2.2e-16 here, so
    # 1e-12 relative to the score scale (measured worst: 2e-15)
    for k in range(x.shape[0]):
        ref = dist.noised(sig[k]).score(x[k])
        np.testing.assert_allclose(per_point[k], ref, rtol=0, atol=1e-12 * (1 + np.max(np.abs(ref))))
        np.testing.assert_allclose(p.logpdf(x[k], sig[k]), dist.noised(sig[k]).logpdf(x[k]),
                                   rtol=1e-12, atol=1e-12)
    scalar = p.score(x, sig[0])
    np.testing.assert_allclose(scalar, dist.noised(sig[0]).score(x), rtol=0,
                               atol=1e-12 * (1 + np.max(np.abs(scalar))))


@pytest.mark.parametrize("dist", [StudentT([0.0], [[1.0]], 3.0), Banana()])
def test_noised_not_closed_form(dist):
    with pytest.raises(NotImplementedError, match="no closed form"):
        dist.noised(0.5)
    with pytest.raises(NotImplementedError, match="closed"):
        dist.perturbed()


# ---------------------------------------------------------------- interface


@pytest.mark.parametrize("dist", [
    Gaussian([0.0, 1.0], [[1.0, 0.2], [0.2, 1.0]]),
    GaussianMixture([0.4, 0.6], [[0.0, 1.0], [1.0, 0.0]], [np.eye(2), 2 * np.eye(2)]),
    StudentT([0.0, 1.0], [[1.0, 0.2], [0.2, 1.0]], 4.0),
    Banana(),
])
def test_single_point_drops_batch_axis(dist):
    x = np.array([[0.3, -0.2], [1.0, 2.0]])
    v = np.array([[1.0, 0.5], [-1.0, 2.0]])
    assert np.shape(dist.logpdf(x[0])) == ()
    assert dist.score(x[0]).shape == (2,)
    assert dist.score_jacobian(x[0]).shape == (2, 2)
    assert np.shape(dist.score_trace(x[0])) == ()
    assert dist.score_jvp(x[0], v[0]).shape == (2,)
    # the point alone is the same point's row of a batch, over the two points above and 30 random
    # ones: to round-off, not bitwise. A batch of 1 is not a batch of 32 for BLAS (triangular solves,
    # matmul) and einsum, which pick other kernels and summation orders by size and CPU (up to ~50 ulp
    # of the largest entry seen over random points; 1e-13 of it is ~10x that)
    rng = np.random.default_rng(12)
    x = np.concatenate([x, 3 * rng.standard_normal((30, 2))])
    v = np.concatenate([v, 3 * rng.standard_normal((30, 2))])
    s, jvp = dist.score(x), dist.score_jvp(x, v)
    for k in range(len(x)):
        for one, row in ((dist.score(x[k]), s[k]), (dist.score_jvp(x[k], v[k]), jvp[k])):
            np.testing.assert_allclose(one, row, rtol=1e-13, atol=1e-13 * np.abs(row).max(), err_msg=f"point {k}")
    assert dist.dim == 2 and type(dist).__name__ in repr(dist)


def test_attributes_read_only_and_consistent():
    m = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), [[2.0, 0.5], [0.5, 1.0]]])
    with pytest.raises(ValueError, match="read-only"):
        m.means[0, 0] = 5.0
    np.testing.assert_allclose(np.einsum("kij,kjl->kil", m.chols, np.swapaxes(m.chols, 1, 2)), m.covs,
                               rtol=1e-15, atol=1e-15)
    ref = [stats.multivariate_normal(mu, c).logpdf(mu) for mu, c in zip(m.means, m.covs)]
    np.testing.assert_allclose(m.log_norm_consts, ref, rtol=1e-14)
    assert isinstance(m.perturbed(), Perturbed)


# ---------------------------------------------------------------- validation
G = Gaussian([0.0, 0.0], np.eye(2))


def test_gaussian_mean_not_vector():
    with pytest.raises(ValueError, match=r"mean must be a non-empty 1-D array"):
        Gaussian([[0.0, 0.0]], np.eye(2))


def test_gaussian_mean_not_finite():
    with pytest.raises(ValueError, match=r"mean must be finite"):
        Gaussian([0.0, np.nan], np.eye(2))


def test_gaussian_cov_wrong_shape():
    with pytest.raises(ValueError, match=r"cov must have shape \(2, 2\), got shape \(3, 3\)"):
        Gaussian([0.0, 0.0], np.eye(3))


def test_gaussian_cov_not_finite():
    with pytest.raises(ValueError, match=r"cov must be finite"):
        Gaussian([0.0, 0.0], [[1.0, np.inf], [np.inf, 1.0]])


def test_gaussian_cov_not_symmetric():
    with pytest.raises(ValueError, match=r"cov must be symmetric positive definite; it is not symmetric"):
        Gaussian([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]])


def test_gaussian_cov_not_positive_definite():
    with pytest.raises(ValueError, match=r"cov must be symmetric positive definite; .*smallest eigenvalue -1"):
        Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])


def test_mixture_weights_negative():
    with pytest.raises(ValueError, match=r"weights must be non-negative"):
        GaussianMixture([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])


def test_mixture_weights_not_summing_to_one():
    with pytest.raises(ValueError, match=r"weights must sum to 1 .*off by \+1e-0?6"):
        GaussianMixture([0.5, 0.500001], [[0.0], [1.0]], [[[1.0]], [[1.0]]])


def test_mixture_weights_not_finite():
    with pytest.raises(ValueError, match=r"weights must be finite"):
        GaussianMixture([np.nan, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])


def test_mixture_means_wrong_shape():
    with pytest.raises(ValueError, match=r"means must have shape \(2, d\) to match weights, got shape \(3, 1\)"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0], [2.0]], [[[1.0]], [[1.0]]])


def test_mixture_means_not_finite():
    with pytest.raises(ValueError, match=r"means must be finite"):
        GaussianMixture([0.5, 0.5], [[0.0], [np.inf]], [[[1.0]], [[1.0]]])


def test_mixture_covs_wrong_shape():
    with pytest.raises(ValueError, match=r"covs must have shape \(2, 1, 1\), got shape \(2, 2, 2\)"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [np.eye(2), np.eye(2)])


def test_mixture_component_cov_not_spd():
    with pytest.raises(ValueError, match=r"covs\[1\] must be symmetric positive definite"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[-1.0]]])


def test_student_df_not_positive():
    with pytest.raises(ValueError, match=r"df must be finite and > 0, got 0"):
        StudentT([0.0], [[1.0]], 0)


def test_student_df_not_finite():
    with pytest.raises(ValueError, match=r"df must be finite and > 0, got inf"):
        StudentT([0.0], [[1.0]], np.inf)


def test_student_shape_not_spd():
    with pytest.raises(ValueError, match=r"shape must be symmetric positive definite"):
        StudentT([0.0, 0.0], [[1.0, 0.0], [0.0, 0.0]], 3.0)


def test_banana_sigma1_not_positive():
    with pytest.raises(ValueError, match=r"sigma1 must be finite and > 0, got -1"):
        Banana(sigma1=-1.0)


def test_banana_b_not_finite():
    with pytest.raises(ValueError, match=r"b must be finite, got nan"):
        Banana(b=float("nan"))


def test_x_wrong_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\) or \(2,\), got shape \(3, 3\)"):
        G.score(np.zeros((3, 3)))


def test_x_not_finite():
    with pytest.raises(ValueError, match=r"x must be finite"):
        G.logpdf([0.0, np.nan])


def test_v_wrong_shape():
    with pytest.raises(ValueError, match=r"v must have shape \(3, 2\) to match x, got shape \(2, 2\)"):
        G.score_jvp(np.zeros((3, 2)), np.zeros((2, 2)))


def test_v_not_finite():
    with pytest.raises(ValueError, match=r"v must be finite"):
        G.score_jvp(np.zeros((1, 2)), [[np.inf, 0.0]])


def test_sample_n_negative():
    with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
        G.sample(-1)


def test_noised_sigma_not_positive():
    with pytest.raises(ValueError, match=r"sigma must be finite and > 0, got 0"):
        G.noised(0.0)


def test_perturbed_sigma_not_positive():
    with pytest.raises(ValueError, match=r"sigma must be finite and > 0"):
        G.perturbed().score(np.zeros((2, 2)), np.array([1.0, -1.0]))


def test_perturbed_sigma_wrong_shape():
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(2,\) to match x, got shape \(3,\)"):
        G.perturbed().score(np.zeros((2, 2)), np.ones(3))
