"""The diffusion samplers on backend="numba" and "dask" (refscore.diffusion.backends,
refscore._kernels.diffusion_sampler): the NumPy reference's run to round-off for every compiled sampler on five
schedules and three data laws; bitwise the same for any thread count, chunking of the steps and cut of the chains
(chain0); Dask blocks bitwise equal to numba; the kernel's denoiser against Denoiser.x0 (far field included);
divergence raised at the step where the reference fails, never NaN returned; what does not compile refused by
name; Ctrl-C within a chunk."""
import signal
import threading
import time
import types

import numba
import numpy as np
import pytest

import refscore._kernels as floor
from refscore.diffusion import EDM, VE, VP, Denoiser, Flow, VPDiscrete
from refscore.diffusion import backends as dbackends
from refscore.diffusion.samplers import sample
from refscore.distributions import Gaussian, GaussianMixture
from refscore.noise import normal
from refscore.sampling import backends as chunked

MIX = GaussianMixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2) * 0.2, [[0.4, 0.1], [0.1, 0.3]]])
MIX3 = GaussianMixture([0.2, 0.3, 0.5], [[-1.0, 0.0, 2.0], [1.0, 0.5, 0.0], [0.0, 0.0, -3.0]],
                       [np.eye(3) * 0.2, [[0.5, 0.2, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.4]],
                        np.diag([1.0, 0.1, 0.01])])
DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
VPD = VPDiscrete()


def _grids():
    """(schedule, grid): EDM's Karras grid, VP and VE to 1e-3 (score_sde's eps), flow to 0, DDPM's leading
    spacing ending at the clean timestep -1 (as tests/test_diffusion_samplers.py)."""
    return {
        "edm": (EDM(), EDM().grid(12)),
        "vp": (VP(), np.linspace(1.0, 1e-3, 15)),
        "ve": (VE(), np.linspace(1.0, 1e-3, 15)),
        "flow": (Flow(), np.linspace(0.999, 0.0, 15)),
        "ddpm": (VPD, np.append(VPD.timesteps(10, "leading", 1), -1.0).astype(float)),
    }


#: every compiled sampler and its stochastic variants (pc's step sizes are set per schedule by _case)
CASES = [
    ("euler", {}),
    ("euler", {"S_churn": 10.0, "S_tmax": 50.0}),
    ("heun", {}),
    ("heun", {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0, "S_noise": 1.003}),
    ("ddim", {}),
    ("ddim", {"eta": 0.5}),
    ("ddpm", {}),
    ("ddpm", {"variance": "large"}),
    ("euler_ancestral", {}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("dpmpp_2m", {}),
    ("pc", {}),
    ("pc", {"predictor": "euler_maruyama", "order": "predictor_first", "corrector_steps": 2, "denoise": False}),
]


def _case(sampler, options, schedule, grid):
    """``(options, grid)`` of a run.  pc's corrector step sizes: score_sde's snr rule gives eps ~ 2 snr^2 sigma^2
    on its data; a fixed 0.05 sigma(t_c)^2 at each corrector's time t_c is stable on every schedule here.  With
    predictor_first the last corrector runs at the grid's end, so a grid ending at sigma = 0 loses that time."""
    o = dict(options)
    if sampler != "pc":
        return o, grid
    if o.get("order") == "predictor_first" and schedule.sigma(float(grid[-1])) == 0.0:
        grid = grid[:-1]
    tc = grid[1:] if o.get("order") == "predictor_first" else grid[:-1]
    o["step_size"] = np.outer(0.05 * np.asarray(schedule.sigma(tc)) ** 2, np.ones(o.get("corrector_steps", 1)))
    return o, grid


def _x_init(schedule, grid, d, n=257):
    """n chains (two blocks of 128 and one more) drawn from the prior at grid[0]."""
    return normal(3, np.arange(n), 0, d) * schedule.sigma(grid[0])


def _runs_to_compare():
    for data in (MIX, MIX3, DATA):
        for name, (schedule, grid) in _grids().items():
            if name == "ddpm" and data is MIX3:
                continue
            yield data, name, schedule, grid


# ------------------------------------------------------------------ numba against the NumPy reference
@pytest.mark.parametrize("sampler, options", CASES, ids=[f"{s}-{'-'.join(o) or 'default'}" for s, o in CASES])
def test_numba_is_the_numpy_reference_to_round_off(sampler, options):
    """The kernel computes the reference's step with its terms grouped differently (the per-step coefficients
    of docs/diffusion.md §6.2 multiplied out on the host: e.g. (1 + h b_u) x + h c_u x0 for x + h u) and the
    mixture denoiser's sums (eigen-coordinates, logits, responsibilities) in another order than NumPy's: a few
    ulp of the largest term per step, carried through <= 15 steps and amplified by the run's sensitivity to its
    state.  On these data (overlapping components) that sensitivity is mild: bound 1e-12 relative to max(1, |x|),
    the largest difference measured over these 13 samplers x 5 schedules x 3 data laws being 7e-14; a wrong
    coefficient or a wrong noise block moves the result by O(1).  (Far-apart modes amplify round-off for the
    chains that linger on the boundary between them: up to 1e-11 for 1 in 1e5 chains of the bench's W1, whose
    median difference is 2e-15.)"""
    ran = 0
    for data, name, schedule, grid in _runs_to_compare():
        den = Denoiser(data, schedule)
        x = _x_init(schedule, grid, data.dim)
        o, grid = _case(sampler, options, schedule, grid)
        try:
            want = sample(sampler, den, schedule, x, grid, seed=5, **o)
        except ValueError as exc:  # the reference refuses this run: numba refuses it with the same message
            with pytest.raises(ValueError) as got:
                sample(sampler, den, schedule, x, grid, seed=5, backend="numba", **o)
            assert str(got.value) == str(exc)
            continue
        got = sample(sampler, den, schedule, x, grid, seed=5, backend="numba", progress=False, **o)
        assert got.shape == want.shape and np.all(np.isfinite(got))
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale, err_msg=f"{name}, d = {data.dim}")
        ran += 1
    assert ran >= 10  # most (schedule, data) pairs run: churn beyond VP's and VE's top is refused by both


