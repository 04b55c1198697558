r"""Hidden-layer activations with their first, second and third derivatives.

An MLP score model needs :math:`\varphi'` for its Jacobian, :math:`\varphi''`
for the parameter gradient of its Jacobian (and for the Hessian of an energy),
and :math:`\varphi'''` for the parameter gradient of an energy's Laplacian
(``docs/derivations.md`` §3, §5).  Every function here is vectorised NumPy
and numerically stable for :math:`|z| \le 700` (in fact for every finite
:math:`z`): exponentials only ever see non-positive arguments, so nothing
overflows and nothing turns into NaN.  Gradual underflow to zero of quantities
like :math:`e^{-700}` is the correctly rounded answer and is silenced locally.

======== ============================================= =====================================
name     :math:`\varphi(z)`                            :math:`\varphi'(z)`
======== ============================================= =====================================
tanh     :math:`\tanh z`                               :math:`1-\tanh^2 z`
softplus :math:`\log(1+e^z)`                           :math:`\sigma(z)`
sigmoid  :math:`\sigma(z) = 1/(1+e^{-z})`              :math:`\sigma(1-\sigma)`
silu     :math:`z\,\sigma(z)`                          :math:`\sigma + z\sigma'`
gelu     :math:`z\,\Phi(z)` (erf form)                 :math:`\Phi + z\phi`
======== ============================================= =====================================

Examples
--------
>>> import numpy as np
>>> from refscore.models.activations import get_activation
>>> act = get_activation("tanh")
>>> float(act.d1(np.array(0.0)))
1.0
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .._kernels.activation_table import register_activations

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "kernel_id"]

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _tanh(z, order):
    t = np.tanh(z)
    out = [t]
    if order >= 1:
        s = 1.0 - t * t  # sech^2: bounded in [0, 1], exact 0 once tanh rounds to ±1
        out.append(s)
    if order >= 2:
        out.append(-2.0 * t * s)
    if order >= 3:
        out.append(2.0 * s * (3.0 * t * t - 1.0))
    return out


def _sigmoid_parts(z):
    """σ(z), 1−σ(z) and σ'(z) = e/(1+e)² with e = exp(−|z|) ≤ 1 (no overflow)."""
    e = np.exp(-np.abs(z))
    r = 1.0 / (1.0 + e)
    er = e * r
    pos = z >= 0
    sig = np.where(pos, r, er)
    one_minus = np.where(pos, er, r)
    ds = er * r
    return sig, one_minus, ds


def _sigmoid_derivs(z, order):
    """[σ, σ', σ'', σ'''] up to ``order`` with σ'' = σ'(1−2σ), σ''' = σ'(1−6σ')."""
    sig, one_minus, ds = _sigmoid_parts(z)
    out = [sig]
    if order >= 1:
        out.append(ds)
    if order >= 2:
        out.append(ds * (one_minus - sig))
    if order >= 3:
        out.append(ds * (1.0 - 6.0 * ds))
    return out


def _sigmoid(z, order):
    return _sigmoid_derivs(z, order)


def _softplus(z, order):
    f = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    if order == 0:
        return [f]
    return [f] + _sigmoid_derivs(z, order - 1)


def _silu(z, order):
    s = _sigmoid_derivs(z, min(order + 1, 3))
    # (z σ)^(k) = k σ^(k-1) + z σ^(k)
    out = [z * s[0]]
    if order >= 1:
        out.append(s[0] + z * s[1])
    if order >= 2:
        out.append(2.0 * s[1] + z * s[2])
    if order >= 3:
        # σ'''' is not needed: the third derivative of z σ is 3σ'' + z σ'''
        out.append(3.0 * s[2] + z * s[3])
    return out


def _gelu(z, order):
    big = ndtr(z)  # Φ(z), tails underflow to 0 / saturate at 1 without NaN
    out = [z * big]
    if order >= 1:
        # φ(z) underflows to 0 long before |z| = 40, so clipping z there changes
        # nothing and keeps z² finite for every finite z (no inf·0 = NaN).
        zc = np.clip(z, -40.0, 40.0)
        phi = _INV_SQRT_2PI * np.exp(-0.5 * zc * zc)
        out.append(big + zc * phi)
        if order >= 2:
            out.append(phi * (2.0 - zc * zc))
        if order >= 3:
            out.append(zc * phi * (zc * zc - 4.0))
    return out


# ------------------------------------------------------------------ kernel formulas
# The compiled forms of each activation: scalar (φ, φ', φ'') in straight-line
# arithmetic, written once and compiled by the kernel floor (refscore/_kernels)
# with its own elementary functions ``ops``: on the CPU the branch-free
# ``exp_nonpositive``/``tanh`` (so a layer's loop vectorises), on CUDA libm's.
# ``ops`` has ``jit`` (compiles helpers), ``exp_nonpositive`` (e^y, y <= 0),
# ``tanh``, ``erfc`` and ``log1p``.  Each follows the NumPy formulas above term
# by term (docs/derivations.md §6); the tests compare every compiled form with
# ``derivatives`` for every registry entry.
def _tanh_kernel(ops):
    tanh = ops.tanh

    def tanh_scalar(z):
        t = tanh(z)
        s = 1.0 - t * t  # sech²: exact 0 once tanh rounds to ±1
        return t, s, -2.0 * t * s

    return tanh_scalar


