"""Diffusion samplers step by step against transcriptions of the released code (NVlabs/edm edm_sampler and
ablation_sampler, k-diffusion sample_euler, sample_euler_ancestral and sample_dpmpp_2m, diffusers DDIMScheduler,
DDPMScheduler and DPMSolverMultistepScheduler, score_sde's PC sampler), written here from the released code and
fed the same counter noise; identities between samplers; the registry and bad input.  The exact laws are
tested in tests/test_diffusion_laws.py."""
import math

import numpy as np
import pytest

from refscore.distributions import Gaussian, GaussianMixture
from refscore.diffusion.denoiser import Denoiser
from refscore.diffusion.coefficients import ddim_noise_scales
from refscore.diffusion.samplers import SAMPLERS, output_law, output_map, sample
from refscore.diffusion.schedules import VE
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


# ------------------------------------------------------------------ identities between samplers
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
    final, path, info = sample("heun", Denoiser(MIX, sched).x0, sched, x, grid, record=True)
    assert path.shape == (len(grid), 3, 2) and info == {}
    np.testing.assert_array_equal(path[0], x)
    np.testing.assert_array_equal(path[-1], final)


@pytest.mark.parametrize("S_churn, S_min, S_max, S_noise", [(40.0, 0.05, 50.0, 1.003), (80.0, 0.0, math.inf, 1.0)])
def test_heun_with_churn_on_edm_is_nvlabs_edm_sampler(S_churn, S_min, S_max, S_noise):
    """NVlabs/edm generate.py edm_sampler, transcribed: gamma = min(S_churn/num_steps, sqrt2 - 1) if
    S_min <= t_cur <= S_max else 0; t_hat = t_cur + gamma t_cur; x_hat = x + sqrt(t_hat^2 - t_cur^2) S_noise randn;
    Euler from (x_hat, t_hat) to t_next, then the 2nd order correction unless it is the last step."""
    edm = EDM()
    num_steps = 12
    ts = edm.grid(num_steps)
    D = Denoiser(MIX, edm).x0
    n = 6
    x0 = normal(3, np.arange(n), 0, 2) * ts[0]
    x, path = x0.copy(), []
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        x_hat = x + np.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * normal(5, np.arange(n), i, 2)
        d_cur = (x_hat - D(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            d_prime = (x_next - D(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
        path.append(x)
    run = sample("heun", D, edm, x0, ts, seed=5, record=True, S_churn=S_churn, S_tmin=S_min, S_tmax=S_max,
                 S_noise=S_noise)
    # refscore's t_hat is t(lambda - 2 log1p(gamma)) = exp(log t + log1p(gamma)): an ulp or two from
    # t_cur (1 + gamma), then the same operations; states up to 80: 1e-12 relative to each step's largest
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))
    churned = [S_min <= t <= S_max for t in ts[:-1]]
    assert np.array_equal(~np.isnan(run.info["t_hat"]) & (run.info["t_hat"] != ts[:-1]), np.array(churned))


def test_euler_with_churn_on_edm_is_k_diffusion_sample_euler():
    """crowsonkb/k-diffusion sampling.py sample_euler, transcribed: gamma = min(s_churn/(len(sigmas) - 1),
    2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0; eps = randn * s_noise; sigma_hat = sigmas[i](gamma + 1);
    if gamma > 0: x += eps sqrt(sigma_hat^2 - sigmas[i]^2); d = (x - D(x, sigma_hat))/sigma_hat;
    x += d (sigmas[i+1] - sigma_hat)."""
    edm = EDM()
    sigmas = edm.grid(15)
    D = Denoiser(MIX, edm).x0
    s_churn, s_tmin, s_tmax, s_noise = 30.0, 0.1, 10.0, 1.007
    x0 = normal(8, np.arange(5), 1, 2) * sigmas[0]
    x, path = x0.copy(), []
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = normal(2, np.arange(5), i, 2) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        d = (x - D(x, sigma_hat)) / sigma_hat
        x = x + d * (sigmas[i + 1] - sigma_hat)
        path.append(x)
    run = sample("euler", D, edm, x0, sigmas, seed=2, record=True, S_churn=s_churn, S_tmin=s_tmin, S_tmax=s_tmax,
                 S_noise=s_noise)
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


def test_heun_with_churn_on_vp_is_nvlabs_edm_ablation_sampler():
    """NVlabs/edm generate.py ablation_sampler with schedule='vp', scaling='vp', solver='heun', alpha=1,
    transcribed (its sigma(t) = sqrt(e^{beta_d t^2/2 + beta_min t} - 1) and s(t) = 1/sqrt(1 + sigma^2) are
    refscore's VP(beta_min, beta_min + beta_d) as sigma/alpha and alpha):
    gamma from sigma(t_cur); t_hat = sigma_inv(sigma(t_cur)(1 + gamma));
    x_hat = s(t_hat)/s(t_cur) x + sqrt(sigma(t_hat)^2 - sigma(t_cur)^2) s(t_hat) S_noise randn;
    d = (sigma'/sigma + s'/s) x - sigma' s/sigma D(x/s; sigma); Heun to t_next, Euler on the last step.

    At gamma = 0 ablation_sampler still round-trips t_hat = sigma_inv(sigma(t_cur)), which can land an ulp above
    t_cur; its sqrt((sigma(t_hat)^2 - sigma(t_cur)^2).clip(min=0)) then adds noise of order sqrt(ulp) sigma
    (1e-7 relative at t = 0.778 on this grid).  refscore does not churn at gamma = 0, so the churn range here
    covers every step but the first, whose round trip at t = 1 is exact."""
    beta_d, beta_min = 19.9, 0.1
    vp = VP(beta_min, beta_min + beta_d)
    sigma = lambda t: math.sqrt(math.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)  # noqa: E731
    sigma_deriv = lambda t: 0.5 * (beta_min + beta_d * t) * (sigma(t) + 1 / sigma(t))  # noqa: E731
    sigma_inv = lambda s: (math.sqrt(beta_min ** 2 + 2 * beta_d * math.log(s ** 2 + 1)) - beta_min) / beta_d  # noqa
    s = lambda t: 1 / math.sqrt(1 + sigma(t) ** 2)  # noqa: E731
    s_deriv = lambda t: -sigma(t) * sigma_deriv(t) * s(t) ** 3  # noqa: E731
    S_churn, S_min, S_max, S_noise = 20.0, 0.0, 100.0, 1.003  # sigma/alpha is 157 at t = 1, 53 at t = 0.889
    num_steps = 10
    t_steps = np.append(np.linspace(1.0, 1e-3, num_steps), 0.0)
    D = Denoiser(MIX, vp).x0
    n = 5
    x0 = normal(4, np.arange(n), 3, 2) * vp.sigma(1.0)
    x, path = x0.copy(), []

    def deriv(xx, t):
        return (sigma_deriv(t) / sigma(t) + s_deriv(t) / s(t)) * xx - sigma_deriv(t) * s(t) / sigma(t) * D(xx, t)

    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= sigma(t_cur) <= S_max else 0
        t_hat = sigma_inv(sigma(t_cur) + gamma * sigma(t_cur))
        x_hat = (s(t_hat) / s(t_cur) * x + max(sigma(t_hat) ** 2 - sigma(t_cur) ** 2, 0.0) ** 0.5 * s(t_hat) * S_noise
                 * normal(6, np.arange(n), i, 2))
        h = t_next - t_hat
        d_cur = deriv(x_hat, t_hat)
        if i == num_steps - 1:
            x = x_hat + h * d_cur
        else:
            x = x_hat + h * (0.5 * d_cur + 0.5 * deriv(x_hat + h * d_cur, t_next))
        path.append(x)
    run = sample("heun", D, vp, x0, t_steps, seed=6, record=True, S_churn=S_churn, S_tmin=S_min, S_tmax=S_max,
                 S_noise=S_noise)
    # two routes to t_hat (closed-form sigma_inv vs refscore's log-SNR inverse) and to the velocity: 1e-10
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_on_ddpm_tables_is_diffusers_ddpm_step(variance_type):
    """diffusers scheduling_ddpm.py DDPMScheduler.step, transcribed with prediction_type 'epsilon':
    prev_t = t - T // n; ab_prev = alphas_cumprod[prev_t] if prev_t >= 0 else 1; current_beta = 1 - ab_t/ab_prev;
    x0 = (x - sqrt(1 - ab_t) eps)/sqrt(ab_t); mean = sqrt(ab_prev) current_beta/(1 - ab_t) x0
    + sqrt(ab_t/ab_prev)(1 - ab_prev)/(1 - ab_t) x; if t > 0: + sqrt(variance) z with variance
    (1 - ab_prev)/(1 - ab_t) current_beta clamped at 1e-20 (fixed_small) or current_beta (fixed_large)."""
    n_steps, T = 10, 1000
    ts = VPD.timesteps(n_steps, "leading", 0)
    ab = VPD.alphas_cumprod
    den = Denoiser(MIX, VPD)
    x = normal(12, np.arange(5), 98, 2)
    xs, path = x.copy(), []
    for i, t in enumerate(ts):
        prev_t = t - T // n_steps
        ab_t, ab_prev = ab[t], (ab[prev_t] if prev_t >= 0 else 1.0)
        cur_beta = 1 - ab_t / ab_prev
        eps = den.eps(x, float(t))
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        x = (math.sqrt(ab_prev) * cur_beta / (1 - ab_t)) * x0 + (math.sqrt(ab_t / ab_prev) * (1 - ab_prev) / (1 - ab_t)) * x
        if t > 0:
            var = max((1 - ab_prev) / (1 - ab_t) * cur_beta, 1e-20) if variance_type == "fixed_small" else cur_beta
            x = x + math.sqrt(var) * normal(7, np.arange(5), i, 2)
        path.append(x)
    grid = np.append(ts, -1).astype(float)
    run = sample("ddpm", den, VPD, xs, grid, seed=7, record=True,
                 variance="small" if variance_type == "fixed_small" else "large")
    # eps-then-x0 (diffusers) against x0 (refscore) near pure noise: ~1e-12 relative, as for DDIM
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("eta, s_noise", [(1.0, 1.0), (0.5, 0.9)])
def test_euler_ancestral_on_edm_is_k_diffusion(eta, s_noise):
    """crowsonkb/k-diffusion sampling.py sample_euler_ancestral and get_ancestral_step, transcribed:
    sigma_up = min(sigma_to, eta sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2)/sigma_from^2)),
    sigma_down = sqrt(sigma_to^2 - sigma_up^2); d = (x - D(x, sigma))/sigma; x += d (sigma_down - sigma);
    if sigmas[i+1] > 0: x += randn s_noise sigma_up."""
    edm = EDM()
    sigmas = edm.grid(12)
    D = Denoiser(MIX, edm).x0
    x0 = normal(9, np.arange(4), 0, 2) * sigmas[0]
    x, path = x0.copy(), []
    for i in range(len(sigmas) - 1):
        f, to = sigmas[i], sigmas[i + 1]
        up = min(to, eta * (to ** 2 * (f ** 2 - to ** 2) / f ** 2) ** 0.5)
        down = (to ** 2 - up ** 2) ** 0.5
        d = (x - D(x, f)) / f
        x = x + d * (down - f)
        if sigmas[i + 1] > 0:
            x = x + normal(3, np.arange(4), i, 2) * s_noise * up
        path.append(x)
    run = sample("euler_ancestral", D, edm, x0, sigmas, seed=3, record=True, eta=eta, s_noise=s_noise)
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


def test_dpmpp_2m_on_edm_is_k_diffusion():
    """crowsonkb/k-diffusion sampling.py sample_dpmpp_2m, transcribed: t = -log sigma, h = t_next - t;
    first step or sigmas[i+1] == 0: x = (sigma_next/sigma) x - expm1(-h) D; else r = h_last/h with
    h_last = t - t_fn(sigmas[i-1]), D_d = (1 + 1/(2r)) D - 1/(2r) D_old and x = (sigma_next/sigma) x - expm1(-h) D_d."""
    edm = EDM()
    sigmas = edm.grid(10)
    D = Denoiser(MIX, edm).x0
    x0 = normal(10, np.arange(5), 0, 2) * sigmas[0]
    x, old, path = x0.copy(), None, []
    t_fn = lambda s: -math.log(s) if s > 0 else math.inf  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        ratio = sigmas[i + 1] / sigmas[i]  # sigma_fn(t_next)/sigma_fn(t)
        if old is None or sigmas[i + 1] == 0:
            x = ratio * x - math.expm1(-h) * denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            x = ratio * x - math.expm1(-h) * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old)
        old = denoised
        path.append(x)
    run = sample("dpmpp_2m", D, edm, x0, sigmas, record=True)
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


def test_dpmpp_2m_on_vp_is_diffusers_multistep_midpoint():
    """diffusers scheduling_dpmsolver_multistep.py, algorithm_type 'dpmsolver++', transcribed:
    dpm_solver_first_order_update: x_t = (sigma_t/sigma_s) x - alpha_t (exp(-h) - 1) m0;
    multistep_dpm_solver_second_order_update, solver_type 'midpoint': lambda = log alpha - log sigma,
    h = lambda_t - lambda_s0, r0 = (lambda_s0 - lambda_s1)/h, D0 = m0, D1 = (m0 - m1)/r0,
    x_t = (sigma_t/sigma_s0) x - alpha_t (exp(-h) - 1) D0 - 0.5 alpha_t (exp(-h) - 1) D1;
    first order at the first step, second order after (the grid ends at t = 1e-3 > 0)."""
    vp = VP()
    grid = np.linspace(1.0, 1e-3, 14)
    D = Denoiser(MIX, vp).x0
    x0 = normal(11, np.arange(5), 0, 2)
    x, ms, path = x0.copy(), [], []
    lam = lambda t: math.log(vp.alpha(t)) - math.log(vp.sigma(t))  # noqa: E731
    for i in range(len(grid) - 1):
        s0, t = grid[i], grid[i + 1]
        ms.append(D(x, s0))
        h = lam(t) - lam(s0)
        if i == 0:
            x = (vp.sigma(t) / vp.sigma(s0)) * x - vp.alpha(t) * (math.exp(-h) - 1.0) * ms[-1]
        else:
            r0 = (lam(s0) - lam(grid[i - 1])) / h
            D0, D1 = ms[-1], (1.0 / r0) * (ms[-1] - ms[-2])
            x = ((vp.sigma(t) / vp.sigma(s0)) * x - vp.alpha(t) * (math.exp(-h) - 1.0) * D0
                 - 0.5 * vp.alpha(t) * (math.exp(-h) - 1.0) * D1)
        path.append(x)
    run = sample("dpmpp_2m", D, vp, x0, grid, record=True)
    # exp(-h) - 1 (diffusers) vs expm1 (refscore) and log alpha - log sigma vs the schedule's log-SNR: 1e-12
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("n_corr, snr", [(1, 0.16), (2, 0.075)])
def test_pc_on_ve_is_score_sde(n_corr, snr):
    """yang-song/score_sde sampling.py, transcribed on VESDE's grid: pc_sampler runs, per timestep, the
    LangevinCorrector (n_steps times: grad = score(x, t); noise = randn; grad_norm, noise_norm = batch means of
    the per-chain norms; step_size = (snr noise_norm/grad_norm)^2 2 alpha with alpha = 1; x_mean = x + step_size
    grad; x = x_mean + sqrt(2 step_size) noise), then ReverseDiffusionPredictor with VESDE.discretize
    (f = 0, G = sqrt(sigma^2 - adjacent_sigma^2), adjacent 0 at the last timestep; rev_f = f - G^2 score;
    x_mean = x - rev_f; x = x_mean + G z), and returns the last x_mean (denoise=True).  The discrete sigmas
    exp(linspace(log sigma_min, log sigma_max, N)) are EDM times, ending at 0."""
    N = 10
    sig = np.exp(np.linspace(np.log(0.01), np.log(50.0), N))
    edm = EDM()
    grid = np.append(sig[::-1], 0.0)
    den = Denoiser(MIX, edm)
    n, d = 64, 2
    x0 = normal(13, np.arange(n), 0, 2) * sig[-1]
    x, path = x0.copy(), []
    for i in range(N):
        sigma, adjacent = sig[N - 1 - i], (sig[N - 2 - i] if i < N - 1 else 0.0)
        z = normal(14, np.arange(n), i, (n_corr + 1) * d)
        for j in range(n_corr):
            grad = den.score(x, sigma)
            noise = z[:, j * d:(j + 1) * d]
            grad_norm = np.linalg.norm(grad, axis=-1).mean()
            noise_norm = np.linalg.norm(noise, axis=-1).mean()
            step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * 1.0
            x = x + step_size * grad + noise * np.sqrt(step_size * 2)
        G = np.sqrt(sigma ** 2 - adjacent ** 2)
        rev_f = 0.0 - G ** 2 * den.score(x, sigma)
        x_mean = x - rev_f
        x = x_mean + G * z[:, n_corr * d:]
        path.append(x_mean if i == N - 1 else x)
    run = sample("pc", den, edm, x0, grid, seed=14, record=True, corrector_steps=n_corr, snr=snr)
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * max(1.0, np.abs(want).max()))
    assert run.info["step_size"].shape == (N, n_corr) and np.all(run.info["step_size"] > 0)
    # the run with those step sizes given is the same run (the snr rule only chose them)
    again = sample("pc", den, edm, x0, grid, seed=14, corrector_steps=n_corr, step_size=run.info["step_size"])
    np.testing.assert_array_equal(again, run.x)


