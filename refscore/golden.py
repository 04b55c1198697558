r"""Golden files: refscore's values on fixed inputs, for validating other backends.

A user with a JAX, PyTorch or C++ implementation of score matching writes the
golden files once, computes the same quantities on the stored inputs with their
own code, and lets :func:`check` say, quantity by quantity, what agrees::

    refscore golden --out golden/           # golden/golden.npz + golden/manifest.json
    python my_backend.py golden/ values.npz # user code: same keys, own numbers
    refscore check golden/ values.npz       # PASS/FAIL per key, coverage, diagnosis

Files
-----
``golden.npz``
    One array per key ``"<case>/<name>"`` (every array float64).  Each case holds
    its *inputs* and the *quantities* refscore computed from them.
``manifest.json``
    Format version, refscore version, the conventions in words
    (:data:`CONVENTIONS`), the meaning of every input and quantity of every case
    kind (:data:`CASE_KINDS`), and per case its kind, the model (class and
    constructor arguments, ``n_params``, the ``theta`` layout in words) or the
    closed-form target (class and arguments) with the sampler or kernel
    parameters, the seed the inputs were drawn from, the keys and shapes, and
    the case's ``binding``: digests of its arrays and of every field of its
    entry, so that :func:`load` refuses a description edited after writing.

Case kinds (:data:`CASE_KINDS`)
-------------------------------
``losses`` (69 cases, the only kind of format 1)
    Dimensions 1, 2 and 5; :class:`~refscore.models.GaussianModel`,
    :class:`~refscore.models.LinearScore`,
    :class:`~refscore.models.GaussianMixtureModel` (2 components), and
    :class:`~refscore.models.MLPScore` / :class:`~refscore.models.MLPEnergy` with
    one and two hidden layers for each activation (tanh, softplus, sigmoid, silu,
    gelu); 23 quantities each (:data:`QUANTITIES`): score, Jacobian, trace, JVP,
    sphere projections and every loss with its gradient over ``theta``.
``dsm_multi`` (4 cases)
    NCSN's multi-noise DSM (:func:`refscore.losses.dsm_multi`) of a
    :class:`~refscore.models.NoiseConditional` model with a noise label per
    point, ``weighting="sigma2"`` and ``"none"``, with gradients.
``ksd`` (3 cases)
    The IMQ Stein kernel matrix and the U- and V-statistics of the squared
    kernel Stein discrepancy (:mod:`refscore.metrics`; IMQ is the only Stein
    kernel refscore has) against a closed-form target.
``ula``, ``mala``, ``annealed`` (3 cases each)
    Sampler trajectories on closed-form targets (Gaussian, Gaussian mixtures,
    and their noised versions for annealed Langevin) with the exact noise stored
    as an input (``z``, and MALA's uniforms ``u``), so that a foreign sampler fed
    the same noise agrees to round-off; MALA's accept decisions and log
    acceptance ratios are stored.

The losses are those of :mod:`refscore.losses` with ``reduction="mean"``:

.. math::

    \mathrm{esm} &= \tfrac1n\textstyle\sum_k \tfrac12\lVert s_\theta(x_k) - t_k\rVert^2, \qquad
    \mathrm{ism} = \tfrac1n\textstyle\sum_k \big[\operatorname{tr}\nabla_x s_\theta(x_k)
        + \tfrac12\lVert s_\theta(x_k)\rVert^2\big], \\
    \mathrm{dsm} &= \tfrac1n\textstyle\sum_k \tfrac12\big\lVert s_\theta(x_k + \sigma\epsilon_k)
        + \epsilon_k/\sigma\big\rVert^2, \\
    \mathrm{ssm} &= \tfrac1{mn}\textstyle\sum_{j,k} \big[v_{jk}^\top\nabla_x s_\theta(x_k)\,v_{jk}
        + \tfrac12(v_{jk}^\top s_\theta(x_k))^2\big], \qquad
    \mathrm{ssm\_vr}: \tfrac12(v^\top s)^2 \to \tfrac12\lVert s\rVert^2 ,

with sphere projections :math:`v = \sqrt d\, z/\lVert z\rVert` so that
:math:`E[vv^\top] = I`.

Checking
--------
:func:`check` compares the keys provided: its verdict covers them (a subset of
cases and quantities is fine), its summary states the coverage, and
``require_all=True`` also fails a quantity left out of a provided case.  For
every failing quantity it tests a small set of hypotheses (a constant factor, a
power of :math:`\sigma` or of :math:`d`, a sign flip, a transposed Jacobian, a
gradient missing one term, a failure only at :math:`d > 1` or for one
projection kind, known variants of DSM, KSD and the Langevin step) and names the
matching convention of :mod:`refscore.conventions` (``result.diagnosis``).

References
----------
Eqs. (2), (3), (4), (6), (7); Hyvärinen (2005); Vincent (2011); Song, Garg, Shi &
Ermon (2019); Song & Ermon (2019); Liu, Lee & Jordan (2016).

Examples
--------
>>> import tempfile, refscore.golden as golden
>>> d = tempfile.mkdtemp()
>>> golden.write(d)                                   # doctest: +SKIP
>>> golden.check(d, golden.compute(d)).passed         # doctest: +SKIP
True
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import stat
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import __version__, losses
from ._files import check_creatable, open_input, os_error_message, read_npz, reason, write_files_atomically
from .losses import PROJECTIONS
from .models import GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy, MLPScore, NoiseConditional
from .models.activations import ACTIVATIONS
from .models.mlp_base import one_blas_thread

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CONVENTIONS",
    "INPUTS",
    "QUANTITIES",
    "CASE_KINDS",
    "TOLERANCES",
    "Case",
    "Golden",
    "CheckRow",
    "CheckResult",
    "Diagnosis",
    "case_specs",
    "extra_case_specs",
    "case_values",
    "build_model",
    "build_target",
    "write",
    "load",
    "compute",
    "check",
]

#: bumped whenever keys, shapes or meanings change.  2: the case kinds dsm_multi,
#: ksd, ula, mala and annealed, and a ``kind`` per case; 1: per-point losses only
FORMAT_VERSION = 2
#: the format versions :func:`load` reads (a format 1 file is all ``losses`` cases)
READABLE_VERSIONS = (1, 2)

DATA_FILE = "golden.npz"
MANIFEST_FILE = "manifest.json"

#: seed of every draw; each case draws from ``default_rng([BASE_SEED, crc32(case name)])``
BASE_SEED = 20_240_607

DIMS = (1, 2, 5)
#: every registry activation gets its golden cases
ACTIVATION_NAMES = tuple(ACTIVATIONS)
#: hidden sizes of the depth-1 and depth-2 MLP cases
HIDDEN = {1: (5,), 2: (5, 4)}
N_POINTS = 3
N_PROJECTIONS = 2
MIXTURE_COMPONENTS = 2
PROJECTION_KINDS = tuple(PROJECTIONS)
#: dsm_multi: points and noise levels (every level labels two points)
N_MULTI_POINTS = 6
MULTI_SIGMAS = (2.0, 0.8, 0.3)
#: ksd: sample size
N_KSD_POINTS = 8
#: samplers: chains and steps (annealed: steps per level)
N_CHAINS = 4

#: default tolerances ``(rtol, atol)`` of :func:`check`: elementwise
#: ``|value - golden| <= atol + rtol * |golden|`` (numpy.isclose).  float64: an
#: independent float64 implementation (JAX, PyTorch autograd) differs from
#: refscore by summation order only, measured at most 3e-14 absolute on these
#: O(1)-O(30) quantities; 1e-8 leaves six digits of margin yet catches any
#: wrong constant.  float32: PyTorch autograd in float32 differs by at most
#: 5e-6 absolute (unit round-off 6e-8 amplified by two levels of
#: differentiation), so 1e-4 leaves a factor 20 (tests/test_interop.py).
TOLERANCES = {"float64": (1e-8, 1e-10), "float32": (1e-4, 1e-4)}

CONVENTIONS = {
    "dtype": "float64 everywhere",
    "batch": "points are rows: x has shape (n, d); the last axis is the dimension",
    "jacobian": "jacobian[k, i, j] = d s_i / d x_j at point x_k, shape (n, d, d)",
    "reduction": "every loss is the mean over the n points (and over the m projections); "
    "a loss gradient is the gradient over theta of that mean, shape (P,)",
    "esm": "esm = mean_k 1/2 ||s(x_k) - target_k||^2 (eq. (2))",
    "ism": "ism = mean_k [tr grad_x s(x_k) + 1/2 ||s(x_k)||^2] (eq. (3), Hyvarinen 2005)",
    "dsm": "dsm = mean_k 1/2 ||s(x_k + sigma eps_k) + eps_k / sigma||^2 with eps ~ N(0, I): "
    "the target is -eps/sigma (eq. (6) with its noise written sigma*eps); "
    "not the sigma^4-scaled 1/2||sigma^2 s + sigma eps||^2, not NCSN's sigma^2 weighting",
    "dsm_multi": "dsm_multi = mean_k lambda(sigma_k) 1/2 ||s(x_k + sigma_k eps_k, sigma_k) + eps_k / sigma_k||^2, "
    "sigma_k = sigmas[labels[k]], lambda = sigma^2 (weighting 'sigma2', NCSN) or 1 ('none'); "
    "NoiseConditional: s(x, sigma) = s_theta(x) / sigma with the wrapped model's theta",
    "ssm": "ssm = mean_{j,k} [v_jk^T grad_x s(x_k) v_jk + 1/2 (v_jk^T s(x_k))^2] (eq. (7))",
    "ssm_vr": "ssm_vr = mean_{j,k} [v_jk^T grad_x s(x_k) v_jk + 1/2 ||s(x_k)||^2] (eq. (7))",
    "projections": "E[v v^T] = I for every kind: gaussian v ~ N(0, I); rademacher v_i = +-1; "
    "sphere v = sqrt(d) z / ||z|| (radius sqrt(d), NOT the unit sphere)",
    "projection_batch": "v has shape (m, n, d): v[j, k] is projection j of point x_k. Code that duplicates "
    "the batch m times as x_rep = np.tile(x, (m, 1)), shape (m*n, d), row j*n + k = x_k, pairs it with "
    "v.reshape(m*n, d) (row j*n + k = v[j, k]) and averages over all m*n rows. With np.repeat(x, m, axis=0) "
    "(row k*m + j = x_k) use v.transpose(1, 0, 2).reshape(n*m, d) instead",
    "ksd": "IMQ base kernel k(x, y) = (c^2 + ||x - y||^2)^beta; Langevin Stein kernel u_p(x, y) = "
    "s(x)^T s(y) k + s(x)^T grad_y k + s(y)^T grad_x k + tr grad_x grad_y k (Liu, Lee & Jordan 2016, eq. 8); "
    "ksd_u = sum_{i != j} u_p(x_i, x_j) / (n (n - 1)) (unbiased), ksd_v = sum_{i, j} u_p(x_i, x_j) / n^2; "
    "both are the SQUARED discrepancy",
    "langevin_step": "x <- x + eta s(x) + sqrt(2 eta) z (eq. (4)); the (lr/2, sqrt(lr)) form has eta = lr/2; "
    "annealed: eta_i = step sigma_i^2 / sigma_L^2",
    "sampler_noise": "z[t, j] = refscore.noise.normal(noise_seed, chain j, step t, d) (Philox4x32-10 and "
    "Box-Muller, the same on every refscore backend); MALA's u[t, j] = refscore.noise.uniform(noise_seed, j, t), "
    "accept iff log u < log_alpha; annealed Langevin counts t globally, t = i T + j at level i",
    "theta": "one flat float64 vector per case; its layout in words is the case's 'layout'",
}

#: inputs of every ``losses`` case, and what they mean
INPUTS = {
    "theta": "(P,) model parameters in the case's layout",
    "x": "(n, d) points",
    "u": "(n, d) tangent directions for jvp",
    "target": "(n, d) fixed target scores for esm",
    "eps": "(n, d) standard normal draws for dsm",
    "sigma": "() dsm noise level",
    "v_gaussian": "(m, n, d) gaussian projections for ssm_gaussian / ssm_vr_gaussian",
    "v_rademacher": "(m, n, d) rademacher projections for ssm_rademacher / ssm_vr_rademacher",
    "z_sphere": "(m, n, d) standard normal draws; v_sphere = sqrt(d) z / ||z|| (a quantity to check)",
}


def _quantity_table():
    q = {
        "score": "(n, d) s_theta(x)",
        "jacobian": "(n, d, d) [k, i, j] = d s_i / d x_j at x_k",
        "trace": "(n,) tr grad_x s_theta(x_k), exact",
        "jvp": "(n, d) grad_x s_theta(x_k) u_k",
        "v_sphere": "(m, n, d) sqrt(d) z_sphere / ||z_sphere|| (norm over the last axis)",
        "esm": "() esm(x, target)",
        "esm_grad": "(P,) d esm / d theta",
        "ism": "() ism(x)",
        "ism_grad": "(P,) d ism / d theta",
        "dsm": "() dsm(x, sigma, eps)",
        "dsm_grad": "(P,) d dsm / d theta",
    }
    for kind in PROJECTION_KINDS:
        for loss in ("ssm", "ssm_vr"):
            q[f"{loss}_{kind}"] = f"() {loss}(x, v_{kind})"
            q[f"{loss}_{kind}_grad"] = f"(P,) d {loss}_{kind} / d theta"
    return q


#: quantities of every ``losses`` case (what :func:`check` compares), and what they mean
QUANTITIES = _quantity_table()

_SAMPLER_INPUTS = {
    "x0": "(c, d) initial states, one row per chain",
    "step": "() the step eta of x <- x + eta s(x) + sqrt(2 eta) z",
    "z": "(T, c, d) the noise of every step: z[t, j] = refscore.noise.normal(noise_seed, chain j, step t, d)",
}
_STATES = "(T, c, d) states[t] = the states after step t (t = 0..T-1), so states[-1] is the final state"

#: every case kind: what it is, its inputs and its quantities (keys of golden.npz below a case)
CASE_KINDS = {
    "losses": {
        "about": "a score model (class and kwargs in 'model', 'kwargs'): score, Jacobian, trace, JVP, "
        "sphere projections and the five per-point losses with their gradients over theta",
        "inputs": INPUTS,
        "quantities": QUANTITIES,
    },
    "dsm_multi": {
        "about": "NCSN's multi-noise DSM of NoiseConditional(model): s(x, sigma) = s_theta(x) / sigma, "
        "one noise level per point (refscore.losses.dsm_multi)",
        "inputs": {
            "theta": "(P,) parameters of the wrapped model, in the case's layout",
            "x": "(n, d) clean points",
            "sigmas": "(L,) the noise levels",
            "labels": "(n,) the level of each point, integer-valued (stored as float64): sigma_k = sigmas[labels[k]]",
            "sigma_points": "(n,) sigmas[labels], the noise level of each point",
            "eps": "(n, d) standard normal draws",
        },
        "quantities": {
            "score_noised": "(n, d) s(x_k + sigma_k eps_k, sigma_k) = s_theta(x~_k) / sigma_k",
            "dsm_multi_sigma2": "() mean_k sigma_k^2 1/2 ||s(x~_k, sigma_k) + eps_k / sigma_k||^2 (weighting='sigma2')",
            "dsm_multi_sigma2_grad": "(P,) d dsm_multi_sigma2 / d theta",
            "dsm_multi_none": "() mean_k 1/2 ||s(x~_k, sigma_k) + eps_k / sigma_k||^2 (weighting='none')",
            "dsm_multi_none_grad": "(P,) d dsm_multi_none / d theta",
        },
    },
    "ksd": {
        "about": "kernel Stein discrepancy of a sample against a closed-form target (class and kwargs in "
        "'target', 'kwargs'), IMQ kernel with the case's c and beta (refscore.metrics)",
        "inputs": {
            "x": "(n, d) the sample",
            "score": "(n, d) the target's score at x (also computable from the target in the manifest)",
            "c": "() IMQ parameter c > 0",
            "beta": "() IMQ exponent beta in (-1, 0)",
        },
        "quantities": {
            "stein_kernel": "(n, n) u_p(x_i, x_j) (refscore.metrics.imq_stein_kernel)",
            "ksd_u": "() U-statistic sum_{i != j} u_p / (n (n - 1)) (refscore.metrics.ksd)",
            "ksd_v": "() V-statistic sum_{i, j} u_p / n^2 (diagonal included)",
        },
    },
    "ula": {
        "about": "unadjusted Langevin on a closed-form target: x <- x + eta s(x) + sqrt(2 eta) z[t] "
        "(refscore.sampling.ula)",
        "inputs": _SAMPLER_INPUTS,
        "quantities": {"states": _STATES},
    },
    "mala": {
        "about": "MALA on a closed-form target: proposal y = x + eta s(x) + sqrt(2 eta) z[t], accepted iff "
        "log u[t] < log_alpha (refscore.sampling.mala)",
        "inputs": {**_SAMPLER_INPUTS,
                   "u": "(T, c) the accept/reject uniforms: u[t, j] = refscore.noise.uniform(noise_seed, j, t)"},
        "quantities": {
            "states": _STATES + " (a rejected step repeats the state)",
            "accept": "(T, c) 1.0 where the proposal of step t was accepted, else 0.0",
            "log_alpha": "(T, c) log p(y) - log p(x) - (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
            "at step t (x the state before it, y its proposal)",
        },
    },
    "annealed": {
        "about": "annealed Langevin (Song & Ermon 2019, Alg. 1) with the exact scores of p_sigma = p * N(0, "
        "sigma^2 I): T steps at each level, eta_i = step sigma_i^2 / sigma_L^2 (refscore.sampling.annealed_langevin)",
        "inputs": {
            "x0": _SAMPLER_INPUTS["x0"],
            "sigmas": "(L,) decreasing noise levels",
            "step": "() the step at the smallest level: eta_i = step sigma_i^2 / sigma_L^2",
            "z": "(L T, c, d) the noise, by global step t = i T + j: z[t, j'] = refscore.noise.normal(noise_seed, "
            "chain j', step t, d)",
        },
        "quantities": {"states": "(L T, c, d) the states after each global step"},
    },
}

#: kinds whose case is a score model (the others are a closed-form target)
_MODEL_KINDS = ("losses", "dsm_multi")

_MODEL_CLASSES = {
    "GaussianModel": GaussianModel,
    "LinearScore": LinearScore,
    "GaussianMixtureModel": GaussianMixtureModel,
    "MLPScore": MLPScore,
    "MLPEnergy": MLPEnergy,
}
#: models wrapping a model spec (``kwargs: {"model": inner spec}``)
_WRAPPER_CLASSES = {"NoiseConditional": NoiseConditional}


# ------------------------------------------------------------------ cases
def case_specs() -> dict:
    """The ``losses`` cases: ``{name: {"model": class name, "kwargs": {...}}}`` in file order.

    Names read ``gaussian_d2``, ``linear_d5``, ``mixture_d1``,
    ``mlpscore_tanh_depth1_d2``, ``mlpenergy_gelu_depth2_d5``.  The other case
    kinds are :func:`extra_case_specs`.
    """
    specs = {}
    for d in DIMS:
        specs[f"gaussian_d{d}"] = {"model": "GaussianModel", "kwargs": {"dim": d}}
        specs[f"linear_d{d}"] = {"model": "LinearScore", "kwargs": {"dim": d}}
        specs[f"mixture_d{d}"] = {"model": "GaussianMixtureModel", "kwargs": {"dim": d, "k": MIXTURE_COMPONENTS}}
        for cls in (MLPScore, MLPEnergy):
            for depth, hidden in HIDDEN.items():
                for act in ACTIVATION_NAMES:
                    specs[f"{cls.__name__.lower()}_{act}_depth{depth}_d{d}"] = {
                        "model": cls.__name__,
                        "kwargs": {"dim": d, "hidden": list(hidden), "activation": act},
                    }
    return specs


#: the closed-form targets of the ksd and sampler cases
_TARGETS = {
    "gaussian_d2": {"target": "Gaussian", "kwargs": {"mean": [0.5, -1.0], "cov": [[1.5, 0.4], [0.4, 0.8]]}},
    "mixture_d1": {"target": "GaussianMixture", "kwargs": {
        "weights": [0.3, 0.7], "means": [[-1.5], [1.0]], "covs": [[[0.5]], [[1.2]]]}},
    "mixture_d2": {"target": "GaussianMixture", "kwargs": {
        "weights": [0.4, 0.6], "means": [[-1.0, -1.0], [1.5, 1.0]],
        "covs": [[[0.6, 0.0], [0.0, 0.9]], [[1.0, 0.3], [0.3, 0.7]]]}},
}


def extra_case_specs() -> dict:
    """The cases of the kinds beyond ``losses``, ``{name: spec}`` in file order.

    Every spec has ``"kind"``.  ``dsm_multi`` specs are a model spec
    (``{"model": "NoiseConditional", "kwargs": {"model": inner spec}}``); ``ksd``
    and sampler specs name a closed-form target (``{"target": class name,
    "kwargs": {...}}``) and their ``"params"`` (IMQ ``c``, ``beta``; sampler
    ``step``, ``steps``, ``chains``, ``noise_seed``, annealed ``sigmas``).
    """
    specs = {}
    for d in DIMS:
        inner = {"model": "MLPScore", "kwargs": {"dim": d, "hidden": [5], "activation": "tanh"}}
        specs[f"dsm_multi_mlpscore_tanh_d{d}"] = {"kind": "dsm_multi", "model": "NoiseConditional",
                                                  "kwargs": {"model": inner}}
    specs["dsm_multi_linear_d2"] = {"kind": "dsm_multi", "model": "NoiseConditional",
                                    "kwargs": {"model": {"model": "LinearScore", "kwargs": {"dim": 2}}}}
    kernels = {"gaussian_d2": (1.0, -0.5), "mixture_d1": (0.5, -0.3), "mixture_d2": (2.0, -0.8)}
    for t, (c, beta) in kernels.items():
        specs[f"ksd_imq_{t}"] = {"kind": "ksd", **_TARGETS[t], "params": {"kernel": "imq", "c": c, "beta": beta}}
    sampler_params = {
        "ula": {"step": 0.1, "steps": 20},
        "mala": {"step": 1.0, "steps": 20},  # about 60 % accepted: both decisions occur
        "annealed": {"step": 0.05, "steps": 5, "sigmas": [2.0, 1.0, 0.5]},
    }
    for i, (kind, params) in enumerate(sampler_params.items()):
        for j, t in enumerate(_TARGETS):
            specs[f"{kind}_{t}"] = {"kind": kind, **_TARGETS[t],
                                    "params": {**params, "chains": N_CHAINS, "noise_seed": 100 + 10 * i + j}}
    return specs


def _spec_kind(spec: dict) -> str:
    return spec.get("kind", "losses")


def build_model(spec: dict, *, reference: bool = False):
    """The refscore model of a case spec ``{"model": class name, "kwargs": {...}}``.

    ``reference=True`` runs MLPScore's fused losses on the readable NumPy engine
    (the golden values come from the reference, and a cold ``refscore golden``
    compiles nothing); the engines agree to 1e-12, far inside the tolerances.
    ``{"model": "NoiseConditional", "kwargs": {"model": inner spec}}`` wraps the
    inner model in :class:`~refscore.models.NoiseConditional`.
    """
    name = spec.get("model") if isinstance(spec, dict) else None
    wrapper = _WRAPPER_CLASSES.get(name) if isinstance(name, str) else None
    if wrapper is not None:
        kwargs = spec.get("kwargs", {})
        inner = kwargs.get("model") if isinstance(kwargs, dict) else None
        if not isinstance(inner, dict) or set(kwargs) != {"model"} or inner.get("model") in _WRAPPER_CLASSES:
            raise ValueError(f"a {name} spec needs kwargs {{'model': spec of a score model}}, got {kwargs!r}")
        return wrapper(build_model(inner, reference=reference))
    try:
        cls = _MODEL_CLASSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"spec['model'] must be one of {sorted([*_MODEL_CLASSES, *_WRAPPER_CLASSES])}, got {name!r}"
        ) from None
    kwargs = dict(spec.get("kwargs", {}))
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    if reference and cls is MLPScore:
        kwargs["backend"] = "numpy"
    return cls(**kwargs)


def build_target(spec: dict):
    """The closed-form distribution of a case spec ``{"target": "Gaussian" | "GaussianMixture", "kwargs": {...}}``.

    Annealed Langevin cases use its ``perturbed()`` version.
    """
    from .distributions import Gaussian, GaussianMixture

    classes = {"Gaussian": Gaussian, "GaussianMixture": GaussianMixture}
    name = spec.get("target") if isinstance(spec, dict) else None
    if name not in classes:
        raise ValueError(f"spec['target'] must be one of {sorted(classes)}, got {name!r}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"spec['kwargs'] must be an object, got {kwargs!r}")
    return classes[name](**{k: np.asarray(v, dtype=float) for k, v in kwargs.items()})


def _theta_gaussian(model, rng):
    d = model.dim
    mu = 0.5 * rng.standard_normal(d)
    L = np.tril(0.3 * rng.standard_normal((d, d)), -1) + np.diag(rng.uniform(0.7, 1.3, d))
    return np.concatenate([mu, L[np.tril_indices(d)]])


def _theta_mixture(model, rng):
    k, d = model.k, model.dim
    return np.concatenate([0.5 * rng.standard_normal(k), 1.5 * rng.standard_normal(k * d),
                           0.3 * rng.standard_normal(k)])


#: how each case's theta is drawn, by the spec's model key (default: MLPs)
_THETA_DRAWS = {
    "GaussianModel": _theta_gaussian,
    "LinearScore": lambda model, rng: 0.5 * rng.standard_normal(model.n_params),
    "GaussianMixtureModel": _theta_mixture,
}


def _draw_theta(model, spec, rng):
    """Parameters with every entry O(1) and non-zero (biases included)."""
    draw = _THETA_DRAWS.get(spec["model"])
    if draw is None:
        return 0.6 * rng.standard_normal(model.n_params)  # MLPs: weights and biases of order one
    return draw(model, rng)


def _case_seed(name: str) -> list:
    return [BASE_SEED, zlib.crc32(name.encode())]


def _draw_inputs(name, spec, model):
    rng = np.random.default_rng(_case_seed(name))
    d, n, m = model.dim, N_POINTS, N_PROJECTIONS
    inputs = {
        "theta": _draw_theta(model, spec, rng),
        "x": rng.standard_normal((n, d)),
        "u": rng.standard_normal((n, d)),
        "target": rng.standard_normal((n, d)),
        "eps": rng.standard_normal((n, d)),
        "sigma": np.array(rng.uniform(0.3, 0.9)),  # != 1 so that a missing 1/sigma shows
        "v_gaussian": losses.projections(rng, (m, n, d), kind="gaussian"),
        "v_rademacher": losses.projections(rng, (m, n, d), kind="rademacher"),
    }
    # the sphere's draws are stored raw; refscore's projections() normalises the same draws
    state = rng.bit_generator.state
    inputs["z_sphere"] = rng.standard_normal((m, n, d))
    rng.bit_generator.state = state
    v_sphere = losses.projections(rng, (m, n, d), kind="sphere")
    return inputs, v_sphere


def _quantities(model, inputs, v_sphere=None):
    """Every quantity of :data:`QUANTITIES` from refscore's public API."""
    th, x = inputs["theta"], inputs["x"]
    d = model.dim
    if v_sphere is None:
        z = inputs["z_sphere"]
        v_sphere = math.sqrt(d) * z / np.linalg.norm(z, axis=-1, keepdims=True)
    out = {
        "score": model.score(th, x),
        "jacobian": model.score_jacobian(th, x),
        "trace": model.score_trace(th, x),
        "jvp": model.score_jvp(th, x, inputs["u"]),
        "v_sphere": v_sphere,
    }
    pairs = {
        "esm": losses.esm(model, th, x, inputs["target"], grad=True),
        "ism": losses.ism(model, th, x, grad=True),
        "dsm": losses.dsm(model, th, x, float(inputs["sigma"]), inputs["eps"], grad=True),
    }
    projections = {"gaussian": inputs["v_gaussian"], "rademacher": inputs["v_rademacher"], "sphere": v_sphere}
    for kind, v in projections.items():
        pairs[f"ssm_{kind}"] = losses.ssm(model, th, x, v, grad=True)
        pairs[f"ssm_vr_{kind}"] = losses.ssm_vr(model, th, x, v, grad=True)
    for key, (value, grad) in pairs.items():
        out[key] = np.array(value)
        out[f"{key}_grad"] = grad
    return {k: np.asarray(out[k], dtype=float) for k in QUANTITIES}


