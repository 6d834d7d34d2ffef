"""Where gridded data come from: a netCDF file, a zarr store, a glob, several files, or an fsspec URL, as one lazy
dataset.

Users download archives as one file per month or year (ERA5 from the Copernicus data store), read WeatherBench 2 or
CMIP6 from a zarr store, or point at cloud storage. :func:`open_source` turns any of these into one
:class:`xarray.Dataset` without reading data values: files are checked against each other (same variables, grid and
levels; no overlapping or repeated times) and joined along time with dask, as ``open_mfdataset`` would, but with
errors that name the files that disagree. Reading several files or a URL needs the ``climate`` extra (dask, zarr,
fsspec); a URL needs its protocol's backend too (gcsfs for ``gs://``, s3fs for ``s3://``, aiohttp for ``https://``).

A local netCDF file is opened once per process (:func:`netcdf_store`), however many times a command asks for the
source (a forecast in batches, ``evaluate --nfe``, a Python session that forecasts twice). Two live netCDF-C handles
on one HDF5 file crash the interpreter once one of them is closed and the file opened again: a Copernicus ERA5
download (with its string ``expver`` coordinate) killed ``sciffusion forecast`` with SIGSEGV at its second batch of
initial times (netcdf4-python issue 1444, xarray issue 8289). Everything that touches that handle, data reads from
dask's threads, the metadata read when a dataset is made from it, and closing it, holds :data:`NETCDF_LOCK`:
xarray's global netCDF-C + HDF5 lock (the one its netCDF writer takes), made reentrant so that it can be held around
xarray's own calls. xarray locks data reads only, not the metadata it reads while opening: threads that opened the
archive while others read it crashed (SIGSEGV or SIGBUS) in a test before the open took the lock too.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .coords import find_time

Source = str | os.PathLike | Sequence[str | os.PathLike]
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_EXTRA = "pip install 'sciffusion[climate]'"


def is_url(s: str) -> bool:
    return bool(_URL.match(s)) and not s.startswith("file://")


def expand(data: Source) -> list[str]:
    """The files (or stores, or URLs) named by ``data``: a path, a glob pattern, a URL, or a list of them, in the
    order given (a glob's matches sorted). Missing files and globs that match nothing are errors."""
    if not isinstance(data, (str, os.PathLike, list, tuple)):  # an array, a DataArray, a number: say what is taken
        raise TypeError(f"data must be a path, a glob, a URL, a list of them or an xarray Dataset; got "
                        f"{type(data).__module__}.{type(data).__name__}")
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise ValueError("no data given")
    bad = [type(i).__name__ for i in items if not isinstance(i, (str, os.PathLike))]
    if bad:
        raise TypeError(f"data must be paths, globs or URLs; the list holds a {bad[0]}")
    out: list[str] = []
    for item in items:
        s = os.fspath(item)
        if s.startswith("file://"):
            s = s[len("file://"):]
        if is_url(s):
            out += _url_glob(s) if any(c in s for c in "*?[") else [s]
        elif any(c in s for c in "*?["):
            hits = sorted(glob.glob(os.path.expanduser(s)))
            if not hits:
                raise FileNotFoundError(f"no file matches {s!r}")
            out += hits
        elif not os.path.exists(os.path.expanduser(s)):
            raise FileNotFoundError(f"data file {s} does not exist")
        else:
            out.append(os.path.expanduser(s))
    return list(dict.fromkeys(out))


def _fsspec(url: str) -> Any:
    """fsspec's filesystem for ``url``, or a one-line error naming what to install."""
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"reading {url} needs fsspec: {_EXTRA}") from None
    protocol = url.split("://", 1)[0]
    try:
        return fsspec.filesystem(protocol)
    except ImportError as e:  # fsspec knows the protocol, its backend package is missing
        raise ValueError(f"reading {protocol}:// URLs needs a backend that is not installed: "
                         f"{str(e).splitlines()[0]}") from None
    except ValueError:
        raise ValueError(f"unknown URL protocol {protocol!r} in {url}") from None


def _url_glob(url: str) -> list[str]:
    fs = _fsspec(url)
    protocol = url.split("://", 1)[0]
    hits = sorted(fs.glob(url))
    if not hits:
        raise FileNotFoundError(f"no file matches {url!r}")
    return [h if is_url(h) else f"{protocol}://{h.lstrip('/') if protocol != 'memory' else h}" for h in hits]


def _is_zarr(s: str) -> bool:
    s = s.rstrip("/")
    return s.endswith(".zarr") or (not is_url(s) and os.path.isdir(s))


def _has_dask() -> bool:
    try:
        import dask  # noqa: F401
    except ImportError:
        return False
    return True


class ReentrantLock:
    """A lock that the thread holding it may take again (a count per thread), over another lock. xarray's global
    netCDF locks are plain locks; its file manager takes the store's lock inside calls around which this module
    holds it too (opening a dataset), so the store's lock must be reentrant, and it must be xarray's lock underneath,
    so that xarray's own netCDF writer and these reads exclude each other."""

    def __init__(self, lock: Any) -> None:
        self._lock, self._owner, self._depth = lock, None, 0

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        if not self._lock.acquire(blocking):
            return False
        self._owner, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("release of a netCDF lock this thread does not hold")
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()

    def locked(self) -> bool:
        return self._owner is not None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _the_netcdf_lock, ()  # a store sent to another process (dask.distributed) uses that process's lock


