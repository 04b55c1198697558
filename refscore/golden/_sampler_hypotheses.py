r"""The samplers' hypotheses of the golden diagnosis (internal): your trajectory, one step at a time.

A sampler case stores its noise, so each of your steps can be checked on its own: from *your*
state before step :math:`t` (the case's ``x0`` for :math:`t = 0`) and the stored noise of step
:math:`t`, refscore's step and every hypothesis predict your state after it.  One wrong step
then does not poison the others, and a hypothesis is named only when its one-step prediction
matches yours at every step of every failing case (to ten times the check's tolerance, the test
every hypothesis of :mod:`refscore.golden.diagnosis` passes).  Derivation of the variants:
docs/derivations.md §8 (ULA, MALA, annealing, kinetic Langevin) and §8.7.

:func:`patterns` says where the failure lies: the first step (and level) at which your step
departs from refscore's step taken from your previous state, and, for ULA and annealed
Langevin, the least-squares fit per level of

.. math::

    x_{k+1} - x_k = a\,\eta_l\, s_l(x_k) + b\,\sqrt{2\eta_l}\, z_k

over chains, coordinates, steps of the level and failing cases (refscore: :math:`a = b = 1`),
with its relative residual :math:`\lVert r - aA - bB\rVert / \lVert r\rVert`; for MALA, how your
moves relate to refscore's proposals and decisions.  :func:`structural` gives the hypotheses as
``[(label, explanation, predict, convention)]`` (the form of :mod:`refscore.golden._hypotheses`):

* every sampler: a step in another convention of :data:`refscore.conventions.TABLE` (a
  conversion of the step, applied in the direction its row means: your sampler is the row's
  variant, given refscore's step);
* ULA and annealed Langevin: noise :math:`\sqrt\eta` (:math:`b = 1/\sqrt2`); a temperature
  (:math:`a = 1`, :math:`b = \sqrt T` with :math:`T \ne 1/2`); annealed only: the noise not annealed
  (:math:`b_l = \sqrt{\eta/\eta_l}`, the base step's noise at every level) and the step not
  annealed (:math:`a_l = b_l^2 = \eta/\eta_l`); any other constant :math:`(a, b)` fitted on your
  steps, as a step scale (:math:`a = b^2`) or as decoupled drift and noise;
* MALA: no proposal correction, its sign flipped, over :math:`2\eta`; the accept rule reversed;
  no accept test at all (ULA's move);
* kinetic Langevin: another splitting, a friction conversion of the ledger (blackjax's
  decoherence length :math:`L = 1/\gamma`), a missing half step (one letter of a doubled pair
  dropped), the refresh over the wrong time (:math:`e^{-\gamma h}` where :math:`e^{-\gamma h/2}`
  belongs, or the reverse), and the refresh noise :math:`\sqrt{1 - c}` for :math:`\sqrt{1 - c^2}`.

No sampler of the registry has a corrector and a predictor, so no order of the two is tested.
"""
from __future__ import annotations

import math

import numpy as np

from .. import conventions
from ..noise import log_unit
from ..sampling.samplers import SAMPLERS
from ..sampling.steps import annealed_level_steps, mala_log_alpha
from .cases import iterate_kinetic_steps, mala_ratio_parts

__all__ = ["structural", "patterns"]


def _fixed(row_name, function_name):
    """A convention named outright: ``(row, function)``."""
    return lambda Q: (row_name, function_name)


def _g4(v) -> str:
    return f"{v:.4g}"


def _conversions(word, extra=()) -> list:
    """``[(row, conversion)]``: the ledger's conversions returning ``word`` (refscore's step, base step or
    friction), read in the direction of each row: your sampler is the row's variant given refscore's
    number ``v``, so it runs refscore's with ``conversion.function(v)``, and ``conversion.inverse(v)`` is
    what to give it.  Only conversions of the value alone (or of the words ``extra`` a case provides)."""
    out = []
    for row in conventions.TABLE:
        for conv in row.conversions:
            if word in conv.converts and conv.inverse is not None and set(conv.needs) <= set(extra):
                out.append((row, conv))
    return out


