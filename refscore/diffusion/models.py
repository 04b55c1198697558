r"""A trained refscore score model as a denoiser, for the samplers of :mod:`refscore.diffusion.samplers`.

Derivation: docs/diffusion.md §8 (the noise level a noise-conditional model is conditioned on, the change to
EDM's variables, Tweedie).

The samplers take a denoiser ``x0_fn(x, t) -> x0``.  A :class:`refscore.models.NoiseConditional` model
:math:`s_\theta(y, \bar\sigma) = s_\theta(y)/\bar\sigma` trained by NCSN's multi-level DSM
(:func:`refscore.losses.dsm_multi`: :math:`\tilde y = y_0 + \bar\sigma\varepsilon`, target
:math:`-\varepsilon/\bar\sigma`) approximates the score of :math:`p_{\bar\sigma} = p_{\rm data} * N(0, \bar\sigma^2 I)`:
the noise level :math:`\bar\sigma` it is conditioned on is VE's and EDM's :math:`\sigma(t)` (their
:math:`\alpha = 1`), and in any schedule it is EDM's :math:`\bar\sigma(t) = \sigma(t)/\alpha(t)` of the point
:math:`\bar x = x/\alpha(t)` (docs/diffusion.md §1.3).  Since :math:`x_t = \alpha(x_0 + \bar\sigma\varepsilon)`,
:math:`p_t(x) = \alpha^{-d}\,p_{\bar\sigma}(x/\alpha)` and

.. math::

    \nabla_x\log p_t(x) \approx \hat s(x, t) = \frac1\alpha\,s_\theta\Bigl(\frac x\alpha,\ \frac\sigma\alpha\Bigr),
    \qquad
    \hat x_0 = \frac{x + \sigma^2\hat s}{\alpha}
    = \bar x + \bar\sigma^2 s_\theta(\bar x, \bar\sigma)

(Tweedie, :func:`refscore.diffusion.parametrisations.to_x0_eps` with ``"score"``).  On VE and EDM this is
:math:`\hat x_0 = x + \sigma^2 s_\theta(x, \sigma)` with the schedule's own :math:`\sigma(t)`.

:class:`ModelDenoiser` does this and nothing else: it calls the model, never its parameters' internals.
It refuses a model that takes no noise level (an unconditional :class:`~refscore.models.MLPScore` or
:class:`~refscore.models.GaussianModel`, bound or not: a sampler needs the score at every level), a time
where :math:`\alpha(t) = 0` (no signal: :math:`\bar x` is undefined) or :math:`\sigma(t) = 0` (the clean end,
where no model is evaluated), and a non-finite model output.

Pass the sampler the same schedule object the adapter was built with: the samplers read :math:`\alpha(t)`,
:math:`\sigma(t)` from the schedule they are given and the adapter from its own.

References
----------
Y. Song, S. Ermon, NeurIPS 2019, eq. (5)–(6) (the multi-level objective); Y. Song, S. Ermon, NeurIPS 2020,
technique 3 (:math:`s_\theta(x)/\sigma`); T. Karras et al., NeurIPS 2022, §2 and Table 1 (:math:`x = s(t)\,\bar x`,
the denoiser :math:`D(\bar x; \bar\sigma)`); B. Efron, JASA 106 (2011) (Tweedie).

Examples
--------
>>> import numpy as np
>>> from refscore.models import GaussianModel, NoiseConditional
>>> from refscore.diffusion import EDM, ModelDenoiser
>>> model = NoiseConditional(GaussianModel(1))
>>> theta = GaussianModel.theta_from([1.0], [[0.4]])     # s(x, sigma) = -0.4 (x - 1) / sigma
>>> D = ModelDenoiser(model, theta, EDM())
>>> float(D.x0([3.0], 2.0)[0])                          # x + sigma^2 s = 3 + 4 * (-0.4 * 2 / 2)
1.4
"""
from __future__ import annotations

import numpy as np

from .._validation import as_float_array, as_points, check_choice
from ..models import BoundModel, BoundNoiseConditional, NoiseConditional, ScoreModel
from .parametrisations import PARAMETRISATIONS, to_x0_eps, velocity_derivatives
from .schedules import Schedule

__all__ = ["ModelDenoiser"]


