"""Unit tests of each validation experiment's core computation, at small size.

The full experiments run in ``python -m validation --quick`` (CI runs it after
the tests); here each module's central formula is checked against an
independent route.
"""
import inspect
import itertools
import sys
import types

import numpy as np
import pytest
from scipy import integrate

from refscore.distributions import Gaussian
from refscore.models import GaussianModel, LinearScore
from refscore.validation import (backends, equivalence, hyvarinen, mlp_mixture, ncsn_toy, runner, sliced,
                                 ula_bias, vincent)
from refscore.validation import common
from refscore.validation.common import Row, check_row


def test_hyvarinen_fit_equals_closed_form():
    x = Gaussian(hyvarinen.MEAN, hyvarinen.COV).sample(400, rng=3)
    mu, L = GaussianModel(3).unpack(hyvarinen.fit_ism(x))
    xbar, prec = hyvarinen.closed_form(x)
    # L-BFGS stops at gtol 1e-13 on a well-conditioned quadratic-like objective:
    # parameters agree to ~1e-8; 1e-6 leaves margin for the optimiser's path
    np.testing.assert_allclose(mu, xbar, atol=1e-6)
    np.testing.assert_allclose(L @ L.T, prec, rtol=1e-6, atol=1e-6)
    # the closed form is the biased covariance: compare with an explicit sum
    S = (x - xbar).T @ (x - xbar) / len(x)
    np.testing.assert_allclose(np.linalg.inv(prec), S, rtol=1e-10)


@pytest.mark.parametrize("model", [GaussianModel(2), LinearScore(2)])
def test_equivalence_constants(model):
    ts = np.array([0.0, 0.5, 1.0])
    ticks = []
    esm, ism, ssm, ssm_vr, dsm, esm_s = equivalence.curves(model, ts, [0.2], tick=lambda: ticks.append(1))
    assert len(ticks) == equivalence.n_evaluations(ts, [0.2])
    T = equivalence.TARGET
    half_tr_prec = 0.5 * np.trace(np.linalg.inv(T.cov))  # ½ E‖∇log p‖² = ½ tr Σ⁻¹
    # exact quadrature of degree-2 polynomials: agreement to round-off
    np.testing.assert_allclose(esm - half_tr_prec, ism, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ssm, ism, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ssm_vr, ism, rtol=1e-12, atol=1e-12)
    s2 = np.linalg.inv(T.cov + 0.04 * np.eye(2))
    const = 0.5 * (2 / 0.04 - np.trace(s2))  # docs/derivations.md §7.6, Gaussian closed form
    np.testing.assert_allclose(dsm[0.2] - const, esm_s[0.2], rtol=1e-11)


def test_vincent_population_minimiser_is_noised_covariance():
    model = GaussianModel(2)
    dist = Gaussian(vincent.MEAN, vincent.COV)
    cov = vincent.learned_cov(model, vincent.fit_population(model, dist, 0.5))
    np.testing.assert_allclose(cov, vincent.COV + 0.25 * np.eye(2), rtol=1e-7)


def _rademacher_variance(C):
    vs = np.array(list(itertools.product([-1.0, 1.0], repeat=C.shape[0])))
    q = np.einsum("ki,ij,kj->k", vs, C, vs)
    return q.var()


def test_sliced_variance_closed_forms():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(3, 3))
    # Rademacher: exact by enumerating the 2^d sign vectors
    assert sliced.quadratic_form_variance(C, "rademacher") == pytest.approx(_rademacher_variance(C),
                                                                             rel=1e-12)
    # Gaussian: Isserlis, E[(vᵀCv)²] = (tr C)² + 2‖C_s‖², checked by Monte Carlo-free
    # Gauss–Hermite (degree 4 in v: order 3 per axis is exact)
    from numpy.polynomial.hermite_e import hermegauss
    z, w = hermegauss(3)
    w = w / w.sum()
    grid = np.array(list(itertools.product(z, repeat=3)))
    wt = np.prod(np.array(list(itertools.product(w, repeat=3))), axis=1)
    q = np.einsum("ki,ij,kj->k", grid, C, grid)
    var_gh = wt @ q**2 - (wt @ q) ** 2
    assert sliced.quadratic_form_variance(C, "gaussian") == pytest.approx(var_gh, rel=1e-12)


