r"""Score (and log-density) of every target kind, evaluated on a BLOCK of chains.

Derivation: docs/derivations.md §7.5, §8 (kinetic Langevin: §8.6).

One source, compiled twice: :func:`make` takes ``numba.njit`` (CPU: blocks of
``B`` chains, the chain loop innermost so LLVM vectorises it) or
``numba.cuda.jit(device=True)`` (GPU: a "block" of one chain held in a
thread's local arrays), and composes the kernels from one small builder per
target kind (``_affine``, ``_mixture``, ``_student``, ``_banana``, ``_mlp``),
the dispatch on the kind (``_evaluate``), the update (``_step_block``),
MALA's ratio (``_mala_log_alpha``) and kinetic Langevin's sub-flows (the kick,
drift and refresh of docs/derivations.md §8.6, the safe score points and the
phase-space divergence test).  Points are stored transposed, ``X[i, c]`` =
coordinate ``i`` of chain ``c`` of the block, ``m`` chains in use.

Every target is described by ``(layout, params)`` built once in
:mod:`refscore.sampling.targets`:

``layout`` (int64): ``[kind, d, work_rows, a, b, c, ...]``;
``params`` (float64, flat) as listed per kind:

=========  ==================================================================
kind       params (flat) and the score computed
=========  ==================================================================
AFFINE 0   ``[A (d*d row-major), m (d), b (d)]``: :math:`s = A(x-m) + b`;
           :math:`\log p = \tfrac12 u^\top(s + b)`, :math:`u = x - m` (A symmetric)
MIX 1      layout ``a = k``, ``b = iso``; per component ``[c_j, tau_j, mu_j]``
           (iso) or ``[c_j, mu_j, P_j (d*d)]``: :math:`\ell_j = c_j - \tfrac12
           u_j^\top P_j u_j`, :math:`s = \sum_j \mathrm{softmax}(\ell)_j (-P_j u_j)`,
           :math:`\log p = \mathrm{logsumexp}_j \ell_j`
STUDENT 2  ``[nu, const, mu (d), P (d*d)]``: :math:`s = -\frac{\nu+d}{\nu+q}Pu`,
           :math:`\log p = c - \frac{\nu+d}{2}\log(1 + q/\nu)`
BANANA 3   ``[b, sigma1, const]``: :math:`y = x_2 + b(x_1^2 - \sigma_1^2)`,
           :math:`s = (-x_1/\sigma_1^2 - 2bx_1y,\ -y)`
MLP 4      layout ``a = n_layers``, ``b = activation id``, ``c = energy``, then
           the widths ``d, h_1, ..., out``; params = theta (per layer
           ``W.ravel()`` then ``b``).  Score MLP: linear output;
           energy MLP: :math:`s = -\nabla_x E`, :math:`\log p = -E`
=========  ==================================================================
"""
from __future__ import annotations

import math
import types

import numpy as np

from . import philox
from .ids import AFFINE, BANANA, HEADER, MIX, MLP, STUDENT

__all__ = ["make", "GROWTH_BOUND", "RUNNING", "DIVERGED", "NONFINITE", "BEYOND_BOUND",
           "FAULT_NONE", "FAULT_SCORE_RAISED", "FAULT_SCORE_LENGTH", "FAULT_LOGPDF_RAISED",
           "KICK", "DRIFT", "REFRESH"]

_U0 = np.uint64(0)

#: A finite state with a coordinate beyond this magnitude counts as diverged
#: (docs/derivations.md §8.5).  Squares overflow float64 above ~1.34e154, so
#: the quadratic forms of the scores and log-densities (``u^T P u``, MALA's
#: ``||x - y - eta s||^2``) stop being finite a little above this bound; it
#: leaves them a factor of 1e8 (for d and the precision's entries) and is far
#: beyond the scale of any target a sampler can represent.  A chain there has
#: grown by over 1e100 from any sane start: it is exploding, not sampling.
GROWTH_BOUND = 1e150

# A chain's status (int8, the kernels' ``status`` array), written by every backend.
#: still running
RUNNING = 0
#: frozen, cause not recorded (a backend handed a boolean ``diverged`` array)
DIVERGED = 1
#: frozen: its update produced a non-finite value
NONFINITE = 2
#: frozen: its update left ``|x_i| <= GROWTH_BOUND`` with finite values
BEYOND_BOUND = 3

