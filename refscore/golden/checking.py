"""Checking a backend against the golden files: refscore's values (:func:`compute`), the comparison
key by key (:func:`check`: rows, coverage, verdict) and its result (:class:`CheckResult`).

A failing quantity is handed to :mod:`refscore.golden.diagnosis`, whose
:class:`~refscore.golden.diagnosis.Diagnosis` lines the result prints under its table.
"""
from __future__ import annotations

import difflib
import math
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np

from .._files import read_npz
from ..models.mlp_base import one_blas_thread
from . import diagnosis
from .cases import TOLERANCES, compute_case
from .store import Golden, load

__all__ = ["CheckRow", "CheckResult", "compute", "check"]


@dataclass
class CheckRow:
    """One golden key: ``status`` is PASS, FAIL, MISSING (a quantity left out of a provided case) or UNKNOWN."""

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
        True when at least one key was compared, every compared key passed, no
        key was unknown and (with ``require_all``) no quantity of a provided
        case was left out.
    rows : list of CheckRow
        One per compared key (PASS or FAIL), per unknown key (UNKNOWN), and per
        quantity left out of a provided case (MISSING; a failure only with
        ``require_all``, and never printed line by line).
    rtol, atol : float
    cases_not_provided : list of str
        Golden cases of which nothing was provided (a subset is allowed).
    ignored_inputs : int
        Provided keys naming golden *inputs*; they are not compared.
    require_all : bool
        The strict verdict: a quantity left out of a provided case fails.
    coverage : dict
        ``{"cases": (provided, total), "quantities": (compared, available),
        "keys": (compared, total), "by_kind": {kind: (provided, total)}}``;
        available quantities are those of the kinds of the provided cases.
    not_provided : dict
        ``{quantity: number of golden cases whose value was not provided}``,
        over the golden cases of the kinds provided (every kind when nothing
        was), most frequent first; the other kinds are counted in
        ``coverage["by_kind"]``.
    diagnosis : list of Diagnosis
        One per failing quantity (empty when nothing fails).
    """

    passed: bool
    rows: list
    rtol: float
    atol: float
    cases_not_provided: list
    ignored_inputs: int = 0
    require_all: bool = False
    coverage: dict = field(default_factory=dict)
    not_provided: dict = field(default_factory=dict)
    diagnosis: list = field(default_factory=list)

    @property
    def allow_missing(self) -> bool:
        """``not require_all`` (the name of format 1's option)."""
        return not self.require_all

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def failures(self) -> list:
        """Rows that fail the verdict: FAIL, UNKNOWN, and MISSING with ``require_all``."""
        bad = {"FAIL", "UNKNOWN"} | ({"MISSING"} if self.require_all else set())
        return [r for r in self.rows if r.status in bad]

    def failing_quantities(self) -> dict:
        """``{quantity name: number of cases}`` over FAIL rows, most frequent first."""
        counts = {}
        for r in self.rows:
            if r.status == "FAIL":
                counts[r.quantity] = counts.get(r.quantity, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def missing_quantities(self) -> dict:
        """``{quantity name: number of provided cases}`` over MISSING rows, most frequent first."""
        counts = {}
        for r in self.rows:
            if r.status == "MISSING":
                counts[r.quantity] = counts.get(r.quantity, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def coverage_line(self) -> str:
        """``coverage: C of N cases, Q of M quantities, K of L keys compared``."""
        cov = self.coverage
        if not cov:
            return ""
        (pc, tc), (pq, tq), (pk, tk) = cov["cases"], cov["quantities"], cov["keys"]
        return f"coverage: {pc} of {tc} cases, {pq} of {tq} quantities, {pk} of {tk} keys compared"

    def summary(self) -> str:
        n_pass, n_fail, n_unknown = self.count("PASS"), self.count("FAIL"), self.count("UNKNOWN")
        lines = [f"{n_pass + n_fail} keys compared (rtol={self.rtol:g}, atol={self.atol:g}): "
                 f"{n_pass} passed, {n_fail} failed; {n_unknown} unknown keys"
                 + (f"; {self.ignored_inputs} input keys provided and ignored" if self.ignored_inputs else "")]
        if self.coverage:
            lines.append(self.coverage_line())
            by_kind = self.coverage.get("by_kind", {})
            if len(by_kind) > 1:
                lines.append("  cases by kind: " + ", ".join(f"{k} {p} of {t}" for k, (p, t) in by_kind.items()))
        missing = self.missing_quantities()
        if self.not_provided:
            items = []
            for q, c in self.not_provided.items():
                req = f"; {missing[q]} required" if self.require_all and q in missing else ""
                items.append(f"{q} ({c} case{'s' if c != 1 else ''}{req})")
            lines.append(_wrap("not provided: ", items))
        elif self.coverage:
            lines.append("not provided: nothing (every golden quantity was compared)")
        if self.require_all and missing:
            n = sum(missing.values())
            lines.append(f"MISSING: {n} key{'s' if n != 1 else ''} of the provided cases (required by --require-all)")
        bad = self.failing_quantities()
        if bad:
            lines.append("FAIL by quantity: " + ", ".join(f"{q} ({c} cases)" for q, c in bad.items()))
        result = "RESULT: " + ("PASS" if self.passed else "FAIL")
        if self.passed and self.coverage and self.coverage["keys"][0] < self.coverage["keys"][1]:
            result += f" (on the {self.coverage['keys'][0]} keys provided; see coverage)"
        lines.append(result)
        return "\n".join(lines)

    def table(self, only_failures=False) -> str:
        """Compared and unknown keys (or only the failing ones); MISSING keys are summarised, not listed."""
        rows = [r for r in (self.failures if only_failures else self.rows) if r.status != "MISSING"]
        width = max([len("key")] + [len(r.key) for r in rows])
        head = f"{'key':<{width}}  {'max abs err':>12}  {'max rel err':>12}  status"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.key:<{width}}  {_fmt(r.max_abs):>12}  {_fmt(r.max_rel):>12}  {r.status}"
                + (f"  ({r.note})" if r.note else "")
            )
        return "\n".join(lines)

    def diagnosis_text(self) -> str:
        """The diagnosis block (one line per failing quantity), or ``""`` when nothing fails."""
        if not self.diagnosis:
            return ""
        head = "diagnosis (per failing quantity: where it fails, yours/golden, the hypothesis that fits):"
        return "\n".join([head] + ["  " + line for d in self.diagnosis for line in d.lines()])

    def __str__(self):
        parts = [self.table()]
        if self.diagnosis:
            parts.append(self.diagnosis_text())
        parts.append(self.summary())
        return "\n\n".join(parts)


def _wrap(head: str, items: list, width: int = 100) -> str:
    """``head`` then ``items`` joined by commas, broken into lines between items only."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip() and line != head:
            lines.append(line)
            line = "  " + piece
        else:
            line += ("" if line in (head, "  ") else " ") + piece
    lines.append(line)
    return "\n".join(lines)


def _did_you_mean(g, case, q) -> str:
    """``"; did you mean 'linear_d2/ism'?"`` for an unknown key close to a golden one (the quantity's
    case or spelling, ``ISM`` for ``ism``; a misspelt case name), else ``""``."""
    c = g.all_cases.get(case)
    if c is None:
        close = difflib.get_close_matches(case, list(g.all_cases), n=1, cutoff=0.75)
        if not close:
            return ""
        c, case = g.all_cases[close[0]], close[0]
        if q in c.quantities or q in c.inputs:
            return f"; did you mean '{case}/{q}'?"
    names = list(c.quantities)
    lower = [n for n in names if n.lower() == q.lower()]
    close = lower or difflib.get_close_matches(q, names, n=1, cutoff=0.75)
    return f"; did you mean '{case}/{close[0]}'?" if close else ""


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3e}"


def _load_values(values) -> dict:
    if isinstance(values, dict):
        return dict(values)
    try:
        path = pathlib.Path(os.fspath(values))
    except TypeError:
        raise TypeError(f"values must be a dict or a path to an .npz file, got {type(values).__name__}") from None
    return read_npz(path, "values file")  # real numeric arrays only, checked before loading


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


def check(directory, values, *, rtol=None, atol=None, precision="float64", require_all=False,
          allow_missing=None, diagnose=True) -> CheckResult:
    r"""Compare a backend's values with the golden files, key by key, and diagnose what fails.

    A key passes when every element satisfies

    .. math:: |a - g| \le \text{atol} + \text{rtol}\,|g|

    (``numpy.isclose``) and the shapes agree.  Reported per key: the largest
    absolute error :math:`\max|a-g|` and the largest relative error
    :math:`\max |a-g|/|g|`.

    The verdict covers the keys provided: any subset of the cases and of their
    quantities may be given, and passes when everything given passes.  The
    result states the coverage (cases, quantities and keys compared against
    those available) and, per quantity, how many golden cases were not provided.

    Parameters
    ----------
    directory : path or :class:`Golden`
        Written by :func:`write` (any of :data:`READABLE_VERSIONS`).
    values : dict or path to an ``.npz``
        ``{"<case>/<quantity>": array}``, the keys of the golden file.  Keys
        naming inputs are ignored; other keys that are not golden keys fail
        (UNKNOWN).
    rtol, atol : float, keyword-only
        Default :data:`TOLERANCES` ``[precision]``: ``(1e-8, 1e-10)`` for
        float64, ``(1e-4, 1e-4)`` for float32 backends.
    precision : {"float64", "float32"}, keyword-only
        Picks the default tolerances.
    require_all : bool, keyword-only
        The strict verdict: every quantity of every provided case is required
        (one left out fails as MISSING).  Cases left out entirely are still allowed.
    allow_missing : bool, keyword-only
        The option of earlier versions: ``allow_missing=False`` is ``require_all=True``;
        ``True`` is the default behaviour.
    diagnose : bool, keyword-only
        Test the hypotheses of ``result.diagnosis`` on the failing quantities
        (default True).

    Returns
    -------
    CheckResult
        ``.passed``, ``.rows``, ``.coverage``, ``.not_provided``, ``.diagnosis``;
        ``str(result)`` is a table, the diagnosis and a summary.  A complex
        value in a dict fails its key (never cast to its real part).

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
    if allow_missing is not None:
        if require_all and allow_missing:
            raise ValueError("allow_missing=True contradicts require_all=True")
        require_all = require_all or not allow_missing
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
        c = g.all_cases.get(case)
        if c is not None and q in c.inputs:
            ignored += 1
        elif c is None or q not in c.quantities:
            unknown.append(CheckRow(str(key), "UNKNOWN", note="not a golden key" + _did_you_mean(g, case, q)))
        else:
            provided_cases.add(case)
    # the kinds of the cases provided (every kind when none is): what coverage and "not provided" count
    kinds = {c.kind for n, c in g.all_cases.items() if n in provided_cases} or {c.kind for c in g.all_cases.values()}
    not_provided, n_keys = {}, 0
    for name, c in g.all_cases.items():
        for q, gold in c.quantities.items():
            key = f"{name}/{q}"
            n_keys += 1
            if key in vals:
                rows.append(_compare(key, vals[key], gold, rtol, atol))
                continue
            if c.kind in kinds:
                not_provided[q] = not_provided.get(q, 0) + 1
            if name in provided_cases:
                rows.append(CheckRow(key, "MISSING", note="not provided"))
    rows += unknown
    compared = [r for r in rows if r.status in ("PASS", "FAIL")]
    bad = {"FAIL", "UNKNOWN"} | ({"MISSING"} if require_all else set())
    passed = bool(compared) and not any(r.status in bad for r in rows)
    available = {q for c in g.all_cases.values() if c.kind in kinds for q in c.quantities}
    by_kind = {}
    for name, c in g.all_cases.items():
        p, t = by_kind.get(c.kind, (0, 0))
        by_kind[c.kind] = (p + (name in provided_cases), t + 1)
    coverage = {
        "cases": (len(provided_cases), len(g.all_cases)),
        "quantities": (len({r.quantity for r in compared}), len(available)),
        "keys": (len(compared), n_keys),
        "by_kind": by_kind,
    }
    order = {q: i for i, q in enumerate(not_provided)}
    not_provided = dict(sorted(not_provided.items(), key=lambda kv: (-kv[1], order[kv[0]])))
    result = CheckResult(
        passed=passed, rows=rows, rtol=rtol, atol=atol,
        cases_not_provided=[n for n in g.all_cases if n not in provided_cases],
        ignored_inputs=ignored, require_all=require_all, coverage=coverage, not_provided=not_provided,
    )
    if diagnose and any(r.status == "FAIL" for r in rows):
        result.diagnosis = one_blas_thread(diagnosis.diagnose)(g, vals, rows, rtol, atol)
    return result


def compute(directory, cases=None) -> dict:
    """refscore's values of every quantity, recomputed from the stored inputs.

    Parameters
    ----------
    directory : path or :class:`Golden`
    cases : iterable of str, optional
        Only these case names, of any kind (default: every case of every kind).

    Returns
    -------
    dict
        ``{"<case>/<quantity>": ndarray}``, the format :func:`check` reads.
    """
    g = directory if isinstance(directory, Golden) else load(directory)
    names = list(g.all_cases) if cases is None else list(cases)
    out = {}
    for name in names:
        # the engine that wrote the golden values, so that the round trip is exact
        for k, v in compute_case(g.all_cases[name]).items():
            out[f"{name}/{k}"] = np.asarray(v, dtype=float)
    return out
