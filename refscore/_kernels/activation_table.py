r"""The compiled activations, generated from the activation registry (numba-free).

Derivation: docs/derivations.md §6.

Each registry entry of :data:`refscore.models.activations.ACTIVATIONS` carries
its kernel formulas, ``kernel(ops) -> f`` with ``f(z) -> (φ, φ', φ'')``.  This
module compiles them with a backend's decorator and elementary functions and
writes the one dispatcher every kernel calls, ``activation(kind, z)``, with
``kind`` the entry's position (:func:`refscore.models.activations.kernel_id`):

.. code-block:: python

    def activation(kind, z):
        if kind == 0:
            return f0(z)        # tanh
        ...
        return nan, nan, nan    # an id no entry has: NaN, never another activation

The dispatcher is straight-line source (generated once per backend), so a
constant ``kind`` folds to one formula and the caller's loop vectorises.  A
new activation therefore needs no edit here or in any kernel.
"""
from __future__ import annotations

import math
import types

__all__ = ["compile_activation", "compile_activation_entries", "compile_activate_row", "compile_activate_hidden", "LIBM_OPS", "register_activations", "registry_source"]

#: libm's elementary functions (the CUDA kernels; the tests' pure-Python form)
LIBM_OPS = dict(exp_nonpositive=math.exp, tanh=math.tanh, erfc=math.erfc, log1p=math.log1p)


#: the activation registry and the file that defines it, handed down by
#: :mod:`refscore.models.activations` when it is imported (this floor imports
#: nothing above it); the mapping is held, not copied, so entries added to it later count
_REGISTERED: dict = {}


def register_activations(registry, source) -> None:
    """Hand the activation registry (``{name: Activation}``, read live) and its source file down.

    Called once by :mod:`refscore.models.activations`, which ``import refscore``
    always loads before any kernel compiles.  ``source`` enters the kernel
    cache's fingerprint (:mod:`.cache`), so an edited formula starts a fresh cache.
    """
    _REGISTERED["registry"] = registry
    _REGISTERED["source"] = source


def registry_source():
    """The file that defines the activation registry (for the cache fingerprint)."""
    return _REGISTERED["source"]


def _entries():
    if "registry" not in _REGISTERED:
        raise RuntimeError("the activation registry was not handed to the kernel floor: import refscore "
                           "(refscore.models.activations registers it) before compiling kernels")
    return [(i, act) for i, act in enumerate(_REGISTERED["registry"].values()) if act.kernel is not None]


def compile_activation_entries(jit, ops) -> dict:
    """``{kind: f}``: each registry entry's ``f(z) -> (φ, φ', φ'')``, compiled by ``jit``.

    ``ops`` maps ``exp_nonpositive``, ``tanh``, ``erfc``, ``log1p`` to
    functions ``jit`` can call; ``jit`` also compiles the formulas' helpers.
    """
    ops = types.SimpleNamespace(jit=jit, **ops)
    return {i: jit(act.kernel(ops)) for i, act in _entries()}


def compile_activation(jit, ops, entries=None):
    """``activation(kind, z) -> (φ, φ', φ'')`` over every registry entry, compiled by ``jit``.

    ``entries`` are those of :func:`compile_activation_entries` (compiled from ``ops`` when not given).
    """
    entries = compile_activation_entries(jit, ops) if entries is None else entries
    ns = {"_nan": math.nan}
    lines = ["def activation(kind, z):"]
    for i, f in entries.items():
        ns[f"_f{i}"] = f
        lines += [f"    if kind == {i}:", f"        return _f{i}(z)"]
    lines.append("    return _nan, _nan, _nan")
    exec("\n".join(lines), ns)  # noqa: S102 - source built above from integers only
    return jit(ns["activation"])


def compile_activate_row(jit, entries):
    """``activate_row(kind, a, f, f1, f2)``: f, f1, f2 = φ, φ', φ'' at ``a`` along a row.

    One loop per registry entry, calling that entry's formula (``entries`` of
    :func:`compile_activation_entries`) directly, so each loop vectorises and the
    row compiles each formula once (a loop through the dispatcher would carry
    every formula into every loop); an unknown id fills the row with NaN.
    """
    ns = {"_nan": math.nan}
    lines = ["def activate_row(kind, a, f, f1, f2):"]
    for i, fn in entries.items():
        ns[f"_f{i}"] = fn
        lines += [f"    if kind == {i}:",
                  "        for o in range(a.shape[0]):",
                  f"            f[o], f1[o], f2[o] = _f{i}(a[o])",
                  "        return"]
    lines += ["    for o in range(a.shape[0]):",
              "        f[o] = _nan",
              "        f1[o] = _nan",
              "        f2[o] = _nan"]
    exec("\n".join(lines), ns)  # noqa: S102 - source built above from integers only
    return jit(ns["activate_row"])


def compile_activate_hidden(jit, entries):
    """``activate_hidden(kind, h, dh, m)``: in place along a row of chains, ``h[c], dh[c] = φ(h[c]), φ'(h[c])``
    for ``c < m`` (a hidden layer of the samplers' MLP targets).

    As :func:`compile_activate_row`: one loop per registry entry calling that entry's formula
    directly, so each formula is compiled once and each loop vectorises over the chains; an
    unknown id gives NaN.
    """
    ns = {"_nan": math.nan}
    lines = ["def activate_hidden(kind, h, dh, m):"]
    for i, fn in entries.items():
        ns[f"_f{i}"] = fn
        lines += [f"    if kind == {i}:",
                  "        for c in range(m):",
                  f"            v, dv, _ = _f{i}(h[c])",
                  "            h[c] = v",
                  "            dh[c] = dv",
                  "        return"]
    lines += ["    for c in range(m):",
              "        h[c] = _nan",
              "        dh[c] = _nan"]
    exec("\n".join(lines), ns)  # noqa: S102 - source built above from integers only
    return jit(ns["activate_hidden"])
