r"""The array frameworks your code runs in, behind one declared interface.

:mod:`refscore.testing` runs your score, loss or sampler step on refscore's
golden cases and compares what it returns; everything in that which depends on
the framework your code is written in -- building the arrays it receives,
building the model a loss function gets, taking the loss's gradient, writing a
golden target's score and log density, reading the results back -- is a method
of a :class:`Framework`.  :data:`refscore.interop.FRAMEWORKS` holds one per
name (``"numpy"``, ``"torch"``, ``"jax"``) and
:func:`refscore.interop.get_framework` returns it; the torch and JAX
frameworks live in :mod:`refscore.interop.torch` and :mod:`refscore.interop.jax`,
imported on first use.

=====================================  ==================================================
:meth:`Framework.as_array`             a NumPy array as a new array of the framework
:meth:`Framework.as_inputs`            ``{name: array}`` likewise (a golden case's inputs)
:meth:`Framework.as_integers`          an integer NumPy array (``dsm_multi``'s labels)
:meth:`Framework.to_numpy`             an output of your code as a new NumPy array
:meth:`Framework.fresh`                a private copy of an input for one call of your code
:meth:`Framework.compiled`             your function as the framework compiles it (JAX:
                                       ``jax.jit``; NumPy and torch: itself)
:meth:`Framework.target_functions`     ``(score, log_prob)`` of a golden sampler target
:meth:`Framework.loss_model`           what a loss function receives first: the model
:meth:`Framework.loss_value_and_grad`  a loss function's value and gradient over ``theta``
=====================================  ==================================================

The NumPy framework is here; it imports nothing beyond NumPy and refscore.

Examples
--------
>>> import numpy as np
>>> from refscore.interop import FRAMEWORKS, get_framework
>>> list(FRAMEWORKS)
['numpy', 'torch', 'jax']
>>> fw = get_framework("numpy")
>>> fw.as_inputs({"x": np.ones((2, 3))}, dtype="float32")["x"].dtype
dtype('float32')
>>> model = fw.loss_model({"model": "LinearScore", "kwargs": {"dim": 1}}, np.array([2.0, 0.5]))
>>> def esm(model, theta, x, target):     # 1/2 mean ||s(x) - t||^2 with s(x) = 2 x + 0.5
...     r = model.score(theta, x) - target
...     return 0.5 * np.mean(r ** 2), model.score_vjp_params(theta, x, r / len(x))
>>> value, grad = fw.loss_value_and_grad(esm, model, {"x": np.array([[1.0]]), "target": np.array([[0.5]])})
>>> float(value), grad.tolist()
(2.0, [2.0, 2.0])
"""
from __future__ import annotations

import abc
import math

import numpy as np

__all__ = ["Framework", "NumpyFramework"]


