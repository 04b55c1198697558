r"""Golden files: refscore's values on fixed inputs, for validating other backends.

A user with a JAX, PyTorch or C++ implementation of score matching writes the
golden files once, computes the same quantities on the stored inputs with their
own code, and lets :func:`check` say, quantity by quantity, what agrees::

    refscore golden --out golden/           # golden/golden.npz + golden/manifest.json
    python my_backend.py golden/ values.npz # user code: same keys, own numbers
    refscore check golden/ values.npz       # PASS/FAIL per key, coverage, diagnosis

Files
-----
``golden.npz``
    One array per key ``"<case>/<name>"`` (every array float64).  Each case holds
    its *inputs* and the *quantities* refscore computed from them.
``manifest.json``
    Format version, refscore version, the conventions in words
    (:data:`CONVENTIONS`), the meaning of every input and quantity of every case
    kind (:data:`CASE_KINDS`), and per case its kind, the model (class and
    constructor arguments, ``n_params``, the ``theta`` layout in words) or the
    closed-form target (class and arguments) with the sampler or kernel
    parameters, the seed the inputs were drawn from, the keys and shapes, and
    the case's ``binding``: digests of its arrays and of every field of its
    entry, so that :func:`load` refuses a description edited after writing.

Case kinds (:data:`CASE_KINDS`)
-------------------------------
``losses`` (69 cases, the only kind of format 1)
    Dimensions 1, 2 and 5; :class:`~refscore.models.GaussianModel`,
    :class:`~refscore.models.LinearScore`,
    :class:`~refscore.models.GaussianMixtureModel` (2 components), and
    :class:`~refscore.models.MLPScore` / :class:`~refscore.models.MLPEnergy` with
    one and two hidden layers for each activation (tanh, softplus, sigmoid, silu,
    gelu); 23 quantities each (:data:`QUANTITIES`): score, Jacobian, trace, JVP,
    sphere projections and every loss with its gradient over ``theta``.
``dsm_multi`` (4 cases)
    NCSN's multi-noise DSM (:func:`refscore.losses.dsm_multi`) of a
    :class:`~refscore.models.NoiseConditional` model with a noise label per
    point, ``weighting="sigma2"`` and ``"none"``, with gradients.
``ksd`` (3 cases)
    The IMQ Stein kernel matrix and the U- and V-statistics of the squared
    kernel Stein discrepancy (:mod:`refscore.metrics`; IMQ is the only Stein
    kernel refscore has) against a closed-form target.
``ula``, ``mala``, ``annealed`` (3 cases each)
    Sampler trajectories on closed-form targets (Gaussian, Gaussian mixtures,
    and their noised versions for annealed Langevin) with the exact noise stored
    as an input (``z``, and MALA's uniforms ``u``), so that a foreign sampler fed
    the same noise agrees to round-off; MALA's accept decisions and log
    acceptance ratios are stored.
``kinetic_baoab``, ``kinetic_obabo``, ``kinetic_aboba`` (3 cases each, format 3)
    Kinetic Langevin trajectories by each splitting, unit mass: the start ``x0``,
    ``v0``, the ``step`` and ``friction`` and the ``2 d`` normals ``xi`` of every
    step stored, the positions ``states`` and ``momenta`` recorded.
``diffusion_schedule``, ``diffusion_denoiser``, ``diffusion_coefficients`` (format 4)
    :mod:`refscore.diffusion`'s schedules at stored times with each named
    configuration's grid (DDPM's linear table, Stable Diffusion's scaled_linear with
    each timestep spacing and with zero terminal SNR, score_sde's VE and VP, EDM's
    Karras grid at 18 and 40 steps, flow), the exact denoiser of Gaussian and mixture
    data in every parametrisation, and per-step coefficient tables (DDIM's
    :math:`\sigma_t(\eta)`, DDPM's posterior, EDM's churn :math:`\gamma`,
    DPM-Solver++(2M), EDM's preconditioning).
``diffusion_<sampler>`` (format 4, one kind per sampler of :data:`refscore.diffusion.SAMPLERS`)
    Trajectories on the exact denoiser: the start ``x``, the grid ``t`` and the noise
    ``z`` of a stochastic run stored, the schedule, data, prediction type and options
    in the manifest; every state (``trajectory``) and the denoiser outputs each step
    used (``x0_hat``) recorded.

The losses are those of :mod:`refscore.losses` with ``reduction="mean"``:

.. math::

    \mathrm{esm} &= \tfrac1n\textstyle\sum_k \tfrac12\lVert s_\theta(x_k) - t_k\rVert^2, \qquad
    \mathrm{ism} = \tfrac1n\textstyle\sum_k \big[\operatorname{tr}\nabla_x s_\theta(x_k)
        + \tfrac12\lVert s_\theta(x_k)\rVert^2\big], \\
    \mathrm{dsm} &= \tfrac1n\textstyle\sum_k \tfrac12\big\lVert s_\theta(x_k + \sigma\epsilon_k)
        + \epsilon_k/\sigma\big\rVert^2, \\
    \mathrm{ssm} &= \tfrac1{mn}\textstyle\sum_{j,k} \big[v_{jk}^\top\nabla_x s_\theta(x_k)\,v_{jk}
        + \tfrac12(v_{jk}^\top s_\theta(x_k))^2\big], \qquad
    \mathrm{ssm\_vr}: \tfrac12(v^\top s)^2 \to \tfrac12\lVert s\rVert^2 ,

with sphere projections :math:`v = \sqrt d\, z/\lVert z\rVert` so that
:math:`E[vv^\top] = I`.

Modules
-------
:mod:`refscore.golden.cases`
    The case table (:data:`~refscore.golden.cases.KINDS`): per kind its inputs, its
    quantities and how refscore computes them; the ``losses`` kind follows the loss
    and projection registries of :mod:`refscore.losses`.
:mod:`refscore.golden.store`
    The file format: :func:`load`, the writer, the manifest checks and binding.
:mod:`refscore.golden.checking`
    :func:`compute` and :func:`check`: rows, coverage, verdict.
:mod:`refscore.golden.diagnosis`
    What a failing quantity is likely to be (:class:`Diagnosis`).

Checking
--------
:func:`check` compares the keys provided: its verdict covers them (a subset of
cases and quantities is fine), its summary states the coverage, and
``require_all=True`` also fails a quantity left out of a provided case.  For
every failing quantity it tests a small set of hypotheses (a constant factor, a
power of :math:`\sigma` or of :math:`d`, a sign flip, a transposed Jacobian, a
gradient missing one term, a failure only at :math:`d > 1` or for one
projection kind, known variants of DSM, KSD and the Langevin step) and names the
matching convention of :mod:`refscore.conventions` (``result.diagnosis``).

References
----------
Eqs. (2), (3), (4), (6), (7); Hyvärinen (2005); Vincent (2011); Song, Garg, Shi &
Ermon (2019); Song & Ermon (2019); Liu, Lee & Jordan (2016).

Examples
--------
>>> import tempfile, refscore.golden as golden
>>> d = tempfile.mkdtemp()
>>> golden.write(d)                                   # doctest: +SKIP
>>> golden.check(d, golden.compute(d)).passed         # doctest: +SKIP
True
"""

