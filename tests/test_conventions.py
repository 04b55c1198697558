"""Tests of refscore.conventions: every constant and conversion, each against an independent route.

Constants: closed forms with ``np.linalg.inv`` written here, scipy ``quad`` in 1-D,
and the losses themselves integrated exactly on Gauss–Hermite nodes (a Gaussian
model on Gaussian data has polynomial integrands of degree 2).  Conversions:
round trips, exact per-sample identities on the losses, angle integrals over
the sphere, and identical Langevin iterates under the two step conventions.
"""
import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from refscore import conventions as cv
from refscore import losses
from refscore.distributions import Gaussian, GaussianMixture, StudentT
from refscore.models import GaussianMixtureModel, LinearScore
from refscore.quadrature import gauss_hermite_nodes


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
    """NCSN Algorithm 1 (α_i = ε σ_i²/σ_L², x + α_i/2 s + √α_i z) vs refscore's η_i."""
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
                 "dsm_minus_esm", "dsm_minus_ism_noised", "projection_scale"]:
        assert name in md, name


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


def test_dist_must_be_gaussian_or_mixture():
    with pytest.raises(TypeError, match="dist must be a Gaussian or GaussianMixture.*StudentT"):
        cv.esm_minus_ism(StudentT([0.0], [[1.0]], 3.0))
