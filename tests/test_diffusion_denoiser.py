"""The exact denoiser: against refscore's noised mixtures (an independent code path), the Gaussian closed
form, Tweedie's identities, quadrature, finite-difference Jacobians; the parametrisation converters and EDM's
preconditioning."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from refscore.distributions import Gaussian, GaussianMixture, StudentT
from refscore.diffusion.denoiser import Denoiser
from refscore.diffusion.parametrisations import (PARAMETRISATIONS, convert_prediction, edm_preconditioning,
                                                 from_x0_eps, to_x0_eps)
from refscore.diffusion.schedules import EDM, VE, VP, Flow, SubVP, VPDiscrete

from strategies import gaussian_mixtures, points

KINDS = list(PARAMETRISATIONS)

MIX = GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 0.5], [1.5, 1.0], [0.0, -2.5]],
                      [[[0.5, 0.1], [0.1, 0.3]], [[1.0, -0.4], [-0.4, 0.8]], [[0.05, 0.0], [0.0, 2.0]]])
GAUSS = Gaussian([0.7, -0.3], [[2.0, 0.6], [0.6, 0.5]])
SCHEDULES = {"vp": (VP(), [0.02, 0.3, 0.7, 0.98]), "subvp": (SubVP(), [0.05, 0.5, 0.9]),
             "ve": (VE(0.01, 50.0), [0.1, 0.5, 0.9]), "edm": (EDM(), [0.01, 0.4, 3.0, 60.0]),
             "flow": (Flow(), [0.05, 0.5, 0.95]), "ddpm": (VPDiscrete(), [3.5, 400.2, 990.7])}
X = np.random.default_rng(3).standard_normal((5, 2)) * 2.0


def _noised(data, a, s):
    """The law of alpha x0 + sigma eps as a refscore GaussianMixture, built from the data's parameters."""
    if isinstance(data, Gaussian):
        w, mu, cov = [1.0], data.mean[None], data.cov[None]
    else:
        w, mu, cov = data.weights, data.means, data.covs
    d = mu.shape[1]
    return GaussianMixture(w, a * mu, a * a * cov + s * s * np.eye(d))


def _scale(sched, t):
    return sched.alpha(t), sched.sigma(t)


