"""refscore.testing's diffusion helpers in PyTorch and JAX: ``framework=``, ``dtype=``, ``device=``.

Samplers ported from refscore.validation.diffusion_from_papers to the framework's own ops (Karras et al.'s
Heun with the churn in EDM's variables; DDIM, Song et al. 2021 eq. (12) and (16), on diffusers' alpha_bar
table; DPM-Solver++(2M) one step at a time with a carry) pass in float64 to float64 round-off and in float32
under the float32 tolerances, with a tenth of the tolerance to spare; an injected slip fails in either dtype
and is named with its ledger row and no other slip's label.  In NumPy float32 every sampler from the papers
passes and every slip of SLIPS is named.  The schedule and denoiser helpers take torch functions written from
their definitions.  The NumPy default is unchanged: tests/test_diffusion_conformance.py runs it on every case.
Each torch or JAX test skips when its framework is not installed.
"""
import contextlib
import copy
import io
import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from refscore import conventions, golden, interop, testing
from refscore.validation.diffusion_from_papers import LABELS, SAMPLERS, SLIPS, edm_x0, euler, pf_ode_exact

ROOT = pathlib.Path(__file__).resolve().parents[1]
FRAMEWORKS = ["torch", "jax"]
DTYPES = ["float64", "float32"]


def _ops(framework):
    """The framework's array namespace (torch, or jax.numpy with x64 on: refscore.interop.jax's import)."""
    pytest.importorskip(framework)
    interop.get_framework(framework)  # imports refscore.interop.<framework> (JAX: jax_enable_x64)
    if framework == "torch":
        import torch

        return torch
    import jax.numpy as jnp

    return jnp


def _is_array(framework, a) -> bool:
    if framework == "torch":
        import torch

        return isinstance(a, torch.Tensor)
    import jax

    return isinstance(a, jax.Array)


# ----------------------------------------------------------------- the samplers, in the framework's ops
def heun(xp, x, t, model, prediction, schedule, z, options, slip=None):
    """Karras et al. (2022) Algorithm 2 (Heun, with the churn) on EDM's schedule; ``xp`` torch or jax.numpy.
    ``slip="hat"``: the second stage at t_hat where t_{i+1} belongs."""
    n = len(t) - 1
    states, x0s, x0s2 = [x], [], []
    for i in range(n):
        t_cur, t_next = t[i], t[i + 1]  # 0-d arrays of the framework
        churn = options["S_churn"] > 0 and options["S_tmin"] <= t_cur <= options["S_tmax"]
        gamma = min(options["S_churn"] / n, 2 ** 0.5 - 1) if churn else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + xp.sqrt(t_hat ** 2 - t_cur ** 2) * options["S_noise"] * z[i, 0]
        D = edm_x0(model, prediction, x, t_hat)
        d = (x - D) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next > 0:
            s2 = t_hat if slip == "hat" else t_next
            D2 = edm_x0(model, prediction, x_next, s2)
            x0s2.append(D2)
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * (x_next - D2) / s2)
        x0s.append(D)
        x = x_next
        states.append(x)
    return {"trajectory": xp.stack(states), "x0_hat": xp.stack(x0s), "x0_hat_2": xp.stack(x0s2)}


