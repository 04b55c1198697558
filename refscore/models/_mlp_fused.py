r"""MLPScore's fused loss-and-gradient passes: the NumPy engine and the Numba engine.

:class:`~refscore.models.mlp.MLPScore` offers the optional fused path of the
primitives table (:meth:`~refscore.models.base.ScoreModel._fused_terms`) by
calling :func:`fused_terms` here with itself as the argument.  A fused pass
returns exactly what the primitive assembly of :mod:`refscore.losses` returns
(docs/derivations.md §2), to round-off (tested at 1e-12), from one forward and
one combined reverse pass per chunk instead of several:

========  ====================================  ===========================================
kind      NumPy engine (``backend="numpy"``)    Numba engine (``backend="numba"``)
========  ====================================  ===========================================
RESIDUAL  ``score`` + ``score_vjp_params``      :func:`~refscore._kernels.mlp_losses.stacked_terms`, r = 0
DENOISING RESIDUAL at x + σz, t = −z/σ          ``stacked_terms``, r = 0, x + σz and z/σ formed in the kernel
ISM       :func:`stacked_pass`, identity        ``stacked_terms`` (forward trace path) or
          tangents; closed form (fast path);    :func:`~refscore._kernels.mlp_losses.ism_closed_form`
          cyclic chain (cyclic path)            (fast path); cyclic path: the NumPy engine
SSM(-VR)  :func:`stacked_pass`, m tangents      ``stacked_terms``, m tangents
========  ====================================  ===========================================

The NumPy engine is the readable twin of the compiled one; both receive the
model (its layers, activation and chunk size) as an argument.
"""
from __future__ import annotations

import numpy as np

from .._kernels import ids
from .mlp_base import one_blas_thread

__all__ = ["fused_terms", "stacked_pass"]


def fused_terms(model, kind, theta, x, w, aux):
    """Dispatch one fused pass (see :meth:`refscore.models.base.ScoreModel._fused_terms`)."""
    if kind == ids.RESIDUAL:
        return _residual_terms(model, theta, x, aux, w)
    if kind == ids.DENOISING:
        return _denoising_terms(model, theta, x, *aux, w)
    if kind == ids.ISM:
        return _ism_terms(model, theta, x, w)
    if kind in (ids.SSM, ids.SSM_VR):
        return _ssm_terms(model, theta, x, aux, w, kind == ids.SSM_VR)
    raise ValueError(f"kind must be a LossKind, got {kind!r}")