def test_record_gives_the_reference_path_and_info():
    for sampler, options, key in [("heun", {"S_churn": 40.0, "S_tmax": 50.0}, "t_hat"), ("pc", {}, "step_size")]:
        schedule, grid = _grids()["edm"]
        den = Denoiser(MIX, schedule)
        o, grid = _case(sampler, options, schedule, grid)
        x = _x_init(schedule, grid, 2, n=40)
        want = sample(sampler, den, schedule, x, grid, seed=2, record=True, **o)
        got = sample(sampler, den, schedule, x, grid, seed=2, record=True, backend="numba", progress=False, **o)
        assert got.path.shape == (len(grid), 40, 2)
        np.testing.assert_array_equal(got.path[0], x)
        np.testing.assert_array_equal(got.path[-1], got.x)
        np.testing.assert_allclose(got.path, want.path, rtol=0, atol=1e-12 * max(1.0, np.abs(want.path).max()))
        assert set(got.info) == set(want.info) == {key}
        np.testing.assert_array_equal(got.info[key], want.info[key])  # the same host-side numbers


# ------------------------------------------------------------------ the kernel's denoiser
def test_the_kernels_denoiser_is_the_denoiser_far_field_included():
    """denoise_points against Denoiser.x0 at points near and far (the far field: every logit overflows and the
    responsibilities come from rescaled displacements, in both).  Round-off: the same formulas summed in another
    order, 1e-13 relative to max(1, |x0|)."""
    from refscore._kernels import load_diffusion_sampler

    k = load_diffusion_sampler()
    for data in (MIX, MIX3, DATA):
        for name, (schedule, grid) in _grids().items():
            den = Denoiser(data, schedule)
            ts = [float(t) for t in grid if schedule.sigma(float(t)) > 0]
            program = types.SimpleNamespace(eval_alpha=np.array([schedule.alpha(t) for t in ts]),
                                            eval_sigma=np.array([schedule.sigma(t) for t in ts]))
            arrays = dbackends._data_arrays(den, program)
            rng = np.random.default_rng(len(ts))
            x = np.concatenate([rng.normal(size=(300, data.dim)) * 3.0,
                                rng.normal(size=(5, data.dim)) * 1e160])  # far field: |y|^2 overflows
            for e, t in enumerate(ts):
                want = den.x0(x, t)
                got = k.denoise_points(*arrays, e, x)
                assert np.all(np.isfinite(got))
                scale = np.maximum(1.0, np.abs(want).max(axis=1, keepdims=True))
                assert np.all(np.abs(got - want) <= 1e-13 * scale), (name, t, np.max(np.abs(got - want) / scale))


