"""Denoise inputs larger than memory by overlapping tiles blended with a smooth window (MultiDiffusion).

:class:`TiledDenoiser` is itself a denoiser ``D(x, sigma, **cond)`` over the whole input, so every sampler and
:func:`~sciffusion.diffusion.partial_diffusion` use it unchanged. The sampler state (and so its noise) lives on the
whole grid: overlapping tiles see the same noise, and each step's blended estimate is one field, which is why no
seams appear. Rank-agnostic: 1-3 spatial dims.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .precond import DenoiserFn, DenoiserWrapper
from .tensors import as_sigma, check_batch


def tile_starts(size: int, patch: int, overlap: int) -> list[int]:
    """Start indices of tiles of length ``patch`` that cover ``[0, size)`` with at least ``overlap`` shared
    cells between neighbours; the last tile ends at ``size``. ``patch >= size`` gives the one start 0."""
    if patch < 1 or overlap < 0:
        raise ValueError(f"need patch >= 1 and overlap >= 0; got patch={patch}, overlap={overlap}")
    if patch >= size:
        return [0]
    if overlap >= patch:
        raise ValueError(f"overlap {overlap} must be smaller than the patch {patch}")
    n = math.ceil((size - overlap) / (patch - overlap))
    n = max(n, 2)
    # Spread the starts evenly between 0 and size - patch (so overlaps are at least `overlap`, never less).
    return sorted({round(i * (size - patch) / (n - 1)) for i in range(n)})


def blend_window(shape: Sequence[int], ramp: Sequence[int] | int) -> Tensor:
    """Separable weight ``(*shape)``: 1 inside, rising as ``sin^2`` over ``ramp`` cells at every edge; strictly
    positive, so a voxel covered by any tile has a defined blend."""
    ramp = [ramp] * len(shape) if isinstance(ramp, int) else list(ramp)
    w = torch.ones(())
    for n, r in zip(shape, ramp):
        i = torch.arange(n, dtype=torch.float64) + 0.5
        edge = torch.minimum(i, n - i)
        axis = torch.sin(0.5 * math.pi * (edge / max(r, 1)).clamp(max=1.0)) ** 2 if r > 0 else torch.ones(n)
        w = w[..., None] * axis
    return w.float()


class TiledDenoiser(DenoiserWrapper):
    """Apply ``denoiser`` to overlapping tiles of ``x`` and blend the estimates with :func:`blend_window`.

    Args:
        denoiser: ``D(x, sigma, **cond)`` for tiles ``(B, C, *patch)``.
        patch: tile size per spatial dim (an int for all); clipped to the input's size.
        overlap: cells shared by neighbouring tiles (default ``patch // 4``); also the window's ramp length.
        batch_size: tiles per denoiser call (the memory knob, with ``patch``).
        device: where the tiles are computed (default: the input's). The whole input and the blended output stay on
            the input's device, so a volume larger than the accelerator's memory (a 512^3 CT) is held on the host
            while each batch of tiles goes to the accelerator and back, as MONAI's sliding-window inference does.

    ``cond`` tensors with the input's spatial shape are cut into the same tiles; other tensors are indexed by
    sample. The output is exact wherever the tile estimates agree: tiling an identity map returns its input.
    """

    def __init__(self, denoiser: DenoiserFn, patch: Sequence[int] | int, overlap: Sequence[int] | int | None = None,
                 batch_size: int = 4, device: torch.device | str | None = None) -> None:
        super().__init__(denoiser)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.patch, self.overlap, self.batch_size = patch, overlap, batch_size
        self.device = None if device is None else torch.device(device)

    def tiles(self, spatial: Sequence[int]) -> tuple[list[tuple[slice, ...]], tuple[int, ...], tuple[int, ...]]:
        """The tile slices over a grid ``spatial``, the clipped patch shape and the overlap per axis."""
        d = len(spatial)
        patch = (self.patch,) * d if isinstance(self.patch, int) else tuple(self.patch)
        if len(patch) != d:
            raise ValueError(f"patch {patch} has {len(patch)} sizes for {d} spatial dims")
        patch = tuple(min(p, n) for p, n in zip(patch, spatial))
        overlap = self.overlap if self.overlap is not None else tuple(p // 4 for p in patch)
        overlap = (overlap,) * d if isinstance(overlap, int) else tuple(overlap)
        overlap = tuple(min(o, p - 1) for o, p in zip(overlap, patch))
        starts = [tile_starts(n, p, o) for n, p, o in zip(spatial, patch, overlap)]
        slices = [tuple(slice(s, s + p) for s, p in zip(c, patch)) for c in itertools.product(*starts)]
        return slices, patch, overlap

    def forward(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        check_batch(x)
        sigma = as_sigma(sigma, x)
        spatial = tuple(x.shape[2:])
        slices, patch, overlap = self.tiles(spatial)
        window = blend_window(patch, overlap).to(x.device)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        total = torch.zeros(spatial, dtype=torch.float32, device=x.device)
        for s in slices:
            total[s] += window
        jobs = [(b, s) for b in range(x.shape[0]) for s in slices]
        compute = self.device or x.device
        for lo in range(0, len(jobs), self.batch_size):
            chunk = jobs[lo:lo + self.batch_size]
            xs = torch.stack([x[b][(slice(None),) + s] for b, s in chunk]).to(compute)
            ss = torch.stack([sigma[b] for b, _ in chunk]).to(compute)
            cs = {k: self._to(self._cut(v, x, chunk), compute) for k, v in cond.items()}
            d = self.denoiser(xs, ss, **cs).float().to(x.device)
            for (b, s), tile in zip(chunk, d):
                out[b][(slice(None),) + s] += tile * window
        return (out / total).to(x.dtype)  # total broadcasts over (batch, channels)

    @staticmethod
    def _to(v: object, device: torch.device) -> object:
        return v.to(device) if isinstance(v, Tensor) else v

    @staticmethod
    def _cut(v, x: Tensor, chunk: list) -> object:
        if not isinstance(v, Tensor):
            return v
        if v.ndim == x.ndim and v.shape[2:] == x.shape[2:]:
            return torch.stack([v[b][(slice(None),) + s] for b, s in chunk])
        return torch.stack([v[b] for b, _ in chunk])
