"""Exact output laws of every diffusion sampler on Gaussian data (refscore.diffusion.laws, output_map/output_law):
against the samplers themselves (the linear part, the offset and the added-noise covariance, each read off runs
of the registry's steps on basis vectors and injected basis noise, to round-off), by Monte Carlo with the
counter noise, against the closed-form probability-flow map, and the orders of convergence to the data law
measured on the exact laws; KL and W2 between Gaussians against independent formulas."""
import itertools
import math

import numpy as np
import pytest

from refscore.diffusion.coefficients import StepContext
from refscore.diffusion.denoiser import Denoiser
from refscore.diffusion.laws import gaussian_kl, gaussian_w2
from refscore.diffusion.samplers import SAMPLERS, output_distances, output_law, output_map, sample
from refscore.diffusion.schedules import EDM, VP, Flow, VPDiscrete
from refscore.distributions import Gaussian
from refscore.noise import normal
from refscore.quadrature import expectation

DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
VPD = VPDiscrete()
CHURN = {"S_churn": 8.0, "S_tmin": 0.01, "S_tmax": 50.0, "S_noise": 1.002}


def _schedules():
    """(schedule, grid): EDM's Karras grid; VP to 1e-3 then 0; DDPM's trailing spacing to the clean -1; flow."""
    return {
        "edm": (EDM(), EDM().grid(12)),
        "vp": (VP(), np.append(np.linspace(1.0, 1e-3, 14), 0.0)),
        "ddpm": (VPD, np.append(VPD.timesteps(10, "trailing"), -1.0).astype(float)),
        "flow": (Flow(), np.linspace(0.999, 0.0, 13)),
    }


def _cases(n_steps):
    """(sampler, options) covering every sampler and its stochastic variants."""
    eps = np.linspace(2e-3, 6e-3, 2 * n_steps).reshape(n_steps, 2)  # corrector step sizes per step
    return [
        ("euler", {}), ("heun", {}), ("euler", CHURN), ("heun", CHURN),
        ("ddim", {}), ("ddim", {"eta": 0.5}), ("ddpm", {}), ("ddpm", {"variance": "large"}),
        ("euler_ancestral", {}), ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}), ("dpmpp_2m", {}),
        ("pc", {"step_size": eps[:, :1]}),
        ("pc", {"predictor": "euler_maruyama", "corrector_steps": 2, "step_size": eps, "order": "predictor_first",
                "langevin_alpha": "alpha_bar"}),
        ("pc", {"corrector_steps": 2, "step_size": eps, "langevin_alpha": "step", "denoise": False}),
    ]


def _ids(cases):
    return [f"{s}-{i}" for i, (s, _) in enumerate(cases)]


def _run(sampler, den, sched, x, grid, noise_at=None, **options):
    """The registry's run adapters looped as sample() loops them, with chosen noise: all zero, except the vector
    ``noise_at = (step, block, v)``."""
    row = SAMPLERS[sampler]
    g = np.asarray(grid, float)
    n_steps = len(g) - 1
    opts = row.check({**row.options, **options}, n_steps)
    k = row.noise_blocks(opts)
    ctx = StepContext(0, n_steps)
    for i in range(n_steps):
        ctx.i = i
        noise = [np.zeros_like(x) for _ in range(k)]
        if noise_at is not None and noise_at[0] == i:
            noise[noise_at[1]] = np.broadcast_to(noise_at[2], x.shape).copy()
        x = row.run(den.x0, sched, x, float(g[i]), float(g[i + 1]), noise, ctx, **opts)
    return x, k


