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
``ValueError`` naming the shape expected.  A :class:`NumbaTarget`'s score is
checked on every call of the run too (a wrong length later on is the same
``ValueError``, naming the chain and the step), and an exception raised by
your function inside the Numba kernel reaches you as itself, with a note
saying where.  A :class:`CallableTarget`'s score may return any real
array-like; a complex one is a ``TypeError``.

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

from .._kernels.score_blocks import FAULT_LOGPDF_RAISED, FAULT_SCORE_LENGTH, FAULT_SCORE_RAISED
from .._validation import as_float_array, check_int

__all__ = ["CallableTarget", "NumbaTarget"]


def _name(fn):
    """A readable name of a user's function for error messages (a callable object: its repr)."""
    return fn.__qualname__ if hasattr(fn, "__qualname__") else repr(fn)


class CallableTarget:
    """A target from plain vectorised functions: ``score(x (n, d)) -> (n, d)``, optional ``logpdf``.

    Parameters
    ----------
    dim : int
    score : callable
        ``x -> (n, d)`` real array-like; with ``noise_conditional=True``,
        ``(x, sigma) -> (n, d)``.
    logpdf : callable, optional
        ``x -> (n,)``, up to an additive constant (MALA).
    noise_conditional : bool
        ``score`` takes the noise level too (annealed Langevin).

    Raises
    ------
    TypeError
        From ``score`` / ``logpdf`` when the function returns complex or
        non-numeric values (a complex score would otherwise lose its imaginary
        part silently in the update).
    """

    def __init__(self, dim, score, logpdf=None, noise_conditional=False):
        self.dim = check_int("dim", dim, 1)
        if not callable(score):
            raise TypeError(f"score must be callable, got {type(score).__name__}")
        if logpdf is not None and not callable(logpdf):
            raise TypeError(f"logpdf must be callable or None, got {type(logpdf).__name__}")
        self._score, self._logpdf, self.noise_conditional = score, logpdf, bool(noise_conditional)
        if logpdf is not None:
            self.logpdf = self._checked_logpdf

    def score(self, x, sigma=None):
        value = self._score(x) if sigma is None else self._score(x, sigma)
        return as_float_array(value, f"the value of the score function {_name(self._score)}")

    def _checked_logpdf(self, x):
        return as_float_array(self._logpdf(x), f"the value of the logpdf function {_name(self._logpdf)}")

    def __repr__(self):
        return f"CallableTarget(dim={self.dim})"


def _check_nopython(name, fn):
    """A user's function must be a Numba dispatcher compiled in nopython mode."""
    if not (callable(fn) and hasattr(fn, "py_func") and hasattr(fn, "targetoptions")):
        raise TypeError(f"{name} must be a numba.njit function, got {type(fn).__name__}")
    opts = fn.targetoptions
    if opts.get("forceobj") or not opts.get("nopython"):
        raise TypeError(
            f"{name} must be compiled in nopython mode (numba.njit), got {_name(fn.py_func)} compiled "
            f"with {opts}: an object-mode function cannot be called from the parallel sampler kernels"
        )


class NumbaTarget:
    """A target from ``numba.njit`` per-point functions, run by the Numba backend in parallel.

    Parameters
    ----------
    dim : int
    score : numba dispatcher
        ``x (d,) float64 -> (d,) float64``, compiled in nopython mode.
    logpdf : numba dispatcher, optional
        ``x (d,) -> float``, up to an additive constant (MALA).

    The NumPy backend runs the same functions point by point (the reference
    route for checking them).

    Raises
    ------
    TypeError
        When a function is not a ``numba.njit`` dispatcher, or is an object-mode
        one (``numba.jit(forceobj=True)``).
    """

    #: one score, ``score(x)``: not for annealed Langevin
    noise_conditional = False

    def __init__(self, dim, score, logpdf=None):
        self.dim = check_int("dim", dim, 1)
        _check_nopython("score", score)
        if logpdf is not None:
            _check_nopython("logpdf", logpdf)
        self.score_point, self.logpdf_point = score, logpdf
        if logpdf is not None:
            self.logpdf = self._logpdf

    def _wrong_length(self, got, where):
        d = self.dim
        return ValueError(f"score(x) must return a float array of shape ({d},) for a point x of shape ({d},), "
                          f"got shape {got} {where}")

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
        out = np.empty((len(x), self.dim))
        for row, point in enumerate(x):
            s = np.asarray(self.score_point(point))
            if s.shape != (self.dim,):
                raise self._wrong_length(s.shape, f"at row {row} of x")
            out[row] = s
        return out

    def _logpdf(self, x):
        x = np.ascontiguousarray(x, dtype=float)
        return np.array([self.logpdf_point(row) for row in x], dtype=float)

    def __repr__(self):
        return f"NumbaTarget(dim={self.dim}, score={self.score_point.py_func.__qualname__})"


def raise_kernel_fault(target, fault, x, chain0):
    """Raise what went wrong in a Numba kernel's call of ``target``'s functions.

    ``fault`` (n, 3) int64 rows ``(kind, step, length)`` as written by
    :mod:`refscore._kernels.custom_sampler`; ``x`` holds, in the row of a
    faulty chain, the point of the failing call.  The first faulty chain is
    reported: a wrong score length as the ``ValueError`` of
    :meth:`NumbaTarget.check`; an exception of the user's function by calling
    it again at that point from Python, which raises the user's own exception
    (type and message), with a note saying where it happened.
    """
    c = int(np.flatnonzero(fault[:, 0])[0])
    kind, step, length = (int(v) for v in fault[c])
    where = f"at chain {chain0 + c}, step {step} (backend='numba')"
    if kind == FAULT_SCORE_LENGTH:
        raise target._wrong_length((length,), where)
    name, fn = ("score", target.score_point) if kind == FAULT_SCORE_RAISED else ("logpdf", target.logpdf_point)
    if kind not in (FAULT_SCORE_RAISED, FAULT_LOGPDF_RAISED):  # pragma: no cover - the kernels write no other kind
        raise RuntimeError(f"unknown fault kind {kind} {where}")
    point = np.array(x[c], dtype=float)
    try:
        fn(point)
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"raised by the NumbaTarget's {name} ({_name(fn.py_func)}) {where}, at x = {point!r}")
        raise
    raise RuntimeError(f"the NumbaTarget's {name} ({_name(fn.py_func)}) raised inside the Numba kernel {where}, "
                       f"at x = {point!r}, but not when called again there: it is not a function of x alone")
