r"""The score-model interface: one table of primitives, every one hand-derived.

A model is *structure* (dimension, layer sizes, activation); its parameters are
ONE flat vector ``theta`` of shape ``(P,)``.  Every loss in
:mod:`refscore.losses` and its gradient over ``theta`` is assembled from the
primitives below (docs/derivations.md §2), so a model that implements
them gets all five losses, their gradients, training and sampling for free.

=========================================  ===========================================
primitive                                  returns
=========================================  ===========================================
``score(theta, x)``                        ``(n, d)``  :math:`s_\theta(x)`
``score_jacobian(theta, x)``               ``(n, d, d)``  :math:`[k,i,j] = \partial s_i/\partial x_j`
``score_trace(theta, x)``                  ``(n,)``  :math:`\operatorname{tr}\nabla_x s_\theta`
``score_jvp(theta, x, v)``                 ``(n, d)``  :math:`(\nabla_x s_\theta)\,v`
``score_vjp_params(theta, x, ct)``         ``(P,)``  :math:`\sum_k ct_k^\top \partial s_\theta(x_k)/\partial\theta`
``trace_grad_params(theta, x, w)``         ``(P,)``  :math:`\sum_k w_k\,\partial\operatorname{tr}\nabla_x s_\theta(x_k)/\partial\theta`
``vjv_grad_params(theta, x, v, w)``        ``(P,)``  :math:`\sum_k w_k\,\partial(v_k^\top\nabla_x s_\theta(x_k)v_k)/\partial\theta`
``bind(theta)``                            :class:`BoundModel` with ``score(x)`` and ``dim``
``_fused_terms(kind, theta, x, w, aux)``   optional: ``(per, grad)`` of one loss kind in one
                                           pass, or ``None`` (the default: the losses
                                           assemble the primitives above)
=========================================  ===========================================

What a model is to the compiled samplers is declared beside its math too:
``_kernel_block(theta)`` returns its :class:`~refscore.sampling.targets.KernelBlock`
(score-kernel kind and parameter block) and ``_log_density(theta)`` its
log-density up to a constant (``None`` when it has none); both default to
"not available".

The public methods here validate and reshape; subclasses implement the private
``_name`` methods, which receive clean float64 arrays (``x`` always ``(n, d)``,
``theta`` always ``(P,)``) and only do math.
"""
from __future__ import annotations

import numpy as np

from .._validation import as_float_array, as_points, check_finite, check_theta

__all__ = ["ScoreModel", "BoundModel"]


