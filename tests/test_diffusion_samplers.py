"""Diffusion samplers: steps against transcriptions of NVlabs/edm and diffusers, the exact affine map and output
law on Gaussian data against the samplers themselves (exactly for deterministic ones, by Monte Carlo for DDIM
with eta > 0), and the known limits as the grid refines."""
import math

import numpy as np
import pytest

from refscore.distributions import Gaussian, GaussianMixture
from refscore.diffusion.denoiser import Denoiser
from refscore.diffusion.laws import ddim_noise_scales
from refscore.diffusion.samplers import SAMPLERS, output_law, output_map, sample
from refscore.diffusion.schedules import EDM, VP, Flow, VPDiscrete, convert
from refscore.noise import normal

DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
MIX = GaussianMixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2) * 0.2, np.eye(2) * 0.4])
VPD = VPDiscrete()


def _grids():
    """(schedule, grid) pairs: EDM's Karras grid, VP to 1e-3 (score_sde's eps), flow, DDPM's leading spacing
    ending at the clean timestep -1 (diffusers' DDIM with set_alpha_to_one)."""
    return {
        "edm": (EDM(), EDM().grid(12)),
        "vp": (VP(), np.linspace(1.0, 1e-3, 15)),
        "flow": (Flow(), np.linspace(0.999, 0.0, 15)),
        "ddpm": (VPD, np.append(VPD.timesteps(10, "leading", 1), -1.0).astype(float)),
    }


# ------------------------------------------------------------------ steps against transcriptions
def test_heun_on_edm_is_nvlabs_edm_sampler():
    """NVlabs/edm generate.py edm_sampler with S_churn = 0, transcribed: d = (x - D(x, t))/t; x' = x + (t' - t) d;
    unless it is the last step, d' = (x' - D(x', t'))/t' and x' = x + (t' - t)(d/2 + d'/2)."""
    edm = EDM(0.002, 80.0, 7.0)
    D = Denoiser(MIX, edm).x0
    ts = edm.grid(10)
    x0 = normal(3, np.arange(6), 0, 2) * ts[0]
    x = x0.copy()
    for i, (t, tn) in enumerate(zip(ts[:-1], ts[1:])):
        d = (x - D(x, t)) / t
        xn = x + (tn - t) * d
        if i < len(ts) - 2:
            d2 = (xn - D(xn, tn)) / tn
            xn = x + (tn - t) * (0.5 * d + 0.5 * d2)
        x = xn
    # same operations in another order (velocity = d_alpha x0 + d_sigma (x - alpha x0)/sigma): a few ulp per step
    np.testing.assert_allclose(sample("heun", D, edm, x0, ts), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sample("euler", D, edm, x0, ts[:2]), x0 + (ts[1] - ts[0]) * (x0 - D(x0, ts[0])) / ts[0],
                               rtol=1e-13)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_on_ddpm_tables_is_diffusers_ddim_step(eta):
    """diffusers scheduling_ddim.py DDIMScheduler.step, transcribed with prediction_type 'epsilon':
    prev = t - T // n; ab_prev = alphas_cumprod[prev] if prev >= 0 else 1 (set_alpha_to_one);
    variance = (1 - ab_prev)/(1 - ab_t) (1 - ab_t/ab_prev); std = eta sqrt(variance);
    x0 = (x - sqrt(1 - ab_t) eps)/sqrt(ab_t); x' = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - std^2) eps + std z."""
    n_steps, T = 10, 1000
    ts = VPD.timesteps(n_steps, "leading", 0)
    ab = VPD.alphas_cumprod
    den = Denoiser(MIX, VPD)
    x = normal(11, np.arange(5), 99, 2)
    xs = x.copy()
    for i, t in enumerate(ts):
        prev = t - T // n_steps
        a_t, a_p = ab[t], (ab[prev] if prev >= 0 else 1.0)
        var = (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
        std = eta * math.sqrt(var)
        eps = den.eps(x, float(t))
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p - std ** 2) * eps + std * normal(4, np.arange(5), i, 2)
    grid = np.append(ts, -1).astype(float)
    got = sample("ddim", den.x0, VPD, xs, grid, eta=eta, seed=4)
    # the transcription predicts eps and derives x0, the sampler the reverse; the near-pure-noise first step
    # divides by sqrt(ab_t) ~ 0.07: agreement to ~1e-12 relative
    np.testing.assert_allclose(got, x, rtol=1e-11, atol=1e-11)


def test_ddim_noise_scale_is_the_ddpm_posterior_std_times_eta():
    """For VP, sigma_n^2 (1 - e^{lambda_t - lambda_n}) equals DDIM's (1 - ab_n)/(1 - ab_t) (1 - ab_t/ab_n)."""
    for t, n in [(999, 899), (500, 499), (20, 0), (10, -1)]:
        a_t, a_n = VPD.alphas_cumprod[t], (VPD.alphas_cumprod[n] if n >= 0 else 1.0)
        want = (1 - a_n) / (1 - a_t) * (1 - a_t / a_n)
        c, s = ddim_noise_scales(VPD.alpha(float(t)), VPD.sigma(float(t)), VPD.alpha(float(n)), VPD.sigma(float(n)),
                                 VPD.log_snr(float(t)), VPD.log_snr(float(n)), 0.7)
        assert s ** 2 == pytest.approx(0.49 * want, rel=1e-12, abs=1e-300)
        assert c ** 2 + s ** 2 == pytest.approx(1 - a_n, rel=1e-12, abs=1e-300)


