"""The Dask backend and the reductions under bad input and extreme values: huge finite
states in the moments and the mode assignment, a read-only start, a wrong or closed
client, a reduction that cannot take the states, an interrupted submission.  One
small in-process cluster (one worker thread) for the whole module."""
import math
import signal
import threading
import time
import traceback
import warnings
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("distributed")

from refscore.distributions import Gaussian  # noqa: E402
from refscore.noise import NoiseOrigin  # noqa: E402
from refscore.sampling import ula  # noqa: E402
from refscore.sampling.dask_backend import DaskBackend  # noqa: E402
from refscore.sampling.reductions import (Histogram, ModeWeights, Moments,  # noqa: E402
                                          MomentsOverflowWarning, Reduction)

G = Gaussian([0.0, 0.0], np.eye(2))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _refscore_tasks(client, timeout=30.0):
    """Keys of this package's tasks the scheduler still knows once it has handled what was sent to
    it (a cancellation reaches the scheduler a moment after ``client.cancel`` returns)."""
    def keys(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("refscore-")]

    deadline = time.monotonic() + timeout
    while (left := client.run_on_scheduler(keys)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ------------------------------------------------------------------ moments of huge finite states
def test_moments_whose_covariance_exceeds_float64_are_inf_with_a_warning():
    x = np.array([[1e200, 1.0], [-1e200, 2.0], [3e200, 0.0], [5e199, 4.0]])
    m = Moments()
    with pytest.warns(MomentsOverflowWarning, match=r"^1 covariance entry exceeds the float64 range"):
        res = m.merge([m.block(x, np.zeros(4, dtype=bool))])
    exact = [[Fraction(v) for v in row] for row in x]
    mean = [sum(r[i] for r in exact) / 4 for i in range(2)]
    cov = [[sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in exact) / 3 for j in range(2)] for i in range(2)]
    assert abs(cov[0][0]) > Fraction(np.finfo(float).max)  # the case under test: the variance itself overflows
    np.testing.assert_array_equal(res.mean, [float(mean[0]), float(mean[1])])  # the mean is still exact
    assert res.cov[0, 0] == math.inf
    # the entries that fit are the correctly rounded exact values (no inf leaked into them)
    assert res.cov[0, 1] == res.cov[1, 0] == float(cov[0][1])
    assert res.cov[1, 1] == float(cov[1][1])


def test_moments_whose_sum_of_squares_overflows_but_covariance_fits_stay_exact():
    # sum x^2 is about 3e400, beyond float64; the exact covariance is 0 and the mean 1e200
    x = np.full((3, 1), 1e200)
    m = Moments()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = m.merge([m.block(x[:1], np.zeros(1, dtype=bool)), m.block(x[1:], np.zeros(2, dtype=bool))])
    assert res.mean[0] == 1e200 and res.cov[0, 0] == 0.0


def _reduced_on_dask(client, x, reduce):
    """The reduction of the states ``x`` after zero steps on the Dask backend (the protocol driven
    directly: the samplers keep their chains within GROWTH_BOUND, a reduction takes any finite states)."""
    n, d = x.shape
    status = np.zeros(n, dtype=np.int8)
    out = DaskBackend(client=client, block_chains=16).langevin(G, None, np.array([0.1]), 0, x.copy(), NoiseOrigin(1),
                                                               0, np.zeros((0, n, d)), status, reduce=reduce)
    assert not status.any()
    return out


def test_dask_moments_of_chains_near_1e200_do_not_lose_the_run(client):
    x = np.random.default_rng(0).uniform(0.5, 2.0, size=(40, 2)) * 1e200
    # each entry of the covariance of independent draws at 1e200 is about 1e399: all three overflow
    with pytest.warns(MomentsOverflowWarning, match="^3 covariance entries exceed the float64 range"):
        res = _reduced_on_dask(client, x, "moments")
    assert res.count == 40 and res.n_diverged == 0
    exact = [sum(Fraction(v) for v in x[:, i]) / 40 for i in range(2)]
    np.testing.assert_array_equal(res.mean, [float(exact[0]), float(exact[1])])
    np.testing.assert_array_equal(np.diag(res.cov), [math.inf, math.inf])
    assert np.isinf(res.cov[0, 1]) and res.cov[0, 1] == res.cov[1, 0]


