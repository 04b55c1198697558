r"""The sampler backends: one protocol, one registry, dispatched in one place.

A backend runs the chains of :func:`~refscore.sampling.ula`,
:func:`~refscore.sampling.annealed_langevin` (both :meth:`SamplerBackend.langevin`)
and :func:`~refscore.sampling.mala` in place on host arrays, with the noise of
:mod:`refscore.noise` (chain ``c`` draws stream ``c``, the step index counts
globally across levels), so every backend runs the same chains:

====================  ============================================================
backend               how
====================  ============================================================
``"numpy"``           :mod:`.reference`: the targets' own NumPy ``score`` / ``logpdf``
``"numba"``           :mod:`refscore._kernels.cpu_sampler`: prange over blocks of chains
``"cuda"``            :mod:`refscore._kernels.cuda_sampler`: one thread per chain
====================  ============================================================

The compiled backends read the target's declared kernel block
(:func:`.targets.compile_target`); the reference reads only its NumPy methods,
the independent route the compiled kernels are tested against.
"""
from __future__ import annotations

from typing import Protocol

from . import reference
from .targets import compile_target, logpdf_function, score_function

__all__ = ["SamplerBackend", "BACKENDS", "get_backend"]


class SamplerBackend(Protocol):
    """What every sampler backend implements (all arrays are updated in place).

    ``x`` (n, d) float64 C-contiguous states; ``k0, k1`` the seed's key words;
    ``rec`` the recording interval (0: none) and ``trace`` (n_rec, n, d);
    ``diverged`` (n,) bool; ``accepted`` (n,) int64 (MALA).
    """

    name: str

    def langevin(self, target, sigmas, etas, steps_per_level, x, k0, k1, rec, trace, diverged) -> None:
        """ULA (``sigmas=None``, one level) or annealed Langevin (level l: ``sigmas[l]``, ``etas[l]``)."""

    def mala(self, target, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted) -> None:
        """MALA with step ``eta``."""


class NumpyBackend:
    """The reference: vectorised over chains, one Python iteration per step."""

    name = "numpy"

    def langevin(self, target, sigmas, etas, steps_per_level, x, k0, k1, rec, trace, diverged):
        fns = ([score_function(target)] if sigmas is None
               else [score_function(target, float(s)) for s in sigmas])
        reference.langevin(fns, etas, steps_per_level, x, k0, k1, rec, trace, diverged)

    def mala(self, target, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted):
        reference.mala(score_function(target), logpdf_function(target), eta, n_steps, x, k0, k1,
                       rec, trace, diverged, accepted)


class NumbaBackend:
    """Numba on the CPU: ``prange`` over blocks of chains, the chain loop vectorised."""

    name = "numba"

    def langevin(self, target, sigmas, etas, steps_per_level, x, k0, k1, rec, trace, diverged):
        from .._kernels import load_cpu_sampler

        ct = compile_target(target, sigmas)
        load_cpu_sampler().langevin(ct.layout, ct.params, ct.scale, etas, steps_per_level, x, k0, k1,
                                    rec, trace, diverged)

    def mala(self, target, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted):
        from .._kernels import load_cpu_sampler

        ct = compile_target(target, need_logp=True)
        load_cpu_sampler().mala(ct.layout, ct.params, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted)


class CudaBackend:
    """numba.cuda: one thread per chain (a GPU, or the simulator with ``NUMBA_ENABLE_CUDASIM=1``)."""

    name = "cuda"

    def langevin(self, target, sigmas, etas, steps_per_level, x, k0, k1, rec, trace, diverged):
        from .._kernels import load_cuda_sampler

        ct = compile_target(target, sigmas)
        load_cuda_sampler().langevin(ct, etas, steps_per_level, x, k0, k1, rec, trace, diverged)

    def mala(self, target, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted):
        from .._kernels import load_cuda_sampler

        ct = compile_target(target, need_logp=True)
        load_cuda_sampler().mala(ct, eta, n_steps, x, k0, k1, rec, trace, diverged, accepted)


#: The backend registry: name -> backend, read by the samplers, the CLI and the
#: validation suite.  A new backend is one entry implementing :class:`SamplerBackend`.
BACKENDS = {b.name: b for b in (NumpyBackend(), NumbaBackend(), CudaBackend())}


def get_backend(name) -> SamplerBackend:
    """The registered backend called ``name`` (``ValueError`` naming the choices otherwise)."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]
