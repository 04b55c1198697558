r"""The diffusion kinds' hypotheses of the golden diagnosis (internal): your diffusion code, one step at a time.

A ``diffusion_<sampler>`` case stores its start ``x``, its grid ``t`` and its noise ``z``, and the
exact denoiser of its data is known at every point and time, so each of your steps can be checked on
its own: from *your* state before step :math:`i` (``trajectory[i]``) refscore's step
(:data:`refscore.diffusion.samplers.SAMPLERS`, the denoiser called at that state, the stored noise of
step :math:`i`; a multistep method's memory from your previous state) predicts your state after it,
and the denoiser outputs it used predict your ``x0_hat``.  One wrong step then does not poison the
others, and a hypothesis is named only when its one-step predictions match yours at every step of
every failing case (to ten times the check's tolerance, the test every hypothesis of
:mod:`refscore.golden.diagnosis` passes).  Derivation of the steps: docs/diffusion.md §6.

:func:`patterns` says where a failing trajectory departs: the first step whose denoiser output
(``x0_hat``) or whose update departs from refscore's step taken from your state, and, when the
denoiser output departs, the time at which the exact denoiser gives your output (found on the
schedule's log-SNR), which says that the grid departs, or that no time gives it (the call itself: a
prediction converted to :math:`x_0` otherwise).

:func:`structural` gives the hypotheses as ``[(label, explanation, predict, convention)]`` (the form of
:mod:`refscore.golden._hypotheses`), each a variant of refscore's step, each with its row of
:data:`refscore.conventions.TABLE`:

* the grid: :math:`\sigma^2` where :math:`\sigma` belongs (and the reverse), in EDM's variable
  :math:`\bar\sigma = \sigma/\alpha`, i.e. the time of log-SNR :math:`2\lambda` (:math:`\lambda/2`); the
  last :math:`\sigma` repeated (a final step of size zero); Karras's ramp over ``n + 1`` points (the
  grid never reaches :math:`\sigma_{\min}`); another timestep spacing (leading, trailing, linspace, and
  leading without or with Stable Diffusion's ``steps_offset``); DDIM's last step landing at timestep 0
  (:math:`\bar\alpha_0`) instead of the clean end;
* the denoiser call: the model's prediction read as another parametrisation (x0, eps, v, velocity);
  v-prediction's :math:`c_{\rm out}` with its sign flipped, :math:`\hat x_0 = (\alpha x + \sigma\hat v)/(\alpha^2 +
  \sigma^2)`;
* the update: Heun's second stage at the first stage's time :math:`\hat t` instead of the grid's next;
  EDM's churn with ``max`` for ``min``; score_sde's PC without its final denoise (the last update keeps
  its noise), or with its predictor and corrector in the other order.

``diffusion_schedule``, ``diffusion_coefficients`` and ``diffusion_denoiser`` cases get the variants of
their quantities: a grid by another rule (as above), :math:`\sigma^2` or :math:`\alpha^2` where
:math:`\sigma` or :math:`\alpha` belongs; a churn table with ``max``, a DDIM table whose last step lands
on :math:`\bar\alpha_0`; a prediction of another parametrisation; constant factors worded for them
(:func:`factors`).  ``diffusion_likelihood`` cases: a log-likelihood without its prior term, and a
Hutchinson estimate whose sum over the probes was never divided by their number.
"""
from __future__ import annotations

import math

import numpy as np

from .. import conventions
from ..diffusion import samplers as diffusion_samplers
from ..diffusion.coefficients import churn_gamma as _gamma_min
from ..diffusion.parametrisations import PARAMETRISATIONS, to_x0_eps
from ..diffusion.schedules import EDM, VPDiscrete
from ..diffusion.tables import SPACINGS
from .cases import (COEFFICIENT_TABLES, DIFFUSION_KINDS, DIFFUSION_SAMPLERS, build_diffusion, churn_table, diffusion_grid,
                    diffusion_options, diffusion_sampler_of, diffusion_steps, x0_quantities)

__all__ = ["KINDS", "structural", "patterns", "factors"]

#: the case kinds this module diagnoses
KINDS = DIFFUSION_KINDS
#: the trajectory quantities of a diffusion sampler case
_STEP_QUANTITIES = ("trajectory", "x0_hat", "x0_hat_2")
#: the parametrisations a model's output may be misread as (diffusers' prediction types and flow's velocity)
_READINGS = ("x0", "eps", "v", "velocity")


def _g4(v) -> str:
    return f"{v:.4g}"


