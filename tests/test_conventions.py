"""Tests of refscore.conventions: every constant and conversion, each against an independent route.

Constants: closed forms with ``np.linalg.inv`` written here, scipy ``quad`` in 1-D,
and the losses themselves integrated exactly on Gauss–Hermite nodes (a Gaussian
model on Gaussian data has polynomial integrands of degree 2).  Conversions:
round trips, exact per-sample identities on the losses, angle integrals over
the sphere, and identical Langevin iterates under the two step conventions.

Third-party conventions: each ledger row taken from released code is checked
against a plain-NumPy *transcription* of that code's formula written here
(NCSN / NCSNv2 ``anneal_Langevin_dynamics``, score_sde's correctors and
``get_sde_loss_fn``, NCSN's ``anneal_sliced_score_estimation_vr``, kgof's
``KernelSteinTest``, stein_thinning's ``vfk0_imq`` and ``ksd``, JEM's SGLD),
fed the same noise as refscore, and compared with refscore plus the conversion.
The sources are cited in refscore/conventions.py.
"""
import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from refscore import conventions as cv
from refscore import losses, metrics
from refscore.distributions import Gaussian, GaussianMixture, StudentT
from refscore.models import GaussianMixtureModel, LinearScore
from refscore.noise import normal
from refscore.quadrature import gauss_hermite_nodes
from refscore.sampling import annealed_langevin, ula


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def random_gaussian(seed, d):
    rng = np.random.default_rng(seed)
    return Gaussian(rng.normal(size=d), random_spd(rng, d))


def mixture_1d():
    return GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [[[0.5]], [[1.2]]])


def mixture_2d():
    return GaussianMixture(
        [0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], [[[0.8, 0.2], [0.2, 0.6]], [[1.0, -0.3], [-0.3, 0.9]]]
    )


def random_linear(seed, d):
    """A LinearScore with a random non-symmetric A: its Jacobian is A."""
    rng = np.random.default_rng(seed)
    return LinearScore(d), rng.normal(size=d * d + d) * 0.7


def quad_mean(per_point, weights):
    return float(weights @ per_point)


# --------------------------------------------------------------- ESM − ISM
@pytest.mark.parametrize("d", [1, 2, 3])
def test_esm_minus_ism_gaussian_closed_form(d):
    g = random_gaussian(d, d)
    want = 0.5 * np.trace(np.linalg.inv(g.cov))
    # 1e-12: cho_solve vs LU inverse of a well-conditioned SPD matrix
    assert cv.esm_minus_ism(g) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_esm_minus_ism_equals_losses_on_quadrature_nodes(d):
    """ESM − ISM at a random θ, both integrated exactly (degree-2 integrands)."""
    g = random_gaussian(10 + d, d)
    model, theta = random_linear(d, d)
    nodes, w = gauss_hermite_nodes(g, order=4)  # exact up to degree 7
    esm = quad_mean(losses.esm(model, theta, nodes, g.score, reduction="none"), w)
    ism = quad_mean(losses.ism(model, theta, nodes, reduction="none"), w)
    # 1e-10 abs: two O(10) quadrature sums whose difference is taken
    assert esm - ism == pytest.approx(cv.esm_minus_ism(g), abs=1e-10)
    # and it does not depend on θ
    theta2 = random_linear(d + 50, d)[1]
    esm2 = quad_mean(losses.esm(model, theta2, nodes, g.score, reduction="none"), w)
    ism2 = quad_mean(losses.ism(model, theta2, nodes, reduction="none"), w)
    assert esm2 - ism2 == pytest.approx(esm - ism, abs=1e-10)


def test_esm_minus_ism_mixture_by_scipy_quad_1d():
    mix = mixture_1d()

    def f(t):
        x = np.array([[t]])
        return 0.5 * mix.score(x)[0, 0] ** 2 * np.exp(mix.logpdf(x)[0])

    want, _ = integrate.quad(f, -15, 15, epsabs=1e-13, limit=200)
    # adaptive quad: error estimate ~1e-14.  Gauss–Hermite on a mixture score
    # (not a polynomial) converges slowly: relative error 4e-6 at order 64,
    # 1e-10 at 200; the default for 1-D mixtures is 256
    assert cv.esm_minus_ism(mix) == pytest.approx(want, rel=1e-9)
    # negative control: the generic order 64 is visibly worse, so the tolerance bites
    assert abs(cv.esm_minus_ism(mix, order=64) - want) > 1e-6


def test_esm_minus_ism_mixture_equals_losses_2d():
    """A nonlinear model on a 2-D mixture: the identity holds by integration by parts."""
    mix = mixture_2d()
    model = GaussianMixtureModel(2, 2)
    theta = model.init(3)
    nodes, w = gauss_hermite_nodes(mix, order=96)
    esm = quad_mean(losses.esm(model, theta, nodes, mix.score, reduction="none"), w)
    ism = quad_mean(losses.ism(model, theta, nodes, reduction="none"), w)
    # 1e-10: non-polynomial integrands; measured quadrature error of ESM − ISM vs
    # the constant: 5e-5 (order 16), 1e-7 (32), 7e-11 (64), 4e-14 (96)
    assert esm - ism == pytest.approx(cv.esm_minus_ism(mix), abs=1e-10)


# ---------------------------------------------------------- DSM − ESM(p_σ)
@pytest.mark.parametrize("d, sigma", [(1, 0.3), (2, 1.0), (3, 2.5)])
def test_dsm_minus_esm_gaussian_closed_form(d, sigma):
    g = random_gaussian(20 + d, d)
    want = 0.5 * (d / sigma**2 - np.trace(np.linalg.inv(g.cov + sigma**2 * np.eye(d))))
    # 1e-12 rel: well-conditioned inverses
    assert cv.dsm_minus_esm(g, sigma) == pytest.approx(want, rel=1e-12)
    assert cv.dsm_minus_esm(g, sigma) > 0  # DSM's extra variance


@pytest.mark.parametrize("d, sigma", [(1, 0.5), (2, 1.3)])
def test_dsm_minus_esm_equals_losses_by_joint_quadrature(d, sigma):
    """DSM over (x, z) ~ N(μ, Σ) ⊗ N(0, I) and ESM over p_σ, both exact, at a random θ."""
    g = random_gaussian(30 + d, d)
    model, theta = random_linear(40 + d, d)
    joint_cov = np.zeros((2 * d, 2 * d))
    joint_cov[:d, :d] = g.cov
    joint_cov[d:, d:] = np.eye(d)
    joint = Gaussian(np.concatenate([g.mean, np.zeros(d)]), joint_cov)
    nodes, w = gauss_hermite_nodes(joint, order=4)  # DSM integrand: degree 2 in (x, z)
    dsm = quad_mean(losses.dsm(model, theta, nodes[:, :d], sigma, nodes[:, d:], reduction="none"), w)
    ps = g.noised(sigma)
    nodes_s, w_s = gauss_hermite_nodes(ps, order=4)
    esm = quad_mean(losses.esm(model, theta, nodes_s, ps.score, reduction="none"), w_s)
    ism = quad_mean(losses.ism(model, theta, nodes_s, reduction="none"), w_s)
    # 1e-9 abs: sums of O(1/σ²) terms, exact quadrature, round-off only
    assert dsm - esm == pytest.approx(cv.dsm_minus_esm(g, sigma), abs=1e-9)
    assert dsm - ism == pytest.approx(cv.dsm_minus_ism_noised(d, sigma), abs=1e-9)


def test_dsm_minus_esm_mixture_by_scipy_quad_1d():
    mix, sigma = mixture_1d(), 0.7
    ps = mix.noised(sigma)

    def f(t):
        x = np.array([[t]])
        return ps.score(x)[0, 0] ** 2 * np.exp(ps.logpdf(x)[0])

    e_sq, _ = integrate.quad(f, -15, 15, epsabs=1e-13, limit=200)
    # as in the ESM − ISM mixture test: both routes accurate to ~1e-10 (p_σ is
    # smoother than p, so Gauss–Hermite converges faster)
    assert cv.dsm_minus_esm(mix, sigma) == pytest.approx(0.5 * (1 / sigma**2 - e_sq), rel=1e-9)


@pytest.mark.parametrize("sigma", [0.2, 1.0, 3.0])
def test_dsm_minus_ism_noised_is_sum_of_the_two_constants(sigma):
    mix = mixture_2d()
    total = cv.dsm_minus_esm(mix, sigma) + cv.esm_minus_ism(mix.noised(sigma))
    # the data-dependent parts cancel exactly in exact arithmetic; quadrature
    # evaluates the same integral twice, so only round-off remains
    assert total == pytest.approx(cv.dsm_minus_ism_noised(2, sigma), rel=1e-12)
    assert cv.dsm_minus_ism_noised(2, sigma) == pytest.approx(1 / sigma**2, rel=1e-15)


