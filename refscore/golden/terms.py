r"""The score-matching losses and the KSD Stein kernel split into their named terms, from refscore's primitives.

:func:`refscore.golden.check` diagnoses a failing loss by fitting *your* values as a combination
:math:`\sum_i a_i\,T_i` of the terms :math:`T_i` of refscore's loss, each computed here on the
golden inputs (never from your values).  Every loss of :data:`refscore.losses.LOSSES` is a sum of
per-point terms (docs/derivations.md §1.2-§1.7; their gradients, §2.2-§2.5):

* ESM: :math:`\tfrac12\lVert s\rVert^2`, :math:`-s^\top t`, :math:`\tfrac12\lVert t\rVert^2`
  (:math:`\tfrac12\lVert s - t\rVert^2` expanded), weights :math:`1/n`;
* DSM: the ESM terms at :math:`\tilde x = x + \sigma z` with :math:`t = -z/\sigma`:
  :math:`\tfrac12\lVert s(\tilde x)\rVert^2`, :math:`s(\tilde x)^\top z/\sigma`,
  :math:`\tfrac12\lVert z\rVert^2/\sigma^2`, weights :math:`1/n`;
* ISM: :math:`\operatorname{tr}\nabla_x s`, :math:`\tfrac12\lVert s\rVert^2`, weights :math:`1/n`;
* SSM: :math:`v^\top\nabla_x s\,v`, :math:`\tfrac12(v^\top s)^2`, weights :math:`1/(mn)`;
* SSM-VR: :math:`v^\top\nabla_x s\,v`, :math:`\tfrac12\lVert s\rVert^2`, weights :math:`1/(mn)`;
* ``dsm_multi``: the DSM terms at each point's level with :math:`s(x, \sigma) = s_\theta(x)/\sigma`
  (``NoiseConditional``), weights :math:`\lambda(\sigma_k)/n`.

Each term has a *score degree* and a *target degree*: how it scales when the score
:math:`s` (or the target :math:`t`) is multiplied by a constant :math:`c`.  With them
:math:`\tfrac12\lVert c_s s - c_t t\rVert^2 = c_s^2 T_1 + c_s c_t T_2 + c_t^2 T_3`: a flipped
score or target, the DSM target :math:`-z` for :math:`-z/\sigma`, are term combinations.

The gradient over :math:`\theta` of a term-wise scaled loss is the same combination of the
terms' gradients (each term's gradient is assembled from the same primitives as the loss's,
docs/derivations.md §2.2): ``score_vjp_params`` with the cotangent :math:`w\,s` (for
:math:`\tfrac12\lVert s\rVert^2`), :math:`-w\,t` (for :math:`-s^\top t`),
:math:`\sum_j W_j (v_j^\top s) v_j` (for :math:`\tfrac12(v^\top s)^2`);
``trace_grad_params`` (:math:`\operatorname{tr}\nabla_x s`) and ``vjv_grad_params``
(:math:`v^\top\nabla_x s\,v`).  A term free of :math:`\theta` (:math:`\tfrac12\lVert t\rVert^2`)
has gradient zero.

The KSD Stein kernel of the IMQ base kernel :math:`k = q^\beta`, :math:`q = c^2 + \lVert x-y\rVert^2`
(the formula of :func:`refscore.metrics.imq_stein_kernel`, Liu, Lee & Jordan 2016, eq. 8) splits into

.. math::

    u_p(x, y) = \underbrace{s(x)^\top s(y)\,q^\beta}_{s^\top s\,k}
      + \underbrace{s(x)^\top\nabla_y k}_{-2\beta q^{\beta-1} s(x)^\top(x-y)}
      + \underbrace{s(y)^\top\nabla_x k}_{2\beta q^{\beta-1} s(y)^\top(x-y)}
      \underbrace{- 4\beta(\beta-1) q^{\beta-2}\lVert x-y\rVert^2}_{\text{tr}\,\nabla_x\nabla_y k,\ r^2\text{ part}}
      \underbrace{- 2\beta d\,q^{\beta-1}}_{\text{tr}\,\nabla_x\nabla_y k,\ d\text{ part}} ,

from :math:`\nabla_x k = 2\beta q^{\beta-1}(x-y) = -\nabla_y k` and
:math:`\partial^2 k/\partial x_i\partial y_i = -2\beta q^{\beta-1} - 4\beta(\beta-1)q^{\beta-2}(x_i-y_i)^2`
summed over the :math:`d` coordinates (tests/test_diagnosis_suite.py checks the five terms'
sum against ``imq_stein_kernel`` and each derivative against finite differences).

Per point and per group: every function returns a :class:`Terms` with each term's weighted value
at every point and its value and gradient summed over each *group* of points (one group; the
``m`` projections of a sliced loss; the noise levels of ``dsm_multi``), so that a reduction
over one group (a single projection) or a weight per level can be fitted as well as a factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Term", "Terms", "TERMS", "LOSS_TERMS", "loss_terms", "esm_terms", "dsm_terms", "ism_terms", "sliced_terms",
           "dsm_multi_terms", "KSD_TERMS", "ksd_terms"]


@dataclass(frozen=True)
class Term:
    """One named term of a loss or of the Stein kernel.

    Attributes
    ----------
    name : str
        Its key (``"trace"``, ``"norm"``, ``"vjv"``, ``"proj"``, ``"score2"``, ``"cross"``,
        ``"target2"``, ``"kernel"``...).
    words : str
        The term in words (``"tr grad_x s"``, ``"1/2 ||s||^2"``).
    score_degree, target_degree : int
        Its degree in the score ``s`` and in the target ``t``: the term scales by ``c**degree``
        when ``s`` (or ``t``) is multiplied by ``c``.
    half : bool
        It carries the factor 1/2 of a squared norm (a forgotten 1/2 doubles it).
    coordinates : bool
        It is a sum over the ``d`` coordinates (a mean over them divides it by ``d``).
    trace : bool
        It is the trace term, or its Hutchinson estimate ``v^T grad_x s v``.
    """

    name: str
    words: str
    score_degree: int
    target_degree: int = 0
    half: bool = False
    coordinates: bool = False
    trace: bool = False


@dataclass
class Terms:
    """The terms of one loss on one case's inputs.

    Attributes
    ----------
    terms : tuple of Term
    points : ndarray (k, N)
        Every term at every point, times the loss's weight of the point: the loss is
        ``points.sum()``.  ``N`` is ``n`` (``m n`` for a sliced loss, projection ``j`` of point
        ``k`` at ``j n + k``).
    group : ndarray (N,) of int
        The group of each point.
    values : ndarray (k, G)
        ``points`` summed over each group.
    grads : ndarray (k, G, P) or None
        The gradient over ``theta`` of each term's weighted sum over each group (None when not
        asked for).
    sigma : ndarray (G,) or None
        The noise level of each group (DSM: one group at ``sigma``; ``dsm_multi``: a group per level).
    projection : ndarray (G,) or None
        The projection index of each group (a sliced loss).
    """

    terms: tuple
    points: np.ndarray
    group: np.ndarray
    values: np.ndarray
    grads: np.ndarray | None = None
    sigma: np.ndarray | None = None
    projection: np.ndarray | None = None

    def total(self) -> float:
        """The loss: the sum of every term at every point."""
        return float(self.points.sum())

    def total_grad(self) -> np.ndarray:
        """The loss's gradient over ``theta``: the sum of every term's over every group."""
        return self.grads.sum(axis=(0, 1))


# the terms, once each
_SCORE2 = Term("score2", "1/2 ||s||^2", 2, 0, half=True, coordinates=True)
_CROSS = Term("cross", "-s^T t", 1, 1, coordinates=True)
_TARGET2 = Term("target2", "1/2 ||t||^2", 0, 2, half=True, coordinates=True)
_DSM_CROSS = Term("cross", "s^T z/sigma", 1, 1, coordinates=True)
_DSM_TARGET2 = Term("target2", "1/2 ||z/sigma||^2", 0, 2, half=True, coordinates=True)
_TRACE = Term("trace", "tr grad_x s", 1, coordinates=True, trace=True)
_NORM = Term("norm", "1/2 ||s||^2", 2, half=True, coordinates=True)
_VJV = Term("vjv", "v^T grad_x s v", 1, coordinates=True, trace=True)
_PROJ = Term("proj", "1/2 (v^T s)^2", 2, half=True)


def _grouped(terms, points, group, n_groups, grad_of, P, **attrs) -> Terms:
    """A :class:`Terms` from per-point values and ``grad_of(term index, group) -> (P,)`` (or None)."""
    values = np.stack([np.bincount(group, weights=row, minlength=n_groups) for row in points])
    grads = None
    if grad_of is not None:
        grads = np.zeros((len(terms), n_groups, P))
        for i in range(len(terms)):
            for g in range(n_groups):
                grads[i, g] = grad_of(i, g)
    return Terms(tuple(terms), points, group, values, grads, **attrs)


def _residual(model, theta, x, t, w, grad, terms, sigma=None) -> Terms:
    r"""The three terms of :math:`\tfrac12\lVert s - t\rVert^2` at ``x``, weights ``w``, one group."""
    s = model.score(theta, x)
    points = np.stack([0.5 * np.einsum("nd,nd->n", s, s) * w, -np.einsum("nd,nd->n", s, t) * w,
                       0.5 * np.einsum("nd,nd->n", t, t) * w])
    cts = (w[:, None] * s, -w[:, None] * t, None)

    def grad_of(i, g):
        return np.zeros(len(theta)) if cts[i] is None else model.score_vjp_params(theta, x, cts[i])

    return _grouped(terms, points, np.zeros(len(x), dtype=np.int64), 1, grad_of if grad else None, len(theta),
                    sigma=None if sigma is None else np.array([sigma]))


def esm_terms(model, theta, x, target_score, grad=False) -> Terms:
    r"""ESM's terms :math:`\tfrac12\lVert s\rVert^2,\ -s^\top t,\ \tfrac12\lVert t\rVert^2` (eq. (2))."""
    n = len(x)
    return _residual(model, theta, x, np.asarray(target_score, dtype=float), np.full(n, 1.0 / n), grad,
                     (_SCORE2, _CROSS, _TARGET2))