def _row(function):
    """``convention(Q) -> (row, None)``: the ledger row carrying ``function`` (found by the callable)."""
    return lambda Q: (conventions.row_of(function).quantity, None)


def _row_converting(function):
    """``convention(Q) -> (row, function name)``: the row carrying ``function``, which converts your number."""
    return lambda Q: (conventions.row_of(function).quantity, function.__name__)


def _named_row(quantity):
    """A row without functions (its fix is in the code, not the numbers), named outright."""
    return lambda Q: (conventions.row(quantity).quantity, None)


def _agrees(ctx, predicted, yours) -> bool:
    """Your values are the prediction to the tolerance a hypothesis's fit is held to (ten times the check's)."""
    tr = max(10 * ctx.rtol, 1e-9)
    ta = max(10 * ctx.atol, 1e-9 * float(np.max(np.abs(predicted), initial=0.0)))
    return bool(np.all(np.abs(yours - predicted) <= ta + tr * np.abs(predicted)))


def _departs(ctx, predicted, yours):
    """Elementwise: your value departs from the prediction at the check's tolerance."""
    return np.abs(yours - predicted) > ctx.atol + ctx.rtol * np.abs(predicted)


# ------------------------------------------------------------------ a sampler case, step by step
def _subject(ctx, c):
    return ctx.cached(("diffusion-subject", c.name), lambda: build_diffusion(c.spec))


def _velocity(x0_fn, schedule, x, t):
    r"""The probability-flow velocity :math:`\alpha'\hat x_0 + \sigma'(x - \alpha\hat x_0)/\sigma` (docs/diffusion.md §3)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    x0 = x0_fn(x, t)
    return schedule.d_alpha(t) * x0 + schedule.d_sigma(t) * (x - a * x0) / s


def _heun_second_stage_at_hat(x0_fn, schedule, x, t, t_next, noise, ctx, S_churn, S_tmin, S_tmax, S_noise):
    """Heun's step with its second stage evaluated at the first stage's time t_hat, not t_next."""
    gamma = _gamma_min(schedule.sigma(t) / schedule.alpha(t), ctx.n_steps, S_churn, S_tmin, S_tmax)
    x, t_hat = diffusion_samplers.churn_step(schedule, x, t, gamma, noise[0] if noise else None, S_noise)
    h = t_next - t_hat
    d = _velocity(x0_fn, schedule, x, t_hat)
    xe = x + h * d
    if schedule.sigma(t_next) == 0.0:
        return xe
    return x + h * (0.5 * d + 0.5 * _velocity(x0_fn, schedule, xe, t_hat))


def _churn_max(step):
    """Euler's or Heun's step (``step``) after EDM's churn with ``max(S_churn / N, sqrt 2 - 1)``."""
    def run(x0_fn, schedule, x, t, t_next, noise, ctx, S_churn, S_tmin, S_tmax, S_noise):
        sbar = schedule.sigma(t) / schedule.alpha(t)
        inside = S_churn > 0 and S_tmin <= sbar <= S_tmax
        gamma = max(S_churn / ctx.n_steps, math.sqrt(2.0) - 1.0) if inside else 0.0
        x, t_hat = diffusion_samplers.churn_step(schedule, x, t, gamma, noise[0] if noise else None, S_noise)
        return step(x0_fn, schedule, x, t_hat, t_next)
    return run


def _last_step_of_size_zero(sampler):
    """refscore's steps but the last, which calls the denoiser at its state and leaves the state as it is (a step
    from the last nonzero time to itself)."""
    row_run = DIFFUSION_SAMPLERS[sampler].run

    def run(x0_fn, schedule, x, t, t_next, noise, ctx, **options):
        if not ctx.last:
            return row_run(x0_fn, schedule, x, t, t_next, noise, ctx, **options)
        x0_fn(x, t)
        return x
    return run


