r"""Exact output laws of deterministic and DDIM samplers on Gaussian data: one affine map per step.

Derivation: docs/diffusion.md §6 (the samplers as affine maps; the law by recursion).

For data :math:`N(\mu, \Sigma)`, :math:`\Sigma = V\operatorname{diag}(\ell)V^\top`, the exact
predictions are affine in :math:`x` and diagonal in the coordinates :math:`z = V^\top x`.  Per coordinate,
with :math:`\delta = \alpha^2\ell + \sigma^2` and :math:`\tilde\mu = V^\top\mu`:

.. math::

    \hat x_0 = \frac{\alpha\ell}{\delta}\,z + \frac{\sigma^2}{\delta}\,\tilde\mu, \qquad
    \hat\varepsilon = \frac{\sigma}{\delta}\,z - \frac{\alpha\sigma}{\delta}\,\tilde\mu, \qquad
    \hat u = \alpha'\hat x_0 + \sigma'\hat\varepsilon .

Every step of :mod:`refscore.diffusion.samplers` is a linear combination of these and of fresh noise, so a
step is :math:`z' = m \odot z + k + l \odot \xi` with per-coordinate :math:`m, k, l` (``h = t_{i+1} - t_i``,
subscripts ``t`` and ``n`` for the two times):

.. math::

    \text{euler:}\ \ m = 1 + h\,b_u(t),\ \ k = h\,c_u(t), \qquad
    \text{heun:}\ \ m = 1 + \tfrac h2\bigl(b_u(t) + b_u(n)(1 + h\,b_u(t))\bigr),\ \
                  k = \tfrac h2\bigl(c_u(t) + b_u(n)\,h\,c_u(t) + c_u(n)\bigr),

    \text{ddim:}\ \ m = \alpha_n b_{x_0}(t) + c_n b_\varepsilon(t),\ \ k = \alpha_n c_{x_0}(t) + c_n c_\varepsilon(t),\ \
    l = s_n, \qquad c_n = \sqrt{\sigma_n^2 - s_n^2},

(:math:`b, c` the slope and intercept of each prediction; Heun falls back to Euler when
:math:`\sigma_n = 0`; DDIM's :math:`s_n` as in :func:`refscore.diffusion.samplers.ddim_step`).  Composing the
steps gives :math:`z_N = M z_0 + K + \text{noise}` with diagonal :math:`M` and noise covariance :math:`Q`
(diagonal too), so from :math:`x_0 \sim N(m_0, C_0)` the output is exactly

.. math::

    x_N \sim N\bigl(V(M\,V^\top m_0 + K),\ V(M\,V^\top C_0 V\,M + Q)V^\top\bigr).

These formulas are written from the algebra above, not by calling the samplers; the tests compare the two.
"""
from __future__ import annotations

import numpy as np

__all__ = ["predictions_affine", "euler_affine", "heun_affine", "ddim_affine", "ddim_noise_scales"]


def predictions_affine(lam, mu, alpha, sigma, d_alpha, d_sigma):
    r"""Per-coordinate ``(b_x0, c_x0, b_eps, c_eps, b_u, c_u)`` at one time (eigenvalues ``lam``, ``mu`` = Vᵀμ).

    ``b_u``/``c_u`` are ``None`` when ``d_sigma`` is not finite (VP at :math:`t = 0`), where no sampler evaluates
    the velocity.
    """
    den = alpha * alpha * lam + sigma * sigma
    bx, cx = alpha * lam / den, sigma * sigma * mu / den
    be, ce = sigma / den, -alpha * sigma * mu / den
    if not np.isfinite(d_sigma):
        return bx, cx, be, ce, None, None
    return bx, cx, be, ce, d_alpha * bx + d_sigma * be, d_alpha * cx + d_sigma * ce


