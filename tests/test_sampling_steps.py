"""The pure steps of refscore.sampling.steps: the equations by hand, and the contract that
iterating them with refscore.noise reproduces the reference backend's runs bit for bit."""
import math

import numpy as np
import pytest
from scipy import stats

from refscore.noise import log_unit, normal, uniform
from refscore.sampling import CallableTarget, annealed_langevin, mala, ula
from refscore.sampling.kinetic import INITIAL_MOMENTUM_STEP, aboba_step, baoab_step, kinetic_langevin, obabo_step
from refscore.sampling.samplers import SAMPLERS, STEP_ARGUMENTS, Sampler
from refscore.sampling.single_step import (CounterKey, KineticState, LangevinState, aboba_update, annealed_kernel,
                                           baoab_update, kinetic_kernel, mala_kernel, obabo_update, ula_kernel)
from refscore.sampling.steps import (annealed_level_steps, annealed_update, langevin_step, mala_accept,
                                     mala_log_alpha, mala_step, mala_update, ula_update)


# elementwise scores and log-densities (no BLAS, no reduction over chains): a row's value depends on
# that row alone, so the bitwise comparisons below hold by construction
def _score(x):
    return -x - 0.5 * np.tanh(x)


def _logpdf(x):
    return np.sum(-0.5 * x * x - 0.5 * np.log(np.cosh(x)), axis=1)


def _score_sigma(x, sigma):
    return -x / (1.0 + sigma * sigma) - 0.25 * np.tanh(x)


TARGET = CallableTarget(3, _score, _logpdf)
X0 = np.random.default_rng(4).normal(scale=2.0, size=(17, 3))


def test_langevin_step_is_eq_4():
    x = np.array([[1.0, -2.0], [0.5, 0.0]])
    s = np.array([[-1.0, 2.0], [3.0, -4.0]])
    z = np.array([[0.25, 1.0], [-1.0, 0.5]])
    got = langevin_step(x, s, 0.125, z)
    # x + 0.125 s + 0.5 z, every term exact in binary
    np.testing.assert_array_equal(got, [[1.0 - 0.125 + 0.125, -2.0 + 0.25 + 0.5], [0.5 + 0.375 - 0.5, -0.5 + 0.25]])


def test_langevin_step_checks_its_arguments():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"score must have the shape of x, \(2, 3\), got \(3,\)"):
        langevin_step(x, np.zeros(3), 0.1, x)
    with pytest.raises(ValueError, match=r"z must have the shape of x, \(2, 3\), got \(2, 2\)"):
        langevin_step(x, x, 0.1, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="step must be finite and > 0, got -0.1"):
        langevin_step(x, x, -0.1, x)
    with pytest.raises(TypeError, match="step must be a real number, got str"):
        langevin_step(x, x, "0.1", x)


def test_mala_log_alpha_is_the_metropolis_hastings_ratio_of_the_langevin_proposal():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    eta = 0.3
    sx, sy, lx, ly = _score(x), _score(y), _logpdf(x), _logpdf(y)
    # log p(y) - log p(x) + log q(x | y) - log q(y | x), q(. | x) = N(x + eta s(x), 2 eta I), by scipy
    q = stats.multivariate_normal
    want = np.array([ly[i] - lx[i] + q.logpdf(x[i], y[i] + eta * sy[i], 2 * eta * np.eye(3))
                     - q.logpdf(y[i], x[i] + eta * sx[i], 2 * eta * np.eye(3)) for i in range(5)])
    # scipy's normalising constants cancel in another order: agreement to round-off of O(10) terms
    np.testing.assert_allclose(mala_log_alpha(x, y, sx, sy, lx, ly, eta), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"logp_y must have the shape of x without its last axis, \(5,\), got \(5, 1\)"):
        mala_log_alpha(x, y, sx, sy, lx, ly[:, None], eta)
    with pytest.raises(ValueError, match=r"score_y must have the shape of x"):
        mala_log_alpha(x, y, sx, sy[:, :2], lx, ly, eta)


