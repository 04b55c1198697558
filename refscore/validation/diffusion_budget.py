r"""The error budget of a diffusion sampler run with a trained network: discretisation error and network error.

Derivation: docs/diffusion.md §8.2.

A :class:`refscore.models.NoiseConditional` MLP, :math:`s_\theta(y, \bar\sigma) = s_\theta(y)/\bar\sigma`, is
trained by NCSN's :func:`refscore.losses.dsm_multi` (Adam, :func:`refscore.training.fit`) on samples of the 2-D
Gaussian :data:`DATA`, at the noise levels of the sampler's finest grid (EDM's Karras grid, 64 steps,
:math:`\bar\sigma` from 2 to 0.002), and run through :class:`refscore.diffusion.ModelDenoiser` by Euler and
Heun on EDM's schedule from the same ``n`` starts, drawn from the exact marginal at :math:`\sigma = 2`.  With
:math:`P^\theta_N` the law of an ``N``-step run with the network, :math:`P^*_N` with the exact denoiser
(:class:`refscore.diffusion.Denoiser`), and :math:`P^*_\infty` the data law:

* **discretisation error** :math:`W_2(P^*_N, P^*_\infty)`: the exact denoiser with ``N`` steps, from the exact
  law (:func:`refscore.diffusion.output_law`; no sampling);
* **network error** :math:`W_2(P^\theta_M, P^*_\infty)`: the network with :data:`REFERENCE_STEPS` Heun steps;
* **total error** :math:`W_2(P^\theta_N, P^*_\infty)`: the network with ``N`` steps;
* the network's own discretisation error :math:`W_2(P^\theta_N, P^\theta_M)`.

The sample-based distances are :math:`W_2` between Gaussian fits (sample mean and covariance; for
non-Gaussian laws a lower bound of :math:`W_2`, Gelbrich's), all from the same starts, so that the sampling
noise of the starts cancels in the comparisons; :math:`P^*_\infty` is the exact flow map of the starts
(:func:`refscore.diffusion.output_map` of ``pf_ode``: exact data samples).  Standard errors are jackknife
errors over :data:`GROUPS` groups of chains (conservative: the jackknife variance is biased upwards, Efron and
Stein 1981).  The rows check that the Gaussian fits reproduce the exact law
(exact denoiser), that the network's own discretisation error has the sampler's order and the size the
exact reference predicts, that the total error is the first-order sum of the two biases (in the moments, not
in :math:`W_2`: the biases can cancel), that the reference run resolves the network error, and that the
trained network's DSM excess is at least that of the best function of its form, :math:`f(y)/\bar\sigma`
(by quadrature: the floor of the architecture).  Two rows check the noise level the network is conditioned
on: on VP's schedule, through the adapter (:math:`x/\alpha` at :math:`\sigma/\alpha`), DDIM at EDM's levels
reproduces Euler on EDM to round-off (DDIM is Euler in EDM's variables); conditioned naively on VP's own
:math:`\sigma(t)` at :math:`x` (the negative control), it lands far away.

:data:`SCHEDULE` stops at :math:`\sigma_{\max} = 2`: a network of the form :math:`f(y)/\bar\sigma` cannot tell
the noise level from the point :math:`y` (in 2-D the length of :math:`\bar\sigma\varepsilon` varies by about
50 % at one level), so even the best such :math:`f` has a denoiser error that grows like :math:`\bar\sigma`.  The
range control rows train the same network on EDM's default range (:math:`\bar\sigma \le 80`): its output is
far from the data, and the best :math:`f(y)/\bar\sigma` has an rms error of about :math:`0.6\bar\sigma`
at large :math:`\bar\sigma` (docs/diffusion.md §8.2).
"""
from __future__ import annotations

import numpy as np

from refscore.diffusion import EDM, VP, Denoiser, ModelDenoiser
from refscore.diffusion.laws import gaussian_w2
from refscore.diffusion.samplers import SAMPLERS, output_law, output_map, sample
from refscore.distributions import Gaussian
from refscore.models import MLPScore, NoiseConditional
from refscore.noise import normal
from refscore.quadrature import gauss_hermite_nodes
from refscore.training import fit

from .common import check_row, progress, save_figure, style

NAME = "diffusion_budget"
TITLE = "Diffusion sampler with a trained network: discretisation error vs network error"
SOURCE = "docs/diffusion.md §8.2"

