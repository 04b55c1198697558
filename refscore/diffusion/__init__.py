r"""Exact references for diffusion models: schedules, exact denoisers, samplers and their exact laws.

Derivation: docs/diffusion.md.

* :mod:`refscore.diffusion.tables`: diffusers' discrete DDPM tables (beta schedules, zero terminal SNR,
  timestep spacings);
* :mod:`refscore.diffusion.schedules`: :math:`x_t = \alpha(t)x_0 + \sigma(t)\varepsilon` for the VP,
  sub-VP, VE, EDM, flow and discrete DDPM schedules, their derivatives, forward SDEs, inverse log-SNR
  maps and the converters between them;
* :mod:`refscore.diffusion.parametrisations`: exact conversions between x0, eps, v, score and velocity
  predictions; EDM's preconditioning;
* :mod:`refscore.diffusion.denoiser`: the exact denoiser of Gaussian and Gaussian-mixture data, its
  predictions in every parametrisation, Jacobians and divergences;
* :mod:`refscore.diffusion.samplers`: the samplers (Euler and Heun with EDM's churn, DDIM, DDPM, Euler
  ancestral, DPM-Solver++(2M), score_sde's predictor-corrector, an adaptive probability-flow ODE solver) on
  NumPy with counter-based noise, in one registry, and the exact output law of a run on Gaussian data with its
  KL and W2 to the data law (the per-step affine maps are in :mod:`refscore.diffusion.laws`, the scalar
  coefficients the steps and the laws share in :mod:`refscore.diffusion.coefficients`);
* :mod:`refscore.diffusion.dsm`: the continuous-time denoising score matching loss (weightings uniform,
  sigma^2, likelihood g^2, EDM's), its population value by quadrature and its exact minimum on Gaussian data;
* :mod:`refscore.diffusion.models`: a trained noise-conditional score model as a denoiser for the samplers;
* :mod:`refscore.diffusion.likelihood`: the probability-flow ODE log-likelihood (closed form for Gaussian data,
  a high-accuracy ODE for mixtures), the exact moments of the Hutchinson/Skilling divergence estimates, and
  bits per dimension.

Not imported by ``import refscore``: ``import refscore.diffusion`` (or ``from refscore import diffusion``).
"""
from . import coefficients, denoiser, dsm, laws, likelihood, models, parametrisations, samplers, schedules, tables
from .denoiser import Denoiser
from .likelihood import gaussian_likelihood, pf_ode_likelihood
from .models import ModelDenoiser
from .parametrisations import PARAMETRISATIONS, convert_prediction, edm_preconditioning
from .samplers import SAMPLERS, output_distances, output_law, output_map, sample
from .schedules import EDM, SCHEDULES, VE, VP, Flow, Schedule, SubVP, VPDiscrete, convert

__all__ = ["schedules", "tables", "parametrisations", "denoiser", "coefficients", "laws", "samplers", "dsm", "models",
           "likelihood",
           "Schedule", "VP", "SubVP", "VE", "EDM", "Flow", "VPDiscrete", "SCHEDULES", "convert",
           "Denoiser", "ModelDenoiser", "PARAMETRISATIONS", "convert_prediction", "edm_preconditioning",
           "SAMPLERS", "sample", "output_map", "output_law", "output_distances", "gaussian_likelihood",
           "pf_ode_likelihood"]
