r"""A small JAX implementation of refscore's models and losses (float64, autodiff).

The models come from :mod:`refscore.interop.jax` (``score(params, x)``, and
:func:`~refscore.interop.jax.theta_to_params` applied to the traced ``theta``);
scores are taken at ONE point ``x (d,)`` and batched with ``jax.vmap``;
Jacobians come from ``jax.jacfwd``, JVPs from ``jax.jvp``, energies' and
mixtures' scores from ``jax.grad`` of their energy (in the adapter) and loss
gradients from ``jax.grad`` over ``theta``.  Nothing is shared with refscore's
hand-derived code: only the stored inputs and the documented layout.

.. math::

    \mathrm{dsm} = \tfrac1n\sum_k \tfrac12\lVert s(x_k+\sigma\epsilon_k) + \epsilon_k/\sigma\rVert^2, \qquad
    v_{\text{sphere}} = \sqrt d\, z/\lVert z\rVert .

Examples
--------
>>> from refscore.validation.interop import jax_backend   # doctest: +SKIP
>>> vals = jax_backend.values("golden/")                  # doctest: +SKIP
>>> refscore.golden.check("golden/", vals).passed         # doctest: +SKIP
True
"""
from __future__ import annotations

# first: without jax it raises the ImportError that names the install command
from refscore.interop import jax as _adapter  # imports jax, switches on jax_enable_x64

import jax
import jax.numpy as jnp

from ._common import check_variant, load, select, to_numpy_dict

__all__ = ["values", "score_function"]

#: XLA options for a compile-once, run-once function
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def score_function(spec):
    """``score(theta, x)`` for one point ``x (d,)`` and the flat ``theta`` of the model ``spec``.

    The adapter's ``score(params, x)`` at ``params = theta_to_params(theta)``: traceable, so
    ``jax.grad`` over ``theta`` gives refscore's gradient layout.
    """
    score = _adapter.score_function(spec)

    def score_theta(theta, x):
        return score(_adapter.theta_to_params(theta, score), x)

    return score_theta


def _case_values(case, variant):
    inp = {k: jnp.asarray(v) for k, v in case.inputs.items()}
    lowered = jax.jit(lambda inp: _all(case.spec, inp, variant)).lower(inp)
    try:  # each case is compiled once and run once: cheap compilation wins (~2x faster here)
        compiled = lowered.compile(compiler_options=_FAST_COMPILE)
    except Exception:  # pragma: no cover - older jax without compiler_options
        compiled = lowered.compile()
    return compiled(inp)


def _all(spec, inp, variant):
    score = score_function(spec)
    theta, x = inp["theta"], inp["x"]
    d = x.shape[1]
    sigma = inp["sigma"]

    S = jax.vmap(score, in_axes=(None, 0))
    jac = jax.vmap(jax.jacfwd(score, argnums=1), in_axes=(None, 0))

    def jvp(th, xs, us):
        return jax.vmap(lambda xk, uk: jax.jvp(lambda y: score(th, y), (xk,), (uk,))[1])(xs, us)

    def esm(th):
        r = S(th, x) - inp["target"]
        return jnp.mean(0.5 * jnp.sum(r**2, axis=1))

    def ism(th):
        s = S(th, x)
        return jnp.mean(jnp.trace(jac(th, x), axis1=1, axis2=2) + 0.5 * jnp.sum(s**2, axis=1))

    target_scale = 1.0 if variant == "dsm_no_sigma" else 1.0 / sigma

    def dsm(th):
        r = S(th, x + sigma * inp["eps"]) + inp["eps"] * target_scale
        return jnp.mean(0.5 * jnp.sum(r**2, axis=1))

    def sliced(th, v, vr):
        """SSM (vr = 0) or SSM-VR (vr = 1) with projections v (m, n, d)."""
        s = S(th, x)
        vjv = jax.vmap(lambda vj: jnp.sum(vj * jvp(th, x, vj), axis=1))(v)  # (m, n)
        projected = 0.5 * jnp.einsum("mnd,nd->mn", v, s) ** 2
        full = 0.5 * jnp.sum(s**2, axis=1)[None, :]
        return jnp.mean(vjv + (1.0 - vr) * projected + vr * full)

    z = inp["z_sphere"]
    radius = 1.0 if variant == "sphere_unscaled" else jnp.sqrt(float(d))
    v_sphere = radius * z / jnp.linalg.norm(z, axis=-1, keepdims=True)

    J = jac(theta, x)
    out = {
        "score": S(theta, x),
        "jacobian": J,
        "trace": jnp.trace(J, axis1=1, axis2=2),
        "jvp": jvp(theta, x, inp["u"]),
        "v_sphere": v_sphere,
    }
    for key, fn in (("esm", esm), ("ism", ism), ("dsm", dsm)):
        out[key], out[f"{key}_grad"] = jax.value_and_grad(fn)(theta)
    # the six sliced losses in one vectorised pass: (kind, ssm / ssm_vr)
    kinds = ("gaussian", "rademacher", "sphere")
    V = jnp.stack([inp["v_gaussian"], inp["v_rademacher"], v_sphere])
    V6 = jnp.concatenate([V, V])
    vr6 = jnp.array([0.0] * 3 + [1.0] * 3)
    vals, grads = jax.vmap(jax.value_and_grad(sliced), in_axes=(None, 0, 0))(theta, V6, vr6)
    for i, kind in enumerate(kinds):
        for j, loss in enumerate(("ssm", "ssm_vr")):
            out[f"{loss}_{kind}"] = vals[3 * j + i]
            out[f"{loss}_{kind}_grad"] = grads[3 * j + i]
    return out


def values(golden, *, variant=None, cases=None) -> dict:
    """Every golden quantity computed by JAX from the stored inputs.

    Parameters
    ----------
    golden : path or refscore.golden.Golden
    variant : None or a key of :data:`refscore.validation.interop.VARIANTS`
        A deliberately wrong convention (negative control).
    cases : iterable of str, optional
        Only these cases.

    Returns
    -------
    dict ``{"<case>/<quantity>": ndarray}``.
    """
    check_variant(variant)
    g = load(golden)
    out = {}
    for case in select(g, cases):
        out.update(to_numpy_dict(case.name, _case_values(case, variant)))
    return out