def test_pc_on_vp_tables_is_score_sde():
    """yang-song/score_sde on VPSDE, transcribed: discrete_betas = linspace(beta_min/N, beta_max/N, N),
    alphas = 1 - betas; the corrector's alpha = alphas[timestep] (the code's reading, langevin_alpha='step');
    VPSDE.discretize: f = sqrt(alpha) x - x, G = sqrt(beta); reverse diffusion x_mean = x - (f - G^2 score).
    The same chain is refscore's VPDiscrete(trained_betas=discrete_betas) on the grid N-1, ..., 0, -1."""
    N = 40
    betas = np.linspace(0.1 / N, 20.0 / N, N)
    vpd = VPDiscrete(trained_betas=betas)
    grid = np.arange(N - 1, -2, -1).astype(float)
    den = Denoiser(MIX, vpd)
    n, d, snr = 32, 2, 0.16
    x0 = normal(15, np.arange(n), 0, 2)
    x, path = x0.copy(), []
    for i in range(N):
        ts = N - 1 - i
        beta, alpha = betas[ts], 1.0 - betas[ts]
        z = normal(16, np.arange(n), i, 2 * d)
        grad = den.score(x, float(ts))
        noise = z[:, :d]
        step_size = (snr * np.linalg.norm(noise, axis=-1).mean() / np.linalg.norm(grad, axis=-1).mean()) ** 2 * 2 * alpha
        x = x + step_size * grad + noise * np.sqrt(step_size * 2)
        f = np.sqrt(alpha) * x - x
        x_mean = x - (f - beta * den.score(x, float(ts)))
        x = x_mean + np.sqrt(beta) * z[:, d:]
        path.append(x_mean if i == N - 1 else x)
    run = sample("pc", den, vpd, x0, grid, seed=16, record=True, langevin_alpha="step")
    # alpha_t/alpha_n from the cumulative table vs sqrt(1 - beta): ~1e-15 per step
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * max(1.0, np.abs(want).max()))


