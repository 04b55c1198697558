r"""The conventions ledger: refscore's choices, the common variants, and exact conversions.

Derivation: docs/derivations.md §1.8 (the constants linking the losses), §8.4 (step conventions).

Score-matching code in the wild differs from refscore by constants that do not
change the minimiser but do change every number a user compares: the loss
offsets between ESM, ISM and DSM, the scaling of DSM, the normalisation of SSM
projections, and the parametrisation of the Langevin step.  Each is derived
once here, as a function, and tested (``tests/test_conventions.py``).  The
README renders :data:`TABLE` with :func:`markdown_table`.

refscore's conventions (the README's conventions table):

* ESM :math:`= \tfrac12 E\lVert s_\theta - \nabla\log p\rVert^2` (eq. (2));
  ISM :math:`= E[\operatorname{tr}\nabla s_\theta + \tfrac12\lVert s_\theta\rVert^2]` (eq 3).
* DSM :math:`= \tfrac12 E\lVert s_\theta(x+\sigma z) + z/\sigma\rVert^2`,
  :math:`z\sim N(0,I)`: eq. (6) with :math:`\epsilon = \sigma z`.
* SSM / SSM-VR with projections normalised to :math:`E[vv^\top] = I` (eq 7).
* Langevin: :math:`x \leftarrow x + \eta\, s(x) + \sqrt{2\eta}\, z` (eq 4);
  annealed: :math:`\eta_i = \eta\,\sigma_i^2/\sigma_L^2`.
* KSD: the unbiased U-statistic of the squared discrepancy, IMQ kernel
  :math:`(c^2 + r^2)^\beta`, :math:`\beta\in(-1,0)` (:mod:`refscore.metrics`).

Every variant in :data:`TABLE` that comes from released code names its
source (repository, file, function and the lines relied on) in the docstring
of its conversion function, read at these commits: ermongroup/ncsn 7f27f4a,
ermongroup/ncsnv2 1bcea03, yang-song/score_sde 0acb9e0, wittawatj/kernel-gof
039a95e, wilson-ye-chen/stein_thinning (stein.py 1769463, kernel.py 1916036),
wgrathwohl/JEM 7f0779a, blackjax-devs/blackjax 04e5b61, jax-md/jax-md a41c7d1,
openmm/openmm b12ba2a.  Each has a test that transcribes the third-party
formula in plain NumPy and compares it with refscore plus the conversion.
Where a paper and its released code disagree (NCSN's annealed step), both
are rows.

Diffusion (docs/diffusion.md): diffusers' timestep spacings and ``steps_offset``
(:func:`diffusion_timesteps`), its zero terminal SNR (:func:`zero_terminal_snr_betas`), its
``prediction_type`` (:func:`x0_from_prediction`), DDIM's final :math:`\bar\alpha`
(:func:`ddim_final_alpha_cumprod`), ``KarrasVeScheduler``'s VE times passed as noise levels
(:func:`sigma_from_ve_time`) and Heun's second stage; k-diffusion's Karras grid (:func:`karras_sigmas`),
its and EDM's preconditionings (:func:`denoiser_scalings`) and the churn :math:`\gamma`
(:func:`churn_gamma`); score_sde's final denoise.  Read at huggingface/diffusers 58eb52c0,
crowsonkb/k-diffusion 4601bf0, NVlabs/edm 008a4e5, yang-song/score_sde 0acb9e0; each tested against a
transcription, and each named by the diffusion diagnosis of :func:`refscore.golden.check`.

Kinetic Langevin (docs/derivations.md §8.6, §8.7): blackjax's decoherence length
:math:`L = 1/\gamma` (:func:`friction_from_decoherence_length`), the thermostats of jax-md
and OpenMM at a temperature :math:`kT` (:func:`kinetic_from_thermostat`: mass :math:`m/kT`,
score :math:`F/kT`, momenta :math:`p/kT`; OpenMM's velocities sit half a kick from BAOAB's,
:func:`momenta_from_openmm`), and the limits: large friction is ULA in the time
:math:`t/(\gamma m)` (:func:`overdamped_time`), one OBABO step with a full refresh is MALA's
proposal at :math:`\eta = h^2/(2m)` (:func:`mala_step_from_kinetic`).

Inside a torch loss.  The conversions of a loss value (the DSM, SSM and KSD scalings, the
score_sde weights, the sphere projections) take a torch tensor, one that requires grad
included, and return a tensor of the same graph: ``dsm_from_ncsn(loss, sigma)`` can be
back-propagated.  The KSD estimator forms (:func:`ksd_from_u`, :func:`ksd_to_u`) are not
affine in the value (the square root) and refuse a tensor; convert the number you compare.

References
----------
Hyvärinen (2005), JMLR 6, Thm 1; Vincent (2011), Neural Comput. 23, eqs (4)-(11);
Song, Garg, Shi & Ermon (2019), UAI, eqs (6)-(8); Song & Ermon (2019), NeurIPS,
Algorithm 1 and eq (5).
"""
from __future__ import annotations

import numbers
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._validation import as_float_array, check_choice, check_finite, check_int, check_positive, check_sigmas

__all__ = [
    # constants linking the losses
    "esm_minus_ism",
    "dsm_minus_esm",
    "dsm_minus_ism_noised",
    # projections
    "projection_scale",
    "sphere_unscaled_ssm_to_ism",
    "ism_to_sphere_unscaled_ssm",
    "sphere_unscaled_ssm_vr_to_ism",
    "ism_to_sphere_unscaled_ssm_vr",
    # DSM scalings
    "dsm_from_sigma4_scaled",
    "sigma4_scaled_from_dsm",
    "dsm_from_ncsn",
    "ncsn_from_dsm",
    # Langevin steps
    "step_from_lr",
    "lr_from_step",
    "step_from_noise_scale",
    "noise_scale_from_step",
    "ncsn_step",
    "ncsn_eps",
    "ncsn_code_step",
    "ncsn_code_step_lr",
    "annealed_steps",
    "ncsn_alphas",
    # score_sde
    "score_sde_ald_step",
    "score_sde_ald_snr",
    "score_sde_langevin_step",
    "score_sde_weight",
    "score_sde_from_dsm",
    "dsm_from_score_sde",
    # NCSN sliced losses
    "ncsn_sliced_from_ssm",
    "ssm_from_ncsn_sliced",
    "ncsn_dsm_minus_sliced",
    # KSD
    "KSD_FORMS",
    "imq_stein_diagonal",
    "ksd_from_u",
    "ksd_to_u",
    "imq_from_scaled",
    "ksd_from_scaled_imq",
    "scaled_imq_from_ksd",
    # kinetic Langevin
    "KineticParameters",
    "friction_from_decoherence_length",
    "decoherence_length_from_friction",
    "blackjax_underdamped",
    "kinetic_from_thermostat",
    "momenta_from_thermostat",
    "thermostat_momenta",
    "jax_md_nvt_langevin",
    "OPENMM_BOLTZ",
    "openmm_langevin_middle",
    "momenta_from_openmm",
    "openmm_velocities",
    "mala_step_from_kinetic",
    "kinetic_step_from_mala",
    "overdamped_time",
    # tempering
    "TemperedStep",
    "tempered_step",
    "decoupled_step",
    # diffusion
    "diffusion_timesteps",
    "zero_terminal_snr_betas",
    "x0_from_prediction",
    "prediction_from_x0",
    "SCALINGS",
    "denoiser_scalings",
    "ddim_final_alpha_cumprod",
    "karras_sigmas",
    "sigma_from_ve_time",
    "ve_time_from_sigma",
    "churn_gamma",
    "log_likelihood_with_prior",
    "log_likelihood_from_probe_sum",
    "probe_sum_from_log_likelihood",
    # the ledger
    "ARGUMENTS",
    "CONVERTED",
    "Conversion",
    "ConventionRow",
    "TABLE",
    "row",
    "row_of",
    "markdown_table",
]


# ---------------------------------------------------------------- validation
def _is_tensor(value) -> bool:
    """A torch tensor (anything with ``detach`` and ``requires_grad``, not a NumPy array): the conversions
    compute on it as it is, so a loss converted inside a torch graph keeps its gradient."""
    return not isinstance(value, np.ndarray) and hasattr(value, "detach") and hasattr(value, "requires_grad")


def _value(value, name: str = "value"):
    """A finite float (or float array) loss value; returns a float for scalars.

    A torch tensor (one that requires grad included) is checked on a detached copy and returned as
    it is: the conversion's arithmetic then runs in torch and keeps the graph.
    """
    if _is_tensor(value):
        check_finite(name, as_float_array(value.detach().cpu().numpy(), name))
        return value
    arr = as_float_array(value, name)
    check_finite(name, arr)
    return float(arr) if arr.ndim == 0 else arr


def _number(value, name: str = "value"):
    """A finite float loss value, refusing a tensor (whose gradient a float would silently drop)."""
    if _is_tensor(value):
        raise TypeError(f"{name} must be a number or a NumPy array, got a torch tensor: this conversion is not "
                        "affine in the value (or reduces it), so it is not applied inside a torch graph; convert "
                        "the number you compare, value.item(), instead")
    return _value(value, name)


def _scaled(value, factor, name: str = "value"):
    """``value * factor`` after validating ``value`` (a tensor value gets an array factor as a tensor)."""
    v = _value(value, name)
    if _is_tensor(v) and isinstance(factor, np.ndarray):
        factor = v.new_tensor(factor)
    return v * factor


def _divided(value, factor, name: str = "value"):
    """``value / factor`` after validating ``value`` (a tensor value gets an array factor as a tensor)."""
    v = _value(value, name)
    if _is_tensor(v) and isinstance(factor, np.ndarray):
        factor = v.new_tensor(factor)
    return v / factor


def _dim(dim, name: str = "dim") -> int:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(dim).__name__}")
    if dim < 1:
        raise ValueError(f"{name} must be a positive integer, got {dim}")
    return int(dim)


def _sigma(sigma):
    """Positive noise level: scalar, or an array broadcasting against the values."""
    if np.ndim(sigma) == 0:
        return check_positive("sigma", sigma)
    return check_positive("sigma", sigma, allow_array=True)


_sigmas = check_sigmas


#: Gauss–Hermite order used for mixtures when ``order=None``.  A mixture's score is
#: not a polynomial, and the rule converges slowly where components overlap:
#: for 0.3 N(−1.5, 0.5) + 0.7 N(1, 1.2) the relative error is 4e-6 at order 64,
#: 4e-9 at 128 and 1e-10 at 200 (against adaptive scipy quad); for the 2-D test
#: mixture 1e-13 at order 96.
_MIXTURE_ORDER = {1: 256, 2: 128, 3: 40}


def _half_sq_score_expectation(dist, order):
    r""":math:`\tfrac12 E_p\lVert\nabla\log p\rVert^2`: closed form (Gaussian) or quadrature (mixture)."""
    from .distributions import Gaussian, GaussianMixture

    if isinstance(dist, Gaussian):
        # E‖Σ⁻¹(x−μ)‖² = tr(Σ⁻¹ Σ Σ⁻¹) = tr Σ⁻¹
        return 0.5 * float(np.trace(dist.precision))
    if isinstance(dist, GaussianMixture):
        from .quadrature import expectation

        if order is None:
            order = _MIXTURE_ORDER.get(dist.dim)

        def half_sq(x):
            s = dist.score(x)
            return 0.5 * np.einsum("ni,ni->n", s, s)

        return float(expectation(half_sq, dist, order))
    raise TypeError(
        f"dist must be a Gaussian or GaussianMixture (exact by closed form or quadrature), "
        f"got {type(dist).__name__}"
    )


# --------------------------------------------------- constants linking losses
def esm_minus_ism(dist, order=None) -> float:
    r"""The constant ESM − ISM :math:`= \tfrac12 E_p\lVert\nabla\log p\rVert^2`.

    Expanding the square in ESM (eq. (2)) and integrating the cross term by
    parts (Hyvärinen 2005, Thm 1; boundary terms vanish for densities decaying
    faster than the model grows):

    .. math::

        \tfrac12 E\lVert s_\theta - \nabla\log p\rVert^2
          = \tfrac12 E\lVert s_\theta\rVert^2
            - \underbrace{E[s_\theta^\top \nabla\log p]}_{=\,-E[\operatorname{tr}\nabla s_\theta]}
            + \tfrac12 E\lVert\nabla\log p\rVert^2
          = \mathrm{ISM}(\theta) + \tfrac12 E_p\lVert\nabla\log p\rVert^2,

    because :math:`\int s_\theta^\top \nabla p = -\int p\,\nabla\!\cdot s_\theta`.
    The constant does not depend on :math:`\theta`.  For :math:`N(\mu,\Sigma)`,
    :math:`\nabla\log p = -\Sigma^{-1}(x-\mu)` and
    :math:`E\lVert\Sigma^{-1}(x-\mu)\rVert^2 = \operatorname{tr}(\Sigma^{-1}\Sigma\Sigma^{-1})`, so

    .. math::

        \mathrm{ESM} - \mathrm{ISM} = \tfrac12 \operatorname{tr}\Sigma^{-1}.

    Parameters
    ----------
    dist : Gaussian or GaussianMixture
        Closed form for a Gaussian; Gauss–Hermite quadrature
        (:func:`refscore.quadrature.expectation`) for a mixture.
    order : int, optional
        Quadrature order for a mixture (ignored for a Gaussian).  Default 256,
        128, 40 nodes per axis in d = 1, 2, 3 (the quadrature module's default
        beyond); the mixture score is not a polynomial, so the rule is exact only
        in the limit: raise ``order`` to check convergence (typical relative
        accuracy at the default, 1e-9 or better in d <= 2).

    Returns
    -------
    float

    References
    ----------
    Hyvärinen (2005), "Estimation of non-normalized statistical models by score
    matching", JMLR 6, Thm 1 (eqs. (2)-(3)).

    Examples
    --------
    >>> from refscore.distributions import Gaussian
    >>> round(esm_minus_ism(Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 0.5]])), 12)  # ½(1/2 + 2)
    1.25
    """
    return _half_sq_score_expectation(dist, order)


def dsm_minus_esm(dist, sigma, order=None) -> float:
    r"""The constant DSM(σ) − ESM(:math:`p_\sigma`) :math:`= \tfrac12(d/\sigma^2 - E_{p_\sigma}\lVert\nabla\log p_\sigma\rVert^2)`.

    With :math:`\tilde x = x + \sigma z`, :math:`p_\sigma` the law of :math:`\tilde x`,
    expand both squares:

    .. math::

        \mathrm{DSM} &= \tfrac12 E\lVert s(\tilde x)\rVert^2
            + E[s(\tilde x)^\top z]/\sigma + \tfrac12 E\lVert z\rVert^2/\sigma^2, \\
        \mathrm{ESM}(p_\sigma) &= \tfrac12 E\lVert s(\tilde x)\rVert^2
            - E[s(\tilde x)^\top \nabla\log p_\sigma(\tilde x)]
            + \tfrac12 E\lVert\nabla\log p_\sigma\rVert^2 .

    Tweedie / Vincent (2011, eq. 11): :math:`\nabla\log p_\sigma(\tilde x) =
    E[(x-\tilde x)/\sigma^2 \mid \tilde x] = -E[z\mid\tilde x]/\sigma`, so the
    cross terms are equal and, with :math:`E\lVert z\rVert^2 = d`,

    .. math::

        \mathrm{DSM}(\sigma) - \mathrm{ESM}(p_\sigma)
          = \tfrac12\Bigl(\frac{d}{\sigma^2} - E_{p_\sigma}\lVert\nabla\log p_\sigma\rVert^2\Bigr)
          \;\overset{\text{Gaussian}}{=}\;
          \tfrac12\Bigl(\frac{d}{\sigma^2} - \operatorname{tr}\bigl((\Sigma+\sigma^2 I)^{-1}\bigr)\Bigr).

    It is :math:`\ge 0` (DSM's extra variance) and independent of :math:`\theta`.

    Parameters
    ----------
    dist : Gaussian or GaussianMixture
        The *clean* data law :math:`p`; :math:`p_\sigma` = ``dist.noised(sigma)``.
    sigma : float
        Noise level, > 0.
    order : int, optional
        Quadrature order for a mixture (default as in :func:`esm_minus_ism`).

    Returns
    -------
    float

    References
    ----------
    Vincent (2011), "A connection between score matching and denoising
    autoencoders", Neural Comput. 23, eqs (4)-(11) (eqs. (5)-(6)).

    Examples
    --------
    >>> from refscore.distributions import Gaussian
    >>> round(dsm_minus_esm(Gaussian([0.0], [[1.0]]), 1.0), 12)  # ½(1 − 1/2)
    0.25
    """
    s = check_positive("sigma", sigma)
    return 0.5 * dist.dim / s**2 - _half_sq_score_expectation(dist.noised(s), order)


