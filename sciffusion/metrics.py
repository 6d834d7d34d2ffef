"""Metrics shared by every domain (domain-specific scores live next to their domain)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm, rankdata
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int = 512, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two equal-size sample sets (each ``(n, ...)``, flattened per sample):
    the mean over ``projections`` random unit directions of the 1-D W1 distance of the projected samples."""
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal sample counts; got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    a, b = a.reshape(len(a), -1).double().cpu(), b.reshape(len(b), -1).double().cpu()
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0)
    return float(((a @ theta).sort(0).values - (b @ theta).sort(0).values).abs().mean())


def crps_ensemble_np(x: np.ndarray, y: np.ndarray, fair: bool = True) -> np.ndarray:
    """CRPS of ensembles ``x`` (members on the last axis, ``(..., M)``) against observations ``y`` (``(...)``).

    ``fair=True``: the unbiased finite-ensemble estimator ``E|X - y| - E|X - X'| / 2`` with the second mean over the
    ``M (M - 1)`` distinct pairs (Ferro 2014; what GenCast and WeatherBench 2 report); ``fair=False``: the CRPS of the
    empirical distribution (properscoring's). O(M log M) per point via the sorted members.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    M = x.shape[-1]
    if fair and M < 2:
        raise ValueError("the fair CRPS needs at least 2 members")
    skill = np.abs(x - y[..., None]).mean(-1)
    xs = np.sort(x, axis=-1)
    i = np.arange(1, M + 1)
    pair_sum = 2.0 * ((2 * i - M - 1) * xs).sum(-1)  # sum over all ordered pairs of |x_i - x_j|
    spread = pair_sum / (2.0 * M * (M - 1)) if fair else pair_sum / (2.0 * M * M)
    return skill - spread


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int = 0) -> dict[str, float]:
    """Diebold-Mariano test of equal expected loss for two forecasts of the same targets (e.g. per-origin CRPS).

    ``d = loss_a - loss_b``; its mean over ``n`` forecasts divided by a Newey-West (Bartlett kernel) standard error
    with ``lag`` autocovariances (``H - 1`` for overlapping H-day forecasts from daily origins, 0 for one step
    ahead) is asymptotically N(0, 1). Returns ``n``, ``mean_diff`` (negative: ``a`` is better), ``stat`` and the
    two-sided ``pvalue``. Pairs with a NaN loss are dropped."""
    d = np.asarray(loss_a, np.float64) - np.asarray(loss_b, np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n < 2:
        raise ValueError(f"the Diebold-Mariano test needs at least 2 paired losses; got {n}")
    if not 0 <= lag < n:
        raise ValueError(f"lag must be in [0, {n - 1}]; got {lag}")
    e = d - d.mean()
    var = e @ e / n
    for k in range(1, lag + 1):
        var += 2.0 * (1.0 - k / (lag + 1)) * (e[k:] @ e[:-k]) / n
    if not var > 0:
        raise ValueError("the loss differences are constant: the Diebold-Mariano statistic is undefined")
    stat = float(d.mean() / np.sqrt(var / n))
    return {"n": n, "mean_diff": float(d.mean()), "stat": stat, "pvalue": float(2.0 * norm.sf(abs(stat)))}


def newey_west_lag(n: int) -> int:
    """The usual automatic Newey-West lag for ``n`` observations, ``floor(4 (n / 100)^(2/9))``."""
    return int(4 * (n / 100.0) ** (2.0 / 9.0))


def _flat(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None, dtype: type = bool
          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``mask`` entries (all if None) of a score map and of the truth (labels, a lesion mask, or an image)."""
    score, truth = np.asarray(score, np.float64), np.asarray(truth, dtype)
    if score.shape != truth.shape:
        raise ValueError(f"score shape {score.shape} does not match the truth {truth.shape}")
    if mask is not None:
        return score[mask], truth[mask]
    return score.ravel(), truth.ravel()


def auroc(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half), over the ``mask`` entries."""
    s, t = _flat(score, truth, mask)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both positive and negative entries")
    r = rankdata(s)
    return float((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _curve(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold (descending), and the thresholds."""
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64), s[last]


def auprc(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (sklearn's definition)."""
    s, t = _flat(score, truth, mask)
    if not t.any():
        raise ValueError("AUPRC needs positive entries")
    tp, fp, _ = _curve(s, t)
    precision, recall = tp / (tp + fp), tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
