"""Robustness of the samplers' core: a user's compiled score checked on every
call and its exceptions surfaced, chains that explode while staying finite,
ULA's stability bound, real-valued custom scores, the score a sampler needs
checked before dispatch, and the one-time compile kept off the chunk clock."""
import os
import subprocess
import sys
import textwrap
import types
import warnings

import numba
import numpy as np
import pytest

from refscore.distributions import Gaussian
from refscore.models import GaussianModel
from refscore.sampling import (GROWTH_BOUND, CallableTarget, DivergenceWarning, NumbaTarget,
                               annealed_langevin, backends, mala, ula)
from refscore._kernels import load_cpu_sampler, load_custom_sampler
from refscore._kernels.score_blocks import BEYOND_BOUND, NONFINITE

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A user's score with a bad temper: -P x (P = [[2, .5], [.5, 1]]) for |x_0| <= 5; a
# length-1 array beyond x_0 = 5, a length-3 array below x_0 = -5; it raises beyond
# x_0 = 50.  Its log-density raises beyond x_1 = 50.  Written out, no BLAS.
@numba.njit
def _moody_score(x):
    if x[0] > 50.0:
        raise ValueError("moody score: too far out")
    if x[0] > 5.0:
        return np.zeros(1)
    if x[0] < -5.0:
        return np.zeros(3)
    return np.array([-(2.0 * x[0] + 0.5 * x[1]), -(0.5 * x[0] + x[1])])


@numba.njit
def _moody_logpdf(x):
    if x[1] > 50.0:
        raise FloatingPointError("moody logpdf: too far out")
    return -0.5 * (2.0 * x[0] * x[0] + x[0] * x[1] + x[1] * x[1])


# the score of N(0, C) with C = [[1, .999], [.999, 1]]: precision eigenvalues 1000 and 0.5
_NEAR_SINGULAR = Gaussian([0.0, 0.0], [[1.0, 0.999], [0.999, 1.0]])
_P_NS = np.linalg.inv(np.array([[1.0, 0.999], [0.999, 1.0]]))


@numba.njit
def _near_singular_score(x):
    return np.array([-(_P_NS[0, 0] * x[0] + _P_NS[0, 1] * x[1]), -(_P_NS[1, 0] * x[0] + _P_NS[1, 1] * x[1])])


def _linear_score(x):
    """_moody_score's good branch, vectorised (the reference route)."""
    return np.stack([-(2.0 * x[:, 0] + 0.5 * x[:, 1]), -(0.5 * x[:, 0] + x[:, 1])], axis=1)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ a user's score checked on every call
@pytest.mark.parametrize("backend, where", [("numba", r"at chain 2, step 0"), ("numpy", r"at row 2 of x")])
@pytest.mark.parametrize("start, length", [(6.0, 1), (-6.0, 3)])
def test_numba_target_score_of_wrong_length_at_another_chain_is_refused(backend, where, start, length):
    # x0[0] is fine (the shape check there passes); chain 2 starts where the score
    # returns a shorter or a longer array: the kernel must not read past it or drop values
    x0 = np.zeros((4, 2))
    x0[2, 0] = start
    t = NumbaTarget(2, _moody_score, _moody_logpdf)
    msg = rf"score\(x\) must return a float array of shape \(2,\) for a point x of shape \(2,\), " \
          rf"got shape \({length},\) {where}"
    for run in (ula, mala):
        with pytest.raises(ValueError, match=msg):
            run(t, x0, 0.1, 3, seed=0, backend=backend)


