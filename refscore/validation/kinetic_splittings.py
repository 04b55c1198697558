r"""Kinetic Langevin: each splitting's stationary law across step sizes, and mixing against ULA.

(a, b) The stationary law.  On a 2-D anisotropic Gaussian :math:`N(\mu, \Sigma)`, precision
:math:`P = \Sigma^{-1}` with eigenvalues 1/4 and 4, every splitting's step is an affine map of
:math:`z = (q, p)` and its stationary law is the Gaussian solving the discrete Lyapunov equation
:math:`S = M S M^\top + L L^\top` (:func:`refscore.sampling.kinetic_stationary_law`), whose closed
forms along an eigenvector of :math:`P` with eigenvalue :math:`\lambda`, with
:math:`\epsilon = h^2\lambda/(4m)`, are (docs/derivations.md §8.6)

==========  ==========================================  ==========================================
splitting   :math:`\lambda\,\mathrm{Var}\,q`             :math:`\mathrm{Var}\,p / m`
==========  ==========================================  ==========================================
BAOAB       1 (exact)                                   :math:`1 - \epsilon`
OBABO       :math:`1/(1 - \epsilon)`                    1 (exact)
ABOBA       1 (exact)                                   :math:`1/(1 - \epsilon)`
==========  ==========================================  ==========================================

with :math:`\mathrm{Cov}(q, p) = 0`, stable for :math:`h\sqrt{\lambda_{\max}/m} < 2`.  Chains
start at exact draws of the target and of :math:`p \sim N(0, mI)` and run until the exact
transient law (:func:`refscore.sampling.kinetic_transient_law`) is within 1% of a standard error
of the stationary one; their sample mean and covariance of :math:`(q, p)` are compared with the
stationary law (standard errors from its own fourth moments, Isserlis:
:math:`\mathrm{Var}\,\widehat S_{ij} = (S_{ii}S_{jj} + S_{ij}^2)/n`).  BAOAB and ABOBA sample the
positions exactly at every step size, OBABO the momenta (Leimkuhler & Matthews 2013).

(c) Mixing at equal score evaluations.  On the symmetric mixture
:math:`\tfrac12 N((-2, 0), D) + \tfrac12 N((2, 0), D)`, :math:`D = \mathrm{diag}(1/2, 1)`, all
chains start at the left mode; the fraction left of :math:`q_1 = 0` relaxes to exactly 1/2 for
every sampler and step (the target and every update are symmetric under :math:`q \to -q`, so no
step-size bias enters), at the rate the chains cross the barrier.  ULA runs at step :math:`\eta`,
kinetic Langevin at :math:`h = \sqrt{2\eta}` (with :math:`m = 1`): the same discretisation scale,
since OBABO with a full momentum refresh (:math:`\gamma = \infty`) is ULA with :math:`\eta = h^2/2`
(docs/derivations.md §8.7; the rates below: §8.6).  Each score evaluation then advances kinetic Langevin by time :math:`h`, ULA by
:math:`\eta`; Kramers' high-barrier rates (Kramers 1940) put the ratio of crossing rates per
evaluation at :math:`(h/\eta)\,\lambda_b/\omega_b^2`, :math:`\lambda_b =
\sqrt{\gamma^2/4 + \omega_b^2} - \gamma/2`, with :math:`\omega_b^2` the negative curvature of
:math:`-\log p` at the saddle, a rough asymptote at a barrier of about 3 here (reported, not checked).
"""
from __future__ import annotations

import numpy as np

from refscore.distributions import Gaussian, GaussianMixture
from refscore.sampling import kinetic_langevin, kinetic_stationary_law, kinetic_transient_law, ula

from .common import check_row, progress, save_figure, style

NAME = "kinetic_splittings"
TITLE = "Kinetic Langevin: BAOAB, OBABO, ABOBA stationary laws vs step; mixing vs ULA"
SOURCE = "docs/derivations.md §8.6; Leimkuhler & Matthews 2013"