class ScoreModel:
    """Base class of every score model :math:`s_\\theta : \\mathbb{R}^d \\to \\mathbb{R}^d`.

    Subclasses set ``self.dim`` and ``self.n_params`` and implement ``_init``,
    ``_score``, ``_score_jacobian``, ``_score_vjp_params``, ``_trace_grad_params``
    and ``_vjv_grad_params``.  ``_score_trace`` and ``_score_jvp`` default to
    the Jacobian's diagonal sum and product; override them when a cheaper exact
    route exists.
    """

    dim: int
    n_params: int

    #: the theta layout in words, quoted in error messages and golden manifests
    layout: str = ""

    # ------------------------------------------------------------------ helpers
    def _check_theta(self, theta) -> np.ndarray:
        return check_theta(theta, self.n_params, self.layout)

    def _points(self, x, name="x"):
        return as_points(x, self.dim, name)

    def _like_points(self, arr, n, single, name):
        """Check ``arr`` has the same shape as the points: ``(n, d)`` (or ``(d,)``)."""
        a = as_float_array(arr, name)
        if single and a.shape == (self.dim,):
            a = a[None, :]
        if a.shape != (n, self.dim):
            want = f"({self.dim},)" if single else f"({n}, {self.dim})"
            raise ValueError(f"{name} must have shape {want} to match x, got shape {np.shape(arr)}")
        check_finite(name, a)
        return a

    def _weights(self, w, n, single, name="w"):
        a = as_float_array(w, name)
        if single and a.ndim == 0:
            a = a[None]
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match x, got shape {np.shape(w)}")
        check_finite(name, a)
        return a

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, n_params={self.n_params})"

    # --------------------------------------------------------------- public API
    def init(self, rng=None) -> np.ndarray:
        """A starting ``theta`` of shape ``(P,)`` (scheme documented per model)."""
        from .._validation import as_rng

        return self._init(as_rng(rng))

    def score(self, theta, x) -> np.ndarray:
        """:math:`s_\\theta(x)`, shape ``(n, d)`` (``(d,)`` for one point)."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        out = self._score(theta, x)
        return out[0] if single else out

    def score_jacobian(self, theta, x) -> np.ndarray:
        """:math:`\\nabla_x s_\\theta(x)`, shape ``(n, d, d)``, ``[k, i, j] = ∂s_i/∂x_j``."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        out = self._score_jacobian(theta, x)
        return out[0] if single else out

    def score_trace(self, theta, x) -> np.ndarray:
        """:math:`\\operatorname{tr}\\nabla_x s_\\theta(x)`, shape ``(n,)`` (exact, not Hutchinson)."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        out = self._score_trace(theta, x)
        return out[0] if single else out

    def score_jvp(self, theta, x, v) -> np.ndarray:
        """:math:`(\\nabla_x s_\\theta(x))\\,v`, shape ``(n, d)``."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        v = self._like_points(v, x.shape[0], single, "v")
        out = self._score_jvp(theta, x, v)
        return out[0] if single else out

    def score_vjp_params(self, theta, x, ct) -> np.ndarray:
        """:math:`\\sum_k ct_k^\\top\\,\\partial s_\\theta(x_k)/\\partial\\theta`, shape ``(P,)``."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        ct = self._like_points(ct, x.shape[0], single, "ct")
        return self._score_vjp_params(theta, x, ct)

    def trace_grad_params(self, theta, x, w) -> np.ndarray:
        """:math:`\\sum_k w_k\\,\\partial\\operatorname{tr}\\nabla_x s_\\theta(x_k)/\\partial\\theta`, shape ``(P,)``."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        w = self._weights(w, x.shape[0], single)
        return self._trace_grad_params(theta, x, w)

    def vjv_grad_params(self, theta, x, v, w) -> np.ndarray:
        """:math:`\\sum_k w_k\\,\\partial(v_k^\\top\\nabla_x s_\\theta(x_k)v_k)/\\partial\\theta`, shape ``(P,)``."""
        theta = self._check_theta(theta)
        x, single = self._points(x)
        v = self._like_points(v, x.shape[0], single, "v")
        w = self._weights(w, x.shape[0], single)
        return self._vjv_grad_params(theta, x, v, w)

    def bind(self, theta) -> "BoundModel":
        """Fix ``theta``: a parameter-free score function usable by samplers and ``esm``."""
        return BoundModel(self, self._check_theta(theta).copy())

    # ------------------------------------------------- defaults for subclasses
    def _score_trace(self, theta, x):
        return np.einsum("kii->k", self._score_jacobian(theta, x))

    def _score_jvp(self, theta, x, v):
        return np.einsum("kij,kj->ki", self._score_jacobian(theta, x), v)

    def _init(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, theta, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_jacobian(self, theta, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_vjp_params(self, theta, x, ct):  # pragma: no cover - abstract
        raise NotImplementedError

    def _trace_grad_params(self, theta, x, w):  # pragma: no cover - abstract
        raise NotImplementedError

    def _vjv_grad_params(self, theta, x, v, w):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------- optional, declared seams
    def _fused_terms(self, kind, theta, x, w, aux):
        r"""Per-point terms of one loss and the gradient of their weighted sum, in one pass.

        ``kind`` is a :class:`~refscore._kernels.ids.LossKind`; ``w`` the weights
        (``(n,)``, or ``(m, n)`` for the sliced kinds) and ``aux`` the extra input:
        the target ``t`` ``(n, d)`` for ``RESIDUAL``, ``(sigma, z)`` for ``DENOISING``
        (the loss at ``x + sigma z`` with target ``-z / sigma``), the projections ``v``
        ``(m, n, d)`` for ``SSM``/``SSM_VR``, ``None`` for ``ISM``.  Returns
        ``(per, grad)`` equal to the primitive assembly of
        :func:`refscore.losses.loss_terms` to round-off (each override is tested
        against it), or ``None`` to let the losses assemble the primitives.
        """
        return None

    def _kernel_block(self, theta):
        """The compiled samplers' :class:`~refscore.sampling.targets.KernelBlock` of this model at ``theta``.

        ``None``: the model has no compiled score kernel (the compiled samplers refuse it).
        """
        return None

    def _log_density(self, theta):
        """``x -> log p(x)`` up to a constant for MALA, or ``None`` when the model defines none."""
        return None


class BoundModel:
    """A model with ``theta`` fixed: ``score(x)``, ``score_jacobian(x)``,
    ``score_trace(x)``, ``score_jvp(x, v)`` and ``dim``, like a distribution.

    The samplers ask it, like a distribution, for its compiled kernel block
    (:meth:`kernel_block`) and its log-density (:meth:`log_density`).
    """

    def __init__(self, model: ScoreModel, theta: np.ndarray):
        self.model = model
        self.theta = theta
        self.theta.setflags(write=False)
        self.dim = model.dim

    def score(self, x):
        return self.model.score(self.theta, x)

    def score_jacobian(self, x):
        return self.model.score_jacobian(self.theta, x)

    def score_trace(self, x):
        return self.model.score_trace(self.theta, x)

    def score_jvp(self, x, v):
        return self.model.score_jvp(self.theta, x, v)

    def __call__(self, x):
        return self.score(x)

    def kernel_block(self):
        """The model's compiled-sampler block at ``theta`` (``None``: no kernel)."""
        return self.model._kernel_block(self.theta)

    def log_density(self):
        """``x -> log p(x)`` up to a constant, or ``None`` (the model defines no log-density)."""
        return self.model._log_density(self.theta)

    def __repr__(self):
        return f"{self.model!r}.bind(theta)"
