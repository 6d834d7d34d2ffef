"""Imputation of missing stretches in daily price/return tables: a mask-conditioned diffusion model (CSDI-style).

The model sees windows of W days of all assets as Gaussianised GJR-GARCH-t shocks (:mod:`.garch`), so one network
serves calm and turbulent years alike. Each training window hides a random set of entries (one asset's stretch, all
assets' stretch, several stretches, scattered days) and the U-Net learns the hidden shocks given four inputs per
asset: the observed shocks, which entries are observed, and, where the stretch's total is known (prices on both
sides), the Gaussian conditional mean of each shock given that total plus a flag (:mod:`.gaps`). Imputed shocks are
mapped back through the GARCH and moved onto the known totals exactly, so the filled-in prices meet the observed
price after the gap.

Baselines by the same code (:func:`impute_baseline`): linear interpolation of log prices; a Brownian bridge per
asset with GARCH volatilities; the GARCH-CCC conditional (the bridge plus the other assets' same-day shocks through
the training correlation), which is what a strong Gaussian imputer knows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import Dataset

from ...diffusion import numpy_rng
from ...tasks.outputs import provenance
from ...training.fit import TrainedRun, load_trained
from ...training.sampling import SamplingSpec
from .gaps import Gaps, GaussianConditional, find_gaps, project_totals, stretches
from .garch import GarchT, day_number
from .scenarios import path_seeds, read_returns

PCT = 100.0
BASELINES = ("linear", "bridge", "ccc")


@dataclass
class Table:
    """A return table in the model's terms. ``r``, ``sigma``, ``z`` are ``(T, A)``: fraction log returns (NaN =
    missing), the GARCH volatility of each day (percent) and the standardised shocks; ``prices`` ``(T + 1, A)`` or
    None; ``c`` ``(K,)`` each gap's known total as ``sum sigma z`` (NaN where unknown)."""

    index: pd.DatetimeIndex   # the return days
    days: pd.DatetimeIndex    # the input's days (one more than ``index`` for prices)
    assets: list[str]
    kind: str
    r: np.ndarray
    prices: np.ndarray | None
    sigma: np.ndarray
    z: np.ndarray
    gaps: Gaps
    c: np.ndarray

    @classmethod
    def read(cls, data: str | os.PathLike | pd.DataFrame, garch: GarchT, kind: str = "prices",
             assets: Sequence[str] | None = None) -> Table:
        r, prices = read_returns(data, kind, assets)
        x = r.to_numpy()
        s2 = garch.filter(x * PCT)
        sigma = np.sqrt(s2[:-1])
        z = (x * PCT - garch.mu) / sigma
        p = None if prices is None else prices.to_numpy()
        gaps = find_gaps(x, p)
        n = gaps.hi - gaps.lo + 1
        c = PCT * gaps.total - n * garch.mu[gaps.asset]
        days = prices.index if prices is not None else r.index
        return cls(r.index, days, list(r.columns), kind, x, p, sigma, z, gaps, c)

    def window_gaps(self, t0: int, W: int) -> np.ndarray:
        """``(W, A)`` gap numbers of rows ``t0 .. t0+W-1``, -1 where observed, the total unknown, or the gap not
        wholly inside the window (its total does not constrain what the window holds)."""
        g = self.gaps.gap_id[t0:t0 + W].copy()
        inside = (self.gaps.lo >= t0) & (self.gaps.hi < t0 + W) & np.isfinite(self.c)
        g[(g >= 0) & ~inside[np.maximum(g, 0)]] = -1
        return g


