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

done here without the interpreter: the matrix products go to BLAS through
``np.dot`` (into preallocated buffers), the elementwise work is compiled
loops, and the blocks of points are spread over the cores with ``prange``.

Determinism.  The points are cut into blocks of ``block`` points and the
blocks into ``n_groups`` contiguous groups; each group sums its blocks'
gradients into its own row of ``parts`` and the rows are added in group
order at the end.  The result therefore depends on ``block`` and
``n_groups`` (round-off only) but never on the number of threads or on how
the scheduler hands out the groups.

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
from .vecmath import activation_entries

__all__ = ["stacked_terms", "ism_closed_form"]


#: f, f1, f2 = φ, φ', φ'' at a + b along a row; one loop per activation, each vectorised; called, not
#: inlined (a copy in each of the kernels' six call sites doubled their compile time; one call per row costs
#: nothing measurable beside the row's work)
_activate_row = compile_activate_row(numba.njit(error_model="numpy", nogil=True), activation_entries)


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
    h1 = int(sizes[1])
    W1T = np.ascontiguousarray(theta[:h1 * d].reshape(h1, d).T)  # rows W_1 e_j
    run_groups(lambda grp: _stacked_group(theta, sizes, act, kind, x, V, Wt, block, grp * n_blocks // n_groups,
                                          (grp + 1) * n_blocks // n_groups, offW, hmax, W1T, per, parts[grp]),
               n_groups)
    g = np.zeros(P)
    for grp in range(n_groups):
        g += parts[grp]
    return per, g


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _stacked_group(theta, sizes, act, kind, x, V, Wt, block, b_lo, b_hi, offW, hmax, W1T, per, gpart):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`stacked_terms`: their ``per`` rows, and their gradient
    summed into ``gpart``; serial and GIL-free, one call per group (:func:`.group_threads.run_groups`)."""
    n, d = x.shape
    L = sizes.shape[0] - 1
    ident = kind == ISM
    r = d if ident else (0 if kind == RESIDUAL else V.shape[1])
    Rmax = block * (1 + r)
    # scratch: per layer l = 0..L-1 the stacked outputs H_l (R x sizes[l]) and
    # pre-activations Z_l, plus φ'(a_l), φ''(a_l) (block x h_l)
    Hs = [np.empty((Rmax, sizes[l])) for l in range(L)]
    Zs = [np.empty((Rmax, sizes[l])) for l in range(L)]
    D1 = [np.empty((block, sizes[l])) for l in range(L)]
    D2 = [np.empty((block, sizes[l])) for l in range(L)]
    Zo = np.empty((Rmax, d))
    Zbar = np.empty((Rmax, d))
    G = np.empty(Rmax * hmax)  # flat: reshaped to (R, h_l) layer by layer
    Gn = np.empty(Rmax * hmax)
    tmp = np.empty(hmax * max(hmax, d))
    acc = np.empty(hmax)
    sbar = np.empty((block, d))
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
            Wl = theta[offW[l - 1]:offW[l - 1] + h * kin].reshape(h, kin)
            bl = theta[offW[l - 1] + h * kin:offW[l - 1] + h * kin + h]
            Z = Zs[l][:R]
            H = Hs[l][:R]
            if l == 1 and ident:  # tangents of the identity: \dot a_{1,j} = W_1 e_j
                np.dot(xc, Wl.T, Z[:c])
            else:
                np.dot(Hs[l - 1][:R], Wl.T, Z)
            d1l, d2l = D1[l], D2[l]
            for k in range(c):
                _activate_row(act, Z[k], bl, H[k], d1l[k], d2l[k])
                for j in range(r):
                    row = c + k * r + j
                    if l == 1 and ident:
                        for o in range(h):
                            H[row, o] = W1T[j, o] * d1l[k, o]
                    else:
                        for o in range(h):
                            H[row, o] = Z[row, o] * d1l[k, o]
        # ---------------------------------------------------- output and loss
        hL = sizes[L - 1]
        WL = theta[offW[L - 1]:offW[L - 1] + d * hL].reshape(d, hL)
        bL = theta[offW[L - 1] + d * hL:offW[L - 1] + d * hL + d]
        HL = Hs[L - 1][:R]
        Zo_ = Zo[:R]
        np.dot(HL, WL.T, Zo_)
        Zb = Zbar[:R]
        for k in range(c):
            for e in range(d):
                Zo_[k, e] += bL[e]  # s_k
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
                    sbar[k, e] = 0.0
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
                            sbar[k, e] += w * vs * V[k0 + k, i, e]
                    else:
                        per[k0 + k, i] = vjv + 0.5 * ss
                        wsum += w
                for e in range(d):
                    Zb[k, e] = sbar[k, e] if kind == SSM else wsum * Zo_[k, e]
        # ---------------------------------------------------- reverse, output layer
        gWL = gpart[offW[L - 1]:offW[L - 1] + d * hL].reshape(d, hL)
        gbL = gpart[offW[L - 1] + d * hL:offW[L - 1] + d * hL + d]
        T = tmp[:d * hL].reshape(d, hL)
        Gc = G[:R * hL].reshape(R, hL)
        if ident:  # tangent adjoints w_k e_j: sparse, done by hand
            np.dot(Zb[:c].T, HL[:c], T)
            np.dot(Zb[:c], WL, Gc[:c])
            for k in range(c):
                w = Wt[k0 + k, 0]
                for j in range(d):
                    row = c + k * d + j
                    for o in range(hL):
                        T[j, o] += w * HL[row, o]
                        Gc[row, o] = w * WL[j, o]
        else:
            np.dot(Zb.T, HL, T)
            np.dot(Zb, WL, Gc)
        for e in range(d):
            for o in range(hL):
                gWL[e, o] += T[e, o]
            for k in range(c):
                gbL[e] += Zb[k, e]
        # ---------------------------------------------------- reverse, hidden layers
        for l in range(L - 1, 0, -1):
            h, kin = sizes[l], sizes[l - 1]
            Wl = theta[offW[l - 1]:offW[l - 1] + h * kin].reshape(h, kin)
            gW = gpart[offW[l - 1]:offW[l - 1] + h * kin].reshape(h, kin)
            gb = gpart[offW[l - 1] + h * kin:offW[l - 1] + h * kin + h]
            Gc = G[:R * h].reshape(R, h)
            Z = Zs[l][:R]
            d1l, d2l = D1[l], D2[l]
            first_ident = l == 1 and ident
            for k in range(c):
                for o in range(h):  # Σ_j \bar{\dot h}_{l,j} ⊙ \dot a_{l,j}
                    acc[o] = 0.0
                for j in range(r):
                    row = c + k * r + j
                    if first_ident:
                        for o in range(h):
                            acc[o] += Gc[row, o] * W1T[j, o]
                            Gc[row, o] *= d1l[k, o]
                    else:
                        for o in range(h):
                            acc[o] += Gc[row, o] * Z[row, o]
                            Gc[row, o] *= d1l[k, o]
                for o in range(h):
                    Gc[k, o] = Gc[k, o] * d1l[k, o] + acc[o] * d2l[k, o]
                    gb[o] += Gc[k, o]
            T = tmp[:h * kin].reshape(h, kin)
            if first_ident:  # \bar W_1 = ā_1ᵀ x + Σ_k \bar{\dot a}_kᵀ (tangents e_j)
                np.dot(Gc[:c].T, xc, T)
                for k in range(c):
                    for j in range(d):
                        row = c + k * d + j
                        for o in range(h):
                            T[o, j] += Gc[row, o]
            else:
                np.dot(Gc.T, Hs[l - 1][:R], T)
            for o in range(h):
                for i in range(kin):
                    gW[o, i] += T[o, i]
            if l > 1:
                np.dot(Gc, Wl, Gn[:R * kin].reshape(R, kin))
                G, Gn = Gn, G


@numba.njit(inline="always")
def _rows(buf, c, h):
    """The first c·h numbers of the flat buffer ``buf`` as a C-contiguous (c, h) array."""
    return buf[:c * h].reshape(c, h)


@numba.njit(inline="always")
def _add_outer_product(G, A, B, tmp):
    """G += Aᵀ B through the BLAS product into ``tmp`` (np.dot cannot accumulate)."""
    np.dot(A.T, B, tmp)
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            G[i, j] += tmp[i, j]


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
    n = x.shape[0]
    p, Pm, C, P, extra = _ism_prepare(theta, sizes, x.shape[1])
    per = np.empty(n)
    parts = np.zeros((n_groups, P + extra))
    n_blocks = (n + block - 1) // block
    run_groups(lambda grp: _ism_group(theta, sizes, act, x, w, block, grp * n_blocks // n_groups,
                                      (grp + 1) * n_blocks // n_groups, p, C, per, parts[grp]), n_groups)
    return per, _ism_finish(theta, sizes, x.shape[1], Pm, parts, P, extra)


@numba.njit(cache=use_cache(), error_model="numpy")
def _ism_prepare(theta, sizes, d):
    """The trace's matrix of :func:`ism_closed_form`: ``p = diag(W_1 W_2)`` (one hidden layer) or
    ``C = (W_1 W_3) ∘ W_2ᵀ`` with ``Pm = W_1 W_3`` (two); and the sizes ``P`` (parameters) and
    ``extra`` (the trace adjoints summed after them in each group's row)."""
    L = sizes.shape[0] - 1
    h1 = sizes[1]
    hl = sizes[L - 1]
    W1 = theta[:h1 * d].reshape(h1, d)
    o2 = h1 * d + h1
    h2 = sizes[2] if L == 3 else 1
    if L == 2:
        oL = o2
        p = np.empty(h1)
        WLt = theta[oL:oL + d * h1].reshape(d, h1)
        for j in range(h1):
            acc = 0.0
            for i in range(d):
                acc += W1[j, i] * WLt[i, j]
            p[j] = acc
        Pm = np.empty((1, 1))
        C = np.empty((1, 1))
        extra = h1
    else:
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        oL = o2 + h2 * h1 + h2
        p = np.empty(1)
        Pm = np.dot(W1, theta[oL:oL + d * h2].reshape(d, h2))  # W_1 W_3 (h1 x h2)
        C = np.empty((h1, h2))
        for j in range(h1):  # elementwise loops here and in _ism_finish: array expressions compile slower
            for i in range(h2):
                C[j, i] = Pm[j, i] * W2[i, j]
        extra = h1 * h2
    P = oL + d * hl + d
    return p, Pm, C, P, extra


@numba.njit(cache=use_cache(), error_model="numpy")
def _ism_finish(theta, sizes, d, Pm, parts, P, extra):
    """The groups' rows of :func:`ism_closed_form` added in group order, and the trace adjoints
    pushed into the weights."""
    n_groups = parts.shape[0]
    L = sizes.shape[0] - 1
    h1 = sizes[1]
    hl = sizes[L - 1]
    W1 = theta[:h1 * d].reshape(h1, d)
    o2 = h1 * d + h1
    h2 = sizes[2] if L == 3 else 1
    oL = o2 if L == 2 else o2 + h2 * h1 + h2
    WL = theta[oL:oL + d * hl].reshape(d, hl)
    tot = np.zeros(P + extra)
    for grp in range(n_groups):
        for i in range(P + extra):
            tot[i] += parts[grp, i]
    g = tot[:P].copy()
    gW1 = g[:h1 * d].reshape(h1, d)
    if L == 2:  # p = diag(W_1 W_2): ∂p_j/∂W_1[j, i] = W_2[i, j], ∂p_j/∂W_2[i, j] = W_1[j, i]
        gp = tot[P:]
        gW2 = g[oL:oL + d * h1].reshape(d, h1)
        for j in range(h1):
            for i in range(d):
                gW1[j, i] += gp[j] * WL[i, j]
                gW2[i, j] += W1[j, i] * gp[j]
    else:  # C = (W_1 W_3) ∘ W_2ᵀ
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        gC = tot[P:].reshape(h1, h2)
        K = np.empty((h1, h2))  # adjoint of W_1 W_3
        gW2 = g[o2:o2 + h2 * h1].reshape(h2, h1)
        for j in range(h1):
            for i in range(h2):
                K[j, i] = gC[j, i] * W2[i, j]
                gW2[i, j] += gC[j, i] * Pm[j, i]
        T1 = np.dot(K, WL.T)
        for j in range(h1):
            for i in range(d):
                gW1[j, i] += T1[j, i]
        gWL = g[oL:oL + d * hl].reshape(d, hl)
        T3 = np.dot(W1.T, K)
        for i in range(d):
            for j in range(h2):
                gWL[i, j] += T3[i, j]
    return g


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _ism_group(theta, sizes, act, x, w, block, b_lo, b_hi, p, C, per, gpart):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`ism_closed_form` (``p`` or ``C`` its trace's matrix): their
    ``per`` entries, and their gradient (then the trace adjoints) summed into ``gpart``; serial and
    GIL-free, one call per group as :func:`_stacked_group`."""
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
        b2 = theta[:1]
    else:
        W2 = theta[o2:o2 + h2 * h1].reshape(h2, h1)
        b2 = theta[o2 + h2 * h1:o2 + h2 * h1 + h2]
        oL = o2 + h2 * h1 + h2
    WL = theta[oL:oL + d * hl].reshape(d, hl)
    bL = theta[oL + d * hl:oL + d * hl + d]
    P = oL + d * hl + d
    hmax = max(h1, h2)
    gW1 = gpart[:h1 * d].reshape(h1, d)
    gb1 = gpart[h1 * d:h1 * d + h1]
    gWL = gpart[oL:oL + d * hl].reshape(d, hl)
    gbL = gpart[oL + d * hl:oL + d * hl + d]
    Z1 = np.empty((block, h1))
    H1 = np.empty((block, h1))
    D11 = np.empty((block, h1))
    D21 = np.empty((block, h1))
    I1 = np.empty((block, h1))  # φ''-adjoint injected into a_1
    Z2 = np.empty((block, h2))
    H2 = np.empty((block, h2))
    D12 = np.empty((block, h2))
    D22 = np.empty((block, h2))
    U = np.empty((block, h2))
    S = np.empty((block, d))
    hbar = np.empty(block * hmax)  # flat: (c, h_l) views, layer by layer
    abar = np.empty(block * hmax)
    tmp = np.empty(max(hmax * hmax, hmax * d))
    for blk in range(b_lo, b_hi):
        k0 = blk * block
        c = min(block, n - k0)
        xc = x[k0:k0 + c]
        wc = w[k0:k0 + c]
        # ------------------------------------------------ forward
        np.dot(xc, W1.T, Z1[:c])
        for k in range(c):
            _activate_row(act, Z1[k], b1, H1[k], D11[k], D21[k])
        if L == 3:
            np.dot(H1[:c], W2.T, Z2[:c])
            for k in range(c):
                _activate_row(act, Z2[k], b2, H2[k], D12[k], D22[k])
            Hl = H2[:c]
        else:
            Hl = H1[:c]
        np.dot(Hl, WL.T, S[:c])
        # ------------------------------------------------ trace, its adjoints
        if L == 2:
            for k in range(c):
                tr = 0.0
                for j in range(h1):
                    tr += D11[k, j] * p[j]
                    gpart[P + j] += wc[k] * D11[k, j]
                    I1[k, j] = wc[k] * p[j] * D21[k, j]
                per[k0 + k] = tr
        else:
            np.dot(D11[:c], C, U[:c])  # u = φ'(a_1)ᵀ C
            for k in range(c):
                tr = 0.0
                for j in range(h2):
                    tr += U[k, j] * D12[k, j]
                per[k0 + k] = tr
            wD = _rows(abar, c, h1)
            for k in range(c):
                for j in range(h1):
                    wD[k, j] = wc[k] * D11[k, j]
            gC = gpart[P:P + h1 * h2].reshape(h1, h2)
            _add_outer_product(gC, wD, D12[:c], tmp[:h1 * h2].reshape(h1, h2))
            np.dot(D12[:c], C.T, I1[:c])
            for k in range(c):
                for j in range(h1):
                    I1[k, j] *= wc[k] * D21[k, j]
        # ------------------------------------------------ ½‖s‖², then the primal reverse pass
        for k in range(c):
            ss = 0.0
            for e in range(d):
                S[k, e] += bL[e]
                ss += S[k, e] * S[k, e]
            per[k0 + k] += 0.5 * ss
            for e in range(d):
                S[k, e] *= wc[k]  # now s̄ = w s
                gbL[e] += S[k, e]
        _add_outer_product(gWL, S[:c], Hl, tmp[:d * hl].reshape(d, hl))
        np.dot(S[:c], WL, _rows(hbar, c, hl))
        if L == 3:
            hb2 = _rows(hbar, c, h2)
            ab2 = _rows(abar, c, h2)
            gW2 = gpart[o2:o2 + h2 * h1].reshape(h2, h1)
            gb2 = gpart[o2 + h2 * h1:o2 + h2 * h1 + h2]
            for k in range(c):
                for j in range(h2):
                    ab2[k, j] = hb2[k, j] * D12[k, j] + U[k, j] * wc[k] * D22[k, j]
                    gb2[j] += ab2[k, j]
            _add_outer_product(gW2, ab2, H1[:c], tmp[:h2 * h1].reshape(h2, h1))
            np.dot(ab2, W2, _rows(hbar, c, h1))
        hb1 = _rows(hbar, c, h1)
        ab1 = _rows(abar, c, h1)
        for k in range(c):
            for j in range(h1):
                ab1[k, j] = hb1[k, j] * D11[k, j] + I1[k, j]
                gb1[j] += ab1[k, j]
        _add_outer_product(gW1, ab1, xc, tmp[:h1 * d].reshape(h1, d))
