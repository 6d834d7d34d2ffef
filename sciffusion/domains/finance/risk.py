"""Risk backtests and stylized facts of returns, in numpy (each checked against scipy/statsmodels/arch in the tests).

Conventions: returns are log returns; a VaR at level ``p`` (0.01 for "VaR99") is the ``p``-quantile of the
return (a negative number for a loss); an exceedance is a day whose return falls below it. ES at ``p`` is the mean
return below the VaR (also negative).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * np.log(y)


def kupiec(exceed: np.ndarray, p: float) -> dict[str, float]:
    """Kupiec's proportion-of-failures test: ``LR = -2 log[L(p) / L(x/n)]`` ~ chi2(1) for ``n`` days with ``x``
    exceedances. Returns ``n``, ``exceedances``, ``rate``, ``lr`` and ``pvalue`` (reject at 5% when < 0.05)."""
    e = np.asarray(exceed, dtype=bool)
    n, x = e.size, int(e.sum())
    if n == 0:
        raise ValueError("no days to backtest")
    phat = x / n
    lr = -2.0 * (_xlogy(n - x, 1 - p) + _xlogy(x, p) - _xlogy(n - x, 1 - phat) - _xlogy(x, phat))
    return {"n": n, "exceedances": x, "rate": phat, "lr": lr, "pvalue": float(stats.chi2.sf(lr, 1))}


def christoffersen(exceed: np.ndarray, p: float) -> dict[str, float]:
    """Christoffersen's independence test (a first-order Markov chain of exceedances against independence,
    chi2(1)) and the conditional-coverage test (Kupiec + independence, chi2(2))."""
    e = np.asarray(exceed, dtype=int)
    prev, cur = e[:-1], e[1:]
    n00, n01 = int(((prev == 0) & (cur == 0)).sum()), int(((prev == 0) & (cur == 1)).sum())
    n10, n11 = int(((prev == 1) & (cur == 0)).sum()), int(((prev == 1) & (cur == 1)).sum())
    p01 = n01 / max(n00 + n01, 1)
    p11 = n11 / max(n10 + n11, 1)
    p1 = (n01 + n11) / max(n00 + n01 + n10 + n11, 1)
    lr_ind = -2.0 * (_xlogy(n00 + n10, 1 - p1) + _xlogy(n01 + n11, p1)
                     - _xlogy(n00, 1 - p01) - _xlogy(n01, p01) - _xlogy(n10, 1 - p11) - _xlogy(n11, p11))
    lr_ind = max(lr_ind, 0.0)
    lr_cc = kupiec(e, p)["lr"] + lr_ind
    return {"lr_ind": lr_ind, "pvalue_ind": float(stats.chi2.sf(lr_ind, 1)), "lr_cc": lr_cc,
            "pvalue_cc": float(stats.chi2.sf(lr_cc, 2))}


def pinball(q: np.ndarray, y: np.ndarray, level: float) -> float:
    """Mean quantile (pinball) loss of predicted ``level``-quantiles ``q`` for outcomes ``y``."""
    d = np.asarray(y) - np.asarray(q)
    return float(np.mean(np.maximum(level * d, (level - 1) * d)))


def var_es(samples: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """VaR (the ``p``-quantile) and ES (mean of the samples at or below it) along the last axis."""
    s = np.sort(samples, axis=-1)
    var = np.quantile(s, p, axis=-1)
    k = max(int(np.ceil(p * s.shape[-1])), 1)
    return var, s[..., :k].mean(-1)


def es_z2(y: np.ndarray, var: np.ndarray, es: np.ndarray, p: float) -> float:
    """Acerbi and Szekely's (2014) Z2 for ES: ``sum(y I) / (T p |ES|) + 1`` with ``I`` the exceedances (returns
    convention: ``y`` and ``ES`` negative on losses). 0 when ES is right, negative when risk is underestimated."""
    y, var, es = (np.asarray(a, dtype=np.float64) for a in (y, var, es))
    hit = y < var
    return float(np.sum(y * hit / np.abs(es)) / (y.size * p) + 1.0)


def backtest(y: np.ndarray, samples: np.ndarray, p: float) -> dict[str, float]:
    """VaR and ES backtests at level ``p`` of samples ``(T, paths)`` against outcomes ``(T,)`` (one day each)."""
    var, es = var_es(samples, p)
    hit = y < var
    return {**kupiec(hit, p), **christoffersen(hit, p), "es_z2": es_z2(y, var, es, p),
            "pinball": pinball(var, y, p)}


# --- stylized facts --------------------------------------------------------------------------------------------

def acf(x: np.ndarray, lags: Sequence[int] | int) -> np.ndarray:
    """Sample autocorrelation at ``lags`` (statsmodels' ``acf`` with ``adjusted=False``: the full-sample mean and
    the lag-0 sum as denominator)."""
    lags = np.arange(1, lags + 1) if isinstance(lags, int) else np.asarray(lags)
    d = np.asarray(x, dtype=np.float64) - np.mean(x)
    den = np.dot(d, d)
    return np.array([np.dot(d[k:], d[:-k]) / den for k in lags])


def hill(x: np.ndarray, tail: float = 0.05) -> float:
    """Hill's tail index of ``|x|`` from its largest ``tail`` fraction: ``1 / mean(log(x_(i) / x_(k+1)))``
    (about 3 for daily returns; a Gaussian gives large values that grow with the sample)."""
    a = np.sort(np.abs(np.asarray(x, dtype=np.float64)))[::-1]
    k = max(int(tail * a.size), 2)
    return float(1.0 / np.mean(np.log(a[:k] / a[k])))


def leverage(x: np.ndarray, lags: Sequence[int] | int = 10) -> np.ndarray:
    """``corr(r_t, r_{t+k}^2)`` for ``k`` in ``lags``: negative for equities (falls raise later volatility)."""
    lags = np.arange(1, lags + 1) if isinstance(lags, int) else np.asarray(lags)
    x = np.asarray(x, dtype=np.float64)
    return np.array([np.corrcoef(x[:-k], x[k:] ** 2)[0, 1] for k in lags])


def aggregated_kurtosis(x: np.ndarray, scales: Sequence[int] = (1, 5, 20)) -> dict[int, float]:
    """Excess kurtosis of non-overlapping ``s``-day sums: falls towards 0 with ``s`` (aggregational Gaussianity)."""
    x = np.asarray(x, dtype=np.float64)
    return {s: float(stats.kurtosis(x[:len(x) // s * s].reshape(-1, s).sum(1))) for s in scales}


def stylized_facts(paths: np.ndarray, acf_lags: int = 50, leverage_lags: int = 10) -> dict[str, object]:
    """Stylized facts of one asset's returns ``(paths, T)`` (a real series is one path): statistics that are
    per-series (ACFs, leverage) are averaged over paths; tail statistics pool every day of every path."""
    paths = np.atleast_2d(np.asarray(paths, dtype=np.float64))
    pooled = paths.ravel()
    acf_abs = np.mean([acf(np.abs(p), acf_lags) for p in paths], axis=0)
    return {
        "kurtosis": float(stats.kurtosis(pooled)),
        "hill": hill(pooled),
        "acf_r_lag1": float(np.mean([acf(p, [1])[0] for p in paths])),
        "acf_abs": acf_abs.tolist(),
        "acf_abs_mean_1_50": float(acf_abs.mean()),
        "leverage": np.mean([leverage(p, leverage_lags) for p in paths], axis=0).tolist(),
        "leverage_mean_1_10": float(np.mean([leverage(p, leverage_lags) for p in paths])),
        "kurtosis_1_5_20": {str(k): float(v) for k, v in
                            zip((1, 5, 20), np.mean([list(aggregated_kurtosis(p).values()) for p in paths], 0))},
    }
