r"""refscore's score models as PyTorch modules, with ``theta`` <-> parameters both ways.

Importing this module imports torch; without torch it raises an ``ImportError``
that says ``pip install torch``.

Every golden case spec (:func:`refscore.golden.case_specs`) and every refscore
model (``GaussianModel``, ``LinearScore``, ``GaussianMixtureModel``,
``MLPScore``, ``MLPEnergy``) becomes a :class:`ScoreModule`, a
``torch.nn.Module`` whose ``forward(x)`` is the score :math:`s_\theta(x)`,
``(n, d)`` for ``x (n, d)`` (``(d,)`` for one point).  Models with an energy
(``GaussianModel``, ``MLPEnergy``, ``GaussianMixtureModel``) also have
``.energy(x)``, ``(n,)``.  The MLP's and the mixture's score is
:math:`-\nabla_x E` by ``torch.autograd.grad`` (with ``create_graph`` whenever
grad mode is on, so losses on the score train by ``backward()``; not under
``torch.inference_mode``); the Gaussian's is its closed form.  Each energy is
the negated log density of the refscore model: the mixture's is the exact
:math:`-\log p(x)`, the Gaussian's :math:`\tfrac12 (x-\mu)^\top P (x-\mu)`
(without its normaliser, as refscore's ``GaussianModel``: :math:`P` may be
singular), the MLP's its output.

The classes: ``ScoreModule`` (the base: ``forward``, ``spec``, ``dim``,
``layout``), ``GaussianScoreModule`` (parameters ``mu``, ``L_tril``; property
``L``; ``energy``), ``LinearScoreModule`` (``A``, ``b``), ``MixtureScoreModule``
(``alpha``, ``mu``, ``log_tau``; ``energy``), ``MLPScoreModule`` and
``MLPEnergyModule`` (``layers``, a ``ModuleList`` of ``nn.Linear``;
``energy`` for the latter).

The parameters are registered in ``theta`` order under the names of
:func:`refscore.interop.parameter_layout` (an MLP is a ``ModuleList`` named
``layers`` of ``nn.Linear``), so :func:`theta_to_module` and
:func:`module_to_theta` are a copy and a concatenation: bitwise exact in
float64.  They also work on any module whose parameters, in registration
order, have the layout's shapes (an ``nn.Sequential`` of ``nn.Linear`` with
the same widths, say).  :func:`functional_score` evaluates a module at a flat
``theta`` tensor through ``torch.func.functional_call``, differentiably in
``theta``: the route the validation backend takes.

Examples
--------
A refscore model as a module, checked against refscore; a DSM step in torch
whose gradient, read back in refscore's layout, is refscore's gradient:

>>> import numpy as np
>>> import torch
>>> import refscore
>>> from refscore.interop import torch as rtorch
>>> model = refscore.MLPEnergy(2, hidden=(8,), activation="softplus")
>>> theta = model.init(0)
>>> net = rtorch.to_torch(model, theta)            # float64 nn.Module
>>> net
MLPEnergyModule(dim=2, hidden=[8], activation='softplus')
>>> x = np.random.default_rng(1).standard_normal((4, 2))
>>> s = net(torch.from_numpy(x))
>>> s.shape
torch.Size([4, 2])
>>> bool(np.allclose(s.detach().numpy(), model.score(theta, x), rtol=0, atol=1e-12))
True
>>> bool(np.array_equal(rtorch.module_to_theta(net), theta))   # bitwise
True
>>> sigma = 0.5
>>> eps = refscore.interop.normal(seed=3, chain=np.arange(4), step=0, dim=2)
>>> r = net(torch.from_numpy(x + sigma * eps)) + torch.from_numpy(eps) / sigma
>>> loss = 0.5 * (r ** 2).sum(1).mean()
>>> loss.backward()
>>> value, grad = refscore.losses.dsm(model, theta, x, sigma, eps, grad=True)
>>> bool(abs(loss.item() - value) < 1e-12)
True
>>> bool(np.allclose(rtorch.module_to_theta(net, grad=True), grad, rtol=0, atol=1e-12))
True

A golden case, its inputs and refscore's noise as tensors:

>>> from refscore.interop import golden_inputs
>>> inp = golden_inputs("mixture_d2", framework="torch")
>>> net = rtorch.build_module("mixture_d2", inp["theta"])
>>> [name for name, _ in net.named_parameters()]
['alpha', 'mu', 'log_tau']
>>> net(inp["x"]).shape, net.energy(inp["x"]).shape
(torch.Size([3, 2]), torch.Size([3]))
>>> z = refscore.interop.normal(0, chain=[0, 1], step=5, dim=3, framework="torch")
>>> bool(torch.equal(z, torch.from_numpy(refscore.noise.normal(0, [0, 1], 5, 3))))
True
"""
from __future__ import annotations