# ------------------------------------------------------------------ the NumPy stacked pass
def stacked_pass(model, layers, xc, Tc, finish, grads):
    r"""One forward and one reverse pass carrying the primal and r tangents stacked.

    Rows ``[:c]`` of every layer's array hold the primal :math:`h_l` (or its
    adjoint), rows ``[c:]`` the tangents :math:`\dot h_l` (c·r rows), so each
    layer costs ONE matrix product forward, one for its weight gradient and
    one backward, on (c (1 + r)) rows (docs/derivations.md §3, the stacked pass):

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
    L = model.n_layers
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
        vals = model.act.derivatives(a, 2)
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
        Tbar *= D1[l][:, None, :]  # G is now [ā_l; ǡ_l]
        gW, gb = grads[l - 1]
        gb += G[:c].sum(axis=0)
        if l == 1 and ident:
            gW += G[:c].T @ xc
            gW += Tbar.sum(axis=0).T
        else:
            gW += G.T @ Hs[l - 1]
        if l > 1:
            G = G @ W


def _stacked_slices(model, n, r):
    """Chunks for :func:`stacked_pass`: (1 + r) rows per point of width max(sizes), >= 32 points."""
    step = max(32, model.chunk_size // ((1 + r) * max(model.sizes)))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


# ------------------------------------------------------------------ the Numba engine
def _kernel_blocks(model, n, rows):
    """Blocks of points for the Numba kernels, ``rows`` stacked rows per point.

    A block's layer arrays hold about ``chunk_size`` numbers, as the NumPy
    chunks do (≈ 190 rows of a width-64 network; half or twice that measured
    within 3 % for ISM, ESM and SSM at n = 10⁴, d = 10 and 50); the blocks are
    cut into at most 16 groups, fixed by n alone, so that the sum does not
    depend on the thread count.
    """
    block = max(1, model.chunk_size // (rows * max(model.sizes)))
    return block, min(16, -(-n // block))


def _kernel_args(model, theta, x):
    return (np.ascontiguousarray(theta, dtype=float), np.asarray(model.sizes, dtype=np.int64),
            model.kernel_activation, np.ascontiguousarray(x, dtype=float))


def _stacked_kernel(model, theta, x, V, Wt, kind, sigma=0.0):
    """:func:`~refscore._kernels.mlp_losses.stacked_terms` with the model's sizes, activation and blocking.

    The kernel computes its matrix products itself (no BLAS); its threads are
    :func:`refscore._kernels.group_threads.run_shares`'.
    """
    from .._kernels import load_mlp_losses

    n, d = x.shape
    r = d if V is None else (0 if kind in (ids.RESIDUAL, ids.DENOISING) else V.shape[1])
    block, n_groups = _kernel_blocks(model, n, 1 + r)
    if V is None:
        V = np.empty((0, 0, 0))
    theta, sizes, act, x = _kernel_args(model, theta, x)
    return load_mlp_losses().stacked_terms(theta, sizes, act, int(kind), x, V, np.ascontiguousarray(Wt, dtype=float),
                                           float(sigma), block, n_groups)


# ------------------------------------------------------------------ the three fused passes
@one_blas_thread
def _residual_terms(model, theta, x, t, w):
    r"""ESM / DSM terms :math:`\tfrac12\lVert s_\theta(x_k) - t_k\rVert^2` and the gradient of their ``w``-sum.

    :math:`\nabla_\theta = \texttt{score\_vjp\_params}(w_k(s_k - t_k))` (eqs. (2), (6)).
    Numba: one forward and one reverse pass per block
    (:func:`~refscore._kernels.mlp_losses.stacked_terms`, kind ``RESIDUAL``); NumPy: the
    two primitives.
    """
    if not model.uses_numba:
        r = model._score(theta, x) - t
        return 0.5 * np.einsum("nd,nd->n", r, r), model._score_vjp_params(theta, x, w[:, None] * r)
    T = np.ascontiguousarray(t, dtype=float)[:, None, :]
    per, g = _stacked_kernel(model, theta, x, T, w[:, None], ids.RESIDUAL)
    return per[:, 0], g


@one_blas_thread
def _denoising_terms(model, theta, x, sigma, z, w):
    r"""DSM terms :math:`\tfrac12\lVert s_\theta(x_k + \sigma z_k) + z_k/\sigma\rVert^2` and the gradient of their
    ``w``-sum (eq. (6)): :func:`_residual_terms` at :math:`\tilde x = x + \sigma z`, :math:`t = -z/\sigma`.

    Numba: the kernel forms :math:`\tilde x` and :math:`s + z/\sigma` where it reads each point (kind
    ``DENOISING``, the same IEEE operations as NumPy's ``x + sigma * z`` and ``s - (-z / sigma)``, so the
    same numbers as ``RESIDUAL`` on those arrays), without the two (n, d) temporaries (at n = 10⁴, d = 50
    they cost about 3 ms a call, mostly fresh pages); NumPy: :func:`_residual_terms` on them.
    """
    if not model.uses_numba:
        return _residual_terms(model, theta, x + sigma * z, -z / sigma, w)
    Z = np.ascontiguousarray(z, dtype=float)[:, None, :]
    per, g = _stacked_kernel(model, theta, x, Z, w[:, None], ids.DENOISING, sigma)
    return per[:, 0], g


@one_blas_thread
def _ism_terms(model, theta, x, w):
    r"""ISM per-point values and :math:`\nabla_\theta\sum_k w_k[\operatorname{tr}J_k + \tfrac12\lVert s_k\rVert^2]`.

    Same numbers as ``trace_grad_params(w) + score_vjp_params(w s)``
    (docs/derivations.md §2) from ONE forward pass and ONE combined reverse
    pass per chunk instead of four forward and two reverse passes.  The
    forward path carries the d identity tangents stacked under the primal
    (:func:`stacked_pass`); the fast path uses the closed-form trace
    (``model._fast_trace``, docs/derivations.md §4); the cyclic path the
    reordered chain (``model._chain_pass``).  With the Numba engine the
    closed-form and forward paths run as
    :func:`~refscore._kernels.mlp_losses.ism_closed_form` and
    :func:`~refscore._kernels.mlp_losses.stacked_terms`.
    """
    path = model._path()
    n, d = x.shape
    if path == "forward" and model.uses_numba:
        per, g = _stacked_kernel(model, theta, x, None, w[:, None], ids.ISM)
        return per[:, 0], g
    if path == "fast" and model.uses_numba:
        from .._kernels import load_mlp_losses

        block, n_groups = _kernel_blocks(model, n, 1)
        return load_mlp_losses().ism_closed_form(*_kernel_args(model, theta, x), np.ascontiguousarray(w, dtype=float),
                                            block, n_groups)
    layers = model._unpack(theta)
    g = np.zeros(model.n_params)
    grads = model._unpack(g)
    L = model.n_layers
    WL, bL = layers[-1]
    per = np.empty(n)
    if path == "forward":
        eye = np.eye(d)
        for sl in _stacked_slices(model, n, d):
            ws = w[sl]

            def finish(s, Jt, sl=sl, ws=ws):
                per[sl] = np.einsum("kjj->k", Jt) + 0.5 * np.einsum("kd,kd->k", s, s)
                return s * ws[:, None], ws[:, None, None] * eye

            stacked_pass(model, layers, x[sl], None, finish, grads)
        return per, g
    if path == "fast":
        fac, r, eye = None, 1, None
    else:
        fac, r = model._chain(layers, path)
        eye = np.eye(r)
    for sl in model._slices(n, r * max(model.sizes)):
        _, H, D = model._forward(layers, x[sl], 2)
        ws = w[sl]
        inject = [None] * L
        if path == "fast":
            tr = model._fast_trace(layers, D[1], ws, grads, inject, D[2])
        else:
            T = model._chain_pass(layers, D[1], fac, None, ws[:, None, None] * eye, grads, inject, D[2])
            tr = np.einsum("kjj->k", T)
        s = H[L - 1] @ WL.T
        s += bL
        per[sl] = tr + 0.5 * np.einsum("kd,kd->k", s, s)
        ct = s * ws[:, None]
        grads[L - 1][0][...] += ct.T @ H[L - 1]
        grads[L - 1][1][...] += ct.sum(axis=0)
        model._backprop(layers, H, D[1], grads, hbar=ct @ WL, inject=inject)
    return per, g


@one_blas_thread
def _ssm_terms(model, theta, x, v, W, variance_reduced):
    r"""SSM / SSM-VR values ``(m, n)`` and the gradient of :math:`\sum_{i,k} W_{ik}\,\ell_{ik}`.

    ``v`` is ``(m, n, d)``.  Per chunk: one forward pass carrying the m
    projections as tangents stacked under the primal, and one reverse pass
    carrying the score cotangent and every projection's tangent cotangent
    (:func:`stacked_pass`; docs/derivations.md §3, the combined reverse pass):

    .. math::

        \ell_{ik} = v_{ik}^\top J_k v_{ik} + \tfrac12 (v_{ik}^\top s_k)^2,\quad
        \bar{(Jv)}_{ik} = W_{ik} v_{ik},\quad
        \bar s_k = \textstyle\sum_i W_{ik}\,(v_{ik}^\top s_k)\,v_{ik}

    (SSM-VR: :math:`\tfrac12\lVert s_k\rVert^2` and :math:`\bar s_k = \sum_i W_{ik} s_k`).
    """
    if model.uses_numba:
        kind = ids.SSM_VR if variance_reduced else ids.SSM
        V = np.ascontiguousarray(np.swapaxes(v, 0, 1))  # (n, m, d)
        per, g = _stacked_kernel(model, theta, x, V, np.ascontiguousarray(W.T), kind)
        return np.ascontiguousarray(per.T), g
    layers = model._unpack(theta)
    g = np.zeros(model.n_params)
    grads = model._unpack(g)
    m, n, d = v.shape
    per = np.empty((m, n))
    for sl in _stacked_slices(model, n, m):
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

        stacked_pass(model, layers, x[sl], vc, finish, grads)
    return per, g
