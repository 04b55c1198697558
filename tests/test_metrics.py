"""Tests of refscore.metrics: MMD, KSD, the KSD test, mode weights, moments.

Oracles: closed-form kernel expectations for Gaussians (MMD), central finite
differences of the IMQ kernel and Stein's identity by scipy quadrature (Stein
kernel), a scipy double integral (population KSD), naive O(n²) formulas written
here, and repeated-seed statistics with binomial bounds (the test's level).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.spatial.distance import cdist, pdist

from refscore import metrics
from refscore.distributions import Gaussian
from refscore.metrics import (
    KSDTestResult,
    imq_stein_kernel,
    ksd,
    ksd_test,
    median_bandwidth,
    mmd,
    mode_weights,
    moments,
)


def std_score(x):
    """Score of N(0, I)."""
    return -x


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Force many row blocks so the chunked paths are exercised."""
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 8 * 37)


# ----------------------------------------------------------------------- MMD
def naive_mmd2_u(x, y, h):
    """Gretton et al. 2012 eq. (3), written from the definition with full matrices."""
    kxx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * h * h))
    kyy = np.exp(-cdist(y, y, "sqeuclidean") / (2 * h * h))
    kxy = np.exp(-cdist(x, y, "sqeuclidean") / (2 * h * h))
    m, n = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def test_median_bandwidth_hand_example():
    # distances 1, 3, 2 -> median 2
    assert median_bandwidth([[0.0], [1.0], [3.0]]) == pytest.approx(2.0, rel=1e-15)


def test_median_bandwidth_is_median_of_pooled_pairwise_distances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 3)), rng.normal(size=(50, 3)) + 1.0
    want = np.median(pdist(np.concatenate([x, y])))
    # 1e-12: Gram-expansion distances vs scipy's direct differences, O(10) values
    assert median_bandwidth(x, y) == pytest.approx(want, rel=1e-12)
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=want), rel=1e-10)


def test_median_bandwidth_subsample_for_large_pooled_samples():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2600, 2))
    exact = np.median(pdist(z))
    h = median_bandwidth(z)
    # deterministic (fixed internal seed)
    assert h == median_bandwidth(z)
    # 3 %: the median over 2000 of 2600 points has a relative sampling SD of
    # about 0.5 % (measured over 10 data sets); 3 % is ~6 SD
    assert h == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize("shape", [(40, 1), (31, 3)])
def test_mmd_matches_naive_formula(shape, tiny_blocks):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    y = rng.normal(size=(shape[0] + 7, shape[1])) * 1.3 + 0.4
    # 1e-12 abs: sums of O(n²) terms in [0, 1] by two different routes
    assert mmd(x, y, bandwidth=0.8) == pytest.approx(naive_mmd2_u(x, y, 0.8), abs=1e-12)


def test_mmd_unbiased_against_closed_form_1d():
    """E MMD²_u equals the closed form; the biased V-statistic visibly does not.

    For x~N(a,s1²), y~N(b,s2²): E exp(-(x-y)²/(2h²)) = h/√(h²+s1²+s2²) exp(-(a-b)²/(2(h²+s1²+s2²))).
    """
    a, s1, b, s2, h = 0.0, 1.0, 0.7, 1.5, 1.2

    def ek(ma, sa, mb, sb):
        v = h * h + sa * sa + sb * sb
        return h / np.sqrt(v) * np.exp(-((ma - mb) ** 2) / (2 * v))

    exact = ek(a, s1, a, s1) + ek(b, s2, b, s2) - 2 * ek(a, s1, b, s2)
    rng = np.random.default_rng(7)
    m, n, reps = 40, 60, 300
    u_vals, v_vals = [], []
    for _ in range(reps):
        x = rng.normal(a, s1, size=(m, 1))
        y = rng.normal(b, s2, size=(n, 1))
        u_vals.append(mmd(x, y, bandwidth=h))
        kxx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * h * h))
        kyy = np.exp(-cdist(y, y, "sqeuclidean") / (2 * h * h))
        kxy = np.exp(-cdist(x, y, "sqeuclidean") / (2 * h * h))
        v_vals.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    u_vals, v_vals = np.array(u_vals), np.array(v_vals)
    se = u_vals.std(ddof=1) / np.sqrt(reps)
    # 4 standard errors of the mean of 300 independent estimates: a false alarm
    # has probability < 1e-4
    assert abs(u_vals.mean() - exact) < 4 * se
    # negative control: the V-statistic's bias (1-E k(x,x'))/m + (1-E k(y,y'))/n
    # is about 0.015 here, > 10 SE, so this comparison has the power to fail
    assert abs(v_vals.mean() - exact) > 4 * se


