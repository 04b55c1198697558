"""Numba kernels timed by :mod:`refscore.bench` (throughput probes, not library code).

* :func:`counter_normals`: the counter-based normals alone -- Philox4x32-10 and
  Box-Muller from :mod:`refscore._philox`, compiled inline exactly as the
  Numba sampler compiles them, ``prange`` over chains, pairs innermost.
* :func:`exp_throughput`: libm's ``exp`` rate from a Numba loop, one input of
  the arithmetic-limit estimate (the other, the peak multiply-add rate, is a
  BLAS product timed in :mod:`refscore.bench`).
"""
from __future__ import annotations

import numba
import numpy as np

from . import _philox

__all__ = ["counter_normals", "exp_throughput"]

_P = _philox.make(lambda f: numba.njit(inline="always", error_model="numpy")(f))
_normal_pair = _P.normal_pair


@numba.njit(parallel=True, cache=True, error_model="numpy")
def counter_normals(k0, k1, out, n_pairs):
    """``out[c]`` = sum of the ``2 n_pairs`` normals of chain ``c`` at step 0 (2 n_pairs × out.size draws)."""
    for c in numba.prange(out.size):
        acc = 0.0
        for j in range(n_pairs):
            z0, z1 = _normal_pair(k0, k1, np.uint64(c), np.uint64(0), np.uint64(j), np.uint64(0))
            acc += z0 + z1
        out[c] = acc


@numba.njit(parallel=True, cache=True, fastmath=True)
def exp_throughput(x, out):
    """``out = exp(x)``: x.size calls of libm's exp (no SVML: scalar calls even in a vectorised loop)."""
    for i in numba.prange(x.size):
        out[i] = np.exp(x[i])
