r"""The ``"dask"`` sampler backend: blocks of chains as Dask tasks, bitwise equal to one machine.

Options travel on the backend object: ``backend=DaskBackend(client=...,
block_chains=...)`` (``backend="dask"`` is ``DaskBackend()``).

The chains are cut into blocks by chain index, ``[lo, lo + block_chains)``;
each block is one task that runs an inner backend of :mod:`refscore.sampling.backends`
(``"numba"``, or ``"numpy"`` when numba is missing) on its rows from the run's
noise origin shifted by ``lo`` chains (``origin.shifted(chains=lo)``).  The noise
counters are global (:mod:`refscore.noise`), and a chain's arithmetic does not depend on its
neighbours, so the rows come back bitwise equal to ``backend=<inner>`` on one
machine, for every block size and worker count (tested).

A task is a pure function of ``(target, its rows of x0, seed, steps, chain
offset, reduction)``: it copies its inputs before running, so a task
rescheduled after its worker died (the nanny restarts the worker, the
scheduler re-runs the task elsewhere) recomputes the same numbers.

Targets.  Whatever the inner backend runs: on ``"numba"`` the refscore
distributions and bound models, and a :class:`~refscore.sampling.NumbaTarget` (the
user's ``numba.njit`` functions travel to the workers pickled, and each
worker compiles the custom kernels for them); on ``"numpy"`` also
:class:`~refscore.sampling.CallableTarget`.  Before any task is submitted the inner
backend runs zero steps of one chain on the client, so a target it cannot
run fails at once, with that backend's own message.

Checked when the backend is made: ``client=`` (a running
:class:`distributed.Client`) and ``block_chains=``; before the run: the client
again (still running), the reduction against the
dimension (:meth:`.reductions.Reduction.check`), and, when the final states
are gathered, that ``x`` is writeable.

Kinetic Langevin (:meth:`DaskBackend.kinetic`) runs the same way; a block carries
its rows' momenta along with their positions and returns both (and both
traces with ``record=``); it takes no reduction.

Reductions (``reduce=``, :mod:`.reductions`) run in the task on the block's
final states; only their partials travel to the client, which folds them in
chain-index order.  ``diverged`` (and MALA's per-chain ``accepted``) are
always filled in, as by every backend (the blocks keep the int8 status
codes, so ``diverged`` receives them when it is int8 and the divergence
warning says why each chain froze; a reduction's ``block`` is handed the bool
flags ``status != 0``); the final states (``x``) and the
``record=`` trace are gathered only when asked for (no reduction; ``record``).

Cluster.  ``DaskBackend(client=...)`` a :class:`distributed.Client`; without one a
:class:`distributed.LocalCluster` (worker processes, one thread each, numba
limited to one thread per worker) is started for the call and closed after;
its workers are spawned, so a script needs the usual
``if __name__ == "__main__":`` guard.  On a cluster of your own, give the
workers ``NUMBA_NUM_THREADS`` equal to their threads (the numba kernel is
itself parallel); the result does not depend on it.

Interruption.  On Ctrl-C (or any error), also while the blocks are being
submitted, every block submitted so far is cancelled: a queued block never
starts.  Dask cannot stop a running task, so the client also sets the run's
:class:`distributed.Event` (``refscore-stop-<run>``; one small entry left on
the scheduler per interrupted run), which a running block reads between the
inner backend's chunks (``stop=``, at most every half second): it ends within
about a second and its worker is free for the next call.

Block size.  A task costs about :data:`TASK_OVERHEAD_S` of scheduling and
transfer besides its work (measured with tiny tasks); a block of at least
:data:`MIN_TASK_CHAIN_STEPS` chain-steps keeps that below 5% at the measured
throughput of one worker.  The default block is four blocks per worker (load
balance; a lost worker costs a quarter of its share), at most
:data:`MAX_BLOCK_CHAINS` chains, but never under that minimum; rounded up to
a multiple of 128 (the numba kernel's block).  The block size never changes
the result.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import uuid

import numpy as np

from .backends import NumbaBackend, NumpyBackend

__all__ = ["DaskBackend", "require_dask", "default_block_chains", "TASK_OVERHEAD_S", "MIN_TASK_CHAIN_STEPS"]

#: the backends a block can run (on the worker's CPU), by the names ``inner=`` takes
_INNER = {"numba": NumbaBackend, "numpy": NumpyBackend}

#: scheduler + transfer cost of one task, seconds: 400 one-chain one-step tasks vs one task
#: on a 2-worker LocalCluster (about 5 ms on a loaded 2-core Xeon; less on an idle machine)
TASK_OVERHEAD_S = 0.005
#: chain-steps per second of one worker (numba, one thread, 2-d Gaussian; about 4e7 measured)
WORKER_CHAIN_STEPS_PER_S = 4.0e7
#: chain-steps per task that keep the overhead under 5%: overhead / 0.05 * throughput (4e6)
MIN_TASK_CHAIN_STEPS = round(TASK_OVERHEAD_S / 0.05 * WORKER_CHAIN_STEPS_PER_S)
#: default blocks per worker (load balance, and the work a lost worker costs)
BLOCKS_PER_WORKER = 4
#: default largest block, chains (per-task memory: 8 MiB per coordinate, more with record=)
MAX_BLOCK_CHAINS = 1 << 20
_ALIGN = 128

_INSTALL = "pip install 'refscore[dask]'"


def require_dask():
    """Import ``dask.distributed`` or raise an ImportError saying what to install."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"backend='dask' needs dask.distributed, which is not installed: {_INSTALL} "
                          f"({exc})") from exc


