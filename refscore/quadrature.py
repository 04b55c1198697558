r"""Exact expectations under closed-form targets by tensor Gauss–Hermite quadrature.

Derivation: docs/derivations.md §10 (Gauss–Hermite rules, tensor products, population losses).

For :math:`x \sim N(\mu, \Sigma)` with :math:`\Sigma = LL^\top` write
:math:`x = \mu + Lt`, :math:`t \sim N(0, I_d)`.  The probabilists' Gauss–Hermite
rule of order :math:`m` (``numpy.polynomial.hermite_e.hermegauss``; nodes
:math:`t_a`, weights :math:`\omega_a / \sqrt{2\pi}` summing to 1) integrates
every polynomial of degree :math:`\le 2m-1` against :math:`N(0,1)` exactly.  Its
tensor product over the :math:`d` axes therefore gives

.. math::

    E_p f = \sum_{a_1 \dots a_d} \Big(\prod_i \tfrac{\omega_{a_i}}{\sqrt{2\pi}}\Big)
            f(\mu + L\,(t_{a_1}, \dots, t_{a_d})),

exact (to round-off) whenever :math:`f` is a polynomial in :math:`x` of total
degree :math:`\le 2m - 1` (a polynomial of total degree :math:`p` in :math:`x`
is one of total degree :math:`p` in :math:`t`, hence of degree :math:`\le p` in
each axis).  For non-polynomial :math:`f` the result is an approximation whose
error decays with :math:`m`: fast for entire, Gaussian-like integrands (a
Gaussian kernel of width comparable to the target's: ~1e-13 at order 40 in 2-D),
slowly for ratios such as a mixture's score (poles off the real axis): the
Fisher identity :math:`E\lVert s\rVert^2 = -E\operatorname{tr}\nabla s` of a
2-D two-component mixture holds to 9e-6 at order 32, 4e-8 at 64, 6e-9 at 96.
Always check convergence by raising ``order`` for such :math:`f`.  A mixture
:math:`\sum_j w_j N(\mu_j, \Sigma_j)` uses the union of its components' grids
with weights multiplied by :math:`w_j`.

Default ``order`` by dimension (nodes per component = order**d):

====  =======  ======  =========================================
d     order    nodes   exact for polynomials of total degree ≤
====  =======  ======  =========================================
1     64       64      127
2     32       1024    63
3     16       4096    31
4     8        4096    15
====  =======  ======  =========================================

Any dimension is accepted with an explicit ``order`` as long as a component's
grid has at most :data:`MAX_NODES` nodes; with ``order=None`` quadrature is
offered for d ≤ 4.

Monte Carlo is never silent: :func:`expectation` with the default
``method="quadrature"`` raises for targets it cannot integrate exactly
(:class:`~refscore.distributions.StudentT`, :class:`~refscore.distributions.Banana`,
too many nodes); ``method="monte_carlo"`` returns a :class:`MonteCarloEstimate`
``(value, stderr)``, a different type from the plain array of the exact route.

References
----------
.. [1] G. H. Golub, J. H. Welsch, "Calculation of Gauss quadrature rules",
   Math. Comp. 23, 1969.
.. [2] P. Jäckel, "A note on multivariate Gauss–Hermite quadrature", 2005
   (mapping through the Cholesky factor).
"""
from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ._validation import as_float_array, as_rng, check_choice, check_int
from .distributions import Gaussian, GaussianMixture

__all__ = [
    "expectation",
    "gauss_hermite_nodes",
    "standard_normal_nodes",
    "product_rule",
    "default_order",
    "MonteCarloEstimate",
    "MAX_NODES",
    "MAX_ORDER",
]

#: largest tensor grid (nodes per Gaussian component) built without complaint
MAX_NODES = 2 ** 20

#: largest 1-D order: numpy's ``hermegauss`` weights overflow to NaN near 512
#: (at 256 they still sum to 1 and reproduce E t², E t⁴ to ~1e-15)
MAX_ORDER = 256

