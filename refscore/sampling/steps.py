r"""The Langevin and MALA updates as pure NumPy functions, written once.

Derivation: docs/derivations.md §8.1 (the update), §8.3 (MALA), §8.4 (annealing).

These are the equations every sampler of refscore runs, as plain functions of
arrays: no noise is drawn here, no chain is frozen, nothing is updated in
place.  The NumPy reference backend (:mod:`.reference`) calls them on every
step, and the golden trajectory cases and their diagnosis compute with them,
so a sampler under test is compared with these lines and no copy of them.
The compiled kernels (:mod:`refscore._kernels.score_blocks`) transcribe the
same operations, in the same order, per coordinate.

=============================  ===============================================================
function                       equation
=============================  ===============================================================
:func:`langevin_step`          :math:`x + \eta\, s(x) + \sqrt{2\eta}\, z` (eq. (4), §8.1)
:func:`mala_log_alpha`         :math:`\log p(y) - \log p(x) - (\|x - y - \eta s(y)\|^2
                               - \|y - x - \eta s(x)\|^2) / (4\eta)` (§8.3)
:func:`mala_accept`            :math:`\log u < \log\alpha` (§8.3)
:func:`mala_step`              the three above: proposal, ratio, decision (one MALA step)
:func:`annealed_level_steps`   :math:`\eta_l = \text{step}\cdot\sigma_l^2/\sigma_L^2` (§8.4)
=============================  ===============================================================

Each sampler's whole step, in the form :func:`refscore.testing.assert_sampler_matches`
calls a ``step_fn`` (keyword arguments after ``x``; ``score`` and ``log_prob`` are
callables): the steps of the sampler registry
:data:`refscore.sampling.samplers.SAMPLERS`, and the contract a foreign sampler is held to.

=============================  ===============================================================
function                       one step of
=============================  ===============================================================
:func:`ula_update`             ULA: :func:`langevin_step` at ``score(x)``
:func:`mala_update`            MALA: :func:`mala_step`, returning ``(x_next, log_alpha)``
:func:`annealed_update`        annealed Langevin at level ``sigma``: :func:`langevin_step` at the
                               level's step of :func:`annealed_level_steps`
=============================  ===============================================================

The noise ``z`` and the uniforms ``u`` come from :mod:`refscore.noise`
(``normal(seed, chain, step, dim)``, ``uniform(seed, chain, step)``); with
them these functions reproduce a refscore run bit for bit (tested).

Examples
--------
>>> import numpy as np
>>> from refscore.sampling.steps import langevin_step
>>> x = np.array([[1.0, -2.0]])
>>> langevin_step(x, -x, 0.125, np.array([[0.0, 2.0]]))
array([[ 0.875, -0.75 ]])
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive, check_sigmas
from ..noise import log_unit

__all__ = ["langevin_step", "mala_log_alpha", "mala_accept", "mala_step", "annealed_level_steps",
           "ula_update", "mala_update", "annealed_update"]


def _shape_is(want, what, **arrays):
    """``ValueError`` naming the first of ``arrays`` whose shape is not ``want`` (described as ``what``)."""
    for name, value in arrays.items():
        if np.shape(value) != want:
            raise ValueError(f"{name} must have {what}, {want}, got {np.shape(value)}")


def langevin_step(x, score, step, z):
    r"""One Langevin update, eq. (4): :math:`x + \eta\, s(x) + \sqrt{2\eta}\, z`.

    .. math::

        x_{k+1} = x_k + \eta\, s(x_k) + \sqrt{2\eta}\, z_k

    The Euler–Maruyama step of :math:`dX = \nabla\log p(X)\,dt + \sqrt2\,dB`
    (docs/derivations.md §8.1); MALA's proposal is the same line.  Evaluated
    as ``(x + step * score) + sqrt(2 step) * z``, the order of every backend.

    Parameters
    ----------
    x : ndarray (..., d)
        Current states.
    score : ndarray, shape of ``x``
        :math:`s(x)`, the score at ``x`` (at the level's noise for annealing).
    step : float > 0
        :math:`\eta`.
    z : ndarray, shape of ``x``
        Standard normal noise (:func:`refscore.noise.normal`).

    Returns
    -------
    ndarray, shape of ``x``
        The new states (no divergence test: that is the samplers', §8.5).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import langevin_step
    >>> langevin_step(np.array([[2.0]]), np.array([[-2.0]]), 0.5, np.array([[1.0]]))
    array([[2.]])
    """
    eta = check_positive("step", step)
    _shape_is(np.shape(x), "the shape of x", score=score, z=z)
    return x + eta * score + math.sqrt(2.0 * eta) * z


def mala_log_alpha(x, y, score_x, score_y, logp_x, logp_y, step):
    r"""MALA's log acceptance ratio of the proposal ``y`` from ``x`` (docs/derivations.md §8.3).

    .. math::

        \log\alpha = \log p(y) - \log p(x)
          - \frac{\|x - y - \eta s(y)\|^2 - \|y - x - \eta s(x)\|^2}{4\eta}

    the Metropolis–Hastings ratio of the Gaussian proposal
    :math:`q(y \mid x) = \mathcal N(y;\, x + \eta s(x),\, 2\eta I)`.

    Parameters
    ----------
    x, y : ndarray (..., d)
        Current states and proposals.
    score_x, score_y : ndarray, shape of ``x``
        :math:`s(x)`, :math:`s(y)`.
    logp_x, logp_y : ndarray (...,)
        :math:`\log p(x)`, :math:`\log p(y)`, up to one common constant.
    step : float > 0
        :math:`\eta`.

    Returns
    -------
    ndarray (...,)
        :math:`\log\alpha` per state (not clipped at 0).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import mala_log_alpha
    >>> x, y = np.zeros((1, 1)), np.ones((1, 1))
    >>> mala_log_alpha(x, y, -x, -y, -0.5 * (x**2).sum(1), -0.5 * (y**2).sum(1), 0.5)
    array([-0.125])
    """
    eta = check_positive("step", step)
    _shape_is(np.shape(x), "the shape of x", y=y, score_x=score_x, score_y=score_y)
    _shape_is(np.shape(x)[:-1], "the shape of x without its last axis", logp_x=logp_x, logp_y=logp_y)
    fwd = np.sum((y - x - eta * score_x) ** 2, axis=-1)
    bwd = np.sum((x - y - eta * score_y) ** 2, axis=-1)
    return logp_y - logp_x - (bwd - fwd) / (4.0 * eta)


def mala_accept(log_alpha, u):
    r"""MALA's decision: accept where :math:`\log u < \log\alpha` (docs/derivations.md §8.3).

    :math:`\log u` is :func:`refscore.noise.log_unit`, the fdlibm ``log`` every
    backend compiles, so a decision never depends on a platform's ``log``.

    Parameters
    ----------
    log_alpha : ndarray (...,)
        :func:`mala_log_alpha`.
    u : ndarray, shape of ``log_alpha``
        Uniforms in (0, 1) (:func:`refscore.noise.uniform`, stream 1).

    Returns
    -------
    ndarray of bool, shape of ``log_alpha``
        False where ``log_alpha`` is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import mala_accept
    >>> mala_accept(np.array([0.0, -1.0]), np.array([0.5, 0.5]))
    array([ True, False])
    """
    _shape_is(np.shape(log_alpha), "the shape of log_alpha", u=u)
    return log_unit(u) < log_alpha


def mala_step(x, score, logpdf, step, z, u):
    r"""One MALA step from ``x``: proposal (eq. (4)), log ratio, and the decision with ``u``.

    .. math::

        y = x + \eta s(x) + \sqrt{2\eta} z, \qquad
        x' = \begin{cases} y & \log u < \log\alpha(x, y) \\ x & \text{otherwise} \end{cases}

    (:func:`langevin_step`, :func:`mala_log_alpha`, :func:`mala_accept`;
    docs/derivations.md §8.3).  The samplers run the same three functions, and
    besides freeze a chain whose proposal is not finite or leaves the growth
    bound (§8.5); this function only computes.

    Parameters
    ----------
    x : ndarray (n, d)
    score : callable
        ``(n, d) -> (n, d)``, :math:`s`.
    logpdf : callable
        ``(n, d) -> (n,)``, :math:`\log p` up to a constant.
    step : float > 0
    z : ndarray (n, d)
        Normal noise (:func:`refscore.noise.normal`, stream 0).
    u : ndarray (n,)
        Uniforms (:func:`refscore.noise.uniform`, stream 1).

    Returns
    -------
    x_next : ndarray (n, d)
    accepted : ndarray (n,) bool
    log_alpha : ndarray (n,)

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import mala_step
    >>> x = np.zeros((2, 1))
    >>> x1, acc, la = mala_step(x, lambda v: -v, lambda v: -0.5 * (v**2).sum(1), 0.5,
    ...                         np.array([[1.0], [1.0]]), np.array([0.5, 0.9]))
    >>> acc
    array([ True, False])
    >>> x1.ravel()
    array([1., 0.])
    """
    s_x = score(x)
    y = langevin_step(x, s_x, step, z)
    log_alpha = mala_log_alpha(x, y, s_x, score(y), logpdf(x), logpdf(y), step)
    accepted = mala_accept(log_alpha, u)
    return np.where(accepted[..., None], y, x), accepted, log_alpha


def annealed_level_steps(step, sigmas):
    r"""The step of each noise level of annealed Langevin: :math:`\eta_l = \text{step}\cdot\sigma_l^2/\sigma_L^2`.

    .. math::

        \eta_l = \text{step}\,\frac{\sigma_l^2}{\sigma_L^2}, \qquad
        x \leftarrow x + \eta_l\, s(x, \sigma_l) + \sqrt{2\eta_l}\, z

    (Song & Ermon 2019, Algorithm 1, with :math:`\eta_l = \alpha_l / 2`;
    docs/derivations.md §8.4).  The last, smallest level runs at ``step``
    (to within the rounding of the three operations: evaluated as
    ``step * sigmas**2 / sigmas[-1]**2``, the order
    :func:`refscore.sampling.annealed_langevin` runs).

    Parameters
    ----------
    step : float > 0
    sigmas : array (L,)
        Strictly decreasing, > 0.

    Returns
    -------
    ndarray (L,)

    Examples
    --------
    >>> from refscore.sampling.steps import annealed_level_steps
    >>> annealed_level_steps(0.05, [2.0, 1.0])
    array([0.2 , 0.05])
    """
    eta = check_positive("step", step)
    s = check_sigmas(sigmas)
    return eta * s ** 2 / s[-1] ** 2


# ------------------------------------------------------------------ the samplers' steps, as step_fn
def ula_update(x, score, step, z):
    r"""One ULA step in the ``step_fn`` form: :func:`langevin_step` at ``score(x)``.

    Parameters
    ----------
    x : ndarray (c, d)
    score : callable
        ``(c, d) -> (c, d)``, the target's score.
    step : float > 0
        :math:`\eta`.
    z : ndarray (c, d)
        This step's normal noise.

    Returns
    -------
    ndarray (c, d)
        :math:`x + \eta\, s(x) + \sqrt{2\eta}\, z`.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import ula_update
    >>> ula_update(np.array([[2.0]]), lambda v: -v, 0.5, np.array([[1.0]]))
    array([[2.]])
    """
    return langevin_step(x, score(x), step, z)


def mala_update(x, score, log_prob, step, z, u):
    r"""One MALA step in the ``step_fn`` form: :func:`mala_step`, returning ``(x_next, log_alpha)``.

    Parameters
    ----------
    x : ndarray (c, d)
    score : callable
        ``(c, d) -> (c, d)``.
    log_prob : callable
        ``(c, d) -> (c,)``, :math:`\log p` up to a constant.
    step : float > 0
    z : ndarray (c, d)
        This step's proposal noise.
    u : ndarray (c,)
        This step's uniforms: accept iff :math:`\log u < \log\alpha`.

    Returns
    -------
    x_next : ndarray (c, d)
    log_alpha : ndarray (c,)

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import mala_update
    >>> x1, la = mala_update(np.zeros((2, 1)), lambda v: -v, lambda v: -0.5 * (v**2).sum(1), 0.5,
    ...                      np.array([[1.0], [1.0]]), np.array([0.5, 0.9]))
    >>> x1.ravel(), la
    (array([1., 0.]), array([-0.125, -0.125]))
    """
    x_next, _, log_alpha = mala_step(x, score, log_prob, step, z, u)
    return x_next, log_alpha


def annealed_update(x, score, sigma, sigmas, step, z):
    r"""One annealed Langevin step at level ``sigma`` in the ``step_fn`` form.

    :func:`langevin_step` at ``score(x)`` (the score of :math:`p_\sigma`) with the
    level's step ``annealed_level_steps(step, sigmas)[l]``, ``sigmas[l] == sigma``:
    the same number :func:`refscore.sampling.annealed_langevin` runs.

    Parameters
    ----------
    x : ndarray (c, d)
    score : callable
        ``(c, d) -> (c, d)``, the score at this step's level.
    sigma : float
        This step's noise level, one of ``sigmas``.
    sigmas : sequence of float
        Every level, strictly decreasing.
    step : float > 0
        The step at the smallest level.
    z : ndarray (c, d)

    Returns
    -------
    ndarray (c, d)

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.steps import annealed_update
    >>> annealed_update(np.zeros((1, 1)), lambda v: -v, 2.0, (2.0, 1.0), 0.125, np.array([[1.0]]))
    array([[1.]])
    """
    levels = [float(s) for s in check_sigmas(sigmas)]
    if sigma not in levels:
        raise ValueError(f"sigma must be one of sigmas {levels}, got {sigma!r}")
    eta = annealed_level_steps(step, levels)[levels.index(sigma)]
    return langevin_step(x, score(x), float(eta), z)
