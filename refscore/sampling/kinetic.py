r"""Kinetic (underdamped) Langevin dynamics: the BAOAB, OBABO and ABOBA splittings (NumPy reference).

The dynamics, at unit temperature, with mass :math:`m > 0` and friction :math:`\gamma \ge 0`:

.. math::

    dq = \frac{p}{m}\,dt, \qquad
    dp = s(q)\,dt - \gamma\, p\, dt + \sqrt{2\gamma m}\, dW, \qquad s = \nabla\log p_{\text{target}},

leave :math:`p_{\text{target}}(q)\,\mathcal N(p;\, 0, m I)` invariant.  A step of length :math:`h`
is a word in three exact sub-flows: the kick **B**, the drift **A** and the
Ornstein–Uhlenbeck momentum refresh **O**,

.. math::

    \mathrm B_\tau:\ p \leftarrow p + \tau\, s(q), \qquad
    \mathrm A_\tau:\ q \leftarrow q + \tau\, p / m, \qquad
    \mathrm O_\tau:\ p \leftarrow c_\tau\, p + \sqrt{m (1 - c_\tau^2)}\;\xi, \quad c_\tau = e^{-\gamma\tau}.

A letter that appears :math:`k` times in the word runs for :math:`\tau = h/k` each time:

==========  ================================================================================
splitting   one step of length :math:`h`
==========  ================================================================================
``BAOAB``   :math:`\mathrm B_{h/2}\,\mathrm A_{h/2}\,\mathrm O_h\,\mathrm A_{h/2}\,\mathrm B_{h/2}`
``OBABO``   :math:`\mathrm O_{h/2}\,\mathrm B_{h/2}\,\mathrm A_h\,\mathrm B_{h/2}\,\mathrm O_{h/2}`
``ABOBA``   :math:`\mathrm A_{h/2}\,\mathrm B_{h/2}\,\mathrm O_h\,\mathrm B_{h/2}\,\mathrm A_{h/2}`
==========  ================================================================================

(read left to right, in the order they run).  The arithmetic, in this order on every backend:
``p + tau * s``, ``q + (tau / m) * p``, ``c * p + sigma * xi`` with
:math:`c = \exp(-\gamma\tau)` and :math:`\sigma = \sqrt{-m\,\mathrm{expm1}(-2\gamma\tau)}`
(``expm1`` keeps :math:`1 - c^2` accurate when :math:`\gamma\tau` is small).  The score is
evaluated once per step: BAOAB's and OBABO's last kick and the next step's first kick share
:math:`s(q_{k+1})`, and ABOBA's two kicks share :math:`s` at the midpoint.

Noise.  Step :math:`k` of chain ``c`` draws :math:`\xi_k = ` ``noise.normal(seed, c, k, 2 * d)``
(stream 0, :mod:`refscore.noise`); the first **O** of the step takes ``xi[:d]``, OBABO's second
**O** takes ``xi[d:]``.  BAOAB and ABOBA use the first half only, and draw just
``noise.normal(seed, c, k, d)``, which is the same numbers (a coordinate's value does not depend on
``dim``).  The default initial momenta are :math:`p_0 = \sqrt m\,` ``noise.normal(seed, c,``
:data:`INITIAL_MOMENTUM_STEP` ``, d)``, the last counter value, which no update uses (a run's
updates use steps ``0 .. n_steps - 1 < 2**32 - 1``).

Exact laws on a Gaussian target (docs/derivations.md §8.6).  For
:math:`N(\mu, \Sigma)`, :math:`s(q) = -P(q - \mu)`, :math:`P = \Sigma^{-1}`, every sub-flow is
affine in :math:`z = (q, p)`, so a step is :math:`z_{k+1} = M z_k + c + L \xi_k`
(:func:`kinetic_step_matrices`), the law stays Gaussian, and its moments follow

.. math::

    m_{k+1} = M m_k + c, \qquad S_{k+1} = M S_k M^\top + L L^\top

(:func:`kinetic_transient_law`); when the spectral radius of :math:`M` is below 1 the fixed point
is the stationary law, :math:`S = M S M^\top + L L^\top`, a discrete Lyapunov equation
(:func:`kinetic_stationary_law`), with mean :math:`(\mu, 0)` (every sub-flow fixes it).

In one dimension, :math:`P = \omega^2`, write :math:`\epsilon = h^2\omega^2 / (4m)`.  All three
maps have :math:`\det M = e^{-\gamma h}` and :math:`\operatorname{tr} M = (1 + e^{-\gamma h})(1 - 2\epsilon)`,
so (Jury's test for a 2×2 matrix, :math:`|\det M| < 1` and :math:`|\operatorname{tr} M| < 1 + \det M`)
the spectral radius is below 1 exactly when :math:`\gamma > 0` and :math:`h\,\omega < 2\sqrt m`;
in :math:`d` dimensions the map splits along the eigenvectors of :math:`P`, and the condition is
:math:`\gamma > 0`, :math:`h\sqrt{\lambda_{\max}(P)/m} < 2`.  The stationary covariances follow by
pushing a candidate through the sub-flows one by one and seeing it return (the fixed point is
unique).  BAOAB: start from :math:`\mathrm{Var}\, q = 1/\omega^2`, :math:`\mathrm{Var}\, p = m(1 - \epsilon)`,
uncorrelated.  :math:`\mathrm B_{h/2}` gives :math:`\mathrm{Var}\, p = m`,
:math:`\mathrm{Cov}(q, p) = -h/2`; :math:`\mathrm A_{h/2}` gives
:math:`\mathrm{Var}\, q = (1 - \epsilon)/\omega^2`, :math:`\mathrm{Cov} = 0`, :math:`\mathrm{Var}\, p = m`,
which **O** leaves as it is (its :math:`p` is :math:`N(0, m)` and independent of :math:`q`);
:math:`\mathrm A_{h/2}\mathrm B_{h/2}` mirror the first two back.  ABOBA the same way from
:math:`\mathrm{Var}\, p = m/(1 - \epsilon)`: :math:`\mathrm A_{h/2}\mathrm B_{h/2}` reach
:math:`\mathrm{Var}\, q = 1/(\omega^2(1 - \epsilon))`, :math:`\mathrm{Var}\, p = m`, uncorrelated.
OBABO: **O** keeps :math:`\mathrm{Var}\, p = m` (uncorrelated), and the velocity Verlet step
:math:`\mathrm B_{h/2}\mathrm A_h\mathrm B_{h/2}` preserves the quadratic form
:math:`\omega^2(1 - \epsilon)\, q^2 + p^2/m`, hence the Gaussian
:math:`\mathrm{Var}\, q = 1/(\omega^2(1 - \epsilon))`, :math:`\mathrm{Var}\, p = m`.  So

.. math::

    \begin{aligned}
    \text{BAOAB:}&\quad \omega^2\,\mathrm{Var}\, q = 1, && \mathrm{Var}\, p = m\,(1 - \epsilon),\\
    \text{OBABO:}&\quad \omega^2\,\mathrm{Var}\, q = 1/(1 - \epsilon), && \mathrm{Var}\, p = m,\\
    \text{ABOBA:}&\quad \omega^2\,\mathrm{Var}\, q = 1, && \mathrm{Var}\, p = m/(1 - \epsilon),
    \end{aligned}

with :math:`\mathrm{Cov}(q, p) = 0`, whatever the friction; in :math:`d` dimensions replace
:math:`\omega^2` by :math:`P` (the covariances are functions of :math:`P`, e.g. BAOAB's
:math:`\Sigma_{pp} = m I - h^2 P/4`).  BAOAB and ABOBA sample the positions' law exactly on a
Gaussian; OBABO the momenta's.

Divergence, as for the other samplers (docs/derivations.md §8.5): a chain whose new
:math:`(q, p)` holds a non-finite value or a coordinate beyond
:data:`refscore.sampling.GROWTH_BOUND` keeps its last state, is not updated again, and is flagged.

Backends.  :func:`kinetic_langevin` runs on every sampler backend
(:mod:`refscore.sampling.backends`, :mod:`refscore.sampling.dask_backend`): ``"numpy"`` runs
:meth:`Splitting.run_reference` below, ``"numba"`` and ``"cuda"`` one compiled kernel that reads
the splitting's word at run time (:func:`refscore._kernels.cpu_sampler.kinetic`; a
:class:`~refscore.sampling.NumbaTarget` on :mod:`refscore._kernels.custom_sampler`), ``"dask"``
blocks of chains on either.  They run the arithmetic above in the same order with the same
noise, evaluate the score at the same points, and freeze the same chains: ``"dask"`` equals
``"numba"`` bit for bit, a run's result does not depend on how it is cut into chunks of steps
or blocks of chains, and the compiled backends differ from the reference only by the score's
own round-off (none for a :class:`~refscore.sampling.NumbaTarget` whose score is the same
compiled function on both; all tested).  The state carried from one chunk to the next is
:math:`(q, p)`; a chunk recomputes :math:`s(q)` for its first kick, which gives the same bits
as the value the previous chunk held (the score is a deterministic function of :math:`q`).

References
----------
B. Leimkuhler, C. Matthews, "Rational construction of stochastic numerical methods for molecular
sampling", Appl. Math. Res. Express 2013 — BAOAB and its exact configurational marginal on
harmonic potentials.  G. Bussi, M. Parrinello, Phys. Rev. E 75 (2007) — OBABO.

Examples
--------
>>> import numpy as np
>>> from refscore.sampling.kinetic import kinetic_stationary_law
>>> mean, cov = kinetic_stationary_law([[4.0]], [0.0], 0.5, 1.0, "BAOAB")
>>> np.round(np.diag(cov), 12)  # Var q = 1/omega^2, Var p = 1 - h^2 omega^2 / 4
array([0.25, 0.75])
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .._kernels.score_blocks import DRIFT, GROWTH_BOUND, KICK, REFRESH
from .._validation import as_float_array, check_finite, check_int, check_positive
from ..noise import NoiseOrigin
from ._runs import (DivergenceWarning, SamplerResult, _check_record, _check_target, _check_x0, _precheck,
                    _reported, _runner)
from .reference import _beyond, _freeze, _shaped
from .targets import linear_score_precisions

__all__ = ["SPLITTINGS", "INITIAL_MOMENTUM_STEP", "Splitting", "KineticResult", "baoab_step", "obabo_step",
           "aboba_step", "kinetic_langevin", "kinetic_step_matrices", "kinetic_stationary_law",
           "kinetic_transient_law"]

#: the noise step index of the default initial momenta (the last counter value; no update draws it)
INITIAL_MOMENTUM_STEP = 2 ** 32 - 1

#: relative asymmetry tolerated in a precision or covariance matrix: the round-off of one computed in float64
_SYMMETRY_RTOL = 1e-10


# ------------------------------------------------------------------ validation
def _check_friction(friction) -> float:
    if isinstance(friction, (bool, np.bool_)) or not isinstance(friction, numbers.Real):
        raise TypeError(f"friction must be a real number >= 0, got {type(friction).__name__}")
    g = float(friction)
    if not math.isfinite(g) or g < 0.0:
        raise ValueError(f"friction must be finite and >= 0, got {friction!r}")
    return g


def _check_splitting(splitting) -> str:
    if not isinstance(splitting, str):
        raise TypeError(f"splitting must be one of {list(SPLITTINGS)}, got {type(splitting).__name__}")
    if splitting not in SPLITTINGS:
        raise ValueError(f"splitting must be one of {list(SPLITTINGS)}, got {splitting!r}")
    return splitting


def _check_symmetric(name, a, psd, strict):
    """``a`` checked square, finite, symmetric to round-off, and positive (semi-)definite."""
    arr = as_float_array(a, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise ValueError(f"{name} must be a square matrix (d, d) with d >= 1, got shape {arr.shape}")
    check_finite(name, arr)
    scale = float(np.max(np.abs(arr))) if arr.size else 0.0
    if np.max(np.abs(arr - arr.T)) > _SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} must be symmetric (to {_SYMMETRY_RTOL:g} of its largest entry), "
                         f"got max |a - a.T| = {np.max(np.abs(arr - arr.T)):.3g}")
    if psd:
        lam = np.linalg.eigvalsh(0.5 * (arr + arr.T))
        if (lam[0] <= 0.0) if strict else (lam[0] < -_SYMMETRY_RTOL * scale):
            what = "positive definite" if strict else "positive semi-definite"
            raise ValueError(f"{name} must be {what}, got smallest eigenvalue {lam[0]:.6g}")
    return arr


def _check_vector(name, v, n):
    arr = as_float_array(v, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got shape {arr.shape}")
    check_finite(name, arr)
    return arr


# ------------------------------------------------------------------ the sub-flows
#: a letter of a splitting -> its code in the compiled kernels' word (:mod:`refscore._kernels.score_blocks`)
_LETTER_CODES = {"B": KICK, "A": DRIFT, "O": REFRESH}


@dataclass(frozen=True)
class Splitting:
    r"""One step of a splitting with its numbers: what every backend's kinetic run is handed.

    Made by :meth:`of` (a letter appearing :math:`k` times in the word runs for
    :math:`\tau = h / k`); the backends read the word and the four numbers
    (:meth:`.backends.SamplerBackend.kinetic`), the NumPy backend runs :meth:`run_reference`.

    Attributes
    ----------
    word : str
        The splitting's letters, in the order they run (``"BAOAB"``, ``"OBABO"``, ``"ABOBA"``).
    kick : float
        :math:`\tau` of each B.
    drift : float
        :math:`\tau / m` of each A.
    decay : float
        :math:`c = e^{-\gamma\tau}` of each O.
    spread : float
        :math:`\sigma = \sqrt{-m\,\mathrm{expm1}(-2\gamma\tau)}` of each O.
    """

    word: str
    kick: float
    drift: float
    decay: float
    spread: float

    @classmethod
    def of(cls, splitting, step, friction, mass=1.0) -> "Splitting":
        r"""The step of ``splitting`` (``"BAOAB"``, ``"OBABO"``, ``"ABOBA"``) with ``step`` :math:`h`,
        ``friction`` :math:`\gamma` and ``mass`` :math:`m`, each checked as :func:`kinetic_langevin` does.

        Examples
        --------
        >>> from refscore.sampling.kinetic import Splitting
        >>> Splitting.of("OBABO", 0.5, 0.0, mass=2.0)
        Splitting(word='OBABO', kick=0.25, drift=0.25, decay=1.0, spread=0.0)
        """
        return _coefficients(_check_splitting(splitting), check_positive("step", step), _check_friction(friction),
                             check_positive("mass", mass))

    @property
    def letters(self) -> np.ndarray:
        """The word as the compiled kernels read it: int64 codes ``KICK``, ``DRIFT``, ``REFRESH``."""
        return np.array([_LETTER_CODES[letter] for letter in self.word], dtype=np.int64)

    def run_reference(self, score, n_steps, x, v, origin, rec, trace, p_trace, status):
        """The NumPy reference run, in place on positions ``x`` and momenta ``v`` (n, d).

        ``score`` is the target's NumPy score ``(n, d) -> (n, d)``; ``origin`` a
        :class:`~refscore.noise.NoiseOrigin` (row ``i`` is chain ``origin.chain0 + i``, the first
        step global step ``origin.step0``); ``trace`` and ``p_trace`` (n_rec, n, d) receive the
        positions and momenta after global step ``(j + 1) rec``; ``status`` (n,) int8 as in
        :mod:`.reference`.  Iterates the pure step (:func:`baoab_step`, ...) on the counter noise,
        one score evaluation per step, and freezes diverging chains.
        """
        _kinetic(score, self, n_steps, x, v, origin, rec, trace, p_trace, status)


def _coefficients(splitting, step, friction, mass) -> Splitting:
    """Each letter appearing k times in the word runs for step / k."""
    tau = {letter: step / splitting.count(letter) for letter in "BAO"}
    return Splitting(splitting, tau["B"], tau["A"] / mass, math.exp(-friction * tau["O"]),
                     math.sqrt(-mass * math.expm1(-2.0 * friction * tau["O"])))


def _run_word(k: Splitting, q, p, s, score, xis):
    """One step of ``k.word`` from ``(q, p)``; ``s`` is ``score(q)`` or ``None`` (not yet known).

    Returns ``(q, p, s)`` with ``s`` the score at the new ``q``, or ``None`` when the word ends
    with a drift.  ``xis`` holds the draws of the O letters, in order.
    """
    o = 0
    for letter in k.word:
        if letter == "B":
            if s is None:
                s = score(q)
            p = p + k.kick * s
        elif letter == "A":
            q = q + k.drift * p
            s = None
        else:
            p = k.decay * p + k.spread * xis[o]
            o += 1
    return q, p, s


def _step(splitting, q, p, score, step, friction, xi, mass):
    """The public steps' validation, then :func:`_run_word`."""
    h = check_positive("step", step)
    g = _check_friction(friction)
    m = check_positive("mass", mass)
    q = as_float_array(q, "q")
    if q.ndim < 1:
        raise ValueError(f"q must have a last axis of coordinates (..., d), got shape {q.shape}")
    d = q.shape[-1]
    for name, value, want in (("p", p, q.shape), ("xi", xi, q.shape[:-1] + (2 * d,))):
        if np.shape(value) != want:
            raise ValueError(f"{name} must have shape {want}, got {np.shape(value)}")
    p, xi = as_float_array(p, "p"), as_float_array(xi, "xi")
    q1, p1, _ = _run_word(_coefficients(splitting, h, g, m), q, p, None,
                          lambda v: _shaped(score(v), v.shape, "score(q)"), (xi[..., :d], xi[..., d:]))
    return q1, p1


