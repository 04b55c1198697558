"""Smoke tests of ``refscore bench`` (no timing assertions: timings are the benchmark's job).

The harness lives in the repository's ``benchmarks/`` folder (not installed
with the package); these tests import it from there, and check that the CLI
finds it from a clone and says clearly where it lives when it cannot.

The quick run times tiny workloads of refscore and the plain-NumPy baselines
in subprocesses (JAX and torch skipped to stay fast); what is checked is the
plumbing and the numbers that are not timings: every worker ran, the JSON has
the machine facts, the plain-NumPy MLP baselines compute the same loss and
gradient as refscore, and existing files are not overwritten without --force.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from refscore import cli, losses
from refscore.models import MLPScore

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
import bench  # noqa: E402  (benchmarks/bench.py)

#: benchmark plumbing: subprocess workers and a quick run (CI runs the slow tier)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out, fig = tmp / "b.json", tmp / "b.png"
    proc = subprocess.run(
        [sys.executable, "-m", "refscore", "bench", "--quick", "--no-peers", "--repeat", "1",
         "--json", str(out), "--figure", str(fig)],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    return proc, out, fig


def test_quick_run_writes_json_table_and_figure(quick_run):
    proc, out, fig = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(out.read_text())
    for name in ("langevin:numba", "langevin:numpy-backend", "langevin:plain", "langevin:noise",
                 "mlp:refscore", "mlp:numpy", "mlp:memory", "mlp:scaling"):
        assert name in rep["results"], (name, rep["skipped"])
    for name in ("langevin:jax", "langevin:torch", "mlp:torch", "mlp:jax"):
        assert rep["skipped"][name] == "--no-peers"
    m = rep["machine"]
    assert m["cores"] >= 1 and m["cpu_model"] and m["versions"]["numpy"] == np.__version__
    # the plain-NumPy baseline is an independent implementation: same loss and
    # gradient (probe) as refscore, to round-off (sums of 1e3 terms, ~1e-15 each)
    assert rep["mlp_value_max_rel_gap"] < 1e-10
    assert all(r["chain_steps_per_s"] > 0 for r in rep["results"]["langevin:numba"])
    assert rep["results"]["mlp:memory"]["tracemalloc_peak_bytes_generic"] > 0
    assert "ULA chain-steps/s" in proc.stdout and "MLPScore (64, 64)" in proc.stdout
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each family's first call, in its own process and empty cache, beside the trivial prange compile
    families = rep["results"]["compile:families"]
    assert len(families) == 2 and all(r["first_call_s"] > 0 and r["trivial_prange_s"] > 0 for r in families)
    assert all(abs(r["ratio"] - r["first_call_s"] / r["trivial_prange_s"]) < 1e-12 for r in families)
    assert "x trivial prange" in proc.stdout


def test_refuses_to_clobber(tmp_path):
    out = tmp_path / "b.json"
    out.write_text("keep")
    rc = bench.main(["--quick", "--json", str(out), "--no-figure"])
    assert rc == 2 and out.read_text() == "keep"


@pytest.mark.parametrize("d", [1, 3])
def test_numpy_baselines_match_refscore(d):
    # independent hand-written forward-mode loss + gradient vs refscore's fused
    # kernels: the same float64 arithmetic in a different order, so agreement
    # to ~1e-13 relative (a few hundred round-offs of 1e-16 each)
    rng = np.random.default_rng(d)
    x = rng.standard_normal((40, d))
    v = losses.projections(rng, (40, d), kind="gaussian")
    m = MLPScore(d, (5, 4), "tanh")
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    layers = m.unpack(theta)
    for ours, ref in ((bench._numpy_ism(layers, x), losses.ism(m, theta, x, grad=True)),
                      (bench._numpy_ssm(layers, x, v), losses.ssm(m, theta, x, v, grad=True))):
        assert ours[0] == pytest.approx(ref[0], rel=1e-12)
        np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=1e-12 * np.abs(ref[1]).max())


def test_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["--repeat", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--only", "gpu"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_rss_growth_sees_a_transient_allocation():
    # 80 MB touched then freed inside the call: the high-water mark must see it
    # (page granularity and allocator slack: within a few MB)
    def transient():
        a = np.ones(10_000_000)
        a[::512] = 2.0
        del a

    grew = bench._peak_rss_growth(transient)
    if grew is None:
        pytest.skip("/proc/self/clear_refs not writable here")
    assert 76e6 <= grew <= 90e6


def test_cuda_worker_runs_in_the_simulator():
    # the GPU worker's plumbing (probe kernels, sampler calls, limit and fraction)
    # on numba's CUDA simulator, at toy sizes: its timings mean nothing there, so
    # only the structure and the arithmetic of the report are checked
    pytest.importorskip("numba.cuda")
    code = (
        f"import json, sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import bench\n"
        "cfg = {'cuda_sizes': [3], 'steps': 2, 'repeat': 1, 'cuda_probe_threads_per_sm': 4, 'cuda_probe_reps': 2}\n"
        "print(json.dumps(bench._langevin_cuda(cfg)))\n"
    )
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["workload"], r["N"]) for r in rows] == [("W1", 3), ("W2", 3)]
    for r, (K, d) in zip(rows, [(2, 2), (5, 10)]):
        assert r["fma_per_s"] > 0 and r["exp_per_s"] > 0 and np.isfinite(r["mean_x0"])
        lim = 1.0 / (K / r["exp_per_s"] + (5 * K + 104) * d / r["fma_per_s"])
        assert r["limit_chain_steps_per_s"] == pytest.approx(lim, rel=1e-12)
        assert r["fraction"] == pytest.approx(r["chain_steps_per_s"] / lim, rel=1e-12)
    # and the simulator is not mistaken for a GPU by the orchestrator
    check = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); "
                            "import bench; print(bench._cuda_gpu())"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert check.stdout.strip() == "False"


def test_cli_finds_the_harness_next_to_the_package(capsys):
    # a clone installed with pip install -e .: benchmarks/ sits next to refscore/
    assert cli._bench_dirs()[0] == BENCH_DIR
    with pytest.raises(SystemExit) as exc:  # the harness's own argparse answers --help
        cli.main(["bench", "--help"])
    assert exc.value.code == 0 and "usage: refscore bench" in capsys.readouterr().out


def test_cli_reports_a_missing_harness(tmp_path, monkeypatch, capsys):
    # an installed wheel: no benchmarks/ next to the package nor in the working directory
    monkeypatch.setattr(cli, "_bench_dirs", lambda: [tmp_path / "site-packages" / "benchmarks",
                                                     tmp_path / "benchmarks"])
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("refscore bench: error:")
    assert "benchmarks/" in err and "not installed" in err and "clone" in err


def test_forwarding_scripts_use_the_harness(tmp_path):
    # python benchmarks/langevin.py and mlp_losses.py forward to the harness (its --help answers)
    for script in ("langevin.py", "mlp_losses.py"):
        proc = subprocess.run([sys.executable, str(BENCH_DIR / script), "--help"], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0 and "usage: refscore bench" in proc.stdout, proc.stderr[-2000:]