def test_mmd_same_law_near_zero_and_shift_clearly_positive():
    """20 seeds, n = 300 in 2-D: null values are O(1/n) and unbiased; shifted ones dominate."""
    null, shifted = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
        null.append(mmd(x, y))
        shifted.append(mmd(x, y + 0.5))
    null, shifted = np.array(null), np.array(shifted)
    # null SD of MMD²_u is O(1/n): measured ~0.002 at n = 300; 0.02 is ~10 SD
    assert np.max(np.abs(null)) < 0.02
    # the null mean is 0 (unbiased given the bandwidth): within 4 SE of 20 values
    assert abs(null.mean()) < 4 * null.std(ddof=1) / np.sqrt(20)
    # a 0.5 shift gives MMD² ≈ 0.04 at the median bandwidth: every shifted value
    # exceeds every null value
    assert shifted.min() > np.max(np.abs(null))
    assert shifted.min() > 0.02


# -------------------------------------------------------------- Stein kernel
def imq(x, y, c=1.0, beta=-0.5):
    return (c * c + np.sum((x - y) ** 2)) ** beta


def stein_kernel_fd(x, y, sx, sy, c=1.0, beta=-0.5, h=1e-4):
    """u_p by central finite differences of the IMQ kernel alone."""
    d = len(x)
    e = np.eye(d) * h
    gx = np.array([(imq(x + e[i], y, c, beta) - imq(x - e[i], y, c, beta)) / (2 * h) for i in range(d)])
    gy = np.array([(imq(x, y + e[i], c, beta) - imq(x, y - e[i], c, beta)) / (2 * h) for i in range(d)])
    tr = sum(
        (
            imq(x + e[i], y + e[i], c, beta)
            - imq(x + e[i], y - e[i], c, beta)
            - imq(x - e[i], y + e[i], c, beta)
            + imq(x - e[i], y - e[i], c, beta)
        )
        / (4 * h * h)
        for i in range(d)
    )
    return sx @ sy * imq(x, y, c, beta) + sx @ gy + sy @ gx + tr


@settings(max_examples=20)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 4),
    c=st.floats(0.5, 2.0),
    beta=st.floats(-0.9, -0.1),
)
def test_stein_kernel_matches_finite_differences(seed, d, c, beta):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(3, d)), rng.normal(size=(4, d))
    sx, sy = rng.normal(size=(3, d)), rng.normal(size=(4, d))
    u = imq_stein_kernel(x, y, sx, sy, c=c, beta=beta)
    h = 1e-4 * c  # the kernel varies on the length scale c
    fd = np.array([[stein_kernel_fd(x[i], y[j], sx[i], sy[j], c, beta, h) for j in range(4)] for i in range(3)])
    # truncation O(h²)·∂⁴k with ∂⁴k = O(c^(2β-4)), round-off ε·k/h² = O(1e-16·c^(2β)/h²):
    # both are ~1e-8·c^(2β-2) times O(10) constants; scale the tolerance the same way
    tol = 1e-6 * c ** (2 * beta - 2)
    np.testing.assert_allclose(u, fd, rtol=tol, atol=tol)


