"""``refscore warmup``: the kernel families compiled ahead of time, in their own processes."""
import os
import subprocess
import sys
import textwrap

import pytest

from refscore import cli, warmup


@pytest.mark.parametrize("argv, message", [
    (["warmup", "nope"], "unknown kernel family 'nope': the families are mlp_losses, cpu_sampler, cuda_sampler"),
    (["warmup", "--all", "mlp_losses"], "give FAMILY names or --all, not both"),
    (["warmup", "--jobs", "0"], "argument --jobs: must be a positive integer"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        status = cli.main(argv)
        raise SystemExit(status)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("refscore warmup: error:") and len(err.strip().splitlines()) == 1


def test_a_family_this_machine_cannot_run_is_refused(monkeypatch):
    monkeypatch.setitem(warmup.WARMUPS, "cuda_sampler", (warmup.WARMUPS["cuda_sampler"][0], lambda: False))
    with pytest.raises(ValueError, match="cuda_sampler.*cannot run here.*NUMBA_ENABLE_CUDASIM"):
        warmup.warmup(["cuda_sampler"], say=lambda line: None)


def test_warm_names_an_unknown_family():
    with pytest.raises(ValueError, match="family must be one of"):
        warmup.warm("mlp")


@pytest.mark.slow
def test_warmup_fills_the_cache_so_a_new_process_compiles_nothing(tmp_path):
    """After ``refscore warmup cpu_sampler``, a fresh process's first numba ULA prints no compile notice
    (the notice fires on cache misses only) and the command said where the cache is and its size."""
    env = dict(os.environ, REFSCORE_CACHE_DIR=str(tmp_path))
    env.pop("REFSCORE_QUIET", None)
    out = subprocess.run([sys.executable, "-m", "refscore", "warmup", "cpu_sampler"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refscore warmup: cpu_sampler in 1 process(es); cache " + str(tmp_path))
    assert lines[1].startswith("  cpu_sampler: ready in ")
    assert lines[2].startswith(f"kernel cache {tmp_path}") and lines[2].endswith("MiB")
    assert "refscore: compiling" not in out.stderr  # the worker is quiet; the parent speaks
    code = """
        import numpy as np, refscore as rs
        rs.ula(rs.Gaussian([0.0], [[1.0]]), np.zeros((4, 1)), 0.1, 2, seed=0, backend="numba")
        print("ran")
    """
    after = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                           timeout=900)
    assert after.returncode == 0 and after.stdout.strip() == "ran", after.stderr
    assert "refscore: compiling" not in after.stderr
