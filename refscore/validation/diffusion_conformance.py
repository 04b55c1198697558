r"""Diffusion samplers written from the papers pass ``refscore check``; each injected slip is named and located.

The samplers of :mod:`refscore.validation.diffusion_from_papers` are written from their published algorithms
(Karras et al. 2022, Algorithm 2; Song et al. 2021, eq. (12) and (16); Ho et al. 2020, eq. (6)-(7);
k-diffusion's Euler ancestral and DPM-Solver++(2M); score_sde's predictor-corrector; the probability-flow ODE
of Gaussian data in closed form), independently of :mod:`refscore.diffusion.samplers`.  Each is run through
:func:`refscore.testing.assert_diffusion_sampler_matches` on every golden case of its sampler (the exact
denoiser of the case's data, the stored noise), and must pass with every quantity compared: a row each, its
measured value the largest elementwise error in units of the check's tolerance
:math:`\mathrm{atol} + \mathrm{rtol}\,|\text{golden}|` (rtol :math:`10^{-8}`, atol :math:`10^{-10}`).

Then each slip of :data:`~refscore.validation.diffusion_from_papers.SLIPS` (the noise levels squared, the
last :math:`\sigma` repeated, Karras's ramp over :math:`n + 1` points, Heun's second stage at :math:`\hat t`,
v-prediction's :math:`c_{\rm out}` with its sign flipped, eps read as v, DDIM's final :math:`\bar\alpha_0`,
``max`` for ``min`` in the churn, diffusers' trailing spacing and ``steps_offset`` 0 where a case is leading
with offset 1, score_sde's PC without its final denoise or with the predictor first) is injected into one of
those samplers, and the golden diagnosis must name it with its label and its row of
:data:`refscore.conventions.TABLE`, name no other slip's label for any quantity, and say at which step the
run first departs: a row each.  That step is checked against the per-step departures computed here from
the golden code (:func:`refscore.golden.cases.diffusion_steps` from *your* states, the step the diagnosis
takes, docs/diffusion.md §6.1): the first step whose denoiser output or update departs beyond the
tolerance.

The figure shows, for a handful of slips, per step :math:`i`: your :math:`\hat x_0` of step :math:`i`
against the exact denoiser at refscore's call from your state (the denoiser output), your state after step
:math:`i` against refscore's step from your state :math:`i` (the update), both in units of the tolerance,
and, for comparison, your state after step :math:`i` against the golden trajectory, which is what the check
compares and which stays off once the run has departed.  The per-step departures are round-off (or exactly
0) before the slip acts; the vertical line is the step the diagnosis names.  The experiment is small and
deterministic: ``--quick`` runs it as it is.
"""
from __future__ import annotations

import functools
import re

import numpy as np

from refscore import golden, testing

from .common import check_row, log_with_zeros, save_figure, style, zero_marker_proxy
from .diffusion_from_papers import LABELS, PF_DATA, SAMPLERS, SLIPS, pf_ode_exact

__all__ = ["NAME", "TITLE", "SOURCE", "WRITTEN", "SHOWN", "FLOOR", "in_tolerances", "Run", "run_yours",
           "step_departures", "first_departure", "diagnosed_departure", "run"]

NAME = "diffusion_conformance"
TITLE = "Diffusion samplers written from the papers against the golden cases; slips named by the diagnosis"
SOURCE = "docs/diffusion.md §6.1"

#: sampler -> (the implementation of diffusion_from_papers, the published algorithm it is written from)
WRITTEN = {
    "euler": (SAMPLERS["euler"], "Karras et al. (2022) Alg. 2, first order; flow matching's Euler"),
    "heun": (SAMPLERS["heun"], "Karras et al. (2022) Alg. 2 (Heun, with the churn)"),
    "ddim": (SAMPLERS["ddim"], "Song et al. (2021) eq. (12), (16) on diffusers' alpha_bar table"),
    "ddpm": (SAMPLERS["ddpm"], "Ho et al. (2020) eq. (6)-(7), strided"),
    "euler_ancestral": (SAMPLERS["euler_ancestral"], "k-diffusion sample_euler_ancestral"),
    "dpmpp_2m": (SAMPLERS["dpmpp_2m"], "k-diffusion sample_dpmpp_2m (Lu et al. 2022)"),
    "pc": (SAMPLERS["pc"], "score_sde get_pc_sampler (Song et al. 2021b)"),
    "pf_ode": (pf_ode_exact, "the probability-flow ODE of Gaussian data in closed form"),
}
#: the slips drawn in the figure (keys of SLIPS), chosen to depart at different steps and in different ways
SHOWN = ("trailing", "ramp", "max", "hat", "final alpha", "no denoise")
#: the figure's floor: a departure of exactly 0 is drawn on it
FLOOR = 1e-9


