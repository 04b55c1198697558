"""The Dask backend on a LocalCluster of 2 worker processes: bitwise equal to
backend="numba" for every block size, worker count and sampler; a worker killed
mid-run changes nothing; reductions merged over any partition are the same bits."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from fractions import Fraction

import numba
import numpy as np
import pytest

pytest.importorskip("distributed")

from refscore.distributions import Banana, Gaussian, GaussianMixture  # noqa: E402
from refscore.noise import NoiseOrigin  # noqa: E402
from refscore.sampling import DivergenceWarning, NumbaTarget, annealed_langevin, mala, ula  # noqa: E402
from refscore.sampling import BACKENDS, DaskBackend  # noqa: E402
from refscore.sampling.dask_backend import default_block_chains  # noqa: E402
from refscore.sampling.registry import get_backend  # noqa: E402
from refscore.sampling.reductions import (DivergenceFlags, Histogram, ModeWeights, Moments,  # noqa: E402
                                          Reduction, exact_sums)

MIX = GaussianMixture([0.3, 0.7], [[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]],
                      [np.eye(3), [[1.0, 0.3, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 2.0]]])
X0 = np.random.default_rng(0).normal(size=(300, 3))
SIG = [2.0, 1.0, 0.5]
# block sizes: dividing n or not, below and above the numba kernel's 128, one block, more than n
BLOCKS = [7, 100, 128, 299, 1000]


def _warm():
    from refscore._kernels import load_cpu_sampler

    load_cpu_sampler()


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"NUMBA_NUM_THREADS": "1"})
    c = Client(cluster)
    c.run(_warm)  # load the cached kernels on both workers once
    yield c
    c.close()
    cluster.close()


def _run(sampler, backend, **kw):
    if sampler == "ula":
        return ula(MIX, X0, 0.05, 37, seed=9, backend=backend, record=5, **kw)
    if sampler == "mala":
        return mala(MIX, X0, 0.2, 23, seed=9, backend=backend, record=4, **kw)
    return annealed_langevin(MIX.perturbed(), X0, SIG, 0.02, 11, seed=9, backend=backend, record=3, **kw)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.trace, b.trace)
    np.testing.assert_array_equal(a.diverged, b.diverged)
    if a.accept_rate is not None or b.accept_rate is not None:
        np.testing.assert_array_equal(a.accept_rate, b.accept_rate)


# ------------------------------------------------------------------ bitwise = numba
@pytest.mark.parametrize("sampler", ["ula", "mala", "annealed"])
def test_bitwise_equal_to_numba_for_every_block_size(client, sampler):
    ref = _run(sampler, "numba")
    for b in BLOCKS:
        _assert_same(_run(sampler, DaskBackend(client=client, block_chains=b)), ref)
    _assert_same(_run(sampler, DaskBackend(client=client)), ref)  # the default block size


def test_chain_offset_through_the_protocol(client):
    # rows 25.. run on their own with chain0 = 25 are rows 25.. of the whole run
    whole = ula(MIX, X0, 0.05, 37, seed=9, backend="numba", record=5)
    x = X0[25:].copy()
    trace, div = np.zeros((7, 275, 3)), np.zeros(275, dtype=bool)
    backend = get_backend(DaskBackend(client=client, block_chains=50))
    out = backend.langevin(MIX, None, np.array([0.05]), 37, x, NoiseOrigin(9, chain0=25), 5, trace, div)
    assert out is None
    np.testing.assert_array_equal(x, whole.x[25:])
    np.testing.assert_array_equal(trace, whole.trace[:, 25:])


def test_numpy_inner_backend_matches_the_numpy_backend(client):
    """Blocks of chains on the numpy inner backend run the target's NumPy/BLAS score per block: a BLAS
    kernel may order a sum differently for another batch size, so rows agree to round-off, not bitwise
    (seen: 7 of 40 chains off by up to 5.6e-16 with blocks of one chain)."""
    x0 = X0[:40]
    ref = ula(MIX, x0, 0.05, 12, seed=2, backend="numpy", record=4)
    x, trace, div = x0.copy(), np.zeros((3, 40, 3)), np.zeros(40, dtype=bool)
    DaskBackend(client=client, block_chains=15, inner="numpy").langevin(MIX, None, np.array([0.05]), 12, x,
                                                                        NoiseOrigin(2), 4, trace, div)
    np.testing.assert_allclose(x, ref.x, rtol=1e-13, atol=1e-13 * np.abs(ref.x).max())
    np.testing.assert_allclose(trace, ref.trace, rtol=1e-13, atol=1e-13 * np.abs(ref.trace).max())


def test_divergence_is_flagged_as_on_numba(client):
    x0 = np.random.default_rng(0).normal(size=(300, 2))
    x0[::4] *= 30.0  # far chains diverge on the banana at this step, near ones do not
    with pytest.warns(DivergenceWarning) as want:
        ref = ula(Banana(0.1, 3.0), x0, 0.05, 100, seed=1, backend="numba")
    assert 0 < ref.diverged.sum() < 300
    # both causes occur here, and the Dask run's warning names each, with the counts numba gives
    assert "reached a non-finite value" in str(want[0].message)
    assert "left the bound" in str(want[0].message)
    with pytest.warns(DivergenceWarning, match=f"{ref.diverged.sum()} of 300 chains") as got_warning:
        got = ula(Banana(0.1, 3.0), x0, 0.05, 100, seed=1, backend=DaskBackend(client=client, block_chains=41))
    assert [str(w.message) for w in got_warning] == [str(w.message) for w in want]
    _assert_same(got, ref)


class _SeenFlags(Reduction):
    """The ``diverged`` a reduction's ``block`` is handed, concatenated in chain order."""

    def block(self, x, diverged):
        return np.array(diverged, copy=True)

    def combine(self, partials):
        return np.concatenate(partials)


