"""What a scenario model sees of the past: Gaussianised GARCH shocks and a few summaries of the last C days.

Fed the raw 60-day context, a diffusion model trained on a few thousand windows memorises it and its paths come out
far too narrow. So the history enters as the GARCH state plus summaries that are O(1) and close to stationary:

* per asset: ``log(sigma_{t+1} / sigma_bar)`` (today's GARCH volatility against its training mean);
* per asset and window ``w`` in (5, 20, C): the scaled sum of shocks ``sum g / sqrt(n)`` (drift/momentum; N(0, 1)
  if the GARCH is right) and ``log(mean g^2) / 2`` (volatility the GARCH has not caught yet; 0 if it is right);
* per asset pair: the correlation of the shocks over the last C days.

Every summary skips missing days; a window with no observed day gives 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def windows_for(context: int) -> tuple[int, ...]:
    return tuple(sorted({w for w in (5, 20, context) if w <= context}))


def feature_count(assets: int, context: int) -> int:
    return assets * (1 + 2 * len(windows_for(context))) + assets * (assets - 1) // 2


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
    A = g.shape[1]
    for a in range(A):
        for b in range(a + 1, A):
            both = ok[:, a] & ok[:, b]
            x, y = np.where(both, g[:, a], 0.0), np.where(both, g[:, b], 0.0)
            cs = [np.concatenate([[0.0], np.cumsum(v)]) for v in (both.astype(float), x, y, x * x, y * y, x * y)]
            n, sx, sy, sxx, syy, sxy = (cs_[ends + 1] - cs_[np.maximum(ends + 1 - context, 0)] for cs_ in cs)
            with np.errstate(divide="ignore", invalid="ignore"):
                cov = sxy / n - sx * sy / n**2
                var = (sxx / n - (sx / n) ** 2) * (syy / n - (sy / n) ** 2)
                r = np.where((n > 2) & (var > 0), cov / np.sqrt(np.maximum(var, 1e-300)), 0.0)
            parts.append(r[:, None])
    return np.clip(np.concatenate(parts, axis=1), -6.0, 6.0).astype(np.float32)


def as_channels(f: np.ndarray, horizon: int) -> np.ndarray:
    """Features ``(N, F)`` -> condition ``(N, F + 1, H)``: constant along the horizon, plus the horizon position
    in [0, 1] (the U-Net's convolutions see where in the path they are)."""
    n = len(f)
    pos = np.broadcast_to(np.linspace(0.0, 1.0, horizon, dtype=np.float32), (n, 1, horizon))
    return np.concatenate([np.broadcast_to(f[:, :, None], (*f.shape, horizon)), pos], axis=1).astype(np.float32)
