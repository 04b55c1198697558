"""refscore.interop.diffusers: diffusers' schedulers on refscore's exact denoiser and noise.

Each scheduler's run is checked two ways: against refscore's own sampler on the corresponding grid (DDIM on the
VPDiscrete grid of the scheduler's timesteps and -1; Euler on EDM with the grid of the scheduler's sigmas), and,
where deterministic, against the exact affine map of the run (refscore.diffusion.samplers.output_map), which
shares no step code with either.

Tolerances.  diffusers builds its tables in float32 and forms each step's coefficients in float32 (DDIM), or
casts the sample to float32 (Euler): each coefficient carries a few float32 roundings, <= 4u relative each with
u = 2^-24, an x0 read from eps is amplified by at most 1/sqrt(alpha_bar) <= 4 on the grids here, so one step
is off by <= 16u times the largest state; over N steps, FLOAT32_TOL = N * 16u * max(1, max|state|) (measured:
~1.5e-7 for 10 DDIM steps, ~6e-7 for 20 Euler steps with states up to 19; the bounds are 2e-5 and 4e-4).  A
convention error (a prediction type misread, a wrong noise level) moves the states by O(0.1), far outside.  With
DDIM's table upcast to float64 the gap is float64 round-off: 1e-12 (measured ~1e-15).
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refscore.diffusion import EDM, Denoiser, VPDiscrete, sample
from refscore.diffusion.samplers import output_map
from refscore.distributions import Gaussian, GaussianMixture

U32 = 2.0 ** -24
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # Stable Diffusion's table
DATA = Gaussian([0.5, -1.0], [[1.5, 0.4], [0.4, 0.8]])


@pytest.fixture(scope="module")
def dm():
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from refscore.interop import diffusers as rd

    return diffusers, rd


def _tol(n_steps, states):
    return n_steps * 16 * U32 * max(1.0, float(np.max(np.abs(states))))


def _x(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DATA.dim))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_is_refscore_ddim_on_the_vp_discrete_grid(dm, prediction_type, eta):
    diffusers, rd = dm
    make = lambda: diffusers.DDIMScheduler(**SD, clip_sample=False, steps_offset=1, prediction_type=prediction_type)
    s = make()
    table = rd.vp_discrete(s)
    D = Denoiser(DATA, table)
    x = _x()
    run = rd.run_scheduler(s, D, x, 10, seed=3, step_kwargs={"eta": eta})
    assert run.states.dtype == np.float64 and run.states.shape == (11, 5, 2) and run.x0.shape == (10, 5, 2)
    np.testing.assert_array_equal(run.timesteps, np.arange(901, 0, -100))   # leading, steps_offset 1
    np.testing.assert_array_equal(run.times, run.timesteps)
    np.testing.assert_array_equal(run.alpha, np.ones(11))
    grid = np.append(run.timesteps, -1.0)   # set_alpha_to_one: the last step lands on alpha_bar = 1
    mine = sample("ddim", D, table, x, grid, seed=3, record=True, eta=eta)
    np.testing.assert_allclose(run.states, mine.path, rtol=0, atol=_tol(10, mine.path))
    if eta == 0.0:   # the exact affine map of the whole run: x_N = A x_T + b, no noise
        A, b, Q = output_map("ddim", table, grid, DATA)
        assert np.all(Q == 0.0)
        np.testing.assert_allclose(run.states[-1], x @ A.T + b, rtol=0, atol=_tol(10, mine.path))
    # the whole gap is diffusers' float32 table: upcast, the runs agree to float64 round-off
    s64 = make()
    s64.alphas_cumprod = s64.alphas_cumprod.double()
    run64 = rd.run_scheduler(s64, D, x, 10, seed=3, step_kwargs={"eta": eta})
    np.testing.assert_allclose(run64.states, mine.path, rtol=0, atol=1e-12)


def test_ddim_on_a_mixture_and_without_set_alpha_to_one(dm):
    diffusers, rd = dm
    s = diffusers.DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    table = rd.vp_discrete(s)
    data = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [np.eye(2) * 0.2, [[0.5, 0.1], [0.1, 0.3]]])
    D = Denoiser(data, table)
    x = _x(4, 1)
    run = rd.run_scheduler(s, D, x, 8)
    np.testing.assert_array_equal(run.timesteps, np.arange(999, 0, -125))
    grid = np.append(run.timesteps, 0.0)   # the last step lands on alpha_bar_0 (final_alpha_cumprod)
    mine = sample("ddim", D, table, x, grid, record=True).path
    np.testing.assert_allclose(run.states, mine, rtol=0, atol=_tol(8, mine))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_euler_discrete_is_refscore_euler_on_edm_with_the_scheduler_sigmas(dm, prediction_type):
    diffusers, rd = dm
    s = diffusers.EulerDiscreteScheduler(**SD, prediction_type=prediction_type)
    table = rd.vp_discrete(s)
    D = Denoiser(DATA, table)
    x = _x()
    run = rd.run_scheduler(s, D, x, 20)
    sig = s.sigmas.double().numpy()   # 20 noise levels and the final 0
    np.testing.assert_allclose(run.states[0], x * float(s.init_noise_sigma), rtol=1e-15)
    # the denoiser's times have the scheduler's noise levels: the scheduler's timesteps, to float32 round-off
    # (the first, float32 sigma_max, lies 2e-8 relatively beyond the table's last knot: that knot is used)
    levels = table.sigma(run.times) / table.alpha(run.times)
    np.testing.assert_allclose(levels[1:], sig[1:-1], rtol=1e-13)
    np.testing.assert_allclose(levels[0], sig[0], rtol=8 * U32)
    np.testing.assert_allclose(run.times, run.timesteps, rtol=0, atol=1e-3)
    np.testing.assert_allclose(run.alpha, 1.0 / np.sqrt(1.0 + sig ** 2), rtol=1e-15)
    # the sample is EDM's x / alpha, and diffusers' Euler is Euler in sigma on it
    edm = EDM()
    mine = sample("euler", Denoiser(DATA, edm), edm, run.states[0], sig, record=True).path
    np.testing.assert_allclose(run.states, mine, rtol=0, atol=_tol(20, mine))
    A, b, Q = output_map("euler", edm, sig, DATA)
    assert np.all(Q == 0.0)
    np.testing.assert_allclose(run.states[-1], run.states[0] @ A.T + b, rtol=0, atol=_tol(20, mine))


def test_a_misread_prediction_type_is_far_outside_the_tolerance(dm):
    diffusers, rd = dm
    s = diffusers.DDIMScheduler(**SD, clip_sample=False, steps_offset=1)   # reads epsilon
    table = rd.vp_discrete(s)
    D = Denoiser(DATA, table)
    x = _x()
    wrong = rd.run_scheduler(s, D, x, 10, prediction_type="v_prediction").states
    mine = sample("ddim", D, table, x, np.append(np.arange(901, 0, -100), -1.0), record=True).path
    assert np.max(np.abs(wrong - mine)) > 1e3 * _tol(10, mine)


def test_refscore_own_float64_table_is_accepted_and_another_table_refused(dm):
    diffusers, rd = dm
    s = diffusers.DDIMScheduler(**SD, clip_sample=False)
    own = VPDiscrete(**SD)   # float64: within float32 round-off of diffusers' table
    rd.run_scheduler(s, Denoiser(DATA, own), _x(), 4)
    with pytest.raises(ValueError, match="is not the scheduler's table"):
        rd.run_scheduler(s, Denoiser(DATA, VPDiscrete()), _x(), 4)   # linear betas
    with pytest.raises(ValueError, match="training timesteps"):
        rd.run_scheduler(s, Denoiser(DATA, VPDiscrete(500, **SD)), _x(), 4)
    with pytest.raises(TypeError, match="Denoiser on a VPDiscrete"):
        rd.run_scheduler(s, Denoiser(DATA, EDM()), _x(), 4)


def test_stochastic_runs_without_variance_noise_are_refused_by_name(dm):
    diffusers, rd = dm
    D = Denoiser(DATA, VPDiscrete(**SD))
    with pytest.raises(ValueError, match="DDPMScheduler.step draws its noise from a torch generator"):
        rd.run_scheduler(diffusers.DDPMScheduler(**SD), D, _x(), 4)
    with pytest.raises(ValueError, match="EulerAncestralDiscreteScheduler.step draws its noise"):
        rd.run_scheduler(diffusers.EulerAncestralDiscreteScheduler(**SD), D, _x(), 4)
    with pytest.raises(ValueError, match=r"EulerDiscreteScheduler.step draws its churn noise \(s_churn > 0\)"):
        rd.run_scheduler(diffusers.EulerDiscreteScheduler(**SD), D, _x(), 4, step_kwargs={"s_churn": 1.0})
    with pytest.raises(ValueError, match="must not hold 'generator'"):
        rd.run_scheduler(diffusers.DDIMScheduler(**SD), D, _x(), 4, step_kwargs={"eta": 1.0, "generator": None})
    with pytest.raises(ValueError, match=r"step_kwargs\['eta'\] must be a finite real >= 0"):
        rd.run_scheduler(diffusers.DDIMScheduler(**SD), D, _x(), 4, step_kwargs={"eta": -1.0})
    with pytest.raises(TypeError, match="scheduler must be one of the diffusers schedulers"):
        rd.run_scheduler(diffusers.LMSDiscreteScheduler(**SD), D, _x(), 4)


def test_bad_arguments_are_named(dm):
    diffusers, rd = dm
    s = diffusers.DDIMScheduler(**SD, clip_sample=False)
    D = Denoiser(DATA, VPDiscrete(**SD))
    with pytest.raises(ValueError, match="x_T must have shape"):
        rd.run_scheduler(s, D, np.zeros(2), 4)
    with pytest.raises(ValueError, match="x_T must have d = 2 columns"):
        rd.run_scheduler(s, D, np.zeros((3, 3)), 4)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        rd.run_scheduler(s, D, _x(), 4, prediction_type="eps")
    with pytest.raises(TypeError, match="num_inference_steps must be an integer"):
        rd.run_scheduler(s, D, _x(), 4.0)


def test_the_module_imports_without_diffusers_and_names_the_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["diffusers"] = None          # any "import diffusers" now raises ImportError
        import refscore.interop.diffusers as rd
        try:
            rd.schedulers()
        except ModuleNotFoundError as exc:
            print(str(exc))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'refscore[diffusers]'" in out
