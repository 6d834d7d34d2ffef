"""Small files in the layouts users download: Copernicus ERA5 netCDF, WeatherBench 2 zarr, CMIP6 netCDF.

Each builder returns ``(dataset, encoding)``; the fields are a seasonal cycle plus AR(1) noise on every level, so a
forecast has something to learn and a baseline something to beat. Names, dims, dtypes and attributes follow what the
archives write (see ../shared/field-notes.md, "Users' archives").
"""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import xarray as xr


def field_array(n_time: int, n_lev: int, lat: np.ndarray, n_lon: int, phase: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = np.zeros((n_time, n_lev, len(lat), n_lon))
    for i in range(1, n_time):
        noise[i] = 0.8 * noise[i - 1] + 0.6 * rng.normal(size=noise.shape[1:])
    cycle = 10 * np.cos(phase)[:, None, None, None]
    merid = -30 * np.abs(np.sin(np.deg2rad(lat)))[None, None, :, None]
    return 280 + cycle + merid - 8.0 * np.arange(n_lev)[None, :, None, None] + noise


def era5(start: str = "2000-01-01", periods: int = 120, levels=(1000, 850, 500), nlat: int = 9, nlon: int = 16,
         seed: int = 0, freq: str = "D") -> tuple[xr.Dataset, dict]:
    """The new Copernicus data store's ERA5 netCDF: ``valid_time`` (seconds since 1970), ``pressure_level`` in hPa,
    latitude descending 90..-90, longitude 0..360, int16 packing, scalar ``number`` and per-time ``expver`` (a
    string variable); ``freq`` "D" (daily) or "MS" (monthly means, stamped at the month's start)."""
    t = pd.date_range(start, periods=periods, freq=freq)
    lat, lon = np.linspace(90, -90, nlat), np.arange(nlon) * (360 / nlon)
    temp = field_array(periods, len(levels), lat, nlon, 2 * np.pi * np.asarray(t.day_of_year) / 365.25, seed)
    t2m = temp[:, 0] + 2.0
    ds = xr.Dataset(
        {"t": (("valid_time", "pressure_level", "latitude", "longitude"), temp.astype("float32"),
               {"units": "K", "long_name": "Temperature", "standard_name": "air_temperature", "GRIB_paramId": 130}),
         "t2m": (("valid_time", "latitude", "longitude"), t2m.astype("float32"),
                 {"units": "K", "long_name": "2 metre temperature", "GRIB_paramId": 167})},
        coords={"number": ((), 0, {"long_name": "ensemble member numerical id", "units": "1"}),
                "valid_time": ("valid_time", t, {"standard_name": "time", "long_name": "time"}),
                "pressure_level": ("pressure_level", np.asarray(levels, "float64"),
                                   {"units": "hPa", "long_name": "pressure", "positive": "down",
                                    "standard_name": "air_pressure", "stored_direction": "decreasing"}),
                "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"}),
                "expver": ("valid_time", np.array(["0001"] * periods), {"long_name": "Experiment version"})},
        attrs={"GRIB_centre": "ecmf", "Conventions": "CF-1.7",
               "institution": "European Centre for Medium-Range Weather Forecasts",
               "history": "2024-06-01T00:00 GRIB to CDM+CF via cfgrib-0.9.15.0/ecCodes-2.36.0"})
    enc: dict = {"valid_time": {"units": "seconds since 1970-01-01", "dtype": "int64"}}
    for v in ("t", "t2m"):
        lo, hi = float(ds[v].min()) - 1, float(ds[v].max()) + 1
        enc[v] = {"dtype": "int16", "scale_factor": (hi - lo) / 65000, "add_offset": (hi + lo) / 2,
                  "_FillValue": np.int16(-32767)}
    return ds, enc


def wb2(start: str = "2000-01-01", periods: int = 120, levels=(300, 500, 850), nlat: int = 8, nlon: int = 16,
        seed: int = 1) -> tuple[xr.Dataset, dict]:
    """WeatherBench 2's zarr: ``time``, ``level`` (int hPa), ascending ``latitude``, ``longitude``, long CF names."""
    t = pd.date_range(start, periods=periods, freq="D")
    lat = np.linspace(-78.75, 78.75, nlat)
    lon = np.arange(nlon) * (360 / nlon)
    temp = field_array(periods, len(levels), lat, nlon, 2 * np.pi * np.asarray(t.day_of_year) / 365.25, seed)
    ds = xr.Dataset(
        {"temperature": (("time", "level", "latitude", "longitude"), temp.astype("float32"),
                         {"units": "K", "long_name": "Temperature", "standard_name": "air_temperature"}),
         "geopotential": (("time", "level", "latitude", "longitude"), (9.81 * 10 * temp).astype("float32"),
                          {"units": "m**2 s**-2", "long_name": "Geopotential", "standard_name": "geopotential"}),
         "2m_temperature": (("time", "latitude", "longitude"), (temp[:, -1] + 3).astype("float32"),
                            {"units": "K", "long_name": "2 metre temperature"})},
        coords={"time": t, "level": ("level", np.asarray(levels, "int64")),
                "latitude": ("latitude", lat), "longitude": ("longitude", lon)})
    return ds, {}


