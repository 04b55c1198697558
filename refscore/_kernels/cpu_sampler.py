r"""Numba CPU backend: blocks of chains, each thread's share in one call of a GIL-free kernel.

Derivation: docs/derivations.md §8 (kinetic Langevin: §8.6).

A block of ``B`` chains is held transposed in local arrays (``X[i, c]``) for
the whole run; the step loop is outside, the chain loop innermost, so the
score blocks (:mod:`.score_blocks`) and the Philox/Box–Muller noise
(:mod:`.philox`) vectorise over chains.  Each chain's arithmetic does
not depend on which block or thread runs it, so results are identical for any
number of threads.  The threads are Python threads, each running one
contiguous share of the blocks (:func:`.group_threads.run_ranges`), not a
``prange`` loop: numba's parallel lowering compiled each kernel again around
its body, which doubled the first call's wait.  The update is eq. (4), line by line as in
:mod:`.reference`::

    x_new = x + eta * (scale * s) + sqrt(2 eta) * z

A chain whose new state holds a non-finite value, or a coordinate beyond
:data:`.score_blocks.GROWTH_BOUND`, keeps its last state and is not updated
again; ``status[c]`` (int8) records why (:data:`.score_blocks.NONFINITE`,
:data:`.score_blocks.BEYOND_BOUND`; nonzero on entry: frozen already).  A call
with zero steps compiles (or loads) the kernel and returns: no state, status
or trace is touched and no noise is drawn (the driver's compile-ahead call).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import errors, types
from numba.extending import overload

from . import score_blocks, vecmath
from .activation_table import compile_activate_hidden
from .cache import use_cache
from .group_threads import run_ranges

__all__ = ["langevin", "mala", "kinetic", "evaluate_points", "BLOCK"]

BLOCK = 128
# error_model="numpy": float division never raises, so no call is an exception
# boundary and LLVM may inline and vectorise across it.  The noise and block helpers are
# inlined by LLVM (forceinline: LLVM's alwaysinline), not in Numba's IR (inline="always"):
# the same machine code (chain-steps/s within noise, one thread, 2 AMD EPYC cores), but the
# first call of a sampler on an empty cache 0.4-1.9 s shorter (ula 4.5 -> 4.0 s, mala 5.2 ->
# 4.4 s, kinetic 6.6 -> 4.9 s, load 1-1.5), Numba's IR inlining and the type inference of
# the inlined copies being most of the difference
_K = score_blocks.make(numba.njit(error_model="numpy"), vecmath.activation,
                       jit_inline=lambda f: numba.njit(forceinline=True, error_model="numpy")(f),
                       exp_nonpositive=vecmath.exp_nonpositive,
                       activate_hidden=compile_activate_hidden(numba.njit(error_model="numpy"),
                                                               vecmath.activation_entries))
_uniform = _K.uniform
_log_unit = _K.log_unit
_evaluate = _K.evaluate
_step_block = _K.step_block
_mala_log_alpha = _K.mala_log_alpha
_kick_block = _K.kick_block
_drift_block = _K.drift_block
_refresh_block = _K.refresh_block
_safe_points = _K.safe_points
_phase_check = _K.phase_check
_U1 = np.uint64(1)


def kind_tag(kind):
    """The target kind as an argument whose numba type carries it: a tuple of ``kind + 1`` zeros, typed
    ``UniTuple(int64, kind + 1)``.

    A kernel called with it is compiled, and cached, for that kind alone (:func:`evaluate_kind` reads the
    kind from the tuple's length at compile time), by its ordinary signature: no literal argument
    (``numba.literally``, whose first, plain-typed attempt is aborted) and no entry function around the
    kernel (whose compile optimised the whole kernel a second time when linking it, 0.9 s of its first call).
    """
    return (0,) * (int(kind) + 1)


def evaluate_kind(tag, lay, p, X, S, LP, W, m, want_logp):
    """The score (and log p) of the target kind of ``tag`` (:func:`kind_tag`) on a block, as ``score_blocks``'
    ``evaluate``, with the kind a compile-time constant, so that a kernel compiles only the kind it runs:
    every kind in one dispatch was most of a sampler kernel's first compile."""
    raise NotImplementedError("evaluate_kind runs inside the compiled kernels only")


@overload(evaluate_kind, jit_options={"error_model": "numpy"})
def _evaluate_kind(tag, lay, p, X, S, LP, W, m, want_logp):
    if not isinstance(tag, types.UniTuple):
        raise errors.TypingError("evaluate_kind needs the target kind as kind_tag(kind), a tuple of kind + 1 zeros")
    score = _K.by_kind.get(tag.count - 1)
    if score is None:  # an unknown kind scores NaN: the chains are flagged diverged, never silently wrong
        def unknown(tag, lay, p, X, S, LP, W, m, want_logp):
            for i in range(lay[1]):
                for c in range(m):
                    S[i, c] = math.nan
        return unknown

    def known(tag, lay, p, X, S, LP, W, m, want_logp):
        score(lay, p, X, S, LP, W, m, want_logp)
    return known
_NONFINITE = score_blocks.NONFINITE
_BEYOND = score_blocks.BEYOND_BOUND
_KICK = score_blocks.KICK
_DRIFT = score_blocks.DRIFT


# ------------------------------------------------------------------ a block's chains in and out
@numba.njit(error_model="numpy", nogil=True)
def _load_rows(src, lo, m, dst):
    """Rows ``lo .. lo + m - 1`` of ``src`` (n, d) into the first ``m`` columns of ``dst`` (d, BLOCK), transposed."""
    for c in range(m):
        for i in range(src.shape[1]):
            dst[i, c] = src[lo + c, i]


@numba.njit(error_model="numpy", nogil=True)
def _store_rows(dst, lo, m, src):
    """The first ``m`` columns of ``src`` (d, BLOCK) back into rows ``lo .. lo + m - 1`` of ``dst`` (n, d)."""
    for c in range(m):
        for i in range(dst.shape[1]):
            dst[lo + c, i] = src[i, c]


@numba.njit(error_model="numpy", nogil=True)
def _enter_block(x, status, lo, m, X, fate, alive):
    """Chains ``lo .. lo + m - 1`` into a block: their states into ``X``, their status codes into ``fate``, and
    ``alive`` 1.0 where a chain still runs (0: frozen on entry)."""
    for c in range(m):
        fate[c] = status[lo + c]
        alive[c] = 1.0 if fate[c] == 0 else 0.0
    _load_rows(x, lo, m, X)


@numba.njit(error_model="numpy", nogil=True)
def _leave_block(x, status, lo, m, X, fate):
    """A block's states and status codes back into ``x`` and ``status``."""
    for c in range(m):
        status[lo + c] = fate[c]
    _store_rows(x, lo, m, X)


def langevin(lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec, trace, status):
    """ULA / annealed Langevin on all chains of ``x`` (n, d), in place.

    Level ``l`` uses ``params[l]``, ``scale[l]``, step ``etas[l]`` for
    ``steps_per_level`` steps.  Row ``i`` of ``x`` is chain ``chain0 + i``
    and the first step taken is global step ``step0`` (the noise counters), so
    a run cut into blocks of chains or chunks of steps draws the same noise.
    ``status`` (n,) int8: 0 running, else frozen (see the module doc).
    """
    tag = kind_tag(lay[0])
    args = (lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec, trace, status)
    nblocks = (x.shape[0] + BLOCK - 1) // BLOCK
    if steps_per_level == 0 or nblocks == 0:  # compile (or load) only
        _langevin_blocks(tag, 0, 0, *args)
        return
    run_ranges(lambda lo, hi: _langevin_blocks(tag, lo, hi, *args), nblocks)


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _langevin_blocks(tag, b_lo, b_hi, lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec,
                     trace, status):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`langevin` (chains ``b BLOCK ..``): serial, GIL-free;
    compiled for the target kind of ``tag = kind_tag(lay[0])`` alone (:func:`evaluate_kind`)."""
    if steps_per_level == 0:
        return
    n, d = x.shape
    wrows = lay[2]
    L = etas.shape[0]
    X = np.empty((d, BLOCK))
    S = np.empty((d, BLOCK))
    W = np.empty((wrows, BLOCK))
    LP = np.empty(BLOCK)
    ACC = np.empty(BLOCK)
    alive = np.empty(BLOCK)
    fate = np.empty(BLOCK, dtype=np.int8)
    for b in range(b_lo, b_hi):  # the block's scratch is reused: every entry a block reads it wrote first
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        _enter_block(x, status, lo, m, X, fate, alive)
        g = step0
        for lev in range(L):
            eta = etas[lev]
            sq = math.sqrt(2.0 * eta)
            sc = scale[lev]
            p = params[lev]
            for t in range(steps_per_level):
                evaluate_kind(tag, lay, p, X, S, LP, W, m, False)
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
        _leave_block(x, status, lo, m, X, fate)


def mala(lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted):
    r"""MALA on all chains of ``x``, in place; ``accepted[c]`` counts accepted moves.

    Chains and steps are numbered from ``chain0`` and ``step0`` as in :func:`langevin`.

    Proposal :math:`y = x + \eta s(x) + \sqrt{2\eta} z`, accepted when
    :math:`\log u < \log p(y) - \log p(x) - (\|x - y - \eta s(y)\|^2 -
    \|y - x - \eta s(x)\|^2) / (4\eta)`.  A proposal that is non-finite or
    beyond the bound, or a non-finite score or log-ratio there, freezes the chain.
    """
    tag = kind_tag(lay[0])
    args = (lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted)
    nblocks = (x.shape[0] + BLOCK - 1) // BLOCK
    if n_steps == 0 or nblocks == 0:  # compile (or load) only
        _mala_blocks(tag, 0, 0, *args)
        return
    run_ranges(lambda lo, hi: _mala_blocks(tag, lo, hi, *args), nblocks)


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _mala_blocks(tag, b_lo, b_hi, lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`mala`, as :func:`_langevin_blocks`."""
    if n_steps == 0:
        return
    n, d = x.shape
    wrows = lay[2]
    sq = math.sqrt(2.0 * eta)
    p = params[0]
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
    for b in range(b_lo, b_hi):  # the block's scratch is reused: every entry a block reads it wrote first
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        _enter_block(x, status, lo, m, X, fate, alive)
        evaluate_kind(tag, lay, p, X, S, LPX, W, m, True)
        for t in range(step0, step0 + n_steps):
            for i in range(d):
                for c in range(m):
                    Y[i, c] = S[i, c]
            _step_block(X, Y, ACC, m, d, eta, 1.0, sq, k0, k1, chain0 + lo, t)
            evaluate_kind(tag, lay, p, Y, SY, LPY, W, m, True)
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
        _leave_block(x, status, lo, m, X, fate)


def kinetic(lay, params, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace,
            p_trace, status):
    r"""Kinetic Langevin on all chains of ``x`` (positions) and ``v`` (momenta), (n, d), in place.

    One step runs the letters of ``word`` (int64 codes :data:`.score_blocks.KICK`, ``DRIFT``,
    ``REFRESH``; the splitting is run-time data, so one compiled kernel serves BAOAB, OBABO and
    ABOBA), docs/derivations.md §8.6::

        B: p <- p + kick * s(q)     A: q <- q + drift * p     O: p <- decay * p + spread * xi

    with the o-th O of step ``t`` taking coordinates ``o d .. o d + d - 1`` of
    ``normal(seed, chain, t, .)``.  The score is evaluated lazily, once per step, exactly where
    the NumPy reference (:mod:`refscore.sampling.kinetic`) evaluates it: at the first kick after
    a drift, or at the first kick of the call (a chunk recomputes the score at the chain's state:
    deterministic, the same bits), and only at finite points within ``GROWTH_BOUND`` (else at the
    chain's state).  A chain whose new ``(q, p)`` holds a non-finite value or a coordinate beyond
    the bound keeps its last state and is frozen (``status`` as in :func:`langevin`).
    ``trace`` and ``p_trace`` receive the positions and momenta after global step ``(j + 1) rec``.
    """
    tag = kind_tag(lay[0])
    args = (lay, params, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace, p_trace,
            status)
    nblocks = (x.shape[0] + BLOCK - 1) // BLOCK
    if n_steps == 0 or nblocks == 0:  # compile (or load) only
        _kinetic_blocks(tag, 0, 0, *args)
        return
    run_ranges(lambda lo, hi: _kinetic_blocks(tag, lo, hi, *args), nblocks)


@numba.njit(cache=use_cache(), error_model="numpy", nogil=True)
def _kinetic_blocks(tag, b_lo, b_hi, lay, params, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0,
                    step0, rec, trace, p_trace, status):
    """Blocks ``b_lo .. b_hi - 1`` of :func:`kinetic`, as :func:`_langevin_blocks`."""
    if n_steps == 0:
        return
    n, d = x.shape
    wrows = lay[2]
    p = params[0]
    n_letters = word.shape[0]
    X = np.empty((d, BLOCK))
    V = np.empty((d, BLOCK))
    Q = np.empty((d, BLOCK))
    PM = np.empty((d, BLOCK))
    QS = np.empty((d, BLOCK))
    S = np.empty((d, BLOCK))
    W = np.empty((wrows, BLOCK))
    LP = np.empty(BLOCK)
    ACC = np.empty(BLOCK)
    alive = np.empty(BLOCK)
    fate = np.empty(BLOCK, dtype=np.int8)
    for b in range(b_lo, b_hi):  # the block's scratch is reused: every entry a block reads it wrote first
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        _enter_block(x, status, lo, m, X, fate, alive)
        _load_rows(v, lo, m, V)
        have_score = False  # S holds s(q) of the current Q
        for t in range(step0, step0 + n_steps):
            for i in range(d):
                for c in range(m):
                    Q[i, c] = X[i, c]
                    PM[i, c] = V[i, c]
            o = 0
            for li in range(n_letters):
                letter = word[li]
                if letter == _KICK:
                    if not have_score:
                        _safe_points(Q, X, QS, ACC, m, d)
                        evaluate_kind(tag, lay, p, QS, S, LP, W, m, False)
                        have_score = True
                    _kick_block(PM, S, m, d, kick)
                elif letter == _DRIFT:
                    _drift_block(Q, PM, m, d, drift)
                    have_score = False
                else:
                    _refresh_block(PM, m, d, decay, spread, k0, k1, chain0 + lo, t, o * d)
                    o += 1
            _phase_check(Q, PM, ACC, m, d)
            for c in range(m):
                ok = alive[c] * (ACC[c] == 0.0)
                if ok != alive[c]:  # frozen at this step: NaN means non-finite, > 0 beyond the bound
                    fate[c] = _BEYOND if ACC[c] > 0.0 else _NONFINITE
                alive[c] = ok
                ACC[c] = ok
            for i in range(d):
                for c in range(m):
                    X[i, c] = Q[i, c] if ACC[c] != 0.0 else X[i, c]
                    V[i, c] = PM[i, c] if ACC[c] != 0.0 else V[i, c]
            if rec > 0 and (t + 1) % rec == 0:
                r = (t + 1) // rec - 1
                for c in range(m):
                    for i in range(d):
                        trace[r, lo + c, i] = X[i, c]
                        p_trace[r, lo + c, i] = V[i, c]
        _leave_block(x, status, lo, m, X, fate)
        _store_rows(v, lo, m, V)


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