# ---------------------------------------------------- the other case kinds
def _draw_dsm_multi(name, spec, model):
    rng = np.random.default_rng(_case_seed(name))
    n, d = N_MULTI_POINTS, model.dim
    sigmas = np.array(MULTI_SIGMAS)
    labels = rng.permutation(np.arange(n) % len(sigmas))
    inputs = {
        "theta": _draw_theta(model.model, spec["kwargs"]["model"], rng),
        "x": rng.standard_normal((n, d)),
        "sigmas": sigmas,
        "labels": labels.astype(float),
        "sigma_points": sigmas[labels],
        "eps": rng.standard_normal((n, d)),
    }
    return inputs


def _q_dsm_multi(model, inputs):
    th, x, sigmas, eps = inputs["theta"], inputs["x"], inputs["sigmas"], inputs["eps"]
    labels = np.rint(inputs["labels"]).astype(np.int64)
    sig = sigmas[labels]
    out = {"score_noised": model.score(th, x + sig[:, None] * eps, sig)}
    for weighting in ("sigma2", "none"):
        value, grad = losses.dsm_multi(model, th, x, sigmas, labels, eps, weighting=weighting, grad=True)
        out[f"dsm_multi_{weighting}"] = np.array(value)
        out[f"dsm_multi_{weighting}_grad"] = grad
    return out


