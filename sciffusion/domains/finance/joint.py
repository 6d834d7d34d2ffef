"""Scores of scenario sets that see the dependence between assets, per origin, on one kernel for every caller
(the risk report, model selection in training).

Per-asset CRPS cannot tell a model that gets co-movement right from one that does not; the energy score of the
joint vector is weakly sensitive to it; the variogram score (p = 0.5) and the scores of a portfolio see it. Every
function takes scenario log returns ``lr`` ``(O, H, P, A)`` (origin, horizon day, path, asset) and the realised
returns ``y`` ``(O, H, A)`` (NaN where unknown) and returns one value per origin, ``(O,)``, so Diebold-Mariano
tests can compare methods origin by origin.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...metrics import crps_ensemble_np, energy_score, variogram_score


def portfolio_returns(lr: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """Simple return of a buy-and-hold portfolio over the summed log returns ``lr`` (assets on ``axis``):
    ``sum_a w_a (exp(lr_a) - 1)`` with ``weights`` summing to 1. An asset with a missing return makes it NaN."""
    w = np.asarray(weights, dtype=np.float64)
    shape = [1] * np.ndim(lr)
    shape[axis] = -1
    return (np.expm1(lr) * w.reshape(shape)).sum(axis=axis)


def check_weights(weights: np.ndarray | None, assets: int) -> np.ndarray:
    """Portfolio weights ``(A,)``: equal weights by default; given ones must be finite and sum to 1 (+-1e-6)."""
    if weights is None:
        return np.full(assets, 1.0 / assets)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (assets,) or not np.isfinite(w).all():
        raise ValueError(f"portfolio weights must be {assets} finite numbers, one per asset; got shape {w.shape}")
    if abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"portfolio weights must sum to 1; they sum to {w.sum():.6g}")
    return w


def read_weights(source: str | os.PathLike | dict[str, float] | None, assets: Sequence[str]) -> np.ndarray:
    """Portfolio weights from a CSV (``asset,weight`` rows, a header optional) or a JSON ``{asset: weight}`` file,
    or a dict; every asset of the scenarios must have one and they must sum to 1. None: equal weights."""
    if source is None:
        return check_weights(None, len(assets))
    if isinstance(source, dict):
        given = {str(k): float(v) for k, v in source.items()}
    else:
        path = pathlib.Path(source)
        if not path.exists():
            raise FileNotFoundError(f"weights file {path} does not exist")
        if path.suffix.lower() == ".json":
            given = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        else:
            table = pd.read_csv(path, header=None, names=["asset", "weight"], comment="#", skipinitialspace=True)
            if len(table) and not _is_number(table["weight"].iloc[0]):
                table = table.iloc[1:]  # a header row
            try:
                given = {str(a).strip(): float(w) for a, w in zip(table["asset"], table["weight"])}
            except ValueError as e:
                raise ValueError(f"{path}: a weight is not a number ({e})") from None
    missing, extra = [a for a in assets if a not in given], [a for a in given if a not in assets]
    if missing or extra:
        raise ValueError(f"portfolio weights must name every asset of the scenarios exactly: "
                         f"{'missing ' + ', '.join(missing[:5]) if missing else ''}"
                         f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra[:5]) if extra else ''}")
    return check_weights(np.array([given[a] for a in assets]), len(assets))


def _is_number(v: object) -> bool:
    try:
        float(str(v))
    except ValueError:
        return False
    return True


def co_movement(x: np.ndarray, levels: np.ndarray, counts: Sequence[int]) -> dict[str, float]:
    """Lower-tail co-movement of daily returns ``x`` ``(N, A)``: the share of days on which at least k assets fall
    below their own ``levels`` ``(A,)`` (e.g. each asset's 5% quantile), for each k in ``counts``."""
    below = (x < levels).sum(-1)
    return {str(k): float((below >= k).mean()) for k in counts}


def crps_or_nan(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fair CRPS of ensembles ``x`` ``(..., P)`` at observations ``t`` ``(...)``, NaN where ``t`` is."""
    out = np.full(t.shape, np.nan)
    ok = np.isfinite(t)
    out[ok] = crps_ensemble_np(x[ok], t[ok])
    return out


def _mean_known(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values (NaN where there are none)."""
    n = np.isfinite(x).sum(-1)
    return np.where(n > 0, np.nansum(x, -1) / np.maximum(n, 1), np.nan)


def joint_scores(lr: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-origin scores ``(O,)`` of scenarios against the truth (lower is better):

    * ``crps_1d`` / ``crps_hd``: fair CRPS of each asset's next-day / H-day log return, averaged over assets;
    * ``energy_1d`` / ``energy_hd``: fair energy score of the joint next-day / H-day log-return vector;
    * ``variogram_1d`` / ``variogram_hd``: variogram score (p = 0.5) of the same (two assets or more);
    * ``portfolio_crps_1d`` / ``portfolio_crps_hd``: fair CRPS of the portfolio's next-day / H-day simple return
      (``weights``, default equal; two assets or more).
    """
    O, H, P, A = lr.shape
    w = check_weights(weights, A)
    one, hd = lr[:, 0], lr.sum(1)                    # (O, P, A)
    y1, yh = y[:, 0], y.sum(1)                        # (O, A); an H-day sum is NaN unless all H days are known
    out = {"crps_1d": _mean_known(crps_or_nan(np.moveaxis(one, 1, -1), y1)),
           "crps_hd": _mean_known(crps_or_nan(np.moveaxis(hd, 1, -1), yh)),
           "energy_1d": energy_score(one, y1), "energy_hd": energy_score(hd, yh)}
    if A > 1:
        out["variogram_1d"], out["variogram_hd"] = variogram_score(one, y1), variogram_score(hd, yh)
        out["portfolio_crps_1d"] = crps_or_nan(portfolio_returns(one, w), portfolio_returns(y1, w))
        out["portfolio_crps_hd"] = crps_or_nan(portfolio_returns(hd, w), portfolio_returns(yh, w))
    for k in ("energy_hd", "variogram_hd"):
        if k in out:
            out[k] = np.where(np.isfinite(yh).any(-1), out[k], np.nan)  # no H-day truth at all: no score
    return out