# Why a kernel calling a user's compiled functions stopped a chain (``fault[c, 0]``).
FAULT_NONE = 0
FAULT_SCORE_RAISED = 1
FAULT_SCORE_LENGTH = 2
FAULT_LOGPDF_RAISED = 3

# The letters of a kinetic Langevin splitting (docs/derivations.md §8.6), as the kernels read a word:
#: B, the kick p <- p + tau s(q)
KICK = 0
#: A, the drift q <- q + (tau / m) p
DRIFT = 1
#: O, the refresh p <- c p + sigma xi
REFRESH = 2


def make(jit, activation, jit_inline=None, exp_nonpositive=None, activate_hidden=None):
    """Compile the block kernels with decorator ``jit``; returns a namespace.

    ``activation`` is the compiled ``(kind, z) -> (φ, φ', φ'')`` of
    :func:`.activation_table.compile_activation`: on the CPU over the
    branch-free tanh/exp of :mod:`.vecmath` (so the chain loop of an MLP layer
    vectorises), on CUDA over libm.  ``jit_inline`` compiles the noise
    functions (Philox, Box–Muller) and the block updates; on the CPU it is
    ``njit(forceinline=True, error_model="numpy")`` (LLVM's ``alwaysinline``)
    so that the chain loop around a noise call is one straight-line body LLVM
    can vectorise.
    ``exp_nonpositive`` (optional, compiled, :func:`.vecmath.exp_nonpositive`
    on the CPU) replaces ``math.exp`` in the mixture's softmax, whose
    arguments are <= 0.  ``activate_hidden`` (optional, compiled,
    :func:`.activation_table.compile_activate_hidden`) activates an MLP target's
    hidden unit along the block's chains in one call; without it each chain
    calls ``activation`` (inlined: every formula in every copy, which on the CPU
    made the sampler kernels' compile twice as long).

    The kernels are composed from one builder per target kind (:func:`_affine`,
    :func:`_mixture`, :func:`_student`, :func:`_banana`, :func:`_mlp`; the
    namespace's ``by_kind`` maps each kind id to its function, for kernels that
    compile one kind only), joined by :func:`_evaluate`'s dispatch on the
    layout's kind, and the update and
    MALA ratio of :func:`_step_block` and :func:`_mala_log_alpha`.
    """
    inline = jit if jit_inline is None else jit_inline
    P = philox.make(inline)
    expnp = _libm_exp(jit) if exp_nonpositive is None else exp_nonpositive
    act = _hidden_activation(inline, activation)
    quad = _quad(jit)
    by_kind = {AFFINE: _affine(jit), MIX: _mixture(jit, quad, expnp), STUDENT: _student(jit, quad),
               BANANA: _banana(jit), MLP: _mlp(jit, act, activate_hidden)}
    evaluate = _evaluate(jit, affine=by_kind[AFFINE], mixture=by_kind[MIX], student=by_kind[STUDENT],
                         banana=by_kind[BANANA], mlp=by_kind[MLP])
    return types.SimpleNamespace(evaluate=evaluate, by_kind=by_kind, act=act, step_block=_step_block(inline, P.normal_pair),
                                 mala_log_alpha=_mala_log_alpha(inline), normal_pair=P.normal_pair,
                                 uniform=P.uniform, log_unit=P.log_unit, kick_block=_kick_block(inline),
                                 drift_block=_drift_block(inline), refresh_block=_refresh_block(inline, P.normal_pair),
                                 safe_points=_safe_points(inline), phase_check=_phase_check(inline))


# ------------------------------------------------------------------ shared parts
def _libm_exp(jit):
    """``exp`` of the mixture's softmax when no branch-free one is given (CUDA: libm)."""
    @jit
    def expnp(y):
        return math.exp(y)
    return expnp


def _hidden_activation(inline, activation):
    """``act(kind, z) -> (φ(z), φ'(z))`` of a hidden layer, from the compiled activation table."""
    @inline
    def act(kind, z):
        """(φ(z), φ'(z)) of hidden activation ``kind`` (its registry position)."""
        f, f1, _ = activation(kind, z)
        return f, f1
    return act


def _quad(jit):
    """``quad(d, p, off, X, U, T, m)``: ``U = X - mu``, ``T = P U`` of a Gaussian block (mixture, Student t)."""
    @jit
    def quad(d, p, off, X, U, T, m):
        """U = X - mu (mu at p[off:off+d]), T = P U (P at p[off+d:]), returns nothing."""
        for j in range(d):
            for c in range(m):
                U[j, c] = X[j, c] - p[off + j]
        for i in range(d):
            for c in range(m):
                T[i, c] = 0.0
            for j in range(d):
                a = p[off + d + i * d + j]
                for c in range(m):
                    T[i, c] += a * U[j, c]
    return quad


