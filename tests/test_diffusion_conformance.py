"""Diffusion conformance: your schedule, denoiser and sampler against refscore's golden diffusion cases.

Every sampler checked here is written from its published algorithm, in its authors' variables (EDM's
x = x0 + sigma eps for Karras et al.'s samplers, diffusers' alpha_bar tables for DDIM and DDPM,
k-diffusion's sigma-space for Euler ancestral and DPM-Solver++(2M), score_sde's PC loop), with none of
refscore's sampler code (refscore.validation.diffusion_from_papers, shared with the validation experiment
diffusion_conformance): each passes ``refscore check`` (through ``refscore.testing``), and each slip
class injected into one of them fails, is named with its ledger row, and is not named for another
slip.  The schedule and denoiser helpers are checked the same way against closed forms written here.
"""
import numpy as np
import pytest

from refscore import conventions, golden, testing

# the independent samplers (none of refscore's sampler code) and the slips injected into them
from refscore.validation.diffusion_from_papers import (LABELS, PF_DATA, SAMPLERS, SLIPS, SQRT2M1, alpha_bar, euler,
                                                       heun, pf_ode_exact)


# ----------------------------------------------------------------- correct samplers pass
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_sampler_written_from_its_algorithm_passes(name):
    res = testing.assert_diffusion_sampler_matches(SAMPLERS[name], name)
    n_cases = len(golden.cases.DIFFUSION_SAMPLER_CASES[name])
    assert res.passed and res.coverage["cases"][0] == n_cases
    # every quantity of every case compared: the trajectory and the denoiser outputs each step used
    assert res.count("PASS") == sum(len(c.quantities) for c in testing.golden_cases(
        kind=golden.cases.diffusion_kind_name(name)).all_cases.values())


def test_the_exact_probability_flow_passes_the_pf_ode_cases():
    """The closed-form flow of Gaussian data against refscore's adaptive solver (DOP853, rtol 1e-10): the
    solver's error is far inside the check's rtol 1e-8."""
    (c,) = testing.golden_cases(kind="diffusion_pf_ode").all_cases.values()
    assert c.spec["data"]["kwargs"] == {"mean": PF_DATA[0].tolist(), "cov": PF_DATA[1].tolist()}
    assert testing.assert_diffusion_sampler_matches(pf_ode_exact, "pf_ode").passed


def test_a_single_step_form_passes_with_a_carry():
    """DPM-Solver++(2M) one step at a time, its previous x0 and sigma carried by the helper."""
    def step(x, t, t_next, model, prediction, schedule, noise, options, i, n_steps, carry):
        s, s_n = t, t_next  # the EDM case
        D = model(x, s)
        with np.errstate(divide="ignore"):
            h = np.log(s) - np.log(s_n)
        if carry is None or s_n == 0:
            x_n = (s_n / s) * x - np.expm1(-h) * D
        else:
            r = (np.log(carry[1]) - np.log(s)) / h
            x_n = (s_n / s) * x - np.expm1(-h) * ((1 + 1 / (2 * r)) * D - 1 / (2 * r) * carry[0])
        return {"x": x_n, "x0_hat": D, "carry": (D, s)}

    assert testing.assert_diffusion_sampler_matches(step, "dpmpp_2m", form="step", cases="*edm*").passed


# ----------------------------------------------------------------- slips are named, and only they
def _diagnosis(slip):
    sampler, cases, _, _ = SLIPS[slip]
    fn = SAMPLERS[sampler]
    with pytest.raises(AssertionError) as err:
        testing.assert_diffusion_sampler_matches(lambda **kw: fn(**kw, slip=slip), sampler, cases=cases)
    return {d.quantity: d for d in err.value.result.diagnosis}, str(err.value)


@pytest.mark.parametrize("slip", list(SLIPS))
def test_each_slip_is_named_with_its_row_and_no_other(slip):
    sampler, cases, label, row = SLIPS[slip]
    diagnoses, message = _diagnosis(slip)
    d = diagnoses["trajectory"]
    assert d.hypothesis == label and d.convention == row, (d.hypothesis, d.convention)
    assert conventions.row(row) is not None
    # no other slip is named anywhere: not for the trajectory, not for the denoiser outputs
    for q, other in diagnoses.items():
        named = set((other.hypothesis or "").split(" or ")) | set(other.also)
        assert not (named & (LABELS - {label})), (q, named)
    assert "departs at" in message


