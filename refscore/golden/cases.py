r"""The golden case table: per case kind, its inputs, its quantities and how refscore computes them.

:data:`KINDS` is the one table every other part of :mod:`refscore.golden` reads:
the writer (which cases exist, what each stores), the loader (what a manifest
must list), :func:`refscore.golden.compute` (how a quantity is recomputed from
stored inputs) and the diagnosis (which quantities are losses, of which loss
and projection).  The ``losses`` kind is generated from the loss registry
:data:`refscore.losses.LOSSES` and the projection registry
:data:`refscore.losses.PROJECTIONS`: a per-point loss added to the registry gets
its value and gradient in every ``losses`` case, with no change here unless it
takes an input no other loss takes (then one row of :data:`STORED_LOSS_INPUTS`).  The
sampler kinds are generated from the sampler registry
:data:`refscore.sampling.samplers.SAMPLERS` (:func:`sampler_kind`): a sampler
added there gets its cases on the closed-form targets, its inputs drawn and its
quantities computed as its properties ``noise_levels``, ``has_accept_test`` and ``splitting``
say.  The diffusion kinds (format 4) read the registries of :mod:`refscore.diffusion`: its
schedules, its parametrisations and its samplers (:func:`diffusion_sampler_kind`: a sampler added to
:data:`refscore.diffusion.samplers.SAMPLERS` gets a kind ``diffusion_<name>``, whose cases are its rows of
:data:`DIFFUSION_SAMPLER_CASES`, by default its default options on EDM's Karras grid), and run the samplers on the exact denoiser with the stored noise
(:func:`diffusion_steps`, which the diagnosis also runs from your states).

Every input is drawn from ``default_rng([BASE_SEED, crc32(case name)])`` in a
fixed order, so two runs of one refscore version give the same numbers, and a
loss or projection added to a registry draws after the existing inputs,
leaving them unchanged.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import losses
from ..losses import LOSSES, PER_POINT_LOSSES, PROJECTIONS
from ..models import GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy, MLPScore, NoiseConditional
from ..models.activations import ACTIVATIONS
from ..models.mlp_base import one_blas_thread
from ..diffusion import coefficients as diffusion_co
from ..diffusion import likelihood as diffusion_likelihood
from ..diffusion import tables as diffusion_tables
from ..diffusion.coefficients import StepContext
from ..diffusion.denoiser import Denoiser
from ..diffusion.parametrisations import PARAMETRISATIONS, edm_preconditioning
from ..diffusion.samplers import SAMPLERS as DIFFUSION_SAMPLERS
from ..diffusion.schedules import EDM, SCHEDULES, VPDiscrete
from ..distributions import Gaussian
from ..noise import NoiseOrigin
from ..sampling.samplers import SAMPLERS

__all__ = [
    "TOLERANCES",
    "CONVENTIONS",
    "INPUTS",
    "QUANTITIES",
    "CASE_KINDS",
    "LossInput",
    "STORED_LOSS_INPUTS",
    "LOSS_QUANTITIES",
    "CaseKind",
    "KINDS",
    "case_specs",
    "extra_case_specs",
    "case_values",
    "case_inputs",
    "case_seed",
    "projections_of",
    "projection_key",
    "compute_case",
    "build_model",
    "build_target",
    "run_sampler",
    "iterate_steps",
    "iterate_kinetic_steps",
    "sampler_kind",
    "mala_ratio_parts",
    "DIFFUSION_KINDS",
    "DIFFUSION_SCHEDULES",
    "GRID_RULES",
    "COEFFICIENT_TABLES",
    "DIFFUSION_SAMPLER_CASES",
    "N_DIFFUSION_CHAINS",
    "DiffusionSubject",
    "build_schedule",
    "build_diffusion",
    "diffusion_grid",
    "churn_table",
    "diffusion_kind_name",
    "diffusion_sampler_of",
    "diffusion_options",
    "diffusion_noise_blocks",
    "diffusion_steps",
    "x0_quantities",
    "diffusion_sampler_kind",
]

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
#: dsm_multi: the weightings lambda(sigma) of refscore.losses.dsm_multi, one quantity each
MULTI_WEIGHTINGS = ("sigma2", "none")
#: ksd: sample size
N_KSD_POINTS = 8
#: samplers: chains and steps (annealed: steps per level)
N_CHAINS = 4

#: default tolerances ``(rtol, atol)`` of :func:`refscore.golden.check`: elementwise
#: ``|value - golden| <= atol + rtol * |golden|`` (numpy.isclose).  float64: an
#: independent float64 implementation (JAX, PyTorch autograd) differs from
#: refscore by summation order only, measured at most 3e-14 absolute on these
#: O(1)-O(30) quantities; 1e-8 leaves six digits of margin yet catches any
#: wrong constant.  float32: PyTorch autograd in float32 differs by at most
#: 5e-6 absolute (unit round-off 6e-8 amplified by two levels of
#: differentiation), so 1e-4 leaves a factor 20 (tests/test_interop.py).
TOLERANCES = {"float64": (1e-8, 1e-10), "float32": (1e-4, 1e-4)}

#: the conventions in words, recorded in every manifest
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
    "kinetic_langevin": "kinetic Langevin, unit mass: B_tau p <- p + tau s(q), A_tau q <- q + tau p, O_tau p <- c p + "
    "sqrt(1 - c^2) xi, c = exp(-friction tau); a letter appearing k times in the splitting's word runs for "
    "tau = step / k (BAOAB: B_{h/2} A_{h/2} O_h A_{h/2} B_{h/2}); the first O of a step takes xi[t, j, :d], "
    "OBABO's second xi[t, j, d:]; evaluated as p + tau * s, q + tau * p, c * p + sqrt(-expm1(-2 friction tau)) * xi",
    "sampler_noise": "z[t, j] = refscore.noise.normal(noise_seed, chain j, step t, d) (Philox4x32-10 and "
    "Box-Muller, the same on every refscore backend); MALA's u[t, j] = refscore.noise.uniform(noise_seed, j, t), "
    "accept iff log u < log_alpha; annealed Langevin counts t globally, t = i T + j at level i",
    "theta": "one flat float64 vector per case; its layout in words is the case's 'layout'",
}


# ------------------------------------------------------------------ models and targets
_MODEL_CLASSES = {
    "GaussianModel": GaussianModel,
    "LinearScore": LinearScore,
    "GaussianMixtureModel": GaussianMixtureModel,
    "MLPScore": MLPScore,
    "MLPEnergy": MLPEnergy,
}
#: models wrapping a model spec (``kwargs: {"model": inner spec}``)
_WRAPPER_CLASSES = {"NoiseConditional": NoiseConditional}


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
    from ..distributions import Gaussian, GaussianMixture

    classes = {"Gaussian": Gaussian, "GaussianMixture": GaussianMixture}
    name = spec.get("target") if isinstance(spec, dict) else None
    if name not in classes:
        raise ValueError(f"spec['target'] must be one of {sorted(classes)}, got {name!r}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"spec['kwargs'] must be an object, got {kwargs!r}")
    return classes[name](**{k: np.asarray(v, dtype=float) for k, v in kwargs.items()})


def case_seed(name: str) -> list:
    """The seed of a case's draws: ``[BASE_SEED, crc32(name)]``."""
    return [BASE_SEED, zlib.crc32(name.encode())]


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


def _scalar_or_array(a):
    """A stored 0-d input as the Python float refscore's functions were called with."""
    return float(a) if np.ndim(a) == 0 else a


# ------------------------------------------------------------------ the losses kind, from the registries
@dataclass(frozen=True)
class LossInput:
    """How one input of the per-point losses of :data:`refscore.losses.LOSSES` is stored in a ``losses`` case.

    Attributes
    ----------
    key : str
        Its key in the case (``"<case>/<key>"`` in golden.npz).
    about : str
        Its meaning, for the manifest (:data:`INPUTS`).
    draw : callable
        ``draw(rng, n, d)``: its value for ``n`` points of dimension ``d``.
    """

    key: str
    about: str
    draw: Callable


#: the inputs the per-point losses take beyond ``(model, theta, x)`` (by their name in
#: :data:`refscore.losses.LOSSES`), in draw order; the projections ``v`` come from
#: :data:`refscore.losses.PROJECTIONS` instead
STORED_LOSS_INPUTS = {
    "target_score": LossInput("target", "(n, d) fixed target scores", lambda rng, n, d: rng.standard_normal((n, d))),
    "eps": LossInput("eps", "(n, d) standard normal draws", lambda rng, n, d: rng.standard_normal((n, d))),
    # != 1 so that a missing 1/sigma shows
    "sigma": LossInput("sigma", "() the noise level", lambda rng, n, d: np.array(rng.uniform(0.3, 0.9))),
}
#: the name the registry's sliced losses give their projections
_PROJECTED = "v"
#: the projection kind stored as its raw normal draws (its projections are a quantity to check)
_RAW_KIND = "sphere"

#: the per-point losses of the registry, the sliced ones (taking projections) last
_PER_POINT = tuple(LOSSES[name] for name in PER_POINT_LOSSES)  # a loss built from model primitives has no kernel kind
_PLAIN = tuple(spec for spec in _PER_POINT if _PROJECTED not in spec.inputs)
_SLICED = tuple(spec for spec in _PER_POINT if _PROJECTED in spec.inputs)


def projection_key(kind: str) -> str:
    """The key of a ``losses`` case's projections of kind ``kind`` (``v_gaussian``; the sphere's raw draws
    ``z_sphere``)."""
    return f"z_{kind}" if kind == _RAW_KIND else f"v_{kind}"


def projections_of(inputs, kind) -> np.ndarray:
    """The ``(m, n, d)`` projections of kind ``kind`` of a ``losses`` case with inputs ``inputs``.

    Every kind is stored as its projections except the sphere, stored as its raw normal draws
    ``z_sphere`` and normalised here as refscore's :func:`~refscore.losses.projections` does.
    """
    if kind == _RAW_KIND:
        z = inputs[projection_key(kind)]
        return math.sqrt(z.shape[-1]) * z / np.linalg.norm(z, axis=-1, keepdims=True)
    return inputs[projection_key(kind)]


