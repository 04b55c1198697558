r"""Noise-conditional score models for multi-level DSM and annealed Langevin.

Derivation: docs/derivations.md §7.4, §2.5.

:class:`NoiseConditional` turns any score model into
:math:`s_\theta(x, \sigma) = s_\theta(x) / \sigma`.

Why this form.  Song & Ermon (2020, "Improved techniques for training
score-based generative models", technique 3) observe that a trained NCSN has
:math:`\lVert s_\theta(x, \sigma)\rVert \propto 1/\sigma` and that dividing an
unconditional network's output by :math:`\sigma` works as well as conditioning
on :math:`\sigma` through extra inputs, with no extra parameters.  It also
matches the exact score of the noised data in the regime that matters:
for :math:`x = y + \sigma z` with :math:`\sigma` large,
:math:`\nabla \log p_\sigma(x) \approx -(x - \mathbb E y)/\sigma^2`, whose
norm is of order :math:`1/\sigma`.  The wrapper keeps the wrapped model's
``theta`` and layout unchanged, and every primitive is the wrapped one scaled
by :math:`1/\sigma` (the parameter gradients by scaling the cotangent or weight
of each point), so no new derivative is needed.

References
----------
Y. Song, S. Ermon, "Improved techniques for training score-based generative
models", NeurIPS 2020, §4 (technique 3).  Y. Song, S. Ermon, "Generative
modeling by estimating gradients of the data distribution", NeurIPS 2019,
eq. (5)-(6) (the multi-level objective this model is trained with).
"""
from __future__ import annotations

import numpy as np

from .._validation import per_point_sigma
from .base import ScoreModel

__all__ = ["NoiseConditional", "BoundNoiseConditional"]


class NoiseConditional:
    r"""A noise-conditional score :math:`s_\theta(x, \sigma) = s_\theta(x)/\sigma`.

    .. math::

        s_\theta(x,\sigma) = \frac{s_\theta(x)}{\sigma},\qquad
        \nabla_x s_\theta(x,\sigma) = \frac{\nabla_x s_\theta(x)}{\sigma}.

    Parameters
    ----------
    model : ScoreModel
        The unconditional model (e.g. :class:`~refscore.models.MLPScore`).
        ``n_params``, ``layout``, ``init`` and ``theta`` are its own.

    Notes
    -----
    Every primitive takes ``sigma`` right after ``x``: a positive scalar (all
    points) or an ``(n,)`` array (one level per point, as in NCSN training).
    ``score_vjp_params(theta, x, sigma, ct)`` equals the wrapped model's with
    ``ct / sigma``; ``trace_grad_params`` and ``vjv_grad_params`` with
    ``w / sigma``.

    References
    ----------
    Song & Ermon (2020), technique 3.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.models import MLPScore
    >>> m = NoiseConditional(MLPScore(2, hidden=(4,)))
    >>> theta = m.init(0)
    >>> x = np.ones((3, 2))
    >>> bool(np.allclose(m.score(theta, x, 2.0), m.model.score(theta, x) / 2.0))
    True
    """

    def __init__(self, model):
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel (e.g. MLPScore), got {type(model).__name__}")
        self.model = model
        self.dim = model.dim
        self.n_params = model.n_params
        self.layout = model.layout

    def __repr__(self):
        return f"NoiseConditional({self.model!r})"

    # ------------------------------------------------------------ helpers
    def _check_theta(self, theta):
        return self.model._check_theta(theta)

    def _points(self, x, name="x"):
        return self.model._points(x, name)

    def _sigma(self, sigma, n, single):
        """``sigma`` as an ``(n,)`` array of finite positive floats."""
        return per_point_sigma(sigma, n, single)

    def _prep(self, theta, x, sigma):
        theta = self._check_theta(theta)
        x, single = self._points(x)
        return theta, x, single, self._sigma(sigma, x.shape[0], single)

    # ------------------------------------------------------------ primitives
    def init(self, rng=None):
        """The wrapped model's ``init`` (same ``theta``)."""
        return self.model.init(rng)

    def score(self, theta, x, sigma):
        r""":math:`s_\theta(x)/\sigma`, shape ``(n, d)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        out = self.model._score(theta, x) / s[:, None]
        return out[0] if single else out

    def score_jacobian(self, theta, x, sigma):
        r""":math:`\nabla_x s_\theta(x)/\sigma`, shape ``(n, d, d)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        out = self.model._score_jacobian(theta, x) / s[:, None, None]
        return out[0] if single else out

    def score_trace(self, theta, x, sigma):
        r""":math:`\operatorname{tr}\nabla_x s_\theta(x)/\sigma`, shape ``(n,)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        out = self.model._score_trace(theta, x) / s
        return out[0] if single else out

    def score_jvp(self, theta, x, sigma, v):
        r""":math:`\nabla_x s_\theta(x)\,v/\sigma`, shape ``(n, d)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        v = self.model._like_points(v, x.shape[0], single, "v")
        out = self.model._score_jvp(theta, x, v) / s[:, None]
        return out[0] if single else out

    def score_vjp_params(self, theta, x, sigma, ct):
        r""":math:`\sum_k ct_k^\top \partial_\theta s_\theta(x_k)/\sigma_k`, shape ``(P,)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        ct = self.model._like_points(ct, x.shape[0], single, "ct")
        return self.model._score_vjp_params(theta, x, ct / s[:, None])

    def trace_grad_params(self, theta, x, sigma, w):
        r""":math:`\sum_k (w_k/\sigma_k)\,\partial_\theta \operatorname{tr}\nabla_x s_\theta(x_k)`, shape ``(P,)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        w = self.model._weights(w, x.shape[0], single)
        return self.model._trace_grad_params(theta, x, w / s)

    def vjv_grad_params(self, theta, x, sigma, v, w):
        r""":math:`\sum_k (w_k/\sigma_k)\,\partial_\theta (v_k^\top \nabla_x s_\theta(x_k) v_k)`, shape ``(P,)``."""
        theta, x, single, s = self._prep(theta, x, sigma)
        v = self.model._like_points(v, x.shape[0], single, "v")
        w = self.model._weights(w, x.shape[0], single)
        return self.model._vjv_grad_params(theta, x, v, w / s)

    def bind(self, theta):
        """Fix ``theta``: an object with ``score(x, sigma)``, ``dim``, ``.model`` and ``.theta``."""
        return BoundNoiseConditional(self, self._check_theta(theta).copy())


