r"""How a target hands its compiled score kernel to the Numba and CUDA backends.

Every distribution and model declares what it is to the compiled samplers
beside its own math (docs/derivations.md §8):

* ``target.kernel_block()`` — a distribution, or a bound model
  (``model.bind(theta)``, which asks ``model._kernel_block(theta)``), returns a
  :class:`~refscore._kernels.target_blocks.KernelBlock`: the score kernel's
  layout and its flat parameter block (the table of kinds is in
  :mod:`refscore._kernels.target_blocks`);
* ``target.kernel_levels(sigmas)`` — a noise-conditional target
  (``dist.perturbed()``, ``NoiseConditional(model).bind(theta)``) returns one
  block per level and the score scales.

:func:`compile_target` only asks, and stacks the answer into a
:class:`CompiledTarget`; the Numba and CUDA backends then call ONE compiled
dispatcher, ``evaluate(layout, params[level], ...)``, whatever the target.

The NumPy reference never uses these kernels: it calls ``target.score`` (and
:func:`logpdf_function` for MALA), the independent route the compiled
kernels are tested against.

The declarations also tell the samplers what they know before a run:
:func:`is_noise_conditional` (whether ``score`` takes ``sigma``) and
:func:`linear_score_precisions` (the precision of a linear score, whose
largest eigenvalue bounds ULA's stable step, docs/derivations.md §8.2).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from .._kernels.ids import AFFINE
from .._kernels.target_blocks import KernelBlock
from ..models.base import BoundModel

__all__ = ["CompiledTarget", "KernelBlock", "compile_target", "logpdf_function", "score_function",
           "is_noise_conditional", "linear_score_precisions"]


@dataclass(frozen=True)
class CompiledTarget:
    """``(layout, params, scale)`` of a target: what every compiled backend reads."""

    layout: np.ndarray   # int64 (HEADER + widths,)
    params: np.ndarray   # float64 (L, P)
    scale: np.ndarray    # float64 (L,)
    has_logp: bool

    @property
    def dim(self) -> int:
        return int(self.layout[1])


def _ask_block(target) -> KernelBlock:
    ask = getattr(target, "kernel_block", None)
    block = ask() if callable(ask) else None
    if block is None:
        raise TypeError(
            "the compiled backends need a refscore distribution or a bound model with a score "
            f"kernel (model.bind(theta)), got {target!r}; use backend='numpy' for custom targets"
        )
    return block


def compile_target(target, sigmas=None, need_logp=False) -> CompiledTarget:
    """Ask ``target`` for its kernel block(s) and stack them as ``(layout, params, scale)``.

    Parameters
    ----------
    target : distribution, bound model, ``dist.perturbed()`` or bound ``NoiseConditional``
    sigmas : array (L,), optional
        Noise levels; required for noise-conditional targets.
    need_logp : bool
        Raise ``TypeError`` if the target has no log-density (MALA).
    """
    if sigmas is None:
        block = _ask_block(target)
        blocks, scale = [block], np.ones(1)
    else:
        ask = getattr(target, "kernel_levels", None)
        if not callable(ask):
            raise TypeError(
                "annealed_langevin needs a noise-conditional target with score(x, sigma): "
                f"dist.perturbed() or NoiseConditional(model).bind(theta), got {type(target).__name__}"
            )
        blocks, scale = ask(sigmas)
    if need_logp and not blocks[0].has_logp:
        raise TypeError(f"mala needs a log-density, and {target!r} has none "
                        "(score models other than energies do not define one)")
    return CompiledTarget(blocks[0].layout, np.ascontiguousarray(np.stack([b.params for b in blocks]), dtype=float),
                          np.ascontiguousarray(scale, dtype=float), blocks[0].has_logp)


def score_function(target, sigma=None):
    """The NumPy score ``x -> (n, d)`` of a target (at noise level ``sigma``)."""
    if sigma is None:
        return target.score
    return lambda x: target.score(x, sigma)


def logpdf_function(target):
    """NumPy ``x -> log p(x)`` up to a constant, independent of the compiled kernels.

    A bound model answers with its model's declared log-density
    (``model._log_density(theta)``); anything else with its ``logpdf``.
    """
    fn = target.log_density() if isinstance(target, BoundModel) else getattr(target, "logpdf", None)
    if fn is None:
        raise TypeError(f"mala needs a log-density, and {target!r} has none")
    return fn


def is_noise_conditional(target):
    """Whether ``target.score`` takes the noise level, ``score(x, sigma)``.

    ``True`` / ``False`` from what the target declares: a ``noise_conditional``
    attribute (:class:`.custom.CallableTarget`, :class:`.custom.NumbaTarget`),
    else ``kernel_levels`` (``dist.perturbed()``, ``NoiseConditional(model).bind(theta)``)
    or ``kernel_block`` (a distribution, a bound model); for any other object,
    the number of required positional parameters of its ``score`` (1 or 2);
    ``None`` when that cannot be read.
    """
    declared = getattr(target, "noise_conditional", None)
    if declared is not None:
        return bool(declared)
    if callable(getattr(target, "kernel_levels", None)):
        return True
    if callable(getattr(target, "kernel_block", None)):
        return False
    try:
        params = inspect.signature(target.score).parameters.values()
    except (TypeError, ValueError):  # a builtin or extension callable: no signature to read
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {1: False, 2: True}.get(len(required))


def linear_score_precisions(target, sigmas=None):
    r"""The precisions :math:`P_l` of a linear score, :math:`s_l(x) = -P_l (x - m_l)`, per level, or ``None``.

    Read from the target's declared kernel blocks (:func:`compile_target`'s
    source): an ``AFFINE`` block with a log-density (symmetric ``A``) is
    :math:`s = A(x - m) + b`, so :math:`P = -\text{scale}\cdot A`.  ``None`` for
    any other target (mixtures, MLPs, custom targets, an asymmetric ``A``) and
    for one that declares no kernel.
    """
    try:
        if sigmas is None:
            ask = getattr(target, "kernel_block", None)
            block = ask() if callable(ask) else None
            blocks, scale = ([block], [1.0]) if block is not None else (None, None)
        else:
            ask = getattr(target, "kernel_levels", None)
            blocks, scale = ask(sigmas) if callable(ask) else (None, None)
    except TypeError:  # the declared way of saying "no compiled kernel"
        return None
    if blocks is None or any(int(b.layout[0]) != AFFINE or not b.has_logp for b in blocks):
        return None
    out = []
    for block, sc in zip(blocks, scale):
        d = block.dim
        A = block.params[:d * d].reshape(d, d)
        out.append(-float(sc) * 0.5 * (A + A.T))
    return out