class _Variant:
    """A variant of refscore's run of a sampler case: another grid, another denoiser call, another step or
    other options (each None: refscore's)."""

    def __init__(self, key, grid=None, x0=None, run=None, options=None):
        self.key, self.grid, self.x0, self.run, self.options = key, grid, x0, run, options

    def predict(self, ctx, c, q):
        """Your ``q`` under this variant: each step from your state before it (your trajectory when it is
        comparable), else the whole run from ``x``; None where the variant does not apply, or does not change
        ``q`` (refscore's step from your states predicts the same: the variant explains nothing there)."""
        out = self._predict(ctx, c, q)
        if out is None or self.key == "refscore":
            return out
        ref = _REFSCORE.predict(ctx, c, q)
        return None if ref is not None and ref.shape == out.shape and _agrees(ctx, ref, out) else out

    def _predict(self, ctx, c, q):
        sub = _subject(ctx, c)
        p = c.spec["params"]
        grid = c.inputs["t"] if self.grid is None else self.grid(ctx, c, sub)
        if grid is None:
            return None
        x0_fn = sub.denoiser.x0 if self.x0 is None else self.x0(ctx, c, sub)
        if x0_fn is None:
            return None
        options = p["options"] if self.options is None else self.options(p["options"])
        if options is None:
            return None
        sampler = diffusion_sampler_of(c.kind)
        yours = ctx.yours(c, "trajectory")
        chained = yours is None
        states = c.inputs["x"][None] if chained else yours
        key = ("diffusion-variant", c.name, self.key, chained)
        try:
            nxt, calls = ctx.cached(key, lambda: diffusion_steps(
                sampler, sub.schedule, x0_fn, states, grid, c.inputs.get("z"), options, chained=chained,
                run=None if self.run is None else self.run(sampler)))
        except (ValueError, FloatingPointError, ZeroDivisionError):
            return None  # the variant cannot run here (a time outside the domain, a step of zero size)
        if q == "trajectory":
            return np.concatenate([c.inputs["x"][None], nxt])
        try:
            return x0_quantities(sampler, calls).get(q)
        except RuntimeError:
            return None


#: refscore's own step (the reference a variant must differ from)
_REFSCORE = _Variant("refscore")


