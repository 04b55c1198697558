"""numba.cuda probe kernels timed by ``benchmarks/bench.py`` (imported only by its GPU worker).

* :func:`gpu_rates`: the GPU's float64 multiply-add rate and libdevice ``exp``
  rate, the two inputs of the GPU arithmetic-limit estimate (the same formula
  as the CPU's, see ``benchmarks/bench.py``).

Module-level kernels (not closures), so that numba's CUDA simulator can run
them in tests.
"""
from __future__ import annotations

import math
import time

from numba import cuda

__all__ = ["gpu_rates"]


@cuda.jit
def _fma_probe(out, reps):
    """``reps`` rounds of 8 independent multiply-add chains per thread (latency hidden)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    a0 = 1.0 + i * 1e-12
    a1 = a0 + 1e-3
    a2 = a0 + 2e-3
    a3 = a0 + 3e-3
    a4 = a0 + 4e-3
    a5 = a0 + 5e-3
    a6 = a0 + 6e-3
    a7 = a0 + 7e-3
    for _ in range(reps):
        a0 = a0 * 0.999999 + 1e-7
        a1 = a1 * 0.999999 + 1e-7
        a2 = a2 * 0.999999 + 1e-7
        a3 = a3 * 0.999999 + 1e-7
        a4 = a4 * 0.999999 + 1e-7
        a5 = a5 * 0.999999 + 1e-7
        a6 = a6 * 0.999999 + 1e-7
        a7 = a7 * 0.999999 + 1e-7
    out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7


@cuda.jit
def _exp_probe(out, reps):
    """``reps`` calls of ``math.exp`` per thread (what the sampler's device code calls)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    x = -(i % 1024) * 1e-3
    acc = 0.0
    for r in range(reps):
        acc += math.exp(x - r * 1e-6)
    out[i] = acc


def gpu_rates(threads, reps):
    """``{"fma_per_s", "exp_per_s"}`` measured with ``threads`` threads × ``reps`` rounds; best of 3 after a warm-up."""
    out = cuda.device_array(threads)
    tpb = 256
    blocks = (threads + tpb - 1) // tpb
    rates = {}
    for name, kern, per in (("fma_per_s", _fma_probe, 8), ("exp_per_s", _exp_probe, 1)):
        kern[blocks, tpb](out, reps)
        cuda.synchronize()
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            kern[blocks, tpb](out, reps)
            cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        rates[name] = threads * reps * per / best
    return rates
