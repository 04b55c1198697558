"""Langevin throughput: chain-steps/s for ULA, numpy vs numba backends vs a plain NumPy ULA.

Workloads (issue 8 item 6, issue 9 item 2):
  W1  2-D mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I)
  W2  10-D mixture of 5 unit-covariance components
N = 1e3, 1e4, 1e5 chains, 1000 steps (``--steps`` to change).  The baseline is
what a user would write: vectorised NumPy, noise from np.random.Generator.
Also: compile time of the numba kernel, and the counter-based generator's
normals/s alone (NumPy vectorised and Numba prange).  Best of ``--repeat``.

Usage: python benchmarks/langevin.py [--steps 1000] [--repeat 3] [--sizes 1000 10000 100000]
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

from refscore.distributions import GaussianMixture
from refscore.noise import _normal_block, _check_seed
from refscore.sampling import ula
from refscore.sampling import cpu


def workloads():
    w1 = GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [np.eye(2)] * 2)
    rng = np.random.default_rng(0)
    means = rng.uniform(-5, 5, size=(5, 10))
    w2 = GaussianMixture(np.full(5, 0.2), means, [np.eye(10)] * 5)
    return {"W1 2-D mix": w1, "W2 10-D mix": w2}


def plain_numpy_ula(weights, means, x, step, n_steps, rng):
    """What a user writes: unit-covariance mixture score, Generator noise."""
    logw = np.log(weights)
    sq = np.sqrt(2 * step)
    for _ in range(n_steps):
        diff = x[:, None, :] - means[None]              # (n, k, d)
        ell = logw - 0.5 * np.einsum("nkd,nkd->nk", diff, diff)
        ell -= ell.max(axis=1, keepdims=True)
        r = np.exp(ell)
        r /= r.sum(axis=1, keepdims=True)
        s = -np.einsum("nk,nkd->nd", r, diff)
        x = x + step * s + sq * rng.standard_normal(x.shape)
    return x


def best_of(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


_NP2 = cpu._K.normal_pair  # the inlined, vectorisable build the sampler uses


@numba.njit(parallel=True, error_model="numpy")
def _normals_numba(k0, k1, n_chains, n_pairs, out):
    for c in numba.prange(n_chains):
        acc = 0.0
        for j in range(n_pairs):
            z0, z1 = _NP2(k0, k1, np.uint64(c), np.uint64(0), np.uint64(j), np.uint64(0))
            acc += z0 + z1
        out[c] = acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = ap.parse_args()
    print(f"numba threads: {numba.get_num_threads()}, cores: {os.cpu_count()}, "
          f"numpy {np.__version__}, numba {numba.__version__}")

    # compile time (cache may make this small; the first-ever call compiles)
    t = time.perf_counter()
    w = workloads()["W1 2-D mix"]
    ula(w, np.zeros((4, 2)), 0.01, 2, seed=0, backend="numba")
    print(f"numba ULA first call (compile or cache load): {time.perf_counter() - t:.2f} s")

    # generator alone
    k0, k1 = _check_seed(1)
    n = 10 ** 6
    t = best_of(lambda: _normal_block(k0, k1, np.arange(n, dtype=np.uint64), np.uint64(0), 2),
                args.repeat)
    print(f"counter normals, NumPy vectorised : {2 * n / t:.3e} normals/s")
    out = np.empty(10 ** 5)
    _normals_numba(k0, k1, 10, 2, out)
    t = best_of(lambda: _normals_numba(k0, k1, 10 ** 5, 50, out), args.repeat)
    print(f"counter normals, Numba prange      : {10 ** 5 * 100 / t:.3e} normals/s")
    g = np.random.default_rng(0)
    t = best_of(lambda: g.standard_normal(2 * n), args.repeat)
    print(f"np.random.Generator.standard_normal: {2 * n / t:.3e} normals/s")

    print(f"\n{'workload':<12} {'N':>7} {'plain numpy':>12} {'numpy bknd':>12} {'numba bknd':>12} "
          f"{'numba/plain':>11}   (chain-steps/s, {args.steps} steps)")
    for name, dist in workloads().items():
        d = dist.dim
        for N in args.sizes:
            x0 = np.random.default_rng(1).uniform(-8, 8, size=(N, d))
            steps = args.steps
            t_plain = best_of(lambda: plain_numpy_ula(dist.weights, dist.means, x0, 0.01, steps,
                                                      np.random.default_rng(2)), args.repeat)
            np_steps = max(1, steps // 10)  # the reference is timed on fewer steps
            t_ref = best_of(lambda: ula(dist, x0, 0.01, np_steps, seed=3, backend="numpy"), 1)
            t_nb = best_of(lambda: ula(dist, x0, 0.01, steps, seed=3, backend="numba"), args.repeat)
            r_plain = N * steps / t_plain
            r_ref = N * np_steps / t_ref
            r_nb = N * steps / t_nb
            print(f"{name:<12} {N:>7} {r_plain:>12.3e} {r_ref:>12.3e} {r_nb:>12.3e} "
                  f"{r_nb / r_plain:>10.2f}x")


if __name__ == "__main__":
    main()
