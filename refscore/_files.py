"""Safe file I/O of refscore's command line and golden files (internal module, public names).

Reading and writing the golden, values and data files: every problem is one line
naming the file and what is wrong with it; nothing is allocated before the sizes
declared in a file are checked against the file and against memory; no numpy
message advising ``allow_pickle`` reaches the user; writes are atomic (all the
files of one write, or none).  Used by :mod:`refscore.golden`, :mod:`refscore.cli`
and ``refscore validate`` alike.
"""
from __future__ import annotations

import contextlib
import math
import os
import pathlib
import signal
import stat
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = [
    "memory_limit",
    "fmt_bytes",
    "too_big",
    "os_error_message",
    "reason",
    "open_input",
    "FileProblem",
    "READ_ERRORS",
    "read_npy_header",
    "dtype_problem",
    "read_array",
    "read_npy",
    "read_npz",
    "write_files_atomically",
    "check_creatable",
    "Terminated",
    "sigterm_as_interrupt",
]


def memory_limit():
    """Bytes of physical memory of this machine, or None where the OS does not say.

    Nothing larger is ever allocated for a file or a sample: it could not succeed.
    """
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def fmt_bytes(n) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"


def too_big(nbytes):
    """Why ``nbytes`` cannot be allocated here (a phrase), or None when it may fit."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        return f"needs {fmt_bytes(nbytes)} of memory, more than this machine has ({fmt_bytes(limit)})"
    return None


def os_error_message(exc: OSError, path, what: str) -> str:
    """One line saying why ``path`` (``what``, e.g. "values file") cannot be read: not found, a
    directory, permission denied, or the OS's reason."""
    if isinstance(exc, FileNotFoundError):
        return f"{what} {path} not found"
    if isinstance(exc, NotADirectoryError):
        return f"{what} {path} not found: a part of its path is not a directory"
    if isinstance(exc, IsADirectoryError):
        return f"{what} {path} is a directory, not a file"
    if isinstance(exc, PermissionError):
        return f"{what} {path} is not readable: permission denied"
    return f"cannot read {what} {path}: {exc.strerror or exc}"


def open_input(path, what: str):
    """``open(path, "rb")`` of a regular file; else the OSError subclass whose one-line message
    says why (not found, a directory, permission denied, not a regular file)."""
    try:
        st = os.stat(path)
    except PermissionError:
        raise PermissionError(f"{what} {path} cannot be reached: permission denied on a directory above it") from None
    except OSError as exc:
        raise type(exc)(os_error_message(exc, path, what)) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{what} {path} is not a regular file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise type(exc)(os_error_message(exc, path, what)) from None


class FileProblem(Exception):
    """What is wrong with an array, worded to follow its name: the caller prefixes the file and the key."""


#: what a damaged zip or .npy stream may raise while it is read
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, SyntaxError, TypeError)


