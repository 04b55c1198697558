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

__all__ = ["fit", "FitResult", "LOSS_NAMES", "GIVEN_INPUTS", "DRAWN_INPUTS"]

#: the losses fit can minimise: every entry of the loss registry
LOSS_NAMES = tuple(_losses.LOSSES)
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8

#: divergence rule of :func:`fit`: the minibatch loss L_t may not rise more than
#: DIVERGENCE_FACTOR * (1 + |L_1|) above L_1, the loss at step 1 (before any update)
DIVERGENCE_FACTOR = 1e8


def _given_target_score(target_score, n, d):
    """A callable as is; otherwise an ``(n, d)`` array of the data score at ``data``."""
    if callable(target_score):
        return target_score
    target_arr, _ = as_points(target_score, d, "target_score")
    if target_arr.shape[0] != n:
        raise ValueError(
            f"target_score must be callable or have shape ({n}, {d}) to match data, "
            f"got shape {np.shape(target_score)}"
        )
    return target_arr


def _given_sigmas(sigmas, n, d):
    sigmas = check_positive("sigmas", sigmas, allow_array=True)
    if sigmas.ndim != 1 or sigmas.size < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D array, got shape {sigmas.shape}")
    return sigmas


#: the registry inputs (``refscore.losses.Loss.inputs``) fit takes as its keyword of the
#: same name: name -> ``check(value, n, d)``, the validated value
_GIVEN = {
    "target_score": _given_target_score,
    "sigma": lambda sigma, n, d: check_positive("sigma", sigma),
    "sigmas": _given_sigmas,
}

#: the given inputs that hold one row per data point: a minibatch takes its rows (a callable is passed as is)
_PER_POINT_GIVEN = ("target_score",)


def _draw_eps(rng, b, d, given, projection, n_projections):
    return rng.standard_normal((b, d))


def _draw_v(rng, b, d, given, projection, n_projections):
    return _losses.projections(rng, (n_projections, b, d), kind=projection)


def _draw_labels(rng, b, d, given, projection, n_projections):
    return rng.integers(0, given["sigmas"].size, size=b)


#: the registry inputs fit draws at every step, after the minibatch and in the order of the
#: loss's ``inputs``: name -> ``draw(rng, b, d, given, projection, n_projections)``
_DRAWN = {"eps": _draw_eps, "v": _draw_v, "labels": _draw_labels}

#: the given inputs a draw reads (a loss that draws labels must take the levels they index)
_DRAW_NEEDS = {"labels": ("sigmas",)}

#: the inputs of ``refscore.losses.Loss.inputs`` fit takes from its keywords of the same name
GIVEN_INPUTS = tuple(_GIVEN)
#: the inputs of ``refscore.losses.Loss.inputs`` fit draws itself at every step
DRAWN_INPUTS = tuple(_DRAWN)


def _check_trainable(spec):
    """ValueError naming the loss and the input fit cannot supply, if any."""
    unknown = [name for name in spec.inputs if name not in _GIVEN and name not in _DRAWN]
    if unknown:
        raise ValueError(
            f"fit cannot train loss={spec.name!r}: it takes {', '.join(unknown)} (its refscore.losses.LOSSES "
            f"entry), which fit neither draws ({', '.join(_DRAWN)}) nor takes as a keyword ({', '.join(_GIVEN)})"
        )
    for name, needs in _DRAW_NEEDS.items():
        missing = [need for need in needs if name in spec.inputs and need not in spec.inputs]
        if missing:
            raise ValueError(f"fit cannot train loss={spec.name!r}: fit draws its {name} from "
                             f"{', '.join(missing)}, which the loss does not take")


def _losses_taking(name):
    """``loss='a' or loss='b'``: the registry losses whose inputs include ``name``."""
    return " or ".join(f"loss={loss!r}" for loss, spec in _losses.LOSSES.items() if name in spec.inputs)


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
    loss : str
        A name of :data:`refscore.losses.LOSSES`: ``"esm"`` (eq. (2)) needs
        ``target_score``; ``"ism"`` (eq. (3)); ``"dsm"`` (eq. (6)) needs ``sigma``
        and draws :math:`\varepsilon\sim N(0, I)`; ``"ssm"``/``"ssm_vr"`` (eq. (7))
        draw ``n_projections`` directions of kind ``projection`` per point;
        ``"dsm_multi"`` needs ``sigmas`` and draws a level per point uniformly and
        :math:`\varepsilon`.  What a loss needs is read from its registry entry's
        ``inputs``: fit takes those of :data:`GIVEN_INPUTS` from its keywords of the
        same name and draws those of :data:`DRAWN_INPUTS`; a loss taking anything
        else is refused (ValueError naming the loss and the input).
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
    check_choice("loss", loss, tuple(_losses.LOSSES))
    spec = _losses.LOSSES[loss]
    _check_trainable(spec)
    conditional = isinstance(model, NoiseConditional)
    if spec.noise_conditional and not conditional:
        raise ValueError(
            f"loss={loss!r} needs a NoiseConditional model (s(x, sigma)), got {type(model).__name__}"
        )
    if not spec.noise_conditional and conditional:
        trained_with = " or ".join(f"loss={name!r}" for name, other in _losses.LOSSES.items()
                                 if other.noise_conditional)
        raise ValueError(f"a NoiseConditional model is trained with {trained_with}, got loss={loss!r}")
    x, _ = as_points(data, model.dim, "data")
    n, d = x.shape
    steps = check_int("steps", steps, 1)
    batch = check_int("batch", batch, 1)
    record_every = check_int("record_every", record_every, 1)
    n_projections = check_int("n_projections", n_projections, 1)
    lr = check_positive("lr", lr)
    check_choice("projection", projection, tuple(_losses.PROJECTIONS))

    keywords = {"target_score": target_score, "sigma": sigma, "sigmas": sigmas}
    for name in _GIVEN:
        if keywords[name] is None and name in spec.inputs:
            raise ValueError(f"loss={loss!r} needs {name}, got None")
        if keywords[name] is not None and name not in spec.inputs:
            raise ValueError(f"{name} is only used by {_losses_taking(name)}, got it with loss={loss!r}")
    given = {name: check(keywords[name], n, d) for name, check in _GIVEN.items() if name in spec.inputs}

    rng = as_rng(rng)
    if theta0 is None:
        theta = model.init(rng)
    else:
        theta = check_theta(theta0, model.n_params, getattr(model, "layout", ""), "theta0").copy()

    def value_and_grad(theta, idx):
        xb = x[idx]
        b = xb.shape[0]
        inputs = {}
        for name in spec.inputs:  # the draws in the loss's input order, after the minibatch
            if name in _DRAWN:
                inputs[name] = _DRAWN[name](rng, b, d, given, projection, n_projections)
            elif name in _PER_POINT_GIVEN and not callable(given[name]):
                inputs[name] = given[name][idx]
            else:
                inputs[name] = given[name]
        return spec.function(model, theta, xb, **inputs, grad=True)

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
