r"""How a target hands a compiled score kernel and its parameters to the backends.

Every target type maps ONCE, here, to a :class:`CompiledTarget`:

* ``layout`` — int64 array ``[kind, d, work_rows, a, b, c, widths...]``
  naming the score kernel and its shape (see
  :mod:`refscore.sampling._score_kernels`);
* ``params`` — float64 array ``(L, P)``, one row per noise level (``L = 1`` for
  :func:`~refscore.sampling.ula` and :func:`~refscore.sampling.mala`);
* ``scale`` — float64 ``(L,)`` multiplying the score (``1/sigma`` for a bound
  ``NoiseConditional``, 1 otherwise).

The Numba and CUDA backends then call ONE compiled dispatcher,
``evaluate(layout, params[level], ...)``, whatever the target.  The NumPy
reference never uses this module's kernels: it calls ``target.score`` (and
:func:`logpdf_function` for MALA), the independent route the compiled
kernels are tested against.

====================================  =========  =====================================
target                                kind       parameters
====================================  =========  =====================================
``Gaussian``                          AFFINE     ``A = -precision``, ``m = mean``, ``b = 0``
``GaussianModel.bind``                AFFINE     ``A = -L L^T``, ``m = mu``
``LinearScore.bind``                  AFFINE     ``A``, ``m = 0``, ``b``
``GaussianMixture``                   MIX        iso when every covariance is ``v I``
``GaussianMixtureModel.bind``         MIX (iso)  ``tau = exp(log_tau)``, weights softmax(alpha)
``StudentT``                          STUDENT    ``nu``, ``mu``, ``shape^{-1}``
``Banana``                            BANANA     ``b``, ``sigma1``
``MLPScore.bind`` / ``MLPEnergy``     MLP        ``theta`` as is
``dist.perturbed()``                  per level  ``noised(sigma_i)`` mapped as above
``NoiseConditional(m).bind``          as ``m``   ``scale = 1 / sigma_i``
====================================  =========  =====================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _score_kernels as K

__all__ = ["CompiledTarget", "compile_target", "logpdf_function", "score_function"]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class CompiledTarget:
    """``(layout, params, scale)`` of a target: what every compiled backend reads."""

    layout: np.ndarray   # int64 (HEADER + widths,)
    params: np.ndarray   # float64 (L, P)
    scale: np.ndarray    # float64 (L,)
    has_logp: bool

    @property
    def dim(self) -> int:
        return int(self.layout[1])


def _layout(kind, d, work, a=0, b=0, c=0, extra=()):
    return np.array([kind, d, max(int(work), 1), a, b, c, *extra], dtype=np.int64)


def _affine(A, m, b):
    d = m.shape[0]
    return _layout(K.AFFINE, d, d), np.concatenate([np.ravel(A), m, b]), True


def _mixture(logc, means, precs, iso_taus=None):
    """``logc`` (k,) normalised log-weights incl. Gaussian constants."""
    k, d = means.shape
    if iso_taus is not None:
        rows = [np.concatenate([[logc[j], iso_taus[j]], means[j]]) for j in range(k)]
        return _layout(K.MIX, d, k + 2 * d + 2, k, 1), np.concatenate(rows), True
    rows = [np.concatenate([[logc[j]], means[j], precs[j].ravel()]) for j in range(k)]
    return _layout(K.MIX, d, k + 2 * d + 2, k, 0), np.concatenate(rows), True


def _iso_variances(covs):
    """Per-component variance v_j if every covariance is exactly v_j I, else None."""
    d = covs.shape[1]
    v = covs[:, 0, 0]
    if np.array_equal(covs, v[:, None, None] * np.eye(d)[None]):
        return v
    return None


def _single(target):
    """Map a target without noise levels to (layout, params (P,), has_logp)."""
    from .. import distributions as D
    from ..models import gaussian as G
    from ..models import mixture as Mx
    from ..models.base import BoundModel

    if isinstance(target, D.Gaussian):
        d = target.dim
        return _affine(-target.precision, target.mean, np.zeros(d))
    if isinstance(target, D.GaussianMixture):
        v = _iso_variances(target.covs)
        logc = target.log_weights + target.log_norm_consts
        if v is not None:
            return _mixture(logc, target.means, None, 1.0 / v)
        return _mixture(logc, target.means, target.precisions)
    if isinstance(target, D.StudentT):
        d = target.dim
        lay = _layout(K.STUDENT, d, 2 * d + 1)
        return lay, np.concatenate([[target.df, target.log_norm_const], target.loc,
                                    target.precision.ravel()]), True
    if isinstance(target, D.Banana):
        return (_layout(K.BANANA, 2, 1),
                np.array([target.b, target.sigma1, np.log(2.0 * np.pi * target.sigma1)]), True)
    if isinstance(target, BoundModel):
        model, theta = target.model, np.asarray(target.theta, dtype=float)
        d = model.dim
        if isinstance(model, G.GaussianModel):
            mu, L = model._unpack(theta)
            return _affine(-(L @ L.T), mu, np.zeros(d))
        if isinstance(model, G.LinearScore):
            A, b = model._unpack(theta)
            lay, p, _ = _affine(A, np.zeros(d), b)
            return lay, p, bool(np.array_equal(A, A.T))
        if isinstance(model, Mx.GaussianMixtureModel):
            alpha, mu, eta = model._unpack(theta)
            logw = alpha - np.max(alpha)
            logw = logw - np.log(np.sum(np.exp(logw)))
            logc = logw + 0.5 * d * eta - 0.5 * d * _LOG_2PI
            return _mixture(logc, mu, None, np.exp(eta))
        name = type(model).__name__
        if name in ("MLPScore", "MLPEnergy"):
            return _mlp(model, theta, energy=name == "MLPEnergy")
    raise TypeError(
        "target must be a refscore distribution or a bound model (model.bind(theta)), "
        f"got {type(target).__name__}"
    )


def _mlp(model, theta, energy):
    act = model.activation
    act_name = getattr(act, "name", act)
    if act_name not in K.ACT_IDS:
        raise TypeError(f"activation {act_name!r} has no compiled kernel")
    widths = [model.dim, *model.hidden, 1 if energy else model.dim]
    wmax = max(widths)
    work = 2 * wmax + sum(widths[1:-1])
    lay = _layout(K.MLP, model.dim, work, len(widths) - 1, K.ACT_IDS[act_name],
                  int(energy), widths)
    return lay, np.ascontiguousarray(theta, dtype=float), energy


def compile_target(target, sigmas=None, need_logp=False) -> CompiledTarget:
    """Map ``target`` to its kernel ``(layout, params, scale)``.

    Parameters
    ----------
    target : distribution, bound model, ``dist.perturbed()`` or bound ``NoiseConditional``
    sigmas : array (L,), optional
        Noise levels; required for noise-conditional targets.
    need_logp : bool
        Raise ``TypeError`` if the target has no log-density (MALA).
    """
    from .. import distributions as D

    if sigmas is None:
        lay, p, has_logp = _single(target)
        params, scale = p[None, :], np.ones(1)
    elif isinstance(target, D.Perturbed):
        rows = [_single(target.noised(float(s))) for s in sigmas]
        lay, has_logp = rows[0][0], rows[0][2]
        params, scale = np.stack([r[1] for r in rows]), np.ones(len(sigmas))
    elif type(getattr(target, "model", None)).__name__ == "NoiseConditional":
        inner = target.model.model.bind(target.theta)
        lay, p, has_logp = _single(inner)
        params = np.repeat(p[None, :], len(sigmas), axis=0)
        scale = 1.0 / np.asarray(sigmas, dtype=float)
    else:
        raise TypeError(
            "annealed_langevin needs a noise-conditional target with score(x, sigma): "
            f"dist.perturbed() or NoiseConditional(model).bind(theta), got {type(target).__name__}"
        )
    if need_logp and not has_logp:
        raise TypeError(f"mala needs a log-density, and {target!r} has none "
                        "(score models other than energies do not define one)")
    return CompiledTarget(lay, np.ascontiguousarray(params, dtype=float),
                          np.ascontiguousarray(scale, dtype=float), has_logp)


def score_function(target, sigma=None):
    """The NumPy score ``x -> (n, d)`` of a target (at noise level ``sigma``)."""
    if sigma is None:
        return target.score
    return lambda x: target.score(x, sigma)


def logpdf_function(target):
    """NumPy ``x -> log p(x)`` up to a constant, independent of the compiled kernels."""
    from ..models import gaussian as G
    from ..models import mixture as Mx
    from ..models.base import BoundModel

    if hasattr(target, "logpdf") and not isinstance(target, BoundModel):
        return target.logpdf
    if isinstance(target, BoundModel):
        model, theta = target.model, target.theta
        if isinstance(model, G.GaussianModel):
            mu, L = model._unpack(theta)
            return lambda x: -0.5 * np.sum(((x - mu) @ L) ** 2, axis=1)
        if isinstance(model, G.LinearScore):
            A, b = model._unpack(theta)
            if np.array_equal(A, A.T):
                return lambda x: 0.5 * np.einsum("ni,ij,nj->n", x, A, x) + x @ b
        if isinstance(model, Mx.GaussianMixtureModel):
            alpha, mu, eta = model._unpack(theta)
            d = model.dim

            def lp(x):
                sq = np.sum((x[:, None, :] - mu[None]) ** 2, axis=2)
                ell = alpha + 0.5 * d * eta - 0.5 * np.exp(eta) * sq
                top = ell.max(axis=1)
                return top + np.log(np.sum(np.exp(ell - top[:, None]), axis=1))
            return lp
        if type(model).__name__ == "MLPEnergy" and hasattr(model, "energy"):
            return lambda x: -model.energy(theta, x)
    raise TypeError(f"mala needs a log-density, and {target!r} has none")
