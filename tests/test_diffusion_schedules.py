"""Diffusion schedules: derivatives by finite differences and by identities, inverse log-SNR maps,
converters, and the discrete DDPM tables against a transcription of diffusers' formulas."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refscore.diffusion import tables
from refscore.diffusion.schedules import EDM, SCHEDULES, VE, VP, Flow, Schedule, SubVP, VPDiscrete, convert

SCHEDS = {
    "vp": VP(),
    "vp_wide": VP(0.5, 35.0),
    "subvp": SubVP(),
    "ve": VE(0.01, 50.0),
    "edm": EDM(),
    "flow": Flow(),
    "ddpm_linear": VPDiscrete(),
    "ddpm_scaled": VPDiscrete(1000, 0.00085, 0.012, "scaled_linear"),
    "ddpm_cosine": VPDiscrete(beta_schedule="squaredcos_cap_v2"),
    "ddpm_zero_snr": VPDiscrete(1000, 0.00085, 0.012, "scaled_linear", rescale_betas_zero_snr=True),
}


def _interior(s):
    """Times inside the domain, away from its ends and (for VPDiscrete) from the integer knots."""
    if isinstance(s, VPDiscrete):
        return np.array([-0.7, 0.3, 10.45, 250.6, 777.2, s.t_max - 30.5, s.t_max - 0.6])
    if isinstance(s, EDM):
        return np.array([0.003, 0.1, 1.0, 7.5, 80.0])
    return np.array([1e-3, 0.05, 0.3, 0.5, 0.8, 0.97])


def _fd(fun, t, h):
    """Central differences with one Richardson step, (4 D(h/2) - D(h)) / 3: truncation O(h^4)."""
    d = lambda k: (fun(t + k) - fun(t - k)) / (2.0 * k)  # noqa: E731
    return (4.0 * d(h / 2) - d(h)) / 3.0


def _step(s, t):
    """1e-3 of the distance to the nearer end of the domain (sigma ~ sqrt(t) at t = 0 for VP, Flow's
    f = -1/(1 - t) at t = 1); 1e-3 absolute on VPDiscrete's unit segments (every test time is >= 0.3 from a knot)."""
    if isinstance(s, VPDiscrete):
        return np.full_like(t, 1e-3)
    return 1e-3 * (np.minimum(t, 1.0 - t) if isinstance(s, Flow) else t)


# ------------------------------------------------------------ derivatives: finite differences
@pytest.mark.parametrize("name", list(SCHEDS))
def test_derivatives_match_central_differences(name):
    s = SCHEDS[name]
    t = _interior(s)
    # relative step 1e-3 with one Richardson step: truncation ~(h/t)^4 ~ 1e-12 times the derivatives' scale
    # ratios, cancellation ~1e-16 / 1e-3 = 1e-13 relative to the value differenced: rtol 1e-8 leaves ~1e3 of
    # margin; atol 1e-12 covers a value near 1 with a tiny derivative (sigma at DDPM's last steps), where the
    # cancellation is absolute, ~2.2e-16 * 1 / 1e-3 times Richardson's 5/3
    h = _step(s, t)
    for value, deriv in (("alpha", "d_alpha"), ("sigma", "d_sigma"), ("log_snr", "d_log_snr")):
        fd = _fd(getattr(s, value), t, h)
        np.testing.assert_allclose(getattr(s, deriv)(t), fd, rtol=1e-8, atol=1e-12, err_msg=f"{name} {deriv}")
    # f = d log(alpha)/dt
    np.testing.assert_allclose(s.f(t), _fd(lambda u: np.log(s.alpha(u)), t, h), rtol=1e-8, atol=1e-12)
    # g^2 = d sigma^2/dt - 2 f sigma^2, with d sigma^2/dt by differences
    np.testing.assert_allclose(s.g2(t), _fd(lambda u: s.sigma(u) ** 2, t, h) - 2 * s.f(t) * s.sigma(t) ** 2,
                               rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------ derivatives: independent identities
@pytest.mark.parametrize("name", list(SCHEDS))
def test_log_snr_f_and_g2_satisfy_their_defining_identities(name):
    s = SCHEDS[name]
    t = _interior(s)
    a, sg, da, ds = s.alpha(t), s.sigma(t), s.d_alpha(t), s.d_sigma(t)
    # each schedule's closed forms against the definitions written from alpha, sigma and their derivatives;
    # both sides are a few float64 operations apart (and log-SNR differences of nearly equal logs): 1e-12
    np.testing.assert_allclose(s.log_snr(t), 2 * np.log(a / sg), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.d_log_snr(t), 2 * (da / a - ds / sg), rtol=1e-12)
    np.testing.assert_allclose(s.f(t), da / a, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s.g2(t), 2 * sg * ds - 2 * (da / a) * sg * sg, rtol=1e-10, atol=1e-300)
    assert np.all(s.d_log_snr(t) < 0) and np.all(s.g2(t) > 0)


@pytest.mark.parametrize("name", ["vp", "vp_wide", "ddpm_linear", "ddpm_cosine", "ddpm_zero_snr"])
def test_variance_preserving_schedules_have_unit_total_variance_and_g2_equal_minus_2f(name):
    s = SCHEDS[name]
    t = _interior(s)
    np.testing.assert_allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0, rtol=0, atol=4e-16)
    np.testing.assert_allclose(s.g2(t), -2 * s.f(t), rtol=1e-15)


