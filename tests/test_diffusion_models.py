"""A trained score model as a denoiser (refscore.diffusion.models.ModelDenoiser): a model whose score is the exact
noised score at the level it is evaluated at gives the exact denoiser of refscore.diffusion.Denoiser (posterior
means: an independent code path) on every schedule, Gaussian and mixture data; whole sampler runs with an affine
model against their closed-form products; the noise level the model is conditioned on; bad input."""
import numpy as np
import pytest

from refscore.diffusion import EDM, VE, VP, Denoiser, Flow, ModelDenoiser, SubVP, VPDiscrete
from refscore.diffusion.dsm import irreducible, population_dsm
from refscore.diffusion.parametrisations import PARAMETRISATIONS, convert_prediction
from refscore.diffusion.samplers import sample
from refscore.distributions import Gaussian, GaussianMixture
from refscore.models import GaussianModel, MLPScore, NoiseConditional
from refscore.models.base import ScoreModel

GAUSS = Gaussian([0.7, -0.3], [[2.0, 0.6], [0.6, 0.5]])
MIX = GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 0.5], [1.5, 1.0], [0.0, -2.5]],
                      [[[0.5, 0.1], [0.1, 0.3]], [[1.0, -0.4], [-0.4, 0.8]], [[0.05, 0.0], [0.0, 2.0]]])
#: interior times (alpha > 0, sigma > 0) of every schedule, from nearly clean to nearly pure noise
SCHEDULES = {"vp": (VP(), [0.02, 0.3, 0.7, 0.98]), "subvp": (SubVP(), [0.05, 0.5, 0.9]),
             "ve": (VE(0.01, 50.0), [0.1, 0.5, 0.9]), "edm": (EDM(), [0.01, 0.4, 3.0, 60.0]),
             "flow": (Flow(), [0.05, 0.5, 0.95]), "ddpm": (VPDiscrete(), [3.5, 400.2, 990.7])}
X = np.random.default_rng(3).standard_normal((6, 2)) * 2.0
GM = NoiseConditional(GaussianModel(2))


def exact_gaussian_theta(data, sbar):
    """theta of NoiseConditional(GaussianModel) with s(y)/sbar = -(Sigma + sbar^2 I)^{-1} (y - mu), the exact score of
    data * N(0, sbar^2 I): precision P = sbar (Sigma + sbar^2 I)^{-1}."""
    P = sbar * np.linalg.inv(data.cov + sbar * sbar * np.eye(data.dim))
    return GaussianModel.theta_from(data.mean, 0.5 * (P + P.T))


class ExactAtOneLevel(ScoreModel):
    """s(y) = sbar * (score of the noised mixture sum_j w_j N(mu_j, Sigma_j + sbar^2 I)), from refscore's
    GaussianMixture (Cholesky factors: not the Denoiser's eigenbasis), so that NoiseConditional(s)(y, sbar) is the
    exact noised score at the one level sbar.  Only the score is defined (a sampler needs nothing else)."""

    def __init__(self, data, sbar):
        self.dim, self.n_params, self.sbar = data.dim, 1, sbar
        self.noised = GaussianMixture(data.weights, data.means, data.covs + sbar * sbar * np.eye(data.dim))

    def _init(self, rng):
        return np.zeros(1)

    def _score(self, theta, x):
        return self.sbar * self.noised.score(x)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_the_exact_gaussian_model_gives_the_exact_denoiser_in_every_parametrisation(name):
    """At each time t the model is exact at the level sigma(t)/alpha(t) it is evaluated at; every prediction then
    equals the exact denoiser's.  The adapter goes through Cholesky, the score, x / alpha and Tweedie; the Denoiser
    through the posterior mean in the eigenbasis: 1e-10 relative covers round-off amplified by condition numbers of
    Sigma + sbar^2 I up to ~1e3 and the division by alpha down to 0.05 (flow at t = 0.95)."""
    sched, times = SCHEDULES[name]
    exact = Denoiser(GAUSS, sched)
    for t in times:
        a, s = sched.alpha(t), sched.sigma(t)
        sbar = s / a
        D = ModelDenoiser(GM, exact_gaussian_theta(GAUSS, sbar), sched)
        assert D.noise_level(t) == sbar
        x = a * GAUSS.mean + a * X        # points where the noised law lives
        for kind in PARAMETRISATIONS:
            want, got = exact.predict(kind, x, t), D.predict(kind, x, t)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(), err_msg=f"{kind} t={t}")
        np.testing.assert_array_equal(D(x, t), D.x0(x, t))   # the samplers' x0_fn(x, t) is x0
        np.testing.assert_array_equal(D.eps(x, t), D.predict("eps", x, t))


