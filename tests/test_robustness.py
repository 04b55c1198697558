"""Regression tests for input and numerical robustness.

(c) complex / object / str arrays are refused wherever user arrays enter;
(e) StudentT.logpdf stays accurate for every df (0.5 .. 1e300 and the Gaussian limit);
(f) fit reports a loss that blows up to huge but finite values;
(g) the NumPy reference sampler checks the shapes a custom target returns;
(h) empty batches (n = 0) are refused with a clear ValueError;
(j) parameter ranges where overflow is certain are refused, far-field mixture
    scores are finite, and overflowing losses raise instead of returning NaN.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import multivariate_normal, multivariate_t

import refscore
from refscore import losses, metrics, quadrature
from refscore._validation import as_float_array, as_points, check_positive, check_theta
from refscore.distributions import Banana, Gaussian, GaussianMixture, StudentT
from refscore.models import GaussianMixtureModel, GaussianModel, LinearScore
from refscore.training import fit


@pytest.fixture(autouse=True)
def _complex_warnings_are_errors():
    # a ComplexWarning means an imaginary part was silently dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        yield


# ----------------------------------------------------------------------------- (c)
X = np.array([[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]])
XC = X + 1j


def test_as_float_array_refuses_complex_object_and_str():
    with pytest.raises(TypeError, match=r"x must be a real array, got dtype complex128"):
        as_float_array(XC, "x")
    with pytest.raises(TypeError, match=r"x must be a real array, got dtype complex64"):
        as_float_array(XC.astype(np.complex64), "x")
    with pytest.raises(TypeError, match=r"x must be a real array, got dtype complex128"):
        as_float_array([1.0, 2j], "x")
    with pytest.raises(TypeError, match=r"y must be convertible to a float array of real numbers, got dtype <U3"):
        as_float_array(["1.0", "2.0"], "y")
    with pytest.raises(TypeError, match=r"z must be convertible to a float array of real numbers, got dtype object"):
        as_float_array(np.array([1.0, None], dtype=object), "z")
    with pytest.raises(TypeError, match=r"z must be convertible .* got dtype object"):
        as_float_array(np.array([1.0, 2j], dtype=object), "z")
    # real inputs still convert: ints, bools, float32, object arrays of real numbers
    assert as_float_array([1, 2], "x").dtype == np.float64
    assert as_float_array(np.float32(2.5), "x") == 2.5
    assert as_float_array(np.array([1, 2.5], dtype=object), "x").tolist() == [1.0, 2.5]


def test_scalar_and_central_validators_refuse_complex():
    with pytest.raises(TypeError, match="sigma"):
        check_positive("sigma", np.array(1.0 + 0j))
    with pytest.raises(TypeError, match="sigma"):
        check_positive("sigma", np.complex128(1.0))
    with pytest.raises(TypeError, match="sigma"):
        check_positive("sigma", [1.0 + 0j], allow_array=True)
    with pytest.raises(TypeError, match=r"theta must be a real array, got dtype complex128"):
        check_theta(np.zeros(3, dtype=complex), 3)
    with pytest.raises(TypeError, match=r"x must be a real array, got dtype complex128"):
        as_points(XC, 2)


def _distributions():
    return [
        Gaussian([0.0, 1.0], [[2.0, 0.3], [0.3, 1.0]]),
        GaussianMixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2), 2 * np.eye(2)]),
        StudentT([0.0, 0.0], np.eye(2), 4.0),
        Banana(),
    ]


@pytest.mark.parametrize("dist", _distributions(), ids=lambda d: type(d).__name__)
def test_distributions_refuse_complex(dist):
    for method in ("logpdf", "score", "score_jacobian", "score_trace"):
        with pytest.raises(TypeError, match=r"x must be a real array, got dtype complex128"):
            getattr(dist, method)(XC)
    with pytest.raises(TypeError, match=r"v must be a real array, got dtype complex128"):
        dist.score_jvp(X, XC)


def test_distribution_constructors_refuse_complex():
    with pytest.raises(TypeError, match=r"mean must be a real array"):
        Gaussian([0.0, 1j], np.eye(2))
    with pytest.raises(TypeError, match=r"cov must be a real array"):
        Gaussian([0.0, 0.0], np.eye(2) + 0j)
    with pytest.raises(TypeError, match=r"weights must be a real array"):
        GaussianMixture([0.5 + 0j, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(TypeError, match=r"means must be a real array"):
        GaussianMixture([0.5, 0.5], [[0.0], [1j]], [[[1.0]], [[1.0]]])
    with pytest.raises(TypeError, match=r"covs must be a real array"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0 + 0j]], [[1.0]]])
    with pytest.raises(TypeError, match=r"df"):
        StudentT([0.0], [[1.0]], np.array(3.0 + 0j))
    with pytest.raises(TypeError, match=r"\bb\b"):
        Banana(b=0.1 + 0j)
    with pytest.raises(TypeError, match=r"sigma1"):
        Banana(sigma1=np.array(2.0 + 0j))
    p = GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]]).perturbed()
    with pytest.raises(TypeError, match=r"sigma must be a real array"):
        p.score([[0.0]], 1.0 + 0j)
    with pytest.raises(TypeError, match=r"x must be a real array"):
        p.score([[0j]], 1.0)


def test_losses_refuse_complex():
    m = LinearScore(2)
    th = m.init()
    with pytest.raises(TypeError, match=r"theta must be a real array"):
        losses.ism(m, th + 0j, X)
    with pytest.raises(TypeError, match=r"x must be a real array"):
        losses.ism(m, th, XC)
    with pytest.raises(TypeError, match=r"target_score must be a real array"):
        losses.esm(m, th, X, XC)
    with pytest.raises(TypeError, match=r"target_score must be a real array"):
        losses.esm(m, th, X, lambda x: x + 1j)
    with pytest.raises(TypeError, match=r"eps must be a real array"):
        losses.dsm(m, th, X, 0.5, XC)
    with pytest.raises(TypeError, match=r"sigma"):
        losses.dsm(m, th, X, 0.5 + 0j, X)
    with pytest.raises(TypeError, match=r"v must be a real array"):
        losses.ssm(m, th, X, XC)
    with pytest.raises(TypeError, match=r"v must be a real array"):
        losses.ssm_vr(m, th, X, XC)


def test_dsm_multi_refuses_complex():
    from refscore.models import NoiseConditional

    nc = NoiseConditional(LinearScore(2))
    th = nc.init(0)
    labels = np.array([0, 1, 0])
    with pytest.raises(TypeError, match=r"eps must be a real array"):
        losses.dsm_multi(nc, th, X, [1.0, 0.5], labels, XC)
    with pytest.raises(TypeError, match=r"sigmas must be a real array"):
        losses.dsm_multi(nc, th, X, [1.0 + 0j, 0.5], labels, X)
    with pytest.raises(TypeError, match=r"x must be a real array"):
        losses.dsm_multi(nc, th, XC, [1.0, 0.5], labels, X)


def test_models_refuse_complex():
    for m in (GaussianModel(2), LinearScore(2), GaussianMixtureModel(2, 2)):
        th = m.init(0)
        with pytest.raises(TypeError, match=r"theta must be a real array"):
            m.score(th.astype(complex), X)
        with pytest.raises(TypeError, match=r"x must be a real array"):
            m.score(th, XC)
        with pytest.raises(TypeError, match=r"v must be a real array"):
            m.score_jvp(th, X, XC)
        with pytest.raises(TypeError, match=r"ct must be a real array"):
            m.score_vjp_params(th, X, XC)
    with pytest.raises(TypeError, match=r"mean must be a real array"):
        GaussianModel.theta_from([0.0, 1j], np.eye(2))


def test_metrics_and_quadrature_refuse_complex():
    with pytest.raises(TypeError, match=r"x must be a real array"):
        metrics.mmd(XC, X)
    with pytest.raises(TypeError, match=r"x must be a real array"):
        metrics.moments(XC)
    with pytest.raises(TypeError, match=r"score_fn\(x\) must be a real array"):
        metrics.ksd(X, lambda x: -x + 1j)
    with pytest.raises(TypeError, match=r"means must be a real array"):
        metrics.mode_weights(X, XC)
    g = Gaussian([0.0, 0.0], np.eye(2))
    with pytest.raises(TypeError, match=r"f\(x\) must be a real array"):
        quadrature.expectation(lambda x: x[:, 0] + 1j, g)
    with pytest.raises(TypeError, match=r"theta must be a real array"):
        quadrature.population_loss("ism", LinearScore(2), LinearScore(2).init() + 0j, g)


def test_fit_refuses_complex():
    m = GaussianModel(2)
    with pytest.raises(TypeError, match=r"data must be a real array"):
        fit(m, "ism", XC, steps=2)
    with pytest.raises(TypeError, match=r"theta0 must be a real array"):
        fit(m, "ism", X, steps=2, theta0=m.init() + 0j)
    with pytest.raises(TypeError, match=r"target_score must be a real array"):
        fit(m, "esm", X, steps=2, target_score=XC)


def test_samplers_refuse_complex_x0():
    g = Gaussian([0.0, 0.0], np.eye(2))
    with pytest.raises(TypeError, match=r"x0 must be a real array, got dtype complex128"):
        refscore.ula(g, XC, 0.1, 3, seed=0)
    with pytest.raises(TypeError, match=r"x0 must be a real array"):
        refscore.mala(g, XC, 0.1, 3, seed=0)


# ----------------------------------------------------------------------------- (e)
# exact values (mpmath, 60 + 2 log10(df) digits) of StudentT(0, diag(2, .5, 1.5)[:d], df).logpdf(x)
# at x = (0.7, -1.3, 0.4)[:d], for odd d where the normalising constant has no elementary form
_DIAG = np.array([2.0, 0.5, 1.5])
_XT = np.array([0.7, -1.3, 0.4])
_EXACT = {
    1: [(0.5, -1.956188606159508), (3.0, -1.5044685628793697), (1e3, -1.3883696046397498),
        (1e6, -1.388012480978383), (1e9, -1.3880121238421392), (1e12, -1.388012123485003),
        (1e16, -1.3880121234846454), (1e20, -1.3880121234846454), (1e100, -1.3880121234846454),
        (1e300, -1.3880121234846454)],
    3: [(0.5, -5.990080695041663), (3.0, -5.178447812672627), (1e3, -4.826746371124874),
        (1e6, -4.825382853166123), (1e9, -4.8253814883676), (1e12, -4.8253814870028),
        (1e16, -4.825381487001434), (1e20, -4.825381487001434), (1e100, -4.825381487001434),
        (1e300, -4.825381487001434)],
}
_DFS = [0.5, 1.0, 2.5, 7.0, 30.0, 1e2, 1e3, 1e4, 1e6, 1e8, 1e10, 1e12, 1e14, 1e16, 1e20,
        1e50, 1e100, 1e200, 1e300, 1.7e308]


@pytest.mark.parametrize("d", [1, 3])
def test_student_logpdf_matches_exact_values_odd_d(d):
    for df, ref in _EXACT[d]:
        t = StudentT(np.zeros(d), np.diag(_DIAG[:d]), df)
        assert abs(t.logpdf(_XT[:d]) - ref) <= 1e-13 * max(1.0, abs(ref)), df


def _exact_even(x, S, df):
    """Closed form for d = 2, 4: Γ(a+1)/Γ(a) = a and Γ(a+2)/Γ(a) = a(a+1), a = df/2."""
    d = S.shape[0]
    a = 0.5 * df
    const = -np.log(2 * np.pi) if d == 2 else np.log1p(1.0 / a) - 2 * np.log(2 * np.pi)
    q = np.einsum("ni,ij,nj->n", x, np.linalg.inv(S), x)
    return const - 0.5 * np.linalg.slogdet(S)[1] - (0.5 * df + 0.5 * d) * np.log1p(q / df)


@pytest.mark.parametrize("d", [2, 4])
def test_student_logpdf_matches_closed_form_even_d(d):
    rng = np.random.default_rng(d)
    A = rng.normal(size=(d, d))
    S = A @ A.T + d * np.eye(d)
    x = rng.normal(size=(6, d)) * 2.0
    for df in _DFS[:-1]:
        got = StudentT(np.zeros(d), S, df).logpdf(x)
        ref = _exact_even(x, S, df)
        assert np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))) <= 1e-13, df


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_student_logpdf_matches_scipy_where_scipy_is_exact(d):
    # scipy subtracts gammaln values of size ~ (df/2) log(df/2): it is exact to
    # 1e-13 only while those stay small; beyond, compare with the exact values above
    rng = np.random.default_rng(10 + d)
    A = rng.normal(size=(d, d))
    S = A @ A.T + np.eye(d)
    loc = rng.normal(size=d)
    x = loc + rng.normal(size=(7, d)) * 3.0
    for df in [0.5, 1.0, 2.5, 7.0, 30.0, 100.0]:
        got = StudentT(loc, S, df).logpdf(x)
        ref = multivariate_t(loc, S, df=df).logpdf(x)
        assert np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))) <= 1e-12, df


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_student_logpdf_gaussian_limit(d):
    rng = np.random.default_rng(20 + d)
    A = rng.normal(size=(d, d))
    S = A @ A.T + np.eye(d)
    loc = rng.normal(size=d)
    x = loc + rng.normal(size=(7, d))
    gauss = multivariate_normal(loc, S).logpdf(x)
    for df in [1e17, 1e20, 1e100, 1e300, 1.7e308]:
        t = StudentT(loc, S, df)
        np.testing.assert_allclose(t.logpdf(x), gauss, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(t.score(x), Gaussian(loc, S).score(x), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(t.score_jacobian(x), Gaussian(loc, S).score_jacobian(x),
                                   rtol=1e-12, atol=1e-14)
        assert np.isfinite(t.log_norm_const)


def test_student_log_norm_const_matches_gammaln_for_small_df():
    for d in (1, 2, 3, 7):
        for df in (0.5, 1.0, 3.0, 19.0, 20.5, 60.0):
            t = StudentT(np.zeros(d), np.eye(d), df)
            ref = gammaln(0.5 * (df + d)) - gammaln(0.5 * df) - 0.5 * d * np.log(df * np.pi)
            assert abs(t.log_norm_const - ref) <= 1e-13 * max(1.0, abs(ref)), (d, df)


def test_student_sampling_huge_df_is_gaussian():
    S = np.array([[2.0, 0.5], [0.5, 1.0]])
    for df in (1e300, 1.7e308):
        x = StudentT(np.zeros(2), S, df).sample(20000, rng=1)
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(np.cov(x.T), S, atol=0.1)
    # the draw is that of N(0, S) scaled by sqrt(nu / chi2_nu): same stream as before
    t = StudentT(np.zeros(2), S, 5.0)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 2)) @ t.chol.T
    g = rng.chisquare(5.0, size=4)
    np.testing.assert_array_equal(t.sample(4, rng=3), z / np.sqrt(g / 5.0)[:, None])


def test_student_far_field_is_finite():
    t = StudentT(np.zeros(2), np.eye(2), 3.0)
    x = np.array([[1e200, 0.0], [3e180, -4e180]])
    r = np.hypot(x[:, 0], x[:, 1])
    # log p = C - (nu + d)/2 log(1 + r²/nu) ≈ C - (nu + d)/2 (2 log r - log nu)
    ref = t.log_norm_const - 2.5 * (2 * np.log(r) - np.log(3.0))
    np.testing.assert_allclose(t.logpdf(x), ref, rtol=1e-14)
    s = t.score(x)
    np.testing.assert_allclose(s, -5.0 * (x / r[:, None]) / r[:, None], rtol=1e-14)
    assert np.all(np.isfinite(t.score_jacobian(x)))
    assert np.all(np.isfinite(t.score_trace(x)))
    assert np.all(np.isfinite(t.score_jvp(x, np.ones((2, 2)))))


# ----------------------------------------------------------------------------- (f)
def test_fit_reports_huge_finite_divergence():
    x = np.random.default_rng(0).normal(size=(200, 1))
    with pytest.raises(FloatingPointError, match=r"fit diverged at step \d+ of 50: loss .* rose"):
        fit(GaussianModel(1), "ism", x, steps=50, lr=1e4, rng=0)
    with pytest.raises(FloatingPointError, match=r"fit diverged"):
        fit(GaussianModel(1), "dsm", x, steps=50, lr=1e4, rng=0, sigma=0.5)


def test_fit_still_converges_and_allows_large_downward_moves():
    x = np.random.default_rng(1).normal(size=(500, 2))
    res = fit(GaussianModel(2), "ism", x, steps=300, lr=0.05, rng=0)
    assert res.history[-1] < res.history[0]
    # tiny-scale data with an aggressive lr: the ISM loss falls from -1 to below -1e3 and
    # Adam's overshoots swing it up to ~6e4 on the way; neither is divergence
    xs = 1e-3 * np.random.default_rng(2).normal(size=(400, 1))
    res = fit(GaussianModel(1), "ism", xs, steps=400, lr=0.5, rng=0)
    assert np.all(np.isfinite(res.history))
    assert res.history.min() < -1e3 and res.history.max() > 1e4


# ----------------------------------------------------------------------------- (g)
class _BadScore:
    dim = 2

    def __init__(self, score_shape="ok", logpdf_shape="ok"):
        self.score_shape, self.logpdf_shape = score_shape, logpdf_shape

    def score(self, x):
        s = -x
        return s[:, 0] if self.score_shape == "flat" else s

    def logpdf(self, x):
        lp = -0.5 * np.sum(x * x, axis=1)
        return lp[:, None] if self.logpdf_shape == "column" else lp


def test_reference_sampler_checks_score_shape():
    x0 = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"target.score\(x\) must return shape \(n, d\) = \(5, 2\), got \(5,\)"):
        refscore.ula(_BadScore("flat"), x0, 0.1, 3, seed=0)
    with pytest.raises(ValueError, match=r"must return shape \(n, d\) = \(5, 2\), got \(5,\)"):
        refscore.mala(_BadScore("flat"), x0, 0.1, 3, seed=0)
    with pytest.raises(ValueError, match=r"logpdf\(x\) must return shape \(n,\) = \(5,\), got \(5, 1\)"):
        refscore.mala(_BadScore(logpdf_shape="column"), x0, 0.1, 3, seed=0)
    res = refscore.mala(_BadScore(), x0, 0.1, 3, seed=0)
    assert res.x.shape == (5, 2)


# ----------------------------------------------------------------------------- (h)
EMPTY = np.zeros((0, 2))
_EMPTY_MSG = r"x must hold at least one point, got shape \(0, 2\)"


def test_empty_batches_refused():
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        as_points(EMPTY, 2)
    m = LinearScore(2)
    th = m.init()
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        losses.ism(m, th, EMPTY)
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        losses.esm(m, th, EMPTY, EMPTY)
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        losses.dsm(m, th, EMPTY, 0.5, EMPTY)
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        losses.ssm(m, th, EMPTY, EMPTY)
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        m.score(th, EMPTY)
    from refscore.models import NoiseConditional

    nc = NoiseConditional(LinearScore(2))
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        losses.dsm_multi(nc, nc.init(0), EMPTY, [1.0, 0.5], np.zeros(0, dtype=int), EMPTY)
    with pytest.raises(ValueError, match=r"data must hold at least one point, got shape \(0, 2\)"):
        fit(GaussianModel(2), "ism", EMPTY, steps=2)
    for dist in _distributions():
        with pytest.raises(ValueError, match=_EMPTY_MSG):
            dist.score(EMPTY)
        with pytest.raises(ValueError, match=_EMPTY_MSG):
            dist.logpdf(EMPTY)
    p = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2)] * 2).perturbed()
    with pytest.raises(ValueError, match=_EMPTY_MSG):
        p.score(EMPTY, 1.0)


def test_empty_still_allowed_where_meaningful():
    for dist in _distributions():
        assert dist.sample(0, rng=0).shape == (0, 2)
    g = Gaussian([0.0, 0.0], np.eye(2))
    res = refscore.ula(g, np.zeros((3, 2)), 0.1, 0, seed=0)
    np.testing.assert_array_equal(res.x, np.zeros((3, 2)))
    res = refscore.mala(g, np.ones((3, 2)), 0.1, 0, seed=0)
    np.testing.assert_array_equal(res.x, np.ones((3, 2)))


# ----------------------------------------------------------------------------- (j)
def test_banana_parameter_ranges():
    with pytest.raises(ValueError, match=r"sigma1 must lie in \[1e-150, 1e\+?150\]"):
        Banana(sigma1=1e300)
    with pytest.raises(ValueError, match=r"sigma1 must lie in"):
        Banana(sigma1=1e-200)
    with pytest.raises(ValueError, match=r"\|b\| \* sigma1\*\*2 must be <= 1e\+?150"):
        Banana(b=1e300, sigma1=1.0)
    with pytest.raises(ValueError, match=r"\|b\| \* sigma1\*\*2"):
        Banana(b=1e-10, sigma1=1e100)
    # extreme but representable parameters still evaluate to finite numbers
    for b, s1 in [(0.1, 1e70), (1e-120, 1e120), (0.0, 1e150), (1e100, 1e-100), (-3.0, 1e-150)]:
        ban = Banana(b=b, sigma1=s1)
        x = ban.sample(50, rng=0)
        assert np.all(np.isfinite(x))
        for f in (ban.logpdf, ban.score, ban.score_jacobian, ban.score_trace):
            assert np.all(np.isfinite(f(x))), (b, s1, f.__name__)


def test_noise_levels_whose_square_overflows_are_refused():
    m = GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[2.0]]])
    with pytest.raises(ValueError, match=r"sigma must be <= 1e\+?150"):
        m.noised(1e200)
    with pytest.raises(ValueError, match=r"sigma must be <= 1e\+?150"):
        m.perturbed().score([[0.0], [1.0]], [1.0, 1e200])
    with pytest.raises(ValueError, match=r"sigma must be <= 1e\+?150"):
        Gaussian([0.0], [[1.0]]).noised(1e160)
    # the largest allowed level still gives finite scores
    assert np.all(np.isfinite(m.perturbed().score([[0.0], [1e100]], 1e150)))


def test_gaussian_cov_whose_inverse_overflows_is_refused():
    with pytest.raises(ValueError, match=r"cov .*inverse overflows"):
        Gaussian([0.0], [[1e-320]])
    with pytest.raises(ValueError, match=r"covs\[1\] .*inverse overflows"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[1e-320]]])
    with pytest.raises(ValueError, match=r"shape .*inverse overflows"):
        StudentT([0.0], [[1e-320]], 3.0)


FAR = np.array([[1e200, 1e200], [1e160, -1e160], [-3e300, 2.0], [1e150, 3.0], [2e154, 1e154]])


def test_gaussian_mixture_far_field_scores_are_finite():
    covs = np.array([[[1.0, 0.3], [0.3, 2.0]], [[0.5, 0.0], [0.0, 0.5]], [[3.0, -1.0], [-1.0, 1.0]]])
    m = GaussianMixture([0.2, 0.5, 0.3], [[0.0, 0.0], [1.0, -1.0], [-2.0, 3.0]], covs)
    s = m.score(FAR)
    assert np.all(np.isfinite(s))
    # far away the score is that of the component nearest in Mahalanobis distance
    for n in range(FAR.shape[0]):
        # nearest in Mahalanobis distance, ranked on the rescaled direction (no overflow)
        z = FAR[n] / np.max(np.abs(FAR[n]))
        near = int(np.argmin([z @ P @ z for P in m.precisions]))
        comp = -m.precisions[near] @ (FAR[n] - m.means[near])
        # the components of s cancel to ~1e-16 |x|: compare on the scale of |x|
        np.testing.assert_allclose(s[n], comp, rtol=1e-12, atol=1e-13 * np.max(np.abs(FAR[n])))
        np.testing.assert_allclose(m.score_jacobian(FAR[n]), -m.precisions[near], rtol=1e-12)
    assert np.all(np.isfinite(m.score_trace(FAR)))
    assert np.all(np.isfinite(m.score_jvp(FAR, np.ones_like(FAR))))
    lp = m.logpdf(FAR)
    assert not np.any(np.isnan(lp))
    assert np.all(lp[np.isfinite(lp)] < -1e290)
    p = m.perturbed()
    sp = p.score(FAR, 0.5)
    assert np.all(np.isfinite(sp))
    np.testing.assert_allclose(sp, m.noised(0.5).score(FAR), rtol=1e-10)
    assert not np.any(np.isnan(p.logpdf(FAR, 0.5)))


def test_one_dim_mixture_far_field():
    m = GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [[[1.0]], [[4.0]]])
    x = np.array([[1e200], [-1e200], [1e300]])
    # the wider component (variance 4) dominates on both sides
    np.testing.assert_allclose(m.score(x), -(x - 2.0) / 4.0, rtol=1e-14)


def test_mixture_model_far_field_is_finite():
    m = GaussianMixtureModel(2, 3)
    th = m.init(0)
    th[-3:] = [0.0, -0.5, 0.7]  # different precisions: exp(0), exp(-0.5), exp(0.7)
    s = m.score(th, FAR)
    assert np.all(np.isfinite(s))
    _, mu, eta = m.unpack(th)
    widest = int(np.argmin(eta))
    np.testing.assert_allclose(s, -np.exp(eta[widest]) * (FAR - mu[widest]), rtol=1e-12)
    for out in (m.score_jacobian(th, FAR), m.score_trace(th, FAR), m.score_jvp(th, FAR, np.ones_like(FAR))):
        assert np.all(np.isfinite(out))
    np.testing.assert_allclose(m.score_jacobian(th, FAR)[0], -np.exp(eta[widest]) * np.eye(2))
    w = np.full(FAR.shape[0], 0.2)
    for g in (m.score_vjp_params(th, FAR[:2], np.ones((2, 2)) * 1e-200),
              m.trace_grad_params(th, FAR[:2], w[:2]),
              m.vjv_grad_params(th, FAR[:2], np.ones((2, 2)), w[:2])):
        assert not np.any(np.isnan(g))
    lp = m._log_density(th)(FAR)
    assert not np.any(np.isnan(lp))


def test_huge_theta_losses_raise_instead_of_nan():
    x = np.random.default_rng(0).normal(size=(5, 2))
    for m in (GaussianModel(2), LinearScore(2)):
        th = m.init() * 1e200
        with pytest.raises(FloatingPointError, match=r"overflow"):
            losses.ism(m, th, x)
        with pytest.raises(FloatingPointError, match=r"overflow"):
            losses.esm(m, th, x, x)
        with pytest.raises(FloatingPointError, match=r"overflow"):
            quadrature.population_loss("ism", m, th, Gaussian(np.zeros(2), np.eye(2)))
    gm = GaussianModel(2)
    with pytest.raises(FloatingPointError, match=r"P = L L\^T overflows"):
        gm.score(gm.init() * 1e200, x)
    # large but representable theta still gives the right finite answer
    th = GaussianModel.theta_from(np.zeros(2), 1e100 * np.eye(2))
    np.testing.assert_allclose(gm.score(th, x * 1e-100), -x)
