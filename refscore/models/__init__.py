"""Score models: structure objects whose parameters are one flat ``theta``.

See :mod:`refscore.models.base` for the primitives every model implements.
"""
from .base import BoundModel, ScoreModel

__all__ = ["ScoreModel", "BoundModel"]