def _xarray_netcdf_lock() -> Any:
    from xarray.backends.locks import HDF5_LOCK, NETCDFC_LOCK, combine_locks

    return combine_locks([NETCDFC_LOCK, HDF5_LOCK])


NETCDF_LOCK = ReentrantLock(_xarray_netcdf_lock())  # every use of a netCDF source's handle (module docstring)


def _the_netcdf_lock() -> ReentrantLock:
    return NETCDF_LOCK
_STORES: dict[str, tuple[tuple[int, int, int], Any]] = {}  # real path -> (file identity, its open store)
_STORES_LOCK = threading.Lock()


def netcdf_store(path: str) -> Any:
    """The one open netCDF store (xarray's ``NetCDF4DataStore``) of the local file ``path`` in this process: every
    dataset made from ``path`` shares its netCDF-C handle (see the module docstring). A file replaced or rewritten
    since (another inode, size or modification time) gets a new store, its old handle closed first. The store reads
    under :data:`NETCDF_LOCK`; closing a dataset made from it closes the handle, and the next read opens it again."""
    from xarray.backends import NetCDF4DataStore

    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _STORES_LOCK, NETCDF_LOCK:
        held = _STORES.get(real)
        if held is not None and held[0] == stamp:
            return held[1]
        if held is not None:
            del _STORES[real]
            held[1].close()
        store = NetCDF4DataStore.open(real, mode="r", lock=NETCDF_LOCK)
        _STORES[real] = (stamp, store)
        return store


def open_one(s: str, chunks: dict[str, int] | None = None) -> xr.Dataset:
    """One netCDF file or zarr store (local or URL), lazily: values are read on demand (with dask when ``chunks``
    is given). CF decoding as xarray does it (packed int16 with scale_factor/add_offset becomes float; cftime for
    non-standard calendars)."""
    kw: dict[str, Any] = {"decode_times": xr.coders.CFDatetimeCoder(use_cftime=None), "chunks": chunks}
    try:
        if _is_zarr(s):
            if is_url(s):
                _fsspec(s)
            try:
                import zarr  # noqa: F401
            except ImportError:
                raise ValueError(f"reading the zarr store {s} needs zarr: {_EXTRA}") from None
            return xr.open_zarr(s, **kw)
        if is_url(s):
            fs = _fsspec(s)
            return xr.open_dataset(fs.open(s, "rb"), **kw)
        with NETCDF_LOCK:  # xarray reads the file's metadata here without a lock of its own
            return xr.open_dataset(netcdf_store(s), **kw)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, ValueError) and str(e).startswith(("reading ", "unknown URL")):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot read {s} as netCDF/zarr: {first[:200]}") from None


def open_source(data: Source | xr.Dataset, chunks: dict[str, int] | None = None) -> xr.Dataset:
    """``data`` as one lazy dataset (see the module docstring). An in-memory dataset is returned as it is."""
    if isinstance(data, xr.Dataset):
        return data
    paths = expand(data)
    if len(paths) == 1:
        return open_one(paths[0], chunks)
    if not _has_dask():
        raise ValueError(f"reading {len(paths)} files as one dataset needs dask: {_EXTRA}")
    return join_in_time([open_one(p, chunks or {}) for p in paths], paths)


def join_in_time(parts: list[xr.Dataset], names: Sequence[str]) -> xr.Dataset:
    """Files of one archive, each a stretch of time, as one dataset in time order: same variables, same
    coordinates on every other dim, no time step in two files."""
    time = find_time(parts[0])
    first = parts[0]
    timed = sorted(str(v) for v in first.data_vars if time in first[v].dims)
    for p, name in zip(parts[1:], names[1:]):
        if find_time(p) != time:
            raise ValueError(f"{name} has time dim {find_time(p)!r} where {names[0]} has {time!r}")
        other = sorted(str(v) for v in p.data_vars if time in p[v].dims)
        if other != timed:
            raise ValueError(f"{name} holds variables {other} where {names[0]} holds {timed}")
        for d in first.dims:
            if d == time or d not in first.coords:
                continue
            if d not in p.coords or p.sizes[d] != first.sizes[d] or not _same(p[d].values, first[d].values):
                raise ValueError(f"{name} has other {d!r} coordinates than {names[0]} (grids or levels differ)")
    order = sorted(range(len(parts)), key=lambda i: _first_time(parts[i], time))
    for a, b in zip(order[:-1], order[1:]):
        ta, tb = parts[a][time].values, parts[b][time].values
        if len(ta) and len(tb) and not ta[-1] < tb[0]:
            raise ValueError(f"{names[a]} and {names[b]} overlap in time ({names[a]} ends {ta[-1]}, {names[b]} "
                             f"starts {tb[0]}); give each time step once")
    return xr.concat([parts[i] for i in order], dim=time, data_vars="minimal", coords="minimal",
                     compat="override", join="override", combine_attrs="override")


def _first_time(ds: xr.Dataset, time: str) -> Any:
    t = ds[time].values
    return t[0] if len(t) else np.datetime64("NaT")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number):
        return bool(np.allclose(a, b, atol=1e-6))
    return bool(np.array_equal(a, b))
