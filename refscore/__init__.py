"""refscore: a reference implementation of score matching.

Hand-derived scores, Jacobians, Hessian traces and parameter gradients; the five
losses (ESM, ISM, DSM, SSM, SSM-VR); exact expectations on closed-form targets;
Langevin samplers on NumPy, Numba and numba.cuda with identical noise.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
