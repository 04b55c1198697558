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
:meth:`Framework.diffusion_schedule`   a diffusion schedule as code of the framework
                                       calls it (:class:`FrameworkSchedule`)
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

__all__ = ["Framework", "NumpyFramework", "FrameworkSchedule"]


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

    # ------------------------------------------------------------------ diffusion
    def diffusion_schedule(self, schedule, dtype="float64", device=None):
        """refscore's diffusion ``schedule`` (:mod:`refscore.diffusion.schedules`) as code written in the
        framework calls it: a :class:`FrameworkSchedule` around it, whose times may be the framework's
        arrays and whose arrays are the framework's (``dtype``, ``device``)."""
        return FrameworkSchedule(schedule, self, dtype=dtype, device=device)

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


class FrameworkSchedule:
    r"""A refscore diffusion schedule as code of a framework calls it.

    What :meth:`Framework.diffusion_schedule` hands a diffusion sampler under test
    (:func:`refscore.testing.assert_diffusion_sampler_matches`): every public method
    and attribute of the wrapped schedule (:mod:`refscore.diffusion.schedules`:
    ``alpha(t)``, ``sigma(t)``, ``d_alpha(t)``, ``d_sigma(t)``, ``log_snr(t)``,
    ``t_of_log_snr``, EDM's ``grid(n)``, a table's ``alphas_cumprod``, ``betas`` and
    ``timesteps(n)``, VP's ``beta_min``...), with these conversions:

    * an argument that is one number -- a Python number or a 0-d array of the
      framework (``t[i]`` of the grid) -- is passed as a Python number, so the method
      returns a Python float (float64), which the framework's arithmetic takes in
      the dtype of its arrays;
    * an argument that is an array of the framework is passed as a NumPy array
      (its values, float64 exact for a float32 array); strings and None as they are;
    * an array returned (a method's, or an attribute such as ``alphas_cumprod``) is
      a new array of the framework: floating ones in ``dtype`` (float32 rounds),
      integer ones (``timesteps(n)``) as the framework's integers; a tuple is
      converted element by element; numbers are returned as they are.

    The values are the NumPy schedule's own, computed in float64 on the host; the
    wrapped object itself is :attr:`numpy_schedule` (for ``isinstance`` and anything
    not listed).  Private names (a leading ``_``) are not forwarded.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.diffusion.schedules import VPDiscrete
    >>> from refscore.interop import get_framework
    >>> s = get_framework("numpy").diffusion_schedule(VPDiscrete(), dtype="float32")
    >>> s
    <VPDiscrete(T=1000, linear) as numpy float32 arrays>
    >>> s.alpha(np.float32(999.0)) == VPDiscrete().alpha(999.0), s.alphas_cumprod.dtype
    (True, dtype('float32'))
    >>> s.sigma(np.array([0.0, 999.0], dtype=np.float32)).dtype
    dtype('float32')
    """

    def __init__(self, schedule, framework, dtype="float64", device=None):
        #: the wrapped refscore schedule (NumPy, float64)
        self.numpy_schedule = schedule
        self._fw, self._dtype, self._device = framework, dtype, device

    def __repr__(self):
        return f"<{self.numpy_schedule!r} as {self._fw.name} {self._dtype} arrays>"

    def __getattr__(self, name):  # only what is not an attribute of the wrapper itself
        if name == "numpy_schedule":  # not set yet: an instance being copied or unpickled
            raise AttributeError(f"{type(self).__name__} has no schedule yet")
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} forwards no private name ({name!r})")
        value = getattr(self.numpy_schedule, name)
        if not callable(value):
            return self._returned(value)

        def method(*args, **kwargs):
            out = value(*(self._argument(a) for a in args), **{k: self._argument(a) for k, a in kwargs.items()})
            return self._returned(out)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = value.__doc__
        return method

    def _argument(self, value):
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return value
        arr = self._fw.to_numpy(value)
        return arr.item() if arr.ndim == 0 else arr

    def _returned(self, value):
        if isinstance(value, tuple):
            return tuple(self._returned(v) for v in value)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return self._fw.as_array(value, dtype=self._dtype, device=self._device)
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            return self._fw.as_integers(value, device=self._device)
        if isinstance(value, np.floating):
            return float(value)
        return value


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

    def diffusion_schedule(self, schedule, dtype="float64", device=None):
        """In float64, refscore's schedule object itself (its methods take floats and NumPy arrays and
        return float64 ones: nothing to convert); in float32, the :class:`FrameworkSchedule` whose
        arrays are float32."""
        if np.dtype("float64" if dtype is None else dtype) == np.float64:
            return schedule
        return super().diffusion_schedule(schedule, dtype=dtype, device=device)

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
