r"""numba.cuda backend: one thread per chain (loaded lazily through :mod:`refscore._kernels`).

Derivation: docs/derivations.md §8 (kinetic Langevin: §8.6), §9.5 (why a GPU agrees to round-off only).

Each thread holds its chain in local arrays shaped like a CPU block of one
chain (``X[i, 0]``) and runs the SAME score and noise device functions as the
CPU kernels (:mod:`.score_blocks`, :mod:`.philox`), compiled with
``cuda.jit(device=True)``; the kernels below are line-by-line transcriptions
of :mod:`.cpu_sampler` with ``m = 1`` (the same freezing rule and ``status``
codes, the same zero-step early return).  Under ``NUMBA_ENABLE_CUDASIM=1`` the simulator
runs them on the CPU (bitwise equal noise to NumPy and Numba, tested).

Round-off: on real hardware NVVM contracts ``a*b + c`` into FMA by default,
so device results (noise included) may differ from the CPU backends in the
last bits; trajectories then agree to round-off, not bitwise.
"""
from __future__ import annotations

import math

import numpy as np
import numba
from numba import cuda, float64

from . import score_blocks
from .activation_table import LIBM_OPS, compile_activation
from .ids import MAX_DIM_GPU, MAX_WORK_GPU

__all__ = ["langevin", "mala", "kinetic", "available"]

_device = cuda.jit(device=True)
# The activation table is compiled as device functions on a GPU.  The simulator runs
# device functions as Python, but wraps each call in a context that swaps module
# globals while 128 Python threads contend for the GIL; three nested wrapped calls per
# activation made an MLP target's 100 steps take minutes (measured), so there the
# table stays plain Python, called from the one wrapped `act` of score_blocks.
_activation_jit = (lambda fn: fn) if numba.config.ENABLE_CUDASIM else _device
_K = score_blocks.make(_device, compile_activation(_activation_jit, LIBM_OPS))
_evaluate = _K.evaluate
_step_block = _K.step_block
_mala_log_alpha = _K.mala_log_alpha
_uniform = _K.uniform
_log_unit = _K.log_unit
_kick_block = _K.kick_block
_drift_block = _K.drift_block
_refresh_block = _K.refresh_block
_safe_points = _K.safe_points
_phase_check = _K.phase_check
_NONFINITE = score_blocks.NONFINITE
_BEYOND = score_blocks.BEYOND_BOUND
_KICK = score_blocks.KICK
_DRIFT = score_blocks.DRIFT
MAXD = MAX_DIM_GPU
MAXW = MAX_WORK_GPU
_U1 = np.uint64(1)
#: threads per block: 128 on a GPU.  The simulator runs every thread of a block as a
#: Python thread while its main thread polls them; with 128 (or even 16) threads a run
#: stalled for minutes at random (measured: 100 steps of 16 MLP chains took 1 s, or
#: 17-300 s).  With one thread per block the blocks run one after another: 1.8 s, every time
_TPB = 1 if numba.config.ENABLE_CUDASIM else 128


