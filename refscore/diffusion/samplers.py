r"""Diffusion samplers on NumPy (Euler and Heun on the probability-flow ODE, DDIM) and their exact output laws.

Derivation: docs/diffusion.md §6 (the steps, and their exact laws on Gaussian data).

A sampler needs a denoiser ``x0_fn(x, t) -> x0`` (for example :meth:`refscore.diffusion.denoiser.Denoiser.x0`,
or a network's ``x0`` prediction) and a schedule; everything else follows from the schedule's
:math:`\alpha, \sigma` and their derivatives (:mod:`refscore.diffusion.parametrisations`):

.. math::

    \hat\varepsilon = \frac{x - \alpha\hat x_0}{\sigma}, \qquad
    \hat u(x, t) = \alpha'\hat x_0 + \sigma'\hat\varepsilon \quad (\text{the PF-ODE's } dx/dt).

Steps from :math:`t` to :math:`t_n` (``h = t_n - t < 0``), along a grid :math:`t_0 > t_1 > \dots > t_N`:

* ``euler``: :math:`x_n = x + h\,\hat u(x, t)`.  On :class:`~refscore.diffusion.schedules.EDM` this is
  Karras et al.'s Euler step :math:`x + (t_n - t)(x - D(x; t))/t`.
* ``heun``: :math:`\tilde x = x + h\,\hat u(x, t)`, then, unless :math:`\sigma(t_n) = 0`,
  :math:`x_n = x + \tfrac h2(\hat u(x, t) + \hat u(\tilde x, t_n))` (Karras et al. 2022, Algorithm 1 with
  :math:`S_{\rm churn} = 0`).
* ``ddim``: :math:`x_n = \alpha_n\hat x_0 + \sqrt{\sigma_n^2 - s_n^2}\,\hat\varepsilon + s_n\xi`,
  :math:`s_n = \eta\,\sigma_n\sqrt{1 - e^{\lambda_t - \lambda_n}}` (Song, Meng, Ermon 2021, eq. (12) and (16),
  written for any schedule; :func:`refscore.diffusion.laws.ddim_noise_scales`).  :math:`\eta = 0` is the
  deterministic DDIM, :math:`\eta = 1` DDPM's ancestral step.

Noise: step ``i`` of chain ``c`` draws :math:`\xi = ` ``noise.normal(seed, chain0 + c, i, d)``
(:mod:`refscore.noise`), so a run does not depend on how its chains are batched.

:func:`output_law` is the exact law of the output on Gaussian data, from the affine maps of
:mod:`refscore.diffusion.laws` (written independently of the steps here).

References
----------
T. Karras, M. Aittala, T. Aila, S. Laine, NeurIPS 2022, Algorithm 1 (NVlabs/edm ``generate.py``,
``edm_sampler``); J. Song, C. Meng, S. Ermon, "Denoising diffusion implicit models", ICLR 2021
(huggingface/diffusers ``scheduling_ddim.py``, ``DDIMScheduler.step``).

Examples
--------
>>> import numpy as np
>>> from refscore.distributions import Gaussian
>>> from refscore.diffusion import EDM, Denoiser
>>> from refscore.diffusion.samplers import output_law
>>> edm = EDM()
>>> data = Gaussian([1.0], [[0.25]])
>>> mean, cov = output_law("heun", data, edm, edm.grid(64))   # from the exact marginal at sigma = 80
>>> round(float(mean[0]), 9), round(float(cov[0, 0]) - 0.25, 5)   # 64 Heun steps: variance 0.7 % too large
(1.0, 0.00183)
>>> round(float(output_law("heun", data, edm, edm.grid(128))[1][0, 0]) - 0.25, 5)   # second order: / 4
0.00044
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import as_float_array, check_choice, check_finite
from ..distributions import Gaussian
from ..noise import NoiseOrigin
from . import laws
from .schedules import Schedule

__all__ = ["SAMPLERS", "Sampler", "euler_step", "heun_step", "ddim_step", "sample", "output_map", "output_law"]


def _x0(x0_fn, x, t, i=None):
    out = as_float_array(x0_fn(x, t), "the x0 prediction")
    if out.shape != x.shape:
        raise ValueError(f"x0_fn must return an array shaped like x {x.shape}, got {out.shape}")
    if not np.all(np.isfinite(out)):
        where = "" if i is None else f" at step {i}"
        raise FloatingPointError(f"x0_fn returned non-finite values{where} (t = {t!r})")
    return out


def _velocity(x0_fn, schedule, x, t):
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    if s == 0.0 or not np.isfinite(ds):
        raise ValueError(f"t = {t!r} has sigma = {s!r}, d_sigma = {ds!r}: the probability-flow velocity is not "
                         f"defined there (a grid may end there but not evaluate the velocity there)")
    x0 = _x0(x0_fn, x, t)
    return da * x0 + ds * (x - a * x0) / s


def euler_step(x0_fn, schedule, x, t, t_next):
    r"""One Euler step of the probability-flow ODE: :math:`x + (t_n - t)\,\hat u(x, t)`."""
    return x + (t_next - t) * _velocity(x0_fn, schedule, x, t)


def heun_step(x0_fn, schedule, x, t, t_next):
    r"""One Heun step (Karras et al. 2022, Algorithm 1 lines 5-8, no churn); Euler when :math:`\sigma(t_n) = 0`."""
    h = t_next - t
    d = _velocity(x0_fn, schedule, x, t)
    xe = x + h * d
    if schedule.sigma(t_next) == 0.0:
        return xe
    return x + h * (0.5 * d + 0.5 * _velocity(x0_fn, schedule, xe, t_next))


def ddim_step(x0_fn, schedule, x, t, t_next, eta=0.0, noise=None):
    r"""One DDIM step: :math:`\alpha_n\hat x_0 + \sqrt{\sigma_n^2 - s_n^2}\,\hat\varepsilon + s_n\xi` (``noise`` is ξ)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    with np.errstate(divide="ignore"):
        lt, ln = schedule.log_snr(t), schedule.log_snr(t_next)
    if s == 0.0:
        raise ValueError(f"t = {t!r} has sigma = 0: DDIM cannot step from clean data")
    cn, sd = laws.ddim_noise_scales(a, s, an, sn, lt, ln, eta)
    x0 = _x0(x0_fn, x, t)
    out = an * x0 + cn * ((x - a * x0) / s)
    if sd > 0.0:
        if noise is None:
            raise ValueError(f"noise is needed for eta = {eta!r} > 0 (the step adds s_n xi with s_n = {sd!r})")
        out = out + sd * noise
    return out