def _draw_ksd(name, spec, target):
    rng = np.random.default_rng(_case_seed(name))
    # a sample that is NOT from the target (shifted and wider), so that the discrepancy is not ~0
    x = 0.3 + 1.2 * rng.standard_normal((N_KSD_POINTS, target.dim))
    p = spec["params"]
    return {"x": x, "score": target.score(x), "c": np.array(float(p["c"])), "beta": np.array(float(p["beta"]))}


def _q_ksd(inputs):
    from . import metrics

    x, s = inputs["x"], inputs["score"]
    c, beta = float(inputs["c"]), float(inputs["beta"])
    K = metrics.imq_stein_kernel(x, x, s, s, c=c, beta=beta)
    return {"stein_kernel": K, "ksd_u": np.array(metrics.ksd(x, s, c=c, beta=beta)), "ksd_v": np.array(K.mean())}


def _sampler_noise(kind, params, d):
    from . import noise

    levels = len(params["sigmas"]) if kind == "annealed" else 1
    T, c, seed = levels * int(params["steps"]), int(params["chains"]), int(params["noise_seed"])
    chains, steps = np.arange(c)[None, :], np.arange(T)[:, None]
    out = {"z": noise.normal(seed, chains, steps, d)}
    if kind == "mala":
        out["u"] = noise.uniform(seed, chains, steps)
    return out


