r"""``refscore bench``: the two hot paths against what users would otherwise write.

Workloads:

* **Langevin ULA**, eq. (4), :math:`x \leftarrow x + \eta\,s(x) + \sqrt{2\eta}\,z`:
  W1, the 2-D mixture :math:`0.2\,N((-5,-5), I) + 0.8\,N((5,5), I)`; W2, a 10-D
  mixture of 5 unit-covariance components (means uniform on :math:`[-5,5]^{10}`,
  seed 0).  N = 10³, 10⁴, 10⁵ chains, 1000 steps, :math:`\eta = 0.01`.  Peers:
  refscore ``backend="numba"`` and ``"numpy"`` (counter-based noise), a plain
  vectorised NumPy ULA with ``np.random.Generator`` noise (**the baseline**), and,
  when importable, JAX (``jit`` + ``lax.scan``) and torch (in-place tensor ops).
  Reported in chain-steps per second.  Also: the counter-based generator's
  normals/s alone, and an arithmetic-limit estimate for the kernel.
* **Langevin on a GPU** (one of the targets below), only when numba sees a real CUDA
  device (not the simulator): ``backend="cuda"`` on W1 and W2 at N = 10⁶ and
  10⁷ chains, with the GPU's float64 multiply-add and ``exp`` rates measured by
  probe kernels and the fraction of the resulting limit.
* **MLP losses**: :class:`~refscore.models.MLPScore` hidden (64, 64) tanh,
  n = 10⁴: ISM (exact trace) loss + parameter gradient and SSM (one Rademacher
  projection) loss + gradient at d = 2, 10, 50, and SSM-VR, DSM (σ = 0.5) and
  ESM (target −x).  Peers: plain NumPy with BLAS products over all n points, as
  a user would write each loss (**the baseline**): ISM by the cyclic-trace
  identity (refscore's closed form), the 'ism generic' row (refscore's any-depth
  forward path) by forward mode over the d inputs, SSM and SSM-VR by one forward
  JVP, DSM and ESM by the residual and its VJP, each with its reverse pass
  written out; torch autograd (loop over d for the exact trace,
  ``create_graph``; double backward for SSM) and JAX (``jit`` of
  ``vmap(jacfwd)`` / ``jvp``).  Every peer's loss value and gradient is compared
  with refscore's (a fairness check: same network, same parameters, same points).
* **MLP loss kernels against their peer and their limit** (``mlp:kernels-t1``,
  ``mlp:kernels-t2``: one and two threads, each in its own process): each loss
  above at d = 10 and 50, refscore's call and its plain-NumPy peer timed in
  turn in one process (best of the rounds; with one thread also the thread's
  CPU time), their values and whole gradients compared (1e-10), and the
  kernel's time against its arithmetic limit (below).  Targets: >= 50 % of the
  limit and >= 3x the peer.
* Peak memory of ISM at n = 10⁵, d = 50: the growth of the resident set during
  the call (high-water mark reset through ``/proc/self/clear_refs``, so Numba's
  allocations count), NumPy's allocations by ``tracemalloc``, and
  ``ru_maxrss``; and the scaling of cost with n and d.

Each framework runs in its own subprocess (thread pools of different
libraries fight on a 2-core machine), with its default thread count.  Times
are the best of ``--repeat`` (>= 3) runs after one warm-up; the first call
(JIT compilation or cache load) is reported separately.  Ratios are to the
plain-NumPy baseline of the same run.

Arithmetic limit (Langevin).  Two measured rates: the throughput of the
samplers' own exponential (:func:`refscore._kernels.vecmath.exp_nonpositive`, branch-free
so that it vectorises: the llvmlite wheels have no SVML) in a Numba loop on
all cores (:math:`t_e` s per call), and the peak multiply-add rate of the machine, from a large BLAS product
(:math:`t_m` s per multiply-add).  One chain-step of a K-component,
d-dimensional unit-covariance mixture needs K exponentials (the softmax) and,
per coordinate, vector arithmetic counted conservatively in multiply-add
equivalents: 5K for the score, 4 for the update, 40 for Box–Muller (the
polynomial log, sin and cos of :mod:`refscore._kernels.philox`, about 54 operations
counted) and 60 for half a Philox4x32-10 call (10 rounds of 2 multiplies, 4
xors, shifts and masks, about 70 counted):

.. math::

    \text{limit} = \frac{1}{K\,t_e + (5K + 104)\,d\,t_m}\ \text{chain-steps/s},

an upper bound on the throughput (operations under-counted, peak rates, no
memory traffic); the
report gives the fraction of it that the numba backend reaches.

Arithmetic limit (MLP loss kernels).  The multiply-adds each kernel's
algorithm needs, counted per point, pass by pass and layer by layer from the
layer sizes (:func:`_mlp_op_counts`, whose docstring derives them; e.g. ESM
:math:`3M - M_1 + \sum_l h_l + 2d` with :math:`M = \sum_l h_l h_{l-1}`), at one
core's peak multiply-add rate (:func:`bench_rates.fma_peak_per_s`: register-resident
fused multiply-adds at the widest vectors Numba emits, 512-bit on an AVX-512
CPU; a BLAS product measures the BLAS, whose kernel may use narrower vectors),
plus one tanh per hidden unit at ``np.tanh``'s rate, divided by the threads:

.. math::

    \text{limit} = \frac{n}{T}\Big(\frac{\text{MAC}}{F} + \frac{\sum_l h_l}{E}\Big)
        + \frac{\text{MAC}_\text{call}}{F}\ \text{seconds}.

It leaves out memory traffic, the derivatives' arithmetic beyond one
multiply-add each, and the threads' hand-off, so no kernel reaches it.

The harness lives in the repository's ``benchmarks/`` folder (with its
probe kernels ``bench_kernels.py`` and ``bench_cuda.py``, which import the
siblings from ``sys.path``) and is not installed with the package:
``refscore bench`` finds it from a clone (next to the ``refscore`` package,
e.g. after ``pip install -e .``, or in the current directory), and
``python benchmarks/bench.py`` runs it directly.  Each worker re-runs this
file as a script.

Usage::

    refscore bench                       # full run, writes bench.json and figures/bench.png
    refscore bench --quick --json /tmp/b.json --no-figure
    refscore bench --only mlp --force

References
----------
Eqs. (3), (4), (7); Hyvärinen (2005); Song, Garg, Shi & Ermon (2019);
Salmon et al. (2011) for Philox.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

__all__ = ["main", "machine_facts"]

_FRAMEWORKS = ("refscore", "numpy", "jax", "torch")
_STEP = 0.01
_HIDDEN = (64, 64)
_DEEP = (64, 64, 64)  # no closed-form trace: the generic path, against peers on the same network


# =========================================================================== helpers
def _best_of(fn, repeat, warmup=True):
    """(best seconds, first-call seconds) of ``fn`` over ``repeat`` timed runs after a warm-up."""
    t0 = time.perf_counter()
    if warmup:
        fn()
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), first


def _mixtures():
    """W1 and W2 as (weights, means) with unit covariances."""
    w1 = (np.array([0.2, 0.8]), np.array([[-5.0, -5.0], [5.0, 5.0]]))
    rng = np.random.default_rng(0)
    w2 = (np.full(5, 0.2), rng.uniform(-5, 5, size=(5, 10)))
    return {"W1": w1, "W2": w2}


def _x0(n, d):
    return np.random.default_rng(1).uniform(-8, 8, size=(n, d))


def _mlp_data(n, d, hidden=_HIDDEN):
    from refscore.losses import projections
    from refscore.models import MLPScore

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    v = projections(rng, (n, d), kind="rademacher")
    model = MLPScore(d, hidden, "tanh")
    theta = model.init(0)
    layers = [(np.array(W), np.array(b)) for W, b in model.unpack(theta)]
    return x, v, layers, model, theta


def _probe(g):
    """A scalar summary of a gradient vector (its dot with fixed random numbers), for cross-checks."""
    g = np.asarray(g, dtype=float).ravel()
    return float(g @ np.random.default_rng(7).standard_normal(g.size))


def _installed(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# =========================================================================== Langevin peers
def plain_numpy_ula(weights, means, x, step, n_steps, rng):
    """What a user writes: vectorised unit-covariance mixture score, Generator noise."""
    logw = np.log(weights)
    sq = np.sqrt(2 * step)
    for _ in range(n_steps):
        diff = x[:, None, :] - means[None]  # (n, k, d)
        ell = logw - 0.5 * np.einsum("nkd,nkd->nk", diff, diff)
        ell -= ell.max(axis=1, keepdims=True)
        r = np.exp(ell)
        r /= r.sum(axis=1, keepdims=True)
        s = -np.einsum("nk,nkd->nd", r, diff)
        x = x + step * s + sq * rng.standard_normal(x.shape)
    return x


def _langevin_refscore(cfg, backend):
    from refscore.distributions import GaussianMixture
    from refscore.sampling import ula

    out = []
    for wname, (w, mu) in _mixtures().items():
        d = mu.shape[1]
        target = GaussianMixture(w, mu, [np.eye(d)] * len(w))
        t0 = time.perf_counter()
        ula(target, _x0(4, d), _STEP, 2, seed=0, backend=backend)
        first = time.perf_counter() - t0
        for N in cfg["sizes"]:
            x0 = _x0(N, d)
            steps = cfg["steps"] if backend != "numpy" else max(2, cfg["steps"] // 10)
            t, _ = _best_of(lambda: ula(target, x0, _STEP, steps, seed=3, backend=backend),
                            cfg["repeat"])
            res = ula(target, x0, _STEP, steps, seed=3, backend=backend)
            out.append({"workload": wname, "N": N, "steps": steps, "seconds": t,
                        "chain_steps_per_s": N * steps / t, "first_call_s": first,
                        "mean_x0": float(res.x[:, 0].mean())})
    return out


def _langevin_plain(cfg):
    out = []
    for wname, (w, mu) in _mixtures().items():
        d = mu.shape[1]
        for N in cfg["sizes"]:
            x0 = _x0(N, d)
            steps = cfg["steps"]
            t, _ = _best_of(lambda: plain_numpy_ula(w, mu, x0, _STEP, steps, np.random.default_rng(2)),
                            cfg["repeat"])
            x = plain_numpy_ula(w, mu, x0, _STEP, steps, np.random.default_rng(2))
            out.append({"workload": wname, "N": N, "steps": steps, "seconds": t,
                        "chain_steps_per_s": N * steps / t, "mean_x0": float(x[:, 0].mean())})
    return out


def _langevin_jax(cfg):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    out = []
    for wname, (w, mu) in _mixtures().items():
        d = mu.shape[1]
        logw = jnp.asarray(np.log(w))
        means = jnp.asarray(mu)

        def score(x):
            diff = x[:, None, :] - means[None]
            ell = logw - 0.5 * jnp.sum(diff * diff, axis=-1)
            r = jax.nn.softmax(ell, axis=1)
            return -jnp.einsum("nk,nkd->nd", r, diff)

        def run(x, key, n_steps):
            sq = np.sqrt(2 * _STEP)

            def body(carry, _):
                x, key = carry
                key, sub = jax.random.split(key)
                x = x + _STEP * score(x) + sq * jax.random.normal(sub, x.shape, dtype=x.dtype)
                return (x, key), None

            (x, _), _ = lax.scan(body, (x, key), None, length=n_steps)
            return x

        runj = jax.jit(run, static_argnums=2)
        for N in cfg["sizes"]:
            x0 = jnp.asarray(_x0(N, d))
            key = jax.random.PRNGKey(2)
            steps = cfg["steps"]
            fn = lambda: runj(x0, key, steps).block_until_ready()  # noqa: E731
            t, first = _best_of(fn, cfg["repeat"])
            out.append({"workload": wname, "N": N, "steps": steps, "seconds": t,
                        "chain_steps_per_s": N * steps / t, "first_call_s": first,
                        "mean_x0": float(np.asarray(fn())[:, 0].mean())})
    return out


def _langevin_torch(cfg):
    import torch

    out = []
    for wname, (w, mu) in _mixtures().items():
        d = mu.shape[1]
        logw = torch.tensor(np.log(w), dtype=torch.float64)
        means = torch.tensor(mu, dtype=torch.float64)
        sq = float(np.sqrt(2 * _STEP))

        @torch.inference_mode()
        def run(x0, n_steps):
            g = torch.Generator().manual_seed(2)
            x = x0.clone()
            z = torch.empty_like(x)
            for _ in range(n_steps):
                diff = x[:, None, :] - means[None]
                r = torch.softmax(logw - 0.5 * (diff * diff).sum(-1), dim=1)
                s = torch.einsum("nk,nkd->nd", r, diff)
                torch.randn(x.shape, generator=g, dtype=torch.float64, out=z)
                x.sub_(s, alpha=_STEP).add_(z, alpha=sq)
            return x

        for N in cfg["sizes"]:
            x0 = torch.tensor(_x0(N, d))
            steps = cfg["steps"]
            t, first = _best_of(lambda: run(x0, steps), cfg["repeat"])
            out.append({"workload": wname, "N": N, "steps": steps, "seconds": t,
                        "chain_steps_per_s": N * steps / t, "first_call_s": first,
                        "mean_x0": float(run(x0, steps)[:, 0].mean())})
    return out


def _noise_and_limit(cfg):
    """Counter-based normals/s (NumPy, Numba), Generator normals/s, exp and FMA throughput."""
    import numba

    from refscore.noise import normal

    res = {"numba_threads": numba.get_num_threads()}
    n = cfg["noise_n"]
    chains = np.arange(n)
    t, _ = _best_of(lambda: normal(seed=1, chain=chains, step=0, dim=2), cfg["repeat"])
    res["counter_numpy_normals_per_s"] = 2 * n / t
    g = np.random.default_rng(0)
    t, _ = _best_of(lambda: g.standard_normal(2 * n), cfg["repeat"])
    res["generator_normals_per_s"] = 2 * n / t
    import bench_kernels as bk
    from refscore.noise import NoiseOrigin

    k0, k1 = NoiseOrigin(1).key
    acc = np.empty(max(1, n // 50))
    t, _ = _best_of(lambda: bk.counter_normals(k0, k1, acc, 50), cfg["repeat"])
    res["counter_numba_normals_per_s"] = acc.size * 100 / t
    m, reps = 32768, max(1, cfg["limit_n"] // 32768)
    xs = np.random.default_rng(0).uniform(-1, 0, m)
    buf = np.empty(m)
    t, _ = _best_of(lambda: bk.exp_throughput(xs, buf, reps), cfg["repeat"])
    res["exp_per_s"] = m * reps / t
    # peak multiply-add rate: a large BLAS product (n³ multiply-adds), all cores
    k = cfg["fma_n"]
    A = np.random.default_rng(1).standard_normal((k, k))
    t, _ = _best_of(lambda: A @ A, cfg["repeat"])
    res["fma_per_s"] = k**3 / t
    return res


# =========================================================================== MLP peers
def _primal_reverse(layers, x, h1, h2, d1, d2, sbar, d1bar=None, d2bar=None, gWs=(0.0, 0.0, 0.0)):
    """Shared tail of the plain-NumPy baselines: reverse through the primal tanh network.

    ``sbar`` is the score cotangent; ``d1``, ``d2`` are φ'(a_l) = 1 − h_l² from the forward pass;
    ``d1bar``, ``d2bar`` the adjoints of φ'(a_l), which enter a_l through ∂φ'/∂a = −2 h φ' (None: φ' has
    no adjoint, a loss without tangents).  ``gWs`` are the weight gradients accumulated so far by a
    tangent reverse pass.
    """
    (W1, _), (W2, _), (W3, _) = layers
    gW1, gW2, gW3 = gWs
    gW3 = gW3 + sbar.T @ h2
    gb3 = sbar.sum(axis=0)
    a2bar = (sbar @ W3) * d2
    if d2bar is not None:
        a2bar -= 2 * d2bar * h2 * d2
    gW2 = gW2 + a2bar.T @ h1
    gb2 = a2bar.sum(axis=0)
    a1bar = (a2bar @ W2) * d1
    if d1bar is not None:
        a1bar -= 2 * d1bar * h1 * d1
    gW1 = gW1 + a1bar.T @ x
    gb1 = a1bar.sum(axis=0)
    return np.concatenate([gW1.ravel(), gb1, gW2.ravel(), gb2, gW3.ravel(), gb3])


def _numpy_ism(layers, x):
    """Plain-NumPy ISM loss + gradient, 2 hidden tanh layers, forward mode over the d inputs.

    Tangents T_l (n, d, h) carry the identity through the network; the
    reverse pass is written out (adjoint of T, of φ' = 1 - h², then the primal).
    The peer of refscore's any-depth forward path (``trace_path="forward"``).
    """
    (W1, b1), (W2, b2), (W3, b3) = layers
    n, d = x.shape
    w = 1.0 / n
    h1 = np.tanh(x @ W1.T + b1)
    d1 = 1 - h1 * h1
    h2 = np.tanh(h1 @ W2.T + b2)
    d2 = 1 - h2 * h2
    s = h2 @ W3.T + b3
    T1 = W1.T[None] * d1[:, None, :]  # (n, d, h1) = ∂h1/∂x_j
    A2 = T1 @ W2.T  # (n, d, h2)
    T2 = A2 * d2[:, None, :]
    J = T2 @ W3.T  # J[k, j, i] = ∂s_i/∂x_j
    per = np.einsum("kjj->k", J) + 0.5 * np.einsum("kd,kd->k", s, s)
    gW3 = w * T2.sum(axis=0)  # Jbar = w I
    T2bar = np.broadcast_to(w * W3, T2.shape)
    A2bar = T2bar * d2[:, None, :]
    d2bar = np.einsum("kjm,kjm->km", T2bar, A2)
    gW2 = A2bar.reshape(-1, A2bar.shape[-1]).T @ T1.reshape(-1, T1.shape[-1])
    T1bar = A2bar @ W2
    d1bar = np.einsum("kjh,hj->kh", T1bar, W1)
    gW1 = np.einsum("kjh,kh->hj", T1bar, d1)
    g = _primal_reverse(layers, x, h1, h2, d1, d2, w * s, d1bar, d2bar, (gW1, gW2, gW3))
    return per.mean(), g


def _numpy_ism_cyclic(layers, x):
    r"""Plain-NumPy ISM loss + gradient, 2 hidden tanh layers, the trace by the cyclic identity.

    :math:`\operatorname{tr}J = \operatorname{tr}(W_3 D_2 W_2 D_1 W_1) = \varphi_1'^\top C\,\varphi_2'` with
    :math:`C = (W_1 W_3)\circ W_2^\top` (docs/derivations.md §4), reversed by hand: the adjoints of
    :math:`\varphi_1'`, :math:`\varphi_2'` and :math:`C`, then :math:`C` into :math:`W_1, W_2, W_3`; BLAS
    products over all n points at once.  The peer of refscore's closed-form ISM kernel (same algebra).
    """
    (W1, b1), (W2, b2), (W3, b3) = layers
    n = x.shape[0]
    w = 1.0 / n
    h1 = np.tanh(x @ W1.T + b1)
    d1 = 1 - h1 * h1
    h2 = np.tanh(h1 @ W2.T + b2)
    d2 = 1 - h2 * h2
    s = h2 @ W3.T + b3
    P = W1 @ W3
    C = P * W2.T
    u = d1 @ C  # u_k = φ'(a_1)ᵀ C
    per = np.einsum("kh,kh->k", u, d2) + 0.5 * np.einsum("kd,kd->k", s, s)
    gC = w * (d1.T @ d2)
    K = gC * W2.T  # adjoint of W_1 W_3
    g = _primal_reverse(layers, x, h1, h2, d1, d2, w * s, w * (d2 @ C.T), w * u,
                        (K @ W3.T, (gC * P).T, W1.T @ K))
    return per.mean(), g


def _numpy_ssm(layers, x, v, variance_reduced=False):
    """Plain-NumPy SSM (or SSM-VR) loss + gradient, one projection: one forward JVP, reverse written out."""
    (W1, b1), (W2, b2), (W3, b3) = layers
    n = x.shape[0]
    w = 1.0 / n
    h1 = np.tanh(x @ W1.T + b1)
    d1 = 1 - h1 * h1
    h2 = np.tanh(h1 @ W2.T + b2)
    d2 = 1 - h2 * h2
    s = h2 @ W3.T + b3
    u1 = v @ W1.T
    t1 = u1 * d1
    u2 = t1 @ W2.T
    t2 = u2 * d2
    jv = t2 @ W3.T
    vjv = np.einsum("kd,kd->k", v, jv)
    if variance_reduced:
        per = vjv + 0.5 * np.einsum("kd,kd->k", s, s)
        sbar = w * s
    else:
        vs = np.einsum("kd,kd->k", v, s)
        per = vjv + 0.5 * vs * vs
        sbar = (w * vs)[:, None] * v
    jvbar = w * v
    gW3 = jvbar.T @ t2
    t2bar = jvbar @ W3
    u2bar = t2bar * d2
    d2bar = t2bar * u2
    gW2 = u2bar.T @ t1
    t1bar = u2bar @ W2
    d1bar = t1bar * u1
    gW1 = (t1bar * d1).T @ v
    g = _primal_reverse(layers, x, h1, h2, d1, d2, sbar, d1bar, d2bar, (gW1, gW2, gW3))
    return per.mean(), g


def _numpy_residual(layers, x, t):
    """Plain-NumPy ½‖s(x) − t‖² loss + gradient (ESM; DSM at x + σz with t = −z/σ): forward, then the VJP."""
    (W1, b1), (W2, b2), (W3, b3) = layers
    n = x.shape[0]
    w = 1.0 / n
    h1 = np.tanh(x @ W1.T + b1)
    h2 = np.tanh(h1 @ W2.T + b2)
    r = h2 @ W3.T + b3 - t
    per = 0.5 * np.einsum("kd,kd->k", r, r)
    return per.mean(), _primal_reverse(layers, x, h1, h2, 1 - h1 * h1, 1 - h2 * h2, w * r)


#: the DSM noise level of the MLP workloads
_DSM_SIGMA = 0.5


def _mlp_losses_inputs(n, d, hidden=_HIDDEN):
    """The MLP workloads' inputs: points, a projection, DSM's standard normal draws and ESM's target
    (the score of N(0, I) at x, -x), the network's layers, model and parameters."""
    x, v, layers, model, theta = _mlp_data(n, d, hidden)
    z = np.random.default_rng(2).standard_normal((n, d))
    return {"x": x, "v": v, "z": z, "target": -x, "layers": layers, "model": model, "theta": theta}


def _mlp_cases(inp):
    """loss -> (refscore call, its plain-NumPy peer), both returning (mean loss, gradient), for the (64, 64) net.

    ``ism``: the closed-form kernel against the cyclic-trace peer; ``ism generic``: refscore's any-depth
    forward path against the forward-mode peer; SSM and SSM-VR against a forward JVP; DSM and ESM against
    the residual and its VJP.  Same network, parameters and points on both sides.
    """
    from refscore import losses
    from refscore.models import MLPScore

    x, v, z, t, layers, model, theta = (inp[k] for k in ("x", "v", "z", "target", "layers", "model", "theta"))
    generic = MLPScore(x.shape[1], _HIDDEN, "tanh", trace_path="forward")
    sig = _DSM_SIGMA
    return {
        "ism": (lambda: losses.ism(model, theta, x, grad=True), lambda: _numpy_ism_cyclic(layers, x)),
        "ism generic": (lambda: losses.ism(generic, theta, x, grad=True), lambda: _numpy_ism(layers, x)),
        "ssm": (lambda: losses.ssm(model, theta, x, v, grad=True), lambda: _numpy_ssm(layers, x, v)),
        "ssm_vr": (lambda: losses.ssm_vr(model, theta, x, v, grad=True),
                   lambda: _numpy_ssm(layers, x, v, variance_reduced=True)),
        "dsm": (lambda: losses.dsm(model, theta, x, sig, z, grad=True),
                lambda: _numpy_residual(layers, x + sig * z, -z / sig)),
        "esm": (lambda: losses.esm(model, theta, x, t, grad=True), lambda: _numpy_residual(layers, x, t)),
    }


def _mlp_numpy(cfg):
    out = []
    for d in cfg["dims"]:
        for loss, (_, fn) in _mlp_cases(_mlp_losses_inputs(cfg["n"], d)).items():
            t, _ = _best_of(fn, cfg["repeat"])
            val, g = fn()
            out.append({"loss": loss, "d": d, "seconds": t, "value": float(val), "grad_probe": _probe(g)})
    return out


def _mlp_refscore(cfg):
    from refscore import losses

    out = []
    for d in cfg["dims"]:
        cases = {loss: ref for loss, (ref, _) in _mlp_cases(_mlp_losses_inputs(cfg["n"], d)).items()}
        x, v, _, deep, theta3 = _mlp_data(cfg["n"], d, _DEEP)
        cases["ism deep"] = lambda: losses.ism(deep, theta3, x, grad=True)
        cases["ssm deep"] = lambda: losses.ssm(deep, theta3, x, v, grad=True)
        for loss, fn in cases.items():
            t, first = _best_of(fn, cfg["repeat"])
            val, g = fn()
            out.append({"loss": loss, "d": d, "seconds": t, "first_call_s": first,
                        "value": float(val), "grad_probe": _probe(g)})
    return out


def _mlp_op_counts(loss, sizes, r=1):
    r"""The arithmetic of one refscore MLP loss kernel, per point, pass by pass and layer by layer.

    ``sizes`` = (d, h_1, …, h_{L-1}, d); layer l (1 … L) has :math:`M_l = h_l h_{l-1}` weights; ``r``
    is the number of projections (SSM, SSM-VR).  Counted from the kernel's equations (module
    docstring of ``refscore/_kernels/mlp_losses.py``, docs/derivations.md §3–4): a product of an
    (a × b) block by a (b × c) one is a·b·c multiply-adds; an elementwise multiply, or multiply then
    add, is one; additions alone (biases, sums of tangent adjoints, the trace's diagonal) are not
    counted.  Only what the algorithm needs is counted (a kernel doing more is slower against it).

    * ``esm``, ``dsm`` (one forward, one reverse pass): forward :math:`a_l = h_{l-1}W_l^\top + b_l`,
      M_l per layer (the output s included); loss :math:`r = s - t`, :math:`\tfrac12\lVert r\rVert^2`,
      :math:`\bar s = w r`: 2d; reverse, layer L: :math:`\bar W_L \mathrel{+}= \bar s^\top h_{L-1}` and
      :math:`\bar h_{L-1} = \bar s W_L`, 2 M_L; hidden l: :math:`\bar a_l = \bar h_l\odot\varphi'`, h_l;
      :math:`\bar W_l`, M_l; :math:`\bar h_{l-1}` (l > 1), M_l.  DSM also forms
      :math:`\tilde x = x + \sigma z` and :math:`t = -z/\sigma`: 2d.
      Total :math:`3M - M_1 + \sum_l h_l + 2d` (+ 2d), M = Σ M_l.
    * ``ssm``, ``ssm_vr`` (r tangents stacked under the primal): forward M_l per layer; tangent
      :math:`\dot a_l = \dot h_{l-1}W_l^\top`, r M_l, and :math:`\dot h_l = \varphi'\odot\dot a_l`,
      r h_l; loss per tangent :math:`v^\top Jv`, :math:`v^\top s`, :math:`\bar s \mathrel{+}= w(v^\top s)v`,
      :math:`\overline{Jv} = w v`: 4d (SSM-VR: 2d per tangent, and :math:`\tfrac12\lVert s\rVert^2`,
      :math:`\bar s = (\sum w)s`: 2d); reverse (primal and tangent rows together) 2(1 + r) M_L at the
      output, and per hidden layer :math:`\sum_j \bar{\dot h}_j\odot\dot a_j` and
      :math:`\bar{\dot h}_j\odot\varphi'` (2r h_l), :math:`\bar a_l = \bar h_l\odot\varphi' +
      (\ldots)\odot\varphi''` (2 h_l), :math:`\bar W_l` ((1 + r) M_l), the adjoint of
      :math:`h_{l-1}` ((1 + r) M_l, l > 1).  Total :math:`(1 + r)(3M - M_1) + (3r + 2)\sum_l h_l + 4rd`.
    * ``ism`` (two hidden layers, the closed-form trace :math:`\operatorname{tr}J = \varphi_1'^\top
      C\varphi_2'`, :math:`C = (W_1W_3)\circ W_2^\top`): forward M_1, M_2, M_3; trace
      :math:`u = \varphi_1'^\top C` (h_1h_2), :math:`u\cdot\varphi_2'` (h_2), :math:`\bar C \mathrel{+}=
      w\varphi_1'\varphi_2'^\top` (h_1h_2 + h_1), :math:`C\varphi_2'` (h_1h_2) and its scaling by
      :math:`w\varphi_1''` (2h_1); loss 2d; reverse as ESM with the injected φ'' terms
      (:math:`\bar a_2`: 3h_2).  Total :math:`3M - M_1 + 3h_1h_2 + 4h_1 + 4h_2 + 2d`.  Once per call:
      C from :math:`W_1W_3` (h_1 d h_2 + h_1h_2) and :math:`\bar C` into the weights (2 h_1 d h_2 + 2 h_1h_2).
    * ``ism generic`` (the d identity tangents stacked, any depth): layer 1's tangents are the columns
      of :math:`W_1` (no product; :math:`\dot h_1 = \varphi'\odot W_1e_j`, d h_1); layers l ≥ 2 carry
      all 1 + d rows ((1 + d) M_l, d h_l); loss 2d; reverse as SSM with r = d, except that the output's
      tangent adjoints :math:`w e_j` are sparse (d h_{L-1} for each of the two output products in place
      of d M_L) and layer 1's weight gradient takes the tangents' adjoints by additions (M_1).

    Returns ``{"rows": [(pass, layer, multiply-adds), ...], "macs": per point, "activations": hidden
    units per point (each one tanh and its two derivatives), "per_call_macs": once per call}``.
    """
    L = len(sizes) - 1
    d = sizes[0]
    M = [0] + [sizes[l] * sizes[l - 1] for l in range(1, L + 1)]  # M[l], l = 1..L
    hid = range(1, L)
    rows, per_call = [], 0
    if loss in ("esm", "dsm"):
        rows += [("forward", f"layer {l}", M[l]) for l in range(1, L + 1)]
        rows += [("loss", "output", 2 * d + (2 * d if loss == "dsm" else 0))]
        rows += [("reverse", f"layer {L}", 2 * M[L])]
        rows += [("reverse", f"layer {l}", sizes[l] + M[l] + (M[l] if l > 1 else 0)) for l in reversed(hid)]
    elif loss in ("ssm", "ssm_vr"):
        rows += [("forward", f"layer {l}", M[l]) for l in range(1, L + 1)]
        rows += [("tangent", f"layer {l}", r * M[l] + (r * sizes[l] if l < L else 0)) for l in range(1, L + 1)]
        rows += [("loss", "output", 4 * r * d if loss == "ssm" else 2 * r * d + 2 * d)]
        rows += [("reverse", f"layer {L}", 2 * (1 + r) * M[L])]
        rows += [("reverse", f"layer {l}", (2 * r + 2) * sizes[l] + (1 + r) * M[l] + ((1 + r) * M[l] if l > 1 else 0))
                 for l in reversed(hid)]
    elif loss == "ism":
        if L != 3:
            raise ValueError(f"the closed-form ISM kernel's count is for two hidden layers, got sizes {sizes}")
        h1, h2 = sizes[1], sizes[2]
        rows += [("forward", f"layer {l}", M[l]) for l in range(1, L + 1)]
        rows += [("trace", "layers 1-2", 3 * h1 * h2 + 3 * h1 + h2), ("loss", "output", 2 * d)]
        rows += [("reverse", "layer 3", 2 * M[3]), ("reverse", "layer 2", 3 * h2 + 2 * M[2]),
                 ("reverse", "layer 1", h1 + M[1])]
        per_call = 3 * h1 * d * h2 + 3 * h1 * h2
    elif loss == "ism generic":
        rows += [("forward", f"layer {l}", M[l]) for l in range(1, L + 1)]
        rows += [("tangent", "layer 1", d * sizes[1])]
        rows += [("tangent", f"layer {l}", d * M[l] + (d * sizes[l] if l < L else 0)) for l in range(2, L + 1)]
        rows += [("loss", "output", 2 * d)]
        rows += [("reverse", f"layer {L}", 2 * (M[L] + d * sizes[L - 1]))]
        rows += [("reverse", f"layer {l}", (2 * d + 2) * sizes[l] + (1 + d) * M[l] + (1 + d) * M[l]) for l in reversed(hid)
                 if l > 1]
        rows += [("reverse", "layer 1", (2 * d + 2) * sizes[1] + M[1])]
    else:
        raise ValueError(f"no operation count for loss {loss!r}")
    return {"rows": rows, "macs": sum(c for _, _, c in rows), "activations": sum(sizes[l] for l in hid),
            "per_call_macs": per_call}


def _mlp_limit_s(counts, n, threads, fma_per_s, tanh_per_s):
    """Seconds the counted arithmetic takes on ``threads`` cores at their measured peak rates:
    n (macs / (T F) + activations / (T E)) + per-call multiply-adds / F (one thread)."""
    return (n * (counts["macs"] / fma_per_s + counts["activations"] / tanh_per_s) / threads
            + counts["per_call_macs"] / fma_per_s)


def _interleaved_best(fns, rounds, cpu, pause=0.0, burst=1):
    """Best-of ``rounds`` seconds of each of ``fns``, run in turn (so that a busy spell of the shared
    machine slows all alike), each turn ``burst`` calls in a row: wall-clock, and with ``cpu`` the
    calling thread's CPU time too.  ``pause`` seconds of sleep before each turn: OpenBLAS's worker
    threads spin for up to about 0.1 s after a call (its thread timeout) on the cores the next call
    needs (measured on 2 threads: refscore's ISM 13.4 ms right after the NumPy peer's call, 8.3 ms
    after a 0.2 s pause); the calls after the first of a turn find the caches and clocks of a busy
    loop, as the peer's own calls do."""
    for fn in fns:
        fn()
    wall = [np.inf] * len(fns)
    cput = [np.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if pause:
                time.sleep(pause)
            for _ in range(burst):
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                wall[i] = min(wall[i], time.perf_counter() - t0)
                cput[i] = min(cput[i], time.thread_time() - c0)
    return wall, (cput if cpu else None)


def _machine_rates():
    """One core's rates (:mod:`bench_rates`)."""
    import bench_rates as br

    return {"fma_peak_per_s": br.fma_peak_per_s(), "fma_vector_bits": br.fma_vector_bits(),
            "tanh_per_s": br.tanh_per_s(), "kernel_activation_per_s": br.kernel_activation_per_s(),
            "blas_fma_per_s_192x64x64": br.blas_fma_per_s(192, 64, 64)}


def _mlp_kernels(cfg):
    """Each MLP loss kernel against its plain-NumPy peer and against its arithmetic limit, in this process.

    The thread count is the worker's (``numba.get_num_threads()``; the peer's BLAS has as many).  For
    each loss of :func:`_mlp_cases` at each d of ``kernel_dims``: refscore's call and the peer's are
    timed in turn, best of the rounds, and their values and whole gradients compared; the limit is
    :func:`_mlp_op_counts` at the rates :mod:`bench_rates` measures here on one core (before and
    after the timings, the best kept), times the threads.  With one thread the times are also the
    thread's CPU time (the machine is shared: CPU time leaves out the spells another process held the
    core).  Each turn is three calls in a row, and with more than one thread it follows a pause that
    lets the peer's BLAS threads stop spinning.
    """
    import numba

    threads = numba.get_num_threads()
    pause = 0.2 if threads > 1 else 0.0  # OpenBLAS's spinning threads (_interleaved_best)
    rates = _machine_rates()
    out = {"threads": threads, "cpu_model": machine_facts()["cpu_model"], "load_start": list(os.getloadavg()),
           "n": cfg["n"], "rates": rates, "rows": []}
    timed = []
    for d in cfg["kernel_dims"]:
        inp = _mlp_losses_inputs(cfg["n"], d)
        sizes = list(inp["model"].sizes)
        for loss, (ref, peer) in _mlp_cases(inp).items():
            (v0, g0), (v1, g1) = ref(), peer()
            gaps = {"value_rel_gap": abs(v1 - v0) / max(abs(v0), 1e-300),
                    "grad_rel_gap": float(np.abs(g1 - g0).max() / max(np.abs(g0).max(), 1e-300))}
            t0 = time.perf_counter()
            ref(), peer()
            burst = 3
            per_round = burst * (time.perf_counter() - t0) + 2 * pause
            rounds = max(3, min(cfg["kernel_rounds"], int(cfg["kernel_seconds"] / per_round)))
            wall, cput = _interleaved_best((ref, peer), rounds, threads == 1, pause, burst)
            timed.append((loss, d, sizes, rounds, gaps, wall, cput))
    # the rates again after the timings, the best of both kept (the strictest limit: a busy spell of
    # the shared machine that slowed a probe must not loosen it)
    again = _machine_rates()
    for key in ("fma_peak_per_s", "tanh_per_s", "kernel_activation_per_s", "blas_fma_per_s_192x64x64"):
        rates[key] = max(rates[key], again[key])
    for loss, d, sizes, rounds, gaps, wall, cput in timed:
        counts = _mlp_op_counts(loss, sizes)
        limit = _mlp_limit_s(counts, cfg["n"], threads, rates["fma_peak_per_s"], rates["tanh_per_s"])
        row = {"loss": loss, "d": d, "sizes": sizes, "rounds": rounds,
               "refscore_s": wall[0], "peer_s": wall[1], "ratio_to_peer": wall[1] / wall[0],
               "limit_s": limit, "fraction_of_limit": limit / wall[0],
               "macs_per_point": counts["macs"], "activations_per_point": counts["activations"],
               "per_call_macs": counts["per_call_macs"], "count_rows": counts["rows"], **gaps}
        if cput is not None:
            row.update(refscore_cpu_s=cput[0], peer_cpu_s=cput[1], ratio_to_peer_cpu=cput[1] / cput[0],
                       fraction_of_limit_cpu=limit / cput[0])
        out["rows"].append(row)
    out["load_end"] = list(os.getloadavg())
    return out


def _mlp_scaling(cfg):
    """refscore time vs n (at d = 10) and vs d (at n = cfg n), fast and generic paths."""
    from refscore import losses
    from refscore.models import MLPScore

    out = []
    rng = np.random.default_rng(0)
    grid = [(n, 10) for n in cfg["scale_n"]] + [(cfg["n"], d) for d in cfg["scale_d"]]
    for n, d in grid:
        x = rng.standard_normal((n, d))
        v = losses.projections(rng, (n, d), kind="rademacher")
        model = MLPScore(d, _HIDDEN, "tanh")
        generic = MLPScore(d, _HIDDEN, "tanh", trace_path="forward")
        theta = model.init(0)
        for loss, fn in (("ism", lambda: losses.ism(model, theta, x, grad=True)),
                         ("ism generic", lambda: losses.ism(generic, theta, x, grad=True)),
                         ("ssm", lambda: losses.ssm(model, theta, x, v, grad=True))):
            t, _ = _best_of(fn, cfg["repeat"])
            out.append({"loss": loss, "n": n, "d": d, "seconds": t})
    return out


def _rss_kib():
    """(VmRSS, VmHWM) of this process in KiB from /proc/self/status, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            vals = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return int(vals["VmRSS"].split()[0]), int(vals["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def _peak_rss_growth(fn):
    """Bytes by which the resident set peaked above its level before ``fn()``.

    Resets the kernel's high-water mark (``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0)
    so that it sees every allocation, Numba's included (``tracemalloc`` sees only
    those made through Python's allocator hooks, i.e. NumPy's).  Pages freed
    earlier and reused count as no growth, so this is the extra memory the call
    needed.  None where unavailable.
    """
    before = _rss_kib()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        before = None
    fn()
    after = _rss_kib()
    if before is None or after is None:
        return None
    return max(0, after[1] - before[0]) * 1024


def _mlp_memory(cfg):
    """Peak memory of ISM loss + gradient at n, d = cfg memory_n, memory_d (closed-form and generic paths)."""
    import resource
    import tracemalloc

    from refscore import losses
    from refscore.models import MLPScore

    n, d = cfg["memory_n"], cfg["memory_d"]
    x = np.random.default_rng(0).standard_normal((n, d))
    out = {"n": n, "d": d, "input_bytes": x.nbytes}
    for name, path in (("fast", "auto"), ("generic", "forward")):
        model = MLPScore(d, _HIDDEN, "tanh", trace_path=path)
        theta = model.init(0)
        losses.ism(model, theta, x[:100], grad=True)  # compile / load the kernels first
        out[f"peak_rss_growth_bytes_{name}"] = _peak_rss_growth(lambda: losses.ism(model, theta, x, grad=True))
        tracemalloc.start()
        losses.ism(model, theta, x, grad=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[f"tracemalloc_peak_bytes_{name}"] = peak
    out["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _torch_net(layers):
    import torch

    params = []
    for W, b in layers:
        params += [torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)]

    def net(x):
        h = x
        for l in range(0, len(params) - 2, 2):
            h = torch.tanh(torch.addmm(params[l + 1], h, params[l].T))
        return torch.addmm(params[-1], h, params[-2].T)

    return net, params


def _mlp_torch(cfg):
    import torch

    out = []
    for d, hidden, tag in [(d, h, t) for d in cfg["dims"] for h, t in ((_HIDDEN, ""), (_DEEP, " deep"))]:
        x, v, layers, _, _ = _mlp_data(cfg["n"], d, hidden)
        net, params = _torch_net(layers)
        X = torch.tensor(x)
        V = torch.tensor(v)

        def ism():
            xr = X.clone().requires_grad_(True)
            s = net(xr)
            tr = 0.0
            for i in range(d):  # exact trace: one backward per input dimension
                gi = torch.autograd.grad(s[:, i].sum(), xr, create_graph=True)[0]
                tr = tr + gi[:, i]
            loss = (tr + 0.5 * (s * s).sum(1)).mean()
            grads = torch.autograd.grad(loss, params)
            return float(loss.detach()), grads

        def ssm():
            xr = X.clone().requires_grad_(True)
            s = net(xr)
            vs = (s * V).sum(1)
            jtv = torch.autograd.grad(vs.sum(), xr, create_graph=True)[0]  # Jᵀv
            loss = ((jtv * V).sum(1) + 0.5 * vs * vs).mean()
            grads = torch.autograd.grad(loss, params)
            return float(loss.detach()), grads

        for loss, fn in (("ism", ism), ("ssm", ssm)):
            t, first = _best_of(fn, cfg["repeat"])
            val, grads = fn()
            flat = np.concatenate([gi.detach().numpy().ravel() for gi in grads])
            out.append({"loss": loss + tag, "d": d, "seconds": t, "first_call_s": first, "value": val,
                        "grad_probe": _probe(flat)})
    return out


def _mlp_jax(cfg):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def mlp(params, x):  # one point (d,)
        h = x
        for W, b in params[:-1]:
            h = jnp.tanh(W @ h + b)
        W, b = params[-1]
        return W @ h + b

    def ism_loss(params, X):
        def per(x):
            s = mlp(params, x)
            J = jax.jacfwd(mlp, argnums=1)(params, x)
            return jnp.trace(J) + 0.5 * s @ s

        return jnp.mean(jax.vmap(per)(X))

    def ssm_loss(params, X, V):
        def per(x, v):
            s, jv = jax.jvp(lambda y: mlp(params, y), (x,), (v,))
            return v @ jv + 0.5 * (v @ s) ** 2

        return jnp.mean(jax.vmap(per)(X, V))

    ism_vg = jax.jit(jax.value_and_grad(ism_loss))
    ssm_vg = jax.jit(jax.value_and_grad(ssm_loss))
    out = []
    for d, hidden, tag in [(d, h, t) for d in cfg["dims"] for h, t in ((_HIDDEN, ""), (_DEEP, " deep"))]:
        x, v, layers, _, _ = _mlp_data(cfg["n"], d, hidden)
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in layers]
        X, V = jnp.asarray(x), jnp.asarray(v)

        def ism():
            val, g = ism_vg(params, X)
            jax.block_until_ready(g)
            return float(val), g

        def ssm():
            val, g = ssm_vg(params, X, V)
            jax.block_until_ready(g)
            return float(val), g

        for loss, fn in (("ism", ism), ("ssm", ssm)):
            t, first = _best_of(fn, cfg["repeat"])
            val, g = fn()
            flat = np.concatenate([np.asarray(a).ravel() for W, b in g for a in (W, b)])
            out.append({"loss": loss + tag, "d": d, "seconds": t, "first_call_s": first, "value": val,
                        "grad_probe": _probe(flat)})
    return out


# =========================================================================== CUDA (item 6)
def _cuda_gpu():
    """True when a real CUDA GPU (not the simulator) is visible to numba."""
    try:
        import numba
        from numba import cuda

        return not numba.config.ENABLE_CUDASIM and bool(cuda.is_available())
    except Exception:  # pragma: no cover - no driver, no toolkit
        return False


def _langevin_cuda(cfg):
    """ULA on W1/W2 with the cuda backend at cfg cuda_sizes chains, and the fraction of the GPU's limit.

    The limit is the CPU's formula (:func:`_limit_chain_steps`) with the GPU's
    measured rates: every coordinate's arithmetic at the float64 multiply-add
    rate, the K exponentials at libdevice ``exp``'s rate.  Times include the
    host-device copies of the chains (``ula`` returns NumPy arrays).
    """
    from numba import cuda

    import bench_cuda

    dev = cuda.get_current_device()
    threads = cfg["cuda_probe_threads_per_sm"] * getattr(dev, "MULTIPROCESSOR_COUNT", 1)
    rates = bench_cuda.gpu_rates(threads, cfg["cuda_probe_reps"])
    name = getattr(dev, "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    shapes = _workload_shapes()
    out = _langevin_refscore(dict(cfg, sizes=cfg["cuda_sizes"]), "cuda")
    for r in out:
        lim = _limit_chain_steps(*shapes[r["workload"]], rates["exp_per_s"], rates["fma_per_s"])
        r.update(device=name, limit_chain_steps_per_s=lim, fraction=r["chain_steps_per_s"] / lim, **rates)
    return out


def _first_calls(cfg):
    """Seconds of the first call of each kernel family, in this fresh process.

    ``cfg["cache"]`` is the kernel cache directory: an empty one measures
    compilation (a cold start), a filled one the load from the cache.
    """
    os.environ["REFSCORE_CACHE_DIR"] = cfg["cache"]
    t0 = time.perf_counter()
    import refscore as rs

    out = {"import_refscore_s": time.perf_counter() - t0}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    v = rng.standard_normal((64, 3))
    p = rs.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2)] * 2)
    m1 = rs.MLPScore(3, (8, 8), "tanh")
    calls = {
        "mlp_losses.ism_closed_form": lambda: rs.ism(m1, m1.init(0), x, grad=True),
        "mlp_losses.stacked_terms": lambda: rs.ssm(m1, m1.init(0), x, v, grad=True),
        "cpu_sampler.langevin": lambda: rs.ula(p, np.zeros((8, 2)), 0.1, 2, seed=0, backend="numba"),
        "cpu_sampler.mala": lambda: rs.mala(p, np.zeros((8, 2)), 0.1, 2, seed=0, backend="numba"),
    }
    for name, call in calls.items():
        t = time.perf_counter()
        call()
        out[name + "_s"] = time.perf_counter() - t
    return out


def _trivial_prange_compile_s():
    """Seconds to compile (and run once) a trivial ``prange`` sum: the yardstick of the compile targets."""
    import numba

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.shape[0]):
            s += x[i]
        return s

    t = time.perf_counter()
    total(np.ones(16))
    return time.perf_counter() - t


def _family_calls():
    """First call -> what a user runs first with each kernel family (the call compiles the family)."""
    import refscore as rs
    from refscore.sampling import NumbaTarget, kinetic_langevin

    rng = np.random.default_rng(0)
    x, v = rng.standard_normal((64, 3)), rng.standard_normal((64, 3))
    mlp = rs.MLPScore(3, (8, 8), "tanh")
    deep = rs.MLPScore(3, (8, 8, 8), "tanh")
    p = rs.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2)] * 2)
    x0 = np.zeros((8, 2))

    def diffusion_sample():
        from refscore.diffusion import EDM, Denoiser, sample

        edm = EDM()
        return sample("heun", Denoiser(p, edm), edm, x0, edm.grid(3), seed=0, backend="numba", progress=False)

    def numba_target():
        import numba

        @numba.njit
        def score(q):
            return -q
        return NumbaTarget(2, score)

    return {
        "ism, MLP 2 hidden (closed-form trace)": lambda: rs.ism(mlp, mlp.init(0), x, grad=True),
        "ism, MLP 3 hidden (forward trace)": lambda: rs.ism(deep, deep.init(0), x, grad=True),
        "ssm": lambda: rs.ssm(mlp, mlp.init(0), x, v, grad=True),
        "dsm": lambda: rs.dsm(mlp, mlp.init(0), x, 0.5, v, grad=True),
        "ula (numba)": lambda: rs.ula(p, x0, 0.1, 2, seed=0, backend="numba", progress=False),
        "mala (numba)": lambda: rs.mala(p, x0, 0.1, 2, seed=0, backend="numba", progress=False),
        "kinetic_langevin (numba)": lambda: kinetic_langevin(p, x0, 0.1, 2, 1.0, seed=0, backend="numba",
                                                             progress=False),
        "ula on a NumbaTarget": lambda: rs.ula(numba_target(), x0, 0.1, 2, seed=0, backend="numba",
                                               progress=False),
        "diffusion heun (numba)": lambda: diffusion_sample(),
    }


def _family_compile(cfg):
    """One family's first call on an empty kernel cache, and the trivial prange compile, in this fresh process."""
    os.environ["REFSCORE_CACHE_DIR"] = cfg["cache"]
    os.environ["REFSCORE_QUIET"] = "1"
    trivial = _trivial_prange_compile_s()
    call = _family_calls()[cfg["family"]]
    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    return {"family": cfg["family"], "first_call_s": first, "trivial_prange_s": trivial, "ratio": first / trivial}


def _dask(cfg):
    """Chain-steps/s of backend="dask" with 1 and 2 local workers against numba in one process,
    and the scheduler's overhead per task (so the block size that keeps it under 5 % is known)."""
    import refscore as rs
    from distributed import Client, LocalCluster
    from refscore.sampling import DaskBackend

    n, steps = cfg["dask_n"], cfg["dask_steps"]
    target = rs.Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 2.0]])
    x0 = np.zeros((n, 2))
    out = {"n": n, "steps": steps}
    rs.ula(target, x0[:256], 0.05, 2, seed=0, backend="numba", progress=False)
    out["numba_1process_chain_steps_per_s"] = n * steps / _best_of(
        lambda: rs.ula(target, x0, 0.05, steps, seed=0, backend="numba", progress=False), cfg["repeat"])[0]
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            dask = DaskBackend(client=client)
            rs.ula(target, x0[:256], 0.05, 2, seed=0, backend=dask, progress=False)
            sec, _ = _best_of(lambda: rs.ula(target, x0, 0.05, steps, seed=0, backend=dask, progress=False),
                              cfg["repeat"])
            out[f"dask_{workers}_workers_chain_steps_per_s"] = n * steps / sec
            if workers == 2:
                futs = client.map(lambda i: i, range(10))
                client.gather(futs)
                k = 200
                t = time.perf_counter()
                client.gather(client.map(lambda i: i + 1, range(k)))
                out["overhead_per_task_s"] = (time.perf_counter() - t) / k * workers
    # a worker runs one thread: its rate is about the in-process rate per core
    rate = out["numba_1process_chain_steps_per_s"] / (os.cpu_count() or 1)
    out["min_chain_steps_per_task_for_5pct_overhead"] = out["overhead_per_task_s"] * rate / 0.05
    return out