def test_a_reduction_is_handed_boolean_flags_while_the_codes_travel_back(client):
    # the blocks keep the int8 status codes (the warning's cause); a reduction sees the documented
    # bool flags, not the codes (2, 3), whose ~ is not "kept"
    x0 = np.random.default_rng(0).normal(size=(300, 2))
    x0[::4] *= 30.0
    with pytest.warns(DivergenceWarning):
        ref = ula(Banana(0.1, 3.0), x0, 0.05, 100, seed=1, backend="numba")
    with pytest.warns(DivergenceWarning, match="reached a non-finite value; .* left the bound"):
        got = ula(Banana(0.1, 3.0), x0, 0.05, 100, seed=1, backend=DaskBackend(client=client, block_chains=41),
                  reduce=_SeenFlags())
    assert got.reduced.dtype == np.bool_
    np.testing.assert_array_equal(got.reduced, ref.diverged)
    # a caller of the protocol that hands bool flags gets bool flags back
    x, div = x0.copy(), np.zeros(300, dtype=bool)
    DaskBackend(client=client, block_chains=41).langevin(Banana(0.1, 3.0), None, np.array([0.05]), 100, x,
                                                         NoiseOrigin(1), 0, np.zeros((0, 300, 2)), div)
    np.testing.assert_array_equal(div, ref.diverged)
    np.testing.assert_array_equal(x, ref.x)


# ------------------------------------------------------------------ a user's numba target
PREC = np.array([[2.0, 0.5], [0.5, 1.0]])


@numba.njit
def _prec_score(x):
    return -(PREC @ x)


@numba.njit
def _prec_logpdf(x):
    return -0.5 * x @ (PREC @ x)


