"""Downscaling (super-resolution) of gridded fields: a coarse field in, an ensemble of fine fields out.

Training pairs come from one fine-grid dataset: the coarse field is the block mean over ``factor x factor`` fine
cells (NaN-aware), the truth is the fine field. The model works on the residual from a probabilistic baseline, as
CorrDiff works on the residual from a regression mean:

    fine = interp(coarse) + bias + s * r

with ``interp`` bilinear interpolation (wrapping in longitude on global grids), ``bias`` the per-cell mean of
``fine - interp`` and ``s`` the per-cell standard deviation of what is left, both over the training period. The
diffusion model samples ``r`` conditioned on ``interp(coarse)`` (and static fine-grid fields such as orography).
An untrained (zero-initialised) model samples exactly "interpolation + per-cell bias + per-cell Gaussian noise", the
baseline the issue asks a diffusion model to beat; training adds the spatial structure the Gaussian lacks.

    sciffusion train downscale --data FINE.nc --variables tas --factor 4 --train-period 1860/2029 --out RUN
    sciffusion downscale --run RUN --data COARSE.nc --members 8 --out FINE_ENS.nc
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch.utils.data import Dataset

from ..._version import __version__
from ...diffusion import derive_seed
from ...tasks.outputs import provenance, state_tensors
from ...tasks.shards import Shard
from ...training.fit import TrainedRun, load_trained
from .coords import find_time
from .fields import Grid, field_array, open_fields, output_attrs, output_coord, select_period, time_key
from .levels import stack_levels
from .units import units_of


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """``(..., H, W)`` -> ``(..., H / f, W / f)`` mean over ``f x f`` blocks, NaN cells ignored (all-NaN block: NaN).
    ``H`` and ``W`` must be multiples of ``f``."""
    *lead, H, W = x.shape
    if H % factor or W % factor:
        raise ValueError(f"grid {H}x{W} is not a multiple of the factor {factor}")
    b = x.reshape(*lead, H // factor, factor, W // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks (land) are meant to give NaN
        return np.nanmean(b, axis=(-3, -1))


def interpolate(coarse: np.ndarray, factor: int, periodic: bool, mode: str = "bilinear") -> np.ndarray:
    """``(N, C, h, w)`` -> ``(N, C, h f, w f)``: cell-centred interpolation (``align_corners=False``, the geometry of
    block means), wrapping in longitude when ``periodic``; NaN cells are filled with the field's mean first."""
    z = torch.from_numpy(np.asarray(coarse, dtype=np.float64))
    fill = torch.nanmean(z, dim=(-2, -1), keepdim=True).nan_to_num(0.0)
    z = torch.where(torch.isnan(z), fill.expand_as(z), z)
    pad = 2 if periodic else 0
    if periodic:
        z = torch.cat([z[..., -pad:], z, z[..., :pad]], dim=-1)
    h, w = z.shape[-2:]
    up = F.interpolate(z, size=(h * factor, w * factor), mode=mode, align_corners=False)
    if periodic:
        up = up[..., pad * factor:-pad * factor]
    return up.numpy()


def coarse_coords(values: np.ndarray, factor: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, factor).mean(1)