def _diffusion(cfg):
    """Chain-steps/s of the diffusion samplers: Heun on EDM's Karras grid (32 steps, two denoiser calls a step but
    the last) with the exact denoiser of W1, ``backend="numba"`` against the NumPy reference; and, in this fresh
    process with an empty kernel cache, the diffusion kernel's first call against a trivial prange compile."""
    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix="refscore-bench-diffusion-")
    os.environ["REFSCORE_CACHE_DIR"] = cache
    os.environ["REFSCORE_QUIET"] = "1"
    try:
        trivial = _trivial_prange_compile_s()
        from refscore.diffusion import EDM, Denoiser, sample
        from refscore.distributions import GaussianMixture

        w, mu = _mixtures()["W1"]
        edm = EDM()
        den = Denoiser(GaussianMixture(w, mu, [np.eye(2)] * 2), edm)
        grid = edm.grid(32)
        t = time.perf_counter()
        sample("heun", den, edm, np.zeros((4, 2)), grid[:3], backend="numba", progress=False)
        first = time.perf_counter() - t
        out = {"sampler": "heun", "workload": "W1", "steps": 32, "first_call_s": first, "trivial_prange_s": trivial,
               "compile_ratio": first / trivial, "rows": []}
        for N in cfg["sizes"]:
            x = _x0(N, 2) * grid[0]
            row = {"N": N}
            for backend in ("numba", "numpy"):
                sec, _ = _best_of(lambda: sample("heun", den, edm, x, grid, backend=backend, progress=False),
                                  cfg["repeat"])
                row[f"{backend}_chain_steps_per_s"] = N * 32 / sec
            a = sample("heun", den, edm, x, grid, backend="numba", progress=False)
            b = sample("heun", den, edm, x, grid)
            row["max_abs_diff"] = float(np.abs(a - b).max())
            out["rows"].append(row)
        return out
    finally:
        shutil.rmtree(cache, ignore_errors=True)


