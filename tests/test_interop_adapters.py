"""refscore.interop: torch modules and JAX functions from golden specs and models, theta <-> parameters.

Every golden case: the torch module's and the JAX function's scores equal
refscore's at the golden inputs to 1e-12 (float64), theta round trips are
bitwise, energies are -log p / refscore's energy.  The golden inputs and
refscore's counter-based noise convert bitwise.  Importing refscore imports
neither framework, and a missing framework gives an ImportError naming the
install command (simulated in a subprocess by blocking the import).  The torch
tests skip without torch, the JAX tests without jax.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refscore import golden, interop, losses, noise
from refscore.distributions import GaussianMixture
from refscore.models import GaussianMixtureModel, LinearScore, MLPEnergy, MLPScore, NoiseConditional

SPECS = golden.case_specs()
NAMES = list(SPECS)
ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-12  # float64 autodiff / closed forms vs hand-derived: round-off only (measured <= 1e-15)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def rtorch(torch):
    from refscore.interop import torch as rtorch

    return rtorch


@pytest.fixture(scope="module")
def rjax():
    pytest.importorskip("jax")
    from refscore.interop import jax as rjax

    return rjax


@pytest.fixture(scope="module")
def inputs():
    return {name: interop.golden_inputs(name) for name in NAMES}


def _ref(name, inp):
    model = golden.build_model(SPECS[name], reference=True)
    return model, model.score(inp["theta"], inp["x"])


def _run(code, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


# ----------------------------------------------------------------- framework-free
def test_golden_inputs_are_the_stored_ones_bitwise(tmp_path):
    golden.write(tmp_path)
    g = golden.load(tmp_path)
    for name in ("gaussian_d2", "mixture_d5", "mlpenergy_gelu_depth2_d1"):
        fresh, loaded = interop.golden_inputs(name), interop.golden_inputs(g.cases[name])
        assert sorted(fresh) == sorted(golden.INPUTS)
        for k, v in g.cases[name].inputs.items():
            assert fresh[k].dtype == np.float64 and np.array_equal(fresh[k], v), (name, k)
            assert np.array_equal(loaded[k], v)


def test_layout_matches_the_models_and_spec_of_round_trips():
    for name, spec in SPECS.items():
        model = golden.build_model(spec)
        assert interop.n_params(spec) == model.n_params
        assert interop.as_spec(name) == interop.spec_of(model) == interop.as_spec(spec)
    # the MLP layout is nn.Linear's: W (out, in) then b, layer by layer (docs/derivations.md §3.1)
    model = MLPScore(3, hidden=(4,), activation="tanh")
    theta = model.init(0)
    (W1, b1), (W2, b2) = model.unpack(theta)
    layout = interop.parameter_layout(model)
    assert layout == [("layers.0.weight", (4, 3)), ("layers.0.bias", (4,)),
                      ("layers.1.weight", (3, 4)), ("layers.1.bias", (3,))]
    assert np.array_equal(np.concatenate([W1.ravel(), b1, W2.ravel(), b2]), theta)


def test_spec_errors():
    with pytest.raises(ValueError, match="not a golden case name"):
        interop.as_spec("mlp_d3")
    with pytest.raises(ValueError, match="must be one of"):
        interop.as_spec({"model": "Banana", "kwargs": {"dim": 2}})
    with pytest.raises(ValueError, match="dim"):
        interop.as_spec({"model": "LinearScore", "kwargs": {"dim": 0}})
    with pytest.raises(NotImplementedError, match="relu"):
        interop.as_spec({"model": "MLPScore", "kwargs": {"dim": 2, "hidden": [3], "activation": "relu"}})
    with pytest.raises(TypeError, match="nc.model"):
        interop.spec_of(NoiseConditional(LinearScore(2)))
    with pytest.raises(TypeError, match="expected a refscore model"):
        interop.spec_of(object())
    with pytest.raises(ValueError, match="framework must be one of"):
        interop.normal(0, 0, 0, 2, framework="tensorflow")
    # engine options change how refscore computes, not what: dropped from the spec
    spec = interop.spec_of(MLPScore(2, hidden=(3,), backend="numpy"))
    assert spec == {"model": "MLPScore", "kwargs": {"dim": 2, "hidden": [3], "activation": "tanh"}}


def test_numpy_noise_and_inputs_forms():
    z = interop.normal(11, chain=np.arange(3), step=[[0], [7]], dim=5)
    assert np.array_equal(z, noise.normal(11, np.arange(3), [[0], [7]], 5)) and z.shape == (2, 3, 5)
    u = interop.uniform(11, chain=[0, 1], step=2)
    assert np.array_equal(u, noise.uniform(11, [0, 1], 2))
    assert interop.normal(1, 0, 0, 3, dtype="float32").dtype == np.float32


def test_importing_refscore_imports_neither_framework():
    proc = _run("""
        import sys
        import refscore, refscore.interop, refscore.validation.interop
        from refscore.interop import golden_inputs, normal, parameter_layout
        golden_inputs("mlpenergy_tanh_depth1_d2"); normal(0, [0, 1], 3, 2); parameter_layout("mixture_d2")
        assert "torch" not in sys.modules, "torch imported"
        assert "jax" not in sys.modules, "jax imported"
        print("clean")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