def _steps_hypotheses(ctx, Q, sampler):
    """The sampler hypotheses (see the module) that apply to the failing cases' settings."""
    cases = Q.cases
    out = []

    def add(label, expl, variant, convention):
        variant.key = label  # the cache key of its runs, one per hypothesis
        out.append((label, expl, lambda c: variant.predict(ctx, c, Q.q), convention))

    # ---- the grid
    def log_snr_scaled(k):
        def grid(ctx, c, sub):
            sch, t = sub.schedule, c.inputs["t"]
            with np.errstate(divide="ignore"):
                lam = sch.log_snr(t)
            lo, hi = sch.log_snr_range()
            new = k * lam
            finite = np.isfinite(lam)
            if np.any((new[finite] < lo) | (new[finite] > hi)):
                return None
            out = t.copy()
            out[finite] = sch.t_of_log_snr(new[finite])
            return out if not np.array_equal(out, t) else None
        return grid

    add("sigma^2 where sigma belongs", "your grid's noise levels are refscore's squared (sigma/alpha -> (sigma/alpha)^2, "
        "the time of log-SNR 2 lambda): a variance used as a standard deviation, as diffusers' KarrasVeScheduler "
        "passes EDM's VE times t_i = sigma_i^2 as sigma; refscore.conventions.sigma_from_ve_time(t) gives sigma",
        _Variant(None, grid=log_snr_scaled(2.0)), _row_converting(conventions.sigma_from_ve_time))
    add("sqrt(sigma) where sigma belongs", "your grid's noise levels are the square roots of refscore's (sigma/alpha -> "
        "sqrt(sigma/alpha), the time of log-SNR lambda / 2): a standard deviation used as a variance",
        _Variant(None, grid=log_snr_scaled(0.5)), _row_converting(conventions.ve_time_from_sigma))

    add("last sigma repeated", "your grid's last time is the one before it: the final step has size zero (the state "
        "is left as it is after the denoiser call), so the run stops at the last nonzero sigma (a final sigma_min "
        "appended where refscore's grid ends at the clean end); refscore.conventions.karras_sigmas gives refscore's "
        "grid", _Variant(None, run=_last_step_of_size_zero), _row(conventions.karras_sigmas))
    if all(c.spec["params"]["grid"]["rule"] == "karras" for c in cases):
        def shifted(ctx, c, sub):
            sch, n = sub.schedule, int(c.spec["params"]["grid"]["steps"])
            lo, hi = sch.sigma_min ** (1.0 / sch.rho), sch.sigma_max ** (1.0 / sch.rho)
            ramp = np.arange(n) / n
            return np.append((hi + ramp * (lo - hi)) ** sch.rho, 0.0)

        add("Karras ramp over n + 1 points", "your Karras grid's ramp runs i/n where refscore's runs i/(n - 1): its last "
            "nonzero sigma is above sigma_min (an off-by-one in linspace(0, 1, n)); refscore.conventions.karras_sigmas "
            "gives refscore's grid", _Variant(None, grid=shifted), _row(conventions.karras_sigmas))
    if all(c.spec["params"]["grid"]["rule"] == "timesteps" for c in cases):
        spacings = {(c.spec["params"]["grid"]["spacing"], int(c.spec["params"]["grid"].get("steps_offset", 0)))
                    for c in cases}
        if len(spacings) == 1:
            own, offset = next(iter(spacings))
            others = [(s, 0) for s in SPACINGS if s != own] + ([("leading", 1 - offset)] if own == "leading" and
                                                              offset in (0, 1) else [])
            for spacing, off in others:
                def grid(ctx, c, sub, spacing=spacing, off=off):
                    g = dict(c.spec["params"]["grid"], spacing=spacing, steps_offset=off)
                    return diffusion_grid(sub.schedule, g)

                words = f"{spacing} spacing" + (f" with steps_offset {off}" if spacing == "leading" else "")
                yours_is = f"{own}" + (f" with steps_offset {offset}" if own == "leading" else "")
                add(f"timestep spacing {spacing}" + (f" (steps_offset {off})" if spacing == "leading" else ""),
                    f"your timesteps are the {words} where this case's are {yours_is} (diffusers' timestep_spacing, "
                    "steps_offset); refscore.conventions.diffusion_timesteps gives each", _Variant(None, grid=grid),
                    _row(conventions.diffusion_timesteps))
    if all(isinstance(_subject(ctx, c).schedule, VPDiscrete) and c.inputs["t"][-1] == -1.0 for c in cases):
        def final_alpha(ctx, c, sub):
            t = c.inputs["t"].copy()
            t[-1] = 0.0
            return t if t[-2] > 0.0 else None

        add("final alpha_bar_0 (set_alpha_to_one=False)", "your last step lands on timestep 0 (alpha_bar_0) where "
            "refscore's lands on the clean end (alpha_bar = 1): alphas_prev starting at alpha_bar_0, as DDIM with "
            "set_alpha_to_one=False", _Variant(None, grid=final_alpha), _row(conventions.ddim_final_alpha_cumprod))

    # ---- the denoiser call
    predictions = {c.spec["params"]["prediction"] for c in cases}
    if len(predictions) == 1:
        own = next(iter(predictions))
        for reading in _READINGS:
            if reading == own:
                continue

            def misread(ctx, c, sub, reading=reading, own=own):
                sch, D = sub.schedule, sub.denoiser

                def x0(x, t):
                    pred = D.predict(own, x, t)
                    da = sch.d_alpha(t) if reading == "velocity" else None
                    ds = sch.d_sigma(t) if reading == "velocity" else None
                    return to_x0_eps(reading, pred, x, sch.alpha(t), sch.sigma(t), da, ds)[0]
                return x0

            add(f"{own} read as {reading}", f"your sampler reads the model's {own} prediction as {reading} (its x0 from "
                f"the {reading} formula): a prediction type mixed up; refscore.conventions.x0_from_prediction gives each "
                "type's x0", _Variant(None, x0=misread), _row(conventions.x0_from_prediction))
        if own == "v":
            def flipped(ctx, c, sub):
                sch, D = sub.schedule, sub.denoiser

                def x0(x, t):
                    a, s = sch.alpha(t), sch.sigma(t)
                    return (a * x + s * D.predict("v", x, t)) / (a * a + s * s)
                return x0

            add("c_out's sign for v-prediction", "your x0 = (alpha x + sigma v)/(alpha^2 + sigma^2) where v's is (alpha x "
                "- sigma v)/(alpha^2 + sigma^2): EDM's c_out = +sigma sigma_d/sqrt(sigma^2 + sigma_d^2) used for a "
                "v-network, whose c_out is negative (k-diffusion's VDenoiser); refscore.conventions.denoiser_scalings('v', "
                "sigma)", _Variant(None, x0=flipped), _row(conventions.denoiser_scalings))

    # ---- the update
    if sampler == "heun":
        add("Heun's second stage at t_hat", "your second stage evaluates the denoiser and the derivative at the first "
            "stage's time t_hat (sigma_hat) where Heun's takes them at the grid's next time t[i + 1] (sigma_next)",
            _Variant(None, run=lambda s: _heun_second_stage_at_hat), _named_row("Heun second stage (diffusers)"))
    if sampler in ("euler", "heun") and all(c.spec["params"]["options"].get("S_churn", 0.0) > 0 for c in cases):
        step = diffusion_samplers.heun_step if sampler == "heun" else diffusion_samplers.euler_step
        add("max for min in the churn gamma", "your churn raises the noise level by gamma = max(S_churn / N, sqrt 2 - 1) "
            "where EDM's gamma = min(S_churn / N, sqrt 2 - 1): the cap used as a floor, noise added at every step; "
            "refscore.conventions.churn_gamma", _Variant(None, run=lambda s, step=step: _churn_max(step)),
            _row(conventions.churn_gamma))
    pc_options = [diffusion_options("pc", c.spec["params"]["options"], len(c.inputs["t"]) - 1) for c in cases] \
        if sampler == "pc" else []
    orders = {o["order"] for o in pc_options}
    if len(orders) == 1 and all(o["langevin_alpha"] != "step" for o in pc_options):
        own = next(iter(orders))
        other = next(o for o in diffusion_samplers.PC_ORDERS if o != own)
        words = {"corrector_first": "the corrector's Langevin steps at t[i], then the predictor to t[i + 1] "
                                    "(score_sde's pc_sampler)",
                 "predictor_first": "the predictor to t[i + 1], then the corrector's Langevin steps at t[i + 1] "
                                    "(Song et al. 2021, Algorithms 2-3)"}
        add(f"PC order {other.replace('_', ' ')}", f"your step runs {words[other]} where this case's runs "
            f"{words[own]}; the noise of a step drawn in call order (pc's option order)",
            _Variant(None, options=lambda o: {**o, "order": other}), _named_row("PC order (score_sde)"))
    if sampler == "pc" and all(o["denoise"] for o in pc_options):
        add("missing final denoise", "your last update keeps its noise where score_sde's sampler returns that update's "
            "mean (denoise=True)", _Variant(None, options=lambda o: {**o, "denoise": False}),
            _named_row("PC final denoise (score_sde)"))
    return out