def _loss_input_keys(spec) -> list:
    return [STORED_LOSS_INPUTS[name].key for name in spec.inputs if name != _PROJECTED]


def _losses_inputs() -> dict:
    out = {"theta": "(P,) model parameters in the case's layout", "x": "(n, d) points",
           "u": "(n, d) tangent directions for jvp"}
    for spec in _PLAIN:
        unknown = [name for name in spec.inputs if name not in STORED_LOSS_INPUTS]
        if unknown:
            raise ValueError(f"loss {spec.name!r} of refscore.losses.LOSSES takes {', '.join(unknown)}, which "
                             "refscore.golden.cases.STORED_LOSS_INPUTS does not draw: give it a row there")
    for name, inp in STORED_LOSS_INPUTS.items():
        users = [spec.name for spec in _PLAIN if name in spec.inputs]
        if users:
            out[inp.key] = f"{inp.about} for {' / '.join(users)}"
    for kind in PROJECTION_KINDS:
        users = " / ".join(f"{spec.name}_{kind}" for spec in _SLICED)
        if kind == _RAW_KIND:
            out[projection_key(kind)] = (f"(m, n, d) standard normal draws; v_{kind} = sqrt(d) z / ||z|| "
                                          "(a quantity to check)")
        else:
            out[projection_key(kind)] = f"(m, n, d) {kind} projections for {users}"
    return out


def _losses_quantities() -> dict:
    q = {
        "score": "(n, d) s_theta(x)",
        "jacobian": "(n, d, d) [k, i, j] = d s_i / d x_j at x_k",
        "trace": "(n,) tr grad_x s_theta(x_k), exact",
        "jvp": "(n, d) grad_x s_theta(x_k) u_k",
        f"v_{_RAW_KIND}": f"(m, n, d) sqrt(d) {projection_key(_RAW_KIND)} / ||{projection_key(_RAW_KIND)}|| "
                          "(norm over the last axis)",
    }
    for spec in _PLAIN:
        q[spec.name] = f"() {spec.name}({', '.join(['x', *_loss_input_keys(spec)])})"
        q[f"{spec.name}_grad"] = f"(P,) d {spec.name} / d theta"
    for kind in PROJECTION_KINDS:
        for spec in _SLICED:
            q[f"{spec.name}_{kind}"] = f"() {spec.name}(x, v_{kind})"
            q[f"{spec.name}_{kind}_grad"] = f"(P,) d {spec.name}_{kind} / d theta"
    return q


#: inputs of every ``losses`` case, and what they mean
INPUTS = _losses_inputs()
#: quantities of every ``losses`` case (what :func:`refscore.golden.check` compares), and what they mean
QUANTITIES = _losses_quantities()
#: the loss quantities of every kind: quantity (without ``_grad``) -> ``(loss name, projection kind or None)``
LOSS_QUANTITIES = {
    **{spec.name: (spec.name, None) for spec in _PLAIN},
    **{f"{spec.name}_{kind}": (spec.name, kind) for kind in PROJECTION_KINDS for spec in _SLICED},
    **{f"dsm_multi_{w}": ("dsm_multi", None) for w in MULTI_WEIGHTINGS},
}


def _losses_specs() -> dict:
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


def _draw_losses(name, spec, model):
    rng = np.random.default_rng(case_seed(name))
    d, n, m = model.dim, N_POINTS, N_PROJECTIONS
    inputs = {"theta": _draw_theta(model, spec, rng), "x": rng.standard_normal((n, d)),
              "u": rng.standard_normal((n, d))}
    for inp in STORED_LOSS_INPUTS.values():  # in draw order: an input added to the table draws after the others
        if inp.key in INPUTS:
            inputs[inp.key] = inp.draw(rng, n, d)
    for kind in PROJECTION_KINDS:
        if kind == _RAW_KIND:
            # the raw draws that refscore's projections() normalises (it draws them the same way)
            inputs[projection_key(kind)] = rng.standard_normal((m, n, d))
        else:
            inputs[projection_key(kind)] = losses.projections(rng, (m, n, d), kind=kind)
    return inputs


def _compute_losses(model, inputs, spec=None):
    """Every quantity of :data:`QUANTITIES` from refscore's public API."""
    th, x = inputs["theta"], inputs["x"]
    v_raw = projections_of(inputs, _RAW_KIND)
    out = {
        "score": model.score(th, x),
        "jacobian": model.score_jacobian(th, x),
        "trace": model.score_trace(th, x),
        "jvp": model.score_jvp(th, x, inputs["u"]),
        f"v_{_RAW_KIND}": v_raw,
    }
    # a file written before a loss or projection kind was registered lacks its inputs: its
    # quantities are not computed (the file does not hold them either)
    for loss in _PLAIN:
        if all(STORED_LOSS_INPUTS[name].key in inputs for name in loss.inputs):
            args = {name: _scalar_or_array(inputs[STORED_LOSS_INPUTS[name].key]) for name in loss.inputs}
            out[loss.name], out[f"{loss.name}_grad"] = loss(model, th, x, **args, grad=True)
    for kind in PROJECTION_KINDS:
        if projection_key(kind) in inputs:
            v = projections_of(inputs, kind)
            for loss in _SLICED:
                key = f"{loss.name}_{kind}"
                out[key], out[f"{key}_grad"] = loss(model, th, x, **{_PROJECTED: v}, grad=True)
    return {k: np.asarray(out[k], dtype=float) for k in QUANTITIES if k in out}


# ------------------------------------------------------------------ dsm_multi
def _dsm_multi_specs() -> dict:
    specs = {}
    for d in DIMS:
        inner = {"model": "MLPScore", "kwargs": {"dim": d, "hidden": [5], "activation": "tanh"}}
        specs[f"dsm_multi_mlpscore_tanh_d{d}"] = {"kind": "dsm_multi", "model": "NoiseConditional",
                                                  "kwargs": {"model": inner}}
    specs["dsm_multi_linear_d2"] = {"kind": "dsm_multi", "model": "NoiseConditional",
                                    "kwargs": {"model": {"model": "LinearScore", "kwargs": {"dim": 2}}}}
    return specs


def _draw_dsm_multi(name, spec, model):
    rng = np.random.default_rng(case_seed(name))
    n, d = N_MULTI_POINTS, model.dim
    sigmas = np.array(MULTI_SIGMAS)
    labels = rng.permutation(np.arange(n) % len(sigmas))
    return {
        "theta": _draw_theta(model.model, spec["kwargs"]["model"], rng),
        "x": rng.standard_normal((n, d)),
        "sigmas": sigmas,
        "labels": labels.astype(float),
        "sigma_points": sigmas[labels],
        "eps": rng.standard_normal((n, d)),
    }


def _compute_dsm_multi(model, inputs, spec=None):
    th, x, sigmas, eps = inputs["theta"], inputs["x"], inputs["sigmas"], inputs["eps"]
    labels = np.rint(inputs["labels"]).astype(np.int64)
    sig = sigmas[labels]
    out = {"score_noised": model.score(th, x + sig[:, None] * eps, sig)}
    loss = LOSSES["dsm_multi"]
    for weighting in MULTI_WEIGHTINGS:
        value, grad = loss(model, th, x, sigmas, labels, eps, weighting=weighting, grad=True)
        out[f"dsm_multi_{weighting}"] = np.array(value)
        out[f"dsm_multi_{weighting}_grad"] = grad
    return out


# ------------------------------------------------------------------ closed-form targets: ksd and samplers
#: the closed-form targets of the ksd and sampler cases
_TARGETS = {
    "gaussian_d2": {"target": "Gaussian", "kwargs": {"mean": [0.5, -1.0], "cov": [[1.5, 0.4], [0.4, 0.8]]}},
    "mixture_d1": {"target": "GaussianMixture", "kwargs": {
        "weights": [0.3, 0.7], "means": [[-1.5], [1.0]], "covs": [[[0.5]], [[1.2]]]}},
    "mixture_d2": {"target": "GaussianMixture", "kwargs": {
        "weights": [0.4, 0.6], "means": [[-1.0, -1.0], [1.5, 1.0]],
        "covs": [[[0.6, 0.0], [0.0, 0.9]], [[1.0, 0.3], [0.3, 0.7]]]}},
}


def _ksd_specs() -> dict:
    kernels = {"gaussian_d2": (1.0, -0.5), "mixture_d1": (0.5, -0.3), "mixture_d2": (2.0, -0.8)}
    return {f"ksd_imq_{t}": {"kind": "ksd", **_TARGETS[t], "params": {"kernel": "imq", "c": c, "beta": beta}}
            for t, (c, beta) in kernels.items()}


def _draw_ksd(name, spec, target):
    rng = np.random.default_rng(case_seed(name))
    # a sample that is NOT from the target (shifted and wider), so that the discrepancy is not ~0
    x = 0.3 + 1.2 * rng.standard_normal((N_KSD_POINTS, target.dim))
    p = spec["params"]
    return {"x": x, "score": target.score(x), "c": np.array(float(p["c"])), "beta": np.array(float(p["beta"]))}


def _compute_ksd(target, inputs, spec=None):
    from .. import metrics

    x, s = inputs["x"], inputs["score"]
    c, beta = float(inputs["c"]), float(inputs["beta"])
    K = metrics.imq_stein_kernel(x, x, s, s, c=c, beta=beta)
    return {"stein_kernel": K, "ksd_u": np.array(metrics.ksd(x, s, c=c, beta=beta)), "ksd_v": np.array(K.mean())}


