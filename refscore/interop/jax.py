r"""refscore's score models as pure JAX functions, with ``theta`` <-> ``params`` both ways.

Importing this module imports jax and switches on ``jax_enable_x64`` (refscore
is float64 throughout, and float64 is what makes the round trips and the noise
bitwise); without jax it raises an ``ImportError`` that says
``pip install 'refscore[interop]'``.

:func:`score_function` turns a golden case spec (:func:`refscore.golden.case_specs`),
a golden case name or a refscore model into ``score(params, x)``: ``x (d,)``
gives ``(d,)``, ``x (n, d)`` gives ``(n, d)`` (``jax.vmap`` over points).  It
is pure, so ``jax.jit``, ``jax.grad`` (over ``params`` or ``x``), ``jax.jacfwd``
and ``jax.jvp`` apply.  ``params`` is a list of arrays in ``theta`` order, the
shapes of :func:`refscore.interop.parameter_layout` (an MLP's is
``[W_1, b_1, ..., W_L, b_L]`` with ``W_l (out, in)``).  Energies
(``GaussianModel``: :math:`\tfrac12 (x-\mu)^\top P (x-\mu)`, its log density
negated without the normaliser, as refscore's; ``MLPEnergy``;
``GaussianMixtureModel``, whose energy is the exact :math:`-\log p`) also have
:func:`energy_function`, and their score is ``-jax.grad`` of it (the Gaussian's
score function is its closed form).

:func:`theta_to_params` slices and reshapes (traceable: it works on a traced
``theta`` inside ``jit``/``grad``), :func:`params_to_theta` concatenates: both
bitwise exact, and the gradient of a loss over ``params`` maps to refscore's
gradient over ``theta`` by :func:`params_to_theta`.

Examples
--------
A model as a JAX function, checked against refscore; a DSM gradient in JAX,
read back in refscore's layout, is refscore's gradient:

>>> import numpy as np
>>> import jax
>>> import jax.numpy as jnp
>>> import refscore
>>> from refscore.interop import jax as rjax
>>> model = refscore.MLPEnergy(2, hidden=(8,), activation="softplus")
>>> theta = model.init(0)
>>> score, params = rjax.to_jax(model, theta)
>>> [p.shape for p in params]
[(8, 2), (8,), (1, 8), (1,)]
>>> x = np.random.default_rng(1).standard_normal((4, 2))
>>> bool(np.allclose(score(params, x), model.score(theta, x), rtol=0, atol=1e-12))
True
>>> bool(np.array_equal(rjax.params_to_theta(params, model), theta))   # bitwise
True
>>> sigma = 0.5
>>> eps = refscore.interop.normal(seed=3, chain=np.arange(4), step=0, dim=2, framework="jax")
>>> def dsm(params):
...     r = score(params, x + sigma * eps) + eps / sigma
...     return jnp.mean(0.5 * jnp.sum(r ** 2, axis=1))
>>> value, grads = jax.jit(jax.value_and_grad(dsm))(params)
>>> ref_value, ref_grad = refscore.losses.dsm(model, theta, x, sigma, np.asarray(eps), grad=True)
>>> bool(abs(float(value) - ref_value) < 1e-12)
True
>>> bool(np.allclose(rjax.params_to_theta(grads, model), ref_grad, rtol=0, atol=1e-12))
True

A golden case from its name, with its inputs as JAX arrays:

>>> from refscore.interop import golden_inputs
>>> inp = golden_inputs("gaussian_d2", framework="jax")
>>> score = rjax.score_function("gaussian_d2")
>>> params = rjax.theta_to_params(inp["theta"], "gaussian_d2")
>>> [p.shape for p in params], score(params, inp["x"]).shape
([(2,), (3,)], (3, 2))
>>> jax.jacfwd(score, argnums=1)(params, inp["x"][0]).shape   # the Jacobian at one point
(2, 2)
"""
from __future__ import annotations

import math

import numpy as np

from ._spec import ENERGY_MODELS, JAX_HINT, as_spec, check_theta, layout_words, n_params, parameter_layout, split
from .frameworks import Framework, _mixture_constants

try:
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from jax.scipy.special import logsumexp
except ImportError as _exc:  # jax is an optional extra
    raise ModuleNotFoundError(
        f"refscore.interop.jax needs JAX, which cannot be imported ({_exc}): {JAX_HINT}",
        name="jax",
    ) from _exc

jax.config.update("jax_enable_x64", True)

__all__ = [
    "score_function",
    "energy_function",
    "theta_to_params",
    "params_to_theta",
    "to_jax",
    "as_array",
    "activation",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _gelu(z):
    return jax.nn.gelu(z, approximate=False)  # the erf form


_ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "sigmoid": jax.nn.sigmoid,
                "silu": jax.nn.silu, "gelu": _gelu}


