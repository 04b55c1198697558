r"""Diffusion samplers written from their published algorithms, independently of refscore's sampler code.

Each function below is one sampler written from its paper or its authors' code, in their variables:
Karras et al. (2022) Algorithm 2 in EDM's :math:`x = x_0 + \sigma\varepsilon` for Euler and Heun (with
the churn), diffusers' :math:`\bar\alpha` tables for DDIM (Song et al. 2021, eq. (12) and (16)) and DDPM
(Ho et al. 2020, eq. (6)-(7)), k-diffusion's :math:`\sigma`-space for Euler ancestral and
DPM-Solver++(2M), score_sde's predictor-corrector loop, and the probability-flow ODE of Gaussian data in
closed form.  None of them imports :mod:`refscore.diffusion.samplers` (or any refscore step): they are
the independent side of the comparison, and the steps they implement are derived in docs/diffusion.md
§6.1.  They take the keyword arguments of :func:`refscore.testing.assert_diffusion_sampler_matches`
(``x, t, model, prediction, schedule, z, options``) and return ``{"trajectory", "x0_hat"[, "x0_hat_2"]}``
(:func:`pf_ode_exact`: the trajectory).

``slip`` injects one realistic mistake (a key of :data:`SLIPS`; None: none).  :data:`SLIPS` says, per
slip, which sampler and golden cases carry it and the label and ledger row
(:data:`refscore.conventions.TABLE`) the golden diagnosis must name for it.  Used by the validation
experiment :mod:`refscore.validation.diffusion_conformance` and by tests/test_diffusion_conformance.py.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from refscore import conventions

__all__ = ["SQRT2M1", "edm_x0", "karras", "euler", "heun", "alpha_bar", "table_x0_eps", "ddim", "ddpm",
           "euler_ancestral", "dpmpp_2m", "pc", "pf_ode_exact", "PF_DATA", "SAMPLERS", "Slip", "SLIPS", "LABELS"]

#: EDM's cap of the churn: gamma = min(S_churn / N, sqrt 2 - 1)
SQRT2M1 = np.sqrt(2.0) - 1.0


def edm_x0(model, prediction, x, sigma):
    """x0 from an EDM-schedule model's prediction (alpha = 1): x0, eps (x - sigma eps), v (alpha eps - sigma x0)."""
    m = model(x, sigma)
    if prediction == "x0":
        return m
    if prediction == "eps":
        return x - sigma * m
    return (x - sigma * m) / (1.0 + sigma * sigma)  # v = eps - sigma x0 and x = x0 + sigma eps


def karras(x, t, model, prediction, schedule, z, options, slip=None, order=1):
    """Karras et al. (2022) Algorithm 2 (Euler, order 1, or Heun, order 2) on the EDM schedule, noise z."""
    S_churn, S_tmin, S_tmax = options["S_churn"], options["S_tmin"], options["S_tmax"]
    if slip == "sigma^2":
        t = t ** 2
    n = len(t) - 1
    states, x0s, x0s2 = [x], [], []
    for i in range(n):
        rule = max if slip == "max" else min
        gamma = rule(S_churn / n, SQRT2M1) if S_churn > 0 and S_tmin <= t[i] <= S_tmax else 0.0
        t_hat = t[i] * (1 + gamma)
        if gamma > 0:
            x = x + np.sqrt(t_hat ** 2 - t[i] ** 2) * options["S_noise"] * z[i, 0]
        D = edm_x0(model, prediction, x, t_hat) if slip != "cout" else (x + t_hat * model(x, t_hat)) / (1 + t_hat ** 2)
        x0s.append(D)
        d = (x - D) / t_hat
        x_next = x + (t[i + 1] - t_hat) * d
        if order == 2 and t[i + 1] > 0:
            s2 = t_hat if slip == "hat" else t[i + 1]
            D2 = edm_x0(model, prediction, x_next, s2) if slip != "cout" else \
                (x_next + s2 * model(x_next, s2)) / (1 + s2 ** 2)
            x0s2.append(D2)
            x_next = x + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * (x_next - D2) / s2)
        x = x_next
        states.append(x)
    out = {"trajectory": np.array(states), "x0_hat": np.array(x0s)}
    if order == 2:
        out["x0_hat_2"] = np.array(x0s2)
    return out