def test_sliced_sphere_variance_by_angle_quadrature():
    # d = 2: v = √2 (cos t, sin t), t uniform; integrate the variance over the angle
    C = np.array([[1.3, -0.4], [0.9, 0.2]])

    def q(t):
        v = np.sqrt(2) * np.array([np.cos(t), np.sin(t)])
        return v @ C @ v

    m1 = integrate.quad(q, 0, 2 * np.pi)[0] / (2 * np.pi)
    m2 = integrate.quad(lambda t: q(t) ** 2, 0, 2 * np.pi)[0] / (2 * np.pi)
    assert m1 == pytest.approx(np.trace(C), rel=1e-12)
    assert sliced.quadratic_form_variance(C, "sphere") == pytest.approx(m2 - m1**2, rel=1e-10)


def test_sliced_empirical_variance_matches_rademacher_enumeration():
    # the estimator code path at one point against the exact enumeration of v
    from refscore.models import MLPScore

    m = MLPScore(3, (4,), "tanh")
    th = m.init(1)
    x = np.array([0.3, -0.2, 0.5])
    A = m.score_jacobian(th, x)
    var, se = sliced.empirical_variance(m, th, x, "rademacher", 1, 40_000, np.random.default_rng(2),
                                        vr=True)
    assert abs(var - _rademacher_variance(A)) <= 5 * se  # 5 standard errors of the sample variance


def test_ula_stationary_cov_solves_lyapunov():
    eta = 0.3
    C = ula_bias.ula_stationary_cov(ula_bias.COV, eta)
    lam = np.linalg.inv(ula_bias.COV)
    M = np.eye(2) - eta * lam
    np.testing.assert_allclose(M @ C @ M.T + 2 * eta * np.eye(2), C, rtol=1e-12)


def test_ula_cov_z_detects_wrong_covariance():
    x = Gaussian([0, 0], ula_bias.COV).sample(50_000, rng=1)
    assert ula_bias.cov_z(x, ula_bias.COV) < 5
    assert ula_bias.cov_z(x, 1.2 * ula_bias.COV) > 10


def test_ncsn_toy_small_run():
    from refscore.metrics import mode_weights
    from refscore.sampling import annealed_langevin

    assert ncsn_toy.STEP == pytest.approx(0.05)  # NCSN ε = 0.1 in x + (α/2)s + √α z
    x0 = np.random.default_rng(0).uniform(-8, 8, size=(1500, 2))
    r = annealed_langevin(ncsn_toy.TARGET.perturbed(), x0, ncsn_toy.SIGMAS, ncsn_toy.STEP, 100,
                          seed=1, backend="numba")
    # 0.8 ± (bias ≈ 0.015 + 4 binomial SE ≈ 0.04)
    assert abs(mode_weights(r.x, ncsn_toy.MEANS)[1] - 0.8) < 0.06


def test_mlp_mixture_reference_levels():
    assert mlp_mixture.fisher_divergence(mlp_mixture.TARGET.score) == pytest.approx(0, abs=1e-14)
    # best Gaussian N(0, diag(5,1)): Fisher divergence ≈ 0.26 (see tests/test_training.py)
    assert 0.2 < mlp_mixture.fisher_divergence(mlp_mixture.BEST_GAUSSIAN.score) < 0.3


def test_backends_numba_matches_numpy_small():
    from refscore.sampling import ula

    for t in backends.targets().values():
        a = ula(t, backends.start(16), 0.05, 20, seed=3, backend="numpy").x
        b = ula(t, backends.start(16), 0.05, 20, seed=3, backend="numba").x
        assert backends.rel_dev(b, a) <= backends.TOL


def test_runner_report_and_errors(tmp_path):
    rows = [check_row("e", "q", 1.23456, "1.2", "src", 0.1, True), Row("e", "q2", "x", "y", "s", "t", False)]
    text = runner.render_report(rows, quick=True, seed=0, seconds={"e": 1.0})
    assert "| e | q | 1.235 | 1.2 | src | 0.1 | PASS |" in text
    assert "| e | q2 | x | y | s | t | FAIL |" in text
    assert "1 passed, 1 failed" in text
    with pytest.raises(SystemExit):
        runner.main(["--only", "no_such_experiment", "--out-dir", str(tmp_path)])


# ----------------------------------------------------------------- counted cost (sliced)
@pytest.mark.parametrize("d", [2, 7, 50, 300])
@pytest.mark.parametrize("hidden", [(64, 64, 64), (8, 16, 4, 32)])
@pytest.mark.parametrize("m", [1, 3])
def test_sliced_counted_ratio_is_exactly_one_plus_d_over_one_plus_m(d, hidden, m):
    from fractions import Fraction

    from refscore.models import MLPScore

    model = MLPScore(d, hidden=hidden, trace_path="forward")
    assert Fraction(sliced.ism_cost(model), sliced.ssm_cost(model, m)) == Fraction(1 + d, 1 + m)