def available() -> bool:
    """True when a GPU or the simulator (``NUMBA_ENABLE_CUDASIM=1``) can run kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors mean "no"
        return False


@cuda.jit
def _langevin_kernel(lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec, trace, status):
    c0 = cuda.grid(1)
    n = x.shape[0]
    d = x.shape[1]
    if c0 >= n or steps_per_level == 0:
        return
    X = cuda.local.array((MAXD, 1), float64)
    S = cuda.local.array((MAXD, 1), float64)
    W = cuda.local.array((MAXW, 1), float64)
    LP = cuda.local.array(1, float64)
    ACC = cuda.local.array(1, float64)
    fate = status[c0]
    alive = 1.0 if fate == 0 else 0.0
    for i in range(d):
        X[i, 0] = x[c0, i]
    g = step0
    for lev in range(etas.shape[0]):
        eta = etas[lev]
        sq = math.sqrt(2.0 * eta)
        sc = scale[lev]
        p = params[lev]
        for t in range(steps_per_level):
            _evaluate(lay, p, X, S, LP, W, 1, False)
            _step_block(X, S, ACC, 1, d, eta, sc, sq, k0, k1, chain0 + c0, g)
            ok = alive * (ACC[0] == 0.0)
            if ok != alive:  # frozen at this step: NaN means non-finite, > 0 beyond the bound
                fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
            alive = ok
            if alive != 0.0:
                for i in range(d):
                    X[i, 0] = S[i, 0]
            g += 1
            if rec > 0 and g % rec == 0:
                for i in range(d):
                    trace[g // rec - 1, c0, i] = X[i, 0]
    status[c0] = fate
    for i in range(d):
        x[c0, i] = X[i, 0]


@cuda.jit
def _mala_kernel(lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted):
    c0 = cuda.grid(1)
    n = x.shape[0]
    d = x.shape[1]
    if c0 >= n or n_steps == 0:
        return
    X = cuda.local.array((MAXD, 1), float64)
    S = cuda.local.array((MAXD, 1), float64)
    Y = cuda.local.array((MAXD, 1), float64)
    SY = cuda.local.array((MAXD, 1), float64)
    W = cuda.local.array((MAXW, 1), float64)
    LPX = cuda.local.array(1, float64)
    LPY = cuda.local.array(1, float64)
    ACC = cuda.local.array(1, float64)
    sq = math.sqrt(2.0 * eta)
    p = params[0]
    fate = status[c0]
    alive = fate == 0
    for i in range(d):
        X[i, 0] = x[c0, i]
    _evaluate(lay, p, X, S, LPX, W, 1, True)
    for t in range(step0, step0 + n_steps):
        for i in range(d):
            Y[i, 0] = S[i, 0]
        _step_block(X, Y, ACC, 1, d, eta, 1.0, sq, k0, k1, chain0 + c0, t)
        _evaluate(lay, p, Y, SY, LPY, W, 1, True)
        loga = _mala_log_alpha(X, Y, S, SY, 0, d, eta, LPX[0], LPY[0])
        fin = ACC[0] == 0.0 and math.isfinite(loga)
        for i in range(d):
            fin = fin and math.isfinite(SY[i, 0])
        if alive and not fin:
            alive = False
            fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
        if alive:
            u = _uniform(k0, k1, np.uint64(chain0 + c0), np.uint64(t), _U1)
            if _log_unit(u) < loga:
                accepted[c0] += 1
                LPX[0] = LPY[0]
                for i in range(d):
                    X[i, 0] = Y[i, 0]
                    S[i, 0] = SY[i, 0]
        if rec > 0 and (t + 1) % rec == 0:
            for i in range(d):
                trace[(t + 1) // rec - 1, c0, i] = X[i, 0]
    status[c0] = fate
    for i in range(d):
        x[c0, i] = X[i, 0]


@cuda.jit
def _kinetic_kernel(lay, params, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace,
                    p_trace, status):
    c0 = cuda.grid(1)
    n = x.shape[0]
    d = x.shape[1]
    if c0 >= n or n_steps == 0:
        return
    X = cuda.local.array((MAXD, 1), float64)
    V = cuda.local.array((MAXD, 1), float64)
    Q = cuda.local.array((MAXD, 1), float64)
    PM = cuda.local.array((MAXD, 1), float64)
    QS = cuda.local.array((MAXD, 1), float64)
    S = cuda.local.array((MAXD, 1), float64)
    W = cuda.local.array((MAXW, 1), float64)
    LP = cuda.local.array(1, float64)
    ACC = cuda.local.array(1, float64)
    p = params[0]
    fate = status[c0]
    alive = 1.0 if fate == 0 else 0.0
    for i in range(d):
        X[i, 0] = x[c0, i]
        V[i, 0] = v[c0, i]
    have_score = False
    for t in range(step0, step0 + n_steps):
        for i in range(d):
            Q[i, 0] = X[i, 0]
            PM[i, 0] = V[i, 0]
        o = 0
        for li in range(word.shape[0]):
            letter = word[li]
            if letter == _KICK:
                if not have_score:
                    _safe_points(Q, X, QS, ACC, 1, d)
                    _evaluate(lay, p, QS, S, LP, W, 1, False)
                    have_score = True
                _kick_block(PM, S, 1, d, kick)
            elif letter == _DRIFT:
                _drift_block(Q, PM, 1, d, drift)
                have_score = False
            else:
                _refresh_block(PM, 1, d, decay, spread, k0, k1, chain0 + c0, t, o * d)
                o += 1
        _phase_check(Q, PM, ACC, 1, d)
        ok = alive * (ACC[0] == 0.0)
        if ok != alive:  # frozen at this step: NaN means non-finite, > 0 beyond the bound
            fate = _BEYOND if ACC[0] > 0.0 else _NONFINITE
        alive = ok
        if alive != 0.0:
            for i in range(d):
                X[i, 0] = Q[i, 0]
                V[i, 0] = PM[i, 0]
        if rec > 0 and (t + 1) % rec == 0:
            for i in range(d):
                trace[(t + 1) // rec - 1, c0, i] = X[i, 0]
                p_trace[(t + 1) // rec - 1, c0, i] = V[i, 0]
    status[c0] = fate
    for i in range(d):
        x[c0, i] = X[i, 0]
        v[c0, i] = V[i, 0]


def _check_sizes(lay):
    d, work = int(lay[1]), int(lay[2])
    if d > MAXD or work > MAXW:
        raise ValueError(
            f"backend='cuda' supports targets with dim <= {MAXD} and <= {MAXW} work rows per "
            f"chain, got dim {d} and {work} work rows"
        )


def _grid(n):
    return (n + _TPB - 1) // _TPB, _TPB


def langevin(lay, params, scale, etas, steps_per_level, x, k0, k1, chain0, step0, rec, trace, status):
    """Run :func:`_langevin_kernel` on host arrays (copied in and out); arguments as the CPU kernel's."""
    _check_sizes(lay)
    d_x = cuda.to_device(x)
    d_tr = cuda.to_device(trace)
    d_st = cuda.to_device(status)
    _langevin_kernel[_grid(x.shape[0])](cuda.to_device(np.array(lay)), cuda.to_device(np.array(params)),
                                        cuda.to_device(np.array(scale)), cuda.to_device(etas), steps_per_level,
                                        d_x, k0, k1, chain0, step0, rec, d_tr, d_st)
    x[:] = d_x.copy_to_host()
    trace[:] = d_tr.copy_to_host()
    status[:] = d_st.copy_to_host()


