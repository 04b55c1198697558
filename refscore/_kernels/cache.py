r"""The compiled kernels' disk cache, and the one line a first compile prints.

Where.  Kernels compile with ``cache=True`` into a directory outside the
installed tree (so a read-only install caches too): ``$REFSCORE_CACHE_DIR``,
else ``$XDG_CACHE_HOME/refscore`` or ``~/.cache/refscore``, in a
subdirectory named by a fingerprint of this package's sources, the activation
registry and the numba version.  Numba invalidates a cached kernel only when
its own file changes, not when a function it inlines does; the fingerprint
makes any edit here start a fresh cache.  A user's own ``NUMBA_CACHE_DIR`` is
left alone for their functions.

What can go wrong, and what happens then (each said once per process, as a
:class:`KernelCacheWarning`):

* the directory cannot be created or written (read-only, a full disk, a
  file-size limit below what a kernel needs): the kernels compile without a
  cache, so every new process compiles them again;
* a cache file is damaged (a truncated write, a disk error): numba would
  raise while reading it on every call, so the family's files are checked
  when it loads, a damaged entry is removed and the kernel compiles again.

First compile.  A cache miss of one of refscore's kernel families prints one
line to stderr as the compile starts (what compiles, that it happens once per
machine and numba version, where the cache lives, roughly how long), through
numba's event API (``numba:compile`` fires on cache misses only).  Set
``REFSCORE_QUIET=1`` to silence it.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import pickle
import resource
import shutil
import sys
import warnings

__all__ = ["KernelCacheWarning", "cache_dir", "cache_problem", "use_cache", "check_family", "announce_compiles",
           "FAMILIES", "cache_size", "remove_damaged"]

_HERE = pathlib.Path(__file__).resolve().parent

#: a kernel family's files need at most a few MiB (the largest .nbc seen is 0.3 MiB);
#: below this much free space, or a smaller file-size limit, the cache is not used
MIN_FREE_BYTES = 64 * 2**20


class KernelCacheWarning(RuntimeWarning):
    """The kernel cache could not be used as it is (unwritable, or a damaged file removed)."""


def _warn(message: str) -> None:
    """Warn with the location of the first caller outside refscore (and outside contextlib)."""
    package = str(_HERE.parent)
    frame, level = sys._getframe(1), 2
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename.endswith("contextlib.py")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, KernelCacheWarning, stacklevel=level)


#: kernel module -> (what it compiles, rough cold compile time on 2 cores of the CI machine).
#: The times: each first call of ``refscore bench --only compile`` on an empty cache, 2 cores at load 1-4
#: (a loss, or a sampler on one target kind: a sampler compiles each target kind on its first use).
FAMILIES = {
    "mlp_losses": ("MLPScore's fused loss kernels", "4-10 s"),
    "cpu_sampler": ("the Langevin sampler kernels (ULA, MALA, annealed and kinetic Langevin)", "3-12 s"),
    "custom_sampler": ("the Langevin kernels for your NumbaTarget", "2-10 s"),
    "cuda_sampler": ("the CUDA Langevin kernels (ULA, MALA, annealed and kinetic Langevin)", "10-40 s"),
    "diffusion_sampler": ("the diffusion sampler kernel (every sampler of refscore.diffusion on the exact denoiser)",
                          "3-10 s"),
}


def _fingerprint() -> str:
    import numba

    from .activation_table import registry_source

    h = hashlib.sha256(numba.__version__.encode())
    for path in sorted(_HERE.glob("*.py")) + [pathlib.Path(registry_source())]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _root() -> pathlib.Path:
    root = os.environ.get("REFSCORE_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "refscore")
    return pathlib.Path(root)


def _writable_problem(path: pathlib.Path) -> str | None:
    """Why ``path`` cannot hold the cache (None: it can)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as e:
        return f"{e.strerror or e} ({type(e).__name__})"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < MIN_FREE_BYTES:
        return f"the file-size limit (ulimit -f) is {soft} bytes"
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return f"only {free / 2**20:.1f} MiB free on its disk"
    return None