@pytest.mark.parametrize("y0", [-1.3, 0.2, 2.5])
def test_stein_identity_by_quadrature(y0):
    """E_{x~p} u_p(x, y) = 0 for every y (Stein's identity), p = N(0.4, 0.8²)."""
    mu, sd = 0.4, 0.8
    score = lambda t: -(t - mu) / sd**2  # noqa: E731

    def integrand(t):
        u = imq_stein_kernel([[t]], [[y0]], [[score(t)]], [[score(y0)]])[0, 0]
        return u * stats.norm.pdf(t, mu, sd)

    val, err = integrate.quad(integrand, mu - 12 * sd, mu + 12 * sd, epsabs=1e-13, limit=200)
    # quad's error estimate is ~1e-14; the Gaussian tail beyond 12 SD is < 1e-30
    assert abs(val) < 1e-10
    # negative control: against a wrong score the same integral is clearly nonzero
    def wrong(t):
        u = imq_stein_kernel([[t]], [[y0]], [[score(t) + 1.0]], [[score(y0) + 1.0]])[0, 0]
        return u * stats.norm.pdf(t, mu, sd)

    assert abs(integrate.quad(wrong, mu - 12 * sd, mu + 12 * sd)[0]) > 1e-3


# ----------------------------------------------------------------------- KSD
def test_ksd_is_offdiagonal_mean_of_stein_kernel(tiny_blocks):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(45, 3)) * 2.0 + 5.0  # off-centre: exercises the centring
    g = Gaussian([4.0, 5.0, 6.0], np.diag([3.0, 4.0, 5.0]))
    u = imq_stein_kernel(x, x, g.score(x), g.score(x))
    want = (u.sum() - np.trace(u)) / (45 * 44)
    # 1e-12 rel: the same O(n²) terms, summed blockwise vs at once
    assert ksd(x, g.score) == pytest.approx(want, rel=1e-12)
    # an array of scores is the same as the callable
    assert ksd(x, g.score(x)) == ksd(x, g.score)


def test_ksd_exact_sampler_near_zero_and_shift_clearly_positive():
    g = Gaussian([1.0, -1.0], [[2.0, 0.6], [0.6, 1.0]])
    null, shifted = [], []
    for seed in range(20):
        x = g.sample(500, rng=seed)
        null.append(ksd(x, g.score))
        shifted.append(ksd(x + np.array([0.0, 0.5]), g.score))
    null, shifted = np.array(null), np.array(shifted)
    # the null U-statistic is degenerate, SD O(1/n) (~0.003 measured for N(0, I) at
    # n = 500); 0.02 is several times that
    assert np.max(np.abs(null)) < 0.02
    # population KSD² is 0 under the null and the estimator is unbiased: 4 SE
    assert abs(null.mean()) < 4 * null.std(ddof=1) / np.sqrt(20)
    # negative control: a 0.5 shift of the second coordinate (conditional SD 0.86)
    # gives KSD² ≈ 0.12-0.15 (measured), far above every null value
    assert shifted.min() > 5 * np.max(np.abs(null))


def test_ksd_unbiased_for_population_value_by_double_integral():
    """Sample law q = N(0.5, 1.2²), target p = N(0, 1): E KSD²_u = ∫∫ u_p q q."""
    m, s = 0.5, 1.2

    def f(b, a):
        u = imq_stein_kernel([[a]], [[b]], [[-a]], [[-b]])[0, 0]
        return u * stats.norm.pdf(a, m, s) * stats.norm.pdf(b, m, s)

    lo, hi = m - 10 * s, m + 10 * s
    pop, err = integrate.dblquad(f, lo, hi, lo, hi, epsabs=1e-7, epsrel=1e-7)
    assert pop > 0.01  # a wrong law has positive discrepancy
    rng = np.random.default_rng(11)
    vals = np.array([ksd(rng.normal(m, s, size=(400, 1)), std_score) for _ in range(30)])
    se = vals.std(ddof=1) / np.sqrt(len(vals))
    # 4 SE of the mean of 30 independent unbiased estimates (SE ~1e-3; quad error ~1e-7 is negligible)
    assert abs(vals.mean() - pop) < 4 * se