_DEFAULT_ORDER = {1: 64, 2: 32, 3: 16, 4: 8}


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate: ``value`` and its standard error ``stderr`` (same shape).

    ``stderr`` is the sample standard deviation (ddof=1) divided by
    :math:`\\sqrt{n}`; the estimate is NOT exact.
    """

    value: np.ndarray
    stderr: np.ndarray


def default_order(dim: int) -> int:
    """The default Gauss–Hermite order for dimension ``dim`` (1 ≤ dim ≤ 4)."""
    if dim not in _DEFAULT_ORDER:
        raise ValueError(
            f"no default quadrature order for dim={dim} (defaults exist for d <= 4); "
            f"pass order explicitly or use method='monte_carlo'"
        )
    return _DEFAULT_ORDER[dim]


def _check_order(order, dim):
    if order is None:
        return default_order(dim)
    order = check_int("order", order, 1)
    if order > MAX_ORDER:
        raise ValueError(f"order must be <= MAX_ORDER={MAX_ORDER} (hermegauss breaks down beyond), got {order}")
    if float(order) ** dim > MAX_NODES:
        raise ValueError(
            f"order={order} in dim={dim} needs {float(order) ** dim:.3g} nodes per component "
            f"(limit MAX_NODES={MAX_NODES}); lower order or use method='monte_carlo'"
        )
    return int(order)


@functools.lru_cache(maxsize=64)
def _rule_1d(order: int):
    """Probabilists' Gauss–Hermite nodes and weights normalised to sum to 1 (cached, read-only)."""
    t, w = hermegauss(order)
    w = w / np.sqrt(2.0 * np.pi)
    t.setflags(write=False)
    w.setflags(write=False)
    return t, w


