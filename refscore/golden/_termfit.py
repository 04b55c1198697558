r"""Term-wise fits of a failing loss (internal): your values as a named combination of refscore's terms.

A loss quantity is a sum of named terms :math:`T_i` (:mod:`refscore.golden.terms`: ISM's
:math:`\operatorname{tr}\nabla_x s` and :math:`\tfrac12\lVert s\rVert^2`, DSM's three residual
terms, KSD's five kernel terms...).  A bug in code that computes it changes the coefficients:
a forgotten ½ doubles one term, a Hutchinson estimate divided by :math:`d` scales the trace
term by :math:`1/d`, a sum over the points multiplies every term by :math:`n`.  This module
fits

.. math:: \text{yours} = \sum_i a_i\,T_i, \qquad
          a_i = g\cdot c_s^{\deg_s T_i}\,c_t^{\deg_t T_i}\cdot b_i

in every failing case at once, with each factor from a small named family (*atoms*):
:math:`g` the whole quantity's factor (at most two atoms: :math:`-1, 2, \tfrac12, d^{\pm1},
n^{\pm1}, m`, :math:`\sigma^k` -- per point in ``dsm_multi``, a weighting --, only the first
projection, a KSD reduction), :math:`c_s` a factor on the score (:math:`-1`: a flipped score),
:math:`c_t` a factor on the target of a residual loss (:math:`\sigma`: DSM's target
:math:`-z` for :math:`-z/\sigma`), :math:`b_i` one term's own factor (:math:`0`: a term left
out).  The *complexity* of a reading is its number of atoms; the search goes up one
complexity at a time (at most three), so the simplest readings that fit every failing case
are found first, and every reading of that complexity is reported: two readings that fit
equally well are ambiguous, and named so.

Readings that give the same coefficients in every term (a flipped score and a flipped
trace term of ISM) are the same fit worded two ways; :func:`search` keeps both, so that
the diagnosis can discard the one another key contradicts (a flipped score when your
``score`` key passes).  A gradient quantity is fitted with the terms' gradients
(docs/derivations.md §2.2): the gradient of a term-wise scaled loss is the same
combination of the terms' gradients.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..losses import LOSSES
from . import terms as _terms_module
from .cases import STORED_LOSS_INPUTS, projections_of

__all__ = ["Atom", "Reading", "Fit", "Setup", "setup", "search", "misfit"]

#: the bases of an atom's exponents: (-1)^e0 2^e1 d^e2 n^e3 m^e4
_BASES = 5


@dataclass(frozen=True)
class Atom:
    """A named factor: a power of -1, 2, d, n, m (``exps``), of sigma (``sigma``), zero, only the first
    projection, or a KSD reduction (``reduction``)."""

    name: str
    base: str
    exps: tuple = (0,) * _BASES
    sigma: int = 0
    zero: bool = False
    first: bool = False
    reduction: str | None = None


def _exps(**kw) -> tuple:
    order = ("sign", "two", "d", "n", "m")
    return tuple(kw.get(k, 0) for k in order)


SIGN = Atom("-1", "sign", _exps(sign=1))
TWO = Atom("2", "two", _exps(two=1))
HALF = Atom("1/2", "two", _exps(two=-1))
D = Atom("d", "d", _exps(d=1))
INV_D = Atom("1/d", "d", _exps(d=-1))
N = Atom("n", "n", _exps(n=1))
INV_N = Atom("1/n", "n", _exps(n=-1))
M = Atom("m", "m", _exps(m=1))
ZERO = Atom("0", "zero", zero=True)
FIRST = Atom("one projection", "first", first=True)


def _sigma(k: int) -> Atom:
    return Atom(f"sigma^{k}", "sigma", sigma=k)


def _reduction(name: str) -> Atom:
    return Atom(name, "reduction", reduction=name)


#: the KSD reductions: name -> (weight of an off-diagonal pair, weight of a diagonal pair) for n points
KSD_REDUCTIONS = {
    "U-statistic": lambda n: (1.0 / (n * (n - 1)), 0.0),
    "V-statistic": lambda n: (1.0 / n**2, 1.0 / n**2),
    "U-statistic over n^2": lambda n: (1.0 / n**2, 0.0),
    "sum over all pairs": lambda n: (1.0, 1.0),
}
_KSD_REFERENCE = {"ksd_u": "U-statistic", "ksd_v": "V-statistic"}


@dataclass(frozen=True)
class Reading:
    """One candidate: the whole factor ``g`` (atoms), the score's ``cs`` and the target's ``ct`` (an atom
    or None) and each term's ``b`` (a tuple of atoms per term, empty for none)."""

    g: tuple = ()
    cs: Atom | None = None
    ct: Atom | None = None
    b: tuple = ()

    @property
    def complexity(self) -> int:
        return len(self.g) + (self.cs is not None) + (self.ct is not None) + sum(len(a) for a in self.b)