# ------------------------------------------------------------------ KSD test
def test_ksd_test_level_over_repeated_seeds():
    """Under the null, P(reject at 5 %) ≈ 0.05: 500 repetitions, n = 100, n_boot = 200."""
    reps = 500
    rejections = 0
    for seed in range(reps):
        x = np.random.default_rng(seed).normal(size=(100, 1))
        rejections += ksd_test(x, std_score, n_boot=200, rng=10_000 + seed).reject(0.05)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], reps, 0.05)
    # the 99.9 % binomial interval of the count of an exact 5 % test
    assert lo <= rejections <= hi, (rejections, lo, hi)


def test_ksd_test_power_against_shift():
    # a mean shift of 0.5 at n = 200: p-values measured <= 0.005 over 50 seeds, so
    # rejecting at 5 % in all 10 seeds here is not luck
    for seed in range(10):
        x = np.random.default_rng(seed).normal(size=(200, 1)) + 0.5
        res = ksd_test(x, std_score, n_boot=200, rng=seed)
        assert res.reject(0.05), res


def test_ksd_test_result_fields_and_reproducibility():
    x = np.random.default_rng(0).normal(size=(60, 2))
    res = ksd_test(x, std_score, n_boot=50, rng=3)
    assert isinstance(res, KSDTestResult)
    assert res.n_boot == 50 and res.n == 60 and res.bootstrap.shape == (50,)
    # the statistic is exactly ksd's (same Stein matrix, diagonal removed)
    assert res.statistic == pytest.approx(ksd(x, std_score), rel=1e-12)
    want_p = (1 + np.sum(res.bootstrap >= res.statistic)) / 51
    assert res.p_value == want_p
    assert 1 / 51 <= res.p_value <= 1.0
    again = ksd_test(x, std_score, n_boot=50, rng=3)
    assert again.p_value == res.p_value
    np.testing.assert_array_equal(again.bootstrap, res.bootstrap)


def test_ksd_test_bootstrap_matches_naive(tiny_blocks):
    x = np.random.default_rng(4).normal(size=(30, 2))
    res = ksd_test(x, std_score, n_boot=7, rng=5)
    w = np.random.default_rng(5).integers(0, 2, size=(7, 30)) * 2.0 - 1.0
    u = imq_stein_kernel(x, x, -x, -x)
    np.fill_diagonal(u, 0.0)
    want = np.einsum("bi,ij,bj->b", w, u, w) / (30 * 29)
    # 1e-12 abs: O(n²) terms of size O(1) summed by two routes
    np.testing.assert_allclose(res.bootstrap, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------- mode weights
def test_mode_weights_constructed():
    means = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    rng = np.random.default_rng(0)
    counts = [2, 3, 5]
    pts = [means[k] + rng.uniform(-1, 1, size=(c, 2)) for k, c in enumerate(counts)]
    x = np.concatenate(pts)
    np.testing.assert_array_equal(mode_weights(x, means), np.array(counts) / 10)


def test_mode_weights_ties_go_to_lowest_index_and_empty_modes():
    w = mode_weights([[0.0], [0.0], [3.0]], [[-1.0], [1.0], [10.0]])
    np.testing.assert_array_equal(w, [2 / 3, 1 / 3, 0.0])


def test_mode_weights_matches_bruteforce(tiny_blocks):
    rng = np.random.default_rng(1)
    x, means = rng.normal(size=(300, 3)), rng.normal(size=(4, 3))
    labels = np.argmin(cdist(x, means), axis=1)
    np.testing.assert_array_equal(mode_weights(x, means), np.bincount(labels, minlength=4) / 300)


# ------------------------------------------------------------------ moments
def test_moments_against_numpy_and_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) @ np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 2.0]])
    m = moments(x)
    # 1e-12: same sums in a different order
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.cov, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.mean_se, np.sqrt(np.diag(np.cov(x, rowvar=False)) / 200), rtol=1e-12)
    c = x - x.mean(axis=0)
    se = np.array([[np.std(c[:, a] * c[:, b]) for b in range(3)] for a in range(3)]) / np.sqrt(200)
    np.testing.assert_allclose(m.cov_se, se, rtol=1e-10)
    mean, cov, *_ = m  # unpacks like a tuple
    assert mean.shape == (3,) and cov.shape == (3, 3)


