"""The hypotheses of the golden diagnosis: predictions of *your* values from refscore's (internal).

Three families, each a list of ``(label, explanation, predict, convention)``:
:func:`structural` (a bug recomputed with refscore's primitives: a transposed
Jacobian, a detached term, DSM's target with sigma for sigma^2, a weighting, a
KSD statistic, a Langevin step convention...), :func:`factors` (a constant
factor, a power of d or of sigma) and :func:`ledger` (every conversion of
:data:`refscore.conventions.TABLE` for the quantity, as data).  ``predict(case)``
gives your value under the hypothesis (or None where it cannot apply);
``convention(Q)`` names ``(ledger row, conversion)`` for a fit.
:mod:`refscore.golden.diagnosis` tests them.
"""
from __future__ import annotations

import math

import numpy as np

from .. import conventions, losses
from ..sampling.samplers import SAMPLERS
from . import _sampler_hypotheses
from .cases import KINDS, LOSS_QUANTITIES, PROJECTION_KINDS, projections_of

__all__ = ["loss_of", "other_kinds_fail", "structural", "factors", "ledger"]

_SIGMA_POWERS = (1, 2, 3, 4, -1, -2, -3, -4)
#: the squared discrepancies, worded as losses (a factor 2 is "a forgotten 1/2")
_STATISTICS = ("ksd_u", "ksd_v")


def loss_of(q):
    """``(loss, projection kind or None, gradient?)`` of a loss quantity of the case table, else None."""
    grad = q.endswith("_grad")
    found = LOSS_QUANTITIES.get(q[:-5] if grad else q)
    return None if found is None else (*found, grad)


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
    """The 1/2 ||s||^2 term of a two-term loss that has one (ISM, SSM-VR), or its gradient, from
    refscore's primitives."""
    found = loss_of(Q.q)
    if found is None or "norm" not in _TWO_TERMS.get(found[0], ()):
        return None
    loss, kind, grad = found
    return _terms(ctx, c, loss, kind)["norm"][1 if grad else 0]


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
    """The words of refscore.conventions.CONVERTED that a failing quantity is: its loss (and, when
    the failure is specific to one projection kind, the loss with that kind), or a KSD quantity."""
    found = loss_of(Q.q)
    if found is not None:
        loss, kind, grad = found
        # a convention of one projection kind explains a failure of that kind alone
        specific = kind is not None and not other_kinds_fail(ctx, Q, loss, kind, grad)
        return (loss, f"{loss}_{kind}") if specific else (loss,)
    return (Q.q,) if Q.q in KINDS["ksd"].quantities else ()


def ledger(ctx, Q):
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


# ---------------------------------------------------------------- losses: terms and variants
#: the two-term losses the diagnosis splits into their terms: loss -> (linear term, quadratic term)
_TWO_TERMS = {"ism": ("trace", "norm"), "ssm": ("vjv", "proj"), "ssm_vr": ("vjv", "norm")}


def _terms(ctx, case, loss, kind=None) -> dict:
    """``{term: (value, grad)}`` of a two-term loss (:data:`_TWO_TERMS`) from refscore's public primitives."""
    model, th, x = ctx.model(case), case.inputs["theta"], case.inputs["x"]
    n, d = x.shape
    s = model.score(th, x)
    half = 0.5 * np.sum(s * s, axis=1)
    if loss == "ism":
        w = np.full(n, 1.0 / n)
        return {"trace": (np.mean(model.score_trace(th, x)), model.trace_grad_params(th, x, w)),
                "norm": (np.mean(half), model.score_vjp_params(th, x, w[:, None] * s))}
    v = projections_of(case.inputs, kind)
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
    loss, kind, grad = loss_of(Q.q) or (None, None, False)
    pick = 1 if grad else 0
    out = []
    if loss in _TWO_TERMS:
        cache = {}

        def terms(c):
            if c.name not in cache:
                cache[c.name] = _terms(ctx, c, loss, kind)
            return cache[c.name]

        first, second = _TWO_TERMS[loss]
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
        if kind == "sphere" and not other_kinds_fail(ctx, Q, loss, kind, grad):
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
    elif loss == "esm":
        def esm_flipped(c):
            r = losses.esm(ctx.model(c), c.inputs["theta"], c.inputs["x"], -c.inputs["target"], grad=True)
            return r[pick]
        out.append(("score sign flipped", "the loss of -s (or of the target -t): your score's sign is flipped",
                    esm_flipped, None))
    elif loss == "dsm":
        def dsm_variant(c, noise_pow=1, target_pow=1, sign=1.0):
            sig, eps, x = float(c.inputs["sigma"]), c.inputs["eps"], c.inputs["x"]
            xt = x + sig**noise_pow * eps
            r = losses.esm(ctx.model(c), c.inputs["theta"], xt, -sign * eps / sig**target_pow, grad=True)
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