@pytest.mark.parametrize("framework, hint", [
    ("torch", "pip install torch"),
    ("jax", "pip install 'refscore[interop]'"),
])
def test_missing_framework_says_how_to_install(framework, hint):
    proc = _run(f"""
        import sys
        sys.modules[{framework!r}] = None          # as if it were not installed
        import refscore.interop
        for attempt in (lambda: __import__("refscore.interop.{framework}"),
                        lambda: refscore.interop.{framework},
                        lambda: refscore.interop.normal(0, 0, 0, 2, framework={framework!r}),
                        lambda: refscore.interop.golden_inputs("linear_d2", framework={framework!r}),
                        lambda: __import__("refscore.validation.interop.{framework}_backend")):
            try:
                attempt()
            except ImportError as exc:
                assert exc.name == {framework!r}, exc.name
                print("IMPORTERROR:", exc)
            else:
                raise SystemExit("no ImportError")
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTERROR:")]
    assert len(lines) == 5
    for line in lines:
        assert f"refscore.interop.{framework} needs" in line and hint in line, line


# ----------------------------------------------------------------- torch
@pytest.mark.parametrize("name", NAMES)
def test_torch_module_scores_equal_refscore(name, inputs, torch, rtorch):
    inp = inputs[name]
    model, ref = _ref(name, inp)
    tin = interop.golden_inputs(name, framework="torch")
    for k, v in inp.items():  # the inputs convert bitwise
        assert tin[k].dtype == torch.float64 and np.array_equal(tin[k].numpy(), v)
    net = rtorch.build_module(SPECS[name], tin["theta"])
    assert isinstance(net, torch.nn.Module) and net.spec == interop.as_spec(name)
    s = net(tin["x"])
    assert s.shape == (3, model.dim) and s.dtype == torch.float64
    assert np.abs(s.detach().numpy() - ref).max() <= TOL
    assert np.abs(net(tin["x"][1]).detach().numpy() - ref[1]).max() <= TOL  # one point (d,)
    # theta -> module -> theta, bitwise; names and shapes are the layout's
    assert [(n, tuple(p.shape)) for n, p in net.named_parameters()] == interop.parameter_layout(name)
    th = rtorch.module_to_theta(net)
    assert th.dtype == np.float64 and np.array_equal(th, inp["theta"])
    other = rtorch.theta_to_module(-inp["theta"], rtorch.build_module(name, np.zeros_like(inp["theta"])))
    assert np.array_equal(rtorch.module_to_theta(other), -inp["theta"])
    # differentiable evaluation at a flat theta tensor
    theta = torch.from_numpy(inp["theta"]).requires_grad_(True)
    assert np.abs(rtorch.functional_score(other, theta, tin["x"]).detach().numpy() - ref).max() <= TOL


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n]["model"] in interop.ENERGY_MODELS])
def test_torch_energies(name, inputs, torch, rtorch):
    inp = inputs[name]
    net = rtorch.build_module(name, inp["theta"])
    E = net.energy(torch.from_numpy(inp["x"])).detach().numpy()
    model = golden.build_model(SPECS[name])
    expected = _energy(model, inp["theta"], inp["x"])
    assert E.shape == (3,) and np.abs(E - expected).max() <= TOL


def _energy(model, theta, x):
    """The energy each adapter promises: refscore's MLPEnergy.energy, the mixture's exact -log p,
    the Gaussian's 1/2 (x - mu)^T P (x - mu) (refscore's -log density, no normaliser)."""
    if isinstance(model, MLPEnergy):
        return model.energy(theta, x)
    if isinstance(model, GaussianMixtureModel):
        return -_mixture_logpdf(model, theta, x)
    mu, L = model.unpack(theta)
    diff = x - mu
    return 0.5 * np.einsum("ni,ij,nj->n", diff, L @ L.T, diff)


def _mixture_logpdf(model, theta, x):
    """log p(x) of refscore's mixture model by refscore.distributions.GaussianMixture (its
    normalised logpdf, full covariances I/tau_j), a route other than the adapters'."""
    alpha, mu, log_tau = model.unpack(theta)
    w = np.exp(alpha - np.logaddexp.reduce(alpha))
    covs = np.eye(model.dim)[None] / np.exp(log_tau)[:, None, None]
    return GaussianMixture(w, mu, covs).logpdf(x)


