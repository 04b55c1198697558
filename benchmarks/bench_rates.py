"""The machine's arithmetic rates on one core, the yardsticks of the MLP losses' arithmetic limit (``benchmarks/bench.py``).

* :func:`fma_peak_per_s`: float64 multiply-adds per second of one core at
  its widest vectors: 128 independent chains ``a <- a * m + b`` (16 AVX-512
  registers, more than the 2 units x 4 cycles of latency need), held in
  registers, compiled by Numba with ``fastmath={"contract"}`` (the fused
  multiply-add, nothing else).  :func:`fma_vector_bits` says which registers
  the compiled loop uses, so a report says what the rate is the peak of.
* :func:`tanh_per_s`: ``np.tanh`` (NumPy's vectorised tanh) over 4096
  numbers held in L1: the fastest float64 tanh found on the machine, so the
  limit's transcendental term is the least any implementation pays.
* :func:`kernel_activation_per_s`: what the loss kernels evaluate per hidden
  unit, tanh with its first two derivatives (refscore's branch-free tanh,
  1 - t², -2 t (1 - t²)), for comparison.
* :func:`blas_fma_per_s`: multiply-adds per second of ``np.dot`` on one
  thread at a given shape (NumPy's OpenBLAS), for comparison.

Each rate is the best of several timed runs of the calling thread's CPU
time (``time.thread_time``): the machine is shared, and a run that another
process interrupted is slower, never faster.
"""
from __future__ import annotations

import re
import time

import numba
import numpy as np

from refscore._kernels.vecmath import tanh as _tanh

__all__ = ["fma_peak_per_s", "fma_vector_bits", "tanh_per_s", "kernel_activation_per_s", "blas_fma_per_s"]

_CHAINS = 128


@numba.njit(fastmath={"contract"}, error_model="numpy", nogil=True)
def _fma_chains(a, reps, out):
    """``reps`` multiply-adds on each of the 128 chains started at ``a``; the chains' ends in ``out``."""
    acc = np.empty(128)
    for j in range(128):
        acc[j] = a[j]
    for r in range(reps):
        for j in range(128):
            acc[j] = acc[j] * 0.999999 + 1e-7
    for j in range(128):
        out[j] = acc[j]


@numba.njit(error_model="numpy", nogil=True)
def _activations(z, h, d1, d2, reps):
    for r in range(reps):
        for i in range(z.size):
            t = _tanh(z[i])
            h[i] = t
            d1[i] = 1.0 - t * t
            d2[i] = -2.0 * t * d1[i]


def _best_cpu(fn, repeat):
    fn()
    best = np.inf
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def fma_peak_per_s(repeat=7, reps=1_000_000):
    """Multiply-adds per second of one core (see the module notes)."""
    a = np.random.default_rng(0).uniform(0.5, 1.0, _CHAINS)
    out = np.empty(_CHAINS)
    t = _best_cpu(lambda: _fma_chains(a, reps, out), repeat)
    if not np.all(np.isfinite(out)):
        raise RuntimeError("the multiply-add probe overflowed")
    return _CHAINS * reps / t


def fma_vector_bits():
    """Width of the registers the probe's multiply-adds use (512, 256, 128; 64 for scalar code), or None."""
    asm = "".join(_fma_chains.inspect_asm().values())
    kinds = set(re.findall(r"vfn?m(?:add|sub)\w*\s+[^\n]*%([xyz])mm", asm))
    if not kinds:
        return None
    bits = {"z": 512, "y": 256, "x": 128}
    packed = re.findall(r"vfn?m(?:add|sub)\d*p[sd]\s", asm)
    return max(bits[k] for k in kinds) if packed else 64


def tanh_per_s(repeat=7, size=4096, reps=200):
    """``np.tanh`` evaluations per second of one thread over an L1-resident array."""
    z = np.random.default_rng(1).standard_normal(size) * 1.5
    out = np.empty(size)

    def run():
        for _ in range(reps):
            np.tanh(z, out=out)

    return size * reps / _best_cpu(run, repeat)


def kernel_activation_per_s(repeat=7, size=12288, reps=50):
    """Evaluations of tanh and its first two derivatives per second, as the loss kernels compute them."""
    z = np.random.default_rng(2).standard_normal(size) * 1.5
    h, d1, d2 = np.empty(size), np.empty(size), np.empty(size)
    return size * reps / _best_cpu(lambda: _activations(z, h, d1, d2, reps), repeat)


def blas_fma_per_s(m, k, n, repeat=7, reps=None):
    """Multiply-adds per second of ``np.dot`` of (m x k) by (k x n) on the calling thread (BLAS at one thread)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(3)
    A, B, C = rng.standard_normal((m, k)), rng.standard_normal((k, n)), np.empty((m, n))
    reps = reps or max(1, int(2e7 // (m * k * n)))

    def run():
        for _ in range(reps):
            np.dot(A, B, out=C)

    with threadpool_limits(1):
        return m * k * n * reps / _best_cpu(run, repeat)