_WORKERS = {
    "langevin:numba": lambda c: _langevin_refscore(c, "numba"),
    "langevin:numpy-backend": lambda c: _langevin_refscore(c, "numpy"),
    "langevin:plain": _langevin_plain,
    "langevin:jax": _langevin_jax,
    "langevin:torch": _langevin_torch,
    "langevin:noise": _noise_and_limit,
    "langevin:cuda": _langevin_cuda,
    "mlp:refscore": _mlp_refscore,
    "mlp:numpy": _mlp_numpy,
    "mlp:kernels-t1": _mlp_kernels,  # each loss kernel against its peer and its limit, on 1 and on 2 threads
    "mlp:kernels-t2": _mlp_kernels,
    "mlp:torch": _mlp_torch,
    "mlp:jax": _mlp_jax,
    "mlp:memory": _mlp_memory,
    "mlp:scaling": _mlp_scaling,
    "dask:local": _dask,
    "diffusion:heun": _diffusion,
    "compile:cold": _first_calls,
    "compile:warm": _first_calls,
    "compile:families": _family_compile,  # run once per family, each in a fresh process and empty cache
}

#: workers run at a thread count of their own, whatever --threads says
_WORKER_THREADS = {"mlp:kernels-t1": 1, "mlp:kernels-t2": 2}
#: the MLP kernels' targets: this fraction of the arithmetic limit, this speed-up over the plain-NumPy peer
KERNEL_LIMIT_FRACTION = 0.5
KERNEL_PEER_RATIO = 3.0

