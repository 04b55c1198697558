r"""Golden files: refscore's values on fixed inputs, for validating other backends.

A user with a JAX, PyTorch or C++ implementation of score matching writes the
golden files once, computes the same quantities on the stored inputs with their
own code, and lets :func:`check` say, quantity by quantity, what agrees::

    refscore golden --out golden/           # golden/golden.npz + golden/manifest.json
    python my_backend.py golden/ values.npz # user code: same keys, own numbers
    refscore check golden/ values.npz       # PASS/FAIL per quantity, exit code 1 on failure

Files
-----
``golden.npz``
    One array per key ``"<case>/<name>"``.  Each case holds its *inputs*
    (``theta``, ``x``, ``u``, ``target``, ``eps``, ``sigma``, ``v_gaussian``,
    ``v_rademacher``, ``z_sphere``) and the *quantities* refscore computed from
    them (:data:`QUANTITIES`): score, Jacobian, trace, JVP, projections and every
    loss with its gradient over ``theta``.
``manifest.json``
    Format version, refscore version, the conventions in words
    (:data:`CONVENTIONS`), the meaning of every input and quantity, and per case
    the model (class and constructor arguments), ``n_params``, the ``theta``
    layout in words (``model.layout``), the seed the inputs were drawn from, and
    the keys and shapes.

Cases: dimensions 1, 2 and 5; :class:`~refscore.models.GaussianModel`,
:class:`~refscore.models.LinearScore`, :class:`~refscore.models.GaussianMixtureModel`
(2 components), and :class:`~refscore.models.MLPScore` /
:class:`~refscore.models.MLPEnergy` with one and two hidden layers for each
activation (tanh, softplus, sigmoid, silu, gelu): 69 cases, 23 quantities each.

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

References
----------
Eqs. (2), (3), (6), (7); Hyvärinen (2005); Vincent (2011); Song, Garg, Shi &
Ermon (2019).

Examples
--------
>>> import tempfile, refscore.golden as golden
>>> d = tempfile.mkdtemp()
>>> golden.write(d)                                   # doctest: +SKIP
>>> golden.check(d, golden.compute(d)).passed         # doctest: +SKIP
True
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import __version__, losses
from .losses import PROJECTIONS
from .models import GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy, MLPScore
from .models.activations import ACTIVATIONS

__all__ = [
    "FORMAT_VERSION",
    "CONVENTIONS",
    "INPUTS",
    "QUANTITIES",
    "TOLERANCES",
    "Case",
    "Golden",
    "CheckRow",
    "CheckResult",
    "case_specs",
    "build_model",
    "write",
    "load",
    "compute",
    "check",
]

#: bumped whenever keys, shapes or meanings change; :func:`check` refuses other versions
FORMAT_VERSION = 1

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
    "ssm": "ssm = mean_{j,k} [v_jk^T grad_x s(x_k) v_jk + 1/2 (v_jk^T s(x_k))^2] (eq. (7))",
    "ssm_vr": "ssm_vr = mean_{j,k} [v_jk^T grad_x s(x_k) v_jk + 1/2 ||s(x_k)||^2] (eq. (7))",
    "projections": "E[v v^T] = I for every kind: gaussian v ~ N(0, I); rademacher v_i = +-1; "
    "sphere v = sqrt(d) z / ||z|| (radius sqrt(d), NOT the unit sphere)",
    "langevin_step": "x <- x + eta s(x) + sqrt(2 eta) z (eq. (4)); the (lr/2, sqrt(lr)) form has eta = lr/2; "
    "annealed: eta_i = step sigma_i^2 / sigma_L^2",
    "theta": "one flat float64 vector per case; its layout in words is the case's 'layout'",
}

#: inputs of every case, and what they mean
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


#: quantities of every case (what :func:`check` compares), and what they mean
QUANTITIES = _quantity_table()

_MODEL_CLASSES = {
    "GaussianModel": GaussianModel,
    "LinearScore": LinearScore,
    "GaussianMixtureModel": GaussianMixtureModel,
    "MLPScore": MLPScore,
    "MLPEnergy": MLPEnergy,
}


# ------------------------------------------------------------------ cases
def case_specs() -> dict:
    """The golden cases: ``{name: {"model": class name, "kwargs": {...}}}`` in file order.

    Names read ``gaussian_d2``, ``linear_d5``, ``mixture_d1``,
    ``mlpscore_tanh_depth1_d2``, ``mlpenergy_gelu_depth2_d5``.
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


