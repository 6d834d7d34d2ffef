"""Metrics shared by every domain (domain-specific scores live next to their domain)."""

from __future__ import annotations

import torch
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int = 512, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two equal-size sample sets (each ``(n, ...)``, flattened per sample):
    the mean over ``projections`` random unit directions of the 1-D W1 distance of the projected samples."""
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal sample counts; got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    a, b = a.reshape(len(a), -1).double().cpu(), b.reshape(len(b), -1).double().cpu()
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0)
    return float(((a @ theta).sort(0).values - (b @ theta).sort(0).values).abs().mean())
