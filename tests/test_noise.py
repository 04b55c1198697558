"""Tests of refscore.noise: Philox known answers, bitwise agreement of the
NumPy, Numba and CUDA-simulator builds, and the statistics of the normals."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from scipy import stats

from refscore._kernels import philox as _philox
from refscore.noise import _NP, normal, uniform

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter, key, expected output
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = _NP.philox4x32_10(*[np.uint64(c) for c in ctr], *[np.uint64(k) for k in key])
    assert [int(w) for w in out] == expected


def test_philox_known_answers_numba():
    ph = _philox.make(numba.njit).philox4x32_10

    @numba.njit
    def run(c, k):
        return ph(c[0], c[1], c[2], c[3], k[0], k[1])

    for ctr, key, expected in KAT:
        out = run(np.array(ctr, dtype=np.uint64), np.array(key, dtype=np.uint64))
        assert [int(w) for w in out] == expected


def test_polynomial_log_sin_cos_match_libm():
    # fdlibm kernels are < 1 ulp; with NumPy's own < 1 ulp (or 4 ulp for its SIMD
    # routines) the two may differ by a few ulp: 8 ulp of relative slack.
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.uniform(0, 1, 10 ** 5) * 0.999 + 2.0 ** -53,
                        2.0 ** -rng.uniform(0, 53, 10 ** 5), [2.0 ** -53, 0.5, 1.0]])
    lg = _NP.log_unit(u)
    ref = np.log(u)
    nz = ref != 0
    assert np.max(np.abs(lg[nz] - ref[nz]) / np.abs(ref[nz])) < 8 * 2.2e-16
    assert _NP.log_unit(np.array(1.0)) == 0.0
    t = rng.uniform(-np.pi / 4, np.pi / 4, 10 ** 5)
    assert np.max(np.abs(_NP.sin_kernel(t) - np.sin(t)) / np.abs(np.sin(t))) < 8 * 2.2e-16
    assert np.max(np.abs(_NP.cos_kernel(t) - np.cos(t))) < 8 * 2.2e-16


# normal(SEED, chain, step, 3) and uniform(SEED, chain, 999), written on one machine as exact hex
# floats: Philox is integer arithmetic and Box-Muller uses only correctly rounded +, -, *, /, sqrt
# (fdlibm polynomials, no libm, no FMA), so every IEEE machine and build gives these same bits
SEED = 0x1234_5678_9ABC_DEF0
NORMAL_KAT = {
    (0, 0): ("0x1.21a88bc8b512dp+0", "-0x1.28d1d212cd58cp+1", "0x1.44c865efdbee2p+0"),
    (0, 2 ** 32 - 1): ("-0x1.a4acf8d25db10p-1", "0x1.06ff6787a2efdp-1", "-0x1.71900a8ca2ab2p-5"),
    (77, 999): ("0x1.680fd6ccc9da0p+0", "0x1.0f35d97bd15bcp-3", "-0x1.b497da403bf6cp-2"),
    (2 ** 32 - 1, 0): ("0x1.aaac667b1757ap+0", "-0x1.881df5529af55p+0", "-0x1.643e6c5661825p+0"),
    (2 ** 32 - 1, 2 ** 32 - 1): ("-0x1.a06ab8b087f28p-9", "-0x1.16a71e47bdd08p-1", "-0x1.5705095968b89p-2"),
}
UNIFORM_KAT = {0: "0x1.ac3072301c77bp-2", 77: "0x1.6b24600c85110p-6", 2 ** 32 - 1: "0x1.91fca2fa8f624p-1"}


def test_normal_and_uniform_known_answers_on_any_machine():
    """The same bits on every machine: the stored values, bitwise (not a tolerance, by construction)."""
    for (chain, step), want in NORMAL_KAT.items():
        assert normal(SEED, chain, step, 3).tolist() == [float.fromhex(h) for h in want], (chain, step)
    for chain, want in UNIFORM_KAT.items():
        assert uniform(SEED, chain, 999).tolist() == float.fromhex(want), chain


def _grid():
    chains = np.array([0, 1, 2, 77, 2 ** 31 + 5, 2 ** 32 - 1], dtype=np.uint64)
    steps = np.array([0, 1, 999, 2 ** 32 - 1], dtype=np.uint64)
    return chains, steps


def test_numpy_and_numba_bitwise_equal():
    seed = 0x1234_5678_9ABC_DEF0
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    npair = _philox.make(numba.njit(error_model="numpy"),).normal_pair

    @numba.njit
    def gen(k0, k1, chains, steps, dim):
        out = np.empty((chains.size, steps.size, dim))
        for a in range(chains.size):
            for b in range(steps.size):
                for j in range((dim + 1) // 2):
                    z0, z1 = npair(k0, k1, chains[a], steps[b], np.uint64(j), np.uint64(0))
                    out[a, b, 2 * j] = z0
                    if 2 * j + 1 < dim:
                        out[a, b, 2 * j + 1] = z1
        return out

    chains, steps = _grid()
    for dim in (1, 2, 5):
        ref = normal(seed, chains[:, None], steps[None, :], dim)
        assert np.array_equal(gen(k0, k1, chains, steps, dim), ref)  # bitwise


def test_numpy_and_cuda_simulator_bitwise_equal():
    # the simulator must be chosen before numba.cuda is imported: a fresh process
    code = textwrap.dedent("""
        import numpy as np
        from numba import cuda
        from refscore._kernels import philox as _philox
        from refscore.noise import normal
        P = _philox.make(cuda.jit(device=True))
        npair = P.normal_pair
        @cuda.jit
        def gen(k0, k1, chains, steps, out):
            a, b = cuda.grid(2)
            if a < chains.size and b < steps.size:
                for j in range(out.shape[2] // 2):
                    z0, z1 = npair(k0, k1, chains[a], steps[b], np.uint64(j), np.uint64(0))
                    out[a, b, 2 * j] = z0
                    out[a, b, 2 * j + 1] = z1
        seed = 0x1234_5678_9ABC_DEF0
        chains = np.array([0, 1, 77, 2 ** 32 - 1], dtype=np.uint64)
        steps = np.array([0, 999, 2 ** 32 - 1], dtype=np.uint64)
        out = np.zeros((4, 3, 4))
        gen[(1, 1), (4, 3)](np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), chains, steps, out)
        ref = normal(seed, chains[:, None], steps[None, :], 4)
        print("EQUAL" if np.array_equal(out, ref) else "DIFFER %r" % np.max(np.abs(out - ref)))
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=_ROOT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "EQUAL" in res.stdout, res.stdout


