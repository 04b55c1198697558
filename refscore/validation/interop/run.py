"""Compute a foreign backend's values for a golden directory and save them as ``values.npz``.

Then ``refscore check GOLDEN values.npz`` compares them with refscore's.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from . import FOREIGN_BACKENDS, VARIANTS

__all__ = ["compute", "main"]


def _jax_values(golden, *, variant, cases, dtype):
    if dtype != "float64":
        raise ValueError(f"the jax backend computes in float64 only, got dtype={dtype!r}")
    from .jax_backend import values  # imports jax (an ImportError names the install)

    return values(golden, variant=variant, cases=cases)


def _torch_values(golden, *, variant, cases, dtype):
    from .torch_backend import values  # imports torch (an ImportError names the install)

    return values(golden, variant=variant, cases=cases, dtype=dtype)


#: per foreign backend: its values(golden, variant=, cases=, dtype=)
_VALUES = {"jax": _jax_values, "torch": _torch_values}


def compute(backend, golden, *, variant=None, cases=None, dtype="float64") -> dict:
    """``{"<case>/<quantity>": array}`` from ``backend`` ("jax" or "torch") for a golden directory.

    Raises ImportError when the backend's library is not installed.
    """
    if backend not in FOREIGN_BACKENDS:
        raise ValueError(f"backend must be one of {FOREIGN_BACKENDS}, got {backend!r}")
    return _VALUES[backend](golden, variant=variant, cases=cases, dtype=dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m validation.interop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  refscore golden --out golden/\n"
            "  python -m validation.interop --backend jax golden/ --out values.npz\n"
            "  refscore check golden/ values.npz\n\n"
            "variants (deliberately wrong, for testing check):\n"
            + "\n".join(f"  {k}: {v}" for k, v in VARIANTS.items())
        ),
    )
    parser.add_argument("golden", metavar="GOLDEN_DIR", help="directory written by refscore golden")
    parser.add_argument("--backend", required=True, choices=FOREIGN_BACKENDS)
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="where to save the values")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="switch on one deliberately wrong convention")
    parser.add_argument("--cases", default=None, metavar="NAME,NAME", help="only these cases (comma-separated)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="working precision (float32: torch only)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {args.out}")
    if out.exists() and not args.force:
        parser.error(f"{out} exists; pass --force to overwrite it")
    cases = None if args.cases is None else [c for c in args.cases.split(",") if c]
    try:
        vals = compute(args.backend, args.golden, variant=args.variant, cases=cases, dtype=args.dtype)
    except ImportError as exc:
        print(f"python -m validation.interop: error: the {args.backend} backend needs {exc.name or args.backend} "
              f"installed ({exc})", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"python -m validation.interop: error: {exc}", file=sys.stderr)
        return 2
    np.savez(out, **vals)
    print(f"wrote {len(vals)} values from {args.backend} to {out}")
    return 0
