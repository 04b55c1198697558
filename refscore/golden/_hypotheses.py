"""The hypotheses of the golden diagnosis beyond the term-wise readings: predictions of *your* values (internal).

Three families, each a list of ``(label, explanation, predict, convention)``:
:func:`structural` (a bug recomputed with refscore's primitives that is no
combination of a loss's terms: a transposed Jacobian, DSM's noise x + sigma^2 z,
IMQ's c for c^2, ``score_noised`` without its 1/sigma; the samplers' from
``refscore/golden/_sampler_hypotheses.py``; the diffusion kinds' from
``refscore/golden/_diffusion_hypotheses.py``), :func:`factors` (a constant factor,
a power of d or of sigma, for a quantity that is no sum of terms) and
:func:`ledger` (every conversion of :data:`refscore.conventions.TABLE` for the
quantity, as data); :func:`conversions` puts your values through each conversion
for the term-wise readings of ``refscore/golden/_termfit.py``.  ``predict(case)``
gives your value under the hypothesis (or None where it cannot apply);
``convention(Q)`` names ``(ledger row, conversion)`` for a fit.
:mod:`refscore.golden.diagnosis` tests them.
"""
from __future__ import annotations

import math

import numpy as np

from .. import conventions, losses
from ..sampling.samplers import SAMPLERS
from . import _diffusion_hypotheses, _sampler_hypotheses, terms
from .cases import KINDS, LOSS_QUANTITIES, PROJECTION_KINDS, projections_of

__all__ = ["loss_of", "other_kinds_fail", "structural", "factors", "ledger", "conversions"]

_SIGMA_POWERS = (1, 2, 3, 4, -1, -2, -3, -4)


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
    """The 1/2 ||s||^2 term of SSM-VR (mean over the points and projections), or its gradient, from
    refscore's primitives (refscore/golden/terms.py); None for another quantity."""
    found = loss_of(Q.q)
    if found is None or found[0] != "ssm_vr":
        return None
    loss, kind, grad = found
    t = terms.sliced_terms(ctx.model(c), c.inputs["theta"], c.inputs["x"], projections_of(c.inputs, kind),
                           True, grad)
    return t.grads[1].sum(axis=0) if grad else float(t.values[1].sum())


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


def _applicable(ctx, Q):
    """``[(row, conversion, {case name: given arguments})]``: the ledger conversions of the quantity
    whose arguments every failing case can give."""
    words = _ledger_words(ctx, Q)
    out = []
    for row in conventions.TABLE:
        for conv in row.conversions:
            if conv.inverse is None or not set(words) & set(conv.converts):
                continue
            given = {c.name: _given(ctx, Q, c, conv.needs) for c in Q.cases}
            if any(g is None for g in given.values()):
                continue
            out.append((row, conv, given))
    return out


def _shown(option) -> str:
    return "".join(f", {k}={v!r}" for k, v in option.items())


def ledger(ctx, Q):
    """``[(label, explanation, predict, convention)]``: every ledger conversion of the quantity, as
    the prediction that your values are refscore's in the variant's convention (the inverse applied
    to refscore's values), for each of its options."""
    out = []
    for row, conv, given in _applicable(ctx, Q):
        for option in conv.option_sets():
            out.append((f"convention '{row.quantity}'",
                        f"your values are the variant {row.variant!r}: {conv.function.__name__}(yours"
                        f"{_shown(option)}) gives refscore's",
                        lambda c, conv=conv, option=option, given=given: conv.from_refscore(
                            Q.gold[c.name], option, **given[c.name]),
                        _fixed(row.quantity, conv.function.__name__)))
    return out


def conversions(ctx, Q):
    """``[(row, function name, call, convert, back)]``: every ledger conversion of the quantity (with each of its
    options): ``convert(case, yours)`` puts your values into refscore's convention, ``back(case,
    value)`` takes refscore's back to the variant's, ``call`` is the conversion in words
    (``"dsm_from_ncsn(yours, sigma)"``).  ``convert`` gives None where your values lie outside the
    conversion's domain (a negative value for ``form='sqrt_v'``): a ValueError of the conversion on
    *your* numbers means that it does not apply; any other exception is a bug and propagates."""
    out = []
    for row, conv, given in _applicable(ctx, Q):
        for option in conv.option_sets():
            def convert(c, y, conv=conv, option=option, given=given):
                try:
                    return np.asarray(conv.to_refscore(y, option, **given[c.name]), dtype=float)
                except ValueError:
                    return None

            def back(c, value, conv=conv, option=option, given=given):
                return np.asarray(conv.from_refscore(value, option, **given[c.name]), dtype=float)

            args = ", ".join(("yours",) + tuple(w for w in conv.needs)) + _shown(option)
            out.append((row, conv.function.__name__, f"{conv.function.__name__}({args})", convert, back))
    return out


def _fixed(row_name, function_name):
    """A convention named outright: ``(row, function)``."""
    return lambda Q: (row_name, function_name)


def _row_named(quantity):
    """The ledger row ``quantity``, with nothing to convert (the fix is in the code, not the numbers)."""
    return lambda Q: (conventions.row(quantity).quantity, None)


# ---------------------------------------------------------------- losses: variants beyond the terms
# A loss's term-wise readings (a flipped score or term, a forgotten 1/2, DSM's target, a detached
# term, unit-sphere projections...) are refscore/golden/_termfit.py's; these are the bugs that are
# no combination of the terms: the loss evaluated elsewhere.

