"""Score models: structure objects whose parameters are one flat ``theta``.

See :mod:`refscore.models.base` for the primitives every model implements.
"""
from .base import BoundModel, ScoreModel
from .gaussian import GaussianModel, LinearScore
from .mixture import GaussianMixtureModel

__all__ = ["ScoreModel", "BoundModel"]
__all__ += ["GaussianModel", "LinearScore", "GaussianMixtureModel"]
from .activations import ACTIVATIONS, get_activation
from .conditional import BoundNoiseConditional, NoiseConditional
from .mlp import MLPEnergy, MLPScore

__all__ += ["MLPScore", "MLPEnergy", "NoiseConditional", "BoundNoiseConditional", "ACTIVATIONS", "get_activation"]
