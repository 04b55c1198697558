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
                 "mlp:refscore", "mlp:numpy", "mlp:memory", "mlp:scaling", "mlp:kernels-t1", "mlp:kernels-t2"):
        assert name in rep["results"], (name, rep["skipped"])
    # the loss kernels against their peers and limits, on 1 and 2 threads: every loss, the peer's value
    # and whole gradient equal to refscore's to round-off, times and limits positive, the fractions and
    # ratios what the times say, and a target row of each kind per loss and thread count
    for key, threads in (("mlp:kernels-t1", 1), ("mlp:kernels-t2", 2)):
        k = rep["results"][key]
        assert k["threads"] == threads and k["cpu_model"] and k["rates"]["fma_peak_per_s"] > 0
        assert sorted(r["loss"] for r in k["rows"]) == ["dsm", "esm", "ism", "ism generic", "ssm", "ssm_vr"]
        for r in k["rows"]:
            assert max(r["value_rel_gap"], r["grad_rel_gap"]) < 1e-10
            assert r["refscore_s"] > 0 and r["peer_s"] > 0 and r["limit_s"] > 0
            assert r["fraction_of_limit"] == pytest.approx(r["limit_s"] / r["refscore_s"], rel=1e-12)
            assert r["ratio_to_peer"] == pytest.approx(r["peer_s"] / r["refscore_s"], rel=1e-12)
            assert r["macs_per_point"] == bench._mlp_op_counts(r["loss"], r["sizes"])["macs"]
    kernel_targets = [t for t in rep["targets"] if t["target"].startswith("mlp kernel")]
    assert len(kernel_targets) == 3 * 6 * 2
    assert "MLP loss kernels" in proc.stdout and "of limit" in proc.stdout
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
                      (bench._numpy_ism_cyclic(layers, x), losses.ism(m, theta, x, grad=True)),
                      (bench._numpy_ssm(layers, x, v), losses.ssm(m, theta, x, v, grad=True)),
                      (bench._numpy_ssm(layers, x, v, variance_reduced=True), losses.ssm_vr(m, theta, x, v, grad=True)),
                      (bench._numpy_residual(layers, x, -x), losses.esm(m, theta, x, -x, grad=True)),
                      (bench._numpy_residual(layers, x + 0.3 * v, -v / 0.3), losses.dsm(m, theta, x, 0.3, v, grad=True))):
        assert ours[0] == pytest.approx(ref[0], rel=1e-12)
        np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=1e-12 * np.abs(ref[1]).max())


def test_mlp_cases_pair_each_kernel_with_its_peer():
    # the bench's pairs (refscore's call, its plain-NumPy peer) on the bench's own network, at a small
    # n: same value and whole gradient to round-off (1e-12 relative, as above)
    inp = bench._mlp_losses_inputs(30, 3)
    cases = bench._mlp_cases(inp)
    assert sorted(cases) == ["dsm", "esm", "ism", "ism generic", "ssm", "ssm_vr"]
    for loss, (ref, peer) in cases.items():
        (v0, g0), (v1, g1) = ref(), peer()
        assert v1 == pytest.approx(v0, rel=1e-12), loss
        np.testing.assert_allclose(g1, g0, rtol=0, atol=1e-12 * np.abs(g0).max(), err_msg=loss)


@pytest.mark.parametrize("sizes", [(10, 64, 64, 10), (3, 7, 5, 3), (2, 6, 5, 4, 2)])
def test_operation_counts_against_closed_forms(sizes):
    # the pass-by-pass, layer-by-layer counts (bench._mlp_op_counts) summed, against closed forms
    # derived again here from the kernels' equations: M = Σ M_l weights, H = Σ hidden widths
    d = sizes[0]
    L = len(sizes) - 1
    M = [sizes[l] * sizes[l - 1] for l in range(1, L + 1)]
    Mt, H = sum(M), sum(sizes[1:-1])
    prim = 3 * Mt - M[0]  # forward M, weight gradients M, backward products M - M_1
    want = {"esm": prim + H + 2 * d, "dsm": prim + H + 4 * d,
            "ssm": 2 * prim + 5 * H + 4 * d, "ssm_vr": 2 * prim + 5 * H + 4 * d}  # one projection
    # generic ISM: layer 1 primal only forward and in its gradient, all d + 1 rows elsewhere, the output's
    # tangent adjoints sparse (d h_{L-1} per output product), 2d + 2 per hidden unit in reverse
    hL = sizes[-2]
    inner = sum(M[1:-1])
    want["ism generic"] = (M[0] + (1 + d) * (inner + M[-1]) + d * H + 2 * d + 2 * (M[-1] + d * hL)
                           + (2 * d + 2) * H + 2 * (1 + d) * inner + M[0])
    if L == 3:
        h1, h2 = sizes[1], sizes[2]
        want["ism"] = prim + 3 * h1 * h2 + 4 * h1 + 4 * h2 + 2 * d
    for loss, total in want.items():
        counts = bench._mlp_op_counts(loss, list(sizes))
        assert counts["macs"] == total, loss
        assert counts["activations"] == H
        assert counts["per_call_macs"] == (3 * sizes[1] * d * sizes[2] + 3 * sizes[1] * sizes[2] if loss == "ism" else 0)
        assert {p for p, _, _ in counts["rows"]} <= {"forward", "tangent", "trace", "loss", "reverse"}
    if L != 3:
        with pytest.raises(ValueError, match="two hidden layers"):
            bench._mlp_op_counts("ism", list(sizes))
    with pytest.raises(ValueError, match="no operation count"):
        bench._mlp_op_counts("kl", list(sizes))


def test_limit_is_the_counted_arithmetic_at_the_measured_rates():
    counts = {"macs": 1000, "activations": 10, "per_call_macs": 500}
    # n points on T cores: n (1000 / F + 10 / E) / T, plus the per-call part on one core
    assert bench._mlp_limit_s(counts, 100, 2, 1e9, 1e8) == pytest.approx(100 * (1e-6 + 1e-7) / 2 + 5e-7, rel=1e-15)


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
