r"""Hyvärinen (2005), §3 example 1: the ISM estimator of a Gaussian is closed form.

For the model :math:`s(x) = -P(x-\mu)` the empirical ISM objective (eq. (3))

.. math:: \hat J(\mu, P) = -\operatorname{tr}P + \tfrac12\operatorname{tr}(P^2 S)
          + \tfrac12(\bar x-\mu)^\top P^2(\bar x-\mu)

is minimised by :math:`\mu = \bar x` and :math:`P = S^{-1}` with :math:`S` the
*biased* sample covariance: score matching gives the maximum-likelihood estimate
here.  We minimise :math:`\hat J` numerically (L-BFGS on refscore's
hand-derived gradient, a real fit), compare with the closed form, and show that
the error against the true parameters falls as :math:`n^{-1/2}`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from refscore import losses
from refscore.distributions import Gaussian
from refscore.models import GaussianModel

from .common import check_row, save_figure

NAME = "hyvarinen"
TITLE = "ISM on a Gaussian = sample mean and inverse sample covariance"
SOURCE = "Hyvärinen 2005, §3 ex. 1 (eq. 3 of seed)"

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

    rng = np.random.default_rng(seed)
    dist = Gaussian(MEAN, COV)
    true_prec = np.linalg.inv(COV)
    model = GaussianModel(3)
    ns = [100, 300, 1000, 3000, 10000] if quick else [100, 300, 1000, 3000, 10000, 30000, 100000]
    reps = 4 if quick else 10

    fit_gap, grad_at_cf, err = [], [], []
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
            e_n.append(np.linalg.norm(prec - true_prec) / np.linalg.norm(true_prec)
                       + np.linalg.norm(xbar - MEAN))
        err.append(np.mean(e_n))
    err = np.array(err)
    slope = np.polyfit(np.log(ns), np.log(err), 1)[0]

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(ns, err, "o-", label="ISM estimate: error vs truth (mean of %d)" % reps)
    ax.loglog(ns, err[0] * (np.array(ns) / ns[0]) ** -0.5, "k--", label=r"$n^{-1/2}$")
    ax.set_xlabel("n samples")
    ax.set_ylabel(r"$\|\hat P-P\|_F/\|P\|_F + \|\hat\mu-\mu\|$")
    ax.set_title(f"Hyvärinen: ISM fit of a 3-D Gaussian (slope {slope:.2f})")
    ax.legend()
    fig_path = save_figure(fig, fig_dir, NAME)

    return [
        check_row(NAME, "max |grad ISM| at (x̄, S⁻¹)", max(grad_at_cf), "0", SOURCE, "1e-10",
                  max(grad_at_cf) <= 1e-10, fig_path),
        check_row(NAME, "L-BFGS fit vs closed form (max rel. gap)", max(fit_gap), "0", SOURCE,
                  "1e-6 (optimiser tolerance)", max(fit_gap) <= 1e-6, fig_path),
        check_row(NAME, "log-log slope of error vs n", slope, "-0.5", "CLT for the MLE",
                  "±0.15", abs(slope + 0.5) <= 0.15, fig_path),
    ]