def test_mala_accept_is_strict_and_uses_the_backends_log():
    u = np.array([0.3, 0.3, 0.3, 0.7])
    la = log_unit(u)
    la = np.array([la[0], np.nextafter(la[1], 1.0), np.nan, -np.inf])
    np.testing.assert_array_equal(mala_accept(la, u), [False, True, False, False])
    with pytest.raises(ValueError, match=r"u must have the shape of log_alpha, \(4,\), got \(3,\)"):
        mala_accept(la, u[:3])


def test_annealed_level_steps():
    np.testing.assert_array_equal(annealed_level_steps(0.05, [4.0, 2.0, 1.0]), [0.8, 0.2, 0.05])
    eta = annealed_level_steps(0.013, [3.0, 1.7, 0.3])
    # step * sigma^2 / sigma_L^2 rounds three times: the last level is step to within an ulp or two
    assert abs(eta[-1] - 0.013) <= 2 * np.spacing(0.013)
    np.testing.assert_allclose(eta, 0.013 * (np.array([3.0, 1.7, 0.3]) / 0.3) ** 2, rtol=1e-15)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        annealed_level_steps(0.1, [1.0, 2.0])


# ------------------------------------------------------------------ the contract: bitwise a refscore run
def test_iterated_langevin_step_is_the_reference_ula_run():
    seed, eta, T = 11, 0.07, 25
    x = X0.copy()
    chains = np.arange(len(x))
    states = []
    for t in range(T):
        x = langevin_step(x, _score(x), eta, normal(seed, chains, t, 3))
        states.append(x)
    res = ula(TARGET, X0, eta, T, seed=seed, backend="numpy", record=1)
    np.testing.assert_array_equal(res.trace, np.array(states))
    np.testing.assert_array_equal(res.x, x)


def test_iterated_mala_step_is_the_reference_mala_run():
    seed, eta, T = 3, 0.6, 30
    x = X0.copy()
    chains = np.arange(len(x))
    accepted = np.zeros(len(x), dtype=int)
    states = []
    for t in range(T):
        x, acc, _ = mala_step(x, _score, _logpdf, eta, normal(seed, chains, t, 3), uniform(seed, chains, t))
        accepted += acc
        states.append(x)
    res = mala(TARGET, X0, eta, T, seed=seed, backend="numpy", record=1)
    assert 0 < accepted.sum() < T * len(x)  # both decisions occur
    np.testing.assert_array_equal(res.trace, np.array(states))
    np.testing.assert_array_equal(res.accept_rate, accepted / T)


def test_iterated_level_steps_are_the_reference_annealed_run():
    seed, step, T = 5, 0.02, 7
    sigmas = np.array([2.0, 0.9, 0.4])
    target = CallableTarget(3, _score_sigma, noise_conditional=True)
    x = X0.copy()
    chains = np.arange(len(x))
    g = 0
    for sigma, eta in zip(sigmas, annealed_level_steps(step, sigmas)):
        for _ in range(T):
            x = langevin_step(x, _score_sigma(x, float(sigma)), eta, normal(seed, chains, g, 3))
            g += 1
    res = annealed_langevin(target, X0, sigmas, step, T, seed=seed, backend="numpy")
    np.testing.assert_array_equal(res.x, x)


def test_sqrt_of_the_step_rounds_as_the_kernels_do():
    # the noise term's factor is sqrt(2 eta), one correctly rounded IEEE sqrt, on every backend
    x, z = np.zeros((1, 1)), np.ones((1, 1))
    for eta in (0.1, 0.07, 1e-5, 3.3):
        assert langevin_step(x, x, eta, z)[0, 0] == math.sqrt(2.0 * eta)