# ------------------------------------------------------------- projections
def test_expected_ssm_equals_ism_by_rademacher_enumeration():
    """E_v SSM = E_v SSM-VR = ISM per point, exactly, over all 2^d sign vectors."""
    d = 3
    model, theta = random_linear(5, d)
    x = np.random.default_rng(6).normal(size=(7, d))
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))  # (8, d)
    v = np.broadcast_to(signs[:, None, :], (len(signs), 7, d))
    ism = losses.ism(model, theta, x, reduction="none")
    # 1e-12: the average over the 8 sign vectors reproduces tr A and ‖s‖² exactly
    np.testing.assert_allclose(losses.ssm(model, theta, x, v, reduction="none"), ism, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(losses.ssm_vr(model, theta, x, v, reduction="none"), ism, rtol=1e-12, atol=1e-12)


def test_unit_circle_average_by_angle_integral():
    """d = 2: E over unit u of uuᵀ is I/2, so E uᵀAu = tr A / 2 and √2·u has E[vvᵀ] = I."""
    A = np.array([[1.3, -0.4], [0.9, 2.2]])

    def quad_angle(f):
        return integrate.quad(f, 0.0, 2 * np.pi, epsabs=1e-13)[0] / (2 * np.pi)

    uAu = quad_angle(lambda t: np.array([np.cos(t), np.sin(t)]) @ A @ np.array([np.cos(t), np.sin(t)]))
    # quad on a trigonometric polynomial: accurate to round-off
    assert uAu == pytest.approx(np.trace(A) / 2, abs=1e-12)
    assert cv.sphere_unscaled_ssm_to_ism(uAu, 2) == pytest.approx(np.trace(A), abs=1e-12)
    c = cv.projection_scale("sphere", 2)
    cross = quad_angle(lambda t: (c * np.cos(t)) * (c * np.sin(t)))
    sq = quad_angle(lambda t: (c * np.cos(t)) ** 2)
    assert cross == pytest.approx(0.0, abs=1e-12) and sq == pytest.approx(1.0, abs=1e-12)


def test_unit_sphere_average_by_double_integral_3d():
    """d = 3: E over the unit sphere of uᵀAu = tr A / 3 (surface measure sin θ dθ dφ / 4π)."""
    A = np.array([[1.0, 0.3, -0.2], [0.1, 2.0, 0.5], [0.4, -0.6, -0.7]])

    def f(phi, theta):
        u = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        return u @ A @ u * np.sin(theta) / (4 * np.pi)

    val, _ = integrate.dblquad(f, 0.0, np.pi, 0.0, 2 * np.pi, epsabs=1e-12)
    # smooth trigonometric integrand: dblquad accurate to ~1e-12
    assert val == pytest.approx(np.trace(A) / 3, abs=1e-10)
    assert cv.sphere_unscaled_ssm_to_ism(val, 3) == pytest.approx(np.trace(A), abs=1e-9)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_projection_scale(d):
    assert cv.projection_scale("gaussian", d) == 1.0
    assert cv.projection_scale("rademacher", d) == 1.0
    assert cv.projection_scale("sphere", d) == pytest.approx(np.sqrt(d), rel=1e-15)
    # losses.projections("sphere") has norm exactly √d = projection_scale
    v = losses.projections(0, (5, d), kind="sphere")
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), cv.projection_scale("sphere", d), rtol=1e-14)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_sphere_unscaled_ssm_exact_per_sample(d):
    """SSM with √d·u is exactly d × SSM with unit u, point by point."""
    model, theta = random_linear(60 + d, d)
    rng = np.random.default_rng(d)
    x = rng.normal(size=(9, d))
    u = rng.normal(size=(3, 9, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    unit = losses.ssm(model, theta, x, u, reduction="none")
    scaled = losses.ssm(model, theta, x, np.sqrt(d) * u, reduction="none")
    # 1e-12: both terms are quadratic in v; only round-off differs
    np.testing.assert_allclose(cv.sphere_unscaled_ssm_to_ism(unit, d), scaled, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cv.ism_to_sphere_unscaled_ssm(scaled, d), unit, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_sphere_unscaled_ssm_vr_only_trace_term_scales(d):
    model, theta = random_linear(70 + d, d)
    rng = np.random.default_rng(d + 1)
    x = rng.normal(size=(9, d))
    u = rng.normal(size=(9, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    A = theta[: d * d].reshape(d, d)
    trace_term = np.einsum("ni,ij,nj->n", u, A, u)  # uᵀJu, J = A for an affine score
    s = model.score(theta, x)
    norm_term = 0.5 * np.einsum("ni,ni->n", s, s)
    # the unit-sphere SSM-VR is the sum of the two parts
    np.testing.assert_allclose(losses.ssm_vr(model, theta, x, u, reduction="none"), trace_term + norm_term, rtol=1e-12)
    scaled = losses.ssm_vr(model, theta, x, np.sqrt(d) * u, reduction="none")
    # 1e-12: exact identity up to round-off
    np.testing.assert_allclose(cv.sphere_unscaled_ssm_vr_to_ism(trace_term, norm_term, d), scaled, rtol=1e-12)
    np.testing.assert_allclose(
        cv.ism_to_sphere_unscaled_ssm_vr(d * trace_term, norm_term, d), trace_term + norm_term, rtol=1e-12
    )
    # negative control: scaling the whole unit-sphere SSM-VR by d is wrong here
    whole = d * losses.ssm_vr(model, theta, x, u, reduction="none")
    assert np.max(np.abs(whole - scaled)) > 1e-3


# -------------------------------------------------------------- DSM scales
@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0])
def test_dsm_sigma4_and_ncsn_scalings_on_arrays(sigma):
    d = 3
    model, theta = random_linear(80, d)
    rng = np.random.default_rng(81)
    x, z = rng.normal(size=(11, d)), rng.normal(size=(11, d))
    per = losses.dsm(model, theta, x, sigma, z, reduction="none")
    s = model.score(theta, x + sigma * z)
    sigma4_form = 0.5 * np.sum((sigma**2 * s + sigma * z) ** 2, axis=1)  # target −ε, ε = σz
    ncsn_form = 0.5 * np.sum((sigma * s + z) ** 2, axis=1)
    # 1e-12: same squares, rescaled; round-off only
    np.testing.assert_allclose(cv.dsm_from_sigma4_scaled(sigma4_form, sigma), per, rtol=1e-12)
    np.testing.assert_allclose(cv.sigma4_scaled_from_dsm(per, sigma), sigma4_form, rtol=1e-12)
    np.testing.assert_allclose(cv.dsm_from_ncsn(ncsn_form, sigma), per, rtol=1e-12)
    np.testing.assert_allclose(cv.ncsn_from_dsm(per, sigma), ncsn_form, rtol=1e-12)
    # eq. (6): ε ~ N(0, σ²I), ½‖s(x+ε) + ε/σ²‖², identical with ε = σz
    eps = sigma * z
    seed_form = 0.5 * np.sum((model.score(theta, x + eps) + eps / sigma**2) ** 2, axis=1)
    np.testing.assert_allclose(seed_form, per, rtol=1e-12)
    # ermongroup/ncsn losses/dsm.py, transcribed: anneal_dsm_score_estimation (target
    # −(x̃ − x)/σ², ½ summed squared residual × σ^anneal_power, anneal_power = 2) and
    # dsm (σ² × score plus the noise vector σz, half the squared norm)
    x_tilde = x + eps
    target = -1 / sigma**2 * (x_tilde - x)
    anneal = 0.5 * ((model.score(theta, x_tilde) - target) ** 2).sum(axis=-1) * sigma**2.0
    np.testing.assert_allclose(cv.dsm_from_ncsn(anneal, sigma), per, rtol=1e-12)
    energy_dsm = np.linalg.norm(sigma**2 * model.score(theta, x_tilde) + eps, axis=-1) ** 2 / 2.0
    np.testing.assert_allclose(cv.dsm_from_sigma4_scaled(energy_dsm, sigma), per, rtol=1e-12)


def test_dsm_scalings_accept_per_point_sigma():
    values = np.array([1.0, 2.0, 3.0])
    sig = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(cv.dsm_from_ncsn(values, sig), [4.0, 2.0, 0.75], rtol=1e-15)
    np.testing.assert_allclose(cv.dsm_from_sigma4_scaled(values, sig), [16.0, 2.0, 3.0 / 16], rtol=1e-15)


# ---------------------------------------------------------- Langevin steps
def gaussian_score(x):
    prec = np.array([[1.5, 0.4], [0.4, 0.8]])
    return -(x - np.array([1.0, -2.0])) @ prec


@pytest.mark.parametrize("lr", [1e-3, 0.05, 0.4])
def test_step_from_lr_gives_identical_iterates(lr):
    rng = np.random.default_rng(0)
    zs = rng.normal(size=(50, 6, 2))
    x_lr = x_eta = x_wrong = rng.normal(size=(6, 2))
    eta = cv.step_from_lr(lr)
    for z in zs:
        x_lr = x_lr + (lr / 2) * gaussian_score(x_lr) + np.sqrt(lr) * z
        x_eta = x_eta + eta * gaussian_score(x_eta) + np.sqrt(2 * eta) * z
        x_wrong = x_wrong + lr * gaussian_score(x_wrong) + np.sqrt(2 * lr) * z
    # 1e-12: the two updates are the same arithmetic up to the rounding of √(2·lr/2)
    np.testing.assert_allclose(x_eta, x_lr, rtol=1e-12, atol=1e-12)
    # negative control: taking η = lr gives a different chain
    assert np.max(np.abs(x_wrong - x_lr)) > 1e-3


@pytest.mark.parametrize("delta", [0.01, 0.3])
def test_step_from_noise_scale_gives_identical_iterates(delta):
    rng = np.random.default_rng(1)
    x_a = x_b = rng.normal(size=(4, 2))
    eta = cv.step_from_noise_scale(delta)
    for z in rng.normal(size=(30, 4, 2)):
        x_a = x_a + (delta**2 / 2) * gaussian_score(x_a) + delta * z
        x_b = x_b + eta * gaussian_score(x_b) + np.sqrt(2 * eta) * z
    # round-off only (see above)
    np.testing.assert_allclose(x_b, x_a, rtol=1e-12, atol=1e-12)


def test_ncsn_annealed_schedule_gives_identical_iterates():
    """NCSN Algorithm 1 and toy_runner.anneal_langevin_dynamics (α_i = ε σ_i²/σ_L²,
    x + α_i/2 s, then + √α_i z) vs refscore's η_i with step = ncsn_step(ε)."""
    eps = 0.1
    sigmas = np.geomspace(5.0, 0.1, 6)
    alphas = cv.ncsn_alphas(eps, sigmas)
    etas = cv.annealed_steps(cv.ncsn_step(eps), sigmas)
    # written out by hand: α_i = 0.1 (σ_i/0.1)², η_i = α_i / 2
    np.testing.assert_allclose(alphas, 0.1 * (sigmas / 0.1) ** 2, rtol=1e-14)
    np.testing.assert_allclose(etas, alphas / 2, rtol=1e-14)
    assert etas[-1] == pytest.approx(0.05, rel=1e-15)  # the toy's ε = 0.1 is step = 0.05
    rng = np.random.default_rng(2)
    x_n = x_r = rng.uniform(-8, 8, size=(5, 2))
    for i, sig in enumerate(sigmas):
        for z in rng.normal(size=(10, 5, 2)):
            s_n = gaussian_score(x_n) / (1 + sig**2)  # any σ-dependent score will do
            s_r = gaussian_score(x_r) / (1 + sig**2)
            x_n = x_n + (alphas[i] / 2) * s_n + np.sqrt(alphas[i]) * z
            x_r = x_r + etas[i] * s_r + np.sqrt(2 * etas[i]) * z
    # round-off only, 60 steps of a contracting map
    np.testing.assert_allclose(x_r, x_n, rtol=1e-11, atol=1e-11)


def test_annealed_steps_hand_example():
    np.testing.assert_allclose(cv.annealed_steps(0.05, [2.0, 1.0]), [0.2, 0.05], rtol=1e-15)
    np.testing.assert_allclose(cv.annealed_steps(1.0, [3.0]), [1.0], rtol=1e-15)


# ------------------------------------------- NCSN: paper vs released sampler
def _mixture_target_2d():
    return GaussianMixture(
        [0.4, 0.6], [[-1.5, 0.5], [1.0, -0.5]], [[[0.5, 0.1], [0.1, 0.4]], [[0.6, -0.2], [-0.2, 0.7]]]
    ).perturbed()


def _ncsn_code_transcription(target, x0, sigmas, step_lr, n_steps_each, seed, v2=False):
    """ermongroup/ncsn runners/anneal_runner.py anneal_Langevin_dynamics (v2=False) and
    ermongroup/ncsnv2 models/__init__.py anneal_Langevin_dynamics (v2=True, denoise=False),
    in NumPy, with torch.randn_like replaced by refscore's counter-based noise."""
    x = x0.copy()
    n, d = x.shape
    chains = np.arange(n)
    states = []
    for c, sigma in enumerate(sigmas):
        step_size = step_lr * (sigma / sigmas[-1]) ** 2
        for s in range(n_steps_each):
            z = normal(seed, chains, c * n_steps_each + s, d)
            if v2:
                grad = target.score(x, float(sigma))
                x = x + step_size * grad + z * np.sqrt(step_size * 2)
            else:
                noise = z * np.sqrt(step_size * 2)
                grad = target.score(x, float(sigma))
                x = x + step_size * grad + noise
            states.append(x)
    return x, np.array(states)


@pytest.mark.parametrize("v2", [False, True])
def test_ncsn_code_transcription_reproduces_annealed_langevin_bitwise(v2):
    """The released samplers' update with step = step_lr is refscore's annealed Langevin, bit for bit."""
    target = _mixture_target_2d()
    # σ_i/σ_L powers of two: (σ/σ_L)² (the code) and σ²/σ_L² (refscore) then round identically
    sigmas = 0.1 * 2.0 ** np.arange(3, -1, -1)
    assert all((s / sigmas[-1]) ** 2 == s**2 / sigmas[-1] ** 2 for s in sigmas)
    step_lr, T, seed = 0.01, 15, 11
    x0 = np.random.default_rng(3).uniform(-3, 3, size=(6, 2))
    x_code, states = _ncsn_code_transcription(target, x0, sigmas, step_lr, T, seed, v2=v2)
    res = annealed_langevin(target, x0, sigmas, cv.ncsn_code_step(step_lr), T, seed, backend="numpy", record=1)
    # bitwise: same noise, same score calls, same floating-point operations in the same order
    np.testing.assert_array_equal(res.x, x_code)
    np.testing.assert_array_equal(res.trace, states)
    # the paper's reading of the same number halves the step: a different chain
    wrong = annealed_langevin(target, x0, sigmas, cv.ncsn_step(step_lr), T, seed, backend="numpy")
    assert np.max(np.abs(wrong.x - x_code)) > 1e-2


def test_ncsn_code_on_the_released_schedule():
    """anneal.yml's schedule (10 geometric levels 1 → 0.01) and AnnealRunner.test's step_lr = 2e-5."""
    target = _mixture_target_2d()
    sigmas = np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))
    step_lr = 0.00002
    etas = cv.annealed_steps(cv.ncsn_code_step(step_lr), sigmas)
    # the per-level steps agree with the code's step_size to the rounding of (σ/σ_L)² vs σ²/σ_L²
    np.testing.assert_allclose(etas, step_lr * (sigmas / sigmas[-1]) ** 2, rtol=4e-16)
    x0 = np.random.default_rng(4).uniform(-2, 2, size=(4, 2))
    x_code, _ = _ncsn_code_transcription(target, x0, sigmas, step_lr, 100, 5)
    res = annealed_langevin(target, x0, sigmas, cv.ncsn_code_step(step_lr), 100, 5, backend="numpy")
    # 1e-13: 1000 contracting steps whose step sizes differ by ~1 ulp
    np.testing.assert_allclose(res.x, x_code, rtol=1e-13, atol=1e-13)
    half = annealed_langevin(target, x0, sigmas, cv.ncsn_step(step_lr), 100, 5, backend="numpy")
    assert np.max(np.abs(half.x - x_code)) > 1e-3


def test_ncsn_cifar10_numbers():
    # paper: ε = 2e-5 read through Algorithm 1 is step 1e-5; the released code ran step 2e-5
    assert cv.ncsn_step(2e-5) == 1e-5
    assert cv.ncsn_code_step(2e-5) == 2e-5
    assert cv.ncsn_code_step_lr(cv.ncsn_code_step(6.2e-6)) == 6.2e-6
    assert isinstance(cv.ncsn_code_step(2e-5), float)
    # score_sde's reproductions, read as refscore steps, land on the same step_lr values:
    # configs/ve/ncsn/cifar10.py snr 0.316 (σ_min 0.01) and configs/ve/ncsnv2/cifar10.py snr 0.176
    assert cv.score_sde_ald_step(0.316, 0.01) == pytest.approx(2e-5, rel=2e-3)      # 1.997e-5
    assert cv.score_sde_ald_step(0.176, 0.01) == pytest.approx(6.2e-6, rel=2e-3)    # 6.195e-6


# ------------------------------------------------------- score_sde correctors
def test_score_sde_ald_transcription_is_annealed_langevin():
    """score_sde sampling.py AnnealedLangevinDynamics on a VE SDE (α = 1, std = σ_i), one level per
    timestep with n_steps corrector steps, vs refscore's annealed_langevin(step = 2 snr² σ_L²)."""
    target = _mixture_target_2d()
    sigmas = np.exp(np.linspace(np.log(2.0), np.log(0.05), 6))
    snr, n_steps, seed = 0.2, 8, 21
    x0 = np.random.default_rng(6).uniform(-3, 3, size=(5, 2))
    x = x0.copy()
    chains = np.arange(5)
    for i, std in enumerate(sigmas):
        alpha = np.ones(5)
        for k in range(n_steps):
            grad = target.score(x, float(std))
            noise = normal(seed, chains, i * n_steps + k, 2)
            step_size = (snr * std) ** 2 * 2 * alpha
            x_mean = x + step_size[:, None] * grad
            x = x_mean + noise * np.sqrt(step_size * 2)[:, None]
    base = cv.score_sde_ald_step(snr, sigmas[-1])
    # per level: 2 (snr σ_i)² = annealed_steps(2 snr² σ_L², σ) to round-off
    np.testing.assert_allclose(cv.annealed_steps(base, sigmas), cv.score_sde_ald_step(snr, sigmas), rtol=1e-14)
    res = annealed_langevin(target, x0, sigmas, base, n_steps, seed, backend="numpy")
    # round-off only (the step's rounding differs by an ulp)
    np.testing.assert_allclose(res.x, x, rtol=1e-12, atol=1e-12)
    # VP: α = 1 − β_i multiplies the step
    assert cv.score_sde_ald_step(snr, 0.5, alpha=0.98) == pytest.approx(0.98 * 2 * (snr * 0.5) ** 2, rel=1e-15)


def _score_sde_corrector_step(snr, grad, noise, alpha, n_devices=1):
    """score_sde sampling.py LangevinCorrector.update_fn's step_size, transcribed; pmean over
    equal device shards is the mean of the shards' means."""
    def mean_norm(a):
        shards = np.split(a.reshape(a.shape[0], -1), n_devices)
        return np.mean([np.linalg.norm(sh, axis=-1).mean() for sh in shards])

    grad_norm = mean_norm(grad)
    noise_norm = mean_norm(noise)
    return (snr * noise_norm / grad_norm) ** 2 * 2 * alpha


def test_score_sde_langevin_corrector_transcription():
    """LangevinCorrector steps, transcribed, are refscore ULA steps with η = score_sde_langevin_step."""
    target = Gaussian([0.5, -1.0, 0.0], [[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.5]])
    snr, n, d = 0.16, 6, 3
    alpha = 0.97  # a VP corrector's 1 − β_i
    x_code = np.random.default_rng(7).normal(size=(n, d)) * 2
    x_ref = x_code.copy()
    chains = np.arange(n)
    for k in range(12):
        grad = target.score(x_code)
        noise = normal(k, chains, 0, d)  # ula(..., seed=k) draws step 0 of seed k
        step_size = _score_sde_corrector_step(snr, grad, noise, alpha)
        x_mean = x_code + step_size * grad
        x_code = x_mean + noise * np.sqrt(step_size * 2)
        eta = cv.score_sde_langevin_step(snr, noise, target.score(x_ref), alpha=alpha)
        assert eta.shape == (n,) and np.all(eta == eta[0])
        # same arithmetic as the transcription: bitwise
        assert eta[0] == step_size
        x_ref = ula(target, x_ref, float(eta[0]), 1, seed=k, backend="numpy").x
        np.testing.assert_array_equal(x_ref, x_code)
    # the norms are batch means of per-sample norms (a ratio of means), and pmean over
    # equal shards gives the same number
    rng = np.random.default_rng(8)
    z, s = rng.normal(size=(8, 2, 2)), rng.normal(size=(8, 2, 2)) * rng.uniform(0.1, 3, size=(8, 1, 1))
    eta = cv.score_sde_langevin_step(0.2, z, s)
    assert eta[0] == pytest.approx(_score_sde_corrector_step(0.2, s, z, 1.0, n_devices=4), rel=1e-14)
    ratio_of_means = np.linalg.norm(z.reshape(8, -1), axis=1).mean() / np.linalg.norm(s.reshape(8, -1), axis=1).mean()
    np.testing.assert_allclose(eta, 2 * (0.2 * ratio_of_means) ** 2, rtol=1e-14)
    # negative control: a mean of per-sample ratios is a different step
    per_sample = np.linalg.norm(z.reshape(8, -1), axis=1) / np.linalg.norm(s.reshape(8, -1), axis=1)
    assert abs(2 * (0.2 * per_sample.mean()) ** 2 - eta[0]) > 1e-3 * eta[0]
    # per-sample α broadcasts
    np.testing.assert_allclose(cv.score_sde_langevin_step(0.2, z, s, alpha=np.linspace(0.9, 1.0, 8)),
                               eta * np.linspace(0.9, 1.0, 8), rtol=1e-14)


# ------------------------------------------------------------ score_sde losses
def _score_sde_loss(score, x, t, z, sde, reduce_mean, likelihood_weighting):
    """yang-song/score_sde losses.py get_sde_loss_fn's loss_fn, transcribed (VE or VP SDE)."""
    if reduce_mean:
        reduce_op = np.mean
    else:
        def reduce_op(a, axis):
            return 0.5 * np.sum(a, axis=axis)
    if sde[0] == "ve":
        _, smin, smax = sde
        std = smin * (smax / smin) ** t
        mean = x
        g = std * np.sqrt(2 * (np.log(smax) - np.log(smin)))
    else:
        _, b0, b1 = sde
        lmc = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
        mean = np.exp(lmc)[:, None] * x
        std = np.sqrt(1 - np.exp(2.0 * lmc))
        g = np.sqrt(b0 + t * (b1 - b0))
    perturbed = mean + std[:, None] * z
    s = score(perturbed)
    if not likelihood_weighting:
        per = reduce_op(np.square(s * std[:, None] + z).reshape(x.shape[0], -1), axis=-1)
    else:
        per = reduce_op(np.square(s + z * (1.0 / std)[:, None]).reshape(x.shape[0], -1), axis=-1) * g**2
    return per, per.mean(), mean, std, g**2


@pytest.mark.parametrize("sde", [("ve", 0.01, 50.0), ("vp", 0.1, 20.0)])
@pytest.mark.parametrize("reduce_mean", [True, False])
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_score_sde_loss_transcription(sde, reduce_mean, likelihood_weighting):
    d, n = 4, 9
    model, theta = random_linear(90, d)
    rng = np.random.default_rng(91)
    x, z = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    t = rng.uniform(1e-5, 1.0, size=n)
    per_sde, loss_sde, mean, std, g2 = _score_sde_loss(
        lambda y: model.score(theta, y), x, t, z, sde, reduce_mean, likelihood_weighting)
    # refscore's DSM per sample, fed the marginal mean as the clean point
    per_dsm = np.array([losses.dsm(model, theta, mean[i:i + 1], std[i], z[i:i + 1], reduction="none")[0]
                        for i in range(n)])
    g2_arg = g2 if likelihood_weighting else None
    conv = cv.score_sde_from_dsm(per_dsm, std, d, reduce_mean=reduce_mean, g2=g2_arg)
    # 1e-12: the same squares, rescaled
    np.testing.assert_allclose(conv, per_sde, rtol=1e-12)
    assert conv.mean() == pytest.approx(loss_sde, rel=1e-12)
    np.testing.assert_allclose(cv.dsm_from_score_sde(per_sde, std, d, reduce_mean=reduce_mean, g2=g2_arg),
                               per_dsm, rtol=1e-12)
    # the constant: 2σ²/D for reduce_mean=True, σ² for the ½·sum (default weighting)
    w = cv.score_sde_weight(std, d, reduce_mean=reduce_mean, g2=g2_arg)
    lam = g2 if likelihood_weighting else std**2
    np.testing.assert_allclose(w, lam * (2.0 / d if reduce_mean else 1.0), rtol=1e-15)
    if reduce_mean and not likelihood_weighting:
        # negative control: the mean over dimensions is not σ²·DSM/D (the ½ is not there)
        assert not np.allclose(std**2 * per_dsm / d, per_sde, rtol=1e-3)


def test_score_sde_smld_loss_transcription():
    """losses.py get_smld_loss_fn (NCSN's loss inside score_sde), reduce_mean False and True."""
    d, n = 3, 7
    model, theta = random_linear(92, d)
    rng = np.random.default_rng(93)
    x, zn = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), 20))[::-1]
    sig = sigmas[rng.integers(0, 20, size=n)]
    noise = zn * sig[:, None]
    target = -noise * (1.0 / sig**2)[:, None]
    sq = np.square(model.score(theta, x + noise) - target)
    smld_sum = 0.5 * np.sum(sq, axis=-1) * sig**2
    smld_mean = np.mean(sq, axis=-1) * sig**2
    per_dsm = np.array([losses.dsm(model, theta, x[i:i + 1], sig[i], zn[i:i + 1], reduction="none")[0]
                        for i in range(n)])
    np.testing.assert_allclose(cv.score_sde_from_dsm(per_dsm, sig, d, reduce_mean=False), smld_sum, rtol=1e-12)
    np.testing.assert_allclose(cv.ncsn_from_dsm(per_dsm, sig), smld_sum, rtol=1e-12)
    np.testing.assert_allclose(cv.score_sde_from_dsm(per_dsm, sig, d, reduce_mean=True), smld_mean, rtol=1e-12)


