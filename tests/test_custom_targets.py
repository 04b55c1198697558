"""Users' own targets in the samplers: plain callables (NumPy backend) and
``numba.njit`` per-point functions (Numba backend), same chains on both."""
import numba
import numpy as np
import pytest

from refscore.distributions import Gaussian
from refscore.sampling import CallableTarget, NumbaTarget, annealed_langevin, mala, ula

PREC = np.array([[2.0, 0.5], [0.5, 1.0]])


@numba.njit
def _score(x):
    return -(PREC @ x)


@numba.njit
def _logpdf(x):
    return -0.5 * x @ (PREC @ x)


@numba.njit
def _bad_score(x):
    return np.zeros(3)


def test_callable_target_equals_the_distribution_it_wraps():
    # the same score function values, the same noise: bitwise the same chains
    g = Gaussian([0.0, 0.0], np.linalg.inv(PREC))
    t = CallableTarget(2, score=g.score, logpdf=g.logpdf)
    x0 = np.random.default_rng(0).standard_normal((16, 2))
    for run in (lambda tt: ula(tt, x0, 0.1, 30, seed=3), lambda tt: mala(tt, x0, 0.1, 30, seed=3)):
        np.testing.assert_array_equal(run(t).x, run(g).x)


def test_callable_noise_conditional_target_in_annealed_langevin():
    p = Gaussian([1.0, -1.0], np.eye(2)).perturbed()
    t = CallableTarget(2, score=p.score, noise_conditional=True)
    x0 = np.zeros((8, 2))
    a = annealed_langevin(t, x0, [2.0, 1.0], 0.05, 10, seed=1)
    b = annealed_langevin(p, x0, [2.0, 1.0], 0.05, 10, seed=1)
    np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_numba_target_runs_the_same_chains_on_numba_and_numpy(sampler):
    # the compiled kernel calls the user's njit function per chain; the NumPy
    # reference calls the same function row by row: the arithmetic is the
    # same, so the chains agree to round-off of the score's own products (1e-12)
    t = NumbaTarget(2, _score, _logpdf)
    x0 = np.random.default_rng(1).standard_normal((64, 2))
    run = ula if sampler == "ula" else mala
    a = run(t, x0, 0.05, 40, seed=5, backend="numba", record=10)
    b = run(t, x0, 0.05, 40, seed=5, backend="numpy", record=10)
    np.testing.assert_allclose(a.x, b.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=0, atol=1e-12)
    if sampler == "mala":
        np.testing.assert_array_equal(a.accept_rate, b.accept_rate)
    # and against the built-in Gaussian with the same precision (an independent route)
    g = Gaussian([0.0, 0.0], np.linalg.inv(PREC))
    c = run(g, x0, 0.05, 40, seed=5, backend="numba")
    np.testing.assert_allclose(a.x, c.x, rtol=0, atol=1e-10)


def test_numba_target_wrong_shape_is_named_before_the_run():
    with pytest.raises(ValueError, match=r"score\(x\) must return a float array of shape \(2,\)"):
        ula(NumbaTarget(2, _bad_score), np.zeros((4, 2)), 0.1, 5, seed=0, backend="numba")


def test_numba_target_needs_njit_functions_and_logpdf_for_mala():
    with pytest.raises(TypeError, match="score must be a numba.njit function"):
        NumbaTarget(2, lambda x: -x)
    with pytest.raises(TypeError, match="mala needs a log-density"):
        mala(NumbaTarget(2, _score), np.zeros((4, 2)), 0.1, 5, seed=0, backend="numba")


def test_custom_target_wrong_score_shape_on_numpy_backend():
    t = CallableTarget(2, score=lambda x: -x[:, 0])
    with pytest.raises(ValueError, match=r"must return shape \(n, d\)"):
        ula(t, np.zeros((5, 2)), 0.1, 3, seed=0)
