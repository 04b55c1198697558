r"""Exact references for diffusion models: schedules, exact denoisers, samplers and their exact laws.

Derivation: docs/diffusion.md.

* :mod:`refscore.diffusion.tables`: diffusers' discrete DDPM tables (beta schedules, zero terminal SNR,
  timestep spacings);
* :mod:`refscore.diffusion.schedules`: :math:`x_t = \alpha(t)x_0 + \sigma(t)\varepsilon` for the VP,
  sub-VP, VE, EDM, flow and discrete DDPM schedules, their derivatives, forward SDEs, inverse log-SNR
  maps and the converters between them.

Not imported by ``import refscore``: ``import refscore.diffusion`` (or ``from refscore import diffusion``).
"""
from . import schedules, tables
from .schedules import EDM, SCHEDULES, VE, VP, Flow, Schedule, SubVP, VPDiscrete, convert

__all__ = ["schedules", "tables", "Schedule", "VP", "SubVP", "VE", "EDM", "Flow", "VPDiscrete", "SCHEDULES",
           "convert"]