# --------------------------------------------------------- NCSN sliced losses
def _ncsn_anneal_sliced_vr(A, b, x, labels, sigmas, z, v):
    """ermongroup/ncsn losses/sliced_sm.py anneal_sliced_score_estimation_vr, transcribed for an
    affine score s(x) = A x + b (autograd of Σ s·v w.r.t. x is Aᵀ v)."""
    m, n, d = v.shape
    used = sigmas[labels]
    perturbed = x + z * used[:, None]
    dup = np.broadcast_to(perturbed, (m, n, d)).reshape(-1, d)
    vectors = v.reshape(-1, d)
    grad1 = dup @ A.T + b
    grad2 = vectors @ A  # row k: (Aᵀ v_k)ᵀ
    loss1 = np.sum(grad1 * grad1, axis=-1) / 2.0
    loss2 = np.sum(vectors * grad2, axis=-1)
    loss1 = loss1.reshape(m, -1).mean(axis=0)
    loss2 = loss2.reshape(m, -1).mean(axis=0)
    loss = (loss1 + loss2) * used**2
    return loss.mean(axis=0), perturbed


@pytest.mark.parametrize("n_particles", [1, 3])
def test_ncsn_sliced_transcription(n_particles):
    d, n = 3, 10
    model, theta = random_linear(100, d)
    A, b = theta[: d * d].reshape(d, d), theta[d * d:]
    rng = np.random.default_rng(101)
    sigmas = np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))
    labels = rng.integers(0, 10, size=n)
    x, z = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    v = rng.normal(size=(n_particles, n, d))  # torch.randn_like: Gaussian, E[vvᵀ] = I
    want, x_tilde = _ncsn_anneal_sliced_vr(A, b, x, labels, sigmas, z, v)
    per = losses.ssm_vr(model, theta, x_tilde, v, reduction="none")
    got = cv.ncsn_sliced_from_ssm(per, sigmas[labels]).mean()
    # round-off only
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(cv.ssm_from_ncsn_sliced(cv.ncsn_sliced_from_ssm(per, sigmas[labels]), sigmas[labels]),
                               per, rtol=1e-14)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.0])