def default_block_chains(n, total_steps, n_workers):
    """Chains per block: ``n / (4 n_workers)`` (at most ``2**20``), but at least
    ``MIN_TASK_CHAIN_STEPS / total_steps`` (overhead under 5%); rounded up to a
    multiple of 128, at most ``n``."""
    b = max(math.ceil(MIN_TASK_CHAIN_STEPS / max(total_steps, 1)),
            min(math.ceil(n / (BLOCKS_PER_WORKER * max(n_workers, 1))), MAX_BLOCK_CHAINS))
    b = _ALIGN * math.ceil(b / _ALIGN)
    return max(1, min(b, n))


def _check_client(client):
    """``client`` must be a :class:`distributed.Client` connected to a scheduler."""
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client must be connected to a scheduler, got a client with status {client.status!r}")


def _check_runnable(inner, kind, target, args, origin):
    """Zero steps of one chain on the inner backend, on the client: a target it cannot run fails here,
    with its own message, instead of in every task (the arguments have the run's types)."""
    backend = _INNER[inner]()
    d = int(target.dim)
    x, trace, status = np.zeros((1, d)), np.zeros((0, 1, d)), np.zeros(1, dtype=np.int8)
    if kind == "langevin":
        sigmas, etas, _ = args
        backend.langevin(target, sigmas, etas, 0, x, origin, 0, trace, status, progress=False)
    elif kind == "kinetic":
        backend.kinetic(target, args[0], 0, x, np.zeros((1, d)), origin, 0, trace, np.zeros((0, 1, d)), status,
                        progress=False)
    else:
        backend.mala(target, args[0], 0, x, origin, 0, trace, status, np.zeros(1, dtype=np.int64),
                     progress=False)


class _StopFlag:
    """``stop=`` of a task: true once the client has set the run's Dask Event (asked at most every
    half second, between the inner backend's chunks)."""

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


def _run_block(inner, kind, target, args, x, diverged, origin, n_rec, rec, reduction, stop_name, v=None):
    """One task: run ``inner`` on rows ``x`` (chains ``origin.chain0 ..``); a pure function of its inputs.

    Returns ``(states or the reduction's partial, status codes, accepted, trace, momenta, momentum trace)``;
    the last two for kinetic Langevin (``v``: the rows' momenta), else ``None``.
    """
    backend = _INNER[inner]()
    x = np.array(x, dtype=float, order="C", copy=True)  # never touch the inputs: a rerun sees them unchanged
    # int8 status codes whatever the caller holds (a copy): the inner backend records why a chain froze
    status = np.array(diverged, dtype=np.int8, copy=True)
    m, d = x.shape
    trace = np.zeros((n_rec, m, d))
    accepted = p_trace = None
    if kind == "langevin":
        sigmas, etas, steps_per_level = args
        backend.langevin(target, sigmas, etas, steps_per_level, x, origin, rec, trace, status,
                         progress=False, stop=_StopFlag(stop_name))
    elif kind == "kinetic":
        splitting, n_steps = args
        v = np.array(v, dtype=float, order="C", copy=True)
        p_trace = np.zeros((n_rec, m, d))
        backend.kinetic(target, splitting, n_steps, x, v, origin, rec, trace, p_trace, status,
                        progress=False, stop=_StopFlag(stop_name))
    else:
        eta, n_steps = args
        accepted = np.zeros(m, dtype=np.int64)
        backend.mala(target, eta, n_steps, x, origin, rec, trace, status, accepted,
                     progress=False, stop=_StopFlag(stop_name))
    out = x if reduction is None else reduction.block(x, status != 0)  # a reduction takes bool flags
    return out, status, accepted, trace if rec else None, v, p_trace if rec else None