@pytest.mark.parametrize("d, hidden, path", [
    (5, (64, 64, 64), "forward"), (100, (64, 64, 64), "auto"), (100, (64, 32, 16), "cyclic"),
    (3, (64, 64, 64), "auto"), (4, (8, 8), "auto"), (4, (8,), "auto"),
])
def test_sliced_count_model_follows_the_implementation(d, hidden, path):
    # the counted chain (tangents r, matrix shapes) is the one MLPScore's exact trace runs
    from refscore.models import MLPScore

    model = MLPScore(d, hidden=hidden, trace_path=path)
    resolved = sliced.resolved_trace_path(model)
    assert resolved == model._path()
    if resolved == "fast":
        assert sliced.tangent_chain(model, resolved) == (0, [])
        return
    fac, r = model._chain(model._unpack(model.init(0)), resolved)
    assert sliced.tangent_chain(model, resolved) == (r, [f[1].shape for f in fac if f[0] == "W"])


def test_sliced_cost_ratio_grows_like_d_on_the_forward_path_only():
    dims = (10, 20, 50, 100, 200)
    table = sliced.cost_table(dims, (64, 64, 64), 1)
    fwd = np.array([t[0] / t[2] for t in table])
    auto = np.array([t[1] / t[2] for t in table])
    assert np.polyfit(np.log(dims), np.log(fwd), 1)[0] > 0.9
    # the cyclic route (auto, d > h1 = 64) carries h1 tangents: the ratio stops growing
    assert auto[-1] < auto[-2] < fwd[-2]


def test_no_row_depends_on_wall_clock_time():
    from refscore.validation import runner as r

    for name in r.EXPERIMENTS:
        src = inspect.getsource(sys.modules.get(f"refscore.validation.{name}")
                                or __import__(f"refscore.validation.{name}", fromlist=["run"]))
        for clock in ("perf_counter", "time.time", "monotonic", "process_time"):
            assert clock not in src, f"{name} reads the clock ({clock})"


# ----------------------------------------------------------------- figures and progress
def test_log_with_zeros_draws_exact_zeros_on_the_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    n0 = common.log_with_zeros(ax, [1, 2, 3], [1e-16, 0.0, 3e-16], 1e-18, label="dev")
    assert n0 == 1
    lines = ax.get_lines()
    assert list(lines[0].get_ydata()) == [1e-16, 3e-16]  # no fake tiny value for the zero
    assert list(lines[1].get_ydata()) == [1e-18] and "0 (bitwise equal)" in lines[1].get_label()
    assert ax.get_ylim()[0] == pytest.approx(1e-18)
    plt.close(fig)


def test_mlp_mixture_progress_wrapper_changes_nothing():
    from refscore.models import MLPScore
    from refscore.training import fit

    class Counter:
        n = 0

        def update(self, k):
            self.n += k

    model = MLPScore(2, (6,), "tanh", backend="numpy")
    x = mlp_mixture.TARGET.sample(200, rng=0)
    bar = Counter()
    a = fit(model, "ssm_vr", x, steps=7, lr=1e-2, batch=64, rng=3)
    b = fit(mlp_mixture.ticking(model, bar), "ssm_vr", x, steps=7, lr=1e-2, batch=64, rng=3)
    assert bar.n == 7
    np.testing.assert_array_equal(a.theta, b.theta)


# ----------------------------------------------------------------- where the runner writes
@pytest.fixture
def fake_suite(monkeypatch):
    """The runner with one instant experiment that writes a figure and two rows."""
    def run(quick, seed, fig_dir):
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / "fake_exp.png").write_bytes(b"png")
        return [check_row("fake_exp", "q", 1.0, "1", "src", "0", True),
                check_row("fake_exp", "r", 2.0, "2", "src", "0", True)]

    mod = types.ModuleType("refscore.validation.fake_exp")
    mod.run = run
    monkeypatch.setitem(sys.modules, "refscore.validation.fake_exp", mod)
    monkeypatch.setattr(runner, "EXPERIMENTS", ("fake_exp",))
    monkeypatch.setattr(runner, "_available", lambda: ["fake_exp"])
    return mod