def test_pc_euler_maruyama_predictor_first_is_the_reverse_sde_with_algorithm_1_order():
    """The Euler-Maruyama predictor (score_sde EulerMaruyamaPredictor: x_mean = x + (f x - g^2 score) dt,
    x = x_mean + g sqrt(-dt) z, here with the grid's dt) run in Song et al.'s Algorithm 1 order (predictor to
    t_next, then the corrector at t_next) with given step sizes and alpha_i = alpha(t)^2, no denoising."""
    vp = VP()
    grid = np.linspace(1.0, 1e-2, 9)
    den = Denoiser(MIX, vp)
    n, d, M = 6, 2, 2
    eps = np.linspace(1e-3, 2e-3, 8 * M).reshape(8, M)
    x0 = normal(17, np.arange(n), 0, 2)
    x, path = x0.copy(), []
    for i in range(8):
        t, tn = grid[i], grid[i + 1]
        z = normal(18, np.arange(n), i, (M + 1) * d)
        dt = tn - t
        x = x + (vp.f(t) * x - vp.g2(t) * den.score(x, t)) * dt + np.sqrt(vp.g2(t) * -dt) * z[:, :d]
        for j in range(M):
            x = x + eps[i, j] * den.score(x, tn) + np.sqrt(2 * eps[i, j]) * z[:, (j + 1) * d:(j + 2) * d]
        path.append(x)
    run = sample("pc", den, vp, x0, grid, seed=18, record=True, predictor="euler_maruyama", corrector_steps=M,
                 step_size=eps, order="predictor_first", denoise=False, langevin_alpha="alpha_bar")
    for got, want in zip(run.path[1:], path):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


