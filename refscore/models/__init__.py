"""Score models: structure objects whose parameters are one flat ``theta``.

See :mod:`refscore.models.base` for the primitives every model implements.
"""
from .base import BoundModel, ScoreModel
from .gaussian import GaussianModel, LinearScore
from .mixture import GaussianMixtureModel

__all__ = ["ScoreModel", "BoundModel"]
__all__ += ["GaussianModel", "LinearScore", "GaussianMixtureModel"]