def _stop(client, futures, tag):
    """Stop the run's blocks: queued ones are cancelled, running ones stop at their next chunk."""
    from distributed import Event

    Event(f"refscore-stop-{tag}", client=client).set()
    client.cancel(futures)


class _OwnCluster:
    """A LocalCluster and its Client for one call (closed on exit)."""

    def __init__(self, n_workers):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR,
                                    env={"NUMBA_NUM_THREADS": "1"})
        self.client = Client(self.cluster)

    def close(self):
        self.client.close()
        self.cluster.close()


def _check_positive_int(name, value):
    if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
                              or value < 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return None if value is None else int(value)


class DaskBackend:
    """Blocks of chains as Dask tasks, each run by the ``inner`` backend (see the module doc).

    The object carries the run's Dask options: pass it as a sampler's
    ``backend=`` (``backend="dask"`` is ``DaskBackend()``).

    Parameters
    ----------
    client : distributed.Client, optional
        A client of a running cluster (default: a LocalCluster started for each call and closed after).
    block_chains : int, optional
        Chains per task (default: :func:`refscore.sampling.dask_backend.default_block_chains`).  The result does not depend on it.
    inner : {"numba", "numpy"}, optional
        The backend each task runs (default: ``"numba"`` when numba imports, else ``"numpy"``).
        The rows are bitwise those of ``backend=inner``.
    n_workers : int, optional
        Workers of the LocalCluster started when no ``client`` is given
        (default ``os.cpu_count()``, at most one per block).

    Raises
    ------
    ImportError
        When dask.distributed is not installed (naming ``pip install 'refscore[dask]'``).
    TypeError, ValueError
        For a ``client`` that is not a running :class:`distributed.Client`, and
        options out of range.

    The protocol methods take, besides :class:`~.backends.SamplerBackend`'s
    arguments, ``reduce`` (:func:`.reductions.resolve_reduction`), and return the
    reduction's result (``None`` without one: ``x`` then holds the final states).

    Examples
    --------
    >>> from refscore.sampling import DaskBackend, ula          # doctest: +SKIP
    >>> from distributed import Client                          # doctest: +SKIP
    >>> with Client("tcp://scheduler:8786") as client:          # doctest: +SKIP
    ...     res = ula(p, x0, 0.01, 1000, seed=0, backend=DaskBackend(client=client), reduce="moments")
    """

    name = "dask"

    def __init__(self, *, client=None, block_chains=None, inner=None, n_workers=None):
        require_dask()
        if inner is not None and inner not in _INNER:
            raise ValueError(f"inner must be 'numba' or 'numpy', got {inner!r}")
        if client is not None:
            _check_client(client)
            if n_workers is not None:
                raise ValueError(f"n_workers sizes the LocalCluster started without a client; the client's cluster "
                                 f"has its own workers: give client or n_workers, got both (n_workers={n_workers!r})")
        self.client = client
        self.block_chains = _check_positive_int("block_chains", block_chains)
        self.inner = inner
        self.n_workers = _check_positive_int("n_workers", n_workers)

    def __repr__(self):
        opts = {k: v for k, v in (("client", self.client), ("block_chains", self.block_chains),
                                  ("inner", self.inner), ("n_workers", self.n_workers)) if v is not None}
        return f"DaskBackend({', '.join(f'{k}={v!r}' for k, v in opts.items())})"

    def _inner(self):
        if self.inner is not None:
            return self.inner
        from .._kernels import numba_available

        return "numba" if numba_available() else "numpy"

    # ------------------------------------------------------------------ protocol
    def langevin(self, target, sigmas, etas, steps_per_level, x, origin, rec, trace, diverged,
                 *, progress=None, reduce=None):
        """ULA / annealed Langevin (see :meth:`.backends.SamplerBackend.langevin`)."""
        etas = np.ascontiguousarray(etas, dtype=float)
        args = (None if sigmas is None else np.asarray(sigmas, dtype=float), etas, int(steps_per_level))
        return self._run("langevin", target, args, len(etas) * steps_per_level, x, origin, rec, trace,
                         diverged, None, progress, reduce)

    def mala(self, target, eta, n_steps, x, origin, rec, trace, diverged, accepted,
             *, progress=None, reduce=None):
        """MALA (see :meth:`.backends.SamplerBackend.mala`)."""
        return self._run("mala", target, (float(eta), int(n_steps)), n_steps, x, origin, rec, trace,
                         diverged, accepted, progress, reduce)

    def kinetic(self, target, splitting, n_steps, x, v, origin, rec, trace, p_trace, diverged, *, progress=None):
        """Kinetic Langevin (see :meth:`.backends.SamplerBackend.kinetic`): each block carries its rows'
        momenta ``v`` along and returns them with its states (no reduction)."""
        self._run("kinetic", target, (splitting, int(n_steps)), n_steps, x, origin, rec, trace, diverged, None,
                  progress, None, momenta=(v, p_trace))

    # ------------------------------------------------------------------ driver
    def _run(self, kind, target, args, total_steps, x, origin, rec, trace, diverged, accepted, progress, reduce,
             momenta=None):
        from .reductions import resolve_reduction

        # everything that can be refused is refused here, before a task or a cluster is started
        client, block_chains = self.client, self.block_chains
        if client is not None:
            _check_client(client)  # still running
        reduction = resolve_reduction(reduce, target)
        if reduction is None and not x.flags.writeable:
            raise ValueError("x must be writeable: without a reduction the final states are gathered into it "
                             "(a read-only view such as np.broadcast_to(...) must be copied first)")
        inner = self._inner()
        _check_runnable(inner, kind, target, args, origin)
        n = x.shape[0]
        own = None
        if client is None:
            workers = self.n_workers or os.cpu_count() or 2
        else:
            workers = max(1, sum(client.nthreads().values()))  # task slots
        block = default_block_chains(n, total_steps, workers) if block_chains is None else int(block_chains)
        starts = list(range(0, n, block))
        if client is None:
            own = _OwnCluster(max(1, min(workers, len(starts))))
            client = own.client
        try:
            return self._submit_and_gather(client, kind, inner, target, args, total_steps, x, origin, rec,
                                           trace, diverged, accepted, progress, reduction, starts, block, momenta)
        finally:
            if own is not None:
                own.close()

    def _submit_and_gather(self, client, kind, inner, target, args, total_steps, x, origin, rec, trace,
                           diverged, accepted, progress, reduction, starts, block, momenta=None):
        from distributed import as_completed
        from tqdm.auto import tqdm

        n = x.shape[0]
        n_rec = trace.shape[0]
        tag = uuid.uuid4().hex[:12]
        futures, where = [], {}
        pending, acc, next_i, done = {}, None, 0, 0
        show = sys.stderr.isatty() if progress is None else bool(progress)
        try:  # an interrupt while submitting cancels the blocks submitted so far
            for i, lo in enumerate(starts):
                hi = min(lo + block, n)
                f = client.submit(_run_block, inner, kind, target, args, x[lo:hi], diverged[lo:hi],
                                  origin.shifted(chains=lo), n_rec, rec, reduction, f"refscore-stop-{tag}",
                                  None if momenta is None else momenta[0][lo:hi],
                                  key=f"refscore-{kind}-{tag}-{lo}",
                                  pure=False)
                futures.append(f)
                where[f.key] = (i, lo, hi)
            bar = tqdm(total=n * total_steps, unit="chain-step", desc=f"{kind} (dask/{inner}, {n} chains)",
                       delay=0.0 if progress else 2.0, disable=not show, file=sys.stderr, leave=False)
            with bar:
                for f in as_completed(futures):
                    i, lo, hi = where[f.key]
                    out, div_b, acc_b, trace_b, v_b, p_trace_b = f.result()
                    f.release()
                    diverged[lo:hi] = div_b if diverged.dtype == np.int8 else div_b != 0
                    if accepted is not None:
                        accepted[lo:hi] = acc_b
                    if rec:
                        trace[:, lo:hi] = trace_b
                    if momenta is not None:
                        momenta[0][lo:hi] = v_b
                        if rec:
                            momenta[1][:, lo:hi] = p_trace_b
                    if reduction is None:
                        x[lo:hi] = out
                    else:  # fold partials left to right in chain-index order, whatever order they come in
                        pending[i] = out
                        while next_i in pending:
                            p = pending.pop(next_i)
                            acc = p if next_i == 0 else reduction.combine([acc, p])
                            next_i += 1
                    done += 1
                    bar.update((hi - lo) * total_steps)
        except KeyboardInterrupt:
            _stop(client, futures, tag)
            raise KeyboardInterrupt(f"{kind} (dask) interrupted after {done} of {len(starts)} blocks; "
                                    "the run's states were discarded and its blocks stopped") from None
        except BaseException:
            _stop(client, futures, tag)
            raise
        return None if reduction is None else reduction.finish(acc)