@pytest.mark.parametrize("name", ["vp", "edm", "flow", "ddpm"])
def test_an_exact_mixture_model_gives_the_exact_denoiser(name):
    """A nonlinear score: the noised mixture's, exact at the one level sigma/alpha of each time.  Tweedie through the
    adapter against the Denoiser's sum of responsibilities times component posterior means (1e-9 relative: two
    log-sum-exp implementations, as in test_diffusion_denoiser)."""
    sched, times = SCHEDULES[name]
    exact = Denoiser(MIX, sched)
    for t in times:
        a, s = sched.alpha(t), sched.sigma(t)
        model = NoiseConditional(ExactAtOneLevel(MIX, s / a))
        D = ModelDenoiser(model, model.init(), sched)
        x = a * X
        want = exact.x0(x, t)
        np.testing.assert_allclose(D.x0(x, t), want, rtol=1e-9, atol=1e-9 * np.abs(want).max(), err_msg=f"t={t}")
        np.testing.assert_allclose(D.score(x, t), exact.score(x, t), rtol=1e-9,
                                   atol=1e-9 * np.abs(exact.score(x, t)).max())


def test_the_exact_model_attains_the_dsm_minimum():
    """The adapter's score serves refscore.diffusion.dsm too: at one level, the exact model's population DSM is the
    irreducible d/sigma^2 - tr C^-1 (Vincent; quadrature exact for an affine score, 1e-12 relative)."""
    edm = EDM()
    for t in (0.3, 1.0, 4.0):
        D = ModelDenoiser(GM, exact_gaussian_theta(GAUSS, t), edm)
        got = population_dsm(D.score, edm, GAUSS, times=([t], [1.0]))
        assert got == pytest.approx(float(irreducible(edm, GAUSS, t)), rel=1e-12)


