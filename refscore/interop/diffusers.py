r"""Run a huggingface/diffusers scheduler on refscore's exact denoiser and counter-based noise.

Derivation: docs/diffusion.md §2 (the discrete tables), §1.3 (EDM's variable :math:`x/\alpha`) and §6.1 (the
DDIM and Euler steps).  Importing this module imports neither torch nor diffusers; :func:`run_scheduler` and
:func:`vp_discrete` import them and raise an ``ImportError`` naming ``pip install 'refscore[diffusers]'`` when
they are missing.

:func:`run_scheduler` is a diffusers pipeline's denoising loop with the network replaced by the exact prediction
of Gaussian or mixture data (:class:`refscore.diffusion.denoiser.Denoiser` on a
:class:`~refscore.diffusion.schedules.VPDiscrete` table)::

    scheduler.set_timesteps(num_inference_steps)
    sample = x_T * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.scale_model_input(sample, t)          # the variance-preserving x = alpha xbar
        out = denoiser.predict(kind, x, time_i)             # eps, v or x0 of the data, exact
        sample = scheduler.step(out, t, sample, **step_kwargs, variance_noise=xi_i).prev_sample

Every tensor handed to diffusers is float64.  ``time_i`` is the :class:`VPDiscrete` time of the noise level
the step uses (:data:`schedulers`' ``time`` column):

=====================================  ==============================================================
``DDIMScheduler``                      the integer timestep :math:`t` itself, :math:`\bar\alpha_t` of
                                       the table; the step is :math:`\sqrt{\bar\alpha_{\rm prev}}\hat x_0
                                       + \sqrt{1 - \bar\alpha_{\rm prev} - s^2}\,\hat\varepsilon + s\xi`,
                                       refscore's ``ddim`` on the grid of the timesteps and the last
                                       ``prev_timestep`` (:math:`-1` with ``set_alpha_to_one``)
``EulerDiscreteScheduler``             the time whose EDM noise level is the step's
                                       :math:`\bar\sigma_i` = ``sigmas[i]``, :math:`t(\lambda)` with
                                       :math:`\lambda = -2\log\bar\sigma_i` (the scheduler's own timestep
                                       to float32 round-off with ``interpolation_type="linear"``; right
                                       for Karras or exponential sigmas too); the sample is EDM's
                                       :math:`\bar x = x/\alpha` and the step
                                       :math:`\bar x + (\bar\sigma_{i+1} - \bar\sigma_i)(\bar x - \hat x_0)/\bar\sigma_i`,
                                       refscore's ``euler`` on :class:`~refscore.diffusion.schedules.EDM`
                                       with the grid ``sigmas``
=====================================  ==============================================================

Noise: diffusers' ``DDIMScheduler.step`` accepts ``variance_noise`` (so do ``DDIMParallelScheduler``,
``DPMSolverMultistepScheduler`` for its SDE variants, and a few pipeline-specific ones); with ``eta > 0`` step
``i`` of chain ``c`` is handed :math:`\xi` = ``refscore.noise.normal(seed, chain0 + c, i, d)``, the noise
refscore's own ``ddim`` draws, so the two runs are the same run.  ``EulerDiscreteScheduler.step`` (with
``s_churn > 0``), ``DDPMScheduler.step`` and ``EulerAncestralDiscreteScheduler.step`` draw their noise from a
torch generator only: for them only deterministic runs are supported, and a stochastic one is refused by name
(``DDPMScheduler`` and ``EulerAncestralDiscreteScheduler`` are always stochastic: use refscore's ``ddpm`` and
``euler_ancestral``).

Precision: diffusers builds its tables in float32.  ``DDIMScheduler`` then computes its step's coefficients in
float32 from them and applies them to the float64 tensors; ``EulerDiscreteScheduler.step`` casts the sample
to float32.  A run therefore agrees with refscore's run on :func:`vp_discrete` (the scheduler's own table read
exactly) to float32 round-off, not to float64's (tests/test_interop_diffusers.py states the tolerances and
shows, for DDIM, that a float64 table closes the gap to 1e-12).

Example (needs torch and diffusers)::

    import numpy as np
    from diffusers import DDIMScheduler
    from refscore.diffusion import Denoiser, sample
    from refscore.distributions import Gaussian
    from refscore.interop.diffusers import run_scheduler, vp_discrete

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, steps_offset=1)
    table = vp_discrete(scheduler)                      # the scheduler's own alpha_bar, float64
    D = Denoiser(Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]]), table)
    x_T = np.random.default_rng(0).normal(size=(4, 2))
    run = run_scheduler(scheduler, D, x_T, 10, seed=3, step_kwargs={"eta": 0.5})
    mine = sample("ddim", D, table, x_T, np.append(run.timesteps, -1.0), seed=3, eta=0.5)
    # run.states[-1] and mine agree to float32 round-off
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from .._validation import as_start_points, check_choice, check_int
from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPDiscrete
from ..noise import NoiseOrigin

__all__ = ["DIFFUSERS_HINT", "PREDICTION_TYPES", "SchedulerRun", "Support", "schedulers", "vp_discrete",
           "run_scheduler"]

#: what to install when torch or diffusers is missing
DIFFUSERS_HINT = "pip install 'refscore[diffusers]' (installs diffusers; torch is needed too: pip install torch)"

#: diffusers' ``prediction_type`` -> the :class:`~refscore.diffusion.denoiser.Denoiser` prediction it reads
#: (docs/diffusion.md §3; ``original_sample`` is ``EulerDiscreteScheduler``'s old name for ``sample``)
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "original_sample": "x0"}

_F32_EPS = 2.0 ** -24  # float32's unit round-off


def _import():
    try:
        import diffusers
        import torch
    except ImportError as exc:  # optional extras
        raise ModuleNotFoundError(f"refscore.interop.diffusers needs torch and diffusers, which cannot be imported "
                                  f"({exc}): {DIFFUSERS_HINT}", name=exc.name) from exc
    return torch, diffusers


class Support(NamedTuple):
    """A row of :func:`schedulers`.

    ``time(scheduler, i, timestep, schedule) -> float`` is the :class:`VPDiscrete` time at which step ``i``
    evaluates the denoiser; ``alpha(scheduler, i) -> float`` the factor taking the scheduler's sample before
    step ``i`` (``i = N``: the output) to the variance-preserving :math:`x`; ``noise(step_kwargs) -> bool``
    whether the step needs ``variance_noise`` (it raises ``ValueError`` naming the scheduler for a stochastic
    step it cannot be handed noise for); ``reference`` the diffusers code followed.
    """

    time: object
    alpha: object
    noise: object
    reference: str


def _no_generator(name, step_kwargs):
    for key in ("generator", "variance_noise", "return_dict"):
        if key in step_kwargs:
            raise ValueError(f"step_kwargs must not hold {key!r}: run_scheduler hands {name}.step refscore's noise "
                             f"and reads its output itself")


def _ddim_time(scheduler, i, timestep, schedule):
    t = float(timestep)
    if t != math.floor(t) or not 0 <= t <= schedule.t_max:
        raise ValueError(f"DDIMScheduler's timestep {i} must be an integer index of its table in [0, "
                         f"{schedule.t_max:g}], got {t!r}")
    return t


def _ddim_noise(step_kwargs):
    _no_generator("DDIMScheduler", step_kwargs)
    eta = step_kwargs.get("eta", 0.0)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"step_kwargs['eta'] must be a finite real >= 0, got {eta!r}")
    return eta > 0


def _unit_alpha(scheduler, i):
    return 1.0


def _euler_time(scheduler, i, timestep, schedule):
    sbar = float(scheduler.sigmas[i])
    if not sbar > 0.0:
        raise ValueError(f"EulerDiscreteScheduler's sigma {i} must be > 0 to evaluate the denoiser, got {sbar!r}")
    lam = -2.0 * math.log(sbar)
    lo, hi = schedule.log_snr_range()
    # the float32 sigmas (computed in float32 from the float32 table) may end a few float32 ulps beyond the
    # table's end: up to 8 ulps of sigma, 2 * 8 * 2^-24 in lambda = -2 log sigma, is the end itself
    slack = 16.0 * _F32_EPS
    if not lo - slack <= lam <= hi + slack:
        raise ValueError(f"EulerDiscreteScheduler's sigma {i} = {sbar!r} lies outside the noise levels of "
                         f"{schedule!r} (log-SNR in [{lo!r}, {hi!r}], got {lam!r})")
    return float(schedule.t_of_log_snr(min(max(lam, lo), hi)))


def _euler_alpha(scheduler, i):
    sbar = float(scheduler.sigmas[i])
    return 1.0 / math.sqrt(1.0 + sbar * sbar)  # alpha = 1/sqrt(1 + sbar^2) on a VP table (docs/diffusion.md §2)


def _euler_noise(step_kwargs):
    _no_generator("EulerDiscreteScheduler", step_kwargs)
    if step_kwargs.get("s_churn", 0.0) != 0.0:
        raise ValueError("EulerDiscreteScheduler.step draws its churn noise (s_churn > 0) from a torch generator and "
                         "takes no variance_noise: only deterministic runs (s_churn = 0) are supported; refscore's "
                         "euler with S_churn runs the churned sampler on its own noise")
    return False


def _always_stochastic(name, instead):
    def noise(step_kwargs):
        raise ValueError(f"{name}.step draws its noise from a torch generator and takes no variance_noise, and it "
                         f"has no deterministic mode: it is not supported (refscore's {instead} is the same sampler "
                         f"on refscore's noise)")
    return noise


@functools.lru_cache(maxsize=None)
def schedulers() -> dict:
    """The diffusers scheduler classes :func:`run_scheduler` knows -> :class:`Support` (imports diffusers).

    ``DDIMScheduler`` (deterministic, or stochastic with ``eta > 0`` through ``variance_noise``) and
    ``EulerDiscreteScheduler`` (deterministic only) run; ``DDPMScheduler`` and
    ``EulerAncestralDiscreteScheduler`` are listed to be refused by name (their steps draw from a torch
    generator only).
    """
    _, diffusers = _import()
    return {
        diffusers.DDIMScheduler: Support(_ddim_time, _unit_alpha, _ddim_noise,
                                         "diffusers scheduling_ddim.py DDIMScheduler.step"),
        diffusers.EulerDiscreteScheduler: Support(_euler_time, _euler_alpha, _euler_noise,
                                                  "diffusers scheduling_euler_discrete.py EulerDiscreteScheduler.step"),
        diffusers.DDPMScheduler: Support(_ddim_time, _unit_alpha, _always_stochastic("DDPMScheduler", "ddpm"),
                                         "diffusers scheduling_ddpm.py DDPMScheduler.step"),
        diffusers.EulerAncestralDiscreteScheduler: Support(
            _euler_time, _euler_alpha, _always_stochastic("EulerAncestralDiscreteScheduler", "euler_ancestral"),
            "diffusers scheduling_euler_ancestral_discrete.py EulerAncestralDiscreteScheduler.step"),
    }


def _row(scheduler):
    table = schedulers()
    row = table.get(type(scheduler))
    if row is None:
        known = ", ".join(sorted(c.__name__ for c in table))
        raise TypeError(f"scheduler must be one of the diffusers schedulers {known} (an instance of exactly that "
                        f"class), got {type(scheduler).__name__}")
    return row


def _alphas_cumprod(scheduler):
    torch, _ = _import()
    ab = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ab, torch.Tensor) or ab.ndim != 1 or ab.shape[0] < 1:
        raise TypeError(f"scheduler must carry its table alphas_cumprod as a 1-D torch tensor, got {ab!r}")
    return ab.detach().to("cpu", torch.float64).numpy().copy()  # float32 -> float64 is exact


def vp_discrete(scheduler) -> VPDiscrete:
    r"""The :class:`~refscore.diffusion.schedules.VPDiscrete` of the scheduler's own table :math:`\bar\alpha_n`.

    diffusers' table is float32 (``torch.cumprod`` of float32 :math:`1 - \beta`), so it differs from refscore's
    float64 table of the same configuration by up to about :math:`10^{-6}` relatively; this schedule reads the
    scheduler's values exactly, as ``trained_betas`` :math:`\beta_0 = 1 - \bar\alpha_0`,
    :math:`\beta_n = 1 - \bar\alpha_n/\bar\alpha_{n-1}` (docs/diffusion.md §2), whose float64 running product
    gives back :math:`\bar\alpha_n` to a few float64 ulps per timestep.
    """
    _row(scheduler)
    ab = _alphas_cumprod(scheduler)
    if np.any(ab < 0.0) or np.any(ab >= 1.0) or np.any(np.diff(ab) >= 0.0):
        raise ValueError("scheduler.alphas_cumprod must be strictly decreasing in [0, 1)")
    betas = np.empty_like(ab)
    betas[0] = 1.0 - ab[0]
    betas[1:] = 1.0 - ab[1:] / ab[:-1]
    return VPDiscrete(trained_betas=betas)


def _check_table(scheduler, schedule):
    """The scheduler's float32 table must be the denoiser's to float32 round-off (else the exact prediction is of
    another forward process)."""
    ab = _alphas_cumprod(scheduler)
    mine = schedule.alphas_cumprod
    if ab.shape != mine.shape:
        raise ValueError(f"the scheduler has {ab.shape[0]} training timesteps, the denoiser's {schedule!r} has "
                         f"{mine.shape[0]}")
    T = ab.shape[0]
    # a float32 running product of T factors, each 1 - beta rounded: <= 3 T u relative; 2^-24 absolute covers
    # EulerDiscreteScheduler's zero-terminal-SNR clamp of the last entry to 2^-24
    bound = 3.0 * T * _F32_EPS * mine + _F32_EPS
    gap = np.abs(ab - mine)
    if np.any(gap > bound):
        n = int(np.argmax(gap - bound))
        raise ValueError(f"the denoiser's schedule {schedule!r} is not the scheduler's table: alphas_cumprod[{n}] is "
                         f"{mine[n]!r} there and {ab[n]!r} in the scheduler (more than float32 round-off apart); build "
                         f"the Denoiser on vp_discrete(scheduler)")


class SchedulerRun(NamedTuple):
    r"""What :func:`run_scheduler` returns, all float64.

    ``states (N+1, n, d)``: the scheduler's samples, the first ``x_T * init_noise_sigma``; ``x0 (N, n, d)``: the
    scheduler's ``pred_original_sample`` of each step; ``timesteps (N,)``: ``scheduler.timesteps``; ``times (N,)``:
    the :class:`~refscore.diffusion.schedules.VPDiscrete` times at which the denoiser was evaluated; ``alpha
    (N+1,)``: the factors taking each state to the variance-preserving :math:`x` (1 for DDIM; :math:`1/\sqrt{1 +
    \bar\sigma_i^2}` for Euler, whose samples are :math:`\bar x = x/\alpha`), so ``alpha[:, None, None] * states``
    are the states in refscore's variable on the table.
    """

    states: np.ndarray
    x0: np.ndarray
    timesteps: np.ndarray
    times: np.ndarray
    alpha: np.ndarray


def run_scheduler(scheduler, denoiser, x_T, num_inference_steps, *, seed=0, chain0=0, prediction_type=None,
                  step_kwargs=None) -> SchedulerRun:
    r"""Run a diffusers ``scheduler`` for ``num_inference_steps`` steps on the exact ``denoiser``; a :class:`SchedulerRun`.

    Parameters
    ----------
    scheduler : a diffusers scheduler of :func:`schedulers`
        Its ``set_timesteps`` is called (it is reset, as a pipeline resets it).
    denoiser : refscore.diffusion.denoiser.Denoiser
        Exact denoiser of Gaussian or mixture data on a :class:`~refscore.diffusion.schedules.VPDiscrete`
        whose table is the scheduler's to float32 round-off (:func:`vp_discrete` is that table exactly).
    x_T : array_like, shape (n, d)
        A pipeline's latents: the first sample is ``x_T * scheduler.init_noise_sigma`` (after ``set_timesteps``).
    num_inference_steps : int
    seed, chain0 : int
        The noise's key and first chain (:class:`refscore.noise.NoiseOrigin`): step ``i`` hands chain ``c``
        ``refscore.noise.normal(seed, chain0 + c, i, d)`` as ``variance_noise`` when the step is stochastic.
    prediction_type : str, optional
        What the model outputs, in diffusers' names (:data:`PREDICTION_TYPES`); default the scheduler's
        ``config.prediction_type``.  Another one than the scheduler's is allowed: the scheduler then misreads the
        output, as a misconfigured pipeline does.
    step_kwargs : dict, optional
        Passed to every ``scheduler.step`` (``eta`` for DDIM); no ``generator``.
    """
    torch, _ = _import()
    row = _row(scheduler)
    if not isinstance(denoiser, Denoiser) or not isinstance(denoiser.schedule, VPDiscrete):
        raise TypeError(f"denoiser must be a refscore Denoiser on a VPDiscrete schedule, got {denoiser!r}")
    schedule = denoiser.schedule
    _check_table(scheduler, schedule)
    n_steps = check_int("num_inference_steps", num_inference_steps, 1)
    kwargs = {} if step_kwargs is None else dict(step_kwargs)
    stochastic = row.noise(kwargs)
    if prediction_type is None:
        prediction_type = scheduler.config.prediction_type
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    kind = PREDICTION_TYPES[prediction_type]
    x = as_start_points(x_T, "x_T", denoiser.dim)
    n, d = x.shape
    origin = NoiseOrigin(seed, chain0)

    scheduler.set_timesteps(n_steps)
    timesteps = list(scheduler.timesteps)
    sample = torch.from_numpy(x.copy()) * scheduler.init_noise_sigma
    states, x0s, times = [sample.numpy().copy()], [], []
    for i, t in enumerate(timesteps):
        time = row.time(scheduler, i, t, schedule)
        inp = scheduler.scale_model_input(sample, t).to(torch.float64).numpy()
        out = torch.from_numpy(np.ascontiguousarray(denoiser.predict(kind, inp, time), dtype=np.float64))
        extra = {"variance_noise": torch.from_numpy(origin.normal(n, i, d))} if stochastic else {}
        res = scheduler.step(out, t, sample, **kwargs, **extra)
        sample = res.prev_sample.to(torch.float64)
        state = sample.numpy().copy()
        if not np.all(np.isfinite(state)):
            raise FloatingPointError(f"{type(scheduler).__name__}.step {i} (timestep {float(t)!r}) produced "
                                     f"non-finite states")
        states.append(state)
        x0s.append(res.pred_original_sample.to(torch.float64).numpy().copy())
        times.append(time)
    alpha = np.array([row.alpha(scheduler, i) for i in range(len(timesteps) + 1)])
    return SchedulerRun(np.stack(states), np.stack(x0s), np.array([float(t) for t in timesteps]), np.array(times),
                        alpha)