def _sampler_specs(sampler) -> Callable:
    """The cases of a sampler of :data:`refscore.sampling.samplers.SAMPLERS`, one per target: its
    golden ``params``, ``N_CHAINS`` chains and the noise seed ``100 + 10 i + j`` for the i-th
    sampler of the registry and the j-th target."""
    def specs() -> dict:
        i = list(SAMPLERS).index(sampler.name)
        return {f"{sampler.name}_{t}": {"kind": sampler.name, **_TARGETS[t], "params": {
            **sampler.params, "chains": N_CHAINS, "noise_seed": 100 + 10 * i + j}}
            for j, t in enumerate(_TARGETS)}
    return specs


def _levels(sampler, params) -> int:
    return len(params["sigmas"]) if sampler.noise_levels else 1


def _draw_sampler(name, spec, target):
    from .. import noise

    rng = np.random.default_rng(case_seed(name))
    p, sampler = spec["params"], SAMPLERS[spec["kind"]]
    c, d = int(p["chains"]), target.dim
    inputs = {"x0": 1.5 * rng.standard_normal((c, d))}
    if sampler.splitting is not None:
        inputs["v0"] = rng.standard_normal((c, d))  # N(0, m I) momenta, m = 1
    if sampler.noise_levels:
        inputs["sigmas"] = np.array(p["sigmas"], dtype=float)
    inputs["step"] = np.array(float(p["step"]))
    if sampler.splitting is not None:
        inputs["friction"] = np.array(float(p["friction"]))
    T, seed = _levels(sampler, p) * int(p["steps"]), int(p["noise_seed"])
    chains, steps = np.arange(c)[None, :], np.arange(T)[:, None]
    if sampler.splitting is not None:
        inputs["xi"] = noise.normal(seed, chains, steps, 2 * d)  # every splitting: 2 d normals per step
    else:
        inputs["z"] = noise.normal(seed, chains, steps, d)
    if sampler.has_accept_test:
        inputs["u"] = noise.uniform(seed, chains, steps)
    return inputs


def iterate_steps(kind, target, inputs, *, step=None, noise_factor=1.0, level_steps=True) -> np.ndarray:
    """The states ``(T, c, d)`` of the pure step of ``SAMPLERS[kind]`` iterated from a case's stored
    ``x0`` over its stored noise, each step fed the keyword arguments of its ``inputs``.

    Parameters
    ----------
    kind : a name of :data:`refscore.sampling.samplers.SAMPLERS`
    target : a closed-form target (:func:`build_target`)
    inputs : dict
        The case's inputs.
    step : float, optional
        This step instead of the stored one.
    noise_factor : float
        The stored noise ``z`` times this.
    level_steps : bool
        ``False`` (a sampler with ``noise_levels``): every level is passed as the only one, so that
        it runs at the stored step instead of its own ``step sigma_l^2 / sigma_L^2``.
    """
    sampler = SAMPLERS[kind]
    if sampler.splitting is not None:
        raise ValueError(f"{kind} is kinetic Langevin: iterate it with iterate_kinetic_steps")
    step = float(inputs["step"]) if step is None else float(step)
    z = inputs["z"]
    if sampler.noise_levels:
        p = target.perturbed()
        sigmas = tuple(float(s) for s in inputs["sigmas"])
        levels = [{"score": lambda y, s=s: p.score(y, s), "sigma": s, "sigmas": sigmas if level_steps else (s,)}
                  for s in sigmas]
    else:
        levels = [{"score": target.score}]
    per_level = z.shape[0] // len(levels)
    x = np.array(inputs["x0"], dtype=float)
    out = np.empty_like(z)
    for i, given in enumerate(levels):
        if sampler.has_accept_test:
            given["log_prob"] = target.logpdf
        for t in range(i * per_level, (i + 1) * per_level):
            args = {**given, "step": step, "z": noise_factor * z[t]}
            if sampler.has_accept_test:
                args["u"] = inputs["u"][t]
            x = sampler.step(x, **{k: args[k] for k in sampler.inputs})
            x = x[0] if sampler.has_accept_test else x
            out[t] = x
    return out


def iterate_kinetic_steps(kind, target, inputs, *, step=None, friction=None) -> tuple:
    """``(states, momenta)``, each ``(T, c, d)``, of the pure step of a kinetic ``SAMPLERS[kind]`` iterated
    from a case's stored ``x0`` and ``v0`` over its stored noise ``xi``, each step fed the keyword
    arguments of its ``inputs`` (``step`` and ``friction``: these instead of the stored ones)."""
    sampler = SAMPLERS[kind]
    if sampler.splitting is None:
        raise ValueError(f"{kind} is not kinetic Langevin: iterate it with iterate_steps")
    given = {"score": target.score, "step": float(inputs["step"]) if step is None else float(step),
             "friction": float(inputs["friction"]) if friction is None else float(friction)}
    x, v = np.array(inputs["x0"], dtype=float), np.array(inputs["v0"], dtype=float)
    states = np.empty(inputs["xi"].shape[:-1] + (x.shape[-1],))
    momenta = np.empty_like(states)
    for t, xi in enumerate(inputs["xi"]):
        x, v = sampler.step(x, **{k: {**given, "v": v, "xi": xi}[k] for k in sampler.inputs})
        states[t], momenta[t] = x, v
    return states, momenta


def _run(sampler, target, inputs, params, step):
    """``({quantity: (T, c, d)}, diverged (c,))`` of a sampler case at ``step``: its states, and its
    momenta for kinetic Langevin (see :func:`run_sampler`)."""
    if sampler.run is None:
        if sampler.splitting is not None:
            states, momenta = iterate_kinetic_steps(sampler.name, target, inputs, step=step)
            return {"states": states, "momenta": momenta}, ~np.all(np.isfinite(states), axis=(0, 2))
        states = iterate_steps(sampler.name, target, inputs, step=step)
        return {"states": states}, ~np.all(np.isfinite(states), axis=(0, 2))
    opts = {"seed": int(params["noise_seed"]), "backend": "numpy", "record": 1}
    if sampler.splitting is not None:
        res = sampler.run(target, inputs["x0"], step, int(params["steps"]), float(inputs["friction"]),
                          splitting=sampler.splitting, v0=inputs["v0"], **opts)
        return {"states": res.trace, "momenta": res.momentum_trace}, res.diverged
    opts["progress"] = False
    if sampler.noise_levels:
        res = sampler.run(target.perturbed(), inputs["x0"], inputs["sigmas"], step, int(params["steps"]), **opts)
    else:
        res = sampler.run(target, inputs["x0"], step, int(params["steps"]), **opts)
    return {"states": res.trace}, res.diverged


def run_sampler(kind, target, inputs, params, step=None) -> np.ndarray:
    """refscore's states of a sampler case from its stored ``x0``, with the case's noise seed: the
    sampler's public whole-run function on the NumPy backend (its step iterated over the stored
    noise, :func:`iterate_steps`, for a sampler of :data:`~refscore.sampling.samplers.SAMPLERS`
    without one).

    Parameters
    ----------
    kind : a name of :data:`refscore.sampling.samplers.SAMPLERS` ("ula", "mala", "annealed", "kinetic_baoab"...)
    target : a closed-form target (:func:`build_target`)
    inputs : dict
        The case's inputs (``x0``, ``step``; ``sigmas`` for annealed Langevin; ``v0``, ``friction`` for
        kinetic Langevin).
    params : dict
        The case's parameters (``steps``, ``noise_seed``).
    step : float, optional
        Run at this step instead of the stored one (the diagnosis tries step conventions).

    Returns
    -------
    ndarray (T, c, d)
        Every state: ``states[t]`` after step ``t`` (a diverged chain stays at its last state).
    """
    step = float(inputs["step"]) if step is None else step
    return _run(SAMPLERS[kind], target, inputs, params, step)[0]["states"]


def mala_ratio_parts(target, prev, z, step):
    """``(log p(y) - log p(x), log_alpha)`` of MALA's proposals ``y`` from the states ``prev`` (T, c, d)
    with the noise ``z``: the proposal and the ratio of :mod:`refscore.sampling.steps`, shape (T, c)."""
    from ..sampling.steps import langevin_step, mala_log_alpha

    T, c, d = prev.shape
    x = prev.reshape(T * c, d)
    s_x = target.score(x)
    y = langevin_step(x, s_x, step, z.reshape(T * c, d))
    logp_x, logp_y = target.logpdf(x), target.logpdf(y)
    log_alpha = mala_log_alpha(x, y, s_x, target.score(y), logp_x, logp_y, step)
    return (logp_y - logp_x).reshape(T, c), log_alpha.reshape(T, c)


def _accept_test(sampler, target, inputs, states):
    """``(accept, log_alpha)`` (T, c) of a sampler with an accept test: its step at every state
    before a step (all at once), the decisions read off the states."""
    from ..sampling.steps import mala_accept

    prev = np.concatenate([inputs["x0"][None], states[:-1]])
    T, c, d = prev.shape
    args = {"score": target.score, "log_prob": target.logpdf, "step": float(inputs["step"]),
            "z": inputs["z"].reshape(T * c, d), "u": inputs["u"].reshape(T * c)}
    log_alpha = sampler.step(prev.reshape(T * c, d), **{k: args[k] for k in sampler.inputs})[1].reshape(T, c)
    accept = np.any(states != prev, axis=-1)
    # the stored decisions are those of the stored uniforms and ratios, with a margin far
    # above round-off, so that a foreign sampler (whatever its log) reproduces every one of them
    margin = np.min(np.abs(np.log(inputs["u"]) - log_alpha))
    if not np.array_equal(accept, mala_accept(log_alpha, inputs["u"])) or margin < 1e-6:
        raise RuntimeError(  # pragma: no cover
            f"{sampler.name}'s accept decisions are not reproducible from the stored noise")
    return accept.astype(float), log_alpha