# ------------------------------------------------------------------ the samplers' steps in the step_fn form
def test_the_step_fn_forms_are_the_pure_steps():
    rng = np.random.default_rng(7)
    x, z, u = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.uniform(size=5)
    # the same functions called on the same arrays: equal by construction
    np.testing.assert_array_equal(ula_update(x, _score, 0.3, z), langevin_step(x, _score(x), 0.3, z))
    x1, la = mala_update(x, _score, _logpdf, 0.3, z, u)
    want = mala_step(x, _score, _logpdf, 0.3, z, u)
    np.testing.assert_array_equal(x1, want[0])
    np.testing.assert_array_equal(la, want[2])
    sigmas = (2.0, 0.9, 0.4)
    got = annealed_update(x, lambda v: _score_sigma(v, 0.9), 0.9, sigmas, 0.02, z)
    eta = annealed_level_steps(0.02, sigmas)[1]
    np.testing.assert_array_equal(got, langevin_step(x, _score_sigma(x, 0.9), eta, z))
    with pytest.raises(ValueError, match=r"sigma must be one of sigmas \[2.0, 0.9, 0.4\], got 0.5"):
        annealed_update(x, _score, 0.5, sigmas, 0.02, z)


def _iterate(sampler, x0, sigmas, step, T, seed):
    """``sampler.step`` iterated with refscore.noise, fed its declared inputs."""
    x = x0.copy()
    chains = np.arange(len(x))
    levels = [{"score": _score}] if not sampler.noise_levels else [
        {"score": lambda v, s=float(s): _score_sigma(v, s), "sigma": float(s), "sigmas": tuple(map(float, sigmas))}
        for s in sigmas]
    states, g = [], 0
    for given in levels:
        for _ in range(T):
            args = {**given, "log_prob": _logpdf, "step": step, "z": normal(seed, chains, g, 3),
                    "u": uniform(seed, chains, g)}
            x = sampler.step(x, **{k: args[k] for k in sampler.inputs})
            x = x[0] if sampler.has_accept_test else x
            states.append(x)
            g += 1
    return np.array(states)


@pytest.mark.parametrize("name", [name for name, sampler in SAMPLERS.items()
                                  if sampler.run is not None and sampler.splitting is None])
def test_every_registered_step_iterated_is_its_run(name):
    """Each entry of SAMPLERS with a run function: its step, fed what it declares, iterated over
    refscore.noise, is its public run bit for bit (elementwise target: no BLAS)."""
    sampler = SAMPLERS[name]
    seed, step, T = 9, 0.05, 6
    if sampler.noise_levels:
        sigmas = np.array([2.0, 0.9, 0.4])
        target = CallableTarget(3, _score_sigma, noise_conditional=True)
        res = sampler.run(target, X0, sigmas, step, T, seed=seed, backend="numpy", record=1)
    else:
        sigmas = None
        res = sampler.run(TARGET, X0, step, T, seed=seed, backend="numpy", record=1)
    np.testing.assert_array_equal(res.trace, _iterate(sampler, X0, sigmas, step, T, seed))


@pytest.mark.parametrize("name", ["kinetic_baoab", "kinetic_obabo", "kinetic_aboba"])
def test_every_registered_kinetic_step_iterated_is_its_run(name):
    """A kinetic entry's step, fed its declared inputs and the 2 d normals of each step, iterated from
    given momenta, is kinetic_langevin with that splitting bit for bit (elementwise target)."""
    sampler = SAMPLERS[name]
    seed, h, gamma, T = 4, 0.2, 1.3, 9
    v0 = np.random.default_rng(5).normal(size=X0.shape)
    res = kinetic_langevin(TARGET, X0, h, T, gamma, seed, splitting=sampler.splitting, v0=v0, record=1)
    x, v = X0.copy(), v0.copy()
    for t in range(T):
        args = {"v": v, "score": _score, "step": h, "friction": gamma, "xi": normal(seed, np.arange(17), t, 6)}
        x, v = sampler.step(x, **{k: args[k] for k in sampler.inputs})
        np.testing.assert_array_equal(res.trace[t], x)
        np.testing.assert_array_equal(res.momentum_trace[t], v)


