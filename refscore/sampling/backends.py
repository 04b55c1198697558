r"""The sampler backends: one protocol and the backends that run on one machine.

A backend runs the chains of :func:`~refscore.sampling.ula`,
:func:`~refscore.sampling.annealed_langevin` (both :meth:`SamplerBackend.langevin`),
:func:`~refscore.sampling.mala` and :func:`~refscore.sampling.kinetic_langevin`
(:meth:`SamplerBackend.kinetic`) in place on host arrays, with the noise of
:mod:`refscore.noise` from one :class:`~refscore.noise.NoiseOrigin` (row ``i``
draws chain stream ``origin.chain0 + i``; the step index counts globally across
levels from ``origin.step0``), so every backend runs the same chains:

====================  ============================================================
backend               how
====================  ============================================================
``"numpy"``           :mod:`.reference` and :meth:`.kinetic.Splitting.run_reference`: the
                      targets' own NumPy ``score`` / ``logpdf``
``"numba"``           :mod:`refscore._kernels.cpu_sampler`: prange over blocks of chains
``"cuda"``            :mod:`refscore._kernels.cuda_sampler`: one thread per chain
====================  ============================================================

The registry of names (these three and ``"dask"``, :mod:`.dask_backend`) is
:mod:`.registry`; a backend is an object implementing :class:`SamplerBackend`,
and the samplers take either.

The compiled backends read the target's declared kernel block
(:func:`.targets.compile_target`); the reference reads only its NumPy methods,
the independent route the compiled kernels are tested against.

Chunks.  Every backend runs a long run as chunks of steps (about a quarter of
a second each, sized from the first chunk's speed) through one driver,
:class:`ChunkedBackend`.  The noise counters are global, so the result is
bitwise the same for any chunking (tested); between chunks the interpreter
runs, so Ctrl-C interrupts a compiled run within a chunk (a
``KeyboardInterrupt`` saying how far it got; the sampler's private copy of the
states is discarded), and a progress bar (tqdm, on stderr) shows runs longer
than two seconds.  A compiled backend first calls its kernels once with zero
steps, outside the clock and before the bar starts: that call compiles (or
loads) them for the run's argument types and does nothing else (no state,
status, trace or noise counter is touched), so the chunk timing, the bar's
rate and its ETA measure sampling only, never the one-time compile.  Kinetic
Langevin carries positions and momenta :math:`(q, p)` from one chunk to the
next and recomputes the score at :math:`q` for a chunk's first kick: the score
is a deterministic function of :math:`q`, so the bits are those of an uncut
run (tested).

Status.  The kernels keep one int8 code per chain
(:mod:`refscore._kernels.score_blocks`: 0 running, ``NONFINITE``,
``BEYOND_BOUND``; ``DIVERGED`` when a backend was handed a boolean array and
records no cause).  ``diverged`` may be given as that int8 array, which then
receives the codes, or as a boolean array, which receives the flags.
"""
from __future__ import annotations

import sys
import time
from typing import Protocol

import numpy as np

from . import reference
from .custom import NumbaTarget, raise_kernel_fault
from .targets import compile_target, logpdf_function, score_function

__all__ = ["SamplerBackend", "ChunkedBackend", "NumpyBackend", "NumbaBackend", "CudaBackend", "RunStopped"]

#: wall-clock length aimed at for one chunk of steps (seconds)
CHUNK_SECONDS = 0.25
#: chain-steps of the first chunk, before its speed is known
FIRST_CHUNK_CHAIN_STEPS = 200_000


class SamplerBackend(Protocol):
    """What every sampler backend implements (all arrays are updated in place).

    ``x`` (n, d) float64 C-contiguous states; ``origin`` a
    :class:`~refscore.noise.NoiseOrigin` (row ``i`` is chain ``origin.chain0 + i``,
    the first step global step ``origin.step0``); ``rec`` the recording
    interval (0: none) and ``trace`` (n_rec, n, d), row ``j`` the states after
    global step ``(j + 1) * rec``; ``diverged`` (n,) bool
    flags, or int8 status codes (see the module doc);
    ``accepted`` (n,) int64 (MALA); ``progress``: ``None`` (a bar when stderr
    is a terminal and the run lasts over 2 s), ``True`` or ``False``; ``stop``:
    ``None`` or a callable asked after every chunk, whose true answer ends the
    run with :class:`RunStopped` (the Dask backend's blocks use it to end when
    their run is cancelled).
    """

    name: str

    def langevin(self, target, sigmas, etas, steps_per_level, x, origin, rec, trace, diverged,
                 *, progress=None, stop=None) -> None:
        """ULA (``sigmas=None``, one level) or annealed Langevin (level l: ``sigmas[l]``, ``etas[l]``)."""

    def mala(self, target, eta, n_steps, x, origin, rec, trace, diverged, accepted,
             *, progress=None, stop=None) -> None:
        """MALA with step ``eta``."""

    def kinetic(self, target, splitting, n_steps, x, v, origin, rec, trace, p_trace, diverged,
                *, progress=None, stop=None) -> None:
        """Kinetic Langevin: ``splitting`` a :class:`.kinetic.Splitting` (its word and numbers),
        ``x`` positions and ``v`` momenta (n, d), ``trace`` / ``p_trace`` their records."""


