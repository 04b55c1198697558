r"""Assertions for your own test suite: your score, loss or sampler against refscore.

In the spirit of :mod:`numpy.testing`: each ``assert_*`` function runs your
callable on the golden cases (:mod:`refscore.golden`), computed in memory (no
file is read or written), compares what it returns with refscore's values by
:func:`refscore.golden.check`, and raises an ``AssertionError`` when anything
differs.  The message holds the diagnosis of :func:`~refscore.golden.check` for
every failing quantity: where it fails, the ratio yours/golden, the hypothesis
that fits (a forgotten ½, σ where σ² belongs, a flipped sign, a Langevin step in
another convention, MALA without its proposal correction...), the convention of
:mod:`refscore.conventions` it matches and its conversion function; then the
failing keys with their largest errors.  On success each returns the
:class:`~refscore.golden.CheckResult`; on failure the ``AssertionError`` carries it as its
``result`` attribute (``exc.result.diagnosis`` holds the :class:`~refscore.golden.Diagnosis` objects).

=========================================  ==================================================
:func:`assert_score_matches`               ``fn(theta, x) -> (n, d)``: a score model
:func:`assert_loss_matches`                ``loss_fn(model, ...) -> scalar``: ESM, ISM, DSM,
                                           SSM, SSM-VR, NCSN's multi-noise DSM, value and
                                           gradient over ``theta``
:func:`assert_sampler_matches`             ``step_fn(x, ...) -> x_next``: one ULA, MALA,
                                           annealed or kinetic Langevin step, or
                                           (``form="trajectory"``) your whole run, fed the
                                           stored noise; the contract is refscore's
                                           single-step API,
                                           :mod:`refscore.sampling.single_step`
:func:`assert_schedule_matches`            ``schedule_fn(t, schedule, grid) -> dict``: alpha,
                                           sigma, log-SNR, derivatives, a configuration's
                                           grid, a discrete table (diffusion)
:func:`assert_denoiser_matches`            ``denoiser_fn(x, t, data, ...)``: the exact
                                           :math:`E[x_0 \mid x_t]` in any parametrisation
:func:`assert_diffusion_sampler_matches`   your diffusion sampler (a whole run or one step)
                                           fed refscore's exact model and noise
:func:`golden_cases`                       the golden cases of any kind as a
                                           :class:`~refscore.golden.Golden`, in memory
=========================================  ==================================================

Every helper takes ``framework="numpy" | "torch" | "jax"``: your callable then
receives that framework's arrays (float64 unless ``dtype="float32"``, which
also selects the float32 tolerances of :data:`refscore.golden.TOLERANCES`)
built by :mod:`refscore.interop`, and may return that framework's arrays.
Everything framework-specific (the arrays, the model a loss gets, its
gradient, the sampler targets' functions, a diffusion schedule's view) is the
:class:`~refscore.interop.frameworks.Framework` of that name in
:data:`refscore.interop.FRAMEWORKS`; torch and jax are imported only when
asked for.  The diffusion helpers call your code eagerly, never under
``jax.jit``: the exact model they hand a sampler is a call to refscore's NumPy
code, which a ``jit`` trace cannot follow.  The helpers run with the
BLAS thread pool limited to one thread, as refscore's golden computation does
(the arrays are tiny; on shared cores a multi-threaded BLAS only costs).  What your callable receives,
per helper, is spelled out in :data:`LOSS_INPUTS`, :data:`STEP_INPUTS` and
:data:`TRAJECTORY_INPUTS` and in each
function's documentation.  Every call of your code gets its own copies of the
inputs (and of the case's spec), so code that writes into its arguments, a MALA
step updating ``x`` in place say, is compared on what it computes.

Cases
-----
``cases`` (``case`` for :func:`assert_score_matches`) selects golden cases by
name (``"mlpscore_tanh_depth1_d2"``), by shell pattern on the name
(``"mlpscore_tanh_*"``), by class (``"MLPScore"``; the wrapped model's class for
``dsm_multi``; ``"Gaussian"`` or ``"GaussianMixture"`` for the sampler
targets), by a list of those, or by a predicate ``spec -> bool`` on the case
spec (``{"model": ..., "kwargs": {...}}``, see
:func:`refscore.golden.case_specs`).  ``None`` takes every case of the kind.
The values are those ``refscore golden`` writes, bit for bit.

Examples
--------
A score model (here ``s(x) = A x + b`` on refscore's layout
``theta = [A.ravel(), b]``) and a DSM loss written with refscore's model, in
NumPy:

>>> import numpy as np
>>> from refscore import testing
>>> def linear_score(theta, x):
...     d = x.shape[1]
...     return x @ theta[:d * d].reshape(d, d).T + theta[d * d:]
>>> testing.assert_score_matches(linear_score, "LinearScore").passed
True
>>> def dsm(model, theta, x, sigma, eps):
...     r = model.score(theta, x + sigma * eps) + eps / sigma   # eq. (6), eps ~ N(0, I)
...     return 0.5 * np.mean(np.sum(r ** 2, axis=1))
>>> testing.assert_loss_matches(dsm, "dsm", grad=False).count("PASS")
69

The target ``-eps`` where eq. (6) has ``-eps/sigma`` fails, and the message
says why:

>>> def dsm_wrong(model, theta, x, sigma, eps):
...     r = model.score(theta, x + sigma * eps) + eps
...     return 0.5 * np.mean(np.sum(r ** 2, axis=1))
>>> testing.assert_loss_matches(dsm_wrong, "dsm", grad=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
AssertionError: refscore.testing.assert_loss_matches('dsm', framework='numpy'): dsm fails in 69 of 69 cases ...
...  dsm: 69 cases; yours/golden median ... -> DSM target -z: the target -z where refscore's is -z/sigma: ...

One ULA step, ``x + eta s(x) + sqrt(2 eta) z`` (eq. (4)):

>>> def ula_step(x, score, step, z):
...     return x + step * score(x) + np.sqrt(2 * step) * z
>>> testing.assert_sampler_matches(ula_step, "ula").passed
True

The golden trajectories are those of refscore's own steps
(:mod:`refscore.sampling.steps`), which pass as they are:

>>> from refscore.sampling.steps import langevin_step
>>> testing.assert_sampler_matches(lambda x, score, step, z: langevin_step(x, score(x), step, z),
...                                "ula").passed
True

The README's section "Validate your backend in 3 steps" has complete PyTorch
and JAX examples.
"""
from __future__ import annotations

import copy
import fnmatch
import functools
import inspect
import warnings

import numpy as np

from . import __version__, golden, losses
from .interop import get_framework
from .models.mlp_base import one_blas_thread
# under another name: refscore.testing.SAMPLERS is the deprecated alias of STEP_INPUTS (__getattr__ below)
from .sampling.samplers import SAMPLERS as _SAMPLER_REGISTRY

__all__ = [
    "LOSS_INPUTS",
    "STEP_INPUTS",
    "TRAJECTORY_INPUTS",
    "SAMPLER_FORMS",
    "golden_cases",
    "assert_score_matches",
    "assert_loss_matches",
    "assert_sampler_matches",
    "DIFFUSION_INPUTS",
    "assert_schedule_matches",
    "assert_denoiser_matches",
    "assert_diffusion_sampler_matches",
]

# how the keyword arguments of a user's per-point loss are described (the golden storage key of
# each registry input, golden.cases.STORED_LOSS_INPUTS, is the keyword; its own words otherwise)
_INPUT_WORDS = {
    "x": "(n, d) points",
    "target": "(n, d) target scores t_k",
    "sigma": "float, the noise level",
    "eps": "(n, d) standard normal draws z: the noised point is x + sigma * eps",
    "v": "(m, n, d) projections, v[j, k] for point x_k (E[v v^T] = I; the sphere has radius sqrt(d))",
}
# the name the registry's sliced losses give their projections (stored per projection kind)
_PROJECTED = "v"


def _loss_keywords(loss) -> dict:
    """``{keyword: what it holds}`` a user's per-point ``loss_fn`` receives, read from the registry entry:
    ``x``, then each input under its golden storage key, in the entry's order."""
    out = {"x": _INPUT_WORDS["x"]}
    for name in losses.LOSSES[loss].inputs:
        key = _PROJECTED if name == _PROJECTED else golden.cases.STORED_LOSS_INPUTS[name].key
        out[key] = _INPUT_WORDS.get(key) or golden.cases.STORED_LOSS_INPUTS[name].description
    return out


