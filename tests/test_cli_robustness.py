"""The command line under failure: interrupted and failed writes, damaged or hostile input
files, sizes beyond memory, options a sampler does not use, and file-path errors that name
their real cause.  Every error is one line ``refscore <command>: error: ...`` with exit
status 2; Ctrl-C is one line with status 130.  In process (``cli.main``) unless a signal
has to kill the process."""
import builtins
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from refscore import _files, cli, golden, sampling, training

SMALL_CASES = ("linear_d2", "mlpscore_tanh_depth1_d2")
_ALL_SPECS = golden.case_specs


# ----------------------------------------------------------------- helpers
def call(capsys, *argv):
    """``cli.main(argv)`` -> (status, stdout, stderr); an escaping KeyboardInterrupt fails the test."""
    try:
        rc = cli.main([str(a) for a in argv])
    except KeyboardInterrupt:  # would otherwise stop the whole pytest session
        pytest.fail("KeyboardInterrupt escaped cli.main")
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def status(capsys, *argv):
    """``(exit status, stderr)`` of ``cli.main(argv)``, whether it returns or argparse exits."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors (an option's type) exit
        rc = exc.code
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main")
    return rc, capsys.readouterr().err


def one_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "allow_pickle" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def small_specs():
    specs = _ALL_SPECS()
    return {k: specs[k] for k in SMALL_CASES}


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory):
    """A golden directory of two cases (the format of the full one, written in a second)."""
    d = tmp_path_factory.mktemp("robust") / "golden"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(golden, "case_specs", small_specs)
        golden.write(d)
    return d


@pytest.fixture
def gcopy(small_golden, tmp_path):
    d = tmp_path / "g"
    shutil.copytree(small_golden, d)
    return d


@pytest.fixture(scope="module")
def good_values(small_golden, tmp_path_factory):
    p = tmp_path_factory.mktemp("values") / "values.npz"
    np.savez(p, **golden.compute(small_golden))
    return p


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(0).normal(size=(64, 2)))
    return p


def partial_then(exc):
    """A stand-in for np.save / np.savez that writes a few bytes and then fails with ``exc``."""
    def save(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"\x93NUMPY\x01\x00partial")
        else:  # a path: what the in-place writer passed
            with open(file, "wb") as f:
                f.write(b"\x93NUMPY\x01\x00partial")
        raise exc
    return save


def deny_reading(monkeypatch, path):
    """Opening ``path`` raises PermissionError (what a mode-000 file does to a non-root user)."""
    path = os.path.abspath(os.fspath(path))
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) == path:
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def npy_bytes(shape, descr="<f8", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def write_npz_members(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name + ".npy", raw)


SAMPLE = ["sample", "gaussian2d", "--chains", "4", "--steps", "2"]


# ----------------------------------------------------------------- (a) atomic outputs
def test_sample_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.npy"
    old = np.arange(6.0).reshape(3, 2)
    np.save(out, old)
    monkeypatch.setattr(np, "save", partial_then(OSError(28, "No space left on device")))
    rc, _, err = call(capsys, *SAMPLE, "--out", out, "--force")
    assert rc == 2
    one_line(err, "refscore sample: error:", "no space left on device", "nothing was written")
    monkeypatch.undo()
    assert np.array_equal(np.load(out), old)  # --force with a failing run keeps the old file
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_sample_failed_write_leaves_nothing_that_blocks_the_next_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.npy"
    monkeypatch.setattr(np, "save", partial_then(OSError(28, "No space left on device")))
    assert call(capsys, *SAMPLE, "--out", out)[0] == 2
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    assert call(capsys, *SAMPLE, "--out", out)[0] == 0  # no truncated file in the way
    assert np.load(out).shape == (4, 2)


def test_sample_interrupted_mid_write(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.npy"
    old = np.ones((3, 2))
    np.save(out, old)
    monkeypatch.setattr(np, "save", partial_then(KeyboardInterrupt()))
    rc, _, err = call(capsys, *SAMPLE, "--out", out, "--force")
    assert rc == 130
    one_line(err, "refscore sample: interrupted; nothing was written")
    monkeypatch.undo()
    assert np.array_equal(np.load(out), old) and sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_sample_sigterm_mid_write_keeps_previous_file(tmp_path):
    out = tmp_path / "x.npy"
    old = np.full((3, 2), 7.0)
    np.save(out, old)
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from refscore import cli

        def save(file, *args, **kwargs):
            if hasattr(file, "write"):
                file.write(b"partial")
            else:
                open(file, "wb").write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)

        np.save = save
        sys.exit(cli.main({[*SAMPLE, "--out", str(out), "--force"]!r}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 128 + signal.SIGTERM, (res.returncode, res.stderr)
    one_line(res.stderr, "refscore sample: terminated; nothing was written")
    assert np.array_equal(np.load(out), old) and sorted(os.listdir(tmp_path)) == ["x.npy"]


FIT = ["fit", "--model", "linear", "--loss", "ism", "--steps", "2", "--batch", "16"]


def test_fit_failed_history_write_leaves_no_orphan_theta(data_file, tmp_path, capsys, monkeypatch):
    out, hist = tmp_path / "t.npy", tmp_path / "h.npy"
    real_save, calls = np.save, []

    def second_fails(file, arr, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            return partial_then(OSError(28, "No space left on device"))(file)
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", second_fails)
    rc, _, err = call(capsys, *FIT, "--data", data_file, "--out", out, "--history", hist)
    assert rc == 2
    one_line(err, "refscore fit: error:", "no space left on device", "nothing was written")
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]  # neither theta nor history, no temps


def test_fit_force_failing_run_keeps_both_old_files(data_file, tmp_path, capsys, monkeypatch):
    out, hist = tmp_path / "t.npy", tmp_path / "h.json"
    np.save(out, np.arange(3.0))
    hist.write_text('{"old": true}\n')
    # theta is computed and saved first; the history's JSON is interrupted
    monkeypatch.setattr(json, "dumps", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc, _, err = call(capsys, *FIT, "--data", data_file, "--out", out, "--history", hist, "--force")
    assert rc == 130
    one_line(err, "refscore fit: interrupted; nothing was written")
    monkeypatch.undo()
    assert np.array_equal(np.load(out), np.arange(3.0)) and json.loads(hist.read_text()) == {"old": True}
    assert sorted(os.listdir(tmp_path)) == ["h.json", "t.npy", "x.npy"]


# ----------------------------------------------------------------- (b) Ctrl-C
def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command", ["sample", "fit", "check"])
def test_ctrl_c_is_one_line_and_status_130(command, data_file, small_golden, good_values, tmp_path,
                                           capsys, monkeypatch):
    argv = {
        "sample": [*SAMPLE, "--out", tmp_path / "o.npy"],
        "fit": [*FIT, "--data", data_file, "--out", tmp_path / "t.npy"],
        "check": ["check", small_golden, good_values],
    }[command]
    monkeypatch.setattr(sampling, "ula", _raise_interrupt)
    monkeypatch.setattr(training, "fit", _raise_interrupt)
    monkeypatch.setattr(golden, "check", _raise_interrupt)
    rc, _, err = call(capsys, *argv)
    assert rc == 130
    one_line(err, f"refscore {command}: interrupted")
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "t.npy").exists()


def test_ctrl_c_in_bench_and_validate(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_bench", _raise_interrupt)
    monkeypatch.setattr(cli, "_delegate", _raise_interrupt)
    for command in ("bench", "validate"):
        rc, _, err = call(capsys, command)
        assert rc == 130
        one_line(err, f"refscore {command}: interrupted")


def test_golden_interrupted_mid_write_leaves_no_partial_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(golden, "case_specs", small_specs)
    monkeypatch.setattr(np, "savez", partial_then(KeyboardInterrupt()))
    out = tmp_path / "g"
    rc, _, err = call(capsys, "golden", "--out", out)
    assert rc == 130
    one_line(err, "refscore golden: interrupted; nothing was written")
    assert not out.exists() or os.listdir(out) == []
    # into an existing golden directory with --force: the old files stay whole
    monkeypatch.undo()
    monkeypatch.setattr(golden, "case_specs", small_specs)
    assert call(capsys, "golden", "--out", out)[0] == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    monkeypatch.setattr(np, "savez", partial_then(KeyboardInterrupt()))
    assert call(capsys, "golden", "--out", out, "--force")[0] == 130
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before


def test_interrupt_surfacing_as_system_error_is_an_interrupt(tmp_path, capsys, monkeypatch):
    def from_c(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("<built-in function savez> returned a result with an exception set") from ki

    monkeypatch.setattr(golden, "case_specs", small_specs)
    monkeypatch.setattr(np, "savez", from_c)
    rc, _, err = call(capsys, "golden", "--out", tmp_path / "g")
    assert rc == 130
    one_line(err, "refscore golden: interrupted")
    assert "SystemError" not in err


# ----------------------------------------------------------------- (i) damaged golden and values files
def _check_one_line_error(capsys, gdir, values, *fragments):
    rc, _, err = call(capsys, "check", gdir, values)
    assert rc == 2
    return one_line(err, "refscore check: error:", *fragments)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_golden_npz(gcopy, good_values, capsys, keep):
    p = gcopy / "golden.npz"
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError, match="golden.npz"):
        golden.load(gcopy)
    line = _check_one_line_error(capsys, gcopy, good_values, str(p))
    assert "truncated" in line or "empty" in line


def _flip_offset(raw, small_golden, where):
    if where == "array data":  # the middle of one stored array's bytes
        data = golden.load(small_golden).cases[C0].quantities["jacobian"].tobytes()
        return raw.index(data) + len(data) // 2
    if where == "npy header":  # the shape in an array's .npy header
        return raw.index(b"'shape': (") + len(b"'shape': (")
    if where == "zip directory":  # the central directory at the end
        return raw.rindex(b"PK\x01\x02") + 16
    return int(len(raw) * where)


@pytest.mark.parametrize("where", ["array data", "npy header", "zip directory", 0.2, 0.35, 0.5, 0.65, 0.8])
def test_bit_flipped_golden_npz(small_golden, gcopy, good_values, capsys, where):
    p = gcopy / "golden.npz"
    raw = bytearray(p.read_bytes())
    i = _flip_offset(bytes(raw), small_golden, where)
    raw[i:i + 4] = bytes(b ^ 0x5A for b in raw[i:i + 4])
    p.write_bytes(bytes(raw))
    try:
        g = golden.load(gcopy)
    except ValueError as exc:
        assert str(p) in str(exc) and "\n" not in str(exc)
        _check_one_line_error(capsys, gcopy, good_values, str(p))
        return
    # only a flip in a field that zip readers ignore (a local header's date or CRC copy) may load,
    # and then every array is exactly what was written
    assert isinstance(where, float), f"a flip in the {where} went unnoticed"
    ref = golden.load(small_golden)
    for name, c in ref.cases.items():
        for k, v in {**c.inputs, **c.quantities}.items():
            other = g.cases[name]
            assert np.array_equal(v, {**other.inputs, **other.quantities}[k])
    assert call(capsys, "check", gcopy, good_values)[0] == 0


def _tamper(gdir, edit):
    m = json.loads((gdir / "manifest.json").read_text())
    edit(m)
    (gdir / "manifest.json").write_text(json.dumps(m))


C0 = SMALL_CASES[0]


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.pop("cases"), "'cases'"),
    (lambda m: m.update(cases=[]), "'cases'"),
    (lambda m: m["cases"][C0].pop("layout"), "'layout'"),
    (lambda m: m["cases"][C0].pop("quantities"), "'quantities'"),
    (lambda m: m["cases"][C0].update(n_params="six"), "n_params"),
    (lambda m: m["cases"][C0]["kwargs"].update(dim="two"), "kwargs"),
    (lambda m: m["cases"][C0]["shapes"].update(x=[3, "2"]), "shapes"),
    (lambda m: m["cases"][C0]["shapes"].update(x=[4, 2]), "shape"),
    (lambda m: m["cases"][C0].update(model=3), "model"),
    (lambda m: m["cases"][C0]["inputs"].append("nonesuch"), "nonesuch"),
    (lambda m: m.update(format_version="1"), "format_version"),
])
def test_tampered_manifest(gcopy, good_values, capsys, edit, fragment):
    _tamper(gcopy, edit)
    with pytest.raises(ValueError, match="manifest.json") as exc:
        golden.load(gcopy)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    _check_one_line_error(capsys, gcopy, good_values, "manifest.json", fragment)


def test_manifest_not_utf8(gcopy, good_values, capsys):
    (gcopy / "manifest.json").write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(ValueError, match="manifest.json"):
        golden.load(gcopy)
    _check_one_line_error(capsys, gcopy, good_values, "manifest.json", "UTF-8")


def test_golden_npz_missing_an_array_or_wrong_dtype(gcopy, good_values, capsys):
    p = gcopy / "golden.npz"
    with np.load(p) as data:
        arrays = {k: data[k] for k in data.files}
    del arrays[f"{C0}/jvp"]
    np.savez(p, **arrays)
    _check_one_line_error(capsys, gcopy, good_values, str(p), f"{C0}/jvp")
    arrays[f"{C0}/jvp"] = np.zeros((3, 2), dtype=np.float32)
    np.savez(p, **arrays)
    _check_one_line_error(capsys, gcopy, good_values, str(p), "float32")


def test_values_file_with_an_object_array(small_golden, tmp_path, capsys):
    p = tmp_path / "v.npz"
    np.savez(p, **{f"{C0}/score": np.array([1.0, "a", None], dtype=object)})
    with pytest.raises(ValueError, match="object"):
        golden.check(small_golden, p)
    _check_one_line_error(capsys, small_golden, p, str(p), f"{C0}/score", "object")


def test_npy_header_too_large_never_advises_allow_pickle(tmp_path, capsys):
    p = tmp_path / "big_header.npy"
    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }" + " " * 20000 + "\n").encode()
    p.write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header + b"\0" * 8)
    rc, _, err = call(capsys, "fit", "--data", p, "--out", tmp_path / "t.npy")
    assert rc == 2
    one_line(err, "refscore fit: error:", str(p))


def test_damaged_values_files(small_golden, good_values, tmp_path, capsys):
    raw = good_values.read_bytes()
    p = tmp_path / "v.npz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        golden.check(small_golden, p)
    _check_one_line_error(capsys, small_golden, p, str(p), "truncated")
    flipped = bytearray(raw)
    i = len(raw) // 2
    flipped[i:i + 4] = bytes(b ^ 0x5A for b in flipped[i:i + 4])
    p.write_bytes(bytes(flipped))
    _check_one_line_error(capsys, small_golden, p, str(p))


def test_complex_values_never_pass(small_golden, good_values, tmp_path, capsys):
    with np.load(good_values) as data:
        vals = {k: data[k] for k in data.files}
    key = f"{C0}/score"
    vals[key] = vals[key] + 1e6j
    p = tmp_path / "c.npz"
    np.savez(p, **vals)
    _check_one_line_error(capsys, small_golden, p, str(p), key, "complex")
    with pytest.raises(ValueError, match="complex"):
        golden.check(small_golden, p)
    # a dict from Python: that quantity fails, it is not silently cast to its real part
    res = golden.check(small_golden, vals)
    assert not res.passed and [r.key for r in res.failures] == [key] and "complex" in res.failures[0].note
    # complex training data is refused too
    np.save(tmp_path / "cx.npy", np.ones((5, 2)) * 1j)
    rc, _, err = call(capsys, "fit", "--data", tmp_path / "cx.npy", "--out", tmp_path / "t.npy")
    assert rc == 2
    one_line(err, "refscore fit: error:", "complex")


# ----------------------------------------------------------------- (k) sizes beyond memory
@pytest.mark.parametrize("chains", ["1e10", "10000000000", "10000000000000000"])
def test_huge_chain_count_is_refused_before_allocating(tmp_path, capsys, monkeypatch, chains):
    monkeypatch.setattr(_files, "memory_limit", lambda: 16 * 2 ** 30)
    rc, _, err = call(capsys, "sample", "gaussian2d", "--chains", chains, "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "--chains", "memory", "GiB")
    assert not (tmp_path / "x.npy").exists()


def test_huge_chain_count_against_this_machine(tmp_path, capsys):
    rc, _, err = call(capsys, "sample", "gaussian2d", "--chains", str(10 ** 15), "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "memory")


def test_chains_must_still_be_a_whole_number(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "gaussian2d", "--chains", "2.5", "--out", str(tmp_path / "x.npy")])
    assert exc.value.code == 2
    one_line(capsys.readouterr().err, "--chains: invalid int value")


def test_memory_error_is_one_line(tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.00 TiB for an array with shape (1, 1)")

    monkeypatch.setattr(sampling, "ula", oom)
    rc, _, err = call(capsys, *SAMPLE, "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "out of memory", "Unable to allocate")


def test_values_member_declaring_a_huge_shape(small_golden, tmp_path, capsys):
    p = tmp_path / "huge.npz"
    write_npz_members(p, {f"{C0}/score": npy_bytes((10 ** 12, 2), data=b"\0" * 16)})
    with pytest.raises(ValueError, match="declares"):
        golden.check(small_golden, p)
    _check_one_line_error(capsys, small_golden, p, str(p), f"{C0}/score", "declares")


def test_data_npy_declaring_a_huge_shape(tmp_path, capsys):
    p = tmp_path / "huge.npy"
    p.write_bytes(npy_bytes((10 ** 12, 2), data=b"\0" * 16))
    rc, _, err = call(capsys, "fit", "--data", p, "--out", tmp_path / "t.npy")
    assert rc == 2
    one_line(err, "refscore fit: error:", str(p), "declares")


def test_arrays_larger_than_memory_are_refused(small_golden, good_values, data_file, tmp_path, capsys,
                                               monkeypatch):
    monkeypatch.setattr(_files, "memory_limit", lambda: 256)
    _check_one_line_error(capsys, small_golden, good_values, "memory")
    rc, _, err = call(capsys, "fit", "--data", data_file, "--out", tmp_path / "t.npy")
    assert rc == 2
    one_line(err, "refscore fit: error:", str(data_file), "memory")


# ----------------------------------------------------------------- (l) sampler options
@pytest.mark.parametrize("argv, fragment", [
    (["--sampler", "ula", "--sigmas", "1,0.5"], "--sigmas is only used by --sampler annealed"),
    (["--sigmas", "1,0.5"], "--sigmas is only used by --sampler annealed"),
    (["--sampler", "mala", "--sigmas", "1,0.5"], "--sigmas is only used by --sampler annealed"),
    (["--sampler", "ula", "--levels", "5"], "--levels is only used by --sampler annealed"),
    (["--sampler", "mala", "--sigma-max", "3"], "--sigma-max is only used by --sampler annealed"),
    (["--sampler", "ula", "--sigma-min", "0.3"], "--sigma-min is only used by --sampler annealed"),
])
def test_options_the_sampler_does_not_use_are_refused(tmp_path, capsys, argv, fragment):
    rc, _, err = call(capsys, "sample", "gaussian2d", "--chains", "2", "--steps", "1", *argv,
                      "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", fragment)
    assert not (tmp_path / "x.npy").exists()


def test_annealed_takes_one_noise_schedule(tmp_path, capsys):
    out = tmp_path / "x.npy"
    rc, _, err = call(capsys, "sample", "mixture2d", "--sampler", "annealed", "--sigmas", "3,1",
                      "--levels", "4", "--out", out)
    assert rc == 2
    one_line(err, "refscore sample: error:", "--sigmas", "--levels")
    # either schedule alone is fine
    assert call(capsys, "sample", "mixture2d", "--sampler", "annealed", "--sigmas", "3,1", "--chains", "2",
                "--steps", "1", "--step", "0.001", "--out", out)[0] == 0
    assert call(capsys, "sample", "mixture2d", "--sampler", "annealed", "--levels", "3", "--sigma-max", "5",
                "--chains", "2", "--steps", "1", "--step", "0.001", "--out", out, "--force")[0] == 0


@pytest.mark.parametrize("argv, fragments", [
    (["--levels", "-3"], ("--levels", "-3", "positive integer")),
    (["--levels", "0"], ("--levels", "positive integer")),
    (["--sigma-min", "-1"], ("--sigma-min", "finite and > 0", "-1")),
    (["--sigma-min", "0"], ("--sigma-min", "finite and > 0")),
    (["--sigma-max", "inf"], ("--sigma-max", "finite and > 0")),
    (["--sigma-max", "0.05"], ("--sigma-max", "--sigma-min", "larger")),
    (["--sigmas", "1,-1"], ("--sigmas", "> 0")),
    (["--sigmas", "1,2"], ("--sigmas", "decreasing")),
])
def test_annealed_schedule_errors_name_the_option(tmp_path, capsys, argv, fragments):
    rc, err = status(capsys, "sample", "mixture2d", "--sampler", "annealed", "--chains", "2", "--steps", "1",
                     *argv, "--out", tmp_path / "x.npy")
    assert rc == 2
    line = one_line(err, "refscore sample: error:", *fragments)
    assert "Number of samples" not in line and "Geometric sequence" not in line and "RuntimeWarning" not in err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", ["sample", "fit"])
def test_negative_seed_names_the_option(data_file, tmp_path, capsys, command):
    argv = {"sample": [*SAMPLE, "--out", tmp_path / "s.npy"],
            "fit": [*FIT, "--data", data_file, "--out", tmp_path / "t.npy"]}[command]
    rc, err = status(capsys, *argv, "--seed", "-1")
    assert rc == 2
    one_line(err, f"refscore {command}: error:", "--seed", "non-negative integer", "-1")
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "t.npy").exists()


def test_sample_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--backend {numpy,numba,cuda,dask} sampler backend (default numpy)" in text
    assert "--sampler {ula,mala,annealed} Langevin sampler (default ula)" in text


def test_wrong_target_type_names_the_accepted_types(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({"type": ["gaussian"]}))
    rc, _, err = call(capsys, "sample", spec, "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "gaussian, mixture, banana, student_t")
    assert "unhashable" not in err

    def wrong_type(*args, **kwargs):
        raise TypeError("target must have score(...) and dim, got Banana")

    monkeypatch.setattr(sampling, "ula", wrong_type)
    rc, _, err = call(capsys, *SAMPLE, "--out", tmp_path / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "gaussian2d", "accepted targets", "mixture2d")


# ----------------------------------------------------------------- (m) messages naming the real cause
def test_data_file_path_errors(tmp_path, capsys, monkeypatch):
    out = tmp_path / "t.npy"
    cases = [
        (tmp_path / "none.npy", "not found"),
        (tmp_path, "is a directory"),
        (tmp_path / "afile" / "x.npy", "not a directory"),
    ]
    (tmp_path / "afile").write_text("x")
    np.savez(tmp_path / "z.npz", a=np.zeros(2))
    cases.append((tmp_path / "z.npz", "got an .npz archive"))
    (tmp_path / "junk.npy").write_text("junk")
    cases.append((tmp_path / "junk.npy", "not a .npy array file"))
    for path, fragment in cases:
        rc, _, err = call(capsys, "fit", "--data", path, "--out", out)
        assert rc == 2, path
        one_line(err, "refscore fit: error:", "--data file", fragment)


def test_data_file_permission_denied(data_file, tmp_path, capsys, monkeypatch):
    deny_reading(monkeypatch, data_file)
    rc, _, err = call(capsys, "fit", "--data", data_file, "--out", tmp_path / "t.npy")
    assert rc == 2
    line = one_line(err, "refscore fit: error:", str(data_file), "permission denied")
    assert "not a .npy" not in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads mode-000 files")
def test_data_file_mode_000(data_file, tmp_path, capsys):
    data_file.chmod(0)
    try:
        rc, _, err = call(capsys, "fit", "--data", data_file, "--out", tmp_path / "t.npy")
    finally:
        data_file.chmod(0o644)
    assert rc == 2
    one_line(err, "refscore fit: error:", "permission denied")


def test_target_spec_path_errors(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.npy"
    d = tmp_path / "dir.json"
    d.mkdir()
    rc, _, err = call(capsys, "sample", d, "--out", out)
    assert rc == 2
    one_line(err, "refscore sample: error:", "target spec file", "is a directory")
    bad = tmp_path / "latin.json"
    bad.write_bytes(b'{"type": "gaussian\xe9"}')
    rc, _, err = call(capsys, "sample", bad, "--out", out)
    assert rc == 2
    one_line(err, "refscore sample: error:", str(bad), "UTF-8")
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({"type": "gaussian", "mean": [0.0], "cov": [[1.0]]}))
    deny_reading(monkeypatch, spec)
    rc, _, err = call(capsys, "sample", spec, "--out", out)
    assert rc == 2
    one_line(err, "refscore sample: error:", "target spec file", "is not readable: permission denied")


def test_values_file_path_errors(small_golden, good_values, tmp_path, capsys, monkeypatch):
    _check_one_line_error(capsys, small_golden, tmp_path, "values file", "is a directory")
    _check_one_line_error(capsys, small_golden, tmp_path / "none.npz", "values file", "not found")
    deny_reading(monkeypatch, good_values)
    line = _check_one_line_error(capsys, small_golden, good_values, "values file",
                                 "is not readable: permission denied")
    assert "not a readable .npz" not in line
    with pytest.raises(PermissionError, match="permission denied"):
        golden.check(small_golden, good_values)


def test_golden_directory_path_errors(gcopy, good_values, tmp_path, capsys, monkeypatch):
    _check_one_line_error(capsys, tmp_path / "nowhere", good_values, "golden directory", "not found")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _check_one_line_error(capsys, afile, good_values, "is a file, not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    _check_one_line_error(capsys, empty, good_values, "manifest.json not found")
    deny_reading(monkeypatch, gcopy / "golden.npz")
    _check_one_line_error(capsys, gcopy, good_values, "golden.npz", "is not readable: permission denied")
    monkeypatch.undo()
    (gcopy / "manifest.json").unlink()
    (gcopy / "manifest.json").mkdir()
    _check_one_line_error(capsys, gcopy, good_values, "manifest.json", "is a directory")


def test_output_path_errors(data_file, tmp_path, capsys, monkeypatch):
    d = tmp_path / "d.npy"
    d.mkdir()
    for force in ([], ["--force"]):
        rc, _, err = call(capsys, *SAMPLE, "--out", d, *force)
        assert rc == 2
        one_line(err, "refscore sample: error:", "is a directory")
    (tmp_path / "afile").write_text("x")
    rc, _, err = call(capsys, *SAMPLE, "--out", tmp_path / "afile" / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", "is not a directory")
    rc, _, err = call(capsys, *FIT, "--data", data_file, "--out", tmp_path / "t.npy", "--history", d)
    assert rc == 2
    one_line(err, "refscore fit: error:", "--history", "is a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.fspath(p) == str(locked)
                        else real_access(p, mode, *a, **k))
    rc, _, err = call(capsys, *SAMPLE, "--out", locked / "x.npy")
    assert rc == 2
    one_line(err, "refscore sample: error:", str(locked), "permission denied")
    assert os.listdir(locked) == []


def test_golden_out_permission_denied(tmp_path, capsys, monkeypatch):
    import pathlib

    def no_mkdir(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", no_mkdir)
    rc, _, err = call(capsys, "golden", "--out", tmp_path / "g")
    assert rc == 2
    one_line(err, "refscore golden: error:", "cannot create directory", "permission denied")
