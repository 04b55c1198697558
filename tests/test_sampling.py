"""Deterministic tests of refscore.sampling: compiled scores vs the targets' own
NumPy scores, backend agreement, thread-count independence, traces, divergence
handling and input validation."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from refscore.distributions import Banana, Gaussian, GaussianMixture, StudentT
from refscore.models.activations import ACTIVATIONS, Activation
from refscore.models import (GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy,
                             MLPScore, NoiseConditional)
from refscore.sampling import DivergenceWarning, annealed_langevin, mala, ula
from refscore._kernels import load_cpu_sampler
from refscore.sampling.targets import compile_target, logpdf_function

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _targets():
    rng = np.random.default_rng(0)
    out = {
        "Gaussian": Gaussian([1.0, -1.0, 0.5], [[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]]),
        "GaussianMixture-iso": GaussianMixture([0.2, 0.8], [[-5.0, -5.0, 0], [5.0, 5.0, 0]],
                                               [np.eye(3), 2.0 * np.eye(3)]),
        "GaussianMixture-full": GaussianMixture(
            [0.3, 0.7], [[0.0, 1.0, 0], [2.0, 2.0, 1]],
            [[[1.0, 0.2, 0], [0.2, 1.0, 0], [0, 0, 1]], [[2.0, 0, 0.3], [0, 0.5, 0], [0.3, 0, 1]]]),
        "StudentT": StudentT([0.0, 1.0, 0.0], [[2.0, 0.3, 0], [0.3, 1.0, 0], [0, 0, 1]], 4.0),
        "Banana": Banana(0.1, 3.0),
    }
    for name, m in [("GaussianModel", GaussianModel(3)), ("LinearScore", LinearScore(3)),
                    ("GaussianMixtureModel", GaussianMixtureModel(3, 4))]:
        th = m.init(1)
        if name != "GaussianMixtureModel":
            th = th + 0.1 * rng.standard_normal(th.shape)
        if name == "LinearScore":  # keep A symmetric so that a log-density exists
            A, b = m.unpack(th)
            th = np.concatenate([(0.5 * (A + A.T)).ravel(), b])
        out[name] = m.bind(th)
    for act in ACTIVATIONS:  # every registry activation, in every compiled sampler
        for M in (MLPScore, MLPEnergy):
            m = M(3, (8, 5), act)
            out[f"{M.__name__}-{act}"] = m.bind(0.7 * m.init(2))
    m = MLPEnergy(3, (6,), "tanh")
    out["MLPEnergy-1hidden"] = m.bind(m.init(3))
    return out


TARGETS = _targets()
MALA_TARGETS = [k for k in TARGETS if not k.startswith("MLPScore")]


def _points(d, n=97, seed=1):
    return np.random.default_rng(seed).normal(scale=2.0, size=(n, d))


def _rel(a, b):
    """Per-point relative error in the Euclidean norm, maximised over points."""
    return np.max(np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-300))


@pytest.mark.parametrize("name", list(TARGETS))
def test_compiled_score_matches_target(name):
    t = TARGETS[name]
    x = _points(t.dim)
    ct = compile_target(t)
    s, lp = load_cpu_sampler().evaluate_points(ct.layout, ct.params[0], x, ct.has_logp)
    # same formulas, different operation order (solves vs precision products,
    # different summation order): agreement to a few ulp times the conditioning
    assert _rel(s, t.score(x)) < 1e-12
    if ct.has_logp:
        ref = logpdf_function(t)(x)
        diff = lp - ref  # equal up to one additive constant
        assert np.max(np.abs(diff - diff[0])) < 1e-12 * max(1.0, np.max(np.abs(ref)))


def test_compiled_noise_conditional_scores_per_level():
    sig = np.array([3.0, 1.0, 0.2])
    mix = TARGETS["GaussianMixture-full"]
    nc = NoiseConditional(MLPScore(3, (8, 8), "silu"))
    bnc = nc.bind(0.5 * nc.model.init(4))
    for t in (mix.perturbed(), TARGETS["Gaussian"].perturbed(), bnc):
        ct = compile_target(t, sig)
        x = _points(3)
        for lev, s in enumerate(sig):
            out, _ = load_cpu_sampler().evaluate_points(ct.layout, ct.params[lev], x, False)
            assert _rel(ct.scale[lev] * out, t.score(x, s)) < 1e-12  # as above


@pytest.mark.parametrize("name", ["Gaussian", "GaussianMixture-full", "Banana", "MLPEnergy-tanh"])
def test_numpy_and_numba_trajectories_agree(name):
    t = TARGETS[name]
    x0 = _points(t.dim, n=300, seed=2) * 0.5
    a = ula(t, x0, 0.01, 100, seed=11, backend="numpy", record=25)
    b = ula(t, x0, 0.01, 100, seed=11, backend="numba", record=25)
    # identical noise; score round-off (~1e-16) is contracted or mildly amplified
    # over 100 steps, so 1e-10 relative is a generous bound (observed ~1e-15)
    assert _rel(b.x, a.x) < 1e-10
    assert np.max(np.abs(b.trace - a.trace)) < 1e-10 * np.max(np.abs(a.trace))
    assert np.array_equal(a.diverged, b.diverged)


@pytest.mark.parametrize("name", ["Gaussian", "StudentT", "GaussianMixtureModel"])
def test_numpy_and_numba_mala_agree(name):
    t = TARGETS[name]
    x0 = _points(t.dim, n=200, seed=3) * 0.5
    a = mala(t, x0, 0.4, 60, seed=5, backend="numpy")
    b = mala(t, x0, 0.4, 60, seed=5, backend="numba")
    # an accept decision could flip only if log u and log alpha agreed to ~1e-15
    assert np.array_equal(a.accept_rate, b.accept_rate)
    assert _rel(b.x, a.x) < 1e-10  # as in the ULA test
    assert 0.3 < a.accept_rate.mean() < 1.0


def test_numpy_and_numba_annealed_agree():
    mix = TARGETS["GaussianMixture-iso"]
    x0 = np.random.default_rng(4).uniform(-8, 8, size=(200, 3))
    sig = np.geomspace(10.0, 0.5, 5)
    a = annealed_langevin(mix.perturbed(), x0, sig, 0.01, 20, seed=8, backend="numpy", record=10)
    b = annealed_langevin(mix.perturbed(), x0, sig, 0.01, 20, seed=8, backend="numba", record=10)
    assert a.trace.shape == (10, 200, 3)
    assert _rel(b.x, a.x) < 1e-10  # as in the ULA test


def test_trace_records_every_k_steps():
    t = TARGETS["Gaussian"]
    x0 = _points(3, n=10)
    full = ula(t, x0, 0.05, 12, seed=1, backend="numba", record=1)
    every4 = ula(t, x0, 0.05, 12, seed=1, backend="numba", record=4)
    assert full.trace.shape == (12, 10, 3) and every4.trace.shape == (3, 10, 3)
    assert np.array_equal(every4.trace, full.trace[3::4])
    assert np.array_equal(full.trace[-1], full.x)
    # the first 5 steps of a 12-step run are a 5-step run: same counters
    assert np.array_equal(ula(t, x0, 0.05, 5, seed=1, backend="numba").x, full.trace[4])


def test_results_independent_of_thread_count():
    t = TARGETS["GaussianMixture-full"]
    x0 = _points(3, n=1000, seed=6)  # 8 blocks of 128 chains
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ula(t, x0, 0.02, 50, seed=3, backend="numba").x
        m1 = mala(t, x0, 0.3, 20, seed=3, backend="numba")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = ula(t, x0, 0.02, 50, seed=3, backend="numba").x
        m2 = mala(t, x0, 0.3, 20, seed=3, backend="numba")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one, two)  # bitwise: a chain's arithmetic ignores its block
    assert np.array_equal(m1.x, m2.x)
    # and a chain's path does not depend on the other chains (chunking)
    assert np.array_equal(ula(t, x0[:130], 0.02, 50, seed=3, backend="numba").x, one[:130])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_divergence_is_flagged_and_frozen(backend):
    t = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])
    x0 = _points(2, n=20)
    # step 30 > 2 / lambda_max = 0.5: |1 - 30*4| = 119 per step, past the bound 1e150 after ~75 steps;
    # said before the run (the bound) and after it (the chains)
    with pytest.warns(DivergenceWarning) as record:
        res = ula(t, x0, 30.0, 160, seed=0, backend=backend)
    messages = [str(w.message) for w in record]
    assert any("step < 2 / lambda_max(P) = 0.5" in m for m in messages)
    assert any("20 of 20 chains diverged" in m and "20 left the bound" in m for m in messages)
    assert res.diverged.all()
    assert np.all(np.isfinite(res.x))
    # a stable step on the same target flags nothing
    assert not ula(t, x0, 0.1, 20, seed=0, backend=backend).diverged.any()
    with pytest.warns(DivergenceWarning):
        m = mala(t, x0, 1e200, 3, seed=0, backend=backend)
    assert m.diverged.all() and np.all(np.isfinite(m.x))


def test_cuda_simulator_agrees_with_numpy():
    code = textwrap.dedent("""
        import numpy as np
        from refscore.distributions import Gaussian, GaussianMixture
        from refscore.models import MLPEnergy
        from refscore.sampling import ula, mala, annealed_langevin
        g = Gaussian([1.0, -1.0, 0.5], [[1, .5, 0], [.5, 2, 0], [0, 0, 1]])
        x0 = np.random.default_rng(0).normal(size=(3, 3))
        worst = 0.0
        def rel(a, b):
            return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        a = ula(g, x0, 0.1, 100, seed=3, backend="numpy", record=50)
        b = ula(g, x0, 0.1, 100, seed=3, backend="cuda", record=50)
        worst = max(worst, rel(b.x, a.x), rel(b.trace, a.trace))
        a = mala(g, x0, 0.5, 10, seed=3, backend="numpy")
        b = mala(g, x0, 0.5, 10, seed=3, backend="cuda")
        worst = max(worst, rel(b.x, a.x), float(np.max(np.abs(a.accept_rate - b.accept_rate))))
        mix = GaussianMixture([.2, .8], [[-5, -5, 0], [5, 5, 0]], [np.eye(3)] * 2)
        a = annealed_langevin(mix.perturbed(), x0, [3.0, 1.0], 0.05, 5, seed=2)
        b = annealed_langevin(mix.perturbed(), x0, [3.0, 1.0], 0.05, 5, seed=2, backend="cuda")
        worst = max(worst, rel(b.x, a.x))
        m = MLPEnergy(3, (5,), "gelu"); e = m.bind(m.init(1))
        a = ula(e, x0, 0.05, 5, seed=2); b = ula(e, x0, 0.05, 5, seed=2, backend="cuda")
        worst = max(worst, rel(b.x, a.x))
        print("WORST", worst)
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=_ROOT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    worst = float(res.stdout.split("WORST")[1])
    assert worst < 1e-10  # the documented round-off tolerance, as for Numba