class _Overdamped:
    r"""ULA or annealed Langevin (any overdamped entry of the registry) from your states, per level.

    The entry's own step (``SAMPLERS[kind].step``) is called at your state ``x_t`` before step ``t``:
    ``R[t]`` with the stored noise is refscore's step, and it splits into its drift part
    ``A[t] = step(x_t, z = 0) - x_t`` (:math:`\eta_l s_l(x_t)` for eq. (4)) and its noise part
    ``B[t] = R[t] - step(x_t, z = 0)`` (:math:`\sqrt{2\eta_l} z_t`).
    """

    def __init__(self, c, yours):
        self.sampler, target = SAMPLERS[c.kind], c.target
        self.c, self.yours = c, yours
        z = c.inputs["z"]
        T, n, d = z.shape
        self.prev = np.concatenate([c.inputs["x0"][None], yours[:-1]])
        self.base = float(c.inputs["step"])
        if self.sampler.noise_levels:
            sigmas = tuple(float(s) for s in c.inputs["sigmas"])
            p = target.perturbed()
            self.levels = [{"score": (lambda x, s=s: p.score(x, s)), "sigma": s, "sigmas": sigmas} for s in sigmas]
            self.etas = [float(e) for e in annealed_level_steps(self.base, sigmas)]
        else:
            self.levels, self.etas = [{"score": target.score}], [self.base]
        per = T // len(self.levels)
        self.level_of = np.repeat(np.arange(len(self.levels)), per)
        self.R = self.run()
        drift = self.run(noise=0.0)
        self.A, self.B = drift - self.prev, self.R - drift

    def run(self, step=None, noise=1.0, level_steps=True):
        """The entry's step from each of your states, at ``step`` (the stored one by default), with
        ``noise`` times the stored noise; ``level_steps=False`` passes each level as the only one."""
        z = self.c.inputs["z"]
        T, n, d = z.shape
        per = T // len(self.levels)
        out = np.empty_like(z)
        for i, given in enumerate(self.levels):
            rows = slice(i * per, (i + 1) * per)
            args = {**given, "step": self.base if step is None else step, "z": noise * z[rows].reshape(-1, d)}
            if not level_steps:
                args["sigmas"] = (given["sigma"],)
            x = self.prev[rows].reshape(-1, d)
            out[rows] = self.sampler.step(x, **{k: args[k] for k in self.sampler.inputs}).reshape(per, n, d)
        return out

    def predict(self, a, b):
        """Your states if each step were ``x + a_l A + b_l B`` (``a``, ``b``: one number per level)."""
        a = np.asarray(a, dtype=float)[self.level_of][:, None, None]
        b = np.asarray(b, dtype=float)[self.level_of][:, None, None]
        return self.prev + a * self.A + b * self.B

    def refscore(self):
        return self.R

    def ratio(self, l):
        """eta / eta_l of level ``l``: the base step over the level's."""
        return self.base / self.etas[l]


def _overdamped(ctx, c):
    yours = ctx.yours(c, "states")
    if yours is None:
        return None
    return ctx.cached(("sampler-steps", c.name), lambda: _Overdamped(c, yours))


def _fit(parts):
    """Least squares of ``r = y - x`` on ``[A, B]`` over the arrays of ``parts`` [(r, A, B)]: ``(a, b, residual)``
    with the residual relative to ``||r||`` (NaN when the regressors are degenerate)."""
    r = np.concatenate([p[0].ravel() for p in parts])
    M = np.stack([np.concatenate([p[1].ravel() for p in parts]), np.concatenate([p[2].ravel() for p in parts])], 1)
    coef, _, rank, _ = np.linalg.lstsq(M, r, rcond=None)
    if rank < 2:
        return float("nan"), float("nan"), float("nan")
    res = np.linalg.norm(r - M @ coef) / max(np.linalg.norm(r), 1e-300)
    return float(coef[0]), float(coef[1]), float(res)


def _level_fits(steps) -> list:
    """Per level: ``(a, b, residual)`` fitted jointly over the cases ``steps`` (:class:`_Overdamped`)."""
    out = []
    for l in range(len(steps[0].levels)):
        parts = []
        for s in steps:
            m = s.level_of == l
            parts.append((s.yours[m] - s.prev[m], s.A[m], s.B[m]))
        out.append(_fit(parts))
    return out