# ------------------------------------------------------------------ one builder per target kind
def _affine(jit):
    r"""AFFINE: :math:`s = A(x - m) + b`, :math:`\log p = \tfrac12 u^\top(s + b)`."""
    @jit
    def affine(lay, p, X, S, LP, W, m, want_logp):
        d = lay[1]
        offm = d * d
        offb = offm + d
        for j in range(d):
            for c in range(m):
                W[j, c] = X[j, c] - p[offm + j]
        for i in range(d):
            for c in range(m):
                S[i, c] = p[offb + i]
            for j in range(d):
                a = p[i * d + j]
                for c in range(m):
                    S[i, c] += a * W[j, c]
        if want_logp:
            for c in range(m):
                LP[c] = 0.0
            for i in range(d):
                for c in range(m):
                    LP[c] += W[i, c] * (S[i, c] + p[offb + i])
            for c in range(m):
                LP[c] *= 0.5
    return affine


def _mixture(jit, quad, expnp):
    r"""MIX: softmax-weighted component scores, :math:`\log p = \mathrm{logsumexp}_j \ell_j`."""
    @jit
    def mixture(lay, p, X, S, LP, W, m, want_logp):
        d = lay[1]
        k = lay[3]
        iso = lay[4]
        stride = d + 2 if iso else 1 + d + d * d
        # work rows: L (k), U (d), T (d), MX, SUM
        rU = k
        rT = k + d
        rM = k + 2 * d
        rS = rM + 1
        for c in range(m):
            W[rM, c] = -math.inf
        for j in range(k):
            o = j * stride
            if iso:
                tau = p[o + 1]
                for c in range(m):
                    W[j, c] = 0.0
                for i in range(d):
                    mu = p[o + 2 + i]
                    for c in range(m):
                        u = X[i, c] - mu
                        W[j, c] += u * u
                for c in range(m):
                    W[j, c] = p[o] - 0.5 * tau * W[j, c]
            else:
                quad(d, p, o + 1, X, W[rU:rU + d], W[rT:rT + d], m)
                for c in range(m):
                    W[j, c] = 0.0
                for i in range(d):
                    for c in range(m):
                        W[j, c] += W[rU + i, c] * W[rT + i, c]
                for c in range(m):
                    W[j, c] = p[o] - 0.5 * W[j, c]
            for c in range(m):
                W[rM, c] = max(W[rM, c], W[j, c])
        for c in range(m):
            W[rS, c] = 0.0
        for j in range(k):
            for c in range(m):
                W[j, c] = expnp(W[j, c] - W[rM, c])  # <= 0: the max was subtracted
                W[rS, c] += W[j, c]
        for i in range(d):
            for c in range(m):
                S[i, c] = 0.0
        for j in range(k):
            o = j * stride
            if iso:
                tau = p[o + 1]
                for i in range(d):
                    mu = p[o + 2 + i]
                    for c in range(m):
                        S[i, c] += W[j, c] * (-tau * (X[i, c] - mu))
            else:
                quad(d, p, o + 1, X, W[rU:rU + d], W[rT:rT + d], m)
                for i in range(d):
                    for c in range(m):
                        S[i, c] += W[j, c] * (-W[rT + i, c])
        for i in range(d):
            for c in range(m):
                S[i, c] = S[i, c] / W[rS, c]
        if want_logp:
            for c in range(m):
                LP[c] = W[rM, c] + math.log(W[rS, c])
    return mixture


def _student(jit, quad):
    r"""STUDENT: :math:`s = -\frac{\nu+d}{\nu+q}Pu`."""
    @jit
    def student(lay, p, X, S, LP, W, m, want_logp):
        d = lay[1]
        nu = p[0]
        quad(d, p, 2, X, W[0:d], W[d:2 * d], m)
        r = 2 * d
        for c in range(m):
            W[r, c] = 0.0
        for i in range(d):
            for c in range(m):
                W[r, c] += W[i, c] * W[d + i, c]
        for i in range(d):
            for c in range(m):
                S[i, c] = -((nu + d) / (nu + W[r, c])) * W[d + i, c]
        if want_logp:
            for c in range(m):
                LP[c] = p[1] - 0.5 * (nu + d) * math.log1p(W[r, c] / nu)
    return student