def _draw_sampler(name, spec, target):
    rng = np.random.default_rng(_case_seed(name))
    p, kind = spec["params"], spec["kind"]
    inputs = {"x0": 1.5 * rng.standard_normal((int(p["chains"]), target.dim))}
    if kind == "annealed":
        inputs["sigmas"] = np.array(p["sigmas"], dtype=float)
    inputs["step"] = np.array(float(p["step"]))
    inputs.update(_sampler_noise(kind, p, target.dim))
    return inputs


def _run_sampler(kind, target, inputs, params, step=None):
    """refscore's NumPy sampler from the stored x0 with the case's noise seed (and ``step`` if given)."""
    from . import sampling

    step = float(inputs["step"]) if step is None else step
    T, seed = int(params["steps"]), int(params["noise_seed"])
    x0 = inputs["x0"]
    opts = {"seed": seed, "backend": "numpy", "record": 1, "progress": False}
    if kind == "ula":
        return sampling.ula(target, x0, step, T, **opts)
    if kind == "mala":
        return sampling.mala(target, x0, step, T, **opts)
    return sampling.annealed_langevin(target.perturbed(), x0, inputs["sigmas"], step, T, **opts)


def _mala_log_alpha(target, prev, z, step):
    """MALA's log acceptance ratio of the proposals from ``prev`` (T, c, d) with noise ``z``."""
    T, c, d = prev.shape
    x = prev.reshape(T * c, d)
    s_x = target.score(x)
    y = x + step * s_x + math.sqrt(2.0 * step) * z.reshape(T * c, d)
    s_y = target.score(y)
    fwd = np.sum((y - x - step * s_x) ** 2, axis=1)
    bwd = np.sum((x - y - step * s_y) ** 2, axis=1)
    return (target.logpdf(y) - target.logpdf(x) - (bwd - fwd) / (4.0 * step)).reshape(T, c)


def _q_sampler(kind, target, inputs, params):
    res = _run_sampler(kind, target, inputs, params)
    if res.diverged.any():  # pragma: no cover - the fixed cases never diverge
        raise RuntimeError(f"a golden {kind} chain diverged")
    out = {"states": res.trace}
    if kind == "mala":
        prev = np.concatenate([inputs["x0"][None], res.trace[:-1]])
        accept = np.any(res.trace != prev, axis=-1)
        log_alpha = _mala_log_alpha(target, prev, inputs["z"], float(inputs["step"]))
        # the stored decisions are those of the stored uniforms and ratios, with a margin far
        # above round-off, so that a foreign MALA reproduces every one of them
        log_u = np.log(inputs["u"])
        if not np.array_equal(accept, log_u < log_alpha) or np.min(np.abs(log_u - log_alpha)) < 1e-6:
            raise RuntimeError("MALA's accept decisions are not reproducible from the stored noise")  # pragma: no cover
        out["accept"] = accept.astype(float)
        out["log_alpha"] = log_alpha
    return out


# every array here is tiny (d <= 5): a multi-threaded BLAS only costs, and on shared cores its
# spinning threads made each 2x2 triangular solve of the sampler cases take ~8 ms (5 s per write)
@one_blas_thread
def case_values(name, spec):
    """``(inputs, quantities, meta)`` of one golden case of any kind, computed in memory.

    The same numbers :func:`write` stores for the case ``name`` with spec ``spec``
    (a value of :func:`case_specs` or :func:`extra_case_specs`);
    :mod:`refscore.testing` builds its in-memory cases from it.
    """
    kind = _spec_kind(spec)
    if kind in _MODEL_KINDS:
        model = build_model(spec, reference=True)
        if kind == "losses":
            inputs, v_sphere = _draw_inputs(name, spec, model)
            quantities = _quantities(model, inputs, v_sphere)
            extra = {"n": N_POINTS, "m": N_PROJECTIONS}
        else:
            inputs = _draw_dsm_multi(name, spec, model)
            quantities = _q_dsm_multi(model, inputs)
            extra = {"n": N_MULTI_POINTS, "levels": len(MULTI_SIGMAS)}
        meta = {"model": spec["model"], "kwargs": spec["kwargs"], "n_params": model.n_params,
                "layout": model.layout, **extra}
    else:
        target = build_target(spec)
        if kind == "ksd":
            inputs = _draw_ksd(name, spec, target)
            quantities = _q_ksd(inputs)
        else:
            inputs = _draw_sampler(name, spec, target)
            quantities = _q_sampler(kind, target, inputs, spec["params"])
        meta = {"target": spec["target"], "kwargs": spec["kwargs"], "params": spec["params"]}
    return inputs, quantities, meta


@one_blas_thread
def _compute_case(case) -> dict:
    """refscore's quantities of a loaded case, recomputed from its stored inputs."""
    if case.kind == "losses":
        return _quantities(build_model(case.spec, reference=True), case.inputs)
    if case.kind == "dsm_multi":
        return _q_dsm_multi(build_model(case.spec, reference=True), case.inputs)
    if case.kind == "ksd":
        return _q_ksd(case.inputs)
    return _q_sampler(case.kind, build_target(case.spec), case.inputs, case.spec["params"])