def ddim(xp, x, t, model, prediction, schedule, z, options, slip=None):
    """Song et al. (2021) eq. (12) with sigma_t(eta) of eq. (16) on the schedule's alphas_cumprod (an array of
    the framework); ``slip="final alpha"``: the last step lands on alpha_bar_0 instead of 1."""
    table = schedule.alphas_cumprod
    one = xp.ones_like(table[0])

    def alpha_bar(step):  # the clean end, t = -1, has alpha_bar = 1
        return one if step < 0 else table[int(step)]

    states, x0s, eta = [x], [], options["eta"]
    for i in range(len(t) - 1):
        a, a_prev = alpha_bar(t[i]), alpha_bar(t[i + 1])
        if slip == "final alpha" and t[i + 1] < 0:
            a_prev = table[0]
        m = model(x, t[i])
        if prediction == "eps":
            eps = m
            x0 = (x - xp.sqrt(1 - a) * eps) / xp.sqrt(a)
        else:  # v = sqrt(a) eps - sqrt(1 - a) x0
            x0 = xp.sqrt(a) * x - xp.sqrt(1 - a) * m
            eps = xp.sqrt(a) * m + xp.sqrt(1 - a) * x
        std = eta * xp.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = xp.sqrt(a_prev) * x0 + xp.sqrt(1 - a_prev - std ** 2) * eps
        if eta > 0:
            x = x + std * z[i, 0]
        states.append(x)
        x0s.append(x0)
    return {"trajectory": xp.stack(states), "x0_hat": xp.stack(x0s)}


PORTS = {"heun": heun, "ddim": ddim}


def _held(sampler) -> int:
    """Quantities the golden cases of ``sampler`` hold: what a run returning all of them is compared on."""
    g = testing.golden_cases(kind=golden.cases.diffusion_kind_name(sampler))
    return sum(len(c.quantities) for c in g.all_cases.values())


# ----------------------------------------------------------------- correct ports pass
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("sampler", list(PORTS))
def test_a_port_passes_every_case(sampler, framework, dtype):
    """Every case of the sampler, every quantity, under the tolerances of the dtype.  The float32 runs are
    within a tenth of the float32 atol (the largest error of a few float32 roundings per step, over at most
    ten steps of states below 80), so the tolerance is not what makes them pass; the float64 runs are within
    float64 round-off (1e-12 here, against the check's 1e-10 + 1e-8 |g|)."""
    xp = _ops(framework)
    res = testing.assert_diffusion_sampler_matches(lambda **kw: PORTS[sampler](xp, **kw), sampler,
                                                   framework=framework, dtype=dtype)
    assert res.passed and res.count("PASS") == _held(sampler)
    assert (res.rtol, res.atol) == golden.TOLERANCES[dtype]
    worst = max(r.max_abs for r in res.rows)
    assert worst <= (golden.TOLERANCES["float32"][1] / 10 if dtype == "float32" else 1e-12), worst


def test_a_float32_run_is_float32_and_fails_the_float64_tolerances_as_round_off():
    """The float32 run really is one (its values differ from float64's by float32 round-off), and the
    float64 tolerances fail it with the diagnosis naming round-off, no slip."""
    torch = _ops("torch")
    run = dict(sampler="heun", framework="torch", dtype="float32")
    with pytest.raises(AssertionError) as err:
        testing.assert_diffusion_sampler_matches(lambda **kw: heun(torch, **kw), **run,
                                                 rtol=golden.TOLERANCES["float64"][0],
                                                 atol=golden.TOLERANCES["float64"][1])
    message = str(err.value)
    assert message.startswith("refscore.testing.assert_diffusion_sampler_matches('heun', form='trajectory', "
                              "framework='torch'): trajectory fails in 2 of 2 cases")
    assert {d.hypothesis for d in err.value.result.diagnosis} == {"round-off"}
    assert not any(label in message for label in LABELS)


# ----------------------------------------------------------------- slips are named, in either dtype
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slip", ["hat", "final alpha"])
def test_a_slip_in_a_torch_port_is_named_with_its_row(slip, dtype):
    torch = _ops("torch")
    sampler, cases, label, row = SLIPS[slip]
    with pytest.raises(AssertionError) as err:
        testing.assert_diffusion_sampler_matches(lambda **kw: PORTS[sampler](torch, **kw, slip=slip), sampler,
                                                 framework="torch", cases=cases, dtype=dtype)
    diagnoses = {d.quantity: d for d in err.value.result.diagnosis}
    d = diagnoses["trajectory"]
    assert d.hypothesis == label and d.convention == row, (d.hypothesis, d.convention)
    assert conventions.row(row) is not None
    for q, other in diagnoses.items():  # no other slip is named, for any quantity
        named = set((other.hypothesis or "").split(" or ")) | set(other.also)
        assert not (named & (LABELS - {label})), (q, named)
    assert "departs at" in str(err.value) and (err.value.result.rtol, err.value.result.atol) == \
        golden.TOLERANCES[dtype]