def build_model(spec: dict, *, reference: bool = False):
    """The refscore model of a case spec ``{"model": class name, "kwargs": {...}}``.

    ``reference=True`` runs MLPScore's fused losses on the readable NumPy engine
    (the golden values come from the reference, and a cold ``refscore golden``
    compiles nothing); the engines agree to 1e-12, far inside the tolerances.
    """
    try:
        cls = _MODEL_CLASSES[spec["model"]]
    except KeyError:
        raise ValueError(
            f"spec['model'] must be one of {sorted(_MODEL_CLASSES)}, got {spec.get('model')!r}"
        ) from None
    kwargs = dict(spec.get("kwargs", {}))
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    if reference and cls is MLPScore:
        kwargs["backend"] = "numpy"
    return cls(**kwargs)


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


# ------------------------------------------------------------------ files
# Reading and writing the golden, values and data files (the command line uses these too):
# every problem is one line naming the file and what is wrong with it; nothing is allocated
# before the sizes declared in a file are checked against the file and against memory; no
# numpy message advising allow_pickle reaches the user; writes are atomic.

def _memory_limit():
    """Bytes of physical memory of this machine, or None where the OS does not say.

    Nothing larger is ever allocated for a file or a sample: it could not succeed.
    """
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _fmt_bytes(n) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"


def _too_big(nbytes):
    """Why ``nbytes`` cannot be allocated here (a phrase), or None when it may fit."""
    limit = _memory_limit()
    if limit is not None and nbytes > limit:
        return f"needs {_fmt_bytes(nbytes)} of memory, more than this machine has ({_fmt_bytes(limit)})"
    return None


def _os_error_message(exc: OSError, path, what: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{what} {path} not found"
    if isinstance(exc, NotADirectoryError):
        return f"{what} {path} not found: a part of its path is not a directory"
    if isinstance(exc, IsADirectoryError):
        return f"{what} {path} is a directory, not a file"
    if isinstance(exc, PermissionError):
        return f"{what} {path} is not readable: permission denied"
    return f"cannot read {what} {path}: {exc.strerror or exc}"


def _open_input(path, what: str):
    """``open(path, "rb")`` of a regular file; else the OSError subclass whose one-line message
    says why (not found, a directory, permission denied, not a regular file)."""
    try:
        st = os.stat(path)
    except PermissionError:
        raise PermissionError(f"{what} {path} cannot be reached: permission denied on a directory above it") from None
    except OSError as exc:
        raise type(exc)(_os_error_message(exc, path, what)) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{what} {path} is not a regular file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise type(exc)(_os_error_message(exc, path, what)) from None


class _FileProblem(Exception):
    """What is wrong with an array, worded to follow its name (internal)."""


#: what a damaged zip or .npy stream may raise while it is read
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError, SyntaxError, TypeError)