def _compute_sampler(target, inputs, spec):
    sampler = SAMPLERS[spec["kind"]]
    out, diverged = _run(sampler, target, inputs, spec["params"], float(inputs["step"]))
    if diverged.any():  # pragma: no cover - the fixed cases never diverge
        raise RuntimeError(f"a golden {sampler.name} chain diverged")
    if sampler.has_accept_test:
        out["accept"], out["log_alpha"] = _accept_test(sampler, target, inputs, out["states"])
    return out


# ------------------------------------------------------------------ diffusion: schedules, the exact denoiser, samplers
# The diffusion kinds read the registries of refscore.diffusion: the schedules (SCHEDULES), the
# parametrisations (PARAMETRISATIONS) and the samplers (DIFFUSION_SAMPLERS); a sampler added there gets
# its kind "diffusion_<name>" here (one denoiser call per step, unless _X0_LAYOUT says otherwise).

#: the schedules of the diffusion cases: ``{"name": key of refscore.diffusion.schedules.SCHEDULES, "kwargs"}``
DIFFUSION_SCHEDULES = {
    "edm": {"name": "edm", "kwargs": {}},  # sigma in [0.002, 80], rho = 7, sigma_data = 0.5
    "ddpm_linear": {"name": "vp_discrete", "kwargs": {}},  # diffusers DDPMScheduler defaults: 1000 linear betas
    "sd": {"name": "vp_discrete", "kwargs": {"beta_start": 0.00085, "beta_end": 0.012,
                                             "beta_schedule": "scaled_linear"}},  # Stable Diffusion's table
    "sd_zero_snr": {"name": "vp_discrete", "kwargs": {"beta_start": 0.00085, "beta_end": 0.012,
                                                      "beta_schedule": "scaled_linear",
                                                      "rescale_betas_zero_snr": True}},
    "score_sde_ve": {"name": "ve", "kwargs": {"sigma_min": 0.01, "sigma_max": 50.0}},
    "score_sde_vp": {"name": "vp", "kwargs": {"beta_min": 0.1, "beta_max": 20.0}},
    "subvp": {"name": "subvp", "kwargs": {"beta_min": 0.1, "beta_max": 20.0}},
    "flow": {"name": "flow", "kwargs": {}},
}

#: grid rules: how a case's time grid follows from its ``params["grid"]``
GRID_RULES = {
    "karras": "EDM.grid(steps): Karras et al. (2022) eq. (5), sigma_max .. sigma_min in steps points (rho), then 0",
    "timesteps": "the integer timesteps of refscore.diffusion.diffusion_tables.inference_timesteps(steps, T, spacing, "
                 "steps_offset) as floats, largest first, then -1 (the clean end, alpha_bar = 1)",
    "linspace": "numpy.linspace(start, stop, points): score_sde's linspace(T, eps, N) and flow grids",
}


