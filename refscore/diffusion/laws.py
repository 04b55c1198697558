r"""Exact output laws of the diffusion samplers on Gaussian data: one affine map per step, and the distances
of a Gaussian law to the data law.

Derivation: docs/diffusion.md §6.2–6.3 (the samplers as affine maps; the law by recursion), §6.5 (the
stochastic samplers' added noise, the multistep recursion) and §6.6 (KL and W2 between Gaussians).

For data :math:`N(\mu, \Sigma)`, :math:`\Sigma = V\operatorname{diag}(\ell)V^\top`, the exact
predictions are affine in :math:`x` and diagonal in the coordinates :math:`z = V^\top x`.  Per coordinate,
with :math:`\delta = \alpha^2\ell + \sigma^2` and :math:`\tilde\mu = V^\top\mu`:

.. math::

    \hat x_0 = \frac{\alpha\ell}{\delta}\,z + \frac{\sigma^2}{\delta}\,\tilde\mu, \qquad
    \hat\varepsilon = \frac{\sigma}{\delta}\,z - \frac{\alpha\sigma}{\delta}\,\tilde\mu, \qquad
    \nabla\log p_t = -\frac{z - \alpha\tilde\mu}{\delta}, \qquad
    \hat u = \alpha'\hat x_0 + \sigma'\hat\varepsilon .

Every step of :mod:`refscore.diffusion.samplers` is a linear combination of these and of fresh isotropic
noise, so a run keeps the representation :class:`AffineLaw`: :math:`z_i = M z_0 + K + \zeta`,
:math:`\zeta \sim N(0, \operatorname{diag}Q)` independent of :math:`z_0`, with per-coordinate ``M, K, Q``.  A
one-step sampler :math:`z' = m z + k + \sqrt q\,\xi` updates it as
:math:`(M, K, Q) \leftarrow (mM,\ mK + k,\ m^2Q + q)` (:meth:`AffineLaw.then`); DPM-Solver++(2M) combines
the denoised values of two steps, both affine in :math:`z_0`.  From :math:`x_0 \sim N(m_0, C_0)` the output is
exactly

.. math::

    x_N \sim N\bigl(V(M\,V^\top m_0 + K),\ V(M\,V^\top C_0 V\,M + \operatorname{diag}Q)V^\top\bigr).

Each ``*_law`` function below is that algebra for one sampler (same options as the sampler's step), written
from docs/diffusion.md, not by calling the step; the tests compare the two, to round-off on the mean and
basis directions and by Monte Carlo for the added noise.  The scalar coefficients they share with the
steps (noise scales, churn, ancestral split) are in :mod:`refscore.diffusion.coefficients`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import linalg

from ..distributions import Gaussian
from . import coefficients as co

__all__ = ["AffineLaw", "predictions_affine", "euler_law", "heun_law", "ddim_law", "ddpm_law",
           "euler_ancestral_law", "dpmpp_2m_law", "pc_law", "pf_ode_law", "gaussian_kl", "gaussian_w2"]


class AffineLaw(NamedTuple):
    r"""Per eigen-coordinate: :math:`z = M z_0 + K + \zeta`, :math:`\zeta \sim N(0, \operatorname{diag}Q)` independent of :math:`z_0`."""

    M: np.ndarray
    K: np.ndarray
    Q: np.ndarray

    @classmethod
    def identity(cls, d):
        return cls(np.ones(d), np.zeros(d), np.zeros(d))

    def then(self, m, k, q=0.0):
        r"""After the step :math:`z' = m z + k + \sqrt q\,\xi` (fresh :math:`\xi`): :math:`(mM, mK + k, m^2Q + q)`."""
        return AffineLaw(m * self.M, m * self.K + k, m * m * self.Q + q)


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


def _at(schedule, t):
    with np.errstate(divide="ignore"):
        return (schedule.alpha(t), schedule.sigma(t), schedule.d_alpha(t), schedule.d_sigma(t),
                schedule.log_snr(t))


def _x0(lam, mu, schedule, t):
    a, s, *_ = _at(schedule, t)
    bx, cx, *_ = predictions_affine(lam, mu, a, s, 0.0, np.inf)
    return bx, cx


def _score(lam, mu, schedule, t):
    """``(b_s, c_s)``: the exact score :math:`-(z - \\alpha\\tilde\\mu)/\\delta`."""
    a, s, *_ = _at(schedule, t)
    den = a * a * lam + s * s
    return -1.0 / den, a * mu / den


def _euler_mk(lam, mu, schedule, t, t_next):
    a, s, da, ds, _ = _at(schedule, t)
    *_, bu, cu = predictions_affine(lam, mu, a, s, da, ds)
    h = t_next - t
    return 1.0 + h * bu, h * cu


def _heun_mk(lam, mu, schedule, t, t_next):
    m1, k1 = _euler_mk(lam, mu, schedule, t, t_next)
    an, sn, dan, dsn, _ = _at(schedule, t_next)
    if sn == 0.0:
        return m1, k1
    a, s, da, ds, _ = _at(schedule, t)
    *_, bu, cu = predictions_affine(lam, mu, a, s, da, ds)
    *_, bun, cun = predictions_affine(lam, mu, an, sn, dan, dsn)
    h = t_next - t
    return 1.0 + 0.5 * h * (bu + bun * m1), 0.5 * h * (cu + bun * k1 + cun)


def _churned(schedule, t, ctx, S_churn, S_tmin, S_tmax, S_noise):
    r"""``(t_hat, m_c, q_c)``: the churn :math:`\hat x = m_c x + \sqrt{q_c}\,\xi` (identity when :math:`\gamma = 0`)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    gamma = co.churn_gamma(s / a, ctx.n_steps, S_churn, S_tmin, S_tmax)
    if gamma == 0.0:
        return t, 1.0, 0.0
    t_hat, a_hat, scale = co.churn_time(schedule, t, gamma)
    return t_hat, a_hat / a, (scale * S_noise) ** 2


