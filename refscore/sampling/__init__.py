r"""Langevin samplers on every backend with identical counter-based noise.

Derivation: docs/derivations.md §8 (ULA, its stationary bias, MALA, annealing, divergence, kinetic Langevin).

One update convention everywhere, eq. (4):

.. math::

    x_{k+1} = x_k + \eta\, s(x_k) + \sqrt{2\eta}\, z_k,
    \qquad z_k = \texttt{normal(seed, chain, k, ·)}

The NCSN paper (Song & Ermon 2019, Alg. 1) writes :math:`x + (\alpha/2) s + \sqrt{\alpha} z`,
so :math:`\eta = \alpha/2` (:func:`refscore.conventions.ncsn_step`); NCSN's and NCSNv2's
released samplers use their ``step_lr`` as :math:`\eta` directly
(:func:`refscore.conventions.ncsn_code_step`).

Kinetic (underdamped) Langevin, :func:`kinetic_langevin` (:mod:`.kinetic`), carries momenta and
runs the BAOAB, OBABO or ABOBA splitting of docs/derivations.md §8.6 on the same backends, with
the same noise and divergence rules; :func:`kinetic_stationary_law`,
:func:`kinetic_transient_law` and :func:`kinetic_step_matrices` are its exact laws on a Gaussian.

Backends (one protocol, :mod:`.backends`; one registry of names, :mod:`.registry`): ``"numpy"``
(the reference, :mod:`.reference`, running the pure steps of :mod:`.steps`), ``"numba"``
(parallel over blocks of chains) and ``"cuda"`` (one thread per chain), the compiled two
loaded only when asked for from :mod:`refscore._kernels`; ``"dask"`` or
``DaskBackend(client=..., block_chains=...)`` runs blocks of chains as Dask tasks
(:mod:`.dask_backend`).  ``backend=`` takes a name or a backend object.  They share the noise
bit for bit (:mod:`refscore.noise`) and differ in the score's round-off
only: trajectories agree to ~1e-12 relative after 100 steps on a Gaussian
(tested at 1e-10).

Every sampler returns a :class:`SamplerResult`.  A chain diverges when its
update produces a non-finite value, or a finite coordinate beyond
``|x_i| <= 1e150`` (:data:`GROWTH_BOUND`: squares overflow float64 just above
1e154, and a chain that far out is exploding, not sampling: an unstable
step on a near-singular Gaussian reaches 1e198 with every value finite).
Every backend applies the same test at the same step: such a chain keeps its
last state inside the bound, is not updated again, and is flagged in
``diverged``; the run never raises for it, and a :class:`DivergenceWarning`
says how many chains diverged and why (non-finite, or beyond the bound).
When the target's score is linear, :math:`s = -P(x - m)` (a Gaussian),
:func:`ula` and :func:`annealed_langevin` know ULA's stability bound
:math:`\eta < 2/\lambda_{\max}(P)` (docs/derivations.md §8.2) and warn before
the run when the step does not satisfy it.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._kernels.score_blocks import GROWTH_BOUND
from .._validation import check_int, check_positive, check_sigmas
from ..noise import NoiseOrigin
from ._runs import (DivergenceWarning, SamplerResult, _check_record, _check_target, _check_x0, _gathers_no_states,
                    _precheck, _reported, _runner)
from .custom import CallableTarget, NumbaTarget
from .dask_backend import DaskBackend
from .kinetic import (KineticResult, kinetic_langevin, kinetic_stationary_law, kinetic_step_matrices,
                      kinetic_transient_law)
from .registry import BACKENDS
from .steps import annealed_level_steps
from .targets import linear_score_precisions

__all__ = ["ula", "mala", "annealed_langevin", "kinetic_langevin", "SamplerResult", "KineticResult",
           "kinetic_step_matrices", "kinetic_stationary_law", "kinetic_transient_law", "DivergenceWarning",
           "BACKENDS", "DaskBackend", "CallableTarget", "NumbaTarget", "GROWTH_BOUND"]


def _warn_unstable_step(target, sigmas, etas, sampler):
    """Warn before a ULA run whose step is not below ``2 / lambda_max(P)`` on a linear score (§8.2)."""
    precisions = linear_score_precisions(target, sigmas)
    if precisions is None:
        return
    for level, (P, eta) in enumerate(zip(precisions, etas)):
        if eta * np.max(np.sum(np.abs(P), axis=1)) < 2.0:  # Gershgorin: lambda_max is below this row sum
            continue
        lam = np.linalg.eigvalsh(P)
        if lam[0] <= 0.0 or eta * lam[-1] < 2.0:  # not a Gaussian (no stable step), or stable
            continue
        what = (f"step {eta:.6g}" if sigmas is None else f"the step of noise level {level} "
                f"(sigma = {sigmas[level]:.6g}), step * sigma^2 / sigma_L^2 = {eta:.6g},")
        warnings.warn(
            f"{sampler}: {what} is not below ULA's stability bound for this target: its score is "
            f"linear, s(x) = -P (x - m), with lambda_max(P) = {lam[-1]:.6g}, and ULA contracts only for "
            f"step < 2 / lambda_max(P) = {2.0 / lam[-1]:.6g}; each step multiplies the deviation along P's top "
            f"eigenvector by |1 - step * lambda_max| = {abs(1.0 - eta * lam[-1]):.6g}, so the chains will grow "
            "until they are frozen and flagged diverged (docs/derivations.md §8.2)",
            DivergenceWarning,
            stacklevel=3,
        )
        return


_check_sigmas = check_sigmas


def _run_langevin(target, x0, sigmas, etas, steps_per_level, seed, runner, record, progress, reduce):
    opts = {} if reduce is None else {"reduce": reduce}
    origin = NoiseOrigin(seed)
    x = x0
    n, d = x.shape
    rec, n_rec = _check_record(record, len(etas) * steps_per_level)
    trace = np.zeros((n_rec, n, d))
    status = np.zeros(n, dtype=np.int8)  # the backends write why a chain froze
    etas = np.ascontiguousarray(etas, dtype=float)
    reduced = runner.langevin(target, sigmas, etas, steps_per_level, x, origin, rec, trace, status,
                              progress=progress, **opts)
    return _reported(SamplerResult(x=x if reduced is None else None, diverged=status != 0,
                                   trace=trace if rec else None, reduced=reduced), status, stacklevel=4)


# ------------------------------------------------------------------ samplers
def ula(target, x0, step, n_steps, seed, backend="numpy", record=None, progress=None,
        client=None, block_chains=None, reduce=None) -> SamplerResult:
    r"""Unadjusted Langevin algorithm, eq. (4).

    .. math::

        x_{k+1} = x_k + \eta\, \nabla\log p(x_k) + \sqrt{2\eta}\, z_k

    Its stationary law is biased by :math:`O(\eta)`; on :math:`N(\mu, \Sigma)`
    it is :math:`N(\mu, (\Lambda - \eta\Lambda^2/2)^{-1})`, :math:`\Lambda = \Sigma^{-1}`.

    Parameters
    ----------
    target : distribution or ``model.bind(theta)``
        Anything with ``score(x)`` and ``dim`` known to :mod:`.targets`.
    x0 : array (n, d)
        Initial states, one row per chain (chain ``c`` draws noise stream ``c``).
    step : float > 0
        :math:`\eta`.
    n_steps : int >= 0
    seed : int in [0, 2**64)
    backend : {"numpy", "numba", "cuda", "dask"} or a backend object
        A name of :data:`BACKENDS` (:mod:`.registry`), or an object carrying
        its options: ``DaskBackend(client=..., block_chains=...)``
        (:mod:`.dask_backend`: blocks of chains as Dask tasks, bitwise equal
        to ``"numba"``; ``"dask"`` is ``DaskBackend()``, a LocalCluster for the call).
    record : int, optional
        Keep the states every ``record`` steps in ``.trace``.
    progress : bool, optional
        A progress bar on stderr: ``None`` (default) when stderr is a terminal
        and the run lasts over two seconds, ``True`` always, ``False`` never.
    client, block_chains : optional, deprecated
        Build ``DaskBackend(client=..., block_chains=...)`` for ``backend="dask"``,
        with a ``DeprecationWarning``: pass that object as ``backend=`` instead.
    reduce : optional, Dask backend only
        A reduction of the final states computed on the workers
        (``"moments"``, ``"modes"``, ``"diverged"``, a
        :class:`.reductions.Histogram`, ...) returned in ``.reduced``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, within about a quarter of a second even on the compiled
        backends (runs advance in chunks of steps; the result does not depend
        on the chunking); the interrupted run's states are discarded.

    Returns
    -------
    SamplerResult

    References
    ----------
    Eq. (4); G. O. Roberts, R. L. Tweedie, Bernoulli 2 (1996).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import Gaussian
    >>> from refscore.sampling import ula
    >>> res = ula(Gaussian(np.zeros(2), np.eye(2)), np.zeros((4, 2)), 0.1, 10, seed=0)
    >>> res.x.shape, bool(res.diverged.any())
    ((4, 2), False)
    """
    d = _check_target(target, "ula")
    runner = _runner(backend, client, block_chains, reduce, "ula")
    x = _check_x0(x0, d, reduced=_gathers_no_states(runner, reduce, target))
    _precheck(target, x)
    eta = check_positive("step", step)
    n_steps = check_int("n_steps", n_steps, 0)
    _warn_unstable_step(target, None, [eta], "ula")
    return _run_langevin(target, x, None, [eta], n_steps, seed, runner, record, progress, reduce)


def annealed_langevin(target, x0, sigmas, step, steps_per_level, seed, backend="numpy",
                      record=None, progress=None, client=None, block_chains=None,
                      reduce=None) -> SamplerResult:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level :math:`\sigma_1 > \dots > \sigma_L`, ``steps_per_level``
    steps of eq. (4) with

    .. math::

        \eta_i = \text{step}\cdot\sigma_i^2/\sigma_L^2, \qquad
        x \leftarrow x + \eta_i\, s(x, \sigma_i) + \sqrt{2\eta_i}\, z .

    The NCSN paper's :math:`\epsilon` is ``2 * step`` (its update is
    :math:`x + (\alpha_i/2)s + \sqrt{\alpha_i}z`); the released NCSN/NCSNv2 code's
    ``step_lr`` is ``step`` itself (see :mod:`refscore.conventions`).  The noise
    step index counts globally, ``i * steps_per_level + t``.

    Parameters
    ----------
    target : ``dist.perturbed()`` or ``NoiseConditional(model).bind(theta)``
        Has ``score(x, sigma)``.
    x0 : array (n, d)
    sigmas : array (L,), strictly decreasing, > 0
    step : float > 0
    steps_per_level : int >= 0
    seed, backend, record, progress, client, block_chains, reduce : as in :func:`ula`

    References
    ----------
    Y. Song, S. Ermon, NeurIPS 2019, Algorithm 1; eq. (4).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import GaussianMixture
    >>> from refscore.sampling import annealed_langevin
    >>> p = GaussianMixture([0.5, 0.5], [[-3.0], [3.0]], [[[1.0]], [[1.0]]])
    >>> res = annealed_langevin(p.perturbed(), np.zeros((8, 1)), [3.0, 1.0, 0.3], 0.05, 20, seed=1)
    >>> res.x.shape
    (8, 1)
    """
    d = _check_target(target, "annealed_langevin")
    runner = _runner(backend, client, block_chains, reduce, "annealed_langevin")
    x = _check_x0(x0, d, reduced=_gathers_no_states(runner, reduce, target))
    _precheck(target, x)
    s = _check_sigmas(sigmas)
    step = check_positive("step", step)
    T = check_int("steps_per_level", steps_per_level, 0)
    etas = annealed_level_steps(step, s)
    _warn_unstable_step(target, s, etas, "annealed_langevin")
    return _run_langevin(target, x, s, etas, T, seed, runner, record, progress, reduce)


