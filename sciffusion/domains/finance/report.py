"""The risk and realism report: forecast skill, joint scores, VaR/ES backtests and stylized facts, the model against
GARCH-t, GJR-GARCH-t (Gaussian and t copulas, DCC), filtered and plain historical simulation, all computed by the
same code on the same origins."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ...metrics import diebold_mariano
from ...training.fit import TrainedRun, load_trained
from .baselines import BASELINES, GarchBaseline, bootstrap_long, bootstrap_scenarios
from .joint import co_movement, crps_or_nan, joint_scores, portfolio_returns, read_weights
from .risk import backtest, pinball, stylized_facts
from .scenarios import read_returns, simulate
from .series import period_slice

LEVELS = (0.01, 0.05, 0.5, 0.95, 0.99)
PAIRS_LISTED = 6       # up to this many assets the report lists every pair's correlation
ASSETS_PRINTED = 10    # the text report's per-asset tables show this many assets (the JSON has all)


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
    return (crps_or_nan(np.moveaxis(lr[:, 0], 1, -1), y[:, 0]),
            crps_or_nan(np.moveaxis(lr.sum(1), 1, -1), y.sum(1)))


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
                baselines: tuple[str, ...] = tuple(BASELINES),
                weights: str | os.PathLike | dict[str, float] | None = None) -> dict[str, Any]:
    """Score a scenario set against the realised returns in ``data`` and against the baselines (fitted on the
    run's training period), and compare stylized facts of long simulated paths with the real returns of the
    scenario period. With two assets or more, the joint scores (energy, variogram, portfolio CRPS of the
    ``weights`` portfolio, default equal weights; :func:`~.joint.joint_scores`), portfolio VaR backtests and
    lower-tail co-movement are reported too. Returns a JSON-able dict (see :func:`format_report`)."""
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
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        asymmetric, copula = BASELINES[name]
        if copula in ("t", "dcc") and len(assets) == 1:
            continue  # one asset: a copula changes nothing (the baseline would be gjr_t again)
        if copula == "bootstrap":
            sets[name] = bootstrap_scenarios(r, rows, P, H, seed)
        else:
            same = next((b.garch for k, b in fitted.items() if BASELINES[k][0] == asymmetric), None)
            fitted[name] = GarchBaseline(train, asymmetric=asymmetric, copula=copula, garch=same)
            sets[name] = fitted[name].scenarios(r, rows, P, H, seed)
    crps = {k: crps_series(v, y) for k, v in sets.items()}
    report: dict[str, Any] = {"origins": [str(origins[0].date()), str(origins[-1].date()), len(origins)],
                              "paths": P, "horizon": H, "assets": assets,
                              "skill": {k: skill(v, y, assets, crps[k]) for k, v in sets.items()},
                              "versus": versus(crps, H, assets, rows)}
    if len(assets) > 1:
        report["joint"] = joint_report(sets, y, read_weights(weights, assets), rows, H)
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


def overlap(rows: np.ndarray, H: int) -> tuple[int, int]:
    """For origins ``rows`` (about evenly spaced) and H-day windows: (how many origins apart two windows stop
    overlapping, the Newey-West lag of H-day losses, at most ``len(rows) - 2``)."""
    every = int(np.median(np.diff(rows))) if len(rows) > 1 else 1
    step = max(1, -(-H // max(every, 1)))
    return step, min(step - 1, max(len(rows) - 2, 0))


def versus(crps: dict[str, tuple[np.ndarray, np.ndarray]], H: int, assets: list[str], rows: np.ndarray
           ) -> dict[str, Any]:
    """Diebold-Mariano tests of the model's per-origin CRPS against each baseline's (``crps``: each method's
    :func:`crps_series`), per asset: 1 day ahead (no lag) and over the H-day horizon (Newey-West lag for the overlap
    of H-day windows from origins ``rows`` apart)."""
    _, lag_h = overlap(rows, H)
    model = crps["sciffusion"]
    out: dict[str, Any] = {}
    for name, base in crps.items():
        if name == "sciffusion":
            continue
        out[name] = {a: {"crps_1d": diebold_mariano(model[0][:, i], base[0][:, i], 0),
                         "crps_hd": diebold_mariano(model[1][:, i], base[1][:, i], lag_h)}
                     for i, a in enumerate(assets)}
    return out


def joint_report(sets: dict[str, np.ndarray], y: np.ndarray, w: np.ndarray, rows: np.ndarray, H: int
                 ) -> dict[str, Any]:
    """Joint scores of each method (means over origins), their Diebold-Mariano tests against the model, the
    portfolio's VaR/ES backtests (1 day; and H days on origins at least H trading days apart, so the windows do not
    overlap) and lower-tail co-movement (share of days on which >= k assets fall below their 5% quantile)."""
    per = {k: joint_scores(v, y, w) for k, v in sets.items()}
    step, lag_h = overlap(rows, H)
    apart = np.arange(0, len(rows), step)
    A = y.shape[-1]
    counts = sorted({1, max(2, A // 4), max(2, A // 2)})
    y1 = y[:, 0]
    ok = np.isfinite(y1).all(-1)
    real_levels = np.nanquantile(y1[ok], 0.05, axis=0)
    out: dict[str, Any] = {"weights": w.tolist(), "scores": {}, "versus": {}, "portfolio_var": {},
                           "co_movement": {"real": co_movement(y1[ok], real_levels, counts)}}
    yp1 = portfolio_returns(y1, w)
    yph = portfolio_returns(y.sum(1), w)
    for name, lr in sets.items():
        out["scores"][name] = {k: float(np.nanmean(v)) for k, v in per[name].items()}
        p1, ph = portfolio_returns(lr[:, 0], w), portfolio_returns(lr.sum(1), w)        # (O, P)
        f1, fh = np.isfinite(yp1), np.isfinite(yph[apart])
        out["portfolio_var"][name] = {"1d_var95": backtest(yp1[f1], p1[f1], 0.05),
                                      "1d_var99": backtest(yp1[f1], p1[f1], 0.01),
                                      "hd_var95": backtest(yph[apart][fh], ph[apart][fh], 0.05),
                                      "hd_var99": backtest(yph[apart][fh], ph[apart][fh], 0.01)}
        x1 = lr[:, 0].reshape(-1, A)
        out["co_movement"][name] = co_movement(x1, np.quantile(x1, 0.05, axis=0), counts)
        if name != "sciffusion" and "sciffusion" in per:
            out["versus"][name] = {k: diebold_mariano(per["sciffusion"][k], v, 0 if k.endswith("_1d") else lag_h)
                                   for k, v in per[name].items()}
    return out


JOINT_COLUMNS = (("energy_1d", "ES 1d"), ("energy_hd", "ES Hd"), ("variogram_1d", "VS 1d"),
                 ("variogram_hd", "VS Hd"), ("portfolio_crps_1d", "pCRPS 1d"), ("portfolio_crps_hd", "pCRPS Hd"))


def format_joint(j: dict[str, Any]) -> list[str]:
    """The joint section of :func:`format_report`."""
    head = "".join(f" {label:>12s}" for _, label in JOINT_COLUMNS)
    lines = ["joint scores (means over origins; ES energy, VS variogram p=0.5, pCRPS the portfolio's CRPS; "
             "lower is better; below each baseline: sciffusion's difference in % and the Diebold-Mariano p)",
             f"{'method':11s}{head}"]
    for m, sc in j["scores"].items():
        lines.append(f"{m:11s}" + "".join(f" {sc.get(k, float('nan')):12.5g}" for k, _ in JOINT_COLUMNS))
        if m in j["versus"]:
            v = j["versus"][m]
            lines.append(f"{'  vs ' + m:11s}" + "".join(
                f" {1e2 * v[k]['mean_diff'] / sc[k]:+6.2f}% p{v[k]['pvalue']:.2f}" if k in v else f" {'-':>12s}"
                for k, _ in JOINT_COLUMNS))
    lines += ["", "portfolio VaR/ES backtests (exceedance rate in %, Kupiec p; H-day on non-overlapping windows; "
              "Christoffersen conditional coverage p and Acerbi-Szekely Z2 of the 1-day 99% level)",
              f"{'method':11s} {'1d VaR95':>9s} {'p':>6s} {'1d VaR99':>9s} {'p':>6s} {'Hd VaR95':>9s} {'p':>6s} "
              f"{'Hd VaR99':>9s} {'p':>6s} {'1d p(CC)':>8s} {'ES99 Z2':>8s}"]
    for m, b in j["portfolio_var"].items():
        lines.append(f"{m:11s}" + "".join(f" {1e2 * b[k]['rate']:9.2f} {b[k]['pvalue']:6.3f}"
                                          for k in ("1d_var95", "1d_var99", "hd_var95", "hd_var99"))
                     + f" {b['1d_var99']['pvalue_cc']:8.3f} {b['1d_var99']['es_z2']:8.3f}")
    counts = list(j["co_movement"]["real"])
    lines += ["", "lower-tail co-movement: share of days with >= k assets below their own 5% quantile (k = "
              + ", ".join(counts) + ")"]
    for m, c in j["co_movement"].items():
        lines.append(f"{m:11s} " + " ".join(f"{c[k]:7.4f}" for k in counts))
    return lines


def _facts(paths: np.ndarray, assets: list[str]) -> dict[str, Any]:
    """Per asset facts of ``(paths, T, A)`` and the cross-asset correlation of daily returns."""
    out = {a: stylized_facts(paths[:, :, i]) for i, a in enumerate(assets)}
    A = len(assets)
    if A > 1:
        c = np.mean([np.corrcoef(p.T) for p in paths], axis=0)
        if A <= PAIRS_LISTED:
            out["cross_corr"] = {f"{assets[i]}~{assets[j]}": float(c[i, j]) for i in range(A) for j in range(i + 1, A)}
        else:  # A (A - 1) / 2 pairs would swamp the report: their mean
            out["cross_corr"] = {"mean pairwise": float(c[np.triu_indices(A, 1)].mean())}
    return out



def format_report(report: dict[str, Any]) -> str:
    """The report as text tables: skill and backtests per asset and method (the first :data:`ASSETS_PRINTED`
    assets), the joint scores, then stylized facts."""
    o = report["origins"]
    shown = report["assets"][:ASSETS_PRINTED]
    lines = [f"scenarios: {o[2]} origins {o[0]}..{o[1]}, {report['paths']} paths, horizon {report['horizon']}",
             "", f"{'asset':10s} {'method':11s} {'CRPS 1d':>9s} {'CRPS Hd':>9s} {'VaR95 %':>8s} {'p(Kup)':>7s} "
             f"{'VaR99 %':>8s} {'p(Kup)':>7s} {'p(CC)':>6s} {'ES99 Z2':>8s}"]
    if len(shown) < len(report["assets"]):
        lines.append(f"(per-asset tables: the first {len(shown)} of {len(report['assets'])} assets; all are in the "
                     "JSON report)")
    for a in shown:
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
            for a in shown:
                d1, dh = per[a]["crps_1d"], per[a]["crps_hd"]
                b = report["skill"][m][a]
                lines.append(f"{a:10s} {m:11s} {1e2 * d1['mean_diff'] / b['crps_1d']:9.2f} {d1['pvalue']:6.3f} "
                             f"{1e2 * dh['mean_diff'] / b['crps_hd']:9.2f} {dh['pvalue']:6.3f}")
        lines.append("")
    if report.get("joint"):
        lines += format_joint(report["joint"]) + [""]
    lines += [f"stylized facts (long paths: {report['long_paths'][0]} x {report['long_paths'][1]} days; real: the "
              "scenario period)",
              f"{'asset':10s} {'series':11s} {'kurt':>6s} {'Hill':>5s} {'acf r1':>7s} {'acf|r| 1-50':>11s} "
              f"{'lever 1-10':>10s} {'kurt 1/5/20 days':>18s}"]
    for a in shown:
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
