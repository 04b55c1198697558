r"""The multilayer-perceptron score model, with hand-derived derivatives.

:class:`MLPScore` is :math:`s_\theta(x) = y \in \mathbb R^d`, the output of
the network of :mod:`refscore.models.mlp_base` (layout, forward pass,
chunking).  This module is the text to read: the primitives (score, Jacobian,
JVP, parameter VJP) and the three exact-trace paths with their parameter
gradients, each derived in docs/derivations.md §3–4:

* the Jacobian by forward propagation of input tangents;
* parameter gradients by reverse mode through the forward *and* tangent
  recurrences (:math:`\varphi''` enters the gradient of the Jacobian);
* the exact trace: the closed form for one or two hidden layers
  (:math:`O(h_1 h_2)` per point, independent of d), the cyclic-trace
  reordering carrying :math:`h_1` tangents when :math:`h_1 < d`, and plain
  forward propagation of the d input tangents.

The fused loss-and-gradient passes that the losses call through
:meth:`MLPScore._fused_terms` live in :mod:`refscore.models._mlp_fused`
(a NumPy engine and a Numba engine, ``backend``); the scalar MLP energy is
:class:`~refscore.models.mlp_energy.MLPEnergy`.

References
----------
A. Hyvärinen, "Estimation of non-normalized statistical models by score
matching", JMLR 6 (2005) -- ISM needs :math:`\operatorname{tr}\nabla_x s_\theta`
(eq. (3)).  Y. Song, S. Garg, J. Shi, S. Ermon, "Sliced score matching",
UAI 2019 -- the d forward passes that SSM avoids (eq. (7)).
"""
from __future__ import annotations

import warnings

import numpy as np

from .._validation import check_choice
from .._kernels.target_blocks import mlp_block
from .activations import kernel_id
from .mlp_base import MLPBase, apply_dense, check_int, grad_dense, one_blas_thread

__all__ = ["MLPScore", "ENGINES"]

_TRACE_PATHS = ("auto", "fast", "cyclic", "forward")
#: who runs the fused loss passes: "auto" = numba when installed and the
#: activation has kernel formulas, else numpy
ENGINES = ("auto", "numba", "numpy")