class ModelDenoiser:
    r"""A noise-conditional score model bound to ``theta``, as the denoiser :math:`\hat x_0(x, t)` of a schedule.

    Calling it, ``D(x, t)``, is :meth:`x0`: the interface ``x0_fn(x, t)`` of
    :func:`refscore.diffusion.samplers.sample`.

    Parameters
    ----------
    model : refscore.models.NoiseConditional or refscore.models.BoundNoiseConditional
        :math:`s_\theta(y, \bar\sigma)`, conditioned on EDM's noise level :math:`\bar\sigma = \sigma/\alpha`
        (VE's and EDM's :math:`\sigma(t)`), as :func:`refscore.losses.dsm_multi` trains it.
    theta : array_like or None
        The parameters of a :class:`~refscore.models.NoiseConditional` (validated by its ``bind``); ``None``
        for a :class:`~refscore.models.BoundNoiseConditional`, which carries its own.
    schedule : refscore.diffusion.schedules.Schedule
        Gives :math:`\alpha(t)`, :math:`\sigma(t)` (and :math:`\alpha'`, :math:`\sigma'` for the velocity).

    Attributes
    ----------
    bound : refscore.models.BoundNoiseConditional
        The model with its parameters fixed.
    schedule, dim
    """

    def __init__(self, model, theta, schedule):
        if isinstance(model, NoiseConditional):
            if theta is None:
                raise TypeError("theta is needed with a NoiseConditional model (its parameters); pass "
                                "model.bind(theta) with theta=None instead to use a bound model")
            bound = model.bind(theta)
        elif isinstance(model, BoundNoiseConditional):
            if theta is not None:
                raise TypeError("theta must be None for a BoundNoiseConditional (it carries its own theta), got "
                                f"an object of type {type(theta).__name__}")
            bound = model
        elif isinstance(model, (ScoreModel, BoundModel)):
            raise TypeError(f"model must be noise-conditional, s(x, sigma); {model!r} takes no noise level and a "
                            f"sampler needs the score at every level: wrap the network as "
                            f"refscore.models.NoiseConditional(network) and train it with loss='dsm_multi'")
        else:
            raise TypeError(f"model must be a refscore.models.NoiseConditional (with theta) or a "
                            f"BoundNoiseConditional, got {type(model).__name__}; a plain callable x0_fn(x, t) "
                            f"needs no adapter: pass it to the sampler directly")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
        self.bound, self.schedule, self.dim = bound, schedule, bound.dim

    def __repr__(self):
        return f"ModelDenoiser({self.bound!r}, {self.schedule!r})"

    # -------------------------------------------------------------- inputs
    def _inputs(self, x, t):
        """``(x (n, d), t (n,), alpha (n,), sigma (n,), single)`` with alpha > 0 and sigma > 0 checked."""
        x, single = as_points(x, self.dim, "x")
        t_arr = as_float_array(t, "t")
        if t_arr.ndim == 0:
            t_arr = np.full(x.shape[0], float(t_arr))
        elif t_arr.shape != (x.shape[0],) and not (single and t_arr.shape == (1,)):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},) to match x, got shape {t_arr.shape}")
        a = np.asarray(self.schedule.alpha(t_arr), float)   # the schedule checks t's domain
        s = np.asarray(self.schedule.sigma(t_arr), float)
        if np.any(a <= 0.0):
            bad = float(t_arr[np.argmin(a)])
            raise ValueError(f"t must have alpha(t) > 0: the model is evaluated at x / alpha(t), undefined at "
                             f"{self.schedule!r}'s t = {bad!r} (alpha = 0, pure noise)")
        if np.any(s <= 0.0):
            bad = float(t_arr[np.argmin(s)])
            raise ValueError(f"t must have sigma(t) > 0: the model is conditioned on sigma(t) / alpha(t) > 0, "
                             f"got t = {bad!r} with sigma = 0 (the clean end, where no sampler evaluates a "
                             f"denoiser)")
        return x, t_arr, a, s, single

    def _score(self, x, t_arr, a, s):
        r""":math:`\hat s = s_\theta(x/\alpha, \sigma/\alpha)/\alpha` on clean inputs, checked finite."""
        sbar = s / a
        out = self.bound.score(x / a[:, None], sbar) / a[:, None]
        if not np.all(np.isfinite(out)):
            k = int(np.argmin(np.all(np.isfinite(out), axis=1)))
            raise FloatingPointError(f"the model's score is not finite at t = {float(t_arr[k])!r} (noise level "
                                     f"sigma / alpha = {float(sbar[k])!r}) for point {k} of x")
        return out

    # -------------------------------------------------------------- predictions
    def noise_level(self, t):
        r"""The level :math:`\bar\sigma(t) = \sigma(t)/\alpha(t)` the model is evaluated at (VE, EDM: :math:`\sigma(t)`)."""
        t_arr = as_float_array(t, "t")
        a = np.asarray(self.schedule.alpha(t_arr), float)
        s = np.asarray(self.schedule.sigma(t_arr), float)
        if np.any(a <= 0.0):
            raise ValueError(f"t must have alpha(t) > 0 (the level sigma / alpha is infinite where alpha = 0), got "
                             f"t = {float(np.ravel(t_arr)[np.argmin(np.ravel(a))])!r}")
        out = s / a
        return float(out) if t_arr.ndim == 0 else out

    def score(self, x, t):
        r""":math:`\hat s(x, t) = s_\theta(x/\alpha, \sigma/\alpha)/\alpha \approx \nabla_x\log p_t(x)`, shape like ``x``."""
        x, t_arr, a, s, single = self._inputs(x, t)
        out = self._score(x, t_arr, a, s)
        return out[0] if single else out

    def x0(self, x, t):
        r""":math:`\hat x_0 = (x + \sigma^2\hat s)/\alpha`, shape like ``x`` (Tweedie through the score)."""
        return self.predict("x0", x, t)

    def __call__(self, x, t):
        r"""``D(x, t)`` is :meth:`x0`: the samplers' ``x0_fn(x, t)``."""
        return self.predict("x0", x, t)

    def eps(self, x, t):
        r""":math:`\hat\varepsilon = -\sigma\hat s`."""
        return self.predict("eps", x, t)

    def predict(self, kind, x, t):
        r"""The model's prediction of kind ``kind`` (a key of :data:`refscore.diffusion.parametrisations.PARAMETRISATIONS`).

        :math:`(\hat x_0, \hat\varepsilon)` from the score by the ``"score"`` row of the registry, then the
        ``kind`` row; ``"velocity"`` needs :math:`\alpha'(t)`, :math:`\sigma'(t)` finite.
        """
        check_choice("kind", kind, PARAMETRISATIONS)
        x, t_arr, a, s, single = self._inputs(x, t)
        sc = self._score(x, t_arr, a, s)
        if kind == "score":
            out = sc
        else:
            x0, eps = to_x0_eps("score", sc, x, a, s)
            da = ds = None
            if kind == "velocity":
                da, ds = velocity_derivatives(self.schedule, t_arr)
            out = PARAMETRISATIONS[kind].frm(x0, eps, x, a[:, None], s[:, None], da, ds)
        return out[0] if single else out
