"""The Numba fused-loss kernel of MLPScore (backend="numba") against the NumPy
stacked pass (backend="numpy") and the separate primitives, its thread-count
independence, and the branch-free exp / tanh it vectorises with."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refscore._kernels.ids import LossKind
from refscore import losses
from refscore._kernels import vecmath as _vecmath
from refscore._kernels.activation_table import LIBM_OPS, compile_activation
from refscore.models import MLPScore
from refscore.models.activations import ACTIVATIONS, Activation, get_activation, kernel_id

ACTS = sorted(ACTIVATIONS)


@numba.njit(error_model="numpy")
def _elementwise(f, z):
    """f (a compiled scalar function) over z, in a loop as the kernels call it."""
    out = np.empty_like(z)
    for i in range(z.size):
        out[i] = f(z[i])
    return out


def _vec_tanh(z):
    return _elementwise(_vecmath.tanh, z)


def _vec_exp(z):
    return _elementwise(_vecmath.exp_nonpositive, z)


@numba.njit(error_model="numpy")
def _vec_act(kind, z):
    out = np.empty((3, z.size))
    for i in range(z.size):
        out[0, i], out[1, i], out[2, i] = _vecmath.activation(kind, z[i])
    return out


def _ulps(a, b):
    """|a − b| in units of the spacing at b (spacing of the smallest normal below it)."""
    return np.abs(a - b) / np.spacing(np.maximum(np.abs(b), np.finfo(float).tiny))


def _grid():
    rng = np.random.default_rng(0)
    t = np.logspace(-300, np.log10(30.0), 4000)
    return np.concatenate([rng.standard_normal(20000) * 3, np.linspace(-25, 25, 20001), t, -t, [0.0, -0.0]])


def test_tanh_within_two_ulp_of_numpy():
    # Cephes' rational form (|z| < 0.625) and 1 − 2/(e^{2|z|}+1): libm-class
    # accuracy; measured max 2 ulp against np.tanh, each ≤ 1 ulp from the truth
    z = _grid()
    assert _ulps(_vec_tanh(z), np.tanh(z)).max() <= 2.0
    # the tails are exactly ±1, the sign of zero is kept, non-finite inputs behave
    np.testing.assert_array_equal(_vec_tanh(np.array([40.0, -40.0, 1e300, np.inf, -np.inf])),
                                  [1.0, -1.0, 1.0, 1.0, -1.0])
    assert np.signbit(_vec_tanh(np.array([-0.0]))[0])
    assert np.isnan(_vec_tanh(np.array([np.nan]))[0])


def test_exp_nonpositive_within_one_ulp_of_numpy():
    z = -np.abs(_grid())
    z = np.concatenate([z, -np.linspace(0, 708, 50001)])
    assert _ulps(_vec_exp(z), np.exp(z)).max() <= 1.0
    # subnormal results: within one subnormal step; past e^-745.2 exactly 0
    deep = -np.linspace(708.5, 745.0, 1001)
    assert np.abs(_vec_exp(deep) - np.exp(deep)).max() <= 5e-324
    np.testing.assert_array_equal(_vec_exp(np.array([-746.0, -1e300, -np.inf])), 0.0)
    assert np.isnan(_vec_exp(np.array([np.nan]))[0])


_LIBM_NUMBA = compile_activation(lambda f: numba.njit(error_model="numpy")(f), LIBM_OPS)
_LIBM_PYTHON = compile_activation(lambda f: f, LIBM_OPS)  # what the CUDA simulator runs


@numba.njit(error_model="numpy")
def _vec_libm(kind, z):
    out = np.empty((3, z.size))
    for i in range(z.size):
        out[0, i], out[1, i], out[2, i] = _LIBM_NUMBA(kind, z[i])
    return out


def _py_libm(kind, z):
    return np.array([_LIBM_PYTHON(kind, float(v)) for v in z]).T


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("form", ["cpu-branch-free", "numba-libm", "python-libm"])
def test_every_registry_activation_in_every_compiled_form(act, form):
    # each registry entry's kernel formulas, compiled as the CPU kernels do
    # (branch-free exp/tanh), as the CUDA kernels do (libm; numba-compiled and
    # as the plain Python the CUDA simulator runs), against its NumPy
    # derivatives: same formulas, elementary functions within a few ulp, so
    # 4e-15 relative to max(1, |value|)
    z = np.concatenate([np.linspace(-50, 50, 2001), [-700.0, 700.0, 0.0]])
    kind = kernel_id(ACTIVATIONS[act])
    ours = {"cpu-branch-free": _vec_act, "numba-libm": _vec_libm, "python-libm": _py_libm}[form](kind, z)
    ref = get_activation(act).derivatives(z, 2)
    for k in range(3):
        np.testing.assert_allclose(ours[k], ref[k], rtol=4e-15, atol=4e-15)


def test_unknown_activation_id_gives_nan_not_another_activation():
    unknown = len(ACTIVATIONS)
    assert np.isnan(_vec_act(unknown, np.array([0.3]))).all()
    assert np.isnan(_py_libm(unknown, np.array([0.3]))).all()


def test_kernel_id_matches_by_object_not_name():
    tanh = ACTIVATIONS["tanh"]
    assert kernel_id(tanh) == list(ACTIVATIONS).index("tanh")
    assert kernel_id(Activation("tanh", lambda z, order: tanh.derivatives(z, order))) is None
    assert kernel_id("tanh") is None


def _both(d, hidden, act, chunk_size, trace_path="forward"):
    kw = dict(chunk_size=chunk_size, trace_path=trace_path)
    return (MLPScore(d, hidden, act, backend="numba", **kw), MLPScore(d, hidden, act, backend="numpy", **kw))


@settings(max_examples=20)
@given(d=st.integers(1, 5), hidden=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       act=st.sampled_from(ACTS), n=st.integers(1, 40), m=st.integers(1, 3),
       chunk=st.sampled_from([1, 64, 500, 12288]), seed=st.integers(0, 2**16))
def test_numba_engine_matches_numpy_engine(d, hidden, act, n, m, chunk, seed):
    # two implementations of one arithmetic: round-off only.  Values O(1),
    # sums of at most a few hundred terms: 1e-12 relative to the largest entry.
    # ISM on both trace paths the kernels cover: "forward" (stacked_terms) and,
    # for one or two hidden layers, the closed form (ism_closed_form).
    rng = np.random.default_rng(seed)
    fast, ref = _both(d, tuple(hidden), act, chunk)
    theta = fast.init(rng) + 0.2 * rng.standard_normal(fast.n_params)
    x = rng.standard_normal((n, d))
    w = rng.random(n)
    v = rng.standard_normal((m, n, d))
    W = rng.random((m, n))
    pairs = [(fast._fused_terms(LossKind.ISM, theta, x, w, None), ref._fused_terms(LossKind.ISM, theta, x, w, None))]
    if len(hidden) <= 2:
        cf, cf_ref = _both(d, tuple(hidden), act, chunk, trace_path="fast")
        pairs.append((cf._fused_terms(LossKind.ISM, theta, x, w, None), cf_ref._fused_terms(LossKind.ISM, theta, x, w, None)))
    for vr in (False, True):
        pairs.append((fast._fused_terms(LossKind.SSM_VR if vr else LossKind.SSM, theta, x, W, v), ref._fused_terms(LossKind.SSM_VR if vr else LossKind.SSM, theta, x, W, v)))
    for (per, g), (per0, g0) in pairs:
        assert per.shape == per0.shape
        np.testing.assert_allclose(per, per0, rtol=0, atol=1e-12 * (1 + np.abs(per0).max()))
        np.testing.assert_allclose(g, g0, rtol=0, atol=1e-12 * (1 + np.abs(g0).max()))


def _check_ism_against_primitives(fused, ref, seed, n):
    """``fused``'s ISM kernel against ``ref``'s separate primitives (trace_grad_params +
    score_vjp_params, no stacking): round-off only, values O(1), so 1e-12."""
    rng = np.random.default_rng(seed)
    theta = fused.init(rng) + 0.1 * rng.standard_normal(fused.n_params)
    x = rng.standard_normal((n, fused.dim))
    w = rng.random(n)
    per, g = fused._fused_terms(LossKind.ISM, theta, x, w, None)
    s = ref.score(theta, x)
    np.testing.assert_allclose(per, ref.score_trace(theta, x) + 0.5 * (s * s).sum(1), rtol=1e-12, atol=1e-12)
    want = ref.trace_grad_params(theta, x, w) + ref.score_vjp_params(theta, x, w[:, None] * s)
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-12 * (1 + np.abs(want).max()))


def test_numba_engine_against_primitives_many_blocks():
    # the stacked kernel with many blocks and all 16 groups
    m = MLPScore(4, (7, 6, 5), "silu", chunk_size=200, trace_path="forward")
    _check_ism_against_primitives(m, m, 3, 300)


@pytest.mark.parametrize("hidden", [(9,), (8, 7)])
def test_closed_form_kernel_against_primitives_many_blocks(hidden):
    # the closed-form trace kernel against the cyclic path's primitives (different
    # algebra: tangents through W_1 W_L), many blocks
    m = MLPScore(3, hidden, "gelu", chunk_size=50, trace_path="fast")
    cyc = MLPScore(3, hidden, "gelu", trace_path="cyclic", backend="numpy")
    _check_ism_against_primitives(m, cyc, 5, 250)


def test_numba_engine_independent_of_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least two Numba threads")
    rng = np.random.default_rng(4)
    model = MLPScore(5, (16, 16), "tanh", chunk_size=300)
    theta = model.init(rng)
    x = rng.standard_normal((2000, 5))
    v = losses.projections(rng, (2000, 5), kind="rademacher")
    old = numba.get_num_threads()
    try:
        out = []
        for t in (1, 2):
            numba.set_num_threads(t)
            out.append(losses.ssm(model, theta, x, v, grad=True))
            out.append(losses.ism(model, theta, x, grad=True))
    finally:
        numba.set_num_threads(old)
    for one, two in zip(out[:2], out[2:]):
        assert one[0] == two[0]
        np.testing.assert_array_equal(one[1], two[1])


def test_backend_argument_checked_and_custom_activation_runs_in_numpy():
    with pytest.raises(ValueError, match="backend"):
        MLPScore(2, (4,), backend="torch")
    # a user's own Activation (even one named like a registry entry) has no
    # kernel formulas: "auto" runs it in NumPy, "numba" refuses it
    gelu = ACTIVATIONS["gelu"]
    mine = Activation("gelu", lambda z, order: ACTIVATIONS["tanh"].derivatives(z, order))
    with pytest.raises(ValueError, match="kernel formulas"):
        MLPScore(2, (4,), mine, backend="numba")
    custom = MLPScore(2, (4, 3, 2), mine)
    builtin = MLPScore(2, (4, 3, 2), "tanh")
    assert not custom.uses_numba and builtin.uses_numba
    assert MLPScore(2, (4,), gelu).kernel_activation == kernel_id(gelu)
    rng = np.random.default_rng(0)
    theta = builtin.init(rng)
    x = rng.standard_normal((30, 2))
    v = rng.standard_normal((30, 2))
    a = losses.ssm(custom, theta, x, v, grad=True)
    b = losses.ssm(builtin, theta, x, v, grad=True)
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-13)


def test_engine_is_the_deprecated_name_of_backend():
    with pytest.warns(DeprecationWarning, match="backend"):
        m = MLPScore(2, (4,), engine="numpy")
    assert m.backend == "numpy" and not m.uses_numba


def test_diverging_input_is_not_hidden():
    # a non-finite parameter must come out non-finite (the training loop and the
    # losses report it), not be squashed to ±1 by the tanh kernel
    x = np.random.default_rng(0).standard_normal((10, 3))
    for hidden, path in (((5, 5, 5), "forward"), ((5, 5), "fast")):
        model = MLPScore(3, hidden, "tanh", trace_path=path)
        theta = model.init(0)
        theta[0] = np.nan
        per, g = model._fused_terms(LossKind.ISM, theta, x, np.ones(10), None)
        assert np.isnan(per).all() and np.isnan(g).any()
        per, g = model._fused_terms(LossKind.SSM, theta, x, np.ones((1, 10)), np.ones((1, 10, 3)))
        assert np.isnan(per).all() and np.isnan(g).any()


@pytest.mark.parametrize("hidden", [(6,), (5, 4), (4, 3, 5)])
def test_residual_kernel_esm_dsm_match_numpy_engine(hidden):
    # ESM and DSM (one forward + one reverse pass in the kernel) against the
    # NumPy engine's score + score_vjp_params: round-off only, 1e-12
    from refscore.distributions import Gaussian

    rng = np.random.default_rng(6)
    fast = MLPScore(3, hidden, "softplus", chunk_size=100)
    ref = MLPScore(3, hidden, "softplus", backend="numpy")
    theta = fast.init(rng) + 0.1 * rng.standard_normal(fast.n_params)
    x = rng.standard_normal((400, 3))
    eps = rng.standard_normal((400, 3))
    target = Gaussian([0.5, 0.0, -1.0], np.diag([1.0, 2.0, 0.5]))
    for loss in (lambda m: losses.esm(m, theta, x, target.score(x), grad=True),
                 lambda m: losses.dsm(m, theta, x, 0.3, eps, grad=True)):
        (v1, g1), (v0, g0) = loss(fast), loss(ref)
        assert v1 == pytest.approx(v0, rel=1e-12)
        np.testing.assert_allclose(g1, g0, rtol=0, atol=1e-12 * (1 + np.abs(g0).max()))


@pytest.mark.parametrize("sigma", [0.3, 2.5])
def test_denoising_kernel_is_the_residual_kernel_on_the_noised_points(sigma):
    # kind DENOISING forms x + sigma z and s + z / sigma where the kernel reads each point: the same IEEE
    # operations as NumPy's x + sigma * z and s - (-z / sigma) (s - (-a) = s + a exactly), in the same
    # kernel with the same blocking, so the per-point terms and the gradient are the RESIDUAL kernel's
    # on those arrays bit for bit (no BLAS and no reordering in between)
    from refscore.models._mlp_fused import fused_terms

    rng = np.random.default_rng(11)
    model = MLPScore(4, (7, 5), "tanh", chunk_size=60)
    theta = model.init(rng) + 0.1 * rng.standard_normal(model.n_params)
    x = rng.standard_normal((300, 4))
    z = rng.standard_normal((300, 4))
    w = rng.uniform(0.5, 1.5, 300)
    per_d, g_d = fused_terms(model, LossKind.DENOISING, theta, x, w, (sigma, z))
    per_r, g_r = fused_terms(model, LossKind.RESIDUAL, theta, x + sigma * z, w, -z / sigma)
    np.testing.assert_array_equal(per_d, per_r)
    np.testing.assert_array_equal(g_d, g_r)
    # and the NumPy engine (score + score_vjp_params on the noised points) to round-off
    per_p, g_p = losses.loss_terms(LossKind.DENOISING, MLPScore(4, (7, 5), "tanh", backend="numpy"), theta, x, w,
                                   (sigma, z), grad=True)
    np.testing.assert_allclose(per_d, per_p, rtol=1e-12, atol=0)
    np.testing.assert_allclose(g_d, g_p, rtol=0, atol=1e-12 * np.abs(g_p).max())


_DOT_ROWS = []


def _dot_rows():
    """The kernels' product, compiled as they compile it (SLP vectoriser on for it alone)."""
    if not _DOT_ROWS:
        from refscore._kernels.tile_products import compile_tile_products

        _DOT_ROWS.append(compile_tile_products(numba.njit))
    return _DOT_ROWS[0]


