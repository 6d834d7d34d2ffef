"""Voxel-level scores: detection (AUROC, AUPRC, Dice, best Dice, threshold at a false-positive rate) and
reconstruction (PSNR, SSIM). Each matches its reference (sklearn, scikit-image) in the tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...metrics import auprc, auroc, flat_scores, roc_points  # noqa: F401  (shared with finance; re-exported)


def dice(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``2 |P & T| / (|P| + |T|)`` (1 when both are empty)."""
    p, t = flat_scores(pred, truth, mask)
    p = p > 0.5
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p & t).sum() / denom)


def best_dice(score: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """The highest Dice over all thresholds ``score >= thr``, and that threshold (an oracle's figure)."""
    s, t = flat_scores(score, truth, mask)
    tp, fp, thr = roc_points(s, t)
    d = 2 * tp / (tp + fp + t.sum())
    i = int(np.argmax(d))
    return float(d[i]), float(thr[i])


def threshold_at_fpr(healthy_scores: np.ndarray, fpr: float) -> float:
    """The score above which a fraction ``fpr`` of healthy voxels lie (calibration on healthy data)."""
    if not 0 < fpr < 1:
        raise ValueError(f"the false-positive rate must be in (0, 1); got {fpr}")
    return float(np.quantile(np.asarray(healthy_scores, np.float64).ravel(), 1.0 - fpr))


def detection_scores(score: np.ndarray, truth: np.ndarray, mask: np.ndarray, threshold: float | None = None
                     ) -> dict[str, float]:
    """AUROC, AUPRC, best Dice and (given a calibrated threshold) Dice and false-positive rate at it."""
    out = {"auroc": auroc(score, truth, mask), "auprc": auprc(score, truth, mask)}
    out["best_dice"], out["best_threshold"] = best_dice(score, truth, mask)
    if threshold is not None:
        pred = score > threshold
        out["dice"] = dice(pred, truth, mask)
        healthy = mask & ~np.asarray(truth, bool)
        out["fpr"] = float(pred[healthy].mean())
        out["threshold"] = float(threshold)
    return out


def psnr(x: np.ndarray, truth: np.ndarray, data_range: float = 1.0, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(range^2 / MSE)`` in dB, over ``mask`` voxels."""
    a, b = flat_scores(x, truth, mask, np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(x: np.ndarray, truth: np.ndarray, data_range: float = 1.0, sigma: float = 1.5,
         mask: np.ndarray | None = None) -> float:
    """Structural similarity with a Gaussian window (Wang et al. 2004; K1 0.01, K2 0.03, population
    covariances): the mean SSIM map away from the border (scikit-image's convention), or over ``mask``."""
    x, y = np.asarray(x, np.float64), np.asarray(truth, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    f = lambda a: ndimage.gaussian_filter(a, sigma, truncate=3.5, mode="reflect")  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    if mask is not None:
        return float(s[mask].mean())
    pad = (2 * int(3.5 * sigma + 0.5) + 1 - 1) // 2
    return float(s[tuple(slice(pad, n - pad) for n in s.shape)].mean())