def dsm_minus_ism_noised(dim, sigma) -> float:
    r"""The constant DSM(σ) − ISM(:math:`p_\sigma`) :math:`= d/(2\sigma^2)`, for *every* data law.

    Add :func:`esm_minus_ism` on :math:`p_\sigma`
    (:math:`\tfrac12 E_{p_\sigma}\lVert\nabla\log p_\sigma\rVert^2`) to
    :func:`dsm_minus_esm`: the data-dependent terms cancel, so

    .. math::

        \mathrm{DSM}(\sigma) = \mathrm{ISM}_{p_\sigma}(\theta) + \frac{d}{2\sigma^2}.

    Parameters
    ----------
    dim : int
    sigma : float or array_like
        > 0.

    Returns
    -------
    float or ndarray

    References
    ----------
    Vincent (2011), Neural Comput. 23, §4; Hyvärinen (2005), Thm 1.

    Examples
    --------
    >>> dsm_minus_ism_noised(2, 0.5)
    4.0
    """
    return 0.5 * _dim(dim) / _sigma(sigma) ** 2


# ----------------------------------------------------------------- projections
def projection_scale(kind: str, dim) -> float:
    r"""Factor turning a raw direction into one with :math:`E[vv^\top] = I`.

    ``"gaussian"`` (:math:`v\sim N(0,I)`) and ``"rademacher"`` (:math:`v_i = \pm1`)
    already have :math:`E[vv^\top] = I`: factor 1.  A uniform unit vector
    :math:`u` on :math:`S^{d-1}` has :math:`E[uu^\top] = I/d` (by symmetry the
    matrix is a multiple of :math:`I`, and its trace is
    :math:`E\lVert u\rVert^2 = 1`), so ``"sphere"`` needs :math:`\sqrt d`.

    With :math:`E[vv^\top] = I`, :math:`E_v[v^\top J v] = \operatorname{tr}J` and
    :math:`E_v[(v^\top s)^2] = \lVert s\rVert^2`, hence
    :math:`E_v\,\mathrm{SSM} = E_v\,\mathrm{SSM\text{-}VR} = \mathrm{ISM}`
    (Song et al. 2019, eqs (6)-(8)).

    Parameters
    ----------
    kind : {"gaussian", "rademacher", "sphere"}
    dim : int

    Returns
    -------
    float

    References
    ----------
    Song, Garg, Shi & Ermon (2019), "Sliced score matching", UAI, §3 (eq. (7)).

    Examples
    --------
    >>> projection_scale("sphere", 4)
    2.0
    """
    from .losses import PROJECTIONS

    check_choice("kind", kind, PROJECTIONS)
    d = _dim(dim)
    return float(np.sqrt(d)) if kind == "sphere" else 1.0


def sphere_unscaled_ssm_to_ism(value, dim):
    r"""SSM computed with *unit* sphere directions, converted to refscore's SSM (which estimates ISM).

    For a unit vector :math:`u` and :math:`v = \sqrt d\,u` (refscore's sphere
    projection), both terms of SSM are quadratic in the direction:

    .. math::

        v^\top J v + \tfrac12 (v^\top s)^2 = d\,\bigl(u^\top J u + \tfrac12 (u^\top s)^2\bigr),

    so the conversion is *exact per sample* (same :math:`u`), not only in
    expectation: multiply by :math:`d`.  In expectation, :math:`E[uu^\top] = I/d`
    gives :math:`E_u\,\mathrm{SSM}_{unit} = \mathrm{ISM}/d`.

    Source read: ermongroup/ncsn (commit 7f27f4a), losses/sliced_sm.py,
    ``sliced_score_estimation`` and ``sliced_score_matching``: the directions are
    normal draws divided by their norm, with no :math:`\sqrt d` (lines 105-106,
    67-68); ``single_sliced_score_matching`` with ``noise_type='sphere'`` does
    multiply by :math:`\sqrt d` (refscore's convention).

    Parameters
    ----------
    value : float or array_like
        SSM value(s) with unit-norm directions.
    dim : int

    Returns
    -------
    float or ndarray
        ``dim * value``.

    References
    ----------
    Song, Garg, Shi & Ermon (2019), UAI, eq (7) and its :math:`E[vv^\top]=I` condition.

    Examples
    --------
    >>> sphere_unscaled_ssm_to_ism(0.5, 3)
    1.5
    """
    return _dim(dim) * _value(value)


def ism_to_sphere_unscaled_ssm(value, dim):
    r"""Inverse of :func:`sphere_unscaled_ssm_to_ism`: divide by :math:`d`.

    .. math:: \mathrm{SSM}_{unit} = \mathrm{SSM}_{\sqrt d\,u}/d, \qquad E_u\,\mathrm{SSM}_{unit} = \mathrm{ISM}/d.

    Examples
    --------
    >>> ism_to_sphere_unscaled_ssm(1.5, 3)
    0.5
    """
    return _value(value) / _dim(dim)


def sphere_unscaled_ssm_vr_to_ism(trace_term, norm_term, dim):
    r"""SSM-VR with unit sphere directions, converted to refscore's SSM-VR: only the trace term scales.

    SSM-VR is :math:`v^\top J v + \tfrac12\lVert s\rVert^2`; the norm term does not
    involve :math:`v`.  With :math:`v = \sqrt d\,u`:

    .. math::

        v^\top J v + \tfrac12\lVert s\rVert^2
          = d\,(u^\top J u) + \tfrac12\lVert s\rVert^2,

    exact per sample.  A single unit-sphere SSM-VR number mixes a scaled and an
    unscaled term, so it cannot be converted without its two parts.

    Parameters
    ----------
    trace_term : float or array_like
        :math:`u^\top J u` (mean over points/projections) with unit :math:`u`.
    norm_term : float or array_like
        :math:`\tfrac12\lVert s\rVert^2` (mean over points).
    dim : int

    Returns
    -------
    float or ndarray
        ``dim * trace_term + norm_term``.

    Examples
    --------
    >>> sphere_unscaled_ssm_vr_to_ism(0.5, 1.0, 2)
    2.0
    """
    return _dim(dim) * _value(trace_term, "trace_term") + _value(norm_term, "norm_term")


def ism_to_sphere_unscaled_ssm_vr(trace_term, norm_term, dim):
    r"""Inverse of :func:`sphere_unscaled_ssm_vr_to_ism`: ``trace_term / dim + norm_term``.

    Here ``trace_term`` is :math:`v^\top J v` with :math:`E[vv^\top]=I` directions.

    Examples
    --------
    >>> ism_to_sphere_unscaled_ssm_vr(1.0, 1.0, 2)
    1.5
    """
    return _value(trace_term, "trace_term") / _dim(dim) + _value(norm_term, "norm_term")


# ------------------------------------------------------------------ DSM scales
def dsm_from_sigma4_scaled(value, sigma):
    r"""DSM written as :math:`\tfrac12\lVert\sigma^2 s + \sigma z\rVert^2` (target :math:`-\epsilon`, :math:`\epsilon=\sigma z`), converted to refscore's DSM.

    .. math::

        \tfrac12\lVert\sigma^2 s + \sigma z\rVert^2
          = \sigma^4\cdot\tfrac12\lVert s + z/\sigma\rVert^2
          \quad\Rightarrow\quad \mathrm{DSM} = \mathrm{value}/\sigma^4 .

    This is eq. (6) multiplied through by :math:`\sigma^4`
    (:math:`\tfrac12\lVert\sigma^2 s(x+\epsilon) + \epsilon\rVert^2`).

    Source read: ermongroup/ncsn (commit 7f27f4a), losses/dsm.py, ``dsm`` (the
    energy-model DSM): the noise is sigma times a standard normal, the score is
    multiplied by sigma squared (line 10), and the loss is half the batch mean of
    the squared norm of their sum (lines 12-13).

    Parameters
    ----------
    value : float or array_like
    sigma : float or array_like
        > 0 (an array broadcasts against ``value``, e.g. per-point noise levels).

    Examples
    --------
    >>> dsm_from_sigma4_scaled(1.0, 0.5)
    16.0
    """
    return _divided(value, _sigma(sigma) ** 4)


def sigma4_scaled_from_dsm(value, sigma):
    r"""Inverse of :func:`dsm_from_sigma4_scaled`: multiply by :math:`\sigma^4`.

    Examples
    --------
    >>> sigma4_scaled_from_dsm(16.0, 0.5)
    1.0
    """
    return _scaled(value, _sigma(sigma) ** 4)


def dsm_from_ncsn(value, sigma):
    r"""NCSN's per-level loss :math:`\tfrac12\lVert\sigma s + z\rVert^2`, converted to refscore's DSM.

    NCSN weights level :math:`\sigma` by :math:`\lambda(\sigma) = \sigma^2`
    (Song & Ermon 2019, eq. 6):

    .. math::

        \sigma^2\cdot\tfrac12\lVert s + z/\sigma\rVert^2 = \tfrac12\lVert\sigma s + z\rVert^2
        \quad\Rightarrow\quad \mathrm{DSM} = \mathrm{value}/\sigma^2 .

    ``refscore.losses.dsm_multi(..., weighting="sigma2")`` is this weighted form.

    Sources read: ermongroup/ncsn (commit 7f27f4a), losses/dsm.py,
    ``anneal_dsm_score_estimation``: half the summed squared difference to the
    target :math:`-(\tilde x - x)/\sigma^2`, times sigma to ``anneal_power`` (line 36;
    ``anneal_power: 2.0`` in configs/anneal.yml); the same in ermongroup/ncsnv2,
    losses/dsm.py; and yang-song/score_sde, losses.py, ``get_smld_loss_fn`` with
    ``reduce_mean=False`` (:func:`score_sde_weight`).  NCSN's *sliced* objective
    is a different quantity: :func:`ncsn_sliced_from_ssm`.

    Parameters
    ----------
    value : float or array_like
    sigma : float or array_like
        > 0.

    References
    ----------
    Song & Ermon (2019), "Generative modeling by estimating gradients of the
    data distribution", NeurIPS, eqs (5)-(6).

    Examples
    --------
    >>> dsm_from_ncsn(1.0, 0.5)
    4.0
    """
    return _divided(value, _sigma(sigma) ** 2)


def ncsn_from_dsm(value, sigma):
    r"""Inverse of :func:`dsm_from_ncsn`: multiply by :math:`\sigma^2`.

    Examples
    --------
    >>> ncsn_from_dsm(4.0, 0.5)
    1.0
    """
    return _scaled(value, _sigma(sigma) ** 2)


# -------------------------------------------------------------- Langevin steps
def step_from_lr(lr):
    r"""refscore's step :math:`\eta` from the "learning rate" form of Langevin.

    Many codes write :math:`x \leftarrow x + \tfrac{lr}{2} s + \sqrt{lr}\,z`;
    refscore (eq. (4)) writes :math:`x \leftarrow x + \eta s + \sqrt{2\eta}\,z`.
    Matching the drift, :math:`\eta = lr/2`, and then
    :math:`\sqrt{2\eta} = \sqrt{lr}`: the same update, identical iterates for the
    same :math:`z`.

    Parameters
    ----------
    lr : float or array_like
        > 0.

    Returns
    -------
    float or ndarray
        ``lr / 2``.

    Source read: ermongroup/ncsn (commit 7f27f4a), runners/toy_runner.py,
    ``ToyRunner.langevin_dynamics``: the state moves by half ``lr`` times the score
    (line 43), then gains a standard normal times the square root of ``lr`` (line 44).

    References
    ----------
    Eq. (4); Song & Ermon (2019), Algorithm 1; Welling & Teh (2011), eq (4).

    Examples
    --------
    >>> step_from_lr(0.1)
    0.05
    """
    return _positive(lr, "lr") / 2.0


def lr_from_step(step):
    r"""Inverse of :func:`step_from_lr`: :math:`lr = 2\eta`.

    Examples
    --------
    >>> lr_from_step(0.05)
    0.1
    """
    return 2.0 * _positive(step, "step")


def step_from_noise_scale(delta):
    r"""refscore's step from the form :math:`x + \tfrac{\delta^2}{2} s + \delta z`: :math:`\eta = \delta^2/2`.

    Matching the noise, :math:`\sqrt{2\eta} = \delta`; then the drift
    :math:`\eta = \delta^2/2` agrees as well.

    Examples
    --------
    >>> step_from_noise_scale(0.5)
    0.125
    """
    return _positive(delta, "delta") ** 2 / 2.0


def noise_scale_from_step(step):
    r"""Inverse of :func:`step_from_noise_scale`: the noise scale :math:`\delta = \sqrt{2\eta}`.

    Examples
    --------
    >>> noise_scale_from_step(0.125)
    0.5
    """
    eta = _positive(step, "step")
    return float(np.sqrt(2.0 * eta)) if np.ndim(eta) == 0 else np.sqrt(2.0 * eta)


def ncsn_step(eps_ncsn):
    r"""refscore's base step for the *paper's* NCSN :math:`\epsilon`: :math:`\eta = \epsilon/2`.

    This is the convention of Song & Ermon (2019), Algorithm 1, and of NCSN's
    2-D toy runner; it is **not** the convention of NCSN's released image
    sampler (see :func:`ncsn_code_step`).

    Algorithm 1 uses :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` and
    :math:`x \leftarrow x + \tfrac{\alpha_i}{2} s + \sqrt{\alpha_i}\,z`, the lr-form
    of :func:`step_from_lr` with :math:`lr = \alpha_i`; so
    :math:`\eta_i = \alpha_i/2 = (\epsilon/2)\,\sigma_i^2/\sigma_L^2`, i.e. refscore's
    ``step = eps/2`` in :func:`annealed_steps`.

    Source read: ermongroup/ncsn (commit 7f27f4a), runners/toy_runner.py,
    ``ToyRunner.anneal_langevin_dynamics``: the level's rate is
    ``lr * (sigma / sigmas[-1]) ** 2``, the state first moves by half that rate
    times the score, then gains normal noise times the square root of the rate
    (lines 51-53, default ``lr=0.1``).  So the toy's 0.1 is ``step = 0.05``
    (``refscore.validation.ncsn_toy`` uses exactly this).

    Caution.  The paper quotes :math:`\epsilon = 2\cdot10^{-5}` for CIFAR-10; read
    through Algorithm 1 that is ``step = 1e-5``.  But the code that produced the
    paper's samples (runners/anneal_runner.py, ``AnnealRunner.test``, which calls
    ``anneal_Langevin_dynamics`` with ``step_lr = 0.00002``, lines 241 and 262) uses
    refscore's own parametrisation, so those samples were drawn with
    ``step = 2e-5``: use ``ncsn_code_step(2e-5)``, not ``ncsn_step(2e-5)``.

    References
    ----------
    Song & Ermon (2019), NeurIPS, Algorithm 1 and §4.3; ermongroup/ncsn,
    runners/toy_runner.py, ``anneal_langevin_dynamics``.

    Examples
    --------
    >>> ncsn_step(0.1)       # the toy runner's lr = 0.1
    0.05
    >>> ncsn_step(2e-5)      # the paper's CIFAR-10 eps, read through Algorithm 1
    1e-05
    """
    return _positive(eps_ncsn, "eps_ncsn") / 2.0


def ncsn_eps(step):
    r"""Inverse of :func:`ncsn_step`: the paper's :math:`\epsilon = 2\eta`.

    Examples
    --------
    >>> ncsn_eps(0.05)
    0.1
    """
    return 2.0 * _positive(step, "step")