def dsm_terms(model, theta, x, sigma, eps, grad=False) -> Terms:
    r"""DSM's terms at :math:`\tilde x = x + \sigma z`, target :math:`t = -z/\sigma` (eq. (6),
    docs/derivations.md §2.4): :math:`\tfrac12\lVert s(\tilde x)\rVert^2,\ s(\tilde x)^\top z/\sigma,\
    \tfrac12\lVert z/\sigma\rVert^2`."""
    n, sigma = len(x), float(sigma)
    return _residual(model, theta, x + sigma * eps, -eps / sigma, np.full(n, 1.0 / n), grad,
                     (_SCORE2, _DSM_CROSS, _DSM_TARGET2), sigma=sigma)


def ism_terms(model, theta, x, grad=False) -> Terms:
    r"""ISM's terms :math:`\operatorname{tr}\nabla_x s,\ \tfrac12\lVert s\rVert^2` (eq. (3))."""
    n = len(x)
    w = np.full(n, 1.0 / n)
    s = model.score(theta, x)
    points = np.stack([model.score_trace(theta, x) * w, 0.5 * np.einsum("nd,nd->n", s, s) * w])

    def grad_of(i, g):
        return model.trace_grad_params(theta, x, w) if i == 0 else model.score_vjp_params(theta, x, w[:, None] * s)

    return _grouped((_TRACE, _NORM), points, np.zeros(n, dtype=np.int64), 1, grad_of if grad else None, len(theta))


