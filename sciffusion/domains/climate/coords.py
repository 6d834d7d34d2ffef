"""Which dims of a gridded dataset are time, latitude and longitude (CF attributes first, then the usual names),
and a time's identity as a string."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

LAT_NAMES = ("lat", "latitude", "y", "nav_lat", "rlat")
LON_NAMES = ("lon", "longitude", "x", "nav_lon", "rlon")
_LAT_UNITS = ("degrees_north", "degree_north", "degrees_n", "degree_n")
_LON_UNITS = ("degrees_east", "degree_east", "degrees_e", "degree_e")
_METRES = {"m", "meter", "meters", "metre", "metres", "km", "kilometer", "kilometers", "kilometre", "kilometres"}


def find_axis(ds: xr.Dataset | xr.DataArray, kind: str) -> str:
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


def true_latitude(ds: xr.Dataset | xr.DataArray, lat: str, lon: str) -> str | None:
    """The 2-D auxiliary coordinate on ``(lat, lon)`` that holds the geographic latitude of a rotated-pole or
    curvilinear grid (CF ``standard_name: latitude``, or named lat/latitude/nav_lat), if there is one."""
    for name in ds.coords:
        c = ds[name]
        if c.ndim == 2 and set(map(str, c.dims)) == {lat, lon} and (
                c.attrs.get("standard_name") == "latitude" or str(name).lower() in ("lat", "latitude", "nav_lat")):
            return str(name)
    return None


def is_projected(ds: xr.Dataset | xr.DataArray, dim: str) -> bool:
    """Whether ``dim`` is a projection coordinate (x or y in metres, CF ``projection_x/y_coordinate``)."""
    a = ds[dim].attrs if dim in ds.coords else {}
    return (str(a.get("standard_name", "")).startswith("projection_")
            or str(a.get("units", "")).strip().lower() in _METRES)


def is_rotated(ds: xr.Dataset | xr.DataArray, lat: str, lon: str) -> bool:
    """Whether the grid's dims are rotated-pole coordinates (CF ``grid_latitude``) or come with a 2-D true
    latitude: then longitude does not wrap around the globe along the dim."""
    a = ds[lat].attrs if lat in ds.coords else {}
    return a.get("standard_name") == "grid_latitude" or true_latitude(ds, lat, lon) is not None


def grid_weights(ds: xr.Dataset | xr.DataArray, lat: str, lon: str) -> tuple[xr.DataArray | None, str]:
    """Cell weights on ``(lat, lon)`` (not normalised) and what they are, for grids whose dims are not geographic
    latitude: ``cos(true latitude)`` from a 2-D latitude coordinate, or uniform for a projected grid without one
    (equal-area cells assumed, and said). ``(None, "cos(latitude)")`` for a latitude dim: its cosine applies."""
    aux = true_latitude(ds, lat, lon)
    if aux is not None:
        w = np.cos(np.deg2rad(ds[aux].astype(np.float64))).clip(min=0).reset_coords(drop=True)
        return w.transpose(lat, lon), f"cos(true latitude {aux!r})"
    if is_projected(ds, lat) or is_projected(ds, lon):
        ones = xr.DataArray(np.ones((ds.sizes[lat], ds.sizes[lon])), dims=(lat, lon))
        return ones, "uniform (projected grid without a 2-D latitude)"
    return None, "cos(latitude)"


def area_weights_of(ds: xr.Dataset | xr.DataArray, lat: str, lon: str) -> tuple[np.ndarray | None, str]:
    """:func:`grid_weights` as a ``(lat, lon)`` array of mean 1 (a grid's stored weights)."""
    w, what = grid_weights(ds, lat, lon)
    return (None, what) if w is None else (w.values / float(w.mean()), what)
