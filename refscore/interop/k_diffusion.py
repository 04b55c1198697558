r"""Run a k-diffusion sampling function on refscore's exact denoiser and counter-based noise.

Derivation: docs/diffusion.md §1.3 (EDM's variables :math:`\bar x = x/\alpha`, :math:`\bar\sigma = \sigma/\alpha`),
§6.1 (the steps) and §6.8 (this adapter).  Importing this module imports neither torch nor k_diffusion;
:func:`run_sampler` imports torch (and only torch: the sampling function is yours to import) and raises an
``ImportError`` naming ``pip install 'refscore[k-diffusion]'`` when it is missing.

:func:`run_sampler` calls a function written in crowsonkb/k-diffusion's convention (``k_diffusion/sampling.py``:
``sample_euler``, ``sample_heun``, ``sample_euler_ancestral``, ``sample_dpmpp_2m``, ..., or your own)::

    sample_fn(model, x, sigmas, callback=callback, disable=True, noise_sampler=noise_sampler, **sampler_kwargs)

with float64 tensors and

* ``model(x, sigma)`` the exact :math:`\hat x_0 = E[x_0 \mid x]` of Gaussian or mixture data at EDM noise level
  ``sigma`` (:meth:`refscore.diffusion.denoiser.Denoiser.x0` at :math:`t = \bar\sigma`); k-diffusion's state is
  EDM's :math:`\bar x` and its ``sigma`` EDM's :math:`\bar\sigma`, so the denoiser must be built on
  :class:`~refscore.diffusion.schedules.EDM` (on any schedule the exact denoiser read in these variables *is*
  the EDM one of the same data, docs/diffusion.md §1.3; a :class:`~refscore.diffusion.denoiser.Denoiser` on
  another schedule is refused rather than converted);
* ``callback(info)`` recording ``info["x"]``, ``info["denoised"]`` and ``info["sigma_hat"]`` of step
  ``info["i"]`` (it must be called once per step, ``i = 0, 1, ...``, with ``info["sigma"] == sigmas[i]``, as
  k-diffusion's samplers do);
* ``noise_sampler(sigma, sigma_next)`` (handed only to functions with a ``noise_sampler`` parameter): its
  ``j``-th call after the callback of step ``i`` returns, for chain ``c``, coordinates ``j d .. (j+1) d - 1`` of
  ``refscore.noise.normal(seed, chain0 + c, i, (j + 1) d)`` -- block ``j`` of the noise refscore's own
  samplers draw at step ``i`` (docs/diffusion.md §6.1), so with one draw per step it is
  ``refscore.noise.normal(seed, chain0 + c, i, d)``.

The runs that are refscore's own (:func:`refscore.diffusion.sample` on ``EDM()`` with ``grid = sigmas``, the same
``seed`` and ``chain0``; tests/test_interop_k_diffusion.py checks each to 1e-12):

====================================================  ==========================================================
``sample_euler`` (``s_churn = 0``)                     ``sample("euler", ...)``
``sample_heun`` (``s_churn = 0``)                      ``sample("heun", ...)``
``sample_euler_ancestral`` (``eta``, ``s_noise``)      ``sample("euler_ancestral", ..., eta=..., s_noise=...)``
``sample_dpmpp_2m``                                    ``sample("dpmpp_2m", ...)``
====================================================  ==========================================================

Noise that refscore cannot supply is refused, never mixed in:

* by name: ``s_churn != 0`` for a function without a ``noise_sampler`` parameter (k-diffusion's
  ``sample_euler``, ``sample_heun`` and ``sample_dpm_2`` draw their churn noise with ``torch.randn_like``;
  refscore's ``euler`` and ``heun`` with ``S_churn`` are the churned samplers on refscore's noise);
* detected: while ``sample_fn`` runs, every draw of torch's random number generators (:data:`TORCH_DRAWS`, from
  the default generator or a ``generator=`` argument) is replaced by NaN (under ``torch.random.fork_rng``, so
  the default CPU generator's state is left as it was).  A draw that is never used (``sample_euler`` draws
  ``torch.randn_like(x)`` at every step and adds it only when its churn is on) changes nothing.  When a NaN
  reaches a state or a denoiser input, the run is repeated with the draws set to 0: finite then, the draws were
  used, and the run is refused with a ``ValueError`` naming the functions that drew; not finite, the function
  overflows by itself (``FloatingPointError``).  An integer draw (``torch.randint``: k-diffusion's
  ``BrownianTreeNoiseSampler`` seeds itself so when given no seed) cannot be poisoned and is refused when it is
  made.

The noise sampler's blocks are independent, the law of k-diffusion's ``default_noise_sampler``.  That is the
law of the Brownian increments a ``BrownianTreeNoiseSampler`` gives only over disjoint intervals: true of the
one call per step of ``sample_euler_ancestral``, ``sample_dpm_2_ancestral``, ``sample_dpmpp_2s_ancestral``,
``sample_dpmpp_2m_sde`` and ``sample_dpmpp_3m_sde``, not of ``sample_dpmpp_sde``, whose two calls per step cover
nested intervals (its run here is the sampler with independent noise).

Install: ``pip install 'refscore[k-diffusion]'`` installs torch and k-diffusion.  The adapter needs only torch (a
function of your own in k-diffusion's convention runs without k-diffusion); k-diffusion's package import pulls
in its training and evaluation dependencies (torchvision, kornia, clip, wandb, ...), which is why this is its
own extra.

Example (needs torch and k-diffusion)::

    import numpy as np
    from k_diffusion.sampling import get_sigmas_karras, sample_euler_ancestral
    from refscore.diffusion import EDM, Denoiser, sample
    from refscore.distributions import Gaussian
    from refscore.interop.k_diffusion import run_sampler

    edm = EDM()
    D = Denoiser(Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]]), edm)
    sigmas = edm.grid(10)                                 # = get_sigmas_karras(10, 0.002, 80.0), in float64
    x_T = 80.0 * np.random.default_rng(0).normal(size=(4, 2))
    run = run_sampler(sample_euler_ancestral, D, x_T, sigmas, seed=3, eta=0.5)
    mine = sample("euler_ancestral", D, edm, x_T, sigmas, seed=3, eta=0.5)
    # run.states[-1] and mine agree to float64 round-off
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import NamedTuple

import numpy as np

from .._validation import as_float_array, as_start_points, check_finite
from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import EDM
from ..noise import NoiseOrigin

__all__ = ["KDIFFUSION_HINT", "RESERVED", "TORCH_DRAWS", "SamplingRun", "run_sampler"]

#: what to install when torch is missing
KDIFFUSION_HINT = ("pip install 'refscore[k-diffusion]' (installs torch and k-diffusion; the adapter itself "
                   "needs only torch: pip install torch)")

#: the arguments of ``sample_fn`` that :func:`run_sampler` passes itself (not accepted in ``sampler_kwargs``)
RESERVED = ("model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler")

#: torch's random functions and tensor methods whose draws are poisoned (NaN) while ``sample_fn`` runs
TORCH_DRAWS = ("torch.rand", "torch.rand_like", "torch.randn", "torch.randn_like", "torch.randint",
               "torch.randint_like", "torch.randperm", "torch.normal", "torch.bernoulli", "torch.multinomial",
               "torch.poisson", "torch.binomial", "torch.Tensor.normal_", "torch.Tensor.uniform_",
               "torch.Tensor.random_", "torch.Tensor.exponential_", "torch.Tensor.bernoulli_",
               "torch.Tensor.bernoulli", "torch.Tensor.cauchy_", "torch.Tensor.log_normal_",
               "torch.Tensor.geometric_", "torch.Tensor.multinomial")


def _import_torch():
    try:
        import torch
        import torch.overrides
    except ImportError as exc:  # optional extra
        raise ModuleNotFoundError(f"refscore.interop.k_diffusion needs torch, which cannot be imported ({exc}): "
                                  f"{KDIFFUSION_HINT}", name=exc.name) from exc
    return torch


class SamplingRun(NamedTuple):
    r"""What :func:`run_sampler` returns, all float64 NumPy arrays (EDM's variables: :math:`\bar x = x` on EDM).

    ``states (N+1, n, d)``: the callback's ``x`` of each step (the state the step starts from) and, last, what
    ``sample_fn`` returned; ``denoised (N, n, d)``: the callback's ``denoised`` (the exact :math:`\hat x_0` at the
    step's first evaluation); ``sigmas (N+1,)``: the noise levels run; ``sigma_hat (N,)``: the callback's
    ``sigma_hat`` (the noise level of that evaluation: ``sigmas[i]`` unless churned); ``noise_blocks (N,)``
    (int): how many times each step called the noise sampler (refscore's ``k`` of the step's noise layout).
    """

    states: np.ndarray
    denoised: np.ndarray
    sigmas: np.ndarray
    sigma_hat: np.ndarray
    noise_blocks: np.ndarray


@functools.lru_cache(maxsize=None)
def _draw_functions():
    """{torch function or method: its name in :data:`TORCH_DRAWS`} for those this torch has."""
    torch = _import_torch()
    found = {}
    for name in TORCH_DRAWS:
        owner = torch.Tensor if name.startswith("torch.Tensor.") else torch
        fn = getattr(owner, name.rsplit(".", 1)[1], None)
        if fn is not None:
            found[fn] = name
    return found


@functools.lru_cache(maxsize=None)
def _guard_class():
    """A ``TorchFunctionMode`` that records every draw of :data:`TORCH_DRAWS` and overwrites it with ``fill``."""
    torch = _import_torch()

    class DrawGuard(torch.overrides.TorchFunctionMode):
        def __init__(self, fn_name, fill):
            super().__init__()
            self.fn_name, self.fill = fn_name, fill
            self.draws = {}   # name -> count

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            try:
                name = _draw_functions().get(func)
            except TypeError:  # an unhashable callable is no random function of torch
                name = None
            if name is None:
                return out
            self.draws[name] = self.draws.get(name, 0) + 1
            if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
                raise ValueError(f"{self.fn_name} drew {name} from torch's random number generator (an integer "
                                 f"draw, which cannot be replaced by NaN to see whether it is used): refscore "
                                 f"cannot supply it, and mixing it in would make the run another one than "
                                 f"refscore's")
            with torch.no_grad():
                return out.fill_(self.fill)

        def names(self):
            return ", ".join(f"{k} x{v}" for k, v in sorted(self.draws.items()))

    return DrawGuard


class _Poisoned(Exception):
    """A non-finite value met while torch draws were NaN: the run is repeated with them 0 to tell the cause."""

    def __init__(self, what, draws):
        super().__init__(what)
        self.what, self.draws = what, draws


def _signature(sample_fn):
    if not callable(sample_fn):
        raise TypeError(f"sample_fn must be a k-diffusion sampling function fn(model, x, sigmas, extra_args=None, "
                        f"callback=None, disable=None, ...), got {type(sample_fn).__name__}")
    try:
        params = inspect.signature(sample_fn).parameters
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sample_fn's signature cannot be read ({exc}): run_sampler needs to see whether it takes "
                        f"callback, disable and noise_sampler") from exc
    named = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if "callback" not in named and not var_kw:
        raise TypeError("sample_fn must take a callback argument (k-diffusion's convention: callback({'x', 'i', "
                        "'sigma', 'sigma_hat', 'denoised'}) once per step): run_sampler reads the states from it")
    return named, var_kw


def _check_kwargs(fn_name, kwargs, named, var_kw):
    for key in kwargs:
        if key in RESERVED:
            raise ValueError(f"sampler_kwargs must not hold {key!r}: run_sampler passes {fn_name} its model, state, "
                             f"noise levels, callback, progress switch and noise sampler itself")
        if key not in named and not var_kw:
            raise TypeError(f"{fn_name} has no parameter {key!r}; its parameters are {sorted(named)}")
    if "s_churn" in kwargs and "noise_sampler" not in named:
        churn = kwargs["s_churn"]
        if isinstance(churn, (bool, np.bool_)) or not isinstance(churn, numbers.Real) or math.isnan(churn):
            raise TypeError(f"s_churn must be a real number, got {churn!r}")
        if churn != 0:
            raise ValueError(f"s_churn = {churn!r}: {fn_name} takes no noise_sampler, so its churn noise can only "
                             f"come from its own random number generator (k-diffusion's sample_euler, sample_heun "
                             f"and sample_dpm_2 draw it with torch.randn_like), which refscore cannot supply; only "
                             f"s_churn = 0 runs here. refscore's euler and heun with S_churn are the churned "
                             f"samplers on refscore's noise")


def _check_sigmas(sigmas):
    s = as_float_array(sigmas, "sigmas")
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D array of at least 2 noise levels, got shape {s.shape}")
    check_finite("sigmas", s)
    if np.any(s < 0.0):
        raise ValueError(f"sigmas must be >= 0 (EDM noise levels), got a minimum of {float(np.min(s))!r}")
    if np.any(np.diff(s) >= 0.0):
        raise ValueError("sigmas must be strictly decreasing (from noise to data), as k-diffusion's grids are")
    return s


def run_sampler(sample_fn, denoiser, x_T, sigmas, *, seed=0, chain0=0, **sampler_kwargs) -> SamplingRun:
    r"""Run ``sample_fn`` (k-diffusion's convention) down ``sigmas`` from ``x_T`` on the exact ``denoiser``.

    Parameters
    ----------
    sample_fn : callable
        ``sample_fn(model, x, sigmas, extra_args=None, callback=None, disable=None, ...)``: a function of
        ``k_diffusion.sampling`` or your own in its convention.  It must call ``callback`` once per step.
    denoiser : refscore.diffusion.denoiser.Denoiser
        Exact denoiser of Gaussian or mixture data on a :class:`~refscore.diffusion.schedules.EDM` schedule
        (any ``sigma_min``, ``sigma_max``, ``rho``: the denoiser does not read them).
    x_T : array_like, shape (n, d)
        The first state (k-diffusion's ``x``, e.g. ``sigmas[0]`` times standard normals).
    sigmas : array_like, shape (N+1,)
        Strictly decreasing EDM noise levels :math:`\bar\sigma \ge 0` (e.g. ``EDM().grid(N)``,
        :func:`refscore.conventions.karras_sigmas` or k-diffusion's ``get_sigmas_karras`` in float64); handed to
        ``sample_fn`` as a float64 tensor.
    seed, chain0 : int
        The noise's key and first chain (:class:`refscore.noise.NoiseOrigin`), as for
        :func:`refscore.diffusion.sample`.
    **sampler_kwargs
        ``sample_fn``'s own options (``eta``, ``s_noise``, ...); none of :data:`RESERVED`, and ``s_churn = 0``
        for a function without a ``noise_sampler``.

    Raises
    ------
    ValueError
        For bad arguments, ``s_churn != 0`` without a ``noise_sampler``, and when ``sample_fn``'s states depend
        on torch's random number generators (module docstring).
    TypeError
        When ``sample_fn`` does not follow the convention (no callback, steps reported out of order or with
        another ``sigma``, noise asked for before the first callback).
    FloatingPointError
        When a state or a denoiser input is not finite, and not because of a torch draw.
    """
    torch = _import_torch()
    named, var_kw = _signature(sample_fn)
    try:
        fn_name = sample_fn.__qualname__
    except AttributeError:  # a functools.partial or a callable object
        fn_name = repr(sample_fn)
    _check_kwargs(fn_name, sampler_kwargs, named, var_kw)
    if not isinstance(denoiser, Denoiser) or not isinstance(denoiser.schedule, EDM):
        raise TypeError(f"denoiser must be a refscore Denoiser on an EDM schedule: k-diffusion's samplers run in "
                        f"EDM's variables (x/alpha, sigma/alpha), where the exact denoiser of data under any "
                        f"schedule is Denoiser(data, EDM()) (docs/diffusion.md §1.3), got {denoiser!r}")
    x = as_start_points(x_T, "x_T", denoiser.dim)
    sig = _check_sigmas(sigmas)
    n, d = x.shape
    n_steps = sig.shape[0] - 1
    origin = NoiseOrigin(seed, chain0)

    kwargs = dict(sampler_kwargs)
    named_args = {"disable": True} if "disable" in named else {}

    def attempt(fill):
        """One call of sample_fn with torch's draws overwritten by ``fill``: (states, denoised, sigma_hat, blocks)."""
        guard = _guard_class()(fn_name, fill)
        xs, dens, hats, blocks = [], [], [], []

        def finite(arr, what):
            if not np.all(np.isfinite(arr)):
                if guard.draws and math.isnan(fill):
                    raise _Poisoned(what, guard.names())
                also = (f" (also with its draws of torch's random number generator, {guard.names()}, set to 0)"
                        if guard.draws else "")
                raise FloatingPointError(f"{fn_name} handed non-finite values as {what}{also}")
            return arr

        def as_array(value, what):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{fn_name} handed {what} as {type(value).__name__}, not a torch tensor")
            arr = value.detach().to("cpu", torch.float64).numpy().copy()
            if arr.shape != (n, d):
                raise TypeError(f"{fn_name} handed {what} of shape {tuple(arr.shape)}, not the state's {(n, d)}")
            return finite(arr, what)

        def model(x_in, sigma, **extra):
            if extra:
                raise TypeError(f"{fn_name} passed the model extra arguments {sorted(extra)}; run_sampler's model "
                                f"(the exact denoiser) takes none")
            where = "the denoiser's input" + (f" after the callback of step {len(xs) - 1}" if xs else "")
            xb = as_array(x_in, where)
            s = np.atleast_1d(torch.as_tensor(sigma).detach().to("cpu", torch.float64).numpy())
            if s.shape not in ((1,), (n,)):
                raise TypeError(f"{fn_name} handed the model sigma of shape {s.shape}, not one per state {(n,)}")
            finite(s, "the denoiser's noise level" + (f" after the callback of step {len(xs) - 1}" if xs else ""))
            t = float(s[0]) if np.all(s == s[0]) else np.broadcast_to(s, (n,)).copy()
            return torch.from_numpy(np.ascontiguousarray(denoiser.x0(xb, t), dtype=np.float64))

        def callback(info):
            if not isinstance(info, dict) or not {"x", "i", "sigma", "denoised"} <= set(info):
                raise TypeError(f"{fn_name} called callback with {info!r}: k-diffusion's convention is a dict with "
                                f"keys 'x', 'i', 'sigma', 'sigma_hat', 'denoised'")
            i = info["i"]
            if not isinstance(i, numbers.Integral) or i != len(xs) or i >= n_steps:
                raise TypeError(f"{fn_name} called callback with i = {i!r}, expected step {len(xs)} of {n_steps}: "
                                f"run_sampler needs one callback per step, in order")
            sigma = float(info["sigma"])
            if sigma != sig[i]:
                raise TypeError(f"{fn_name}'s callback of step {i} reports sigma = {sigma!r}, not sigmas[{i}] = "
                                f"{float(sig[i])!r}")
            xs.append(as_array(info["x"], f"the state of step {i}"))
            dens.append(as_array(info["denoised"], f"the denoised state of step {i}"))
            hats.append(float(info.get("sigma_hat", sigma)))
            blocks.append(0)

        def noise_sampler(sigma, sigma_next):
            if not xs:
                raise TypeError(f"{fn_name} called noise_sampler before its first callback: run_sampler hands a "
                                f"draw the noise of the step of the last callback")
            i = len(xs) - 1
            j = blocks[i]
            blocks[i] += 1
            z = origin.normal(n, i, (j + 1) * d)[:, j * d:]
            return torch.from_numpy(np.ascontiguousarray(z))

        extra = dict(named_args, callback=callback)
        if "noise_sampler" in named:
            extra["noise_sampler"] = noise_sampler
        with torch.random.fork_rng(devices=[]), guard:
            out = sample_fn(model, torch.from_numpy(x.copy()), torch.from_numpy(sig.copy()), **kwargs, **extra)
        if len(xs) != n_steps:
            raise TypeError(f"{fn_name} called callback {len(xs)} times for {n_steps} steps: run_sampler needs "
                            f"one callback per step")
        return np.stack(xs + [as_array(out, "its result")]), np.stack(dens), np.array(hats), np.array(blocks)

    try:
        states, denoised, sigma_hat, blocks = attempt(math.nan)
    except _Poisoned as poisoned:
        # NaN reached a state while torch's draws were NaN: either the draws were used (then the same run with
        # them 0 is finite there), or the function overflows by itself (then it does so with them 0 too, and
        # this attempt raises FloatingPointError)
        attempt(0.0)
        raise ValueError(f"{fn_name} used noise from torch's random number generator ({poisoned.draws}), which "
                         f"refscore cannot supply: with its draws replaced by NaN they reached {poisoned.what}, "
                         f"and with them 0 the run is finite. Hand its noise through noise_sampler, or use "
                         f"refscore's own sampler on refscore's noise (euler and heun take S_churn)") from None
    return SamplingRun(states, denoised, sig, sigma_hat, blocks.astype(np.int64))