# ------------------------------------------------------------------ MALA from your states
class _Mala:
    """MALA from your states: the proposal of each step, and the pieces of its ratio."""

    def __init__(self, c, yours, step=None):
        target = c.target
        self.c, self.yours = c, yours
        self.prev = np.concatenate([c.inputs["x0"][None], yours[:-1]])
        self.step = float(c.inputs["step"]) if step is None else float(step)
        T, n, d = self.prev.shape
        x = self.prev.reshape(T * n, d)
        eta = self.step
        s_x = target.score(x)
        y = x + eta * s_x + math.sqrt(2.0 * eta) * c.inputs["z"].reshape(T * n, d)
        lp_x, lp_y = target.logpdf(x), target.logpdf(y)
        log_alpha = mala_log_alpha(x, y, s_x, target.score(y), lp_x, lp_y, eta)
        self.y = y.reshape(T, n, d)
        self.density = (lp_y - lp_x).reshape(T, n)
        self.correction = self.density - log_alpha.reshape(T, n)  # log_alpha = density - correction
        self.log_u = log_unit(c.inputs["u"])

    def moves(self, accept):
        return np.where(accept[..., None], self.y, self.prev)

    def ratio(self, k):
        """log p(y) - log p(x) + k C: refscore's ratio has k = -1."""
        return self.density + k * self.correction


def _mala(ctx, c, step=None):
    """:class:`_Mala` of case ``c`` at ``step`` (the stored one by default), or None when your states are
    not comparable, or when the entry's step is not MALA's (the variants here are MALA's)."""
    yours = ctx.yours(c, "states")
    if yours is None or not ctx.cached(("sampler-mala-is-entry", c.name), lambda: _mala_is_entry(c, yours)):
        return None
    return ctx.cached(("sampler-mala", c.name, step), lambda: _Mala(c, yours, step))


def _mala_is_entry(c, yours) -> bool:
    """The registry entry's step at your states is MALA's as :class:`_Mala` computes it (to round-off)."""
    m, sampler, target = _Mala(c, yours), SAMPLERS[c.kind], c.target
    T, n, d = m.prev.shape
    args = {"score": target.score, "log_prob": target.logpdf, "step": m.step,
            "z": c.inputs["z"].reshape(T * n, d), "u": c.inputs["u"].reshape(T * n)}
    x_next, log_alpha = sampler.step(m.prev.reshape(T * n, d), **{k: args[k] for k in sampler.inputs})
    mine = m.moves(m.log_u < m.ratio(-1.0)).reshape(T * n, d)
    return bool(np.allclose(x_next, mine, rtol=1e-12, atol=1e-12)
                and np.allclose(log_alpha, m.ratio(-1.0).ravel(), rtol=1e-12, atol=1e-12))


# ------------------------------------------------------------------ kinetic Langevin from your states
_WORDS = ("BAOAB", "OBABO", "ABOBA")


def _letters(word, h) -> list:
    """``word`` as ``[(letter, tau, slot)]``: a letter appearing k times runs for ``h / k``; the O letters
    take the noise slots 0, 1 in order (``xi[..., :d]``, ``xi[..., d:]``)."""
    out, o = [], 0
    for letter in word:
        out.append((letter, h / word.count(letter), o if letter == "O" else None))
        o += letter == "O"
    return out


def _kinetic_step(letters, q, p, score, gamma, xi, *, o_time=1.0, spread=None):
    """One step of ``letters`` (:func:`_letters`) from ``(q, p)``, unit mass.  ``o_time`` multiplies each
    O's time in its decay and noise; ``spread(c)`` is the O's noise coefficient (refscore's
    ``sqrt(1 - c^2)``, evaluated as ``sqrt(-expm1(-2 gamma tau))``)."""
    d = q.shape[-1]
    for letter, tau, slot in letters:
        if letter == "B":
            p = p + tau * score(q)
        elif letter == "A":
            q = q + tau * p
        else:
            c = math.exp(-gamma * tau * o_time)
            sigma = math.sqrt(-math.expm1(-2.0 * gamma * tau * o_time)) if spread is None else spread(c)
            p = c * p + sigma * xi[..., slot * d:(slot + 1) * d]
    return q, p


class _Kinetic:
    """Kinetic Langevin from your positions and momenta (both needed), one step at a time."""

    def __init__(self, c, states, momenta):
        self.c, self.target = c, c.target
        self.yours = {"states": states, "momenta": momenta}
        self.q0 = np.concatenate([c.inputs["x0"][None], states[:-1]])
        self.p0 = np.concatenate([c.inputs["v0"][None], momenta[:-1]])

    def predict(self, letters, gamma, **options):
        """``{"states", "momenta"}`` (T, c, d): each step of ``letters`` from your state before it."""
        T, n, d = self.q0.shape
        q, p = _kinetic_step(letters, self.q0.reshape(T * n, d), self.p0.reshape(T * n, d), self.target.score,
                             gamma, self.c.inputs["xi"].reshape(T * n, 2 * d), **options)
        return {"states": q.reshape(T, n, d), "momenta": p.reshape(T, n, d)}


