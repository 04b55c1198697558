r"""Sample-quality metrics: MMD, kernel Stein discrepancy (and its test), modes, moments.

Derivation: docs/derivations.md §1 (the scores the Stein discrepancy uses).

These are the yardsticks the samplers and the validation experiments are judged
by.  Every pairwise quantity is an *unbiased* U-statistic computed in row blocks
(memory :math:`O(\text{block}\cdot n)`, never an :math:`n \times n \times d`
tensor), so ``n`` of several thousand costs seconds, not gigabytes.

========================  ==================================================
name                      what it returns
========================  ==================================================
:func:`mmd`               unbiased :math:`\widehat{\mathrm{MMD}}^2_u` (RBF kernel)
:func:`ksd`               unbiased :math:`\widehat{\mathrm{KSD}}^2_u` (IMQ kernel)
:func:`ksd_test`          KSD goodness-of-fit test, wild-bootstrap p-value
:func:`imq_stein_kernel`  the Stein kernel matrix :math:`u_p(x_i, y_j)`
:func:`mode_weights`      fraction of points nearest to each mean
:func:`moments`           mean, covariance and their standard errors
========================  ==================================================

Both :func:`mmd` and :func:`ksd` return the *squared* discrepancy estimate; an
unbiased estimate of a quantity that is zero under the null is negative about
half of the time, so do not take its square root blindly.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ._validation import as_float_array, as_rng, check_finite, check_int, check_positive

__all__ = [
    "mmd",
    "median_bandwidth",
    "ksd",
    "ksd_test",
    "KSDTestResult",
    "imq_stein_kernel",
    "mode_weights",
    "moments",
    "MomentEstimates",
]

#: bytes one (block, n) float64 temporary may take; a few such live at once
_BLOCK_BYTES = 16 * 2**20
#: the median heuristic uses at most this many pooled points (≈2·10⁶ distances)
_MEDIAN_MAX_POINTS = 2000


# ---------------------------------------------------------------- validation
def _as_sample(x, name: str, min_n: int = 2) -> np.ndarray:
    """A finite float64 sample of shape ``(n, d)`` with ``n >= min_n``."""
    arr = as_float_array(x, name)
    if arr.ndim != 2 or arr.shape[1] < 1:
        hint = " (for a 1-D sample pass x[:, None])" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must have shape (n, d) with d >= 1{hint}, got shape {arr.shape}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{name} must hold at least {min_n} points, got {arr.shape[0]}")
    check_finite(name, arr)
    return arr


def _as_scores(score_fn, x: np.ndarray) -> np.ndarray:
    """Evaluate (or check) the target score at ``x``: a finite ``(n, d)`` array."""
    if callable(score_fn):
        s = as_float_array(score_fn(x), "score_fn(x)")
        name = "score_fn(x)"
    else:
        s = as_float_array(score_fn, "score_fn")
        name = "score_fn"
    if s.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {x.shape}, got shape {s.shape}")
    check_finite(name, s)
    return s


def _block_rows(n_cols: int) -> int:
    return max(1, _BLOCK_BYTES // (8 * max(1, n_cols)))


def _unit_scale(*arrays) -> float:
    """A power of two ``s`` with ``s * max|z|`` in ``[0.5, 1)`` over ``arrays`` (1.0 when all are 0).

    Multiplying by a power of two is exact, so a kernel of distances is computed on ``s z`` with
    the bandwidth ``s h`` to the same bits as on ``z`` with ``h`` -- but squared distances of
    points near 1e200 no longer overflow, nor do those of points near 1e-200 underflow to 0.
    """
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    if largest == 0.0:
        return 1.0
    return math.ldexp(1.0, -math.frexp(largest)[1])


def _sq_dists(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Pairwise squared distances ``‖a_i − b_j‖²`` by the Gram expansion, clipped at 0."""
    d2 = a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


