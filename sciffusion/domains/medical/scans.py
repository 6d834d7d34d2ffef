"""From files to normalised training/inference inputs, the shared patch-training path, and tiled inference."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...diffusion import TiledDenoiser, derive_seed
from ...tasks.base import Flag, run_training
from ...training.data import DiffusionDataModule
from .intensity import IntensityNorm, foreground_mask
from .patches import PatchDataset, plan_tiles
from .volumes import Volume, check_mask, read_volume

MEDICAL_DEFAULTS: dict[str, Any] = {
    "data": {"mask": None, "ct_window": None, "hemisphere": None, "percentiles": [0.5, 99.5], "patch": 32,
             "batch_size": 8, "augment": {"scale": 0.1, "bias": 0.15}},
    "model": {"net": {"channels": [8, 16, 32], "num_res_blocks": 1}, "lr": 1e-3, "warmup_steps": 50,
              "ema_half_life": 50.0},
    "trainer": {"max_steps": 400, "checkpoint_every": 100, "val_every": 100},
    "memory_gb": 4.0,
}


SCAN_TRAIN_FLAGS = (
    Flag("--data", "data.path", "training scans (NIfTI files or DICOM folders)", nargs="+"),
    Flag("--mask", "data.mask", "foreground masks (one, or one per scan); default: found from the data", nargs="+"),
    Flag("--hemisphere", "data.hemisphere", "train on patches of one hemisphere only: left or right"),
    Flag("--patch", "data.patch", "training patch size (voxels)", int),
    Flag("--ct-window", "data.ct_window", "CT: a window name (brain, soft_tissue, bone, lung)"),
    Flag("--memory-gb", "memory_gb", "memory budget of tiled whole-volume passes (GB)", float),
)
SCAN_SAMPLE_FLAGS = (
    Flag("--data", "data.path", "the scan"),
    Flag("--mask", "data.mask", "its foreground mask (default: found from the data)"),
    Flag("--memory-gb", "memory_gb", "memory budget (GB)", float),
)


@dataclass
class Scan:
    """A volume ready for the model: ``x`` normalised ``(X, Y, Z)``, its foreground ``mask`` and the
    normalisation, with the :class:`Volume` it came from (to write outputs on its grid)."""

    volume: Volume
    x: np.ndarray
    mask: np.ndarray
    norm: IntensityNorm


def prepare(volume: Volume | str | os.PathLike, mask: Volume | str | os.PathLike | np.ndarray | None = None, *,
            ct_window: str | Sequence[float] | None = None, percentiles: Sequence[float] = (0.5, 99.5)) -> Scan:
    """Read (if a path), mask (given, or the foreground found in the data) and normalise a scan: MRI by its own
    foreground percentiles, CT by a fixed Hounsfield window (``ct_window``: a name in
    :data:`~sciffusion.domains.medical.intensity.CT_WINDOWS` or ``(level, width)``)."""
    vol = volume if isinstance(volume, Volume) else read_volume(volume)
    if mask is None:
        m = foreground_mask(vol.data)
    elif isinstance(mask, np.ndarray):
        if mask.shape != vol.data.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the volume's {vol.data.shape}")
        m = mask.astype(bool)
    else:
        m = check_mask(mask if isinstance(mask, Volume) else read_volume(mask), vol)
    norm = (IntensityNorm.ct(ct_window if isinstance(ct_window, str) else tuple(ct_window)) if ct_window
            else IntensityNorm.fit(vol.data, m, tuple(percentiles)))
    return Scan(vol, norm(vol.data, m), m, norm)


def hemisphere(mask: np.ndarray, side: str | None, margin: int = 2) -> np.ndarray:
    """``mask`` restricted to one hemisphere of a canonical (RAS) scan: ``left`` is the low half of axis 0,
    ``right`` the high half, each ``margin`` voxels short of the mid-plane (the centre of the mask's extent)."""
    if side in (None, "both"):
        return mask
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    mid = 0.5 * (xs[0] + xs[-1])
    i = np.arange(mask.shape[0])[:, None, None]
    if side == "left":
        return mask & (i < mid - margin)
    if side == "right":
        return mask & (i > mid + margin)
    raise ValueError(f"hemisphere must be left, right or both; got {side!r}")


def scans_from_config(config: dict[str, Any]) -> list[Scan]:
    d = config["data"]
    paths = d["path"] if isinstance(d["path"], (list, tuple)) else [d["path"]]
    masks = d.get("mask")
    masks = [None] * len(paths) if masks is None else (masks if isinstance(masks, (list, tuple)) else [masks])
    if len(masks) not in (1, len(paths)):
        raise ValueError(f"give one --mask for all scans or one per scan; got {len(masks)} for {len(paths)}")
    masks = masks * len(paths) if len(masks) == 1 else masks
    return [prepare_like(d, p, m) for p, m in zip(paths, masks)]


def prepare_like(data_config: dict[str, Any], volume: Volume | str | os.PathLike, mask: Any = None) -> Scan:
    """:func:`prepare` with a run's ``data`` settings (CT window, MRI percentiles), so training, calibration and
    inference scans are normalised the same way."""
    return prepare(volume, mask, ct_window=data_config.get("ct_window"),
                   percentiles=data_config.get("percentiles", (0.5, 99.5)))


def train_on_patches(config: dict[str, Any], scans: Sequence[Scan], crop_shape: Sequence[int],
                     make: Callable | None, net: dict[str, Any], metadata: dict[str, Any],
                     calibrate: Callable | None = None) -> Any:
    """The medical training path: random patches inside each scan's (hemisphere-restricted) mask, a fixed set
    of validation patches, then the shared :func:`~sciffusion.tasks.base.run_training`."""
    d, seed = config["data"], int(config["seed"])
    vols, masks = [s.x for s in scans], [s.mask for s in scans]
    region = [hemisphere(m, d.get("hemisphere")) for m in masks]
    b = int(d["batch_size"])
    kw = dict(region=region, make=make, augment=d.get("augment"))
    train = PatchDataset(vols, masks, crop_shape, int(config["trainer"]["max_steps"]) * b, seed, **kw)
    val = PatchDataset(vols, masks, crop_shape, 4 * b, derive_seed(seed, "validation"), **kw)
    dm = DiffusionDataModule(train, val, batch_size=b, num_workers=int(d.get("num_workers", 0)), seed=seed)
    meta = {"spacing": [float(v) for v in scans[0].volume.spacing], "patch": int(d["patch"]),
            "sources": [s.volume.path for s in scans], "normalisation": scans[0].norm.mode, **metadata}
    return run_training(config, dm, {"dims": 3, **net}, meta, calibrate=calibrate)


def tiled(denoiser: Any, net: dict[str, Any], shape: Sequence[int], memory_gb: float) -> TiledDenoiser:
    """``denoiser`` over whole volumes of ``shape`` in tiles sized by the memory budget (GB)."""
    patch, batch = plan_tiles(memory_gb, net, shape)
    return TiledDenoiser(denoiser, patch, patch // 4, batch)


def as_batch(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)[None, None]
