"""GARCH(1,1) and GJR-GARCH(1,1) with Student-t shocks, per asset: fitted with ``arch``, filtered and simulated here.

Returns are in percent inside this module (``arch``'s scale). The model of asset ``a`` on day ``t``:

    r_t = mu + e_t,    e_t = sigma_t z_t,    z_t ~ standardised t(nu) (unit variance),
    sigma_t^2 = omega + (alpha + gamma 1[e_{t-1} < 0]) e_{t-1}^2 + beta sigma_{t-1}^2      (gamma = 0: GARCH(1,1))

The filter starts from ``arch``'s backcast (an exponentially weighted mean of the first 75 squared residuals) and,
on a missing return, carries the variance forward with ``e^2`` replaced by its expectation ``sigma^2`` (and the
indicator by 1/2). :meth:`GarchT.to_normal` maps shocks through the t's CDF and the inverse normal CDF (the
"Gaussianised" shocks the diffusion model learns); :meth:`GarchT.from_normal` maps back.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from scipy import stats

PARAMS = ("mu", "omega", "alpha", "gamma", "beta", "nu")


@dataclass
class GarchT:
    """Per-asset parameters, each ``(A,)`` (percent units for ``mu`` and ``omega``)."""

    mu: np.ndarray
    omega: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    nu: np.ndarray

    @classmethod
    def fit(cls, r_pct: pd.DataFrame, asymmetric: bool = True) -> GarchT:
        """Maximum-likelihood fit per column of ``r_pct`` (percent log returns, NaN rows of a column dropped) with
        ``arch``: constant mean, GJR-GARCH(1,1) (``asymmetric``) or GARCH(1,1), Student-t errors."""
        from arch import arch_model

        rows = []
        for col in r_pct.columns:
            y = r_pct[col].dropna()
            if len(y) < 250:
                dated = len(y) and hasattr(y.index[0], "date")
                span = f" ({y.index[0].date()} to {y.index[-1].date()})" if dated else ""
                raise ValueError(f"asset {col!r} has {len(y)} returns in the training period{span}; GARCH needs at "
                                 "least 250: lengthen the training period or leave the asset out (--assets)")
            res = arch_model(y, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t",
                             rescale=False).fit(disp="off")
            p = res.params
            rows.append([p["mu"], p["omega"], p["alpha[1]"], p.get("gamma[1]", 0.0), p["beta[1]"], p["nu"]])
        a = np.asarray(rows, dtype=np.float64).T
        return cls(*a)

    # --- (de)serialisation -------------------------------------------------------------------------------------
    def state(self, prefix: str = "garch_") -> dict[str, np.ndarray]:
        return {prefix + f.name: np.asarray(getattr(self, f.name), dtype=np.float64) for f in fields(self)}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray], prefix: str = "garch_") -> GarchT:
        return cls(*(np.asarray(s[prefix + n], dtype=np.float64) for n in PARAMS))

    # --- the recursion -----------------------------------------------------------------------------------------
    def long_run_variance(self) -> np.ndarray:
        """``omega / (1 - alpha - gamma/2 - beta)`` (inf where the fit is not covariance-stationary)."""
        persistence = self.alpha + self.gamma / 2 + self.beta
        return np.where(persistence < 1, self.omega / np.maximum(1 - persistence, 1e-12), np.inf)

    def next_variance(self, e: np.ndarray, s2: np.ndarray) -> np.ndarray:
        """``sigma_{t+1}^2`` from residual ``e_t`` and ``sigma_t^2`` (assets on the last axis; NaN ``e`` = missing)."""
        miss = np.isnan(e)
        e2 = np.where(miss, s2, e * e)
        lev = np.where(miss, 0.5, (e < 0).astype(np.float64))
        return self.omega + (self.alpha + self.gamma * lev) * e2 + self.beta * s2

    def filter(self, r_pct: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
        """Conditional variances ``(T + 1, A)`` of returns ``(T, A)``: row ``t`` is ``sigma_t^2`` (known before day
        ``t``), the last row the variance of the day after the data. The start is ``arch``'s: the backcast of the
        returns less ``center`` (default their sample mean, as ``arch`` does on the fitting sample; pass ``mu``
        where the data run past the fitting period, so no row's variance depends on later returns)."""
        r = np.asarray(r_pct, dtype=np.float64)
        e = r - self.mu
        s2 = np.empty((len(e) + 1, e.shape[1]))
        c = np.nanmean(r, axis=0) if center is None else center
        s2[0] = self.omega + (self.alpha + self.gamma / 2 + self.beta) * backcast(r - c)
        for t in range(len(e)):
            s2[t + 1] = self.next_variance(e[t], s2[t])
        return s2

    def gaussianised(self, r_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(T, A)`` (percent) -> (their Gaussianised shocks ``(T, A)``, the filter's variances
        ``(T + 1, A)``)."""
        r_pct = np.asarray(r_pct, dtype=np.float64)
        s2 = self.filter(r_pct)
        return self.to_normal((r_pct - self.mu) / np.sqrt(s2[:-1])), s2

    def simulate(self, s2_next: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paths from standardised shocks ``z`` ``(..., A, H)``, each starting from next-day variances ``s2_next``
        ``(..., A)``; the variance follows each path's own shocks. Returns (percent returns ``(..., A, H)``, the
        variance of the day after each path day ``(..., A, H)``)."""
        r = np.empty_like(z, dtype=np.float64)
        after = np.empty_like(r)
        s2 = np.asarray(s2_next, dtype=np.float64).copy()
        for h in range(z.shape[-1]):
            e = np.sqrt(s2) * z[..., h]
            r[..., h] = self.mu + e
            s2 = after[..., h] = self.next_variance(e, s2)
        return r, after

    # --- shocks <-> Gaussian ----------------------------------------------------------------------------------
    def _t_scale(self) -> np.ndarray:
        return np.sqrt(self.nu / (self.nu - 2))

    def to_normal(self, z: np.ndarray, axis: int = -1) -> np.ndarray:
        """Standardised-t shocks -> N(0, 1) by the probability integral transform (assets on ``axis``)."""
        shape = [1] * np.ndim(z)
        shape[axis] = -1
        nu, k = self.nu.reshape(shape), self._t_scale().reshape(shape)
        q = z * k
        # Tails through the survival function so that |z| of 10+ does not round to a CDF of exactly 0 or 1.
        return np.where(q < 0, stats.norm.isf(stats.t.sf(-q, nu)) * -1.0, stats.norm.isf(stats.t.sf(q, nu)))

    def from_normal(self, g: np.ndarray, axis: int = -1) -> np.ndarray:
        """N(0, 1) values -> standardised-t shocks (the inverse of :meth:`to_normal`)."""
        shape = [1] * np.ndim(g)
        shape[axis] = -1
        nu, k = self.nu.reshape(shape), self._t_scale().reshape(shape)
        return np.where(g < 0, -stats.t.isf(stats.norm.sf(-g), nu), stats.t.isf(stats.norm.sf(g), nu)) / k


def backcast(e: np.ndarray, tau: int = 75) -> np.ndarray:
    """``arch``'s starting variance: the 0.94-exponentially weighted mean of the first ``tau`` observed squared
    residuals of each column (an asset that lists late starts from its own first days, not from NaN)."""
    out = np.empty(e.shape[1])
    for a in range(e.shape[1]):
        head = e[:, a][np.isfinite(e[:, a])][:tau]
        if len(head) == 0:
            raise ValueError(f"column {a} has no observed returns")
        w = 0.94 ** np.arange(len(head))
        out[a] = (head**2 * w).sum() / w.sum()
    return out


def correlation_factor(g: np.ndarray) -> np.ndarray:
    """Cholesky factor ``(A, A)`` of the correlation of shocks ``g`` ``(T, A)`` over the days all assets have."""
    A = g.shape[1]
    full = g[np.isfinite(g).all(1)]
    return np.linalg.cholesky(np.atleast_2d(np.corrcoef(full.T)) + 1e-9 * np.eye(A))


def day_number(t: pd.Timestamp | np.ndarray | pd.DatetimeIndex) -> np.ndarray:
    """Days since 1970-01-01: the origin part of the per-origin seeds of scenarios and baselines."""
    # Through datetime64[D]: pandas indexes may hold s, ms, us or ns, so asi8 is not in a fixed unit.
    return pd.DatetimeIndex(np.atleast_1d(t)).values.astype("datetime64[D]").astype(np.int64)
