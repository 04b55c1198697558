r"""An MLP score model learns a 2-D Gaussian mixture with ISM, DSM and SSM-VR.

``MLPScore(2, hidden, "tanh")`` is trained by Adam (``refscore.training.fit``) on
samples of :math:`p = 0.5\,N((-2,0), I) + 0.5\,N((2,0), I)` with each of

* ISM, eq. (3) (exact Hessian trace, Hyvärinen 2005);
* DSM at small σ, eq. (6) (Vincent 2011) — learns :math:`\nabla\log p_\sigma`;
* SSM-VR with one Rademacher projection, eq. (7) (Song et al. 2019).

Measured: the Fisher divergence :math:`\tfrac12 E_p\|s_\theta - \nabla\log p\|^2`
(population ESM by Gauss–Hermite quadrature, no Monte Carlo), the learned vs true
score field, and ULA samples drawn with the *learned* score compared with exact
samples by MMD and KSD (the KSD uses the true score).  Reference levels: the
Glorot initialisation, and the best single Gaussian (moment matched,
:math:`N(0,\operatorname{diag}(5,1))`), a linear score that cannot see the two modes.

Mixing proportions are the weak spot of score matching: between separated modes
the density is small, so the Fisher divergence barely penalises a score error
there, yet that error sets the relative mass of the modes (Wenliang & Kanagawa
2020, "Blindness of score-based methods to isolated components and mixing
proportions").  We saw it here: DSM fits with Fisher divergence 0.02 put mode
weights 0.34/0.66 when Adam ended noisily (lr 5e-3, batch 512); with lr 2e-3 and
batch 1024 the weights come out within a few hundredths of 0.5/0.5.  The MMD
row, with its mode weights, is what catches it; the Fisher divergence and KSD do
not.

The figure puts the true score field and exact samples in the first column and,
beside them, each learned field (over a map of its error
:math:`\|s_\theta - \nabla\log p\|`) and its Langevin samples (over the true
density's contours), so nothing learned is drawn on top of the truth.
"""
from __future__ import annotations

import copy

import numpy as np

from refscore.distributions import Gaussian, GaussianMixture
from refscore.metrics import ksd, mmd, mode_weights
from refscore.models import MLPScore
from refscore.quadrature import expectation
from refscore.sampling import ula
from refscore.training import fit

from . import common
from .common import check_row, progress, save_figure, style

NAME = "mlp_mixture"
TITLE = "MLP score model trained by ISM, DSM, SSM-VR on a 2-D mixture"
TARGET = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2)] * 2)
BEST_GAUSSIAN = Gaussian([0.0, 0.0], np.diag([5.0, 1.0]))
#: RBF bandwidth of the MMD: the components' scale. The median heuristic (≈3 here) is set
#: by the mode separation and blurs the two modes into one blob.
MMD_BANDWIDTH = 1.0
RUNS = (
    ("ism", {}, "Hyvärinen 2005 (seed (3))"),
    ("dsm", {"sigma": 0.2}, "Vincent 2011 (seed (6))"),
    ("ssm_vr", {"projection": "rademacher"}, "Song et al. 2019 (seed (7))"),
)


def fisher_divergence(score_fn) -> float:
    """½ E_p‖s − ∇log p‖² by quadrature (order 64 per axis: converged to ~1e-8 here)."""
    return float(expectation(lambda z: 0.5 * np.sum((score_fn(z) - TARGET.score(z)) ** 2, axis=1),
                             TARGET, order=64))


def langevin_samples(target, n, seed, step=0.01, n_steps=3000):
    """ULA from N(0, 9 I): independent chains, one sample each (KSD/MMD need iid points)."""
    x0 = np.random.default_rng(seed).normal(scale=3.0, size=(n, 2))
    # the sampler's own bar on a terminal (its steps), unless --no-progress
    r = ula(target, x0, step, n_steps, seed=seed, backend="numba",
            progress=None if common.PROGRESS else False)
    if np.any(r.diverged):
        raise RuntimeError(f"{np.count_nonzero(r.diverged)} Langevin chains diverged")
    return r.x


