r"""Song, Garg, Shi & Ermon (2019): sliced score matching — variance and cost.

**Variance.** At one point with :math:`A = \nabla_x s_\theta(x)` and
:math:`s = s_\theta(x)`, one projection gives the estimators

.. math:: \hat J_{SSM}(v) = v^\top A v + \tfrac12 (v^\top s)^2 = v^\top B v,\quad
          B = A + \tfrac12 s s^\top, \qquad
          \hat J_{VR}(v) = v^\top A v + \tfrac12\|s\|^2,

both unbiased for ISM when :math:`E[vv^\top] = I` (eq. (7)).  The variance
of a quadratic form :math:`v^\top C v` depends only on :math:`C_s = (C + C^\top)/2`:

* Gaussian v: :math:`2\|C_s\|_F^2`;
* Rademacher v: :math:`2(\|C_s\|_F^2 - \sum_i C_{ii}^2)`;
* sphere v = √d·u, u uniform on :math:`S^{d-1}`: with
  :math:`E[u_iu_ju_ku_l] = (\delta_{ij}\delta_{kl}+\delta_{ik}\delta_{jl}+\delta_{il}\delta_{jk})/(d(d+2))`,
  :math:`E[(u^\top C_s u)^2] = ((\operatorname{tr}C)^2 + 2\|C_s\|_F^2)/(d(d+2))`, so
  :math:`\operatorname{Var} = d^2 E[(u^\top C_s u)^2] - (\operatorname{tr} C)^2
  = 2(d\|C_s\|_F^2 - (\operatorname{tr}C)^2)/(d+2)`.

With M projections per point the variance is divided by M.  SSM uses C = B,
SSM-VR uses C = A.

**Cost, counted.** The exact ISM trace carries d forward tangents through the
network (``trace_path="forward"``); SSM and SSM-VR carry one tangent per
projection, M of them, whatever d — the reason sliced score matching scales
(Song et al. 2019, §3).  We count multiply-adds, not seconds: the products with
the weight matrices, per point, for the loss and its gradient, read off the
model's layer sizes :math:`(n_0 = d, h_1, \dots, h_k, n_{L} = d)`.  With
:math:`F = \sum_l n_l n_{l-1}` (one forward pass) and the reverse of every
product costing two products (weight gradient and adjoint),

.. math:: C_{ISM} = \underbrace{3F}_{\text{forward + backprop}} + \underbrace{3\,r\,F_r}_{r\text{ tangents}},
          \qquad C_{SSM} = 3F + 3MF,

where the forward path has r = d tangents through :math:`F_r = F`, so
:math:`C_{ISM}/C_{SSM} = (1+d)/(1+M)` exactly, although F itself grows with d.
The cyclic path (``"auto"`` when :math:`h_1 < d`) carries :math:`h_1` tangents
through :math:`W_2, \dots, W_{L-1}, M = W_1W_L` (:math:`F_r = \sum_{l=2}^{L-1}
n_l n_{l-1} + h_1 h_k`, independent of d; forming M is once per batch, not
counted); the one- and two-hidden-layer closed form needs no tangents at all.
Elementwise work (:math:`O(r\sum h_l)` per point) is not counted.  Wall-clock
timings of the same losses are in ``refscore bench``.
"""
from __future__ import annotations

import numpy as np

from refscore import losses
from refscore.models import MLPScore

from .common import check_row, progress, save_figure, style

NAME = "sliced"
TITLE = "Sliced score matching: estimator variance and counted cost"
SOURCE = "Song et al. 2019, §3 (eq. (7))"
KINDS = ("gaussian", "rademacher", "sphere")