class DownscalePrep:
    """The fitted pieces: factor, periodicity, per-variable mean/std, per-cell bias and residual scale (``(C, H, W)``,
    in normalised units), the land mask (cells missing in every training field) and static fields."""

    def __init__(self, factor: int, periodic: bool, mean: np.ndarray, std: np.ndarray, bias: np.ndarray | None,
                 scale: np.ndarray | None, land: np.ndarray | None, static: np.ndarray | None) -> None:
        self.factor, self.periodic, self.mean, self.std = factor, periodic, mean, std
        self.bias, self.scale, self.land, self.static = bias, scale, land, static

    def norm(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def denorm(self, z: np.ndarray) -> np.ndarray:
        return z * self.std[:, None, None] + self.mean[:, None, None]

    def interp(self, coarse_phys: np.ndarray, mode: str = "bilinear") -> np.ndarray:
        """Physical coarse ``(N, C, h, w)`` -> normalised interpolated fine ``(N, C, H, W)``."""
        return interpolate(self.norm(coarse_phys), self.factor, self.periodic, mode)

    def cond(self, base: np.ndarray) -> np.ndarray:
        parts = [base]
        if self.static is not None:
            parts.append(np.broadcast_to(self.static, (len(base), *self.static.shape)))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return state_tensors({"mean": self.mean, "std": self.std, "bias": self.bias, "scale": self.scale,
                              "land": self.land.astype(np.uint8), "static": self.static})

    @classmethod
    def from_run(cls, run: TrainedRun) -> DownscalePrep:
        s = {k: v.numpy() for k, v in run.state.items()}
        grid = Grid.from_dict(run.metadata["grid"])
        return cls(int(run.metadata["factor"]), grid.periodic, s["mean"], s["std"], s["bias"], s["scale"],
                   s["land"].astype(bool), s.get("static"))


def fit_downscale_prep(read: Callable[[int, int], np.ndarray], T: int, factor: int, periodic: bool,
                       static: np.ndarray | None, chunk: int = 64) -> DownscalePrep:
    """Fit :class:`DownscalePrep` from ``read(lo, hi) -> (n, C, H, W)`` fine fields in streamed chunks: per-variable
    mean and std (pass 1), then per-cell bias and residual scale of ``norm(fine) - interp(coarse)`` (pass 2)."""
    s1 = s2 = n = None
    for lo in range(0, T, chunk):
        x = read(lo, min(T, lo + chunk))
        fin = np.isfinite(x)
        xz = np.where(fin, x, 0.0)
        a, b, c = xz.sum((0, 2, 3)), (xz * xz).sum((0, 2, 3)), fin.sum((0, 2, 3))
        s1, s2, n = (a, b, c) if s1 is None else (s1 + a, s2 + b, n + c)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        std = np.sqrt(np.clip(s2 / n - mean**2, 0, None))
    if not (np.isfinite(std).all() and (std > 0).all()):
        raise ValueError("a variable is constant or empty over the training period")
    prep = DownscalePrep(factor, periodic, mean, std, None, None, None, static)
    r1 = r2 = rn = None
    for lo in range(0, T, chunk):
        x = read(lo, min(T, lo + chunk))
        resid = prep.norm(x) - prep.interp(block_mean(x, factor))
        fin = np.isfinite(resid)
        a, b, c = np.where(fin, resid, 0).sum(0), np.where(fin, resid**2, 0).sum(0), fin.sum(0)
        r1, r2, rn = (a, b, c) if r1 is None else (r1 + a, r2 + b, rn + c)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(rn > 0, r1 / rn, 0.0)
        scale = np.sqrt(np.clip(np.where(rn > 0, r2 / rn, 1.0) - bias**2, 0, None))
    prep.bias, prep.scale, prep.land = bias, np.nan_to_num(scale, nan=1.0).clip(min=1e-3), rn == 0
    return prep


class DownscaleSamples(Dataset):
    """Training pairs read on demand: ``x`` = the normalised residual of the baseline at time ``i``, ``cond`` =
    the interpolated coarse field (+ static fields), ``weight`` = latitude weights."""

    def __init__(self, ds: xr.Dataset, variables: list[str], time: str, index: range, prep: DownscalePrep,
                 weights: np.ndarray) -> None:
        self.ds, self.variables, self.time, self.index, self.prep = ds, variables, time, list(index), prep
        self.weight = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))[None]  # (1, H, W)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i = self.index[j]
        x = field_array(self.ds.isel({self.time: slice(i, i + 1)}), self.variables)
        p = self.prep
        base = p.interp(block_mean(x, p.factor))
        target = ((p.norm(x) - base - p.bias) / p.scale).astype(np.float32)
        return {"x": torch.from_numpy(target[0]), "cond": torch.from_numpy(p.cond(base)[0]), "weight": self.weight}


