"""The ``refscore`` command line: subprocess runs for help, golden/check and errors;
in-process ``main(argv)`` (the same code path) for the rest, to keep the file fast."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from refscore import cli, golden


def run(*args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "refscore", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def one_line_error(res_or_err, *fragments):
    err = res_or_err if isinstance(res_or_err, str) else res_or_err.stderr
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture(scope="module")
def gdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "golden"
    res = run("golden", "--out", str(d))
    assert res.returncode == 0, res.stderr
    assert f"wrote 69 cases x {len(golden.QUANTITIES)} quantities and 67 further cases" in res.stdout
    assert f"(format_version {golden.FORMAT_VERSION})" in res.stdout
    return d


# ----------------------------------------------------------------- subprocess
def test_help_lists_commands_and_examples():
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("golden", "check", "sample", "fit", "validate", "bench"):
        assert cmd in res.stdout
    for cmd in ("golden", "check", "sample", "fit"):
        res = run(cmd, "--help")
        assert res.returncode == 0 and f"refscore {cmd}" in res.stdout and "example" in res.stdout, cmd


def test_validate_help_is_delegated():
    res = run("validate", "--help")
    assert res.returncode == 0 and "--quick" in res.stdout and "example" in res.stdout


def test_check_pass_and_fail_by_subprocess(gdir, tmp_path):
    vals = golden.compute(gdir)
    good = tmp_path / "good.npz"
    np.savez(good, **vals)
    res = run("check", str(gdir), str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(vals)
    assert f"{n} passed, 0 failed" in res.stdout and "RESULT: PASS" in res.stdout
    nq = len({q for kind in golden.CASE_KINDS.values() for q in kind["quantities"]})  # every kind's
    assert f"coverage: 136 of 136 cases, {nq} of {nq} quantities, {n} of {n} keys compared" in res.stdout
    vals["mixture_d5/ssm_vr_sphere_grad"] = vals["mixture_d5/ssm_vr_sphere_grad"] + 1e-5
    bad = tmp_path / "bad.npz"
    np.savez(bad, **vals)
    res = run("check", str(gdir), str(bad))
    assert res.returncode == 1
    fail_lines = [l for l in res.stdout.splitlines() if l.endswith(" FAIL") and "/" in l]
    assert len(fail_lines) == 1 and fail_lines[0].startswith("mixture_d5/ssm_vr_sphere_grad")
    assert "FAIL by quantity: ssm_vr_sphere_grad (1 cases)" in res.stdout
    # one diagnosis line, under the table and above the summary
    out = res.stdout
    assert out.index("diagnosis (") > out.index(fail_lines[0]) and out.index("diagnosis (") < out.index("RESULT")
    assert "  ssm_vr_sphere_grad: 1 case, gradient only, only the sphere projection;" in out
    assert "-> round-off: agrees within the float32 tolerances" in out  # 1e-5 is within rtol = atol = 1e-4


def test_errors_are_one_line_with_status_2(gdir, tmp_path):
    one_line_error(run("sample", "nowhere", "--out", str(tmp_path / "x.npy")), "refscore sample: error:",
                   "unknown target 'nowhere'")
    res = run("golden", "--out", str(gdir))
    assert res.returncode == 2
    one_line_error(res, "refscore golden: error:", "not empty; refusing to overwrite")
    res = run("sample", "gaussian2d", "--chains", "many", "--out", "x.npy")
    assert res.returncode == 2
    one_line_error(res, "refscore sample: error:", "--chains: invalid int value")
    res = run("frobnicate")
    assert res.returncode == 2
    one_line_error(res, "invalid choice: 'frobnicate'")


# ----------------------------------------------------------------- in process
def test_check_options(gdir, tmp_path, capsys):
    vals = golden.compute(gdir)
    vals = {k: v * (1 + 1e-6) for k, v in vals.items() if k.startswith("linear_d2/")}
    p = tmp_path / "v.npz"
    np.savez(p, **vals)
    assert cli.main(["check", str(gdir), str(p)]) == 1
    assert cli.main(["check", str(gdir), str(p), "--float32"]) == 0
    assert cli.main(["check", str(gdir), str(p), "--rtol", "1e-5", "--all"]) == 0
    out = capsys.readouterr().out
    nq = len(golden.QUANTITIES)  # the quantities of a losses case
    assert "linear_d2/score" in out and "PASS" in out and f"coverage: 1 of 136 cases, {nq} of {nq} quantities" in out
    del vals["linear_d2/jvp"]
    np.savez(p, **vals)
    # the verdict covers the keys provided; --require-all also wants every quantity of the case
    assert cli.main(["check", str(gdir), str(p), "--float32"]) == 0
    out = capsys.readouterr().out
    assert f"coverage: 1 of 136 cases, {nq - 1} of {nq} quantities, {nq - 1} of" in out and "jvp (69 cases)" in out
    assert "MISSING" not in out and "linear_d2/jvp" not in out
    assert cli.main(["check", str(gdir), str(p), "--float32", "--require-all"]) == 1
    out = capsys.readouterr().out
    assert "jvp (69 cases; 1 required)" in out and "MISSING: 1 key of the provided cases" in out
    assert "linear_d2/jvp" not in out  # summarised per quantity, never line by line
    assert cli.main(["check", str(gdir), str(p), "--float32", "--allow-missing"]) == 0  # kept for scripts
    assert cli.main(["check", str(gdir), str(p), "--require-all", "--allow-missing"]) == 2
    one_line_error(capsys.readouterr().err, "contradict")


def test_check_reads_a_format_1_directory(tmp_path, capsys):
    from pathlib import Path

    old = Path(__file__).resolve().parent / "data" / "golden_v1"
    p = tmp_path / "v.npz"
    np.savez(p, **golden.compute(old))
    assert cli.main(["check", str(old), str(p)]) == 0
    assert "coverage: 2 of 2 cases, 23 of 23 quantities, 46 of 46 keys compared" in capsys.readouterr().out


def test_missing_quantities_are_one_block(gdir, tmp_path, capsys):
    vals = golden.compute(gdir, cases=["linear_d1", "gaussian_d5"])
    vals = {k: v for k, v in vals.items() if k.rsplit("/", 1)[1] in ("score", "esm", "esm_grad")}
    p = tmp_path / "v.npz"
    np.savez(p, **vals)
    assert cli.main(["check", str(gdir), str(p), "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("not provided:") == 1 and "ism_grad (69 cases)" in out and "score (67 cases)" in out
    assert "MISSING" not in out and "linear_d1/ism" not in out


def test_check_errors(gdir, tmp_path, capsys):
    assert cli.main(["check", str(tmp_path), str(tmp_path / "v.npz")]) == 2
    one_line_error(capsys.readouterr().err, "refscore check: error:", "manifest.json not found")
    assert cli.main(["check", str(gdir), str(tmp_path / "v.npz")]) == 2
    one_line_error(capsys.readouterr().err, "values file", "not found")
    (tmp_path / "junk.npz").write_text("junk")
    assert cli.main(["check", str(gdir), str(tmp_path / "junk.npz")]) == 2
    one_line_error(capsys.readouterr().err, "not a readable .npz archive")


def test_golden_force(tmp_path, capsys):
    d = tmp_path / "g"
    assert cli.main(["golden", "--out", str(d)]) == 0
    assert cli.main(["golden", "--out", str(d)]) == 2
    one_line_error(capsys.readouterr().err, "refusing to overwrite")
    assert cli.main(["golden", "--out", str(d), "--force"]) == 0
    assert golden.check(d, golden.compute(d, cases=["linear_d1"])).passed


def test_sample_builtin_targets(tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert cli.main(["sample", "gaussian2d", "--chains", "2000", "--steps", "200", "--step", "0.05",
                     "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (2000, 2)
    # ULA at eta = 0.05 has mean exactly [0.5, -1] at stationarity; standard error with 2000
    # chains is sqrt(1.5 / 2000) ~ 0.03, so 0.15 is 5 standard errors
    np.testing.assert_allclose(x.mean(0), [0.5, -1.0], atol=0.15)
    assert "0 chains diverged" in capsys.readouterr().out
    # never clobbers
    assert cli.main(["sample", "gaussian2d", "--chains", "5", "--steps", "1", "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, "exists; refusing to overwrite it (pass --force)")
    assert cli.main(["sample", "banana", "--chains", "5", "--steps", "3", "--out", str(out), "--force"]) == 0
    assert np.load(out).shape == (5, 2)
    out2 = tmp_path / "m.npy"
    assert cli.main(["sample", "mixture2d", "--sampler", "mala", "--chains", "50", "--steps", "20",
                     "--step", "0.1", "--out", str(out2)]) == 0
    assert "MALA acceptance rate" in capsys.readouterr().out
    out3 = tmp_path / "m10.npy"
    assert cli.main(["sample", "mixture10d", "--chains", "3", "--steps", "2", "--out", str(out3)]) == 0
    assert np.load(out3).shape == (3, 10)


def test_sample_annealed_mixture_weights(tmp_path):
    out = tmp_path / "a.npy"
    assert cli.main(["sample", "mixture2d", "--sampler", "annealed", "--chains", "2000", "--steps", "50",
                     "--step", "0.005", "--out", str(out)]) == 0
    x = np.load(out)
    # annealed Langevin recovers the 0.2 / 0.8 weights (Song & Ermon 2019 §4.3); the binomial
    # standard error with 2000 chains is 0.009, and finite annealing biases a few percent
    assert abs(np.mean(x[:, 0] > 0) - 0.8) < 0.06


def test_sample_json_spec(tmp_path, capsys):
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({"type": "gaussian", "mean": [3.0], "cov": [[0.25]]}))
    out = tmp_path / "x.npy"
    assert cli.main(["sample", str(spec), "--chains", "1000", "--steps", "100", "--step", "0.02",
                     "--out", str(out)]) == 0
    x = np.load(out)
    # 100 steps of eta = 0.02 contract x0 - 3 by (1 - 0.08)^100 ~ 2e-4; SE 0.5/sqrt(1000) = 0.016
    assert x.shape == (1000, 1) and abs(x.mean() - 3.0) < 0.08
    spec.write_text(json.dumps({"type": "mixture", "weights": [0.5, 0.5], "means": [[-1.0], [1.0]],
                                "covs": [[[1.0]], [[1.0]]]}))
    assert cli.main(["sample", str(spec), "--chains", "4", "--steps", "2", "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("content, fragment", [
    ('{"type": "gaussian", "mean": [0]', "is not valid JSON"),
    ('[1, 2]', "must be a JSON object"),
    ('{"type": "cauchy"}', "'type' must be one of"),
    ('{"type": "gaussian", "mean": [0]}', "missing cov"),
    ('{"type": "gaussian", "mean": [0], "cov": [[1]], "scale": 2}', "unknown keys scale"),
    ('{"type": "gaussian", "mean": [0, 0], "cov": [[1]]}', "t.json:"),
])
def test_sample_bad_spec(tmp_path, capsys, content, fragment):
    spec = tmp_path / "t.json"
    spec.write_text(content)
    assert cli.main(["sample", str(spec), "--out", str(tmp_path / "x.npy")]) == 2
    one_line_error(capsys.readouterr().err, "refscore sample: error:", fragment)
    assert not (tmp_path / "x.npy").exists()


def test_sample_other_errors(tmp_path, capsys):
    out = str(tmp_path / "x.npy")
    cases = [
        (["sample", str(tmp_path / "none.json"), "--out", out], "target spec file"),
        (["sample", "banana", "--sampler", "annealed", "--out", out], "needs a target whose noised scores"),
        (["sample", "gaussian2d", "--out", str(tmp_path / "x.txt")], "--out must end in .npy"),
        (["sample", "gaussian2d", "--out", str(tmp_path / "no" / "x.npy")], "does not exist"),
        (["sample", "gaussian2d", "--chains", "0", "--out", out], "--chains must be >= 1"),
        (["sample", "gaussian2d", "--step", "-1", "--steps", "1", "--chains", "1", "--out", out], "step must be"),
        (["sample", "mixture2d", "--sampler", "annealed", "--sigmas", "1,x", "--out", out], "--sigmas must be"),
        (["sample", "mixture2d", "--sampler", "annealed", "--sigmas", "1,2", "--out", out], "strictly decreasing"),
    ]
    for argv, fragment in cases:
        assert cli.main(argv) == 2, argv
        one_line_error(capsys.readouterr().err, fragment)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("fit") / "x.npy"
    rng = np.random.default_rng(0)
    np.save(p, rng.normal([1.0, -2.0], [1.0, 0.5], size=(400, 2)))
    return p


def test_fit_writes_theta_and_history(data_file, tmp_path, capsys):
    out = tmp_path / "theta.npy"
    assert cli.main(["fit", "--data", str(data_file), "--model", "linear", "--loss", "ism", "--steps", "400",
                     "--lr", "0.05", "--batch", "400", "--out", str(out)]) == 0
    theta = np.load(out)
    assert theta.shape == (6,)
    # ISM's minimiser for an affine score is A = -Cov^-1, b = Cov^-1 mean (Hyvarinen 2005);
    # 400 full-batch Adam steps get within a few percent of it
    x = np.load(data_file)
    prec = np.linalg.inv(np.cov(x.T, bias=True))
    np.testing.assert_allclose(theta[:4].reshape(2, 2), -prec, atol=0.15 * np.abs(prec).max())
    hist = json.loads((tmp_path / "theta.history.json").read_text())
    assert hist["loss"] == "ism" and len(hist["steps"]) == 400 == len(hist["loss_values"])
    assert hist["loss_values"][-1] < hist["loss_values"][0]
    assert "A.ravel()" in hist["layout"]
    assert "theta layout" in capsys.readouterr().out
    # neither output is clobbered
    assert cli.main(["fit", "--data", str(data_file), "--model", "linear", "--steps", "1", "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, "theta.npy exists")
    out2 = tmp_path / "theta2.npy"
    assert cli.main(["fit", "--data", str(data_file), "--model", "linear", "--steps", "1", "--out", str(out2),
                     "--history", str(tmp_path / "theta.history.json")]) == 2
    one_line_error(capsys.readouterr().err, "theta.history.json exists")
    assert not out2.exists()


@pytest.mark.parametrize("argv", [
    ["--model", "mlp", "--hidden", "8,8", "--activation", "silu", "--loss", "dsm", "--sigma", "0.5"],
    ["--model", "mlp-energy", "--hidden", "6", "--loss", "ssm_vr", "--projection", "sphere"],
    ["--model", "mixture", "--components", "2", "--loss", "ssm", "--n-projections", "2"],
    ["--model", "gaussian", "--loss", "esm", "--target", "gaussian2d"],
])
def test_fit_models_and_losses(data_file, tmp_path, argv):
    out, hist = tmp_path / "t.npy", tmp_path / "h.npy"
    assert cli.main(["fit", "--data", str(data_file), "--steps", "5", "--batch", "64", "--out", str(out),
                     "--history", str(hist), *argv]) == 0
    h = np.load(hist)
    assert h.shape == (5, 2) and np.array_equal(h[:, 0], np.arange(1, 6)) and np.all(np.isfinite(h))
    assert np.all(np.isfinite(np.load(out)))


def test_fit_errors(data_file, tmp_path, capsys):
    out = str(tmp_path / "t.npy")
    base = ["fit", "--data", str(data_file), "--steps", "2", "--out", out]
    (tmp_path / "junk.npy").write_text("junk")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    cases = [
        (base + ["--loss", "esm"], "--loss esm needs --target"),
        (base + ["--loss", "esm", "--target", "mixture10d"], "dimension 10"),
        (base + ["--loss", "dsm"], "--loss dsm needs --sigma"),
        (base + ["--loss", "ism", "--sigma", "1"], "--sigma is only used by --loss dsm"),
        (base + ["--loss", "ism", "--target", "gaussian2d"], "--target is only used by --loss esm"),
        (base + ["--hidden", "8,x"], "--hidden must be comma-separated integers"),
        (base + ["--hidden", "0"], "--hidden must be comma-separated positive integers"),
        (base + ["--lr", "-1"], "lr must be"),
        (base + ["--history", str(tmp_path / "h.csv")], "--history must end in .json or .npy"),
        (["fit", "--data", str(tmp_path / "none.npy"), "--out", out], "--data file"),
        (["fit", "--data", str(tmp_path / "junk.npy"), "--out", out], "not a .npy array file"),
        (["fit", "--data", str(tmp_path / "flat.npy"), "--out", out], "reshape(-1, 1)"),
    ]
    for argv, fragment in cases:
        assert cli.main(argv) == 2, argv
        one_line_error(capsys.readouterr().err, "refscore fit: error:", fragment)
    with pytest.raises(SystemExit) as exc:
        cli.main(base + ["--model", "transformer"])
    assert exc.value.code == 2
    one_line_error(capsys.readouterr().err, "invalid choice: 'transformer'")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that fit reports
def test_fit_divergence_is_reported(data_file, tmp_path, capsys):
    big = tmp_path / "big.npy"
    np.save(big, np.load(data_file) * 1e200)
    assert cli.main(["fit", "--data", str(big), "--model", "linear", "--loss", "ism", "--steps", "3",
                     "--out", str(tmp_path / "t.npy")]) == 1
    one_line_error(capsys.readouterr().err, "refscore fit: error:", "diverged")
    assert not (tmp_path / "t.npy").exists()


def test_bench_delegation(capsys):
    # the harness is benchmarks/bench.py of a clone, not an installed module
    if any((d / "bench.py").is_file() for d in cli._bench_dirs()):
        with pytest.raises(SystemExit) as exc:  # the benchmarks' own argparse answers --help
            cli.main(["bench", "--help"])
        assert exc.value.code == 0 and "usage" in capsys.readouterr().out
    else:
        assert cli.main(["bench"]) == 2
        one_line_error(capsys.readouterr().err, "refscore bench: error:", "not installed with the package")


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_build_target_names():
    assert cli.build_target("mixture2d").dim == 2 and cli.build_target("mixture10d").dim == 10
    np.testing.assert_allclose(cli.build_target("mixture2d").weights, [0.2, 0.8])
    with pytest.raises(cli.CLIError, match="unknown target"):
        cli.build_target("nope")


# ----------------------------------------------------------------- the README's walkthrough, verbatim
def _walkthrough():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("## Validate your backend in 3 steps")
    section = text[start:text.index("\n## ", start + 1)]
    blocks, lang, body = [], None, []
    for line in section.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    code = [(lang, text) for lang, text in blocks if lang in ("bash", "python")]
    shown = [text for lang, text in blocks if not lang]  # the outputs it shows
    return code, shown


def test_readme_walkthrough_runs_as_written(tmp_path):
    """Step 1 (bash), step 2 (python) and step 3 (bash) of the README, run verbatim in a fresh directory."""
    pytest.importorskip("jax")
    import re
    import shutil

    code, shown = _walkthrough()
    assert [lang for lang, _ in code] == ["bash", "python", "bash"]
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    # the `refscore` console script of this interpreter; a source checkout without it runs the module
    prelude = "" if shutil.which("refscore", path=env["PATH"]) else \
        f'refscore() {{ "{sys.executable}" -m refscore "$@"; }}\n'

    def bash(line):
        return subprocess.run(["bash", "-c", prelude + line], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)

    res = bash(code[0][1])
    assert res.returncode == 0, res.stderr
    (tmp_path / "step2.py").write_text(code[1][1])
    res = subprocess.run([sys.executable, "step2.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "values.npz") as f:
        assert len(f.files) == 24 and {k.rsplit("/", 1)[1] for k in f.files} == {"score", "jacobian", "ism",
                                                                                  "ism_grad"}
    lines = [l for l in code[2][1].splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert len(lines) == 2
    outs = []
    for line in lines:  # every command of step 3 exits 0
        res = bash(line)
        assert res.returncode == 0, res.stdout + res.stderr
        outs.append(res.stdout)
    assert re.search(r"^coverage: 6 of \d+ cases, 4 of 23 quantities, 24 of \d+ keys compared$", outs[0], re.M)
    assert "RESULT: PASS (on the 24 keys provided; see coverage)" in outs[0]
    # the output the README shows for step 2's values is the real one
    readme_out = next(block for block in shown if block.startswith("24 keys compared"))
    for line in readme_out.splitlines():
        if line.strip() != "...":
            assert line in outs[0].splitlines(), line