@dataclass
class Setup:
    """The family of one failing quantity: its terms, the atoms of each slot, and how a case gives its terms.

    ``features(case)`` returns ``(F, groups)``: ``F`` (k, G, D) each term summed over each group
    of points with the loss's weights (D = 1 for a value, P for a gradient, n^2 for the Stein
    kernel), ``groups`` the groups' sigma, projection index and diagonal flag.
    """

    quantity: str
    loss: str
    kind: str | None
    grad: bool
    terms: tuple
    residual: bool
    g_atoms: tuple
    cs_atoms: tuple
    ct_atoms: tuple
    b_atoms: tuple
    features: object
    sizes: object  # case -> (d, n, m)
    reference_reduction: str | None = None
    weighting_power: int = 0

    def identity(self) -> tuple:
        return tuple(((0,) * _BASES, 0, False, self.reference_reduction) for _ in self.terms)


def _dsm_multi_weighting(q) -> str:
    return q[len("dsm_multi_"):].removesuffix("_grad")


def setup(ctx, Q, loss_of) -> Setup | None:
    """The term-wise family of a failing quantity, or None when it has no terms (a score, a Jacobian...)."""
    q = Q.q
    if not Q.cases:
        return None
    case_kind = Q.cases[0].kind
    found = loss_of(q)
    if found is not None:
        loss, kind, grad = found
        return _loss_setup(ctx, q, loss, kind, grad, case_kind)
    if case_kind == "ksd" and q in ("stein_kernel", "ksd_u", "ksd_v"):
        return _ksd_setup(ctx, q)
    return None


def _loss_setup(ctx, q, loss, kind, grad, case_kind) -> Setup:
    sigma = loss in ("dsm", "dsm_multi")
    sliced = kind is not None
    weighting = _dsm_multi_weighting(q) if loss == "dsm_multi" else None

    def compute(case):
        key = ("terms", case.name, loss, kind, grad, weighting)
        if key not in ctx.cache:
            model, inputs = ctx.model(case), case.inputs
            if loss == "dsm_multi":
                args = {"sigmas": inputs["sigmas"], "labels": np.rint(inputs["labels"]).astype(np.int64),
                        "eps": inputs["eps"], "weighting": weighting}
            else:
                args = {}
                for name in LOSSES[loss].inputs:
                    if name == "v":
                        args[name] = projections_of(inputs, kind)
                    else:
                        value = inputs[STORED_LOSS_INPUTS[name].key]
                        args[name] = float(value) if np.ndim(value) == 0 else value
            ctx.cache[key] = _terms_module.loss_terms(loss, model, inputs["theta"], inputs["x"], grad, **args)
        return ctx.cache[key]

    every = _terms_module.LOSS_TERMS[loss]
    keep = [i for i, t in enumerate(every) if not (grad and t.score_degree == 0)]  # a term free of theta
    kept = tuple(every[i] for i in keep)

    def features(case):
        t = compute(case)
        F = t.grads[keep] if grad else t.values[keep][:, :, None]
        groups = {"sigma": t.sigma, "projection": t.projection}
        return F, groups

    def sizes(case):
        x = case.inputs["x"]
        m = projections_of(case.inputs, kind).shape[0] if sliced else 1
        return case.dim, x.shape[0], m

    g_atoms = [SIGN, TWO, HALF, INV_D, D, N, INV_N] + ([M, FIRST] if sliced else [])
    cs_atoms = [SIGN, TWO, HALF]
    ct_atoms = [SIGN, TWO, HALF] if loss in ("esm", "dsm", "dsm_multi") else []
    b_atoms = [ZERO, SIGN, INV_D, D, TWO, HALF, N]
    if sigma:
        g_atoms += [_sigma(k) for k in (1, 2, 3, 4, -1, -2, -3, -4)]
        cs_atoms += [_sigma(1), _sigma(-1)]
        ct_atoms += [_sigma(1), _sigma(-1), _sigma(2), _sigma(-2)]
    return Setup(q, loss, kind, grad, kept, loss in ("esm", "dsm", "dsm_multi"), tuple(g_atoms), tuple(cs_atoms),
                 tuple(ct_atoms), tuple(b_atoms), features, sizes,
                 weighting_power=2 if weighting == "sigma2" else 0)