def _read_npy_header(fp):
    """``(shape, fortran_order, dtype)`` of the .npy stream at ``fp`` (at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
    except _READ_ERRORS:
        raise _FileProblem("is not a .npy array file (write it with numpy.save)") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise _FileProblem(f"uses .npy format version {version[0]}.{version[1]}; numeric arrays are "
                           "written as 1.0 or 2.0 (numpy.save)")
    try:
        shape, fortran, dtype = readers[version](fp)
    except _READ_ERRORS:
        # numpy's own message here may advise allow_pickle=True: it must not reach the user
        raise _FileProblem("has a damaged .npy header") from None
    if any(n < 0 for n in shape):
        raise _FileProblem(f"has a damaged .npy header (shape {shape})")
    return shape, fortran, dtype


def _dtype_problem(dtype, real: bool):
    if dtype.hasobject:
        return (f"holds an object array (dtype {dtype}), which is never loaded (unpickling can run "
                "arbitrary code); save numeric arrays")
    if dtype.names is not None or dtype.kind == "V":
        return f"holds a structured array (dtype {dtype}); save plain numeric arrays"
    if real and dtype.kind == "c":
        return (f"holds complex values (dtype {dtype}); refscore's values are real, complex ones are "
                "refused (save the real part if the imaginary part is zero)")
    return None


def _read_array(fp, available: int, *, real: bool, drain: bool = False) -> np.ndarray:
    """The array of the .npy stream ``fp`` of ``available`` bytes, its header checked first:
    dtype, declared size against the bytes present and against memory."""
    start = fp.tell()
    shape, _, dtype = _read_npy_header(fp)
    problem = _dtype_problem(dtype, real)
    if problem:
        raise _FileProblem(problem)
    nbytes = math.prod(shape) * dtype.itemsize
    have = available - (fp.tell() - start)
    if nbytes > have:
        raise _FileProblem(f"declares shape {shape} {dtype} ({_fmt_bytes(nbytes)}) but holds only "
                           f"{_fmt_bytes(max(have, 0))} of data: it is truncated or damaged")
    big = _too_big(nbytes)
    if big:
        raise _FileProblem(f"declares shape {shape} {dtype}: loading it {big}")
    try:
        fp.seek(start)
        arr = np.lib.format.read_array(fp, allow_pickle=False)
        extra = 0
        while drain:  # reading to the end of a zip member checks its CRC-32
            chunk = fp.read(1 << 20)
            if not chunk:
                break
            extra += len(chunk)
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise _FileProblem("fails its CRC-32 check: the file was changed or damaged after it was "
                               "written") from None
        raise _FileProblem(f"is damaged ({exc})") from None
    except _READ_ERRORS:
        raise _FileProblem("is truncated or damaged: its data cannot be read") from None
    if extra:
        raise _FileProblem(f"has {extra} unexpected bytes after its data: it is damaged")
    return arr


def _read_npy(path, what: str, *, real: bool = True) -> np.ndarray:
    """The one array of the .npy file ``path`` (``what``, e.g. "--data file", names it in errors).

    Raises an OSError subclass when the file cannot be opened, ValueError (one line) when it is
    not a sound .npy file of a numeric (real, unless ``real=False``) array that fits in memory.
    """
    path = pathlib.Path(path)
    with _open_input(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(6)
        if not head:
            raise ValueError(f"{what} {path} is empty (0 bytes)")
        if head.startswith(b"PK"):
            raise ValueError(f"{what} {path} must hold one array (.npy), got an .npz archive")
        f.seek(0)
        try:
            return _read_array(f, size, real=real)
        except _FileProblem as exc:
            raise ValueError(f"{what} {path} {exc}") from None


def _read_npz(path, what: str, *, real: bool = True) -> dict:
    """``{key: array}`` of the .npz archive ``path``, every member checked as :func:`_read_npy` does."""
    path = pathlib.Path(path)
    with _open_input(path, what) as f:
        head = f.read(6)
        if not head:
            raise ValueError(f"{what} {path} is empty (0 bytes)")
        if head.startswith(b"\x93NUMPY"):
            raise ValueError(f"{what} {path} must be an .npz archive (numpy.savez), got a single .npy array")
        if not head.startswith(b"PK"):
            raise ValueError(f"{what} {path} is not a readable .npz archive (write it with numpy.savez): "
                             "it is not a zip file")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
            infos = zf.infolist()
        except _READ_ERRORS:
            raise ValueError(f"{what} {path} is not a readable .npz archive: it is truncated or damaged "
                             "(its zip directory cannot be read)") from None
        with zf:
            big = _too_big(sum(i.file_size for i in infos))
            if big:
                raise ValueError(f"{what} {path} holds {_fmt_bytes(sum(i.file_size for i in infos))} of "
                                 f"arrays: loading it {big}")
            out = {}
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{what} {path}: {key!r} is not a .npy array (numpy.savez writes "
                                     "only arrays)")
                if key in out:
                    raise ValueError(f"{what} {path}: {key!r} appears twice: the archive is damaged")
                try:
                    with zf.open(info) as member:
                        out[key] = _read_array(member, info.file_size, real=real, drain=True)
                except _FileProblem as exc:
                    raise ValueError(f"{what} {path}: {key!r} {exc}") from None
                except _READ_ERRORS as exc:
                    raise ValueError(f"{what} {path} is damaged: its entry for {key!r} cannot be read "
                                     f"({exc})") from None
    return out


def _write_files_atomically(writers: dict) -> None:
    """Write ``{path: write(binary file object)}`` so that every path holds its old content or its new one.

    Each file is written to a temporary file in its own directory; only when all are written
    are they renamed over their targets (``os.replace``).  On any exception, KeyboardInterrupt
    included, the temporary files are removed and the targets are left as they were.
    """
    mask = os.umask(0)
    os.umask(mask)
    pending = []  # (temporary, target) not yet renamed
    try:
        for path, write in writers.items():
            path = pathlib.Path(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            pending.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                try:
                    mode = stat.S_IMODE(os.stat(path).st_mode)  # replacing a file keeps its mode
                except OSError:
                    mode = 0o666 & ~mask
                os.fchmod(f.fileno(), mode)
                write(f)
                f.flush()
                os.fsync(f.fileno())
        while pending:
            tmp, path = pending[0]
            os.replace(tmp, path)
            pending.pop(0)
    except BaseException:
        for tmp, _ in pending:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


# ------------------------------------------------------------------ loading
@dataclass
class Case:
    """One golden case: ``name``, ``spec`` (model class and kwargs), ``layout``, ``inputs``, ``quantities``."""

    name: str
    spec: dict
    layout: str
    inputs: dict
    quantities: dict

    @property
    def model(self):
        """The refscore model of this case."""
        return build_model(self.spec)


@dataclass
class Golden:
    """A loaded golden directory: ``manifest`` (dict) and ``cases`` (name -> :class:`Case`)."""

    directory: pathlib.Path
    manifest: dict
    cases: dict = field(default_factory=dict)

    def keys(self, kind="all"):
        """Keys ``"<case>/<name>"`` of ``kind`` "inputs", "quantities" or "all"."""
        out = []
        for c in self.cases.values():
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


def load(directory) -> Golden:
    """Read a golden directory written by :func:`write`, checking it as it goes.

    Every problem is reported in one line naming the file and what is wrong.

    Raises
    ------
    FileNotFoundError
        When the directory, ``golden.npz`` or ``manifest.json`` is missing.
    NotADirectoryError, IsADirectoryError, PermissionError
        When ``directory`` is a file, a golden file is a directory, or a file
        is not readable.
    ValueError
        When the manifest is not UTF-8 JSON, is not a refscore golden manifest,
        has another format version than :data:`FORMAT_VERSION`, or lacks or
        misstates a case's fields; when ``golden.npz`` is not a sound .npz
        archive (truncated, damaged, an array missing or of another shape or
        dtype than the manifest says).
    """
    directory = _as_dir(directory)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise FileNotFoundError(f"golden directory {directory} not found (write one with refscore golden "
                                "--out DIR)") from None
    except OSError as exc:
        raise type(exc)(_os_error_message(exc, directory, "golden directory")) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"golden directory {directory} is a file, not a directory (give the "
                                 "directory written by refscore golden --out DIR)")
    mpath, dpath = directory / MANIFEST_FILE, directory / DATA_FILE
    for p in (mpath, dpath):
        if not os.path.lexists(p):
            raise FileNotFoundError(f"{directory} is not a golden directory: {p.name} not found (write one with refscore golden --out DIR)")
    with _open_input(mpath, "golden manifest") as f:
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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{mpath} has format_version {manifest.get('format_version')!r}; this refscore "
            f"({__version__}) reads format_version {FORMAT_VERSION}: rewrite it with refscore golden --force"
        )
    _check_manifest_cases(mpath, manifest)
    arrays = _read_npz(dpath, "golden file")
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
        cases[name] = Case(
            name=name,
            spec={"model": meta["model"], "kwargs": meta["kwargs"]},
            layout=meta["layout"],
            inputs={k: got[k] for k in meta["inputs"]},
            quantities={k: got[k] for k in meta["quantities"]},
        )
    return Golden(directory=directory, manifest=manifest, cases=cases)


#: what every case of a manifest records, and the JSON type of each field
_CASE_FIELDS = {"model": (str, "a string"), "kwargs": (dict, "an object"), "layout": (str, "a string"),
                "n_params": (int, "an integer"), "inputs": (list, "a list of names"),
                "quantities": (list, "a list of names"), "shapes": (dict, "an object of name -> shape")}


def _check_manifest_cases(mpath, manifest) -> None:
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
        for key, (kind, words) in _CASE_FIELDS.items():
            if key not in meta:
                raise bad(where, f"has no {key!r}")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise bad(f"{where}: {key!r}", f"must be {words}, got {shown(meta[key])}")
        for key, names in (("inputs", INPUTS), ("quantities", QUANTITIES)):
            listed = meta[key]
            if not all(isinstance(k, str) for k in listed) or len(set(listed)) != len(listed):
                raise bad(f"{where}: {key!r}", f"must be a list of distinct names, got {shown(listed)}")
            unknown, missing = sorted(set(listed) - set(names)), sorted(set(names) - set(listed))
            if unknown or missing:
                raise bad(f"{where}: {key!r}", f"lists {', '.join(unknown) or 'nothing unknown'} and lacks "
                          f"{', '.join(missing) or 'nothing'}: not format_version {FORMAT_VERSION}'s {key}")
        shapes = meta["shapes"]
        for k in (*meta["inputs"], *meta["quantities"]):
            shape = shapes.get(k)
            if not isinstance(shape, list) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise bad(f"{where}: 'shapes'", f"must give {k!r} a list of non-negative integers, got {shown(shape)}")
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
        Only these case names (default: all).

    Returns
    -------
    dict
        ``{"<case>/<quantity>": ndarray}``, the format :func:`check` reads.
    """
    g = directory if isinstance(directory, Golden) else load(directory)
    names = list(g.cases) if cases is None else list(cases)
    out = {}
    for name in names:
        c = g.cases[name]
        # the engine that wrote the golden values, so that the round trip is exact
        for k, v in _quantities(build_model(c.spec, reference=True), c.inputs).items():
            out[f"{name}/{k}"] = v
    return out