def sliced_terms(model, theta, x, v, variance_reduced, grad=False) -> Terms:
    r"""SSM's terms :math:`v^\top\nabla_x s\,v,\ \tfrac12(v^\top s)^2` or SSM-VR's
    :math:`v^\top\nabla_x s\,v,\ \tfrac12\lVert s\rVert^2` (eq. (7), docs/derivations.md §2.3), one
    group per projection index ``j`` of ``v`` (m, n, d)."""
    m, n, d = v.shape
    W = np.full((m, n), 1.0 / (m * n))
    s = model.score(theta, x)
    xt = np.broadcast_to(x, (m, n, d)).reshape(m * n, d)
    vf = v.reshape(m * n, d)
    vjv = np.einsum("kd,kd->k", vf, model.score_jvp(theta, xt, vf)).reshape(m, n)
    vs = np.einsum("mnd,nd->mn", v, s)
    second = np.broadcast_to(0.5 * np.einsum("nd,nd->n", s, s), (m, n)) if variance_reduced else 0.5 * vs**2
    points = np.stack([(vjv * W).ravel(), (second * W).ravel()])
    group = np.repeat(np.arange(m), n)

    def grad_of(i, g):
        Wg = np.where(np.arange(m)[:, None] == g, W, 0.0)
        if i == 0:
            return model.vjv_grad_params(theta, xt, vf, Wg.ravel())
        ct = Wg.sum(axis=0)[:, None] * s if variance_reduced else np.einsum("mn,mnd->nd", Wg * vs, v)
        return model.score_vjp_params(theta, x, ct)

    return _grouped((_VJV, _NORM if variance_reduced else _PROJ), points, group, m, grad_of if grad else None,
                    len(theta), projection=np.arange(m))


def dsm_multi_terms(model, theta, x, sigmas, labels, eps, weighting, grad=False) -> Terms:
    r"""``dsm_multi``'s terms: the DSM terms of each point at its level :math:`\sigma_k =`
    ``sigmas[labels[k]]``, weighted :math:`\lambda(\sigma_k)/n` (docs/derivations.md §2.5),
    one group per level; ``model`` is noise-conditional (``score(theta, x, sigma)``)."""
    sigmas = np.asarray(sigmas, dtype=float)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(x)
    sig = sigmas[labels]
    lam = sig**2 if weighting == "sigma2" else np.ones(n)
    w = lam / n
    xt = x + sig[:, None] * eps
    t = -eps / sig[:, None]
    s = model.score(theta, xt, sig)
    points = np.stack([0.5 * np.einsum("nd,nd->n", s, s) * w, -np.einsum("nd,nd->n", s, t) * w,
                       0.5 * np.einsum("nd,nd->n", t, t) * w])

    def grad_of(i, g):
        mask = (labels == g)[:, None]
        ct = (w[:, None] * s, -w[:, None] * t, None)[i]
        return np.zeros(len(theta)) if ct is None else model.score_vjp_params(theta, xt, sig, np.where(mask, ct, 0.0))

    return _grouped((_SCORE2, _DSM_CROSS, _DSM_TARGET2), points, labels, len(sigmas), grad_of if grad else None,
                    len(theta), sigma=sigmas)


