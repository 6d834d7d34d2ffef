"""The baselines a risk desk would run, on the same origins and with as many paths as the model's scenarios.

* ``garch_t`` / ``gjr_t``: GARCH(1,1) / GJR-GARCH(1,1) with Student-t errors per asset, fitted on the run's
  training period (``arch``), filtered through the data with those parameters, simulated along each path; the
  assets' shocks are tied by a Gaussian copula with the training correlation of their Gaussianised shocks (a
  constant-conditional-correlation model: per-asset scores are those of the univariate GARCH).
* ``bootstrap``: historical simulation, H consecutive days of all assets drawn from the history before the origin.

Every function returns log returns ``(origin, horizon, path, asset)`` like a scenario file's ``log_return``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...diffusion import numpy_rng
from .garch import GarchT, correlation_factor, day_number

PCT = 100.0


class GarchBaseline:
    """A fitted per-asset GARCH-t with a Gaussian copula across assets."""

    def __init__(self, r_train: pd.DataFrame, asymmetric: bool) -> None:
        self.garch = GarchT.fit(r_train * PCT, asymmetric=asymmetric)
        self.chol = correlation_factor(self.garch.gaussianised(r_train.to_numpy() * PCT)[0])

    def _shocks(self, rng: np.random.Generator, n: int, horizon: int) -> np.ndarray:
        A = self.chol.shape[0]
        g = np.einsum("ab,nbh->nah", self.chol, rng.standard_normal((n, A, horizon)))
        return self.garch.from_normal(g, axis=1)

    def scenarios(self, r: pd.DataFrame, rows: np.ndarray, paths: int, horizon: int, seed: int) -> np.ndarray:
        s2 = self.garch.filter(r.to_numpy() * PCT)
        out = np.empty((len(rows), horizon, paths, r.shape[1]))
        for i, row in enumerate(rows):
            rng = numpy_rng(seed, "baseline", int(day_number(r.index[row])[0]))
            z = self._shocks(rng, paths, horizon)
            lr, _ = self.garch.simulate(np.repeat(s2[row + 1][None], paths, 0), z)
            out[i] = lr.transpose(2, 0, 1) / PCT
        return out

    def long_paths(self, r: pd.DataFrame, days: int, paths: int, seed: int) -> np.ndarray:
        """``(paths, days, A)`` from the state at the last day of ``r``."""
        s2 = self.garch.filter(r.to_numpy() * PCT)
        z = self._shocks(numpy_rng(seed, "baseline long"), paths, days)
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
