r"""What :func:`refscore.golden.check` makes of a failing quantity (internal).

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
"""
from __future__ import annotations

import math
import re

import numpy as np

from . import conventions
from . import golden as _g

__all__ = ["diagnose"]

_KINDS = ("gaussian", "rademacher", "sphere")
_PROJECTED = re.compile(r"^(ssm|ssm_vr)_(gaussian|rademacher|sphere)(_grad)?$")
_SIGMA_POWERS = (1, 2, 3, 4, -1, -2, -3, -4)
_LOSS_NAMES = ("esm", "ism", "dsm")


# ---------------------------------------------------------------- the conventions ledger
# The ledger's rows carry their functions as data (refscore.conventions.Conversion): what a
# conversion returns (``converts``), the arguments it takes by word (``args``), its inverse.  The
# diagnosis gives those words their values for a case here, and nowhere guesses an argument.

def _given_dim(ctx, Q, c):
    return c.dim


def _given_sigma(ctx, Q, c):
    """The case's one noise level (a losses case's DSM sigma); None where the points have several."""
    sigma = c.inputs.get("sigma")
    return float(sigma) if sigma is not None and sigma.ndim == 0 else None


def _given_diagonal(ctx, Q, c):
    K = c.quantities.get("stein_kernel")
    return None if K is None else np.diag(K).copy()


def _given_norm_term(ctx, Q, c):
    """SSM-VR's 1/2 ||s||^2 term (or its gradient) from refscore's primitives."""
    m = _PROJECTED.match(Q.q)
    if not m or m.group(1) != "ssm_vr":
        return None
    return _terms(ctx, c, "ssm_vr", m.group(2))["norm"][1 if m.group(3) else 0]


#: the argument words of refscore.conventions.ARGUMENTS a golden case can give; the others
#: (the scale g of another kernel, ...) are not in a golden file
_GIVEN = {"dim": _given_dim, "sigma": _given_sigma, "diagonal": _given_diagonal, "norm_term": _given_norm_term}


def _given(ctx, Q, c, words):
    """``{word: value}`` of the argument words for case ``c``, or None when one cannot be given."""
    out = {}
    for w in words:
        provide = _GIVEN.get(w)
        value = provide(ctx, Q, c) if provide is not None else None
        if value is None:
            return None
        out[w] = value
    return out


def _ledger_words(ctx, Q) -> tuple:
    """The words of refscore.conventions.CONVERTED that a failing quantity is."""
    q = Q.q
    base = q[:-5] if q.endswith("_grad") else q
    m = _PROJECTED.match(q)
    if m:
        loss, kind = m.group(1), m.group(2)
        # a sphere convention explains a failure of the sphere projection alone
        sphere = kind == "sphere" and not _other_kinds_fail(ctx, Q, loss, bool(m.group(3)))
        return (loss, f"{loss}_sphere") if sphere else (loss,)
    if base in ("dsm", "ksd_u", "ksd_v", "stein_kernel"):
        return (base,)
    return ()


def _ledger_hypotheses(ctx, Q):
    """``[(label, explanation, predict, convention)]``: every ledger conversion of the quantity, as
    the prediction that your values are refscore's in the variant's convention (the inverse applied
    to refscore's values), for each of its options."""
    words = _ledger_words(ctx, Q)
    out = []
    for row in conventions.TABLE:
        for conv in row.conversions:
            if conv.inverse is None or not set(words) & set(conv.converts):
                continue
            given = {c.name: _given(ctx, Q, c, conv.needs) for c in Q.cases}
            if any(g is None for g in given.values()):
                continue
            for option in conv.option_sets():
                shown = "".join(f", {k}={v!r}" for k, v in option.items())
                out.append((f"convention '{row.quantity}'",
                            f"your values are the variant {row.variant!r}: {conv.function.__name__}(yours{shown}) "
                            "gives refscore's",
                            lambda c, conv=conv, option=option, given=given: conv.from_refscore(
                                Q.gold[c.name], option, **given[c.name]),
                            _fixed(row.quantity, conv.function.__name__)))
    return out


def _fixed(row_name, function_name):
    """A convention named outright: ``(row, function)``."""
    return lambda Q: (row_name, function_name)