def _ksd_setup(ctx, q) -> Setup:
    def compute(case):
        key = ("ksd_terms", case.name)
        if key not in ctx.cache:
            i = case.inputs
            ctx.cache[key] = _terms_module.ksd_terms(i["x"], i["score"], float(i["c"]), float(i["beta"]))
        return ctx.cache[key]

    def features(case):
        K = compute(case)
        k, n = K.shape[0], K.shape[1]
        if q == "stein_kernel":
            return K.reshape(k, 1, n * n), {}
        diag = np.einsum("kii->k", K)
        F = np.stack([K.sum(axis=(1, 2)) - diag, diag], axis=1)[:, :, None]  # off-diagonal, diagonal sums
        return F, {"diagonal": np.array([False, True])}

    def sizes(case):
        return case.dim, case.inputs["x"].shape[0], 1

    g_atoms = [SIGN, TWO, HALF, INV_D, D]
    ref = _KSD_REFERENCE.get(q)
    if ref is not None:
        g_atoms += [N, INV_N] + [_reduction(r) for r in KSD_REDUCTIONS if r != ref]
    return Setup(q, "ksd", None, False, _terms_module.KSD_TERMS, False, tuple(g_atoms), (SIGN, TWO, HALF), (),
                 (ZERO, SIGN, INV_D, D, TWO, HALF), features, sizes, reference_reduction=ref)


# ---------------------------------------------------------------- candidates
def signature(S: Setup, r: Reading) -> tuple:
    """Per term: (exponents of -1, 2, d, n, m; sigma exponent; first projection only; reduction),
    or ("zero",) -- the coefficients the reading gives every term, whatever slots it uses."""
    out = []
    for i, t in enumerate(S.terms):
        e = [0] * _BASES
        sig, first, red = 0, False, S.reference_reduction
        parts = [(a, 1) for a in r.g]
        if r.cs is not None:
            parts.append((r.cs, t.score_degree))
        if r.ct is not None:
            parts.append((r.ct, t.target_degree))
        b = r.b[i] if r.b else ()
        if any(a.zero for a in b):
            out.append(("zero",))
            continue
        parts += [(a, 1) for a in b]
        for a, k in parts:
            if k == 0:
                continue
            e = [x + k * y for x, y in zip(e, a.exps)]
            sig += k * a.sigma
            first = first or a.first
            red = a.reduction or red
        e[0] %= 2
        out.append((tuple(e), sig, first, red))
    return tuple(out)


def _products(atoms) -> list:
    """One atom, or two of different bases (``0`` alone), each as a tuple."""
    pairs = [(a, b) for a, b in itertools.combinations(atoms, 2) if a.base != b.base and not (a.zero or b.zero)]
    return [(a,) for a in atoms] + pairs


