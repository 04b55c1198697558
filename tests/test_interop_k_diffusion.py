"""refscore.interop.k_diffusion: k-diffusion's sampling functions on refscore's exact denoiser and noise.

Each run is checked against refscore's own sampler (refscore.diffusion.sample on EDM with grid = sigmas, the same
seed and chain0) and, two more ways that share no step code with either: the deterministic runs on Gaussian data
against the exact affine map of the run (refscore.diffusion.samplers.output_map), and the ancestral noise
recovered from the states against refscore.noise.normal itself.

The k-diffusion functions are (a) transcriptions below, written from reading the released code, always run when
torch is importable, and (b) k_diffusion.sampling itself, when k_diffusion is importable.

Tolerances.  Everything is float64 and both sides compute the same expressions in other groupings (k-diffusion's
``(d + d_2) / 2 * dt`` against ``h * (0.5 d + 0.5 d_2)``, ``** 0.5`` against ``math.sqrt``): each step is off by
a few ulps of the states it combines, at most about 250 here (80 times a normal).  The runs contract towards the
data (the flow scales x - mu by about sqrt(lambda / (lambda + sigma^2)), 1/80 over a run), so the error stays a
few ulps of the largest state: _tol = 1e-12 * max(1, max|state|).  Measured, with the transcriptions and with
k-diffusion 0.1.1.post1: euler, heun and euler_ancestral bitwise equal, dpmpp_2m 3e-14 (one ulp of the largest
state); bitwise equality is not promised, torch and NumPy being free to round pow and sqrt differently.  A
convention error (sigma read as sigma^2, the wrong noise block) moves the states by O(1).  The noise
recovered from an ancestral step divides a difference of states of size <= 250 by sigma_up >= 1e-3 (the grid's
last steps), so it is exact to 1e-16 * 250 / 1e-3 ~ 3e-11: NOISE_TOL = 1e-9.
"""
import functools
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refscore.diffusion import EDM, VP, Denoiser, sample
from refscore.diffusion.samplers import output_map
from refscore.distributions import Gaussian, GaussianMixture
from refscore.noise import normal

from refscore.interop import k_diffusion as rk  # imports torch only when run_sampler is called

try:
    import torch
except ImportError:  # (a)-(c) need torch; (d) checks the import without it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

GAUSS = Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]])
MIXTURE = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [np.eye(2) * 0.2, [[0.5, 0.1], [0.1, 0.3]]])
EDM_ = EDM()
SIGMAS = EDM_.grid(12)   # Karras et al.'s grid: 80 ... 0.002, then 0
NOISE_TOL = 1e-9


def _tol(states):
    return 1e-12 * max(1.0, float(np.max(np.abs(states))))


def _x(n=5, seed=0):
    return float(SIGMAS[0]) * np.random.default_rng(seed).normal(size=(n, 2))


# ------------------------------------------------------------------ (a) transcriptions
# Written from reading crowsonkb/k-diffusion, k_diffusion/sampling.py (release 0.1.1.post1, the same file as the
# main branch at 4601bf0): functions sample_euler, sample_heun, sample_euler_ancestral (with get_ancestral_step
# and to_d) and sample_dpmpp_2m, in its calling convention, on torch float64 tensors.

def _slope(x, sigma, denoised):
    # to_d: the Karras ODE derivative (x - D) / sigma
    return (x - denoised) / sigma


def _ancestral_levels(sigma, sigma_next, eta):
    # get_ancestral_step: (sigma_down, sigma_up); eta = 0 steps straight to sigma_next with no noise
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * torch.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return torch.sqrt(sigma_next ** 2 - up ** 2), up