def test_ncsn_dsm_minus_sliced_by_quadrature(sigma):
    """E[σ² DSM(σ)] − E[σ² SSM-VR on p_σ] = d/2 at a random θ, both integrated exactly;
    and dsm_from_ncsn on the sliced value (the old misuse) misses DSM by d/(2σ²)."""
    d = 2
    g = random_gaussian(110, d)
    model, theta = random_linear(111, d)
    joint_cov = np.zeros((2 * d, 2 * d))
    joint_cov[:d, :d] = g.cov
    joint_cov[d:, d:] = np.eye(d)
    nodes, w = gauss_hermite_nodes(Gaussian(np.concatenate([g.mean, np.zeros(d)]), joint_cov), order=4)
    dsm = quad_mean(losses.dsm(model, theta, nodes[:, :d], sigma, nodes[:, d:], reduction="none"), w)
    ps = g.noised(sigma)
    nodes_s, w_s = gauss_hermite_nodes(ps, order=4)
    # E_v SSM-VR for Gaussian v is ISM exactly (averaging over the 2^d sign vectors does it too)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    v = np.broadcast_to(signs[:, None, :], (len(signs), len(nodes_s), d))
    ssm_vr = quad_mean(losses.ssm_vr(model, theta, nodes_s, v, reduction="none"), w_s)
    ncsn_dsm = cv.ncsn_from_dsm(dsm, sigma)
    ncsn_sliced = cv.ncsn_sliced_from_ssm(ssm_vr, sigma)
    # exact quadrature, round-off only
    assert ncsn_dsm - ncsn_sliced == pytest.approx(cv.ncsn_dsm_minus_sliced(d), abs=1e-9)
    assert cv.dsm_from_ncsn(ncsn_sliced, sigma) == pytest.approx(dsm - d / (2 * sigma**2), abs=1e-8)


# ------------------------------------------------------------------------ KSD
def _kgof_imq_H(X, grad_logp, b, c):
    """wittawatj/kernel-gof kgof/goftest.py KernelSteinTest.compute_stat's H with kgof/kernel.py KIMQ."""
    n, d = X.shape
    D2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    K = (c**2 + D2) ** b

    def gradX_Y(dim):
        return (2.0 * b * (c**2 + D2) ** (b - 1)) * (X[:, dim][:, None] - X[:, dim][None, :])

    B = np.zeros((n, n))
    C = np.zeros((n, n))
    for i in range(d):
        B += gradX_Y(i) * grad_logp[:, i]
        C += (-gradX_Y(i).T * grad_logp[:, i]).T
    c2D2 = c**2 + D2
    gradXY_sum = -4.0 * b * (b - 1) * D2 * c2D2 ** (b - 2) - 2.0 * b * d * c2D2 ** (b - 1)
    return K * (grad_logp @ grad_logp.T) + B + C + gradXY_sum


@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (0.7, -0.3)])
def test_ksd_kgof_nv_transcription(c, beta):
    rng = np.random.default_rng(120)
    x = rng.normal(size=(40, 3)) * 1.2 + 0.3
    p = Gaussian(np.zeros(3), np.eye(3))
    s = p.score(x)
    H = _kgof_imq_H(x, s, beta, c)
    n = len(x)
    stat = n * np.mean(H)  # kgof: n V_n
    u = metrics.ksd(x, p.score, c=c, beta=beta)
    diag = cv.imq_stein_diagonal(s, c=c, beta=beta)
    # the diagonal from the formula equals both Stein matrices' diagonals
    np.testing.assert_allclose(diag, np.diag(H), rtol=1e-12)
    np.testing.assert_allclose(diag, np.diag(metrics.imq_stein_kernel(x, x, s, s, c=c, beta=beta)), rtol=1e-12)
    # U from the transcribed matrix is refscore's ksd
    assert u == pytest.approx((H.sum() - np.trace(H)) / (n * (n - 1)), rel=1e-10)
    # 1e-10 relative: refscore's blocked Gram expansion vs the direct n×n×d evaluation
    assert cv.ksd_from_u(u, diag, "nv") == pytest.approx(stat, rel=1e-10)
    assert cv.ksd_from_u(u, diag, "v") == pytest.approx(np.mean(H), rel=1e-10)
    assert cv.ksd_from_u(u, diag, "sqrt_v") == pytest.approx(np.sqrt(np.mean(H)), rel=1e-10)
    assert cv.ksd_from_u(u, diag, "u") == u
    for form, val in [("nv", stat), ("v", np.mean(H)), ("sqrt_v", np.sqrt(np.mean(H))), ("u", u)]:
        assert cv.ksd_to_u(val, diag, form) == pytest.approx(u, rel=1e-9, abs=1e-12)
    # negative control: n·U is not kgof's statistic (the diagonal is missing)
    assert abs(n * u - stat) > 1e-2 * abs(stat)


def _stein_thinning_ksd(smp, scr, pre):
    """wilson-ye-chen/stein_thinning kernel.py vfk0_imq (make_imq with a float pre) and
    stein.py ksd, transcribed."""
    dm = smp.shape[1]
    linv = np.linalg.inv(float(pre) * np.identity(dm))

    def vfk0(a, b, sa, sb):
        amb = a.T - b.T
        qf = 1 + np.sum(np.dot(linv, amb) * amb, axis=0)
        t1 = -3 * np.sum(np.dot(np.dot(linv, linv), amb) * amb, axis=0) / (qf**2.5)
        t2 = (np.trace(linv) + np.sum(np.dot(linv, sa.T - sb.T) * amb, axis=0)) / (qf**1.5)
        t3 = np.sum(sa.T * sb.T, axis=0) / (qf**0.5)
        return t1 + t2 + t3

    def integrand(i, j):
        i, j = np.atleast_1d(np.arange(len(smp))[i]), np.atleast_1d(np.arange(len(smp))[j])
        i, j = np.broadcast_arrays(i, j)
        return vfk0(smp[i], smp[j], scr[i], scr[j])

    n = len(smp)
    cum_sum = np.zeros(n)
    cum_sum[0] = integrand(0, 0)[0]
    for i in range(1, n):
        vals = integrand([i], slice(0, i + 1))
        cum_sum[i] = cum_sum[i - 1] + 2 * np.sum(vals) - vals[-1]
    return np.sqrt(cum_sum) / np.arange(1, n + 1)


@pytest.mark.parametrize("pre", [1.0, 2.5])
def test_ksd_stein_thinning_sqrt_v_scaled_imq_transcription(pre):
    rng = np.random.default_rng(130)
    x = rng.normal(size=(30, 2)) * 0.8 + np.array([0.5, -0.2])
    p = Gaussian([0.0, 0.0], [[1.0, 0.4], [0.4, 0.9]])
    s = p.score(x)
    want = _stein_thinning_ksd(x, s, pre)
    g, beta = 1.0 / pre, 0.5
    c, beta_ref = cv.imq_from_scaled(g, beta)
    assert c == pytest.approx(np.sqrt(pre), rel=1e-15) and beta_ref == -0.5
    for m in (2, 10, 30):
        u = metrics.ksd(x[:m], s[:m], c=c, beta=beta_ref)
        v_ref = cv.ksd_from_u(u, cv.imq_stein_diagonal(s[:m], c=c, beta=beta_ref), "v")
        v_scaled = cv.scaled_imq_from_ksd(v_ref, g, beta)
        # 1e-10: two independent evaluations of the same double sum
        assert np.sqrt(v_scaled) == pytest.approx(want[m - 1], rel=1e-10)
        assert cv.ksd_from_scaled_imq(want[m - 1] ** 2, g, beta) == pytest.approx(v_ref, rel=1e-10)
    if pre != 1.0:
        # negative control: without the kernel's factor g^(−β) the numbers disagree
        u = metrics.ksd(x, s, c=c, beta=beta_ref)
        v_ref = cv.ksd_from_u(u, cv.imq_stein_diagonal(s, c=c, beta=beta_ref), "v")
        assert abs(np.sqrt(v_ref) - want[-1]) > 1e-2 * want[-1]


def test_scaled_imq_kernel_identity_pointwise():
    """(1 + g r²)^(−β) = g^(−β) (c² + r²)^(−β), c = g^(−1/2), and the Stein kernels scale alike."""
    rng = np.random.default_rng(131)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    sx, sy = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    g, beta = 0.3, 0.4
    c, b = cv.imq_from_scaled(g, beta)
    r2 = np.sum((x[:, None] - y[None]) ** 2, axis=-1)
    np.testing.assert_allclose((1 + g * r2) ** (-beta), g ** (-beta) * (c**2 + r2) ** b, rtol=1e-14)
    u_ref = metrics.imq_stein_kernel(x, y, sx, sy, c=c, beta=b)
    # the scaled kernel's Stein kernel by finite differences of k(x, y) = (1 + g r²)^(−β)
    def k(a, bb):
        return (1 + g * np.sum((a - bb) ** 2)) ** (-beta)

    h = 1e-5
    i, j = 2, 1
    e = np.eye(3) * h
    gx = np.array([(k(x[i] + e[a], y[j]) - k(x[i] - e[a], y[j])) / (2 * h) for a in range(3)])
    gy = np.array([(k(x[i], y[j] + e[a]) - k(x[i], y[j] - e[a])) / (2 * h) for a in range(3)])
    gxy = sum((k(x[i] + e[a], y[j] + e[a]) - k(x[i] + e[a], y[j] - e[a])
               - k(x[i] - e[a], y[j] + e[a]) + k(x[i] - e[a], y[j] - e[a])) / (4 * h * h) for a in range(3))
    u_fd = sx[i] @ sy[j] * k(x[i], y[j]) + sx[i] @ gy + sy[j] @ gx + gxy
    # central differences: O(h²) ≈ 1e-10 truncation, 1e-6 round-off in the mixed second difference
    assert cv.ksd_from_scaled_imq(u_fd, g, beta) == pytest.approx(u_ref[i, j], rel=1e-5)


# ------------------------------------------------------ tempering the target
class _Scaled:
    """A target whose score is score_scale × a base score (numpy backend only)."""

    def __init__(self, base, scale):
        self.base, self.scale, self.dim = base, scale, base.dim

    def score(self, x):
        return self.scale * self.base.score(x)


def test_tempered_transcription_gives_identical_iterates():
    """x + η s + √(2η) τ z (noise multiplied by τ) is refscore's ULA on s/τ² with step ητ²."""
    base = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.5, 0.5]], [np.eye(2) * 0.6, np.eye(2) * 0.9])
    eta, tau, seed, n = 0.05, 0.5, 17, 5
    x0 = np.random.default_rng(140).normal(size=(n, 2))
    x = x0.copy()
    for k in range(40):
        x = x + eta * base.score(x) + np.sqrt(2 * eta) * tau * normal(seed, np.arange(n), k, 2)
    ts = cv.tempered_step(eta, tau)
    res = ula(_Scaled(base, ts.score_scale), x0, ts.step, 40, seed, backend="numpy")
    # τ a power of two: (ητ²)(s/τ²) = ηs and √(2ητ²) = √(2η)τ exactly, so bitwise
    np.testing.assert_array_equal(res.x, x)
    # a general τ: round-off only
    tau = 0.37
    x = x0.copy()
    for k in range(40):
        x = x + eta * base.score(x) + np.sqrt(2 * eta) * tau * normal(seed, np.arange(n), k, 2)
    ts = cv.tempered_step(eta, tau)
    res = ula(_Scaled(base, ts.score_scale), x0, ts.step, 40, seed, backend="numpy")
    np.testing.assert_allclose(res.x, x, rtol=1e-12, atol=1e-12)


