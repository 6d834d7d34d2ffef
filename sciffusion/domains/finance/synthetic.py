"""Synthetic panels with a known law, for tests and benchmarks: a one-factor market whose correlation rises in
stress regimes.

Day ``t`` is calm or stressed (a two-state Markov chain, stress persisting ``stress_days`` on average). Each asset's
return is ``sigma_a,t (beta_s f_t + sqrt(1 - beta_s^2) e_a,t)`` with Student-t factor and idiosyncratic shocks (unit
variance), the factor loading ``beta`` higher under stress (so the pairwise correlation ``beta^2`` jumps from
``calm_corr`` to ``stress_corr``), and a GJR-GARCH(1,1) volatility per asset driven by the asset's own returns. A
constant-correlation GARCH fits one average correlation and so underestimates how many assets fall together in a
crisis: the case a joint model should get right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...diffusion import numpy_rng


def _t(rng: np.random.Generator, nu: float, size: tuple[int, ...]) -> np.ndarray:
    return rng.standard_t(nu, size) / np.sqrt(nu / (nu - 2))


def regime_panel(assets: int = 20, days: int = 3000, *, calm_corr: float = 0.2, stress_corr: float = 0.7,
                 stress_share: float = 0.15, stress_days: float = 40.0, nu: float = 6.0, seed: int = 0,
                 start: str = "2005-01-03", late_start: dict[int, int] | None = None) -> tuple[pd.DataFrame,
                                                                                                pd.Series]:
    """Prices ``(days + 1, assets)`` on business days (columns ``S00``, ``S01``, ...) and the regime of each return
    day (True = stressed). ``late_start``: ``{asset index: first trading row}`` for assets that list late (their
    earlier prices are NaN)."""
    rng = numpy_rng(seed, "regime panel", assets, days)
    p_exit = 1.0 / stress_days
    p_enter = p_exit * stress_share / (1.0 - stress_share)
    stressed = np.empty(days, dtype=bool)
    s = False
    for t in range(days):
        s = rng.random() < (1 - p_exit if s else p_enter)
        stressed[t] = s
    beta = np.where(stressed, np.sqrt(stress_corr), np.sqrt(calm_corr))[:, None]
    z = beta * _t(rng, nu, (days, 1)) + np.sqrt(1 - beta**2) * _t(rng, nu, (days, assets))
    omega, alpha, gamma, b = 0.02, 0.03, 0.08, 0.9     # percent^2 units; persistence 0.97
    vol0 = rng.uniform(0.8, 2.0, assets)               # long-run daily volatility in percent
    s2 = vol0**2
    omega_a = omega * vol0**2
    r = np.empty((days, assets))
    for t in range(days):
        e = np.sqrt(s2) * z[t]
        r[t] = 0.03 + e
        s2 = omega_a + (alpha + gamma * (e < 0)) * e * e + b * s2
    prices = 100.0 * np.exp(np.concatenate([np.zeros((1, assets)), np.cumsum(r / 100.0, axis=0)]))
    index = pd.bdate_range(start, periods=days + 1)
    df = pd.DataFrame(prices, index=index, columns=[f"S{a:02d}" for a in range(assets)])
    for a, row in (late_start or {}).items():
        df.iloc[:row, a] = np.nan
    return df, pd.Series(stressed, index=index[1:], name="stressed")