def _churn(x, sigma, steps, s_churn, s_tmin, s_tmax, s_noise):
    # the churn of sample_euler and sample_heun: gamma = min(s_churn / steps, sqrt 2 - 1) inside [s_tmin, s_tmax];
    # like the released functions it draws torch.randn_like(x) at every step and adds it only when gamma > 0
    gamma = min(s_churn / steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0
    xi = torch.randn_like(x) * s_noise
    sigma_hat = sigma * (1.0 + gamma)
    if gamma > 0:
        x = x + xi * torch.sqrt(sigma_hat ** 2 - sigma ** 2)
    return x, sigma_hat


def kd_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
             s_tmax=math.inf, s_noise=1.0):
    # sample_euler (Karras et al. 2022, Algorithm 2 with Euler steps).  Like the released function it draws
    # torch.randn_like(x) at every step and adds it only when the churn gamma is > 0.
    extra_args = {} if extra_args is None else extra_args
    per_row = torch.ones(x.shape[0], dtype=x.dtype)
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma = sigmas[i]
        x, sigma_hat = _churn(x, sigma, steps, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * per_row, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
        x = x + _slope(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


def kd_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
            s_tmax=math.inf, s_noise=1.0):
    # sample_heun (Karras et al. 2022, Algorithm 2): Euler to sigmas[i + 1], then the trapezoid of the two slopes
    # unless sigmas[i + 1] is 0 (the last step stays Euler).
    extra_args = {} if extra_args is None else extra_args
    per_row = torch.ones(x.shape[0], dtype=x.dtype)
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma = sigmas[i]
        x, sigma_hat = _churn(x, sigma, steps, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * per_row, **extra_args)
        d1 = _slope(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d1 * dt
            continue
        x_euler = x + d1 * dt
        d2 = _slope(x_euler, sigmas[i + 1], model(x_euler, sigmas[i + 1] * per_row, **extra_args))
        x = x + (d1 + d2) / 2 * dt
    return x


def kd_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                       noise_sampler=None):
    # sample_euler_ancestral: an Euler step to sigma_down, then noise of scale sigma_up if sigmas[i + 1] > 0.
    # (The released default noise sampler is torch.randn_like; run_sampler always hands one.)
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = lambda sigma, sigma_next: torch.randn_like(x)  # noqa: E731
    per_row = torch.ones(x.shape[0], dtype=x.dtype)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * per_row, **extra_args)
        down, up = _ancestral_levels(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def kd_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    # sample_dpmpp_2m: DPM-Solver++(2M) in t = -log sigma; first order at the first step and into sigma = 0.
    extra_args = {} if extra_args is None else extra_args
    per_row = torch.ones(x.shape[0], dtype=x.dtype)
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * per_row, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        t, t_next = -torch.log(sigmas[i]), -torch.log(sigmas[i + 1])
        h = t_next - t
        target = denoised
        if previous is not None and sigmas[i + 1] != 0:
            r = (t + torch.log(sigmas[i - 1])) / h
            target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (torch.exp(-t_next) / torch.exp(-t)) * x - torch.expm1(-h) * target
        previous = denoised
    return x


TRANSCRIBED = {"euler": kd_euler, "heun": kd_heun, "euler_ancestral": kd_euler_ancestral, "dpmpp_2m": kd_dpmpp_2m}

CASES = [("euler", {}), ("heun", {}), ("euler_ancestral", {}), ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
         ("euler_ancestral", {"eta": 0.0}), ("dpmpp_2m", {})]


def _blocks(name):
    """The noise sampler's calls per step: sample_euler_ancestral calls it at every step into sigma > 0, also when
    eta = 0 makes sigma_up 0 (the block is then multiplied by 0; refscore's euler_ancestral draws none)."""
    return ((SIGMAS[1:] > 0) & (name == "euler_ancestral")).astype(np.int64)


def _check_against_refscore(fn, name, options, data, seed=3, chain0=5):
    D = Denoiser(data, EDM_)
    x = _x()
    run = rk.run_sampler(fn, D, x, SIGMAS, seed=seed, chain0=chain0, **options)
    mine = sample(name, D, EDM_, x, SIGMAS, seed=seed, chain0=chain0, record=True, **options).path
    n_steps = len(SIGMAS) - 1
    assert run.states.dtype == np.float64 and run.states.shape == (n_steps + 1, 5, 2)
    assert run.denoised.shape == (n_steps, 5, 2)
    np.testing.assert_array_equal(run.states[0], x)
    np.testing.assert_array_equal(run.sigmas, SIGMAS)
    np.testing.assert_array_equal(run.sigma_hat, SIGMAS[:-1])
    np.testing.assert_array_equal(run.noise_blocks, _blocks(name))
    np.testing.assert_allclose(run.states, mine, rtol=0, atol=_tol(mine))
    # the denoised states are the exact x0 at the states refscore ran through
    expect = np.stack([D.x0(mine[i], float(SIGMAS[i])) for i in range(n_steps)])
    np.testing.assert_allclose(run.denoised, expect, rtol=0, atol=_tol(mine))
    return run


@needs_torch
@pytest.mark.parametrize("data", [GAUSS, MIXTURE], ids=["gaussian", "mixture"])
@pytest.mark.parametrize("name, options", CASES)
def test_transcribed_samplers_are_refscore_samplers(name, options, data):
    _check_against_refscore(TRANSCRIBED[name], name, options, data)


@pytest.mark.parametrize("name, options", [("euler", {}), ("heun", {}), ("dpmpp_2m", {}),
                                           ("euler_ancestral", {"eta": 0.0})])
@needs_torch
def test_deterministic_runs_are_the_exact_affine_map(name, options):
    # x_N = A x_T + b with no noise (docs/diffusion.md §6.2-6.3): shares no step code with either run
    run = rk.run_sampler(TRANSCRIBED[name], Denoiser(GAUSS, EDM_), _x(), SIGMAS, **options)
    A, b, Q = output_map(name, EDM_, SIGMAS, GAUSS, **options)
    assert np.all(Q == 0.0)
    np.testing.assert_allclose(run.states[-1], run.states[0] @ A.T + b, rtol=0, atol=_tol(run.states))


@needs_torch
def test_euler_ancestral_without_noise_is_euler():
    # get_ancestral_step at eta = 0 is (sigma_next, 0): the Euler step (k-diffusion's own identity)
    D = Denoiser(MIXTURE, EDM_)
    a = rk.run_sampler(functools.partial(kd_euler_ancestral, eta=0.0), D, _x(), SIGMAS)   # a partial works too
    e = rk.run_sampler(kd_euler, D, _x(), SIGMAS)
    np.testing.assert_allclose(a.states, e.states, rtol=0, atol=_tol(e.states))


@needs_torch
@pytest.mark.parametrize("seed, chain0", [(3, 0), (11, 7)])
def test_the_ancestral_noise_is_refscores_counter_noise(seed, chain0):
    # recover xi_i from the run's own states: x_{i+1} = x_i + (down - sigma_i) (x_i - D_i) / sigma_i + s up xi_i
    eta, s_noise = 0.8, 1.3
    run = rk.run_sampler(kd_euler_ancestral, Denoiser(MIXTURE, EDM_), _x(4), SIGMAS, seed=seed, chain0=chain0,
                         eta=eta, s_noise=s_noise)
    for i in range(len(SIGMAS) - 2):   # every step into sigma > 0
        s, s_next = float(SIGMAS[i]), float(SIGMAS[i + 1])
        up = min(s_next, eta * math.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2))
        down = math.sqrt(s_next ** 2 - up ** 2)
        drift = run.states[i] + (down - s) * (run.states[i] - run.denoised[i]) / s
        xi = (run.states[i + 1] - drift) / (s_noise * up)
        np.testing.assert_allclose(xi, normal(seed, chain0 + np.arange(4), i, 2), rtol=0, atol=NOISE_TOL)


