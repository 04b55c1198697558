r"""Discrete DDPM tables as diffusers defines them: beta schedules, zero terminal SNR, timestep spacing.

Derivation: docs/diffusion.md §2 (the discrete tables and their continuous extension).

A discrete variance-preserving chain has ``T`` training timesteps :math:`n = 0, \dots, T-1`,
per-step variances :math:`\beta_n \in (0, 1]` and cumulative products

.. math::

    \bar\alpha_n = \prod_{j=0}^{n} (1 - \beta_j), \qquad
    x_n = \sqrt{\bar\alpha_n}\, x_0 + \sqrt{1 - \bar\alpha_n}\, \varepsilon .

The formulas below were written from reading huggingface/diffusers (snapshot of 2026-08,
commit 58eb52c0), ``src/diffusers/schedulers/scheduling_ddpm.py``: ``DDPMScheduler.__init__`` (the beta
schedules), ``betas_for_alpha_bar`` (the cosine schedule), ``rescale_zero_terminal_snr`` and
``DDPMScheduler.set_timesteps`` (the spacings); ``scheduling_ddim.py``, ``DDIMScheduler.set_timesteps``
(the same three spacings); ``scheduling_euler_discrete.py``, ``EulerDiscreteScheduler.set_timesteps``
(unrounded ``linspace`` timesteps and linearly interpolated :math:`\sigma`).  No code was copied; every
table here is float64 (diffusers builds its betas in float32).

Two places where refscore computes the *intended* value and diffusers' floating-point evaluation can
differ (both are tested in ``tests/test_diffusion_schedules.py``):

* rounding: ``leading``, ``trailing`` and ``linspace`` round a rational number
  (:math:`iT/n`, :math:`i(T-1)/(n-1)`) to an integer, half to even.  refscore rounds the exact rational
  (integer arithmetic); diffusers rounds its float64 evaluation, which lands on the other side of a tie
  for some ``n`` (e.g. ``T = 1000``, ``n = 48``, trailing: the tie 937.5 is computed as 937.4999…);
* length: diffusers' ``trailing`` spacing is ``np.arange(T, 0, -T/n)``, whose length is
  ``ceil(T / (T/n))`` in floating point and is ``n + 1`` for some ``n`` (e.g. ``T = 1000``, ``n = 61``),
  which appends the timestep ``-1``.  refscore returns exactly ``n`` timesteps.

References
----------
J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020 (linear betas).
A. Nichol, P. Dhariwal, "Improved denoising diffusion probabilistic models", ICML 2021 (cosine schedule,
:math:`s = 0.008`, betas capped at 0.999).
S. Lin, B. Liu, J. Li, X. Yang, "Common diffusion noise schedules and sample steps are flawed",
WACV 2024 (arXiv 2305.08891), Algorithm 1 (zero terminal SNR) and Table 2 (the three spacings).
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import as_float_array, check_choice, check_finite, check_int

__all__ = ["BETA_SCHEDULES", "SPACINGS", "ddpm_betas", "rescale_betas_zero_snr", "alphas_cumprod",
           "inference_timesteps", "euler_timesteps"]

#: the beta schedules of ``ddpm_betas`` (diffusers' ``beta_schedule`` names)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

#: the timestep spacings of ``inference_timesteps`` (diffusers' ``timestep_spacing`` names)
SPACINGS = ("leading", "trailing", "linspace")

#: the cosine schedule's offset s and its cap on beta (Nichol & Dhariwal 2021, section 3.2)
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999


def _cosine_alpha_bar(u):
    r""":math:`\cos^2\bigl(\tfrac{u + s}{1 + s}\,\tfrac\pi2\bigr)`, :math:`u \in [0, 1]`."""
    return np.cos((u + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * (math.pi / 2.0)) ** 2


def ddpm_betas(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"):
    r"""The per-step variances :math:`\beta_n`, ``n = 0 .. T-1``, float64.

    .. math::

        \text{linear:}\quad \beta_n = \beta_{\rm start} + \tfrac{n}{T-1}(\beta_{\rm end} - \beta_{\rm start}),
        \qquad
        \text{scaled\_linear:}\quad \beta_n = \Bigl(\sqrt{\beta_{\rm start}}
            + \tfrac{n}{T-1}\bigl(\sqrt{\beta_{\rm end}} - \sqrt{\beta_{\rm start}}\bigr)\Bigr)^2,

        \text{squaredcos\_cap\_v2:}\quad \beta_n = \min\Bigl(1 - \frac{\bar a((n+1)/T)}{\bar a(n/T)},\ 0.999\Bigr),
        \qquad \bar a(u) = \cos^2\Bigl(\frac{u + 0.008}{1.008}\,\frac\pi2\Bigr)

    (diffusers ``DDPMScheduler.__init__`` and ``betas_for_alpha_bar``; the cosine schedule ignores
    ``beta_start`` and ``beta_end``).  With ``T = 1`` the linear schedules are ``[beta_start]``
    (``linspace`` of one point).

    Examples
    --------
    >>> from refscore.diffusion.tables import ddpm_betas
    >>> ddpm_betas(3, 0.1, 0.3)
    array([0.1, 0.2, 0.3])
    """
    T = check_int("num_train_timesteps", num_train_timesteps, 1)
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "squaredcos_cap_v2":
        u = np.arange(T + 1) / T
        a = _cosine_alpha_bar(u)
        return np.minimum(1.0 - a[1:] / a[:-1], COSINE_MAX_BETA)
    b0, b1 = (_check_beta("beta_start", beta_start), _check_beta("beta_end", beta_end))
    if beta_schedule == "linear":
        return np.linspace(b0, b1, T)
    return np.linspace(math.sqrt(b0), math.sqrt(b1), T) ** 2


def _check_beta(name, value):
    v = float(as_float_array(value, name))
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return v


def check_betas(betas, name="betas") -> np.ndarray:
    """``betas`` as a 1-D float64 array with every value in (0, 1] (so the SNR strictly decreases)."""
    b = as_float_array(betas, name)
    if b.ndim != 1 or b.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {b.shape}")
    check_finite(name, b)
    if np.any(b <= 0.0) or np.any(b > 1.0):
        raise ValueError(f"{name} must lie in (0, 1] (a strictly decreasing signal level), got values in "
                         f"[{float(b.min())!r}, {float(b.max())!r}]")
    return b


def alphas_cumprod(betas) -> np.ndarray:
    r""":math:`\bar\alpha_n = \prod_{j \le n}(1 - \beta_j)`, by a running product (diffusers' ``cumprod``)."""
    return np.cumprod(1.0 - check_betas(betas))


def rescale_betas_zero_snr(betas) -> np.ndarray:
    r"""Betas rescaled so the last timestep has zero SNR (Lin et al. 2024, Algorithm 1).

    With :math:`a_n = \sqrt{\bar\alpha_n}` the old signal levels, the new ones are the affine map that
    keeps :math:`a_0` and sends :math:`a_{T-1}` to 0,

    .. math::

        a'_n = (a_n - a_{T-1})\,\frac{a_0}{a_0 - a_{T-1}}, \qquad
        \bar\alpha'_n = a_n'^2, \qquad
        \beta'_0 = 1 - \bar\alpha'_0, \quad \beta'_n = 1 - \bar\alpha'_n / \bar\alpha'_{n-1},

    so :math:`\beta'_{T-1} = 1` and :math:`\bar\alpha'_{T-1} = 0` exactly (diffusers
    ``rescale_zero_terminal_snr``).  Needs ``T >= 2``.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.diffusion.tables import alphas_cumprod, ddpm_betas, rescale_betas_zero_snr
    >>> float(alphas_cumprod(rescale_betas_zero_snr(ddpm_betas(1000)))[-1])
    0.0
    """
    b = check_betas(betas)
    if b.shape[0] < 2:
        raise ValueError(f"betas must hold at least 2 timesteps to rescale to zero terminal SNR, got {b.shape[0]}")
    a = np.sqrt(np.cumprod(1.0 - b))
    a0, aT = a[0], a[-1]
    if not a0 > aT:
        raise ValueError("betas must give a strictly decreasing signal level to rescale to zero terminal SNR")
    a = (a - aT) * (a0 / (a0 - aT))
    ab = a * a
    out = np.empty_like(ab)
    out[0] = 1.0 - ab[0]
    out[1:] = 1.0 - ab[1:] / ab[:-1]
    return out


def _round_half_even(num, den):
    """round(num / den) half to even, for non-negative integer arrays, exactly (integer arithmetic)."""
    q, r = np.divmod(num, den)
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up


def inference_timesteps(num_inference_steps, num_train_timesteps=1000, spacing="leading", steps_offset=0):
    r"""The integer timesteps of an ``n``-step DDPM/DDIM run, largest first.

    With :math:`T` training timesteps and ``n`` steps (:math:`i = 0, \dots, n-1`; then reversed):

    .. math::

        \text{leading:}\ \ t_i = i\,\lfloor T/n \rfloor + \text{offset}, \qquad
        \text{trailing:}\ \ t_i = \operatorname{round}\bigl(T - iT/n\bigr) - 1, \qquad
        \text{linspace:}\ \ t_i = \operatorname{round}\bigl(i(T-1)/(n-1)\bigr)

    (``linspace`` with ``n = 1`` is ``[0]``), rounding half to even on the exact rational (see the module
    docstring for where diffusers' float evaluation differs).  Lin et al. 2024, Table 2; diffusers
    ``DDPMScheduler.set_timesteps`` and ``DDIMScheduler.set_timesteps``.

    Examples
    --------
    >>> from refscore.diffusion.tables import inference_timesteps
    >>> inference_timesteps(4, 1000, "leading", 1)
    array([751, 501, 251,   1])
    >>> inference_timesteps(4, 1000, "trailing")
    array([999, 749, 499, 249])
    """
    T = check_int("num_train_timesteps", num_train_timesteps, 1)
    n = check_int("num_inference_steps", num_inference_steps, 1)
    if n > T:
        raise ValueError(f"num_inference_steps must be <= num_train_timesteps = {T}, got {n}")
    check_choice("spacing", spacing, SPACINGS)
    off = check_int("steps_offset", steps_offset, 0)
    i = np.arange(n, dtype=np.int64)
    if spacing == "leading":
        t = i * (T // n) + off
        if t[-1] > T - 1:
            raise ValueError(f"steps_offset = {off} puts the largest timestep at {int(t[-1])}, beyond T - 1 = {T - 1}")
        return t[::-1].copy()
    if spacing == "trailing":
        return _round_half_even(T * (n - i), n) - 1
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    return _round_half_even(i * (T - 1), n - 1)[::-1].copy()


def euler_timesteps(num_inference_steps, num_train_timesteps=1000, spacing="linspace", steps_offset=0):
    r"""The float timesteps of diffusers' ``EulerDiscreteScheduler``, largest first.

    As :func:`inference_timesteps` except ``linspace``, which is not rounded:
    :math:`t_i = i(T-1)/(n-1)` (diffusers then interpolates :math:`\sigma` linearly between the integer
    timesteps, which is :class:`refscore.diffusion.schedules.VPDiscrete`'s continuous extension).

    Examples
    --------
    >>> from refscore.diffusion.tables import euler_timesteps
    >>> euler_timesteps(3, 10)
    array([9. , 4.5, 0. ])
    """
    if spacing != "linspace":
        return inference_timesteps(num_inference_steps, num_train_timesteps, spacing, steps_offset).astype(float)
    T = check_int("num_train_timesteps", num_train_timesteps, 1)
    n = check_int("num_inference_steps", num_inference_steps, 1)
    if n > T:
        raise ValueError(f"num_inference_steps must be <= num_train_timesteps = {T}, got {n}")
    if n == 1:
        return np.zeros(1)
    return (np.arange(n) * (T - 1) / (n - 1))[::-1].copy()