def test_the_departure_says_what_departs():
    """A denoiser output read otherwise departs at the call (at no time); Heun's second stage at t_hat is
    the exact denoiser at another time; a spacing error is the grid, found at the first step's time."""
    d, _ = _diagnosis("eps read as v")
    assert "your x0_hat[0] departs from the exact denoiser at your state trajectory[0]: at no time: the model's " \
           "output turned into x0 departs" in d["trajectory"].patterns[0]
    d, _ = _diagnosis("hat")
    where = d["x0_hat_2"].patterns[0]
    assert "departs at step 0 (t = 80 -> 34.99): your x0_hat_2[0] departs" in where
    assert "it is the exact denoiser there at t = 80 where refscore's call is at t = 34.99" in where
    # x0_hat (the first stages) is refscore's denoiser at your states: said, and no variant named for it
    assert any("every x0_hat is refscore's denoiser at your states" in p for p in d["x0_hat"].patterns)
    assert d["x0_hat"].hypothesis is None
    d, _ = _diagnosis("trailing")
    assert "the exact denoiser there at t = 999 (sigma/alpha = 14.61) where refscore's call is at t = 901" \
        in d["trajectory"].patterns[0]
    d, _ = _diagnosis("no denoise")
    assert d["trajectory"].patterns[0] == ("departs at step 5 (the last): your state after step 5 departs from "
                                           "refscore's step from your state, your x0_hat agreeing: the update (or the time it "
                                           "steps to) departs")


# ----------------------------------------------------------------- schedules, written from their definitions
def _discrete_table(kwargs):
    """diffusers' betas (linear or scaled_linear), cumulative products, zero terminal SNR (Lin et al. 2024)."""
    T, b0, b1 = 1000, kwargs.get("beta_start", 1e-4), kwargs.get("beta_end", 0.02)
    if kwargs.get("beta_schedule", "linear") == "linear":
        betas = np.linspace(b0, b1, T)
    else:
        betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T) ** 2
    if kwargs.get("rescale_betas_zero_snr"):
        a = np.sqrt(np.cumprod(1 - betas))
        a = (a - a[-1]) * a[0] / (a[0] - a[-1])
        ab = a * a
        betas = 1 - np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return betas, np.cumprod(1 - betas)