def build_schedule(spec: dict):
    """The schedule of a diffusion spec ``{"name": key of SCHEDULES, "kwargs": {...}}``."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in SCHEDULES:
        raise ValueError(f"schedule['name'] must be one of {sorted(SCHEDULES)}, got {name!r}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"schedule['kwargs'] must be an object, got {kwargs!r}")
    return SCHEDULES[name](**kwargs)


def diffusion_grid(schedule, grid: dict) -> np.ndarray:
    """The times of a grid rule of :data:`GRID_RULES` on ``schedule``, largest first."""
    rule = grid.get("rule") if isinstance(grid, dict) else None
    if rule == "karras":
        if not isinstance(schedule, EDM):
            raise ValueError(f"grid rule 'karras' needs the EDM schedule, got {schedule!r}")
        return schedule.grid(grid["steps"])
    if rule == "timesteps":
        if not isinstance(schedule, VPDiscrete):
            raise ValueError(f"grid rule 'timesteps' needs a VPDiscrete schedule, got {schedule!r}")
        ts = diffusion_tables.inference_timesteps(grid["steps"], schedule.num_train_timesteps, grid["spacing"],
                                        grid.get("steps_offset", 0))
        return np.append(ts.astype(float), -1.0)
    if rule == "linspace":
        return np.linspace(float(grid["start"]), float(grid["stop"]), int(grid["points"]))
    raise ValueError(f"params['grid']['rule'] must be one of {sorted(GRID_RULES)}, got {rule!r}")


@dataclass(frozen=True)
class DiffusionSubject:
    """What a diffusion case's spec builds: its schedule, its data law (None for the schedule-only kinds)
    and the exact denoiser of that data under that schedule."""

    schedule: object
    data: object = None

    @property
    def denoiser(self):
        if self.data is None:
            raise ValueError("this diffusion case has no data law, hence no denoiser")
        return Denoiser(self.data, self.schedule)


def build_diffusion(spec: dict) -> DiffusionSubject:
    """The :class:`DiffusionSubject` of a diffusion case spec ``{"schedule", "data", "params"}``."""
    data = spec.get("data")
    return DiffusionSubject(build_schedule(spec.get("schedule")), None if data is None else build_target(data))


def _diffusion_start(rng, subject, t0, n):
    """``n`` points of dimension d at time ``t0``: alpha x0 + sigma eps with x0 near the data (not exactly from it)."""
    data, sch = subject.data, subject.schedule
    d = data.dim
    centre = data.mean if isinstance(data, Gaussian) else np.average(data.means, axis=0, weights=data.weights)
    x0 = centre + 1.2 * rng.standard_normal((n, d))
    return sch.alpha(t0) * x0 + sch.sigma(t0) * rng.standard_normal((n, d))


# -------------------------------------------------- diffusion_schedule
#: the named schedule configurations: schedule, grid rule, and the times t at which the schedule is stored
_SCHEDULE_CASES = {
    "schedule_ddpm_linear_1000": ("ddpm_linear", {"rule": "timesteps", "steps": 50, "spacing": "leading",
                                                  "steps_offset": 0}),
    **{f"schedule_sd_{s}": ("sd", {"rule": "timesteps", "steps": 50, "spacing": s,
                                   "steps_offset": 1 if s == "leading" else 0})
       for s in ("leading", "trailing", "linspace")},
    "schedule_sd_zero_snr_trailing": ("sd_zero_snr", {"rule": "timesteps", "steps": 50, "spacing": "trailing",
                                                      "steps_offset": 0}),
    "schedule_score_sde_ve": ("score_sde_ve", {"rule": "linspace", "start": 1.0, "stop": 1e-5, "points": 1000}),
    "schedule_score_sde_vp": ("score_sde_vp", {"rule": "linspace", "start": 1.0, "stop": 1e-3, "points": 1000}),
    "schedule_edm_karras_18": ("edm", {"rule": "karras", "steps": 18}),
    "schedule_edm_karras_40": ("edm", {"rule": "karras", "steps": 40}),
    "schedule_flow": ("flow", {"rule": "linspace", "start": 1.0, "stop": 0.0, "points": 51}),
}
#: the times a schedule case stores its values at, by schedule name (inside the domain, where every
#: value is finite; a discrete table between integers is refscore's continuous extension)
_SCHEDULE_TIMES = {
    "vp_discrete": [0.0, 1.0, 10.0, 99.5, 500.25, 900.0, 998.0],
    "ve": [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
    "vp": [1e-3, 0.05, 0.25, 0.5, 0.75, 0.9, 1.0],
    "edm": [0.002, 0.01, 0.1, 0.5, 2.0, 20.0, 80.0],
    "flow": [0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98],
}
#: the quantities of diffusion_schedule not every case holds (discrete tables only; derivatives continuous only)
_SCHEDULE_OPTIONAL = ("d_alpha", "d_sigma", "betas", "alphas_cumprod")


def _schedule_specs() -> dict:
    return {name: {"kind": "diffusion_schedule", "schedule": DIFFUSION_SCHEDULES[s], "data": None,
                   "params": {"grid": grid}}
            for name, (s, grid) in _SCHEDULE_CASES.items()}


def _draw_schedule(name, spec, subject):
    return {"t": np.array(_SCHEDULE_TIMES[spec["schedule"]["name"]], dtype=float)}


def _compute_schedule(subject, inputs, spec):
    sch, t = subject.schedule, inputs["t"]
    out = {"alpha": sch.alpha(t), "sigma": sch.sigma(t), "log_snr": sch.log_snr(t)}
    if not isinstance(sch, VPDiscrete):  # a discrete table's derivative is one-sided at its integers
        out["d_alpha"], out["d_sigma"] = sch.d_alpha(t), sch.d_sigma(t)
    out["grid"] = diffusion_grid(sch, spec["params"]["grid"])
    if isinstance(sch, VPDiscrete):
        out["betas"], out["alphas_cumprod"] = np.array(sch.betas), np.array(sch.alphas_cumprod)
    return out


# -------------------------------------------------- diffusion_denoiser
#: the denoiser cases: data (a closed-form target of _TARGETS), schedule, one time per point
_DENOISER_CASES = {
    "denoiser_gaussian_d2_vp": ("gaussian_d2", "score_sde_vp", [0.05, 0.3, 0.6, 0.95]),
    "denoiser_gaussian_d2_edm": ("gaussian_d2", "edm", [0.05, 0.5, 2.0, 20.0]),
    "denoiser_gaussian_d2_flow": ("gaussian_d2", "flow", [0.1, 0.4, 0.7, 0.9]),
    "denoiser_mixture_d1_ve": ("mixture_d1", "score_sde_ve", [0.1, 0.4, 0.7, 1.0]),
    "denoiser_mixture_d1_sd": ("mixture_d1", "sd", [10.5, 200.25, 600.75, 950.5]),
    "denoiser_mixture_d2_edm": ("mixture_d2", "edm", [0.05, 0.5, 2.0, 20.0]),
    "denoiser_mixture_d2_subvp": ("mixture_d2", "subvp", [0.05, 0.3, 0.6, 0.95]),
}


def _denoiser_specs() -> dict:
    return {name: {"kind": "diffusion_denoiser", "schedule": DIFFUSION_SCHEDULES[s], "data": _TARGETS[data],
                   "params": {"times": times}}
            for name, (data, s, times) in _DENOISER_CASES.items()}


def _draw_denoiser(name, spec, subject):
    rng = np.random.default_rng(case_seed(name))
    sch = subject.schedule
    t = np.array(spec["params"]["times"], dtype=float)
    x = np.stack([_diffusion_start(rng, subject, ti, 1)[0] for ti in t])
    return {"x": x, "t": t, "alpha": sch.alpha(t), "sigma": sch.sigma(t), "d_alpha": sch.d_alpha(t),
            "d_sigma": sch.d_sigma(t)}


def _compute_denoiser(subject, inputs, spec):
    D = subject.denoiser
    return {kind: D.predict(kind, inputs["x"], inputs["t"]) for kind in PARAMETRISATIONS}


# -------------------------------------------------- diffusion_coefficients
def _ddim_table(sch, grid, options):
    rows = []
    for t, tn in zip(grid[:-1], grid[1:]):
        a, s, an, sn = sch.alpha(t), sch.sigma(t), sch.alpha(tn), sch.sigma(tn)
        with np.errstate(divide="ignore"):
            c, std = diffusion_co.ddim_noise_scales(a, s, an, sn, sch.log_snr(t), sch.log_snr(tn), options["eta"])
        rows.append((a, s, an, c, std))
    return rows


def _ddpm_table(sch, grid, options):
    return [diffusion_co.ddpm_coefficients(sch, t, tn, options["variance"]) for t, tn in zip(grid[:-1], grid[1:])]


def churn_table(sch, grid, options, gamma_rule=min):
    """Per step ``(gamma, t_hat, noise_scale)`` of EDM's churn on ``grid``: ``gamma_rule(S_churn / N, sqrt 2 - 1)``
    where ``S_tmin <= sigma/alpha <= S_tmax``, else 0 (refscore's rule is ``min``; the diagnosis tries ``max``)."""
    n = len(grid) - 1
    rows = []
    for t in grid[:-1]:
        sbar = sch.sigma(t) / sch.alpha(t)
        inside = options["S_churn"] > 0 and options["S_tmin"] <= sbar <= options["S_tmax"]
        gamma = gamma_rule(options["S_churn"] / n, math.sqrt(2.0) - 1.0) if inside else 0.0
        t_hat, _, scale = diffusion_co.churn_time(sch, t, gamma)
        rows.append((gamma, t_hat, scale))
    return rows


def _dpmpp_table(sch, grid, options):
    rows, prev = [], None
    for t, tn in zip(grid[:-1], grid[1:]):
        with np.errstate(divide="ignore"):
            lt, ln = 0.5 * sch.log_snr(t), 0.5 * sch.log_snr(tn)
        sn = sch.sigma(tn)
        if sn == 0.0:
            rows.append((0.0, sch.alpha(tn), 1.0, 0.0))
        else:
            h = ln - lt
            w = (1.0, 0.0)
            if prev is not None and np.isfinite(prev) and np.isfinite(lt):
                r = (lt - prev) / h
                w = (1.0 + 1.0 / (2.0 * r), -1.0 / (2.0 * r))
            rows.append((sn / sch.sigma(t), -sch.alpha(tn) * math.expm1(-h), *w))
        prev = lt
    return rows


def _precond_table(sch, grid, options):
    s = np.array([sch.sigma(t) / sch.alpha(t) for t in grid[:-1]])
    p = edm_preconditioning(s, options["sigma_data"])
    return np.stack([p.c_skip, p.c_out, p.c_in, p.c_noise, p.weight], axis=1)


#: the coefficient tables: columns (in words) and how refscore computes them per step from t to t_next
COEFFICIENT_TABLES = {
    "ddim": (("alpha", "sigma", "alpha_next", "c_dir", "std"), _ddim_table,
             "DDIM (Song et al. 2021, eq. (12), (16)): x_next = alpha_next x0 + c_dir eps + std xi, "
             "std = eta sigma_next sqrt(1 - exp(lambda - lambda_next)), c_dir = sqrt(sigma_next^2 - std^2)"),
    "ddpm": (("c_x", "c_0", "std"), _ddpm_table,
             "DDPM's posterior (Ho et al. 2020, eq. (6)-(7)): x_next = c_x x + c_0 x0 + std xi"),
    "churn": (("gamma", "t_hat", "noise_scale"), churn_table,
              "EDM's churn (Karras et al. 2022, Algorithm 2): gamma = min(S_churn / N, sqrt 2 - 1) where "
              "S_tmin <= sigma/alpha <= S_tmax, t_hat the time of (1 + gamma) sigma/alpha, x_hat = (alpha_hat / "
              "alpha) x + noise_scale xi"),
    "dpmpp_2m": (("sigma_ratio", "x0_coefficient", "w_current", "w_previous"), _dpmpp_table,
                 "DPM-Solver++(2M): x_next = sigma_ratio x + x0_coefficient (w_current x0_i + w_previous x0_{i-1}), "
                 "x0_coefficient = -alpha_next expm1(-h), h the step in lambda / 2"),
    "edm_preconditioning": (("c_skip", "c_out", "c_in", "c_noise", "weight"), _precond_table,
                            "EDM's preconditioning (Karras et al. 2022, Table 1) at sigma/alpha of each t but the "
                            "last, sigma_data from the options"),
}

_COEFFICIENT_CASES = {
    "coefficients_ddim_sd_leading_eta1": ("ddim", "sd", {"rule": "timesteps", "steps": 10, "spacing": "leading",
                                                         "steps_offset": 1}, {"eta": 1.0}),
    "coefficients_ddpm_linear_leading": ("ddpm", "ddpm_linear", {"rule": "timesteps", "steps": 10,
                                                                 "spacing": "leading", "steps_offset": 0},
                                         {"variance": "small"}),
    "coefficients_churn_edm_18": ("churn", "edm", {"rule": "karras", "steps": 18},
                                  {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0}),
    "coefficients_churn_edm_40": ("churn", "edm", {"rule": "karras", "steps": 40},
                                  {"S_churn": 10.0, "S_tmin": 0.0, "S_tmax": 1e300}),
    "coefficients_dpmpp_2m_edm_10": ("dpmpp_2m", "edm", {"rule": "karras", "steps": 10}, {}),
    "coefficients_dpmpp_2m_sd_trailing": ("dpmpp_2m", "sd", {"rule": "timesteps", "steps": 10,
                                                             "spacing": "trailing", "steps_offset": 0}, {}),
    "coefficients_edm_preconditioning_18": ("edm_preconditioning", "edm", {"rule": "karras", "steps": 18},
                                            {"sigma_data": 0.5}),
}


def _coefficient_specs() -> dict:
    return {name: {"kind": "diffusion_coefficients", "schedule": DIFFUSION_SCHEDULES[s], "data": None,
                   "params": {"table": table, "grid": grid, "options": options,
                              "columns": list(COEFFICIENT_TABLES[table][0])}}
            for name, (table, s, grid, options) in _COEFFICIENT_CASES.items()}


def _draw_coefficients(name, spec, subject):
    return {"t": diffusion_grid(subject.schedule, spec["params"]["grid"])}


def _compute_coefficients(subject, inputs, spec):
    p = spec["params"]
    rows = COEFFICIENT_TABLES[p["table"]][1](subject.schedule, inputs["t"], p["options"])
    return {"table": np.array(rows, dtype=float)}


# -------------------------------------------------- diffusion_likelihood
#: the likelihood cases: data, schedule, (t_eps, t_end), the practical prior's std s (pi = N(0, s^2 I), score_sde's
#: choice for the schedule), points and Rademacher probes
_LIKELIHOOD_CASES = {
    "likelihood_gaussian_d2_vp": ("gaussian_d2", "score_sde_vp", 1e-3, 1.0, 1.0),
    "likelihood_mixture_d1_ve": ("mixture_d1", "score_sde_ve", 1e-5, 1.0, 50.0),
    "likelihood_mixture_d2_edm": ("mixture_d2", "edm", 0.002, 80.0, 80.0),
}
_LIKELIHOOD_POINTS, _LIKELIHOOD_PROBES = 3, 3  # an odd m: the probes never cancel z_1 z_2 exactly


def _likelihood_specs() -> dict:
    return {name: {"kind": "diffusion_likelihood", "schedule": DIFFUSION_SCHEDULES[s], "data": _TARGETS[data],
                   "params": {"t_eps": t0, "t_end": t1, "prior_std": prior, "probe": "rademacher"}}
            for name, (data, s, t0, t1, prior) in _LIKELIHOOD_CASES.items()}


def _draw_likelihood(name, spec, subject):
    rng = np.random.default_rng(case_seed(name))
    p = spec["params"]
    x = _diffusion_start(rng, subject, p["t_eps"], _LIKELIHOOD_POINTS)
    z = rng.choice([-1.0, 1.0], size=(_LIKELIHOOD_PROBES, subject.data.dim))
    return {"x": x, "t": np.array([p["t_eps"], p["t_end"]], dtype=float), "z": z}


def _compute_likelihood(subject, inputs, spec):
    D = subject.denoiser
    t0, t1 = (float(v) for v in inputs["t"])
    prior = float(spec["params"]["prior_std"])
    r = diffusion_likelihood.pf_ode_likelihood(D, inputs["x"], t0, t1, prior=prior, jacobian=True,
                                               error_estimate=False)
    z = inputs["z"]
    _, var = diffusion_likelihood.hutchinson_moments(r.jacobian_integral, "rademacher", z.shape[0])
    return {"log_likelihood": r.log_likelihood, "prior_term": r.prior_term,
            "divergence_integral": r.divergence_integral, "x_T": r.x_T,
            "log_density": np.atleast_1d(D.logpdf(inputs["x"], t0)),
            "hutchinson_log_likelihood": r.prior_term + diffusion_likelihood.hutchinson_estimate(r.jacobian_integral, z),
            "hutchinson_variance": var}


# -------------------------------------------------- diffusion_<sampler>: trajectories
#: how a sampler's denoiser calls are stored, where it is not one call per step: ``"stages"`` (x0_hat the
#: first call of each step, x0_hat_2 the second, of the steps that have one), ``"per_step"`` (x0_hat
#: (N, m, n, d), the same number m of calls every step), None (an adaptive solver: no x0_hat)
_X0_LAYOUT = {"heun": "stages", "pc": "per_step", "pf_ode": None}
#: chains of a diffusion sampler case
N_DIFFUSION_CHAINS = 3

_KARRAS8 = {"rule": "karras", "steps": 8}
_SD_LEADING = {"rule": "timesteps", "steps": 10, "spacing": "leading", "steps_offset": 1}
_SD_TRAILING = {"rule": "timesteps", "steps": 10, "spacing": "trailing", "steps_offset": 0}
_DDPM_LEADING = {"rule": "timesteps", "steps": 10, "spacing": "leading", "steps_offset": 0}

#: the trajectory cases of each sampler: (case suffix, schedule, data, grid, prediction, options)
DIFFUSION_SAMPLER_CASES = {
    "euler": (("edm_gaussian_d2", "edm", "gaussian_d2", _KARRAS8, "x0", {}),
              ("edm_churn_mixture_d2", "edm", "mixture_d2", _KARRAS8, "eps",
               {"S_churn": 1.0, "S_tmin": 0.05, "S_tmax": 50.0}),
              ("flow_gaussian_d2", "flow", "gaussian_d2", {"rule": "linspace", "start": 1.0, "stop": 0.0,
                                                           "points": 9}, "velocity", {})),
    "heun": (("edm_gaussian_d2", "edm", "gaussian_d2", _KARRAS8, "x0", {}),
             ("edm_churn_mixture_d2", "edm", "mixture_d2", _KARRAS8, "v",
              {"S_churn": 2.0, "S_tmin": 0.05, "S_tmax": 50.0})),
    "ddim": (("sd_leading_gaussian_d2", "sd", "gaussian_d2", _SD_LEADING, "eps", {"eta": 0.0}),
             ("sd_trailing_eta1_mixture_d2", "sd", "mixture_d2", _SD_TRAILING, "v", {"eta": 1.0})),
    "ddpm": (("linear_leading_gaussian_d2", "ddpm_linear", "gaussian_d2", _DDPM_LEADING, "eps",
              {"variance": "small"}),
             ("linear_leading_large_mixture_d2", "ddpm_linear", "mixture_d2", _DDPM_LEADING, "x0",
              {"variance": "large"})),
    "euler_ancestral": (("edm_mixture_d2", "edm", "mixture_d2", _KARRAS8, "x0", {"eta": 1.0}),),
    "dpmpp_2m": (("edm_gaussian_d2", "edm", "gaussian_d2", _KARRAS8, "x0", {}),
                 ("sd_trailing_mixture_d2", "sd", "mixture_d2", _SD_TRAILING, "eps", {})),
    "pc": (("ve_gaussian_d2", "score_sde_ve", "gaussian_d2", {"rule": "linspace", "start": 1.0, "stop": 1e-5,
                                                               "points": 7}, "score", {"snr": 0.16}),
           ("vp_euler_maruyama_mixture_d2", "score_sde_vp", "mixture_d2",
            {"rule": "linspace", "start": 1.0, "stop": 1e-3, "points": 7}, "score",
            {"predictor": "euler_maruyama", "step_size": 0.002})),
    "pf_ode": (("edm_gaussian_d2", "edm", "gaussian_d2", {"rule": "karras", "steps": 6}, "x0", {}),),
}


#: the cases of a sampler without a row above: its default options on EDM's Karras grid, Gaussian data
_DEFAULT_SAMPLER_CASES = (("edm_gaussian_d2", "edm", "gaussian_d2", _KARRAS8, "x0", {}),)


def diffusion_kind_name(sampler: str) -> str:
    """The golden kind of a sampler of :data:`refscore.diffusion.samplers.SAMPLERS`: ``"diffusion_<name>"``."""
    return f"diffusion_{sampler}"


def diffusion_sampler_of(kind: str):
    """The sampler name of a ``diffusion_<name>`` kind, or None for another kind."""
    name = kind[len("diffusion_"):] if kind.startswith("diffusion_") else None
    return name if name in DIFFUSION_SAMPLERS else None


def diffusion_options(sampler: str, options: dict, n_steps: int) -> dict:
    """A case's sampler options completed with the registry's defaults and validated by its entry."""
    row = DIFFUSION_SAMPLERS[sampler]
    unknown = sorted(set(options) - set(row.options))
    if unknown:
        raise ValueError(f"sampler {sampler!r} has no option(s) {unknown}; its options are {list(row.options)}")
    return row.check({**row.options, **options}, n_steps)


def diffusion_noise_blocks(sampler: str, options: dict, n_steps: int) -> int:
    """How many ``(n, d)`` normal vectors a step of ``sampler`` draws with these options."""
    return int(DIFFUSION_SAMPLERS[sampler].noise_blocks(diffusion_options(sampler, options, n_steps)))


def _diffusion_sampler_specs(sampler) -> Callable:
    def specs() -> dict:
        i = list(DIFFUSION_SAMPLERS).index(sampler)
        return {f"{diffusion_kind_name(sampler)}_{suffix}": {
            "kind": diffusion_kind_name(sampler), "schedule": DIFFUSION_SCHEDULES[s], "data": _TARGETS[data],
            "params": {"grid": grid, "prediction": prediction, "options": options, "chains": N_DIFFUSION_CHAINS,
                       "noise_seed": 1000 + 10 * i + j}}
            for j, (suffix, s, data, grid, prediction, options) in enumerate(
                DIFFUSION_SAMPLER_CASES.get(sampler, _DEFAULT_SAMPLER_CASES))}
    return specs


def _draw_diffusion_sampler(name, spec, subject):
    rng = np.random.default_rng(case_seed(name))
    p = spec["params"]
    sampler = diffusion_sampler_of(spec["kind"])
    t = diffusion_grid(subject.schedule, p["grid"])
    n, d = int(p["chains"]), subject.data.dim
    inputs = {"x": _diffusion_start(rng, subject, float(t[0]), n), "t": t}
    k = diffusion_noise_blocks(sampler, p["options"], len(t) - 1)
    if k:
        # refscore.diffusion.samplers.sample's noise: step i draws normal(seed, chain, i, k d), split in k blocks
        origin = NoiseOrigin(int(p["noise_seed"]), 0)
        z = np.stack([origin.normal(n, i, k * d) for i in range(len(t) - 1)])  # (N, n, k d)
        inputs["z"] = z.reshape(len(t) - 1, n, k, d).transpose(0, 2, 1, 3).copy()
    return inputs


def diffusion_steps(sampler, schedule, x0_fn, states, grid, z, options, *, chained=True, run=None):
    """refscore's steps of ``sampler`` down ``grid``, recording every denoiser call.

    ``chained``: from ``states[0]``, each step from the last (a whole run); otherwise each step ``i`` from
    ``states[i]`` (your states: every step checked on its own, a multistep method's memory from your
    previous state).  ``z`` is the stored noise ``(N, k, n, d)`` or None.  ``run``: a step with the
    signature of the registry row's ``run`` in its place (the diagnosis's variants).  Returns ``(next states
    (N, n, d), calls)``, ``calls[i]`` the list of ``(x, t, x0)`` of step ``i``'s denoiser calls in order.
    """
    row = DIFFUSION_SAMPLERS[sampler]
    run = row.run if run is None else run
    n_steps = len(grid) - 1
    opts = diffusion_options(sampler, options, n_steps)
    ctx = StepContext(0, n_steps)
    x = np.array(states[0], dtype=float)
    out, calls = [], []
    for i in range(n_steps):
        ctx.i = i
        record = []

        def fn(y, t, record=record):
            value = np.asarray(x0_fn(y, t), dtype=float)
            record.append((np.array(y, dtype=float), float(t), value))
            return value

        noise = [] if z is None else [z[i, j] for j in range(z.shape[1])]
        start = x if chained else np.array(states[i], dtype=float)
        x = run(fn, schedule, start, float(grid[i]), float(grid[i + 1]), noise, ctx, **opts)
        out.append(x)
        calls.append(record)
    return np.array(out), calls


def x0_quantities(sampler, calls) -> dict:
    """The denoiser calls of a run (:func:`diffusion_steps`) as the quantities of its kind."""
    layout = _X0_LAYOUT.get(sampler, "one")
    if layout is None:
        return {}
    if layout == "stages":
        out = {"x0_hat": np.array([c[0][2] for c in calls])}
        second = [c[1][2] for c in calls if len(c) > 1]
        if second:
            out["x0_hat_2"] = np.array(second)
        return out
    counts = {len(c) for c in calls}
    if len(counts) != 1 or (layout == "one" and counts != {1}):
        raise RuntimeError(f"diffusion sampler {sampler!r} makes {sorted(counts)} denoiser calls per step: give it "
                           "a row in refscore.golden.cases._X0_LAYOUT")
    stacked = np.array([[call[2] for call in c] for c in calls])
    return {"x0_hat": stacked[:, 0] if layout == "one" else stacked}


def _diffusion_predict(subject, prediction):
    """``model(x, t)``: the exact prediction of kind ``prediction`` of the case's data under its schedule."""
    D = subject.denoiser
    return lambda x, t: D.predict(prediction, x, t)


def _compute_diffusion_sampler(subject, inputs, spec):
    p = spec["params"]
    sampler = diffusion_sampler_of(spec["kind"])
    states, calls = diffusion_steps(sampler, subject.schedule, subject.denoiser.x0, inputs["x"][None], inputs["t"],
                                    inputs.get("z"), p["options"])
    return {"trajectory": np.concatenate([inputs["x"][None], states]), **x0_quantities(sampler, calls)}


def _diffusion_sampler_inputs(sampler) -> dict:
    return {"x": "(n, d) the states at t[0], one row per chain",
            "t": "(N + 1,) the grid, largest first: step i runs from t[i] to t[i + 1] (times of the case's schedule)",
            "z": "(N, k, n, d) the noise of every step, only when the case's options draw any: z[i, j] is the j-th "
                 "(n, d) block of refscore.noise.normal(noise_seed, chain, step i, k d), the blocks in the order the "
                 "step uses them (refscore.diffusion.samplers)"}


def _diffusion_sampler_quantities(sampler) -> dict:
    out = {"trajectory": "(N + 1, n, d) every state: trajectory[0] = x, trajectory[i + 1] after step i"}
    layout = _X0_LAYOUT.get(sampler, "one")
    if layout == "one":
        out["x0_hat"] = "(N, n, d) the x0 prediction step i uses, at its state and time"
    elif layout == "stages":
        out["x0_hat"] = "(N, n, d) the first stage's x0 prediction of step i (at the churned state and time)"
        out["x0_hat_2"] = ("(N2, n, d) the second stage's x0 prediction (at the Euler state and t[i + 1]) of each "
                           "step that has one (sigma(t[i + 1]) > 0), in order")
    elif layout == "per_step":
        out["x0_hat"] = "(N, m, n, d) the m x0 predictions of step i in call order (pc: the corrector's, then the " \
                        "predictor's)"
    return out


def diffusion_sampler_kind(sampler) -> "CaseKind":
    """The golden case kind ``diffusion_<name>`` of a sampler of :data:`refscore.diffusion.samplers.SAMPLERS`."""
    row = DIFFUSION_SAMPLERS[sampler]
    quantities = _diffusion_sampler_quantities(sampler)
    return CaseKind(
        diffusion_kind_name(sampler),
        f"refscore.diffusion sampler {sampler!r} ({row.reference}) on the exact denoiser of the case's data under "
        "its schedule, from the stored x over the stored grid t with the stored noise z",
        _diffusion_sampler_inputs(sampler), quantities, "diffusion", _diffusion_sampler_specs(sampler),
        _draw_diffusion_sampler, _compute_diffusion_sampler, params=_DIFFUSION_SAMPLER_PARAMS,
        optional=("z", "x0_hat_2"))


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class CaseKind:
    """One kind of golden case: what it is, its inputs and quantities, and how refscore computes them.

    Attributes
    ----------
    name : str
    about : str
        What the kind is, in words (the manifest's ``kinds``).
    inputs, quantities : dict
        name -> meaning, in the order a case stores them.
    subject : {"model", "target", "diffusion"}
        What a case's spec builds: a score model (``{"model", "kwargs"}``, :func:`build_model`),
        a closed-form target (``{"target", "kwargs", "params"}``, :func:`build_target`), or a
        schedule with a data law (``{"schedule", "data", "params"}``, :func:`build_diffusion`).
    specs : callable
        ``specs()``: the cases of the kind, ``{name: spec}`` in file order.
    draw : callable
        ``draw(name, spec, subject)``: the case's inputs, drawn from its seed.
    compute : callable
        ``compute(subject, inputs, spec)``: refscore's quantities from the inputs.
    sizes : callable or None
        ``sizes(inputs)``: sizes a model case records in the manifest (``n``, ``m``, ``levels``).
    params : dict
        The parameters a target or diffusion case's manifest entry must give: ``{name: (test, words)}``.
    optional : tuple of str
        Inputs and quantities not every case of the kind holds (a discrete schedule's tables, the noise
        of a stochastic sampler, Heun's second stage); every other one is required.
    """

    name: str
    about: str
    inputs: dict
    quantities: dict
    subject: str
    specs: Callable
    draw: Callable
    compute: Callable
    sizes: Callable | None = None
    params: dict | None = None
    optional: tuple = ()

    @property
    def spec_keys(self) -> tuple:
        """The keys of a case spec (and of its manifest entry) that say what the case is."""
        return _SPEC_KEYS[self.subject]

    def build(self, spec, *, reference=True):
        """The model, the target or the diffusion subject of a case spec of this kind."""
        if self.subject == "model":
            return build_model(spec, reference=reference)
        return build_target(spec) if self.subject == "target" else build_diffusion(spec)


#: the keys of a case spec that say what the case is, by subject
_SPEC_KEYS = {"model": ("model", "kwargs"), "target": ("target", "kwargs", "params"),
              "diffusion": ("schedule", "data", "params")}


def _is_number(value, types=(int, float)) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


#: the JSON value a sampler or kernel parameter must be: (test, what it is in words)
_NUMBER = (_is_number, "a number")
_INTEGER = (lambda v: _is_number(v, (int,)), "a number (an integer)")
_NUMBER_LIST = (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(t) for t in v),
                "a list of numbers")
