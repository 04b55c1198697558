"""check's diagnosis on injected bugs: each bug named by its label, and no other bug's label named.

Every bug is written as user code would write it -- a loss assembled from a model's score, trace,
JVPs and parameter VJPs, one mistake in it -- never by scaling golden numbers where the bug is
not a scaling.  The table BUGS gives, per bug, the label(s) the diagnosis must name for each
failing quantity (two or more: the readings the golden cases cannot tell apart, named as
ambiguous); CORRECT lists code that differs from refscore's only in ways that do not change the
numbers beyond round-off, and must pass with no diagnosis.  The term split the diagnosis fits
with (refscore/golden/terms.py) is tested here too: its terms sum to refscore's losses and
gradients, and each term's gradient and the Stein kernel's derivatives agree with finite
differences.

One golden directory serves the whole module, and each check gets the loaded ``Golden``.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from refscore import conventions, golden, losses, metrics
from refscore.golden import terms
from refscore.golden.cases import projections_of

KINDS = golden.PROJECTION_KINDS


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_suite")
    golden.write(d)
    return golden.load(d)


@pytest.fixture(scope="module")
def ref(g):
    return golden.compute(g)


def _model(c):
    return golden.build_model(c.spec, reference=True)


def _per_case(g, fn, kind="losses"):
    out = {}
    for name, c in g.of_kind(kind).items():
        for k, v in fn(c).items():
            out[f"{name}/{k}"] = np.asarray(v, dtype=float)
    return out


def _keys(ref, *suffixes):
    return {k: v for k, v in ref.items() if k.endswith(tuple(f"/{s}" for s in suffixes))}


# ================================================================== user code, with one mistake each
def esm_code(c, scale=1.0, target_sign=1.0, reduce="mean", score_scale=1.0):
    """1/2 ||a s - b t||^2 times ``scale``, a = ``score_scale`` (its score key too), b = ``target_sign``."""
    m, th, x, t = _model(c), c.inputs["theta"], c.inputs["x"], c.inputs["target"]
    n = len(x)
    r = score_scale * m.score(th, x) - target_sign * t
    w = np.full(n, 1.0 if reduce == "sum" else 1.0 / n)
    out = {"esm": scale * 0.5 * np.sum(r * r, axis=1) @ w,
           "esm_grad": scale * score_scale * m.score_vjp_params(th, x, w[:, None] * r)}
    if score_scale != 1.0:
        out["score"] = score_scale * m.score(th, x)
    return out


def dsm_code(c, target_power=1, target_sign=1.0, noise_power=1, weight=0, reduce="mean", grad_without_score=False):
    """lambda 1/2 ||s(x + sigma^noise_power z) + target_sign z / sigma^target_power||^2, lambda = sigma^weight."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    sig, z = float(c.inputs["sigma"]), c.inputs["eps"]
    n = len(x)
    xt = x + sig**noise_power * z
    target = -target_sign * z / sig**target_power
    r = m.score(th, xt) - target
    lam = sig**weight
    w = np.full(n, 1.0 if reduce == "sum" else 1.0 / n)
    ct = w[:, None] * (-target if grad_without_score else r)  # the gradient of s^T(-t) alone
    return {"dsm": lam * 0.5 * np.sum(r * r, axis=1) @ w, "dsm_grad": lam * m.score_vjp_params(th, xt, ct)}


def ism_code(c, trace_c=1.0, norm_c=1.0, norm_mean_dims=False, reduce="mean", detach_trace=False, flip_score=False,
             norm_summed=False):
    """trace_c tr grad s + norm_c 1/2 ||s||^2 (||s||^2 averaged over the coordinates with
    ``norm_mean_dims``; summed over the points, the trace averaged, with ``norm_summed``);
    ``flip_score``: the whole loss of -s (its score key too)."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    n, d = x.shape
    sign = -1.0 if flip_score else 1.0
    s, tr = m.score(th, x), m.score_trace(th, x)
    k = (d if norm_mean_dims else 1) / (n if norm_summed else 1)
    per = trace_c * sign * tr + norm_c * 0.5 * np.sum(s * s, axis=1) / k
    w = np.full(n, 1.0 if reduce == "sum" else 1.0 / n)
    grad = norm_c / k * m.score_vjp_params(th, x, w[:, None] * s)  # 1/2 ||-s||^2 = 1/2 ||s||^2
    if not detach_trace:
        grad = grad + trace_c * sign * m.trace_grad_params(th, x, w)
    out = {"ism": per @ w, "ism_grad": grad}
    if flip_score:
        out["score"] = -s
    return out


def sliced_code(c, kind, vr, vjv_c=1.0, second_c=1.0, radius=1.0, reduce_n="mean", reduce_m="mean",
                first_only=False, detach_second=False, norm_mean_dims=False):
    """SSM (or SSM-VR with ``vr``) over refscore's projections of ``kind`` times ``radius``."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    v = radius * projections_of(c.inputs, kind)
    if first_only:
        v = v[:1]
    M, n, d = v.shape
    s = m.score(th, x)
    xt = np.broadcast_to(x, (M, n, d)).reshape(M * n, d)
    vf = v.reshape(M * n, d)
    vjv = np.einsum("kd,kd->k", vf, m.score_jvp(th, xt, vf)).reshape(M, n)
    vs = np.einsum("mnd,nd->mn", v, s)
    k = d if norm_mean_dims else 1
    second = np.broadcast_to(0.5 * np.sum(s * s, axis=1) / k, (M, n)) if vr else 0.5 * vs**2
    W = np.full((M, n), (1.0 if reduce_n == "sum" else 1.0 / n) * (1.0 if reduce_m == "sum" else 1.0 / M))
    grad = vjv_c * m.vjv_grad_params(th, xt, vf, W.ravel())
    if not detach_second:
        ct = W.sum(axis=0)[:, None] * s / k if vr else np.einsum("mn,mnd->nd", W * vs, v)
        grad = grad + second_c * m.score_vjp_params(th, x, ct)
    name = f"{'ssm_vr' if vr else 'ssm'}_{kind}"
    return {name: np.sum(W * (vjv_c * vjv + second_c * second)), f"{name}_grad": grad}