#: per loss of the registry :data:`refscore.losses.LOSSES`: the keyword arguments your
#: ``loss_fn`` receives after the model, and what they hold (see :func:`assert_loss_matches`);
#: the per-point losses' rows are read from their registry entries
LOSS_INPUTS = {name: _loss_keywords(name) for name in losses.PER_POINT_LOSSES}
LOSS_INPUTS["dsm_multi"] = {
    "x": "(n, d) clean points", "sigmas": "(L,) the noise levels",
    "labels": "(n,) integer level of each point: sigma_k = sigmas[labels[k]]",
    "eps": "(n, d) standard normal draws: the noised point is x_k + sigma_k eps_k",
    "weighting": "'sigma2' (NCSN, lambda = sigma^2) or 'none' (lambda = 1)"}

#: per sampler: the keyword arguments your ``step_fn`` receives after ``x``, and what they hold
#: (see :func:`assert_sampler_matches`); the ``inputs`` of the sampler registry
#: :data:`refscore.sampling.samplers.SAMPLERS`
STEP_INPUTS = {name: dict(sampler.inputs) for name, sampler in _SAMPLER_REGISTRY.items()}

# what a trajectory function receives beyond its step's inputs, and the stacked noise
_STACKED = {"z": "(T, c, d) the noise of every step: z[t] is step t's",
            "u": "(T, c) the uniforms of every step: u[t] is step t's",
            "xi": "(T, c, 2 d) the normals of every step: xi[t] is step t's"}


def _trajectory_keywords(sampler) -> dict:
    """``{keyword: what it holds}`` of a whole-trajectory function of ``sampler``, read from its entry."""
    out = {"x0": "(c, d) the initial states, one row per chain"}
    if sampler.splitting is not None:
        out["v0"] = "(c, d) the initial momenta (unit mass)"
    for k, about in sampler.inputs.items():
        if k in ("v", "sigma"):  # the trajectory carries the momenta; the levels are its own to walk
            continue
        if k == "score" and sampler.noise_levels:
            about = "callable (x (c, d), sigma) -> (c, d), the score of p_sigma at a level sigma of sigmas"
        out[k] = _STACKED.get(k, about)
    return out


#: per sampler: the keyword arguments your whole-trajectory function receives
#: (``assert_sampler_matches(..., form="trajectory")``), and what they hold
TRAJECTORY_INPUTS = {name: _trajectory_keywords(sampler) for name, sampler in _SAMPLER_REGISTRY.items()}

# what a step function returns (documented in assert_sampler_matches; kept for the deprecated SAMPLERS)
_STEP_RETURNS = {name: sampler.returns for name, sampler in _SAMPLER_REGISTRY.items()}

# the losses run once per variant: ssm and ssm_vr per projection kind, dsm_multi per weighting
# (those of refscore.losses.dsm_multi); the golden quantity of a variant is "<loss>_<variant>"
_LOSS_VARIANTS = {name: tuple(losses.PROJECTIONS) for name in losses.PER_POINT_LOSSES
                  if _PROJECTED in losses.LOSSES[name].inputs}
_LOSS_VARIANTS["dsm_multi"] = ("sigma2", "none")
_MAX_ROWS = 12  # failing keys listed in a message (the diagnosis covers them all)


def _quantities(loss, variants) -> tuple:
    """The golden quantities compared for ``loss`` run on ``variants`` (see ``_LOSS_VARIANTS``)."""
    return tuple(f"{loss}_{v}" for v in variants) if variants else (loss,)


def _case_kind(quantity) -> str:
    """The golden case kind (:data:`refscore.golden.CASE_KINDS`) whose cases hold ``quantity``."""
    return next(kind for kind, about in golden.CASE_KINDS.items() if quantity in about["quantities"])


def __getattr__(name):  # PEP 562: the tables' former names, deprecated
    if name == "LOSSES":
        warnings.warn("refscore.testing.LOSSES is deprecated: what your loss function receives is "
                      "refscore.testing.LOSS_INPUTS (the losses themselves are refscore.losses.LOSSES)",
                      DeprecationWarning, stacklevel=2)
        table = {}
        for loss, inputs in LOSS_INPUTS.items():
            quantities = _quantities(loss, _LOSS_VARIANTS.get(loss, ()))
            table[loss] = {"kind": _case_kind(quantities[0]), "quantities": quantities, "inputs": dict(inputs),
                           "formula": losses.LOSSES[loss].formula}
        return table
    if name == "SAMPLERS":
        warnings.warn("refscore.testing.SAMPLERS is deprecated: what your step function receives is "
                      "refscore.testing.STEP_INPUTS", DeprecationWarning, stacklevel=2)
        return {sampler: {"inputs": dict(inputs), "returns": _STEP_RETURNS[sampler]}
                for sampler, inputs in STEP_INPUTS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ the golden cases, in memory
@functools.lru_cache(maxsize=None)
def _all_specs() -> dict:
    return {**golden.case_specs(), **golden.extra_case_specs()}


def _kind(spec) -> str:
    return spec.get("kind", "losses")


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=None)
def _computed(name: str):
    """``(inputs, quantities, meta)`` of one case: the draws and values ``golden.write`` stores."""
    spec = _all_specs()[name]
    # the same function golden.write runs for every case (same seed, same engine, same values)
    inputs, quantities, meta = golden.case_values(name, spec)
    return ({k: _readonly(v) for k, v in inputs.items()}, {k: _readonly(v) for k, v in quantities.items()},
            meta)


def _class_names(spec) -> set:
    names = {spec.get("model"), spec.get("target")}
    if isinstance(spec.get("data"), dict):  # a diffusion case: its data law and its schedule
        names.add(spec["data"].get("target"))
    if isinstance(spec.get("schedule"), dict):
        names.add(spec["schedule"].get("name"))
    inner = spec.get("kwargs", {}).get("model")
    if isinstance(inner, dict):
        names.add(inner.get("model"))
    return names - {None}


def _select(cases, kinds, what="cases") -> list:
    """Case names of ``kinds`` picked by ``cases`` (see the module documentation), in file order."""
    specs = _all_specs()
    pool = [n for n, s in specs.items() if _kind(s) in kinds]
    if cases is None:
        return pool
    accepted = "None, a case name, a shell pattern, a class name, a list of those or a predicate spec -> bool"
    if callable(cases):
        out = [n for n in pool if cases(copy.deepcopy(specs[n]))]  # your predicate may change what it gets
        if not out:
            raise ValueError(f"{what}: the predicate selects none of the {len(pool)} {'/'.join(kinds)} cases")
        return out
    if isinstance(cases, str):
        items = [cases]
    elif isinstance(cases, (list, tuple, set, frozenset)):
        items = list(cases)
    else:
        raise TypeError(f"{what} must be {accepted}, got {cases!r} ({type(cases).__name__})")
    if not items:
        raise ValueError(f"{what} is empty: it selects no case (None selects every {'/'.join(kinds)} case)")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be {accepted}; its entries must be str, got {item!r} "
                            f"({type(item).__name__})")
        if item in specs and item not in pool:
            raise ValueError(f"{what}: {item!r} is a {_kind(specs[item])} case; this helper takes "
                             f"{' or '.join(kinds)} cases")
        hits = [n for n in pool if n == item or fnmatch.fnmatchcase(n, item) or item in _class_names(specs[n])]
        if not hits:
            raise ValueError(f"{what}: {item!r} names no {'/'.join(kinds)} case (a name like {pool[0]!r}, a "
                             f"pattern like {pool[0].split('_')[0] + '_*'!r}, or a class such as "
                             f"{sorted(set().union(*(_class_names(specs[n]) for n in pool)))})")
        out += hits
    return list(dict.fromkeys(out))


def golden_cases(cases=None, *, kind=None) -> golden.Golden:
    """The golden cases, computed in memory: what :func:`refscore.golden.load` returns, without files.

    Parameters
    ----------
    cases : None, str, list of str or callable, optional
        Which cases (see the module documentation): names, shell patterns,
        class names or a predicate on the spec.  Default: every case.
    kind : str or tuple of str, keyword-only, optional
        Only cases of these kinds of :data:`refscore.golden.CASE_KINDS`.

    Returns
    -------
    refscore.golden.Golden
        ``.cases`` (kind ``losses``), ``.all_cases`` (every kind),
        ``.of_kind(kind)``; ``directory`` is None.  Its inputs and quantities
        are read-only arrays bitwise equal to those of ``refscore golden``'s
        files, and it can be passed to :func:`refscore.golden.check` and
        :func:`refscore.golden.compute` in place of a directory.

    Examples
    --------
    >>> from refscore import golden
    >>> from refscore.testing import golden_cases
    >>> g = golden_cases("mlpscore_tanh_*")
    >>> sorted(g.cases)[:2]
    ['mlpscore_tanh_depth1_d1', 'mlpscore_tanh_depth1_d2']
    >>> golden.check(g, golden.compute(g)).passed
    True
    >>> list(golden_cases(kind="mala").of_kind("mala"))
    ['mala_gaussian_d2', 'mala_mixture_d1', 'mala_mixture_d2']
    """
    kinds = tuple(golden.CASE_KINDS) if kind is None else ((kind,) if isinstance(kind, str) else tuple(kind))
    unknown = [k for k in kinds if k not in golden.CASE_KINDS]
    if unknown:
        raise ValueError(f"kind must be among {list(golden.CASE_KINDS)}, got {unknown}")
    return _golden(cases, kinds, "cases")