def _kinetic(ctx, c):
    """:class:`_Kinetic` of case ``c``, or None when your states or momenta are not comparable, or when
    the entry's step is not the splitting these variants rewrite."""
    states, momenta = ctx.yours(c, "states"), ctx.yours(c, "momenta")
    if states is None or momenta is None or not _kinetic_is_entry(ctx, c):
        return None
    return ctx.cached(("sampler-kinetic", c.name), lambda: _Kinetic(c, states, momenta))


def _kinetic_is_entry(ctx, c) -> bool:
    """The registry entry's step, iterated over the case, is :func:`_kinetic_step` of its splitting (to
    round-off): the variants below rewrite that word."""
    def check():
        states, momenta = iterate_kinetic_steps(c.kind, c.target, c.inputs)
        mine = _kinetic_run(c, _letters(SAMPLERS[c.kind].splitting, float(c.inputs["step"])),
                            float(c.inputs["friction"]))
        return bool(np.allclose(mine["states"], states, rtol=1e-12, atol=1e-12)
                    and np.allclose(mine["momenta"], momenta, rtol=1e-12, atol=1e-12))
    return ctx.cached(("sampler-kinetic-is-entry", c.name), check)


def _kinetic_run(c, letters, gamma, **options):
    """The whole trajectory of a kinetic variant from the stored ``x0``, ``v0`` (when your momenta are
    not given, so that no step can start from your state)."""
    q, p = np.array(c.inputs["x0"], dtype=float), np.array(c.inputs["v0"], dtype=float)
    target, out = c.target, {"states": [], "momenta": []}
    for xi in c.inputs["xi"]:
        q, p = _kinetic_step(letters, q, p, target.score, gamma, xi, **options)
        out["states"].append(q)
        out["momenta"].append(p)
    return {k: np.array(v) for k, v in out.items()}


def _missing_half_steps(word) -> list:
    """``[(i, words)]``: the letter ``i`` of ``word`` that has a twin, dropped (the twin keeps its half step)."""
    out = []
    for i, letter in enumerate(word):
        if word.count(letter) == 2:
            where = "first" if word.index(letter) == i else "last"
            out.append((i, f"{word[:i] + word[i + 1:]} ({word} without its {where} {letter})"))
    return out


# ------------------------------------------------------------------ the hypotheses
def structural(ctx, Q):
    """The hypotheses of a failing sampler quantity (see the module), chosen by the properties its entry
    of :data:`refscore.sampling.samplers.SAMPLERS` declares; each predicts your values step by step."""
    sampler = SAMPLERS[Q.cases[0].kind]
    if sampler.splitting is not None:
        return _kinetic_hypotheses(ctx, Q) if Q.q in ("states", "momenta") else []
    if sampler.has_accept_test:
        return _mala_hypotheses(ctx, Q)
    return _overdamped_hypotheses(ctx, Q, sampler) if Q.q == "states" else []


def _step_ratio(c, f) -> float | None:
    """``f(step) / step`` for a case, or None where ``f`` gives no other positive step."""
    step = float(c.inputs["step"])
    new = float(f(step))
    if not (new > 0 and math.isfinite(new)) or new == step:
        return None
    return new / step


def _convention_hypotheses(Q, word, predict_at, what):
    """The ledger's conversions of ``word`` as hypotheses: ``predict_at(c, ratio)`` is your values when
    your sampler runs at ``ratio`` times the stored number (None where it cannot)."""
    out = []
    for row, conv in _conversions(word):
        f, inv = conv.function, conv.inverse
        if not all(_step_ratio(c, f) is not None for c in Q.cases):
            continue  # the identity here (NCSN's code step is refscore's): nothing to tell apart

        def predict(c, f=f):
            ratio = _step_ratio(c, f)
            return None if ratio is None else predict_at(c, ratio)

        name = f.__name__
        constant = float(f(1.0))
        how = f" = {_g4(constant)} {what}" if all(
            math.isclose(float(f(float(c.inputs[what]))), constant * float(c.inputs[what]), rel_tol=1e-12)
            for c in Q.cases) else ""
        out.append((f"Langevin step {name}({what})",
                    f"your run is refscore's at {what} {name}({what}){how}: your sampler is the variant "
                    f"{row.variant!r}; give it {inv.__name__}({what})", predict, _fixed(row.quantity, inv.__name__)))
    return out


