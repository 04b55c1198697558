"""Kinetic Langevin on every sampler backend: the NumPy reference, numba (prange over blocks, and the
NumbaTarget kernel), numba.cuda (through the simulator) and Dask run the same chains.

What is bitwise, and why (the README's table of bitwise claims):

* numba == dask, numba for any thread count, any chunking of the steps and any chain offset, and the
  NumPy reference for any chunking: the same compiled (or NumPy) arithmetic on the same numbers, the
  counter-based noise, and a score recomputed at a chunk's first kick at the very point it was last
  evaluated (a deterministic function: the same bits);
* numpy == numba for a NumbaTarget whose score is built from ``+ - *`` only: both backends call the same
  compiled function at the same points, and the kinetic sub-flows are elementwise ``+ - *`` in the
  same order (no FMA: numba does not contract without fastmath, NumPy never does);
* numpy vs numba (and the CUDA simulator) on the built-in targets: the compiled score sums in another
  order than the target's NumPy/BLAS score, so the paths agree to round-off (1e-10 relative after
  40-100 steps, as the ULA tests state), with the same divergence flags.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import numba
import numpy as np
import pytest

from refscore._kernels import load_cpu_sampler, load_custom_sampler
from refscore._kernels.score_blocks import BEYOND_BOUND, GROWTH_BOUND, NONFINITE
from refscore.distributions import Banana, Gaussian, GaussianMixture, StudentT
from refscore.models import MLPEnergy, MLPScore
from refscore.noise import NoiseOrigin, normal
from refscore.sampling import (CallableTarget, DivergenceWarning, KineticResult, NumbaTarget, kinetic_langevin,
                               kinetic_transient_law)
from refscore.sampling import backends
from refscore.sampling.backends import RunStopped
from refscore.sampling.kinetic import INITIAL_MOMENTUM_STEP, SPLITTINGS, Splitting
from refscore.sampling.registry import get_backend

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = list(SPLITTINGS)
FIELDS = ("x", "momentum", "trace", "momentum_trace", "diverged")


@numba.njit
def _coupled_score(x):
    """A non-linear score from + - * only (no BLAS, no libm): s_i = -(i + 1) x_i + 0.1 x_{i+1} - 0.05 x_i^3."""
    d = x.shape[0]
    out = np.empty(d)
    for i in range(d):
        out[i] = -(i + 1.0) * x[i] + 0.1 * x[(i + 1) % d] - 0.05 * x[i] * x[i] * x[i]
    return out


def _targets():
    out = {
        "Gaussian": Gaussian([1.0, -1.0, 0.5], [[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]]),
        "GaussianMixture": GaussianMixture([0.3, 0.7], [[0.0, 1.0, 0.0], [2.0, 2.0, 1.0]],
                                           [[[1.0, 0.2, 0], [0.2, 1.0, 0], [0, 0, 1]],
                                            [[2.0, 0, 0.3], [0, 0.5, 0], [0.3, 0, 1]]]),
        "StudentT": StudentT([0.0, 1.0, 0.0], [[2.0, 0.3, 0], [0.3, 1.0, 0], [0, 0, 1]], 4.0),
        "Banana": Banana(0.1, 3.0),
    }
    for M in (MLPScore, MLPEnergy):
        m = M(3, (8, 5), "tanh")
        out[M.__name__] = m.bind(0.5 * m.init(2))
    return out


TARGETS = _targets()
NUMBA_TARGET = NumbaTarget(3, _coupled_score)


def _points(d, n, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def _run(target, backend, splitting, n=200, n_steps=40, seed=11, record=10, x0=None, **kw):
    x0 = _points(target.dim, n, 2) if x0 is None else x0
    return kinetic_langevin(target, x0, 0.2, n_steps, 0.8, seed, splitting=splitting, mass=1.3, record=record,
                            backend=backend, progress=False, **kw)


def _assert_bitwise(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def _rel(a, b):
    """Largest per-point relative difference in the Euclidean norm."""
    return np.max(np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-300))


# ------------------------------------------------------------------ numpy vs numba
@pytest.mark.parametrize("splitting", NAMES)
@pytest.mark.parametrize("name", list(TARGETS))
def test_numba_runs_the_reference_chains_to_round_off(name, splitting):
    t = TARGETS[name]
    a = _run(t, "numpy", splitting)
    b = _run(t, "numba", splitting)
    assert isinstance(b, KineticResult) and b.trace.shape == (4, 200, t.dim)
    # identical noise and arithmetic order; the compiled score differs from the target's NumPy score in the
    # last bits (another summation order), which 40 contracting steps carry along: 1e-10 is the bound the
    # ULA tests state (observed ~1e-15)
    for got, want in ((b.x, a.x), (b.momentum, a.momentum), (b.trace, a.trace), (b.momentum_trace, a.momentum_trace)):
        assert _rel(got, want) < 1e-10
    np.testing.assert_array_equal(a.diverged, b.diverged)
    assert not a.diverged.any()


@pytest.mark.parametrize("splitting", NAMES)
def test_a_numba_target_runs_the_reference_chains_bitwise(splitting):
    # the same compiled score function at the same points on both backends, elementwise + - * in the
    # same order, the same noise: bitwise by construction (see the module)
    a = _run(NUMBA_TARGET, "numpy", splitting)
    b = _run(NUMBA_TARGET, "numba", splitting)
    _assert_bitwise(a, b)
    assert np.ptp(b.x) > 1.0  # the chains moved


@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_backend_iterates_the_pure_step_on_the_counter_noise(d):
    # an independent route for what every backend must equal: the public steps, by hand, with
    # xi = noise.normal(seed, chain, k, 2 d); OBABO's second O takes xi[:, d:], which for odd d starts
    # inside a Philox pair (the kernels draw it pair by pair)
    t, n, seed, m = NumbaTarget(d, _coupled_score), 5, 4, 1.3
    x0 = _points(d, n, 1)
    for splitting, step in SPLITTINGS.items():
        q, p = x0.copy(), np.sqrt(m) * normal(seed, np.arange(n), INITIAL_MOMENTUM_STEP, d)
        for k in range(9):
            q, p = step(q, p, t.score, 0.2, 0.8, normal(seed, np.arange(n), k, 2 * d), mass=m)
        for backend in ("numpy", "numba"):
            res = _run(t, backend, splitting, n=n, n_steps=9, seed=seed, record=None, x0=x0)
            np.testing.assert_array_equal(res.x, q, err_msg=f"{splitting} {backend}")
            np.testing.assert_array_equal(res.momentum, p, err_msg=f"{splitting} {backend}")
    # a coordinate's normal does not depend on how many are drawn (BAOAB and ABOBA draw d of them)
    np.testing.assert_array_equal(normal(seed, np.arange(n), 3, d), normal(seed, np.arange(n), 3, 2 * d)[:, :d])


# ------------------------------------------------------------------ chunks, blocks, threads
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("splitting", NAMES)
def test_the_result_does_not_depend_on_the_chunking(backend, splitting, monkeypatch):
    # between chunks the state is (q, p); a chunk's first kick (BAOAB, OBABO) recomputes s(q) at the point
    # where the previous chunk evaluated it last, a deterministic function: the same bits
    targets = [TARGETS["GaussianMixture"], NUMBA_TARGET]
    whole = [_run(t, backend, splitting, n=40, n_steps=37, record=5) for t in targets]
    monkeypatch.setattr(backends, "FIRST_CHUNK_CHAIN_STEPS", 40 * 3)  # chunks of 3 steps, then of 1
    monkeypatch.setattr(backends, "CHUNK_SECONDS", 1e-9)
    for t, w in zip(targets, whole):
        _assert_bitwise(_run(t, backend, splitting, n=40, n_steps=37, record=5), w)


@pytest.mark.parametrize("splitting", NAMES)
def test_a_chunk_boundary_costs_one_score_evaluation_and_changes_no_bit(splitting):
    # the reference evaluates the score once per step (BAOAB and OBABO once more at a run's or chunk's
    # first kick); cut at step 6, the two halves equal the whole run
    calls = []

    def score(x):
        calls.append(len(x))
        return NUMBA_TARGET.score(x)

    t = CallableTarget(3, score)
    k = Splitting.of(splitting, 0.2, 0.8, 1.3)
    x0 = _points(3, 6, 3)
    origin = NoiseOrigin(5)

    def fresh():
        return x0.copy(), np.ones((6, 3)), np.zeros((4, 6, 3)), np.zeros((4, 6, 3)), np.zeros(6, dtype=np.int8)

    x, v, tr, ptr, st = fresh()
    k.run_reference(t.score, 12, x, v, origin, 3, tr, ptr, st)
    first_kick = "B" in splitting[:splitting.index("A")]  # a kick before any drift: s(q) at the start
    assert len(calls) == 12 + first_kick
    calls.clear()
    x2, v2, tr2, ptr2, st2 = fresh()
    k.run_reference(t.score, 6, x2, v2, origin, 3, tr2, ptr2, st2)
    k.run_reference(t.score, 6, x2, v2, origin.shifted(steps=6), 3, tr2, ptr2, st2)
    assert len(calls) == 12 + 2 * first_kick
    for a, b in ((x, x2), (v, v2), (tr, tr2), (ptr, ptr2), (st, st2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_rows_run_from_a_chain_offset_are_those_rows_of_the_whole_run(backend):
    t = TARGETS["GaussianMixture"]
    whole = _run(t, backend, "OBABO", n=40, n_steps=37, record=5)
    k = Splitting.of("OBABO", 0.2, 0.8, 1.3)
    x = np.ascontiguousarray(_points(3, 40, 2)[25:])
    v = np.ascontiguousarray(np.sqrt(1.3) * normal(11, np.arange(25, 40), INITIAL_MOMENTUM_STEP, 3))
    tr, ptr, div = np.zeros((7, 15, 3)), np.zeros((7, 15, 3)), np.zeros(15, dtype=bool)
    get_backend(backend).kinetic(t, k, 37, x, v, NoiseOrigin(11, chain0=25), 5, tr, ptr, div, progress=False)
    pairs = ((x, whole.x[25:]), (v, whole.momentum[25:]), (tr, whole.trace[:, 25:]),
             (ptr, whole.momentum_trace[:, 25:]))
    for got, want in pairs:
        if backend == "numpy":
            # the target's BLAS score on a batch of another size may order its sums differently: round-off
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
        else:  # refscore's own kernels: a chain's arithmetic ignores its neighbours
            np.testing.assert_array_equal(got, want)


def test_numba_results_do_not_depend_on_the_thread_count():
    t = TARGETS["MLPEnergy"]
    x0 = _points(3, 1000, 6)  # 8 blocks of 128 chains
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [_run(t, "numba", s, x0=x0, n_steps=20) for s in NAMES]
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = [_run(t, "numba", s, x0=x0, n_steps=20) for s in NAMES]
    finally:
        numba.set_num_threads(old)
    for a, b in zip(one, two):
        _assert_bitwise(a, b)


# ------------------------------------------------------------------ divergence
_FLAT = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])  # precision diag(1, 4)


def _quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        return kinetic_langevin(*args, **kw)


def _frozen_at(trace):
    """First recorded step after which a chain never moves again."""
    moved = np.any(trace[1:] != trace[:-1], axis=2)
    return np.array([np.flatnonzero(m)[-1] + 1 if m.any() else 0 for m in moved.T])


@pytest.mark.parametrize("splitting", NAMES)
def test_every_backend_freezes_the_same_chains_at_the_same_step(splitting):
    # h sqrt(lambda_max) = 1.2 * 2 > 2: unstable (the deviation grows ~2.7x per step); chains start at
    # 1e-3 .. 1e3 and cross the bound at different steps
    x0 = np.geomspace(1e-3, 1e3, 12)[:, None] * np.array([[1.0, -1.0]])
    v0 = np.zeros((12, 2))

    def run(target, backend):
        return _quiet(target, x0, 1.2, 500, 0.5, 1, splitting=splitting, v0=v0, record=1, backend=backend,
                      progress=False)

    a, b = run(_FLAT, "numpy"), run(_FLAT, "numba")
    assert a.diverged.all()
    fa = _frozen_at(a.trace)
    assert len(set(fa)) >= 3
    np.testing.assert_array_equal(b.diverged, a.diverged)
    np.testing.assert_array_equal(_frozen_at(b.trace), fa)
    np.testing.assert_array_equal(_frozen_at(b.momentum_trace), _frozen_at(a.momentum_trace))
    # same noise; the score's round-off (~1e-16 relative) grows like the states: far below 1e-10
    err = np.linalg.norm(b.trace - a.trace, axis=2) / np.linalg.norm(a.trace, axis=2)
    assert np.max(err) < 1e-10
    # a NumbaTarget runs the same chains on both backends, bitwise (see the module), freezing the same ones
    # at the same steps: its cubic restoring term overshoots from far out
    t = NumbaTarget(2, _coupled_score)
    c, e = run(t, "numpy"), run(t, "numba")
    assert c.diverged.any()
    _assert_bitwise(c, e)
    for r in (a, b, c, e):
        assert np.all(np.abs(r.x) <= GROWTH_BOUND) and np.all(np.abs(r.momentum) <= GROWTH_BOUND)


# h = 1e130 without friction (no noise) on precision diag(1, 4) (or the cubic NumbaTarget score).  Chain 0,
# q = (1, 1), p = (1e100, 1e100): its drifts reach |q| ~ 1e229 (ABOBA's midpoint) or ~1e260 (the new q),
# finite and beyond the bound, and the kick there asks the score at its last state (the reference's
# rule): p stays finite, so the chain freezes as BEYOND_BOUND.  A backend asking s(q) at |q| ~ 1e260
# would get |h/2 s| = inf: NONFINITE.  Chain 1, q = 1e60, p = 0: its first drift overflows to inf, NONFINITE.
_CAUSE_X0 = np.array([[1.0, 1.0], [1e60, 1e60]])
_CAUSE_V0 = np.array([[1e100, 1e100], [0.0, 0.0]])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("splitting", NAMES)
def test_the_warning_says_why_each_chain_froze_on_every_backend(backend, splitting):
    with pytest.warns(DivergenceWarning) as record:
        res = kinetic_langevin(_FLAT, _CAUSE_X0, 1e130, 1, 0.0, 0, splitting=splitting, v0=_CAUSE_V0,
                               backend=backend, progress=False)
    text = " ".join(str(w.message) for w in record)
    assert "2 of 2 chains diverged" in text
    assert "1 reached a non-finite value" in text and "1 left the bound |x_i| <= 1e+150" in text
    np.testing.assert_array_equal(res.x, _CAUSE_X0)  # frozen at the start, the last state inside the bound
    np.testing.assert_array_equal(res.momentum, _CAUSE_V0)


@pytest.mark.parametrize("splitting", NAMES)
def test_status_codes_through_the_protocol_are_the_same_on_every_cpu_kernel(splitting):
    k = Splitting.of(splitting, 1e130, 0.0, 1.0)
    x0 = np.vstack([_CAUSE_X0, [0.0, 0.0]])  # and a chain at the mean with p = 0, no noise: it stays there
    v0 = np.vstack([_CAUSE_V0, [0.0, 0.0]])
    user = NumbaTarget(2, _coupled_score)
    for backend, target in (("numpy", _FLAT), ("numba", _FLAT), ("numpy", user), ("numba", user)):
        x, v = x0.copy(), v0.copy()
        status = np.zeros(3, dtype=np.int8)
        get_backend(backend).kinetic(target, k, 3, x, v, NoiseOrigin(0), 0, np.zeros((0, 3, 2)),
                                     np.zeros((0, 3, 2)), status, progress=False)
        np.testing.assert_array_equal(status, [BEYOND_BOUND, NONFINITE, 0], err_msg=f"{backend} {target}")
        np.testing.assert_array_equal(x, x0)


# ------------------------------------------------------------------ the NumbaTarget kernel's faults
@numba.njit
def _faulty(x):
    """-x, but it raises where x_0 > 3 and returns 3 numbers where x_1 > 3 (one function: one compile)."""
    if x[0] > 3.0:
        raise ValueError("far out")
    if x[1] > 3.0:
        return np.zeros(3)
    return -x


@pytest.mark.parametrize("splitting", NAMES)
def test_a_numba_target_score_that_raises_mid_run_surfaces_the_users_exception(splitting):
    # chain 1 starts at x_0 = 2.9 moving out at p_0 = 4: its first score point past the first drift is
    # beyond 3 (BAOAB and OBABO evaluate at q_1, ABOBA at its midpoint), on step 0
    t = NumbaTarget(2, _faulty)
    x0 = np.array([[0.0, 0.0], [2.9, 0.0]])
    with pytest.raises(ValueError, match="far out") as info:
        kinetic_langevin(t, x0, 0.5, 20, 0.1, 0, splitting=splitting, v0=np.array([[0.0, 0.0], [4.0, 0.0]]),
                         backend="numba", progress=False)
    if hasattr(info.value, "__notes__"):  # Python >= 3.11
        assert "at chain 1, step 0" in " ".join(info.value.__notes__)


def test_a_numba_target_score_of_wrong_length_mid_run_is_named():
    t = NumbaTarget(2, _faulty)
    x0 = np.array([[0.0, 0.0], [0.0, 2.9]])
    with pytest.raises(ValueError, match=r"shape \(2,\).*got shape \(3,\) at chain 1, step 0"):
        kinetic_langevin(t, x0, 0.5, 20, 0.1, 0, v0=np.array([[0.0, 0.0], [0.0, 4.0]]), backend="numba",
                         progress=False)


def test_zero_step_kernel_calls_touch_nothing():
    # the driver's compile-ahead call leaves every array alone and calls no user function (_faulty
    # raises at every one of these points, x_0 = 5)
    rng = np.random.default_rng(0)
    arrays = [np.full((5, 2), 5.0), rng.standard_normal((5, 2)), np.full((2, 5, 2), np.nan),
              np.full((2, 5, 2), np.nan), np.array([0, NONFINITE, 0, BEYOND_BOUND, 0], dtype=np.int8),
              np.zeros((5, 3), dtype=np.int64)]
    before = [a.copy() for a in arrays]
    x, v, tr, ptr, status, fault = arrays
    g = Gaussian([0.0, 0.0], np.eye(2)).kernel_block()
    k = Splitting.of("OBABO", 0.1, 1.0, 1.0)
    k0, k1 = np.uint64(1), np.uint64(2)
    load_cpu_sampler().kinetic(g.layout, g.params[None], k.letters, k.kick, k.drift, k.decay, k.spread, 0, x, v,
                               k0, k1, 0, 3, 1, tr, ptr, status)
    load_custom_sampler().kinetic(_faulty, k.letters, k.kick, k.drift, k.decay, k.spread, 0, x, v, k0, k1,
                                  0, 3, 1, tr, ptr, status, fault)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ Ctrl-C, stop, progress
def test_ctrl_c_interrupts_a_compiled_run_within_a_chunk():
    # SIGINT arrives while the numba kernel runs; the driver returns to the interpreter after each
    # ~0.25 s chunk, so the KeyboardInterrupt surfaces long before the run would end
    mix = TARGETS["GaussianMixture"]
    _run(mix, "numba", "BAOAB", n=8, n_steps=2)  # compile / load first
    timer = threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt, match=r"kinetic interrupted after \d+ of 10000000 steps"):
        kinetic_langevin(mix, np.zeros((20000, 3)), 0.1, 10_000_000, 1.0, 0, backend="numba", progress=False)
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_true_stop_ends_the_run_after_its_first_chunk(backend, monkeypatch):
    monkeypatch.setattr(backends, "FIRST_CHUNK_CHAIN_STEPS", 10 * 4)  # a first chunk of 4 steps
    asked = []

    def stop():
        asked.append(1)
        return True

    k = Splitting.of("BAOAB", 0.1, 1.0, 1.0)
    x, v = _points(3, 10, 0), np.zeros((10, 3))
    with pytest.raises(RunStopped, match="kinetic stopped after 4 of 100 steps"):
        get_backend(backend).kinetic(TARGETS["Gaussian"], k, 100, x, v, NoiseOrigin(0), 0, np.zeros((0, 10, 3)),
                                     np.zeros((0, 10, 3)), np.zeros(10, dtype=bool), progress=False, stop=stop)
    assert len(asked) == 1


def test_compiled_run_compiles_before_the_bar_and_the_chunk_clock_start(monkeypatch):
    events = []
    real = load_cpu_sampler()

    def kinetic(*args):
        events.append(("run", args[7]))
        return real.kinetic(*args)

    monkeypatch.setattr(backends.NumbaBackend, "kernels", lambda self: types.SimpleNamespace(kinetic=kinetic))

    def clock():
        events.append(("clock",))
        return 0.0

    monkeypatch.setattr(backends, "time", types.SimpleNamespace(perf_counter=clock))
    res = _run(TARGETS["Gaussian"], "numba", "OBABO", n=5, n_steps=7)
    assert events[0] == ("run", 0)  # the zero-step call (the compile), before any clock
    assert ("run", 0) not in events[1:] and sum(e[1] for e in events if e[0] == "run") == 7
    monkeypatch.undo()
    _assert_bitwise(res, _run(TARGETS["Gaussian"], "numba", "OBABO", n=5, n_steps=7))


# ------------------------------------------------------------------ the backend argument
def test_backend_options_are_those_of_the_other_samplers():
    t, x0 = TARGETS["Gaussian"], np.zeros((2, 3))
    with pytest.raises(ValueError, match="backend must be one of"):
        kinetic_langevin(t, x0, 0.1, 3, 1.0, 0, backend="jax")
    with pytest.warns(DeprecationWarning, match=r"kinetic_langevin\(\.\.\., client=\) is deprecated"), \
            pytest.raises(ValueError, match="client= need backend='dask'"):
        kinetic_langevin(t, x0, 0.1, 3, 1.0, 0, client=object())

    class NoKinetic:
        name = "mine"

        def langevin(self, *a, **k):
            pass

        def mala(self, *a, **k):
            pass

    with pytest.raises(TypeError, match="kinetic_langevin needs a backend with a kinetic method"):
        kinetic_langevin(t, x0, 0.1, 3, 1.0, 0, backend=NoKinetic())
    with pytest.raises(TypeError, match="the compiled backends need a refscore distribution"):
        kinetic_langevin(CallableTarget(3, lambda x: -x), x0, 0.1, 3, 1.0, 0, backend="numba")


# ------------------------------------------------------------------ numba.cuda, through the simulator
def test_cuda_simulator_runs_the_reference_chains():
    code = textwrap.dedent("""
        import warnings
        import numpy as np
        from refscore.distributions import Gaussian
        from refscore.models import MLPEnergy
        from refscore.sampling import DivergenceWarning, kinetic_langevin
        g = Gaussian([1.0, -1.0, 0.5], [[1, .5, 0], [.5, 2, 0], [0, 0, 1]])
        m = MLPEnergy(3, (5,), "gelu"); e = m.bind(m.init(1))
        x0 = np.random.default_rng(0).normal(size=(3, 3))
        worst = 0.0
        def rel(a, b):
            return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        for s in ("BAOAB", "OBABO", "ABOBA"):
            for t, n in ((g, 30), (e, 5)):
                a = kinetic_langevin(t, x0, 0.2, n, 0.8, 3, splitting=s, mass=1.3, record=5, backend="numpy")
                b = kinetic_langevin(t, x0, 0.2, n, 0.8, 3, splitting=s, mass=1.3, record=5, backend="cuda")
                worst = max(worst, rel(b.x, a.x), rel(b.momentum, a.momentum), rel(b.trace, a.trace),
                            rel(b.momentum_trace, a.momentum_trace))
                assert np.array_equal(a.diverged, b.diverged) and not a.diverged.any()
        print("WORST", worst)
        h = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = kinetic_langevin(h, np.array([[1.0, 1.0], [1e120, 1e120]]), 1e100, 1, 0.0, 0,
                                 v0=np.zeros((2, 2)), backend="cuda")
        print("CAUSES", [str(m.message) for m in w if "chains diverged" in str(m.message)])
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=_ROOT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    worst = float(res.stdout.split("WORST")[1].split()[0])
    assert worst < 1e-10  # the documented round-off tolerance, as for numba
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CAUSES"))
    assert "1 reached a non-finite value" in line and "1 left the bound" in line