# ------------------------------------------------------------------ writing
def write(directory, *, force=False) -> pathlib.Path:
    r"""Write the golden files ``golden.npz`` and ``manifest.json`` into ``directory``.

    Every input is drawn from a fixed seed (recorded per case) and every
    quantity is computed by refscore's public API (models and
    :mod:`refscore.losses`), so two runs of the same refscore version write
    the same numbers.

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
    _check_creatable(directory)  # before the compute, not after it

    arrays, meta = {}, {}
    for name, spec in case_specs().items():
        model = build_model(spec, reference=True)
        inputs, v_sphere = _draw_inputs(name, spec, model)
        quantities = _quantities(model, inputs, v_sphere)
        for k, v in {**inputs, **quantities}.items():
            arrays[f"{name}/{k}"] = np.asarray(v, dtype=float)
        meta[name] = {
            "model": spec["model"],
            "kwargs": spec["kwargs"],
            "n_params": model.n_params,
            "layout": model.layout,
            "seed": _case_seed(name),
            "n": N_POINTS,
            "m": N_PROJECTIONS,
            "inputs": list(inputs),
            "quantities": list(quantities),
            "shapes": {k: list(arrays[f"{name}/{k}"].shape) for k in (*inputs, *quantities)},
        }
    manifest = {
        "format": "refscore-golden",
        "format_version": FORMAT_VERSION,
        "refscore_version": __version__,
        "numpy_version": np.__version__,
        "keys": "golden.npz holds one array per key '<case>/<name>'; user values use the same keys",
        "conventions": CONVENTIONS,
        "inputs": INPUTS,
        "quantities": QUANTITIES,
        "models": {
            "GaussianModel": "s(x) = -L L^T (x - mu)",
            "LinearScore": "s(x) = A x + b",
            "GaussianMixtureModel": "s(x) = grad log sum_j softmax(alpha)_j N(x; mu_j, I / tau_j), tau = exp(log_tau)",
            "MLPScore": "h_0 = x, h_l = act(W_l h_{l-1} + b_l) for hidden layers, s = W_L h_{L-1} + b_L (linear output)",
            "MLPEnergy": "E = W_L h_{L-1} + b_L (scalar, linear output, hidden layers as MLPScore), s = -grad_x E",
            "activations": "; ".join(f"{name} {ACTIVATIONS[name].formula}" for name in ACTIVATION_NAMES),
        },
        "default_tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOLERANCES.items()},
        "cases": meta,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"cannot create directory {directory}: {_reason(exc)}") from None
    # temporary files, renamed when both are whole: an interrupted or failed write
    # leaves the previous golden files (or nothing) and no temporary file
    try:
        _write_files_atomically({
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
            raise type(exc)(f"cannot write the golden files into {directory}: {_reason(exc)}") from None
        raise
    return directory


def _reason(exc: OSError) -> str:
    """``"permission denied"``, ``"no space left on device"``...: an OSError's cause in words."""
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _check_creatable(directory: pathlib.Path) -> None:
    """PermissionError / NotADirectoryError (one line) when ``directory`` cannot be created or written."""
    p = directory
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(f"cannot create directory {directory}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot {'write into' if p == directory else 'create'} directory {directory}: "
                              f"permission denied in {p}")


