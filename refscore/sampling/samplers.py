r"""The sampler registry: one entry per sampler refscore validates, from which the rest follows.

:data:`SAMPLERS` maps a sampler's name (its golden case kind, its name in
:func:`refscore.testing.assert_sampler_matches`) to a :class:`Sampler`: its
public whole-run function, its pure step (:mod:`.steps`, :mod:`.single_step`, in the
``step_fn`` form), its single-step factory (:mod:`.single_step`: ``init`` and
``step(state, key)`` with refscore's counter key), what that step receives and returns,
what a golden case of it records, the parameters of its golden cases, and three declared
properties:

* ``noise_levels``: the run walks decreasing noise levels ``sigmas``, each
  with its own score (that of :math:`p_\sigma`) and the step
  :math:`\eta_l = \text{step}\,\sigma_l^2/\sigma_L^2`;
* ``has_accept_test``: a Metropolis–Hastings test with uniforms ``u``,
  accepting iff :math:`\log u < \log\alpha`;
* ``splitting``: kinetic Langevin by that splitting (``"BAOAB"``, ``"OBABO"``, ``"ABOBA"``):
  the state carries momenta ``v``, the step takes a ``friction`` and ``2 d`` normals ``xi``
  per chain (docs/derivations.md §8.6); ``None`` for the overdamped samplers.

From an entry follow its golden case kind (:data:`refscore.golden.cases.KINDS`:
inputs drawn, quantities computed, parameters checked), its diagnosis (the
variants :mod:`refscore.golden` tries on a failing trajectory, chosen by the
properties) and its testing support (:data:`refscore.testing.STEP_INPUTS`).

=================  =================================  ====================================  ===================
name               step (``step_fn`` form)            single step                           properties
=================  =================================  ====================================  ===================
``ula``            :func:`.steps.ula_update`          :func:`.single_step.ula_kernel`       --
``mala``           :func:`.steps.mala_update`         :func:`.single_step.mala_kernel`      ``has_accept_test``
``annealed``       :func:`.steps.annealed_update`     :func:`.single_step.annealed_kernel`  ``noise_levels``
``kinetic_baoab``  :func:`.single_step.baoab_update`  :func:`.single_step.kinetic_kernel`   ``splitting`` BAOAB
``kinetic_obabo``  :func:`.single_step.obabo_update`  :func:`.single_step.kinetic_kernel`   ``splitting`` OBABO
``kinetic_aboba``  :func:`.single_step.aboba_update`  :func:`.single_step.kinetic_kernel`   ``splitting`` ABOBA
=================  =================================  ====================================  ===================

The runs are :func:`refscore.sampling.ula`, :func:`~refscore.sampling.mala`,
:func:`~refscore.sampling.annealed_langevin` and, for the three kinetic entries,
:func:`refscore.sampling.kinetic.kinetic_langevin` with the entry's splitting.
The kinetic entries come last, so that the golden cases of the first three keep their noise
seeds (``100 + 10 i + j`` for the ``i``-th entry).

This module lists the public samplers, so it imports :mod:`refscore.sampling`
and :mod:`refscore.sampling` does not import it back (no import circle):
``from refscore.sampling.samplers import SAMPLERS``.

Examples
--------
>>> from refscore.sampling.samplers import SAMPLERS
>>> list(SAMPLERS)
['ula', 'mala', 'annealed', 'kinetic_baoab', 'kinetic_obabo', 'kinetic_aboba']
>>> list(SAMPLERS["mala"].inputs), SAMPLERS["mala"].has_accept_test
(['score', 'log_prob', 'step', 'z', 'u'], True)
>>> list(SAMPLERS["kinetic_obabo"].inputs), SAMPLERS["kinetic_obabo"].splitting
(['v', 'score', 'step', 'friction', 'xi'], 'OBABO')
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import annealed_langevin, mala, ula
from .kinetic import kinetic_langevin
from .single_step import (aboba_update, annealed_kernel, baoab_update, kinetic_kernel, mala_kernel, obabo_update,
                          ula_kernel)
from .steps import annealed_update, mala_update, ula_update

__all__ = ["Sampler", "SAMPLERS", "STEP_ARGUMENTS"]

#: the keyword arguments a step may receive after ``x``, by the property that brings them:
#: every step gets ``score`` and ``step``; an overdamped step (no ``splitting``) its noise ``z``;
#: a kinetic one (``splitting``) its momenta ``v``, the ``friction`` and its noise ``xi``;
#: ``has_accept_test`` adds ``log_prob`` and ``u``; ``noise_levels`` adds ``sigma`` and ``sigmas``
STEP_ARGUMENTS = {
    "always": ("score", "step"),
    "overdamped": ("z",),
    "splitting": ("v", "friction", "xi"),
    "has_accept_test": ("log_prob", "u"),
    "noise_levels": ("sigma", "sigmas"),
}


@dataclass(frozen=True)
class Sampler:
    """One sampler: its functions, its step's contract, its golden cases.

    Attributes
    ----------
    name : str
        The golden case kind and the ``sampler`` of :func:`refscore.testing.assert_sampler_matches`.
    about : str
        What the sampler is, in words (the golden manifest's ``kinds``).
    update : str
        Its update in words, ``"x <- x + eta s(x) + sqrt(2 eta) z"`` (what its golden ``step`` is the step of).
    run : callable or None
        The public whole-run function, called as ``run(target, x0, step, steps, seed=..., backend=...,
        record=..., progress=...)`` (``run(target, x0, sigmas, step, steps, ...)`` with ``noise_levels``,
        on the target's ``perturbed()`` version; ``run(target, x0, step, steps, friction, seed=...,
        splitting=..., v0=..., record=..., backend=...)`` with a ``splitting``), returning a
        ``SamplerResult``.  ``None`` for a sampler that has its step only: its golden states are then
        the step iterated over the stored noise.
    step : callable
        The pure step in the ``step_fn`` form: ``step(x, **arguments)`` with the keyword arguments of
        ``inputs``; returns ``x_next`` (c, d), ``(x_next, log_alpha (c,))`` with ``has_accept_test``,
        ``(x_next, v_next)`` with a ``splitting``.
    inputs : dict
        The step's keyword arguments after ``x`` and what they hold, in order: those
        :data:`STEP_ARGUMENTS` gives for the properties, no others.
    returns : str
        What a ``step_fn`` returns, in words.
    quantities : dict
        What a golden case records and what it means: ``states``; ``accept``, ``log_alpha`` with
        ``has_accept_test``; ``momenta`` with a ``splitting``.
    params : dict
        The parameters of its golden cases: ``step``, ``steps`` (per level with ``noise_levels``),
        ``sigmas`` (a list, decreasing) with ``noise_levels``, ``friction`` with a ``splitting``.
    single_step : callable or None
        The factory of its single-step form (:mod:`refscore.sampling.single_step`):
        ``single_step(target, step)`` (ULA, MALA), ``single_step(target, sigmas, step, steps_per_level)``
        (``noise_levels``), ``single_step(target, step, friction, mass=1.0)`` (a ``splitting``),
        returning ``SingleStep(init, step)`` whose ``step(state, key)`` takes a
        :class:`~refscore.sampling.single_step.CounterKey`.
    noise_levels : bool
        The run walks the noise levels ``sigmas`` (see the module).
    has_accept_test : bool
        The step accepts or rejects with the uniforms ``u`` (see the module).
    splitting : str or None
        Kinetic Langevin by this splitting (see the module), or None.
    """

    name: str
    about: str
    update: str
    run: Callable | None
    step: Callable
    inputs: dict
    returns: str
    quantities: dict
    params: dict
    single_step: Callable | None = None
    noise_levels: bool = False
    has_accept_test: bool = False
    splitting: str | None = None

    def __post_init__(self):
        kinetic = self.splitting is not None
        want = {*STEP_ARGUMENTS["always"], *STEP_ARGUMENTS["splitting" if kinetic else "overdamped"],
                *(STEP_ARGUMENTS["has_accept_test"] if self.has_accept_test else ()),
                *(STEP_ARGUMENTS["noise_levels"] if self.noise_levels else ())}
        flags = f"has_accept_test={self.has_accept_test}, noise_levels={self.noise_levels}"
        if kinetic:
            flags += f", splitting={self.splitting!r}"
            if self.splitting not in ("BAOAB", "OBABO", "ABOBA"):
                raise ValueError(f"sampler {self.name!r}: splitting must be 'BAOAB', 'OBABO' or 'ABOBA', "
                                 f"got {self.splitting!r}")
        if set(self.inputs) != want:
            raise ValueError(f"sampler {self.name!r}: inputs must be {sorted(want)} (the arguments of {flags}), "
                             f"got {sorted(self.inputs)}")
        recorded = {"states", "accept", "log_alpha"} if self.has_accept_test else {"states"}
        recorded |= {"momenta"} if kinetic else set()
        if set(self.quantities) != recorded:
            raise ValueError(f"sampler {self.name!r}: quantities must be {sorted(recorded)} ({flags}), "
                             f"got {sorted(self.quantities)}")
        given = {"step", "steps"} | ({"sigmas"} if self.noise_levels else set()) | ({"friction"} if kinetic else set())
        if set(self.params) != given:
            raise ValueError(f"sampler {self.name!r}: params must be {sorted(given)} ({flags}), "
                             f"got {sorted(self.params)}")
        if self.has_accept_test and self.noise_levels:
            # the golden accept test and the diagnosis's ratio variants evaluate one score
            raise ValueError(f"sampler {self.name!r}: an accept test with noise levels has no golden cases yet")
        if kinetic and (self.has_accept_test or self.noise_levels):
            raise ValueError(f"sampler {self.name!r}: a kinetic sampler with an accept test or noise levels has no "
                             "golden cases yet")


_STATES = "(T, c, d) states[t] = the states after step t (t = 0..T-1), so states[-1] is the final state"
_SCORE = "callable x (c, d) -> (c, d), the target's score"


def _kinetic_entry(splitting, update, words, second) -> Sampler:
    """The registry entry of kinetic Langevin by ``splitting`` (unit mass in its golden cases)."""
    return Sampler(
        f"kinetic_{splitting.lower()}",
        f"kinetic Langevin by {splitting} ({words}) on a closed-form target, unit mass, friction gamma, the "
        "2 d normals xi[t] of each step stored (refscore.sampling.kinetic.kinetic_langevin)",
        f"{splitting}: {words}, h = step",
        kinetic_langevin, update,
        {"v": "(c, d) the momenta p of this step's start (unit mass: the velocities)",
         "score": _SCORE,
         "step": "float, h of the splitting",
         "friction": "float, gamma: the O sub-step over tau multiplies p by c = exp(-gamma tau) and adds "
                     "sqrt(1 - c^2) xi",
         "xi": f"(c, 2 d) this step's normals: the first O takes xi[:, :d]{second}"},
        "(x_next, v_next), each (c, d)",
        {"states": _STATES, "momenta": "(T, c, d) momenta[t] = the momenta after step t"},
        {"step": 0.25, "steps": 20, "friction": 1.5},  # gamma != 1, so that 1/gamma differs from gamma
        single_step=functools.partial(kinetic_kernel, splitting=splitting),
        splitting=splitting,
    )


#: name -> :class:`Sampler`, in golden file order (a sampler added last leaves the other cases' noise seeds)
SAMPLERS = {s.name: s for s in (
    Sampler(
        "ula",
        "unadjusted Langevin on a closed-form target: x <- x + eta s(x) + sqrt(2 eta) z[t] "
        "(refscore.sampling.ula)",
        "x <- x + eta s(x) + sqrt(2 eta) z",
        ula, ula_update,
        {"score": _SCORE,
         "step": "float, eta of x + eta s(x) + sqrt(2 eta) z",
         "z": "(c, d) the standard normal noise of this step"},
        "x_next (c, d)",
        {"states": _STATES},
        {"step": 0.1, "steps": 20},
        single_step=ula_kernel,
    ),
    Sampler(
        "mala",
        "MALA on a closed-form target: proposal y = x + eta s(x) + sqrt(2 eta) z[t], accepted iff "
        "log u[t] < log_alpha (refscore.sampling.mala)",
        "x <- x + eta s(x) + sqrt(2 eta) z",
        mala, mala_update,
        {"score": _SCORE,
         "log_prob": "callable x (c, d) -> (c,), the target's normalised log density",
         "step": "float, eta of the proposal y = x + eta s(x) + sqrt(2 eta) z",
         "z": "(c, d) the proposal noise of this step",
         "u": "(c,) uniforms of this step: accept iff log u < log_alpha"},
        "x_next (c, d), or (x_next, log_alpha (c,)) to have log_alpha compared too",
        {
            "states": _STATES + " (a rejected step repeats the state)",
            "accept": "(T, c) 1.0 where the proposal of step t was accepted, else 0.0",
            "log_alpha": "(T, c) log p(y) - log p(x) - (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
            "at step t (x the state before it, y its proposal)",
        },
        {"step": 1.0, "steps": 20},  # about 60 % accepted: both decisions occur
        single_step=mala_kernel,
        has_accept_test=True,
    ),
    Sampler(
        "annealed",
        "annealed Langevin (Song & Ermon 2019, Alg. 1) with the exact scores of p_sigma = p * N(0, "
        "sigma^2 I): T steps at each level, eta_i = step sigma_i^2 / sigma_L^2 (refscore.sampling.annealed_langevin)",
        "x <- x + eta_i s(x, sigma_i) + sqrt(2 eta_i) z",
        annealed_langevin, annealed_update,
        {"score": "callable x (c, d) -> (c, d), the score of p_sigma = p * N(0, sigma^2 I) at this step's level",
         "sigma": "float, this step's noise level",
         "sigmas": "tuple of float, every level, decreasing",
         "step": "float, the step at the smallest level: eta_i = step sigma_i^2 / sigma_L^2",
         "z": "(c, d) the standard normal noise of this step"},
        "x_next (c, d)",
        {"states": "(L T, c, d) the states after each global step"},
        {"step": 0.05, "steps": 5, "sigmas": [2.0, 1.0, 0.5]},
        single_step=annealed_kernel,
        noise_levels=True,
    ),
    # kinetic Langevin last: the entries above keep their golden noise seeds
    _kinetic_entry("BAOAB", baoab_update, "B_{h/2} A_{h/2} O_h A_{h/2} B_{h/2}", " (xi[:, d:] unused)"),
    _kinetic_entry("OBABO", obabo_update, "O_{h/2} B_{h/2} A_h B_{h/2} O_{h/2}", ", the second xi[:, d:]"),
    _kinetic_entry("ABOBA", aboba_update, "A_{h/2} B_{h/2} O_h B_{h/2} A_{h/2}", " (xi[:, d:] unused)"),
)}