# ------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"NUMBA_NUM_THREADS": "1"})
    c = Client(cluster)
    c.run(load_cpu_sampler)  # load the cached kernels on both workers once
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize("splitting", NAMES)
def test_dask_equals_numba_bitwise_for_every_block_size(client, splitting):
    from refscore.sampling import DaskBackend

    for name in ("GaussianMixture", "MLPScore"):
        t = TARGETS[name]
        ref = _run(t, "numba", splitting, n=300, n_steps=23, record=4)
        for block in (7, 128, 1000):  # below and at the kernel's block of 128, one block
            _assert_bitwise(_run(t, DaskBackend(client=client, block_chains=block), splitting, n=300, n_steps=23,
                                 record=4), ref)


def test_dask_freezes_the_chains_numba_freezes(client):
    from refscore.sampling import DaskBackend

    x0 = np.geomspace(1e-3, 1e3, 12)[:, None] * np.array([[1.0, -1.0]])
    a = _quiet(_FLAT, x0, 1.2, 500, 0.5, 1, v0=np.zeros((12, 2)), record=50, backend="numba", progress=False)
    with pytest.warns(DivergenceWarning) as caught:  # the stability bound before the run, the chains after
        b = kinetic_langevin(_FLAT, x0, 1.2, 500, 0.5, 1, v0=np.zeros((12, 2)), record=50,
                             backend=DaskBackend(client=client, block_chains=5), progress=False)
    text = " ".join(str(w.message) for w in caught)
    assert "step * sqrt(lambda_max(P) / mass) < 2" in text
    assert "12 of 12 chains diverged" in text and "left the bound" in text  # the codes travel back, not just flags
    _assert_bitwise(a, b)