# ------------------------------------------------------------------ where a trajectory departs
def _solve_time(ctx, sub, x, y):
    """The time at which the exact denoiser at the states ``x`` gives your outputs ``y`` (to the fit's
    tolerance), searched on the schedule's log-SNR, or None."""
    from scipy.optimize import minimize_scalar

    sch, D = sub.schedule, sub.denoiser
    lo, hi = sch.log_snr_range()
    lo, hi = max(lo, -40.0), min(hi, 40.0)

    def misfit(lam):
        t = float(sch.t_of_log_snr(lam))
        if sch.sigma(t) == 0.0:
            return math.inf
        return float(np.sum((D.x0(x, t) - y) ** 2))

    lams = np.linspace(lo, hi, 321)
    values = [misfit(lam) for lam in lams]
    k = int(np.argmin(values))
    a, b = lams[max(k - 1, 0)], lams[min(k + 1, len(lams) - 1)]
    res = minimize_scalar(misfit, bounds=(a, b), method="bounded", options={"xatol": 1e-13})
    t = float(sch.t_of_log_snr(res.x))
    return t if _agrees(ctx, D.x0(x, t), y) else None


def _time_words(sub, t) -> str:
    sch = sub.schedule
    sbar = sch.sigma(t) / sch.alpha(t)
    return f"t = {_g4(t)}" + ("" if isinstance(sch, EDM) else f" (sigma/alpha = {_g4(sbar)})")