@pytest.mark.parametrize("name", ["edm", "vp", "ddpm", "flow"])
@pytest.mark.parametrize("sampler, options", _cases(20), ids=_ids(_cases(20)))
def test_every_run_is_its_exact_affine_map(name, sampler, options):
    """x_N = A x_0 + b + sum_i L_i xi_i with the step noises xi_i: the steps run on 0 give b, on the basis vectors
    the columns of A, and with one basis vector injected as one noise block the columns of L_i; then
    Q = sum L_i L_i^T.  The laws compose per-eigenvalue coefficients written from docs/diffusion.md, the steps
    apply the denoiser: round-off of ~1e-15 per step on states of size ~1, so 1e-10 relative to the largest."""
    sched, grid = _schedules()[name]
    if sampler == "pc" and options.get("order") == "predictor_first":
        grid = grid[:-1]  # its corrector runs at each step's end, which must have sigma > 0
    if sampler == "euler_ancestral" and name == "flow":
        pass  # alpha(0.999) = 0.001 > 0: EDM's variable exists
    n_steps = len(grid) - 1
    options = {k: (v[:n_steps] if k == "step_size" else v) for k, v in options.items()}
    den = Denoiser(DATA, sched)
    A, b, Q = output_map(sampler, sched, grid, DATA, **options)
    d = 2
    b_run, k = _run(sampler, den, sched, np.zeros((1, d)), grid, **options)
    scale = max(1.0, np.abs(A).max(), np.abs(b).max())
    np.testing.assert_allclose(b_run[0], b, rtol=0, atol=1e-10 * scale)
    A_run = np.stack([_run(sampler, den, sched, np.eye(d)[j][None], grid, **options)[0][0] - b_run[0]
                      for j in range(d)], axis=1)
    np.testing.assert_allclose(A_run, A, rtol=0, atol=1e-10 * scale)
    Q_run = np.zeros((d, d))
    for i, blk in itertools.product(range(n_steps), range(k)):
        L = np.stack([_run(sampler, den, sched, np.zeros((1, d)), grid, (i, blk, np.eye(d)[j]), **options)[0][0]
                      - b_run[0] for j in range(d)], axis=1)
        Q_run += L @ L.T
    np.testing.assert_allclose(Q_run, Q, rtol=0, atol=1e-10 * max(1.0, np.abs(Q).max()))
    assert (np.abs(Q).max() > 0) == (k > 0)


STOCHASTIC = [c for c in _cases(20) if SAMPLERS[c[0]].noise_blocks({**SAMPLERS[c[0]].options, **c[1]}) > 0]


def _monte_carlo(name, sampler, options, n, seed):
    sched, grid = _schedules()[name]
    if sampler == "pc" and options.get("order") == "predictor_first":
        grid = grid[:-1]
    n_steps = len(grid) - 1
    options = {k: (v[:n_steps] if k == "step_size" else v) for k, v in options.items()}
    mean0, cov0 = np.array([0.2, -0.1]), np.array([[1.5, 0.3], [0.3, 0.9]])
    x = mean0 + normal(17, np.arange(n), 2 ** 32 - 1, 2) @ np.linalg.cholesky(cov0).T
    out = sample(sampler, Denoiser(DATA, sched), sched, x, grid, seed=seed, **options)
    m, C = output_law(sampler, sched, grid, DATA, init=(mean0, cov0), **options)
    z_mean = (out.mean(0) - m) / np.sqrt(np.diag(C) / n)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n)  # sampling sd of a Gaussian covariance
    z_cov = (np.cov(out.T) - C) / se
    return max(np.abs(z_mean).max(), np.abs(z_cov[np.triu_indices(2)]).max())


@pytest.mark.parametrize("name", ["edm", "vp", "ddpm"])
@pytest.mark.parametrize("sampler, options", STOCHASTIC, ids=_ids(STOCHASTIC))
def test_stochastic_runs_match_their_law_by_monte_carlo(name, sampler, options):
    """10^4 chains from N(mean0, cov0) against the exact law: 2 means and 3 covariance entries per case, each
    within 4.5 standard errors (30 cases, 150 statistics: a false alarm has probability ~1e-3 under the null;
    the noise is counter-based, so the test is deterministic once it passes)."""
    assert _monte_carlo(name, sampler, options, 10_000, 23) < 4.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["edm", "vp", "ddpm", "flow"])
@pytest.mark.parametrize("sampler, options", STOCHASTIC, ids=_ids(STOCHASTIC))
def test_stochastic_runs_match_their_law_by_monte_carlo_1e5(name, sampler, options):
    """10^5 chains (another seed): standard errors 3.2 times smaller, the same 4.5 threshold (200 statistics)."""
    assert _monte_carlo(name, sampler, options, 100_000, 29) < 4.5


def test_monte_carlo_detects_a_wrong_law():
    """Negative control: DDPM's 'large' variance against the law of 'small' is far outside 4.5 standard errors."""
    sched, grid = _schedules()["vp"]
    n = 10_000
    x = normal(3, np.arange(n), 0, 2)
    out = sample("ddpm", Denoiser(DATA, sched), sched, x, grid, seed=4, variance="large")
    m, C = output_law("ddpm", sched, grid, DATA, init=(np.zeros(2), np.eye(2)), variance="small")
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n)
    assert np.abs((np.cov(out.T) - C) / se).max() > 10


def _flow_map_exact(sched, t0, t1, data=DATA):
    """The exact PF-ODE flow map on Gaussian data: per eigen-coordinate, x - alpha mu scales by
    sqrt(delta(t1)/delta(t0)), delta = alpha^2 l + sigma^2 (the monotone map between the two Gaussian marginals)."""
    lam, V = np.linalg.eigh(data.cov)
    d0 = sched.alpha(t0) ** 2 * lam + sched.sigma(t0) ** 2
    d1 = sched.alpha(t1) ** 2 * lam + sched.sigma(t1) ** 2
    A = (V * np.sqrt(d1 / d0)) @ V.T
    return A, sched.alpha(t1) * data.mean - A @ (sched.alpha(t0) * data.mean)