DATA = Gaussian([0.8, -0.4], [[0.6, 0.25], [0.25, 0.3]])
#: EDM's schedule and Karras grid, on the noise range a network f(y)/sigma can learn in 2-D
SCHEDULE = EDM(sigma_min=0.002, sigma_max=2.0)
#: the step counts of the budget
STEPS = (4, 8, 16, 32, 64)
#: the step counts the order and ratio rows read (the asymptotic range)
FINE = (16, 32, 64)
#: Heun steps of the network's reference run (its remaining step error is a row)
REFERENCE_STEPS = 512
SHOWN = ("euler", "heun")
HIDDEN = (32, 32)
#: jackknife groups of chains
GROUPS = 20
Z_MAX = 4.5
#: the largest allowed ratio (either way) of the network's discretisation error to the exact reference's
RATIO = 1.5


# ------------------------------------------------------------------ training
def train(steps, n_data, seed, tick=None):
    """The NoiseConditional MLP trained by dsm_multi at the levels of the 64-step grid: ``(model, theta, levels)``."""
    model = NoiseConditional(MLPScore(2, HIDDEN, "tanh"))
    levels = SCHEDULE.grid(STEPS[-1])[:-1]
    x = DATA.sample(n_data, rng=seed)
    res = fit(model, "dsm_multi", x, steps, lr=2e-3, batch=1024, rng=seed + 1, sigmas=levels,
              record_every=max(1, steps // 100))
    if tick:
        tick()
    return model, res.theta, levels


#: EDM's default noise range, on which the range control trains the same network
WIDE = EDM()


def range_control(steps, n, seed):
    r"""The same network and training on EDM's default range (:data:`WIDE`, :math:`\bar\sigma` up to 80).

    Returns ``(f, W2)``: the trained :math:`f` (:math:`s = f(y)/\bar\sigma`) and :math:`W_2` between the Gaussian
    fit of its Heun run (64 steps, ``n`` chains from the exact marginal at 80) and the data law.
    """
    model = NoiseConditional(MLPScore(2, HIDDEN, "tanh"))
    res = fit(model, "dsm_multi", DATA.sample(20_000, rng=seed), steps, lr=2e-3, batch=1024, rng=seed + 1,
              sigmas=WIDE.grid(STEPS[-1])[:-1], record_every=max(1, steps // 100))
    z = normal(seed, np.arange(n), 2 ** 32 - 2, 4)
    x = DATA.mean + z[:, :2] @ np.linalg.cholesky(DATA.cov).T + WIDE.sigma_max * z[:, 2:]
    out = sample("heun", ModelDenoiser(model, res.theta, WIDE), WIDE, x, WIDE.grid(STEPS[-1]))
    return model.model.bind(res.theta).score, gaussian_w2(*moments(out), DATA.mean, DATA.cov)


# ------------------------------------------------------------------ Gaussian fits and their jackknife
def moments(x):
    """Sample mean and covariance (the Gaussian fit) of ``x (n, d)``."""
    return x.mean(0), np.cov(x.T)


def w2_fit(a, b):
    """:math:`W_2` between the Gaussian fits of ``a`` and ``b``."""
    return gaussian_w2(*moments(a), *moments(b))


def jackknife(stat, *arrays, groups=GROUPS):
    """``(value, standard error)`` of ``stat(*arrays)``, delete-one-group jackknife over the rows (the chains)."""
    n = arrays[0].shape[0]
    g = np.arange(n) % groups
    value = stat(*arrays)
    loo = np.array([stat(*(a[g != k] for a in arrays)) for k in range(groups)])
    return value, float(np.sqrt((groups - 1) / groups * np.sum((loo - loo.mean()) ** 2)))


# ------------------------------------------------------------------ the budget
def starts(n, seed):
    """``n`` draws of the exact marginal at sigma_max: data + sigma_max * N(0, I), counter noise."""
    z = normal(seed, np.arange(n), 2 ** 32 - 1, 4)
    return DATA.mean + z[:, :2] @ np.linalg.cholesky(DATA.cov).T + SCHEDULE.sigma_max * z[:, 2:]


def budget(model_denoiser, n, seed, tick=None):
    """Every run of the budget from the same ``n`` starts.

    Returns a dict: ``"exact"`` (the exact flow map of the starts: data samples), ``"reference"`` and
    ``"half"`` (the network with REFERENCE_STEPS and half as many Heun steps), and per sampler ``s`` and step
    count ``N``: ``(s, N)`` the network's output, ``("exact", s, N)`` the exact denoiser's output and
    ``("law", s, N)`` its exact law (mean, cov).
    """
    edm = SCHEDULE
    x = starts(n, seed)
    exact = Denoiser(DATA, edm)
    A, b, _ = output_map("pf_ode", edm, [edm.sigma_max, 0.0], DATA)
    out = {"exact": x @ A.T + b}
    out["reference"] = sample("heun", model_denoiser, edm, x, edm.grid(REFERENCE_STEPS))
    out["half"] = sample("heun", model_denoiser, edm, x, edm.grid(REFERENCE_STEPS // 2))
    if tick:
        tick()
    for s in SHOWN:
        for N in STEPS:
            grid = edm.grid(N)
            out[(s, N)] = sample(s, model_denoiser, edm, x, grid)
            out[("exact", s, N)] = sample(s, exact, edm, x, grid)
            out[("law", s, N)] = output_law(s, edm, grid, DATA)
            if tick:
                tick()
    return out


def _predicted(law, data):
    """The first-order prediction of the network's N-step fit: exact N, data fit, plus the network's bias."""
    m_n, c_n = law

    def stat(theta_ref, exact):
        (m_r, c_r), (m_e, c_e) = moments(theta_ref), moments(exact)
        return gaussian_w2(m_r + m_n - data.mean, c_r + c_n - data.cov, m_e, c_e)
    return stat


def curves(runs):
    """Per sampler: the four error curves over STEPS with their jackknife errors, and the estimator check.

    ``disc_exact`` W2(P*_N, data) from the exact law; ``disc_exact_fit`` the same from the coupled fits of the
    exact denoiser's runs; ``disc_model`` W2(P^theta_N, P^theta_M); ``total`` W2(P^theta_N, P*_inf);
    ``predicted`` the first-order prediction; each sample-based one a pair (values, standard errors).
    """
    ex, ref = runs["exact"], runs["reference"]
    out = {}
    for s in SHOWN:
        c = {k: [] for k in ("disc_exact", "disc_exact_fit", "disc_model", "total", "predicted")}
        for N in STEPS:
            law = runs[("law", s, N)]
            c["disc_exact"].append((gaussian_w2(*law, DATA.mean, DATA.cov), 0.0))
            c["disc_exact_fit"].append(jackknife(w2_fit, runs[("exact", s, N)], ex))
            c["disc_model"].append(jackknife(w2_fit, runs[(s, N)], ref))
            c["total"].append(jackknife(w2_fit, runs[(s, N)], ex))
            c["predicted"].append(jackknife(_predicted(law, DATA), ref, ex))
        out[s] = {k: (np.array([v for v, _ in c[k]]), np.array([e for _, e in c[k]])) for k in c}
    return out


# ------------------------------------------------------------------ the network against the floor of its form
def _noised_rule(sbar, order):
    return gauss_hermite_nodes(Gaussian(DATA.mean, DATA.cov + sbar * sbar * np.eye(2)), order=order)


def floor_function(levels):
    r"""The best :math:`f` of :math:`s(y, \bar\sigma) = f(y)/\bar\sigma` for dsm_multi over ``levels`` (uniform labels).

    With weighting :math:`\bar\sigma^2` each term is :math:`\tfrac12\lVert f(\tilde y) + \varepsilon\rVert^2`, so the
    minimiser over all functions is :math:`f^*(y) = -E[\varepsilon \mid \tilde y = y]` under the joint law of the level
    and :math:`\tilde y`: :math:`f^*(y) = \sum_l r_l(y)\,\bar\sigma_l\nabla\log p_l(y)`, :math:`r_l \propto p_l(y)` the
    posterior of the level (docs/diffusion.md §8.2).
    """
    exact = Denoiser(DATA, EDM())

    def f(y):
        logp = np.stack([exact.logpdf(y, s) for s in levels])
        r = np.exp(logp - logp.max(0))
        r /= r.sum(0)
        return np.einsum("ln,lni->ni", r, np.stack([s * exact.score(y, s) for s in levels]))
    return f


def dsm_excess(f, levels, order=40):
    r"""Population dsm_multi minus its unattainable minimum: :math:`\frac1L\sum_l \tfrac12 E_{p_l}\lVert f - \bar\sigma_l\nabla\log p_l\rVert^2`."""
    exact = Denoiser(DATA, EDM())
    tot = 0.0
    for s in levels:
        y, w = _noised_rule(s, order)
        tot += 0.5 * float(w @ np.sum((f(y) - s * exact.score(y, s)) ** 2, axis=1))
    return tot / len(levels)


def denoiser_rms(f, sigmas, order=40):
    r""":math:`\sqrt{E_{p_{\bar\sigma}}\lVert D_f - D^*\rVert^2}` per level, :math:`D_f = y + \bar\sigma f(y)`, by quadrature."""
    exact = Denoiser(DATA, EDM())
    out = []
    for s in sigmas:
        y, w = _noised_rule(s, order)
        out.append(float(np.sqrt(w @ np.sum((y + s * f(y) - exact.x0(y, s)) ** 2, axis=1))))
    return np.array(out)


def posterior_rms(sigmas):
    r""":math:`\sqrt{\operatorname{tr}\mathrm{Cov}[x_0 \mid y]}` (the same at every :math:`y` for Gaussian data): the exact denoiser's own error."""
    lam = np.linalg.eigvalsh(DATA.cov)
    return np.array([np.sqrt(np.sum(s * s * lam / (lam + s * s))) for s in sigmas])


# ------------------------------------------------------------------ the noise level the network is conditioned on
def vp_runs(model, theta, x, steps):
    r"""DDIM on VP at the times of EDM's ``steps``-step grid (equal :math:`\bar\sigma`), through the adapter, and the
    same with the naive convention :math:`\hat x_0 = (x + \sigma^2 s_\theta(x, \sigma))/\alpha` (VP's own
    :math:`\sigma(t)`, at :math:`x`, not :math:`x/\alpha`): ``(adapter output, naive output)``, both divided by
    :math:`\alpha` at the last time (1 at VP's t = 0).

    DDIM with :math:`\eta = 0` is Euler in EDM's variables (docs/diffusion.md §6.5), so the first equals
    Euler on EDM to round-off; the second conditions the network on the wrong level.
    """
    vp = VP()
    edm_grid = SCHEDULE.grid(steps)
    grid = np.append(vp.t_of_log_snr(-2.0 * np.log(edm_grid[:-1])), 0.0)
    xv = vp.alpha(grid[0]) * x
    bound = model.bind(theta)

    def naive(y, t):
        a, s = vp.alpha(t), vp.sigma(t)
        return (y + s * s * bound.score(y, s)) / a
    return (sample("ddim", ModelDenoiser(model, theta, vp), vp, xv, grid),
            sample("ddim", naive, vp, xv, grid))


# ------------------------------------------------------------------ the experiment
def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def run(quick: bool, seed: int, fig_dir):
    import matplotlib.pyplot as plt

    style()
    n = 2_000 if quick else 20_000
    train_steps = 1_500 if quick else 4_000
    bar = progress(desc="diffusion_budget: training and sampler runs", total=4 + len(SHOWN) * len(STEPS),
                   unit="run")
    model, theta, levels = train(train_steps, 20_000, seed, tick=lambda: bar.update(1))
    D = ModelDenoiser(model, theta, SCHEDULE)
    runs = budget(D, n, seed, tick=lambda: bar.update(1))
    on_vp, naive = vp_runs(model, theta, starts(n, seed), STEPS[-1])
    bar.update(1)
    f_wide, w2_wide = range_control(train_steps, n, seed + 7)
    bar.update(1)
    bar.close()
    cur = curves(runs)
    fine = np.array([N in FINE for N in STEPS])
    rows = []
    for s in SHOWN:
        c = cur[s]
        p = SAMPLERS[s].order
        law, (fit_v, fit_se) = c["disc_exact"][0], c["disc_exact_fit"]
        z = float(np.max(np.abs(fit_v - law) / fit_se))
        rows.append(check_row(NAME, f"{s}: W2 of Gaussian fits of {n} coupled chains vs the exact law, exact "
                              f"denoiser, {STEPS[0]}-{STEPS[-1]} steps: max |z|", z, "0 (the fits estimate the law)",
                              "docs/diffusion.md §6.3", f"< {Z_MAX}", z < Z_MAX))
        dm = c["disc_model"][0]
        slope = _slope(np.array(FINE, float), dm[fine])
        rows.append(check_row(NAME, f"{s}: order of the trained network's own discretisation error W2(P_N, P_"
                              f"{REFERENCE_STEPS}) ({FINE[0]}-{FINE[-1]} steps)", slope, f"{p}",
                              "the sampler's order (docs/diffusion.md §6.4)", f"±{0.15 * p:.2g}",
                              abs(slope - p) < 0.15 * p))
        ratio = dm[fine] / law[fine]
        worst = float(ratio[np.argmax(np.abs(np.log(ratio)))])
        rows.append(check_row(NAME, f"{s}: network's discretisation error / exact reference's, {FINE[0]}-{FINE[-1]} "
                              f"steps (the one farthest from 1)", worst, "1 (the same size)", SOURCE,
                              f"[{1 / RATIO:.3g}, {RATIO:.3g}]", bool(np.all(np.abs(np.log(ratio)) < np.log(RATIO)))))
        (tot, tot_se), (pred, _) = c["total"], c["predicted"]
        allow = (RATIO - 1.0) * law + Z_MAX * tot_se
        worst = float(np.max((np.abs(pred - tot) / allow)[fine]))
        rows.append(check_row(NAME, f"{s}: total error vs exact bias + network bias (moments), {FINE[0]}-{FINE[-1]} "
                              f"steps: max |predicted - total| / allowance", worst, "< 1", SOURCE,
                              f"allowance {RATIO - 1:.2g} x discretisation + {Z_MAX} SE", worst < 1.0))
    net, net_se = jackknife(w2_fit, runs["reference"], runs["exact"])
    rest = w2_fit(runs["half"], runs["reference"]) / (2 ** SAMPLERS["heun"].order - 1)
    rows.append(check_row(NAME, f"network error W2(P_{REFERENCE_STEPS}, data), Heun, in jackknife standard errors",
                          net / net_se, f"> 10 (resolved; W2 = {net:.3g})", SOURCE, "> 10", net > 10 * net_se))
    rows.append(check_row(NAME, f"remaining step error of the {REFERENCE_STEPS}-step reference / network error",
                          rest / net, "0 (the reference measures the network alone)",
                          "Richardson: W2(P_M/2, P_M) / (2^2 - 1)", "< 0.01", rest / net < 0.01))
    euler = runs[("euler", STEPS[-1])]
    dev = float(np.max(np.abs(on_vp - euler)) / np.max(np.abs(euler)))
    rows.append(check_row(NAME, f"the network on VP through the adapter (x/alpha, sigma/alpha): DDIM at EDM's "
                          f"{STEPS[-1]}-step levels vs Euler on EDM, max relative difference", dev,
                          "0 (DDIM is Euler in EDM's variables)", "docs/diffusion.md §6.5, §8.1", "< 1e-12",
                          dev < 1e-12))
    wrong, wrong_se = jackknife(w2_fit, naive, on_vp)
    rows.append(check_row(NAME, "negative control: the network conditioned on VP's sigma(t) at x (no EDM "
                          "rescaling) vs through the adapter: W2 in standard errors", wrong / wrong_se,
                          f"far (W2 = {wrong:.3g})", "docs/diffusion.md §8.1", "> 10", wrong > 10 * wrong_se))
    growth = denoiser_rms(floor_function(WIDE.grid(STEPS[-1])[:-1]), [20.0, 80.0]) / np.array([20.0, 80.0])
    rows.append(check_row(NAME, "range control: the same network trained on EDM's default range (sigma <= 80), "
                          f"Heun {STEPS[-1]} steps: W2 to the data law", w2_wide,
                          "far (f(y)/sigma cannot tell sigma from y)", SOURCE, "> 1", w2_wide > 1.0))
    rows.append(check_row(NAME, "range control: the best f(y)/sigma on sigma <= 80 (quadrature): rms denoiser "
                          "error / sigma at sigma = 80 over the same at 20",
                          growth[1] / growth[0], f"1 (the error grows like sigma: {growth[1]:.3g} sigma at 80)",
                          SOURCE, "±0.1", abs(growth[1] / growth[0] - 1.0) < 0.1))
    f_net = model.model.bind(theta).score
    f_floor = floor_function(levels)
    ex_net, ex_floor = dsm_excess(f_net, levels), dsm_excess(f_floor, levels)
    rows.append(check_row(NAME, "trained network's dsm_multi excess / the floor of every f(y)/sigma (quadrature, "
                          "Gauss-Hermite order 40)", ex_net / ex_floor, ">= 1 (the floor is the minimum)", SOURCE,
                          ">= 0.99 (orders 20-60 agree to 1e-3)", ex_net / ex_floor >= 0.99))

    # ---------------------------------------------------------------- figure
    def tr_bias(m_c, ref):
        return float(np.trace(m_c[1] - ref[1]))

    bias_net = tr_bias(moments(runs["reference"]), moments(runs["exact"]))
    fig = plt.figure(figsize=(17, 6.4))
    gs = fig.add_gridspec(1, 3, wspace=0.3)
    steps = np.array(STEPS, float)
    for k, s in enumerate(SHOWN):
        ax = fig.add_subplot(gs[0, k])
        c = cur[s]
        law = c["disc_exact"][0]
        bias_disc = tr_bias(runs[("law", s, 8)], (DATA.mean, DATA.cov))
        ax.fill_between(steps, np.abs(law - net), law + net, color="0.6", alpha=0.2,
                        label="between |(a) - (b)| and (a) + (b)")
        ax.axhspan(net - 2 * net_se, net + 2 * net_se, color="C3", alpha=0.2)
        ax.axhline(net, color="C3", lw=1.5, label=f"(b) network error: network, Heun {REFERENCE_STEPS} steps")
        ax.plot(steps, law, "k-", lw=2, label="(a) discretisation error: exact denoiser, exact law")
        ax.plot(steps, c["disc_model"][0], "o--", color="C0", mfc="none", ms=7,
                label=f"network's own discretisation error W2(P_N, P_{REFERENCE_STEPS})")
        ax.errorbar(steps, *c["total"], fmt="s-", color="C2", ms=6, capsize=3, lw=2,
                    label="(c) total error: network, N steps")
        ax.plot(steps, c["predicted"][0], "x:", color="C1", ms=9, mew=2,
                label="predicted (c): exact bias + network bias")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(steps)
        ax.set_xticklabels([str(N) for N in STEPS])
        ax.minorticks_off()
        ax.set_xlabel("steps N (EDM Karras grid, sigma 2 -> 0)")
        ax.set_ylabel("W2 to the data law (Gaussian fits)")
        ax.set_title(f"{s} (order {SAMPLERS[s].order}): trace of the covariance bias\nexact denoiser at 8 steps "
                     f"{bias_disc:+.3f}, network {bias_net:+.3f}", fontsize=10)
        if k == 0:
            ax.legend(fontsize=8.5, ncol=3, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False)
    ax = fig.add_subplot(gs[0, 2])
    sig = np.geomspace(SCHEDULE.sigma_min, SCHEDULE.sigma_max, 25)
    wide = np.geomspace(WIDE.sigma_min, WIDE.sigma_max, 33)
    ax.plot(wide, posterior_rms(wide), ":", color="0.4", lw=1.5, label="exact denoiser's own error sqrt(tr Cov[x0 | y])")
    ax.plot(wide, denoiser_rms(f_wide, wide), "-", color="C4", lw=1.5,
            label=f"the same network trained on sigma <= 80: output W2 {w2_wide:.3g}")
    ax.plot(sig, denoiser_rms(f_floor, sig), "k--", lw=1.5, label="best f(y)/sigma on sigma <= 2: the floor of the form")
    ax.plot(sig, denoiser_rms(f_net, sig), "o-", color="C2", ms=4, label="trained network (sigma <= 2)")
    ax.axvline(SCHEDULE.sigma_max, color="0.5", lw=1, ls="-.")
    ax.text(SCHEDULE.sigma_max * 1.15, 2e-3, "sigma = 2: the budget's\nlargest level", fontsize=8.5, color="0.3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("noise level sigma")
    ax.set_ylabel("rms error  sqrt(E ||D - D*||^2)  under p_sigma")
    ax.set_title(f"Where the network errs: its denoiser against the exact one\ndsm_multi excess {ex_net:.4f}, "
                 f"floor of every f(y)/sigma {ex_floor:.4f}", fontsize=10)
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False)
    fig.suptitle(f"Error budget of Euler and Heun with a trained NoiseConditional MLP {HIDDEN} (dsm_multi, "
                 f"{train_steps} Adam steps) on 2-D Gaussian data\n{n} chains from the exact marginal at sigma = 2; "
                 f"red band: network error +-2 jackknife SE", fontsize=12, y=1.02)
    fig_path = save_figure(fig, fig_dir, NAME)
    for r in rows:
        r.figure = fig_path
    return rows