def dsm_multi_code(c, weighting, weight=None, target_power=1, inner_power=1, reduce="mean"):
    """NCSN's objective with lambda = sigma^weight (default: the weighting's own), the target
    -z/sigma^target_power, s(x, sigma) = s_theta(x)/sigma^inner_power (and its score_noised
    when that is not refscore's 1)."""
    m = _model(c)
    th, x, eps, sig = c.inputs["theta"], c.inputs["x"], c.inputs["eps"], c.inputs["sigma_points"]
    n = len(x)
    k = {"sigma2": 2, "none": 0}[weighting] if weight is None else weight
    xt = x + sig[:, None] * eps
    scale = sig[:, None] ** (1 - inner_power)
    s = m.score(th, xt, sig) * scale
    r = s + eps / sig[:, None] ** target_power
    lam = sig**k
    w = np.full(n, 1.0 if reduce == "sum" else 1.0 / n)
    out = {f"dsm_multi_{weighting}": np.sum(w * lam * 0.5 * np.sum(r * r, axis=1)),
           f"dsm_multi_{weighting}_grad": m.score_vjp_params(th, xt, sig, (w * lam)[:, None] * r * scale)}
    if inner_power != 1:
        out["score_noised"] = s
    return out


def ksd_code(c, kernel_d=True, score_sign=1.0, c_power=2, u_reduction="u", v_reduction="v"):
    """The IMQ Stein kernel written out (Liu, Lee & Jordan 2016, eq. 8), and its U and V statistics."""
    x, s = c.inputs["x"], score_sign * c.inputs["score"]
    cc, beta = float(c.inputs["c"]), float(c.inputs["beta"])
    n, d = x.shape
    r = x[:, None] - x[None]
    r2 = np.sum(r * r, axis=-1)
    q = cc**c_power + r2
    a = 2 * beta * q ** (beta - 1)
    K = ((s @ s.T) * q**beta - a * np.einsum("id,ijd->ij", s, r) + a * np.einsum("jd,ijd->ij", s, r)
         - 4 * beta * (beta - 1) * q ** (beta - 2) * r2 - 2 * beta * (d if kernel_d else 1) * q ** (beta - 1))
    off = K.sum() - np.trace(K)
    stat = {"u": off / (n * (n - 1)), "v": K.sum() / n**2, "u_n2": off / n**2, "sum": K.sum()}
    return {"stein_kernel": K, "ksd_u": stat[u_reduction], "ksd_v": stat[v_reduction]}


# ================================================================== the bugs and their labels
@dataclass
class Bug:
    name: str
    build: object  # (g, ref) -> values
    expect: dict  # quantity -> the labels named (one, or the ambiguous readings in order)
    precision: str = "float64"
    check: dict = field(default_factory=dict)  # quantity -> (convention, conversion) the diagnosis names


def _all_sliced(c, vr, **kw):
    return {k: v for kind in KINDS for k, v in sliced_code(c, kind, vr, **kw).items()}


def _both(q, *labels):
    return {q: labels, f"{q}_grad": labels}