def test_moments_cov_se_gaussian_limit():
    # for a Gaussian, Var[(x_a-μ_a)(x_b-μ_b)] = Σ_aa Σ_bb + Σ_ab²
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    n = 40_000
    x = Gaussian([0.0, 0.0], cov).sample(n, rng=1)
    want = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    # 5 %: the fourth-moment estimate at n = 4e4 has relative SD ~1-2 %
    np.testing.assert_allclose(moments(x).cov_se, want, rtol=0.05)


# --------------------------------------------------------------- validation
def test_sample_must_be_2d():
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\).*x\[:, None\]"):
        mmd(np.zeros(5), np.zeros((5, 1)))


def test_sample_needs_two_points():
    with pytest.raises(ValueError, match="x must hold at least 2 points, got 1"):
        ksd(np.zeros((1, 2)), std_score)


def test_sample_must_be_finite():
    x = np.zeros((4, 2))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="y must be finite"):
        mmd(np.ones((4, 2)), x)


def test_sample_must_be_numeric():
    with pytest.raises(TypeError, match="x must be convertible"):
        moments([["a", "b"], ["c", "d"]])


def test_mmd_dimension_mismatch():
    with pytest.raises(ValueError, match="y must have 2 columns like x"):
        mmd(np.zeros((4, 2)), np.zeros((4, 3)))


def test_median_bandwidth_dimension_mismatch():
    with pytest.raises(ValueError, match="y must have 2 columns like x"):
        median_bandwidth(np.zeros((4, 2)), np.zeros((4, 3)))


def test_mmd_bandwidth_positive():
    with pytest.raises(ValueError, match="bandwidth must be finite and > 0"):
        mmd(np.zeros((4, 1)), np.ones((4, 1)), bandwidth=0.0)


@pytest.mark.parametrize("scale", [2.0**660, 1e200, 2.0**-700, 1e-210])
def test_mmd_at_extreme_scales_equals_the_unit_scale_value(scale):
    # squared distances of points near 1e200 overflow float64, near 1e-210 they underflow to 0; the
    # RBF MMD with the median bandwidth is invariant under x, y -> a x, a y, and so must be refscore's
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(25, 2)) + 1.0
    ref, h = mmd(x, y), median_bandwidth(x, y)
    # a power of two scales every rounding alike; 1e200 and 1e-210 round the inputs once (1e-16
    # relative), which moves the median and the sums by a few ulps: 1e-12 allows that and no more
    assert mmd(scale * x, scale * y) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert median_bandwidth(scale * x, scale * y) == pytest.approx(scale * h, rel=1e-12)
    assert mmd(scale * x, scale * y, bandwidth=scale * 0.8) == pytest.approx(mmd(x, y, bandwidth=0.8),
                                                                             rel=1e-12, abs=1e-15)
    assert ref > 0.05  # the shift is seen: the comparison is not between two zeros


def test_mmd_bandwidth_extremes():
    x = np.random.default_rng(4).normal(size=(20, 2))
    for h in (1e-160, 1e-200):  # 1/(2h^2) overflows: was NaN and ZeroDivisionError
        with pytest.raises(ValueError, match="bandwidth .* too small") as exc:
            mmd(x, x + 1.0, bandwidth=h)
        assert "coincide" not in str(exc.value)
    # a bandwidth far above every distance: every kernel value is 1 to float64 precision, so the
    # estimate is 0 (its exact value is O(1/h^2) = 1e-400); was OverflowError from h**2
    assert mmd(x, x + 1.0, bandwidth=1e200) == 0.0


