"""Conditional market scenarios: a diffusion model of the next H days' GARCH shocks, all assets jointly.

The design (see ``docs/finance.md``): per asset a GJR-GARCH(1,1)-t is fitted on the training period; its shocks are
Gaussianised through the t's CDF; a 1-D U-Net (assets as channels, the horizon as the axis) learns the joint law of
the next H Gaussianised shocks given the GARCH volatility and summaries of the last C days (:mod:`.features`).
A scenario maps sampled shocks back through the t and runs the GJR variance recursion along its own path, so every
path carries volatility clustering and the leverage effect, while the model supplies the cross-asset dependence,
the shape of joint tails and what the GARCH misses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ...diffusion import KnownCombinations, combination_constraints, derive_seed
from ...diffusion.precond import DenoiserFn
from ...tasks.outputs import provenance, state_tensors
from ...training.fit import TrainedRun, load_trained
from ...training.sampling import SamplingSpec
from .dcc import DCC, cholesky
from .features import as_channels, summaries
from .garch import GarchT, day_number
from .given import given_shocks, parse_given, whitened_constraints
from .series import log_returns, period_slice, read_table

PCT = 100.0  # GARCH works in percent log returns


@dataclass
class ShockModel:
    """What is fitted on the training period and turns a return table into model inputs (and samples back).

    The copula of the Gaussianised shocks, the base law the network starts from, is a constant correlation (CCC,
    ``chol``) or a DCC(1,1) (``dcc``, :mod:`.dcc`): then each window is whitened by the Cholesky factor of the
    correlation forecast for the day after its origin, kept over the window (the network corrects the rest), so the
    base follows the market's correlation regime. ``chol`` is kept either way.
    """

    garch: GarchT
    sigma_bar: np.ndarray   # (A,) training mean of the GARCH volatility, percent
    chol: np.ndarray        # (A, A) Cholesky factor of the training correlation of the Gaussianised shocks
    context: int
    horizon: int
    dcc: DCC | None = None  # dynamic correlation of the Gaussianised shocks (None: the constant ``chol``)
    covariates: tuple[str, ...] = ()  # columns that condition the scenarios but are not simulated (a VIX, rates)
    cov_mean: np.ndarray | None = None  # (K,) their training mean
    cov_std: np.ndarray | None = None   # (K,) their training standard deviation

    def read_covariates(self, data: str | os.PathLike | pd.DataFrame, index: pd.DatetimeIndex) -> np.ndarray | None:
        """The covariates ``(T, K)`` on the days ``index`` of the returns (each day's last known value: forward
        filled, never from the future), or None for a run without covariates."""
        if not self.covariates:
            return None
        table = read_table(data, list(self.covariates))
        return table.reindex(table.index.union(index)).ffill().reindex(index).to_numpy(dtype=np.float64)

    def covariate_features(self, cov: np.ndarray, ends: Sequence[int]) -> np.ndarray:
        """``(N, 2K)``: each covariate's standardised level on the origin day and its change over the 5 days before
        (training units); unknown values (before a series starts) count as the training mean (0)."""
        assert self.cov_mean is not None and self.cov_std is not None
        e = np.asarray(ends)
        now, before = cov[e], cov[np.maximum(e - 5, 0)]
        f = np.concatenate([(now - self.cov_mean) / self.cov_std, (now - before) / self.cov_std], axis=1)
        return np.clip(np.nan_to_num(f), -6.0, 6.0).astype(np.float32)

    def factors(self, g: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
        """Cholesky factors ``(N, A, A)`` of the correlation forecast for the day after each origin row ``ends`` of
        shocks ``g`` ``(T, A)``; None for a constant-correlation model (``chol`` throughout)."""
        if self.dcc is None:
            return None
        return cholesky(self.dcc.correlation(self.dcc.filter(g, np.asarray(ends) + 1)))

    def whiten(self, g: np.ndarray, L: np.ndarray | None = None) -> np.ndarray:
        """Shocks ``(N, A, H)`` -> the model's target ``L^-1 g``: N(0, I) under the constant-correlation GARCH, so
        the network (zero-initialised: it starts as the exact denoiser of N(0, I)) learns only what that misses.
        ``L`` ``(N, A, A)``: one factor per window (DCC); default ``chol``. Missing days: see :func:`_whiten_days`."""
        if L is not None:  # one factor per window (DCC): complete windows at once, the others one by one
            out = np.full_like(g, np.nan, dtype=np.float64)
            full = np.isfinite(g).all((1, 2))
            if full.any():
                out[full] = np.linalg.solve(L[full], g[full])
            for n in np.flatnonzero(~full):
                out[n] = _whiten_days(g[n:n + 1], L[n])[0]
            return out
        return _whiten_days(g, self.chol)

    def colour(self, w: np.ndarray, L: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Inverse of :meth:`whiten`: ``(N, A, H)`` -> shocks; ``L`` ``(O, A, A)`` one factor per origin and ``rows``
        ``(N,)`` each sample's origin (default ``chol`` for all). Samples are clipped at +-6 first: a rare far-out
        draw of the sampler would otherwise map through the t's quantile function to an absurd shock and blow up
        the variance recursion."""
        w = np.clip(w, -6.0, 6.0)
        if L is None:
            return np.einsum("ab,nbh->nah", self.chol, w)
        rows = np.arange(len(w)) if rows is None else np.asarray(rows)
        out = np.empty_like(w, dtype=np.float64)
        for o in np.unique(rows):  # by origin: L[rows] would be (N, A, A), 8 GB for 4000 paths of 500 assets
            at = rows == o
            out[at] = np.einsum("ab,nbh->nah", L[o], w[at])
        return out

    def shocks(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fraction log returns ``(T, A)`` -> Gaussianised shocks ``g`` ``(T, A)``, next-day variances ``s2``
        ``(T, A)`` (row t: the variance of day t + 1, percent^2) and ``log_vol = log(sigma_{t+1} / sigma_bar)``."""
        g, s2 = self.garch.gaussianised(r * PCT)
        return g, s2[1:], 0.5 * np.log(s2[1:]) - np.log(self.sigma_bar)

    def cond(self, g: np.ndarray, log_vol: np.ndarray, ends: Sequence[int], cov: np.ndarray | None = None
             ) -> np.ndarray:
        """Condition channels ``(N, F, H)`` of the origins ``ends`` (rows of ``g``; ``cov`` on the same rows)."""
        f = summaries(g, log_vol, ends, self.context)
        if self.covariates:
            if cov is None:
                raise ValueError(f"this run is conditioned on covariates {list(self.covariates)}: give data with them")
            f = np.concatenate([f, self.covariate_features(cov, ends)], axis=1)
        return as_channels(f, self.horizon)

    def paths(self, g_paths: np.ndarray, s2_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussianised shocks ``(N, A, H)`` + next-day variances ``(N, A)`` -> (fraction log returns
        ``(N, A, H)``, the variance of the day after each path day ``(N, A, H)``, percent^2)."""
        r, after = self.garch.simulate(s2_next, self.garch.from_normal(g_paths, axis=1))
        return r / PCT, after

    def state_dict(self) -> dict[str, torch.Tensor]:
        dcc = {} if self.dcc is None else self.dcc.state()
        cov = {} if not self.covariates else {"cov_mean": self.cov_mean, "cov_std": self.cov_std}
        return state_tensors({**self.garch.state(), "sigma_bar": self.sigma_bar, "chol": self.chol, **dcc, **cov})

    @classmethod
    def from_run(cls, run: TrainedRun) -> ShockModel:
        s = {k: v.numpy() for k, v in run.state.items()}
        d = run.config["data"]
        dcc = DCC.from_state(s) if run.metadata.get("copula", "ccc") == "dcc" else None
        cov = tuple(run.metadata.get("covariates", ()))
        return cls(GarchT.from_state(s), s["sigma_bar"], s["chol"], int(d["context"]), int(d["horizon"]), dcc, cov,
                   s.get("cov_mean"), s.get("cov_std"))


def _whiten_days(g: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """``chol^-1`` of each day vector of ``g`` ``(N, A, H)``; a day with missing assets (one that lists late, a
    holiday) is whitened over the assets it has, with the Cholesky factor of their own correlation block, and keeps
    NaN for the rest: ``chol^-1`` of the whole vector would spread one missing asset to every later one."""
    A = g.shape[1]
    v = np.moveaxis(g, 1, -1).reshape(-1, A)                     # (N * H, A) day vectors
    out = np.full_like(v, np.nan, dtype=np.float64)
    seen = np.isfinite(v)
    patterns, which = np.unique(seen, axis=0, return_inverse=True)
    R = chol @ chol.T
    for i, obs in enumerate(patterns):
        if not obs.any():
            continue
        rows = which.ravel() == i
        L = chol if obs.all() else np.linalg.cholesky(R[np.ix_(obs, obs)])
        out[np.ix_(rows, obs)] = np.linalg.solve(L, v[np.ix_(rows, obs)].T).T
    return np.moveaxis(out.reshape(len(g), -1, A), -1, 1)


def read_returns(data: str | os.PathLike | pd.DataFrame, kind: str = "prices",
                 assets: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(log returns, prices or None) from a table of ``kind`` ``prices`` or ``returns`` (log returns, fractions)."""
    if kind not in ("prices", "returns"):
        raise ValueError(f"kind must be 'prices' or 'returns'; got {kind!r}")
    table = read_table(data, assets, kind=kind)
    if kind == "prices":
        return log_returns(table), table
    if kind == "returns":
        if (table.abs() > 1).to_numpy().any():
            raise ValueError("returns above 100% in absolute value: give log returns as fractions (0.01 = 1%), "
                             "or prices with kind=prices")
        return table, None
    raise ValueError(f"kind must be 'prices' or 'returns'; got {kind!r}")




# --- sampling --------------------------------------------------------------------------------------------------

def path_seeds(seed: int, keys: Sequence[int | Sequence[int]], paths: int) -> list[int]:
    """One seed per (key, path), :func:`~sciffusion.derive_seed` of (seed, key, path): a path does not depend on
    which other keys or how many paths are drawn. A key is an origin's day number, or a tuple of ints (a day and a
    sub-job)."""
    return [derive_seed(seed, "path", np.atleast_1d(key).astype(int).tolist(), p) for key in keys
            for p in range(paths)]


def _origin_rows(index: pd.DatetimeIndex, origins: str | Sequence | None, every: int, context: int) -> np.ndarray:
    if origins is None:
        rows = np.array([len(index) - 1])
    elif isinstance(origins, str):
        sl = period_slice(origins)
        rows = np.flatnonzero((index >= (sl.start or index[0])) & (index <= (sl.stop or index[-1])))[::max(every, 1)]
    else:
        want = pd.DatetimeIndex(pd.to_datetime(list(origins)))
        missing = want.difference(index)
        if len(missing):
            raise ValueError(f"origin {missing[0].date()} is not a day of the data")
        rows = index.get_indexer(want)
    if len(rows) == 0:
        raise ValueError(f"no trading day of the data falls in the origins {origins!r}")
    if rows.min() < context - 1:
        raise ValueError(f"origin {index[rows.min()].date()} has {rows.min() + 1} days of history; "
                         f"the run needs {context}")
    return rows


def scenarios(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame, *,
              origins: str | Sequence | None = None, every: int = 1, paths: int = 200, seed: int = 0,
              sampling: dict[str, Any] | None = None, progress: bool = False,
              given: str | Sequence[str] | dict[str, Sequence[float]] | None = None) -> xr.Dataset:
    """Scenario paths from every origin: ``log_return`` and ``price`` ``(origin, horizon, path, asset)``.

    ``data`` holds prices (or returns, as the run was trained) up to each origin; ``origins`` is a period
    (``"2015-01-02/2018-12-31"``; every ``every``-th trading day in it), a list of dates, or None (the last day).
    All origins x paths go through the sampler in large batches. ``given`` fixes some assets' log returns on the
    first days of every path and samples the rest jointly with them (a stress scenario; see :mod:`.given`).
    """
    run = load_trained(run, task="scenarios")
    spec = run.sampling_spec(sampling)
    model = ShockModel.from_run(run)
    assets, kind = run.metadata["assets"], run.metadata.get("kind", "prices")
    r, prices = read_returns(data, kind, assets)
    rows = _origin_rows(r.index, origins, every, model.context)
    g, s2_next, log_vol = model.shocks(r.to_numpy())
    cov = model.read_covariates(data, r.index)
    cond = torch.from_numpy(model.cond(g, log_vol, rows, cov)).repeat_interleave(paths, dim=0)
    A, H = len(assets), model.horizon
    fixed = parse_given(given, assets, H)
    wrap, per_sample = None, None
    L = model.factors(g, rows)
    if fixed:
        spec = spec.replace(inflation=None)  # inflation would move the paths off what is given
        g_known = given_shocks(model.garch, fixed, assets, s2_next[rows], H)
        norm = run.normalizer
        groups = [combination_constraints(*whitened_constraints(g_known[o:o + 1], model.chol if L is None else L[o],
                                                                norm.mean.numpy(), norm.std.numpy()))
                  for o in range(len(rows))]  # one rotation per origin (its shocks, and with DCC its factor)
        rotation = torch.stack([gr[0] for gr in groups])
        known = torch.cat([gr[1] for gr in groups])
        mask = groups[0][2]
        per_sample = {"row": torch.arange(len(rows)).repeat_interleave(paths)}

        def wrap(d: DenoiserFn) -> DenoiserFn:
            return KnownCombinations(d, rotation, known, mask)
    x = run.sample((A, H), path_seeds(seed, day_number(r.index[rows]), paths), cond=cond, sampling=spec,
                   progress=progress, desc="scenarios", wrap=wrap, per_sample=per_sample)
    g_paths = model.colour(run.normalizer.denormalize(x).cpu().numpy().astype(np.float64), L,
                           np.repeat(np.arange(len(rows)), paths))
    lr, _ = model.paths(g_paths, np.repeat(s2_next[rows], paths, axis=0))
    lr = lr.reshape(len(rows), paths, A, H).transpose(0, 3, 1, 2)  # (origin, horizon, path, asset)
    for a, v in fixed.items():  # exactly as given (the sampled ones match to float32 rounding)
        lr[:, :len(v), :, assets.index(a)] = v[None, :, None]
    last = (prices.reindex(r.index).to_numpy()[rows] if prices is not None else np.ones((len(rows), A)))
    ds = to_dataset(lr, r.index, rows, last, assets, kind, run.metadata, seed,
                    sigma_next=np.sqrt(s2_next[rows]) / PCT, spec=spec)
    if fixed:
        ds.attrs["given"] = json.dumps({a: v.tolist() for a, v in fixed.items()})
    return ds


def to_dataset(lr: np.ndarray, index: pd.DatetimeIndex, rows: np.ndarray, last_price: np.ndarray,
               assets: Sequence[str], kind: str, metadata: dict[str, Any], seed: int,
               sigma_next: np.ndarray | None = None, method: str = "sciffusion",
               spec: SamplingSpec | None = None) -> xr.Dataset:
    """The scenario file's layout for log returns ``(origin, horizon, path, asset)``; the ``date`` of each
    (origin, horizon) is the data's trading day where the data reach it, else a business day."""
    O, H = lr.shape[:2]
    dates = np.empty((O, H), dtype="datetime64[ns]")
    for i, row in enumerate(rows):
        known = index[row + 1:row + 1 + H]
        extra = pd.bdate_range(index[row] if not len(known) else known[-1], periods=H - len(known) + 1)[1:]
        dates[i] = np.concatenate([known.values, extra.values])
    price = last_price[:, None, None, :] * np.exp(np.cumsum(lr, axis=1))
    coords = {"origin": index[rows].values, "horizon": np.arange(1, H + 1), "path": np.arange(lr.shape[2]),
              "asset": list(assets), "date": (("origin", "horizon"), dates)}
    ds = xr.Dataset({
        "log_return": (("origin", "horizon", "path", "asset"), lr.astype(np.float32),
                       {"long_name": "daily log return", "units": "1"}),
        "price": (("origin", "horizon", "path", "asset"), price.astype(np.float32),
                  {"long_name": "price" if kind == "prices" else "value of 1 invested at the origin",
                   "units": "as input" if kind == "prices" else "1"}),
        "last_price": (("origin", "asset"), last_price.astype(np.float64), {"long_name": "price at the origin"}),
    }, coords=coords)
    if sigma_next is not None:
        ds["garch_sigma"] = (("origin", "asset"), sigma_next.astype(np.float64),
                             {"long_name": "GJR-GARCH-t volatility of the first day", "units": "1"})
    ds["origin"].attrs["long_name"] = "last observed trading day"
    ds["horizon"].attrs.update(long_name="trading days after the origin", units="days")
    ds.attrs.update(sciffusion_task="scenarios", method=method, **provenance(seed, spec), kind=kind,
                    train_period="/".join(metadata.get("train_period", [])),
                    history=f"scenarios from {metadata.get('source', 'a sciffusion run')} ({method})")
    return ds


def simulate(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame, *, days: int = 2000,
             paths: int = 16, seed: int = 0, sampling: dict[str, Any] | None = None,
             kind: str | None = None) -> np.ndarray:
    """Long paths ``(paths, days, A)`` of fraction log returns, horizon after horizon, each block conditioned on the
    path's own simulated history; starts from the last day of ``data``. For stylized facts that need long series
    (volatility clustering over 50 lags): within a 20-day path those estimates are dominated by small-sample bias.
    ``kind`` overrides the run's (``returns`` to pass log returns to a run trained on prices)."""
    run = load_trained(run, task="scenarios")
    spec = run.sampling_spec(sampling)
    model = ShockModel.from_run(run)
    r, _ = read_returns(data, kind or run.metadata.get("kind", "prices"), run.metadata["assets"])
    g0, s2_0, lv0 = model.shocks(r.to_numpy())
    C, H, A = model.context, model.horizon, r.shape[1]
    blocks = -(-days // H)
    cov0 = model.read_covariates(data, r.index)
    # covariates are not simulated: a long path holds their last known values (so their 5-day change goes to 0)
    cov = None if cov0 is None else np.concatenate([cov0[-C:], np.repeat(cov0[-1:], blocks * H, 0)])
    g = np.concatenate([np.repeat(g0[None, -C:], paths, 0), np.empty((paths, blocks * H, A))], axis=1)
    lv = np.concatenate([np.repeat(lv0[None, -C:], paths, 0), np.empty((paths, blocks * H, A))], axis=1)
    s2 = np.repeat(s2_0[None, -1], paths, 0)
    out = np.empty((paths, blocks * H, A))
    # DCC: each path's Q follows its own simulated shocks, from the data's Q for the day after the data
    q = None if model.dcc is None else np.repeat(model.dcc.filter(g0, [len(g0)]), paths, 0)
    for b in range(blocks):
        t = C + b * H  # first new row
        cw = None if cov is None else cov[t - C:t]
        cond = np.concatenate([model.cond(g[p, t - C:t], lv[p, t - C:t], [C - 1], cw) for p in range(paths)])
        seeds = [derive_seed(seed, "long path", b, p) for p in range(paths)]
        x = run.sample((A, H), seeds, cond=torch.from_numpy(cond), sampling=spec)
        L = None if q is None else cholesky(model.dcc.correlation(q))
        gb = model.colour(run.normalizer.denormalize(x).cpu().numpy().astype(np.float64), L)  # (paths, A, H)
        if q is not None:
            for h in range(H):
                q = model.dcc.step(q, gb[:, :, h])
        rb, after = model.paths(gb, s2)
        out[:, b * H:(b + 1) * H] = rb.transpose(0, 2, 1)
        g[:, t:t + H] = gb.transpose(0, 2, 1)
        lv[:, t:t + H] = (0.5 * np.log(after) - np.log(model.sigma_bar)[:, None]).transpose(0, 2, 1)
        s2 = after[..., -1]
    return out[:, :days]