@pytest.mark.slow  # each worker compiles the kinetic kernel for the user's function: ~30 s on 2 cores
def test_a_numba_target_runs_on_dask_bitwise_as_on_numba(client):
    from refscore.sampling import DaskBackend

    ref = _run(NUMBA_TARGET, "numba", "ABOBA", n=50, n_steps=15)
    _assert_bitwise(_run(NUMBA_TARGET, DaskBackend(client=client, block_chains=20), "ABOBA", n=50, n_steps=15), ref)


def test_a_callable_target_on_dask_with_the_numpy_inner_backend(client):
    # elementwise + - * only: a row's score does not depend on the batch it is in, so the blocks run the
    # reference's numbers bitwise (a BLAS score would agree to round-off only, see test_dask)
    from refscore.sampling import DaskBackend

    t = CallableTarget(3, lambda x: -x * (1.0 + 0.1 * x * x))
    ref = _run(t, "numpy", "OBABO", n=40, n_steps=12, record=4)
    _assert_bitwise(_run(t, DaskBackend(client=client, block_chains=15, inner="numpy"), "OBABO", n=40, n_steps=12,
                         record=4), ref)


# ------------------------------------------------------------------ Monte Carlo against the exact law
@pytest.mark.slow  # about 10 s per splitting on a loaded core (1e6 chains x 40 steps, and the moments)
@pytest.mark.parametrize("splitting", NAMES)
def test_a_million_numba_chains_have_the_exact_transient_law(splitting):
    """10^6 chains on a 2-D anisotropic Gaussian after 40 steps from q0 fixed, p0 ~ N(0, m I), against
    kinetic_transient_law: the law of (q_k, p_k) is Gaussian N(mean, S), so its fourth moments are
    Isserlis': E[(z_i - m_i)^2 (z_j - m_j)^2] = S_ii S_jj + 2 S_ij^2, and the sample covariance's entry (i, j)
    has variance (S_ii S_jj + S_ij^2) / n; the sample mean's is S_ii / n.

    Threshold 5 standard errors: 4 means + 10 covariance entries per splitting, 42 statistics in the three
    tests; each fails by chance with probability 5.7e-7 (two-sided normal; the estimates are sums of 10^6
    independent chains, normal to far better than needed), all together < 2.4e-5 (union bound).  A wrong
    law is still caught: the negative control compares the same numbers with another splitting's law, whose
    q-covariance differs along the stiff direction by the factor 1/(1 - eps) = 1.2 (OBABO vs BAOAB, ABOBA;
    eps = h^2 lambda_max(P) / (4 m) = 1/6), over 100 standard errors."""
    n, n_steps, h, g, m = 1_000_000, 40, 0.5, 1.0, 1.5
    angle = 0.6
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov2 = R @ np.diag([4.0, 0.25]) @ R.T
    mu, P = np.array([1.0, -0.5]), np.linalg.inv(cov2)
    q0 = np.array([0.5, 0.5])
    res = kinetic_langevin(Gaussian(mu, cov2), np.broadcast_to(q0, (n, 2)), h, n_steps, g, 2024,
                           splitting=splitting, mass=m, backend="numba", progress=False)
    assert not res.diverged.any()
    z = np.hstack([res.x, res.momentum])
    mean, cov = kinetic_transient_law(P, mu, h, g, splitting, n_steps, np.r_[q0, 0.0, 0.0],
                                      np.diag([0.0, 0.0, m, m]), mass=m)
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    z_mean = (z.mean(axis=0) - mean) / se_mean
    emp = np.cov(z, rowvar=False)
    z_cov = (emp - cov) / se_cov
    assert np.all(np.abs(z_mean) < 5), z_mean
    assert np.all(np.abs(z_cov) < 5), z_cov
    # negative control: the same numbers against another splitting's law, where the laws differ in q
    other = {"BAOAB": "OBABO", "OBABO": "BAOAB", "ABOBA": "OBABO"}[splitting]
    _, cov_other = kinetic_transient_law(P, mu, h, g, other, n_steps, np.r_[q0, 0.0, 0.0],
                                         np.diag([0.0, 0.0, m, m]), mass=m)
    assert np.max(np.abs((emp - cov_other) / se_cov)[:2, :2]) > 20