def _status_codes(diverged):
    """The int8 status array the kernels update: ``diverged`` itself when it is one, else a copy."""
    if diverged.dtype == np.int8:
        return diverged
    return np.asarray(diverged, dtype=np.int8)


class RunStopped(RuntimeError):
    """A run ended early because its ``stop()`` said so (the states are discarded)."""


class ChunkedBackend:
    """The driver every backend shares: levels, chunks of steps, progress and interruption.

    A subclass implements ``_langevin_runner(target, sigmas, etas, n_chains)``,
    ``_mala_runner(target, eta, n_chains)`` and ``_kinetic_runner(target, splitting,
    n_chains)``, each returning ``run(...)`` that advances
    the states by ``n_steps`` from ``origin`` (a :class:`~refscore.noise.NoiseOrigin`
    whose ``step0`` is the chunk's first global step; one level for Langevin);
    ``run`` with ``n_steps = 0`` must do nothing but compile.  ``compiles`` says
    whether the runners compile on first call (then the driver calls them once
    with zero steps before the clock starts).
    """

    name = ""
    compiles = False

    def langevin(self, target, sigmas, etas, steps_per_level, x, origin, rec, trace, diverged,
                 *, progress=None, stop=None):
        status = _status_codes(diverged)
        run = self._langevin_runner(target, sigmas, etas, x.shape[0])
        total = len(etas) * steps_per_level

        def advance(done, n_steps):
            level = done // steps_per_level
            run(level, n_steps, x, origin.shifted(steps=done), rec, trace, status)
            return n_steps

        # a chunk never crosses a level boundary
        self._drive(advance, total, steps_per_level, x.shape[0], "langevin", progress, stop)
        if status is not diverged:
            diverged[:] = status != 0

    def mala(self, target, eta, n_steps, x, origin, rec, trace, diverged, accepted,
             *, progress=None, stop=None):
        status = _status_codes(diverged)
        run = self._mala_runner(target, eta, x.shape[0])

        def advance(done, n):
            run(n, x, origin.shifted(steps=done), rec, trace, status, accepted)
            return n

        self._drive(advance, n_steps, n_steps, x.shape[0], "mala", progress, stop)
        if status is not diverged:
            diverged[:] = status != 0

    def kinetic(self, target, splitting, n_steps, x, v, origin, rec, trace, p_trace, diverged,
                *, progress=None, stop=None):
        status = _status_codes(diverged)
        run = self._kinetic_runner(target, splitting, x.shape[0])

        def advance(done, n):
            # the state between chunks is (x, v); each chunk recomputes s(x) for its first kick
            run(n, x, v, origin.shifted(steps=done), rec, trace, p_trace, status)
            return n

        self._drive(advance, n_steps, n_steps, x.shape[0], "kinetic", progress, stop)
        if status is not diverged:
            diverged[:] = status != 0

    def _drive(self, advance, total, level_len, n_chains, what, progress, stop=None):
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        done = 0
        chunk = max(1, FIRST_CHUNK_CHAIN_STEPS // max(n_chains, 1))
        try:
            if self.compiles and total > 0:
                advance(0, 0)  # compile (or load) now: the bar and the chunk clock start after it
            bar = tqdm(total=total, unit="step", desc=f"{what} ({self.name}, {n_chains} chains)",
                       delay=0.0 if progress else 2.0, disable=not show, file=sys.stderr, leave=False)
            with bar:
                while done < total:
                    to_level_end = level_len - done % level_len if level_len else total - done
                    n = min(chunk, total - done, to_level_end)
                    start = time.perf_counter()
                    done += advance(done, n)
                    elapsed = time.perf_counter() - start
                    bar.update(n)
                    if stop is not None and stop():
                        raise RunStopped(f"{what} stopped after {done} of {total} steps; the run's states "
                                         "were discarded")
                    # size the next chunk for about CHUNK_SECONDS (within 1/4x..4x of this one)
                    rate = n / max(elapsed, 1e-6)
                    chunk = int(min(max(rate * CHUNK_SECONDS, n / 4, 1), 4 * n + 1))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"{what} interrupted after {done} of {total} steps; "
                                    "the run's states were discarded") from None


class NumpyBackend(ChunkedBackend):
    """The reference: vectorised over chains, one Python iteration per step."""

    name = "numpy"

    def _langevin_runner(self, target, sigmas, etas, n_chains):
        fns = ([score_function(target)] if sigmas is None
               else [score_function(target, float(s)) for s in sigmas])

        def run(level, n_steps, x, origin, rec, trace, status):
            reference.langevin([fns[level]], etas[level:level + 1], n_steps, x, origin, rec, trace, status)
        return run

    def _mala_runner(self, target, eta, n_chains):
        score, logpdf = score_function(target), logpdf_function(target)

        def run(n_steps, x, origin, rec, trace, status, accepted):
            reference.mala(score, logpdf, eta, n_steps, x, origin, rec, trace, status, accepted)
        return run

    def _kinetic_runner(self, target, splitting, n_chains):
        score = score_function(target)

        def run(n_steps, x, v, origin, rec, trace, p_trace, status):
            splitting.run_reference(score, n_steps, x, v, origin, rec, trace, p_trace, status)
        return run


