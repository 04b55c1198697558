"""Unit tests of each validation experiment's core computation, at small size.

The full experiments run in ``python -m validation --quick`` (CI runs it after
the tests); here each module's central formula is checked against an
independent route.
"""
import itertools

import numpy as np
import pytest
from scipy import integrate

from refscore.distributions import Gaussian
from refscore.models import GaussianModel, LinearScore
from refscore.validation import (backends, equivalence, hyvarinen, mlp_mixture, ncsn_toy, runner, sliced,
                                 ula_bias, vincent)
from refscore.validation.common import Row, check_row


def test_hyvarinen_fit_equals_closed_form():
    x = Gaussian(hyvarinen.MEAN, hyvarinen.COV).sample(400, rng=3)
    mu, L = GaussianModel(3).unpack(hyvarinen.fit_ism(x))
    xbar, prec = hyvarinen.closed_form(x)
    # L-BFGS stops at gtol 1e-13 on a well-conditioned quadratic-like objective:
    # parameters agree to ~1e-8; 1e-6 leaves margin for the optimiser's path
    np.testing.assert_allclose(mu, xbar, atol=1e-6)
    np.testing.assert_allclose(L @ L.T, prec, rtol=1e-6, atol=1e-6)
    # the closed form is the biased covariance: compare with an explicit sum
    S = (x - xbar).T @ (x - xbar) / len(x)
    np.testing.assert_allclose(np.linalg.inv(prec), S, rtol=1e-10)


@pytest.mark.parametrize("model", [GaussianModel(2), LinearScore(2)])
def test_equivalence_constants(model):
    ts = np.array([0.0, 0.5, 1.0])
    esm, ism, ssm, ssm_vr, dsm, esm_s = equivalence.curves(model, ts, [0.2])
    T = equivalence.TARGET
    half_tr_prec = 0.5 * np.trace(np.linalg.inv(T.cov))  # ½ E‖∇log p‖² = ½ tr Σ⁻¹
    # exact quadrature of degree-2 polynomials: agreement to round-off
    np.testing.assert_allclose(esm - half_tr_prec, ism, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ssm, ism, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ssm_vr, ism, rtol=1e-12, atol=1e-12)
    s2 = np.linalg.inv(T.cov + 0.04 * np.eye(2))
    const = 0.5 * (2 / 0.04 - np.trace(s2))  # docs/derivations.md §7.6, Gaussian closed form
    np.testing.assert_allclose(dsm[0.2] - const, esm_s[0.2], rtol=1e-11)


def test_vincent_population_minimiser_is_noised_covariance():
    model = GaussianModel(2)
    dist = Gaussian(vincent.MEAN, vincent.COV)
    cov = vincent.learned_cov(model, vincent.fit_population(model, dist, 0.5))
    np.testing.assert_allclose(cov, vincent.COV + 0.25 * np.eye(2), rtol=1e-7)


def _rademacher_variance(C):
    vs = np.array(list(itertools.product([-1.0, 1.0], repeat=C.shape[0])))
    q = np.einsum("ki,ij,kj->k", vs, C, vs)
    return q.var()


def test_sliced_variance_closed_forms():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(3, 3))
    # Rademacher: exact by enumerating the 2^d sign vectors
    assert sliced.quadratic_form_variance(C, "rademacher") == pytest.approx(_rademacher_variance(C),
                                                                             rel=1e-12)
    # Gaussian: Isserlis, E[(vᵀCv)²] = (tr C)² + 2‖C_s‖², checked by Monte Carlo-free
    # Gauss–Hermite (degree 4 in v: order 3 per axis is exact)
    from numpy.polynomial.hermite_e import hermegauss
    z, w = hermegauss(3)
    w = w / w.sum()
    grid = np.array(list(itertools.product(z, repeat=3)))
    wt = np.prod(np.array(list(itertools.product(w, repeat=3))), axis=1)
    q = np.einsum("ki,ij,kj->k", grid, C, grid)
    var_gh = wt @ q**2 - (wt @ q) ** 2
    assert sliced.quadratic_form_variance(C, "gaussian") == pytest.approx(var_gh, rel=1e-12)