def test_decoupled_jem_transcription_gives_identical_iterates():
    """wgrathwohl/JEM train_wrn_ebm.py sample_q: x += sgld_lr ∇f + sgld_std ε."""
    base = Gaussian([0.3, -0.4], [[0.5, 0.1], [0.1, 0.3]])
    sgld_lr, sgld_std, seed, n = 0.02, 0.05, 23, 4
    x0 = np.random.default_rng(141).normal(size=(n, 2))
    x = x0.copy()
    for k in range(30):
        f_prime = base.score(x)
        x = x + (sgld_lr * f_prime + sgld_std * normal(seed, np.arange(n), k, 2))
    ts = cv.decoupled_step(sgld_lr, sgld_std)
    assert ts.step == pytest.approx(sgld_std**2 / 2, rel=1e-15)
    assert ts.score_scale == pytest.approx(2 * sgld_lr / sgld_std**2, rel=1e-15)
    # the same as tempered_step with η = a, τ = b/√(2a)
    tt = cv.tempered_step(sgld_lr, sgld_std / np.sqrt(2 * sgld_lr))
    assert tt.step == pytest.approx(ts.step, rel=1e-14) and tt.score_scale == pytest.approx(ts.score_scale, rel=1e-14)
    res = ula(_Scaled(base, ts.score_scale), x0, ts.step, 30, seed, backend="numpy")
    np.testing.assert_allclose(res.x, x, rtol=1e-12, atol=1e-12)
    # JEM's defaults: temperature 5e-5
    assert cv.decoupled_step(1.0, 1e-2) == cv.TemperedStep(5e-05, 20000.0)


def test_tempered_stationary_covariance_is_ula_bias_formula():
    """The τ-chain on N(μ, Λ⁻¹) is stationary at τ²(Λ − ηΛ²/2)⁻¹ (ULA's exact Gaussian law for
    step ητ² on the tempered target N(μ, τ²Λ⁻¹)), not at τ²Λ⁻¹ nor at (Λ − ηΛ²/2)⁻¹."""
    lam = np.array([[3.5, 1.5], [1.5, 3.5]])  # eigenvalues 2 and 5
    mu = np.array([1.0, -2.0])
    cov = np.linalg.inv(lam)
    eta, tau = 0.15, 0.6
    ts = cv.tempered_step(eta, tau)
    target = Gaussian(mu, cov / ts.score_scale)  # p^(1/τ²) = N(μ, τ²Σ), score s/τ²
    n, steps = 10000, 40
    # from x0 = μ the covariance reaches its fixed point at rate max|1 − ηλ|² = 0.49 per step:
    # 0.49^40 ≈ 4e-13, negligible
    res = ula(target, np.tile(mu, (n, 1)), ts.step, steps, seed=2024, backend="numpy")
    emp = np.cov(res.x, rowvar=False)
    want = tau**2 * np.linalg.inv(lam - eta * lam @ lam / 2)
    # standard error of a sample covariance of n iid Gaussian draws: √((C_ii C_jj + C_ij²)/n)
    se = np.sqrt((np.outer(np.diag(want), np.diag(want)) + want**2) / n)
    # 5 standard errors (the chains are independent; the seed is fixed)
    assert np.all(np.abs(emp - want) < 5 * se), (emp, want, se)
    assert np.all(np.abs(res.x.mean(axis=0) - mu) < 5 * np.sqrt(np.diag(want) / n))
    # the ULA bias is resolved: the unbiased tempered law τ²Σ is many standard errors away
    assert np.max(np.abs(emp - tau**2 * cov) / se) > 10
    # and the noise multiplier is not a step reparametrisation: the untempered chain differs
    assert np.max(np.abs(emp - np.linalg.inv(lam - eta * lam @ lam / 2)) / se) > 10


# ------------------------------------------------------------ kinetic Langevin
def _nonquadratic(x):
    """Force, score (= force at kT = 1) and log-density pieces of U(x) = 1/2 x^T A x + 0.05 sum x^4."""
    A = np.array([[1.3, 0.4], [0.4, 0.9]])
    return -(x @ A + 0.2 * x ** 3)


def _blackjax_obabo(position, momentum, logdensity_grad, step_size, L, z1, z2):
    """blackjax-devs/blackjax (04e5b61) with_maruyama(velocity_verlet) at unit mass, transcribed, the two
    keys' standard normals given: partially_refresh_momentum over half the step, velocity Verlet
    (coefficients 0.5, 1.0, 0.5: momentum, position, momentum), partially_refresh_momentum again."""
    def refresh(m, z, eps):
        if np.isinf(L):
            return m
        c1 = np.exp(-eps / L)
        c2 = np.sqrt(1 - c1 ** 2)
        return c1 * m + c2 * z

    momentum = refresh(momentum, z1, step_size * 0.5)
    momentum = momentum + step_size * 0.5 * logdensity_grad(position)
    position = position + step_size * 1.0 * momentum  # the kinetic energy's gradient at inverse mass 1
    momentum = momentum + step_size * 0.5 * logdensity_grad(position)
    momentum = refresh(momentum, z2, step_size * 0.5)
    return position, momentum


@pytest.mark.parametrize("L", [0.7, 3.0, np.inf])
def test_blackjax_underdamped_transcription_is_refscore_obabo(L):
    from refscore.sampling.kinetic import obabo_step

    rng = np.random.default_rng(31)
    q = rng.normal(size=(5, 2))
    p = rng.normal(size=(5, 2))
    x, v = q.copy(), p.copy()
    params = cv.blackjax_underdamped(0.3, L)
    assert (params.step, params.mass) == (0.3, 1.0) and params.friction == cv.friction_from_decoherence_length(L)
    for t in range(12):
        xi = normal(5, np.arange(5), t, 4)
        x, v = _blackjax_obabo(x, v, _nonquadratic, 0.3, L, xi[:, :2], xi[:, 2:])
        q, p = obabo_step(q, p, _nonquadratic, params.step, params.friction, xi, params.mass)
        # sqrt(1 - c^2) against refscore's sqrt(-expm1(-2 gamma tau)), then 12 steps: round-off only
        np.testing.assert_allclose(q, x, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(p, v, rtol=1e-12, atol=1e-13)
    assert cv.friction_from_decoherence_length(np.inf) == 0.0 and cv.decoherence_length_from_friction(0.0) == np.inf
    assert cv.decoherence_length_from_friction(cv.friction_from_decoherence_length(2.5)) == pytest.approx(2.5, rel=1e-15)


def _jax_md_baoab(R, P, force, dt, kT, gamma, mass, xi):
    """jax-md/jax-md (a41c7d1) simulate.nvt_langevin step_fn, transcribed: momentum_step over dt/2,
    position_step over dt/2, stochastic_step over dt (Normal(c1 P, kT (1 - c1^2) mass).sample),
    position_step over dt/2, the force at the new positions, momentum_step over dt/2."""
    P = P + dt / 2 * force(R)
    R = R + dt / 2 * P / mass
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(kT * (1 - c1 ** 2))
    P = c1 * P + np.sqrt(c2 ** 2 * mass) * xi
    R = R + dt / 2 * P / mass
    P = P + dt / 2 * force(R)
    return R, P


def test_jax_md_nvt_langevin_transcription_is_refscore_baoab():
    """jax-md at kT = 0.7, mass 3: refscore's BAOAB on the score F/kT, mass m/kT, momenta p/kT."""
    from refscore.sampling.kinetic import baoab_step

    dt, kT, gamma, mass = 0.05, 0.7, 1.3, 3.0
    rng = np.random.default_rng(32)
    R, P = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)) * np.sqrt(mass * kT)
    params = cv.jax_md_nvt_langevin(dt, kT, gamma, mass)
    assert params == cv.kinetic_from_thermostat(dt, gamma, kT, mass) == (dt, gamma, mass / kT)
    q, p = R.copy(), cv.momenta_from_thermostat(P, kT)
    for t in range(15):
        xi = normal(9, np.arange(4), t, 4)
        R, P = _jax_md_baoab(R, P, _nonquadratic, dt, kT, gamma, mass, xi[:, :2])
        q, p = baoab_step(q, p, lambda x: _nonquadratic(x) / kT, params.step, params.friction, xi, params.mass)
        np.testing.assert_allclose(q, R, rtol=1e-12, atol=1e-13)  # round-off of 15 steps
        np.testing.assert_allclose(cv.thermostat_momenta(p, kT), P, rtol=1e-12, atol=1e-13)


def _openmm_langevin_middle(x, v, force, dt, friction, temperature, mass, xi):
    """openmm/openmm (b12ba2a) ReferenceLangevinMiddleDynamics, transcribed (no constraints): updatePart1
    (v += dt / m F), updatePart2 (x' = x + v dt/2, v = vscale v + noisescale sqrt(kT/m) xi, x' += v dt/2),
    updatePart3 (x = x'); kT = BOLTZ T with BOLTZ = BOLTZMANN AVOGADRO / KILO (SimTKOpenMMRealType.h)."""
    kT = (1.380649e-23 * 6.02214076e23 / 1e3) * temperature
    v = v + (dt * (1.0 / mass)) * force(x)
    x1 = x + v * (0.5 * dt)
    vscale = np.exp(-dt * friction)
    noisescale = np.sqrt(1 - vscale * vscale)
    v = vscale * v + noisescale * np.sqrt(kT * (1.0 / mass)) * xi
    x1 = x1 + v * (0.5 * dt)
    return x1, v


def test_openmm_langevin_middle_transcription_is_refscore_baoab():
    """OpenMM in nm, ps, amu, kJ/mol at 300 K: refscore's BAOAB positions, and its momenta half a kick
    from OpenMM's velocities, p = (m/kT) v + (dt/2) s(x)."""
    from refscore.sampling.kinetic import baoab_step

    dt, friction, temperature, mass = 0.002, 1.0, 300.0, 12.0
    kT = cv.OPENMM_BOLTZ * temperature
    # R = N_A k_B exactly since the 2019 SI: 8.31446261815324 J/(mol K)
    assert cv.OPENMM_BOLTZ == pytest.approx(8.31446261815324e-3, rel=1e-15)
    force = lambda x: -kT * 400.0 * x - 50.0 * x ** 3  # noqa: E731 - a stiff bond, nm
    rng = np.random.default_rng(33)
    x, v = 0.05 * rng.normal(size=(3, 3)), rng.normal(size=(3, 3)) * np.sqrt(kT / mass)
    params = cv.openmm_langevin_middle(dt, friction, temperature, mass)
    assert params == (dt, friction, mass / kT)
    score = lambda q: force(q) / kT  # noqa: E731
    q, p = x.copy(), cv.momenta_from_openmm(v, mass, kT, dt, score(x))
    for t in range(20):
        xi = normal(4, np.arange(3), t, 6)
        x, v = _openmm_langevin_middle(x, v, force, dt, friction, temperature, mass, xi[:, :3])
        q, p = baoab_step(q, p, score, params.step, params.friction, xi, params.mass)
        np.testing.assert_allclose(q, x, rtol=1e-11, atol=1e-15)  # round-off of 20 steps on O(0.05) positions
        np.testing.assert_allclose(cv.openmm_velocities(p, mass, kT, dt, score(q)), v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cv.momenta_from_openmm(cv.openmm_velocities(p, mass, kT, dt, score(q)), mass, kT, dt,
                                                      score(q)), p, rtol=1e-14)


def test_one_obabo_step_with_a_full_refresh_is_malas_proposal_and_ratio():
    """docs/derivations.md §8.7: c = 0 in the first O gives p = sqrt(m) xi, then B A gives MALA's proposal
    at eta = h^2/(2m), and one leapfrog's Hamiltonian difference is MALA's log ratio."""
    from refscore.sampling.kinetic import obabo_step
    from refscore.sampling.steps import langevin_step, mala_log_alpha

    target = _mixture_target_2d()
    score = lambda x: target.score(x, 0.3)  # noqa: E731
    logpdf = lambda x: target.logpdf(x, 0.3)  # noqa: E731
    h, m = 0.5, 2.0
    eta = cv.mala_step_from_kinetic(h, m)
    assert eta == h * h / (2 * m) and cv.kinetic_step_from_mala(eta, m) == pytest.approx(h, rel=1e-15)
    rng = np.random.default_rng(34)
    q, p_old = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    xi = normal(2, np.arange(6), 0, 4)
    # friction 1e4: c = exp(-2500) underflows to 0 exactly, and the refresh's spread is sqrt(m)
    q1, _ = obabo_step(q, p_old, score, h, 1e4, xi, m)
    np.testing.assert_allclose(q1, langevin_step(q, score(q), eta, xi[:, :2]), rtol=1e-14, atol=1e-15)
    # one leapfrog from p = sqrt(m) xi: log alpha = H(q, p) - H(q', p'), H = -log p(q) + |p|^2 / (2 m)
    p = np.sqrt(m) * xi[:, :2]
    p_half = p + h / 2 * score(q)
    q_new = q + h / m * p_half
    p_end = p_half + h / 2 * score(q_new)
    H = lambda x, mom: -logpdf(x) + np.sum(mom ** 2, axis=1) / (2 * m)  # noqa: E731
    np.testing.assert_allclose(q_new, q1, rtol=1e-14, atol=1e-15)
    # the two sides group the same O(1) terms differently: agreement to round-off
    np.testing.assert_allclose(H(q, p) - H(q_new, p_end),
                               mala_log_alpha(q, q_new, score(q), score(q_new), logpdf(q), logpdf(q_new), eta),
                               rtol=1e-11, atol=1e-12)