def test_the_registry_declares_what_each_sampler_receives_and_records():
    assert list(SAMPLERS) == ["ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo", "kinetic_aboba"]
    assert [(s.noise_levels, s.has_accept_test, s.splitting) for s in SAMPLERS.values()] == [
        (False, False, None), (False, True, None), (True, False, None), (False, False, "BAOAB"),
        (False, False, "OBABO"), (False, False, "ABOBA")]
    assert (SAMPLERS["ula"].run, SAMPLERS["mala"].run, SAMPLERS["annealed"].run) == (ula, mala, annealed_langevin)
    assert all(SAMPLERS[k].run is kinetic_langevin for k in ("kinetic_baoab", "kinetic_obabo", "kinetic_aboba"))
    assert (SAMPLERS["ula"].step, SAMPLERS["mala"].step, SAMPLERS["annealed"].step) == (ula_update, mala_update,
                                                                                        annealed_update)
    assert (SAMPLERS["kinetic_baoab"].step, SAMPLERS["kinetic_obabo"].step, SAMPLERS["kinetic_aboba"].step) == (
        baoab_update, obabo_update, aboba_update)
    assert (SAMPLERS["ula"].single_step, SAMPLERS["mala"].single_step, SAMPLERS["annealed"].single_step) == (
        ula_kernel, mala_kernel, annealed_kernel)
    assert list(SAMPLERS["annealed"].inputs) == ["score", "sigma", "sigmas", "step", "z"]
    assert list(SAMPLERS["mala"].quantities) == ["states", "accept", "log_alpha"]
    assert list(SAMPLERS["kinetic_aboba"].inputs) == ["v", "score", "step", "friction", "xi"]
    assert list(SAMPLERS["kinetic_aboba"].quantities) == ["states", "momenta"]
    assert STEP_ARGUMENTS["splitting"] == ("v", "friction", "xi")


def _entry(**changes):
    fields = dict(name="toy", about="a toy", update="x <- x", run=None, step=ula_update,
                  inputs={"score": "", "step": "", "z": ""}, returns="x_next (c, d)", quantities={"states": ""},
                  params={"step": 0.1, "steps": 3})
    return Sampler(**{**fields, **changes})


def test_a_sampler_entry_must_declare_what_its_properties_bring():
    assert _entry().inputs == {"score": "", "step": "", "z": ""}
    with pytest.raises(ValueError, match=r"sampler 'toy': inputs must be \['log_prob', 'score', 'step', 'u', 'z'\] "
                                         r"\(the arguments of has_accept_test=True, noise_levels=False\), got"):
        _entry(has_accept_test=True)
    with pytest.raises(ValueError, match=r"sampler 'toy': quantities must be \['states'\]"):
        _entry(quantities={"states": "", "accept": ""})
    with pytest.raises(ValueError, match=r"sampler 'toy': params must be \['sigmas', 'step', 'steps'\]"):
        _entry(noise_levels=True, inputs={"score": "", "sigma": "", "sigmas": "", "step": "", "z": ""})
    kinetic = {k: "" for k in ("v", "score", "step", "friction", "xi")}
    assert _entry(splitting="OBABO", inputs=kinetic, quantities={"states": "", "momenta": ""},
                  params={"step": 0.1, "steps": 3, "friction": 1.0}).splitting == "OBABO"
    with pytest.raises(ValueError, match=r"sampler 'toy': inputs must be \['friction', 'score', 'step', 'v', 'xi'\] "
                                         r"\(the arguments of has_accept_test=False, noise_levels=False, "
                                         r"splitting='BAOAB'\)"):
        _entry(splitting="BAOAB")
    with pytest.raises(ValueError, match=r"sampler 'toy': quantities must be \['momenta', 'states'\]"):
        _entry(splitting="BAOAB", inputs=kinetic, params={"step": 0.1, "steps": 3, "friction": 1.0})
    with pytest.raises(ValueError, match=r"sampler 'toy': params must be \['friction', 'step', 'steps'\]"):
        _entry(splitting="BAOAB", inputs=kinetic, quantities={"states": "", "momenta": ""})
    with pytest.raises(ValueError, match="splitting must be 'BAOAB', 'OBABO' or 'ABOBA', got 'BABO'"):
        _entry(splitting="BABO", inputs=kinetic, quantities={"states": "", "momenta": ""})
    with pytest.raises(ValueError, match="an accept test with noise levels has no golden cases yet"):
        _entry(noise_levels=True, has_accept_test=True,
               inputs={k: "" for k in ("score", "log_prob", "sigma", "sigmas", "step", "z", "u")},
               quantities={"states": "", "accept": "", "log_alpha": ""},
               params={"step": 0.1, "steps": 3, "sigmas": [1.0]})