def euler_law(lam, mu, schedule, t, t_next, rep, ctx, S_churn=0.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0):
    r"""Euler on the PF-ODE after EDM's churn: :math:`m = m_E(\hat t)\,\hat\alpha/\alpha`, :math:`k = k_E(\hat t)`,
    :math:`q = m_E^2 q_c` (:math:`m_E = 1 + h\,b_u`, :math:`k_E = h\,c_u`, :math:`h = t_n - \hat t`)."""
    t_hat, mc, qc = _churned(schedule, t, ctx, S_churn, S_tmin, S_tmax, S_noise)
    m, k = _euler_mk(lam, mu, schedule, t_hat, t_next)
    return rep.then(m * mc, k, m * m * qc)


def heun_law(lam, mu, schedule, t, t_next, rep, ctx, S_churn=0.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0):
    r"""Heun (Euler's predictor composed into the trapezoidal corrector) after EDM's churn:
    :math:`m = 1 + \tfrac h2\bigl(b_u(\hat t) + b_u(t_n)(1 + h\,b_u(\hat t))\bigr)`,
    :math:`k = \tfrac h2\bigl(c_u(\hat t) + b_u(t_n)\,h\,c_u(\hat t) + c_u(t_n)\bigr)`, times the churn as in
    :func:`euler_law`; Euler when :math:`\sigma_n = 0`."""
    t_hat, mc, qc = _churned(schedule, t, ctx, S_churn, S_tmin, S_tmax, S_noise)
    m, k = _heun_mk(lam, mu, schedule, t_hat, t_next)
    return rep.then(m * mc, k, m * m * qc)


def ddim_law(lam, mu, schedule, t, t_next, rep, ctx, eta=0.0):
    r"""DDIM: :math:`m = \alpha_n b_{x_0} + c_n b_\varepsilon`, :math:`k = \alpha_n c_{x_0} + c_n c_\varepsilon`,
    :math:`q = s_n^2` (:func:`refscore.diffusion.coefficients.ddim_noise_scales`)."""
    a, s, _, _, lt = _at(schedule, t)
    bx, cx, be, ce, _, _ = predictions_affine(lam, mu, a, s, 0.0, np.inf)
    an, sn, _, _, ln = _at(schedule, t_next)
    cn, sd = co.ddim_noise_scales(a, s, an, sn, lt, ln, eta)
    return rep.then(an * bx + cn * be, an * cx + cn * ce, sd * sd)


def ddpm_law(lam, mu, schedule, t, t_next, rep, ctx, variance="small"):
    r"""DDPM's ancestral step: :math:`m = c_x + c_0 b_{x_0}`, :math:`k = c_0 c_{x_0}`, :math:`q = \mathrm{std}^2`
    (:func:`refscore.diffusion.coefficients.ddpm_coefficients`)."""
    c_x, c_0, std = co.ddpm_coefficients(schedule, t, t_next, variance)
    bx, cx = _x0(lam, mu, schedule, t)
    return rep.then(c_x + c_0 * bx, c_0 * cx, std * std)