def test_numba_target_score_of_wrong_length_later_in_the_run_names_the_step():
    # one chain from the origin with an unstable step (|1 - 2.2| > 1): it leaves |x_0| <= 5
    # after a few steps; the reference route with the well-behaved score says at which step
    steps, x0 = 40, np.zeros((1, 2))
    ref = ula(CallableTarget(2, _linear_score), x0, 1.0, steps, seed=4, record=1)
    path = np.concatenate([x0[None], ref.trace])[:, 0, 0]
    g = int(np.flatnonzero(np.abs(path) > 5.0)[0])  # the score is called at x_g in step g
    assert g > 0  # not at the start: the check must run during the run
    length = 1 if path[g] > 5.0 else 3
    with pytest.raises(ValueError, match=rf"got shape \({length},\) at chain 0, step {g} "):
        ula(NumbaTarget(2, _moody_score), x0, 1.0, steps, seed=4, backend="numba")


@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_numba_target_score_that_raises_surfaces_the_users_exception(sampler):
    x0 = np.zeros((5, 2))
    x0[3, 0] = 60.0
    t = NumbaTarget(2, _moody_score, _moody_logpdf)
    run = ula if sampler == "ula" else mala
    with pytest.raises(ValueError, match="moody score: too far out") as info:
        run(t, x0, 0.1, 4, seed=0, backend="numba")
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "chain 3, step 0" in notes and "_moody_score" in notes
    # the NumPy reference raises the same exception
    with pytest.raises(ValueError, match="moody score: too far out"):
        run(t, x0, 0.1, 4, seed=0, backend="numpy")


def test_numba_target_logpdf_that_raises_surfaces_the_users_exception():
    x0 = np.zeros((4, 2))
    x0[1, 1] = 60.0
    with pytest.raises(FloatingPointError, match="moody logpdf: too far out") as info:
        mala(NumbaTarget(2, _moody_score, _moody_logpdf), x0, 0.1, 4, seed=0, backend="numba")
    assert "chain 1, step 0" in " ".join(getattr(info.value, "__notes__", []))


def test_numba_target_refuses_object_mode_functions():
    objmode = numba.jit(forceobj=True)(lambda x: -x)
    with pytest.raises(TypeError, match="score must be compiled in nopython mode"):
        NumbaTarget(2, objmode)
    with pytest.raises(TypeError, match="logpdf must be compiled in nopython mode"):
        NumbaTarget(2, _moody_score, logpdf=objmode)


# ------------------------------------------------------------------ divergence beyond the bound
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_chains_that_explode_but_stay_finite_are_flagged(backend):
    # step 0.01 > 2 / 1000: each step multiplies the top direction by 9; after 200 steps
    # the states would be ~1e189, every value finite
    x0 = np.ones((20, 2)) * np.linspace(-1.0, 1.0, 20)[:, None]
    with pytest.warns(DivergenceWarning) as record:
        res = ula(_NEAR_SINGULAR, x0, 0.01, 200, seed=0, backend=backend)
    messages = [str(w.message) for w in record]
    assert any("2 / lambda_max(P) = 0.002" in m for m in messages)  # warned before the run
    assert any("20 of 20 chains diverged" in m and "20 left the bound |x_i| <= 1e+150" in m
               for m in messages)
    assert res.diverged.all()
    assert np.all(np.isfinite(res.x)) and np.max(np.abs(res.x)) <= GROWTH_BOUND


