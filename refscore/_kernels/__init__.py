r"""The compiled floor: every line of refscore that numba compiles lives here.

Nothing outside this package imports numba, and this package's ``__init__``
does not either: the compiled engines load on first use through the
accessors below, so ``import refscore`` and every NumPy reference path run
without numba installed.

=====================  ======================================================
module                 what it holds
=====================  ======================================================
:mod:`.ids`            kernel ids: loss kinds, target kinds, layout header
                       (numba-free, read by the reference code too)
:mod:`.philox`         Philox4x32-10 + Box–Muller, one source for NumPy,
                       Numba and CUDA (numba-free)
:mod:`.activation_table`  the compiled activations, generated from the
                       activation registry (numba-free)
:mod:`.vecmath`        branch-free exp/tanh and the CPU activations
:mod:`.mlp_losses`     MLPScore's fused loss-and-gradient kernels
:mod:`.score_blocks`   every sampler target's score on a block of chains
:mod:`.cpu_sampler`    ULA / MALA / annealed and kinetic Langevin, a share
                       of the blocks of chains per thread
:mod:`.cuda_sampler`   the same, one CUDA thread per chain
:mod:`.custom_sampler` ULA / MALA / kinetic Langevin with a user's
                       ``numba.njit`` score
:mod:`.diffusion_sampler`  every diffusion sampler on the exact denoiser
                       of Gaussian-mixture data, the sampler as run-time
                       data (its instruction set: :mod:`.diffusion_ops`,
                       numba-free)
:mod:`.group_threads`  the Python threads that run the kernels' groups of
                       blocks (numba's parallel lowering compiled slowly)
:mod:`.cache`          where the kernels are cached, damaged or unwritable
                       caches, the first-compile notice (numba-free)
=====================  ======================================================

Compile cache (:mod:`.cache`).  The kernels are compiled with ``cache=True``
into a directory outside the installed tree, chosen and checked there; a first
compile of a family prints one line to stderr saying so.
"""
from __future__ import annotations

import contextlib
import functools
import os

from . import cache
from .cache import cache_dir, use_cache

__all__ = ["numba_available", "load_mlp_losses", "load_cpu_sampler", "load_cuda_sampler", "load_custom_sampler",
           "load_diffusion_sampler", "cuda_available", "cache_dir", "use_cache"]


def numba_available() -> bool:
    """True when numba can be imported (the compiled engines are usable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _require_numba(what):
    if not numba_available():
        raise ImportError(
            f"{what} needs numba, which is not installed; install it (pip install numba) "
            "or use the NumPy reference (backend='numpy', engine='numpy')"
        )


def _configure_threading():
    """Make the OpenMP worker threads sleep, not spin, while they wait.

    Numba's default threading layer here is OpenMP (libgomp), whose idle
    workers spin at every barrier.  When other processes compete for the cores
    (``pytest -n 2``, a CI runner, a laptop) a spinning worker burns the time
    slice its partner needs, and the parallel kernels slowed far beyond their
    fair share: ISM + gradient of a (64, 64) MLP at n = 10⁴ beside two busy
    processes took 76 ms with spinning and 33 ms with sleeping workers (median,
    same run; 38 ms on one thread).  Sleeping costs one futex wake-up (tens of
    microseconds) per parallel region, and a kernel call has one.  The user's
    own ``OMP_WAIT_POLICY`` wins; libgomp reads it when it is first loaded, so
    it is set before any kernel runs.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _compile_into_cache(family):
    """Point numba's cache at :func:`.cache.cache_dir` while kernel module ``family`` is defined.

    Numba picks a function's cache location when the function is decorated,
    so the setting is restored as soon as the module is imported.  Damaged
    cache files of the family are removed first (:func:`.cache.check_family`),
    and a cache miss announces itself (:func:`.cache.announce_compiles`).
    """
    _configure_threading()
    import numba

    cache.announce_compiles()
    cache.check_family(family)
    old = numba.config.CACHE_DIR
    if use_cache():
        numba.config.CACHE_DIR = str(cache_dir())
    try:
        yield
    finally:
        numba.config.CACHE_DIR = old


@functools.lru_cache(maxsize=None)
def load_mlp_losses():
    """:mod:`.mlp_losses`, compiled on first use."""
    _require_numba("engine='numba'")
    with _compile_into_cache("mlp_losses"):
        from . import mlp_losses as module
    return module


@functools.lru_cache(maxsize=None)
def load_cpu_sampler():
    """:mod:`.cpu_sampler`, compiled on first use."""
    _require_numba("backend='numba'")
    with _compile_into_cache("cpu_sampler"):
        from . import cpu_sampler as module
    return module


@functools.lru_cache(maxsize=None)
def load_custom_sampler():
    """:mod:`.custom_sampler` (kernels that take a user's ``numba.njit`` score as an argument)."""
    _require_numba("a NumbaTarget on backend='numba'")
    with _compile_into_cache("custom_sampler"):
        from . import custom_sampler as module
    return module


@functools.lru_cache(maxsize=None)
def load_diffusion_sampler():
    """:mod:`.diffusion_sampler` (every diffusion sampler on the exact denoiser), compiled on first use."""
    _require_numba("a diffusion sampler on backend='numba'")
    with _compile_into_cache("diffusion_sampler"):
        from . import diffusion_sampler as module
    return module


def cuda_available() -> bool:
    """True when numba.cuda can run kernels: a GPU, or the simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    if not numba_available():
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors mean "no"
        return False


@functools.lru_cache(maxsize=None)
def load_cuda_sampler():
    """:mod:`.cuda_sampler`; raises when no GPU or simulator is available."""
    _require_numba("backend='cuda'")
    if not cuda_available():
        raise RuntimeError(
            "backend='cuda' needs a CUDA GPU or the simulator (set NUMBA_ENABLE_CUDASIM=1 "
            "before numba.cuda is first imported); neither is available"
        )
    with _compile_into_cache("cuda_sampler"):
        from . import cuda_sampler as module
    return module