def _banana(jit):
    """BANANA: Haario's twisted Gaussian in two dimensions."""
    @jit
    def banana(lay, p, X, S, LP, W, m, want_logp):
        b = p[0]
        s1 = p[1]
        for c in range(m):
            x1 = X[0, c]
            y = X[1, c] + b * (x1 * x1 - s1 * s1)
            S[0, c] = -x1 / (s1 * s1) - 2.0 * b * x1 * y
            S[1, c] = -y
            if want_logp:
                LP[c] = -0.5 * (x1 / s1) ** 2 - 0.5 * y * y - p[2]
    return banana


def _mlp(jit, act, activate_hidden=None):
    r"""MLP: a score MLP (linear output) or an energy MLP (:math:`s = -\nabla_x E`, :math:`\log p = -E`).

    ``forward`` runs the layers, keeping the hidden layers' :math:`\varphi'`;
    ``energy_score`` back-propagates an energy's scalar output to :math:`-\nabla_x E`.
    """
    if activate_hidden is None:
        @jit
        def hidden(kind, W, row, drow, m):
            """phi and phi' of one hidden unit along the chains, chain by chain."""
            if kind == 0:  # tanh, the common case: a constant kind, one straight loop
                for c in range(m):
                    v, dv = act(0, W[row, c])
                    W[row, c] = v
                    W[drow, c] = dv
            else:
                for c in range(m):
                    v, dv = act(kind, W[row, c])
                    W[row, c] = v
                    W[drow, c] = dv
    else:
        @jit
        def hidden(kind, W, row, drow, m):
            """phi and phi' of one hidden unit along the chains, in one call per unit."""
            activate_hidden(kind, W[row], W[drow], m)

    @jit
    def forward(lay, p, X, W, m, wmax):
        """The layers on the block; returns ``(cur, off, dr)``: the output's ping-pong half,
        the offset past the last layer's parameters and the next free row of phi'."""
        nl = lay[3]
        ak = lay[4]
        # work rows: H0 (wmax), H1 (wmax), then phi'(a_l) for hidden layers
        rd = 2 * wmax
        cur = 0  # input lives in X; hidden outputs ping-pong in W[0:wmax], W[wmax:2wmax]
        off = 0
        dr = rd
        for l in range(nl):
            nin = lay[HEADER + l]
            nout = lay[HEADER + l + 1]
            boff = off + nout * nin
            last = l == nl - 1
            ro = (1 - cur) * wmax  # output rows
            for o in range(nout):
                bo = p[boff + o]
                for c in range(m):
                    W[ro + o, c] = bo
                for i in range(nin):
                    a = p[off + o * nin + i]
                    if l == 0:
                        for c in range(m):
                            W[ro + o, c] += a * X[i, c]
                    else:
                        ri = cur * wmax
                        for c in range(m):
                            W[ro + o, c] += a * W[ri + i, c]
                if not last:
                    hidden(ak, W, ro + o, dr + o, m)
            if not last:
                dr += nout
            cur = 1 - cur
            off = boff + nout
        return cur, off, dr

    @jit
    def energy_score(lay, p, S, W, m, wmax, cur, off, dr):
        """:math:`s = -\\nabla_x E` into ``S``, from the forward pass's state."""
        d = lay[1]
        nl = lay[3]
        nin = lay[HEADER + nl - 1]
        if nl == 1:  # no hidden layer: E = w.x + b, s = -w
            for i in range(d):
                for c in range(m):
                    S[i, c] = -p[i]
            return
        # backward: g (width of last hidden) = W_L[0, :] * phi'(a); then down
        woff = off - 1 - nin  # W_L is 1 x nin, followed by b_L (1)
        dr -= nin
        g = cur * wmax  # reuse the output buffer rows for g
        for i in range(nin):
            a = p[woff + i]
            for c in range(m):
                W[g + i, c] = a * W[dr + i, c]
        off2 = woff
        for l in range(nl - 2, -1, -1):
            nin = lay[HEADER + l]
            nout = lay[HEADER + l + 1]
            off2 -= nout * nin + nout   # start of W_l
            ng = (1 - cur) * wmax if l > 0 else -1
            if l > 0:
                dr -= nin
                for i in range(nin):
                    for c in range(m):
                        W[ng + i, c] = 0.0
                    for o in range(nout):
                        a = p[off2 + o * nin + i]
                        for c in range(m):
                            W[ng + i, c] += a * W[g + o, c]
                    for c in range(m):
                        W[ng + i, c] *= W[dr + i, c]
                cur = 1 - cur
                g = ng
            else:
                for i in range(d):
                    for c in range(m):
                        S[i, c] = 0.0
                    for o in range(nout):
                        a = p[off2 + o * nin + i]
                        for c in range(m):
                            S[i, c] -= a * W[g + o, c]

    @jit
    def mlp(lay, p, X, S, LP, W, m, want_logp):
        d = lay[1]
        nl = lay[3]
        energy = lay[5]
        wmax = 0
        for l in range(nl + 1):
            wmax = max(wmax, lay[HEADER + l])
        cur, off, dr = forward(lay, p, X, W, m, wmax)
        if energy == 0:
            for i in range(d):
                for c in range(m):
                    S[i, c] = W[cur * wmax + i, c]
            return
        if want_logp:
            for c in range(m):
                LP[c] = -W[cur * wmax, c]
        energy_score(lay, p, S, W, m, wmax, cur, off, dr)
    return mlp


