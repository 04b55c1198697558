r"""The five things a diffusion network may predict, converted exactly into one another; EDM's preconditioning.

Derivation: docs/diffusion.md §3 (parametrisations) and §4 (EDM preconditioning).

At a point :math:`x = \alpha x_0 + \sigma\varepsilon` of a schedule (:mod:`refscore.diffusion.schedules`),
a prediction is one of

==============  ======================================================================
``x0``          :math:`\hat x_0 \approx E[x_0 \mid x]` (the denoiser :math:`D`)
``eps``         :math:`\hat\varepsilon \approx E[\varepsilon \mid x]`
``v``           :math:`\hat v = \alpha\hat\varepsilon - \sigma\hat x_0` (Salimans & Ho 2022; diffusers' ``v_prediction``)
``score``       :math:`\hat s \approx \nabla_x \log p_t(x) = -\hat\varepsilon/\sigma`
``velocity``    :math:`\hat u = \alpha'\hat x_0 + \sigma'\hat\varepsilon`, the probability-flow ODE's :math:`dx/dt`
==============  ======================================================================

Each is linear in :math:`(\hat x_0, \hat\varepsilon)` given :math:`x`, and the constraint
:math:`x = \alpha\hat x_0 + \sigma\hat\varepsilon` makes the pair recoverable from any one of them:

.. math::

    \text{eps:}\ \hat x_0 = \frac{x - \sigma\hat\varepsilon}{\alpha}, \qquad
    \text{x0:}\ \hat\varepsilon = \frac{x - \alpha\hat x_0}{\sigma}, \qquad
    \text{score:}\ \hat\varepsilon = -\sigma\hat s,\ \hat x_0 = \frac{x + \sigma^2\hat s}{\alpha},

    \text{v:}\ \hat x_0 = \frac{\alpha x - \sigma\hat v}{\alpha^2 + \sigma^2},\ \
    \hat\varepsilon = \frac{\sigma x + \alpha\hat v}{\alpha^2 + \sigma^2}, \qquad
    \text{velocity:}\ \hat x_0 = \frac{\sigma' x - \sigma\hat u}{\alpha\sigma' - \sigma\alpha'},\ \
    \hat\varepsilon = \frac{\alpha\hat u - \alpha' x}{\alpha\sigma' - \sigma\alpha'} .

(:math:`\alpha\sigma' - \sigma\alpha' = -\tfrac12\alpha\sigma\lambda' > 0`.)  :func:`convert_prediction`
goes through :math:`(\hat x_0, \hat\varepsilon)`; a conversion that would divide by a zero
:math:`\alpha` or :math:`\sigma` raises ``ValueError`` instead of returning ``inf``/``NaN``.

References
----------
J. Ho, A. Jain, P. Abbeel, NeurIPS 2020 (eps); T. Salimans, J. Ho, "Progressive distillation for fast sampling
of diffusion models", ICLR 2022 (v); Song et al., ICLR 2021 (score, probability-flow ODE); Lipman et al.,
ICLR 2023 (velocity); Karras et al., NeurIPS 2022, Table 1 (preconditioning).

Examples
--------
>>> from refscore.diffusion.parametrisations import convert_prediction
>>> float(convert_prediction(0.5, "eps", "x0", x=1.0, alpha=0.6, sigma=0.8))   # (1 - 0.8 * 0.5) / 0.6
1.0
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import as_float_array, check_choice, check_positive

__all__ = ["PARAMETRISATIONS", "Parametrisation", "to_x0_eps", "from_x0_eps", "velocity_derivatives",
           "convert_prediction", "EDMPreconditioning", "edm_preconditioning"]


def _coef(value, name, x):
    """A schedule coefficient as an array broadcasting against ``x``: a scalar, or one per point of ``x (n, d)``."""
    c = as_float_array(value, name)
    if np.any(np.isnan(c)):
        raise ValueError(f"{name} must not be NaN")
    if c.ndim == 1 and x.ndim == 2 and c.shape[0] == x.shape[0]:
        return c[:, None]
    if c.ndim and c.shape != x.shape:
        raise ValueError(f"{name} must be a scalar, one value per point (shape ({x.shape[0]},)) or shaped like x, "
                         f"got shape {c.shape} for x of shape {x.shape}")
    return c


def _nonzero(c, name, why):
    if np.any(c == 0.0):
        raise ValueError(f"{name} must be non-zero here: {why}")
    return c


def _needs(d, name, kind):
    if d is None:
        raise ValueError(f"{name} is needed for the '{kind}' parametrisation (velocity = d_alpha x0 + d_sigma eps)")
    return d


# ------------------------------------------------------------------ to (x0, eps)
def _x0_to(pred, x, a, s, da, ds):
    return pred, (x - a * pred) / _nonzero(s, "sigma", "eps = (x - alpha x0) / sigma")


def _eps_to(pred, x, a, s, da, ds):
    return (x - s * pred) / _nonzero(a, "alpha", "x0 = (x - sigma eps) / alpha"), pred


def _score_to(pred, x, a, s, da, ds):
    return (x + s * s * pred) / _nonzero(a, "alpha", "x0 = (x + sigma^2 score) / alpha"), -s * pred


def _v_to(pred, x, a, s, da, ds):
    n = a * a + s * s
    return (a * x - s * pred) / n, (s * x + a * pred) / n


def _velocity_to(pred, x, a, s, da, ds):
    det = a * _needs(ds, "d_sigma", "velocity") - s * _needs(da, "d_alpha", "velocity")
    det = _nonzero(det, "alpha d_sigma - sigma d_alpha", "the velocity determines (x0, eps) only where it is not 0")
    return (ds * x - s * pred) / det, (a * pred - da * x) / det


# ---------------------------------------------------------------- from (x0, eps)
def _x0_from(x0, eps, x, a, s, da, ds):
    return x0


def _eps_from(x0, eps, x, a, s, da, ds):
    return eps


def _score_from(x0, eps, x, a, s, da, ds):
    return -eps / _nonzero(s, "sigma", "score = -eps / sigma")


def _v_from(x0, eps, x, a, s, da, ds):
    return a * eps - s * x0


def _velocity_from(x0, eps, x, a, s, da, ds):
    return _needs(da, "d_alpha", "velocity") * x0 + _needs(ds, "d_sigma", "velocity") * eps


class Parametrisation(NamedTuple):
    """A registry row: ``to(pred, x, a, s, da, ds) -> (x0, eps)`` and ``frm(x0, eps, x, a, s, da, ds) -> pred``."""

    to: object
    frm: object


#: the five parametrisations (the registry every consumer reads)
PARAMETRISATIONS = {
    "x0": Parametrisation(_x0_to, _x0_from),
    "eps": Parametrisation(_eps_to, _eps_from),
    "v": Parametrisation(_v_to, _v_from),
    "score": Parametrisation(_score_to, _score_from),
    "velocity": Parametrisation(_velocity_to, _velocity_from),
}


def _inputs(pred, x, alpha, sigma, d_alpha, d_sigma):
    x = as_float_array(x, "x")
    pred = as_float_array(pred, "prediction")
    if pred.shape != x.shape:
        raise ValueError(f"prediction must have the shape of x {x.shape}, got {pred.shape}")
    a, s = _coef(alpha, "alpha", x), _coef(sigma, "sigma", x)
    if np.any(s < 0):
        raise ValueError("sigma must be >= 0")
    da = None if d_alpha is None else _coef(d_alpha, "d_alpha", x)
    ds = None if d_sigma is None else _coef(d_sigma, "d_sigma", x)
    return pred, x, a, s, da, ds


def to_x0_eps(kind, prediction, x, alpha, sigma, d_alpha=None, d_sigma=None):
    r"""``(x0, eps)`` from a prediction of kind ``kind`` at ``x`` (the formulas of the module docstring).

    ``alpha``, ``sigma`` (and ``d_alpha``, ``d_sigma`` for ``"velocity"``) are scalars or one value per
    point of ``x`` of shape ``(n, d)``.
    """
    check_choice("kind", kind, PARAMETRISATIONS)
    with np.errstate(divide="ignore", invalid="ignore"):
        return PARAMETRISATIONS[kind].to(*_inputs(prediction, x, alpha, sigma, d_alpha, d_sigma))


def velocity_derivatives(schedule, t):
    r"""``(d_alpha, d_sigma)`` of ``schedule`` at the times ``t`` (n,), as (n, 1) columns: what the ``"velocity"``
    row needs, :math:`\alpha'\hat x_0 + \sigma'\hat\varepsilon`.  ``ValueError`` where :math:`\sigma'` is not
    finite (a schedule with :math:`\sigma \sim \sqrt t` at :math:`t = 0`), never an infinite velocity."""
    with np.errstate(divide="ignore"):
        da = np.asarray(schedule.d_alpha(t), float)[:, None]
        ds = np.asarray(schedule.d_sigma(t), float)[:, None]
    if not np.all(np.isfinite(ds)):
        raise ValueError(f"t must have a finite d_sigma(t) for the velocity ({schedule!r} has sigma ~ sqrt(t) at "
                         f"t = 0), got t = {float(np.min(t))!r}")
    return da, ds


def from_x0_eps(kind, x0, eps, x, alpha, sigma, d_alpha=None, d_sigma=None):
    r"""The prediction of kind ``kind`` made of ``(x0, eps)`` at ``x``."""
    check_choice("kind", kind, PARAMETRISATIONS)
    x0, x, a, s, da, ds = _inputs(x0, x, alpha, sigma, d_alpha, d_sigma)
    eps = as_float_array(eps, "eps")
    if eps.shape != x.shape:
        raise ValueError(f"eps must have the shape of x {x.shape}, got {eps.shape}")
    return PARAMETRISATIONS[kind].frm(x0, eps, x, a, s, da, ds)


def convert_prediction(prediction, source, target, x, alpha, sigma, d_alpha=None, d_sigma=None):
    r"""A ``source`` prediction at ``x`` rewritten as a ``target`` one: ``from_x0_eps(target, *to_x0_eps(source, ...))``.

    Exact algebra (docs/diffusion.md §3); ``d_alpha`` and ``d_sigma`` are needed when either kind is
    ``"velocity"``.
    """
    check_choice("source", source, PARAMETRISATIONS)
    check_choice("target", target, PARAMETRISATIONS)
    x0, eps = to_x0_eps(source, prediction, x, alpha, sigma, d_alpha, d_sigma)
    return from_x0_eps(target, x0, eps, x, alpha, sigma, d_alpha, d_sigma)


# ------------------------------------------------------------------ EDM
class EDMPreconditioning(NamedTuple):
    """Karras et al. 2022, Table 1: ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` and the loss weight."""

    c_skip: np.ndarray
    c_out: np.ndarray
    c_in: np.ndarray
    c_noise: np.ndarray
    weight: np.ndarray


def edm_preconditioning(sigma, sigma_data=0.5) -> EDMPreconditioning:
    r"""EDM's preconditioning and loss weight at noise level ``sigma`` (Karras et al. 2022, Table 1).

    .. math::

        c_{\rm skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_{\rm out} = \frac{\sigma\sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\rm in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\rm noise} = \tfrac14\ln\sigma, \quad
        \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\sigma_d)^2} .

    Why (docs/diffusion.md §4): :math:`c_{\rm in}` gives the network input :math:`c_{\rm in}(x_0 + n)` unit
    variance when :math:`\mathrm{Var}\,x_0 = \sigma_d^2`; :math:`c_{\rm skip}` minimises, and
    :math:`c_{\rm out}` then normalises to 1, the variance of the effective target
    :math:`F^* = (x_0 - c_{\rm skip}(x_0 + n))/c_{\rm out}`; and :math:`\lambda c_{\rm out}^2 = 1`, so the
    loss :math:`\lambda\lVert D - x_0\rVert^2 = \lVert F - F^*\rVert^2` weighs every noise level alike.
    ``sigma`` is a scalar or an array (> 0: ``c_noise`` needs the log).

    Examples
    --------
    >>> from refscore.diffusion.parametrisations import edm_preconditioning
    >>> p = edm_preconditioning(0.5)       # sigma = sigma_data: c_skip = 1/2, weight * c_out^2 = 1
    >>> float(p.c_skip), round(float(p.weight * p.c_out ** 2), 15)
    (0.5, 1.0)
    """
    s = as_float_array(sigma, "sigma")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    sd = check_positive("sigma_data", sigma_data)
    tot = s * s + sd * sd
    root = np.sqrt(tot)
    return EDMPreconditioning(c_skip=sd * sd / tot, c_out=s * sd / root, c_in=1.0 / root,
                              c_noise=0.25 * np.log(s), weight=tot / (s * sd) ** 2)
