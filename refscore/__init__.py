"""refscore: a reference implementation of score matching.

Hand-derived scores, Jacobians, Hessian traces and parameter gradients; the five
losses (ESM, ISM, DSM, SSM, SSM-VR); exact expectations on closed-form targets;
Langevin samplers on NumPy, Numba and numba.cuda with identical noise.

Families stay namespaces: :mod:`refscore.models`, :mod:`refscore.losses`,
:mod:`refscore.sampling`, :mod:`refscore.metrics`, :mod:`refscore.conventions`,
:mod:`refscore.golden`.  The most used names are re-exported here.
"""
__version__ = "0.1.0"

from . import conventions, losses, metrics, models, noise, quadrature, sampling  # noqa: E402
from .distributions import Banana, Gaussian, GaussianMixture, StudentT  # noqa: E402
from .losses import dsm, dsm_multi, esm, ism, projections, ssm, ssm_vr  # noqa: E402
from .metrics import ksd, ksd_test, mmd, mode_weights, moments  # noqa: E402
from .models import (  # noqa: E402
    GaussianMixtureModel,
    GaussianModel,
    LinearScore,
    MLPEnergy,
    MLPScore,
    NoiseConditional,
)
from .quadrature import expectation, population_loss  # noqa: E402
from .sampling import annealed_langevin, mala, ula  # noqa: E402
from .training import fit  # noqa: E402

__all__ = [
    "__version__",
    # namespaces
    "models", "losses", "sampling", "metrics", "conventions", "quadrature", "noise",
    # distributions
    "Gaussian", "GaussianMixture", "StudentT", "Banana",
    # models
    "GaussianModel", "LinearScore", "GaussianMixtureModel", "MLPScore", "MLPEnergy",
    "NoiseConditional",
    # losses
    "esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi", "projections",
    # exact expectations
    "expectation", "population_loss",
    # sampling, training, metrics
    "ula", "mala", "annealed_langevin", "fit", "mmd", "ksd", "ksd_test", "mode_weights", "moments",
]