def _golden(cases, kinds, what) -> golden.Golden:
    """:func:`golden_cases` of ``kinds``; ``what`` names the selector argument in errors."""
    names = _select(cases, kinds, what)
    specs, all_cases, meta = _all_specs(), {}, {}
    for name in names:
        inputs, quantities, info = _computed(name)
        info = copy.deepcopy(info)  # the cached case stays as computed, whatever is done to the result
        k = _kind(specs[name])
        keys = golden.cases.KINDS[k].spec_keys
        spec, layout = {key: info[key] for key in keys}, info.get("layout", "")
        all_cases[name] = golden.Case(name=name, spec=spec, layout=layout, inputs=dict(inputs),
                                      quantities=dict(quantities), kind=k)
        meta[name] = {"kind": k, **info, "inputs": list(inputs), "quantities": list(quantities)}
    manifest = {"format": "refscore-golden", "format_version": golden.FORMAT_VERSION,
                "refscore_version": __version__, "source": "in memory (refscore.testing.golden_cases)",
                "conventions": golden.CONVENTIONS, "cases": meta}
    return golden.Golden(directory=None, manifest=manifest,
                         cases={n: c for n, c in all_cases.items() if c.kind == "losses"}, all_cases=all_cases)


# ------------------------------------------------------------------ your code, called
def _precision(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype).rsplit(".", 1)[-1]  # torch.float32 -> float32
    if name not in golden.TOLERANCES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return name


def _compiled(fw, fn, jit):
    """``fn`` compiled by the framework ``fw`` (JAX: ``jax.jit``) when ``jit``, else ``fn``."""
    return fw.compiled(fn) if jit else fn


def _accepts(fn, name) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind == p.VAR_KEYWORD for p in params)


def _noted(exc, note):
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def _float(a) -> float:
    return float(np.asarray(a))


# ------------------------------------------------------------------ the verdict
def _message(head, result) -> str:
    fails = [r for r in result.rows if r.status == "FAIL"]
    per_q = result.failing_quantities()
    cases = {r.case for r in result.rows if r.status in ("PASS", "FAIL")}
    where = "; ".join(f"{q} fails in {c} of {len(cases)} case{'s' if len(cases) != 1 else ''}"
                      for q, c in per_q.items())
    lines = [f"{head}: {where} (rtol={result.rtol:g}, atol={result.atol:g})", ""]
    if result.diagnosis:
        lines += [result.diagnosis_text(), ""]
    table = result.table(only_failures=True).splitlines()
    lines += table[:2 + _MAX_ROWS]
    if len(fails) > _MAX_ROWS:
        lines.append(f"... and {len(fails) - _MAX_ROWS} more failing keys")
    lines += ["", result.summary().splitlines()[0]]
    return "\n".join(lines)


def _verdict(head, g, values, rtol, atol, precision):
    result = golden.check(g, values, rtol=rtol, atol=atol, precision=precision)
    if not result.passed:
        error = AssertionError(_message(head, result))
        error.result = result  # the CheckResult, its Diagnosis objects included, for code that reads them
        raise error
    return result


# ------------------------------------------------------------------ scores
@one_blas_thread
def assert_score_matches(fn, case=None, *, framework="numpy", rtol=None, atol=None, dtype="float64",
                         device=None, jit=True):
    """Assert that ``fn(theta, x)`` is refscore's score :math:`s_\\theta(x)` on golden model cases.

    Parameters
    ----------
    fn : callable
        ``fn(theta, x) -> (n, d)``: ``theta (P,)`` the flat parameters in the
        case's layout (:func:`refscore.interop.parameter_layout`; an MLP's is
        ``[W_1.ravel(), b_1, ..., W_L.ravel(), b_L]`` with ``W_l (out, in)``)
        and ``x (n, d)`` the points, both arrays of ``framework``.  When ``fn``
        has a parameter named ``spec`` (or ``**kwargs``) it also receives the
        case's spec ``{"model": ..., "kwargs": {"dim": ..., ...}}``: what a
        function serving several architectures needs.
    case : None, str, list of str or callable, optional
        The ``losses`` cases (see the module documentation): ``"LinearScore"``,
        ``"mlpscore_tanh_*"``, ``"gaussian_d2"``... Default: all 69.
    framework : {"numpy", "torch", "jax"}, keyword-only
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``.
    dtype : {"float64", "float32"}, keyword-only
        The inputs' dtype; also picks the default tolerances.
    device : keyword-only
        torch or JAX device of the inputs (default: the framework's).
    jit : bool, keyword-only
        ``framework="jax"``: call ``fn`` under ``jax.jit`` (default True); False
        calls it eagerly.

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        When a score differs; the message holds the diagnosis of
        :func:`refscore.golden.check` (a flipped sign is named).
    """
    fw = get_framework(framework)
    precision = _precision(dtype)
    g = _golden(case, ("losses",), "case")
    with_spec = _accepts(fn, "spec")
    values = {}
    for name, c in g.all_cases.items():
        inp = fw.as_inputs(c.inputs, dtype=precision, device=device)
        kw = {"spec": copy.deepcopy(c.spec)} if with_spec else {}
        call = _compiled(fw, lambda theta, x, kw=kw: fn(theta, x, **kw), jit)
        try:
            out = call(fw.fresh(inp["theta"]), fw.fresh(inp["x"]))
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised by your score function on golden case {name!r} ({c.spec})")
            raise
        values[f"{name}/score"] = fw.to_numpy(out)
    return _verdict(f"refscore.testing.assert_score_matches(framework={framework!r})", g, values, rtol, atol,
                    precision)


# ------------------------------------------------------------------ losses
def _loss_inputs(loss, fw, c, dtype, device, variants):
    """``[(quantity, {keyword: value})]`` of one case: the calls of your loss function."""
    inp = fw.as_inputs(c.inputs, dtype=dtype, device=device)
    if loss in losses.PER_POINT_LOSSES:
        keywords = [k for k in LOSS_INPUTS[loss] if k != _PROJECTED]
        # a 0-d stored input (sigma) is passed as a Python float, every other one as your framework's array
        common = {k: _float(c.inputs[k]) if np.ndim(c.inputs[k]) == 0 else inp[k] for k in keywords}
        if _PROJECTED not in LOSS_INPUTS[loss]:
            return [(loss, common)]
        out = []
        for kind in variants:
            v = c.quantities["v_sphere"] if kind == "sphere" else c.inputs[f"v_{kind}"]
            out.append((f"{loss}_{kind}", {**common, "v": fw.as_array(v, dtype=dtype, device=device)}))
        return out
    labels = fw.as_integers(np.rint(c.inputs["labels"]).astype(np.int64), device=device)
    common = {"x": inp["x"], "sigmas": inp["sigmas"], "labels": labels, "eps": inp["eps"]}
    return [(f"dsm_multi_{w}", {**common, "weighting": w}) for w in variants]


def _loss_values(loss_fn, fw, c, calls, *, grad, model, dtype, device, jit, label) -> dict:
    """``{quantity: value, quantity_grad: gradient}`` of your loss on one case."""
    build = None if model is None else (lambda theta: model(copy.deepcopy(c.spec), theta))
    out = {}
    for q, kw in calls:  # a fresh model and fresh inputs per call: nothing carries over between them
        mdl = fw.loss_model(c.spec, c.inputs["theta"], noise_conditional=c.kind == "dsm_multi", build=build,
                            dtype=dtype, device=device)
        value, gradient = fw.loss_value_and_grad(loss_fn, mdl, fw.fresh(kw), grad=grad, jit=jit, caller=label)
        out[q] = value
        if gradient is not None:
            out[f"{q}_grad"] = gradient
    return out


