r"""Benchmark: ISM and SSM loss + parameter gradient for an MLPScore.

Reports, for d = 2, 10, 50, hidden (64, 64), tanh, n = 10⁴, the best of 3 timed
runs after one warm-up of

* ``ism``: ``refscore.losses.ism(model, theta, x, grad=True)`` -- the exact
  trace through the two-hidden-layer identity, fused into one forward and one
  reverse pass per chunk (``MLPScore._ism_terms_fused``);
* ``ism (primitives)``: the same numbers assembled from the separate
  primitives (score, score_trace, trace_grad_params, score_vjp_params), i.e.
  four forward and two reverse passes -- the plain-NumPy baseline;
* ``ism (forward-mode)``: the primitives with ``trace_path="forward"``, carrying
  the d input tangents (the cost that sliced score matching avoids);
* ``ssm``: ``refscore.losses.ssm(..., v, grad=True)`` with one Rademacher
  projection per point (fused), and ``ssm (primitives)`` unfused.

Reference numbers from autodiff peers on this kind of machine (2 cores,
``../shared/PERFORMANCE.md``): ISM torch 24 ms (d = 2) / 95 ms (d = 10); SSM
torch 14.5 / 16.5 ms.  Run each framework in its own process; this script
only times refscore.

Usage: ``python benchmarks/mlp_losses.py [--n 10000] [--repeat 3]``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from refscore import losses
from refscore.models import MLPScore


def best_of(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ism_primitives(model, theta, x):
    n = x.shape[0]
    w = np.full(n, 1.0 / n)
    s = model.score(theta, x)
    value = np.mean(model.score_trace(theta, x) + 0.5 * np.einsum("nd,nd->n", s, s))
    g = model.trace_grad_params(theta, x, w) + model.score_vjp_params(theta, x, w[:, None] * s)
    return value, g


def ssm_primitives(model, theta, x, v):
    n = x.shape[0]
    w = np.full(n, 1.0 / n)
    s = model.score(theta, x)
    vs = np.einsum("nd,nd->n", v, s)
    value = np.mean(np.einsum("nd,nd->n", v, model.score_jvp(theta, x, v)) + 0.5 * vs**2)
    g = model.vjv_grad_params(theta, x, v, w) + model.score_vjp_params(theta, x, (w * vs)[:, None] * v)
    return value, g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 10, 50])
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    for d in args.dims:
        model = MLPScore(d, (64, 64), "tanh")
        forward = MLPScore(d, (64, 64), "tanh", trace_path="forward")
        theta = model.init(0)
        x = rng.standard_normal((args.n, d))
        v = losses.projections(rng, (args.n, d), kind="rademacher")
        # the fused and unfused routes must agree before we time them
        val, g = losses.ism(model, theta, x, grad=True)
        val2, g2 = ism_primitives(model, theta, x)
        assert abs(val - val2) <= 1e-10 * (1 + abs(val)) and np.allclose(g, g2, rtol=1e-9, atol=1e-12)
        cases = [
            ("ism", lambda: losses.ism(model, theta, x, grad=True)),
            ("ism (primitives)", lambda: ism_primitives(model, theta, x)),
            ("ism (forward-mode)", lambda: ism_primitives(forward, theta, x)),
            ("ssm", lambda: losses.ssm(model, theta, x, v, grad=True)),
            ("ssm (primitives)", lambda: ssm_primitives(model, theta, x, v)),
        ]
        for name, fn in cases:
            rows.append((name, d, best_of(fn, args.repeat) * 1e3))

    print(f"MLPScore hidden (64, 64) tanh, n = {args.n}, loss + gradient, best of {args.repeat} (ms)")
    names = list(dict.fromkeys(r[0] for r in rows))
    header = f"{'case':<22}" + "".join(f"{'d=' + str(d):>10}" for d in args.dims)
    print(header)
    print("-" * len(header))
    table = {(r[0], r[1]): r[2] for r in rows}
    for name in names:
        print(f"{name:<22}" + "".join(f"{table[(name, d)]:>10.1f}" for d in args.dims))


if __name__ == "__main__":
    main()