_CHAIN_PARAMS = {"step": _NUMBER, "steps": _INTEGER, "chains": _INTEGER, "noise_seed": _INTEGER}


def _valid_grid(grid) -> bool:
    if not isinstance(grid, dict) or grid.get("rule") not in GRID_RULES:
        return False
    need = {"karras": ("steps",), "timesteps": ("steps", "spacing"), "linspace": ("start", "stop", "points")}
    return all(k in grid for k in need[grid["rule"]])


def _valid_prediction(value) -> bool:
    return isinstance(value, str) and value in PARAMETRISATIONS


_GRID = (_valid_grid, f"a grid rule, an object with 'rule' one of {sorted(GRID_RULES)} and its numbers")
_OPTIONS = (lambda v: isinstance(v, dict), "an object of sampler options")
#: the parameters a diffusion sampler case gives
_DIFFUSION_SAMPLER_PARAMS = {"grid": _GRID, "prediction": (_valid_prediction, "a parametrisation of "
                             "refscore.diffusion.parametrisations.PARAMETRISATIONS"), "options": _OPTIONS,
                             "chains": _INTEGER, "noise_seed": _INTEGER}



def _sampler_inputs(sampler) -> dict:
    """The inputs a sampler's golden case stores, and what they mean, in file order."""
    x0 = "(c, d) initial states, one row per chain"
    if sampler.splitting is not None:
        return {"x0": "(c, d) initial positions q, one row per chain",
                "v0": "(c, d) initial momenta p (unit mass: the velocities)",
                "step": f"() the step h of {sampler.update}",
                "friction": "() gamma: an O sub-step over tau is p <- c p + sqrt(1 - c^2) xi, c = exp(-gamma tau)",
                "xi": "(T, c, 2 d) the normals of every step: xi[t, j] = refscore.noise.normal(noise_seed, chain j, "
                      "step t, 2 d); the first O of step t takes xi[t, j, :d], OBABO's second O xi[t, j, d:]"}
    if sampler.noise_levels:
        out = {"x0": x0, "sigmas": "(L,) decreasing noise levels",
               "step": "() the step at the smallest level: eta_i = step sigma_i^2 / sigma_L^2",
               "z": "(L T, c, d) the noise, by global step t = i T + j: z[t, j'] = refscore.noise.normal(noise_seed, "
               "chain j', step t, d)"}
    else:
        out = {"x0": x0, "step": f"() the step eta of {sampler.update}",
               "z": "(T, c, d) the noise of every step: z[t, j] = refscore.noise.normal(noise_seed, chain j, step t, "
               "d)"}
    if sampler.has_accept_test:
        out["u"] = "(T, c) the accept/reject uniforms: u[t, j] = refscore.noise.uniform(noise_seed, j, t)"
    return out