def _readings(S: Setup, level: int):
    """Every reading of ``level`` atoms: the score's and the target's factors (one atom each), each
    term's and the whole quantity's (one atom, or a product of two), in that order, each slot's atoms
    in their family's order (so that readings of one fit are worded in a fixed order)."""
    k = len(S.terms)
    groups = []
    if any(t.score_degree for t in S.terms):
        groups.append(("cs", [(a,) for a in S.cs_atoms]))
    if any(t.target_degree for t in S.terms):
        groups.append(("ct", [(a,) for a in S.ct_atoms]))
    groups += [(i, _products(S.b_atoms)) for i in range(k)]
    groups.append(("g", _products(S.g_atoms)))

    def walk(j, left, chosen):
        if left == 0:
            b = tuple(chosen.get(i, ()) for i in range(k))
            cs, ct = chosen.get("cs", (None,))[0], chosen.get("ct", (None,))[0]
            yield Reading(chosen.get("g", ()), cs, ct, b)
            return
        if j == len(groups):
            return
        name, options = groups[j]
        for option in options:
            if len(option) <= left:
                yield from walk(j + 1, left - len(option), {**chosen, name: option})
        yield from walk(j + 1, left, chosen)

    yield from walk(0, level, {})


# ---------------------------------------------------------------- evaluation
class _Batch:
    """Signatures as arrays: exponents (S, k, 5), zero mask (S, k), and each term's pattern index."""

    def __init__(self, S: Setup, sigs: list):
        self.S, self.sigs = S, sigs
        k = len(S.terms)
        self.E = np.zeros((len(sigs), k, _BASES))
        self.zero = np.zeros((len(sigs), k), dtype=bool)
        self.patterns = [dict() for _ in range(k)]
        self.index = np.zeros((len(sigs), k), dtype=np.int64)
        for s, sig in enumerate(sigs):
            for i, part in enumerate(sig):
                if part[0] == "zero":
                    self.zero[s, i] = True
                    pattern = (0, False, S.reference_reduction)
                else:
                    self.E[s, i] = part[0]
                    pattern = part[1:]
                self.index[s, i] = self.patterns[i].setdefault(pattern, len(self.patterns[i]))

    def predict(self, case, rows=None) -> np.ndarray:
        """Predictions (S', D) of the signatures ``rows`` (all by default) in ``case``."""
        S = self.S
        F, groups = S.features(case)
        d, n, m = S.sizes(case)
        rows = np.arange(len(self.sigs)) if rows is None else rows
        base = np.array([-1.0, 2.0, d, n, m])
        coef = np.prod(base[None, None, :] ** self.E[rows], axis=2)
        coef[self.zero[rows]] = 0.0
        out = np.zeros((len(rows), F.shape[2]))
        for i in range(F.shape[0]):
            table = np.stack([_feature(F[i], groups, pattern, d, n, m) for pattern in self.patterns[i]])
            out += coef[:, i, None] * table[self.index[rows, i]]
        return out


def _feature(Fi, groups, pattern, d, n, m) -> np.ndarray:
    """One term's value (D,) under a pattern (sigma exponent, first projection only, KSD reduction)."""
    sig_exp, first, red = pattern
    w = np.ones(Fi.shape[0])
    if sig_exp:
        w = w * groups["sigma"] ** sig_exp
    if first:
        w = w * np.where(groups["projection"] == 0, float(m), 0.0)
    if red is not None:
        off, diag = KSD_REDUCTIONS[red](n)
        w = w * np.where(groups["diagonal"], diag, off)
    return w @ Fi


def _fits(pred, y, gold, rtol, atol) -> np.ndarray:
    """Rows of ``pred`` (S, D) that fit ``y`` to (10 rtol, 10 atol) and would fail the check themselves."""
    tr = max(10 * rtol, 1e-9)
    finite = np.all(np.isfinite(pred), axis=1)
    scale = np.max(np.abs(np.where(np.isfinite(pred), pred, 0.0)), axis=1, initial=0.0)
    ta = np.maximum(max(10 * atol, 0.0), 1e-9 * scale)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.all(np.abs(y[None] - pred) <= ta[:, None] + tr * np.abs(pred), axis=1)
        passes = np.all(np.abs(pred - gold[None]) <= atol + rtol * np.abs(gold[None]), axis=1)
    return finite & close & ~passes