def test_large_friction_is_ula_in_the_rescaled_time():
    """Kinetic Langevin's exact transient law on N(0, 1/omega^2) at friction gamma, over the time t, against
    the overdamped diffusion's at tau = overdamped_time(t, gamma, m): the gap closes as 1/gamma^2 (its
    leading term, from the slow eigenvalue -omega^2/(gamma m) (1 + O(1/gamma^2)) of the linear dynamics)."""
    from refscore.sampling.kinetic import kinetic_transient_law

    omega2, q0, tau, m = 2.0, 1.5, 0.3, 2.0
    gaps = []
    for gamma in (10.0, 20.0, 40.0):
        h = 0.02 / gamma  # gamma h = 0.02: the splitting's own error is far below the gap measured
        n = int(round(tau * gamma * m / h))
        assert cv.overdamped_time(n * h, gamma, m) == pytest.approx(tau, rel=1e-12)
        mean, cov = kinetic_transient_law([[omega2]], [0.0], h, gamma, "OBABO", n, [q0, 0.0], np.diag([0.0, m]),
                                          mass=m)
        ou_mean = q0 * np.exp(-omega2 * tau)
        ou_var = (1 - np.exp(-2 * omega2 * tau)) / omega2
        gaps.append(max(abs(mean[0] - ou_mean), abs(cov[0, 0] - ou_var)))
    # measured 3.4e-3, 8.1e-4, 1.9e-4: ratios 4.2 and 4.3
    assert gaps[2] < 3e-4
    assert all(3.5 < a / b < 5.0 for a, b in zip(gaps, gaps[1:])), gaps


def test_ncsn_eps_as_step_lr_runs_twice_the_step():
    """A sampler that turns the step into NCSN's paper epsilon (ncsn_eps) and runs the released code's
    update x + eps s + sqrt(2 eps) z is refscore's at ncsn_eps(step); given ncsn_step(step) it is refscore's."""
    from refscore.sampling.steps import langevin_step

    def confused(x, score, step, z):
        eps = cv.ncsn_eps(step)
        return x + eps * score(x) + np.sqrt(2 * eps) * z

    rng = np.random.default_rng(35)
    x, z = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    score = lambda v: -v  # noqa: E731
    np.testing.assert_allclose(confused(x, score, 0.05, z), langevin_step(x, score(x), 0.1, z), rtol=1e-15)
    np.testing.assert_array_equal(confused(x, score, cv.ncsn_step(0.05), z), langevin_step(x, score(x), 0.05, z))
    row = cv.row("Langevin step (NCSN ε as step_lr)")
    assert row.conversions[0].function is cv.ncsn_eps and row.conversions[0].inverse is cv.ncsn_step


def test_score_sde_ald_snr_inverts_the_ald_step():
    for snr, sigma, alpha in ((0.316, 0.01, 1.0), (0.16, 0.5, 0.97)):
        step = 2 * alpha * (snr * sigma) ** 2  # AnnealedLangevinDynamics.update_fn, transcribed
        assert cv.score_sde_ald_step(snr, sigma, alpha) == pytest.approx(step, rel=1e-15)
        assert cv.score_sde_ald_snr(step, sigma, alpha) == pytest.approx(snr, rel=1e-15)
    np.testing.assert_allclose(cv.score_sde_ald_snr(np.array([2e-5, 8e-5]), 0.01), [0.31622776601683794,
                                                                                    0.6324555320336759], rtol=1e-15)


def test_conversions_of_a_torch_loss_keep_its_gradient():
    """A loss converted inside a torch graph: the conversion's factor is the gradient, every form."""
    torch = pytest.importorskip("torch")
    cases = [(cv.dsm_from_ncsn, (0.5,), 4.0), (cv.ncsn_from_dsm, (0.5,), 0.25),
             (cv.dsm_from_sigma4_scaled, (0.5,), 16.0), (cv.sigma4_scaled_from_dsm, (2.0,), 16.0),
             (cv.ssm_from_ncsn_sliced, (0.5,), 4.0), (cv.sphere_unscaled_ssm_to_ism, (3,), 3.0),
             (cv.ksd_from_scaled_imq, (0.25, 0.5), 0.5)]
    for f, args, factor in cases:
        t = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
        out = f(t, *args)
        assert isinstance(out, torch.Tensor) and out.requires_grad, f.__name__
        out.backward()
        assert t.grad.item() == pytest.approx(factor, rel=1e-15), f.__name__
        assert out.item() == pytest.approx(f(1.7, *args), rel=1e-15), f.__name__
    t = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    out = cv.dsm_from_score_sde(t, np.array([0.5, 2.0]), 4, reduce_mean=True)  # one sigma per value
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 1 / cv.score_sde_weight(np.array([0.5, 2.0]), 4, reduce_mean=True))
    with pytest.raises(ValueError, match="value must be finite"):
        cv.dsm_from_ncsn(torch.tensor(float("nan"), requires_grad=True), 0.5)
    with pytest.raises(TypeError, match="u_stat must be a number or a NumPy array, got a torch tensor"):
        cv.ksd_from_u(torch.tensor(1.0, requires_grad=True), [1.0, 2.0], "v")


def test_kinetic_conversion_validation():
    with pytest.raises(ValueError, match="inverse_mass_matrix must be 1.0: blackjax's refresh draws N"):
        cv.blackjax_underdamped(0.1, 1.0, inverse_mass_matrix=2.0)
    with pytest.raises(ValueError, match=r"L must be > 0 \(or inf\), got 0.0"):
        cv.friction_from_decoherence_length(0.0)
    with pytest.raises(ValueError, match="friction must be finite and >= 0, got -1.0"):
        cv.decoherence_length_from_friction(-1.0)
    with pytest.raises(ValueError, match="gamma must be finite and >= 0, got -0.5"):
        cv.kinetic_from_thermostat(0.1, -0.5, 1.0)
    with pytest.raises(ValueError, match="kT must be finite and > 0"):
        cv.kinetic_from_thermostat(0.1, 0.5, 0.0)
    with pytest.raises(ValueError, match="temperature_K must be finite and > 0"):
        cv.openmm_langevin_middle(0.002, 1.0, -1.0, 12.0)
    with pytest.raises(ValueError, match="friction must be finite and > 0"):
        cv.overdamped_time(1.0, 0.0)


# ---------------------------------------------------------------- round trips
positive = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@given(value=finite, sigma=positive, d=st.integers(1, 1000), step=positive)
def test_round_trips(value, sigma, d, step):
    # relative 1e-12: at most three roundings of a product/quotient
    approx = lambda v: pytest.approx(v, rel=1e-12, abs=1e-300)  # noqa: E731
    assert cv.ism_to_sphere_unscaled_ssm(cv.sphere_unscaled_ssm_to_ism(value, d), d) == approx(value)
    assert cv.sigma4_scaled_from_dsm(cv.dsm_from_sigma4_scaled(value, sigma), sigma) == approx(value)
    assert cv.ncsn_from_dsm(cv.dsm_from_ncsn(value, sigma), sigma) == approx(value)
    assert cv.lr_from_step(cv.step_from_lr(step)) == approx(step)
    assert cv.ncsn_eps(cv.ncsn_step(step)) == approx(step)
    assert cv.step_from_noise_scale(np.sqrt(2 * step)) == approx(step)
    assert cv.ncsn_code_step_lr(cv.ncsn_code_step(step)) == step
    for rm in (True, False):
        assert cv.dsm_from_score_sde(cv.score_sde_from_dsm(value, sigma, d, reduce_mean=rm), sigma, d,
                                     reduce_mean=rm) == approx(value)
        assert cv.dsm_from_score_sde(cv.score_sde_from_dsm(value, sigma, d, reduce_mean=rm, g2=step), sigma, d,
                                     reduce_mean=rm, g2=step) == approx(value)
    assert cv.ssm_from_ncsn_sliced(cv.ncsn_sliced_from_ssm(value, sigma), sigma) == approx(value)
    g = min(max(sigma, 1e-3), 1e3)
    assert cv.ksd_from_scaled_imq(cv.scaled_imq_from_ksd(value, g, 0.5), g, 0.5) == approx(value)
    # SSM-VR converts part by part: unit value t + nrm -> scaled d·t + nrm -> back
    t, nrm = value, abs(value) + 1.0
    scaled = cv.sphere_unscaled_ssm_vr_to_ism(t, nrm, d)
    # absolute round-off ~ε·(d|t| + nrm) from adding and subtracting the norm term
    assert cv.ism_to_sphere_unscaled_ssm_vr(scaled - nrm, nrm, d) == pytest.approx(t + nrm, rel=1e-12, abs=1e-12 * d * nrm)


def test_conversions_keep_array_shape():
    v = np.arange(6.0).reshape(2, 3)
    assert cv.sphere_unscaled_ssm_to_ism(v, 3).shape == (2, 3)
    assert isinstance(cv.step_from_lr(0.2), float)
    assert cv.step_from_lr(np.array([0.2, 0.4])).shape == (2,)


# ---------------------------------------------------------------- the table
def test_markdown_table_structure_and_references():
    md = cv.markdown_table()
    lines = md.splitlines()
    assert lines[0] == "| quantity | refscore convention | common variant | conversion |"
    assert lines[1] == "|---|---|---|---|"
    assert len(lines) == 2 + len(cv.TABLE)
    for line in lines[2:]:
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        assert len(cells) == 4 and all(c.strip() for c in cells), line
    # every function the table names exists and is public
    named = set(re.findall(r"`([a-z_0-9]+)\(", md))
    assert named, "the table names no conversion function"
    for name in named:
        assert name in cv.__all__ and callable(getattr(cv, name)), name
    # and every public conversion is documented in the table
    for name in ["step_from_lr", "ncsn_step", "annealed_steps", "dsm_from_sigma4_scaled", "dsm_from_ncsn",
                 "sphere_unscaled_ssm_to_ism", "sphere_unscaled_ssm_vr_to_ism", "esm_minus_ism",
                 "dsm_minus_esm", "dsm_minus_ism_noised", "projection_scale",
                 "ncsn_code_step", "score_sde_ald_step", "score_sde_langevin_step", "score_sde_from_dsm",
                 "dsm_from_score_sde", "score_sde_weight", "ncsn_sliced_from_ssm", "ncsn_dsm_minus_sliced",
                 "ksd_from_u", "ksd_to_u", "imq_stein_diagonal", "imq_from_scaled", "ksd_from_scaled_imq",
                 "tempered_step", "decoupled_step"]:
        assert name in md, name


def test_table_separates_ncsn_paper_and_code():
    rows = {r.quantity: r for r in cv.TABLE}
    paper, code = rows["Annealed Langevin (NCSN paper)"], rows["Annealed Langevin (NCSN/NCSNv2 code)"]
    assert "`ncsn_step(ε)`" in paper.conversion and "α_i/2" in paper.variant
    assert "`ncsn_code_step(step_lr)`" in code.conversion and "√(2 step_size)" in code.variant
    assert "not 1e-5" in code.conversion


def test_every_function_in_the_table_is_tested_here():
    """Each conversion the ledger names is called somewhere in this file."""
    import inspect
    import sys

    here = inspect.getsource(sys.modules[__name__])
    for name in set(re.findall(r"`([a-z_0-9]+)[`(]", cv.markdown_table())) & set(cv.__all__):
        assert f"cv.{name}(" in here, name


