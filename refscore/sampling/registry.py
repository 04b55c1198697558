"""The sampler backends by name: one plain mapping of names to factories.

``backend="numba"`` in a sampler is ``BACKENDS["numba"]()``; a backend object
(``DaskBackend(client=..., block_chains=...)``, or any object implementing
:class:`.backends.SamplerBackend`) is used as it is.  This module imports the
backends and nothing imports it back but the samplers and their callers (the
CLI, the validation suite), so the registry adds no import circle; a new
backend is one entry here.

==========  =====================================================  ========================
name        factory                                                runs
==========  =====================================================  ========================
``numpy``   :class:`.backends.NumpyBackend`                        the NumPy reference
``numba``   :class:`.backends.NumbaBackend`                        Numba, blocks of chains
``cuda``    :class:`.backends.CudaBackend`                         numba.cuda, chain/thread
``dask``    :class:`.dask_backend.DaskBackend`                     blocks as Dask tasks
==========  =====================================================  ========================

``BACKENDS["dask"]()`` raises an ImportError naming ``pip install
'refscore[dask]'`` when dask.distributed is missing; importing this module
imports no dask and no numba.
"""
from __future__ import annotations

from .backends import CudaBackend, NumbaBackend, NumpyBackend, SamplerBackend
from .dask_backend import DaskBackend

__all__ = ["BACKENDS", "get_backend"]

#: name -> factory of a :class:`.backends.SamplerBackend`
BACKENDS = {
    "numpy": NumpyBackend,
    "numba": NumbaBackend,
    "cuda": CudaBackend,
    "dask": DaskBackend,
}


def get_backend(backend) -> SamplerBackend:
    """The backend a sampler runs on: ``BACKENDS[backend]()`` for a name, ``backend`` itself for an object.

    Raises
    ------
    ValueError
        For a name not in :data:`BACKENDS` (naming the choices).
    TypeError
        For anything else that is not a backend object (``name``, ``langevin`` and ``mala``).
    """
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)} or a backend object, got {backend!r}")
        return BACKENDS[backend]()
    if (isinstance(getattr(backend, "name", None), str) and callable(getattr(backend, "langevin", None))
            and callable(getattr(backend, "mala", None))):
        return backend
    raise TypeError(f"backend must be one of {sorted(BACKENDS)} or a backend object with name, langevin and "
                    f"mala (e.g. DaskBackend(client=...)), got {type(backend).__name__}")