# ------------------------------------------------------------------ loading
@dataclass
class Case:
    """One golden case: ``name``, ``spec``, ``layout``, ``inputs``, ``quantities`` and ``kind``.

    ``spec`` is ``{"model": class name, "kwargs": {...}}`` for the model kinds
    (``losses``, ``dsm_multi``) and ``{"target": class name, "kwargs": {...},
    "params": {...}}`` for the others; ``layout`` is ``""`` for the latter.
    """

    name: str
    spec: dict
    layout: str
    inputs: dict
    quantities: dict
    kind: str = "losses"

    @property
    def model(self):
        """The refscore model of this case (model kinds), else None."""
        return build_model(self.spec) if self.kind in _MODEL_KINDS else None

    @property
    def target(self):
        """The closed-form target of this case (ksd and sampler kinds), else None."""
        return None if self.kind in _MODEL_KINDS else build_target(self.spec)

    @property
    def dim(self) -> int:
        """The dimension d of the case's points."""
        for k in ("x", "x0"):
            if k in self.inputs:
                return int(self.inputs[k].shape[-1])
        return int(self.spec["kwargs"]["dim"])  # pragma: no cover - every kind stores x or x0


@dataclass
class Golden:
    """A loaded golden directory.

    Attributes
    ----------
    directory : pathlib.Path
    manifest : dict
    cases : dict
        name -> :class:`Case` of kind ``losses`` (the per-point model cases, every
        case of a format 1 file): what the README's walkthrough and the interop
        backends iterate.
    all_cases : dict
        name -> :class:`Case` of every kind, in file order.
    """

    directory: pathlib.Path
    manifest: dict
    cases: dict = field(default_factory=dict)
    all_cases: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.all_cases:
            self.all_cases = dict(self.cases)

    @property
    def format_version(self) -> int:
        return self.manifest.get("format_version")

    def of_kind(self, kind: str) -> dict:
        """name -> :class:`Case` of one kind of :data:`CASE_KINDS`."""
        return {n: c for n, c in self.all_cases.items() if c.kind == kind}

    def keys(self, kind="all"):
        """Keys ``"<case>/<name>"`` of ``kind`` "inputs", "quantities" or "all", over every case."""
        out = []
        for c in self.all_cases.values():
            if kind in ("inputs", "all"):
                out += [f"{c.name}/{k}" for k in c.inputs]
            if kind in ("quantities", "all"):
                out += [f"{c.name}/{k}" for k in c.quantities]
        return out


def _as_dir(directory, name="directory") -> pathlib.Path:
    try:
        return pathlib.Path(os.fspath(directory))
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(directory).__name__}") from None


def _format_version(manifest):
    v = manifest.get("format_version")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def load(directory) -> Golden:
    """Read a golden directory written by :func:`write`, checking it as it goes.

    Reads every version of :data:`READABLE_VERSIONS`: a format 1 directory
    (written before the case kinds) loads as ``losses`` cases only.  Every
    problem is reported in one line naming the file and what is wrong.

    The manifest is bound to the arrays: each case written by :func:`write`
    records a ``binding``, digests (SHA-256) of its arrays in ``golden.npz``
    and of every other field of its manifest entry.  A field changed, added or
    removed after writing (a sampler ``step``, an activation, a covariance), or
    arrays replaced from another run, make the case's description wrong for
    its numbers, and loading fails naming the case and what differs.  Cases
    without a ``binding`` -- every case of a format 1 file, and of a format 2
    file written before the binding existed -- load as before, unverified
    (rewrite them with ``refscore golden --force`` to have them checked).
    The digests catch accidents, not forgery.

    Raises
    ------
    FileNotFoundError
        When the directory, ``golden.npz`` or ``manifest.json`` is missing.
    NotADirectoryError, IsADirectoryError, PermissionError
        When ``directory`` is a file, a golden file is a directory, or a file
        is not readable.
    ValueError
        When the manifest is not UTF-8 JSON, is not a refscore golden manifest,
        has a format version outside :data:`READABLE_VERSIONS`, or lacks or
        misstates a case's fields; when ``golden.npz`` is not a sound .npz
        archive (truncated, damaged, an array missing or of another shape or
        dtype than the manifest says); when a case's manifest entry or its
        arrays differ from what its ``binding`` records.
    """
    directory = _as_dir(directory)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise FileNotFoundError(f"golden directory {directory} not found (write one with refscore golden "
                                "--out DIR)") from None
    except OSError as exc:
        raise type(exc)(os_error_message(exc, directory, "golden directory")) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"golden directory {directory} is a file, not a directory (give the "
                                 "directory written by refscore golden --out DIR)")
    mpath, dpath = directory / MANIFEST_FILE, directory / DATA_FILE
    for p in (mpath, dpath):
        if not os.path.lexists(p):
            raise FileNotFoundError(f"{directory} is not a golden directory: {p.name} not found (write one with refscore golden --out DIR)")
    with open_input(mpath, "golden manifest") as f:
        raw = f.read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{mpath} is not UTF-8 text (byte {exc.start}): it is damaged") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{mpath} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{mpath} is not a refscore golden manifest (nested too deeply)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "refscore-golden":
        raise ValueError(f"{mpath} is not a refscore golden manifest (no 'format': 'refscore-golden')")
    version = _format_version(manifest)
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{mpath} has format_version {manifest.get('format_version')!r}; this refscore "
            f"({__version__}) reads format_version {' and '.join(map(str, READABLE_VERSIONS))}: rewrite it "
            "with refscore golden --force"
        )
    _check_manifest_cases(mpath, manifest, version)
    arrays = read_npz(dpath, "golden file")
    cases = {}
    for name, meta in manifest["cases"].items():
        got = {}
        for k in (*meta["inputs"], *meta["quantities"]):
            key = f"{name}/{k}"
            if key not in arrays:
                raise ValueError(f"golden file {dpath} has no array {key!r}, which {MANIFEST_FILE} lists: "
                                 "the golden files do not belong together (rewrite them with refscore golden --force)")
            a = arrays[key]
            if a.dtype != np.float64:
                raise ValueError(f"golden file {dpath}: {key!r} has dtype {a.dtype}, expected float64: it was "
                                 "changed after it was written")
            if list(a.shape) != meta["shapes"][k]:
                raise ValueError(f"golden file {dpath}: {key!r} has shape {a.shape} but {mpath} says shape "
                                 f"{tuple(meta['shapes'][k])}: the golden files do not belong together")
            got[k] = a
        _check_binding(mpath, dpath, name, meta, got)
        kind = meta.get("kind", "losses")
        if kind in _MODEL_KINDS:
            spec, layout = {"model": meta["model"], "kwargs": meta["kwargs"]}, meta["layout"]
        else:
            spec, layout = {"target": meta["target"], "kwargs": meta["kwargs"], "params": meta["params"]}, ""
        cases[name] = Case(
            name=name,
            spec=spec,
            layout=layout,
            inputs={k: got[k] for k in meta["inputs"]},
            quantities={k: got[k] for k in meta["quantities"]},
            kind=kind,
        )
    return Golden(directory=directory, manifest=manifest,
                  cases={n: c for n, c in cases.items() if c.kind == "losses"}, all_cases=cases)


# ------------------------------------------------------------------ binding
# Each case of a manifest written by this refscore carries
# ``"binding": {"arrays": digest, "fields": {field: digest}}``: a digest of the case's arrays in
# golden.npz and one of every other field of its manifest entry as written (model or target,
# kwargs, params, layout, seed, shapes...).  load() recomputes both, so that a description edited
# by hand (a step, an activation, a covariance) or arrays replaced from another run are refused
# instead of silently describing numbers computed from something else.  The digests guard against
# accidents, not forgery: anyone may recompute them.

#: hex digits kept of each SHA-256 digest (64 bits: an accidental match is out of the question)
_DIGEST_HEX = 16


def _field_digest(value) -> str:
    """Digest of a manifest field's value: its canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:_DIGEST_HEX]


def _arrays_digest(arrays: dict) -> str:
    """Digest of ``{name: array}``: names, shapes and little-endian float64 bytes, by sorted name."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.asarray(arrays[k])
        h.update(json.dumps([k, list(a.shape)]).encode("ascii"))
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()[:_DIGEST_HEX]


def _binding(meta: dict, arrays: dict) -> dict:
    """The ``"binding"`` of a case whose manifest entry is ``meta`` and whose arrays are ``arrays``."""
    return {"arrays": _arrays_digest(arrays),
            "fields": {k: _field_digest(v) for k, v in meta.items() if k != "binding"}}