SPLITTINGS = ("BAOAB", "OBABO", "ABOBA")
_ANGLE = 0.6
_R = np.array([[np.cos(_ANGLE), -np.sin(_ANGLE)], [np.sin(_ANGLE), np.cos(_ANGLE)]])
#: the Gaussian of panels (a, b): variances 4 and 1/4 along a rotated frame (precision eigenvalues 1/4, 4)
COV = _R @ np.diag([4.0, 0.25]) @ _R.T
MEAN = np.array([1.0, -0.5])
MASS = 1.0
FRICTION = 1.0
#: step sizes, up to near the stability bound h < 2 sqrt(m / lambda_max) = 1
STEPS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
#: the mixture of panel (c), its step and friction
MIX_MEANS = np.array([[-2.0, 0.0], [2.0, 0.0]])
MIX_COV = np.diag([0.5, 1.0])
ULA_STEP = 0.02
MIX_FRICTION = 1.0
#: the distance of the fraction left of 0 from 1/2 that counts as arrived (6 standard errors of 1/2 at the
#: quick run's 4000 chains)
ARRIVED = 0.05


def closed_form_cov(precision, step, splitting, mass=MASS):
    r"""The stationary covariance of :math:`(q, p)` in closed form (module table), as a matrix function of ``P``.

    With :math:`E = I - h^2 P/(4m)`: BAOAB :math:`(P^{-1}, mE)`, OBABO :math:`((PE)^{-1}, mI)`,
    ABOBA :math:`(P^{-1}, mE^{-1})`; the off-diagonal block is zero.
    """
    d = precision.shape[0]
    E = np.eye(d) - step * step * precision / (4.0 * mass)
    Pinv = np.linalg.inv(precision)
    qq, pp = {"BAOAB": (Pinv, mass * E), "OBABO": (np.linalg.inv(precision @ E), mass * np.eye(d)),
              "ABOBA": (Pinv, mass * np.linalg.inv(E))}[splitting]
    return np.block([[qq, np.zeros((d, d))], [np.zeros((d, d)), pp]])


def moment_z(z, mean, cov):
    """``(z-scores of the sample mean, z-scores of the sample covariance)`` of samples ``z`` (n, k) under
    ``N(mean, cov)``: standard errors ``sqrt(S_ii / n)`` and ``sqrt((S_ii S_jj + S_ij^2) / n)`` (Isserlis)."""
    n = z.shape[0]
    diag = np.diag(cov)
    z_mean = (z.mean(axis=0) - mean) / np.sqrt(diag / n)
    z_cov = (np.cov(z, rowvar=False) - cov) / np.sqrt((np.outer(diag, diag) + cov ** 2) / n)
    return z_mean, z_cov


def burn_in(precision, step, splitting, n, start_mean, start_cov, mean, cov, limit=20_000):
    """Steps after which the exact transient law is within 1% of a standard error of the stationary law."""
    diag = np.diag(cov)
    se_mean, se_cov = np.sqrt(diag / n), np.sqrt((np.outer(diag, diag) + cov ** 2) / n)
    k, block = 0, 10
    while k <= limit:
        m_k, S_k = kinetic_transient_law(precision, MEAN, step, FRICTION, splitting, k, start_mean, start_cov,
                                         mass=MASS)
        if np.max(np.abs(m_k - mean) / se_mean) < 0.01 and np.max(np.abs(S_k - cov) / se_cov) < 0.01:
            return k
        k += block
    raise RuntimeError(f"{splitting} at h = {step}: the transient law is not within 0.01 SE of the stationary "
                       f"law after {limit} steps")


def kramers_ratio(mixture, eta, step, friction):
    r""":math:`(h/\eta)\,\lambda_b/\omega_b^2`: Kramers' crossing rate of kinetic Langevin over that of the
    overdamped dynamics, per score evaluation (module doc); :math:`\omega_b^2` from ``-log p`` along
    :math:`q_2 = 0` at the saddle :math:`q = 0` by a central second difference."""
    e = 1e-4

    def u(x1):
        return -float(mixture.logpdf(np.array([[x1, 0.0]]))[0])

    wb2 = -(u(e) - 2.0 * u(0.0) + u(-e)) / (e * e)
    lam = np.sqrt(friction * friction / 4.0 + wb2) - friction / 2.0
    return (step / eta) * lam / wb2


def evaluations(splitting, n_steps):
    """Score evaluations of ``n_steps`` steps: one per step, plus one when a kick precedes every drift
    (BAOAB, OBABO evaluate s(q_0) for their first kick); ULA (``None``): one per step."""
    if splitting is None:
        return n_steps
    return n_steps + ("B" in splitting[:splitting.index("A")])