# ------------------------------------------------------------------ bitwise invariances
_BITWISE = [("ddpm", {}), ("heun", {"S_churn": 40.0, "S_tmax": 50.0}), ("dpmpp_2m", {}),
            ("pc", {"corrector_steps": 2}), ("euler_ancestral", {"eta": 0.7})]


def _edm_run(sampler, options, n=300, chain0=0, x=None, backend="numba", **kw):
    schedule, grid = _grids()["edm"]
    options, grid = _case(sampler, options, schedule, grid)
    x = _x_init(schedule, grid, 3, n=n) if x is None else x
    return sample(sampler, Denoiser(MIX3, schedule), schedule, x, grid, seed=7, chain0=chain0, record=True,
                  backend=backend, progress=False, **options, **kw)


def _assert_bitwise(a, b):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.path, b.path)


@pytest.mark.parametrize("sampler, options", _BITWISE)
def test_the_result_does_not_depend_on_the_chunking(sampler, options, monkeypatch):
    # between chunks the state is X and P (dpmpp_2m's previous x0); the noise counters are global steps
    whole = _edm_run(sampler, options)
    monkeypatch.setattr(chunked, "FIRST_CHUNK_CHAIN_STEPS", 300 * 3)  # chunks of 3 steps, then of 1
    monkeypatch.setattr(chunked, "CHUNK_SECONDS", 1e-9)
    _assert_bitwise(_edm_run(sampler, options), whole)


@pytest.mark.parametrize("sampler, options", _BITWISE)
def test_rows_run_alone_from_their_chain_offset_are_the_rows_of_the_whole_run(sampler, options):
    whole = _edm_run(sampler, options)
    x = whole.path[0]
    for lo, hi in [(0, 1), (5, 133), (128, 300), (299, 300)]:
        part = _edm_run(sampler, options, x=x[lo:hi], chain0=lo)
        np.testing.assert_array_equal(part.x, whole.x[lo:hi])
        np.testing.assert_array_equal(part.path, whole.path[:, lo:hi])


def test_numba_results_do_not_depend_on_the_thread_count():
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [_edm_run(s, o, n=1000) for s, o in _BITWISE]  # 8 blocks of 128 chains
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = [_edm_run(s, o, n=1000) for s, o in _BITWISE]
    finally:
        numba.set_num_threads(old)
    for a, b in zip(one, two):
        _assert_bitwise(a, b)


def test_the_compile_ahead_call_comes_first_and_draws_nothing(monkeypatch):
    from refscore._kernels import load_diffusion_sampler

    real = load_diffusion_sampler()
    calls = []

    def run(*args):
        calls.append(args[9])  # n_steps
        return real.run(*args)

    monkeypatch.setattr(floor, "load_diffusion_sampler", lambda: types.SimpleNamespace(run=run))
    res = _edm_run("ddpm", {}, n=20)
    assert calls[0] == 0 and 0 not in calls[1:] and sum(calls) == 12
    monkeypatch.undo()
    _assert_bitwise(res, _edm_run("ddpm", {}, n=20))


# ------------------------------------------------------------------ divergence
def _diverging_pc():
    """pc on EDM with a corrector step 9 sigma^2, 10 corrector steps: where sigma^2 dominates the data's variance
    the score is about -x/sigma^2 and each corrector step multiplies the state by about 1 - 9 = -8, so the states
    overflow after some 35 steps."""
    schedule = EDM()
    grid = schedule.grid(80)[:-1]
    step = np.outer(9.0 * schedule.sigma(grid[:-1]) ** 2, np.ones(10))
    return schedule, grid, step, _x_init(schedule, grid, 2, n=200)


def test_divergence_is_raised_at_the_step_where_the_reference_fails_never_returned_as_nan():
    schedule, grid, step, x = _diverging_pc()
    den = Denoiser(MIX, schedule)
    with pytest.raises(FloatingPointError, match=r"the pc step (\d+) \(t = .*\) produced non-finite states in \d+ "
                                                 r"chain\(s\) \(first: chain \d+\)") as got:
        sample("pc", den, schedule, x, grid, corrector_steps=10, step_size=step, backend="numba", progress=False)
    i = int(str(got.value).split("step ")[1].split(" ")[0])
    assert 10 < i < 70
    # the reference runs steps 0 .. i - 1 with finite states and fails within step i (its denoiser refuses the
    # corrector's overflowed input, or the step ends non-finite)
    before = sample("pc", den.x0, schedule, x, grid[:i + 1], corrector_steps=10, step_size=step[:i])
    assert np.all(np.isfinite(before))
    with pytest.raises((FloatingPointError, ValueError), match="finite"), np.errstate(over="ignore", invalid="ignore"):
        sample("pc", den.x0, schedule, x, grid[:i + 2], corrector_steps=10, step_size=step[:i + 1])


