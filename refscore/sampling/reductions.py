r"""Reductions of a sampler run's final states, computed where the chains ran.

A :class:`Reduction` turns the final states of one block of chains into a
small *partial*, partials of consecutive blocks into one partial, and the
partial of all chains into a result::

    block(x_block, diverged_block) -> partial      # on the worker that ran the block
    combine([p_a, p_b, ...])       -> partial      # consecutive blocks, in chain order
    finish(partial)                -> result
    merge(partials) = finish(combine(partials))    # partials in chain-index order

The Dask backend (:mod:`.dask_backend`) calls ``block`` in the task that ran
the chains, so only partials travel to the client, and folds them left to
right in chain-index order (``acc = combine([acc, p_next])``), whatever order
the tasks finish in.

Partition independence.  Every built-in reduction gives a result that does
not depend on how the chains were cut into blocks, bit for bit:

* :class:`Moments` sums *exactly*: every float64 is an integer times a power
  of two, so a block's :math:`\sum_c x_{ci}` and :math:`\sum_c x_{ci}x_{cj}`
  are accumulated as exact rationals (NumPy ``int64`` limb arithmetic, then
  Python integers), partials add exactly, and the mean and covariance are
  rounded once, at the end, from the exact rationals.  Exact addition is
  associative, so any partition (and any merge order) gives the same bits,
  namely the correctly rounded sample mean and covariance.  Python integers
  do not overflow, so huge finite states (``1e200``, whose squares are beyond
  float64) are summed exactly too; only a covariance entry whose exact value
  lies beyond the float64 range rounds to ``inf``, with a
  :class:`MomentsOverflowWarning` (the mean of finite states always fits);
* :class:`ModeWeights` and :class:`Histogram` count integers: each chain's
  bin is decided by that chain's row alone, and integer counts add exactly;
* :class:`FinalStates` and :class:`DivergenceFlags` concatenate blocks in
  chain order.

Diverged chains (frozen at their last finite state, see
:class:`~refscore.sampling.SamplerResult`) are left out of the moments,
mode counts and histogram, and counted in ``n_diverged``.

A reduction that cannot take the states (a :class:`Histogram` coordinate or
:class:`ModeWeights` means of another dimension) is refused by
:func:`resolve_reduction`, before the run (:meth:`Reduction.check`).

Names accepted by the samplers' ``reduce=``: ``"final"`` (the default
behaviour: final states in ``result.x``), ``"moments"``, ``"diverged"`` and
``"modes"`` (nearest component of the target's ``means``, a Gaussian mixture
or its ``perturbed()`` target); or any object with ``block``/``combine``/``finish``
(subclass :class:`Reduction`).

Examples
--------
>>> import numpy as np
>>> from refscore.sampling.reductions import Moments
>>> x = np.array([[0.1, 1.0], [0.2, -1.0], [0.3, 0.5]])
>>> ok = np.zeros(3, dtype=bool)
>>> m = Moments()
>>> whole = m.merge([m.block(x, ok)])
>>> parts = m.merge([m.block(x[:1], ok[:1]), m.block(x[1:], ok[1:])])
>>> whole.count, bool(np.array_equal(whole.mean, parts.mean) and np.array_equal(whole.cov, parts.cov))
(3, True)
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["Reduction", "FinalStates", "Moments", "MomentsResult", "MomentsOverflowWarning", "ModeWeights",
           "ModeWeightsResult", "Histogram", "HistogramResult", "DivergenceFlags", "resolve_reduction",
           "exact_sums"]


class Reduction:
    """Base class: ``merge(partials) = finish(combine(partials))``; subclasses define the three steps."""

    name = ""

    def check(self, dim):
        """Raise ``ValueError`` when states of dimension ``dim`` cannot be reduced (called before the
        run by :func:`resolve_reduction`); the default takes any dimension."""
        return None

    def block(self, x, diverged):  # pragma: no cover - abstract
        """The partial of one block: ``x`` (m, d) final states in chain order, ``diverged`` (m,) bool."""
        raise NotImplementedError

    def combine(self, partials):  # pragma: no cover - abstract
        """One partial for consecutive blocks, given in chain-index order."""
        raise NotImplementedError

    def finish(self, partial):
        """The result from the partial of all chains (default: the partial itself)."""
        return partial

    def merge(self, partials):
        """The result from the partials of all blocks, in chain-index order."""
        return self.finish(self.combine(list(partials)))


# ------------------------------------------------------------------ exact sums
_LIMB_BITS = 18
_LIMB_MASK = (1 << _LIMB_BITS) - 1
#: chains per vectorised pass: keeps every int64 group sum below 2**63
#: (a group sum adds at most this many terms, each below 3 * 2**36)
_EXACT_CHUNK = 1 << 16
_E_OFFSET = 4096  # product exponents lie in [-2252, 1942]
_E_SPAN = 8192


def _mantissa_exponent(a):
    """``a == m * 2**e`` exactly, ``m`` int64 with ``|m| < 2**53`` (``m = 0`` for zeros)."""
    f, e = np.frexp(a)
    return np.ldexp(f, 53).astype(np.int64), e.astype(np.int64) - 53


def _limbs(m):
    """Sign and three 18-bit limbs of ``|m|`` (``|m| = l0 + l1 2**18 + l2 2**36``)."""
    mag = np.abs(m)
    return np.sign(m), [(mag >> (_LIMB_BITS * k)) & _LIMB_MASK for k in range(3)]


def _accumulate(acc, key, expo, diags):
    """Add ``sum_t diags[t] * 2**(18 t + expo)`` per ``key`` into ``acc`` (dict key -> {expo: int})."""
    comb = (key.astype(np.int64) * _E_SPAN + (expo + _E_OFFSET)).ravel()
    order = np.argsort(comb, kind="stable")
    comb = comb[order]
    starts = np.flatnonzero(np.concatenate(([True], comb[1:] != comb[:-1])))
    sums = [np.add.reduceat(dg.ravel()[order], starts) for dg in diags]  # int64, exact
    for g, c in enumerate(comb[starts].tolist()):
        k, e = divmod(c, _E_SPAN)
        v = 0
        for t, s in enumerate(sums):
            v += int(s[g]) << (_LIMB_BITS * t)
        if v:
            per = acc.setdefault(k, {})
            e -= _E_OFFSET
            per[e] = per.get(e, 0) + v


def _to_fraction(per):
    """An exact rational from ``{exponent: integer}``."""
    if not per:
        return Fraction(0)
    emin = min(per)
    n = sum(v << (e - emin) for e, v in per.items())
    return Fraction(n, 1 << -emin) if emin < 0 else Fraction(n << emin)


def exact_sums(x):
    r"""Exact :math:`\sum_c x_{ci}` (d,) and :math:`\sum_c x_{ci} x_{cj}` (d, d) as Fractions.

    Every finite float64 is ``m * 2**e`` with an integer ``|m| < 2**53``; a
    product of two is ``m m' 2**(e + e')``.  The mantissas are cut into three
    18-bit limbs, so limb products (< 2**36) and their sums over up to
    ``2**16`` chains fit in ``int64`` exactly; equal-exponent terms are added
    in ``int64`` and the groups in Python integers.  No rounding anywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.sampling.reductions import exact_sums
    >>> s, p = exact_sums(np.array([[1e16], [1.0], [-1e16]]))
    >>> s[0], p[0, 0]
    (Fraction(1, 1), Fraction(200000000000000000000000000000001, 1))
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (m, d), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("exact_sums needs finite values")
    m, d = x.shape
    iu, ju = np.triu_indices(d)
    s_acc, p_acc = {}, {}
    chunk = max(1, min(_EXACT_CHUNK, (1 << 20) // max(len(iu), 1)))
    for lo in range(0, m, chunk):
        mant, ex = _mantissa_exponent(x[lo:lo + chunk])
        sg, L = _limbs(mant)
        rows = mant.shape[0]
        key = np.broadcast_to(np.arange(d), (rows, d))
        _accumulate(s_acc, key, ex, [sg * L[t] for t in range(3)])
        sp = sg[:, iu] * sg[:, ju]
        a, b = [l[:, iu] for l in L], [l[:, ju] for l in L]
        diags = [sp * sum(a[k] * b[t - k] for k in range(max(0, t - 2), min(t, 2) + 1)) for t in range(5)]
        _accumulate(p_acc, np.broadcast_to(np.arange(len(iu)), (rows, len(iu))), ex[:, iu] + ex[:, ju], diags)
    s = np.array([_to_fraction(s_acc.get(i, {})) for i in range(d)], dtype=object)
    p = np.empty((d, d), dtype=object)
    for q, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
        p[i, j] = p[j, i] = _to_fraction(p_acc.get(q, {}))
    return s, p


# ------------------------------------------------------------------ built-ins
class FinalStates(Reduction):
    """The final states themselves, (n, d) in chain order (the default: ``result.x``)."""

    name = "final"

    def block(self, x, diverged):
        return np.array(x, copy=True)

    def combine(self, partials):
        return np.concatenate(partials, axis=0)


class DivergenceFlags(Reduction):
    """Per-chain divergence flags, (n,) bool in chain order (nothing else is gathered)."""

    name = "diverged"

    def block(self, x, diverged):
        return np.array(diverged, dtype=np.bool_, copy=True)

    def combine(self, partials):
        return np.concatenate(partials)


@dataclass(frozen=True)
class MomentsResult:
    """Sample moments of the final states of the chains that did not diverge.

    ``count`` chains; ``mean`` (d,) and ``cov`` (d, d) (``ddof=1``; NaN when
    ``count < 2``), each entry the correctly rounded value of the exact sample
    statistic (``±inf`` where that value lies beyond the float64 range, with a
    :class:`MomentsOverflowWarning`); ``n_diverged`` chains left out.
    """

    count: int
    mean: np.ndarray
    cov: np.ndarray
    n_diverged: int


class MomentsOverflowWarning(RuntimeWarning):
    """Some covariance entries of finite states exceed the float64 range and are reported as ``inf``."""


def _rounded(q):
    """The float64 nearest the rational ``q`` (round to nearest; ``±inf`` beyond the float64 range,
    as IEEE rounding gives, where Python's ``float`` raises ``OverflowError``)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


class Moments(Reduction):
    r"""Count, mean and covariance of the final states (diverged chains left out).

    Merge rule: a block's partial is ``(n_b, n_div_b, S_b, P_b)`` with the
    exact rationals :math:`S_b = \sum_{c\in b} x_c` and
    :math:`P_b = \sum_{c\in b} x_c x_c^\top` (:func:`exact_sums`); partials
    are added in chain-index order (exact, hence associative), and at the end

    .. math::

        \bar x = S/n, \qquad C = \frac{P - S S^\top / n}{n - 1}

    are evaluated exactly and rounded once to float64.  The result is the
    same bits for every partition into blocks and every merge order.

    Huge finite states are no trouble for the sums (exact rationals cannot
    overflow): states near ``1e200`` give their exact mean, and a covariance
    that fits in float64 (equal states: 0) comes out exactly.  A covariance
    entry whose exact value exceeds the float64 range is ``±inf`` (its
    correct rounding), and a :class:`MomentsOverflowWarning` says how many.
    """

    name = "moments"

    def block(self, x, diverged):
        x = np.asarray(x, dtype=float)
        keep = ~np.asarray(diverged, dtype=bool)
        s, p = exact_sums(x[keep])
        return int(keep.sum()), int((~keep).sum()), s, p

    def combine(self, partials):
        n, nd, s, p = partials[0]
        s, p = s.copy(), p.copy()
        for n_b, nd_b, s_b, p_b in partials[1:]:
            n, nd, s, p = n + n_b, nd + nd_b, s + s_b, p + p_b
        return n, nd, s, p

    def finish(self, partial):
        n, nd, s, p = partial
        d = s.shape[0]
        # a mean of finite float64 values lies within their range: it always rounds to a finite value
        mean = np.array([_rounded(v / n) if n else np.nan for v in s])
        cov = np.full((d, d), np.nan)
        if n >= 2:
            for i in range(d):
                for j in range(i, d):
                    cov[i, j] = cov[j, i] = _rounded((p[i, j] - s[i] * s[j] / n) / (n - 1))
            big = int(np.count_nonzero(np.isinf(cov[np.triu_indices(d)])))
            if big:
                warnings.warn(f"{big} covariance {'entry exceeds' if big == 1 else 'entries exceed'} the float64 "
                              f"range (|value| > {np.finfo(float).max:.4g}; a symmetric pair counted once) and "
                              f"{'is' if big == 1 else 'are'} reported as inf; the sums are exact, and the mean "
                              "and the other entries are the correctly rounded values",
                              MomentsOverflowWarning, stacklevel=2)
        return MomentsResult(count=n, mean=mean, cov=cov, n_diverged=nd)


@dataclass(frozen=True)
class ModeWeightsResult:
    """``counts`` (K,) int64 chains nearest each component, ``weights = counts / counts.sum()``,
    ``n_diverged`` chains left out."""

    counts: np.ndarray
    weights: np.ndarray
    n_diverged: int


#: a row whose largest magnitude (or the means') reaches 2**_SAFE_EXPONENT is scaled down by a power
#: of two first: products of two such values stay below 2**962, sums of d of them finite for d < 2**60
_SAFE_EXPONENT = 480


class ModeWeights(Reduction):
    r"""How many final states lie nearest each of the ``means`` (K, d) (Euclidean; ties go
    to the lower index): the mixture weights a sampler recovers.

    A chain's component is decided by its own row, and integer counts add
    exactly: the same for every partition.  The nearest mean is found by a
    run over the components, each compared with the best so far by the side
    of their bisecting hyperplane: :math:`\mu_k` is strictly nearer than
    :math:`\mu_b` when

    .. math::

        (\mu_k - \mu_b)\cdot\bigl(x - (\mu_k + \mu_b)/2\bigr) > 0,

    summed coordinate by coordinate.  This has no :math:`\|x\|^2` term, so a
    far state (``1e200``, whose squared distances overflow float64, and
    would agree to all 16 digits if they did not) is assigned by its
    direction; a row whose entries (or the means') reach :math:`2^{480}` is
    first scaled by a power of two, which is exact and keeps every product
    finite.
    """

    name = "modes"

    def __init__(self, means):
        mu = np.asarray(means, dtype=float)
        if mu.ndim != 2 or mu.shape[0] < 1 or not np.all(np.isfinite(mu)):
            raise ValueError(f"means must be a finite array of shape (K, d), got shape {mu.shape}")
        self.means = mu

    def check(self, dim):
        if dim != self.means.shape[1]:
            raise ValueError(f"means have dimension {self.means.shape[1]}, the states {dim}")

    def block(self, x, diverged):
        x = np.asarray(x, dtype=float)
        keep = ~np.asarray(diverged, dtype=bool)
        self.check(x.shape[1])
        nearest = self._nearest(x[keep])
        return np.bincount(nearest, minlength=self.means.shape[0]).astype(np.int64), int((~keep).sum())

    def _nearest(self, x):
        """Index of the nearest mean for each row of the finite states ``x`` (m, d)."""
        m, d = x.shape
        mu = self.means
        best = np.zeros(m, dtype=np.int64)
        if m == 0 or mu.shape[0] == 1:
            return best
        # per row, 2**-shift brings every |value| of the row and the means below 2**_SAFE_EXPONENT
        _, e = np.frexp(np.maximum(np.abs(x).max(axis=1), np.abs(mu).max()))
        shift = np.maximum(e - _SAFE_EXPONENT, 0)[:, None]
        xs = np.ldexp(x, -shift)
        for k in range(1, mu.shape[0]):
            mb, mk = np.ldexp(mu[best], -shift), np.ldexp(mu[k][None, :], -shift)
            side = np.zeros(m)
            for i in range(d):
                side += (mk[:, i] - mb[:, i]) * (xs[:, i] - (mk[:, i] + mb[:, i]) * 0.5)
            best[side > 0] = k
        return best

    def combine(self, partials):
        return sum(p[0] for p in partials), sum(p[1] for p in partials)

    def finish(self, partial):
        counts, nd = partial
        total = counts.sum()
        weights = counts / total if total else np.full(counts.shape, np.nan)
        return ModeWeightsResult(counts=counts, weights=weights, n_diverged=nd)


@dataclass(frozen=True)
class HistogramResult:
    """``counts`` int64 of shape ``(len(e) - 1 for e in edges)``, the ``edges``, ``outside``
    (chains outside the grid) and ``n_diverged`` (chains left out)."""

    counts: np.ndarray
    edges: tuple
    outside: int
    n_diverged: int


class Histogram(Reduction):
    """Counts of final states on a grid: ``edges`` one increasing 1-d array per coordinate
    in ``dims`` (default: coordinates ``0 .. len(edges) - 1``); bins are ``[e_k, e_{k+1})``,
    the last one closed, as in :func:`numpy.histogramdd`.  Integer counts: exact."""

    name = "histogram"

    def __init__(self, edges, dims=None):
        if isinstance(edges, np.ndarray) and edges.ndim == 1:
            edges = [edges]
        self.edges = tuple(np.asarray(e, dtype=float) for e in edges)
        for e in self.edges:
            if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0) or not np.all(np.isfinite(e)):
                raise ValueError("each edges array must be 1-d, finite, strictly increasing, with >= 2 entries")
        if dims is None:
            dims = tuple(range(len(self.edges)))
        else:
            dims = tuple(dims)
            if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in dims):
                raise ValueError(f"dims must be non-negative integers, got {dims!r}")
        self.dims = tuple(int(i) for i in dims)
        if len(self.dims) != len(self.edges):
            raise ValueError(f"{len(self.edges)} edge arrays for {len(self.dims)} dims")
        self.shape = tuple(e.size - 1 for e in self.edges)

    def check(self, dim):
        for i in self.dims:
            if i >= dim:
                raise ValueError(f"dims must be in [0, {dim}) (the states have dimension {dim}), got {i}")

    def block(self, x, diverged):
        x = np.asarray(x, dtype=float)
        keep = ~np.asarray(diverged, dtype=bool)
        self.check(x.shape[1])
        xk = x[keep]
        idx, ok = [], np.ones(xk.shape[0], dtype=bool)
        for e, i in zip(self.edges, self.dims):
            v = xk[:, i]
            b = np.searchsorted(e, v, side="right") - 1
            b[v == e[-1]] = e.size - 2  # the last bin is closed
            ok &= (b >= 0) & (b < e.size - 1)
            idx.append(b)
        flat = np.ravel_multi_index([b[ok] for b in idx], self.shape) if ok.any() else np.zeros(0, np.int64)
        counts = np.bincount(flat, minlength=int(np.prod(self.shape))).astype(np.int64).reshape(self.shape)
        return counts, int((~ok).sum()), int((~keep).sum())

    def combine(self, partials):
        return (sum(p[0] for p in partials), sum(p[1] for p in partials), sum(p[2] for p in partials))

    def finish(self, partial):
        counts, outside, nd = partial
        return HistogramResult(counts=counts, edges=self.edges, outside=outside, n_diverged=nd)


_NAMED = {"final": FinalStates, "moments": Moments, "diverged": DivergenceFlags}


def resolve_reduction(spec, target=None):
    """The :class:`Reduction` for ``reduce=`` (``None`` or ``"final"``: ``None``, final states).

    ``"modes"`` reads ``target.means`` (a Gaussian mixture or its ``perturbed()``).  With a
    ``target``, a :class:`Reduction` is checked against ``target.dim`` (:meth:`Reduction.check`):
    a reduction that cannot take the states fails here, before the run.
    """
    if spec is None or isinstance(spec, FinalStates):
        return None
    if isinstance(spec, str):
        if spec == "modes":
            means = getattr(target, "means", None)
            if means is None:
                raise ValueError("reduce='modes' needs a target with component means (a GaussianMixture or "
                                 "its perturbed()); pass reduce=ModeWeights(means) otherwise")
            reduction = ModeWeights(means)
        elif spec not in _NAMED:
            raise ValueError(f"reduce must be one of {sorted(_NAMED) + ['modes']} or a Reduction, got {spec!r}")
        elif spec == "final":
            return None
        else:
            reduction = _NAMED[spec]()
    elif not all(callable(getattr(spec, m, None)) for m in ("block", "combine", "finish")):
        raise TypeError(f"reduce must be a name or have block/combine/finish methods, got {type(spec).__name__}")
    else:
        reduction = spec
    if target is not None and isinstance(reduction, Reduction):
        reduction.check(int(target.dim))
    return reduction
