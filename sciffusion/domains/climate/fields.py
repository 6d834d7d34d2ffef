"""Gridded fields in and out: find time/lat/lon in any CF-ish netCDF/zarr, make the grid canonical, write atomically.

Canonical means: latitude ascending, longitude sorted within one convention (``[0, 360)`` unless the input has
negative longitudes, then ``[-180, 180)``), time strictly increasing. A grid that covers all longitudes with even
spacing is *global* (the U-Net then wraps around in longitude); any other grid is regional.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from .conventions import describe_gaps
from .coords import (  # noqa: F401 (re-exported)
    LAT_NAMES,
    LON_NAMES,
    area_weights_of,
    find_axis,
    find_time,
    is_projected,
    is_rotated,
    time_key,
    true_latitude,
)
from .levels import is_vertical, level_of, split_levels
from .sources import Source, open_source
from .units import to_units


class GapWarning(UserWarning):
    """The data miss steps of their own calendar (a year, a month, a day of a 6-hourly record)."""


@dataclass(frozen=True)
class Grid:
    """Names and values of the spatial coordinates of a run; compared against every later input."""

    time: str
    lat: str
    lon: str
    lat_values: tuple[float, ...]
    lon_values: tuple[float, ...]
    periodic: bool
    # Area weights ``(lat, lon)`` (mean 1) where the grid's dims are not geographic latitude: cos(true latitude) of
    # a rotated-pole or curvilinear grid's 2-D latitude, or uniform on a projected x/y grid without one; None: the
    # cosine of the latitude dim. ``weighting`` says which, and goes into the outputs.
    weights: tuple[tuple[float, ...], ...] | None = None
    weighting: str = "cos(latitude)"

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat_values), len(self.lon_values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        w = d.get("weights")
        return cls(d["time"], d["lat"], d["lon"], tuple(d["lat_values"]), tuple(d["lon_values"]), bool(d["periodic"]),
                   None if w is None else tuple(tuple(map(float, r)) for r in w), d.get("weighting", "cos(latitude)"))

    def check(self, other: Grid, what: str = "the data") -> None:
        """Raise if ``other`` is not this grid (same sizes and coordinates to 1e-4 degrees)."""
        if other.shape != self.shape or not (
                np.allclose(other.lat_values, self.lat_values, atol=1e-4)
                and np.allclose(other.lon_values, self.lon_values, atol=1e-4)):
            raise ValueError(f"{what} is on a {other.shape[0]}x{other.shape[1]} grid "
                             f"(lat {other.lat_values[0]:g}..{other.lat_values[-1]:g}, lon {other.lon_values[0]:g}.."
                             f"{other.lon_values[-1]:g}) that does not match the run's {self.shape[0]}x{self.shape[1]} "
                             f"grid (lat {self.lat_values[0]:g}..{self.lat_values[-1]:g}, lon {self.lon_values[0]:g}.."
                             f"{self.lon_values[-1]:g})")

    def lat_weights(self) -> np.ndarray:
        """``cos(latitude)`` normalised to mean 1 over the grid's latitudes, ``(lat,)``."""
        w = np.cos(np.deg2rad(np.asarray(self.lat_values, dtype=np.float64))).clip(min=0)
        return w / w.mean()

    def cell_weights(self) -> np.ndarray:
        """``(lat, lon)`` area weights of the cells, mean 1: :attr:`weights` when the grid has them, else
        :meth:`lat_weights` broadcast along longitude."""
        if self.weights is not None:
            return np.asarray(self.weights, dtype=np.float64)
        return np.broadcast_to(self.lat_weights()[:, None], self.shape).copy()

    def cropped(self, rows: int, cols: int) -> Grid:
        """The grid of the first ``rows`` x ``cols`` cells."""
        w = None if self.weights is None else tuple(r[:cols] for r in self.weights[:rows])
        return dataclasses.replace(self, lat_values=self.lat_values[:rows], lon_values=self.lon_values[:cols],
                                   weights=w)


def _is_global(lon: np.ndarray) -> bool:
    if len(lon) < 3:
        return False
    step = np.diff(lon)
    return bool(np.allclose(step, step[0], rtol=1e-3) and abs(len(lon) * step[0] - 360.0) < 0.5 * step[0])


