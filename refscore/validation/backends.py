r"""The three sampler backends run the same chains: NumPy reference, Numba CPU, numba.cuda.

Every backend draws its noise from :func:`refscore.noise.normal` (Philox4x32-10 +
Box–Muller, a pure function of (seed, chain, step, coordinate)), so with the
same seed the trajectories differ only by floating-point round-off in the score
evaluation — and not at all where the score arithmetic happens to round the
same way (a deviation of exactly 0 is drawn as such in the figure).  The CUDA
kernels run on a GPU when one is present and otherwise on numba's CUDA
simulator (in a subprocess, since ``NUMBA_ENABLE_CUDASIM`` must be set before
``numba.cuda`` is imported).  Nothing here is timed: throughput is measured by
``refscore bench``, which records the machine and its load.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from refscore.distributions import Gaussian, GaussianMixture
from refscore.models import MLPScore
from refscore.sampling import ula

from .common import EPS, check_row, progress, save_figure, style

NAME = "backends"
TITLE = "NumPy, Numba and CUDA backends run the same chains"
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
    """Run the cuda backend in a subprocess (simulator unless a GPU is present).

    The subprocess's stderr is passed through, so its sampler progress bars (on a
    terminal) and any error show up; a failure raises with the exit code.
    """
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
        subprocess.run([sys.executable, "-c", _CUDA_SCRIPT, json.dumps([n, steps, step, seed]), out],
                       check=True, env=env, cwd=root, stdout=subprocess.DEVNULL)
        with open(out) as f:
            res = {k: np.array(v) for k, v in json.load(f).items()}
    return res, ("GPU" if gpu else "simulator")


def rel_dev(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    # 16 chains: the CUDA simulator runs each thread as a Python thread, and its cost grows
    # steeply with the thread count when the cores are shared
    n_agree, steps, step = 16, 100, 0.05
    rows = []
    tg = targets()
    bar = progress(desc="backends: cuda subprocess, then numpy/numba per target", total=1 + len(tg),
                   unit="run")
    cuda_x, where = run_cuda(n_agree, steps, step, seed)
    bar.update(1)
    devs, paths = {}, {}
    for name, t in tg.items():
        ref = ula(t, start(n_agree), step, steps, seed=seed, backend="numpy", record=1)
        nb = ula(t, start(n_agree), step, steps, seed=seed, backend="numba")
        bar.update(1)
        paths[name] = (ref.trace, nb.x)
        devs[name] = (rel_dev(nb.x, ref.x), rel_dev(cuda_x[name], ref.x))
        rows += [
            check_row(NAME, f"{name}: numba vs numpy, max rel dev after {steps} steps", devs[name][0],
                      "0 (round-off)", SOURCE, TOL, devs[name][0] <= TOL),
            check_row(NAME, f"{name}: cuda ({where}) vs numpy, max rel dev", devs[name][1],
                      "0 (round-off)", SOURCE, TOL, devs[name][1] <= TOL),
        ]
    bar.close()

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.15, 1]})
    ax = axes[0]
    names = list(devs)
    xs = np.arange(len(names))
    floor = 1e-18
    for k, (off, lab) in enumerate(((-0.2, "numba vs numpy"), (0.2, f"cuda ({where}) vs numpy"))):
        vals = np.array([devs[n][k] for n in names])
        nz = vals > 0
        ax.bar(xs[nz] + off, vals[nz] - floor, 0.38, bottom=floor, color=f"C{k}", label=lab)
        for x0 in xs[~nz] + off:  # exact zero: a marker on the axis, not a 1e-18 bar
            ax.plot([x0], [floor], marker="^", ms=12, color=f"C{k}", clip_on=False, zorder=5)
            ax.annotate("0\n(bitwise\nequal)", (x0, floor), xytext=(0, 12), textcoords="offset points",
                        ha="center", va="bottom", fontsize=9, color=f"C{k}")
    ax.axhline(TOL, color="k", ls="--", label=f"tolerance {TOL:g}")
    ax.axhline(EPS, color="0.5", ls=":", label=f"round-off ε = {EPS:.1e}")
    ax.plot([], [], ls="none", marker="^", ms=10, color="0.3", label="0 (bitwise equal)")
    ax.set_yscale("log")
    ax.set_ylim(floor, 1e-7)
    ax.set_xticks(xs, names)
    ax.set_ylabel(f"max rel. deviation after {steps} ULA steps")
    ax.set_title(f"Final states vs the NumPy reference ({n_agree} chains)")
    ax.legend(fontsize=9, loc="center", bbox_to_anchor=(0.5, 0.55))

    ax = axes[1]
    trace, nb_x = paths["mixture"]
    x0 = start(n_agree)
    for c in range(n_agree):
        full = np.vstack([x0[c], trace[:, c, :]])
        ax.plot(full[:, 0], full[:, 1], "-", color="0.6", lw=0.8, zorder=1,
                label="numpy trajectories" if c == 0 else None)
    ax.plot(x0[:, 0], x0[:, 1], "k.", ms=5, label="start")
    ax.plot(trace[-1, :, 0], trace[-1, :, 1], "o", ms=11, mfc="none", color="C2", mew=1.5,
            label="numpy, final")
    ax.plot(nb_x[:, 0], nb_x[:, 1], "x", ms=8, color="C0", mew=1.5, label="numba, final")
    ax.plot(cuda_x["mixture"][:, 0], cuda_x["mixture"][:, 1], "+", ms=12, color="C1", mew=1.5,
            label=f"cuda ({where}), final")
    ax.set_aspect("equal")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(f"mixture target: the same {n_agree} chains on every backend")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Backends: same noise, same chains (step 0.05, seed %d)" % seed)
    fig.tight_layout()
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
