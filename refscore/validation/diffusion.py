r"""Diffusion samplers with the exact denoiser: exact laws against samples, orders, mixture mode weights.

Every sampler of :data:`refscore.diffusion.SAMPLERS` is run with the exact denoiser
(:class:`refscore.diffusion.Denoiser`) and refscore's counter noise.

* **Exact law vs samples** (VP schedule, a coarse 9-step grid from :math:`t = 1` to 0, started from the exact
  marginal): on Gaussian data every sampler's output is Gaussian with the law of
  :func:`refscore.diffusion.output_law`, an affine recursion carrying the noise the stochastic samplers add
  (docs/diffusion.md §6.3).  The means and covariances of the samples must lie within 4.5 standard errors
  of it; a negative control (DDPM with the forward step's variance against the law of the posterior's) must
  not.  The histograms show the first coordinate: the samples, the exact output law, and the data law it
  approaches as the grid refines.  pc's corrector step sizes come from score_sde's snr rule in a pilot run
  and are then fixed, so that its law is exact.
* **Orders** (EDM schedule, Karras grid): :math:`W_2` between the exact output law and the data law
  (docs/diffusion.md §6.6) against the number of steps; the slope over 100–400 steps is each sampler's
  order (Euler, DDIM, DDPM, Euler ancestral and pc 1; Heun, with or without churn at
  :math:`S_{\rm noise} = 1`, and DPM-Solver++(2M) 2).  pc's Langevin corrector takes the step
  :math:`0.1(\sigma_i^2 - \sigma_{i+1}^2)`, which vanishes as the grid refines.
* **Mode weights** (2-D mixture :math:`0.3\,N((-2, 0), 0.25I) + 0.7\,N((2, 0.5), 0.25I)`, EDM schedule,
  started from the exact marginal at :math:`\sigma = 80`): the fraction of samples nearest to the first mode
  approaches 0.3 as the grid refines; at the finest grid it must be within 4.5 binomial standard errors.
  pf_ode (DOP853, rtol = atol = 1e-8) is the grid-free reference: the deterministic samplers, run from the
  same starts, converge to its value, and their common offset from 0.3 is the sampling error of the starts.
"""
from __future__ import annotations

import numpy as np

from refscore.diffusion import EDM, VP, Denoiser
from refscore.diffusion.samplers import SAMPLERS, output_distances, output_law, output_map, sample
from refscore.distributions import Gaussian, GaussianMixture
from refscore.metrics import mode_weights
from refscore.noise import normal

from .common import check_row, progress, save_figure, style

NAME = "diffusion"
TITLE = "Diffusion samplers: exact laws, orders, mode weights"
SOURCE = "docs/diffusion.md §6"

DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
MIX = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 0.5]], [np.eye(2) * 0.25, np.eye(2) * 0.25])
CHURN = {"S_churn": 10.0, "S_tmin": 0.01, "S_tmax": 50.0, "S_noise": 1.0}
Z_MAX = 4.5

#: (label, sampler, options) of the law and mode-weight panels
SHOWN = [
    ("euler", "euler", {}), ("heun", "heun", {}), ("heun + churn", "heun", CHURN), ("ddim", "ddim", {}),
    ("ddim η=0.5", "ddim", {"eta": 0.5}), ("ddpm", "ddpm", {}), ("euler_ancestral", "euler_ancestral", {}),
    ("dpmpp_2m", "dpmpp_2m", {}), ("pc", "pc", {}), ("pf_ode", "pf_ode", {"rtol": 1e-8, "atol": 1e-8}),
]


#: one look per sampler in every panel: (colour, marker, line style); the samplers that coincide on EDM
#: (ddim = euler, euler_ancestral = ddpm) are drawn dashed with open markers over their twins
LOOK = {"euler": ("C0", "o", "-"), "heun": ("C1", "s", "-"), "heun + churn": ("C2", "^", "-"),
        "ddim": ("C3", "o", "--"), "ddpm": ("C4", "D", "-"), "euler_ancestral": ("C5", "D", "--"),
        "dpmpp_2m": ("C6", "v", "--"), "pc": ("C7", "P", "-")}


def _plot(ax, x, y, label, text=None):
    c, m, ls = LOOK[label]
    hollow = ls == "--"
    ax.plot(x, y, marker=m, ls=ls, color=c, ms=7 if hollow else 5, mfc="none" if hollow else c, lw=1.6,
            label=text or label)