def _first_departure(ctx, c):
    """``(step, what, words)`` of the first step of case ``c`` at which your run departs from refscore's
    step from your state (None: the case could not be stepped; step -1: none departs)."""
    sampler = diffusion_sampler_of(c.kind)
    yours = ctx.yours(c, "trajectory")
    x0_yours = {q: ctx.yours(c, q) for q in ("x0_hat", "x0_hat_2") if q in c.quantities}
    if yours is None and all(v is None for v in x0_yours.values()):
        return None
    t = c.inputs["t"]
    if yours is not None and np.any(_departs(ctx, c.inputs["x"], yours[0])):
        return 0, "start", "your trajectory[0] is not the stored x"
    states = yours if yours is not None else c.quantities["trajectory"]
    sub = _subject(ctx, c)
    nxt, calls = ctx.cached(("diffusion-refscore-steps", c.name, yours is None), lambda: diffusion_steps(
        sampler, sub.schedule, sub.denoiser.x0, states, t, c.inputs.get("z"), c.spec["params"]["options"],
        chained=False))
    ref = x0_quantities(sampler, calls)
    # per step: does a denoiser output depart, does the state after it depart
    stage_of = [i for i, cl in enumerate(calls) if len(cl) > 1]  # the steps with a second stage (x0_hat_2)
    for i in range(len(calls)):
        for q, y in x0_yours.items():
            if y is None or q not in ref:
                continue
            rows = [i] if q == "x0_hat" else [j for j, s in enumerate(stage_of) if s == i]
            for j in rows:
                if np.any(_departs(ctx, ref[q][j], y[j])):
                    call = calls[i][0 if q == "x0_hat" else 1]
                    own = q == "x0_hat" and np.array_equal(call[0], states[i])  # called at your state itself
                    point = "your state trajectory[{}]".format(i) if own else "refscore's point of that call (a churned " \
                        "or intermediate state, from your state)"
                    words = f"your {q}[{j}] departs from the exact denoiser at {point}"
                    if ref[q].ndim == 3 and call[0].shape == y[j].shape:
                        found = _solve_time(ctx, sub, call[0], y[j])
                        if found is not None and not math.isclose(found, call[1], rel_tol=1e-9, abs_tol=1e-12):
                            words += (f": it is the exact denoiser there at {_time_words(sub, found)} where refscore's "
                                      f"call is at {_time_words(sub, call[1])}: the time of the call departs (the grid, "
                                      "or the stage's time)")
                        elif found is None:
                            words += (": at no time: the model's output turned into x0 departs" if own else
                                      ": at no time: the point of the call or the model's output turned into x0 departs")
                    return i, "denoiser", words
        if yours is not None and np.any(_departs(ctx, nxt[i], yours[i + 1])):
            given = any(y is not None and q in ref for q, y in x0_yours.items())
            tail = ", your x0_hat agreeing: the update (or the time it steps to) departs" if given else ""
            return i, "update", f"your state after step {i} departs from refscore's step from your state{tail}"
    return -1, "none", ""


def _departures(ctx, Q) -> str | None:
    found = {c.name: _first_departure(ctx, c) for c in Q.cases}
    if not found or any(v is None for v in found.values()):
        return None
    if all(v[0] == -1 for v in found.values()):
        return ("every step agrees with refscore's step from your previous state: the difference accumulates along "
                "the trajectory (round-off amplified)")
    groups = {}
    for c in Q.cases:
        i, what, words = found[c.name]
        if i != -1:
            groups.setdefault((i, what, words), []).append(c)

    def where(i, what, cases):
        if what == "start":
            return "the start"
        last = " (the last)" if all(i == len(c.inputs["t"]) - 2 for c in cases) else ""
        times = {(float(c.inputs["t"][i]), float(c.inputs["t"][i + 1])) for c in cases}
        if len(times) == 1:
            a, b = next(iter(times))
            return f"step {i}{last} (t = {_g4(a)} -> {_g4(b)})"
        return f"step {i}{last}"

    if len(groups) == 1:
        (i, what, words), cases = next(iter(groups.items()))
        return f"departs at {where(i, what, cases)}: {words}"
    return "departs at " + "; ".join(f"{where(i, what, cases)} in {', '.join(c.name for c in cases)} ({words})"
                                     for (i, what, words), cases in groups.items())


def patterns(ctx, Q, failing) -> tuple:
    """Where a failing diffusion quantity departs (see the module)."""
    if not Q.cases:
        return ()
    kind = Q.cases[0].kind
    if diffusion_sampler_of(kind) is not None and Q.q in _STEP_QUANTITIES:
        where = _departures(ctx, Q)
        out = [where] if where else []
        if Q.q != "trajectory" and all(ctx.yours(c, "trajectory") is not None for c in Q.cases):
            refs = [_REFSCORE.predict(ctx, c, Q.q) for c in Q.cases]
            if all(r is not None and _agrees(ctx, r, Q.yours[c.name]) for r, c in zip(refs, Q.cases)):
                out.append(f"every {Q.q} is refscore's denoiser at your states: it departs because your trajectory "
                           "does (see trajectory)")
        return tuple(out)
    rows = []
    for c in Q.cases:
        y = Q.yours[c.name]
        bad = _departs(ctx, Q.gold[c.name], y)
        idx = np.argwhere(bad)
        if idx.size:
            rows.append((c, tuple(int(v) for v in idx[0])))
    if kind == "diffusion_coefficients" and rows:
        where = []
        for c, (i, *col) in rows:
            columns = c.spec["params"]["columns"]
            bad = [columns[k] for k in range(len(columns)) if np.any(_departs(ctx, Q.gold[c.name][i, k],
                                                                               Q.yours[c.name][i, k]))]
            where.append(f"{c.name}: first at step {i}, columns {', '.join(bad)}")
        return ("; ".join(where),)
    if rows and Q.q in ("alpha", "sigma", "log_snr", "d_alpha", "d_sigma") and kind == "diffusion_schedule":
        return ("first departs at " + "; ".join(f"t = {_g4(c.inputs['t'][i[0]])} in {c.name}" for c, i in rows),)
    if rows and Q.q == "grid":
        return ("first departs at " + "; ".join(f"grid[{i[0]}] in {c.name}" for c, i in rows),)
    return ()