@one_blas_thread
def assert_loss_matches(loss_fn, loss, *, framework="numpy", cases=None, grad=True, model=None,
                        projections=None, weightings=None, rtol=None, atol=None, dtype="float64", device=None,
                        jit=True):
    r"""Assert that ``loss_fn`` computes refscore's ``loss`` and its gradient over ``theta``.

    The model is refscore's own (the case's spec built by :mod:`refscore.interop`,
    loaded with the case's ``theta``) unless you give ``model``, so what is tested
    is the loss: its constants, noise convention, signs and reduction.

    Parameters
    ----------
    loss_fn : callable
        Called once per case (and projection kind or weighting) with the model
        first, then keyword arguments named as in :data:`LOSS_INPUTS`:

        ==========  ========================================================
        esm         ``x (n, d)``, ``target (n, d)``
        ism         ``x (n, d)``
        dsm         ``x (n, d)``, ``sigma`` (float), ``eps (n, d)`` ~ N(0, I):
                    the noised point is ``x + sigma * eps``
        ssm         ``x (n, d)``, ``v (m, n, d)``: ``v[j, k]`` projects ``x[k]``
        ssm_vr      ``x (n, d)``, ``v (m, n, d)``
        dsm_multi   ``x (n, d)``, ``sigmas (L,)``, ``labels (n,)`` (integers),
                    ``eps (n, d)``, ``weighting`` (``"sigma2"`` or ``"none"``)
        ==========  ========================================================

        The model argument(s) and the return value, per framework:

        * ``"torch"``: ``loss_fn(module, **inputs) -> 0-dim tensor``.
          ``module`` is an ``nn.Module`` whose ``forward(x)`` is the score
          ``(n, d)`` (:func:`refscore.interop.torch.build_module`; energy models
          compute it by autograd with ``create_graph``); for ``dsm_multi``,
          ``forward(x, sigma)`` with ``sigma`` one level per point ``(n,)``.
          The helper calls ``backward()`` and reads the gradient with
          :func:`refscore.interop.torch.module_to_theta` (``grad=True``).
        * ``"jax"``: ``loss_fn(score, params, **inputs) -> scalar``.
          ``score(params, x)`` (``score(params, x, sigma)`` for ``dsm_multi``)
          is :func:`refscore.interop.jax.score_function`'s, ``params`` the list
          :func:`refscore.interop.jax.theta_to_params` makes; the helper takes
          ``jax.value_and_grad`` over ``params``.
        * ``"numpy"``: ``loss_fn(model, theta, **inputs)`` returns the value, or
          ``(value, gradient (P,))`` when ``grad`` is True.  ``model`` is the
          refscore model (``model.score(theta, x)``, ``score_jacobian``,
          ``score_vjp_params``...; ``score(theta, x, sigma)`` for ``dsm_multi``).
    loss : {"esm", "ism", "dsm", "ssm", "ssm_vr", "dsm_multi"}
    framework : {"numpy", "torch", "jax"}, keyword-only
    cases : None, str, list of str or callable, keyword-only
        The cases (see the module documentation); default: every case of the
        loss's kind (69 ``losses`` cases, 4 ``dsm_multi`` cases).
    grad : bool, keyword-only
        Compare the gradient over ``theta`` as well (default True).
    model : callable, keyword-only, optional
        Your model instead of refscore's: ``model(spec, theta)`` returns what
        ``loss_fn`` receives first, loaded with ``theta`` (a tensor, a JAX array
        or a NumPy array of the case's layout): an ``nn.Module`` whose parameters
        in registration order hold the layout's arrays; a pair ``(score,
        params)`` for JAX, ``params`` any pytree whose leaves, flattened by
        ``jax.flatten_util.ravel_pytree``, are ``theta``; for NumPy an object
        with ``score(theta, x)`` (and whatever your loss calls).
    projections : tuple of str, keyword-only, optional
        ``ssm``/``ssm_vr``: the projection kinds to run (default all of
        ``("gaussian", "rademacher", "sphere")``).
    weightings : tuple of str, keyword-only, optional
        ``dsm_multi``: default ``("sigma2", "none")``.
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``.
    dtype : {"float64", "float32"}, keyword-only
    device : keyword-only
        torch or JAX device (default: the framework's).
    jit : bool, keyword-only
        ``framework="jax"``: run ``jax.value_and_grad`` of your loss under
        ``jax.jit``, one compilation per case (default True; several times
        faster than eager).  False runs it eagerly, for code ``jit`` cannot trace.

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        When a value or gradient differs, with the diagnosis of
        :func:`refscore.golden.check` (a forgotten ½, σ for σ², a flipped
        score, a detached term, unit-sphere projections, a weighting...).
    TypeError
        A loss function returning the wrong kind of object.

    Examples
    --------
    ISM in NumPy with refscore's model primitives, value and gradient:

    >>> import numpy as np
    >>> from refscore import testing
    >>> def ism(model, theta, x):
    ...     s = model.score(theta, x)
    ...     n = len(x)
    ...     value = np.mean(model.score_trace(theta, x) + 0.5 * np.sum(s ** 2, axis=1))
    ...     w = np.full(n, 1.0 / n)
    ...     grad = model.trace_grad_params(theta, x, w) + model.score_vjp_params(theta, x, w[:, None] * s)
    ...     return value, grad
    >>> testing.assert_loss_matches(ism, "ism", cases="LinearScore").count("PASS")
    6
    """
    if loss not in LOSS_INPUTS:
        raise ValueError(f"loss must be one of {list(LOSS_INPUTS)}, got {loss!r}")
    fw = get_framework(framework)
    precision = _precision(dtype)
    every = _LOSS_VARIANTS.get(loss, ())
    kind = _case_kind(_quantities(loss, every)[0])
    if loss in ("ssm", "ssm_vr"):
        extra = every if projections is None else tuple(projections)
    elif loss == "dsm_multi":
        extra = every if weightings is None else tuple(weightings)
    else:
        extra = ()
    bad = [v for v in extra if v not in every]
    if bad or (every and not extra):
        raise ValueError(f"unknown or no projection kinds / weightings: {list(bad) or list(extra)}")
    g = golden_cases(cases, kind=kind)
    label = f"refscore.testing.assert_loss_matches({loss!r}, framework={framework!r})"
    values = {}
    for name, c in g.all_cases.items():
        calls = _loss_inputs(loss, fw, c, precision, device, extra)
        try:
            got = _loss_values(loss_fn, fw, c, calls, grad=grad, model=model, dtype=precision, device=device,
                               jit=jit, label=label)
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised while computing {loss} on golden case {name!r} ({c.spec})")
            raise
        values.update({f"{name}/{q}": v for q, v in got.items()})
    return _verdict(label, g, values, rtol, atol, precision)


# ------------------------------------------------------------------ samplers
def _states(fw, x) -> np.ndarray:
    return np.array(fw.to_numpy(x), dtype=float)


#: the forms of a sampler under test: one step (your code is called once per step) or a whole trajectory
SAMPLER_FORMS = ("step", "trajectory")