@needs_torch
def test_a_run_does_not_depend_on_how_its_chains_are_batched():
    D = Denoiser(GAUSS, EDM_)
    x = _x(6)
    whole = rk.run_sampler(kd_euler_ancestral, D, x, SIGMAS, seed=2)
    part = rk.run_sampler(kd_euler_ancestral, D, x[4:], SIGMAS, seed=2, chain0=4)
    np.testing.assert_allclose(part.states, whole.states[:, 4:], rtol=0, atol=_tol(whole.states))


@needs_torch
def test_unused_torch_draws_are_harmless_and_leave_torch_rng_alone():
    # kd_euler draws torch.randn_like at every step (as sample_euler does) and never uses it at s_churn = 0
    state = torch.get_rng_state()
    rk.run_sampler(kd_euler, Denoiser(GAUSS, EDM_), _x(), SIGMAS)
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------ (c) refusals and bad input
@needs_torch
def test_churn_without_a_noise_sampler_is_refused_by_name():
    D = Denoiser(GAUSS, EDM_)
    for fn in (kd_euler, kd_heun):
        with pytest.raises(ValueError, match=r"s_churn = 1.0: kd_\w+ takes no noise_sampler.*refscore's euler and "
                                             r"heun with S_churn"):
            rk.run_sampler(fn, D, _x(), SIGMAS, s_churn=1.0)
    with pytest.raises(TypeError, match="s_churn must be a real number"):
        rk.run_sampler(kd_euler, D, _x(), SIGMAS, s_churn="1")
    rk.run_sampler(kd_euler, D, _x(), SIGMAS, s_churn=0.0)   # the deterministic run is fine