@pytest.mark.parametrize("bmin, bmax", [(0.1, 20.0), (0.5, 35.0), (1.0, 1.0)])
def test_vp_and_subvp_against_score_sde_formulas(bmin, bmax):
    """score_sde_pytorch sde_lib.py, written out independently: VPSDE.marginal_prob's log-mean coefficient
    -1/4 t^2 (b1 - b0) - 1/2 t b0, VPSDE.sde's (-1/2 beta x, sqrt(beta)), subVPSDE's std 1 - exp(2 lmc) and
    diffusion sqrt(beta (1 - exp(-2 b0 t - (b1 - b0) t^2)))."""
    t = np.array([1e-6, 1e-3, 0.2, 0.5, 0.9, 1.0])
    lmc = -0.25 * t ** 2 * (bmax - bmin) - 0.5 * t * bmin
    beta = bmin + t * (bmax - bmin)
    vp, sub = VP(bmin, bmax), SubVP(bmin, bmax)
    np.testing.assert_allclose(vp.alpha(t), np.exp(lmc), rtol=1e-15)
    np.testing.assert_allclose(vp.sigma(t), np.sqrt(1 - np.exp(2 * lmc)), rtol=1e-9)  # 1 - exp loses ~7 digits at 1e-6
    np.testing.assert_allclose(vp.f(t), -0.5 * beta, rtol=1e-15)
    np.testing.assert_allclose(vp.g2(t), beta, rtol=1e-15)
    np.testing.assert_allclose(vp.d_alpha(t), -0.5 * beta * vp.alpha(t), rtol=1e-15)  # beta linear: alpha' = -beta alpha/2
    np.testing.assert_allclose(sub.sigma(t), 1 - np.exp(2 * lmc), rtol=1e-9)
    np.testing.assert_allclose(sub.g2(t), beta * (1 - np.exp(-2 * bmin * t - (bmax - bmin) * t ** 2)), rtol=1e-9)


def test_ve_and_flow_against_their_sde_coefficients():
    t = np.array([0.0, 0.1, 0.5, 1.0])
    ve = VE(0.01, 50.0)
    L = math.log(50.0 / 0.01)
    np.testing.assert_allclose(ve.sigma(t), 0.01 * (50.0 / 0.01) ** t, rtol=1e-14)
    np.testing.assert_allclose(ve.g2(t), (ve.sigma(t) * math.sqrt(2 * L)) ** 2, rtol=1e-14)  # VESDE.sde
    fl = Flow()
    u = np.array([0.1, 0.5, 0.9])
    # x_t = (1-t) x0 + t eps: f = -1/(1-t), g^2 = 2t/(1-t) (the SDE with these marginals, derived by hand)
    np.testing.assert_allclose(fl.f(u), -1 / (1 - u), rtol=1e-15)
    np.testing.assert_allclose(fl.g2(u), 2 * u / (1 - u), rtol=1e-15)


