"""Figures for forecast and downscaling evaluations (matplotlib, the ``plots`` extra), written atomically as PNG.

Every map has its axes in degrees (or the grid's own projected/rotated coordinates, named with their units) and a
colour bar named with the variable and its units; a variable on several levels gets one row of maps per level.
Coastlines are drawn when cartopy and its Natural Earth coastline shapefile are installed: the shapefile is looked up
where cartopy keeps pre-downloaded data, and never downloaded here (a missing one is said once per process, and the
maps are drawn without it). The figure builders return matplotlib figures, so their labels can be checked; the
``*_plots`` functions save them.
"""

from __future__ import annotations

import functools
import os
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ...training.checkpoint import atomic_write
from .coords import find_axis, is_projected, is_rotated
from .levels import level_of

#: Natural Earth resolutions tried for coastlines, coarsest first (the fields are coarse).
COASTLINE_RESOLUTIONS = ("110m", "50m", "10m")


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


def save_figures(figures: dict[str, Any], out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Write each ``{stem: figure}`` as ``out_dir/stem.png`` (atomically) and close it."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out / f"{stem}.png") for stem, fig in figures.items()]


# --- labels ----------------------------------------------------------------------------------------------------
def field_label(da: xr.DataArray, name: str | None = None) -> str:
    """``"surface temperature (K)"``: the variable's long name (else its name) and units, for a colour bar."""
    what = da.attrs.get("long_name") or name or da.name or "value"
    units = da.attrs.get("units")
    return f"{what} ({units})" if units else str(what)


def axis_label(da: xr.DataArray, dim: str, kind: str) -> str:
    """``"longitude (°E)"`` / ``"latitude (°N)"`` for geographic dims; a projected or rotated dim keeps its own
    name and units (``"x (km)"``, ``"grid_longitude (degrees)"``)."""
    if not (is_projected(da, dim) or (kind == "latitude" and _rotated(da))):
        return "longitude (°E)" if kind == "longitude" else "latitude (°N)"
    a = da[dim].attrs if dim in da.coords else {}
    units = a.get("units")
    return f"{a.get('long_name') or dim} ({units})" if units else str(a.get("long_name") or dim)


def _rotated(da: xr.DataArray) -> bool:
    try:
        return is_rotated(da, find_axis(da, "latitude"), find_axis(da, "longitude"))
    except ValueError:
        return False


def lead_axis_label(unit: str) -> str:
    return f"lead ({unit})"


# --- coastlines ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def coastlines() -> tuple[np.ndarray, ...] | None:
    """Natural Earth coastlines as ``(n, 2)`` arrays of (longitude, latitude) in degrees, from the shapefile that
    cartopy would use, if cartopy is installed and the file is on disk; else None, said once per process."""
    try:
        import cartopy
        from cartopy.io import shapereader
    except ImportError:
        warnings.warn("maps are drawn without coastlines: cartopy is not installed (pip install cartopy, and its "
                      "Natural Earth coastline data)", stacklevel=2)
        return None
    dirs = [cartopy.config.get(k) for k in ("pre_existing_data_dir", "data_dir")]
    for res in COASTLINE_RESOLUTIONS:
        for d in dirs:
            path = pathlib.Path(str(d or "")) / "shapefiles" / "natural_earth" / "physical" / f"ne_{res}_coastline.shp"
            if d and path.is_file():
                lines = []
                for geom in shapereader.Reader(str(path)).geometries():
                    parts = getattr(geom, "geoms", [geom])
                    lines.extend(np.asarray(p.coords, dtype=np.float64)[:, :2] for p in parts)
                return tuple(lines)
    warnings.warn("maps are drawn without coastlines: no Natural Earth coastline shapefile in cartopy's data "
                  f"directories ({', '.join(str(d) for d in dirs if d)}); sciffusion does not download it",
                  stacklevel=2)
    return None


def draw_coastlines(ax, lon: np.ndarray, lat: np.ndarray) -> int:
    """Coastlines over a map with geographic ``lon``/``lat`` (any longitude convention: -180..180 or 0..360);
    returns how many line pieces were drawn (0 without cartopy's data)."""
    lines = coastlines()
    if not lines:
        return 0
    x0, x1, y0, y1 = float(np.min(lon)), float(np.max(lon)), float(np.min(lat)), float(np.max(lat))
    n = 0
    for shift in (-360.0, 0.0, 360.0):
        for line in lines:
            x = line[:, 0] + shift
            if x.max() < x0 or x.min() > x1 or line[:, 1].max() < y0 or line[:, 1].min() > y1:
                continue
            ax.plot(x, line[:, 1], color="k", lw=0.6, label="_coastline", gid="coastline")
            n += 1
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return n


# --- maps ------------------------------------------------------------------------------------------------------
def draw_map(fig, ax, da: xr.DataArray, title: str, cmap: str, label: str, **limits: float) -> None:
    """One ``(lat, lon)`` field as a coloured map with labelled axes, a labelled colour bar and coastlines."""
    lat, lon = find_axis(da, "latitude"), find_axis(da, "longitude")
    da = da.transpose(lat, lon)
    im = ax.pcolormesh(da[lon].values, da[lat].values, da.values, cmap=cmap, shading="auto", **limits)
    ax.set_title(title)
    ax.set_xlabel(axis_label(da, lon, "longitude"))
    ax.set_ylabel(axis_label(da, lat, "latitude"))
    fig.colorbar(im, ax=ax, shrink=0.8).set_label(label)
    if not (is_projected(da, lon) or is_projected(da, lat) or _rotated(da)):
        draw_coastlines(ax, da[lon].values, da[lat].values)


def _symmetric(da: xr.DataArray) -> dict[str, float]:
    m = float(np.nanmax(np.abs(da))) if np.isfinite(da).any() else 1.0
    return {"vmin": -(m or 1.0), "vmax": m or 1.0}


def _limits(da: xr.DataArray) -> dict[str, float]:
    return {"vmin": float(np.nanmin(da)), "vmax": float(np.nanmax(da))} if np.isfinite(da).any() else {}


def by_variable(names: Sequence[str], ds: xr.Dataset) -> dict[str, list[str]]:
    """Channel variables grouped by the variable they are levels of (``t_500, t_850`` -> ``t``), in order."""
    groups: dict[str, list[str]] = {}
    for v in names:
        origin = level_of(ds[v])
        groups.setdefault(origin["variable"] if origin else v, []).append(v)
    return groups


def _level_title(da: xr.DataArray) -> str:
    origin = level_of(da)
    if not origin:
        return ""
    units = origin.get("coord_attrs", {}).get("units", "")
    return f" at {origin['value']:g} {units}".rstrip()


# --- forecasts -------------------------------------------------------------------------------------------------
def forecast_figures(table: dict[str, Any], fc: xr.Dataset, truth: xr.Dataset, lead_unit: tuple[float, str]
                     = (1.0, "time steps")) -> dict[str, Any]:
    """Per channel: CRPS by lead for every method and the lead-1 rank histogram; per variable: maps (last initial
    time, lead 1) of the ensemble mean, the truth, their difference and the ensemble spread, one row per level.

    ``fc`` and ``truth``: ``(init_time, lead_time, member, lat, lon)`` channels (levels split), leads in steps;
    ``lead_unit``: ``(size of one step, unit)`` for the lead axis, e.g. ``(6.0, "hours")``."""
    plt = _pyplot()
    figures: dict[str, Any] = {}
    per_step, unit = lead_unit
    for v, methods in table.items():
        units = fc[v].attrs.get("units", "")
        fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
        leads = []
        for name, entry in methods.items():
            steps = [int(k) for k in entry if k.isdigit()]
            leads = sorted(set(leads) | set(steps))
            ax.plot([s * per_step for s in steps], [entry[str(s)]["crps"] for s in steps], marker="o", label=name,
                    lw=2.5 if name == "sciffusion" else 1.2)
        ax.set_xticks([s * per_step for s in leads])
        ax.set_xticklabels([f"{s * per_step:g}" for s in leads])
        ax.set(xlabel=lead_axis_label(unit), ylabel=f"fair CRPS ({units})" if units else "fair CRPS",
               title=f"{v}: CRPS by lead")
        ax.legend(fontsize=8)
        figures[f"{v}_crps_by_lead"] = fig

        hist = methods.get("sciffusion", {}).get("rank_histogram")
        if hist:
            fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
            freq = np.asarray(hist) / np.sum(hist)
            ax.bar(np.arange(len(freq)), freq)
            ax.axhline(1 / len(freq), color="k", ls="--", lw=1, label="calibrated")
            ax.set(xlabel="rank of the truth among the members", ylabel="frequency",
                   title=f"{v}: rank histogram, lead 1")
            ax.legend(fontsize=8)
            figures[f"{v}_rank_histogram"] = fig

    first = f"{per_step * int(fc['lead_time'].values[0]):g} {unit}"
    for variable, channels in by_variable(list(table), fc).items():
        fig, axes = plt.subplots(len(channels), 4, figsize=(17, 3.4 * len(channels)), squeeze=False,
                                 layout="constrained")
        for row, v in zip(axes, channels):
            f = fc[v].isel(init_time=-1, lead_time=0)
            t = truth[v].isel(init_time=-1, lead_time=0)
            mean, spread = f.mean("member"), f.std("member")
            label = field_label(fc[v], variable)
            at = _level_title(fc[v])
            draw_map(fig, row[0], mean, f"ensemble mean{at}", "viridis", label, **_limits(t))
            draw_map(fig, row[1], t, f"truth{at}", "viridis", label, **_limits(t))
            draw_map(fig, row[2], mean - t, f"mean - truth{at}", "RdBu_r", f"difference: {label}",
                     **_symmetric(mean - t))
            draw_map(fig, row[3], spread, f"ensemble spread{at}", "magma", f"spread: {label}")
        fig.suptitle(f"{variable}, initial time {str(fc.init_time.values[-1])[:10]}, lead {first}")
        figures[f"{variable}_maps"] = fig
    return figures


def forecast_plots(table: dict[str, Any], fc: xr.Dataset, truth: xr.Dataset, out_dir: str | os.PathLike,
                   lead_unit: tuple[float, str] = (1.0, "time steps")) -> list[pathlib.Path]:
    """:func:`forecast_figures` saved as PNG in ``out_dir``."""
    return save_figures(forecast_figures(table, fc, truth, lead_unit), out_dir)


# --- downscaling -----------------------------------------------------------------------------------------------
def spectrum_figure(spectra: dict[str, np.ndarray], variable: str) -> Any:
    """Radially averaged power spectra of the truth and each method (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for name, s in spectra.items():
        ax.loglog(np.arange(1, len(s) + 1), s, label=name, lw=2.5 if name in ("truth", "sciffusion") else 1.2)
    ax.set(xlabel="wavenumber (cycles per domain)", ylabel="power", title=f"{variable}: power spectrum")
    ax.legend(fontsize=8)
    return fig


def downscale_maps_figure(rows: Sequence[tuple[xr.DataArray, xr.DataArray, xr.DataArray | None]], variable: str,
                          when: str, shown: int = 3) -> Any:
    """One time step of one variable, one row per level: the coarse input (when given), the fine truth and the first
    ``shown`` members, each row on its truth's colour scale, with the variable's name and units on every colour
    bar. ``rows``: ``(truth (lat, lon), members (member, lat, lon), coarse (lat, lon) or None)`` per level."""
    plt = _pyplot()
    n = max(len(_panels(*r, shown)) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(4.3 * n, 3.4 * len(rows)), squeeze=False,
                             layout="constrained")
    for ax_row, (truth, members, coarse) in zip(axes, rows):
        label, at = field_label(members, variable), _level_title(members)
        for ax, (da, title) in zip(ax_row, _panels(truth, members, coarse, shown)):
            draw_map(fig, ax, da, f"{title}{at}", "viridis", label, **_limits(truth))
    fig.suptitle(f"{variable}, {when}")
    return fig


def _panels(truth: xr.DataArray, members: xr.DataArray, coarse: xr.DataArray | None, shown: int
            ) -> list[tuple[xr.DataArray, str]]:
    return ([(coarse, "coarse input")] if coarse is not None else []) + [(truth, "truth")] + [
        (members.isel(member=m), f"member {m}") for m in range(min(shown, members.sizes["member"]))]
