"""Continuous-time DSM (refscore.diffusion.dsm): the loss against refscore.losses.dsm, the exact score attaining
the irreducible minimum (closed form against the denoiser's posterior covariance, and for a mixture against
quadrature of that covariance), the excess loss of a perturbed score, the minimiser found by an optimiser,
the weightings and time rules, bad input."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from refscore import losses
from refscore.diffusion.denoiser import Denoiser
from refscore.diffusion.dsm import (WEIGHTINGS, dsm_loss, dsm_minimum, irreducible, population_dsm, time_rule,
                                    weight)
from refscore.diffusion.parametrisations import edm_preconditioning
from refscore.diffusion.schedules import EDM, VE, VP, Flow, SubVP
from refscore.distributions import Gaussian, GaussianMixture
from refscore.models import GaussianModel
from refscore.quadrature import gauss_hermite_nodes

DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
SCHEDULES = {"edm": EDM(), "vp": VP(), "subvp": SubVP(), "ve": VE(), "flow": Flow()}


def _rule(name, n=6):
    sched = SCHEDULES[name]
    if name == "edm":
        return time_rule(sched, "edm_lognormal", n)
    return time_rule(sched, "uniform", n, t_lo=1e-3, t_hi=0.99 if name == "flow" else 1.0)


def test_dsm_loss_at_one_level_on_edm_is_twice_refscore_losses_dsm():
    """On EDM (alpha = 1, sigma = t) at one t with uniform weight: E||s(x + t eps) + eps/t||^2 = 2 losses.dsm."""
    model = GaussianModel(2)
    theta = model.init(3)
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((50, 2)), rng.standard_normal((50, 2))
    got = dsm_loss(lambda y, t: model.score(theta, y), EDM(), x, 0.7, eps)
    assert got == pytest.approx(2 * losses.dsm(model, theta, x, 0.7, eps), rel=1e-13)
    # per-sample times: the mean of the per-time losses with their weights
    ts = np.repeat([0.5, 1.5], 25)
    lam = weight("sigma2", EDM(), ts)
    want = np.mean([lam[i] * np.sum((model.score(theta, x[i:i + 1] + ts[i] * eps[i:i + 1]) + eps[i] / ts[i]) ** 2)
                    for i in range(50)])
    assert dsm_loss(lambda y, t: model.score(theta, y), EDM(), x, ts, eps, "sigma2") == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_the_exact_score_attains_the_irreducible_minimum(name, weighting):
    """The population loss of the exact score (Gauss-Hermite over (x0, eps), exact for its affine integrand)
    equals the closed-form minimum sum_k w_k lambda_k (d/sigma^2 - tr C^-1) to round-off."""
    sched = SCHEDULES[name]
    rule = _rule(name)
    exact = Denoiser(DATA, sched).score
    got = population_dsm(exact, sched, DATA, weighting, rule)
    assert got == pytest.approx(dsm_minimum(sched, DATA, weighting, rule), rel=1e-11)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_irreducible_term_is_the_posterior_covariance_of_eps(name):
    """c(t) = E tr Cov[eps/sigma | x_t] = (alpha^2/sigma^4) tr Cov[x0 | x_t] (eps = (x_t - alpha x0)/sigma), the
    posterior covariance from the denoiser (constant in x for Gaussian data): an independent route."""
    sched = SCHEDULES[name]
    den = Denoiser(DATA, sched)
    for t in _rule(name)[0]:
        a, s = sched.alpha(t), sched.sigma(t)
        want = a * a / s ** 4 * np.trace(den.posterior_cov(np.array([0.3, -0.2]), t))
        assert irreducible(sched, DATA, t) == pytest.approx(want, rel=1e-11)


def test_mixture_minimum_by_two_quadratures():
    """1-D two-component mixture: the population loss of the exact mixture score (quadrature over (x0, eps)) and
    E_{x ~ p_t} (alpha^2/sigma^4) Cov[x0 | x] (quadrature over the noised mixture) agree.  Neither integrand is a
    polynomial: the first converges by order 160 (to ~1e-14 between orders 160 and 250); the second is peaked
    in the valley between the components at small t and reaches ~1e-9 at order 250, hence 1e-8."""
    mix = GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [[[0.2]], [[0.5]]])
    vp = VP()
    den = Denoiser(mix, vp)
    for t in (0.1, 0.3, 0.8):
        a, s = vp.alpha(t), vp.sigma(t)
        got = population_dsm(den.score, vp, mix, times=([t], [1.0]), order=160)
        noised = GaussianMixture(mix.weights, a * mix.means, a * a * mix.covs + s * s)
        x, w = gauss_hermite_nodes(noised, 250)
        want = a * a / s ** 4 * float(w @ den.posterior_cov(x, t)[:, 0, 0])
        assert got == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("name", ["vp", "edm", "flow"])
def test_excess_loss_of_a_perturbed_score(name):
    """L(s* + delta) - L* = sum_k w_k lambda_k E_{x ~ p_t}||delta||^2 with delta = B x + c: E||Bx + c||^2 =
    ||B alpha mu + c||^2 + tr(B C B^T), C = alpha^2 Sigma + sigma^2 I (Vincent's identity, per time)."""
    sched = SCHEDULES[name]
    rule = _rule(name)
    B, c = np.array([[0.3, -0.1], [0.2, 0.05]]), np.array([0.1, -0.2])
    exact = Denoiser(DATA, sched).score
    got = population_dsm(lambda x, t: exact(x, t) + x @ B.T + c, sched, DATA, "sigma2", rule)
    extra = 0.0
    for t, w in zip(*rule):
        a, s = sched.alpha(t), sched.sigma(t)
        C = a * a * DATA.cov + s * s * np.eye(2)
        m = B @ (a * DATA.mean) + c
        extra += w * s * s * (m @ m + np.trace(B @ C @ B.T))
    assert got - dsm_minimum(sched, DATA, "sigma2", rule) == pytest.approx(extra, rel=1e-10)


def test_the_minimiser_is_the_exact_score():
    """Minimise the population loss over the Gaussian-score family s(x, t) = -(x - alpha m)/(alpha^2 v + sigma^2)
    (1-D data N(0.5, 0.8)): the optimum is m = 0.5, v = 0.8, and the minimum is the irreducible one."""
    data = Gaussian([0.5], [[0.8]])
    vp = VP()
    rule = time_rule(vp, "uniform", 12, t_lo=1e-2)

    def fam(theta):
        m, v = theta[0], math.exp(theta[1])
        return lambda x, t: -(x - vp.alpha(t) * m) / (vp.alpha(t) ** 2 * v + vp.sigma(t) ** 2)

    res = minimize(lambda th: population_dsm(fam(th), vp, data, "likelihood", rule), [0.0, 0.0],
                   method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    # Nelder-Mead on a smooth bowl: parameters to ~1e-7
    assert res.x[0] == pytest.approx(0.5, abs=1e-6)
    assert math.exp(res.x[1]) == pytest.approx(0.8, abs=1e-6)
    assert res.fun == pytest.approx(dsm_minimum(vp, data, "likelihood", rule), rel=1e-10)


def test_weightings():
    """sigma2 = sigma^2, likelihood = g^2, and 'edm' makes the loss EDM's lambda(sigma)||D - x0||^2 with
    D = (x + sigma^2 s)/alpha (Tweedie in the schedule's variable), for any s."""
    vp = VP()
    t = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(weight("sigma2", vp, t), vp.sigma(t) ** 2, rtol=1e-15)
    np.testing.assert_allclose(weight("likelihood", vp, t), vp.g2(t), rtol=1e-15)
    assert weight("uniform", vp, 0.3) == 1.0
    rng = np.random.default_rng(1)
    for tk in t:
        a, s = vp.alpha(tk), vp.sigma(tk)
        x0, eps, sc = rng.standard_normal((3, 2))
        x = a * x0 + s * eps
        D = (x + s * s * sc) / a
        lam_edm = edm_preconditioning(s / a, 0.7).weight
        assert weight("edm", vp, tk, 0.7) * np.sum((sc + eps / s) ** 2) == pytest.approx(
            lam_edm * np.sum((D - x0) ** 2), rel=1e-12)


def test_time_rules():
    vp, edm = VP(), EDM()
    t, w = time_rule(vp, "uniform", 48, t_lo=1e-5, t_hi=1.0)
    for k in (0, 1, 3):
        assert float(w @ t ** k) == pytest.approx((1 - 1e-5 ** (k + 1)) / ((k + 1) * (1 - 1e-5)), rel=1e-13)
    assert float(w @ (1 / t)) == pytest.approx(math.log(1e5) / (1 - 1e-5), rel=1e-13)
    t, w = time_rule(edm, "edm_lognormal", 48, P_mean=-1.2, P_std=1.2)
    assert float(w @ t) == pytest.approx(math.exp(-1.2 + 0.72), rel=1e-12)  # E sigma of a lognormal
    t, w = time_rule(vp, "edm_lognormal", 8, P_mean=-1.2, P_std=1.2)  # largest node sigma/alpha ~ 30 < 157
    sbar = vp.sigma(t) / vp.alpha(t)
    assert float(w @ np.log(sbar)) == pytest.approx(-1.2, rel=1e-12)


def test_bad_input():
    vp = VP()
    with pytest.raises(ValueError, match="weighting must be one of"):
        weight("snr", vp, 0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        time_rule(vp, "beta")
    with pytest.raises(ValueError, match="t_lo must be finite and > 0"):
        time_rule(vp, "uniform", t_lo=0.0)
    with pytest.raises(ValueError, match="t_hi must be finite and > t_lo"):
        time_rule(EDM(), "uniform")
    with pytest.raises(ValueError, match="outside VP"):
        time_rule(vp, "edm_lognormal", 64, P_mean=3.0, P_std=3.0)
    with pytest.raises(TypeError, match="closed form for Gaussian data only"):
        irreducible(vp, GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]]), 0.5)
    with pytest.raises(ValueError, match="sigma\\(t\\) > 0"):
        irreducible(vp, DATA, 0.0)
    with pytest.raises(ValueError, match="shaped like x"):
        population_dsm(lambda x, t: x[:, :1], vp, DATA, times=([0.5], [1.0]))
    with pytest.raises(FloatingPointError, match="non-finite"):
        population_dsm(lambda x, t: x * np.nan, vp, DATA, times=([0.5], [1.0]))
    with pytest.raises(ValueError, match="x0 and eps must both have shape"):
        dsm_loss(lambda x, t: x, vp, np.zeros((3, 2)), 0.5, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="sigma\\(t\\) > 0"):
        dsm_loss(lambda x, t: x, vp, np.zeros((3, 2)), 0.0, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="Gaussian or GaussianMixture"):
        population_dsm(lambda x, t: x, vp, np.zeros(2))