_STEP_PARAMETERS = r"""
    Parameters
    ----------
    q, p : ndarray (..., d)
        Positions and momenta.
    score : callable
        ``(..., d) -> (..., d)``, :math:`s = \nabla\log p_{\text{target}}`.
    step : float > 0
        :math:`h`.
    friction : float >= 0
        :math:`\gamma`.
    xi : ndarray (..., 2 d)
        This step's normals, ``noise.normal(seed, chain, k, 2 * d)``: the first **O** takes
        ``xi[..., :d]``{second}.
    mass : float > 0
        :math:`m` (momenta are :math:`N(0, m I)` at equilibrium).

    Returns
    -------
    q_next, p_next : ndarray (..., d)
        No divergence test: that is the sampler's.
"""


def baoab_step(q, p, score, step, friction, xi, mass=1.0):
    return _step("BAOAB", q, p, score, step, friction, xi, mass)


def obabo_step(q, p, score, step, friction, xi, mass=1.0):
    return _step("OBABO", q, p, score, step, friction, xi, mass)


def aboba_step(q, p, score, step, friction, xi, mass=1.0):
    return _step("ABOBA", q, p, score, step, friction, xi, mass)


baoab_step.__doc__ = r"""One BAOAB step, :math:`\mathrm B_{h/2}\mathrm A_{h/2}\mathrm O_h\mathrm A_{h/2}\mathrm B_{h/2}`.

    .. math::

        \begin{aligned}
        p' &= p + \tfrac h2 s(q), & q' &= q + \tfrac h{2m} p', &
        p'' &= c_1 p' + \sqrt{m(1 - c_1^2)}\,\xi_{1:d},\\
        q_{k+1} &= q' + \tfrac h{2m} p'', & p_{k+1} &= p'' + \tfrac h2 s(q_{k+1}), &
        c_1 &= e^{-\gamma h}.
        \end{aligned}
""" + _STEP_PARAMETERS.replace("{second}", " (the second half is unused)") + r"""
    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.kinetic import baoab_step
    >>> baoab_step(np.array([[1.0]]), np.array([[0.5]]), lambda q: -q, 0.5, 0.0, np.zeros((1, 2)))
    (array([[1.125]]), array([[-0.03125]]))
"""

