"""Foreign backends checked against refscore's golden files.

Two small, independent implementations of the losses on refscore's ``theta``
layout, written with automatic differentiation instead of refscore's
hand-derived derivatives, on the models of :mod:`refscore.interop` (the
PyTorch modules and JAX functions users get, with their ``theta`` mapping):

* :mod:`refscore.validation.interop.jax_backend`: ``jax.grad`` / ``jax.jvp`` /
  ``jax.jacfwd``, float64 (``jax_enable_x64``);
* :mod:`refscore.validation.interop.torch_backend`: ``torch.autograd.grad``, float64
  (or float32 to exercise the float32 tolerances).

Each exposes ``values(golden, *, variant=None, cases=None) -> dict`` with the
keys of the golden file, which :func:`refscore.golden.check` (or
``refscore check``) compares.  ``variant`` switches on one deliberately wrong
convention (:data:`VARIANTS`) so that the tests can show ``check`` catches it
and names the quantity.

Command line (writes ``values.npz`` for a golden directory)::

    refscore golden --out golden/
    python -m refscore.validation.interop --backend jax golden/ --out values.npz
    refscore check golden/ values.npz

Neither jax nor torch is a dependency of refscore: install ``refscore[interop]``
(``jax[cpu]``) or a CPU build of torch to run them.
"""
import warnings

#: deliberately wrong conventions a backend can switch on (a negative control for ``check``)
VARIANTS = {
    "sphere_unscaled": "sphere projections v = z/||z|| on the unit sphere (no sqrt(d)): "
    "v_sphere, ssm_sphere, ssm_vr_sphere and their gradients are wrong for d > 1",
    "dsm_no_sigma": "DSM target -eps instead of -eps/sigma: dsm and dsm_grad are wrong",
}

#: the foreign backends, by the name ``--backend`` takes (modules ``<name>_backend``)
FOREIGN_BACKENDS = ("jax", "torch")

__all__ = ["VARIANTS", "FOREIGN_BACKENDS"]


def __getattr__(name):  # PEP 562: the former name, deprecated
    if name == "BACKENDS":
        warnings.warn("refscore.validation.interop.BACKENDS is deprecated: the foreign backends are "
                      "refscore.validation.interop.FOREIGN_BACKENDS (refscore.sampling.BACKENDS is the "
                      "sampler backends' registry)", DeprecationWarning, stacklevel=2)
        return FOREIGN_BACKENDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