def euler_ancestral_law(lam, mu, schedule, t, t_next, rep, ctx, eta=1.0, s_noise=1.0):
    r"""k-diffusion's Euler ancestral in :math:`\bar x = x/\alpha`: :math:`\bar x' = r\bar x + (1 - r)D + \sigma_{\rm up}S\xi`,
    :math:`r = \sigma_{\rm down}/\bar\sigma_t`; so :math:`m = \alpha_n(r/\alpha_t + (1 - r)b_{x_0})`,
    :math:`k = \alpha_n(1 - r)c_{x_0}`, :math:`q = (\alpha_n S\sigma_{\rm up})^2` (0 when :math:`\sigma_n = 0`)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    down, up = co.ancestral_step(s / a, sn / an, eta)
    r = down / (s / a)
    bx, cx = _x0(lam, mu, schedule, t)
    q = (an * s_noise * up) ** 2 if sn > 0.0 else 0.0
    return rep.then(an * (r / a + (1.0 - r) * bx), an * (1.0 - r) * cx, q)


def dpmpp_2m_law(lam, mu, schedule, t, t_next, rep, ctx):
    r"""DPM-Solver++(2M) in half log-SNR :math:`\ell = \lambda/2`, :math:`h = \ell_n - \ell_t`:
    :math:`z' = (\sigma_n/\sigma_t) z - \alpha_n(e^{-h} - 1) D_d`, with
    :math:`D_d = (1 + \tfrac1{2r})D_i - \tfrac1{2r}D_{i-1}`, :math:`r = (\ell_t - \ell_{i-1})/h` (first order,
    :math:`D_d = D_i`, at the first step and when :math:`\sigma_n = 0`; then :math:`z' = \alpha_n D_i`).
    :math:`D_i = b_{x_0}(t)z_i + c_{x_0}(t)` is affine in :math:`z_0` through :math:`(M, K)`, and the previous
    step's is carried in ``ctx.carry``.  The sampler adds no noise, so :math:`Q` stays 0."""
    if np.any(rep.Q != 0.0):
        raise ValueError("dpmpp_2m_law composes deterministic steps only (the state carries added noise)")
    a, s, _, _, lt = _at(schedule, t)
    an, sn, _, _, ln = _at(schedule, t_next)
    bx, cx = _x0(lam, mu, schedule, t)
    D = (bx * rep.M, bx * rep.K + cx)
    lt, ln = 0.5 * lt, 0.5 * ln
    prev = ctx.carry.get("D")
    ctx.carry["D"] = (D, lt)
    if sn == 0.0:
        return _law(an * D[0], an * D[1], rep.Q)
    h = ln - lt
    Dd = D
    if prev is not None and np.isfinite(prev[1]) and np.isfinite(lt):
        r = (lt - prev[1]) / h
        w = 1.0 / (2.0 * r)
        Dd = ((1.0 + w) * D[0] - w * prev[0][0], (1.0 + w) * D[1] - w * prev[0][1])
    e = math.expm1(-h)
    return _law((sn / s) * rep.M - an * e * Dd[0], (sn / s) * rep.K - an * e * Dd[1], rep.Q)


def _law(M, K, Q):
    """An :class:`AffineLaw` from its parts (broadcast to one shape)."""
    M, K, Q = np.broadcast_arrays(np.asarray(M, float), np.asarray(K, float), np.asarray(Q, float))
    return AffineLaw(M.copy(), K.copy(), Q.copy())


def pc_law(lam, mu, schedule, t, t_next, rep, ctx, predictor="reverse_diffusion", corrector_steps=1, snr=0.16,
           step_size=None, langevin_alpha="one", order="corrector_first", denoise=True):
    r"""score_sde's predictor–corrector with given corrector step sizes ``step_size[i, j]`` (``snr`` unused here).

    Corrector (Langevin at time :math:`t_c`): :math:`m = 1 + \epsilon b_s`, :math:`k = \epsilon c_s`,
    :math:`q = 2\epsilon`.  Predictor from :math:`t` to :math:`t_n`: reverse diffusion
    :math:`m = 2 - a + G^2 b_s(t)`, :math:`k = G^2 c_s(t)`, :math:`q = G^2`
    (:func:`refscore.diffusion.coefficients.forward_transition`); Euler–Maruyama, :math:`h = t_n - t`:
    :math:`m = 1 + h(f - g^2 b_s(t))`, :math:`k = -h\,g^2 c_s(t)`, :math:`q = -h\,g^2`.  With ``denoise`` the
    run's last update adds no noise.
    """
    if step_size is None and corrector_steps > 0:
        raise ValueError("pc's exact law needs the corrector step sizes (step_size=...): the snr rule computes "
                         "them from the batch of chains, which is not Gaussian-affine")
    row = np.asarray(step_size, float)[ctx.i] if corrector_steps > 0 else np.zeros(0)
    final = ctx.last and denoise

    def correct(rep, tc, drop_last):
        bs, cs = _score(lam, mu, schedule, tc)
        for j, eps in enumerate(row):
            q = 0.0 if (drop_last and j == len(row) - 1) else 2.0 * eps
            rep = rep.then(1.0 + eps * bs, eps * cs, q)
        return rep

    def predict(rep, drop):
        bs, cs = _score(lam, mu, schedule, t)
        if predictor == "reverse_diffusion":
            aa, G2 = co.forward_transition(schedule, t, t_next)
            m, k, q = 2.0 - aa + G2 * bs, G2 * cs, G2
        else:
            h = t_next - t
            f, g2 = schedule.f(t), schedule.g2(t)
            m, k, q = 1.0 + h * (f - g2 * bs), -h * g2 * cs, -h * g2
        return rep.then(m, k, 0.0 if drop else q)

    if order == "corrector_first":
        return predict(correct(rep, t, False), final)
    return correct(predict(rep, final and len(row) == 0), t_next, final)


