"""Random 3-D training patches inside a mask, and the memory plan for tiled whole-volume passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...diffusion import numpy_rng
from .cache import as_array
from .intensity import bias_field


def crop(data: np.ndarray, centre: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The box of ``shape`` centred on ``centre`` over the last ``len(centre)`` axes (leading axes, as channels,
    whole); parts outside the volume are 0. Reads only the box (``data`` may be memory-mapped)."""
    lead = data.ndim - len(centre)
    out = np.zeros(tuple(data.shape[:lead]) + tuple(shape), dtype=data.dtype)
    src: list[slice] = [slice(None)] * lead
    dst: list[slice] = [slice(None)] * lead
    for c, s, n in zip(centre, shape, data.shape[lead:]):
        lo = int(c) - s // 2
        a, b = max(lo, 0), min(lo + s, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = data[tuple(src)]
    return out


def augment_intensity(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: float = 0.1,
                      bias: float = 0.15) -> np.ndarray:
    """Healthy-looking intensity variation of a patch ``(X, Y, Z)`` or ``(C, X, Y, Z)``: a gain
    ``exp(N(0, scale^2))`` per channel (sequences are scaled independently) and one smooth bias field of strength
    ``bias`` (a coil property, shared by the sequences), inside ``mask`` (so the reconstruction model does not flag
    scanner variation)."""
    lead = x.ndim - mask.ndim
    gain = np.exp(scale * rng.standard_normal(x.shape[:lead] or None)) if scale > 0 else 1.0
    gain = np.reshape(gain, np.shape(gain) + (1,) * mask.ndim) if lead else gain
    field = bias_field(mask.shape, bias, rng, control=3) if bias > 0 else 1.0
    return np.where(mask, x * gain * field, x).astype(np.float32)


class PatchDataset(Dataset):
    """``length`` random patches of normalised volumes ``(X, Y, Z)`` or ``(C, X, Y, Z)`` (arrays, or
    :class:`~sciffusion.domains.medical.cache.LazyArray` memory-mapped files), patch ``i`` a function of
    ``(seed, i)`` only (so runs resume and workers agree). Patch centres are voxels of ``region`` (default: the
    mask), or the flat voxel indices ``centres`` (one array per volume, e.g. memory-mapped from a cache).

    ``make(x, mask, rng) -> dict`` turns a cropped patch ``(C, *crop_shape)`` and its mask ``(crop_shape)`` into a
    training sample (tensors ``(C, *patch)``); the default gives ``{"x", "mask"}`` with intensity augmentation.
    """

    def __init__(self, volumes: Sequence[Any], masks: Sequence[Any], crop_shape: Sequence[int],
                 length: int, seed: int = 0, region: Sequence[np.ndarray] | None = None,
                 make: Callable[[np.ndarray, np.ndarray, np.random.Generator], dict[str, torch.Tensor]] | None = None,
                 augment: dict[str, float] | None = None, centres: Sequence[Any] | None = None) -> None:
        if len(volumes) != len(masks) or not volumes:
            raise ValueError("give one mask per volume (and at least one volume)")
        self.volumes, self.masks = list(volumes), list(masks)
        self.crop_shape, self.length, self.seed = tuple(int(s) for s in crop_shape), int(length), int(seed)
        if centres is None:
            region = [as_array(m) for m in self.masks] if region is None else list(region)
            centres = [np.flatnonzero(r) for r in region]
        self.centres = list(centres)
        if any(as_array(c).shape[0] == 0 for c in self.centres):
            raise ValueError("a volume has no voxel in its patch region (mask)")
        self.augment = {"scale": 0.1, "bias": 0.15} if augment is None else dict(augment)
        self.make = make or self._default

    def __len__(self) -> int:
        return self.length

    def _default(self, x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        x = augment_intensity(x, m, rng, **self.augment)
        return {"x": torch.from_numpy(x), "mask": torch.from_numpy(m)[None]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = numpy_rng(self.seed, "patch", int(i))
        v = int(rng.integers(len(self.volumes)))
        mask, centres = as_array(self.masks[v]), as_array(self.centres[v])
        c = [int(i) for i in np.unravel_index(int(centres[int(rng.integers(centres.shape[0]))]), mask.shape)]
        x = crop(as_array(self.volumes[v]), c, self.crop_shape).astype(np.float32)
        return self.make(x if x.ndim == mask.ndim + 1 else x[None], crop(mask, c, self.crop_shape).astype(bool),
                         rng)


def bytes_per_voxel(net: dict[str, Any]) -> float:
    """Peak bytes per tile voxel of a no-grad 3-D U-Net forward pass, an upper estimate fitted to measured CPU
    peaks (channels [16, 32, 64] x 1 block: ~1,400; [32, 64, 128] x 2 blocks: ~3,000)."""
    c0 = int(net.get("channels", [32])[0])
    return 4.0 * c0 * (14 + 6 * int(net.get("num_res_blocks", 2)))


def plan_tiles(memory_gb: float, net: dict[str, Any], volume_shape: Sequence[int], multiple: int = 8,
               candidates: Sequence[int] = (128, 96, 80, 64, 48, 32, 24, 16)) -> tuple[int, int]:
    """``(patch, batch)`` for a tiled pass over ``volume_shape`` within ``memory_gb`` GB: the largest cubic
    patch (a multiple of ``multiple``) whose batch of one fits beside the whole-volume buffers, then as many tiles
    per call as fit (at most 8). Raises if even the smallest patch does not fit."""
    budget = memory_gb * 2**30
    n_params = _param_count(net)
    fixed = 10 * 4 * float(np.prod(volume_shape)) + 4 * 4 * n_params + 400 * 2**20  # buffers, weights, runtime
    per = bytes_per_voxel(net)
    for p in candidates:
        p = min(p, max(volume_shape))
        p = -(-p // multiple) * multiple
        tile = per * p ** 3
        if fixed + tile <= budget:
            return int(p), int(max(1, min(8, (budget - fixed) // tile)))
    raise ValueError(f"a {memory_gb} GB budget cannot hold a volume of {tuple(volume_shape)} and one tile of "
                     f"{candidates[-1]}^3; raise --memory-gb")


def _param_count(net: dict[str, Any]) -> int:
    ch = [int(c) for c in net.get("channels", [32, 64, 128])]
    nrb = int(net.get("num_res_blocks", 2))
    return int(sum(2 * 27 * c * c * (2 * nrb + 1) for c in ch))  # 3x3x3 convs, down and up paths