@one_blas_thread
def assert_sampler_matches(step_fn, sampler, *, form="step", framework="numpy", cases=None, rtol=None, atol=None,
                           dtype="float64", device=None, jit=True):
    r"""Assert that your sampler, fed refscore's noise, reproduces the golden trajectories.

    The golden sampler cases store the start ``x0`` (and kinetic Langevin's momenta ``v0``),
    the step (and ``sigmas``, ``friction``), and the exact noise of every step (``z``; MALA's
    uniforms ``u``; kinetic Langevin's ``2 d`` normals ``xi``).  The helper runs your sampler
    from the start over that noise and compares every state (and momentum) with refscore's.

    The reference contract is refscore's single-step API,
    :mod:`refscore.sampling.single_step`: ``state, info = step(state, key)`` with the counter
    key ``(seed, chain, step)``, whose steps are the pure functions of
    :mod:`refscore.sampling.steps` and :mod:`refscore.sampling.kinetic` fed the noise of
    :mod:`refscore.noise`; every golden trajectory is that step iterated (bit for bit the whole
    runs of :mod:`refscore.sampling`).  Your code receives the same noise as arrays.

    Parameters
    ----------
    step_fn : callable
        Your sampler, in the ``form`` you choose (the argument says which; nothing is guessed).

        ``form="step"`` (default): one update of ``c`` chains, called once per step with
        keyword arguments (:data:`STEP_INPUTS`):

        ==============  ===========================================================================
        ula             ``step_fn(x, score, step, z) -> x_next``: refscore's update is
                        ``x + step * score(x) + sqrt(2 step) z`` (eq. (4))
        mala            ``step_fn(x, score, log_prob, step, z, u)``: proposal
                        ``y = x + step * score(x) + sqrt(2 step) z``, accepted iff
                        ``log u < log_alpha`` (per chain). Return ``x_next``, or
                        ``(x_next, log_alpha)`` to have ``log_alpha`` compared too
        annealed        ``step_fn(x, score, sigma, sigmas, step, z) -> x_next``: ``score`` is that
                        of :math:`p_\sigma = p * N(0, \sigma^2 I)` at this step's level ``sigma``;
                        refscore's step there is ``step * sigma**2 / sigmas[-1]**2``
        kinetic_baoab   ``step_fn(x, v, score, step, friction, xi) -> (x_next, v_next)``:
        kinetic_obabo   positions and momenta (unit mass) after one step of the splitting
        kinetic_aboba   (docs/derivations.md §8.6); ``xi`` (c, 2 d), the first **O** takes
                        ``xi[:, :d]``, OBABO's second ``xi[:, d:]``
        ==============  ===========================================================================

        ``form="trajectory"``: your own loop over every step, called once per case with keyword
        arguments (:data:`TRAJECTORY_INPUTS`), the noise of all ``T`` steps stacked on a first axis:

        ==============  ===========================================================================
        ula             ``fn(x0, score, step, z) -> states (T, c, d)``, ``z`` (T, c, d)
        mala            ``fn(x0, score, log_prob, step, z, u) -> states (T, c, d)``, ``u`` (T, c);
                        the accept decisions are read off your states (moved or not)
        annealed        ``fn(x0, score, sigmas, step, z) -> states (L T, c, d)``: here
                        ``score(x, sigma)`` takes the level (one of ``sigmas``), and step ``t`` of
                        the stacked noise is step ``t mod T`` of level ``t // T``
        kinetic_*       ``fn(x0, v0, score, step, friction, xi) -> (states, momenta)``, each
                        (T, c, d), ``xi`` (T, c, 2 d)
        ==============  ===========================================================================

        ``states[t]`` is the state after step ``t`` (so ``states[-1]`` is the last).  ``score``
        and ``log_prob`` take and return arrays of ``framework``; ``step``, ``sigma``,
        ``friction`` are floats, ``sigmas`` a tuple of floats.  Every call gets its own copies
        of the inputs: code that writes into them is compared on what it computes.
    sampler : {"ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo", "kinetic_aboba"}
    form : {"step", "trajectory"}, keyword-only
    framework : {"numpy", "torch", "jax"}, keyword-only
    cases : None, str, list of str or callable, keyword-only
        Default: the three cases of ``sampler`` (a 2-D Gaussian, a 1-D and a
        2-D mixture; ``"GaussianMixture"`` selects the mixtures).
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``.
    dtype : {"float64", "float32"}, keyword-only
    device : keyword-only
    jit : bool, keyword-only
        ``framework="jax"``: call your step (or trajectory) under ``jax.jit``, compiled once per
        case (and level); default True.

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        When a trajectory, an accept decision or a log acceptance ratio differs, with the
        diagnosis of :func:`refscore.golden.check`: the step where your chain first departs from
        refscore's step taken from your own previous state, and the variant that fits every
        step (a step in the ``lr/2`` form or NCSN's, noise without its 2, noise or step not
        annealed, a temperature, MALA without its proposal correction or with its accept rule
        reversed, another kinetic splitting, the friction read as blackjax's decoherence length,
        a missing half step, a wrong refresh coefficient...), or the best fit of
        ``x + a eta s(x) + b sqrt(2 eta) z`` per level when none does.
    ValueError, TypeError
        A ``form`` or ``sampler`` not listed; a step or trajectory returning the wrong kind of object.

    Examples
    --------
    MALA, log acceptance ratio returned:

    >>> import numpy as np
    >>> from refscore import testing
    >>> def mala_step(x, score, log_prob, step, z, u):
    ...     y = x + step * score(x) + np.sqrt(2 * step) * z
    ...     fwd = np.sum((y - x - step * score(x)) ** 2, axis=1)
    ...     bwd = np.sum((x - y - step * score(y)) ** 2, axis=1)
    ...     log_alpha = log_prob(y) - log_prob(x) - (bwd - fwd) / (4 * step)
    ...     return np.where((np.log(u) < log_alpha)[:, None], y, x), log_alpha
    >>> testing.assert_sampler_matches(mala_step, "mala").count("PASS")
    9

    A whole ULA trajectory, your own loop:

    >>> def ula_run(x0, score, step, z):
    ...     x, states = x0, []
    ...     for z_t in z:
    ...         x = x + step * score(x) + np.sqrt(2 * step) * z_t
    ...         states.append(x)
    ...     return np.stack(states)
    >>> testing.assert_sampler_matches(ula_run, "ula", form="trajectory").count("PASS")
    3
    """
    if sampler not in STEP_INPUTS:
        raise ValueError(f"sampler must be one of {list(STEP_INPUTS)}, got {sampler!r}")
    if form not in SAMPLER_FORMS:
        raise ValueError(f"form must be one of {list(SAMPLER_FORMS)} (your step_fn takes one step, or runs the "
                         f"whole trajectory), got {form!r}")
    fw = get_framework(framework)
    precision = _precision(dtype)
    g = golden_cases(cases, kind=sampler)
    label = f"refscore.testing.assert_sampler_matches({sampler!r}, framework={framework!r}" + (
        ", form='trajectory')" if form == "trajectory" else ")")
    run = _run_steps if form == "step" else _run_trajectory
    values = {}
    for name, c in g.all_cases.items():
        try:
            values.update({f"{name}/{k}": v for k, v in
                           run(step_fn, sampler, fw, c, precision, device, jit).items()})
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised by your {sampler} {form} on golden case {name!r} ({c.spec})")
            raise
    return _verdict(label, g, values, rtol, atol, precision)


def _pair(res, what):
    """``(x_next, v_next)`` of a kinetic step (or ``(states, momenta)`` of a trajectory), else a TypeError."""
    if not (isinstance(res, (tuple, list)) and len(res) == 2):
        raise TypeError(f"your kinetic {what} must return a pair (positions, momenta), got {type(res).__name__}")
    return res


def _run_steps(step_fn, sampler, fw, c, dtype, device, jit) -> dict:
    inp = fw.as_inputs(c.inputs, dtype=dtype, device=device)
    step = _float(c.inputs["step"])
    declared = _SAMPLER_REGISTRY[sampler]  # its properties say what the step receives
    states = []
    if declared.splitting is not None:
        score, _ = fw.target_functions(c.spec, dtype=dtype, device=device)
        friction, xi = _float(c.inputs["friction"]), inp["xi"]
        one = _compiled(fw, lambda x, v, xi: step_fn(x, v=v, score=score, step=step, friction=friction, xi=xi), jit)
        x, v, momenta = inp["x0"], inp["v0"], []
        for t in range(c.inputs["xi"].shape[0]):
            x, v = _pair(one(fw.fresh(x), fw.fresh(v), fw.fresh(xi[t])), "step")  # your step may write into them
            states.append(_states(fw, x))
            momenta.append(_states(fw, v))
        return {"states": _stack(states), "momenta": _stack(momenta)}
    z = inp["z"]
    T = c.inputs["z"].shape[0]
    if declared.noise_levels:
        sigmas = tuple(float(s) for s in c.inputs["sigmas"])
        per_level = T // len(sigmas)
        x = inp["x0"]
        for i, sigma in enumerate(sigmas):
            score, _ = fw.target_functions(c.spec, sigma=sigma, dtype=dtype, device=device)
            one = _compiled(fw, lambda x, z, score=score, sigma=sigma: step_fn(
                x, score=score, sigma=sigma, sigmas=sigmas, step=step, z=z), jit)
            for j in range(per_level):
                x = one(fw.fresh(x), fw.fresh(z[i * per_level + j]))  # your step may write into its inputs
                states.append(_states(fw, x))
        return {"states": _stack(states)}
    score, log_prob = fw.target_functions(c.spec, dtype=dtype, device=device)
    if not declared.has_accept_test:
        one = _compiled(fw, lambda x, z: step_fn(x, score=score, step=step, z=z), jit)
        x = inp["x0"]
        for t in range(T):
            x = one(fw.fresh(x), fw.fresh(z[t]))  # your step may write into its inputs
            states.append(_states(fw, x))
        return {"states": _stack(states)}

    one = _compiled(fw, lambda x, z, u: step_fn(x, score=score, log_prob=log_prob, step=step, z=z, u=u), jit)

    def call(x, t):  # your step gets copies: x_t is compared with its result, z and u are used twice
        res = one(fw.fresh(x), fw.fresh(z[t]), fw.fresh(inp["u"][t]))
        return tuple(res) if isinstance(res, (tuple, list)) else (res, None)

    x = inp["x0"]
    for t in range(T):  # your chain
        x = call(x, t)[0]
        states.append(_states(fw, x))
    # your step at refscore's states: golden's decisions and ratios are those at its own states
    prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
    accept, log_alpha = [], []
    for t in range(T):
        x_t = fw.as_array(prev[t], dtype=dtype, device=device)
        y, la = call(x_t, t)[:2]
        accept.append(np.any(_states(fw, y) != _states(fw, x_t), axis=-1).astype(float))
        log_alpha.append(None if la is None else _states(fw, la))
    out = {"states": _stack(states), "accept": _stack(accept)}
    if all(la is not None for la in log_alpha):
        out["log_alpha"] = _stack(log_alpha)
    return out


def _trajectory(fw, value, what) -> np.ndarray:
    """Your trajectory's states as one (T, c, d) NumPy array (a sequence of per-step arrays is stacked)."""
    if isinstance(value, (list, tuple)):
        return _stack([_states(fw, v) for v in value])
    out = _states(fw, value)
    if out.ndim != 3:
        raise ValueError(f"your trajectory's {what} must have shape (T, c, d), got {out.shape}")
    return out


