"""Activations: each derivative against central differences of the one below,
against an independent closed-form identity, and stable at |z| = 700."""
import numpy as np
import pytest
from scipy.special import erf, expit

from refscore.models.activations import ACTIVATIONS, get_activation

NAMES = sorted(ACTIVATIONS)
Z = np.linspace(-6.0, 6.0, 241)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_derivative_matches_central_difference(name, order):
    act = get_activation(name)
    h = 1e-5
    lo = act.derivatives(Z + h, order - 1)[order - 1]
    lo_m = act.derivatives(Z - h, order - 1)[order - 1]
    fd = (lo - lo_m) / (2 * h)
    exact = act.derivatives(Z, order)[order]
    # truncation h²|φ^(k+2)|/6 ≲ 1e-10, cancellation eps·|φ^(k-1)|/h ≲ 1e-11·|z|:
    # 1e-8 leaves two orders of margin on |z| ≤ 6.
    np.testing.assert_allclose(exact, fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_single_order_methods_agree_with_derivatives(name):
    act = get_activation(name)
    all4 = act.derivatives(Z, 3)
    for k, fn in enumerate([act.f, act.d1, act.d2, act.d3]):
        # same formulas, same rounding: exactly equal
        np.testing.assert_array_equal(fn(Z), all4[k])


def test_identities():
    # Independent closed forms (scipy / numpy) for value and first derivative.
    # All to 1e-14 absolute: each side is a few correctly rounded operations on
    # numbers of size ≤ 6.
    tol = dict(rtol=0, atol=1e-14)
    t = np.tanh(Z)
    a = ACTIVATIONS
    np.testing.assert_allclose(a["tanh"].d1(Z), 1 - t**2, **tol)
    np.testing.assert_allclose(a["tanh"].d2(Z), -2 * t * (1 - t**2), **tol)
    s = expit(Z)
    np.testing.assert_allclose(a["sigmoid"].f(Z), s, **tol)
    np.testing.assert_allclose(a["sigmoid"].d1(Z), s * (1 - s), **tol)
    np.testing.assert_allclose(a["softplus"].f(Z), np.logaddexp(0, Z), **tol)
    np.testing.assert_allclose(a["softplus"].d1(Z), s, **tol)
    np.testing.assert_allclose(a["softplus"].d2(Z), a["sigmoid"].d1(Z), **tol)
    np.testing.assert_allclose(a["silu"].f(Z), Z * s, atol=1e-13, rtol=0)  # |z|·ulp(1)
    Phi = 0.5 * (1 + erf(Z / np.sqrt(2)))
    phi = np.exp(-Z**2 / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(a["gelu"].f(Z), Z * Phi, atol=1e-13, rtol=0)
    np.testing.assert_allclose(a["gelu"].d1(Z), Phi + Z * phi, atol=1e-13, rtol=0)
    # tanh''' at 0 is -2, sigmoid''' at 0 is -1/8, gelu'' at 0 is 2φ(0)
    assert a["tanh"].d3(np.array(0.0)) == pytest.approx(-2.0, abs=1e-15)
    assert a["sigmoid"].d3(np.array(0.0)) == pytest.approx(-0.125, abs=1e-15)
    assert a["gelu"].d2(np.array(0.0)) == pytest.approx(2 / np.sqrt(2 * np.pi), abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_stable_at_700(name):
    act = get_activation(name)
    z = np.array([-700.0, -100.0, -40.0, 0.0, 40.0, 100.0, 700.0, -1e300, 1e300])
    with np.errstate(all="raise"):
        vals = act.derivatives(z, 3)
    for k, v in enumerate(vals):
        assert np.all(np.isfinite(v[:7])), (name, k)
    # limits: derivatives of order >= 2 vanish in both tails for every activation
    for k in (2, 3):
        np.testing.assert_allclose(vals[k][[0, 6]], 0.0, atol=1e-300)
    # order 1 tends to 0 or 1 (tanh/sigmoid: 0; softplus/silu/gelu: 0 left, 1 right)
    left, right = vals[1][0], vals[1][6]
    assert left == pytest.approx(0.0, abs=1e-300)
    assert right == pytest.approx(0.0 if name in ("tanh", "sigmoid") else 1.0, abs=1e-300)


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation("relu6")


def test_bad_order():
    with pytest.raises(ValueError, match="order must be"):
        ACTIVATIONS["tanh"].derivatives(Z, 4)