class Sampler(NamedTuple):
    """A registry row: the step, its affine map on Gaussian data (:mod:`refscore.diffusion.laws`), and whether
    it draws noise."""

    step: object
    affine: object
    stochastic: bool


#: the samplers (the registry :func:`sample`, :func:`output_map` and the tests read)
SAMPLERS = {
    "euler": Sampler(euler_step, laws.euler_affine, False),
    "heun": Sampler(heun_step, laws.heun_affine, False),
    "ddim": Sampler(ddim_step, laws.ddim_affine, True),
}


def _check_grid(schedule, grid):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
    g = as_float_array(grid, "grid")
    if g.ndim != 1 or g.shape[0] < 2:
        raise ValueError(f"grid must be a 1-D array of at least 2 times, got shape {g.shape}")
    check_finite("grid", g)
    if np.any(np.diff(g) >= 0):
        raise ValueError("grid must be strictly decreasing (from noise to data)")
    schedule.alpha(g)  # the domain check, with its message naming t
    return g


def _check_eta(sampler, eta):
    eta = float(as_float_array(eta, "eta"))
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be finite and >= 0, got {eta!r}")
    if eta and not SAMPLERS[sampler].stochastic:
        raise ValueError(f"eta must be 0 for the deterministic sampler {sampler!r}, got {eta!r}")
    return eta


