r"""The five score-matching losses and NCSN's multi-noise objective.

Every function returns the mean over the batch (``reduction="mean"``) or the
per-point values (``reduction="none"``), and with ``grad=True`` the pair
``(value, grad_theta)``.  Gradients over ``theta`` are assembled ONLY from the
model primitives of :mod:`refscore.models.base` (docs/derivations.md §2),
through one weighted kernel, :func:`loss_terms`.  With :math:`J = \nabla_x s_\theta(x)` and weights :math:`w_k = 1/n`:

=======  ================================  ==========================================================
loss     per-point value                   gradient over :math:`\theta`
=======  ================================  ==========================================================
ESM      ½‖s − t‖²                         ``score_vjp_params(ct = w (s − t))``
ISM      tr J + ½‖s‖²                      ``trace_grad_params(w) + score_vjp_params(ct = w s)``
DSM      ½‖s(x+σε) + ε/σ‖²                 ``score_vjp_params`` at x+σε, ``ct = w (s + ε/σ)``
SSM      vᵀJv + ½(vᵀs)²                    ``vjv_grad_params(v, w) + score_vjp_params(ct = w (vᵀs) v)``
SSM-VR   vᵀJv + ½‖s‖²                      ``vjv_grad_params(v, w) + score_vjp_params(ct = w s)``
=======  ================================  ==========================================================

Equation numbers (1)–(7) are those of docs/derivations.md §1 (and the README).

References
----------
A. Hyvärinen, "Estimation of non-normalized statistical models by score
matching", JMLR 6 (2005).  P. Vincent, "A connection between score matching and
denoising autoencoders", Neural Computation 23 (2011).  Y. Song, S. Garg, J. Shi,
S. Ermon, "Sliced score matching", UAI 2019.  Y. Song, S. Ermon, "Generative
modeling by estimating gradients of the data distribution", NeurIPS 2019.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._kernels.ids import LossKind
from ._validation import (
    as_float_array,
    as_points,
    as_rng,
    check_choice,
    check_finite,
    check_positive,
    check_theta,
)

__all__ = ["esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi", "projections", "loss_terms", "dsm_terms",
           "Loss", "LOSSES", "PER_POINT_LOSSES", "Projection", "PROJECTIONS", "LossKind"]

_REDUCTIONS = ("mean", "none")
_WEIGHTINGS = ("sigma2", "none")


# --------------------------------------------------------------------------- checks
def _check_common(model, theta, x, reduction, grad):
    check_choice("reduction", reduction, _REDUCTIONS)
    if grad and reduction != "mean":
        raise ValueError(f"grad=True needs reduction='mean' (the gradient of the mean loss), got reduction={reduction!r}")
    theta = model._check_theta(theta)
    x, single = model._points(x)
    return theta, x, single


def _check_result(name, per, grad_theta=None, value=None, where="this theta and x"):
    """``FloatingPointError`` if a loss computed from finite inputs is not finite.

    Every input has been checked finite, so a NaN or infinity here is float64
    overflow inside the model or the loss (e.g. ``theta ~ 1e200``: ``½‖s‖²`` is
    beyond 1.8e308); it is reported, never returned.
    """
    bad = int(np.size(per) - np.count_nonzero(np.isfinite(per)))
    what = None
    if bad:
        what = f"{bad} of {np.size(per)} per-point value(s) are non-finite"
    elif value is not None and not np.isfinite(value):
        what = f"the mean is {value!r}"
    elif grad_theta is not None and not np.all(np.isfinite(grad_theta)):
        what = "the gradient over theta is non-finite"
    if what is not None:
        place = where() if callable(where) else where  # a callable: its words cost nothing unless needed
        raise FloatingPointError(
            f"{name}: float64 overflow: {what} although every input is finite; the model's "
            f"scores or their derivatives exceed float64's range at {place}"
        )


def _finish(per, grad_theta, single, reduction, grad, name="loss", where="this theta and x"):
    """Reduce per-point values; ``grad_theta`` is already the gradient of the mean.

    ``where`` names the points the model was evaluated at, for the overflow message (a string, or a
    callable returning one, evaluated only when the message is written).
    """
    if reduction == "none":
        _check_result(name, per, where=where)
        return per[0] if single else per
    with np.errstate(over="ignore"):
        value = float(np.mean(per))
    _check_result(name, per, grad_theta if grad else None, value, where=where)
    return (value, grad_theta) if grad else value


def _as_projections(v, n, d, single):
    """``v`` as ``(m, n, d)``: accepts ``(n, d)``/``(m, n, d)`` (``(d,)``/``(m, d)`` for one point)."""
    arr = as_float_array(v, "v")
    if single and arr.ndim in (1, 2) and arr.shape[-1] == d:
        arr = arr.reshape(-1, 1, d) if arr.ndim == 2 else arr[None, None, :]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n, d) or arr.shape[0] < 1:
        want = f"({d},) or (m, {d})" if single else f"({n}, {d}) or (m, {n}, {d})"
        raise ValueError(f"v must have shape {want} to match x, got shape {np.shape(v)}")
    check_finite("v", arr)
    return arr


# ---------------------------------------------------------- the weighted kernel
# Every loss (sample or population, refscore.quadrature) comes through
# loss_terms: clean arrays and per-point weights w (any non-negative weights:
# 1/n for the batch mean, quadrature weights for population losses); it returns
# the per-point values and, if grad, the gradient of sum_k w_k value_k.


def loss_terms(kind, model, theta, x, w, aux=None, grad=False):
    r"""Per-point terms of one loss and, with ``grad``, the gradient of their ``w``-weighted sum.

    The one place the losses meet the models (docs/derivations.md §2):

    ==========  =======================  ===================================  ==========================================
    ``kind``    ``aux``                  per-point term                       gradient assembled from the primitives
    ==========  =======================  ===================================  ==========================================
    RESIDUAL    target ``t`` (n, d)      ½‖s − t‖²                            ``score_vjp_params(w (s − t))``
    DENOISING   ``(σ, z)``, z (n, d)     ½‖s(x + σz) + z/σ‖²                  RESIDUAL at x̃ = x + σz, t = −z/σ
    ISM         ``None``                 tr J + ½‖s‖²                         ``trace_grad_params(w) + score_vjp_params(w s)``
    SSM         ``v`` (m, n, d)          vᵀJv + ½(vᵀs)²                       ``vjv_grad_params(v, W) + score_vjp_params(Σ W (vᵀs) v)``
    SSM_VR      ``v`` (m, n, d)          vᵀJv + ½‖s‖²                         ``vjv_grad_params(v, W) + score_vjp_params(Σ W s)``
    ==========  =======================  ===================================  ==========================================

    For the sliced kinds ``w`` is ``(m, n)`` and the terms are ``(m, n)``.  When
    the gradient is wanted and the model offers a fused pass
    (``model._fused_terms``, declared in :mod:`refscore.models.base`), that one
    pass is used instead; it returns the same numbers to round-off (tested).

    Parameters
    ----------
    kind : LossKind
    model : ScoreModel
    theta : (P,) float64
    x : (n, d) float64
    w : (n,) or (m, n) float64
    aux : array or None
    grad : bool

    Returns
    -------
    ``(per, grad_theta)``; ``grad_theta`` is ``None`` unless ``grad``.
    """
    kind = LossKind(kind)
    if grad:
        fused = model._fused_terms(kind, theta, x, w, aux)
        if fused is not None:
            return fused
    if kind == LossKind.DENOISING:  # exactly: s − (−z/σ) = s + z/σ
        sigma, z = aux
        kind, x, aux = LossKind.RESIDUAL, x + sigma * z, -z / sigma
    if kind == LossKind.RESIDUAL:
        r = model._score(theta, x) - aux
        per = 0.5 * np.einsum("nd,nd->n", r, r)
        return per, (model._score_vjp_params(theta, x, w[:, None] * r) if grad else None)
    if kind == LossKind.ISM:
        s = model._score(theta, x)
        per = model._score_trace(theta, x) + 0.5 * np.einsum("nd,nd->n", s, s)
        g = None
        if grad:
            g = model._trace_grad_params(theta, x, w) + model._score_vjp_params(theta, x, w[:, None] * s)
        return per, g
    v, W = aux, w
    m, n, d = v.shape
    s = model._score(theta, x)
    xt = np.broadcast_to(x, (m, n, d)).reshape(m * n, d)
    vf = v.reshape(m * n, d)
    vjv = np.einsum("kd,kd->k", vf, model._score_jvp(theta, xt, vf)).reshape(m, n)
    if kind == LossKind.SSM_VR:
        per = vjv + 0.5 * np.einsum("nd,nd->n", s, s)[None, :]
    else:
        vs = np.einsum("mnd,nd->mn", v, s)
        per = vjv + 0.5 * vs**2
    g = None
    if grad:
        if kind == LossKind.SSM_VR:
            ct = W.sum(axis=0)[:, None] * s
        else:
            ct = np.einsum("mn,mnd->nd", W * vs, v)
        g = model._vjv_grad_params(theta, xt, vf, W.ravel()) + model._score_vjp_params(theta, x, ct)
    return per, g


def dsm_terms(model, theta, x, sigma, eps, w, grad):
    """DSM is ESM at x̃ = x + σε with target t = −ε/σ: ½‖s(x̃) + ε/σ‖² (kind ``DENOISING``, which a fused
    pass forms where it reads each point, without the two (n, d) arrays)."""
    return loss_terms(LossKind.DENOISING, model, theta, x, w, (sigma, eps), grad)


# ------------------------------------------------------------------------ public losses
def esm(model, theta, x, target_score, reduction="mean", grad=False):
    r"""Explicit score matching, eq. (2) (and eq. (5) on a noised target).

    .. math::

        J_{ESM}(\theta) = \frac12\,\mathbb E_{p}\,\lVert s_\theta(x) - t(x)\rVert^2 ,
        \qquad
        \nabla_\theta J = \mathbb E\big[(s_\theta - t)^\top \partial_\theta s_\theta\big]
        = \texttt{score\_vjp\_params}(ct = w\,(s_\theta - t)).

    Parameters
    ----------
    model : ScoreModel
    theta : (P,) array
    x : (n, d) or (d,) array
        Points drawn from the data distribution :math:`p`.
    target_score : (n, d) array or callable
        The data score :math:`t(x) = \nabla_x\log p(x)` at ``x``, or a function
        ``x -> (n, d)`` (a distribution's ``score``, a bound model's ``score``).
    reduction : {"mean", "none"}
    grad : bool
        Also return :math:`\nabla_\theta` of the mean (needs ``reduction="mean"``).

    Returns
    -------
    float, or ``(n,)`` with ``reduction="none"``; ``(value, grad (P,))`` if ``grad``.

    References
    ----------
    Eq. (2); Hyvärinen (2005), JMLR 6, eq. (2).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> m = LinearScore(1)
    >>> esm(m, m.init(), np.array([[1.0]]), np.array([[0.0]]))
    0.5
    """
    theta, x, single = _check_common(model, theta, x, reduction, grad)
    n = x.shape[0]
    t = target_score(x) if callable(target_score) else target_score
    t = model._like_points(t, n, single and not callable(target_score), "target_score")
    per, g = loss_terms(LossKind.RESIDUAL, model, theta, x, np.full(n, 1.0 / n), t, grad)
    return _finish(per, g, single, reduction, grad, "esm")


def ism(model, theta, x, reduction="mean", grad=False):
    r"""Implicit score matching (Hyvärinen 2005), eq. (3).

    .. math::

        J_{ISM}(\theta) = \mathbb E_p\Big[\operatorname{tr}\nabla_x s_\theta(x)
            + \tfrac12\lVert s_\theta(x)\rVert^2\Big]
        = J_{ESM}(\theta) - \tfrac12\mathbb E_p\lVert\nabla_x\log p\rVert^2 .

    Gradient: :math:`\nabla_\theta \operatorname{tr}J` is the primitive
    ``trace_grad_params``; :math:`\nabla_\theta \tfrac12\lVert s\rVert^2 = s^\top\partial_\theta s`
    is ``score_vjp_params(ct = w s)``.

    Parameters
    ----------
    model, theta, x, reduction, grad
        As in :func:`esm`.

    References
    ----------
    Eq. (3); Hyvärinen (2005), JMLR 6, Theorem 1, eq. (4).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> m = LinearScore(1)
    >>> ism(m, m.init(), np.array([[1.0]]))  # -1 + 0.5 * 1
    -0.5
    """
    theta, x, single = _check_common(model, theta, x, reduction, grad)
    n = x.shape[0]
    per, g = loss_terms(LossKind.ISM, model, theta, x, np.full(n, 1.0 / n), None, grad)
    return _finish(per, g, single, reduction, grad, "ism")


def dsm(model, theta, x, sigma, eps, reduction="mean", grad=False):
    r"""Denoising score matching (Vincent 2011), eq. (6) with :math:`\epsilon = \sigma z`.

    .. math::

        J_{DSM}(\theta) = \frac12\,\mathbb E_{x\sim p,\,z\sim\mathcal N(0,I)}
            \Big\lVert s_\theta(x + \sigma z) + \frac{z}{\sigma}\Big\rVert^2 .

    The seed writes :math:`\epsilon\sim\mathcal N(0,\sigma^2 I)` and target
    :math:`-\epsilon/\sigma^2`; here the caller passes the *standard* normal
    ``eps`` :math:`= z`, so the target :math:`\nabla_{\tilde x}\log p(\tilde x|x) = -z/\sigma`
    (docs/derivations.md §1).  The loss is deterministic given ``eps``.  In expectation
    it equals ESM against :math:`p_\sigma = p * \mathcal N(0,\sigma^2 I)` plus
    :math:`\tfrac12(d/\sigma^2 - \mathbb E_{p_\sigma}\lVert\nabla\log p_\sigma\rVert^2)`.

    Gradient: the target does not depend on :math:`\theta`, so
    :math:`\nabla_\theta = \mathbb E[(s_\theta(\tilde x) + z/\sigma)^\top \partial_\theta s_\theta(\tilde x)]`,
    i.e. ``score_vjp_params`` at :math:`\tilde x = x + \sigma z` with ``ct = w (s + z/σ)``.

    Parameters
    ----------
    model, theta, x, reduction, grad
        As in :func:`esm`.
    sigma : float > 0
        Noise standard deviation.
    eps : array like ``x``
        Standard normal draws :math:`z`, one per point.

    References
    ----------
    Eq. (5)-(6); Vincent (2011), Neural Computation 23, eq. (11)-(12).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> m = LinearScore(1)
    >>> dsm(m, m.init(), np.array([[0.0]]), 1.0, np.array([[1.0]]))  # s(1) + 1 = 0
    0.0
    """
    theta, x, single = _check_common(model, theta, x, reduction, grad)
    sigma = check_positive("sigma", sigma)
    _check_multi_sigma_range(np.array([sigma]), "none", name="sigma")
    n = x.shape[0]
    eps = model._like_points(eps, n, single, "eps")
    # an overflow here is reported below as a FloatingPointError naming its place, not as a warning
    with np.errstate(over="ignore", invalid="ignore"):
        per, g = dsm_terms(model, theta, x, sigma, eps, np.full(n, 1.0 / n), grad)

    def where():  # the noised points' reach, computed only when an overflow is reported
        with np.errstate(over="ignore", invalid="ignore"):
            reach = float(np.max(np.abs(x + sigma * eps)))
        return (f"this theta and the noised points x + sigma*eps (sigma = {sigma:g}; their largest "
                f"|coordinate| is {reach:.3g})")
    return _finish(per, g, single, reduction, grad, "dsm", where=where)


def _sliced(model, theta, x, v, reduction, grad, variance_reduced):
    theta, x, single = _check_common(model, theta, x, reduction, grad)
    n, d = x.shape
    v = _as_projections(v, n, d, single)
    m = v.shape[0]
    kind = LossKind.SSM_VR if variance_reduced else LossKind.SSM
    per_mn, g = loss_terms(kind, model, theta, x, np.full((m, n), 1.0 / (m * n)), v, grad)
    return _finish(per_mn.mean(axis=0), g, single, reduction, grad, kind.name.lower())


def ssm(model, theta, x, v, reduction="mean", grad=False):
    r"""Sliced score matching (Song et al. 2019), eq. (7), second line.

    .. math::

        J_{SSM}(\theta) = \mathbb E_{p_v}\mathbb E_p\Big[v^\top\nabla_x s_\theta(x)\,v
            + \tfrac12\big(v^\top s_\theta(x)\big)^2\Big], \qquad \mathbb E[vv^\top] = I .

    Since :math:`\mathbb E_v[v^\top J v] = \operatorname{tr}J` and
    :math:`\mathbb E_v[(v^\top s)^2] = \lVert s\rVert^2`, its expectation over
    ``v`` is ISM (eq. (3)).

    Gradient: :math:`\nabla_\theta v^\top J v` is the primitive ``vjv_grad_params``;
    :math:`\nabla_\theta\tfrac12(v^\top s)^2 = (v^\top s)\,v^\top\partial_\theta s` is
    ``score_vjp_params(ct = w (vᵀs) v)``, the cotangents of the ``m``
    projections of a point summed before one call.

    Parameters
    ----------
    model, theta, x, reduction, grad
        As in :func:`esm`.
    v : (n, d) or (m, n, d) array
        Projection directions (see :func:`projections`); with ``m`` per point
        the loss averages over them, and ``reduction="none"`` returns ``(n,)``.

    References
    ----------
    Eq. (7); Song, Garg, Shi & Ermon (2019), UAI, eq. (6)-(8).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> m = LinearScore(2)
    >>> ssm(m, m.init(), np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))  # -2 + 0.5 * 1
    -1.5
    """
    return _sliced(model, theta, x, v, reduction, grad, variance_reduced=False)


def ssm_vr(model, theta, x, v, reduction="mean", grad=False):
    r"""Sliced score matching with variance reduction, eq. (7), third line.

    .. math::

        J_{SSM\text{-}VR}(\theta) = \mathbb E_{p_v}\mathbb E_p\Big[v^\top\nabla_x s_\theta(x)\,v
            + \tfrac12\lVert s_\theta(x)\rVert^2\Big] ,

    the projected second term of :func:`ssm` replaced by its exact expectation
    over ``v`` (valid when :math:`\mathbb E[vv^\top] = I`).

    Gradient: ``vjv_grad_params(v, w) + score_vjp_params(ct = w s)`` (with the
    weights of the ``m`` projections of a point summed in ``ct``).

    Parameters
    ----------
    model, theta, x, v, reduction, grad
        As in :func:`ssm`.

    References
    ----------
    Eq. (7); Song, Garg, Shi & Ermon (2019), UAI, eq. (8) (SSM-VR).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> m = LinearScore(2)
    >>> ssm_vr(m, m.init(), np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))  # -2 + 0.5 * 1
    -1.5
    """
    return _sliced(model, theta, x, v, reduction, grad, variance_reduced=True)


def dsm_multi(model, theta, x, sigmas, labels, eps, weighting="sigma2", reduction="mean", grad=False):
    r"""NCSN's multi-noise denoising objective (Song & Ermon 2019, eq. (5)-(6)).

    .. math::

        \mathcal L(\theta) = \frac1n\sum_k \lambda(\sigma_{i_k})\,\frac12
            \Big\lVert s_\theta(x_k + \sigma_{i_k}\epsilon_k,\ \sigma_{i_k})
            + \frac{\epsilon_k}{\sigma_{i_k}}\Big\rVert^2 ,
        \qquad \sigma_{i_k} = \texttt{sigmas[labels[k]]},

    with :math:`\lambda(\sigma) = \sigma^2` (``weighting="sigma2"``, NCSN's
    choice, which makes every level's term of order one) or :math:`\lambda = 1`
    (``weighting="none"``).  Each term is eq. (6) at its own noise level.

    Gradient: ``model.score_vjp_params(theta, x̃, σ, ct = w λ(σ) (s + ε/σ))`` at
    :math:`\tilde x_k = x_k + \sigma_{i_k}\epsilon_k` -- only the two primitives
    ``score(theta, x, sigma)`` and ``score_vjp_params(theta, x, sigma, ct)`` of
    a noise-conditional model (e.g. ``NoiseConditional``) are used.

    Parameters
    ----------
    model : noise-conditional model
        Has ``dim``, ``n_params``, ``score(theta, x, sigma)`` and
        ``score_vjp_params(theta, x, sigma, ct)`` with ``sigma`` of shape ``(n,)``.
    theta : (P,) array
    x : (n, d) or (d,) array
    sigmas : (L,) array of positive floats
        The noise levels, at least 1e-150 (below, :math:`\lVert\epsilon/\sigma\rVert^2`
        overflows float64) and, with ``weighting="sigma2"``, at most 1e150 (above,
        the weight :math:`\sigma^2` does): ValueError otherwise.
    labels : (n,) integer array with values in ``[0, L)``
        The level of each point.
    eps : array like ``x``
        Standard normal draws.
    weighting : {"sigma2", "none"}
    reduction, grad
        As in :func:`esm`.

    References
    ----------
    Song & Ermon (2019), NeurIPS, eq. (5)-(6); eq. (6).

    Examples
    --------
    >>> import numpy as np
    >>> class Scaled:  # s(x, sigma) = -x / sigma**2, the exact score of N(0, sigma^2)
    ...     dim, n_params = 1, 1
    ...     def score(self, theta, x, sigma):
    ...         return -theta[0] * x / np.asarray(sigma)[:, None] ** 2
    >>> dsm_multi(Scaled(), np.array([1.0]), np.zeros((1, 1)), [1.0, 2.0], [1], np.ones((1, 1)))
    0.0
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("weighting", weighting, _WEIGHTINGS)
    if grad and reduction != "mean":
        raise ValueError(f"grad=True needs reduction='mean' (the gradient of the mean loss), got reduction={reduction!r}")
    theta = check_theta(theta, model.n_params, getattr(model, "layout", ""))
    x, single = as_points(x, model.dim)
    n, d = x.shape
    sigmas = as_float_array(sigmas, "sigmas")
    if sigmas.ndim != 1 or sigmas.size < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D array, got shape {sigmas.shape}")
    if not np.all(np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError(f"sigmas must be finite and > 0, got {sigmas!r}")
    _check_multi_sigma_range(sigmas, weighting)
    labels = np.asarray(labels)
    if single and labels.ndim == 0:
        labels = labels[None]
    if not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match x, got shape {labels.shape}")
    if np.any(labels < 0) or np.any(labels >= sigmas.size):
        raise ValueError(
            f"labels must lie in [0, {sigmas.size}) to index sigmas, got values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    eps = as_float_array(eps, "eps")
    if single and eps.shape == (d,):
        eps = eps[None, :]
    if eps.shape != (n, d):
        raise ValueError(f"eps must have shape {(d,) if single else (n, d)} to match x, got shape {eps.shape}")
    check_finite("eps", eps)

    sig = sigmas[labels]
    lam = sig**2 if weighting == "sigma2" else np.ones(n)
    target = eps / sig[:, None]
    with np.errstate(over="ignore"):
        target_term = lam * 0.5 * np.einsum("nd,nd->n", target, target)
    if not np.all(np.isfinite(target_term)):
        k = int(np.flatnonzero(~np.isfinite(target_term))[0])
        raise FloatingPointError(
            f"dsm_multi: float64 overflow in the noise target: at point {k}, sigma = {sig[k]:.3g} and "
            f"|eps| = {float(np.max(np.abs(eps[k]))):.3g} make lambda(sigma) 1/2 ||eps / sigma||^2 exceed "
            "float64's range, whatever the model"
        )
    xt = x + sig[:, None] * eps
    r = model.score(theta, xt, sig) + target
    per = lam * 0.5 * np.einsum("nd,nd->n", r, r)
    _check_result("dsm_multi", per)  # before the gradient: a non-finite residual is the model's
    g = None
    if grad:
        g = model.score_vjp_params(theta, xt, sig, (lam / n)[:, None] * r)
    return _finish(per, g, single, reduction, grad, "dsm_multi")


#: noise levels of dsm_multi: below the lower bound ||eps / sigma||^2 overflows float64 for
#: ordinary eps; above the upper bound the weight sigma^2 of weighting="sigma2" does (beyond ~1.3e154)
_MULTI_SIGMA_RANGE = (1e-150, 1e150)


def _check_multi_sigma_range(sigmas: np.ndarray, weighting: str, name: str = "sigmas") -> None:
    """ValueError naming the level when the loss's own sigma terms would overflow float64."""
    lo, hi = _MULTI_SIGMA_RANGE
    small = np.flatnonzero(sigmas < lo)
    if small.size:
        i = int(small[0])
        got = f"{name}[{i}]" if name == "sigmas" else name
        raise ValueError(f"{name} must be >= {lo:g}: the DSM target eps / sigma squared overflows float64 "
                         f"below, got {got} = {sigmas[i]:g}")
    large = np.flatnonzero(sigmas > hi)
    if weighting == "sigma2" and large.size:
        i = int(large[0])
        raise ValueError(f"sigmas must be <= {hi:g} with weighting='sigma2': its weight sigma^2 overflows "
                         f"float64 beyond ~1.3e154, got sigmas[{i}] = {sigmas[i]:g}")


def projections(rng, shape, kind="gaussian"):
    r"""Random projection directions :math:`v` with :math:`\mathbb E[vv^\top] = I`.

    .. math::

        v \sim \mathcal N(0, I) \quad\text{(gaussian)}, \qquad
        v_i \in \{-1, +1\} \text{ uniformly (rademacher)}, \qquad
        v = \sqrt d\,z/\lVert z\rVert,\ z\sim\mathcal N(0,I) \quad\text{(sphere)}.

    The sphere's radius :math:`\sqrt d` gives :math:`\mathbb E[vv^\top] = I`.
    For a fixed matrix :math:`A` (symmetric part :math:`A_s`) the estimator
    :math:`v^\top A v` has mean :math:`\operatorname{tr}A` and variance
    :math:`2\lVert A_s\rVert_F^2` (gaussian), :math:`2(\lVert A_s\rVert_F^2 - \sum_i A_{ii}^2)`
    (rademacher).

    Parameters
    ----------
    rng : None, int or numpy.random.Generator
    shape : tuple of int
        ``(n, d)`` or ``(m, n, d)``; the last axis is the dimension.
    kind : str
        A key of :data:`PROJECTIONS`: ``"gaussian"``, ``"rademacher"`` or ``"sphere"``.

    Returns
    -------
    ndarray of ``shape``, float64.

    References
    ----------
    Song, Garg, Shi & Ermon (2019), UAI, Sec. 3 (requirement E[vvᵀ] ≻ 0, here = I);
    eq. (7).

    Examples
    --------
    >>> v = projections(0, (4, 3), kind="rademacher")
    >>> sorted(set(v.ravel().tolist()))
    [-1.0, 1.0]
    """
    check_choice("kind", kind, PROJECTIONS)
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from exc
    if len(shape) < 1 or any(s < 0 for s in shape) or shape[-1] < 1:
        raise ValueError(f"shape must be non-negative ints with last (dimension) axis >= 1, got {shape}")
    return PROJECTIONS[kind].draw(as_rng(rng), shape)


def _gaussian_directions(rng, shape):
    return rng.standard_normal(shape)


def _rademacher_directions(rng, shape):
    return 2.0 * rng.integers(0, 2, size=shape).astype(float) - 1.0


def _sphere_directions(rng, shape):
    z = rng.standard_normal(shape)
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    norm[norm == 0.0] = 1.0  # probability zero; keeps the output finite
    return np.sqrt(shape[-1]) * z / norm


@dataclass(frozen=True)
class Projection:
    """A law of projection directions with :math:`\\mathbb E[vv^\\top] = I` (a :data:`PROJECTIONS` entry)."""

    name: str
    draw: Callable  # (Generator, shape) -> array of shape
    formula: str


#: The projection registry, read by :func:`projections`, the CLI, the golden
#: files and :func:`refscore.quadrature.population_loss`.
PROJECTIONS = {
    p.name: p
    for p in (
        Projection("gaussian", _gaussian_directions, "v ~ N(0, I)"),
        Projection("rademacher", _rademacher_directions, "v_i = +-1 with probability 1/2 each"),
        Projection("sphere", _sphere_directions, "v = sqrt(d) z / ||z||, z ~ N(0, I)"),
    )
}


# the weighted forms of the registry's losses: ``terms(model, theta, x, w, grad, **inputs)`` is
# ``(per-point terms, gradient of their w-weighted sum)`` (see :class:`Loss`); the kernel does the math
def _esm_terms(model, theta, x, w, grad, target_score):
    return loss_terms(LossKind.RESIDUAL, model, theta, x, w, target_score, grad)


def _ism_terms(model, theta, x, w, grad):
    return loss_terms(LossKind.ISM, model, theta, x, w, None, grad)


def _dsm_weighted_terms(model, theta, x, w, grad, sigma, eps):
    return dsm_terms(model, theta, x, sigma, eps, w, grad)


def _ssm_terms(model, theta, x, w, grad, v):
    return loss_terms(LossKind.SSM, model, theta, x, w, v, grad)


def _ssm_vr_terms(model, theta, x, w, grad, v):
    return loss_terms(LossKind.SSM_VR, model, theta, x, w, v, grad)


@dataclass(frozen=True)
class Loss:
    """A loss of the :data:`LOSSES` registry: call it like its function.

    Attributes
    ----------
    name : str
    function : callable
        The public loss, ``function(model, theta, x, **inputs, reduction=..., grad=...)``.
    kind : LossKind or None
        The per-point :class:`~refscore._kernels.ids.LossKind` its weighted kernel
        computes, or ``None`` when no compiled fused pass computes it (``dsm_multi``,
        which weighs noise levels, or a loss written from the model primitives).
    inputs : tuple of str
        What it takes beyond ``(model, theta, x)``, by keyword name and in the order
        its randomness is drawn: ``"target_score"`` (the data score at ``x``),
        ``"sigma"`` (a noise level), ``"eps"`` (standard normal draws like ``x``),
        ``"v"`` (``(m, n, d)`` projections of :data:`PROJECTIONS`), ``"sigmas"``
        and ``"labels"`` (noise levels and each point's level).  The consumers read
        them: :func:`refscore.training.fit` supplies each (drawn or given),
        :func:`refscore.quadrature.population_loss` integrates each.
    formula : str
        The per-point term in words (golden manifests, CLI help).
    terms : callable or None
        Its weighted form, ``terms(model, theta, x, w, grad, **inputs) -> (per, grad_theta)``:
        the per-point terms at ``x`` with arrays ``inputs`` and, with ``grad``, the
        gradient over ``theta`` of their ``w``-weighted sum (``grad_theta`` is ``None``
        otherwise).  ``w`` is ``(n,)``, or ``(m, n)`` like ``per`` when the loss takes
        projections ``v`` of shape ``(m, n, d)``.  The public function is this with
        ``w = 1/n``; :func:`refscore.quadrature.population_loss` calls it with
        quadrature weights.  ``None``: the loss has no population form.
    noise_conditional : bool
        Whether it trains a :class:`~refscore.models.NoiseConditional` model
        ``s(x, sigma)`` rather than a score model ``s(x)``.
    """

    name: str
    function: Callable
    kind: LossKind | None
    inputs: tuple
    formula: str
    terms: Callable | None = None
    noise_conditional: bool = False

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


#: The loss registry: name -> :class:`Loss`, read by the CLI, the golden
#: files, training and :mod:`refscore.quadrature`.
LOSSES = {
    spec.name: spec
    for spec in (
        Loss("esm", esm, LossKind.RESIDUAL, ("target_score",),
             "1/2 ||s(x) - target||^2 (eq. 2)", terms=_esm_terms),
        Loss("ism", ism, LossKind.ISM, (),
             "tr grad_x s(x) + 1/2 ||s(x)||^2 (eq. 3, Hyvarinen 2005)", terms=_ism_terms),
        Loss("dsm", dsm, LossKind.DENOISING, ("sigma", "eps"),
             "1/2 ||s(x + sigma eps) + eps / sigma||^2, eps ~ N(0, I) (eq. 6, Vincent 2011)",
             terms=_dsm_weighted_terms),
        Loss("ssm", ssm, LossKind.SSM, ("v",),
             "v^T grad_x s(x) v + 1/2 (v^T s(x))^2 (eq. 7, Song et al. 2019)", terms=_ssm_terms),
        Loss("ssm_vr", ssm_vr, LossKind.SSM_VR, ("v",),
             "v^T grad_x s(x) v + 1/2 ||s(x)||^2 (eq. 7, variance-reduced)", terms=_ssm_vr_terms),
        Loss("dsm_multi", dsm_multi, None, ("sigmas", "labels", "eps"),
             "lambda(sigma_i) 1/2 ||s(x + sigma_i eps, sigma_i) + eps / sigma_i||^2 (Song & Ermon 2019)",
             noise_conditional=True),
    )
}

#: the losses of one score model at one noise level: ESM, ISM, DSM, SSM, SSM-VR
#: (every registry loss that does not train a noise-conditional model)
PER_POINT_LOSSES = tuple(name for name, spec in LOSSES.items() if not spec.noise_conditional)