def in_tolerances(yours, ref, rtol, atol):
    r"""Per leading index ``i``: the largest of :math:`|y - r| / (\mathrm{atol} + \mathrm{rtol}\,|r|)` over the
    other axes, the check's elementwise criterion (:func:`refscore.golden.check`) in units of its tolerance:
    above 1 the element fails."""
    yours, ref = np.asarray(yours, float), np.asarray(ref, float)
    ratio = np.abs(yours - ref) / (atol + rtol * np.abs(ref))
    return ratio.reshape(ratio.shape[0], -1).max(axis=1)


class Run:
    """Your sampler's run through :func:`refscore.testing.assert_diffusion_sampler_matches`: its verdict
    (``result``, a :class:`refscore.golden.CheckResult`), what your sampler returned per case (``values``:
    ``{case name: {quantity: array}}``) and the golden cases (``cases``)."""

    def __init__(self, result, values, cases):
        self.result, self.values, self.cases = result, values, cases

    @property
    def diagnoses(self) -> dict:
        """``{quantity: Diagnosis}`` of the failing quantities."""
        return {d.quantity: d for d in self.result.diagnosis}


def run_yours(fn, sampler, cases=None) -> Run:
    """Run ``fn`` (a sampler of the trajectory form) through :func:`refscore.testing.assert_diffusion_sampler_matches`
    on ``sampler``'s golden cases ``cases``, keeping what it returned: the helper's verdict on a pass, the
    ``CheckResult`` its ``AssertionError`` carries on a failure."""
    g = testing.golden_cases(cases, kind=golden.cases.diffusion_kind_name(sampler))
    returned = []

    def recorded(**kw):
        out = fn(**kw)
        returned.append((kw["x"], kw["t"], out))
        return out

    try:
        result = testing.assert_diffusion_sampler_matches(recorded, sampler, cases=cases)
    except AssertionError as exc:
        result = exc.result
    values = {}
    for name, c in g.all_cases.items():  # each call is matched to its case by its start and grid
        (out,) = [o for x, t, o in returned if np.array_equal(x, c.inputs["x"]) and np.array_equal(t, c.inputs["t"])]
        out = out if isinstance(out, dict) else {"trajectory": out}
        values[name] = {q: np.asarray(v, float) for q, v in out.items()}
    return Run(result, values, g.all_cases)


