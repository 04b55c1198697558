"""Seeded statistical tests of the samplers (numba backend, modest chain counts),
each with its standard error stated and a negative control that must fail."""
import numpy as np
import pytest

from refscore.distributions import Gaussian, GaussianMixture
from refscore.sampling import annealed_langevin, mala, ula

#: statistical tests of the samplers: long chains (CI runs the slow tier)
pytestmark = pytest.mark.slow

SIGMA = np.array([[1.0, 0.5], [0.5, 2.0]])
LAM = np.linalg.inv(SIGMA)
N = 20000


def _ula_cov(eta):
    """Closed-form stationary covariance of ULA on N(0, Sigma): x' = (I - eta Lam) x
    + sqrt(2 eta) z gives C = (I - eta Lam) C (I - eta Lam) + 2 eta I, solved by
    C = (Lam - eta Lam^2 / 2)^{-1} (C commutes with Lam)."""
    return np.linalg.inv(LAM - 0.5 * eta * LAM @ LAM)


def _cov_se(C, n):
    """SE of the sample covariance entries of n iid N(0, C) draws:
    Var(C_hat_ij) = (C_ii C_jj + C_ij^2) / n."""
    d = np.diag(C)
    return np.sqrt((np.outer(d, d) + C ** 2) / n)


def test_ula_stationary_covariance_is_the_discretised_one():
    eta = 0.3
    target = Gaussian([0.0, 0.0], SIGMA)
    # 300 steps: the slowest mode contracts by |1 - eta*0.45|^300 ~ 1e-18, so the
    # N independent chains are iid draws from the stationary law
    res = ula(target, np.zeros((N, 2)), eta, 300, seed=42, backend="numba")
    C_hat = np.cov(res.x.T)
    C_eta = _ula_cov(eta)
    se = _cov_se(C_eta, N)
    assert np.all(np.abs(C_hat - C_eta) < 5 * se), (C_hat, C_eta, se)
    assert np.all(np.abs(res.x.mean(axis=0)) < 5 * np.sqrt(np.diag(C_eta) / N))
    # negative control: the exact covariance is many SEs away at this step
    assert np.max(np.abs(C_hat - SIGMA) / se) > 10


def test_mala_stationary_law_is_exact_where_ula_is_biased():
    eta = 0.6
    target = Gaussian([0.0, 0.0], SIGMA)
    x0 = np.random.default_rng(0).normal(scale=2.0, size=(N, 2))  # over-dispersed start
    res = mala(target, x0, eta, 400, seed=7, backend="numba")
    assert 0.3 < res.accept_rate.mean() < 0.99
    C_hat = np.cov(res.x.T)
    # chains are independent; after 400 steps each is (to within 1e-6) a draw from p
    se = _cov_se(SIGMA, N)
    assert np.all(np.abs(C_hat - SIGMA) < 5 * se), (C_hat, se)
    assert np.all(np.abs(res.x.mean(axis=0)) < 5 * np.sqrt(np.diag(SIGMA) / N))
    # negative control: ULA at the same step is visibly biased
    biased = ula(target, x0, eta, 400, seed=7, backend="numba")
    assert np.max(np.abs(np.cov(biased.x.T) - SIGMA) / se) > 10


@pytest.fixture(scope="module")
def toy():
    p = GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [np.eye(2)] * 2)
    x0 = np.random.default_rng(3).uniform(-8.0, 8.0, size=(4000, 2))
    return p, x0


def test_annealed_langevin_recovers_mode_weights(toy):
    p, x0 = toy
    # Song & Ermon's toy: L = 10 levels from 20 to 1, T = 100, their eps = 0.1,
    # which is step = 0.05 in the x + eta s + sqrt(2 eta) z convention
    sigmas = np.geomspace(20.0, 1.0, 10)
    res = annealed_langevin(p.perturbed(), x0, sigmas, 0.05, 100, seed=5, backend="numba")
    w_left = np.mean(res.x.sum(axis=1) < 0)
    # SE of a proportion: sqrt(0.16 / 4000) = 0.0063; 0.03 is ~5 SE
    assert abs(w_left - 0.2) < 0.03, w_left
    assert not res.diverged.any()


def test_plain_ula_does_not_recover_mode_weights(toy):
    p, x0 = toy
    # negative control: without annealing each chain stays in the basin it started
    # in, so the weights follow the uniform start (~0.5 / 0.5)
    res = ula(p, x0, 0.1, 1000, seed=5, backend="numba")
    w_left = np.mean(res.x.sum(axis=1) < 0)
    assert abs(w_left - 0.2) > 0.1, w_left
