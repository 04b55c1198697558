r"""Fit a score model by minibatch Adam on any score-matching loss.

Derivation: docs/derivations.md §2 (the gradients it follows).

``fit(model, loss, data, steps, ...)`` draws, at every step and in this order
from one ``numpy.random.Generator``: the minibatch (epochs of a random
permutation), then the loss's own randomness -- DSM noise :math:`\varepsilon`,
SSM projections :math:`v`, or NCSN labels and noise.  The same seed therefore
gives bit-identical ``theta`` and history.

Adam (Kingma & Ba 2015, Algorithm 1) is written out:

.. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
    \theta_t &= \theta_{t-1} - \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}.

References
----------
D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
Algorithm 1.  Losses: eqs. (2), (3), (6), (7); Song & Ermon (2019) eq. (6)
for ``"dsm_multi"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import losses as _losses
from ._validation import as_points, as_rng, check_choice, check_int, check_positive, check_theta
from .models.conditional import NoiseConditional

__all__ = ["fit", "FitResult", "LOSS_NAMES"]

#: the loss names ``fit`` accepts
#: the losses fit can minimise: every entry of the loss registry
LOSS_NAMES = tuple(_losses.LOSSES)
_PROJECTIONS = ("gaussian", "rademacher", "sphere")
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8

#: divergence rule of :func:`fit`: the minibatch loss L_t may not rise more than
#: DIVERGENCE_FACTOR * (1 + |L_1|) above L_1, the loss at step 1 (before any update)
DIVERGENCE_FACTOR = 1e8


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    theta : (P,) ndarray
        Parameters after the last step.
    history : (k,) ndarray
        Minibatch loss at the recorded steps (evaluated at the parameters
        *before* that step's update).
    history_steps : (k,) ndarray of int
        The 1-based step numbers of ``history``.
    loss : str
        The loss name.
    """

    theta: np.ndarray
    history: np.ndarray
    history_steps: np.ndarray
    loss: str
    n_steps: int = field(default=0)


def _batches(rng, n, batch):
    """Endless minibatch indices: epochs of a random permutation (the whole set if batch >= n)."""
    if batch >= n:
        idx = np.arange(n)
        while True:
            yield idx
    while True:
        perm = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield perm[start : start + batch]