def test_euler_on_flow_is_the_rectified_flow_step():
    """Flow matching: x' = x + (t' - t) v, v = E[eps - x0 | x] = (x - x0)/t for x = (1 - t) x0 + t eps."""
    fl = Flow()
    D = Denoiser(MIX, fl).x0
    x = normal(2, np.arange(4), 0, 2)
    got = sample("euler", D, fl, x, [0.8, 0.5])
    np.testing.assert_allclose(got, x + (0.5 - 0.8) * (x - D(x, 0.8)) / 0.8, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ the exact map and law
@pytest.mark.parametrize("name", list(_grids()))
@pytest.mark.parametrize("sampler", ["euler", "heun", "ddim"])
def test_deterministic_runs_are_the_exact_affine_map(name, sampler):
    sched, grid = _grids()[name]
    A, b, Q = output_map(sampler, DATA, sched, grid)
    assert np.all(Q == 0.0)
    x = normal(5, np.arange(8), 7, 2) * 3.0
    got = sample(sampler, Denoiser(DATA, sched).x0, sched, x, grid)
    # the sampler applies the denoiser step by step, the map multiplies per-eigenvalue coefficients: round-off
    # of ~1e-15 per step on states of size ~|A x|; 1e-11 relative to the largest covers the runs here
    np.testing.assert_allclose(got, x @ A.T + b, rtol=0, atol=1e-11 * np.abs(got).max())


@pytest.mark.parametrize("name", ["edm", "vp", "ddpm"])
@pytest.mark.parametrize("sampler, eta", [("ddim", 0.5), ("ddim", 1.0), ("heun", 0.0), ("euler", 0.0)])
def test_runs_match_their_exact_law_by_monte_carlo(name, sampler, eta):
    """4000 chains from N(mean0, cov0); every mean coordinate and covariance entry within 4.5 standard errors
    (5 statistics per case, 12 cases: a false alarm has probability ~4e-4 under the null; the noise is
    counter-based, so the test is deterministic once it passes)."""
    sched, grid = _grids()[name]
    n = 4000
    mean0, cov0 = np.array([0.2, -0.1]), np.array([[1.5, 0.3], [0.3, 0.9]])
    L = np.linalg.cholesky(cov0)
    x = mean0 + normal(17, np.arange(n), 2 ** 32 - 1, 2) @ L.T
    out = sample(sampler, Denoiser(DATA, sched).x0, sched, x, grid, eta=eta, seed=23)
    m, C = output_law(sampler, DATA, sched, grid, eta=eta, init=(mean0, cov0))
    z_mean = (out.mean(0) - m) / np.sqrt(np.diag(C) / n)
    Sh = np.cov(out.T)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n)  # Gaussian sampling variance of a covariance
    z_cov = (Sh - C) / se
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_cov).max() < 4.5, (z_mean, z_cov)
    # the runs with eta > 0 add noise of a positive definite covariance, the others none
    _, _, Q = output_map(sampler, DATA, sched, grid, eta=eta)
    assert np.all(np.linalg.eigvalsh(Q) > 0) if eta > 0 else np.all(Q == 0)


def _flow_map_exact(sched, t0, t1, data=DATA):
    """The exact PF-ODE flow map on Gaussian data: per eigen-coordinate, x - alpha mu scales by
    sqrt(delta(t1)/delta(t0)), delta = alpha^2 l + sigma^2 (the monotone map between the two Gaussian marginals)."""
    lam, V = np.linalg.eigh(data.cov)
    d0 = sched.alpha(t0) ** 2 * lam + sched.sigma(t0) ** 2
    d1 = sched.alpha(t1) ** 2 * lam + sched.sigma(t1) ** 2
    A = (V * np.sqrt(d1 / d0)) @ V.T
    return A, sched.alpha(t1) * data.mean - A @ (sched.alpha(t0) * data.mean)


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("ddim", 1), ("heun", 2)])
def test_the_map_converges_to_the_exact_flow_map_at_the_sampler_order(sampler, order):
    edm = EDM(0.002, 80.0, 7.0)
    A_ex, b_ex = _flow_map_exact(edm, 80.0, 0.0)
    errs = []
    for n in (64, 128, 256):
        A, b, _ = output_map(sampler, DATA, edm, edm.grid(n))
        errs.append(np.abs(A - A_ex).max() / np.abs(A_ex).max() + np.abs(b - b_ex).max())
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    # halving the step divides the global error by 2^order; the rho = 7 grid reaches that regime by 64 steps
    assert all(abs(r - 2 ** order) < 0.15 * 2 ** order for r in ratios), (errs, ratios)
    assert errs[-1] < (0.02 if order == 1 else 2e-4)