def euler(x, t, model, prediction, schedule, z, options, slip=None):
    """Euler on the probability-flow ODE: flow matching's x_{i+1} = x_i + (t_{i+1} - t_i) u on a velocity model,
    else Karras et al. (2022) Algorithm 2 with first-order steps (:func:`karras`)."""
    if prediction == "velocity":  # flow matching: x = (1 - t) x0 + t eps, dx/dt = eps - x0
        states, x0s = [x], []
        for t_cur, t_next in zip(t[:-1], t[1:]):
            u = model(x, t_cur)
            x0s.append(x - t_cur * u)
            x = x + (t_next - t_cur) * u
            states.append(x)
        return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}
    return karras(x, t, model, prediction, schedule, z, options, slip, order=1)


def heun(x, t, model, prediction, schedule, z, options, slip=None):
    """Karras et al. (2022) Algorithm 2 with Heun's second stage at (x_{i+1}, t_{i+1}) (:func:`karras`)."""
    return karras(x, t, model, prediction, schedule, z, options, slip, order=2)


def alpha_bar(schedule, t):
    """diffusers' alphas_cumprod at an integer timestep, 1 at -1 (the clean end)."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[int(t)])


def table_x0_eps(model, prediction, x, t, ab, slip=None):
    """diffusers DDIMScheduler.step's prediction_type branches (VP table: alpha = sqrt(ab), sigma = sqrt(1 - ab))."""
    m = model(x, t)
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    if slip == "eps read as v" or prediction == "v":
        sign = -1.0 if slip != "cout" else 1.0
        x0 = a * x + sign * s * m
        return x0, (x - a * x0) / s
    if prediction == "eps":
        return (x - s * m) / a, m
    return m, (x - a * m) / s


def ddim(x, t, model, prediction, schedule, z, options, slip=None):
    """Song et al. (2021) eq. (12) with sigma_t(eta) of eq. (16), on diffusers' alpha_bar table."""
    eta = options["eta"]
    if slip == "trailing":
        t = np.append(conventions.diffusion_timesteps(len(t) - 1, 1000, "trailing").astype(float), -1.0)
    if slip == "offset 0":
        t = np.append(conventions.diffusion_timesteps(len(t) - 1, 1000, "leading", 0).astype(float), -1.0)
    states, x0s = [x], []
    for i in range(len(t) - 1):
        ab = alpha_bar(schedule, t[i])
        ab_prev = alpha_bar(schedule, t[i + 1])
        if slip == "final alpha" and t[i + 1] < 0:
            ab_prev = float(schedule.alphas_cumprod[0])
        x0, eps = table_x0_eps(model, prediction, x, t[i], ab, slip)
        x0s.append(x0)
        std = eta * np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)
        x = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev - std ** 2) * eps
        if std > 0:
            x = x + std * z[i, 0]
        states.append(x)
    return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}


def ddpm(x, t, model, prediction, schedule, z, options, slip=None):
    """Ho et al. (2020) eq. (6)-(7): the posterior q(x_prev | x_t, x0) at x0_hat, strided timesteps (beta of the
    stride 1 - alpha_bar_t / alpha_bar_prev), variance beta_tilde ('small') or beta ('large'), no noise at the end."""
    states, x0s = [x], []
    for i in range(len(t) - 1):
        ab, ab_prev = alpha_bar(schedule, t[i]), alpha_bar(schedule, t[i + 1])
        beta = 1 - ab / ab_prev
        x0, _ = table_x0_eps(model, prediction, x, t[i], ab)
        x0s.append(x0)
        mean = np.sqrt(ab_prev) * beta / (1 - ab) * x0 + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
        var = (1 - ab_prev) / (1 - ab) * beta if options["variance"] == "small" else beta
        x = mean + (np.sqrt(var) * z[i, 0] if t[i + 1] >= 0 else 0.0)
        states.append(x)
    return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}


