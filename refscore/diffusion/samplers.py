r"""Diffusion samplers on NumPy with counter-based noise, and their exact output laws on Gaussian data.

Derivation: docs/diffusion.md §6 (the steps, their affine maps on Gaussian data, the exact laws and limits).

A sampler runs down a grid :math:`t_0 > t_1 > \dots > t_N` of a schedule (:mod:`refscore.diffusion.schedules`)
with a denoiser ``x0_fn(x, t) -> x0`` (a :class:`refscore.diffusion.denoiser.Denoiser`, or any callable, e.g.
a network's ``x0`` prediction).  From it, :math:`\hat\varepsilon = (x - \alpha\hat x_0)/\sigma`, the score
:math:`(\alpha\hat x_0 - x)/\sigma^2` and the probability-flow velocity
:math:`\hat u = \alpha'\hat x_0 + \sigma'\hat\varepsilon` (:mod:`refscore.diffusion.parametrisations`).
:math:`\bar x = x/\alpha` and :math:`\bar\sigma = \sigma/\alpha` are EDM's variables (docs/diffusion.md §1.3).
One step from :math:`t` to :math:`t_n`, :math:`h = t_n - t < 0`:

=================== ==========================================================================================
``euler``           :math:`x_n = \hat x + (t_n - \hat t)\,\hat u(\hat x, \hat t)` after EDM's churn
                    :math:`(\hat x, \hat t)` (:func:`churn_step`; none by default)
``heun``            Euler's :math:`\tilde x`, then :math:`\hat x + \tfrac{t_n - \hat t}2(\hat u(\hat x, \hat t) + \hat u(\tilde x, t_n))`
                    unless :math:`\sigma_n = 0` (Karras et al. 2022, Algorithm 2)
``ddim``            :math:`\alpha_n\hat x_0 + \sqrt{\sigma_n^2 - s_n^2}\,\hat\varepsilon + s_n\xi`, :math:`s_n = \eta\sigma_n\sqrt{1 - e^{\lambda_t - \lambda_n}}`
``ddpm``            :math:`c_x x + c_0\hat x_0 + \mathrm{std}\,\xi`, the posterior :math:`q(x_n \mid x_t, \hat x_0)` (Ho et al. 2020)
``euler_ancestral`` :math:`\bar x_n = \bar x + (\sigma_{\rm down} - \bar\sigma)\frac{\bar x - \hat x_0}{\bar\sigma} + \sigma_{\rm up}\xi` (k-diffusion)
``dpmpp_2m``        :math:`x_n = \frac{\sigma_n}{\sigma}x - \alpha_n(e^{-h_\ell} - 1)D_d`, :math:`D_d` a two-step extrapolation in :math:`\ell = \lambda/2`
``pc``              Langevin corrector :math:`x + \epsilon s + \sqrt{2\epsilon}\,\xi` and a reverse-diffusion or
                    Euler–Maruyama predictor (score_sde)
``pf_ode``          the probability-flow ODE by an adaptive Runge–Kutta method (``scipy.integrate.solve_ivp``)
=================== ==========================================================================================

Each is a public pure step function below (its docstring quotes the released code it follows); the registry
:data:`SAMPLERS` maps a name to its run adapter, its exact law (:mod:`refscore.diffusion.laws`), its options with
their defaults, how many noise vectors a step draws, and its order.  :func:`sample`, :func:`output_map`,
:func:`output_law`, :func:`output_distances`, the tests and the validation experiment all read it.

Noise: step ``i`` of chain ``c`` draws ``refscore.noise.normal(seed, chain0 + c, i, k * d)``, split into the
``k`` blocks of ``d`` the step uses in order (``k`` = the sampler's ``noise_blocks``), so a run does not depend
on how its chains are batched (except ``pc`` with the ``snr`` rule, whose step size averages over the batch,
as score_sde's does).

References
----------
T. Karras, M. Aittala, T. Aila, S. Laine, NeurIPS 2022, Algorithms 1–2 (NVlabs/edm ``generate.py``,
``edm_sampler`` and ``ablation_sampler``); J. Song, C. Meng, S. Ermon, ICLR 2021 (DDIM; huggingface/diffusers
``scheduling_ddim.py``, ``DDIMScheduler.step``); J. Ho, A. Jain, P. Abbeel, NeurIPS 2020, eq. (6)–(7) (diffusers
``scheduling_ddpm.py``, ``DDPMScheduler.step``); crowsonkb/k-diffusion ``k_diffusion/sampling.py``
(``sample_euler_ancestral``, ``get_ancestral_step``, ``sample_dpmpp_2m``); C. Lu, Y. Zhou, F. Bao, J. Chen,
C. Li, J. Zhu, "DPM-Solver++", arXiv 2211.01095, Algorithm 2 (diffusers ``scheduling_dpmsolver_multistep.py``,
``multistep_dpm_solver_second_order_update``, ``solver_type="midpoint"``); Y. Song et al., ICLR 2021,
Algorithms 1 and Appendix G (yang-song/score_sde ``sampling.py``: ``ReverseDiffusionPredictor``,
``EulerMaruyamaPredictor``, ``LangevinCorrector``, ``get_pc_sampler``; ``sde_lib.py``: ``discretize``).

Examples
--------
>>> from refscore.distributions import Gaussian
>>> from refscore.diffusion import EDM
>>> from refscore.diffusion.samplers import output_law
>>> edm = EDM()
>>> data = Gaussian([1.0], [[0.25]])
>>> mean, cov = output_law("heun", edm, edm.grid(64), data)   # from the exact marginal at sigma = 80
>>> round(float(mean[0]), 9), round(float(cov[0, 0]) - 0.25, 5)   # 64 Heun steps: variance 0.7 % too large
(1.0, 0.00183)
>>> round(float(output_law("heun", edm, edm.grid(128), data)[1][0, 0]) - 0.25, 5)   # second order: / 4
0.00044
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
from scipy.integrate import solve_ivp

from .._validation import as_float_array, as_start_points, check_choice, check_finite, check_int
from ..distributions import Gaussian
from ..noise import NoiseOrigin
from . import backends
from . import coefficients as co
from . import laws
from .denoiser import Denoiser
from .models import ModelDenoiser
from .schedules import Schedule

__all__ = ["SAMPLERS", "Sampler", "Run", "Distances", "euler_step", "heun_step", "churn_step", "ddim_step",
           "ddpm_step", "euler_ancestral_step", "dpmpp_2m_step", "reverse_diffusion_predictor",
           "euler_maruyama_predictor", "langevin_corrector", "snr_step_size", "pf_ode_step", "sample",
           "output_map", "output_law", "output_distances"]


# ------------------------------------------------------------------ predictions from the denoiser
def _x0(x0_fn, x, t):
    out = as_float_array(x0_fn(x, t), "the x0 prediction")
    if out.shape != x.shape:
        raise ValueError(f"x0_fn must return an array shaped like x {x.shape}, got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"x0_fn returned non-finite values at t = {t!r}")
    return out


def _score(x0_fn, schedule, x, t):
    r""":math:`\nabla\log p_t \approx (\alpha\hat x_0 - x)/\sigma^2` (Tweedie)."""
    s = co.noise_level(schedule, t, "the score")
    return (schedule.alpha(t) * _x0(x0_fn, x, t) - x) / (s * s)


def _velocity(x0_fn, schedule, x, t):
    a, s = schedule.alpha(t), co.noise_level(schedule, t, "the probability-flow velocity")
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    if not np.isfinite(ds):
        raise ValueError(f"t = {t!r} has d_sigma = {ds!r}: the probability-flow velocity is not defined there")
    x0 = _x0(x0_fn, x, t)
    return da * x0 + ds * (x - a * x0) / s


# ------------------------------------------------------------------ the steps
def euler_step(x0_fn, schedule, x, t, t_next):
    r"""One Euler step of the probability-flow ODE: :math:`x + (t_n - t)\,\hat u(x, t)`.

    On :class:`~refscore.diffusion.schedules.EDM`, Karras et al.'s :math:`x + (t_n - t)(x - D(x; t))/t`
    (NVlabs/edm ``generate.py``, ``edm_sampler``'s Euler step; on any schedule, ``ablation_sampler``'s
    ``d_cur`` with ``s(t) = alpha``).
    """
    return x + (t_next - t) * _velocity(x0_fn, schedule, x, t)


def heun_step(x0_fn, schedule, x, t, t_next):
    r"""One Heun step (Karras et al. 2022, Algorithm 1 lines 5–8); Euler when :math:`\sigma(t_n) = 0`.

    :math:`\tilde x = x + h\hat u(x, t)`, :math:`x_n = x + \tfrac h2(\hat u(x, t) + \hat u(\tilde x, t_n))`
    (NVlabs/edm ``edm_sampler``'s "2nd order correction", skipped on the last step, whose :math:`t_n = 0`).
    """
    h = t_next - t
    d = _velocity(x0_fn, schedule, x, t)
    xe = x + h * d
    if schedule.sigma(t_next) == 0.0:
        return xe
    return x + h * (0.5 * d + 0.5 * _velocity(x0_fn, schedule, xe, t_next))


def churn_step(schedule, x, t, gamma, noise, S_noise=1.0):
    r"""EDM's churn (Karras et al. 2022, Algorithm 2 lines 4–6): ``(x_hat, t_hat)``.

    .. math::

        \hat{\bar\sigma} = (1 + \gamma)\bar\sigma(t), \quad \hat t = t(\hat\lambda), \quad
        \hat x = \frac{\hat\alpha}{\alpha}x + \hat\alpha\sqrt{\hat{\bar\sigma}^2 - \bar\sigma^2}\,S_{\rm noise}\,\xi

    (NVlabs/edm ``ablation_sampler``: ``t_hat``, ``x_hat`` with ``s(t) = alpha``; on EDM, ``edm_sampler``'s
    :math:`x + \sqrt{\hat t^2 - t^2}\,S_{\rm noise}\xi`).  ``gamma = 0`` returns ``(x, t)`` unchanged.
    """
    if gamma == 0.0:
        return x, t
    t_hat, a_hat, scale = co.churn_time(schedule, t, gamma)
    return (a_hat / schedule.alpha(t)) * x + (scale * S_noise) * noise, t_hat


def ddim_step(x0_fn, schedule, x, t, t_next, eta=0.0, noise=None):
    r"""One DDIM step: :math:`\alpha_n\hat x_0 + \sqrt{\sigma_n^2 - s_n^2}\,\hat\varepsilon + s_n\xi` (``noise`` is ξ).

    Song et al. 2021, eq. (12) with (16), on any schedule (diffusers ``DDIMScheduler.step``: ``std_dev_t``,
    ``pred_sample_direction``, ``prev_sample``); :func:`refscore.diffusion.coefficients.ddim_noise_scales`.
    """
    a, s = schedule.alpha(t), co.noise_level(schedule, t, "DDIM's eps")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    with np.errstate(divide="ignore"):
        lt, ln = schedule.log_snr(t), schedule.log_snr(t_next)
    cn, sd = co.ddim_noise_scales(a, s, an, sn, lt, ln, eta)
    x0 = _x0(x0_fn, x, t)
    out = an * x0 + cn * ((x - a * x0) / s)
    if sd > 0.0:
        if noise is None:
            raise ValueError(f"noise is needed for eta = {eta!r} > 0 (the step adds s_n xi with s_n = {sd!r})")
        out = out + sd * noise
    return out


def ddpm_step(x0_fn, schedule, x, t, t_next, variance="small", noise=None):
    r"""One DDPM ancestral step: :math:`c_x x + c_0\hat x_0 + \mathrm{std}\,\xi` (Ho et al. 2020, eq. (6)–(7)).

    The mean of the forward process's posterior :math:`q(x_n \mid x_t, x_0)` at :math:`x_0 = \hat x_0`, and
    noise of its variance (``"small"``, :math:`\tilde\beta`) or of the forward step's (``"large"``, :math:`\beta`);
    none when :math:`\sigma_n = 0` (huggingface/diffusers ``scheduling_ddpm.py``, ``DDPMScheduler.step``:
    ``pred_original_sample_coeff``, ``current_sample_coeff``, ``_get_variance``'s ``fixed_small`` and
    ``fixed_large``; :func:`refscore.diffusion.coefficients.ddpm_coefficients`).  With ``"small"`` it is DDIM
    with :math:`\eta = 1` (docs/diffusion.md §6.5).
    """
    co.noise_level(schedule, t, "DDPM's posterior")
    c_x, c_0, std = co.ddpm_coefficients(schedule, t, t_next, variance)
    out = c_x * x + c_0 * _x0(x0_fn, x, t)
    if std > 0.0:
        if noise is None:
            raise ValueError(f"noise is needed for DDPM's step (std {std!r})")
        out = out + std * noise
    return out


def euler_ancestral_step(x0_fn, schedule, x, t, t_next, eta=1.0, s_noise=1.0, noise=None):
    r"""One Euler ancestral step in EDM's variables (crowsonkb/k-diffusion ``sampling.py``, ``sample_euler_ancestral``).

    .. math::

        \bar x = x/\alpha, \quad d = \frac{\bar x - \hat x_0}{\bar\sigma}, \quad
        \bar x_n = \bar x + (\sigma_{\rm down} - \bar\sigma)\,d + S\,\sigma_{\rm up}\,\xi\ \ (\text{noise only if } \bar\sigma_n > 0),
        \quad x_n = \alpha_n\bar x_n,

    with :math:`(\sigma_{\rm down}, \sigma_{\rm up})` = :func:`refscore.diffusion.coefficients.ancestral_step`.
    It equals DDIM with the same :math:`\eta \le 1` (docs/diffusion.md §6.5).
    """
    a = co.positive_alpha(schedule, t, "euler_ancestral")
    s = co.noise_level(schedule, t, "the ancestral step")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    sbar, sbar_n = s / a, sn / an
    down, up = co.ancestral_step(sbar, sbar_n, eta)
    xbar = x / a
    d = (xbar - _x0(x0_fn, x, t)) / sbar
    xbar = xbar + (down - sbar) * d
    if sbar_n > 0.0 and up > 0.0:
        if noise is None:
            raise ValueError(f"noise is needed for eta = {eta!r} > 0")
        xbar = xbar + noise * s_noise * up
    return an * xbar


def dpmpp_2m_step(x0_fn, schedule, x, t, t_next, previous=None):
    r"""One DPM-Solver++(2M) step: ``(x_next, (x0, ell_t))`` to pass as ``previous`` to the next step.

    In half log-SNR :math:`\ell = \lambda/2 = -\log\bar\sigma` (k-diffusion's ``t_fn``), :math:`h = \ell_n - \ell_t`:

    .. math::

        x_n = \frac{\sigma_n}{\sigma_t}\,x - \alpha_n\,(e^{-h} - 1)\,D_d, \qquad
        D_d = \Bigl(1 + \frac1{2r}\Bigr)\hat x_0(t) - \frac1{2r}\hat x_0(t_{i-1}), \quad r = \frac{\ell_t - \ell_{i-1}}{h},

    and :math:`D_d = \hat x_0(t)` (first order, DDIM) at the first step (``previous=None``) and when
    :math:`\sigma_n = 0`, where :math:`x_n = \alpha_n\hat x_0`.  crowsonkb/k-diffusion ``sampling.py``,
    ``sample_dpmpp_2m`` (in :math:`\bar x`; times :math:`\alpha_n` it is this), the same as diffusers
    ``DPMSolverMultistepScheduler.multistep_dpm_solver_second_order_update`` with ``dpmsolver++`` and
    ``solver_type="midpoint"`` (:math:`D_0 + \tfrac12 D_1`, :math:`D_1 = (m_0 - m_1)/r_0`).  Lu et al. 2022,
    Algorithm 2.
    """
    s = co.noise_level(schedule, t, "DPM-Solver++'s step")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    with np.errstate(divide="ignore"):
        lt, ln = 0.5 * schedule.log_snr(t), 0.5 * schedule.log_snr(t_next)
    x0 = _x0(x0_fn, x, t)
    if sn == 0.0:
        return an * x0, (x0, lt)
    h = ln - lt
    dd = x0
    if previous is not None and np.isfinite(previous[1]) and np.isfinite(lt):
        r = (lt - previous[1]) / h
        dd = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * previous[0]
    return (sn / s) * x - an * math.expm1(-h) * dd, (x0, lt)


def reverse_diffusion_predictor(score, schedule, x, t, t_next, noise=None):
    r"""score_sde's reverse-diffusion predictor: :math:`x - (a - 1)x + G^2 s + G\xi` (``noise`` is ξ; None: the mean).

    :math:`(a, G^2)` is the forward transition from :math:`t_n` to :math:`t`
    (:func:`refscore.diffusion.coefficients.forward_transition`): yang-song/score_sde ``sampling.py``,
    ``ReverseDiffusionPredictor.update_fn`` with ``sde_lib.py``'s ``reverse().discretize``
    (``rev_f = f - G^2 score``) and ``VPSDE.discretize`` (:math:`f = (\sqrt{1 - \beta_i} - 1)x`,
    :math:`G = \sqrt{\beta_i}`) or ``VESDE.discretize`` (:math:`f = 0`, :math:`G^2 = \sigma_i^2 - \sigma_{i-1}^2`).
    ``score`` is the score at :math:`(x, t)`.
    """
    a, G2 = co.forward_transition(schedule, t, t_next)
    out = x - (a - 1.0) * x + G2 * score
    return out if noise is None else out + math.sqrt(G2) * noise


def euler_maruyama_predictor(score, schedule, x, t, t_next, noise=None):
    r"""Euler–Maruyama on the reverse SDE: :math:`x + (f x - g^2 s)h + g\sqrt{-h}\,\xi`, :math:`h = t_n - t`.

    yang-song/score_sde ``sampling.py``, ``EulerMaruyamaPredictor.update_fn`` (``rsde.sde``: drift
    :math:`f x - g^2 s`), with the grid's own :math:`h` where score_sde uses :math:`-1/N` on its grid
    ``linspace(T, eps, N)`` (a spacing of :math:`(T - \epsilon)/(N - 1)`).
    """
    h = t_next - t
    f, g2 = schedule.f(t), schedule.g2(t)
    out = x + (f * x - g2 * score) * h
    return out if noise is None else out + math.sqrt(-h * g2) * noise


def langevin_corrector(score, x, step_size, noise=None):
    r"""One Langevin corrector step :math:`x + \epsilon s + \sqrt{2\epsilon}\,\xi` (score_sde ``LangevinCorrector``)."""
    out = x + step_size * score
    return out if noise is None else out + math.sqrt(2.0 * step_size) * noise


def snr_step_size(score, noise, snr, alpha=1.0):
    r"""score_sde's corrector step size :math:`\epsilon = 2\alpha_i(r\,\overline{\lVert z\rVert}/\overline{\lVert g\rVert})^2`.

    :math:`\overline{\lVert\cdot\rVert}` is the mean over the batch of the per-chain Euclidean norms
    (yang-song/score_sde ``sampling.py``, ``LangevinCorrector.update_fn``: ``grad_norm``, ``noise_norm``,
    ``step_size``), so the step size depends on the whole batch.  ``FloatingPointError`` when every score is 0.
    """
    g = float(np.mean(np.linalg.norm(score, axis=-1)))
    z = float(np.mean(np.linalg.norm(noise, axis=-1)))
    if not g > 0.0:
        raise FloatingPointError("the snr rule divides by the mean score norm, which is 0 here")
    return 2.0 * alpha * (snr * z / g) ** 2


#: the integrators pf_ode accepts (explicit Runge–Kutta pairs of scipy.integrate.solve_ivp)
PF_ODE_METHODS = ("RK45", "DOP853")


def pf_ode_step(x0_fn, schedule, x, t, t_next, method="DOP853", rtol=1e-10, atol=1e-10, sigma_tail=1e-6):
    r"""The probability-flow ODE from ``t`` to ``t_next`` by ``scipy.integrate.solve_ivp``: ``(x_next, nfev)``.

    In :math:`\tau = \log\bar\sigma = -\lambda/2` and :math:`\bar x = x/\alpha` the ODE is
    :math:`d\bar x/d\tau = \bar x - \hat x_0(\alpha\bar x, t(\tau))` (Karras et al. 2022, eq. (4) with
    :math:`\sigma = e^\tau`; smooth and of unit scale in :math:`\tau`, which runs over a bounded interval).  It is
    integrated from :math:`\tau(t)` to :math:`\tau(t_n)` by ``method`` (``"DOP853"``, order 8, or ``"RK45"``)
    with the stated ``rtol``/``atol`` on :math:`\bar x`; the states of all chains form one system, so the
    adaptive steps are shared by the batch.  When :math:`\sigma(t_n) = 0` (:math:`\tau = -\infty`) it stops at
    :math:`\bar\sigma =` ``sigma_tail`` and returns :math:`\alpha_n\hat x_0` there, which differs from the flow to
    :math:`\bar\sigma = 0` by :math:`O(\bar\sigma_{\rm tail}^2)` for a smooth data density (for data
    :math:`N(\mu, \Sigma)` by at most :math:`\bar\sigma_{\rm tail}^2/(2\ell_{\min})` relative to
    :math:`x - \mu`; docs/diffusion.md §6.4).
    """
    a = co.positive_alpha(schedule, t, "pf_ode")
    co.noise_level(schedule, t, "the probability-flow velocity")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    tau0 = -0.5 * schedule.log_snr(t)
    tail = sn == 0.0
    tau1 = math.log(sigma_tail) if tail else -0.5 * schedule.log_snr(t_next)
    if tail and not tau1 < tau0:
        raise ValueError(f"sigma_tail = {sigma_tail!r} must be below sigma/alpha = {math.exp(tau0)!r} at t = {t!r}")
    n, d = x.shape

    def time(tau):
        return float(schedule.t_of_log_snr(-2.0 * tau))

    def rhs(tau, y):
        tt = time(tau)
        xb = y.reshape(n, d)
        return (xb - _x0(x0_fn, schedule.alpha(tt) * xb, tt)).ravel()

    sol = solve_ivp(rhs, (tau0, tau1), (x / a).ravel(), method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise FloatingPointError(f"solve_ivp ({method}) failed from t = {t!r} to {t_next!r}: {sol.message}")
    xb = sol.y[:, -1].reshape(n, d)
    nfev = int(sol.nfev)
    if tail:
        tt = time(tau1)
        xb = _x0(x0_fn, schedule.alpha(tt) * xb, tt)
        nfev += 1
    return an * xb, nfev


# ------------------------------------------------------------------ run adapters (registry rows)
def _churn(schedule, x, t, noise, ctx, S_churn, S_tmin, S_tmax, S_noise):
    a = schedule.alpha(t)
    gamma = co.churn_gamma(schedule.sigma(t) / a if a > 0 else math.inf, ctx.n_steps, S_churn, S_tmin, S_tmax)
    if gamma > 0.0:
        co.positive_alpha(schedule, t, "EDM's churn")
    x, t_hat = churn_step(schedule, x, t, gamma, noise[0] if noise else None, S_noise)
    if S_churn > 0.0:
        ctx.info.setdefault("t_hat", np.full(ctx.n_steps, np.nan))[ctx.i] = t_hat
    return x, t_hat


def _run_euler(x0_fn, schedule, x, t, t_next, noise, ctx, S_churn, S_tmin, S_tmax, S_noise):
    x, t = _churn(schedule, x, t, noise, ctx, S_churn, S_tmin, S_tmax, S_noise)
    return euler_step(x0_fn, schedule, x, t, t_next)


def _run_heun(x0_fn, schedule, x, t, t_next, noise, ctx, S_churn, S_tmin, S_tmax, S_noise):
    x, t = _churn(schedule, x, t, noise, ctx, S_churn, S_tmin, S_tmax, S_noise)
    return heun_step(x0_fn, schedule, x, t, t_next)


def _run_ddim(x0_fn, schedule, x, t, t_next, noise, ctx, eta):
    return ddim_step(x0_fn, schedule, x, t, t_next, eta, noise[0] if noise else None)


def _run_ddpm(x0_fn, schedule, x, t, t_next, noise, ctx, variance):
    return ddpm_step(x0_fn, schedule, x, t, t_next, variance, noise[0])


def _run_euler_ancestral(x0_fn, schedule, x, t, t_next, noise, ctx, eta, s_noise):
    return euler_ancestral_step(x0_fn, schedule, x, t, t_next, eta, s_noise, noise[0] if noise else None)


def _run_dpmpp_2m(x0_fn, schedule, x, t, t_next, noise, ctx):
    x, ctx.carry["previous"] = dpmpp_2m_step(x0_fn, schedule, x, t, t_next, ctx.carry.get("previous"))
    return x


#: the predictors of pc
PREDICTORS = {"reverse_diffusion": reverse_diffusion_predictor, "euler_maruyama": euler_maruyama_predictor}
#: the orders of pc's two updates within a step
PC_ORDERS = ("corrector_first", "predictor_first")


def _run_pc(x0_fn, schedule, x, t, t_next, noise, ctx, predictor, corrector_steps, snr, step_size,
            langevin_alpha, order, denoise):
    """score_sde's ``pc_sampler`` loop body (corrector, then predictor) or Algorithm 1's order; ``denoise``: the
    run's last update adds no noise (score_sde returns that update's ``x_mean``)."""
    blocks = iter(noise)
    final = ctx.last and denoise
    sizes = ctx.info.setdefault("step_size", np.zeros((ctx.n_steps, corrector_steps)))

    def correct(y, tc, drop_last):
        alpha_i = co.langevin_alpha(langevin_alpha, schedule, tc, t_next)
        for j in range(corrector_steps):
            z = next(blocks)
            g = _score(x0_fn, schedule, y, tc)
            eps = snr_step_size(g, z, snr, alpha_i) if step_size is None else float(step_size[ctx.i, j])
            sizes[ctx.i, j] = eps
            y = langevin_corrector(g, y, eps, None if (drop_last and j == corrector_steps - 1) else z)
        return y

    def predict(y, drop):
        z = next(blocks)
        return PREDICTORS[predictor](_score(x0_fn, schedule, y, t), schedule, y, t, t_next, None if drop else z)

    if order == "corrector_first":
        return predict(correct(x, t, False), final)
    return correct(predict(x, final and corrector_steps == 0), t_next, final)


def _run_pf_ode(x0_fn, schedule, x, t, t_next, noise, ctx, method, rtol, atol, sigma_tail):
    x, nfev = pf_ode_step(x0_fn, schedule, x, t, t_next, method, rtol, atol, sigma_tail)
    ctx.info.setdefault("nfev", np.zeros(ctx.n_steps, dtype=np.int64))[ctx.i] = nfev
    return x


# ------------------------------------------------------------------ options
def _real(name, value, *, minimum=0.0, strict=False, allow_inf=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf) or v < minimum or (strict and v == minimum)
    if bad:
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be {'' if allow_inf else 'finite and '}{rel} {minimum}, got {value!r}")
    return v


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_churn(o, n_steps):
    o["S_churn"] = _real("S_churn", o["S_churn"])
    o["S_tmin"] = _real("S_tmin", o["S_tmin"])
    o["S_tmax"] = _real("S_tmax", o["S_tmax"], allow_inf=True)
    if o["S_tmax"] < o["S_tmin"]:
        raise ValueError(f"S_tmax must be >= S_tmin = {o['S_tmin']!r}, got {o['S_tmax']!r}")
    o["S_noise"] = _real("S_noise", o["S_noise"])
    return o


def _check_eta(o, n_steps):
    o["eta"] = _real("eta", o["eta"])
    if "s_noise" in o:
        o["s_noise"] = _real("s_noise", o["s_noise"])
    return o


def _check_ddpm(o, n_steps):
    check_choice("variance", o["variance"], ("small", "large"))
    return o


def _check_none(o, n_steps):
    return o


def _check_pc(o, n_steps):
    check_choice("predictor", o["predictor"], PREDICTORS)
    m = o["corrector_steps"] = check_int("corrector_steps", o["corrector_steps"], 0)
    o["snr"] = _real("snr", o["snr"], strict=True)
    check_choice("langevin_alpha", o["langevin_alpha"], co.LANGEVIN_ALPHAS)
    check_choice("order", o["order"], PC_ORDERS)
    if o["langevin_alpha"] == "step" and o["order"] != "corrector_first":
        raise ValueError("langevin_alpha='step' (1 - beta of the step into the corrector's time) needs "
                         "order='corrector_first', where the corrector's time has a next grid time")
    o["denoise"] = _bool("denoise", o["denoise"])
    if o["step_size"] is not None:
        eps = as_float_array(o["step_size"], "step_size")
        try:
            eps = np.broadcast_to(eps, (n_steps, m)).copy()
        except ValueError:
            raise ValueError(f"step_size must be a scalar, shape ({m},) or ({n_steps}, {m}) (steps x corrector "
                             f"steps), got shape {eps.shape}") from None
        if not np.all(np.isfinite(eps)) or np.any(eps <= 0):
            raise ValueError("step_size must be finite and > 0")
        o["step_size"] = eps
    return o


def _check_pf_ode(o, n_steps):
    check_choice("method", o["method"], PF_ODE_METHODS)
    for k in ("rtol", "atol", "sigma_tail"):
        o[k] = _real(k, o[k], strict=True)
    return o


class Sampler(NamedTuple):
    """A registry row.

    ``run(x0_fn, schedule, x, t, t_next, noise, ctx, **options) -> x_next`` applies the step functions;
    ``law(lam, mu, schedule, t, t_next, rep, ctx, **options) -> rep`` is its exact affine law
    (:mod:`refscore.diffusion.laws`); ``options`` the option names with their defaults; ``check(options,
    n_steps)`` validates them; ``noise_blocks(options)`` is the number of ``(n, d)`` normal vectors a step draws;
    ``order`` the order at which the output law converges to the data law with the default options (tested),
    ``None`` for the adaptive ``pf_ode`` (exact to its tolerance); ``reference`` the released code followed.
    """

    run: object
    law: object
    options: dict
    check: object
    noise_blocks: object
    order: int | None
    reference: str


_CHURN = {"S_churn": 0.0, "S_tmin": 0.0, "S_tmax": math.inf, "S_noise": 1.0}

#: the samplers (the registry sample, output_map, output_law, the tests and the validation read)
SAMPLERS = {
    "euler": Sampler(_run_euler, laws.euler_law, dict(_CHURN), _check_churn,
                     lambda o: 1 if o["S_churn"] > 0 else 0, 1,
                     "NVlabs/edm generate.py ablation_sampler (solver='euler'); k-diffusion sample_euler"),
    "heun": Sampler(_run_heun, laws.heun_law, dict(_CHURN), _check_churn,
                    lambda o: 1 if o["S_churn"] > 0 else 0, 2,
                    "NVlabs/edm generate.py edm_sampler, ablation_sampler; k-diffusion sample_heun"),
    "ddim": Sampler(_run_ddim, laws.ddim_law, {"eta": 0.0}, _check_eta,
                    lambda o: 1 if o["eta"] > 0 else 0, 1, "diffusers scheduling_ddim.py DDIMScheduler.step"),
    "ddpm": Sampler(_run_ddpm, laws.ddpm_law, {"variance": "small"}, _check_ddpm, lambda o: 1, 1,
                    "diffusers scheduling_ddpm.py DDPMScheduler.step"),
    "euler_ancestral": Sampler(_run_euler_ancestral, laws.euler_ancestral_law, {"eta": 1.0, "s_noise": 1.0},
                               _check_eta, lambda o: 1 if o["eta"] > 0 and o["s_noise"] > 0 else 0, 1,
                               "k-diffusion sampling.py sample_euler_ancestral, get_ancestral_step"),
    "dpmpp_2m": Sampler(_run_dpmpp_2m, laws.dpmpp_2m_law, {}, _check_none, lambda o: 0, 2,
                        "k-diffusion sampling.py sample_dpmpp_2m; diffusers DPMSolverMultistepScheduler "
                        "(dpmsolver++, midpoint)"),
    "pc": Sampler(_run_pc, laws.pc_law,
                  {"predictor": "reverse_diffusion", "corrector_steps": 1, "snr": 0.16, "step_size": None,
                   "langevin_alpha": "one", "order": "corrector_first", "denoise": True},
                  _check_pc, lambda o: o["corrector_steps"] + 1, 1,
                  "score_sde sampling.py get_pc_sampler, ReverseDiffusionPredictor, EulerMaruyamaPredictor, "
                  "LangevinCorrector"),
    "pf_ode": Sampler(_run_pf_ode, laws.pf_ode_law,
                      {"method": "DOP853", "rtol": 1e-10, "atol": 1e-10, "sigma_tail": 1e-6},
                      _check_pf_ode, lambda o: 0, None, "scipy.integrate.solve_ivp on Karras et al. eq. (4)"),
}


def _options(sampler, options, n_steps):
    row = SAMPLERS[sampler]
    unknown = sorted(set(options) - set(row.options))
    if unknown:
        known = ", ".join(row.options) or "none"
        raise TypeError(f"sampler {sampler!r} has no option(s) {unknown}; its options are: {known}")
    return row.check({**row.options, **options}, n_steps)


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


def _denoiser(x0_fn, schedule):
    if isinstance(x0_fn, (Denoiser, ModelDenoiser)):  # both read x_t through their own schedule
        if x0_fn.schedule is not schedule:
            what = ("E[x0 | x_t] under its own schedule" if isinstance(x0_fn, Denoiser) else
                    "the model read at its own schedule's noise level sigma/alpha")
            raise ValueError(f"x0_fn is a {type(x0_fn).__name__} of {x0_fn.schedule!r}: pass that same schedule "
                             f"object (its x0 is {what}), got {schedule!r}")
        return x0_fn.x0
    if not callable(x0_fn):
        raise TypeError(f"x0_fn must be a Denoiser or a callable x0_fn(x, t), got {type(x0_fn).__name__}")
    return x0_fn


class Run(NamedTuple):
    """What :func:`sample` returns with ``record=True``: the final states, every state ``(len(grid), n, d)``, and
    the per-step values the sampler reports (``t_hat`` of the churn, ``step_size`` of pc's corrector, ``nfev`` of
    pf_ode)."""

    x: np.ndarray
    path: np.ndarray
    info: dict


def sample(sampler, x0_fn, schedule, x_init, grid, *, seed=0, chain0=0, record=False, backend="numpy", progress=None,
           **options):
    r"""Run ``sampler`` from ``x_init`` at ``grid[0]`` down the ``grid``; the final states ``(n, d)``.

    Parameters
    ----------
    sampler : str
        A key of :data:`SAMPLERS`.
    x0_fn : Denoiser or callable
        ``x0_fn(x (n, d), t float) -> (n, d)``, the denoiser; a :class:`~refscore.diffusion.denoiser.Denoiser`
        of the same ``schedule`` object is used through its ``x0``.
    schedule : refscore.diffusion.schedules.Schedule
    x_init : array_like, shape (n, d)
    grid : array_like
        Strictly decreasing times inside the schedule's domain, ``grid[0]`` the start.
    seed, chain0 : int
        The noise's key and first chain (:class:`refscore.noise.NoiseOrigin`).
    record : bool
        Return a :class:`~refscore.diffusion.samplers.Run` (final states, every state, the per-step values
        reported) instead.
    backend : {"numpy", "numba", "dask"} or refscore.sampling.DaskBackend
        ``"numpy"`` (the reference: the step functions above on the whole batch), or a compiled backend
        (:mod:`refscore.diffusion.backends`) for a :class:`~refscore.diffusion.denoiser.Denoiser` of Gaussian or
        Gaussian-mixture data: the same run to round-off, bitwise the same for any thread count, chunking of the
        steps and cut of the chains into runs from their ``chain0`` or Dask blocks; every sampler but ``pf_ode``
        and ``pc`` with the ``snr`` rule.
    progress : bool, optional
        The compiled backends' progress bar (default: on a terminal, for runs over 2 s).
    **options
        The sampler's options (``SAMPLERS[sampler].options`` lists them with their defaults): ``S_churn``,
        ``S_tmin``, ``S_tmax``, ``S_noise`` (euler, heun); ``eta`` (ddim, euler_ancestral; ``s_noise`` too);
        ``variance`` (ddpm); ``predictor``, ``corrector_steps``, ``snr``, ``step_size``, ``langevin_alpha``,
        ``order``, ``denoise`` (pc); ``method``, ``rtol``, ``atol``, ``sigma_tail`` (pf_ode).
    """
    check_choice("sampler", sampler, SAMPLERS)
    row = SAMPLERS[sampler]
    g = _check_grid(schedule, grid)
    n_steps = g.shape[0] - 1
    opts = _options(sampler, options, n_steps)
    fn = _denoiser(x0_fn, schedule)
    x = as_start_points(x_init, "x_init")
    n, d = x.shape
    origin = NoiseOrigin(seed, chain0)
    if not (isinstance(backend, str) and backend == "numpy"):
        xf, trace, info = backends.run(sampler, x0_fn, schedule, x, g, opts, row.noise_blocks(opts), seed=seed,
                                       chain0=chain0, record=record, backend=backend, progress=progress)
        return Run(xf, np.concatenate([x[None], trace]), info) if record else xf
    k = row.noise_blocks(opts)
    ctx = co.StepContext(0, n_steps)
    path = [x] if record else None
    for i in range(n_steps):
        ctx.i = i
        t, tn = float(g[i]), float(g[i + 1])
        z = origin.normal(n, i, k * d) if k else None
        x = row.run(fn, schedule, x, t, tn, [z[:, j * d:(j + 1) * d] for j in range(k)], ctx, **opts)
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"the {sampler} step {i} (t = {t!r} -> {tn!r}) produced non-finite states")
        if record:
            path.append(x)
    return Run(x, np.stack(path), ctx.info) if record else x


def _gaussian_data(data):
    if not isinstance(data, Gaussian):
        raise TypeError(f"data must be a refscore Gaussian (the output law is Gaussian only for Gaussian data), got "
                        f"{type(data).__name__}")
    return data


def output_map(sampler, schedule, grid, data, **options):
    r"""The exact affine map of a whole run on Gaussian data: ``(A (d, d), b (d,), Q (d, d))``.

    :math:`x_N = A x_0 + b + \zeta`, :math:`\zeta \sim N(0, Q)` independent of :math:`x_0`
    (docs/diffusion.md §6.3; :mod:`refscore.diffusion.laws`).  ``options`` as for :func:`sample`.
    """
    check_choice("sampler", sampler, SAMPLERS)
    row = SAMPLERS[sampler]
    data = _gaussian_data(data)
    g = _check_grid(schedule, grid)
    n_steps = g.shape[0] - 1
    opts = _options(sampler, options, n_steps)
    lam, V = np.linalg.eigh(data.cov)
    mu = V.T @ data.mean
    rep = laws.AffineLaw.identity(data.dim)
    ctx = co.StepContext(0, n_steps)
    for i in range(n_steps):
        ctx.i = i
        rep = row.law(lam, mu, schedule, float(g[i]), float(g[i + 1]), rep, ctx, **opts)
    return (V * rep.M) @ V.T, V @ rep.K, (V * rep.Q) @ V.T


def output_law(sampler, schedule, grid, data, init="marginal", **options):
    r"""The exact law ``(mean (d,), cov (d, d))`` of a run's output on Gaussian ``data``.

    ``init`` is the law at ``grid[0]``: ``"marginal"`` (the exact :math:`N(\alpha\mu, \alpha^2\Sigma + \sigma^2 I)`,
    so a refining grid converges to the data law), ``"prior"`` (:math:`N(0, \sigma^2 I)`, what samplers draw
    in practice), or a pair ``(mean, cov)``.  ``options`` as for :func:`sample`.
    """
    A, b, Q = output_map(sampler, schedule, grid, data, **options)
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


class Distances(NamedTuple):
    """:math:`\\mathrm{KL}(\\text{output} \\,\\|\\, \\text{data})` and :math:`W_2(\\text{output}, \\text{data})`."""

    kl: float
    w2: float


def output_distances(sampler, schedule, grid, data, init="marginal", **options) -> Distances:
    r"""The exact KL divergence and 2-Wasserstein distance from a run's output law to the data law.

    :func:`output_law` then :func:`refscore.diffusion.laws.gaussian_kl` (output :math:`\|` data) and
    :func:`refscore.diffusion.laws.gaussian_w2` (docs/diffusion.md §6.6).
    """
    m, C = output_law(sampler, schedule, grid, data, init, **options)
    return Distances(laws.gaussian_kl(m, C, data.mean, data.cov), laws.gaussian_w2(m, C, data.mean, data.cov))
