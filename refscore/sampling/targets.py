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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels.target_blocks import KernelBlock
from ..models.base import BoundModel

__all__ = ["CompiledTarget", "KernelBlock", "compile_target", "logpdf_function", "score_function"]


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
