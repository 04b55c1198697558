"""MLPScore / MLPEnergy: every primitive against central finite differences of the
level below, against independent identities (Jacobian diagonal, Hessian of the
energy, Rademacher enumeration, quadrature), and bad input."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refscore._kernels.ids import LossKind
from refscore import losses
from refscore.distributions import Gaussian
from refscore.models import MLPEnergy, MLPScore
from refscore.models.activations import ACTIVATIONS
from refscore.quadrature import population_loss

ACTS = sorted(ACTIVATIONS)
H = 1e-5  # central-difference step


def fd_jacobian(f, x):
    """[k, i, j] = ∂f_i/∂x_j by central differences."""
    cols = []
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = H
        cols.append((f(x + e) - f(x - e)) / (2 * H))
    return np.stack(cols, axis=-1)


def fd_dir(f, theta, u):
    """Directional derivative of the scalar f at theta along u."""
    return (f(theta + H * u) - f(theta - H * u)) / (2 * H)


def close(a, b, scale):
    # Central differences with h = 1e-5 on O(1) smooth functions: truncation
    # h²|f'''|/6 ~ 1e-10·|f'''| and cancellation eps·|f|/h ~ 1e-11·|f|.  With the
    # second-order quantities of a random net reaching |f'''| ~ 1e2, 1e-6 relative
    # to the magnitude of the values compared (plus 1e-7 absolute) is two orders
    # above the error and far below any algebra mistake (which is O(1) relative).
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7 + 1e-6 * scale)


models_st = st.builds(
    lambda kind, d, hidden, act, seed: (kind, d, tuple(hidden), act, seed),
    st.sampled_from(["score", "energy"]),
    st.integers(1, 5),
    st.lists(st.integers(1, 16), min_size=1, max_size=3),
    st.sampled_from(ACTS),
    st.integers(0, 2**16),
)


def make(kind, d, hidden, act, seed, n=3):
    cls = MLPScore if kind == "score" else MLPEnergy
    m = cls(d, hidden, act)
    rng = np.random.default_rng(seed)
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)  # non-zero biases too
    x = rng.standard_normal((n, d))
    return m, theta, x, rng


@settings(max_examples=20)
@given(models_st)
def test_input_derivatives_vs_fd(spec):
    m, theta, x, rng = make(*spec)
    v = rng.standard_normal(x.shape)
    J = m.score_jacobian(theta, x)
    Jfd = fd_jacobian(lambda y: m.score(theta, y), x)
    close(J, Jfd, np.abs(J).max())
    # trace == diagonal sum, JVP == J v (exact algebra, round-off only: 1e-12 relative)
    np.testing.assert_allclose(m.score_trace(theta, x), np.einsum("kii->k", J), atol=1e-12 * (1 + np.abs(J).sum()))
    np.testing.assert_allclose(m.score_jvp(theta, x, v), np.einsum("kij,kj->ki", J, v), atol=1e-12 * (1 + np.abs(J).sum() * np.abs(v).max()))


@settings(max_examples=20)
@given(models_st)
def test_parameter_gradients_vs_fd(spec):
    m, theta, x, rng = make(*spec)
    n, d = x.shape
    ct = rng.standard_normal((n, d))
    w = rng.standard_normal(n)
    v = rng.standard_normal((n, d))
    for _ in range(2):  # two random directions in theta-space
        u = rng.standard_normal(m.n_params)
        g = m.score_vjp_params(theta, x, ct)
        ref = fd_dir(lambda t: np.sum(ct * m.score(t, x)), theta, u)
        close(g @ u, ref, np.abs(ref) + np.abs(g) @ np.abs(u))
        g = m.trace_grad_params(theta, x, w)
        ref = fd_dir(lambda t: w @ m.score_trace(t, x), theta, u)
        close(g @ u, ref, np.abs(ref) + np.abs(g) @ np.abs(u))
        g = m.vjv_grad_params(theta, x, v, w)
        ref = fd_dir(lambda t: w @ np.einsum("kd,kd->k", v, m.score_jvp(t, x, v)), theta, u)
        close(g @ u, ref, np.abs(ref) + np.abs(g) @ np.abs(u))


@settings(max_examples=15)
@given(
    st.integers(1, 5),
    st.lists(st.integers(1, 16), min_size=1, max_size=4),
    st.sampled_from(ACTS),
    st.integers(0, 2**16),
)
def test_trace_paths_agree(d, hidden, act, seed):
    hidden = tuple(hidden)
    paths = ["forward", "cyclic", "auto"] + (["fast"] if len(hidden) <= 2 else [])
    rng = np.random.default_rng(seed)
    theta = None
    x = rng.standard_normal((4, d))
    w = rng.standard_normal(4)
    traces, grads = [], []
    for path in paths:
        m = MLPScore(d, hidden, act, trace_path=path)
        if theta is None:
            theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
            diag = np.einsum("kii->k", m.score_jacobian(theta, x))
        traces.append(m.score_trace(theta, x))
        grads.append(m.trace_grad_params(theta, x, w))
    scale = 1 + np.abs(diag).max()
    for t in traces:
        # same exact quantity by different association orders: round-off only
        np.testing.assert_allclose(t, diag, rtol=0, atol=1e-12 * scale)
    gscale = 1 + np.abs(grads[0]).max()
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=0, atol=1e-11 * gscale)


def test_fast_trace_closed_form_two_hidden_layers():
    # tr J = φ'(a1)ᵀ[(W1 W3) ∘ W2ᵀ]φ'(a2), written out independently here
    rng = np.random.default_rng(3)
    m = MLPScore(3, (5, 4), "tanh")
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    (W1, b1), (W2, b2), (W3, _) = m.unpack(theta)
    x = rng.standard_normal((6, 3))
    a1 = x @ W1.T + b1
    a2 = np.tanh(a1) @ W2.T + b2
    u1, u2 = 1 - np.tanh(a1) ** 2, 1 - np.tanh(a2) ** 2
    expected = np.einsum("kj,jm,km->k", u1, (W1 @ W3) * W2.T, u2)
    np.testing.assert_allclose(m.score_trace(theta, x), expected, rtol=1e-13, atol=1e-14)


def test_layout_and_hand_built_network():
    m = MLPScore(2, (3,), "tanh")
    assert m.n_params == 3 * 2 + 3 + 2 * 3 + 2
    theta = np.arange(m.n_params, dtype=float) / 10
    (W1, b1), (W2, b2) = m.unpack(theta)
    # the documented layout (docs/derivations.md §3): W1.ravel() (row-major 3x2), b1, W2.ravel() (2x3), b2
    np.testing.assert_array_equal(W1, theta[:6].reshape(3, 2))
    np.testing.assert_array_equal(b1, theta[6:9])
    np.testing.assert_array_equal(W2, theta[9:15].reshape(2, 3))
    np.testing.assert_array_equal(b2, theta[15:17])
    np.testing.assert_array_equal(m.pack(m.unpack(theta)), theta)
    x = np.array([[0.3, -0.7], [1.0, 2.0]])
    expected = np.tanh(x @ W1.T + b1) @ W2.T + b2
    np.testing.assert_allclose(m.score(theta, x), expected, rtol=1e-15, atol=1e-15)
    # single point drops the batch axis
    assert m.score(theta, x[0]).shape == (2,)
    assert m.score_jacobian(theta, x[0]).shape == (2, 2)
    assert np.ndim(m.score_trace(theta, x[0])) == 0


def test_energy_layout_and_value():
    m = MLPEnergy(2, (3,), "softplus")
    assert m.n_params == 3 * 2 + 3 + 3 + 1
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(m.n_params)
    (W1, b1), (W2, b2) = m.unpack(theta)
    x = rng.standard_normal((4, 2))
    np.testing.assert_allclose(m.energy(theta, x), np.logaddexp(0, x @ W1.T + b1) @ W2[0] + b2[0], rtol=1e-14)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("hidden", [(4,), (3, 5), (2, 3, 4)])
def test_energy_score_and_hessian_vs_fd(act, hidden):
    rng = np.random.default_rng(7)
    m = MLPEnergy(3, hidden, act)
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    x = rng.standard_normal((4, 3))
    s = m.score(theta, x)
    grad_fd = fd_jacobian(lambda y: m.energy(theta, y)[:, None], x)[:, 0, :]
    close(s, -grad_fd, np.abs(s).max())
    J = m.score_jacobian(theta, x)
    np.testing.assert_allclose(J, np.swapaxes(J, 1, 2), rtol=0, atol=1e-14 * (1 + np.abs(J).max()))  # symmetric to round-off
    # −Hessian of E by second central differences of E: error h²|E''''|/12 + eps|E|/h²;
    # with h = 1e-4 that is ~1e-9 + 1e-8 on these O(1) energies, so 1e-6.
    h = 1e-4
    d = 3
    Hfd = np.empty((4, d, d))
    for i in range(d):
        for j in range(d):
            ei, ej = np.eye(d)[i] * h, np.eye(d)[j] * h
            Hfd[:, i, j] = (
                m.energy(theta, x + ei + ej) - m.energy(theta, x + ei - ej)
                - m.energy(theta, x - ei + ej) + m.energy(theta, x - ei - ej)
            ) / (4 * h * h)
    np.testing.assert_allclose(J, -Hfd, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["score", "energy"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_ssm_rademacher_enumeration_equals_ism(kind, d):
    # E_v[vᵀJv] = tr J exactly when v runs over all 2^d sign vectors (E vvᵀ = I):
    # SSM-VR averaged over the enumeration equals ISM per point, values and gradients.
    rng = np.random.default_rng(d)
    m = (MLPScore if kind == "score" else MLPEnergy)(d, (5, 4), "silu")
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    n = 6
    x = rng.standard_normal((n, d))
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T  # (2^d, d)
    v = np.broadcast_to(signs[:, None, :], (2**d, n, d))
    ism_vals = losses.ism(m, theta, x, reduction="none")
    ism_val, ism_grad = losses.ism(m, theta, x, grad=True)
    vr_vals = losses.ssm_vr(m, theta, x, v, reduction="none")
    vr_val, vr_grad = losses.ssm_vr(m, theta, x, v, grad=True)
    # exact identity, evaluated by different sums: round-off only
    tol = 1e-12 * (1 + np.abs(ism_vals).max())
    np.testing.assert_allclose(vr_vals, ism_vals, rtol=0, atol=tol)
    assert vr_val == pytest.approx(ism_val, abs=tol)
    np.testing.assert_allclose(vr_grad, ism_grad, rtol=0, atol=1e-11 * (1 + np.abs(ism_grad).max()))
    # plain SSM: E_v ½(vᵀs)² = ½‖s‖² as well for Rademacher v
    ssm_vals = losses.ssm(m, theta, x, v, reduction="none")
    np.testing.assert_allclose(ssm_vals, ism_vals, rtol=0, atol=tol)
    _, ssm_grad = losses.ssm(m, theta, x, v, grad=True)
    np.testing.assert_allclose(ssm_grad, ism_grad, rtol=0, atol=1e-11 * (1 + np.abs(ism_grad).max()))


@pytest.mark.parametrize("kind", ["score", "energy"])
@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_esm_minus_ism_constant_for_gaussian(kind, act):
    # ESM − ISM = ½ E‖∇log p‖² = ½ tr Σ⁻¹ for every θ (Hyvärinen 2005, Thm 1).
    g = Gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]])
    m = (MLPScore if kind == "score" else MLPEnergy)(2, (6, 5), act)
    rng = np.random.default_rng(0)
    const = 0.5 * np.trace(np.linalg.inv(g.cov))
    for _ in range(3):
        theta = 0.5 * m.init(rng)
        diff = float(population_loss("esm", m, theta, g, order=60)) - float(population_loss("ism", m, theta, g, order=60))
        # Gauss–Hermite error decays geometrically with the order for these
        # integrands (analytic in a strip); measured < 1e-14 at order 60 with
        # weights at half the Glorot scale, so 1e-10 is a safe bound.
        assert diff == pytest.approx(const, abs=1e-10)


def test_fused_loss_kernels_match_primitive_assembly():
    rng = np.random.default_rng(11)
    for hidden in [(4,), (4, 3), (3, 4, 2)]:
        m = MLPScore(3, hidden, "tanh")
        theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
        x = rng.standard_normal((20, 3))
        w = rng.random(20)
        s = m.score(theta, x)
        per, g = m._fused_terms(LossKind.ISM, theta, x, w, None)
        np.testing.assert_allclose(per, m.score_trace(theta, x) + 0.5 * (s * s).sum(1), rtol=1e-13, atol=1e-13)
        ref = m.trace_grad_params(theta, x, w) + m.score_vjp_params(theta, x, w[:, None] * s)
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))
        v = rng.standard_normal((2, 20, 3))
        W = rng.random((2, 20))
        per, g = m._fused_terms(LossKind.SSM, theta, x, W, v)
        vjv = np.stack([(vi * m.score_jvp(theta, x, vi)).sum(1) for vi in v])
        vs = np.einsum("mnd,nd->mn", v, s)
        np.testing.assert_allclose(per, vjv + 0.5 * vs**2, rtol=1e-13, atol=1e-13)
        ref = sum(m.vjv_grad_params(theta, x, v[i], W[i]) for i in range(2))
        ref = ref + m.score_vjp_params(theta, x, np.einsum("mn,mnd->nd", W * vs, v))
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("cls", [MLPScore, MLPEnergy])
def test_chunking_does_not_change_results(cls):
    rng = np.random.default_rng(5)
    big = cls(3, (6, 5), "tanh")
    small = cls(3, (6, 5), "tanh", chunk_size=1)  # 8-point chunks
    theta = big.init(rng)
    x = rng.standard_normal((50, 3))
    v = rng.standard_normal((50, 3))
    w = rng.random(50)
    # same arithmetic per point, only the order of the sums over points differs
    for name, args in [
        ("score", (x,)), ("score_jacobian", (x,)), ("score_trace", (x,)), ("score_jvp", (x, v)),
        ("score_vjp_params", (x, v)), ("trace_grad_params", (x, w)), ("vjv_grad_params", (x, v, w)),
    ]:
        a = getattr(big, name)(theta, *args)
        b = getattr(small, name)(theta, *args)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * (1 + np.abs(a).max()))


def test_init_glorot_uniform():
    m = MLPScore(30, (200, 100), "tanh")
    theta = m.init(0)
    for (W, b), (o, i) in zip(m.unpack(theta), [(200, 30), (100, 200), (30, 100)]):
        a = np.sqrt(6 / (i + o))
        assert np.all(b == 0)
        assert np.all(np.abs(W) <= a)
        # U(-a, a) has variance a²/3; with ≥ 3000 entries the sample variance is
        # within 10% (its relative sd is ≈ sqrt(0.8/N) ≤ 1.7%, so 6 sd)
        assert W.var() == pytest.approx(a * a / 3, rel=0.1)
    np.testing.assert_array_equal(m.init(0), theta)  # seeded


def test_ism_memory_bounded():
    # ISM loss + gradient at d = 50, hidden (64, 64): chunking keeps the working
    # memory independent of n.  At n = 2e4 one unchunked (n, 64) array is 10 MiB
    # and a forward + reverse pass keeps several alive; chunked, the peak beyond
    # the input stays under 8 MiB (so n = 1e5 stays far below the 1 GiB budget).
    m = MLPScore(50, (64, 64))
    theta = m.init(0)
    x = np.random.default_rng(0).standard_normal((20_000, 50))
    tracemalloc.start()
    try:
        losses.ism(m, theta, x, grad=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


# ----------------------------------------------------------------- bad input
def test_theta_wrong_length_names_layout():
    m = MLPScore(2, (3,))
    with pytest.raises(ValueError, match=r"theta must have shape \(17,\) \(layout: \[W1 \(3x2"):
        m.score(np.zeros(5), np.zeros((1, 2)))


def test_nonfinite_theta():
    m = MLPEnergy(2, (3,))
    theta = m.init(0)
    theta[0] = np.nan
    with pytest.raises(ValueError, match="theta must be finite"):
        m.score(theta, np.zeros((1, 2)))


def test_nonfinite_x():
    m = MLPScore(2, (3,))
    with pytest.raises(ValueError, match="x must be finite"):
        m.score_trace(m.init(0), np.array([[0.0, np.inf]]))


def test_x_wrong_dim():
    m = MLPScore(2, (3,))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        m.score(m.init(0), np.zeros((4, 3)))


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPScore(2, (3,), "relu")


def test_hidden_size_below_one():
    with pytest.raises(ValueError, match=r"hidden sizes must be >= 1, got hidden\[1\] = 0"):
        MLPEnergy(2, (3, 0))


def test_hidden_empty():
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MLPScore(2, ())


def test_hidden_not_integer():
    with pytest.raises(TypeError, match="hidden sizes must be integers"):
        MLPScore(2, (3.5,))


def test_dim_below_one():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        MLPScore(0, (3,))


def test_chunk_size_below_one():
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        MLPScore(2, (3,), chunk_size=0)


def test_bad_trace_path():
    with pytest.raises(ValueError, match="trace_path must be one of"):
        MLPScore(2, (3,), trace_path="hutchinson")


def test_fast_trace_path_needs_shallow_net():
    with pytest.raises(ValueError, match="trace_path='fast' needs one or two hidden layers"):
        MLPScore(2, (3, 3, 3), trace_path="fast")


def test_pack_wrong_shapes():
    m = MLPScore(2, (3,))
    with pytest.raises(ValueError, match=r"layer 1 must be W of shape \(3, 2\)"):
        m.pack([(np.zeros((2, 3)), np.zeros(3)), (np.zeros((2, 3)), np.zeros(2))])
    with pytest.raises(ValueError, match="layers must hold 2"):
        m.pack([(np.zeros((3, 2)), np.zeros(3))])


@pytest.mark.parametrize("hidden", [(4,), (4, 3), (3, 4, 2)])
def test_fused_kernels_forward_path_projections_and_vr(hidden):
    # the stacked forward-mode pass (ISM with trace_path="forward"; SSM/SSM-VR with
    # several projections) against the separate primitives: same arithmetic in a
    # different order, so round-off only (values O(1), ~100 terms: 1e-12)
    rng = np.random.default_rng(12)
    m = MLPScore(3, hidden, "softplus", trace_path="forward")
    theta = m.init(rng) + 0.1 * rng.standard_normal(m.n_params)
    x = rng.standard_normal((45, 3))
    w = rng.random(45)
    s = m.score(theta, x)
    per, g = m._fused_terms(LossKind.ISM, theta, x, w, None)
    np.testing.assert_allclose(per, m.score_trace(theta, x) + 0.5 * (s * s).sum(1), rtol=1e-12, atol=1e-12)
    ref = m.trace_grad_params(theta, x, w) + m.score_vjp_params(theta, x, w[:, None] * s)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))
    v = rng.standard_normal((3, 45, 3))
    W = rng.random((3, 45))
    per, g = m._fused_terms(LossKind.SSM_VR, theta, x, W, v)
    vjv = np.stack([(vi * m.score_jvp(theta, x, vi)).sum(1) for vi in v])
    np.testing.assert_allclose(per, vjv + 0.5 * (s * s).sum(1)[None], rtol=1e-12, atol=1e-12)
    ref = sum(m.vjv_grad_params(theta, x, v[i], W[i]) for i in range(3))
    ref = ref + m.score_vjp_params(theta, x, W.sum(0)[:, None] * s)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))