@dataclass
class Fit:
    """The readings of one complexity that fit every failing case: ``fits`` is ``[(signature, [Reading])]``
    (one entry per distinct fit, each with the readings that give it)."""

    level: int
    fits: list
    batch: object = None

    def predict(self, case, j) -> np.ndarray:
        """The prediction of fit ``j`` in ``case``."""
        return self.batch.predict(case, np.array([j]))[0]


def _preferred(readings) -> list:
    """Of readings giving the same coefficients, those scaling the target rather than a term of the
    residual (a target with its sign flipped is the cross term with its sign flipped: one bug, said
    once); readings scaling the score stay beside the others (a flipped score and a flipped trace term
    are different bugs, which the score key tells apart)."""
    if any(r.ct is not None for r in readings):
        return [r for r in readings if r.ct is not None or r.cs is not None]
    return readings


def search(S: Setup, cases, yours, gold, rtol, atol, keep=None, max_level=3) -> Fit | None:
    """The simplest readings that fit every case in ``cases`` (each ``yours[name]`` and ``gold[name]``
    flattened to (D,)), complexity 1 to ``max_level``; ``keep(readings) -> readings`` drops those
    another key contradicts.  None when nothing fits.

    A reading has no more atoms than the failing values have numbers (one failing scalar is read
    with one atom at most): with fewer equations than atoms, some reading of the family would fit
    any numbers, and naming it would be a coincidence."""
    max_level = min(max_level, sum(int(np.size(gold[c.name])) for c in cases))
    seen = {S.identity()}
    for level in range(1, max_level + 1):
        by_sig = {}
        for r in _readings(S, level):
            sig = signature(S, r)
            if sig in seen and sig not in by_sig:
                continue
            by_sig.setdefault(sig, []).append(r)
        seen |= set(by_sig)
        sigs = list(by_sig)
        if not sigs:
            continue
        batch = _Batch(S, sigs)
        active = np.arange(len(sigs))
        for c in cases:
            pred = batch.predict(c, active)
            active = active[_fits(pred, yours[c.name].ravel(), gold[c.name].ravel(), rtol, atol)]
            if active.size == 0:
                break
        found = []
        for j in active:
            rs = _preferred(by_sig[sigs[j]])
            rs = keep(rs) if keep is not None else rs
            if rs:
                found.append((sigs[j], rs))
        if found:
            fb = _Batch(S, [sig for sig, _ in found])
            return Fit(level, found, fb)
    return None


def misfit(S: Setup, cases, yours, max_level=2):
    """The reading of complexity <= ``max_level`` (the reference included) that comes closest in
    every case: ``(reading, residual)``, the residual the largest over the cases of
    max |yours - prediction| / max |prediction|."""
    best = (None, math.inf)
    readings = [Reading(b=((),) * len(S.terms))]
    for level in range(1, max_level + 1):
        readings += list(_readings(S, level))
    by_sig = {}
    for r in readings:
        by_sig.setdefault(signature(S, r), r)
    sigs = list(by_sig)
    batch = _Batch(S, sigs)
    worst = np.zeros(len(sigs))
    for c in cases:
        pred = batch.predict(c)
        y = yours[c.name].ravel()
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            scale = np.maximum(np.max(np.abs(pred), axis=1), 1e-300)
            r = np.max(np.abs(y[None] - pred), axis=1) / scale
        worst = np.maximum(worst, np.where(np.isfinite(r), r, np.inf))
    j = int(np.argmin(worst))
    if math.isfinite(worst[j]):
        best = (by_sig[sigs[j]], float(worst[j]))
    return best


# ---------------------------------------------------------------- words
def _coefficient(part, reference=None) -> str:
    """The coefficient a signature gives one term, in words (``"2"``, ``"-1/d"``, ``"n sigma^2"``)."""
    if part[0] == "zero":
        return "0"
    e, sig, first, red = part
    sign, two, d, n, m = e
    names = []
    for value, up, down in ((two, "2", "1/2"), (d, "d", "1/d"), (n, "n", "1/n"), (m, "m", "1/m")):
        if value:
            names.append((up if value > 0 else down) + (f"^{abs(value)}" if abs(value) > 1 else ""))
    if sig:
        names.append(f"sigma^{sig}")
    text = " ".join(names) or "1"
    if sign:
        text = "-" + text
    if first:
        text += " (first projection only)"
    if red is not None and red != reference:
        text += f" ({red})"
    return text


