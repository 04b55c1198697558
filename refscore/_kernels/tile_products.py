r"""The matrix products of the MLP loss kernels, written so that Numba emits the CPU's widest vectors.

Every product of :mod:`.mlp_losses` is one form,

.. math::

    C_{ko} = C^0_{ko} + \sum_{i<K} A_{ki}\, B_{io},\qquad A_{ki} = \texttt{A}[k\,r_s + i\,c_s],\quad
    C^0_{ko} = \texttt{C0}[k\,r_0 + o],

with ``B`` read along its rows and ``A`` read one number at a time through
strides, so that one routine serves a layer's forward product
:math:`H W^\top` (``A`` = the block's activations, ``B`` = :math:`W^\top`), its
backward product :math:`\bar G W` and its weight gradient :math:`\bar G^\top H`
(``A`` = the adjoints read down their columns, ``B`` = the activations: no
transposed copies).  The first term :math:`C^0` is read through a row stride
too: ``C`` itself (a weight gradient summed over blocks), or one row for every
row, :math:`r_0 = 0` (a bias, a row of zeros), which the tiles load where they
would load ``C``: writing the bias or the zeros into ``C`` first, a pass over
it, measured 0.2 ms more for ESM + gradient at n = 10⁴, d = 10 (4.95 ms
against 5.14, one thread).

How.  ``C`` is computed in tiles of :data:`R_TILE` rows by :data:`S_TILE`
consecutive columns: 96 sums, each over i in order, the tile's 16 numbers
of a row of ``B`` loaded once per i and multiplied by each of the tile's 6
numbers of ``A``.  Written as scalar code, the 16 columns of a row are
independent and consecutive, which is what LLVM's SLP vectoriser packs into
two AVX-512 registers per row; the 96 sums then stay in 12 registers for the
whole reduction (a register-blocked outer product, the inner loop of a
BLAS kernel): 12 independent chains of multiply-adds, more than the two
units' 2 x 4 cycles of latency need (4 rows, 8 chains, measured 5-10 %
slower).  Numba compiles with the SLP vectoriser off (its default
since numba 0.57, after miscompilations of other code were reported);
:func:`compile_tile_products` turns it on for the compilation of this one
function and nothing else (a listener on Numba's compile event, inside
Numba's compiler lock), and the product is tested against NumPy on every
edge of the tiling.  The reduction runs in chunks of :data:`K_CHUNK` terms
(the first starts from :math:`C^0`, each later one adds to the tile's
partial sums in ``C``) so that the rows of
``B`` a chunk reads stay in the L1 cache across the tiles of ``C``.

Measured on one core of a 2-core AMD EPYC (Zen 5, peak 67-69 GFMA/s at
512-bit vectors), thread CPU time: 59 GFMA/s for (192 × 64)·(64 × 64), 57–61
for a 64 × 64 weight gradient summed over 192–384 points, 32 for a reduction
over K = 10 ((192 × 10)·(10 × 64): each tile's 12 registers loaded and stored
for 10 terms); ``np.dot`` on one thread, through SciPy's OpenBLAS, whose
double-precision kernel on this CPU is its AVX2 one, 28.  Without the SLP
vectoriser the same code runs at 5 GFMA/s (scalar).

Shapes.  ``C`` has a multiple of :data:`R_TILE` rows and of :data:`S_TILE`
columns (the kernels give every array a padded width, :func:`padded`, and
room for a padded number of rows); ``B`` has at least ``C``'s columns.
Rows and columns past the ones a kernel uses hold numbers that no
result reads.

Order of summation.  Every entry of ``C`` is its first term plus the K
products in the order i = 0, 1, …: the same for every entry, whatever its
tile, the memory addresses or the thread count; it differs from BLAS by
round-off only.  ``fastmath={"contract"}`` fuses each multiply-add (one
rounding instead of two) and allows no other reordering.

The function is generated and compiled by the caller's decorator
(:func:`compile_tile_products`), as :mod:`.activation_table` does.
"""
from __future__ import annotations

__all__ = ["R_TILE", "S_TILE", "K_CHUNK", "compile_tile_products", "dot_rows_source", "padded", "rows_padded"]

#: rows of ``A`` per tile ((192 x 64)(64 x 64): 6 x 16 measured 59-62 GFMA/s, 4 x 16 54-57, 5 x 16 57-59,
#: 8 x 16 59-62 compiling 0.2 s longer; 2 x 32, 8 x 8, 1 x 64 slower)
R_TILE = 6
#: columns of ``B`` per tile: two AVX-512 registers of float64
S_TILE = 16
#: terms of the reduction per pass over ``C`` (64 x 16 numbers of ``B``, 8 KiB: a 64 x 64 weight gradient over
#: 192 points measured the same in chunks of 32–64, 11 % slower in chunks of 96 and 17 % in one pass)
K_CHUNK = 64