# ----------------------------------------------------------------- what your code is given
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_arrays_given_are_the_frameworks(framework):
    xp = _ops(framework)
    seen = []

    def spy(x, t, model, prediction, schedule, z, options):
        assert _is_array(framework, x) and _is_array(framework, t) and str(x.dtype).endswith("float32")
        assert x.shape == (3, 2) and t.shape == (11,) and str(t.dtype).endswith("float32")
        assert _is_array(framework, z) and z.shape == (10, 1, 3, 2) and str(z.dtype).endswith("float32")
        m = model(x, t[0])
        assert _is_array(framework, m) and m.shape == (3, 2) and str(m.dtype).endswith("float32")
        # one time as a float or a 0-d array: the same prediction (the float is t[0] as float32 holds it)
        assert np.array_equal(np.asarray(model(x, float(t[0]))), np.asarray(m))
        with pytest.raises(TypeError, match=r"model\(x, t\): t must be one time .*got shape \(11,\)"):
            model(x, t)
        # the schedule: a float back for one time, an array of the framework for an array of times
        a = schedule.alpha(t[1])
        assert type(a) is float and a == schedule.numpy_schedule.alpha(float(t[1]))
        sig = schedule.sigma(t[:-1])
        assert _is_array(framework, sig) and str(sig.dtype).endswith("float32")
        assert np.array_equal(np.asarray(sig), schedule.numpy_schedule.sigma(np.asarray(t[:-1])).astype(np.float32))
        ab = schedule.alphas_cumprod
        assert _is_array(framework, ab) and str(ab.dtype).endswith("float32") and ab.shape == (1000,)
        ts = schedule.timesteps(10, "trailing")
        assert _is_array(framework, ts) and np.array_equal(np.asarray(ts), schedule.numpy_schedule.timesteps(10, "trailing"))
        assert prediction == "v" and options == {"eta": 1.0}
        seen.append(schedule)
        return ddim(xp, x=x, t=t, model=model, prediction=prediction, schedule=schedule, z=z, options=options)

    assert testing.assert_diffusion_sampler_matches(spy, "ddim", framework=framework, dtype="float32",
                                                    cases="*trailing_eta1*").passed
    (schedule,) = seen
    assert isinstance(schedule, interop.frameworks.FrameworkSchedule)
    assert repr(schedule) == f"<VPDiscrete(T=1000, scaled_linear) as {framework} float32 arrays>"


def test_the_step_form_in_torch_with_a_carry():
    """DPM-Solver++(2M) one step at a time (k-diffusion's sample_dpmpp_2m, EDM: sigma = t, an x0-model): a
    step gets x and noise as tensors, t and t_next as floats, and back what it returned under 'carry'."""
    torch = _ops("torch")
    carried = []

    def step(x, t, t_next, model, prediction, schedule, noise, options, i, n_steps, carry):
        assert isinstance(x, torch.Tensor) and type(t) is float and type(t_next) is float and noise is None
        assert carry is (carried[-1] if i else None)  # what the previous step returned, itself
        D = model(x, t)
        h = math.log(t) - math.log(t_next) if t_next > 0 else math.inf
        if carry is None or t_next == 0:
            D_d = D
        else:
            D_prev, t_prev = carry
            r = (math.log(t_prev) - math.log(t)) / h
            D_d = (1 + 1 / (2 * r)) * D - 1 / (2 * r) * D_prev
        carried.append((D, t))
        return {"x": (t_next / t) * x - math.expm1(-h) * D_d, "x0_hat": D, "carry": carried[-1]}

    for dtype in DTYPES:
        carried.clear()
        res = testing.assert_diffusion_sampler_matches(step, "dpmpp_2m", form="step", framework="torch",
                                                       cases="*edm*", dtype=dtype)
        assert res.passed and res.count("PASS") == 2 and len(carried) == 8


