r"""NumPy reference backend: vectorised over chains, one Python iteration per step.

Derivation: docs/derivations.md §8.

It evaluates the target's own NumPy ``score`` (and log-density), never the
compiled kernels of :mod:`.targets`, so the Numba and CUDA backends are
checked against an independent route.  The noise is :mod:`refscore.noise`,
bitwise identical to theirs, and the update is the pure steps of
:mod:`.steps` (:func:`~.steps.langevin_step`, :func:`~.steps.mala_log_alpha`,
:func:`~.steps.mala_accept`); this module adds only the bookkeeping: rows,
global step counters, traces and freezing.

.. math::

    x_{k+1} = x_k + \eta\, s(x_k) + \sqrt{2\eta}\, z_k \qquad \text{(eq. (4))}

A chain whose update holds a non-finite value, or a finite coordinate beyond
:data:`~refscore._kernels.score_blocks.GROWTH_BOUND`, keeps its last state and
is not updated again; ``status`` (int8) records why, with the codes and the
precedence of the compiled kernels (non-finite first), so every backend
freezes the same chains at the same step.  Kinetic Langevin's reference run
lives beside its steps, :meth:`refscore.sampling.kinetic.Splitting.run_reference`,
and uses the same rule (with :func:`_beyond` and :func:`_freeze`).
"""
from __future__ import annotations

import numpy as np

from .._kernels.score_blocks import BEYOND_BOUND, GROWTH_BOUND, NONFINITE
from .steps import langevin_step, mala_accept, mala_log_alpha

__all__ = ["langevin", "mala"]


def _shaped(value, shape, what):
    """``value`` if it has ``shape``, else a ``ValueError``: a custom target's score must be
    ``(n, d)`` and its log-density ``(n,)`` (broadcasting would otherwise hide the bug)."""
    if np.shape(value) != shape:
        want = f"(n, d) = {shape}" if len(shape) == 2 else f"(n,) = {shape}"
        raise ValueError(f"{what} must return shape {want}, got {np.shape(value)}")
    return value


def _freeze(status, failed, beyond):
    """Status codes of the chains frozen at this step: ``BEYOND_BOUND`` where the new
    state was finite but beyond the bound, ``NONFINITE`` for every other failure."""
    status[failed & beyond] = BEYOND_BOUND
    status[failed & ~beyond] = NONFINITE


def _beyond(v, finite):
    """Rows of ``v`` that are finite with a coordinate beyond the growth bound."""
    return finite & np.any(np.abs(v) > GROWTH_BOUND, axis=1)


def langevin(score_fns, etas, steps_per_level, x, origin, rec, trace, status):
    """ULA / annealed Langevin in place on ``x`` (n, d); ``score_fns[l]`` per level.

    ``origin`` (:class:`refscore.noise.NoiseOrigin`): row ``i`` of ``x`` is chain
    ``origin.chain0 + i``; the first step is global step ``origin.step0``.
    ``status`` (n,) int8: 0 running, else frozen.
    """
    n, d = x.shape
    alive = status == 0
    g = origin.step0
    for score, eta in zip(score_fns, etas):
        for _ in range(steps_per_level):
            with np.errstate(all="ignore"):
                s = _shaped(score(x), (n, d), "target.score(x)")
                z = origin.normal(n, g, d)
                x_new = langevin_step(x, s, eta, z)
                finite = np.all(np.isfinite(x_new), axis=1)
                beyond = _beyond(x_new, finite)
            ok = alive & finite & ~beyond
            _freeze(status, alive & ~ok, beyond)
            x[ok] = x_new[ok]
            alive = ok
            g += 1
            if rec > 0 and g % rec == 0:
                trace[g // rec - 1] = x


def mala(score, logpdf, eta, n_steps, x, origin, rec, trace, status, accepted):
    r"""MALA in place: proposal of eq. (4), Metropolis–Hastings correction
    (:func:`.steps.langevin_step`, :func:`.steps.mala_log_alpha`, :func:`.steps.mala_accept`).

    .. math::

        \log\alpha = \log p(y) - \log p(x)
          - \frac{\|x - y - \eta s(y)\|^2 - \|y - x - \eta s(x)\|^2}{4\eta}

    Chains and steps are numbered from ``origin`` as in :func:`langevin`.
    A proposal that is non-finite or beyond the bound, or a non-finite score or
    log-ratio there, freezes the chain.
    """
    n, d = x.shape
    alive = status == 0
    with np.errstate(all="ignore"):
        s_x = _shaped(score(x), (n, d), "target.score(x)")
        lp_x = _shaped(logpdf(x), (n,), "target.logpdf(x)")
    for t in range(origin.step0, origin.step0 + n_steps):
        with np.errstate(all="ignore"):
            z = origin.normal(n, t, d)
            y = langevin_step(x, s_x, eta, z)
            finite = np.all(np.isfinite(y), axis=1)
            beyond = _beyond(y, finite)
            fin = finite & ~beyond
            y_safe = np.where(fin[:, None], y, x)  # scores are only asked at finite points inside the bound
            s_y = _shaped(score(y_safe), (n, d), "target.score(x)")
            lp_y = _shaped(logpdf(y_safe), (n,), "target.logpdf(x)")
            log_alpha = mala_log_alpha(x, y, s_x, s_y, lp_x, lp_y, eta)
            fin &= np.isfinite(log_alpha) & np.all(np.isfinite(s_y), axis=1)
            u = origin.uniform(n, t)
            acc = alive & fin & mala_accept(log_alpha, u)
        _freeze(status, alive & ~fin, beyond)
        alive &= fin
        x[acc] = y[acc]
        s_x[acc] = s_y[acc]
        lp_x[acc] = lp_y[acc]
        accepted += acc
        if rec > 0 and (t + 1) % rec == 0:
            trace[(t + 1) // rec - 1] = x
