r"""ESM, ISM, DSM and sliced SM differ by constants in θ (population values by quadrature).

Along a path :math:`\theta(t)` through parameter space we evaluate the population
losses exactly (Gauss–Hermite for x, enumeration of the :math:`2^d` Rademacher
vectors for v) and subtract the predicted constants:

* :math:`J_{ESM} - J_{ISM} = \tfrac12 E_p\|\nabla\log p\|^2`   (Hyvärinen 2005, Thm 1; seed (2)–(3));
* :math:`E_v J_{SSM} = E_v J_{SSM\text{-}VR} = J_{ISM}`           (Song et al. 2019, eq. (7));
* :math:`J_{DSM}(\sigma) - J_{ESM}(p_\sigma) = \tfrac12(d/\sigma^2 - E_{p_\sigma}\|\nabla\log p_\sigma\|^2)`
  (Vincent 2011, seed (5)–(6)), and :math:`J_{ESM}(p_\sigma)\to J_{ESM}(p)` as σ → 0.

The shifted curves must coincide to round-off (≤ 1e-10) for ESM/ISM/SSM/DSM(p_σ);
the DSM → ESM(p) gap must shrink like σ².  The figure shows, per model, the
shifted curves, their residuals against the exact identity on a log scale with
the round-off level marked (the DSM residual sits at ε·C(σ), the round-off of
the constant d/(2σ²) it subtracts), and the σ² gap.
"""
from __future__ import annotations

import numpy as np

from refscore.distributions import Gaussian
from refscore.models import GaussianModel, LinearScore
from refscore.quadrature import expectation, population_loss

from .common import EPS, check_row, log_with_zeros, progress, save_figure, style, zero_marker_proxy

NAME = "equivalence"
TITLE = "Population ESM, ISM, DSM, SSM, SSM-VR differ by constants"

TARGET = Gaussian(np.array([0.5, -1.0]), np.array([[1.5, 0.4], [0.4, 0.8]]))


def path(model, t, rng_seed=1):
    """A smooth path θ(t) = θ₀ + sin(πt)·a + t·b through parameter space."""
    r = np.random.default_rng(rng_seed)
    theta0 = model.init(r)
    a, b = r.normal(size=(2, model.n_params)) * 0.4
    return theta0 + np.sin(np.pi * t) * a + t * b


def n_evaluations(ts, sigmas) -> int:
    """Population losses :func:`curves` evaluates (for a progress bar)."""
    return len(ts) * (4 + 2 * len(sigmas))


def curves(model, ts, sigmas, tick=None):
    """Population ESM, ISM, E_v SSM, E_v SSM-VR along θ(t), and DSM(σ), ESM(p_σ) per σ.

    ``tick()``, when given, is called after each population loss (a progress bar).
    """
    def loss(*args, **kw):
        v = population_loss(*args, **kw)
        if tick is not None:
            tick()
        return v

    esm = np.array([loss("esm", model, path(model, t), TARGET) for t in ts])
    ism = np.array([loss("ism", model, path(model, t), TARGET) for t in ts])
    ssm = np.array([loss("ssm", model, path(model, t), TARGET, projection="rademacher") for t in ts])
    ssm_vr = np.array([loss("ssm_vr", model, path(model, t), TARGET, projection="rademacher")
                       for t in ts])
    dsm = {s: np.array([loss("dsm", model, path(model, t), TARGET, sigma=s) for t in ts])
           for s in sigmas}
    esm_s = {s: np.array([loss("esm", model, path(model, t), TARGET.noised(s)) for t in ts])
             for s in sigmas}
    return esm, ism, ssm, ssm_vr, dsm, esm_s