def ncsn_code_step(step_lr):
    r"""refscore's base step for ``step_lr`` of NCSN's and NCSNv2's released samplers: :math:`\eta = \text{step\_lr}`.

    Both released image samplers set the level's step to
    :math:`\text{step\_size}_i = \text{step\_lr}\,(\sigma_i/\sigma_L)^2` and update
    :math:`x \leftarrow x + \text{step\_size}_i\, s(x,\sigma_i) + \sqrt{2\,\text{step\_size}_i}\,z`.
    That is refscore's eq. (4) with :math:`\eta_i = \text{step\_size}_i`, and
    :func:`annealed_steps` with ``step = step_lr``: the identity.  (The paper's
    Algorithm 1, :func:`ncsn_step`, halves the drift instead; the two readings of
    the same number differ by a factor 2 in the step.)

    Sources read:

    * ermongroup/ncsn (commit 7f27f4a), runners/anneal_runner.py,
      ``AnnealRunner.anneal_Langevin_dynamics``: ``step_size`` is ``step_lr`` times
      the squared ratio of the level's sigma to the last one (line 210); the noise
      is a standard normal times the square root of twice ``step_size`` (line 213);
      the state moves by ``step_size`` times the score plus that noise (line 215).
      ``AnnealRunner.test`` passes ``step_lr = 0.00002`` with 100 steps per level
      (lines 241, 262); configs/anneal.yml has no ``step_lr`` (sigmas 1 → 0.01,
      10 levels).
    * ermongroup/ncsnv2 (commit 1bcea03), models/__init__.py,
      ``anneal_Langevin_dynamics``: the same ``step_size`` (line 28) and update,
      with the noise scaled by the square root of twice ``step_size`` (line 35).
      configs/ncsn_original.yml reproduces NCSN with ``step_lr: 0.00002``;
      configs/cifar10.yml uses ``step_lr: 0.0000062``.  NCSNv2 optionally ends with
      a denoising step :math:`x + \sigma_L^2 s(x, \sigma_L)` (``denoise: true`` in
      its cifar10.yml, false in ncsn_original.yml) that refscore's sampler does not
      take.

    Cross-check: score_sde's reproduction of NCSN (yang-song/score_sde,
    configs/ve/ncsn/cifar10.py, ``snr = 0.316``, :math:`\sigma_L = 0.01`) gives
    :func:`score_sde_ald_step` :math:`= 2(0.316\cdot0.01)^2 \approx 2.0\cdot10^{-5}`,
    and its NCSNv2 config (``snr = 0.176``) gives :math:`6.2\cdot10^{-6}`: the
    ``step_lr`` values above, read as refscore's :math:`\eta`.

    Parameters
    ----------
    step_lr : float or array_like
        > 0.

    Returns
    -------
    float or ndarray
        ``step_lr`` (validated).

    References
    ----------
    ermongroup/ncsn, runners/anneal_runner.py, ``anneal_Langevin_dynamics``;
    ermongroup/ncsnv2, models/__init__.py, ``anneal_Langevin_dynamics``.

    Examples
    --------
    >>> ncsn_code_step(2e-5)   # what produced NCSN's CIFAR-10 samples
    2e-05
    >>> ncsn_step(2e-5)        # the paper's Algorithm 1 reading of the same number
    1e-05
    """
    return _positive(step_lr, "step_lr")


def ncsn_code_step_lr(step):
    r"""Inverse of :func:`ncsn_code_step`: ``step_lr`` :math:`= \eta`.

    Examples
    --------
    >>> ncsn_code_step_lr(1e-5)
    1e-05
    """
    return _positive(step, "step")


def annealed_steps(step, sigmas) -> np.ndarray:
    r"""refscore's per-level Langevin steps :math:`\eta_i = \eta\,\sigma_i^2/\sigma_L^2`.

    .. math:: \eta_i = \eta\,(\sigma_i/\sigma_L)^2, \qquad
              x \leftarrow x + \eta_i\, s(x,\sigma_i) + \sqrt{2\eta_i}\,z .

    The last (smallest) level runs at exactly ``step``.  Equals
    ``ncsn_alphas(2 * step, sigmas) / 2``.

    Parameters
    ----------
    step : float
        > 0.
    sigmas : array_like, shape (L,)
        Positive, strictly decreasing.

    Returns
    -------
    ndarray, shape (L,)

    References
    ----------
    Song & Ermon (2019), NeurIPS, Algorithm 1.

    Examples
    --------
    >>> annealed_steps(0.05, [2.0, 1.0])
    array([0.2 , 0.05])
    """
    eta = check_positive("step", step)
    s = _sigmas(sigmas)
    return eta * (s / s[-1]) ** 2


def ncsn_alphas(eps_ncsn, sigmas) -> np.ndarray:
    r"""NCSN's per-level step sizes :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` (lr-form).

    Parameters
    ----------
    eps_ncsn : float
        > 0.
    sigmas : array_like, shape (L,)
        Positive, strictly decreasing.

    References
    ----------
    Song & Ermon (2019), NeurIPS, Algorithm 1.

    Examples
    --------
    >>> ncsn_alphas(0.1, [2.0, 1.0])
    array([0.4, 0.1])
    """
    eps = check_positive("eps_ncsn", eps_ncsn)
    s = _sigmas(sigmas)
    return eps * (s / s[-1]) ** 2


# ------------------------------------------------------- score_sde correctors
def score_sde_ald_step(snr, sigma, alpha=1.0):
    r"""refscore's step at level :math:`\sigma` for score_sde's ``AnnealedLangevinDynamics`` corrector: :math:`\eta = 2\alpha(\text{snr}\cdot\sigma)^2`.

    score_sde's "ald" corrector (NCSN's sampler recast by a signal-to-noise
    ratio) sets :math:`\text{step\_size} = 2\alpha\,(\text{snr}\cdot\sigma(t))^2` with
    :math:`\sigma(t)` the perturbation std from ``sde.marginal_prob``, and updates
    :math:`x \leftarrow x + \text{step\_size}\; s + \sqrt{2\,\text{step\_size}}\;z`:
    eq. (4) with :math:`\eta = \text{step\_size}`.  On a VE SDE
    (:math:`\alpha = 1`) the levels scale as :math:`\sigma_i^2`, exactly refscore's
    :func:`annealed_steps` with base step

    .. math:: \text{step} = 2\,\text{snr}^2\sigma_L^2 = \texttt{score\_sde\_ald\_step(snr, sigma\_L)} .

    On VP / sub-VP SDEs :math:`\alpha = 1-\beta_i` (``sde.alphas[timestep]``).

    Source read: yang-song/score_sde (commit 0acb9e0), sampling.py,
    ``AnnealedLangevinDynamics.update_fn``: ``alpha`` is ``sde.alphas`` at the
    discrete timestep for VP/sub-VP and one for VE (lines 319-323); ``std`` comes
    from ``marginal_prob`` (line 325); the step is the squared product of snr and
    std, times two, times alpha (line 332); the update adds step times the score,
    then the noise times the square root of twice the step (lines 333-334).

    Parameters
    ----------
    snr : float
        > 0.
    sigma : float or array_like
        > 0; the level's perturbation std.
    alpha : float or array_like, default 1.0
        > 0.

    Returns
    -------
    float or ndarray

    References
    ----------
    Song et al. (2021), "Score-based generative modeling through stochastic
    differential equations", ICLR (predictor-corrector sampling);
    yang-song/score_sde, sampling.py, ``AnnealedLangevinDynamics``.

    Examples
    --------
    >>> round(score_sde_ald_step(0.316, 0.01), 12)   # configs/ve/ncsn/cifar10.py ≈ NCSN's step_lr 2e-5
    1.99712e-05
    """
    r = check_positive("snr", snr) * _positive(sigma, "sigma")
    return r**2 * 2.0 * _positive(alpha, "alpha")


def score_sde_langevin_step(snr, noise, score, alpha=1.0) -> np.ndarray:
    r"""refscore's step :math:`\eta` of one step of score_sde's ``LangevinCorrector``, per sample.

    .. math::

        \eta = 2\alpha\,\Bigl(\text{snr}\cdot
              \frac{\tfrac1n\sum_j\lVert z_j\rVert}{\tfrac1n\sum_j\lVert s_j\rVert}\Bigr)^2,
        \qquad x \leftarrow x + \eta\, s + \sqrt{2\eta}\,z ,

    with :math:`z_j` the standard normal noise *of that step* and
    :math:`s_j = s(x_j, t)`, each flattened over the data dimensions.  The update
    is eq. (4) with this :math:`\eta` (no ½ on the drift), so the returned value is
    refscore's step directly.  Note what the norms are: the *mean over the batch*
    of per-sample L2 norms (and, across devices, the mean of the device means),
    a ratio of means, not a mean of ratios.  The step is therefore one number for
    the whole batch, times :math:`\alpha`; :math:`\alpha = 1` on VE SDEs and
    :math:`1-\beta_i` (``sde.alphas[timestep]``) on VP / sub-VP SDEs.  It changes at
    every step (it depends on that step's noise and score), so a run is a sequence
    of one-step refscore updates, not one fixed-step ``ula`` call.

    Heuristically :math:`\sqrt{\eta/2}\,\lVert s\rVert/\lVert z\rVert \approx \text{snr}\sqrt{\alpha}`:
    the drift-to-noise ratio of §8.4 is pinned to ``snr``.

    Source read: yang-song/score_sde (commit 0acb9e0), sampling.py,
    ``LangevinCorrector.update_fn``: ``alpha`` as in the ALD corrector (lines
    274-278); ``grad_norm`` is the batch mean of the per-sample norms of the
    reshaped score, then averaged across devices with ``pmean`` (lines 285-287),
    likewise ``noise_norm`` (lines 288-290); ``step_size`` is the square of
    snr times noise_norm over grad_norm, times two, times alpha (line 291); the
    update adds step_size times the score, then the noise times the square root
    of twice step_size (lines 292-293).  Default ``sampling.snr = 0.16``
    (configs/default_cifar10_configs.py).

    Parameters
    ----------
    snr : float
        > 0, the target signal-to-noise ratio.
    noise, score : array_like, shape (n, ...)
        The step's standard normal noise and the score at the current states
        (the whole batch, over all devices).
    alpha : float or array_like of shape (n,), default 1.0
        > 0.

    Returns
    -------
    ndarray, shape (n,)
        :math:`\eta` per sample (equal entries unless ``alpha`` varies).

    Examples
    --------
    >>> z = np.array([[3.0, 4.0], [0.0, 5.0]])      # norms 5, 5
    >>> s = np.array([[1.0, 0.0], [0.0, 3.0]])      # norms 1, 3
    >>> score_sde_langevin_step(0.1, z, s)          # 2 (0.1 · 5 / 2)²
    array([0.125, 0.125])
    """
    snr = check_positive("snr", snr)
    z = as_float_array(noise, "noise")
    s = as_float_array(score, "score")
    if z.ndim < 1 or z.shape[0] < 1 or z.shape != s.shape:
        raise ValueError(f"noise and score must have the same shape (n, ...) with n >= 1, "
                         f"got {z.shape} and {s.shape}")
    check_finite("noise", z)
    check_finite("score", s)
    n = z.shape[0]
    noise_norm = np.linalg.norm(z.reshape(n, -1), axis=-1).mean()
    grad_norm = np.linalg.norm(s.reshape(n, -1), axis=-1).mean()
    if not grad_norm > 0:
        raise ValueError("score must not vanish on the whole batch (the step would be infinite)")
    a = _positive(alpha, "alpha")
    step = (snr * noise_norm / grad_norm) ** 2 * 2 * a
    return np.array(np.broadcast_to(step, (n,)), dtype=float)


def score_sde_ald_snr(step, sigma, alpha=1.0):
    r"""Inverse of :func:`score_sde_ald_step`: the ``snr`` whose ALD corrector step at level :math:`\sigma` is ``step``.

    .. math:: \text{snr} = \frac{\sqrt{\eta/(2\alpha)}}{\sigma}

    Examples
    --------
    >>> round(score_sde_ald_snr(score_sde_ald_step(0.316, 0.01), 0.01), 12)
    0.316
    """
    eta = _positive(step, "step") / (2.0 * _positive(alpha, "alpha"))
    snr = np.sqrt(eta) / _positive(sigma, "sigma")
    return float(snr) if np.ndim(snr) == 0 else snr


# ------------------------------------------------------------ score_sde losses
def score_sde_weight(sigma, dim, *, reduce_mean, g2=None):
    r"""Factor :math:`w` with score_sde's per-sample DSM loss :math:`= w\cdot` refscore's DSM.

    score_sde's ``get_sde_loss_fn`` perturbs :math:`\tilde x = m(x, t) + \sigma z`
    (:math:`m`, :math:`\sigma` from ``sde.marginal_prob``) and reduces the squared
    residual over the :math:`D` data dimensions with ``reduce_op``: the *mean*
    when ``reduce_mean=True``, ``0.5 * sum`` otherwise.  Per sample:

    .. math::

        \text{default weighting:}\quad
        \operatorname{op}_j\bigl(\sigma s_j + z_j\bigr)^2
          = \operatorname{op}_j\,\sigma^2\bigl(s_j + z_j/\sigma\bigr)^2, \qquad
        \text{likelihood weighting:}\quad
        g^2\,\operatorname{op}_j\bigl(s_j + z_j/\sigma\bigr)^2 ,

    and with refscore's :math:`\mathrm{DSM} = \tfrac12\sum_j (s_j + z_j/\sigma)^2`,
    :math:`\tfrac1D\sum_j(\cdot)^2 = \tfrac2D\,\mathrm{DSM}` and
    :math:`\tfrac12\sum_j(\cdot)^2 = \mathrm{DSM}`.  Hence

    .. math::

        w = \lambda\cdot\begin{cases} 2/D & \texttt{reduce\_mean=True}\\ 1 & \texttt{reduce\_mean=False}\end{cases},
        \qquad \lambda = \begin{cases}\sigma^2 & \text{default}\\ g(t)^2 & \texttt{likelihood\_weighting=True}\end{cases}.

    So score_sde's ``reduce_mean=True`` loss is :math:`2\sigma^2/D` times refscore's
    DSM, and ``reduce_mean=False`` is :math:`\sigma^2\cdot` DSM (= NCSN's weighted
    form, :func:`ncsn_from_dsm`; the legacy ``get_smld_loss_fn`` gives the same
    factors).  The batch loss is the mean of :math:`w_i\,\mathrm{DSM}_i` over
    samples with their own :math:`t_i`, so convert per sample.  refscore's
    :func:`refscore.losses.dsm` takes the clean point; pass the marginal mean
    :math:`m(x,t)` (:math:`x` on VE, :math:`e^{-\frac12\int\beta}x` on VP) as ``x``.
    For the VE SDE, :math:`g(t)^2 = 2\sigma(t)^2\log(\sigma_{max}/\sigma_{min})`
    (``VESDE.sde``); for the VP SDE, :math:`g(t)^2 = \beta(t)`.

    Source read: yang-song/score_sde (commit 0acb9e0), losses.py,
    ``get_sde_loss_fn``: ``reduce_op`` is the mean, or one half of the sum (line
    82); the perturbed point is the marginal mean plus std times noise (lines
    105-106); without likelihood weighting the per-sample loss is the reduced
    square of score times std plus noise (lines 111-112), with it the reduced
    square of score plus noise over std times the squared diffusion (lines
    114-116); then the batch mean (line 118).  ``get_smld_loss_fn`` (lines
    124-149) reduces the squared residual to the DSM target and weights by
    sigma squared.  Default ``training.reduce_mean = False``
    (configs/default_cifar10_configs.py); the VP/sub-VP configs set it True.

    Parameters
    ----------
    sigma : float or array_like
        > 0, per-sample std.
    dim : int
        :math:`D`, the number of data dimensions (product of the shape past the batch axis).
    reduce_mean : bool
        score_sde's flag (keyword, required: its default differs between
        ``get_sde_loss_fn`` (True) and the configs (False)).
    g2 : float or array_like, optional
        :math:`g(t)^2`: give it for ``likelihood_weighting=True``; ``None`` for the
        default :math:`\sigma^2` weighting.

    Returns
    -------
    float or ndarray

    References
    ----------
    Song et al. (2021), ICLR (the λ(t)-weighted DSM objective); Song, Durkan, Murray & Ermon (2021),
    "Maximum likelihood training of score-based diffusion models", NeurIPS
    (likelihood weighting); yang-song/score_sde, losses.py, ``get_sde_loss_fn``.

    Examples
    --------
    >>> score_sde_weight(0.5, 4, reduce_mean=True)        # 2 σ² / D
    0.125
    >>> score_sde_weight(0.5, 4, reduce_mean=False, g2=3.0)
    3.0
    """
    if not isinstance(reduce_mean, (bool, np.bool_)):
        raise TypeError(f"reduce_mean must be a bool, got {type(reduce_mean).__name__}")
    lam = _sigma(sigma) ** 2 if g2 is None else _positive(g2, "g2")
    d = _dim(dim)
    return 2.0 * lam / d if reduce_mean else lam