def _ancestral_on_torch_noise(model, x, sigmas, extra_args=None, callback=None, disable=None, draw=None):
    # an ancestral sampler that ignores the convention's noise_sampler and draws its own noise
    per_row = torch.ones(x.shape[0], dtype=x.dtype)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * per_row)
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        down, up = _ancestral_levels(sigmas[i], sigmas[i + 1], 1.0)
        x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + draw(x) * up
    return x


@needs_torch
@pytest.mark.parametrize("draw, name", [
    (lambda x: torch.randn_like(x), "torch.randn_like"),
    (lambda x: torch.randn(x.shape, dtype=x.dtype), "torch.randn"),
    (lambda x: torch.empty_like(x).normal_(), "torch.Tensor.normal_"),
    (lambda x: torch.randn_like(x, generator=torch.Generator().manual_seed(0)), "torch.randn_like"),
])
def test_torch_noise_that_reaches_the_run_is_detected(draw, name):
    # the first draw (after the callback of step 0) reaches the denoiser's input of step 1
    with pytest.raises(ValueError, match=rf"_ancestral_on_torch_noise used noise from torch's random number "
                                         rf"generator \({name} x1\), .*reached the denoiser's input after the "
                                         rf"callback of step 0, and with them 0 the run is finite"):
        rk.run_sampler(_ancestral_on_torch_noise, Denoiser(GAUSS, EDM_), _x(), SIGMAS, draw=draw)


@needs_torch
def test_a_torch_draw_that_reaches_the_noise_level_is_detected():
    def jittered(model, x, sigmas, callback=None, disable=None):
        per_row = torch.ones(x.shape[0], dtype=x.dtype)
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i] * (1.0 + 1e-3 * torch.rand(()))   # a random noise level: not refscore's run
            denoised = model(x, sigma * per_row)
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
            x = x + _slope(x, sigma, denoised) * (sigmas[i + 1] - sigma)
        return x

    with pytest.raises(ValueError, match=r"jittered used noise from torch's random number generator \(torch.rand "
                                         r"x1\), .*reached the denoiser's noise level, and with them 0"):
        rk.run_sampler(jittered, Denoiser(GAUSS, EDM_), _x(), SIGMAS)


@needs_torch
def test_an_integer_torch_draw_is_refused_when_made():
    def seeded(model, x, sigmas, callback=None, disable=None):
        torch.randint(0, 2 ** 31, [])   # as BrownianTreeNoiseSampler seeds itself without a seed
        return kd_euler(model, x, sigmas, callback=callback)

    with pytest.raises(ValueError, match=r"seeded drew torch.randint .*an integer draw"):
        rk.run_sampler(seeded, Denoiser(GAUSS, EDM_), _x(), SIGMAS)


@needs_torch
def test_non_finite_states_without_torch_noise_are_a_floating_point_error():
    def blows_up(model, x, sigmas, callback=None, disable=None):
        return kd_euler(model, x * math.inf, sigmas, callback=callback)

    with pytest.raises(FloatingPointError, match="blows_up handed non-finite values as the denoiser's input"):
        rk.run_sampler(blows_up, Denoiser(GAUSS, EDM_), _x(), SIGMAS)


