r"""The sampler registry: one entry per sampler refscore validates, from which the rest follows.

:data:`SAMPLERS` maps a sampler's name (its golden case kind, its name in
:func:`refscore.testing.assert_sampler_matches`) to a :class:`Sampler`: its
public whole-run function, its pure step (:mod:`.steps`, in the ``step_fn``
form), what that step receives and returns, what a golden case of it records,
the parameters of its golden cases, and two declared properties:

* ``noise_levels``: the run walks decreasing noise levels ``sigmas``, each
  with its own score (that of :math:`p_\sigma`) and the step
  :math:`\eta_l = \text{step}\,\sigma_l^2/\sigma_L^2`;
* ``has_accept_test``: a Metropolis–Hastings test with uniforms ``u``,
  accepting iff :math:`\log u < \log\alpha`.

From an entry follow its golden case kind (:data:`refscore.golden.cases.KINDS`:
inputs drawn, quantities computed, parameters checked), its diagnosis (the
variants :mod:`refscore.golden` tries on a failing trajectory, chosen by the
two properties) and its testing support (:data:`refscore.testing.STEP_INPUTS`).

=============  ============================================  =================================  ============  ===============
name           run                                           step                               noise_levels  has_accept_test
=============  ============================================  =================================  ============  ===============
``ula``        :func:`refscore.sampling.ula`                 :func:`.steps.ula_update`          no            no
``mala``       :func:`refscore.sampling.mala`                :func:`.steps.mala_update`         no            yes
``annealed``   :func:`refscore.sampling.annealed_langevin`   :func:`.steps.annealed_update`     yes           no
=============  ============================================  =================================  ============  ===============

This module lists the public samplers, so it imports :mod:`refscore.sampling`
and :mod:`refscore.sampling` does not import it back (no import circle):
``from refscore.sampling.samplers import SAMPLERS``.

Examples
--------
>>> from refscore.sampling.samplers import SAMPLERS
>>> list(SAMPLERS)
['ula', 'mala', 'annealed']
>>> list(SAMPLERS["mala"].inputs), SAMPLERS["mala"].has_accept_test
(['score', 'log_prob', 'step', 'z', 'u'], True)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import annealed_langevin, mala, ula
from .steps import annealed_update, mala_update, ula_update

__all__ = ["Sampler", "SAMPLERS", "STEP_ARGUMENTS"]

#: the keyword arguments a step may receive after ``x``, by the property that brings them:
#: every step gets ``score``, ``step`` and ``z``; ``has_accept_test`` adds ``log_prob`` and ``u``;
#: ``noise_levels`` adds ``sigma`` and ``sigmas``
STEP_ARGUMENTS = {
    "always": ("score", "step", "z"),
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
        on the target's ``perturbed()`` version), returning a ``SamplerResult``.  ``None`` for a sampler
        that has its step only: its golden states are then the step iterated over the stored noise.
    step : callable
        The pure step in the ``step_fn`` form: ``step(x, **arguments)`` with the keyword arguments of
        ``inputs``; returns ``x_next`` (c, d), or ``(x_next, log_alpha (c,))`` with ``has_accept_test``.
    inputs : dict
        The step's keyword arguments after ``x`` and what they hold, in order: those
        :data:`STEP_ARGUMENTS` gives for the two properties, no others.
    returns : str
        What a ``step_fn`` returns, in words.
    quantities : dict
        What a golden case records and what it means: ``states``, and ``accept``, ``log_alpha``
        with ``has_accept_test``.
    params : dict
        The parameters of its golden cases: ``step``, ``steps`` (per level with ``noise_levels``),
        and ``sigmas`` (a list, decreasing) with ``noise_levels``.
    noise_levels : bool
        The run walks the noise levels ``sigmas`` (see the module).
    has_accept_test : bool
        The step accepts or rejects with the uniforms ``u`` (see the module).
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
    noise_levels: bool = False
    has_accept_test: bool = False

    def __post_init__(self):
        want = {*STEP_ARGUMENTS["always"], *(STEP_ARGUMENTS["has_accept_test"] if self.has_accept_test else ()),
                *(STEP_ARGUMENTS["noise_levels"] if self.noise_levels else ())}
        flags = f"has_accept_test={self.has_accept_test}, noise_levels={self.noise_levels}"
        if set(self.inputs) != want:
            raise ValueError(f"sampler {self.name!r}: inputs must be {sorted(want)} (the arguments of {flags}), "
                             f"got {sorted(self.inputs)}")
        recorded = {"states", "accept", "log_alpha"} if self.has_accept_test else {"states"}
        if set(self.quantities) != recorded:
            raise ValueError(f"sampler {self.name!r}: quantities must be {sorted(recorded)} ({flags}), "
                             f"got {sorted(self.quantities)}")
        given = {"step", "steps", "sigmas"} if self.noise_levels else {"step", "steps"}
        if set(self.params) != given:
            raise ValueError(f"sampler {self.name!r}: params must be {sorted(given)} ({flags}), "
                             f"got {sorted(self.params)}")
        if self.has_accept_test and self.noise_levels:
            # the golden accept test and the diagnosis's ratio variants evaluate one score
            raise ValueError(f"sampler {self.name!r}: an accept test with noise levels has no golden cases yet")


_STATES = "(T, c, d) states[t] = the states after step t (t = 0..T-1), so states[-1] is the final state"
_SCORE = "callable x (c, d) -> (c, d), the target's score"

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
        noise_levels=True,
    ),
)}
