r"""The exact denoiser of Gaussian and Gaussian-mixture data under any schedule, with its Jacobian.

Derivation: docs/diffusion.md §5 (posterior of a Gaussian mixture, Tweedie, the Jacobian).

Data :math:`x_0 \sim \sum_j w_j N(\mu_j, \Sigma_j)` (a :class:`refscore.distributions.Gaussian` is one
component) and :math:`x = \alpha x_0 + \sigma\varepsilon` (a schedule from
:mod:`refscore.diffusion.schedules` gives :math:`\alpha(t), \sigma(t)`).  With
:math:`\Sigma_j = V_j \operatorname{diag}(\ell_j) V_j^\top` (eigendecomposition, once) every component's
noised covariance :math:`C_j = \alpha^2\Sigma_j + \sigma^2 I = V_j\operatorname{diag}(\alpha^2\ell_j + \sigma^2)V_j^\top`
needs no refactorisation per time.  Per component, in its eigenbasis
:math:`y = V_j^\top(x - \alpha\mu_j)`, :math:`\delta = \alpha^2\ell_j + \sigma^2`:

.. math::

    \log N(x; \alpha\mu_j, C_j) = -\tfrac d2\log 2\pi - \tfrac12\sum_i\log\delta_i - \tfrac12\sum_i y_i^2/\delta_i,
    \qquad s_j = -V_j\,\frac{y}{\delta}\ \ (\text{its score}),

    m_j = E[x_0 \mid x, j] = \mu_j + V_j\,\frac{\alpha\ell_j\, y}{\delta}, \qquad
    P_j = \mathrm{Cov}[x_0 \mid x, j] = V_j\operatorname{diag}\Bigl(\frac{\sigma^2\ell_j}{\delta}\Bigr)V_j^\top,

and with responsibilities :math:`r_j` (log-sum-exp, :func:`refscore.distributions.mixture_log_sum_exp`,
so nothing underflows far from the data):

.. math::

    \hat x_0 = \sum_j r_j m_j, \qquad \nabla\log p_t = \sum_j r_j s_j, \qquad
    \hat\varepsilon = -\sigma\,\nabla\log p_t, \qquad
    \hat v = \alpha\hat\varepsilon - \sigma\hat x_0, \qquad \hat u = \alpha'\hat x_0 + \sigma'\hat\varepsilon .

Jacobian (docs/diffusion.md §5.3): :math:`\partial\hat x_0/\partial x = \frac{\alpha}{\sigma^2}\mathrm{Cov}[x_0 \mid x]`, and

.. math::

    \mathrm{Cov}[x_0 \mid x] = \sum_j r_j P_j + \sum_j r_j (m_j - \hat x_0)(m_j - \hat x_0)^\top, \qquad
    m_j - \hat x_0 = \frac{\sigma^2}{\alpha}(s_j - \nabla\log p_t),

so :math:`\partial\hat x_0/\partial x = \sum_j r_j A_j + \frac{\sigma^2}{\alpha}\sum_j r_j D_j D_j^\top` with
:math:`A_j = V_j\operatorname{diag}(\alpha\ell_j/\delta)V_j^\top` and :math:`D_j = s_j - \nabla\log p_t`.
Both forms of the between-component term are exact; the one computed is the one without cancellation:
the score differences :math:`D_j` where :math:`\alpha \ge \sigma` (the :math:`m_j` all tend to
:math:`x/\alpha` as :math:`\sigma \to 0`), the mean differences where :math:`\alpha < \sigma` (the
:math:`s_j` all tend to :math:`-x/\sigma^2` as :math:`\alpha \to 0`).  Tweedie's formulas
:math:`\hat x_0 = (x + \sigma^2\nabla\log p_t)/\alpha` and
:math:`\mathrm{Cov}[x_0\mid x] = \frac{\sigma^2}{\alpha^2}(I + \sigma^2\nabla^2\log p_t)` are the tests' independent
checks.

Times ``t`` are a scalar or one per point; points ``x`` are ``(n, d)`` or one ``(d,)`` point.

References
----------
B. Efron, "Tweedie's formula and selection bias", JASA 106 (2011); Karras et al., NeurIPS 2022, App. B.3 (the
ideal denoiser of a finite data set, the zero-covariance limit of this one).

Examples
--------
>>> import numpy as np
>>> from refscore.distributions import Gaussian
>>> from refscore.diffusion.schedules import EDM
>>> from refscore.diffusion.denoiser import Denoiser
>>> D = Denoiser(Gaussian([1.0], [[4.0]]), EDM())
>>> float(D.x0([3.0], 2.0)[0])      # mu + Sigma/(Sigma + sigma^2) (x - mu) = 1 + 4/8 * 2
2.0
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import as_float_array, as_points, check_choice
from ..distributions import Gaussian, GaussianMixture, mixture_log_sum_exp
from .parametrisations import PARAMETRISATIONS, velocity_derivatives
from .schedules import Schedule

__all__ = ["Denoiser", "SIGMA_MAX"]

_LOG_2PI = math.log(2.0 * math.pi)

#: largest noise scale accepted: sigma**2 enters the noised covariances and overflows float64 beyond ~1.3e154
SIGMA_MAX = 1e150


class Denoiser:
    r"""Exact :math:`E[x_0\mid x_t]` and everything derived from it, for Gaussian or Gaussian-mixture data.

    Parameters
    ----------
    data : refscore.distributions.Gaussian or refscore.distributions.GaussianMixture
        The law of :math:`x_0`.
    schedule : refscore.diffusion.schedules.Schedule
        Gives :math:`\alpha(t)`, :math:`\sigma(t)` and their derivatives.
    """

    def __init__(self, data, schedule):
        if isinstance(data, Gaussian):
            w, mu, covs = np.ones(1), data.mean[None], data.cov[None]
        elif isinstance(data, GaussianMixture):
            w, mu, covs = data.weights, data.means, data.covs
        else:
            raise TypeError(f"data must be a refscore Gaussian or GaussianMixture (the noised law has a closed form "
                            f"only for these), got {type(data).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a refscore.diffusion Schedule, got {type(schedule).__name__}")
        self.data, self.schedule = data, schedule
        self.dim = int(mu.shape[1])
        lam, vec = np.linalg.eigh(covs)
        if np.any(lam <= 0):
            raise ValueError("data covariances must be positive definite (an eigenvalue <= 0 was found)")
        with np.errstate(divide="ignore"):
            self._logw = np.log(w)
        self._means, self._lam, self._vec = mu, lam, vec

    def __repr__(self):
        return f"Denoiser({self.data!r}, {self.schedule!r})"

    # -------------------------------------------------------------- inputs
    def _inputs(self, x, t):
        x, single = as_points(x, self.dim, "x")
        t_arr = as_float_array(t, "t")
        if t_arr.ndim == 0:
            t_arr = np.full(x.shape[0], float(t_arr))
        elif t_arr.shape != (x.shape[0],) and not (single and t_arr.shape == (1,)):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},) to match x, got shape {t_arr.shape}")
        a, s = np.asarray(self.schedule.alpha(t_arr), float), np.asarray(self.schedule.sigma(t_arr), float)
        if np.any(s > SIGMA_MAX):
            raise ValueError(f"t must give sigma(t) <= {SIGMA_MAX:g} (sigma^2 overflows float64 beyond ~1.3e154), "
                             f"got sigma = {float(np.max(s)):.3g} at t = {float(t_arr[np.argmax(s)])!r}")
        return x, t_arr, a, s, single

    def _parts(self, x, a, s):
        """Per component: logits (k, n), eigen-coordinates y (k, n, d), deltas (k, n, d); and responsibilities."""
        k, n, d = self._logw.shape[0], x.shape[0], self.dim
        a2, s2 = (a * a)[:, None], (s * s)[:, None]
        ell = np.empty((k, n))
        logc = np.empty((k, n))
        Y = np.empty((k, n, d))
        Dl = np.empty((k, n, d))
        for j in range(k):
            y = (x - a[:, None] * self._means[j]) @ self._vec[j]
            den = a2 * self._lam[j][None, :] + s2
            logc[j] = self._logw[j] - 0.5 * d * _LOG_2PI - 0.5 * np.sum(np.log(den), axis=1)
            with np.errstate(over="ignore"):  # far field: mixture_log_sum_exp redoes those points
                ell[j] = logc[j] - 0.5 * np.sum(y * y / den, axis=1)
            Y[j], Dl[j] = y, den

        def whitened(cols):
            return Y[:, cols] / np.sqrt(Dl[:, cols])

        logp, r = mixture_log_sum_exp(ell, logc, whitened)
        return logp, r, Y, Dl

    def _component_scores(self, Y, Dl):
        return -np.einsum("kni,kji->knj", Y / Dl, self._vec)

    def _component_means(self, Y, Dl, a):
        z = a[None, :, None] * self._lam[:, None, :] * Y / Dl
        return self._means[:, None, :] + np.einsum("kni,kji->knj", z, self._vec)

    def _x0_score(self, x, a, s):
        logp, r, Y, Dl = self._parts(x, a, s)
        S = self._component_scores(Y, Dl)
        M = self._component_means(Y, Dl, a)
        return np.einsum("kn,kni->ni", r, M), np.einsum("kn,kni->ni", r, S), (logp, r, Y, Dl, S, M)

    # -------------------------------------------------------------- predictions
    def x0(self, x, t):
        r""":math:`E[x_0 \mid x_t = x]`, shape like ``x``."""
        x, _, a, s, single = self._inputs(x, t)
        out = self._x0_score(x, a, s)[0]
        return out[0] if single else out

    def score(self, x, t):
        r""":math:`\nabla_x\log p_t(x)` of the noised law :math:`\sum_j w_j N(\alpha\mu_j, \alpha^2\Sigma_j + \sigma^2 I)`."""
        x, _, a, s, single = self._inputs(x, t)
        out = self._x0_score(x, a, s)[1]
        return out[0] if single else out

    def eps(self, x, t):
        r""":math:`E[\varepsilon \mid x_t = x] = -\sigma\nabla\log p_t(x)`."""
        return self.predict("eps", x, t)

    def v(self, x, t):
        r""":math:`E[\alpha\varepsilon - \sigma x_0 \mid x_t = x]`."""
        return self.predict("v", x, t)

    def velocity(self, x, t):
        r"""The probability-flow ODE's :math:`dx/dt = f x - \tfrac12 g^2\nabla\log p_t = \alpha'\hat x_0 + \sigma'\hat\varepsilon`."""
        return self.predict("velocity", x, t)

    def predict(self, kind, x, t):
        r"""The exact prediction of kind ``kind`` (a key of :data:`refscore.diffusion.parametrisations.PARAMETRISATIONS`)."""
        check_choice("kind", kind, PARAMETRISATIONS)
        x, t_arr, a, s, single = self._inputs(x, t)
        x0, sc, _ = self._x0_score(x, a, s)
        eps = -s[:, None] * sc
        if kind == "score":
            out = sc
        else:
            da = ds = None
            if kind == "velocity":
                da, ds = velocity_derivatives(self.schedule, t_arr)
            out = PARAMETRISATIONS[kind].frm(x0, eps, x, a[:, None], s[:, None], da, ds)
        return out[0] if single else out

    def logpdf(self, x, t):
        r""":math:`\log p_t(x)`, the normalised log-density of the noised law, shape ``(n,)``."""
        x, _, a, s, single = self._inputs(x, t)
        out = self._parts(x, a, s)[0]
        return out[0] if single else out

    # -------------------------------------------------------------- second moments and Jacobians
    def _second(self, x, t):
        """(x0, score, within (n,d,d) = sum r_j A_j, between (n,d,d) = sum r_j D_j D_j^T (score form) scaled, a, s)."""
        x, t_arr, a, s, single = self._inputs(x, t)
        x0, sc, (logp, r, Y, Dl, S, M) = self._x0_score(x, a, s)
        # within-component: sum_j r_j V_j diag(alpha l_j / delta) V_j^T and sum_j r_j V_j diag(sigma^2 l_j / delta) V_j^T
        lam = self._lam[:, None, :]
        wa = np.einsum("kn,kni,kai,kbi->nab", r, a[None, :, None] * lam / Dl, self._vec, self._vec)
        wp = np.einsum("kn,kni,kai,kbi->nab", r, (s * s)[None, :, None] * lam / Dl, self._vec, self._vec)
        live = r[:, :, None] > 0.0
        D = np.where(live, S - sc[None], 0.0)          # score differences
        Dm = np.where(live, M - x0[None], 0.0)         # mean differences
        use_score = a >= s                             # the form without cancellation, per point
        bs = np.einsum("kn,kni,knj->nij", r, D, D)
        bm = np.einsum("kn,kni,knj->nij", r, Dm, Dm)
        return x0, sc, wa, wp, bs, bm, use_score, a, s, single

    def x0_jacobian(self, x, t):
        r""":math:`\partial\hat x_0/\partial x`, shape ``(n, d, d)``: :math:`\sum_j r_j A_j + \frac{\sigma^2}{\alpha}\sum_j r_j D_jD_j^\top` (symmetric)."""
        x0, sc, wa, wp, bs, bm, use, a, s, single = self._second(x, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            k_s = np.where(use, s * s / np.where(use, a, 1.0), 0.0)
            k_m = np.where(use, 0.0, a / np.where(use, 1.0, s * s))
        out = wa + k_s[:, None, None] * bs + k_m[:, None, None] * bm
        return out[0] if single else out

    def x0_divergence(self, x, t):
        r""":math:`\nabla\cdot\hat x_0 = \operatorname{tr}\,\partial\hat x_0/\partial x`, shape ``(n,)``."""
        J = self.x0_jacobian(x, t)
        return np.trace(J, axis1=-2, axis2=-1)

    def posterior_cov(self, x, t):
        r""":math:`\mathrm{Cov}[x_0 \mid x_t = x] = \sum_j r_j P_j + \sum_j r_j (m_j - \hat x_0)(m_j - \hat x_0)^\top`, ``(n, d, d)``."""
        x0, sc, wa, wp, bs, bm, use, a, s, single = self._second(x, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            k_s = np.where(use, (s * s / np.where(use, a, 1.0)) ** 2, 0.0)
        out = wp + k_s[:, None, None] * bs + np.where(use, 0.0, 1.0)[:, None, None] * bm
        return out[0] if single else out

    def score_jacobian(self, x, t):
        r""":math:`\nabla_x^2\log p_t = -\sum_j r_j C_j^{-1} + \sum_j r_j D_j D_j^\top`, shape ``(n, d, d)``."""
        x, _, a, s, single = self._inputs(x, t)
        x0, sc, (logp, r, Y, Dl, S, M) = self._x0_score(x, a, s)
        prec = np.einsum("kn,kni,kai,kbi->nab", r, 1.0 / Dl, self._vec, self._vec)
        D = np.where(r[:, :, None] > 0.0, S - sc[None], 0.0)
        out = -prec + np.einsum("kn,kni,knj->nij", r, D, D)
        return out[0] if single else out

    def prediction_jacobian(self, kind, x, t):
        r"""Jacobian of the exact prediction ``kind`` in ``x``, ``(n, d, d)``: the chain rule through
        :math:`\hat\varepsilon = (x - \alpha\hat x_0)/\sigma` written as :math:`-\sigma\nabla^2\log p_t` (no
        division by :math:`\sigma`), :math:`\hat v`, :math:`\hat u` linear in :math:`(\hat x_0, \hat\varepsilon)`."""
        check_choice("kind", kind, PARAMETRISATIONS)
        x, t_arr, a, s, single = self._inputs(x, t)
        if kind == "score":
            out = self.score_jacobian(x, t_arr)
        elif kind == "x0":
            out = self.x0_jacobian(x, t_arr)
        else:
            Jx = self.x0_jacobian(x, t_arr)
            Je = -s[:, None, None] * self.score_jacobian(x, t_arr)
            if kind == "eps":
                out = Je
            elif kind == "v":
                out = a[:, None, None] * Je - s[:, None, None] * Jx
            else:
                da = np.asarray(self.schedule.d_alpha(t_arr), float)[:, None, None]
                with np.errstate(divide="ignore"):
                    ds = np.asarray(self.schedule.d_sigma(t_arr), float)[:, None, None]
                if not np.all(np.isfinite(ds)):
                    raise ValueError("t must have a finite d_sigma(t) for the velocity")
                out = da * Jx + ds * Je
        return out[0] if single else out

    def divergence(self, kind, x, t):
        r"""Divergence (trace of :meth:`prediction_jacobian`) of the exact prediction ``kind``, shape ``(n,)``."""
        return np.trace(self.prediction_jacobian(kind, x, t), axis1=-2, axis2=-1)

    # -------------------------------------------------------------- Gaussian data: the affine map
    def x0_affine(self, t):
        r"""For Gaussian data, :math:`\hat x_0 = B x + c` at scalar time ``t``: ``(B (d, d), c (d,))``.

        :math:`B = \alpha\Sigma C^{-1} = V\operatorname{diag}(\alpha\ell/\delta)V^\top` and
        :math:`c = (I - \alpha B)\mu = \sigma^2 C^{-1}\mu = V\operatorname{diag}(\sigma^2/\delta)V^\top\mu`.
        """
        if self._logw.shape[0] != 1 or not isinstance(self.data, Gaussian):
            raise TypeError("x0_affine needs Gaussian data (a mixture's denoiser is not affine)")
        t = as_float_array(t, "t")
        if t.ndim:
            raise ValueError(f"t must be a scalar, got shape {t.shape}")
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        lam, V, mu = self._lam[0], self._vec[0], self._means[0]
        den = a * a * lam + s * s
        B = (V * (a * lam / den)) @ V.T
        c = V @ ((s * s / den) * (V.T @ mu))
        return B, c