def step_departures(case, yours, rtol, atol) -> dict:
    """Per step ``i`` of a diffusion sampler case, in units of the check's tolerance (:func:`in_tolerances`):

    * ``"denoiser"``: your ``x0_hat`` of step ``i`` (and ``x0_hat_2``, Heun's second stage of that step)
      against the exact denoiser at refscore's call from your state ``trajectory[i]``, NaN where you returned
      none;
    * ``"update"``: your ``trajectory[i + 1]`` against refscore's step from your ``trajectory[i]`` (the stored
      noise of step ``i``; a multistep method's memory from your previous state);
    * ``"chained"``: your ``trajectory[i + 1]`` against the golden trajectory (what the check compares).

    refscore's steps from your states are :func:`refscore.golden.cases.diffusion_steps` with ``chained=False``
    and the calls they record, read as the case's quantities by :func:`refscore.golden.cases.x0_quantities`:
    the computation the diagnosis makes.
    """
    sampler = golden.cases.diffusion_sampler_of(case.kind)
    sub = golden.cases.build_diffusion(case.spec)
    traj = yours["trajectory"]
    nxt, calls = golden.cases.diffusion_steps(sampler, sub.schedule, sub.denoiser.x0, traj, case.inputs["t"],
                                              case.inputs.get("z"), case.spec["params"]["options"], chained=False)
    ref = golden.cases.x0_quantities(sampler, calls)
    n = len(calls)
    denoiser = np.full(n, np.nan)
    if "x0_hat" in yours and "x0_hat" in ref:
        denoiser = in_tolerances(yours["x0_hat"], ref["x0_hat"], rtol, atol)
    if "x0_hat_2" in yours and "x0_hat_2" in ref:
        second = in_tolerances(yours["x0_hat_2"], ref["x0_hat_2"], rtol, atol)
        steps = [i for i, c in enumerate(calls) if len(c) > 1]  # the steps with a second stage, in order
        denoiser[steps] = np.fmax(denoiser[steps], second)
    return {"denoiser": denoiser, "update": in_tolerances(traj[1:], nxt, rtol, atol),
            "chained": in_tolerances(traj[1:], case.quantities["trajectory"][1:], rtol, atol)}


def first_departure(departures) -> tuple:
    """``(step, what)``: the first step whose denoiser output (``"denoiser"``) or, that agreeing, whose update
    (``"update"``) departs beyond the tolerance, the order in which the diagnosis looks; ``(-1, "none")``."""
    for i, (den, upd) in enumerate(zip(departures["denoiser"], departures["update"])):
        if den > 1:
            return i, "denoiser"
        if upd > 1:
            return i, "update"
    return -1, "none"


_DEPARTS = re.compile(r"^departs at step (\d+)\b[^:]*: your (x0_hat|state after step)")


def diagnosed_departure(diagnosis) -> tuple | None:
    """``(step, what)`` the diagnosis of a trajectory says the run first departs at (``what``: ``"denoiser"``
    when your ``x0_hat`` departs, ``"update"`` when your state does), read from its first pattern; None when it
    names no single step (cases departing at different steps, or no departure found)."""
    m = _DEPARTS.match(diagnosis.patterns[0]) if diagnosis.patterns else None
    if m is None:
        return None
    return int(m.group(1)), "denoiser" if m.group(2) == "x0_hat" else "update"


def _conformance_row(sampler):
    fn, paper = WRITTEN[sampler]
    r = run_yours(fn, sampler)
    res = r.result
    held = sum(len(c.quantities) for c in r.cases.values())
    worst = max(float(np.max(in_tolerances(v, r.cases[name].quantities[q], res.rtol, res.atol)))
                for name, out in r.values.items() for q, v in out.items())
    data_ok = True
    if sampler == "pf_ode":  # the closed form is that of PF_DATA: the case's data law must be it
        data_ok = all(c.spec["data"]["kwargs"] == {"mean": PF_DATA[0].tolist(), "cov": PF_DATA[1].tolist()}
                      for c in r.cases.values())
    ok = res.passed and res.count("PASS") == held and data_ok
    return check_row(NAME, f"{sampler} written from {paper}: largest error over every key of its "
                     f"{len(r.cases)} golden case{'s' if len(r.cases) > 1 else ''}, in units of the tolerance "
                     f"({res.count('PASS')} of {held} keys PASS)", worst, "< 1 (every element within atol + "
                     "rtol |golden|)", "refscore check; docs/diffusion.md §6.1",
                     f"rtol {res.rtol:g}, atol {res.atol:g}", ok and worst < 1)


def _slip_run(slip):
    s = SLIPS[slip]
    return run_yours(functools.partial(WRITTEN[s.sampler][0], slip=slip), s.sampler, s.cases)


