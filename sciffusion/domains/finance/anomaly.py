"""Anomaly scores of observed days from an imputation run: how well the rest of its window predicts each return.

Each observed (day, asset) entry is hidden once, in one of ``groups`` interleaved sets ((row + asset) mod groups, so
the other assets of the same day stay visible), imputed from the rest of its window by the run's model, and scored
by the CRPS of its true standardised shock under the imputed samples (ImDiffusion's idea, with a proper score in
place of a plain error). A return that breaks with its own history and with the other assets' same-day moves
scores high. Baselines by the same code: ``ccc`` (the same Gaussian conditional the model builds on, closed-form
CRPS) and ``zscore`` (the absolute GARCH-standardised shock, blind to the other assets).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ...metrics import auprc, auroc, crps_ensemble_np
from ...training.fit import TrainedRun, load_trained
from .garch import day_number
from .impute import Table, conditionals, draw_residuals, model_inputs, run_parts
from .scenarios import path_seeds
from .series import period_slice

SCORES = ("sciffusion", "ccc", "zscore")


def crps_gaussian(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of N(mean, std^2) at ``y`` (Gneiting et al. 2005)."""
    w = (y - mean) / std
    return std * (w * (2 * stats.norm.cdf(w) - 1) + 2 * stats.norm.pdf(w) - 1 / np.sqrt(np.pi))


def day_scores(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame,
               period: str | None = None, *, samples: int = 32, groups: int = 4, seed: int = 0,
               sampling: dict[str, Any] | None = None) -> pd.DataFrame:
    """Scores of every observed (day, asset) return in ``period``: a frame indexed by (date, asset) with columns
    ``sciffusion``, ``ccc``, ``zscore`` (higher = more anomalous) and ``shock`` (the standardised shock)."""
    run = load_trained(run, task="impute")
    garch, chol, W = run_parts(run)
    table = Table.read(data, garch, run.metadata.get("kind", "prices"), run.metadata["assets"])
    T, A = table.z.shape
    rows = pd.Series(np.arange(T), index=table.index).loc[period_slice(period)].to_numpy()
    if len(rows) == 0:
        raise ValueError(f"no return of the data falls in {period!r}")
    if T < W:
        raise ValueError(f"the data has {T} returns; the run's window needs {W}")
    if groups < 2:
        raise ValueError(f"groups must be >= 2 (each entry is predicted from the others); got {groups}")
    half = W // 2
    # windows whose central halves tile the period, each scoring rows t0 + W/4 .. t0 + 3W/4 - 1
    centres = np.arange(rows[0], rows[-1] + 1, half)
    g = garch.to_normal(table.z)
    corr = chol @ chol.T
    none = np.full((W, A), -1)
    jobs, conds, gauss = [], [], []
    for c0 in centres:
        t0 = int(np.clip(c0 - W // 4, 0, T - W))
        score_rows = np.arange(c0, min(c0 + half, rows[-1] + 1))
        for j in range(groups):
            hide = np.zeros((W, A), dtype=bool)
            for a in range(A):
                rr = score_rows[(score_rows + a) % groups == j]
                hide[rr - t0, a] = True
            hide &= np.isfinite(table.z[t0:t0 + W])
            if not hide.any():
                continue
            observed = np.isfinite(table.z[t0:t0 + W]) & ~hide
            given_obs, given_all = conditionals(table.z[t0:t0 + W], observed, table.sigma[t0:t0 + W], none,
                                                table.c, corr)
            jobs.append((t0, hide))
            gauss.append(given_obs)
            conds.append(model_inputs(g[t0:t0 + W], observed, ~observed, none, given_obs, given_all))
    keys = [(int(day_number(table.index[t0])[0]), k) for k, (t0, _) in enumerate(jobs)]
    x = draw_residuals(run, conds, path_seeds(seed, keys, samples), sampling)
    out = {k: np.full((T, A), np.nan) for k in SCORES}
    for (t0, hide), xj, gj in zip(jobs, x, gauss):
        y = table.z[t0:t0 + W][hide]
        draws = (gj.mean + gj.std * xj)[:, hide].T  # (entries, samples), in the row-major order of argwhere
        idx = np.argwhere(hide) + [t0, 0]
        out["sciffusion"][idx[:, 0], idx[:, 1]] = crps_ensemble_np(draws, y)
        out["ccc"][idx[:, 0], idx[:, 1]] = crps_gaussian(y, gj.mean[hide], gj.std[hide])
    out["zscore"] = np.abs(table.z)
    frame = pd.DataFrame({k: v[rows].ravel() for k, v in out.items()},
                         index=pd.MultiIndex.from_product([table.index[rows], table.assets], names=["date", "asset"]))
    frame["shock"] = table.z[rows].ravel()
    return frame.dropna(subset=["sciffusion"])


def inject_anomalies(prices: pd.DataFrame, period: str, *, n: int = 40, size: float = 3.0, seed: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluation protocol: ``n`` single-day anomalies in ``period``, each on one asset, half of them a jump
    of ``size`` times the day's typical absolute return added against the sign of the other assets' move (a break
    with the market), half the sign of the day's largest move flipped where it is at least 1.5 typical moves
    (a decoupling from the other assets that a univariate z-score barely sees). Returns (prices with the anomalies
    carried forward, labels ``(date, asset)``
    -> 1)."""
    rng = np.random.default_rng(seed)
    lp = np.log(prices)
    r = lp.diff()
    rows = np.flatnonzero(np.isin(prices.index, prices.loc[period_slice(period)].index))
    rows = rows[rows > 0]
    typical = r.abs().rolling(250, min_periods=20).median().shift(1).to_numpy()
    out, labels = lp.copy(), []
    chosen = rng.choice(rows, size=n, replace=False)
    x = r.to_numpy()
    for i, t in enumerate(chosen):
        ratio = np.abs(x[t]) / typical[t]
        a = int(np.nanargmax(ratio)) if i % 2 else int(rng.integers(prices.shape[1]))
        if i % 2 and ratio[a] >= 1.5:
            delta = -2 * x[t, a]
        else:
            others = np.nanmean(np.delete(x[t], a)) if prices.shape[1] > 1 else x[t, a]
            delta = -np.sign(others or 1.0) * size * typical[t, a]
        out.iloc[t:, a] += delta
        labels.append((prices.index[t], prices.columns[a]))
    lab = pd.Series(1, index=pd.MultiIndex.from_tuples(labels, names=["date", "asset"]), name="anomaly")
    return np.exp(out), lab.to_frame()


def detection_table(scores: pd.DataFrame, labels: pd.DataFrame) -> dict[str, dict[str, float]]:
    """AUROC and AUPRC of each score column against ``labels`` (a frame indexed by (date, asset); listed = 1)."""
    y = scores.index.isin(labels.index)
    if not y.any():
        raise ValueError("no labelled (date, asset) entry is among the scored ones")
    return {m: {"auroc": auroc(scores[m].to_numpy(), y), "auprc": auprc(scores[m].to_numpy(), y)}
            for m in SCORES if m in scores}


def print_detection(scores: pd.DataFrame, labels_csv: str | os.PathLike, index: list[str]) -> None:
    """Print AUROC/AUPRC of each score column against a CSV of known anomalies indexed by ``index`` (its first
    column a date)."""
    labels = pd.read_csv(labels_csv, parse_dates=[index[0]]).set_index(index)
    for m, v in detection_table(scores, labels).items():
        print(f"{m:<12} AUROC {v['auroc']:.3f}  AUPRC {v['auprc']:.3f}")

