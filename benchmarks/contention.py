r"""``refscore bench --contention``: the hot paths alone and beside competing processes.

On a shared machine (``pytest -n 2``, a CI runner, a laptop) other runnable
threads compete for the cores.  A fair scheduler then gives a process with
``T`` threads, among ``R`` runnable threads on ``C`` cores, ``C·T/R`` cores
where alone it used ``min(T, C)``, so its *fair-share slowdown* is

.. math::

    f = \max\Big(1,\ \frac{R\,\min(T, C)}{C\,T}\Big).

Each hot path (refscore's and its peers': plain NumPy, and torch when
installed) is timed alone and beside each competitor mix; the report gives the
measured slowdown (median call time under the mix over the median alone) next
to ``f``.  The target: every refscore hot path within 1.25 f, and ahead of
its peers under the same mix.  Every measurement runs in a fresh process:
the measured worker loads and warms up first, the competitors start, and one
second later the worker times calls for a fixed number of seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

#: hot path -> (threads it uses, description)
HOT_PATHS = {
    "ism:refscore": "ISM + gradient, MLPScore (64, 64) tanh, d = 10, n = 10⁴, Numba kernel",
    "ism:numpy": "the same with MLPScore(backend='numpy') (plain NumPy, BLAS one thread)",
    "ism:torch": "the same loss and gradient in torch autograd (double backward for the trace)",
    "ula:refscore": "ULA, 10⁵ chains x 20 steps on a 2-d mixture, Numba backend",
    "ula:numpy": "the same on the NumPy backend",
}

#: competitor mix -> list of competitor kinds (one process each)
MIXES = {
    "python x2": ["python", "python"],
    "refscore": ["refscore"],
    "blas loop": ["blas"],
    "mix": ["refscore", "refscore", "blas", "python", "python"],
}

_TORCH_THREADS_NOTE = "torch loop when torch is installed, else a NumPy BLAS matmul loop; both multi-threaded"


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _competitor_threads(kind, cores):
    return 1 if kind == "python" else cores


def fair_share_slowdown(own_threads, competitor_threads, cores):
    """``max(1, R·min(T, C)/(C·T))`` with ``R = T + Σ competitor threads``."""
    R = own_threads + sum(competitor_threads)
    return max(1.0, R * min(own_threads, cores) / (cores * own_threads))


# ------------------------------------------------------------------ the hot paths (in a worker)
def _hot_path(name):
    """``(call, threads)`` of a hot path, warmed up."""
    cores = _cores()
    if name.startswith("ism:"):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((10_000, 10))
        if name == "ism:torch":
            import torch

            torch.set_num_threads(cores)
            from refscore.models import MLPScore

            m = MLPScore(10, (64, 64), "tanh", backend="numpy")
            layers = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
                      for W, b in m.unpack(m.init(0))]
            X = torch.tensor(x, requires_grad=True)

            def call():
                h = X
                for W, b in layers[:-1]:
                    h = torch.tanh(h @ W.T + b)
                s = h @ layers[-1][0].T + layers[-1][1]
                tr = sum(torch.autograd.grad(s[:, j].sum(), X, create_graph=True)[0][:, j] for j in range(10))
                loss = (tr + 0.5 * (s * s).sum(1)).mean()
                torch.autograd.grad(loss, [p for layer in layers for p in layer])
            call()
            return call, cores
        import refscore as rs

        m = rs.MLPScore(10, (64, 64), "tanh", backend="numba" if name == "ism:refscore" else "numpy")
        theta = m.init(0)

        def call():
            rs.ism(m, theta, x, grad=True)
        call()
        return call, (cores if name == "ism:refscore" else 1)
    import refscore as rs

    p = rs.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2)] * 2)
    x0 = np.zeros((100_000, 2))
    backend = "numba" if name == "ula:refscore" else "numpy"

    def call():
        rs.ula(p, x0, 0.05, 20, seed=1, backend=backend, progress=False)
    call()
    return call, (cores if backend == "numba" else 1)


def _worker(name, seconds):
    call, threads = _hot_path(name)
    print("READY", flush=True)
    sys.stdin.readline()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(json.dumps({"median_s": float(np.median(times)), "calls": len(times), "threads": threads}), flush=True)


def _compete(kind, seconds):
    end = time.time() + seconds
    if kind == "python":
        while time.time() < end:
            pass
    elif kind == "refscore":
        call, _ = _hot_path("ism:refscore")
        while time.time() < end:
            call()
    else:  # a multi-threaded matmul loop: torch if installed, else NumPy's BLAS
        try:
            import torch

            torch.set_num_threads(_cores())
            a = torch.randn(512, 512, dtype=torch.float64)
            while time.time() < end:
                a @ a
        except ImportError:
            a = np.random.default_rng(0).standard_normal((512, 512))
            while time.time() < end:
                a @ a


# ------------------------------------------------------------------ the driver
def _spawn(args, env=None):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def measure(name, mix, seconds):
    """Median call time of hot path ``name`` beside the competitors of ``mix`` (a MIXES key or None)."""
    worker = _spawn(["--worker", name, str(seconds)])
    line = worker.stdout.readline()
    if line.strip() != "READY":
        worker.kill()
        raise RuntimeError(f"worker {name} failed to start")
    comps = [_spawn(["--compete", kind, str(seconds + 30)]) for kind in (MIXES[mix] if mix else [])]
    try:
        time.sleep(1.0 if comps else 0.0)
        if comps and "refscore" in MIXES[mix]:
            time.sleep(2.0)  # the refscore competitors load their kernels first
        worker.stdin.write("go\n")
        worker.stdin.flush()
        out = json.loads(worker.stdout.readline())
    finally:
        for c in comps:
            c.kill()
        for c in comps:
            c.wait()
        worker.wait()
    return out


def run(seconds=3.0, paths=None, mixes=None, log=sys.stderr):
    """Every hot path alone and beside every mix; returns the report (a dict)."""
    cores = _cores()
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    paths = [p for p in (paths or HOT_PATHS) if have_torch or not p.endswith(":torch")]
    mixes = list(mixes or MIXES)
    rows = []
    for name in paths:
        alone = measure(name, None, seconds)
        print(f"[contention] {name} alone: {1e3 * alone['median_s']:.1f} ms", file=log, flush=True)
        for mix in mixes:
            m = measure(name, mix, seconds)
            comp_threads = [_competitor_threads(k, cores) for k in MIXES[mix]]
            fair = fair_share_slowdown(alone["threads"], comp_threads, cores)
            slow = m["median_s"] / alone["median_s"]
            rows.append({"path": name, "mix": mix, "alone_ms": 1e3 * alone["median_s"],
                         "mixed_ms": 1e3 * m["median_s"], "slowdown": slow, "fair_share": fair,
                         "ratio_to_fair": slow / fair, "threads": alone["threads"],
                         "runnable_threads": alone["threads"] + sum(comp_threads)})
            print(f"[contention] {name} | {mix}: {1e3 * m['median_s']:.1f} ms, slowdown {slow:.2f} "
                  f"(fair {fair:.2f})", file=log, flush=True)
    return {"cores": cores, "seconds_per_measurement": seconds, "competitors": {
        "python": "a pure-Python busy loop (1 thread)", "refscore": "another process running ism:refscore",
        "blas": _TORCH_THREADS_NOTE}, "mixes": MIXES, "hot_paths": {p: HOT_PATHS[p] for p in paths},
        "rows": rows, "targets": targets(rows)}


def targets(rows):
    """Each refscore path within 1.25x its fair share, and faster than its peers under every mix."""
    out = []
    by = {(r["path"], r["mix"]): r for r in rows}
    for r in rows:
        if not r["path"].endswith(":refscore"):
            continue
        out.append({"target": f"{r['path']} | {r['mix']}: slowdown <= 1.25 x fair share",
                    "value": r["ratio_to_fair"], "met": r["ratio_to_fair"] <= 1.25})
        kind = r["path"].split(":")[0]
        for peer in ("numpy", "torch"):
            p = by.get((f"{kind}:{peer}", r["mix"]))
            if p is not None:
                out.append({"target": f"{r['path']} | {r['mix']}: faster than {kind}:{peer}",
                            "value": p["mixed_ms"] / r["mixed_ms"], "met": r["mixed_ms"] < p["mixed_ms"]})
    return out


def table(report):
    """The report as text lines."""
    lines = [f"contention ({report['cores']} cores): median ms per call, slowdown vs alone, fair-share slowdown",
             f"{'hot path':<14} {'mix':<10} {'alone':>8} {'mixed':>8} {'slowdown':>9} {'fair':>6} {'ratio':>6}"]
    for r in report["rows"]:
        lines.append(f"{r['path']:<14} {r['mix']:<10} {r['alone_ms']:8.1f} {r['mixed_ms']:8.1f} "
                     f"{r['slowdown']:9.2f} {r['fair_share']:6.2f} {r['ratio_to_fair']:6.2f}")
    met = sum(t["met"] for t in report["targets"])
    lines.append(f"targets met: {met} of {len(report['targets'])}")
    lines += [f"  {'ok  ' if t['met'] else 'MISS'} {t['target']} ({t['value']:.2f})" for t in report["targets"]]
    return lines


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        _worker(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "--compete":
        _compete(sys.argv[2], float(sys.argv[3]))