def _overdamped_hypotheses(ctx, Q, sampler):
    annealed = sampler.noise_levels

    def steps(c):
        return _overdamped(ctx, c)

    def at(a_of, b_of):
        """A prediction with ``a_of(s, l)``, ``b_of(s, l)`` per level ``l`` of the case's steps ``s``."""
        def predict(c):
            s = steps(c)
            if s is None:
                return None
            L = len(s.levels)
            return s.predict([a_of(s, l) for l in range(L)], [b_of(s, l) for l in range(L)])
        return predict

    def run(**options):
        def predict(c):
            s = steps(c)
            return None if s is None else s.run(**options)
        return predict

    out = []
    # a step convention: the entry's step at ratio * step
    words = ("annealed_step", "step") if annealed else ("step",)
    for word in words:
        out += _convention_hypotheses(
            Q, word, lambda c, r: run(step=r * float(c.inputs["step"]))(c), "step")
    out.append(("noise sqrt(eta)", "x + eta s + sqrt(eta) z where refscore's update is x + eta s + sqrt(2 eta) z "
                "(the lr-form's noise with the eta-form's drift; the same as temperature 1/2)",
                run(noise=math.sqrt(0.5)), _fixed("Langevin temperature", "tempered_step")))
    if annealed:
        out.append(("noise not annealed", "x + eta_i s(x, sigma_i) + sqrt(2 eta) z: the base step eta's noise at every "
                    "level, where refscore's eta_i = step sigma_i^2 / sigma_L^2 scales the noise as well, "
                    "sqrt(2 eta_i)", at(lambda s, l: 1.0, lambda s, l: math.sqrt(s.ratio(l))), None))
        out.append(("one step for every level", "every level runs the stored step, where refscore's "
                    "eta_i = step sigma_i^2 / sigma_L^2 grows with sigma_i (the step not annealed)",
                    run(level_steps=False), None))
    # constants fitted on your steps: a temperature, or drift and noise scaled apart
    fitted = [s for s in (steps(c) for c in Q.cases) if s is not None]
    if len(fitted) == len(Q.cases) and fitted:
        fits = _level_fits(fitted)
        a = [f[0] for f in fits]
        b = [f[1] for f in fits]
        if all(math.isfinite(v) for v in a + b):
            b_med, a_med = float(np.median(b)), float(np.median(a))
            T = b_med * b_med
            # a constant within 1e-6 of refscore's is round-off (float32 is 6e-8), not a variant
            if b_med > 0 and not math.isclose(T, 0.5, rel_tol=1e-6) and not math.isclose(T, 1.0, rel_tol=1e-6):
                out.append((f"temperature {_g4(T)}", f"x + eta s + sqrt(2 eta T) z with T = {_g4(T)} (b = sqrt T = "
                            f"{_g4(b_med)}): a tempered chain, which samples p^(1/T)",
                            at(lambda s, l: 1.0, lambda s, l, b=b_med: b), _fixed("Langevin temperature",
                                                                                  "tempered_step")))
            if math.isclose(a_med, b_med * b_med, rel_tol=1e-9) and not math.isclose(a_med, 1.0, rel_tol=1e-6):
                out.append((f"step x{_g4(a_med)}", f"x + r eta s + sqrt(2 r eta) z with r = {_g4(a_med)}: refscore's "
                            "update at r times the stored step, drift and noise scaled together",
                            at(lambda s, l, a=a_med: a, lambda s, l, b=b_med: b), None))
            elif not math.isclose(a_med, 1.0, rel_tol=1e-6):  # a = 1 is a temperature, above
                out.append((f"drift x{_g4(a_med)} and noise x{_g4(b_med)}",
                            f"x + a eta s + b sqrt(2 eta) z with a = {_g4(a_med)}, b = {_g4(b_med)} at every level: "
                            f"refscore's update at step b^2 eta on p^(a/b^2) = p^{_g4(a_med / (b_med * b_med))}",
                            at(lambda s, l, a=a_med: a, lambda s, l, b=b_med: b),
                            _fixed("Decoupled step and noise", "decoupled_step")))
    return out


