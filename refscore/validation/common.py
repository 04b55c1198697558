"""Shared pieces of the validation experiments: the report row and figure saving.

Every experiment module exposes ``NAME``, ``TITLE`` and
``run(quick: bool, seed: int, fig_dir: pathlib.Path) -> list[Row]``.  A row is
one checked claim: what was measured, what theory predicts (with its source),
the tolerance and whether the measurement is inside it.
"""
from __future__ import annotations

import dataclasses
import pathlib

__all__ = ["Row", "check_row", "save_figure"]


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


def save_figure(fig, fig_dir: pathlib.Path, name: str) -> str:
    """Save ``fig`` as ``fig_dir/name.png`` (the suite's own output, regenerated each run)."""
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