#: the compile target: a family's first call on an empty cache within this many trivial prange compiles
COMPILE_BOUND = 10.0
_NEEDS = {"dask:local": "distributed", "langevin:jax": "jax", "langevin:torch": "torch", "mlp:torch": "torch", "mlp:jax": "jax"}


# =========================================================================== orchestration
def _config(quick, steps=None, repeat=None):
    if quick:
        cfg = {"sizes": [1000], "steps": 20, "repeat": 3, "noise_n": 20_000, "limit_n": 20_000, "fma_n": 256,
               "cuda_sizes": [10_000], "cuda_probe_threads_per_sm": 256, "cuda_probe_reps": 64,
               "n": 1000, "dims": [2, 10], "memory_n": 2000, "memory_d": 10,
               "kernel_dims": [10], "kernel_rounds": 3, "kernel_seconds": 2.0,
               "scale_n": [300, 1000], "scale_d": [2, 10], "dask_n": 2000, "dask_steps": 20}
    else:
        cfg = {"sizes": [1000, 10_000, 100_000], "steps": 1000, "repeat": 3, "noise_n": 1_000_000,
               "limit_n": 1_000_000, "fma_n": 2048,
               "cuda_sizes": [1_000_000, 10_000_000], "cuda_probe_threads_per_sm": 2048, "cuda_probe_reps": 4096,
               "n": 10_000, "dims": [2, 10, 50], "memory_n": 100_000,
               "kernel_dims": [10, 50], "kernel_rounds": 30, "kernel_seconds": 6.0,
               "memory_d": 50, "scale_n": [1000, 3000, 10_000, 30_000, 100_000],
               "scale_d": [2, 5, 10, 20, 50], "dask_n": 200_000, "dask_steps": 500}
    if steps is not None:
        cfg["steps"] = steps
    if repeat is not None:
        cfg["repeat"] = repeat
    return cfg


