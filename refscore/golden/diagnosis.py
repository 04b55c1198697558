r"""What :func:`refscore.golden.check` makes of a failing quantity: one :class:`Diagnosis` each.

For every failing quantity, over the cases where it fails:

* the ratio yours/golden, elementwise where the golden value is not ~0: median
  and range;
* hypotheses, each a prediction of *your* values from refscore's, that must fit
  every failing case (to ``max(10 rtol, 1e-9)``) and explain its failure (the
  prediction itself would fail the check there):

  - constant factors :math:`-1, \tfrac12, 2`; :math:`d^{\pm1}, d^{\pm1/2}`;
    :math:`\sigma^k`, :math:`k = -4..4` (cases with one noise level);
  - variants recomputed with refscore's primitives: a transposed Jacobian
    (``jacobian``, ``jvp``); the losses of :math:`-s` (a flipped score); a
    squared norm without its ½; a gradient missing one of its two terms
    (``ism``: tr J and ½‖s‖²; ``ssm``: vᵀJv and ½(vᵀs)²; ``ssm_vr``: vᵀJv and
    ½‖s‖²); unit-sphere projections; DSM's target and noise written with σ where
    σ² belongs (or the reverse); NCSN weightings :math:`\lambda(\sigma) =
    \sigma^k`; KSD's U/V normalisations and IMQ's :math:`c` vs :math:`c^2`;
    a sampler run at the step a convention function makes of the stored one,
    without the 2 in :math:`\sqrt{2\eta}`, or (annealed) at one step for every
    level; MALA's ratio without or with a flipped proposal correction;

* where the failures lie: gradient only (the values pass), only at d > 1,
  only one projection kind, only one model class or activation.

The conventions come from :data:`refscore.conventions.TABLE` as data: each row
carries its conversions as callables (:class:`refscore.conventions.Conversion`:
the function, its inverse, what it converts and its arguments by word).  Every
conversion of a failing quantity is a hypothesis (your values are refscore's
put through its inverse); a hypothesis of the list above names the row that
carries its conversion, checked numerically on your values (a function that
does not turn your numbers into refscore's is never named).  Nothing is found
by reading the table's text, and a conversion that raises is a bug that
propagates.

The hypotheses themselves are in ``refscore/golden/_hypotheses.py`` (the samplers' in
``refscore/golden/_sampler_hypotheses.py``); this module
tests them, finds where the failures lie and words the result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sampling.samplers import SAMPLERS
from . import _hypotheses, _sampler_hypotheses
from .cases import KINDS, PROJECTION_KINDS, TOLERANCES, build_model

__all__ = ["Diagnosis", "diagnose"]


@dataclass
class Diagnosis:
    """What :func:`check` makes of one failing quantity (``CheckResult.diagnosis``).

    Attributes
    ----------
    quantity : str
        The quantity name (``"dsm"``, ``"ssm_sphere_grad"``, ``"states"``...).
    cases : list of str
        The failing cases it was diagnosed over.
    ratio_median, ratio_min, ratio_max : float
        yours/golden over every element of those cases where the golden value is
        not ~0: its median and spread (NaN when nothing could be divided).
    hypothesis : str or None
        The first tested hypothesis that fits every failing case (``"factor 2"``,
        ``"factor 1/d"``, ``"factor sigma^2"``, ``"sign flip"``, ``"transposed
        Jacobian"``, ``"gradient misses the 1/2 (v^T s)^2 term"``, ``"DSM target
        -z"``...), or None when none fits.
    explanation : str
        The likely cause, in words.
    convention : str or None
        The row (``quantity`` column) of :data:`refscore.conventions.TABLE` that
        this factor or variant is, when one is.
    conversion : str or None
        The :mod:`refscore.conventions` function converting your value (or, for
        a sampler step, the stored step) into refscore's convention, when one exists.
    patterns : tuple of str
        Where the failures lie: ``"gradient only"``, ``"only d > 1"``, ``"only the
        sphere projection"``, ``"only MLPEnergy"``, ``"only activation gelu"``.
    also : tuple of str
        Other hypotheses that fit as well.
    note : str
        Why no ratio could be formed (a shape, non-finite or non-numeric value).
    """

    quantity: str
    cases: list
    ratio_median: float = float("nan")
    ratio_min: float = float("nan")
    ratio_max: float = float("nan")
    hypothesis: str | None = None
    explanation: str = ""
    convention: str | None = None
    conversion: str | None = None
    patterns: tuple = ()
    also: tuple = ()
    note: str = ""

    def line(self) -> str:
        """One line: the quantity, where it fails, the ratio, the hypothesis and the convention."""
        n = len(self.cases)
        head = f"{self.quantity}: {n} case{'s' if n != 1 else ''}"
        if self.patterns:
            head += ", " + ", ".join(self.patterns)
        parts = [head]
        if self.note:
            parts.append(self.note)
        elif self.ratio_median == self.ratio_median:
            if _same(self.ratio_min, self.ratio_max):
                parts.append(f"yours/golden = {_g4(self.ratio_median)} everywhere")
            else:
                parts.append(f"yours/golden median {_g4(self.ratio_median)}, range "
                             f"[{_g4(self.ratio_min)}, {_g4(self.ratio_max)}]")
        if self.hypothesis is None:
            tail = "-> " + (self.explanation or "no tested hypothesis fits")
        else:
            tail = f"-> {self.hypothesis}" + (f": {self.explanation}" if self.explanation else "")
        if self.convention or self.conversion:
            conv = []
            if self.convention:
                conv.append(f"convention '{self.convention}'")
            if self.conversion:
                conv.append(f"convert with refscore.conventions.{self.conversion}")
            tail += " [" + ", ".join(conv) + "]"
        if self.also:
            tail += f" (also fits: {', '.join(self.also)})"
        return "; ".join(parts) + " " + tail


def _same(a, b) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-300)


def _g4(v) -> str:
    return f"{v:.4g}"


# ---------------------------------------------------------------- the data of one quantity
class _Quantity:
    """The failing cases of one quantity: yours and golden, comparable ones only."""

    def __init__(self, ctx, q, failing):
        self.ctx, self.q = ctx, q
        self.cases, self.yours, self.gold, self.notes = [], {}, {}, []
        for r in failing:
            case = ctx.g.all_cases[r.case]
            gold = case.quantities[q]
            try:
                y = np.asarray(ctx.vals[r.key], dtype=float)
            except (TypeError, ValueError):
                y = None
            if y is None or np.iscomplexobj(ctx.vals[r.key]) or y.shape != gold.shape or not np.all(np.isfinite(y)):
                self.notes.append((case, r.note, y))
                continue
            self.cases.append(case)
            self.yours[case.name] = y
            self.gold[case.name] = gold

    def fits(self, predict) -> bool:
        """True when ``predict(case)`` fits your values in every case and fails the check in each."""
        ctx = self.ctx
        if not self.cases:
            return False
        for c in self.cases:
            p = predict(c)  # a prediction that raises is a bug of the diagnosis, not a misfit
            if p is None:
                return False
            p = np.asarray(p, dtype=float)
            if p.shape != self.gold[c.name].shape or not np.all(np.isfinite(p)):
                return False
            gold = self.gold[c.name]
            if np.all(np.abs(p - gold) <= ctx.atol + ctx.rtol * np.abs(gold)):
                return False  # the prediction would pass: it does not explain this failure
            tr = max(10 * ctx.rtol, 1e-9)
            ta = max(10 * ctx.atol, 1e-9 * float(np.max(np.abs(p), initial=0.0)))
            if not np.all(np.abs(self.yours[c.name] - p) <= ta + tr * np.abs(p)):
                return False
        return True

    def ratio(self):
        parts = []
        for c in self.cases:
            gold, y = self.gold[c.name], self.yours[c.name]
            scale = float(np.max(np.abs(gold), initial=0.0))
            mask = np.abs(gold) > 1e-12 * max(scale, 1e-300)
            if scale > 0 and mask.any():
                parts.append(y[mask] / gold[mask])
        if not parts:
            return float("nan"), float("nan"), float("nan")
        r = np.concatenate(parts)
        return float(np.median(r)), float(r.min()), float(r.max())


class _Context:
    def __init__(self, g, vals, rows, rtol, atol):
        self.g, self.vals, self.rtol, self.atol = g, vals, rtol, atol
        self.status = {(r.case, r.quantity): r.status for r in rows}
        self._models, self._runs = {}, {}

    def model(self, case):
        m = self._models.get(case.name)
        if m is None:
            m = self._models[case.name] = build_model(case.spec, reference=True)
        return m

    def passes(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "PASS"

    def fails(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "FAIL"


# ---------------------------------------------------------------- where the failures lie
def _patterns(ctx, Q, failing) -> tuple:
    q = Q.q
    names = [r.case for r in failing]
    cases = [ctx.g.all_cases[n] for n in names]
    out = []
    if q.endswith("_grad") and all(ctx.passes(n, q[:-5]) for n in names):
        out.append("gradient only")
    dims = [c.dim for c in cases]
    passing = [c for c in ctx.g.all_cases.values() if ctx.passes(c.name, q)]
    several = len(cases) > 1  # one case is trivially "only" its own dimension, class and activation
    if several and min(dims) > 1 and any(c.dim == 1 for c in passing):
        out.append("only d > 1")
    found = _hypotheses.loss_of(q)
    if found is not None and found[1] is not None:
        loss, kind, grad = found[0], found[1], "_grad" if found[2] else ""
        others = [f"{loss}_{k}{grad}" for k in PROJECTION_KINDS if k != kind]
        compared = [(n, o) for n in names for o in others if ctx.status.get((n, o)) in ("PASS", "FAIL")]
        if compared and all(ctx.passes(n, o) for n, o in compared):
            out.append(f"only the {kind} projection")
    if several and KINDS[cases[0].kind].subject == "model":
        def model_of(c):
            inner = c.spec.get("kwargs", {}).get("model")
            spec = inner if isinstance(inner, dict) else c.spec  # a wrapped model: its inner model
            return spec["model"], spec.get("kwargs", {}).get("activation")

        labels = {model_of(c) for c in cases}
        classes = {m for m, _ in labels}
        if len(classes) == 1 and any(model_of(c)[0] not in classes for c in passing):
            out.append(f"only {next(iter(classes))}")
        acts = {a for _, a in labels}
        if len(acts) == 1 and None not in acts and any(model_of(c)[1] not in (acts | {None}) for c in passing):
            out.append(f"only activation {next(iter(acts))}")
    if cases and cases[0].kind in SAMPLERS:
        out.extend(_sampler_hypotheses.patterns(ctx, Q, failing))
    return tuple(out)


def _diagnose_quantity(ctx, q, failing):
    Q = _Quantity(ctx, q, failing)
    names = [r.case for r in failing]
    patterns = _patterns(ctx, Q, failing)
    med, lo, hi = Q.ratio()
    if not Q.cases:  # nothing comparable: say why, and whether the array is transposed
        case, note, y = Q.notes[0]
        gold = case.quantities[q]
        hyp = expl = None
        if y is not None and y.shape == gold.shape[::-1] and y.ndim > 1 and np.allclose(y.T, gold, rtol=1e-6):
            hyp, expl = "transposed array", "your array is golden's with its axes reversed (points in columns)"
        return Diagnosis(q, names, hypothesis=hyp, explanation=expl or "", patterns=patterns,
                            note=note or "not comparable")
    fits = []
    r32, a32 = TOLERANCES["float32"]
    if (ctx.rtol < r32 or ctx.atol < a32) and all(
            np.all(np.abs(Q.yours[c.name] - Q.gold[c.name]) <= a32 + r32 * np.abs(Q.gold[c.name])) for c in Q.cases):
        fits.append(("round-off", f"agrees within the float32 tolerances (rtol {r32:g}, atol {a32:g}): a float32 "
                     "backend, or a step that loses precision; check a float32 backend with --float32", None))
    for label, expl, predict, conv in _hypotheses.structural(ctx, Q):
        if Q.fits(predict):
            fits.append((label, expl, conv))
    for label, factor, expl, conv in _hypotheses.factors(ctx, Q):
        if Q.fits(lambda c, factor=factor: factor(c) * Q.gold[c.name]):
            fits.append((label, expl, conv))
    ledger = [(label, expl, conv) for label, expl, predict, conv in _hypotheses.ledger(ctx, Q) if Q.fits(predict)]
    if not fits and ledger:
        fits.append(ledger[0])
    if not fits:
        expl = "no tested hypothesis fits"
        if "gradient only" in patterns:
            expl = ("the values pass but the gradients do not: a term detached from the graph (stop_gradient, "
                    ".detach()) or missing from a hand-written gradient; no single missing term fits")
        elif med == med and not _close_range(lo, hi):
            expl += " (not a constant factor)"
        return Diagnosis(q, names, med, lo, hi, None, expl, patterns=patterns)
    label, expl, conv = fits[0]
    convention, conversion = conv(Q) if conv is not None else (None, None)
    if convention is None and conversion is None and ledger:
        convention, conversion = ledger[0][2](Q)
    also = tuple(dict.fromkeys(f[0] for f in fits[1:] if f[0] != label))[:3]
    return Diagnosis(q, names, med, lo, hi, label, expl, convention, conversion, patterns, also)


def _close_range(lo, hi) -> bool:
    return abs(hi - lo) <= 1e-6 * max(abs(lo), abs(hi), 1e-300)


def diagnose(g, vals, rows, rtol, atol) -> list:
    """One :class:`Diagnosis` per failing quantity, in the order the keys were compared.

    Parameters
    ----------
    g : refscore.golden.Golden
    vals : dict
        Your values, ``{"<case>/<quantity>": array}``.
    rows : list of refscore.golden.CheckRow
        The rows of the check (the FAIL rows are diagnosed).
    rtol, atol : float
        The check's tolerances.
    """
    import warnings

    ctx = _Context(g, vals, rows, rtol, atol)
    failing = {}
    for r in rows:
        if r.status == "FAIL":
            failing.setdefault(r.quantity, []).append(r)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a variant sampler may diverge; a complex value may be cast
        return [_diagnose_quantity(ctx, q, rs) for q, rs in failing.items()]