# ------------------------------------------------------------------ modes of huge finite states
def _exact_nearest(x, means):
    """Nearest mean in exact rational arithmetic, ties to the lower index."""
    out = []
    for row in x:
        d2 = [sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(row, mu)) for mu in means]
        out.append(d2.index(min(d2)))
    return np.array(out)


def test_a_state_at_1e200_goes_to_the_mode_in_its_direction():
    means = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
    x = np.array([[2e200, 1e200, -1e200],      # along mode 1
                  [-2e200, 0.0, 1e200],        # along mode 0
                  [1e308, 1.7e308, -1.7e308],  # near the largest float
                  [0.1, 0.2, -0.3]])
    mw = ModeWeights(means)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        res = mw.merge([mw.block(x[i:i + 1], np.zeros(1, dtype=bool)) for i in range(4)])
    want = _exact_nearest(x, means)
    np.testing.assert_array_equal(want, [1, 0, 1, 1])
    np.testing.assert_array_equal(res.counts, np.bincount(want, minlength=2))


def test_mode_assignment_is_the_exact_nearest_mean_at_every_scale():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(4, 3)) * 3.0
    x = rng.normal(size=(300, 3)) * 10.0 ** rng.uniform(-300, 300, size=(300, 1))
    x[:100] = means[rng.integers(0, 4, 100)] + rng.normal(size=(100, 3))  # near the means
    mw = ModeWeights(means)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = [mw.block(x[i:i + 1], np.zeros(1, dtype=bool))[0] for i in range(300)]
    got = np.array([int(np.argmax(c)) for c in counts])
    np.testing.assert_array_equal(got, _exact_nearest(x, means))
    # huge means too
    big = means * 1e300
    np.testing.assert_array_equal(
        [int(np.argmax(ModeWeights(big).block(x[i:i + 1] * 1e8, np.zeros(1, dtype=bool))[0])) for i in range(300)],
        _exact_nearest(x * 1e8, big))


def test_dask_modes_of_a_chain_near_1e200(client):
    means = np.array([[-2.0, 0.0], [2.0, 1.0]])
    x = np.array([[2e200, 1e200], [0.0, 0.0], [-2.0, 0.1]])
    np.testing.assert_array_equal(_reduced_on_dask(client, x, ModeWeights(means)).counts, [2, 1])


# ------------------------------------------------------------------ a read-only start
def test_protocol_refuses_a_read_only_x_before_the_run_when_final_states_are_asked_for(client, monkeypatch):
    x = np.broadcast_to(np.zeros(2), (10, 2))
    monkeypatch.setattr(client, "submit", _no_submit)
    with pytest.raises(ValueError, match="x must be writeable"):
        DaskBackend(client=client).langevin(G, None, np.array([0.1]), 5, x, NoiseOrigin(0), 0, np.zeros((0, 10, 2)),
                                            np.zeros(10, dtype=bool))


def test_a_broadcast_x0_with_reduce_final(client):
    """The final states are gathered into x: a broadcast (read-only) x0 is copied first."""
    res = ula(G, np.broadcast_to(np.ones(2), (10, 2)), 0.1, 5, seed=0, backend=DaskBackend(client=client),
              reduce="final")
    np.testing.assert_array_equal(res.x, ula(G, np.ones((10, 2)), 0.1, 5, seed=0, backend="numba").x)


# ------------------------------------------------------------------ the client
def _no_submit(*args, **kwargs):
    raise AssertionError("a task was submitted: the check did not come before the run")


def test_a_client_that_is_not_a_client_is_a_type_error():
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client, got object"):
        ula(G, np.zeros((4, 2)), 0.1, 5, seed=0, backend=DaskBackend(client=object()))


