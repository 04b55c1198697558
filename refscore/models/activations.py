r"""Hidden-layer activations with their first, second and third derivatives.

An MLP score model needs :math:`\varphi'` for its Jacobian, :math:`\varphi''`
for the parameter gradient of its Jacobian (and for the Hessian of an energy),
and :math:`\varphi'''` for the parameter gradient of an energy's Laplacian
(``../shared/DERIVATIONS.md`` §2–3).  Every function here is vectorised NumPy
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

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]

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


class Activation:
    r"""An elementwise activation :math:`\varphi` with derivatives up to order 3.

    Parameters
    ----------
    name : str
        Registry name.
    fn : callable
        ``fn(z, order) -> list`` of :math:`[\varphi, \varphi', \dots, \varphi^{(order)}]`
        evaluated on the float64 array ``z``, sharing intermediate work.

    Notes
    -----
    ``f``, ``d1``, ``d2``, ``d3`` evaluate one order; ``derivatives(z, order)``
    returns all orders up to ``order`` at the cost of roughly one (the MLP
    models use it so that :math:`\tanh` is evaluated once per layer).
    """

    def __init__(self, name, fn):
        self.name = name
        self._fn = fn

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


#: name -> :class:`Activation`
ACTIVATIONS = {
    "tanh": Activation("tanh", _tanh),
    "softplus": Activation("softplus", _softplus),
    "sigmoid": Activation("sigmoid", _sigmoid),
    "silu": Activation("silu", _silu),
    "gelu": Activation("gelu", _gelu),
}


def get_activation(name) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through).

    Raises
    ------
    ValueError
        If ``name`` is not one of ``tanh, softplus, sigmoid, silu, gelu``.
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]
