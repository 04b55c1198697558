r"""Compile the kernel families ahead of time (``refscore warmup``); nothing requires it.

Every compiled engine compiles on its first call and caches the result
(:mod:`refscore._kernels.cache`), so a first call waits for the compile once
per machine.  ``refscore warmup`` runs those first calls ahead of time, one
kernel family per process so that the families compile side by side, and says
where the cache lives and how big it is.  Each family is warmed by the calls
users make first: for the MLP loss kernels every per-point loss, with and
without its gradient, on a one-hidden-layer net (the closed-form trace) and a
three-hidden-layer one (the any-depth path); for the samplers ULA, MALA,
annealed and kinetic Langevin on one target of each kind the compiled kernels
know (Gaussian, mixture, Student t, banana, an MLP): the CPU kernels compile
each target kind on its first use, the CUDA kernels take it at run time (one
target compiles them for all), and the kinetic kernel takes its splitting at
run time; for the diffusion samplers one Heun run on a
Gaussian mixture (the sampler and the schedule are run-time data, so one run
compiles the kernel for every sampler).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time

import numpy as np

from ._kernels import cache as kernel_cache

__all__ = ["WARMUPS", "describe", "warm", "warmup"]


def _mlp_losses() -> None:
    from . import losses
    from .models import MLPScore

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2))
    for hidden in ((4,), (4, 4, 4)):
        model = MLPScore(2, hidden, backend="numba")
        theta = model.init(rng=0)
        v = losses.projections(rng, (1, 8, 2))
        for grad in (False, True):
            losses.esm(model, theta, x, x, grad=grad)
            losses.ism(model, theta, x, grad=grad)
            losses.dsm(model, theta, x, 0.5, x, grad=grad)
            losses.ssm(model, theta, x, v, grad=grad)
            losses.ssm_vr(model, theta, x, v, grad=grad)


def _samplers(backend) -> None:
    from .distributions import Banana, Gaussian, GaussianMixture, StudentT
    from .models import MLPEnergy
    from .sampling import annealed_langevin, kinetic_langevin, mala, ula

    mlp = MLPEnergy(2, (4,))
    targets = (Gaussian([0.0, 0.0], np.eye(2)),
               GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2)] * 2),
               StudentT([0.0, 0.0], np.eye(2), 5.0), Banana(), mlp.bind(mlp.init(rng=0)))
    x0 = np.zeros((4, 2))
    # the CPU kernels compile each target kind on its first use (the kind is a compile-time constant there)
    for p in targets if backend == "numba" else targets[:1]:
        ula(p, x0, 0.1, 2, seed=0, backend=backend, progress=False)
        mala(p, x0, 0.1, 2, seed=0, backend=backend, progress=False)
        kinetic_langevin(p, x0, 0.1, 2, 1.0, seed=0, backend=backend, progress=False)  # one kernel, every splitting
    # annealed Langevin runs the Langevin kernel on a noised law: a Gaussian's is a Gaussian, a mixture's a mixture
    for p in targets[:2]:
        annealed_langevin(p.perturbed(), x0, [1.0, 0.5], 0.1, 2, seed=0, backend=backend, progress=False)


def _diffusion() -> None:
    from .diffusion import EDM, Denoiser, sample
    from .distributions import GaussianMixture

    edm = EDM()
    data = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2)] * 2)
    sample("heun", Denoiser(data, edm), edm, np.zeros((4, 2)), edm.grid(2), backend="numba", progress=False)


def _cuda_available() -> bool:
    from ._kernels import cuda_available

    return cuda_available()


#: family -> (the calls that compile it, whether this machine can run it); what each family is
#: comes from the kernel cache's table of families (:data:`refscore._kernels.cache.FAMILIES`)
WARMUPS = {
    "mlp_losses": (_mlp_losses, lambda: True),
    "cpu_sampler": (lambda: _samplers("numba"), lambda: True),
    "cuda_sampler": (lambda: _samplers("cuda"), _cuda_available),
    "diffusion_sampler": (_diffusion, lambda: True),
}


def describe(family: str) -> str:
    """What ``family`` compiles, in the words of the compile notice."""
    return kernel_cache.FAMILIES[family][0]


def warm(family: str) -> float:
    """Run ``family``'s first calls in this process; the seconds they took (compile or cache load)."""
    if family not in WARMUPS:
        raise ValueError(f"family must be one of {sorted(WARMUPS)}, got {family!r}")
    start = time.perf_counter()
    WARMUPS[family][0]()
    return time.perf_counter() - start


def _warm_quietly(family: str) -> float:
    os.environ["REFSCORE_QUIET"] = "1"  # the parent prints one line per family instead of the notices
    return warm(family)


def warmup(families=None, *, jobs=None, say=print) -> dict:
    """Compile ``families`` (default: every family this machine can run) in parallel processes.

    Parameters
    ----------
    families : list of str, optional
        Names from :data:`WARMUPS`.
    jobs : int, optional
        Processes at once (default: one per family, at most the number of cores).
    say : callable
        Receives each progress line.

    Returns
    -------
    dict
        ``{family: seconds}`` of the families that compiled or loaded.

    Raises
    ------
    ValueError
        An unknown family, or one this machine cannot run (``cuda_sampler`` without a GPU
        or the simulator).
    RuntimeError
        A family whose first calls failed (its error is named).
    """
    if families is None:
        families = [f for f, (_, available) in WARMUPS.items() if available()]
    families = list(dict.fromkeys(families))
    for family in families:
        if family not in WARMUPS:
            raise ValueError(f"unknown kernel family {family!r}: the families are {', '.join(WARMUPS)}")
        if not WARMUPS[family][1]():
            raise ValueError(f"kernel family {family!r} cannot run here: {describe(family)} need a CUDA GPU "
                             "or the simulator (NUMBA_ENABLE_CUDASIM=1)")
    jobs = max(1, min(jobs or len(families), os.cpu_count() or 1, len(families)))
    where = (f"cache {kernel_cache.cache_dir()}" if kernel_cache.use_cache()
             else f"no cache ({kernel_cache.cache_problem()}): the kernels compile again in every process")
    say(f"refscore warmup: {', '.join(families)} in {jobs} process(es); {where}")
    done = {}
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing compiled in memory
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_warm_quietly, f): f for f in families}
        for future in concurrent.futures.as_completed(futures):
            family = futures[future]
            try:
                seconds = future.result()
            except Exception as exc:  # noqa: BLE001 - named and re-raised below
                raise RuntimeError(f"kernel family {family!r} failed to compile: {type(exc).__name__}: {exc}") \
                    from exc
            done[family] = seconds
            say(f"  {family}: ready in {seconds:.1f} s ({describe(family)})")
    if kernel_cache.use_cache():
        say(f"kernel cache {kernel_cache.cache_dir()}: {kernel_cache.cache_size() / 2**20:.1f} MiB")
    return done