# ----------------------------------------------------------------------- MMD
def median_bandwidth(x, y=None) -> float:
    r"""Median heuristic: the median Euclidean distance between distinct pooled points.

    The pooled sample is :math:`z = (x_1..x_m, y_1..y_n)`; the bandwidth is

    .. math::

        h = \operatorname{median}\{\lVert z_i - z_j \rVert : i < j\}

    (Gretton et al. 2012, §8).  When more than 2000 points are pooled, the median
    is taken over a subset of 2000 of them drawn with the fixed seed 0, so the
    bandwidth is deterministic and costs :math:`O(2000^2)`.

    Parameters
    ----------
    x : array_like, shape (m, d)
    y : array_like, shape (n, d), optional

    Returns
    -------
    float
        The median distance; ``ValueError`` if it is 0 (more than half of the
        pairs coincide), since an RBF kernel of width 0 is degenerate.

    References
    ----------
    Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), "A kernel two-sample
    test", JMLR 13, §8.

    Examples
    --------
    >>> median_bandwidth([[0.0], [1.0], [3.0]])
    2.0
    """
    xa = _as_sample(x, "x")
    if y is not None:
        ya = _as_sample(y, "y")
        if ya.shape[1] != xa.shape[1]:
            raise ValueError(f"y must have {xa.shape[1]} columns like x, got shape {ya.shape}")
        xa = np.concatenate([xa, ya])
    return _median_bandwidth(xa)


def _median_bandwidth(z: np.ndarray) -> float:
    if z.shape[0] > _MEDIAN_MAX_POINTS:
        idx = np.random.default_rng(0).choice(z.shape[0], _MEDIAN_MAX_POINTS, replace=False)
        z = z[idx]
    scale = _unit_scale(z)  # exact: distances of points near 1e200 (or 1e-200) stay in range
    z = scale * z
    z = z - z.mean(axis=0)
    z2 = np.einsum("ij,ij->i", z, z)
    iu = np.triu_indices(z.shape[0], k=1)
    d = np.sqrt(_sq_dists(z, z, z2, z2)[iu])
    h = float(np.median(d))
    if not h > 0:
        raise ValueError("median pairwise distance is 0 (most points coincide); pass bandwidth explicitly")
    h /= scale
    if not math.isfinite(h):
        raise ValueError(f"median pairwise distance exceeds float64's range (points up to "
                         f"{float(np.max(np.abs(z))) / scale:.3g} apart from their mean); rescale the sample")
    return h


def _rbf_sum(a, b, a2, b2, gamma) -> float:
    r""":math:`\sum_{i,j} \exp(-\gamma \lVert a_i - b_j\rVert^2)` in row blocks."""
    total = 0.0
    step = _block_rows(b.shape[0])
    for i in range(0, a.shape[0], step):
        d2 = _sq_dists(a[i:i + step], b, a2[i:i + step], b2)
        total += float(np.exp(-gamma * d2).sum())
    return total


