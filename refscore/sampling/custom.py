r"""Your own targets in the samplers.

* On the NumPy backend any object with ``dim`` and ``score(x)`` (points
  ``(n, d)`` in, scores ``(n, d)`` out) is a target; MALA also needs
  ``logpdf(x) -> (n,)`` (up to a constant), annealed Langevin
  ``score(x, sigma)``.  :class:`CallableTarget` makes one from plain functions.
* On the Numba backend, :class:`NumbaTarget` takes your ``numba.njit``
  per-point functions, ``score(x (d,)) -> (d,)`` and, for MALA,
  ``logpdf(x (d,)) -> float``; the chains run in parallel with the same noise
  as every other backend, so ``backend="numpy"`` runs the same chains through
  the same functions (tested bitwise).

Shapes are checked before the run: a score that returns the wrong shape is a
``ValueError`` naming the shape expected.

Examples
--------
>>> import numpy as np
>>> from refscore.sampling import CallableTarget, ula
>>> t = CallableTarget(2, score=lambda x: -x, logpdf=lambda x: -0.5 * (x * x).sum(1))
>>> ula(t, np.zeros((4, 2)), 0.1, 10, seed=0).x.shape
(4, 2)
"""
from __future__ import annotations

import numpy as np

from .._validation import check_int

__all__ = ["CallableTarget", "NumbaTarget"]


class CallableTarget:
    """A target from plain vectorised functions: ``score(x (n, d)) -> (n, d)``, optional ``logpdf``.

    Parameters
    ----------
    dim : int
    score : callable
        ``x -> (n, d)``; with ``noise_conditional=True``, ``(x, sigma) -> (n, d)``.
    logpdf : callable, optional
        ``x -> (n,)``, up to an additive constant (MALA).
    noise_conditional : bool
        ``score`` takes the noise level too (annealed Langevin).
    """

    def __init__(self, dim, score, logpdf=None, noise_conditional=False):
        self.dim = check_int("dim", dim, 1)
        if not callable(score):
            raise TypeError(f"score must be callable, got {type(score).__name__}")
        if logpdf is not None and not callable(logpdf):
            raise TypeError(f"logpdf must be callable or None, got {type(logpdf).__name__}")
        self._score, self._logpdf, self.noise_conditional = score, logpdf, bool(noise_conditional)
        if logpdf is not None:
            self.logpdf = logpdf

    def score(self, x, sigma=None):
        return self._score(x) if sigma is None else self._score(x, sigma)

    def __repr__(self):
        return f"CallableTarget(dim={self.dim})"


class NumbaTarget:
    """A target from ``numba.njit`` per-point functions, run by the Numba backend in parallel.

    Parameters
    ----------
    dim : int
    score : numba dispatcher
        ``x (d,) float64 -> (d,) float64``.
    logpdf : numba dispatcher, optional
        ``x (d,) -> float``, up to an additive constant (MALA).

    The NumPy backend runs the same functions point by point (the reference
    route for checking them).
    """

    def __init__(self, dim, score, logpdf=None):
        self.dim = check_int("dim", dim, 1)
        for name, fn in (("score", score), ("logpdf", logpdf)):
            if fn is None and name == "logpdf":
                continue
            if not (callable(fn) and hasattr(fn, "py_func")):
                raise TypeError(f"{name} must be a numba.njit function, got {type(fn).__name__}")
        self.score_point, self.logpdf_point = score, logpdf
        if logpdf is not None:
            self.logpdf = self._logpdf

    def check(self, x0):
        """Call the functions once at a start point: the shapes must be (d,) and a float."""
        d = self.dim
        s = np.asarray(self.score_point(np.ascontiguousarray(x0[0], dtype=float)))
        if s.shape != (d,) or not np.issubdtype(s.dtype, np.floating):
            raise ValueError(f"score(x) must return a float array of shape ({d},) for a point x of shape "
                             f"({d},), got shape {s.shape} and dtype {s.dtype}")
        if self.logpdf_point is not None:
            lp = self.logpdf_point(np.ascontiguousarray(x0[0], dtype=float))
            if np.ndim(lp) != 0:
                raise ValueError(f"logpdf(x) must return a float for a point x of shape ({d},), "
                                 f"got shape {np.shape(lp)}")

    def score(self, x):
        x = np.ascontiguousarray(x, dtype=float)
        return np.stack([self.score_point(row) for row in x]) if len(x) else np.empty((0, self.dim))

    def _logpdf(self, x):
        x = np.ascontiguousarray(x, dtype=float)
        return np.array([self.logpdf_point(row) for row in x], dtype=float)

    def __repr__(self):
        return f"NumbaTarget(dim={self.dim}, score={self.score_point.py_func.__qualname__})"
