"""Shared hypothesis strategies: dimensions, means, SPD covariances, mixture weights, points.

All strategies are bounded and shrink toward simple cases (dimension 1, zero
means, unit covariances, axis-aligned eigenvectors, equal weights).  Following
scipy's test style, hypothesis draws shapes, parameters and a ``seed``; a NumPy
``Generator`` built from that seed draws bulk data (here only the rotation of a
covariance's eigenvectors).

Typical use::

    from hypothesis import given, strategies as st
    from strategies import dims, gaussians, points   # tests/ is on sys.path (rootdir conftest)

    @given(data=st.data())
    def test_something(data):
        d = data.draw(dims())
        g = data.draw(gaussians(d))
        x = data.draw(points(d))
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refscore.distributions import Banana, Gaussian, GaussianMixture, StudentT

__all__ = [
    "dims",
    "seeds",
    "means",
    "spd_matrices",
    "well_conditioned_spd",
    "ill_conditioned_spd",
    "mixture_weights",
    "points",
    "gaussians",
    "gaussian_mixtures",
    "student_ts",
    "bananas",
    "MAX_CONDITION",
]

#: largest covariance condition number drawn by default ("moderately ill-conditioned")
MAX_CONDITION = 1e3


def dims(min_dim: int = 1, max_dim: int = 4):
    """Dimensions ``min_dim..max_dim`` (default 1..4), shrinking toward ``min_dim``."""
    return st.integers(min_dim, max_dim)


def seeds():
    """A 32-bit seed for ``np.random.default_rng``."""
    return st.integers(0, 2**32 - 1)


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def means(dim: int, scale: float = 3.0):
    """Mean vectors of shape ``(dim,)`` with entries in ``[-scale, scale]``."""
    return hnp.arrays(np.float64, (dim,), elements=_floats(-scale, scale))


def _orthogonal(dim: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix, sign-fixed)."""
    a = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))[None, :]


@st.composite
def spd_matrices(draw, dim: int, max_condition: float = MAX_CONDITION,
                 min_scale: float = 0.3, max_scale: float = 3.0):
    r"""Symmetric positive definite ``(dim, dim)`` matrices :math:`Q \operatorname{diag}(\lambda) Q^\top`.

    The largest eigenvalue is ``scale`` in ``[min_scale, max_scale]``; the
    condition number is ``10**c`` with ``c`` in ``[0, log10(max_condition)]``
    and is attained exactly when ``dim >= 2`` (smallest eigenvalue
    ``scale / 10**c``); the other eigenvalues lie in between (log-uniformly).
    ``Q`` is the identity or a Haar rotation drawn from a seed.
    """
    scale = draw(_floats(min_scale, max_scale))
    c = draw(_floats(0.0, float(np.log10(max_condition)))) if dim >= 2 else 0.0
    inner = draw(hnp.arrays(np.float64, (max(dim - 2, 0),), elements=_floats(0.0, 1.0)))
    u = np.concatenate([[0.0], inner, [1.0]]) if dim >= 2 else np.zeros(1)
    lam = scale * 10.0 ** (-c * u)
    if dim >= 2 and draw(st.booleans()):
        q = _orthogonal(dim, draw(seeds()))
    else:
        q = np.eye(dim)
    cov = (q * lam[None, :]) @ q.T
    return 0.5 * (cov + cov.T)


def well_conditioned_spd(dim: int):
    """SPD matrices with condition number at most 10."""
    return spd_matrices(dim, max_condition=10.0)


def ill_conditioned_spd(dim: int):
    """SPD matrices with condition number up to :data:`MAX_CONDITION` (1e3)."""
    return spd_matrices(dim, max_condition=MAX_CONDITION)


@st.composite
def mixture_weights(draw, k: int, min_weight: float = 0.05):
    """Weights of shape ``(k,)``, each at least ``min_weight / k``-ish, summing to 1 (round-off)."""
    raw = draw(hnp.arrays(np.float64, (k,), elements=_floats(min_weight, 1.0)))
    return raw / raw.sum()


def points(dim: int, min_n: int = 1, max_n: int = 6, scale: float = 3.0):
    """Point batches ``(n, dim)``, ``n`` in ``[min_n, max_n]``, entries in ``[-scale, scale]``.

    For points adapted to a distribution use them as standardised
    coordinates: ``x = mean + z @ chol.T``.
    """
    return st.integers(min_n, max_n).flatmap(
        lambda n: hnp.arrays(np.float64, (n, dim), elements=_floats(-scale, scale))
    )


@st.composite
def gaussians(draw, dim: int | None = None, max_condition: float = MAX_CONDITION):
    """:class:`~refscore.distributions.Gaussian` with drawn mean and SPD covariance."""
    d = draw(dims()) if dim is None else dim
    return Gaussian(draw(means(d)), draw(spd_matrices(d, max_condition=max_condition)))


@st.composite
def gaussian_mixtures(draw, dim: int | None = None, min_k: int = 1, max_k: int = 3,
                      max_condition: float = MAX_CONDITION):
    """:class:`~refscore.distributions.GaussianMixture` with 1..3 full-covariance components."""
    d = draw(dims()) if dim is None else dim
    k = draw(st.integers(min_k, max_k))
    w = draw(mixture_weights(k))
    mu = np.stack([draw(means(d)) for _ in range(k)])
    covs = np.stack([draw(spd_matrices(d, max_condition=max_condition)) for _ in range(k)])
    return GaussianMixture(w, mu, covs)


@st.composite
def student_ts(draw, dim: int | None = None, min_df: float = 0.5, max_df: float = 30.0,
               max_condition: float = MAX_CONDITION):
    """:class:`~refscore.distributions.StudentT` with ``df`` in ``[min_df, max_df]``."""
    d = draw(dims()) if dim is None else dim
    return StudentT(draw(means(d)), draw(spd_matrices(d, max_condition=max_condition)),
                    draw(_floats(min_df, max_df)))


@st.composite
def bananas(draw, max_b: float = 0.3, min_sigma1: float = 0.5, max_sigma1: float = 5.0):
    """:class:`~refscore.distributions.Banana` with ``b`` in ``[0, max_b]``."""
    return Banana(draw(_floats(0.0, max_b)), draw(_floats(min_sigma1, max_sigma1)))