def euler_ancestral(x, t, model, prediction, schedule, z, options, slip=None):
    """k-diffusion sample_euler_ancestral with get_ancestral_step (EDM schedule: sigma = t)."""
    if slip == "ramp":
        n = len(t) - 1
        lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
        t = np.append((hi + np.arange(n) / n * (lo - hi)) ** 7, 0.0)
    eta = options["eta"]
    states, x0s = [x], []
    for i in range(len(t) - 1):
        s, sn = t[i], t[i + 1]
        D = edm_x0(model, prediction, x, s)
        x0s.append(D)
        up = min(sn, eta * np.sqrt(sn ** 2 * (s ** 2 - sn ** 2) / s ** 2))
        down = np.sqrt(sn ** 2 - up ** 2)
        x = x + (x - D) / s * (down - s)
        if sn > 0:
            x = x + z[i, 0] * options["s_noise"] * up
        states.append(x)
    return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}


def dpmpp_2m(x, t, model, prediction, schedule, z, options, slip=None):
    """k-diffusion sample_dpmpp_2m in sigma-space (xbar = x / alpha, sigma = sqrt((1 - ab)/ab) on a table)."""
    if slip == "repeat":
        t = t.copy()
        t[-1] = t[-2]
    table = hasattr(schedule, "alphas_cumprod")

    def alpha_sigma(ti):
        if not table:
            return 1.0, ti
        ab = alpha_bar(schedule, ti)
        return np.sqrt(ab), np.sqrt((1 - ab) / ab)

    states, x0s, old = [x], [], None
    a, s = alpha_sigma(t[0])
    xb = x / a
    for i in range(len(t) - 1):
        a, s = alpha_sigma(t[i])
        a_n, s_n = alpha_sigma(t[i + 1])
        if table:
            x0, _ = table_x0_eps(model, prediction, a * xb, t[i], a * a)
        else:
            x0 = edm_x0(model, prediction, xb, s)
        x0s.append(x0)
        with np.errstate(divide="ignore"):
            h = -np.log(s_n) + np.log(s)
        if old is None or s_n == 0:
            xb = (s_n / s) * xb - np.expm1(-h) * x0
        else:
            with np.errstate(divide="ignore"):  # a step of size zero: r infinite, 1/(2r) = 0
                r = (np.log(alpha_sigma(t[i - 1])[1]) - np.log(s)) / h
            xb = (s_n / s) * xb - np.expm1(-h) * ((1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * old)
        old = x0
        states.append(a_n * xb)
    return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}


def pc(x, t, model, prediction, schedule, z, options, slip=None):
    """score_sde's get_pc_sampler: per time a Langevin corrector (snr rule, or a fixed step) then a predictor
    (reverse diffusion on VE, Euler-Maruyama on VP), noise blocks in that order; the last update's mean returned."""
    ve = not hasattr(schedule, "beta_min")
    states, x0s = [x], []
    n = len(t) - 1
    for i in range(n):
        calls = []

        def score(y, ti):
            s = model(y, ti)
            a, sg = schedule.alpha(ti), schedule.sigma(ti)
            calls.append((y + sg * sg * s) / a)
            return s

        def correct(x, ti, noise):
            g = score(x, ti)
            if options["step_size"] is None:
                step = 2 * (options["snr"] * np.mean(np.linalg.norm(noise, axis=-1))
                            / np.mean(np.linalg.norm(g, axis=-1))) ** 2
            else:
                step = options["step_size"]
            mean = x + step * g
            return mean, mean + np.sqrt(2 * step) * noise

        def predict(x, noise):
            g = score(x, t[i])
            if ve:
                var = schedule.sigma(t[i]) ** 2 - schedule.sigma(t[i + 1]) ** 2
                mean = x + var * g
                return mean, mean + np.sqrt(var) * noise
            beta = schedule.beta_min + t[i] * (schedule.beta_max - schedule.beta_min)
            h = t[i + 1] - t[i]
            mean = x + (-0.5 * beta * x - beta * g) * h
            return mean, mean + np.sqrt(-h * beta) * noise

        if slip == "pc order":  # Song et al. (2021) Algorithm 2's order: predict, then correct at the new time
            _, x = predict(x, z[i, 0])
            mean, x = correct(x, t[i + 1], z[i, 1])
        else:
            _, x = correct(x, t[i], z[i, 0])
            mean, x = predict(x, z[i, 1])
        if i == n - 1 and slip != "no denoise":
            x = mean
        states.append(x)
        x0s.append(np.stack(calls))
    return {"trajectory": np.array(states), "x0_hat": np.array(x0s)}