import math

import numpy as np

from ._spec import TORCH_HINT, as_spec, layout_words, parameter_layout, split
from .frameworks import Framework, _mixture_constants

try:
    import torch
    from torch import nn
except ImportError as _exc:  # torch is an optional extra
    raise ModuleNotFoundError(
        f"refscore.interop.torch needs PyTorch, which cannot be imported ({_exc}): {TORCH_HINT}",
        name="torch",
    ) from _exc

# The module classes (ScoreModule and its five subclasses, NoiseConditionalModule) are public but
# not listed here: the API pages document a listed class with its inherited members, and
# nn.Module's would flood them.  TorchFramework is documented by its interface,
# refscore.interop.frameworks.Framework.
__all__ = [
    "build_module",
    "to_torch",
    "theta_to_module",
    "module_to_theta",
    "theta_to_tensors",
    "functional_score",
    "as_array",
    "activation",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _softplus(z):
    return torch.logaddexp(z, torch.zeros_like(z))  # exact for every z: no threshold, unlike F.softplus


def _gelu(z):
    return nn.functional.gelu(z, approximate="none")  # the erf form


_ACTIVATIONS = {"tanh": torch.tanh, "softplus": _softplus, "sigmoid": torch.sigmoid,
                "silu": nn.functional.silu, "gelu": _gelu}


def activation(name):
    """The torch function of a refscore activation (docs/derivations.md §6.1): the exact forms
    (softplus by ``logaddexp``, gelu by ``erf``), differentiable to any order."""
    if name not in _ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} has no torch adapter ({sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def _dtype(dtype):
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        try:
            dt = getattr(torch, np.dtype(dtype).name)
        except (TypeError, AttributeError):
            raise ValueError(f"dtype must be a floating dtype, got {dtype!r}") from None
    if not dt.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dt}")
    return dt


def as_array(array, dtype="float64", device=None):
    """``array`` (NumPy or anything ``numpy.asarray`` takes) as a new torch tensor: float64 is
    bitwise the same numbers, float32 rounds.  Always a copy (read-only arrays welcome)."""
    return torch.tensor(np.asarray(array), dtype=_dtype(dtype), device=device)


# ------------------------------------------------------------------ modules
class ScoreModule(nn.Module):
    """Base of the modules here: ``forward(x)`` is the score, ``spec`` the model's spec.

    ``x`` is ``(n, d)`` or one point ``(d,)`` (a tensor; a NumPy array is copied to the
    parameters' dtype and device).  ``layout`` lists ``(name, shape)`` in ``theta`` order.
    """

    def __init__(self, spec):
        super().__init__()
        self.spec = as_spec(spec)
        self.dim = self.spec["kwargs"]["dim"]

    @property
    def layout(self) -> list:
        return parameter_layout(self.spec)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.spec["kwargs"].items())

    def __repr__(self):  # one line: the spec says it all
        return f"{type(self).__name__}({self.extra_repr()})"

    def _new(self, shape, dtype, device):
        return nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))

    def _points(self, x):
        if not isinstance(x, torch.Tensor):
            p = next(self.parameters())
            x = as_array(x, dtype=p.dtype, device=p.device)  # a copy: x may be read-only
        if x.dim() not in (1, 2) or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}) or ({self.dim},), got {tuple(x.shape)}")
        return (x[None], True) if x.dim() == 1 else (x, False)

    def forward(self, x):
        x, single = self._points(x)
        s = self._score(x)
        return s[0] if single else s

    def _score(self, x):  # pragma: no cover - abstract
        raise NotImplementedError


