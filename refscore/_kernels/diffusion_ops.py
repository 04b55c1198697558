r"""The instruction set of the diffusion sampler kernel (numba-free: the program builder reads it too).

A run of any sampler of :mod:`refscore.diffusion.samplers` is a *program*: per step, a short list of
operations on five registers of ``(d,)`` vectors per chain (docs/diffusion.md §6.1–6.2: every step is a
linear combination of the state, the denoiser's outputs and fresh noise):

==========  ==========================================================================================
register    holds
==========  ==========================================================================================
``X``       the state (the step's result is left here)
``Y``       a second point (Heun's Euler predictor)
``A``       an accumulator (Heun's first half step)
``D``       the last denoiser output :math:`\hat x_0`
``P``       a value carried to the next step (DPM-Solver++(2M)'s previous :math:`\hat x_0`)
==========  ==========================================================================================

and two operations, one row of ``ops`` (int64 ``[code, register, argument]``) and of ``coef`` (float64,
:data:`N_COEF` numbers) each:

* ``EVAL``: ``D <- x0(R[register])`` with the noise level of evaluation slot ``argument`` (its
  :math:`\alpha` and the data's per-component numbers there, computed on the host);
* ``COMBINE``: ``R[register] <- sum_r coef[r] R[r] + coef[N_REGISTERS] z``, ``z`` noise block
  ``argument`` of the step (coordinates ``argument * d .. argument * d + d - 1`` of
  ``refscore.noise.normal(seed, chain, step, .)``; ``-1``: none).  A register whose coefficient is
  exactly 0 is not read.

``X`` and ``P`` are the state carried from step to step (and from chunk to chunk); the others live
within a step.
"""
from __future__ import annotations

__all__ = ["EVAL", "COMBINE", "X", "Y", "A", "D", "P", "N_REGISTERS", "N_COEF", "NO_NOISE"]

#: op code: D <- x0(R[register]) at evaluation slot ``argument``
EVAL = 0
#: op code: R[register] <- sum_r coef[r] R[r] + coef[N_REGISTERS] * noise block ``argument``
COMBINE = 1

X, Y, A, D, P = 0, 1, 2, 3, 4
N_REGISTERS = 5
#: numbers per op row: one per register, then the noise's
N_COEF = N_REGISTERS + 1
#: the noise-block argument of a COMBINE that adds no noise
NO_NOISE = -1
