"""Figures of the risk report (matplotlib, the ``plots`` extra): fan chart, VaR exceedance timeline, QQ plot and
ACF/leverage panels, one PNG each, written atomically."""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
import xarray as xr

from ...training.checkpoint import atomic_write
from .risk import acf, leverage, var_es


def _save(fig, path: pathlib.Path) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
    return str(path)


def risk_plots(scen: xr.Dataset, y: np.ndarray, sets: dict[str, np.ndarray], real: np.ndarray,
               long: dict[str, np.ndarray], assets: list[str], out: str | os.PathLike) -> list[str]:
    """Write the figures to folder ``out``; returns their paths. ``y`` is the truth ``(O, H, A)``, ``sets`` the
    scenario sets ``(O, H, P, A)`` by method, ``real`` the period's returns ``(T, A)``, ``long`` long simulated
    paths ``(paths, T, A)`` by method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    origins = scen["origin"].values
    lr = sets["sciffusion"]

    # Fan chart: price quantiles over the horizon from the origin with the largest realised H-day move.
    fig, axes = plt.subplots(1, len(assets), figsize=(5 * len(assets), 3.5), squeeze=False)
    move = np.nan_to_num(np.abs(y.sum(1)), nan=-1).max(-1)
    i = int(np.argmax(move))
    for a, ax in enumerate(axes[0]):
        p0 = float(scen["last_price"].values[i, a])
        paths = p0 * np.exp(np.cumsum(lr[i, :, :, a], axis=0))  # (H, P)
        h = np.arange(1, paths.shape[0] + 1)
        for lo, hi, alpha in ((5, 95, 0.2), (25, 75, 0.4)):
            ax.fill_between(h, np.percentile(paths, lo, 1), np.percentile(paths, hi, 1), color="C0", alpha=alpha,
                            label=f"{lo}-{hi}%")
        ax.plot(h, np.median(paths, 1), color="C0", label="median")
        ax.plot(h, p0 * np.exp(np.nancumsum(y[i, :, a])), color="k", label="realised")
        ax.set(title=f"{assets[a]} from {str(origins[i])[:10]}", xlabel="trading days ahead", ylabel="price")
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "fan_chart.png"))
    plt.close(fig)

    # VaR timeline: 1-day VaR 95/99 of the model against realised returns, exceedances marked.
    fig, axes = plt.subplots(len(assets), 1, figsize=(10, 2.6 * len(assets)), squeeze=False)
    for a, ax in enumerate(axes[:, 0]):
        y1 = y[:, 0, a]
        ax.plot(origins, y1, lw=0.6, color="0.5", label="realised 1-day return")
        for p, c in ((0.05, "C1"), (0.01, "C3")):
            var, _ = var_es(lr[:, 0, :, a], p)
            ax.plot(origins, var, color=c, lw=0.8, label=f"VaR{int(round(100 * (1 - p)))}")
            hit = y1 < var
            ax.scatter(np.asarray(origins)[hit], y1[hit], color=c, s=10, zorder=3)
        ax.set(title=f"{assets[a]}: 1-day VaR and exceedances", ylabel="log return")
        ax.legend(fontsize=7, ncol=3)
    written.append(_save(fig, out / "var_timeline.png"))
    plt.close(fig)

    # QQ: quantiles of the long simulated daily returns against the real returns of the period.
    fig, axes = plt.subplots(1, len(assets), figsize=(4.5 * len(assets), 4), squeeze=False)
    q = np.linspace(0.001, 0.999, 199)
    for a, ax in enumerate(axes[0]):
        rq = np.quantile(real[:, a], q)
        for m, paths in long.items():
            ax.plot(rq, np.quantile(paths[:, :, a].ravel(), q), ".", ms=3, label=m)
        ax.axline((0, 0), slope=1, color="k", lw=0.7)
        ax.set(title=f"{assets[a]}: QQ vs real", xlabel="real quantile", ylabel="simulated quantile")
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "qq.png"))
    plt.close(fig)

    # ACF of |r| (volatility clustering) and leverage corr(r_t, r_{t+k}^2).
    fig, axes = plt.subplots(2, len(assets), figsize=(5 * len(assets), 6), squeeze=False)
    for a in range(len(assets)):
        axes[0, a].plot(range(1, 51), acf(np.abs(real[:, a]), 50), "k", label="real")
        axes[1, a].plot(range(1, 11), leverage(real[:, a]), "k", label="real")
        for m, paths in long.items():
            axes[0, a].plot(range(1, 51), np.mean([acf(np.abs(p), 50) for p in paths[:, :, a]], 0), label=m)
            axes[1, a].plot(range(1, 11), np.mean([leverage(p) for p in paths[:, :, a]], 0), label=m)
        axes[0, a].set(title=f"{assets[a]}: ACF of |r|", xlabel="lag (days)")
        axes[1, a].set(title=f"{assets[a]}: corr(r_t, r_t+k^2)", xlabel="k (days)")
        axes[1, a].axhline(0, color="k", lw=0.5)
        axes[0, a].legend(fontsize=7)
    written.append(_save(fig, out / "acf_leverage.png"))
    plt.close(fig)
    return written


def imputation_plot(ds: xr.Dataset, truth: np.ndarray | None, out: str | os.PathLike, gaps: int = 4) -> str:
    """The widest ``gaps`` stretches of an imputation (``sciffusion impute``'s Dataset): 5-95% and median of the
    imputed prices (or cumulative returns) with the observed days and, if given, the truth ``(time, asset)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = ds["price"].values if "price" in ds else np.nancumsum(ds["log_return"].values, axis=1)
    miss = ds["input_missing"].values.astype(bool)
    found = []  # (length, asset, lo, hi)
    for a in range(miss.shape[1]):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], miss[:, a].astype(np.int8), [0]])))
        found += [(e - s, a, s, e - 1) for s, e in zip(edges[::2], edges[1::2])]
    found = sorted(found, reverse=True)[:gaps]
    fig, axes = plt.subplots(1, max(len(found), 1), figsize=(3.6 * max(len(found), 1), 3.2), squeeze=False)
    for ax, (_, a, lo, hi) in zip(axes[0], found):
        t = np.arange(max(lo - 5, 0), min(hi + 6, miss.shape[0]))
        v = values[:, t, a]
        ax.fill_between(t, np.percentile(v, 5, 0), np.percentile(v, 95, 0), color="C0", alpha=0.25, label="5-95%")
        ax.plot(t, np.median(v, 0), color="C0", label="median")
        if truth is not None:
            ax.plot(t, truth[t, a], color="k", lw=1, label="truth")
        obs = t[~miss[t, a]]
        ax.plot(obs, values[0, obs, a], "o", color="k", ms=3, label="observed")
        ax.set(title=f"{ds['asset'].values[a]} {str(ds['time'].values[lo])[:10]}", xlabel="day")
        ax.legend(fontsize=6)
    path = pathlib.Path(out)
    path.mkdir(parents=True, exist_ok=True)
    written = _save(fig, path / "imputation.png")
    plt.close(fig)
    return written
