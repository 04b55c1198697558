r"""Numba kernels for the fused ESM / DSM / ISM / SSM passes of :class:`~refscore.models.MLPScore`.

Two kernels, each the compiled twin of a readable NumPy method kept as
``engine="numpy"``:

* :func:`stacked_terms` is :meth:`MLPScore._stacked_pass` (SSM, SSM-VR, and
  ISM on the ``"forward"`` trace path, any depth);
* :func:`ism_closed_form` is :meth:`MLPScore._fast_trace` plus the primal
  reverse pass (ISM with one or two hidden layers, trace in closed form).

:func:`stacked_terms` runs one forward pass carrying the primal and r
tangents stacked, one combined reverse pass (docs/derivations.md §3),

.. math::

    [a_l;\ \dot a_l] = [h_{l-1};\ \dot h_{l-1}]\,W_l^\top,\quad
    h_l = \varphi(a_l),\quad \dot h_l = \varphi'(a_l)\odot\dot a_l,

    \bar{\dot a}_l = \varphi'(a_l)\odot\bar{\dot h}_l,\quad
    \bar a_l = \varphi'(a_l)\odot\bar h_l
        + \varphi''(a_l)\odot\textstyle\sum_j \bar{\dot h}_{l,j}\odot\dot a_{l,j},\quad
    \bar W_l \mathrel{+}= [\bar a_l;\ \bar{\dot a}_l]^\top [h_{l-1};\ \dot h_{l-1}],

done here without the interpreter, block by block of points: every matrix
product, forward, backward and weight gradient, is :mod:`.tile_products`'
``dot_rows`` (register-blocked AVX-512 multiply-adds, 50–60 GFMA/s on one
core, about twice OpenBLAS's AVX2 kernel on these shapes; it reads its
left factor through strides, so a weight gradient needs no transposed
copy), every array of a block has a padded width (a multiple of 16
columns; the weights' padding is zero, and no result reads the padding of
the others), the activations run over a whole block at a time, and the
groups of blocks over the cores by
:func:`.group_threads.run_shares` (each thread a workspace kept between calls).

Determinism.  The points are cut into blocks of ``block`` points and the
blocks into ``n_groups`` contiguous groups; each group sums its blocks'
gradients into its own row of ``parts`` and the rows are added in group
order at the end.  The result therefore depends on ``block`` and
``n_groups`` (round-off only) but never on the number of threads, on how
the scheduler hands out the groups, or on where the arrays lie in memory
(the products' order of summation is fixed by the shapes, :mod:`.tile_products`).

The per-point losses (``kind``):

* ``ISM`` (0): identity tangents (r = d),
  :math:`\ell_k = \operatorname{tr}J_k + \tfrac12\lVert s_k\rVert^2`,
  :math:`\bar s_k = w_k s_k`, :math:`\bar{(J e_j)}_k = w_k e_j` (eq. (3));
* ``SSM`` (1): tangents :math:`v_{ki}`,
  :math:`\ell_{ki} = v_{ki}^\top J_k v_{ki} + \tfrac12(v_{ki}^\top s_k)^2`,
  :math:`\bar s_k = \sum_i W_{ki}(v_{ki}^\top s_k)v_{ki}`,
  :math:`\bar{(Jv)}_{ki} = W_{ki}v_{ki}` (eq. (7));
* ``SSM_VR`` (2): :math:`\ell_{ki} = v_{ki}^\top J_k v_{ki} + \tfrac12\lVert s_k\rVert^2`,
  :math:`\bar s_k = (\sum_i W_{ki}) s_k`;
* ``RESIDUAL`` (3): no tangents (r = 0), the target :math:`t_k` in ``V[k, 0]``,
  :math:`\ell_k = \tfrac12\lVert s_k - t_k\rVert^2`, :math:`\bar s_k = w_k(s_k - t_k)`
  (ESM, eq. (2));
* ``DENOISING`` (4): ``RESIDUAL`` at :math:`\tilde x_k = x_k + \sigma z_k` with
  :math:`t_k = -z_k/\sigma`, :math:`z_k` in ``V[k, 0]`` (DSM, eq. (6)): the input row is
  formed as ``x + sigma * z`` and the residual as ``s + z / sigma``, the same IEEE
  operations as NumPy's ``x + sigma * z`` and ``s - (-z / sigma)``, so the same numbers.

Kinds are :class:`refscore._kernels.ids.LossKind`; activation ids are
registry positions (:func:`refscore.models.activations.kernel_id`); the
activations and their first two derivatives come from
:data:`refscore._kernels.vecmath.activation`, branch-free so that the loops
over a layer's units vectorise.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from .activation_table import compile_activate_row
from .cache import use_cache
from .group_threads import run_shares
from .ids import DENOISING, ISM, RESIDUAL, SSM, SSM_VR
from .tile_products import R_TILE, compile_tile_products, padded, rows_padded
from .vecmath import activation_entries

__all__ = ["stacked_terms", "ism_closed_form"]


#: f, f1, f2 = φ, φ', φ'' at a along a row; one loop per activation, each vectorised.  The kernels
#: call it once per layer and block, on the block's pre-activations as one flat row (the bias already in
#: them): one call per point's row of 64 measured 1.5 ns per unit against 1.0 ns.
#: Called, not inlined: inlined, the closed-form ISM kernel's first call on an empty cache took 7.8 s of
#: CPU against 5.6-5.9 (its two call sites each compile every activation's loop) and ran no faster
#: (ISM + gradient at n = 10^4 10.1 ms against 9.3-10.0, one thread, load 4).
_activate_row = compile_activate_row(numba.njit(error_model="numpy", nogil=True), activation_entries)

#: ``C += A B`` with A read through strides (:mod:`.tile_products`), and the padded widths and row counts
_dot_rows = compile_tile_products(numba.njit)
_wp = numba.njit(nogil=True)(padded)
_rp = numba.njit(nogil=True)(rows_padded)


#: bytes of a cache line, and of an AVX-512 register
_ALIGN = 64


def _aligned_zeros(shape):
    """``np.zeros(shape)`` starting on a 64-byte boundary (:data:`_ALIGN`).

    Every array the products read or write has rows of a multiple of 16 numbers (128 bytes), so
    from an aligned start every 8-number vector the tiles load or store lies in one cache line;
    NumPy's large arrays start 16 bytes past a page boundary (malloc's header), where every such
    vector straddles two lines.  Aligned workspaces and weights measured 6 % faster, ESM + gradient
    at n = 10⁴, d = 10 and 50, one thread (5.01 against 5.31 ms, 8.51 against 9.09; SSM 8.94 against
    9.74, 14.87 against 16.09), and make the speed independent of where the allocator put them.
    """
    n = int(np.prod(np.asarray(shape)))
    buf = np.zeros(n + _ALIGN // 8)
    start = (-buf.ctypes.data % _ALIGN) // 8
    return buf[start:start + n].reshape(shape)


def _padded_layers(theta, sizes):
    """Each layer's weights as the products read them, zero-padded to :func:`.tile_products.padded` columns,
    flattened one layer after another: ``WT`` (W_lᵀ, h_{l-1} x padded(h_l): the forward product's B), ``W``
    (W_l, h_l x padded(h_{l-1}): the backward product's B), ``b`` (b_l, padded(h_l)); and the offsets of
    layer l = 1..L (entry l - 1) in each."""
    L = sizes.shape[0] - 1
    offs = np.zeros((3, L + 1), np.int64)
    for l in range(1, L + 1):
        h, kin = int(sizes[l]), int(sizes[l - 1])
        offs[:, l] = offs[:, l - 1] + (kin * padded(h), h * padded(kin), padded(h))
    WT, W, b = _aligned_zeros(offs[0, L]), _aligned_zeros(offs[1, L]), _aligned_zeros(offs[2, L])
    p = 0
    for l in range(1, L + 1):
        h, kin = int(sizes[l]), int(sizes[l - 1])
        Wl = theta[p:p + h * kin].reshape(h, kin)
        WT[offs[0, l - 1]:offs[0, l]].reshape(kin, padded(h))[:, :h] = Wl.T
        W[offs[1, l - 1]:offs[1, l]].reshape(h, padded(kin))[:, :kin] = Wl
        b[offs[2, l - 1]:offs[2, l - 1] + h] = theta[p + h * kin:p + h * kin + h]
        p += h * kin + h
    return WT, W, b, offs


class _Workspaces(threading.local):
    """Each thread's workspaces, kept between calls: one per kernel (a thread runs one share at a time)."""

    def __init__(self):
        self.arrays = {}


_WORKSPACES = _Workspaces()


def _workspace(kernel, size):
    """A float64 array of at least ``size`` numbers for ``kernel`` in the thread that runs it.

    Allocated (zeroed, on a 64-byte boundary: :func:`_aligned_zeros`) once and reused: a fresh
    allocation per call and group measured 0.5 ms each (page faults on new memory; 3.8 ms against
    1.3 ms for ISM + gradient at n = 1000, one thread).
    """
    arr = _WORKSPACES.arrays.get(kernel)
    if arr is None or arr.shape[0] < size:
        arr = _aligned_zeros(size)
        _WORKSPACES.arrays[kernel] = arr
    return arr


def stacked_terms(theta, sizes, act, kind, x, V, Wt, sigma, block, n_groups):
    """Per-point loss terms and their weighted parameter gradient (see the module notes).

    Parameters
    ----------
    theta : (P,) float64, the MLPScore layout.
    sizes : (L+1,) int64, ``(d, h_1, …, h_{L-1}, d)``.
    act : int, activation id.
    kind : int, ``ISM``, ``SSM``, ``SSM_VR``, ``RESIDUAL`` or ``DENOISING``
        (:class:`~refscore._kernels.ids.LossKind`).
    x : (n, d) C-contiguous.
    V : (n, r, d) C-contiguous tangents (SSM kinds); ignored for ISM (r = d);
        (n, 1, d) targets for RESIDUAL, the standard normal z for DENOISING (r = 0).
    Wt : (n, m) weights, m = 1 for ISM, RESIDUAL and DENOISING, m = r otherwise.
    sigma : float, DENOISING's noise level (read by no other kind).
    block, n_groups : int, points per block and groups of blocks (>= 1).

    Returns
    -------
    per : (n, m) loss terms; g : (P,) gradient of ``sum(Wt * per)``.
    """
    n, d = x.shape
    L = sizes.shape[0] - 1
    m = Wt.shape[1]
    # parameter offsets: W_l at offW[l-1], b_l right after it
    offW = np.empty(L, np.int64)
    p = 0
    for l in range(L):
        offW[l] = p
        p += int(sizes[l + 1] * sizes[l] + sizes[l + 1])
    P = p
    per = np.empty((n, m))
    parts = np.zeros((n_groups, P))
    n_blocks = (n + block - 1) // block
    WT, W, b, offs = _padded_layers(theta, sizes)
    r = d if kind == ISM else (0 if kind in (RESIDUAL, DENOISING) else V.shape[1])
    size = _stacked_layout(sizes, r, block)[-1]
    run_shares(lambda t, g_lo, g_hi: _stacked_share(WT, W, b, offs, sizes, act, kind, x, V, Wt, sigma, block,
                                                    n_groups, g_lo, g_hi, offW, per, parts,
                                                    _workspace("stacked", size)),
               n_groups)
    g = np.zeros(P)
    for grp in range(n_groups):
        g += parts[grp]
    return per, g


@numba.njit(error_model="numpy", nogil=True)
def _view(buf, off, rows, cols):
    """``buf[off:off + rows cols]`` as a (rows, cols) array (one reshape compiled for every call site)."""
    return buf[off:off + rows * cols].reshape(rows, cols)


@numba.njit(error_model="numpy", nogil=True)
def _squared_norms(Z, c, d, out):
    """``out[k] = Z[k, 0]² + Z[k, 1]² + … + Z[k, d - 1]²`` for k < c, each sum in that order.

    Four points at a time: one point's sum is a chain of additions, each waiting for the last, and
    four chains side by side keep the adder busy (the same numbers).  With the residual formed
    first in a vectorised loop (DSM's division by σ included), ESM's loss stage over n = 10⁴
    points at d = 50 measured 0.22 ms (DSM's 0.23) against 0.18 (0.53) for one loop per point with
    the residual, its norm and the unused ‖s‖² (warm caches, one thread).
    """
    k = 0
    while k + 4 <= c:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for e in range(d):
            s0 += Z[k, e] * Z[k, e]
            s1 += Z[k + 1, e] * Z[k + 1, e]
            s2 += Z[k + 2, e] * Z[k + 2, e]
            s3 += Z[k + 3, e] * Z[k + 3, e]
        out[k] = s0
        out[k + 1] = s1
        out[k + 2] = s2
        out[k + 3] = s3
        k += 4
    while k < c:
        s0 = 0.0
        for e in range(d):
            s0 += Z[k, e] * Z[k, e]
        out[k] = s0
        k += 1


@numba.njit(error_model="numpy", nogil=True)
def _add_into(G, T):
    """``G += T[:G.shape[0], :G.shape[1]]``: a group's padded sum added to the gradient's own entries."""
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            G[i, j] += T[i, j]


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)  # called from Python too: cached, or a warm run compiles it
def _stacked_layout(sizes, r, block):
    """Where :func:`_stacked_share`'s arrays lie in its workspace: per layer l = 0..L the padded width
    ``wp[l]`` and the offset ``ob[l]`` of its (Rcap, wp[l]) arrays in each of the five buffers H, Z, Ḡ,
    φ', φ'' (one after another, Rcap = rows of a block with its tangents and the products' padding), the
    offset ``og[l]`` of layer l + 1's weight-gradient accumulator, and the workspace's length (a row of
    ``wmax`` zeros, the products' first term, last)."""
    L = sizes.shape[0] - 1
    Rcap = _rp(block * (1 + r)) + R_TILE  # the tangent rows' product starts at row c
    wp = np.empty(L + 1, np.int64)
    ob = np.zeros(L + 2, np.int64)
    og = np.zeros(L + 1, np.int64)
    wmax = 0
    for l in range(L + 1):
        wp[l] = _wp(sizes[l])
        ob[l + 1] = ob[l] + Rcap * wp[l]
        wmax = max(wmax, wp[l])
        if l > 0:
            og[l] = og[l - 1] + _rp(sizes[l]) * wp[l - 1]
    return Rcap, wp, ob, og, wmax, 5 * ob[L + 1] + og[L] + wmax


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _stacked_share(WT, W, b, offs, sizes, act, kind, x, V, Wt, sigma, block, n_groups, g_lo, g_hi, offW, per, parts,
                   ws):
    """Groups ``g_lo .. g_hi - 1`` of :func:`stacked_terms` (one thread's share): their ``per`` rows, and
    each group's gradient summed into its row of ``parts``; serial and GIL-free
    (:func:`.group_threads.run_shares`).  ``ws``: the thread's workspace (:func:`_stacked_layout`).

    Per layer l = 0..L (0: the input, L: the output) row-major arrays of ``padded(h_l)`` columns, one
    after another in flat buffers (``Hb``, ``Zb``, ``Gb`` from offset ``ob[l]``): the stacked outputs
    H_l, pre-activations Z_l and adjoints Ḡ_l (R = c (1 + r) rows: the c primal rows, then each point's
    r tangent rows, and room for the products' padded rows), φ'(a_l) and φ''(a_l) (c rows).  The
    weight gradients accumulate over a group's blocks in padded arrays (``gWb`` from ``og[l]``),
    added to its row of ``parts`` at its end.  Products: ``_dot_rows`` (:mod:`.tile_products`): A =
    H_{l-1} forward, Ḡ_l backward (row stride the padded width), Ḡ_l read down its columns for the
    weight gradient.  Flat buffers and offsets rather than lists of arrays: 0.4 s less to compile.

    Every number a result depends on is written in the block before it is read; the rest of the
    workspace (padded columns, rows past the block, values left by an earlier call of any layout)
    reaches only entries no result reads, so the workspace is reused across calls unzeroed, except
    for the row of zeros and the gradient accumulators, zeroed here.
    """
    n, d = x.shape
    L = sizes.shape[0] - 1
    unit = np.int64(1)  # a stride of 1 not written as a constant: a literal 1 would compile _dot_rows again
    nought = np.int64(0)  # (the row stride of a broadcast first term: a bias, a row of zeros)
    ident = kind == ISM
    noised = kind == DENOISING
    residual = kind == RESIDUAL or noised
    r = d if ident else (0 if residual else V.shape[1])
    Rcap, wp, ob, og, wmax, _ = _stacked_layout(sizes, r, block)
    nb = ob[L + 1]
    Hb = ws[:nb]
    Zb = ws[nb:2 * nb]
    Gb = ws[2 * nb:3 * nb]
    D1b = ws[3 * nb:4 * nb]
    D2b = ws[4 * nb:5 * nb]
    gWb = ws[5 * nb:5 * nb + og[L]]  # \bar W_l at og[l - 1], (rows_padded(h_l), padded(h_{l-1}))
    zeros = ws[5 * nb + og[L]:5 * nb + og[L] + wmax]  # (an earlier call may have laid out ws otherwise)
    for i in range(zeros.shape[0]):
        zeros[i] = 0.0
    acc = np.empty(wmax)
    sbar = np.empty(d)
    sq = np.empty(block)
    n_blocks = (n + block - 1) // block
    for grp in range(g_lo, g_hi):
        for i in range(gWb.shape[0]):
            gWb[i] = 0.0
        for blk in range(grp * n_blocks // n_groups, (grp + 1) * n_blocks // n_groups):
            k0 = blk * block
            c = min(block, n - k0)
            R = c * (1 + r)
            # ---------------------------------------------------- forward
            H0 = _view(Hb, ob[0], Rcap, wp[0])
            for k in range(c):  # loops, not slice assignments: those compile a broadcasting helper each
                for e in range(d):
                    H0[k, e] = x[k0 + k, e] + sigma * V[k0 + k, 0, e] if noised else x[k0 + k, e]
            if not ident and not residual:
                for k in range(c):
                    for j in range(r):
                        for e in range(d):
                            H0[c + k * r + j, e] = V[k0 + k, j, e]
            for l in range(1, L + 1):  # a_l = b_l + h_{l-1} W_lᵀ; \dot a_l = \dot h_{l-1} W_lᵀ (l = L: s, J v)
                h, kin = sizes[l], sizes[l - 1]
                first_ident = l == 1 and ident
                rows = c if first_ident else R  # layer 1 of ISM: the tangents are W_1's columns, no product
                Z = _view(Zb, ob[l], Rcap, wp[l])
                WTl = _view(WT, offs[0, l - 1], kin, wp[l])
                _dot_rows(Hb[ob[l - 1]:], wp[l - 1], unit, WTl, Zb[ob[l]:], wp[l], _rp(c), kin, b[offs[2, l - 1]:], nought)
                if rows > c:  # the tangent rows from zero, over the primal rows' padding (written after it)
                    _dot_rows(Hb[ob[l - 1] + c * wp[l - 1]:], wp[l - 1], unit, WTl, Zb[ob[l] + c * wp[l]:], wp[l],
                              _rp(rows - c), kin, zeros, nought)
                if l == L:
                    break
                if first_ident:  # tangents of the identity: \dot a_{1,j} = W_1 e_j
                    W1T = _view(WT, offs[0, 0], d, wp[1])
                    for k in range(c):
                        for j in range(d):
                            for o in range(h):
                                Z[c + k * d + j, o] = W1T[j, o]
                nc = c * wp[l]
                _activate_row(act, Zb[ob[l]:ob[l] + nc], Hb[ob[l]:ob[l] + nc], D1b[ob[l]:ob[l] + nc], D2b[ob[l]:ob[l] + nc])
                H = _view(Hb, ob[l], Rcap, wp[l])
                d1l = _view(D1b, ob[l], Rcap, wp[l])
                for k in range(c):  # \dot h_l = φ'(a_l) ⊙ \dot a_l
                    for j in range(r):
                        row = c + k * r + j
                        for o in range(h):
                            H[row, o] = Z[row, o] * d1l[k, o]
            # ---------------------------------------------------- loss
            Zo = _view(Zb, ob[L], Rcap, wp[L])
            Zbar = _view(Gb, ob[L], Rcap, wp[L])
            if residual:  # s - t (DSM: s + z/σ) into Zbar, its squared norm, then Zbar = w (s - t)
                if noised:
                    for k in range(c):
                        for e in range(d):
                            Zbar[k, e] = Zo[k, e] + V[k0 + k, 0, e] / sigma
                else:
                    for k in range(c):
                        for e in range(d):
                            Zbar[k, e] = Zo[k, e] - V[k0 + k, 0, e]
                _squared_norms(Zbar, c, d, sq)
                for k in range(c):
                    per[k0 + k, 0] = 0.5 * sq[k]
                    w = Wt[k0 + k, 0]
                    for e in range(d):
                        Zbar[k, e] *= w
            elif ident or kind == SSM_VR:
                _squared_norms(Zo, c, d, sq)  # ‖s‖²
            for k in range(0 if residual else c):
                if ident:
                    w = Wt[k0 + k, 0]
                    tr = 0.0
                    for j in range(d):
                        tr += Zo[c + k * d + j, j]
                    per[k0 + k, 0] = tr + 0.5 * sq[k]
                    for e in range(d):
                        Zbar[k, e] = w * Zo[k, e]
                else:
                    wsum = 0.0
                    for e in range(d):
                        sbar[e] = 0.0
                    for i in range(r):
                        row = c + k * r + i
                        w = Wt[k0 + k, i]
                        vjv = 0.0
                        vs = 0.0
                        for e in range(d):
                            vjv += V[k0 + k, i, e] * Zo[row, e]
                            vs += V[k0 + k, i, e] * Zo[k, e]
                            Zbar[row, e] = w * V[k0 + k, i, e]
                        if kind == SSM:
                            per[k0 + k, i] = vjv + 0.5 * vs * vs
                            for e in range(d):
                                sbar[e] += w * vs * V[k0 + k, i, e]
                        else:
                            per[k0 + k, i] = vjv + 0.5 * sq[k]
                            wsum += w
                    for e in range(d):
                        Zbar[k, e] = sbar[e] if kind == SSM else wsum * Zo[k, e]
            gbL = parts[grp, offW[L - 1] + d * sizes[L - 1]:offW[L - 1] + d * sizes[L - 1] + d]
            for k in range(c):
                for e in range(d):
                    gbL[e] += Zbar[k, e]
            # ---------------------------------------------------- reverse
            for l in range(L, 0, -1):
                h, kin = sizes[l], sizes[l - 1]
                first_ident = l == 1 and ident
                Gc = _view(Gb, ob[l], Rcap, wp[l])
                if l < L:  # ā_l = φ'(a_l) ⊙ h̄_l + φ''(a_l) ⊙ Σ_j \bar{\dot h}_{l,j} ⊙ \dot a_{l,j}; ǡ_l = φ' ⊙ \bar{\dot h}_l
                    gb = parts[grp, offW[l - 1] + h * kin:offW[l - 1] + h * kin + h]
                    Z = _view(Zb, ob[l], Rcap, wp[l])
                    d1l = _view(D1b, ob[l], Rcap, wp[l])
                    d2l = _view(D2b, ob[l], Rcap, wp[l])
                    if r == 0:  # no tangents: ā_l = φ'(a_l) ⊙ h̄_l (measured 0.44 -> 0.1 ms for ESM, n = 10^4)
                        for k in range(c):
                            for o in range(h):
                                Gc[k, o] *= d1l[k, o]
                                gb[o] += Gc[k, o]
                    for k in range(c if r > 0 else 0):
                        for o in range(h):
                            acc[o] = 0.0
                        for j in range(r):
                            row = c + k * r + j
                            for o in range(h):
                                acc[o] += Gc[row, o] * Z[row, o]
                                Gc[row, o] *= d1l[k, o]
                        for o in range(h):
                            Gc[k, o] = Gc[k, o] * d1l[k, o] + acc[o] * d2l[k, o]
                            gb[o] += Gc[k, o]
                # \bar W_l += [ā_l; ǡ_l]ᵀ [h_{l-1}; \dot h_{l-1}]; ISM: the output's tangent adjoints w_k e_j and
                # layer 1's tangents (the columns of W_1) are sparse, done by hand
                rows = c if (ident and (l == L or first_ident)) else R
                gW = _view(gWb, og[l - 1], _rp(h), wp[l - 1])
                _dot_rows(Gb[ob[l]:], unit, wp[l], _view(Hb, ob[l - 1], Rcap, wp[l - 1]), gWb[og[l - 1]:], wp[l - 1], _rp(h),
                          rows, gWb[og[l - 1]:], wp[l - 1])
                if ident and l == L:
                    HL = _view(Hb, ob[L - 1], Rcap, wp[L - 1])
                    for k in range(c):
                        w = Wt[k0 + k, 0]
                        for j in range(d):
                            for o in range(kin):
                                gW[j, o] += w * HL[c + k * d + j, o]
                if first_ident:
                    for k in range(c):
                        for j in range(d):
                            for o in range(h):
                                gW[o, j] += Gc[c + k * d + j, o]
                if l > 1:  # adjoint of h_{l-1}: [ā_l; ǡ_l] W_l
                    Gp = _view(Gb, ob[l - 1], Rcap, wp[l - 1])
                    _dot_rows(Gb[ob[l]:], wp[l], unit, _view(W, offs[1, l - 1], h, wp[l - 1]), Gb[ob[l - 1]:], wp[l - 1],
                              _rp(rows), h, zeros, nought)
                    if ident and l == L:
                        WL = _view(W, offs[1, L - 1], d, wp[L - 1])
                        for k in range(c):
                            w = Wt[k0 + k, 0]
                            for j in range(d):
                                for o in range(kin):
                                    Gp[c + k * d + j, o] = w * WL[j, o]
        for l in range(1, L + 1):  # the group's weight gradients into its row of parts
            _add_into(_view(parts[grp], offW[l - 1], sizes[l], sizes[l - 1]),
                      _view(gWb, og[l - 1], _rp(sizes[l]), wp[l - 1]))


def ism_closed_form(theta, sizes, act, x, w, block, n_groups):
    r"""ISM terms :math:`\operatorname{tr}J_k + \tfrac12\lVert s_k\rVert^2` and the gradient of their ``w``-sum, one or two hidden layers.

    The trace in closed form (:meth:`MLPScore._fast_trace`, ``trace_path="fast"``):

    .. math::

        k = 1:\ \operatorname{tr}J = \varphi'(a_1)^\top p,\ p = \operatorname{diag}(W_1W_2);\qquad
        k = 2:\ \operatorname{tr}J = \varphi'(a_1)^\top C\,\varphi'(a_2),\ C = (W_1W_3)\circ W_2^\top,

    reversed by hand: the adjoint of :math:`p` (of :math:`C`) is
    :math:`\sum_k w_k\varphi'(a_{1,k})` (:math:`\sum_k w_k\varphi'(a_{1,k})\varphi'(a_{2,k})^\top`),
    summed per group and pushed into the weights once at the end; the
    :math:`\varphi''` terms are injected into the primal reverse pass of
    :math:`\tfrac12\lVert s\rVert^2`.  Blocks, groups and determinism as
    :func:`stacked_terms`.  Returns ``per`` (n,) and ``g`` (P,).
    """
    n, d = x.shape
    p, Pm, C, P, extra = _ism_prepare(theta, sizes, d)
    per = np.empty(n)
    parts = np.zeros((n_groups, P + extra))
    n_blocks = (n + block - 1) // block
    WT, W, b, offs = _padded_layers(theta, sizes)
    h1, hl = int(sizes[1]), int(sizes[-2])
    h2 = C.shape[1] if len(sizes) == 4 else 1
    Cp = _aligned_zeros((h1, padded(h2)))  # the trace's matrix, and its transpose, as product operands
    CTp = _aligned_zeros((h2, padded(h1)))
    if len(sizes) == 4:
        Cp[:, :h2] = C
        CTp[:, :h1] = C.T
    pp = np.zeros(padded(h1))
    pp[:p.shape[0]] = p
    size = _ism_layout(sizes, block)[21]
    run_shares(lambda t, g_lo, g_hi: _ism_share(WT, W, b, offs, sizes, act, x, w, block, n_groups, g_lo, g_hi, pp,
                                                Cp, CTp, per, parts, P, _workspace("ism", size)),
               n_groups)
    return per, _ism_finish(theta, sizes, d, Pm, parts, P, extra)


def _ism_prepare(theta, sizes, d):
    """The trace's matrix of :func:`ism_closed_form`: ``p = diag(W_1 W_2)`` (one hidden layer) or
    ``C = (W_1 W_3) ∘ W_2ᵀ`` with ``Pm = W_1 W_3`` (two); and the sizes ``P`` (parameters) and
    ``extra`` (the trace adjoints summed after them in each group's row).  NumPy: O(h_1 h_2 d) once per
    call (tens of microseconds), and compiling it took 0.7 s."""
    L = sizes.shape[0] - 1
    h1, hl = int(sizes[1]), int(sizes[L - 1])
    W1 = theta[:h1 * d].reshape(h1, d)
    o2 = h1 * d + h1
    if L == 2:
        oL = o2
        p = np.einsum("ji,ij->j", W1, theta[oL:oL + d * h1].reshape(d, h1))
        Pm = C = np.empty((1, 1))
        extra = h1
    else:
        h2 = int(sizes[2])
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        oL = o2 + h2 * h1 + h2
        p = np.empty(1)
        Pm = W1 @ theta[oL:oL + d * h2].reshape(d, h2)  # W_1 W_3 (h1 x h2)
        C = Pm * W2.T
        extra = h1 * h2
    return p, Pm, C, oL + d * hl + d, extra


def _ism_finish(theta, sizes, d, Pm, parts, P, extra):
    """The groups' rows of :func:`ism_closed_form` added in group order, and the trace adjoints
    pushed into the weights (NumPy, as :func:`_ism_prepare`)."""
    L = sizes.shape[0] - 1
    h1, hl = int(sizes[1]), int(sizes[L - 1])
    W1 = theta[:h1 * d].reshape(h1, d)
    o2 = h1 * d + h1
    h2 = int(sizes[2]) if L == 3 else 1
    oL = o2 if L == 2 else o2 + h2 * h1 + h2
    WL = theta[oL:oL + d * hl].reshape(d, hl)
    tot = parts[0].copy()
    for grp in range(1, parts.shape[0]):
        tot += parts[grp]
    g = tot[:P].copy()
    gW1 = g[:h1 * d].reshape(h1, d)
    gWL = g[oL:oL + d * hl].reshape(d, hl)
    if L == 2:  # p = diag(W_1 W_2): ∂p_j/∂W_1[j, i] = W_2[i, j], ∂p_j/∂W_2[i, j] = W_1[j, i]
        gp = tot[P:]
        gW1 += gp[:, None] * WL.T
        gWL += W1.T * gp[None, :]
    else:  # C = (W_1 W_3) ∘ W_2ᵀ
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        gC = tot[P:].reshape(h1, h2)
        K = gC * W2.T  # adjoint of W_1 W_3
        g[o2:o2 + h2 * h1] += (gC * Pm).T.ravel()
        gW1 += K @ WL.T
        gWL += W1.T @ K
    return g


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)  # called from Python too: cached, or a warm run compiles it
def _ism_layout(sizes, block):
    """Where :func:`_ism_share`'s arrays lie in its workspace: the offsets ``off[0..21]`` of, in order, the
    block arrays X, Z_1, H_1, φ'_1, φ''_1, I_1 (width padded(d) or padded(h_1)), Z_2, H_2, φ'_2, φ''_2,
    w φ'_2, U, ā_2 (padded(h_2)), S (padded(d)), h̄ (the wider), each of ``cap`` rows; a row of zeros;
    the weight-gradient accumulators of W_1, W_2, W_L and C, and the trace adjoint p̄ (h_1 numbers); and
    the workspace's length, ``off[21]``."""
    L = sizes.shape[0] - 1
    d, h1, hl = sizes[0], sizes[1], sizes[L - 1]
    h2 = sizes[2] if L == 3 else 1
    dp, h1p, h2p, hlp = _wp(d), _wp(h1), _wp(h2), _wp(hl)
    hm = max(h1p, h2p)
    cap = _rp(block) + R_TILE
    widths = (dp, h1p, h1p, h1p, h1p, h1p, h2p, h2p, h2p, h2p, h2p, h2p, h2p, dp, hm)  # of the block arrays
    off = np.zeros(22, np.int64)
    for i in range(15):  # (a tuple and a loop: an array literal of the 21 lengths compiled 0.3 s longer)
        off[i + 1] = off[i] + cap * widths[i]
    off[16] = off[15] + hm
    off[17] = off[16] + _rp(h1) * dp
    off[18] = off[17] + _rp(h2) * h1p
    off[19] = off[18] + _rp(d) * hlp
    off[20] = off[19] + _rp(h1) * h2p
    off[21] = off[20] + h1
    return off


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _ism_share(WT, W, b, offs, sizes, act, x, w, block, n_groups, g_lo, g_hi, pp, Cp, CTp, per, parts, P, ws):
    """Groups ``g_lo .. g_hi - 1`` of :func:`ism_closed_form` (one thread's share; ``pp`` or ``Cp`` the
    trace's matrix, ``CTp`` its transpose, zero-padded): their ``per`` entries, and each group's
    gradient (then the trace adjoints) summed into its row of ``parts``; serial and GIL-free, with the
    layout of :func:`_stacked_share` (row-major block arrays of padded widths in the thread's reused
    workspace ``ws``, :func:`_ism_layout`; weight gradients accumulated per group in padded arrays).
    """
    n, d = x.shape
    L = sizes.shape[0] - 1
    unit = np.int64(1)  # as in _stacked_share, and every 0 and 1 given to _view: a literal compiles it again
    nought = np.int64(0)  # (it had been compiled for four signatures, 0.45 s, against 0.17 for one)
    h1 = sizes[1]
    hl = sizes[L - 1]
    h2 = sizes[2] if L == 3 else 1
    dp, h1p, h2p, hlp = _wp(d), _wp(h1), _wp(h2), _wp(hl)
    W1T = _view(WT, offs[0, 0], d, h1p)
    b1 = b[offs[2, 0]:offs[2, 1]]
    if L == 3:
        W2T = _view(WT, offs[0, 1], h1, h2p)
        W2 = _view(W, offs[1, 1], h2, h1p)
        b2 = b[offs[2, 1]:offs[2, 2]]
    else:  # unused
        W2T = _view(WT, nought, unit, h2p)
        W2 = _view(W, nought, unit, h1p)
        b2 = b[:h2p]
    WLT = _view(WT, offs[0, L - 1], hl, dp)
    WL = _view(W, offs[1, L - 1], d, hlp)
    bL = b[offs[2, L - 1]:offs[2, L]]
    oL = h1 * d + h1 + (h2 * h1 + h2 if L == 3 else 0)
    cap = _rp(block) + R_TILE
    off = _ism_layout(sizes, block)
    Xf, Z1f, H1f, D11f, D21f, I1f = (ws[off[0]:off[1]], ws[off[1]:off[2]], ws[off[2]:off[3]], ws[off[3]:off[4]],
                                     ws[off[4]:off[5]], ws[off[5]:off[6]])
    Z2f, H2f, D12f, D22f, WD2f, Uf, AB2f = (ws[off[6]:off[7]], ws[off[7]:off[8]], ws[off[8]:off[9]],
                                            ws[off[9]:off[10]], ws[off[10]:off[11]], ws[off[11]:off[12]],
                                            ws[off[12]:off[13]])
    Sf, HBf, zeros = ws[off[13]:off[14]], ws[off[14]:off[15]], ws[off[15]:off[16]]
    for i in range(zeros.shape[0]):  # (an earlier call may have laid out ws otherwise)
        zeros[i] = 0.0
    Xb, Z1, H1, D11, D21 = (_view(Xf, nought, cap, dp), _view(Z1f, nought, cap, h1p), _view(H1f, nought, cap, h1p),
                            _view(D11f, nought, cap, h1p), _view(D21f, nought, cap, h1p))
    I1 = _view(I1f, nought, cap, h1p)  # C φ'(a_2), then the φ''-adjoint injected into a_1, then ā_1
    Z2, H2, D12, D22 = _view(Z2f, nought, cap, h2p), _view(H2f, nought, cap, h2p), _view(D12f, nought, cap, h2p), _view(D22f, nought, cap, h2p)
    WD2, U, AB2 = _view(WD2f, nought, cap, h2p), _view(Uf, nought, cap, h2p), _view(AB2f, nought, cap, h2p)  # WD2: w φ'(a_2)
    S = _view(Sf, nought, cap, dp)
    # a group's weight gradients (padded), added to its row of parts at its end
    gW1f, gW2f, gWLf, gCf = ws[off[16]:off[17]], ws[off[17]:off[18]], ws[off[18]:off[19]], ws[off[19]:off[20]]
    gW1p, gW2p = _view(gW1f, nought, _rp(h1), dp), _view(gW2f, nought, _rp(h2), h1p)
    gWLp, gCp = _view(gWLf, nought, _rp(d), hlp), _view(gCf, nought, _rp(h1), h2p)
    gp = ws[off[20]:off[21]]
    Hlf = H2f if L == 3 else H1f
    Hl = H2 if L == 3 else H1
    sq = np.empty(block)  # ‖s‖² of a block's points
    n_blocks = (n + block - 1) // block
    for grp in range(g_lo, g_hi):
        gpart = parts[grp]
        gb1 = gpart[h1 * d:h1 * d + h1]
        gb2 = gpart[h1 * d + h1 + h2 * h1:h1 * d + h1 + h2 * h1 + h2]
        gbL = gpart[oL + d * hl:oL + d * hl + d]
        for i in range(off[16], off[21]):  # the group's accumulators
            ws[i] = 0.0
        for blk in range(grp * n_blocks // n_groups, (grp + 1) * n_blocks // n_groups):
            k0 = blk * block
            c = min(block, n - k0)
            cr = _rp(c)
            for k in range(c):  # loops, not slice assignments: those compile a broadcasting helper each
                for e in range(d):
                    Xb[k, e] = x[k0 + k, e]
            # ------------------------------------------------ forward
            _dot_rows(Xf, dp, unit, W1T, Z1f, h1p, cr, d, b1, nought)  # a_1 = b_1 + x W_1ᵀ
            _activate_row(act, Z1f[:c * h1p], H1f[:c * h1p], D11f[:c * h1p], D21f[:c * h1p])
            if L == 3:
                _dot_rows(H1f, h1p, unit, W2T, Z2f, h2p, cr, h1, b2, nought)
                _activate_row(act, Z2f[:c * h2p], H2f[:c * h2p], D12f[:c * h2p], D22f[:c * h2p])
            _dot_rows(Hlf, hlp, unit, WLT, Sf, dp, cr, hl, bL, nought)  # s = b_L + h_{L-1} W_Lᵀ
            # ------------------------------------------------ trace, its adjoints
            if L == 2:
                for k in range(c):
                    wk = w[k0 + k]
                    tr = 0.0
                    for j in range(h1):
                        tr += D11[k, j] * pp[j]
                        gp[j] += wk * D11[k, j]
                        I1[k, j] = wk * pp[j] * D21[k, j]
                    per[k0 + k] = tr
            else:
                _dot_rows(D11f, h1p, unit, Cp, Uf, h2p, cr, h1, zeros, nought)  # u = φ'(a_1)ᵀ C
                for k in range(c):
                    wk = w[k0 + k]
                    tr = 0.0
                    for j in range(h2):
                        tr += U[k, j] * D12[k, j]
                        WD2[k, j] = wk * D12[k, j]
                    per[k0 + k] = tr
                _dot_rows(D11f, unit, h1p, WD2, gCf, h2p, _rp(h1), c, gCf, h2p)  # C̄ += Σ_k φ'(a_1) (w φ'(a_2))ᵀ
                _dot_rows(D12f, h2p, unit, CTp, I1f, h1p, cr, h2, zeros, nought)  # C φ'(a_2), scaled by w φ''(a_1) below
            # ------------------------------------------------ ½‖s‖², then the primal reverse pass
            _squared_norms(S, c, d, sq)
            for k in range(c):
                wk = w[k0 + k]
                per[k0 + k] += 0.5 * sq[k]
                for e in range(d):
                    S[k, e] *= wk  # now s̄ = w s
                    gbL[e] += S[k, e]
            for k in range(c, cr):  # rows past the block: no adjoint
                for e in range(dp):
                    S[k, e] = 0.0
            _dot_rows(Sf, unit, dp, Hl, gWLf, hlp, _rp(d), c, gWLf, hlp)  # \bar W_L += s̄ᵀ h_{L-1}
            HB = _view(HBf, nought, cr, hlp)
            _dot_rows(Sf, dp, unit, WL, HBf, hlp, cr, d, zeros, nought)  # \bar h_{L-1} = s̄ W_L
            if L == 3:
                for k in range(c):
                    wk = w[k0 + k]
                    for j in range(h2):
                        t = HB[k, j] * D12[k, j] + U[k, j] * wk * D22[k, j]
                        AB2[k, j] = t
                        gb2[j] += t
                _dot_rows(AB2f, unit, h2p, H1, gW2f, h1p, _rp(h2), c, gW2f, h1p)  # \bar W_2 += ā_2ᵀ h_1
                HB1 = _view(HBf, nought, cr, h1p)
                _dot_rows(AB2f, h2p, unit, W2, HBf, h1p, cr, h2, zeros, nought)  # \bar h_1 = ā_2 W_2
                for k in range(c):
                    wk = w[k0 + k]
                    for j in range(h1):
                        I1[k, j] *= wk * D21[k, j]
            else:
                HB1 = HB
            for k in range(c):  # ā_1 (into I1)
                for j in range(h1):
                    t = HB1[k, j] * D11[k, j] + I1[k, j]
                    I1[k, j] = t
                    gb1[j] += t
            _dot_rows(I1f, unit, h1p, Xb, gW1f, dp, _rp(h1), c, gW1f, dp)  # \bar W_1 += ā_1ᵀ x
        # the group's sums into its row of parts
        _add_into(_view(gpart, nought, h1, d), gW1p)
        _add_into(_view(gpart, oL, d, hl), gWLp)
        if L == 3:
            _add_into(_view(gpart, h1 * d + h1, h2, h1), gW2p)
            _add_into(_view(gpart, P, h1, h2), gCp)
        else:
            _add_into(_view(gpart, P, unit, h1), _view(gp, nought, unit, h1))