TRACE_OVER_D = ("the trace term divided by d",)
X2_SLICED = ("factor 2", "factor m")
BUGS = [
    # --------------------------------------------------------------- ESM
    Bug("esm without its 1/2", lambda g, ref: _per_case(g, lambda c: esm_code(c, scale=2)), _both("esm", "factor 2")),
    Bug("esm target sign, score passes", lambda g, ref: {**_per_case(g, lambda c: esm_code(c, target_sign=-1)),
                                                          **_keys(ref, "score")},
        _both("esm", "target sign flipped")),
    Bug("esm target sign, no score key", lambda g, ref: _per_case(g, lambda c: esm_code(c, target_sign=-1)),
        _both("esm", "score sign flipped", "target sign flipped")),
    Bug("esm summed over points", lambda g, ref: _per_case(g, lambda c: esm_code(c, reduce="sum")),
        _both("esm", "factor n")),
    # --------------------------------------------------------------- DSM
    Bug("dsm target -z", lambda g, ref: _per_case(g, lambda c: dsm_code(c, target_power=0)),
        _both("dsm", "DSM target -z"), check={"dsm": ("DSM noise", None), "dsm_grad": ("DSM noise", None)}),
    Bug("dsm target -z/sigma^2, values only",
        lambda g, ref: {k: v for k, v in _per_case(g, lambda c: dsm_code(c, target_power=2)).items()
                        if k.endswith("/dsm")}, {"dsm": ("DSM target -z/sigma^2",)}),
    Bug("dsm target sign, score passes", lambda g, ref: {**_per_case(g, lambda c: dsm_code(c, target_sign=-1)),
                                                          **_keys(ref, "score")},
        _both("dsm", "DSM target +z/sigma")),
    Bug("dsm NCSN sigma^2 weighting", lambda g, ref: _per_case(g, lambda c: dsm_code(c, weight=2)),
        _both("dsm", "factor sigma^2"),
        check={"dsm": ("DSM scale (NCSN)", "dsm_from_ncsn"), "dsm_grad": ("DSM scale (NCSN)", "dsm_from_ncsn")}),
    Bug("dsm sigma^4-scaled", lambda g, ref: _per_case(g, lambda c: dsm_code(c, weight=4)),
        _both("dsm", "factor sigma^4"),
        check={"dsm": ("DSM scale", "dsm_from_sigma4_scaled")}),
    Bug("dsm NCSN weighting summed over points",
        lambda g, ref: _per_case(g, lambda c: dsm_code(c, weight=2, reduce="sum")),
        _both("dsm", "factor n x sigma^2"),
        check={"dsm": ("DSM scale (NCSN)", "dsm_from_ncsn")}),
    Bug("dsm noise sigma^2 z", lambda g, ref: _per_case(g, lambda c: dsm_code(c, noise_power=2)),
        _both("dsm", "DSM noise sigma^2 z")),
    Bug("dsm gradient without its 1/2 ||s||^2 term",
        lambda g, ref: {**_per_case(g, lambda c: dsm_code(c, grad_without_score=True)), **_keys(ref, "dsm")},
        {"dsm_grad": ("gradient misses the 1/2 ||s||^2 term",)}),
    # --------------------------------------------------------------- ISM
    Bug("ism trace sign, score passes", lambda g, ref: {**_per_case(g, lambda c: ism_code(c, trace_c=-1)),
                                                         **_keys(ref, "score")},
        _both("ism", "tr grad_x s with its sign flipped")),
    Bug("ism trace sign, no score key", lambda g, ref: _per_case(g, lambda c: ism_code(c, trace_c=-1)),
        _both("ism", "score sign flipped", "tr grad_x s with its sign flipped")),
    # the trace key passes: a flipped score would flip it too, so the loss's trace term is blamed
    Bug("ism trace sign, trace key passes", lambda g, ref: {**_per_case(g, lambda c: ism_code(c, trace_c=-1)),
                                                             **_keys(ref, "trace")},
        _both("ism", "tr grad_x s with its sign flipped")),
    Bug("ism of -s, score key -s", lambda g, ref: _per_case(g, lambda c: ism_code(c, flip_score=True)),
        {**_both("ism", "score sign flipped"), "score": ("sign flip",)}),
    Bug("ism without the 1/2 of 1/2 ||s||^2", lambda g, ref: _per_case(g, lambda c: ism_code(c, norm_c=2)),
        _both("ism", "1/2 missing on the 1/2 ||s||^2 term only")),
    Bug("ism x2", lambda g, ref: _per_case(g, lambda c: ism_code(c, trace_c=2, norm_c=2)), _both("ism", "factor 2")),
    Bug("ism ||s||^2 averaged over the coordinates",
        lambda g, ref: _per_case(g, lambda c: ism_code(c, norm_mean_dims=True)),
        _both("ism", "the mean over dimensions in 1/2 ||s||^2")),
    # a product of two atoms on one term: torch's (s ** 2).mean() per point, without the 1/2
    Bug("ism ||s||^2 as a mean over the coordinates, no 1/2",
        lambda g, ref: _per_case(g, lambda c: ism_code(c, norm_c=2, norm_mean_dims=True)),
        _both("ism", "the mean over dimensions in 1/2 ||s||^2 + 1/2 missing on the 1/2 ||s||^2 term only")),
    Bug("ism summed over points", lambda g, ref: _per_case(g, lambda c: ism_code(c, reduce="sum")),
        _both("ism", "factor n")),
    Bug("ism trace detached", lambda g, ref: {**_per_case(g, lambda c: ism_code(c, detach_trace=True)),
                                               **_keys(ref, "ism")},
        {"ism_grad": ("gradient misses the tr grad_x s term",)}),
    Bug("ism trace divided by d", lambda g, ref: _per_case(g, lambda c: ism_code(c, trace_c=1 / c.dim)),
        _both("ism", *TRACE_OVER_D)),
    Bug("ism of -s in MLPEnergy only (+grad E), score key too",
        lambda g, ref: {**_keys(ref, "ism", "ism_grad", "score"),
                        **_per_case(g, lambda c: ism_code(c, flip_score=c.spec["model"] == "MLPEnergy"))},
        {**_both("ism", "score sign flipped"), "score": ("sign flip",)}),
    Bug("ism without the 1/2, float32", lambda g, ref: {
        k: v.astype(np.float32) for k, v in _per_case(g, lambda c: ism_code(c, norm_c=2)).items()},
        _both("ism", "1/2 missing on the 1/2 ||s||^2 term only"), precision="float32"),
    # --------------------------------------------------------------- SSM
    Bug("ssm v^T J v divided by d (every kind)", lambda g, ref: _per_case(g, lambda c: _all_sliced(c, False,
                                                                                                   vjv_c=1 / c.dim)),
        {q: TRACE_OVER_D for k in KINDS for q in (f"ssm_{k}", f"ssm_{k}_grad")}),
    Bug("ssm unit-sphere projections", lambda g, ref: {**_per_case(
        g, lambda c: sliced_code(c, "sphere", False, radius=1 / math.sqrt(c.dim))),
        **_keys(ref, "ssm_gaussian", "ssm_gaussian_grad")},
        _both("ssm_sphere", "unit-sphere projections"),
        check={"ssm_sphere": ("SSM projections", "sphere_unscaled_ssm_to_ism")}),
    Bug("ssm without the 1/2 of 1/2 (v^T s)^2", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "gaussian", False, second_c=2)),
        _both("ssm_gaussian", "1/2 missing on the 1/2 (v^T s)^2 term only")),
    Bug("ssm summed over projections", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "rademacher", False, reduce_m="sum")), _both("ssm_rademacher", *X2_SLICED)),
    Bug("ssm first projection only", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "gaussian", False, first_only=True)), _both("ssm_gaussian", "one projection only")),
    Bug("ssm summed over points and projections", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "gaussian", False, reduce_n="sum", reduce_m="sum")),
        _both("ssm_gaussian", "factor 2 x n", "factor n x m")),
    Bug("ssm 1/2 (v^T s)^2 detached", lambda g, ref: {**_per_case(
        g, lambda c: sliced_code(c, "sphere", False, detach_second=True)), **_keys(ref, "ssm_sphere")},
        {"ssm_sphere_grad": ("gradient misses the 1/2 (v^T s)^2 term",)}),
    # --------------------------------------------------------------- SSM-VR
    Bug("ssm_vr v^T J v divided by d (every kind, torchebm)", lambda g, ref: _per_case(
        g, lambda c: _all_sliced(c, True, vjv_c=1 / c.dim)),
        {q: TRACE_OVER_D for k in KINDS for q in (f"ssm_vr_{k}", f"ssm_vr_{k}_grad")}),
    Bug("ssm_vr unit-sphere projections", lambda g, ref: {**_per_case(
        g, lambda c: sliced_code(c, "sphere", True, radius=1 / math.sqrt(c.dim))),
        **_keys(ref, "ssm_vr_gaussian_grad", "ssm_vr_rademacher", "ssm_vr_rademacher_grad")},
        _both("ssm_vr_sphere", "unit-sphere projections"),
        check={"ssm_vr_sphere": ("SSM-VR projections", "sphere_unscaled_ssm_vr_to_ism")}),
    # with no other projection kind to compare, the unit sphere and a trace term over d read alike
    Bug("ssm_vr unit-sphere projections, no other kind", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "sphere", True, radius=1 / math.sqrt(c.dim))),
        _both("ssm_vr_sphere", "unit-sphere projections", *TRACE_OVER_D)),
    Bug("ssm_vr x2", lambda g, ref: _per_case(g, lambda c: sliced_code(c, "gaussian", True, vjv_c=2, second_c=2)),
        _both("ssm_vr_gaussian", *X2_SLICED)),
    Bug("ssm_vr ||s||^2 averaged over the coordinates", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "rademacher", True, norm_mean_dims=True)),
        _both("ssm_vr_rademacher", "the mean over dimensions in 1/2 ||s||^2")),
    Bug("ssm_vr v^T J v sign, score passes", lambda g, ref: {**_per_case(
        g, lambda c: sliced_code(c, "rademacher", True, vjv_c=-1)), **_keys(ref, "score")},
        _both("ssm_vr_rademacher", "v^T grad_x s v with its sign flipped")),
    # --------------------------------------------------------------- dsm_multi
    Bug("dsm_multi weighted by sigma", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "sigma2", weight=1), "dsm_multi"),
        _both("dsm_multi_sigma2", "weighting sigma^1")),
    Bug("dsm_multi weightings swapped", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "sigma2", weight=0), "dsm_multi"),
        _both("dsm_multi_sigma2", "weighting sigma^0"),
        check={"dsm_multi_sigma2": ("DSM scale (NCSN)", None)}),
    Bug("dsm_multi target -z", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "none", target_power=0), "dsm_multi"), _both("dsm_multi_none", "DSM target -z")),
    Bug("dsm_multi without the 1/sigma of NoiseConditional", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "sigma2", inner_power=0), "dsm_multi"),
        {**_both("dsm_multi_sigma2", "s_theta(x) without the 1/sigma"),
         "score_noised": ("s_theta(x) without the 1/sigma",)}),
    Bug("dsm_multi summed over points", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "none", reduce="sum"), "dsm_multi"), _both("dsm_multi_none", "factor n")),
    # --------------------------------------------------------------- KSD
    Bug("ksd V-statistic for U", lambda g, ref: _per_case(g, lambda c: ksd_code(c, u_reduction="v"), "ksd"),
        {"ksd_u": ("V-statistic",)}, check={"ksd_u": ("KSD estimator", "ksd_to_u")}),
    # only the d = 2 cases fail, where 1/d is 1/2: the two readings are the golden cases' to tell apart
    Bug("ksd kernel term without its d", lambda g, ref: _per_case(g, lambda c: ksd_code(c, kernel_d=False), "ksd"),
        {q: ("the kernel term of KSD without its d", "tr grad_x grad_y k, its d part halved")
         for q in ("stein_kernel", "ksd_u", "ksd_v")}),
    Bug("ksd with -score", lambda g, ref: _per_case(g, lambda c: ksd_code(c, score_sign=-1), "ksd"),
        {q: ("score sign flipped",) for q in ("stein_kernel", "ksd_u", "ksd_v")}),
    Bug("ksd IMQ with c for c^2", lambda g, ref: _per_case(g, lambda c: ksd_code(c, c_power=1), "ksd"),
        {q: ("IMQ c^2 for c",) for q in ("stein_kernel", "ksd_u", "ksd_v")}),
    Bug("ksd_v summed over the pairs", lambda g, ref: _per_case(g, lambda c: ksd_code(c, v_reduction="sum"), "ksd"),
        {"ksd_v": ("sum over all pairs",)}),
    Bug("ksd_v as the U-statistic", lambda g, ref: _per_case(g, lambda c: ksd_code(c, v_reduction="u"), "ksd"),
        {"ksd_v": ("U-statistic",)}),
    Bug("ksd_u over n^2", lambda g, ref: _per_case(g, lambda c: ksd_code(c, u_reduction="u_n2"), "ksd"),
        {"ksd_u": ("U-statistic over n^2",)}),
    Bug("ksd IMQ with c^4 for c^2", lambda g, ref: _per_case(g, lambda c: ksd_code(c, c_power=4), "ksd"),
        {q: ("IMQ c^4 for c^2",) for q in ("stein_kernel", "ksd_u", "ksd_v")}),
    # --------------------------------------------------------------- more of the family, each named once
    Bug("ism negated (a gradient ascent)", lambda g, ref: _per_case(g, lambda c: ism_code(c, trace_c=-1, norm_c=-1)),
        _both("ism", "sign flip")),
    Bug("esm with an extra 1/2", lambda g, ref: _per_case(g, lambda c: esm_code(c, scale=0.5)),
        _both("esm", "factor 1/2")),
    Bug("esm's mean divided by n again",
        lambda g, ref: _per_case(g, lambda c: esm_code(c, scale=1 / c.inputs["x"].shape[0])),
        _both("esm", "factor 1/n")),
    Bug("ism times d", lambda g, ref: _per_case(g, lambda c: ism_code(c, trace_c=c.dim, norm_c=c.dim)),
        _both("ism", "factor d")),
    Bug("esm of 2 s, score key 2 s", lambda g, ref: _per_case(g, lambda c: esm_code(c, score_scale=2)),
        {**_both("esm", "score x 2"), "score": ("factor 2",)}),
    Bug("esm target doubled, score passes", lambda g, ref: {**_per_case(g, lambda c: esm_code(c, target_sign=2)),
                                                             **_keys(ref, "score")},
        _both("esm", "target x 2")),
    Bug("ism ||s||^2 summed over the points, the trace averaged",
        lambda g, ref: _per_case(g, lambda c: ism_code(c, norm_summed=True)),
        _both("ism", "1/2 ||s||^2 summed over the points")),
    Bug("ssm_vr without its 1/2 ||s||^2 term", lambda g, ref: _per_case(
        g, lambda c: sliced_code(c, "gaussian", True, second_c=0)),
        _both("ssm_vr_gaussian", "the 1/2 ||s||^2 term missing")),
    Bug("dsm target -eps (-sigma z)", lambda g, ref: _per_case(g, lambda c: dsm_code(c, target_power=-1)),
        _both("dsm", "DSM target -sigma z")),
    Bug("dsm_multi with s_theta(x)/sigma^2", lambda g, ref: _per_case(
        g, lambda c: dsm_multi_code(c, "none", inner_power=2), "dsm_multi"),
        {**_both("dsm_multi_none", "s_theta(x)/sigma^2"), "score_noised": ("s_theta(x)/sigma^2",)}),
]


