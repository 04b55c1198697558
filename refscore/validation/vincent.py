r"""Vincent (2011): DSM at noise level σ learns the score of :math:`p_\sigma = p * N(0,\sigma^2 I)`.

For Gaussian data :math:`N(\mu,\Sigma)` and the model :math:`s(x) = -P(x-m)`, the
population DSM objective (eq. (6), with :math:`\varepsilon = \sigma z`)

.. math:: J_{DSM}(\theta) = \tfrac12 E_{x,z}\|s_\theta(x+\sigma z) + z/\sigma\|^2
          = J_{ESM}(\theta; p_\sigma) + C(\sigma)

is minimised at :math:`m = \mu`, :math:`P^{-1} = \Sigma + \sigma^2 I` — the
*noised* covariance, not Σ.  We minimise (a) the exact population DSM by
quadrature and (b) the empirical DSM on n samples with one noise draw each, and
compare the learned covariance :math:`P^{-1}` with :math:`\Sigma + \sigma^2 I` and Σ.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from refscore import losses
from refscore.distributions import Gaussian
from refscore.models import GaussianModel
from refscore.quadrature import population_loss

from .common import check_row, progress, save_figure, style

NAME = "vincent"
TITLE = "DSM learns the noised score"
SOURCE = "Vincent 2011, §4.2 (eq. (5)–(6))"

MEAN = np.array([0.0, 1.0])
COV = np.array([[1.0, 0.6], [0.6, 0.7]])
SIGMAS = (0.1, 0.3, 1.0)


def _fit(fun_grad, theta0, tick=None):
    if tick is not None:  # one tick per objective-and-gradient evaluation (a progress bar)
        inner = fun_grad

        def fun_grad(th):
            tick()
            return inner(th)

    res = minimize(fun_grad, theta0, jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000})
    return res.x


def learned_cov(model, theta):
    _, L = model.unpack(theta)
    return np.linalg.inv(L @ L.T)


def fit_population(model, dist, sigma, tick=None):
    """Minimise the exact population DSM; gradient from quadrature of the hand-derived gradient."""
    return _fit(lambda th: population_loss("dsm", model, th, dist, sigma=sigma, grad=True), model.init(),
                tick)


def fit_empirical(model, x, z, sigma, tick=None):
    return _fit(lambda th: losses.dsm(model, th, x, sigma, z, grad=True), model.init(), tick)


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    style()
    rng = np.random.default_rng(seed)
    dist = Gaussian(MEAN, COV)
    model = GaussianModel(2)
    n, m = (20_000, 10) if quick else (100_000, 20)  # data points, noise draws per point
    lam_max = np.linalg.eigvalsh(COV)[-1]
    rows = []
    fig, axes = plt.subplots(1, len(SIGMAS), figsize=(4 * len(SIGMAS), 4))

    def ellipse(ax, cov, **kw):
        vals, vecs = np.linalg.eigh(cov)
        ang = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
        ax.add_patch(Ellipse(MEAN, 4 * np.sqrt(vals[1]), 4 * np.sqrt(vals[0]), angle=ang,
                             fill=False, **kw))

    # L-BFGS's iteration count is not known in advance: the bar counts objective evaluations
    bar = progress(desc="vincent: DSM objective evaluations (L-BFGS)", unit="eval")
    tick = lambda: bar.update(1)  # noqa: E731
    for ax, sigma in zip(axes, SIGMAS):
        target = COV + sigma**2 * np.eye(2)
        bar.set_postfix_str(f"σ={sigma}, population")
        pop_cov = learned_cov(model, fit_population(model, dist, sigma, tick))
        pop_err = np.max(np.abs(pop_cov - target)) / np.max(np.abs(target))
        x = np.repeat(dist.sample(n, rng=rng), m, axis=0)
        z = rng.standard_normal(x.shape)
        bar.set_postfix_str(f"σ={sigma}, empirical n={n}×{m}")
        emp_cov = learned_cov(model, fit_empirical(model, x, z, sigma, tick))
        emp_err = np.linalg.norm(emp_cov - target) / np.linalg.norm(target)
        wrong = np.linalg.norm(emp_cov - COV) / np.linalg.norm(COV)
        expected_wrong = np.linalg.norm(sigma**2 * np.eye(2)) / np.linalg.norm(COV)
        # Standard error of the learned covariance, relative: the data part ≈ sqrt(2/n)
        # (sample covariance), the regression of -z/σ on x+σz adds ≈ sqrt(λ_max)/(σ sqrt(nm))
        # (1-D: SE(β)/β = s/(σ sqrt(N))). Tolerance = 5 such standard errors.
        tol = 5 * (np.sqrt(2 / n) + np.sqrt(lam_max) / (sigma * np.sqrt(n * m)))
        rows += [
            check_row(NAME, f"σ={sigma}: population DSM minimiser P⁻¹ vs Σ+σ²I (max rel)", pop_err,
                      "0", SOURCE, "1e-7 (optimiser)", pop_err <= 1e-7),
            check_row(NAME, f"σ={sigma}: empirical DSM (n={n}×{m} noise) P⁻¹ vs Σ+σ²I (rel Frob.)", emp_err,
                      "0", SOURCE, f"{tol:.2g} (≈5 SE)", emp_err <= tol),
        ]
        if expected_wrong > 3 * tol:  # resolvable at this n: the learned law is visibly not p
            rows.append(check_row(NAME, f"σ={sigma}: learned P⁻¹ vs Σ (rel Frob., should be far)",
                                  wrong, f"{expected_wrong:.3g}", SOURCE, f"> {tol:.2g}",
                                  wrong > tol))
        ellipse(ax, COV, color="k", ls="--", label="Σ (data)")
        ellipse(ax, target, color="C0", lw=3, alpha=0.5, label="Σ + σ²I")
        ellipse(ax, emp_cov, color="C3", label="learned by DSM")
        ax.set_xlim(-4, 4)
        ax.set_ylim(-3, 5)
        ax.set_aspect("equal")
        ax.set_title(f"σ = {sigma}")
        ax.legend(fontsize=8, loc="upper left")
    bar.close()
    fig.suptitle("DSM learns the covariance of p_σ (2-SD ellipses)")
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
