"""refscore.interop and refscore.testing on inputs users really pass them.

A user's own activation object that carries a registry name is refused, not
replaced by refscore's; read-only golden arrays go into torch without a
warning (a suite run with ``-W error`` passes); the Gaussian module has its
energy like every other energy model; complex parameters and parameterless
modules get a clear answer; a case selector of the wrong type is named; and
user code that writes into its inputs (a MALA step updating ``x`` in place, a
loss scribbling on ``x``) sees fresh arrays on every call.  The torch tests
skip without torch, the JAX tests without jax.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refscore import golden, interop, testing
from refscore.models import GaussianModel, MLPEnergy, MLPScore
from refscore.models.activations import ACTIVATIONS, Activation

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-12  # float64 closed forms / autodiff vs refscore's hand-derived forms: round-off only (measured <= 1e-15)
ENERGY_CLASSES = ["GaussianModel", "GaussianMixtureModel", "MLPEnergy"]


def _twice_tanh(z, order):
    """2 tanh z and its derivatives: an activation of the user's, named "tanh"."""
    return [2.0 * v for v in ACTIVATIONS["tanh"].derivatives(z, order)]


def _run_warnings_as_errors(framework, code, timeout=300):
    """``code`` in a fresh interpreter with every warning an error (torch warns about a read-only
    array once per process): what a user's suite run with ``-W error`` sees at run time.  numpy,
    the framework and refscore's core are imported first, so that what is checked is the run, not
    the import of third-party or unrelated modules."""
    prelude = f"import warnings\nimport numpy\nimport {framework}\nimport refscore.golden\n" \
              "warnings.simplefilter('error')\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


# ================================================================== activations by object
@pytest.mark.parametrize("cls", [MLPScore, MLPEnergy])
def test_a_users_activation_named_like_a_registry_entry_is_refused(cls):
    model = cls(2, (4,), Activation("tanh", _twice_tanh))
    theta = model.init(0)
    x = np.array([[0.3, -0.7], [1.1, 0.2]])
    # the model itself runs the user's function (2 tanh), not refscore's tanh
    ref = cls(2, (4,), "tanh")
    assert not np.allclose(model.score(theta, x), ref.score(theta, x))
    with pytest.raises(NotImplementedError, match=r"Activation\('tanh'\).*not refscore's registry"):
        interop.spec_of(model)
    with pytest.raises(NotImplementedError, match="registry"):
        interop.as_spec(model)
    # the registry's own object is refscore's activation: its spec names it
    same = cls(2, (4,), ACTIVATIONS["tanh"])
    assert interop.spec_of(same)["kwargs"]["activation"] == "tanh"
    assert np.array_equal(golden.build_model(interop.spec_of(same)).score(theta, x), same.score(theta, x))


def test_a_users_activation_is_refused_by_the_torch_and_jax_builders():
    model = MLPScore(2, (4,), Activation("tanh", _twice_tanh))
    if _has("torch"):
        from refscore.interop import torch as rtorch

        for build in (lambda: rtorch.to_torch(model), lambda: rtorch.build_module(model, model.init(0)),
                      lambda: interop.to_torch(model)):
            with pytest.raises(NotImplementedError, match="registry"):
                build()
    if _has("jax"):
        from refscore.interop import jax as rjax

        for build in (lambda: rjax.to_jax(model), lambda: rjax.score_function(model), lambda: interop.to_jax(model)):
            with pytest.raises(NotImplementedError, match="registry"):
                build()
    if not (_has("torch") or _has("jax")):
        pytest.skip("neither torch nor jax is installed")