def crop_to_factor(ds: xr.Dataset, grid: Grid, factor: int) -> tuple[xr.Dataset, Grid]:
    """Drop trailing rows/columns so the fine grid is a multiple of ``factor`` (a global grid must already be)."""
    H, W = grid.shape
    if grid.periodic and W % factor:
        raise ValueError(f"a global grid's {W} longitudes must be a multiple of the factor {factor}")
    ds = ds.isel({grid.lat: slice(0, H - H % factor), grid.lon: slice(0, W - W % factor)})
    return ds, grid.cropped(H - H % factor, W - W % factor)


@dataclasses.dataclass
class CoarseInput:
    """What ``downscale`` reads, opened lazily: ``ds`` on the run's fine grid (coarsened here, batch by batch) or
    on its coarse grid (taken as it is); ``fine`` is the run's fine grid. Nothing is read until :meth:`coarse` or
    :meth:`fine_fields` asks for a range of time steps."""

    ds: xr.Dataset
    time: str  #: the data's time dim
    variables: list[str]
    fine: Grid
    factor: int
    is_fine: bool

    @property
    def steps(self) -> int:
        return int(self.ds.sizes[self.time])

    def fine_fields(self, lo: int, hi: int) -> np.ndarray:
        """``(n, C, H, W)`` fine fields of time steps ``lo:hi`` (the truth, when the input is on the fine grid)."""
        if not self.is_fine:
            raise ValueError("the data are on the run's coarse grid: the fine truth is not in them")
        return field_array(self.ds.isel({self.time: slice(lo, hi)}), self.variables)

    def coarse(self, lo: int, hi: int) -> np.ndarray:
        """``(n, C, h, w)`` coarse fields of time steps ``lo:hi``, in physical units."""
        if self.is_fine:
            return block_mean(self.fine_fields(lo, hi), self.factor)
        return field_array(self.ds.isel({self.time: slice(lo, hi)}), self.variables)


def coarse_input(run: TrainedRun, data: str | pathlib.Path | xr.Dataset, period: str | None) -> CoarseInput:
    """Open ``data`` as coarse fields for ``run``: on the run's coarse grid as they are, or on its fine grid
    (coarsened by block means as they are read). Checks the grid; reads no values."""
    meta = run.metadata
    variables, fine = meta["variables"], Grid.from_dict(meta["grid"])
    f = int(meta["factor"])
    ds, g = open_fields(data, variables, units=units_of(meta.get("attrs", {})))
    ds = select_period(ds, g.time, period, "period")
    H, W = fine.shape
    coarse_w = None if fine.weights is None else block_mean(fine.cell_weights()[None, None], f)[0, 0]
    coarse_grid = Grid(fine.time, fine.lat, fine.lon, tuple(coarse_coords(fine.lat_values, f)),
                       tuple(coarse_coords(fine.lon_values, f)), fine.periodic,
                       None if coarse_w is None else tuple(tuple(map(float, r)) for r in coarse_w), fine.weighting)
    if g.shape[0] >= H and g.shape[1] >= W:
        ds, g = crop_to_factor(ds, g, f) if g.shape != (H, W) else (ds, g)
        fine.check(g, "the data")
        return CoarseInput(ds, g.time, variables, fine, f, True)
    coarse_grid.check(g, "the data (neither the run's fine grid nor its coarse grid)")
    return CoarseInput(ds, g.time, variables, fine, f, False)