# ------------------------------------------------------------------ validation
G2 = Gaussian([0.0, 0.0], np.eye(2))
X2 = np.zeros((3, 2))


def test_x0_wrong_shape():
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 2\)"):
        ula(G2, np.zeros((3, 3)), 0.1, 5, seed=0)


def test_x0_not_finite():
    with pytest.raises(ValueError, match="x0 must be finite"):
        ula(G2, np.full((3, 2), np.nan), 0.1, 5, seed=0)


def test_step_not_positive():
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        ula(G2, X2, 0.0, 5, seed=0)


def test_n_steps_negative():
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        mala(G2, X2, 0.1, -1, seed=0)


def test_n_steps_not_int():
    with pytest.raises(TypeError, match="n_steps must be an int"):
        ula(G2, X2, 0.1, 2.5, seed=0)


def test_sigmas_not_decreasing():
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        annealed_langevin(G2.perturbed(), X2, [1.0, 2.0], 0.1, 5, seed=0)


def test_sigmas_not_positive():
    with pytest.raises(ValueError, match="sigmas must be finite and > 0"):
        annealed_langevin(G2.perturbed(), X2, [1.0, 0.0], 0.1, 5, seed=0)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        ula(G2, X2, 0.1, 5, seed=0, backend="jax")


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be an int"):
        ula(G2, X2, 0.1, 5, seed=-3)
    with pytest.raises(TypeError, match="seed must be an int"):
        ula(G2, X2, 0.1, 5, seed="1")


