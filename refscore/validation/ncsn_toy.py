r"""Song & Ermon (2019), Fig. 3: annealed Langevin recovers mixture weights, plain Langevin does not.

Target :math:`p = 0.8\,N((5,5), I) + 0.2\,N((-5,-5), I)`, chains started uniform on
:math:`[-8,8]^2`.  Plain Langevin with the exact score sends each chain to the mode
of its starting basin, so both modes get about half the chains: the weights are
wrong.  Annealed Langevin (NCSN Algorithm 1) runs Langevin on the noised laws
:math:`p_{\sigma_i} = p * N(0,\sigma_i^2 I)` for σ geometric from 20 to 1 (10 levels),
where the modes overlap and mass moves between them, with the exact noised
mixture scores.

Step-size convention: refscore writes every update as :math:`x + \eta s + \sqrt{2\eta}z`
(eq. (4)).  NCSN's Algorithm 1 writes :math:`x + \tfrac{\alpha_i}{2}s + \sqrt{\alpha_i}z`
with :math:`\alpha_i = \epsilon\sigma_i^2/\sigma_L^2`; so :math:`\eta_i = \alpha_i/2` and NCSN's
ε = 0.1 is refscore's step = 0.05.  (Toy code that writes :math:`x + (lr/2)s + \sqrt{lr}z`
has lr = α.)  With 100 steps per level the residual bias of the weights is about
0.015; it shrinks with more steps per level, shown here.
"""
from __future__ import annotations

import numpy as np

from refscore.conventions import ncsn_step
from refscore.distributions import GaussianMixture
from refscore.metrics import mode_weights
from refscore.sampling import annealed_langevin, ula

from .common import check_row, progress, save_figure, style

NAME = "ncsn_toy"
TITLE = "Annealed Langevin recovers mixture weights (NCSN toy)"
SOURCE = "Song & Ermon 2019, §4.3 and Fig. 3"

WEIGHTS = np.array([0.2, 0.8])
MEANS = np.array([[-5.0, -5.0], [5.0, 5.0]])
TARGET = GaussianMixture(WEIGHTS, MEANS, np.stack([np.eye(2)] * 2))
SIGMAS = np.geomspace(20.0, 1.0, 10)
STEP = ncsn_step(0.1)  # NCSN ε = 0.1  →  refscore step 0.05


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    n = 5_000 if quick else 20_000
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-8, 8, size=(n, 2))
    per_level = (100, 300) if quick else (100, 300, 1000)
    bar = progress(desc=f"ncsn_toy: plain and annealed Langevin ({n} chains)", total=1 + len(per_level),
                   unit="run")
    plain = ula(TARGET, x0, STEP, 1000, seed=seed, backend="numba")
    bar.update(1)
    w_plain = mode_weights(plain.x, MEANS)
    w_ann = {}
    results = {}
    for T in per_level:
        r = annealed_langevin(TARGET.perturbed(), x0, SIGMAS, STEP, T, seed=seed + T, backend="numba")
        if np.any(r.diverged):
            raise RuntimeError(f"{np.count_nonzero(r.diverged)} annealed chains diverged")
        results[T] = r
        w_ann[T] = mode_weights(r.x, MEANS)
        bar.update(1)
    bar.close()
    se = np.sqrt(0.8 * 0.2 / n)  # binomial standard error of a weight estimate
    err100 = abs(w_ann[100][1] - 0.8)
    errs = [abs(w_ann[T][1] - 0.8) for T in per_level]
    rows = [
        check_row(NAME, "plain Langevin (1000 steps): weight of (5,5)", w_plain[1], "≠ 0.8 (≈0.5)",
                  SOURCE, "|w − 0.8| > 0.1", abs(w_plain[1] - 0.8) > 0.1),
        check_row(NAME, "annealed, 100 steps/level: weight of (5,5)", w_ann[100][1], "0.8", SOURCE,
                  "±0.03", err100 <= 0.03),
        check_row(NAME, f"annealed, {per_level[-1]} steps/level: |w − 0.8|", errs[-1],
                  f"< bias at 100 steps ({err100:.3f})", "residual bias shrinks with T",
                  f"≤ {err100:.3f} + 2 SE", errs[-1] <= err100 + 2 * se),
    ]
    exact = TARGET.sample(n, rng=rng)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    panels = [
        (exact, f"exact samples: w = {mode_weights(exact, MEANS)[1]:.3f}"),
        (plain.x, f"Langevin, 1000 steps: w = {w_plain[1]:.3f}"),
        (results[100].x, f"annealed, 10 levels × 100: w = {w_ann[100][1]:.3f}"),
    ]
    for ax, (pts, title) in zip(axes, panels):
        ax.scatter(pts[:2000, 0], pts[:2000, 1], s=2, alpha=0.5)
        ax.set_title(title + "\n(w = weight of the (5,5) mode, exact 0.8)", fontsize=9)
        ax.set_xlim(-9, 9)
        ax.set_ylim(-9, 9)
        ax.set_aspect("equal")
    fig.suptitle("NCSN toy: x + η s + √(2η) z, η = 0.05 (NCSN ε = 0.1); "
                 + ", ".join(f"T={T}: |w−0.8|={e:.3f}" for T, e in zip(per_level, errs)), fontsize=9)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
