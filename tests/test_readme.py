"""The README's code blocks run as pasted, in a fresh directory, as a new user would run them.

The walkthrough of "Validate your backend in 3 steps" runs in tests/test_cli.py and the
torch/JAX test-suite examples in tests/test_testing.py; this file runs the rest: the
first Python example, the command-line blocks, and the Dask script.  Each block is
read from README.md at test time, so the README cannot drift from what runs.  They
are slow (they compile kernels and train a model), so they run in the slow tier.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _blocks():
    """Every fenced block of README.md as (language, text, the prose line just before it)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    out, lang, body, before = [], None, [], ""
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
                before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            else:
                out.append((lang, "\n".join(body) + "\n", before))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _bash(code, cwd):
    prelude = "" if shutil.which("refscore", path=_env()["PATH"]) else \
        f'refscore() {{ "{sys.executable}" -m refscore "$@"; }}\n'
    return subprocess.run(["bash", "-e", "-c", prelude + code], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=1200)


def test_first_python_example_runs_and_prints_what_it_says(tmp_path):
    lang, code, _ = next(b for b in _blocks() if b[0] == "python")
    assert "rs.fit(" in code and "annealed_langevin" in code
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    m = re.search(r"^ISM (-?\d+\.\d+), \|grad\| (\S+), Fisher divergence (\d+\.\d+)$", res.stdout, re.M)
    assert m, res.stdout
    weights = re.search(r"^mode weights of the samples: \[\s*(\S+)\s+(\S+)\s*\]$", res.stdout, re.M)
    assert weights, res.stdout
    # annealed Langevin with the exact noised scores recovers the 0.2 / 0.8 mixture: 1000 chains give a standard
    # error of 0.013 on each weight, and 0.05 (about 4 of them) also covers the small residual bias of 100 steps
    assert abs(float(weights.group(1)) - 0.2) < 0.05 and abs(float(weights.group(2)) - 0.8) < 0.05


def test_command_line_blocks_run_as_pasted_from_a_clone(tmp_path):
    """The sample block (numba, MALA, annealed, 2 Dask workers) then the fit block, in one directory
    holding the clone's examples/ (the README says they run from a clone)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    sample = next(code for lang, code, _ in _blocks() if lang == "bash" and "refscore sample gaussian2d" in code)
    fit = next(code for lang, code, _ in _blocks() if lang == "bash" and "refscore fit --data x.npy" in code)
    for code in (sample, fit):
        res = _bash(code, tmp_path)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    import numpy as np

    for name, shape in (("x.npy", (1000, 2)), ("x_dask.npy", (1000, 2))):
        assert np.load(tmp_path / name).shape == shape
    # the block's own claim: the Dask chains are bitwise those of --backend numba (same kernels, one machine)
    line = next(l for l in sample.splitlines() if "--backend dask" in l)
    res = _bash(line.replace("--backend dask --workers 2", "--backend numba").replace("x_dask.npy", "x_numba.npy"),
                tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert np.array_equal(np.load(tmp_path / "x_numba.npy"), np.load(tmp_path / "x_dask.npy"))
    (tmp_path / "x_numba.npy").unlink()
    # and the first line's default backend (numpy, the reference) ran the same chains up to the score's
    # round-off: 2000 steps of a contracting map keep it near 1e-13 (1e-9 leaves ample margin)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), np.load(tmp_path / "x_dask.npy"), rtol=1e-9, atol=1e-9)
    for name in ("x_mala.npy", "x_annealed.npy", "theta_gaussian.npy", "theta_mlp.npy", "hist.json",
                 "theta_gaussian.history.json"):
        assert (tmp_path / name).is_file(), name
    # every file the blocks wrote is git-ignored in a clone
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for path in tmp_path.iterdir():
        if path.name != "examples":
            assert f"/{path.name}" in ignored, path.name


def test_dask_script_runs_as_pasted(tmp_path):
    pytest.importorskip("distributed")
    import numpy as np

    code = next(code for lang, code, before in _blocks() if lang == "python" and "LocalCluster" in code)
    (tmp_path / "dask_moments.py").write_text(code)
    res = subprocess.run([sys.executable, "dask_moments.py"], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^chains: 100000 diverged: 0$", res.stdout, re.M), res.stdout
    mean = re.search(r"^mean: \[\s*(\S+)\s+(\S+)\s*\]", res.stdout, re.M)
    # 1e5 chains, variances 1 and 2: 5 standard errors, plus the transient the run leaves from its start at 0:
    # |x0 - mu| e^{-lambda_min eta k} = 1.12 * e^{-0.453 * 10} = 0.012 (lambda_min of Sigma^-1 is 0.453)
    transient = 1.12 * np.exp(-0.453 * 10)
    assert abs(float(mean.group(1)) - 0.5) < 5 * (1 / 1e5) ** 0.5 + transient
    assert abs(float(mean.group(2)) + 1.0) < 5 * (2 / 1e5) ** 0.5 + transient


def test_the_cluster_block_marks_its_address_as_a_placeholder():
    code = next(code for lang, code, _ in _blocks() if lang == "python" and "tcp://scheduler:8786" in code)
    assert "placeholder" in code
