r"""The scalar MLP energy model: :math:`E_\theta(x) = y \in \mathbb R`, :math:`s_\theta = -\nabla_x E_\theta`.

The network is that of :mod:`refscore.models.mlp_base` with output width 1.
Its Jacobian :math:`\nabla_x s_\theta = -\nabla_x^2 E_\theta` is symmetric;
the score, Hessian-vector products and every parameter gradient are derived
by hand in docs/derivations.md §5 (:math:`\varphi'''` enters the gradient of
the Laplacian).
"""
from __future__ import annotations

import numpy as np

from .._kernels.target_blocks import mlp_block
from .activations import kernel_id
from .mlp_base import MLPBase, apply_dense, grad_dense, one_blas_thread

__all__ = ["MLPEnergy"]


class MLPEnergy(MLPBase):
    r"""A scalar MLP energy :math:`E_\theta` with score :math:`s_\theta = -\nabla_x E_\theta`.

    .. math::

        E_\theta(x) = w_L^\top h_{L-1} + b_L,\qquad
        s_\theta(x) = -\delta_0,\quad \delta_{L-1} = w_L,\ \gamma_l = \varphi'(a_l)\odot\delta_l,\
        \delta_{l-1} = W_l^\top\gamma_l,

        \nabla_x s_\theta\,u = -\dot\delta_0,\quad
        \dot\gamma_l = \varphi''(a_l)\odot\dot a_l\odot\delta_l + \varphi'(a_l)\odot\dot\delta_l,\
        \dot\delta_{l-1} = W_l^\top\dot\gamma_l,\ \dot\delta_{L-1} = 0,

    with :math:`\dot a_l = W_l \dot h_{l-1}`, :math:`\dot h_l = \varphi'(a_l)\odot\dot a_l`,
    :math:`\dot h_0 = u` (forward over reverse: a Hessian-vector product).  The
    Jacobian is :math:`-\nabla_x^2 E_\theta`, symmetric; the trace is minus the
    Laplacian.  Parameter gradients reverse all four recurrences; :math:`\varphi'''`
    enters through :math:`\partial\dot\gamma_l/\partial a_l`.

    Parameters
    ----------
    dim : int
    hidden : sequence of int
    activation : str
        As :class:`MLPScore`; the output layer has width 1 (``W_L`` is ``1 × h_k``).
    chunk_size : int, keyword-only
        As :class:`MLPScore`.

    Notes
    -----
    ``b_L`` shifts the energy only, so every score primitive's gradient is zero
    in it.  The trace carries the d input tangents (cost ∝ d forward passes).

    References
    ----------
    docs/derivations.md §5; Hyvärinen (2005); eq. (3).

    Examples
    --------
    >>> import numpy as np
    >>> m = MLPEnergy(2, hidden=(8,))
    >>> theta = m.init(0)
    >>> J = m.score_jacobian(theta, np.ones((1, 2)))
    >>> bool(np.allclose(J, np.swapaxes(J, 1, 2)))
    True
    """

    def __init__(self, dim, hidden=(64, 64), activation="tanh", *, chunk_size=12288):
        super().__init__(dim, hidden, activation, 1, chunk_size)

    # ------------------------------------------------------------ sampler declarations
    def _kernel_block(self, theta):
        r"""Compiled-sampler block: the MLP energy kernel, :math:`s = -\nabla_x E`, :math:`\log p = -E`."""
        return mlp_block(self.sizes, kernel_id(self.act), theta, energy=True)

    def _log_density(self, theta):
        r""":math:`\log p = -E_\theta(x)` up to a constant."""
        return lambda x: -self.energy(theta, x)

    # ------------------------------------------------------------ energy
    def energy(self, theta, x):
        r""":math:`E_\theta(x)`, shape ``(n,)`` (a scalar for one point ``(d,)``)."""
        theta = self._check_theta(theta)
        x, single = self._check_x(x)
        layers = self._unpack(theta)
        out = np.empty(x.shape[0])
        WL, bL = layers[-1]
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, H, _ = self._forward(layers, x[sl], 0)
            out[sl] = H[-1] @ WL[0] + bL[0]
        return out[0] if single else out

    def _backward(self, layers, D1):
        """δ_l (l = L-1..0) and γ_l (l = L-1..1) of the score recurrence."""
        L = self.n_layers
        c = D1[1].shape[0]
        delta = [None] * L
        gamma = [None] * L
        delta[L - 1] = np.broadcast_to(layers[L - 1][0][0], (c, self.sizes[L - 1]))
        for l in range(L - 1, 0, -1):
            gamma[l] = D1[l] * delta[l]
            delta[l - 1] = gamma[l] @ layers[l - 1][0]
        return delta, gamma

    def _tangent(self, layers, D, delta, U):
        """Tangents ȧ_l, ḣ_l forward, then γ̇_l, δ̇_l backward, for input tangents ``U`` (None = identity)."""
        L = self.n_layers
        adot = [None] * L
        hdot = [U] + [None] * (L - 1)
        T = U
        for l in range(1, L):
            T = apply_dense(T, layers[l - 1][0])
            if T.ndim == 2:  # identity start: materialise the broadcast
                T = np.broadcast_to(T, (D[1][l].shape[0],) + T.shape)
            adot[l] = T
            T = T * D[1][l][:, None, :]
            hdot[l] = T
        gdot = [None] * L
        ddot = [None] * L
        dd = None  # δ̇_{L-1} = 0
        for l in range(L - 1, 0, -1):
            gd = adot[l] * (D[2][l] * delta[l])[:, None, :]
            if dd is not None:
                gd = gd + dd * D[1][l][:, None, :]
            gdot[l] = gd
            c, r, h = gd.shape
            dd = (gd.reshape(c * r, h) @ layers[l - 1][0]).reshape(c, r, -1)
            ddot[l - 1] = dd
        return adot, hdot, gdot, ddot

    @one_blas_thread
    def _score(self, theta, x):
        layers = self._unpack(theta)
        out = np.empty_like(x)
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            delta, _ = self._backward(layers, D[1])
            np.negative(delta[0], out=out[sl])
        return out

    @one_blas_thread
    def _hvp(self, theta, x, U, r):
        """-δ̇_0 per chunk for tangents U(slice) (None = identity), r tangents per point."""
        layers = self._unpack(theta)
        n = x.shape[0]
        out = np.empty((n, r, self.dim))
        for sl in self._slices(n, r * max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 2)
            delta, _ = self._backward(layers, D[1])
            u = None if U is None else U[sl][:, None, :]
            _, _, _, ddot = self._tangent(layers, D, delta, u)
            np.negative(ddot[0], out=out[sl])
        return out

    def _score_jvp(self, theta, x, v):
        return self._hvp(theta, x, v, 1)[:, 0, :]

    def _score_jacobian(self, theta, x):
        return np.swapaxes(self._hvp(theta, x, None, self.dim), 1, 2)

    def _score_trace(self, theta, x):
        return np.einsum("kjj->k", self._hvp(theta, x, None, self.dim))

    # ------------------------------------------------------------ parameter gradients
    @one_blas_thread
    def _grad(self, theta, x, U, r, C_fn, S):
        r"""Reverse mode through forward, backward and both tangent recurrences.

        Objective :math:`q = \sum \langle C, \dot\delta_0\rangle + \sum \langle S, \delta_0\rangle`
        where ``C_fn(slice)`` gives C of shape (c, r, d) (None: no tangent part) and
        ``S`` (n, d) or None.
        """
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        L = self.n_layers
        n = x.shape[0]
        width = max(r, 1) * max(self.sizes)
        for sl in self._slices(n, width):
            _, H, D = self._forward(layers, x[sl], 3)
            delta, gamma = self._backward(layers, D[1])
            C = C_fn(sl) if C_fn is not None else None
            if C is not None:
                u = None if U is None else U[sl][:, None, :]
                adot, hdot, gdot, ddot = self._tangent(layers, D, delta, u)
            dbar = None if S is None else S[sl]  # adjoint of δ_{l-1}
            ddbar = C  # adjoint of δ̇_{l-1}
            abar = [None] * L
            adotbar = [None] * L

            def add(lst, l, val):
                lst[l] = val if lst[l] is None else lst[l] + val

            # reverse of the backward (δ, γ) recurrences: l = 1 .. L-1
            for l in range(1, L):
                W = layers[l - 1][0]
                gW = grads[l - 1][0]
                new_dbar = None
                new_ddbar = None
                if ddbar is not None:
                    c, rr, k = ddbar.shape
                    gdbar = (ddbar.reshape(c * rr, k) @ W.T).reshape(c, rr, -1)  # adjoint of γ̇_l
                    gW += gdot[l].reshape(c * rr, -1).T @ ddbar.reshape(c * rr, k)
                    add(adotbar, l, gdbar * (D[2][l] * delta[l])[:, None, :])
                    new_dbar = np.einsum("krh,krh->kh", gdbar, adot[l]) * D[2][l]
                    new_ddbar = gdbar * D[1][l][:, None, :]
                    s_ad = np.einsum("krh,krh->kh", gdbar, adot[l])
                    term = D[3][l] * delta[l] * s_ad
                    if ddot[l] is not None:
                        term = term + D[2][l] * np.einsum("krh,krh->kh", gdbar, ddot[l])
                    add(abar, l, term)
                if dbar is not None:
                    gbar = dbar @ W.T  # adjoint of γ_l
                    gW += gamma[l].T @ dbar
                    nd = gbar * D[1][l]
                    new_dbar = nd if new_dbar is None else new_dbar + nd
                    add(abar, l, gbar * D[2][l] * delta[l])
                dbar, ddbar = new_dbar, new_ddbar
            if dbar is not None:  # δ_{L-1} = w_L
                grads[L - 1][0][0] += dbar.sum(axis=0)
            # reverse of the tangent forward (ȧ, ḣ) and the primal forward: l = L-1 .. 1
            hdbar = None
            hbar = None
            for l in range(L - 1, 0, -1):
                W = layers[l - 1][0]
                gW, gb = grads[l - 1]
                ab_t = adotbar[l]
                if hdbar is not None:
                    ab_t = ab_t + hdbar * D[1][l][:, None, :] if ab_t is not None else hdbar * D[1][l][:, None, :]
                    add(abar, l, np.einsum("krh,krh->kh", hdbar, adot[l]) * D[2][l])
                if hbar is not None:
                    add(abar, l, hbar * D[1][l])
                if ab_t is not None:
                    gW += grad_dense(ab_t, hdot[l - 1], W.shape[0])
                    hdbar = None if l == 1 else (ab_t.reshape(-1, W.shape[0]) @ W).reshape(ab_t.shape[0], ab_t.shape[1], -1)
                else:
                    hdbar = None
                if abar[l] is not None:
                    gW += abar[l].T @ H[l - 1]
                    gb += abar[l].sum(axis=0)
                    hbar = abar[l] @ W if l > 1 else None
                else:
                    hbar = None
        return g

    def _score_vjp_params(self, theta, x, ct):
        # s = -δ_0, so the adjoint of δ_0 is -ct
        return self._grad(theta, x, None, 0, None, -ct)

    def _trace_grad_params(self, theta, x, w):
        # tr J = -Σ_j δ̇_0[j, j] with identity tangents: C = -w I
        eye = np.eye(self.dim)
        return self._grad(theta, x, None, self.dim, lambda sl: -w[sl][:, None, None] * eye, None)

    def _vjv_grad_params(self, theta, x, v, w):
        # vᵀ J v = -vᵀ δ̇_0 with tangent v: C = -w v
        return self._grad(theta, x, v, 1, lambda sl: -(w[sl][:, None] * v[sl])[:, None, :], None)
