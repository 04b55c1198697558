r"""Gaussian-mixture score model with isotropic components.

Derivation: docs/derivations.md §7.3.

.. math::

    p_\theta(x) = \sum_{j=1}^k \pi_j\,\mathcal N(x;\mu_j, \tau_j^{-1} I), \qquad
    \pi = \operatorname{softmax}(\alpha), \qquad \tau_j = e^{\eta_j},

    s_\theta(x) = \nabla_x \log p_\theta(x) = \sum_j r_j(x)\,g_j(x), \qquad
    g_j = -\tau_j (x-\mu_j), \qquad r = \operatorname{softmax}(\ell),

    \ell_j(x) = \alpha_j + \tfrac d2 \eta_j - \tfrac{\tau_j}{2}\lVert x-\mu_j\rVert^2 .

The responsibilities ``r`` are computed by log-sum-exp, so the model is finite
and accurate far from every component; where even the squared distances
overflow (:math:`\lVert x\rVert \gtrsim 10^{154}`) they are recomputed from
rescaled distances (:func:`refscore.distributions.mixture_log_sum_exp`), so the score is
that of the component nearest in :math:`\tau_j\lVert x-\mu_j\rVert^2`, never NaN.  With :math:`\nabla_x r_j = r_j(g_j - s)`,

.. math::

    \nabla_x s = -\Big(\sum_j r_j\tau_j\Big) I + \sum_j r_j (g_j - s)(g_j - s)^\top ,

a symmetric matrix (the Hessian of :math:`\log p_\theta`); the centred form has
no cancellation when one responsibility dominates.
"""
from __future__ import annotations

import numpy as np

from .._kernels.target_blocks import mixture_block
from ..distributions import mixture_log_sum_exp
from .base import ScoreModel
from .gaussian import _check_dim

__all__ = ["GaussianMixtureModel"]