def sampler_kind(sampler) -> CaseKind:
    """The golden case kind of a :class:`refscore.sampling.samplers.Sampler`: its cases on the
    closed-form targets, inputs drawn and quantities computed as its properties say."""
    params = dict(_CHAIN_PARAMS)
    if sampler.noise_levels:
        params["sigmas"] = _NUMBER_LIST
    if sampler.splitting is not None:
        params["friction"] = _NUMBER
    return CaseKind(sampler.name, sampler.about, _sampler_inputs(sampler), dict(sampler.quantities), "target",
                    _sampler_specs(sampler), _draw_sampler, _compute_sampler, params=params)


#: the case table: kind name -> :class:`CaseKind`, in file order
KINDS = {k.name: k for k in (
    CaseKind(
        "losses",
        "a score model (class and kwargs in 'model', 'kwargs'): score, Jacobian, trace, JVP, sphere "
        f"projections and the per-point losses ({', '.join(s.name for s in _PER_POINT)}) with their gradients "
        "over theta",
        INPUTS, QUANTITIES, "model", _losses_specs, _draw_losses, _compute_losses,
        sizes=lambda inputs: {"n": N_POINTS, "m": N_PROJECTIONS},
    ),
    CaseKind(
        "dsm_multi",
        "NCSN's multi-noise DSM of NoiseConditional(model): s(x, sigma) = s_theta(x) / sigma, "
        "one noise level per point (refscore.losses.dsm_multi)",
        {
            "theta": "(P,) parameters of the wrapped model, in the case's layout",
            "x": "(n, d) clean points",
            "sigmas": "(L,) the noise levels",
            "labels": "(n,) the level of each point, integer-valued (stored as float64): sigma_k = sigmas[labels[k]]",
            "sigma_points": "(n,) sigmas[labels], the noise level of each point",
            "eps": "(n, d) standard normal draws",
        },
        {
            "score_noised": "(n, d) s(x_k + sigma_k eps_k, sigma_k) = s_theta(x~_k) / sigma_k",
            "dsm_multi_sigma2": "() mean_k sigma_k^2 1/2 ||s(x~_k, sigma_k) + eps_k / sigma_k||^2 (weighting='sigma2')",
            "dsm_multi_sigma2_grad": "(P,) d dsm_multi_sigma2 / d theta",
            "dsm_multi_none": "() mean_k 1/2 ||s(x~_k, sigma_k) + eps_k / sigma_k||^2 (weighting='none')",
            "dsm_multi_none_grad": "(P,) d dsm_multi_none / d theta",
        },
        "model", _dsm_multi_specs, _draw_dsm_multi, _compute_dsm_multi,
        sizes=lambda inputs: {"n": N_MULTI_POINTS, "levels": len(MULTI_SIGMAS)},
    ),
    CaseKind(
        "ksd",
        "kernel Stein discrepancy of a sample against a closed-form target (class and kwargs in "
        "'target', 'kwargs'), IMQ kernel with the case's c and beta (refscore.metrics)",
        {
            "x": "(n, d) the sample",
            "score": "(n, d) the target's score at x (also computable from the target in the manifest)",
            "c": "() IMQ parameter c > 0",
            "beta": "() IMQ exponent beta in (-1, 0)",
        },
        {
            "stein_kernel": "(n, n) u_p(x_i, x_j) (refscore.metrics.imq_stein_kernel)",
            "ksd_u": "() U-statistic sum_{i != j} u_p / (n (n - 1)) (refscore.metrics.ksd)",
            "ksd_v": "() V-statistic sum_{i, j} u_p / n^2 (diagonal included)",
        },
        "target", _ksd_specs, _draw_ksd, _compute_ksd,
        params={"c": _NUMBER, "beta": _NUMBER},
    ),
    *(sampler_kind(sampler) for sampler in SAMPLERS.values()),
    CaseKind(
        "diffusion_schedule",
        "a schedule of refscore.diffusion.schedules (name and kwargs in 'schedule'): alpha, sigma, log-SNR (and "
        "their derivatives, continuous schedules) at the stored times, the configuration's grid (params 'grid'), "
        "and a discrete schedule's betas and alphas_cumprod",
        {"t": "(m,) times in the schedule's domain"},
        {"alpha": "(m,) alpha(t): x_t = alpha x0 + sigma eps", "sigma": "(m,) sigma(t)",
         "log_snr": "(m,) log(alpha^2 / sigma^2)", "d_alpha": "(m,) d alpha / dt (continuous schedules)",
         "d_sigma": "(m,) d sigma / dt (continuous schedules)",
         "grid": "(N + 1,) the configuration's time grid, largest first (params 'grid', by the rules of 'grid_rules')",
         "betas": "(T,) the per-step variances (discrete tables)",
         "alphas_cumprod": "(T,) alpha_bar_n = prod_{j <= n} (1 - beta_j) (discrete tables)"},
        "diffusion", _schedule_specs, _draw_schedule, _compute_schedule, params={"grid": _GRID},
        optional=_SCHEDULE_OPTIONAL,
    ),
    CaseKind(
        "diffusion_denoiser",
        "the exact denoiser E[x0 | x_t] of the case's data (a Gaussian or a mixture, 'data') under its schedule, "
        "in every parametrisation of refscore.diffusion.parametrisations, one time per point",
        {"x": "(n, d) noised points", "t": "(n,) the time of each point",
         "alpha": "(n,) alpha(t)", "sigma": "(n,) sigma(t)", "d_alpha": "(n,) alpha'(t)", "d_sigma": "(n,) sigma'(t)"},
        {"x0": "(n, d) E[x0 | x_t = x]", "eps": "(n, d) E[eps | x_t = x] = (x - alpha x0) / sigma",
         "v": "(n, d) alpha eps - sigma x0", "score": "(n, d) grad log p_t(x) = -eps / sigma",
         "velocity": "(n, d) alpha' x0 + sigma' eps, the probability-flow ODE's dx/dt"},
        "diffusion", _denoiser_specs, _draw_denoiser, _compute_denoiser,
        params={"times": _NUMBER_LIST},
    ),
    CaseKind(
        "diffusion_coefficients",
        "a per-step coefficient table of a sampler on the stored grid (params 'table', its 'columns' and "
        "'options'): DDIM's sigma_t(eta), DDPM's posterior, EDM's churn gamma, DPM-Solver++(2M), EDM's "
        "preconditioning",
        {"t": "(N + 1,) the grid, largest first"},
        {"table": "(N, k) one row per step from t[i] to t[i + 1], the columns named by params 'columns'"},
        "diffusion", _coefficient_specs, _draw_coefficients, _compute_coefficients,
        params={"grid": _GRID, "table": (lambda v: v in COEFFICIENT_TABLES, f"one of {sorted(COEFFICIENT_TABLES)}"),
                "options": _OPTIONS, "columns": (lambda v: isinstance(v, list), "a list of column names")},
    ),
    CaseKind(
        "diffusion_likelihood",
        "the probability-flow ODE log-likelihood of points x at t_eps (params 't_eps', 't_end') for the case's data "
        "under its schedule: log pi(x_T) + int_{t_eps}^{t_end} div v dt with the prior pi = N(0, prior_std^2 I), "
        "its parts, the exact marginal log p_{t_eps}(x), and the Hutchinson estimate with the stored Rademacher "
        "probes with its exact variance (refscore.diffusion.likelihood, docs/diffusion.md §9)",
        {"x": "(n, d) data points, the ODE's start at t_eps",
         "t": "(2,) (t_eps, t_end): the ODE runs from t_eps to t_end",
         "z": "(m, d) Rademacher probes, the same for every point and every time (fixed per trajectory)"},
        {"log_likelihood": "(n,) prior_term + divergence_integral: log p_{t_eps}(x) up to the prior mismatch",
         "prior_term": "(n,) log N(x_T; 0, prior_std^2 I)",
         "divergence_integral": "(n,) int_{t_eps}^{t_end} div v(x(t), t) dt, v the exact PF-ODE velocity",
         "x_T": "(n, d) the ODE's end x(t_end)",
         "log_density": "(n,) the exact marginal log p_{t_eps}(x) (what log_likelihood is with the prior p_{t_end})",
         "hutchinson_log_likelihood": "(n,) prior_term + (1/m) sum_k z_k^T (int J_v dt) z_k: the estimate with the "
                                      "stored probes, the sum over the m probes divided by m",
         "hutchinson_variance": "(n,) the exact variance of the m-probe Rademacher estimate of divergence_integral: "
                                "(2||A_s||_F^2 - 2 sum_i A_ii^2) / m, A = int J_v dt"},
        "diffusion", _likelihood_specs, _draw_likelihood, _compute_likelihood,
        params={"t_eps": _NUMBER, "t_end": _NUMBER, "prior_std": _NUMBER,
                "probe": (lambda v: v == "rademacher", "'rademacher'")},
    ),
    *(diffusion_sampler_kind(sampler) for sampler in DIFFUSION_SAMPLERS),
)}