def test_small_times_keep_their_digits():
    """At t = 1e-12 a naive sqrt(1 - exp(-2A)) keeps ~4 digits; expm1 keeps all. Values from the series
    1 - e^{-x} = x - x^2/2 + x^3/6 (x = 2A ~ 1e-13: the cubic term is below 1e-26 relative)."""
    vp = VP()
    t = 1e-12
    A = 0.25 * t * t * 19.9 + 0.5 * t * 0.1
    x = 2 * A
    one_minus = x - x * x / 2
    assert vp.sigma(t) == pytest.approx(math.sqrt(one_minus), rel=2e-16)
    assert vp.log_snr(t) == pytest.approx(-x - math.log(one_minus), rel=1e-15)
    assert SubVP().sigma(t) == pytest.approx(one_minus, rel=2e-16)
    assert vp.t_of_log_snr(vp.log_snr(t)) == pytest.approx(t, rel=1e-14)
    assert SubVP().t_of_log_snr(SubVP().log_snr(t)) == pytest.approx(t, rel=1e-14)
    assert Flow().log_snr(1e-300) == pytest.approx(2 * 300 * math.log(10), rel=1e-15)


def test_against_mpmath_at_50_digits():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    vp, sub = VP(), SubVP()
    for t in (1e-9, 1e-4, 0.3, 1.0):
        A = mp.mpf(t) ** 2 * mp.mpf("19.9") / 4 + mp.mpf(t) * mp.mpf("0.1") / 2
        sig = mp.sqrt(1 - mp.exp(-2 * A))
        assert vp.sigma(t) == pytest.approx(float(sig), rel=4e-16)
        assert vp.log_snr(t) == pytest.approx(float(mp.log(mp.exp(-2 * A) / sig ** 2)), rel=4e-16)
        assert vp.d_sigma(t) == pytest.approx(float(mp.diff(lambda u: mp.sqrt(1 - mp.exp(
            -(u ** 2 * mp.mpf("19.9") / 2 + u * mp.mpf("0.1")))), t)), rel=1e-14)
        sub_sig = 1 - mp.exp(-2 * A)
        assert sub.log_snr(t) == pytest.approx(float(mp.log(mp.exp(-2 * A) / sub_sig ** 2)), rel=4e-16)


# ------------------------------------------------------------ the inverse map
@pytest.mark.parametrize("name", list(SCHEDS))
def test_closed_form_inverse_agrees_with_the_bisection_and_round_trips(name):
    s = SCHEDS[name]
    t = _interior(s)
    lam = s.log_snr(t)
    # t(lambda) is conditioned by 1/|t lambda'(t)|/|lambda|: relative 1e-12 in t covers every interior point here
    np.testing.assert_allclose(s.t_of_log_snr(lam), t, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s.solve_log_snr(lam), t, rtol=1e-12, atol=1e-13)
    lo, hi = s.log_snr_range()
    assert s.t_of_log_snr(hi) == pytest.approx(s.t_min, abs=1e-15)
    if math.isfinite(s.t_max):
        assert s.t_of_log_snr(lo) == pytest.approx(s.t_max, rel=1e-13)


class _PlainVP(Schedule):
    """VP by its alpha and sigma only: every other quantity comes from the base class's identities."""

    def _alpha(self, t):
        return VP()._alpha(t)

    def _sigma(self, t):
        return VP()._sigma(t)

    def _d_alpha(self, t):
        return VP()._d_alpha(t)

    def _d_sigma(self, t):
        return VP()._d_sigma(t)


def test_a_schedule_without_closed_forms_inherits_the_identities_and_the_root_solve():
    plain, vp = _PlainVP(), VP()
    t = np.array([0.01, 0.4, 0.99])
    np.testing.assert_allclose(plain.log_snr(t), vp.log_snr(t), rtol=1e-13)
    np.testing.assert_allclose(plain.g2(t), vp.g2(t), rtol=1e-13)
    np.testing.assert_allclose(plain.t_of_log_snr(vp.log_snr(t)), t, rtol=1e-13)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(SCHEDS)), u=st.floats(0.0, 1.0))
