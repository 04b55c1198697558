r"""The ``refscore`` command line.

::

    refscore golden --out golden/               write golden files for validating a backend
    refscore check golden/ values.npz           compare a backend's values with them
    refscore sample mixture2d --out x.npy       Langevin samples of a built-in or JSON target
    refscore fit --data x.npy --model mlp --loss dsm --sigma 0.5 --out theta.npy
    refscore validate --quick                   run the validation suite (python -m validation)
    refscore bench                              run the benchmarks
    refscore warmup                             compile the kernel families ahead of time (optional)

Every subcommand has ``--help`` with an example.  Errors (unknown names,
unreadable files, bad JSON, an output file that exists without ``--force``)
print one line ``refscore <command>: error: ...`` to stderr and exit with
status 2; ``refscore check`` exits with 1 when a quantity fails.  No output
file is ever overwritten without ``--force``, and outputs are written atomically
(a temporary file beside the target, renamed over it when whole): a failed or
interrupted run leaves the previous file, or none, and no partial file.  Ctrl-C
prints one line and exits with status 130 (SIGTERM while writing: 143).

The Langevin update is eq. (4), :math:`x \leftarrow x + \eta\,s(x) + \sqrt{2\eta}\,z`
(``--step`` is :math:`\eta`; the ``(lr/2, \sqrt{lr})`` form has :math:`\eta = lr/2`).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import typing

import numpy as np

from ._files import Terminated, sigterm_as_interrupt

__all__ = ["main", "TARGETS", "build_target", "target_from_spec"]

#: built-in targets of ``refscore sample`` (and ``fit --target``)
TARGETS = {
    "gaussian2d": "N([0.5, -1], [[1.5, 0.4], [0.4, 0.8]])",
    "mixture2d": "0.2 N(-5·1, I) + 0.8 N(+5·1, I) in 2-D (NCSN toy, Song & Ermon 2019 §4.3)",
    "mixture10d": "0.2 N(-5·1, I) + 0.8 N(+5·1, I) in 10-D (every coordinate at ∓5)",
    "banana": "Haario's twisted Gaussian, b = 0.1, sigma1 = 10 (2-D)",
}

_SPEC_KEYS = {
    "gaussian": ("mean", "cov"),
    "mixture": ("weights", "means", "covs"),
    "banana": ("b", "sigma1"),
    "student_t": ("loc", "shape", "df"),
}
_SPEC_OPTIONAL = {"banana": ("b", "sigma1")}

_MODELS = ("gaussian", "linear", "mixture", "mlp", "mlp-energy")

#: options of ``refscore sample`` that only ``--sampler annealed`` reads, with their defaults
_ANNEALED_OPTIONS = {"sigmas": None, "sigma_max": 20.0, "sigma_min": 0.1, "levels": 10}

#: (n, d) float64 arrays a sampler holds at once: the initial states, the sampler's
#: copy, the score and the noise (the estimate of ``refscore sample``'s memory)
_SAMPLE_ARRAYS = 4

#: commands whose interruption leaves nothing written (their outputs are atomic)
_WRITERS = ("golden", "sample", "fit", "validate")


def _registries():
    """The families the CLI offers, read from their registries (one place each)."""
    import types

    from .losses import LOSSES, PROJECTIONS
    from .models.activations import ACTIVATIONS
    from .sampling.registry import BACKENDS
    from .training import DRAWN_INPUTS

    # refscore fit builds score models s(x), and gives a loss what fit draws or an option of _FIT_OPTIONS
    fit_left_out = {}
    for name, spec in LOSSES.items():
        missing = [i for i in spec.inputs if i not in DRAWN_INPUTS and i not in _FIT_OPTIONS]
        if spec.noise_conditional:
            fit_left_out[name] = "trains a noise-conditional model"
        elif missing:
            fit_left_out[name] = f"no option gives its {', '.join(missing)}"
    fit_losses = tuple(name for name in LOSSES if name not in fit_left_out)
    return types.SimpleNamespace(losses=LOSSES, fit_losses=fit_losses, fit_left_out=fit_left_out,
                                 projections=PROJECTIONS, activations=ACTIVATIONS, backends=BACKENDS)


def _fit_target_score(args, data):
    target = _resolve_target(args.target)
    if target.dim != data.shape[1]:
        raise CLIError(f"--target has dimension {target.dim}, --data has dimension {data.shape[1]}")
    return target.score


class _FitOption(typing.NamedTuple):
    """The option of ``refscore fit`` that gives one loss input (see :data:`_FIT_OPTIONS`)."""

    option: str  # the flag, e.g. "--sigma"
    dest: str  # its attribute of the parsed arguments
    what: str  # what it gives, for messages
    value: typing.Callable  # (args, data) -> the input's value for refscore.training.fit


#: the loss inputs (refscore.losses.Loss.inputs) that refscore fit takes from an option, by input name
_FIT_OPTIONS = {
    "target_score": _FitOption("--target", "target", "a built-in target or a JSON spec whose score is the data score",
                               _fit_target_score),
    "sigma": _FitOption("--sigma", "sigma", "the noise level", lambda args, data: args.sigma),
}


def _fit_users(name, sep):
    """The losses of ``refscore fit`` that take input ``name``, joined by ``sep``."""
    reg = _registries()
    return sep.join(loss for loss in reg.fit_losses if name in reg.losses[loss].inputs)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _count(text: str) -> int:
    """A whole number of chains: ``1000`` or ``1e6`` (ValueError otherwise)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


