"""The diffusion_budget validation experiment's pieces at small size (the experiment itself runs in
``python -m validation --quick``): the jackknife, the starts' law, the Gaussian-fit W2, the floor of the
NoiseConditional form, the exact denoiser's own error, and a tiny budget run against the exact laws."""
import numpy as np
import pytest

from refscore.diffusion import Denoiser, ModelDenoiser
from refscore.diffusion.laws import gaussian_w2
from refscore.diffusion.samplers import output_distances
from refscore.validation import diffusion_budget as budget
from refscore.validation import runner

DATA = budget.DATA


def test_registered():
    assert "diffusion_budget" in runner.EXPERIMENTS
    assert budget.NAME == "diffusion_budget"


def test_jackknife_of_a_mean_is_the_standard_error_of_the_group_means():
    """Equal groups: the leave-one-group-out means are (G xbar - g_k)/(G - 1), so the jackknife variance is
    sum_k (g_k - xbar)^2 / (G (G - 1)), the squared standard error of the G group means (exact algebra: 1e-12)."""
    x = np.random.default_rng(0).standard_normal((400, 2))
    G = 20
    value, se = budget.jackknife(lambda a: float(a[:, 0].mean()), x, groups=G)
    g = np.array([x[np.arange(400) % G == k, 0].mean() for k in range(G)])
    assert value == x[:, 0].mean()
    assert se == pytest.approx(np.sqrt(np.sum((g - g.mean()) ** 2) / (G * (G - 1))), rel=1e-12)


def test_w2_fit_is_the_w2_of_the_sample_moments():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) * 1.3 + 0.2
    assert budget.w2_fit(a, b) == gaussian_w2(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))


def test_starts_have_the_exact_marginal_law():
    """20000 starts: mean within 4.5 standard errors of mu, each covariance entry within 4.5 Gaussian standard
    errors sqrt((C_ii C_jj + C_ij^2)/n) of Sigma + sigma_max^2 I."""
    n = 20_000
    x = budget.starts(n, 3)
    C = DATA.cov + budget.SCHEDULE.sigma_max ** 2 * np.eye(2)
    assert np.all(np.abs(x.mean(0) - DATA.mean) < 4.5 * np.sqrt(np.diag(C) / n))
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n)
    assert np.all(np.abs(np.cov(x.T) - C) < 4.5 * se)
    np.testing.assert_array_equal(budget.starts(10, 3), x[:10])   # counter noise: chain c is chain c


def test_the_floor_of_one_level_is_the_exact_score_and_attains_zero_excess():
    s = 0.7
    f = budget.floor_function([s])
    y = np.random.default_rng(2).standard_normal((7, 2))
    exact = Denoiser(DATA, budget.SCHEDULE)
    np.testing.assert_allclose(f(y), s * exact.score(y, s), rtol=1e-14)
    assert budget.dsm_excess(f, [s]) < 1e-28


def test_the_floor_is_the_minimiser_over_functions_of_y():
    """Several levels: adding g(y) = B (y - mu) to the minimiser f* adds exactly E_mix |g|^2 / 2 =
    (1/L) sum_l tr(B C_l B^T) / 2 to the excess, because the cross term E_joint[(f* + E[eps | y, level]) . g] vanishes
    at the minimiser (a wrong f* leaves it of the order of the shift itself).  Per-level Gauss-Hermite quadrature of
    order 40 carries the cross term only to ~1e-3 relative (the level's posterior r_l(y) switches sharply; measured
    9.5e-4 and 5.5e-4, orders 20-60 within 4e-3): 5e-3.  (A constant shift would cancel exactly by the symmetry of
    f* and of the nodes about mu, and test nothing.)"""
    levels = np.array([0.05, 0.2, 0.6, 1.5])
    f = budget.floor_function(levels)
    base = budget.dsm_excess(f, levels)
    for B in (np.array([[0.1, 0.0], [0.0, 0.0]]), np.array([[0.05, -0.1], [0.02, 0.08]])):
        want = 0.5 * np.mean([np.trace(B @ (DATA.cov + s * s * np.eye(2)) @ B.T) for s in levels])
        shifted = budget.dsm_excess(lambda y: f(y) + (y - DATA.mean) @ B.T, levels)
        assert shifted - base == pytest.approx(want, rel=5e-3)


def test_posterior_rms_is_the_trace_of_the_denoisers_posterior_covariance():
    exact = Denoiser(DATA, budget.SCHEDULE)
    sig = np.array([0.01, 0.3, 2.0])
    want = [np.sqrt(np.trace(exact.posterior_cov(DATA.mean, s))) for s in sig]
    np.testing.assert_allclose(budget.posterior_rms(sig), want, rtol=1e-12)


def test_denoiser_rms_of_the_exact_score_is_zero():
    s = 0.4
    exact = Denoiser(DATA, budget.SCHEDULE)
    rms = budget.denoiser_rms(lambda y: s * exact.score(y, s), [s])
    assert rms[0] < 1e-12 * budget.posterior_rms([s])[0]   # round-off of x + sigma^2 s against the posterior mean


@pytest.fixture(scope="module")
def tiny():
    model, theta, levels = budget.train(60, 2000, 0)
    return model, theta, budget.budget(ModelDenoiser(model, theta, budget.SCHEDULE), 200, 0)


def test_a_tiny_budget_reads_the_exact_laws(tiny):
    model, theta, runs = tiny
    cur = budget.curves(runs)
    edm = budget.SCHEDULE
    for s in budget.SHOWN:
        law = cur[s]["disc_exact"][0]
        assert law.tolist() == [output_distances(s, edm, edm.grid(N), DATA).w2 for N in budget.STEPS]
        for key in ("disc_exact_fit", "disc_model", "total", "predicted"):
            v, se = cur[s][key]
            assert v.shape == se.shape == (len(budget.STEPS),) and np.all(np.isfinite(v)) and np.all(se > 0)
    # the exact-flow starts are the data: the exact denoiser's 64-step Heun run is within its discretisation error
    assert budget.w2_fit(runs[("exact", "heun", 64)], runs["exact"]) < 1e-2


def test_ddim_on_vp_through_the_adapter_is_euler_on_edm(tiny):
    """DDIM(eta = 0) on VP at EDM's levels is Euler in EDM's variables with any denoiser (docs/diffusion.md §6.5):
    through the adapter the network on VP reproduces its Euler run on EDM to round-off (1e-12: 64 steps)."""
    model, theta, runs = tiny
    on_vp, naive = budget.vp_runs(model, theta, budget.starts(200, 0), 64)
    euler = runs[("euler", 64)]
    assert np.max(np.abs(on_vp - euler)) <= 1e-12 * np.max(np.abs(euler))
    assert np.max(np.abs(naive - euler)) > 1e-3 * np.max(np.abs(euler))
