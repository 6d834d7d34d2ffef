"""The baselines a risk desk would run, on the same origins and with as many paths as the model's scenarios.

* ``garch_t`` / ``gjr_t``: GARCH(1,1) / GJR-GARCH(1,1) with Student-t errors per asset, fitted on the run's
  training period (``arch``), filtered through the data with those parameters, simulated along each path; the
  assets' shocks are tied by a Gaussian copula with the training correlation of their Gaussianised shocks (a
  constant-conditional-correlation model, CCC: per-asset scores are those of the univariate GARCH).
* ``tcop_gjr_t``: the same marginals tied by a Student-t copula (its degrees of freedom fitted by maximum
  likelihood on the training shocks): assets fall together more often in the tails than a Gaussian copula allows.
* ``dcc_gjr_t``: the same marginals with a DCC(1,1) correlation (:mod:`.dcc`), filtered through the data up to each
  origin; each path day uses Engle & Sheppard's correlation forecast for that day (the standard stronger baseline).
* ``fhs``: filtered historical simulation: whole cross-sections of the GJR-t's standardised residuals drawn from the
  days before the origin, pushed through each asset's variance recursion (dependence and tails from the data,
  volatility from the GARCH).
* ``bootstrap``: historical simulation, H consecutive days of all assets drawn from the history before the origin.

Every function returns log returns ``(origin, horizon, path, asset)`` like a scenario file's ``log_return``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...diffusion import numpy_rng
from .dcc import DCC, cholesky
from .garch import GarchT, correlation_factor, day_number
from .tcopula import TCopula

PCT = 100.0
COPULAS = ("gauss", "t", "dcc", "fhs")
# name -> (asymmetric GARCH, copula): the baselines of the risk report, in its order
BASELINES = {"gjr_t": (True, "gauss"), "garch_t": (False, "gauss"), "tcop_gjr_t": (True, "t"),
             "dcc_gjr_t": (True, "dcc"), "fhs": (True, "fhs"), "bootstrap": (False, "bootstrap")}


class GarchBaseline:
    """A fitted per-asset GARCH-t whose shocks are tied across assets by ``copula``: ``gauss`` (CCC), ``t``
    (Student-t copula), ``dcc`` (DCC(1,1) Gaussian) or ``fhs`` (filtered historical simulation: the residuals' own
    cross-sections)."""

    def __init__(self, r_train: pd.DataFrame, asymmetric: bool, copula: str = "gauss",
                 garch: GarchT | None = None) -> None:
        """``garch``: marginals already fitted to ``r_train`` (several baselines share one fit)."""
        if copula not in COPULAS:
            raise ValueError(f"copula {copula!r} is not one of {', '.join(COPULAS)}")
        self.copula = copula
        self.garch = garch if garch is not None else GarchT.fit(r_train * PCT, asymmetric=asymmetric)
        g = self.garch.gaussianised(r_train.to_numpy() * PCT)[0]
        self.chol = correlation_factor(g)
        self.tcop = TCopula.fit(g) if copula == "t" else None
        self.dcc = DCC.fit(g) if copula == "dcc" else None

    def _shocks(self, rng: np.random.Generator, n: int, horizon: int, L: np.ndarray | None = None) -> np.ndarray:
        """Standardised shocks ``(n, A, H)``; ``L`` ``(H, A, A)``: one correlation factor per day (DCC)."""
        A = self.chol.shape[0]
        if self.tcop is not None:
            g = self.tcop.sample_normal_scores(rng, n, horizon)
        elif L is not None:
            g = np.einsum("hab,nbh->nah", L, rng.standard_normal((n, A, horizon)))
        else:
            g = np.einsum("ab,nbh->nah", self.chol, rng.standard_normal((n, A, horizon)))
        return self.garch.from_normal(g, axis=1)

    def _residuals(self, r_pct: np.ndarray, s2: np.ndarray) -> np.ndarray:
        """Standardised residuals ``(T, A)`` of returns ``(T, A)`` (NaN where a return is missing)."""
        return (r_pct - self.garch.mu) / np.sqrt(s2[:-1])

    @staticmethod
    def _cross_sections(z_hist: np.ndarray, days: np.ndarray, rng: np.random.Generator, n: int, horizon: int
                        ) -> np.ndarray:
        """FHS shocks ``(n, A, H)``: whole cross-sections of the residuals ``z_hist`` ``(T, A)`` drawn from rows
        ``days``."""
        return z_hist[rng.choice(days, (n, horizon))].transpose(0, 2, 1)

    def scenarios(self, r: pd.DataFrame, rows: np.ndarray, paths: int, horizon: int, seed: int) -> np.ndarray:
        x = r.to_numpy() * PCT
        s2 = self.garch.filter(x, center=self.garch.mu)
        if self.dcc is not None:
            q = self.dcc.filter(self.garch.to_normal(self._residuals(x, s2)), np.asarray(rows) + 1)
        if self.copula == "fhs":
            z_hist = self._residuals(x, s2)
            full = np.flatnonzero(np.isfinite(z_hist).all(1))
        out = np.empty((len(rows), horizon, paths, r.shape[1]))
        for i, row in enumerate(rows):
            rng = numpy_rng(seed, "baseline", int(day_number(r.index[row])[0]))
            if self.copula == "fhs":
                past = full[full <= row]
                if len(past) == 0:
                    raise ValueError(f"no day with every asset observed before {r.index[row].date()}")
                z = self._cross_sections(z_hist, past, rng, paths, horizon)
            else:
                L = cholesky(self.dcc.forecast(q[i], horizon)) if self.dcc is not None else None
                z = self._shocks(rng, paths, horizon, L)
            lr, _ = self.garch.simulate(np.repeat(s2[row + 1][None], paths, 0), z)
            out[i] = lr.transpose(2, 0, 1) / PCT
        return out

    def long_paths(self, r: pd.DataFrame, days: int, paths: int, seed: int) -> np.ndarray:
        """``(paths, days, A)`` from the state at the last day of ``r`` (DCC: at its long-run correlation, the
        forecast's limit; FHS: residuals of the whole of ``r``)."""
        x = r.to_numpy() * PCT
        s2 = self.garch.filter(x, center=self.garch.mu)
        rng = numpy_rng(seed, "baseline long")
        if self.copula == "fhs":
            z_hist = self._residuals(x, s2)
            z = self._cross_sections(z_hist, np.flatnonzero(np.isfinite(z_hist).all(1)), rng, paths, days)
        elif self.dcc is not None:
            L = cholesky(self.dcc.correlation(self.dcc.qbar))
            z = self._shocks(rng, paths, days, np.broadcast_to(L, (days, *L.shape)))
        else:
            z = self._shocks(rng, paths, days)
        lr, _ = self.garch.simulate(np.repeat(s2[-1][None], paths, 0), z)
        return lr.transpose(0, 2, 1) / PCT


def bootstrap_scenarios(r: pd.DataFrame, rows: np.ndarray, paths: int, horizon: int, seed: int,
                        first: int = 0) -> np.ndarray:
    """Historical simulation: each path is a random block of H consecutive days with all assets observed, taken
    from rows ``first`` .. origin (only the past of each origin is used)."""
    x = r.to_numpy()
    full = np.isfinite(x).all(1)
    ok_block = np.convolve(full.astype(int), np.ones(horizon, int), "valid") == horizon  # rows s..s+H-1 complete
    out = np.empty((len(rows), horizon, paths, x.shape[1]))
    for i, row in enumerate(rows):
        starts = np.flatnonzero(ok_block[first:max(row - horizon + 2, first)]) + first
        if len(starts) == 0:
            raise ValueError(f"no complete {horizon}-day block of history before {r.index[row].date()}")
        rng = numpy_rng(seed, "baseline", int(day_number(r.index[row])[0]))
        s = rng.choice(starts, paths)
        out[i] = np.stack([x[s + h] for h in range(horizon)])
    return out


def bootstrap_long(r: pd.DataFrame, days: int, paths: int, horizon: int, seed: int) -> np.ndarray:
    """``(paths, days, A)``: H-day blocks of ``r`` drawn at random and joined (a block bootstrap)."""
    x = r.to_numpy()
    full = np.isfinite(x).all(1)
    starts = np.flatnonzero(np.convolve(full.astype(int), np.ones(horizon, int), "valid") == horizon)
    rng = numpy_rng(seed, "bootstrap long")
    n = -(-days // horizon)
    s = rng.choice(starts, (paths, n))
    blocks = np.stack([x[s + h] for h in range(horizon)], axis=2)  # (paths, n, H, A)
    return blocks.reshape(paths, n * horizon, -1)[:, :days]
