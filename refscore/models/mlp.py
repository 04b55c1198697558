r"""Multilayer-perceptron score and energy models with hand-derived derivatives.

Two models share one parameter layout (fixed by API.md so other backends can
load it): for each layer :math:`l = 1, \dots, L` in order, ``W_l.ravel()``
(shape ``out × in``, row-major) then ``b_l``.  Hidden layers apply the
activation :math:`\varphi`; the output layer is linear:

.. math::

    h_0 = x,\quad a_l = W_l h_{l-1} + b_l,\quad h_l = \varphi(a_l)\ (l < L),\quad
    y = W_L h_{L-1} + b_L .

* :class:`MLPScore`: :math:`s_\theta(x) = y \in \mathbb R^d`.
* :class:`MLPEnergy`: :math:`E_\theta(x) = y \in \mathbb R`,
  :math:`s_\theta = -\nabla_x E_\theta`, so :math:`\nabla_x s_\theta = -\nabla_x^2 E_\theta`
  is symmetric.

Every primitive is derived by hand (``../shared/DERIVATIONS.md`` §2–3): the
Jacobian by forward propagation of input tangents, parameter gradients by
reverse mode through the forward *and* tangent recurrences (:math:`\varphi''`
enters the gradient of the Jacobian; :math:`\varphi'''` the gradient of an
energy's Laplacian).

Performance notes.  Points are processed in chunks whose intermediate arrays
hold at most about ``chunk_size`` float64 numbers (default 12 288 = 96 KiB).
That bounds memory (ISM at n = 10⁵, d = 50 needs a few MiB) and, more
importantly for speed, keeps every NumPy temporary below glibc's 128 KiB
``mmap`` threshold, so temporaries are recycled from the heap and stay in L2
instead of being page-faulted in afresh by every operation (a 3–4× difference
measured on a (64, 64) network at n = 10⁴).  The exact trace of an MLPScore
uses, in order of preference: the closed form for one or two hidden layers
(:math:`O(h_1 h_2)` per point, independent of d), the cyclic-trace
reordering carrying :math:`h_1` tangents when :math:`h_1 < d`, and plain
forward propagation of the d input tangents.  The loss kernels that need a
gradient (ESM, DSM, ISM on the closed-form and forward paths, SSM, SSM-VR) run by
default as Numba kernels (:mod:`refscore.models._mlp_kernels`, ``engine``),
3–5× faster than the NumPy chunks on 2 cores; the NumPy versions stay as
``engine="numpy"`` and as the text to read.

References
----------
A. Hyvärinen, "Estimation of non-normalized statistical models by score
matching", JMLR 6 (2005) -- ISM needs :math:`\operatorname{tr}\nabla_x s_\theta`
(seed eq. (3)).  Y. Song, S. Garg, J. Shi, S. Ermon, "Sliced score matching",
UAI 2019 -- the d forward passes that SSM avoids (seed eq. (7)).
X. Glorot, Y. Bengio, "Understanding the difficulty of training deep
feedforward neural networks", AISTATS 2010, eq. (16) -- the initialisation.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from . import _mlp_kernels
from .._validation import as_points, check_choice, check_theta
from .activations import ACTIVATIONS, get_activation
from .base import ScoreModel

__all__ = ["MLPScore", "MLPEnergy"]

_TRACE_PATHS = ("auto", "fast", "cyclic", "forward")
_ENGINES = ("numba", "numpy")


def _check_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_hidden(hidden):
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, (bool, np.bool_)):
        hidden = (hidden,)
    try:
        hidden = tuple(hidden)
    except TypeError:
        raise TypeError(f"hidden must be a sequence of positive integers, got {hidden!r}") from None
    if len(hidden) < 1:
        raise ValueError("hidden must list at least one hidden layer size, got ()")
    for i, h in enumerate(hidden):
        if isinstance(h, (bool, np.bool_)) or not isinstance(h, numbers.Integral):
            raise TypeError(f"hidden sizes must be integers >= 1, got hidden[{i}] = {h!r}")
        if h < 1:
            raise ValueError(f"hidden sizes must be >= 1, got hidden[{i}] = {h!r} in {hidden!r}")
    return tuple(int(h) for h in hidden)


_BLAS = []  # lazily: [ThreadpoolController] or [None] when threadpoolctl is missing


def _one_blas_thread(fn):
    """Run ``fn`` with the BLAS thread pool limited to one thread.

    The chunks' matrix products are small (a few hundred × 64 × 64); a
    multi-threaded BLAS gains little on them and, when the cores are shared
    with other processes, its spinning threads wait on descheduled partners:
    measured 30× slower (0.8 s instead of 25 ms for ISM at n = 10⁴ on a loaded
    2-core machine).  Results do not depend on it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _BLAS:
            try:
                from threadpoolctl import ThreadpoolController

                _BLAS.append(ThreadpoolController())
            except Exception:  # pragma: no cover - threadpoolctl absent or broken
                _BLAS.append(None)
        if _BLAS[0] is None:  # pragma: no cover
            return fn(*args, **kwargs)
        with _BLAS[0].limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def _apply_dense(T, W):
    """Tangents ``T`` (c, r, in) -> (c, r, out) under ``W`` (out × in); ``T=None`` is the identity (r = in)."""
    if T is None:
        return W.T  # broadcasts as (1, in, out): row j is W e_j
    c, r, k = T.shape
    return (T.reshape(c * r, k) @ W.T).reshape(c, r, W.shape[0])