# MALA's custom kernel takes as long again to compile on each worker, by the same code path
@pytest.mark.parametrize("sampler", [ula, pytest.param(mala, marks=pytest.mark.slow)])
def test_a_numba_target_runs_on_dask_bitwise_as_on_numba(client, sampler):
    # the njit functions travel to the worker processes pickled; each worker compiles the
    # custom kernels for them, the same compiler on the same machine: the same bits
    t = NumbaTarget(2, _prec_score, _prec_logpdf)
    x0 = np.random.default_rng(1).standard_normal((300, 2))
    ref = sampler(t, x0, 0.05, 40, seed=5, backend="numba", record=10)
    got = sampler(t, x0, 0.05, 40, seed=5, backend=DaskBackend(client=client, block_chains=128), record=10)
    _assert_same(got, ref)


def test_a_numba_target_the_numba_backend_cannot_run_fails_before_the_run(client, monkeypatch):
    def no_submit(*args, **kwargs):
        raise AssertionError("a task was submitted: the check did not come before the run")

    monkeypatch.setattr(client, "submit", no_submit)
    x0 = np.zeros((4, 2))
    with pytest.raises(TypeError, match="mala needs a log-density"):  # the numba backend's own message
        mala(NumbaTarget(2, _prec_score), x0, 0.05, 3, seed=0, backend=DaskBackend(client=client))


# ------------------------------------------------------------------ reductions
def test_reductions_are_bitwise_the_same_for_every_partition(client):
    x0 = np.random.default_rng(0).normal(size=(300, 2))
    x0[::4] *= 30.0
    banana = Banana(0.1, 3.0)
    with pytest.warns(DivergenceWarning):
        ref = ula(banana, x0, 0.05, 100, seed=1, backend="numba")
    grid = Histogram([np.linspace(-4, 4, 9), np.linspace(-6, 3, 7)])
    modes = ModeWeights([[-2.0, -1.0], [0.0, 0.0], [2.0, -1.0]])
    specs = {"moments": "moments", "diverged": "diverged", "hist": grid, "modes": modes}
    local = {k: r.merge([r.block(ref.x, ref.diverged)])
             for k, r in (("moments", Moments()), ("diverged", DivergenceFlags()), ("hist", grid), ("modes", modes))}
    for name, spec in specs.items():
        for b in (5, 41, 128, 300):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DivergenceWarning)
                res = ula(banana, x0, 0.05, 100, seed=1, backend=DaskBackend(client=client, block_chains=b),
                          reduce=spec)
            assert res.x is None  # nothing per chain but the flags came back
            np.testing.assert_array_equal(res.diverged, ref.diverged)
            got, want = res.reduced, local[name]
            if name == "diverged":
                np.testing.assert_array_equal(got, ref.diverged)
                continue
            for field in vars(want):
                if field != "edges":
                    np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    m = local["moments"]
    keep = ~ref.diverged
    assert m.count == keep.sum() and m.n_diverged == ref.diverged.sum()
    np.testing.assert_allclose(m.mean, ref.x[keep].mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m.cov, np.cov(ref.x[keep].T), rtol=1e-12)
    assert local["hist"].counts.sum() + local["hist"].outside == keep.sum()
    assert local["modes"].counts.sum() == keep.sum()


def test_mala_and_annealed_reductions_and_mode_weights_of_the_target(client):
    ref = _run("annealed", "numba")
    got = _run("annealed", DaskBackend(client=client, block_chains=64), reduce="modes")
    want = ModeWeights(MIX.means).merge([ModeWeights(MIX.means).block(ref.x, ref.diverged)])
    np.testing.assert_array_equal(got.reduced.counts, want.counts)
    np.testing.assert_array_equal(got.trace, ref.trace)  # record= still gathers the trace
    refm = _run("mala", "numba")
    gotm = _run("mala", DaskBackend(client=client, block_chains=64), reduce="moments")
    np.testing.assert_array_equal(gotm.accept_rate, refm.accept_rate)
    np.testing.assert_array_equal(gotm.reduced.mean, Moments().merge([Moments().block(refm.x, refm.diverged)]).mean)