def test_a_device_is_where_the_arrays_are():
    torch = _ops("torch")

    def on_cpu(x, t, model, prediction, schedule, z, options):
        assert x.device == t.device == model(x, t[0]).device == schedule.sigma(t).device == torch.device("cpu")
        return heun(torch, x, t, model, prediction, schedule, z, options)

    assert testing.assert_diffusion_sampler_matches(on_cpu, "heun", framework="torch", device="cpu",
                                                    cases="*edm_gaussian*").passed
    with pytest.raises(ValueError, match="device is for framework='torch' or 'jax', not 'numpy'"):
        testing.assert_diffusion_sampler_matches(on_cpu, "heun", device="cpu", cases="*edm_gaussian*")


# ----------------------------------------------------------------- the schedule view
def test_the_framework_schedule_forwards_public_names_and_converts():
    torch = _ops("torch")
    from refscore.diffusion.schedules import EDM, VP

    fw = interop.get_framework("torch")
    s = fw.diffusion_schedule(VP(), dtype="float64")
    assert s.beta_min == 0.1 and s.t_max == 1.0 and s.log_snr_range() == VP().log_snr_range()
    assert s.alpha(0.5) == VP().alpha(0.5) and s.beta(torch.tensor(0.5)) == VP().beta(0.5)
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert torch.equal(s.log_snr(t), torch.from_numpy(VP().log_snr(np.array([0.25, 0.5]))))  # float64: bitwise
    assert torch.equal(s.t_of_log_snr(s.log_snr(t)), torch.from_numpy(VP().t_of_log_snr(VP().log_snr(t.numpy()))))
    g = fw.diffusion_schedule(EDM(), dtype="float32").grid(18)
    assert g.dtype == torch.float32 and torch.equal(g, torch.from_numpy(EDM().grid(18).astype(np.float32)))
    with pytest.raises(AttributeError, match="forwards no private name"):
        s._alpha  # noqa: B018
    with pytest.raises(AttributeError, match="'VP' object has no attribute 'alphas_cumprod'"):
        s.alphas_cumprod  # noqa: B018
    assert not hasattr(s, "alphas_cumprod") and hasattr(s, "beta_max")
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):  # the schedule's own check, through it
        s.alpha(torch.tensor(2.0))
    twin = copy.deepcopy(s)
    assert twin.alpha(0.5) == s.alpha(0.5) and twin.numpy_schedule is not s.numpy_schedule


def test_numpy_in_float64_gets_the_schedule_object_itself():
    from refscore.diffusion.schedules import EDM, Schedule

    seen = []

    def spy(**kw):
        x, t, model = kw["x"], kw["t"], kw["model"]
        seen.append((type(x), x.dtype, t.dtype, isinstance(kw["schedule"], Schedule), model(x, t[0]).dtype))
        return euler(**kw)

    assert testing.assert_diffusion_sampler_matches(spy, "euler", cases="*edm_gaussian*").passed
    assert seen == [(np.ndarray, np.float64, np.float64, True, np.float64)]
    fw = interop.get_framework("numpy")
    edm = EDM()
    assert fw.diffusion_schedule(edm) is edm
    assert isinstance(fw.diffusion_schedule(edm, dtype="float32"), interop.frameworks.FrameworkSchedule)