def _named(d) -> tuple:
    """The labels a diagnosis names: its ambiguous readings, or its one hypothesis (or none)."""
    return d.ambiguous or ((d.hypothesis,) if d.hypothesis else ())


@pytest.fixture(scope="module")
def diagnosed(g, ref):
    """Every bug's diagnosis, by bug name: ``{quantity: Diagnosis}``."""
    out = {}
    for bug in BUGS:
        res = golden.check(g, bug.build(g, ref), precision=bug.precision)
        assert not res.passed, bug.name
        out[bug.name] = {d.quantity: d for d in res.diagnosis}
    return out


def test_the_suite_covers_every_loss_and_kind():
    quantities = {q for bug in BUGS for q in bug.expect}
    bases = {q.removesuffix("_grad") for q in quantities}
    for loss in ("esm", "ism", "dsm"):
        assert {loss, f"{loss}_grad"} <= quantities
    for loss in ("ssm", "ssm_vr"):
        assert {f"{loss}_{k}" for k in KINDS} <= bases
    assert {"dsm_multi_sigma2", "dsm_multi_none", "stein_kernel", "ksd_u", "ksd_v"} <= bases
    assert any(set(b.expect) == {"dsm"} for b in BUGS)  # values without their gradients
    assert sum(any(q.endswith("_grad") for q in b.expect) and not any(not q.endswith("_grad") for q in b.expect)
               for b in BUGS) >= 3  # gradient-only bugs
    assert len(BUGS) >= 30


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_each_injected_bug_is_named(bug, diagnosed):
    diag = diagnosed[bug.name]
    assert set(diag) == set(bug.expect), (bug.name, {q: d.line() for q, d in diag.items()})
    for q, labels in bug.expect.items():
        d = diag[q]
        assert _named(d) == labels, d.line()
        if len(labels) > 1:
            assert "ambiguous" in d.explanation and d.hypothesis == " or ".join(labels)
        for key, (convention, conversion) in bug.check.items():
            if key == q:
                assert (d.convention, d.conversion) == (convention, conversion), d.line()
                if conversion is not None:
                    assert conventions.row_of(getattr(conventions, conversion)).quantity == convention


