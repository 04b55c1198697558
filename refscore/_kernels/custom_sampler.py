r"""Langevin kernels for a user's own compiled score: ``numba.njit`` functions as arguments.

:class:`refscore.sampling.NumbaTarget` wraps a user's per-point functions
``score(x) -> (d,)`` (and ``logpdf(x) -> float`` for MALA), compiled with
``numba.njit``.  The kernels here (ULA, MALA, kinetic Langevin) take them as
first-class arguments (Numba compiles one specialisation per function) and run
the chains one after another in GIL-free serial loops, a contiguous share of
the chains per thread (:func:`.group_threads.run_ranges`, not ``prange``:
numba's parallel lowering compiles a loop body a second time, and each user
function costs a compile), with the SAME noise, update and freezing
rule as :mod:`.cpu_sampler` (``step_block`` and the kinetic sub-flows of
:mod:`.score_blocks` on a block of one chain, ``status`` codes as there), so a user's target runs the same chains as
the NumPy reference fed the same functions (docs/derivations.md §8).  Not
cached: each user function is new.

A user's function is not trusted.  Every call is checked: a score that
returns an array of another length than ``d``, or a function that raises,
stops that chain and is recorded in ``fault[c] = (kind, step, length)``
(kinds :data:`.score_blocks.FAULT_SCORE_RAISED`, ``FAULT_SCORE_LENGTH``,
``FAULT_LOGPDF_RAISED``); ``x[c]`` is then left at the point of the failing
call.  The host raises after the kernel returns
(:func:`refscore.sampling.custom.raise_kernel_fault`), so no value is read
past the end of a short score and no exception is lost in a parallel region.
A call with zero steps returns at once (no user function is called).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import score_blocks
from .cpu_sampler import _K
from .group_threads import run_ranges

__all__ = ["langevin", "mala", "kinetic"]

_step_block = _K.step_block
_mala_log_alpha = _K.mala_log_alpha
_uniform = _K.uniform
_log_unit = _K.log_unit
_kick_block = _K.kick_block
_drift_block = _K.drift_block
_refresh_block = _K.refresh_block
_safe_points = _K.safe_points
_phase_check = _K.phase_check
_KICK = score_blocks.KICK
_DRIFT = score_blocks.DRIFT
_U1 = np.uint64(1)
_NONFINITE = score_blocks.NONFINITE
_BEYOND = score_blocks.BEYOND_BOUND
_SCORE_RAISED = score_blocks.FAULT_SCORE_RAISED
_SCORE_LENGTH = score_blocks.FAULT_SCORE_LENGTH
_LOGPDF_RAISED = score_blocks.FAULT_LOGPDF_RAISED
#: what _score_into returns besides a wrong length (>= 0)
_OK = -1
_RAISED = -2


def _run_chains(chains, args, n_steps, n):
    """``chains(*args, lo, hi)`` over every chain, one contiguous share per thread
    (:func:`.group_threads.run_ranges`); with zero steps one call over no chain, which compiles the
    kernel (the samplers' zero-step warm-up call) and calls no user function."""
    if n_steps == 0:
        chains(*args, 0, 0)
        return
    run_ranges(lambda lo, hi: chains(*args, lo, hi), n)


# The try blocks live in these helpers, kept out of the chain loops.
@numba.njit(error_model="numpy")
def _score_into(score, P, out, d):
    """``out[:, 0] = score(P[:, 0])``; returns ``_OK``, ``_RAISED``, or the length the score returned."""
    try:
        s = score(P.reshape(d))
    except Exception:  # noqa: BLE001 - any error of the user's function is reported by the host
        return _RAISED
    k = s.shape[0]
    if k != d:
        return k
    for i in range(d):
        out[i, 0] = s[i]
    return _OK


@numba.njit(error_model="numpy")
def _logpdf_at(logpdf, P, d):
    """``(logpdf(P[:, 0]), True)``, or ``(nan, False)`` when it raised."""
    try:
        return float(logpdf(P.reshape(d))), True
    except Exception:  # noqa: BLE001 - reported by the host
        return math.nan, False


@numba.njit(error_model="numpy")
def _record_fault(fault, c, kind, step, length):
    fault[c, 0] = kind
    fault[c, 1] = step
    fault[c, 2] = length


def langevin(score, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, fault):
    """ULA on every chain of ``x`` (n, d) in place; arguments as :func:`.cpu_sampler.langevin`,
    plus ``fault`` (n, 3) int64, written only for a chain whose score call failed."""
    args = (score, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, fault)
    _run_chains(_langevin_chains, args, n_steps, x.shape[0])


@numba.njit(nogil=True, error_model="numpy")
def _langevin_chains(score, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, fault, c_lo, c_hi):
    """:func:`langevin` on chains ``c_lo .. c_hi - 1`` (one thread's share)."""
    d = x.shape[1]
    sq = math.sqrt(2.0 * eta)
    for c in range(c_lo, c_hi):
        X = np.empty((d, 1))
        S = np.empty((d, 1))
        ACC = np.empty(1)
        for i in range(d):
            X[i, 0] = x[c, i]
        fate = status[c]
        stopped = fate != 0
        for g in range(step0, step0 + n_steps):
            if not stopped:
                r = _score_into(score, X, S, d)
                if r != _OK:
                    _record_fault(fault, c, _SCORE_RAISED if r == _RAISED else _SCORE_LENGTH, g, r)
                    stopped = True
                else:
                    _step_block(X, S, ACC, 1, d, eta, 1.0, sq, k0, k1, chain0 + c, g)
                    if ACC[0] == 0.0:
                        for i in range(d):
                            X[i, 0] = S[i, 0]
                    else:  # NaN: non-finite; > 0: beyond the bound
                        fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
                        stopped = True
            if rec > 0 and (g + 1) % rec == 0:
                for i in range(d):
                    trace[(g + 1) // rec - 1, c, i] = X[i, 0]
        status[c] = fate
        for i in range(d):
            x[c, i] = X[i, 0]


def mala(score, logpdf, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted, fault):
    """MALA on every chain of ``x`` in place; arguments as :func:`.cpu_sampler.mala`, plus ``fault``
    as in :func:`langevin` (``x[c]`` is left at the proposal when the failing call was there)."""
    args = (score, logpdf, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted, fault)
    _run_chains(_mala_chains, args, n_steps, x.shape[0])


@numba.njit(nogil=True, error_model="numpy")
def _mala_chains(score, logpdf, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted, fault,
                 c_lo, c_hi):
    """:func:`mala` on chains ``c_lo .. c_hi - 1`` (one thread's share)."""
    d = x.shape[1]
    sq = math.sqrt(2.0 * eta)
    for c in range(c_lo, c_hi):
        X = np.empty((d, 1))
        S = np.empty((d, 1))
        Y = np.empty((d, 1))
        SY = np.empty((d, 1))
        ACC = np.empty(1)
        for i in range(d):
            X[i, 0] = x[c, i]
        fate = status[c]
        stopped = fate != 0
        at_proposal = False
        lpx = 0.0
        if not stopped:
            r = _score_into(score, X, S, d)
            if r != _OK:
                _record_fault(fault, c, _SCORE_RAISED if r == _RAISED else _SCORE_LENGTH, step0, r)
                stopped = True
            else:
                lpx, good = _logpdf_at(logpdf, X, d)
                if not good:
                    _record_fault(fault, c, _LOGPDF_RAISED, step0, d)
                    stopped = True
        for t in range(step0, step0 + n_steps):
            if not stopped:
                for i in range(d):
                    Y[i, 0] = S[i, 0]
                _step_block(X, Y, ACC, 1, d, eta, 1.0, sq, k0, k1, chain0 + c, t)
                fin = ACC[0] == 0.0
                lpy = -math.inf
                if fin:
                    r = _score_into(score, Y, SY, d)
                    if r != _OK:
                        _record_fault(fault, c, _SCORE_RAISED if r == _RAISED else _SCORE_LENGTH, t, r)
                        stopped = True
                        at_proposal = True
                    else:
                        for i in range(d):
                            fin = fin and math.isfinite(SY[i, 0])
                        lpy, good = _logpdf_at(logpdf, Y, d)
                        if not good:
                            _record_fault(fault, c, _LOGPDF_RAISED, t, d)
                            stopped = True
                            at_proposal = True
                if not stopped:
                    loga = _mala_log_alpha(X, Y, S, SY, 0, d, eta, lpx, lpy)
                    fin = fin and math.isfinite(loga)
                    if not fin:  # ACC > 0: the proposal left the bound; else something non-finite
                        fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
                        stopped = True
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
        status[c] = fate
        for i in range(d):
            x[c, i] = Y[i, 0] if at_proposal else X[i, 0]


def kinetic(score, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace, p_trace,
            status, fault):
    """Kinetic Langevin on every chain of ``x`` (positions) and ``v`` (momenta) in place; arguments as
    :func:`.cpu_sampler.kinetic` (the word, the score evaluated lazily at safe points, the freezing),
    plus ``fault`` as in :func:`langevin` (``x[c]`` is left at the point of the failing score call)."""
    args = (score, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace, p_trace,
            status, fault)
    _run_chains(_kinetic_chains, args, n_steps, x.shape[0])


@numba.njit(nogil=True, error_model="numpy")
def _kinetic_chains(score, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace,
                    p_trace, status, fault, c_lo, c_hi):
    """:func:`kinetic` on chains ``c_lo .. c_hi - 1`` (one thread's share)."""
    d = x.shape[1]
    n_letters = word.shape[0]
    for c in range(c_lo, c_hi):
        X = np.empty((d, 1))
        V = np.empty((d, 1))
        Q = np.empty((d, 1))
        PM = np.empty((d, 1))
        QS = np.empty((d, 1))
        S = np.empty((d, 1))
        ACC = np.empty(1)
        for i in range(d):
            X[i, 0] = x[c, i]
            V[i, 0] = v[c, i]
        fate = status[c]
        stopped = fate != 0
        faulted = False
        have_score = False
        for g in range(step0, step0 + n_steps):
            if not stopped:
                for i in range(d):
                    Q[i, 0] = X[i, 0]
                    PM[i, 0] = V[i, 0]
                o = 0
                for li in range(n_letters):
                    letter = word[li]
                    if letter == _KICK:
                        if not have_score:
                            _safe_points(Q, X, QS, ACC, 1, d)
                            r = _score_into(score, QS, S, d)
                            if r != _OK:
                                _record_fault(fault, c, _SCORE_RAISED if r == _RAISED else _SCORE_LENGTH, g, r)
                                stopped = True
                                faulted = True
                                break
                            have_score = True
                        _kick_block(PM, S, 1, d, kick)
                    elif letter == _DRIFT:
                        _drift_block(Q, PM, 1, d, drift)
                        have_score = False
                    else:
                        _refresh_block(PM, 1, d, decay, spread, k0, k1, chain0 + c, g, o * d)
                        o += 1
                if not stopped:
                    _phase_check(Q, PM, ACC, 1, d)
                    if ACC[0] == 0.0:
                        for i in range(d):
                            X[i, 0] = Q[i, 0]
                            V[i, 0] = PM[i, 0]
                    else:  # NaN: non-finite; > 0: beyond the bound
                        fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
                        stopped = True
            if rec > 0 and (g + 1) % rec == 0:
                for i in range(d):
                    trace[(g + 1) // rec - 1, c, i] = X[i, 0]
                    p_trace[(g + 1) // rec - 1, c, i] = V[i, 0]
        status[c] = fate
        for i in range(d):
            x[c, i] = QS[i, 0] if faulted else X[i, 0]
            v[c, i] = V[i, 0]
