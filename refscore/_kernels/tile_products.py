r"""The small matrix products of the MLP loss kernels, written so that Numba emits the CPU's widest vectors.

Every product of :mod:`.mlp_losses` is one form,

.. math::

    C_{ko} \;(\mathrel{+}=)\; \sum_{i<K} A_{ki} B_{oi} + b_o ,

"A times B transposed", both factors read along their rows (C-contiguous,
the reduction index last).  A layer's forward product :math:`H W^\top` is
this form with the weights as stored; the backward product :math:`\bar G W`
takes :math:`W^\top` (transposed once per call); a weight gradient
:math:`\bar G^\top H` (a sum over the points) takes both factors
feature-major, a copy made per block by :func:`transpose_into`.

Why not BLAS.  ``np.dot`` in a Numba kernel calls SciPy's OpenBLAS, whose
double-precision kernel on this generation of CPUs is its AVX2 one: at most
half the multiply-add rate of an AVX-512 core (measured on a 2-core AMD EPYC,
Zen 5: 28 GFMA/s for a (192 × 64)·(64 × 64) product on one thread, against
66 GFMA/s for register-resident AVX-512 multiply-adds).  Numba itself emits
AVX-512 through LLVM's loop vectoriser, which vectorises innermost loops only
(Numba leaves the SLP vectoriser off).  In the form above the innermost loop
is the reduction over ``i``: each of an :data:`R_TILE` × :data:`S_TILE` tile of
outputs is one reduction, kept in a vector register across the loop and
summed across its lanes at the end (``fastmath={"reassoc", "contract"}`` on
this function alone allows exactly that reordering and the fused
multiply-add; no other fast-math assumption).  Measured on the same machine,
one thread: 40–43 GFMA/s for (192 × 64)·(64 × 64), 50–54 GFMA/s for a weight
gradient summed over 192 points, against 27–28 GFMA/s for ``np.dot`` on the
same shapes.  A short reduction (``K`` below 16, e.g. over the input
dimension d = 10) vectorises badly; the kernels give those to ``np.dot``.

Determinism.  The order in which a product adds its ``K`` terms depends on
``K`` and on the tile the output falls in (fixed by the shapes), never on
the memory addresses or the thread count: LLVM's vectoriser does not peel
iterations for alignment, and the result is bitwise the same for every
placement of the operands (tested).  It differs from a sequential sum by
round-off only.

The functions are generated and compiled by the caller's decorator
(:func:`compile_tile_products`), so that this module imports nothing, as
:mod:`.activation_table` does.
"""
from __future__ import annotations

__all__ = ["R_TILE", "S_TILE", "compile_tile_products", "dot_rows_source", "padded"]

#: rows of A and of B per tile: 16 independent reductions, 8 loads per 16 multiply-adds, 16 of the 32
#: AVX-512 registers (4 x 4 measured fastest of 2x4, 4x2, 2x8, 8x2, 3x4, 4x3, 6x2 at K = 64)
R_TILE, S_TILE = 4, 4


def dot_rows_source(R: int = R_TILE, S: int = S_TILE) -> str:
    """Python source of ``dot_rows(A, B, C, bias, K)``: ``C[k, o] = sum_{i<K} A[k, i] B[o, i] + bias[o]``
    in R × S tiles (see the module notes).

    ``A`` (c, >= K) and ``B`` (m, >= K) C-contiguous, ``C`` (c, m) and ``bias`` (m,) any strides.  One
    loop body for every tile: a tile at the edge reads its last row of A (of B) again in place of the
    rows past the end and stores only the outputs inside ``C`` (separate remainder loops compiled 0.4 s
    more; at most R - 1 rows and S - 1 columns are computed twice).  No accumulating variant: a weight
    gradient is the product into a small scratch array, then added (``add_into``, h·h' additions
    against the product's c·h·h' multiply-adds); a second function, or a flag (a constant flag at a
    call site is a literal type to Numba, compiled as a specialisation of its own), compiled 0.45 s more.
    """
    L = ["def dot_rows(A, B, C, bias, K):",  # while loops: range(0, c, R) measured 17 % slower
         "    c = A.shape[0]",
         "    m = B.shape[0]",
         "    k0 = 0",
         "    while k0 < c:"]
    L += [f"        A{r} = A[min(k0 + {r}, c - 1)]" for r in range(R)]
    L += ["        o0 = 0", "        while o0 < m:"]
    L += [f"            B{s} = B[min(o0 + {s}, m - 1)]" for s in range(S)]
    L += [f"            c{r}_{s} = 0.0" for r in range(R) for s in range(S)]
    L += ["            for i in range(K):"]
    L += [f"                c{r}_{s} += A{r}[i] * B{s}[i]" for r in range(R) for s in range(S)]
    for r in range(R):
        ind = "            "
        if r:
            L.append(f"{ind}if k0 + {r} < c:")
            ind += "    "
        for s in range(S):
            if s:
                L.append(f"{ind}if o0 + {s} < m:")
                L.append(f"{ind}    C[k0 + {r}, o0 + {s}] = c{r}_{s} + bias[o0 + {s}]")
            else:
                L.append(f"{ind}C[k0 + {r}, o0] = c{r}_0 + bias[o0]")
    L += [f"            o0 += {S}", f"        k0 += {R}"]
    return "\n".join(L)


def _transpose_into(A, T):
    """``T[o, k] = A[k, o]`` for the c × h array ``A`` (``T`` has h rows of at least c numbers).

    Row by row of ``A``: the loads run along a row, each store to its own row of ``T``; a c whose rows
    of ``T`` are a multiple of 1 KiB apart makes the h stores of a row fight over a few cache sets
    (measured 8x slower), so the kernels give ``T`` a padded row length (:func:`padded`).
    """
    c, h = A.shape
    for k in range(c):
        for o in range(h):
            T[o, k] = A[k, o]


def padded(c: int) -> int:
    """A row length >= c for a feature-major copy: a multiple of 8 numbers (whole 64-byte lines), an odd one,
    so that the rows of a copy spread over all of the L1 cache's sets."""
    p = (c + 7) // 8 * 8
    return p if (p // 8) % 2 == 1 else p + 8


def _add_into(G, T):
    """``G += T`` (a weight gradient and a block's share of it, both h × h')."""
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            G[i, j] += T[i, j]


def compile_tile_products(njit):
    """``(dot_rows, add_into, transpose_into, padded)`` compiled by ``njit`` (``numba.njit``) with the
    options above, all GIL-free and called (not inlined: Numba links one copy however many call sites a
    kernel has).  A weight gradient is ``dot_rows`` into a scratch array, then ``add_into``.  Call them
    with no literal constant among the arguments: a literal compiles a specialisation of its own."""
    ns: dict = {}
    exec(dot_rows_source(), ns)  # noqa: S102 - source built above from integers only
    opts = dict(error_model="numpy", nogil=True)
    return (njit(fastmath={"reassoc", "contract"}, **opts)(ns["dot_rows"]), njit(**opts)(_add_into),
            njit(**opts)(_transpose_into), njit(nogil=True)(padded))