def test_no_bug_is_given_another_bugs_label(diagnosed):
    """Every label of the suite is named only for the bugs that expect it: a hypothesis is tested
    to be named when true, and not named for each of the other injected bugs."""
    every = {label for bug in BUGS for labels in bug.expect.values() for label in labels}
    for bug in BUGS:
        own = {label for labels in bug.expect.values() for label in labels}
        named = {label for d in diagnosed[bug.name].values() for label in _named(d)}
        assert named & every <= own, (bug.name, named - own)


# ================================================================== what the words say
def test_times_two_on_a_two_term_loss_is_never_a_forgotten_half(diagnosed):
    for name in ("ism x2", "ssm summed over projections", "ssm_vr x2"):
        for d in diagnosed[name].values():
            assert "a forgotten 1/2 (" not in d.explanation and "not a forgotten 1/2" in d.explanation, d.line()
    for d in diagnosed["esm without its 1/2"].values():
        assert "a forgotten 1/2" in d.explanation
    d = diagnosed["ism without the 1/2 of 1/2 ||s||^2"]["ism"]
    assert d.formula == "yours = 1 [tr grad_x s] + 2 [1/2 ||s||^2]"


def test_torchebm_trace_over_d_is_named_with_its_cause(diagnosed):
    for d in diagnosed["ssm_vr v^T J v divided by d (every kind, torchebm)"].values():
        assert "Hutchinson estimate normalised by the dimension" in d.explanation
        assert "only d > 1" in d.patterns and d.formula == "yours = 1/d [v^T grad_x s v] + 1 [1/2 ||s||^2]"
    # the unit sphere is the same coefficients on the sphere alone: named so, with its conversion
    d = diagnosed["ssm_vr unit-sphere projections"]["ssm_vr_sphere"]
    assert "only the sphere projection" in d.patterns and "radius sqrt(d)" in d.explanation
    d = diagnosed["ssm_vr unit-sphere projections, no other kind"]["ssm_vr_sphere"]
    assert "other projection kinds, not provided, would tell these readings apart" in d.explanation
    assert d.conversion is None  # the conversion is one reading's