def score_sde_from_dsm(value, sigma, dim, *, reduce_mean, g2=None):
    r"""refscore's DSM (per sample) converted to score_sde's ``get_sde_loss_fn`` value: ``value * score_sde_weight(...)``.

    Derivation and sources: :func:`score_sde_weight`.

    Examples
    --------
    >>> score_sde_from_dsm(2.0, 0.5, 4, reduce_mean=True)
    0.25
    """
    return _scaled(value, score_sde_weight(sigma, dim, reduce_mean=reduce_mean, g2=g2))


def dsm_from_score_sde(value, sigma, dim, *, reduce_mean, g2=None):
    r"""Inverse of :func:`score_sde_from_dsm`: ``value / score_sde_weight(...)``.

    Examples
    --------
    >>> dsm_from_score_sde(0.25, 0.5, 4, reduce_mean=True)
    2.0
    """
    return _divided(value, score_sde_weight(sigma, dim, reduce_mean=reduce_mean, g2=g2))


# --------------------------------------------------------- NCSN sliced losses
def ncsn_sliced_from_ssm(value, sigma):
    r"""refscore's SSM / SSM-VR on :math:`p_\sigma`, converted to NCSN's σ²-weighted sliced objective: ``sigma**2 * value``.

    NCSN's ``anneal_sliced_score_estimation_vr`` perturbs
    :math:`\tilde x = x + \sigma z` and evaluates SSM-VR *at* :math:`\tilde x` with
    Gaussian projections (:math:`E[vv^\top] = I`, refscore's ``"gaussian"``), averaged
    over the ``n_particles`` projections, then weights by :math:`\sigma^2`:

    .. math::

        \ell_{\mathrm{NCSN}}(x,\sigma) = \sigma^2\Bigl(
            \tfrac1m\sum_k v_k^\top\nabla s(\tilde x,\sigma)\,v_k
            + \tfrac12\lVert s(\tilde x,\sigma)\rVert^2\Bigr)
          = \sigma^2\cdot\texttt{ssm\_vr}(\tilde x, v) .

    The same weight applies to plain SSM values.  This is *not* a DSM value:
    :func:`dsm_from_ncsn` would return SSM-VR (an ISM estimate on
    :math:`p_\sigma`), not DSM.  In expectation
    :math:`E_v\,\mathrm{SSM\text{-}VR} = \mathrm{ISM}_{p_\sigma}
    = \mathrm{DSM}(\sigma) - d/(2\sigma^2)` (:func:`dsm_minus_ism_noised`), so
    NCSN's sliced and DSM objectives differ by the constant :math:`d/2`
    (:func:`ncsn_dsm_minus_sliced`) at every level and for any level weights.

    Source read: ermongroup/ncsn (commit 7f27f4a), losses/sliced_sm.py,
    ``anneal_sliced_score_estimation_vr``: a comment says Rademacher but the
    directions are ``torch.randn_like`` (Gaussian, lines 154-155); the first term
    is half the squared score norm, the second the direction times the gradient
    of the direction-projected score (lines 157-164); both are averaged over
    particles (lines 166-167), their sum times the squared level sigma (line 169), then the
    batch mean.  Called by ``AnnealRunner.train`` when ``training.algo == 'ssm'``
    (runners/anneal_runner.py, line 144), levels drawn uniformly (line 140).

    Parameters
    ----------
    value : float or array_like
        Per-point ``refscore.losses.ssm_vr`` (or ``ssm``) at the perturbed points.
    sigma : float or array_like
        > 0, the level of each point.

    Returns
    -------
    float or ndarray
        The per-point NCSN values; NCSN's loss is their mean.

    Examples
    --------
    >>> ncsn_sliced_from_ssm(-3.0, 0.5)
    -0.75
    """
    return _scaled(value, _sigma(sigma) ** 2)


def ssm_from_ncsn_sliced(value, sigma):
    r"""Inverse of :func:`ncsn_sliced_from_ssm`: divide by :math:`\sigma^2`.

    Examples
    --------
    >>> ssm_from_ncsn_sliced(-0.75, 0.5)
    -3.0
    """
    return _divided(value, _sigma(sigma) ** 2)


def ncsn_dsm_minus_sliced(dim) -> float:
    r"""The constant :math:`d/2` = E[NCSN's σ²-weighted DSM] − E[NCSN's σ²-weighted sliced loss].

    At a level :math:`\sigma`, :math:`\mathrm{DSM}(\sigma) = \mathrm{ISM}_{p_\sigma}
    + d/(2\sigma^2)` (:func:`dsm_minus_ism_noised`) and
    :math:`E_v\,\mathrm{SSM\text{-}VR}(\tilde x) = \mathrm{ISM}_{p_\sigma}` over
    :math:`\tilde x\sim p_\sigma`; multiplying by :math:`\sigma^2`,

    .. math:: \sigma^2\,\mathrm{DSM}(\sigma) - \sigma^2\,E\,\mathrm{SSM\text{-}VR} = d/2,

    independent of :math:`\sigma`, so also of the level distribution.  Sources:
    ermongroup/ncsn, losses/dsm.py ``anneal_dsm_score_estimation`` (line 36, with
    ``anneal_power: 2.0``) and losses/sliced_sm.py
    ``anneal_sliced_score_estimation_vr`` (see :func:`ncsn_sliced_from_ssm`).

    Examples
    --------
    >>> ncsn_dsm_minus_sliced(3)
    1.5
    """
    return 0.5 * _dim(dim)


# ------------------------------------------------------------------------ KSD
#: The forms in which code reports a squared KSD (refscore's :func:`refscore.metrics.ksd` is ``"u"``).
KSD_FORMS = ("u", "v", "nv", "sqrt_v")


def imq_stein_diagonal(scores, *, c=1.0, beta=-0.5) -> np.ndarray:
    r"""The Stein kernel on the diagonal, :math:`u_p(x_i, x_i) = c^{2\beta}\lVert s_i\rVert^2 - 2\beta d\,c^{2\beta-2}`.

    Set :math:`r = 0` in :func:`refscore.metrics.imq_stein_kernel`
    (:math:`q = c^2`): the cross term and the :math:`\lVert r\rVert^2` term vanish.
    These are the terms a U-statistic leaves out and a V-statistic keeps; the
    conversions :func:`ksd_from_u` and :func:`ksd_to_u` need them.

    Parameters
    ----------
    scores : array_like, shape (n, d)
        The target's score at the sample.
    c, beta : float
        refscore's IMQ parameters, :math:`(c^2 + r^2)^\beta`, :math:`\beta\in(-1, 0)`.

    Returns
    -------
    ndarray, shape (n,)

    Examples
    --------
    >>> imq_stein_diagonal(np.array([[3.0, 4.0]]))   # 25 · 1 + 1 · 2 · 1
    array([27.])
    """
    from .metrics import _check_imq

    c, beta = _check_imq(c, beta)
    s = as_float_array(scores, "scores")
    if s.ndim != 2 or s.shape[0] < 1:
        raise ValueError(f"scores must have shape (n, d) with n >= 1, got {s.shape}")
    check_finite("scores", s)
    d = s.shape[1]
    c2 = c * c
    return c2**beta * np.einsum("ij,ij->i", s, s) - 2.0 * beta * d * c2 ** (beta - 1.0)


def _ksd_parts(diagonal, form):
    check_choice("form", form, KSD_FORMS)
    diag = as_float_array(diagonal, "diagonal")
    if diag.ndim != 1 or diag.size < 2:
        raise ValueError(f"diagonal must have shape (n,) with n >= 2, got {diag.shape}")
    check_finite("diagonal", diag)
    return diag.size, float(diag.mean())


def ksd_from_u(u_stat, diagonal, form) -> float:
    r"""refscore's unbiased :math:`\widehat{\mathrm{KSD}}^2_u` converted to the V-statistic, :math:`nV` or :math:`\sqrt V`.

    With the Stein kernel matrix :math:`u_{ij}` on the sample,
    :math:`U = \frac{1}{n(n-1)}\sum_{i\ne j}u_{ij}` (:func:`refscore.metrics.ksd`) and
    :math:`V = \frac1{n^2}\sum_{i,j}u_{ij}`.  Splitting off the diagonal,

    .. math::

        V = \frac{n-1}{n}\,U + \frac1n\,\overline{u_{ii}}, \qquad
        nV = (n-1)\,U + \overline{u_{ii}}, \qquad
        \overline{u_{ii}} = \tfrac1n\textstyle\sum_i u_p(x_i,x_i),

    with the diagonal from :func:`imq_stein_diagonal`; exact for the sample at hand.  :math:`V = \lVert\tfrac1n\sum_i\xi(x_i)\rVert^2_{\mathcal H}\ge0`
    (so :math:`\sqrt V` is defined) while :math:`U` can be negative.
    The forms met in code:

    * ``"nv"``: wittawatj/kernel-gof (commit 039a95e), kgof/goftest.py,
      ``KernelSteinTest.compute_stat``: the statistic is :math:`n` times the mean of
      the full Stein Gram matrix ``H``, diagonal included (line 1013; the class
      docstring says "n*V_n").  Its ``KIMQ`` kernel (kgof/kernel.py) is
      :math:`(c^2 + r^2)^b`, refscore's parametrisation with ``beta = b``.
    * ``"sqrt_v"``: wilson-ye-chen/stein_thinning (commit 1769463), stein_thinning/stein.py, ``ksd``:
      cumulative sums of the full matrix (each off-diagonal entry twice, the
      diagonal once), returned as their square root over the number of points,
      i.e. :math:`\sqrt{V_m}` for each prefix :math:`m`.  Its kernel is the scaled
      IMQ (:func:`ksd_from_scaled_imq`).
    * ``"v"``: :math:`V` itself.

    Parameters
    ----------
    u_stat : float
        :math:`U`, e.g. ``refscore.metrics.ksd(x, score, c=c, beta=beta)``.
    diagonal : array_like, shape (n,)
        :math:`u_p(x_i, x_i)` on the same sample and kernel
        (``imq_stein_diagonal(scores, c=c, beta=beta)``); ``n >= 2``.
    form : {"u", "v", "nv", "sqrt_v"}

    Returns
    -------
    float

    References
    ----------
    Liu, Lee & Jordan (2016), ICML, eq. (14) (U); Chwialkowski, Strathmann
    & Gretton (2016), ICML, §2.2 (the V-statistic :math:`nV_n`).

    Examples
    --------
    >>> ksd_from_u(0.5, [2.0, 4.0], "v")     # (1/2)·0.5 + 3/2
    1.75
    >>> ksd_from_u(0.5, [2.0, 4.0], "nv")
    3.5
    """
    n, mean_diag = _ksd_parts(diagonal, form)
    u = float(_number(u_stat, "u_stat"))
    if form == "u":
        return u
    v = (n - 1) / n * u + mean_diag / n
    if form == "v":
        return v
    if form == "nv":
        return (n - 1) * u + mean_diag
    scale = abs((n - 1) / n * u) + abs(mean_diag / n)
    if v < -1e-12 * scale:
        raise ValueError(f"the V-statistic {v!r} is negative: u_stat and diagonal do not come from one sample and kernel")
    return float(np.sqrt(max(v, 0.0)))


def ksd_to_u(value, diagonal, form) -> float:
    r"""Inverse of :func:`ksd_from_u`: a reported V, :math:`nV` or :math:`\sqrt V` back to refscore's U.

    .. math:: U = \frac{nV - \overline{u_{ii}}}{n-1}, \qquad V = \texttt{value}\ (\text{v}),\
              \texttt{value}/n\ (\text{nv}),\ \texttt{value}^2\ (\text{sqrt\_v}).

    Examples
    --------
    >>> ksd_to_u(1.75, [2.0, 4.0], "v")
    0.5
    """
    n, mean_diag = _ksd_parts(diagonal, form)
    val = float(_number(value, "value"))
    if form == "u":
        return val
    if form == "sqrt_v" and val < 0:
        raise ValueError(f"a sqrt_v value must be >= 0, got {val!r}")
    nv = {"v": n * val, "nv": val, "sqrt_v": n * val * val}[form]
    return (nv - mean_diag) / (n - 1)


def _scaled_imq(g, beta):
    g = check_positive("g", g)
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie in (0, 1) for the kernel (1 + g r²)^(-beta), got {beta!r}")
    return g, beta


def imq_from_scaled(g, beta) -> tuple[float, float]:
    r"""refscore's IMQ parameters ``(c, beta)`` for the kernel :math:`(1 + g\,r^2)^{-\beta}`, :math:`\beta\in(0,1)`.

    .. math::

        (1 + g r^2)^{-\beta} = g^{-\beta}\,(g^{-1} + r^2)^{-\beta}
          = g^{-\beta}\,k_{c,\beta'}(r), \qquad c = g^{-1/2},\ \beta' = -\beta,

    with refscore's :math:`k_{c,\beta'} = (c^2 + r^2)^{\beta'}`.  The kernels differ by
    the constant factor :math:`g^{-\beta}`; see :func:`ksd_from_scaled_imq`.  With a
    length scale :math:`\ell` (:math:`(1 + r^2/\ell^2)^{-\beta}`), :math:`g = 1/\ell^2`
    and :math:`c = \ell`.  The third common form, :math:`(c^2+r^2)^{-\beta}` with
    :math:`\beta>0` (e.g. maurilorenzo/the-stochastic-Barker-proposal, ksd.R,
    ``imqKSD``), is refscore's with ``beta = -beta`` and factor 1.

    Examples
    --------
    >>> imq_from_scaled(0.25, 0.5)
    (2.0, -0.5)
    """
    g, beta = _scaled_imq(g, beta)
    return float(1.0 / np.sqrt(g)), -beta


def ksd_from_scaled_imq(value, g, beta):
    r"""A squared KSD (U, V or :math:`nV`) with the kernel :math:`(1+g r^2)^{-\beta}`, converted to refscore's kernel: multiply by :math:`g^{\beta}`.

    The Langevin Stein kernel :math:`u_p = s^\top s' k + s^\top\nabla_{y}k + s'^\top\nabla_x k
    + \operatorname{tr}\nabla_x\nabla_y k` is *linear* in the base kernel :math:`k`, so
    the constant factor of :func:`imq_from_scaled` passes to every entry, hence to
    every estimator linear in the entries (U, V, :math:`nV`):

    .. math::

        u^{\text{scaled}} = g^{-\beta}\,u_p^{(c=g^{-1/2},\,\beta'=-\beta)}
        \quad\Rightarrow\quad
        \mathrm{KSD}^2_{\text{refscore}} = g^{\beta}\,\mathrm{KSD}^2_{\text{scaled}} .

    A :math:`\sqrt V` value scales by :math:`g^{\beta/2}`: square it first
    (:func:`ksd_to_u` with ``"sqrt_v"`` after this conversion of ``value**2``).

    Source read: wilson-ye-chen/stein_thinning (commit 1916036), stein_thinning/kernel.py,
    ``vfk0_imq``: with the preconditioner inverse ``linv`` it evaluates the IMQ
    Stein kernel of :math:`(1 + r^\top\Lambda^{-1}r)^{-1/2}` (its base quadratic form
    is one plus the ``linv``-weighted squared difference, and the three terms carry
    the powers 5/2, 3/2 and 1/2 of it); ``make_precon`` with a float ``pre`` sets
    ``linv`` to the inverse of ``pre`` times the identity, i.e. :math:`g = 1/\text{pre}`,
    :math:`\beta = 1/2`.

    Parameters
    ----------
    value : float or array_like
        A squared-KSD quantity (U, V, :math:`nV`, or Stein-kernel entries).
    g : float
        > 0.
    beta : float in (0, 1)

    Examples
    --------
    >>> ksd_from_scaled_imq(2.0, 0.25, 0.5)    # 2 · 0.25^0.5
    1.0
    """
    g, beta = _scaled_imq(g, beta)
    return _scaled(value, g**beta)


def scaled_imq_from_ksd(value, g, beta):
    r"""Inverse of :func:`ksd_from_scaled_imq`: multiply by :math:`g^{-\beta}`.

    Examples
    --------
    >>> scaled_imq_from_ksd(1.0, 0.25, 0.5)
    2.0
    """
    g, beta = _scaled_imq(g, beta)
    return _scaled(value, g ** (-beta))


# ------------------------------------------------------------ kinetic Langevin
class KineticParameters(NamedTuple):
    """refscore's kinetic Langevin settings (:func:`refscore.sampling.kinetic.kinetic_langevin`): ``step`` :math:`h`,
    ``friction`` :math:`\\gamma` and ``mass`` :math:`m` of :math:`dq = (p/m)\\,dt`,
    :math:`dp = s\\,dt - \\gamma p\\,dt + \\sqrt{2\\gamma m}\\,dW` at unit temperature."""

    step: float
    friction: float
    mass: float