#: the term split of every loss of :data:`refscore.losses.LOSSES`, by its name: ``f(model, theta, x,
#: grad, **inputs)`` with the loss's own inputs (``target_score``, ``sigma`` and ``eps``, ``v``, ``sigmas``,
#: ``labels``, ``eps`` and ``weighting``)
TERMS = {
    "esm": lambda model, theta, x, grad, target_score: esm_terms(model, theta, x, target_score, grad),
    "ism": lambda model, theta, x, grad: ism_terms(model, theta, x, grad),
    "dsm": lambda model, theta, x, grad, sigma, eps: dsm_terms(model, theta, x, sigma, eps, grad),
    "ssm": lambda model, theta, x, grad, v: sliced_terms(model, theta, x, v, False, grad),
    "ssm_vr": lambda model, theta, x, grad, v: sliced_terms(model, theta, x, v, True, grad),
    "dsm_multi": lambda model, theta, x, grad, sigmas, labels, eps, weighting="sigma2": dsm_multi_terms(
        model, theta, x, sigmas, labels, eps, weighting, grad),
}


#: the terms of every loss of :data:`TERMS`, in the order its :class:`Terms` lists them
LOSS_TERMS = {
    "esm": (_SCORE2, _CROSS, _TARGET2),
    "ism": (_TRACE, _NORM),
    "dsm": (_SCORE2, _DSM_CROSS, _DSM_TARGET2),
    "ssm": (_VJV, _PROJ),
    "ssm_vr": (_VJV, _NORM),
    "dsm_multi": (_SCORE2, _DSM_CROSS, _DSM_TARGET2),
}


def loss_terms(loss, model, theta, x, grad=False, **inputs) -> Terms:
    """The terms of the loss ``loss`` (a name of :data:`refscore.losses.LOSSES`) with its inputs by keyword.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import LinearScore
    >>> from refscore import losses
    >>> m = LinearScore(2); th = m.init(0); x = np.array([[1.0, 0.5], [0.2, -1.0]])
    >>> t = loss_terms("ism", m, th, x)
    >>> [term.words for term in t.terms], bool(np.isclose(t.total(), losses.ism(m, th, x)))
    (['tr grad_x s', '1/2 ||s||^2'], True)
    """
    try:
        split = TERMS[loss]
    except KeyError:
        raise ValueError(f"loss must be one of {sorted(TERMS)}, got {loss!r}") from None
    return split(model, theta, x, grad, **inputs)


# ---------------------------------------------------------------- the Stein kernel
#: the five terms of the IMQ Langevin Stein kernel u_p(x, y)
KSD_TERMS = (
    Term("ss_k", "s(x)^T s(y) k", 2),
    Term("s_grad_y_k", "s(x)^T grad_y k", 1),
    Term("s_grad_x_k", "s(y)^T grad_x k", 1),
    Term("kernel_r2", "tr grad_x grad_y k, its r^2 part", 0),
    Term("kernel_d", "tr grad_x grad_y k, its d part", 0, coordinates=True),
)


def ksd_terms(x, score, c, beta) -> np.ndarray:
    r"""The five terms of the IMQ Stein kernel on the sample ``x`` (n, d) with scores ``score``:
    an array (5, n, n) whose sum is :func:`refscore.metrics.imq_stein_kernel` ``(x, x, score, score)``
    (the split of this module's docstring, in the order of :data:`KSD_TERMS`)."""
    x = np.asarray(x, dtype=float)
    s = np.asarray(score, dtype=float)
    d = x.shape[1]
    r = x[:, None, :] - x[None, :, :]  # r[i, j] = x_i - y_j
    r2 = np.einsum("ijd,ijd->ij", r, r)
    q = c * c + r2
    k = q**beta
    a = 2.0 * beta * q ** (beta - 1.0)  # grad_x k = a r = -grad_y k
    return np.stack([
        (s @ s.T) * k,
        -a * np.einsum("id,ijd->ij", s, r),
        a * np.einsum("jd,ijd->ij", s, r),
        -4.0 * beta * (beta - 1.0) * q ** (beta - 2.0) * r2,
        -2.0 * beta * d * q ** (beta - 1.0),
    ])