def standard_normal_nodes(dim: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Tensor Gauss–Hermite rule for :math:`N(0, I_{dim})`.

    Returns ``(nodes (order**dim, dim), weights (order**dim,))`` with weights
    summing to 1; exact for polynomials of degree :math:`\le 2\,\mathrm{order}-1`
    in each coordinate.  Node ``a`` has coordinates ordered with the last axis
    varying fastest (``itertools.product`` order).
    """
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    order = _check_order(order, int(dim))
    t, w = _rule_1d(order)
    grids = np.meshgrid(*([t] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    wgrid = np.meshgrid(*([w] * dim), indexing="ij")
    weights = np.prod(np.stack([g.ravel() for g in wgrid], axis=1), axis=1)
    return nodes, weights


def gauss_hermite_nodes(dist, order=None) -> tuple[np.ndarray, np.ndarray]:
    r"""Quadrature rule ``(nodes (m, d), weights (m,))`` for a Gaussian or mixture.

    .. math::

        E_p f \approx \sum_a W_a f(X_a), \qquad
        X = \mu_j + L_j t, \quad W = w_j \prod_i \omega_{a_i}/\sqrt{2\pi}

    for every component ``j`` (``w_j = 1`` for a Gaussian); ``m = k * order**d``.
    Weights sum to 1.  Exact for polynomials of total degree
    :math:`\le 2\,\mathrm{order} - 1` (see the module docstring).

    Parameters
    ----------
    dist : Gaussian or GaussianMixture
    order : int, optional
        Nodes per axis; ``None`` picks :func:`default_order` ``(dist.dim)``.
    """
    if isinstance(dist, Gaussian):
        means, chols, ws = dist.mean[None], dist.chol[None], np.ones(1)
    elif isinstance(dist, GaussianMixture):
        means, chols, ws = dist.means, dist.chols, dist.weights
    else:
        raise TypeError(
            f"dist must be a Gaussian or GaussianMixture for Gauss-Hermite quadrature, "
            f"got {type(dist).__name__}"
        )
    t, w = standard_normal_nodes(dist.dim, order if order is not None else default_order(dist.dim))
    nodes = (means[:, None, :] + np.einsum("kij,mj->kmi", chols, t)).reshape(-1, dist.dim)
    weights = (ws[:, None] * w[None, :]).ravel()
    return nodes, weights


def product_rule(rule_a, rule_b) -> tuple[np.ndarray, np.ndarray]:
    """Tensor product of two rules: nodes ``[X_a, Y_b]`` (m_a*m_b, d_a+d_b), weights ``W_a V_b``.

    For a joint expectation over independent variables, e.g. the DSM pair
    ``(x, z)`` with ``x ~ p`` and ``z ~ N(0, I)``:
    ``product_rule(gauss_hermite_nodes(p), standard_normal_nodes(d, order))``.
    Rows are ordered with ``b`` varying fastest.
    """
    (xa, wa), (xb, wb) = rule_a, rule_b
    names = ("rule_a nodes", "rule_a weights", "rule_b nodes", "rule_b weights")
    xa, wa, xb, wb = (as_float_array(a, n) for a, n in zip((xa, wa, xb, wb), names))
    ma, mb = xa.shape[0], xb.shape[0]
    nodes = np.concatenate([np.repeat(xa, mb, axis=0), np.tile(xb, (ma, 1))], axis=1)
    return nodes, np.outer(wa, wb).ravel()


def _apply(f, nodes, name="f"):
    vals = as_float_array(f(nodes), f"{name}(x)")
    if vals.ndim < 1 or vals.shape[0] != nodes.shape[0]:
        raise ValueError(
            f"{name} must map points of shape (m, d) to an array with leading dimension m; "
            f"called with m={nodes.shape[0]} points it returned shape {vals.shape}"
        )
    return vals


def expectation(f, dist, order=None, *, method="quadrature", n_samples=100_000, rng=None):
    r"""Expectation :math:`E_{x\sim p} f(x)`, exact by Gauss–Hermite or (explicitly) Monte Carlo.

    .. math::

        E_p f = \sum_a W_a f(X_a)  \quad\text{(quadrature, see gauss\_hermite\_nodes)},
        \qquad
        E_p f \approx \frac1n \sum_{i=1}^n f(x_i),\ x_i \sim p \quad\text{(Monte Carlo)}.

    Parameters
    ----------
    f : callable
        Maps points ``(m, d)`` to an array of shape ``(m,)`` or ``(m, ...)``.
    dist : distribution
        Gaussian or GaussianMixture for ``method="quadrature"``; anything with
        ``sample(n, rng=...)`` for ``method="monte_carlo"``.
    order : int, optional
        Gauss–Hermite nodes per axis (default :func:`default_order`); exact for
        polynomial ``f`` of total degree :math:`\le 2\,\mathrm{order}-1`.
    method : {"quadrature", "monte_carlo"}
        ``"quadrature"`` (default) returns a plain array and raises
        ``TypeError`` for targets it cannot integrate exactly.
        ``"monte_carlo"`` returns :class:`MonteCarloEstimate` ``(value, stderr)``.
    n_samples : int
        Monte Carlo sample size.
    rng : None, int or numpy.random.Generator
        Monte Carlo randomness.

    Returns
    -------
    numpy.ndarray or MonteCarloEstimate
        Shape ``f(...).shape[1:]`` (a 0-d array for scalar ``f``).

    Examples
    --------
    >>> from refscore.distributions import Gaussian
    >>> g = Gaussian([1.0, 2.0], [[1.0, 0.3], [0.3, 2.0]])
    >>> expectation(lambda x: x[:, 0] * x[:, 1], g)  # 1*2 + 0.3
    array(2.3)
    """
    check_choice("method", method, {"quadrature", "monte_carlo"})
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if method == "quadrature":
        if not isinstance(dist, (Gaussian, GaussianMixture)):
            raise TypeError(
                f"exact quadrature is available for Gaussian and GaussianMixture targets only, "
                f"got {type(dist).__name__}; use method='monte_carlo' for a (value, stderr) estimate"
            )
        nodes, weights = gauss_hermite_nodes(dist, order)
        vals = _apply(f, nodes)
        return np.tensordot(weights, vals, axes=(0, 0))
    n_samples = check_int("n_samples", n_samples, 2)  # two at least, for a standard error
    x = dist.sample(int(n_samples), rng=as_rng(rng))
    vals = _apply(f, x)
    value = vals.mean(axis=0)
    stderr = vals.std(axis=0, ddof=1) / np.sqrt(vals.shape[0])
    return MonteCarloEstimate(value, stderr)


# --------------------------------------------------------------------------------
# Population losses (appended by the losses issue; uses only the rules above).

#: default Gauss–Hermite order per axis of the joint (x, z) grid of population DSM,
#: whose tensor grid has order**(2d) nodes per component
_DSM_ORDER = {1: 64, 2: 16, 3: 8}

def _gaussian_projection_rule(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite of order 3 (nodes 0, ±√3): exact to degree 5 in each axis."""
    return standard_normal_nodes(dim, 3)


def _sign_vectors_rule(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^d sign vectors with equal weight: the Rademacher law itself.

    They lie on the sphere of radius √d and match its moments to degree 3 (zero
    odd moments, E[vvᵀ] = I), so they integrate the degree-2 SSM integrand
    exactly for the uniform sphere too.
    """
    grids = np.meshgrid(*([np.array([-1.0, 1.0])] * dim), indexing="ij")
    v = np.stack([g.ravel() for g in grids], axis=1)
    return v, np.full(v.shape[0], 0.5 ** dim)


#: projection name (a key of refscore.losses.PROJECTIONS) -> exact rule ``dim -> (v, weights)``
#: for E_v of a polynomial of degree <= 2 in v with E[vvᵀ] = I
PROJECTION_RULES = {
    "gaussian": _gaussian_projection_rule,
    "rademacher": _sign_vectors_rule,
    "sphere": _sign_vectors_rule,
}


#: the inputs of :attr:`refscore.losses.Loss.inputs` population_loss integrates (see its docstring)
POPULATION_INPUTS = ("target_score", "sigma", "eps", "v")


def _taking(name):
    """The registry losses whose inputs include ``name``."""
    from .losses import LOSSES

    return [loss for loss, spec in LOSSES.items() if name in spec.inputs]


def _listed(names):
    """``'a'``, ``'a' and 'b'``, ``'a', 'b' and 'c'``."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _population_form(loss):
    """The registry entry of ``loss`` (a name, an entry or its function); ValueError naming the loss
    and what it lacks when it has no population form here."""
    from .losses import LOSSES, Loss, LossKind

    by_function = {spec.function: name for name, spec in LOSSES.items()}
    if isinstance(loss, Loss):
        loss = loss.name
    elif callable(loss) and loss in by_function:
        loss = by_function[loss]
    check_choice("loss", loss, tuple(LOSSES))
    spec = LOSSES[loss]
    cannot = f"population_loss cannot integrate loss={loss!r}"
    if spec.noise_conditional:
        raise ValueError(f"{cannot}: it trains a noise-conditional model s(x, sigma) (refscore.losses.LOSSES "
                         "marks it noise_conditional); population losses are of a score model s(x)")
    if spec.terms is None:
        raise ValueError(f"{cannot}: its refscore.losses.LOSSES entry declares no weighted form (terms=None), "
                         "which population_loss evaluates with quadrature weights")
    unknown = [name for name in spec.inputs if name not in POPULATION_INPUTS]
    if unknown:
        raise ValueError(f"{cannot}: it takes {', '.join(unknown)}, for which population_loss has no quadrature "
                         f"rule (it integrates {', '.join(POPULATION_INPUTS)})")
    if "target_score" in spec.inputs and spec.kind != LossKind.RESIDUAL:
        raise ValueError(f"{cannot}: it takes target_score, which population_loss integrates by the mixture "
                         "identity E_p[s^T grad log p] = sum_j pi_j E_j[s^T g_j], exact here only for the "
                         f"residual 1/2 ||s - t||^2 (kind LossKind.RESIDUAL), and its kind is {spec.kind!r}")
    return spec


def population_loss(loss, model, theta, dist, *, sigma=None, projection=None, order=None, grad=False):
    r"""Population value (and gradient) of a score-matching loss, by quadrature.

    .. math::

        \mathrm{ESM} &= \tfrac12 E_{p}\lVert s_\theta - \nabla\log p\rVert^2, \qquad
        \mathrm{ISM} = E_{p}\big[\operatorname{tr}\nabla_x s_\theta + \tfrac12\lVert s_\theta\rVert^2\big],\\
        \mathrm{DSM}(\sigma) &= \tfrac12 E_{x\sim p,\,z\sim N(0,I)}\lVert s_\theta(x+\sigma z) + z/\sigma\rVert^2,\\
        \mathrm{SSM} &= E_{p}E_{v}\big[v^\top\nabla_x s_\theta v + \tfrac12(v^\top s_\theta)^2\big], \qquad
        \mathrm{SSM\text{-}VR} = E_{p}E_{v}\big[v^\top\nabla_x s_\theta v + \tfrac12\lVert s_\theta\rVert^2\big]

    (eqs. (2), (3), (6), (7)), with every expectation replaced by a
    quadrature rule and the per-point values and gradients taken from the
    weighted kernels of :mod:`refscore.losses` (the same code as the
    sample losses, with quadrature weights instead of ``1/n``).

    * ``x ~ p``: :func:`gauss_hermite_nodes` of ``dist`` (order ``order``,
      default :func:`default_order`).
    * DSM: the tensor product (:func:`product_rule`) of that rule with the
      standard normal rule for ``z``, i.e. a ``2d``-dimensional grid with
      ``order`` nodes per axis (default 64, 16, 8 for d = 1, 2, 3).
    * SSM / SSM-VR: ``E_v`` exactly, since the integrand has degree 2 in ``v``:
      ``"rademacher"`` (default) and ``"sphere"`` enumerate all ``2^d`` sign
      vectors (weight ``2^{-d}``); ``"gaussian"`` uses Gauss–Hermite of order 3.
      Because ``E_v`` only sees ``E[vvᵀ] = I``, all three give ISM -- computed
      here by enumeration, so that equality is a test, not a construction.

    ESM on a mixture :math:`p = \sum_j \pi_j N_j` (component scores :math:`g_j`):
    since :math:`p\,\nabla\log p = \sum_j \pi_j N_j g_j`, the cross term
    :math:`E_p[s_\theta^\top\nabla\log p] = \sum_j \pi_j E_{N_j}[s_\theta^\top g_j]`, so

    .. math::

        \mathrm{ESM} = \sum_j \pi_j E_{N_j}\Big[\tfrac12\lVert s_\theta - g_j\rVert^2
            - \tfrac12\lVert g_j\rVert^2\Big] + \tfrac12 E_p\lVert\nabla\log p\rVert^2 ,

    each expectation taken on that component's own grid.  The first term (and
    the gradient, ``score_vjp_params(ct = w (s - g_j))``) is then exact for an
    affine model; only :math:`\tfrac12 E_p\lVert\nabla\log p\rVert^2`, which does
    not depend on :math:`\theta`, carries quadrature error -- the same as
    :func:`expectation` of it with the same ``order``.  For a single Gaussian
    this is the plain :math:`\tfrac12\lVert s_\theta - \nabla\log p\rVert^2`.

    Exactness: for an affine score (``GaussianModel``, ``LinearScore``) on a
    Gaussian or mixture target, the ISM, SSM and DSM integrands are polynomials
    of degree 2 in ``x`` (and ``z``) per component, so any ``order >= 2`` is
    exact to round-off; so is ESM up to its :math:`\theta`-free term above.  For
    non-polynomial integrands (mixture scores, networks) the error decays
    spectrally in ``order``.

    Parameters
    ----------
    loss : str, a :class:`refscore.losses.Loss` or its function
        A loss of :data:`refscore.losses.LOSSES` (``"esm"``, ``"ism"``, ``"dsm"``,
        ``"ssm"``, ``"ssm_vr"``).  Its entry's weighted form ``terms`` is evaluated
        at the quadrature nodes with their weights, and each of its ``inputs`` is
        integrated as above: ``eps`` on the joint grid, ``v`` by the projection rule,
        ``target_score`` by the component scores (for a residual loss), ``sigma``
        given.  A loss of a noise-conditional model, without ``terms``, or taking
        another input (:data:`POPULATION_INPUTS` lists these) is refused with a
        ValueError naming what it lacks.
    model : ScoreModel
    theta : (P,) array
    dist : Gaussian or GaussianMixture
        The data distribution :math:`p`.
    sigma : float > 0, optional
        Required for a loss taking ``sigma`` (``"dsm"``: its noise level).  For the other losses,
        integrate against :math:`p_\sigma` = ``dist.noised(sigma)`` instead of
        ``dist`` (eq. (5)); ``None`` uses ``dist`` itself.
    projection : {"rademacher", "gaussian", "sphere"}, optional
        Law of ``v`` for a loss taking projections (``"ssm"``/``"ssm_vr"``;
        default ``"rademacher"``); an error for the other losses.
    order : int, optional
        Gauss–Hermite nodes per axis.
    grad : bool
        Also return the gradient over ``theta``.

    Returns
    -------
    float, or ``(float, (P,) array)`` with ``grad=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from refscore.distributions import Gaussian
    >>> from refscore.models import GaussianModel
    >>> m = GaussianModel(2)
    >>> round(population_loss("ism", m, m.init(), Gaussian(np.zeros(2), np.eye(2))), 12)  # -tr P + tr(P²Σ)/2
    -1.0
    """
    from ._validation import check_positive
    from .losses import _check_result

    spec = _population_form(loss)
    loss = spec.name
    if not isinstance(dist, (Gaussian, GaussianMixture)):
        raise TypeError(
            f"dist must be a Gaussian or GaussianMixture for population losses, got {type(dist).__name__}"
        )
    theta = model._check_theta(theta)
    d = model.dim
    if dist.dim != d:
        raise ValueError(f"dist must have dim {d} to match the model, got dim {dist.dim}")
    if "v" in spec.inputs:
        projection = "rademacher" if projection is None else projection
        check_choice("projection", projection, PROJECTION_RULES)
    elif projection is not None:
        raise ValueError(f"projection applies to {_listed(_taking('v'))} only, got projection={projection!r} "
                         f"for {loss!r}")
    if "sigma" in spec.inputs:
        if sigma is None:
            raise ValueError(f"sigma is required for loss={loss!r} (the noise level), got None")
        sigma = check_positive("sigma", sigma)
    elif sigma is not None:
        dist = dist.noised(check_positive("sigma", sigma))

    inputs = {}
    if "eps" in spec.inputs:  # x ~ p and eps ~ N(0, I) on one joint grid
        if order is None:
            if d not in _DSM_ORDER:
                raise ValueError(f"no default quadrature order for the joint (x, eps) grid of {loss!r} in "
                                 f"dim={d} (defaults for d <= 3); pass order")
            order = _DSM_ORDER[d]
        order = _check_order(order, 2 * d)
        nodes, w = product_rule(gauss_hermite_nodes(dist, order), standard_normal_nodes(d, order))
        x, inputs["eps"] = nodes[:, :d], nodes[:, d:]
    else:
        x, w = gauss_hermite_nodes(dist, order)
    if "sigma" in spec.inputs:
        inputs["sigma"] = sigma
    correction = None
    if "target_score" in spec.inputs:
        # Nodes come in k blocks, one per component (gauss_hermite_nodes above).
        # At component j's nodes use its score g_j; the correction keeps the
        # integral equal to ESM because p * score(p) = sum_j pi_j N_j g_j.
        if isinstance(dist, GaussianMixture):
            means, precs = dist.means, dist.precisions
        else:
            means, precs = dist.mean[None], dist.precision[None]
        comp = np.repeat(np.arange(means.shape[0]), x.shape[0] // means.shape[0])
        gj = -np.einsum("nij,nj->ni", precs[comp], x - means[comp])
        t = dist.score(x)
        inputs["target_score"] = gj
        correction = 0.5 * (np.einsum("nd,nd->n", t, t) - np.einsum("nd,nd->n", gj, gj))
    if "v" in spec.inputs:  # E_v exactly: the projection rule times the rule of x
        v, wv = PROJECTION_RULES[projection](d)
        m, n = v.shape[0], x.shape[0]
        inputs["v"] = np.broadcast_to(v[:, None, :], (m, n, d))
        w = wv[:, None] * w[None, :]
    per, g = spec.terms(model, theta, x, w, grad, **inputs)
    if correction is not None:
        per = per + correction
    per, w = per.ravel(), w.ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(w @ per)
    _check_result(f"population_loss({loss!r})", per, g, value)
    return (value, g) if grad else value


__all__.append("population_loss")
