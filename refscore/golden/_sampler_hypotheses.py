"""The samplers' hypotheses of the golden diagnosis (internal): predictions of *your* trajectory.

:func:`structural` gives ``[(label, explanation, predict, convention)]`` for a failing sampler
quantity (``states``, ``log_alpha``...), in the form of :mod:`refscore.golden._hypotheses`, which
calls it for every case kind of :data:`refscore.sampling.samplers.SAMPLERS`; :func:`patterns`
adds where along the trajectory the failure lies.  The variants are chosen by the properties a
sampler's registry entry declares.
"""
from __future__ import annotations

import math

import numpy as np

from .. import conventions
from ..sampling.samplers import SAMPLERS
from .cases import iterate_steps, mala_ratio_parts, run_sampler

__all__ = ["structural", "patterns"]


def _fixed(row_name, function_name):
    """A convention named outright: ``(row, function)``."""
    return lambda Q: (row_name, function_name)


def _step_conversions(annealed) -> list:
    """``[(row, f, inverse)]``: the ledger's Langevin step conversions in both directions, those of
    annealed Langevin's base step first for an annealed case."""
    words = ("annealed_step", "step") if annealed else ("step", "annealed_step")
    out = []
    for word in words:
        for row in conventions.TABLE:
            for conv in row.conversions:
                if word in conv.converts and conv.inverse is not None:
                    out += [(row, conv.function, conv.inverse), (row, conv.inverse, conv.function)]
    return out


def _g4(v) -> str:
    return f"{v:.4g}"


def structural(ctx, Q):
    """Variants of a sampler's trajectory and ratios, chosen by the properties its entry of
    :data:`refscore.sampling.samplers.SAMPLERS` declares; each is its step or its run, fed otherwise."""
    q, sampler = Q.q, SAMPLERS[Q.cases[0].kind]
    annealed = sampler.noise_levels  # a step per noise level
    adjusted = sampler.has_accept_test  # a Metropolis correction (MALA)
    out = []
    if q == "states":
        def run(c, step):
            key = (c.name, step)
            if key not in ctx._runs:
                ctx._runs[key] = run_sampler(c.kind, c.target, c.inputs, c.spec["params"], step=step)
            return ctx._runs[key]

        for row, f, inv in _step_conversions(annealed):
            def predict(c, f=f):
                step = float(c.inputs["step"])
                new = float(f(step))
                if not (new > 0 and math.isfinite(new)) or new == step:
                    return None
                return run(c, new)

            name, ratio = f.__name__, float(f(1.0))
            how = f" = {_g4(ratio)} step" if all(
                math.isclose(float(f(float(c.inputs["step"]))), ratio * float(c.inputs["step"]), rel_tol=1e-12)
                for c in Q.cases) else ""
            out.append((f"Langevin step {name}(step)",
                        f"your run is refscore's at step {name}(step){how}: your sampler reads its step in that "
                        f"convention, so give it {inv.__name__}(step)", predict, _fixed(row.quantity, inv.__name__)))
        if not adjusted:
            out.append(("noise sqrt(eta)", "x + eta s + sqrt(eta) z where refscore's update is x + eta s + "
                        "sqrt(2 eta) z (the lr-form's noise with the eta-form's drift)",
                        lambda c: iterate_steps(c.kind, c.target, c.inputs, noise_factor=math.sqrt(0.5)), None))
        if annealed:
            out.append(("one step for every level", "every level runs the stored step, where refscore's "
                        "eta_i = step sigma_i^2 / sigma_L^2 grows with sigma_i",
                        # each level passed to the step as the only (so the last) one: it runs at the stored step
                        lambda c: iterate_steps(c.kind, c.target, c.inputs, level_steps=False), None))
    elif q == "log_alpha":  # MALA's ratio at refscore's states
        def ratio(c, correction):
            """log p(y) - log p(x) + correction * C, where refscore's ratio has correction -1: with
            log_alpha = log p(y) - log p(x) - C, C is the proposal term of refscore.sampling.steps."""
            prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
            density, log_alpha = mala_ratio_parts(c.target, prev, c.inputs["z"], float(c.inputs["step"]))
            return density + correction * (density - log_alpha)

        out += [("no proposal correction", "log p(y) - log p(x) alone: the Metropolis ratio of a symmetric "
                 "proposal, but the Langevin proposal is not symmetric", lambda c: ratio(c, 0.0), None),
                ("proposal correction sign flipped", "+ (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
                 "where refscore subtracts it (forward and backward proposals swapped)",
                 lambda c: ratio(c, 1.0), None),
                ("proposal correction over 2 eta", "the proposal log-density with 1/(2 eta) where the variance "
                 "2 eta gives 1/(4 eta)", lambda c: ratio(c, -2.0), None)]
    return out



def patterns(ctx, Q, failing) -> tuple:
    """Where along the trajectory a failing sampler quantity departs (none found yet: ``()``)."""
    return ()
