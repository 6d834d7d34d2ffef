"""What a scenario model sees of the past: Gaussianised GARCH shocks and a few summaries of the last C days.

Fed the raw 60-day context, a diffusion model trained on a few thousand windows memorises it and its paths come out
far too narrow. So the history enters as the GARCH state plus summaries that are O(1) and close to stationary:

* per asset: ``log(sigma_{t+1} / sigma_bar)`` (today's GARCH volatility against its training mean);
* per asset and window ``w`` in (5, 20, C): the scaled sum of shocks ``sum g / sqrt(n)`` (drift/momentum; N(0, 1)
  if the GARCH is right) and ``log(mean g^2) / 2`` (volatility the GARCH has not caught yet; 0 if it is right);
* per asset: the correlation of its shocks with the market shock (the mean shock of the assets observed that day)
  over the last C days, and the average pairwise correlation of the assets over those days (from the variance of
  the market shock: ``(A^2 var(m) - sum var_a) / ((sum sd_a)^2 - sum var_a)``).

The dependence features grow linearly with the number of assets A (A + 1 of them), not with its square: a
500-asset portfolio has 501, where every pairwise correlation would be 124,750. Every summary skips missing days
(an asset that starts trading late has zeros before its first day); a window with no observed day gives 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def windows_for(context: int) -> tuple[int, ...]:
    return tuple(sorted({w for w in (5, 20, context) if w <= context}))


def feature_count(assets: int, context: int) -> int:
    return assets * (1 + 2 * len(windows_for(context))) + (assets + 1 if assets > 1 else 0)


def _window_sum(c: np.ndarray, ends: np.ndarray, w: int) -> np.ndarray:
    """Sum over rows ``end - w + 1 .. end`` from the cumulative sum ``c`` (with a leading zero row)."""
    return c[ends + 1] - c[np.maximum(ends + 1 - w, 0)]


def summaries(g: np.ndarray, log_vol: np.ndarray, ends: Sequence[int] | np.ndarray, context: int) -> np.ndarray:
    """Features ``(N, F)`` float32 at the days ``ends`` (row indices of ``g``, each the last observed day).

    ``g``: Gaussianised shocks ``(T, A)``, NaN where missing; ``log_vol``: ``log(sigma_{t+1} / sigma_bar)`` per row,
    ``(T, A)`` (row ``t`` is the volatility of day ``t + 1``, known at the close of day ``t``).
    """
    ends = np.asarray(ends, dtype=np.int64)
    if len(ends) and (ends.min() < context - 1 or ends.max() >= len(g)):
        raise ValueError(f"origins need {context} days of history inside the data")
    ok = np.isfinite(g)
    g0 = np.where(ok, g, 0.0)
    zero = np.zeros((1, g.shape[1]))
    c1, c2, cn = (np.concatenate([zero, np.cumsum(a, 0)]) for a in (g0, g0 * g0, ok.astype(np.float64)))
    parts = [np.nan_to_num(log_vol[ends])]
    for w in windows_for(context):
        n = _window_sum(cn, ends, w)
        s1, s2 = _window_sum(c1, ends, w), _window_sum(c2, ends, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(np.where(n > 0, s1 / np.sqrt(np.maximum(n, 1)), 0.0))
            parts.append(np.where(n > 0, 0.5 * np.log(np.maximum(s2 / np.maximum(n, 1), 1e-3)), 0.0))
    if g.shape[1] > 1:
        parts += market_dependence(g, ok, ends, context)
    return np.clip(np.concatenate(parts, axis=1), -6.0, 6.0).astype(np.float32)


def as_channels(f: np.ndarray, horizon: int) -> np.ndarray:
    """Features ``(N, F)`` -> condition ``(N, F + 1, H)``: constant along the horizon, plus the horizon position
    in [0, 1] (the U-Net's convolutions see where in the path they are)."""
    n = len(f)
    pos = np.broadcast_to(np.linspace(0.0, 1.0, horizon, dtype=np.float32), (n, 1, horizon))
    return np.concatenate([np.broadcast_to(f[:, :, None], (*f.shape, horizon)), pos], axis=1).astype(np.float32)


def market_dependence(g: np.ndarray, ok: np.ndarray, ends: np.ndarray, context: int) -> list[np.ndarray]:
    """``[corr(g_a, m) (N, A), average pairwise correlation (N, 1)]`` over the ``context`` days up to each end,
    with ``m`` the mean shock of the assets observed each day; O(T A) from running sums."""
    A = g.shape[1]
    n_obs = ok.sum(1)
    m = np.where(n_obs > 0, np.where(ok, g, 0.0).sum(1) / np.maximum(n_obs, 1), 0.0)
    x, mm, w = np.where(ok, g, 0.0), np.where(ok, m[:, None], 0.0), ok.astype(np.float64)
    zero = np.zeros((1, A))
    n, sx, sm, sxx, smm, sxm = (_window_sum(np.concatenate([zero, np.cumsum(v, 0)]), ends, context)
                                for v in (w, x, mm, x * x, mm * mm, x * mm))
    with np.errstate(divide="ignore", invalid="ignore"):
        var_x = sxx / n - (sx / n) ** 2
        var_m = smm / n - (sm / n) ** 2
        cov = sxm / n - sx * sm / n**2
        corr = np.where((n > 2) & (var_x > 0) & (var_m > 0), cov / np.sqrt(np.maximum(var_x * var_m, 1e-300)), 0.0)
        # the market over days with any asset: its variance against the assets' own
        day = (n_obs > 0).astype(np.float64)
        c = [np.concatenate([[0.0], np.cumsum(v)]) for v in (day, m, m * m)]
        nd, s1, s2 = (ci[ends + 1] - ci[np.maximum(ends + 1 - context, 0)] for ci in c)
        vm = s2 / nd - (s1 / nd) ** 2
        va = np.where(n > 2, np.maximum(var_x, 0.0), 0.0)
        sd_sum, v_sum = np.sqrt(va).sum(1), va.sum(1)
        rho = np.where((nd > 2) & (sd_sum**2 - v_sum > 0), (A * A * vm - v_sum) / (sd_sum**2 - v_sum), 0.0)
    return [corr, np.clip(rho, -1.0, 1.0)[:, None]]
