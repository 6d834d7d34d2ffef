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


def _observed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 copies with the dims the observation misses set to 0 in both, and the mask ``(..., D)`` of the rest."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    return np.where(ok[..., None, :], np.nan_to_num(x), 0.0), np.where(ok, y, 0.0), ok


def energy_score(x: np.ndarray, y: np.ndarray, fair: bool = True, chunk: int = 64) -> np.ndarray:
    """Energy score of ensembles ``x`` ``(..., M, D)`` (members, then variables) against ``y`` ``(..., D)``:
    ``E||X - y|| - E||X - X'|| / 2`` (Gneiting & Raftery 2007), the multivariate CRPS. ``fair=True`` takes the
    second mean over the ``M (M - 1)`` distinct pairs (scoringrules' ``estimator="fair"``), ``fair=False`` over all
    ``M^2`` (``"nrg"``). Variables the observation misses (NaN) are left out of that forecast's norms. Returns
    ``(...)``; O(M^2 D) per forecast, in chunks of ``chunk`` forecasts."""
    x, y, _ = _observed(x, y)
    M = x.shape[-2]
    if fair and M < 2:
        raise ValueError("the fair energy score needs at least 2 members")
    lead = x.shape[:-2]
    xf, yf = x.reshape(-1, M, x.shape[-1]), y.reshape(-1, y.shape[-1])
    out = np.empty(len(xf))
    for lo in range(0, len(xf), chunk):
        a, b = xf[lo:lo + chunk], yf[lo:lo + chunk]
        skill = np.linalg.norm(a - b[:, None], axis=-1).mean(-1)
        pair = np.linalg.norm(a[:, :, None] - a[:, None], axis=-1).sum((-1, -2))
        out[lo:lo + chunk] = skill - pair / (2.0 * M * (M - 1 if fair else M))
    return out.reshape(lead)


def variogram_score(x: np.ndarray, y: np.ndarray, p: float = 0.5, weights: np.ndarray | None = None,
                    chunk: int = 16) -> np.ndarray:
    """Variogram score of order ``p`` (Scheuerer & Hamill 2015) of ensembles ``x`` ``(..., M, D)`` against ``y``
    ``(..., D)``: ``sum_ij w_ij (|y_i - y_j|^p - mean_m |x_mi - x_mj|^p)^2`` over all ordered pairs (scoringrules'
    convention; ``weights`` ``(D, D)``, default 1). It sees the dependence between variables that the energy
    score is weakly sensitive to. Pairs with a missing observation are left out. Returns ``(...)``."""
    x, y, ok = _observed(x, y)
    M, D = x.shape[-2:]
    w = np.ones((D, D)) if weights is None else np.asarray(weights, dtype=np.float64)
    lead = x.shape[:-2]
    xf, yf, okf = x.reshape(-1, M, D), y.reshape(-1, D), ok.reshape(-1, D)
    out = np.empty(len(xf))
    for lo in range(0, len(xf), chunk):
        a, b, o = xf[lo:lo + chunk], yf[lo:lo + chunk], okf[lo:lo + chunk]
        vx = (np.abs(a[:, :, :, None] - a[:, :, None, :]) ** p).mean(1)          # (n, D, D)
        vy = np.abs(b[:, :, None] - b[:, None, :]) ** p
        pairs = w * (o[:, :, None] & o[:, None, :])
        out[lo:lo + chunk] = (pairs * (vy - vx) ** 2).sum((-1, -2))
    return out.reshape(lead)


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


def flat_scores(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None, dtype: type = bool
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
    s, t = flat_scores(score, truth, mask)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both positive and negative entries")
    r = rankdata(s)
    return float((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_points(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold (descending), and the thresholds."""
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64), s[last]


def auprc(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (sklearn's definition)."""
    s, t = flat_scores(score, truth, mask)
    if not t.any():
        raise ValueError("AUPRC needs positive entries")
    tp, fp, _ = roc_points(s, t)
    precision, recall = tp / (tp + fp), tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