def friction_from_decoherence_length(L):
    r"""refscore's friction for blackjax's momentum decoherence length: :math:`\gamma = 1/L`.

    blackjax refreshes the momenta by :math:`p \leftarrow c_1 p + \sqrt{1 - c_1^2}\,z` with
    :math:`c_1 = e^{-\epsilon'/L}` over a time :math:`\epsilon'`; refscore's **O** over
    :math:`\tau` has :math:`c = e^{-\gamma\tau}` (docs/derivations.md §8.6), so :math:`\gamma = 1/L`.
    :math:`L = \infty` (blackjax: no refresh) is friction 0.

    Source read: blackjax-devs/blackjax (commit 04e5b61), blackjax/mcmc/integrators.py,
    ``partially_refresh_momentum``: ``c1`` is the exponential of minus the step size over ``L``,
    ``c2`` the square root of one minus its square, the new momentum ``c1`` times the old plus
    ``c2`` times a standard normal, and an infinite ``L`` leaves the momentum as it is.

    Examples
    --------
    >>> friction_from_decoherence_length(4.0)
    0.25
    """
    L = _positive_or_inf(L, "L")
    return 0.0 if L == np.inf else 1.0 / L


def decoherence_length_from_friction(friction):
    r"""Inverse of :func:`friction_from_decoherence_length`: :math:`L = 1/\gamma` (friction 0: :math:`L = \infty`).

    Examples
    --------
    >>> decoherence_length_from_friction(0.25)
    4.0
    """
    g = float(friction)
    if not (np.isfinite(g) and g >= 0.0):
        raise ValueError(f"friction must be finite and >= 0, got {friction!r}")
    return np.inf if g == 0.0 else 1.0 / g


def _positive_or_inf(value, name) -> float:
    v = float(value)
    if not (v > 0.0):  # NaN included
        raise ValueError(f"{name} must be > 0 (or inf), got {value!r}")
    return v


def blackjax_underdamped(step_size, L, inverse_mass_matrix=1.0) -> KineticParameters:
    r"""refscore's kinetic settings for blackjax's ``underdamped_langevin``: OBABO with :math:`\gamma = 1/L`, unit mass.

    blackjax's step wraps velocity Verlet (:math:`\mathrm B_{\epsilon/2}\mathrm A_\epsilon\mathrm B_{\epsilon/2}`,
    coefficients ``[0.5, 1.0, 0.5]``, the kick adding the step times the coefficient times the
    log-density gradient, the drift the step times the coefficient times the inverse mass times the
    momentum) between two partial refreshes over half the step each: refscore's
    :math:`\mathrm O_{h/2}\mathrm B_{h/2}\mathrm A_h\mathrm B_{h/2}\mathrm O_{h/2}`, its **O** over
    :math:`h/2` with :math:`c = e^{-\gamma h/2} = e^{-(\epsilon/2)/L}`.  So ``step = step_size``,
    ``friction = 1/L`` (:func:`friction_from_decoherence_length`), splitting ``"OBABO"``, and the
    score is the gradient of ``logdensity_fn``.

    Sources read: blackjax-devs/blackjax (commit 04e5b61): blackjax/mcmc/underdamped_langevin.py,
    ``build_kernel`` (the step is ``with_maruyama`` around the integrator, called with the step size
    and ``L``) and ``as_top_level_api`` (``integrator=velocity_verlet``, ``inverse_mass_matrix=1.0``);
    blackjax/mcmc/integrators.py, ``with_maruyama`` (a partial refresh with half the step size,
    the integrator step, a second partial refresh with half the step size, each with its own key),
    ``velocity_verlet_coefficients`` and ``partially_refresh_momentum`` (see
    :func:`friction_from_decoherence_length`).

    Only unit mass: at that commit the refresh adds ``c2`` times a *standard* normal whatever the
    mass matrix, which keeps :math:`N(0, I)`, not :math:`N(0, M)`; with
    ``inverse_mass_matrix != 1`` its dynamics is no refscore kinetic Langevin, and this raises.

    Parameters
    ----------
    step_size : float > 0
    L : float > 0 or inf
    inverse_mass_matrix : 1.0

    Returns
    -------
    KineticParameters

    Examples
    --------
    >>> blackjax_underdamped(0.1, 2.0)
    KineticParameters(step=0.1, friction=0.5, mass=1.0)
    """
    if not (np.ndim(inverse_mass_matrix) == 0 and float(inverse_mass_matrix) == 1.0):
        raise ValueError("inverse_mass_matrix must be 1.0: blackjax's refresh draws N(0, I) noise whatever the mass "
                         "matrix, so with another mass its dynamics is not kinetic Langevin at that mass, got "
                         f"{inverse_mass_matrix!r}")
    return KineticParameters(check_positive("step_size", step_size), friction_from_decoherence_length(L), 1.0)


def kinetic_from_thermostat(dt, gamma, kT, mass=1.0) -> KineticParameters:
    r"""refscore's kinetic settings for a Langevin thermostat at temperature ``kT`` (jax-md, OpenMM).

    A molecular-dynamics thermostat integrates :math:`dx = (p_{md}/m)\,dt`,
    :math:`dp_{md} = F\,dt - \gamma p_{md}\,dt + \sqrt{2\gamma m\,kT}\,dW` with :math:`F = -\nabla U`,
    which samples :math:`e^{-U/kT}`.  Divide the momenta by :math:`kT`: :math:`p = p_{md}/kT` obeys
    :math:`dx = (p/m')\,dt`, :math:`dp = s\,dt - \gamma p\,dt + \sqrt{2\gamma m'}\,dW` with
    :math:`s = F/kT = \nabla\log e^{-U/kT}` and :math:`m' = m/kT`: refscore's dynamics at unit
    temperature.  Each sub-flow maps the same way (the kick :math:`p_{md} + \tau F` is
    :math:`kT(p + \tau s)`, the drift :math:`x + \tau p_{md}/m = x + \tau p/m'`, the refresh's
    variance :math:`kT(1 - c^2)m` is :math:`kT^2(1 - c^2)m'`), so a splitting step maps step by step.

    Parameters
    ----------
    dt : float > 0
        The time step (``step``).
    gamma : float >= 0
        The friction, per unit of time (``friction``).
    kT : float > 0
        The temperature in energy units.
    mass : float > 0

    Returns
    -------
    KineticParameters
        ``(dt, gamma, mass / kT)``; run it on the score ``F / kT`` and start from the momenta
        ``p_md / kT`` (:func:`momenta_from_thermostat`).

    Examples
    --------
    >>> kinetic_from_thermostat(0.002, 1.0, 2.5, mass=12.0)
    KineticParameters(step=0.002, friction=1.0, mass=4.8)
    """
    g = float(gamma)
    if not (np.isfinite(g) and g >= 0.0):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma!r}")
    return KineticParameters(check_positive("dt", dt), g, check_positive("mass", mass) / check_positive("kT", kT))


def momenta_from_thermostat(momentum, kT):
    r"""refscore's momenta :math:`p = p_{md}/kT` for a thermostat's momenta (see :func:`kinetic_from_thermostat`).

    Examples
    --------
    >>> momenta_from_thermostat(np.array([1.0, -2.0]), 2.0)
    array([ 0.5, -1. ])
    """
    return _value(momentum, "momentum") / check_positive("kT", kT)


def thermostat_momenta(momentum, kT):
    r"""Inverse of :func:`momenta_from_thermostat`: :math:`p_{md} = kT\,p`.

    Examples
    --------
    >>> thermostat_momenta(np.array([0.5, -1.0]), 2.0)
    array([ 1., -2.])
    """
    return _value(momentum, "momentum") * check_positive("kT", kT)


def jax_md_nvt_langevin(dt, kT, gamma=0.1, mass=1.0) -> KineticParameters:
    r"""refscore's BAOAB settings for jax-md's ``simulate.nvt_langevin(energy_or_force_fn, shift_fn, dt, kT, gamma)``.

    jax-md's step is :math:`\mathrm B_{dt/2}\mathrm A_{dt/2}\mathrm O_{dt}\mathrm A_{dt/2}\mathrm B_{dt/2}`
    on momenta :math:`p_{md}`, with :math:`c_1 = e^{-\gamma\,dt}` and the refresh variance
    :math:`kT(1 - c_1^2)\,m`: refscore's BAOAB under :func:`kinetic_from_thermostat` (score
    :math:`F/kT`, momenta :math:`p_{md}/kT`, mass :math:`m/kT`).

    Source read: jax-md/jax-md (commit a41c7d1), jax_md/simulate.py: ``nvt_langevin``'s
    ``step_fn`` runs ``momentum_step`` over half ``dt``, ``position_step`` over half ``dt``,
    ``stochastic_step`` over ``dt``, ``position_step`` over half ``dt``, recomputes the force and
    runs ``momentum_step`` over half ``dt``; ``momentum_step`` adds the time times the force,
    ``position_step`` shifts by the time times the momentum over the mass, and ``stochastic_step``
    draws the momentum from a normal with mean ``c1`` times the momentum, ``c1`` the exponential of
    minus ``gamma`` times the time, and variance ``kT`` times one minus ``c1`` squared times the mass.

    Examples
    --------
    >>> jax_md_nvt_langevin(0.005, 0.5, gamma=0.1)
    KineticParameters(step=0.005, friction=0.1, mass=2.0)
    """
    return kinetic_from_thermostat(dt, gamma, kT, mass)


#: OpenMM's Boltzmann constant in kJ/(mol K), evaluated in the order of its ``BOLTZ`` macro
#: (``BOLTZMANN * AVOGADRO / KILO``, platforms/reference/include/SimTKOpenMMRealType.h)
OPENMM_BOLTZ = 1.380649e-23 * 6.02214076e23 / 1e3


def openmm_langevin_middle(step_ps, friction_per_ps, temperature_K, mass_amu) -> KineticParameters:
    r"""refscore's BAOAB settings for OpenMM's ``LangevinMiddleIntegrator(temperature, friction, stepSize)``.

    OpenMM works in nm, ps, amu and kJ/mol (1 amu nm²/ps² = 1 kJ/mol, so no further constant), with
    :math:`kT = k_B T` (:data:`OPENMM_BOLTZ` times the temperature in K): refscore's kinetic
    Langevin under :func:`kinetic_from_thermostat` with ``dt = step_ps``, ``gamma = friction_per_ps``
    and the mass :math:`m/kT`, on the score :math:`F/kT`.

    Its step is BAOAB with the two half kicks of consecutive steps merged into one:
    :math:`v \leftarrow v + dt\,F(x)/m`, :math:`x \leftarrow x + v\,dt/2`,
    :math:`v \leftarrow e^{-\gamma dt} v + \sqrt{1 - e^{-2\gamma dt}}\sqrt{kT/m}\,\xi`,
    :math:`x \leftarrow x + v\,dt/2`.  The positions are BAOAB's; its velocities are taken between the
    **O** and the last half kick, so refscore's momenta are
    :math:`p = (m/kT)\,v + (dt/2)\,s(x)` (:func:`momenta_from_openmm`).

    Source read: openmm/openmm (commit b12ba2a),
    platforms/reference/src/SimTKReference/ReferenceLangevinMiddleDynamics.cpp:
    ``updatePart1`` adds the time step times the inverse mass times the force to the velocity;
    ``updatePart2`` moves the position by the velocity times half the step, sets the velocity to
    ``vscale`` (the exponential of minus the step times the friction) times itself plus
    ``noisescale`` (the square root of one minus ``vscale`` squared) times the square root of
    ``kT`` times the inverse mass times three standard normals, ``kT`` being ``BOLTZ`` times the
    temperature, and moves the position again by the velocity times half the step;
    ``updatePart3`` (constraints aside) keeps that position.

    Examples
    --------
    >>> p = openmm_langevin_middle(0.002, 1.0, 300.0, 12.0)
    >>> p.step, p.friction, round(p.mass, 6)
    (0.002, 1.0, 4.810894)
    """
    kT = OPENMM_BOLTZ * check_positive("temperature_K", temperature_K)
    return kinetic_from_thermostat(step_ps, friction_per_ps, kT, mass_amu)


def momenta_from_openmm(velocities, mass, kT, step, score):
    r"""refscore's BAOAB momenta for the velocities of OpenMM's ``LangevinMiddleIntegrator``.

    .. math:: p = \frac m{kT}\,v + \frac{dt}2\,s(x)

    with :math:`s(x) = F(x)/kT` at the same positions (see :func:`openmm_langevin_middle`).

    Parameters
    ----------
    velocities : array (..., d)
    mass, kT, step : float > 0
    score : array, shape of ``velocities``
        :math:`s(x)`.

    Examples
    --------
    >>> momenta_from_openmm(np.array([1.0]), 2.0, 0.5, 0.1, np.array([-4.0]))
    array([3.8])
    """
    v, s = _value(velocities, "velocities"), _value(score, "score")
    return check_positive("mass", mass) / check_positive("kT", kT) * v + 0.5 * check_positive("step", step) * s


def openmm_velocities(momenta, mass, kT, step, score):
    r"""Inverse of :func:`momenta_from_openmm`: :math:`v = \frac{kT}m\,(p - \frac{dt}2 s(x))`.

    Examples
    --------
    >>> openmm_velocities(np.array([3.8]), 2.0, 0.5, 0.1, np.array([-4.0]))
    array([1.])
    """
    p, s = _value(momenta, "momenta"), _value(score, "score")
    return check_positive("kT", kT) / check_positive("mass", mass) * (p - 0.5 * check_positive("step", step) * s)


def mala_step_from_kinetic(step, mass=1.0):
    r"""The ULA/MALA step of one OBABO step with a full refresh: :math:`\eta = h^2/(2m)`.

    With :math:`\gamma h \to \infty` the first :math:`\mathrm O_{h/2}` draws :math:`p = \sqrt m\,\xi`
    afresh; then :math:`\mathrm B_{h/2}\mathrm A_h` give

    .. math::

        q' = q + \frac hm\Big(\sqrt m\,\xi + \frac h2 s(q)\Big)
           = q + \frac{h^2}{2m}\,s(q) + \sqrt{2\cdot\frac{h^2}{2m}}\;\xi ,

    refscore's eq. (4) with :math:`\eta = h^2/(2m)` and :math:`z = \xi` (the first ``d`` normals of
    the step): MALA's proposal.  Its Metropolis–Hastings ratio is that of one leapfrog step of HMC,
    :math:`\log\alpha = -H(q', p') + H(q, p)` with :math:`H = -\log p(q) + \lVert p\rVert^2/(2m)`,
    which equals MALA's :math:`\log\alpha` (docs/derivations.md §8.7; tested).

    Examples
    --------
    >>> mala_step_from_kinetic(0.5)
    0.125
    """
    h = check_positive("step", step)
    return h * h / (2.0 * check_positive("mass", mass))


def kinetic_step_from_mala(eta, mass=1.0):
    r"""Inverse of :func:`mala_step_from_kinetic`: :math:`h = \sqrt{2m\eta}`.

    Examples
    --------
    >>> kinetic_step_from_mala(0.125)
    0.5
    """
    return float(np.sqrt(2.0 * check_positive("mass", mass) * check_positive("eta", eta)))


def overdamped_time(time, friction, mass=1.0):
    r"""The overdamped Langevin time of kinetic Langevin's time ``t`` at large friction: :math:`t/(\gamma m)`.

    As :math:`\gamma \to \infty` the momentum equation :math:`dp = s\,dt - \gamma p\,dt + \sqrt{2\gamma m}\,dW`
    relaxes at once, :math:`p\,dt \approx (s\,dt + \sqrt{2\gamma m}\,dW)/\gamma`, and
    :math:`dq = (p/m)\,dt \approx s\,dt/(\gamma m) + \sqrt{2/(\gamma m)}\,dW`: the Langevin diffusion
    :math:`dX = s\,d\tau + \sqrt2\,dB_\tau` of eq. (4) in the time :math:`\tau = t/(\gamma m)`.  So a
    kinetic run over time :math:`t` at large friction moves as ULA over :math:`\tau`
    (docs/derivations.md §8.7; tested on a Gaussian's exact transient law).

    Examples
    --------
    >>> overdamped_time(10.0, 5.0)
    2.0
    """
    return check_positive("time", time) / (check_positive("friction", friction) * check_positive("mass", mass))