obabo_step.__doc__ = r"""One OBABO step, :math:`\mathrm O_{h/2}\mathrm B_{h/2}\mathrm A_h\mathrm B_{h/2}\mathrm O_{h/2}`.

    .. math::

        \begin{aligned}
        p' &= c_1 p + \sqrt{m(1 - c_1^2)}\,\xi_{1:d}, & p'' &= p' + \tfrac h2 s(q), &
        q_{k+1} &= q + \tfrac hm p'',\\
        p''' &= p'' + \tfrac h2 s(q_{k+1}), & p_{k+1} &= c_1 p''' + \sqrt{m(1 - c_1^2)}\,\xi_{d+1:2d}, &
        c_1 &= e^{-\gamma h/2}.
        \end{aligned}
""" + _STEP_PARAMETERS.replace("{second}", ", the second ``xi[..., d:]``") + r"""
    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.kinetic import obabo_step
    >>> obabo_step(np.array([[1.0]]), np.array([[0.5]]), lambda q: -q, 0.5, 0.0, np.zeros((1, 2)))
    (array([[1.125]]), array([[-0.03125]]))
"""

aboba_step.__doc__ = r"""One ABOBA step, :math:`\mathrm A_{h/2}\mathrm B_{h/2}\mathrm O_h\mathrm B_{h/2}\mathrm A_{h/2}`.

    .. math::

        \begin{aligned}
        q' &= q + \tfrac h{2m} p, & p' &= p + \tfrac h2 s(q'), &
        p'' &= c_1 p' + \sqrt{m(1 - c_1^2)}\,\xi_{1:d},\\
        p_{k+1} &= p'' + \tfrac h2 s(q'), & q_{k+1} &= q' + \tfrac h{2m} p_{k+1}, &
        c_1 &= e^{-\gamma h}.
        \end{aligned}
""" + _STEP_PARAMETERS.replace("{second}", " (the second half is unused)") + r"""
    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.kinetic import aboba_step
    >>> aboba_step(np.array([[1.0]]), np.array([[0.5]]), lambda q: -q, 0.5, 0.0, np.zeros((1, 2)))
    (array([[1.109375]]), array([[-0.0625]]))
"""