def activation(name):
    """The JAX function of a refscore activation (docs/derivations.md §6.1; gelu in its erf form)."""
    if name not in _ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} has no jax adapter ({sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def as_array(array, dtype="float64", device=None):
    """``array`` as a JAX array: float64 is bitwise the same numbers, float32 rounds."""
    dt = np.dtype("float64" if dtype is None else dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dt}")
    out = jnp.array(np.asarray(array), dtype=dt)
    return out if device is None else jax.device_put(out, device)


def _is_jax(a):
    return isinstance(a, (jax.Array, jax.core.Tracer))


# ------------------------------------------------------------------ theta <-> params
def theta_to_params(theta, spec) -> list:
    """``theta (P,)`` as ``params``: a list of arrays of the shapes of
    :func:`refscore.interop.parameter_layout`, in order.

    A NumPy array or list is checked as refscore checks ``theta`` (shape, finite) and kept in
    float64; a JAX array (a tracer inside ``jit`` / ``grad`` included) keeps its dtype and is
    only sliced and reshaped, so the gradient flows back to it.
    """
    spec = as_spec(spec)
    size = n_params(spec)
    if _is_jax(theta):
        if theta.shape != (size,):
            raise ValueError(f"theta must have shape ({size},) (layout: {layout_words(spec)}), "
                             f"got {tuple(theta.shape)}")
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            raise TypeError(f"theta must be a floating array, got dtype {theta.dtype}")
        arr = theta
    else:
        arr = jnp.asarray(check_theta(theta, spec))
    return split(arr, parameter_layout(spec))


def params_to_theta(params, spec):
    """``params`` (or a gradient over them) concatenated into the flat ``theta (P,)``, a JAX array."""
    spec = as_spec(spec)
    layout = parameter_layout(spec)
    params = list(params)
    if [tuple(np.shape(p)) for p in params] != [tuple(s) for _, s in layout]:
        raise ValueError(f"params must have the shapes {[tuple(s) for _, s in layout]} ({layout_words(spec)}), "
                         f"got {[tuple(np.shape(p)) for p in params]}")
    return jnp.concatenate([jnp.ravel(jnp.asarray(p)) for p in params])


# ------------------------------------------------------------------ score functions
def _mlp(params, x, act):
    h = x
    pairs = list(zip(params[0::2], params[1::2]))
    for W, b in pairs[:-1]:
        h = act(W @ h + b)
    W, b = pairs[-1]
    return W @ h + b


def _gaussian(kw):
    d = kw["dim"]
    rows, cols = np.tril_indices(d)

    def factor(L_tril):
        return jnp.zeros((d, d), dtype=L_tril.dtype).at[rows, cols].set(L_tril)

    def score(params, x):
        mu, L_tril = params
        L = factor(L_tril)
        return -L @ (L.T @ (x - mu))

    def energy(params, x):  # 1/2 (x - mu)^T P (x - mu): -log p without its normaliser
        mu, L_tril = params
        return 0.5 * jnp.sum((factor(L_tril).T @ (x - mu)) ** 2)

    return score, energy


def _linear(kw):
    def score(params, x):
        A, b = params
        return A @ x + b

    return score, None


def _mixture(kw):
    d = kw["dim"]

    def energy(params, x):  # exact -log p(x)
        alpha, mu, log_tau = params
        logn = 0.5 * d * (log_tau - _LOG_2PI) - 0.5 * jnp.exp(log_tau) * jnp.sum((x - mu) ** 2, axis=1)
        return -jax.scipy.special.logsumexp(jax.nn.log_softmax(alpha) + logn)

    return _score_of(energy), energy


def _mlp_score(kw):
    act = activation(kw["activation"])
    return (lambda params, x: _mlp(params, x, act)), None


def _mlp_energy(kw):
    act = activation(kw["activation"])

    def energy(params, x):
        return _mlp(params, x, act)[0]

    return _score_of(energy), energy


def _score_of(energy):
    grad_e = jax.grad(energy, argnums=1)

    def score(params, x):
        return -grad_e(params, x)

    return score


#: per model: kwargs -> (score(params, x (d,)), energy(params, x (d,)) or None)
_POINT_FUNCTIONS = {
    "GaussianModel": _gaussian,
    "LinearScore": _linear,
    "GaussianMixtureModel": _mixture,
    "MLPScore": _mlp_score,
    "MLPEnergy": _mlp_energy,
}


def _point_functions(spec):
    return _POINT_FUNCTIONS[spec["model"]](spec["kwargs"])


def _batched(point, spec, what):
    d = spec["kwargs"]["dim"]
    vmapped = jax.vmap(point, in_axes=(None, 0))

    def f(params, x):
        x = jnp.asarray(x)
        if x.ndim == 1 and x.shape[0] == d:
            return point(list(params), x)
        if x.ndim == 2 and x.shape[1] == d:
            return vmapped(list(params), x)
        raise ValueError(f"x must have shape (n, {d}) or ({d},), got {tuple(x.shape)}")

    f.spec = spec
    f.__name__ = what
    f.__qualname__ = what
    f.__doc__ = (f"{what}(params, x) of {spec['model']}({', '.join(f'{k}={v!r}' for k, v in spec['kwargs'].items())}): "
                 f"x (d,) -> {'()' if what == 'energy' else '(d,)'}, x (n, d) -> "
                 f"{'(n,)' if what == 'energy' else '(n, d)'}; params: {layout_words(spec)}")
    return f


def score_function(spec):
    """``score(params, x)`` of a spec, a golden case name or a refscore model.

    ``x (d,)`` -> ``(d,)``; ``x (n, d)`` -> ``(n, d)``.  The function carries ``.spec``, so it
    can stand for its spec (``theta_to_params(theta, score)``).
    """
    spec = as_spec(spec)
    return _batched(_point_functions(spec)[0], spec, "score")


def energy_function(spec):
    """``energy(params, x)`` of an energy model (``GaussianModel``, :math:`\\tfrac12 (x-\\mu)^\\top P
    (x-\\mu)`; ``MLPEnergy``; ``GaussianMixtureModel``, exact :math:`-\\log p`): ``x (d,)`` -> ``()``,
    ``x (n, d)`` -> ``(n,)``.  ``score = -grad_x energy``."""
    spec = as_spec(spec)
    energy = _point_functions(spec)[1]
    if energy is None:
        raise ValueError(f"{spec['model']} has no energy here (energy models: {', '.join(ENERGY_MODELS)})")
    return _batched(energy, spec, "energy")


def to_jax(model, theta=None, *, rng=None):
    """``(score, params)`` of a refscore model object (or any spec form) and its ``theta``.

    ``theta=None`` takes ``model.init(rng)``.  ``score`` is :func:`score_function`'s and
    ``params`` :func:`theta_to_params`'s.
    """
    spec = as_spec(model)
    if theta is None:
        if not hasattr(model, "init"):
            raise TypeError("theta is needed unless model is a refscore model (which has init)")
        theta = model.init(rng)
    return score_function(spec), theta_to_params(theta, spec)


def _noise_conditional(score):
    """``score_nc(params, x, sigma) = score(params, x) / sigma``: ``NoiseConditional`` of a score
    function (docs/derivations.md §7.4), ``sigma`` one level per point ``(n,)`` or a number."""

    def score_nc(params, x, sigma):
        return score(params, x) / jnp.expand_dims(jnp.asarray(sigma), -1)

    score_nc.spec = score.spec
    return score_nc


# ------------------------------------------------------------------ the framework
class JaxFramework(Framework):
    """JAX (:class:`refscore.interop.frameworks.Framework`): pure functions, ``jax.jit`` and
    ``jax.value_and_grad``.

    * :meth:`loss_model` is ``(score, params)``: :func:`score_function` of the
      spec (``score(params, x, sigma) = score(params, x) / sigma`` for a
      noise-conditional spec) and :func:`theta_to_params`, or the pair your
      ``build(theta array)`` returns (``params`` any pytree whose leaves,
      flattened by ``jax.flatten_util.ravel_pytree``, are ``theta``); your loss
      is called ``loss_fn(score, params, **inputs)``, differentiated by
      ``jax.value_and_grad`` over ``params``.
    * :meth:`compiled` is ``jax.jit``.
    * :meth:`target_functions` are the Gaussian mixture written in JAX, from
      precisions and log normalisers computed in float64.
    """

    name = "jax"

    def as_array(self, array, dtype="float64", device=None):
        return as_array(array, dtype=dtype, device=device)

    def as_integers(self, array, device=None):
        out = jnp.asarray(np.asarray(array))
        return out if device is None else jax.device_put(out, device)

    def compiled(self, fn):
        return jax.jit(fn)

    def target_functions(self, spec, sigma=None, dtype="float64", device=None) -> tuple:
        P, M, C = (as_array(a, dtype=dtype, device=device) for a in _mixture_constants(spec, sigma))

        def parts(x):
            diff = x[:, None, :] - M[None]  # (c, k, d)
            pd = jnp.einsum("kij,ckj->cki", P, diff)
            ell = C[None] - 0.5 * (diff * pd).sum(-1)  # (c, k)
            return ell, pd

        def log_prob(x):
            return logsumexp(parts(x)[0], axis=1)

        def score(x):
            ell, pd = parts(x)
            r = jnp.exp(ell - logsumexp(ell, axis=1)[:, None])
            return -jnp.einsum("ck,cki->ci", r, pd)

        return score, log_prob

    def loss_model(self, spec, theta, *, noise_conditional=False, build=None, dtype="float64", device=None):
        theta = as_array(theta, dtype=dtype, device=device)
        if build is not None:
            return build(theta)
        inner = spec["kwargs"]["model"] if noise_conditional else spec
        score, params = score_function(inner), theta_to_params(theta, inner)
        return (_noise_conditional(score) if noise_conditional else score), params

    def loss_value_and_grad(self, loss_fn, model, inputs, *, grad=True, jit=True,
                            caller="refscore.interop") -> tuple:
        score, params = model

        def f(p):
            return loss_fn(score, p, **inputs)

        scalar = getattr(jax.eval_shape(f, params), "shape", None) == ()
        if grad and scalar:  # a non-scalar value fails its shape check; no gradient then
            value_and_grad = jax.value_and_grad(f)
            value, grads = (self.compiled(value_and_grad) if jit else value_and_grad)(params)
            return self.to_numpy(value), self.to_numpy(ravel_pytree(grads)[0])
        return self.to_numpy((self.compiled(f) if jit else f)(params)), None