def _sigmoid_parts_kernel(ops):
    expnp = ops.exp_nonpositive

    def sigmoid_parts(z):
        """e = exp(−|z|) <= 1, σ(z), σ'(z), σ''(z), as :func:`_sigmoid_parts`."""
        e = expnp(-abs(z))
        r = 1.0 / (1.0 + e)
        er = e * r
        pos = z >= 0
        sig = r if pos else er
        one_minus = er if pos else r
        ds = er * r
        return e, sig, ds, ds * (one_minus - sig)

    return ops.jit(sigmoid_parts)


def _softplus_kernel(ops):
    parts = _sigmoid_parts_kernel(ops)
    log1p = ops.log1p

    def softplus_scalar(z):
        e, sig, ds, _ = parts(z)
        return max(z, 0.0) + log1p(e), sig, ds

    return softplus_scalar


def _sigmoid_kernel(ops):
    parts = _sigmoid_parts_kernel(ops)

    def sigmoid_scalar(z):
        _, sig, ds, d2s = parts(z)
        return sig, ds, d2s

    return sigmoid_scalar


def _silu_kernel(ops):
    parts = _sigmoid_parts_kernel(ops)

    def silu_scalar(z):
        # (z σ)' = σ + z σ', (z σ)'' = 2σ' + z σ''
        _, sig, ds, d2s = parts(z)
        return z * sig, sig + z * ds, 2.0 * ds + z * d2s

    return silu_scalar


def _gelu_kernel(ops):
    expnp = ops.exp_nonpositive
    erfc = ops.erfc

    def gelu_scalar(z):
        big = 0.5 * erfc(-z * 0.7071067811865476)  # Φ(z)
        zc = min(max(z, -40.0), 40.0)
        phi = 0.3989422804014327 * expnp(-0.5 * zc * zc)
        return z * big, big + zc * phi, phi * (2.0 - zc * zc)

    return gelu_scalar


class Activation:
    r"""An elementwise activation :math:`\varphi` with derivatives up to order 3.

    Parameters
    ----------
    name : str
        Registry name.
    fn : callable
        ``fn(z, order) -> list`` of :math:`[\varphi, \varphi', \dots, \varphi^{(order)}]`
        evaluated on the float64 array ``z``, sharing intermediate work.  This
        is the reference every other form is tested against.
    kernel : callable, optional
        ``kernel(ops) -> f`` with ``f(z) -> (φ, φ', φ'')`` on one float, written
        with ``ops``' elementary functions (see the kernel formulas above); the
        compiled engines and samplers build their activation from it.  Without
        it the activation runs in NumPy only (the MLP's fused losses then use
        the NumPy engine; the compiled samplers refuse it).
    formula : str, optional
        :math:`\varphi(z)` in words (golden manifests, CLI help).

    Notes
    -----
    ``f``, ``d1``, ``d2``, ``d3`` evaluate one order; ``derivatives(z, order)``
    returns all orders up to ``order`` at the cost of roughly one (the MLP
    models use it so that :math:`\tanh` is evaluated once per layer).
    """

    def __init__(self, name, fn, kernel=None, formula=""):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(z, order), got {fn!r}")
        if kernel is not None and not callable(kernel):
            raise TypeError(f"kernel must be callable as kernel(ops) or None, got {kernel!r}")
        self.name = name
        self._fn = fn
        self.kernel = kernel
        self.formula = str(formula)

    def derivatives(self, z, order):
        r"""``[φ(z), φ'(z), …, φ^{(order)}(z)]`` for ``order`` in 0..3."""
        if order not in (0, 1, 2, 3):
            raise ValueError(f"order must be 0, 1, 2 or 3, got {order!r}")
        z = np.asarray(z, dtype=float)
        with np.errstate(under="ignore"):
            return self._fn(z, order)

    def f(self, z):
        r""":math:`\varphi(z)`."""
        return self.derivatives(z, 0)[0]

    def d1(self, z):
        r""":math:`\varphi'(z)`."""
        return self.derivatives(z, 1)[1]

    def d2(self, z):
        r""":math:`\varphi''(z)`."""
        return self.derivatives(z, 2)[2]

    def d3(self, z):
        r""":math:`\varphi'''(z)`."""
        return self.derivatives(z, 3)[3]

    __call__ = f

    def __repr__(self):
        return f"Activation({self.name!r})"


#: The activation registry, read by the models, the CLI, the golden files and
#: every compiled engine.  A new activation is one entry here (its NumPy
#: derivatives and its kernel formulas); the tests parametrised over this
#: registry then check it in every form.
ACTIVATIONS = {
    "tanh": Activation("tanh", _tanh, _tanh_kernel, "tanh z"),
    "softplus": Activation("softplus", _softplus, _softplus_kernel, "log(1 + e^z)"),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_kernel, "1/(1 + e^-z)"),
    "silu": Activation("silu", _silu, _silu_kernel, "z sigmoid(z)"),
    "gelu": Activation("gelu", _gelu, _gelu_kernel, "z Phi(z) (erf form)"),
}
# the compiled floor reads the registry from here (it imports nothing above it)
register_activations(ACTIVATIONS, __file__)


def kernel_id(act):
    """The compiled kernels' id of ``act``: its position in :data:`ACTIVATIONS`.

    Matched by object, not by name, so a user's own ``Activation("gelu", ...)``
    never runs refscore's gelu.  ``None`` when ``act`` is not a registry entry
    or has no kernel formulas (it then runs in NumPy only).
    """
    for i, entry in enumerate(ACTIVATIONS.values()):
        if entry is act:
            return i if entry.kernel is not None else None
    return None


def get_activation(name) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through).

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`ACTIVATIONS`.
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]