def test_a_sum_over_points_says_n(diagnosed):
    for name in ("esm summed over points", "ism summed over points", "dsm_multi summed over points"):
        for d in diagnosed[name].values():
            assert d.hypothesis == "factor n" and "summed over the n points" in d.explanation
            assert d.ratio_min == pytest.approx(d.ratio_max)
    assert diagnosed["ism summed over points"]["ism"].ratio_median == pytest.approx(golden.cases.N_POINTS)
    assert diagnosed["dsm_multi summed over points"]["dsm_multi_none"].ratio_median == pytest.approx(
        golden.cases.N_MULTI_POINTS)


def test_score_readings_follow_the_score_key(diagnosed):
    """A score that passes rules the flipped score out (the trace term or the target is blamed); a
    score key failing by -1 confirms it; with no score key both readings are said, and why."""
    for name in ("ism trace sign, score passes", "dsm target sign, score passes", "esm target sign, score passes"):
        for d in diagnosed[name].values():
            assert "score sign" not in d.hypothesis and "score's sign" not in d.explanation, d.line()
    d = diagnosed["ism trace sign, no score key"]["ism"]
    assert "'score' key, not provided, would tell them apart" in d.explanation
    d = diagnosed["ism of -s in MLPEnergy only (+grad E), score key too"]["ism"]
    assert "only MLPEnergy" in d.patterns


def test_a_gradient_read_beside_its_value(diagnosed):
    """DSM's target -z scales the cross term by sigma and the target's square by sigma^2; the gradient
    has no target square, so alone it reads 'cross term x sigma' as well: the value's reading wins."""
    d = diagnosed["dsm target -z"]["dsm_grad"]
    assert d.hypothesis == "DSM target -z" and d.formula == "yours = 1 [1/2 ||s||^2] + sigma^1 [s^T z/sigma]"
    d = diagnosed["ism trace detached"]["ism_grad"]
    assert "gradient only" in d.patterns and "detached" in d.explanation


def test_a_reading_after_a_conversion_is_said_beside_the_raw_one(diagnosed):
    d = diagnosed["dsm NCSN weighting summed over points"]["dsm"]
    assert d.formula == ("yours = n sigma^2 [1/2 ||s||^2] + n sigma^2 [s^T z/sigma] + n sigma^2 [1/2 ||z/sigma||^2]")
    assert any(r.startswith("after dsm_from_ncsn(yours, sigma) [convention 'DSM scale (NCSN)']")
               and r.endswith("summed over the n points where refscore takes their mean (a factor n exactly)")
               for r in d.readings), d.readings
    assert any("also read after dsm_from_ncsn" in line for line in d.lines())


def test_nothing_fits_says_so_with_the_closest_reading(g, ref):
    rng = np.random.default_rng(3)
    vals = {k: v * (1 + 1e-3 * rng.standard_normal(v.shape)) for k, v in _keys(ref, "ism", "ksd_u").items()}
    res = golden.check(g, vals)
    for d in res.diagnosis:
        assert d.hypothesis is None and "no tested hypothesis fits" in d.explanation, d.line()
        assert d.best.startswith("closest term-wise reading: refscore's own terms") and "does not fit" in d.best
        misfit = float(d.best.split("largest relative misfit ")[1].split(":")[0])
        assert 1e-4 < misfit < 1e-2  # the 1e-3 noise, measured
        assert any(line.strip().startswith("closest term-wise reading") for line in d.lines())


def test_one_failing_number_is_read_with_one_atom_at_most(g, ref):
    """With one failing scalar, a reading of two atoms would fit by coincidence: none is named."""
    vals = {"mixture_d2/ism": 3.7 * ref["mixture_d2/ism"]}
    (d,) = golden.check(g, vals).diagnosis
    assert d.hypothesis is None and d.ratio_median == pytest.approx(3.7)


# ================================================================== correct code passes, with no diagnosis
def _reverse_order_mean(per):
    return math.fsum(per[::-1]) / len(per)


def correct_reduction_order(c):
    """ISM's per-point values summed exactly in reverse order, then divided by n."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    s = m.score(th, x)
    per = m.score_trace(th, x) + 0.5 * np.sum(s * s, axis=1)
    return {"ism": _reverse_order_mean(per)}


def correct_sum_over_n(c):
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    t = c.inputs["target"]
    per = losses.esm(m, th, x, t, reduction="none")
    return {"esm": np.sum(per) / len(per)}


def correct_trace_from_the_jacobian(c):
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    s = m.score(th, x)
    tr = np.einsum("kii->k", m.score_jacobian(th, x))
    return {"trace": tr, "ism": np.mean(tr + 0.5 * np.sum(s * s, axis=1))}


def correct_ssm_repeat_layout(c):
    """SSM with x repeated per point (np.repeat), the projections transposed to match."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    out = {}
    for kind in KINDS:
        v = projections_of(c.inputs, kind)
        M, n, d = v.shape
        xr = np.repeat(x, M, axis=0)
        vr = v.transpose(1, 0, 2).reshape(n * M, d)
        s = m.score(th, xr)
        vjv = np.einsum("kd,kd->k", vr, m.score_jvp(th, xr, vr))
        out[f"ssm_{kind}"] = np.mean(vjv + 0.5 * np.einsum("kd,kd->k", vr, s) ** 2)
    return out


