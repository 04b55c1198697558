r"""Philox4x32-10 and Box–Muller, written ONCE for NumPy, Numba and numba.cuda.

Derivation: docs/derivations.md §9.

Every function here is plain Python on ``uint64`` words holding 32-bit values
and on float64 values, with no branches, so the same source runs

* vectorised by NumPy on arrays (``make(identity)``),
* compiled by ``numba.njit`` for the CPU kernels (``make(numba.njit)``),
* compiled by ``numba.cuda.jit(device=True)`` for the GPU (``make(...)``).

:func:`make` takes the decorator and returns the compiled functions as a
namespace; functions reach one another through the closure, so each backend
gets its own consistently compiled call graph.

The transcendental functions of Box–Muller are NOT taken from a math library
(NumPy's SIMD ``log``/``sin``/``cos``, glibc and CUDA's libdevice differ in the
last ulp, and Numba cannot vectorise libm calls without SVML).  They are the
fdlibm polynomial kernels (Sun Microsystems, freely redistributable: ``e_log.c``
``Lg1..Lg7``, ``k_sin.c`` ``S1..S6``, ``k_cos.c`` ``C1..C6``) evaluated with
``+ - * /`` and ``sqrt`` only, which IEEE 754 rounds identically everywhere.
Range reductions use float comparisons turned into 0/1 factors, so there is
no branch and no bit-cast.  Bitwise identical results therefore require only
that no backend fuses ``a*b + c`` into an FMA: NumPy never does, Numba does
not without ``fastmath``, the CUDA simulator runs this Python; a real GPU's
NVVM contracts to FMA by default (see :mod:`refscore.sampling.cuda`).

Random123 reference: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw,
"Parallel random numbers: as easy as 1, 2, 3", SC11 (2011), Philox4x32-10.
"""
from __future__ import annotations

import math
import types

import numpy as np

__all__ = ["make", "COUNTER_LAYOUT"]

COUNTER_LAYOUT = "counter = (pair, step, chain, stream), key = (seed & 0xffffffff, seed >> 32)"

# Philox4x32 constants (Random123 philox.h)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_Z = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U5 = np.uint64(5)
_U6 = np.uint64(6)
_U7 = np.uint64(7)
_U25 = np.uint64(25)
_U26 = np.uint64(26)

# float constants
_TWO_M53 = 2.0 ** -53
_TWO_M51 = 2.0 ** -51
_HALF_OFFSET = 2.0 ** 50 - 0.5        # centres a 51-bit integer: (a - this) * 2^-51 in (-1/2, 1/2)
_HALF_PI = 1.5707963267948966         # pi/2, float64 nearest
_SQRT_HALF = 0.7071067811865476
# fdlibm e_log.c
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
# fdlibm k_sin.c / k_cos.c
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11