def ddim_noise_scales(alpha_t, sigma_t, alpha_n, sigma_n, log_snr_t, log_snr_n, eta):
    r"""``(c_n, s_n)``: DDIM's direction coefficient and noise scale from ``t`` to ``n`` (Song et al. 2021, eq. (16)).

    .. math::

        s_n = \eta\,\sigma_n\sqrt{1 - e^{\lambda_t - \lambda_n}}, \qquad
        c_n = \sigma_n\sqrt{1 - \eta^2\bigl(1 - e^{\lambda_t - \lambda_n}\bigr)} = \sqrt{\sigma_n^2 - s_n^2},

    the posterior standard deviation of :math:`x_n` given :math:`(x_t, x_0)` under the Markov forward process,
    times :math:`\eta`; for a variance-preserving schedule
    :math:`\sigma_n^2(1 - e^{\lambda_t - \lambda_n}) = \frac{1 - \bar\alpha_n}{1 - \bar\alpha_t}(1 - \bar\alpha_t/\bar\alpha_n)`,
    DDIM's :math:`\sigma_t(\eta)^2`.  ``expm1`` keeps :math:`1 - e^{\lambda_t - \lambda_n}` accurate for close
    times.  ``ValueError`` when :math:`\eta^2(1 - e^{\lambda_t - \lambda_n}) > 1` (the direction coefficient would be
    imaginary; only possible for :math:`\eta > 1`).  Both are 0 when :math:`\sigma_n = 0`.
    """
    if sigma_n == 0.0:  # the step lands on clean data: no direction, no noise
        return 0.0, 0.0
    gap = float(-np.expm1(log_snr_t - log_snr_n))
    rest = 1.0 - eta * eta * gap
    if rest < 0.0:
        raise ValueError(f"eta = {eta!r} is too large for this step: sigma_n^2 - s_n^2 < 0 "
                         f"(eta^2 (1 - exp(lambda_t - lambda_n)) = {eta * eta * gap:.6g} > 1)")
    return sigma_n * np.sqrt(rest), eta * sigma_n * np.sqrt(gap)


def _at(schedule, t):
    with np.errstate(divide="ignore"):
        return (schedule.alpha(t), schedule.sigma(t), schedule.d_alpha(t), schedule.d_sigma(t),
                schedule.log_snr(t))


def euler_affine(lam, mu, schedule, t, t_next, eta=0.0):
    """``(m, k, l)`` of one Euler step on the probability-flow ODE."""
    a, s, da, ds, _ = _at(schedule, t)
    *_, bu, cu = predictions_affine(lam, mu, a, s, da, ds)
    h = t_next - t
    return 1.0 + h * bu, h * cu, np.zeros_like(lam)


def heun_affine(lam, mu, schedule, t, t_next, eta=0.0):
    """``(m, k, l)`` of one Heun step (Karras et al. 2022, Algorithm 1 without churn)."""
    a, s, da, ds, _ = _at(schedule, t)
    *_, bu, cu = predictions_affine(lam, mu, a, s, da, ds)
    h = t_next - t
    m1, k1 = 1.0 + h * bu, h * cu
    an, sn, dan, dsn, _ = _at(schedule, t_next)
    if sn == 0.0:
        return m1, k1, np.zeros_like(lam)
    *_, bun, cun = predictions_affine(lam, mu, an, sn, dan, dsn)
    return 1.0 + 0.5 * h * (bu + bun * m1), 0.5 * h * (cu + bun * k1 + cun), np.zeros_like(lam)


def ddim_affine(lam, mu, schedule, t, t_next, eta=0.0):
    """``(m, k, l)`` of one DDIM step with parameter ``eta``."""
    a, s, _, _, lt = _at(schedule, t)
    bx, cx, be, ce, _, _ = predictions_affine(lam, mu, a, s, 0.0, np.inf)
    an, sn, _, _, ln = _at(schedule, t_next)
    cn, sd = ddim_noise_scales(a, s, an, sn, lt, ln, eta)
    return an * bx + cn * be, an * cx + cn * ce, np.full_like(lam, sd)