def mala(lay, params, eta, n_steps, x, k0, k1, chain0, step0, rec, trace, status, accepted):
    """Run :func:`_mala_kernel` on host arrays (copied in and out); arguments as the CPU kernel's."""
    _check_sizes(lay)
    d_x = cuda.to_device(x)
    d_tr = cuda.to_device(trace)
    d_st = cuda.to_device(status)
    d_ac = cuda.to_device(accepted)
    _mala_kernel[_grid(x.shape[0])](cuda.to_device(np.array(lay)), cuda.to_device(np.array(params)), eta,
                                    n_steps, d_x, k0, k1, chain0, step0, rec, d_tr, d_st, d_ac)
    x[:] = d_x.copy_to_host()
    trace[:] = d_tr.copy_to_host()
    status[:] = d_st.copy_to_host()
    accepted[:] = d_ac.copy_to_host()


def kinetic(lay, params, word, kick, drift, decay, spread, n_steps, x, v, k0, k1, chain0, step0, rec, trace, p_trace,
            status):
    """Run :func:`_kinetic_kernel` on host arrays (copied in and out); arguments as the CPU kernel's."""
    _check_sizes(lay)
    d_x = cuda.to_device(x)
    d_v = cuda.to_device(v)
    d_tr = cuda.to_device(trace)
    d_ptr = cuda.to_device(p_trace)
    d_st = cuda.to_device(status)
    _kinetic_kernel[_grid(x.shape[0])](cuda.to_device(np.array(lay)), cuda.to_device(np.array(params)),
                                       cuda.to_device(np.array(word)), kick, drift, decay, spread, n_steps, d_x, d_v,
                                       k0, k1, chain0, step0, rec, d_tr, d_ptr, d_st)
    x[:] = d_x.copy_to_host()
    v[:] = d_v.copy_to_host()
    trace[:] = d_tr.copy_to_host()
    p_trace[:] = d_ptr.copy_to_host()
    status[:] = d_st.copy_to_host()