#: splitting name -> its pure step function
SPLITTINGS = {"BAOAB": baoab_step, "OBABO": obabo_step, "ABOBA": aboba_step}


# ------------------------------------------------------------------ the whole run
@dataclass
class KineticResult(SamplerResult):
    """Output of :func:`kinetic_langevin`: a :class:`~refscore.sampling.SamplerResult` with the momenta.

    Attributes
    ----------
    x, diverged, trace
        As in :class:`~refscore.sampling.SamplerResult`: final positions, divergence flags,
        positions every ``record`` steps (``accept_rate`` and ``reduced`` are ``None``).
    momentum : ndarray (n, d)
        Final momenta (for diverged chains: their last momenta inside the bound).
    momentum_trace : ndarray (n_steps // record, n, d) or None
        The momenta at the steps of ``trace``.
    """

    momentum: np.ndarray | None = None
    momentum_trace: np.ndarray | None = None


def _warn_unstable(target, step, mass):
    """Warn before a run whose step is beyond the stability bound of a linear score (see the module)."""
    precisions = linear_score_precisions(target)
    if precisions is None:
        return
    lam = np.linalg.eigvalsh(precisions[0])
    if lam[0] <= 0.0 or step * math.sqrt(lam[-1] / mass) < 2.0:  # not a Gaussian, or stable
        return
    warnings.warn(
        f"kinetic_langevin: step {step:.6g} is not below the stability bound for this target: its score is "
        f"linear, s(x) = -P (x - m), with lambda_max(P) = {lam[-1]:.6g}, and every splitting is stable only for "
        f"step * sqrt(lambda_max(P) / mass) < 2, here {step * math.sqrt(lam[-1] / mass):.6g}, i.e. "
        f"step < {2.0 * math.sqrt(mass / lam[-1]):.6g}; the chains will grow until they are frozen and flagged "
        "diverged", DivergenceWarning, stacklevel=3)