def test_every_backend_freezes_the_same_chains_at_the_same_step():
    # chains start at magnitudes 1e-3 .. 1e3, so they cross the bound at different steps
    x0 = np.geomspace(1e-3, 1e3, 12)[:, None] * np.array([[1.0, -1.0]])
    a = _quiet(ula, _NEAR_SINGULAR, x0, 0.01, 180, seed=1, backend="numpy", record=1)
    b = _quiet(ula, _NEAR_SINGULAR, x0, 0.01, 180, seed=1, backend="numba", record=1)
    assert a.diverged.all()

    def frozen_at(trace):  # first recorded step after which a chain never moves again
        moved = np.any(trace[1:] != trace[:-1], axis=2)
        return np.array([np.flatnonzero(m)[-1] + 1 if m.any() else 0 for m in moved.T])

    fa = frozen_at(a.trace)
    assert len(set(fa)) >= 3  # the chains do freeze at different steps

    def close(got):  # per step and chain, relative to the state's norm
        err = np.linalg.norm(got - a.trace, axis=2) / np.linalg.norm(a.trace, axis=2)
        return np.max(err)

    np.testing.assert_array_equal(frozen_at(b.trace), fa)
    # same noise; the score's round-off (~1e-16 relative) grows like the states, so the
    # paths agree relatively to far better than 1e-10 (the tolerance of test_sampling)
    assert close(b.trace) < 1e-10
    # and the user-score kernel freezes them the same way
    t = NumbaTarget(2, _near_singular_score)
    c = _quiet(ula, t, x0, 0.01, 180, seed=1, backend="numba", record=1)
    np.testing.assert_array_equal(frozen_at(c.trace), fa)
    assert close(c.trace) < 1e-10


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_divergence_warning_says_why_each_chain_froze(backend, sampler):
    # step 1e300 on precision diag(1, 4): from x = 1e9 the drift overflows (non-finite);
    # from x = 1 it is about -4e300 (the noise, ~1e150, does not matter): finite, beyond the bound
    g = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])
    x0 = np.array([[1e9, 1e9], [1.0, 1.0]])
    run = ula if sampler == "ula" else mala
    with pytest.warns(DivergenceWarning) as record:
        res = run(g, x0, 1e300, 1, seed=0, backend=backend)
    text = " ".join(str(w.message) for w in record)
    assert "2 of 2 chains diverged" in text
    assert "1 reached a non-finite value" in text and "1 left the bound |x_i| <= 1e+150" in text
    np.testing.assert_array_equal(res.x, x0)  # frozen at the start, the last state inside the bound


def test_x0_beyond_the_bound_is_refused():
    with pytest.raises(ValueError, match=r"x0 must lie within \|x_i\| <= 1e\+150"):
        ula(Gaussian([0.0, 0.0], np.eye(2)), np.full((2, 2), 1e151), 0.1, 3, seed=0)


