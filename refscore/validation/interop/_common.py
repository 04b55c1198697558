"""Shared plumbing of the interop backends: reading cases, the theta layout, variants.

Nothing here computes a score or a derivative; the layout is re-derived from
the documented theta layout (docs/derivations.md §3; not from refscore.models) so that a layout bug in refscore shows too.
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


def mlp_shapes(kwargs, out_dim):
    """[(out, in), ...] of an MLP: dim -> hidden... -> out_dim (the documented layout)."""
    sizes = [kwargs["dim"], *kwargs["hidden"], out_dim]
    return [(sizes[l + 1], sizes[l]) for l in range(len(sizes) - 1)]


def split_mlp(theta, shapes):
    """Views [(W_l, b_l)] of a flat theta: W_l.ravel() (row-major) then b_l, layer by layer."""
    out, p = [], 0
    for o, i in shapes:
        W = theta[p : p + o * i].reshape(o, i)
        p += o * i
        b = theta[p : p + o]
        p += o
        out.append((W, b))
    if p != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} numbers, the layout {shapes} needs {p}")
    return out


def tril_indices(d):
    return np.tril_indices(d)


def to_numpy_dict(case_name, quantities):
    return {f"{case_name}/{k}": np.asarray(v, dtype=float) for k, v in quantities.items()}