def canonical(ds: xr.Dataset, variables: Sequence[str] | None = None, levels: Sequence[float] | None = None,
              ) -> tuple[xr.Dataset, Grid]:
    """Select ``variables``, split vertical levels into channels, check dims, sort latitude, normalise and sort
    longitude, check time.

    A variable with a vertical dim (see :mod:`.levels`) becomes one channel variable per level (``t_850``);
    ``levels`` selects levels (values as in the data, or hPa for a coordinate in Pa). ``variables`` may name whole
    variables (all their selected levels) or single channels. Default: every variable on (time, lat, lon), with or
    without levels. Every selected channel is returned as ``(time, lat, lon)``; other dims of size 1 (ERA5's
    ``number``, a single ``expver``) are dropped. Attributes of the dataset, variables and coordinates are kept.
    """
    time, lat, lon = find_time(ds), find_axis(ds, "latitude"), find_axis(ds, "longitude")
    if isinstance(variables, str):
        variables = [variables]
    horizontal = {time, lat, lon}
    if variables is None:
        parents = [str(v) for v in ds.data_vars if horizontal <= set(map(str, ds[v].dims))]
        if not parents:
            raise ValueError(f"the data hold no ({time}, {lat}, {lon}) variable")
    else:
        parents = []
        for v in variables:
            p = v if v in ds.data_vars else _parent_of(ds, v)
            if p is None:
                raise ValueError(f"variable(s) [{v!r}] not in the data; it has {sorted(map(str, ds.data_vars))}")
            if p not in parents:
                parents.append(p)
    for v in parents:
        if not horizontal <= set(map(str, ds[v].dims)):
            raise ValueError(f"variable {v!r} has dims {ds[v].dims}; need ({time}, {lat}, {lon}) and at most a "
                             f"vertical level")
    flat = split_levels(ds[parents], keep=horizontal, levels=levels)
    if variables is not None:  # whole variables expand to their channels; channels name themselves
        wanted = [c for v in variables for c in
                  ([c for c in flat.data_vars if _origin(flat, str(c)) == v] if v in parents else [v])]
        missing = [c for c in wanted if c not in flat.data_vars]
        if missing:
            raise ValueError(f"variable(s) {missing} not in the data (at the selected levels); it has "
                             f"{sorted(map(str, flat.data_vars))}")
        flat = flat[list(dict.fromkeys(wanted))]
    ds = flat.transpose(time, lat, lon)
    t = ds[time].values
    if len(t) > 1 and not all(a < b for a, b in zip(t[:-1], t[1:])):
        raise ValueError(f"time coordinate {time!r} is not strictly increasing (sort it or remove duplicates)")
    ds = ds.sortby(lat)
    projected = is_projected(ds, lon) or is_projected(ds, lat)
    rotated = is_rotated(ds, lat, lon)
    lon_vals = ds[lon].values.astype(np.float64)
    if not (projected or rotated):  # geographic longitudes: one 360-degree range; x in metres, rlon stay as they are
        wrapped = (lon_vals + 180.0) % 360.0 - 180.0 if (lon_vals < 0).any() else lon_vals % 360.0
        if not np.array_equal(wrapped, lon_vals):
            ds = ds.assign_coords({lon: (lon, wrapped.astype(ds[lon].dtype), ds[lon].attrs)})
    ds = ds.sortby(lon)
    lon_sorted = ds[lon].values.astype(np.float64)
    if len(np.unique(lon_sorted)) != len(lon_sorted):
        raise ValueError(f"longitude {lon!r} has duplicate values after wrapping into one 360-degree range")
    weights, weighting = area_weights_of(ds, lat, lon)
    grid = Grid(time, lat, lon, tuple(map(float, ds[lat].values)), tuple(map(float, lon_sorted)),
                not (projected or rotated) and _is_global(lon_sorted),
                None if weights is None else tuple(tuple(map(float, r)) for r in weights), weighting)
    return ds, grid




def _origin(ds: xr.Dataset, channel: str) -> str:
    """The variable a channel of ``ds`` was split from (itself when it has no levels)."""
    o = level_of(ds[channel])
    return channel if o is None else o["variable"]


def _parent_of(ds: xr.Dataset, channel: str) -> str | None:
    """The variable of ``ds`` whose level gives the channel name ``channel`` (``t_850`` -> ``t``), if any."""
    for v in ds.data_vars:
        if channel.startswith(f"{v}_") and any(is_vertical(ds, str(d)) for d in ds[v].dims):
            return str(v)
    return None


def static_field(da: xr.DataArray, grid: Grid) -> np.ndarray:
    """A (lat, lon) field (land-sea mask, orography) on ``grid``: latitude sorted and longitude wrapped as the data
    were, then checked against the grid's coordinates. Returns ``(lat, lon)`` float64."""
    da = da.squeeze(drop=True)
    lat, lon = find_axis(da, "latitude"), find_axis(da, "longitude")
    if da.ndim != 2:
        raise ValueError(f"static field {da.name!r} has dims {da.dims}; need (lat, lon)")
    ds, _ = canonical(da.expand_dims(time=[0]).to_dataset(name="f").assign_coords(
        time=("time", [0], {"axis": "T"})), ["f"])
    g = Grid(grid.time, lat, lon, tuple(map(float, ds[lat].values)), tuple(map(float, ds[lon].values)), grid.periodic)
    grid.check(g, f"static field {da.name!r}")
    return ds["f"].values[0].astype(np.float64)