@functools.lru_cache(maxsize=None)
def _status() -> tuple[pathlib.Path, str | None]:
    import numba

    path = _root() / f"numba-{numba.__version__}-{_fingerprint()}"
    return path, _writable_problem(path)


def cache_dir() -> pathlib.Path:
    """The directory the compiled kernels are cached in (see :func:`cache_problem` for whether it is used)."""
    return _status()[0]


def cache_problem() -> str | None:
    """Why the kernel cache is not used in this process (None when it is)."""
    return _status()[1]


@functools.lru_cache(maxsize=None)
def use_cache() -> bool:
    """The ``cache=`` flag of every cached kernel: False (with one warning) when the directory is unusable."""
    problem = cache_problem()
    if problem is not None:
        _warn(f"refscore: the kernel cache directory {cache_dir()} cannot be used: {problem}; the kernels "
              "compile without a cache, so every new process compiles them again (set REFSCORE_CACHE_DIR "
              "to a writable directory to keep them)")
        return False
    return True


def _index_is_sound(index: pathlib.Path) -> bool:
    """Read one numba cache index and the data files it names exactly as numba will; False if any fails."""
    try:
        with open(index, "rb") as f:
            pickle.load(f)  # numba's cache format version
            stamp, overloads = pickle.loads(f.read())
        if not isinstance(overloads, dict):
            return False
        for name in overloads.values():
            with open(index.parent / name, "rb") as f:
                pickle.loads(f.read())
    except FileNotFoundError:
        return False  # an index naming a missing data file: numba would treat it as a miss, but clear it
    except Exception:  # noqa: BLE001 - any failure to unpickle means the file is damaged
        return False
    return True


def remove_damaged(folder: pathlib.Path, module: str) -> list[pathlib.Path]:
    """Delete the damaged cache entries of kernel module ``module`` under ``folder``; return their indexes.

    An entry is numba's index file ``{module}.{function}-{line}.py{XY}.nbi``
    and the data files ``….{k}.nbc`` it names; it is damaged when numba's own
    reading (two pickles in the index, one in each data file) would fail.
    """
    removed = []
    for index in sorted(pathlib.Path(folder).rglob(f"{module}.*.nbi")):
        if _index_is_sound(index):
            continue
        stem = index.name[: -len(".nbi")]
        for path in [index] + sorted(index.parent.glob(f"{stem}.*.nbc")):
            try:
                path.unlink()
            except OSError:
                pass
        removed.append(index)
    return removed


def check_family(module: str) -> None:
    """Remove damaged cache entries of kernel module ``module`` before numba reads them.

    Numba raises on a damaged entry on every call (so one truncated write
    would disable the compiled engine for good); removed here, the kernel
    compiles again on its first call.  One warning names each removed file.
    """
    if not use_cache():
        return
    for index in remove_damaged(cache_dir(), module):
        _warn(f"refscore: the kernel cache file {index} (or a data file it names) was damaged; "
              "removed it, the kernel compiles again")


def cache_size() -> int:
    """Bytes the kernel cache directory holds (0 when absent)."""
    root = cache_dir()
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


_announced: set[str] = set()


def _announce(module: str) -> None:
    if module in _announced:
        return
    _announced.add(module)
    if os.environ.get("REFSCORE_QUIET", "") not in ("", "0"):
        return
    what, how_long = FAMILIES[module]
    if module == "custom_sampler":
        when = "once per process (a user's function is not cached)"
    elif use_cache():
        when = f"once per machine (cached in {cache_dir()})"
    else:
        when = f"in this process only (the cache cannot be used: {cache_problem()})"
    print(f"refscore: compiling {what}, {when}; this takes about {how_long} on 2 cores",
          file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def announce_compiles() -> None:
    """Register the listener that prints :func:`_announce`'s line on a kernel family's first cache miss."""
    from numba.core import event

    prefix = __name__.rsplit(".", 1)[0] + "."

    class _CompileNotice(event.Listener):
        def on_start(self, ev):
            dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
            if module.startswith(prefix):
                family = module[len(prefix):]
                if family in FAMILIES:
                    _announce(family)

        def on_end(self, ev):
            pass

    event.register("numba:compile", _CompileNotice())