def quadratic_form_variance(C: np.ndarray, kind: str) -> float:
    """Closed-form variance of vᵀCv for one projection v with E[vvᵀ] = I (see module docstring)."""
    d = C.shape[0]
    Cs = 0.5 * (C + C.T)
    fro2 = np.sum(Cs**2)
    if kind == "gaussian":
        return 2 * fro2
    if kind == "rademacher":
        return 2 * (fro2 - np.sum(np.diag(C) ** 2))
    if kind == "sphere":
        return 2 * (d * fro2 - np.trace(C) ** 2) / (d + 2)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def empirical_variance(model, theta, x, kind, M, R, rng, vr):
    """Variance over R repetitions of the M-projection estimator at the single point x."""
    xs = np.repeat(x[None, :], R, axis=0)
    v = losses.projections(rng, (M, R, x.size), kind=kind)
    f = losses.ssm_vr if vr else losses.ssm
    vals = f(model, theta, xs, v, reduction="none")
    dev2 = (vals - vals.mean()) ** 2
    return dev2.mean() * R / (R - 1), dev2.std() / np.sqrt(R)



# ----------------------------------------------------------------------------- counted cost
def weight_shapes(model) -> list[tuple[int, int]]:
    """``(out, in)`` of the weight matrices W_1 … W_L, from the model's layer sizes."""
    n = model.sizes
    return [(n[l + 1], n[l]) for l in range(len(n) - 1)]


def resolved_trace_path(model) -> str:
    """The exact-trace route the model takes (``trace_path`` with ``"auto"`` resolved as MLPScore does)."""
    if model.trace_path != "auto":
        return model.trace_path
    if len(model.sizes) - 1 <= 3:
        return "fast"
    return "cyclic" if model.hidden[0] < model.dim else "forward"


def tangent_chain(model, path: str) -> tuple[int, list[tuple[int, int]]]:
    """``(r, shapes)``: the exact trace carries r tangents through matrices of these shapes.

    forward: the d input tangents through W_1, …, W_L; cyclic: h_1 tangents through
    W_2, …, W_{L-1} and M = W_1 W_L (h_1 × h_k); fast (closed form): no tangents.
    """
    shapes = weight_shapes(model)
    if path == "forward":
        return model.dim, shapes
    if path == "cyclic":
        return model.hidden[0], shapes[1:-1] + [(model.hidden[0], model.hidden[-1])]
    if path == "fast":
        return 0, []
    raise ValueError(f"unknown trace path {path!r}")


def _macs(shapes) -> int:
    return sum(o * i for o, i in shapes)


def ism_cost(model, path: str | None = None) -> int:
    """Multiply-adds per point of ISM's loss + gradient: 3F + 3·r·F_r (module docstring)."""
    path = path or resolved_trace_path(model)
    F = _macs(weight_shapes(model))
    if path == "fast":  # closed form: O(h_1 h_2) per point for the trace and its two adjoints
        h = model.hidden
        return 3 * F + 3 * (h[0] * h[1] if len(h) == 2 else h[0])
    r, chain = tangent_chain(model, path)
    return 3 * F + 3 * r * _macs(chain)


def ssm_cost(model, n_projections: int = 1) -> int:
    """Multiply-adds per point of SSM / SSM-VR's loss + gradient: 3F + 3·M·F (one JVP per projection)."""
    F = _macs(weight_shapes(model))
    return 3 * F + 3 * n_projections * F