def formula(S: Setup, sig) -> str:
    """``yours = a_1 [T_1] + a_2 [T_2] ...`` of a signature (a KSD reduction other than the quantity's own
    written once, in front)."""
    reds = {part[3] for part in sig if part[0] != "zero"}
    shared = reds.pop() if len(reds) == 1 else None
    head = "yours = " if shared in (None, S.reference_reduction) else f"yours = the {shared} of: "
    parts = []
    for t, part in zip(S.terms, sig):
        if shared is not None and part[0] != "zero":
            part = part[:3] + (S.reference_reduction,)
        parts.append(f"{_coefficient(part, S.reference_reduction)} [{t.words}]")
    return head + " + ".join(parts)


def _numeric_label(atoms) -> str:
    sign = any(a is SIGN for a in atoms)
    rest = [a.name for a in atoms if a is not SIGN]
    if not rest:
        return "sign flip"
    return "factor " + ("-" if sign else "") + " x ".join(rest)


def _sigma_words(loss, k) -> str:
    words = {
        2: "NCSN's lambda(sigma) = sigma^2 weighting, 1/2 ||sigma s + z||^2",
        4: "the sigma^4-scaled DSM 1/2 ||sigma^2 s + sigma z||^2 (eq. (6) times sigma^4, target -eps)",
        1: "a lambda(sigma) = sigma weighting: sigma where NCSN's sigma^2 belongs",
    }
    return words.get(k, f"a stray sigma^{k}") if loss == "dsm" else f"a stray sigma^{k}"


def _global_atom_words(S: Setup, a: Atom, flags) -> tuple:
    """``(label, explanation, convention row or None)`` of one atom of the whole quantity's factor."""
    terms = " and ".join(t.words for t in S.terms)
    if a is SIGN:
        what = "Stein kernel" if S.loss == "ksd" else "loss (a gradient ascent, or the objective maximised)"
        return "sign flip", f"your values are -golden: the sign of the {what} is flipped", None
    if a is TWO:
        if S.residual:
            return "factor 2", "twice refscore's: a forgotten 1/2 (refscore's loss is 1/2 ||.||^2)", None
        if S.loss == "ksd":
            return "factor 2", "twice refscore's", None
        half = [t.words for t in S.terms if t.half]
        return "factor 2", (f"every term doubled ({terms} alike): not a forgotten 1/2, which would double "
                            f"{' and '.join(half)} only"), None
    if a is HALF:
        return "factor 1/2", "half of refscore's: an extra 1/2", None
    if a is INV_D:
        if S.kind == "sphere" and flags.get("sphere_only") and S.loss == "ssm":
            return ("unit-sphere projections", "v = z/||z|| where refscore's sphere has radius sqrt(d) (E[v v^T] = "
                    "I/d instead of I): every term scales by 1/d", None)
        if all(t.coordinates for t in S.terms):
            return "factor 1/d", ("a mean over the d coordinates where refscore sums them (||.||^2 and the trace "
                                  "are sums over coordinates)"), None
        return "factor 1/d", f"every term divided by d ({terms})", None
    if a is D:
        return "factor d", f"every term multiplied by d ({terms})", None
    if a is N:
        if S.loss == "ksd":
            return "factor n", "n times refscore's", None
        return "factor n", "summed over the n points where refscore takes their mean (a factor n exactly)", None
    if a is INV_N:
        return "factor 1/n", "divided by n once more (the mean over the points divided by n again)", None
    if a is M:
        return "factor m", "summed over the m projections of each point where refscore takes their mean", None
    if a is FIRST:
        return ("one projection only", "only the first of the m projections of each point (v[0]) where refscore "
                "averages over all m", None)
    if a.reduction is not None:
        return a.name, _REDUCTION_WORDS[a.reduction], _KSD_ROW if a.reduction != "sum over all pairs" else None
    if a.base == "sigma":
        if S.loss == "dsm_multi":
            k0 = S.weighting_power
            k = k0 + a.sigma
            words = {0: "no weighting (weighting='none')", 2: "NCSN's lambda(sigma) = sigma^2 (weighting='sigma2')"}
            what = words.get(k, f"lambda(sigma) = sigma^{k}")
            why = f"{what} where refscore's weighting has " + ("sigma^2" if k0 == 2 else "1")
            if (k0, k) == (2, 1):
                why += ": sigma where sigma^2 belongs"
            return f"weighting sigma^{k}", why, _NCSN_ROW if {k, k0} == {0, 2} else None
        return f"factor sigma^{a.sigma}", _sigma_words(S.loss, a.sigma), None
    return f"factor {a.name}", f"{a.name} times refscore's", None  # pragma: no cover - every atom is named above


