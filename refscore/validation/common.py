"""Shared pieces of the validation experiments: the report row, progress bars and figures.

Every experiment module exposes ``NAME``, ``TITLE`` and
``run(quick: bool, seed: int, fig_dir: pathlib.Path) -> list[Row]``.  A row is
one checked claim: what was measured, what theory predicts (with its source),
the tolerance and whether the measurement is inside it.  No row may depend on
wall-clock time (timings belong in ``refscore bench``): a claim about cost is
checked on counted operations.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import numpy as np

__all__ = ["Row", "check_row", "save_figure", "progress", "PROGRESS", "EPS", "style",
           "log_with_zeros", "zero_marker_proxy"]

#: machine epsilon of float64: the round-off level marked in the figures
EPS = float(np.finfo(np.float64).eps)

#: progress bars on stderr; the runner sets this from ``--no-progress``
PROGRESS = True
#: address of a Dask scheduler for the experiments that can use one (``--scheduler``); None: local
SCHEDULER = None
#: ULA step of ula_bias's small-step run (``--small-step``); None: its default
SMALL_STEP = None


@dataclasses.dataclass
class Row:
    """One line of REPORT.md."""

    experiment: str
    quantity: str
    measured: str
    expected: str
    source: str
    tolerance: str
    passed: bool
    figure: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def check_row(experiment, quantity, measured, expected, source, tolerance, passed, figure=""):
    """Build a :class:`Row`, formatting numbers to 4 significant digits."""
    return Row(experiment, quantity, _fmt(measured), _fmt(expected), source, _fmt(tolerance),
               bool(passed), figure)


def progress(iterable=None, *, desc, total=None, unit="it"):
    """A tqdm bar on stderr for an experiment's inner loop (removed when done).

    On a terminal it redraws twice a second; when stderr is a file or a pipe
    (CI logs) it writes at most one line every 15 s.  ``PROGRESS = False``
    (``--no-progress``) turns the bars off.
    """
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False,
                disable=not PROGRESS, mininterval=0.5 if tty else 15.0, dynamic_ncols=tty)


def style():
    """Font sizes that stay readable when a figure is shown at README width."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 12,
    })


def log_with_zeros(ax, x, y, floor, *, label=None, zero_label="0 (bitwise equal)", **kw):
    """Plot ``y`` against ``x`` on ``ax`` (log y): exact zeros as such, not as a tiny number.

    Non-zero values are drawn as given; a value that is exactly 0 is drawn as an
    open triangle on the bottom axis (``floor``, which becomes the axis' lower
    limit), labelled ``zero_label`` in the legend (``None``: no legend entry;
    add one for all with :func:`zero_marker_proxy`).  Returns the number of zeros.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    nz = y != 0
    color = kw.pop("color", None)
    lines = ax.plot(x[nz], y[nz], label=label, color=color, **kw)
    color = lines[0].get_color() if lines else color
    n0 = int(np.count_nonzero(~nz))
    if n0:
        ax.plot(x[~nz], np.full(n0, floor), ls="none", marker="v", ms=8, color=color, mfc="none",
                clip_on=False, zorder=5,
                label=None if zero_label is None else (f"{label}: {zero_label}" if label else zero_label))
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    return n0


def zero_marker_proxy(ax, label="exactly 0 (drawn on the axis)"):
    """A legend-only handle for the zero markers of :func:`log_with_zeros`."""
    return ax.plot([], [], ls="none", marker="v", ms=8, color="0.3", mfc="none", label=label)[0]


def save_figure(fig, fig_dir: pathlib.Path, name: str) -> str:
    """Save ``fig`` as ``fig_dir/name.png`` (the runner has checked it may write there)."""
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