# ------------------------------------------------------------------ schedules, tables, the denoiser
def _schedule_hypotheses(ctx, Q):
    q, out = Q.q, []
    if q == "grid":
        def grid_of(rule):
            def predict(c):
                sub = _subject(ctx, c)
                try:
                    g = rule(c, sub)
                except (ValueError, KeyError):
                    return None
                return None if g is None or g.shape != Q.gold[c.name].shape else g
            return predict

        rules = [r for r in {c.spec["params"]["grid"]["rule"] for c in Q.cases}]
        if rules == ["karras"]:
            def shifted(c, sub):
                sch, n = sub.schedule, int(c.spec["params"]["grid"]["steps"])
                lo, hi = sch.sigma_min ** (1.0 / sch.rho), sch.sigma_max ** (1.0 / sch.rho)
                return np.append((hi + np.arange(n) / n * (lo - hi)) ** sch.rho, 0.0)

            def squared(c, sub):
                return Q.gold[c.name] ** 2

            def repeated(c, sub):
                g = Q.gold[c.name].copy()
                g[-1] = g[-2]
                return g

            out += [("Karras ramp over n + 1 points", "your ramp runs i/n where Karras's runs i/(n - 1): the last nonzero "
                     "sigma is above sigma_min; refscore.conventions.karras_sigmas", grid_of(shifted),
                     _row(conventions.karras_sigmas)),
                    ("sigma^2 where sigma belongs", "your noise levels are refscore's squared (EDM's VE times "
                     "t_i = sigma_i^2 as diffusers' KarrasVeScheduler holds them)", grid_of(squared),
                     _row_converting(conventions.sigma_from_ve_time)),
                    ("last sigma repeated", "your grid ends at its last nonzero sigma repeated where refscore's ends at "
                     "0 (final_sigmas_type='sigma_min' on a Karras ramp)", grid_of(repeated),
                     _row(conventions.karras_sigmas))]
        if rules == ["timesteps"]:
            combos = {(c.spec["params"]["grid"]["spacing"], int(c.spec["params"]["grid"].get("steps_offset", 0)))
                      for c in Q.cases}
            for spacing in SPACINGS:
                for off in ((0, 1) if spacing == "leading" else (0,)):
                    if combos == {(spacing, off)}:
                        continue

                    def rule(c, sub, spacing=spacing, off=off):
                        g = dict(c.spec["params"]["grid"], spacing=spacing, steps_offset=off)
                        return diffusion_grid(sub.schedule, g)

                    label = f"timestep spacing {spacing}" + (f" (steps_offset {off})" if spacing == "leading" else "")
                    out.append((label, f"your timesteps are the {spacing} spacing" + (
                        f" with steps_offset {off}" if spacing == "leading" else "") + " (diffusers' timestep_spacing); "
                        "refscore.conventions.diffusion_timesteps gives each", grid_of(rule),
                        _row(conventions.diffusion_timesteps)))

            def no_end(c, sub):
                g = Q.gold[c.name].copy()
                g[-1] = 0.0
                return g

            out.append(("final alpha_bar_0 (set_alpha_to_one=False)", "your grid ends at timestep 0 where refscore's "
                        "ends at the clean end -1 (alpha_bar = 1)", grid_of(no_end),
                        _row(conventions.ddim_final_alpha_cumprod)))
        return out
    if q in ("sigma", "alpha"):
        other = {"sigma": "a variance (1 - alpha_bar for a discrete table) where the standard deviation belongs",
                 "alpha": "alpha_bar where sqrt(alpha_bar) belongs (the cumulative product used as the signal scale)"}
        out.append((f"{q}^2 where {q} belongs", f"your {q} is refscore's squared: {other[q]}",
                    lambda c: Q.gold[c.name] ** 2, None))
        out.append((f"sqrt({q}) where {q} belongs", f"your {q} is the square root of refscore's",
                    lambda c: np.sqrt(Q.gold[c.name]), None))
    return out