def _worker_env(threads):
    """Environment of a worker: every thread pool (BLAS, OpenMP, Numba, XLA) at ``threads``."""
    env = dict(os.environ)
    if threads is not None:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[k] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
    return env


def _run_worker(name, cfg, timeout, threads=None):
    """Run one worker in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--config", json.dumps(cfg)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_worker_env(threads))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
    lines = proc.stdout.strip().splitlines()
    return {"result": json.loads(lines[-1]), "wall_s": wall}


def _compile_families(cfg, args):
    """Every family's first call, each in a fresh process with its own empty cache (nothing shared)."""
    import shutil
    import tempfile

    rows = []
    families = list(_FAMILY_NAMES) if not args.quick else list(_FAMILY_NAMES)[:2]
    for family in families:
        print(f"[bench] compile:families {family} ...", file=sys.stderr, flush=True)
        cache = tempfile.mkdtemp(prefix="refscore-bench-family-")
        try:
            out = _run_worker("compile:families", dict(cfg, family=family, cache=cache), args.timeout, args.threads)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        rows.append(out["result"] if "result" in out else {"family": family, "error": out["error"]})
    return rows


#: the families of :func:`_family_calls`, in order (named here so the parent need not import refscore)
_FAMILY_NAMES = ("ism, MLP 2 hidden (closed-form trace)", "ism, MLP 3 hidden (forward trace)", "ssm", "dsm",
                 "ula (numba)", "mala (numba)", "kinetic_langevin (numba)", "ula on a NumbaTarget",
                 "diffusion heun (numba)")