def my_schedule(t, schedule, grid):
    name, kw = schedule["name"], schedule["kwargs"]
    out = {}
    if name == "vp":
        b0, b1 = kw["beta_min"], kw["beta_max"]
        A = 0.25 * t * t * (b1 - b0) + 0.5 * t * b0
        alpha, sigma = np.exp(-A), np.sqrt(-np.expm1(-2 * A))
        d_alpha = -0.5 * (b0 + t * (b1 - b0)) * alpha
        out.update(d_alpha=d_alpha, d_sigma=-alpha * d_alpha / sigma)
    elif name == "ve":
        alpha, sigma = np.ones_like(t), kw["sigma_min"] * (kw["sigma_max"] / kw["sigma_min"]) ** t
        out.update(d_alpha=np.zeros_like(t), d_sigma=np.log(kw["sigma_max"] / kw["sigma_min"]) * sigma)
    elif name == "edm":
        alpha, sigma = np.ones_like(t), t
        out.update(d_alpha=np.zeros_like(t), d_sigma=np.ones_like(t))
    elif name == "flow":
        alpha, sigma = 1 - t, t
        out.update(d_alpha=-np.ones_like(t), d_sigma=np.ones_like(t))
    else:  # a discrete table: sigma/alpha interpolated linearly between integer timesteps, -1 the clean end
        betas, ab = _discrete_table(kw)
        with np.errstate(divide="ignore"):  # zero terminal SNR: the last knot is infinite, never interpolated here
            knots = np.concatenate([[0.0], np.sqrt((1 - ab) / ab)])
        s = np.interp(t, np.arange(-1, len(ab)), knots)
        alpha, sigma = 1 / np.sqrt(1 + s * s), s / np.sqrt(1 + s * s)
        out.update(betas=betas, alphas_cumprod=ab)
    out.update(alpha=alpha, sigma=sigma, log_snr=2 * np.log(alpha / sigma))
    if grid["rule"] == "karras":
        ramp = np.linspace(0, 1, grid["steps"])
        lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
        out["grid"] = np.append((hi + ramp * (lo - hi)) ** 7, 0.0)
    elif grid["rule"] == "linspace":
        out["grid"] = np.linspace(grid["start"], grid["stop"], grid["points"])
    else:  # diffusers' set_timesteps (no tie at n = 50, T = 1000), then the clean end
        n, T = grid["steps"], 1000
        if grid["spacing"] == "leading":
            ts = np.arange(n)[::-1] * (T // n) + grid["steps_offset"]
        elif grid["spacing"] == "trailing":
            ts = np.round(np.arange(T, 0, -T / n)) - 1
        else:
            ts = np.linspace(0, T - 1, n).round()[::-1]
        out["grid"] = np.append(ts.astype(float), -1.0)
    return out


def test_schedules_written_from_their_definitions_pass():
    res = testing.assert_schedule_matches(my_schedule)
    assert res.passed and res.coverage["cases"][0] == 10
    held = sum(len(c.quantities) for c in testing.golden_cases(kind="diffusion_schedule").all_cases.values())
    assert res.count("PASS") == held  # every quantity of every case


@pytest.mark.parametrize("slip, cases, label, row", [
    ("trailing", "schedule_sd_leading", "timestep spacing trailing", "Timestep spacing (diffusers)"),
    ("ve", "schedule_edm_karras_*", "sigma^2 where sigma belongs", "VE noise levels (diffusers KarrasVeScheduler)"),
    ("ramp", "schedule_edm_karras_*", "Karras ramp over n + 1 points", "Karras σ grid (k-diffusion)"),
])
def test_a_grid_slip_is_named(slip, cases, label, row):
    def slipped(t, schedule, grid):
        out = my_schedule(t, schedule, grid)
        if slip == "trailing":
            out = my_schedule(t, schedule, dict(grid, spacing="trailing", steps_offset=0))
        elif slip == "ve":
            out["grid"] = out["grid"] ** 2
        else:
            n = grid["steps"]
            lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
            out["grid"] = np.append((hi + np.arange(n) / n * (lo - hi)) ** 7, 0.0)
        return {"grid": out["grid"]}

    with pytest.raises(AssertionError) as err:
        testing.assert_schedule_matches(slipped, cases)
    (d,) = err.value.result.diagnosis
    assert d.quantity == "grid" and d.hypothesis == label and d.convention == row
    assert d.patterns[0].startswith("first departs at grid[")


def test_alpha_bar_for_alpha_is_named():
    def slipped(t, schedule, grid):
        out = my_schedule(t, schedule, grid)
        return {"alpha": out["alpha"] ** 2}   # alphas_cumprod used as the signal scale

    with pytest.raises(AssertionError) as err:
        testing.assert_schedule_matches(slipped, "schedule_sd_*")
    (d,) = err.value.result.diagnosis
    assert d.hypothesis == "alpha^2 where alpha belongs" and "alpha_bar where sqrt(alpha_bar)" in d.explanation


# ----------------------------------------------------------------- the denoiser, from the posterior
def my_denoiser(x, t, data, schedule, alpha, sigma, d_alpha, d_sigma, slip=None):
    """E[x0 | x] of N(mu, C) (mu + a C (a^2 C + s^2 I)^-1 (x - a mu)) or of a mixture (responsibilities from
    scipy's normal log-densities of the noised components), then eps, v, score and velocity from it."""
    from scipy.stats import multivariate_normal

    kw = data["kwargs"]
    if data["target"] == "Gaussian":
        weights, means, covs = [1.0], [kw["mean"]], [kw["cov"]]
    else:
        weights, means, covs = kw["weights"], kw["means"], kw["covs"]
    x0 = np.empty_like(x)
    for k, (xk, a, s) in enumerate(zip(x, alpha, sigma)):
        logs, posts = [], []
        for w, mu, C in zip(weights, np.array(means, float), np.array(covs, float)):
            noised = a * a * C + s * s * np.eye(len(mu))
            logs.append(np.log(w) + multivariate_normal(a * mu, noised).logpdf(xk))
            posts.append(mu + a * C @ np.linalg.solve(noised, xk - a * mu))
        r = np.exp(np.array(logs) - np.max(logs))
        x0[k] = (r / r.sum()) @ np.array(posts)
    a, s, da, ds = (v[:, None] for v in (alpha, sigma, d_alpha, d_sigma))
    eps = (x - a * x0) / s
    v = a * eps - s * x0 if slip != "v sign" else s * x0 - a * eps
    out = {"x0": x0, "eps": eps, "v": v, "score": -eps / s, "velocity": da * x0 + ds * eps}
    if slip == "eps for score":
        out["score"] = eps
    return out


def test_the_exact_denoiser_from_the_posterior_passes():
    res = testing.assert_denoiser_matches(my_denoiser)
    assert res.passed and res.count("PASS") == 7 * 5  # seven cases, five parametrisations


@pytest.mark.parametrize("slip, quantity, label", [("v sign", "v", "v = sigma x0 - alpha eps"),
                                                   ("eps for score", "score", "eps for score")])
def test_a_denoiser_slip_is_named(slip, quantity, label):
    with pytest.raises(AssertionError) as err:
        testing.assert_denoiser_matches(lambda **kw: my_denoiser(**kw, slip=slip))
    (d,) = err.value.result.diagnosis
    assert d.quantity == quantity and d.hypothesis == label
    assert d.convention in ("Denoiser preconditioning (EDM, k-diffusion)", "Prediction type (diffusers)")


# ----------------------------------------------------------------- coefficient tables, from the papers
def my_table(c, slip=None):
    """The golden coefficient table of case c, from the published formulas (diffusers' _get_variance for DDIM,
    Ho et al.'s posterior, edm_sampler's gamma, EDMPrecond, k-diffusion's DPM-Solver++(2M))."""
    from refscore.diffusion import SCHEDULES

    p, t = c.spec["params"], c.inputs["t"]
    sch = SCHEDULES[c.spec["schedule"]["name"]](**c.spec["schedule"]["kwargs"])
    rows = []
    if p["table"] in ("ddim", "ddpm"):
        for i in range(len(t) - 1):
            ab, ab_prev = alpha_bar(sch, t[i]), alpha_bar(sch, t[i + 1])
            if slip == "final alpha" and t[i + 1] < 0:
                ab_prev = float(sch.alphas_cumprod[0])
            beta = 1 - ab / ab_prev
            if p["table"] == "ddim":
                std = p["options"]["eta"] * np.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                rows.append((np.sqrt(ab), np.sqrt(1 - ab), np.sqrt(ab_prev), np.sqrt(1 - ab_prev - std ** 2), std))
            else:
                rows.append((np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab), np.sqrt(ab_prev) * beta / (1 - ab),
                             np.sqrt((1 - ab_prev) / (1 - ab) * beta)))
    elif p["table"] == "churn":
        o, n = p["options"], len(t) - 1
        for s in t[:-1]:
            gamma = (max if slip == "max" else min)(o["S_churn"] / n, SQRT2M1) if o["S_tmin"] <= s <= o["S_tmax"] else 0.0
            rows.append((gamma, s * (1 + gamma), s * np.sqrt((1 + gamma) ** 2 - 1)))
    elif p["table"] == "edm_preconditioning":
        sd = p["options"]["sigma_data"]
        for s in t[:-1]:
            rows.append((sd ** 2 / (s ** 2 + sd ** 2), s * sd / np.sqrt(s ** 2 + sd ** 2), 1 / np.sqrt(s ** 2 + sd ** 2),
                         np.log(s) / 4, (s ** 2 + sd ** 2) / (s * sd) ** 2))
    else:  # DPM-Solver++(2M) in k-diffusion's sigma-space
        def sig(ti):
            if hasattr(sch, "alphas_cumprod"):
                ab = alpha_bar(sch, ti)
                return np.sqrt(ab), np.sqrt((1 - ab) / ab)
            return 1.0, ti
        for i in range(len(t) - 1):
            (a, s), (a_n, s_n) = sig(t[i]), sig(t[i + 1])
            if s_n == 0:
                rows.append((0.0, a_n, 1.0, 0.0))
                continue
            h = np.log(s) - np.log(s_n)
            w = (1.0, 0.0)
            if i > 0:
                r = (np.log(sig(t[i - 1])[1]) - np.log(s)) / h
                w = (1 + 1 / (2 * r), -1 / (2 * r))
            # x_n = a_n xbar_n = a_n ((s_n/s) x/a - expm1(-h) D): the sigma ratio of x is that of the VP sigmas
            rows.append(((a_n * s_n) / (a * s), -a_n * np.expm1(-h), *w))
    return np.array(rows)


