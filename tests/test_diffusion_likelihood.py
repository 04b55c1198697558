"""The probability-flow ODE log-likelihood (refscore.diffusion.likelihood), docs/diffusion.md §9.

Each value is checked against something computed another way: the Gaussian closed form against the exact
marginal density and against the ODE; the ODE on mixtures against the exact marginal density, a second
tolerance, and in 1-D against the CDF transport map and quadrature of the noised density; the Hutchinson moments
against enumeration of every Rademacher probe and against Monte Carlo; bits per dimension against a law whose
discrete probabilities are known.
"""
import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from refscore.diffusion import EDM, VE, VP, Denoiser, Flow, SubVP
from refscore.diffusion import likelihood as lk
from refscore.diffusion.laws import gaussian_kl
from refscore.distributions import Gaussian, GaussianMixture

GAUSS = Gaussian([0.3, -0.5], [[2.0, 0.6], [0.6, 0.5]])
MIX2 = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]],
                       [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.1]]])
MIX1 = GaussianMixture([0.25, 0.75], [[-1.5], [1.0]], [[[0.2]], [[0.4]]])
#: (schedule, t_eps, T): the ends diffusion codes use
RUNS = [(VP(), 1e-3, 1.0), (SubVP(), 1e-3, 1.0), (VE(), 0.0, 1.0), (EDM(), 0.002, 80.0), (Flow(), 1e-3, 1.0)]
X2 = np.array([[1.0, 0.2], [-2.0, 1.0]])


@pytest.mark.parametrize("sch, t0, t1", RUNS, ids=lambda v: repr(v)[:6])
def test_gaussian_closed_form_is_the_exact_marginal_and_the_ode(sch, t0, t1):
    D = Denoiser(GAUSS, sch)
    cf = lk.gaussian_likelihood(D, X2, t0, t1, prior="exact")
    # with the exact marginal as prior, prior + divergence integral is log p_{t_eps}: round-off of a few terms of size ~5
    np.testing.assert_allclose(cf.log_likelihood, D.logpdf(X2, t0), rtol=0, atol=1e-13)
    ode = lk.pf_ode_likelihood(D, X2, t0, t1, prior="exact", jacobian=True)
    # DOP853 at 1e-11: the brief's 1e-10, and within the run's own error estimate
    assert np.all(np.abs(ode.log_likelihood - cf.log_likelihood) < 1e-10)
    assert np.all(np.abs(ode.log_likelihood - cf.log_likelihood) <= ode.error)
    np.testing.assert_allclose(ode.x_T, cf.x_T, rtol=0, atol=1e-9 * (1 + np.abs(cf.x_T).max()))
    np.testing.assert_allclose(ode.jacobian_integral, cf.jacobian_integral, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.trace(ode.jacobian_integral, axis1=1, axis2=2), ode.divergence_integral,
                               rtol=0, atol=1e-12)


def test_gaussian_standard_prior_gap_is_minus_kl_on_average():
    """log-lik with N(0, s^2 I) minus the exact one = log pi(x_T) - log p_T(x_T); over x ~ p_eps, x_T ~ p_T, so the
    mean gap is -KL(p_T || pi) (gaussian_kl, another code path).  Monte Carlo, 4e4 points, |z| < 5."""
    sch, t0, t1 = VP(beta_min=0.1, beta_max=2.0), 1e-3, 1.0  # a small beta_max: p_T far from N(0, I)
    D = Denoiser(GAUSS, sch)
    rng = np.random.default_rng(0)
    x = sch.alpha(t0) * GAUSS.sample(40000, rng) + sch.sigma(t0) * rng.standard_normal((40000, 2))
    ex = lk.gaussian_likelihood(D, x, t0, t1, prior="exact")
    st = lk.gaussian_likelihood(D, x, t0, t1, prior=1.0)
    np.testing.assert_array_equal(ex.divergence_integral, st.divergence_integral)
    gap = st.log_likelihood - ex.log_likelihood
    np.testing.assert_allclose(gap, lk.prior_logpdf(D, ex.x_T, t1, 1.0) - D.logpdf(ex.x_T, t1), rtol=0, atol=1e-12)
    aT, sT = sch.alpha(t1), sch.sigma(t1)
    kl = gaussian_kl(aT * GAUSS.mean, aT ** 2 * GAUSS.cov + sT ** 2 * np.eye(2), np.zeros(2), np.eye(2))
    z = (gap.mean() + kl) / (gap.std(ddof=1) / math.sqrt(gap.size))
    assert abs(z) < 5, z
    assert kl > 20 * gap.std(ddof=1) / math.sqrt(gap.size)  # the test has power: the gap is 20 standard errors


