r"""Continuous-time denoising score matching: the loss, its population value by quadrature, and its exact
minimum on Gaussian data.

Derivation: docs/diffusion.md §7.

For a schedule :math:`x_t = \alpha x_0 + \sigma\varepsilon` (:mod:`refscore.diffusion.schedules`), the
conditional score is :math:`\nabla\log p(x_t \mid x_0) = -(x_t - \alpha x_0)/\sigma^2 = -\varepsilon/\sigma`
and the loss of a score model :math:`s(x, t)` is (Song et al. 2021, eq. (7))

.. math::

    L(s) = E_{t\sim p(t)}\,\lambda(t)\,E_{x_0, \varepsilon}\,\bigl\lVert s(x_t, t) + \varepsilon/\sigma(t)\bigr\rVert^2

(no factor :math:`\tfrac12`: at one noise level on EDM, :math:`L = 2\,`:func:`refscore.losses.dsm`).  The
weightings :math:`\lambda` (:data:`WEIGHTINGS`): ``"uniform"`` (1), ``"sigma2"`` (:math:`\sigma^2`, score_sde's
default, :math:`\propto 1/E\lVert\nabla\log p(x_t\mid x_0)\rVert^2`), ``"likelihood"`` (:math:`g^2`, Song,
Durkan, Murray, Ermon 2021, the weighting that bounds the KL), ``"edm"``
(:math:`\lambda_{\rm EDM}(\bar\sigma)\,\sigma^4/\alpha^2`, so that the loss equals Karras et al.'s
:math:`\lambda(\bar\sigma)\lVert D - x_0\rVert^2` in EDM's variables, Table 1).

Because :math:`E[-\varepsilon/\sigma \mid x_t] = \nabla\log p_t(x_t)` (Tweedie), for each :math:`t`

.. math::

    E\lVert s + \varepsilon/\sigma\rVert^2 = E\lVert s - \nabla\log p_t\rVert^2
        + \underbrace{E\,\operatorname{tr}\mathrm{Cov}[\varepsilon/\sigma \mid x_t]}_{\text{irreducible}},

so the minimiser is the exact score :math:`\nabla\log p_t` (for any positive :math:`\lambda`) and the minimum
is :math:`E_t\lambda(t)\,c(t)` with :math:`c(t) = E\operatorname{tr}\mathrm{Cov}[\varepsilon\mid x_t]/\sigma^2`.
For data :math:`N(\mu, \Sigma)`, :math:`\mathrm{Cov}[\varepsilon\mid x_t] = I - \sigma^2 C^{-1}` with
:math:`C = \alpha^2\Sigma + \sigma^2 I`, so :math:`c(t) = d/\sigma^2 - \operatorname{tr}C^{-1}`
(:func:`irreducible`).

References
----------
P. Vincent, Neural Computation 23 (2011); Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole,
ICLR 2021, eq. (7) (yang-song/score_sde ``losses.py``, ``get_sde_loss_fn``: ``reduce_mean``, ``likelihood_weighting``);
Y. Song, C. Durkan, I. Murray, S. Ermon, "Maximum likelihood training of score-based diffusion models",
NeurIPS 2021, Theorem 1; T. Karras et al., NeurIPS 2022, Table 1 (NVlabs/edm ``training/loss.py``, ``EDMLoss``).

Examples
--------
>>> from refscore.distributions import Gaussian
>>> from refscore.diffusion import EDM, Denoiser
>>> from refscore.diffusion.dsm import irreducible, population_dsm
>>> edm, data = EDM(), Gaussian([0.0], [[1.0]])
>>> rule = ([2.0], [1.0])                      # one noise level, sigma = 2
>>> float(irreducible(edm, data, 2.0))         # d/sigma^2 - 1/(1 + sigma^2) = 1/4 - 1/5
0.05
>>> round(population_dsm(Denoiser(data, edm).score, edm, data, times=rule), 15)   # the exact score attains it
0.05
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import roots_legendre

from .._validation import as_float_array, check_choice, check_int, check_positive
from ..distributions import Gaussian, GaussianMixture
from ..quadrature import gauss_hermite_nodes, product_rule, standard_normal_nodes
from .parametrisations import edm_preconditioning
from .schedules import Schedule

__all__ = ["WEIGHTINGS", "TIME_RULES", "weight", "time_rule", "dsm_loss", "population_dsm", "irreducible",
           "dsm_minimum"]


def _uniform(schedule, t, sigma_data):
    return np.ones_like(t)


def _sigma2(schedule, t, sigma_data):
    return np.asarray(schedule.sigma(t), float) ** 2


def _likelihood(schedule, t, sigma_data):
    return np.asarray(schedule.g2(t), float)


def _edm(schedule, t, sigma_data):
    a, s = np.asarray(schedule.alpha(t), float), np.asarray(schedule.sigma(t), float)
    return edm_preconditioning(s / a, sigma_data).weight * s ** 4 / a ** 2


#: the weightings lambda(t) (the registry every consumer reads)
WEIGHTINGS = {"uniform": _uniform, "sigma2": _sigma2, "likelihood": _likelihood, "edm": _edm}


def weight(kind, schedule, t, sigma_data=0.5):
    r""":math:`\lambda(t)` of weighting ``kind`` (:data:`WEIGHTINGS`); ``t`` a scalar or an array.

    ``"edm"``: :math:`\lambda_{\rm EDM}(\bar\sigma)\,\sigma^4/\alpha^2` with
    :math:`\lambda_{\rm EDM} = (\bar\sigma^2 + \sigma_d^2)/(\bar\sigma\sigma_d)^2`,
    :math:`\bar\sigma = \sigma/\alpha`: in EDM's variables :math:`\bar x = x/\alpha`,
    :math:`D - x_0 = \bar\sigma^2(\bar s + \varepsilon/\bar\sigma)` and :math:`\bar s = \alpha s`, so
    :math:`\lambda_{\rm EDM}\lVert D - x_0\rVert^2 = \lambda_{\rm EDM}\bar\sigma^4\alpha^2\lVert s + \varepsilon/\sigma\rVert^2`
    (docs/diffusion.md §7.1).
    """
    check_choice("weighting", kind, WEIGHTINGS)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
    sd = check_positive("sigma_data", sigma_data)
    tt = as_float_array(t, "t")
    out = WEIGHTINGS[kind](schedule, tt, sd)
    return float(out) if out.ndim == 0 else out


#: the training-time distributions time_rule integrates against
TIME_RULES = ("uniform", "edm_lognormal")


def time_rule(schedule, kind="uniform", n=48, t_lo=None, t_hi=None, P_mean=-1.2, P_std=1.2):
    r"""A quadrature rule ``(t (n,), w (n,))`` for :math:`E_{t\sim p(t)}f(t) \approx \sum_k w_k f(t_k)`.

    * ``"uniform"``: :math:`t \sim U(t_{lo}, t_{hi})` (score_sde: ``U(eps, T)``), by ``n``-point
      Gauss–Legendre in :math:`u = \log t` (weights :math:`W_k t_k/(t_{hi} - t_{lo})`), since the integrands
      behave like :math:`1/\sigma^2 \sim 1/t` near :math:`t = 0`; ``t_lo > 0`` is required.
    * ``"edm_lognormal"``: :math:`\log\bar\sigma \sim N(P_{\rm mean}, P_{\rm std}^2)` (Karras et al. 2022,
      Table 1; NVlabs/edm ``EDMLoss``), by ``n``-point Gauss–Hermite, mapped to the schedule's times
      :math:`t(\lambda = -2\log\bar\sigma)` (every node must lie in the schedule's range).
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
    check_choice("kind", kind, TIME_RULES)
    n = check_int("n", n, 1)
    if kind == "uniform":
        lo = check_positive("t_lo", 1e-5 if t_lo is None else t_lo)
        hi = float(schedule.t_max if t_hi is None else t_hi)
        if not (math.isfinite(hi) and hi > lo):
            raise ValueError(f"t_hi must be finite and > t_lo = {lo!r}, got {hi!r}")
        schedule.alpha(np.array([lo, hi]))  # domain check
        x, W = roots_legendre(n)
        u = 0.5 * (math.log(hi) + math.log(lo)) + 0.5 * (math.log(hi) - math.log(lo)) * x
        t = np.exp(u)
        return t, 0.5 * (math.log(hi) - math.log(lo)) * W * t / (hi - lo)
    P_std = check_positive("P_std", P_std)
    z, w = standard_normal_nodes(1, n)
    log_sbar = float(P_mean) + P_std * z[:, 0]
    lam = -2.0 * log_sbar
    lo, hi = schedule.log_snr_range()
    if np.any(lam < lo) or np.any(lam > hi):
        raise ValueError(f"the lognormal's nodes reach sigma/alpha = {math.exp(float(np.max(log_sbar))):.3g}, outside "
                         f"{schedule!r}'s range (log-SNR in [{lo:.4g}, {hi:.4g}]); use fewer nodes or another schedule")
    return np.asarray(schedule.t_of_log_snr(lam), float), w


def _check(schedule, data):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
    if not isinstance(data, (Gaussian, GaussianMixture)):
        raise TypeError(f"data must be a refscore Gaussian or GaussianMixture, got {type(data).__name__}")


def _scores(score_fn, x, t):
    out = as_float_array(score_fn(x, t), "score_fn(x, t)")
    if out.shape != x.shape:
        raise ValueError(f"score_fn must return an array shaped like x {x.shape}, got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"score_fn returned non-finite values at t = {t!r}")
    return out


def dsm_loss(score_fn, schedule, x0, t, eps, weighting="uniform", sigma_data=0.5):
    r"""The DSM loss on given draws: :math:`\frac1n\sum_i\lambda(t_i)\lVert s(\alpha_i x_{0,i} + \sigma_i\varepsilon_i, t_i) + \varepsilon_i/\sigma_i\rVert^2`.

    ``x0`` and ``eps`` are ``(n, d)``, ``t`` a scalar or ``(n,)`` (every :math:`\sigma(t_i) > 0`);
    ``score_fn(x (m, d), t float) -> (m, d)`` is called once per distinct time.
    """
    x0 = as_float_array(x0, "x0")
    eps = as_float_array(eps, "eps")
    if x0.ndim != 2 or eps.shape != x0.shape:
        raise ValueError(f"x0 and eps must both have shape (n, d), got {x0.shape} and {eps.shape}")
    tt = np.broadcast_to(as_float_array(t, "t"), (x0.shape[0],)).astype(float)
    a, s = np.asarray(schedule.alpha(tt), float), np.asarray(schedule.sigma(tt), float)
    if np.any(s == 0.0):
        raise ValueError("every t must have sigma(t) > 0 (the target -eps/sigma is undefined at sigma = 0)")
    lam = weight(weighting, schedule, tt, sigma_data)
    xt = a[:, None] * x0 + s[:, None] * eps
    total = 0.0
    for tk in np.unique(tt):
        rows = tt == tk
        r = _scores(score_fn, xt[rows], float(tk)) + eps[rows] / s[rows][:, None]
        total += float(np.sum(lam[rows] * np.sum(r * r, axis=1)))
    return total / x0.shape[0]


def population_dsm(score_fn, schedule, data, weighting="uniform", times=None, order=None, sigma_data=0.5):
    r"""The population loss :math:`\sum_k w_k\lambda(t_k)\,E_{x_0, \varepsilon}\lVert s(x_{t_k}, t_k) + \varepsilon/\sigma_k\rVert^2`.

    The inner expectation is tensor Gauss–Hermite over :math:`(x_0, \varepsilon)`
    (:func:`refscore.quadrature.product_rule` of the data's rule and the standard normal's, ``order`` nodes per
    axis, default 4: exact for scores affine in :math:`x`, such as the exact score of Gaussian data); ``times``
    is a rule ``(t, w)`` (default :func:`time_rule` ``(schedule)``).
    """
    _check(schedule, data)
    t, w = time_rule(schedule) if times is None else (as_float_array(times[0], "times' t"),
                                                        as_float_array(times[1], "times' w"))
    if t.ndim != 1 or w.shape != t.shape:
        raise ValueError(f"times must be a pair of 1-D arrays of one length, got shapes {t.shape} and {w.shape}")
    d = data.dim
    q = 4 if order is None else order
    nodes, wq = product_rule(gauss_hermite_nodes(data, q), standard_normal_nodes(d, q))
    x0, eps = nodes[:, :d], nodes[:, d:]
    lam = np.atleast_1d(weight(weighting, schedule, t, sigma_data))
    total = 0.0
    for tk, wk, lk in zip(t, w, lam):
        a, s = schedule.alpha(float(tk)), schedule.sigma(float(tk))
        if s == 0.0:
            raise ValueError(f"t = {tk!r} has sigma = 0: the target -eps/sigma is undefined there")
        r = _scores(score_fn, a * x0 + s * eps, float(tk)) + eps / s
        total += float(wk * lk) * float(wq @ np.sum(r * r, axis=1))
    return float(total)


def irreducible(schedule, data, t):
    r"""The minimum of the DSM loss at time ``t`` on Gaussian data: :math:`d/\sigma^2 - \operatorname{tr}C^{-1}`.

    :math:`E\operatorname{tr}\mathrm{Cov}[\varepsilon/\sigma \mid x_t]` with
    :math:`\mathrm{Cov}[\varepsilon \mid x_t] = I - \sigma^2C^{-1}`, :math:`C = \alpha^2\Sigma + \sigma^2 I`
    (the same for every :math:`x_t`): per eigenvalue :math:`\ell` of :math:`\Sigma`,
    :math:`\alpha^2\ell/(\sigma^2(\alpha^2\ell + \sigma^2))`, the form computed (no cancellation as
    :math:`\sigma \to 0`).  ``t`` a scalar or an array.
    """
    _check(schedule, data)
    if not isinstance(data, Gaussian):
        raise TypeError("irreducible has a closed form for Gaussian data only; for a mixture use population_dsm "
                        "of the exact score (refscore.diffusion.Denoiser(data, schedule).score)")
    tt = as_float_array(t, "t")
    a, s = np.asarray(schedule.alpha(tt), float), np.asarray(schedule.sigma(tt), float)
    if np.any(s == 0.0):
        raise ValueError("t must have sigma(t) > 0 (the minimum is infinite at sigma = 0)")
    ell = np.linalg.eigvalsh(data.cov)
    a2, s2 = (a * a)[..., None], (s * s)[..., None]
    out = np.sum(a2 * ell / (s2 * (a2 * ell + s2)), axis=-1)
    return float(out) if out.ndim == 0 else out


def dsm_minimum(schedule, data, weighting="uniform", times=None, sigma_data=0.5):
    r"""The population minimum :math:`\sum_k w_k\lambda(t_k)\,c(t_k)` on Gaussian data, attained by the exact score."""
    t, w = time_rule(schedule) if times is None else (as_float_array(times[0], "times' t"),
                                                        as_float_array(times[1], "times' w"))
    return float(np.sum(w * np.atleast_1d(weight(weighting, schedule, t, sigma_data))
                        * np.atleast_1d(irreducible(schedule, data, t))))