def _placed(a, offset):
    """A copy of ``a`` that starts ``offset`` float64s past a 64-byte boundary."""
    buf = np.empty(a.size + 16)
    start = (-(buf.ctypes.data % 64) // 8) % 8 + offset
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("c, K, m", [(1, 1, 1), (3, 5, 2), (4, 4, 16), (5, 9, 17), (7, 16, 3), (192, 64, 64),
                                     (13, 10, 64), (6, 200, 10), (9, 0, 3)])
@pytest.mark.parametrize("a_by_columns", [False, True])
@pytest.mark.parametrize("start", ["C", "row", "other"])
def test_dot_rows_against_numpy_every_edge_tile(c, K, m, a_by_columns, start):
    # C = C0 + A B over tiles of 6 rows x 16 columns (c, m below, at and past multiples of those), K below,
    # at and past a chunk of 64, A read along its rows (a forward product) or down its columns (a
    # weight gradient); C and B padded as the kernels pad them.  The first term C0 is read with a row
    # stride: C itself (a weight gradient's sum over blocks), one row for every row (stride 0: a bias,
    # a row of zeros), or another array of a wider row.  Each entry is C0's value plus K products of
    # O(1) numbers summed in order with fused multiply-adds: 1e-14 relative to the sum of |terms|
    from refscore._kernels.tile_products import padded, rows_padded

    dot_rows = _dot_rows()
    rng = np.random.default_rng(c * 1000 + K * 10 + m)
    cp, mp = rows_padded(c), padded(m)
    if a_by_columns:  # A[k, i] = G[i, k]: G is (K, cp) row-major, read with strides (1, cp)
        G = rng.standard_normal((max(K, 1), cp))
        Af, rs, cs, A = G.ravel(), 1, cp, G.T[:, :K]
    else:
        A = rng.standard_normal((cp, K + 2))  # entries past K must be ignored
        Af, rs, cs = A.ravel(), K + 2, 1
        A = A[:, :K]
    B = np.zeros((K, mp))
    B[:, :m] = rng.standard_normal((K, m))
    C = rng.standard_normal((cp, mp))
    if start == "C":
        first, src, stride = C.copy(), C.ravel(), mp
    elif start == "row":
        row = rng.standard_normal(mp)
        first, src, stride = np.broadcast_to(row, (cp, mp)), row, 0
    else:
        wide = rng.standard_normal((cp, mp + 5))
        first, src, stride = wide[:, :mp], wide.ravel(), mp + 5
    before = C.copy()
    dot_rows(Af, rs, cs, B, C.ravel(), mp, cp, K, src, stride)
    want = first[:c, :m] + A[:c] @ B[:, :m]
    scale = np.abs(first[:c, :m]) + np.abs(A[:c]) @ np.abs(B[:, :m])
    assert np.all(np.abs(C[:c, :m] - want) <= 1e-14 * scale)
    # every entry sums its terms in order i = 0, 1, ... from its first term, whatever its tile, so the
    # result does not depend on where the operands lie: bitwise the same at other addresses
    for off in (1, 3, 5):
        C2 = before.copy()
        src2 = C2.ravel() if start == "C" else _placed(src, (off + 2) % 8)
        dot_rows(_placed(Af, off), rs, cs, _placed(B, 7 - off), C2.ravel(), mp, cp, K, src2, stride)
        np.testing.assert_array_equal(C2, C)


def test_padded_widths_and_rows():
    from refscore._kernels.tile_products import R_TILE, S_TILE, padded, rows_padded

    for h in (1, 15, 16, 17, 64, 100):
        assert padded(h) % S_TILE == 0 and h <= padded(h) < h + S_TILE
        assert rows_padded(h) % R_TILE == 0 and h <= rows_padded(h) < h + R_TILE


def test_kernels_reuse_their_workspace_across_layouts():
    # each thread keeps one workspace per kernel between calls, unzeroed (only what a result reads is
    # written first): calls of other layouts in between (wider, deeper, other kinds, another d) must
    # not change a result, bitwise, on one thread or two
    rng = np.random.default_rng(11)
    small = MLPScore(3, (5, 4), "tanh", chunk_size=60)
    theta = small.init(rng)
    x = rng.standard_normal((50, 3))
    v = rng.standard_normal((50, 3))
    old = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            first = [losses.ism(small, theta, x, grad=True), losses.ssm(small, theta, x, v, grad=True)]
            for d, hidden in ((20, (40, 33)), (2, (70, 9, 17))):  # other layouts fill the workspaces
                big = MLPScore(d, hidden, "softplus", chunk_size=900)
                xb = rng.standard_normal((300, d))
                losses.ism(big, big.init(rng), xb, grad=True)
                losses.ssm_vr(big, big.init(rng), xb, rng.standard_normal((300, d)), grad=True)
            again = [losses.ism(small, theta, x, grad=True), losses.ssm(small, theta, x, v, grad=True)]
            for (v0, g0), (v1, g1) in zip(first, again):
                assert v0 == v1
                np.testing.assert_array_equal(g0, g1)
    finally:
        numba.set_num_threads(old)


def test_slp_vectoriser_on_only_while_the_product_compiles():
    # compile_tile_products turns Numba's SLP vectoriser on for the product's own compilation (a
    # listener on the compile event, registered before the one below, so its start runs first) and
    # restores the setting when it ends; a function compiled afterwards sees the setting as before
    from numba.core import config, event

    from refscore._kernels.tile_products import R_TILE, compile_tile_products

    before = config.SLP_VECTORIZE
    dot_rows = compile_tile_products(numba.njit)
    during = []

    class _Record(event.Listener):
        def on_start(self, ev):
            if ev.data.get("dispatcher") is dot_rows:
                during.append(config.SLP_VECTORIZE)

        def on_end(self, ev):
            pass

    rec = _Record()
    event.register("numba:compile", rec)
    try:
        C = np.zeros((R_TILE, 16))  # one tile: the product writes whole tiles
        dot_rows(np.ones(R_TILE), np.int64(1), np.int64(R_TILE), np.ones((1, 16)), C.ravel(), np.int64(16),
                 np.int64(R_TILE), np.int64(1), C.ravel(), np.int64(16))
    finally:
        event.unregister("numba:compile", rec)
    assert during == [1] and config.SLP_VECTORIZE == before
    np.testing.assert_array_equal(C, 1.0)