def _mala_hypotheses(ctx, Q):
    if Q.q == "log_alpha":  # MALA's ratio at refscore's states
        def ratio(c, correction):
            """log p(y) - log p(x) + correction * C, where refscore's ratio has correction -1: with
            log_alpha = log p(y) - log p(x) - C, C is the proposal term of refscore.sampling.steps."""
            prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
            density, log_alpha = mala_ratio_parts(c.target, prev, c.inputs["z"], float(c.inputs["step"]))
            return density + correction * (density - log_alpha)

        return [("no proposal correction", "log p(y) - log p(x) alone: the Metropolis ratio of a symmetric "
                 "proposal, but the Langevin proposal is not symmetric", lambda c: ratio(c, 0.0), None),
                ("proposal correction sign flipped", "+ (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
                 "where refscore subtracts it (forward and backward proposals swapped)",
                 lambda c: ratio(c, 1.0), None),
                ("proposal correction over 2 eta", "the proposal log-density with 1/(2 eta) where the variance "
                 "2 eta gives 1/(4 eta)", lambda c: ratio(c, -2.0), None)]
    if Q.q == "accept":  # your decisions at refscore's states
        def decisions(c, rule):
            prev = np.concatenate([c.inputs["x0"][None], c.quantities["states"][:-1]])
            density, log_alpha = mala_ratio_parts(c.target, prev, c.inputs["z"], float(c.inputs["step"]))
            return rule(log_unit(c.inputs["u"]), density, density - log_alpha).astype(float)

        return [("no proposal correction", "accepted iff log u < log p(y) - log p(x): the ratio of a symmetric "
                 "proposal", lambda c: decisions(c, lambda lu, dens, C: lu < dens), None),
                ("accept rule reversed", "accepted iff log u > log_alpha, where refscore accepts iff log u < log_alpha",
                 lambda c: decisions(c, lambda lu, dens, C: lu >= dens - C), None),
                ("no accept test", "every proposal accepted: ULA's move, no Metropolis-Hastings correction",
                 lambda c: np.ones_like(c.quantities["accept"]), None)]
    if Q.q != "states":
        return []

    def rule(correction=-1.0, reversed_=False, always=False, step=None):
        def predict(c):
            m = _mala(ctx, c, step if step is None else step(c))
            if m is None:
                return None
            if always:
                return m.y
            la = m.ratio(correction)
            accept = (m.log_u >= la) if reversed_ else (m.log_u < la)
            return m.moves(accept)
        return predict

    out = []
    for row, conv in _conversions("step"):
        f, inv = conv.function, conv.inverse
        if all(_step_ratio(c, f) is not None for c in Q.cases):
            const = float(f(1.0))
            out.append((f"Langevin step {f.__name__}(step)", f"your MALA runs refscore's at step {f.__name__}(step) = "
                        f"{_g4(const)} step: your sampler is the variant {row.variant!r}; give it "
                        f"{inv.__name__}(step)", rule(step=lambda c, f=f: float(f(float(c.inputs["step"])))),
                        _fixed(row.quantity, inv.__name__)))
    out += [("no proposal correction", "accepted iff log u < log p(y) - log p(x): the Metropolis ratio of a "
             "symmetric proposal, but the Langevin proposal is not symmetric", rule(0.0), None),
            ("proposal correction sign flipped", "+ (||x - y - eta s(y)||^2 - ||y - x - eta s(x)||^2) / (4 eta) "
             "where refscore subtracts it (forward and backward proposals swapped)", rule(1.0), None),
            ("proposal correction over 2 eta", "the proposal log-density with 1/(2 eta) where the variance 2 eta "
             "gives 1/(4 eta)", rule(-2.0), None),
            ("accept rule reversed", "accepted iff log u > log_alpha, where refscore accepts iff log u < log_alpha",
             rule(reversed_=True), None),
            ("no accept test", "every proposal accepted: ULA's move, the Metropolis-Hastings correction missing",
             rule(always=True), None)]
    return out