@pytest.mark.parametrize("name", [*SAMPLERS, "pf_ode"])
def test_the_samplers_from_the_papers_pass_in_float32_numpy(name):
    """NumPy in float32: x, t, z and the model's output float32 (the papers' code mixes in float64 scalars,
    so this is float32 data more than float32 arithmetic); every case passes the float32 tolerances."""
    res = testing.assert_diffusion_sampler_matches(SAMPLERS.get(name, pf_ode_exact), name, dtype="float32")
    assert res.passed and res.count("PASS") == _held(name)


@pytest.mark.parametrize("slip", list(SLIPS))
def test_every_slip_is_named_in_float32(slip):
    """Under the float32 tolerances (ten times wider for the diagnosis's fits) each slip still fails, is named
    with its row, and no other slip is named: every slip moves some value by more than ten times the float32
    atol (4.7e-3 or more)."""
    sampler, cases, label, row = SLIPS[slip]
    with pytest.raises(AssertionError) as err:
        testing.assert_diffusion_sampler_matches(lambda **kw: SAMPLERS[sampler](**kw, slip=slip), sampler,
                                                 cases=cases, dtype="float32")
    res = err.value.result
    assert max(r.max_abs for r in res.rows if r.status == "FAIL") > 10 * golden.TOLERANCES["float32"][1]
    diagnoses = {d.quantity: d for d in res.diagnosis}
    assert (diagnoses["trajectory"].hypothesis, diagnoses["trajectory"].convention) == (label, row)
    for q, other in diagnoses.items():
        named = set((other.hypothesis or "").split(" or ")) | set(other.also)
        assert not (named & (LABELS - {label})), (q, named)


# ----------------------------------------------------------------- the schedule and denoiser helpers
def torch_schedule(t, schedule, grid):
    """alpha, sigma, log-SNR and derivatives of the continuous schedules from their definitions (docs/
    diffusion.md §1), and the configuration's grid (Karras et al. eq. (5); a linspace), in torch."""
    import torch

    name, kw = schedule["name"], schedule["kwargs"]
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    if name == "edm":
        alpha, sigma, d_alpha, d_sigma = one, t, zero, one
    elif name == "flow":
        alpha, sigma, d_alpha, d_sigma = 1 - t, t, -one, one
    elif name == "ve":
        ratio = kw["sigma_max"] / kw["sigma_min"]
        sigma = kw["sigma_min"] * ratio ** t
        alpha, d_alpha, d_sigma = one, zero, math.log(ratio) * sigma
    else:  # vp: alpha = exp(-A), A = t^2 (b1 - b0) / 4 + t b0 / 2
        b0, b1 = kw["beta_min"], kw["beta_max"]
        A = 0.25 * t * t * (b1 - b0) + 0.5 * t * b0
        alpha, sigma = torch.exp(-A), torch.sqrt(-torch.expm1(-2 * A))
        d_alpha = -0.5 * (b0 + t * (b1 - b0)) * alpha
        d_sigma = -alpha * d_alpha / sigma
    out = {"alpha": alpha, "sigma": sigma, "log_snr": 2 * torch.log(alpha / sigma), "d_alpha": d_alpha,
           "d_sigma": d_sigma}
    if grid["rule"] == "karras":
        ramp = torch.linspace(0, 1, grid["steps"], dtype=t.dtype)
        lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
        out["grid"] = torch.cat([(hi + ramp * (lo - hi)) ** 7, torch.zeros(1, dtype=t.dtype)])
    elif grid["rule"] == "linspace":
        out["grid"] = torch.linspace(grid["start"], grid["stop"], grid["points"], dtype=t.dtype)
    return out