def test_every_row_carries_the_functions_its_text_names():
    """The conversion cell names functions in code spans; the row carries each as a callable (a
    conversion, its inverse or a helper), and carries nothing that is not a public function."""
    for r in cv.TABLE:
        named = {n for n in re.findall(r"`([a-z_0-9]+)[`(]", r.conversion) if n in cv.__all__}
        carried = {f.__name__ for f in r.functions}
        assert named <= carried, (r.quantity, named - carried)
        for f in r.functions:
            assert f.__name__ in cv.__all__ and getattr(cv, f.__name__) is f, (r.quantity, f)
        assert tuple(r) == r.cells == (r.quantity, r.refscore, r.variant, r.conversion)
        for c in r.conversions:
            assert set(c.args) <= set(cv.ARGUMENTS) and set(c.converts) <= set(cv.CONVERTED), r.quantity
            assert c.args[0] in ("value", "trace_term") and set(c.needs) <= set(cv.ARGUMENTS)
    # every public conversion function of the module is on some row
    on_rows = {f for r in cv.TABLE for f in r.functions}
    public = {getattr(cv, n) for n in cv.__all__ if callable(getattr(cv, n)) and not isinstance(getattr(cv, n), type)
              and n not in ("markdown_table", "row", "row_of")}
    assert public - on_rows == set()


#: a value of each argument word of the ledger, in the domain of every conversion
ARGUMENT_SAMPLES = {"value": 0.7, "trace_term": None, "norm_term": 1.1, "sigma": 0.6, "dim": 3,
                    "diagonal": np.array([2.0, 4.0, 3.0]), "g": 0.25, "beta": 0.5}


def test_every_conversion_round_trips_through_its_inverse():
    """Each row's conversion, called as its declared arguments say, and its inverse undo each other
    (a conversion that raises on these in-domain arguments fails here)."""
    given = {w: v for w, v in ARGUMENT_SAMPLES.items() if w not in ("value", "trace_term")}
    n = 0
    for r in cv.TABLE:
        for c in r.conversions:
            assert c.inverse is not None, r.quantity
            for option in c.option_sets():
                for value in (0.7, 2.3):
                    there = c.to_refscore(value, option, **given)
                    # relative 1e-12: a few roundings of products, quotients and one square root
                    assert c.from_refscore(there, option, **given) == pytest.approx(value, rel=1e-12), (r.quantity,
                                                                                                        option)
                    assert c.to_refscore(c.from_refscore(value, option, **given), option, **given) == pytest.approx(
                        value, rel=1e-12), (r.quantity, option)
                    n += 1
    assert n >= 2 * 14  # every conversion of the ledger, every option


def test_conversion_arguments_are_the_declared_ones():
    c = cv.row_of(cv.sphere_unscaled_ssm_vr_to_ism).conversions[0]
    assert c.needs == ("norm_term", "dim")
    # the value converted is trace + norm: only its trace term scales by d
    assert c.to_refscore(0.5 + 1.0, norm_term=1.0, dim=2) == cv.sphere_unscaled_ssm_vr_to_ism(0.5, 1.0, 2) == 2.0
    with pytest.raises(TypeError, match="needs norm_term, dim besides the value"):
        c.to_refscore(1.5)
    ksd = cv.row_of(cv.ksd_to_u).conversions[0]
    assert ksd.option_sets() == [{"form": "v"}, {"form": "nv"}, {"form": "sqrt_v"}]
    assert ksd.to_refscore(1.75, {"form": "v"}, diagonal=[2.0, 4.0]) == cv.ksd_to_u(1.75, [2.0, 4.0], "v") == 0.5


def test_row_lookup_by_function_and_by_name():
    assert cv.row_of(cv.ncsn_eps).quantity == "Annealed Langevin (NCSN paper)"
    assert cv.row_of(cv.lr_from_step) is cv.row("Langevin step")
    assert cv.row_of(cv.projection_scale).quantity == "E_v SSM, E_v SSM-VR"
    assert cv.row_of(np.sqrt) is None
    assert cv.row("DSM noise").conversions == ()
    with pytest.raises(KeyError, match="no ledger row 'DSM"):
        cv.row("DSM")


def test_noise_scale_from_step_inverts_step_from_noise_scale():
    assert cv.noise_scale_from_step(0.125) == 0.5
    assert cv.step_from_noise_scale(cv.noise_scale_from_step(0.03)) == pytest.approx(0.03, rel=1e-15)
    np.testing.assert_allclose(cv.noise_scale_from_step(np.array([0.5, 2.0])), [1.0, 2.0], rtol=1e-15)
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        cv.noise_scale_from_step(0.0)


# --------------------------------------------------------------- validation
def test_value_must_be_finite():
    with pytest.raises(ValueError, match="value must be finite"):
        cv.sphere_unscaled_ssm_to_ism(np.inf, 2)


def test_value_must_be_numeric():
    with pytest.raises(TypeError, match="value must be convertible"):
        cv.dsm_from_ncsn("abc", 1.0)


def test_trace_term_must_be_finite():
    with pytest.raises(ValueError, match="trace_term must be finite"):
        cv.sphere_unscaled_ssm_vr_to_ism(np.nan, 1.0, 2)


def test_norm_term_must_be_finite():
    with pytest.raises(ValueError, match="norm_term must be finite"):
        cv.ism_to_sphere_unscaled_ssm_vr(1.0, np.nan, 2)


def test_dim_must_be_integer():
    with pytest.raises(TypeError, match="dim must be a positive integer, got float"):
        cv.sphere_unscaled_ssm_to_ism(1.0, 2.0)


def test_dim_must_be_positive():
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        cv.projection_scale("sphere", 0)


def test_kind_must_be_known():
    with pytest.raises(ValueError, match="kind must be one of"):
        cv.projection_scale("uniform", 2)


def test_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        cv.dsm_from_sigma4_scaled(1.0, 0.0)


def test_sigma_array_must_be_positive():
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        cv.dsm_from_ncsn([1.0, 2.0], [1.0, -1.0])


def test_dsm_minus_esm_sigma_positive():
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        cv.dsm_minus_esm(Gaussian([0.0], [[1.0]]), -0.5)


def test_lr_must_be_positive():
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        cv.step_from_lr(-0.1)


def test_step_must_be_positive():
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        cv.lr_from_step(0.0)


def test_delta_must_be_positive():
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        cv.step_from_noise_scale(np.nan)


def test_eps_ncsn_must_be_positive():
    with pytest.raises(ValueError, match="eps_ncsn must be finite and > 0"):
        cv.ncsn_alphas(0.0, [2.0, 1.0])


def test_step_type():
    with pytest.raises(TypeError, match="step must be a real number"):
        cv.annealed_steps("0.1", [2.0, 1.0])


def test_sigmas_must_be_1d():
    with pytest.raises(ValueError, match=r"sigmas must be a 1-D array with at least one level, got shape \(2, 1\)"):
        cv.annealed_steps(0.1, [[2.0], [1.0]])


def test_sigmas_must_be_nonempty():
    with pytest.raises(ValueError, match=r"sigmas must be a 1-D array with at least one level, got shape \(0,\)"):
        cv.annealed_steps(0.1, [])


def test_sigmas_must_be_positive():
    with pytest.raises(ValueError, match="sigmas must be finite and > 0"):
        cv.ncsn_alphas(0.1, [2.0, 0.0])


def test_sigmas_must_decrease():
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        cv.annealed_steps(0.1, [1.0, 2.0])


def test_score_sde_weight_needs_explicit_reduce_mean():
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'reduce_mean'"):
        cv.score_sde_weight(1.0, 3)
    with pytest.raises(TypeError, match="reduce_mean must be a bool, got str"):
        cv.score_sde_weight(1.0, 3, reduce_mean="yes")


def test_score_sde_g2_must_be_positive():
    with pytest.raises(ValueError, match="g2 must be finite and > 0"):
        cv.score_sde_from_dsm(1.0, 1.0, 3, reduce_mean=True, g2=0.0)


def test_score_sde_langevin_step_validation():
    z = np.ones((3, 2))
    with pytest.raises(ValueError, match="noise and score must have the same shape"):
        cv.score_sde_langevin_step(0.1, z, np.ones((3, 3)))
    with pytest.raises(ValueError, match="score must not vanish"):
        cv.score_sde_langevin_step(0.1, z, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="snr must be finite and > 0"):
        cv.score_sde_langevin_step(0.0, z, z)
    with pytest.raises(ValueError, match="noise must be finite"):
        cv.score_sde_langevin_step(0.1, np.full((3, 2), np.nan), z)
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        cv.score_sde_langevin_step(0.1, z, z, alpha=-1.0)


def test_ksd_conversion_validation():
    with pytest.raises(ValueError, match="form must be one of"):
        cv.ksd_from_u(0.1, [1.0, 2.0], "w")
    with pytest.raises(ValueError, match=r"diagonal must have shape \(n,\) with n >= 2"):
        cv.ksd_from_u(0.1, [1.0], "v")
    with pytest.raises(ValueError, match="a sqrt_v value must be >= 0"):
        cv.ksd_to_u(-0.1, [1.0, 2.0], "sqrt_v")
    with pytest.raises(ValueError, match="V-statistic .* is negative"):
        cv.ksd_from_u(-10.0, [1.0, 2.0], "sqrt_v")
    with pytest.raises(ValueError, match=r"beta must lie in \(-1, 0\)"):
        cv.imq_stein_diagonal(np.ones((2, 2)), beta=0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(n, d\)"):
        cv.imq_stein_diagonal(np.ones(3))
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 1\)"):
        cv.imq_from_scaled(1.0, -0.5)
    with pytest.raises(ValueError, match="g must be finite and > 0"):
        cv.ksd_from_scaled_imq(1.0, 0.0, 0.5)


def test_tempered_validation():
    with pytest.raises(ValueError, match="tau must be finite and > 0"):
        cv.tempered_step(0.1, 0.0)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        cv.decoupled_step(1.0, -1.0)
    with pytest.raises(ValueError, match="step_lr must be finite and > 0"):
        cv.ncsn_code_step(0.0)


def test_dist_must_be_gaussian_or_mixture():
    with pytest.raises(TypeError, match="dist must be a Gaussian or GaussianMixture.*StudentT"):
        cv.esm_minus_ism(StudentT([0.0], [[1.0]], 3.0))


def test_readme_ledger_is_the_code_table():
    # the README's conventions table is TABLE row for row (it cannot drift from the code)
    import pathlib

    from refscore.conventions import TABLE

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    for r in TABLE:
        assert f"| {r.quantity} | {r.refscore} | {r.variant} | {r.conversion} |" in readme, r.quantity


# ---------------------------------------------------------------- diffusion: transcriptions of released code
# Each transcription below is plain NumPy written here from reading the source cited in
# refscore/conventions.py (diffusers 58eb52c0, k-diffusion 4601bf0, NVlabs/edm 008a4e5).
def _diffusers_set_timesteps(n, T, spacing, steps_offset):
    """diffusers DDIMScheduler.set_timesteps, in NumPy float64 as diffusers evaluates it."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + steps_offset
    return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1


def _is_tie(num, den):
    """The exact rational num/den lies halfway between two integers."""
    return (2 * num) % (2 * den) == den


def test_diffusion_timesteps_against_diffusers_set_timesteps():
    """Every n of a 1000-step table: refscore's timesteps are diffusers' except where diffusers' float
    evaluation rounds an exact tie the other way (by 1), and trailing's extra last entry -1."""
    T = 1000
    for spacing in ("leading", "trailing", "linspace"):
        for n in range(1, T + 1):
            off = 1 if spacing == "leading" and n < T else 0
            mine, theirs = cv.diffusion_timesteps(n, T, spacing, off), _diffusers_set_timesteps(n, T, spacing, off)
            assert len(mine) == n
            if len(theirs) == n + 1:  # arange's float length: one step too many, landing on -1
                assert spacing == "trailing" and theirs[-1] == -1
                theirs = theirs[:n]
            i = np.arange(n)
            differ = np.flatnonzero(mine != theirs)
            assert np.all(np.abs(mine[differ] - theirs[differ]) == 1), (spacing, n)
            # the positions that differ are ties of the exact rational (i counts from the largest timestep)
            if spacing == "trailing":
                assert all(_is_tie(T * (n - k), n) for k in i[differ]), (spacing, n)
            elif spacing == "linspace" and n > 1:
                assert all(_is_tie((n - 1 - k) * (T - 1), n - 1) for k in i[differ]), (spacing, n)
            else:
                assert differ.size == 0, (spacing, n)
    # Stable Diffusion's 50 steps (leading, steps_offset 1) never visit 999; trailing starts there
    assert cv.diffusion_timesteps(50, T, "leading", 1)[0] == 981 and cv.diffusion_timesteps(50, T, "trailing")[0] == 999