def pf_ode_exact(x, t, model, prediction, schedule, z, options, slip=None):
    """The probability-flow ODE of Gaussian data N(mu, C) solved in closed form (EDM schedule): along each
    eigenvector of C with eigenvalue l, x - mu scales as sqrt((l + sigma'^2) / (l + sigma^2))."""
    mu, C = PF_DATA  # the pf_ode case's data law (its users assert it)
    lam, V = np.linalg.eigh(C)
    y = (x - mu) @ V
    states = [x]
    for s in t[1:]:
        states.append(mu + (y * np.sqrt((lam + s * s) / (lam + t[0] ** 2))) @ V.T)
    return np.array(states)


#: the data law (mean, covariance) of golden's pf_ode case, gaussian_d2 (its users assert it)
PF_DATA = (np.array([0.5, -1.0]), np.array([[1.5, 0.4], [0.4, 0.8]]))

#: sampler name of refscore.diffusion.SAMPLERS -> its independent implementation (pf_ode: pf_ode_exact)
SAMPLERS = {"euler": euler, "heun": heun, "ddim": ddim, "ddpm": ddpm, "euler_ancestral": euler_ancestral,
            "dpmpp_2m": dpmpp_2m, "pc": pc}


class Slip(NamedTuple):
    """One injected slip: the sampler it is injected into, the golden cases it is checked on (a selector of
    :func:`refscore.testing.golden_cases`; None: all of the sampler's), the label the diagnosis must name,
    and the quantity of its row in :data:`refscore.conventions.TABLE`."""

    sampler: str
    cases: str | None
    label: str
    row: str


#: slip (the ``slip`` argument of the samplers above) -> :class:`Slip`
SLIPS = {
    "sigma^2": Slip("euler", "*edm_gaussian*", "sigma^2 where sigma belongs",
                    "VE noise levels (diffusers KarrasVeScheduler)"),
    "repeat": Slip("dpmpp_2m", "*sd*", "last sigma repeated", "Karras σ grid (k-diffusion)"),
    "ramp": Slip("euler_ancestral", None, "Karras ramp over n + 1 points", "Karras σ grid (k-diffusion)"),
    "hat": Slip("heun", None, "Heun's second stage at t_hat", "Heun second stage (diffusers)"),
    "cout": Slip("ddim", "*eta1*", "c_out's sign for v-prediction",
                 "Denoiser preconditioning (EDM, k-diffusion)"),
    "eps read as v": Slip("ddim", "*leading*", "eps read as v", "Prediction type (diffusers)"),
    "final alpha": Slip("ddim", None, "final alpha_bar_0 (set_alpha_to_one=False)", "DDIM final alpha (diffusers)"),
    "max": Slip("euler", "*churn*", "max for min in the churn gamma", "EDM churn γ"),
    "trailing": Slip("ddim", "*leading*", "timestep spacing trailing", "Timestep spacing (diffusers)"),
    "offset 0": Slip("ddim", "*leading*", "timestep spacing leading (steps_offset 0)", "Timestep spacing (diffusers)"),
    "no denoise": Slip("pc", None, "missing final denoise", "PC final denoise (score_sde)"),
    "pc order": Slip("pc", None, "PC order predictor first", "PC order (score_sde)"),
}
#: every label a slip of :data:`SLIPS` is named by
LABELS = {label for _, _, label, _ in SLIPS.values()}