def mmd(x, y, bandwidth=None) -> float:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian (RBF) kernel.

    With :math:`k(a, b) = \exp(-\lVert a-b\rVert^2 / (2h^2))`, samples
    :math:`x_{1..m} \sim P` and :math:`y_{1..n} \sim Q`, the U-statistic

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i,x_j)
          + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i,y_j)
          - \frac{2}{mn}\sum_{i,j} k(x_i,y_j)

    is an unbiased estimate of :math:`\mathrm{MMD}^2 = \mathbb{E}k(x,x') +
    \mathbb{E}k(y,y') - 2\mathbb{E}k(x,y)` (Gretton et al. 2012, eq. 3, Lemma 6).
    Because it is unbiased it can be slightly *negative* when :math:`P = Q`;
    its null standard deviation is :math:`O(1/n)`.

    Parameters
    ----------
    x : array_like, shape (m, d)
    y : array_like, shape (n, d)
        Samples, ``m, n >= 2``, finite.
    bandwidth : float, optional
        The RBF width :math:`h`.  Default: the median heuristic
        :func:`median_bandwidth` on the *pooled* sample (median distance over
        all distinct pairs of the concatenation of ``x`` and ``y``).  Note that
        with a data-dependent bandwidth the estimator is unbiased only
        conditionally on :math:`h`.

    Returns
    -------
    float
        :math:`\widehat{\mathrm{MMD}}^2_u`.

    Raises
    ------
    ValueError
        Besides bad input: a ``bandwidth`` so small against the samples that
        :math:`1/(2h^2)` overflows float64 even with the samples rescaled to
        order one; the median heuristic's degenerate width (most points coincide).

    Notes
    -----
    The kernel is evaluated on the samples and the width rescaled together by a
    power of two (exact), so samples near 1e200 or 1e-200, whose squared
    distances over- or underflow float64, give the value of their unit-scale copies.

    References
    ----------
    Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), "A kernel two-sample
    test", JMLR 13, eq. (3) and Lemma 6; median heuristic §8.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 1.0
    >>> mmd(x, y) > 0.1
    True
    """
    xa = _as_sample(x, "x")
    ya = _as_sample(y, "y")
    if ya.shape[1] != xa.shape[1]:
        raise ValueError(f"y must have {xa.shape[1]} columns like x, got shape {ya.shape}")
    if bandwidth is None:
        h = _median_bandwidth(np.concatenate([xa, ya]))
    else:
        h = check_positive("bandwidth", bandwidth)
    return _mmd2_u(xa, ya, h)


def _rbf_gamma(h: float) -> float:
    """``1 / (2 h^2)`` of the RBF kernel of width ``h``: 0 when ``h^2`` overflows (the kernel is 1
    everywhere), infinite when ``h^2`` underflows to 0 (never ``h**2``, which raises OverflowError)."""
    h2 = h * h
    return 0.5 / h2 if h2 > 0.0 else math.inf


def _mmd2_u(x: np.ndarray, y: np.ndarray, h: float) -> float:
    # exact power-of-two rescaling of the points and the width together: the kernel values are
    # unchanged, and the squared distances stay within float64 at any scale of the sample
    scale = _unit_scale(x, y)
    g = _rbf_gamma(scale * h)
    if not math.isfinite(g):
        largest = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))))
        raise ValueError(f"bandwidth {h!r} is too small for samples of coordinates up to {largest:.3g}: the "
                         "kernel's 1/(2 bandwidth^2) overflows float64 even with the samples rescaled to "
                         "order one")
    x, y = scale * x, scale * y
    c = np.concatenate([x, y]).mean(axis=0)  # centring reduces cancellation in the Gram expansion
    x = x - c
    y = y - c
    x2 = np.einsum("ij,ij->i", x, x)
    y2 = np.einsum("ij,ij->i", y, y)
    m, n = x.shape[0], y.shape[0]
    # the diagonal of k(x, x) is exactly 1: remove it from the full sums
    kxx = (_rbf_sum(x, x, x2, x2, g) - m) / (m * (m - 1))
    kyy = (_rbf_sum(y, y, y2, y2, g) - n) / (n * (n - 1))
    kxy = _rbf_sum(x, y, x2, y2, g) / (m * n)
    return float(kxx + kyy - 2.0 * kxy)


# ----------------------------------------------------------------------- KSD
def _check_imq(c, beta) -> tuple[float, float]:
    c = check_positive("c", c)
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (-1.0 < beta < 0.0):
        raise ValueError(f"beta must lie in (-1, 0) for the IMQ kernel, got {beta!r}")
    return c, beta


def _stein_block(xb, sb, x, s, xb_sq, x_sq, sxb, sx, c2, beta):
    r"""Stein kernel :math:`u_p(x_i, y_j)` for a block of rows ``xb`` against ``x``.

    ``xb_sq``/``x_sq`` are squared norms; ``sxb``/``sx`` are :math:`s_i^\top x_i`.
    """
    d = xb.shape[1]
    r2 = _sq_dists(xb, x, xb_sq, x_sq)
    q = c2 + r2
    qb = q**beta
    qb1 = qb / q  # q^(β−1)
    # (s_y − s_x)ᵀ(x − y) = s_yᵀx − s_yᵀy − s_xᵀx + s_xᵀy
    cross = xb @ s.T - sx[None, :] - sxb[:, None] + sb @ x.T
    u = (sb @ s.T) * qb
    u += 2.0 * beta * qb1 * cross
    u -= 2.0 * beta * d * qb1
    u -= 4.0 * beta * (beta - 1.0) * (qb1 / q) * r2
    return u


def imq_stein_kernel(x, y, sx, sy, *, c=1.0, beta=-0.5) -> np.ndarray:
    r"""Langevin Stein kernel of the inverse multiquadric (IMQ) kernel, pairwise.

    Base kernel :math:`k(x,y) = (c^2 + \lVert x-y\rVert^2)^\beta`.  Write
    :math:`r = x-y`, :math:`q = c^2 + \lVert r\rVert^2`.  Then

    .. math::

        \nabla_x k = 2\beta q^{\beta-1} r, \qquad
        \nabla_y k = -2\beta q^{\beta-1} r,

        \frac{\partial^2 k}{\partial x_i\,\partial y_i}
          = -2\beta q^{\beta-1} - 4\beta(\beta-1) q^{\beta-2} r_i^2
        \;\Rightarrow\;
        \operatorname{tr}\nabla_x\nabla_y k = -2\beta d\, q^{\beta-1}
          - 4\beta(\beta-1) q^{\beta-2}\lVert r\rVert^2,

    and the Stein kernel for the score :math:`s = \nabla\log p` (Liu, Lee &
    Jordan 2016, eq. 8; Chwialkowski et al. 2016, eq. 3) is

    .. math::

        u_p(x,y) &= s(x)^\top s(y)\, k + s(x)^\top\nabla_y k
                   + s(y)^\top\nabla_x k + \operatorname{tr}\nabla_x\nabla_y k \\
                 &= s(x)^\top s(y)\, q^\beta
                   + 2\beta q^{\beta-1}\,(s(y)-s(x))^\top (x-y)
                   - 2\beta d\, q^{\beta-1}
                   - 4\beta(\beta-1) q^{\beta-2}\lVert x-y\rVert^2 .

    It satisfies Stein's identity :math:`\mathbb{E}_{x\sim p}u_p(x,y) = 0`
    for every :math:`y`.

    Parameters
    ----------
    x : array_like, shape (n, d)
    y : array_like, shape (m, d)
    sx, sy : array_like
        Scores :math:`\nabla\log p` at ``x`` and ``y`` (same shapes).
    c : float, default 1.0
    beta : float in (-1, 0), default -0.5

    Returns
    -------
    ndarray, shape (n, m)
        ``u[i, j] = u_p(x_i, y_j)``.

    References
    ----------
    Gorham & Mackey (2017), "Measuring sample quality with kernels", ICML, §4
    (IMQ kernel, c = 1, β = −1/2); Liu, Lee & Jordan (2016), eq. (8).
    """
    c, beta = _check_imq(c, beta)
    xa = _as_sample(x, "x", min_n=1)
    ya = _as_sample(y, "y", min_n=1)
    if ya.shape[1] != xa.shape[1]:
        raise ValueError(f"y must have {xa.shape[1]} columns like x, got shape {ya.shape}")
    sxa = _as_scores(sx, xa)
    sya = _as_scores(sy, ya)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, in words
        u = _stein_block(
            xa, sxa, ya, sya,
            np.einsum("ij,ij->i", xa, xa), np.einsum("ij,ij->i", ya, ya),
            np.einsum("ij,ij->i", sxa, xa), np.einsum("ij,ij->i", sya, ya),
            c * c, beta,
        )
    _check_stein("imq_stein_kernel", u, np.concatenate([xa, ya]), np.concatenate([sxa, sya]))
    return u


def _check_stein(name: str, value, x: np.ndarray, s: np.ndarray) -> None:
    r"""FloatingPointError unless ``value`` (a Stein kernel, statistic or bootstrap) is finite.

    Every input has been checked finite, so a NaN or infinity here is float64 overflow of the
    kernel's terms :math:`s(x)^\top s(y)`, :math:`\lVert x-y\rVert^2` or
    :math:`(s(y)-s(x))^\top(x-y)`: reported with the magnitudes that caused it, never returned.
    """
    if np.all(np.isfinite(value)):
        return
    raise FloatingPointError(
        f"{name}: float64 overflow in the Stein kernel: the points reach |x| = {float(np.max(np.abs(x))):.3g} "
        f"and the scores |s| = {float(np.max(np.abs(s))):.3g}, and its terms s(x)^T s(y), ||x - y||^2 and "
        "(s(y) - s(x))^T (x - y) exceed float64's range (1.8e308)"
    )


def _stein_blocks(x, s, c2, beta):
    """Yield ``(start, stop, u_block)`` row blocks of the full Stein matrix on x."""
    x_sq = np.einsum("ij,ij->i", x, x)
    sx = np.einsum("ij,ij->i", s, x)
    step = max(1, _block_rows(x.shape[0]) // 4)  # ~4 temporaries of this size live at once
    for i in range(0, x.shape[0], step):
        j = min(i + step, x.shape[0])
        yield i, j, _stein_block(x[i:j], s[i:j], x, s, x_sq[i:j], x_sq, sx[i:j], sx, c2, beta)


def _ksd_setup(x, score_fn, c, beta):
    c, beta = _check_imq(c, beta)
    xa = _as_sample(x, "x")
    s = _as_scores(score_fn, xa)
    # the Stein kernel depends on x only through differences, so centring is exact
    # and reduces cancellation in the Gram expansion; sᵀx terms appear only as differences too
    xa = xa - xa.mean(axis=0)
    return xa, s, c * c, beta


def ksd(x, score_fn, *, c=1.0, beta=-0.5) -> float:
    r"""Unbiased squared kernel Stein discrepancy with the IMQ kernel.

    .. math::

        \widehat{\mathrm{KSD}}^2_u = \frac{1}{n(n-1)} \sum_{i\ne j} u_p(x_i, x_j),

    with the Stein kernel :math:`u_p` of :func:`imq_stein_kernel` (the
    derivation is there).  Its expectation is :math:`\mathrm{KSD}^2(q, p) =
    \mathbb{E}_{x,x'\sim q} u_p(x,x') \ge 0`, zero iff :math:`q = p` for the IMQ
    kernel with :math:`\beta\in(-1,0)` (Gorham & Mackey 2017, Thm 8).  Only the
    target's score is needed, never its normaliser.  The estimate is negative
    about half of the time when :math:`q = p`.

    Parameters
    ----------
    x : array_like, shape (n, d)
        Sample to judge, ``n >= 2``.
    score_fn : callable or array_like
        The *target's* score: a callable mapping ``(n, d) -> (n, d)`` (e.g.
        ``dist.score`` or ``model.bind(theta).score``), or the ``(n, d)`` array
        of scores at ``x``.
    c : float, default 1.0
    beta : float in (-1, 0), default -0.5
        IMQ kernel :math:`(c^2 + \lVert x-y\rVert^2)^\beta`.

    Returns
    -------
    float
        :math:`\widehat{\mathrm{KSD}}^2_u`.

    Raises
    ------
    FloatingPointError
        When the Stein kernel's terms overflow float64 (points or scores near
        1e154 and beyond): reported with the magnitudes, never returned as NaN.

    References
    ----------
    Liu, Lee & Jordan (2016), "A kernelized Stein discrepancy for
    goodness-of-fit tests", ICML, eqs. (8), (14); Gorham & Mackey (2017),
    "Measuring sample quality with kernels", ICML, §4.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 2))
    >>> abs(ksd(x, lambda x: -x)) < 0.01          # exact sampler of N(0, I)
    True
    >>> ksd(x + 1.0, lambda x: -x) > 0.1          # shifted sample
    True
    """
    xa, s, c2, beta = _ksd_setup(x, score_fn, c, beta)
    n = xa.shape[0]
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, in words
        for i, j, u in _stein_blocks(xa, s, c2, beta):
            total += float(u.sum()) - float(np.trace(u[:, i:j]))
    value = total / (n * (n - 1))
    _check_stein("ksd", value, xa, s)
    return value


@dataclass(frozen=True)
class KSDTestResult:
    """Result of :func:`ksd_test`.

    Attributes
    ----------
    statistic : float
        :math:`\\widehat{\\mathrm{KSD}}^2_u` of the sample.
    p_value : float
        :math:`(1 + \\#\\{b : B_b \\ge \\text{statistic}\\}) / (1 + n_{boot})`.
    n_boot : int
    n : int
        Sample size.
    bootstrap : ndarray, shape (n_boot,)
        The wild-bootstrap replicates :math:`B_b`, on the scale of ``statistic``.
    """

    statistic: float
    p_value: float
    n_boot: int
    n: int
    bootstrap: np.ndarray = field(repr=False)

    def reject(self, alpha: float = 0.05) -> bool:
        """True when the null "x is drawn from p" is rejected at level ``alpha``."""
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        return bool(self.p_value <= alpha)


def ksd_test(x, score_fn, n_boot=1000, *, rng=None, c=1.0, beta=-0.5) -> KSDTestResult:
    r"""Kernel Stein discrepancy goodness-of-fit test with a wild bootstrap.

    Null hypothesis: the rows of ``x`` are i.i.d. draws from the target :math:`p`
    whose score is ``score_fn``.  Statistic: :math:`\widehat{\mathrm{KSD}}^2_u`
    (:func:`ksd`).  Under the null the U-statistic is degenerate, and its law is
    approximated by the Rademacher wild bootstrap

    .. math::

        B_b = \frac{1}{n(n-1)} \sum_{i\ne j} w^{(b)}_i w^{(b)}_j\, u_p(x_i, x_j),
        \qquad w^{(b)}_i \overset{iid}{\sim} \mathrm{Unif}\{-1, +1\},

    (Chwialkowski, Strathmann & Gretton 2016, §2.2, eq. 5; for the U-statistic
    Liu, Lee & Jordan 2016, §4, following Arcones & Giné 1992 and Dehling &
    Mikosch 1994), and :math:`p = (1 + \#\{B_b \ge \widehat{\mathrm{KSD}}^2_u\})
    / (1 + n_{boot})`.  The level is asymptotically exact for i.i.d. samples;
    correlated samples (e.g. consecutive Langevin iterates) must be thinned
    first or the test over-rejects.

    The bootstrap costs :math:`O(n_{boot}\, n^2)` flops, memory
    :math:`O(n_{boot}\, n)` (the Stein matrix is streamed in row blocks).

    Parameters
    ----------
    x : array_like, shape (n, d)
    score_fn : callable or array_like
        The target's score, as in :func:`ksd`.
    n_boot : int, default 1000
        Number of bootstrap replicates, ``>= 1``.
    rng : None, int or numpy.random.Generator
        Source of the Rademacher weights.
    c, beta : float
        IMQ kernel parameters, as in :func:`ksd`.

    Returns
    -------
    KSDTestResult
        ``statistic``, ``p_value``, ``n_boot``, ``n``, ``bootstrap`` and
        ``reject(alpha=0.05)``.

    References
    ----------
    Liu, Lee & Jordan (2016), "A kernelized Stein discrepancy for
    goodness-of-fit tests", ICML, §4; Chwialkowski, Strathmann & Gretton (2016),
    "A kernel test of goodness of fit", ICML, §2.2.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> res = ksd_test(rng.normal(size=(200, 1)) + 1.0, lambda x: -x, n_boot=200, rng=2)
    >>> res.reject(0.05)
    True
    """
    n_boot = check_int("n_boot", n_boot, 1)
    gen = as_rng(rng)
    xa, s, c2, beta = _ksd_setup(x, score_fn, c, beta)
    n = xa.shape[0]
    n_boot = int(n_boot)
    w = gen.integers(0, 2, size=(n_boot, n)).astype(float) * 2.0 - 1.0
    total = 0.0
    wu = np.zeros((n_boot, n))  # accumulates W U with U's diagonal zeroed
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, in words
        for i, j, u in _stein_blocks(xa, s, c2, beta):
            u[np.arange(j - i), np.arange(i, j)] = 0.0
            total += float(u.sum())
            wu += w[:, i:j] @ u
        norm = 1.0 / (n * (n - 1))
        stat = total * norm
        boot = np.einsum("bi,bi->b", wu, w) * norm
    _check_stein("ksd_test", np.append(boot, stat), xa, s)
    p = (1.0 + np.count_nonzero(boot >= stat)) / (1.0 + n_boot)
    return KSDTestResult(statistic=stat, p_value=float(p), n_boot=n_boot, n=n, bootstrap=boot)


# ------------------------------------------------------------ modes, moments
def mode_weights(x, means) -> np.ndarray:
    r"""Fraction of the points whose nearest mean (Euclidean) is each mean.

    .. math::

        \hat w_k = \frac{1}{n}\#\{i : \arg\min_j \lVert x_i - \mu_j\rVert = k\}

    Ties go to the lowest index.  For well-separated mixture components this
    estimates the mixture weights (the NCSN toy of Song & Ermon 2019, §3.2).

    Parameters
    ----------
    x : array_like, shape (n, d)
        ``n >= 1``.
    means : array_like, shape (k, d)

    Returns
    -------
    ndarray, shape (k,)
        Non-negative, sums to 1.

    References
    ----------
    Song & Ermon (2019), "Generative modeling by estimating gradients of the data
    distribution", NeurIPS, §3.2 and Fig. 3.

    Examples
    --------
    >>> mode_weights([[-5.0], [-4.0], [5.0], [6.0]], [[-5.0], [5.0]])
    array([0.5, 0.5])
    """
    xa = _as_sample(x, "x", min_n=1)
    mu = _as_sample(means, "means", min_n=1)
    if mu.shape[1] != xa.shape[1]:
        raise ValueError(f"means must have {xa.shape[1]} columns like x, got shape {mu.shape}")
    # ‖x−μ‖² = ‖x‖² − 2xᵀμ + ‖μ‖²; ‖x‖² is common to a row, so drop it
    labels = np.empty(xa.shape[0], dtype=np.intp)
    mu2 = np.einsum("ij,ij->i", mu, mu)
    step = _block_rows(mu.shape[0])
    for i in range(0, xa.shape[0], step):
        labels[i:i + step] = np.argmin(mu2[None, :] - 2.0 * (xa[i:i + step] @ mu.T), axis=1)
    return np.bincount(labels, minlength=mu.shape[0]) / xa.shape[0]


class MomentEstimates(NamedTuple):
    """Result of :func:`moments`: ``mean (d,)``, ``cov (d, d)``, ``mean_se (d,)``, ``cov_se (d, d)``."""

    mean: np.ndarray
    cov: np.ndarray
    mean_se: np.ndarray
    cov_se: np.ndarray


def moments(x) -> MomentEstimates:
    r"""Sample mean and covariance with their (asymptotic, distribution-free) standard errors.

    .. math::

        \bar x = \frac1n\sum_i x_i, \qquad
        \hat\Sigma = \frac{1}{n-1}\sum_i (x_i-\bar x)(x_i-\bar x)^\top,

        \mathrm{se}(\bar x_a) = \sqrt{\hat\Sigma_{aa}/n}, \qquad
        \mathrm{se}(\hat\Sigma_{ab}) = \sqrt{\bigl(\hat m_{aabb} - \hat\Sigma_{ab}^2\bigr)/n},
        \quad \hat m_{aabb} = \frac1n\sum_i c_{ia}^2 c_{ib}^2,\; c_i = x_i - \bar x .

    The covariance standard error is the leading (delta-method) term of
    :math:`\sqrt{\operatorname{Var}[(x_a-\mu_a)(x_b-\mu_b)]/n}`; it needs no
    Gaussian assumption (for a Gaussian it tends to
    :math:`\sqrt{(\Sigma_{aa}\Sigma_{bb}+\Sigma_{ab}^2)/n}`).  Assumes i.i.d. rows.

    Parameters
    ----------
    x : array_like, shape (n, d)
        ``n >= 2``, finite.

    Returns
    -------
    MomentEstimates
        Named tuple ``(mean, cov, mean_se, cov_se)``.

    Examples
    --------
    >>> m = moments([[0.0], [2.0]])
    >>> m.mean, m.cov
    (array([1.]), array([[2.]]))
    """
    xa = _as_sample(x, "x")
    n = xa.shape[0]
    mean = xa.mean(axis=0)
    cen = xa - mean
    cov = cen.T @ cen / (n - 1)
    sq = cen * cen
    m4 = sq.T @ sq / n
    biased = cen.T @ cen / n
    cov_se = np.sqrt(np.maximum(m4 - biased**2, 0.0) / n)
    mean_se = np.sqrt(np.diag(cov) / n)
    return MomentEstimates(mean=mean, cov=cov, mean_se=mean_se, cov_se=cov_se)