def machine_facts():
    """Cores, CPU model and flags, load average, BLAS thread pools and library versions."""
    facts = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "cores": os.cpu_count(), "platform": platform.platform(),
             "python": platform.python_version()}
    try:
        facts["load_average"] = list(os.getloadavg())
    except OSError:
        facts["load_average"] = None
    model, flags, family, number = None, "", None, None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
                if line.startswith("cpu family") and family is None:
                    family = line.split(":", 1)[1].strip()
                if line.startswith("model\t") and number is None:
                    number = line.split(":", 1)[1].strip()
    except OSError:
        pass
    facts["cpu_model"] = model or platform.processor()
    if family is not None:  # a model name as terse as "AMD EPYC" says little: family and model say the core
        facts["cpu_model"] += f" (family {family}, model {number})"
    facts["simd"] = sorted(f for f in flags.split() if f.startswith(("avx", "fma", "sse4")))
    try:
        from threadpoolctl import threadpool_info

        facts["threadpools"] = threadpool_info()
    except ImportError:
        facts["threadpools"] = None
    facts["versions"] = {k: _installed(k) for k in ("numpy", "numba", "scipy", "jax", "jaxlib", "torch")}
    return facts


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _langevin_table(res):
    plain = {(r["workload"], r["N"]): r["chain_steps_per_s"] for r in res.get("langevin:plain", [])}
    cols = [("numba", "langevin:numba"), ("numpy bknd", "langevin:numpy-backend"),
            ("plain numpy", "langevin:plain"), ("jax", "langevin:jax"), ("torch", "langevin:torch")]
    if res.get("langevin:cuda"):
        cols.append(("cuda", "langevin:cuda"))
    table = {}
    for label, key in cols:
        for r in res.get(key, []):
            table[(r["workload"], r["N"], label)] = r["chain_steps_per_s"]
    keys = sorted({(w, N) for (w, N, _) in table})
    lines = ["ULA chain-steps/s (ratio to plain NumPy in brackets)",
             f"{'workload':<9}{'N':>8}" + "".join(f"{c[0]:>20}" for c in cols)]
    for w, N in keys:
        row = f"{w:<9}{N:>8}"
        for label, _ in cols:
            v = table.get((w, N, label))
            p = plain.get((w, N))
            cell = "-" if v is None else f"{v:.3g}" + (f" ({v / p:.2f}x)" if p else "")
            row += f"{cell:>20}"
        lines.append(row)
    return lines


def _mlp_table(res, n):
    cols = [("refscore", "mlp:refscore"), ("plain numpy", "mlp:numpy"), ("torch", "mlp:torch"),
            ("jax", "mlp:jax")]
    table = {}
    for label, key in cols:
        for r in res.get(key, []):
            table[(r["loss"], r["d"], label)] = r["seconds"]
    base = {(lo, d): t for (lo, d, lab), t in table.items() if lab == "plain numpy"}
    keys = sorted({(lo, d) for (lo, d, _) in table})
    lines = [f"MLPScore (64, 64) tanh, n = {n}: loss + gradient, ms (speed-up over plain NumPy: ISM by the "
             "cyclic trace, 'ism generic' (refscore's any-depth forward path) by forward mode, SSM by a JVP, "
             "DSM/ESM by a VJP); 'deep': hidden (64, 64, 64)",
             f"{'loss':<12}{'d':>4}" + "".join(f"{c[0]:>18}" for c in cols)]
    for lo, d in keys:
        row = f"{lo:<12}{d:>4}"
        p = base.get((lo, d))
        for label, _ in cols:
            t = table.get((lo, d, label))
            cell = "-" if t is None else f"{t * 1e3:.1f}" + (f" ({p / t:.1f}x)" if p else "")
            row += f"{cell:>18}"
        lines.append(row)
    return lines