def test_predictions_follow_tweedie_and_the_converters_with_per_point_times():
    """A model that is not exact (an MLP): x0 = (x + sigma^2 s)/alpha by hand, s = s_theta(x/alpha, sigma/alpha)/alpha
    by hand, every other kind by convert_prediction from the score; one time per point equals a loop over points.
    1e-12 relative: the same formulas in another order (the MLP's score itself is compared to 1e-14)."""
    model = NoiseConditional(MLPScore(2, (5,), "tanh"))
    theta = model.init(1)
    vp = VP()
    t = np.array([0.05, 0.2, 0.5, 0.7, 0.9, 0.99])
    a, s = vp.alpha(t)[:, None], vp.sigma(t)[:, None]
    D = ModelDenoiser(model, theta, vp)
    sc = model.score(theta, X / a, (s / a)[:, 0]) / a
    np.testing.assert_allclose(D.score(X, t), sc, rtol=1e-14)
    np.testing.assert_allclose(D.x0(X, t), (X + s * s * sc) / a, rtol=1e-13, atol=1e-13)
    for kind in PARAMETRISATIONS:
        want = convert_prediction(sc, "score", kind, X, vp.alpha(t), vp.sigma(t), vp.d_alpha(t), vp.d_sigma(t))
        np.testing.assert_allclose(D.predict(kind, X, t), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
        # the MLP's products go through BLAS, whose blocking differs between one point and a batch: round-off
        loop = np.array([D.predict(kind, X[k], t[k]) for k in range(len(t))])
        np.testing.assert_allclose(D.predict(kind, X, t), loop, rtol=1e-13, atol=1e-13 * np.abs(loop).max())


def test_a_bound_model_is_the_same_denoiser():
    model = NoiseConditional(MLPScore(2, (4,), "tanh"))
    theta = model.init(0)
    edm = EDM()
    np.testing.assert_array_equal(ModelDenoiser(model.bind(theta), None, edm).x0(X, 0.7),
                                  ModelDenoiser(model, theta, edm).x0(X, 0.7))


def test_noise_level_is_sigma_on_ve_and_edm_and_sigma_over_alpha_elsewhere():
    ve, edm, vp = VE(0.01, 50.0), EDM(), VP()
    theta = GM.init()
    t = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(ModelDenoiser(GM, theta, ve).noise_level(t), ve.sigma(t))
    np.testing.assert_array_equal(ModelDenoiser(GM, theta, edm).noise_level(t), t)
    np.testing.assert_array_equal(ModelDenoiser(GM, theta, vp).noise_level(t), vp.sigma(t) / vp.alpha(t))
    assert isinstance(ModelDenoiser(GM, theta, vp).noise_level(0.5), float)


# ------------------------------------------------------------------ whole runs in closed form
def _affine_model(P, mu):
    return GaussianModel.theta_from(mu, P)


P = np.array([[0.8, 0.3], [0.3, 0.5]])
MU = np.array([0.4, -1.0])


def test_euler_and_heun_with_an_affine_model_on_edm_are_the_closed_form_products():
    """s(y, sbar) = -P(y - mu)/sbar (not an exact score) on EDM: D = x - sigma P (x - mu), velocity (x - D)/sigma =
    P (x - mu), so an Euler step is x_n - mu = (I + hP)(x - mu) and a Heun step (I + hP + h^2 P^2/2)(x - mu), except
    the last, Euler, step to sigma = 0: the products over the grid, to round-off (1e-12 relative, 20 steps of 2x2
    products).  DDIM(eta = 0) is Euler on EDM."""
    edm = EDM(sigma_max=5.0)
    grid = edm.grid(20)
    D = ModelDenoiser(GM, _affine_model(P, MU), edm)
    x = X * 5.0
    I = np.eye(2)
    euler, heun = I, I
    for t, tn in zip(grid[:-1], grid[1:]):
        h = tn - t
        euler = (I + h * P) @ euler
        heun = ((I + h * P) if tn == 0.0 else (I + h * P + 0.5 * h * h * P @ P)) @ heun
    for name, M in (("euler", euler), ("heun", heun), ("ddim", euler)):
        want = MU + (x - MU) @ M.T
        np.testing.assert_allclose(sample(name, D, edm, x, grid), want, rtol=1e-12, atol=1e-12 * np.abs(want).max(),
                                   err_msg=name)


def test_euler_on_ve_is_conditioned_on_sigma_of_t():
    """VE: alpha = 1, velocity sigma'(t) eps_hat = sigma'(t) P (x - mu), so Euler is x_n - mu = (I + (t_n - t)
    sigma'(t) P)(x - mu).  A model conditioned on t instead of sigma(t) would give other factors."""
    ve = VE(0.01, 5.0)
    grid = np.linspace(1.0, 0.0, 13)
    D = ModelDenoiser(GM, _affine_model(P, MU), ve)
    M = np.eye(2)
    for t, tn in zip(grid[:-1], grid[1:]):
        M = (np.eye(2) + (tn - t) * ve.d_sigma(t) * P) @ M
    want = MU + (X - MU) @ M.T
    np.testing.assert_allclose(sample("euler", D, ve, X, grid), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_ddim_on_vp_is_euler_in_edms_variables():
    """VP: the model sees xbar = x / alpha at sbar = sigma / alpha, D = xbar - sbar P (xbar - mu), and DDIM(eta = 0)
    is xbar_n = D + sbar_n (xbar - D) / sbar = xbar + (sbar_n - sbar) P (xbar - mu): the product of
    (I + (sbar_n - sbar) P) in EDM's variables, times alpha at the end (docs/diffusion.md §6.5 and §8)."""
    vp = VP()
    grid = np.append(np.linspace(0.9, 0.01, 15), 0.0)
    D = ModelDenoiser(GM, _affine_model(P, MU), vp)
    sbar = vp.sigma(grid) / vp.alpha(grid)
    M = np.eye(2)
    for sb, sbn in zip(sbar[:-1], sbar[1:]):
        M = (np.eye(2) + (sbn - sb) * P) @ M
    x = vp.alpha(0.9) * X
    want = vp.alpha(0.0) * (MU + (x / vp.alpha(0.9) - MU) @ M.T)
    np.testing.assert_allclose(sample("ddim", D, vp, x, grid), want, rtol=1e-11, atol=1e-11 * np.abs(want).max())


# ------------------------------------------------------------------ bad input
def test_models_without_a_noise_level_and_other_objects_are_refused():
    mlp = MLPScore(2, (4,), "tanh")
    theta = mlp.init(0)
    edm = EDM()
    with pytest.raises(TypeError, match="must be noise-conditional.*NoiseConditional"):
        ModelDenoiser(mlp, theta, edm)
    with pytest.raises(TypeError, match="must be noise-conditional"):
        ModelDenoiser(mlp.bind(theta), None, edm)
    with pytest.raises(TypeError, match="must be noise-conditional"):
        ModelDenoiser(GaussianModel(2), GaussianModel(2).init(), edm)
    with pytest.raises(TypeError, match="plain callable x0_fn.*directly"):
        ModelDenoiser(lambda x, t: x, None, edm)
    with pytest.raises(TypeError, match="plain callable"):
        ModelDenoiser(Denoiser(GAUSS, edm), None, edm)


def test_theta_and_schedule_are_checked():
    model = NoiseConditional(mlp := MLPScore(2, (4,), "tanh"))
    theta = mlp.init(0)
    with pytest.raises(TypeError, match="theta is needed"):
        ModelDenoiser(model, None, EDM())
    with pytest.raises(TypeError, match="theta must be None"):
        ModelDenoiser(model.bind(theta), theta, EDM())
    with pytest.raises(ValueError, match="theta"):
        ModelDenoiser(model, theta[:-1], EDM())
    with pytest.raises(TypeError, match="schedule must be a refscore.diffusion Schedule"):
        ModelDenoiser(model, theta, "edm")


def test_points_times_and_kinds_are_checked():
    D = ModelDenoiser(GM, GM.init(), EDM())
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        D.x0(np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(3,\)"):
        D.x0(np.zeros((3, 2)), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"t must lie in"):
        D.x0(np.zeros((3, 2)), -1.0)
    with pytest.raises(ValueError, match="kind"):
        D.predict("noise", np.zeros((3, 2)), 1.0)


def test_the_ends_of_the_noise_range_are_refused():
    """sigma = 0 (EDM's t = 0: no noise level) and alpha = 0 (Flow's t = 1: no x / alpha)."""
    with pytest.raises(ValueError, match=r"sigma\(t\) > 0.*t = 0.0"):
        ModelDenoiser(GM, GM.init(), EDM()).x0(X, 0.0)
    with pytest.raises(ValueError, match=r"alpha\(t\) > 0.*t = 1.0"):
        ModelDenoiser(GM, GM.init(), Flow()).x0(X, np.array([0.5, 0.5, 1.0, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"alpha\(t\) > 0"):
        ModelDenoiser(GM, GM.init(), Flow()).noise_level(1.0)


def test_a_non_finite_model_output_is_reported_with_its_time_and_level():
    theta = GaussianModel.theta_from([0.0, 0.0], np.eye(2) * 1e300)   # s = -1e300 y / sbar overflows
    D = ModelDenoiser(GM, theta, EDM())
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"not finite at t = 0.5 \(noise level sigma / alpha = 0.5\)"):
            D.x0(np.array([[0.0, 0.0], [1e10, 0.0]]), 0.5)


def test_a_sampler_refuses_a_model_denoiser_built_for_another_schedule():
    """The adapter reads the model at its own schedule's level sigma/alpha and at x/alpha: on another schedule's
    grid it would be read at the wrong level, silently; the sampler refuses it, as it refuses a Denoiser."""
    edm, other = EDM(sigma_max=5.0), EDM(sigma_max=5.0)  # equal parameters, but not the schedule the run uses
    D = ModelDenoiser(GM, _affine_model(P, MU), edm)
    with pytest.raises(ValueError, match=r"x0_fn is a ModelDenoiser of .*pass that same schedule object"):
        sample("euler", D, other, X, other.grid(4))
    sample("euler", D, edm, X, edm.grid(4))  # its own schedule runs