def _z_max(out, mean, cov):
    """Largest |z| of the sample means and covariance entries against the exact law (Gaussian standard errors)."""
    n = out.shape[0]
    z_mean = (out.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    z_cov = ((np.cov(out.T) - cov) / se)[np.triu_indices(cov.shape[0])]
    return float(max(np.abs(z_mean).max(), np.abs(z_cov).max()))


def law_vs_samples(n, seed, tick=None):
    """Per shown sampler: ``(label, samples, (mean, cov))`` on VP's 9-step grid; and the negative control's largest
    absolute z statistic."""
    vp = VP()
    grid = np.append(np.linspace(1.0, 1e-3, 9), 0.0)
    den = Denoiser(DATA, vp)
    m0 = vp.alpha(1.0) * DATA.mean
    c0 = vp.alpha(1.0) ** 2 * DATA.cov + vp.sigma(1.0) ** 2 * np.eye(2)
    x = m0 + normal(seed, np.arange(n), 2 ** 32 - 1, 2) @ np.linalg.cholesky(c0).T
    out = []
    for label, name, opts in SHOWN:
        opts = dict(opts)
        if name == "pc":  # score_sde's snr rule in a pilot run (another seed), then those step sizes fixed
            opts["step_size"] = sample("pc", den, vp, x, grid, seed=seed + 1, record=True).info["step_size"]
        got = sample(name, den, vp, x, grid, seed=seed + 2, **opts)
        out.append((label, got, output_law(name, vp, grid, DATA, init=(m0, c0), **opts)))
        if tick:
            tick()
    wrong = sample("ddpm", den, vp, x, grid, seed=seed + 2, variance="large")
    control = _z_max(wrong, *output_law("ddpm", vp, grid, DATA, init=(m0, c0)))
    return out, control


ORDER_SHOWN = [("euler", "euler", {}), ("heun", "heun", {}), ("heun + churn", "heun", CHURN),
               ("ddim", "ddim", {}), ("ddpm", "ddpm", {}), ("euler_ancestral", "euler_ancestral", {}),
               ("dpmpp_2m", "dpmpp_2m", {}), ("pc", "pc", {})]


def _pc_steps(grid):
    return np.array([[0.1 * (grid[i] ** 2 - grid[i + 1] ** 2)] for i in range(len(grid) - 1)])


def order_curves(steps):
    """Per sampler: W2(exact output law, data law) on EDM's Karras grid of each step count."""
    edm = EDM()
    curves = {}
    for label, name, opts in ORDER_SHOWN:
        errs = []
        for n in steps:
            grid = edm.grid(n)
            o = dict(opts, step_size=_pc_steps(grid)) if name == "pc" else opts
            errs.append(output_distances(name, edm, grid, DATA, **o).w2)
        curves[label] = (name, np.array(errs))
    return curves


def mode_weight_runs(n, steps, seed, tick=None):
    """Per shown sampler: the weight of the first mode after runs of each step count (pf_ode: one run)."""
    edm = EDM()
    den = Denoiser(MIX, edm)
    x = MIX.sample(n, rng=seed) + 80.0 * normal(seed, np.arange(n), 2 ** 32 - 2, 2)  # the exact marginal
    out = {}
    for label, name, opts in SHOWN:
        if name == "ddim" and opts:
            continue
        counts = [None] if name == "pf_ode" else steps
        ws = []
        for k in counts:
            grid = [80.0, 0.0] if k is None else edm.grid(k)
            ws.append(mode_weights(sample(name, den, edm, x, grid, seed=seed + 3, **opts), MIX.means)[0])
            if tick:
                tick()
        out[label] = np.array(ws)
    return out


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    style()
    n_law = 4_000 if quick else 40_000
    n_mode = 2_000 if quick else 10_000
    mode_steps = (16, 32, 64) if quick else (16, 32, 64, 128, 256)
    order_steps = (25, 50, 100, 200, 400)
    rows = []
    n_runs = len(SHOWN) + (len(SHOWN) - 2) * len(mode_steps) + 1
    bar = progress(desc="diffusion: sampler runs", total=n_runs, unit="run")
    laws, control = law_vs_samples(n_law, seed, tick=lambda: bar.update(1))
    for label, got, (m, C) in laws:
        z = _z_max(got, m, C)
        rows.append(check_row(NAME, f"{label}: samples vs exact output law, max |z| of means and covariances "
                              f"(VP, 9 steps, {n_law} chains)", z, "0 (the law is exact)", "docs/diffusion.md §6.3",
                              f"< {Z_MAX}", z < Z_MAX))
    rows.append(check_row(NAME, "negative control: ddpm 'large' samples vs the law of 'small', max |z|", control,
                          "far outside", "docs/diffusion.md §6.5", "> 10", control > 10))
    # pf_ode against the closed-form flow map (its law): the integrator's tolerance
    edm = EDM()
    xs = normal(seed, np.arange(200), 7, 2) * 80.0
    A, b, _ = output_map("pf_ode", edm, [80.0, 0.0], DATA)
    got = sample("pf_ode", Denoiser(DATA, edm), edm, xs, [80.0, 0.0])
    dev = float(np.abs(got - (xs @ A.T + b)).max() / np.abs(xs @ A.T + b).max())
    rows.append(check_row(NAME, "pf_ode (DOP853, rtol = atol = 1e-10): max relative deviation from the exact flow "
                          "map (200 chains, sigma 80 -> 0)", dev, "0", "docs/diffusion.md §6.4", "< 1e-8", dev < 1e-8))

    curves = order_curves(order_steps)
    fit = np.array([i for i, k in enumerate(order_steps) if k >= 100])
    slopes = {}
    for label, (name, errs) in curves.items():
        slope = -np.polyfit(np.log(np.asarray(order_steps)[fit]), np.log(errs[fit]), 1)[0]
        slopes[label] = slope
        order = SAMPLERS[name].order
        rows.append(check_row(NAME, f"{label}: order from the exact laws (slope of log W2 vs log steps, EDM Karras "
                              f"grid, 100-400 steps)", slope, f"{order}", "docs/diffusion.md §6.4",
                              f"±{0.15 * order:.2g}", abs(slope - order) < 0.15 * order))

    weights = mode_weight_runs(n_mode, mode_steps, seed, tick=lambda: bar.update(1))
    bar.close()
    se = np.sqrt(0.3 * 0.7 / n_mode)
    for label, ws in weights.items():
        k = "pf_ode" if label == "pf_ode" else f"{mode_steps[-1]} steps"
        dev = abs(ws[-1] - 0.3)
        rows.append(check_row(NAME, f"{label}: weight of mode 1 ({k}, EDM, {n_mode} chains)", ws[-1], "0.3",
                              "mixture weight; the PF-ODE and reverse SDE carry the marginals", f"±{Z_MAX * se:.2g} "
                              f"({Z_MAX} SE)", dev < Z_MAX * se))

    # ---------------------------------------------------------------- figure
    fig = plt.figure(figsize=(17, 13.5))
    gs = GridSpec(3, 10, figure=fig, height_ratios=[1, 1, 1.7], hspace=0.5, wspace=1.1, top=0.9)
    grid_x = np.linspace(-2.2, 3.8, 300)

    def pdf(x, m, v):
        return np.exp(-0.5 * (x - m) ** 2 / v) / np.sqrt(2 * np.pi * v)

    for j, (label, got, (m, C)) in enumerate(laws):
        ax = fig.add_subplot(gs[j // 5, 2 * (j % 5):2 * (j % 5) + 2])
        ax.hist(got[:, 0], bins=50, range=(grid_x[0], grid_x[-1]), density=True, color="0.75", label="samples")
        ax.plot(grid_x, pdf(grid_x, m[0], C[0, 0]), color="C3", lw=2, label="exact output law")
        ax.plot(grid_x, pdf(grid_x, DATA.mean[0], DATA.cov[0, 0]), color="k", ls="--", lw=1.2, label="data law")
        ax.set_title(f"{label}\nmax |z| = {_z_max(got, m, C):.2f}", fontsize=10)
        ax.set_yticks([])
        if j == 0:
            ax.legend(fontsize=7.5, loc="upper left", frameon=False)
        if j // 5 == 1:
            ax.set_xlabel("first coordinate")
    fig.text(0.5, 0.95, f"Exact output law vs {n_law} samples, VP schedule, 9 steps from the exact marginal at t = 1",
             ha="center", fontsize=11)
    ax = fig.add_subplot(gs[2, :5])
    for label, (name, errs) in curves.items():
        _plot(ax, order_steps, errs, label, f"{label}: slope {slopes[label]:.2f}")
    ref = np.asarray(order_steps, float)
    top = max(e[0] for _, e in curves.values())
    bottom = min(e[0] for _, e in curves.values())
    ax.plot(ref, 0.3 * top * (ref / ref[0]) ** -1.0, "k:", lw=1, label="slope 1")
    ax.plot(ref, 0.3 * bottom * (ref / ref[0]) ** -2.0, "k-.", lw=1, label="slope 2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("steps (EDM Karras grid)")
    ax.set_ylabel("W2(exact output law, data law)")
    ax.set_title("Order of each sampler from its exact law\n(ddim = euler and euler_ancestral = ddpm on EDM)")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax = fig.add_subplot(gs[2, 5:])
    ax.axhspan(0.3 - 2 * se, 0.3 + 2 * se, color="0.88", label=f"0.3 ± 2 SE ({n_mode} chains)")
    ax.axhline(0.3, color="k", lw=1)
    for label, ws in weights.items():
        if label == "pf_ode":
            ax.axhline(ws[0], color="k", ls=(0, (1, 3)), lw=1.5, label="pf_ode (adaptive, no grid)")
        else:
            _plot(ax, mode_steps, ws, label)
    ax.set_xscale("log")
    ax.set_xticks(mode_steps)
    ax.set_xticklabels([str(k) for k in mode_steps])
    ax.minorticks_off()
    ax.set_xlabel("steps (EDM Karras grid)")
    ax.set_ylabel("weight of mode 1")
    ax.set_title("Mode weights of a 2-D mixture (true 0.3), exact denoiser,\nfrom the exact marginal at sigma = 80")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.suptitle("Diffusion samplers with the exact denoiser: exact laws (top), orders and mode weights (bottom)",
                 y=0.985, fontsize=13)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
