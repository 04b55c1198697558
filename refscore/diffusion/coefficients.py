r"""The scalar coefficients of the diffusion samplers' steps, shared by the steps and their exact laws.

Derivation: docs/diffusion.md §6.1 (each sampler's step) and §6.5 (the stochastic samplers).

A step of a sampler from :math:`t` to :math:`t_n` (``t_next``) of a schedule needs a few numbers that depend
only on the schedule and the two times (not on the state): DDIM's and DDPM's noise scales, EDM's churn
:math:`\gamma` and the raised time :math:`\hat t`, k-diffusion's ancestral split
:math:`(\sigma_{\rm down}, \sigma_{\rm up})`, the exact forward transition of the reverse-diffusion
predictor, the Langevin corrector's :math:`\alpha_i`.  They are computed here once, so that
:mod:`refscore.diffusion.samplers` (which applies them to states) and :mod:`refscore.diffusion.laws`
(which composes their affine maps on Gaussian data) use the same numbers; the tests check the steps
against transcriptions of the released code, which checks these too.

Notation: :math:`\bar\sigma = \sigma/\alpha = e^{-\lambda/2}` is EDM's noise level of the rescaled
variable :math:`\bar x = x/\alpha` (docs/diffusion.md §1.3), and the *gap*
:math:`1 - e^{\lambda_t - \lambda_n} = \sigma_{t|n}^2/\sigma_t^2` is the fraction of :math:`x_t`'s noise
added by the forward transition from :math:`t_n` to :math:`t`, computed with ``expm1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["noise_level", "positive_alpha", "StepContext", "gap", "ddim_noise_scales", "ddpm_coefficients", "churn_gamma", "churn_time",
           "ancestral_step", "forward_transition", "langevin_alpha", "LANGEVIN_ALPHAS"]



def noise_level(schedule, t, what):
    """``sigma(t)``, refused where it is 0: ``what`` (a score, a velocity, a step's eps...) divides by it, so a
    grid may end there but no step may start or evaluate there."""
    s = schedule.sigma(t)
    if s == 0.0:
        raise ValueError(f"t = {t!r} has sigma = 0: {what} is not defined there (a grid may end there but no "
                         f"step may start or evaluate there)")
    return s


def positive_alpha(schedule, t, sampler):
    """``alpha(t)``, refused where it is 0: ``sampler`` works in EDM's variable ``x / alpha``."""
    a = schedule.alpha(t)
    if a == 0.0:
        raise ValueError(f"t = {t!r} has alpha = 0: {sampler} works in EDM's variable x/alpha, undefined there "
                         f"(start the grid below {schedule!r}'s pure-noise end)")
    return a

@dataclass
class StepContext:
    """Where a step is in its run: index ``i`` of ``n_steps``, whether it is the ``last``; ``carry`` holds what
    a multistep method keeps between steps, ``info`` what a run reports (per-step values, lists)."""

    i: int
    n_steps: int
    carry: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def last(self) -> bool:
        return self.i == self.n_steps - 1


def _at(schedule, t):
    with np.errstate(divide="ignore"):
        return schedule.alpha(t), schedule.sigma(t), schedule.log_snr(t)


def gap(log_snr_t, log_snr_n):
    r""":math:`1 - e^{\lambda_t - \lambda_n} = \sigma_{t|n}^2/\sigma_t^2` (``expm1``; 1 when :math:`\lambda_n = \infty`)."""
    with np.errstate(invalid="ignore"):
        return float(-np.expm1(log_snr_t - log_snr_n)) if np.isfinite(log_snr_t) else 1.0


def ddim_noise_scales(alpha_t, sigma_t, alpha_n, sigma_n, log_snr_t, log_snr_n, eta):
    r"""``(c_n, s_n)``: DDIM's direction coefficient and noise scale from ``t`` to ``n`` (Song et al. 2021, eq. (16)).

    .. math::

        s_n = \eta\,\sigma_n\sqrt{1 - e^{\lambda_t - \lambda_n}}, \qquad
        c_n = \sigma_n\sqrt{1 - \eta^2\bigl(1 - e^{\lambda_t - \lambda_n}\bigr)} = \sqrt{\sigma_n^2 - s_n^2},

    the posterior standard deviation of :math:`x_n` given :math:`(x_t, x_0)` under the Markov forward process,
    times :math:`\eta`; for a variance-preserving schedule
    :math:`\sigma_n^2(1 - e^{\lambda_t - \lambda_n}) = \frac{1 - \bar\alpha_n}{1 - \bar\alpha_t}(1 - \bar\alpha_t/\bar\alpha_n)`,
    DDIM's :math:`\sigma_t(\eta)^2`.  ``ValueError`` when :math:`\eta^2(1 - e^{\lambda_t - \lambda_n}) > 1` (the
    direction coefficient would be imaginary; only possible for :math:`\eta > 1`).  Both are 0 when
    :math:`\sigma_n = 0`.
    """
    if sigma_n == 0.0:  # the step lands on clean data: no direction, no noise
        return 0.0, 0.0
    g = gap(log_snr_t, log_snr_n)
    rest = 1.0 - eta * eta * g
    if rest < 0.0:
        raise ValueError(f"eta = {eta!r} is too large for this step: sigma_n^2 - s_n^2 < 0 "
                         f"(eta^2 (1 - exp(lambda_t - lambda_n)) = {eta * eta * g:.6g} > 1)")
    return sigma_n * math.sqrt(rest), eta * sigma_n * math.sqrt(g)


def ddpm_coefficients(schedule, t, t_next, variance="small"):
    r"""``(c_x, c_0, std)`` of DDPM's ancestral step :math:`x_n = c_x x + c_0\hat x_0 + \mathrm{std}\,\xi`.

    The posterior :math:`q(x_n \mid x_t, x_0)` of the Markov forward process (Ho et al. 2020, eq. (6)–(7),
    written for any schedule; docs/diffusion.md §6.5):

    .. math::

        c_x = \frac{\alpha_t}{\alpha_n}\frac{\sigma_n^2}{\sigma_t^2}, \qquad
        c_0 = \alpha_n\bigl(1 - e^{\lambda_t - \lambda_n}\bigr), \qquad
        \mathrm{std}^2 = \begin{cases}
            \sigma_n^2\bigl(1 - e^{\lambda_t - \lambda_n}\bigr) & \text{small: the posterior variance } \tilde\beta\\
            \sigma_t^2\bigl(1 - e^{\lambda_t - \lambda_n}\bigr) = \sigma_{t|n}^2 & \text{large: the forward step's } \beta
        \end{cases}

    For diffusers' tables (:class:`~refscore.diffusion.schedules.VPDiscrete`) these are
    ``DDPMScheduler.step``'s ``current_sample_coeff``, ``pred_original_sample_coeff`` and the square roots of
    ``_get_variance``'s ``fixed_small`` and ``fixed_large``.  No noise when :math:`\sigma_n = 0`.
    """
    a, s, lt = _at(schedule, t)
    an, sn, ln = _at(schedule, t_next)
    g = gap(lt, ln)
    c_x = (a / an) * (sn * sn) / (s * s)
    c_0 = an * g
    if sn == 0.0:
        return c_x, c_0, 0.0
    var = (sn * sn if variance == "small" else s * s) * g
    return c_x, c_0, math.sqrt(var)


def churn_gamma(sigma_bar, n_steps, S_churn, S_tmin, S_tmax):
    r"""EDM's churn :math:`\gamma = \min(S_{\rm churn}/N, \sqrt2 - 1)` where :math:`S_{t\min} \le \bar\sigma \le S_{t\max}`, else 0.

    Karras et al. 2022, Algorithm 2 line 3 (NVlabs/edm ``generate.py``, ``edm_sampler`` and
    ``ablation_sampler``, which compare :math:`\sigma(t_i)`, EDM's :math:`\bar\sigma`; k-diffusion
    ``sampling.py``, ``sample_euler``/``sample_heun``, with :math:`N` = ``len(sigmas) - 1``).
    """
    if S_churn == 0.0 or not (S_tmin <= sigma_bar <= S_tmax):
        return 0.0
    return min(S_churn / n_steps, math.sqrt(2.0) - 1.0)


def churn_time(schedule, t, gamma):
    r"""``(t_hat, a_hat, noise_scale)``: the time with :math:`\hat{\bar\sigma} = (1 + \gamma)\bar\sigma(t)` and the churn's noise.

    :math:`\hat\lambda = \lambda(t) - 2\log(1 + \gamma)`, :math:`\hat t = t(\hat\lambda)`; the churned state is
    :math:`\hat x = (\hat\alpha/\alpha)\,x + \hat\alpha\sqrt{\hat{\bar\sigma}^2 - \bar\sigma^2}\,S_{\rm noise}\xi`
    (NVlabs/edm ``ablation_sampler``'s ``x_hat`` with its ``s(t) = alpha``), and
    ``noise_scale`` :math:`= \hat\alpha\,\bar\sigma\sqrt{\gamma(2 + \gamma)}` is the last factor without
    cancellation.  ``ValueError`` when :math:`\hat\lambda` is below the schedule's range (the raised noise
    level does not exist in it: lower ``S_churn`` or ``S_tmax``).
    """
    if gamma == 0.0:
        return t, None, 0.0
    a, s, lt = _at(schedule, t)
    lam_hat = lt - 2.0 * math.log1p(gamma)
    lo, _ = schedule.log_snr_range()
    if lam_hat < lo:
        raise ValueError(f"S_churn raises the noise level at t = {t!r} by 1 + gamma = {1.0 + gamma:.6g} beyond the "
                         f"largest of {schedule!r} (log-SNR {lam_hat:.6g} < {lo:.6g}); lower S_churn or S_tmax")
    t_hat = float(schedule.t_of_log_snr(lam_hat))
    a_hat = schedule.alpha(t_hat)
    return t_hat, a_hat, a_hat * (s / a) * math.sqrt(gamma * (2.0 + gamma))


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    r"""k-diffusion's ``get_ancestral_step``: ``(sigma_down, sigma_up)`` in EDM's :math:`\bar\sigma`.

    .. math::

        \sigma_{\rm up} = \min\Bigl(\bar\sigma_n,\ \eta\sqrt{\bar\sigma_n^2(\bar\sigma_t^2 - \bar\sigma_n^2)/\bar\sigma_t^2}\Bigr),
        \qquad \sigma_{\rm down} = \sqrt{\bar\sigma_n^2 - \sigma_{\rm up}^2}

    (crowsonkb/k-diffusion ``k_diffusion/sampling.py``, ``get_ancestral_step``); :math:`\eta = 0` gives
    :math:`(\bar\sigma_n, 0)`.  :math:`\sigma_{\rm up}` equals DDIM's :math:`s_n/\alpha_n` at the same
    :math:`\eta` (docs/diffusion.md §6.5), computed here as
    :math:`\eta\,\bar\sigma_n\sqrt{1 - e^{\lambda_t - \lambda_n}}` when :math:`\bar\sigma_t` is infinite.
    """
    if eta == 0.0:
        return sigma_to, 0.0
    if math.isinf(sigma_from):
        up = eta * sigma_to
    else:
        up = eta * math.sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
                             / (sigma_from * sigma_from))
    up = min(sigma_to, up)
    return math.sqrt(sigma_to * sigma_to - up * up), up