def fit(
    model,
    loss,
    data,
    steps,
    lr=1e-3,
    batch=256,
    rng=None,
    *,
    target_score=None,
    sigma=None,
    sigmas=None,
    projection="rademacher",
    n_projections=1,
    theta0=None,
    record_every=1,
):
    r"""Minimise a score-matching loss over ``theta`` by minibatch Adam.

    .. math::

        \theta_t = \operatorname{Adam}\big(\theta_{t-1},\ \nabla_\theta
        \mathcal L(\theta_{t-1}; x_{B_t}, \xi_t)\big),

    with :math:`B_t` the step's minibatch and :math:`\xi_t` the loss's noise.

    Parameters
    ----------
    model : ScoreModel or NoiseConditional
        A score model; ``"dsm_multi"`` needs a :class:`~refscore.models.NoiseConditional`,
        and only ``"dsm_multi"`` accepts one.
    loss : {"esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi"}
        ``"esm"`` (eq. (2)) needs ``target_score``; ``"ism"`` (eq. (3));
        ``"dsm"`` (eq. (6)) needs ``sigma`` and draws :math:`\varepsilon\sim N(0, I)`;
        ``"ssm"``/``"ssm_vr"`` (eq. (7)) draw ``n_projections`` directions of kind
        ``projection`` per point; ``"dsm_multi"`` needs ``sigmas`` and draws a
        level per point uniformly and :math:`\varepsilon`.
    data : (n, d) array
        Training points.
    steps : int
        Number of Adam steps (>= 1).
    lr : float
        Adam step size :math:`\eta` (> 0).
    batch : int
        Minibatch size (>= 1); ``batch >= n`` uses all points every step.
    rng : None, int or numpy.random.Generator
        Source of every random draw (initialisation too, when ``theta0`` is None).
    target_score : callable or (n, d) array, keyword-only
        ``"esm"`` only: the data score, as a function of points or evaluated at ``data``.
    sigma : float, keyword-only
        ``"dsm"`` only: the noise level (> 0).
    sigmas : (L,) array, keyword-only
        ``"dsm_multi"`` only: the noise levels (> 0).
    projection : {"rademacher", "gaussian", "sphere"}, keyword-only
    n_projections : int, keyword-only
        ``"ssm"``/``"ssm_vr"`` projection kind and count per point.
    theta0 : (P,) array, keyword-only
        Starting parameters (default ``model.init(rng)``).
    record_every : int, keyword-only
        Record the minibatch loss every this many steps (step 1 always).

    Returns
    -------
    FitResult
        ``.theta``, ``.history``, ``.history_steps``.

    Raises
    ------
    FloatingPointError
        When the run diverges; the message names the step.  Never returns NaN
        parameters.  Divergence is (i) a loss, gradient or ``theta`` that is
        non-finite (including float64 overflow inside the loss), or (ii) a
        minibatch loss that rises far above where it started:

        .. math::

            L_t > L_1 + 10^8\,(1 + |L_1|),

        with :math:`L_1` the loss at step 1, before any update
        (``DIVERGENCE_FACTOR = 1e8``).  Every loss is minimised, so a rise of eight
        orders of magnitude of its starting scale is never progress: it is Adam
        overshooting (too large an ``lr``), caught while the values are still
        finite rather than many steps later as NaN.  The ``1 +`` keeps the rule
        meaningful when :math:`L_1 \approx 0`; a loss may fall without bound
        (e.g. ISM on data of tiny scale legitimately goes from -1 to -1e4), and
        Adam's ordinary overshoots (a few orders of magnitude) stay far below
        the threshold.

    References
    ----------
    Kingma & Ba (2015), Algorithm 1.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import GaussianModel
    >>> x = np.random.default_rng(0).normal(size=(500, 1))
    >>> res = fit(GaussianModel(1), "ism", x, steps=200, lr=0.05, rng=0)
    >>> res.history.shape
    (200,)
    """
    check_choice("loss", loss, LOSS_NAMES)
    conditional = isinstance(model, NoiseConditional)
    if loss == "dsm_multi" and not conditional:
        raise ValueError(
            f"loss='dsm_multi' needs a NoiseConditional model (s(x, sigma)), got {type(model).__name__}"
        )
    if loss != "dsm_multi" and conditional:
        raise ValueError(f"a NoiseConditional model is trained with loss='dsm_multi', got loss={loss!r}")
    x, _ = as_points(data, model.dim, "data")
    n, d = x.shape
    steps = check_int("steps", steps, 1)
    batch = check_int("batch", batch, 1)
    record_every = check_int("record_every", record_every, 1)
    n_projections = check_int("n_projections", n_projections, 1)
    lr = check_positive("lr", lr)
    check_choice("projection", projection, _PROJECTIONS)

    for name, value, owner in (
        ("target_score", target_score, "esm"),
        ("sigma", sigma, "dsm"),
        ("sigmas", sigmas, "dsm_multi"),
    ):
        if value is None and loss == owner:
            raise ValueError(f"loss={owner!r} needs {name}, got None")
        if value is not None and loss != owner:
            raise ValueError(f"{name} is only used by loss={owner!r}, got it with loss={loss!r}")
    target_arr = None
    if loss == "esm" and not callable(target_score):
        target_arr, _ = as_points(target_score, d, "target_score")
        if target_arr.shape[0] != n:
            raise ValueError(
                f"target_score must be callable or have shape ({n}, {d}) to match data, "
                f"got shape {np.shape(target_score)}"
            )
    if loss == "dsm":
        sigma = check_positive("sigma", sigma)
    if loss == "dsm_multi":
        sigmas = check_positive("sigmas", sigmas, allow_array=True)
        if sigmas.ndim != 1 or sigmas.size < 1:
            raise ValueError(f"sigmas must be a non-empty 1-D array, got shape {sigmas.shape}")

    rng = as_rng(rng)
    if theta0 is None:
        theta = model.init(rng)
    else:
        theta = check_theta(theta0, model.n_params, getattr(model, "layout", ""), "theta0").copy()

    def value_and_grad(theta, idx):
        xb = x[idx]
        b = xb.shape[0]
        if loss == "esm":
            t = target_score if target_arr is None else target_arr[idx]
            return _losses.esm(model, theta, xb, t, grad=True)
        if loss == "ism":
            return _losses.ism(model, theta, xb, grad=True)
        if loss == "dsm":
            eps = rng.standard_normal((b, d))
            return _losses.dsm(model, theta, xb, sigma, eps, grad=True)
        if loss in ("ssm", "ssm_vr"):
            v = _losses.projections(rng, (n_projections, b, d), kind=projection)
            fn = _losses.ssm if loss == "ssm" else _losses.ssm_vr
            return fn(model, theta, xb, v, grad=True)
        labels = rng.integers(0, sigmas.size, size=b)
        eps = rng.standard_normal((b, d))
        return _losses.dsm_multi(model, theta, xb, sigmas, labels, eps, grad=True)

    m1 = np.zeros_like(theta)
    m2 = np.zeros_like(theta)
    hist, hist_steps = [], []
    batches = _batches(rng, n, batch)
    first = None
    for t in range(1, steps + 1):
        try:
            value, g = value_and_grad(theta, next(batches))
        except FloatingPointError as exc:  # overflow inside the loss, reported by the losses
            raise FloatingPointError(f"fit diverged at step {t} of {steps}: {exc} (try a smaller lr)") from exc
        if not np.isfinite(value) or not np.all(np.isfinite(g)):
            raise FloatingPointError(
                f"fit diverged at step {t} of {steps}: loss {value!r}"
                f"{'' if np.all(np.isfinite(g)) else ', non-finite gradient'} (try a smaller lr)"
            )
        if first is None:
            first = value
        elif value > first + DIVERGENCE_FACTOR * (1.0 + abs(first)):
            raise FloatingPointError(
                f"fit diverged at step {t} of {steps}: loss {value:.6g} rose more than "
                f"{DIVERGENCE_FACTOR:g} x (1 + |L_1|) above the step-1 loss L_1 = {first:.6g} "
                f"(try a smaller lr)"
            )
        if (t - 1) % record_every == 0:
            hist.append(value)
            hist_steps.append(t)
        # Adam, Kingma & Ba (2015) Algorithm 1
        m1 = _BETA1 * m1 + (1.0 - _BETA1) * g
        m2 = _BETA2 * m2 + (1.0 - _BETA2) * g * g
        mhat = m1 / (1.0 - _BETA1**t)
        vhat = m2 / (1.0 - _BETA2**t)
        theta = theta - lr * mhat / (np.sqrt(vhat) + _EPS)
        if not np.all(np.isfinite(theta)):
            raise FloatingPointError(f"fit diverged at step {t} of {steps}: theta became non-finite (try a smaller lr)")
    return FitResult(
        theta=theta,
        history=np.asarray(hist, dtype=float),
        history_steps=np.asarray(hist_steps, dtype=int),
        loss=loss,
        n_steps=steps,
    )