def test_round_trip_t_to_log_snr_to_t(name, u):
    s = SCHEDS[name]
    hi = 200.0 if s.t_max == math.inf else s.t_max
    t = s.t_min + u * (hi - s.t_min)
    lam = s.log_snr(t)
    back = s.t_of_log_snr(lam)
    if math.isinf(lam):
        assert back in (s.t_min, s.t_max) and s.log_snr(back) == lam
    else:
        # compare in log-SNR (well conditioned where t is not): the round trip lands on the float next to t
        assert s.log_snr(back) == pytest.approx(lam, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------ converters
@pytest.mark.parametrize("a, b", [("vp", "edm"), ("edm", "vp"), ("vp", "flow"), ("flow", "subvp"),
                                  ("ddpm_cosine", "vp"), ("ve", "ddpm_linear"), ("ddpm_zero_snr", "flow")])
def test_converted_points_have_the_target_marginal(a, b):
    """x_A ~ N(alpha_A mu, alpha_A^2 v + sigma_A^2) becomes x_B ~ N(alpha_B mu, alpha_B^2 v + sigma_B^2)."""
    A, B = SCHEDS[a], SCHEDS[b]
    mu, v = 0.7, 2.3
    lo, hi = B.log_snr_range()
    for t in _interior(A):
        lam = A.log_snr(t)
        if not lo < lam < hi or A.alpha(t) == 0:
            continue
        one, tb = convert(1.0, t, A, B)  # the scale factor alpha_B / alpha_A
        aA, sA, aB, sB = A.alpha(t), A.sigma(t), B.alpha(tb), B.sigma(tb)
        assert one * aA * mu == pytest.approx(aB * mu, rel=1e-13)
        assert one ** 2 * (aA ** 2 * v + sA ** 2) == pytest.approx(aB ** 2 * v + sB ** 2, rel=1e-11)
        back, tt = convert(one, tb, B, A)
        assert back == pytest.approx(1.0, rel=1e-11) and tt == pytest.approx(t, rel=1e-10)


def test_vp_to_edm_is_karras_scaling():
    """Karras et al. 2022 eq. (4)-(5): x/s(t) at sigma_EDM = sigma(t)/s(t), s = alpha."""
    vp = VP()
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    t = np.array([0.3, 0.6])
    xb, tb = convert(x, t, vp, EDM())
    np.testing.assert_allclose(tb, vp.sigma(t) / vp.alpha(t), rtol=1e-13)
    np.testing.assert_allclose(xb, x / vp.alpha(t)[:, None], rtol=1e-13)


def test_convert_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="alpha"):
        convert(1.0, 1.0, Flow(), EDM())
    with pytest.raises(ValueError, match="outside"):
        convert(1.0, 1e-9, VP(), VE(0.01, 50.0))  # log-SNR ~ 21 > VE's max 9.2
    with pytest.raises(TypeError, match="Schedule"):
        convert(1.0, 0.5, "vp", EDM())


# ------------------------------------------------------------ DDPM tables vs diffusers, transcribed
def _diffusers_betas(T, b0, b1, kind):
    """Transcribed from diffusers DDPMScheduler.__init__ / betas_for_alpha_bar (torch.linspace in float32
    becomes np.linspace in float32; the cosine loop in Python floats)."""
    if kind == "linear":
        return np.linspace(b0, b1, T, dtype=np.float32)
    if kind == "scaled_linear":
        return np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float32) ** 2
    out = []
    for i in range(T):
        t1, t2 = i / T, (i + 1) / T
        ab = [math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (t1, t2)]
        out.append(min(1 - ab[1] / ab[0], 0.999))
    return np.array(out)


