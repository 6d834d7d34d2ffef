"""The risk and realism report: forecast skill, VaR/ES backtests and stylized facts, the model against GARCH-t,
GJR-GARCH-t and historical simulation, all computed by the same code on the same origins."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ...metrics import crps_ensemble_np, diebold_mariano
from ...training.fit import TrainedRun, load_trained
from .baselines import GarchBaseline, bootstrap_long, bootstrap_scenarios
from .risk import backtest, pinball, stylized_facts
from .scenarios import read_returns, simulate
from .series import period_slice

LEVELS = (0.01, 0.05, 0.5, 0.95, 0.99)


def truth_paths(r: pd.DataFrame, rows: np.ndarray, horizon: int) -> np.ndarray:
    """Realised returns ``(origin, horizon, asset)`` after each origin row; NaN beyond the data."""
    x = r.to_numpy()
    out = np.full((len(rows), horizon, x.shape[1]), np.nan)
    for i, row in enumerate(rows):
        seg = x[row + 1:row + 1 + horizon]
        out[i, :len(seg)] = seg
    return out


def crps_series(lr: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-origin fair CRPS ``(O, A)`` of the 1-day and of the H-day log return of scenarios ``(O, H, P, A)``
    against the truth ``(O, H, A)``; NaN where the truth is missing."""
    def one(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.full(t.shape, np.nan)
        ok = np.isfinite(t)
        out[ok] = crps_ensemble_np(x.transpose(0, 2, 1)[ok], t[ok])
        return out

    return one(lr[:, 0], y[:, 0]), one(lr.sum(1), y.sum(1))


def skill(lr: np.ndarray, y: np.ndarray, assets: list[str],
          crps: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Scores of scenarios ``(O, H, P, A)`` against the truth ``(O, H, A)`` per asset: fair CRPS of the 1-day and
    H-day log return, pinball losses of the 1-day quantiles, VaR/ES backtests at 95% and 99% (1 day). ``crps``: the
    scenarios' :func:`crps_series`, when already computed."""
    out: dict[str, Any] = {}
    c1, ch = crps if crps is not None else crps_series(lr, y)
    for a, name in enumerate(assets):
        x1, y1 = lr[:, 0, :, a], y[:, 0, a]
        ok1 = np.isfinite(y1)
        q = np.quantile(x1[ok1], LEVELS, axis=-1)
        out[name] = {
            "crps_1d": float(np.nanmean(c1[:, a])),
            "crps_hd": float(np.nanmean(ch[:, a])) if np.isfinite(ch[:, a]).any() else float("nan"),
            "pinball": {str(lv): pinball(q[i], y1[ok1], lv) for i, lv in enumerate(LEVELS)},
            "var95": backtest(y1[ok1], x1[ok1], 0.05),
            "var99": backtest(y1[ok1], x1[ok1], 0.01),
        }
    return out


def risk_report(scen: xr.Dataset, data: str | os.PathLike | pd.DataFrame, run: TrainedRun | str | os.PathLike, *,
                seed: int = 0, long_days: int = 1000, long_paths: int = 16, plots: str | None = None,
                baselines: tuple[str, ...] = ("gjr_t", "garch_t", "bootstrap")) -> dict[str, Any]:
    """Score a scenario set against the realised returns in ``data`` and against the baselines (fitted on the
    run's training period), and compare stylized facts of long simulated paths with the real returns of the
    scenario period. Returns a JSON-able dict (see :func:`format_report`)."""
    run = load_trained(run, task="scenarios")
    assets = [str(a) for a in scen["asset"].values]
    r, _ = read_returns(data, run.metadata.get("kind", "prices"), assets)
    train = r.loc[period_slice("/".join(run.metadata["train_period"]))]
    origins = pd.DatetimeIndex(scen["origin"].values)
    rows = r.index.get_indexer(origins)
    if (rows < 0).any():
        raise ValueError(f"origin {origins[rows < 0][0].date()} of the scenarios is not a day of the data")
    H, P = scen.sizes["horizon"], scen.sizes["path"]
    y = truth_paths(r, rows, H)
    if not np.isfinite(y[:, 0]).any():
        raise ValueError("the data hold no returns after the scenario origins: give data that cover the scenarios")
    sets = {"sciffusion": scen["log_return"].values.astype(np.float64)}
    fitted = {}
    for name in baselines:
        if name in ("gjr_t", "garch_t"):
            fitted[name] = GarchBaseline(train, asymmetric=name == "gjr_t")
            sets[name] = fitted[name].scenarios(r, rows, P, H, seed)
        elif name == "bootstrap":
            sets[name] = bootstrap_scenarios(r, rows, P, H, seed)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from gjr_t, garch_t, bootstrap")
    crps = {k: crps_series(v, y) for k, v in sets.items()}
    report: dict[str, Any] = {"origins": [str(origins[0].date()), str(origins[-1].date()), len(origins)],
                              "paths": P, "horizon": H, "assets": assets,
                              "skill": {k: skill(v, y, assets, crps[k]) for k, v in sets.items()},
                              "versus": versus(crps, H, assets, rows)}
    # Stylized facts on long paths from the state at the first origin, against the real returns of the period.
    hist = r.iloc[:rows[0] + 1]
    real = r.iloc[rows[0] + 1:rows[-1] + 2].dropna().to_numpy()
    long = {"sciffusion": simulate(run, hist, days=long_days, paths=long_paths, seed=seed, kind="returns")}
    for name, b in fitted.items():
        long[name] = b.long_paths(hist, long_days, long_paths, seed)
    if "bootstrap" in sets:
        long["bootstrap"] = bootstrap_long(train, long_days, long_paths, H, seed)
    facts = {"real": _facts(real[None], assets)} | {k: _facts(v, assets) for k, v in long.items()}
    report["stylized_facts"] = facts
    report["long_paths"] = [long_paths, long_days]
    if plots:
        from .plots import risk_plots

        report["plots"] = risk_plots(scen, y, sets, real, long, assets, plots)
    return report


def versus(crps: dict[str, tuple[np.ndarray, np.ndarray]], H: int, assets: list[str], rows: np.ndarray
           ) -> dict[str, Any]:
    """Diebold-Mariano tests of the model's per-origin CRPS against each baseline's (``crps``: each method's
    :func:`crps_series`), per asset: 1 day ahead (no lag) and over the H-day horizon (Newey-West lag for the overlap
    of H-day windows from origins ``rows`` apart)."""
    every = int(np.median(np.diff(rows))) if len(rows) > 1 else 1
    lag_h = min(max(-(-H // max(every, 1)) - 1, 0), max(len(rows) - 2, 0))
    model = crps["sciffusion"]
    out: dict[str, Any] = {}
    for name, base in crps.items():
        if name == "sciffusion":
            continue
        out[name] = {a: {"crps_1d": diebold_mariano(model[0][:, i], base[0][:, i], 0),
                         "crps_hd": diebold_mariano(model[1][:, i], base[1][:, i], lag_h)}
                     for i, a in enumerate(assets)}
    return out


def _facts(paths: np.ndarray, assets: list[str]) -> dict[str, Any]:
    """Per asset facts of ``(paths, T, A)`` and the cross-asset correlation of daily returns."""
    out = {a: stylized_facts(paths[:, :, i]) for i, a in enumerate(assets)}
    if len(assets) > 1:
        c = np.mean([np.corrcoef(p.T) for p in paths], axis=0)
        out["cross_corr"] = {f"{assets[i]}~{assets[j]}": float(c[i, j])
                             for i in range(len(assets)) for j in range(i + 1, len(assets))}
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report as text tables: skill and backtests per asset and method, then stylized facts."""
    o = report["origins"]
    lines = [f"scenarios: {o[2]} origins {o[0]}..{o[1]}, {report['paths']} paths, horizon {report['horizon']}",
             "", f"{'asset':10s} {'method':11s} {'CRPS 1d':>9s} {'CRPS Hd':>9s} {'VaR95 %':>8s} {'p(Kup)':>7s} "
             f"{'VaR99 %':>8s} {'p(Kup)':>7s} {'p(CC)':>6s} {'ES99 Z2':>8s}"]
    for a in report["assets"]:
        for m, s in report["skill"].items():
            v = s[a]
            lines.append(f"{a:10s} {m:11s} {1e2 * v['crps_1d']:9.4f} {1e2 * v['crps_hd']:9.4f} "
                         f"{1e2 * v['var95']['rate']:8.2f} {v['var95']['pvalue']:7.3f} "
                         f"{1e2 * v['var99']['rate']:8.2f} {v['var99']['pvalue']:7.3f} "
                         f"{v['var99']['pvalue_cc']:6.3f} {v['var99']['es_z2']:8.3f}")
    lines += ["(CRPS in percent log return; VaR columns: exceedance rate in %, Kupiec p-value, Christoffersen "
              "conditional-coverage p-value)", ""]
    if report.get("versus"):
        lines += ["sciffusion against each baseline (Diebold-Mariano on per-origin CRPS; difference in % of the "
                  "baseline's CRPS, negative = sciffusion better)",
                  f"{'asset':10s} {'baseline':11s} {'1d diff %':>9s} {'p':>6s} {'Hd diff %':>9s} {'p':>6s}"]
        for m, per in report["versus"].items():
            for a in report["assets"]:
                d1, dh = per[a]["crps_1d"], per[a]["crps_hd"]
                b = report["skill"][m][a]
                lines.append(f"{a:10s} {m:11s} {1e2 * d1['mean_diff'] / b['crps_1d']:9.2f} {d1['pvalue']:6.3f} "
                             f"{1e2 * dh['mean_diff'] / b['crps_hd']:9.2f} {dh['pvalue']:6.3f}")
        lines.append("")
    lines += [f"stylized facts (long paths: {report['long_paths'][0]} x {report['long_paths'][1]} days; real: the "
              "scenario period)",
              f"{'asset':10s} {'series':11s} {'kurt':>6s} {'Hill':>5s} {'acf r1':>7s} {'acf|r| 1-50':>11s} "
              f"{'lever 1-10':>10s} {'kurt 1/5/20 days':>18s}"]
    for a in report["assets"]:
        for m, f in report["stylized_facts"].items():
            v = f[a]
            k = v["kurtosis_1_5_20"]
            lines.append(f"{a:10s} {m:11s} {v['kurtosis']:6.2f} {v['hill']:5.2f} {v['acf_r_lag1']:7.3f} "
                         f"{v['acf_abs_mean_1_50']:11.3f} {v['leverage_mean_1_10']:10.3f} "
                         f"{k['1']:6.2f}/{k['5']:5.2f}/{k['20']:5.2f}")
    cc = {m: f.get("cross_corr") for m, f in report["stylized_facts"].items() if f.get("cross_corr")}
    for m, c in cc.items():
        lines.append(f"cross-asset correlation {m:11s} " + ", ".join(f"{k} {v:.3f}" for k, v in c.items()))
    return "\n".join(lines)
