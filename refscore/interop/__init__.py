r"""refscore models, golden inputs and noise as PyTorch modules and JAX functions.

An optional extra: ``import refscore`` imports neither torch nor jax, and
neither does ``import refscore.interop``.  The framework is imported by the
submodule that needs it:

* :mod:`refscore.interop.torch` -- a golden case spec or a refscore model as a
  ``torch.nn.Module`` (``forward(x)`` is the score ``(n, d)``; energy models
  also have ``.energy(x)``), and ``theta`` <-> parameters both ways.  Needs
  ``pip install torch`` (a CPU build is enough; ``pip install -e '.[torch]'`` in a clone).
* :mod:`refscore.interop.jax` -- a pure function ``score(params, x)`` (and
  ``energy(params, x)``) with ``theta`` <-> ``params`` (a list of arrays) both
  ways.  Needs ``pip install 'refscore[interop]'`` (jax[cpu]); importing it
  switches on ``jax_enable_x64`` (refscore is float64 throughout).

Each submodule raises an ``ImportError`` naming the install command when its
framework is missing.  What is here works without either:

==========================================  =====================================================
:func:`golden_inputs`                       a golden case's inputs (``theta``, ``x``, ``u``, ...)
                                            as NumPy, torch or JAX arrays, bitwise equal
:func:`normal`, :func:`uniform`             :mod:`refscore.noise` (counter-based Philox) as
                                            NumPy, torch or JAX arrays, bitwise equal
:func:`parameter_layout`, :func:`n_params`  the ``theta`` layout as ``[(name, shape), ...]``
:func:`spec_of`, :func:`as_spec`            the spec ``{"model": ..., "kwargs": {...}}`` of a
                                            model, a golden case name or a golden ``Case``
:func:`to_torch`, :func:`to_jax`            shortcuts that import the submodule
:data:`FRAMEWORKS`, :func:`get_framework`   the frameworks by name (``numpy``, ``torch``,
                                            ``jax``), each a
                                            :class:`~refscore.interop.frameworks.Framework`:
                                            what :mod:`refscore.testing` runs your code with
==========================================  =====================================================

The layout (docs/derivations.md §3.1, §7.1-§7.3): ``theta`` is the
concatenation of the C-order ravels of the arrays of :func:`parameter_layout`,
in order -- an MLP's ``W_l`` is ``(out, in)`` like ``torch.nn.Linear.weight``,
so its layers load into ``nn.Linear`` without a transpose.  Every conversion
is a slice, a reshape or a copy, so float64 round trips are bitwise exact;
scores agree with refscore's to round-off (about 1e-15 on the golden inputs;
the tests ask 1e-12).

Examples
--------
The complete, tested examples are in the docstrings of
:mod:`refscore.interop.torch` and :mod:`refscore.interop.jax`.  In short::

    import refscore
    from refscore.interop import golden_inputs, normal
    from refscore.interop import torch as rtorch          # needs torch

    model = refscore.MLPEnergy(2, hidden=(16,), activation="softplus")
    theta = model.init(0)
    net = rtorch.to_torch(model, theta)                   # nn.Module, float64
    inp = golden_inputs("mlpenergy_tanh_depth1_d2", framework="torch")
    z = normal(seed=0, chain=[0, 1], step=3, dim=2, framework="torch")
    assert (rtorch.module_to_theta(net) == theta).all()   # bitwise

Without a framework, the NumPy forms run anywhere:

>>> import numpy as np
>>> from refscore.interop import golden_inputs, normal, parameter_layout
>>> parameter_layout("mlpscore_tanh_depth1_d2")
[('layers.0.weight', (5, 2)), ('layers.0.bias', (5,)), ('layers.1.weight', (2, 5)), ('layers.1.bias', (2,))]
>>> sorted(golden_inputs("linear_d2"))[:3]
['eps', 'sigma', 'target']
>>> normal(7, chain=[0, 1], step=0, dim=3).shape
(2, 3)
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from ._spec import (
    ENERGY_MODELS,
    MODELS,
    as_spec,
    golden_case_inputs,
    n_params,
    parameter_layout,
    spec_of,
)
from .frameworks import Framework, NumpyFramework

__all__ = [
    "MODELS",
    "ENERGY_MODELS",
    "FRAMEWORKS",
    "get_framework",
    "as_spec",
    "spec_of",
    "parameter_layout",
    "n_params",
    "golden_inputs",
    "normal",
    "uniform",
    "to_torch",
    "to_jax",
]

_SUBMODULES = ("torch", "jax")


def __getattr__(name):  # PEP 562: refscore.interop.torch / .jax on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ the frameworks
def _torch_framework() -> Framework:
    from .torch import TorchFramework  # imports torch; without it an ImportError naming the install

    return TorchFramework()


def _jax_framework() -> Framework:
    from .jax import JaxFramework  # imports jax; without it an ImportError naming the install

    return JaxFramework()


class _FrameworkTable(Mapping):
    """name -> :class:`~refscore.interop.frameworks.Framework`, each made on its first lookup (so
    that listing the names, or looking up ``"numpy"``, imports neither torch nor jax)."""

    def __init__(self, makers: dict):
        self._makers = makers
        self._made = {}

    def __getitem__(self, name):
        if name not in self._made:
            self._made[name] = self._makers[name]()  # KeyError for a name that is not here
        return self._made[name]

    def __iter__(self):
        return iter(self._makers)

    def __len__(self):
        return len(self._makers)

    def __repr__(self):
        return f"FRAMEWORKS({', '.join(map(repr, self._makers))})"


#: The frameworks by name: ``"numpy"``, ``"torch"``, ``"jax"`` ->
#: :class:`~refscore.interop.frameworks.Framework` (:mod:`refscore.interop.frameworks`).
#: Looking one up imports its framework (an ``ImportError`` names the install command).
FRAMEWORKS = _FrameworkTable({"numpy": NumpyFramework, "torch": _torch_framework, "jax": _jax_framework})


def get_framework(name) -> Framework:
    """The :class:`~refscore.interop.frameworks.Framework` of ``name`` (:data:`FRAMEWORKS`).

    Raises ``ValueError`` for a name that is not one of :data:`FRAMEWORKS`, and the
    ``ImportError`` that names the install command when the framework is missing.
    """
    if not isinstance(name, str) or name not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {list(FRAMEWORKS)}, got {name!r}")
    return FRAMEWORKS[name]


def _convert(arrays: dict, framework, dtype, device) -> dict:
    """``{name: float64 ndarray}`` as arrays of ``framework`` (copies; float64 exact)."""
    return get_framework(framework).as_inputs(arrays, dtype=dtype, device=device)


def golden_inputs(case, framework="numpy", *, dtype="float64", device=None) -> dict:
    """The inputs of a golden case as arrays of ``framework``.

    Parameters
    ----------
    case : str or refscore.golden.Case
        A case name of :func:`refscore.golden.case_specs` (the inputs are drawn
        exactly as :func:`refscore.golden.write` draws the ones it stores), or
        a case of a loaded golden directory (:func:`refscore.golden.load`).
    framework : {"numpy", "torch", "jax"}
    dtype : str or dtype, keyword-only
        ``"float64"`` (default: bitwise equal to the golden values) or
        ``"float32"`` (rounded); a torch / numpy / jax dtype works too.
    device : keyword-only
        torch device or jax device (default: the framework's default).

    Returns
    -------
    dict
        ``{name: array}`` for every name of :data:`refscore.golden.INPUTS`:
        ``theta (P,)``, ``x, u, target, eps (n, d)``, ``sigma ()``,
        ``v_gaussian, v_rademacher, z_sphere (m, n, d)``.
    """
    return _convert(golden_case_inputs(case), framework, dtype, device)


def normal(seed, chain, step, dim, *, framework="numpy", dtype="float64", device=None):
    """:func:`refscore.noise.normal` (Philox4x32-10 + Box-Muller) as an array of ``framework``.

    The values are computed by refscore (NumPy) and converted: in float64
    they are bitwise those of :func:`refscore.noise.normal`, hence of the
    Numba and CUDA samplers.  Shape ``broadcast(chain, step).shape + (dim,)``.
    """
    from ..noise import normal as _normal

    return _convert({"z": _normal(seed, chain, step, dim)}, framework, dtype, device)["z"]


def uniform(seed, chain, step, *, framework="numpy", dtype="float64", device=None):
    """:func:`refscore.noise.uniform` (MALA's accept/reject draws) as an array of ``framework``."""
    from ..noise import uniform as _uniform

    return _convert({"u": _uniform(seed, chain, step)}, framework, dtype, device)["u"]


def to_torch(model, theta=None, **kwargs):
    """:func:`refscore.interop.torch.to_torch` (imports torch)."""
    from .torch import to_torch as _to_torch

    return _to_torch(model, theta, **kwargs)


def to_jax(model, theta=None, **kwargs):
    """:func:`refscore.interop.jax.to_jax` (imports jax)."""
    from .jax import to_jax as _to_jax

    return _to_jax(model, theta, **kwargs)