def _run_trajectory(fn, sampler, fw, c, dtype, device, jit) -> dict:
    inp = {k: fw.fresh(v) for k, v in fw.as_inputs(c.inputs, dtype=dtype, device=device).items()}
    step = _float(c.inputs["step"])
    declared = _SAMPLER_REGISTRY[sampler]
    if declared.splitting is not None:
        score, _ = fw.target_functions(c.spec, dtype=dtype, device=device)
        friction = _float(c.inputs["friction"])
        run = _compiled(fw, lambda x0, v0, xi: fn(x0=x0, v0=v0, score=score, step=step, friction=friction, xi=xi),
                        jit)
        states, momenta = _pair(run(inp["x0"], inp["v0"], inp["xi"]), "trajectory")
        return {"states": _trajectory(fw, states, "states"), "momenta": _trajectory(fw, momenta, "momenta")}
    if declared.noise_levels:
        sigmas = tuple(float(s) for s in c.inputs["sigmas"])
        levels = {s: fw.target_functions(c.spec, sigma=s, dtype=dtype, device=device)[0] for s in sigmas}

        def score(x, sigma):
            if float(sigma) not in levels:
                raise ValueError(f"score(x, sigma): sigma must be one of the case's sigmas {list(sigmas)}, got {sigma!r}")
            return levels[float(sigma)](x)

        run = _compiled(fw, lambda x0, z: fn(x0=x0, score=score, sigmas=sigmas, step=step, z=z), jit)
        return {"states": _trajectory(fw, run(inp["x0"], inp["z"]), "states")}
    score, log_prob = fw.target_functions(c.spec, dtype=dtype, device=device)
    if not declared.has_accept_test:
        run = _compiled(fw, lambda x0, z: fn(x0=x0, score=score, step=step, z=z), jit)
        return {"states": _trajectory(fw, run(inp["x0"], inp["z"]), "states")}
    run = _compiled(fw, lambda x0, z, u: fn(x0=x0, score=score, log_prob=log_prob, step=step, z=z, u=u), jit)
    states = _trajectory(fw, run(inp["x0"], inp["z"], inp["u"]), "states")
    x0 = _states(fw, fw.as_array(c.inputs["x0"], dtype=dtype, device=device))  # x0 as your dtype holds it
    prev = np.concatenate([x0[None], states[:-1]])
    # a rejected step repeats the state exactly; an accepted one moves (its proposal is never x)
    return {"states": states, "accept": np.any(states != prev, axis=-1).astype(float)}


def _stack(arrays) -> np.ndarray:
    """Your per-step outputs as one array (ValueError naming the shapes when they differ)."""
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"your step returned arrays of different shapes {sorted(shapes)}")
    return np.stack(arrays)


# ------------------------------------------------------------------ diffusion
def _diffusion_kind(sampler) -> str:
    kind = golden.cases.diffusion_kind_name(sampler) if isinstance(sampler, str) else None
    if kind not in golden.CASE_KINDS:
        names = [k[len("diffusion_"):] for k in golden.cases.DIFFUSION_KINDS if golden.cases.diffusion_sampler_of(k)]
        raise ValueError(f"sampler must be one of {names} (refscore.diffusion.SAMPLERS), got {sampler!r}")
    return kind


def _host(fw, value):
    """An output of your code as NumPy: arrays by the framework's ``to_numpy``, a list or tuple (of per-step
    arrays, say) element by element."""
    if isinstance(value, (list, tuple)):
        return [_host(fw, v) for v in value]
    return fw.to_numpy(value)


def _checked_array(fw, value, shape, what) -> np.ndarray:
    """Your ``value`` (an array of framework ``fw``, NumPy, or a sequence of them) as a float64 NumPy array
    of ``shape``."""
    try:
        a = np.array(_host(fw, value), dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"your {what} must be an array of numbers, got {type(value).__name__}") from None
    if a.shape != shape:
        raise ValueError(f"your {what} must have shape {shape}, got {a.shape}")
    return a


def _returned(out, names, what) -> dict:
    """Your function's result as ``{quantity: value}``: a dict of some of ``names``."""
    if not isinstance(out, dict):
        raise TypeError(f"your {what} must return a dict with some of {list(names)}, got {type(out).__name__}")
    unknown = sorted(set(out) - set(names))
    if unknown or not out:
        raise ValueError(f"your {what} must return a dict with some of {list(names)}, got keys {sorted(out)}")
    return out


@one_blas_thread
def assert_schedule_matches(schedule_fn, cases=None, *, framework="numpy", rtol=None, atol=None, dtype="float64",
                            device=None):
    r"""Assert that your schedule gives refscore's :math:`\alpha(t)`, :math:`\sigma(t)`, log-SNR, derivatives, grids and tables.

    The ``diffusion_schedule`` golden cases are named configurations: DDPM's linear 1000-step table,
    Stable Diffusion's ``scaled_linear`` table with each timestep spacing (``leading`` with
    ``steps_offset`` 1, ``trailing``, ``linspace``) and with zero terminal SNR, score_sde's VE and VP,
    EDM's Karras grid at 18 and 40 steps, flow matching's linear interpolant.

    Parameters
    ----------
    schedule_fn : callable
        ``schedule_fn(t, schedule, grid) -> dict``, called once per case with keyword arguments: ``t``
        (m,) the times, an array of ``framework`` (a discrete table's continuous extension between
        integers is refscore's, :class:`refscore.diffusion.schedules.VPDiscrete`), ``schedule`` the case's
        ``{"name", "kwargs"}`` (``name`` a key of :data:`refscore.diffusion.SCHEDULES`), ``grid`` its grid
        rule (``{"rule": "karras", "steps"}``, ``{"rule": "timesteps", "steps", "spacing",
        "steps_offset"}`` or ``{"rule": "linspace", "start", "stop", "points"}``).  It returns some of
        ``alpha``, ``sigma``, ``log_snr``, ``d_alpha``, ``d_sigma`` (at ``t``), ``grid`` (the
        configuration's times, largest first; a discrete table's timesteps then ``-1``), ``betas`` and
        ``alphas_cumprod`` (discrete tables), as arrays of ``framework`` (or NumPy), read back by the
        framework's ``to_numpy``: what it returns is compared.
    cases : None, str, list of str or callable, optional
        Default: every ``diffusion_schedule`` case (``"schedule_sd_*"``, ``"schedule_edm_karras_18"``...).
    framework : {"numpy", "torch", "jax"}, keyword-only
        The arrays ``t`` is given as (:class:`refscore.interop.frameworks.Framework`).
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``.
    dtype : {"float64", "float32"}, keyword-only
        The dtype of ``t``; also picks the default tolerances.
    device : keyword-only
        torch or JAX device of ``t`` (default: the framework's).

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        With the diagnosis: another timestep spacing or ``steps_offset``, Karras's ramp over ``n + 1``
        points, the noise levels squared, :math:`\alpha^2` or :math:`\sigma^2` where :math:`\alpha` or
        :math:`\sigma` belongs, each with its row of :mod:`refscore.conventions`.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore import testing
    >>> def karras(t, schedule, grid):          # EDM: alpha = 1, sigma = t; Karras et al. eq. (5)
    ...     ramp = np.linspace(0, 1, grid["steps"])
    ...     lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    ...     return {"sigma": t, "alpha": np.ones_like(t), "grid": np.append((hi + ramp * (lo - hi)) ** 7, 0.0)}
    >>> testing.assert_schedule_matches(karras, "schedule_edm_*").count("PASS")
    6
    """
    fw = get_framework(framework)
    precision = _precision(dtype)
    g = _golden(cases, ("diffusion_schedule",), "cases")
    values = {}
    for name, c in g.all_cases.items():
        try:
            out = schedule_fn(t=fw.as_array(c.inputs["t"], dtype=precision, device=device),
                              schedule=copy.deepcopy(c.spec["schedule"]), grid=copy.deepcopy(c.spec["params"]["grid"]))
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised by your schedule function on golden case {name!r}")
            raise
        for k, v in _returned(out, golden.CASE_KINDS["diffusion_schedule"]["quantities"], "schedule function").items():
            if k in c.quantities:  # a discrete table's betas are not a continuous schedule's
                values[f"{name}/{k}"] = _checked_array(fw, v, c.quantities[k].shape, f"{k} of case {name!r}")
    return _verdict(f"refscore.testing.assert_schedule_matches(framework={framework!r})", g, values, rtol, atol,
                    precision)