def test_coefficient_tables_from_the_papers_pass():
    g = testing.golden_cases(kind="diffusion_coefficients")
    values = {f"{n}/table": my_table(c) for n, c in g.all_cases.items()}
    res = golden.check(g, values)
    assert res.passed, str(res)


@pytest.mark.parametrize("slip, table, label, row", [
    ("max", "churn", "max for min in the churn gamma", "EDM churn γ"),
    ("final alpha", "ddim", "final alpha_bar_0 (set_alpha_to_one=False)", "DDIM final alpha (diffusers)"),
])
def test_a_coefficient_slip_is_named(slip, table, label, row):
    g = testing.golden_cases(kind="diffusion_coefficients")
    values = {f"{n}/table": my_table(c, slip) for n, c in g.all_cases.items() if c.spec["params"]["table"] == table}
    res = golden.check(g, values)
    (d,) = res.diagnosis
    assert not res.passed and d.hypothesis == label and d.convention == row
    assert "first at step" in d.patterns[0]


# ----------------------------------------------------------------- the helpers' contract
def test_heun_one_step_at_a_time_passes():
    def step(x, t, t_next, model, prediction, schedule, noise, options, i, n_steps, carry):
        out = heun(x, np.array([t, t_next]), model, prediction, schedule, None, options)
        return {"x": out["trajectory"][-1], "x0_hat": out["x0_hat"][0],
                "x0_hat_2": out["x0_hat_2"][0] if len(out["x0_hat_2"]) else None}

    # the churn's gamma counts the run's steps: one step at a time, only the case without churn
    assert testing.assert_diffusion_sampler_matches(step, "heun", form="step", cases="*gaussian*").passed


