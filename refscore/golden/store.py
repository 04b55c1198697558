"""The golden files on disk: their format, :func:`load` and the writer, the manifest checks and binding.

``golden.npz`` holds one float64 array per key ``"<case>/<name>"``;
``manifest.json`` says what every case is (:data:`FORMAT_VERSION`, the kinds of
:data:`~refscore.golden.cases.CASE_KINDS`).  Reading checks everything before it
trusts it: the manifest's fields against the case table, the arrays against the
manifest, and each case's ``binding`` (digests of its arrays and of its entry)
against both, so that a description edited after writing is refused.  Every
problem is one line naming the file and what is wrong; the file I/O itself is
:mod:`refscore._files`.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from .._files import check_creatable, open_input, os_error_message, read_npz, reason, write_files_atomically
from ..losses import LOSSES
from ..models.activations import ACTIVATIONS
from .cases import (ACTIVATION_NAMES, CASE_KINDS, COEFFICIENT_TABLES, CONVENTIONS, DIFFUSION_KINDS, GRID_RULES, INPUTS,
                    KINDS, STORED_LOSS_INPUTS, LOSS_QUANTITIES, PROJECTION_KINDS, QUANTITIES, TOLERANCES,
                    build_diffusion, build_model, build_target, case_seed, case_values, diffusion_grid,
                    projection_key)

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "FORMAT_LOSSES",
    "FORMAT_PROJECTIONS",
    "FORMAT_KINDS",
    "DATA_FILE",
    "MANIFEST_FILE",
    "Case",
    "Golden",
    "load",
    "write_cases",
]

#: bumped whenever keys, shapes or meanings change.  4: the diffusion kinds (diffusion_schedule,
#: diffusion_denoiser, diffusion_coefficients and diffusion_<sampler>), whose cases record a
#: ``schedule``, a ``data`` law (or null) and ``params``; 3: the kinetic Langevin kinds
#: kinetic_baoab, kinetic_obabo and kinetic_aboba; 2: the case kinds dsm_multi, ksd, ula,
#: mala and annealed, and a ``kind`` per case; 1: per-point losses only
FORMAT_VERSION = 4
#: the format versions :func:`load` reads (a format 1 file is all ``losses`` cases)
READABLE_VERSIONS = (1, 2, 3, 4)
#: the case kinds each format version knows (a kind added since is refused in an older file)
FORMAT_KINDS = {1: ("losses",), 2: ("losses", "dsm_multi", "ksd", "ula", "mala", "annealed"),
                3: ("losses", "dsm_multi", "ksd", "ula", "mala", "annealed", "kinetic_baoab", "kinetic_obabo",
                    "kinetic_aboba")}

DATA_FILE = "golden.npz"
MANIFEST_FILE = "manifest.json"

#: the per-point losses and the projection kinds of the ``losses`` cases of formats 1 and 2: every
#: such case holds their quantities and inputs.  A loss or projection kind added to the registries
#: of :mod:`refscore.losses` since gives the cases more quantities (and maybe inputs); a file
#: written before lacks them and still loads, and :func:`~refscore.golden.compute` and
#: :func:`~refscore.golden.check` cover what it holds
FORMAT_LOSSES = ("esm", "ism", "dsm", "ssm", "ssm_vr")
FORMAT_PROJECTIONS = ("gaussian", "rademacher", "sphere")


# ------------------------------------------------------------------ loading
@dataclass
class Case:
    """One golden case: ``name``, ``spec``, ``layout``, ``inputs``, ``quantities`` and ``kind``.

    ``spec`` is ``{"model": class name, "kwargs": {...}}`` for the model kinds
    (``losses``, ``dsm_multi``), ``{"schedule": {...}, "data": {...} or None,
    "params": {...}}`` for the diffusion kinds and ``{"target": class name, "kwargs":
    {...}, "params": {...}}`` for the others; ``layout`` is ``""`` but for the model kinds.
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
        return build_model(self.spec) if KINDS[self.kind].subject == "model" else None

    @property
    def target(self):
        """The closed-form target of this case (ksd and sampler kinds), else None."""
        return build_target(self.spec) if KINDS[self.kind].subject == "target" else None

    @property
    def diffusion(self):
        """The schedule and data law of this case (:class:`~refscore.golden.cases.DiffusionSubject`, diffusion
        kinds), else None."""
        return build_diffusion(self.spec) if KINDS[self.kind].subject == "diffusion" else None

    @property
    def dim(self) -> int:
        """The dimension d of the case's points (1 for a diffusion case without points: a schedule, a table)."""
        for k in ("x", "x0"):
            if k in self.inputs and self.inputs[k].ndim > 1:
                return int(self.inputs[k].shape[-1])
        if KINDS[self.kind].subject == "diffusion":
            return 1
        return int(self.spec["kwargs"]["dim"])  # pragma: no cover - every other kind stores x or x0


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
        kind = KINDS[meta.get("kind", "losses")]
        spec = {k: meta[k] for k in kind.spec_keys}
        layout = meta["layout"] if kind.subject == "model" else ""
        cases[name] = Case(
            name=name,
            spec=spec,
            layout=layout,
            inputs={k: got[k] for k in meta["inputs"]},
            quantities={k: got[k] for k in meta["quantities"]},
            kind=kind.name,
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
#: the same for the diffusion kinds (format 4)
_DIFFUSION_CASE_FIELDS = {"schedule": (dict, "an object {'name', 'kwargs'}"),
                          "data": ((dict, type(None)), "an object {'target', 'kwargs'} or null"),
                          "params": (dict, "an object"), "inputs": (list, "a list of names"),
                          "quantities": (list, "a list of names"), "shapes": (dict, "an object of name -> shape")}
_FIELDS = {"model": _CASE_FIELDS, "target": _TARGET_CASE_FIELDS, "diffusion": _DIFFUSION_CASE_FIELDS}


def _required(kind: str, key: str) -> set:
    """The inputs or quantities (``key``) every case of ``kind`` holds in a readable file: all of the
    kind's, except for ``losses`` those of losses and projections registered after the format."""
    names = set(CASE_KINDS[kind][key]) - set(KINDS[kind].optional)
    if kind != "losses":
        return names
    if key == "quantities":
        def of_the_format(q):
            found = LOSS_QUANTITIES.get(q[:-5] if q.endswith("_grad") else q)
            return found is None or (found[0] in FORMAT_LOSSES and found[1] in (None, *FORMAT_PROJECTIONS))
        return {q for q in names if of_the_format(q)}
    of_losses = {inp.key for inp in STORED_LOSS_INPUTS.values()} | {projection_key(k) for k in PROJECTION_KINDS}
    of_format = {STORED_LOSS_INPUTS[n].key for loss in FORMAT_LOSSES for n in LOSSES[loss].inputs if n in STORED_LOSS_INPUTS}
    of_format |= {projection_key(k) for k in FORMAT_PROJECTIONS}
    return {k for k in names if k not in of_losses or k in of_format}


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
            known = FORMAT_KINDS.get(version, tuple(CASE_KINDS))
            if kind not in CASE_KINDS or kind not in known:
                raise bad(f"{where}: 'kind'", f"must be one of {', '.join(known)} (format_version {version}), "
                          f"got {shown(kind)}")
        fields = _FIELDS[KINDS[kind].subject]
        for key, (typ, words) in fields.items():
            if key not in meta:
                raise bad(where, f"has no {key!r}")
            if not isinstance(meta[key], typ) or isinstance(meta[key], bool):
                raise bad(f"{where}: {key!r}", f"must be {words}, got {shown(meta[key])}")
        for key in ("inputs", "quantities"):
            listed = meta[key]
            if not all(isinstance(k, str) for k in listed) or len(set(listed)) != len(listed):
                raise bad(f"{where}: {key!r}", f"must be a list of distinct names, got {shown(listed)}")
            unknown = sorted(set(listed) - set(CASE_KINDS[kind][key]))
            missing = sorted(_required(kind, key) - set(listed))
            if unknown or missing:
                raise bad(f"{where}: {key!r}", f"lists {', '.join(unknown) or 'nothing unknown'} and lacks "
                          f"{', '.join(missing) or 'nothing'}: not format_version {version}'s {kind} {key}")
        shapes = meta["shapes"]
        for k in (*meta["inputs"], *meta["quantities"]):
            shape = shapes.get(k)
            if not isinstance(shape, list) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise bad(f"{where}: 'shapes'", f"must give {k!r} a list of non-negative integers, got {shown(shape)}")
        if KINDS[kind].subject != "model":
            for key, (valid, words) in KINDS[kind].params.items():
                value = meta["params"].get(key)
                if not valid(value):
                    raise bad(f"{where}: 'params'", f"must give {key!r} {words}, got {shown(value)}")
        if KINDS[kind].subject == "diffusion":
            try:
                subject = build_diffusion({"schedule": meta["schedule"], "data": meta["data"]})
                if "grid" in meta["params"]:
                    diffusion_grid(subject.schedule, meta["params"]["grid"])
            except (TypeError, ValueError, KeyError, OverflowError, np.linalg.LinAlgError) as exc:
                reason = " ".join(str(exc).split())
                raise bad(where, f"schedule {shown(meta['schedule'])} with data {shown(meta['data'])} and params "
                          f"{shown(meta['params'])} cannot be built: {reason}") from None
            continue
        if KINDS[kind].subject == "target":
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


# ------------------------------------------------------------------ writing
def write_cases(directory, specs, *, force=False) -> pathlib.Path:
    r"""Write the golden files of the cases ``specs`` (``golden.npz`` and ``manifest.json``) into ``directory``.

    :func:`refscore.golden.write` writes every case of the table this way.  Each
    case's values are :func:`~refscore.golden.cases.case_values`: every input drawn
    from a fixed seed (recorded per case), every quantity computed by refscore's
    public API, so two runs of the same refscore version write the same numbers.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    specs : dict
        ``{case name: spec}`` (values of :func:`~refscore.golden.cases.case_specs`
        and :func:`~refscore.golden.cases.extra_case_specs`), in file order.
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
    for name, spec in specs.items():
        inputs, quantities, info = case_values(name, spec)
        for k, v in {**inputs, **quantities}.items():
            arrays[f"{name}/{k}"] = np.asarray(v, dtype=float)
        meta[name] = {
            "kind": spec.get("kind", "losses"),
            **info,
            "seed": case_seed(name),
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
        "losses": {name: spec.formula for name, spec in LOSSES.items()},
        "diffusion": {
            "schedules": "schedule {'name': key of refscore.diffusion.schedules.SCHEDULES, 'kwargs'}: x_t = "
            "alpha(t) x0 + sigma(t) eps; vp: alpha = exp(-A), A = t^2 (beta_max - beta_min) / 4 + t beta_min / 2; "
            "subvp: sigma = 1 - alpha^2; ve: alpha = 1, sigma = sigma_min (sigma_max / sigma_min)^t; edm: alpha = 1, "
            "sigma = t; flow: alpha = 1 - t, sigma = t; vp_discrete: diffusers' table alpha_bar_n at integer n, "
            "t = -1 the clean end, between integers sigma/alpha interpolated linearly",
            "data": "data {'target': 'Gaussian' | 'GaussianMixture', 'kwargs'}: the law of x0 (null: none)",
            "prediction": "a sampler case's model returns refscore's exact prediction of kind params 'prediction' at "
            "(x, t): x0 = E[x0 | x_t]; eps = (x - alpha x0) / sigma; v = alpha eps - sigma x0; score = -eps / sigma; "
            "velocity = alpha' x0 + sigma' eps",
            "grid_rules": dict(GRID_RULES),
            "coefficient_tables": {k: {"columns": list(v[0]), "about": v[2]} for k, v in COEFFICIENT_TABLES.items()},
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