def pf_ode_law(lam, mu, schedule, t, t_next, rep, ctx, method="DOP853", rtol=1e-10, atol=1e-10, sigma_tail=1e-6):
    r"""The exact probability-flow map (the limit the adaptive integrator approximates to its tolerance):
    :math:`z' - \alpha_n\tilde\mu = \sqrt{\delta_n/\delta_t}\,(z - \alpha_t\tilde\mu)`, docs/diffusion.md §6.4."""
    a, s, *_ = _at(schedule, t)
    an, sn, *_ = _at(schedule, t_next)
    m = np.sqrt((an * an * lam + sn * sn) / (a * a * lam + s * s))
    return rep.then(m, an * mu - m * a * mu)


# ------------------------------------------------------------------ distances between Gaussian laws
def _x_minus_log1p(x):
    r""":math:`x - \log(1 + x)` without cancellation: its Taylor series :math:`\sum_{k\ge2}(-1)^k x^k/k` for :math:`|x| < 0.1`."""
    x = np.asarray(x, float)
    out = x - np.log1p(x)
    small = np.abs(x) < 0.1
    if np.any(small):
        xs = x[small]
        acc = np.zeros_like(xs)
        p = xs * xs
        for k in range(2, 24):  # |x|^22 / 22 < 1e-23 x^2 / 2: below round-off
            acc += p / k if k % 2 == 0 else -p / k
            p = p * xs
        out[small] = acc
    return out


def _gaussians(mean0, cov0, mean1, cov1):
    g0, g1 = Gaussian(mean0, cov0), Gaussian(mean1, cov1)  # validates shapes, symmetry, definiteness
    if g0.dim != g1.dim:
        raise ValueError(f"the two laws must have the same dimension, got {g0.dim} and {g1.dim}")
    return g0.mean, g0.cov, g1.mean, g1.cov


def gaussian_kl(mean0, cov0, mean1, cov1):
    r""":math:`\mathrm{KL}(N_0 \,\|\, N_1)`, written without cancellation (docs/diffusion.md §6.6).

    .. math::

        \mathrm{KL} = \tfrac12\Bigl[\sum_i\bigl(\rho_i - 1 - \log\rho_i\bigr) + (m_1 - m_0)^\top C_1^{-1}(m_1 - m_0)\Bigr],

    :math:`\rho_i` the generalised eigenvalues of :math:`C_0 v = \rho\,C_1 v` (those of :math:`C_1^{-1}C_0`), so
    that :math:`\operatorname{tr}(C_1^{-1}C_0) - d - \log\det(C_1^{-1}C_0)` is a sum of non-negative terms
    :math:`x - \log(1 + x)`, :math:`x = \rho_i - 1`, each accurate when the laws are close.
    """
    m0, c0, m1, c1 = _gaussians(mean0, cov0, mean1, cov1)
    rho = linalg.eigh(c0, c1, eigvals_only=True)
    dm = m1 - m0
    quad = float(dm @ linalg.cho_solve(linalg.cho_factor(c1), dm))
    return 0.5 * (float(np.sum(_x_minus_log1p(rho - 1.0))) + quad)


def _sqrt_psd(c):
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_w2(mean0, cov0, mean1, cov1):
    r"""The 2-Wasserstein distance :math:`W_2(N_0, N_1)`, written without cancellation (docs/diffusion.md §6.6).

    .. math::

        W_2^2 = \lVert m_0 - m_1\rVert^2 + \operatorname{tr}\bigl(C_0 + C_1 - 2(C_1^{1/2}C_0C_1^{1/2})^{1/2}\bigr)
              = \lVert m_0 - m_1\rVert^2 + \min_{R^\top R = I}\lVert C_0^{1/2} - C_1^{1/2}R\rVert_F^2,

    the minimum at the orthogonal Procrustes solution (``scipy.linalg.orthogonal_procrustes``), so the
    covariance term is a sum of squares of small differences instead of a difference of traces.
    """
    m0, c0, m1, c1 = _gaussians(mean0, cov0, mean1, cov1)
    A, B = _sqrt_psd(c0), _sqrt_psd(c1)
    R, _ = linalg.orthogonal_procrustes(B, A)
    return float(math.sqrt(np.sum((m0 - m1) ** 2) + np.sum((A - B @ R) ** 2)))
