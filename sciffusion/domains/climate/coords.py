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
