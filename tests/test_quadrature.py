"""Tests of refscore.quadrature: Gauss–Hermite expectations against closed forms.

Oracles: Gaussian moments (E x, Cov x, fourth moments), E‖∇log p‖² = tr Σ⁻¹
(eigenvalues), mixture moments in closed form, the Fisher identity
E‖s‖² = −E tr∇s (integration by parts), the double factorials E t^{2k}, and
the exactness degree 2·order − 1 shown tight by a negative control.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refscore.distributions import Banana, Gaussian, GaussianMixture, StudentT
from refscore.quadrature import (
    MAX_NODES,
    MAX_ORDER,
    MonteCarloEstimate,
    default_order,
    expectation,
    gauss_hermite_nodes,
    product_rule,
    standard_normal_nodes,
)

from strategies import dims, gaussian_mixtures, gaussians, seeds

# Round-off budget for exact (polynomial) expectations: the rule sums m ≤ 4096·k
# positive weights times values, relative error ~ log2(m)·eps ≈ 3e-15 of the
# largest term, so 1e-12 relative to the natural scale of each moment leaves
# 100x margin even at cond(Σ) = 1e3 (the nodes are built by one matrix product).


@given(g=gaussians())
def test_gaussian_first_and_second_moments(g):
    mean = expectation(lambda x: x, g)
    scale = np.max(np.abs(g.mean)) + np.sqrt(np.max(np.diag(g.cov)))
    np.testing.assert_allclose(mean, g.mean, rtol=0, atol=1e-12 * scale)
    cov = expectation(lambda x: np.einsum("ni,nj->nij", x - g.mean, x - g.mean), g)
    np.testing.assert_allclose(cov, g.cov, rtol=0, atol=1e-12 * np.max(np.abs(g.cov)))


@given(g=gaussians())
def test_gaussian_fisher_information_is_trace_of_precision(g):
    # E‖∇log p‖² = E (x-μ)ᵀΣ⁻²(x-μ) = tr Σ⁻¹ = Σ_i 1/λ_i (independent: eigenvalues)
    ref = np.sum(1.0 / np.linalg.eigvalsh(g.cov))
    got = expectation(lambda x: np.sum(g.score(x) ** 2, axis=1), g)
    # score by triangular solves carries relative error ~ cond·eps ≤ 2.2e-13
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # and −E tr∇s = tr Σ⁻¹ (integration by parts, Hyvärinen 2005)
    np.testing.assert_allclose(-expectation(g.score_trace, g), ref, rtol=1e-12)


@given(g=gaussians(), seed=seeds())
def test_gaussian_fourth_moment(g, seed):
    # E[(aᵀ(x-μ))⁴] = 3 (aᵀΣa)²: degree 4 <= 2·order − 1 for every default order
    a = np.random.default_rng(seed).standard_normal(g.dim)
    got = expectation(lambda x: ((x - g.mean) @ a) ** 4, g)
    np.testing.assert_allclose(got, 3.0 * (a @ g.cov @ a) ** 2, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_exactness_degree_is_tight(order):
    # 1-D standard normal: E t^{2k} = (2k−1)!!.  Exact for 2k ≤ 2·order − 1 ...
    g = Gaussian([0.0], [[1.0]])
    for k in range(order):
        got = expectation(lambda x: x[:, 0] ** (2 * k), g, order=order)
        dfact = float(np.prod(np.arange(2 * k - 1, 0, -2))) if k else 1.0
        np.testing.assert_allclose(got, dfact, rtol=1e-13)  # sums of order ≤ 8 terms: a few eps
    # ... and not for degree 2·order (negative control: the claim is tight).  The
    # Gauss–Hermite remainder is n!·f^(2n)/(2n)! (probabilists' weight, unit mass),
    # so for f = t^(2n) the rule falls short by exactly n!.
    k = order
    dfact = float(np.prod(np.arange(2 * k - 1, 0, -2)))
    got = expectation(lambda x: x[:, 0] ** (2 * k), g, order=order)
    np.testing.assert_allclose(dfact - got, float(np.prod(np.arange(1, k + 1))), rtol=1e-9)


def test_tensor_rule_exact_for_total_degree_in_correlated_gaussian():
    # E[x1² x2²] for a correlated 3-D Gaussian with zero mean: Σ11Σ22 + 2Σ12² (Isserlis);
    # order 3 is exact for total degree ≤ 5, order 2 (degree ≤ 3) is not
    cov = np.array([[2.0, 0.8, 0.1], [0.8, 1.0, -0.3], [0.1, -0.3, 0.5]])
    g = Gaussian(np.zeros(3), cov)
    f = lambda x: x[:, 0] ** 2 * x[:, 1] ** 2  # noqa: E731
    ref = cov[0, 0] * cov[1, 1] + 2 * cov[0, 1] ** 2
    np.testing.assert_allclose(expectation(f, g, order=3), ref, rtol=1e-14)
    assert abs(expectation(f, g, order=2) - ref) > 1e-3


@settings(max_examples=20)
@given(m=gaussian_mixtures())
def test_mixture_mean_and_covariance(m):
    # closed form: m = Σ w_j μ_j, Cov = Σ w_j(Σ_j + μ_j μ_jᵀ) − m mᵀ
    mean = m.weights @ m.means
    cov = np.einsum("k,kij->ij", m.weights, m.covs + np.einsum("ki,kj->kij", m.means, m.means)) - np.outer(mean, mean)
    got_mean = expectation(lambda x: x, m)
    got_cov = expectation(lambda x: np.einsum("ni,nj->nij", x - mean, x - mean), m)
    scale = np.max(np.abs(m.means)) + np.sqrt(np.max(m.covs))
    np.testing.assert_allclose(got_mean, mean, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(got_cov, cov, rtol=0, atol=1e-12 * scale**2)


def test_mixture_fisher_identity_and_zero_mean_score():
    # E s = ∫∇p = 0 and E‖s‖² = −E tr∇s (integration by parts).  The mixture
    # score is a ratio, not a polynomial (nor entire), so Gauss–Hermite converges
    # geometrically but slowly: measured |E‖s‖² + E tr∇s| = 4e-4 at order 16,
    # 9e-6 at 32, 4e-8 at 64, 6e-9 at 96, and |E s| = 2e-8 at 64, 1e-9 at 96.
    # At order 96 the bound 1e-7 relative to the Fisher information leaves ≥ 20x.
    m = GaussianMixture([0.3, 0.7], [[0.0, 1.0], [1.5, -0.5]],
                        [[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]]])
    es = expectation(m.score, m, order=96)
    fisher = expectation(lambda x: np.sum(m.score(x) ** 2, axis=1), m, order=96)
    np.testing.assert_allclose(es, 0.0, atol=1e-7 * np.sqrt(fisher))
    np.testing.assert_allclose(-expectation(m.score_trace, m, order=96), fisher, rtol=1e-7)
    # negative control: a Jacobian missing the responsibility term Σ r_j(s_j−s)(s_j−s)ᵀ
    # (the Gaussian-only part −Σ r_j tr P_j) breaks the identity by O(1)
    _, r, _ = m._parts(gauss_hermite_nodes(m, 96)[0])
    wrong = -gauss_hermite_nodes(m, 96)[1] @ (np.trace(m.precisions, axis1=1, axis2=2) @ r)
    assert abs(-wrong - fisher) > 0.1 * fisher


def test_output_shapes_and_scalar():
    g = Gaussian([1.0, 2.0], [[1.0, 0.3], [0.3, 2.0]])
    assert expectation(lambda x: x[:, 0], g).shape == ()
    assert expectation(lambda x: np.ones((x.shape[0], 3, 4)), g).shape == (3, 4)
    # E[x1 x2] = Σ12 + μ1μ2 = 2.3
    np.testing.assert_allclose(expectation(lambda x: x[:, 0] * x[:, 1], g), 2.3, rtol=1e-14)


@given(d=dims())
def test_standard_normal_nodes(d):
    order = default_order(d)
    t, w = standard_normal_nodes(d, order)
    assert t.shape == (order**d, d) and w.shape == (order**d,)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-14)  # product of rules each summing to 1
    assert np.all(w > 0)
    np.testing.assert_allclose(w @ t, 0.0, atol=1e-14)  # symmetric nodes: odd moments vanish
    np.testing.assert_allclose(np.einsum("m,mi,mj->ij", w, t, t), np.eye(d), atol=1e-13)


def test_gauss_hermite_nodes_mixture_layout():
    m = GaussianMixture([0.25, 0.75], [[0.0], [10.0]], [[[1.0]], [[4.0]]])
    x, w = gauss_hermite_nodes(m, order=5)
    assert x.shape == (10, 1) and w.shape == (10,)
    # component j occupies rows j*order .. (j+1)*order − 1 with total weight w_j
    np.testing.assert_allclose([w[:5].sum(), w[5:].sum()], [0.25, 0.75], rtol=1e-14)
    np.testing.assert_allclose(np.sort(x[5:, 0]) - 10.0, 2.0 * np.sort(x[:5, 0]), rtol=1e-14)


def test_product_rule_gives_joint_dsm_moment():
    # (x, z) independent, x ~ N(μ, Σ), z ~ N(0, I): E[(x+σz)(x+σz)ᵀ] = Σ + μμᵀ + σ²I
    g = Gaussian([1.0, -0.5], [[1.0, 0.4], [0.4, 0.7]])
    sig = 0.3
    nodes, w = product_rule(gauss_hermite_nodes(g, 4), standard_normal_nodes(2, 3))
    assert nodes.shape == (16 * 9, 4)
    y = nodes[:, :2] + sig * nodes[:, 2:]
    got = np.einsum("m,mi,mj->ij", w, y, y)
    np.testing.assert_allclose(got, g.cov + np.outer(g.mean, g.mean) + sig**2 * np.eye(2), rtol=1e-14, atol=1e-15)


# -------------------------------------------------------------- Monte Carlo


def test_monte_carlo_is_labelled_and_unbiased():
    t = StudentT([1.0, -1.0], [[1.0, 0.2], [0.2, 0.5]], df=6.0)
    est = expectation(lambda x: x, t, method="monte_carlo", n_samples=20_000, rng=0)
    assert isinstance(est, MonteCarloEstimate)
    value, stderr = est
    assert value.shape == stderr.shape == (2,)
    # E x = loc, checked at |z| <= 5 with the estimator's own standard error
    assert np.all(np.abs(value - t.loc) <= 5 * stderr)
    b = Banana(b=0.1, sigma1=2.0)
    est = expectation(lambda x: x[:, 0] ** 2, b, method="monte_carlo", n_samples=20_000, rng=1)
    assert abs(est.value - b.sigma1**2) <= 5 * est.stderr
    # the MC route works for Gaussians too and agrees with the exact value
    g = Gaussian([0.5], [[2.0]])
    est = expectation(lambda x: x[:, 0] ** 2, g, method="monte_carlo", n_samples=20_000, rng=2)
    assert abs(est.value - expectation(lambda x: x[:, 0] ** 2, g)) <= 5 * est.stderr


def test_quadrature_refuses_non_gaussian_targets():
    with pytest.raises(TypeError, match="method='monte_carlo'"):
        expectation(lambda x: x, Banana())
    with pytest.raises(TypeError, match="StudentT"):
        expectation(lambda x: x, StudentT([0.0], [[1.0]], 3.0))


# ---------------------------------------------------------------- validation
G = Gaussian([0.0, 0.0], np.eye(2))


def test_order_not_positive():
    with pytest.raises(ValueError, match=r"order must be >= 1, got 0"):
        expectation(lambda x: x, G, order=0)


def test_order_not_integer():
    with pytest.raises(TypeError, match=r"order must be an integer >= 1, got 3.0 \(float\)"):
        expectation(lambda x: x, G, order=3.0)


def test_order_too_many_nodes():
    g3 = Gaussian(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=rf"limit MAX_NODES={MAX_NODES}"):
        expectation(lambda x: x, g3, order=200)


def test_order_above_max_order():
    with pytest.raises(ValueError, match=rf"order must be <= MAX_ORDER={MAX_ORDER}"):
        expectation(lambda x: x, Gaussian([0.0], [[1.0]]), order=MAX_ORDER + 1)


def test_no_default_order_above_dim_4():
    g5 = Gaussian(np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match=r"no default quadrature order for dim=5"):
        expectation(lambda x: x, g5)


def test_method_unknown():
    with pytest.raises(ValueError, match=r"method must be one of \['monte_carlo', 'quadrature'\], got 'auto'"):
        expectation(lambda x: x, G, method="auto")


def test_f_not_callable():
    with pytest.raises(TypeError, match=r"f must be callable"):
        expectation(np.ones(3), G)


def test_f_wrong_leading_dimension():
    with pytest.raises(ValueError, match=r"f must map points of shape \(m, d\) .*returned shape \(3,\)"):
        expectation(lambda x: np.ones(3), G, order=4)


def test_n_samples_too_small():
    with pytest.raises(ValueError, match=r"n_samples must be >= 2"):
        expectation(lambda x: x, Banana(), method="monte_carlo", n_samples=1)


def test_nodes_for_unsupported_distribution():
    with pytest.raises(TypeError, match=r"dist must be a Gaussian or GaussianMixture"):
        gauss_hermite_nodes(Banana(), 4)


def test_standard_nodes_dim_invalid():
    with pytest.raises(ValueError, match=r"dim must be a positive integer, got 0"):
        standard_normal_nodes(0, 3)