_REDUCTION_WORDS = {
    "V-statistic": "the V-statistic sum_{i,j} u_p / n^2 (diagonal included) where the U-statistic "
                   "sum_{i != j} u_p / (n (n-1)) is expected",
    "U-statistic": "the U-statistic (diagonal left out) where the V-statistic is expected",
    "U-statistic over n^2": "the off-diagonal sum divided by n^2 instead of n (n - 1)",
    "sum over all pairs": "the sum of u_p over all pairs, not divided by n^2",
}
#: rows of the ledger some readings are (their conversions, if any, are found by the diagnosis)
_KSD_ROW = "KSD estimator"
_NCSN_ROW = "DSM scale (NCSN)"
_DSM_NOISE_ROW = "DSM noise"


def _global_words(S: Setup, atoms, flags) -> tuple:
    special = [a for a in atoms if a.first or a.reduction is not None
               or (a.base == "sigma" and S.loss == "dsm_multi")]
    numeric = [a for a in atoms if a not in special]
    parts = [_global_atom_words(S, a, flags) for a in special]
    if len(numeric) == 1:
        parts.append(_global_atom_words(S, numeric[0], flags))
    elif numeric:
        label = _numeric_label(numeric)
        expl = "; and ".join(_global_atom_words(S, a, flags)[1] for a in numeric)
        parts.append((label, expl, None))
    return parts


def _score_words(S: Setup, a: Atom) -> tuple:
    linear = [t.words for t in S.terms if t.score_degree % 2 == 1]
    even = [t.words for t in S.terms if t.score_degree % 2 == 0]
    what = "the Stein kernel of -s: the scores passed" if S.loss == "ksd" else "the loss of -s: your score"
    if a is SIGN:
        expl = (f"{what}'s sign is flipped (an energy's +grad E, or grad log p negated), which flips "
                f"{' and '.join(linear)}" + (f" and leaves {' and '.join(even)}" if even else ""))
        return "score sign flipped", expl, None
    if S.loss == "dsm_multi" and a.base == "sigma":
        if a.sigma == 1:
            return ("s_theta(x) without the 1/sigma", "the loss of s(x, sigma) = s_theta(x) where refscore's "
                    "NoiseConditional divides by sigma", None)
        return ("s_theta(x)/sigma^2", "the loss of s(x, sigma) = s_theta(x)/sigma^2 where refscore's divides by "
                "sigma", None)
    return f"score x {a.name}", f"the loss of {a.name} s: your score is {a.name} times refscore's", None