def _coefficient_hypotheses(ctx, Q):
    tables = {c.spec["params"]["table"] for c in Q.cases}
    if len(tables) != 1 or Q.q != "table":
        return []
    table = next(iter(tables))
    out = []
    if table == "churn":
        def predict(c):
            sub = _subject(ctx, c)
            return np.array(churn_table(sub.schedule, c.inputs["t"], c.spec["params"]["options"], gamma_rule=max))

        out.append(("max for min in the churn gamma", "your gamma = max(S_churn / N, sqrt 2 - 1) where EDM's is "
                    "min(S_churn / N, sqrt 2 - 1): the cap used as a floor; refscore.conventions.churn_gamma", predict,
                    _row(conventions.churn_gamma)))
    if table in ("ddim", "ddpm", "dpmpp_2m"):
        def predict(c):
            sub = _subject(ctx, c)
            t = c.inputs["t"].copy()
            if not (isinstance(sub.schedule, VPDiscrete) and t[-1] == -1.0 and t[-2] > 0.0):
                return None
            t[-1] = 0.0
            return np.array(COEFFICIENT_TABLES[table][1](sub.schedule, t, c.spec["params"]["options"]), dtype=float)

        out.append(("final alpha_bar_0 (set_alpha_to_one=False)", "your last step lands on timestep 0 (alpha_bar_0) "
                    "where refscore's lands on the clean end (alpha_bar = 1)", predict,
                    _row(conventions.ddim_final_alpha_cumprod)))
    return out


def _denoiser_hypotheses(ctx, Q):
    if Q.q not in PARAMETRISATIONS:
        return []
    out = []
    for other in PARAMETRISATIONS:
        if other != Q.q:
            out.append((f"{other} for {Q.q}", f"your {Q.q} is refscore's {other} prediction: the parametrisations mixed "
                        "up; refscore.conventions.x0_from_prediction and prediction_from_x0 convert between them",
                        lambda c, other=other: c.quantities[other], _row(conventions.x0_from_prediction)))
    if Q.q == "v":
        out.append(("v = sigma x0 - alpha eps", "your v has the opposite sign to v = alpha eps - sigma x0 (the sign a "
                    "v-network's c_out carries)", lambda c: -c.quantities["v"], _row(conventions.denoiser_scalings)))
    return out


def _likelihood_hypotheses(ctx, Q):
    """A log-likelihood without its prior term, and a Hutchinson estimate whose probe sum was never divided by the
    number of probes (each with its ledger row)."""
    out = []
    if Q.q in ("log_likelihood", "hutchinson_log_likelihood"):
        out.append(("prior term missing", "your log-likelihood is the divergence integral alone: the prior's "
                    "log-density log pi(x_T) at the ODE's end point is left out",
                    lambda c: c.quantities[Q.q] - c.quantities["prior_term"],
                    _row(conventions.log_likelihood_with_prior)))
    if Q.q == "hutchinson_log_likelihood":
        out.append(("probe sum not divided by the probe count", "your trace term sums z_k^T (int J_v dt) z_k over "
                    "the m probes where refscore takes their mean (a Hutchinson estimate never divided by m)",
                    lambda c: conventions.probe_sum_from_log_likelihood(
                        c.quantities[Q.q], c.quantities["prior_term"], int(c.inputs["z"].shape[0])),
                    _row_converting(conventions.log_likelihood_from_probe_sum)))
    return out


def structural(ctx, Q):
    """The hypotheses of a failing diffusion quantity (see the module), each predicting your values."""
    if not Q.cases:
        return []
    kind = Q.cases[0].kind
    sampler = diffusion_sampler_of(kind)
    if sampler is not None:
        return _steps_hypotheses(ctx, Q, sampler) if Q.q in _STEP_QUANTITIES else []
    if kind == "diffusion_schedule":
        return _schedule_hypotheses(ctx, Q)
    if kind == "diffusion_coefficients":
        return _coefficient_hypotheses(ctx, Q)
    if kind == "diffusion_likelihood":
        return _likelihood_hypotheses(ctx, Q)
    return _denoiser_hypotheses(ctx, Q)


def factors(ctx, Q):
    """``[(label, factor(case), explanation, convention)]``: constant factors worded for diffusion quantities."""
    return [("sign flip", lambda c: -1.0, "your values are -golden", None),
            ("factor 2", lambda c: 2.0, "twice refscore's", None),
            ("factor 1/2", lambda c: 0.5, "half of refscore's", None)]
