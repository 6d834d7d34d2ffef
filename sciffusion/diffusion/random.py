"""Random numbers with per-sample generators, so a member's noise does not depend on the batch it is drawn in, and
the one seed scheme of the project (:func:`derive_seed`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None
SeedKey = int | str | bytes | Sequence["SeedKey"]


def _entropy(key: SeedKey) -> list[int]:
    """Non-negative words for SeedSequence, tagged by kind so ``1``, ``"1"`` and ``(1,)`` are different keys."""
    if isinstance(key, (bool, np.bool_)):
        raise TypeError("a seed key must be an int, str, bytes or a sequence of them, not a bool")
    if isinstance(key, (int, np.integer)):
        k = int(key)
        return [1, 2 * k if k >= 0 else -2 * k - 1]  # zigzag: negative day numbers are keys too
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        return [2, int.from_bytes(hashlib.sha256(key).digest()[:16], "little")]
    if isinstance(key, Sequence) or isinstance(key, np.ndarray):
        words = [3, len(key)]
        for part in key:
            words += _entropy(part)
        return words
    raise TypeError(f"a seed key must be an int, str, bytes or a sequence of them; got {type(key).__name__}")


def derive_seed(seed: int, *keys: SeedKey) -> int:
    """The 64-bit seed of ``(seed, *keys)``: numpy's ``SeedSequence`` hash of the run seed and the keys.

    The one seed scheme of sciffusion. Keys name *what* is drawn, by identity, never by position: a purpose
    (``"step"``, ``"member"``), a timestamp or day number, a sample number, a rank. So a member drawn for one initial
    time is the same whether the job covers one year or fifty, and two shards of a period never share noise.
    Distinct inputs give independent-looking 64-bit seeds (no 32-bit bases whose ranges can overlap).
    """
    words = _entropy(int(seed)) + [w for k in keys for w in _entropy(k)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def numpy_rng(seed: int, *keys: SeedKey) -> np.random.Generator:
    """A numpy generator seeded by :func:`derive_seed` (for the numpy side of a task: baselines, crops)."""
    return np.random.default_rng(derive_seed(seed, *keys))


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