def _kinetic_hypotheses(ctx, Q):
    q = Q.q

    def variant(word=None, drop=None, gamma_of=None, **options):
        """Your ``q`` if each step ran ``word`` (this case's by default) without its letter ``drop``, at
        friction ``gamma_of(c)`` (None: the case's, or no prediction when ``gamma_of`` gives None)."""
        def predict(c):
            h, gamma = float(c.inputs["step"]), float(c.inputs["friction"])
            if gamma_of is not None:
                gamma = gamma_of(c)
                if gamma is None:
                    return None
            letters = _letters(word or SAMPLERS[c.kind].splitting, h)
            if drop is not None:
                letters = letters[:drop] + letters[drop + 1:]
            k = _kinetic(ctx, c)
            if k is not None:
                both = k.predict(letters, gamma, **options)
                # a step's positions do not see its last kick or refresh: the other quantity must fit too
                other = "momenta" if q == "states" else "states"
                return both[q] if _agrees(ctx, both[other], k.yours[other]) else None
            if ctx.yours(c, "momenta") is None and _kinetic_is_entry(ctx, c):  # whole trajectories from x0, v0
                return _kinetic_run(c, letters, gamma, **options)[q]
            return None
        return predict

    own = SAMPLERS[Q.cases[0].kind].splitting
    out = []
    for other in _WORDS:
        if other != own:
            out.append((f"splitting {other}", f"your step is {other} where this case's is {own} (the same sub-flows "
                        "in another order)", variant(other), None))
    for row, conv in _conversions("friction"):
        f, inv = conv.function, conv.inverse

        def gamma_of(c, f=f):
            gamma = float(c.inputs["friction"])
            new = float(f(gamma))
            return new if new >= 0 and math.isfinite(new) and new != gamma else None

        out.append((f"friction {f.__name__}(friction)", f"your step runs refscore's at friction "
                    f"{f.__name__}(friction): your sampler is the variant {row.variant!r}; give it "
                    f"{inv.__name__}(friction)", variant(gamma_of=gamma_of), _fixed(row.quantity, inv.__name__)))
    for i, words in _missing_half_steps(own):
        out.append((f"missing half step: {words.split(' ')[0]}", f"your step runs {words}: a half step left out",
                    variant(drop=i), None))
    o_runs, wrong = ("h/2", "h") if own == "OBABO" else ("h", "h/2")
    out.append((f"refresh over {wrong}", f"the refresh coefficient c = exp(-gamma {wrong}) (and its noise "
                f"sqrt(1 - c^2)) where this splitting's O runs {o_runs}: c = exp(-gamma {o_runs})",
                variant(o_time=2.0 if own == "OBABO" else 0.5), None))
    out.append(("refresh noise sqrt(1 - c)", "p <- c p + sqrt(1 - c) xi where the Ornstein-Uhlenbeck refresh keeps "
                "N(0, 1) with sqrt(1 - c^2)", variant(spread=lambda c: math.sqrt(1.0 - c)), None))
    return out


def _agrees(ctx, predicted, yours) -> bool:
    """Your values are the prediction to the tolerance a hypothesis's fit is held to (ten times the check's)."""
    tr = max(10 * ctx.rtol, 1e-9)
    ta = max(10 * ctx.atol, 1e-9 * float(np.max(np.abs(predicted), initial=0.0)))
    return bool(np.all(np.abs(yours - predicted) <= ta + tr * np.abs(predicted)))


# ------------------------------------------------------------------ where the failure lies
def _departure(ctx, c, predicted, yours):
    """The first step ``t`` where your state departs from the predicted one (to the check's tolerance),
    or None."""
    bad = np.abs(yours - predicted) > ctx.atol + ctx.rtol * np.abs(predicted)
    steps = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    return int(steps[0]) if steps.size else None


def _where(c, t) -> str:
    sampler = SAMPLERS[c.kind]
    if not sampler.noise_levels:
        return f"step {t}"
    L = len(c.inputs["sigmas"])
    per = c.inputs["z"].shape[0] // L
    return f"step {t} (level {t // per + 1} of {L}, sigma = {_g4(float(c.inputs['sigmas'][t // per]))})"


def _departures(ctx, Q, first) -> str | None:
    """``"departs at step 3 (level 1 of 3, sigma = 2)"`` over the failing cases, from ``first(c)``
    (None: the case could not be stepped; -1: no step departs)."""
    found = {c.name: first(c) for c in Q.cases}
    if not found or any(t is None for t in found.values()):
        return None
    if all(t == -1 for t in found.values()):
        return ("every step agrees with refscore's step from your previous state: the difference accumulates "
                "along the chain (round-off amplified, or a chaotic target)")
    groups = {}
    for c in Q.cases:
        t = found[c.name]
        groups.setdefault("no step" if t == -1 else _where(c, t), []).append(c.name)
    if len(groups) == 1:
        where, first_step = next(iter(groups)), min(found.values())
        if first_step == 0:
            return f"departs at {where}: your first step, from x0"
        return f"departs at {where}, each step taken from your previous state: the steps before it agree"
    return "departs at " + "; ".join(f"{w} in {', '.join(names)}" for w, names in groups.items())