def correct_dsm_as_equation_6(c):
    """eq. (6): eps ~ N(0, sigma^2 I), the target -eps/sigma^2 at x + eps."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    sig = float(c.inputs["sigma"])
    e = sig * c.inputs["eps"]
    return dict(zip(("dsm", "dsm_grad"), losses.esm(m, th, x + e, -e / sig**2, grad=True)))


def correct_ssm_vr_norm_once(c):
    """SSM-VR's 1/2 ||s||^2 averaged over the points once, beside the mean of v^T J v."""
    m, th, x = _model(c), c.inputs["theta"], c.inputs["x"]
    v = projections_of(c.inputs, "gaussian")
    M, n, d = v.shape
    s = m.score(th, x)
    vf = v.reshape(M * n, d)
    vjv = np.einsum("kd,kd->k", vf, m.score_jvp(th, np.tile(x, (M, 1)), vf))
    return {"ssm_vr_gaussian": np.mean(vjv) + np.mean(0.5 * np.sum(s * s, axis=1))}


def correct_ksd_v_from_u(c):
    """The V-statistic from refscore's U-statistic and the kernel's diagonal (the ledger's identity)."""
    x, s, cc, beta = c.inputs["x"], c.inputs["score"], float(c.inputs["c"]), float(c.inputs["beta"])
    u = metrics.ksd(x, s, c=cc, beta=beta)
    return {"ksd_u": u, "ksd_v": conventions.ksd_from_u(u, conventions.imq_stein_diagonal(s, c=cc, beta=beta), "v")}


def correct_dsm_multi_by_level(c):
    """NCSN's objective level by level: each level's weighted sum, added, divided by n."""
    m = _model(c)
    th, x, eps = c.inputs["theta"], c.inputs["x"], c.inputs["eps"]
    sigmas, labels = c.inputs["sigmas"], np.rint(c.inputs["labels"]).astype(int)
    total = 0.0
    for i, sig in enumerate(sigmas):
        k = labels == i
        xt = x[k] + sig * eps[k]
        r = m.score(th, xt, np.full(k.sum(), sig)) + eps[k] / sig
        total += sig**2 * 0.5 * np.sum(r * r)
    return {"dsm_multi_sigma2": total / len(x)}


CORRECT = [
    ("reduction in another order", lambda g: _per_case(g, correct_reduction_order)),
    ("sum of per-point losses divided by n", lambda g: _per_case(g, correct_sum_over_n)),
    ("trace from the Jacobian's diagonal", lambda g: _per_case(g, correct_trace_from_the_jacobian)),
    ("SSM with np.repeat's layout", lambda g: _per_case(g, correct_ssm_repeat_layout)),
    ("DSM written as eq. (6)", lambda g: _per_case(g, correct_dsm_as_equation_6)),
    ("SSM-VR's norm term once per point", lambda g: _per_case(g, correct_ssm_vr_norm_once)),
    ("KSD V from U by the ledger", lambda g: _per_case(g, correct_ksd_v_from_u, "ksd")),
    ("dsm_multi level by level", lambda g: _per_case(g, correct_dsm_multi_by_level, "dsm_multi")),
]


@pytest.mark.parametrize("name, build", CORRECT, ids=[c[0] for c in CORRECT])
def test_equivalent_code_passes_with_no_diagnosis(g, name, build):
    res = golden.check(g, build(g))
    assert res.passed and res.diagnosis == [] and "diagnosis" not in str(res), res.table(only_failures=True)


def test_float32_values_pass_at_the_float32_tolerances(g, ref):
    vals = {k: v.astype(np.float32) for k, v in _keys(ref, "ism", "ism_grad", "dsm", "ssm_vr_sphere_grad").items()}
    assert not golden.check(g, vals).passed  # float64's tolerances see float32's round-off
    res = golden.check(g, vals, precision="float32")
    assert res.passed and res.diagnosis == []


def test_inputs_mutated_after_the_values_change_nothing(g):
    """User code that scales the golden inputs in place after computing its values: the check of a
    directory loads its own copy, and passes."""
    mine = golden.load(g.directory)
    vals = _per_case(mine, lambda c: ism_code(c))
    for c in mine.cases.values():
        c.inputs["x"] *= 2.0
        c.inputs["theta"] += 1.0
    res = golden.check(g.directory, vals)
    assert res.passed and res.diagnosis == []
    # and a bug beside the mutation is still read from the stored inputs
    bad = _per_case(golden.load(g.directory), lambda c: ism_code(c, norm_c=2))
    for c in mine.cases.values():
        c.inputs["x"] *= 3.0
    diag = {d.quantity: d for d in golden.check(g.directory, bad).diagnosis}
    assert diag["ism"].hypothesis == "1/2 missing on the 1/2 ||s||^2 term only"


# ================================================================== the terms themselves
def test_every_registry_loss_has_its_term_split():
    assert set(terms.TERMS) == set(losses.LOSSES) == set(terms.LOSS_TERMS)


