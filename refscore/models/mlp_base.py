r"""The structure shared by the MLP score and energy models.

Both models use one parameter layout (fixed so that other backends can load
it): for each layer :math:`l = 1, \dots, L` in order, ``W_l.ravel()`` (shape
``out × in``, row-major) then ``b_l``.  Hidden layers apply the activation
:math:`\varphi`; the output layer is linear:

.. math::

    h_0 = x,\quad a_l = W_l h_{l-1} + b_l,\quad h_l = \varphi(a_l)\ (l < L),\quad
    y = W_L h_{L-1} + b_L

(docs/derivations.md §3).

Performance notes.  Points are processed in chunks whose intermediate arrays
hold at most about ``chunk_size`` float64 numbers (default 12 288 = 96 KiB).
That bounds memory (ISM at n = 10⁵, d = 50 needs a few MiB) and, more
importantly for speed, keeps every NumPy temporary below glibc's 128 KiB
``mmap`` threshold, so temporaries are recycled from the heap and stay in L2
instead of being page-faulted in afresh by every operation (a 3–4× difference
measured on a (64, 64) network at n = 10⁴).

References
----------
X. Glorot, Y. Bengio, "Understanding the difficulty of training deep
feedforward neural networks", AISTATS 2010, eq. (16) -- the initialisation.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from .._validation import as_points, check_int, check_theta
from .activations import get_activation
from .base import ScoreModel

__all__ = ["MLPBase", "check_int", "check_hidden", "one_blas_thread", "apply_dense", "grad_dense"]


def check_hidden(hidden):
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


def one_blas_thread(fn):
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


def apply_dense(T, W):
    """Tangents ``T`` (c, r, in) -> (c, r, out) under ``W`` (out × in); ``T=None`` is the identity (r = in)."""
    if T is None:
        return W.T  # broadcasts as (1, in, out): row j is W e_j
    c, r, k = T.shape
    return (T.reshape(c * r, k) @ W.T).reshape(c, r, W.shape[0])


def grad_dense(Abar, T, n_out):
    """∂/∂W of Σ ⟨Abar, T Wᵀ⟩ = Σ Abarᵀ T (summed over points and tangents); ``T=None`` is the identity."""
    if T is None:
        return Abar.sum(axis=0).T
    return Abar.reshape(-1, n_out).T @ T.reshape(-1, T.shape[-1])


class MLPBase(ScoreModel):
    """What MLPScore and MLPEnergy share: structure, the theta layout, initialisation,
    the forward pass, the primal reverse pass and the chunking of points."""

    _out_name = "output"

    def __init__(self, dim, hidden, activation, out_dim, chunk_size):
        self.dim = check_int("dim", dim)
        self.hidden = check_hidden(hidden)
        self.act = get_activation(activation)
        self.activation = self.act.name
        self.chunk_size = check_int("chunk_size", chunk_size)
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
