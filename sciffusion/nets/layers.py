"""Rank-agnostic building blocks (1, 2 or 3 spatial dims) for the U-Net."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion.tensors import append_dims

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def pad_axes(x: Tensor, pad: Sequence[tuple[int, int]], periodic: Sequence[bool]) -> Tensor:
    """Pad each spatial axis of ``x`` (``(B, C, *spatial)``) by ``pad[i] = (before, after)``: wrap-around on
    periodic axes, edge replication on the others."""
    for axis, ((lo, hi), wrap) in enumerate(zip(pad, periodic)):
        if lo == 0 and hi == 0:
            continue
        dim = 2 + axis
        n = x.shape[dim]
        if wrap:
            if lo > n or hi > n:
                raise ValueError(f"periodic axis {axis} of size {n} is too small to wrap by {max(lo, hi)}")
            x = torch.cat([x.narrow(dim, n - lo, lo), x, x.narrow(dim, 0, hi)], dim=dim)
        else:
            x = torch.cat([x.narrow(dim, 0, 1).repeat_interleave(lo, dim), x,
                           x.narrow(dim, n - 1, 1).repeat_interleave(hi, dim)], dim=dim)
    return x


class Conv(nn.Module):
    """``dims``-D convolution with 'same' padding that wraps around on periodic axes and is zero elsewhere.

    Zero padding is left to the convolution itself (no copy); only periodic axes are padded by hand.
    """

    def __init__(self, dims: int, c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                 periodic: Sequence[bool] = (), zero_init: bool = False) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd for 'same' padding; got {kernel}")
        self.periodic = tuple(periodic) or (False,) * dims
        half = kernel // 2
        padding: Any = tuple(0 if p else half for p in self.periodic)  # per axis (the stubs say str | int only)
        self.conv = _CONV[dims](c_in, c_out, kernel, stride=stride, padding=padding)
        self.wrap = [(half, half) if p else (0, 0) for p in self.periodic] if half and any(self.periodic) else None
        if zero_init:
            nn.init.zeros_(self.conv.weight)
            assert self.conv.bias is not None
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.wrap:
            x = pad_axes(x, self.wrap, self.periodic)
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return self._batch_invariant(x)
        return self.conv(x)

    def _batch_invariant(self, x: Tensor) -> Tensor:
        """The convolution at inference on CPU: oneDNN takes another kernel (other rounding) for a batch of one than
        for larger batches, so a batch of one runs as a batch of two and a sample's value does not depend on how many
        were drawn with it (see :class:`Linear`). Not covered: with one thread, a 1x1 convolution also changes kernel
        below 16 samples (a per-sample product would fix it at 1.4x the cost of a scenario batch)."""
        if len(x) == 1:
            return self.conv(x.expand(2, *x.shape[1:]))[:1]
        return self.conv(x)


ROWS = 64  # the row count of every matrix product at inference (see Linear)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` whose output for one sample does not depend on the rest of the batch at inference.

    A matrix product's kernel, and so its rounding, is chosen by the product's shape: the same sample in a batch of 6
    and in a batch of 18 can differ in the last bit, and a forecast made in batches of initial times (or on several
    processes) would not be the one made in one piece. Without gradients, a ``(B, D)`` input is multiplied in blocks
    of exactly :data:`ROWS` rows (the last one zero-padded) and a ``(B, N, D)`` input sample by sample, so every
    product has a shape that does not depend on ``B``; in training it is a plain product. Same parameters and
    state-dict keys as :class:`torch.nn.Linear`.
    """

    def forward(self, x: Tensor) -> Tensor:
        product = super().forward
        if torch.is_grad_enabled():
            return product(x)
        if x.ndim > 2:
            return torch.cat([product(x[i:i + 1]) for i in range(len(x))])
        blocks = [x[lo:lo + ROWS] for lo in range(0, len(x), ROWS)]
        return torch.cat([product(F.pad(b, (0, 0, 0, ROWS - len(b))))[:len(b)] for b in blocks])


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(max_groups, channels), channels, eps=1e-6)


class NoiseEmbedding(nn.Module):
    """``c_noise`` (``(B,)``) -> ``(B, dim)``: sinusoids over log-spaced frequencies, then an MLP.

    Frequencies span 1e-4 to 10 cycles per unit so that both EDM's ``ln(sigma) / 4`` (|c| < 3) and a DDPM
    timestep (0-999) are resolved.
    """

    freqs: Tensor  # (features // 2,) angular frequencies, not saved (rebuilt from ``features``)

    def __init__(self, dim: int, features: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.logspace(-4, 1, features // 2), persistent=False)
        self.mlp = nn.Sequential(Linear(features, dim), nn.SiLU(), Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        a = c_noise.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([a.cos(), a.sin()], dim=1).to(cast(nn.Linear, self.mlp[0]).weight.dtype))


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> GroupNorm with noise-dependent scale/shift -> SiLU -> dropout -> conv, plus skip."""

    def __init__(self, dims: int, c_in: int, c_out: int, emb_dim: int, periodic: Sequence[bool],
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = Conv(dims, c_in, c_out, 3, periodic=periodic)
        self.emb = Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv(dims, c_out, c_out, 3, periodic=periodic, zero_init=True)
        self.skip = Conv(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        h = self.norm2(h) * (1 + append_dims(scale, h.ndim)) + append_dims(shift, h.ndim)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all spatial positions through ``scaled_dot_product_attention``."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = Linear(channels, 3 * channels)
        self.proj = Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C = x.shape[:2]
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(h).reshape(B, -1, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        o = self.proj(o.transpose(1, 2).reshape(B, -1, C))
        return x + o.transpose(1, 2).reshape(x.shape)


class Downsample(nn.Module):
    def __init__(self, dims: int, channels: int, periodic: Sequence[bool]) -> None:
        super().__init__()
        self.conv = Conv(dims, channels, channels, 3, stride=2, periodic=periodic)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dims: int, channels: int, periodic: Sequence[bool]) -> None:
        super().__init__()
        self.conv = Conv(dims, channels, channels, 3, periodic=periodic)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