# ------------------------------------------------------ tempering the target
class TemperedStep(NamedTuple):
    """refscore's sampler settings for a tempered Langevin chain: run ``step`` on the score times ``score_scale``."""

    step: float
    score_scale: float


def tempered_step(step, tau) -> TemperedStep:
    r"""Langevin with its noise multiplied by :math:`\tau`, as refscore's sampler on the tempered target :math:`p^{1/\tau^2}`.

    A noise multiplier does not reparametrise the step (compare
    :func:`step_from_noise_scale`, where drift and noise share one parameter); it
    changes the target.  The chain

    .. math:: x \leftarrow x + \eta\, s(x) + \sqrt{2\eta}\,\tau\, z

    is, term by term, refscore's eq. (4) with step :math:`\eta' = \eta\tau^2` and
    score :math:`s' = s/\tau^2`:
    :math:`\eta' s' = \eta s` and :math:`\sqrt{2\eta'} = \sqrt{2\eta}\,\tau`, so the
    iterates are identical for the same :math:`z`.  :math:`s/\tau^2 = \nabla\log p^{1/\tau^2}`,
    so as :math:`\eta\to0` the chain samples :math:`\pi\propto p^{1/\tau^2}` (the
    Langevin diffusion :math:`dx = s\,dt + \sqrt2\,\tau\,dW` has Fokker–Planck
    stationary density with :math:`\tau^2\nabla\log\pi = s`).  At finite :math:`\eta` it
    carries ULA's bias for step :math:`\eta'` on :math:`p^{1/\tau^2}`; for
    :math:`p = N(\mu, \Lambda^{-1})` the tempered target is
    :math:`N(\mu, \tau^2\Lambda^{-1})`, precision :math:`\Lambda/\tau^2`, and
    (docs/derivations.md §8) the chain's stationary law is exactly

    .. math::

        N\bigl(\mu,\ (\Lambda/\tau^2 - \eta'\Lambda^2/(2\tau^4))^{-1}\bigr)
          = N\bigl(\mu,\ \tau^2(\Lambda - \eta\Lambda^2/2)^{-1}\bigr).

    Parameters
    ----------
    step : float
        :math:`\eta` of the noise-multiplied chain, > 0.
    tau : float
        The noise multiplier, > 0 (:math:`\tau^2` is the temperature).

    Returns
    -------
    TemperedStep
        ``step`` :math:`= \eta\tau^2` and ``score_scale`` :math:`= 1/\tau^2`: run
        ``refscore.sampling.ula`` with that step on a target whose score is
        ``score_scale * s`` (for a Gaussian, ``Gaussian(mu, cov / score_scale)``).

    Examples
    --------
    >>> tempered_step(0.1, 0.5)
    TemperedStep(step=0.025, score_scale=4.0)
    """
    eta = check_positive("step", step)
    t2 = check_positive("tau", tau) ** 2
    return TemperedStep(eta * t2, 1.0 / t2)


def decoupled_step(lr, std) -> TemperedStep:
    r"""Langevin with separate step and noise, :math:`x \leftarrow x + a\,s + b\,z`, as refscore's sampler on :math:`p^{2a/b^2}`.

    Write it as :func:`tempered_step` with :math:`\eta = a` and
    :math:`\sqrt{2a}\,\tau = b`, i.e. :math:`\tau^2 = b^2/(2a)`: refscore's step
    :math:`\eta\tau^2 = b^2/2` (matching the noise) on the score times
    :math:`1/\tau^2 = 2a/b^2`.  The chain samples :math:`p^{2a/b^2}` (up to ULA's
    bias), not :math:`p`, unless :math:`b^2 = 2a`.

    Source read: wgrathwohl/JEM (commit 7f0779a), train_wrn_ebm.py,
    ``get_sample_q``/``sample_q``: the SGLD loop adds ``sgld_lr`` times the gradient
    of the log-density :math:`f` plus ``sgld_std`` times a standard normal; the
    defaults are ``sgld_lr = 1.0`` and ``sgld_std = 1e-2`` (argparse).  So JEM's
    short-run chains are refscore's ULA with step :math:`5\cdot10^{-5}` on
    :math:`e^{2\cdot10^4 f}`: temperature :math:`\tau^2 = 5\cdot10^{-5}`.

    Parameters
    ----------
    lr : float
        :math:`a`, the drift coefficient, > 0.
    std : float
        :math:`b`, the noise standard deviation, > 0.

    Returns
    -------
    TemperedStep

    Examples
    --------
    >>> decoupled_step(1.0, 1e-2)          # JEM's defaults
    TemperedStep(step=5e-05, score_scale=20000.0)
    """
    a = check_positive("lr", lr)
    b = check_positive("std", std)
    return TemperedStep(b * b / 2.0, 2.0 * a / (b * b))


def _positive(value, name):
    if np.ndim(value) == 0:
        return check_positive(name, value)
    return check_positive(name, value, allow_array=True)


# ------------------------------------------------------------------- diffusion
# The diffusion rows read the released code at these commits: huggingface/diffusers 58eb52c0,
# crowsonkb/k-diffusion 4601bf0, NVlabs/edm 008a4e5, yang-song/score_sde 0acb9e0.  refscore's own
# formulas live in refscore.diffusion (imported here only when a function is called, so that
# ``import refscore`` does not load it); derivations in docs/diffusion.md.

def diffusion_timesteps(num_inference_steps, num_train_timesteps=1000, spacing="leading", steps_offset=0):
    r"""The integer timesteps of an ``n``-step DDPM/DDIM run in each of diffusers' spacings, largest first.

    .. math::

        \text{leading: } i\lfloor T/n\rfloor + \text{offset}, \qquad
        \text{trailing: } \operatorname{round}(T - iT/n) - 1, \qquad
        \text{linspace: } \operatorname{round}\bigl(i(T-1)/(n-1)\bigr),

    :func:`refscore.diffusion.tables.inference_timesteps` (docs/diffusion.md §2), which rounds the exact
    rational half to even.  A refscore sampler takes its grid explicitly: these timesteps, then ``-1``
    (the clean end, :math:`\bar\alpha = 1`).

    Source read: huggingface/diffusers, ``src/diffusers/schedulers/scheduling_ddim.py``,
    ``DDIMScheduler.set_timesteps``: ``linspace`` rounds ``np.linspace(0, T - 1, n)``; ``leading``
    multiplies ``np.arange(0, n)`` by the integer ``T // n`` and adds ``steps_offset`` (Stable Diffusion's
    configuration sets 1); ``trailing`` rounds ``np.arange(T, 0, -T / n)`` and subtracts 1.  Its float
    evaluation rounds a few ties the other way, and its ``trailing`` has ``n + 1`` entries for some ``n``
    (refscore.diffusion.tables says where).  ``leading`` never visits ``T - 1``, the noisiest timestep,
    which is why Lin et al. (2024) recommend ``trailing``.

    Examples
    --------
    >>> diffusion_timesteps(4, 1000, "leading", 1)
    array([751, 501, 251,   1])
    >>> diffusion_timesteps(4, 1000, "trailing")
    array([999, 749, 499, 249])
    """
    from .diffusion.tables import inference_timesteps

    return inference_timesteps(num_inference_steps, num_train_timesteps, spacing, steps_offset)


def zero_terminal_snr_betas(betas):
    r"""Betas rescaled so the last timestep has zero SNR: :math:`\sqrt{\bar\alpha'_n} = (\sqrt{\bar\alpha_n} - \sqrt{\bar\alpha_{T-1}})\frac{\sqrt{\bar\alpha_0}}{\sqrt{\bar\alpha_0} - \sqrt{\bar\alpha_{T-1}}}`.

    :func:`refscore.diffusion.tables.rescale_betas_zero_snr` (Lin et al. 2024, Algorithm 1): the first
    timestep keeps its signal level, the last has :math:`\bar\alpha' = 0` exactly, so its
    :math:`\beta' = 1` and a sampler must start there from pure noise (``trailing`` spacing).

    Source read: huggingface/diffusers, ``src/diffusers/schedulers/scheduling_ddim.py``,
    ``rescale_zero_terminal_snr`` (used when ``rescale_betas_zero_snr=True``): the square roots of the
    cumulative products, shifted by the last and scaled by the first over the first less the last,
    squared back, the ratios of neighbours as the alphas with the first kept, one minus them as betas.
    The same map; diffusers evaluates it in float32.

    Examples
    --------
    >>> float(zero_terminal_snr_betas([0.1, 0.2, 0.3])[-1])
    1.0
    """
    from .diffusion.tables import rescale_betas_zero_snr

    return rescale_betas_zero_snr(betas)


def x0_from_prediction(kind, prediction, x, alpha, sigma):
    r"""The :math:`\hat x_0` of a network's prediction of kind ``kind`` at :math:`x = \alpha x_0 + \sigma\varepsilon`.

    .. math::

        \text{x0: } \hat x_0, \qquad \text{eps: } \frac{x - \sigma\hat\varepsilon}{\alpha}, \qquad
        \text{v: } \frac{\alpha x - \sigma\hat v}{\alpha^2 + \sigma^2}, \qquad
        \text{score: } \frac{x + \sigma^2\hat s}{\alpha}

    with :math:`v = \alpha\varepsilon - \sigma x_0` (docs/diffusion.md §3,
    :func:`refscore.diffusion.parametrisations.to_x0_eps`).  For a variance-preserving table
    (:math:`\alpha^2 + \sigma^2 = 1`) the ``v`` row is :math:`\alpha x - \sigma\hat v`.

    Source read: huggingface/diffusers, ``src/diffusers/schedulers/scheduling_ddim.py``,
    ``DDIMScheduler.step``, its ``prediction_type`` branches: ``"epsilon"``, the sample less the square root
    of ``beta_prod_t`` times the output, over the square root of ``alpha_prod_t``; ``"sample"``, the output;
    ``"v_prediction"``, the square root of ``alpha_prod_t`` times the sample less the square root of
    ``beta_prod_t`` times the output.  ``velocity`` (flow matching) needs the schedule's derivatives: use
    :func:`refscore.diffusion.parametrisations.to_x0_eps`.

    Examples
    --------
    >>> round(float(x0_from_prediction("v", 0.2, 1.0, 0.6, 0.8)), 12)   # 0.6 * 1 - 0.8 * 0.2
    0.44
    """
    from .diffusion.parametrisations import to_x0_eps

    check_choice("kind", kind, ("x0", "eps", "v", "score"))
    return to_x0_eps(kind, prediction, x, alpha, sigma)[0]


def prediction_from_x0(kind, x0, x, alpha, sigma):
    r"""Inverse of :func:`x0_from_prediction`: the prediction of kind ``kind`` made of :math:`\hat x_0` at ``x``
    (:math:`\hat\varepsilon = (x - \alpha\hat x_0)/\sigma`, :math:`\hat v = \alpha\hat\varepsilon - \sigma\hat x_0`,
    :math:`\hat s = -\hat\varepsilon/\sigma`).

    Examples
    --------
    >>> round(float(prediction_from_x0("v", 0.44, 1.0, 0.6, 0.8)), 12)
    0.2
    """
    from .diffusion.parametrisations import from_x0_eps

    check_choice("kind", kind, ("x0", "eps", "v", "score"))
    x0 = as_float_array(x0, "x0")
    x = as_float_array(x, "x")
    s = as_float_array(sigma, "sigma")
    if np.any(s == 0):
        raise ValueError("sigma must be > 0: eps = (x - alpha x0) / sigma")
    eps = (x - alpha * x0) / sigma
    return from_x0_eps(kind, x0, eps, x, alpha, sigma)


#: the preconditionings of :func:`denoiser_scalings`
SCALINGS = ("edm", "v", "eps", "ve")


def denoiser_scalings(kind, sigma, sigma_data=1.0):
    r"""``(c_skip, c_out, c_in)`` of the denoiser :math:`D(\bar x; \sigma) = c_{\rm skip}\bar x + c_{\rm out}F(c_{\rm in}\bar x)`.

    In EDM's variables (:math:`\bar x = x_0 + \sigma\varepsilon`, docs/diffusion.md §4), for a network
    :math:`F` trained on the target of ``kind``:

    =========  ==========================================  ====================================================  ======================================
    ``kind``   :math:`c_{\rm skip}`                        :math:`c_{\rm out}`                                   :math:`c_{\rm in}`
    =========  ==========================================  ====================================================  ======================================
    ``"edm"``  :math:`\sigma_d^2/(\sigma^2 + \sigma_d^2)`  :math:`+\sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}`  :math:`1/\sqrt{\sigma^2 + \sigma_d^2}`
    ``"v"``    :math:`\sigma_d^2/(\sigma^2 + \sigma_d^2)`  :math:`-\sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}`  :math:`1/\sqrt{\sigma^2 + \sigma_d^2}`
    ``"eps"``  1                                           :math:`-\sigma`                                       :math:`1/\sqrt{\sigma^2 + \sigma_d^2}`
    ``"ve"``   1                                           :math:`+\sigma`                                       1
    =========  ==========================================  ====================================================  ======================================

    ``"v"``: with :math:`\sigma_d = 1`, :math:`c_{\rm in}\bar x = \alpha x_0 + s\varepsilon`
    (:math:`\alpha = 1/\sqrt{1 + \sigma^2}`, :math:`s = \sigma\alpha`), whose
    :math:`v = \alpha\varepsilon - s x_0`, and :math:`c_{\rm skip}\bar x + c_{\rm out}v = x_0`: the minus sign
    of :math:`c_{\rm out}` is v's.  ``"eps"``: :math:`\bar x - \sigma\hat\varepsilon`.  ``"ve"``: NCSN's
    :math:`\bar x + \sigma F` with :math:`F \approx -\varepsilon` (its score times :math:`\sigma`).

    Source read: crowsonkb/k-diffusion, ``k_diffusion/layers.py``, ``Denoiser.get_scalings`` (``"edm"``);
    ``k_diffusion/external.py``, ``VDenoiser.get_scalings`` and ``DiscreteVDDPMDenoiser.get_scalings``
    (``"v"``: the same ``c_skip`` and ``c_in``, ``c_out`` negated) and ``DiscreteEpsDDPMDenoiser.get_scalings``
    (``"eps"``: ``c_out = -sigma``, ``forward`` adds the input); NVlabs/edm, ``training/networks.py``,
    ``EDMPrecond.forward`` (``"edm"``, with ``c_noise = ln(sigma)/4``), ``VPPrecond.forward`` and
    ``iDDPMPrecond.forward`` (``"eps"`` with :math:`\sigma_d = 1`), ``VEPrecond.forward`` (``"ve"``).  Using
    EDM's positive :math:`c_{\rm out}` for a v-network is the slip the diagnosis calls c_out's sign.

    Examples
    --------
    >>> denoiser_scalings("v", 1.0)
    (0.5, -0.7071067811865475, 0.7071067811865475)
    """
    check_choice("kind", kind, SCALINGS)
    s = _positive(sigma, "sigma")
    sd = check_positive("sigma_data", sigma_data)
    root = np.sqrt(s * s + sd * sd) if np.ndim(s) else float(np.sqrt(s * s + sd * sd))
    if kind in ("edm", "v"):
        sign = 1.0 if kind == "edm" else -1.0
        return sd * sd / (s * s + sd * sd), sign * s * sd / root, 1.0 / root
    if kind == "eps":
        return 1.0, -s, 1.0 / root
    return 1.0, s, 1.0


def ddim_final_alpha_cumprod(alphas_cumprod, set_alpha_to_one=True) -> float:
    r"""The :math:`\bar\alpha` a DDIM run's last step lands on: 1 (refscore: the clean end, ``t = -1``) or :math:`\bar\alpha_0`.

    refscore's grid for DDIM on a discrete table ends at ``t = -1`` (:math:`\bar\alpha = 1`,
    :class:`refscore.diffusion.schedules.VPDiscrete`), so the last step returns :math:`\hat x_0`.

    Source read: huggingface/diffusers, ``src/diffusers/schedulers/scheduling_ddim.py``,
    ``DDIMScheduler.__init__``: ``final_alpha_cumprod`` is 1 when ``set_alpha_to_one`` (the default), else
    ``alphas_cumprod[0]``; ``DDIMScheduler.step`` uses it as ``alpha_prod_t_prev`` when the previous
    timestep is negative.  With ``set_alpha_to_one=False`` the last step lands at timestep 0 and keeps
    noise of standard deviation :math:`\sqrt{1 - \bar\alpha_0}`; a DDIM whose ``alphas_prev`` starts at
    :math:`\bar\alpha_0` instead of 1 does the same.  refscore's equivalent: a grid ending at 0, not -1.

    Examples
    --------
    >>> ddim_final_alpha_cumprod([0.9, 0.5], set_alpha_to_one=False)
    0.9
    """
    ab = as_float_array(alphas_cumprod, "alphas_cumprod")
    if ab.ndim != 1 or ab.shape[0] < 1:
        raise ValueError(f"alphas_cumprod must be a non-empty 1-D array, got shape {ab.shape}")
    return 1.0 if set_alpha_to_one else float(ab[0])