def padded(width: int) -> int:
    """``width`` rounded up to a multiple of :data:`S_TILE` (the columns of every array of the kernels)."""
    return -(-width // S_TILE) * S_TILE


def rows_padded(rows: int) -> int:
    """``rows`` rounded up to a multiple of :data:`R_TILE`."""
    return -(-rows // R_TILE) * R_TILE


def dot_rows_source(R: int = R_TILE, S: int = S_TILE, KC: int = K_CHUNK) -> str:
    """Python source of ``dot_rows(A, rs, cs, B, C, m, c, K, C0, c0s)``:
    ``C[k m + o] = C0[k c0s + o] + sum_{i<K} A[k rs + i cs] B[i, o]`` for k < c, o < m, in R × S tiles
    (c a multiple of R, m of S: it reads and writes whole tiles), K in chunks of KC (see the module
    notes): the first chunk starts from ``C0``, each later one from the partial sums in ``C``.

    ``C`` is a flat row-major array of rows of ``m`` numbers, as ``C0``: a (c, m) view would need a
    second set of the tile's loads (``C0`` or ``C``) or a flat view of it made inside (``ravel``), and
    compiled 0.35 s (0.15 s) longer.  The offsets are unsigned (``np.uint64``): a signed index makes
    Numba test it for a negative value (wraparound) at every load, which keeps the loads from being
    packed (measured 40 GFMA/s against 59).  Each row of the tile in ``C0`` or ``C`` is a view from its
    first number, read and written at the constant offsets 0 … 15 (a constant index needs no test);
    the unsigned constants 1 … are made once (``n1`` …), not at each use: Numba types every
    expression anew, and the 6 x 16 tile compiled in 0.9 s against 1.4 with an ``np.uint64(…)`` call
    at each of its 192 loads and stores (the 4 x 16 one 0.97 s).  K = 0 runs one empty chunk, so
    that ``C`` is ``C0`` then too.
    """
    def plus(base, j):
        return base if j == 0 else f"{base} + n{j}"

    L = ["def dot_rows(A, rs, cs, B, C, m, c, K, C0, c0s):",
         "    urs = np.uint64(rs)",
         "    ucs = np.uint64(cs)",
         "    um = np.uint64(m)"]
    L += [f"    n{j} = np.uint64({j})" for j in range(1, max(R, S))]
    L += [f"    for i0 in range(0, max(K, 1), {KC}):",
          f"        i1 = min(i0 + {KC}, K)",
          "        src = C0 if i0 == 0 else C",
          "        us = np.uint64(c0s) if i0 == 0 else um",
          "        k0 = 0",
          "        while k0 < c:",
          "            uk = np.uint64(k0)"]
    L += [f"            p{r} = ({plus('uk', r)}) * urs" for r in range(R)]
    L += [f"            e{r} = ({plus('uk', r)}) * us" for r in range(R)]
    L += [f"            f{r} = ({plus('uk', r)}) * um" for r in range(R)]
    L += ["            o0 = 0",
          "            while o0 < m:",
          "                uo = np.uint64(o0)"]
    L += [f"                X{r} = src[e{r} + uo:]" for r in range(R)]
    L += [f"                c{r}_{s} = X{r}[{s}]" for r in range(R) for s in range(S)]
    L += ["                for i in range(i0, i1):",
          "                    Bi = B[i]",
          "                    q = np.uint64(i) * ucs"]
    L += [f"                    b{s} = Bi[{plus('uo', s)}]" for s in range(S)]
    for r in range(R):
        L += [f"                    a{r} = A[p{r} + q]"]
        L += [f"                    c{r}_{s} += a{r} * b{s}" for s in range(S)]
    L += [f"                Y{r} = C[f{r} + uo:]" for r in range(R)]
    L += [f"                Y{r}[{s}] = c{r}_{s}" for r in range(R) for s in range(S)]
    L += [f"                o0 += {S}",
          f"            k0 += {R}"]
    return "\n".join(L)


def compile_tile_products(njit):
    """``dot_rows`` compiled by ``njit`` (``numba.njit``): ``fastmath={"contract"}``, GIL-free, called (not
    inlined: Numba links one copy however many call sites a kernel has), with LLVM's SLP vectoriser on
    for its compilation alone (see the module notes).  Kernels cached on disk carry its machine code."""
    import numpy as np
    from numba.core import config, event

    ns: dict = {"np": np}
    exec(dot_rows_source(), ns)  # noqa: S102 - source built above from integers only
    dot_rows = njit(fastmath={"contract"}, error_model="numpy", nogil=True)(ns["dot_rows"])

    class _SLPWhileCompiling(event.Listener):
        """Numba's SLP vectoriser on while ``dot_rows`` compiles (the event fires under the compiler lock)."""

        def __init__(self):
            self.saved = []

        def on_start(self, ev):
            if isinstance(ev.data, dict) and ev.data.get("dispatcher") is dot_rows:
                self.saved.append(config.SLP_VECTORIZE)
                config.SLP_VECTORIZE = 1

        def on_end(self, ev):
            if isinstance(ev.data, dict) and ev.data.get("dispatcher") is dot_rows:
                config.SLP_VECTORIZE = self.saved.pop()

    event.register("numba:compile", _SLPWhileCompiling())
    return dot_rows
