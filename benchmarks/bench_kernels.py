"""Numba kernels timed by the benchmark harness ``benchmarks/bench.py`` (throughput probes, not library code).

* :func:`counter_normals`: the counter-based normals alone -- Philox4x32-10 and
  Box-Muller from :mod:`refscore._kernels.philox`, compiled inline exactly as the
  Numba sampler compiles them, ``prange`` over blocks of chains, chains innermost.
* :func:`exp_throughput`: the rate of :func:`refscore._kernels.vecmath.exp_nonpositive`
  (the exponential the CPU sampler's mixture softmax uses), one input of
  the arithmetic-limit estimate (the other, the peak multiply-add rate, is a
  BLAS product timed in ``benchmarks/bench.py``).
"""
from __future__ import annotations

import numba
import numpy as np

from refscore._kernels import philox as _philox
from refscore._kernels.vecmath import exp_nonpositive

__all__ = ["counter_normals", "exp_throughput"]

_P = _philox.make(lambda f: numba.njit(inline="always", error_model="numpy")(f))
_normal_pair = _P.normal_pair


@numba.njit(parallel=True, cache=True, error_model="numpy")
def counter_normals(k0, k1, out, n_pairs):
    """``out[c]`` = sum of the ``2 n_pairs`` normals of chain ``c`` at step 0 (2 n_pairs × out.size draws).

    Laid out as the sampler's kernels are: blocks of 128 chains in parallel,
    each summing into a block-local array with the chain loop innermost (so
    it vectorises; accumulating straight into ``out`` measured 4× slower).
    """
    B = 128
    for b in numba.prange((out.size + B - 1) // B):
        lo = b * B
        m = min(B, out.size - lo)
        acc = np.zeros(B)
        for j in range(n_pairs):
            jj = np.uint64(j)
            for c in range(m):
                z0, z1 = _normal_pair(k0, k1, np.uint64(lo + c), np.uint64(0), jj, np.uint64(0))
                acc[c] += z0 + z1
        out[lo:lo + m] = acc[:m]


@numba.njit(cache=True, error_model="numpy")
def _exp_block(x, out, lo, reps):
    B = 256
    acc = np.zeros(B)
    for r in range(reps):
        shift = r * (1.0 / 1024.0)
        for i in range(B):
            acc[i] += exp_nonpositive(x[lo + i] - shift)
    out[lo:lo + B] = acc


@numba.njit(parallel=True, cache=True, error_model="numpy")
def exp_throughput(x, out, reps):
    """``reps`` passes of ``exp(x - r/1024)`` (x <= 0) over blocks of 256 held in L1, summed into ``out``.

    The samplers' own branch-free exponential, vectorised (the block loop in a
    serial helper: measured 1.4× faster than written inline in the ``prange``
    body); ``x[:x.size // 256 * 256].size * reps`` calls, compute-bound.
    """
    for b in numba.prange(x.size // 256):
        _exp_block(x, out, b * 256, reps)