class _EnergyModule(ScoreModule):
    """A model with an energy: ``energy(x)``, with ``s = -grad_x E``."""

    def energy(self, x):
        """The energy :math:`E_\\theta(x)`, ``(n,)`` (``()`` for one point)."""
        x, single = self._points(x)
        e = self._energy(x)
        return e[0] if single else e

    def _energy(self, x):  # pragma: no cover - abstract
        raise NotImplementedError


class _AutogradScore(_EnergyModule):
    """Score by autograd: s = -grad_x E, differentiable in x and in the parameters."""

    def _score(self, x):
        if torch.is_inference_mode_enabled():
            raise RuntimeError(f"{type(self).__name__}: the score of an energy needs autograd; call it "
                               "under torch.no_grad() rather than torch.inference_mode()")
        create = torch.is_grad_enabled()  # off under no_grad: a plain value, no graph kept
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._energy(x).sum(), x, create_graph=create)
        return -g


class GaussianScoreModule(_EnergyModule):
    r""":math:`s(x) = -LL^\top(x-\mu)` (docs/derivations.md §7.1); parameters ``mu (d,)`` and
    ``L_tril (d(d+1)/2,)``, the raw lower triangle in ``np.tril_indices`` order.

    ``energy`` is :math:`E(x) = \tfrac12\lVert L^\top(x-\mu)\rVert^2 = \tfrac12 (x-\mu)^\top P (x-\mu)`,
    the negated log density of refscore's ``GaussianModel`` (without the normaliser
    :math:`\tfrac d2\log 2\pi - \tfrac12\log\det P`, infinite for a singular :math:`P`);
    the score stays the closed form, equal to :math:`-\nabla_x E`."""

    def __init__(self, spec, dtype=torch.float64, device=None):
        super().__init__(spec)
        d = self.dim
        self.mu = self._new((d,), dtype, device)
        self.L_tril = self._new((d * (d + 1) // 2,), dtype, device)
        rows, cols = torch.tril_indices(d, d, device=device)  # row by row, like np.tril_indices
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    @property
    def L(self):
        """The ``(d, d)`` lower-triangular factor of the precision :math:`P = LL^\\top`."""
        return self.L_tril.new_zeros(self.dim, self.dim).index_put((self._rows, self._cols), self.L_tril)

    def _score(self, x):
        L = self.L
        return -((x - self.mu) @ L) @ L.T

    def _energy(self, x):
        return 0.5 * (((x - self.mu) @ self.L) ** 2).sum(-1)


class LinearScoreModule(ScoreModule):
    """:math:`s(x) = Ax + b` (docs/derivations.md §7.2); parameters ``A (d, d)``, ``b (d,)``."""

    def __init__(self, spec, dtype=torch.float64, device=None):
        super().__init__(spec)
        d = self.dim
        self.A = self._new((d, d), dtype, device)
        self.b = self._new((d,), dtype, device)

    def _score(self, x):
        return x @ self.A.T + self.b


class MixtureScoreModule(_AutogradScore):
    r"""Mixture :math:`\sum_j \mathrm{softmax}(\alpha)_j\,\mathcal N(\mu_j, I/\tau_j)`,
    :math:`\tau = e^{\text{log\_tau}}` (docs/derivations.md §7.3); parameters ``alpha (k,)``,
    ``mu (k, d)``, ``log_tau (k,)``.  ``energy`` is the exact :math:`-\log p(x)`."""

    def __init__(self, spec, dtype=torch.float64, device=None):
        super().__init__(spec)
        k, d = self.spec["kwargs"]["k"], self.dim
        self.alpha = self._new((k,), dtype, device)
        self.mu = self._new((k, d), dtype, device)
        self.log_tau = self._new((k,), dtype, device)

    def _energy(self, x):
        d = self.dim
        sq = ((x[:, None, :] - self.mu[None]) ** 2).sum(-1)  # (n, k)
        logn = 0.5 * d * (self.log_tau - _LOG_2PI) - 0.5 * torch.exp(self.log_tau) * sq
        return -torch.logsumexp(torch.log_softmax(self.alpha, dim=0) + logn, dim=1)


class _MLP(ScoreModule):
    def __init__(self, spec, out_dim, dtype, device):
        super().__init__(spec)
        kw = self.spec["kwargs"]
        sizes = [self.dim, *kw["hidden"], out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(sizes[l], sizes[l + 1], dtype=dtype, device=device) for l in range(len(sizes) - 1)
        )
        self.act = activation(kw["activation"])

    def _mlp(self, x):
        h = x
        for lin in self.layers[:-1]:
            h = self.act(lin(h))
        return self.layers[-1](h)


class MLPScoreModule(_MLP):
    """``h_l = act(W_l h_{l-1} + b_l)``, ``s = W_L h_{L-1} + b_L`` (docs/derivations.md §3.2);
    ``layers`` is a ``ModuleList`` of ``nn.Linear``."""

    def __init__(self, spec, dtype=torch.float64, device=None):
        super().__init__(spec, as_spec(spec)["kwargs"]["dim"], dtype, device)

    def _score(self, x):
        return self._mlp(x)


class MLPEnergyModule(_MLP, _AutogradScore):
    """``E = W_L h_{L-1} + b_L`` (scalar), ``s = -grad_x E`` (docs/derivations.md §5);
    ``layers`` is a ``ModuleList`` of ``nn.Linear``, the last one ``(1, h)``."""

    def __init__(self, spec, dtype=torch.float64, device=None):
        super().__init__(spec, 1, dtype, device)

    def _energy(self, x):
        return self._mlp(x)[:, 0]


_CLASSES = {
    "GaussianModel": GaussianScoreModule,
    "LinearScore": LinearScoreModule,
    "GaussianMixtureModel": MixtureScoreModule,
    "MLPScore": MLPScoreModule,
    "MLPEnergy": MLPEnergyModule,
}


# ------------------------------------------------------------------ construction
def build_module(spec, theta=None, *, dtype="float64", device=None, rng=None) -> ScoreModule:
    """The :class:`ScoreModule` of a spec, loaded with ``theta``.

    Parameters
    ----------
    spec : dict, str, refscore.golden.Case or refscore model
        ``{"model": ..., "kwargs": {...}}`` (:func:`refscore.golden.case_specs`), a golden
        case name, a golden case, or a model object (as :func:`to_torch`).
    theta : array or tensor, optional
        Flat parameters in refscore's layout.  Default: refscore's own ``init(rng)``
        of the model (Glorot-uniform weights and zero biases for the MLPs).
    dtype : keyword-only
        ``"float64"`` (default) or ``"float32"`` (or a torch dtype).
    device : keyword-only
    rng : None, int or numpy Generator, keyword-only
        Seed of the default ``theta``.
    """
    spec = as_spec(spec)
    module = _CLASSES[spec["model"]](spec, dtype=_dtype(dtype), device=device)
    if theta is None:
        from ..golden import build_model

        theta = build_model(spec).init(rng)
    return theta_to_module(theta, module)


def to_torch(model, theta=None, *, dtype="float64", device=None, rng=None) -> ScoreModule:
    """A refscore model object (``MLPScore(2, hidden=(16,))``, ...) as a :class:`ScoreModule`.

    Same as :func:`build_module` with the model's spec (:func:`refscore.interop.spec_of`);
    ``theta=None`` takes ``model.init(rng)``.  A ``NoiseConditional`` is refused with a hint:
    convert its ``.model`` and divide the score by sigma.
    """
    if theta is None and hasattr(model, "init") and not isinstance(model, (dict, str)):
        theta = model.init(rng)
    return build_module(model, theta, dtype=dtype, device=device)


# ------------------------------------------------------------------ theta <-> parameters
def _named_params(module):
    """``module``'s ``(name, parameter)`` in registration order, checked: real, and the layout's
    shapes for a :class:`ScoreModule`.  theta is real float64; a complex parameter has no place
    in it (a cast would drop its imaginary part)."""
    params = list(module.named_parameters())
    complex_ = [(n, str(p.dtype)) for n, p in params if p.is_complex()]
    if complex_:
        raise TypeError(f"{type(module).__name__} has complex parameters "
                        + ", ".join(f"{n!r} ({dt})" for n, dt in complex_)
                        + ": theta is real (float64) and would lose their imaginary parts")
    spec = getattr(module, "spec", None)
    if isinstance(spec, dict):
        want = [(n, tuple(s)) for n, s in parameter_layout(spec)]
        have = [(n, tuple(p.shape)) for n, p in params]
        if have != want:
            raise ValueError(f"{type(module).__name__}: parameters {have} are not the layout {want}")
    return params


def _theta_numpy(theta, size, words):
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu()
        if theta.is_floating_point():
            theta = theta.to(torch.float64)
        theta = theta.numpy()
    from .._validation import check_theta as _check

    return _check(theta, size, words)


def _layout_of(module):
    spec = getattr(module, "spec", None)
    if isinstance(spec, dict):
        return parameter_layout(spec), layout_words(spec)
    params = list(module.named_parameters())
    return [(n, tuple(p.shape)) for n, p in params], ", ".join(f"{n} {tuple(p.shape)}" for n, p in params)


def theta_to_module(theta, module):
    """Copy the flat ``theta`` into ``module``'s parameters, in registration order; returns ``module``.

    ``module`` is a :class:`ScoreModule` (its parameters are checked against the layout) or any
    module whose parameters, in order, hold ``len(theta)`` numbers.  ``theta`` is a NumPy array,
    a list or a tensor (detached; never aliased).  Exact in float64; float32 parameters round.
    """
    params = _named_params(module)
    size = sum(p.numel() for _, p in params)
    th = _theta_numpy(theta, size, _layout_of(module)[1])
    src = torch.tensor(th, dtype=torch.float64)  # a copy: th may be the caller's read-only array
    with torch.no_grad():
        for (_, p), view in zip(params, split(src, [(n, tuple(p.shape)) for n, p in params])):
            p.copy_(view.to(dtype=p.dtype, device=p.device))
    return module


def module_to_theta(module, *, grad=False) -> np.ndarray:
    """The flat float64 ``theta`` (NumPy) of ``module``'s parameters, in registration order.

    ``grad=True`` reads the parameters' ``.grad`` instead (zeros where none), so a loss's
    ``backward()`` gives refscore's gradient layout.  Exact (bitwise) for float64 modules.
    """
    params = _named_params(module)
    parts = []
    for _, p in params:
        t = p.grad if grad else p
        t = torch.zeros_like(p) if t is None else t
        parts.append(t.detach().reshape(-1).to(device="cpu", dtype=torch.float64))
    if not parts:
        return np.zeros(0)
    return torch.cat(parts).numpy().copy()


def theta_to_tensors(theta, module) -> dict:
    """``{parameter name: view of theta}`` for ``torch.func.functional_call``.

    ``theta`` is a 1-D tensor (kept differentiable: the views share its graph) or a NumPy
    array (copied to the module's dtype and device).  A module without parameters takes the
    empty ``theta`` and gives ``{}``.
    """
    params = _named_params(module)
    size = sum(p.numel() for _, p in params)
    if not isinstance(theta, torch.Tensor):
        th = _theta_numpy(theta, size, _layout_of(module)[1])
        if not params:
            return {}
        p0 = params[0][1]
        theta = as_array(th, dtype=p0.dtype, device=p0.device)  # a copy: no alias of the caller's array
    if theta.dim() != 1 or theta.shape[0] != size:
        raise ValueError(f"theta must have shape ({size},) (layout: {_layout_of(module)[1]}), "
                         f"got {tuple(theta.shape)}")
    views = split(theta, [(n, tuple(p.shape)) for n, p in params])
    return {n: v for (n, _), v in zip(params, views)}


def functional_score(module, theta, x):
    """``module(x)`` with its parameters replaced by views of the flat ``theta``.

    Differentiable in ``theta`` (and in ``x``): the loss gradients of refscore's layout come
    straight out of ``torch.autograd.grad(loss, theta)``.  ``module``'s own parameters are
    untouched.
    """
    return torch.func.functional_call(module, theta_to_tensors(theta, module), (x,))


class NoiseConditionalModule(nn.Module):
    """``NoiseConditional(model)`` as a module: ``forward(x, sigma) = model(x) / sigma``.

    ``sigma`` is one level per point ``(n,)`` (or a number); ``model`` is the wrapped
    score module, whose parameters are this module's (docs/derivations.md §7.4).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.model(x) / sigma.unsqueeze(-1)


# ------------------------------------------------------------------ the framework
class TorchFramework(Framework):
    """PyTorch (:class:`refscore.interop.frameworks.Framework`): tensors, modules and autograd.

    * :meth:`loss_model` is a :class:`ScoreModule` of the spec loaded with
      ``theta`` (:func:`build_module`; a :class:`NoiseConditionalModule` around
      it for a noise-conditional spec), or what your ``build(theta tensor)``
      returns; your loss is called ``loss_fn(module, **inputs)`` and returns a
      0-dim tensor, whose ``backward()`` gives the gradient, read by
      :func:`module_to_theta` (``grad=True``).
    * :meth:`target_functions` are the Gaussian mixture written in torch, from
      precisions and log normalisers computed in float64.
    """

    name = "torch"

    def as_array(self, array, dtype="float64", device=None):
        return as_array(array, dtype=dtype, device=device)

    def as_integers(self, array, device=None):
        return torch.tensor(np.asarray(array), device=device)  # a copy: the array may be read-only

    def to_numpy(self, value) -> np.ndarray:
        if not isinstance(value, torch.Tensor):
            return super().to_numpy(value)
        value = value.detach().cpu()
        if not value.is_floating_point() and not value.is_complex():
            value = value.double()
        elif value.is_floating_point() and value.element_size() < 4:
            value = value.float()  # bfloat16 / float16 have no NumPy view
        return np.array(value.numpy())

    def fresh(self, value):
        if isinstance(value, torch.Tensor):
            return value.detach().clone()
        return super().fresh(value)

    def target_functions(self, spec, sigma=None, dtype="float64", device=None) -> tuple:
        P, M, C = (as_array(a, dtype=dtype, device=device) for a in _mixture_constants(spec, sigma))

        def parts(x):
            diff = x[:, None, :] - M[None]  # (c, k, d)
            pd = torch.einsum("kij,ckj->cki", P, diff)
            ell = C[None] - 0.5 * (diff * pd).sum(-1)  # (c, k)
            return ell, pd

        def log_prob(x):
            return torch.logsumexp(parts(x)[0], dim=1)

        def score(x):
            ell, pd = parts(x)
            r = torch.exp(ell - torch.logsumexp(ell, dim=1)[:, None])
            return -torch.einsum("ck,cki->ci", r, pd)

        return score, log_prob

    def loss_model(self, spec, theta, *, noise_conditional=False, build=None, dtype="float64", device=None):
        if build is not None:
            return build(as_array(theta, dtype=dtype, device=device))
        inner = spec["kwargs"]["model"] if noise_conditional else spec
        module = build_module(inner, np.array(theta), dtype=dtype, device=device)
        return NoiseConditionalModule(module) if noise_conditional else module

    def loss_value_and_grad(self, loss_fn, model, inputs, *, grad=True, jit=True,
                            caller="refscore.interop") -> tuple:
        with torch.enable_grad():
            value = loss_fn(model, **inputs)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{caller}: your loss function must return a torch tensor (a scalar) with "
                                f"framework='torch', got {type(value).__name__}")
            gradient = None
            if grad and value.dim() == 0:  # a non-scalar value fails its shape check; no gradient then
                value.backward()
                gradient = module_to_theta(model, grad=True)
        return self.to_numpy(value), gradient
