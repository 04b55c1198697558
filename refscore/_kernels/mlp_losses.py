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

done here without the interpreter, block by block of points: the matrix
products are :mod:`.tile_products`' ``dot_rows`` (AVX-512 through LLVM's
vectoriser, about 1.5x OpenBLAS's AVX2 kernel on these shapes; a reduction
over fewer than 16 numbers, the input dimension d of a small problem, goes to
``np.dot``), the weight gradients from feature-major copies of the block's
arrays (``transpose_into``), the activations over a whole block at a time,
and the groups of blocks over the cores by :func:`.group_threads.run_groups`.

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
  (ESM, eq. (2); DSM at :math:`\tilde x = x + \sigma\varepsilon`,
  :math:`t = -\varepsilon/\sigma`, eq. (6)).

Kinds are :class:`refscore._kernels.ids.LossKind`; activation ids are
registry positions (:func:`refscore.models.activations.kernel_id`); the
activations and their first two derivatives come from
:data:`refscore._kernels.vecmath.activation`, branch-free so that the loops
over a layer's units vectorise.
"""
from __future__ import annotations

import numba
import numpy as np

from .activation_table import compile_activate_row
from .cache import use_cache
from .group_threads import run_groups
from .ids import ISM, RESIDUAL, SSM, SSM_VR  # noqa: F401  (the kinds, named in the docstrings)
from .tile_products import compile_tile_products
from .vecmath import activation_entries

__all__ = ["stacked_terms", "ism_closed_form"]


#: f, f1, f2 = φ, φ', φ'' at a + b along a row; one loop per activation, each vectorised; called, not
#: inlined (a copy in each call site doubled the kernels' compile time).  The kernels call it once per
#: layer and block, on the block's c·h pre-activations as one flat row (the bias already added, ``b`` a
#: row of zeros): one call per point's row of 64 measured 1.5 ns per unit against 1.0 ns.
_activate_row = compile_activate_row(numba.njit(error_model="numpy", nogil=True), activation_entries)

#: the products ``C = A Bᵀ + b``, ``G += A Bᵀ`` and the feature-major copies (:mod:`.tile_products`)
_dot_rows, _add_into, _transpose_into, _padded = compile_tile_products(numba.njit)

#: a reduction shorter than this goes to ``np.dot`` (BLAS): ``_dot_rows`` vectorises 8 terms at a time
#: (measured at K = 10: 12 GFMA/s against BLAS's 23; at K = 50: 32 against 27)
_MIN_VECTOR_K = 16


def _transposed_weights(theta, sizes):
    """``theta`` with each weight matrix W_l (h_l x h_{l-1}) replaced by W_lᵀ, flattened at the same offset
    (the backward products ``Ḡ W`` read W's columns as rows); the biases' slots are unused."""
    out = np.zeros_like(theta)
    p = 0
    for l in range(sizes.shape[0] - 1):
        h, kin = int(sizes[l + 1]), int(sizes[l])
        out[p:p + h * kin] = theta[p:p + h * kin].reshape(h, kin).T.ravel()
        p += h * kin + h
    return out


def stacked_terms(theta, sizes, act, kind, x, V, Wt, block, n_groups):
    """Per-point loss terms and their weighted parameter gradient (see the module notes).

    Parameters
    ----------
    theta : (P,) float64, the MLPScore layout.
    sizes : (L+1,) int64, ``(d, h_1, …, h_{L-1}, d)``.
    act : int, activation id.
    kind : int, ``ISM``, ``SSM``, ``SSM_VR`` or ``RESIDUAL`` (:class:`~refscore._kernels.ids.LossKind`).
    x : (n, d) C-contiguous.
    V : (n, r, d) C-contiguous tangents (SSM kinds); ignored for ISM (r = d);
        (n, 1, d) targets for RESIDUAL (r = 0).
    Wt : (n, m) weights, m = 1 for ISM and RESIDUAL, m = r otherwise.
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
    hmax = 0
    for l in range(L):
        offW[l] = p
        p += int(sizes[l + 1] * sizes[l] + sizes[l + 1])
        hmax = max(hmax, int(sizes[l + 1]))
    P = p
    per = np.empty((n, m))
    parts = np.zeros((n_groups, P))
    n_blocks = (n + block - 1) // block
    thetaT = _transposed_weights(theta, sizes)
    run_groups(lambda grp: _stacked_group(theta, thetaT, sizes, act, kind, x, V, Wt, block,
                                          grp * n_blocks // n_groups, (grp + 1) * n_blocks // n_groups,
                                          offW, hmax, per, parts[grp]),
               n_groups)
    g = np.zeros(P)
    for grp in range(n_groups):
        g += parts[grp]
    return per, g


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _stacked_group(theta, thetaT, sizes, act, kind, x, V, Wt, block, b_lo, b_hi, offW, hmax, per, gpart):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`stacked_terms`: their ``per`` rows, and their gradient
    summed into ``gpart``; serial and GIL-free, one call per group (:func:`.group_threads.run_groups`).

    Row-major (point-major) arrays per layer: the stacked outputs H_l, pre-activations Z_l and adjoints
    Ḡ_l (R x h_l, R = c (1 + r): the c primal rows, then each point's r tangent rows), φ'(a_l) and
    φ''(a_l) (c x h_l); a weight gradient Ḡ_lᵀ H_{l-1} reads feature-major copies (h x R in rows of a
    padded length).  The 2-D views are made once per call (each reshape compiles error paths of its
    own), the blocks take leading rows of them.
    """
    n, d = x.shape
    L = sizes.shape[0] - 1
    ident = kind == ISM
    r = d if ident else (0 if kind == RESIDUAL else V.shape[1])
    Rmax = block * (1 + r)
    wmax = max(hmax, d)
    Ws = [theta[offW[l]:offW[l] + sizes[l + 1] * sizes[l]].reshape(sizes[l + 1], sizes[l]) for l in range(L)]
    WTs = [thetaT[offW[l]:offW[l] + sizes[l + 1] * sizes[l]].reshape(sizes[l], sizes[l + 1]) for l in range(L)]
    gWs = [gpart[offW[l]:offW[l] + sizes[l + 1] * sizes[l]].reshape(sizes[l + 1], sizes[l]) for l in range(L)]
    tmp = np.empty(wmax * wmax)  # a block's share of a weight gradient, added to gWs[l]
    Ts = [tmp[:sizes[l + 1] * sizes[l]].reshape(sizes[l + 1], sizes[l]) for l in range(L)]
    Hf = [np.empty(Rmax * sizes[l]) for l in range(L)]  # flat, for the activations over a block
    Zf = [np.empty(Rmax * sizes[l]) for l in range(L)]
    D1f = [np.empty(block * sizes[l]) for l in range(L)]
    D2f = [np.empty(block * sizes[l]) for l in range(L)]
    Hs = [Hf[l].reshape(Rmax, sizes[l]) for l in range(L)]
    Zs = [Zf[l].reshape(Rmax, sizes[l]) for l in range(L)]
    D1s = [D1f[l].reshape(block, sizes[l]) for l in range(L)]
    D2s = [D2f[l].reshape(block, sizes[l]) for l in range(L)]
    Gs = [np.empty((Rmax, sizes[l])) for l in range(L)]  # adjoints [ā_l; ǡ_l], then of h_{l-1}
    Zo = np.empty((Rmax, d))
    Zbar = np.empty((Rmax, d))
    ldT = _padded(Rmax)
    HT = np.empty((wmax, ldT))  # feature-major copies of H_{l-1} and Ḡ_l
    GT = np.empty((wmax, ldT))
    zeros = np.zeros(block * wmax)
    acc = np.empty(hmax)
    sbar = np.empty(d)
    for blk in range(b_lo, b_hi):
        k0 = blk * block
        c = min(block, n - k0)
        R = c * (1 + r)
        xc = x[k0:k0 + c]
        # ---------------------------------------------------- forward
        H0 = Hs[0]
        for k in range(c):  # loops, not slice assignments: those compile a broadcasting helper each
            for e in range(d):
                H0[k, e] = xc[k, e]
        if not ident:
            for k in range(c):
                for j in range(r):
                    for e in range(d):
                        H0[c + k * r + j, e] = V[k0 + k, j, e]
        for l in range(1, L):
            h, kin = sizes[l], sizes[l - 1]
            bl = theta[offW[l - 1] + h * kin:offW[l - 1] + h * kin + h]
            Hp = Hs[l - 1][:R]
            Z = Zs[l][:R]
            H = Hs[l][:R]
            first_ident = l == 1 and ident
            _dot_rows(Hp[:c], Ws[l - 1], Z[:c], bl, kin)  # a_l = h_{l-1} W_lᵀ + b_l
            if not first_ident:
                _dot_rows(Hp[c:], Ws[l - 1], Z[c:], zeros, kin)  # \dot a_l = \dot h_{l-1} W_lᵀ
            else:  # tangents of the identity: \dot a_{1,j} = W_1 e_j
                W1T = WTs[0]
                for k in range(c):
                    for j in range(d):
                        for o in range(h):
                            Z[c + k * d + j, o] = W1T[j, o]  # row j of W_1ᵀ
            _activate_row(act, Zf[l][:c * h], zeros[:c * h], Hf[l][:c * h], D1f[l][:c * h], D2f[l][:c * h])
            d1l = D1s[l]
            for k in range(c):  # \dot h_l = φ'(a_l) ⊙ \dot a_l
                for j in range(r):
                    row = c + k * r + j
                    for o in range(h):
                        H[row, o] = Z[row, o] * d1l[k, o]
        # ---------------------------------------------------- output and loss
        hL = sizes[L - 1]
        WL = Ws[L - 1]
        bL = theta[offW[L - 1] + d * hL:offW[L - 1] + d * hL + d]
        HL = Hs[L - 1][:R]
        Zo_ = Zo[:R]
        _dot_rows(HL[:c], WL, Zo_[:c], bL, hL)  # s_k
        _dot_rows(HL[c:], WL, Zo_[c:], zeros, hL)  # J_k v_{ki}
        Zb = Zbar[:R]
        for k in range(c):
            ss = 0.0
            for e in range(d):
                ss += Zo_[k, e] * Zo_[k, e]
            if ident:
                w = Wt[k0 + k, 0]
                tr = 0.0
                for j in range(d):
                    tr += Zo_[c + k * d + j, j]
                per[k0 + k, 0] = tr + 0.5 * ss
                for e in range(d):
                    Zb[k, e] = w * Zo_[k, e]
            elif kind == RESIDUAL:
                w = Wt[k0 + k, 0]
                rr = 0.0
                for e in range(d):
                    res = Zo_[k, e] - V[k0 + k, 0, e]
                    rr += res * res
                    Zb[k, e] = w * res
                per[k0 + k, 0] = 0.5 * rr
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
                        vjv += V[k0 + k, i, e] * Zo_[row, e]
                        vs += V[k0 + k, i, e] * Zo_[k, e]
                        Zb[row, e] = w * V[k0 + k, i, e]
                    if kind == SSM:
                        per[k0 + k, i] = vjv + 0.5 * vs * vs
                        for e in range(d):
                            sbar[e] += w * vs * V[k0 + k, i, e]
                    else:
                        per[k0 + k, i] = vjv + 0.5 * ss
                        wsum += w
                for e in range(d):
                    Zb[k, e] = sbar[e] if kind == SSM else wsum * Zo_[k, e]
        # ---------------------------------------------------- reverse, output layer
        gWL = gWs[L - 1]
        gbL = gpart[offW[L - 1] + d * hL:offW[L - 1] + d * hL + d]
        Gc = Gs[L - 1][:R]
        rows = c if ident else R  # ISM: the tangent adjoints w_k e_j are sparse, done by hand below
        _transpose_into(HL[:rows], HT)
        _transpose_into(Zb[:rows], GT)
        _dot_rows(GT[:d], HT[:hL], Ts[L - 1], zeros, rows)  # \bar W_L += Z̄ᵀ H_{L-1}
        _add_into(gWL, Ts[L - 1])
        _dot_rows(Zb[:rows], WTs[L - 1], Gc[:rows], zeros, d)  # Ḡ = Z̄ W_L
        if ident:
            for k in range(c):
                w = Wt[k0 + k, 0]
                for j in range(d):
                    row = c + k * d + j
                    for o in range(hL):
                        gWL[j, o] += w * HL[row, o]
                        Gc[row, o] = w * WL[j, o]
        for k in range(c):
            for e in range(d):
                gbL[e] += Zb[k, e]
        # ---------------------------------------------------- reverse, hidden layers
        for l in range(L - 1, 0, -1):
            h, kin = sizes[l], sizes[l - 1]
            gb = gpart[offW[l - 1] + h * kin:offW[l - 1] + h * kin + h]
            Gc = Gs[l][:R]
            Z = Zs[l][:R]
            d1l = D1s[l]
            d2l = D2s[l]
            first_ident = l == 1 and ident
            for k in range(c):
                for o in range(h):  # Σ_j \bar{\dot h}_{l,j} ⊙ \dot a_{l,j}
                    acc[o] = 0.0
                for j in range(r):
                    row = c + k * r + j
                    for o in range(h):
                        acc[o] += Gc[row, o] * Z[row, o]
                        Gc[row, o] *= d1l[k, o]
                for o in range(h):
                    Gc[k, o] = Gc[k, o] * d1l[k, o] + acc[o] * d2l[k, o]
                    gb[o] += Gc[k, o]
            # \bar W_l += [ā_l; ǡ_l]ᵀ [h_{l-1}; \dot h_{l-1}] (first layer of ISM: ā_1ᵀ x + Σ_k ǡ_kᵀ, tangents e_j)
            rows = c if first_ident else R
            _transpose_into(Hs[l - 1][:rows], HT)
            _transpose_into(Gc[:rows], GT)
            _dot_rows(GT[:h], HT[:kin], Ts[l - 1], zeros, rows)
            _add_into(gWs[l - 1], Ts[l - 1])
            if first_ident:
                gW = gWs[0]
                for k in range(c):
                    for j in range(d):
                        row = c + k * d + j
                        for o in range(h):
                            gW[o, j] += Gc[row, o]
            if l > 1:
                _dot_rows(Gc, WTs[l - 1], Gs[l - 1][:R], zeros, h)  # adjoint of h_{l-1}


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
    thetaT = _transposed_weights(theta, sizes)
    CT = np.ascontiguousarray(C.T)
    run_groups(lambda grp: _ism_group(theta, thetaT, sizes, act, x, w, block, grp * n_blocks // n_groups,
                                      (grp + 1) * n_blocks // n_groups, p, C, CT, per, parts[grp]), n_groups)
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


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _ism_group(theta, thetaT, sizes, act, x, w, block, b_lo, b_hi, p, Cm, CT, per, gpart):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`ism_closed_form` (``p`` or ``Cm`` its trace's matrix, ``CT``
    its transpose): their ``per`` entries, and their gradient (then the trace adjoints) summed into
    ``gpart``; serial and GIL-free, one call per group as :func:`_stacked_group`.

    Point-major (c x h) arrays for the forward products, feature-major copies (h x c, rows padded) of the
    arrays a weight gradient sums over the points (:mod:`.tile_products`).
    """
    n, d = x.shape
    L = sizes.shape[0] - 1
    h1 = sizes[1]
    hl = sizes[L - 1]
    W1 = theta[:h1 * d].reshape(h1, d)
    b1 = theta[h1 * d:h1 * d + h1]
    o2 = h1 * d + h1
    h2 = sizes[2] if L == 3 else 1
    if L == 2:
        oL = o2
        W2 = theta[:1].reshape(1, 1)  # unused
        W2T = theta[:1].reshape(1, 1)
        b2 = theta[:1]
    else:
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        W2T = thetaT[o2:o2 + h2 * h1].reshape(h1, h2)
        b2 = theta[o2 + h2 * h1:o2 + h2 * h1 + h2]
        oL = o2 + h2 * h1 + h2
    WL = theta[oL:oL + d * hl].reshape(d, hl)
    WLT = thetaT[oL:oL + d * hl].reshape(hl, d)
    bL = theta[oL + d * hl:oL + d * hl + d]
    P = oL + d * hl + d
    hmax = max(h1, h2)
    gW1 = gpart[:h1 * d].reshape(h1, d)
    gb1 = gpart[h1 * d:h1 * d + h1]
    gWL = gpart[oL:oL + d * hl].reshape(d, hl)
    gbL = gpart[oL + d * hl:oL + d * hl + d]
    zeros = np.zeros(block * max(hmax, d))
    gC = gpart[P:P + h1 * h2].reshape(h1, h2)  # the trace adjoints (two hidden layers)
    gW2 = gpart[o2:o2 + h2 * h1].reshape(h2, h1)
    tmp = np.empty(max(hmax, d) * max(hmax, d))  # a block's share of a weight gradient, added to it
    TC = tmp[:h1 * h2].reshape(h1, h2)
    T2 = tmp[:h2 * h1].reshape(h2, h1)
    TL = tmp[:d * hl].reshape(d, hl)
    T1 = tmp[:h1 * d].reshape(h1, d)
    # point-major buffers (c x width per block, flat)
    Z1 = np.empty(block * h1)
    H1 = np.empty(block * h1)
    D11 = np.empty(block * h1)
    D21 = np.empty(block * h1)
    I1 = np.empty(block * h1)  # φ''-adjoint injected into a_1, then ā_1
    Z2 = np.empty(block * h2)
    H2 = np.empty(block * h2)
    D12 = np.empty(block * h2)
    D22 = np.empty(block * h2)
    U = np.empty(block * h2)
    AB2 = np.empty(block * h2)
    S = np.empty(block * d)
    HB = np.empty(block * hmax)
    # feature-major copies (width x ld per block, flat)
    ldmax = _padded(block)
    H1T = np.empty(ldmax * h1)
    HLT = np.empty(ldmax * hl)
    WD1T = np.empty(ldmax * h1)
    D12T = np.empty(ldmax * h2)
    AB2T = np.empty(ldmax * h2)
    AB1T = np.empty(ldmax * h1)
    SBT = np.empty(ldmax * d)
    XT = np.empty(ldmax * d)
    for blk in range(b_lo, b_hi):
        k0 = blk * block
        c = min(block, n - k0)
        ld = _padded(c)
        xc = x[k0:k0 + c]
        wc = w[k0:k0 + c]
        # ------------------------------------------------ forward
        z1 = Z1[:c * h1].reshape(c, h1)
        if d >= _MIN_VECTOR_K:
            _dot_rows(xc, W1, z1, b1, d)
        else:
            np.dot(xc, W1.T, z1)
            for k in range(c):
                for j in range(h1):
                    z1[k, j] += b1[j]
        _activate_row(act, Z1[:c * h1], zeros[:c * h1], H1[:c * h1], D11[:c * h1], D21[:c * h1])
        hh1 = H1[:c * h1].reshape(c, h1)
        d11 = D11[:c * h1].reshape(c, h1)
        d21 = D21[:c * h1].reshape(c, h1)
        h1t = H1T[:h1 * ld].reshape(h1, ld)
        if L == 3:
            _transpose_into(hh1, h1t)
            _dot_rows(hh1, W2, Z2[:c * h2].reshape(c, h2), b2, h1)
            _activate_row(act, Z2[:c * h2], zeros[:c * h2], H2[:c * h2], D12[:c * h2], D22[:c * h2])
            hlc = H2[:c * h2].reshape(c, h2)
        else:
            hlc = hh1
        hlt = HLT[:hl * ld].reshape(hl, ld)
        _transpose_into(hlc, hlt)
        s = S[:c * d].reshape(c, d)
        _dot_rows(hlc, WL, s, bL, hl)
        # ------------------------------------------------ trace, its adjoints
        i1 = I1[:c * h1].reshape(c, h1)
        if L == 2:
            for k in range(c):
                tr = 0.0
                for j in range(h1):
                    tr += d11[k, j] * p[j]
                    gpart[P + j] += wc[k] * d11[k, j]
                    i1[k, j] = wc[k] * p[j] * d21[k, j]
                per[k0 + k] = tr
        else:
            d12 = D12[:c * h2].reshape(c, h2)
            d22 = D22[:c * h2].reshape(c, h2)
            u = U[:c * h2].reshape(c, h2)
            _dot_rows(d11, CT, u, zeros, h1)  # u = φ'(a_1)ᵀ C
            for k in range(c):
                tr = 0.0
                for j in range(h2):
                    tr += u[k, j] * d12[k, j]
                per[k0 + k] = tr
            wd1t = WD1T[:h1 * ld].reshape(h1, ld)  # (w φ'(a_1))ᵀ
            _transpose_into(d11, wd1t)
            for j in range(h1):
                for k in range(c):
                    wd1t[j, k] *= wc[k]
            d12t = D12T[:h2 * ld].reshape(h2, ld)
            _transpose_into(d12, d12t)
            _dot_rows(wd1t, d12t, TC, zeros, c)  # C̄ += Σ_k w φ'_1 φ'_2ᵀ
            _add_into(gC, TC)
            _dot_rows(d12, Cm, i1, zeros, h2)  # C φ'(a_2), scaled by w φ''(a_1) below
        # ------------------------------------------------ ½‖s‖², then the primal reverse pass
        sbt = SBT[:d * ld].reshape(d, ld)
        for k in range(c):
            ss = 0.0
            for e in range(d):
                ss += s[k, e] * s[k, e]
            per[k0 + k] += 0.5 * ss
            for e in range(d):
                s[k, e] *= wc[k]  # now s̄ = w s
                gbL[e] += s[k, e]
        _transpose_into(s, sbt)
        _dot_rows(sbt, hlt, TL, zeros, c)
        _add_into(gWL, TL)
        hbl = HB[:c * hl].reshape(c, hl)
        if d >= _MIN_VECTOR_K:
            _dot_rows(s, WLT, hbl, zeros, d)
        else:
            np.dot(s, WL, hbl)
        if L == 3:
            ab2 = AB2[:c * h2].reshape(c, h2)
            gb2 = gpart[o2 + h2 * h1:o2 + h2 * h1 + h2]
            for k in range(c):
                for j in range(h2):
                    t = hbl[k, j] * d12[k, j] + u[k, j] * wc[k] * d22[k, j]
                    ab2[k, j] = t
                    gb2[j] += t
            ab2t = AB2T[:h2 * ld].reshape(h2, ld)
            _transpose_into(ab2, ab2t)
            _dot_rows(ab2t, h1t, T2, zeros, c)
            _add_into(gW2, T2)
            hb1 = HB[:c * h1].reshape(c, h1)
            _dot_rows(ab2, W2T, hb1, zeros, h2)
            for k in range(c):
                for j in range(h1):
                    i1[k, j] *= wc[k] * d21[k, j]
        else:
            hb1 = hbl
        for k in range(c):  # ā_1 (into i1)
            for j in range(h1):
                t = hb1[k, j] * d11[k, j] + i1[k, j]
                i1[k, j] = t
                gb1[j] += t
        ab1t = AB1T[:h1 * ld].reshape(h1, ld)
        _transpose_into(i1, ab1t)
        xt = XT[:d * ld].reshape(d, ld)
        _transpose_into(xc, xt)
        _dot_rows(ab1t, xt, T1, zeros, c)
        _add_into(gW1, T1)