@pytest.mark.parametrize("name", ["edm", "vp", "ddpm", "flow"])
def test_pf_ode_law_is_the_closed_form_flow_map_and_the_limit_of_heun(name):
    """pf_ode's law composes the exact flow map step by step; the whole map is the closed form between the two
    ends (the flow maps compose); Heun's map converges to it at order 2 (the old limit test)."""
    sched, grid = _schedules()[name]
    A, b, Q = output_map("pf_ode", sched, grid, DATA)
    A_ex, b_ex = _flow_map_exact(sched, grid[0], grid[-1])
    np.testing.assert_allclose(A, A_ex, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b, b_ex, rtol=0, atol=1e-13)
    assert np.all(Q == 0.0)


def test_heun_map_converges_to_the_pf_ode_run_at_order_2():
    """The pf_ode sampler (DOP853 at rtol = atol = 1e-10: ~1e-9) is the limit: Heun's exact map on EDM's grid
    approaches the map read off pf_ode runs on the basis vectors, the error falling 4-fold per halving."""
    edm = EDM()
    den = Denoiser(DATA, edm)
    x = np.vstack([np.zeros(2), np.eye(2)])
    ends = sample("pf_ode", den, edm, x, [80.0, 0.0])
    A_ode, b_ode = (ends[1:] - ends[0]).T, ends[0]
    errs = []
    for n in (64, 128, 256):
        A, b, _ = output_map("heun", edm, edm.grid(n), DATA)
        errs.append(np.abs(A - A_ode).max() + np.abs(b - b_ode).max())
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all(np.abs(ratios - 4) < 0.6), (errs, ratios)
    A_ex, b_ex = _flow_map_exact(edm, 80.0, 0.0)
    np.testing.assert_allclose(A_ode, A_ex, rtol=0, atol=2e-8)  # the integrator's tolerance, not round-off


def _karras_grid(sched, n):
    """EDM's Karras sigma/alpha grid (sigma_max = 80, or the schedule's largest) mapped to the schedule's times,
    ending at its clean end."""
    lo, _ = sched.log_snr_range()
    top = min(80.0, math.exp(-0.5 * lo)) if np.isfinite(lo) else 80.0
    sig = EDM(sigma_max=top).grid(n)[:-1]
    t = np.asarray(sched.t_of_log_snr(-2.0 * np.log(sig)), float)
    return np.append(t, sched.t_min)


CHURN1 = {**CHURN, "S_noise": 1.0}
ORDERS = [("euler", {}), ("heun", {}), ("ddim", {}), ("ddim", {"eta": 1.0}), ("ddpm", {}),
          ("ddpm", {"variance": "large"}), ("euler_ancestral", {}), ("dpmpp_2m", {}), ("pc", {"corrector_steps": 0}),
          ("pc", {"corrector_steps": 0, "predictor": "euler_maruyama"}), ("euler", CHURN1), ("heun", CHURN1)]


@pytest.mark.parametrize("name", ["edm", "vp"])
@pytest.mark.parametrize("sampler, options", ORDERS, ids=_ids(ORDERS))
def test_orders_from_the_exact_laws(name, sampler, options):
    """From the exact marginal at the first time, W2(output law, data law) falls by 2^order per halving of the
    step (100 -> 200 -> 400 steps of the Karras sigma/alpha grid), within 15 %; the order is the registry's
    (Euler 1, Heun 2, DPM-Solver++(2M) 2; the stochastic samplers converge in law at order 1).  EDM's churn
    keeps the order: adding N(0, sigma_hat^2 - sigma^2) noise maps p_sigma to p_sigma_hat exactly, so only the
    ODE step from sigma_hat is in error.  (On the flow schedule Heun's leading error term nearly cancels in W2
    and its ratios wander between 3.5 and 5.7: shown by the validation experiment, not asserted here.)"""
    sched = {"edm": EDM(), "vp": VP()}[name]
    order = SAMPLERS[sampler].order
    errs = [output_distances(sampler, sched, _karras_grid(sched, n), DATA, **options).w2 for n in (100, 200, 400)]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all(np.abs(ratios - 2 ** order) < 0.15 * 2 ** order), (errs, ratios)