@one_blas_thread
def assert_denoiser_matches(denoiser_fn, cases=None, *, prediction=None, framework="numpy", rtol=None, atol=None,
                            dtype="float64", device=None):
    r"""Assert that your denoiser is the exact :math:`E[x_0 \mid x_t]` of Gaussian or mixture data, in any parametrisation.

    Parameters
    ----------
    denoiser_fn : callable
        ``denoiser_fn(x, t, data, schedule, alpha, sigma, d_alpha, d_sigma)``, called once per case with
        keyword arguments: ``x`` (n, d) noised points, ``t`` (n,) their times, ``data`` the law of
        :math:`x_0` (``{"target": "Gaussian", "kwargs": {"mean", "cov"}}`` or ``{"target":
        "GaussianMixture", "kwargs": {"weights", "means", "covs"}}``, lists of numbers), ``schedule``
        ``{"name", "kwargs"}``, and the schedule's values at ``t`` (each (n,)); ``x``, ``t`` and the four
        values are arrays of ``framework``.  It returns a dict with some of ``x0``, ``eps``, ``v``
        (:math:`\alpha\varepsilon - \sigma x_0`), ``score``, ``velocity`` (:math:`\alpha' x_0 +
        \sigma'\varepsilon`), or one (n, d) array of kind ``prediction``, as arrays of ``framework`` (or
        NumPy), read back by the framework's ``to_numpy``.
    cases : None, str, list of str or callable, optional
        Default: every ``diffusion_denoiser`` case (Gaussian and mixture data under the VP, EDM, flow,
        VE, Stable Diffusion and sub-VP schedules).
    prediction : str, keyword-only
        What an array returned is (default ``"x0"``).
    framework : {"numpy", "torch", "jax"}, keyword-only
        The arrays your denoiser is given (:class:`refscore.interop.frameworks.Framework`).
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``.
    dtype : {"float64", "float32"}, keyword-only
        The dtype of the arrays given; also picks the default tolerances.
    device : keyword-only
        torch or JAX device of the arrays given (default: the framework's).

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        With the diagnosis (a parametrisation for another, v with its sign flipped, a constant factor).

    Examples
    --------
    >>> import numpy as np
    >>> from refscore import testing
    >>> def gaussian_x0(x, t, data, schedule, alpha, sigma, d_alpha, d_sigma):
    ...     mu, S = np.array(data["kwargs"]["mean"]), np.array(data["kwargs"]["cov"])
    ...     out = []
    ...     for xi, a, s in zip(x, alpha, sigma):     # E[x0 | x] = mu + a S (a^2 S + s^2 I)^-1 (x - a mu)
    ...         out.append(mu + a * S @ np.linalg.solve(a * a * S + s * s * np.eye(len(mu)), xi - a * mu))
    ...     return np.array(out)
    >>> testing.assert_denoiser_matches(gaussian_x0, "denoiser_gaussian_*").count("PASS")
    3
    """
    from .diffusion.parametrisations import PARAMETRISATIONS

    if prediction is not None and prediction not in PARAMETRISATIONS:
        raise ValueError(f"prediction must be one of {list(PARAMETRISATIONS)}, got {prediction!r}")
    fw = get_framework(framework)
    precision = _precision(dtype)
    g = _golden(cases, ("diffusion_denoiser",), "cases")
    values = {}
    for name, c in g.all_cases.items():
        kw = {k: fw.as_array(c.inputs[k], dtype=precision, device=device)
              for k in ("x", "t", "alpha", "sigma", "d_alpha", "d_sigma")}
        try:
            out = denoiser_fn(data=copy.deepcopy(c.spec["data"]), schedule=copy.deepcopy(c.spec["schedule"]), **kw)
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised by your denoiser on golden case {name!r}")
            raise
        if not isinstance(out, dict):
            out = {prediction or "x0": out}
        for k, v in _returned(out, PARAMETRISATIONS, "denoiser").items():
            values[f"{name}/{k}"] = _checked_array(fw, v, c.quantities[k].shape, f"{k} of case {name!r}")
    return _verdict(f"refscore.testing.assert_denoiser_matches(framework={framework!r})", g, values, rtol, atol,
                    precision)


#: what a diffusion sampler under test receives (``assert_diffusion_sampler_matches``), by form; "array":
#: an array of the helper's ``framework`` (``dtype``, ``device``)
DIFFUSION_INPUTS = {
    "trajectory": {
        "x": "(n, d) array, the states at t[0]",
        "t": "(N + 1,) array, the grid, largest first (times of the case's schedule)",
        "model": "callable model(x (n, d) array, t a float or a 0-d array) -> (n, d) array: the exact prediction "
                 "of kind `prediction` at (x, t)",
        "prediction": "'x0', 'eps', 'v', 'score' or 'velocity': what model returns",
        "schedule": "the case's refscore.diffusion Schedule (alpha(t), sigma(t), their derivatives, log_snr(t)): "
                    "the object itself for NumPy in float64, else its refscore.interop.frameworks.FrameworkSchedule "
                    "(a time may be a float or an array; arrays come back as arrays)",
        "z": "(N, k, n, d) array, the noise of every step (None for a deterministic run): z[i, j] the j-th block "
             "step i uses",
        "options": "dict: the sampler's options (refscore.diffusion.SAMPLERS[name].options, the case's values)",
    },
    "step": {
        "x": "(n, d) array, the state at t", "t": "float, this step's time", "t_next": "float, the next time",
        "model": "as for a trajectory", "prediction": "as for a trajectory", "schedule": "as for a trajectory",
        "noise": "(k, n, d) array, this step's noise blocks (None for a deterministic step)",
        "options": "as for a trajectory", "i": "int, the step's index", "n_steps": "int, the run's number of steps",
        "carry": "what your previous step returned under 'carry' (None at the first step): a multistep method's memory",
    },
}


def _model(sub, prediction, fw, dtype, device):
    """The case's exact model as your code calls it: ``model(x, t)`` on arrays of ``fw``, computed by refscore's
    :class:`~refscore.diffusion.Denoiser` in NumPy float64 and returned as a new array of ``fw`` (``dtype``)."""
    D = sub.denoiser
    schedule = sub.schedule

    def model(x, t):
        x = np.array(fw.to_numpy(x), dtype=float)
        t_host = fw.to_numpy(t)
        if t_host.size != 1:
            raise TypeError(f"model(x, t): t must be one time (a float or a 0-d array), got shape {t_host.shape}")
        t = float(t_host.reshape(()))
        schedule.alpha(t)  # the domain check, naming t
        return fw.as_array(D.predict(prediction, x, t), dtype=dtype, device=device)
    return model


def _sampler_values(name, c, out, what, fw) -> dict:
    """Your sampler's result as golden values: an array (the trajectory) or a dict of the case's quantities."""
    if not isinstance(out, dict):
        out = {"trajectory": out}
    vals = {}
    for k, v in _returned(out, c.quantities, what).items():
        vals[f"{name}/{k}"] = _checked_array(fw, v, c.quantities[k].shape, f"{k} of case {name!r}")
    return vals


def _run_diffusion_steps(step_fn, c, kwargs, fw, dtype, device) -> dict:
    """Your step iterated down the case's grid: each call gets a new array of the state (the stored ``x`` as
    ``dtype`` holds it, then your previous step's, read back and converted afresh), the grid's times as floats
    as ``dtype`` holds them, and the step's noise; ``carry`` goes back to your next step as it is."""
    t = np.asarray(c.inputs["t"], dtype=dtype)
    z = c.inputs.get("z")
    x = np.asarray(c.inputs["x"], dtype=dtype).astype(float)  # trajectory[0]: where your run starts
    traj, x0s, x0s2, carry = [x], [], [], None
    for i in range(len(t) - 1):
        out = step_fn(x=fw.as_array(x, dtype=dtype, device=device), t=float(t[i]), t_next=float(t[i + 1]),
                      noise=None if z is None else fw.as_array(z[i], dtype=dtype, device=device), i=i,
                      n_steps=len(t) - 1, carry=carry, **kwargs)
        if isinstance(out, dict):
            if "x" not in out:
                raise ValueError(f"your step must return x_next, or a dict with 'x' (and 'x0_hat', 'x0_hat_2', "
                                 f"'carry'), got keys {sorted(out)}")
            x = np.array(_host(fw, out["x"]), dtype=float)
            carry = out.get("carry")
            if "x0_hat" in out:
                x0s.append(_host(fw, out["x0_hat"]))
            if out.get("x0_hat_2") is not None:
                x0s2.append(_host(fw, out["x0_hat_2"]))
        else:
            x = np.array(_host(fw, out), dtype=float)
        traj.append(x)
    result = {"trajectory": np.stack(traj)}
    if x0s:
        result["x0_hat"] = np.stack(x0s)
    if x0s2:
        result["x0_hat_2"] = np.stack(x0s2)
    return result