def _target_words(S: Setup, a: Atom) -> tuple:
    if S.loss == "esm":
        if a is SIGN:
            return ("target sign flipped", "1/2 ||s + t||^2 where refscore has 1/2 ||s - t||^2: the target "
                    "enters with the wrong sign", None)
        return f"target x {a.name}", f"the target times {a.name}", None
    named = {
        "-1": ("DSM target +z/sigma", "the target +z/sigma where refscore's is -z/sigma: the residual s - z/sigma "
               "for s + z/sigma (the target's sign flipped)", None),
        "sigma^1": ("DSM target -z", "the target -z where refscore's is -z/sigma: with eps = sigma z, -eps/sigma "
                    "where eq. (6) has -eps/sigma^2 (sigma where sigma^2 belongs)", _DSM_NOISE_ROW),
        "sigma^-1": ("DSM target -z/sigma^2", "the target -z/sigma^2 where refscore's is -z/sigma: -eps/sigma^2 "
                     "applied to a standard normal z (or sigma^2 where sigma belongs)", _DSM_NOISE_ROW),
        "sigma^2": ("DSM target -sigma z", "the target -eps = -sigma z where refscore's is -z/sigma (the noise "
                    "itself as the target)", _DSM_NOISE_ROW),
    }
    if a.name in named:
        return named[a.name]
    return f"DSM target x {a.name}", f"the target -z/sigma times {a.name}", None


def _term_words(S: Setup, t, a: Atom, flags) -> tuple:
    w = t.words
    if a.zero:
        # a gradient whose value passes: detached; whose value fails alike: the term is missing from the
        # loss; whose value was not provided: either
        value = flags.get("value")
        if S.grad and value != "FAIL":
            why = ("is detached from the graph (stop_gradient, .detach()) or missing from a hand-written gradient"
                   + ("" if value == "PASS" else ", or missing from the loss itself (its value was not provided)"))
            return (f"gradient misses the {w} term", f"the gradient is that of the other terms alone: the {w} term "
                    f"{why}", None)
        return f"the {w} term missing", f"{w} is left out of the loss", None
    if a is SIGN:
        return f"{w} with its sign flipped", f"-({w}) where refscore adds +({w})", None
    if a is TWO:
        if t.half:
            return (f"1/2 missing on the {w} term only", f"{w.replace('1/2 ', '', 1)} where refscore has {w}: a "
                    "forgotten 1/2 on this term alone (the other terms are right)", None)
        return f"{w} doubled", f"2 ({w}) where refscore has {w}", None
    if a is HALF:
        return f"{w} halved", f"1/2 ({w}) where refscore has {w}", None
    if a is INV_D:
        if t.trace and S.loss == "ssm_vr" and S.kind == "sphere" and flags.get("sphere_only"):
            return ("unit-sphere projections", "v = z/||z|| where refscore's sphere has radius sqrt(d): the "
                    "v^T grad_x s v term scales by 1/d, 1/2 ||s||^2 does not", None)
        if t.trace:
            return ("the trace term divided by d", f"{w} divided by d (a Hutchinson estimate normalised by the "
                    "dimension, or a mean over the diagonal of grad_x s) where refscore's estimates tr grad_x s "
                    "itself", None)
        if t.name == "kernel_d":
            return ("the kernel term of KSD without its d", "-2 beta q^(beta-1) where tr grad_x grad_y k has "
                    "-2 beta d q^(beta-1): the d of the trace over the coordinates dropped", None)
        if t.coordinates:
            return (f"the mean over dimensions in {w}", f"{w} averaged over the d coordinates where refscore sums "
                    "them", None)
        return f"{w} divided by d", f"{w} / d", None
    if a is N:
        return (f"{w} summed over the points", f"{w} summed over the n points where refscore (and the other "
                "terms) take the mean", None)
    if a is INV_N:
        return f"{w} divided by n once more", f"{w} divided by n twice", None
    return f"{w} x {a.name}", f"{a.name} ({w}) where refscore has {w}", None


def words(S: Setup, r: Reading, flags=None) -> tuple:
    """``(label, explanation, convention row or None)`` of a reading, composed from its slots."""
    flags = flags or {}
    parts = _global_words(S, r.g, flags) if r.g else []
    if r.cs is not None:
        parts.append(_score_words(S, r.cs))
    if r.ct is not None:
        parts.append(_target_words(S, r.ct))
    for t, atoms in zip(S.terms, r.b):
        parts += [_term_words(S, t, a, flags) for a in atoms]
    rows = [p[2] for p in parts if p[2] is not None]
    return " + ".join(p[0] for p in parts), "; ".join(p[1] for p in parts), (rows[0] if len(rows) == 1 else None)
