"""Vertical levels as channels: a variable on (time, level, lat, lon) becomes one (time, lat, lon) variable per level.

The networks see channels, so the one place that knows about levels is here: :func:`split_levels` turns every
variable with a vertical dim into one *channel variable* per level (lazily: each is an ``isel`` view of the file), and
:func:`stack_levels` puts the level dim back on an output, with the input's name, values, dtype and attributes.
A channel variable is named ``{variable}_{level:g}`` (``t_850``, ``ta_50000``) and carries its origin in one JSON
attribute (:data:`LEVEL_ATTR`), so the origin travels with the variable through the run's metadata and every
output built from its attributes.

A dim is vertical when its coordinate says so in CF terms (``axis: Z``, a ``positive`` attribute, a vertical
``standard_name``) or when its name is one of :data:`VERTICAL_NAMES` (ERA5's ``pressure_level``, WeatherBench 2's
``level``, CMIP's ``plev``, GRIB's ``isobaricInhPa``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import xarray as xr

VERTICAL_NAMES = ("level", "levels", "plev", "pressure_level", "pressure", "lev", "isobaricinhpa", "height", "depth",
                  "altitude", "levelist", "model_level", "hybrid", "olevel", "alevel")
VERTICAL_STANDARD_NAMES = ("air_pressure", "height", "depth", "altitude", "model_level_number", "geopotential_height",
                           "atmosphere_hybrid_sigma_pressure_coordinate", "atmosphere_sigma_coordinate",
                           "ocean_sigma_coordinate", "ocean_s_coordinate", "height_above_reference_ellipsoid")
LEVEL_ATTR = "sciffusion_level"
"""Attribute of a channel variable: JSON ``{"variable", "dim", "value", "dtype", "coord_attrs"}``."""


def is_vertical(ds: xr.Dataset | xr.DataArray, dim: str) -> bool:
    """Whether ``dim`` is a vertical coordinate (CF attributes first, then the usual names)."""
    if dim in ds.coords:
        a = ds[dim].attrs
        if (str(a.get("axis", "")).upper() == "Z" or "positive" in a
                or a.get("standard_name") in VERTICAL_STANDARD_NAMES):
            return True
    return dim.lower() in VERTICAL_NAMES


def channel_name(variable: str, value: float) -> str:
    """The channel variable of ``variable`` at level ``value``: ``t_850``, ``ta_50000``, ``tas_1.5``."""
    return f"{variable}_{float(value):g}"


def level_of(da: xr.DataArray) -> dict[str, Any] | None:
    """The origin of a channel variable (see :data:`LEVEL_ATTR`), or None for a variable without levels."""
    raw = da.attrs.get(LEVEL_ATTR)
    return json.loads(raw) if raw else None


def _pick(coord: xr.DataArray, wanted: Sequence[float], variable: str) -> list[int]:
    """Positions of ``wanted`` levels in ``coord``; a level given in hPa is found in a coordinate in Pa."""
    values = np.asarray(coord.values, dtype=np.float64)
    units = str(coord.attrs.get("units", "")).strip()
    out = []
    for w in wanted:
        hit = np.flatnonzero(np.isclose(values, w, rtol=1e-6, atol=1e-9))
        if not len(hit) and units == "Pa":  # --levels 500 850 means hPa to everyone; CMIP stores Pa
            hit = np.flatnonzero(np.isclose(values, 100.0 * w, rtol=1e-6))
        if len(hit):
            out.append(int(hit[0]))
    if not out:
        have = ", ".join(f"{v:g}" for v in values)
        raise ValueError(f"none of the levels {', '.join(f'{w:g}' for w in wanted)} is in {variable!r}'s "
                         f"{coord.name!r} (it has {have}{' ' + units if units else ''})")
    return out


def split_levels(ds: xr.Dataset, keep: Collection[str] | None = None, levels: Sequence[float] | None = None,
                 ) -> xr.Dataset:
    """Every data variable with a vertical dim becomes one channel variable per level, in level order.

    ``keep``: the dims every variable may have besides its vertical one (e.g. time, lat, lon); a variable with any
    other dim of size 1 has it squeezed out, one of a larger size is an error naming it. ``None`` keeps every dim
    that is not vertical. ``levels`` (values; hPa also finds Pa) selects levels; each must be in some variable.
    Nothing is read: the channels are lazy views of ``ds``.
    """
    out: dict[str, xr.DataArray] = {}
    found: set[float] = set()
    for v in ds.data_vars:
        da = ds[v]
        extra = [d for d in da.dims if keep is not None and d not in keep and not is_vertical(ds, str(d))]
        for d in extra:
            if da.sizes[d] != 1:
                raise ValueError(f"variable {v!r} has a dim {d!r} of size {da.sizes[d]} that is neither time, "
                                 f"latitude, longitude nor a vertical level; select one {d} first")
            da = da.isel({d: 0}, drop=True)
        vertical = [str(d) for d in da.dims if (keep is None or d not in keep) and is_vertical(ds, str(d))]
        if len(vertical) > 1:
            raise ValueError(f"variable {v!r} has several vertical dims {vertical}; keep one")
        if not vertical:
            out[str(v)] = da
            continue
        dim = vertical[0]
        coord = ds[dim] if dim in ds.coords else xr.DataArray(np.arange(ds.sizes[dim]), dims=dim, name=dim)
        index = range(da.sizes[dim]) if levels is None else _pick(coord, levels, str(v))
        for i in index:
            value = float(coord.values[i])
            found.add(value)
            name = channel_name(str(v), value)
            if name in ds.data_vars:
                raise ValueError(f"variable {v!r} at level {value:g} would be named {name!r}, which the data "
                                 f"already hold; rename one")
            origin = {"variable": str(v), "dim": dim, "value": value, "dtype": str(coord.dtype),
                      "coord_attrs": {k: _plain(a) for k, a in coord.attrs.items()}}
            ch = da.isel({dim: i}, drop=True)
            ch.attrs = {**da.attrs, LEVEL_ATTR: json.dumps(origin)}
            ch.encoding = {}  # the source's packing (int16, scale_factor) must not follow the channel into outputs
            out[name] = ch
    if levels is not None:
        pa = [w for w in levels if not any(np.isclose(w, f) or np.isclose(100.0 * w, f) for f in found)]
        if pa:
            raise ValueError(f"level(s) {', '.join(f'{w:g}' for w in pa)} are in no variable of the data")
    coords = {c: ds.coords[c] for c in ds.coords if not any(is_vertical(ds, str(d)) for d in ds[c].dims)}
    return xr.Dataset(out, coords=coords, attrs=ds.attrs)


def _plain(a: Any) -> Any:
    """An attribute value JSON can hold (numpy scalars and arrays become Python numbers and lists)."""
    if isinstance(a, np.ndarray):
        return a.tolist()
    if isinstance(a, np.generic):
        return a.item()
    return a


def stack_levels(ds: xr.Dataset) -> xr.Dataset:
    """The inverse of :func:`split_levels` on any dataset whose variables carry :data:`LEVEL_ATTR`: the channels of
    one variable are joined along its level dim (placed before the last two, horizontal, dims) with the level
    coordinate's values, dtype and attributes. Variables without levels are left as they are, in their order."""
    groups: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    order: list[str] = []
    for v in ds.data_vars:
        origin = level_of(ds[v])
        key = str(v) if origin is None else origin["variable"]
        if key not in groups:
            groups[key] = []
            order.append(key)
        if origin is not None:
            groups[key].append((origin["value"], str(v), origin))
    if all(not g for g in groups.values()):
        return ds
    out: dict[str, xr.DataArray] = {}
    for key in order:
        if not groups[key]:
            out[key] = ds[key]
            continue
        first = groups[key][0][2]
        dim = first["dim"]
        values = np.asarray([g[0] for g in groups[key]], dtype=first["dtype"])
        parts = [ds[name] for _, name, _ in groups[key]]
        da = xr.concat(parts, dim=dim, coords="minimal", compat="override", join="override")
        da = da.assign_coords({dim: (dim, values, first["coord_attrs"])})
        dims = list(parts[0].dims)
        da = da.transpose(*dims[:-2], dim, *dims[-2:]) if len(dims) >= 2 else da
        da.attrs = {k: a for k, a in parts[0].attrs.items() if k != LEVEL_ATTR}
        da.name = key
        out[key] = da
    return xr.Dataset(out, attrs=ds.attrs)