def _check_binding(mpath, dpath, name, meta, arrays) -> None:
    """ValueError (one line, naming the case and what differs) unless the case's manifest entry and
    its arrays are those its ``"binding"`` was computed from.  No binding: nothing to check (a file
    written before refscore recorded one; see :func:`load`)."""
    if "binding" not in meta:
        return
    binding = meta["binding"]
    where = f"{mpath}: case {name!r}"
    if not (isinstance(binding, dict) and set(binding) == {"arrays", "fields"}
            and isinstance(binding["arrays"], str) and isinstance(binding["fields"], dict)
            and all(isinstance(v, str) for v in binding["fields"].values())):
        raise ValueError(f"{where}: 'binding' is damaged (expected {{'arrays': digest, 'fields': {{field: "
                         "digest}}}} as refscore golden writes it); rewrite the golden files with refscore "
                         "golden --force")
    recorded = binding["fields"]
    changes = [f"{k!r} was changed" for k in recorded if k in meta and _field_digest(meta[k]) != recorded[k]]
    changes += [f"{k!r} was removed" for k in recorded if k not in meta]
    changes += [f"{k!r} was added" for k in meta if k != "binding" and k not in recorded]
    if changes:
        raise ValueError(f"{where}: {', '.join(changes)} after the golden files were written, so it no longer "
                         f"describes the arrays in {dpath.name} (restore the manifest, or rewrite both files "
                         "with refscore golden --force)")
    if _arrays_digest(arrays) != binding["arrays"]:
        raise ValueError(f"{dpath}: the arrays of case {name!r} are not those {mpath.name} was written with "
                         f"({dpath.name} was replaced or changed after it was written); rewrite both files "
                         "with refscore golden --force")


#: what every case of a manifest records, and the JSON type of each field
_CASE_FIELDS = {"model": (str, "a string"), "kwargs": (dict, "an object"), "layout": (str, "a string"),
                "n_params": (int, "an integer"), "inputs": (list, "a list of names"),
                "quantities": (list, "a list of names"), "shapes": (dict, "an object of name -> shape")}
#: the same for the target kinds (ksd and samplers)
_TARGET_CASE_FIELDS = {"target": (str, "a string"), "kwargs": (dict, "an object"), "params": (dict, "an object"),
                       "inputs": (list, "a list of names"), "quantities": (list, "a list of names"),
                       "shapes": (dict, "an object of name -> shape")}


def _is_number(value, types=(int, float)) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


#: the JSON value a sampler or kernel parameter must be: (test, what it is in words)
_NUMBER = (_is_number, "a number")
_INTEGER = (lambda v: _is_number(v, (int,)), "a number (an integer)")
_NUMBER_LIST = (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(t) for t in v),
                "a list of numbers")
#: sampler and kernel parameters a target case must give
_PARAMS = {
    "ksd": {"c": _NUMBER, "beta": _NUMBER},
    "ula": {"step": _NUMBER, "steps": _INTEGER, "chains": _INTEGER, "noise_seed": _INTEGER},
    "mala": {"step": _NUMBER, "steps": _INTEGER, "chains": _INTEGER, "noise_seed": _INTEGER},
    "annealed": {"step": _NUMBER, "steps": _INTEGER, "chains": _INTEGER, "noise_seed": _INTEGER,
                 "sigmas": _NUMBER_LIST},
}


def _check_manifest_cases(mpath, manifest, version=FORMAT_VERSION) -> None:
    """ValueError (one line, naming ``mpath``, the case and the field) unless every case is well formed."""
    def bad(where, problem):
        return ValueError(f"{mpath}: {where} {problem} (rewrite the golden files with refscore golden --force)")

    def shown(value):
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    if "cases" not in manifest:
        raise bad("the manifest", "has no 'cases'")
    cases = manifest["cases"]
    if not isinstance(cases, dict) or not cases:
        raise bad("'cases'", f"must be a non-empty object of case name -> description, got {shown(cases)}")
    for name, meta in cases.items():
        where = f"case {name!r}"
        if not isinstance(meta, dict):
            raise bad(where, f"must be an object, got {shown(meta)}")
        if version == 1:
            kind = "losses"  # format 1 knew no kinds
        else:
            if "kind" not in meta:
                raise bad(where, "has no 'kind'")
            kind = meta["kind"]
            if kind not in CASE_KINDS:
                raise bad(f"{where}: 'kind'", f"must be one of {', '.join(CASE_KINDS)}, got {shown(kind)}")
        fields = _CASE_FIELDS if kind in _MODEL_KINDS else _TARGET_CASE_FIELDS
        for key, (typ, words) in fields.items():
            if key not in meta:
                raise bad(where, f"has no {key!r}")
            if not isinstance(meta[key], typ) or isinstance(meta[key], bool):
                raise bad(f"{where}: {key!r}", f"must be {words}, got {shown(meta[key])}")
        for key in ("inputs", "quantities"):
            names = CASE_KINDS[kind][key]
            listed = meta[key]
            if not all(isinstance(k, str) for k in listed) or len(set(listed)) != len(listed):
                raise bad(f"{where}: {key!r}", f"must be a list of distinct names, got {shown(listed)}")
            unknown, missing = sorted(set(listed) - set(names)), sorted(set(names) - set(listed))
            if unknown or missing:
                raise bad(f"{where}: {key!r}", f"lists {', '.join(unknown) or 'nothing unknown'} and lacks "
                          f"{', '.join(missing) or 'nothing'}: not format_version {version}'s {kind} {key}")
        shapes = meta["shapes"]
        for k in (*meta["inputs"], *meta["quantities"]):
            shape = shapes.get(k)
            if not isinstance(shape, list) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise bad(f"{where}: 'shapes'", f"must give {k!r} a list of non-negative integers, got {shown(shape)}")
        if kind not in _MODEL_KINDS:
            for key, (valid, words) in _PARAMS[kind].items():
                value = meta["params"].get(key)
                if not valid(value):
                    raise bad(f"{where}: 'params'", f"must give {key!r} {words}, got {shown(value)}")
            try:
                build_target({"target": meta["target"], "kwargs": meta["kwargs"]})
            except (TypeError, ValueError, KeyError, OverflowError, np.linalg.LinAlgError) as exc:
                reason = " ".join(str(exc).split())
                raise bad(where, f"target {meta['target']!r} with kwargs {shown(meta['kwargs'])} cannot be "
                          f"built: {reason}") from None
            continue
        try:
            model = build_model({"model": meta["model"], "kwargs": meta["kwargs"]})
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            reason = " ".join(str(exc).split())
            raise bad(where, f"model {meta['model']!r} with kwargs {shown(meta['kwargs'])} cannot be "
                      f"built: {reason}") from None
        if meta["n_params"] != model.n_params:
            raise bad(f"{where}: 'n_params'", f"is {meta['n_params']} but {meta['model']} with these kwargs "
                      f"has {model.n_params} parameters")
        if shapes["theta"] != [model.n_params]:
            raise bad(f"{where}: 'shapes'", f"gives theta shape {shapes['theta']}, expected [{model.n_params}]")


def compute(directory, cases=None) -> dict:
    """refscore's values of every quantity, recomputed from the stored inputs.

    Parameters
    ----------
    directory : path or :class:`Golden`
    cases : iterable of str, optional
        Only these case names, of any kind (default: every case of every kind).

    Returns
    -------
    dict
        ``{"<case>/<quantity>": ndarray}``, the format :func:`check` reads.
    """
    g = directory if isinstance(directory, Golden) else load(directory)
    names = list(g.all_cases) if cases is None else list(cases)
    out = {}
    for name in names:
        # the engine that wrote the golden values, so that the round trip is exact
        for k, v in _compute_case(g.all_cases[name]).items():
            out[f"{name}/{k}"] = np.asarray(v, dtype=float)
    return out