# ------------------------------------------------------------------ the single-step API: a run is its loop
def _loop(kernel, state, seed, T):
    """``kernel.step`` iterated with the counter keys (seed, chain 0, t): the states and infos."""
    states, infos = [], []
    for t in range(T):
        state, info = kernel.step(state, CounterKey(seed, 0, t))
        states.append(state)
        infos.append(info)
    return states, infos


def test_iterated_ula_kernel_is_the_reference_run():
    states, infos = _loop(ula_kernel(TARGET, 0.07), ula_kernel(TARGET, 0.07).init(X0), 11, 25)
    res = ula(TARGET, X0, 0.07, 25, seed=11, backend="numpy", record=1)
    np.testing.assert_array_equal(np.array([s.position for s in states]), res.trace)
    assert all(i.eta == 0.07 and i.sigma is None and not i.diverged.any() for i in infos)


def test_iterated_mala_kernel_is_the_reference_run():
    k = mala_kernel(TARGET, 0.6)
    states, infos = _loop(k, k.init(X0), 3, 30)
    res = mala(TARGET, X0, 0.6, 30, seed=3, backend="numpy", record=1)
    np.testing.assert_array_equal(np.array([s.position for s in states]), res.trace)
    accepted = np.sum([i.accepted for i in infos], axis=0)
    assert 0 < accepted.sum() < 30 * len(X0)  # both decisions occur
    np.testing.assert_array_equal(accepted / 30, res.accept_rate)
    # the ratio is the pure step's
    x1, _, la = mala_step(X0, _score, _logpdf, 0.6, normal(3, np.arange(17), 0, 3), uniform(3, np.arange(17), 0))
    np.testing.assert_array_equal(infos[0].log_alpha, la)


def test_iterated_annealed_kernel_is_the_reference_run_and_its_level_is_the_counters():
    sigmas, target = np.array([2.0, 0.9, 0.4]), CallableTarget(3, _score_sigma, noise_conditional=True)
    k = annealed_kernel(target, sigmas, 0.02, 7)
    states, infos = _loop(k, k.init(X0), 5, 21)
    res = annealed_langevin(target, X0, sigmas, 0.02, 7, seed=5, backend="numpy", record=1)
    np.testing.assert_array_equal(np.array([s.position for s in states]), res.trace)
    assert [i.sigma for i in infos] == [2.0] * 7 + [0.9] * 7 + [0.4] * 7
    np.testing.assert_array_equal([i.eta for i in infos[::7]], annealed_level_steps(0.02, sigmas))
    with pytest.raises(ValueError, match=r"key.step must be below 3 levels x 7 steps = 21 \(the counter runs "
                                         r"across the levels\), got 21"):
        k.step(states[-1], CounterKey(5, 0, 21))


