"""Score models: structure objects whose parameters are one flat ``theta``.

See :mod:`refscore.models.base` for the primitives every model implements.

- :class:`GaussianModel`, :class:`LinearScore` (affine scores),
  :class:`GaussianMixtureModel` (isotropic components, softmax weights);
- :class:`MLPScore`, :class:`MLPEnergy` (any depth; activations in
  :mod:`refscore.models.activations`);
- :class:`NoiseConditional` (s_θ(x, σ) = s_θ(x)/σ for multi-level DSM and annealed Langevin).
"""
from .activations import ACTIVATIONS, Activation, get_activation
from .base import BoundModel, ScoreModel
from .conditional import BoundNoiseConditional, NoiseConditional
from .gaussian import GaussianModel, LinearScore
from .mixture import GaussianMixtureModel
from .mlp import MLPScore
from .mlp_energy import MLPEnergy

__all__ = [
    "ScoreModel",
    "BoundModel",
    "GaussianModel",
    "LinearScore",
    "GaussianMixtureModel",
    "MLPScore",
    "MLPEnergy",
    "NoiseConditional",
    "BoundNoiseConditional",
    "ACTIVATIONS",
    "Activation",
    "get_activation",
]