class _CompiledBackend(ChunkedBackend):
    """A backend whose kernels read the target's compiled block (``kernels()`` loads them)."""

    compiles = True

    def kernels(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _langevin_runner(self, target, sigmas, etas, n_chains):
        ct = compile_target(target, sigmas)
        k = self.kernels()

        def run(level, n_steps, x, origin, rec, trace, status):
            lev = slice(level, level + 1)
            k0, k1 = origin.key  # the compiled boundary takes plain integers
            k.langevin(ct.layout, ct.params[lev], ct.scale[lev], etas[lev], n_steps, x, k0, k1,
                       origin.chain0, origin.step0, rec, trace, status)
        return run

    def _mala_runner(self, target, eta, n_chains):
        ct = compile_target(target, need_logp=True)
        k = self.kernels()

        def run(n_steps, x, origin, rec, trace, status, accepted):
            k0, k1 = origin.key
            k.mala(ct.layout, ct.params, eta, n_steps, x, k0, k1, origin.chain0, origin.step0, rec, trace,
                   status, accepted)
        return run

    def _kinetic_runner(self, target, splitting, n_chains):
        ct = compile_target(target)
        k = self.kernels()
        word = splitting.letters

        def run(n_steps, x, v, origin, rec, trace, p_trace, status):
            k0, k1 = origin.key
            k.kinetic(ct.layout, ct.params, word, splitting.kick, splitting.drift, splitting.decay,
                      splitting.spread, n_steps, x, v, k0, k1, origin.chain0, origin.step0, rec, trace, p_trace,
                      status)
        return run


class NumbaBackend(_CompiledBackend):
    """Numba on the CPU: ``prange`` over blocks of chains, the chain loop vectorised.

    A :class:`~refscore.sampling.custom.NumbaTarget` runs on the kernels of
    :mod:`refscore._kernels.custom_sampler`, which take its functions as
    arguments, check every call, and record a failing one per chain; the
    runner raises it after the kernel returns (:func:`.custom.raise_kernel_fault`).
    """

    name = "numba"

    def _langevin_runner(self, target, sigmas, etas, n_chains):
        if not isinstance(target, NumbaTarget):
            return super()._langevin_runner(target, sigmas, etas, n_chains)
        if sigmas is not None:
            raise TypeError("annealed_langevin needs a noise-conditional target; a NumbaTarget has one "
                            "score (use a CallableTarget(..., noise_conditional=True) on backend='numpy')")
        from .._kernels import load_custom_sampler

        k = load_custom_sampler()
        fault = np.zeros((n_chains, 3), dtype=np.int64)

        def run(level, n_steps, x, origin, rec, trace, status):
            k0, k1 = origin.key
            k.langevin(target.score_point, float(etas[level]), n_steps, x, k0, k1, origin.chain0, origin.step0,
                       rec, trace, status, fault)
            if fault[:, 0].any():
                raise_kernel_fault(target, fault, x, origin.chain0)
        return run

    def _mala_runner(self, target, eta, n_chains):
        if not isinstance(target, NumbaTarget):
            return super()._mala_runner(target, eta, n_chains)
        if target.logpdf_point is None:
            raise TypeError(f"mala needs a log-density, and {target!r} has none (pass logpdf=)")
        from .._kernels import load_custom_sampler

        k = load_custom_sampler()
        fault = np.zeros((n_chains, 3), dtype=np.int64)

        def run(n_steps, x, origin, rec, trace, status, accepted):
            k0, k1 = origin.key
            k.mala(target.score_point, target.logpdf_point, eta, n_steps, x, k0, k1, origin.chain0,
                   origin.step0, rec, trace, status, accepted, fault)
            if fault[:, 0].any():
                raise_kernel_fault(target, fault, x, origin.chain0)
        return run

    def _kinetic_runner(self, target, splitting, n_chains):
        if not isinstance(target, NumbaTarget):
            return super()._kinetic_runner(target, splitting, n_chains)
        from .._kernels import load_custom_sampler

        k = load_custom_sampler()
        fault = np.zeros((n_chains, 3), dtype=np.int64)
        word = splitting.letters

        def run(n_steps, x, v, origin, rec, trace, p_trace, status):
            k0, k1 = origin.key
            k.kinetic(target.score_point, word, splitting.kick, splitting.drift, splitting.decay, splitting.spread,
                      n_steps, x, v, k0, k1, origin.chain0, origin.step0, rec, trace, p_trace, status, fault)
            if fault[:, 0].any():
                raise_kernel_fault(target, fault, x, origin.chain0)
        return run

    def kernels(self):
        from .._kernels import load_cpu_sampler

        return load_cpu_sampler()


class CudaBackend(_CompiledBackend):
    """numba.cuda: one thread per chain (a GPU, or the simulator with ``NUMBA_ENABLE_CUDASIM=1``)."""

    name = "cuda"

    def kernels(self):
        from .._kernels import load_cuda_sampler

        return load_cuda_sampler()