# ------------------------------------------------------------------ checking
@dataclass
class CheckRow:
    """One compared key: ``status`` is PASS, FAIL, MISSING or UNKNOWN."""

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
class CheckResult:
    """What :func:`check` returns.

    Attributes
    ----------
    passed : bool
        True when at least one quantity was compared, every compared quantity
        passed, no key was unknown and (unless ``allow_missing``) no quantity
        of a provided case was missing.
    rows : list of CheckRow
        One per provided quantity, per missing quantity of a provided case, and
        per unknown key.
    rtol, atol : float
    cases_not_provided : list of str
        Golden cases of which no quantity was provided (a subset is allowed).
    ignored_inputs : int
        Provided keys naming golden *inputs*; they are not compared.
    """

    passed: bool
    rows: list
    rtol: float
    atol: float
    cases_not_provided: list
    ignored_inputs: int = 0
    allow_missing: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def failures(self) -> list:
        """Rows that are not PASS."""
        return [r for r in self.rows if r.status != "PASS"]

    def failing_quantities(self) -> dict:
        """``{quantity name: number of cases}`` over FAIL rows, most frequent first."""
        counts = {}
        for r in self.rows:
            if r.status == "FAIL":
                counts[r.quantity] = counts.get(r.quantity, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        n_pass, n_fail = self.count("PASS"), self.count("FAIL")
        n_miss, n_unknown = self.count("MISSING"), self.count("UNKNOWN")
        lines = [
            f"{n_pass + n_fail} quantities compared (rtol={self.rtol:g}, atol={self.atol:g}): "
            f"{n_pass} passed, {n_fail} failed; {n_miss} missing"
            + (" (allowed)" if self.allow_missing and n_miss else "")
            + f"; {n_unknown} unknown keys"
        ]
        if self.cases_not_provided:
            lines.append(f"{len(self.cases_not_provided)} golden cases not provided (not checked)")
        if self.ignored_inputs:
            lines.append(f"{self.ignored_inputs} input keys provided and ignored")
        bad = self.failing_quantities()
        if bad:
            lines.append("FAIL by quantity: " + ", ".join(f"{q} ({c} cases)" for q, c in bad.items()))
        lines.append("RESULT: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)

    def table(self, only_failures=False) -> str:
        rows = self.failures if only_failures else self.rows
        width = max([len("key")] + [len(r.key) for r in rows])
        head = f"{'key':<{width}}  {'max abs err':>12}  {'max rel err':>12}  status"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.key:<{width}}  {_fmt(r.max_abs):>12}  {_fmt(r.max_rel):>12}  {r.status}"
                + (f"  ({r.note})" if r.note else "")
            )
        return "\n".join(lines)

    def __str__(self):
        return self.table() + "\n\n" + self.summary()


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3e}"