# ------------------------------------------------------------------ writing
def write(directory, *, force=False) -> pathlib.Path:
    r"""Write the golden files ``golden.npz`` and ``manifest.json`` into ``directory``.

    Every input is drawn from a fixed seed (recorded per case) and every
    quantity is computed by refscore's public API (models, :mod:`refscore.losses`,
    :mod:`refscore.metrics`, :mod:`refscore.sampling` on its NumPy backend), so
    two runs of the same refscore version write the same numbers.  The cases
    are :func:`case_specs` (kind ``losses``) and :func:`extra_case_specs`.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    force : bool, keyword-only
        Overwrite the golden files of an existing non-empty directory (other
        files in it are left alone).  Without it a non-empty directory raises.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    FileExistsError
        ``directory`` exists and is not empty, and ``force`` is False; or it is
        a file.
    """
    directory = _as_dir(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"directory {directory} exists and is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise FileExistsError(
            f"directory {directory} exists and is not empty; refusing to overwrite it "
            "(pass force=True, or --force on the command line)"
        )
    check_creatable(directory)  # before the compute, not after it

    arrays, meta = {}, {}
    for name, spec in {**case_specs(), **extra_case_specs()}.items():
        inputs, quantities, info = case_values(name, spec)
        for k, v in {**inputs, **quantities}.items():
            arrays[f"{name}/{k}"] = np.asarray(v, dtype=float)
        meta[name] = {
            "kind": _spec_kind(spec),
            **info,
            "seed": _case_seed(name),
            "inputs": list(inputs),
            "quantities": list(quantities),
            "shapes": {k: list(arrays[f"{name}/{k}"].shape) for k in (*inputs, *quantities)},
        }
        # the description as a reader will see it (JSON's lists for tuples), bound to the arrays
        described = json.loads(json.dumps(meta[name]))
        meta[name]["binding"] = _binding(described, {k: arrays[f"{name}/{k}"] for k in (*inputs, *quantities)})
    manifest = {
        "format": "refscore-golden",
        "format_version": FORMAT_VERSION,
        "refscore_version": __version__,
        "numpy_version": np.__version__,
        "keys": "golden.npz holds one array per key '<case>/<name>'; user values use the same keys",
        "conventions": CONVENTIONS,
        "kinds": {k: v["about"] for k, v in CASE_KINDS.items()},
        "inputs": INPUTS,
        "quantities": QUANTITIES,
        "kind_tables": {k: {"inputs": v["inputs"], "quantities": v["quantities"]}
                        for k, v in CASE_KINDS.items() if k != "losses"},
        "models": {
            "GaussianModel": "s(x) = -L L^T (x - mu)",
            "LinearScore": "s(x) = A x + b",
            "GaussianMixtureModel": "s(x) = grad log sum_j softmax(alpha)_j N(x; mu_j, I / tau_j), tau = exp(log_tau)",
            "MLPScore": "h_0 = x, h_l = act(W_l h_{l-1} + b_l) for hidden layers, s = W_L h_{L-1} + b_L (linear output)",
            "MLPEnergy": "E = W_L h_{L-1} + b_L (scalar, linear output, hidden layers as MLPScore), s = -grad_x E",
            "NoiseConditional": "s(x, sigma) = s_theta(x) / sigma of the wrapped model (kwargs 'model'), same theta",
            "activations": "; ".join(f"{name} {ACTIVATIONS[name].formula}" for name in ACTIVATION_NAMES),
        },
        "targets": {
            "Gaussian": "N(mean, cov): s(x) = -cov^{-1} (x - mean)",
            "GaussianMixture": "sum_j weights_j N(means_j, covs_j); annealed: p_sigma = sum_j weights_j "
            "N(means_j, covs_j + sigma^2 I)",
        },
        "default_tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOLERANCES.items()},
        "cases": meta,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"cannot create directory {directory}: {reason(exc)}") from None
    # temporary files, renamed when both are whole: an interrupted or failed write
    # leaves the previous golden files (or nothing) and no temporary file
    try:
        write_files_atomically({
            directory / DATA_FILE: lambda f: np.savez(f, **arrays),
            directory / MANIFEST_FILE: lambda f: f.write(text.encode("utf-8")),
        })
    except BaseException as exc:
        if created:
            try:
                directory.rmdir()
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise type(exc)(f"cannot write the golden files into {directory}: {reason(exc)}") from None
        raise
    return directory



# ------------------------------------------------------------------ checking
@dataclass
class CheckRow:
    """One golden key: ``status`` is PASS, FAIL, MISSING (a quantity left out of a provided case) or UNKNOWN."""

    key: str
    status: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    note: str = ""

    @property
    def case(self) -> str:
        return self.key.rsplit("/", 1)[0]

    @property
    def quantity(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass
class Diagnosis:
    """What :func:`check` makes of one failing quantity (``CheckResult.diagnosis``).

    Attributes
    ----------
    quantity : str
        The quantity name (``"dsm"``, ``"ssm_sphere_grad"``, ``"states"``...).
    cases : list of str
        The failing cases it was diagnosed over.
    ratio_median, ratio_min, ratio_max : float
        yours/golden over every element of those cases where the golden value is
        not ~0: its median and spread (NaN when nothing could be divided).
    hypothesis : str or None
        The first tested hypothesis that fits every failing case (``"factor 2"``,
        ``"factor 1/d"``, ``"factor sigma^2"``, ``"sign flip"``, ``"transposed
        Jacobian"``, ``"gradient misses the 1/2 (v^T s)^2 term"``, ``"DSM target
        -z"``...), or None when none fits.
    explanation : str
        The likely cause, in words.
    convention : str or None
        The row (``quantity`` column) of :data:`refscore.conventions.TABLE` that
        this factor or variant is, when one is.
    conversion : str or None
        The :mod:`refscore.conventions` function converting your value (or, for
        a sampler step, the stored step) into refscore's convention, when one exists.
    patterns : tuple of str
        Where the failures lie: ``"gradient only"``, ``"only d > 1"``, ``"only the
        sphere projection"``, ``"only MLPEnergy"``, ``"only activation gelu"``.
    also : tuple of str
        Other hypotheses that fit as well.
    note : str
        Why no ratio could be formed (a shape, non-finite or non-numeric value).
    """

    quantity: str
    cases: list
    ratio_median: float = float("nan")
    ratio_min: float = float("nan")
    ratio_max: float = float("nan")
    hypothesis: str | None = None
    explanation: str = ""
    convention: str | None = None
    conversion: str | None = None
    patterns: tuple = ()
    also: tuple = ()
    note: str = ""

    def line(self) -> str:
        """One line: the quantity, where it fails, the ratio, the hypothesis and the convention."""
        n = len(self.cases)
        head = f"{self.quantity}: {n} case{'s' if n != 1 else ''}"
        if self.patterns:
            head += ", " + ", ".join(self.patterns)
        parts = [head]
        if self.note:
            parts.append(self.note)
        elif self.ratio_median == self.ratio_median:
            if _same(self.ratio_min, self.ratio_max):
                parts.append(f"yours/golden = {_g4(self.ratio_median)} everywhere")
            else:
                parts.append(f"yours/golden median {_g4(self.ratio_median)}, range "
                             f"[{_g4(self.ratio_min)}, {_g4(self.ratio_max)}]")
        if self.hypothesis is None:
            tail = "-> " + (self.explanation or "no tested hypothesis fits")
        else:
            tail = f"-> {self.hypothesis}" + (f": {self.explanation}" if self.explanation else "")
        if self.convention or self.conversion:
            conv = []
            if self.convention:
                conv.append(f"convention '{self.convention}'")
            if self.conversion:
                conv.append(f"convert with refscore.conventions.{self.conversion}")
            tail += " [" + ", ".join(conv) + "]"
        if self.also:
            tail += f" (also fits: {', '.join(self.also)})"
        return "; ".join(parts) + " " + tail


def _same(a, b) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-300)


def _g4(v) -> str:
    return f"{v:.4g}"


@dataclass
class CheckResult:
    """What :func:`check` returns.

    Attributes
    ----------
    passed : bool
        True when at least one key was compared, every compared key passed, no
        key was unknown and (with ``require_all``) no quantity of a provided
        case was left out.
    rows : list of CheckRow
        One per compared key (PASS or FAIL), per unknown key (UNKNOWN), and per
        quantity left out of a provided case (MISSING; a failure only with
        ``require_all``, and never printed line by line).
    rtol, atol : float
    cases_not_provided : list of str
        Golden cases of which nothing was provided (a subset is allowed).
    ignored_inputs : int
        Provided keys naming golden *inputs*; they are not compared.
    require_all : bool
        The strict verdict: a quantity left out of a provided case fails.
    coverage : dict
        ``{"cases": (provided, total), "quantities": (compared, available),
        "keys": (compared, total), "by_kind": {kind: (provided, total)}}``;
        available quantities are those of the kinds of the provided cases.
    not_provided : dict
        ``{quantity: number of golden cases whose value was not provided}``,
        over every golden case, most frequent first.
    diagnosis : list of Diagnosis
        One per failing quantity (empty when nothing fails).
    """

    passed: bool
    rows: list
    rtol: float
    atol: float
    cases_not_provided: list
    ignored_inputs: int = 0
    require_all: bool = False
    coverage: dict = field(default_factory=dict)
    not_provided: dict = field(default_factory=dict)
    diagnosis: list = field(default_factory=list)

    @property
    def allow_missing(self) -> bool:
        """``not require_all`` (the name of format 1's option)."""
        return not self.require_all

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def failures(self) -> list:
        """Rows that fail the verdict: FAIL, UNKNOWN, and MISSING with ``require_all``."""
        bad = {"FAIL", "UNKNOWN"} | ({"MISSING"} if self.require_all else set())
        return [r for r in self.rows if r.status in bad]

    def failing_quantities(self) -> dict:
        """``{quantity name: number of cases}`` over FAIL rows, most frequent first."""
        counts = {}
        for r in self.rows:
            if r.status == "FAIL":
                counts[r.quantity] = counts.get(r.quantity, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def missing_quantities(self) -> dict:
        """``{quantity name: number of provided cases}`` over MISSING rows, most frequent first."""
        counts = {}
        for r in self.rows:
            if r.status == "MISSING":
                counts[r.quantity] = counts.get(r.quantity, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def coverage_line(self) -> str:
        """``coverage: C of N cases, Q of M quantities, K of L keys compared``."""
        cov = self.coverage
        if not cov:
            return ""
        (pc, tc), (pq, tq), (pk, tk) = cov["cases"], cov["quantities"], cov["keys"]
        return f"coverage: {pc} of {tc} cases, {pq} of {tq} quantities, {pk} of {tk} keys compared"

    def summary(self) -> str:
        n_pass, n_fail, n_unknown = self.count("PASS"), self.count("FAIL"), self.count("UNKNOWN")
        lines = [f"{n_pass + n_fail} keys compared (rtol={self.rtol:g}, atol={self.atol:g}): "
                 f"{n_pass} passed, {n_fail} failed; {n_unknown} unknown keys"
                 + (f"; {self.ignored_inputs} input keys provided and ignored" if self.ignored_inputs else "")]
        if self.coverage:
            lines.append(self.coverage_line())
            by_kind = self.coverage.get("by_kind", {})
            if len(by_kind) > 1:
                lines.append("  cases by kind: " + ", ".join(f"{k} {p} of {t}" for k, (p, t) in by_kind.items()))
        missing = self.missing_quantities()
        if self.not_provided:
            items = []
            for q, c in self.not_provided.items():
                req = f"; {missing[q]} required" if self.require_all and q in missing else ""
                items.append(f"{q} ({c} case{'s' if c != 1 else ''}{req})")
            lines.append(_wrap("not provided: ", items))
        elif self.coverage:
            lines.append("not provided: nothing (every golden quantity was compared)")
        if self.require_all and missing:
            n = sum(missing.values())
            lines.append(f"MISSING: {n} key{'s' if n != 1 else ''} of the provided cases (required by --require-all)")
        bad = self.failing_quantities()
        if bad:
            lines.append("FAIL by quantity: " + ", ".join(f"{q} ({c} cases)" for q, c in bad.items()))
        result = "RESULT: " + ("PASS" if self.passed else "FAIL")
        if self.passed and self.coverage and self.coverage["keys"][0] < self.coverage["keys"][1]:
            result += f" (on the {self.coverage['keys'][0]} keys provided; see coverage)"
        lines.append(result)
        return "\n".join(lines)

    def table(self, only_failures=False) -> str:
        """Compared and unknown keys (or only the failing ones); MISSING keys are summarised, not listed."""
        rows = [r for r in (self.failures if only_failures else self.rows) if r.status != "MISSING"]
        width = max([len("key")] + [len(r.key) for r in rows])
        head = f"{'key':<{width}}  {'max abs err':>12}  {'max rel err':>12}  status"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.key:<{width}}  {_fmt(r.max_abs):>12}  {_fmt(r.max_rel):>12}  {r.status}"
                + (f"  ({r.note})" if r.note else "")
            )
        return "\n".join(lines)

    def diagnosis_text(self) -> str:
        """The diagnosis block (one line per failing quantity), or ``""`` when nothing fails."""
        if not self.diagnosis:
            return ""
        head = "diagnosis (per failing quantity: where it fails, yours/golden, the hypothesis that fits):"
        return "\n".join([head] + ["  " + d.line() for d in self.diagnosis])

    def __str__(self):
        parts = [self.table()]
        if self.diagnosis:
            parts.append(self.diagnosis_text())
        parts.append(self.summary())
        return "\n\n".join(parts)