@pytest.mark.parametrize("splitting", ["BAOAB", "OBABO", "ABOBA"])
def test_iterated_kinetic_kernel_is_the_reference_run(splitting):
    """From the default momenta (drawn at INITIAL_MOMENTUM_STEP from the key's seed and chain) and from
    given ones, with a mass: kinetic_langevin's positions and momenta bit for bit."""
    k = kinetic_kernel(TARGET, 0.15, 0.8, splitting, mass=2.0)
    state = k.init(X0, key=CounterKey(6))
    np.testing.assert_array_equal(state.momentum, np.sqrt(2.0) * normal(6, np.arange(17), INITIAL_MOMENTUM_STEP, 3))
    states, infos = _loop(k, state, 6, 12)
    res = kinetic_langevin(TARGET, X0, 0.15, 12, 0.8, 6, splitting=splitting, mass=2.0, record=1)
    np.testing.assert_array_equal(np.array([s.position for s in states]), res.trace)
    np.testing.assert_array_equal(np.array([s.momentum for s in states]), res.momentum_trace)
    assert not any(i.diverged.any() for i in infos)
    v0 = np.random.default_rng(8).normal(size=X0.shape)
    states, _ = _loop(k, k.init(X0, momentum=v0), 6, 4)
    res = kinetic_langevin(TARGET, X0, 0.15, 4, 0.8, 6, splitting=splitting, mass=2.0, v0=v0, record=1)
    np.testing.assert_array_equal(states[-1].momentum, res.momentum_trace[-1])
    pure = {"BAOAB": baoab_step, "OBABO": obabo_step, "ABOBA": aboba_step}[splitting]
    q1, p1 = pure(X0, v0, _score, 0.15, 0.8, normal(6, np.arange(17), 0, 6), 2.0)
    np.testing.assert_array_equal(_loop(k, k.init(X0, momentum=v0), 6, 1)[0][0].position, q1)


def test_a_key_of_later_chains_is_a_block_of_the_same_run():
    """Rows 5.. of a run, stepped with CounterKey(seed, 5, t): the same numbers (the counter names the noise)."""
    k = ula_kernel(TARGET, 0.1)
    whole, _ = _loop(k, k.init(X0), 2, 4)
    state = k.init(X0[5:])
    for t in range(4):
        state, _ = k.step(state, CounterKey(2, 5, t))
    np.testing.assert_array_equal(state.position, whole[-1].position[5:])
    assert CounterKey(2, 5, 3).next() == CounterKey(2, 5, 4) and CounterKey(2).next(3).step == 3


def test_a_single_step_flags_divergence_and_freezes_nothing():
    def score(x):
        out = -x
        out[0] = np.inf
        return out

    k = ula_kernel(CallableTarget(3, score), 0.1)
    with np.errstate(invalid="ignore"):
        state, info = k.step(k.init(X0), CounterKey(0))
    np.testing.assert_array_equal(info.diverged, np.arange(17) == 0)
    assert np.isinf(state.position[0]).all()  # the state is what the step computed: the caller decides


def test_single_step_validation():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\), got -1"):
        CounterKey(-1)
    with pytest.raises(ValueError, match=r"chain must be an int in \[0, 2\*\*32\), got 4294967296"):
        CounterKey(0, chain=2 ** 32)
    with pytest.raises(TypeError, match=r"step must be an int in \[0, 2\*\*32\), got float"):
        CounterKey(0, step=1.0)
    k = ula_kernel(TARGET, 0.1)
    with pytest.raises(TypeError, match=r"key must be a CounterKey\(seed, chain, step\), got tuple"):
        k.step(k.init(X0), (0, 0, 0))
    with pytest.raises(TypeError, match="state must be a LangevinState"):
        k.step(KineticState(X0, X0), CounterKey(0))
    with pytest.raises(ValueError, match=r"position must have shape \(c, 3\) with c >= 1, got shape \(3,\)"):
        k.init(X0[0])
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        ula_kernel(TARGET, 0.0)
    with pytest.raises(TypeError, match="mala needs a target with logpdf"):
        mala_kernel(CallableTarget(3, _score), 0.1)
    kin = kinetic_kernel(TARGET, 0.1, 1.0)
    with pytest.raises(ValueError, match="give init either the momenta .momentum=. or a key .key=. to draw them"):
        kin.init(X0)
    with pytest.raises(ValueError, match=r"momentum must have the shape of position, \(17, 3\), got \(16, 3\)"):
        kin.init(X0, momentum=X0[1:])
    with pytest.raises(TypeError, match="state must be a KineticState"):
        kin.step(LangevinState(X0), CounterKey(0))
    with pytest.raises(ValueError, match="splitting must be one of"):
        kinetic_kernel(TARGET, 0.1, 1.0, "BABO")
    with pytest.raises(ValueError, match="friction must be a finite real number >= 0, got -1.0"):
        kinetic_kernel(TARGET, 0.1, -1.0)
