"""The diffusion kinds' hypotheses of the golden diagnosis (internal): your diffusion code, one step at a time."""
from __future__ import annotations

from .cases import DIFFUSION_KINDS

__all__ = ["KINDS", "structural", "patterns"]

#: the case kinds this module diagnoses
KINDS = DIFFUSION_KINDS


def structural(ctx, Q):
    return []


def patterns(ctx, Q, failing) -> tuple:
    return ()
