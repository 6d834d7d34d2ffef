"""Scores of imputed stretches against the hidden truth (CRPS, coverage, RMSE of each method) and the protocol that
hides stretches of a complete table to make the test."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ...metrics import crps_ensemble_np
from ...training.fit import TrainedRun, load_trained
from .impute import BASELINES, PCT, impute_baseline
from .series import period_slice, read_table


def imputation_scores(ds: xr.Dataset, truth: pd.DataFrame) -> dict[str, float]:
    """Scores of an imputation against the complete table ``truth`` (same kind as the input), over the input's
    missing entries: fair CRPS and MAE of the median (percent) of the imputed daily returns and, for prices, of the
    log prices, plus the coverage of the central 90% interval of the log prices (or returns)."""
    assets = list(ds["asset"].values)
    t = read_table(truth, assets).reindex(pd.DatetimeIndex(ds["time"].values))
    miss = ds["input_missing"].values.astype(bool)
    out: dict[str, float] = {"entries": int(miss.sum())}
    if ds.attrs.get("kind") == "prices":
        y_r = np.log(t).diff().to_numpy()
        lr_miss = miss | np.roll(miss, 1, axis=0)  # a return is imputed if either of its prices was
        lr_miss[0] = False
        sets = {"return": (ds["log_return"].values, y_r, lr_miss),
                "log_price": (np.log(ds["price"].values), np.log(t.to_numpy()), miss)}
    else:
        sets = {"return": (ds["log_return"].values, t.to_numpy(), miss)}
    for name, (x, y, m) in sets.items():
        m = m & np.isfinite(y)
        xs, ys = PCT * x[:, m].T, PCT * y[m]  # (entries, S)
        crps = crps_ensemble_np(xs, ys, fair=xs.shape[1] > 1)
        out[f"crps_{name}_pct"] = float(crps.mean())
        out[f"mae_{name}_pct"] = float(np.abs(np.median(xs, axis=1) - ys).mean())
        lo, hi = np.quantile(xs, [0.05, 0.95], axis=1)
        out[f"coverage90_{name}"] = float(((ys >= lo) & (ys <= hi)).mean())
    return out


def imputation_report(ds: xr.Dataset, truth: str | os.PathLike | pd.DataFrame, run: TrainedRun | str | os.PathLike,
                      *, seed: int = 0) -> dict[str, Any]:
    """Scores of ``ds`` and of every baseline run on the same gaps (the truth with ``ds``'s missing cells blanked)."""
    run = load_trained(run, task="impute")
    full = read_table(truth, list(ds["asset"].values)).reindex(pd.DatetimeIndex(ds["time"].values))
    masked = full.mask(ds["input_missing"].to_pandas().astype(bool).to_numpy())
    S = ds.sizes["sample"]
    scores = {ds.attrs.get("method", "sciffusion"): imputation_scores(ds, full)}
    for method in BASELINES:
        if method != ds.attrs.get("method"):
            b = impute_baseline(run, masked, method, samples=max(S, 2), seed=seed)
            scores[method] = imputation_scores(b, full)
    return {"method": ds.attrs.get("method", "sciffusion"), "samples": int(S), "scores": scores}


def format_imputation(report: dict[str, Any]) -> str:
    s = report["scores"]
    keys = [k for k in next(iter(s.values())) if k != "entries"]
    lines = [f"imputation of {next(iter(s.values()))['entries']} missing entries, {report['samples']} samples",
             f"{'method':<12}" + "".join(f"{k:>22}" for k in keys)]
    lines += [f"{m:<12}" + "".join(f"{v[k]:>22.4f}" for k in keys) for m, v in s.items()]
    return "\n".join(lines)


def hide_stretches(table: pd.DataFrame, period: str, *, n: int, max_len: int = 10, joint: float = 0.25,
                   spacing: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The evaluation protocol: ``table`` with ``n`` stretches of 1 .. ``max_len`` days blanked in ``period`` (one
    asset, or with probability ``joint`` all assets), ``spacing`` days apart at least (default ``max_len + 5``)."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(np.isin(table.index, table.loc[period_slice(period)].index))
    if len(rows) == 0:
        raise ValueError(f"no day of the table falls in {period!r}")
    spacing = spacing or max_len + 5
    starts = np.sort(rng.choice(np.arange(rows[0], rows[-1] - max_len, spacing), size=n, replace=False))
    out = table.copy()
    for s in starts:
        L = int(rng.integers(1, max_len + 1))
        cols = list(range(table.shape[1])) if rng.random() < joint else [int(rng.integers(table.shape[1]))]
        out.iloc[s:s + L, cols] = np.nan
    return out