def test_runner_default_out_dir_is_outside_the_tree(fake_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert runner.main(["--quick", "--no-progress"]) == 0
    assert (tmp_path / "validation-out" / "validation" / "REPORT.md").is_file()
    assert (tmp_path / "validation-out" / "figures" / "fake_exp.png").is_file()
    assert not (tmp_path / "figures").exists() and not (tmp_path / "validation").exists()
    err = capsys.readouterr().err
    assert "[1/1] fake_exp: started" in err and "[1/1] fake_exp: finished in" in err


def test_runner_refuses_to_overwrite_without_force(fake_suite, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()  # an existing empty directory (CI's mktemp -d) needs no flag
    assert runner.main(["--out-dir", str(out), "--no-progress"]) == 0
    report = out / "validation" / "REPORT.md"
    report.write_text("keep me")
    capsys.readouterr()
    assert runner.main(["--out-dir", str(out), "--no-progress"]) == 2
    assert report.read_text() == "keep me"
    assert "--force" in capsys.readouterr().err
    # a figure alone is protected too
    report.unlink()
    assert runner.main(["--out-dir", str(out), "--no-progress"]) == 2
    assert not report.exists()
    assert runner.main(["--out-dir", str(out), "--no-progress", "--force"]) == 0
    assert "| fake_exp | q | 1 | 1 | src | 0 | PASS |" in report.read_text()


def test_runner_help_names_the_default_and_force(capsys):
    with pytest.raises(SystemExit):
        runner.main(["--help"])
    out = capsys.readouterr().out
    assert "validation-out" in out and "--force" in out and "--out-dir . --force" in out


def test_ula_small_step_plan_scales_as_derived():
    # n = 2 (z C_min / (eta/2))^2 chains, k = 3/(eta lambda_min) steps from exact draws
    from refscore.validation.ula_bias import COV, small_step_plan, ula_stationary_cov

    n, k, start = small_step_plan(1e-2, 6.0)
    c_min = np.min(np.diag(ula_stationary_cov(COV, 1e-2)))
    lam_min = np.linalg.eigvalsh(np.linalg.inv(COV)).min()
    assert n == int(np.ceil(2 * (6.0 * c_min / 5e-3) ** 2)) and 2.8e6 < n < 3.0e6
    assert k == int(np.ceil(3.0 / (1e-2 * lam_min))) and start == "exact draws of p"
    n3, k3, start3 = small_step_plan(1e-3, 10.0)  # the cluster-sized case: no per-chain start states
    assert start3 == "the mean" and 7.9e8 < n3 < 8.1e8 and 1e13 < n3 * k3 < 1.2e13


# ----------------------------------------------------------------- the output directory is published whole
def _previous_run(out):
    """An output directory holding a complete earlier run (report and figure) and a file of someone else's."""
    (out / "validation").mkdir(parents=True)
    (out / "figures").mkdir()
    (out / "validation" / "REPORT.md").write_text("old report")
    (out / "figures" / "fake_exp.png").write_bytes(b"old png")
    (out / "figures" / "other.png").write_bytes(b"not ours")
    return {"validation/REPORT.md": b"old report", "figures/fake_exp.png": b"old png", "figures/other.png": b"not ours"}


def _tree(out):
    """``{relative path: bytes}`` of every file under ``out``, hidden temporaries included."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_runner_force_replaces_the_run_whole(fake_suite, tmp_path, capsys):
    out = tmp_path / "out"
    before = _previous_run(out)
    assert runner.main(["--out-dir", str(out), "--no-progress", "--force"]) == 0
    after = _tree(out)
    assert set(after) == set(before)  # no temporary directory or file left behind
    assert after["figures/fake_exp.png"] == b"png" and after["figures/other.png"] == b"not ours"
    assert b"| fake_exp | q | 1 | 1 | src | 0 | PASS |" in after["validation/REPORT.md"]


def test_runner_figure_write_failing_part_way_leaves_no_truncated_figure(fake_suite, tmp_path, capsys):
    def run(quick, seed, fig_dir):
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / "fake_exp.png").write_bytes(b"\x89PNG trunc")  # savefig stopped by a full disk
        raise OSError(28, "No space left on device")

    fake_suite.run = run
    out = tmp_path / "out"
    before = _previous_run(out)
    assert runner.main(["--out-dir", str(out), "--no-progress", "--force"]) == 1
    after = _tree(out)
    # the new run is complete: its report says the experiment failed and no figure of it exists,
    # neither a truncated one nor the previous run's (which would not match the report)
    assert set(after) == {"validation/REPORT.md", "figures/other.png"}
    assert b"raised OSError" in after["validation/REPORT.md"] and after["figures/other.png"] == before["figures/other.png"]


def test_runner_failed_publication_keeps_the_previous_run(fake_suite, tmp_path, capsys, monkeypatch):
    from refscore import _files

    real = _files.write_files_atomically

    def disk_full(writers):  # the report is written, then the disk fills up on the figure
        def fail(f):
            f.write(b"\x89PNG part")
            raise OSError(28, "No space left on device")
        return real({p: (fail if p.suffix == ".png" else w) for p, w in writers.items()})

    monkeypatch.setattr(_files, "write_files_atomically", disk_full)
    out = tmp_path / "out"
    before = _previous_run(out)
    capsys.readouterr()
    assert runner.main(["--out-dir", str(out), "--no-progress", "--force"]) == 2
    assert _tree(out) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m validation: error: cannot write") and "no space left on device" in err[-1]
    assert "nothing was written" in err[-1]


@pytest.mark.parametrize("sig, status, word", [(None, 130, "interrupted"), ("TERM", 143, "terminated")])
def test_runner_interrupted_mid_run_keeps_the_previous_run(fake_suite, tmp_path, capsys, sig, status, word):
    import os
    import signal

    def run(quick, seed, fig_dir):
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / "fake_exp.png").write_bytes(b"new png")
        if sig is None:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
        for _ in range(1000):
            pass
        return []

    class Unhandled(Exception):
        pass

    def fallback(signum, frame):  # only reached when the runner does not handle SIGTERM itself
        raise Unhandled

    fake_suite.run = run
    out = tmp_path / "out"
    before = _previous_run(out)
    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        rc = runner.main(["--out-dir", str(out), "--no-progress", "--force"])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped runner.main")
    finally:
        assert signal.signal(signal.SIGTERM, previous) is fallback  # the runner restored it
    assert rc == status
    assert _tree(out) == before  # the old complete run, no new figure beside the old report
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"python -m validation: {word}; nothing was written"


def test_runner_unwritable_out_dir_is_one_line(fake_suite, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, reason in [(a_file / "out", "not a directory"), (a_file, "is not a directory")]:
        rc = runner.main(["--out-dir", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m validation: error:"), err
        assert str(out) in lines[0] and reason in lines[0], lines[0]
    # a directory the OS refuses to write into (what mode 0o555 does to a non-root user)
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    out = tmp_path / "new" / "out"
    rc = runner.main(["--out-dir", str(out), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and str(out) in lines[0] and "permission denied" in lines[0], lines
    assert not out.exists()  # the directory this run created is not left behind


def test_refscore_validate_unwritable_out_dir_is_one_line(fake_suite, tmp_path, capsys):
    from refscore import cli

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc = cli.main(["validate", "--out-dir", str(a_file / "out"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith("refscore validate: error: cannot create --out-dir") and "not a directory" in lines[0]


def test_report_escapes_pipes_so_every_row_has_seven_cells():
    """A quantity such as ``max |z|`` used to split its row into extra cells (the table rendered broken)."""
    import re

    rows = [check_row("ula_bias", "cov vs (Λ−ηΛ²/2)⁻¹, max |z|", 1.5, "0", "src | other", "5 SE", True)]
    text = runner.render_report(rows, quick=True, seed=0, seconds={"ula_bias": 1.0})
    line = next(l for l in text.splitlines() if l.startswith("| ula_bias | cov"))
    cells = re.split(r"(?<!\\)\|", line)[1:-1]  # split on unescaped pipes, as Markdown does
    assert len(cells) == 7, cells
    assert cells[1].strip() == r"cov vs (Λ−ηΛ²/2)⁻¹, max \|z\|"


def test_report_says_how_the_dask_rows_ran(monkeypatch):
    import importlib.util

    rows = [check_row("e", "q", 1.0, "1", "src", 0.1, True)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    text = runner.render_report(rows, quick=True, seed=0, seconds={"e": 1.0})
    assert "Dask is not installed: ula_bias's small-step rows ran on the numba backend" in text
    monkeypatch.undo()
    if importlib.util.find_spec("distributed") is not None:
        assert "Dask is installed" in runner.render_report(rows, quick=True, seed=0, seconds={"e": 1.0})


def test_sources_do_not_cite_outside_the_repository():
    """Sources name a paper and an equation of the README's table, never an outside document."""
    for module in (hyvarinen, equivalence, sliced, vincent, ula_bias, ncsn_toy, backends):
        source = getattr(module, "SOURCE", "")
        assert "seed" not in source, (module.__name__, source)