def test_coordinate_does_not_depend_on_dim_or_batching():
    a = normal(7, 3, 10, 5)
    assert np.array_equal(a[:3], normal(7, 3, 10, 3))
    batch = normal(7, np.arange(6), 10, 5)
    assert np.array_equal(batch[3], a)
    assert np.array_equal(normal(7, 3, np.arange(4), 5)[2], normal(7, 3, 2, 5))
    assert not np.array_equal(normal(8, 3, 10, 5), a)  # the seed matters


N_STAT = 10 ** 6


@pytest.fixture(scope="module")
def draws():
    return normal(2024, np.arange(N_STAT // 2), 0, 2).ravel()


def test_ks_normality(draws):
    # fixed seed, so the test is deterministic; for a correct generator p is
    # uniform on (0, 1), and the threshold 1e-3 would fail one seed in a thousand.
    res = stats.kstest(draws, "norm")
    print(f"KS statistic {res.statistic:.2e}, p = {res.pvalue:.3f} on {draws.size} draws")
    assert res.pvalue > 1e-3


def test_mean_and_variance(draws):
    n = draws.size
    # SE of the mean is 1/sqrt(n); SE of the sample variance is sqrt(2/n)
    assert abs(draws.mean()) < 5 / np.sqrt(n)
    assert abs(draws.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    # fourth moment 3 (SE sqrt((105 - 9)/n)): the tails are right too
    assert abs(np.mean(draws ** 4) - 3.0) < 5 * np.sqrt(96.0 / n)


def test_no_correlation_between_neighbouring_counters():
    n = 2 * 10 ** 5
    se = 1.0 / np.sqrt(n)  # SE of a sample correlation of independent normals
    chains = np.arange(n + 1)
    z = normal(5, chains, 7, 3)          # (n+1, 3)
    z2 = normal(5, chains[:-1], 8, 3)    # next step
    pairs = {
        "chain c vs c+1": (z[:-1, 0], z[1:, 0]),
        "step t vs t+1": (z[:-1, 0], z2[:, 0]),
        "coord 0 vs 1 (same Philox call)": (z[:, 0], z[:, 1]),
        "coord 1 vs 2 (next pair)": (z[:, 1], z[:, 2]),
        "coord 0 squared vs 1 squared": (z[:, 0] ** 2, z[:, 1] ** 2),
    }
    for name, (a, b) in pairs.items():
        r = np.corrcoef(a, b)[0, 1]
        assert abs(r) < 5 * se, f"{name}: r = {r:.2e}"


def test_uniform_in_open_interval_and_uniform():
    u = uniform(3, np.arange(10 ** 5), 4)
    assert u.min() > 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3  # fixed seed, as above


def test_bad_seed_type():
    with pytest.raises(TypeError, match="seed must be an int"):
        normal(1.5, 0, 0, 2)


def test_bad_seed_range():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        normal(-1, 0, 0, 2)


def test_bad_chain():
    with pytest.raises(ValueError, match="chain must lie in"):
        normal(1, -1, 0, 2)


def test_bad_step_type():
    with pytest.raises(TypeError, match="step must be an integer"):
        normal(1, 0, 0.5, 2)


def test_bad_dim():
    with pytest.raises(ValueError, match="dim must be a positive int"):
        normal(1, 0, 0, 0)


# ------------------------------------------------------------------ the noise origin
def test_noise_origin_draws_the_rows_of_its_chains():
    from refscore.noise import NoiseOrigin

    o = NoiseOrigin(2**40 + 5, chain0=10, step0=3)
    assert o.key == (np.uint64(5), np.uint64(2**8))
    np.testing.assert_array_equal(o.normal(4, 7, 5), normal(2**40 + 5, np.arange(10, 14), 7, 5))
    np.testing.assert_array_equal(o.uniform(4, 7), uniform(2**40 + 5, np.arange(10, 14), 7))
    s = o.shifted(chains=2, steps=6)
    assert (s.seed, s.chain0, s.step0) == (2**40 + 5, 12, 9)
    # a block of rows from a shifted origin draws the rows of the whole
    np.testing.assert_array_equal(s.normal(2, 1, 3), o.normal(4, 1, 3)[2:])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*64\), got -1"),
    ({"seed": 1.5}, TypeError, r"seed must be an int in \[0, 2\*\*64\), got float"),
    ({"seed": 0, "chain0": 2**32}, ValueError, r"chain0 must be an int in \[0, 2\*\*32\), got 4294967296"),
    ({"seed": 0, "step0": True}, TypeError, r"step0 must be an int in \[0, 2\*\*32\), got bool"),
])
def test_noise_origin_checks_its_fields(kwargs, exc, match):
    from refscore.noise import NoiseOrigin

    with pytest.raises(exc, match=match):
        NoiseOrigin(**kwargs)