def _stationary_panels(quick, seed, axes):
    n = 20_000 if quick else 200_000
    P = np.linalg.inv(COV)
    lam, vecs = np.linalg.eigh(P)
    u = vecs[:, -1]  # the stiff direction, lambda = 4
    start_mean = np.r_[MEAN, 0.0, 0.0]
    start_cov = np.block([[COV, np.zeros((2, 2))], [np.zeros((2, 2)), MASS * np.eye(2)]])
    target = Gaussian(MEAN, COV)
    worst_closed, worst_z = 0.0, {s: 0.0 for s in SPLITTINGS}
    worst_q_exact, measured = 0.0, {s: ([], [], [], []) for s in SPLITTINGS}
    controls = {}
    n_runs = len(SPLITTINGS) * len(STEPS)
    bar = progress(desc=f"kinetic_splittings: {n_runs} runs of {n} chains", total=n_runs, unit="run")
    for i, h in enumerate(STEPS):
        x0 = target.sample(n, rng=seed + i)
        for j, s in enumerate(SPLITTINGS):
            mean, cov = kinetic_stationary_law(P, MEAN, h, FRICTION, s, mass=MASS)
            worst_closed = max(worst_closed, float(np.max(np.abs(cov - closed_form_cov(P, h, s)))
                                                   / np.max(np.abs(cov))))
            k = burn_in(P, h, s, n, start_mean, start_cov, mean, cov)
            res = kinetic_langevin(target, x0, h, k, FRICTION, seed + 100 * i + j, splitting=s, mass=MASS,
                                   backend="numba", progress=False)
            bar.update(1)
            if res.diverged.any():
                raise RuntimeError(f"{int(res.diverged.sum())} chains diverged: {s} at h = {h}")
            z = np.hstack([res.x, res.momentum])
            z_mean, z_cov = moment_z(z, mean, cov)
            worst_z[s] = max(worst_z[s], float(np.max(np.abs(z_mean))), float(np.max(np.abs(z_cov))))
            if s != "OBABO":  # exact in q: the positions' covariance is the target's own
                worst_q_exact = max(worst_q_exact, float(np.max(np.abs(moment_z(res.x, MEAN, COV)[1]))))
            if h == STEPS[-1]:  # negative controls at the largest step
                controls[s] = (float(np.max(np.abs(moment_z(res.x, MEAN, COV)[1]))),
                               float(np.max(np.abs(moment_z(res.momentum, np.zeros(2), MASS * np.eye(2))[1]))))
            wq, wp = res.x @ u, res.momentum @ u
            se = np.sqrt(2.0 / n)  # of a sample variance, relative (Gaussian)
            vq, vp = lam[-1] * np.var(wq, ddof=1), np.var(wp, ddof=1) / MASS
            measured[s][0].append(vq)
            measured[s][1].append(2 * se * vq)
            measured[s][2].append(vp)
            measured[s][3].append(2 * se * vp)
    bar.close()
    # the figure: measured (2 SE bars) over the closed forms
    grid = np.linspace(0.0, 0.9, 200)
    eps = grid ** 2 * lam[-1] / (4.0 * MASS)
    forms = {"BAOAB": (np.ones_like(grid), 1 - eps), "OBABO": (1 / (1 - eps), np.ones_like(grid)),
             "ABOBA": (np.ones_like(grid), 1 / (1 - eps))}
    colors = {"BAOAB": "C0", "OBABO": "C3", "ABOBA": "C2"}
    markers = {"BAOAB": "o", "OBABO": "s", "ABOBA": "^"}
    offsets = {"BAOAB": -0.012, "OBABO": 0.0, "ABOBA": 0.012}  # side by side where they coincide
    for panel, (ax, what) in enumerate(zip(axes, (r"$\lambda\,\mathrm{Var}\,q$", r"$\mathrm{Var}\,p\,/\,m$"))):
        for s in SPLITTINGS:
            ax.plot(grid, forms[s][panel], color=colors[s], lw=1.4, alpha=0.8,
                    ls="--" if s == "ABOBA" else "-")
            ax.errorbar(np.array(STEPS) + offsets[s], measured[s][2 * panel], yerr=measured[s][2 * panel + 1],
                        fmt=markers[s], color=colors[s], ms=5, capsize=2, label=s)
        ax.axhline(1.0, color="0.6", lw=0.8, zorder=0)
        ax.set_xlabel(r"step $h$   ($\epsilon = h^2\lambda/4m$, $\lambda = 4$)")
        ax.set_ylabel(what + " (stiff direction)")
        ax.set_yscale("log")  # 1 - eps and 1 / (1 - eps) mirror each other
        ax.set_ylim(0.2, 5.0)
        ax.set_yticks([0.25, 0.5, 1.0, 2.0, 4.0], ["0.25", "0.5", "1", "2", "4"])
        ax.minorticks_off()
        ax.set_xlim(0.0, 0.9)
    axes[0].set_title(f"(a) positions: 1 = the target's; {n} chains")
    axes[1].set_title("(b) momenta: 1 = N(0, m)")
    axes[0].legend(title="measured ± 2 SE; lines: closed form", loc="upper left", fontsize=8, title_fontsize=8)
    return n, worst_closed, worst_z, worst_q_exact, controls


