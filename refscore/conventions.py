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

References
----------
Hyvärinen (2005), JMLR 6, Thm 1; Vincent (2011), Neural Comput. 23, eqs (4)-(11);
Song, Garg, Shi & Ermon (2019), UAI, eqs (6)-(8); Song & Ermon (2019), NeurIPS,
Algorithm 1 and eq (5).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ._validation import as_float_array, check_choice, check_finite, check_positive, check_sigmas

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
    "ncsn_step",
    "ncsn_eps",
    "annealed_steps",
    "ncsn_alphas",
    # the ledger
    "ConventionRow",
    "TABLE",
    "markdown_table",
]


# ---------------------------------------------------------------- validation
def _value(value, name: str = "value"):
    """A finite float (or float array) loss value; returns a float for scalars."""
    arr = as_float_array(value, name)
    check_finite(name, arr)
    return float(arr) if arr.ndim == 0 else arr


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
    return _value(value) / _sigma(sigma) ** 4


def sigma4_scaled_from_dsm(value, sigma):
    r"""Inverse of :func:`dsm_from_sigma4_scaled`: multiply by :math:`\sigma^4`.

    Examples
    --------
    >>> sigma4_scaled_from_dsm(16.0, 0.5)
    1.0
    """
    return _value(value) * _sigma(sigma) ** 4


def dsm_from_ncsn(value, sigma):
    r"""NCSN's per-level loss :math:`\tfrac12\lVert\sigma s + z\rVert^2`, converted to refscore's DSM.

    NCSN weights level :math:`\sigma` by :math:`\lambda(\sigma) = \sigma^2`
    (Song & Ermon 2019, eq. 6):

    .. math::

        \sigma^2\cdot\tfrac12\lVert s + z/\sigma\rVert^2 = \tfrac12\lVert\sigma s + z\rVert^2
        \quad\Rightarrow\quad \mathrm{DSM} = \mathrm{value}/\sigma^2 .

    ``refscore.losses.dsm_multi(..., weighting="sigma2")`` is this weighted form.

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
    return _value(value) / _sigma(sigma) ** 2


def ncsn_from_dsm(value, sigma):
    r"""Inverse of :func:`dsm_from_ncsn`: multiply by :math:`\sigma^2`.

    Examples
    --------
    >>> ncsn_from_dsm(4.0, 0.5)
    1.0
    """
    return _value(value) * _sigma(sigma) ** 2


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


def ncsn_step(eps_ncsn):
    r"""refscore's base step for NCSN's :math:`\epsilon`: :math:`\eta = \epsilon/2`.

    NCSN's Algorithm 1 uses :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` and
    :math:`x \leftarrow x + \tfrac{\alpha_i}{2} s + \sqrt{\alpha_i}\,z`, the lr-form
    of :func:`step_from_lr` with :math:`lr = \alpha_i`; so
    :math:`\eta_i = \alpha_i/2 = (\epsilon/2)\,\sigma_i^2/\sigma_L^2`, i.e. refscore's
    ``step = eps/2`` in :func:`annealed_steps`.  NCSN's :math:`\epsilon = 2\cdot10^{-5}`
    (CIFAR-10) is ``step = 1e-5``; the toy's :math:`\epsilon = 0.1` is ``step = 0.05``.

    References
    ----------
    Song & Ermon (2019), NeurIPS, Algorithm 1 and §4.3.

    Examples
    --------
    >>> ncsn_step(0.1)
    0.05
    """
    return _positive(eps_ncsn, "eps_ncsn") / 2.0


def ncsn_eps(step):
    r"""Inverse of :func:`ncsn_step`: :math:`\epsilon = 2\eta`.

    Examples
    --------
    >>> ncsn_eps(0.05)
    0.1
    """
    return 2.0 * _positive(step, "step")


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


def _positive(value, name):
    if np.ndim(value) == 0:
        return check_positive(name, value)
    return check_positive(name, value, allow_array=True)


# ------------------------------------------------------------------- the ledger
class ConventionRow(NamedTuple):
    """One row of the ledger: ``quantity``, ``refscore`` convention, common ``variant``, ``conversion``."""

    quantity: str
    refscore: str
    variant: str
    conversion: str


#: The conventions ledger, rendered in the README by :func:`markdown_table`.
TABLE: tuple[ConventionRow, ...] = (
    ConventionRow(
        "Langevin step",
        "x + η s + √(2η) z (eq. (4))",
        "x + (lr/2) s + √lr z",
        "η = lr/2: `step_from_lr(lr)`, `lr_from_step(η)`",
    ),
    ConventionRow(
        "Langevin step (noise scale)",
        "x + η s + √(2η) z",
        "x + (δ²/2) s + δ z",
        "η = δ²/2: `step_from_noise_scale(δ)`",
    ),
    ConventionRow(
        "Annealed Langevin",
        "η_i = step·σ_i²/σ_L², x + η_i s + √(2η_i) z",
        "NCSN α_i = ε σ_i²/σ_L², x + (α_i/2) s + √α_i z",
        "step = ε/2: `ncsn_step(ε)`, `annealed_steps(step, sigmas)` = `ncsn_alphas(ε, sigmas)`/2",
    ),
    ConventionRow(
        "DSM scale",
        "½‖s(x+σz) + z/σ‖², z ~ N(0, I)",
        "σ⁴-scaled ½‖σ² s + σ z‖²",
        "DSM = value/σ⁴: `dsm_from_sigma4_scaled`, `sigma4_scaled_from_dsm`",
    ),
    ConventionRow(
        "DSM scale (NCSN)",
        "½‖s(x+σz) + z/σ‖²",
        "λ(σ)=σ² weighted ½‖σ s + z‖²",
        "DSM = value/σ²: `dsm_from_ncsn`, `ncsn_from_dsm`",
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
        "unit-sphere v (no √d)",
        "SSM ×d, exact per sample: `sphere_unscaled_ssm_to_ism(value, d)`",
    ),
    ConventionRow(
        "SSM-VR projections",
        "vᵀJv + ½‖s‖², E[vvᵀ] = I",
        "unit-sphere v (no √d)",
        "only the trace term ×d: `sphere_unscaled_ssm_vr_to_ism(trace, norm, d)`",
    ),
    ConventionRow(
        "ESM − ISM",
        "½ E_p‖∇log p‖²",
        "Gaussian: ½ tr Σ⁻¹",
        "`esm_minus_ism(dist)`",
    ),
    ConventionRow(
        "DSM(σ) − ESM(p_σ)",
        "½(d/σ² − E_{p_σ}‖∇log p_σ‖²)",
        "Gaussian: ½(d/σ² − tr (Σ+σ²I)⁻¹)",
        "`dsm_minus_esm(dist, sigma)`",
    ),
    ConventionRow(
        "DSM(σ) − ISM(p_σ)",
        "d/(2σ²), any data law",
        "—",
        "`dsm_minus_ism_noised(d, sigma)`",
    ),
    ConventionRow(
        "E_v SSM, E_v SSM-VR",
        "= ISM when E[vvᵀ] = I",
        "unit sphere: SSM → ISM/d",
        "`projection_scale(kind, d)`",
    ),
)


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
        cells = (c.replace("|", "\\|") for c in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
