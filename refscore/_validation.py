"""Input checks shared by every public function.

Public wrappers call these at the boundary, then hand clean float64 arrays to
private kernels that only do math (scipy's ``logpdf``/``_logpdf`` split).
Every error names the argument, says what was expected and echoes what was
received.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_points",
    "as_float_array",
    "check_finite",
    "check_positive",
    "check_theta",
    "as_rng",
    "check_choice",
    "check_sigmas",
    "per_point_sigma",
]


#: dtype kinds that convert to float64 without losing information silently:
#: bool, signed and unsigned integers, floats
_REAL_KINDS = "biuf"


def as_float_array(value, name: str) -> np.ndarray:
    """``np.asarray(value, dtype=float)`` for real input, with a named ``TypeError`` otherwise.

    Complex input is refused (``np.asarray(z, dtype=float)`` would silently drop
    the imaginary part), and so are strings (which NumPy would parse) and object
    arrays unless every element is a real number.
    """
    try:
        raw = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be convertible to a float array, got {type(value).__name__}") from exc
    kind = raw.dtype.kind
    if kind not in _REAL_KINDS and not (
        kind == "O" and all(isinstance(v, numbers.Real) for v in raw.flat)
    ):
        if kind == "c":
            raise TypeError(f"{name} must be a real array, got dtype {raw.dtype}")
        raise TypeError(f"{name} must be convertible to a float array of real numbers, got dtype {raw.dtype}")
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{name} must be convertible to a float array, got {type(value).__name__}") from exc
    return arr


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or infinity."""
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, got {bad} non-finite value(s)")


def as_points(x, dim: int, name: str = "x", finite: bool = True) -> tuple[np.ndarray, bool]:
    """Convert ``x`` to a float64 batch of shape ``(n, dim)``.

    Returns ``(points, single)`` where ``single`` is True when ``x`` was one point
    of shape ``(dim,)``; callers drop the batch axis of their result in that case.
    """
    arr = as_float_array(x, name)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(
            f"{name} must have shape (n, {dim}) or ({dim},), got shape {np.shape(x)}"
        )
    if arr.shape[0] == 0:
        # every batch statistic (a mean loss, a score batch) needs a point; an
        # empty batch is a caller's bug, not an empty answer
        raise ValueError(f"{name} must hold at least one point, got shape {arr.shape}")
    if finite:
        check_finite(name, arr)
    return arr, single


def as_start_points(x, name: str, dim: int | None = None) -> np.ndarray:
    """A sampler's starting points: float64 ``(n, d)`` with ``n, d >= 1``, finite, and ``dim`` columns when given
    (the data's dimension)."""
    arr = as_float_array(x, name)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got shape {arr.shape}")
    check_finite(name, arr)
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have d = {dim} columns (the data's dimension), got {arr.shape[1]}")
    return arr


def check_positive(name: str, value, allow_array: bool = False) -> float | np.ndarray:
    """Return ``value`` as float (or float array) after checking it is finite and > 0."""
    if allow_array:
        arr = as_float_array(value, name)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        return arr
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a real number, got an array of dtype {value.dtype}")
        if value.size != 1:
            raise TypeError(f"{name} must be a real number, got an array of shape {value.shape}")
        value = value.reshape(())[()]
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_theta(theta, n_params: int, layout: str = "", name: str = "theta") -> np.ndarray:
    """Check a flat parameter vector: shape ``(n_params,)``, finite."""
    arr = as_float_array(theta, name)
    if arr.shape != (n_params,):
        hint = f" (layout: {layout})" if layout else ""
        raise ValueError(f"{name} must have shape ({n_params},){hint}, got shape {arr.shape}")
    check_finite(name, arr)
    return arr


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum`` (``bool`` refused): the one integer validator."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def as_rng(rng) -> np.random.Generator:
    """Normalise ``None | int | Generator`` to a ``np.random.Generator`` (SPEC 7)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int or a numpy.random.Generator, got {type(rng).__name__}")


def check_sigmas(sigmas, name: str = "sigmas") -> np.ndarray:
    """Noise levels of annealing: 1-D, finite, > 0, strictly decreasing (σ_1 > … > σ_L)."""
    arr = as_float_array(sigmas, name)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D array with at least one level, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {arr!r}")
    if np.any(np.diff(arr) >= 0):
        raise ValueError(f"{name} must be strictly decreasing (largest first, σ_L last), got {arr!r}")
    return arr


def per_point_sigma(sigma, n: int, single: bool, name: str = "sigma") -> np.ndarray:
    """A noise level per point: a scalar (broadcast) or an ``(n,)`` array, finite and > 0."""
    s = as_float_array(sigma, name)
    if s.ndim == 0:
        s = np.full(n, float(s))
    elif not (single and s.shape == (1,)) and s.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) to match x, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {sigma!r}")
    return s