def cmip6(start_year: int = 2000, months: int = 72, plev=(85000.0, 50000.0, 25000.0), nlat: int = 6, nlon: int = 12,
          seed: int = 2) -> tuple[xr.Dataset, dict]:
    """A CMIP6 monthly file: ``noleap`` cftime calendar, ``plev`` in Pa (descending pressure), ``lat_bnds``,
    ``lon_bnds``, ``time_bnds``, ``cell_methods`` on time and area."""
    t = [cftime.DatetimeNoLeap(start_year + m // 12, m % 12 + 1, 16) for m in range(months)]
    tb = [[cftime.DatetimeNoLeap(start_year + m // 12, m % 12 + 1, 1),
           cftime.DatetimeNoLeap(start_year + (m + 1) // 12, (m + 1) % 12 + 1, 1)] for m in range(months)]
    dlat = 180 / nlat
    lat = -90 + dlat / 2 + dlat * np.arange(nlat)
    lon = (360 / nlon) * (np.arange(nlon) + 0.5)
    ta = field_array(months, len(plev), lat, nlon, 2 * np.pi * (np.arange(months) % 12) / 12, seed)
    ds = xr.Dataset(
        {"ta": (("time", "plev", "lat", "lon"), ta.astype("float32"),
                {"standard_name": "air_temperature", "units": "K", "cell_methods": "time: mean",
                 "cell_measures": "area: areacella"}),
         "time_bnds": (("time", "bnds"), tb),
         "lat_bnds": (("lat", "bnds"), np.stack([lat - dlat / 2, lat + dlat / 2], 1)),
         "lon_bnds": (("lon", "bnds"), np.stack([lon - 180 / nlon, lon + 180 / nlon], 1))},
        coords={"time": ("time", t, {"bounds": "time_bnds", "axis": "T", "standard_name": "time"}),
                "plev": ("plev", np.asarray(plev), {"units": "Pa", "axis": "Z", "positive": "down",
                                                     "standard_name": "air_pressure"}),
                "lat": ("lat", lat, {"bounds": "lat_bnds", "units": "degrees_north", "axis": "Y"}),
                "lon": ("lon", lon, {"bounds": "lon_bnds", "units": "degrees_east", "axis": "X"})},
        attrs={"Conventions": "CF-1.7 CMIP-6.2", "source_id": "TOY-1-0", "experiment_id": "historical"})
    enc = {"time": {"units": "days since 1850-01-01", "calendar": "noleap"},
           "time_bnds": {"units": "days since 1850-01-01", "calendar": "noleap"}}
    return ds, enc


def ar1_monthly(months: int, seed: int = 0) -> xr.Dataset:
    """``tas`` (K): per-cell AR(1) anomalies (phi 0.6) around 288 K on a 4 x 8 global grid, ``months`` monthly steps
    from 2000-01: something a forecaster can learn and persistence can be beaten on."""
    rng = np.random.default_rng(seed)
    a = np.zeros((months, 4, 8))
    for i in range(1, months):
        a[i] = 0.6 * a[i - 1] + rng.normal(size=(4, 8))
    return xr.Dataset({"tas": (("time", "lat", "lon"), (288 + a).astype("float32"), {"units": "K"})},
                      coords={"time": pd.date_range("2000-01", periods=months, freq="MS"),
                              "lat": np.linspace(-60, 60, 4), "lon": np.arange(8) * 45.0})


def by_year(ds: xr.Dataset, enc: dict, stem, time: str) -> list:
    """Write ``ds`` as one file per calendar year (``stem_2000.nc`` ...), as the Copernicus data store delivers a
    long request; returns the paths."""
    paths = []
    for year, part in ds.groupby(f"{time}.year"):
        p = f"{stem}_{year}.nc"
        part.to_netcdf(p, encoding=enc)
        paths.append(p)
    return paths


def split_by_time(ds: xr.Dataset, enc: dict, pieces: int, stem, time: str) -> list:
    """Write ``ds`` as ``pieces`` files along time (``stem_0.nc`` ...), as archives come; returns the paths."""
    paths = []
    for i, part in enumerate(np.array_split(np.arange(ds.sizes[time]), pieces)):
        p = f"{stem}_{i}.nc"
        ds.isel({time: part}).to_netcdf(p, encoding=enc)
        paths.append(p)
    return paths
