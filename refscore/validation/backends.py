r"""The three sampler backends run the same chains: NumPy reference, Numba CPU, numba.cuda.

Every backend draws its noise from :func:`refscore.noise.normal` (Philox4x32-10 +
Box–Muller, a pure function of (seed, chain, step, coordinate)), so with the
same seed the trajectories differ only by floating-point round-off in the score
evaluation.  The CUDA kernels run on a GPU when one is present and otherwise on
numba's CUDA simulator (in a subprocess, since ``NUMBA_ENABLE_CUDASIM`` must be
set before ``numba.cuda`` is imported).  Throughput is reported in chain-steps
per second; simulator throughput is not a speed measurement.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from refscore.distributions import Gaussian, GaussianMixture
from refscore.models import MLPScore
from refscore.sampling import ula

from .common import check_row, save_figure

NAME = "backends"
TITLE = "NumPy, Numba and CUDA backends agree; throughput"
SOURCE = "refscore API: identical counter-based noise on every backend"
TOL = 1e-10  # relative, after 100 steps: round-off of the score arithmetic only

MLP = MLPScore(2, (16, 16), "tanh")


def targets():
    """Name → target; the MLP is bound to a fixed Glorot init scaled down to stay contractive."""
    theta = MLP.init(7)
    gauss = Gaussian([1.0, -1.0], [[1.0, 0.5], [0.5, 2.0]])
    mix = GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [np.eye(2)] * 2)
    return {"gaussian": gauss, "mixture": mix, "mlp": MLP.bind(theta)}


def start(n, seed=0):
    return np.random.default_rng(seed).uniform(-3, 3, size=(n, 2))


_CUDA_SCRIPT = r"""
import json, sys
import numpy as np
from refscore.validation.backends import targets, start
from refscore.sampling import ula
out = {}
n, steps, step, seed = json.loads(sys.argv[1])
for name, t in targets().items():
    out[name] = ula(t, start(n), step, steps, seed=seed, backend="cuda").x.tolist()
json.dump(out, open(sys.argv[2], "w"))
"""


def run_cuda(n, steps, step, seed):
    """Run the cuda backend in a subprocess (simulator unless a GPU is present)."""
    env = dict(os.environ)
    gpu = False
    try:
        from refscore._kernels import cuda_available  # only to probe; simulator not enabled here

        gpu = cuda_available() and not os.environ.get("NUMBA_ENABLE_CUDASIM")
    except Exception:
        gpu = False
    if not gpu:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cuda.json")
        # the directory holding the refscore package (a clone's root, or site-packages)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CUDA_SCRIPT, json.dumps([n, steps, step, seed]), out],
                       check=True, env=env, cwd=root, capture_output=True)
        secs = time.perf_counter() - t0
        with open(out) as f:
            res = {k: np.array(v) for k, v in json.load(f).items()}
    return res, ("GPU" if gpu else "simulator"), secs


def rel_dev(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def throughput(target, backend, n, steps):
    x0 = start(n)
    ula(target, x0[:8], 0.01, 2, seed=1, backend=backend)  # compile / warm-up
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        ula(target, x0, 0.01, steps, seed=1, backend=backend)
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    # 16 chains: the CUDA simulator runs each thread as a Python thread, and its cost grows
    # steeply with the thread count when the cores are shared
    n_agree, steps, step = 16, 100, 0.05
    rows = []
    cuda_x, where, _ = run_cuda(n_agree, steps, step, seed)
    devs = {}
    for name, t in targets().items():
        ref = ula(t, start(n_agree), step, steps, seed=seed, backend="numpy").x
        nb = ula(t, start(n_agree), step, steps, seed=seed, backend="numba").x
        devs[name] = (rel_dev(nb, ref), rel_dev(cuda_x[name], ref))
        rows += [
            check_row(NAME, f"{name}: numba vs numpy, max rel dev after {steps} steps", devs[name][0],
                      "0 (round-off)", SOURCE, TOL, devs[name][0] <= TOL),
            check_row(NAME, f"{name}: cuda ({where}) vs numpy, max rel dev", devs[name][1],
                      "0 (round-off)", SOURCE, TOL, devs[name][1] <= TOL),
        ]
    n_tp = 20_000 if quick else 100_000
    tp_steps = 100 if quick else 200
    tps = {}
    for name, t in targets().items():
        tps[name] = {b: throughput(t, b, n_tp, tp_steps) for b in ("numpy", "numba")}
        ratio = tps[name]["numba"] / tps[name]["numpy"]
        # throughput is reported, not judged: the speed targets live in `refscore bench`,
        # which also runs the plain-NumPy baseline and the peers in the same session
        rows.append(check_row(NAME, f"{name}: chain-steps/s numba (numpy reference), N={n_tp}",
                              f"{tps[name]['numba']:.3g} ({tps[name]['numpy']:.3g}); ratio {ratio:.3g}",
                              "reported", "refscore bench", "-",
                              bool(np.isfinite(ratio) and ratio > 0)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(devs)
    xs = np.arange(len(names))
    axes[0].bar(xs - 0.2, [max(devs[k][0], 1e-17) for k in names], 0.4, label="numba vs numpy")
    axes[0].bar(xs + 0.2, [max(devs[k][1], 1e-17) for k in names], 0.4, label=f"cuda ({where}) vs numpy")
    axes[0].axhline(TOL, color="k", ls="--", label="tolerance")
    axes[0].set_yscale("log")
    axes[0].set_xticks(xs, names)
    axes[0].set_ylabel(f"max rel. deviation after {steps} ULA steps")
    axes[0].legend(fontsize=7)
    axes[1].bar(xs - 0.2, [tps[k]["numpy"] for k in names], 0.4, label="numpy reference")
    axes[1].bar(xs + 0.2, [tps[k]["numba"] for k in names], 0.4, label="numba")
    axes[1].set_yscale("log")
    axes[1].set_xticks(xs, names)
    axes[1].set_ylabel(f"chain-steps / s (N = {n_tp})")
    axes[1].legend(fontsize=7)
    fig.suptitle("Backends: same noise, same chains")
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