def cost_table(dims, hidden=(64, 64, 64), n_projections=1):
    """Per d: (ISM forward path, ISM auto path, SSM-VR) multiply-adds per point (Python ints)."""
    out = []
    for d in dims:
        fwd = MLPScore(d, hidden=hidden, activation="tanh", trace_path="forward")
        auto = MLPScore(d, hidden=hidden, activation="tanh")
        out.append((ism_cost(fwd), ism_cost(auto), ssm_cost(fwd, n_projections)))
    return out


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    rng = np.random.default_rng(seed)
    d = 5
    model = MLPScore(d, hidden=(16, 16), activation="tanh")
    theta = model.init(rng)
    x = rng.normal(size=d)
    A = model.score_jacobian(theta, x)
    s = model.score(theta, x)
    B = A + 0.5 * np.outer(s, s)
    Ms = (1, 2, 4, 8, 16)
    R = 20_000 if quick else 100_000
    rows = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    worst = 0.0
    bar = progress(desc="sliced: estimator variances", total=len(KINDS) * 2 * len(Ms), unit="est")
    for j, kind in enumerate(KINDS):
        for vr, C, ls in ((False, B, "-"), (True, A, "--")):
            label = ("SSM-VR" if vr else "SSM") + f", {kind}"
            meas, pred = [], []
            for M in Ms:
                var, se = empirical_variance(model, theta, x, kind, M, R, rng, vr)
                bar.update(1)
                p = quadratic_form_variance(C, kind) / M
                meas.append(var)
                pred.append(p)
                # 5 standard errors of the sample variance, estimated from the same draws
                z = abs(var - p) / se
                worst = max(worst, z)
            axes[0].loglog(Ms, pred, ls, color=f"C{j}", alpha=0.6)
            axes[0].loglog(Ms, meas, "o", color=f"C{j}", mfc="none" if vr else f"C{j}", label=label)
    bar.close()
    rows.append(check_row(NAME, "max |measured − closed-form variance| / SE over kinds × M × {SSM, VR}",
                          worst, "0", SOURCE + "; quadratic-form moments", "5 SE", worst <= 5))
    axes[0].set_xlabel("projections per point M")
    axes[0].set_ylabel("variance of the estimator at one point")
    axes[0].set_title("Variance: markers measured, lines closed form\n"
                      "(filled SSM, open SSM-VR)")
    axes[0].legend(fontsize=8, ncol=2)

    # cost, counted: exact ISM (d tangents on the forward path) vs SSM-VR with M = 1 projection
    from fractions import Fraction

    hidden, M = (64, 64, 64), 1
    dims = (2, 5, 10, 20, 50, 100, 200)
    table = cost_table(dims, hidden, M)
    ism_fwd = np.array([t[0] for t in table], float)
    ism_auto = np.array([t[1] for t in table], float)
    ssm = np.array([t[2] for t in table], float)
    ratios = [Fraction(t[0], t[2]) for t in table]
    expected = [Fraction(dd + 1, M + 1) for dd in dims]
    exact = ratios == expected
    big = np.array(dims) >= 10
    logd = np.log(np.array(dims)[big])
    slope_ratio = np.polyfit(logd, np.log(np.array([float(r) for r in ratios])[big]), 1)[0]
    r100 = float(ratios[dims.index(100)])
    src = SOURCE + "; multiply-adds counted from the layer sizes"
    rows += [
        check_row(NAME, f"ISM/SSM-VR multiply-adds per point (loss + grad, forward-path trace, "
                  f"MLP{hidden}, M={M}), d = {', '.join(map(str, dims))}",
                  ", ".join(f"{float(r):g}" for r in ratios), "(1+d)/(1+M): d tangents vs M",
                  src, "exact (integer counts)", exact),
        check_row(NAME, "log-log slope of the counted ISM/SSM-VR ratio in d (d ≥ 10)", slope_ratio,
                  "→ 1 (d tangents vs M)", src, "> 0.9", slope_ratio > 0.9),
        check_row(NAME, "counted ISM/SSM-VR ratio at d=100", r100, "≫ 1", src, "> 5", r100 > 5),
    ]
    ax = axes[1]
    ax.loglog(dims, ism_fwd, "o-", color="C0", label="ISM, forward path (d tangents)")
    ax.loglog(dims, ism_auto, "^--", color="C2",
              label=f"ISM, auto path (cyclic: h₁ = {hidden[0]} tangents once d > h₁)")
    ax.loglog(dims, ssm, "s-", color="C1", label=f"SSM-VR, M = {M} projection")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("multiply-adds per point (loss + gradient)")
    ax.set_title(f"Counted cost, MLP{hidden} tanh")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.loglog(dims, [float(r) for r in ratios], "o", color="C0", ms=7,
              label="ISM (forward path) / SSM-VR, counted")
    ax.loglog(dims, ism_auto / ssm, "^", color="C2", label="ISM (auto path) / SSM-VR, counted")
    dd = np.geomspace(dims[0], dims[-1], 100)
    ax.loglog(dd, (1 + dd) / (1 + M), "k-", lw=1, label="(1 + d) / (1 + M)")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("cost ratio ISM / SSM-VR")
    ax.set_title(f"Ratio (slope {slope_ratio:.2f} for d ≥ 10)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