def _wrap(head: str, items: list, width: int = 100) -> str:
    """``head`` then ``items`` joined by commas, broken into lines between items only."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip() and line != head:
            lines.append(line)
            line = "  " + piece
        else:
            line += ("" if line in (head, "  ") else " ") + piece
    lines.append(line)
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3e}"


def _load_values(values) -> dict:
    if isinstance(values, dict):
        return dict(values)
    try:
        path = pathlib.Path(os.fspath(values))
    except TypeError:
        raise TypeError(f"values must be a dict or a path to an .npz file, got {type(values).__name__}") from None
    return read_npz(path, "values file")  # real numeric arrays only, checked before loading


def _compare(key, value, golden, rtol, atol) -> CheckRow:
    if np.iscomplexobj(value):  # never cast to its real part and passed
        return CheckRow(key, "FAIL", note="complex values (refscore's quantities are real)")
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return CheckRow(key, "FAIL", note=f"not numeric ({type(value).__name__})")
    if a.shape != golden.shape:
        return CheckRow(key, "FAIL", note=f"shape {a.shape} != golden {golden.shape}")
    if not np.all(np.isfinite(a)):
        return CheckRow(key, "FAIL", note="non-finite values")
    if a.size == 0:
        return CheckRow(key, "PASS", 0.0, 0.0)
    err = np.abs(a - golden)
    mag = np.abs(golden)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, err / mag)
    ok = bool(np.all(err <= atol + rtol * mag))
    return CheckRow(key, "PASS" if ok else "FAIL", float(err.max()), float(rel.max()))


def check(directory, values, *, rtol=None, atol=None, precision="float64", require_all=False,
          allow_missing=None, diagnose=True) -> CheckResult:
    r"""Compare a backend's values with the golden files, key by key, and diagnose what fails.

    A key passes when every element satisfies

    .. math:: |a - g| \le \text{atol} + \text{rtol}\,|g|

    (``numpy.isclose``) and the shapes agree.  Reported per key: the largest
    absolute error :math:`\max|a-g|` and the largest relative error
    :math:`\max |a-g|/|g|`.

    The verdict covers the keys provided: any subset of the cases and of their
    quantities may be given, and passes when everything given passes.  The
    result states the coverage (cases, quantities and keys compared against
    those available) and, per quantity, how many golden cases were not provided.

    Parameters
    ----------
    directory : path or :class:`Golden`
        Written by :func:`write` (any of :data:`READABLE_VERSIONS`).
    values : dict or path to an ``.npz``
        ``{"<case>/<quantity>": array}``, the keys of the golden file.  Keys
        naming inputs are ignored; other keys that are not golden keys fail
        (UNKNOWN).
    rtol, atol : float, keyword-only
        Default :data:`TOLERANCES` ``[precision]``: ``(1e-8, 1e-10)`` for
        float64, ``(1e-4, 1e-4)`` for float32 backends.
    precision : {"float64", "float32"}, keyword-only
        Picks the default tolerances.
    require_all : bool, keyword-only
        The strict verdict: every quantity of every provided case is required
        (one left out fails as MISSING).  Cases left out entirely are still allowed.
    allow_missing : bool, keyword-only
        The option of earlier versions: ``allow_missing=False`` is ``require_all=True``;
        ``True`` is the default behaviour.
    diagnose : bool, keyword-only
        Test the hypotheses of ``result.diagnosis`` on the failing quantities
        (default True).

    Returns
    -------
    CheckResult
        ``.passed``, ``.rows``, ``.coverage``, ``.not_provided``, ``.diagnosis``;
        ``str(result)`` is a table, the diagnosis and a summary.  A complex
        value in a dict fails its key (never cast to its real part).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        The golden directory or the values file cannot be read (as :func:`load`).
    ValueError
        A damaged golden directory (as :func:`load`); a values file that is not
        a sound .npz archive (truncated, damaged, an array larger than its file
        or than memory) or holds object, structured or complex arrays.  One line
        naming the file and what is wrong.
    """
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
    if allow_missing is not None:
        if require_all and allow_missing:
            raise ValueError("allow_missing=True contradicts require_all=True")
        require_all = require_all or not allow_missing
    r0, a0 = TOLERANCES[precision]
    rtol = r0 if rtol is None else float(rtol)
    atol = a0 if atol is None else float(atol)
    for name, t in (("rtol", rtol), ("atol", atol)):
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"{name} must be a finite number >= 0, got {t!r}")
    g = directory if isinstance(directory, Golden) else load(directory)
    vals = _load_values(values)

    rows, unknown, provided_cases, ignored = [], [], set(), 0
    for key in vals:
        case, _, q = str(key).rpartition("/")
        c = g.all_cases.get(case)
        if c is not None and q in c.inputs:
            ignored += 1
        elif c is None or q not in c.quantities:
            unknown.append(CheckRow(str(key), "UNKNOWN", note="not a golden key"))
        else:
            provided_cases.add(case)
    not_provided, n_keys = {}, 0
    for name, c in g.all_cases.items():
        for q, gold in c.quantities.items():
            key = f"{name}/{q}"
            n_keys += 1
            if key in vals:
                rows.append(_compare(key, vals[key], gold, rtol, atol))
                continue
            not_provided[q] = not_provided.get(q, 0) + 1
            if name in provided_cases:
                rows.append(CheckRow(key, "MISSING", note="not provided"))
    rows += unknown
    compared = [r for r in rows if r.status in ("PASS", "FAIL")]
    bad = {"FAIL", "UNKNOWN"} | ({"MISSING"} if require_all else set())
    passed = bool(compared) and not any(r.status in bad for r in rows)
    kinds = {c.kind for n, c in g.all_cases.items() if n in provided_cases} or {c.kind for c in g.all_cases.values()}
    available = {q for c in g.all_cases.values() if c.kind in kinds for q in c.quantities}
    by_kind = {}
    for name, c in g.all_cases.items():
        p, t = by_kind.get(c.kind, (0, 0))
        by_kind[c.kind] = (p + (name in provided_cases), t + 1)
    coverage = {
        "cases": (len(provided_cases), len(g.all_cases)),
        "quantities": (len({r.quantity for r in compared}), len(available)),
        "keys": (len(compared), n_keys),
        "by_kind": by_kind,
    }
    order = {q: i for i, q in enumerate(not_provided)}
    not_provided = dict(sorted(not_provided.items(), key=lambda kv: (-kv[1], order[kv[0]])))
    result = CheckResult(
        passed=passed, rows=rows, rtol=rtol, atol=atol,
        cases_not_provided=[n for n in g.all_cases if n not in provided_cases],
        ignored_inputs=ignored, require_all=require_all, coverage=coverage, not_provided=not_provided,
    )
    if diagnose and any(r.status == "FAIL" for r in rows):
        from ._golden_diagnosis import diagnose as _diagnose

        result.diagnosis = one_blas_thread(_diagnose)(g, vals, rows, rtol, atol)
    return result