def _row_named(quantity):
    """The ledger row ``quantity``, with nothing to convert (the fix is in the code, not the numbers)."""
    return lambda Q: (conventions.row(quantity).quantity, None)


def _converted_by(ctx, function):
    """The ledger row that carries the conversion ``function``, and ``function`` itself when it turns
    your values into refscore's in every failing case (a function that does not is never named)."""
    def name(Q):
        row = conventions.row_of(function)
        conv = next(c for c in row.conversions if c.function is function)
        for c in Q.cases:
            given = _given(ctx, Q, c, conv.needs)
            if given is None or not np.allclose(conv.to_refscore(Q.yours[c.name], **given), Q.gold[c.name],
                                                rtol=1e-9, atol=1e-12):
                return None, None
        return row.quantity, function.__name__
    return name


def _step_conversions(kind) -> list:
    """``[(row, f, inverse)]``: the ledger's Langevin step conversions in both directions, those of
    annealed Langevin's base step first for an annealed case."""
    words = ("annealed_step", "step") if kind == "annealed" else ("step", "annealed_step")
    out = []
    for word in words:
        for row in conventions.TABLE:
            for conv in row.conversions:
                if word in conv.converts and conv.inverse is not None:
                    out += [(row, conv.function, conv.inverse), (row, conv.inverse, conv.function)]
    return out


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
            m = self._models[case.name] = _g.build_model(case.spec, reference=True)
        return m

    def passes(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "PASS"

    def fails(self, case_name, q) -> bool:
        return self.status.get((case_name, q)) == "FAIL"


# ---------------------------------------------------------------- losses: terms and variants
def _projections(case, kind):
    if kind == "sphere":
        z = case.inputs["z_sphere"]
        return math.sqrt(z.shape[-1]) * z / np.linalg.norm(z, axis=-1, keepdims=True)
    return case.inputs[f"v_{kind}"]


def _terms(ctx, case, loss, kind=None) -> dict:
    """``{term: (value, grad)}`` of a two-term loss from refscore's public primitives."""
    model, th, x = ctx.model(case), case.inputs["theta"], case.inputs["x"]
    n, d = x.shape
    s = model.score(th, x)
    half = 0.5 * np.sum(s * s, axis=1)
    if loss == "ism":
        w = np.full(n, 1.0 / n)
        return {"trace": (np.mean(model.score_trace(th, x)), model.trace_grad_params(th, x, w)),
                "norm": (np.mean(half), model.score_vjp_params(th, x, w[:, None] * s))}
    v = _projections(case, kind)
    m = v.shape[0]
    W = np.full((m, n), 1.0 / (m * n))
    xt = np.broadcast_to(x, (m, n, d)).reshape(m * n, d)
    vf = v.reshape(m * n, d)
    vjv = np.einsum("kd,kd->k", vf, model.score_jvp(th, xt, vf))
    out = {"vjv": (np.mean(vjv), model.vjv_grad_params(th, xt, vf, W.ravel()))}
    if loss == "ssm":
        vs = np.einsum("mnd,nd->mn", v, s)
        out["proj"] = (np.mean(0.5 * vs**2), model.score_vjp_params(th, x, np.einsum("mn,mnd->nd", W * vs, v)))
    else:
        out["norm"] = (np.mean(half), model.score_vjp_params(th, x, W.sum(axis=0)[:, None] * s))
    return out


_TERM_WORDS = {"trace": "tr grad_x s", "norm": "1/2 ||s||^2", "vjv": "v^T grad_x s v", "proj": "1/2 (v^T s)^2"}


def _loss_variants(ctx, Q):
    """Variants of the losses kind's loss quantities: ``[(label, explanation, predict, convention)]``."""
    q = Q.q
    grad = q.endswith("_grad")
    base = q[:-5] if grad else q
    pick = 1 if grad else 0
    out = []
    m = _PROJECTED.match(q)
    if base in ("ism",) or m:
        loss, kind = ("ism", None) if base == "ism" else (m.group(1), m.group(2))
        cache = {}

        def terms(c):
            if c.name not in cache:
                cache[c.name] = _terms(ctx, c, loss, kind)
            return cache[c.name]

        first = "trace" if loss == "ism" else "vjv"
        second = "proj" if loss == "ssm" else "norm"
        if grad:
            for missing, kept in ((second, first), (first, second)):
                out.append((f"gradient misses the {_TERM_WORDS[missing]} term",
                            f"the values pass and the gradient is that of {_TERM_WORDS[kept]} alone: the "
                            f"{_TERM_WORDS[missing]} term is detached from the graph (stop_gradient, .detach()) "
                            "or missing from a hand-written gradient",
                            lambda c, k=kept: terms(c)[k][1], None))
        out.append(("score sign flipped", "the loss of -s: your score's sign is flipped (an energy's +grad E, "
                    "or grad log p negated), which flips the linear term "
                    f"{_TERM_WORDS[first]} and leaves {_TERM_WORDS[second]}",
                    lambda c: -terms(c)[first][pick] + terms(c)[second][pick], None))
        out.append((f"{_TERM_WORDS[second]} without its 1/2", f"{_TERM_WORDS[second].replace('1/2 ', '')} "
                    "where refscore has 1/2 of it: a forgotten 1/2",
                    lambda c: terms(c)[first][pick] + 2 * terms(c)[second][pick], None))
        if kind == "sphere" and not _other_kinds_fail(ctx, Q, loss, grad):
            if loss == "ssm":
                conv = _converted_by(ctx, conventions.sphere_unscaled_ssm_to_ism)
                out.insert(0, ("unit-sphere projections", "v = z/||z|| where refscore's sphere has radius sqrt(d) "
                               "(E[v v^T] = I/d instead of I): every term scales by 1/d",
                               lambda c: (terms(c)[first][pick] + terms(c)[second][pick]) / c.dim, conv))
            else:
                conv = _converted_by(ctx, conventions.sphere_unscaled_ssm_vr_to_ism)
                out.insert(0, ("unit-sphere projections", "v = z/||z|| where refscore's sphere has radius sqrt(d): "
                               "the v^T grad_x s v term scales by 1/d, 1/2 ||s||^2 does not",
                               lambda c: terms(c)["vjv"][pick] / c.dim + terms(c)["norm"][pick], conv))
    elif base == "esm":
        def esm_flipped(c):
            r = _g.losses.esm(ctx.model(c), c.inputs["theta"], c.inputs["x"], -c.inputs["target"], grad=True)
            return r[pick]
        out.append(("score sign flipped", "the loss of -s (or of the target -t): your score's sign is flipped",
                    esm_flipped, None))
    elif base == "dsm":
        def dsm_variant(c, noise_pow=1, target_pow=1, sign=1.0):
            sig, eps, x = float(c.inputs["sigma"]), c.inputs["eps"], c.inputs["x"]
            xt = x + sig**noise_pow * eps
            r = _g.losses.esm(ctx.model(c), c.inputs["theta"], xt, -sign * eps / sig**target_pow, grad=True)
            return r[pick]

        noise_conv = _row_named("DSM noise")
        out += [
            ("DSM target -z", "the target -z where refscore's is -z/sigma: with eps = sigma z, -eps/sigma where "
             "eq. (6) has -eps/sigma^2 (sigma where sigma^2 belongs)",
             lambda c: dsm_variant(c, target_pow=0), noise_conv),
            ("DSM target -z/sigma^2", "the target -z/sigma^2 where refscore's is -z/sigma: -eps/sigma^2 applied to "
             "a standard normal z (or sigma^2 where sigma belongs)",
             lambda c: dsm_variant(c, target_pow=2), noise_conv),
            ("DSM noise sigma^2 z", "the noised point x + sigma^2 z where refscore's is x + sigma z: the variance "
             "used as the standard deviation", lambda c: dsm_variant(c, noise_pow=2), noise_conv),
            ("score sign flipped", "the loss of -s: your score's sign is flipped",
             lambda c: dsm_variant(c, sign=-1.0), None),
        ]
    return out


def _other_kinds_fail(ctx, Q, loss, grad) -> bool:
    """Does the same loss fail with a non-sphere projection in one of these cases?"""
    suffix = "_grad" if grad else ""
    return any(ctx.fails(c.name, f"{loss}_{k}{suffix}") for c in Q.cases for k in _KINDS if k != "sphere")


# ---------------------------------------------------------------- the other kinds
def _dsm_multi_variants(ctx, Q):
    q = Q.q
    if q == "score_noised":
        def scaled(c, p):
            return Q.gold[c.name] * c.inputs["sigma_points"][:, None] ** p

        return [("s_theta(x) without the 1/sigma", "s(x, sigma) = s_theta(x) where refscore's NoiseConditional "
                 "divides by sigma", lambda c: scaled(c, 1), None),
                ("s_theta(x)/sigma^2", "s(x, sigma) = s_theta(x)/sigma^2 where refscore's divides by sigma",
                 lambda c: scaled(c, -1), None)]
    grad = q.endswith("_grad")
    weighting = q[len("dsm_multi_"):].replace("_grad", "")
    k0 = 2 if weighting == "sigma2" else 0

    def variant(c, k=k0, sign=1.0, target_pow=1):
        model, th = ctx.model(c), c.inputs["theta"]
        x, eps, sig = c.inputs["x"], c.inputs["eps"], c.inputs["sigma_points"]
        xt = x + sig[:, None] * eps
        r = sign * model.score(th, xt, sig) + eps / sig[:, None] ** target_pow
        lam = sig**k
        if not grad:
            return np.mean(lam * 0.5 * np.sum(r * r, axis=1))
        return sign * model.score_vjp_params(th, xt, sig, (lam / x.shape[0])[:, None] * r)

    # the two weightings swapped: NCSN's row (a mean over several levels has no conversion)
    ncsn = _row_named(conventions.row_of(conventions.dsm_from_ncsn).quantity)
    out = []
    for k in (0, 2, 1, 3, 4, -1, -2):
        if k == k0:
            continue
        words = {0: "no weighting (weighting='none')", 2: "NCSN's lambda(sigma) = sigma^2 (weighting='sigma2')"}
        what = words.get(k, f"lambda(sigma) = sigma^{k}")
        why = f"{what} where refscore's {weighting!r} weighting has " + ("sigma^2" if k0 == 2 else "1")
        if (k0, k) == (2, 1):
            why += ": sigma where sigma^2 belongs"
        out.append((f"weighting sigma^{k}", why, lambda c, k=k: variant(c, k=k), ncsn if {k, k0} == {0, 2} else None))
    out.append(("DSM target -z", "the target -z where refscore's is -z/sigma (sigma where sigma^2 belongs)",
                lambda c: variant(c, target_pow=0), _row_named("DSM noise")))
    out.append(("score sign flipped", "the loss of -s: your score's sign is flipped",
                lambda c: variant(c, sign=-1.0), None))
    return out


def _ksd_variants(ctx, Q):
    from . import metrics

    def stat(c, kind):
        K = c.quantities["stein_kernel"]
        n = K.shape[0]
        total, diag = K.sum(), np.trace(K)
        return {"u": (total - diag) / (n * (n - 1)), "v": total / n**2, "u_n2": (total - diag) / n**2}[kind]

    def with_c(c, f):
        x, s, cc, beta = c.inputs["x"], c.inputs["score"], float(c.inputs["c"]), float(c.inputs["beta"])
        K = metrics.imq_stein_kernel(x, x, s, s, c=f(cc), beta=beta)
        if Q.q == "stein_kernel":
            return K
        n = K.shape[0]
        return (K.sum() - np.trace(K)) / (n * (n - 1)) if Q.q == "ksd_u" else K.mean()

    out = []
    if Q.q == "ksd_u":
        out += [("V-statistic", "the V-statistic sum_{i,j} u_p / n^2 (diagonal included) where the U-statistic "
                 "sum_{i != j} u_p / (n (n-1)) is expected", lambda c: stat(c, "v"), None),
                ("U-statistic over n^2", "the off-diagonal sum divided by n^2 instead of n (n - 1)",
                 lambda c: stat(c, "u_n2"), None)]
    elif Q.q == "ksd_v":
        out.append(("U-statistic", "the U-statistic (diagonal left out) where the V-statistic is expected",
                    lambda c: stat(c, "u"), None))
    out += [("IMQ c^2 for c", "the IMQ kernel (c + ||x - y||^2)^beta where refscore's is (c^2 + ||x - y||^2)^beta",
             lambda c: with_c(c, math.sqrt), None),
            ("IMQ c^4 for c^2", "the IMQ kernel (c^4 + ||x - y||^2)^beta: c squared twice",
             lambda c: with_c(c, lambda v: v * v), None)]
    return out


def _simulate(c, etas, noise_scale=2.0):
    """x <- x + eta_t s(x) + sqrt(noise_scale eta_t) z[t] on the case's target, from the stored noise."""
    target = c.target
    x = c.inputs["x0"].copy()
    z = c.inputs["z"]
    out = np.empty_like(z)
    if c.kind == "annealed":
        sigmas, T = c.inputs["sigmas"], z.shape[0] // len(c.inputs["sigmas"])
        p = target.perturbed()
        score = [lambda y, s=s: p.score(y, s) for s in sigmas for _ in range(T)]
    else:
        score = [target.score] * z.shape[0]
    for t in range(z.shape[0]):
        x = x + etas[t] * score[t](x) + math.sqrt(noise_scale * etas[t]) * z[t]
        out[t] = x
    return out


def _etas(c, step):
    if c.kind != "annealed":
        return np.full(c.inputs["z"].shape[0], step)
    s = c.inputs["sigmas"]
    T = c.inputs["z"].shape[0] // len(s)
    return np.repeat(step * s**2 / s[-1] ** 2, T)


def _g4(v) -> str:
    return f"{v:.4g}"


def _sampler_variants(ctx, Q):
    q, kind = Q.q, Q.cases[0].kind if Q.cases else None
    out = []
    if q == "states":
        def run(c, step):
            key = (c.name, step)
            if key not in ctx._runs:
                res = _g._run_sampler(c.kind, c.target, c.inputs, c.spec["params"], step=step)
                ctx._runs[key] = res.trace
            return ctx._runs[key]

        for row, f, inv in _step_conversions(kind):
            def predict(c, f=f):
                step = float(c.inputs["step"])
                new = float(f(step))
                if not (new > 0 and math.isfinite(new)) or new == step:
                    return None
                return run(c, new)

            name, ratio = f.__name__, float(f(1.0))
            how = f" = {_g4(ratio)} step" if all(
                math.isclose(float(f(float(c.inputs["step"]))), ratio * float(c.inputs["step"]), rel_tol=1e-12)
                for c in Q.cases) else ""
            out.append((f"Langevin step {name}(step)",
                        f"your run is refscore's at step {name}(step){how}: your sampler reads its step in that "
                        f"convention, so give it {inv.__name__}(step)", predict, _fixed(row.quantity, inv.__name__)))
        if kind in ("ula", "annealed"):
            out.append(("noise sqrt(eta)", "x + eta s + sqrt(eta) z where refscore's update is x + eta s + "
                        "sqrt(2 eta) z (the lr-form's noise with the eta-form's drift)",
                        lambda c: _simulate(c, _etas(c, float(c.inputs["step"])), noise_scale=1.0), None))
        if kind == "annealed":
            out.append(("one step for every level", "every level runs the stored step, where refscore's "
                        "eta_i = step sigma_i^2 / sigma_L^2 grows with sigma_i",
                        lambda c: _simulate(c, np.full(c.inputs["z"].shape[0], float(c.inputs["step"]))), None))
    elif q == "log_alpha":
        def ratio(c, correction):
            target, step = c.target, float(c.inputs["step"])
            prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
            T, n, d = prev.shape
            x = prev.reshape(T * n, d)
            s_x = target.score(x)
            y = x + step * s_x + math.sqrt(2 * step) * c.inputs["z"].reshape(T * n, d)
            s_y = target.score(y)
            fwd = np.sum((y - x - step * s_x) ** 2, axis=1)
            bwd = np.sum((x - y - step * s_y) ** 2, axis=1)
            return (target.logpdf(y) - target.logpdf(x) + correction * (bwd - fwd) / (4 * step)).reshape(T, n)

        out += [("no proposal correction", "log p(y) - log p(x) alone: the Metropolis ratio of a symmetric "
                 "proposal, but the Langevin proposal is not symmetric", lambda c: ratio(c, 0.0), None),
                ("proposal correction sign flipped", "+ (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
                 "where refscore subtracts it (forward and backward proposals swapped)",
                 lambda c: ratio(c, 1.0), None),
                ("proposal correction over 2 eta", "the proposal log-density with 1/(2 eta) where the variance "
                 "2 eta gives 1/(4 eta)", lambda c: ratio(c, -2.0), None)]
    return out


def _structural(ctx, Q):
    q = Q.q
    kind = Q.cases[0].kind if Q.cases else None
    if kind == "losses":
        if q == "jacobian":
            return [("transposed Jacobian", "your jacobian[k] is d s_j / d x_i, refscore's is [k, i, j] = "
                     "d s_i / d x_j (row i: the derivatives of s_i)",
                     lambda c: np.swapaxes(Q.gold[c.name], -1, -2), None)]
        if q == "jvp":
            return [("transposed Jacobian", "your jvp is J^T u (a VJP) where refscore's is J u",
                     lambda c: np.einsum("kji,kj->ki", c.quantities["jacobian"], c.inputs["u"]), None)]
        return _loss_variants(ctx, Q)
    if kind == "dsm_multi":
        return _dsm_multi_variants(ctx, Q)
    if kind == "ksd":
        return _ksd_variants(ctx, Q)
    if kind in ("ula", "mala", "annealed"):
        return _sampler_variants(ctx, Q)
    return []  # pragma: no cover


# ---------------------------------------------------------------- factor hypotheses
def _is_loss(q) -> bool:
    base = q[:-5] if q.endswith("_grad") else q
    return base in _LOSS_NAMES or bool(_PROJECTED.match(q)) or base.startswith("dsm_multi") or base.startswith("ksd")


def _factor_hypotheses(ctx, Q):
    """``[(label, factor(case), explanation, convention)]`` in the order they are tried."""
    q = Q.q
    loss = _is_loss(q)
    out = [
        ("sign flip", lambda c: -1.0,
         "your values are -golden: the sign of the " + ("loss (or a gradient ascent)" if loss else
                                                         "score (an energy's +grad E, or grad log p negated)")
         + " is flipped", None),
        ("factor 2", lambda c: 2.0, "twice refscore's: a forgotten 1/2 (refscore's losses are 1/2 ||.||^2)"
         if loss else "twice refscore's", None),
        ("factor 1/2", lambda c: 0.5, "half of refscore's: an extra 1/2", None),
    ]
    if q == "v_sphere":
        out.insert(0, ("factor 1/sqrt(d)", lambda c: 1 / math.sqrt(c.dim), "unit-sphere projections z/||z|| where "
                       "refscore's sphere has radius sqrt(d) (so that E[v v^T] = I)", _scaled_by_projection_scale))
    out += [
        ("factor 1/d", lambda c: 1.0 / c.dim,
         "a mean over the d coordinates where refscore sums them (||.||^2 is a sum)" if loss
         else "1/d of refscore's", None),
        ("factor d", lambda c: float(c.dim), "d times refscore's: a sum over coordinates where refscore has one "
         "term, or projections of squared radius d^2" if loss else "d times refscore's", None),
    ]
    if q != "v_sphere":
        out += [("factor sqrt(d)", lambda c: math.sqrt(c.dim), "sqrt(d) times refscore's", None),
                ("factor 1/sqrt(d)", lambda c: 1 / math.sqrt(c.dim), "1/sqrt(d) of refscore's", None)]
    else:
        out.append(("factor sqrt(d)", lambda c: math.sqrt(c.dim), "projections of radius d where refscore's have "
                    "radius sqrt(d)", None))
    if all("sigma" in c.inputs and c.inputs["sigma"].ndim == 0 for c in Q.cases):
        for k in _SIGMA_POWERS:
            out.append((f"factor sigma^{k}", lambda c, k=k: float(c.inputs["sigma"]) ** k, _sigma_words(q, k),
                        _sigma_convention(ctx, Q, k)))
    return out


def _sigma_words(q, k) -> str:
    if q.startswith("dsm"):
        words = {
            2: "NCSN's lambda(sigma) = sigma^2 weighting, 1/2 ||sigma s + z||^2",
            4: "the sigma^4-scaled DSM 1/2 ||sigma^2 s + sigma z||^2 (eq. (6) times sigma^4, target -eps)",
            1: "a lambda(sigma) = sigma weighting: sigma where NCSN's sigma^2 belongs",
        }
        if k in words:
            return words[k]
    return f"a stray sigma^{k}"


def _sigma_convention(ctx, Q, k):
    if not Q.q.startswith("dsm") or k not in (2, 4):
        return None
    return _converted_by(ctx, conventions.dsm_from_ncsn if k == 2 else conventions.dsm_from_sigma4_scaled)


def _scaled_by_projection_scale(Q):
    """The ledger row of :func:`refscore.conventions.projection_scale`, when that factor turns your
    sphere projections into refscore's in every failing case."""
    if all(np.allclose(conventions.projection_scale("sphere", c.dim) * Q.yours[c.name], Q.gold[c.name],
                       rtol=1e-9, atol=1e-12) for c in Q.cases):
        return conventions.row_of(conventions.projection_scale).quantity, "projection_scale"
    return None, None


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
    m = _PROJECTED.match(q)
    if m:
        loss, kind, grad = m.group(1), m.group(2), m.group(3) or ""
        others = [f"{loss}_{k}{grad}" for k in _KINDS if k != kind]
        compared = [(n, o) for n in names for o in others if ctx.status.get((n, o)) in ("PASS", "FAIL")]
        if compared and all(ctx.passes(n, o) for n, o in compared):
            out.append(f"only the {kind} projection")
    if several and cases[0].kind in ("losses", "dsm_multi"):
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
        return _g.Diagnosis(q, names, hypothesis=hyp, explanation=expl or "", patterns=patterns,
                            note=note or "not comparable")
    fits = []
    r32, a32 = _g.TOLERANCES["float32"]
    if (ctx.rtol < r32 or ctx.atol < a32) and all(
            np.all(np.abs(Q.yours[c.name] - Q.gold[c.name]) <= a32 + r32 * np.abs(Q.gold[c.name])) for c in Q.cases):
        fits.append(("round-off", f"agrees within the float32 tolerances (rtol {r32:g}, atol {a32:g}): a float32 "
                     "backend, or a step that loses precision; check a float32 backend with --float32", None))
    for label, expl, predict, conv in _structural(ctx, Q):
        if Q.fits(predict):
            fits.append((label, expl, conv))
    for label, factor, expl, conv in _factor_hypotheses(ctx, Q):
        if Q.fits(lambda c, factor=factor: factor(c) * Q.gold[c.name]):
            fits.append((label, expl, conv))
    ledger = [(label, expl, conv) for label, expl, predict, conv in _ledger_hypotheses(ctx, Q) if Q.fits(predict)]
    if not fits and ledger:
        fits.append(ledger[0])
    if not fits:
        expl = "no tested hypothesis fits"
        if "gradient only" in patterns:
            expl = ("the values pass but the gradients do not: a term detached from the graph (stop_gradient, "
                    ".detach()) or missing from a hand-written gradient; no single missing term fits")
        elif med == med and not _close_range(lo, hi):
            expl += " (not a constant factor)"
        return _g.Diagnosis(q, names, med, lo, hi, None, expl, patterns=patterns)
    label, expl, conv = fits[0]
    convention, conversion = conv(Q) if conv is not None else (None, None)
    if convention is None and conversion is None and ledger:
        convention, conversion = ledger[0][2](Q)
    also = tuple(dict.fromkeys(f[0] for f in fits[1:] if f[0] != label))[:3]
    return _g.Diagnosis(q, names, med, lo, hi, label, expl, convention, conversion, patterns, also)


def _close_range(lo, hi) -> bool:
    return abs(hi - lo) <= 1e-6 * max(abs(lo), abs(hi), 1e-300)


def diagnose(g, vals, rows, rtol, atol) -> list:
    """One :class:`refscore.golden.Diagnosis` per failing quantity, in the order the keys were compared."""
    import warnings

    ctx = _Context(g, vals, rows, rtol, atol)
    failing = {}
    for r in rows:
        if r.status == "FAIL":
            failing.setdefault(r.quantity, []).append(r)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a variant sampler may diverge; a complex value may be cast
        return [_diagnose_quantity(ctx, q, rs) for q, rs in failing.items()]