def kinetic_langevin(target, x0, step, n_steps, friction, seed, splitting="BAOAB", mass=1.0, v0=None,
                     record=None, backend="numpy", progress=None, client=None, block_chains=None) -> KineticResult:
    r"""Kinetic (underdamped) Langevin dynamics by the splitting ``splitting`` (see the module).

    .. math::

        dq = \frac{p}{m}\,dt, \qquad dp = s(q)\,dt - \gamma\, p\, dt + \sqrt{2\gamma m}\, dW

    One step is :func:`~refscore.sampling.kinetic.baoab_step`, :func:`~refscore.sampling.kinetic.obabo_step`
    or :func:`~refscore.sampling.kinetic.aboba_step` with
    ``xi = noise.normal(seed, chain, k, 2 * d)`` at step ``k``; the run equals iterating that
    function bit for bit (tested), evaluating the score once per step.

    Parameters
    ----------
    target : distribution or ``model.bind(theta)``
        Anything with ``score(x)`` and ``dim``.
    x0 : array (n, d)
        Initial positions, one row per chain (chain ``c`` draws noise stream ``c``).
    step : float > 0
        :math:`h`.
    n_steps : int, 0 <= n_steps < 2**32
    friction : float >= 0
        :math:`\gamma` (0: Hamiltonian dynamics by velocity or position Verlet, no noise).
    seed : int in [0, 2**64)
    splitting : {"BAOAB", "OBABO", "ABOBA"}
    mass : float > 0
        :math:`m`, the same for every coordinate.
    v0 : array (n, d), optional
        Initial momenta :math:`p_0` (momenta, not velocities: :math:`v = p/m`).  Default
        :math:`\sqrt m\,` ``noise.normal(seed, chain, INITIAL_MOMENTUM_STEP, d)``, a draw of
        :math:`N(0, m I)` from a counter no update uses.
    record : int, optional
        Keep the positions and momenta every ``record`` steps.
    backend : {"numpy", "numba", "cuda", "dask"} or a backend object
        As in :func:`refscore.sampling.ula` (the module says what agrees bit for bit).  The
        compiled backends run the targets with a compiled score (distributions,
        ``model.bind(theta)``, a :class:`~refscore.sampling.NumbaTarget` on ``"numba"``);
        ``"numpy"`` also any object with ``score(x)`` and ``dim``.
    progress : bool, optional
        A progress bar on stderr, as in :func:`refscore.sampling.ula`.
    client, block_chains : optional, deprecated
        As in :func:`refscore.sampling.ula`: pass ``backend=DaskBackend(client=..., block_chains=...)``.

    Returns
    -------
    KineticResult

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, within about a quarter of a second on every backend (the run advances in
        chunks of steps; the result does not depend on the chunking); the states are discarded.
    TypeError
        For a backend object without a ``kinetic`` method, or a target the backend cannot run.

    Warns
    -----
    DivergenceWarning
        Before the run, on a linear score whose step is beyond the stability bound; after it,
        when chains diverged (frozen and flagged in ``diverged``).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import Gaussian
    >>> from refscore.sampling.kinetic import kinetic_langevin
    >>> res = kinetic_langevin(Gaussian(np.zeros(2), np.eye(2)), np.zeros((4, 2)), 0.2, 10, 1.0, seed=0)
    >>> res.x.shape, res.momentum.shape, bool(res.diverged.any())
    ((4, 2), (4, 2), False)
    """
    d = _check_target(target, "kinetic_langevin")
    runner = _runner(backend, client, block_chains, None, "kinetic_langevin")
    if not callable(getattr(runner, "kinetic", None)):
        raise TypeError(f"kinetic_langevin needs a backend with a kinetic method (see "
                        f"refscore.sampling.backends.SamplerBackend), got {runner!r}")
    x = _check_x0(x0, d)
    _precheck(target, x)
    n = x.shape[0]
    h = check_positive("step", step)
    n_steps = check_int("n_steps", n_steps, 0)
    if n_steps > INITIAL_MOMENTUM_STEP:
        raise ValueError(f"n_steps must be <= 2**32 - 1 (the updates use noise steps 0 .. n_steps - 1; step 2**32 - 1 "
                         f"draws the initial momenta), got {n_steps}")
    g = _check_friction(friction)
    splitting = _check_splitting(splitting)
    m = check_positive("mass", mass)
    origin = NoiseOrigin(seed)
    if v0 is None:
        v = math.sqrt(m) * origin.normal(n, INITIAL_MOMENTUM_STEP, d)
    else:
        v = as_float_array(v0, "v0")
        if v.shape != x.shape:
            raise ValueError(f"v0 must have the shape of x0, ({n}, {d}), got shape {np.shape(v0)}")
        check_finite("v0", v)
        if np.any(np.abs(v) > GROWTH_BOUND):
            raise ValueError(f"v0 must lie within |v_i| <= {GROWTH_BOUND:.0e} (the samplers' divergence bound), "
                             f"got max |v0| = {np.max(np.abs(v)):.3g}")
        v = np.array(v, dtype=float, order="C", copy=True)
    rec, n_rec = _check_record(record, n_steps)
    _warn_unstable(target, h, m)
    trace, p_trace = np.zeros((n_rec, n, d)), np.zeros((n_rec, n, d))
    status = np.zeros(n, dtype=np.int8)  # the backends write why a chain froze
    runner.kinetic(target, _coefficients(splitting, h, g, m), n_steps, x, v, origin, rec, trace, p_trace, status,
                   progress=progress)
    return _reported(KineticResult(x=x, diverged=status != 0, trace=trace if rec else None, momentum=v,
                                   momentum_trace=p_trace if rec else None), status)