@pytest.mark.parametrize("sch, t0, t1", [RUNS[0], RUNS[3]], ids=["vp", "edm"])
def test_mixture_ode_is_the_exact_marginal_within_its_bound(sch, t0, t1):
    D = Denoiser(MIX2, sch)
    x = np.array([[1.0, 0.2], [-1.0, 0.4]])
    tight = lk.pf_ode_likelihood(D, x, t0, t1, prior="exact")
    assert np.all(np.abs(tight.log_likelihood - D.logpdf(x, t0)) <= tight.error)
    assert np.all(tight.error < 1e-8)  # the stated accuracy of the default tolerances on these runs
    loose = lk.pf_ode_likelihood(D, x, t0, t1, prior="exact", rtol=1e-9, atol=1e-9)
    assert np.all(np.abs(loose.log_likelihood - tight.log_likelihood) <= loose.error)
    # the practical prior changes only the prior term, at the same x_T
    st = lk.pf_ode_likelihood(D, x, t0, t1, prior=float(sch.sigma(t1)), error_estimate=False)
    np.testing.assert_array_equal(st.x_T, tight.x_T)
    np.testing.assert_array_equal(st.divergence_integral, tight.divergence_integral)
    assert np.all(np.isnan(st.error))


def _mix1_density(x, a, s):
    """1-D noised mixture density by quadrature over x0 (scipy.integrate.quad), independent of the Denoiser."""
    def data_pdf(u):
        return sum(w * stats.norm.pdf(u, m[0], math.sqrt(c[0][0])) for w, m, c in
                   zip(MIX1.weights, MIX1.means, MIX1.covs))
    # the kernel N(x; a u, s^2) is narrow at small s: integrate over u within 40 of its widths of x / a
    lo, hi = (x - 40 * s) / a, (x + 40 * s) / a
    return integrate.quad(lambda u: stats.norm.pdf(x, a * u, s) * data_pdf(u), lo, hi, epsabs=0, epsrel=1e-13,
                          limit=200)[0]


def _mix1_cdf(x, a, s):
    return sum(w * stats.norm.cdf(x, a * m[0], math.sqrt(a * a * c[0][0] + s * s)) for w, m, c in
               zip(MIX1.weights, MIX1.means, MIX1.covs))


def test_mixture_1d_flow_map_is_the_cdf_transport_and_the_density_is_quadrature():
    """In 1-D the PF-ODE map is increasing and carries p_eps to p_T, so x_T = F_T^{-1}(F_eps(x)); and log p_eps(x)
    from the ODE with the exact prior equals the log of the noised data density by quadrature."""
    sch, t0, t1 = VE(0.01, 50.0), 0.0, 1.0
    D = Denoiser(MIX1, sch)
    x = np.array([[-1.7], [0.1], [1.3]])
    r = lk.pf_ode_likelihood(D, x, t0, t1, prior="exact")
    a0, s0, a1, s1 = sch.alpha(t0), sch.sigma(t0), sch.alpha(t1), sch.sigma(t1)
    for k, xk in enumerate(x[:, 0]):
        u = _mix1_cdf(xk, a0, s0)
        xT = optimize.brentq(lambda y: _mix1_cdf(y, a1, s1) - u, -500, 500, xtol=1e-14, rtol=1e-15)
        # x_T ~ 50: the ODE's 1e-11 tolerance in relative terms, the CDF inversion to its conditioning
        assert abs(r.x_T[k, 0] - xT) < 1e-8 * (1 + abs(xT))
        assert abs(r.log_likelihood[k] - math.log(_mix1_density(xk, a0, s0))) < r.error[k] + 1e-10


def test_hutchinson_moments_by_enumerating_every_rademacher_probe():
    rng = np.random.default_rng(1)
    d = 4
    A = rng.standard_normal((d, d))  # not symmetric: only A_s enters the variance
    probes = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    values = lk.hutchinson_estimate(A, probes[:, None, :])  # each probe alone (m = 1)
    mean, var = lk.hutchinson_moments(A, "rademacher", 1)
    np.testing.assert_allclose(values.mean(), mean, rtol=1e-13)
    np.testing.assert_allclose(values.var(), var, rtol=1e-12)
    # two probes: every ordered pair, the sum divided by 2
    pairs = np.array([[p, q] for p in probes for q in probes])
    v2 = lk.hutchinson_estimate(A, pairs)
    mean2, var2 = lk.hutchinson_moments(A, "rademacher", 2)
    np.testing.assert_allclose(v2.mean(), mean2, rtol=1e-13)
    np.testing.assert_allclose(v2.var(), var2, rtol=1e-12)
    # the derivation's two forms: 2||A_s||_F^2 - 2 sum A_ii^2
    As = 0.5 * (A + A.T)
    np.testing.assert_allclose(var, 2 * np.sum(As ** 2) - 2 * np.sum(np.diag(A) ** 2), rtol=1e-12)
    # a probe sum not divided by m is m times the trace: the bug the golden diagnosis names
    assert abs(2 * v2.mean() - mean2) > 0.5 * abs(mean2)