def karras_sigmas(n, sigma_min=0.002, sigma_max=80.0, rho=7.0) -> np.ndarray:
    r"""Karras et al.'s noise levels with the final 0: ``n + 1`` values for an ``n``-step run.

    .. math::

        \sigma_i = \Bigl(\sigma_{\max}^{1/\rho} + \tfrac{i}{n-1}\bigl(\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho}\bigr)\Bigr)^\rho,
        \quad i < n, \qquad \sigma_n = 0

    (:meth:`refscore.diffusion.schedules.EDM.grid`, Karras et al. 2022 eq. (5); the ends set exactly).

    Source read: crowsonkb/k-diffusion, ``k_diffusion/sampling.py``, ``get_sigmas_karras``: a ramp
    ``linspace(0, 1, n)``, the same power of the interpolated ``1/rho`` roots, ``append_zero``; NVlabs/edm,
    ``generate.py``, ``edm_sampler``: ``t_steps`` over ``num_steps`` step indices, then a zero (``t_N =
    0``).  diffusers' ``_convert_to_karras`` (``scheduling_euler_discrete.py``) builds the same ramp; its
    ``DPMSolverMultistepScheduler`` with ``final_sigmas_type="sigma_min"`` appends the table's smallest
    noise level instead of 0, which repeats the ramp's last value when that is the table's smallest: a
    final step of size zero.

    Examples
    --------
    >>> s = karras_sigmas(18)
    >>> len(s), float(s[0]), float(s[-2]), float(s[-1])
    (19, 80.0, 0.002, 0.0)
    """
    from .diffusion.schedules import EDM

    return EDM(sigma_min, sigma_max, rho).grid(n)


def sigma_from_ve_time(t):
    r"""refscore's noise level for a VE time: :math:`\sigma = \sqrt t` (EDM Table 1's VE, :math:`\sigma(t) = \sqrt t`).

    Source read: huggingface/diffusers, ``src/diffusers/schedulers/deprecated/scheduling_karras_ve.py``,
    ``KarrasVeScheduler.set_timesteps``: ``schedule`` holds ``sigma_max**2 * (sigma_min**2 / sigma_max**2)
    ** (i / (num_inference_steps - 1))``, Karras et al. (2022) Table 1's VE time steps
    :math:`t_i = \sigma_i^2`, and its pipeline (``pipeline_stochastic_karras_ve.py``) passes
    ``schedule[t]`` as the noise level ``sigma``: the variance where the standard deviation belongs (the
    grid runs over :math:`[\sigma_{\min}^2, \sigma_{\max}^2]`).  Give refscore ``sigma_from_ve_time(t)``.

    Examples
    --------
    >>> sigma_from_ve_time(4.0)
    2.0
    """
    v = _positive(t, "t")
    return np.sqrt(v) if np.ndim(v) else float(np.sqrt(v))


def ve_time_from_sigma(sigma):
    r"""Inverse of :func:`sigma_from_ve_time`: :math:`t = \sigma^2`.

    Examples
    --------
    >>> ve_time_from_sigma(2.0)
    4.0
    """
    s = _positive(sigma, "sigma")
    return s * s


def log_likelihood_with_prior(divergence_integral, prior_term):
    r"""The probability-flow ODE log-likelihood from its two parts, refscore's convention
    (docs/diffusion.md §9):

    .. math::

        \log p_{t_\epsilon}(x) = \log\pi(x_T) + \int_{t_\epsilon}^{T}\nabla\cdot v(x_t, t)\,dt,

    that is the prior's log-density at the ODE's end point plus the divergence integral (the change of
    variables).  A code that reports the divergence integral alone left the prior term out.

    Examples
    --------
    >>> log_likelihood_with_prior(-1.25, -3.0)
    -4.25
    """
    return divergence_integral + prior_term


def log_likelihood_from_probe_sum(value, prior_term, n_probes):
    r"""A Hutchinson (or Skilling) estimate of the PF-ODE log-likelihood whose trace term summed the ``m`` probes
    without dividing by ``m``, converted to refscore's mean over the probes:

    .. math::

        \log\pi(x_T) + \frac1m\sum_{k=1}^m z_k^\top\Bigl(\int J_v\,dt\Bigr) z_k
        = \ell_\pi + (\text{value} - \ell_\pi)/m, \qquad \ell_\pi = \log\pi(x_T)

    (:func:`refscore.diffusion.likelihood.hutchinson_estimate` divides by ``m``; with one probe per point, as in
    score_sde's ``likelihood.py``, the two agree).

    Examples
    --------
    >>> log_likelihood_from_probe_sum(-3.0 + 3 * 0.5, -3.0, 3)
    -2.5
    """
    if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer (the number of probes m), got {n_probes!r}")
    return prior_term + (value - prior_term) / n_probes


def probe_sum_from_log_likelihood(value, prior_term, n_probes):
    """The inverse of :func:`log_likelihood_from_probe_sum`: refscore's estimate as a code that never divides the
    probes' sum by their number ``m`` reports it."""
    if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer (the number of probes m), got {n_probes!r}")
    return prior_term + (value - prior_term) * n_probes


def churn_gamma(sigma, n_steps, S_churn, S_tmin=0.0, S_tmax=float("inf")) -> float:
    r"""EDM's churn :math:`\gamma_i = \min(S_{\rm churn}/N, \sqrt2 - 1)` where :math:`S_{t\min} \le \sigma_i \le S_{t\max}`, else 0.

    :func:`refscore.diffusion.coefficients.churn_gamma` (Karras et al. 2022, Algorithm 2 line 3): the
    noise level is raised to :math:`(1 + \gamma_i)\sigma_i`, and :math:`\sqrt2 - 1` caps it at doubling
    the variance.

    Source read: NVlabs/edm, ``generate.py``, ``edm_sampler``: ``gamma = min(S_churn / num_steps,
    np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0``; crowsonkb/k-diffusion, ``k_diffusion/sampling.py``,
    ``sample_euler`` and ``sample_heun``: the same with ``len(sigmas) - 1`` steps.  ``max`` in place of
    ``min`` adds noise at every step even at ``S_churn = 0`` (the cap becomes a floor).

    Examples
    --------
    >>> churn_gamma(1.0, 18, 40.0)         # 40 / 18 > sqrt(2) - 1: the cap
    0.41421356237309515
    """
    from .diffusion.coefficients import churn_gamma as gamma

    n = check_int("n_steps", n_steps, 1)
    return gamma(float(sigma), n, float(S_churn), float(S_tmin), float(S_tmax))


# ------------------------------------------------------------------- the ledger
#: The words a :class:`Conversion` uses for its arguments (``args``), and what each is.
ARGUMENTS = {
    "value": "the number converted: a loss value or its gradient over theta, a KSD value, a step parameter",
    "trace_term": "the value converted less its norm_term (SSM-VR's v^T grad_x s v term)",
    "norm_term": "SSM-VR's 1/2 ||s||^2 term (mean over the points, or its gradient): the same in both conventions",
    "sigma": "the noise level of the value (a number, or one per value)",
    "dim": "d, the dimension of the points",
    "diagonal": "the Stein kernel on the diagonal, u_p(x_i, x_i), shape (n,) (imq_stein_diagonal)",
    "g": "the scale g of the kernel (1 + g r^2)^(-beta)",
    "beta": "the exponent beta in (0, 1) of the kernel (1 + g r^2)^(-beta)",
}

#: The words a :class:`Conversion` uses for what its function returns (``converts``): refscore's quantities.
CONVERTED = {
    "step": "refscore's Langevin step eta of x + eta s(x) + sqrt(2 eta) z (ULA, MALA)",
    "annealed_step": "refscore's base step of annealed Langevin, eta_i = step sigma_i^2 / sigma_L^2",
    "friction": "refscore's friction gamma of kinetic Langevin, dp = s dt - gamma p dt + sqrt(2 gamma m) dW",
    "dsm": "refscore's DSM 1/2 ||s(x + sigma z) + z / sigma||^2 at one noise level, or its gradient over theta",
    "ssm": "refscore's SSM with E[v v^T] = I projections, or its gradient over theta",
    "ssm_vr": "refscore's SSM-VR with E[v v^T] = I projections, or its gradient over theta",
    "ssm_sphere": "refscore's SSM with its sqrt(d)-radius sphere projections, or its gradient over theta",
    "ssm_vr_sphere": "refscore's SSM-VR with its sqrt(d)-radius sphere projections, or its gradient over theta",
    "ksd_u": "refscore's squared KSD, the U-statistic (refscore.metrics.ksd)",
    "ksd_v": "the V-statistic of refscore's Stein kernel",
    "stein_kernel": "entries of refscore's IMQ Stein kernel u_p(x_i, x_j)",
    "noise_level": "refscore's noise level sigma of x = x0 + sigma eps (EDM's sigma = t; sigma / alpha in general)",
}


@dataclass(frozen=True)
class Conversion:
    """A conversion of a ledger row, as data: a function from a variant to refscore's convention, and back.

    Attributes
    ----------
    function : callable
        The variant's value to refscore's: ``function(*args, **option)``.
    inverse : callable or None
        refscore's value to the variant's, called with the same arguments; None where none exists.
    converts : tuple of str
        The refscore quantities ``function`` returns, words of :data:`CONVERTED`.
    args : tuple of str
        Its positional arguments in order, words of :data:`ARGUMENTS`; the first is the value
        converted (``"value"``, or ``"trace_term"``: the value less its ``"norm_term"``).
    options : tuple of (str, tuple)
        Keyword arguments that pick one of several variants, each with the values it takes
        (``("form", ("v", "nv", "sqrt_v"))``): ``option_sets()`` lists every combination.

    Examples
    --------
    >>> c = row_of(dsm_from_ncsn).conversions[0]
    >>> c.to_refscore(1.0, sigma=0.5), c.from_refscore(4.0, sigma=0.5)
    (4.0, 1.0)
    """

    function: Callable
    inverse: Callable | None
    converts: tuple
    args: tuple = ("value",)
    options: tuple = ()

    @property
    def needs(self) -> tuple:
        """The words of :data:`ARGUMENTS` a caller gives besides the value (``("sigma",)``, ``("norm_term", "dim")``)."""
        first = ("norm_term",) if self.args[0] == "trace_term" else ()
        return tuple(dict.fromkeys(first + tuple(self.args[1:])))

    def option_sets(self) -> list:
        """Every combination of ``options`` as keyword arguments (``[{}]`` when there are none)."""
        keys = [k for k, _ in self.options]
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.options))]

    def _call(self, f, value, option, given):
        missing = [w for w in self.needs if w not in given]
        if missing:
            raise TypeError(f"{f.__name__} needs {', '.join(missing)} besides the value")
        first = value - given["norm_term"] if self.args[0] == "trace_term" else value
        return f(first, *(given[w] for w in self.args[1:]), **(option or {}))

    def to_refscore(self, value, option=None, **given):
        """``function`` on ``value`` (in the variant's convention) with the arguments ``given`` by word."""
        return self._call(self.function, value, option, given)

    def from_refscore(self, value, option=None, **given):
        """``inverse`` on ``value`` (refscore's) with the arguments ``given`` by word."""
        if self.inverse is None:
            raise TypeError(f"{self.function.__name__} has no inverse")
        return self._call(self.inverse, value, option, given)


@dataclass(frozen=True)
class ConventionRow:
    """One row of the ledger: four cells of text, and the functions they name as callables.

    Attributes
    ----------
    quantity, refscore, variant, conversion : str
        The rendered cells: the quantity, refscore's convention, the common variant, the
        conversion in words (:func:`markdown_table`, the README, the documentation site).
    conversions : tuple of Conversion
        The conversions between the variant and refscore's convention, with their inverses.
    helpers : tuple of callable
        The row's other functions: constants linking losses, schedules, parameter maps.

    Iterating a row gives its four cells, as when it was a tuple of text.
    """

    quantity: str
    refscore: str
    variant: str
    conversion: str
    conversions: tuple = ()
    helpers: tuple = ()

    @property
    def cells(self) -> tuple:
        """``(quantity, refscore, variant, conversion)``, the text of the row."""
        return (self.quantity, self.refscore, self.variant, self.conversion)

    def __iter__(self):
        return iter(self.cells)

    @property
    def functions(self) -> tuple:
        """Every callable of the row: each conversion's function and inverse, then the helpers."""
        out = []
        for c in self.conversions:
            out += [c.function] + ([c.inverse] if c.inverse is not None else [])
        return tuple(out) + tuple(self.helpers)


