r"""Closed-form targets: densities, scores and their exact derivatives.

Derivation: docs/derivations.md §7.5 (scores, Jacobians and noised laws of the distributions).

Every distribution here has a normalised ``logpdf``, its score
:math:`s(x) = \nabla_x \log p(x)` (eq. (1)), the score's Jacobian
``[k, i, j] = ∂s_i/∂x_j`` (the Hessian of :math:`\log p`), its trace (the
Laplacian of :math:`\log p`), Jacobian-vector products and exact sampling.
Each derivative is derived by hand below and tested against central finite
differences of the level beneath it (``tests/test_distributions.py``).

==========================  =====  ==============================================
class                       dim    ``noised(sigma)`` / ``perturbed()``
==========================  =====  ==============================================
:class:`Gaussian`           any    exact: :math:`N(\mu, \Sigma + \sigma^2 I)`
:class:`GaussianMixture`    any    exact: every component's cov gains :math:`\sigma^2 I`
:class:`StudentT`           any    ``NotImplementedError`` (no closed form)
:class:`Banana`             2      ``NotImplementedError`` (no closed form)
==========================  =====  ==============================================

Covariances are factorised once by Cholesky (:math:`\Sigma = LL^\top`);
quadratic forms and precisions go through triangular solves, never an explicit
inverse.  Mixture log-densities and responsibilities use log-sum-exp, so the
score, Jacobian and trace stay finite far (hundreds of standard deviations)
from every component.

Public methods validate their input (``_validation.as_points``) and call a
private ``_name`` method that receives a clean ``(n, d)`` float64 array.
A single point of shape ``(d,)`` is accepted and the batch axis is dropped from
the result.

References
----------
.. [1] A. Hyvärinen, "Estimation of non-normalized statistical models by score
   matching", JMLR 6, 2005 (the score, eq. (1)).
.. [2] H. Haario, E. Saksman, J. Tamminen, "Adaptive proposal distribution for
   random walk Metropolis algorithm", Computational Statistics 14, 1999 (the
   twisted Gaussian "banana" target).
.. [3] Y. Song, S. Ermon, "Generative modeling by estimating gradients of the
   data distribution", NeurIPS 2019 (noise-perturbed targets :math:`p_\sigma`).
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular
from scipy.special import gammaln

from ._kernels.target_blocks import affine_block, banana_block, mixture_block, student_block
from ._validation import (
    per_point_sigma,
    as_float_array,
    as_points,
    as_rng,
    check_finite,
    check_int,
    check_positive,
)

__all__ = ["Gaussian", "GaussianMixture", "StudentT", "Banana", "Perturbed"]

_LOG_2PI = float(np.log(2.0 * np.pi))

#: relative asymmetry tolerated in a covariance before it is rejected; the
#: accepted matrix is symmetrised, (C + Cᵀ)/2.
_SYM_RTOL = 1e-10

#: tolerance on |sum(weights) - 1| (weights are then renormalised exactly)
_WEIGHT_ATOL = 1e-10


# ----------------------------------------------------------------- validation
def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


def _check_vector(name: str, value, dim: int | None = None) -> np.ndarray:
    arr = as_float_array(value, name)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim},), got shape {arr.shape}")
    check_finite(name, arr)
    return arr


def _check_spd(name: str, value, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cov, chol)`` for a symmetric positive definite ``(dim, dim)`` matrix."""
    cov = as_float_array(value, name)
    if cov.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got shape {cov.shape}")
    check_finite(name, cov)
    scale = float(np.max(np.abs(cov))) if cov.size else 0.0
    asym = float(np.max(np.abs(cov - cov.T)))
    if asym > _SYM_RTOL * max(scale, np.finfo(float).tiny):
        raise ValueError(
            f"{name} must be symmetric positive definite; it is not symmetric "
            f"(max |C - C^T| = {asym:.3g}, max |C| = {scale:.3g})"
        )
    cov = 0.5 * (cov + cov.T)
    try:
        chol = cholesky(cov, lower=True, check_finite=False)
    except LinAlgError:
        chol = None
    if chol is None or not np.all(np.diag(chol) > 0):
        lam = float(np.linalg.eigvalsh(cov)[0])
        raise ValueError(
            f"{name} must be symmetric positive definite; its Cholesky factorisation "
            f"failed (smallest eigenvalue {lam:.3g})"
        )
    return cov, chol