# ------------------------------------------------------------------ values against independent code
@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("data", [MIX, GAUSS], ids=["mixture", "gaussian"])
def test_score_logpdf_and_hessian_equal_refscores_noised_mixture(name, data):
    sched, times = SCHEDULES[name]
    D = Denoiser(data, sched)
    for t in times:
        a, s = _scale(sched, t)
        ref = _noised(data, a, s)
        x = a * X  # points where the noised law lives
        # two implementations of the same log-sum-exp formulas (eigenbasis here, Cholesky there): 1e-10
        # relative covers round-off amplified by condition numbers up to ~1e4 of alpha^2 Sigma + sigma^2 I
        np.testing.assert_allclose(D.logpdf(x, t), ref.logpdf(x), rtol=1e-10)
        np.testing.assert_allclose(D.score(x, t), ref.score(x), rtol=1e-9, atol=1e-9 * np.abs(ref.score(x)).max())
        H = ref.score_jacobian(x)
        np.testing.assert_allclose(D.score_jacobian(x, t), H, rtol=1e-9, atol=1e-9 * np.abs(H).max())


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_gaussian_denoiser_is_the_closed_form_affine_map(name):
    sched, times = SCHEDULES[name]
    D = Denoiser(GAUSS, sched)
    mu, S = GAUSS.mean, GAUSS.cov
    for t in times:
        a, s = _scale(sched, t)
        C = a * a * S + s * s * np.eye(2)
        want = mu + (a * S @ np.linalg.solve(C, (X - a * mu).T)).T
        np.testing.assert_allclose(D.x0(X, t), want, rtol=1e-12, atol=1e-12)
        B, c = D.x0_affine(t)
        np.testing.assert_allclose(B, a * S @ np.linalg.inv(C), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(X @ B.T + c, want, rtol=1e-12, atol=1e-12)
        J = D.x0_jacobian(X, t)
        np.testing.assert_allclose(J, np.broadcast_to(B, J.shape), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(D.posterior_cov(X[:1], t)[0], S - a * a * S @ np.linalg.solve(C, S),
                                   rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_tweedie_mean_and_covariance(name):
    """x0 = (x + sigma^2 score)/alpha and Cov[x0|x] = sigma^2/alpha^2 (I + sigma^2 Hess log p_t), with the score
    and its Hessian from refscore.distributions (independent code); dx0/dx = alpha/sigma^2 Cov."""
    sched, times = SCHEDULES[name]
    D = Denoiser(MIX, sched)
    for t in times:
        a, s = _scale(sched, t)
        ref = _noised(MIX, a, s)
        x = a * X
        x0 = (x + s * s * ref.score(x)) / a
        # Tweedie divides by alpha (and alpha^2): near pure noise (alpha ~ 0.007 at VP t = 0.98) it amplifies
        # round-off by 1/alpha^2 ~ 2e4 on a sum of ~1/sigma^2 sized terms, hence the absolute terms
        np.testing.assert_allclose(D.x0(x, t), x0, rtol=1e-9, atol=1e-11 / a ** 2)
        cov = s * s / a ** 2 * (np.eye(2) + s * s * ref.score_jacobian(x))
        np.testing.assert_allclose(D.posterior_cov(x, t), cov, rtol=1e-8, atol=1e-11 / a ** 4)
        np.testing.assert_allclose(D.x0_jacobian(x, t), a / s ** 2 * D.posterior_cov(x, t), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(D.eps(x, t), -s * ref.score(x), rtol=1e-9, atol=1e-12)


def test_one_dimensional_posterior_moments_by_quadrature():
    """E[x0|x] and Var[x0|x] as integrals over x0 of p(x0) N(x; alpha x0, sigma^2) (scipy quad, relative 1e-12;
    the variance is a difference of two integrals ~ 1 apart, hence 1e-9)."""
    m = GaussianMixture([0.35, 0.65], [[-1.5], [2.0]], [[[0.3]], [[0.8]]])
    sched = VP()
    D = Denoiser(m, sched)
    for t, x in [(0.2, 0.3), (0.5, -0.8), (0.9, 0.05)]:
        a, s = _scale(sched, t)

        def joint(u, power):
            return u ** power * math.exp(float(m.logpdf([u])) - 0.5 * ((x - a * u) / s) ** 2)
        z = [integrate.quad(joint, -30, 30, args=(k,), epsabs=0, epsrel=1e-12, limit=200, points=[-1.5, 2.0])[0]
             for k in range(3)]
        mean, var = z[1] / z[0], z[2] / z[0] - (z[1] / z[0]) ** 2
        assert float(D.x0([x], t)[0]) == pytest.approx(mean, rel=1e-10, abs=1e-12)
        assert float(D.posterior_cov([x], t)[0, 0]) == pytest.approx(var, rel=1e-9)


# ------------------------------------------------------------------ Jacobians by finite differences
def _fd_jacobian(f, x, h=1e-5):
    """(n, d, d) central differences with one Richardson step; truncation O(h^4)."""
    cols = []
    for e in np.eye(x.shape[1]):
        d1 = (f(x + h * e) - f(x - h * e)) / (2 * h)
        d2 = (f(x + h / 2 * e) - f(x - h / 2 * e)) / h
        cols.append((4 * d2 - d1) / 3)
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("kind", KINDS)
def test_prediction_jacobians_and_divergences_match_finite_differences(name, kind):
    sched, times = SCHEDULES[name]
    D = Denoiser(MIX, sched)
    for t in times:
        a, _ = _scale(sched, t)
        x = a * X
        J = D.prediction_jacobian(kind, x, t)
        # step 1e-5 relative to the noised law's scale; Richardson leaves truncation ~1e-15 relative and
        # cancellation ~1e-16 |value| / 1e-5: rtol 1e-6 of the Jacobian's largest entry bounds both
        scale = max(a, sched.sigma(t))
        fd = _fd_jacobian(lambda u: D.predict(kind, u, t), x, 1e-5 * scale)
        ref = np.abs(J).max() + np.abs(D.predict(kind, x, t)).max() / scale
        np.testing.assert_allclose(J, fd, rtol=0, atol=1e-6 * ref, err_msg=f"{name} t={t}")
        np.testing.assert_allclose(D.divergence(kind, x, t), np.trace(fd, axis1=1, axis2=2), rtol=0,
                                   atol=2e-6 * ref)
        assert np.allclose(J, np.swapaxes(J, 1, 2), rtol=1e-12, atol=1e-12 * np.abs(J).max())


# ------------------------------------------------------------------ the five parametrisations
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_velocity_is_the_probability_flow_drift(name):
    """u = f x - g^2/2 score, with f and g^2 from the schedule (the SDE side), against alpha' x0 + sigma' eps."""
    sched, times = SCHEDULES[name]
    D = Denoiser(MIX, sched)
    for t in times:
        x = sched.alpha(t) * X
        want = sched.f(t) * x - 0.5 * sched.g2(t) * D.score(x, t)
        np.testing.assert_allclose(D.velocity(x, t), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_flow_velocity_is_the_conditional_mean_of_eps_minus_x0():
    D = Denoiser(MIX, Flow())
    for t in (0.1, 0.5, 0.9, 1.0):
        x = (1 - t) * X + 0.3
        np.testing.assert_allclose(D.velocity(x, t), D.eps(x, t) - D.x0(x, t), rtol=1e-12, atol=1e-13)
    # at t = 1 (pure noise) the posterior is the prior: x0 is the data mean.  The responsibilities come out of
    # log-sum-exp of logits holding |x|^2/2 ~ 10, whose round-off (~1e-15) moves r by ~1e-14 relative
    np.testing.assert_allclose(D.x0(X, 1.0), np.broadcast_to(MIX.weights @ MIX.means, X.shape), rtol=1e-13,
                               atol=1e-14)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_conversion_between_exact_predictions_is_exact(name):
    sched, times = SCHEDULES[name]
    D = Denoiser(MIX, sched)
    for t in times:
        x = sched.alpha(t) * X
        a, s, da, ds = sched.alpha(t), sched.sigma(t), sched.d_alpha(t), sched.d_sigma(t)
        preds = {k: D.predict(k, x, t) for k in KINDS}
        for src, dst in itertools.permutations(KINDS, 2):
            got = convert_prediction(preds[src], src, dst, x, a, s, da, ds)
            # a conversion divides by alpha, sigma or alpha sigma' - sigma alpha' once: relative 1e-12 of the
            # largest term involved (|x|/min(alpha, sigma) bounds them)
            tol = 1e-12 * (np.abs(x).max() + np.abs(preds[src]).max()) / min(a, s, 1.0) ** 2
            np.testing.assert_allclose(got, preds[dst], rtol=0, atol=tol, err_msg=f"{src}->{dst} t={t}")


def test_v_and_eps_conversions_match_diffusers_ddim_step():
    """diffusers DDIMScheduler.step (scheduling_ddim.py), transcribed: for v_prediction,
    pred_original_sample = sqrt(ab) x - sqrt(1 - ab) v and pred_epsilon = sqrt(ab) v + sqrt(1 - ab) x;
    for epsilon, pred_original_sample = (x - sqrt(1 - ab) eps) / sqrt(ab); get_velocity is sqrt(ab) eps - sqrt(1-ab) x0."""
    ab = 0.37
    x, v, e = np.array([0.4, -1.2]), np.array([0.9, 0.1]), np.array([-0.3, 0.8])
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    x0, eps = to_x0_eps("v", v, x, a, s)
    np.testing.assert_allclose(x0, a * x - s * v, rtol=1e-15)
    np.testing.assert_allclose(eps, a * v + s * x, rtol=1e-15)
    np.testing.assert_allclose(to_x0_eps("eps", e, x, a, s)[0], (x - s * e) / a, rtol=1e-15)
    np.testing.assert_allclose(from_x0_eps("v", x0, e, x, a, s), a * e - s * x0, rtol=1e-15)


def test_round_trips_through_every_kind_with_per_point_coefficients():
    rng = np.random.default_rng(5)
    x, p = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    a, s = rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 4)
    da, ds = -rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 4)
    for src, dst in itertools.permutations(KINDS, 2):
        there = convert_prediction(p, src, dst, x, a, s, da, ds)
        back = convert_prediction(there, dst, src, x, a, s, da, ds)
        np.testing.assert_allclose(back, p, rtol=1e-11, atol=1e-11)


def test_conversions_refuse_a_division_by_zero():
    with pytest.raises(ValueError, match="sigma must be non-zero"):
        convert_prediction([1.0], "x0", "eps", [1.0], 1.0, 0.0)
    with pytest.raises(ValueError, match="alpha must be non-zero"):
        convert_prediction([1.0], "eps", "x0", [1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match="d_alpha is needed"):
        convert_prediction([1.0], "x0", "velocity", [1.0], 0.5, 0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        to_x0_eps("noise", [1.0], [1.0], 0.5, 0.5)


# ------------------------------------------------------------------ far from the data, and the edges
def test_far_from_the_data_the_nearest_component_takes_over():
    """Far out along one direction, the responsibilities go to the component with the largest noised log-density
    there (found with refscore.distributions at |x| = 1e6, where nothing overflows), and every prediction stays
    finite even where |x|^2 overflows float64 (1e200)."""
    D = Denoiser(MIX, VP())
    t = 0.3
    a, s = _scale(VP(), t)
    ref = _noised(MIX, a, s)
    probe = np.array([[1e6, 0.3e6]])
    j = int(np.argmax([float(GaussianMixture([1.0], ref.means[i:i + 1], ref.covs[i:i + 1]).logpdf(probe)[0])
                       + math.log(MIX.weights[i]) for i in range(3)]))
    single = Denoiser(Gaussian(MIX.means[j], MIX.covs[j]), VP())
    for far in (1e6, 1e30, 1e200):
        x = np.array([[far, 0.3 * far]])
        out = {k: D.predict(k, x, t) for k in KINDS}
        assert all(np.all(np.isfinite(v)) for v in out.values())
        assert np.all(np.isfinite(D.x0_jacobian(x, t)))
        np.testing.assert_allclose(out["x0"], single.x0(x, t), rtol=1e-12)


def test_edges_of_the_time_domain():
    D = Denoiser(MIX, EDM())
    x = X[:2]
    np.testing.assert_allclose(D.x0(x, 0.0), x, rtol=1e-15)  # no noise: x0 = x
    np.testing.assert_array_equal(D.eps(x, 0.0), 0.0)
    Dd = Denoiser(MIX, VPDiscrete(rescale_betas_zero_snr=True))  # alpha = 0 at the last timestep
    np.testing.assert_allclose(Dd.x0(x, 999.0), np.broadcast_to(MIX.weights @ MIX.means, x.shape), rtol=1e-13,
                               atol=1e-14)  # responsibilities through log-sum-exp, as in the flow test
    np.testing.assert_allclose(Dd.eps(x, 999.0), x, rtol=1e-14)
    assert np.all(Dd.x0_jacobian(x, 999.0) == 0.0)
    with pytest.raises(ValueError, match="finite d_sigma"):
        Denoiser(MIX, VP()).velocity(x, 0.0)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), u=st.floats(0.02, 0.98))
def test_tweedie_on_random_mixtures(data, u):
    m = data.draw(gaussian_mixtures(max_k=3))
    x0s = data.draw(points(m.dim, max_n=3))
    sched = VP()
    D = Denoiser(m, sched)
    a, s = _scale(sched, u)
    x = a * x0s
    sc = D.score(x, u)
    np.testing.assert_allclose(D.x0(x, u), (x + s * s * sc) / a, rtol=1e-8, atol=1e-8 / a ** 2)
    J = D.x0_jacobian(x, u)
    np.testing.assert_allclose(J, a / s ** 2 * D.posterior_cov(x, u), rtol=1e-8, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(D.posterior_cov(x, u)) > -1e-10)  # a covariance


# ------------------------------------------------------------------ EDM preconditioning
def test_edm_preconditioning_table_1_by_hand():
    p = edm_preconditioning(np.array([0.5, 2.0]), 0.5)
    # sigma = 2, sigma_d = 0.5: sigma^2 + sigma_d^2 = 4.25
    np.testing.assert_allclose(p.c_skip, [0.5, 0.25 / 4.25], rtol=1e-15)
    np.testing.assert_allclose(p.c_out, [0.25 / math.sqrt(0.5), 1.0 / math.sqrt(4.25)], rtol=1e-15)
    np.testing.assert_allclose(p.c_in, [1 / math.sqrt(0.5), 1 / math.sqrt(4.25)], rtol=1e-15)
    np.testing.assert_allclose(p.c_noise, [0.25 * math.log(0.5), 0.25 * math.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(p.weight, [0.5 / 0.0625, 4.25 / 1.0], rtol=1e-15)


@pytest.mark.parametrize("sigma", [0.002, 0.3, 1.0, 80.0])
def test_edm_preconditioning_follows_from_its_requirements(sigma):
    """Karras et al. App. B.6: unit input variance, c_skip minimising the effective target's variance, unit
    target variance, and lambda c_out^2 = 1 (each from the data variance sigma_d^2, derived here)."""
    sd = 0.7
    p = edm_preconditioning(sigma, sd)
    assert p.c_in ** 2 * (sd ** 2 + sigma ** 2) == pytest.approx(1.0, rel=1e-14)

    def target_var(c):  # Var[(x0 - c (x0 + n)) / 1] = (1 - c)^2 sd^2 + c^2 sigma^2
        return (1 - c) ** 2 * sd ** 2 + c ** 2 * sigma ** 2
    c = float(p.c_skip)
    assert (target_var(c + 1e-4) - target_var(c - 1e-4)) / 2e-4 == pytest.approx(0.0, abs=1e-10)
    assert target_var(c) / p.c_out ** 2 == pytest.approx(1.0, rel=1e-13)
    assert p.weight * p.c_out ** 2 == pytest.approx(1.0, rel=1e-14)


def test_edm_preconditioning_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        edm_preconditioning(0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        edm_preconditioning(1.0, -0.5)


def test_denoiser_bad_input():
    with pytest.raises(TypeError, match="data must be a refscore Gaussian or GaussianMixture"):
        Denoiser(StudentT([0.0], [[1.0]], 3.0), VP())
    with pytest.raises(TypeError, match="schedule"):
        Denoiser(GAUSS, "vp")
    D = Denoiser(GAUSS, VP())
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        D.x0(X, [0.1, 0.2])
    with pytest.raises(ValueError, match="t must lie"):
        D.x0(X, 1.5)
    with pytest.raises(ValueError, match="x must have shape"):
        D.x0(np.ones((2, 3)), 0.5)
    with pytest.raises(TypeError, match="Gaussian data"):
        Denoiser(MIX, VP()).x0_affine(0.5)
    with pytest.raises(ValueError, match=r"t must give sigma\(t\) <= 1e\+150"):
        Denoiser(MIX, EDM()).x0(X, 1e160)  # sigma^2 would overflow: an error, not NaN
    assert np.all(np.isfinite(Denoiser(MIX, EDM()).x0(X * 1e140, 1e150)))
