r"""Langevin kernels for a user's own compiled score: ``numba.njit`` functions as arguments.

:class:`refscore.sampling.NumbaTarget` wraps a user's per-point functions
``score(x) -> (d,)`` (and ``logpdf(x) -> float`` for MALA), compiled with
``numba.njit``.  The kernels here take them as first-class arguments (Numba
compiles one specialisation per function) and run one chain per ``prange``
iteration with the SAME noise and update as :mod:`.cpu_sampler`
(``step_block`` of :mod:`.score_blocks` on a block of one chain), so a
user's target runs the same chains as the NumPy reference fed the same
functions (docs/derivations.md §8).  Not cached: each user function is new.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from .cpu_sampler import _K

__all__ = ["langevin", "mala"]

_step_block = _K.step_block
_mala_log_alpha = _K.mala_log_alpha
_uniform = _K.uniform
_log_unit = _K.log_unit
_U1 = np.uint64(1)


@numba.njit(parallel=True, error_model="numpy")
def langevin(score, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, diverged):
    """ULA on every chain of ``x`` (n, d) in place; arguments as :func:`.cpu_sampler.langevin`."""
    n, d = x.shape
    sq = math.sqrt(2.0 * eta)
    for c in prange(n):
        X = np.empty((d, 1))
        S = np.empty((d, 1))
        ACC = np.empty(1)
        for i in range(d):
            X[i, 0] = x[c, i]
        alive = not diverged[c]
        for g in range(step0, step0 + n_steps):
            if alive:
                s = score(X.reshape(d))
                for i in range(d):
                    S[i, 0] = s[i]
                _step_block(X, S, ACC, 1, d, eta, 1.0, sq, k0, k1, chain0 + c, g)
                if ACC[0] == 0.0:
                    for i in range(d):
                        X[i, 0] = S[i, 0]
                else:
                    alive = False
            if rec > 0 and (g + 1) % rec == 0:
                for i in range(d):
                    trace[(g + 1) // rec - 1, c, i] = X[i, 0]
        diverged[c] = not alive
        for i in range(d):
            x[c, i] = X[i, 0]


@numba.njit(parallel=True, error_model="numpy")
def mala(score, logpdf, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, diverged, accepted):
    """MALA on every chain of ``x`` in place; arguments as :func:`.cpu_sampler.mala`."""
    n, d = x.shape
    sq = math.sqrt(2.0 * eta)
    for c in prange(n):
        X = np.empty((d, 1))
        S = np.empty((d, 1))
        Y = np.empty((d, 1))
        SY = np.empty((d, 1))
        ACC = np.empty(1)
        for i in range(d):
            X[i, 0] = x[c, i]
        s = score(X.reshape(d))
        for i in range(d):
            S[i, 0] = s[i]
        lpx = logpdf(X.reshape(d))
        alive = not diverged[c]
        for t in range(step0, step0 + n_steps):
            if alive:
                for i in range(d):
                    Y[i, 0] = S[i, 0]
                _step_block(X, Y, ACC, 1, d, eta, 1.0, sq, k0, k1, chain0 + c, t)
                fin = ACC[0] == 0.0
                lpy = -math.inf
                if fin:
                    sy = score(Y.reshape(d))
                    for i in range(d):
                        SY[i, 0] = sy[i]
                        fin = fin and math.isfinite(sy[i])
                    lpy = logpdf(Y.reshape(d))
                loga = _mala_log_alpha(X, Y, S, SY, 0, d, eta, lpx, lpy)
                fin = fin and math.isfinite(loga)
                if not fin:
                    alive = False
                else:
                    u = _uniform(k0, k1, np.uint64(chain0 + c), np.uint64(t), _U1)
                    if _log_unit(u) < loga:
                        accepted[c] += 1
                        lpx = lpy
                        for i in range(d):
                            X[i, 0] = Y[i, 0]
                            S[i, 0] = SY[i, 0]
            if rec > 0 and (t + 1) % rec == 0:
                for i in range(d):
                    trace[(t + 1) // rec - 1, c, i] = X[i, 0]
        diverged[c] = not alive
        for i in range(d):
            x[c, i] = X[i, 0]