#: The conventions ledger, rendered in the README by :func:`markdown_table`: per row its text and,
#: as data, the functions it names (:class:`ConventionRow`).
TABLE: tuple[ConventionRow, ...] = (
    ConventionRow(
        "Langevin step",
        "x + η s + √(2η) z (eq. (4))",
        "x + (lr/2) s + √lr z (NCSN toy runner)",
        "η = lr/2: `step_from_lr(lr)`, `lr_from_step(η)`",
        conversions=(Conversion(step_from_lr, lr_from_step, ("step",)),),
    ),
    ConventionRow(
        "Langevin step (noise scale)",
        "x + η s + √(2η) z",
        "x + (δ²/2) s + δ z",
        "η = δ²/2: `step_from_noise_scale(δ)`; δ = √(2η): `noise_scale_from_step(η)`",
        conversions=(Conversion(step_from_noise_scale, noise_scale_from_step, ("step",)),),
    ),
    ConventionRow(
        "Annealed Langevin (NCSN paper)",
        "η_i = step·σ_i²/σ_L², x + η_i s + √(2η_i) z",
        "NCSN Algorithm 1 and toy runner: α_i = ε σ_i²/σ_L², x + (α_i/2) s + √α_i z",
        "step = ε/2: `ncsn_step(ε)`, `annealed_steps(step, sigmas)` = `ncsn_alphas(ε, sigmas)`/2",
        conversions=(Conversion(ncsn_step, ncsn_eps, ("annealed_step",)),),
        helpers=(annealed_steps, ncsn_alphas),
    ),
    ConventionRow(
        "Annealed Langevin (NCSN/NCSNv2 code)",
        "η_i = step·σ_i²/σ_L², x + η_i s + √(2η_i) z",
        "released anneal_Langevin_dynamics: step_size = step_lr (σ_i/σ_L)², x + step_size s + √(2 step_size) z",
        "step = step_lr: `ncsn_code_step(step_lr)`; NCSN's CIFAR-10 step_lr 2e-5 is step 2e-5, not 1e-5",
        conversions=(Conversion(ncsn_code_step, ncsn_code_step_lr, ("annealed_step",)),),
    ),
    ConventionRow(
        "Langevin step (NCSN ε as step_lr)",
        "x + η s + √(2η) z; NCSN's paper ε = 2η, its code's step_lr = η",
        "the paper's ε = 2η run in the code's update x + ε s + √(2ε) z: twice the step",
        "such a sampler runs at `ncsn_eps(η)` = 2η: give it `ncsn_step(η)` = η/2",
        conversions=(Conversion(ncsn_eps, ncsn_step, ("step", "annealed_step")),),
    ),
    ConventionRow(
        "Annealed Langevin (score_sde ALD)",
        "η_i = step·σ_i²/σ_L²",
        "η_i = 2α (snr σ_i)², α = 1 (VE) or 1 − β_i (VP)",
        "step = 2 snr² σ_L²: `score_sde_ald_step(snr, σ_L)`; snr = √(step/2)/σ_L: `score_sde_ald_snr(step, σ_L)`",
        conversions=(Conversion(score_sde_ald_step, score_sde_ald_snr, ("annealed_step",), ("value", "sigma")),),
    ),
    ConventionRow(
        "Langevin corrector (score_sde)",
        "x + η s + √(2η) z, fixed η",
        "η = 2α (snr · mean‖z‖ / mean‖s‖)², batch means, new every step",
        "η per sample: `score_sde_langevin_step(snr, z, s, alpha)`",
        helpers=(score_sde_langevin_step,),
    ),
    ConventionRow(
        "DSM scale",
        "½‖s(x+σz) + z/σ‖², z ~ N(0, I)",
        "σ⁴-scaled ½‖σ² s + σ z‖² (NCSN losses/dsm.py dsm)",
        "DSM = value/σ⁴: `dsm_from_sigma4_scaled`, `sigma4_scaled_from_dsm`",
        conversions=(Conversion(dsm_from_sigma4_scaled, sigma4_scaled_from_dsm, ("dsm",), ("value", "sigma")),),
    ),
    ConventionRow(
        "DSM scale (NCSN)",
        "½‖s(x+σz) + z/σ‖²",
        "λ(σ)=σ² weighted ½‖σ s + z‖² (anneal_dsm_score_estimation)",
        "DSM = value/σ²: `dsm_from_ncsn`, `ncsn_from_dsm`",
        conversions=(Conversion(dsm_from_ncsn, ncsn_from_dsm, ("dsm",), ("value", "sigma")),),
    ),
    ConventionRow(
        "DSM loss (score_sde)",
        "½‖s(x+σz) + z/σ‖² (½·sum over dims)",
        "reduce_mean=True: mean over D dims of (σs + z)², or × g(t)² (likelihood weighting)",
        "value = w·DSM, w = (2/D or 1)·(σ² or g²): `score_sde_from_dsm`, `dsm_from_score_sde`, `score_sde_weight`",
        conversions=(Conversion(dsm_from_score_sde, score_sde_from_dsm, ("dsm",), ("value", "sigma", "dim"),
                               (("reduce_mean", (True, False)),)),),
        helpers=(score_sde_weight,),
    ),
    ConventionRow(
        "Sliced loss (NCSN)",
        "SSM-VR vᵀJv + ½‖s‖² at x̃ = x + σz",
        "σ²-weighted SSM-VR, Gaussian v (anneal_sliced_score_estimation_vr)",
        "value = σ²·SSM-VR: `ncsn_sliced_from_ssm`, `ssm_from_ncsn_sliced`; E[NCSN DSM] − E[NCSN sliced] = d/2: `ncsn_dsm_minus_sliced(d)`",
        conversions=(Conversion(ssm_from_ncsn_sliced, ncsn_sliced_from_ssm, ("ssm", "ssm_vr"), ("value", "sigma")),),
        helpers=(ncsn_dsm_minus_sliced,),
    ),
    ConventionRow(
        "DSM noise",
        "ε = σz, target −z/σ",
        "eq. (6): ε ~ N(0, σ²I), target −ε/σ²",
        "identical (factor 1)",
    ),
    ConventionRow(
        "SSM projections",
        "E[vvᵀ] = I: gaussian, rademacher, √d·unit sphere",
        "unit-sphere v, no √d (NCSN sliced_score_estimation)",
        "SSM ×d, exact per sample: `sphere_unscaled_ssm_to_ism(value, d)`",
        conversions=(Conversion(sphere_unscaled_ssm_to_ism, ism_to_sphere_unscaled_ssm, ("ssm_sphere",), ("value", "dim")),),
    ),
    ConventionRow(
        "SSM-VR projections",
        "vᵀJv + ½‖s‖², E[vvᵀ] = I",
        "unit-sphere v (no √d)",
        "only the trace term ×d: `sphere_unscaled_ssm_vr_to_ism(trace, norm, d)`",
        conversions=(Conversion(sphere_unscaled_ssm_vr_to_ism, ism_to_sphere_unscaled_ssm_vr, ("ssm_vr_sphere",),
                               ("trace_term", "norm_term", "dim")),),
    ),
    ConventionRow(
        "KSD estimator",
        "U-statistic of KSD², i ≠ j (`refscore.metrics.ksd`)",
        "V-statistic (diagonal kept); n·V (kgof KernelSteinTest); √V (stein_thinning ksd)",
        "V = (n−1)/n·U + mean u_ii/n: `ksd_from_u(U, diag, form)`, `ksd_to_u`, `imq_stein_diagonal(s, c, β)`",
        conversions=(Conversion(ksd_to_u, ksd_from_u, ("ksd_u",), ("value", "diagonal"),
                               (("form", tuple(f for f in KSD_FORMS if f != "u")),)),),
        helpers=(imq_stein_diagonal,),
    ),
    ConventionRow(
        "IMQ kernel",
        "(c² + r²)^β, β ∈ (−1, 0)",
        "(1 + g r²)^(−β), β ∈ (0, 1) (stein_thinning vfk0_imq, g = 1/pre)",
        "c = 1/√g, β → −β, KSD² × g^β: `imq_from_scaled(g, β)`, `ksd_from_scaled_imq`, `scaled_imq_from_ksd`",
        conversions=(Conversion(ksd_from_scaled_imq, scaled_imq_from_ksd, ("ksd_u", "ksd_v", "stein_kernel"),
                               ("value", "g", "beta")),),
        helpers=(imq_from_scaled,),
    ),
    ConventionRow(
        "Kinetic Langevin friction (blackjax)",
        "dp = s dt − γ p dt + √(2γm) dW; O over τ: c = e^(−γτ)",
        "blackjax underdamped_langevin: OBABO, velocity Verlet between refreshes over ε/2, c₁ = exp(−(ε/2)/L), unit mass",
        "γ = 1/L: `friction_from_decoherence_length(L)`, `decoherence_length_from_friction(γ)`; "
        "`blackjax_underdamped(ε, L)`",
        conversions=(Conversion(friction_from_decoherence_length, decoherence_length_from_friction, ("friction",)),),
        helpers=(blackjax_underdamped,),
    ),
    ConventionRow(
        "Kinetic Langevin thermostat (jax-md)",
        "BAOAB at unit temperature: score s, momenta p ~ N(0, mI)",
        "nvt_langevin(dt, kT, gamma): BAOAB on force F = −∇U, momenta p_md ~ N(0, m kT), samples e^(−U/kT)",
        "step dt, friction γ, mass m/kT, score F/kT, momenta p_md/kT: `jax_md_nvt_langevin(dt, kT, γ, m)`, "
        "`momenta_from_thermostat`",
        helpers=(jax_md_nvt_langevin, kinetic_from_thermostat, momenta_from_thermostat, thermostat_momenta),
    ),
    ConventionRow(
        "Kinetic Langevin thermostat (OpenMM)",
        "BAOAB at unit temperature",
        "LangevinMiddleIntegrator(T, γ /ps, dt ps): BAOAB with the half kicks merged, v between O and the last kick",
        "kT = k_B T (kJ/mol), mass m/kT, p = (m/kT) v + (dt/2) s(x): `openmm_langevin_middle`, `momenta_from_openmm`",
        helpers=(openmm_langevin_middle, momenta_from_openmm, openmm_velocities),
    ),
    ConventionRow(
        "Kinetic Langevin, overdamped and MALA limits",
        "kinetic step h, friction γ, mass m",
        "γ → ∞: ULA in time t/(γm); one OBABO step with a full refresh = MALA's proposal at η = h²/(2m)",
        "`overdamped_time(t, γ, m)`, `mala_step_from_kinetic(h, m)`, `kinetic_step_from_mala(η, m)`",
        helpers=(overdamped_time, mala_step_from_kinetic, kinetic_step_from_mala),
    ),
    ConventionRow(
        "Langevin temperature",
        "x + η s + √(2η) z samples p",
        "x + η s + √(2η) τ z samples p^(1/τ²)",
        "step ητ² on score s/τ²: `tempered_step(η, τ)`",
        helpers=(tempered_step,),
    ),
    ConventionRow(
        "Decoupled step and noise",
        "x + η s + √(2η) z",
        "x + a s + b z (JEM sgld_lr, sgld_std) samples p^(2a/b²)",
        "step b²/2 on score (2a/b²) s: `decoupled_step(a, b)`",
        helpers=(decoupled_step,),
    ),
    ConventionRow(
        "Timestep spacing (diffusers)",
        "the grid is explicit: timesteps largest first, then −1 (ᾱ = 1)",
        "DDIMScheduler timestep_spacing: 'leading' i⌊T/n⌋ + steps_offset (Stable Diffusion: 1; never T − 1), "
        "'trailing' round(T − iT/n) − 1, 'linspace' round(i(T−1)/(n−1))",
        "`diffusion_timesteps(n, T, spacing, steps_offset)` (ties rounded half to even on the exact rational)",
        helpers=(diffusion_timesteps,),
    ),
    ConventionRow(
        "Zero terminal SNR (diffusers)",
        "ᾱ_{T−1} = 0 exactly after the rescale (Lin et al. 2024, Algorithm 1)",
        "rescale_zero_terminal_snr (rescale_betas_zero_snr=True), in float32",
        "`zero_terminal_snr_betas(betas)`",
        helpers=(zero_terminal_snr_betas,),
    ),
    ConventionRow(
        "Prediction type (diffusers)",
        "the model returns x0, ε, v = αε − σx0, score −ε/σ or velocity α′x0 + σ′ε",
        "prediction_type 'sample', 'epsilon', 'v_prediction' (DDIMScheduler.step: x0 = √ᾱ x − √(1−ᾱ) v)",
        "`x0_from_prediction(kind, pred, x, α, σ)`, `prediction_from_x0(kind, x0, x, α, σ)`",
        helpers=(x0_from_prediction, prediction_from_x0),
    ),
    ConventionRow(
        "Denoiser preconditioning (EDM, k-diffusion)",
        "D(x̄; σ) = c_skip x̄ + c_out F(c_in x̄), x̄ = x/α, σ = σ(t)/α(t) (EDM's variables)",
        "EDMPrecond / k-diffusion Denoiser c_out = +σσ_d/√(σ²+σ_d²); VDenoiser c_out = −σσ_d/√(σ²+σ_d²); "
        "DiscreteEpsDDPMDenoiser, VPPrecond c_skip = 1, c_out = −σ; VEPrecond c_out = +σ, c_in = 1",
        "`denoiser_scalings(kind, σ, σ_d)` → (c_skip, c_out, c_in) for 'edm', 'v', 'eps', 've'",
        helpers=(denoiser_scalings,),
    ),
    ConventionRow(
        "DDIM final alpha (diffusers)",
        "the last step lands on ᾱ = 1 (grid ends at t = −1): it returns x̂0",
        "DDIMScheduler(set_alpha_to_one=False), or alphas_prev starting at ᾱ_0: the last step lands at timestep 0",
        "`ddim_final_alpha_cumprod(alphas_cumprod, set_alpha_to_one)`; refscore's grid ending at 0, not −1",
        helpers=(ddim_final_alpha_cumprod,),
    ),
    ConventionRow(
        "Karras σ grid (k-diffusion)",
        "EDM.grid(n): n σ's, σ_max to σ_min (ramp i/(n−1), ρ), then 0: n steps",
        "get_sigmas_karras(n, σ_min, σ_max, ρ), edm_sampler: the same; a final σ_min appended instead of 0 "
        "repeats the last σ (diffusers final_sigmas_type='sigma_min'): a last step of size 0",
        "`karras_sigmas(n, σ_min, σ_max, ρ)`",
        helpers=(karras_sigmas,),
    ),
    ConventionRow(
        "VE noise levels (diffusers KarrasVeScheduler)",
        "σ_i the noise level (standard deviation)",
        "KarrasVeScheduler schedule = σ_max²(σ_min²/σ_max²)^(i/(N−1)): EDM Table 1's VE times t_i = σ_i², "
        "passed as σ",
        "σ = √t: `sigma_from_ve_time(t)`, `ve_time_from_sigma(σ)`",
        conversions=(Conversion(sigma_from_ve_time, ve_time_from_sigma, ("noise_level",)),),
    ),
    ConventionRow(
        "EDM churn γ",
        "γ_i = min(S_churn/N, √2 − 1) where S_tmin ≤ σ_i ≤ S_tmax",
        "edm_sampler, k-diffusion sample_euler/sample_heun: the same; max for min adds noise at every step",
        "`churn_gamma(σ, N, S_churn, S_tmin, S_tmax)`",
        helpers=(churn_gamma,),
    ),
    ConventionRow(
        "Heun second stage (diffusers)",
        "second stage at (x̃, σ_{i+1}): d′ = (x̃ − D(x̃; σ_{i+1}))/σ_{i+1}; none when σ_{i+1} = 0",
        "HeunDiscreteScheduler.step: the same (sigma_next in its second-order state); the first stage's σ̂ "
        "in the second is the slip",
        "identical (the grid's next time)",
    ),
    ConventionRow(
        "PC final denoise (score_sde)",
        "pc(denoise=True): the last update returns its mean, no noise",
        "get_pc_sampler(denoise=True) returns x_mean (noise_removal); denoise=False returns the noised x",
        "the option `denoise`",
    ),
    ConventionRow(
        "PC order (score_sde)",
        "pc(order='corrector_first'): per grid time t_i the corrector's Langevin steps at t_i, then the "
        "predictor from t_i to t_{i+1}; the noise of step i drawn in call order (z[i, 0] first)",
        "get_pc_sampler: corrector_update_fn then predictor_update_fn at the same t; Song et al. (2021) "
        "Algorithms 2-3 write the predictor first, then the corrector at the new time (order='predictor_first')",
        "the option `order`",
    ),
    ConventionRow(
        "ESM − ISM",
        "½ E_p‖∇log p‖²",
        "Gaussian: ½ tr Σ⁻¹",
        "`esm_minus_ism(dist)`",
        helpers=(esm_minus_ism,),
    ),
    ConventionRow(
        "DSM(σ) − ESM(p_σ)",
        "½(d/σ² − E_{p_σ}‖∇log p_σ‖²)",
        "Gaussian: ½(d/σ² − tr (Σ+σ²I)⁻¹)",
        "`dsm_minus_esm(dist, sigma)`",
        helpers=(dsm_minus_esm,),
    ),
    ConventionRow(
        "DSM(σ) − ISM(p_σ)",
        "d/(2σ²), any data law",
        "—",
        "`dsm_minus_ism_noised(d, sigma)`",
        helpers=(dsm_minus_ism_noised,),
    ),
    ConventionRow(
        "E_v SSM, E_v SSM-VR",
        "= ISM when E[vvᵀ] = I",
        "unit sphere: SSM → ISM/d",
        "`projection_scale(kind, d)`",
        helpers=(projection_scale,),
    ),
    ConventionRow(
        "PF-ODE log-likelihood (prior term)",
        "log π(x_T) + ∫ ∇·v dt from t_ε to T (the change of variables)",
        "the divergence integral alone, the prior's log-density at the ODE's end left out",
        "add the prior term: `log_likelihood_with_prior(divergence_integral, prior_term)`",
        helpers=(log_likelihood_with_prior,),
    ),
    ConventionRow(
        "PF-ODE log-likelihood (Hutchinson probes)",
        "log π(x_T) + (1/m) Σ_k z_kᵀ (∫ J_v dt) z_k: the mean over the m probes",
        "the sum over the m probes, never divided by m (score_sde's likelihood.py draws one probe per point, "
        "where the two agree)",
        "`log_likelihood_from_probe_sum(value, prior_term, m)`, `probe_sum_from_log_likelihood`",
        helpers=(log_likelihood_from_probe_sum, probe_sum_from_log_likelihood),
    ),
)


def row(quantity: str) -> ConventionRow:
    """The row of :data:`TABLE` whose quantity cell is ``quantity``.

    Examples
    --------
    >>> row("DSM noise").conversion
    'identical (factor 1)'
    """
    for r in TABLE:
        if r.quantity == quantity:
            return r
    raise KeyError(f"no ledger row {quantity!r}; the rows are {[r.quantity for r in TABLE]}")


def row_of(function) -> ConventionRow | None:
    """The first row of :data:`TABLE` that carries ``function`` (a conversion, its inverse or a helper), or None.

    Examples
    --------
    >>> row_of(ncsn_eps).quantity
    'Annealed Langevin (NCSN paper)'
    """
    for r in TABLE:
        if any(f is function for f in r.functions):
            return r
    return None


def markdown_table() -> str:
    """The ledger :data:`TABLE` as a GitHub-flavoured Markdown table.

    Examples
    --------
    >>> markdown_table().splitlines()[0]
    '| quantity | refscore convention | common variant | conversion |'
    """
    lines = [
        "| quantity | refscore convention | common variant | conversion |",
        "|---|---|---|---|",
    ]
    for row in TABLE:
        cells = (c.replace("|", "\\|") for c in row.cells)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