class BoundNoiseConditional:
    """A :class:`NoiseConditional` with ``theta`` fixed, for annealed Langevin.

    ``.model`` is the :class:`NoiseConditional`, ``.theta`` the (read-only)
    parameters.  To the compiled samplers it is the inner model's block at
    every level with the score scaled by :math:`1/\\sigma_i` (:meth:`kernel_levels`).
    """

    def __init__(self, model: NoiseConditional, theta: np.ndarray):
        self.model = model
        self.theta = theta
        self.theta.setflags(write=False)
        self.dim = model.dim

    def score(self, x, sigma):
        return self.model.score(self.theta, x, sigma)

    def score_jacobian(self, x, sigma):
        return self.model.score_jacobian(self.theta, x, sigma)

    def score_trace(self, x, sigma):
        return self.model.score_trace(self.theta, x, sigma)

    def score_jvp(self, x, sigma, v):
        return self.model.score_jvp(self.theta, x, sigma, v)

    def __call__(self, x, sigma):
        return self.score(x, sigma)

    def kernel_levels(self, sigmas):
        r"""Compiled-sampler blocks per noise level and the score scales :math:`1/\sigma_i`.

        :math:`s_\theta(x, \sigma) = s_\theta(x)/\sigma`: the inner model's block,
        the same at every level, scaled by ``1/sigma_i``.
        """
        inner = self.model.model.bind(self.theta).kernel_block()
        if inner is None:
            raise TypeError(f"{self.model.model!r} has no compiled score kernel; use backend='numpy'")
        sigmas = np.asarray(sigmas, dtype=float)
        return [inner] * len(sigmas), 1.0 / sigmas

    def __repr__(self):
        return f"{self.model!r}.bind(theta)"