class MLPScore(MLPBase):
    r"""A multilayer perceptron :math:`s_\theta : \mathbb R^d \to \mathbb R^d`.

    .. math::

        s_\theta(x) = W_L\,\varphi(W_{L-1} \cdots \varphi(W_1 x + b_1) \cdots + b_{L-1}) + b_L,
        \qquad
        \nabla_x s_\theta = W_L D_{L-1} W_{L-1} \cdots D_1 W_1,\ D_l = \operatorname{diag}\varphi'(a_l).

    Parameters
    ----------
    dim : int
        d >= 1, the input and output dimension.
    hidden : sequence of int
        Hidden widths :math:`(h_1, \dots, h_k)`, k >= 1, each >= 1.
    activation : str or Activation
        A key of :data:`~refscore.models.activations.ACTIVATIONS` (tanh, softplus,
        sigmoid, silu, gelu) or an :class:`~refscore.models.activations.Activation`;
        the hidden-layer activation (the output layer is linear).
    chunk_size : int, keyword-only
        About how many float64 numbers each intermediate array of a chunk holds
        (see the module notes); results do not depend on it beyond round-off.
    trace_path : {"auto", "fast", "cyclic", "forward"}, keyword-only
        How :meth:`score_trace` and :meth:`trace_grad_params` compute the exact
        trace.  ``"fast"``: closed form, one or two hidden layers only,

        .. math::

            \operatorname{tr} J = \varphi'(a_1)^\top \operatorname{diag}(W_1 W_2)\ (k = 1),\qquad
            \operatorname{tr} J = \varphi'(a_1)^\top\big[(W_1 W_3)\circ W_2^\top\big]\varphi'(a_2)\ (k = 2);

        ``"cyclic"``: :math:`\operatorname{tr}(W_L D_{L-1}\cdots D_1 W_1) =
        \operatorname{tr}(D_1 (W_1 W_L) D_{L-1} W_{L-1} \cdots D_2 W_2)`, carrying
        :math:`h_1` tangents; ``"forward"``: carry the d input tangents.
        ``"auto"`` picks fast if k <= 2, else cyclic if :math:`h_1 < d`, else forward.
    backend : {"auto", "numba", "numpy"}, keyword-only
        Who runs the fused loss passes (:meth:`_fused_terms`) that
        :func:`~refscore.losses.esm`, :func:`~refscore.losses.dsm`,
        :func:`~refscore.losses.ism`, :func:`~refscore.losses.ssm` and
        :func:`~refscore.losses.ssm_vr` call when the gradient is wanted:
        ``"numba"`` compiled kernels, blocks of points spread over the cores,
        matrix products in BLAS (:mod:`refscore._kernels.mlp_losses`);
        ``"numpy"`` the readable NumPy version of the same arithmetic
        (:mod:`refscore.models._mlp_fused`).  ``"auto"`` (default) is numba
        when numba is installed and the activation has kernel formulas (every
        registry activation does), else numpy.  They agree to round-off (tested
        at 1e-12); the numba result does not depend on the number of threads.
        ``engine=`` is the old name of this argument (deprecated).

    Notes
    -----
    ``theta`` layout: for l = 1..L, ``W_l.ravel()`` (out × in, row-major) then
    ``b_l``; see :meth:`unpack` / :meth:`pack`.  :meth:`init` draws Glorot-uniform
    weights and zero biases.

    References
    ----------
    docs/derivations.md §3 (tangent and combined reverse pass, cyclic trace), §4 (closed-form trace).

    Examples
    --------
    >>> import numpy as np
    >>> m = MLPScore(2, hidden=(8, 8))
    >>> theta = m.init(0)
    >>> x = np.zeros((3, 2))
    >>> bool(np.allclose(m.score_trace(theta, x), np.trace(m.score_jacobian(theta, x), axis1=1, axis2=2)))
    True
    """

    def __init__(self, dim, hidden=(64, 64), activation="tanh", *, chunk_size=12288, trace_path="auto",
                 backend="auto", engine=None):
        super().__init__(dim, hidden, activation, check_int("dim", dim), chunk_size)
        self.trace_path = check_choice("trace_path", trace_path, _TRACE_PATHS)
        if engine is not None:
            warnings.warn("MLPScore(engine=...) is deprecated; say backend=... (the samplers' word)",
                          DeprecationWarning, stacklevel=2)
            backend = engine
        self.backend = check_choice("backend", backend, ENGINES)
        #: the compiled kernels' activation id (None: the activation runs in NumPy only)
        self.kernel_activation = kernel_id(self.act)
        if backend == "numba" and self.kernel_activation is None:
            raise ValueError(
                f"backend='numba' needs an activation with kernel formulas (a registry entry), "
                f"got {self.act!r}; use backend='numpy' or 'auto'"
            )
        if trace_path == "fast" and len(self.hidden) > 2:
            raise ValueError(
                f"trace_path='fast' needs one or two hidden layers, got hidden={self.hidden}"
            )

    @property
    def uses_numba(self) -> bool:
        """Whether the fused loss passes run as Numba kernels (``backend`` resolved)."""
        if self.backend == "numpy" or self.kernel_activation is None:
            return False
        if self.backend == "numba":
            return True
        from .._kernels import numba_available

        return numba_available()

    def _kernel_block(self, theta):
        """Compiled-sampler block: the MLP score kernel with this model's widths and activation."""
        return mlp_block(self.sizes, self.kernel_activation, theta, energy=False)

    def _fused_terms(self, kind, theta, x, w, aux):
        """The fused loss passes of :mod:`refscore.models._mlp_fused` (every loss kind)."""
        from . import _mlp_fused

        return _mlp_fused.fused_terms(self, kind, theta, x, w, aux)

    # ------------------------------------------------------------ primal
    @one_blas_thread
    def _score(self, theta, x):
        layers = self._unpack(theta)
        out = np.empty_like(x)
        WL, bL = layers[-1]
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, H, _ = self._forward(layers, x[sl], 0)
            np.matmul(H[-1], WL.T, out=out[sl])
            out[sl] += bL
        return out

    @one_blas_thread
    def _score_vjp_params(self, theta, x, ct):
        r"""Backpropagation: :math:`\sum_k ct_k^\top \partial s_\theta(x_k)/\partial\theta`."""
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        L = self.n_layers
        WL, _ = layers[-1]
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, H, D = self._forward(layers, x[sl], 1)
            c = ct[sl]
            grads[L - 1][0][...] += c.T @ H[L - 1]
            grads[L - 1][1][...] += c.sum(axis=0)
            self._backprop(layers, H, D[1], grads, hbar=c @ WL)
        return g

    # ------------------------------------------------------------ tangents
    @one_blas_thread
    def _score_jvp(self, theta, x, v):
        r"""One forward-tangent pass: :math:`\dot h_0 = v,\ \dot a_l = W_l \dot h_{l-1},\ \dot h_l = \varphi'(a_l)\dot a_l`."""
        layers = self._unpack(theta)
        out = np.empty_like(x)
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            t = v[sl]
            for l in range(1, self.n_layers):
                t = (t @ layers[l - 1][0].T) * D[1][l]
            np.matmul(t, layers[-1][0].T, out=out[sl])
        return out

    @one_blas_thread
    def _score_jacobian(self, theta, x):
        layers = self._unpack(theta)
        n, d = x.shape
        out = np.empty((n, d, d))
        for sl in self._slices(n, d * max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            T = None
            for l in range(1, self.n_layers):
                T = apply_dense(T, layers[l - 1][0]) * D[1][l][:, None, :]
            T = apply_dense(T, layers[-1][0])  # (c, j, i) = ∂s_i/∂x_j
            out[sl] = np.swapaxes(T, 1, 2)
        return out

    # ------------------------------------------------------------ trace machinery
    def _path(self):
        if self.trace_path != "auto":
            return self.trace_path
        if self.n_layers <= 3:
            return "fast"
        return "cyclic" if self.hidden[0] < self.dim else "forward"

    def _chain(self, layers, path):
        """Factors of J in application order, as ('W', matrix, layer-index) / ('D', l).

        forward: W_1, D_1, W_2, …, D_{L-1}, W_L  (r = d tangents)
        cyclic:  W_2, D_2, …, D_{L-1}, M = W_1 W_L, D_1  (r = h_1 tangents)
        """
        L = self.n_layers
        if path == "forward":
            fac = []
            for l in range(1, L):
                fac += [("W", layers[l - 1][0], l), ("D", l)]
            fac.append(("W", layers[L - 1][0], L))
            return fac, self.dim
        fac = []
        for l in range(2, L):
            fac += [("W", layers[l - 1][0], l), ("D", l)]
        M = layers[0][0] @ layers[L - 1][0]
        fac += [("W", M, "M"), ("D", 1)]
        return fac, self.hidden[0]

    def _chain_pass(self, layers, D, fac, T0, Abar, grads, inject, D2):
        """Forward the tangents ``T0`` through the factors, then reverse with final adjoint ``Abar``.

        Accumulates weight gradients into ``grads`` and φ'-adjoints times φ'' into ``inject``.
        Returns the final tangents.
        """
        Ts = [T0]
        T = T0
        for f in fac:
            if f[0] == "W":
                T = apply_dense(T, f[1])
            else:
                T = T * D[f[1]][:, None, :]
            Ts.append(T)
        if Abar is None:
            return T
        L = self.n_layers
        for i in range(len(fac) - 1, -1, -1):
            f = fac[i]
            Tin = Ts[i]
            if f[0] == "W":
                M = f[1]
                gM = grad_dense(Abar, Tin, M.shape[0])
                if f[2] == "M":  # M = W_1 W_L
                    grads[0][0][...] += gM @ layers[L - 1][0].T
                    grads[L - 1][0][...] += layers[0][0].T @ gM
                else:
                    grads[f[2] - 1][0][...] += gM
                if i > 0:
                    Abar = Abar @ M
            else:
                l = f[1]
                Din = Tin if Tin.ndim == 3 else np.broadcast_to(Tin, Abar.shape)
                gD = np.einsum("krh,krh->kh", Abar, Din)
                inj = gD * D2[l]
                inject[l] = inj if inject[l] is None else inject[l] + inj
                Abar = Abar * D[l][:, None, :]
        return T

    def _fast_trace(self, layers, D1, w=None, grads=None, inject=None, D2=None):
        """Closed-form trace for one or two hidden layers (and its gradient when ``w`` given)."""
        if self.n_layers == 2:
            W1, W2 = layers[0][0], layers[1][0]
            p = np.einsum("ji,ij->j", W1, W2)  # diag(W1 W2)
            tr = D1[1] @ p
            if w is not None:
                gp = w @ D1[1]
                grads[0][0][...] += gp[:, None] * W2.T
                grads[1][0][...] += W1.T * gp[None, :]
                inj = np.multiply.outer(w, p) * D2[1]
                inject[1] = inj if inject[1] is None else inject[1] + inj
            return tr
        W1, W2, W3 = layers[0][0], layers[1][0], layers[2][0]
        P = W1 @ W3  # (h1, h2)
        C = P * W2.T
        u1C = D1[1] @ C
        tr = np.einsum("kh,kh->k", u1C, D1[2])
        if w is not None:
            wu1 = D1[1] * w[:, None]
            gC = wu1.T @ D1[2]
            K = gC * W2.T  # adjoint of P
            grads[1][0][...] += (gC * P).T
            grads[0][0][...] += K @ W3.T
            grads[2][0][...] += W1.T @ K
            i1 = (D1[2] @ C.T) * w[:, None] * D2[1]
            i2 = u1C * w[:, None] * D2[2]
            inject[1] = i1 if inject[1] is None else inject[1] + i1
            inject[2] = i2 if inject[2] is None else inject[2] + i2
        return tr

    @one_blas_thread
    def _score_trace(self, theta, x):
        r"""Exact :math:`\operatorname{tr}\nabla_x s_\theta` (closed form, cyclic or forward path)."""
        layers = self._unpack(theta)
        path = self._path()
        n = x.shape[0]
        out = np.empty(n)
        if path == "fast":
            for sl in self._slices(n, max(self.sizes)):
                _, _, D = self._forward(layers, x[sl], 1)
                out[sl] = self._fast_trace(layers, D[1])
            return out
        fac, r = self._chain(layers, path)
        for sl in self._slices(n, r * max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            T = self._chain_pass(layers, D[1], fac, None, None, None, None, None)
            out[sl] = np.einsum("kjj->k", T)
        return out

    @one_blas_thread
    def _trace_grad_params(self, theta, x, w):
        r"""Reverse mode through the tangent recurrence: :math:`\sum_k w_k \partial_\theta \operatorname{tr}\nabla_x s_\theta(x_k)`.

        The adjoint of :math:`\varphi'(a_l)` times :math:`\varphi''(a_l)` is injected
        into the ordinary backward pass (docs/derivations.md §3, the combined reverse pass).
        """
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        path = self._path()
        n = x.shape[0]
        L = self.n_layers
        if path == "fast":
            for sl in self._slices(n, max(self.sizes)):
                _, H, D = self._forward(layers, x[sl], 2)
                inject = [None] * L
                self._fast_trace(layers, D[1], w[sl], grads, inject, D[2])
                self._backprop(layers, H, D[1], grads, inject=inject)
            return g
        fac, r = self._chain(layers, path)
        eye = np.eye(r)
        for sl in self._slices(n, r * max(self.sizes)):
            _, H, D = self._forward(layers, x[sl], 2)
            inject = [None] * L
            Abar = w[sl][:, None, None] * eye
            self._chain_pass(layers, D[1], fac, None, Abar, grads, inject, D[2])
            self._backprop(layers, H, D[1], grads, inject=inject)
        return g

    @one_blas_thread
    def _vjv_grad_params(self, theta, x, v, w):
        r""":math:`\sum_k w_k \partial_\theta (v_k^\top \nabla_x s_\theta(x_k) v_k)`: one tangent, combined reverse pass."""
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        fac, _ = self._chain(layers, "forward")
        L = self.n_layers
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, H, D = self._forward(layers, x[sl], 2)
            inject = [None] * L
            vs = v[sl]
            Abar = (w[sl][:, None] * vs)[:, None, :]
            self._chain_pass(layers, D[1], fac, vs[:, None, :], Abar, grads, inject, D[2])
            self._backprop(layers, H, D[1], grads, inject=inject)
        return g
