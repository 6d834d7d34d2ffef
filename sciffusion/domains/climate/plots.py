"""Figures for forecast and downscaling evaluations (matplotlib, the ``plots`` extra), written atomically as PNG."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
import xarray as xr

from ...training.checkpoint import atomic_write


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'sciffusion[plots]'") from None
    return plt


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def forecast_plots(table: dict[str, Any], fc: xr.Dataset, truth: xr.Dataset, out_dir: str | os.PathLike
                   ) -> list[pathlib.Path]:
    """Per variable: CRPS by lead for every method, the lead-1 rank histogram, and maps (last initial time,
    lead 1) of the ensemble mean, the truth, their difference and the ensemble spread."""
    plt = _pyplot()
    out = pathlib.Path(out_dir)
    written = []
    for v, methods in table.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, entry in methods.items():
            leads = [k for k in entry if k.isdigit()]
            ax.plot([int(k) for k in leads], [entry[k]["crps"] for k in leads], marker="o", label=name,
                    lw=2.5 if name == "sciffusion" else 1.2)
        ax.set(xlabel="lead (time steps)", ylabel=f"fair CRPS ({fc[v].attrs.get('units', '')})",
               title=f"{v}: CRPS by lead")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / f"{v}_crps_by_lead.png"))

        hist = methods["sciffusion"].get("rank_histogram")
        if hist:
            fig, ax = plt.subplots(figsize=(5, 3.5))
            freq = np.asarray(hist) / np.sum(hist)
            ax.bar(np.arange(len(freq)), freq)
            ax.axhline(1 / len(freq), color="k", ls="--", lw=1, label="calibrated")
            ax.set(xlabel="rank of the truth among the members", ylabel="frequency",
                   title=f"{v}: rank histogram, lead 1")
            ax.legend(fontsize=8)
            written.append(_save(fig, out / f"{v}_rank_histogram.png"))

        f = fc[v].isel(init_time=-1, lead_time=0)
        t = truth[v].isel(init_time=-1, lead_time=0)
        mean, spread = f.mean("member"), f.std("member")
        panels = [(mean, "ensemble mean", "viridis"), (t, "truth", "viridis"), (mean - t, "mean - truth", "RdBu_r"),
                  (spread, "ensemble spread", "magma")]
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
        lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
        for ax, (da, title, cmap) in zip(axes, panels):
            kw = {"vmin": lo, "vmax": hi} if cmap == "viridis" else {}
            if cmap == "RdBu_r":
                m = float(np.nanmax(np.abs(da))) or 1.0
                kw = {"vmin": -m, "vmax": m}
            im = ax.pcolormesh(da[da.dims[1]], da[da.dims[0]], da.values, cmap=cmap, shading="auto", **kw)
            ax.set_title(title)
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle(f"{v}, initial time {str(fc.init_time.values[-1])[:10]}, lead 1", y=1.04)
        written.append(_save(fig, out / f"{v}_maps.png"))
    return written


def spectrum_plot(spectra: dict[str, np.ndarray], variable: str, out_dir: str | os.PathLike) -> pathlib.Path:
    """Radially averaged power spectra of the truth and each method (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, s in spectra.items():
        ax.loglog(np.arange(1, len(s) + 1), s, label=name, lw=2.5 if name in ("truth", "sciffusion") else 1.2)
    ax.set(xlabel="wavenumber (cycles per domain)", ylabel="power", title=f"{variable}: power spectrum")
    ax.legend(fontsize=8)
    return _save(fig, pathlib.Path(out_dir) / f"{variable}_spectrum.png")