def test_hutchinson_gaussian_moments_by_monte_carlo():
    """Gaussian probes: mean tr A, variance 2||A_s||_F^2 / m.  2e5 estimates with m = 3; the mean and the mean
    squared deviation each within 5 of their standard errors."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 3))
    m = 3
    z = rng.standard_normal((200000, m, 3))
    est = lk.hutchinson_estimate(A, z)
    mean, var = lk.hutchinson_moments(A, "gaussian", m)
    assert abs(est.mean() - mean) < 5 * math.sqrt(var / est.size)
    dev = (est - mean) ** 2
    assert abs(dev.mean() - var) < 5 * dev.std(ddof=1) / math.sqrt(est.size)
    np.testing.assert_allclose(var, 2 * np.sum((0.5 * (A + A.T)) ** 2) / m, rtol=1e-13)


def test_hutchinson_divergence_integral_of_a_run():
    """With probes fixed per trajectory the estimate of the divergence integral is z^T (int J dt) z; its exact mean is
    the divergence integral.  Checked by enumeration on the closed-form Gaussian (d = 2)."""
    D = Denoiser(GAUSS, VP())
    r = lk.gaussian_likelihood(D, X2[:1], 1e-3, 1.0)
    probes = np.array(list(itertools.product([-1.0, 1.0], repeat=2)))
    ests = lk.hutchinson_estimate(r.jacobian_integral[0], probes[:, None, :])
    np.testing.assert_allclose(ests.mean(), r.divergence_integral[0], rtol=1e-14)
    mean, var = lk.hutchinson_moments(r.jacobian_integral, "rademacher")
    np.testing.assert_allclose(ests.var(), var[0], rtol=1e-12, atol=1e-15)


def test_bits_per_dim_conventions_and_converters():
    ll, d = np.array([-3.7, 1.2]), 3
    np.testing.assert_allclose(lk.bits_per_dim(ll, d, "[-1,1]"), (-ll + d * math.log(128)) / (d * math.log(2)),
                               rtol=1e-15)
    np.testing.assert_allclose(lk.bits_per_dim(ll, d, "[0,1]"), (-ll + d * math.log(256)) / (d * math.log(2)),
                               rtol=1e-15)
    for conv in lk.BPD_CONVENTIONS:
        np.testing.assert_allclose(lk.log_likelihood_from_bpd(lk.bits_per_dim(ll, d, conv), d, conv), ll, rtol=1e-14)
    # the same model on two scales: y = (x + 1) / 2 has log p_y = log p_x + d log 2, and the same bpd
    g = Gaussian([0.1, -0.2, 0.0], np.diag([0.3, 0.2, 0.25]))
    gy = Gaussian((g.mean + 1) / 2, g.cov / 4)
    x = np.array([[0.2, -0.1, 0.4]])
    np.testing.assert_allclose(lk.bits_per_dim(g.logpdf(x), d, "[-1,1]"), lk.bits_per_dim(gy.logpdf((x + 1) / 2), d,
                               "[0,1]"), rtol=1e-14)
    # a density constant on each dequantisation bin, P(k) / w^d there: bpd = -log2 P(k) / d exactly
    P = 0.0123
    for conv, w in lk.BPD_CONVENTIONS.items():
        np.testing.assert_allclose(lk.bits_per_dim(math.log(P / w ** d), d, conv), -math.log2(P) / d, rtol=1e-14)
    np.testing.assert_allclose(lk.bits_per_dim(ll, d, bin_width=2 / 256), lk.bits_per_dim(ll, d, "[-1,1]"),
                               rtol=1e-15)


def test_bad_input_is_refused_naming_the_argument():
    D = Denoiser(GAUSS, VP())
    with pytest.raises(ValueError, match="t_end must be > t_eps"):
        lk.gaussian_likelihood(D, X2, 0.5, 0.1)
    with pytest.raises(ValueError, match="t_eps"):
        lk.pf_ode_likelihood(D, X2, -0.1, 1.0)
    with pytest.raises(ValueError, match="t_eps must have a finite d_sigma"):
        lk.pf_ode_likelihood(D, X2, 0.0, 1.0)
    with pytest.raises(ValueError, match="prior"):
        lk.gaussian_likelihood(D, X2, 1e-3, 1.0, prior="standard")
    with pytest.raises(ValueError, match="prior"):
        lk.gaussian_likelihood(D, X2, 1e-3, 1.0, prior=-1.0)
    with pytest.raises(TypeError, match="Gaussian data"):
        lk.gaussian_likelihood(Denoiser(MIX2, VP()), X2, 1e-3, 1.0)
    with pytest.raises(TypeError, match="denoiser"):
        lk.pf_ode_likelihood(lambda x, t: x, X2, 1e-3, 1.0)
    with pytest.raises(ValueError, match="probe"):
        lk.hutchinson_moments(np.eye(2), "sphere")
    with pytest.raises(ValueError, match="m must be"):
        lk.hutchinson_moments(np.eye(2), "gaussian", 0)
    with pytest.raises(ValueError, match="z must have shape"):
        lk.hutchinson_estimate(np.eye(2), np.ones((3, 3)))
    with pytest.raises(ValueError, match="convention"):
        lk.bits_per_dim(0.0, 2, "[0,256]")
    with pytest.raises(ValueError, match="dim"):
        lk.bits_per_dim(0.0, 0)
