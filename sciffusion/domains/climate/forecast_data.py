"""What a forecast run fits on its training period and trains on: the preprocessing (climatology, AR(1), scales,
static fields and forcings) that turns fields into model inputs and back, and the training windows read on demand
from a lazily opened archive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from ...tasks.outputs import state_tensors
from ...training.fit import TrainedRun
from .fields import Grid, field_array, static_field
from .sources import open_source
from .stats import AR1, Climatology


@dataclass
class Preprocess:
    """Everything fitted on the training period that turns fields into model inputs and samples back into fields."""

    history: int
    clim: Climatology
    ar1: AR1
    anom_std: np.ndarray     # (C,)
    resid_std: np.ndarray    # (C,)
    static: np.ndarray | None  # (S, H, W), standardised, NaN -> 0
    masked: bool             # whether any cell is missing: then a validity channel goes into the condition
    # Forcings (``--forcings``): given fields at the step being forecast (insolation, prescribed SST, a scenario's
    # forcing), standardised by their training-period mean and SD per variable (``(F,)``); None: no forcings.
    forcing_mean: np.ndarray | None = None
    forcing_std: np.ndarray | None = None

    @property
    def n_forcings(self) -> int:
        return 0 if self.forcing_mean is None else len(self.forcing_mean)

    def cond(self, a_hist: np.ndarray, forcing: np.ndarray | None = None) -> np.ndarray:
        """``(N, k, C, H, W)`` anomalies (and ``(N, F, H, W)`` forcings in physical units at the target time, when
        the run has forcings) -> ``(N, cond_channels, H, W)`` float32 condition."""
        n, k, c, h, w = a_hist.shape
        z = a_hist / self.anom_std[None, None, :, None, None]
        parts = [np.nan_to_num(z, nan=0.0).reshape(n, k * c, h, w)]
        if self.static is not None:
            parts.append(np.broadcast_to(self.static, (n, *self.static.shape)))
        if self.masked:
            parts.append(np.isfinite(a_hist[:, -1]).all(1, keepdims=True).astype(np.float64))
        if self.forcing_mean is not None and self.forcing_std is not None:
            if forcing is None or forcing.shape != (n, self.n_forcings, h, w):
                raise ValueError(f"the run is conditioned on {self.n_forcings} forcing field(s) at the target time; "
                                 f"got {None if forcing is None else forcing.shape}")
            f = (forcing - self.forcing_mean[None, :, None, None]) / self.forcing_std[None, :, None, None]
            parts.append(np.nan_to_num(f, nan=0.0))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def cond_channels(self, channels: int) -> int:
        return (self.history * channels + (0 if self.static is None else len(self.static)) + int(self.masked)
                + self.n_forcings)

    def target(self, a_prev: np.ndarray, a_next: np.ndarray) -> np.ndarray:
        return ((a_next - self.ar1.phi * a_prev) / self.resid_std[:, None, None]).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return state_tensors({**self.clim.state(), "phi": self.ar1.phi, "anom_var": self.ar1.var,
                              "anom_std": self.anom_std, "resid_std": self.resid_std, "static": self.static,
                              "forcing_mean": self.forcing_mean, "forcing_std": self.forcing_std})

    @classmethod
    def from_run(cls, run: TrainedRun) -> Preprocess:
        s = {k: v.numpy() for k, v in run.state.items()}
        d = run.config["data"]
        return cls(int(d["history"]), Climatology.from_state(run.metadata["climatology"], s),
                   AR1(s["phi"], s["anom_var"]), s["anom_std"], s["resid_std"], s.get("static"),
                   bool(run.metadata["masked"]), s.get("forcing_mean"), s.get("forcing_std"))


def forcing_stats(ds: xr.Dataset, forcings: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(F,)`` mean and SD of each forcing over ``ds`` (the training period; NaN cells left out), which standardise
    them as condition channels; ``(None, None)`` without forcings. Lazy data are reduced chunk by chunk (dask)."""
    if not forcings:
        return None, None
    time = ds[forcings[0]].dims[0]
    for f in forcings:  # a step without its forcing would condition on zeros, silently
        missing = ds[f].isnull().all([d for d in ds[f].dims if d != time]).values
        if missing.any():
            raise ValueError(f"forcing {f!r} is missing (all NaN) at {ds[time].values[int(np.argmax(missing))]} "
                             f"({int(missing.sum())} step(s) of the training period)")
    mean = np.array([float(ds[f].mean(skipna=True)) for f in forcings])
    std = np.array([float(ds[f].std(skipna=True)) for f in forcings])
    bad = [f for f, m, s in zip(forcings, mean, std) if not (np.isfinite(m) and np.isfinite(s))]
    if bad:
        raise ValueError(f"forcing(s) {bad} are empty (all NaN) over the training period")
    return mean, np.where(std > 0, std, 1.0)  # a constant forcing (one scenario value) enters as 0, not NaN


def read_static(d: dict[str, Any], grid: Grid) -> np.ndarray | None:
    """Standardised static fields ``(S, H, W)`` (NaN -> 0) named by ``data.static``, from ``data.static_path`` or
    the data file, put on ``grid`` (checked against it)."""
    if not d.get("static"):
        return None
    names = [d["static"]] if isinstance(d["static"], str) else list(d["static"])
    where = d.get("static_path") or d["path"]
    with open_source(where) as src:
        out = []
        for name in names:
            if name not in src.variables:
                raise ValueError(f"static field {name!r} not found in {where}")
            f = static_field(src[name].load(), grid)
            sd = np.nanstd(f)
            out.append(np.nan_to_num((f - np.nanmean(f)) / (sd if sd > 0 else 1.0)))
    return np.stack(out)


class ForecastWindows(Dataset):
    """Training samples read on demand: ``x`` = normalised residual at ``t + 1``, ``cond`` = the ``k`` anomaly
    states up to ``t`` (+ static fields, + validity, + the forcings at ``t + 1``), ``weight`` = latitude weights.
    ``ds`` may be lazily backed (netCDF/zarr, dask): each sample reads ``k + 1`` time steps."""

    def __init__(self, ds: xr.Dataset, variables: Sequence[str], time: str, ends: Sequence[int], keys: np.ndarray,
                 when: np.ndarray, prep: Preprocess, weights: np.ndarray, offsets: np.ndarray | None = None,
                 forcings: Sequence[str] = ()) -> None:
        self.ds, self.variables, self.time, self.ends = ds, list(variables), time, list(ends)
        self.keys, self.when, self.prep, self.offsets = keys, when, prep, offsets
        self.forcings = list(forcings)
        self.weight = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))[None]  # (1, H, W)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        t, k = self.ends[j], self.prep.history
        x = field_array(self.ds.isel({self.time: slice(t - k + 1, t + 2)}), self.variables)
        a = x - self.prep.clim.at(self.keys[t - k + 1:t + 2], self.when[t - k + 1:t + 2])
        if self.offsets is not None:  # the recent normal of the initial time, for inputs and target alike
            a = a - self.offsets[t]
        f = field_array(self.ds.isel({self.time: slice(t + 1, t + 2)}), self.forcings) if self.forcings else None
        return {"x": torch.from_numpy(self.prep.target(a[k - 1], a[k])),
                "cond": torch.from_numpy(self.prep.cond(a[None, :k], f)[0]), "weight": self.weight}