_count.__name__ = "int"  # argparse's message stays "invalid int value: ..."


def _int_at_least(minimum: int, words: str):
    """An argparse type: an integer >= ``minimum``; argparse names the option in its message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {words}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {words}, got {value}")
        return value

    return parse


#: ``--seed``: numpy's generators take seeds >= 0; ``--levels``: at least one noise level
_seed = _int_at_least(0, "a non-negative integer")
_levels = _int_at_least(1, "a positive integer (the number of noise levels)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``prog: error: message``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------- targets
def build_target(name: str):
    """The built-in target ``name`` (a key of :data:`TARGETS`)."""
    from .distributions import Banana, Gaussian, GaussianMixture

    if name == "gaussian2d":
        return Gaussian(np.array([0.5, -1.0]), np.array([[1.5, 0.4], [0.4, 0.8]]))
    if name in ("mixture2d", "mixture10d"):
        d = 2 if name == "mixture2d" else 10
        means = np.stack([-5.0 * np.ones(d), 5.0 * np.ones(d)])
        return GaussianMixture(np.array([0.2, 0.8]), means, np.stack([np.eye(d)] * 2))
    if name == "banana":
        return Banana()
    raise CLIError(
        f"unknown target {name!r}: expected one of {', '.join(TARGETS)} or a path to a JSON spec file"
    )


def target_from_spec(spec: dict, source: str = "spec"):
    """A distribution from a JSON-like spec ``{"type": ..., ...}``.

    ``{"type": "gaussian", "mean": [...], "cov": [[...]]}``,
    ``{"type": "mixture", "weights": [...], "means": [[...]], "covs": [[[...]]]}``,
    ``{"type": "banana", "b": 0.1, "sigma1": 10}`` or
    ``{"type": "student_t", "loc": [...], "shape": [[...]], "df": 5}``.
    """
    from .distributions import Banana, Gaussian, GaussianMixture, StudentT

    if not isinstance(spec, dict):
        raise CLIError(f"{source}: a target spec must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _SPEC_KEYS:
        raise CLIError(f"{source}: 'type' must be one of {', '.join(_SPEC_KEYS)}, got {kind!r}")
    keys = _SPEC_KEYS[kind]
    optional = _SPEC_OPTIONAL.get(kind, ())
    missing = [k for k in keys if k not in spec and k not in optional]
    extra = sorted(set(spec) - set(keys) - {"type"})
    if missing:
        raise CLIError(f"{source}: a {kind!r} spec needs keys {', '.join(keys)}; missing {', '.join(missing)}")
    if extra:
        raise CLIError(f"{source}: unknown keys {', '.join(extra)} in a {kind!r} spec (expected {', '.join(keys)})")
    args = {k: spec[k] for k in keys if k in spec}
    try:
        if kind == "gaussian":
            return Gaussian(args["mean"], args["cov"])
        if kind == "mixture":
            return GaussianMixture(args["weights"], args["means"], args["covs"])
        if kind == "banana":
            return Banana(**args)
        return StudentT(args["loc"], args["shape"], args["df"])
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{source}: {exc}") from None


def _read_json(path: pathlib.Path, what: str = "JSON file"):
    from ._files import open_input

    try:
        with open_input(path, what) as f:  # not found / a directory / permission denied, in words
            raw = f.read()
    except OSError as exc:
        raise CLIError(str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CLIError(f"{path} is nested too deeply to be a target spec") from None


def _resolve_target(name: str):
    if name in TARGETS:
        return build_target(name)
    path = pathlib.Path(name)
    if path.suffix == ".json" or os.path.lexists(path):
        return target_from_spec(_read_json(path, "target spec file"), str(path))
    return build_target(name)


# --------------------------------------------------------------------- helpers
def _out_path(path: str, suffix: str, force: bool, what: str = "--out") -> pathlib.Path:
    """The output path, checked before any work: suffix, not a directory, no clobbering, a
    writable directory."""
    p = pathlib.Path(path)
    if p.suffix != suffix:
        raise CLIError(f"{what} must end in {suffix}, got {path}")
    if os.path.isdir(p):
        raise CLIError(f"{what} {p} is a directory; give a file name ending in {suffix}")
    if os.path.lexists(p) and not force:
        raise CLIError(f"{p} exists; refusing to overwrite it (pass --force)")
    parent = p.parent
    if not os.path.exists(parent):
        raise CLIError(f"{what}: directory {parent} does not exist")
    if not os.path.isdir(parent):
        raise CLIError(f"{what}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{what}: cannot write in directory {parent}: permission denied")
    return p


def _load_npy(path: str, what: str) -> np.ndarray:
    """The real numeric array of a .npy file; one-line errors naming the cause (not found, a
    directory, permission denied, not .npy, damaged, truncated, larger than memory)."""
    from ._files import read_npy

    try:
        return read_npy(path, f"{what} file")
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _write_outputs(writers: dict) -> None:
    """Write ``{path: write(binary file)}`` atomically: all of them or none (see the module doc)."""
    from ._files import reason, write_files_atomically

    with sigterm_as_interrupt():
        try:
            write_files_atomically(writers)
        except OSError as exc:
            names = " and ".join(str(p) for p in writers)
            raise CLIError(f"cannot write {names}: {reason(exc)}; nothing was written") from None


def _check_sample_memory(chains: int, d: int) -> None:
    from ._files import fmt_bytes, too_big

    per = chains * d * 8
    big = too_big(_SAMPLE_ARRAYS * per)
    if big:
        raise CLIError(f"--chains {chains} with dimension {d}: sampling {big}, for {_SAMPLE_ARRAYS} arrays "
                       f"of {fmt_bytes(per)} (states, their copy, score, noise); use fewer chains")


def _int_list(text: str, what: str) -> tuple:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise CLIError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise CLIError(f"{what} must be comma-separated positive integers, got {text!r}")
    return vals


def _float_list(text: str, what: str) -> np.ndarray:
    try:
        return np.array([float(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise CLIError(f"{what} must be comma-separated numbers, got {text!r}") from None


# --------------------------------------------------------------------- commands
def _cmd_golden(args) -> int:
    from . import golden

    try:
        with sigterm_as_interrupt():  # golden.write removes its temporary files on any exception
            out = golden.write(args.out, force=args.force)
    except FileExistsError as exc:
        raise CLIError(str(exc)) from None
    n = len(golden.case_specs())
    extra = {}
    for spec in golden.extra_case_specs().values():
        extra[spec["kind"]] = extra.get(spec["kind"], 0) + 1
    more = ", ".join(f"{k} {v}" for k, v in extra.items())
    print(f"wrote {n} cases x {len(golden.QUANTITIES)} quantities and {sum(extra.values())} further cases "
          f"({more}) to {out}/{golden.DATA_FILE} and {out}/{golden.MANIFEST_FILE} "
          f"(format_version {golden.FORMAT_VERSION})")
    return 0


def _cmd_check(args) -> int:
    from . import golden

    if args.require_all and args.allow_missing:
        raise CLIError("--require-all and --allow-missing contradict each other (--allow-missing is the default)")
    try:
        result = golden.check(
            args.golden, args.values, rtol=args.rtol, atol=args.atol,
            precision="float32" if args.float32 else "float64", require_all=args.require_all,
        )
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    shown = [r for r in (result.rows if args.all else result.failures) if r.status != "MISSING"]
    if shown:
        print(result.table(only_failures=not args.all))
        print()
    if result.diagnosis:
        print(result.diagnosis_text())
        print()
    print(result.summary())
    return 0 if result.passed else 1


def _cmd_sample(args) -> int:
    from . import sampling

    out = _out_path(args.out, ".npy", args.force)
    # the noise schedule is annealed Langevin's alone: refuse it elsewhere, and refuse two schedules
    given = [f"--{k.replace('_', '-')}" for k in _ANNEALED_OPTIONS if getattr(args, k) is not None]
    if args.sampler != "annealed" and given:
        raise CLIError(f"{given[0]} is only used by --sampler annealed, got --sampler {args.sampler}")
    if args.sigmas is not None and len(given) > 1:
        raise CLIError(f"give the noise levels either as --sigmas or as --sigma-max/--sigma-min/--levels, "
                       f"not both (got {', '.join(given)})")
    sigmas = _annealed_sigmas(args) if args.sampler == "annealed" else None
    target = _resolve_target(args.target)
    d = int(target.dim)
    if args.chains < 1 or args.steps < 0:
        raise CLIError(f"--chains must be >= 1 and --steps >= 0, got {args.chains} and {args.steps}")
    _check_sample_memory(args.chains, d)
    x0 = args.init_scale * np.random.default_rng(args.seed).standard_normal((args.chains, d))
    with _dask_client(args) as client:
        res = _run_sampler(args, sampling, target, x0, client, sigmas)
    _write_outputs({out: lambda f: np.save(f, res.x)})
    msg = f"wrote {res.x.shape[0]} samples of dimension {d} to {out}; {int(res.diverged.sum())} chains diverged"
    if res.accept_rate is not None:
        msg += f"; MALA acceptance rate {float(np.mean(res.accept_rate)):.3f}"
    print(msg)
    print("sample mean: " + np.array2string(res.x.mean(axis=0), precision=4, max_line_width=200))
    return 0


class _dask_client:
    """``--backend dask``: a client of ``--scheduler``, or of a local cluster of ``--workers``; else None."""

    def __init__(self, args):
        if args.backend != "dask" and (args.scheduler is not None or args.workers is not None):
            raise CLIError(f"--scheduler and --workers are only used by --backend dask, got --backend {args.backend}")
        if args.scheduler is not None and args.workers is not None:
            raise CLIError("give --scheduler (a running cluster) or --workers (a local one), not both")
        if args.workers is not None and args.workers < 1:
            raise CLIError(f"--workers must be >= 1, got {args.workers}")
        self.args = args
        self.client = self.cluster = None

    def __enter__(self):
        args = self.args
        if args.backend != "dask" or (args.scheduler is None and args.workers is None):
            return None
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise CLIError("--backend dask needs dask.distributed: pip install 'refscore[dask]'") from None
        if args.scheduler is not None:
            try:
                self.client = Client(args.scheduler, timeout="10s")
            except OSError as exc:
                raise CLIError(f"--scheduler {args.scheduler}: cannot connect ({_one_line(exc)})") from None
        else:
            self.cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


def _annealed_sigmas(args) -> np.ndarray:
    """The noise levels of ``--sampler annealed``: ``--sigmas``, or ``--levels`` geometric levels from
    ``--sigma-max`` down to ``--sigma-min``; errors name the option."""
    from ._validation import check_sigmas

    if args.sigmas is not None:
        try:
            return check_sigmas(_float_list(args.sigmas, "--sigmas"), "--sigmas")
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    opt = {k: _ANNEALED_OPTIONS[k] if getattr(args, k) is None else getattr(args, k)
           for k in ("sigma_max", "sigma_min", "levels")}
    for key in ("sigma_max", "sigma_min"):
        if not (np.isfinite(opt[key]) and opt[key] > 0):
            raise CLIError(f"--{key.replace('_', '-')} must be finite and > 0, got {opt[key]}")
    if opt["levels"] > 1 and not opt["sigma_max"] > opt["sigma_min"]:
        raise CLIError(f"--sigma-max must be larger than --sigma-min (levels decrease from one to the other), "
                       f"got --sigma-max {opt['sigma_max']} and --sigma-min {opt['sigma_min']}")
    return np.geomspace(opt["sigma_max"], opt["sigma_min"], opt["levels"])


def _run_sampler(args, sampling, target, x0, client, sigmas=None):
    """Run the chosen sampler (``sigmas``: annealed's levels); the sampler's TypeError on a target it
    cannot run, in the CLI's words."""
    # --backend dask with --scheduler / --workers: the backend object carries the client
    backend = args.backend if client is None else sampling.DaskBackend(client=client)
    try:
        if args.sampler == "ula":
            return sampling.ula(target, x0, args.step, args.steps, seed=args.seed, backend=backend)
        elif args.sampler == "mala":
            if not hasattr(target, "logpdf"):
                raise CLIError(f"--sampler mala needs a target with a log-density; {args.target} has none")
            return sampling.mala(target, x0, args.step, args.steps, seed=args.seed, backend=backend)
        else:
            try:
                perturbed = target.perturbed()
            except NotImplementedError:
                raise CLIError(
                    f"--sampler annealed needs a target whose noised scores are closed-form "
                    f"(gaussian, mixture); {args.target} has none"
                ) from None
            return sampling.annealed_langevin(perturbed, x0, sigmas, args.step, args.steps, seed=args.seed,
                                              backend=backend)
    except TypeError as exc:  # the sampler's word on a target it cannot run, put in the CLI's terms
        raise CLIError(
            f"--sampler {args.sampler} --backend {args.backend} cannot sample {args.target} "
            f"({_one_line(exc)}); accepted targets: the built-in {', '.join(TARGETS)}, or a JSON spec of "
            f"type {', '.join(_SPEC_KEYS)}"
        ) from None


def _build_model(args, d):
    from .models import GaussianMixtureModel, GaussianModel, LinearScore, MLPEnergy, MLPScore

    if args.model == "gaussian":
        return GaussianModel(d)
    if args.model == "linear":
        return LinearScore(d)
    if args.model == "mixture":
        return GaussianMixtureModel(d, args.components)
    hidden = _int_list(args.hidden, "--hidden")
    cls = MLPScore if args.model == "mlp" else MLPEnergy
    return cls(d, hidden, args.activation)


def _cmd_warmup(args) -> int:
    from .warmup import warmup

    if args.all and args.families:
        raise CLIError("give FAMILY names or --all, not both")
    try:
        warmup(args.families or None, jobs=args.jobs, say=lambda line: print(line, flush=True))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:
        print(f"refscore warmup: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_fit(args) -> int:
    from .training import fit

    out = _out_path(args.out, ".npy", args.force)
    hist_path = args.history or str(out.with_suffix("")) + ".history.json"
    hp = pathlib.Path(hist_path)
    if hp.suffix not in (".json", ".npy"):
        raise CLIError(f"--history must end in .json or .npy, got {hist_path}")
    hp = _out_path(hist_path, hp.suffix, args.force, "--history")
    if hp.resolve() == out.resolve():
        raise CLIError("--history and --out must be different files")
    data = _load_npy(args.data, "--data")
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise CLIError(
            f"--data must hold a numeric (n, d) array, got dtype {data.dtype} and shape {data.shape} "
            "(1-D data: save x.reshape(-1, 1))"
        )
    model = _build_model(args, data.shape[1])
    spec = _registries().losses[args.loss]
    kwargs = {}
    for name, opt in _FIT_OPTIONS.items():
        given = vars(args)[opt.dest] is not None
        if name in spec.inputs and not given:
            raise CLIError(f"--loss {args.loss} needs {opt.option} ({opt.what})")
        if given and name not in spec.inputs:
            raise CLIError(f"{opt.option} is only used by --loss {_fit_users(name, ' or --loss ')}, "
                           f"got --loss {args.loss}")
        if given:
            kwargs[name] = opt.value(args, data)
    if "v" in spec.inputs:
        kwargs.update(projection=args.projection, n_projections=args.n_projections)
    try:
        res = fit(model, args.loss, data, args.steps, lr=args.lr, batch=args.batch, rng=args.seed, **kwargs)
    except FloatingPointError as exc:
        print(f"refscore fit: error: {exc}", file=sys.stderr)
        return 1
    # both files are written to temporaries and renamed only when both are whole
    if hp.suffix == ".npy":
        history = np.column_stack([res.history_steps, res.history])
        write_history = lambda f: np.save(f, history)  # noqa: E731
    else:
        record = {
            "model": repr(model),
            "layout": model.layout,
            "loss": args.loss,
            "lr": args.lr,
            "batch": args.batch,
            "seed": args.seed,
            "steps": [int(s) for s in res.history_steps],
            "loss_values": [float(v) for v in res.history],
        }
        text = json.dumps(record, indent=1) + "\n"
        write_history = lambda f: f.write(text.encode("utf-8"))  # noqa: E731
    _write_outputs({out: lambda f: np.save(f, res.theta), hp: write_history})
    print(f"{model!r}: {args.loss} {res.history[0]:.6g} -> {res.history[-1]:.6g} after {args.steps} steps")
    print(f"wrote theta ({model.n_params},) to {out} and the loss history to {hp}")
    print(f"theta layout: {model.layout}")
    return 0


def _delegate(module: str, what: str, argv, **options) -> int:
    """``module.main(argv, **options)``, or one line saying the module is not installed."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            print(f"refscore {what}: error: {module} is not available in this installation "
                  f"(run refscore from a source checkout of refscore)", file=sys.stderr)
            return 2
        raise
    return int(mod.main(list(argv), **options) or 0)


def _bench_dirs() -> list:
    """Where ``refscore bench`` looks for the harness: the clone around the package, then the current directory.

    The benchmark harness (``benchmarks/bench.py``) is not installed with the
    package; a clone installed with ``pip install -e .`` has it next to the
    ``refscore`` package directory.
    """
    package_dir = pathlib.Path(__file__).resolve().parent  # this file is refscore/cli.py
    return [package_dir.parent / "benchmarks", pathlib.Path.cwd() / "benchmarks"]


def _bench(argv) -> int:
    """``refscore bench``: run ``benchmarks/bench.py``'s main with ``argv``, or say where it lives."""
    import importlib.util

    found = next((d for d in _bench_dirs() if (d / "bench.py").is_file()), None)
    if found is None:
        print("refscore bench: error: the benchmark harness lives in the repository's benchmarks/ folder and "
              "is not installed with the package; run refscore bench from a clone of refscore", file=sys.stderr)
        return 2
    if str(found) not in sys.path:
        sys.path.insert(0, str(found))  # the harness imports its probe kernels (bench_kernels, bench_cuda)
    spec = importlib.util.spec_from_file_location("bench", found / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = mod
    spec.loader.exec_module(mod)
    return int(mod.main(list(argv)) or 0)


# --------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    from . import __version__

    top = _Parser(
        prog="refscore",
        description="refscore: a reference implementation of score matching.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  refscore golden --out golden/ && refscore check golden/ values.npz\n"
            "  refscore sample mixture2d --sampler annealed --step 0.005 --steps 100 --out x.npy\n"
            "  refscore fit --data x.npy --model mlp --hidden 64,64 --loss dsm --sigma 0.5 --out theta.npy\n"
            "  refscore validate --quick\n\n"
            "refscore COMMAND --help shows each command's options."
        ),
    )
    top.add_argument("--version", action="version", version=f"refscore {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "golden", help="write golden files for validating another backend", formatter_class=raw,
        description="Write golden.npz (inputs and refscore's values, keys '<case>/<quantity>') and "
        "manifest.json (conventions, theta layouts, shapes) into DIR: per-point losses of 69 models, "
        "NCSN's multi-noise DSM, KSD, ULA/MALA/annealed/kinetic Langevin trajectories with their noise stored, "
        "and the diffusion cases: schedules, exact denoisers, per-step coefficient tables, a trajectory per "
        "sampler of refscore.diffusion (start, grid and noise stored) and likelihoods.",
        epilog="example:\n  refscore golden --out golden/\n  refscore golden --out golden/ --force   # overwrite",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite the golden files of a non-empty DIR")
    p.set_defaults(func=_cmd_golden)

    p = sub.add_parser(
        "check", help="compare a backend's values with golden files", formatter_class=raw,
        description="Compare VALUES (an .npz with the golden keys '<case>/<quantity>') with the golden "
        "files in DIR; prints max abs/rel error and PASS/FAIL per failing key, a diagnosis of each failing "
        "quantity (ratio yours/golden, the hypothesis that fits, the convention it is), and the coverage: "
        "cases, quantities and keys compared against those available, and per quantity how many cases "
        "were not provided. The verdict covers the keys provided (any subset of cases and quantities): "
        "exit status 0 when all of them pass, 1 otherwise. --require-all also fails a quantity left out "
        "of a provided case.",
        epilog="example:\n  refscore check golden/ values.npz\n  refscore check golden/ values32.npz --float32 --all\n"
        "  refscore check golden/ values.npz --require-all   # every quantity of each case you give",
    )
    p.add_argument("golden", metavar="DIR", help="directory written by refscore golden")
    p.add_argument("values", metavar="VALUES.npz", help="the backend's values")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-8; 1e-4 with --float32)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-10; 1e-4 with --float32)")
    p.add_argument("--float32", action="store_true", help="default tolerances for a float32 backend")
    p.add_argument("--all", action="store_true", help="print every compared key, not only the failures")
    p.add_argument("--require-all", action="store_true",
                   help="strict verdict: a quantity left out of a provided case fails (cases left out entirely "
                   "are still allowed)")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept quantities left out of a provided case (the default; kept for scripts)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "sample", help="Langevin samples of a built-in or JSON-specified target", formatter_class=raw,
        description="Run ULA, MALA or annealed Langevin (x <- x + step*s(x) + sqrt(2*step)*z) from "
        "x0 = init_scale * N(0, I) and save the final states (chains, d) as .npy.\n\nbuilt-in targets:\n"
        + "\n".join(f"  {k}: {v}" for k, v in TARGETS.items())
        + '\n\nor a JSON file: {"type": "gaussian", "mean": [...], "cov": [[...]]}, '
        '{"type": "mixture", "weights": [...], "means": [[...]], "covs": [[[...]]]}, '
        '{"type": "banana", "b": 0.1, "sigma1": 10}, {"type": "student_t", "loc": [...], "shape": [[...]], "df": 5}',
        epilog="examples:\n  refscore sample gaussian2d --chains 1000 --steps 2000 --step 0.05 --out x.npy\n"
        "  refscore sample mixture2d --sampler annealed --step 0.005 --steps 100 --out x.npy\n"
        "  refscore sample target.json --sampler mala --backend numba --out x.npy",
    )
    p.add_argument("target", metavar="TARGET", help="a built-in name or a JSON spec file")
    p.add_argument("--sampler", choices=("ula", "mala", "annealed"), default="ula",
                   help="Langevin sampler (default %(default)s)")
    p.add_argument("--backend", choices=tuple(_registries().backends), default="numpy",
                   help="sampler backend (default %(default)s)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="--backend dask: the address of a running dask scheduler (e.g. tcp://host:8786); "
                        "default: a local cluster started for this run")
    p.add_argument("--workers", type=int, metavar="N",
                   help="--backend dask without --scheduler: worker processes of the local cluster "
                        "(default: one per core)")
    p.add_argument("--chains", type=_count, default=1000, help="number of chains (default 1000; 1e6 allowed)")
    p.add_argument("--steps", type=int, default=1000, help="steps (per noise level for annealed; default 1000)")
    p.add_argument("--step", type=float, default=0.01,
                   help="step size eta (default 0.01); annealed: eta at the smallest sigma, "
                   "eta_i = step * sigma_i^2 / sigma_min^2, stable for step below about sigma_min^2")
    p.add_argument("--seed", type=_seed, default=0, help="seed of x0 and of the counter-based noise (default 0)")
    p.add_argument("--init-scale", type=float, default=1.0, help="x0 ~ N(0, init_scale^2 I) (default 1)")
    p.add_argument("--sigmas", default=None, metavar="S1,S2,...",
                   help="annealed: decreasing noise levels (instead of --sigma-max/--sigma-min/--levels)")
    # None: not given (refused by ula / mala); annealed's defaults are _ANNEALED_OPTIONS
    p.add_argument("--sigma-max", type=float, default=None, help="annealed: largest sigma (default 20)")
    p.add_argument("--sigma-min", type=float, default=None, help="annealed: smallest sigma (default 0.1)")
    p.add_argument("--levels", type=_levels, default=None, help="annealed: number of geometric levels (default 10)")
    p.add_argument("--out", required=True, metavar="FILE.npy")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "fit", help="fit a score model to data by minibatch Adam", formatter_class=raw,
        description="Fit a score model to the (n, d) array in --data; save theta (.npy, layout printed) "
        "and the loss history (.json with steps and values, or .npy with columns step, loss).",
        epilog="examples:\n  refscore fit --data x.npy --model gaussian --loss ism --steps 500 --lr 0.05 --out theta.npy\n"
        "  refscore fit --data x.npy --model mlp --hidden 64,64 --activation softplus --loss dsm --sigma 0.5 "
        "--out theta.npy --history hist.json\n"
        "  refscore fit --data x.npy --model linear --loss esm --target gaussian2d --out theta.npy",
    )
    p.add_argument("--data", required=True, metavar="X.npy", help="training points, shape (n, d)")
    p.add_argument("--model", choices=_MODELS, default="mlp", help="score model (default %(default)s)")
    p.add_argument("--hidden", default="64,64", help="mlp: hidden layer sizes (default 64,64)")
    p.add_argument("--activation", choices=tuple(_registries().activations), default="tanh",
                   help="mlp: activation (default %(default)s)")
    p.add_argument("--components", type=int, default=2, help="mixture: number of components (default 2)")
    left_out = "".join(f"; not offered: {name}: {why}" for name, why in _registries().fit_left_out.items())
    p.add_argument("--loss", choices=_registries().fit_losses, default="ism",
                   help=f"score-matching loss (default %(default)s){left_out}")
    p.add_argument("--sigma", type=float, default=None, help=f"{_fit_users('sigma', '/')}: noise level")
    p.add_argument("--projection", choices=tuple(_registries().projections), default="rademacher",
                   help=f"{_fit_users('v', '/')}: projection kind (default rademacher)")
    p.add_argument("--n-projections", type=int, default=1, help=f"{_fit_users('v', '/')}: projections per point")
    p.add_argument("--target", default=None,
                   help=f"{_fit_users('target_score', '/')}: built-in target or JSON spec giving the data score")
    p.add_argument("--steps", type=int, default=1000, help="Adam steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam step size (default 1e-3)")
    p.add_argument("--batch", type=int, default=256, help="minibatch size (default 256)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of init, minibatches and noise (default 0)")
    p.add_argument("--out", required=True, metavar="THETA.npy")
    p.add_argument("--history", default=None, metavar="FILE",
                   help="loss history, .json or .npy (default: <out>.history.json)")
    p.add_argument("--force", action="store_true", help="overwrite --out and --history")
    p.set_defaults(func=_cmd_fit)

    from .warmup import WARMUPS, describe

    p = sub.add_parser(
        "warmup", help="compile the kernel families ahead of time (nothing requires it)",
        description="Compile refscore's kernel families into the kernel cache ahead of time, one process per "
                    "family, and say where the cache lives and how big it is. Every kernel also compiles on its "
                    "first call by itself; this only moves that wait. Families: "
                    + "; ".join(f"{k}: {describe(k)}" for k in WARMUPS) + ".",
        epilog="example: refscore warmup            (every family this machine can run)\n"
               "         refscore warmup mlp_losses",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", metavar="FAMILY",
                   help=f"families to compile (default, or --all: every one this machine can run; "
                        f"one of {', '.join(WARMUPS)})")
    p.add_argument("--all", action="store_true", help="every family this machine can run (the default)")
    p.add_argument("--jobs", type=_int_at_least(1, "a positive integer (processes at once)"), default=None,
                   help="processes at once (default: one per family, at most one per core)")
    p.set_defaults(func=_cmd_warmup)

    sub.add_parser("validate", help="run the validation suite (arguments go to python -m validation)", add_help=False)
    sub.add_parser("bench", help="run the benchmarks (from a clone: arguments go to benchmarks/bench.py)",
                   add_help=False)
    return top