def _kinetic(score, k, n_steps, x, v, origin, rec, trace, p_trace, status):
    """The NumPy reference run, in place on ``x``, ``v`` (n, d); ``status`` as in :mod:`.reference`."""
    n, d = x.shape
    n_noise = k.word.count("O") * d
    alive = status == 0

    def safe_score(q):
        # the score is only asked at finite points inside the bound (a diverging chain's own point otherwise)
        with np.errstate(all="ignore"):
            ok = np.all(np.isfinite(q), axis=1) & ~np.any(np.abs(q) > GROWTH_BOUND, axis=1)
        return _shaped(score(np.where(ok[:, None], q, x)), (n, d), "target.score(x)")

    s = None  # evaluated by the first kick that needs it
    for t in range(origin.step0, origin.step0 + n_steps):
        xi = origin.normal(n, t, n_noise)
        with np.errstate(all="ignore"):
            q1, p1, s1 = _run_word(k, x, v, s, safe_score, (xi[:, :d], xi[:, d:]))
            finite = np.all(np.isfinite(q1), axis=1) & np.all(np.isfinite(p1), axis=1)
            beyond = _beyond(q1, finite) | _beyond(p1, finite)
        ok = alive & finite & ~beyond
        _freeze(status, alive & ~ok, beyond)
        x[ok] = q1[ok]
        v[ok] = p1[ok]
        s = s1  # a frozen chain's score is never used again
        alive = ok
        if rec > 0 and (t + 1) % rec == 0:
            trace[(t + 1) // rec - 1] = x
            p_trace[(t + 1) // rec - 1] = v


# ------------------------------------------------------------------ exact laws on a Gaussian
def _affine_word(k: Splitting, precision, mean, d):
    """``(M, c, L)`` of ``k.word`` on the score ``-P (q - mu)``, composed sub-flow by sub-flow."""
    eye, zero = np.eye(d), np.zeros((d, d))
    M, c, L = np.eye(2 * d), np.zeros(2 * d), np.zeros((2 * d, 2 * d))
    o = 0
    for letter in k.word:
        if letter == "B":    # p += tau (-P q + P mu)
            F, N = np.block([[eye, zero], [-k.kick * precision, eye]]), None
            f = np.r_[np.zeros(d), k.kick * precision @ mean]
        elif letter == "A":  # q += (tau / m) p
            F, f, N = np.block([[eye, k.drift * eye], [zero, eye]]), np.zeros(2 * d), None
        else:                # p = c p + sigma xi_o
            F, f = np.block([[eye, zero], [zero, k.decay * eye]]), np.zeros(2 * d)
            N = np.zeros((2 * d, 2 * d))
            N[d:, o * d:(o + 1) * d] = k.spread * eye
            o += 1
        M, c, L = F @ M, F @ c + f, F @ L
        if N is not None:
            L = L + N
    return M, c, L


def kinetic_step_matrices(precision, mean, step, friction, splitting, mass=1.0):
    r"""One step on :math:`N(\mu, P^{-1})` as an affine map of :math:`z = (q, p)`: :math:`z' = M z + c + L\xi`.

    Parameters
    ----------
    precision : array (d, d)
        :math:`P`, symmetric positive definite; the score is :math:`s(q) = -P(q - \mu)`.
    mean : array (d,)
        :math:`\mu`.
    step : float > 0
    friction : float >= 0
    splitting : {"BAOAB", "OBABO", "ABOBA"}
    mass : float > 0

    Returns
    -------
    M : ndarray (2 d, 2 d)
    c : ndarray (2 d,)
    L : ndarray (2 d, 2 d)
        Applied to the step's :math:`\xi = ` ``noise.normal(seed, chain, k, 2 * d)``; its last
        ``d`` columns are zero for BAOAB and ABOBA (one **O** per step).

    Examples
    --------
    >>> from refscore.sampling.kinetic import kinetic_step_matrices
    >>> M, c, L = kinetic_step_matrices([[1.0]], [0.0], 0.5, 0.0, "BAOAB")
    >>> M
    array([[ 0.875  ,  0.5    ],
           [-0.46875,  0.875  ]])
    """
    P = _check_symmetric("precision", precision, psd=True, strict=True)
    d = P.shape[0]
    mu = _check_vector("mean", mean, d)
    k = _coefficients(_check_splitting(splitting), check_positive("step", step), _check_friction(friction),
                      check_positive("mass", mass))
    return _affine_word(k, P, mu, d)


def kinetic_stationary_law(precision, mean, step, friction, splitting, mass=1.0):
    r"""The stationary law of :math:`z = (q, p)` under a splitting on :math:`N(\mu, P^{-1})`.

    .. math::

        \bar z = (I - M)^{-1} c = (\mu, 0), \qquad S = M S M^\top + L L^\top

    (:func:`scipy.linalg.solve_discrete_lyapunov`; returned symmetrised).  Closed forms in the
    module: e.g. BAOAB's :math:`S_{qq} = P^{-1}`, :math:`S_{pp} = m I - h^2 P/4`.

    Parameters
    ----------
    precision, mean, step, friction, splitting, mass
        As in :func:`kinetic_step_matrices`.

    Returns
    -------
    mean : ndarray (2 d,)
    cov : ndarray (2 d, 2 d)

    Raises
    ------
    ValueError
        When the spectral radius of :math:`M` is not below 1 (no stationary law): friction 0,
        or :math:`h\sqrt{\lambda_{\max}(P)/m} \ge 2`.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.kinetic import kinetic_stationary_law
    >>> mean, cov = kinetic_stationary_law([[1.0]], [2.0], 1.0, 1.0, "OBABO")
    >>> np.round(mean, 12), np.round(np.diag(cov), 6)  # Var q = 1 / (1 - h^2 / 4)
    (array([2., 0.]), array([1.333333, 1.      ]))
    """
    M, c, L = kinetic_step_matrices(precision, mean, step, friction, splitting, mass)
    radius = float(np.max(np.abs(np.linalg.eigvals(M))))
    if radius >= 1.0:
        lam = float(np.linalg.eigvalsh(np.asarray(precision, dtype=float))[-1])
        bound = float(step) * math.sqrt(lam / float(mass))
        cause = ("friction is 0: the step is a volume-preserving Verlet map with no noise, whose law never "
                 "settles" if float(friction) == 0.0 else
                 f"step * sqrt(lambda_max(P) / mass) = {bound:.6g} is not below 2" if bound >= 2.0 else
                 f"friction * step = {float(friction) * float(step):.3g} is so small that the map does not "
                 "contract in float64")
        raise ValueError(f"the one-step map of {splitting} has spectral radius {radius:.17g} >= 1, so the chain "
                         f"has no stationary law: {cause}")
    n = M.shape[0]
    S = scipy.linalg.solve_discrete_lyapunov(M, L @ L.T)
    return np.linalg.solve(np.eye(n) - M, c), 0.5 * (S + S.T)


def kinetic_transient_law(precision, mean, step, friction, splitting, n_steps, start_mean, start_cov, mass=1.0):
    r"""The law of :math:`z_k = (q_k, p_k)` after ``n_steps`` steps from :math:`N(m_0, S_0)`.

    .. math::

        m_{j+1} = M m_j + c, \qquad S_{j+1} = M S_j M^\top + L L^\top, \qquad j = 0, \dots, k - 1

    Parameters
    ----------
    precision, mean, step, friction, splitting, mass
        As in :func:`kinetic_step_matrices`.
    n_steps : int >= 0
    start_mean : array (2 d,)
        :math:`m_0`, positions then momenta.
    start_cov : array (2 d, 2 d)
        :math:`S_0`, symmetric positive semi-definite (zeros for a fixed start).

    Returns
    -------
    mean : ndarray (2 d,)
    cov : ndarray (2 d, 2 d)

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.kinetic import kinetic_transient_law
    >>> mean, cov = kinetic_transient_law([[1.0]], [0.0], 0.5, 1.0, "BAOAB", 0, [1.0, 0.0], np.zeros((2, 2)))
    >>> mean
    array([1., 0.])
    """
    M, c, L = kinetic_step_matrices(precision, mean, step, friction, splitting, mass)
    n = M.shape[0]
    k = check_int("n_steps", n_steps, 0)
    m_j = np.array(_check_vector("start_mean", start_mean, n), copy=True)  # never the caller's arrays back
    S = np.array(_check_symmetric("start_cov", start_cov, psd=True, strict=False), copy=True)
    if S.shape != (n, n):
        raise ValueError(f"start_cov must have shape ({n}, {n}), got shape {S.shape}")
    LLt = L @ L.T
    for _ in range(k):
        m_j = M @ m_j + c
        S = M @ S @ M.T + LLt
    return m_j, S
