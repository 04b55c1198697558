r"""What :func:`refscore.golden.check` makes of a failing quantity: one :class:`Diagnosis` each.

For every failing quantity, over the cases where it fails:

* the ratio yours/golden, elementwise where the golden value is not ~0: median
  and range;
* readings, each a prediction of *your* values from refscore's, that must fit
  every failing case at once (to ``max(10 rtol, 1e-9)``) and explain its failure
  (the prediction itself would fail the check there).  A loss quantity (ESM, ISM,
  DSM, SSM and SSM-VR of each projection kind, ``dsm_multi``, their gradients;
  the Stein kernel, ``ksd_u``, ``ksd_v``) is read *term by term*
  (``refscore/golden/_termfit.py``, with the terms of ``refscore/golden/terms.py``):

  .. math:: \text{yours} = \sum_i g\,c_s^{\deg_s T_i}\,c_t^{\deg_t T_i}\,b_i\;T_i ,

  each factor one or two named atoms, the fewest first:

  - the whole quantity (:math:`g`): a flipped sign (a gradient ascent), x2 (a
    forgotten ½ only for ESM and DSM, one squared norm; on ISM, SSM, SSM-VR it
    doubles the trace term too, which no missing ½ does), ½, :math:`d^{\pm1}` (a
    mean over the coordinates), :math:`n` (a sum over the points: ratio exactly
    n), :math:`1/n`, :math:`m` (a sum over the projections), one projection only,
    :math:`\sigma^k` (NCSN's :math:`\sigma^2`, the :math:`\sigma^4`-scaled DSM;
    in ``dsm_multi`` a weighting :math:`\lambda(\sigma) = \sigma^k`), KSD's
    U-statistic, V-statistic, U over :math:`n^2`, sum over all pairs;
  - the score (:math:`c_s`): flipped, x2, ½; ``dsm_multi``'s :math:`s_\theta(x)`
    without its :math:`1/\sigma` or over :math:`\sigma^2`;
  - the target of a residual loss (:math:`c_t`): flipped, x2, ½; DSM's target
    :math:`-z` (σ where σ² belongs), :math:`-z/\sigma^2`, :math:`-\sigma z`;
  - one term (:math:`b_i`): left out (a detached gradient term), its sign flipped
    (ISM's trace term), divided by :math:`d` (a Hutchinson trace normalised by the
    dimension; the mean over dimensions in ½‖s‖²; KSD's kernel term without its
    :math:`d`), x :math:`d`, x2 (½ missing on that term only), ½, summed over
    the points;

  unit-sphere projections are the sphere's SSM x1/d, or its SSM-VR trace term
  x1/d, when the other projection kinds pass.  The other quantities, and the
  variants that are no combination of terms: constant factors :math:`-1,
  \tfrac12, 2, d^{\pm1}, d^{\pm1/2}, \sigma^k` (a score, a Jacobian, a trace,
  the sphere projections); a transposed Jacobian (``jacobian``, ``jvp``); DSM's
  noise :math:`x + \sigma^2 z`; IMQ's :math:`c` for :math:`c^2` or :math:`c^4`;
  ``score_noised`` without or with an extra :math:`1/\sigma`; the samplers'
  (``refscore/golden/_sampler_hypotheses.py``), the diffusion kinds'
  (``refscore/golden/_diffusion_hypotheses.py``);

* where the failures lie: gradient only (the values pass), only at d > 1,
  only one projection kind, only one model class or activation.

Every reading of the lowest complexity that fits is said: two readings of
different words (a flipped score and a flipped trace term; x2 and a sum over the
m = 2 projections) are reported as ambiguous, never chosen between.  A reading
that another key contradicts is discarded: a scaled score when your ``score``,
``jacobian``, ``trace`` or ``jvp`` (``score_noised`` for ``dsm_multi``) passes or
fails otherwise, and kept alone when they fail by exactly that factor; a
gradient is read as its value is when that reading fits it.

The conventions come from :data:`refscore.conventions.TABLE` as data: each row
carries its conversions as callables (:class:`refscore.conventions.Conversion`:
the function, its inverse, what it converts and its arguments by word).  Every
conversion of a failing quantity is a reading (your values are refscore's put
through its inverse), and your values are read term by term again after each
conversion: a reading after a conversion is said beside the raw one when it is
as simple (the NCSN weighting summed over the points: raw ``factor n x
sigma^2``, after ``dsm_from_ncsn`` a sum over the points).  A reading names the
row and conversion that give its numbers, checked numerically on your values
(a function that does not turn your numbers into refscore's is never named).
Nothing is found by reading the table's text, and a conversion that raises on
refscore's values is a bug that propagates.

When nothing fits, the diagnosis says so and gives the closest term-wise reading
with its residual, said not to fit.  The hypotheses are in
``refscore/golden/_hypotheses.py``, ``refscore/golden/_termfit.py``,
``refscore/golden/_sampler_hypotheses.py`` and ``refscore/golden/_diffusion_hypotheses.py``;
this module tests them, finds where the failures lie and words the result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sampling.samplers import SAMPLERS
from . import _diffusion_hypotheses, _hypotheses, _sampler_hypotheses, _termfit
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
        Other wordings of the same fit (another ledger row giving the same numbers).
    note : str
        Why no ratio could be formed (a shape, non-finite or non-numeric value).
    ambiguous : tuple of str
        Two or more different readings of the same simplicity fit every failing case: each
        label (``hypothesis`` joins them with " or "); empty when one reading fits.
    formula : str
        The term-wise fit, ``"yours = 1 [tr grad_x s] + 2 [1/2 ||s||^2]"`` (a loss quantity).
    readings : tuple of str
        The same fit read after a conversion of :data:`refscore.conventions.TABLE`, in words
        naming the conversion and its row, when that reading differs from ``hypothesis``.
    best : str
        When nothing fits: the closest term-wise reading and its residual, said not to fit.
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
    ambiguous: tuple = ()
    formula: str = ""
    readings: tuple = ()
    best: str = ""

    def lines(self) -> list:
        """:meth:`line`, then indented: the term-wise fit, the readings after a conversion, the closest
        reading when nothing fits."""
        out = [self.line()]
        if self.formula:
            out.append("    term-wise: " + self.formula)
        out += ["    also read " + r for r in self.readings]
        if self.best:
            out.append("    " + self.best)
        return out

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
        self.cache = {}  # the terms of each case, computed once per check
        self.readings = {}  # quantity -> its term-wise readings (a gradient's are read against its value's)

    def model(self, case):
        m = self._models.get(case.name)
        if m is None:
            m = self._models[case.name] = build_model(case.spec, reference=True)
        return m

    def passes(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "PASS"

    def fails(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "FAIL"

    def yours(self, case, q):
        """Your ``q`` of ``case`` as float64 when it is comparable with golden's (a recorded quantity of the
        same shape, real and finite), else None."""
        v = self.vals.get(f"{case.name}/{q}")
        if v is None or q not in case.quantities or np.iscomplexobj(v):
            return None
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            return None
        return a if a.shape == case.quantities[q].shape and np.all(np.isfinite(a)) else None

    def cached(self, key, make):
        """``make()``, computed once per check for ``key`` (a variant run, a departure...)."""
        if key not in self._runs:
            self._runs[key] = make()
        return self._runs[key]


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
    if cases and cases[0].kind in _diffusion_hypotheses.KINDS:
        out.extend(_diffusion_hypotheses.patterns(ctx, Q, failing))
    return tuple(out)


@dataclass
class _Found:
    """A reading that fits every failing case: its complexity (atoms; a conversion counts one), words,
    convention, term-wise formula and prediction of your values (``predict(case)``)."""

    level: int
    label: str
    explanation: str
    predict: object
    convention: str | None = None
    conversion: str | None = None
    formula: str = ""
    source: str = "term"  # term, variant, factor, ledger, converted
    reading: object = None  # the term-wise reading, if one
    key: object = None  # the reading by slot and term name (a value's and its gradient's compare equal)
    call: str = ""  # the conversion applied before the term-wise reading, in words
    detail: str = ""  # that reading's own words


#: the keys that scale with the score a loss of each case kind is computed from (a reading that
#: scales the score by c scales each of them by c, and is checked against them)
_SCORE_KEYS = {"losses": ("score", "jacobian", "trace", "jvp"), "dsm_multi": ("score_noised",)}
#: the order in which readings of one fit are worded
_SOURCES = ("term", "variant", "factor", "converted", "ledger")


def _score_factor(a, case):
    """The factor an atom of the score slot puts on the score of ``case`` (per point for dsm_multi)."""
    base = np.array([-1.0, 2.0, case.dim, 1.0, 1.0])
    value = float(np.prod(base ** np.array(a.exps)))
    if a.sigma:
        sig = case.inputs["sigma_points"][:, None] if "sigma_points" in case.inputs else float(case.inputs["sigma"])
        return value * sig ** a.sigma
    return value


def _score_verdict(ctx, Q):
    """``verdict(atom)``: what the score's keys of the failing cases (score, Jacobian, trace, JVP) say of
    a reading that scales the score by ``atom``: "contradicted" (one passes, or fails otherwise),
    "confirmed" (each provided one fails by exactly that factor) or "open" (none provided)."""
    keys = _SCORE_KEYS.get(Q.cases[0].kind, ())
    memo = {}

    def scaled(a, c, key) -> bool:
        try:
            y = np.asarray(ctx.vals[f"{c.name}/{key}"], dtype=float)
        except (TypeError, ValueError):
            return False
        gold = c.quantities[key]
        factor = _score_factor(a, c)
        if np.ndim(factor) and gold.ndim == 3:  # a per-point factor on a Jacobian
            factor = factor[:, :, None]
        want = factor * gold
        return y.shape == want.shape and bool(np.allclose(y, want, rtol=max(10 * ctx.rtol, 1e-9),
                                                          atol=max(10 * ctx.atol, 1e-12)))

    def verdict(a):
        if a.name not in memo:
            seen = [(c, key, ctx.status.get((c.name, key))) for c in Q.cases for key in keys]
            seen = [(c, key, st) for c, key, st in seen if st in ("PASS", "FAIL")]
            if not seen:
                memo[a.name] = "open"
            elif any(st == "PASS" for _, _, st in seen):
                memo[a.name] = "contradicted"
            else:
                memo[a.name] = "confirmed" if all(scaled(a, c, key) for c, key, _ in seen) else "contradicted"
        return memo[a.name]

    return verdict


def _keep(verdict):
    """Drop the readings another key contradicts; when the score key confirms a scaled score, that
    reading alone (the others of the same fit would be a coincidence)."""
    def keep(readings):
        out, confirmed = [], []
        for r in readings:
            if r.cs is not None:
                v = verdict(r.cs)
                if v == "contradicted":
                    continue
                if v == "confirmed":
                    confirmed.append(r)
            out.append(r)
        return confirmed or out
    return keep


def _detaches(r) -> bool:
    """A reading that only leaves terms out (what a detached term does to a gradient)."""
    return not r.g and r.cs is None and r.ct is None and all(a.zero for atoms in r.b for a in atoms)


def _term_found(S, fit, flags, level_offset=0, back=None) -> list:
    """One :class:`_Found` per reading of every fit (two readings of one fit give the same numbers)."""
    out = []
    for j, (sig, rs) in enumerate(fit.fits):
        def predict(c, j=j):
            p = fit.predict(c, j).reshape(c.quantities[S.quantity].shape)
            return p if back is None else back(c, p)

        for r in rs:
            key = (r.g, r.cs, r.ct, frozenset((t.name, atoms) for t, atoms in zip(S.terms, r.b) if atoms))
            worded = [_termfit.words(S, r, flags)]
            if flags.get("sphere_only", False) is None:  # the other projection kinds would tell these apart
                worded = list(dict.fromkeys(_termfit.words(S, r, {**flags, "sphere_only": only})
                                            for only in (True, False)))
            for label, expl, row in worded:
                if len(worded) > 1:
                    expl += " (your other projection kinds, not provided, would tell these readings apart)"
                if flags.get("gradient_only") and not _detaches(r):
                    expl += " (your values pass: only the gradient is computed this way, e.g. a hand-written gradient)"
                out.append(_Found(fit.level + level_offset, label, expl, predict, row, None,
                                  _termfit.formula(S, sig), "term" if back is None else "converted", r,
                                  key if back is None else None))
    return out


def _flags(ctx, Q):
    found = _hypotheses.loss_of(Q.q)
    flags = {}
    if found is not None:
        loss, kind, grad = found
        if kind == "sphere":  # True: the other kinds pass; False: one fails; None: none was provided
            suffix = "_grad" if grad else ""
            statuses = {ctx.status.get((c.name, f"{loss}_{k}{suffix}")) for c in Q.cases for k in PROJECTION_KINDS
                        if k != kind}
            flags["sphere_only"] = False if "FAIL" in statuses else (True if "PASS" in statuses else None)
        flags["gradient_only"] = grad and all(ctx.passes(c.name, Q.q[:-5]) for c in Q.cases)
        if grad:  # the status of the value beside the gradient: PASS, FAIL, or None (not provided, or mixed)
            values = {ctx.status.get((c.name, Q.q[:-5])) for c in Q.cases}
            flags["value"] = values.pop() if len(values) == 1 and values <= {"PASS", "FAIL"} else None
    return flags


def _same_prediction(a, b) -> bool:
    return all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12 * max(float(np.max(np.abs(a[k]), initial=0.0)), 1e-300))
               for k in a)


def _groups(Q, found) -> list:
    """The readings grouped by the numbers they predict: one group per distinct fit."""
    preds = [{c.name: np.asarray(f.predict(c), dtype=float) for c in Q.cases} for f in found]
    groups = []
    for f, p in zip(found, preds):
        for g in groups:
            if _same_prediction(g[0][1], p):
                g.append((f, p))
                break
        else:
            groups.append([(f, p)])
    return [sorted((f for f, _ in g), key=lambda f: (f.level, _SOURCES.index(f.source))) for g in groups]


def _consistent_with_value(ctx, Q, heads) -> list:
    """A gradient's term-wise readings that are the readings of its failing value, when some are: a bug
    of the loss changes both alike (DSM's target -z is also its cross term times sigma in the
    gradient, which is free of the target's square)."""
    if not Q.q.endswith("_grad"):
        return heads
    value = ctx.readings.get(Q.q[:-5], [])
    same = [h for h in heads if h.key is not None and h.key in value]
    return same or heads


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
    r32, a32 = TOLERANCES["float32"]
    if (ctx.rtol < r32 or ctx.atol < a32) and all(
            np.all(np.abs(Q.yours[c.name] - Q.gold[c.name]) <= a32 + r32 * np.abs(Q.gold[c.name])) for c in Q.cases):
        return Diagnosis(q, names, med, lo, hi, "round-off",
                         f"agrees within the float32 tolerances (rtol {r32:g}, atol {a32:g}): a float32 backend, or "
                         "a step that loses precision; check a float32 backend with --float32", patterns=patterns)
    S = _termfit.setup(ctx, Q, _hypotheses.loss_of)
    flags = _flags(ctx, Q)
    verdict = _score_verdict(ctx, Q)
    score_key = (_SCORE_KEYS.get(Q.cases[0].kind) or (None,))[0]
    found = []
    if S is not None:
        fit = _termfit.search(S, Q.cases, Q.yours, Q.gold, ctx.rtol, ctx.atol, keep=_keep(verdict))
        if fit is not None:
            found += _term_found(S, fit, flags)
    for label, expl, predict, conv in _hypotheses.structural(ctx, Q):
        if Q.fits(predict):
            row, fn = conv(Q) if conv is not None else (None, None)
            found.append(_Found(1, label, expl, predict, row, fn, source="variant"))
    if S is None:
        for label, factor, expl, conv in _hypotheses.factors(ctx, Q):
            predict = (lambda c, factor=factor: factor(c) * Q.gold[c.name])
            if Q.fits(predict):
                row, fn = conv(Q) if conv is not None else (None, None)
                found.append(_Found(1, label, expl, predict, row, fn, source="factor"))
    for label, expl, predict, conv in _hypotheses.ledger(ctx, Q):
        if Q.fits(predict):
            row, fn = conv(Q)
            found.append(_Found(1, label, expl, predict, row, fn, source="ledger"))
    if S is not None:  # combined readings: your values put through each conversion, then fitted term-wise
        for row, fn, call, convert, back in _hypotheses.conversions(ctx, Q):
            converted = {c.name: convert(c, Q.yours[c.name]) for c in Q.cases}
            if any(v is None or v.shape != Q.gold[c.name].shape or not np.all(np.isfinite(v))
                   for c, v in zip(Q.cases, converted.values())):
                continue
            fit = _termfit.search(S, Q.cases, converted, Q.gold, ctx.rtol, ctx.atol, keep=_keep(verdict), max_level=2)
            if fit is None:
                continue
            for f in _term_found(S, fit, flags, level_offset=1, back=back):
                f.convention, f.conversion = row.quantity, fn
                f.call, f.detail = f"{call} [convention '{row.quantity}']", f.explanation
                f.label = f"convention '{row.quantity}' + {f.label}"
                f.explanation = f"after {f.call}: {f.explanation}"
                found.append(f)
    if not found:
        return _unexplained(ctx, Q, S, names, patterns, med, lo, hi)
    groups = _groups(Q, found)
    level = min(g[0].level for g in groups)
    primary = [[f for f in g if f.level == level] for g in groups if g[0].level == level]
    # the readings of each primary fit, as causes in words: every term-wise reading (two wordings of
    # one fit are both said); else the first variant or factor (a ledger row only names a convention)
    heads, others = [], []
    for g in primary:
        causes = [f for f in g if f.source == "term"] or [f for f in g if f.source in ("variant", "factor")][:1]
        heads += causes or g[:1]
        others += [f.label for f in g if f.source in ("variant", "factor") and f not in causes]
    heads = _consistent_with_value(ctx, Q, heads)
    heads = list({f.label: f for f in heads}.values())
    label = " or ".join(h.label for h in heads)
    if len(heads) == 1:
        expl = heads[0].explanation
    else:
        same = len(primary) == 1
        expl = ("ambiguous, each fits every failing case" + (", with the same numbers in each" if same else "")
                + ": " + "; or ".join(f"{h.label}: {h.explanation}" for h in heads))
        if score_key is not None and any(h.reading is not None and h.reading.cs is not None
                                         and verdict(h.reading.cs) == "open" for h in heads):
            expl += f" (your '{score_key}' key, not provided, would tell them apart)"
    # the convention: the first conversion that turns these numbers into refscore's (in the ledger's
    # order), else the row a reading names
    named = [(f.convention, f.conversion) for g in primary for f in g if f.conversion is not None]
    named = named or [(h.convention, None) for h in heads if h.convention is not None]
    # named only when one reading fits (of two readings, the conversion may be the other's)
    convention, conversion = named[0] if named and len(heads) == 1 else (None, None)
    # the readings after a conversion, each once with every conversion that gives it
    after = {}
    for f in (f for g in primary for f in g if f.source == "converted" and f not in heads):
        after.setdefault(f.detail, []).append(f.call)
    readings = tuple(f"after {' or '.join(calls)}: {words}" for words, calls in after.items())
    others += [f.label for g in primary for f in g if f.source == "ledger" and f.conversion != conversion]
    also = tuple(dict.fromkeys(o for o in others if o not in [h.label for h in heads]))[:3]
    ctx.readings[Q.q] = [h.key for h in heads if h.key is not None]
    ambiguous = tuple(h.label for h in heads) if len(heads) > 1 else ()
    formula = "; ".join(dict.fromkeys(h.formula for h in heads if h.formula))
    return Diagnosis(q, names, med, lo, hi, label, expl, convention, conversion, patterns, also,
                     ambiguous=ambiguous, formula=formula, readings=readings)


def _unexplained(ctx, Q, S, names, patterns, med, lo, hi) -> Diagnosis:
    expl = "no tested hypothesis fits"
    if "gradient only" in patterns:
        expl = ("the values pass but the gradients do not: a term detached from the graph (stop_gradient, "
                ".detach()) or missing from a hand-written gradient; no single missing term fits")
    elif med == med and not _close_range(lo, hi):
        expl += " (not a constant factor)"
    best = ""
    if S is not None:
        reading, residual = _termfit.misfit(S, Q.cases, Q.yours)
        if reading is not None:
            words = _termfit.words(S, reading, _flags(ctx, Q))[0] if reading.complexity else "refscore's own terms"
            sig = _termfit.signature(S, reading)
            best = (f"closest term-wise reading: {words} ({_termfit.formula(S, sig)}), largest relative misfit "
                    f"{residual:.2g}: it does not fit")
    return Diagnosis(Q.q, names, med, lo, hi, None, expl, patterns=patterns, best=best)


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
            # a diffusion quantity named like another kind's (the denoiser's score) is diagnosed on its own
            diffusion = g.all_cases[r.case].kind in _diffusion_hypotheses.KINDS
            failing.setdefault((r.quantity, diffusion), []).append(r)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a variant sampler may diverge; a complex value may be cast
        return [_diagnose_quantity(ctx, q, rs) for (q, _), rs in failing.items()]