def ticking(model, bar):
    """The same model, advancing ``bar`` once per loss-and-gradient pass (one Adam step of ``fit``).

    ``fit`` has no callback; every gradient of a loss goes through the model's
    ``_fused_terms`` seam (refscore.models.base), so a subclass that counts those
    calls shows the training's progress without changing a number.
    """
    class Ticking(type(model)):
        def _fused_terms(self, *args, **kw):
            bar.update(1)
            return super()._fused_terms(*args, **kw)

    Ticking.__name__ = type(model).__name__
    m = copy.copy(model)
    m.__class__ = Ticking
    return m


def run(quick: bool, seed: int, fig_dir):
    style()
    n_data, steps, hidden = (4000, 2000, (16, 16)) if quick else (20000, 4000, (32, 32))
    n_chains = 2000 if quick else 4000
    data = TARGET.sample(n_data, rng=seed)
    model = MLPScore(2, hidden, "tanh")
    init_fd = fisher_divergence(lambda z: model.score(model.init(seed), z))
    gauss_fd = fisher_divergence(BEST_GAUSSIAN.score)
    exact = TARGET.sample(n_chains, rng=seed + 1)
    gauss_x = BEST_GAUSSIAN.sample(n_chains, rng=seed + 2)
    mmd_gauss = mmd(gauss_x, exact, bandwidth=MMD_BANDWIDTH)
    ksd_gauss = ksd(gauss_x, TARGET.score)
    # the sampler's own discretisation bias, with the exact score and the same step
    ula_bar = progress(desc="mlp_mixture: ULA runs (exact score, then each learned score)",
                       total=1 + len(RUNS), unit="run")
    x_exact_ula = langevin_samples(TARGET, n_chains, seed + 3)
    ula_bar.update(1)
    mmd_exact_ula = mmd(x_exact_ula, exact, bandwidth=MMD_BANDWIDTH)

    rows, learned = [], {}
    for loss, kw, source in RUNS:
        # lr 2e-3 with batch 1024: a noisier Adam end-point (lr 5e-3, batch 512) leaves the
        # Fisher divergence small but can tilt the mode weights by 0.1-0.2 (module docstring)
        with progress(desc=f"mlp_mixture: fit {loss}", total=steps, unit="Adam step") as bar:
            res = fit(ticking(model, bar), loss, data, steps=steps, lr=2e-3, batch=1024, rng=seed, **kw)
        bound = model.bind(res.theta)
        fd = fisher_divergence(bound.score)
        xs = langevin_samples(bound, n_chains, seed + 4)
        ula_bar.update(1)
        m, k = mmd(xs, exact, bandwidth=MMD_BANDWIDTH), ksd(xs, TARGET.score)
        w = mode_weights(xs, TARGET.means)
        learned[loss] = (bound, fd, xs, m, k, res.history)
        rows += [
            check_row(NAME, f"{loss}: Fisher divergence ½E‖s_θ − ∇log p‖² (quadrature)", fd,
                      f"< best Gaussian {gauss_fd:.3g}; init {init_fd:.3g}", source, "< 0.15",
                      fd < 0.15),
            check_row(NAME, f"{loss}: MMD² (learned-score ULA vs exact; mode weights "
                      f"{w[0]:.3f}/{w[1]:.3f})", m, f"exact-score ULA: {mmd_exact_ula:.2g}",
                      "Gretton et al. 2012 (unbiased MMD², RBF h=1)",
                      f"< ¼ best Gaussian's {mmd_gauss:.3g}", m < mmd_gauss / 4),
            check_row(NAME, f"{loss}: KSD² of learned-score ULA samples (true score)", k,
                      "≈ 0", "Gorham & Mackey 2017 (IMQ KSD)",
                      f"< ½ best Gaussian's {ksd_gauss:.3g}", k < ksd_gauss / 2),
        ]

    ula_bar.close()

    fig = plot(learned, exact, hidden, init_fd, gauss_fd)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows


def plot(learned, exact, hidden, init_fd, gauss_fd):
    """True field and exact samples (left column) beside each learned field and its ULA samples."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ncol = 1 + len(RUNS)
    fig, axes = plt.subplots(2, ncol, figsize=(3.7 * ncol + 0.8, 7.0), layout="constrained")
    g = np.linspace(-5, 5, 13)
    gx, gy = np.meshgrid(g, g[1:-1])
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    true = TARGET.score(pts)
    fine = np.linspace(-5.5, 5.5, 177)
    fx, fy = np.meshgrid(fine, fine[fine.size // 10: -(fine.size // 10)])
    fpts = np.column_stack([fx.ravel(), fy.ravel()])
    dens = np.exp(TARGET.logpdf(fpts)).reshape(fx.shape)
    levels = dens.max() * np.array([0.05, 0.25, 0.6])
    # one arrow scale for every field panel: the longest true arrow spans 1.3 grid cells
    scale = np.max(np.linalg.norm(true, axis=1)) / (1.3 * (g[1] - g[0]))
    qkw = dict(angles="xy", scale_units="xy", scale=scale, width=0.005)
    norm = LogNorm(1e-2, 1e1)

    def frame(ax, xlim=(-5.5, 5.5), ylim=(-4.5, 4.5)):
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")

    ax = axes[0, 0]
    ax.contour(fx, fy, dens, levels=levels, colors="C0", linewidths=1)
    ax.quiver(pts[:, 0], pts[:, 1], true[:, 0], true[:, 1], color="k", **qkw)
    ax.set_title("true ∇log p\n(blue: density contours)")
    frame(ax)
    ax = axes[1, 0]
    ax.scatter(exact[:, 0], exact[:, 1], s=2, color="0.35", alpha=0.35, rasterized=True)
    ax.contour(fx, fy, dens, levels=levels, colors="C0", linewidths=1)
    ax.set_title("exact samples")
    frame(ax)
    img = None
    for j, (loss, *_rest) in enumerate(RUNS, start=1):
        bound, fd, xs, m, k, hist = learned[loss]
        s = bound.score(pts)
        err = np.linalg.norm(bound.score(fpts) - TARGET.score(fpts), axis=1).reshape(fx.shape)
        ax = axes[0, j]
        img = ax.imshow(np.clip(err, 1e-2, 1e1), origin="lower", cmap="Oranges", norm=norm, alpha=0.6,
                        extent=(fine[0], fine[-1], fy[0, 0], fy[-1, 0]), interpolation="nearest")
        ax.contour(fx, fy, dens, levels=levels, colors="C0", linewidths=1)
        ax.quiver(pts[:, 0], pts[:, 1], s[:, 0], s[:, 1], color="k", **qkw)
        ax.set_title(f"{loss}: learned s_θ\nFisher divergence {fd:.3g}")
        frame(ax)
        ax = axes[1, j]
        w = mode_weights(xs, TARGET.means)
        ax.scatter(xs[:, 0], xs[:, 1], s=2, color="C3", alpha=0.35, rasterized=True)
        ax.contour(fx, fy, dens, levels=levels, colors="C0", linewidths=1)
        ax.set_title(f"ULA with learned s_θ: weights {w[0]:.2f}/{w[1]:.2f}\nMMD² {m:.2g}, KSD² {k:.2g}",
                     fontsize=10)
        frame(ax)
    fig.colorbar(img, ax=axes[0, :], shrink=0.9, label="‖s_θ − ∇log p‖ (background)")
    fig.suptitle(f"MLPScore{hidden} tanh on 0.5 N((−2,0),I) + 0.5 N((2,0),I): same arrow scale in "
                 f"every panel; init Fisher {init_fd:.3g}, best Gaussian {gauss_fd:.3g}")
    return fig