class GaussianMixtureModel(ScoreModel):
    r"""Score of a ``k``-component isotropic Gaussian mixture (module docstring).

    ``theta = [alpha (k), mu (k*d, row-major: mu[j] = theta[k + j*d : k + (j+1)*d]),
    log_tau (k)]``; weights are ``softmax(alpha)``, component ``j`` has
    covariance ``I / tau_j``.

    ``init(rng)`` returns :math:`\alpha = 0` (equal weights),
    :math:`\mu_j \sim \mathcal N(0, I)` drawn from ``rng``, :math:`\log\tau = 0`.

    Parameter gradients.  Every primitive's scalar is a per-point function
    :math:`F(r, g, \tau)`; write :math:`F_r, F_g, F_\tau` for its partials with
    ``r``, ``g``, ``tau`` held independent.  Through the softmax,
    :math:`\partial F/\partial\ell_j = r_j(F_{r_j} - \sum_i r_i F_{r_i})`, and with
    :math:`\partial\ell_j/\partial\alpha_j = 1`, :math:`\partial\ell_j/\partial\mu_j = -g_j`,
    :math:`\partial\ell_j/\partial\eta_j = \tfrac d2 - \tfrac{\tau_j}2\lVert x-\mu_j\rVert^2`,
    :math:`\partial g_j/\partial\mu_j = \tau_j I`, :math:`\partial g_j/\partial\eta_j = g_j`,
    :math:`\partial\tau_j/\partial\eta_j = \tau_j`:

    .. math::

        \frac{\partial F}{\partial\alpha_j} = \frac{\partial F}{\partial\ell_j},\quad
        \frac{\partial F}{\partial\mu_j} = -\frac{\partial F}{\partial\ell_j} g_j + \tau_j F_{g_j},\quad
        \frac{\partial F}{\partial\eta_j} = \frac{\partial F}{\partial\ell_j}
            \Big(\frac d2 - \frac{\tau_j}2\lVert x-\mu_j\rVert^2\Big) + F_{g_j}^\top g_j + \tau_j F_{\tau_j}.

    With :math:`u_j = g_j - s` (``F_r`` shifted by constants, which the softmax ignores):

    * :math:`F = c^\top s`: :math:`F_{r_j} = c^\top u_j`, :math:`F_{g_j} = r_j c`, :math:`F_{\tau_j} = 0`;
    * :math:`F = w\operatorname{tr}J`: :math:`F_{r_j} = w(\lVert u_j\rVert^2 - d\tau_j)`,
      :math:`F_{g_j} = 2 w r_j u_j`, :math:`F_{\tau_j} = -w d r_j`;
    * :math:`F = w\,v^\top J v`: :math:`F_{r_j} = w((u_j^\top v)^2 - \tau_j\lVert v\rVert^2)`,
      :math:`F_{g_j} = 2 w r_j (u_j^\top v)\,v`, :math:`F_{\tau_j} = -w r_j\lVert v\rVert^2`.

    Examples
    --------
    >>> import numpy as np
    >>> m = GaussianMixtureModel(1, 2)
    >>> theta = np.array([0.0, 0.0, -1.0, 1.0, 0.0, 0.0])
    >>> float(m.score(theta, np.array([0.0]))[0])
    0.0
    """

    def __init__(self, dim: int, k: int):
        self.dim = _check_dim(dim)
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)
        d, k = self.dim, self.k
        self.n_params = k + k * d + k
        self.layout = (
            f"[alpha ({k}): weights softmax(alpha), mu ({k}x{d} row-major), "
            f"log_tau ({k}): component j has covariance I/tau_j]"
        )

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, k={self.k}, n_params={self.n_params})"

    def unpack(self, theta):
        """Return ``(alpha (k,), mu (k, d), log_tau (k,))`` from ``theta``."""
        return self._unpack(self._check_theta(theta))

    def _unpack(self, theta):
        k, d = self.k, self.dim
        return theta[:k], theta[k: k + k * d].reshape(k, d), theta[k + k * d:]

    def _kernel_block(self, theta):
        r"""Compiled-sampler block: an isotropic mixture, :math:`\tau_j = e^{\eta_j}`, weights softmax(α)."""
        alpha, mu, eta = self._unpack(theta)
        d = self.dim
        logw = alpha - np.max(alpha)
        logw = logw - np.log(np.sum(np.exp(logw)))
        logc = logw + 0.5 * d * eta - 0.5 * d * np.log(2.0 * np.pi)
        return mixture_block(logc, mu, iso_taus=np.exp(eta))

    def _log_density(self, theta):
        r""":math:`\log p = \operatorname{logsumexp}_j[\alpha_j + \tfrac d2\eta_j - \tfrac12 e^{\eta_j}\lVert x-\mu_j\rVert^2]` + const."""
        alpha, mu, eta = self._unpack(theta)
        d = self.dim

        def log_density(x):
            with np.errstate(over="ignore"):  # far field: redone by mixture_log_sum_exp
                sq = np.sum((x[:, None, :] - mu[None]) ** 2, axis=2)
                ell = alpha + 0.5 * d * eta - 0.5 * np.exp(eta) * sq
            top = ell.max(axis=1)
            if np.all(np.isfinite(top)):
                return top + np.log(np.sum(np.exp(ell - top[:, None]), axis=1))
            return self._far_lse(alpha, mu, eta, x, ell)[0]

        return log_density

    def _init(self, rng):
        k, d = self.k, self.dim
        return np.concatenate([np.zeros(k), rng.standard_normal(k * d), np.zeros(k)])

    # ------------------------------------------------------------ forward parts
    def _far_lse(self, alpha, mu, eta, x, ell):
        """``(log p, r)`` (``(n,)``, ``(n, k)``) by the overflow-safe log-sum-exp, from logits ``ell (n, k)``."""
        sd = np.exp(0.5 * eta)

        def whitened(rows):  # sqrt(tau_j) (x - mu_j), (k, m, d)
            return sd[:, None, None] * (x[rows][None, :, :] - mu[:, None, :])

        logp, r = mixture_log_sum_exp(ell.T, alpha + 0.5 * self.dim * eta, whitened)
        return logp, r.T

    def _parts(self, theta, x):
        """Responsibilities r (n,k), component scores g (n,k,d), centred u = g - s,
        score s (n,d), tau (k,), squared distances sq (n,k).

        ``u`` is zeroed where ``r == 0``: every use of it is weighted by ``r``, and far
        from a component ``u u^T`` may overflow (0 * inf would be NaN).
        """
        alpha, mu, eta = self._unpack(theta)
        with np.errstate(over="ignore"):
            tau = np.exp(eta)
        if not np.all(np.isfinite(tau)):
            raise FloatingPointError(
                f"{type(self).__name__}: log_tau up to {float(np.max(eta)):.6g} makes tau = exp(log_tau) "
                f"overflow float64 (log_tau must stay below ~709)"
            )
        diff = x[:, None, :] - mu[None, :, :]
        with np.errstate(over="ignore"):  # far field: redone by _far_lse
            sq = np.einsum("nkd,nkd->nk", diff, diff)
            ell = alpha + 0.5 * self.dim * eta - 0.5 * tau * sq
        top = ell.max(axis=1, keepdims=True)
        if np.all(np.isfinite(top)):
            ell = ell - top  # log-sum-exp shift
            r = np.exp(ell)
            r /= r.sum(axis=1, keepdims=True)
        else:
            r = self._far_lse(alpha, mu, eta, x, ell)[1]
        g = -tau[None, :, None] * diff
        s = np.einsum("nk,nkd->nd", r, g)
        u = np.where(r[:, :, None] > 0.0, g - s[:, None, :], 0.0)
        return r, g, u, s, tau, sq

    def _backprop(self, r, g, tau, sq, F_r, F_g, F_tau):
        """Chain rule from per-point partials (n,k), (n,k,d), (n,k) to theta (P,)."""
        F_r = np.where(r > 0.0, F_r, 0.0)  # weighted by r below; far field may hold inf
        F_l = r * (F_r - np.sum(r * F_r, axis=1, keepdims=True))
        g_alpha = F_l.sum(axis=0)
        g_mu = np.einsum("nk,nkd->kd", -F_l, g) + tau[:, None] * F_g.sum(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            dl_deta = np.where(F_l != 0.0, F_l * (0.5 * self.dim - 0.5 * tau * sq), 0.0)
        g_eta = (
            np.sum(dl_deta, axis=0)
            + np.einsum("nkd,nkd->k", F_g, g)
            + tau * F_tau.sum(axis=0)
        )
        return np.concatenate([g_alpha, g_mu.ravel(), g_eta])

    # --------------------------------------------------------------- primitives
    def _score(self, theta, x):
        return self._parts(theta, x)[3]

    def _score_jacobian(self, theta, x):
        r, _, u, _, tau, _ = self._parts(theta, x)
        J = np.einsum("nk,nki,nkj->nij", r, u, u)
        J -= (r @ tau)[:, None, None] * np.eye(self.dim)
        return J

    def _score_trace(self, theta, x):
        r, _, u, _, tau, _ = self._parts(theta, x)
        return np.einsum("nk,nkd,nkd->n", r, u, u) - self.dim * (r @ tau)

    def _score_jvp(self, theta, x, v):
        r, _, u, _, tau, _ = self._parts(theta, x)
        uv = np.einsum("nkd,nd->nk", u, v)
        return np.einsum("nk,nkd->nd", r * uv, u) - (r @ tau)[:, None] * v

    def _score_vjp_params(self, theta, x, ct):
        r, g, u, _, tau, sq = self._parts(theta, x)
        F_r = np.einsum("nkd,nd->nk", u, ct)
        F_g = r[:, :, None] * ct[:, None, :]
        return self._backprop(r, g, tau, sq, F_r, F_g, np.zeros_like(r))

    def _trace_grad_params(self, theta, x, w):
        r, g, u, _, tau, sq = self._parts(theta, x)
        F_r = w[:, None] * (np.einsum("nkd,nkd->nk", u, u) - self.dim * tau)
        F_g = 2.0 * (w[:, None] * r)[:, :, None] * u
        F_tau = -self.dim * w[:, None] * r
        return self._backprop(r, g, tau, sq, F_r, F_g, F_tau)

    def _vjv_grad_params(self, theta, x, v, w):
        r, g, u, _, tau, sq = self._parts(theta, x)
        uv = np.einsum("nkd,nd->nk", u, v)
        vv = np.einsum("nd,nd->n", v, v)
        F_r = w[:, None] * (uv**2 - tau * vv[:, None])
        F_g = 2.0 * (w[:, None] * r * uv)[:, :, None] * v[:, None, :]
        F_tau = -(w * vv)[:, None] * r
        return self._backprop(r, g, tau, sq, F_r, F_g, F_tau)
