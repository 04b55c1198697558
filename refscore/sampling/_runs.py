r"""What every sampler run shares: its result, its divergence report, the checks of its inputs, its backend.

Derivation: docs/derivations.md §8.5 (divergence freezing).

:func:`refscore.sampling.ula`, :func:`~refscore.sampling.mala`,
:func:`~refscore.sampling.annealed_langevin` and
:func:`refscore.sampling.kinetic.kinetic_langevin` read their inputs and choose
their backend here, and return a :class:`SamplerResult` (or a subclass) through
:func:`_reported`, which warns when chains diverged.  The package
:mod:`refscore.sampling` re-exports the public names; the samplers' modules
import this one, never the package, so that the package can import them all
without an import circle.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._kernels.score_blocks import BEYOND_BOUND, GROWTH_BOUND, NONFINITE
from .._validation import as_float_array, check_finite, check_int
from .custom import NumbaTarget
from .dask_backend import DaskBackend
from .registry import get_backend
from .targets import is_noise_conditional

__all__ = ["SamplerResult", "DivergenceWarning"]


@dataclass
class SamplerResult:
    """Output of a sampler.

    Attributes
    ----------
    x : ndarray (n, d)
        Final states (for diverged chains: their last state inside the bound).
    diverged : ndarray (n,) bool
        Chains whose update produced a non-finite value or left the bound
        ``|x_i| <= GROWTH_BOUND``, frozen at their last state inside it.
    accept_rate : ndarray (n,) or None
        MALA only: per chain, accepted moves / ``n_steps`` (overall rate =
        ``accept_rate.mean()``).
    trace : ndarray (n_steps // record, n, d) or None
        ``trace[j]`` = states after ``(j + 1) * record`` steps (global step
        count across noise levels for annealed Langevin).
    reduced : object or None
        ``backend="dask"`` with ``reduce=`` (:mod:`.reductions`): the
        reduction's result, computed on the workers; ``x`` is then ``None``
        (the final states are not gathered).
    """

    x: np.ndarray | None
    diverged: np.ndarray
    accept_rate: np.ndarray | None = None
    trace: np.ndarray | None = None
    reduced: object = None


class DivergenceWarning(RuntimeWarning):
    """Chains diverged (a non-finite value, or beyond :data:`GROWTH_BOUND`) and were frozen and
    flagged in ``.diverged``; or, before a run, the step is beyond the target's known stability bound."""


def _reported(result: SamplerResult, status, stacklevel=3) -> SamplerResult:
    """Warn (never silently return) when chains diverged, saying why; the run itself does not crash."""
    k = int(np.count_nonzero(status))
    if k:
        nonfinite = int(np.count_nonzero(status == NONFINITE))
        beyond = int(np.count_nonzero(status == BEYOND_BOUND))
        causes = [(nonfinite, "reached a non-finite value"),
                  (beyond, f"left the bound |x_i| <= {GROWTH_BOUND:.0e} (finite, but growing without limit)"),
                  # a backend that returns flags only (codes DIVERGED)
                  (k - nonfinite - beyond, "became non-finite or left that bound (the backend records no cause)")]
        causes = "; ".join(f"{count} {what}" for count, what in causes if count)
        warnings.warn(
            f"{k} of {status.size} chains diverged and were frozen at their last state inside the bound "
            f"(see result.diverged): {causes}. The step size is probably too large for this target",
            DivergenceWarning,
            stacklevel=stacklevel,
        )
    return result


# ------------------------------------------------------------------ validation
def _check_target(target, sampler):
    """``target.dim``, after checking that ``target`` has the score ``sampler`` calls:
    ``score(x, sigma)`` for annealed Langevin, ``score(x)`` otherwise (one message on every backend)."""
    if not hasattr(target, "score") or not hasattr(target, "dim"):
        raise TypeError(
            "target must have score(...) and dim (a distribution, model.bind(theta), "
            f"dist.perturbed() or NoiseConditional(model).bind(theta)), got {type(target).__name__}"
        )
    conditional = is_noise_conditional(target)
    if sampler == "annealed_langevin" and conditional is False:
        raise TypeError(
            "annealed_langevin needs a noise-conditional target with score(x, sigma): dist.perturbed(), "
            "NoiseConditional(model).bind(theta) or CallableTarget(..., noise_conditional=True), "
            f"got {target!r}, whose score is score(x)"
        )
    if sampler != "annealed_langevin" and conditional is True:
        raise TypeError(
            f"{sampler} needs a target with score(x), got {target!r}, which is noise-conditional "
            "(score(x, sigma)): use annealed_langevin, or one noise level (dist.noised(sigma) for dist.perturbed())"
        )
    return int(target.dim)


def _runner(backend, client, block_chains, reduce, sampler):
    """The backend object of a run: ``backend=`` (a name or an object), built with the deprecated
    ``client=`` / ``block_chains=`` when they are given; ``reduce=`` needs the Dask backend."""
    if client is not None or block_chains is not None:
        given = [k for k, v in (("client", client), ("block_chains", block_chains)) if v is not None]
        keywords = ", ".join(f"{k}=" for k in given)
        new_form = f"backend=DaskBackend({', '.join(f'{k}=...' for k in given)})"
        warnings.warn(f"{sampler}(..., {keywords}) is deprecated and will be removed in the next release: pass "
                      f"{new_form} (from refscore.sampling import DaskBackend)", DeprecationWarning, stacklevel=3)
        if not isinstance(backend, str):
            raise ValueError(f"{keywords} cannot be combined with a backend object, got backend={backend!r}: "
                             f"give the options to it, {new_form}")
        if backend != "dask":
            raise ValueError(f"{keywords} need backend='dask', got backend={backend!r}")
        backend = DaskBackend(client=client, block_chains=block_chains)
    runner = get_backend(backend)
    if reduce is not None and runner.name != "dask":
        raise ValueError(f"reduce= need backend='dask', got backend={runner.name!r}")
    return runner


def _gathers_no_states(runner, reduce, target) -> bool:
    """True when the run returns no final states (a Dask reduction): ``x0`` may then stay a read-only view.

    Which ``reduce=`` values gather the final states into ``x`` (``None``, ``"final"``,
    :class:`~.reductions.FinalStates`) is :func:`~.reductions.resolve_reduction`'s to say.
    """
    from .reductions import resolve_reduction

    return runner.name == "dask" and resolve_reduction(reduce, target) is not None


def _check_x0(x0, d, reduced=False):
    """Validated initial states, copied (the backends update them in place).

    With ``reduced`` (a dask run whose final states stay on the workers) a
    start point broadcast to every chain (``np.broadcast_to(point, (n, d))``)
    is kept as the view it is: the client then holds no per-chain states.
    """
    x = as_float_array(x0, "x0")
    if x.ndim != 2 or x.shape[1] != d or x.shape[0] < 1:
        raise ValueError(f"x0 must have shape (n, {d}) with n >= 1, got shape {np.shape(x0)}")
    if x.shape[0] >= 2 ** 32:
        raise ValueError(f"x0 must have fewer than 2**32 chains, got {x.shape[0]}")
    distinct = x[:1] if reduced and x.strides[0] == 0 else x
    check_finite("x0", distinct)
    if np.any(np.abs(distinct) > GROWTH_BOUND):
        raise ValueError(f"x0 must lie within |x_i| <= {GROWTH_BOUND:.0e} (the samplers' divergence bound), "
                         f"got max |x0| = {np.max(np.abs(distinct)):.3g}")
    if distinct is not x:
        return x
    return np.array(x, dtype=float, order="C", copy=True)


def _precheck(target, x):
    """A user's compiled per-point functions are called once at a start point: their shapes must fit."""
    if isinstance(target, NumbaTarget):
        target.check(x)


def _check_record(record, n_total):
    if record is None:
        return 0, 0
    rec = check_int("record", record, 1)
    return rec, n_total // rec