@needs_torch
def test_functions_outside_the_convention_are_named():
    D = Denoiser(GAUSS, EDM_)

    def no_callback(model, x, sigmas):
        return x

    def silent(model, x, sigmas, callback=None):
        return model(x, sigmas[0] * torch.ones(x.shape[0], dtype=x.dtype))

    def skips(model, x, sigmas, callback=None):
        callback({"x": x, "i": 1, "sigma": sigmas[1], "denoised": x})
        return x

    def wrong_sigma(model, x, sigmas, callback=None):
        callback({"x": x, "i": 0, "sigma": sigmas[1], "denoised": x})
        return x

    def early_noise(model, x, sigmas, callback=None, noise_sampler=None):
        return x + noise_sampler(sigmas[0], sigmas[1])

    with pytest.raises(TypeError, match="sample_fn must take a callback"):
        rk.run_sampler(no_callback, D, _x(), SIGMAS)
    with pytest.raises(TypeError, match="silent called callback 0 times for 12 steps"):
        rk.run_sampler(silent, D, _x(), SIGMAS)
    with pytest.raises(TypeError, match="skips called callback with i = 1, expected step 0 of 12"):
        rk.run_sampler(skips, D, _x(), SIGMAS)
    with pytest.raises(TypeError, match=r"wrong_sigma's callback of step 0 reports sigma = .*not sigmas\[0\]"):
        rk.run_sampler(wrong_sigma, D, _x(), SIGMAS)
    with pytest.raises(TypeError, match="early_noise called noise_sampler before its first callback"):
        rk.run_sampler(early_noise, D, _x(), SIGMAS)
    with pytest.raises(TypeError, match="sample_fn must be a k-diffusion sampling function"):
        rk.run_sampler("sample_euler", D, _x(), SIGMAS)