def _load_values(values) -> dict:
    if isinstance(values, dict):
        return dict(values)
    try:
        path = pathlib.Path(os.fspath(values))
    except TypeError:
        raise TypeError(f"values must be a dict or a path to an .npz file, got {type(values).__name__}") from None
    return _read_npz(path, "values file")  # real numeric arrays only, checked before loading


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


def check(directory, values, *, rtol=None, atol=None, precision="float64", allow_missing=False) -> CheckResult:
    r"""Compare a backend's values with the golden files, quantity by quantity.

    A quantity passes when every element satisfies

    .. math:: |a - g| \le \text{atol} + \text{rtol}\,|g|

    (``numpy.isclose``) and the shapes agree.  Reported per quantity: the
    largest absolute error :math:`\max|a-g|` and the largest relative error
    :math:`\max |a-g|/|g|`.

    Parameters
    ----------
    directory : path or :class:`Golden`
        Written by :func:`write`.
    values : dict or path to an ``.npz``
        ``{"<case>/<quantity>": array}``, the keys of the golden file.  A
        subset of the cases may be given; within a given case every quantity
        is expected (else MISSING).  Keys naming inputs are ignored.
    rtol, atol : float, keyword-only
        Default :data:`TOLERANCES` ``[precision]``: ``(1e-8, 1e-10)`` for
        float64, ``(1e-4, 1e-4)`` for float32 backends.
    precision : {"float64", "float32"}, keyword-only
        Picks the default tolerances.
    allow_missing : bool, keyword-only
        Do not fail on quantities missing from a provided case.

    Returns
    -------
    CheckResult
        ``.passed``, ``.rows``; ``str(result)`` is a table and a summary.
        A complex value in a dict fails its quantity (never cast to its real part).

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
        c = g.cases.get(case)
        if c is not None and q in c.inputs:
            ignored += 1
        elif c is None or q not in c.quantities:
            unknown.append(CheckRow(str(key), "UNKNOWN", note="not a golden key"))
        else:
            provided_cases.add(case)
    for name, c in g.cases.items():
        if name not in provided_cases:
            continue
        for q, gold in c.quantities.items():
            key = f"{name}/{q}"
            if key in vals:
                rows.append(_compare(key, vals[key], gold, rtol, atol))
            else:
                rows.append(CheckRow(key, "MISSING", note="not provided"))
    rows += unknown
    n_compared = sum(r.status in ("PASS", "FAIL") for r in rows)
    bad = {"FAIL", "UNKNOWN"} | (set() if allow_missing else {"MISSING"})
    passed = n_compared > 0 and not any(r.status in bad for r in rows)
    not_provided = [n for n in g.cases if n not in provided_cases]
    return CheckResult(
        passed=passed, rows=rows, rtol=rtol, atol=atol, cases_not_provided=not_provided,
        ignored_inputs=ignored, allow_missing=allow_missing,
    )
