r"""The probability-flow ODE log-likelihood, exactly: the closed form for Gaussian data, a high-accuracy ODE for
mixtures, the exact moments of the Hutchinson / Skilling divergence estimates, and bits per dimension.

Derivation: docs/diffusion.md §9 (the likelihood of the probability-flow ODE).

A diffusion code computes the log-likelihood of a data point :math:`x` as the codes of Song et al. (score_sde's
``likelihood.py``) and Chen et al. (FFJORD) do: integrate, from :math:`t_\epsilon` to :math:`T`,

.. math::

    \frac{dx}{dt} = v(x, t) = f x - \tfrac12 g^2\nabla\log p_t(x) = \alpha'\hat x_0 + \sigma'\hat\varepsilon,
    \qquad \frac{d\ell}{dt} = \nabla\cdot v(x(t), t), \qquad x(t_\epsilon) = x,\ \ell(t_\epsilon) = 0,

and return :math:`\log p_{t_\epsilon}(x) = \log\pi(x(T)) + \ell(T)`: the *prior term* :math:`\log\pi(x_T)` plus
the *divergence integral* :math:`\int_{t_\epsilon}^T\nabla\cdot v\,dt` (the instantaneous change of variables,
:math:`d\log p_t(x(t))/dt = -\nabla\cdot v`).  With the exact marginal as the prior (``prior="exact"``,
:math:`\pi = p_T`) the answer is the exact :math:`\log p_{t_\epsilon}(x)`; with the practical prior
:math:`\pi = N(0, s^2 I)` (``prior=s``: score_sde uses 1 for VP and sub-VP, :math:`\sigma_{\max}` for VE) it differs
from it by :math:`\log\pi(x_T) - \log p_T(x_T)`, whose mean over the data is :math:`-\mathrm{KL}(p_T\,\|\,\pi)`.

* :func:`gaussian_likelihood`: Gaussian data :math:`N(\mu, \Sigma)`, :math:`\Sigma = V\operatorname{diag}(\ell)V^\top`.
  Per eigen-coordinate, with :math:`\delta(t) = \alpha^2\ell + \sigma^2`, the velocity's Jacobian is
  :math:`V\operatorname{diag}(\delta'/2\delta)V^\top` (constant in :math:`x`), so

  .. math::

      z(T) - \alpha_T\tilde\mu = \sqrt{\delta_T/\delta_\epsilon}\,(z - \alpha_\epsilon\tilde\mu), \qquad
      \int_{t_\epsilon}^T J_v\,dt = V\operatorname{diag}\Bigl(\tfrac12\log\frac{\delta_T}{\delta_\epsilon}\Bigr)V^\top .

* :func:`pf_ode_likelihood`: any data of :class:`~refscore.diffusion.denoiser.Denoiser` (mixtures), by
  ``scipy.integrate.solve_ivp`` (DOP853, rtol = atol = 1e-11 by default) with the exact divergence (the trace of
  :meth:`~refscore.diffusion.denoiser.Denoiser.prediction_jacobian`), optionally integrating the whole Jacobian
  :math:`\int J_v\,dt` (what the Hutchinson moments need), with an error estimate: the difference from a second
  integration at 100 times the tolerances.
* :func:`hutchinson_estimate`, :func:`hutchinson_moments`: the estimate
  :math:`\frac1m\sum_{k=1}^m z_k^\top A z_k` of :math:`\operatorname{tr}A` and its exact mean
  :math:`\operatorname{tr}A` and variance

  .. math::

      \operatorname{Var} = \frac1m\Bigl(2\lVert A_s\rVert_F^2 - 2\sum_i A_{ii}^2\Bigr)\ \ \text{(Rademacher)},
      \qquad \frac1m\,2\lVert A_s\rVert_F^2\ \ \text{(Gaussian)}, \qquad A_s = \tfrac12(A + A^\top).

  A code that draws its probes once per trajectory (FFJORD, score_sde) estimates the divergence integral by
  :math:`\frac1m\sum_k z_k^\top\bigl(\int J_v\,dt\bigr)z_k`: these formulas with :math:`A = \int J_v\,dt`.
* :func:`bits_per_dim`, :func:`log_likelihood_from_bpd`: uniform dequantisation of 8-bit data to a continuous
  scale with bin width :math:`w` (:data:`BPD_CONVENTIONS`): :math:`\text{bpd} = -(\log p(x) + d\log w)/(d\log 2)`.

References
----------
Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, ICLR 2021, App. D.2 (yang-song/score_sde,
``likelihood.py``); W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD", ICLR 2019;
M. F. Hutchinson, Comm. Stat. Simul. Comput. 19 (1990); J. Skilling, "The eigenvalues of mega-dimensional
matrices", 1989; L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative models",
ICLR 2016 (dequantisation).

Examples
--------
>>> import numpy as np
>>> from refscore.distributions import Gaussian
>>> from refscore.diffusion import VP, Denoiser
>>> from refscore.diffusion.likelihood import gaussian_likelihood
>>> D = Denoiser(Gaussian([0.0], [[2.0]]), VP())
>>> r = gaussian_likelihood(D, [[1.0]], 1e-3, 1.0, prior="exact")
>>> bool(abs(r.log_likelihood[0] - D.logpdf([1.0], 1e-3)) < 1e-14)
True
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.integrate import solve_ivp

from .._validation import as_points, check_choice, check_positive
from ..distributions import Gaussian
from .denoiser import Denoiser

__all__ = ["Likelihood", "PROBES", "BPD_CONVENTIONS", "gaussian_likelihood", "pf_ode_likelihood", "prior_logpdf",
           "hutchinson_estimate", "hutchinson_moments", "bits_per_dim", "log_likelihood_from_bpd"]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

#: the probe laws of the trace estimate (mean zero, covariance I): name -> how one probe is drawn
PROBES = {"rademacher": "z_i = +-1 with probability 1/2 each (Hutchinson 1990)",
          "gaussian": "z ~ N(0, I) (Skilling 1989)"}

#: the usual continuous scales of 8-bit data (256 levels) and their bin width w: value k in {0..255} is
#: dequantised to low + w (k + u), u ~ U[0, 1)^d, so that bpd = -(log p(x) + d log w) / (d log 2)
BPD_CONVENTIONS = {
    "[0,255]": 1.0,          # x = k + u: no rescaling (bpd = -log p / (d log 2))
    "[0,1]": 1.0 / 256.0,    # x = (k + u) / 256: score_sde with centered=False, Ho et al.'s data / 256
    "[-1,1]": 2.0 / 256.0,   # x = 2 (k + u) / 256 - 1: score_sde with centered=True (its "offset 7")
}


class Likelihood(NamedTuple):
    r"""The PF-ODE log-likelihood of ``n`` points and its parts.

    ``log_likelihood = prior_term + divergence_integral`` (each ``(n,)``); ``x_T`` ``(n, d)`` the ODE's end;
    ``jacobian_integral`` ``(n, d, d)``, :math:`\int_{t_\epsilon}^T J_v(x(t), t)\,dt` (None when not integrated);
    ``error`` ``(n,)`` the error estimate of ``log_likelihood`` (0 for the closed form); ``nfev`` ``(n,)`` the
    velocity evaluations (0 for the closed form).
    """

    log_likelihood: np.ndarray
    prior_term: np.ndarray
    divergence_integral: np.ndarray
    x_T: np.ndarray
    jacobian_integral: np.ndarray | None
    error: np.ndarray
    nfev: np.ndarray


def _check(denoiser, t_eps, t_end):
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a refscore.diffusion Denoiser (the exact one: its velocity, Jacobian and "
                        f"marginal density), got {type(denoiser).__name__}")
    sch = denoiser.schedule
    for name, t in (("t_eps", t_eps), ("t_end", t_end)):
        if np.ndim(t) != 0:
            raise ValueError(f"{name} must be a scalar time, got shape {np.shape(t)}")
        if not (np.isfinite(t) and sch.t_min <= t <= sch.t_max):
            raise ValueError(f"{name} must be a finite time in [{sch.t_min!r}, {sch.t_max!r}] for {sch!r}, got {t!r}")
    t0, t1 = float(t_eps), float(t_end)
    if not t1 > t0:
        raise ValueError(f"t_end must be > t_eps = {t0!r} (the ODE runs from the data towards the noise), "
                         f"got {t1!r}")
    if not np.isfinite(sch.d_sigma(t0)):
        raise ValueError(f"t_eps must have a finite d_sigma (the velocity), got t_eps = {t0!r} on {sch!r}")
    return t0, t1


def prior_logpdf(denoiser, x_T, t_end, prior="exact"):
    r""":math:`\log\pi(x_T)`, ``(n,)``: the exact marginal :math:`\log p_T` (``prior="exact"``) or
    :math:`\log N(x_T; 0, s^2 I) = -\frac d2\log(2\pi s^2) - \lVert x_T\rVert^2/(2s^2)` (``prior=s``, a positive float)."""
    x_T, _ = as_points(x_T, denoiser.dim, "x_T")
    if isinstance(prior, str):
        check_choice("prior", prior, ("exact",))
        return np.atleast_1d(denoiser.logpdf(x_T, t_end))
    s = check_positive("prior", prior)
    d = x_T.shape[1]
    return -0.5 * d * (_LOG_2PI + 2.0 * math.log(s)) - 0.5 * np.sum(x_T * x_T, axis=1) / (s * s)


def _check_prior(prior):
    if isinstance(prior, str):
        check_choice("prior", prior, ("exact",))
    else:
        check_positive("prior", prior)


def gaussian_likelihood(denoiser, x, t_eps, t_end, prior="exact"):
    r"""The closed-form PF-ODE log-likelihood of ``x`` at ``t_eps`` for Gaussian data (docs/diffusion.md §9.2).

    In the eigenbasis :math:`z = V^\top x` of :math:`\Sigma`, :math:`\tilde\mu = V^\top\mu`,
    :math:`\delta(t) = \alpha(t)^2\ell + \sigma(t)^2`:

    .. math::

        z_T = \alpha_T\tilde\mu + \sqrt{\delta_T/\delta_\epsilon}\,(z - \alpha_\epsilon\tilde\mu), \qquad
        \int_{t_\epsilon}^T\nabla\cdot v\,dt = \tfrac12\sum_i\log\frac{\delta_{T,i}}{\delta_{\epsilon,i}},

    and :math:`\int J_v\,dt = V\operatorname{diag}(\tfrac12\log(\delta_T/\delta_\epsilon))V^\top`; the log-ratios
    are ``log1p`` of :math:`(\delta_T - \delta_\epsilon)/\delta_\epsilon`.  ``prior`` as :func:`~refscore.diffusion.likelihood.prior_logpdf`.
    """
    t0, t1 = _check(denoiser, t_eps, t_end)
    _check_prior(prior)
    if not isinstance(denoiser.data, Gaussian):
        raise TypeError("gaussian_likelihood needs Gaussian data (a mixture's flow map has no closed form: use "
                        "pf_ode_likelihood)")
    x, _ = as_points(x, denoiser.dim, "x")
    sch = denoiser.schedule
    lam, V = np.linalg.eigh(denoiser.data.cov)
    mu = denoiser.data.mean
    a0, s0, a1, s1 = sch.alpha(t0), sch.sigma(t0), sch.alpha(t1), sch.sigma(t1)
    d0, d1 = a0 * a0 * lam + s0 * s0, a1 * a1 * lam + s1 * s1
    mt = V.T @ mu
    z = x @ V
    zT = a1 * mt + np.sqrt(d1 / d0) * (z - a0 * mt)
    x_T = zT @ V.T
    half_log = 0.5 * np.log1p((d1 - d0) / d0)
    div = np.full(x.shape[0], float(np.sum(half_log)))
    J = np.broadcast_to((V * half_log) @ V.T, (x.shape[0], denoiser.dim, denoiser.dim)).copy()
    pr = prior_logpdf(denoiser, x_T, t1, prior)
    n = x.shape[0]
    return Likelihood(pr + div, pr, div, x_T, J, np.zeros(n), np.zeros(n, dtype=np.int64))


def _integrate(denoiser, x, t0, t1, method, rtol, atol, jacobian):
    """One point: ``(x_T, divergence integral, jacobian integral or None, nfev)``."""
    d = denoiser.dim

    def rhs(t, y):
        xt = y[:d]
        v = denoiser.velocity(xt, t)
        J = denoiser.prediction_jacobian("velocity", xt, t)
        out = np.empty_like(y)
        out[:d] = v
        if jacobian:
            out[d:] = J.ravel()
        else:
            out[d] = np.trace(J)
        return out

    y0 = np.concatenate([x, np.zeros(d * d if jacobian else 1)])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            sol = solve_ivp(rhs, (t0, t1), y0, method=method, rtol=rtol, atol=atol)
        except FloatingPointError as e:
            raise FloatingPointError(f"the probability-flow ODE overflowed or produced NaN from t = {t0!r} to "
                                     f"{t1!r} ({e}): check that the point and the times are where the data's "
                                     f"noised law is defined") from None
    if sol.status != 0:
        raise FloatingPointError(f"solve_ivp ({method}) failed from t = {t0!r} to {t1!r}: {sol.message}")
    y = sol.y[:, -1]
    if jacobian:
        Jint = y[d:].reshape(d, d)
        return y[:d], float(np.trace(Jint)), Jint, sol.nfev
    return y[:d], float(y[d]), None, sol.nfev


def pf_ode_likelihood(denoiser, x, t_eps, t_end, prior="exact", *, method="DOP853", rtol=1e-11, atol=1e-11,
                      jacobian=False, error_estimate=True):
    r"""The PF-ODE log-likelihood of ``x`` at ``t_eps`` by ``scipy.integrate.solve_ivp`` (docs/diffusion.md §9.3).

    Integrates :math:`dx/dt = v`, :math:`d\ell/dt = \nabla\cdot v` (the exact divergence: the trace of the
    velocity's Jacobian, :meth:`Denoiser.prediction_jacobian`) from ``t_eps`` to ``t_end``, one point at a time
    (the answer does not depend on the batch), and adds the prior term (:func:`~refscore.diffusion.likelihood.prior_logpdf`).  With
    ``jacobian=True`` the state carries the whole :math:`\int J_v\,dt` (``d^2`` more components), whose trace is
    the divergence integral.

    ``error``: with ``error_estimate``, the difference from a second integration at ``100 rtol``, ``100 atol``,
    plus :math:`10^{-12}(1 + |\log p|)` for round-off.  DOP853's global error scales about linearly with the
    tolerance, so the looser run's error (about the difference) exceeds the tighter's about 100-fold; the tests
    check the bound against the Gaussian closed form and against the exact marginal of mixtures.  Without
    ``error_estimate`` it is NaN.
    """
    t0, t1 = _check(denoiser, t_eps, t_end)
    _check_prior(prior)
    check_choice("method", method, ("DOP853", "RK45", "RK23"))
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    x, _ = as_points(x, denoiser.dim, "x")
    n, d = x.shape
    x_T, div, nfev = np.empty((n, d)), np.empty(n), np.zeros(n, dtype=np.int64)
    Jint = np.empty((n, d, d)) if jacobian else None
    err = np.full(n, np.nan)
    for k in range(n):
        x_T[k], div[k], J, nfev[k] = _integrate(denoiser, x[k], t0, t1, method, rtol, atol, jacobian)
        if jacobian:
            Jint[k] = J
        if error_estimate:
            xl, dl, _, nl = _integrate(denoiser, x[k], t0, t1, method, 100.0 * rtol, 100.0 * atol, False)
            ll_loose = float(prior_logpdf(denoiser, xl, t1, prior)[0]) + dl
            ll = float(prior_logpdf(denoiser, x_T[k], t1, prior)[0]) + div[k]
            err[k] = abs(ll - ll_loose) + 1e-12 * (1.0 + abs(ll))
            nfev[k] += nl
    pr = prior_logpdf(denoiser, x_T, t1, prior)
    return Likelihood(pr + div, pr, div, x_T, Jint, err, nfev)


# ------------------------------------------------------------------ the trace estimates
def _square(A, name="A"):
    A = np.asarray(A, dtype=float)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be a square matrix or a stack of them (..., d, d), got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} must be finite")
    return A


def hutchinson_estimate(A, z):
    r""":math:`\frac1m\sum_{k=1}^m z_k^\top A z_k`: ``A`` ``(..., d, d)``, probes ``z`` ``(m, d)`` (the same for
    every matrix) or ``(..., m, d)``; shape ``A.shape[:-2]``.  The sum over the probes is divided by their number."""
    A = _square(A)
    z = np.asarray(z, dtype=float)
    if z.ndim < 2 or z.shape[-1] != A.shape[-1]:
        raise ValueError(f"z must have shape (m, {A.shape[-1]}) or (..., m, {A.shape[-1]}), got {z.shape}")
    return np.einsum("...ki,...ij,...kj->...", z, A, z) / z.shape[-2]


def hutchinson_moments(A, probe="rademacher", m=1):
    r"""Exact ``(mean, variance)`` of :func:`hutchinson_estimate` with ``m`` independent probes of law ``probe``
    (:data:`PROBES`) (docs/diffusion.md §9.4):

    .. math::

        E = \operatorname{tr}A, \qquad
        \operatorname{Var} = \frac1m\Bigl(2\lVert A_s\rVert_F^2 - 2\sum_iA_{ii}^2\Bigr)\ \text{(Rademacher)},\quad
        \frac2m\lVert A_s\rVert_F^2\ \text{(Gaussian)},\qquad A_s = \tfrac12(A + A^\top).
    """
    A = _square(A)
    check_choice("probe", probe, PROBES)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer (the number of probes), got {m!r}")
    As = 0.5 * (A + np.swapaxes(A, -1, -2))
    mean = np.trace(A, axis1=-2, axis2=-1)
    fro = np.sum(As * As, axis=(-2, -1))
    if probe == "gaussian":
        var = 2.0 * fro
    else:
        off = np.triu(As, 1)  # 2||A_s||^2 - 2 sum A_ii^2 = 4 sum_{i<j} (A_s)_ij^2, no cancellation
        var = 4.0 * np.sum(off * off, axis=(-2, -1))
    return mean, var / m


# ------------------------------------------------------------------ bits per dimension
def _width(convention, bin_width):
    if bin_width is not None:
        if convention is not None:
            raise ValueError("give convention or bin_width, not both")
        return check_positive("bin_width", bin_width)
    check_choice("convention", convention, BPD_CONVENTIONS)
    return BPD_CONVENTIONS[convention]


def bits_per_dim(log_likelihood, dim, convention="[-1,1]", bin_width=None):
    r"""Bits per dimension of a continuous log-density on uniformly dequantised 8-bit data (docs/diffusion.md §9.5):

    .. math::

        \text{bpd} = \frac{-\log p(x) - d\log w}{d\log 2},

    :math:`w` the bin width of ``convention`` (:data:`BPD_CONVENTIONS`: ``"[-1,1]"`` gives
    :math:`(-\log p + d\log128)/(d\log2)`, score_sde's centred data) or ``bin_width``.  With
    :math:`x = \text{low} + w(k + u)`, :math:`u \sim U[0,1)^d`, :math:`-\log P(k) \le E_u[-\log p(x)] - d\log w`
    (Jensen): the bpd of one dequantised draw is an unbiased estimate of an upper bound on the discrete model's.
    """
    w = _width(convention if bin_width is None else None, bin_width)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    ll = np.asarray(log_likelihood, dtype=float)
    return (-ll - dim * math.log(w)) / (dim * _LOG_2)


def log_likelihood_from_bpd(bpd, dim, convention="[-1,1]", bin_width=None):
    r"""The inverse of :func:`bits_per_dim`: :math:`\log p(x) = -d\,(\text{bpd}\log 2 + \log w)`."""
    w = _width(convention if bin_width is None else None, bin_width)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return -dim * (np.asarray(bpd, dtype=float) * _LOG_2 + math.log(w))