from __future__ import annotations

import pathlib

from .cases import (ACTIVATION_NAMES, BASE_SEED, CASE_KINDS, CONVENTIONS, DIMS, HIDDEN, INPUTS, MIXTURE_COMPONENTS,
                    MULTI_SIGMAS, N_CHAINS, N_KSD_POINTS, N_MULTI_POINTS, N_POINTS, N_PROJECTIONS, PROJECTION_KINDS,
                    QUANTITIES, TOLERANCES, build_model, build_target, case_inputs, case_specs, case_values,
                    extra_case_specs)
from .checking import CheckResult, CheckRow, check, compute
from .diagnosis import Diagnosis
from .store import DATA_FILE, FORMAT_VERSION, MANIFEST_FILE, READABLE_VERSIONS, Case, Golden, load, write_cases

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CONVENTIONS",
    "INPUTS",
    "QUANTITIES",
    "CASE_KINDS",
    "TOLERANCES",
    "Case",
    "Golden",
    "CheckRow",
    "CheckResult",
    "Diagnosis",
    "case_specs",
    "extra_case_specs",
    "case_values",
    "case_inputs",
    "build_model",
    "build_target",
    "write",
    "load",
    "compute",
    "check",
]


def write(directory, *, force=False) -> pathlib.Path:
    r"""Write the golden files ``golden.npz`` and ``manifest.json`` of every case into ``directory``.

    Every input is drawn from a fixed seed (recorded per case) and every
    quantity is computed by refscore's public API (models, :mod:`refscore.losses`,
    :mod:`refscore.metrics`, :mod:`refscore.sampling` on its NumPy backend), so
    two runs of the same refscore version write the same numbers.  The cases
    are :func:`case_specs` (kind ``losses``) and :func:`extra_case_specs`,
    written by :func:`refscore.golden.store.write_cases`.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    force : bool, keyword-only
        Overwrite the golden files of an existing non-empty directory (other
        files in it are left alone).  Without it a non-empty directory raises.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    FileExistsError
        ``directory`` exists and is not empty, and ``force`` is False; or it is
        a file.
    """
    return write_cases(directory, {**case_specs(), **extra_case_specs()}, force=force)