# ------------------------------------------------------------------ what does not compile, bad input
def test_what_does_not_compile_is_refused_by_name():
    schedule, grid = _grids()["edm"]
    den = Denoiser(MIX, schedule)
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="sampler 'pf_ode' runs on backend='numpy' only: .*solve_ivp"):
        sample("pf_ode", den, schedule, x, grid, backend="numba")
    with pytest.raises(ValueError, match="pc with the snr rule runs on backend='numpy' only: .*step_size="):
        sample("pc", den, schedule, x, grid[:-1], backend="numba")
    with pytest.raises(TypeError, match="x0_fn must be a refscore.diffusion.Denoiser .* got method"):
        sample("euler", den.x0, schedule, x, grid, backend="numba")
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'numba', 'dask'\)"):
        sample("euler", den, schedule, x, grid, backend="cuda")
    with pytest.raises(TypeError, match="backend must be one of"):
        sample("euler", den, schedule, x, grid, backend=chunked.NumbaBackend())
    # the reference's own refusals come first, on every backend
    with pytest.raises(TypeError, match=r"sampler 'heun' has no option\(s\) \['eta'\]"):
        sample("heun", den, schedule, x, grid, eta=0.5, backend="numba")
    with pytest.raises(ValueError, match="too large"):
        sample("ddim", den, schedule, x, [2.0, 1.0], eta=2.0, backend="numba")


def test_ctrl_c_interrupts_within_a_chunk(monkeypatch):
    """SIGINT once the kernel runs (not during the run's setup, which a loaded machine may stretch past a
    fixed delay): the driver returns to the interpreter after each chunk, so the interrupt surfaces long
    before the run would end, and says how far it got."""
    schedule = EDM()
    den = Denoiser(MIX, schedule)
    sample("euler", den, schedule, np.zeros((4, 2)), schedule.grid(3), backend="numba")  # compile / load first
    kernel = floor.load_diffusion_sampler()
    running, run_ranges = threading.Event(), kernel.run_ranges

    def noting(fn, n):
        running.set()
        return run_ranges(fn, n)

    monkeypatch.setattr(kernel, "run_ranges", noting)

    raised = []

    def interrupt_once_running():
        running.wait(60)
        time.sleep(0.3)
        raised.append(time.perf_counter())
        signal.raise_signal(signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match=r"diffusion euler interrupted after \d+ of 2000 steps; the run's states were discarded") as info:
        sample("euler", den, schedule, np.zeros((200_000, 2)), schedule.grid(2000), backend="numba", progress=False)
    assert time.perf_counter() - raised[0] < 10.0  # within a chunk or two, not at the end of the run
    assert int(str(info.value).split("after ")[1].split(" of")[0]) < 2000


# ------------------------------------------------------------------ dask
@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"NUMBA_NUM_THREADS": "1"})
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_blocks_are_bitwise_the_numba_run(client):
    from refscore.sampling import DaskBackend

    for sampler, options in [("dpmpp_2m", {}), ("heun", {"S_churn": 40.0, "S_tmax": 50.0}), ("pc", {})]:
        want = _edm_run(sampler, options)
        for block in (7, 128, 1000):
            got = _edm_run(sampler, options, backend=DaskBackend(client=client, block_chains=block))
            _assert_bitwise(got, want)


def test_dask_reports_divergence_as_numba_does(client):
    from refscore.sampling import DaskBackend

    schedule, grid, step, x = _diverging_pc()
    with pytest.raises(FloatingPointError, match=r"the pc step \d+ .*non-finite"):
        sample("pc", Denoiser(MIX, schedule), schedule, x, grid, corrector_steps=10, step_size=step,
               backend=DaskBackend(client=client, block_chains=64), progress=False)
    with pytest.raises(ValueError, match="Dask blocks run backend='numba'"):
        sample("euler", Denoiser(MIX, schedule), schedule, np.zeros((3, 2)), grid,
               backend=DaskBackend(client=client, inner="numpy"))
