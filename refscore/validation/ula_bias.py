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
from refscore.sampling import DaskBackend, mala, ula

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


#: the small step resolved on the Dask backend, and the z-score its bias is aimed at
SMALL_STEP = 1e-2
SMALL_STEP_Z = {True: 3.0, False: 6.0}
#: above this many bytes of start points the chains start at the mean (a broadcast view, no
#: per-chain state in the client) and burn in longer
_EXACT_START_BYTES = 256 * 2**20


def small_step_plan(eta, z_target, cov=COV):
    """Chains and steps that resolve ULA's bias at step ``eta`` to about ``z_target`` standard errors.

    C(η) ≈ Σ + (η/2) I (module docstring, to first order: Λ⁻¹(I − ηΛ/2)⁻¹), so
    each variance is biased by η/2; a sample variance from n independent chains
    has standard error √(2/n)·C_ii, so n = 2 (z C_ii / (η/2))² resolves it to z.
    The best-resolved entry is the smallest variance, so n = 2 (z C_min / (η/2))².
    From exact draws of p the covariance transient decays as (1 − ηλ_min)^{2k}:
    k = 3/(η λ_min) leaves e^{-6} of the initial η/2 offset (1e-5 here, against a
    standard error of (η/2)/z); from the mean (zero covariance) k = 6/(η λ_min)
    leaves e^{-12} of C.  Returns ``(n_chains, n_steps, start)``, start
    ``"exact"`` or ``"mean"``.
    """
    lam_min = float(np.linalg.eigvalsh(np.linalg.inv(cov)).min())
    c_min = float(np.min(np.diag(ula_stationary_cov(cov, eta))))
    n = int(np.ceil(2 * (z_target * c_min / (eta / 2)) ** 2))
    exact = n * cov.shape[0] * 8 <= _EXACT_START_BYTES
    k = int(np.ceil((3.0 if exact else 6.0) / (eta * lam_min)))
    return n, k, "exact draws of p" if exact else "the mean"


def small_step_rows(quick, seed, eta=SMALL_STEP):
    """ULA at a small step, moments reduced on the workers (Dask; numba in one process without it)."""
    from . import common

    dist = Gaussian(MEAN, COV)
    n, k, start = small_step_plan(eta, SMALL_STEP_Z[quick])
    x0 = dist.sample(n, rng=seed + 7) if start == "exact draws of p" else np.broadcast_to(MEAN, (n, 2))
    try:
        import distributed  # noqa: F401
        backend = "dask"
    except ImportError:
        backend = "numba"
    if backend == "dask":
        client = None
        if common.SCHEDULER:
            from distributed import Client

            client = Client(common.SCHEDULER)
        try:
            res = ula(dist, x0, eta, k, seed=seed + 77, backend=DaskBackend(client=client), reduce="moments",
                      progress=common.PROGRESS)
        finally:
            if client is not None:
                client.close()
        count, mean, cov = res.reduced.count, res.reduced.mean, res.reduced.cov
    else:
        res = ula(dist, np.array(x0), eta, k, seed=seed + 77, backend="numba", progress=common.PROGRESS)
        count, mean, cov = n - int(res.diverged.sum()), res.x.mean(axis=0), np.cov(res.x, rowvar=False)
    if count != n:
        raise RuntimeError(f"{n - count} chains diverged at step {eta}")
    C = ula_stationary_cov(COV, eta)

    def zmax(expected):
        diag = np.diag(expected)
        se = np.sqrt((np.outer(diag, diag) + expected**2) / n)
        return float(np.max(np.abs(cov - expected) / se))

    what = (f"ULA η={eta}, {n:.3g} chains × {k} steps from the {start} ({backend}, "
            f"reduce='moments' on the workers)" if backend == "dask" else
            f"ULA η={eta}, {n:.3g} chains × {k} steps from the {start} (numba; dask not installed)")
    rows = [check_row(NAME, f"{what}: cov vs (Λ−ηΛ²/2)⁻¹, max |z|", zmax(C), "0", SOURCE, "5 SE",
                      zmax(C) <= 5)]
    bias = zmax(COV)
    if quick:
        rows.append(check_row(NAME, f"{what}: its bias vs Σ, max |z| (report only in --quick)", bias,
                              f"≈ {SMALL_STEP_Z[quick]:.0f}", SOURCE, "report", True))
    else:
        rows.append(check_row(NAME, f"{what}: the bias resolved, cov vs Σ, max |z|", bias,
                              f"≈ {SMALL_STEP_Z[quick]:.0f}", SOURCE, "> 4", bias > 4))
    return rows


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
    from . import common

    rows += small_step_rows(quick, seed, SMALL_STEP if common.SMALL_STEP is None else common.SMALL_STEP)
    for r in rows:
        r.figure = fig_path
    return rows
