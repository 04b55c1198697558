"""Kinetic Langevin (BAOAB, OBABO, ABOBA): the steps by hand, the exact Gaussian laws, the whole run."""
import math

import numpy as np
import pytest

from refscore.distributions import Gaussian, GaussianMixture
from refscore.noise import normal
from refscore.sampling import DivergenceWarning
from refscore.sampling.kinetic import (INITIAL_MOMENTUM_STEP, SPLITTINGS, aboba_step, baoab_step,
                                       kinetic_langevin, kinetic_stationary_law, kinetic_step_matrices,
                                       kinetic_transient_law, obabo_step)

NAMES = list(SPLITTINGS)


def _rotation(angle):
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


# 2-D anisotropic Gaussian: variances 4 and 0.25 along a rotated frame
R = _rotation(0.6)
COV2 = R @ np.diag([4.0, 0.25]) @ R.T
P2 = np.linalg.inv(COV2)
MU2 = np.array([1.0, -0.5])


# ------------------------------------------------------------------ (a) the steps by hand
def _hand(name, q, p, s, h, g, xi1, xi2, m):
    """The splittings written out scalar by scalar (1-D), independently of the module's word interpreter."""
    if name == "BAOAB":
        c = math.exp(-g * h)
        p = p + h / 2 * s(q)
        q = q + h / 2 / m * p
        p = c * p + math.sqrt(m * (1 - c * c)) * xi1
        q = q + h / 2 / m * p
        p = p + h / 2 * s(q)
    elif name == "OBABO":
        c = math.exp(-g * h / 2)
        p = c * p + math.sqrt(m * (1 - c * c)) * xi1
        p = p + h / 2 * s(q)
        q = q + h / m * p
        p = p + h / 2 * s(q)
        p = c * p + math.sqrt(m * (1 - c * c)) * xi2
    else:
        c = math.exp(-g * h)
        q = q + h / 2 / m * p
        p = p + h / 2 * s(q)
        p = c * p + math.sqrt(m * (1 - c * c)) * xi1
        p = p + h / 2 * s(q)
        q = q + h / 2 / m * p
    return q, p


@pytest.mark.parametrize("name, want", [("BAOAB", (1.125, -0.03125)), ("OBABO", (1.125, -0.03125)),
                                        ("ABOBA", (1.109375, -0.0625))])
def test_steps_without_friction_equal_the_hand_computation_exactly(name, want):
    # q = 1, p = 1/2, s = -q, h = 1/2, no friction: every intermediate is a short binary fraction, exact in float64
    q1, p1 = SPLITTINGS[name](np.array([[1.0]]), np.array([[0.5]]), lambda q: -q, 0.5, 0.0, np.array([[0.7, -1.3]]))
    assert (q1.item(), p1.item()) == want


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mass", [1.0, 2.5])
def test_steps_with_friction_and_noise_equal_the_hand_computation(name, mass):
    s = lambda q: -3.0 * q + np.sin(q)  # a non-linear score  # noqa: E731
    h, g, xi1, xi2 = 0.3, 1.7, 0.8, -1.1
    q1, p1 = SPLITTINGS[name](np.array([[0.4]]), np.array([[-0.9]]), s, h, g, np.array([[xi1, xi2]]), mass)
    wq, wp = _hand(name, 0.4, -0.9, lambda q: -3.0 * q + math.sin(q), h, g, xi1, xi2, mass)
    # the hand version computes 1 - c^2 and h/2/m in another order than the module (expm1, tau / m): a few ulp
    assert q1.item() == pytest.approx(wq, rel=1e-14, abs=1e-15)
    assert p1.item() == pytest.approx(wp, rel=1e-14, abs=1e-15)