@one_blas_thread
def assert_diffusion_sampler_matches(fn, sampler, *, form="trajectory", framework="numpy", cases=None, rtol=None,
                                     atol=None, dtype="float64", device=None):
    r"""Assert that your diffusion sampler, fed refscore's exact denoiser and noise, reproduces refscore's runs.

    The ``diffusion_<sampler>`` golden cases store a start ``x``, a grid ``t`` and, for a stochastic run,
    the noise ``z`` of every step; their manifest entries give the schedule, the data, the model's
    prediction type and the sampler's options.  Your sampler gets the exact model of the case (its
    prediction of the case's type, computed by :class:`refscore.diffusion.Denoiser`), runs from ``x``
    down ``t`` on the stored noise, and every state (and, when you return them, the :math:`\hat x_0` your
    steps used) is compared with refscore's run (:func:`refscore.diffusion.sample`).

    Parameters
    ----------
    fn : callable
        ``form="trajectory"`` (default): ``fn(x, t, model, prediction, schedule, z, options)``, your whole
        run, called once per case with keyword arguments (:data:`DIFFUSION_INPUTS`), returning the
        trajectory (N + 1, n, d) (``trajectory[0] = x``) or a dict with ``trajectory`` and any of
        ``x0_hat`` (N, n, d), ``x0_hat_2`` (Heun's second stages) of the case's kind.
        ``form="step"``: ``fn(x, t, t_next, model, prediction, schedule, noise, options, i, n_steps,
        carry)``, one step, returning ``x_next`` or a dict with ``x`` and any of ``x0_hat``, ``x0_hat_2``
        (None when the step has none) and ``carry`` (passed to your next step as it is).
        ``model(x, t)`` takes the schedule's own times (EDM: :math:`t = \sigma`; a discrete table: its
        timestep; ``-1`` is its clean end).

        In ``framework``'s arrays (``dtype``, ``device``), each call gets new ones:

        * ``x``, ``t`` and ``z`` (a step's ``x`` and ``noise``) are arrays of ``framework``; a step's
          ``t`` and ``t_next`` are Python floats, the grid's values as ``dtype`` holds them (float32:
          rounded, as ``t`` of a trajectory).
        * ``model(x, t)`` takes an (n, d) array of ``framework`` and one time (a float, or a 0-d array
          such as ``t[i]``) and returns a new (n, d) array of ``framework``: refscore's exact
          prediction, computed in NumPy float64 at your ``x`` and ``t`` (float32 values are exact in
          float64) and converted (float32 rounds it).  It is a call to the host: no gradient flows
          through it, and ``jax.jit`` cannot trace it, so your function is called eagerly, never under
          ``jax.jit`` (the other helpers' ``jit`` has no counterpart here); compile the parts of your
          sampler that take the model's output, inside it, if you want them compiled.
        * ``schedule``: the case's refscore schedule (:mod:`refscore.diffusion.schedules`).  With
          ``framework="numpy"`` in float64 it is the object itself; otherwise the
          :class:`~refscore.interop.frameworks.FrameworkSchedule` around it: its methods take a float or
          a 0-d array (``schedule.alpha(t[i])``: a Python float back) or an array (an array of
          ``framework`` back), and its arrays (a table's ``alphas_cumprod``, ``betas``) are arrays of
          ``framework`` in ``dtype``; ``schedule.numpy_schedule`` is the object.
        * ``prediction`` (str) and ``options`` (dict of numbers) are the same in every framework.
        * What your function returns (arrays of ``framework``, NumPy arrays, or lists of per-step
          arrays) is read back by the framework's ``to_numpy`` and compared in float64.
    sampler : str
        A name of :data:`refscore.diffusion.SAMPLERS` (``"euler"``, ``"heun"``, ``"ddim"``, ``"ddpm"``,
        ``"euler_ancestral"``, ``"dpmpp_2m"``, ``"pc"``, ``"pf_ode"``).
    form : {"trajectory", "step"}, keyword-only
    framework : {"numpy", "torch", "jax"}, keyword-only
        The arrays your sampler is given (:class:`refscore.interop.frameworks.Framework`).
    cases : None, str, list of str or callable, keyword-only
        Default: every case of the sampler.
    rtol, atol : float, keyword-only
        Default: :data:`refscore.golden.TOLERANCES` of ``dtype``: ``(1e-8, 1e-10)`` for float64,
        ``(1e-4, 1e-4)`` for float32, those of every helper.  A golden run is at most ten steps of
        :math:`O(1)` arithmetic on states of size at most 80 (EDM's :math:`\sigma_{\max}`): a correct
        float32 sampler is off by a few float32 roundings (:math:`6\cdot10^{-8}` relative) per step, at
        most :math:`1.1\cdot10^{-5}` on the golden cases (pc's :math:`\hat x_0` on VP, where
        :math:`1/\alpha(1) \approx 150` magnifies them; :math:`5\cdot10^{-6}` for the torch and JAX samplers
        of tests/test_diffusion_frameworks.py), ten times inside :math:`10^{-4} + 10^{-4}|g|`, while
        every slip the diagnosis names moves some value by :math:`4.7\cdot10^{-3}` or more (the
        ``leading`` spacing without ``steps_offset``, the smallest) and is named in float32 as in
        float64.
    dtype : {"float64", "float32"}, keyword-only
        The dtype of the arrays given (and of the model's output); also picks the default tolerances.
    device : keyword-only
        torch or JAX device of the arrays given (default: the framework's).

    Returns
    -------
    refscore.golden.CheckResult

    Raises
    ------
    AssertionError
        With the diagnosis of :func:`refscore.golden.check`: the first step at which your run departs from
        refscore's step taken from your own state, whether the denoiser output or the update departs (and,
        for the former, the time at which the exact denoiser gives your output), and the variant that fits
        every step: the noise levels squared, the last :math:`\sigma` repeated, Karras's ramp over ``n + 1``
        points, another timestep spacing, DDIM's final :math:`\bar\alpha_0`, a prediction type read as
        another, v-prediction's :math:`c_{\rm out}` with its sign flipped, Heun's second stage at
        :math:`\hat t`, the churn's ``max`` for ``min``, a PC run without its final denoise; each with its
        row of :mod:`refscore.conventions`.

    Examples
    --------
    Karras et al.'s Euler sampler (Algorithm 1 with first-order steps) on EDM's schedule:

    >>> import numpy as np
    >>> from refscore import testing
    >>> def euler(x, t, model, prediction, schedule, z, options):
    ...     states = [x]
    ...     for t_cur, t_next in zip(t[:-1], t[1:]):
    ...         d = (x - model(x, t_cur)) / t_cur         # dx/dsigma = (x - D(x; sigma)) / sigma
    ...         x = x + (t_next - t_cur) * d
    ...         states.append(x)
    ...     return np.stack(states)
    >>> testing.assert_diffusion_sampler_matches(euler, "euler", cases="*edm_gaussian*").count("PASS")
    1

    The same loop in float32 NumPy, compared with the float32 tolerances:

    >>> res = testing.assert_diffusion_sampler_matches(euler, "euler", cases="*edm_gaussian*", dtype="float32")
    >>> res.passed, (res.rtol, res.atol)
    (True, (0.0001, 0.0001))
    """
    from .diffusion.samplers import SAMPLERS as DIFFUSION_SAMPLERS

    kind = _diffusion_kind(sampler)
    if form not in ("trajectory", "step"):
        raise ValueError(f"form must be 'trajectory' (your whole run) or 'step' (one step), got {form!r}")
    fw = get_framework(framework)
    precision = _precision(dtype)
    g = _golden(cases, (kind,), "cases")
    values = {}
    for name, c in g.all_cases.items():
        sub = golden.cases.build_diffusion(c.spec)
        p = c.spec["params"]
        golden.cases.diffusion_options(sampler, p["options"], len(c.inputs["t"]) - 1)  # the case's, validated
        options = {**DIFFUSION_SAMPLERS[sampler].options, **p["options"]}  # as written, the defaults filled in
        kwargs = {"model": _model(sub, p["prediction"], fw, precision, device), "prediction": p["prediction"],
                  "schedule": fw.diffusion_schedule(sub.schedule, dtype=precision, device=device),
                  "options": copy.deepcopy(options)}
        try:
            if form == "trajectory":
                z = c.inputs.get("z")
                out = fn(x=fw.as_array(c.inputs["x"], dtype=precision, device=device),
                         t=fw.as_array(c.inputs["t"], dtype=precision, device=device),
                         z=None if z is None else fw.as_array(z, dtype=precision, device=device), **kwargs)
            else:
                out = _run_diffusion_steps(fn, c, kwargs, fw, precision, device)
        except Exception as exc:
            _noted(exc, f"refscore.testing: raised by your {sampler} {form} on golden case {name!r}")
            raise
        values.update(_sampler_values(name, c, out, f"{sampler} {form}", fw))
    return _verdict(f"refscore.testing.assert_diffusion_sampler_matches({sampler!r}, form={form!r}, "
                    f"framework={framework!r})", g, values, rtol, atol, precision)