def _slip_row(slip, r):
    s = SLIPS[slip]
    res = r.result
    d = r.diagnoses.get("trajectory")
    # no other slip's label anywhere: not for the trajectory, not for the denoiser outputs
    named = set()
    for other in r.diagnoses.values():
        named |= set((other.hypothesis or "").split(" or ")) | set(other.also)
    others = sorted(named & (LABELS - {s.label}))
    firsts = {first_departure(step_departures(r.cases[n], r.values[n], res.rtol, res.atol)) for n in r.cases
              if n in {row.case for row in res.rows if row.status == "FAIL"}}
    said = diagnosed_departure(d) if d is not None else None
    where = f"step {said[0]} ({said[1]})" if said else "no single step"
    measured = (f"{d.hypothesis} [{d.convention}], {where}" if d is not None else "trajectory not diagnosed") + (
        f"; also named: {', '.join(others)}" if others else "")
    (expected_step,) = firsts if len(firsts) == 1 else (None,)
    expected = f"{s.label} [{s.row}], " + (f"step {expected_step[0]} ({expected_step[1]})" if expected_step
                                            else "one first step")
    ok = (not res.passed and d is not None and d.hypothesis == s.label and d.convention == s.row and not others
          and expected_step is not None and said == expected_step)
    cases = s.cases or "all cases"
    return check_row(NAME, f"slip '{slip}' injected into {s.sampler} ({cases}): the name, ledger row and first "
                     "departing step the diagnosis gives", measured, expected,
                     "refscore.golden diagnosis; refscore.conventions.TABLE", "exact; no other slip's label", ok)


def _panel(ax, slip, r, rtol, atol):
    s = SLIPS[slip]
    fails = [n for n in r.cases if any(row.case == n and row.status == "FAIL" for row in r.result.rows)]
    name = fails[0]
    dep = step_departures(r.cases[name], r.values[name], rtol, atol)
    steps = np.arange(len(dep["update"]))
    ax.axhline(1.0, color="k", lw=1.2, ls="--", label=f"the check's tolerance (rtol {rtol:g}, atol {atol:g})")
    log_with_zeros(ax, steps, dep["chained"], FLOOR, color="0.6", lw=3, alpha=0.6, zero_label=None,
                   label="your state vs the golden trajectory (what check compares)")
    if not np.all(np.isnan(dep["denoiser"])):
        log_with_zeros(ax, steps, dep["denoiser"], FLOOR, color="C0", marker="o", lw=1.2, zero_label=None,
                       label="your x0_hat vs the exact denoiser at refscore's call from your state")
    log_with_zeros(ax, steps, dep["update"], FLOOR, color="C3", marker="s", ms=4, lw=1.2, zero_label=None,
                   label="your state after step i vs refscore's step from your state i")
    d = r.diagnoses["trajectory"]
    said = diagnosed_departure(d)
    if said is not None:
        ax.axvline(said[0], color="C2", lw=6, alpha=0.25, label="the step the diagnosis names")
    top = max(np.nanmax(dep["chained"]), np.nanmax(dep["update"]), 10.0)
    ax.set_ylim(FLOOR, top * 30)
    ax.set_xticks(steps)
    ax.set_xlabel("step i")
    case = name.replace("diffusion_", "")
    ax.set_title(f"'{slip}' in {case}\n-> '{d.hypothesis}'\n[{d.convention}]", fontsize=9.5)


def run(quick: bool, seed: int, fig_dir):
    """The rows (every sampler's conformance, every slip's diagnosis) and the figure; ``quick`` and ``seed``
    change nothing (the golden cases fix every input)."""
    import matplotlib.pyplot as plt

    style()
    rows = [_conformance_row(sampler) for sampler in WRITTEN]
    runs = {slip: _slip_run(slip) for slip in SLIPS}
    rows += [_slip_row(slip, r) for slip, r in runs.items()]

    rtol, atol = golden.TOLERANCES["float64"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 10))
    for ax, slip in zip(axes.flat, SHOWN):
        _panel(ax, slip, runs[slip], rtol, atol)
    for ax in axes[:, 0]:
        ax.set_ylabel("|yours - reference| / (atol + rtol |reference|)")
    zero_marker_proxy(axes.flat[0])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Slips injected into samplers written from the papers: each step checked from your own state;\n"
                 "the diagnosis names the first step that departs (the panel's title: the slip, the case, the "
                 "diagnosis's label and ledger row)", fontsize=12, y=0.995)
    fig.tight_layout(rect=(0, 0.07, 1, 0.955))
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