class Framework(abc.ABC):
    """One array framework as :mod:`refscore.testing` drives it: the interface.

    A subclass implements the abstract methods; the others have defaults that
    fit a framework whose arrays are NumPy arrays or immutable.  ``dtype`` is
    a floating dtype name (``"float64"``, ``"float32"``) or the framework's
    dtype; ``device`` is the framework's device, ``None`` for its default.
    """

    #: the framework's name, its key in :data:`refscore.interop.FRAMEWORKS`
    name: str = ""

    def __repr__(self):
        return f"<{self.name} framework>"

    # ------------------------------------------------------------------ arrays
    @abc.abstractmethod
    def as_array(self, array, dtype="float64", device=None):
        """``array`` (NumPy, or anything ``numpy.asarray`` takes) as a new array of the framework.

        float64 keeps the numbers bitwise; float32 rounds.  Always a copy
        (read-only arrays welcome)."""

    def as_inputs(self, arrays, dtype="float64", device=None) -> dict:
        """``{name: array}`` with every array converted by :meth:`as_array`."""
        return {k: self.as_array(v, dtype=dtype, device=device) for k, v in arrays.items()}

    @abc.abstractmethod
    def as_integers(self, array, device=None):
        """An integer NumPy array as a new integer array of the framework (indices, labels)."""

    def to_numpy(self, value) -> np.ndarray:
        """An output of your code (an array of the framework, a NumPy array or a number) as a new
        NumPy array, values as they are (a copy: a buffer your code reuses cannot change it)."""
        return np.array(value)

    def fresh(self, value):
        """A private copy of an input for one call of your code, which may write into what it gets.

        NumPy arrays are copied and dicts, lists and tuples copied through; anything else
        (numbers, functions, immutable arrays) is passed as it is."""
        if isinstance(value, np.ndarray):
            return value.copy()
        if isinstance(value, dict):
            return {k: self.fresh(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(self.fresh(v) for v in value)
        return value

    def compiled(self, fn):
        """``fn`` as the framework compiles a function of its arrays; the default is ``fn`` itself."""
        return fn

    # ------------------------------------------------------------------ samplers
    @abc.abstractmethod
    def target_functions(self, spec, sigma=None, dtype="float64", device=None) -> tuple:
        """``(score, log_prob)`` of a golden sampler target, as functions of the framework's arrays.

        Parameters
        ----------
        spec : dict
            ``{"target": "Gaussian" | "GaussianMixture", "kwargs": {...}}``, a
            golden sampler case's spec (:func:`refscore.golden.build_target`).
        sigma : float, optional
            Noise level: the functions of :math:`p_\\sigma = p * N(0, \\sigma^2 I)`.

        Returns
        -------
        tuple
            ``score(x (c, d)) -> (c, d)`` and ``log_prob(x (c, d)) -> (c,)``,
            the normalised log density.
        """

    # ------------------------------------------------------------------ losses
    @abc.abstractmethod
    def loss_model(self, spec, theta, *, noise_conditional=False, build=None, dtype="float64", device=None):
        """What a loss function written in the framework receives first: the model, loaded with ``theta``.

        Parameters
        ----------
        spec : dict
            A golden model spec ``{"model": ..., "kwargs": {...}}``; with
            ``noise_conditional``, that of ``NoiseConditional(inner)``, whose
            ``kwargs["model"]`` is the inner model's spec.
        theta : numpy.ndarray
            The flat parameters, float64, in the spec's layout.
        noise_conditional : bool, keyword-only
            The model is :math:`s(x, \\sigma) = s_\\theta(x) / \\sigma`.
        build : callable, keyword-only, optional
            Your model instead of refscore's: ``build(theta)`` with ``theta``
            as the framework holds parameters; what it returns is the model.

        Returns
        -------
        object
            What :meth:`loss_value_and_grad` takes as ``model``.
        """

    @abc.abstractmethod
    def loss_value_and_grad(self, loss_fn, model, inputs, *, grad=True, jit=True,
                            caller="refscore.interop") -> tuple:
        """Call ``loss_fn`` on ``model`` (:meth:`loss_model`) and keyword ``inputs``; read the value and
        the gradient over ``theta``.

        Parameters
        ----------
        loss_fn : callable
            Your loss, called as the framework's helpers document it.
        model : object
            From :meth:`loss_model`: used once (a fresh one per call).
        inputs : dict
            The keyword arguments (arrays of the framework), yours to change.
        grad : bool, keyword-only
            Also return the gradient over ``theta`` (flat, refscore's layout).
        jit : bool, keyword-only
            Compile the loss where the framework compiles (:meth:`compiled`).
        caller : str, keyword-only
            Names the helper at the start of the ``TypeError`` raised when
            ``loss_fn`` returns an object of the wrong kind.

        Returns
        -------
        tuple
            ``(value, gradient)`` as NumPy arrays; ``gradient`` is None when not
            asked for, or when the value is not a scalar (its shape then fails
            the comparison).
        """


def _mixture_constants(spec, sigma=None) -> tuple:
    """``(precisions (k, d, d), means (k, d), log constants (k,))`` in float64 of a golden target spec:
    a Gaussian is a one-component mixture; ``sigma`` adds :math:`\\sigma^2 I` to every covariance.

    The log constant of component j is ``log w_j - (d log 2 pi + log det Sigma_j) / 2``, so that
    ``log p(x) = logsumexp_j [c_j - (x - mu_j)^T P_j (x - mu_j) / 2]``: what the torch and JAX
    frameworks write their targets with (they agree with refscore's to round-off).
    """
    kw = spec["kwargs"]
    if "weights" in kw:
        w, mu, cov = np.asarray(kw["weights"], float), np.asarray(kw["means"], float), np.asarray(kw["covs"], float)
    else:
        w, mu, cov = np.ones(1), np.asarray(kw["mean"], float)[None], np.asarray(kw["cov"], float)[None]
    d = mu.shape[1]
    if sigma is not None:
        cov = cov + sigma**2 * np.eye(d)
    logc = np.log(w) - 0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1])
    return np.linalg.inv(cov), mu, logc


class NumpyFramework(Framework):
    """NumPy: your code gets NumPy arrays and refscore's own model and target objects.

    * :meth:`loss_model` is ``(model, theta)``: refscore's model of the spec
      (``model.score(theta, x)``, ``score_jacobian``, ``score_vjp_params``...;
      ``score(theta, x, sigma)`` for a noise-conditional one) and ``theta``
      (float64, whatever ``dtype``); your loss is called
      ``loss_fn(model, theta, **inputs)`` and returns the value, or
      ``(value, gradient (P,))`` when the gradient is asked for.
    * :meth:`target_functions` are the target's own ``score`` and ``logpdf``
      (those the golden values were computed with), in float64.
    """

    name = "numpy"

    def as_array(self, array, dtype="float64", device=None):
        if device is not None:
            raise ValueError("device is for framework='torch' or 'jax', not 'numpy'")
        dt = np.dtype("float64" if dtype is None else dtype)
        if dt.kind != "f":
            raise ValueError(f"dtype must be a floating dtype, got {dt}")
        return np.array(array, dtype=dt)

    def as_integers(self, array, device=None):
        if device is not None:
            raise ValueError("device is for framework='torch' or 'jax', not 'numpy'")
        return np.array(array)

    def target_functions(self, spec, sigma=None, dtype="float64", device=None) -> tuple:
        from ..golden import build_target

        target = build_target(spec)
        if sigma is None:
            return target.score, target.logpdf
        p = target.perturbed()
        return (lambda x: p.score(x, sigma)), (lambda x: p.logpdf(x, sigma))

    def loss_model(self, spec, theta, *, noise_conditional=False, build=None, dtype="float64", device=None):
        from ..golden import build_model

        theta = np.array(theta, dtype=np.float64)
        # refscore's NoiseConditional is built from its spec, which names the inner model
        model = build_model(spec, reference=True) if build is None else build(theta.copy())
        return model, theta

    def loss_value_and_grad(self, loss_fn, model, inputs, *, grad=True, jit=True,
                            caller="refscore.interop") -> tuple:
        model, theta = model
        res = loss_fn(model, theta.copy(), **inputs)
        if not grad:
            return self.to_numpy(res[0] if isinstance(res, tuple) else res), None
        if not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError(f"{caller}: with framework='numpy' and grad=True your loss function must return "
                            f"(value, gradient over theta); it returned {type(res).__name__} (pass grad=False "
                            "to compare values only)")
        return self.to_numpy(res[0]), self.to_numpy(res[1])