def test_bad_calls_say_what_is_expected():
    with pytest.raises(ValueError, match="sampler must be one of .*'euler'.*got 'ula'"):
        testing.assert_diffusion_sampler_matches(euler, "ula")
    with pytest.raises(ValueError, match="form must be 'trajectory'"):
        testing.assert_diffusion_sampler_matches(euler, "euler", form="run")
    with pytest.raises(ValueError, match=r"your euler trajectory must return a dict with some of .*got keys \['x'\]"):
        testing.assert_diffusion_sampler_matches(lambda **kw: {"x": kw["x"]}, "euler")
    with pytest.raises(ValueError, match=r"trajectory of case '.*' must have shape \(9, 3, 2\), got \(3, 2\)"):
        testing.assert_diffusion_sampler_matches(lambda **kw: kw["x"], "euler")
    with pytest.raises(ValueError, match="prediction must be one of"):
        testing.assert_denoiser_matches(my_denoiser, prediction="noise")
    with pytest.raises(TypeError, match="your schedule function must return a dict"):
        testing.assert_schedule_matches(lambda **kw: kw["t"])
    with pytest.raises(ValueError, match="'schedule_edm_karras_18' is a diffusion_schedule case; this helper takes "
                                         "diffusion_denoiser cases"):
        testing.assert_denoiser_matches(my_denoiser, "schedule_edm_karras_18")


# ----------------------------------------------------------------- likelihoods
def _likelihood_values(slip=None):
    """Your PF-ODE log-likelihood code, as the golden quantities with ``slip`` injected."""
    g = testing.golden_cases(kind="diffusion_likelihood")
    values = {}
    for n, c in g.all_cases.items():
        q = c.quantities
        ll, hutch, prior = q["log_likelihood"], q["hutchinson_log_likelihood"], q["prior_term"]
        m = c.inputs["z"].shape[0]
        if slip == "no prior":
            ll, hutch = ll - prior, hutch - prior
        elif slip == "probe sum":
            hutch = prior + m * (hutch - prior)
        values[f"{n}/log_likelihood"] = ll
        values[f"{n}/hutchinson_log_likelihood"] = hutch
    return g, values


def test_a_likelihood_with_its_prior_and_the_probe_mean_passes():
    g, values = _likelihood_values()
    assert golden.check(g, values).passed


@pytest.mark.parametrize("slip, names", [
    ("no prior", {"log_likelihood": "prior term missing", "hutchinson_log_likelihood": "prior term missing"}),
    ("probe sum", {"hutchinson_log_likelihood": "probe sum not divided by the probe count"}),
])
def test_a_likelihood_slip_is_named_with_its_row_and_no_other(slip, names):
    """The prior term left out moves both keys by log pi(x_T); the probes' sum never divided by m (the stored
    cases have m = 3 probes) moves the Hutchinson key only; each is named with its ledger row, and the other
    slip's label is never given."""
    g, values = _likelihood_values(slip)
    res = golden.check(g, values)
    got = {d.quantity: d for d in res.diagnosis}
    assert set(got) == set(names)
    rows = {"prior term missing": "PF-ODE log-likelihood (prior term)",
            "probe sum not divided by the probe count": "PF-ODE log-likelihood (Hutchinson probes)"}
    for q, label in names.items():
        assert got[q].hypothesis == label and got[q].convention == rows[label], (q, got[q].line())
        others = set(rows) - {label}
        assert not others & ({got[q].hypothesis} | set(got[q].also))

