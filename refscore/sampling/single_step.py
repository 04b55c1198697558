r"""Every sampler one step at a time: ``init`` and ``step(state, key)``, with refscore's counter noise.

Derivation: docs/derivations.md §8.1 (ULA), §8.3 (MALA), §8.4 (annealing), §8.6 (kinetic
Langevin), §9 (the counter noise), §8.7 (this API and the kinetic conventions).

blackjax writes a sampler as ``state = init(position)`` and ``state, info = step(rng_key, state)``,
its noise drawn from split keys.  refscore keeps the shape and replaces the key by its counter:
the noise of a step is a pure function of ``(seed, chain, step)`` (:mod:`refscore.noise`), so
a :class:`CounterKey` names it exactly, and ``step(state, key)`` is a pure function of its
arguments whose numbers every backend and every foreign implementation fed the same counters
can reproduce.  Each factory binds a target and the sampler's parameters and returns a
:class:`SingleStep` ``(init, step)``:

=======================  ==================================================================
factory                  one step (``state, key -> state, info``)
=======================  ==================================================================
:func:`ula_kernel`       :func:`.steps.ula_update`: :math:`x + \eta s(x) + \sqrt{2\eta} z`
:func:`mala_kernel`      :func:`.steps.mala_step`: that proposal, accepted iff
                         :math:`\log u < \log\alpha`
:func:`annealed_kernel`  :func:`.steps.annealed_update` at level ``key.step // steps_per_level``
:func:`kinetic_kernel`   :func:`.kinetic.baoab_step`, :func:`~.kinetic.obabo_step` or
                         :func:`~.kinetic.aboba_step`
=======================  ==================================================================

with ``z = noise.normal(key.seed, chains, key.step, d)`` (row ``i`` of the state is chain
``key.chain + i``), MALA's ``u = noise.uniform(key.seed, chains, key.step)`` and kinetic
Langevin's ``xi = noise.normal(key.seed, chains, key.step, 2 d)``.  These steps *are* the
pure steps of :mod:`.steps` and :mod:`refscore.sampling.kinetic` fed that noise: no arithmetic of their own.
A whole run of :func:`refscore.sampling.ula`, :func:`~refscore.sampling.mala`,
:func:`~refscore.sampling.annealed_langevin` and
:func:`~refscore.sampling.kinetic.kinetic_langevin` on ``backend="numpy"`` is, bit for bit,
the loop ``for t in range(T): state, info = step(state, CounterKey(seed, 0, t))`` from
``init(x0)`` (tested in tests/test_sampling_steps.py); the runs add only the bookkeeping
(traces, and freezing a chain that diverges, docs/derivations.md §8.5).  A single step freezes
nothing: its ``info.diverged`` flags the chains whose new state is not finite or leaves
``|x_i| <= GROWTH_BOUND``, and the caller decides.

The same steps in the form :func:`refscore.testing.assert_sampler_matches` calls a user's
``step_fn`` (noise passed as arrays, keyword arguments) are the ``step`` of each entry of
:data:`refscore.sampling.samplers.SAMPLERS`; the kinetic ones are :func:`baoab_update`,
:func:`obabo_update` and :func:`aboba_update` here.

Examples
--------
>>> import numpy as np
>>> from refscore.distributions import Gaussian
>>> from refscore.sampling import ula
>>> from refscore.sampling.single_step import CounterKey, ula_kernel
>>> target, x0 = Gaussian(np.zeros(2), np.eye(2)), np.ones((3, 2))
>>> sampler = ula_kernel(target, step=0.1)
>>> state = sampler.init(x0)
>>> for t in range(5):
...     state, info = sampler.step(state, CounterKey(seed=7, chain=0, step=t))
>>> bool(np.array_equal(state.position, ula(target, x0, 0.1, 5, seed=7).x))
True
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._kernels.score_blocks import GROWTH_BOUND
from .._validation import as_float_array, check_finite, check_int, check_positive, check_sigmas
from ..noise import NoiseOrigin
from .kinetic import INITIAL_MOMENTUM_STEP, aboba_step, baoab_step, obabo_step
from .steps import annealed_level_steps, langevin_step, mala_accept, mala_log_alpha, ula_update

__all__ = ["CounterKey", "SingleStep", "LangevinState", "KineticState", "LangevinInfo", "MALAInfo", "KineticInfo",
           "ula_kernel", "mala_kernel", "annealed_kernel", "kinetic_kernel", "KINETIC_STEPS",
           "baoab_update", "obabo_update", "aboba_update"]


# ------------------------------------------------------------------ the key
@dataclass(frozen=True)
class CounterKey:
    """refscore's counter key: the noise of rows ``0 .. c - 1`` (chains ``chain + i``) at counter ``step``.

    The key of blackjax's ``step(rng_key, state)``, as the three counters of
    :mod:`refscore.noise`: a step with this key draws ``noise.normal(seed, chain + i, step, ...)``
    for row ``i`` of its state (and MALA's ``noise.uniform(seed, chain + i, step)``).  Nothing
    is split: the next step's key is ``key.next()``.

    Parameters
    ----------
    seed : int in [0, 2**64)
    chain : int in [0, 2**32)
        The chain of the state's first row.
    step : int in [0, 2**32)
        The counter step (annealed Langevin counts it across levels: level ``step // T``).

    Examples
    --------
    >>> from refscore.sampling.single_step import CounterKey
    >>> CounterKey(3, 0, 4).next()
    CounterKey(seed=3, chain=0, step=5)
    """

    seed: int
    chain: int = 0
    step: int = 0

    def __post_init__(self):
        for name, value, top in (("seed", self.seed, "2**64"), ("chain", self.chain, "2**32"),
                                 ("step", self.step, "2**32")):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int in [0, {top}), got {type(value).__name__}")
            if not 0 <= value < (2 ** 64 if name == "seed" else 2 ** 32):
                raise ValueError(f"{name} must be an int in [0, {top}), got {value}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "chain", int(self.chain))
        object.__setattr__(self, "step", int(self.step))

    def next(self, steps: int = 1) -> "CounterKey":
        """The key ``steps`` steps later (the same seed and chains)."""
        return CounterKey(self.seed, self.chain, self.step + check_int("steps", steps, 0))

    def normal(self, n_rows: int, dim: int) -> np.ndarray:
        """``(n_rows, dim)``: ``noise.normal(seed, chain + i, step, dim)`` for row ``i``."""
        return NoiseOrigin(self.seed, self.chain).normal(n_rows, self.step, dim)

    def uniform(self, n_rows: int) -> np.ndarray:
        """``(n_rows,)``: MALA's ``noise.uniform(seed, chain + i, step)`` for row ``i``."""
        return NoiseOrigin(self.seed, self.chain).uniform(n_rows, self.step)


def _key(key) -> CounterKey:
    if not isinstance(key, CounterKey):
        raise TypeError(f"key must be a CounterKey(seed, chain, step), got {type(key).__name__}")
    return key


# ------------------------------------------------------------------ states and infos
class SingleStep(NamedTuple):
    """A sampler bound to its target and parameters: ``init(position, ...) -> state`` and
    ``step(state, key) -> (state, info)`` (blackjax's ``SamplingAlgorithm``, with a :class:`CounterKey`)."""

    init: Callable
    step: Callable


class LangevinState(NamedTuple):
    """The state of ULA, MALA and annealed Langevin: ``position`` (c, d), one row per chain."""

    position: np.ndarray


class KineticState(NamedTuple):
    """The state of kinetic Langevin: ``position`` :math:`q` and ``momentum`` :math:`p` (c, d)."""

    position: np.ndarray
    momentum: np.ndarray


class LangevinInfo(NamedTuple):
    """What a ULA or annealed step did: the step ``eta`` it took (the level's, for annealing), the
    level's ``sigma`` (None for ULA), and ``diverged`` (c,): the new state is not finite or leaves
    ``|x_i| <= GROWTH_BOUND``."""

    eta: float
    sigma: float | None
    diverged: np.ndarray


class MALAInfo(NamedTuple):
    """What a MALA step did: ``accepted`` (c,) where ``log u < log_alpha``, ``log_alpha`` (c,), and
    ``diverged`` (c,): the proposal or its ratio is not finite, or the proposal leaves the bound."""

    accepted: np.ndarray
    log_alpha: np.ndarray
    diverged: np.ndarray


class KineticInfo(NamedTuple):
    """What a kinetic step did: ``diverged`` (c,), the new positions or momenta are not finite or
    leave the bound."""

    diverged: np.ndarray


def _diverged(*arrays) -> np.ndarray:
    """Rows where any of ``arrays`` (c, d) holds a non-finite value or one beyond GROWTH_BOUND."""
    with np.errstate(invalid="ignore"):
        bad = [~np.all(np.isfinite(a) & (np.abs(a) <= GROWTH_BOUND), axis=-1) for a in arrays]
    return np.logical_or.reduce(bad)


def _positions(position, dim, name="position") -> np.ndarray:
    """A validated copy of initial states (c, dim)."""
    x = as_float_array(position, name)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (c, {dim}) with c >= 1, got shape {np.shape(position)}")
    check_finite(name, x)
    return np.array(x, dtype=float, copy=True)


def _state_position(state, cls) -> np.ndarray:
    if not isinstance(state, cls):
        raise TypeError(f"state must be a {cls.__name__} (from init), got {type(state).__name__}")
    return state.position


def _dim(target) -> int:
    if not hasattr(target, "score") or not hasattr(target, "dim"):
        raise TypeError(f"target must have score(...) and dim (a distribution or model.bind(theta)), "
                        f"got {type(target).__name__}")
    return int(target.dim)


# ------------------------------------------------------------------ the overdamped samplers
def ula_kernel(target, step) -> SingleStep:
    r"""ULA one step at a time: :math:`x \leftarrow x + \eta\, s(x) + \sqrt{2\eta}\, z` (eq. (4)).

    Parameters
    ----------
    target : distribution or ``model.bind(theta)``
        Has ``score(x)`` and ``dim``.
    step : float > 0
        :math:`\eta`.

    Returns
    -------
    SingleStep
        ``init(position (c, d)) -> LangevinState``; ``step(state, key) -> (LangevinState, LangevinInfo)``
        with ``z = key.normal(c, d)``: :func:`.steps.ula_update`.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import Gaussian
    >>> from refscore.sampling.single_step import CounterKey, ula_kernel
    >>> k = ula_kernel(Gaussian(np.zeros(1), np.eye(1)), 0.5)
    >>> state, info = k.step(k.init(np.zeros((2, 1))), CounterKey(0))
    >>> state.position.shape, info.eta, bool(info.diverged.any())
    ((2, 1), 0.5, False)
    """
    d = _dim(target)
    eta = check_positive("step", step)

    def init(position) -> LangevinState:
        return LangevinState(_positions(position, d))

    def one(state, key):
        x, key = _state_position(state, LangevinState), _key(key)
        x1 = ula_update(x, target.score, eta, key.normal(x.shape[0], d))
        return LangevinState(x1), LangevinInfo(eta, None, _diverged(x1))

    return SingleStep(init, one)


def mala_kernel(target, step) -> SingleStep:
    r"""MALA one step at a time: the proposal of eq. (4), accepted iff :math:`\log u < \log\alpha` (§8.3).

    Parameters
    ----------
    target : distribution or ``model.bind(theta)``
        Has ``score(x)``, ``logpdf(x)`` and ``dim``.
    step : float > 0

    Returns
    -------
    SingleStep
        ``step(state, key) -> (LangevinState, MALAInfo)``: :func:`.steps.mala_step` with
        ``z = key.normal(c, d)`` and ``u = key.uniform(c)`` (its three functions, called in its
        order, so that the proposal is at hand for ``info.diverged``).  A rejected chain keeps its
        state.
    """
    d = _dim(target)
    eta = check_positive("step", step)
    if not callable(getattr(target, "logpdf", None)):
        raise TypeError(f"mala needs a target with logpdf(x), got {type(target).__name__}")

    def init(position) -> LangevinState:
        return LangevinState(_positions(position, d))

    def one(state, key):
        x, key = _state_position(state, LangevinState), _key(key)
        n = x.shape[0]
        with np.errstate(all="ignore"):  # mala_step's three functions, keeping the proposal for info
            s_x = target.score(x)
            y = langevin_step(x, s_x, eta, key.normal(n, d))
            log_alpha = mala_log_alpha(x, y, s_x, target.score(y), target.logpdf(x), target.logpdf(y), eta)
            accepted = mala_accept(log_alpha, key.uniform(n))
        x1 = np.where(accepted[:, None], y, x)
        return LangevinState(x1), MALAInfo(accepted, log_alpha, _diverged(y) | ~np.isfinite(log_alpha))

    return SingleStep(init, one)


def annealed_kernel(target, sigmas, step, steps_per_level) -> SingleStep:
    r"""Annealed Langevin one step at a time: level ``l = key.step // steps_per_level`` (§8.4).

    .. math::

        x \leftarrow x + \eta_l\, s(x, \sigma_l) + \sqrt{2\eta_l}\, z, \qquad
        \eta_l = \text{step}\,\sigma_l^2/\sigma_L^2

    The counter step runs globally across the levels, as in
    :func:`refscore.sampling.annealed_langevin`: step ``t = l T + j`` is step ``j`` of level ``l``.

    Parameters
    ----------
    target : ``dist.perturbed()`` or ``NoiseConditional(model).bind(theta)``
        Has ``score(x, sigma)`` and ``dim``.
    sigmas : array (L,), strictly decreasing, > 0
    step : float > 0
        The step at the smallest level.
    steps_per_level : int >= 1
        :math:`T`.

    Returns
    -------
    SingleStep
        ``step(state, key) -> (LangevinState, LangevinInfo)``; a key beyond the last level
        (``key.step >= L T``) raises ``ValueError``.
    """
    d = _dim(target)
    levels = [float(s) for s in check_sigmas(sigmas)]
    etas = annealed_level_steps(step, levels)
    T = check_int("steps_per_level", steps_per_level, 1)

    def init(position) -> LangevinState:
        return LangevinState(_positions(position, d))

    def one(state, key):
        x, key = _state_position(state, LangevinState), _key(key)
        level = key.step // T
        if level >= len(levels):
            raise ValueError(f"key.step must be below {len(levels)} levels x {T} steps = {len(levels) * T} (the "
                             f"counter runs across the levels), got {key.step}")
        sigma = levels[level]
        x1 = langevin_step(x, target.score(x, sigma), float(etas[level]), key.normal(x.shape[0], d))
        return LangevinState(x1), LangevinInfo(float(etas[level]), sigma, _diverged(x1))

    return SingleStep(init, one)


# ------------------------------------------------------------------ kinetic Langevin
def baoab_update(x, v, score, step, friction, xi):
    r"""One BAOAB step in the ``step_fn`` form (unit mass): :func:`.kinetic.baoab_step`.

    Parameters
    ----------
    x, v : ndarray (c, d)
        Positions :math:`q` and momenta :math:`p`.
    score : callable
        ``(c, d) -> (c, d)``.
    step : float > 0
        :math:`h`.
    friction : float >= 0
        :math:`\gamma`.
    xi : ndarray (c, 2 d)
        This step's normals; BAOAB's one **O** takes ``xi[:, :d]``.

    Returns
    -------
    x_next, v_next : ndarray (c, d)
    """
    return baoab_step(x, v, score, step, friction, xi)


def obabo_update(x, v, score, step, friction, xi):
    r"""One OBABO step in the ``step_fn`` form (unit mass): :func:`.kinetic.obabo_step`; its first **O**
    takes ``xi[:, :d]``, its second ``xi[:, d:]`` (see :func:`baoab_update` for the arguments)."""
    return obabo_step(x, v, score, step, friction, xi)


def aboba_update(x, v, score, step, friction, xi):
    r"""One ABOBA step in the ``step_fn`` form (unit mass): :func:`.kinetic.aboba_step` (see
    :func:`baoab_update` for the arguments)."""
    return aboba_step(x, v, score, step, friction, xi)


#: splitting name -> the pure step of :mod:`refscore.sampling.kinetic` with that word
KINETIC_STEPS = {"BAOAB": baoab_step, "OBABO": obabo_step, "ABOBA": aboba_step}


def kinetic_kernel(target, step, friction, splitting="BAOAB", mass=1.0) -> SingleStep:
    r"""Kinetic Langevin one step at a time by ``splitting`` (docs/derivations.md §8.6).

    .. math::

        dq = \frac pm\,dt, \qquad dp = s(q)\,dt - \gamma p\,dt + \sqrt{2\gamma m}\,dW

    Parameters
    ----------
    target : distribution or ``model.bind(theta)``
        Has ``score(x)`` and ``dim``.
    step : float > 0
        :math:`h`.
    friction : float >= 0
        :math:`\gamma`.
    splitting : {"BAOAB", "OBABO", "ABOBA"}
    mass : float > 0

    Returns
    -------
    SingleStep
        ``init(position, key=None, momentum=None) -> KineticState``: give the momenta, or a key
        whose seed and chain draw :math:`p_0 = \sqrt m\,` ``noise.normal(seed, chain + i,
        INITIAL_MOMENTUM_STEP, d)`` (:func:`~refscore.sampling.kinetic.kinetic_langevin`'s default,
        bit for bit).  ``step(state, key) -> (KineticState, KineticInfo)``: the splitting's pure
        step with ``xi = key.normal(c, 2 d)``.
    """
    d = _dim(target)
    h = check_positive("step", step)
    if isinstance(friction, (bool, np.bool_)) or not isinstance(friction, numbers.Real) or not (
            math.isfinite(friction) and friction >= 0):
        raise ValueError(f"friction must be a finite real number >= 0, got {friction!r}")
    if splitting not in KINETIC_STEPS:
        raise ValueError(f"splitting must be one of {list(KINETIC_STEPS)}, got {splitting!r}")
    m = check_positive("mass", mass)
    pure = KINETIC_STEPS[splitting]

    def init(position, key=None, momentum=None) -> KineticState:
        q = _positions(position, d)
        if (key is None) == (momentum is None):
            raise ValueError("give init either the momenta (momentum=) or a key (key=) to draw them, not both")
        if momentum is not None:
            p = _positions(momentum, d, "momentum")
            if p.shape != q.shape:
                raise ValueError(f"momentum must have the shape of position, {q.shape}, got {p.shape}")
        else:
            k = _key(key)
            p = math.sqrt(m) * NoiseOrigin(k.seed, k.chain).normal(q.shape[0], INITIAL_MOMENTUM_STEP, d)
        return KineticState(q, p)

    def one(state, key):
        if not isinstance(state, KineticState):
            raise TypeError(f"state must be a KineticState (from init), got {type(state).__name__}")
        key = _key(key)
        q, p = state
        q1, p1 = pure(q, p, target.score, h, friction, key.normal(q.shape[0], 2 * d), m)
        return KineticState(q1, p1), KineticInfo(_diverged(q1, p1))

    return SingleStep(init, one)