def test_bad_record():
    with pytest.raises(ValueError, match="record must be >= 1"):
        ula(G2, X2, 0.1, 5, seed=0, record=0)


def test_mala_without_log_density():
    with pytest.raises(TypeError, match="mala needs a log-density"):
        mala(TARGETS["MLPScore-tanh"], np.zeros((2, 3)), 0.1, 5, seed=0, backend="numba")


def test_annealed_needs_noise_conditional_target():
    with pytest.raises(TypeError, match="noise-conditional target"):
        annealed_langevin(G2, X2, [2.0, 1.0], 0.1, 5, seed=0, backend="numba")


def test_compiled_sampler_refuses_a_custom_activation_named_like_a_builtin():
    # matched by object, not by name: a user's own "gelu" must never run refscore's gelu
    mine = Activation("gelu", lambda z, order: ACTIVATIONS["tanh"].derivatives(z, order))
    m = MLPScore(2, (4,), mine)
    with pytest.raises(TypeError, match="kernel formulas"):
        ula(m.bind(m.init(0)), X2, 0.1, 5, seed=0, backend="numba")
    ref = ula(m.bind(m.init(0)), X2, 0.1, 5, seed=0, backend="numpy")  # the reference runs it
    assert np.isfinite(ref.x).all()


def test_unsupported_target():
    with pytest.raises(TypeError, match="target must"):
        ula(object(), X2, 0.1, 5, seed=0)