def read_npy_header(fp):
    """``(shape, fortran_order, dtype)`` of the .npy stream at ``fp`` (at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
    except READ_ERRORS:
        raise FileProblem("is not a .npy array file (write it with numpy.save)") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise FileProblem(f"uses .npy format version {version[0]}.{version[1]}; numeric arrays are "
                          "written as 1.0 or 2.0 (numpy.save)")
    try:
        shape, fortran, dtype = readers[version](fp)
    except READ_ERRORS:
        # numpy's own message here may advise allow_pickle=True: it must not reach the user
        raise FileProblem("has a damaged .npy header") from None
    if any(n < 0 for n in shape):
        raise FileProblem(f"has a damaged .npy header (shape {shape})")
    return shape, fortran, dtype


def dtype_problem(dtype, real: bool):
    """Why an array of ``dtype`` is refused (object, structured, or complex when ``real``), or None."""
    if dtype.hasobject:
        return (f"holds an object array (dtype {dtype}), which is never loaded (unpickling can run "
                "arbitrary code); save numeric arrays")
    if dtype.names is not None or dtype.kind == "V":
        return f"holds a structured array (dtype {dtype}); save plain numeric arrays"
    if real and dtype.kind == "c":
        return (f"holds complex values (dtype {dtype}); refscore's values are real, complex ones are "
                "refused (save the real part if the imaginary part is zero)")
    return None


def read_array(fp, available: int, *, real: bool, drain: bool = False) -> np.ndarray:
    """The array of the .npy stream ``fp`` of ``available`` bytes, its header checked first:
    dtype, declared size against the bytes present and against memory."""
    start = fp.tell()
    shape, _, dtype = read_npy_header(fp)
    problem = dtype_problem(dtype, real)
    if problem:
        raise FileProblem(problem)
    nbytes = math.prod(shape) * dtype.itemsize
    have = available - (fp.tell() - start)
    if nbytes > have:
        raise FileProblem(f"declares shape {shape} {dtype} ({fmt_bytes(nbytes)}) but holds only "
                          f"{fmt_bytes(max(have, 0))} of data: it is truncated or damaged")
    big = too_big(nbytes)
    if big:
        raise FileProblem(f"declares shape {shape} {dtype}: loading it {big}")
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
            raise FileProblem("fails its CRC-32 check: the file was changed or damaged after it was "
                              "written") from None
        raise FileProblem(f"is damaged ({exc})") from None
    except READ_ERRORS:
        raise FileProblem("is truncated or damaged: its data cannot be read") from None
    if extra:
        raise FileProblem(f"has {extra} unexpected bytes after its data: it is damaged")
    return arr


def read_npy(path, what: str, *, real: bool = True) -> np.ndarray:
    """The one array of the .npy file ``path`` (``what``, e.g. "--data file", names it in errors).

    Raises an OSError subclass when the file cannot be opened, ValueError (one line) when it is
    not a sound .npy file of a numeric (real, unless ``real=False``) array that fits in memory.
    """
    path = pathlib.Path(path)
    with open_input(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(6)
        if not head:
            raise ValueError(f"{what} {path} is empty (0 bytes)")
        if head.startswith(b"PK"):
            raise ValueError(f"{what} {path} must hold one array (.npy), got an .npz archive")
        f.seek(0)
        try:
            return read_array(f, size, real=real)
        except FileProblem as exc:
            raise ValueError(f"{what} {path} {exc}") from None


def read_npz(path, what: str, *, real: bool = True) -> dict:
    """``{key: array}`` of the .npz archive ``path``, every member checked as :func:`read_npy` does."""
    path = pathlib.Path(path)
    with open_input(path, what) as f:
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
        except READ_ERRORS:
            raise ValueError(f"{what} {path} is not a readable .npz archive: it is truncated or damaged "
                             "(its zip directory cannot be read)") from None
        with zf:
            big = too_big(sum(i.file_size for i in infos))
            if big:
                raise ValueError(f"{what} {path} holds {fmt_bytes(sum(i.file_size for i in infos))} of "
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
                        out[key] = read_array(member, info.file_size, real=real, drain=True)
                except FileProblem as exc:
                    raise ValueError(f"{what} {path}: {key!r} {exc}") from None
                except READ_ERRORS as exc:
                    raise ValueError(f"{what} {path} is damaged: its entry for {key!r} cannot be read "
                                     f"({exc})") from None
    return out


def write_files_atomically(writers: dict) -> None:
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





def reason(exc: OSError) -> str:
    """``"permission denied"``, ``"no space left on device"``...: an OSError's cause in words."""
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def check_creatable(directory: pathlib.Path) -> None:
    """PermissionError / NotADirectoryError (one line) when ``directory`` cannot be created or written."""
    p = directory
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(f"cannot create directory {directory}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot {'write into' if p == directory else 'create'} directory {directory}: "
                              f"permission denied in {p}")


class Terminated(KeyboardInterrupt):
    """SIGTERM while outputs are written: unwinds like Ctrl-C, so no temporary file is left."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises :class:`Terminated` (main thread only; restored after)."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