def other_kinds_fail(ctx, Q, loss, kind, grad) -> bool:
    """Does the same loss fail with another projection kind than ``kind`` in one of these cases?"""
    suffix = "_grad" if grad else ""
    return any(ctx.fails(c.name, f"{loss}_{k}{suffix}") for c in Q.cases for k in PROJECTION_KINDS if k != kind)


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
    from .. import metrics

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


def _losses_variants(ctx, Q):
    if Q.q == "jacobian":
        return [("transposed Jacobian", "your jacobian[k] is d s_j / d x_i, refscore's is [k, i, j] = "
                 "d s_i / d x_j (row i: the derivatives of s_i)",
                 lambda c: np.swapaxes(Q.gold[c.name], -1, -2), None)]
    if Q.q == "jvp":
        return [("transposed Jacobian", "your jvp is J^T u (a VJP) where refscore's is J u",
                 lambda c: np.einsum("kji,kj->ki", c.quantities["jacobian"], c.inputs["u"]), None)]
    return _loss_variants(ctx, Q)


#: the variants tried on the failing quantities of each case kind but the samplers' (every sampler of
#: refscore.sampling.samplers.SAMPLERS has refscore/golden/_sampler_hypotheses.py)
_VARIANTS = {"losses": _losses_variants, "dsm_multi": _dsm_multi_variants, "ksd": _ksd_variants}


def structural(ctx, Q):
    """``[(label, explanation, predict, convention)]``: the variants of the failing quantity's kind,
    each recomputed with refscore's primitives as a bug would compute it."""
    if not Q.cases:
        return []
    kind = Q.cases[0].kind
    return _sampler_hypotheses.structural(ctx, Q) if kind in SAMPLERS else _VARIANTS[kind](ctx, Q)


# ---------------------------------------------------------------- factor hypotheses
def _is_loss(q) -> bool:
    base = q[:-5] if q.endswith("_grad") else q
    return loss_of(q) is not None or base in _STATISTICS


def _is_dsm(q) -> bool:
    found = loss_of(q)
    return found is not None and found[0] in ("dsm", "dsm_multi")


def factors(ctx, Q):
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
    if _is_dsm(q):
        words = {
            2: "NCSN's lambda(sigma) = sigma^2 weighting, 1/2 ||sigma s + z||^2",
            4: "the sigma^4-scaled DSM 1/2 ||sigma^2 s + sigma z||^2 (eq. (6) times sigma^4, target -eps)",
            1: "a lambda(sigma) = sigma weighting: sigma where NCSN's sigma^2 belongs",
        }
        if k in words:
            return words[k]
    return f"a stray sigma^{k}"


def _sigma_convention(ctx, Q, k):
    if not _is_dsm(Q.q) or k not in (2, 4):
        return None
    return _converted_by(ctx, conventions.dsm_from_ncsn if k == 2 else conventions.dsm_from_sigma4_scaled)


def _scaled_by_projection_scale(Q):
    """The ledger row of :func:`refscore.conventions.projection_scale`, when that factor turns your
    sphere projections into refscore's in every failing case."""
    if all(np.allclose(conventions.projection_scale("sphere", c.dim) * Q.yours[c.name], Q.gold[c.name],
                       rtol=1e-9, atol=1e-12) for c in Q.cases):
        return conventions.row_of(conventions.projection_scale).quantity, "projection_scale"
    return None, None