def test_cuda_without_gpu_or_simulator():
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a GPU (or the simulator) is present")
    with pytest.raises(RuntimeError, match="backend='cuda' needs a CUDA GPU or the simulator"):
        ula(G2, X2, 0.1, 5, seed=0, backend="cuda")


# ------------------------------------------------------------------ chunks, chain offsets, Ctrl-C
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_result_is_bitwise_independent_of_chunking_and_chain_offset(backend, monkeypatch):
    # the noise counters are global (chain0 + row, step0 + t), so a run cut into
    # tiny chunks of steps, or into blocks of chains run separately, is the same run
    from refscore.sampling import backends

    mix = TARGETS["GaussianMixture-full"]
    x0 = _points(3)[:40]
    whole = ula(mix, x0, 0.05, 37, seed=9, backend=backend, record=5)
    wmala = mala(mix, x0, 0.05, 23, seed=9, backend=backend, record=4)
    sig = [2.0, 1.0, 0.5]
    wann = annealed_langevin(mix.perturbed(), x0, sig, 0.02, 11, seed=9, backend=backend, record=3)
    monkeypatch.setattr(backends, "FIRST_CHUNK_CHAIN_STEPS", 40 * 3)  # chunks of 3 steps, then tiny
    monkeypatch.setattr(backends, "CHUNK_SECONDS", 1e-9)
    chunked = ula(mix, x0, 0.05, 37, seed=9, backend=backend, record=5)
    cmala = mala(mix, x0, 0.05, 23, seed=9, backend=backend, record=4)
    cann = annealed_langevin(mix.perturbed(), x0, sig, 0.02, 11, seed=9, backend=backend, record=3)
    for a, b in ((whole, chunked), (wmala, cmala), (wann, cann)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.trace, b.trace)
    np.testing.assert_array_equal(wmala.accept_rate, cmala.accept_rate)
    # chains 25.. run on their own with chain0 = 25 equal rows 25.. of the whole run
    from refscore.sampling.registry import get_backend

    runner = get_backend(backend)
    x = np.ascontiguousarray(x0[25:].copy())
    trace = np.zeros((37 // 5, 15, 3))
    div = np.zeros(15, dtype=bool)
    from refscore.noise import NoiseOrigin

    runner.langevin(mix, None, np.array([0.05]), 37, x, NoiseOrigin(9, chain0=25), 5, trace, div)
    if backend == "numpy":
        # the NumPy reference evaluates the target's BLAS score on a batch of another size, whose sums
        # a BLAS kernel may order differently: equal to round-off, not bitwise (numba: own kernels, bitwise)
        np.testing.assert_allclose(x, whole.x[25:], rtol=1e-13, atol=1e-13 * np.abs(whole.x).max())
        np.testing.assert_allclose(trace, whole.trace[:, 25:], rtol=1e-13, atol=1e-13 * np.abs(whole.trace).max())
    else:
        np.testing.assert_array_equal(x, whole.x[25:])
        np.testing.assert_array_equal(trace, whole.trace[:, 25:])


def test_ctrl_c_interrupts_a_compiled_run_within_a_chunk():
    # SIGINT arrives while the numba kernel runs; the driver returns to the
    # interpreter after each ~0.25 s chunk, so the KeyboardInterrupt surfaces
    # long before the run would end, and says how far it got
    import signal
    import threading
    import time

    mix = TARGETS["GaussianMixture-full"]
    ula(mix, _points(3)[:8], 0.01, 2, seed=0, backend="numba")  # compile / load first
    x0 = np.zeros((20000, 3))
    timer = threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt, match=r"interrupted after \d+ of 10000000 steps"):
        ula(mix, x0, 0.01, 10_000_000, seed=0, backend="numba")  # hours if not interrupted
    assert time.perf_counter() - start < 10.0