CONTINUOUS = ["schedule_edm_*", "schedule_flow", "schedule_score_sde_*"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_torch_schedule_passes_and_a_grid_slip_is_named(dtype):
    _ops("torch")
    res = testing.assert_schedule_matches(torch_schedule, CONTINUOUS, framework="torch", dtype=dtype)
    assert res.passed and res.coverage["cases"][0] == 5 and (res.rtol, res.atol) == golden.TOLERANCES[dtype]

    def squared(t, schedule, grid):  # EDM's VE times t = sigma^2 used as sigma
        return {"grid": torch_schedule(t, schedule, grid)["grid"] ** 2}

    with pytest.raises(AssertionError, match=r"assert_schedule_matches\(framework='torch'\)") as err:
        testing.assert_schedule_matches(squared, "schedule_edm_karras_*", framework="torch", dtype=dtype)
    (d,) = err.value.result.diagnosis
    assert d.hypothesis == "sigma^2 where sigma belongs" and d.convention == "VE noise levels (diffusers KarrasVeScheduler)"


def torch_gaussian_denoiser(x, t, data, schedule, alpha, sigma, d_alpha, d_sigma, v_sign=1):
    """E[x0 | x] of N(mu, C): mu + a C (a^2 C + s^2 I)^-1 (x - a mu), then eps, v, score and velocity, in torch."""
    import torch

    mu = torch.tensor(data["kwargs"]["mean"], dtype=x.dtype)
    C = torch.tensor(data["kwargs"]["cov"], dtype=x.dtype)
    a, s, da, ds = (v[:, None] for v in (alpha, sigma, d_alpha, d_sigma))
    noised = a[:, :, None] ** 2 * C + s[:, :, None] ** 2 * torch.eye(len(mu), dtype=x.dtype)
    x0 = mu + a * torch.linalg.solve(noised, x - a * mu) @ C.T
    eps = (x - a * x0) / s
    return {"x0": x0, "eps": eps, "v": v_sign * (a * eps - s * x0), "score": -eps / s,
            "velocity": da * x0 + ds * eps}


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_torch_denoiser_passes_and_a_flipped_v_is_named(dtype):
    _ops("torch")
    res = testing.assert_denoiser_matches(torch_gaussian_denoiser, "denoiser_gaussian_*", framework="torch",
                                          dtype=dtype)
    assert res.passed and res.count("PASS") == 3 * 5 and (res.rtol, res.atol) == golden.TOLERANCES[dtype]
    with pytest.raises(AssertionError) as err:
        testing.assert_denoiser_matches(lambda **kw: torch_gaussian_denoiser(**kw, v_sign=-1), "denoiser_gaussian_*",
                                        framework="torch", dtype=dtype)
    (d,) = err.value.result.diagnosis
    assert d.quantity == "v" and d.hypothesis == "v = sigma x0 - alpha eps"
    # one array returned is read as `prediction`
    res = testing.assert_denoiser_matches(lambda **kw: torch_gaussian_denoiser(**kw)["eps"], "denoiser_gaussian_*",
                                          prediction="eps", framework="torch", dtype=dtype)
    assert res.passed and res.count("PASS") == 3


# ----------------------------------------------------------------- the NumPy default imports no framework
def test_the_diffusion_helpers_import_no_framework_by_default():
    code = ("import sys\nfrom refscore import testing\n"
            "from refscore.validation.diffusion_from_papers import ddim\n"
            "assert testing.assert_diffusion_sampler_matches(ddim, 'ddim').passed\n"
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules, 'a framework was imported'\n"
            "print('clean')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


# ----------------------------------------------------------------- the documentation's torch example
def test_the_torch_example_of_the_docs_prints_what_the_page_says():
    """docs/validate-diffusion.md's torch DDIM runs only where the docs build has torch (its blocks skip
    otherwise): here it runs from the page's own text wherever torch is installed."""
    _ops("torch")
    page = (ROOT / "docs" / "validate-diffusion.md").read_text(encoding="utf-8")
    section = page.split("\n## In PyTorch or JAX\n", 1)[1].split("\n## ", 1)[0]
    code, printed = (re.search(r"```\{" + block + r"\}\n:skipif: [^\n]*\n\n?(.*?)```", section, re.S).group(1)
                     for block in ("testcode", "testoutput"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"np": np, "testing": testing})  # what the page's earlier blocks imported
    assert out.getvalue() == printed
