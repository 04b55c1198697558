"""The diffusion validation experiment's pieces at small size (the full experiment runs in
``python -m validation --quick``): its z statistic, its laws against samples and its negative control, the
order curves against the exact laws, and the mode-weight runs."""
import numpy as np
import pytest

from refscore.diffusion import EDM
from refscore.diffusion.samplers import output_distances
from refscore.validation import diffusion, runner


def test_registered():
    assert "diffusion" in runner.EXPERIMENTS
    assert diffusion.NAME == "diffusion"


def test_z_statistic():
    """_z_max against a direct computation: the largest |z| among the 2 means and the 3 distinct covariance
    entries, with the Gaussian standard errors sqrt(C_ii/n) and sqrt((C_ii C_jj + C_ij^2)/n)."""
    rng = np.random.default_rng(0)
    mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.3], [0.3, 0.5]])
    x = rng.multivariate_normal(mean, cov, size=500)
    n = 500
    S = np.cov(x.T)
    zs = [(x[:, i].mean() - mean[i]) / np.sqrt(cov[i, i] / n) for i in range(2)]
    zs += [(S[i, j] - cov[i, j]) / np.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n)
           for i, j in [(0, 0), (0, 1), (1, 1)]]
    assert diffusion._z_max(x, mean, cov) == pytest.approx(max(abs(z) for z in zs), rel=1e-12)


def test_laws_against_samples_and_the_negative_control():
    """1500 chains per sampler: every shown sampler within 4.5 standard errors of its exact law (10 cases, 50
    statistics), and DDPM 'large' far from the law of 'small'."""
    laws, control = diffusion.law_vs_samples(1500, 3)
    assert [label for label, *_ in laws] == [s[0] for s in diffusion.SHOWN]
    for label, got, (m, C) in laws:
        assert got.shape == (1500, 2)
        assert diffusion._z_max(got, m, C) < diffusion.Z_MAX, label
    assert control > 10


def test_order_curves_are_the_exact_laws_distances():
    curves = diffusion.order_curves((50, 100))
    name, errs = curves["heun"]
    edm = EDM()
    assert errs[1] == output_distances("heun", edm, edm.grid(100), diffusion.DATA).w2
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.2)  # second order


def test_mode_weight_runs():
    """300 chains, 12 steps: one weight per step count (pf_ode: one), all probabilities."""
    w = diffusion.mode_weight_runs(300, (12,), 1)
    assert set(w) == {s[0] for s in diffusion.SHOWN if not (s[1] == "ddim" and s[2])}
    assert all(v.shape == (1,) and 0 <= v[0] <= 1 for v in w.values())
    # the deterministic samplers from the same starts agree with the adaptive PF-ODE within the 12-step error
    assert abs(w["heun"][0] - w["pf_ode"][0]) < 0.05