def _precision(chol: np.ndarray, name: str = "cov") -> np.ndarray:
    """:math:`\\Sigma^{-1}` from its Cholesky factor by ``cho_solve`` (symmetrised).

    ``ValueError`` when the inverse overflows float64 (a matrix positive definite
    in exact arithmetic whose inverse is beyond ~1.8e308, e.g. ``[[1e-320]]``):
    every score would then be infinite.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        p = cho_solve((chol, True), np.eye(chol.shape[0]), check_finite=False)
        p = 0.5 * (p + p.T)
    if not np.all(np.isfinite(p)):
        raise ValueError(
            f"{name} is too close to singular for float64: its inverse overflows "
            f"(smallest Cholesky pivot {float(np.min(np.diag(chol))):.3g}; the inverse needs "
            f"eigenvalues above ~1e-308)"
        )
    return p


def _check_n(n) -> int:
    return check_int("n", n, 0)


#: largest noise level: sigma**2 is added to covariances and overflows float64 beyond ~1.3e154
_SIGMA_MAX = 1e150


def _check_sigma_range(s) -> None:
    if np.any(s > _SIGMA_MAX):
        raise ValueError(
            f"sigma must be <= {_SIGMA_MAX:g}, got max {float(np.max(s)):.3g}: the noised "
            f"covariance Sigma + sigma**2 I overflows float64 beyond ~1.3e154"
        )


def _check_sigma(sigma) -> float:
    s = check_positive("sigma", sigma)
    _check_sigma_range(s)
    return s


def mixture_log_sum_exp(ell, logc, whitened):
    r"""``(log p (n,), r (k, n))`` of mixture logits ``ell[j] = logc[j] - ½‖z_j‖²``, far field included.

    Log-sum-exp: :math:`\log p = m + \log\sum_j e^{\ell_j - m}`, :math:`m = \max_j \ell_j`,
    :math:`r_j = e^{\ell_j - m} / \sum_i e^{\ell_i - m}`.  Far from every component
    (:math:`\lVert z_j\rVert \gtrsim 10^{154}`) every :math:`\lVert z_j\rVert^2`
    overflows, every logit is :math:`-\infty` and log-sum-exp gives NaN.  Those points
    are redone on the rescaled displacements :math:`\hat z_j = z_j / c`,
    :math:`c = \max_{j,i} |z_{ji}|` (so :math:`\hat q_j = \lVert\hat z_j\rVert^2 \le d`):

    .. math::

        \ell_j = \underbrace{\mathrm{logc}_j - \tfrac12 c\,(c\,(\hat q_j - \hat q_{\min}))}_{a_j}
                 - \tfrac12 c\,(c\,\hat q_{\min}),

    the common last term cancels from the responsibilities and :math:`a_j` is finite
    for the components nearest in Mahalanobis distance (:math:`-\infty`, i.e.
    :math:`r_j = 0`, for the others), so the score is that of the nearest component(s).
    ``log p`` is then :math:`-\infty` when the true value is below -1.8e308.

    ``logc`` is ``(k,)`` or ``(k, n)`` (``-inf`` for a zero weight); ``whitened(cols)``
    returns the ``(k, m, d)`` whitened displacements :math:`z` of the points ``cols``.
    """
    with np.errstate(invalid="ignore"):
        top = np.max(ell, axis=0)
        e = np.exp(ell - top)
        tot = np.sum(e, axis=0)
        logp, r = top + np.log(tot), e / tot
    bad = np.flatnonzero(~np.isfinite(top))
    if bad.size:
        z = whitened(bad)
        c = np.max(np.abs(z), axis=(0, 2))
        zs = z / c[None, :, None]
        qs = np.einsum("kmi,kmi->km", zs, zs)
        logc = np.asarray(logc, dtype=float)
        lc = logc[:, bad] if logc.ndim == 2 else np.broadcast_to(logc[:, None], qs.shape)
        live = np.isfinite(lc)
        qmin = np.min(np.where(live, qs, np.inf), axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.where(live, lc - 0.5 * (c * (c * (qs - qmin))), -np.inf)
            atop = np.max(a, axis=0)
            ea = np.exp(a - atop)
            tot = np.sum(ea, axis=0)
            r[:, bad] = ea / tot
            logp[bad] = atop + np.log(tot) - 0.5 * (c * (c * qmin))
    return logp, r


def _live(r, D):
    """``D (k, n, d)`` with the rows of zero responsibility zeroed: their ``r D Dᵀ`` is 0, not 0·∞."""
    return np.where(r[:, :, None] > 0.0, D, 0.0)


def _solve_l(chol, xc):
    """``L⁻¹ xcᵀ`` for points ``xc (n, d)``: returns ``(n, d)``."""
    return solve_triangular(chol, xc.T, lower=True, check_finite=False).T


def _solve_lt(chol, z):
    """``L⁻ᵀ zᵀ`` for ``z (n, d)``: returns ``(n, d)``."""
    return solve_triangular(chol, z.T, lower=True, trans="T", check_finite=False).T


# ------------------------------------------------------------------ base class
class _Distribution:
    """Validation shell shared by every target (public wrapper → private ``_name``)."""

    dim: int

    def _points(self, x, name="x"):
        return as_points(x, self.dim, name)

    def _like(self, v, n, single, name="v"):
        a = as_float_array(v, name)
        if single and a.shape == (self.dim,):
            a = a[None, :]
        if a.shape != (n, self.dim):
            want = f"({self.dim},)" if single else f"({n}, {self.dim})"
            raise ValueError(f"{name} must have shape {want} to match x, got shape {np.shape(v)}")
        check_finite(name, a)
        return a

    def logpdf(self, x) -> np.ndarray:
        """Normalised :math:`\\log p(x)`, shape ``(n,)`` (a scalar for one point)."""
        x, single = self._points(x)
        out = self._logpdf(x)
        return out[0] if single else out

    def score(self, x) -> np.ndarray:
        """:math:`s(x) = \\nabla_x \\log p(x)`, shape ``(n, d)`` (eq. (1))."""
        x, single = self._points(x)
        out = self._score(x)
        return out[0] if single else out

    def score_jacobian(self, x) -> np.ndarray:
        """:math:`\\nabla_x s(x)`, shape ``(n, d, d)`` with ``[k, i, j] = ∂s_i/∂x_j``."""
        x, single = self._points(x)
        out = self._score_jacobian(x)
        return out[0] if single else out

    def score_trace(self, x) -> np.ndarray:
        """:math:`\\operatorname{tr}\\nabla_x s(x) = \\Delta \\log p(x)`, shape ``(n,)``."""
        x, single = self._points(x)
        out = self._score_trace(x)
        return out[0] if single else out

    def score_jvp(self, x, v) -> np.ndarray:
        """:math:`(\\nabla_x s(x))\\, v`, shape ``(n, d)``."""
        x, single = self._points(x)
        v = self._like(v, x.shape[0], single)
        out = self._score_jvp(x, v)
        return out[0] if single else out

    def sample(self, n, rng=None) -> np.ndarray:
        """``n`` independent exact draws, shape ``(n, d)``."""
        return self._sample(_check_n(n), as_rng(rng))

    def noised(self, sigma):
        """The law of :math:`x + \\sigma z`, :math:`z \\sim N(0, I)` (closed form only)."""
        raise NotImplementedError(
            f"{type(self).__name__}.noised: the law of x + sigma*z has no closed form for "
            f"this target (only Gaussian and GaussianMixture are closed under Gaussian noise)"
        )

    def perturbed(self):
        """A noise-conditional target with ``score(x, sigma)`` (closed form only)."""
        raise NotImplementedError(
            f"{type(self).__name__}.perturbed: exact noise-conditional scores need a closed "
            f"form for x + sigma*z, available only for Gaussian and GaussianMixture"
        )

    def kernel_block(self):
        """What this target is to the compiled samplers: a :class:`~refscore._kernels.target_blocks.KernelBlock`."""
        raise TypeError(f"{type(self).__name__} has no compiled score kernel; use backend='numpy'")

    # defaults: exact but via the full Jacobian; subclasses override when cheaper
    def _score_trace(self, x):
        return np.einsum("kii->k", self._score_jacobian(x))

    def _score_jvp(self, x, v):
        return np.einsum("kij,kj->ki", self._score_jacobian(x), v)


# -------------------------------------------------------------------- Gaussian
class Gaussian(_Distribution):
    r"""Multivariate normal :math:`N(\mu, \Sigma)`.

    .. math::

        \log p(x) = -\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)
                    - \tfrac d2 \log 2\pi - \sum_i \log L_{ii},
        \qquad s(x) = -\Sigma^{-1}(x-\mu),
        \qquad \nabla_x s = -\Sigma^{-1},
        \qquad \operatorname{tr}\nabla_x s = -\operatorname{tr}\Sigma^{-1},

    with :math:`\Sigma = LL^\top` (Cholesky).  :math:`\Sigma^{-1}(x-\mu)` is
    computed by two triangular solves.

    Parameters
    ----------
    mean : array_like, shape (d,)
    cov : array_like, shape (d, d)
        Symmetric positive definite (asymmetry up to 1e-10 relative is
        symmetrised away).

    Attributes
    ----------
    dim, mean, cov, chol (lower Cholesky factor), precision (:math:`\Sigma^{-1}`
    by ``cho_solve``), log_norm_const (:math:`-\tfrac d2\log 2\pi - \log\det L`).
    All arrays are read-only.

    References
    ----------
    Hyvärinen 2005 (eq. (1)); Song & Ermon 2019 for ``noised``.

    Examples
    --------
    >>> g = Gaussian([0.0, 1.0], [[2.0, 0.5], [0.5, 1.0]])
    >>> g.score([0.0, 1.0])
    array([-0., -0.])
    """

    def __init__(self, mean, cov):
        mean = _check_vector("mean", mean)
        self.dim = int(mean.shape[0])
        cov, chol = _check_spd("cov", cov, self.dim)
        self._mean = _readonly(mean)
        self._cov = _readonly(cov)
        self._chol = _readonly(chol)
        self._prec = _readonly(_precision(chol, "cov"))
        self._lognorm = float(-0.5 * self.dim * _LOG_2PI - np.sum(np.log(np.diag(chol))))

    mean = property(lambda self: self._mean, doc="mean vector, shape (d,)")
    cov = property(lambda self: self._cov, doc="covariance, shape (d, d)")
    chol = property(lambda self: self._chol, doc="lower Cholesky factor L, cov = L Lᵀ")
    precision = property(lambda self: self._prec, doc="cov⁻¹ by cho_solve, shape (d, d)")
    log_norm_const = property(lambda self: self._lognorm, doc="-d/2 log 2π - Σ log L_ii")

    def __repr__(self):
        return f"Gaussian(dim={self.dim}, mean={np.array2string(self._mean, precision=4)})"

    def _logpdf(self, x):
        z = _solve_l(self._chol, x - self._mean)
        return self._lognorm - 0.5 * np.einsum("ni,ni->n", z, z)

    def _score(self, x):
        return -_solve_lt(self._chol, _solve_l(self._chol, x - self._mean))

    def _score_jacobian(self, x):
        return np.broadcast_to(-self._prec, (x.shape[0], self.dim, self.dim)).copy()

    def _score_trace(self, x):
        return np.full(x.shape[0], -np.trace(self._prec))

    def _score_jvp(self, x, v):
        return -v @ self._prec  # precision is symmetric

    def _sample(self, n, rng):
        return self._mean + rng.standard_normal((n, self.dim)) @ self._chol.T

    def noised(self, sigma) -> "Gaussian":
        r"""Exact law of :math:`x + \sigma z`: :math:`N(\mu, \Sigma + \sigma^2 I)`."""
        s = _check_sigma(sigma)
        return Gaussian(self._mean, self._cov + s * s * np.eye(self.dim))

    def kernel_block(self):
        r"""Compiled-sampler block: affine, :math:`s = -P(x - \mu)`."""
        return affine_block(-self.precision, self.mean, np.zeros(self.dim))

    def perturbed(self) -> "Perturbed":
        """Noise-conditional target: ``score(x, sigma) == noised(sigma).score(x)``."""
        return Perturbed(np.ones(1), self._mean[None], self._cov[None], base=self)


# ------------------------------------------------------------ GaussianMixture
class GaussianMixture(_Distribution):
    r"""Mixture :math:`p(x) = \sum_j w_j N(x; \mu_j, \Sigma_j)` with full covariances.

    With component log-densities :math:`\ell_j(x) = \log w_j + \log N(x;\mu_j,\Sigma_j)`,
    responsibilities :math:`r_j = e^{\ell_j - \operatorname{lse}(\ell)}` (log-sum-exp)
    and component scores :math:`s_j = -P_j(x-\mu_j)`, :math:`P_j = \Sigma_j^{-1}`:

    .. math::

        \log p = \operatorname{lse}_j \ell_j, \qquad
        s = \sum_j r_j s_j, \qquad
        \nabla_x r_j = r_j (s_j - s),

        \nabla_x s = \sum_j r_j(-P_j) + \sum_j r_j s_j s_j^\top - s s^\top
                   = -\sum_j r_j P_j + \sum_j r_j (s_j - s)(s_j - s)^\top,

        \operatorname{tr}\nabla_x s = -\sum_j r_j \operatorname{tr} P_j
                                      + \sum_j r_j \lVert s_j - s\rVert^2 .

    Derivation: :math:`\partial s/\partial x = \sum_j r_j\,\partial s_j/\partial x
    + \sum_j s_j (\nabla r_j)^\top` and :math:`\nabla r_j = r_j(s_j - s)`
    (differentiate the softmax of :math:`\ell`, using :math:`\nabla\ell_j = s_j`);
    since :math:`\sum_j r_j (s_j - s) = 0`, :math:`\sum_j r_j s_j (s_j-s)^\top
    = \sum_j r_j (s_j - s)(s_j - s)^\top`.  The centred form is the one computed:
    it is a sum of positive semi-definite terms, so nothing cancels
    catastrophically when the :math:`s_j` are large (far from every component),
    and the responsibilities come from log-sum-exp, so nothing over- or
    underflows to NaN.

    Parameters
    ----------
    weights : array_like, shape (k,)
        Non-negative, summing to 1 within 1e-10 (then renormalised exactly).
    means : array_like, shape (k, d)
    covs : array_like, shape (k, d, d)
        Each symmetric positive definite.

    Attributes
    ----------
    dim, n_components, weights, log_weights, means, covs, chols (lower Cholesky
    factors, (k, d, d)), precisions (by ``cho_solve``, (k, d, d)),
    log_norm_consts ((k,), :math:`-\tfrac d2\log 2\pi - \log\det L_j`, without
    the weight).  All arrays are read-only.

    References
    ----------
    Hyvärinen 2005 (eq. (1)); Song & Ermon 2019 (mixtures as the standard
    multi-modal test of score-based sampling).

    Examples
    --------
    >>> m = GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [[[1.0]], [[1.0]]])
    >>> float(m.score([0.0])[0])
    0.0
    """

    def __init__(self, weights, means, covs):
        w = _check_vector("weights", weights)
        k = int(w.shape[0])
        if np.any(w < 0):
            raise ValueError(f"weights must be non-negative, got min {float(w.min()):.3g}")
        total = float(np.sum(w))
        if abs(total - 1.0) > _WEIGHT_ATOL:
            raise ValueError(
                f"weights must sum to 1 (tolerance {_WEIGHT_ATOL:g}), got sum {total!r} "
                f"(off by {total - 1.0:+.3g})"
            )
        w = w / total
        mu = as_float_array(means, "means")
        if mu.ndim != 2 or mu.shape[0] != k or mu.shape[1] < 1:
            raise ValueError(f"means must have shape ({k}, d) to match weights, got shape {mu.shape}")
        check_finite("means", mu)
        d = int(mu.shape[1])
        c = as_float_array(covs, "covs")
        if c.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got shape {c.shape}")
        covs_c, chols = np.empty((k, d, d)), np.empty((k, d, d))
        for j in range(k):
            covs_c[j], chols[j] = _check_spd(f"covs[{j}]", c[j], d)
        self.dim = d
        self.n_components = k
        self._w = _readonly(w)
        with np.errstate(divide="ignore"):
            self._logw = _readonly(np.log(w))
        self._means = _readonly(mu)
        self._covs = _readonly(covs_c)
        self._chols = _readonly(chols)
        self._precs = _readonly(np.stack([_precision(L, f"covs[{j}]") for j, L in enumerate(chols)]))
        self._lognorms = _readonly(
            -0.5 * d * _LOG_2PI - np.sum(np.log(np.diagonal(chols, axis1=1, axis2=2)), axis=1)
        )
        self._trprec = np.trace(self._precs, axis1=1, axis2=2)

    weights = property(lambda self: self._w, doc="mixture weights, shape (k,)")
    log_weights = property(lambda self: self._logw, doc="log weights, shape (k,)")
    means = property(lambda self: self._means, doc="component means, shape (k, d)")
    covs = property(lambda self: self._covs, doc="component covariances, shape (k, d, d)")
    chols = property(lambda self: self._chols, doc="lower Cholesky factors, shape (k, d, d)")
    precisions = property(lambda self: self._precs, doc="covs⁻¹ by cho_solve, shape (k, d, d)")
    log_norm_consts = property(
        lambda self: self._lognorms, doc="per-component -d/2 log 2π - Σ log L_ii, shape (k,)"
    )

    def __repr__(self):
        return f"GaussianMixture(dim={self.dim}, n_components={self.n_components})"

    def _parts(self, x):
        """Log-density, responsibilities ``r (k, n)`` and component scores ``S (k, n, d)``."""
        k, n = self.n_components, x.shape[0]
        ell = np.empty((k, n))
        S = np.empty((k, n, self.dim))
        for j in range(k):  # loop over components only, vectorised over points
            z = _solve_l(self._chols[j], x - self._means[j])
            with np.errstate(over="ignore"):  # far field: handled by mixture_log_sum_exp
                ell[j] = self._logw[j] + self._lognorms[j] - 0.5 * np.einsum("ni,ni->n", z, z)
            S[j] = -_solve_lt(self._chols[j], z)

        def whitened(cols):
            return np.stack([_solve_l(L, x[cols] - mu) for L, mu in zip(self._chols, self._means)])

        logp, r = mixture_log_sum_exp(ell, self._logw + self._lognorms, whitened)
        return logp, r, S

    def _logpdf(self, x):
        return self._parts(x)[0]

    def _score(self, x):
        _, r, S = self._parts(x)
        return np.einsum("kn,kni->ni", r, S)

    def _score_jacobian(self, x):
        _, r, S = self._parts(x)
        D = _live(r, S - np.einsum("kn,kni->ni", r, S)[None])
        return -np.einsum("kn,kij->nij", r, self._precs) + np.einsum("kn,kni,knj->nij", r, D, D)

    def _score_trace(self, x):
        _, r, S = self._parts(x)
        D = _live(r, S - np.einsum("kn,kni->ni", r, S)[None])
        return -(self._trprec @ r) + np.einsum("kn,kni,kni->n", r, D, D)

    def _score_jvp(self, x, v):
        _, r, S = self._parts(x)
        D = _live(r, S - np.einsum("kn,kni->ni", r, S)[None])
        Pv = np.einsum("kij,nj->kni", self._precs, v)
        return np.einsum("kn,kni->ni", r, np.einsum("kni,ni->kn", D, v)[:, :, None] * D - Pv)

    def _sample(self, n, rng):
        comp = rng.choice(self.n_components, size=n, p=self._w)
        z = rng.standard_normal((n, self.dim))
        return self._means[comp] + np.einsum("nij,nj->ni", self._chols[comp], z)

    def noised(self, sigma) -> "GaussianMixture":
        r"""Exact law of :math:`x + \sigma z`: every :math:`\Sigma_j` becomes :math:`\Sigma_j + \sigma^2 I`."""
        s = _check_sigma(sigma)
        return GaussianMixture(self._w, self._means, self._covs + s * s * np.eye(self.dim))

    def kernel_block(self):
        """Compiled-sampler block: a mixture, isotropic when every covariance is v_j I."""
        logc = self.log_weights + self.log_norm_consts
        v = self.covs[:, 0, 0]
        if np.array_equal(self.covs, v[:, None, None] * np.eye(self.dim)[None]):
            return mixture_block(logc, self.means, iso_taus=1.0 / v)
        return mixture_block(logc, self.means, precs=self.precisions)

    def perturbed(self) -> "Perturbed":
        """Noise-conditional target: ``score(x, sigma) == noised(sigma).score(x)``."""
        return Perturbed(self._w, self._means, self._covs, base=self)


# -------------------------------------------------------------------- Perturbed
class Perturbed:
    r"""Noise-conditional target :math:`p_\sigma = p * N(0, \sigma^2 I)` of a Gaussian mixture.

    For each component with :math:`\Sigma_j = V_j \operatorname{diag}(\lambda_j) V_j^\top`
    (eigendecomposition, once), :math:`\Sigma_j + \sigma^2 I = V_j
    \operatorname{diag}(\lambda_j + \sigma^2) V_j^\top`, so a different
    :math:`\sigma` per point costs no refactorisation:

    .. math::

        y = V_j^\top (x - \mu_j), \qquad
        \ell_j = \log w_j - \tfrac d2 \log 2\pi
                 - \tfrac12 \sum_i \log(\lambda_{ji} + \sigma^2)
                 - \tfrac12 \sum_i \frac{y_i^2}{\lambda_{ji} + \sigma^2},
        \qquad s_j = -V_j \frac{y}{\lambda_j + \sigma^2},

    and :math:`s_\sigma = \sum_j r_j s_j` with log-sum-exp responsibilities, as
    in :class:`GaussianMixture`.  Used by annealed Langevin dynamics with exact
    scores (Song & Ermon 2019, Algorithm 1).

    Attributes
    ----------
    dim, base (the unperturbed distribution), weights (k,), log_weights (k,),
    means (k, d), covs (k, d, d), eigvals (k, d), eigvecs (k, d, d)
    (``covs[j] = eigvecs[j] @ diag(eigvals[j]) @ eigvecs[j].T``).

    References
    ----------
    Y. Song, S. Ermon, NeurIPS 2019, eq (5)-(6) and Algorithm 1; Vincent 2011.
    """

    def __init__(self, weights, means, covs, base=None):
        self.base = base
        self.dim = int(np.shape(means)[1])
        self.n_components = int(np.shape(weights)[0])
        lam, vec = np.linalg.eigh(np.asarray(covs, dtype=float))
        self._w = _readonly(weights)
        with np.errstate(divide="ignore"):
            self._logw = _readonly(np.log(self._w))
        self._means = _readonly(means)
        self._covs = _readonly(covs)
        self._lam = _readonly(lam)
        self._vec = _readonly(vec)

    weights = property(lambda self: self._w)
    log_weights = property(lambda self: self._logw)
    means = property(lambda self: self._means)
    covs = property(lambda self: self._covs)
    eigvals = property(lambda self: self._lam)
    eigvecs = property(lambda self: self._vec)

    def __repr__(self):
        return f"Perturbed({self.base!r})"

    def _check(self, x, sigma):
        x, single = as_points(x, self.dim, "x")
        n = x.shape[0]
        s = per_point_sigma(sigma, n, single)
        _check_sigma_range(s)
        return x, s, single

    def _parts(self, x, sigma):
        k, n, d = self.n_components, x.shape[0], self.dim
        s2 = (sigma * sigma)[:, None]
        ell = np.empty((k, n))
        logc = np.empty((k, n))
        S = np.empty((k, n, d))
        for j in range(k):
            y = (x - self._means[j]) @ self._vec[j]
            den = self._lam[j][None, :] + s2
            logc[j] = self._logw[j] - 0.5 * d * _LOG_2PI - 0.5 * np.sum(np.log(den), axis=1)
            with np.errstate(over="ignore"):  # far field: handled by mixture_log_sum_exp
                ell[j] = logc[j] - 0.5 * np.sum(y * y / den, axis=1)
            S[j] = -(y / den) @ self._vec[j].T

        def whitened(cols):  # y_j / sqrt(lambda_j + sigma^2), (k, m, d)
            y = np.stack([(x[cols] - mu) @ V for mu, V in zip(self._means, self._vec)])
            return y / np.sqrt(self._lam[:, None, :] + s2[cols][None])

        logp, r = mixture_log_sum_exp(ell, logc, whitened)
        return logp, r, S

    def logpdf(self, x, sigma) -> np.ndarray:
        r""":math:`\log p_\sigma(x)`; ``sigma`` a scalar or one per point, shape ``(n,)``."""
        x, s, single = self._check(x, sigma)
        out = self._parts(x, s)[0]
        return out[0] if single else out

    def score(self, x, sigma) -> np.ndarray:
        r""":math:`\nabla_x \log p_\sigma(x)`, shape ``(n, d)``; ``sigma`` scalar or ``(n,)``."""
        x, s, single = self._check(x, sigma)
        _, r, S = self._parts(x, s)
        out = np.einsum("kn,kni->ni", r, S)
        return out[0] if single else out

    def kernel_levels(self, sigmas):
        """Compiled-sampler blocks, one per noise level (``noised(sigma_i)``), and unit score scales."""
        return [self.noised(float(s)).kernel_block() for s in sigmas], np.ones(len(sigmas))

    def noised(self, sigma):
        """The distribution :math:`p_\\sigma` itself (same as ``base.noised(sigma)``)."""
        s = _check_sigma(sigma)
        if self.n_components == 1 and isinstance(self.base, Gaussian):
            return self.base.noised(s)
        return GaussianMixture(self._w, self._means, self._covs + s * s * np.eye(self.dim))


# -------------------------------------------------------------------- StudentT
#: below this a = nu/2 the constant is a plain gammaln difference (its terms are
#: then < ~30, so it loses < 1e-14); above, Stirling's series
_STIRLING_MIN = 10.0
#: Stirling's series of log Γ(z) - [(z - ½) log z - z + ½ log 2π]: B_2k / (2k(2k-1) z^(2k-1)),
#: k = 1..7; the first omitted term is < 3e-17 for z >= 10
_STIRLING = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0, 1.0 / 1188.0,
             -691.0 / 360360.0, 1.0 / 156.0)


def _stirling_tail(z: float) -> float:
    """log Γ(z) - [(z - ½) log z - z + ½ log 2π] for z >= 10, to < 3e-17."""
    w = 1.0 / (z * z)
    acc = 0.0
    for coef in reversed(_STIRLING):
        acc = acc * w + coef
    return acc / z


def _t_log_norm(nu: float, d: int) -> float:
    r""":math:`\log\Gamma(\tfrac{\nu+d}2) - \log\Gamma(\tfrac\nu2) - \tfrac d2\log(\nu\pi)`, accurate for every ν > 0.

    The plain difference of ``gammaln`` values cancels catastrophically for large ν
    (both are ~ ν/2 log ν/2, so 1e-16 of them is 2e-4 at ν = 1e12 and everything
    at ν = 1e16).  With :math:`a = \nu/2`, :math:`h = d/2` and Stirling's
    :math:`\log\Gamma(z) = (z-\tfrac12)\log z - z + \tfrac12\log 2\pi + R(z)`,
    the large terms cancel analytically:

    .. math::

        \log\Gamma(a+h) - \log\Gamma(a) - h\log(2\pi a)
          = (a + h - \tfrac12)\,\operatorname{log1p}(h/a) - h - h\log 2\pi + R(a+h) - R(a),

    every term of which is O(h) or smaller, so the result is accurate to a few ulp
    of :math:`h\log 2\pi` for every :math:`a \ge 10`; it tends to the Gaussian's
    :math:`-\tfrac d2\log 2\pi` as ν → ∞.
    """
    a, h = 0.5 * nu, 0.5 * d
    if a < _STIRLING_MIN:
        return float(gammaln(a + h) - gammaln(a) - h * np.log(nu * np.pi))
    return float((a + h - 0.5) * np.log1p(h / a) - h - h * _LOG_2PI
                 + (_stirling_tail(a + h) - _stirling_tail(a)))


class StudentT(_Distribution):
    r"""Multivariate Student t with location :math:`\mu`, shape :math:`\Sigma`, ``df`` :math:`\nu`.

    Same parametrisation as ``scipy.stats.multivariate_t(loc, shape, df)``.
    With :math:`u = \Sigma^{-1}(x-\mu)`, :math:`q = (x-\mu)^\top u` and
    :math:`c = (\nu + d)/(\nu + q)`:

    .. math::

        \log p(x) = \log\Gamma\!\left(\tfrac{\nu+d}2\right) - \log\Gamma\!\left(\tfrac\nu2\right)
                    - \tfrac d2 \log(\nu\pi) - \log\det L
                    - \tfrac{\nu+d}{2}\log\!\left(1 + \tfrac q\nu\right),

        s(x) = -c\,u, \qquad
        \nabla_x s = -c\,\Sigma^{-1} + \frac{2c}{\nu + q}\, u u^\top, \qquad
        \operatorname{tr}\nabla_x s = -c\operatorname{tr}\Sigma^{-1} + \frac{2c}{\nu+q}\lVert u\rVert^2,

    using :math:`\nabla q = 2u` and :math:`\nabla c = -2c\,u/(\nu + q)`.
    Sampling: :math:`x = \mu + L z / \sqrt{g/\nu}`, :math:`z\sim N(0,I)`,
    :math:`g \sim \chi^2_\nu`.

    The normalising constant comes from :func:`_t_log_norm`, which cancels the
    large terms of the ``gammaln`` difference analytically (Stirling's series for
    :math:`\nu \ge 20`): ``logpdf`` is accurate to ~1e-16 relative for every
    :math:`\nu` up to the largest float and tends to the Gaussian's as
    :math:`\nu\to\infty`, where the plain difference (as in
    ``scipy.stats.multivariate_t``) is off by 5e-4 at :math:`\nu = 10^{12}` and by
    tens of nats from :math:`10^{16}` on.  Far from :math:`\mu`, where :math:`q`
    overflows, everything is computed from rescaled :math:`z` (see ``_parts``).

    ``noised`` and ``perturbed`` raise ``NotImplementedError``: a t convolved
    with a Gaussian has no closed form.

    Attributes
    ----------
    dim, loc, shape, df, chol, precision (read-only).

    References
    ----------
    S. Kotz, S. Nadarajah, *Multivariate t Distributions and Their
    Applications*, 2004, eq (1.1); eq. (1).
    """

    def __init__(self, loc, shape, df):
        loc = _check_vector("loc", loc)
        self.dim = int(loc.shape[0])
        shp, chol = _check_spd("shape", shape, self.dim)
        self._df = check_positive("df", df)
        self._loc = _readonly(loc)
        self._shape = _readonly(shp)
        self._chol = _readonly(chol)
        self._prec = _readonly(_precision(chol, "shape"))
        self._lognorm = float(_t_log_norm(self._df, self.dim) - np.sum(np.log(np.diag(chol))))

    loc = property(lambda self: self._loc, doc="location, shape (d,)")
    shape = property(lambda self: self._shape, doc="shape matrix Σ (scipy's ``shape``), (d, d)")
    df = property(lambda self: self._df, doc="degrees of freedom ν > 0")
    chol = property(lambda self: self._chol, doc="lower Cholesky factor of ``shape``")
    precision = property(lambda self: self._prec, doc="shape⁻¹ by cho_solve")
    log_norm_const = property(lambda self: self._lognorm)

    def __repr__(self):
        return f"StudentT(dim={self.dim}, df={self._df:g})"

    def _parts(self, x):
        r"""``(log1p(q/ν), c u, c, κ, û)`` with :math:`s = -c u` and :math:`\nabla s = -cP + κ\,ûû^\top`.

        Near the centre :math:`û = u` and :math:`κ = 2c/(ν+q)`.  Where :math:`q`
        or :math:`q/ν` overflows (:math:`\lVert z\rVert \gtrsim 10^{154}`), the
        same quantities come from :math:`\hat z = z/t`, :math:`t = \max_i |z_i|`,
        :math:`\hat q = \lVert\hat z\rVert^2`, :math:`û = u/t`,
        :math:`D = ν/t + t\hat q = (ν + q)/t`: :math:`c u = (ν+d)\,û/D`,
        :math:`c = (ν+d)/(tD)`, :math:`κ = 2(ν+d)/D^2` and
        :math:`\log(1 + q/ν) = \operatorname{logaddexp}(0, 2\log t + \log\hat q - \log ν)`,
        all finite (the score decays like :math:`(ν+d)\,u/q`).
        """
        nu, d = self._df, self.dim
        z = _solve_l(self._chol, x - self._loc)
        u = _solve_lt(self._chol, z)
        with np.errstate(over="ignore"):
            q = np.einsum("ni,ni->n", z, z)
            nq = nu + q
            far = ~(np.isfinite(nq) & np.isfinite(q / nu))
        c = (nu + d) / nq
        cu = c[:, None] * u
        kap = 2.0 * c / nq
        with np.errstate(over="ignore"):
            l1p = np.log1p(q / nu)
        if np.any(far):
            u = u.copy()
            t = np.max(np.abs(z[far]), axis=1)
            zh = z[far] / t[:, None]
            uh = _solve_lt(self._chol, zh)
            qh = np.einsum("ni,ni->n", zh, zh)
            den = nu / t + t * qh
            g = (nu + d) / den
            u[far] = uh
            cu[far] = g[:, None] * uh
            c[far] = g / t
            kap[far] = 2.0 * g / den
            l1p[far] = np.logaddexp(0.0, 2.0 * np.log(t) + np.log(qh) - np.log(nu))
        return l1p, cu, c, kap, u

    def _logpdf(self, x):
        l1p = self._parts(x)[0]
        with np.errstate(over="ignore"):  # -inf only where the true value is below -1.8e308
            return self._lognorm - 0.5 * (self._df + self.dim) * l1p

    def _score(self, x):
        return -self._parts(x)[1]

    def _score_jacobian(self, x):
        _, _, c, kap, u = self._parts(x)
        return -c[:, None, None] * self._prec + kap[:, None, None] * u[:, :, None] * u[:, None, :]

    def _score_trace(self, x):
        _, _, c, kap, u = self._parts(x)
        return -c * np.trace(self._prec) + kap * np.einsum("ni,ni->n", u, u)

    def _score_jvp(self, x, v):
        _, _, c, kap, u = self._parts(x)
        uv = np.einsum("ni,ni->n", u, v)
        return -c[:, None] * (v @ self._prec) + (kap * uv)[:, None] * u

    def kernel_block(self):
        """Compiled-sampler block: Student t."""
        return student_block(self.df, self.log_norm_const, self.loc, self.precision)

    def _sample(self, n, rng):
        z = rng.standard_normal((n, self.dim)) @ self._chol.T
        # g/ν with g ~ χ²_ν is G/(ν/2) with G ~ Gamma(ν/2): the same draws as
        # rng.chisquare(ν) (which returns 2G) and the same numbers, but 2G cannot
        # overflow for ν near the largest float
        a = 0.5 * self._df
        g_over_nu = rng.standard_gamma(a, size=n) / a
        return self._loc + z / np.sqrt(g_over_nu)[:, None]


# ---------------------------------------------------------------------- Banana
#: allowed sigma1 range: the banana squares sigma1 and x1 (~ sigma1) and divides
#: by sigma1**2; outside [1e-150, 1e150] those overflow or underflow float64
_BANANA_SIGMA1 = (1e-150, 1e150)
#: bound on |b| sigma1**2, the size of the twist b(x1² - sigma1²) at typical x1:
#: above it y and y² (in log p), b² x1² (in the Jacobian) and Var x2 = 1 + 2b²σ1⁴ overflow
_BANANA_TWIST = 1e150


class Banana(_Distribution):
    r"""Haario et al.'s twisted Gaussian ("banana") in 2-D.

    :math:`x_1 \sim N(0, \sigma_1^2)` and, given :math:`x_1`,
    :math:`y = x_2 + b(x_1^2 - \sigma_1^2) \sim N(0, 1)`.  The map
    :math:`(x_1, x_2) \mapsto (x_1, y)` has unit Jacobian determinant, so

    .. math::

        \log p(x) = -\frac{x_1^2}{2\sigma_1^2} - \frac{y^2}{2} - \log(2\pi\sigma_1),
        \qquad y = x_2 + b(x_1^2 - \sigma_1^2),

        s(x) = \begin{pmatrix} -x_1/\sigma_1^2 - 2 b x_1 y \\ -y \end{pmatrix},
        \qquad
        \nabla_x s = \begin{pmatrix} -1/\sigma_1^2 - 2by - 4b^2x_1^2 & -2bx_1 \\
                                     -2bx_1 & -1 \end{pmatrix}.

    :math:`E x = 0`, :math:`\operatorname{Var} x_1 = \sigma_1^2`,
    :math:`\operatorname{Var} x_2 = 1 + 2b^2\sigma_1^4`.  Defaults ``b=0.1``,
    ``sigma1=10`` are Haario et al.'s moderately twisted case.  ``noised`` and
    ``perturbed`` raise ``NotImplementedError``.

    References
    ----------
    H. Haario, E. Saksman, J. Tamminen, Computational Statistics 14 (1999),
    Section 4 (twisted Gaussian target); eq. (1).
    """

    dim = 2

    def __init__(self, b=0.1, sigma1=10.0):
        """``b`` finite and ``sigma1`` in [1e-150, 1e150] with ``|b| sigma1**2 <= 1e150``
        (``ValueError`` otherwise: float64 overflow would be certain)."""
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real):
            raise TypeError(f"b must be a real number, got {type(b).__name__}")
        if not np.isfinite(b):
            raise ValueError(f"b must be finite, got {b!r}")
        self._b = float(b)
        self._s1 = check_positive("sigma1", sigma1)
        lo, hi = _BANANA_SIGMA1
        if not lo <= self._s1 <= hi:
            raise ValueError(
                f"sigma1 must lie in [{lo:g}, {hi:g}], got {sigma1!r}: log p, the score and "
                f"the sampler square sigma1 and x1 (of size sigma1) and divide by sigma1**2, "
                f"which overflows float64 (max ~1.8e308) outside this range"
            )
        twist = abs(self._b) * self._s1 * self._s1
        if twist > _BANANA_TWIST:
            raise ValueError(
                f"|b| * sigma1**2 must be <= {_BANANA_TWIST:g}, got {twist:.3g} (b={b!r}, "
                f"sigma1={sigma1!r}): the twist b*(x1**2 - sigma1**2) is of that size at typical "
                f"points, and its square (in log p), b**2 x1**2 (in the Jacobian) and "
                f"Var x2 = 1 + 2 b**2 sigma1**4 overflow float64 beyond it"
            )

    b = property(lambda self: self._b, doc="twist strength")
    sigma1 = property(lambda self: self._s1, doc="standard deviation of x1")

    def __repr__(self):
        return f"Banana(b={self._b:g}, sigma1={self._s1:g})"

    def _y(self, x):
        return x[:, 1] + self._b * (x[:, 0] ** 2 - self._s1 ** 2)

    def _logpdf(self, x):
        y = self._y(x)
        return -0.5 * (x[:, 0] / self._s1) ** 2 - 0.5 * y * y - np.log(2.0 * np.pi * self._s1)

    def _score(self, x):
        y, x1, b = self._y(x), x[:, 0], self._b
        return np.stack([-x1 / self._s1 ** 2 - 2.0 * b * x1 * y, -y], axis=1)

    def _score_jacobian(self, x):
        y, x1, b = self._y(x), x[:, 0], self._b
        J = np.empty((x.shape[0], 2, 2))
        J[:, 0, 0] = -1.0 / self._s1 ** 2 - 2.0 * b * y - 4.0 * b * b * x1 * x1
        J[:, 0, 1] = J[:, 1, 0] = -2.0 * b * x1
        J[:, 1, 1] = -1.0
        return J

    def _score_trace(self, x):
        y, x1, b = self._y(x), x[:, 0], self._b
        return -1.0 / self._s1 ** 2 - 2.0 * b * y - 4.0 * b * b * x1 * x1 - 1.0

    def _score_jvp(self, x, v):
        y, x1, b = self._y(x), x[:, 0], self._b
        j00 = -1.0 / self._s1 ** 2 - 2.0 * b * y - 4.0 * b * b * x1 * x1
        j01 = -2.0 * b * x1
        return np.stack([j00 * v[:, 0] + j01 * v[:, 1], j01 * v[:, 0] - v[:, 1]], axis=1)

    def kernel_block(self):
        """Compiled-sampler block: the banana."""
        return banana_block(self.b, self.sigma1)

    def _sample(self, n, rng):
        z = rng.standard_normal((n, 2))
        x1 = self._s1 * z[:, 0]
        return np.stack([x1, z[:, 1] - self._b * (x1 ** 2 - self._s1 ** 2)], axis=1)
