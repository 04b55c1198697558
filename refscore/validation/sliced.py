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

**Cost.** The exact ISM trace costs d forward-tangent passes; SSM needs one
JVP whatever d — the reason sliced score matching scales (Song et al. 2019, §3).
Each pass itself costs O(n(d·h + h²)), so the measured ratio ISM/SSM, not SSM's
own time, is what stays ∝ d.
"""
from __future__ import annotations

import time

import numpy as np

from refscore import losses
from refscore.models import MLPScore

from .common import check_row, save_figure

NAME = "sliced"
TITLE = "Sliced score matching: estimator variance and cost"
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


def time_loss_grad(fn, repeats=3):
    fn()  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    worst = 0.0
    for j, kind in enumerate(KINDS):
        for vr, C, ls in ((False, B, "-"), (True, A, "--")):
            label = ("SSM-VR" if vr else "SSM") + f", {kind}"
            meas, pred = [], []
            for M in Ms:
                var, se = empirical_variance(model, theta, x, kind, M, R, rng, vr)
                p = quadratic_form_variance(C, kind) / M
                meas.append(var)
                pred.append(p)
                # 5 standard errors of the sample variance, estimated from the same draws
                z = abs(var - p) / se
                worst = max(worst, z)
            axes[0].loglog(Ms, pred, ls, color=f"C{j}", alpha=0.6)
            axes[0].loglog(Ms, meas, "o", color=f"C{j}", mfc="none" if vr else f"C{j}", label=label)
    rows.append(check_row(NAME, "max |measured − closed-form variance| / SE over kinds × M × {SSM, VR}",
                          worst, "0", SOURCE + "; quadratic-form moments", "5 SE", worst <= 5))
    axes[0].set_xlabel("projections per point M")
    axes[0].set_ylabel("variance of the estimator at one point")
    axes[0].set_title("markers: measured; lines: closed form")
    axes[0].legend(fontsize=7)

    # cost: exact ISM (O(d) tangent passes) vs SSM with one projection (one JVP)
    dims = (5, 10, 20, 50, 100) if quick else (2, 5, 10, 20, 50, 100)
    n = 1_000 if quick else 5_000
    t_ism, t_ssm = [], []
    for dd in dims:
        # the generic exact trace: d forward tangents (the 1-2 layer closed form and the
        # cyclic h1-width route are faster special cases; see MLPScore.trace_path)
        m = MLPScore(dd, hidden=(64, 64, 64), activation="tanh", trace_path="forward")
        th = m.init(rng)
        xx = rng.normal(size=(n, dd))
        vv = losses.projections(rng, (n, dd), kind="rademacher")
        t_ism.append(time_loss_grad(lambda: losses.ism(m, th, xx, grad=True)))
        t_ssm.append(time_loss_grad(lambda: losses.ssm_vr(m, th, xx, vv, grad=True)))
    t_ism, t_ssm = np.array(t_ism), np.array(t_ssm)
    big = np.array(dims) >= 10
    logd = np.log(np.array(dims)[big])
    slope_ism = np.polyfit(logd, np.log(t_ism[big]), 1)[0]
    slope_ratio = np.polyfit(logd, np.log(t_ism[big] / t_ssm[big]), 1)[0]
    axes[1].loglog(dims, t_ism * 1e3, "o-", label=f"ISM exact trace (slope {slope_ism:.2f})")
    axes[1].loglog(dims, t_ssm * 1e3, "s-", label="SSM-VR, 1 projection")
    axes[1].loglog(dims, t_ism / t_ssm, "k:", label=f"ratio ISM/SSM (slope {slope_ratio:.2f})")
    axes[1].set_xlabel("d")
    axes[1].set_ylabel(f"loss + grad time, n={n} (ms); ratio")
    axes[1].set_title("MLP (64,64,64) tanh, forward-tangent trace: d passes vs 1", fontsize=9)
    axes[1].legend(fontsize=8)
    fig_path = save_figure(fig, fig_dir, NAME)
    # Each pass costs O(n(d·h + h²)) for both losses, so SSM's cost also grows once d ≳ h;
    # what sliced SM removes is the factor d in the NUMBER of passes: the ratio grows ∝ d.
    rows += [
        check_row(NAME, "ISM cost slope in d (d ≥ 10)", slope_ism, "≈1 (d tangent passes)", SOURCE,
                  "> 0.5", slope_ism > 0.5),
        check_row(NAME, "slope of ISM/SSM cost ratio in d (d ≥ 10)", slope_ratio,
                  "≈1 (d passes vs one JVP)", SOURCE, "> 0.5", slope_ratio > 0.5),
        check_row(NAME, "ISM/SSM cost ratio at d=100", t_ism[-1] / t_ssm[-1], "≫ 1", SOURCE,
                  "> 5", t_ism[-1] / t_ssm[-1] > 5),
    ]
    for r in rows:
        r.figure = fig_path
    return rows