def test_a_closed_client_is_a_value_error(client):
    from distributed import Client

    closed = Client(client.cluster)
    closed.close()
    with pytest.raises(ValueError, match="client must be connected to a scheduler.*'closed'"):
        ula(G, np.zeros((4, 2)), 0.1, 5, seed=0, backend=DaskBackend(client=closed))


# ------------------------------------------------------------------ reductions checked before the run
@pytest.mark.parametrize("spec, match", [
    (Histogram([np.linspace(0, 1, 3)], dims=[5]), r"dims must be in \[0, 2\) \(the states have dimension 2\), got 5"),
    (Histogram([np.linspace(0, 1, 3), np.linspace(0, 1, 3)], dims=[0, 2]), r"dims must be in \[0, 2\) \(the states have dimension 2\), got 2"),
    (ModeWeights([[0.0, 0.0, 0.0]]), "means have dimension 3, the states 2"),
])
def test_a_reduction_that_cannot_take_the_states_fails_before_the_run(client, monkeypatch, spec, match):
    monkeypatch.setattr(client, "submit", _no_submit)
    with pytest.raises(ValueError, match=match):
        ula(G, np.zeros((4, 2)), 0.1, 5, seed=0, backend=DaskBackend(client=client), reduce=spec)


def test_histogram_dims_must_be_non_negative_integers():
    with pytest.raises(ValueError, match=r"dims must be non-negative integers, got \(-1,\)"):
        Histogram([np.linspace(0, 1, 3)], dims=[-1])
    with pytest.raises(ValueError, match=r"dims must be non-negative integers, got \(0.5,\)"):
        Histogram([np.linspace(0, 1, 3)], dims=[0.5])


def test_reduction_base_check_accepts_any_dimension():
    assert Reduction().check(7) is None


# ------------------------------------------------------------------ interruption
def test_an_interrupted_submission_cancels_what_was_submitted(client, monkeypatch):
    # Ctrl-C while blocks are being submitted: the blocks already submitted are
    # cancelled, even while the traceback (as an interactive session keeps it)
    # still refers to them
    submit = client.submit
    calls = []

    def interrupted_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", interrupted_third)
    x0 = np.zeros((4096, 2))
    kept = None
    try:
        ula(G, x0, 1e-3, 1000, seed=0, backend=DaskBackend(client=client, block_chains=512))
    except KeyboardInterrupt as exc:
        kept = exc  # holds the frames, as sys.last_traceback would
        assert "interrupted" in str(exc)
    assert kept is not None
    assert traceback.extract_tb(kept.__traceback__)
    assert _refscore_tasks(client) == []
    monkeypatch.undo()
    np.testing.assert_array_equal(
        ula(G, x0[:8], 0.1, 5, seed=0, backend=DaskBackend(client=client)).x,
        ula(G, x0[:8], 0.1, 5, seed=0, backend="numba").x)


def _executing(client):
    """Tasks executing on the workers now (a cancelled task still runs until it returns)."""
    return sum(client.run(lambda dask_worker: dask_worker.state.executing_count).values())


def test_an_interrupt_stops_the_blocks_already_running(client):
    # Ctrl-C once a block runs: the queued blocks are cancelled, and the running one stops at its
    # next chunk (it would run for hours otherwise), so the worker is free for the next call
    ula(G, np.zeros((8, 2)), 0.01, 10, seed=0, backend="numba")  # load the kernels first

    def interrupt_once_running():
        deadline = time.monotonic() + 60
        while not _executing(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.raise_signal(signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match="interrupted after 0 of 4 blocks"):
        ula(G, np.zeros((512, 2)), 0.01, 10 ** 9, seed=0, backend=DaskBackend(client=client, block_chains=128))
    assert _refscore_tasks(client) == []
    deadline = time.monotonic() + 60
    while _executing(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _executing(client) == 0
    np.testing.assert_array_equal(ula(G, np.ones((8, 2)), 0.1, 5, seed=0, backend=DaskBackend(client=client)).x,
                                  ula(G, np.ones((8, 2)), 0.1, 5, seed=0, backend="numba").x)
