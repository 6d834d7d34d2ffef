"""The preprocessed cohort on disk: each subject read, resampled, masked and normalised once, saved as ``.npy``
files in the run's cache folder and memory-mapped, so training draws patches from cohorts larger than memory (the
peak is one subject while caching, a few patches while training). TorchIO's Queue and MONAI's patch datasets do
the same with their own caches; here it is the run's folder, so a resumed run reuses it.

A subject's entry is keyed by its files (name, size, modification time) and the preprocessing settings: change
either and it is rebuilt; a killed caching job leaves whole entries only (atomic writes, index last).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...training.checkpoint import atomic_write
from .cohort import Cohort, Subject

INDEX = "index.json"


class LazyArray:
    """A ``.npy`` file opened memory-mapped on first use (in each DataLoader worker: pickling sends the path)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}


def as_array(a: np.ndarray | LazyArray) -> np.ndarray:
    return a.array if isinstance(a, LazyArray) else a


@dataclass
class CachedScan:
    """One cached subject: normalised voxels ``x`` ``(C, X, Y, Z)``, ``mask`` ``(X, Y, Z)``, the flat indices
    of its patch-centre region, and what the run's metadata records about it."""

    subject: str
    x: LazyArray
    mask: LazyArray
    centres: LazyArray
    info: dict[str, Any]


def _stamp(item: Any) -> Any:
    p = pathlib.Path(str(item)) if isinstance(item, (str, os.PathLike)) else None
    if p is None:
        return type(item).__name__
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [str(p.resolve()), [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]]


def subject_key(subject: Subject, settings: dict[str, Any]) -> str:
    """What a cached entry depends on: the subject's files and the preprocessing settings."""
    blob = json.dumps({"files": [_stamp(p) for _, p in subject.sequences], "mask": _stamp(subject.mask),
                       "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save(path: pathlib.Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def cache_cohort(cohort: Cohort, folder: str | os.PathLike, prepare: Callable[[Subject], Any],
                 region: Callable[[np.ndarray], np.ndarray], settings: dict[str, Any], dtype: str = "float32",
                 progress: Callable[[Sequence[Subject]], Any] | None = None) -> list[CachedScan]:
    """Every subject of ``cohort`` prepared (``prepare(subject) -> Scan``) and saved under ``folder``, unless an
    entry with the same key is there. ``region(mask)``: where patch centres may fall. Returns the entries."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"data.cache_dtype must be float32 or float16; got {dtype!r}")
    folder = pathlib.Path(folder)
    made = [p for p in (folder.parent, folder) if not p.exists()]  # removed again if the first subject fails
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _cache_each(cohort, folder, prepare, region, settings, dtype, progress)
    except BaseException:
        for p in reversed(made):
            if p.exists() and not any(p.iterdir()):  # only what this call created and left empty
                p.rmdir()
        raise


def _cache_each(cohort: Cohort, folder: pathlib.Path, prepare: Callable[[Subject], Any],
                region: Callable[[np.ndarray], np.ndarray], settings: dict[str, Any], dtype: str,
                progress: Callable[[Sequence[Subject]], Any] | None) -> list[CachedScan]:
    index_path = folder / INDEX
    index: dict[str, Any] = json.loads(index_path.read_text()) if index_path.exists() else {}
    settings = {**settings, "dtype": dtype}
    out = []
    for subject in (progress(cohort.subjects) if progress else cohort.subjects):
        key = subject_key(subject, settings)
        files = {k: folder / f"{subject.id}.{k}.npy" for k in ("x", "mask", "centres")}
        entry = index.get(subject.id)
        if not (entry and entry["key"] == key and all(f.exists() for f in files.values())):
            scan = prepare(subject)
            centres = np.flatnonzero(region(scan.mask))
            if len(centres) == 0:
                raise subject.error("no voxel of the mask is in the patch region")
            _save(files["x"], scan.x.astype(dtype))
            _save(files["mask"], scan.mask.astype(bool))
            _save(files["centres"], centres.astype(np.int64))
            entry = {"key": key, "info": {"spacing": [float(v) for v in scan.volume.spacing],
                                          "shape": list(scan.mask.shape), "source": scan.input.path,
                                          "normalisation": scan.norm.mode, "sequences": list(scan.sequences),
                                          "norms": [n.to_dict() for n in scan.norms]}}
            index[subject.id] = entry
            atomic_write(index_path, json.dumps(index, indent=1).encode())  # last: the entry is whole
            del scan
        out.append(CachedScan(subject.id, LazyArray(files["x"]), LazyArray(files["mask"]),
                              LazyArray(files["centres"]), entry["info"]))
    return out
