"""The kernel cache: damaged files, unusable directories, and the first-compile notice.

Numba reads a cached kernel as an index file (a pickled format version, then a
pickled ``(stamp, {key: data file name})``) and one pickled data file per
compiled signature; :func:`refscore._kernels.cache.remove_damaged` reads them
the same way.  The subprocess tests run a fresh interpreter so that nothing is
cached in memory and the environment (cache directory, file-size limit) is the
process's own.
"""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

from refscore._kernels import cache  # noqa: E402


def _write_entry(folder, module, data_bytes=None, index_bytes=None):
    """One cache entry as numba writes it; ``data_bytes``/``index_bytes`` override the file contents."""
    stem = f"{module}.kernel-10.py311"
    data_name = f"{stem}.1.nbc"
    (folder / data_name).write_bytes(pickle.dumps(("payload", b"\x00" * 64)) if data_bytes is None else data_bytes)
    if index_bytes is None:
        index_bytes = pickle.dumps("0.68.1") + pickle.dumps((("stamp", 1), {("sig",): data_name}))
    (folder / f"{stem}.nbi").write_bytes(index_bytes)
    return folder / f"{stem}.nbi", folder / data_name


def test_sound_entries_are_kept(tmp_path):
    index, data = _write_entry(tmp_path, "mlp_losses")
    assert cache.remove_damaged(tmp_path, "mlp_losses") == []
    assert index.exists() and data.exists()


@pytest.mark.parametrize("damage", ["truncated data", "truncated index", "garbage index", "missing data",
                                    "index of another shape"])
def test_damaged_entries_are_removed_with_their_data(tmp_path, damage):
    good = pickle.dumps(("payload", b"\x00" * 64))
    idx = pickle.dumps("0.68.1") + pickle.dumps((("stamp", 1), {("sig",): "mlp_losses.kernel-10.py311.1.nbc"}))
    kwargs = {"truncated data": dict(data_bytes=good[:10]),
              "truncated index": dict(index_bytes=idx[:-5]),
              "garbage index": dict(index_bytes=b"\x80\x05garbage"),
              "missing data": {},
              "index of another shape": dict(index_bytes=pickle.dumps("0.68.1") + pickle.dumps(("stamp", [1])))}
    index, data = _write_entry(tmp_path, "mlp_losses", **kwargs[damage])
    if damage == "missing data":
        data.unlink()
    other_index, other_data = _write_entry(tmp_path, "cpu_sampler", data_bytes=good[:10])
    assert cache.remove_damaged(tmp_path, "mlp_losses") == [index]
    assert not index.exists() and not data.exists()
    # only the module asked about is touched
    assert other_index.exists() and other_data.exists()


def _run(code, env_extra, timeout=600):
    env = dict(os.environ, **env_extra)
    env.pop("REFSCORE_QUIET", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_unwritable_cache_directory_warns_and_runs_uncached(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = _run("""
        import warnings
        warnings.simplefilter("always")
        from refscore._kernels import cache
        print(cache.use_cache())
    """, {"REFSCORE_CACHE_DIR": str(blocker / "sub")}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "KernelCacheWarning" in out.stderr and "cannot be used" in out.stderr and str(blocker) in out.stderr


def test_file_size_limit_makes_the_cache_unused(tmp_path):
    code = """
        import resource, warnings
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        warnings.simplefilter("always")
        from refscore._kernels import cache
        print(cache.use_cache(), cache.cache_problem())
    """
    out = _run(code, {"REFSCORE_CACHE_DIR": str(tmp_path)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False") and "file-size limit" in out.stdout


def test_first_compile_prints_its_line_within_a_second(tmp_path):
    """An empty cache: the notice is printed as the compile starts, not after it.

    Speed is not asserted here (a loaded machine delays any line); what is
    asserted is the order: the notice arrives while the call is still
    compiling (no DONE yet, the process alive).  Measured separately: 0.3-0.8 s
    from the call to the line on a loaded 2-core machine.
    """
    code = """
        import sys, time
        import numpy as np
        import refscore as rs
        print("CALL", time.perf_counter(), file=sys.stderr, flush=True)
        rs.ula(rs.Gaussian([0.0], [[1.0]]), np.zeros((4, 1)), 0.1, 2, seed=0, backend="numba")
        print("DONE", file=sys.stderr, flush=True)
    """
    env = dict(os.environ, REFSCORE_CACHE_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("REFSCORE_QUIET", None)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("refscore: compiling"):
                still_compiling = proc.poll() is None
                break
        else:
            pytest.fail(f"no compile notice; stderr: {lines}")
    finally:
        proc.kill()
        proc.wait()
    assert lines[0].startswith("CALL") and not any(x.startswith("DONE") for x in lines), lines
    assert still_compiling
    assert "Langevin sampler kernels" in line and "once per machine" in line and str(tmp_path) in line


def test_quiet_environment_silences_the_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFSCORE_QUIET", "1")
    monkeypatch.setattr(cache, "_announced", set())
    cache._announce("cpu_sampler")
    assert capsys.readouterr().err == ""


def test_a_warm_sampler_kernel_announces_no_compile(tmp_path):
    """The CPU sampler kernels are compiled for one target kind (its kind_tag in their signature): a second
    process on a filled cache loads that kernel and prints no compile notice; the first one prints one."""
    env = dict(os.environ, REFSCORE_CACHE_DIR=str(tmp_path))
    env.pop("REFSCORE_QUIET", None)
    code = textwrap.dedent("""
        import numpy as np, refscore as rs
        rs.ula(rs.Gaussian([0.0], [[1.0]]), np.zeros((4, 1)), 0.1, 2, seed=0, backend="numba")
    """)
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stderr.count("refscore: compiling the Langevin sampler kernels") == 1
    assert "refscore: compiling" not in runs[1].stderr
