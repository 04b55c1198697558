r"""The parallel loops of the compiled kernels: fixed groups of blocks, run on Python threads.

A loss kernel cuts its points into blocks and the blocks into ``n_groups``
contiguous groups, fixed by ``n`` alone (:mod:`.mlp_losses`); each group sums
its blocks' gradient into its own row of ``parts``, and the rows are added in
group order afterwards, so the result never depends on the thread count.
:func:`run_shares` spreads the groups over ``numba.get_num_threads()``
threads: each group is one call of a compiled, GIL-free (``nogil=True``)
serial function that keeps its scratch arrays between calls (allocating
them per group measured 0.5 ms a group), and each thread takes the next
group not yet taken, so a thread that shares its core with another process
takes fewer (a contiguous run per thread, the static schedule a ``prange``
loop uses, left such a thread holding up the call with half of the work;
prange's own dynamic schedule, ``parallel_chunksize(1)``, was measured 5×
slower).

Why not ``prange``.  Numba's parallel lowering compiles the loop body into a
separate ufunc and optimises it again with everything it calls: measured
under load on 2 cores, the ISM kernel's parallel wrapper took 13.7 s to
compile around a body that compiles in 3.5–5 s on its own, and a serial
wrapper 4 s.  Here the body compiles once and nothing wraps it.  The cost is a
thread hand-off per call: 20–24 µs measured for 16 empty groups on two threads
(4 µs on one), against milliseconds of work on any batch worth threading.

The sampler kernels (:mod:`.cpu_sampler`) cut their chains into blocks the same way and hand
each thread one contiguous share of blocks in one call (:func:`run_ranges`); each chain's
arithmetic does not depend on its share.

An exception in any group is raised in the caller once every group has
ended.  Ctrl-C reaches the caller when its own run of groups returns.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import threading

import numba

__all__ = ["run_groups", "run_ranges", "run_shares"]

_POOL: list = []
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool, grown (replaced) when more threads are asked for than it has."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0][0] < workers:
            if _POOL:
                _POOL[0][1].shutdown(wait=False)
                _POOL.clear()
            _POOL.append((workers, concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="refscore-group")))
        return _POOL[0][1]


def _run_range(group, lo: int, hi: int) -> None:
    for g in range(lo, hi):
        group(g)


def run_groups(group, n_groups: int) -> None:
    """Call ``group(g)`` for ``g = 0 .. n_groups - 1``, on up to ``numba.get_num_threads()`` threads.

    Thread ``t`` of ``T`` runs groups ``t n_groups // T`` to ``(t + 1) n_groups // T - 1``
    in order; the calling thread runs the first run itself.  ``group`` must release the GIL
    for the threads to overlap (a ``nogil=True`` kernel) and must write only its own group's
    outputs.
    """
    threads = max(1, min(int(numba.get_num_threads()), int(n_groups)))
    if threads == 1:
        _run_range(group, 0, n_groups)
        return
    bounds = [t * n_groups // threads for t in range(threads + 1)]
    pool = _pool(threads - 1)
    futures = [pool.submit(_run_range, group, bounds[t], bounds[t + 1]) for t in range(1, threads)]
    try:
        _run_range(group, bounds[0], bounds[1])
    finally:
        concurrent.futures.wait(futures)
    for f in futures:
        f.result()  # the first group's exception, if any


def run_shares(kernel_share, n_groups: int) -> None:
    """Call ``kernel_share(t, lo, hi)`` on up to ``numba.get_num_threads()`` threads until every group
    ``0 .. n_groups - 1`` has run, each in exactly one call, in order within a call.

    On one thread: one call for all the groups.  On more: each thread t takes the next group not yet
    taken, one at a time (``kernel_share(t, g, g + 1)``), so a thread whose core another process is
    sharing takes fewer groups instead of holding the others up (a contiguous share per thread, as
    :func:`run_groups` hands them, left a thread on a shared core with half of the work).  A kernel
    treats each group as its own (its own outputs, its blocks in order) and keeps its scratch
    arrays between calls, so the results do not depend on which thread ran a group, and a call
    costs only its dispatch (8 µs measured).
    """
    threads = max(1, min(int(numba.get_num_threads()), int(n_groups)))
    if threads == 1:
        kernel_share(0, 0, n_groups)
        return
    taken = itertools.count()  # next() on a count is atomic under the GIL

    def work(t):
        g = next(taken)
        while g < n_groups:
            kernel_share(t, g, g + 1)
            g = next(taken)

    run_groups(work, threads)


def run_ranges(kernel_range, n_items: int) -> None:
    """Call ``kernel_range(lo, hi)`` once per thread on contiguous, equal shares of ``range(n_items)``.

    The samplers' blocks of chains: each share is one call of a GIL-free kernel over its blocks
    (one call per block would cost a hand-off per 128 chains).  Each block's arithmetic does not
    depend on the share it falls in, so results are the same for any thread count.
    """
    threads = max(1, min(int(numba.get_num_threads()), int(n_items)))
    run_groups(lambda t: kernel_range(t * n_items // threads, (t + 1) * n_items // threads), threads)