def dsm_constant(sigma, d=None):
    """C(σ) = ½(d/σ² − E_{p_σ}‖∇log p_σ‖²) for the module's target."""
    d = TARGET.dim if d is None else d
    ps = TARGET.noised(sigma)
    return 0.5 * (d / sigma**2 - expectation(lambda x: np.sum(ps.score(x) ** 2, axis=1), ps))


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    d = TARGET.dim
    ts = np.linspace(0.0, 1.0, 11 if quick else 41)
    sigmas = [0.3, 0.1, 0.03, 0.01]
    fisher = 0.5 * expectation(lambda x: np.sum(TARGET.score(x) ** 2, axis=1), TARGET)
    consts = {s: dsm_constant(s, d) for s in sigmas}
    models = (GaussianModel(d), LinearScore(d))
    rows = []
    fig = plt.figure(figsize=(16, 9))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.15], hspace=0.3, wspace=0.3)
    ax_gap = fig.add_subplot(grid[:, 2])
    sig_colors = ["#08306b", "#6a51a3", "#c51b8a", "#8c2d04"][:len(sigmas)]  # apart from C0-C3
    floor = 1e-18
    bar = progress(desc="equivalence: population losses by quadrature",
                   total=len(models) * n_evaluations(ts, sigmas), unit="loss")
    for col, model in enumerate(models):
        name = type(model).__name__
        esm, ism, ssm, ssm_vr, dsm, esm_s = curves(model, ts, sigmas, tick=lambda: bar.update(1))
        res_ism = np.abs((esm - fisher) - ism) / np.max(np.abs(esm))
        res_ssm = np.abs(ssm - ism) / np.max(np.abs(ism))
        res_vr = np.abs(ssm_vr - ism) / np.max(np.abs(ism))
        res_dsm = {s: np.abs((dsm[s] - consts[s]) - esm_s[s]) / np.max(np.abs(esm_s[s])) for s in sigmas}
        dev_ism = res_ism.max()
        dev_ssm = max(res_ssm.max(), res_vr.max())
        dev_dsm = max(r.max() for r in res_dsm.values())
        gap = [np.max(np.abs(esm_s[s] - esm)) for s in sigmas]
        gap_slope = np.polyfit(np.log(sigmas), np.log(gap), 1)[0]
        src = "Hyvärinen 2005 Thm 1; eq. (2) = (3)+C"
        rows += [
            check_row(NAME, f"{name}: max rel dev (ESM − ½E‖∇log p‖²) vs ISM", dev_ism, "0", src,
                      "1e-10", dev_ism <= 1e-10),
            check_row(NAME, f"{name}: max rel dev E_v SSM, SSM-VR vs ISM (2^d enumeration)", dev_ssm,
                      "0", "Song et al. 2019 eq. (7)", "1e-10", dev_ssm <= 1e-10),
            check_row(NAME, f"{name}: max rel dev DSM(σ) − C(σ) vs ESM(p_σ), σ∈{sigmas}", dev_dsm,
                      "0", "Vincent 2011 §4.2; eq. (5) = (6)+C", "1e-10", dev_dsm <= 1e-10),
            check_row(NAME, f"{name}: slope of |ESM(p_σ) − ESM(p)| vs σ", gap_slope, "2",
                      "p_σ = p * N(0,σ²I): O(σ²) perturbation", "±0.2", abs(gap_slope - 2) <= 0.2),
        ]

        # top: the shifted curves (they coincide: that is the claim; markers keep each visible)
        ax = fig.add_subplot(grid[0, col])
        s_last = sigmas[-1]
        every = max(1, len(ts) // 10)
        ax.plot(ts, esm - fisher, "k-", lw=5, alpha=0.25, label="ESM − ½E‖∇log p‖²")
        ax.plot(ts, ism, "C0o", ms=7, mfc="none", markevery=(0, every), label="ISM")
        ax.plot(ts, ssm, "C1s", ms=5, markevery=(every // 3, every), label="E_v SSM (Rademacher, exact)")
        ax.plot(ts, ssm_vr, "C2^", ms=5, markevery=(2 * every // 3, every), label="E_v SSM-VR")
        ax.plot(ts, dsm[s_last] - consts[s_last] - fisher, "C3-", lw=1.2,
                label=f"DSM(σ={s_last}) − C(σ) − ½E‖∇log p‖²")
        ax.set_title(f"{name} along θ(t), target N(μ, Σ) in 2-D")
        ax.set_xlabel("t")
        ax.set_ylabel("population loss, shifted")
        if col == 1:  # the curve is high in the middle here: room at the bottom
            ax.legend(fontsize=8, loc="lower center", title="both panels", title_fontsize=8)

        # bottom: residuals against the exact identity, log scale, round-off marked
        ax = fig.add_subplot(grid[1, col])
        zl = None
        log_with_zeros(ax, ts, res_ism, floor, color="k", marker="o", ms=4, ls="-",
                       label="ESM − ½E‖∇log p‖² − ISM", zero_label=zl)
        log_with_zeros(ax, ts, res_ssm, floor, color="C1", marker="s", ms=4, ls="-",
                       label="E_v SSM − ISM", zero_label=zl)
        log_with_zeros(ax, ts, res_vr, floor, color="C2", marker="^", ms=4, ls="-",
                       label="E_v SSM-VR − ISM", zero_label=zl)
        for s, c in zip(sigmas, sig_colors):
            log_with_zeros(ax, ts, res_dsm[s], floor, color=c, ls="-", lw=1.8,
                           label=f"DSM − C(σ) − ESM(p_σ), σ = {s}", zero_label=zl)
            # round-off of subtracting the constant C(σ) ≈ d/(2σ²)
            ax.axhline(EPS * consts[s] / np.max(np.abs(esm_s[s])), color=c, ls=":", lw=1.2)
        ax.plot([], [], ":", color="0.3", label="round-off of C(σ): ε·C(σ) / max ESM(p_σ)")
        ax.axhline(EPS, color="0.4", ls="--", lw=1.2, label="round-off ε = 2.2e-16")
        ax.axhline(1e-10, color="r", ls="-", lw=1, label="tolerance 1e-10")
        zero_marker_proxy(ax)
        ax.set_ylim(floor, 1e-9)
        ax.set_xlabel("t")
        ax.set_ylabel("|residual| / max |loss|")
        ax.set_title(f"{name}: residuals vs the exact identity")
        if col == 0:
            res_handles = ax.get_legend_handles_labels()

        ax_gap.loglog(sigmas, gap, "o-" if col == 0 else "s-", color=f"C{col}", ms=7,
                      label=f"{name}: |ESM(p_σ) − ESM(p)| (slope {gap_slope:.2f})")
        ax_gap.loglog(sigmas, gap[-1] * (np.array(sigmas) / sigmas[-1]) ** 2, ":", color=f"C{col}",
                      label="∝ σ² (through the smallest σ)")
    bar.close()
    ax_gap.set_xlabel("σ")
    ax_gap.set_ylabel("max over t of |ESM(p_σ) − ESM(p)|")
    ax_gap.set_title("DSM → ESM(p): the gap shrinks as σ²")
    ax_gap.set_ylim(top=ax_gap.get_ylim()[1] * 12)  # room for the legend above the points
    ax_gap.legend(fontsize=8, loc="upper left")
    fig.legend(*res_handles, loc="upper center", bbox_to_anchor=(0.37, 0.04), ncol=3, fontsize=8,
               frameon=False)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
