r"""Counter-based standard normal noise, identical on every backend.

Derivation: docs/derivations.md §9 (Philox4x32-10, uniform doubles, Box–Muller).

:func:`normal` is a pure function of ``(seed, chain, step, coordinate)``:
Philox4x32-10 (Salmon et al. 2011) maps a 128-bit counter and a 64-bit key to
four 32-bit words, and Box–Muller turns them into two independent
:math:`N(0, 1)` draws, so one Philox call serves a *pair* of coordinates.

Counter layout (documented, stable)::

    key     = (seed & 0xffffffff, seed >> 32)          seed in [0, 2**64)
    counter = (pair, step, chain, stream)              each in [0, 2**32)
    pair    = coordinate // 2; coordinate 2j takes the first normal of the
              pair, 2j + 1 the second (an odd dimension drops the last one)
    stream  = 0 for Langevin noise, 1 for MALA's accept/reject uniforms

so a coordinate's value never depends on ``dim`` (``normal(s, c, t, 5)[:3] ==
normal(s, c, t, 3)``), on the number of chains, on threads or on chunking.

The arithmetic lives once in :mod:`refscore._philox` as plain Python on
``uint64`` words and float64 values; NumPy runs it vectorised here, the Numba
and numba.cuda kernels compile the very same source, and Box–Muller's
``log``, ``sin`` and ``cos`` are fdlibm polynomials built from ``+ - * /`` and
``sqrt``, so the three backends produce bitwise identical noise (tested).

.. math::

    u_1 = (k + 1)\,2^{-53} \in (0, 1],\quad
    \theta \text{ uniform on the circle},\quad
    z_0 = \sqrt{-2\log u_1}\cos\theta,\; z_1 = \sqrt{-2\log u_1}\sin\theta .

References
----------
J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC11 (2011) — Philox4x32-10, Random123 known answers.
G. E. P. Box, M. E. Muller, Ann. Math. Statist. 29 (1958) — the transform.
Noise enters the Langevin update, eq. (4).

Examples
--------
>>> from refscore.noise import normal
>>> z = normal(seed=0, chain=[0, 1, 2], step=5, dim=4)
>>> z.shape
(3, 4)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ._kernels import philox as _philox

__all__ = ["normal", "uniform", "log_unit", "NoiseOrigin", "COUNTER_LAYOUT"]

COUNTER_LAYOUT = _philox.COUNTER_LAYOUT

_NP = _philox.make(lambda f: f, sqrt=np.sqrt)

_MAX32 = 2 ** 32


def _check_seed(seed) -> tuple[np.uint64, np.uint64]:
    """Validate ``seed`` and split it into the two 32-bit key words."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int in [0, 2**64), got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed}")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def _check_counter(name, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer or an integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= _MAX32):
        raise ValueError(f"{name} must lie in [0, 2**32), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint64)


def _check_dim(dim) -> int:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be a positive int, got {type(dim).__name__}")
    if dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim}")
    return int(dim)


def _normal_block(k0, k1, chain, step, dim):
    """Clean-input core: ``chain``, ``step`` uint64 arrays broadcast together."""
    npairs = (dim + 1) // 2
    chain, step = np.broadcast_arrays(chain, step)
    pair = np.arange(npairs, dtype=np.uint64)
    z0, z1 = _NP.normal_pair(k0, k1, chain[..., None], step[..., None], pair, np.uint64(0))
    out = np.empty(chain.shape + (2 * npairs,))
    out[..., 0::2] = z0
    out[..., 1::2] = z1
    return out[..., :dim]


def normal(seed, chain, step, dim) -> np.ndarray:
    r"""Standard normal noise :math:`z_{\text{chain},\text{step}} \in \mathbb{R}^{dim}`.

    Parameters
    ----------
    seed : int
        Key, in ``[0, 2**64)``.
    chain, step : int or integer array
        Counters in ``[0, 2**32)``; arrays broadcast together.
    dim : int
        Number of coordinates; coordinate ``i`` does not depend on ``dim``.

    Returns
    -------
    ndarray
        Shape ``broadcast(chain, step).shape + (dim,)``, float64.

    Notes
    -----
    Counter layout: :data:`COUNTER_LAYOUT`.  Bitwise equal to the Numba and
    numba.cuda kernels of :mod:`refscore.sampling`.

    .. math::

        z_{2j}, z_{2j+1} = \mathrm{BoxMuller}(\mathrm{Philox4x32\text{-}10}_{key}(j, step, chain, 0))

    References
    ----------
    Salmon et al. (2011), Philox4x32-10; Box & Muller (1958); eq. (4).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.noise import normal
    >>> bool(np.array_equal(normal(7, 3, 10, 5)[:3], normal(7, 3, 10, 3)))
    True
    """
    k0, k1 = _check_seed(seed)
    return _normal_block(k0, k1, _check_counter("chain", chain), _check_counter("step", step),
                         _check_dim(dim))