def window_summaries(g: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """What the window itself says that the training-period GARCH-CCC does not, ``(F,)``: per asset
    ``log(mean g^2) / 2`` over its observed days (volatility the GARCH missed), per pair the correlation of the
    shocks over the days both are observed (it drifts over the years: 0.8 to 0.95 for two US indices)."""
    A = g.shape[1]
    x = np.where(observed, np.nan_to_num(g), 0.0)
    n = np.maximum(observed.sum(0), 1)
    out = list(0.5 * np.log(np.maximum((x * x).sum(0) / n, 1e-2)))
    for a in range(A):
        for b in range(a + 1, A):
            both = observed[:, a] & observed[:, b]
            out.append(np.corrcoef(x[both, a], x[both, b])[0, 1] if both.sum() > 2 else 0.0)
    return np.nan_to_num(np.asarray(out, dtype=np.float64))


def model_inputs(g: np.ndarray, observed: np.ndarray, targets: np.ndarray, gap_of: np.ndarray,
                 given_obs: GaussianConditional, given_all: GaussianConditional) -> np.ndarray:
    """The condition ``(6A + F, W)`` float32 of one window (arrays ``(W, A)``): observed Gaussianised shocks (0
    elsewhere), the observed flags, the GARCH-CCC conditional mean and std given the observations (the target's
    scale), the conditional mean given the known totals too, where a total is known, and the
    :func:`window_summaries` as constant channels."""
    parts = [np.where(observed, np.nan_to_num(g), 0.0), observed, given_obs.mean, given_obs.std, given_all.mean,
             targets & (gap_of >= 0)]
    f = window_summaries(g, observed)
    return np.concatenate([np.asarray(p, dtype=np.float32).T for p in parts]
                          + [np.repeat(f[:, None], len(g), 1).astype(np.float32)])


def cond_channels(assets: int) -> int:
    return 7 * assets + assets * (assets - 1) // 2


def conditionals(z: np.ndarray, observed: np.ndarray, sigma: np.ndarray, gap_of: np.ndarray, c: np.ndarray,
                 corr: np.ndarray) -> tuple[GaussianConditional, GaussianConditional]:
    """The GARCH-CCC law of a window given its observations, and given its known totals as well."""
    z = np.nan_to_num(z)
    none = np.full(gap_of.shape, -1)
    return (GaussianConditional.of(z, observed, sigma, none, c, corr),
            GaussianConditional.of(z, observed, sigma, gap_of, c, corr))


def random_targets(rng: np.random.Generator, shape: tuple[int, int], max_gap: int) -> np.ndarray:
    """Entries ``(W, A)`` to hide in one training window: one asset's stretch (45%), every asset's stretch (20%),
    two or three stretches (20%) or scattered days (15%); stretch lengths log-uniform in 1 .. ``max_gap``."""
    W, A = shape
    out = np.zeros(shape, dtype=bool)
    u = rng.random()
    if u >= 0.85:
        return rng.random(shape) < rng.uniform(0.05, 0.3)
    for _ in range(1 if u < 0.65 else int(rng.integers(2, 4))):
        L = int(np.clip(np.exp(rng.uniform(0, np.log(max_gap + 1))), 1, min(max_gap, W)))
        s = int(rng.integers(0, W - L + 1))
        cols = slice(None) if 0.45 <= u < 0.65 else int(rng.integers(A))
        out[s:s + L, cols] = True
    return out


MIN_STD = 1e-3  # entries the observations and totals pin down to within this are not the model's to draw


class MaskedWindows(Dataset):
    """Training windows with random hidden entries; sample ``i`` is a function of ``(seed, i)`` only.

    ``g``, ``z``, ``sigma``: ``(T, A)`` Gaussianised and standardised shocks and volatilities; ``starts``: the first
    rows windows may start at; ``corr`` ``(A, A)``: the training correlation of ``z``. With ``totals`` (price data),
    a fully observed hidden stretch gets its total as an input four times in five (a gap between observed prices),
    else none (returns data, a gap at the data's end). The target is each hidden shock standardised by its GARCH-CCC
    conditional mean and std given the observations: zero-initialised, the network draws that Gaussian model's
    marginals (the totals are met afterwards by :func:`.gaps.project_totals`, exactly so for Gaussian draws), and
    it learns what the Gaussian misses (tails, the window's own correlation and volatility, how totals move shocks).
    """

    def __init__(self, g: np.ndarray, z: np.ndarray, sigma: np.ndarray, corr: np.ndarray, starts: np.ndarray,
                 window: int, length: int, seed: int, totals: bool, max_gap: int) -> None:
        if len(starts) == 0:
            raise ValueError(f"no {window}-day window fits in the period")
        self.g, self.z, self.sigma, self.corr, self.starts = g, z, sigma, corr, np.asarray(starts)
        self.W, self.length, self.seed, self.totals, self.max_gap = window, length, seed, totals, max_gap

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = numpy_rng(self.seed, "window", int(i))
        t0 = int(self.starts[rng.integers(len(self.starts))])
        rows = slice(t0, t0 + self.W)
        g, z, sigma = self.g[rows], self.z[rows], self.sigma[rows]
        ok = np.isfinite(g)
        targets = random_targets(rng, g.shape, self.max_gap)
        if not (targets & ok).any():  # nothing left to learn from: hide one observed entry instead
            targets[tuple(np.argwhere(ok)[rng.integers(ok.sum())])] = True
        gap_of = np.full(g.shape, -1)
        c = []
        if self.totals:
            gaps = find_gaps(np.where(targets, np.nan, 0.0))
            for k in range(len(gaps.lo)):
                sel = gaps.gap_id == k
                if ok[sel].all() and rng.random() < 0.8:
                    gap_of[sel] = len(c)
                    c.append(float(np.sum(sigma[sel] * z[sel])))
        observed = ok & ~targets
        given_obs, given_all = conditionals(z, observed, sigma, gap_of, np.asarray(c), self.corr)
        learn = targets & ok & (given_obs.std > MIN_STD)
        x = np.where(learn, (np.nan_to_num(z) - given_obs.mean) / np.maximum(given_obs.std, MIN_STD), 0.0)
        return {"x": torch.from_numpy(x.T.astype(np.float32)),
                "cond": torch.from_numpy(model_inputs(g, observed, targets, gap_of, given_obs, given_all)),
                "mask": torch.from_numpy(learn.T.copy())}


# --- imputing ---------------------------------------------------------------------------------------------------

def plan_windows(table: Table, W: int) -> list[tuple[int, int, int]]:
    """``(lo, hi, t0)`` per stretch of missing rows: a W-day window starting at ``t0`` centred on it."""
    T = len(table.r)
    if T < W:
        raise ValueError(f"the data has {T} returns; the run's window needs {W}")
    jobs = []
    for lo, hi in stretches(table.gaps.missing):
        if hi - lo + 1 > W // 2:
            raise ValueError(f"{table.index[lo].date()}..{table.index[hi].date()}: {hi - lo + 1} missing days in a "
                             f"row; the run's {W}-day window fills at most {W // 2}")
        jobs.append((lo, hi, int(np.clip((lo + hi + 1) // 2 - W // 2, 0, T - W))))
    return jobs


def run_parts(run: TrainedRun) -> tuple[GarchT, np.ndarray, int]:
    s = {k: v.numpy() for k, v in run.state.items()}
    return GarchT.from_state(s), s["chol"], int(run.config["data"]["window"])


def _window(table: Table, t0: int, W: int, corr: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, GaussianConditional, GaussianConditional]:
    """(missing entries, gap numbers, and :func:`conditionals`) of the W-day window from row ``t0``."""
    rows = slice(t0, t0 + W)
    miss, gap_of = table.gaps.missing[rows], table.window_gaps(t0, W)
    return (miss, gap_of, *conditionals(table.z[rows], ~miss, table.sigma[rows], gap_of, table.c, corr))


def draw_residuals(run: TrainedRun, conds: Sequence[np.ndarray], seeds: Sequence[int],
                   sampling: dict[str, Any] | SamplingSpec | None = None, progress: bool = False) -> np.ndarray:
    """The model's standardised residuals ``(jobs, samples, W, A)`` for window conditions ``conds`` (each
    ``(channels, W)``), ``len(seeds) / len(conds)`` samples each, seeds in (job, sample) order; all jobs in large
    batches. Clipped at +-8: a rare far-out draw of the sampler would otherwise become an absurd return."""
    A, W = len(run.metadata["assets"]), conds[0].shape[-1]
    samples = len(seeds) // len(conds)
    cond = torch.from_numpy(np.stack(conds)).repeat_interleave(samples, 0)
    x = run.sample((A, W), seeds, cond=cond, sampling=sampling, progress=progress, desc="impute")
    x = np.clip(run.normalizer.denormalize(x).cpu().numpy().astype(np.float64), -8, 8)
    return x.reshape(len(conds), samples, A, W).transpose(0, 1, 3, 2)


def impute(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame, *, samples: int = 100,
           seed: int = 0, sampling: dict[str, Any] | None = None, progress: bool = False) -> xr.Dataset:
    """``samples`` imputations of every missing stretch of ``data`` (prices or returns, as the run was trained):
    a Dataset with ``log_return`` (and ``price``) ``(sample, time, asset)``, observed entries as given."""
    run = load_trained(run, task="impute")
    garch, chol, W = run_parts(run)
    table = Table.read(data, garch, run.metadata.get("kind", "prices"), run.metadata["assets"])
    jobs = plan_windows(table, W)
    A = len(table.assets)
    spec = run.sampling_spec(sampling)
    if not jobs:
        return to_dataset(table, [], np.zeros((0, samples, W, A)), garch, "sciffusion", seed, spec)
    g = garch.to_normal(table.z)
    conds, windows = [], []
    for _, _, t0 in jobs:
        miss, gap_of, given_obs, given_all = _window(table, t0, W, chol @ chol.T)
        windows.append((gap_of, given_obs))
        conds.append(model_inputs(g[t0:t0 + W], ~miss, miss, gap_of, given_obs, given_all))
    x = draw_residuals(run, conds, path_seeds(seed, day_number(table.index[[j[0] for j in jobs]]), samples),
                       spec, progress=progress)
    z = np.stack([project_totals(gauss.mean + gauss.std * xj, table.sigma[t0:t0 + W], gap_of, table.c,
                                 var=gauss.std**2) for xj, (_, _, t0), (gap_of, gauss) in zip(x, jobs, windows)])
    return to_dataset(table, jobs, z, garch, "sciffusion", seed, spec)


def impute_baseline(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame,
                    method: str = "ccc", *, samples: int = 100, seed: int = 0) -> xr.Dataset:
    """A baseline imputation in the same layout as :func:`impute`, with the run's GARCH and window:

    * ``linear``: log prices interpolated linearly across each gap (the same return every day; the GARCH drift
      where the total is unknown); all samples equal.
    * ``bridge``: Gaussian shocks per asset given the gap's total (a Brownian bridge with GARCH volatilities).
    * ``ccc``: Gaussian shocks given the total and the other assets' same-day shocks, through the training
      correlation (the exact conditional law of a constant-conditional-correlation GARCH with Gaussian shocks).
    """
    if method not in BASELINES:
        raise ValueError(f"method must be one of {BASELINES} or 'sciffusion'; got {method!r}")
    run = load_trained(run, task="impute")
    garch, chol, W = run_parts(run)
    table = Table.read(data, garch, run.metadata.get("kind", "prices"), run.metadata["assets"])
    jobs = plan_windows(table, W)
    A = len(table.assets)
    corr = chol @ chol.T if method == "ccc" else np.eye(A)
    out = np.zeros((len(jobs), samples, W, A))
    for j, (lo, _, t0) in enumerate(jobs):
        if method == "linear":
            # the same return r = total / n every day of a gap (the drift where the total is unknown)
            miss, gap_of = table.gaps.missing[t0:t0 + W], table.window_gaps(t0, W)
            k_of = np.maximum(gap_of, 0)
            n = (table.gaps.hi - table.gaps.lo + 1)[k_of]
            r_eq = np.where(gap_of >= 0, (table.c[k_of] + n * garch.mu) / n, garch.mu)
            out[j] = np.where(miss, (r_eq - garch.mu) / table.sigma[t0:t0 + W], 0.0)
            continue
        rng = numpy_rng(seed, "impute baseline", int(day_number(table.index[lo])[0]))
        out[j] = _window(table, t0, W, corr)[3].sample(samples, rng)
    return to_dataset(table, jobs, out, garch, method, seed)


def to_dataset(table: Table, jobs: list[tuple[int, int, int]], z: np.ndarray, garch: GarchT, method: str,
               seed: int, spec: SamplingSpec | None = None) -> xr.Dataset:
    """Samples of each job's window shocks ``z`` ``(jobs, S, W, A)`` written into the table: ``log_return`` and, for
    prices, ``price`` ``(sample, time, asset)`` on the input's days; ``input_missing`` marks the input's gaps."""
    S, A = z.shape[1], len(table.assets)
    r = np.repeat(table.r[None], S, 0)
    for zj, (lo, hi, t0) in zip(z, jobs):
        miss = table.gaps.missing[lo:hi + 1]
        block = (garch.mu + table.sigma[lo:hi + 1] * zj[:, lo - t0:hi - t0 + 1]) / PCT
        r[:, lo:hi + 1][:, miss] = block[:, miss]
    data_vars: dict[str, Any] = {}
    if table.prices is not None:
        p = table.prices
        logp = np.concatenate([np.zeros((S, 1, A)), np.cumsum(r, axis=1)], axis=1)  # relative to day 0
        first = np.argmax(np.isfinite(p), axis=0)  # the first observed price anchors each asset's path
        offset = np.log(p[first, np.arange(A)]) - logp[:, first, np.arange(A)]
        price = np.where(np.isfinite(p)[None], p[None], np.exp(logp + offset[:, None, :]))
        r = np.concatenate([np.full((S, 1, A), np.nan), r], axis=1)
        data_vars["price"] = (("sample", "time", "asset"), price.astype(np.float64),
                              {"long_name": "price, observed or imputed", "units": "as input"})
        missing_in = ~np.isfinite(p)
    else:
        missing_in = ~np.isfinite(table.r)
    data_vars["log_return"] = (("sample", "time", "asset"), r.astype(np.float32),
                               {"long_name": "daily log return, observed or imputed", "units": "1"})
    data_vars["input_missing"] = (("time", "asset"), missing_in.astype(np.int8),
                                  {"long_name": "1 where the input had no value"})
    ds = xr.Dataset(data_vars, coords={"sample": np.arange(S), "time": table.days.values, "asset": table.assets})
    ds.attrs.update(sciffusion_task="impute", method=method, **provenance(seed, spec), kind=table.kind,
                    history=f"missing stretches imputed by {method}")
    return ds


# --- scoring -----------------------------------------------------------------------------------------------------