def _diffusers_rescale_zero_terminal_snr(betas):
    """diffusers rescale_zero_terminal_snr, in float64."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas))
    a0, aT = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - aT) * (a0 / (a0 - aT))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def test_zero_terminal_snr_against_diffusers():
    from refscore.diffusion.tables import ddpm_betas

    for betas in (ddpm_betas(1000), ddpm_betas(1000, 0.00085, 0.012, "scaled_linear")):
        mine = cv.zero_terminal_snr_betas(betas)
        # the same operations in the same order: equal to the last rounding of a few products (1e-13)
        np.testing.assert_allclose(mine, _diffusers_rescale_zero_terminal_snr(betas), rtol=1e-13, atol=0)
        ab = np.cumprod(1.0 - mine)
        assert mine[-1] == 1.0 and ab[-1] == 0.0 and ab[0] == pytest.approx(1.0 - betas[0], rel=1e-14)


def _ddim_pred_original_sample(prediction_type, model_output, sample, alpha_prod_t):
    """diffusers DDIMScheduler.step's predicted x0 for each prediction_type."""
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        return (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    if prediction_type == "sample":
        return model_output
    return alpha_prod_t ** 0.5 * sample - beta_prod_t ** 0.5 * model_output


def test_prediction_types_against_diffusers_ddim_step():
    """An exact network of each prediction type (refscore's denoiser on Stable Diffusion's table) read by
    diffusers' formulas gives the exact x0; x0_from_prediction and prediction_from_x0 are that map."""
    from refscore.diffusion import Denoiser, VPDiscrete

    sch = VPDiscrete(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    D = Denoiser(Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]]), sch)
    rng = np.random.default_rng(3)
    for t in (1.0, 250.0, 981.0):
        ab = float(sch.alphas_cumprod[int(t)])
        a, s = sch.alpha(t), sch.sigma(t)
        assert a == pytest.approx(ab ** 0.5, rel=1e-15) and s == pytest.approx((1 - ab) ** 0.5, rel=1e-15)
        x = a * rng.normal(size=(4, 2)) + s * rng.normal(size=(4, 2))
        x0 = D.x0(x, t)
        for kind, theirs in (("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")):
            pred = D.predict(kind, x, t)
            # round-off of sqrt(1 - alpha_bar) amplified by 1/alpha at t = 981 (alpha 0.07): 1e-12 relative
            np.testing.assert_allclose(_ddim_pred_original_sample(theirs, pred, x, ab), x0, rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(cv.x0_from_prediction(kind, pred, x, a, s), x0, rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(cv.prediction_from_x0(kind, x0, x, a, s), pred, rtol=1e-11, atol=1e-11)
    with pytest.raises(ValueError, match="kind must be one of"):
        cv.x0_from_prediction("velocity", 0.0, 0.0, 1.0, 1.0)


def _k_diffusion_scalings(kind, sigma, sigma_data):
    """k-diffusion get_scalings of Denoiser ("edm"), VDenoiser ("v"), DiscreteEpsDDPMDenoiser ("eps",
    c_skip 1 from its forward's input + eps * c_out); NVlabs/edm VEPrecond ("ve")."""
    if kind == "edm":
        return (sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2), sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5,
                1 / (sigma ** 2 + sigma_data ** 2) ** 0.5)
    if kind == "v":
        return (sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2), -sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5,
                1 / (sigma ** 2 + sigma_data ** 2) ** 0.5)
    if kind == "eps":
        return 1.0, -sigma, 1 / (sigma ** 2 + sigma_data ** 2) ** 0.5
    return 1.0, sigma, 1.0


def test_denoiser_scalings_against_k_diffusion_and_edm():
    """The scalings are the released ones, and each, fed the exact network of its kind, is the exact
    denoiser: D = c_skip x + c_out F(c_in x) = E[x0 | x] (k-diffusion's forward); EDM's positive c_out on
    a v-network gives 2 c_skip x - x0 instead."""
    from refscore.diffusion import EDM, Denoiser

    D = Denoiser(GaussianMixture([0.4, 0.6], [[-1.0, -1.0], [1.5, 1.0]],
                                 [[[0.6, 0.0], [0.0, 0.9]], [[1.0, 0.3], [0.3, 0.7]]]), EDM())
    rng = np.random.default_rng(5)
    for sigma in (0.01, 0.5, 3.0, 80.0):
        x = rng.normal(size=(3, 2)) + sigma * rng.normal(size=(3, 2))
        x0, eps = D.x0(x, sigma), D.eps(x, sigma)
        for kind in cv.SCALINGS:
            sd = 1.0 if kind in ("v", "eps", "ve") else 0.5
            c_skip, c_out, c_in = cv.denoiser_scalings(kind, sigma, sd)
            assert (c_skip, c_out, c_in) == pytest.approx(_k_diffusion_scalings(kind, sigma, sd), rel=1e-15)
            # the exact network of each kind at its input c_in x
            if kind == "edm":
                F = (x0 - c_skip * x) / c_out  # EDM's training target
            elif kind == "v":  # c_in x = a x0 + s eps with a = 1/sqrt(1 + sigma^2), s = sigma a: v = a eps - s x0
                a_vp = 1.0 / np.sqrt(1.0 + sigma ** 2)
                F = a_vp * eps - sigma * a_vp * x0
            elif kind == "eps":
                F = eps
            else:
                F = -eps  # NCSN's sigma * score
            # cancellation of c_skip x and c_out F at sigma = 80 (both ~80): 1e-13 relative to x
            np.testing.assert_allclose(c_skip * x + c_out * F, x0, rtol=0, atol=1e-12 * (1 + sigma))
        c_skip, c_out, c_in = cv.denoiser_scalings("v", sigma)
        F = (eps - sigma * x0) / np.sqrt(1.0 + sigma ** 2)
        np.testing.assert_allclose(c_skip * x - c_out * F, 2 * c_skip * x - x0, rtol=0, atol=1e-12 * (1 + sigma))
    with pytest.raises(ValueError, match="kind must be one of"):
        cv.denoiser_scalings("flow", 1.0)


def _diffusers_ddim(alphas_cumprod, timesteps, step_ratio, x, eps_fn, set_alpha_to_one):
    """diffusers DDIMScheduler.step at eta = 0 with an epsilon network, iterated over timesteps."""
    final = 1.0 if set_alpha_to_one else alphas_cumprod[0]
    for t in timesteps:
        prev = t - step_ratio
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[prev] if prev >= 0 else final
        e = eps_fn(x, float(t))
        x0 = (x - (1 - a_t) ** 0.5 * e) / a_t ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * e
    return x


def test_ddim_final_alpha_against_diffusers():
    """diffusers' DDIM with set_alpha_to_one is refscore's DDIM on the grid ending at -1; without it, on
    the grid ending at timestep 0 (the last step keeps noise of sigma_0)."""
    from refscore.diffusion import Denoiser, VPDiscrete, sample

    sch = VPDiscrete(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    D = Denoiser(Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]]), sch)
    ts = cv.diffusion_timesteps(10, 1000, "leading", 1)
    x = np.random.default_rng(2).normal(size=(3, 2))
    ab = sch.alphas_cumprod
    assert cv.ddim_final_alpha_cumprod(ab) == 1.0 and cv.ddim_final_alpha_cumprod(ab, False) == ab[0]
    for ones, end in ((True, -1.0), (False, 0.0)):
        theirs = _diffusers_ddim(ab, ts, 100, x, D.eps, ones)
        mine = sample("ddim", D, sch, x, np.append(ts.astype(float), end))
        # ten steps of products of O(1) numbers: 1e-12
        np.testing.assert_allclose(mine, theirs, rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="alphas_cumprod must be a non-empty 1-D array"):
        cv.ddim_final_alpha_cumprod([])


def _get_sigmas_karras(n, sigma_min, sigma_max, rho):
    """k-diffusion get_sigmas_karras (append_zero) in NumPy."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return np.append((hi + ramp * (lo - hi)) ** rho, 0.0)


def _edm_t_steps(num_steps, sigma_min, sigma_max, rho):
    """NVlabs/edm edm_sampler's t_steps with t_N = 0."""
    i = np.arange(num_steps, dtype=np.float64)
    t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(t, 0.0)


def test_karras_sigmas_against_k_diffusion_and_edm():
    for n, lo, hi, rho in ((18, 0.002, 80.0, 7.0), (40, 0.002, 80.0, 7.0), (10, 0.0292, 14.6146, 7.0), (5, 0.1, 10.0, 3.0)):
        mine = cv.karras_sigmas(n, lo, hi, rho)
        assert len(mine) == n + 1 and mine[0] == hi and mine[-2] == lo and mine[-1] == 0.0
        # the rho-th power of the interpolated roots: a few ulps (refscore sets both ends exactly)
        np.testing.assert_allclose(mine, _get_sigmas_karras(n, lo, hi, rho), rtol=1e-13, atol=0)
        np.testing.assert_allclose(mine, _edm_t_steps(n, lo, hi, rho), rtol=1e-13, atol=0)


def _karras_ve_schedule(n, sigma_min, sigma_max):
    """diffusers KarrasVeScheduler.set_timesteps's schedule, indexed as its pipeline reads it."""
    timesteps = np.arange(0, n)[::-1]
    schedule = [sigma_max ** 2 * (sigma_min ** 2 / sigma_max ** 2) ** (i / (n - 1)) for i in timesteps]
    return np.array([schedule[t] for t in timesteps])  # the pipeline's sigma = schedule[t], t = n - 1 .. 0


def test_ve_noise_levels_against_diffusers_karras_ve():
    """KarrasVeScheduler's sigma is EDM Table 1's VE time t_i = sigma_i^2: sigma_from_ve_time gives the
    geometric noise levels sigma_max (sigma_min / sigma_max)^(i / (n - 1)), ve_time_from_sigma goes back."""
    n, lo, hi = 12, 0.02, 100.0
    theirs = _karras_ve_schedule(n, lo, hi)
    geometric = hi * (lo / hi) ** (np.arange(n) / (n - 1))
    np.testing.assert_allclose(cv.sigma_from_ve_time(theirs), geometric, rtol=1e-13)
    np.testing.assert_allclose(cv.ve_time_from_sigma(geometric), theirs, rtol=1e-13)
    assert theirs[0] == pytest.approx(hi ** 2) and theirs[-1] == pytest.approx(lo ** 2)
    assert cv.sigma_from_ve_time(4.0) == 2.0 and cv.ve_time_from_sigma(3.0) == 9.0
    with pytest.raises(ValueError, match="t must be finite and > 0"):
        cv.sigma_from_ve_time(-1.0)


def test_churn_gamma_against_edm_and_k_diffusion():
    """edm_sampler's and k-diffusion's gamma on every sigma of an 18-step grid (exactly: the same min of the
    same two numbers), and max in place of min (a floor, not a cap) at S_churn = 0."""
    sigmas = cv.karras_sigmas(18)
    for S_churn, S_min, S_max in ((40.0, 0.05, 50.0), (1.0, 0.0, np.inf), (0.0, 0.0, np.inf)):
        for t_cur in sigmas[:-1]:
            theirs = min(S_churn / 18, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
            assert cv.churn_gamma(t_cur, 18, S_churn, S_min, S_max) == theirs
            k_diff = min(S_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if S_min <= t_cur <= S_max else 0.0
            assert cv.churn_gamma(t_cur, len(sigmas) - 1, S_churn, S_min, S_max) == k_diff
    assert cv.churn_gamma(1.0, 18, 0.0) == 0.0  # where max(0 / 18, sqrt 2 - 1) would churn at S_churn = 0
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        cv.churn_gamma(1.0, 0, 1.0)


def test_the_likelihood_conversions_invert_each_other_and_match_a_transcription():
    """A trace estimate written as a sum over the probes (the slip) against refscore's mean over them, each
    transcribed here as a loop: the conversion brings one to the other and its inverse back, for any m; the
    prior term adds to the divergence integral."""
    rng = np.random.default_rng(3)
    A, prior = rng.standard_normal((4, 4)), -2.5
    for m in (1, 2, 5):
        z = rng.choice([-1.0, 1.0], size=(m, 4))
        summed = prior + sum(float(zk @ A @ zk) for zk in z)
        mean = prior + sum(float(zk @ A @ zk) for zk in z) / m
        assert np.isclose(cv.log_likelihood_from_probe_sum(summed, prior, m), mean, rtol=1e-14)
        assert np.isclose(cv.probe_sum_from_log_likelihood(mean, prior, m), summed, rtol=1e-14)
    assert cv.log_likelihood_with_prior(-1.0, prior) == -3.5
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="n_probes must be a positive integer"):
            cv.log_likelihood_from_probe_sum(1.0, 0.0, bad)
