r"""Hyvärinen (2005), §3 example 1: the ISM estimator of a Gaussian is closed form.

For the model :math:`s(x) = -P(x-\mu)` the empirical ISM objective (eq. (3))

.. math:: \hat J(\mu, P) = -\operatorname{tr}P + \tfrac12\operatorname{tr}(P^2 S)
          + \tfrac12(\bar x-\mu)^\top P^2(\bar x-\mu)

is minimised by :math:`\mu = \bar x` and :math:`P = S^{-1}` with :math:`S` the
*biased* sample covariance: score matching gives the maximum-likelihood estimate
here.  We minimise :math:`\hat J` numerically (L-BFGS on refscore's
hand-derived gradient, a real fit), compare with the closed form, and show that
the error against the true parameters falls as :math:`n^{-1/2}`.  The figure
shows both halves: per fit, the gap between the L-BFGS result and the closed
form and the ISM gradient at the closed form (log scale, tolerances and the
round-off level marked), and the error against the truth vs n.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from refscore import losses
from refscore.distributions import Gaussian
from refscore.models import GaussianModel

from .common import EPS, check_row, progress, save_figure, style

NAME = "hyvarinen"
TITLE = "ISM on a Gaussian = sample mean and inverse sample covariance"
SOURCE = "Hyvärinen 2005, §3 ex. 1; eq. (3)"

MEAN = np.array([1.0, -0.5, 2.0])
COV = np.array([[2.0, 0.6, 0.3], [0.6, 1.0, -0.2], [0.3, -0.2, 0.5]])


def fit_ism(x: np.ndarray) -> np.ndarray:
    """Minimise the empirical ISM of ``GaussianModel`` by L-BFGS from theta = (0, I)."""
    model = GaussianModel(x.shape[1])

    def fun(theta):
        return losses.ism(model, theta, x, grad=True)

    res = minimize(fun, model.init(), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-13, "ftol": 1e-15, "maxiter": 5000})
    return res.x


def closed_form(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and inverse *biased* sample covariance."""
    xbar = x.mean(axis=0)
    S = np.cov(x, rowvar=False, bias=True)
    return xbar, np.linalg.inv(S)


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    rng = np.random.default_rng(seed)
    dist = Gaussian(MEAN, COV)
    true_prec = np.linalg.inv(COV)
    model = GaussianModel(3)
    ns = [100, 300, 1000, 3000, 10000] if quick else [100, 300, 1000, 3000, 10000, 30000, 100000]
    reps = 4 if quick else 10

    fit_gap, grad_at_cf, err, n_of = [], [], [], []
    bar = progress(desc="hyvarinen: L-BFGS fits", total=len(ns) * reps, unit="fit")
    for n in ns:
        e_n = []
        for _ in range(reps):
            x = dist.sample(n, rng=rng)
            xbar, prec = closed_form(x)
            theta_cf = GaussianModel.theta_from(xbar, prec)
            _, g = losses.ism(model, theta_cf, x, grad=True)
            grad_at_cf.append(np.max(np.abs(g)))
            mu_fit, L_fit = model.unpack(fit_ism(x))
            P_fit = L_fit @ L_fit.T
            fit_gap.append(max(np.max(np.abs(mu_fit - xbar)) / (1 + np.max(np.abs(xbar))),
                               np.max(np.abs(P_fit - prec)) / np.max(np.abs(prec))))
            n_of.append(n)
            e_n.append(np.linalg.norm(prec - true_prec) / np.linalg.norm(true_prec)
                       + np.linalg.norm(xbar - MEAN))
            bar.update(1)
        err.append(np.mean(e_n))
    bar.close()
    err = np.array(err)
    slope = np.polyfit(np.log(ns), np.log(err), 1)[0]

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    jitter = np.exp(np.tile(np.linspace(-0.08, 0.08, reps), len(ns)))  # spread the reps of one n
    ax.loglog(np.array(n_of) * jitter, fit_gap, "o", color="C0", mfc="none", ms=7,
              label="L-BFGS fit vs closed form (max rel. gap)")
    ax.loglog(np.array(n_of) / jitter, grad_at_cf, "s", color="C3", ms=5,
              label="max |∇ISM| at (x̄, S⁻¹)")
    ax.axhline(1e-6, color="C0", ls="--", lw=1.2, label="tolerance of the fit gap (1e-6, optimiser)")
    ax.axhline(1e-10, color="C3", ls="--", lw=1.2, label="tolerance of the gradient (1e-10)")
    ax.axhline(EPS, color="0.4", ls=":", lw=1.2, label="round-off ε = 2.2e-16")
    ax.set_ylim(1e-17, 1e-3)
    ax.set_xlabel("n samples")
    ax.set_ylabel("gap / gradient (each marker one fit)")
    ax.set_title("ISM minimiser = (x̄, S⁻¹): sample mean,\ninverse biased sample covariance")
    ax.legend(fontsize=8, loc="upper left", ncol=1)
    ax = axes[1]
    ax.loglog(ns, err, "o-", label=f"ISM estimate: error vs truth (mean of {reps})")
    ax.loglog(ns, err[0] * (np.array(ns) / ns[0]) ** -0.5, "k--", label=r"$n^{-1/2}$")
    ax.set_xlabel("n samples")
    ax.set_ylabel(r"$\|\hat P-P\|_F/\|P\|_F + \|\hat\mu-\mu\|$")
    ax.set_title(f"Error against the truth falls as n^(−1/2)\n(fitted slope {slope:.2f})")
    ax.legend()
    fig.suptitle("Hyvärinen 2005: ISM fit of a 3-D Gaussian")
    fig.tight_layout()
    fig_path = save_figure(fig, fig_dir, NAME)

    return [
        check_row(NAME, "max |grad ISM| at (x̄, S⁻¹)", max(grad_at_cf), "0", SOURCE, "1e-10",
                  max(grad_at_cf) <= 1e-10, fig_path),
        check_row(NAME, "L-BFGS fit vs closed form (max rel. gap)", max(fit_gap), "0", SOURCE,
                  "1e-6 (optimiser tolerance)", max(fit_gap) <= 1e-6, fig_path),
        check_row(NAME, "log-log slope of error vs n", slope, "-0.5", "CLT for the MLE",
                  "±0.15", abs(slope + 0.5) <= 0.15, fig_path),
    ]
