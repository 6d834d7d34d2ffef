"""Random numbers with per-sample generators, so a member's noise does not depend on the batch it is drawn in."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None


def generators_from_seeds(seeds: Sequence[int] | int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per seed (``int`` n means seeds ``0..n-1``), on ``device``."""
    if isinstance(seeds, int):
        seeds = range(seeds)
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generator = None, *, device=None, dtype=None) -> Tensor:
    """Standard normal noise shaped ``shape``; with a list of generators, row ``i`` comes from ``generator[i]``."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; give one per sample")
    return torch.cat([torch.randn((1,) + shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def randn_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Standard normal noise shaped, placed and typed like ``x`` (see :func:`randn`)."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def coarse_noise(shape: Sequence[int], factor: int, generator: Generator = None, *, device=None, dtype=None) -> Tensor:
    """Unit-variance low-frequency noise: white noise drawn at ``1/factor`` resolution, upsampled (linear) and
    re-standardised per sample. It hides blob-sized structure that white noise does not (AnoDDPM's simplex-noise idea).

    ``shape`` is ``(batch, channels, *spatial)``; every spatial size is kept exactly.
    """
    shape = tuple(shape)
    spatial = shape[2:]
    if not 1 <= len(spatial) <= 3:
        raise ValueError(f"shape must be (batch, channels, *spatial) with 1-3 spatial dims; got {shape}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1; got {factor}")
    low = tuple(max(1, -(-n // factor)) + 1 for n in spatial)
    z = randn(shape[:2] + low, generator, device=device, dtype=torch.float32)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    z = F.interpolate(z, size=spatial, mode=mode, align_corners=True)
    dims = tuple(range(1, z.ndim))
    z = (z - z.mean(dims, keepdim=True)) / z.std(dims, keepdim=True).clamp_min(1e-12)
    return z.to(dtype or torch.get_default_dtype())
