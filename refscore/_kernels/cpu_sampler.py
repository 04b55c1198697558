r"""Numba CPU backend: ``@njit(parallel=True)``, ``prange`` over blocks of chains.

Derivation: docs/derivations.md §8.

A block of ``B`` chains is held transposed in local arrays (``X[i, c]``) for
the whole run; the step loop is outside, the chain loop innermost, so the
score blocks (:mod:`.score_blocks`) and the Philox/Box–Muller noise
(:mod:`.philox`) vectorise over chains.  Each chain's arithmetic does
not depend on which block or thread runs it, so results are identical for any
number of threads.  The update is eq. (4), line by line as in
:mod:`.reference`::

    x_new = x + eta * (scale * s) + sqrt(2 eta) * z

A chain whose new state holds a non-finite value, or a coordinate beyond
:data:`.score_blocks.GROWTH_BOUND`, keeps its last state and is not updated
again; ``status[c]`` (int8) records why (:data:`.score_blocks.NONFINITE`,
:data:`.score_blocks.BEYOND_BOUND`; nonzero on entry: frozen already).  A call
with zero steps returns at once: no state, status or trace is touched and no
noise is drawn (the driver's compile-ahead call).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from . import score_blocks, vecmath
from .cache import use_cache

__all__ = ["langevin", "mala", "evaluate_points", "BLOCK"]

BLOCK = 128
# error_model="numpy": float division never raises, so no call is an exception
# boundary and LLVM may inline and vectorise across it
_K = score_blocks.make(numba.njit(error_model="numpy"), vecmath.activation,
                       jit_inline=lambda f: numba.njit(inline="always", error_model="numpy")(f),
                       exp_nonpositive=vecmath.exp_nonpositive)
_uniform = _K.uniform
_log_unit = _K.log_unit
_evaluate = _K.evaluate
_step_block = _K.step_block
_mala_log_alpha = _K.mala_log_alpha
_U1 = np.uint64(1)
_NONFINITE = score_blocks.NONFINITE
_BEYOND = score_blocks.BEYOND_BOUND


@numba.njit(parallel=True, cache=use_cache(), error_model="numpy")
def langevin(lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec, trace, status):
    """ULA / annealed Langevin on all chains of ``x`` (n, d), in place.

    Level ``l`` uses ``params[l]``, ``scale[l]``, step ``etas[l]`` for
    ``steps_per_level`` steps.  Row ``i`` of ``x`` is chain ``chain0 + i``
    and the first step taken is global step ``step0`` (the noise counters), so
    a run cut into blocks of chains or chunks of steps draws the same noise.
    ``status`` (n,) int8: 0 running, else frozen (see the module doc).
    """
    if steps_per_level == 0:
        return
    n, d = x.shape
    wrows = lay[2]
    nblocks = (n + BLOCK - 1) // BLOCK
    L = etas.shape[0]
    for b in prange(nblocks):
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        X = np.empty((d, BLOCK))
        S = np.empty((d, BLOCK))
        W = np.empty((wrows, BLOCK))
        LP = np.empty(BLOCK)
        ACC = np.empty(BLOCK)
        alive = np.empty(BLOCK)
        fate = np.empty(BLOCK, dtype=np.int8)
        for c in range(m):
            fate[c] = status[lo + c]
            alive[c] = 1.0 if fate[c] == 0 else 0.0
            for i in range(d):
                X[i, c] = x[lo + c, i]
        g = step0
        for lev in range(L):
            eta = etas[lev]
            sq = math.sqrt(2.0 * eta)
            sc = scale[lev]
            p = params[lev]
            for t in range(steps_per_level):
                _evaluate(lay, p, X, S, LP, W, m, False)
                _step_block(X, S, ACC, m, d, eta, sc, sq, k0, k1, chain0 + lo, g)
                for c in range(m):
                    ok = alive[c] * (ACC[c] == 0.0)
                    if ok != alive[c]:  # frozen at this step: NaN means non-finite, > 0 beyond the bound
                        fate[c] = _BEYOND if ACC[c] > 0.0 else _NONFINITE
                    alive[c] = ok
                    ACC[c] = ok
                for i in range(d):
                    for c in range(m):
                        X[i, c] = S[i, c] if ACC[c] != 0.0 else X[i, c]
                g += 1
                if rec > 0 and g % rec == 0:
                    r = g // rec - 1
                    for c in range(m):
                        for i in range(d):
                            trace[r, lo + c, i] = X[i, c]
        for c in range(m):
            status[lo + c] = fate[c]
            for i in range(d):
                x[lo + c, i] = X[i, c]


@numba.njit(parallel=True, cache=use_cache(), error_model="numpy")
def mala(lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted):
    r"""MALA on all chains of ``x``, in place; ``accepted[c]`` counts accepted moves.

    Chains and steps are numbered from ``chain0`` and ``step0`` as in :func:`langevin`.

    Proposal :math:`y = x + \eta s(x) + \sqrt{2\eta} z`, accepted when
    :math:`\log u < \log p(y) - \log p(x) - (\|x - y - \eta s(y)\|^2 -
    \|y - x - \eta s(x)\|^2) / (4\eta)`.  A proposal that is non-finite or
    beyond the bound, or a non-finite score or log-ratio there, freezes the chain.
    """
    if n_steps == 0:
        return
    n, d = x.shape
    wrows = lay[2]
    nblocks = (n + BLOCK - 1) // BLOCK
    sq = math.sqrt(2.0 * eta)
    p = params[0]
    for b in prange(nblocks):
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        X = np.empty((d, BLOCK))
        S = np.empty((d, BLOCK))
        Y = np.empty((d, BLOCK))
        SY = np.empty((d, BLOCK))
        W = np.empty((wrows, BLOCK))
        LPX = np.empty(BLOCK)
        LPY = np.empty(BLOCK)
        ACC = np.empty(BLOCK)
        alive = np.empty(BLOCK)
        fate = np.empty(BLOCK, dtype=np.int8)
        for c in range(m):
            fate[c] = status[lo + c]
            alive[c] = 1.0 if fate[c] == 0 else 0.0
            for i in range(d):
                X[i, c] = x[lo + c, i]
        _evaluate(lay, p, X, S, LPX, W, m, True)
        for t in range(step0, step0 + n_steps):
            for i in range(d):
                for c in range(m):
                    Y[i, c] = S[i, c]
            _step_block(X, Y, ACC, m, d, eta, 1.0, sq, k0, k1, chain0 + lo, t)
            _evaluate(lay, p, Y, SY, LPY, W, m, True)
            gg = np.uint64(t)
            for c in range(m):
                loga = _mala_log_alpha(X, Y, S, SY, c, d, eta, LPX[c], LPY[c])
                fin = ACC[c] == 0.0 and math.isfinite(loga)
                for i in range(d):
                    fin = fin and math.isfinite(SY[i, c])
                if alive[c] == 0.0:
                    continue
                if not fin:
                    alive[c] = 0.0
                    fate[c] = _BEYOND if ACC[c] > 0.0 else _NONFINITE
                    continue
                u = _uniform(k0, k1, np.uint64(chain0 + lo + c), gg, _U1)
                if _log_unit(u) < loga:
                    accepted[lo + c] += 1
                    LPX[c] = LPY[c]
                    for i in range(d):
                        X[i, c] = Y[i, c]
                        S[i, c] = SY[i, c]
            if rec > 0 and (t + 1) % rec == 0:
                r = (t + 1) // rec - 1
                for c in range(m):
                    for i in range(d):
                        trace[r, lo + c, i] = X[i, c]
        for c in range(m):
            status[lo + c] = fate[c]
            for i in range(d):
                x[lo + c, i] = X[i, c]


@numba.njit(cache=use_cache(), error_model="numpy")  # serial: a test helper, cheap to compile
def evaluate_points(lay, p, x, want_logp):
    """Compiled score (and log-density) of target ``(lay, p)`` at points ``x`` (n, d):
    the kernel the samplers use, exposed for testing against ``target.score``."""
    n, d = x.shape
    wrows = lay[2]
    out = np.empty((n, d))
    lp = np.zeros(n)
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        X = np.empty((d, BLOCK))
        S = np.empty((d, BLOCK))
        W = np.empty((wrows, BLOCK))
        LP = np.empty(BLOCK)
        for c in range(m):
            for i in range(d):
                X[i, c] = x[lo + c, i]
        _evaluate(lay, p, X, S, LP, W, m, want_logp)
        for c in range(m):
            lp[lo + c] = LP[c]
            for i in range(d):
                out[lo + c, i] = S[i, c]
    return out, lp