def _mixing_panel(quick, seed, ax):
    n = 4_000 if quick else 40_000
    # 8000 steps: ULA's own relaxation (rate ~ 9e-4 per evaluation in the error) leaves < 1e-3 of 1/2, a
    # fraction of a standard error, so the final check sees noise only; the trace is 16 n n_steps / rec bytes
    n_steps, rec = 8_000, (20 if quick else 40)
    mixture = GaussianMixture([0.5, 0.5], MIX_MEANS, [MIX_COV, MIX_COV])
    h = float(np.sqrt(2.0 * ULA_STEP * 1.0))  # m = 1
    x0 = np.tile(MIX_MEANS[0], (n, 1))
    se = 0.5 / np.sqrt(n)
    steps = np.arange(1, n_steps // rec + 1) * rec
    arrived, rates, final_z = {}, {}, 0.0
    colors = {"ULA": "k", "BAOAB": "C0", "OBABO": "C3", "ABOBA": "C2"}
    bar = progress(desc=f"kinetic_splittings: mixing, {n} chains × {n_steps} steps", total=1 + len(SPLITTINGS), unit="run")
    for j, name in enumerate(("ULA",) + SPLITTINGS):
        if name == "ULA":
            res = ula(mixture, x0, ULA_STEP, n_steps, seed=seed + 7, backend="numba", record=rec, progress=False)
        else:
            res = kinetic_langevin(mixture, x0, h, n_steps, MIX_FRICTION, seed + 70 + j, splitting=name,
                                   backend="numba", record=rec, progress=False)
        bar.update(1)
        if res.diverged.any():
            raise RuntimeError(f"{int(res.diverged.sum())} chains diverged on the mixture ({name})")
        err = np.abs((res.trace[:, :, 0] < 0.0).mean(axis=1) - 0.5)
        del res  # the trace: 8 n (n_steps / rec) 2 bytes
        evals = np.array([evaluations(None if name == "ULA" else name, k) for k in steps])
        hit = np.flatnonzero(err < ARRIVED)
        arrived[name] = int(evals[hit[0]]) if hit.size else np.inf
        # the barrier-crossing rate: log-linear fit where the error is between 10 SE and 0.3 (past the
        # fast relaxation inside the starting well, above the noise); the two-state error decays as e^{-2 k t}
        w = np.flatnonzero((err < 0.3) & (err > 10 * se))
        rates[name] = -np.polyfit(evals[w], np.log(err[w]), 1)[0] / 2.0 if w.size >= 5 else np.nan
        final_z = max(final_z, float(err[-1] / se))
        label = f"ULA, η = {ULA_STEP}" if name == "ULA" else f"{name}, h = √(2η) = {h:.2f}, γ = {MIX_FRICTION:g}"
        ax.plot(evals, np.maximum(err, 1e-4), color=colors[name], lw=1.8 if name in ("ULA", "BAOAB") else 1.0,
                ls=":" if name == "ABOBA" else "-", label=label)
    bar.close()
    for name, at in arrived.items():  # where each first comes within ARRIVED of 1/2
        ax.plot([at], [ARRIVED], "o", color=colors[name], ms=6, mfc="white", mew=1.5, zorder=6)
    ax.axhspan(1e-4, 2 * se, color="0.85", zorder=0, label=f"2 SE of 1/2 ({n} chains)")
    ax.axhline(ARRIVED, color="0.5", lw=0.8, ls="--")
    ax.text(evals[-1], ARRIVED * 1.1, f"arrived (< {ARRIVED})", ha="right", va="bottom", fontsize=8, color="0.4")
    ax.set_yscale("log")
    ax.set_ylim(2e-3, 0.7)
    ax.set_xlim(0, evals[-1])
    ax.set_xlabel("score evaluations")
    ax.set_ylabel(r"|fraction with $q_1 < 0$ − 1/2|")
    ax.set_title("(c) mixing on ½N((−2,0), D) + ½N((2,0), D)")
    ax.legend(fontsize=7.5, loc="upper right")
    return n, h, mixture, arrived, rates, final_z


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.6), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    n, worst_closed, worst_z, worst_q_exact, controls = _stationary_panels(quick, seed, axes[:2])
    n_mix, h, mixture, arrived, rates, final_z = _mixing_panel(quick, seed, axes[2])
    fig.suptitle("Kinetic Langevin: each splitting's stationary law (2-D Gaussian, γ = 1, m = 1), "
                 "and mixing against ULA at equal score evaluations", y=1.02)
    fig_path = save_figure(fig, fig_dir, NAME)
    steps = ", ".join(f"{h_:g}" for h_ in STEPS)
    rows = [check_row(NAME, f"Lyapunov stationary covariance vs the closed forms, max relative difference over "
                            f"h ∈ {{{steps}}} and the 3 splittings", worst_closed, "0 (round-off)", SOURCE, "1e-10",
                      worst_closed <= 1e-10)]
    for s in SPLITTINGS:
        rows.append(check_row(NAME, f"{s}, {n} chains: mean and covariance of (q, p) vs its stationary law, max |z| "
                                    f"over 14 statistics × {len(STEPS)} steps", worst_z[s], "0", SOURCE, "5 SE",
                              worst_z[s] <= 5))
    rows += [
        check_row(NAME, "BAOAB and ABOBA: covariance of q vs the target's Σ at every h (exact in q), max |z|",
                  worst_q_exact, "0", "Leimkuhler & Matthews 2013; §8.6", "5 SE", worst_q_exact <= 5),
        check_row(NAME, f"negative control: OBABO's covariance of q vs Σ at h = {STEPS[-1]}, max |z|",
                  controls["OBABO"][0], "≫ 5 (biased by 1/(1 − ε))", SOURCE, "> 10", controls["OBABO"][0] > 10),
        check_row(NAME, f"negative control: BAOAB's covariance of p vs m I at h = {STEPS[-1]}, max |z|",
                  controls["BAOAB"][1], "≫ 5 (biased by 1 − ε)", SOURCE, "> 10", controls["BAOAB"][1] > 10),
    ]
    slowest_kinetic = max(arrived[s] for s in SPLITTINGS)
    ratio = arrived["ULA"] / slowest_kinetic
    rows += [
        check_row(NAME, f"mixing, {n_mix} chains from one mode: score evaluations until |fraction left − 1/2| < "
                        f"{ARRIVED}, ULA (η = {ULA_STEP}) / slowest kinetic splitting (h = {h:.2f}); ULA "
                        f"{arrived['ULA']:.0f}, " + ", ".join(f"{s} {arrived[s]:.0f}" for s in SPLITTINGS),
                  ratio, "> 1 (time h = √(2η) per evaluation vs η)", SOURCE, "> 1", ratio > 1),
        check_row(NAME, "mixing: every sampler's final fraction left vs 1/2 (exact by symmetry, no step bias), max |z|",
                  final_z, "0", "symmetry of target and updates", "5 SE", final_z <= 5),
        check_row(NAME, "mixing: barrier-crossing rate per evaluation, BAOAB / ULA (log-linear fit; report only)",
                  rates["BAOAB"] / rates["ULA"], f"≈ {kramers_ratio(mixture, ULA_STEP, h, MIX_FRICTION):.3g}",
                  "Kramers 1940 (high-barrier asymptote)", "report", True),
    ]
    for r in rows:
        r.figure = fig_path
    return rows
