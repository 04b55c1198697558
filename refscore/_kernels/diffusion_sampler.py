r"""Numba CPU kernel of the diffusion samplers: one compiled kernel for every sampler and schedule.

Derivation: docs/diffusion.md §5.1–5.2 (the exact denoiser of a Gaussian mixture) and §6.1–6.2 (each
sampler's step as a linear combination of the state, the denoiser's outputs and noise).

The sampler is run-time data: a *program* of operations per step on five registers per chain
(:mod:`.diffusion_ops`: ``EVAL`` the denoiser, ``COMBINE`` registers and a noise block with given
coefficients), built on the host by :mod:`refscore.diffusion.backends` from the schedule's per-step
coefficients.  So Euler, Heun (with EDM's churn), DDIM, DDPM, Euler ancestral, DPM-Solver++(2M) and the
predictor–corrector sampler on any schedule all run this one kernel, compiled once.

The denoiser is the exact :math:`\hat x_0 = E[x_0 \mid x_t]` of data :math:`\sum_j w_j N(\mu_j,
V_j\operatorname{diag}(\ell_j)V_j^\top)` (docs/diffusion.md §5.2), as
:class:`refscore.diffusion.denoiser.Denoiser` computes it: per component :math:`y = V_j^\top(x -
\alpha\mu_j)`, :math:`\delta = \alpha^2\ell_j + \sigma^2`, logit :math:`\log c_j - \tfrac12\sum_i
y_i^2/\delta_i`, mean :math:`m_j = \mu_j + V_j(\alpha\ell_j y/\delta)`, and :math:`\hat x_0 = \sum_j r_j m_j`
with the softmax responsibilities :math:`r_j`.  Per evaluation slot the host passes :math:`\alpha`,
:math:`\log c_j = \log w_j - \tfrac d2\log 2\pi - \tfrac12\sum_i\log\delta_{ji}` and :math:`\delta_{ji}`.
Where every logit overflows (:math:`\lVert y/\sqrt\delta\rVert \gtrsim 10^{154}`) the logits are redone on
rescaled displacements, as :func:`refscore.distributions.mixture_log_sum_exp` does, so the far field keeps the
nearest component's :math:`m_j`.

Layout as in :mod:`.cpu_sampler`: blocks of :data:`BLOCK` chains held transposed (``R[r, i, c]``), the
chain loop innermost; each thread runs one contiguous share of the blocks in one GIL-free call
(:func:`.group_threads.run_ranges`); a chain's arithmetic does not depend on its block, share or thread, and
its noise is ``normal(seed, chain0 + row, step, .)`` by counters (:mod:`.philox`), so the result is the same
bits for any thread count, chunking of the steps or cut of the chains.

A chain whose state (``X`` or ``P``) becomes non-finite at a step keeps its last state and is frozen:
``status[c]`` becomes :data:`.score_blocks.NONFINITE` and ``fail_step[c]`` the step (the host raises).
A call with zero steps compiles (or loads) the kernel and returns: nothing is touched, no noise is drawn.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import diffusion_ops as ops_
from . import philox
from .cache import use_cache
from .group_threads import run_ranges
from .score_blocks import NONFINITE

__all__ = ["run", "denoise_points", "BLOCK"]

BLOCK = 128
_U0 = np.uint64(0)
_EVAL = ops_.EVAL
_RX = ops_.X
_RD = ops_.D
_RP = ops_.P
_NREG = ops_.N_REGISTERS
_NONFINITE = NONFINITE

_inline = numba.njit(inline="always", error_model="numpy")
_normal_pair = philox.make(_inline).normal_pair


@_inline
def _fill_noise(Z, Z1, m, d, k0, k1, lo, step, first):
    """``Z[i, c]`` = coordinate ``first + i`` of ``normal(seed, lo + c, step, .)`` for ``i < d``.

    Coordinate ``j`` is the ``j % 2``-th normal of Philox pair ``j // 2`` (:func:`refscore.noise.normal`), so a
    block starting at an odd coordinate (``first = d`` with ``d`` odd) starts inside a pair.  One Philox call
    per pair, written once (``Z1`` keeps a pair's second normal for the next coordinate).
    """
    gg = np.uint64(step)
    for i in range(d):
        j = first + i
        if j % 2 == 1 and i > 0:  # the second normal of the pair drawn for coordinate j - 1
            for c in range(m):
                Z[i, c] = Z1[c]
            continue
        jj = np.uint64(j // 2)
        odd = j % 2 == 1
        for c in range(m):
            z0, z1 = _normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
            Z[i, c] = z1 if odd else z0
            Z1[c] = z1


@numba.njit(cache=use_cache(), nogil=True, error_model="numpy")
def _denoise(S, OUT, e, means, vecs, lam, ev_alpha, ev_logc, ev_den, Yc, L, ACC, m):
    r"""``OUT = x0(S)`` on the first ``m`` chains of a block at evaluation slot ``e`` (module doc).

    ``Yc`` (k, d, BLOCK), ``L`` (k, BLOCK) and ``ACC`` (BLOCK,) are scratch: the eigen-coordinates, the logits
    (then the responsibilities) and a sum along the chains.
    """
    k, d = means.shape
    a = ev_alpha[e]
    for j in range(k):
        for i in range(d):
            for c in range(m):
                Yc[j, i, c] = 0.0
        for l in range(d):
            am = a * means[j, l]
            for i in range(d):
                v = vecs[j, l, i]
                for c in range(m):
                    Yc[j, i, c] += (S[l, c] - am) * v
        lc = ev_logc[e, j]
        for c in range(m):
            L[j, c] = 0.0
        for i in range(d):
            den = ev_den[e, j, i]
            for c in range(m):
                y = Yc[j, i, c]
                L[j, c] += y * y / den
        for c in range(m):
            L[j, c] = lc - 0.5 * L[j, c]
    for c in range(m):
        top = -math.inf
        for j in range(k):
            top = max(top, L[j, c])
        if not math.isfinite(top):
            # far field (every logit overflowed): redo on rescaled displacements z / cmax
            cmax = 0.0
            for j in range(k):
                for i in range(d):
                    cmax = max(cmax, abs(Yc[j, i, c] / math.sqrt(ev_den[e, j, i])))
            qmin = math.inf
            for j in range(k):
                q = 0.0
                for i in range(d):
                    zs = Yc[j, i, c] / math.sqrt(ev_den[e, j, i]) / cmax
                    q += zs * zs
                L[j, c] = q
                if math.isfinite(ev_logc[e, j]):
                    qmin = min(qmin, q)
            top = -math.inf
            for j in range(k):
                lc = ev_logc[e, j]
                L[j, c] = lc - 0.5 * (cmax * (cmax * (L[j, c] - qmin))) if math.isfinite(lc) else -math.inf
                top = max(top, L[j, c])
        tot = 0.0
        for j in range(k):
            L[j, c] = math.exp(L[j, c] - top)
            tot += L[j, c]
        for j in range(k):
            L[j, c] = L[j, c] / tot
    for i in range(d):
        for c in range(m):
            OUT[i, c] = 0.0
    for j in range(k):
        # m_j = mu_j + V_j (alpha l_j y / delta): the gains overwrite the eigen-coordinates
        for i in range(d):
            g = a * lam[j, i]
            den = ev_den[e, j, i]
            for c in range(m):
                Yc[j, i, c] = g * Yc[j, i, c] / den
        for l in range(d):
            for c in range(m):
                ACC[c] = 0.0
            for i in range(d):
                v = vecs[j, l, i]
                for c in range(m):
                    ACC[c] += Yc[j, i, c] * v
            mu = means[j, l]
            for c in range(m):
                r = L[j, c]
                OUT[l, c] += r * (mu + ACC[c]) if r != 0.0 else 0.0  # a component of weight 0 adds nothing


@numba.njit(cache=use_cache(), nogil=True, error_model="numpy")
def _blocks(b_lo, b_hi, means, vecs, lam, ev_alpha, ev_logc, ev_den, op_ptr, ops, coef, n_steps, x, prev, k0, k1,
            chain0, step0, rec, trace, status, fail_step):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`run` (chains ``b BLOCK ..``): serial, GIL-free."""
    if n_steps == 0:
        return
    n, d = x.shape
    k = means.shape[0]
    for b in range(b_lo, b_hi):
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        R = np.zeros((_NREG, d, BLOCK))
        T = np.empty((d, BLOCK))
        Z = np.empty((d, BLOCK))
        XS = np.empty((d, BLOCK))
        PS = np.empty((d, BLOCK))
        Yc = np.empty((k, d, BLOCK))
        L = np.empty((k, BLOCK))
        BAD = np.empty(BLOCK)
        ROW = np.empty(BLOCK)  # scratch along the chains (the denoiser's sums, a noise pair's second normal)
        alive = np.empty(BLOCK, dtype=np.bool_)
        for c in range(m):
            alive[c] = status[lo + c] == 0
            for i in range(d):
                XS[i, c] = x[lo + c, i]
                PS[i, c] = prev[lo + c, i]
        for s in range(step0, step0 + n_steps):
            for i in range(d):
                for c in range(m):
                    R[_RX, i, c] = XS[i, c]
                    R[_RP, i, c] = PS[i, c]
            for o in range(op_ptr[s], op_ptr[s + 1]):
                reg = ops[o, 1]
                arg = ops[o, 2]
                if ops[o, 0] == _EVAL:
                    _denoise(R[reg], R[_RD], arg, means, vecs, lam, ev_alpha, ev_logc, ev_den, Yc, L, ROW, m)
                    continue
                for i in range(d):
                    for c in range(m):
                        T[i, c] = 0.0
                for r in range(_NREG):
                    w = coef[o, r]
                    if w != 0.0:
                        for i in range(d):
                            for c in range(m):
                                T[i, c] += w * R[r, i, c]
                wz = coef[o, _NREG]
                if arg >= 0 and wz != 0.0:
                    _fill_noise(Z, ROW, m, d, k0, k1, chain0 + lo, s, arg * d)
                    for i in range(d):
                        for c in range(m):
                            T[i, c] += wz * Z[i, c]
                for i in range(d):
                    for c in range(m):
                        R[reg, i, c] = T[i, c]
            # commit the step where X and P are finite; freeze a chain the first time they are not
            for c in range(m):
                BAD[c] = 0.0
            for i in range(d):
                for c in range(m):
                    BAD[c] += R[_RX, i, c] * 0.0 + R[_RP, i, c] * 0.0  # NaN iff one is not finite
            for c in range(m):
                if alive[c]:
                    if BAD[c] == 0.0:
                        for i in range(d):
                            XS[i, c] = R[_RX, i, c]
                            PS[i, c] = R[_RP, i, c]
                    else:
                        alive[c] = False
                        status[lo + c] = _NONFINITE
                        fail_step[lo + c] = s
            if rec > 0 and (s + 1) % rec == 0:
                row = (s + 1) // rec - 1
                for c in range(m):
                    for i in range(d):
                        trace[row, lo + c, i] = XS[i, c]
        for c in range(m):
            for i in range(d):
                x[lo + c, i] = XS[i, c]
                prev[lo + c, i] = PS[i, c]


def run(means, vecs, lam, ev_alpha, ev_logc, ev_den, op_ptr, ops, coef, n_steps, x, prev, k0, k1, chain0, step0, rec,
        trace, status, fail_step):
    """Steps ``step0 .. step0 + n_steps - 1`` of a program on all chains of ``x`` (n, d), in place.

    Data: ``means`` (k, d), ``vecs`` (k, d, d) (columns the eigenvectors), ``lam`` (k, d); evaluation slots:
    ``ev_alpha`` (E,), ``ev_logc`` (E, k), ``ev_den`` (E, k, d); program: ``op_ptr`` (n_total + 1,) (step ``s``
    runs ops ``op_ptr[s] .. op_ptr[s + 1] - 1``), ``ops`` (n_ops, 3) int64, ``coef`` (n_ops, N_COEF)
    (:mod:`.diffusion_ops`).  State: ``x`` and ``prev`` (registers ``X`` and ``P``, (n, d)); row ``i`` is chain
    ``chain0 + i`` of the noise, keyed by ``(k0, k1)``.  ``trace[j]`` receives the states after global step
    ``(j + 1) rec`` (``rec = 0``: none); ``status`` (n,) int8 (nonzero: frozen, not updated) and ``fail_step``
    (n,) int64 as in the module doc.
    """
    args = (means, vecs, lam, ev_alpha, ev_logc, ev_den, op_ptr, ops, coef, n_steps, x, prev, k0, k1, chain0, step0,
            rec, trace, status, fail_step)
    nblocks = (x.shape[0] + BLOCK - 1) // BLOCK
    if n_steps == 0 or nblocks == 0:  # compile (or load) only
        _blocks(0, 0, *args)
        return
    run_ranges(lambda lo, hi: _blocks(lo, hi, *args), nblocks)


@numba.njit(cache=use_cache(), error_model="numpy")  # serial: a test helper
def denoise_points(means, vecs, lam, ev_alpha, ev_logc, ev_den, e, x):
    """The kernel's ``x0`` at points ``x`` (n, d) and evaluation slot ``e``: exposed for testing against
    :meth:`refscore.diffusion.denoiser.Denoiser.x0`."""
    n, d = x.shape
    k = means.shape[0]
    out = np.empty((n, d))
    S = np.empty((d, BLOCK))
    OUT = np.empty((d, BLOCK))
    Yc = np.empty((k, d, BLOCK))
    L = np.empty((k, BLOCK))
    ACC = np.empty(BLOCK)
    for lo in range(0, n, BLOCK):
        m = min(BLOCK, n - lo)
        for c in range(m):
            for i in range(d):
                S[i, c] = x[lo + c, i]
        _denoise(S, OUT, e, means, vecs, lam, ev_alpha, ev_logc, ev_den, Yc, L, ACC, m)
        for c in range(m):
            for i in range(d):
                out[lo + c, i] = OUT[i, c]
    return out