@pytest.mark.parametrize("grad", [False, True])
def test_terms_sum_to_refscore_losses_and_gradients(g, grad):
    """Sums of the terms over points and groups against refscore's losses (their own, fused paths on
    the reference engine): equal to round-off, rtol 1e-12 of the largest magnitude (the terms are
    added in another order; the losses are O(1)-O(100))."""
    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * max(1.0, float(np.max(np.abs(b)))))

    for c in list(g.cases.values())[::4]:
        m, th, x, i = _model(c), c.inputs["theta"], c.inputs["x"], c.inputs
        sig = float(i["sigma"])
        pairs = [(terms.esm_terms(m, th, x, i["target"], grad), losses.esm(m, th, x, i["target"], grad=grad)),
                 (terms.ism_terms(m, th, x, grad), losses.ism(m, th, x, grad=grad)),
                 (terms.dsm_terms(m, th, x, sig, i["eps"], grad), losses.dsm(m, th, x, sig, i["eps"], grad=grad))]
        for kind in KINDS:
            v = projections_of(i, kind)
            pairs += [(terms.sliced_terms(m, th, x, v, False, grad), losses.ssm(m, th, x, v, grad=grad)),
                      (terms.sliced_terms(m, th, x, v, True, grad), losses.ssm_vr(m, th, x, v, grad=grad))]
        for t, want in pairs:
            close(t.total(), want[0] if grad else want)
            assert np.allclose(t.values.sum(axis=1), t.points.sum(axis=1), rtol=1e-13, atol=1e-13)
            if grad:
                close(t.total_grad(), want[1])
    for c in g.of_kind("dsm_multi").values():
        m, i = _model(c), c.inputs
        labels = np.rint(i["labels"]).astype(int)
        for weighting in ("sigma2", "none"):
            t = terms.dsm_multi_terms(m, i["theta"], i["x"], i["sigmas"], labels, i["eps"], weighting, grad)
            want = losses.dsm_multi(m, i["theta"], i["x"], i["sigmas"], labels, i["eps"], weighting=weighting,
                                    grad=grad)
            close(t.total(), want[0] if grad else want)
            if grad:
                close(t.total_grad(), want[1])


def test_term_gradients_against_finite_differences(g):
    """Each term's gradient over theta (summed over its groups) against central differences of the
    term's value, h = 1e-6: truncation O(h^2 f''') ~ 1e-11 and round-off O(eps f / h) ~ 1e-9 on these
    O(1)-O(100) terms, so rtol 1e-5 with atol 1e-6 is far above both and far below any wrong term."""
    h = 1e-6
    for name in ("mlpscore_tanh_depth2_d2", "mlpenergy_gelu_depth1_d5", "gaussian_d2", "mixture_d2"):
        c = g.cases[name]
        m, th, x, i = _model(c), c.inputs["theta"], c.inputs["x"], c.inputs
        sig = float(i["sigma"])
        v = projections_of(i, "sphere")
        splits = [lambda t: terms.ism_terms(m, t, x, grad=False), lambda t: terms.dsm_terms(m, t, x, sig, i["eps"]),
                  lambda t: terms.esm_terms(m, t, x, i["target"]), lambda t: terms.sliced_terms(m, t, x, v, False),
                  lambda t: terms.sliced_terms(m, t, x, v, True)]
        exact = [terms.ism_terms(m, th, x, True), terms.dsm_terms(m, th, x, sig, i["eps"], True),
                 terms.esm_terms(m, th, x, i["target"], True), terms.sliced_terms(m, th, x, v, False, True),
                 terms.sliced_terms(m, th, x, v, True, True)]
        for split, ex in zip(splits, exact):
            fd = np.zeros((len(ex.terms), len(th)))
            for j in range(len(th)):
                e = np.zeros(len(th))
                e[j] = h
                fd[:, j] = (split(th + e).values.sum(axis=1) - split(th - e).values.sum(axis=1)) / (2 * h)
            np.testing.assert_allclose(ex.grads.sum(axis=1), fd, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_stein_kernel_terms_sum_to_refscore_and_match_finite_differences(g):
    """The five terms sum to imq_stein_kernel (rtol 1e-12: the same arithmetic in another order), and
    their kernel derivatives are those of k = (c^2 + ||x - y||^2)^beta by central differences:
    grad_x k with h = 1e-6 (error ~1e-10), tr grad_x grad_y k as a mixed second difference with
    h = 1e-4 (truncation ~1e-8, round-off ~1e-8): rtol 1e-5."""
    for c in g.of_kind("ksd").values():
        x, s, cc, beta = c.inputs["x"], c.inputs["score"], float(c.inputs["c"]), float(c.inputs["beta"])
        T = terms.ksd_terms(x, s, cc, beta)
        np.testing.assert_allclose(T.sum(axis=0), metrics.imq_stein_kernel(x, x, s, s, c=cc, beta=beta),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(T.sum(axis=0), c.quantities["stein_kernel"], rtol=1e-12, atol=1e-12)

        def k(a, b):
            return (cc * cc + np.sum((a - b) ** 2)) ** beta

        n, d = x.shape
        for i, j in [(0, 1), (2, 5), (3, 3)]:
            a, b = x[i], x[j]
            eye = np.eye(d)
            gx = np.array([(k(a + 1e-6 * e, b) - k(a - 1e-6 * e, b)) / 2e-6 for e in eye])
            gy = np.array([(k(a, b + 1e-6 * e) - k(a, b - 1e-6 * e)) / 2e-6 for e in eye])
            hh = 1e-4
            trxy = sum((k(a + hh * e, b + hh * e) - k(a + hh * e, b - hh * e) - k(a - hh * e, b + hh * e)
                        + k(a - hh * e, b - hh * e)) / (4 * hh * hh) for e in eye)
            np.testing.assert_allclose(T[0, i, j], s[i] @ s[j] * k(a, b), rtol=1e-12)
            np.testing.assert_allclose(T[1, i, j], s[i] @ gy, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(T[2, i, j], s[j] @ gx, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(T[3, i, j] + T[4, i, j], trxy, rtol=1e-5, atol=1e-8)
            # the d part is d times the part of one coordinate's second difference at r = 0
            q = cc * cc + np.sum((a - b) ** 2)
            assert T[4, i, j] == pytest.approx(-2 * beta * d * q ** (beta - 1), rel=1e-14)
