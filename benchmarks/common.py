"""Helpers shared by the benchmarks."""

from __future__ import annotations

import platform

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 512, seed: int = 0) -> float:
    """Mean over random directions of the 1-D Wasserstein-1 distance between projected samples (equal counts)."""
    g = torch.Generator().manual_seed(seed)
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0)
    return float(((a @ theta).sort(0).values - (b @ theta).sort(0).values).abs().mean())


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