@needs_torch
def test_bad_arguments_are_named():
    D = Denoiser(GAUSS, EDM_)
    with pytest.raises(ValueError, match="sampler_kwargs must not hold 'callback'"):
        rk.run_sampler(kd_euler, D, _x(), SIGMAS, callback=None)
    with pytest.raises(ValueError, match="sampler_kwargs must not hold 'noise_sampler'"):
        rk.run_sampler(kd_euler_ancestral, D, _x(), SIGMAS, noise_sampler=None)
    with pytest.raises(TypeError, match="kd_euler_ancestral has no parameter 'etaa'"):
        rk.run_sampler(kd_euler_ancestral, D, _x(), SIGMAS, etaa=0.5)
    with pytest.raises(TypeError, match="denoiser must be a refscore Denoiser on an EDM schedule"):
        rk.run_sampler(kd_euler, Denoiser(GAUSS, VP()), _x(), SIGMAS)
    with pytest.raises(TypeError, match="denoiser must be a refscore Denoiser on an EDM schedule"):
        rk.run_sampler(kd_euler, lambda x, t: x, _x(), SIGMAS)
    with pytest.raises(ValueError, match="x_T must have shape"):
        rk.run_sampler(kd_euler, D, np.zeros(2), SIGMAS)
    with pytest.raises(ValueError, match="x_T must have d = 2 columns"):
        rk.run_sampler(kd_euler, D, np.zeros((3, 3)), SIGMAS)
    with pytest.raises(ValueError, match="x_T must be finite"):
        rk.run_sampler(kd_euler, D, np.full((3, 2), np.nan), SIGMAS)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        rk.run_sampler(kd_euler, D, _x(), SIGMAS[::-1])
    with pytest.raises(ValueError, match="sigmas must be >= 0"):
        rk.run_sampler(kd_euler, D, _x(), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigmas must be a 1-D array of at least 2"):
        rk.run_sampler(kd_euler, D, _x(), np.array([80.0]))
    with pytest.raises(ValueError, match="seed must be an int"):
        rk.run_sampler(kd_euler_ancestral, D, _x(), SIGMAS, seed=-1)
    with pytest.raises(TypeError, match="chain0 must be an int"):
        rk.run_sampler(kd_euler_ancestral, D, _x(), SIGMAS, chain0=0.5)


# ------------------------------------------------------------------ (b) k-diffusion itself
@pytest.fixture(scope="module")
def K():
    return pytest.importorskip("k_diffusion.sampling")


REAL = {"euler": "sample_euler", "heun": "sample_heun", "euler_ancestral": "sample_euler_ancestral",
        "dpmpp_2m": "sample_dpmpp_2m"}


@needs_torch
@pytest.mark.parametrize("data", [GAUSS, MIXTURE], ids=["gaussian", "mixture"])
@pytest.mark.parametrize("name, options", CASES)
def test_k_diffusion_samplers_are_refscore_samplers(K, name, options, data):
    fn = getattr(K, REAL[name])
    run = _check_against_refscore(fn, name, options, data)
    mine = rk.run_sampler(TRANSCRIBED[name], Denoiser(data, EDM_), _x(), SIGMAS, seed=3, chain0=5, **options)
    np.testing.assert_allclose(run.states, mine.states, rtol=0, atol=_tol(mine.states))


@needs_torch
def test_k_diffusion_churn_is_refused_and_its_other_ancestral_samplers_take_refscore_noise(K):
    D = Denoiser(MIXTURE, EDM_)
    for fn in (K.sample_euler, K.sample_heun, K.sample_dpm_2):
        with pytest.raises(ValueError, match=rf"s_churn = 0.5: {fn.__name__} takes no noise_sampler"):
            rk.run_sampler(fn, D, _x(), SIGMAS, s_churn=0.5)
    last = (SIGMAS[1:] > 0).astype(np.int64)
    for fn, per_step in ((K.sample_dpm_2_ancestral, 1), (K.sample_dpmpp_2s_ancestral, 1),
                         (K.sample_dpmpp_2m_sde, 1), (K.sample_dpmpp_3m_sde, 1), (K.sample_dpmpp_sde, 2)):
        a = rk.run_sampler(fn, D, _x(), SIGMAS, seed=4)
        b = rk.run_sampler(fn, D, _x(), SIGMAS, seed=4)
        np.testing.assert_array_equal(a.states, b.states)   # a function of the seed alone
        np.testing.assert_array_equal(a.noise_blocks, per_step * last)
        assert np.all(np.isfinite(a.states))


@needs_torch
def test_the_module_docstring_example(K):
    edm = EDM()
    D = Denoiser(GAUSS, edm)
    sigmas = edm.grid(10)
    # k-diffusion's own Karras grid is built in float32 (torch.linspace): the same grid to float32 round-off
    np.testing.assert_allclose(K.get_sigmas_karras(10, 0.002, 80.0).double().numpy(), sigmas, rtol=1e-6)
    x_T = 80.0 * np.random.default_rng(0).normal(size=(4, 2))
    run = rk.run_sampler(K.sample_euler_ancestral, D, x_T, sigmas, seed=3, eta=0.5)
    mine = sample("euler_ancestral", D, edm, x_T, sigmas, seed=3, eta=0.5)
    np.testing.assert_allclose(run.states[-1], mine, rtol=0, atol=1e-12 * 80.0 * np.max(np.abs(x_T)))


# ------------------------------------------------------------------ (d) the import
def test_setup_declares_the_k_diffusion_extra():
    """``pip install 'refscore[k-diffusion]'`` installs torch (all the adapter needs) and k-diffusion."""
    import configparser
    import pathlib

    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg", encoding="utf-8")
    extra = [r.strip() for r in cfg["options.extras_require"]["k-diffusion"].strip().splitlines()]
    assert extra == ["torch>=2.0", "k-diffusion>=0.1"]


def test_the_module_imports_neither_torch_nor_k_diffusion_and_names_the_install():
    code = textwrap.dedent("""
        import sys
        import refscore.interop.k_diffusion as rk
        assert "torch" not in sys.modules and "k_diffusion" not in sys.modules, sorted(sys.modules)
        sys.modules["torch"] = None            # any "import torch" now raises ImportError
        try:
            rk.run_sampler(None, None, None, None)
        except ModuleNotFoundError as exc:
            print(str(exc))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refscore.interop.k_diffusion needs torch" in out and "pip install 'refscore[k-diffusion]'" in out