@pytest.mark.parametrize("name", ["edm", "vp", "flow"])
@pytest.mark.parametrize("sampler, eta, order", [("heun", 0.0, 2), ("euler", 0.0, 1), ("ddim", 0.0, 1),
                                                 ("ddim", 1.0, 1)])
def test_the_output_law_tends_to_the_data_law_at_the_sampler_order(name, sampler, eta, order):
    """From the exact marginal at the first time, the output law -> N(mu, Sigma) as the grid refines (the PF-ODE
    and the reverse SDE carry the marginals exactly); the error falls by 2^order per halving of the step
    (100 -> 200 -> 400 steps), within 15 %.  (EDM's grid always ends with one Euler step from sigma_min = 0.002
    to 0, a floor of ~3e-6 in the covariance that Heun reaches near 1600 steps: the step counts stay below.)"""
    sched = {"edm": EDM(), "vp": VP(), "flow": Flow()}[name]
    errs = []
    for n in (100, 200, 400):
        grid = sched.grid(n) if name == "edm" else np.linspace(1.0 if name == "vp" else 0.9999, 0.0, n + 1)
        m, C = output_law(sampler, DATA, sched, grid, eta=eta)
        errs.append(max(np.abs(m - DATA.mean).max(), np.abs(C - DATA.cov).max()))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(abs(r - 2 ** order) < 0.15 * 2 ** order for r in ratios), (errs, ratios)
    assert errs[-1] < (2e-2 if order == 1 else 1e-4)


def test_ddim_is_euler_in_edm_time_after_conversion():
    """DDIM (eta = 0) on VP equals Euler on EDM's sigma = sigma/alpha with x/alpha (Karras et al. 2022, section 4)."""
    vp, edm = VP(), EDM()
    grid = np.linspace(0.95, 0.05, 10)
    x = normal(8, np.arange(5), 0, 2) * vp.sigma(0.95)
    out_vp = sample("ddim", Denoiser(MIX, vp).x0, vp, x, grid)
    xe, _ = convert(x, np.full(5, 0.95), vp, edm)
    grid_e = vp.sigma(grid) / vp.alpha(grid)
    out_e = sample("euler", Denoiser(MIX, edm).x0, edm, xe, grid_e)
    back, _ = convert(out_e, np.full(5, grid_e[-1]), edm, vp)
    np.testing.assert_allclose(out_vp, back, rtol=1e-11, atol=1e-12)


def test_noise_does_not_depend_on_how_chains_are_batched():
    sched, grid = _grids()["vp"]
    D = Denoiser(MIX, sched).x0
    x = normal(1, np.arange(6), 5, 2)
    whole = sample("ddim", D, sched, x, grid, eta=1.0, seed=9)
    parts = np.concatenate([sample("ddim", D, sched, x[:4], grid, eta=1.0, seed=9),
                            sample("ddim", D, sched, x[4:], grid, eta=1.0, seed=9, chain0=4)])
    np.testing.assert_array_equal(whole, parts)


def test_record_returns_every_state():
    sched, grid = _grids()["edm"]
    x = normal(1, np.arange(3), 5, 2)
    final, path = sample("heun", Denoiser(MIX, sched).x0, sched, x, grid, record=True)
    assert path.shape == (len(grid), 3, 2)
    np.testing.assert_array_equal(path[0], x)
    np.testing.assert_array_equal(path[-1], final)


def test_registry():
    assert set(SAMPLERS) == {"euler", "heun", "ddim"}
    assert [s.stochastic for s in SAMPLERS.values()] == [False, False, True]


# ------------------------------------------------------------------ bad input
def test_bad_input():
    edm = EDM()
    with pytest.raises(ValueError, match=r"x_init must have shape \(n, d\)"):
        sample("euler", Denoiser(DATA, edm).x0, edm, np.zeros(2), [1.0, 0.0])
    D = Denoiser(DATA, edm).x0
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample("dpm", D, edm, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        sample("euler", D, edm, x, [0.5, 1.0])
    with pytest.raises(ValueError, match="t must lie"):
        sample("euler", D, VP(), x, [1.5, 0.5])
    with pytest.raises(ValueError, match="eta must be 0 for the deterministic sampler"):
        sample("heun", D, edm, x, [1.0, 0.0], eta=0.5)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sample("euler", lambda u, t: u * np.nan, edm, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="shaped like x"):
        sample("euler", lambda u, t: u[:, :1], edm, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="too large"):
        sample("ddim", D, edm, x, [2.0, 1.0], eta=2.0)
    with pytest.raises(TypeError, match="Gaussian"):
        output_law("heun", MIX, edm, edm.grid(4))
    with pytest.raises(ValueError, match="init must be one of"):
        output_law("heun", DATA, edm, edm.grid(4), init="exact")