def test_mmd_points_that_coincide_in_float64_are_still_named():
    # 1e200 + N(0, 1) rounds to 1e200 itself: these points do coincide in float64
    x = 1e200 + np.random.default_rng(5).normal(size=(8, 1))
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd(x, x)


def test_ksd_overflow_is_reported_not_nan():
    # points near 1e200 with the scores of N(0, I) there: s(x)^T s(y) and ||x - y||^2 overflow
    x = 1e200 * np.random.default_rng(6).normal(size=(10, 2))
    calls = {"ksd": lambda: ksd(x, std_score), "ksd_test": lambda: ksd_test(x, std_score, n_boot=5, rng=0),
             "imq_stein_kernel": lambda: imq_stein_kernel(x, x, -x, -x)}
    for name, call in calls.items():
        with pytest.raises(FloatingPointError) as exc:
            call()
        msg = str(exc.value)
        assert msg.startswith(f"{name}: float64 overflow in the Stein kernel") and "e+200" in msg, msg
        assert "\n" not in msg


def test_median_bandwidth_degenerate():
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd(np.zeros((6, 1)), np.zeros((6, 1)))


def test_ksd_score_shape():
    with pytest.raises(ValueError, match=r"score_fn\(x\) must have the shape of x \(5, 2\)"):
        ksd(np.zeros((5, 2)), lambda x: x[:, 0])


def test_ksd_score_array_shape():
    with pytest.raises(ValueError, match=r"score_fn must have the shape of x"):
        ksd(np.zeros((5, 2)), np.zeros((4, 2)))


def test_ksd_score_finite():
    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(
        ValueError, match=r"score_fn\(x\) must be finite"
    ):
        ksd(np.zeros((5, 2)), lambda x: x / 0.0)


def test_ksd_c_positive():
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        ksd(np.zeros((5, 1)), std_score, c=-1.0)


def test_ksd_beta_range():
    with pytest.raises(ValueError, match=r"beta must lie in \(-1, 0\)"):
        ksd(np.zeros((5, 1)), std_score, beta=0.5)


def test_ksd_beta_type():
    with pytest.raises(TypeError, match="beta must be a real number"):
        ksd(np.zeros((5, 1)), std_score, beta="half")


def test_ksd_test_n_boot_type():
    with pytest.raises(TypeError, match="n_boot must be an integer"):
        ksd_test(np.zeros((5, 1)), std_score, n_boot=10.5)


def test_ksd_test_n_boot_positive():
    with pytest.raises(ValueError, match="n_boot must be >= 1, got 0"):
        ksd_test(np.zeros((5, 1)), std_score, n_boot=0)


def test_ksd_test_rng_type():
    with pytest.raises(TypeError, match="rng must be None, an int or"):
        ksd_test(np.zeros((5, 1)), std_score, n_boot=5, rng="seed")


def test_reject_alpha_range():
    res = ksd_test(np.random.default_rng(0).normal(size=(5, 1)), std_score, n_boot=5, rng=0)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        res.reject(1.5)


def test_reject_alpha_type():
    res = ksd_test(np.random.default_rng(0).normal(size=(5, 1)), std_score, n_boot=5, rng=0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        res.reject("0.05")


def test_stein_kernel_dimension_mismatch():
    with pytest.raises(ValueError, match="y must have 2 columns like x"):
        imq_stein_kernel(np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((2, 2)), np.zeros((2, 1)))


def test_mode_weights_dimension_mismatch():
    with pytest.raises(ValueError, match="means must have 2 columns like x"):
        mode_weights(np.zeros((3, 2)), np.zeros((2, 3)))
