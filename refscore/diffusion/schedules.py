r"""Noise schedules in one convention: :math:`x_t = \alpha(t)\,x_0 + \sigma(t)\,\varepsilon`, :math:`\varepsilon \sim N(0, I)`.

Derivation: docs/diffusion.md §1 (schedules, the forward SDE, log-SNR and converters) and §2 (the
discrete DDPM tables).

Every schedule gives, for a time ``t`` in its domain ``[t_min, t_max]``,

.. math::

    \alpha(t),\ \sigma(t),\ \alpha'(t),\ \sigma'(t), \qquad
    \lambda(t) = \log\frac{\alpha^2}{\sigma^2}\ (\text{log-SNR}),\ \lambda'(t), \qquad
    f(t) = \frac{d\log\alpha}{dt}, \qquad g^2(t) = \frac{d\sigma^2}{dt} - 2 f(t)\,\sigma^2(t),

the coefficients of the forward SDE :math:`dx = f(t)\,x\,dt + g(t)\,dW` whose marginals are those of
:math:`x_t` (docs/diffusion.md §1.2), and the inverse map :math:`t(\lambda)`
(:meth:`Schedule.t_of_log_snr`): closed form for every schedule here, with the generic safeguarded
bisection :meth:`Schedule.solve_log_snr` as the fallback a new schedule inherits (and the
independent check of the closed forms in the tests).  Every derivative is written by hand below.

===================  ==================================  ====================================================
schedule             :math:`\alpha(t)`                   :math:`\sigma(t)`
===================  ==================================  ====================================================
:class:`VP`          :math:`e^{-A(t)}`                   :math:`\sqrt{1 - e^{-2A(t)}}`
:class:`SubVP`       :math:`e^{-A(t)}`                   :math:`1 - e^{-2A(t)}`
:class:`VE`          1                                   :math:`\sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`
:class:`EDM`         1                                   :math:`t`
:class:`Flow`        :math:`1 - t`                       :math:`t`
:class:`VPDiscrete`  :math:`1/\sqrt{1 + s(t)^2}`          :math:`s(t)/\sqrt{1 + s(t)^2}`
===================  ==================================  ====================================================

with :math:`A(t) = \tfrac14 t^2(\beta_1 - \beta_0) + \tfrac12 t\beta_0` (a linear :math:`\beta(t)`).
:class:`VPDiscrete` is DDPM's table :math:`\bar\alpha_n` (:mod:`refscore.diffusion.tables`) with
:math:`s = \sqrt{(1 - \bar\alpha)/\bar\alpha}` interpolated linearly between integer timesteps.

:func:`convert` maps a point of one schedule onto another at equal log-SNR:
:math:`t_B = t_B(\lambda_A(t_A))`, :math:`x_B = (\alpha_B(t_B)/\alpha_A(t_A))\,x_A`; then
:math:`x_B \sim \alpha_B x_0 + \sigma_B\varepsilon` whenever :math:`x_A \sim \alpha_A x_0 + \sigma_A\varepsilon`
(because :math:`\sigma_B/\alpha_B = \sigma_A/\alpha_A`).

Times and log-SNRs may be scalars (a float is returned) or arrays (an array of the same shape).

References
----------
Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-based generative modeling
through stochastic differential equations", ICLR 2021 (VP, sub-VP and VE SDEs; yang-song/score_sde_pytorch,
``sde_lib.py``: ``VPSDE.marginal_prob``, ``subVPSDE.sde``, ``VESDE.sde``).
T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the design space of diffusion-based generative
models", NeurIPS 2022 (the EDM schedule and its time grid, eq. 5).
D. P. Kingma, T. Salimans, B. Poole, J. Ho, "Variational diffusion models", NeurIPS 2021 (log-SNR).
Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, "Flow matching for generative modeling",
ICLR 2023 (the linear interpolant).

Examples
--------
>>> from refscore.diffusion.schedules import VP, EDM, convert
>>> vp = VP()
>>> round(vp.alpha(1.0) ** 2 + vp.sigma(1.0) ** 2, 15)
1.0
>>> x, t = convert(1.0, 0.5, vp, EDM())   # EDM's sigma at VP's t = 0.5, x scaled by 1/alpha
>>> round(t, 12) == round(vp.sigma(0.5) / vp.alpha(0.5), 12)
True
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from .._validation import as_float_array, check_choice, check_int, check_positive
from . import tables

__all__ = ["Schedule", "VP", "SubVP", "VE", "EDM", "Flow", "VPDiscrete", "SCHEDULES", "convert"]


def _finite_array(value, name):
    arr = as_float_array(value, name)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must not be NaN, got {int(np.count_nonzero(np.isnan(arr)))} NaN value(s)")
    return arr


def _out(arr, scalar):
    return float(arr) if scalar else arr


class Schedule:
    r"""Base class: the public methods validate ``t`` and call a private ``_name`` on a float64 array.

    A subclass defines ``t_min``, ``t_max`` and ``_alpha``, ``_sigma``, ``_d_alpha``, ``_d_sigma``; the
    others default to the identities of docs/diffusion.md §1.1–1.2,

    .. math::

        \lambda = 2(\log\alpha - \log\sigma), \quad
        \lambda' = 2\Bigl(\frac{\alpha'}{\alpha} - \frac{\sigma'}{\sigma}\Bigr), \quad
        f = \frac{\alpha'}{\alpha}, \quad
        g^2 = 2\sigma\sigma' - 2 f \sigma^2,

    and the inverse map defaults to :meth:`solve_log_snr`.  The schedules here override them with
    forms that keep their digits (``expm1``, ``log1p``) and are tested against these defaults.
    """

    t_min: float = 0.0
    t_max: float = 1.0

    # ------------------------------------------------------------ validation
    def _t(self, t, name="t"):
        arr = as_float_array(t, name)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))} "
                             f"non-finite value(s)")
        if np.any(arr < self.t_min) or np.any(arr > self.t_max):
            raise ValueError(f"{name} must lie in [{self.t_min!r}, {self.t_max!r}] for {self!r}, got values in "
                             f"[{float(np.min(arr))!r}, {float(np.max(arr))!r}]")
        return arr, arr.ndim == 0

    def log_snr_range(self) -> tuple[float, float]:
        r"""``(lambda(t_max), lambda(t_min))``: the log-SNRs :meth:`t_of_log_snr` accepts (λ decreases in t)."""
        with np.errstate(divide="ignore"):
            lo = -math.inf if self.t_max == math.inf else float(self._log_snr(np.asarray(float(self.t_max))))
            hi = float(self._log_snr(np.asarray(float(self.t_min))))
        return lo, hi

    # --------------------------------------------------------- public values
    def alpha(self, t):
        r""":math:`\alpha(t)`, the signal scale."""
        t, sc = self._t(t)
        return _out(self._alpha(t), sc)

    def sigma(self, t):
        r""":math:`\sigma(t)`, the noise scale."""
        t, sc = self._t(t)
        return _out(self._sigma(t), sc)

    def d_alpha(self, t):
        r""":math:`\alpha'(t) = d\alpha/dt`."""
        t, sc = self._t(t)
        return _out(self._d_alpha(t), sc)

    def d_sigma(self, t):
        r""":math:`\sigma'(t) = d\sigma/dt` (``inf`` where :math:`\sigma \propto \sqrt t` at :math:`t = 0`)."""
        t, sc = self._t(t)
        with np.errstate(divide="ignore"):
            return _out(self._d_sigma(t), sc)

    def log_snr(self, t):
        r""":math:`\lambda(t) = \log(\alpha^2/\sigma^2)` (``+inf`` where :math:`\sigma = 0`, ``-inf`` where :math:`\alpha = 0`)."""
        t, sc = self._t(t)
        with np.errstate(divide="ignore"):
            return _out(self._log_snr(t), sc)

    def d_log_snr(self, t):
        r""":math:`\lambda'(t) = 2(\alpha'/\alpha - \sigma'/\sigma)`, negative."""
        t, sc = self._t(t)
        with np.errstate(divide="ignore"):
            return _out(self._d_log_snr(t), sc)

    def f(self, t):
        r""":math:`f(t) = d\log\alpha/dt`, the drift coefficient of :math:`dx = f x\,dt + g\,dW`."""
        t, sc = self._t(t)
        with np.errstate(divide="ignore"):
            return _out(self._f(t), sc)

    def g2(self, t):
        r""":math:`g(t)^2 = d\sigma^2/dt - 2 f \sigma^2`, the squared diffusion coefficient."""
        t, sc = self._t(t)
        with np.errstate(divide="ignore"):
            return _out(self._g2(t), sc)

    def t_of_log_snr(self, log_snr):
        r"""The time :math:`t` with :math:`\lambda(t) =` ``log_snr`` (closed form where the subclass has one)."""
        lam, sc = self._lam(log_snr)
        with np.errstate(divide="ignore", over="ignore"):
            t = self._t_of_log_snr(lam)
        # a log-SNR at an end of the range may land an ulp outside the domain: the domain's end is the answer
        return _out(np.clip(t, self.t_min, self.t_max), sc)

    def solve_log_snr(self, log_snr):
        r"""The time with :math:`\lambda(t) =` ``log_snr`` by safeguarded bisection (no closed form needed).

        :math:`\lambda` is strictly decreasing, so the bracket ``[t_min, t_max]`` (doubled from 1 until it
        holds the root when ``t_max`` is infinite) always contains the root; it is halved until its
        midpoint equals an end in floating point, so the answer is the float next to the root (at most
        ~2100 halvings: the bracket may have to reach subnormal times).
        """
        lam, sc = self._lam(log_snr)
        return _out(self._bisect(lam), sc)

    def _lam(self, log_snr):
        lam = _finite_array(log_snr, "log_snr")
        lo, hi = self.log_snr_range()
        if np.any(lam < lo) or np.any(lam > hi):
            raise ValueError(f"log_snr must lie in [{lo!r}, {hi!r}] (the log-SNR range of {self!r}), got values "
                             f"in [{float(np.min(lam))!r}, {float(np.max(lam))!r}]")
        return lam, lam.ndim == 0

    def _bisect(self, lam):
        lam = np.asarray(lam, dtype=float)
        shape = lam.shape
        lam = lam.reshape(-1)
        lo = np.full(lam.shape, float(self.t_min))
        if self.t_max == math.inf:
            hi = np.ones(lam.shape)
            with np.errstate(divide="ignore"):
                while True:
                    short = self._log_snr(hi) > lam
                    if not short.any():
                        break
                    hi = np.where(short, 2.0 * hi, hi)
        else:
            hi = np.full(lam.shape, float(self.t_max))
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(2200):
                mid = 0.5 * (lo + hi)
                live = (mid > lo) & (mid < hi)
                if not live.any():
                    break
                above = self._log_snr(mid) > lam  # lambda decreases: the root is to the right of mid
                lo = np.where(live & above, mid, lo)
                hi = np.where(live & ~above, mid, hi)
            lam_lo, lam_hi = self._log_snr(lo), self._log_snr(hi)
        out = np.where(np.abs(lam_lo - lam) <= np.abs(lam_hi - lam), lo, hi)
        return out.reshape(shape)

    # ------------------------------------------------------ default identities
    def _log_snr(self, t):
        return 2.0 * (np.log(self._alpha(t)) - np.log(self._sigma(t)))

    def _d_log_snr(self, t):
        return 2.0 * (self._d_alpha(t) / self._alpha(t) - self._d_sigma(t) / self._sigma(t))

    def _f(self, t):
        return self._d_alpha(t) / self._alpha(t)

    def _g2(self, t):
        s = self._sigma(t)
        return 2.0 * s * self._d_sigma(t) - 2.0 * self._f(t) * s * s

    def _t_of_log_snr(self, lam):
        return self._bisect(lam)


# ----------------------------------------------------------------------- VP family
class _LinearBeta(Schedule):
    r""":math:`\beta(t) = \beta_0 + t(\beta_1 - \beta_0)` on :math:`[0, 1]`, :math:`A(t) = \int_0^t \tfrac12\beta = \tfrac14 t^2 (\beta_1 - \beta_0) + \tfrac12 t \beta_0`."""

    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min = {self.beta_min!r}, got {beta_max!r}")

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_min!r}, beta_max={self.beta_max!r})"

    def beta(self, t):
        r""":math:`\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})`."""
        t, sc = self._t(t)
        return _out(self._beta(t), sc)

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _A(self, t):
        return t * (0.25 * t * (self.beta_max - self.beta_min) + 0.5 * self.beta_min)

    def _t_of_A(self, A):
        # 1/4 D t^2 + 1/2 b0 t - A = 0, rationalised: t = 2A / (b0/2 + sqrt(b0^2/4 + D A))
        b = 0.5 * self.beta_min
        return 2.0 * A / (b + np.sqrt(b * b + (self.beta_max - self.beta_min) * A))

    def _alpha(self, t):
        return np.exp(-self._A(t))

    def _d_alpha(self, t):
        return -0.5 * self._beta(t) * self._alpha(t)

    def _f(self, t):
        return -0.5 * self._beta(t)


class VP(_LinearBeta):
    r"""score_sde's continuous variance-preserving schedule (linear :math:`\beta`), :math:`t \in [0, 1]`.

    .. math::

        \alpha = e^{-A}, \quad \sigma = \sqrt{-\mathrm{expm1}(-2A)}, \quad
        \alpha' = -\tfrac12\beta\alpha, \quad \sigma' = \frac{\beta\alpha^2}{2\sigma},

        \lambda = -2A - \log(-\mathrm{expm1}(-2A)), \quad \lambda' = -\beta/\sigma^2, \quad
        f = -\tfrac12\beta, \quad g^2 = \beta,

    and :math:`t(\lambda)`: :math:`e^{-2A} = \operatorname{sigmoid}(\lambda)`, so
    :math:`A = \tfrac12\log(1 + e^{-\lambda})` (``logaddexp``), then the positive root of the quadratic
    :math:`A(t)`, rationalised (no cancellation).  score_sde_pytorch ``VPSDE``: ``marginal_prob``'s
    log-mean coefficient is :math:`-A`, ``sde`` is :math:`(-\tfrac12\beta x, \sqrt\beta)`.

    Parameters
    ----------
    beta_min, beta_max : float
        :math:`\beta_0 > 0` and :math:`\beta_1 \ge \beta_0` (defaults 0.1 and 20).
    """

    def _sigma(self, t):
        return np.sqrt(-np.expm1(-2.0 * self._A(t)))

    def _d_sigma(self, t):
        a = self._alpha(t)
        return 0.5 * self._beta(t) * a * a / self._sigma(t)

    def _log_snr(self, t):
        A = self._A(t)
        return -2.0 * A - np.log(-np.expm1(-2.0 * A))

    def _d_log_snr(self, t):
        return -self._beta(t) / (-np.expm1(-2.0 * self._A(t)))

    def _g2(self, t):
        return self._beta(t)

    def _t_of_log_snr(self, lam):
        return self._t_of_A(0.5 * np.logaddexp(0.0, -lam))


class SubVP(_LinearBeta):
    r"""score_sde's sub-VP schedule: :math:`\alpha = e^{-A}`, :math:`\sigma = 1 - e^{-2A}`, :math:`t \in [0, 1]`.

    .. math::

        \sigma = -\mathrm{expm1}(-2A), \quad \sigma' = \beta\alpha^2, \quad
        \lambda = -2A - 2\log(-\mathrm{expm1}(-2A)), \quad
        \lambda' = -\beta\Bigl(1 + \frac{2\alpha^2}{\sigma}\Bigr),

        f = -\tfrac12\beta, \qquad g^2 = \beta\,(1 - e^{-4A}) = -\beta\,\mathrm{expm1}(-4A)

    (score_sde_pytorch ``subVPSDE.sde``: diffusion :math:`\sqrt{\beta(1 - e^{-2\beta_0 t - (\beta_1 - \beta_0)t^2})}`,
    the same since :math:`4A = 2\beta_0 t + (\beta_1 - \beta_0)t^2`).  Inverse: with
    :math:`u = e^{-A}` and :math:`r = e^{\lambda/2} = u/(1 - u^2)`, :math:`u = 2r/(1 + \sqrt{1 + 4r^2})`, so

    .. math::

        A = \log\bigl(1 + \sqrt{1 + 4r^2}\bigr) - \log 2 - \lambda/2 \ \ (r < 1), \qquad
        A = \mathrm{log1p}\Bigl(\frac{1 + 1/(\sqrt{1 + 4r^2} + 2r)}{2r}\Bigr) \ \ (r \ge 1).
    """

    def _sigma(self, t):
        return -np.expm1(-2.0 * self._A(t))

    def _d_sigma(self, t):
        a = self._alpha(t)
        return self._beta(t) * a * a

    def _log_snr(self, t):
        A = self._A(t)
        return -2.0 * A - 2.0 * np.log(-np.expm1(-2.0 * A))

    def _d_log_snr(self, t):
        a = self._alpha(t)
        return -self._beta(t) * (1.0 + 2.0 * a * a / self._sigma(t))

    def _g2(self, t):
        return -self._beta(t) * np.expm1(-4.0 * self._A(t))

    def _t_of_log_snr(self, lam):
        lam = np.asarray(lam, dtype=float)
        r = np.exp(0.5 * lam)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            root = np.sqrt(1.0 + 4.0 * r * r)
            small = np.log1p(np.sqrt(1.0 + 4.0 * np.exp(lam))) - math.log(2.0) - 0.5 * lam
            big = np.log1p((1.0 + 1.0 / (root + 2.0 * r)) / (2.0 * r))
        A = np.where(lam < 0.0, small, big)
        A = np.where(np.isposinf(lam), 0.0, A)
        return self._t_of_A(A)


class VE(Schedule):
    r"""score_sde's variance-exploding schedule: :math:`\alpha = 1`, :math:`\sigma = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`.

    With :math:`L = \log(\sigma_{\max}/\sigma_{\min})`: :math:`\sigma' = L\sigma`,
    :math:`\lambda = -2(\log\sigma_{\min} + tL)`, :math:`\lambda' = -2L`, :math:`f = 0`,
    :math:`g^2 = 2L\sigma^2`, :math:`t(\lambda) = (-\lambda/2 - \log\sigma_{\min})/L`
    (score_sde_pytorch ``VESDE.sde``: diffusion :math:`\sigma\sqrt{2L}`).  :math:`t \in [0, 1]`.

    Parameters
    ----------
    sigma_min, sigma_max : float
        :math:`0 < \sigma_{\min} < \sigma_{\max}` (defaults 0.01 and 50, score_sde's CIFAR-10 values).
    """

    def __init__(self, sigma_min=0.01, sigma_max=50.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min = {self.sigma_min!r}, got {sigma_max!r}")
        self._L = math.log(self.sigma_max / self.sigma_min)

    def __repr__(self):
        return f"VE(sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r})"

    def _alpha(self, t):
        return np.ones_like(t)

    def _d_alpha(self, t):
        return np.zeros_like(t)

    def _sigma(self, t):
        return self.sigma_min * np.exp(t * self._L)

    def _d_sigma(self, t):
        return self._L * self._sigma(t)

    def _log_snr(self, t):
        return -2.0 * (math.log(self.sigma_min) + t * self._L)

    def _d_log_snr(self, t):
        return np.full_like(t, -2.0 * self._L)

    def _f(self, t):
        return np.zeros_like(t)

    def _g2(self, t):
        s = self._sigma(t)
        return 2.0 * self._L * s * s

    def _t_of_log_snr(self, lam):
        return (-0.5 * lam - math.log(self.sigma_min)) / self._L


class EDM(Schedule):
    r"""Karras et al.'s schedule: :math:`\alpha = 1`, :math:`\sigma = t`, :math:`t \in [0, \infty)`.

    :math:`\sigma' = 1`, :math:`\lambda = -2\log t`, :math:`\lambda' = -2/t`, :math:`f = 0`,
    :math:`g^2 = 2t`, :math:`t(\lambda) = e^{-\lambda/2}`.  :meth:`grid` is the time discretisation of
    Karras et al. 2022 eq. (5) with :math:`\sigma_N = 0` appended.

    Parameters
    ----------
    sigma_min, sigma_max : float
        The grid's ends, :math:`0 < \sigma_{\min} < \sigma_{\max}` (defaults 0.002 and 80).
    rho : float
        The grid's exponent (default 7).
    sigma_data : float
        The data's standard deviation used by the preconditioning
        (:func:`refscore.diffusion.parametrisations.edm_preconditioning`), default 0.5.
    """

    t_max = math.inf

    def __init__(self, sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_data=0.5):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min = {self.sigma_min!r}, got {sigma_max!r}")
        self.rho = check_positive("rho", rho)
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def __repr__(self):
        return (f"EDM(sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r}, rho={self.rho!r}, "
                f"sigma_data={self.sigma_data!r})")

    def grid(self, n):
        r"""The ``n + 1`` times :math:`t_0 > \dots > t_{n-1} > t_n = 0` of an ``n``-step run (``n >= 2``).

        .. math::

            t_i = \Bigl(\sigma_{\max}^{1/\rho} + \tfrac{i}{n-1}\bigl(\sigma_{\min}^{1/\rho}
                  - \sigma_{\max}^{1/\rho}\bigr)\Bigr)^\rho, \quad i < n, \qquad t_n = 0,

        so :math:`t_0 = \sigma_{\max}` and :math:`t_{n-1} = \sigma_{\min}` (Karras et al. 2022, eq. (5);
        NVlabs/edm ``generate.py``, ``edm_sampler``).  The ends are set exactly.

        Examples
        --------
        >>> from refscore.diffusion.schedules import EDM
        >>> g = EDM().grid(18)
        >>> len(g), float(g[0]), float(g[-2]), float(g[-1])
        (19, 80.0, 0.002, 0.0)
        """
        n = check_int("n", n, 2)
        i = np.arange(n) / (n - 1)
        lo, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        t = (hi + i * (lo - hi)) ** self.rho
        t[0], t[-1] = self.sigma_max, self.sigma_min
        return np.append(t, 0.0)

    def _alpha(self, t):
        return np.ones_like(t)

    def _d_alpha(self, t):
        return np.zeros_like(t)

    def _sigma(self, t):
        return np.array(t, dtype=float, copy=True)

    def _d_sigma(self, t):
        return np.ones_like(t)

    def _log_snr(self, t):
        return -2.0 * np.log(t)

    def _d_log_snr(self, t):
        return -2.0 / t

    def _f(self, t):
        return np.zeros_like(t)

    def _g2(self, t):
        return 2.0 * t

    def _t_of_log_snr(self, lam):
        return np.exp(-0.5 * lam)


class Flow(Schedule):
    r"""The linear interpolant of flow matching / rectified flow: :math:`\alpha = 1 - t`, :math:`\sigma = t`, :math:`t \in [0, 1]`.

    :math:`\alpha' = -1`, :math:`\sigma' = 1`, :math:`\lambda = 2(\mathrm{log1p}(-t) - \log t)`,
    :math:`\lambda' = -2/(t(1 - t))`, :math:`f = -1/(1 - t)`, :math:`g^2 = 2t/(1 - t)`,
    :math:`t(\lambda) = \operatorname{sigmoid}(-\lambda/2)`.
    """

    def __repr__(self):
        return "Flow()"

    def _alpha(self, t):
        return 1.0 - t

    def _d_alpha(self, t):
        return np.full_like(t, -1.0)

    def _sigma(self, t):
        return np.array(t, dtype=float, copy=True)

    def _d_sigma(self, t):
        return np.ones_like(t)

    def _log_snr(self, t):
        return 2.0 * (np.log1p(-t) - np.log(t))

    def _d_log_snr(self, t):
        return -2.0 / (t * (1.0 - t))

    def _f(self, t):
        return -1.0 / (1.0 - t)

    def _g2(self, t):
        return 2.0 * t / (1.0 - t)

    def _t_of_log_snr(self, lam):
        return expit(-0.5 * lam)


class VPDiscrete(Schedule):
    r"""DDPM's discrete schedule :math:`\bar\alpha_n` with a continuous time :math:`t \in [-1, T-1]`.

    At an integer timestep :math:`n` (diffusers' index), :math:`\alpha = \sqrt{\bar\alpha_n}`,
    :math:`\sigma = \sqrt{1 - \bar\alpha_n}`; :math:`t = -1` is the clean data
    (:math:`\bar\alpha = 1`, diffusers' ``alpha_prod_t_prev`` of the last step with
    ``set_alpha_to_one``).  Between integers the EDM noise level
    :math:`s = \sigma/\alpha = \sqrt{(1 - \bar\alpha)/\bar\alpha}` is interpolated linearly in :math:`t`,
    which is what diffusers' ``EulerDiscreteScheduler.set_timesteps`` does (``interpolation_type="linear"``,
    ``np.interp`` of its sigmas at fractional timesteps).  So on a segment, with :math:`s' = s_{n+1} - s_n`,

    .. math::

        \alpha = \frac{1}{\sqrt{1 + s^2}}, \quad \sigma = \frac{s}{\sqrt{1 + s^2}}, \quad
        \alpha' = -\frac{s s'}{(1 + s^2)^{3/2}}, \quad \sigma' = \frac{s'}{(1 + s^2)^{3/2}},

        \lambda = -2\log s, \quad \lambda' = -2s'/s, \quad f = -\frac{s s'}{1 + s^2}, \quad g^2 = -2f,

    and :math:`t(\lambda)`: :math:`s = e^{-\lambda/2}`, located among the increasing knots and
    interpolated back.  After :func:`~refscore.diffusion.tables.rescale_betas_zero_snr` the last knot has
    :math:`\bar\alpha = 0` (:math:`s = \infty`); on that last segment :math:`r = 1/s = e^{\lambda/2}` is
    interpolated instead (:math:`r' = -r_{T-2}`): :math:`\alpha = r/\sqrt{1 + r^2}`,
    :math:`\sigma = 1/\sqrt{1 + r^2}`, :math:`\alpha' = r'/(1 + r^2)^{3/2}`,
    :math:`\sigma' = -r r'/(1 + r^2)^{3/2}`, :math:`\lambda = 2\log r`, :math:`\lambda' = 2r'/r`,
    :math:`f = r'/(r(1 + r^2))`.  Derivatives at an integer are the right-hand ones (the left-hand ones
    at ``T - 1``).

    Parameters
    ----------
    num_train_timesteps, beta_start, beta_end, beta_schedule
        As :func:`refscore.diffusion.tables.ddpm_betas` (defaults 1000, 0.0001, 0.02, ``"linear"``:
        diffusers' ``DDPMScheduler`` defaults).
    rescale_betas_zero_snr : bool
        Rescale to zero terminal SNR (:func:`refscore.diffusion.tables.rescale_betas_zero_snr`).
    trained_betas : array_like, optional
        Betas given directly (every value in (0, 1]); the other table arguments are then ignored.

    Attributes
    ----------
    betas, alphas_cumprod : ndarray, shape (T,)
        The tables, float64, read-only.
    """

    t_min = -1.0

    def __init__(self, num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                 rescale_betas_zero_snr=False, trained_betas=None):
        if trained_betas is not None:
            betas = tables.check_betas(trained_betas, "trained_betas")
        else:
            betas = tables.ddpm_betas(num_train_timesteps, beta_start, beta_end, beta_schedule)
        if rescale_betas_zero_snr:
            betas = tables.rescale_betas_zero_snr(betas)
        T = betas.shape[0]
        ab = tables.alphas_cumprod(betas)
        if np.any(np.diff(ab) >= 0.0) or ab[0] >= 1.0:
            raise ValueError("the betas must give strictly decreasing alphas_cumprod below 1 (no beta may round "
                             "to 0 against 1 in float64)")
        self.beta_schedule = "trained" if trained_betas is not None else beta_schedule
        self.zero_terminal_snr = bool(ab[-1] == 0.0)
        self.t_max = float(T - 1)
        self.num_train_timesteps = T
        self._betas = betas
        self._ab = ab
        abk = np.concatenate([[1.0], ab])  # knots at t = -1, 0, ..., T - 1
        with np.errstate(divide="ignore"):
            s = np.sqrt((1.0 - abk) / abk)
        self._s = s  # increasing; +inf at the last knot with zero terminal SNR
        self._ds = np.diff(s)  # per segment k (t in [k - 1, k])
        if self.zero_terminal_snr:
            self._r_last = 1.0 / s[-2]  # r = 1/s on the last segment goes from this to 0
        for a in (self._betas, self._ab, self._s, self._ds):
            a.setflags(write=False)

    betas = property(lambda self: self._betas, doc="per-step variances, shape (T,)")
    alphas_cumprod = property(lambda self: self._ab, doc="cumulative products of 1 - betas, shape (T,)")

    def __repr__(self):
        z = ", zero terminal SNR" if self.zero_terminal_snr else ""
        return f"VPDiscrete(T={self.num_train_timesteps}, {self.beta_schedule}{z})"

    def timesteps(self, num_inference_steps, spacing="leading", steps_offset=0):
        """The integer timesteps of an ``n``-step DDPM/DDIM run (:func:`refscore.diffusion.tables.inference_timesteps`)."""
        return tables.inference_timesteps(num_inference_steps, self.num_train_timesteps, spacing, steps_offset)

    # segment k covers t in [k - 1, k], k = 0 .. T - 1 (knots self._s[k], self._s[k + 1])
    def _seg(self, t):
        k = np.clip(np.floor(t).astype(np.int64) + 1, 0, self.num_train_timesteps - 1)
        return k, t - (k - 1)

    def _parts(self, t):
        """``(s, s', r, r', last)``: s and s' on the s-segments; r, r' on the zero-SNR last segment (mask ``last``)."""
        t = np.asarray(t, dtype=float)
        k, u = self._seg(t)
        last = (k == self.num_train_timesteps - 1) & self.zero_terminal_snr
        kk = np.where(last, 0, k)
        ds = self._ds[kk]
        s = self._s[kk] + u * ds
        if self.zero_terminal_snr:
            r = self._r_last * (1.0 - u)
            dr = -self._r_last
        else:  # never selected (``last`` is all False): a harmless value, so no 0/0 is evaluated
            r, dr = np.ones_like(s), 0.0
        return s, ds, r, dr, last

    def _alpha(self, t):
        s, _, r, _, last = self._parts(t)
        return np.where(last, r / np.hypot(1.0, r), 1.0 / np.hypot(1.0, s))

    def _sigma(self, t):
        s, _, r, _, last = self._parts(t)
        return np.where(last, 1.0 / np.hypot(1.0, r), s / np.hypot(1.0, s))

    def _d_alpha(self, t):
        s, ds, r, dr, last = self._parts(t)
        return np.where(last, dr / np.hypot(1.0, r) ** 3, -s * ds / np.hypot(1.0, s) ** 3)

    def _d_sigma(self, t):
        s, ds, r, dr, last = self._parts(t)
        return np.where(last, -r * dr / np.hypot(1.0, r) ** 3, ds / np.hypot(1.0, s) ** 3)

    def _log_snr(self, t):
        s, _, r, _, last = self._parts(t)
        with np.errstate(divide="ignore"):
            return np.where(last, 2.0 * np.log(r), -2.0 * np.log(s))

    def _d_log_snr(self, t):
        s, ds, r, dr, last = self._parts(t)
        with np.errstate(divide="ignore"):
            return np.where(last, 2.0 * dr / r, -2.0 * ds / s)

    def _f(self, t):
        s, ds, r, dr, last = self._parts(t)
        with np.errstate(divide="ignore"):
            return np.where(last, dr / (r * (1.0 + r * r)), -s * ds / (1.0 + s * s))

    def _g2(self, t):
        return -2.0 * self._f(t)

    def _t_of_log_snr(self, lam):
        lam = np.asarray(lam, dtype=float)
        T = self.num_train_timesteps
        with np.errstate(over="ignore"):
            s = np.exp(-0.5 * lam)
        k = np.clip(np.searchsorted(self._s, s, side="right") - 1, 0, T - 1)
        last = (k == T - 1) & self.zero_terminal_snr
        kk = np.where(last, 0, k)
        with np.errstate(invalid="ignore"):
            t = (kk - 1) + (s - self._s[kk]) / self._ds[kk]
        if self.zero_terminal_snr:
            t = np.where(last, (T - 2) + (1.0 - np.exp(0.5 * lam) / self._r_last), t)
        return t


#: the schedules by name (the registry every consumer reads)
SCHEDULES = {"vp": VP, "subvp": SubVP, "ve": VE, "edm": EDM, "flow": Flow, "vp_discrete": VPDiscrete}


def convert(x, t, source, target):
    r"""``(x_B, t_B)``: the point of schedule ``target`` with the same marginal as ``x`` at ``t`` of ``source``.

    .. math::

        t_B = t_B\bigl(\lambda_A(t)\bigr), \qquad x_B = \frac{\alpha_B(t_B)}{\alpha_A(t)}\, x

    (docs/diffusion.md §1.3).  ``x`` is any array (it is only scaled); ``t`` a scalar, or an array
    broadcasting against ``x``'s leading axis when ``x`` is ``(n, d)`` and ``t`` is ``(n,)``.
    ``ValueError`` when :math:`\alpha_A(t) = 0` (no signal to rescale) or when :math:`\lambda_A(t)` is outside
    ``target``'s range.

    Examples
    --------
    >>> from refscore.diffusion.schedules import VE, Flow, convert
    >>> xb, tb = convert(2.0, 0.5, Flow(), VE(0.01, 50.0))
    >>> # Flow's t = 0.5 has log-SNR 0; VE reaches sigma = 1 at t = log(100)/log(5000), with alpha 1 = 2 * 0.5
    >>> round(tb, 12), xb
    (0.540691056606, 4.0)
    """
    if not isinstance(source, Schedule) or not isinstance(target, Schedule):
        raise TypeError(f"source and target must be Schedule instances, got {type(source).__name__} and "
                        f"{type(target).__name__}")
    tt, sc = source._t(t)
    xa = as_float_array(x, "x")
    with np.errstate(divide="ignore"):
        lam = source._log_snr(tt)
    a_src = source._alpha(tt)
    if np.any(a_src == 0.0):
        raise ValueError(f"t must have alpha(t) > 0 in {source!r} to convert (alpha = 0 carries no signal), got "
                         f"t = {float(np.max(tt))!r}")
    lo, hi = target.log_snr_range()
    if np.any(lam < lo) or np.any(lam > hi):
        raise ValueError(f"t gives log-SNR values in [{float(np.min(lam))!r}, {float(np.max(lam))!r}] in {source!r}, "
                         f"outside [{lo!r}, {hi!r}], the range of {target!r}")
    with np.errstate(divide="ignore", over="ignore"):
        tb = np.clip(target._t_of_log_snr(lam), target.t_min, target.t_max)
    ratio = target._alpha(tb) / a_src
    if ratio.ndim == 1 and xa.ndim == 2:
        ratio = ratio[:, None]
    xb = ratio * xa
    return (float(xb) if xa.ndim == 0 else xb), _out(tb, sc)