@pytest.mark.parametrize("kind, b0, b1", [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012),
                                          ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_beta_tables_match_the_transcription(kind, b0, b1):
    mine = tables.ddpm_betas(1000, b0, b1, kind)
    ref = _diffusers_betas(1000, b0, b1, kind)
    if kind == "squaredcos_cap_v2":
        # same float64 arithmetic up to np.cos vs math.cos (an ulp); 1 - ratio amplifies it by 1/beta <= 3e4
        np.testing.assert_allclose(mine, ref, rtol=1e-11)
        assert mine[-1] == 0.999  # the cap binds at the end
    else:
        np.testing.assert_allclose(mine, ref, rtol=3e-7)  # diffusers' float32 against refscore's float64
    assert mine.dtype == np.float64


def test_linear_beta_table_by_hand():
    np.testing.assert_allclose(tables.ddpm_betas(5, 0.1, 0.5), [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-15)
    np.testing.assert_allclose(tables.ddpm_betas(3, 0.01, 0.09, "scaled_linear"), [0.01, 0.04, 0.09], rtol=1e-15)
    ab = tables.alphas_cumprod([0.5, 0.5, 0.5])
    np.testing.assert_array_equal(ab, [0.5, 0.25, 0.125])


def _diffusers_rescale(betas):
    """Transcribed from diffusers rescale_zero_terminal_snr (float64 here)."""
    alphas = 1.0 - betas
    abs_ = np.sqrt(np.cumprod(alphas))
    a0, aT = abs_[0].copy(), abs_[-1].copy()
    abs_ = abs_ - aT
    abs_ = abs_ * (a0 / (a0 - aT))
    ab = abs_ ** 2
    alphas = np.concatenate([ab[0:1], ab[1:] / ab[:-1]])
    return 1 - alphas


def test_zero_terminal_snr_rescale():
    b = tables.ddpm_betas(1000, 0.00085, 0.012, "scaled_linear")
    new = tables.rescale_betas_zero_snr(b)
    np.testing.assert_allclose(new, _diffusers_rescale(b), rtol=1e-14)
    ab_old, ab_new = tables.alphas_cumprod(b), tables.alphas_cumprod(new)
    assert ab_new[-1] == 0.0 and new[-1] == 1.0
    assert ab_new[0] == pytest.approx(ab_old[0], rel=1e-15)
    # the new sqrt(alpha_bar) is the affine map of the old one that fixes index 0 and zeroes index T-1
    a, an = np.sqrt(ab_old), np.sqrt(ab_new)
    np.testing.assert_allclose(an, (a - a[-1]) / (a[0] - a[-1]) * a[0], rtol=1e-12, atol=1e-15)
    s = VPDiscrete(1000, 0.00085, 0.012, "scaled_linear", rescale_betas_zero_snr=True)
    assert s.alpha(999.0) == 0.0 and s.log_snr(999.0) == -math.inf and s.t_of_log_snr(-math.inf) == 999.0


def _diffusers_timesteps(n, T, spacing, offset=0):
    """Transcribed from diffusers DDPMScheduler.set_timesteps (the three timestep_spacing branches)."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // n
        return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + offset
    ratio = T / n
    return np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1


def test_spacings_of_lin_et_al_table_2():
    """Lin et al. 2024, Table 2 (T = 1000, 10 steps), by hand."""
    assert tables.inference_timesteps(10, 1000, "leading", 1).tolist() == list(range(901, 0, -100))
    assert tables.inference_timesteps(10, 1000, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert tables.inference_timesteps(10, 1000, "trailing").tolist() == list(range(999, 0, -100))
    # ties by hand: linspace 10 -> 3 steps is 0, 4.5, 9 -> 4 (half to even); trailing 10/3: 10, 6.67, 3.33
    assert tables.inference_timesteps(3, 10, "linspace").tolist() == [9, 4, 0]
    assert tables.inference_timesteps(3, 10, "trailing").tolist() == [9, 6, 2]
    assert tables.inference_timesteps(3, 10, "leading").tolist() == [6, 3, 0]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_spacings_match_the_transcription_except_at_float_ties_and_arange_length(spacing):
    """Every n = 1..1000: refscore's exact rounding against diffusers' float evaluation.  They agree except
    (a) where the exact value is a half-integer tie that float arithmetic moved off, and (b) where
    np.arange(T, 0, -T/n) has n + 1 elements (the extra one is -1)."""
    T = 1000
    ties = extra = 0
    for n in range(1, T + 1):
        mine = tables.inference_timesteps(n, T, spacing)
        theirs = _diffusers_timesteps(n, T, spacing)
        assert len(mine) == n and np.all(np.diff(mine) < 0) and mine[0] <= T - 1 and mine[-1] >= 0
        if len(theirs) == n + 1:
            assert spacing == "trailing" and theirs[-1] == -1
            extra += 1
            theirs = theirs[:n]
        assert len(theirs) == n
        for i in np.flatnonzero(mine != theirs):
            num, den = (T * (n - i), n) if spacing == "trailing" else ((n - 1 - i) * (T - 1), n - 1)
            assert 2 * (num % den) == den, (n, i)  # an exact tie x.5
            assert abs(int(mine[i]) - int(theirs[i])) == 1
            ties += 1
    if spacing == "leading":
        assert ties == extra == 0  # integer arithmetic on both sides
    if spacing == "trailing":
        assert extra > 0  # e.g. n = 61
    assert len(_diffusers_timesteps(61, 1000, "trailing")) == 62


def test_vp_discrete_is_the_table_at_integers_and_euler_interpolation_between():
    s = SCHEDS["ddpm_scaled"]
    n = np.array([0, 1, 17, 500, 999])
    np.testing.assert_allclose(s.alpha(n.astype(float)) ** 2, s.alphas_cumprod[n], rtol=1e-15)
    np.testing.assert_allclose(s.sigma(n.astype(float)) ** 2, 1 - s.alphas_cumprod[n], rtol=1e-13)
    assert s.alpha(-1.0) == 1.0 and s.sigma(-1.0) == 0.0
    # diffusers EulerDiscreteScheduler.set_timesteps: sigmas = ((1 - ab)/ab)^0.5, np.interp at the timesteps
    ts = tables.euler_timesteps(7, 1000, "linspace")
    sig_e = np.interp(ts, np.arange(1000), np.sqrt((1 - s.alphas_cumprod) / s.alphas_cumprod))
    np.testing.assert_allclose(s.sigma(ts) / s.alpha(ts), sig_e, rtol=1e-13)


def test_edm_grid_is_karras_eq_5():
    g = EDM(0.002, 80.0, 7.0).grid(18)
    assert len(g) == 19 and g[0] == 80.0 and g[-2] == 0.002 and g[-1] == 0.0
    root = g[:-1] ** (1 / 7)
    np.testing.assert_allclose(np.diff(root, 2), 0.0, atol=1e-14)  # equally spaced in sigma^(1/rho)
    assert np.all(np.diff(g) < 0)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, match", [
    (lambda: VP(0.0, 20.0), "beta_min"), (lambda: VP(1.0, 0.5), "beta_max"),
    (lambda: VE(1.0, 1.0), "sigma_max"), (lambda: EDM(rho=-1.0), "rho"),
    (lambda: VPDiscrete(beta_schedule="cosine"), "beta_schedule"),
    (lambda: VPDiscrete(trained_betas=[0.1, 1.5]), "trained_betas"),
    (lambda: VPDiscrete(beta_start=0.0), "beta_start"),
    (lambda: tables.inference_timesteps(11, 10), "num_inference_steps"),
    (lambda: tables.inference_timesteps(3, 10, "uniform"), "spacing"),
    (lambda: tables.rescale_betas_zero_snr([0.5]), "betas"),
    (lambda: EDM().grid(1), "n"),
    (lambda: VP().alpha(1.5), r"t must lie in \[0.0, 1.0\]"),
    (lambda: VP().alpha(float("nan")), "t must be finite"),
    (lambda: EDM().sigma(float("inf")), "t must be finite"),
    (lambda: VPDiscrete().sigma(-1.5), "t must lie"),
    (lambda: VE().t_of_log_snr(50.0), "log_snr must lie"),
    (lambda: VP().t_of_log_snr(float("nan")), "log_snr"),
])
def test_bad_input_is_a_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_registry_lists_every_schedule():
    assert set(SCHEDULES) == {"vp", "subvp", "ve", "edm", "flow", "vp_discrete"}
    assert all(issubclass(c, Schedule) for c in SCHEDULES.values())
    assert isinstance(VP().alpha(0.5), float) and VP().alpha(np.array([0.5])).shape == (1,)
