r"""ULA is biased at finite step; MALA is not.

The unadjusted Langevin algorithm (eq. (4)), :math:`x' = x + \eta\nabla\log p(x)
+ \sqrt{2\eta}\,z`, on :math:`p = N(\mu,\Sigma)` is the linear recursion
:math:`x' - \mu = (I - \eta\Lambda)(x-\mu) + \sqrt{2\eta}z` with :math:`\Lambda=\Sigma^{-1}`.
Its stationary covariance C solves :math:`C = (I-\eta\Lambda)C(I-\eta\Lambda) + 2\eta I`,
whose solution is

.. math:: C(\eta) = (\Lambda - \eta\Lambda^2/2)^{-1},

which exceeds Σ by :math:`O(\eta)` (stable for η < 2 λ_min(Σ)).  MALA adds a
Metropolis–Hastings correction and leaves p exactly invariant.  We run many
chains from exact draws of p and compare the across-chain covariance with C(η)
and with Σ.
"""
from __future__ import annotations

import numpy as np

from refscore.distributions import Gaussian
from refscore.sampling import mala, ula

from .common import check_row, progress, save_figure, style

NAME = "ula_bias"
TITLE = "ULA stationary covariance vs step; MALA removes the bias"
SOURCE = "ULA linear recursion (Roberts & Tweedie 1996); docs/derivations.md §8.2"

MEAN = np.array([1.0, -1.0])
COV = np.array([[1.0, 0.5], [0.5, 2.0]])


def ula_stationary_cov(cov: np.ndarray, step: float) -> np.ndarray:
    """C(η) = (Λ − ηΛ²/2)⁻¹ with Λ = Σ⁻¹ (module docstring)."""
    lam = np.linalg.inv(cov)
    return np.linalg.inv(lam - step * lam @ lam / 2)


def cov_z(samples: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute z-score of the sample covariance entries against ``expected``.

    For x ~ N(m, C), Var(x_i x_j) = C_ii C_jj + C_ij², so the sample covariance
    entry has standard error sqrt((C_ii C_jj + C_ij²)/N).
    """
    n = samples.shape[0]
    S = np.cov(samples, rowvar=False)
    diag = np.diag(expected)
    se = np.sqrt((np.outer(diag, diag) + expected**2) / n)
    return float(np.max(np.abs(S - expected) / se))


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    dist = Gaussian(MEAN, COV)
    n_chains = 20_000 if quick else 100_000
    n_steps = 400 if quick else 1000
    steps = (0.05, 0.1, 0.2, 0.4, 0.6)
    x0 = dist.sample(n_chains, rng=seed)
    rows = []
    ula_var, mala_var, worst_ula, worst_mala, accept = [], [], 0.0, 0.0, []
    bar = progress(desc=f"ula_bias: ULA and MALA runs ({n_chains} chains × {n_steps} steps)",
                   total=2 * len(steps) + 1, unit="run")
    for i, eta in enumerate(steps):
        r_ula = ula(dist, x0, eta, n_steps, seed=seed + 10 * i, backend="numba")
        bar.update(1)
        r_mala = mala(dist, x0, eta, n_steps, seed=seed + 10 * i + 1, backend="numba")
        bar.update(1)
        for r in (r_ula, r_mala):
            if np.any(r.diverged):
                raise RuntimeError(f"{np.count_nonzero(r.diverged)} chains diverged at step {eta}")
        C = ula_stationary_cov(COV, eta)
        worst_ula = max(worst_ula, cov_z(r_ula.x, C))
        worst_mala = max(worst_mala, cov_z(r_mala.x, COV))
        ula_var.append(np.cov(r_ula.x, rowvar=False)[1, 1])
        mala_var.append(np.cov(r_mala.x, rowvar=False)[1, 1])
        accept.append(float(np.mean(r_mala.accept_rate)))
    # negative control: at the largest step the ULA covariance is far from Σ
    bias_z = cov_z(ula(dist, x0, steps[-1], n_steps, seed=seed + 99, backend="numba").x, COV)
    bar.close()
    rows += [
        check_row(NAME, f"ULA cov vs (Λ−ηΛ²/2)⁻¹, max |z| over η∈{steps}", worst_ula, "0", SOURCE,
                  "5 SE", worst_ula <= 5),
        check_row(NAME, "MALA cov vs Σ, max |z| over the same η", worst_mala, "0",
                  "MALA exactness (Roberts & Tweedie 1996)", "5 SE", worst_mala <= 5),
        check_row(NAME, f"negative control: ULA cov vs Σ at η={steps[-1]} (|z|)", bias_z, "≫ 5",
                  SOURCE, "> 10", bias_z > 10),
    ]
    grid = np.linspace(0, max(steps) * 1.05, 100)
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    ax.plot(grid, [ula_stationary_cov(COV, g)[1, 1] for g in grid], "k-",
            label=r"closed form $[(\Lambda-\eta\Lambda^2/2)^{-1}]_{22}$")
    ax.plot(steps, ula_var, "o", label=f"ULA, {n_chains} chains × {n_steps} steps")
    ax.plot(steps, mala_var, "s", label="MALA (acceptance " + ", ".join(f"{a:.2f}" for a in accept) + ")")
    ax.axhline(COV[1, 1], color="gray", ls="--", label=r"$\Sigma_{22}$ (target)")
    ax.set_xlabel(r"step $\eta$ in $x+\eta s+\sqrt{2\eta}z$")
    ax.set_ylabel(r"stationary Var$(x_2)$")
    ax.set_title("ULA bias on a 2-D Gaussian")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