def test_moments_are_the_correctly_rounded_exact_statistics():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((203, 3)) * np.exp(rng.uniform(-40, 40, (203, 3)))
    x[0, 0], x[1, 1], x[2, 2] = 5e-324, -1e300, 0.0
    s, p = exact_sums(x)
    for i in range(3):
        assert s[i] == sum(Fraction(v) for v in x[:, i])
        for j in range(3):
            assert p[i, j] == sum(Fraction(a) * Fraction(b) for a, b in zip(x[:, i], x[:, j]))
    x = rng.standard_normal((101, 2))
    div = rng.random(101) < 0.1
    m = Moments()
    whole = m.merge([m.block(x, div)])
    cuts = [0, 1, 2, 50, 77, 101]
    parts = m.merge([m.block(x[a:b], div[a:b]) for a, b in zip(cuts[:-1], cuts[1:])])
    np.testing.assert_array_equal(whole.mean, parts.mean)
    np.testing.assert_array_equal(whole.cov, parts.cov)
    keep = [[Fraction(v) for v in row] for row in x[~div]]
    n = len(keep)
    mean = [sum(r[i] for r in keep) / n for i in range(2)]
    for i in range(2):
        assert whole.mean[i] == float(mean[i])
        for j in range(2):
            exact = sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in keep) / (n - 1)
            assert whole.cov[i, j] == float(exact)


# ------------------------------------------------------------------ options, registry
def test_options_need_the_dask_backend_and_default_block_size():
    with pytest.raises(ValueError, match="reduce= need backend='dask'"):
        ula(MIX, X0, 0.05, 3, seed=0, backend="numba", reduce="moments")
    with pytest.raises(ValueError, match="reduce must be one of"):
        ula(MIX, X0, 0.05, 3, seed=0, backend="dask", reduce="median")
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ValueError, match=f"block_chains must be a positive int, got {bad!r}"):
            DaskBackend(block_chains=bad)
    with pytest.raises(ValueError, match="n_workers must be a positive int, got 0"):
        DaskBackend(n_workers=0)
    with pytest.raises(ValueError, match="inner must be 'numba' or 'numpy', got 'cuda'"):
        DaskBackend(inner="cuda")
    assert "dask" in BACKENDS and isinstance(get_backend("dask"), DaskBackend)
    for n, steps, w in [(10, 5, 2), (10 ** 6, 1000, 2), (1000, 10 ** 7, 8), (5000, 100, 16)]:
        b = default_block_chains(n, steps, w)
        assert 1 <= b <= n
        assert b == n or b % 128 == 0


@pytest.mark.parametrize("sampler", ["ula", "mala", "annealed"])
def test_client_and_block_chains_keywords_are_deprecated_and_build_the_backend(client, sampler):
    ref = _run(sampler, "numba")
    with pytest.warns(DeprecationWarning, match=r"\(\.\.\., client=, block_chains=\) is deprecated and will be "
                                                r"removed in the next release: pass "
                                                r"backend=DaskBackend\(client=\.\.\., block_chains=\.\.\.\)"):
        got = _run(sampler, "dask", client=client, block_chains=100)
    _assert_same(got, ref)


def test_deprecated_keywords_need_the_dask_name():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="block_chains= need backend='dask', "
                                                                           "got backend='numba'"):
        ula(MIX, X0, 0.05, 3, seed=0, backend="numba", block_chains=10)
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match=r"block_chains= cannot be combined with a backend object, got "
                              r"backend=DaskBackend\(block_chains=5\): give the options to it"):
        ula(MIX, X0, 0.05, 3, seed=0, backend=DaskBackend(block_chains=5), block_chains=10)


def test_a_backend_that_is_not_one_is_a_type_error():
    with pytest.raises(TypeError, match=r"backend must be one of \['cuda', 'dask', 'numba', 'numpy'\] or a backend "
                                        r"object with name, langevin and mala .*, got int"):
        ula(MIX, X0, 0.05, 3, seed=0, backend=3)