def mala(target, x0, step, n_steps, seed, backend="numpy", record=None, progress=None,
         client=None, block_chains=None, reduce=None) -> SamplerResult:
    r"""Metropolis-adjusted Langevin algorithm: the proposal of eq. (4) plus
    a Metropolis–Hastings test, so the stationary law is exactly :math:`p`.

    .. math::

        y = x + \eta s(x) + \sqrt{2\eta} z,\qquad
        \log\alpha = \log p(y) - \log p(x) - \frac{\|x - y - \eta s(y)\|^2
        - \|y - x - \eta s(x)\|^2}{4\eta},

    accepted when :math:`\log u < \log\alpha` with
    ``u = noise.uniform(seed, chain, k)`` (stream 1).  ``target`` needs a
    log-density up to a constant: distributions, Gaussian and mixture models,
    symmetric ``LinearScore``, ``MLPEnergy`` (:math:`-E_\theta`).

    Returns
    -------
    SamplerResult
        ``accept_rate`` per chain, shape ``(n,)``.

    References
    ----------
    G. O. Roberts, R. L. Tweedie, Bernoulli 2 (1996), MALA; eq. (4).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import Gaussian
    >>> from refscore.sampling import mala
    >>> res = mala(Gaussian(np.zeros(2), np.eye(2)), np.zeros((4, 2)), 0.5, 20, seed=0)
    >>> res.accept_rate.shape
    (4,)
    """
    d = _check_target(target, "mala")
    runner = _runner(backend, client, block_chains, reduce, "mala")
    x = _check_x0(x0, d, reduced=_gathers_no_states(runner, reduce, target))
    _precheck(target, x)
    eta = check_positive("step", step)
    n_steps = check_int("n_steps", n_steps, 0)
    opts = {} if reduce is None else {"reduce": reduce}
    origin = NoiseOrigin(seed)
    n = x.shape[0]
    rec, n_rec = _check_record(record, n_steps)
    trace = np.zeros((n_rec, n, d))
    status = np.zeros(n, dtype=np.int8)
    accepted = np.zeros(n, dtype=np.int64)
    reduced = runner.mala(target, eta, n_steps, x, origin, rec, trace, status, accepted,
                          progress=progress, **opts)
    rate = accepted / max(n_steps, 1)
    return _reported(SamplerResult(x=x if reduced is None else None, diverged=status != 0, accept_rate=rate,
                                   trace=trace if rec else None, reduced=reduced), status)