# ------------------------------------------------------------------ (b) closed forms, 1-D
def _closed_form(name, h, w, m=1.0):
    eps = h * h * w * w / (4 * m)
    return {"BAOAB": (1.0, m * (1 - eps)), "OBABO": (1 / (1 - eps), m), "ABOBA": (1.0, m / (1 - eps))}[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("h, w, g", [(0.1, 1.0, 1.0), (0.5, 2.0, 0.3), (1.2, 1.5, 4.0), (0.05, 30.0, 10.0),
                                     (1.9, 1.0, 0.7)])
def test_stationary_law_matches_the_harmonic_closed_forms(name, h, w, g):
    mean, cov = kinetic_stationary_law([[w * w]], [0.0], h, g, name)
    var_q_w2, var_p = _closed_form(name, h, w)
    # a 2x2 Lyapunov solve: round-off only, relative to the entries (condition grows as h w -> 2 and gamma h -> 0)
    assert cov[0, 0] * w * w == pytest.approx(var_q_w2, rel=1e-12)
    assert cov[1, 1] == pytest.approx(var_p, rel=1e-12)
    assert abs(cov[0, 1]) <= 1e-12 * math.sqrt(cov[0, 0] * cov[1, 1])
    assert np.allclose(mean, 0.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_stationary_law_with_a_mass(name):
    # the same forms with eps = h^2 w^2 / (4 m) and p ~ N(0, m): the change of variables p = sqrt(m) u
    h, w, m = 0.8, 1.5, 2.5
    _, cov = kinetic_stationary_law([[w * w]], [0.0], h, 0.9, name, mass=m)
    var_q_w2, var_p = _closed_form(name, h, w, m)
    assert cov[0, 0] * w * w == pytest.approx(var_q_w2, rel=1e-12)  # Lyapunov round-off, as above
    assert cov[1, 1] == pytest.approx(var_p, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_stationary_law_in_two_dimensions_is_the_closed_form_in_p(name):
    h, m = 0.4, 1.3
    mean, cov = kinetic_stationary_law(P2, MU2, h, 0.8, name, mass=m)
    eye = np.eye(2)
    want_qq, want_pp = {"BAOAB": (COV2, m * eye - h * h * P2 / 4),
                        "OBABO": (np.linalg.inv(P2 - h * h * P2 @ P2 / (4 * m)), m * eye),
                        "ABOBA": (COV2, m * np.linalg.inv(eye - h * h * P2 / (4 * m)))}[name]
    # matrix inverses and a 4x4 Lyapunov solve: round-off of a few 1e-15 on entries of size ~4
    assert np.allclose(cov[:2, :2], want_qq, rtol=1e-12, atol=1e-13)
    assert np.allclose(cov[2:, 2:], want_pp, rtol=1e-12, atol=1e-13)
    assert np.allclose(cov[:2, 2:], 0.0, rtol=0, atol=1e-13)
    assert np.allclose(mean, np.r_[MU2, 0.0, 0.0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_stationary_law_is_refused_where_the_map_does_not_contract(name):
    with pytest.raises(ValueError, match=r"spectral radius .* not below 2"):
        kinetic_stationary_law([[1.0]], [0.0], 2.0, 1.0, name)  # h w = 2: the edge, an eigenvalue -1
    with pytest.raises(ValueError, match="friction is 0"):
        kinetic_stationary_law([[1.0]], [0.0], 0.5, 0.0, name)
    # just inside the bound it exists, with the closed form
    _, cov = kinetic_stationary_law([[1.0]], [0.0], 1.99, 1.0, name)
    assert cov[1, 1] == pytest.approx(_closed_form(name, 1.99, 1.0)[1], rel=1e-9)  # ill-conditioned near the edge


# ------------------------------------------------------------------ (c) the step is the affine map
@pytest.mark.parametrize("name", NAMES)
def test_the_step_is_the_affine_map_of_its_matrices(name):
    m = 1.7
    M, c, L = kinetic_step_matrices(P2, MU2, 0.35, 1.2, name, mass=m)
    score = Gaussian(MU2, COV2).score
    rng = np.random.default_rng(0)
    q, p = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    for xi in (np.zeros((5, 4)), rng.standard_normal((5, 4))):
        q1, p1 = SPLITTINGS[name](q, p, score, 0.35, 1.2, xi, mass=m)
        z1 = np.hstack([q, p]) @ M.T + c + xi @ L.T
        # sub-flow by sub-flow vs the composed matrices: the same sums in another order (and BLAS), ~1e-15
        assert np.allclose(np.hstack([q1, p1]), z1, rtol=1e-13, atol=1e-13)
    if name != "OBABO":
        assert not L[:, 2:].any()  # one O per step: the second half of xi is unused


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("record", [None, 3])
def test_the_run_iterates_the_pure_step_with_the_counter_noise_bitwise(name, record):
    target = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [2.0, 0.0]], [np.eye(2), 0.5 * np.eye(2)])
    x0 = np.array([[0.1, 0.2], [-1.0, 1.5], [2.0, -0.3]])
    seed, n_steps, h, g, m = 11, 12, 0.2, 0.9, 1.4
    res = kinetic_langevin(target, x0, h, n_steps, g, seed, splitting=name, mass=m, record=record)
    chains = np.arange(3)
    q = x0.copy()
    p = math.sqrt(m) * normal(seed, chains, INITIAL_MOMENTUM_STEP, 2)
    qs, ps = [], []
    for t in range(n_steps):
        q, p = SPLITTINGS[name](q, p, target.score, h, g, normal(seed, chains, t, 4), mass=m)
        qs.append(q)
        ps.append(p)
    # same arithmetic in the same order and the same counter-based noise: bitwise by construction
    assert np.array_equal(res.x, q) and np.array_equal(res.momentum, p)
    assert not res.diverged.any()
    if record:
        assert np.array_equal(res.trace, np.stack(qs[record - 1::record]))
        assert np.array_equal(res.momentum_trace, np.stack(ps[record - 1::record]))
    else:
        assert res.trace is None and res.momentum_trace is None


def test_a_given_v0_is_used_and_not_modified():
    target = Gaussian(np.zeros(1), np.eye(1))
    v0 = np.array([[0.5]])
    res = kinetic_langevin(target, np.array([[1.0]]), 0.5, 1, 0.0, seed=0, v0=v0)
    assert (res.x.item(), res.momentum.item()) == (1.125, -0.03125)  # the hand value of the step test
    assert v0.item() == 0.5


def test_a_diverging_chain_is_frozen_and_flagged():
    target = Gaussian(np.zeros(1), np.eye(1))
    x0 = np.array([[1.0], [1e148]])
    # h w = 3 > 2: the deviation grows by about 3.65 per step, so the second chain leaves the bound in a few steps
    with pytest.warns(DivergenceWarning) as caught:
        res = kinetic_langevin(target, x0, 3.0, 6, 1.0, seed=0, v0=np.zeros((2, 1)))
    assert any("1 of 2 chains diverged" in str(w.message) and "left the bound" in str(w.message) for w in caught)
    assert res.diverged.tolist() == [False, True]
    assert np.all(np.abs(res.x[1]) <= 1e150) and np.all(np.abs(res.momentum[1]) <= 1e150)  # last state inside
    assert abs(res.x[1, 0]) > 1e148  # it moved before it froze


def test_an_unstable_step_on_a_gaussian_is_warned_before_the_run():
    target = Gaussian(np.zeros(1), np.array([[0.25]]))  # omega = 2: stable for h < 1
    with pytest.warns(DivergenceWarning, match=r"step \* sqrt\(lambda_max\(P\) / mass\) < 2, here 2\.4"):
        kinetic_langevin(target, np.zeros((2, 1)), 1.2, 1, 1.0, seed=0)


# ------------------------------------------------------------------ (d) the transient law
def _propagate_by_substeps(name, P, mu, h, g, m, n_steps, mean, cov):
    """Moments pushed through B, A, O one sub-flow at a time (no composed step matrix, no module code)."""
    d = len(mu)
    I, Z = np.eye(d), np.zeros((d, d))
    count = {k: name.count(k) for k in "BAO"}
    for _ in range(n_steps):
        for letter in name:
            tau = h / count[letter]
            if letter == "B":
                F, f, Q = np.block([[I, Z], [-tau * P, I]]), np.r_[np.zeros(d), tau * P @ mu], 0.0
            elif letter == "A":
                F, f, Q = np.block([[I, tau / m * I], [Z, I]]), np.zeros(2 * d), 0.0
            else:
                c = math.exp(-g * tau)
                F, f = np.block([[I, Z], [Z, c * I]]), np.zeros(2 * d)
                Q = np.block([[Z, Z], [Z, m * (1 - c * c) * I]])
            mean, cov = F @ mean + f, F @ cov @ F.T + Q
    return mean, cov


@pytest.mark.parametrize("name", NAMES)
def test_transient_law_matches_an_independent_propagation(name):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 4))
    m0, S0 = rng.standard_normal(4), A @ A.T
    got = kinetic_transient_law(P2, MU2, 0.3, 0.6, name, 25, m0, S0, mass=1.2)
    want = _propagate_by_substeps(name, P2, MU2, 0.3, 0.6, 1.2, 25, m0, S0)
    # 25 steps of 4x4 products in two groupings: round-off only, entries of size ~10
    assert np.allclose(got[0], want[0], rtol=1e-11, atol=1e-12)
    assert np.allclose(got[1], want[1], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_transient_law_converges_to_the_stationary_law(name):
    mean, cov = kinetic_stationary_law(P2, MU2, 0.3, 1.0, name)
    m_k, S_k = kinetic_transient_law(P2, MU2, 0.3, 1.0, name, 2000, np.zeros(4), np.zeros((4, 4)))
    # the slowest mode contracts by < 0.99 per step here: 2000 steps leave < 1e-8 of the start; then round-off
    assert np.allclose(m_k, mean, rtol=0, atol=1e-10)
    assert np.allclose(S_k, cov, rtol=0, atol=1e-10)
    assert kinetic_transient_law(P2, MU2, 0.3, 1.0, name, 0, mean, cov)[1] is not cov  # k = 0 returns the start
    assert np.array_equal(kinetic_transient_law(P2, MU2, 0.3, 1.0, name, 0, mean, cov)[1], cov)


# ------------------------------------------------------------------ (e) Monte Carlo
@pytest.mark.slow  # 4-6 s per splitting on a loaded core (2e5 chains x 30 steps)
@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_reaches_the_exact_law(name):
    n, n_steps, h, g, m = 200_000, 30, 0.5, 1.0, 1.0
    target = Gaussian(MU2, COV2)
    x0 = np.broadcast_to(np.array([0.5, 0.5]), (n, 2))
    res = kinetic_langevin(target, x0, h, n_steps, g, seed=2024, splitting=name, mass=m)
    z = np.hstack([res.x, res.momentum])
    # the exact law after n_steps from q0 fixed and p0 ~ N(0, m I) (the default v0)
    start_cov = np.diag([0.0, 0.0, m, m])
    mean, cov = kinetic_transient_law(P2, MU2, h, g, name, n_steps, np.r_[0.5, 0.5, 0.0, 0.0], start_cov)
    stat_mean, stat_cov = kinetic_stationary_law(P2, MU2, h, g, name, mass=m)
    # it has arrived to within 1e-3 (7e-4 on the mean: a sixth of its standard error, 4.5e-3)
    assert np.allclose(mean, stat_mean, rtol=0, atol=1e-3) and np.allclose(cov, stat_cov, rtol=0, atol=1e-3)
    # 5 standard errors for Gaussian moments: sd(z_i) / sqrt(n), sqrt(S_ii S_jj + S_ij^2) / sqrt(n);
    # 14 statistics at 5 SE fail by chance with probability < 1e-5
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(z.mean(axis=0) - mean) < 5 * se_mean), (z.mean(axis=0) - mean) / se_mean
    emp = np.cov(z, rowvar=False)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    assert np.all(np.abs(emp - cov) < 5 * se_cov), (emp - cov) / se_cov


# ------------------------------------------------------------------ (f) bad input
def test_bad_input_raises_clear_errors():
    t = Gaussian(np.zeros(2), np.eye(2))
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"splitting must be one of \['BAOAB', 'OBABO', 'ABOBA'\], got 'BAOBA'"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, splitting="BAOBA")
    with pytest.raises(TypeError, match="splitting must be one of"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, splitting=1)
    with pytest.raises(ValueError, match=r"friction must be finite and >= 0, got -0\.5"):
        kinetic_langevin(t, x0, 0.1, 5, -0.5, 0)
    with pytest.raises(TypeError, match="friction must be a real number"):
        kinetic_langevin(t, x0, 0.1, 5, "1", 0)
    with pytest.raises(ValueError, match="x0 must be finite"):
        kinetic_langevin(t, np.array([[0.0, np.nan]]), 0.1, 5, 1.0, 0)
    with pytest.raises(ValueError, match=r"v0 must have the shape of x0, \(3, 2\), got shape \(3, 1\)"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, v0=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="v0 must be finite"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, v0=np.full((3, 2), np.inf))
    with pytest.raises(ValueError, match="mass must be finite and > 0"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, mass=0.0)
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        kinetic_langevin(t, x0, -0.1, 5, 1.0, 0)
    with pytest.raises(ValueError, match=r"n_steps must be <= 2\*\*32 - 1"):
        kinetic_langevin(t, x0, 0.1, 2 ** 32, 1.0, 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        kinetic_langevin(t, x0, 0.1, 5, 1.0, 0, backend="jax")
    with pytest.raises(TypeError, match="kinetic_langevin needs a target with score\\(x\\)"):
        kinetic_langevin(t.perturbed(), x0, 0.1, 5, 1.0, 0)


def test_bad_input_to_the_steps_and_laws_raises_clear_errors():
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"xi must have shape \(2, 6\), got \(2, 3\)"):
        baoab_step(q, q, lambda v: -v, 0.1, 1.0, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"p must have shape \(2, 3\)"):
        obabo_step(q, np.zeros(3), lambda v: -v, 0.1, 1.0, np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"score\(q\) must return shape"):
        aboba_step(q, q, lambda v: v[:, :1], 0.1, 1.0, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="friction must be finite and >= 0"):
        kinetic_step_matrices([[1.0]], [0.0], 0.1, -1.0, "BAOAB")
    with pytest.raises(ValueError, match="precision must be symmetric"):
        kinetic_step_matrices([[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], 0.1, 1.0, "BAOAB")
    with pytest.raises(ValueError, match="precision must be positive definite, got smallest eigenvalue -1"):
        kinetic_step_matrices([[-1.0]], [0.0], 0.1, 1.0, "BAOAB")
    with pytest.raises(ValueError, match=r"mean must have shape \(2,\)"):
        kinetic_step_matrices(np.eye(2), [0.0], 0.1, 1.0, "BAOAB")
    with pytest.raises(ValueError, match=r"start_cov must have shape \(2, 2\)"):
        kinetic_transient_law([[1.0]], [0.0], 0.1, 1.0, "BAOAB", 3, [0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match="start_cov must be positive semi-definite"):
        kinetic_transient_law([[1.0]], [0.0], 0.1, 1.0, "BAOAB", 3, [0.0, 0.0], -np.eye(2))


# ------------------------------------------------------------------ (g) the validation experiment's formulas
def test_validation_closed_forms_equal_the_lyapunov_law_in_three_dimensions():
    from refscore.validation.kinetic_splittings import closed_form_cov

    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 3))
    P = A @ A.T + 0.5 * np.eye(3)  # an SPD precision with no special structure
    lam_max = np.linalg.eigvalsh(P)[-1]
    for name in NAMES:
        for frac in (0.1, 0.5, 0.9):  # of the stability bound h < 2 sqrt(m / lambda_max)
            h, m = frac * 2.0 * math.sqrt(1.7 / lam_max), 1.7
            # matrix functions of P (the closed forms) vs scipy's Lyapunov solver: round-off of the solver
            want = kinetic_stationary_law(P, np.zeros(3), h, 0.8, name, mass=m)[1]
            assert np.allclose(closed_form_cov(P, h, name, mass=m), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_validation_counts_score_evaluations_as_the_run_makes_them():
    from refscore.sampling import CallableTarget
    from refscore.validation.kinetic_splittings import evaluations

    for name in NAMES:
        calls = []
        t = CallableTarget(2, lambda x: calls.append(1) or -x)
        kinetic_langevin(t, np.zeros((2, 2)), 0.1, 17, 1.0, 0, splitting=name, progress=False)  # one chunk
        assert len(calls) == evaluations(name, 17)
    assert evaluations(None, 17) == 17  # ULA


def test_validation_kramers_ratio_uses_the_saddle_curvature_of_the_mixture():
    # -log p along q_2 = 0 for 1/2 N(-a, v) + 1/2 N(a, v): (q^2 + a^2) / (2 v) - log cosh(a q / v) + const,
    # whose second derivative at 0 is 1/v - a^2/v^2, so omega_b^2 = a^2/v^2 - 1/v
    from refscore.validation.kinetic_splittings import MIX_COV, MIX_MEANS, kramers_ratio

    a, v = MIX_MEANS[1, 0], MIX_COV[0, 0]
    wb2 = a * a / (v * v) - 1.0 / v
    mix = GaussianMixture([0.5, 0.5], MIX_MEANS, [MIX_COV, MIX_COV])
    eta, h, g = 0.02, 0.2, 1.0
    want = (h / eta) * (math.sqrt(g * g / 4 + wb2) - g / 2) / wb2
    # a central difference with e = 1e-4: truncation e^2 U''''/12 ~ 1e-7, round-off 1e-16 / e^2 ~ 1e-8
    assert kramers_ratio(mix, eta, h, g) == pytest.approx(want, rel=1e-5)


def test_validation_moment_z_tells_the_right_law_from_a_wrong_one():
    from refscore.validation.kinetic_splittings import moment_z

    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    z = Gaussian(np.array([1.0, 0.0]), cov).sample(50_000, rng=3)
    z_mean, z_cov = moment_z(z, np.array([1.0, 0.0]), cov)
    assert np.max(np.abs(z_mean)) < 5 and np.max(np.abs(z_cov)) < 5  # 5 statistics at 5 SE: fails < 3e-6
    assert np.max(np.abs(moment_z(z, np.array([1.0, 0.0]), 1.1 * cov)[1])) > 10  # 10% off: ~ 20 SE


def test_a_splitting_is_made_from_checked_numbers():
    from refscore._kernels.score_blocks import DRIFT, KICK, REFRESH
    from refscore.sampling.kinetic import Splitting

    k = Splitting.of("ABOBA", 0.5, 2.0, mass=4.0)
    # each letter appearing k times runs for h / k: A twice (tau = 1/4, over m = 4), B twice, O once
    assert (k.word, k.kick, k.drift, k.decay) == ("ABOBA", 0.25, 0.0625, math.exp(-1.0))
    assert k.spread == pytest.approx(math.sqrt(4.0 * (1.0 - math.exp(-2.0))), rel=1e-15)
    assert k.letters.tolist() == [DRIFT, KICK, REFRESH, KICK, DRIFT]
    with pytest.raises(ValueError, match="splitting must be one of"):
        Splitting.of("BAOBA", 0.5, 1.0)
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        Splitting.of("BAOAB", 0.0, 1.0)
    with pytest.raises(ValueError, match="friction must be finite and >= 0"):
        Splitting.of("BAOAB", 0.5, float("inf"))
    with pytest.raises(ValueError, match="mass must be finite and > 0"):
        Splitting.of("BAOAB", 0.5, 1.0, mass=-1.0)
