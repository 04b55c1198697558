"""Shared plumbing of the interop backends: reading cases, variants, the values dict.

Nothing here computes a score or a derivative.  The models and the theta <->
parameter mapping come from :mod:`refscore.interop` (whose layout is
re-derived from the documented theta layout, docs/derivations.md §3 and §7,
not from refscore.models, so that a layout bug in refscore shows too).
"""
from __future__ import annotations

import numpy as np

from refscore import golden as _golden

from . import VARIANTS


def load(golden):
    """A :class:`refscore.golden.Golden` from a directory (or pass one through)."""
    return golden if isinstance(golden, _golden.Golden) else _golden.load(golden)


def check_variant(variant):
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be None or one of {sorted(VARIANTS)}, got {variant!r}")


def select(g, cases):
    names = list(g.cases) if cases is None else list(cases)
    unknown = [n for n in names if n not in g.cases]
    if unknown:
        raise ValueError(f"cases not in the golden file: {unknown}")
    return [g.cases[n] for n in names]


def to_numpy_dict(case_name, quantities):
    return {f"{case_name}/{k}": np.asarray(v, dtype=float) for k, v in quantities.items()}
