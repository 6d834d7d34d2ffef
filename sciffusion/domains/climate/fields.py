"""Gridded fields in and out: find time/lat/lon in any CF-ish netCDF/zarr, make the grid canonical, write atomically.

Canonical means: latitude ascending, longitude sorted within one convention (``[0, 360)`` unless the input has
negative longitudes, then ``[-180, 180)``), time strictly increasing. A grid that covers all longitudes with even
spacing is *global* (the U-Net then wraps around in longitude); any other grid is regional.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

LAT_NAMES = ("lat", "latitude", "y", "nav_lat", "rlat")
LON_NAMES = ("lon", "longitude", "x", "nav_lon", "rlon")
_LAT_UNITS = ("degrees_north", "degree_north", "degrees_n", "degree_n")
_LON_UNITS = ("degrees_east", "degree_east", "degrees_e", "degree_e")


def _find(ds: xr.Dataset | xr.DataArray, kind: str) -> str:
    names, units = (LAT_NAMES, _LAT_UNITS) if kind == "latitude" else (LON_NAMES, _LON_UNITS)
    dims = list(ds.dims)
    for d in dims:  # CF attributes first: they are what the file says
        if d in ds.coords:
            a = ds[d].attrs
            if a.get("standard_name") == kind or str(a.get("units", "")).lower() in units or a.get("axis") == (
                    "Y" if kind == "latitude" else "X"):
                return d
    for d in dims:
        if d.lower() in names:
            return d
    raise ValueError(f"no {kind} dimension found (looked for CF attributes and names {', '.join(names)}); "
                     f"dims are {dims}")


def time_key(t: Any) -> str:
    """A time's identity as a string, the same for numpy, pandas and cftime times of one instant
    (``2030-07-01T00:00:00``): the key of its members' seeds, so they do not depend on where it sits in a file."""
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t.astype("datetime64[s]"), unit="s"))
    iso = getattr(t, "isoformat", None)
    return str(iso()).replace(" ", "T")[:19] if iso is not None else str(t)


def find_time(ds: xr.Dataset | xr.DataArray) -> str:
    for d in ds.dims:
        if d in ds.coords and (ds[d].attrs.get("standard_name") == "time" or ds[d].attrs.get("axis") == "T"
                               or np.issubdtype(ds[d].dtype, np.datetime64) or ds[d].dtype == object):
            return d
    if "time" in ds.dims:
        return "time"
    raise ValueError(f"no time dimension found; dims are {list(ds.dims)}")


@dataclass(frozen=True)
class Grid:
    """Names and values of the spatial coordinates of a run; compared against every later input."""

    time: str
    lat: str
    lon: str
    lat_values: tuple[float, ...]
    lon_values: tuple[float, ...]
    periodic: bool

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat_values), len(self.lon_values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        return cls(d["time"], d["lat"], d["lon"], tuple(d["lat_values"]), tuple(d["lon_values"]), bool(d["periodic"]))

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


def _is_global(lon: np.ndarray) -> bool:
    if len(lon) < 3:
        return False
    step = np.diff(lon)
    return bool(np.allclose(step, step[0], rtol=1e-3) and abs(len(lon) * step[0] - 360.0) < 0.5 * step[0])


def canonical(ds: xr.Dataset, variables: Sequence[str] | None = None) -> tuple[xr.Dataset, Grid]:
    """Select ``variables``, check dims, sort latitude, normalise and sort longitude, check time.

    Every selected variable must have exactly the dims (time, lat, lon), in any order; it is returned as
    ``(time, lat, lon)``. Attributes of the dataset, variables and coordinates are kept.
    """
    if variables is not None:
        if isinstance(variables, str):
            variables = [variables]
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise ValueError(f"variable(s) {missing} not in the data; it has {sorted(map(str, ds.data_vars))}")
        ds = ds[list(variables)]
    else:
        ds = ds[[v for v in ds.data_vars if ds[v].ndim >= 3]]
        if not ds.data_vars:
            raise ValueError("the data hold no (time, lat, lon) variable")
    time, lat, lon = find_time(ds), _find(ds, "latitude"), _find(ds, "longitude")
    for v in ds.data_vars:
        if set(ds[v].dims) != {time, lat, lon}:
            raise ValueError(f"variable {v!r} has dims {ds[v].dims}; need exactly ({time}, {lat}, {lon})")
    ds = ds.transpose(time, lat, lon)
    t = ds[time].values
    if len(t) > 1 and not all(a < b for a, b in zip(t[:-1], t[1:])):
        raise ValueError(f"time coordinate {time!r} is not strictly increasing (sort it or remove duplicates)")
    ds = ds.sortby(lat)
    lon_vals = ds[lon].values.astype(np.float64)
    wrapped = (lon_vals + 180.0) % 360.0 - 180.0 if (lon_vals < 0).any() else lon_vals % 360.0
    if not np.array_equal(wrapped, lon_vals):
        ds = ds.assign_coords({lon: (lon, wrapped.astype(ds[lon].dtype), ds[lon].attrs)})
    ds = ds.sortby(lon)
    lon_sorted = ds[lon].values.astype(np.float64)
    if len(np.unique(lon_sorted)) != len(lon_sorted):
        raise ValueError(f"longitude {lon!r} has duplicate values after wrapping into one 360-degree range")
    grid = Grid(time, lat, lon, tuple(map(float, ds[lat].values)), tuple(map(float, lon_sorted)),
                _is_global(lon_sorted))
    return ds, grid


def static_field(da: xr.DataArray, grid: Grid) -> np.ndarray:
    """A (lat, lon) field (land-sea mask, orography) on ``grid``: latitude sorted and longitude wrapped as the data
    were, then checked against the grid's coordinates. Returns ``(lat, lon)`` float64."""
    da = da.squeeze(drop=True)
    lat, lon = _find(da, "latitude"), _find(da, "longitude")
    if da.ndim != 2:
        raise ValueError(f"static field {da.name!r} has dims {da.dims}; need (lat, lon)")
    ds, _ = canonical(da.expand_dims(time=[0]).to_dataset(name="f").assign_coords(
        time=("time", [0], {"axis": "T"})), ["f"])
    g = Grid(grid.time, lat, lon, tuple(map(float, ds[lat].values)), tuple(map(float, ds[lon].values)), grid.periodic)
    grid.check(g, f"static field {da.name!r}")
    return ds["f"].values[0].astype(np.float64)


def open_fields(path: str | os.PathLike, variables: Sequence[str] | None = None,
                chunks: dict[str, int] | None = None) -> tuple[xr.Dataset, Grid]:
    """Open a netCDF file (or zarr store) lazily and make it canonical (see :func:`canonical`).

    Nothing is read into memory here; samples are read on demand. ``chunks`` (e.g. ``{"time": 64}``) opens with dask
    when it is installed, for reductions over archives larger than memory.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    kw: dict[str, Any] = {"decode_times": xr.coders.CFDatetimeCoder(use_cftime=None)}
    if chunks is not None:
        kw["chunks"] = chunks
    try:
        ds = xr.open_zarr(path, **kw) if path.suffix == ".zarr" or path.is_dir() else xr.open_dataset(path, **kw)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot read {path} as netCDF/zarr: {first[:200]}") from None
    return canonical(ds, variables)
