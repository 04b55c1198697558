r"""A small PyTorch implementation of refscore's models and losses (autograd).

The models are the ``nn.Module`` adapters of :mod:`refscore.interop.torch`,
evaluated at the flat ``theta`` by
:func:`~refscore.interop.torch.functional_score` (``torch.func.functional_call``
on views of ``theta``, so ``torch.autograd.grad(loss, theta)`` is refscore's
gradient layout).  Written batch-first like typical PyTorch training code, and
deliberately by a different route than the JAX backend: scores of energies and
mixtures by ``torch.autograd.grad`` of the summed energy (in the adapter),
Jacobian rows by one
backward pass per output coordinate, and :math:`J^\top v` by a single
vector-Jacobian product (so :math:`v^\top J v = v\cdot(J^\top v)` and the JVP
by the double-backward trick); loss gradients by ``torch.autograd.grad`` over
``theta``.  float64 by default; ``dtype="float32"`` computes everything in
float32 (to exercise ``check``'s float32 tolerances).

Examples
--------
>>> from refscore.validation.interop import torch_backend # doctest: +SKIP
>>> vals = torch_backend.values("golden/")                # doctest: +SKIP
>>> refscore.golden.check("golden/", vals).passed         # doctest: +SKIP
True
"""
from __future__ import annotations

import math

# first: without torch it raises the ImportError that names the install command
from refscore.interop import torch as _adapter

import torch

from ._common import check_variant, load, select, to_numpy_dict

__all__ = ["values", "score_batch"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def score_batch(spec, theta, X):
    """Scores ``(n, d)`` at ``X (n, d)`` of the model ``spec`` at the flat ``theta`` tensor,
    differentiable in ``theta`` and ``X`` (energy-type models differentiate in ``X``)."""
    module = _adapter.build_module(spec, theta.detach(), dtype=theta.dtype)
    return _adapter.functional_score(module, theta, X)


def _vjp_x(S, X, V):
    """Rows ``J_kᵀ v_k`` (points are independent, so one backward pass of Σ_k v_k·s_k)."""
    (g,) = torch.autograd.grad((S * V).sum(), X, create_graph=True, allow_unused=True)
    return torch.zeros_like(X) if g is None else g


def _jacobian(S, X):
    """``[k, i, j] = ∂s_i/∂x_j``: one backward pass per output coordinate i."""
    d = X.shape[1]
    rows = [_vjp_x(S, X, torch.nn.functional.one_hot(torch.full((X.shape[0],), i), d).to(X.dtype)) for i in range(d)]
    return torch.stack(rows, dim=1)


def _case_values(case, variant, dtype):
    spec = case.spec
    inp = {k: torch.as_tensor(v, dtype=dtype) for k, v in case.inputs.items()}
    theta = inp["theta"].clone().requires_grad_(True)
    x = inp["x"].clone().requires_grad_(True)
    n, d = x.shape
    sigma = inp["sigma"]

    module = _adapter.build_module(spec, case.inputs["theta"], dtype=dtype)

    def scores(points):
        return _adapter.functional_score(module, theta, points)

    out = {}
    S = scores(x)
    J = _jacobian(S, x)
    out["score"], out["jacobian"] = S, J
    out["trace"] = torch.diagonal(J, dim1=1, dim2=2).sum(-1)
    # JVP by double backward: w -> Jᵀw is linear in w, so its VJP against u is J u
    w = torch.zeros_like(x, requires_grad=True)
    out["jvp"] = torch.autograd.grad(_vjp_x(S, x, w), w, grad_outputs=inp["u"], create_graph=True)[0]

    z = inp["z_sphere"]
    radius = 1.0 if variant == "sphere_unscaled" else math.sqrt(d)
    v_sphere = radius * z / z.norm(dim=-1, keepdim=True)
    out["v_sphere"] = v_sphere

    def grad(loss):
        return loss, torch.autograd.grad(loss, theta, retain_graph=True)[0]

    r = S - inp["target"]
    out["esm"], out["esm_grad"] = grad((0.5 * (r**2).sum(1)).mean())
    out["ism"], out["ism_grad"] = grad((out["trace"] + 0.5 * (S**2).sum(1)).mean())
    xt = (inp["x"] + sigma * inp["eps"]).requires_grad_(True)
    target = -inp["eps"] if variant == "dsm_no_sigma" else -inp["eps"] / sigma
    r = scores(xt) - target
    out["dsm"], out["dsm_grad"] = grad((0.5 * (r**2).sum(1)).mean())

    for kind, v in (("gaussian", inp["v_gaussian"]), ("rademacher", inp["v_rademacher"]), ("sphere", v_sphere)):
        m = v.shape[0]
        xr = inp["x"].repeat(m, 1).requires_grad_(True)  # (m n, d): projection j of point k at row j n + k
        vr = v.reshape(m * n, d)
        Sr = scores(xr)
        vjv = (vr * _vjp_x(Sr, xr, vr)).sum(1)
        out[f"ssm_{kind}"], out[f"ssm_{kind}_grad"] = grad((vjv + 0.5 * (vr * Sr).sum(1) ** 2).mean())
        out[f"ssm_vr_{kind}"], out[f"ssm_vr_{kind}_grad"] = grad((vjv + 0.5 * (Sr**2).sum(1)).mean())
    return {k: t.detach().to(torch.float64).numpy() for k, t in out.items()}


def values(golden, *, variant=None, cases=None, dtype="float64") -> dict:
    """Every golden quantity computed by PyTorch autograd from the stored inputs.

    Parameters
    ----------
    golden : path or refscore.golden.Golden
    variant : None or a key of :data:`refscore.validation.interop.VARIANTS`
    cases : iterable of str, optional
    dtype : {"float64", "float32"}
        Working precision (results are returned as float64 arrays).

    Returns
    -------
    dict ``{"<case>/<quantity>": ndarray}``.
    """
    check_variant(variant)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    g = load(golden)
    out = {}
    for case in select(g, cases):
        out.update(to_numpy_dict(case.name, _case_values(case, variant, _DTYPES[dtype])))
    return out
