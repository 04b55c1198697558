"""Kernel ids shared by the NumPy reference and the compiled kernels (numba-free).

The compiled kernels take plain integers; the readable code names them here,
once.  Activation ids are not listed: they are the positions in the
activation registry (:func:`refscore.models.activations.kernel_id`).
"""
from __future__ import annotations

import enum

__all__ = ["LossKind", "TargetKind", "HEADER", "MAX_DIM_GPU", "MAX_WORK_GPU",
           "ISM", "SSM", "SSM_VR", "RESIDUAL", "DENOISING", "AFFINE", "MIX", "STUDENT", "BANANA", "MLP"]


class LossKind(enum.IntEnum):
    """Per-point loss terms a fused loss pass computes (docs/derivations.md §2).

    ``ISM``: tr J + ½‖s‖²; ``SSM``: vᵀJv + ½(vᵀs)²; ``SSM_VR``: vᵀJv + ½‖s‖²;
    ``RESIDUAL``: ½‖s − t‖² (ESM); ``DENOISING``: ½‖s(x + σz) + z/σ‖² (DSM), the
    residual at the noised point x̃ = x + σz with the target t = −z/σ, formed where
    the pass reads the point (the same numbers as ``RESIDUAL`` at x̃ and t).
    """

    ISM = 0
    SSM = 1
    SSM_VR = 2
    RESIDUAL = 3
    DENOISING = 4


class TargetKind(enum.IntEnum):
    """Score block a compiled sampler evaluates (see :mod:`refscore._kernels.score_blocks`)."""

    AFFINE = 0
    MIX = 1
    STUDENT = 2
    BANANA = 3
    MLP = 4


# plain ints for the kernels (numba folds module-level ints into constants)
ISM, SSM, SSM_VR, RESIDUAL, DENOISING = (int(k) for k in LossKind)
AFFINE, MIX, STUDENT, BANANA, MLP = (int(k) for k in TargetKind)

#: layout[0:HEADER] = kind, d, work_rows, a, b, c; an MLP's widths follow
HEADER = 6
#: local-array sizes of the one-chain "blocks" of the CUDA kernels
MAX_DIM_GPU = 64
MAX_WORK_GPU = 512