def _grad_dense(Abar, T, n_out):
    """∂/∂W of Σ ⟨Abar, T Wᵀ⟩ = Σ Abarᵀ T (summed over points and tangents); ``T=None`` is the identity."""
    if T is None:
        return Abar.sum(axis=0).T
    return Abar.reshape(-1, n_out).T @ T.reshape(-1, T.shape[-1])


class _MLPBase(ScoreModel):
    """Shared structure, layout, init, forward pass and chunking."""

    _out_name = "output"

    def __init__(self, dim, hidden, activation, out_dim, chunk_size):
        self.dim = _check_int("dim", dim)
        self.hidden = _check_hidden(hidden)
        self.act = get_activation(activation)
        self.activation = self.act.name
        self.chunk_size = _check_int("chunk_size", chunk_size)
        self.sizes = (self.dim, *self.hidden, out_dim)
        self.n_layers = len(self.sizes) - 1
        shapes, offsets, p = [], [], 0
        for l in range(self.n_layers):
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            shapes.append((n_out, n_in))
            offsets.append(p)
            p += n_out * n_in + n_out
        self._shapes = shapes
        self._offsets = offsets
        self.n_params = p
        parts = [f"W{l + 1} ({o}x{i}, row-major), b{l + 1} ({o})" for l, (o, i) in enumerate(shapes)]
        self.layout = "[" + ", ".join(parts) + f"]: {p} numbers"

    def __repr__(self):
        return (
            f"{type(self).__name__}(dim={self.dim}, hidden={self.hidden}, "
            f"activation={self.activation!r}, n_params={self.n_params})"
        )

    # ------------------------------------------------------------ layout
    def unpack(self, theta):
        """Views ``[(W_1, b_1), …, (W_L, b_L)]`` into ``theta`` (no copy; writable if theta is)."""
        theta = check_theta(theta, self.n_params, self.layout)
        return self._unpack(theta)

    def _unpack(self, theta):
        out = []
        for (o, i), p in zip(self._shapes, self._offsets):
            W = theta[p : p + o * i].reshape(o, i)
            b = theta[p + o * i : p + o * i + o]
            out.append((W, b))
        return out

    def pack(self, layers):
        """Inverse of :meth:`unpack`: ``[(W_1, b_1), …]`` -> flat ``theta`` (P,)."""
        layers = list(layers)
        if len(layers) != self.n_layers:
            raise ValueError(f"layers must hold {self.n_layers} (W, b) pairs, got {len(layers)}")
        theta = np.empty(self.n_params)
        for l, ((W, b), (o, i), p) in enumerate(zip(layers, self._shapes, self._offsets)):
            W = np.asarray(W, dtype=float)
            b = np.asarray(b, dtype=float)
            if W.shape != (o, i) or b.shape != (o,):
                raise ValueError(
                    f"layer {l + 1} must be W of shape ({o}, {i}) and b of shape ({o},), "
                    f"got {W.shape} and {b.shape}"
                )
            theta[p : p + o * i] = W.ravel()
            theta[p + o * i : p + o * i + o] = b
        return theta

    def _init(self, rng):
        r"""Glorot-uniform weights, zero biases.

        .. math:: W_l \sim \mathcal U(-a_l, a_l),\quad a_l = \sqrt{6/(n_{in} + n_{out})},\quad b_l = 0

        (Glorot & Bengio 2010, eq. (16)); drawn layer by layer in layout order.
        """
        theta = np.zeros(self.n_params)
        for (W, _), (o, i) in zip(self._unpack(theta), self._shapes):
            a = np.sqrt(6.0 / (i + o))
            W[...] = rng.uniform(-a, a, size=(o, i))
        return theta

    # ------------------------------------------------------------ chunking
    def _slices(self, n, width):
        """Chunks of points so that arrays of ``width`` numbers per point hold ≈ chunk_size numbers."""
        step = max(8, self.chunk_size // max(width, 1))
        for start in range(0, n, step):
            yield slice(start, min(start + step, n))

    def _forward(self, layers, x, order):
        """Pre-activations ``A[l]``, outputs ``H[l]`` (H[0] = x) and ``D[k][l]`` = φ^(k)(a_l), l = 1..L-1."""
        L = self.n_layers
        A = [None] * L
        H = [x] + [None] * (L - 1)
        D = [[None] * L for _ in range(order + 1)]
        for l in range(1, L):
            W, b = layers[l - 1]
            a = H[l - 1] @ W.T
            a += b
            A[l] = a
            vals = self.act.derivatives(a, order)
            H[l] = vals[0]
            for k in range(1, order + 1):
                D[k][l] = vals[k]
        return A, H, D

    def _backprop(self, layers, H, D1, grads, hbar=None, inject=None, top=None):
        """Reverse mode through the primal forward pass, accumulating into ``grads``.

        ``hbar`` is the adjoint of h_{top} (default top = L-1); ``inject[l]`` an
        extra adjoint of a_l (from φ'(a_l) appearing in tangent recurrences).
        """
        top = self.n_layers - 1 if top is None else top
        for l in range(top, 0, -1):
            W, _ = layers[l - 1]
            abar = None
            if hbar is not None:
                abar = hbar * D1[l]
            if inject is not None and inject[l] is not None:
                abar = inject[l] if abar is None else abar + inject[l]
            if abar is None:
                hbar = None
                continue
            gW, gb = grads[l - 1]
            gW += abar.T @ H[l - 1]
            gb += abar.sum(axis=0)
            hbar = abar @ W if l > 1 else None

    def _check_x(self, x, name="x"):
        return as_points(x, self.dim, name)


class MLPScore(_MLPBase):
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
    activation : {"tanh", "softplus", "sigmoid", "silu", "gelu"}
        Hidden-layer activation; the output layer is linear.
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
    engine : {"numba", "numpy"}, keyword-only
        Who runs the fused loss kernels that :func:`~refscore.losses.esm`,
        :func:`~refscore.losses.dsm`, :func:`~refscore.losses.ssm`,
        :func:`~refscore.losses.ssm_vr` and :func:`~refscore.losses.ism` (on the
        ``"fast"`` and ``"forward"`` trace paths) call when the gradient is
        wanted: ``"numba"`` (default) a compiled kernel,
        blocks of points spread over the cores, matrix products in BLAS
        (:mod:`refscore.models._mlp_kernels`); ``"numpy"`` the readable NumPy
        version of the same arithmetic (:meth:`_stacked_pass`, :meth:`_fast_trace`).  They agree to
        round-off (tested at 1e-12); the numba result does not depend on the
        number of threads.

    Notes
    -----
    ``theta`` layout: for l = 1..L, ``W_l.ravel()`` (out × in, row-major) then
    ``b_l``; see :meth:`unpack` / :meth:`pack`.  :meth:`init` draws Glorot-uniform
    weights and zero biases.

    References
    ----------
    ``../shared/DERIVATIONS.md`` §2 (tangent and combined reverse pass, cyclic trace).

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
                 engine="numba"):
        super().__init__(dim, hidden, activation, _check_int("dim", dim), chunk_size)
        self.trace_path = check_choice("trace_path", trace_path, _TRACE_PATHS)
        self.engine = check_choice("engine", engine, _ENGINES)
        # the kernel knows the built-in activations only; a user's own Activation runs in NumPy
        self._numba = engine == "numba" and ACTIVATIONS.get(self.activation) is self.act
        if trace_path == "fast" and len(self.hidden) > 2:
            raise ValueError(
                f"trace_path='fast' needs one or two hidden layers, got hidden={self.hidden}"
            )

    # ------------------------------------------------------------ primal
    @_one_blas_thread
    def _score(self, theta, x):
        layers = self._unpack(theta)
        out = np.empty_like(x)
        WL, bL = layers[-1]
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, H, _ = self._forward(layers, x[sl], 0)
            np.matmul(H[-1], WL.T, out=out[sl])
            out[sl] += bL
        return out

    @_one_blas_thread
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
    @_one_blas_thread
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

    @_one_blas_thread
    def _score_jacobian(self, theta, x):
        layers = self._unpack(theta)
        n, d = x.shape
        out = np.empty((n, d, d))
        for sl in self._slices(n, d * max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            T = None
            for l in range(1, self.n_layers):
                T = _apply_dense(T, layers[l - 1][0]) * D[1][l][:, None, :]
            T = _apply_dense(T, layers[-1][0])  # (c, j, i) = ∂s_i/∂x_j
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
                T = _apply_dense(T, f[1])
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
                gM = _grad_dense(Abar, Tin, M.shape[0])
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

    @_one_blas_thread
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

    @_one_blas_thread
    def _trace_grad_params(self, theta, x, w):
        r"""Reverse mode through the tangent recurrence: :math:`\sum_k w_k \partial_\theta \operatorname{tr}\nabla_x s_\theta(x_k)`.

        The adjoint of :math:`\varphi'(a_l)` times :math:`\varphi''(a_l)` is injected
        into the ordinary backward pass (DERIVATIONS §2, combined reverse pass).
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

    # ------------------------------------------------------------ fused loss kernels
    def _stacked_pass(self, layers, xc, Tc, finish, grads):
        r"""One forward and one reverse pass carrying the primal and r tangents stacked.

        Rows ``[:c]`` of every layer's array hold the primal :math:`h_l` (or its
        adjoint), rows ``[c:]`` the tangents :math:`\dot h_l` (c·r rows), so each
        layer costs ONE matrix product forward, one for its weight gradient and
        one backward, on (c (1 + r)) rows:

        .. math::

            [a_l;\ \dot a_l] = [h_{l-1};\ \dot h_{l-1}]\,W_l^\top,\quad
            \dot h_l = \varphi'(a_l)\odot\dot a_l,

            \bar{\dot a}_l = \varphi'(a_l)\odot\bar{\dot h}_l,\quad
            \bar a_l = \varphi'(a_l)\odot\bar h_l
                + \varphi''(a_l)\odot\textstyle\sum_r \bar{\dot h}_l\odot\dot a_l,\quad
            \bar W_l \mathrel{+}= [\bar a_l;\ \bar{\dot a}_l]^\top [h_{l-1};\ \dot h_{l-1}].

        ``Tc`` (c, r, d) are the input tangents; ``None`` means the identity
        (r = d, the exact trace by forward mode).  ``finish(s, Jt)`` gets the
        scores (c, d) and output tangents ``Jt`` (c, r, d), ``Jt[k, j] =
        J_k T_k[j]``, and returns their adjoints ``(sbar, Jtbar)``.
        """
        c, d = xc.shape
        L = self.n_layers
        ident = Tc is None
        r = d if ident else Tc.shape[1]
        Hs = [None] * L
        D1 = [None] * L
        D2 = [None] * L
        U = [None] * L
        if not ident:
            Hs[0] = np.concatenate([xc, Tc.reshape(c * r, d)])
        for l in range(1, L):
            W, b = layers[l - 1]
            h = W.shape[0]
            if l == 1 and ident:
                a = xc @ W.T
                Ul = W.T[None]  # (1, d, h): row j is W e_j
            else:
                Z = Hs[l - 1] @ W.T
                a = Z[:c]
                Ul = Z[c:].reshape(c, r, h)
            a += b
            vals = self.act.derivatives(a, 2)
            H = np.empty((c * (1 + r), h))
            H[:c] = vals[0]
            np.multiply(Ul, vals[1][:, None, :], out=H[c:].reshape(c, r, h))
            Hs[l], D1[l], D2[l], U[l] = H, vals[1], vals[2], Ul
        WL, bL = layers[-1]
        Z = Hs[L - 1] @ WL.T
        s = Z[:c]
        s += bL
        sbar, Jtbar = finish(s, Z[c:].reshape(c, r, d))
        Zbar = np.empty_like(Z)
        Zbar[:c] = sbar
        Zbar[c:] = Jtbar.reshape(c * r, d)
        grads[L - 1][0][...] += Zbar.T @ Hs[L - 1]
        grads[L - 1][1][...] += sbar.sum(axis=0)
        G = Zbar @ WL
        for l in range(L - 1, 0, -1):
            W = layers[l - 1][0]
            h = W.shape[0]
            Tbar = G[c:].reshape(c, r, h)
            d1bar = np.einsum("krh,krh->kh", Tbar, U[l]) if r > 1 else Tbar[:, 0] * U[l][:, 0]
            G[:c] *= D1[l]
            G[:c] += d1bar * D2[l]
            Tbar *= D1[l][:, None, :]  # G is now [ā_l; ǡ_l]
            gW, gb = grads[l - 1]
            gb += G[:c].sum(axis=0)
            if l == 1 and ident:
                gW += G[:c].T @ xc
                gW += Tbar.sum(axis=0).T
            else:
                gW += G.T @ Hs[l - 1]
            if l > 1:
                G = G @ W

    def _kernel_blocks(self, n, rows):
        """Blocks of points for the Numba kernels, ``rows`` stacked rows per point.

        A block's layer arrays hold about ``chunk_size`` numbers, as the NumPy
        chunks do (≈ 190 rows of a width-64 network); the blocks are cut into at
        most 16 groups, fixed by n alone, so that the sum does not depend on the
        thread count.
        """
        block = max(1, self.chunk_size // (rows * max(self.sizes)))
        return block, min(16, -(-n // block))

    def _kernel_args(self, theta, x):
        return (np.ascontiguousarray(theta, dtype=float), np.asarray(self.sizes, dtype=np.int64),
                _mlp_kernels.ACT_IDS[self.activation], np.ascontiguousarray(x, dtype=float))

    def _stacked_kernel(self, theta, x, V, Wt, kind):
        """:func:`_mlp_kernels.stacked_terms` with this model's sizes, activation and blocking.

        Called with the BLAS pinned to one thread (the callers are
        ``_one_blas_thread``): the kernel's own threads each run their products.
        (``numba.parallel_chunksize(1)``, a dynamic hand-out of the groups, was
        measured 5× slower.)
        """
        n, d = x.shape
        r = d if V is None else (0 if kind == _mlp_kernels.RESIDUAL else V.shape[1])
        block, n_groups = self._kernel_blocks(n, 1 + r)
        if V is None:
            V = np.empty((0, 0, 0))
        theta, sizes, act, x = self._kernel_args(theta, x)
        return _mlp_kernels.stacked_terms(theta, sizes, act, kind, x, V, np.ascontiguousarray(Wt, dtype=float),
                                          block, n_groups)

    def _stacked_slices(self, n, r):
        """Chunks for :meth:`_stacked_pass`: (1 + r) rows per point of width max(sizes), >= 32 points."""
        step = max(32, self.chunk_size // ((1 + r) * max(self.sizes)))
        for start in range(0, n, step):
            yield slice(start, min(start + step, n))

    @_one_blas_thread
    def _residual_terms_fused(self, theta, x, t, w):
        r"""ESM / DSM terms :math:`\tfrac12\lVert s_\theta(x_k) - t_k\rVert^2` and the gradient of their ``w``-sum.

        :math:`\nabla_\theta = \texttt{score\_vjp\_params}(w_k(s_k - t_k))` (seed eqs. (1), (5)).
        ``engine="numba"``: one forward and one reverse pass per block
        (:func:`_mlp_kernels.stacked_terms`, kind ``RESIDUAL``); otherwise the
        two primitives.
        """
        if not self._numba:
            r = self._score(theta, x) - t
            return 0.5 * np.einsum("nd,nd->n", r, r), self._score_vjp_params(theta, x, w[:, None] * r)
        T = np.ascontiguousarray(t, dtype=float)[:, None, :]
        per, g = self._stacked_kernel(theta, x, T, w[:, None], _mlp_kernels.RESIDUAL)
        return per[:, 0], g

    @_one_blas_thread
    def _ism_terms_fused(self, theta, x, w):
        r"""ISM per-point values and :math:`\nabla_\theta\sum_k w_k[\operatorname{tr}J_k + \tfrac12\lVert s_k\rVert^2]`.

        Same numbers as ``trace_grad_params(w) + score_vjp_params(w s)`` (DERIVATIONS §1)
        from ONE forward pass and ONE combined reverse pass per chunk instead of
        four forward and two reverse passes.  The forward path carries the d
        identity tangents stacked under the primal (:meth:`_stacked_pass`).
        With ``engine="numba"`` the closed-form and forward paths run as
        :func:`_mlp_kernels.ism_closed_form` and :func:`_mlp_kernels.stacked_terms`.
        """
        path = self._path()
        n, d = x.shape
        if path == "forward" and self._numba:
            per, g = self._stacked_kernel(theta, x, None, w[:, None], _mlp_kernels.ISM)
            return per[:, 0], g
        if path == "fast" and self._numba:
            block, n_groups = self._kernel_blocks(n, 1)
            return _mlp_kernels.ism_closed_form(*self._kernel_args(theta, x), np.ascontiguousarray(w, dtype=float),
                                                block, n_groups)
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        L = self.n_layers
        WL, bL = layers[-1]
        per = np.empty(n)
        if path == "forward":
            eye = np.eye(d)
            for sl in self._stacked_slices(n, d):
                ws = w[sl]

                def finish(s, Jt, sl=sl, ws=ws):
                    per[sl] = np.einsum("kjj->k", Jt) + 0.5 * np.einsum("kd,kd->k", s, s)
                    return s * ws[:, None], ws[:, None, None] * eye

                self._stacked_pass(layers, x[sl], None, finish, grads)
            return per, g
        if path == "fast":
            fac, r, eye = None, 1, None
        else:
            fac, r = self._chain(layers, path)
            eye = np.eye(r)
        for sl in self._slices(n, r * max(self.sizes)):
            _, H, D = self._forward(layers, x[sl], 2)
            ws = w[sl]
            inject = [None] * L
            if path == "fast":
                tr = self._fast_trace(layers, D[1], ws, grads, inject, D[2])
            else:
                T = self._chain_pass(layers, D[1], fac, None, ws[:, None, None] * eye, grads, inject, D[2])
                tr = np.einsum("kjj->k", T)
            s = H[L - 1] @ WL.T
            s += bL
            per[sl] = tr + 0.5 * np.einsum("kd,kd->k", s, s)
            ct = s * ws[:, None]
            grads[L - 1][0][...] += ct.T @ H[L - 1]
            grads[L - 1][1][...] += ct.sum(axis=0)
            self._backprop(layers, H, D[1], grads, hbar=ct @ WL, inject=inject)
        return per, g

    @_one_blas_thread
    def _ssm_terms_fused(self, theta, x, v, W, variance_reduced):
        r"""SSM / SSM-VR values ``(m, n)`` and the gradient of :math:`\sum_{i,k} W_{ik}\,\ell_{ik}`.

        ``v`` is ``(m, n, d)``.  Per chunk: one forward pass carrying the m
        projections as tangents stacked under the primal, and one reverse pass
        carrying the score cotangent and every projection's tangent cotangent
        (:meth:`_stacked_pass`; DERIVATIONS §2, combined reverse pass):

        .. math::

            \ell_{ik} = v_{ik}^\top J_k v_{ik} + \tfrac12 (v_{ik}^\top s_k)^2,\quad
            \bar{(Jv)}_{ik} = W_{ik} v_{ik},\quad
            \bar s_k = \textstyle\sum_i W_{ik}\,(v_{ik}^\top s_k)\,v_{ik}

        (SSM-VR: :math:`\tfrac12\lVert s_k\rVert^2` and :math:`\bar s_k = \sum_i W_{ik} s_k`).
        """
        if self._numba:
            kind = _mlp_kernels.SSM_VR if variance_reduced else _mlp_kernels.SSM
            V = np.ascontiguousarray(np.swapaxes(v, 0, 1))  # (n, m, d)
            per, g = self._stacked_kernel(theta, x, V, np.ascontiguousarray(W.T), kind)
            return np.ascontiguousarray(per.T), g
        layers = self._unpack(theta)
        g = np.zeros(self.n_params)
        grads = self._unpack(g)
        m, n, d = v.shape
        per = np.empty((m, n))
        for sl in self._stacked_slices(n, m):
            vc = np.ascontiguousarray(np.swapaxes(v[:, sl], 0, 1))  # (c, m, d)
            Wc = W[:, sl].T  # (c, m)

            def finish(s, Jt, sl=sl, vc=vc, Wc=Wc):
                vjv = np.einsum("kid,kid->ki", vc, Jt)
                if variance_reduced:
                    per[:, sl] = (vjv + 0.5 * np.einsum("kd,kd->k", s, s)[:, None]).T
                    sbar = Wc.sum(axis=1)[:, None] * s
                else:
                    vs = np.einsum("kid,kd->ki", vc, s)
                    per[:, sl] = (vjv + 0.5 * vs * vs).T
                    sbar = np.einsum("ki,kid->kd", Wc * vs, vc)
                return sbar, Wc[:, :, None] * vc

            self._stacked_pass(layers, x[sl], vc, finish, grads)
        return per, g

    @_one_blas_thread
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


class MLPEnergy(_MLPBase):
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
    ``../shared/DERIVATIONS.md`` §3; Hyvärinen (2005); seed eq. (3).

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
            T = _apply_dense(T, layers[l - 1][0])
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

    @_one_blas_thread
    def _score(self, theta, x):
        layers = self._unpack(theta)
        out = np.empty_like(x)
        for sl in self._slices(x.shape[0], max(self.sizes)):
            _, _, D = self._forward(layers, x[sl], 1)
            delta, _ = self._backward(layers, D[1])
            np.negative(delta[0], out=out[sl])
        return out

    @_one_blas_thread
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
    @_one_blas_thread
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
                    gW += _grad_dense(ab_t, hdot[l - 1], W.shape[0])
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