def downscale_batches(run: TrainedRun | str | pathlib.Path, data: str | pathlib.Path | xr.Dataset, *,
                      period: str | None = None, members: int = 8, seed: int = 0,
                      sampling: dict[str, Any] | None = None, batch: int = 64, shard: Shard | None = None,
                      progress: bool = False) -> Iterator[tuple[int, xr.Dataset]]:
    """``(batch number, ensemble)`` of the time steps in ``period``, ``batch`` time steps at a time (in order), so
    that memory holds one batch's inputs and members, whatever the number of time steps; a member's values do not
    depend on the batching (its seed comes from its time). With ``shard`` (processes under torchrun), only this
    process's batches. Write them with :func:`~sciffusion.tasks.shards.write_sharded`; arguments as
    :func:`downscale`."""
    run = load_trained(run, task="downscale")
    if members < 1:
        raise ValueError(f"members must be >= 1; got {members}")
    if batch < 1:
        raise ValueError(f"the batch of time steps must be >= 1; got {batch}")
    src = coarse_input(run, data, period)
    prep = DownscalePrep.from_run(run)
    spec = run.sampling_spec(sampling)
    fine, C = src.fine, len(src.variables)
    T, time = src.steps, src.time
    # Keyed by the time itself: two batches or shards of one period draw what the whole period would.
    keys = [time_key(t) for t in src.ds[fine.time].values] if fine.time in src.ds.coords else list(range(T))
    inflation = float(spec.inflation or 1.0)
    note = (f"run {run.config.get('out')}, factor {prep.factor}, {members} members, sampler {spec.sampler} "
            f"{spec.steps} steps, spread inflation {inflation:.3f}")
    for i, lo in (shard or Shard()).mine(range(0, T, batch)):
        hi = min(T, lo + batch)
        base = prep.interp(src.coarse(lo, hi))
        cond = torch.from_numpy(np.repeat(prep.cond(base), members, axis=0))
        seeds = [derive_seed(seed, "downscale", t, m) for t in keys[lo:hi] for m in range(members)]
        z = run.sample((C, *fine.shape), seeds, cond=cond, sampling=spec, progress=progress,
                       desc=f"downscale {lo + 1}-{hi} of {T}").cpu().numpy().astype(np.float64)
        z = z.reshape(hi - lo, members, C, *fine.shape)
        out = prep.denorm(base[:, None] + prep.bias + prep.scale * z)
        out = np.where(prep.land, np.nan, out).astype(np.float32)
        yield i, fine_dataset(out, src.ds.isel({time: slice(lo, hi)}), fine, run, "sciffusion diffusion downscaling",
                              note, {"sciffusion_inflation": inflation, **provenance(seed, spec)})


def downscale(run: TrainedRun | str | pathlib.Path, data: str | pathlib.Path | xr.Dataset, *,
              period: str | None = None, members: int = 8, seed: int = 0, sampling: dict[str, Any] | None = None,
              batch: int = 64, progress: bool = False) -> xr.Dataset:
    """An ensemble of fine fields ``(time, member, lat, lon)`` per variable, in physical units on the run's fine grid,
    NaN on cells missing in all training fields; member ``m`` at time ``t`` has its own seed. Made ``batch`` time
    steps at a time and joined in memory: for long periods write :func:`downscale_batches` to a file instead."""
    parts = [ds for _, ds in downscale_batches(run, data, period=period, members=members, seed=seed,
                                               sampling=sampling, batch=batch, progress=progress)]
    if not parts:
        raise ValueError("no time step to downscale (an empty period?)")
    time = find_time(parts[0])
    return parts[0] if len(parts) == 1 else xr.concat(parts, dim=time, data_vars="minimal", coords="minimal",
                                                       compat="override", combine_attrs="override")


def fine_dataset(out: np.ndarray, ds: xr.Dataset, fine: Grid, run: TrainedRun, source: str, note: str,
                 attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """``(T, M, C, H, W)`` -> Dataset of ``(time, member, lat, lon)`` variables on the fine grid."""
    meta = run.metadata
    ca = meta.get("coord_attrs", {})
    coords = {fine.time: output_coord(ds, fine.time) if fine.time in ds.coords else ("time", np.arange(out.shape[0])),
              "member": ("member", np.arange(out.shape[1]), {"long_name": "ensemble member"}),
              **{c: (c, np.asarray(values, dtype=np.float32), output_attrs(ca.get(c, {}), [c]))
                 for c, values in ((fine.lat, fine.lat_values), (fine.lon, fine.lon_values))}}
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} sciffusion {__version__}"
    dims = (fine.time, "member", fine.lat, fine.lon)
    data_vars = {v: (dims, out[:, :, c], output_attrs(meta["attrs"].get(v, {}), dims))
                 for c, v in enumerate(meta["variables"])}
    return stack_levels(xr.Dataset(data_vars, coords=coords, attrs={
        "history": f"{stamp} {source}: {note}", "source": source, "sciffusion_task": "downscale", **(attrs or {})}))
