"""The per-step sampler diagnosis of refscore check: each injected sampler bug is named, and only it.

Each foreign sampler below is written here, by hand, from the update it claims (a bug is injected
where it lives: a coefficient, a letter of a splitting, an accept rule), fed the golden cases'
stored noise by :func:`refscore.testing.assert_sampler_matches`'s loops, and checked by
:func:`refscore.golden.check`.  The diagnosis must name the bug's hypothesis (and its ledger row
where it has one), name none of the other sampler bugs, and say where the chain departs.  The
correct variants (in-place updates, inputs written into, float32, another order of the same
arithmetic) must pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from refscore import golden, testing
from refscore.sampling.samplers import SAMPLERS

KINETIC = ("kinetic_baoab", "kinetic_obabo", "kinetic_aboba")


# ------------------------------------------------------------------ running a foreign sampler
def _diagnosis(fn, sampler, form="step", quantity="states"):
    """The Diagnosis of ``quantity`` when ``fn`` fails on the golden cases of ``sampler`` (the assertion's
    text kept in ``.message``); the test fails when ``fn`` passes."""
    with pytest.raises(AssertionError) as info:
        testing.assert_sampler_matches(fn, sampler, form=form)
    d = {d.quantity: d for d in info.value.result.diagnosis}[quantity]
    d.message = str(info.value)
    return d


# ------------------------------------------------------------------ hand-written overdamped samplers
def ula_with(a=1.0, b=1.0, step_factor=1.0):
    """x + a eta s(x) + b sqrt(2 eta) z at eta = step_factor * step."""
    def step_fn(x, score, step, z):
        eta = step_factor * step
        return x + a * eta * score(x) + b * math.sqrt(2 * eta) * z
    return step_fn


def ula_noise_scale(x, score, step, z):
    """The step read as the noise scale delta of x + (delta^2 / 2) s + delta z."""
    return x + step ** 2 / 2 * score(x) + step * z


def annealed_with(drift="annealed", noise="annealed", factor=1.0):
    """Annealed Langevin with the drift's and the noise's step each annealed or the base step."""
    def step_fn(x, score, sigma, sigmas, step, z):
        eta_i = factor * step * sigma ** 2 / sigmas[-1] ** 2
        eta_d = eta_i if drift == "annealed" else factor * step
        eta_n = eta_i if noise == "annealed" else factor * step
        return x + eta_d * score(x) + math.sqrt(2 * eta_n) * z
    return step_fn


def mala_with(correction=-1.0, rule="refscore", step_factor=1.0):
    def step_fn(x, score, log_prob, step, z, u):
        step = step_factor * step
        y = x + step * score(x) + math.sqrt(2 * step) * z
        fwd = np.sum((y - x - step * score(x)) ** 2, axis=1)
        bwd = np.sum((x - y - step * score(y)) ** 2, axis=1)
        log_alpha = log_prob(y) - log_prob(x) + correction * (bwd - fwd) / (4 * step)
        if rule == "refscore":
            accept = np.log(u) < log_alpha
        elif rule == "reversed":
            accept = np.log(u) > log_alpha
        else:
            accept = np.ones(len(x), dtype=bool)
        return np.where(accept[:, None], y, x)
    return step_fn


# ------------------------------------------------------------------ hand-written kinetic samplers
def kinetic_with(word, o_time=1.0, spread="refscore", friction_of=lambda g: g, drop=None):
    """A kinetic step by ``word`` written out letter by letter (unit mass): B p += tau s(q), A q += tau p,
    O p = c p + spread(c) xi, tau = h / (times the letter occurs in the full word); ``drop`` leaves out
    that letter of the word (its twin keeps its half step); the O letters take xi[:, :d], xi[:, d:]."""
    def step_fn(x, v, score, step, friction, xi):
        d = x.shape[1]
        gamma = friction_of(friction)
        slots = iter(range(2))
        plan = [(letter, step / word.count(letter)) for letter in word]
        o_slots = [next(slots) if letter == "O" else None for letter in word]
        q, p = x, v
        for i, ((letter, tau), slot) in enumerate(zip(plan, o_slots)):
            if i == drop:
                continue
            if letter == "B":
                p = p + tau * score(q)
            elif letter == "A":
                q = q + tau * p
            else:
                c = math.exp(-gamma * tau * o_time)
                sig = math.sqrt(1 - c * c) if spread == "refscore" else math.sqrt(1 - c)
                p = c * p + sig * xi[:, slot * d:(slot + 1) * d]
        return q, p
    return step_fn


WORD = {"kinetic_baoab": "BAOAB", "kinetic_obabo": "OBABO", "kinetic_aboba": "ABOBA"}


# ================================================================== correct samplers pass
def test_correct_variants_pass():
    # in-place updates on the array it receives
    def ula_in_place(x, score, step, z):
        x += step * score(x)
        x += math.sqrt(2 * step) * z
        return x

    assert testing.assert_sampler_matches(ula_in_place, "ula").passed

    # writing into every input array (MALA: the noise scaled in place, x overwritten by the decision)
    def mala_writes(x, score, log_prob, step, z, u):
        s_x = score(x)
        z *= math.sqrt(2 * step)
        y = x + step * s_x + z
        la = log_prob(y) - log_prob(x) - (np.sum((x - y - step * score(y)) ** 2, 1) - np.sum(z ** 2, 1)) / (4 * step)
        acc = np.log(u) < la
        u[:] = 0.5
        x[acc] = y[acc]
        return x, la

    assert testing.assert_sampler_matches(mala_writes, "mala").count("PASS") == 9

    # another order of the same arithmetic: BAOAB with both half drifts and the kick grouped
    def baoab_grouped(x, v, score, step, friction, xi):
        d, c = x.shape[1], math.exp(-friction * step)
        p_half = v + 0.5 * step * score(x)
        p_o = c * p_half + math.sqrt((1 - c) * (1 + c)) * xi[:, :d]
        q = x + 0.5 * step * (p_half + p_o)
        return q, p_o + 0.5 * step * score(q)

    assert testing.assert_sampler_matches(baoab_grouped, "kinetic_baoab").count("PASS") == 6

    # annealed with the level's step computed as (sigma / sigma_L)^2 step and the noise as sqrt 2 sqrt eta
    def annealed_reordered(x, score, sigma, sigmas, step, z):
        eta = (sigma / sigmas[-1]) ** 2 * step
        return (math.sqrt(2) * math.sqrt(eta)) * z + (x + eta * score(x))

    assert testing.assert_sampler_matches(annealed_reordered, "annealed").passed


def test_float32_variants_pass_at_the_float32_tolerances():
    assert testing.assert_sampler_matches(ula_with(), "ula", dtype="float32").passed
    for kind in KINETIC:
        assert testing.assert_sampler_matches(kinetic_with(WORD[kind]), kind, dtype="float32").passed


def test_whole_trajectories_pass_and_are_diagnosed_the_same():
    def annealed_run(x0, score, sigmas, step, z):
        x, out, T = x0, [], len(z) // len(sigmas)
        for t, z_t in enumerate(z):
            sigma = sigmas[t // T]
            eta = step * sigma ** 2 / sigmas[-1] ** 2
            x = x + eta * score(x, sigma) + math.sqrt(2 * eta) * z_t
            out.append(x)
        return np.stack(out)

    assert testing.assert_sampler_matches(annealed_run, "annealed", form="trajectory").passed

    def obabo_run(x0, v0, score, step, friction, xi):
        step_fn = kinetic_with("OBABO")
        q, p, qs, ps = x0, v0, [], []
        for xi_t in xi:
            q, p = step_fn(q, p, score, step, friction, xi_t)
            qs.append(q)
            ps.append(p)
        return np.stack(qs), np.stack(ps)

    assert testing.assert_sampler_matches(obabo_run, "kinetic_obabo", form="trajectory").count("PASS") == 6

    def mala_run(x0, score, log_prob, step, z, u):
        x, out, step_fn = x0, [], mala_with()
        for z_t, u_t in zip(z, u):
            x = step_fn(x, score, log_prob, step, z_t, u_t)
            out.append(x)
        return np.stack(out)

    res = testing.assert_sampler_matches(mala_run, "mala", form="trajectory")
    assert res.count("PASS") == 6  # states and the accept decisions read off them

    def annealed_noise_not_annealed(x0, score, sigmas, step, z):
        x, out, T = x0, [], len(z) // len(sigmas)
        for t, z_t in enumerate(z):
            sigma = sigmas[t // T]
            x = x + step * sigma ** 2 / sigmas[-1] ** 2 * score(x, sigma) + math.sqrt(2 * step) * z_t
            out.append(x)
        return np.stack(out)

    d = _diagnosis(annealed_noise_not_annealed, "annealed", form="trajectory")
    assert d.hypothesis == "noise not annealed"


def test_the_form_is_an_explicit_argument():
    with pytest.raises(ValueError, match=r"form must be one of \['step', 'trajectory'\]"):
        testing.assert_sampler_matches(ula_with(), "ula", form="run")
    with pytest.raises(TypeError, match=r"your kinetic step must return a pair \(positions, momenta\)"):
        testing.assert_sampler_matches(lambda x, v, score, step, friction, xi: x, "kinetic_baoab")


# ================================================================== injected bugs, each named alone
OVERDAMPED_BUGS = [
    # (sampler, your sampler, hypothesis, ledger row, conversion)
    ("ula", ula_with(a=0.5, b=math.sqrt(0.5)), "Langevin step step_from_lr(step)", "Langevin step", "lr_from_step"),
    ("ula", ula_with(step_factor=2.0), "Langevin step ncsn_eps(step)", "Langevin step (NCSN ε as step_lr)",
     "ncsn_step"),
    ("ula", ula_with(b=math.sqrt(0.5)), "noise sqrt(eta)", "Langevin temperature", "tempered_step"),
    ("ula", ula_with(b=math.sqrt(2.0)), "temperature 2", "Langevin temperature", "tempered_step"),
    ("ula", ula_with(a=0.5), "drift x0.5 and noise x1", "Decoupled step and noise", "decoupled_step"),
    ("ula", ula_with(step_factor=3.0), "step x3", None, None),
    ("ula", ula_noise_scale, "Langevin step step_from_noise_scale(step)", "Langevin step (noise scale)",
     "noise_scale_from_step"),
    ("annealed", annealed_with(noise="base"), "noise not annealed", None, None),
    ("annealed", annealed_with(drift="base", noise="base"), "one step for every level", None, None),
    ("annealed", annealed_with(factor=0.5), "Langevin step ncsn_step(step)", "Annealed Langevin (NCSN paper)",
     "ncsn_eps"),
    ("annealed", annealed_with(factor=2.0), "Langevin step ncsn_eps(step)", "Langevin step (NCSN ε as step_lr)",
     "ncsn_step"),
]


@pytest.mark.parametrize("sampler, fn, hypothesis, row, conversion", OVERDAMPED_BUGS,
                         ids=[f"{b[0]}-{b[2]}" for b in OVERDAMPED_BUGS])
def test_overdamped_bug_is_named(sampler, fn, hypothesis, row, conversion):
    d = _diagnosis(fn, sampler)
    assert d.hypothesis == hypothesis, d.line()
    assert (d.convention, d.conversion) == (row, conversion), d.line()
    assert any(p.startswith("departs at step 0") for p in d.patterns), d.patterns  # every step is wrong
    assert any(p.startswith("one-step fit") for p in d.patterns), d.patterns
    assert f"-> {hypothesis}" in d.message


def test_the_ncsn_half_step_names_the_paper_and_also_the_lr_form():
    """NCSN's Algorithm 1 (x + (alpha/2) s + sqrt(alpha) z with alpha = the stored step) is refscore's
    at half the step, which the lr-form also is: the annealed reading (the paper's row) comes first."""
    d = _diagnosis(annealed_with(factor=0.5), "annealed")
    assert d.hypothesis == "Langevin step ncsn_step(step)" and d.convention == "Annealed Langevin (NCSN paper)"
    assert "Langevin step step_from_lr(step)" in d.also
    assert "a = 0.5, b = 0.7071 (exact to round-off)" in " ".join(d.patterns)


def test_the_fit_is_per_level_and_names_noise_not_annealed():
    d = _diagnosis(annealed_with(noise="base"), "annealed")
    fit = next(p for p in d.patterns if p.startswith("one-step fit"))
    # b_l = sqrt(eta / eta_l) = sigma_L / sigma_l: 0.25, 0.5, 1 for sigmas 2, 1, 0.5
    assert "level 1: a = 1, b = 0.25 (exact to round-off)" in fit and "level 2: a = 1, b = 0.5 (exact" in fit
    assert "level 3: a = 1, b = 1 (exact" in fit
    assert d.also == ()


MALA_BUGS = [
    (mala_with(step_factor=0.5), "Langevin step step_from_lr(step)"),
    (mala_with(step_factor=2.0), "Langevin step ncsn_eps(step)"),
    (mala_with(correction=0.0), "no proposal correction"),
    (mala_with(correction=1.0), "proposal correction sign flipped"),
    (mala_with(correction=-2.0), "proposal correction over 2 eta"),
    (mala_with(rule="reversed"), "accept rule reversed"),
    (mala_with(rule="always"), "no accept test"),
]


@pytest.mark.parametrize("fn, hypothesis", MALA_BUGS, ids=[b[1] for b in MALA_BUGS])
def test_mala_bug_is_named_on_the_states(fn, hypothesis):
    d = _diagnosis(fn, "mala")
    assert d.hypothesis == hypothesis, d.line()
    # MALA's golden step is 1, where the noise-scale reading delta^2 / 2 is the lr-form's lr / 2: the
    # two predict the same chain, so the other is listed as fitting as well (never as the cause)
    same = ("Langevin step step_from_noise_scale(step)",) if hypothesis == "Langevin step step_from_lr(step)" else ()
    assert d.also == same, d.line()
    summary = " ".join(d.patterns)
    # a step convention moves the proposal itself; the ratio and accept bugs keep it and flip decisions
    what = "moves off refscore's proposal" if hypothesis.startswith("Langevin step") else "accept decisions differ"
    assert "departs at step" in summary and what in summary, summary  # a ratio bug flips some decisions only


def test_mala_accept_rule_reversed_on_the_decisions():
    d = _diagnosis(mala_with(rule="reversed"), "mala", quantity="accept")
    assert d.hypothesis == "accept rule reversed"


KINETIC_BUGS = []
for _kind, _word in WORD.items():
    for _other in ("BAOAB", "OBABO", "ABOBA"):
        if _other != _word:
            KINETIC_BUGS.append((_kind, kinetic_with(_other), f"splitting {_other}", None, None))
    KINETIC_BUGS.append((_kind, kinetic_with(_word, friction_of=lambda g: 1 / g),
                         "friction friction_from_decoherence_length(friction)", "Kinetic Langevin friction (blackjax)",
                         "decoherence_length_from_friction"))
    for _i, _letter in enumerate(_word):
        if _word.count(_letter) == 2:
            KINETIC_BUGS.append((_kind, kinetic_with(_word, drop=_i),
                                 f"missing half step: {_word[:_i] + _word[_i + 1:]}", None, None))
    KINETIC_BUGS.append((_kind, kinetic_with(_word, o_time=2.0 if _word == "OBABO" else 0.5),
                         f"refresh over {'h' if _word == 'OBABO' else 'h/2'}", None, None))
    KINETIC_BUGS.append((_kind, kinetic_with(_word, spread="sqrt(1-c)"), "refresh noise sqrt(1 - c)", None, None))


@pytest.mark.parametrize("sampler, fn, hypothesis, row, conversion", KINETIC_BUGS,
                         ids=[f"{b[0]}-{b[2]}" for b in KINETIC_BUGS])
def test_kinetic_bug_is_named(sampler, fn, hypothesis, row, conversion):
    for quantity in ("states", "momenta"):
        d = _diagnosis(fn, sampler, quantity=quantity)
        assert d.hypothesis == hypothesis, d.line()
        assert (d.convention, d.conversion) == (row, conversion), d.line()
        assert any(p.startswith("departs at step 0") for p in d.patterns), d.patterns


# ================================================================== where, and never a wrong name
def test_one_wrong_step_is_located_and_poisons_nothing():
    """A trajectory wrong at global step 7 only (level 2 of 3, sigma = 1): the diagnosis says where, and
    names no hypothesis (none fits every step)."""
    def annealed_one_slip(x0, score, sigmas, step, z):
        x, out, T = x0, [], len(z) // len(sigmas)
        for t, z_t in enumerate(z):
            sigma = sigmas[t // T]
            eta = step * sigma ** 2 / sigmas[-1] ** 2
            x = x + eta * score(x, sigma) + math.sqrt(2 * eta) * z_t * (1.5 if t == 7 else 1.0)
            out.append(x)
        return np.stack(out)

    d = _diagnosis(annealed_one_slip, "annealed", form="trajectory")
    assert d.hypothesis is None and d.explanation.startswith("no tested hypothesis fits")
    assert ("departs at step 7 (level 2 of 3, sigma = 1), each step taken from your previous state: the steps "
            "before it agree") in d.patterns


def test_nothing_fits_says_so_and_prints_the_best_fit():
    """The noise of the previous step (a stale z): no hypothesis, and the fit's residual shows it."""
    def stale_noise(x0, score, step, z):
        x, out = x0, []
        for t in range(len(z)):
            x = x + step * score(x) + math.sqrt(2 * step) * z[max(t - 1, 0)]
            out.append(x)
        return np.stack(out)

    d = _diagnosis(stale_noise, "ula", form="trajectory")
    assert d.hypothesis is None and d.explanation.startswith("no tested hypothesis fits")
    fit = next(p for p in d.patterns if p.startswith("one-step fit"))
    residual = float(fit.split("residual ")[1].split(")")[0])
    assert residual > 0.1, fit  # far from exact: no (a, b) explains it
    assert "departs at step 1" in " ".join(d.patterns)  # step 0 uses z[0] as it should


def test_every_sampler_hypothesis_has_a_bug_here():
    """The labels the diagnosis can name for each sampler kind are each the expected name of a bug above."""
    from refscore.golden import _sampler_hypotheses, diagnosis  # noqa: SLF001 - the labels are what this file tests

    class _Q:
        def __init__(self, kind, q):
            self.cases, self.q = list(testing.golden_cases(kind=kind).all_cases.values()), q

    def _Ctx():  # the diagnosis's own context, with nothing of yours given
        return diagnosis._Context(None, {}, [], 1e-8, 1e-10)

    named = {b[2] for b in OVERDAMPED_BUGS} | {b[1] for b in MALA_BUGS} | {b[2] for b in KINETIC_BUGS}
    for kind in SAMPLERS:
        for q in ("states", "momenta") if kind in KINETIC else ("states",):
            labels = {lab for lab, *_ in _sampler_hypotheses.structural(_Ctx(), _Q(kind, q))}
            fitted = {lab for lab in labels if lab.startswith(("temperature", "drift x", "step x"))}  # from your values
            untested = labels - named - fitted
            assert untested == set(), (kind, q, untested)


def test_float32_checked_at_float64_tolerances_is_round_off_and_nothing_else():
    """A correct float32 chain against float64's 1e-8: named round-off, with no variant beside it (its fitted
    a, b are 1 to round-off, which is no temperature and no step scale)."""
    g = testing.golden_cases(kind="ula")
    values = {f"{n}/states": c.quantities["states"].astype(np.float32) for n, c in g.all_cases.items()}
    (d,) = golden.check(g, values).diagnosis
    assert d.hypothesis == "round-off" and d.also == (), d.line()


@pytest.mark.parametrize("sampler, fn, hypothesis", [
    ("kinetic_obabo", kinetic_with("OBABO", friction_of=lambda g: 1 / g),
     "friction friction_from_decoherence_length(friction)"),
    ("kinetic_baoab", kinetic_with("ABOBA"), "splitting ABOBA"),
    ("kinetic_aboba", kinetic_with("ABOBA", drop=4), "missing half step: ABOB"),
])
def test_kinetic_positions_alone_are_diagnosed_by_whole_trajectories(sampler, fn, hypothesis):
    """refscore check given your positions only (no momenta): no step can start from your state, so the
    variants run whole trajectories from x0 and v0, and the bug is still named."""
    g = testing.golden_cases(kind=sampler)
    values = {}
    for name, c in g.all_cases.items():
        x, v, states = c.inputs["x0"].copy(), c.inputs["v0"].copy(), []
        for xi in c.inputs["xi"]:
            x, v = fn(x, v, c.target.score, float(c.inputs["step"]), float(c.inputs["friction"]), xi)
            states.append(x)
        values[f"{name}/states"] = np.array(states)
    (d,) = golden.check(g, values).diagnosis
    assert d.quantity == "states" and d.hypothesis == hypothesis, d.line()


def test_a_bug_after_the_last_drift_shows_in_the_momenta_only():
    """BAOAB without its last kick: from your state, every step's positions are refscore's (nothing after
    the last drift moves them), the momenta are not; the diagnosis says so and names the half step."""
    d = _diagnosis(kinetic_with("BAOAB", drop=4), "kinetic_baoab", quantity="momenta")
    assert d.hypothesis == "missing half step: BAOA"
    assert any(p.startswith("each of your steps moves the positions as refscore's does") for p in d.patterns)
    d = _diagnosis(kinetic_with("BAOAB", drop=0), "kinetic_baoab", quantity="momenta")
    assert d.hypothesis == "missing half step: AOAB"
    assert not any(p.startswith("each of your steps moves the positions") for p in d.patterns)