def open_fields(data: Source | xr.Dataset, variables: Sequence[str] | None = None,
                chunks: dict[str, int] | None = None, levels: Sequence[float] | None = None,
                units: Mapping[str, str | None] | None = None) -> tuple[xr.Dataset, Grid]:
    """Open ``data`` lazily (a netCDF file, a zarr store, a glob, several files or an fsspec URL: see
    :func:`~.sources.open_source`; or an in-memory dataset) and make it canonical (see :func:`canonical`).

    Nothing is read into memory here; samples are read on demand. ``chunks`` (e.g. ``{"time": 64}``) opens with dask
    when it is installed, for reductions over archives larger than memory. ``units`` (``{variable: CF units}``,
    e.g. a run's) converts each variable to those units (:func:`~.units.to_units`: degC to K, hPa to Pa...) and
    refuses, naming it, one whose units measure something else. Gaps in time (missing steps of the data's
    calendar, :func:`~.conventions.calendar`) are named in one warning, once per source and process.
    """
    ds, grid = canonical(open_source(data, chunks), variables, levels)
    named = [os.fspath(d) for d in ([data] if isinstance(data, (str, os.PathLike)) else data)] \
        if not isinstance(data, xr.Dataset) else []
    gap = describe_gaps(ds[grid.time].values, f"the data ({', '.join(named)})" if named else "the data")
    if gap:
        warnings.warn(gap, GapWarning)  # from this line: printed once per message and process
    if units:
        ds = to_units(ds, units, "the data" if isinstance(data, xr.Dataset) else str(data))
    return ds, grid


# Attributes that point at variables an output does not carry (bounds, the grid mapping, auxiliary coordinates).
_POINTERS = ("bounds", "grid_mapping", "coordinates", "cell_measures", "ancillary_variables")


def output_attrs(attrs: dict[str, Any], dims: Sequence[str]) -> dict[str, Any]:
    """``attrs`` of an input variable or coordinate for an output with ``dims``: no pointers to variables that are
    not written, and no ``cell_methods`` entry on a dim that is gone (``time: mean`` on a forecast's init_time)."""
    out = {k: v for k, v in attrs.items() if k not in _POINTERS}
    if isinstance(out.get("cell_methods"), str):
        kept = [" ".join(words) for names, words in _cell_methods(out["cell_methods"])
                if all(n in dims or n == "area" for n in names)]
        if kept:
            out["cell_methods"] = " ".join(kept)
        else:
            del out["cell_methods"]
    return out


def _cell_methods(text: str) -> list[tuple[list[str], list[str]]]:
    """CF ``cell_methods`` as ``(names, words)`` entries: ``"time: mean (interval: 1 day) area: mean"`` ->
    ``[(["time"], ["time:", "mean", "(interval:", "1", "day)"]), (["area"], ["area:", "mean"])]``."""
    entries: list[tuple[list[str], list[str]]] = []
    depth, in_names = 0, False
    for word in text.split():
        is_name = depth == 0 and word.endswith(":") and not word.startswith("(")
        if is_name and not in_names:
            entries.append(([], []))
        if not entries:
            entries.append(([], []))
        if is_name:
            entries[-1][0].append(word[:-1])
        entries[-1][1].append(word)
        in_names = is_name
        depth += word.count("(") - word.count(")")
    return entries


def grid_coords(ds: xr.Dataset, grid: Grid) -> dict[str, xr.DataArray]:
    """The 2-D auxiliary coordinates on the grid's ``(lat, lon)`` dims (a rotated or curvilinear grid's true
    latitude and longitude), for an output: the scores weight cells by them and readers can map the fields."""
    out = {}
    for name in ds.coords:
        c = ds[name]
        if c.ndim == 2 and set(map(str, c.dims)) == {grid.lat, grid.lon} and str(name) not in (grid.lat, grid.lon):
            c = c.transpose(grid.lat, grid.lon).reset_coords(drop=True).copy()
            c.attrs = output_attrs(c.attrs, [grid.lat, grid.lon])
            out[str(name)] = c
    return out


def output_coord(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Coordinate ``name`` of ``ds`` for an output: its values and own attributes, without the scalar or auxiliary
    coordinates it carries along (ERA5's ``number``, ``expver``) or pointers to variables that are not written."""
    c = ds[name].reset_coords(drop=True).copy()
    c.attrs = output_attrs(c.attrs, [name])
    return c


def field_array(ds: xr.Dataset, variables: Sequence[str]) -> np.ndarray:
    """``(time, C, lat, lon)`` float64 from a canonical dataset (reads the selected steps only)."""
    return np.stack([ds[v].values.astype(np.float64) for v in variables], axis=1)


def select_period(ds: xr.Dataset, time: str, period: str | None, what: str = "period") -> xr.Dataset:
    """``"1991-01/2015-12"``, ``":2009-12-31"`` or ``"2016/"`` (either end open) -> the matching time steps."""
    if not period:
        return ds
    p = str(period).strip()
    if "/" in p:
        start, end = p.split("/", 1)
    elif p.startswith(":") or p.endswith(":"):
        start, end = p.split(":", 1) if p.startswith(":") else (p[:-1], "")
    else:
        start = end = p  # one year or month: all of it
    out = ds.sel({time: slice(start or None, end or None)})
    if out.sizes[time] == 0:
        raise ValueError(f"{what} {period!r} selects no time steps (the data run from {ds[time].values[0]} to "
                         f"{ds[time].values[-1]})")
    return out
