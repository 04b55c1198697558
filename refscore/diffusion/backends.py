r"""The diffusion samplers on compiled backends: a sampler as a program of per-step coefficients, run by one kernel.

Derivation: docs/diffusion.md §6.1 (the steps) and §6.2 (each step as a linear combination of the state, the
exact denoiser's outputs and noise; its table of per-step coefficients).

:func:`refscore.diffusion.samplers.sample` runs on NumPy (the reference: the step functions of
:mod:`refscore.diffusion.samplers` applied to the whole batch) or, with the exact denoiser of Gaussian or
Gaussian-mixture data (a :class:`~refscore.diffusion.denoiser.Denoiser`), on

=============  ==============================================================================================
``backend``    how
=============  ==============================================================================================
``"numba"``    :mod:`refscore._kernels.diffusion_sampler`: blocks of chains on threads, the denoiser compiled
``"dask"``     blocks of chains as Dask tasks, each running ``"numba"`` on its rows
               (:class:`refscore.sampling.DaskBackend` carries the options: ``client``, ``block_chains``,
               ``n_workers``)
=============  ==============================================================================================

The program.  Every step of every sampler but ``pf_ode`` is, given the denoiser's outputs, a linear
combination with coefficients that depend only on the schedule and the grid (docs/diffusion.md §6.2).
:func:`build_program` computes those coefficients here, in NumPy, from the same scalar coefficients the
reference steps use (:mod:`refscore.diffusion.coefficients`), and writes each step as operations on five
registers per chain (:mod:`refscore._kernels.diffusion_ops`: ``X`` the state, ``Y`` a second point, ``A`` an
accumulator, ``D`` the last :math:`\hat x_0`, ``P`` the previous step's :math:`\hat x_0`).  With
:math:`\hat u = b_u x + c_u\hat x_0`, :math:`b_u = \sigma'/\sigma`, :math:`c_u = \alpha' - \sigma'\alpha/\sigma`
(the velocity), :math:`h = t_n - t`:

=================== ==========================================================================================
sampler             ops of one step (``EVAL D <- x0(R)`` at a time; ``COMBINE R <- ...``; ``z_j`` noise block)
=================== ==========================================================================================
churn (γ > 0)       ``X <- (α̂/α) X + (scale S_noise) z_0``, then the step from :math:`\hat t`
``euler``           ``EVAL X``; ``X <- (1 + h b_u) X + h c_u D``
``heun``            ``EVAL X``; ``Y <- (1 + h b_u) X + h c_u D``; ``A <- (1 + h b_u/2) X + (h c_u/2) D``;
                    ``EVAL Y`` at :math:`t_n`; ``X <- A + (h b_u'/2) Y + (h c_u'/2) D`` (Euler when σ_n = 0)
``ddim``            ``EVAL X``; ``X <- (c_n/σ) X + (α_n - c_n α/σ) D + s_n z_0``
``ddpm``            ``EVAL X``; ``X <- c_x X + c_0 D + std z_0``
``euler_ancestral`` ``EVAL X``; ``X <- α_n(1 + ρ)/α X - α_n ρ D + α_n S σ_up z_0``, ρ = (σ_down - σ̄)/σ̄
``dpmpp_2m``        ``EVAL X``; ``X <- (σ_n/σ) X - α_n(e^{-h_ℓ} - 1)((1 + w) D - w P)``, w = 1/(2r) (0 at
                    the first step); ``P <- D``
``pc``              per corrector step ``EVAL X``; ``X <- (1 - ε/σ²) X + (εα/σ²) D + √(2ε) z_j``; the
                    predictor ``EVAL X``; ``X <- (2 - a - G²/σ²) X + (G²α/σ²) D + G z_m`` (reverse
                    diffusion) or ``X <- (1 + hf + hg²/σ²) X - (hg²α/σ²) D + √(-hg²) z_m`` (Euler–Maruyama)
=================== ==========================================================================================

(the score :math:`(\alpha\hat x_0 - x)/\sigma^2` expanded; order and dropped noise of pc as the reference).
So the compiled run computes the reference's numbers with the terms grouped differently: equal to round-off, not
bitwise (the tests bound the difference), and the mixture denoiser's sums run in another order than NumPy's.

Not compiled: ``pf_ode`` (``scipy.integrate.solve_ivp`` integrates all chains as one system with shared
adaptive steps) and ``pc`` with the ``snr`` rule (its step size averages the score norm over the batch, so the
chains are not independent): give ``step_size=`` (e.g. a pilot run's ``sample(..., record=True).info["step_size"]``).

Chains and noise.  Row ``i`` draws ``refscore.noise.normal(seed, chain0 + i, step, k d)`` as in the reference, and
a chain's arithmetic does not depend on the others: the compiled result is the same bits for any thread count,
chunking of the steps, cut of the chains into Dask blocks or chain offset (tested).

Chunks, progress, Ctrl-C: the Langevin samplers' driver (:class:`refscore.sampling.backends.ChunkedBackend`):
chunks of steps of about a quarter of a second, a progress bar for runs over 2 s, Ctrl-C within a chunk; the
kernel is compiled (or loaded) by a zero-step call before the clock starts.  The state between chunks is
``X`` and ``P``.

Divergence.  A chain whose state becomes non-finite is frozen at its last state, and the run stops after that
chunk with a ``FloatingPointError`` naming the step, its times and the chains (the reference raises at the same
step).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import uuid
from typing import NamedTuple

import numpy as np

from .._kernels import diffusion_ops as isa
from ..distributions import Gaussian, GaussianMixture
from ..noise import NoiseOrigin
from ..sampling.backends import ChunkedBackend
from ..sampling.dask_backend import DaskBackend, default_block_chains
from . import coefficients as co
from .denoiser import SIGMA_MAX, Denoiser

__all__ = ["COMPILED_BACKENDS", "Program", "build_program", "run"]

#: the backends :func:`refscore.diffusion.samplers.sample` runs besides ``"numpy"``
COMPILED_BACKENDS = ("numba", "dask")
_LOG_2PI = math.log(2.0 * math.pi)


class Program(NamedTuple):
    """A sampler run as data: what :mod:`refscore._kernels.diffusion_sampler` executes.

    ``op_ptr`` (n_steps + 1,): step ``i`` runs ops ``op_ptr[i] .. op_ptr[i + 1] - 1``; ``ops`` (n_ops, 3) int64
    ``[code, register, argument]`` and ``coef`` (n_ops, N_COEF) as in :mod:`refscore._kernels.diffusion_ops`;
    ``eval_alpha``, ``eval_sigma`` (E,): the noise level of each evaluation slot; ``noise_blocks``: noise vectors
    of ``d`` a step draws (as the reference's); ``info``: what the reference's ``Run.info`` reports; ``sampler``
    and ``grid`` name the run in messages.
    """

    sampler: str
    grid: np.ndarray
    op_ptr: np.ndarray
    ops: np.ndarray
    coef: np.ndarray
    eval_alpha: np.ndarray
    eval_sigma: np.ndarray
    noise_blocks: int
    info: dict


# ------------------------------------------------------------------ the velocity as coefficients (the checks: coefficients.py)
def _velocity(schedule, t):
    r"""``(b_u, c_u)``: :math:`\hat u = \alpha'\hat x_0 + \sigma'(x - \alpha\hat x_0)/\sigma = b_u x + c_u\hat x_0`."""
    a, s = schedule.alpha(t), co.noise_level(schedule, t, "the probability-flow velocity")
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    if not np.isfinite(ds):
        raise ValueError(f"t = {t!r} has d_sigma = {ds!r}: the probability-flow velocity is not defined there")
    return ds / s, da - ds * a / s


# ------------------------------------------------------------------ the program
class _Writer:
    """Appends ops step by step."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.ops, self.coef, self.ptr, self.alpha, self.sigma = [], [], [0], [], []
        self.carry = {}  # what a multistep method keeps from one step to the next (dpmpp_2m's previous ell)

    def eval(self, src, t, what):
        """``D <- x0(R[src])`` at time ``t``; its noise level (checked as the reference's steps check it)."""
        s = co.noise_level(self.schedule, t, what)
        if s > SIGMA_MAX:
            raise ValueError(f"t must give sigma(t) <= {SIGMA_MAX:g} (sigma^2 overflows float64 beyond ~1.3e154), "
                             f"got sigma = {s:.3g} at t = {t!r}")
        self.ops.append((isa.EVAL, src, len(self.alpha)))
        self.coef.append((0.0,) * isa.N_COEF)
        self.alpha.append(self.schedule.alpha(t))
        self.sigma.append(s)
        return s

    def combine(self, dst, x=0.0, y=0.0, a=0.0, d=0.0, p=0.0, z=0.0, block=isa.NO_NOISE):
        """``R[dst] <- x X + y Y + a A + d D + p P + z noise[block]``."""
        row = [0.0] * isa.N_COEF
        row[isa.X], row[isa.Y], row[isa.A], row[isa.D], row[isa.P] = x, y, a, d, p
        row[isa.N_REGISTERS] = z if block != isa.NO_NOISE else 0.0
        self.ops.append((isa.COMBINE, dst, block if z != 0.0 else isa.NO_NOISE))
        self.coef.append(tuple(float(v) for v in row))

    def end_step(self):
        self.ptr.append(len(self.ops))


def _churn(w, schedule, t, i, n_steps, info, S_churn, S_tmin, S_tmax, S_noise):
    """EDM's churn as ``X <- (α̂/α) X + (scale S_noise) z_0`` (samplers.churn_step); returns ``t_hat``."""
    a = schedule.alpha(t)
    gamma = co.churn_gamma(schedule.sigma(t) / a if a > 0 else math.inf, n_steps, S_churn, S_tmin, S_tmax)
    t_hat = t
    if gamma > 0.0:
        co.positive_alpha(schedule, t, "EDM's churn")
        t_hat, a_hat, scale = co.churn_time(schedule, t, gamma)
        w.combine(isa.X, x=a_hat / a, z=scale * S_noise, block=0)
    if S_churn > 0.0:
        info.setdefault("t_hat", np.full(n_steps, np.nan))[i] = t_hat
    return t_hat


def _euler(w, schedule, t, t_next, i, n_steps, info, S_churn, S_tmin, S_tmax, S_noise):
    t = _churn(w, schedule, t, i, n_steps, info, S_churn, S_tmin, S_tmax, S_noise)
    bu, cu = _velocity(schedule, t)
    w.eval(isa.X, t, "the probability-flow velocity")
    h = t_next - t
    w.combine(isa.X, x=1.0 + h * bu, d=h * cu)


def _heun(w, schedule, t, t_next, i, n_steps, info, S_churn, S_tmin, S_tmax, S_noise):
    t = _churn(w, schedule, t, i, n_steps, info, S_churn, S_tmin, S_tmax, S_noise)
    bu, cu = _velocity(schedule, t)
    w.eval(isa.X, t, "the probability-flow velocity")
    h = t_next - t
    if schedule.sigma(t_next) == 0.0:
        w.combine(isa.X, x=1.0 + h * bu, d=h * cu)
        return
    bn, cn = _velocity(schedule, t_next)
    w.combine(isa.Y, x=1.0 + h * bu, d=h * cu)
    w.combine(isa.A, x=1.0 + 0.5 * h * bu, d=0.5 * h * cu)
    w.eval(isa.Y, t_next, "the probability-flow velocity")
    w.combine(isa.X, a=1.0, y=0.5 * h * bn, d=0.5 * h * cn)


def _ddim(w, schedule, t, t_next, i, n_steps, info, eta):
    a = schedule.alpha(t)
    s = w.eval(isa.X, t, "DDIM's eps")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    with np.errstate(divide="ignore"):
        lt, ln = schedule.log_snr(t), schedule.log_snr(t_next)
    cn, sd = co.ddim_noise_scales(a, s, an, sn, lt, ln, eta)
    w.combine(isa.X, x=cn / s, d=an - cn * a / s, z=sd, block=0)


def _ddpm(w, schedule, t, t_next, i, n_steps, info, variance):
    co.noise_level(schedule, t, "DDPM's posterior")
    c_x, c_0, std = co.ddpm_coefficients(schedule, t, t_next, variance)
    w.eval(isa.X, t, "DDPM's posterior")
    w.combine(isa.X, x=c_x, d=c_0, z=std, block=0)


def _euler_ancestral(w, schedule, t, t_next, i, n_steps, info, eta, s_noise):
    a = co.positive_alpha(schedule, t, "euler_ancestral")
    s = co.noise_level(schedule, t, "the ancestral step")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    sbar, sbar_n = s / a, sn / an
    down, up = co.ancestral_step(sbar, sbar_n, eta)
    w.eval(isa.X, t, "the ancestral step")
    rho = (down - sbar) / sbar
    noisy = sbar_n > 0.0 and up > 0.0
    w.combine(isa.X, x=an * (1.0 + rho) / a, d=-an * rho, z=an * (s_noise * up) if noisy else 0.0, block=0)


def _dpmpp_2m(w, schedule, t, t_next, i, n_steps, info):
    s = w.eval(isa.X, t, "DPM-Solver++'s step")
    an, sn = schedule.alpha(t_next), schedule.sigma(t_next)
    with np.errstate(divide="ignore"):
        lt, ln = 0.5 * schedule.log_snr(t), 0.5 * schedule.log_snr(t_next)
    previous = w.carry.get("ell")
    w.carry["ell"] = lt
    if sn == 0.0:
        w.combine(isa.X, d=an)
    else:
        h = ln - lt
        e = math.expm1(-h)
        if previous is not None and np.isfinite(previous) and np.isfinite(lt):
            r = (lt - previous) / h
            wt = 1.0 / (2.0 * r)
            w.combine(isa.X, x=sn / s, d=-an * e * (1.0 + wt), p=an * e * wt)
        else:
            w.combine(isa.X, x=sn / s, d=-an * e)
    w.combine(isa.P, d=1.0)


def _pc(w, schedule, t, t_next, i, n_steps, info, predictor, corrector_steps, snr, step_size, langevin_alpha, order,
        denoise):
    if step_size is None and corrector_steps > 0:
        raise ValueError("pc with the snr rule runs on backend='numpy' only: its corrector step size averages the "
                         "score norm over the whole batch, so the chains are not independent; give step_size= "
                         "(e.g. a pilot run's sample(..., record=True).info['step_size'])")
    sizes = info.setdefault("step_size", np.zeros((n_steps, corrector_steps)))
    final = i == n_steps - 1 and denoise
    blocks = iter(range(corrector_steps + 1))

    def correct(tc, drop_last):
        co.langevin_alpha(langevin_alpha, schedule, tc, t_next)  # as the reference, which computes it
        for j in range(corrector_steps):
            block = next(blocks)
            eps = float(step_size[i, j])
            sizes[i, j] = eps
            s = w.eval(isa.X, tc, "the score")
            a, s2 = schedule.alpha(tc), s * s
            drop = drop_last and j == corrector_steps - 1
            w.combine(isa.X, x=1.0 - eps / s2, d=eps * a / s2, z=0.0 if drop else math.sqrt(2.0 * eps), block=block)

    def predict(drop):
        block = next(blocks)
        s = w.eval(isa.X, t, "the score")
        a, s2 = schedule.alpha(t), s * s
        if predictor == "reverse_diffusion":
            aa, G2 = co.forward_transition(schedule, t, t_next)
            w.combine(isa.X, x=(1.0 - (aa - 1.0)) - G2 / s2, d=G2 * a / s2, z=0.0 if drop else math.sqrt(G2),
                      block=block)
        else:
            h = t_next - t
            f, g2 = schedule.f(t), schedule.g2(t)
            w.combine(isa.X, x=1.0 + f * h + g2 * h / s2, d=-g2 * h * a / s2,
                      z=0.0 if drop else math.sqrt(-h * g2), block=block)

    if order == "corrector_first":
        correct(t, False)
        predict(final)
    else:
        predict(final and corrector_steps == 0)
        correct(t_next, final)


_WRITERS = {"euler": _euler, "heun": _heun, "ddim": _ddim, "ddpm": _ddpm, "euler_ancestral": _euler_ancestral,
            "dpmpp_2m": _dpmpp_2m, "pc": _pc}


def build_program(sampler, schedule, grid, options, noise_blocks) -> Program:
    """The program of ``sampler`` with validated ``options`` on ``schedule`` down ``grid`` (module doc).

    ``ValueError`` for what the reference's steps refuse (the same messages, raised before any step runs), for
    ``pf_ode`` and for ``pc`` with the ``snr`` rule (not compiled).
    """
    if sampler not in _WRITERS:
        raise ValueError(f"sampler {sampler!r} runs on backend='numpy' only: pf_ode integrates all chains as one "
                         "system with scipy.integrate.solve_ivp (shared adaptive steps); compiled backends run "
                         f"{', '.join(_WRITERS)}")
    g = np.asarray(grid, dtype=float)
    n_steps = g.shape[0] - 1
    w = _Writer(schedule)
    info = {}
    for i in range(n_steps):
        _WRITERS[sampler](w, schedule, float(g[i]), float(g[i + 1]), i, n_steps, info, **options)
        w.end_step()
    ops = np.array(w.ops, dtype=np.int64).reshape(-1, 3)
    coef = np.array(w.coef, dtype=float).reshape(-1, isa.N_COEF)
    return Program(sampler, g, np.array(w.ptr, dtype=np.int64), ops, coef, np.array(w.alpha, dtype=float),
                   np.array(w.sigma, dtype=float), int(noise_blocks), info)


def _data_arrays(denoiser, program):
    r"""``(means, vecs, lam, ev_alpha, ev_logc, ev_den)`` of the kernel: the data's eigendecomposition and, per
    evaluation slot, :math:`\delta_{ji} = \alpha^2\ell_{ji} + \sigma^2` and
    :math:`\log c_j = \log w_j - \tfrac d2\log 2\pi - \tfrac12\sum_i\log\delta_{ji}` (docs/diffusion.md §5.1)."""
    data = denoiser.data
    if isinstance(data, Gaussian):
        w, mu, covs = np.ones(1), data.mean[None], data.cov[None]
    elif isinstance(data, GaussianMixture):
        w, mu, covs = data.weights, data.means, data.covs
    else:
        raise TypeError(f"the compiled backends run the exact denoiser of Gaussian or GaussianMixture data, got a "
                        f"Denoiser of {type(data).__name__} (use backend='numpy')")
    lam, vec = np.linalg.eigh(covs)
    d = mu.shape[1]
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    a2 = (program.eval_alpha * program.eval_alpha)[:, None, None]
    s2 = (program.eval_sigma * program.eval_sigma)[:, None, None]
    den = a2 * lam[None] + s2
    logc = logw[None, :] - 0.5 * d * _LOG_2PI - 0.5 * np.sum(np.log(den), axis=2)
    return (np.ascontiguousarray(mu, dtype=float), np.ascontiguousarray(vec), np.ascontiguousarray(lam),
            np.ascontiguousarray(program.eval_alpha), np.ascontiguousarray(logc), np.ascontiguousarray(den))


# ------------------------------------------------------------------ numba
class _Driver(ChunkedBackend):
    """The Langevin samplers' chunk driver (chunks of steps, progress, Ctrl-C, the zero-step compile-ahead call)."""

    name = "numba"
    compiles = True

    def drive(self, advance, total, n_chains, what, progress, stop):
        """``advance(done, n)`` runs steps ``done .. done + n - 1`` (``n = 0``: compile only); one level."""
        self._drive(advance, total, total, n_chains, what, progress, stop)


def _divergence(program, status, fail_step, chain0):
    bad = np.flatnonzero(status != 0)
    i = int(fail_step[bad].min())
    first = bad[fail_step[bad] == i]
    t, tn = float(program.grid[i]), float(program.grid[i + 1])
    return FloatingPointError(
        f"the {program.sampler} step {i} (t = {t!r} -> {tn!r}) produced non-finite states in {first.size} chain(s) "
        f"(first: chain {chain0 + int(first[0])}); backend='numba' stopped the run there")


def _run_numba(program, arrays, x, seed, chain0, record, progress, stop=None):
    """Run ``program`` on rows ``x`` (chains ``chain0 ..``); ``(final states, trace (n_steps or 0, n, d))``."""
    from .._kernels import load_diffusion_sampler

    kernel = load_diffusion_sampler()
    x = np.array(x, dtype=float, order="C", copy=True)
    n, d = x.shape
    n_steps = program.grid.shape[0] - 1
    prev = np.zeros_like(x)
    status = np.zeros(n, dtype=np.int8)
    fail_step = np.full(n, -1, dtype=np.int64)
    trace = np.zeros((n_steps if record else 0, n, d))
    k0, k1 = NoiseOrigin(seed, chain0).key

    def advance(done, steps):
        kernel.run(*arrays, program.op_ptr, program.ops, program.coef, steps, x, prev, k0, k1, chain0, done,
                   1 if record else 0, trace, status, fail_step)
        if steps and status.any():
            raise _divergence(program, status, fail_step, chain0)
        return steps

    _Driver().drive(advance, n_steps, n, f"diffusion {program.sampler}", progress, stop)
    return x, trace


# ------------------------------------------------------------------ dask
class _StopFlag:
    """A block's ``stop``: true once the client has set the run's Dask Event (asked at most every 0.5 s)."""

    def __init__(self, name):
        self.name, self.next = name, 0.0

    def __call__(self):
        import time

        from distributed import Event

        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + 0.5
        return Event(self.name).is_set()


def _dask_block(program, arrays, x, seed, chain0, record, stop_name):
    """One task: the numba run of rows ``x`` (chains ``chain0 ..``); a pure function of its inputs."""
    return _run_numba(program, arrays, x, seed, chain0, record, False, _StopFlag(stop_name))


def _run_dask(backend, program, arrays, x, seed, chain0, record, progress):
    from distributed import Client, Event, LocalCluster, as_completed
    from tqdm.auto import tqdm

    if backend.inner not in (None, "numba"):
        raise ValueError(f"the diffusion samplers' Dask blocks run backend='numba'; got inner={backend.inner!r}")
    client = backend.client
    if client is not None and client.status != "running":
        raise ValueError(f"client must be connected to a scheduler, got a client with status {client.status!r}")
    n, d = x.shape
    n_steps = program.grid.shape[0] - 1
    workers = (backend.n_workers or os.cpu_count() or 2) if client is None else max(1, sum(client.nthreads().values()))
    block = backend.block_chains or default_block_chains(n, n_steps, workers)
    starts = list(range(0, n, block))
    cluster = None
    if client is None:
        cluster = LocalCluster(n_workers=max(1, min(workers, len(starts))), threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": "1"})
        client = Client(cluster)
    out = np.empty_like(x)
    trace = np.zeros((n_steps if record else 0, n, d))
    tag = uuid.uuid4().hex[:12]
    stop_name = f"refscore-stop-{tag}"
    futures, where, done = [], {}, 0
    show = sys.stderr.isatty() if progress is None else bool(progress)
    try:
        try:
            for lo in starts:
                hi = min(lo + block, n)
                f = client.submit(_dask_block, program, arrays, x[lo:hi], seed, chain0 + lo, record, stop_name,
                                  key=f"refscore-diffusion-{tag}-{lo}", pure=False)
                futures.append(f)
                where[f.key] = (lo, hi)
            bar = tqdm(total=n * n_steps, unit="chain-step", desc=f"{program.sampler} (dask/numba, {n} chains)",
                       delay=0.0 if progress else 2.0, disable=not show, file=sys.stderr, leave=False)
            with bar:
                for f in as_completed(futures):
                    lo, hi = where[f.key]
                    xb, tb = f.result()
                    f.release()
                    out[lo:hi] = xb
                    if record:
                        trace[:, lo:hi] = tb
                    done += 1
                    bar.update((hi - lo) * n_steps)
        except BaseException as exc:
            Event(stop_name, client=client).set()
            client.cancel(futures)
            if isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt(f"{program.sampler} (dask) interrupted after {done} of {len(starts)} blocks; "
                                        "the run's states were discarded and its blocks stopped") from None
            raise
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return out, trace


# ------------------------------------------------------------------ entry
def run(sampler, x0_fn, schedule, x, grid, options, noise_blocks, *, seed, chain0, record, backend, progress):
    """:func:`refscore.diffusion.samplers.sample` on a compiled ``backend`` (its arguments validated there).

    Returns ``(final states, trace (n_steps, n, d) or None, info)``.
    """
    if isinstance(backend, str):
        if backend not in COMPILED_BACKENDS:
            raise ValueError(f"backend must be one of {('numpy',) + COMPILED_BACKENDS} or a "
                             f"refscore.sampling.DaskBackend, got {backend!r}")
        name = backend
        if backend == "dask":
            backend = DaskBackend()  # raises ImportError naming what to install
    elif isinstance(backend, DaskBackend):
        name = "dask"
    else:
        raise TypeError(f"backend must be one of {('numpy',) + COMPILED_BACKENDS} or a refscore.sampling.DaskBackend, "
                        f"got {type(backend).__name__}")
    if not isinstance(x0_fn, Denoiser):
        raise TypeError(f"backend={name!r} compiles the exact denoiser: "
                        f"x0_fn must be a refscore.diffusion.Denoiser of Gaussian or GaussianMixture data, got "
                        f"{type(x0_fn).__name__} (a callable runs on backend='numpy')")
    program = build_program(sampler, schedule, grid, options, noise_blocks)
    arrays = _data_arrays(x0_fn, program)
    if isinstance(backend, str):
        xf, trace = _run_numba(program, arrays, x, seed, chain0, record, progress)
    else:
        xf, trace = _run_dask(backend, program, arrays, x, seed, chain0, record, progress)
    return xf, (trace if record else None), program.info
