"""Framework-free plumbing of :mod:`refscore.interop`: specs, the theta layout, conversions.

The parameter layout is re-derived here from the documented theta layouts
(docs/derivations.md §3.1 and §7.1-§7.3), from a spec's kwargs alone, and not
from :mod:`refscore.models`: the adapters and the validation backends built on
them stay an independent route, so a layout bug in refscore shows as a
disagreement instead of being copied.  :func:`spec_of` cross-checks the number
of parameters against the refscore model it reads.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

#: the model classes the adapters implement (the keys of a spec's "model")
MODELS = ("GaussianModel", "LinearScore", "GaussianMixtureModel", "MLPScore", "MLPEnergy")
#: models with an energy (s = -grad_x E): torch modules get ``.energy(x)``, jax ``energy_function``;
#: each is the negated log density of the refscore model (the Gaussian's without its normaliser)
ENERGY_MODELS = ("GaussianModel", "MLPEnergy", "GaussianMixtureModel")
#: hidden activations the adapters implement (those of refscore.models.activations)
ACTIVATIONS = ("tanh", "softplus", "sigmoid", "silu", "gelu")

#: each model's constructor arguments that define it (engine options like ``backend`` are dropped)
_KWARGS = {
    "GaussianModel": ("dim",),
    "LinearScore": ("dim",),
    "GaussianMixtureModel": ("dim", "k"),
    "MLPScore": ("dim", "hidden", "activation"),
    "MLPEnergy": ("dim", "hidden", "activation"),
}

TORCH_HINT = "pip install torch (a CPU build is enough)"
JAX_HINT = "pip install 'refscore[interop]' (installs jax[cpu])"


# ------------------------------------------------------------------ specs
def _int(where, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_spec(spec) -> dict:
    """A validated deep copy of ``{"model": name, "kwargs": {...}}`` (``hidden`` as a list)."""
    if not isinstance(spec, dict) or "model" not in spec:
        raise TypeError(f"a spec is a dict {{'model': ..., 'kwargs': {{...}}}}, got {spec!r}")
    name = spec["model"]
    if name not in MODELS:
        raise ValueError(f"spec['model'] must be one of {list(MODELS)}, got {name!r}")
    kw = spec.get("kwargs", {})
    if not isinstance(kw, dict):
        raise TypeError(f"spec['kwargs'] must be a dict, got {type(kw).__name__}")
    out = {"dim": _int("kwargs['dim']", kw.get("dim"))}
    keys = _KWARGS[name]
    if "k" in keys:
        out["k"] = _int("kwargs['k']", kw.get("k"))
    if "hidden" in keys:
        hidden = kw.get("hidden", (64, 64))
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        out["hidden"] = [_int("kwargs['hidden'] entries", h) for h in hidden]
        if not out["hidden"]:
            raise ValueError("kwargs['hidden'] must hold at least one width")
        act = kw.get("activation", "tanh")
        if act not in ACTIVATIONS:
            raise NotImplementedError(f"activation {act!r} has no interop adapter; the adapters implement "
                                      f"{list(ACTIVATIONS)}")
        out["activation"] = act
    extra = sorted(set(kw) - set(out) - {"chunk_size", "backend", "trace_path"})
    if extra:
        raise ValueError(f"spec['kwargs'] of {name} has unknown keys {extra}")
    return {"model": name, "kwargs": copy.deepcopy(out)}


def _registry_activation(model) -> str:
    """The registry name of an MLP's activation, which must be the registry's own object.

    A spec names its activation, so it can only stand for an entry of
    :data:`refscore.models.activations.ACTIVATIONS`; a user's ``Activation``
    that carries a registry name computes something else, and is refused
    (matched by object, as the compiled engines match it).
    """
    from ..models.activations import ACTIVATIONS as REGISTRY

    act = model.act
    if act.name in REGISTRY and REGISTRY[act.name] is not act:  # other names: check_spec refuses them
        raise NotImplementedError(
            f"{type(model).__name__}'s activation {act!r} is not refscore's registry entry of that name "
            f"(refscore.models.activations.ACTIVATIONS[{act.name!r}]): a spec names its activation and cannot "
            f"carry your function, so the interop adapters implement only the registry's "
            f"{list(ACTIVATIONS)}")
    return act.name


def spec_of(model) -> dict:
    """The spec ``{"model": class name, "kwargs": {...}}`` of a refscore model object.

    Engine options (``backend``, ``chunk_size``, ``trace_path``) are left out:
    they change how refscore computes, not what.  Raises ``TypeError`` for
    objects that are not one of :data:`MODELS` (a ``NoiseConditional`` names
    its wrapped model), ``NotImplementedError`` for an MLP whose activation is
    not the registry's own object (a user's ``Activation``, even one named
    ``"tanh"``: a spec cannot carry its function), ``ValueError`` when the
    layout derived from the spec does not have the model's ``n_params``
    numbers.
    """
    from ..models import GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy, MLPScore, NoiseConditional

    if isinstance(model, NoiseConditional):
        raise TypeError("NoiseConditional(model) has no adapter of its own: convert the wrapped "
                        "model (nc.model) and divide its score by sigma (docs/derivations.md §7.4)")
    readers = (  # MLPEnergy and MLPScore are siblings (MLPBase), neither subclasses the other
        (MLPEnergy, lambda m: {"dim": m.dim, "hidden": list(m.hidden), "activation": _registry_activation(m)}),
        (MLPScore, lambda m: {"dim": m.dim, "hidden": list(m.hidden), "activation": _registry_activation(m)}),
        (GaussianMixtureModel, lambda m: {"dim": m.dim, "k": m.k}),
        (GaussianModel, lambda m: {"dim": m.dim}),
        (LinearScore, lambda m: {"dim": m.dim}),
    )
    for cls, read in readers:
        if isinstance(model, cls):
            name, kwargs = cls.__name__, read(model)
            break
    else:
        raise TypeError(f"expected a refscore model ({', '.join(MODELS)}), got {type(model).__name__}")
    spec = check_spec({"model": name, "kwargs": kwargs})
    n = n_params(spec)
    if n != model.n_params:  # pragma: no cover - a drift between the documented and the coded layout
        raise ValueError(f"{name}: the documented layout has {n} numbers but the model has {model.n_params}")
    return spec


def as_spec(obj) -> dict:
    """A validated spec from a spec dict, a golden case name, a :class:`refscore.golden.Case`
    or a refscore model object."""
    if isinstance(obj, dict):
        return check_spec(obj)
    if isinstance(obj, str):
        from .. import golden

        specs = golden.case_specs()
        if obj not in specs:
            raise ValueError(f"{obj!r} is not a golden case name (names look like "
                             f"'mlpenergy_gelu_depth2_d5'; see refscore.golden.case_specs())")
        return check_spec(specs[obj])
    spec = getattr(obj, "spec", None)  # golden.Case, or a module/function built here
    if isinstance(spec, dict):
        return check_spec(spec)
    return spec_of(obj)


# ------------------------------------------------------------------ the layout
def parameter_layout(spec) -> list:
    """``[(name, shape), ...]`` in theta order: ``theta`` is the concatenation of the
    C-order ravels of arrays of these shapes (docs/derivations.md §3.1, §7.1-§7.3).

    Names are those of the torch modules' ``named_parameters()``:

    ========================  ================================================
    GaussianModel             ``mu (d,)``, ``L_tril (d(d+1)/2,)`` (``np.tril_indices``)
    LinearScore               ``A (d, d)``, ``b (d,)``
    GaussianMixtureModel      ``alpha (k,)``, ``mu (k, d)``, ``log_tau (k,)``
    MLPScore / MLPEnergy      ``layers.<l>.weight (out, in)``, ``layers.<l>.bias (out,)``
    ========================  ================================================
    """
    spec = as_spec(spec)
    return _LAYOUTS[spec["model"]](spec["kwargs"])


def _mlp_layout(kw, out_dim):
    sizes = [kw["dim"], *kw["hidden"], out_dim]
    out = []
    for l in range(len(sizes) - 1):
        out += [(f"layers.{l}.weight", (sizes[l + 1], sizes[l])), (f"layers.{l}.bias", (sizes[l + 1],))]
    return out


_LAYOUTS = {  # docs/derivations.md §7.1, §7.2, §7.3, §3.1 (MLPEnergy: the same with n_L = 1)
    "GaussianModel": lambda kw: [("mu", (kw["dim"],)), ("L_tril", (kw["dim"] * (kw["dim"] + 1) // 2,))],
    "LinearScore": lambda kw: [("A", (kw["dim"], kw["dim"])), ("b", (kw["dim"],))],
    "GaussianMixtureModel": lambda kw: [("alpha", (kw["k"],)), ("mu", (kw["k"], kw["dim"])),
                                        ("log_tau", (kw["k"],))],
    "MLPScore": lambda kw: _mlp_layout(kw, kw["dim"]),
    "MLPEnergy": lambda kw: _mlp_layout(kw, 1),
}


def n_params(spec) -> int:
    """Length of theta: the number of parameters of :func:`parameter_layout`."""
    return sum(int(np.prod(s, dtype=np.int64)) for _, s in parameter_layout(spec))


def layout_words(spec) -> str:
    return ", ".join(f"{n} {tuple(s)}" for n, s in parameter_layout(spec))


def split(theta, layout, reshape=None) -> list:
    """Views of the flat ``theta`` in the shapes of ``layout`` (anything sliceable)."""
    reshape = reshape or (lambda a, shape: a.reshape(shape))
    out, p = [], 0
    for _, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(reshape(theta[p: p + size], shape))
        p += size
    return out


def check_theta(theta, spec) -> np.ndarray:
    """theta as a float64 NumPy vector of the spec's length, finite (refscore's own check)."""
    from .._validation import check_theta as _check

    return _check(theta, n_params(spec), layout_words(spec))


# ------------------------------------------------------------------ golden inputs
def golden_case_inputs(case) -> dict:
    """``{input name: float64 ndarray}`` of a golden case (a name or a :class:`refscore.golden.Case`)."""
    from .. import golden

    if isinstance(case, golden.Case):
        return {k: np.array(v, dtype=np.float64) for k, v in case.inputs.items()}
    if not isinstance(case, str):
        raise TypeError(f"case must be a golden case name or a refscore.golden.Case, got {type(case).__name__}")
    spec = golden.case_specs().get(case)
    if spec is None:
        raise ValueError(f"{case!r} is not a golden case name (see refscore.golden.case_specs())")
    # the very draws golden.write stores (the function it runs for every case)
    inputs = golden.case_values(case, spec)[0]
    return {k: np.array(inputs[k], dtype=np.float64) for k in golden.INPUTS}
