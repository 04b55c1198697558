r"""What a sampler target is to the compiled score blocks (numba-free).

Every distribution and model declares its own block beside its math
(``kernel_block()`` on a distribution or bound model, ``kernel_levels(sigmas)``
on a noise-conditional target), built with the constructors here;
:func:`refscore.sampling.targets.compile_target` only asks.  A block is

* ``layout`` — int64 ``[kind, d, work_rows, a, b, c, extra...]`` naming the
  score kernel of :mod:`.score_blocks` and its shape;
* ``params`` — float64, the flat parameter block that kernel reads.

=========  ==================================================================
kind       params (flat) and the score computed
=========  ==================================================================
AFFINE     ``[A (d*d row-major), m (d), b (d)]``: :math:`s = A(x-m) + b`;
           :math:`\log p = \tfrac12 u^\top(s + b)`, :math:`u = x - m` (A symmetric)
MIX        layout ``a = k``, ``b = iso``; per component ``[c_j, tau_j, mu_j]``
           (iso) or ``[c_j, mu_j, P_j (d*d)]``: :math:`\ell_j = c_j - \tfrac12
           u_j^\top P_j u_j`, :math:`s = \sum_j \mathrm{softmax}(\ell)_j (-P_j u_j)`,
           :math:`\log p = \mathrm{logsumexp}_j \ell_j`
STUDENT    ``[nu, const, mu (d), P (d*d)]``: :math:`s = -\frac{\nu+d}{\nu+q}Pu`,
           :math:`\log p = c - \frac{\nu+d}{2}\log(1 + q/\nu)`
BANANA     ``[b, sigma1, const]``: :math:`y = x_2 + b(x_1^2 - \sigma_1^2)`,
           :math:`s = (-x_1/\sigma_1^2 - 2bx_1y,\ -y)`
MLP        layout ``a = n_layers``, ``b = activation id``, ``c = energy``, then
           the widths ``d, h_1, ..., out``; params = theta (per layer
           ``W.ravel()`` then ``b``).  Score MLP: linear output;
           energy MLP: :math:`s = -\nabla_x E`, :math:`\log p = -E`
=========  ==================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ids import AFFINE, BANANA, MIX, MLP, STUDENT

__all__ = ["KernelBlock", "affine_block", "mixture_block", "student_block", "banana_block", "mlp_block"]


@dataclass(frozen=True)
class KernelBlock:
    """A target's score kernel: ``layout`` (int64) and ``params`` (float64), and whether it has log p."""

    layout: np.ndarray
    params: np.ndarray
    has_logp: bool

    @property
    def dim(self) -> int:
        return int(self.layout[1])


def _layout(kind, d, work, a=0, b=0, c=0, extra=()):
    return np.array([kind, d, max(int(work), 1), a, b, c, *extra], dtype=np.int64)


def _block(layout, params, has_logp):
    return KernelBlock(layout, np.ascontiguousarray(params, dtype=float), bool(has_logp))


def affine_block(A, m, b, has_logp=True):
    """:math:`s = A(x - m) + b` (log p needs A symmetric: say so with ``has_logp``)."""
    d = m.shape[0]
    return _block(_layout(AFFINE, d, d), np.concatenate([np.ravel(A), m, b]), has_logp)


def mixture_block(logc, means, precs=None, iso_taus=None):
    """Gaussian mixture: ``logc`` (k,) normalised log-weights incl. the Gaussian constants.

    Either ``precs`` (k, d, d) or, for isotropic components, ``iso_taus`` (k,).
    """
    k, d = means.shape
    if iso_taus is not None:
        rows = [np.concatenate([[logc[j], iso_taus[j]], means[j]]) for j in range(k)]
        return _block(_layout(MIX, d, k + 2 * d + 2, k, 1), np.concatenate(rows), True)
    rows = [np.concatenate([[logc[j]], means[j], precs[j].ravel()]) for j in range(k)]
    return _block(_layout(MIX, d, k + 2 * d + 2, k, 0), np.concatenate(rows), True)


def student_block(df, log_norm_const, loc, precision):
    """Multivariate Student t with ``df`` degrees of freedom, location and shape precision."""
    d = loc.shape[0]
    return _block(_layout(STUDENT, d, 2 * d + 1),
                  np.concatenate([[df, log_norm_const], loc, precision.ravel()]), True)


def banana_block(b, sigma1):
    """Haario's banana: ``x_1 ~ N(0, sigma1²)``, ``x_2 + b(x_1² − sigma1²) ~ N(0, 1)``."""
    return _block(_layout(BANANA, 2, 1), np.array([b, sigma1, np.log(2.0 * np.pi * sigma1)]), True)


def mlp_block(sizes, activation_id, theta, energy):
    """An MLP score (``energy=False``) or energy (``True``) with layer widths ``sizes``.

    ``activation_id`` is the registry position of the activation
    (:func:`refscore.models.activations.kernel_id`); ``None`` means it has no
    kernel formulas, which the compiled samplers cannot run.
    """
    if activation_id is None:
        raise TypeError("this MLP's activation has no kernel formulas (not an activation registry "
                        "entry), so the compiled samplers cannot run it; use backend='numpy'")
    widths = list(sizes)
    work = 2 * max(widths) + sum(widths[1:-1])
    layout = _layout(MLP, widths[0], work, len(widths) - 1, activation_id, int(energy), widths)
    return _block(layout, theta, energy)
