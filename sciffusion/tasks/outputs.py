"""What every task writes: netCDF outputs (atomically, tagged with the task), fitted state tensors, score tables."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import pathlib
import shutil
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..training.checkpoint import atomic_write, remove_stale_temps
from ..training.sampling import SamplingSpec

SEED_ATTR, SAMPLING_ATTR = "sciffusion_seed", "sciffusion_sampling"


def provenance(seed: int, spec: SamplingSpec | None) -> dict[str, Any]:
    """The attributes every sampled output records: the seed it was drawn with and the sampling spec (JSON)."""
    attrs: dict[str, Any] = {SEED_ATTR: int(seed)}
    if spec is not None:
        attrs[SAMPLING_ATTR] = json.dumps(spec.to_dict(), sort_keys=True)
    return attrs


def recorded_seed(attrs: dict[str, Any], given: int | None) -> int:
    """The seed an output was made with (what ``evaluate`` must reuse for baselines paired with its members);
    ``given`` only for files that do not record one. A different ``given`` is refused, not silently used."""
    if SEED_ATTR not in attrs:
        return int(given or 0)
    seed = int(attrs[SEED_ATTR])
    if given is not None and int(given) != seed:
        raise ValueError(f"the file was made with --seed {seed}; its paired baselines use that seed, not {given}")
    return seed


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> pathlib.Path:
    """Write ``ds`` to ``path`` atomically (a killed job leaves the old file or none, never half a file)."""
    path = pathlib.Path(path)
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, format="NETCDF4"))
    return path


def write_in_batches(batches: Iterable[xr.Dataset], path: str | os.PathLike, dim: str) -> pathlib.Path:
    """Write datasets that follow each other along ``dim`` (a forecast's initial times, batch after batch) as one
    netCDF file or zarr store (``path`` ending in ``.zarr``), holding one batch in memory at a time: each batch is
    appended to a zarr store beside ``path`` as it comes, and the store is then streamed to netCDF (dask, chunk by
    chunk) or moved into place. Atomic: ``path`` appears whole or not at all. Without zarr installed the batches are
    joined in memory instead (the same file; only the memory bound is lost)."""
    path = pathlib.Path(path)
    is_zarr = path.suffix == ".zarr"
    it = iter(batches)
    first = next(it)
    second = next(it, None)
    if second is None and not is_zarr:
        return write_netcdf(first, path)
    if importlib.util.find_spec("zarr") is None:
        if is_zarr:
            raise ImportError("writing a .zarr output needs zarr: pip install 'sciffusion[climate]'")
        return write_netcdf(xr.concat([first, second, *it], dim=dim, data_vars="minimal", coords="minimal",
                                      compat="override", combine_attrs="override"), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # a killed earlier run's store, beside the same output
    store = path.parent / f".{path.name}.{os.getpid()}.tmp.zarr"
    try:
        first.to_zarr(store, mode="w")
        del first  # one batch in memory at a time: the rest are made as they are appended (not listed first)
        for batch in itertools.chain([second] if second is not None else [], it):
            batch.drop_vars([v for v in batch.variables if dim not in batch[v].dims]).to_zarr(store, append_dim=dim)
        if is_zarr:
            old = path.parent / f".{path.name}.{os.getpid()}.old.zarr"
            if path.exists():
                os.replace(path, old)
            os.replace(store, path)
            shutil.rmtree(old, ignore_errors=True)
            return path
        with xr.open_zarr(store, decode_times=xr.coders.CFDatetimeCoder(use_cftime=None)) as ds:
            atomic_write(path, lambda tmp: ds.to_netcdf(tmp, format="NETCDF4"))
        return path
    finally:
        shutil.rmtree(store, ignore_errors=True)


def state_tensors(arrays: dict[str, np.ndarray | None]) -> dict[str, torch.Tensor]:
    """A task's fitted arrays as the run's state tensors (absent ones, e.g. no static fields, left out)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if v is not None}


def open_output(path: str | os.PathLike, task: str, lazy: bool = False) -> xr.Dataset:
    """Load a file that ``sciffusion <task>`` wrote (checked by its ``sciffusion_task`` attribute); ``lazy``: open it
    without reading its values (read on demand, a batch at a time; the file stays open)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{task} file {path} does not exist")
    times = xr.coders.CFDatetimeCoder(use_cftime=None)
    opened = xr.open_zarr(path, decode_times=times) if path.suffix == ".zarr" else xr.open_dataset(
        path, decode_times=times)
    if lazy:
        ds = opened
    else:
        with opened:
            ds = opened.load()
    if ds.attrs.get("sciffusion_task") != task:
        raise ValueError(f"{path} is not a file written by 'sciffusion {task}'")
    return ds


def report_scores(table: dict[str, Any], text: str, out: str | os.PathLike | None) -> pathlib.Path | str:
    """Print the score table and, with ``out``, write it as JSON (atomically)."""
    print(text)
    if not out:
        return "stdout"
    atomic_write(out, json.dumps(table, indent=2).encode())
    return pathlib.Path(out)