def _kernel_table(res):
    """The loss kernels against their peers and their limits (:func:`_mlp_kernels`), one block per thread count."""
    lines = []
    for key in ("mlp:kernels-t1", "mlp:kernels-t2"):
        k = res.get(key)
        if not k:
            continue
        rt = k["rates"]
        cpu = k["threads"] == 1
        lines += ["", f"MLP loss kernels, {k['cpu_model']}, {k['threads']} thread(s), n = {k['n']}, MLPScore (64, 64) tanh; load "
                  f"{', '.join(f'{x:.2f}' for x in k['load_start'])} -> {', '.join(f'{x:.2f}' for x in k['load_end'])}",
                  f"limit: counted multiply-adds at {rt['fma_peak_per_s'] / 1e9:.1f} GFMA/s a core "
                  f"({rt['fma_vector_bits']}-bit vectors) + tanh at {rt['tanh_per_s'] / 1e9:.2f} G/s a core (np.tanh); "
                  f"for comparison np.dot (192x64)(64x64) one thread {rt['blas_fma_per_s_192x64x64'] / 1e9:.1f} GFMA/s, "
                  f"the kernels' tanh with 2 derivatives {rt['kernel_activation_per_s'] / 1e9:.2f} G/s",
                  f"{'loss':<12}{'d':>4}{'MAC/pt':>8}{'refscore ms':>13}{'peer ms':>10}{'x peer':>8}{'limit ms':>10}"
                  f"{'of limit':>10}" + (f"{'cpu ms':>9}{'x peer':>8}{'of limit':>10}" if cpu else "")
                  + f"{'max gap':>10}"]
        for r in k["rows"]:
            row = (f"{r['loss']:<12}{r['d']:>4}{r['macs_per_point']:>8}{r['refscore_s'] * 1e3:>13.2f}{r['peer_s'] * 1e3:>10.2f}"
                   f"{r['ratio_to_peer']:>7.2f}x{r['limit_s'] * 1e3:>10.2f}{r['fraction_of_limit']:>10.0%}")
            if cpu:
                row += f"{r['refscore_cpu_s'] * 1e3:>9.2f}{r['ratio_to_peer_cpu']:>7.2f}x{r['fraction_of_limit_cpu']:>10.0%}"
            lines.append(row + f"{max(r['value_rel_gap'], r['grad_rel_gap']):>10.1e}")
    if lines:
        lines.append("peer: the same loss and gradient in plain NumPy with BLAS products, timed in turn with refscore "
                     "in one process, best of the rounds; 'max gap': value and whole gradient, relative"
                     + ("; cpu: the thread's CPU time (one thread)" if "mlp:kernels-t1" in res else ""))
    return lines


def _kernel_targets(res):
    """Target rows of the loss kernels: >= KERNEL_LIMIT_FRACTION of the limit, >= KERNEL_PEER_RATIO x the peer,
    and the peer's value and gradient equal to refscore's to 1e-10 (the comparison is fair)."""
    out = []
    for key in ("mlp:kernels-t1", "mlp:kernels-t2"):
        k = res.get(key) or {}
        for r in k.get("rows", []):
            what = f"mlp kernel {r['loss']} d={r['d']}, {k['threads']} thread(s)"
            out.append({"target": f"{what}: >= {KERNEL_LIMIT_FRACTION:.0%} of its arithmetic limit",
                        "speedup": r["fraction_of_limit"] / KERNEL_LIMIT_FRACTION,
                        "shown": f"{r['fraction_of_limit']:.0%}", "met": r["fraction_of_limit"] >= KERNEL_LIMIT_FRACTION})
            out.append({"target": f"{what}: >= {KERNEL_PEER_RATIO:g}x its plain-NumPy peer",
                        "speedup": r["ratio_to_peer"], "met": r["ratio_to_peer"] >= KERNEL_PEER_RATIO})
            gap = max(r["value_rel_gap"], r["grad_rel_gap"])
            out.append({"target": f"{what}: peer's value and gradient within 1e-10 of refscore's",
                        "speedup": 1e-10 / max(gap, 1e-300), "shown": f"{gap:.1e}", "met": gap <= 1e-10})
    return out


def _targets(res):
    """The performance targets, evaluated on this run."""
    out = []
    ref = {(r["loss"], r["d"]): r["seconds"] for r in res.get("mlp:refscore", [])}
    tor = {(r["loss"], r["d"]): r["seconds"] for r in res.get("mlp:torch", [])}
    for (loss, d), tt in sorted(tor.items()):
        need = 3.0 if (loss.startswith("ism") and d == 10) else 1.0
        tr = ref.get((loss, d))
        if tr is not None:
            out.append({"target": f"{loss} d={d}: >= {need:g}x torch", "speedup": tt / tr,
                        "met": tt / tr >= need})
    out += _kernel_targets(res)
    for r in res.get("compile:families", []):
        if "ratio" in r:
            out.append({"target": f"first call of {r['family']} <= {COMPILE_BOUND:g}x trivial prange compile",
                        "speedup": COMPILE_BOUND / r["ratio"], "met": r["ratio"] <= COMPILE_BOUND})
    plain = {(r["workload"], r["N"]): r["chain_steps_per_s"] for r in res.get("langevin:plain", [])}
    nb = {(r["workload"], r["N"]): r["chain_steps_per_s"] for r in res.get("langevin:numba", [])}
    for (w, N), v in sorted(nb.items()):
        if N != max(N2 for (_, N2) in nb):
            continue
        need = 4.0 if w == "W1" else 2.0
        if (w, N) in plain:
            out.append({"target": f"ULA {w} N={N}: numba >= {need:g}x plain NumPy",
                        "speedup": v / plain[(w, N)], "met": v / plain[(w, N)] >= need})
        for peer in ("jax", "torch"):
            pr = {(r["workload"], r["N"]): r["chain_steps_per_s"] for r in res.get(f"langevin:{peer}", [])}
            if (w, N) in pr:
                out.append({"target": f"ULA {w} N={N}: numba ahead of {peer}",
                            "speedup": v / pr[(w, N)], "met": v > pr[(w, N)]})
    return out


def _workload_shapes():
    """Workload name -> (K components, dimension d)."""
    return {name: (len(w), mu.shape[1]) for name, (w, mu) in _mixtures().items()}


def _limit_chain_steps(K, d, exp_per_s, fma_per_s):
    """The arithmetic limit of the module notes: 1 / (K t_e + (5K + 104) d t_m) chain-steps/s."""
    return 1.0 / (K / exp_per_s + (5 * K + 104) * d / fma_per_s)


def _limit(res):
    """Arithmetic-limit estimate (module docstring) and the fraction the numba backend reaches."""
    nz = res.get("langevin:noise")
    if not nz:
        return []
    shapes = _workload_shapes()
    out = []
    for r in res.get("langevin:numba", []):
        lim = _limit_chain_steps(*shapes[r["workload"]], nz["exp_per_s"], nz["fma_per_s"])
        out.append({"workload": r["workload"], "N": r["N"], "limit_chain_steps_per_s": lim,
                    "fraction": r["chain_steps_per_s"] / lim})
    return out


def _check_values(res):
    """Every MLP peer's loss value and gradient probe against refscore's (same network, data), and the kernel
    workers' values and whole gradients against their peers': max relative gap."""
    ref = {(r["loss"], r["d"]): r for r in res.get("mlp:refscore", [])}
    gap = 0.0
    for key in ("mlp:kernels-t1", "mlp:kernels-t2"):
        for r in (res.get(key) or {}).get("rows", []):
            gap = max(gap, r["value_rel_gap"], r["grad_rel_gap"])
    for key in ("mlp:numpy", "mlp:torch", "mlp:jax"):
        for r in res.get(key, []):
            r0 = ref.get((r["loss"], r["d"]))
            if r0 is not None:
                for k in ("value", "grad_probe"):
                    gap = max(gap, abs(r[k] - r0[k]) / max(1.0, abs(r0[k])))
    return gap


