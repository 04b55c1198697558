r"""Affine score models: :class:`GaussianModel` and :class:`LinearScore`.

Derivation: docs/derivations.md §7.1–7.2.

Both have a constant Jacobian, so every loss on them is a polynomial of degree
two in ``x`` and the population losses are exact under Gauss–Hermite
quadrature.  All derivatives below are derived by hand and written next to the
code that computes them.

References
----------
A. Hyvärinen, "Estimation of non-normalized statistical models by score
matching", JMLR 6 (2005), Sec. 3 (Gaussian example) -- the ISM (eq. (3))
minimiser of :class:`GaussianModel` is the sample mean and the inverse of the
biased sample covariance.
"""
from __future__ import annotations

import numpy as np

from .._kernels.target_blocks import affine_block
from .._validation import as_float_array, check_finite
from .base import ScoreModel

__all__ = ["GaussianModel", "LinearScore"]


def _check_dim(dim) -> int:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


class GaussianModel(ScoreModel):
    r"""Gaussian score model :math:`s_\theta(x) = -P\,(x-\mu)`, :math:`P = LL^\top`.

    .. math::

        s_\theta(x) = -LL^\top (x - \mu), \qquad
        \nabla_x s_\theta = -LL^\top, \qquad
        \operatorname{tr}\nabla_x s_\theta = -\lVert L\rVert_F^2 .

    ``theta = [mu (d), L[np.tril_indices(d)] (d(d+1)/2)]``: the raw entries of
    the lower-triangular factor, row-major, no exponential on the diagonal (so
    ``P`` is positive semi-definite for every ``theta``).

    ``init`` returns :math:`\mu = 0`, :math:`L = I` (the standard normal's score);
    the ``rng`` is not used.

    Parameter gradients (``G`` is the gradient of a scalar ``q`` with respect to
    ``P`` taken as an unconstrained matrix; :math:`dq = \operatorname{tr}(G^\top dP)`
    and :math:`dP = dL\,L^\top + L\,dL^\top` give :math:`\partial q/\partial L = (G+G^\top)L`,
    of which the lower triangle is kept):

    * ``score_vjp_params``: :math:`q = -\sum_k c_k^\top P(x_k-\mu)`, so
      :math:`\partial q/\partial\mu = P\sum_k c_k` and :math:`G = -\sum_k c_k (x_k-\mu)^\top`.
    * ``trace_grad_params``: :math:`q = -(\sum_k w_k)\lVert L\rVert_F^2`, so
      :math:`\partial q/\partial L = -2(\sum_k w_k) L`, nothing on :math:`\mu`.
    * ``vjv_grad_params``: :math:`q = -\sum_k w_k v_k^\top P v_k`, so
      :math:`G = -\sum_k w_k v_k v_k^\top` (symmetric) and :math:`\partial q/\partial L = 2GL`.

    References
    ----------
    Hyvärinen (2005), JMLR 6, Sec. 3; eq. (1).

    Examples
    --------
    >>> import numpy as np
    >>> m = GaussianModel(2)
    >>> theta = GaussianModel.theta_from(np.zeros(2), np.eye(2))
    >>> m.score(theta, np.array([1.0, 2.0]))
    array([-1., -2.])
    """

    def __init__(self, dim: int):
        self.dim = _check_dim(dim)
        d = self.dim
        self._tril = np.tril_indices(d)
        self.n_params = d + d * (d + 1) // 2
        self.layout = (
            f"[mu ({d}), L[np.tril_indices({d})] ({d * (d + 1) // 2}): lower-triangular "
            "Cholesky factor of the precision P = L L^T, row-major, raw entries]"
        )

    # ------------------------------------------------------------ conversions
    def unpack(self, theta) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(mu, L)`` from ``theta`` (``L`` lower triangular, ``(d, d)``)."""
        theta = self._check_theta(theta)
        return self._unpack(theta)

    def _unpack(self, theta):
        d = self.dim
        mu = theta[:d]
        L = np.zeros((d, d))
        L[self._tril] = theta[d:]
        return mu, L

    def _pack_L_grad(self, g_mu, g_L):
        return np.concatenate([g_mu, g_L[self._tril]])

    @staticmethod
    def theta_from(mean, precision) -> np.ndarray:
        r"""``theta`` for :math:`s(x) = -P(x - \text{mean})` with ``P = precision``.

        ``L`` is the Cholesky factor of ``precision`` (positive diagonal).
        """
        mean = as_float_array(mean, "mean")
        precision = as_float_array(precision, "precision")
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape (d,), got shape {mean.shape}")
        d = mean.shape[0]
        if precision.shape != (d, d):
            raise ValueError(f"precision must have shape ({d}, {d}) to match mean, got shape {precision.shape}")
        check_finite("mean", mean)
        check_finite("precision", precision)
        if not np.allclose(precision, precision.T, rtol=1e-12, atol=0.0):
            raise ValueError("precision must be symmetric")
        try:
            L = np.linalg.cholesky(precision)
        except np.linalg.LinAlgError as exc:
            raise ValueError("precision must be positive definite") from exc
        return np.concatenate([mean, L[np.tril_indices(d)]])

    # ------------------------------------------------------------- primitives
    def _kernel_block(self, theta):
        r"""Compiled-sampler block: affine, :math:`s = -LL^\top(x - \mu)`."""
        mu, _, P = self._precision(theta)
        return affine_block(-P, mu, np.zeros(self.dim))

    def _log_density(self, theta):
        r""":math:`\log p = -\tfrac12\lVert L^\top(x - \mu)\rVert^2` up to a constant."""
        mu, L = self._unpack(theta)
        return lambda x: -0.5 * np.sum(((x - mu) @ L) ** 2, axis=1)

    def _init(self, rng):
        d = self.dim
        return np.concatenate([np.zeros(d), np.eye(d)[self._tril]])

    def _precision(self, theta):
        mu, L = self._unpack(theta)
        with np.errstate(over="ignore", invalid="ignore"):
            P = L @ L.T
        if not np.all(np.isfinite(P)):
            raise FloatingPointError(
                f"GaussianModel: the precision P = L L^T overflows float64 at this theta "
                f"(max |L| = {float(np.max(np.abs(L))):.3g}; |L| must stay below ~1e154)"
            )
        return mu, L, P

    def _score(self, theta, x):
        mu, _, P = self._precision(theta)
        return -(x - mu) @ P  # P symmetric: row k is -(P (x_k - mu))^T

    def _score_jacobian(self, theta, x):
        _, _, P = self._precision(theta)
        return np.broadcast_to(-P, (x.shape[0], self.dim, self.dim)).copy()

    def _score_trace(self, theta, x):
        _, L, _ = self._precision(theta)  # raises if L L^T overflows
        return np.full(x.shape[0], -np.sum(L * L))

    def _score_jvp(self, theta, x, v):
        _, _, P = self._precision(theta)
        return -v @ P

    def _score_vjp_params(self, theta, x, ct):
        mu, L, P = self._precision(theta)
        g_mu = P @ ct.sum(axis=0)
        G = -ct.T @ (x - mu)  # -sum_k c_k (x_k - mu)^T
        return self._pack_L_grad(g_mu, (G + G.T) @ L)

    def _trace_grad_params(self, theta, x, w):
        _, L = self._unpack(theta)
        return self._pack_L_grad(np.zeros(self.dim), -2.0 * w.sum() * L)

    def _vjv_grad_params(self, theta, x, v, w):
        _, L = self._unpack(theta)
        G = -(v * w[:, None]).T @ v  # -sum_k w_k v_k v_k^T
        return self._pack_L_grad(np.zeros(self.dim), 2.0 * G @ L)


class LinearScore(ScoreModel):
    r"""Affine score model :math:`s_\theta(x) = A x + b` (no symmetry imposed on ``A``).

    .. math::

        s_\theta(x) = A x + b, \qquad \nabla_x s_\theta = A, \qquad
        \operatorname{tr}\nabla_x s_\theta = \operatorname{tr} A .

    ``theta = [A.ravel() (d*d, row-major), b (d)]``.  ``init`` returns
    :math:`A = -I`, :math:`b = 0` (the standard normal's score); the ``rng``
    is not used.

    Parameter gradients: :math:`\partial(\sum_k c_k^\top s(x_k))/\partial A = \sum_k c_k x_k^\top`,
    :math:`/\partial b = \sum_k c_k`; :math:`\partial(\sum_k w_k \operatorname{tr}A)/\partial A = (\sum_k w_k) I`;
    :math:`\partial(\sum_k w_k v_k^\top A v_k)/\partial A = \sum_k w_k v_k v_k^\top`.

    References
    ----------
    Eq. (1)-(3); Hyvärinen (2005), JMLR 6.

    Examples
    --------
    >>> import numpy as np
    >>> m = LinearScore(2)
    >>> m.score(m.init(), np.array([1.0, 2.0]))
    array([-1., -2.])
    """

    def __init__(self, dim: int):
        self.dim = _check_dim(dim)
        d = self.dim
        self.n_params = d * d + d
        self.layout = f"[A.ravel() ({d * d}, row-major, s = A x + b), b ({d})]"

    def unpack(self, theta) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(A, b)`` from ``theta``."""
        return self._unpack(self._check_theta(theta))

    def _unpack(self, theta):
        d = self.dim
        return theta[: d * d].reshape(d, d), theta[d * d:]

    def _kernel_block(self, theta):
        """Compiled-sampler block: affine, :math:`s = Ax + b` (log p only when A is symmetric)."""
        A, b = self._unpack(theta)
        return affine_block(A, np.zeros(self.dim), b, has_logp=bool(np.array_equal(A, A.T)))

    def _log_density(self, theta):
        r""":math:`\log p = \tfrac12 x^\top A x + b^\top x` up to a constant, when A is symmetric
        (a gradient field); ``None`` otherwise (no log-density exists)."""
        A, b = self._unpack(theta)
        if not np.array_equal(A, A.T):
            return None
        return lambda x: 0.5 * np.einsum("ni,ij,nj->n", x, A, x) + x @ b

    def _init(self, rng):
        d = self.dim
        return np.concatenate([-np.eye(d).ravel(), np.zeros(d)])

    def _score(self, theta, x):
        A, b = self._unpack(theta)
        return x @ A.T + b

    def _score_jacobian(self, theta, x):
        A, _ = self._unpack(theta)
        return np.broadcast_to(A, (x.shape[0], self.dim, self.dim)).copy()

    def _score_trace(self, theta, x):
        A, _ = self._unpack(theta)
        return np.full(x.shape[0], np.trace(A))

    def _score_jvp(self, theta, x, v):
        A, _ = self._unpack(theta)
        return v @ A.T

    def _score_vjp_params(self, theta, x, ct):
        return np.concatenate([(ct.T @ x).ravel(), ct.sum(axis=0)])

    def _trace_grad_params(self, theta, x, w):
        d = self.dim
        return np.concatenate([(w.sum() * np.eye(d)).ravel(), np.zeros(d)])

    def _vjv_grad_params(self, theta, x, v, w):
        return np.concatenate([((v * w[:, None]).T @ v).ravel(), np.zeros(self.dim)])