def uniform(seed, chain, step) -> np.ndarray:
    r"""Uniform on (0, 1) from stream 1, counter ``(0, step, chain, 1)``: MALA's
    accept/reject draw.  :math:`u = (k + 1/2)\,2^{-53}`, ``k`` 53 random bits.

    Examples
    --------
    >>> from refscore.noise import uniform
    >>> 0.0 < float(uniform(1, 0, 0)) < 1.0
    True
    """
    k0, k1 = _check_seed(seed)
    chain, step = np.broadcast_arrays(_check_counter("chain", chain), _check_counter("step", step))
    return _NP.uniform(k0, k1, chain, step, np.uint64(1)) * np.ones(chain.shape)


def log_unit(u) -> np.ndarray:
    r""":math:`\log u` for ``u`` in :math:`[2^{-53}, 1]` with the fdlibm polynomial every backend compiles.

    MALA accepts where :math:`\log u < \log\alpha` (docs/derivations.md §8.3); this
    ``log`` is built from ``+ - * /`` only (:mod:`refscore._kernels.philox`), so the
    NumPy, Numba and CUDA-simulator decisions agree bit for bit.  Within a few ulp
    of ``np.log`` (tested); outside :math:`[2^{-53}, 1]` it is not ``log``.

    Examples
    --------
    >>> from refscore.noise import log_unit
    >>> float(log_unit(0.5))
    -0.6931471805599453
    """
    return _NP.log_unit(np.asarray(u, dtype=float))


@dataclass(frozen=True)
class NoiseOrigin:
    """Where a run's noise starts: the seed, the stream of its first row and its first step.

    Row ``i`` of the run's states draws chain stream ``chain0 + i``; its first
    step draws global step ``step0``, and the step counter runs on from there
    (across annealing levels too).  A block of chains or a chunk of steps of a
    run is the same run from a shifted origin (:meth:`shifted`), which is why a
    run's result does not depend on how it is cut (docs/derivations.md §9).
    The samplers build one from ``seed``; backends pass it along, and the
    compiled kernels receive its plain integers (:attr:`key`, ``chain0``,
    ``step0``) at their boundary.

    Parameters
    ----------
    seed : int in [0, 2**64)
    chain0, step0 : int in [0, 2**32)

    Examples
    --------
    >>> from refscore.noise import NoiseOrigin, normal
    >>> import numpy as np
    >>> o = NoiseOrigin(7).shifted(chains=3)
    >>> bool(np.array_equal(o.normal(2, 5, 4), normal(7, [3, 4], 5, 4)))
    True
    """

    seed: int
    chain0: int = 0
    step0: int = 0

    def __post_init__(self):
        _check_seed(self.seed)
        object.__setattr__(self, "seed", int(self.seed))
        for name in ("chain0", "step0"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int in [0, 2**32), got {type(value).__name__}")
            if not 0 <= value < _MAX32:
                raise ValueError(f"{name} must be an int in [0, 2**32), got {value}")
            object.__setattr__(self, name, int(value))

    @property
    def key(self) -> tuple[np.uint64, np.uint64]:
        """The two 32-bit key words of ``seed``, ``(seed & 0xffffffff, seed >> 32)``."""
        return _check_seed(self.seed)

    def shifted(self, chains=0, steps=0) -> "NoiseOrigin":
        """The origin of the rows from ``chains`` on, ``steps`` steps later."""
        return NoiseOrigin(self.seed, self.chain0 + int(chains), self.step0 + int(steps))

    def _chains(self, n_rows):
        return np.arange(self.chain0, self.chain0 + n_rows, dtype=np.uint64)

    def normal(self, n_rows, step, dim) -> np.ndarray:
        """``(n_rows, dim)`` normals of rows ``0 .. n_rows - 1`` (chains ``chain0 + i``) at global ``step``."""
        k0, k1 = self.key
        return _normal_block(k0, k1, self._chains(n_rows), np.uint64(step), dim)

    def uniform(self, n_rows, step) -> np.ndarray:
        """``(n_rows,)`` MALA uniforms (stream 1) of the same rows at global ``step``."""
        k0, k1 = self.key
        return _NP.uniform(k0, k1, self._chains(n_rows), np.uint64(step), np.uint64(1))