def _figure(res, path, n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    sc = res.get("mlp:scaling", [])
    styles = {"ism": "o-", "ism generic": "s--", "ssm": "^-"}
    d_fixed = 10
    for loss, st in styles.items():
        pts = sorted((r["n"], r["seconds"]) for r in sc if r["loss"] == loss and r["d"] == d_fixed)
        if pts:
            axes[0].loglog(*zip(*pts), st, label=loss)
        pts = sorted((r["d"], r["seconds"]) for r in sc if r["loss"] == loss and r["n"] == n)
        if pts:
            axes[1].loglog(*zip(*pts), st, label=loss)
    for ax, xl, title in ((axes[0], "n (points)", f"MLP loss+grad vs n (d = {d_fixed})"),
                          (axes[1], "d", f"MLP loss+grad vs d (n = {n})")):
        ax.set_xlabel(xl)
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    pts = sorted((r["d"], r["seconds"]) for r in sc if r["loss"] == "ism generic" and r["n"] == n)
    if len(pts) >= 2:
        ds = np.array([p[0] for p in pts], dtype=float)
        axes[1].loglog(ds, pts[-1][1] * ds / ds[-1], "k:", lw=1, label="∝ d")
        axes[1].set_xticks(ds, [f"{int(v)}" for v in ds])
        axes[1].minorticks_off()
        axes[1].legend()
    pts = sorted((r["n"], r["seconds"]) for r in sc if r["loss"] == "ism" and r["d"] == d_fixed)
    if len(pts) >= 2:
        n0, t0 = pts[0]
        xs = np.array([p[0] for p in pts], dtype=float)
        axes[0].loglog(xs, t0 * xs / n0, "k:", lw=1, label="∝ n")
        axes[0].legend()
    for key, label in (("langevin:numba", "numba"), ("langevin:plain", "plain numpy"),
                       ("langevin:jax", "jax"), ("langevin:torch", "torch")):
        for w, st in (("W1", "-"), ("W2", "--")):
            pts = sorted((r["N"], r["chain_steps_per_s"]) for r in res.get(key, []) if r["workload"] == w)
            if pts:
                axes[2].loglog(*zip(*pts), st, marker="o", label=f"{label} {w}")
    axes[2].set_xlabel("chains N")
    axes[2].set_ylabel("chain-steps / s")
    axes[2].set_title("ULA throughput (W1 solid, W2 dashed)")
    axes[2].grid(True, which="both", alpha=0.3)
    if axes[2].lines:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parser():
    ap = argparse.ArgumentParser(prog="refscore bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a CI smoke test (seconds)")
    ap.add_argument("--only", choices=("langevin", "mlp", "compile", "dask", "diffusion"),
                    help="run one group of workloads")
    ap.add_argument("--json", default="bench.json", help="where to write results (default bench.json)")
    ap.add_argument("--figure", default=os.path.join("figures", "bench.png"),
                    help="scaling figure path (default figures/bench.png)")
    ap.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    ap.add_argument("--force", action="store_true", help="overwrite existing JSON / figure")
    ap.add_argument("--no-peers", action="store_true", help="skip JAX and torch even if importable")
    ap.add_argument("--steps", type=int, help="Langevin steps (default 1000, 20 with --quick)")
    ap.add_argument("--repeat", type=int, help="timed runs per case, best kept (default 3)")
    ap.add_argument("--threads", type=int,
                    help="threads for every framework's pools (default: each library's own default)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker process")
    ap.add_argument("--contention", action="store_true",
                    help="time each hot path alone and beside competing processes, against its fair-share "
                         "slowdown (benchmarks/contention.py); writes --json (default contention.json)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="--contention: seconds of timed calls per measurement (default 3)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    return ap


def _contention_main(args):
    import contention

    path = "contention.json" if args.json == "bench.json" else args.json
    if os.path.exists(path) and not args.force:
        print(f"refscore bench: {path} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    if args.seconds <= 0:
        print(f"refscore bench: --seconds must be > 0, got {args.seconds}", file=sys.stderr)
        return 2
    report = contention.run(seconds=0.5 if args.quick else args.seconds,
                            paths=["ism:refscore", "ula:refscore"] if args.quick else None,
                            mixes=["python x2"] if args.quick else None)
    report["machine"] = machine_facts()
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=1)
    os.replace(tmp, path)
    print("\n".join(contention.table(report)))
    print(f"written {path}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``refscore bench``; returns the exit status."""
    ap = _parser()
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker not in _WORKERS:
            ap.error(f"unknown worker {args.worker!r}")
        print(json.dumps(_WORKERS[args.worker](json.loads(args.config))))
        return 0
    if args.contention:
        return _contention_main(args)
    if args.repeat is not None and args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    want_fig = not args.no_figure
    for path, on in ((args.json, True), (args.figure, want_fig)):
        if on and os.path.exists(path) and not args.force:
            print(f"refscore bench: {path} exists; pass --force to overwrite", file=sys.stderr)
            return 2
    cfg = _config(args.quick, args.steps, args.repeat)
    groups = ("langevin", "mlp", "compile", "dask", "diffusion") if args.only is None else (args.only,)
    names = [k for k in _WORKERS if k.split(":")[0] in groups]
    import shutil
    import tempfile

    cache_tmp = tempfile.mkdtemp(prefix="refscore-bench-cache-")  # compile:cold fills it, compile:warm reads it
    report = {"machine": machine_facts(), "config": cfg, "quick": args.quick, "threads": args.threads,
              "results": {},
              "skipped": {}}
    for name in names:
        lib = _NEEDS.get(name)
        if lib and (args.no_peers or _installed(lib) is None):
            report["skipped"][name] = "--no-peers" if args.no_peers else f"{lib} not installed"
            continue
        if name == "langevin:cuda" and not _cuda_gpu():
            report["skipped"][name] = "no CUDA GPU visible to numba"
            continue
        if name == "compile:families":
            report["results"][name] = _compile_families(cfg, args)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        wcfg = dict(cfg, cache=cache_tmp) if name.startswith("compile:") else cfg
        out = _run_worker(name, wcfg, args.timeout, _WORKER_THREADS.get(name, args.threads))
        if "error" in out:
            report["skipped"][name] = out["error"]
            print(f"[bench] {name} failed: {out['error']}", file=sys.stderr)
            continue
        report["results"][name] = out["result"]
    shutil.rmtree(cache_tmp, ignore_errors=True)
    res = report["results"]
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["targets"] = _targets(res)
    report["arithmetic_limit"] = _limit(res)
    report["mlp_value_max_rel_gap"] = _check_values(res)

    m = report["machine"]
    lines = [f"refscore bench  {m['date']}  {m['cpu_model']}  {m['cores']} cores  "
             f"load {', '.join(f'{x:.2f}' for x in (m['load_average'] or []))}"]
    if "langevin:noise" in res:
        nz = res["langevin:noise"]
        lines.append(f"normals/s: counter NumPy {_fmt(nz['counter_numpy_normals_per_s'])}, counter Numba "
                     f"{_fmt(nz['counter_numba_normals_per_s'])}, np.random.Generator "
                     f"{_fmt(nz['generator_normals_per_s'])};  exp/s {_fmt(nz['exp_per_s'])}, "
                     f"FMA/s {_fmt(nz['fma_per_s'])} ({nz['numba_threads']} threads)")
    if any(k.startswith("langevin:") and k != "langevin:noise" for k in res):
        lines += [""] + _langevin_table(res)
        for r in res.get("langevin:numba", [])[:1]:
            lines.append(f"numba first call (compile or cache load): {r['first_call_s']:.2f} s")
        for r in res.get("langevin:jax", [])[:1]:
            lines.append(f"jax first call (compile): {r['first_call_s']:.2f} s")
        for r in report["arithmetic_limit"]:
            lines.append(f"arithmetic limit {r['workload']} N={r['N']}: "
                         f"{r['limit_chain_steps_per_s']:.3g} chain-steps/s, numba reaches {r['fraction']:.0%}")
        for r in res.get("langevin:cuda", []):
            lines.append(f"cuda {r['device']} {r['workload']} N={r['N']}: {r['chain_steps_per_s']:.3g} chain-steps/s, "
                         f"{r['fraction']:.0%} of the GPU limit {r['limit_chain_steps_per_s']:.3g} (FMA/s "
                         f"{r['fma_per_s']:.3g}, exp/s {r['exp_per_s']:.3g})")
    if any(k in res for k in ("mlp:refscore", "mlp:torch", "mlp:jax", "mlp:numpy")):
        lines += [""] + _mlp_table(res, cfg["n"])
        lines.append(f"loss values and gradients agree across peers to {report['mlp_value_max_rel_gap']:.1e} (relative)")
        for r in res.get("mlp:jax", [])[:2]:
            lines.append(f"jax first call ({r['loss']}, d={r['d']}, compile): {r['first_call_s']:.2f} s")
    lines += _kernel_table(res)
    if "mlp:memory" in res:
        mm = res["mlp:memory"]
        def mib(key):
            v = mm.get(key)
            return "n/a" if v is None else f"{v / 2**20:.1f} MiB"

        lines.append(f"ISM peak memory n={mm['n']} d={mm['d']} (input {mib('input_bytes')}): peak RSS growth "
                     f"{mib('peak_rss_growth_bytes_fast')} closed-form path, {mib('peak_rss_growth_bytes_generic')} "
                     f"generic path; NumPy allocations (tracemalloc) {mib('tracemalloc_peak_bytes_fast')} / "
                     f"{mib('tracemalloc_peak_bytes_generic')}; process max RSS {mib('ru_maxrss_bytes')}")
    if "dask:local" in res:
        r = res["dask:local"]
        lines.append(f"dask ULA n={r['n']} x {r['steps']} steps: numba in one process "
                     f"{r['numba_1process_chain_steps_per_s']:.3g} chain-steps/s; dask 1 worker "
                     f"{r['dask_1_workers_chain_steps_per_s']:.3g}, 2 workers {r['dask_2_workers_chain_steps_per_s']:.3g}; "
                     f"overhead {1e3 * r['overhead_per_task_s']:.1f} ms per task, so >= "
                     f"{r['min_chain_steps_per_task_for_5pct_overhead']:.2g} chain-steps per task keep it under 5 %")
    if "diffusion:heun" in res:
        r = res["diffusion:heun"]
        lines.append(f"diffusion {r['sampler']} on EDM ({r['steps']} steps), exact denoiser of {r['workload']}:")
        for q in r["rows"]:
            nb, ref = q["numba_chain_steps_per_s"], q["numpy_chain_steps_per_s"]
            lines.append(f"  N={q['N']}: numba {nb:.3g} chain-steps/s, NumPy reference {ref:.3g} ({nb / ref:.1f}x); "
                         f"max |numba - numpy| {q['max_abs_diff']:.1e}")
        lines.append(f"diffusion kernel first call (empty cache) {r['first_call_s']:.1f} s = {r['compile_ratio']:.1f}x "
                     f"trivial prange ({r['trivial_prange_s']:.2f} s)")
    for which in ("compile:cold", "compile:warm"):
        if which in res:
            r = res[which]
            what = "compile, empty cache" if which.endswith("cold") else "load from the cache"
            lines.append(f"first calls ({what}): import refscore {r['import_refscore_s']:.2f} s; " + ", ".join(
                f"{k[:-2]} {v:.1f} s" for k, v in r.items() if k != "import_refscore_s"))
    if "compile:families" in res:
        lines += ["", f"first call on an empty cache, each in a fresh process (bound: {COMPILE_BOUND:g}x a trivial "
                  "prange compile in the same process):"]
        for r in res["compile:families"]:
            if "error" in r:
                lines.append(f"  {r['family']}: failed: {r['error']}")
            else:
                lines.append(f"  {r['family']}: {r['first_call_s']:.1f} s = {r['ratio']:.1f}x trivial prange "
                             f"({r['trivial_prange_s']:.2f} s)")
    if report["targets"]:
        lines += ["", "targets:"]
        for t in report["targets"]:
            shown = t.get("shown", f"{t['speedup']:.2f}x")
            lines.append(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {shown}")
    for k, why in report["skipped"].items():
        lines.append(f"skipped {k}: {why}")
    text = "\n".join(lines)
    print(text)
    report["table"] = text
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=1)
    if want_fig and ("mlp:scaling" in res or "langevin:numba" in res):
        _figure(res, args.figure, cfg["n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