def test_torch_from_a_model_object_and_training(torch, rtorch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    eps = rng.standard_normal((6, 3))
    for model in (MLPScore(3, hidden=(7, 4), activation="silu"), MLPEnergy(3, hidden=(6,), activation="gelu"),
                  GaussianMixtureModel(3, k=3), LinearScore(3)):
        theta = model.init(5)
        net = rtorch.to_torch(model, theta)
        assert np.array_equal(rtorch.module_to_theta(rtorch.to_torch(model, rng=5)), theta)  # init(rng)
        # DSM in torch: backward() fills .grad, read back in refscore's layout
        r = net(torch.from_numpy(x + 0.4 * eps)) + torch.from_numpy(eps) / 0.4
        loss = 0.5 * (r ** 2).sum(1).mean()
        loss.backward()
        value, grad = losses.dsm(model, theta, x, 0.4, eps, grad=True)
        assert abs(loss.item() - value) <= TOL * max(1.0, abs(value))
        assert np.abs(rtorch.module_to_theta(net, grad=True) - grad).max() <= 1e-10


def test_torch_any_module_with_the_layout_and_float32(torch, rtorch):
    model = MLPScore(2, hidden=(5,), activation="tanh")
    theta = model.init(1)
    x = np.random.default_rng(2).standard_normal((4, 2))
    seq = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    rtorch.theta_to_module(theta, seq)  # a plain nn.Sequential: same layout, no transpose
    assert np.abs(seq(torch.from_numpy(x)).detach().numpy() - model.score(theta, x)).max() <= TOL
    assert np.array_equal(rtorch.module_to_theta(seq), theta)
    net32 = rtorch.to_torch(model, theta, dtype="float32")
    assert net32.layers[0].weight.dtype == torch.float32
    assert np.array_equal(rtorch.module_to_theta(net32), theta.astype(np.float32).astype(np.float64))
    s32 = net32(torch.from_numpy(x).float()).detach().numpy()
    assert np.abs(s32 - model.score(theta, x)).max() < 1e-5


def test_torch_energy_modes(torch, rtorch):
    net = rtorch.build_module("mlpenergy_softplus_depth2_d2")
    x = torch.ones(3, 2, dtype=torch.float64)
    with torch.no_grad():
        s = net(x)
    assert not s.requires_grad
    s = net(x)
    assert s.requires_grad  # a graph to the parameters: losses on the score train
    xg = x.clone().requires_grad_(True)
    (J0,) = torch.autograd.grad(net(xg)[:, 0].sum(), xg)  # and to x: Jacobian rows
    assert J0.shape == (3, 2)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        net(torch.ones(3, 2, dtype=torch.float64))


def test_torch_errors(torch, rtorch):
    net = rtorch.build_module("linear_d2")
    with pytest.raises(ValueError, match=r"theta must have shape \(6,\).*A \(2, 2\), b \(2,\)"):
        rtorch.theta_to_module(np.zeros(5), net)
    with pytest.raises(ValueError, match="finite"):
        rtorch.theta_to_module(np.full(6, np.nan), net)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        net(torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating"):
        rtorch.build_module("linear_d2", dtype="int64")
    net.extra = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="not the layout"):
        rtorch.module_to_theta(net)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_noise(dtype, torch):
    z = interop.normal(2**40 + 3, chain=np.arange(4), step=[[0], [9]], dim=7, framework="torch", dtype=dtype)
    ref = noise.normal(2**40 + 3, np.arange(4), [[0], [9]], 7).astype(dtype)
    assert z.dtype == getattr(torch, dtype) and z.shape == (2, 4, 7)
    assert np.array_equal(z.numpy(), ref)  # bitwise (float32: refscore's float64 rounded once)
    u = interop.uniform(5, chain=[0, 1, 2], step=4, framework="torch", dtype=dtype)
    assert np.array_equal(u.numpy(), noise.uniform(5, [0, 1, 2], 4).astype(dtype))


# ----------------------------------------------------------------- jax
@pytest.mark.parametrize("name", NAMES)
def test_jax_scores_equal_refscore(name, inputs, rjax):
    import jax.numpy as jnp

    inp = inputs[name]
    model, ref = _ref(name, inp)
    jin = interop.golden_inputs(name, framework="jax")
    for k, v in inp.items():
        assert jin[k].dtype == jnp.float64 and np.array_equal(np.asarray(jin[k]), v)
    score = rjax.score_function(SPECS[name])
    params = rjax.theta_to_params(jin["theta"], name)
    assert [(n, p.shape) for (n, _), p in zip(interop.parameter_layout(name), params)] == \
        interop.parameter_layout(name)
    s = np.asarray(score(params, jin["x"]))
    assert s.shape == (3, model.dim) and np.abs(s - ref).max() <= TOL
    assert np.abs(np.asarray(score(params, jin["x"][2])) - ref[2]).max() <= TOL
    back = np.asarray(rjax.params_to_theta(params, name))
    assert back.dtype == np.float64 and np.array_equal(back, inp["theta"])  # bitwise
    np_params = rjax.theta_to_params(inp["theta"], score)  # from NumPy; the function stands for its spec
    assert np.array_equal(np.asarray(rjax.params_to_theta(np_params, score)), inp["theta"])


def test_jax_energies_gradients_and_jit(inputs, rjax):
    import jax
    import jax.numpy as jnp

    for name in ("mlpenergy_silu_depth2_d5", "mixture_d2", "gaussian_d2"):
        inp = inputs[name]
        model = golden.build_model(SPECS[name])
        params = rjax.theta_to_params(inp["theta"], name)
        E = np.asarray(rjax.energy_function(name)(params, inp["x"]))
        assert np.abs(E - _energy(model, inp["theta"], inp["x"])).max() <= TOL
    with pytest.raises(ValueError, match="no energy"):
        rjax.energy_function("linear_d2")
    # the ESM gradient over theta, through theta_to_params inside jit, is refscore's
    for name in ("gaussian_d5", "mlpscore_sigmoid_depth2_d2", "mlpenergy_tanh_depth1_d5"):
        inp = inputs[name]
        model = golden.build_model(SPECS[name])
        score = rjax.score_function(name)

        @jax.jit
        def esm(theta, score=score, inp=inp):
            r = score(rjax.theta_to_params(theta, score), inp["x"]) - inp["target"]
            return jnp.mean(0.5 * jnp.sum(r ** 2, axis=1))

        value, grad = jax.value_and_grad(esm)(jnp.asarray(inp["theta"]))
        ref_value, ref_grad = losses.esm(model, inp["theta"], inp["x"], inp["target"], grad=True)
        assert abs(float(value) - ref_value) <= TOL * max(1.0, abs(ref_value))
        assert np.abs(np.asarray(grad) - ref_grad).max() <= 1e-10


def test_jax_from_a_model_object_and_errors(rjax):
    model = MLPEnergy(2, hidden=(4, 3), activation="sigmoid")
    score, params = rjax.to_jax(model, rng=3)
    assert np.array_equal(np.asarray(rjax.params_to_theta(params, model)), model.init(3))
    x = np.random.default_rng(0).standard_normal((5, 2))
    assert np.abs(np.asarray(score(params, x)) - model.score(model.init(3), x)).max() <= TOL
    with pytest.raises(ValueError, match=r"theta must have shape \(5,\)"):
        rjax.theta_to_params(np.zeros(4), "gaussian_d2")
    with pytest.raises(ValueError, match="params must have the shapes"):
        rjax.params_to_theta(params[:-1], model)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        score(params, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="theta is needed"):
        rjax.to_jax("linear_d2")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_noise(dtype, rjax):
    z = interop.normal(9, chain=np.arange(5), step=3, dim=4, framework="jax", dtype=dtype)
    assert str(z.dtype) == dtype and z.shape == (5, 4)
    assert np.array_equal(np.asarray(z), noise.normal(9, np.arange(5), 3, 4).astype(dtype))
    u = interop.uniform(9, chain=np.arange(5), step=3, framework="jax")
    assert np.array_equal(np.asarray(u), noise.uniform(9, np.arange(5), 3))


# ----------------------------------------------------------------- the frameworks, one table
def test_the_framework_table():
    from refscore.interop.frameworks import Framework

    assert list(interop.FRAMEWORKS) == ["numpy", "torch", "jax"] and len(interop.FRAMEWORKS) == 3
    assert "torch" in interop.FRAMEWORKS and "tensorflow" not in interop.FRAMEWORKS
    with pytest.raises(ValueError, match=r"framework must be one of \['numpy', 'torch', 'jax'\], got 'tensorflow'"):
        interop.get_framework("tensorflow")
    with pytest.raises(ValueError, match=r"framework must be one of .*, got \['numpy'\]"):
        interop.get_framework(["numpy"])
    fw = interop.get_framework("numpy")
    assert isinstance(fw, Framework) and fw.name == "numpy" and interop.FRAMEWORKS["numpy"] is fw


def test_listing_the_frameworks_imports_neither():
    proc = _run("""
        import sys
        from refscore.interop import FRAMEWORKS, get_framework
        assert list(FRAMEWORKS) == ["numpy", "torch", "jax"]
        get_framework("numpy").as_inputs({"x": [1.0]})
        assert "torch" not in sys.modules and "jax" not in sys.modules, "a framework was imported"
        print("clean")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


def _esm_for(name):
    """ESM value (and, for NumPy, gradient) written in each framework, as refscore.testing calls it."""
    if name == "numpy":
        def esm(model, theta, x, target):
            r = model.score(theta, x) - target
            return 0.5 * np.mean(np.sum(r * r, axis=1)), model.score_vjp_params(theta, x, r / len(x))
    elif name == "torch":
        def esm(module, x, target):
            return 0.5 * ((module(x) - target) ** 2).sum(1).mean()
    else:
        def esm(score, params, x, target):
            import jax.numpy as jnp

            return 0.5 * jnp.mean(jnp.sum((score(params, x) - target) ** 2, axis=1))
    return esm


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_every_framework_implements_the_interface_alike(name):
    from refscore.interop.frameworks import Framework

    if name != "numpy":
        pytest.importorskip(name)
    fw = interop.get_framework(name)
    assert isinstance(fw, Framework) and fw.name == name  # made, so no abstract method is left
    # arrays: float64 bitwise there and back, float32 rounded, integers kept, fresh copies equal
    a = np.array([[0.1, -2.5], [3.0, 1e-300]])
    assert np.array_equal(fw.to_numpy(fw.as_array(a)), a)
    assert fw.to_numpy(fw.as_array(a, dtype="float32")).dtype == np.float32
    assert fw.to_numpy(fw.as_integers(np.array([2, 0, 1]))).tolist() == [2, 0, 1]
    v = fw.as_array(a)
    copied = fw.fresh({"v": [v]})["v"][0]
    assert np.array_equal(fw.to_numpy(copied), a) and (copied is not v or name == "jax")  # jax arrays: immutable
    # a sampler target's functions are refscore's to round-off, noised or not
    spec = golden.extra_case_specs()["mala_mixture_d2"]
    target = golden.build_target(spec)
    x = np.random.default_rng(0).standard_normal((5, 2))
    for sigma in (None, 0.7):
        score, log_prob = fw.target_functions(spec, sigma=sigma)
        if sigma is None:
            ref_score, ref_log_prob = target.score(x), target.logpdf(x)
        else:
            ref_score, ref_log_prob = target.perturbed().score(x, sigma), target.perturbed().logpdf(x, sigma)
        assert np.allclose(fw.to_numpy(score(fw.as_array(x))), ref_score, rtol=0, atol=TOL)
        assert np.allclose(fw.to_numpy(log_prob(fw.as_array(x))), ref_log_prob, rtol=0, atol=TOL)
    # a loss through the interface: the golden ESM value and gradient over theta
    inp, quantities, _ = golden.case_values("mixture_d2", SPECS["mixture_d2"])
    model = fw.loss_model(SPECS["mixture_d2"], inp["theta"])
    kw = fw.as_inputs({"x": inp["x"], "target": inp["target"]})
    value, grad = fw.loss_value_and_grad(_esm_for(name), model, kw)
    assert abs(float(value) - quantities["esm"]) < TOL
    assert np.allclose(grad, quantities["esm_grad"], rtol=0, atol=TOL)
    _, no_grad = fw.loss_value_and_grad(_esm_for(name), fw.loss_model(SPECS["mixture_d2"], inp["theta"]), kw,
                                        grad=False)
    assert no_grad is None