def patterns(ctx, Q, failing) -> tuple:
    """Where along the trajectory a failing sampler quantity departs, and the one-step fit (see the module)."""
    sampler = SAMPLERS[Q.cases[0].kind] if Q.cases else None
    if sampler is None or Q.q not in ("states", "momenta"):
        return ()
    out = []
    if sampler.splitting is not None:
        departs = {}  # case -> (first step of the positions, of the momenta), -1 for none

        def first(c):
            k = _kinetic(ctx, c)
            if k is None:
                return None
            ref = k.predict(_letters(SAMPLERS[c.kind].splitting, float(c.inputs["step"])),
                            float(c.inputs["friction"]))
            t = [_departure(ctx, c, ref[key], k.yours[key]) for key in ("states", "momenta")]
            departs[c.name] = tuple(-1 if v is None else v for v in t)
            t = [v for v in t if v is not None]
            return min(t) if t else -1
        where = _departures(ctx, Q, first)
        out += [where] if where else []
        if where and departs and all(ts == -1 and tm >= 0 for ts, tm in departs.values()):
            out.append("each of your steps moves the positions as refscore's does from your state; only the "
                       "momenta depart (what follows the step's last drift: its last kick or refresh)")
        return tuple(out)
    if sampler.has_accept_test:
        def first(c):
            m = _mala(ctx, c)
            if m is None:
                return None
            t = _departure(ctx, c, m.moves(m.log_u < m.ratio(-1.0)), m.yours)
            return -1 if t is None else t
        where = _departures(ctx, Q, first)
        out += [where] if where else []
        summary = _mala_summary(ctx, Q)
        out += [summary] if summary else []
        return tuple(out)

    def first(c):
        s = _overdamped(ctx, c)
        if s is None:
            return None
        t = _departure(ctx, c, s.refscore(), s.yours)
        return -1 if t is None else t
    where = _departures(ctx, Q, first)
    out += [where] if where else []
    steps = [_overdamped(ctx, c) for c in Q.cases]
    if steps and all(s is not None for s in steps):
        fits = _level_fits(steps)
        # below 1e-12 the residual is round-off, whose digits depend on the machine: not printed
        per = [f"a = {_g4(a)}, b = {_g4(b)} " + ("(exact to round-off)" if res < 1e-12 else f"(residual {res:.2g})")
               for a, b, res in fits]
        if len(per) == 1:
            out.append(f"one-step fit x' - x = a eta s(x) + b sqrt(2 eta) z: {per[0]} (refscore: a = b = 1)")
        else:
            out.append("one-step fit x' - x = a eta_i s(x, sigma_i) + b sqrt(2 eta_i) z per level: "
                       + "; ".join(f"level {l + 1}: {p}" for l, p in enumerate(per)) + " (refscore: a = b = 1)")
    return tuple(out)


def _mala_summary(ctx, Q) -> str | None:
    """How your moves relate to refscore's proposals from your states: decisions differ, or the proposal."""
    moved_elsewhere = flipped = total = 0
    accepts_more = 0
    for c in Q.cases:
        m = _mala(ctx, c)
        if m is None:
            return None
        ref_accept = m.log_u < m.ratio(-1.0)
        stayed = np.all(m.yours == m.prev, axis=-1)
        took = np.all(np.abs(m.yours - m.y) <= ctx.atol + ctx.rtol * np.abs(m.y), axis=-1) & ~stayed
        moved_elsewhere += int(np.count_nonzero(~stayed & ~took))
        flipped += int(np.count_nonzero((took & ~ref_accept) | (stayed & ref_accept)))
        accepts_more += int(np.count_nonzero(took & ~ref_accept))
        total += stayed.size
    if moved_elsewhere:
        return (f"your chain moves off refscore's proposal from your state at {moved_elsewhere} of {total} chain-steps "
                "(the proposal, not only the decision, differs)")
    if flipped:
        return (f"your chain takes refscore's proposals; {flipped} of {total} accept decisions differ ({accepts_more} "
                f"accepted where refscore rejects, {flipped - accepts_more} rejected where it accepts)")
    return None