def test_sliced_sphere_variance_by_angle_quadrature():
    # d = 2: v = √2 (cos t, sin t), t uniform; integrate the variance over the angle
    C = np.array([[1.3, -0.4], [0.9, 0.2]])

    def q(t):
        v = np.sqrt(2) * np.array([np.cos(t), np.sin(t)])
        return v @ C @ v

    m1 = integrate.quad(q, 0, 2 * np.pi)[0] / (2 * np.pi)
    m2 = integrate.quad(lambda t: q(t) ** 2, 0, 2 * np.pi)[0] / (2 * np.pi)
    assert m1 == pytest.approx(np.trace(C), rel=1e-12)
    assert sliced.quadratic_form_variance(C, "sphere") == pytest.approx(m2 - m1**2, rel=1e-10)


def test_sliced_empirical_variance_matches_rademacher_enumeration():
    # the estimator code path at one point against the exact enumeration of v
    from refscore.models import MLPScore

    m = MLPScore(3, (4,), "tanh")
    th = m.init(1)
    x = np.array([0.3, -0.2, 0.5])
    A = m.score_jacobian(th, x)
    var, se = sliced.empirical_variance(m, th, x, "rademacher", 1, 40_000, np.random.default_rng(2),
                                        vr=True)
    assert abs(var - _rademacher_variance(A)) <= 5 * se  # 5 standard errors of the sample variance


def test_ula_stationary_cov_solves_lyapunov():
    eta = 0.3
    C = ula_bias.ula_stationary_cov(ula_bias.COV, eta)
    lam = np.linalg.inv(ula_bias.COV)
    M = np.eye(2) - eta * lam
    np.testing.assert_allclose(M @ C @ M.T + 2 * eta * np.eye(2), C, rtol=1e-12)


def test_ula_cov_z_detects_wrong_covariance():
    x = Gaussian([0, 0], ula_bias.COV).sample(50_000, rng=1)
    assert ula_bias.cov_z(x, ula_bias.COV) < 5
    assert ula_bias.cov_z(x, 1.2 * ula_bias.COV) > 10


def test_ncsn_toy_small_run():
    from refscore.metrics import mode_weights
    from refscore.sampling import annealed_langevin

    assert ncsn_toy.STEP == pytest.approx(0.05)  # NCSN ε = 0.1 in x + (α/2)s + √α z
    x0 = np.random.default_rng(0).uniform(-8, 8, size=(1500, 2))
    r = annealed_langevin(ncsn_toy.TARGET.perturbed(), x0, ncsn_toy.SIGMAS, ncsn_toy.STEP, 100,
                          seed=1, backend="numba")
    # 0.8 ± (bias ≈ 0.015 + 4 binomial SE ≈ 0.04)
    assert abs(mode_weights(r.x, ncsn_toy.MEANS)[1] - 0.8) < 0.06


def test_mlp_mixture_reference_levels():
    assert mlp_mixture.fisher_divergence(mlp_mixture.TARGET.score) == pytest.approx(0, abs=1e-14)
    # best Gaussian N(0, diag(5,1)): Fisher divergence ≈ 0.26 (see tests/test_training.py)
    assert 0.2 < mlp_mixture.fisher_divergence(mlp_mixture.BEST_GAUSSIAN.score) < 0.3


def test_backends_numba_matches_numpy_small():
    from refscore.sampling import ula

    for t in backends.targets().values():
        a = ula(t, backends.start(16), 0.05, 20, seed=3, backend="numpy").x
        b = ula(t, backends.start(16), 0.05, 20, seed=3, backend="numba").x
        assert backends.rel_dev(b, a) <= backends.TOL


def test_runner_report_and_errors(tmp_path):
    rows = [check_row("e", "q", 1.23456, "1.2", "src", 0.1, True), Row("e", "q2", "x", "y", "s", "t", False)]
    text = runner.render_report(rows, quick=True, seed=0, seconds={"e": 1.0})
    assert "| e | q | 1.235 | 1.2 | src | 0.1 | PASS |" in text
    assert "| e | q2 | x | y | s | t | FAIL |" in text
    assert "1 passed, 1 failed" in text
    with pytest.raises(SystemExit):
        runner.main(["--only", "no_such_experiment", "--out-dir", str(tmp_path)])