def test_a_client_closed_after_the_backend_was_made_is_refused_before_the_run(client):
    from distributed import Client

    other = Client(client.cluster)
    backend = DaskBackend(client=other, block_chains=50)
    other.close()
    with pytest.raises(ValueError, match="client must be connected to a scheduler.*'closed'"):
        ula(MIX, X0, 0.05, 3, seed=0, backend=backend)


_NO_DASK = textwrap.dedent("""
    import sys
    sys.modules["distributed"] = None
    sys.modules["dask"] = None
    import refscore
    from refscore.sampling.registry import get_backend
    try:
        get_backend("dask")
    except ImportError as exc:
        assert "pip install 'refscore[dask]'" in str(exc), exc
    else:
        raise AssertionError("no ImportError")
    print("ok")
""")


def test_dask_is_an_optional_extra():
    code = "import sys, refscore.sampling; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-c", _NO_DASK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


# ------------------------------------------------------------------ one worker, own cluster, a killed worker
@pytest.mark.slow
def test_one_worker_own_local_cluster():
    ref = ula(MIX, X0, 0.05, 37, seed=9, backend="numba", record=5)
    x, trace, div = X0.copy(), np.zeros((7, 300, 3)), np.zeros(300, dtype=bool)
    DaskBackend(n_workers=1, block_chains=64).langevin(MIX, None, np.array([0.05]), 37, x, NoiseOrigin(9), 5,
                                                       trace, div)
    np.testing.assert_array_equal(x, ref.x)
    np.testing.assert_array_equal(trace, ref.trace)
    # and the samplers' own LocalCluster (no client=)
    _assert_same(ula(MIX, X0, 0.05, 37, seed=9, backend=DaskBackend(block_chains=100), record=5), ref)


def test_a_worker_killed_mid_run_changes_nothing(client):
    # last in the module: it leaves the fixture's cluster with a restarted worker
    g = Gaussian([0.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    x0 = np.random.default_rng(3).normal(size=(4096, 2))
    ref = ula(g, x0, 0.05, 10000, seed=4, backend="numba")
    before = set(client.scheduler_info()["workers"])
    victim = sorted(before)[0]
    out = {}

    def run():
        try:
            out["res"] = ula(g, x0, 0.05, 10000, seed=4, backend=DaskBackend(client=client, block_chains=256))
        except BaseException as exc:  # pragma: no cover - reported below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(
            str(k).startswith("refscore-langevin") for k in client.processing().get(victim, ())):
        time.sleep(0.01)
    time.sleep(0.2)  # the task is running, not only assigned
    try:
        client.run(os._exit, 1, workers=[victim])
    except Exception:  # the worker dies before it answers
        pass
    assert t.is_alive()  # the worker died mid-run
    t.join(300)
    assert "exc" not in out, out.get("exc")
    np.testing.assert_array_equal(out["res"].x, ref.x)
    client.wait_for_workers(2, timeout=120)
    assert victim not in client.scheduler_info()["workers"]  # it really died (the nanny started a new one)


# ------------------------------------------------------------------ the CLI
def test_cli_sample_dask_local_cluster_equals_numba(tmp_path):
    import subprocess
    import sys

    outs = []
    for extra in (["--backend", "dask", "--workers", "2"], ["--backend", "numba"]):
        out = tmp_path / f"x{len(outs)}.npy"
        res = subprocess.run([sys.executable, "-m", "refscore", "sample", "gaussian2d", "--chains", "300",
                              "--steps", "20", "--out", str(out), *extra],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_cli_dask_options_checked(tmp_path):
    from refscore import cli

    out = str(tmp_path / "x.npy")
    assert cli.main(["sample", "gaussian2d", "--backend", "numba", "--workers", "2", "--out", out]) == 2
    assert cli.main(["sample", "gaussian2d", "--backend", "dask", "--workers", "0", "--out", out]) == 2
    assert cli.main(["sample", "gaussian2d", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1",
                     "--workers", "2", "--out", out]) == 2