def make(jit, sqrt=None):
    """Build the generator with decorator ``jit``; ``sqrt`` is ``np.sqrt`` for
    NumPy (arrays) and ``math.sqrt`` for compiled scalars."""
    if sqrt is None:
        sqrt = math.sqrt

    @jit
    def philox_round(c0, c1, c2, c3, k0, k1):
        # (hi, lo) = mulhilo32(M, c): a 32x32 -> 64-bit product in uint64
        p0 = _M0 * c0
        p1 = _M1 * c2
        return ((p1 >> _S32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> _S32) ^ c3 ^ k1, p0 & _MASK32)

    @jit
    def philox4x32_10(c0, c1, c2, c3, k0, k1):
        """Philox4x32-10 of counter (c0..c3) under key (k0, k1); words as uint64 < 2^32."""
        # ten rounds written out (no loop: the chain loop around a call can vectorise)
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
        return c0, c1, c2, c3

    @jit
    def log_unit(u):
        """log(u) for u in [2^-53, 1]: fdlibm e_log.c with a branch-free reduction."""
        # u = m * 2^-e with m in [1/2, 1]: binary search on the exponent, as 0/1 factors
        m = u
        e = 0.0
        c = (m < 2.0 ** -32) * 1.0
        m = m * (1.0 + c * (2.0 ** 32 - 1.0))
        e = e + c * 32.0
        c = (m < 2.0 ** -16) * 1.0
        m = m * (1.0 + c * (2.0 ** 16 - 1.0))
        e = e + c * 16.0
        c = (m < 2.0 ** -8) * 1.0
        m = m * (1.0 + c * (2.0 ** 8 - 1.0))
        e = e + c * 8.0
        c = (m < 2.0 ** -4) * 1.0
        m = m * (1.0 + c * (2.0 ** 4 - 1.0))
        e = e + c * 4.0
        c = (m < 2.0 ** -2) * 1.0
        m = m * (1.0 + c * (2.0 ** 2 - 1.0))
        e = e + c * 2.0
        c = (m < 2.0 ** -1) * 1.0
        m = m * (1.0 + c)
        e = e + c
        # now m in [1/2, 1]; move to [sqrt(1/2), sqrt(2)) as fdlibm does
        c = (m < _SQRT_HALF) * 1.0
        m = m * (1.0 + c)
        e = e + c
        dk = -e
        f = m - 1.0
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
        t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
        r = t2 + t1
        hfsq = 0.5 * f * f
        return dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)

    @jit
    def sin_kernel(x):
        """sin(x), |x| <= pi/4 (fdlibm k_sin.c, iy = 0)."""
        z = x * x
        v = z * x
        r = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
        return x + v * (_S1 + z * r)

    @jit
    def cos_kernel(x):
        """cos(x), |x| <= pi/4 (fdlibm k_cos.c, y = 0)."""
        z = x * x
        r = z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
        hz = 0.5 * z
        w = 1.0 - hz
        return w + (((1.0 - w) - hz) + z * r)

    @jit
    def box_muller(w0, w1, w2, w3):
        r"""Two independent N(0, 1) from one Philox output (four 32-bit words).

        radius: u = (k + 1) 2^-53, k = 53 bits of (w0, w1), so u in (0, 1];
        angle: t = pi/2 * ((a - 2^50 + 1/2) 2^-51) in (-pi/4, pi/4), a = 51 bits
        of (w2, w3); the three low bits of w3 pick a swap and two signs, which
        carry t uniformly over the whole circle (the symmetry group of the square
        acting on the quarter-sector).
        """
        k = ((w0 >> _U5) << _U26) | (w1 >> _U6)
        u = (k * 1.0 + 1.0) * _TWO_M53
        rad = sqrt(-2.0 * log_unit(u))
        a = ((w2 >> _U6) << _U25) | (w3 >> _U7)
        t = ((a * 1.0 - _HALF_OFFSET) * _TWO_M51) * _HALF_PI
        sn = sin_kernel(t)
        cs = cos_kernel(t)
        swap = (w3 & _U1) * 1.0
        sg0 = 1.0 - 2.0 * (((w3 >> _U1) & _U1) * 1.0)
        sg1 = 1.0 - 2.0 * (((w3 >> _U2) & _U1) * 1.0)
        p = swap * sn + (1.0 - swap) * cs
        q = swap * cs + (1.0 - swap) * sn
        return rad * p * sg0, rad * q * sg1

    @jit
    def normal_pair(k0, k1, chain, step, pair, stream):
        """The two normals of coordinates (2 pair, 2 pair + 1) at (chain, step)."""
        w0, w1, w2, w3 = philox4x32_10(pair, step, chain, stream, k0, k1)
        return box_muller(w0, w1, w2, w3)

    @jit
    def uniform(k0, k1, chain, step, stream):
        """A uniform in (0, 1) from counter (0, step, chain, stream): 53 bits, centred."""
        w0, w1, w2, w3 = philox4x32_10(step & _Z, step, chain, stream, k0, k1)
        k = ((w0 >> _U5) << _U26) | (w1 >> _U6)
        return (k * 1.0 + 0.5) * _TWO_M53

    return types.SimpleNamespace(
        philox_round=philox_round,
        philox4x32_10=philox4x32_10,
        log_unit=log_unit,
        sin_kernel=sin_kernel,
        cos_kernel=cos_kernel,
        box_muller=box_muller,
        normal_pair=normal_pair,
        uniform=uniform,
    )