def test_cuda_simulator_freezes_like_numpy():
    code = textwrap.dedent("""
        import warnings
        import numpy as np
        from refscore.distributions import Gaussian
        from refscore.sampling import DivergenceWarning, mala, ula
        warnings.simplefilter("ignore", DivergenceWarning)
        g = Gaussian([0.0, 0.0], [[1.0, 0.999], [0.999, 1.0]])
        x0 = np.geomspace(1e-2, 1e2, 4)[:, None] * np.array([[1.0, -1.0]])
        a = ula(g, x0, 0.01, 170, seed=1, backend="numpy", record=10)
        b = ula(g, x0, 0.01, 170, seed=1, backend="cuda", record=10)
        print("ULA_FLAGS", a.diverged.all() and np.array_equal(a.diverged, b.diverged))
        print("ULA_REL", float(np.max(np.abs(b.trace - a.trace) / np.maximum(np.abs(a.trace), 1e-300))))
        h = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])
        y0 = np.array([[1e9, 1e9], [1.0, 1.0]])
        for run in (ula, mala):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                r = run(h, y0, 1e300, 1, seed=0, backend="cuda")
            print("CAUSES", run.__name__, [str(m.message) for m in w if "chains diverged" in str(m.message)])
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=_ROOT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "ULA_FLAGS True" in out
    rel = float(out.split("ULA_REL")[1].split()[0])
    assert rel < 1e-10  # the documented round-off tolerance, as in test_sampling
    for name in ("ula", "mala"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"CAUSES {name}"))
        assert "1 reached a non-finite value" in line and "1 left the bound" in line


# ------------------------------------------------------------------ ULA's stability bound, before the run
def test_ula_warns_before_a_step_beyond_the_gaussian_stability_bound():
    g = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]])  # precision diag(1, 4): bound 0.5
    x0 = np.zeros((3, 2))
    with pytest.warns(DivergenceWarning, match=r"step 0\.6 is not below ULA's stability bound.*"
                                               r"step < 2 / lambda_max\(P\) = 0\.5"):
        ula(g, x0, 0.6, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        ula(g, x0, 0.4, 20, seed=0)  # stable: no warning
        mala(g, x0, 0.6, 5, seed=0)  # MALA's correction keeps any step stable: no warning
    # a bound model with a linear score knows it too: P = 10 I, bound 0.2
    m = GaussianModel(2)
    bound = m.bind(GaussianModel.theta_from(np.zeros(2), 10.0 * np.eye(2)))
    with pytest.warns(DivergenceWarning, match=r"2 / lambda_max\(P\) = 0\.2"):
        ula(bound, x0, 0.25, 2, seed=0)


def test_annealed_langevin_warns_naming_the_unstable_level():
    # level l has precision (Sigma + sigma_l^2 I)^-1 and step step*sigma_l^2/sigma_L^2;
    # sigmas (1, 0.5), Sigma = diag(1, .25): level 0 has lambda_max = 0.8 and step 4*step,
    # level 1 lambda_max = 2 and step = step.  step 0.7: level 0 unstable (2.24), level 1 not (1.4)
    p = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 0.25]]).perturbed()
    with pytest.warns(DivergenceWarning, match=r"noise level 0 \(sigma = 1\).* = 2\.8, is not below.*"
                                               r"2 / lambda_max\(P\) = 2\.5"):
        annealed_langevin(p, np.zeros((2, 2)), [1.0, 0.5], 0.7, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        annealed_langevin(p, np.zeros((2, 2)), [1.0, 0.5], 0.5, 2, seed=0)


# ------------------------------------------------------------------ CallableTarget values
def test_callable_target_complex_score_is_refused_naming_the_function():
    def my_complex_score(x):
        return -x + 0j

    with pytest.raises(TypeError, match=r"score function .*my_complex_score must be a real array, "
                                         r"got dtype complex128"):
        ula(CallableTarget(2, my_complex_score), np.ones((3, 2)), 0.1, 3, seed=0)


def test_callable_target_list_valued_score_and_logpdf_are_arrays():
    x0 = np.random.default_rng(0).standard_normal((6, 2))
    as_array = CallableTarget(2, _linear_score, logpdf=lambda x: -0.5 * np.sum(x * x, axis=1))
    as_list = CallableTarget(2, lambda x: _linear_score(x).tolist(),
                             logpdf=lambda x: (-0.5 * np.sum(x * x, axis=1)).tolist())
    np.testing.assert_array_equal(ula(as_list, x0, 0.1, 5, seed=2).x, ula(as_array, x0, 0.1, 5, seed=2).x)
    np.testing.assert_array_equal(mala(as_list, x0, 0.1, 5, seed=2).x, mala(as_array, x0, 0.1, 5, seed=2).x)


# ------------------------------------------------------------------ the score a sampler needs, before dispatch
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_noise_conditional_target_in_ula_or_mala_is_one_message_on_every_backend(backend):
    p = Gaussian([0.0, 0.0], np.eye(2)).perturbed()
    for run in (ula, mala):
        with pytest.raises(TypeError, match=rf"{run.__name__} needs a target with score\(x\), got "
                                            r"Perturbed\(.*\), which is noise-conditional \(score\(x, sigma\)\)"):
            run(p, np.zeros((2, 2)), 0.1, 3, seed=0, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_plain_target_in_annealed_langevin_is_one_message_on_every_backend(backend):
    for t in (Gaussian([0.0, 0.0], np.eye(2)), NumbaTarget(2, _moody_score)):
        with pytest.raises(TypeError, match=r"annealed_langevin needs a noise-conditional target with "
                                            r"score\(x, sigma\).*whose score is score\(x\)"):
            annealed_langevin(t, np.zeros((2, 2)), [2.0, 1.0], 0.1, 3, seed=0, backend=backend)


def test_custom_targets_say_which_score_they_have():
    nc = CallableTarget(2, lambda x, sigma: -x / sigma ** 2, noise_conditional=True)
    with pytest.raises(TypeError, match="ula needs a target with score"):
        ula(nc, np.zeros((2, 2)), 0.1, 3, seed=0)

    class Duck:  # no declaration: the signature of its score says
        dim = 2

        def score(self, x, sigma):
            return -x / sigma ** 2

    with pytest.raises(TypeError, match="ula needs a target with score"):
        ula(Duck(), np.zeros((2, 2)), 0.1, 3, seed=0)
    res = annealed_langevin(Duck(), np.zeros((2, 2)), [2.0, 1.0], 0.1, 3, seed=0)
    assert res.x.shape == (2, 2)


# ------------------------------------------------------------------ compile time off the clock
@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_compiled_runs_compile_before_the_bar_and_the_chunk_clock_start(sampler, monkeypatch):
    events = []
    real = load_cpu_sampler()

    def recorded(fn, steps_at):
        def call(*args):
            events.append(("run", args[steps_at]))
            return fn(*args)
        return call

    kernels = types.SimpleNamespace(langevin=recorded(real.langevin, 4), mala=recorded(real.mala, 3))
    monkeypatch.setattr(backends.NumbaBackend, "kernels", lambda self: kernels)

    def clock():
        events.append(("clock",))
        return 0.0

    monkeypatch.setattr(backends, "time", types.SimpleNamespace(perf_counter=clock))
    import tqdm.auto

    real_tqdm = tqdm.auto.tqdm

    def bar(*args, **kwargs):
        events.append(("bar",))
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", bar)
    g = Gaussian([0.0, 0.0], np.eye(2))
    x0 = np.random.default_rng(0).standard_normal((5, 2))
    run = ula if sampler == "ula" else mala
    res = run(g, x0, 0.1, 7, seed=3, backend="numba", progress=False)
    # first the zero-step call (the compile), then the bar, then the timed chunks
    assert events[0] == ("run", 0)
    assert events[1] == ("bar",)
    assert ("run", 0) not in events[1:] and sum(e[1] for e in events if e[0] == "run") == 7
    first_clock = events.index(("clock",))
    assert all(e != ("run", 0) for e in events[first_clock:])
    # the result is the run's, unchanged by the extra call
    monkeypatch.undo()
    np.testing.assert_array_equal(res.x, run(g, x0, 0.1, 7, seed=3, backend="numba").x)


def test_zero_step_kernel_calls_touch_nothing():
    # the driver's compile-ahead call must leave states, status, trace, counts and faults alone,
    # and call no user function (this score raises everywhere)
    @numba.njit
    def always_raises(x):
        if x[0] < 1e300:
            raise ValueError("called")
        return x

    @numba.njit
    def lp(x):
        return 0.0

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2))
    status = np.array([0, NONFINITE, 0, BEYOND_BOUND, 0], dtype=np.int8)
    trace = np.full((2, 5, 2), np.nan)
    accepted = np.arange(5, dtype=np.int64)
    fault = np.zeros((5, 3), dtype=np.int64)
    before = [a.copy() for a in (x, status, trace, accepted, fault)]
    g = Gaussian([0.0, 0.0], np.eye(2)).kernel_block()
    lay, params = g.layout, g.params[None]
    cpu, custom = load_cpu_sampler(), load_custom_sampler()
    k0, k1 = np.uint64(1), np.uint64(2)
    cpu.langevin(lay, params, np.ones(1), np.array([0.1]), 0, x, k0, k1, 0, 3, 1, trace, status)
    cpu.mala(lay, params, 0.1, 0, x, k0, k1, 0, 3, 1, trace, status, accepted)
    custom.langevin(always_raises, 0.1, 0, x, k0, k1, 0, 3, 1, trace, status, fault)
    custom.mala(always_raises, lp, 0.1, 0, x, k0, k1, 0, 3, 1, trace, status, accepted, fault)
    for a, b in zip((x, status, trace, accepted, fault), before):
        np.testing.assert_array_equal(a, b)