def main(argv=None) -> int:
    """Entry point of the ``refscore`` console script; returns the exit status.

    Errors are one line on stderr and status 2; Ctrl-C is one line and status 130
    (SIGTERM during a write: 143), never a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not str(argv[0]).startswith("-") else None
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        return _interrupted(command, exc)
    except SystemError as exc:  # Ctrl-C inside a C call can surface as "returned a result with an exception set"
        cause = _interrupt_behind(exc)
        if cause is None:
            raise
        return _interrupted(command, cause)


def _interrupt_behind(exc):
    """The KeyboardInterrupt in ``exc``'s chain of causes, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _interrupted(command, exc) -> int:
    terminated = isinstance(exc, Terminated)
    prog = f"refscore {command}" if command else "refscore"
    detail = _one_line(exc)
    msg = f"{prog}: {'terminated' if terminated else 'interrupted'}" + (f" ({detail})" if detail else "")
    if command in _WRITERS:
        msg += "; nothing was written"
    print(msg, file=sys.stderr)
    return 128 + signal.SIGTERM if terminated else 130


def _main(argv) -> int:
    if argv and argv[0] == "validate":
        return _delegate("refscore.validation.runner", "validate", argv[1:], prog="refscore validate")
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CLIError as exc:
        msg = str(exc)
    except BrokenPipeError:  # output piped into head: not an error of ours
        sys.stderr.close()
        return 1
    except MemoryError as exc:
        msg = "out of memory" + (f": {exc}" if str(exc) else "")
    except (ValueError, TypeError, NotImplementedError, RuntimeError, OSError) as exc:
        msg = str(exc) or type(exc).__name__
    print(f"refscore {args.command}: error: {_one_line(msg)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