# ------------------------------------------------------------------ dispatch, update, MALA ratio
def _evaluate(jit, affine, mixture, student, banana, mlp):
    """``evaluate(lay, ...)``: the score (and log p) of the block's target kind ``lay[0]``."""
    @jit
    def evaluate(lay, p, X, S, LP, W, m, want_logp):
        """Score of the first ``m`` chains of block ``X`` into ``S`` (and log p into ``LP``)."""
        kind = lay[0]
        if kind == AFFINE:
            affine(lay, p, X, S, LP, W, m, want_logp)
        elif kind == MIX:
            mixture(lay, p, X, S, LP, W, m, want_logp)
        elif kind == STUDENT:
            student(lay, p, X, S, LP, W, m, want_logp)
        elif kind == BANANA:
            banana(lay, p, X, S, LP, W, m, want_logp)
        elif kind == MLP:
            mlp(lay, p, X, S, LP, W, m, want_logp)
        else:  # an unknown kind scores NaN: the chains are flagged diverged, never silently wrong
            for i in range(lay[1]):
                for c in range(m):
                    S[i, c] = math.nan
    return evaluate


def _step_block(inline, normal_pair):
    """``step_block``: eq. (4) on a block, with the divergence test folded into ``ACC``."""
    @inline
    def step_block(X, S, ACC, m, d, eta, sc, sq, k0, k1, lo, g):
        """Eq. (4) for the m chains of a block: S <- X + eta*(sc*S) + sq*z.

        ``z`` = normal(seed, lo + c, g, i); ``ACC[c]`` becomes NaN when chain
        ``c``'s new state holds a non-finite value (0 * inf = NaN), else the
        number of its coordinates beyond ``GROWTH_BOUND`` (0: the step stands).
        """
        gg = np.uint64(g)
        for c in range(m):
            ACC[c] = 0.0
        for j in range(d // 2):
            jj = np.uint64(j)
            for c in range(m):
                z0, z1 = normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
                v0 = X[2 * j, c] + eta * (sc * S[2 * j, c]) + sq * z0
                v1 = X[2 * j + 1, c] + eta * (sc * S[2 * j + 1, c]) + sq * z1
                S[2 * j, c] = v0
                S[2 * j + 1, c] = v1
                ACC[c] += (v0 * 0.0 + v1 * 0.0) + ((1.0 if abs(v0) > GROWTH_BOUND else 0.0)
                                                   + (1.0 if abs(v1) > GROWTH_BOUND else 0.0))
        if d % 2 == 1:
            jj = np.uint64(d // 2)
            for c in range(m):
                z0, z1 = normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
                v0 = X[d - 1, c] + eta * (sc * S[d - 1, c]) + sq * z0
                S[d - 1, c] = v0
                ACC[c] += v0 * 0.0 + (1.0 if abs(v0) > GROWTH_BOUND else 0.0)
    return step_block


def _mala_log_alpha(inline):
    """``mala_log_alpha``: MALA's log acceptance ratio of one chain of a block."""
    @inline
    def mala_log_alpha(X, Y, S, SY, c, d, eta, lpx, lpy):
        r"""MALA's log acceptance ratio for chain ``c`` of a block (docs/derivations.md §8.3).

        :math:`\log p(y) - \log p(x) - (\|x - y - \eta s(y)\|^2 - \|y - x - \eta s(x)\|^2)/(4\eta)`
        with x, y, s(x), s(y) in column ``c`` of ``X``, ``Y``, ``S``, ``SY``.
        """
        fwd = 0.0
        bwd = 0.0
        for i in range(d):
            a = Y[i, c] - X[i, c] - eta * S[i, c]
            bb = X[i, c] - Y[i, c] - eta * SY[i, c]
            fwd += a * a
            bwd += bb * bb
        return lpy - lpx - (bwd - fwd) / (4.0 * eta)
    return mala_log_alpha


# ------------------------------------------------------------------ kinetic Langevin's sub-flows
# One letter of a splitting on a block (docs/derivations.md §8.6), in the arithmetic order of
# refscore.sampling.kinetic: ``p + tau * s``, ``q + (tau / m) * p``, ``c * p + sigma * xi``.
def _kick_block(inline):
    @inline
    def kick_block(PM, S, m, d, tau):
        """B: ``PM <- PM + tau * S`` on the first ``m`` chains."""
        for i in range(d):
            for c in range(m):
                PM[i, c] = PM[i, c] + tau * S[i, c]
    return kick_block


def _drift_block(inline):
    @inline
    def drift_block(Q, PM, m, d, drift):
        """A: ``Q <- Q + drift * PM``, ``drift = tau / m``."""
        for i in range(d):
            for c in range(m):
                Q[i, c] = Q[i, c] + drift * PM[i, c]
    return drift_block


def _refresh_block(inline, normal_pair):
    @inline
    def refresh_block(PM, m, d, decay, spread, k0, k1, lo, g, first):
        """O: ``PM[i] <- decay * PM[i] + spread * xi[first + i]``, ``xi = normal(seed, lo + c, g, .)``.

        Noise coordinate ``j`` is the ``j % 2``-th normal of Philox pair ``j // 2``, as in
        :func:`refscore.noise.normal` (a coordinate's value does not depend on the dimension drawn),
        so the second O of OBABO (``first = d``) starts inside a pair when ``d`` is odd.
        """
        gg = np.uint64(g)
        i = 0
        if first % 2 == 1:  # coordinate `first` is the second normal of its pair
            jj = np.uint64(first // 2)
            for c in range(m):
                z0, z1 = normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
                PM[0, c] = decay * PM[0, c] + spread * z1
            i = 1
        while i + 1 < d:
            jj = np.uint64((first + i) // 2)
            for c in range(m):
                z0, z1 = normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
                PM[i, c] = decay * PM[i, c] + spread * z0
                PM[i + 1, c] = decay * PM[i + 1, c] + spread * z1
            i += 2
        if i < d:  # the last coordinate is the first normal of its pair
            jj = np.uint64((first + i) // 2)
            for c in range(m):
                z0, z1 = normal_pair(k0, k1, np.uint64(lo + c), gg, jj, _U0)
                PM[i, c] = decay * PM[i, c] + spread * z0
    return refresh_block


def _safe_points(inline):
    @inline
    def safe_points(Q, X, QS, BAD, m, d):
        """``QS`` = ``Q`` for chains whose ``Q`` is finite and within ``GROWTH_BOUND``, else their state ``X``.

        The score is asked only at such points (the reference's rule, so that a chain about to freeze
        gets the same status code on every backend); ``BAD`` is scratch.
        """
        for c in range(m):
            BAD[c] = 0.0
        for i in range(d):
            for c in range(m):
                v = Q[i, c]
                BAD[c] += v * 0.0 + (1.0 if abs(v) > GROWTH_BOUND else 0.0)
        for i in range(d):
            for c in range(m):
                QS[i, c] = Q[i, c] if BAD[c] == 0.0 else X[i, c]
    return safe_points


def _phase_check(inline):
    @inline
    def phase_check(Q, PM, ACC, m, d):
        """``ACC[c]``: NaN when chain ``c``'s new ``(q, p)`` holds a non-finite value, else the number of
        its coordinates beyond ``GROWTH_BOUND`` (0: the step stands), as :func:`_step_block` does for ULA."""
        for c in range(m):
            ACC[c] = 0.0
        for i in range(d):
            for c in range(m):
                a = Q[i, c]
                b = PM[i, c]
                ACC[c] += (a * 0.0 + b * 0.0) + ((1.0 if abs(a) > GROWTH_BOUND else 0.0)
                                                 + (1.0 if abs(b) > GROWTH_BOUND else 0.0))
    return phase_check