def test_churn_with_s_noise_above_1_converges_to_another_law():
    """S_noise = 1.002 (Karras et al.'s choice) adds more noise than the churn removes: the law no longer tends
    to the data law; W2 levels off near 2e-3 (EDM, 800 steps) while S_noise = 1 keeps falling 4-fold."""
    edm = EDM()
    errs = [output_distances("heun", edm, edm.grid(n), DATA, **CHURN).w2 for n in (200, 400, 800)]
    assert errs[-1] > 1e-3 and errs[1] / errs[2] < 1.2
    exact = output_distances("heun", edm, edm.grid(800), DATA, **CHURN1).w2
    assert exact < 1e-4


def test_output_law_starts():
    """init='prior' is N(0, sigma^2 I) pushed through the map; init=(m, C) any start; 'marginal' the exact one."""
    edm = EDM()
    g = edm.grid(10)
    A, b, Q = output_map("ddpm", edm, g, DATA)
    m, C = output_law("ddpm", edm, g, DATA, init="prior")
    np.testing.assert_allclose(m, b, atol=1e-15)
    np.testing.assert_allclose(C, 80.0 ** 2 * A @ A.T + Q, rtol=1e-13)
    m2, C2 = output_law("ddpm", edm, g, DATA)
    np.testing.assert_allclose(m2, A @ DATA.mean + b, rtol=1e-13)
    np.testing.assert_allclose(C2, A @ (DATA.cov + 6400.0 * np.eye(2)) @ A.T + Q, rtol=1e-13)


# ------------------------------------------------------------------ KL and W2
def test_gaussian_kl_and_w2_against_independent_formulas():
    rng = np.random.default_rng(5)
    for d in (1, 2, 3):
        B0, B1 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
        c0, c1 = B0 @ B0.T + 0.3 * np.eye(d), B1 @ B1.T + 0.3 * np.eye(d)
        m0, m1 = rng.standard_normal(d), rng.standard_normal(d)
        # KL: the textbook form, and E_0[log p0 - log p1] by Gauss-Hermite (exact for quadratics)
        i1 = np.linalg.inv(c1)
        text = 0.5 * (np.trace(i1 @ c0) + (m1 - m0) @ i1 @ (m1 - m0) - d
                      + np.linalg.slogdet(c1)[1] - np.linalg.slogdet(c0)[1])
        g0, g1 = Gaussian(m0, c0), Gaussian(m1, c1)
        quad = float(expectation(lambda x: g0.logpdf(x) - g1.logpdf(x), g0))
        assert gaussian_kl(m0, c0, m1, c1) == pytest.approx(text, rel=1e-11)
        assert gaussian_kl(m0, c0, m1, c1) == pytest.approx(quad, rel=1e-10)
        # W2: the trace form with scipy's sqrtm
        from scipy.linalg import sqrtm
        r1 = np.real(sqrtm(c1))
        w2sq = np.sum((m0 - m1) ** 2) + np.trace(c0 + c1 - 2 * np.real(sqrtm(r1 @ c0 @ r1)))
        assert gaussian_w2(m0, c0, m1, c1) == pytest.approx(math.sqrt(w2sq), rel=1e-10)
    # 1-D closed forms; commuting covariances: sum of (sqrt a - sqrt b)^2
    assert gaussian_w2([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(math.sqrt(1 + 1), rel=1e-15)
    assert gaussian_kl([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(0.5 * (4 + 1 - 1 - math.log(4)), rel=1e-15)
    V = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0 + 1e-9, 2.0, 3.0 - 2e-9])
    want = math.sqrt((math.sqrt(1 + 1e-9) - 1) ** 2 + (math.sqrt(3 - 2e-9) - math.sqrt(3)) ** 2)
    # close laws: the cancellation-free forms keep digits the trace form loses (W2 ~ 6e-10 here)
    assert gaussian_w2(np.zeros(3), (V * a) @ V.T, np.zeros(3), (V * b) @ V.T) == pytest.approx(want, rel=1e-5)
    kl_small = gaussian_kl([0.0], [[1.0 + 1e-6]], [0.0], [[1.0]])
    assert kl_small == pytest.approx(0.5 * (1e-6 - math.log1p(1e-6)), rel=1e-9)
    assert kl_small == pytest.approx(0.25e-12 - 1e-18 / 6, rel=1e-9)


def test_output_distances_are_those_of_the_output_law():
    edm = EDM()
    g = edm.grid(20)
    m, C = output_law("heun", edm, g, DATA)
    dist = output_distances("heun", edm, g, DATA)
    assert dist.kl == gaussian_kl(m, C, DATA.mean, DATA.cov) and dist.w2 == gaussian_w2(m, C, DATA.mean, DATA.cov)
    assert 0 < dist.kl and 0 < dist.w2 < 0.05
    with pytest.raises(ValueError, match="same dimension"):
        gaussian_kl([0.0], [[1.0]], [0.0, 0.0], np.eye(2))