def _loss_variants(ctx, Q):
    """Variants of the losses kind's loss quantities that are not term-wise: ``[(label, explanation,
    predict, convention)]``."""
    loss, kind, grad = loss_of(Q.q) or (None, None, False)
    pick = 1 if grad else 0
    out = []
    if loss == "dsm":
        def noise_sigma2(c):
            sig, eps, x = float(c.inputs["sigma"]), c.inputs["eps"], c.inputs["x"]
            return losses.esm(ctx.model(c), c.inputs["theta"], x + sig**2 * eps, -eps / sig, grad=True)[pick]

        out.append(("DSM noise sigma^2 z", "the noised point x + sigma^2 z where refscore's is x + sigma z: the "
                    "variance used as the standard deviation", noise_sigma2, _row_named("DSM noise")))
    return out


def other_kinds_fail(ctx, Q, loss, kind, grad) -> bool:
    """Does the same loss fail with another projection kind than ``kind`` in one of these cases?"""
    suffix = "_grad" if grad else ""
    return any(ctx.fails(c.name, f"{loss}_{k}{suffix}") for c in Q.cases for k in PROJECTION_KINDS if k != kind)


# ---------------------------------------------------------------- the other kinds
def _dsm_multi_variants(ctx, Q):
    """``score_noised``'s variants (the losses' readings are term-wise)."""
    if Q.q != "score_noised":
        return []

    def scaled(c, p):
        return Q.gold[c.name] * c.inputs["sigma_points"][:, None] ** p

    return [("s_theta(x) without the 1/sigma", "s(x, sigma) = s_theta(x) where refscore's NoiseConditional "
             "divides by sigma", lambda c: scaled(c, 1), None),
            ("s_theta(x)/sigma^2", "s(x, sigma) = s_theta(x)/sigma^2 where refscore's divides by sigma",
             lambda c: scaled(c, -1), None)]


def _ksd_variants(ctx, Q):
    """The IMQ kernel's parameter written otherwise (the reductions and terms are term-wise readings)."""
    from .. import metrics

    def with_c(c, f):
        x, s, cc, beta = c.inputs["x"], c.inputs["score"], float(c.inputs["c"]), float(c.inputs["beta"])
        K = metrics.imq_stein_kernel(x, x, s, s, c=f(cc), beta=beta)
        if Q.q == "stein_kernel":
            return K
        n = K.shape[0]
        return (K.sum() - np.trace(K)) / (n * (n - 1)) if Q.q == "ksd_u" else K.mean()

    return [("IMQ c^2 for c", "the IMQ kernel (c + ||x - y||^2)^beta where refscore's is (c^2 + ||x - y||^2)^beta",
             lambda c: with_c(c, math.sqrt), None),
            ("IMQ c^4 for c^2", "the IMQ kernel (c^4 + ||x - y||^2)^beta: c squared twice",
             lambda c: with_c(c, lambda v: v * v), None)]


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
    if kind in _diffusion_hypotheses.KINDS:
        return _diffusion_hypotheses.structural(ctx, Q)
    return _sampler_hypotheses.structural(ctx, Q) if kind in SAMPLERS else _VARIANTS[kind](ctx, Q)


# ---------------------------------------------------------------- factor hypotheses
def factors(ctx, Q):
    """``[(label, factor(case), explanation, convention)]`` in the order they are tried: the constant
    factors of a quantity that is no sum of terms (a score, a Jacobian, a trace, the sphere projections;
    a loss's factors are term-wise readings, refscore/golden/_termfit.py)."""
    q = Q.q
    if Q.cases and Q.cases[0].kind in _diffusion_hypotheses.KINDS:
        return _diffusion_hypotheses.factors(ctx, Q)
    out = [
        ("sign flip", lambda c: -1.0,
         "your values are -golden: the sign of the score (an energy's +grad E, or grad log p negated) is flipped",
         None),
        ("factor 2", lambda c: 2.0, "twice refscore's", None),
        ("factor 1/2", lambda c: 0.5, "half of refscore's", None),
    ]
    if q == "v_sphere":
        out.insert(0, ("factor 1/sqrt(d)", lambda c: 1 / math.sqrt(c.dim), "unit-sphere projections z/||z|| where "
                       "refscore's sphere has radius sqrt(d) (so that E[v v^T] = I)", _scaled_by_projection_scale))
    out += [("factor 1/d", lambda c: 1.0 / c.dim, "1/d of refscore's", None),
            ("factor d", lambda c: float(c.dim), "d times refscore's", None)]
    if q != "v_sphere":
        out += [("factor sqrt(d)", lambda c: math.sqrt(c.dim), "sqrt(d) times refscore's", None),
                ("factor 1/sqrt(d)", lambda c: 1 / math.sqrt(c.dim), "1/sqrt(d) of refscore's", None)]
    else:
        out.append(("factor sqrt(d)", lambda c: math.sqrt(c.dim), "projections of radius d where refscore's have "
                    "radius sqrt(d)", None))
    if all("sigma" in c.inputs and c.inputs["sigma"].ndim == 0 for c in Q.cases):
        for k in _SIGMA_POWERS:
            out.append((f"factor sigma^{k}", lambda c, k=k: float(c.inputs["sigma"]) ** k, f"a stray sigma^{k}",
                        None))
    return out


def _scaled_by_projection_scale(Q):
    """The ledger row of :func:`refscore.conventions.projection_scale`, when that factor turns your
    sphere projections into refscore's in every failing case."""
    if all(np.allclose(conventions.projection_scale("sphere", c.dim) * Q.yours[c.name], Q.gold[c.name],
                       rtol=1e-9, atol=1e-12) for c in Q.cases):
        return conventions.row_of(conventions.projection_scale).quantity, "projection_scale"
    return None, None