def forward_transition(schedule, t, t_next):
    r"""``(a, G2)``: the forward process from :math:`t_n` to :math:`t`, :math:`x_t = a\,x_n + G\,z`.

    :math:`a = \alpha_t/\alpha_n`, :math:`G^2 = \sigma_t^2 - a^2\sigma_n^2 = \sigma_t^2(1 - e^{\lambda_t - \lambda_n})`.
    For diffusers' and score_sde's VP tables :math:`a = \sqrt{1 - \beta_i}`, :math:`G^2 = \beta_i`
    (``VPSDE.discretize``); for VE, :math:`a = 1`, :math:`G^2 = \sigma_t^2 - \sigma_n^2` (``VESDE.discretize``).
    """
    a, s, lt = _at(schedule, t)
    an, _, ln = _at(schedule, t_next)
    return a / an, s * s * gap(lt, ln)


#: the readings of the Langevin corrector's alpha_i (score_sde's snr rule)
LANGEVIN_ALPHAS = ("one", "alpha_bar", "step")


def langevin_alpha(kind, schedule, t, t_next=None):
    r"""The :math:`\alpha_i` of score_sde's corrector step :math:`\epsilon = 2\alpha_i(r\lVert z\rVert/\lVert g\rVert)^2`.

    * ``"one"``: :math:`\alpha_i = 1` (score_sde ``LangevinCorrector`` for VE);
    * ``"step"``: :math:`\alpha_i = \alpha_t^2/\alpha_n^2`, the forward step's :math:`1 - \beta_i` into the
      corrector's time :math:`t` from the grid's next time :math:`t_n` (score_sde's code for VP and sub-VP:
      ``sde.alphas[timestep]``);
    * ``"alpha_bar"``: :math:`\alpha_i = \alpha(t)^2 = \prod_{j \le i}(1 - \beta_j)` for VP (the reading of
      Song et al. 2021, Appendix G, in the VP corrector algorithm).
    """
    if kind == "one":
        return 1.0
    a = schedule.alpha(t)
    if kind == "alpha_bar":
        return a * a
    an = schedule.alpha(t_next)
    return (a / an) ** 2