#: the case kinds of refscore.diffusion (format 4)
DIFFUSION_KINDS = tuple(name for name, kind in KINDS.items() if kind.subject == "diffusion")

#: every case kind: what it is, its inputs and its quantities (keys of golden.npz below a case)
CASE_KINDS = {k.name: {"about": k.about, "inputs": k.inputs, "quantities": k.quantities} for k in KINDS.values()}


# ------------------------------------------------------------------ the cases
def case_specs() -> dict:
    """The ``losses`` cases: ``{name: {"model": class name, "kwargs": {...}}}`` in file order.

    Names read ``gaussian_d2``, ``linear_d5``, ``mixture_d1``,
    ``mlpscore_tanh_depth1_d2``, ``mlpenergy_gelu_depth2_d5``.  The other case
    kinds are :func:`extra_case_specs`.
    """
    return KINDS["losses"].specs()


def extra_case_specs() -> dict:
    """The cases of the kinds beyond ``losses``, ``{name: spec}`` in file order.

    Every spec has ``"kind"``.  ``dsm_multi`` specs are a model spec
    (``{"model": "NoiseConditional", "kwargs": {"model": inner spec}}``); ``ksd``
    and sampler specs name a closed-form target (``{"target": class name,
    "kwargs": {...}}``) and their ``"params"`` (IMQ ``c``, ``beta``; sampler
    ``step``, ``steps``, ``chains``, ``noise_seed``, annealed ``sigmas``).
    """
    return {name: spec for kind in KINDS.values() if kind.name != "losses" for name, spec in kind.specs().items()}


def _kind_of(spec: dict) -> CaseKind:
    return KINDS[spec.get("kind", "losses")]


def case_inputs(name, spec) -> dict:
    """The inputs of one golden case of any kind, drawn as :func:`refscore.golden.write` draws them.

    Nothing is computed from them (see :func:`case_values` for the quantities).
    """
    kind = _kind_of(spec)
    return kind.draw(name, spec, kind.build(spec))


# every array here is tiny (d <= 5): a multi-threaded BLAS only costs, and on shared cores its
# spinning threads made each 2x2 triangular solve of the sampler cases take ~8 ms (5 s per write)
@one_blas_thread
def case_values(name, spec):
    """``(inputs, quantities, meta)`` of one golden case of any kind, computed in memory.

    The same numbers :func:`refscore.golden.write` stores for the case ``name``
    with spec ``spec`` (a value of :func:`case_specs` or :func:`extra_case_specs`);
    :mod:`refscore.testing` builds its in-memory cases from it.
    """
    kind = _kind_of(spec)
    subject = kind.build(spec)
    inputs = kind.draw(name, spec, subject)
    quantities = kind.compute(subject, inputs, spec)
    meta = {k: spec[k] for k in kind.spec_keys}
    if kind.subject == "model":
        meta.update(n_params=subject.n_params, layout=subject.layout, **kind.sizes(inputs))
    return inputs, quantities, meta


@one_blas_thread
def compute_case(case) -> dict:
    """refscore's values of the quantities a loaded case (a :class:`refscore.golden.Case`) holds,
    recomputed from its stored inputs."""
    kind = KINDS[case.kind]
    values = kind.compute(kind.build(case.spec), case.inputs, {**case.spec, "kind": case.kind})
    return {k: values[k] for k in case.quantities}