def _has(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# ================================================================== torch: read-only arrays, energies
def test_torch_takes_read_only_golden_arrays_under_W_error():
    pytest.importorskip("torch")
    proc = _run_warnings_as_errors("torch", """
        import numpy as np
        import torch
        from refscore import testing
        from refscore.interop import torch as rtorch

        c = testing.golden_cases("gaussian_d2").cases["gaussian_d2"]
        theta, x = c.inputs["theta"], c.inputs["x"]
        assert not theta.flags.writeable and not x.flags.writeable
        net = rtorch.build_module(c.spec, theta)
        s = net(x)
        e = net.energy(x)
        views = rtorch.theta_to_tensors(theta, net)
        f = rtorch.functional_score(net, theta, x)
        rtorch.theta_to_module(theta, net)
        mc = testing.golden_cases("mlpenergy_tanh_depth1_d2").cases["mlpenergy_tanh_depth1_d2"]
        net2 = rtorch.build_module(mc.spec, mc.inputs["theta"])
        net2(mc.inputs["x"])
        assert torch.equal(f, s)
        print("clean")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


def test_theta_to_tensors_does_not_alias_a_numpy_theta():
    torch = pytest.importorskip("torch")
    from refscore.interop import torch as rtorch

    net = rtorch.build_module("linear_d2")
    theta = np.arange(6.0)
    views = rtorch.theta_to_tensors(theta, net)
    theta[:] = -1.0
    assert torch.equal(views["A"], torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64))
    assert torch.equal(views["b"], torch.tensor([4.0, 5.0], dtype=torch.float64))


def _gaussian_energy(theta, x, d):
    """1/2 (x - mu)^T P (x - mu), P = L L^T, from refscore's unpack: refscore's -log_density."""
    mu, L = GaussianModel(d).unpack(theta)
    P = L @ L.T
    diff = x - mu
    return 0.5 * np.einsum("ni,ij,nj->n", diff, P, diff)


@pytest.mark.parametrize("name", ["gaussian_d1", "gaussian_d2", "gaussian_d5"])
def test_torch_gaussian_module_has_its_energy(name):
    torch = pytest.importorskip("torch")
    from refscore.interop import torch as rtorch

    inp = interop.golden_inputs(name)
    d = inp["x"].shape[1]
    net = rtorch.build_module(name, inp["theta"])
    E = net.energy(torch.from_numpy(inp["x"])).detach().numpy()
    assert E.shape == (3,)
    assert np.abs(E - _gaussian_energy(inp["theta"], inp["x"], d)).max() <= TOL
    # the convention of refscore's GaussianModel: its log-density (MALA's) is -E
    log_p = GaussianModel(d).bind(inp["theta"].copy()).log_density()(inp["x"])
    assert np.abs(E + log_p).max() <= TOL
    assert net.energy(torch.from_numpy(inp["x"][0])).shape == ()
    # its score is -grad_x E
    x = torch.from_numpy(inp["x"]).requires_grad_(True)
    (g,) = torch.autograd.grad(net.energy(x).sum(), x)
    assert np.abs(-g.numpy() - net(torch.from_numpy(inp["x"])).detach().numpy()).max() <= TOL
    assert "GaussianModel" in interop.ENERGY_MODELS


def test_energy_losses_reach_every_energy_case():
    torch = pytest.importorskip("torch")

    def esm_by_energy(net, x, target):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(net.energy(x).sum(), x, create_graph=True)
        r = -g - target
        return 0.5 * (r ** 2).sum(dim=1).mean()

    res = testing.assert_loss_matches(esm_by_energy, "esm", framework="torch", cases=ENERGY_CLASSES)
    assert res.count("PASS") == 36 * 2  # 30 MLPEnergy, 3 mixtures, 3 Gaussians; value and gradient


def test_jax_gaussian_energy():
    pytest.importorskip("jax")
    import jax

    from refscore.interop import jax as rjax

    inp = interop.golden_inputs("gaussian_d5")
    params = rjax.theta_to_params(inp["theta"], "gaussian_d5")
    energy = rjax.energy_function("gaussian_d5")
    E = np.asarray(energy(params, inp["x"]))
    assert np.abs(E - _gaussian_energy(inp["theta"], inp["x"], 5)).max() <= TOL
    g = np.asarray(jax.vmap(jax.grad(energy, argnums=1), (None, 0))(params, inp["x"]))
    score = np.asarray(rjax.score_function("gaussian_d5")(params, inp["x"]))
    assert np.abs(-g - score).max() <= TOL


# ================================================================== torch: complex, parameterless
def test_complex_parameters_are_refused():
    torch = pytest.importorskip("torch")
    from refscore.interop import torch as rtorch

    class Complex(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0 + 2.0j, 3.0 - 1.0j], dtype=torch.complex128))

    with pytest.raises(TypeError, match=r"complex.*'w'"):
        rtorch.module_to_theta(Complex())
    with pytest.raises(TypeError, match=r"complex.*'w'"):
        rtorch.module_to_theta(Complex(), grad=True)
    with pytest.raises(TypeError, match=r"complex.*'w'"):
        rtorch.theta_to_module(np.zeros(2), Complex())
    with pytest.raises(TypeError, match=r"complex.*'w'"):
        rtorch.theta_to_tensors(np.zeros(2), Complex())


def test_a_parameterless_module_has_an_empty_theta():
    torch = pytest.importorskip("torch")
    from refscore.interop import torch as rtorch

    ident = torch.nn.Identity()
    assert rtorch.theta_to_tensors(np.zeros(0), ident) == {}
    assert rtorch.theta_to_tensors(torch.zeros(0, dtype=torch.float64), ident) == {}
    assert rtorch.module_to_theta(ident).shape == (0,)
    x = torch.ones(3, 2, dtype=torch.float64)
    assert torch.equal(rtorch.functional_score(ident, np.zeros(0), x), x)
    assert rtorch.theta_to_module(np.zeros(0), ident) is ident
    with pytest.raises(ValueError, match=r"theta must have shape \(0,\)"):
        rtorch.theta_to_tensors(np.zeros(2), ident)


# ================================================================== refscore.testing: selectors
def test_a_case_selector_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match=r"^case must be .*got 3 \(int\)"):
        testing.assert_score_matches(lambda theta, x: x, 3)
    with pytest.raises(TypeError, match=r"^cases must be .*got 3 \(int\)"):
        testing.assert_loss_matches(lambda model, theta, x: 0.0, "ism", cases=3)
    with pytest.raises(TypeError, match=r"^cases must be .*got 2\.5 \(float\)"):
        testing.assert_sampler_matches(lambda x, score, step, z: x, "ula", cases=2.5)
    with pytest.raises(TypeError, match=r"^cases must be .*got 3 \(int\)"):
        testing.golden_cases(3)
    with pytest.raises(TypeError, match=r"^cases must be .*got 3 \(int\)"):
        testing.golden_cases(["linear_d2", 3])
    # an empty list selects nothing: an error, not an empty (and meaningless) comparison
    with pytest.raises(ValueError, match="^case is empty"):
        testing.assert_score_matches(lambda theta, x: x, [])
    with pytest.raises(ValueError, match="^cases is empty"):
        testing.assert_loss_matches(lambda model, theta, x: 0.0, "ism", cases=())


# ================================================================== refscore.testing: fresh inputs
def _mala_in_place(xp):
    def step_fn(x, score, log_prob, step, z, u):
        y = x + step * score(x) + (2 * step) ** 0.5 * z
        fwd = ((y - x - step * score(x)) ** 2).sum(1)
        bwd = ((x - y - step * score(y)) ** 2).sum(1)
        log_alpha = log_prob(y) - log_prob(x) - (bwd - fwd) / (4 * step)
        accept = xp.log(u) < log_alpha
        x[accept] = y[accept]  # in place: a correct MALA step
        return x, log_alpha

    return step_fn


def _mala_scaling_z_in_place(x, score, log_prob, step, z, u):
    z *= np.sqrt(2 * step)  # in place: the noise of this step, scaled once
    y = x + step * score(x) + z
    fwd = np.sum((y - x - step * score(x)) ** 2, axis=1)
    bwd = np.sum((x - y - step * score(y)) ** 2, axis=1)
    log_alpha = log_prob(y) - log_prob(x) - (bwd - fwd) / (4 * step)
    return np.where((np.log(u) < log_alpha)[:, None], y, x), log_alpha


def test_a_mala_step_that_updates_x_in_place_passes():
    assert testing.assert_sampler_matches(_mala_in_place(np), "mala").count("PASS") == 9
    assert testing.assert_sampler_matches(_mala_scaling_z_in_place, "mala").count("PASS") == 9


def test_a_torch_mala_step_that_updates_x_in_place_passes():
    torch = pytest.importorskip("torch")
    assert testing.assert_sampler_matches(_mala_in_place(torch), "mala", framework="torch").count("PASS") == 9


def _np_ssm_scribbling(model, theta, x, v):
    """SSM (refscore's primitives), then x and v overwritten: buffers the caller must not reuse."""
    m, n, d = v.shape
    xt, vf = np.tile(x, (m, 1)), v.reshape(m * n, d)
    w = np.full(m * n, 1.0 / (m * n))
    s = model.score(theta, xt)
    vs = np.sum(vf * s, axis=1)
    value = np.mean(np.sum(vf * model.score_jvp(theta, xt, vf), axis=1) + 0.5 * vs ** 2)
    grad = model.vjv_grad_params(theta, xt, vf, w) + model.score_vjp_params(theta, xt, (w * vs)[:, None] * vf)
    x[...] = np.nan
    v[...] = np.nan
    return value, grad


def test_each_projection_kind_gets_its_own_x():
    res = testing.assert_loss_matches(_np_ssm_scribbling, "ssm", cases=["linear_d2", "mlpscore_tanh_depth1_d2"])
    assert res.count("PASS") == 2 * 3 * 2  # 2 cases, 3 projection kinds, value and gradient


def test_each_torch_projection_kind_gets_its_own_x():
    torch = pytest.importorskip("torch")

    def ssm_scribbling(net, x, v):
        m, n, d = v.shape
        xr = x.detach().repeat(m, 1).requires_grad_(True)
        vf = v.reshape(m * n, d)
        s = net(xr)
        (jv,) = torch.autograd.grad((s * vf).sum(), xr, create_graph=True)
        value = ((jv * vf).sum(1) + 0.5 * (vf * s).sum(1) ** 2).mean()
        x.fill_(float("nan"))  # after use: the next projection kind must not see it
        return value

    res = testing.assert_loss_matches(ssm_scribbling, "ssm", framework="torch", cases="linear_d2", grad=False)
    assert res.count("PASS") == 3


def test_user_code_cannot_change_the_golden_specs():
    def score(theta, x, spec):
        d = spec["kwargs"]["dim"]
        out = x @ theta[:d * d].reshape(d, d).T + theta[d * d:]
        spec["kwargs"].clear()  # a user's function tidying up what it was given
        return out

    assert testing.assert_score_matches(score, "linear_d2").passed
    assert testing.golden_cases("linear_d2").cases["linear_d2"].spec["kwargs"] == {"dim": 2}

    def predicate(spec):  # every kind's spec passes by (a diffusion case's has no kwargs)
        spec.get("kwargs", {}).clear()
        return spec.get("model") == "LinearScore"

    assert list(testing.golden_cases(predicate).cases) == ["linear_d1", "linear_d2", "linear_d5"]
    assert testing.golden_cases("linear_d5").cases["linear_d5"].spec["kwargs"] == {"dim": 5}


def test_jax_helpers_under_W_error():
    pytest.importorskip("jax")
    proc = _run_warnings_as_errors("jax", """
        import jax.numpy as jnp
        from refscore import testing
        from refscore.interop import jax as rjax

        c = testing.golden_cases("gaussian_d2").cases["gaussian_d2"]
        params = rjax.theta_to_params(c.inputs["theta"], c.spec)
        rjax.score_function(c.spec)(params, c.inputs["x"])

        def dsm(score, params, x, sigma, eps):
            return 0.5 * jnp.mean(jnp.sum((score(params, x + sigma * eps) + eps / sigma) ** 2, axis=1))

        def mala(x, score, log_prob, step, z, u):
            y = x + step * score(x) + jnp.sqrt(2 * step) * z
            fwd = jnp.sum((y - x - step * score(x)) ** 2, axis=1)
            bwd = jnp.sum((x - y - step * score(y)) ** 2, axis=1)
            log_alpha = log_prob(y) - log_prob(x) - (bwd - fwd) / (4 * step)
            return jnp.where((jnp.log(u) < log_alpha)[:, None], y, x), log_alpha

        assert testing.assert_loss_matches(dsm, "dsm", framework="jax", cases=["gaussian_d2", "mixture_d1"]).passed
        assert testing.assert_loss_matches(dsm, "dsm", framework="jax", cases="linear_d2", dtype="float32").passed
        assert testing.assert_sampler_matches(mala, "mala", framework="jax", cases="mala_gaussian_d2").passed
        print("clean")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


def test_torch_helpers_under_W_error():
    pytest.importorskip("torch")
    proc = _run_warnings_as_errors("torch", """
        import math
        import torch
        from refscore import testing
        from refscore.interop import torch as rtorch

        def score(theta, x, spec):
            return rtorch.build_module(spec, theta)(x)

        def dsm(net, x, sigma, eps):
            return 0.5 * ((net(x + sigma * eps) + eps / sigma) ** 2).sum(1).mean()

        def mala(x, score, log_prob, step, z, u):
            y = x + step * score(x) + math.sqrt(2 * step) * z
            fwd = ((y - x - step * score(x)) ** 2).sum(1)
            bwd = ((x - y - step * score(y)) ** 2).sum(1)
            log_alpha = log_prob(y) - log_prob(x) - (bwd - fwd) / (4 * step)
            return torch.where((torch.log(u) < log_alpha)[:, None], y, x), log_alpha

        # a user's own test: the golden case's read-only arrays straight into a module
        case = testing.golden_cases("mixture_d2").cases["mixture_d2"]
        rtorch.build_module(case.spec, case.inputs["theta"])(case.inputs["x"])
        cases = ["gaussian_d2", "mixture_d2", "mlpenergy_gelu_depth1_d2"]
        assert testing.assert_score_matches(score, cases, framework="torch").passed
        assert testing.assert_loss_matches(dsm, "dsm", framework="torch", cases=cases).passed
        assert testing.assert_loss_matches(dsm, "dsm", framework="torch", cases=cases, dtype="float32").passed
        assert testing.assert_sampler_matches(mala, "mala", framework="torch", cases="mala_mixture_d2").passed
        print("clean")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


def test_setup_declares_a_torch_extra():
    """``pip install -e '.[torch]'`` installs what the torch adapters and the README's PyTorch example need."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    extras = cfg["options.extras_require"]
    assert [r.strip() for r in extras["torch"].strip().splitlines()] == ["torch>=2.0"]