def sample(sampler, x0_fn, schedule, x_init, grid, eta=0.0, seed=0, chain0=0, record=False):
    r"""Run ``sampler`` from ``x_init`` at ``grid[0]`` down the ``grid``; the final states ``(n, d)``.

    Parameters
    ----------
    sampler : str
        A key of :data:`SAMPLERS`: ``"euler"``, ``"heun"`` or ``"ddim"``.
    x0_fn : callable
        ``x0_fn(x (n, d), t float) -> (n, d)``, the denoiser.
    schedule : refscore.diffusion.schedules.Schedule
    x_init : array_like, shape (n, d)
    grid : array_like
        Strictly decreasing times, ``grid[0]`` the start.
    eta : float
        DDIM's noise parameter (0 for the deterministic samplers).
    seed, chain0 : int
        The noise's key and first chain (:class:`refscore.noise.NoiseOrigin`).
    record : bool
        Also return every state, ``(len(grid), n, d)``.
    """
    check_choice("sampler", sampler, SAMPLERS)
    g = _check_grid(schedule, grid)
    eta = _check_eta(sampler, eta)
    x = as_float_array(x_init, "x_init")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x_init must have shape (n, d) with n, d >= 1, got shape {x.shape}")
    check_finite("x_init", x)
    origin = NoiseOrigin(seed, chain0)
    step = SAMPLERS[sampler].step
    path = [x] if record else None
    for i in range(g.shape[0] - 1):
        t, tn = float(g[i]), float(g[i + 1])
        if sampler == "ddim":
            z = origin.normal(x.shape[0], i, x.shape[1]) if eta > 0 else None
            x = step(x0_fn, schedule, x, t, tn, eta, z)
        else:
            x = step(x0_fn, schedule, x, t, tn)
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"the {sampler} step {i} (t = {t!r} -> {tn!r}) produced non-finite states")
        if record:
            path.append(x)
    return (x, np.stack(path)) if record else x


def output_map(sampler, data, schedule, grid, eta=0.0):
    r"""The exact affine map of a whole run on Gaussian data: ``(A (d, d), b (d,), Q (d, d))``.

    :math:`x_N = A x_0 + b + \zeta`, :math:`\zeta \sim N(0, Q)` independent of :math:`x_0`
    (docs/diffusion.md §6; :mod:`refscore.diffusion.laws`).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if not isinstance(data, Gaussian):
        raise TypeError(f"data must be a refscore Gaussian (the output law is Gaussian only for Gaussian data), got "
                        f"{type(data).__name__}")
    g = _check_grid(schedule, grid)
    eta = _check_eta(sampler, eta)
    lam, V = np.linalg.eigh(data.cov)
    mu = V.T @ data.mean
    M, K, Q = np.ones_like(lam), np.zeros_like(lam), np.zeros_like(lam)
    affine = SAMPLERS[sampler].affine
    for i in range(g.shape[0] - 1):
        m, k, l = affine(lam, mu, schedule, float(g[i]), float(g[i + 1]), eta)
        M, K, Q = m * M, m * K + k, m * m * Q + l * l
    return (V * M) @ V.T, V @ K, (V * Q) @ V.T


def output_law(sampler, data, schedule, grid, eta=0.0, init="marginal"):
    r"""The exact law ``(mean (d,), cov (d, d))`` of a run's output on Gaussian ``data``.

    ``init`` is the law at ``grid[0]``: ``"marginal"`` (the exact :math:`N(\alpha\mu, \alpha^2\Sigma + \sigma^2 I)`,
    so a refining grid converges to the data law), ``"prior"`` (:math:`N(0, \sigma^2 I)`, what samplers draw
    in practice), or a pair ``(mean, cov)``.
    """
    A, b, Q = output_map(sampler, data, schedule, grid, eta)
    t0 = float(as_float_array(grid, "grid")[0])
    a, s = schedule.alpha(t0), schedule.sigma(t0)
    d = data.dim
    if isinstance(init, str):
        check_choice("init", init, ("marginal", "prior"))
        if init == "marginal":
            m0, c0 = a * data.mean, a * a * data.cov + s * s * np.eye(d)
        else:
            m0, c0 = np.zeros(d), s * s * np.eye(d)
    else:
        try:
            m0, c0 = init
        except (TypeError, ValueError) as exc:
            raise TypeError("init must be 'marginal', 'prior' or a pair (mean, cov)") from exc
        start = Gaussian(m0, c0)  # validates the pair: shapes, symmetry, positive definiteness
        m0, c0 = start.mean, start.cov
        if m0.shape != (d,):
            raise ValueError(f"init's mean must have shape ({d},), got {m0.shape}")
    cov = A @ c0 @ A.T + Q
    return A @ m0 + b, 0.5 * (cov + cov.T)