def _flow_map_exact(sched, t0, t1, data=DATA):
    """The exact PF-ODE flow map on Gaussian data: per eigen-coordinate, x - alpha mu scales by
    sqrt(delta(t1)/delta(t0)), delta = alpha^2 l + sigma^2 (the monotone map between the two Gaussian marginals)."""
    lam, V = np.linalg.eigh(data.cov)
    d0 = sched.alpha(t0) ** 2 * lam + sched.sigma(t0) ** 2
    d1 = sched.alpha(t1) ** 2 * lam + sched.sigma(t1) ** 2
    A = (V * np.sqrt(d1 / d0)) @ V.T
    return A, sched.alpha(t1) * data.mean - A @ (sched.alpha(t0) * data.mean)


@pytest.mark.parametrize("name, t0, t1", [("edm", 80.0, 0.0), ("vp", 1.0, 0.0), ("flow", 0.999, 0.2)])
def test_pf_ode_is_the_exact_flow_map(name, t0, t1):
    """pf_ode (DOP853, rtol = atol = 1e-10) against the closed-form flow map of Gaussian data.  The integrator
    controls the local error per unit tau = log(sigma/alpha) (about 17 units from 80 to 1e-6): the global error
    is ~1e-9; the tail's denoising step at sigma_tail = 1e-6 adds sigma_tail^2/(2 l_min) ~ 1e-11."""
    sched = {"edm": EDM(), "vp": VP(), "flow": Flow()}[name]
    A, b = _flow_map_exact(sched, t0, t1)
    x = normal(19, np.arange(20), 0, 2) * 3.0 * sched.sigma(t0) + sched.alpha(t0) * DATA.mean
    run = sample("pf_ode", Denoiser(DATA, sched), sched, x, [t0, t1], record=True)
    want = x @ A.T + b
    np.testing.assert_allclose(run.x, want, rtol=0, atol=2e-8 * np.abs(want).max())
    assert run.info["nfev"][0] > 0
    # RK45 at a tight tolerance agrees with DOP853 on a mixture (no closed form)
    den = Denoiser(MIX, sched)
    a = sample("pf_ode", den, sched, x[:6], [t0, t1])
    b2 = sample("pf_ode", den, sched, x[:6], [t0, t1], method="RK45", rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(a, b2, rtol=0, atol=1e-7 * np.abs(a).max())


# ------------------------------------------------------------------ identities
def test_ddpm_small_is_ddim_eta_1_and_euler_ancestral_is_ddim():
    """DDPM's posterior step with the posterior variance is DDIM with eta = 1, and k-diffusion's Euler ancestral
    is DDIM with the same eta (docs/diffusion.md §6.5): the same noise, the same states to round-off."""
    for sched, grid in [(VP(), np.linspace(1.0, 1e-3, 12)), (VPD, np.append(VPD.timesteps(8, "trailing"), -1.0))]:
        den = Denoiser(MIX, sched)
        x = normal(20, np.arange(5), 0, 2)
        ddim1 = sample("ddim", den, sched, x, grid, seed=21, eta=1.0)
        np.testing.assert_allclose(sample("ddpm", den, sched, x, grid, seed=21), ddim1, rtol=1e-11, atol=1e-12)
        for eta in (1.0, 0.4):
            np.testing.assert_allclose(sample("euler_ancestral", den, sched, x, grid, seed=21, eta=eta),
                                       sample("ddim", den, sched, x, grid, seed=21, eta=eta), rtol=1e-11, atol=1e-12)


def test_churn_zero_is_the_deterministic_sampler_and_a_denoiser_object_is_its_x0():
    edm = EDM()
    den = Denoiser(MIX, edm)
    x = normal(22, np.arange(4), 0, 2) * 80.0
    g = edm.grid(8)
    np.testing.assert_array_equal(sample("heun", den, edm, x, g, S_churn=0.0), sample("heun", den.x0, edm, x, g))
    # churn outside [S_tmin, S_tmax] everywhere: gamma = 0 at every step, the noise drawn is unused
    np.testing.assert_array_equal(sample("heun", den, edm, x, g, S_churn=10.0, S_tmin=100.0, S_tmax=200.0),
                                  sample("heun", den, edm, x, g))


def test_registry():
    assert set(SAMPLERS) == {"euler", "heun", "ddim", "ddpm", "euler_ancestral", "dpmpp_2m", "pc", "pf_ode"}
    defaults = {name: row.noise_blocks(dict(row.options)) for name, row in SAMPLERS.items()}
    assert defaults == {"euler": 0, "heun": 0, "ddim": 0, "ddpm": 1, "euler_ancestral": 1, "dpmpp_2m": 0, "pc": 2,
                        "pf_ode": 0}
    assert {n: r.order for n, r in SAMPLERS.items()} == {"euler": 1, "heun": 2, "ddim": 1, "ddpm": 1,
                                                         "euler_ancestral": 1, "dpmpp_2m": 2, "pc": 1, "pf_ode": None}


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
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        sample("euler", D, edm, x, [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, inf\] for EDM.*got values in \[-0.5"):  # a negative EDM sigma
        sample("euler", D, edm, x, [1.0, -0.5])
    with pytest.raises(ValueError, match="t must lie"):
        sample("euler", D, VP(), x, [1.5, 0.5])
    with pytest.raises(TypeError, match=r"sampler 'heun' has no option\(s\) \['eta'\]; its options are: S_churn"):
        sample("heun", D, edm, x, [1.0, 0.0], eta=0.5)
    with pytest.raises(TypeError, match="sampler 'dpmpp_2m' has no option.*its options are: none"):
        sample("dpmpp_2m", D, edm, x, [1.0, 0.0], eta=0.5)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sample("euler", lambda u, t: u * np.nan, edm, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="shaped like x"):
        sample("euler", lambda u, t: u[:, :1], edm, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="too large"):
        sample("ddim", D, edm, x, [2.0, 1.0], eta=2.0)
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        sample("ddim", D, edm, x, [2.0, 1.0], eta=-0.1)
    with pytest.raises(ValueError, match="S_tmax must be >= S_tmin"):
        sample("heun", D, edm, x, [2.0, 1.0], S_churn=1.0, S_tmin=2.0, S_tmax=1.0)
    with pytest.raises(ValueError, match="S_churn raises the noise level"):
        sample("heun", Denoiser(DATA, VP()).x0, VP(), x, [1.0, 0.5], S_churn=1.0)
    with pytest.raises(ValueError, match="variance must be one of"):
        sample("ddpm", D, edm, x, [2.0, 1.0], variance="fixed_small")
    with pytest.raises(ValueError, match="alpha = 0: euler_ancestral works in EDM's variable"):
        sample("euler_ancestral", Denoiser(DATA, Flow()).x0, Flow(), x, [1.0, 0.5])
    with pytest.raises(ValueError, match=r"step_size must be a scalar, shape \(1,\) or \(1, 1\)"):
        sample("pc", D, edm, x, [2.0, 1.0], step_size=[0.1, 0.2])
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        sample("pc", D, edm, x, [2.0, 1.0], step_size=-0.1)
    with pytest.raises(ValueError, match="langevin_alpha='step'.*needs order='corrector_first'"):
        sample("pc", D, edm, x, [2.0, 1.0], langevin_alpha="step", order="predictor_first")
    with pytest.raises(ValueError, match="the score is not defined there"):  # a corrector at the clean end
        sample("pc", D, edm, x, [2.0, 0.0], order="predictor_first", step_size=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        sample("pf_ode", D, edm, x, [2.0, 0.0], method="Euler")
    with pytest.raises(ValueError, match="sigma_tail = 5.0 must be below"):
        sample("pf_ode", D, edm, x, [2.0, 0.0], sigma_tail=5.0)
    with pytest.raises(ValueError, match="x0_fn is a Denoiser of EDM"):
        sample("heun", Denoiser(DATA, EDM()), edm, x, [1.0, 0.0])
    with pytest.raises(TypeError, match="x0_fn must be a Denoiser or a callable"):
        sample("heun", 3.0, edm, x, [1.0, 0.0])
    with pytest.raises(TypeError, match="Gaussian"):
        output_law("heun", edm, edm.grid(4), MIX)
    with pytest.raises(ValueError, match="init must be one of"):
        output_law("heun", edm, edm.grid(4), DATA, init="exact")
    with pytest.raises(ValueError, match="pc's exact law needs the corrector step sizes"):
        output_law("pc", edm, edm.grid(4), DATA)
