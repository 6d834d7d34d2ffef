"""One U-Net for 1-D series, 2-D fields and 3-D volumes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import Attention, Conv, Downsample, Linear, NoiseEmbedding, ResBlock, Upsample, group_norm, pad_axes


class UNet(nn.Module):
    """ADM-style U-Net for ``(batch, channels, *spatial)`` inputs with ``dims`` = 1, 2 or 3 spatial dims.

    ``forward(x, c_noise, cond=None)``: ``x`` is ``(B, in_channels, *spatial)``, ``c_noise`` is ``(B,)`` (the
    preconditioner's noise input), ``cond`` is ``(B, cond_channels, *spatial)`` and is concatenated to ``x``.
    Returns ``(B, out_channels, *spatial)``.

    Args:
        channels: width at each resolution level; the input is downsampled by 2 between levels, so spatial sizes
            are padded up to a multiple of ``2 ** (len(channels) - 1)`` and the output is cropped back.
        attention_levels: indices of the levels (0 = full resolution) that get self-attention; the bottleneck
            always has one.
        periodic: per spatial axis, whether it wraps around (e.g. ``(False, True)`` for lat/lon fields): convolutions
            and size padding then wrap on that axis.
        gradient_checkpointing: recompute blocks in the backward pass to save activation memory.
        zero_init: zero the output layer, so an untrained network outputs 0 (an EDM denoiser then returns
            ``c_skip * x``, and a residual model returns its baseline).
        cond_embedding: also feed the condition, averaged over the spatial axes, through an MLP into the noise
            embedding, so that every ResBlock's scale and shift depend on it. Concatenated channels enter the first
            convolution additively; a condition that should change how the input channels relate to each other
            (market scenarios: a correlation that rises in a crisis, a denoiser ``M(cond) x``) needs this
            multiplicative path. Meant for conditions that are constant along the spatial axes.
        noise_vector: for a one-pass generator (``sciffusion.diffusion.crps``), FGN's way in for its noise: the
            first ``noise_vector`` values of each sample's input (i.i.d. standard normal draws, scaled), as a vector,
            go through an MLP into the embedding that scales and shifts every ResBlock, and the input channels are
            zeroed, so the noise reaches the network only that way (a few numbers that modulate every layer, rather
            than an independent draw per cell). 0 (default): the input enters the first convolution as it is.
    """

    def __init__(self, dims: int = 2, in_channels: int = 1, out_channels: int | None = None, cond_channels: int = 0,
                 channels: Sequence[int] = (64, 128, 256), num_res_blocks: int = 2,
                 attention_levels: Sequence[int] = (), head_dim: int = 32, dropout: float = 0.0,
                 periodic: Sequence[bool] = (), gradient_checkpointing: bool = False, zero_init: bool = True,
                 cond_embedding: bool = False, noise_vector: int = 0) -> None:
        super().__init__()
        if dims not in (1, 2, 3):
            raise ValueError(f"dims must be 1, 2 or 3; got {dims}")
        periodic = tuple(bool(p) for p in periodic) or (False,) * dims
        if len(periodic) != dims:
            raise ValueError(f"periodic needs one flag per spatial axis ({dims}); got {len(periodic)}")
        self.dims, self.in_channels, self.cond_channels = dims, in_channels, cond_channels
        self.out_channels = out_channels or in_channels
        self.periodic, self.factor = periodic, 2 ** (len(channels) - 1)
        self.gradient_checkpointing = gradient_checkpointing
        emb_dim = 4 * channels[0]
        self.embed = NoiseEmbedding(emb_dim)
        if cond_embedding and not cond_channels:
            raise ValueError("cond_embedding needs cond_channels > 0")
        self.cond_embed = (nn.Sequential(Linear(cond_channels, emb_dim), nn.SiLU(), Linear(emb_dim, emb_dim))
                           if cond_embedding else None)
        if noise_vector < 0:
            raise ValueError(f"noise_vector must be >= 0; got {noise_vector}")
        self.noise_vector = int(noise_vector)
        self.noise_embed = (nn.Sequential(Linear(noise_vector, emb_dim), nn.SiLU(), Linear(emb_dim, emb_dim))
                            if noise_vector else None)
        self.conv_in = Conv(dims, in_channels + cond_channels, channels[0], 3, periodic=periodic)

        def res(ci, co):
            return ResBlock(dims, ci, co, emb_dim, periodic, dropout)

        self.down = nn.ModuleList()
        skips, ch = [channels[0]], channels[0]
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                blocks = [res(ch, width)] + ([Attention(width, head_dim)] if level in attention_levels else [])
                ch = width
                self.down.append(nn.ModuleList(blocks))
                skips.append(ch)
            if level < len(channels) - 1:
                self.down.append(nn.ModuleList([Downsample(dims, ch, periodic)]))
                skips.append(ch)
        self.mid = nn.ModuleList([res(ch, ch), Attention(ch, head_dim), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for i in range(num_res_blocks + 1):
                blocks = [res(ch + skips.pop(), width)]
                ch = width
                if level in attention_levels:
                    blocks.append(Attention(width, head_dim))
                if level > 0 and i == num_res_blocks:
                    blocks.append(Upsample(dims, ch, periodic))
                self.up.append(nn.ModuleList(blocks))
        self.norm_out = group_norm(ch)
        self.conv_out = Conv(dims, ch, self.out_channels, 3, periodic=periodic, zero_init=zero_init)

    def _run(self, blocks: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        for block in blocks.children():  # a ModuleList of blocks, in order
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, emb, use_reentrant=False)
            else:
                h = block(h, emb)
        return h

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dims + 2:
            raise ValueError(f"UNet(dims={self.dims}) expects input shaped (batch, channels, {self.dims} spatial dims);"
                             f" got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"channel mismatch: network expects {self.in_channels} input channels, got {x.shape[1]}")
        noise = None
        if self.noise_embed is not None:  # the noise as a vector through the embedding, not as input channels
            flat = x.flatten(1)
            if flat.shape[1] < self.noise_vector:
                raise ValueError(f"noise_vector={self.noise_vector} needs at least that many input values per "
                                 f"sample; got {flat.shape[1]}")
            noise, x = flat[:, :self.noise_vector], torch.zeros_like(x)
        if self.cond_channels:
            if cond is None:
                raise ValueError(f"network expects {self.cond_channels} condition channels, got no `cond`")
            if cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:] or cond.shape[0] != x.shape[0]:
                raise ValueError(f"condition mismatch: expected (batch, {self.cond_channels}, {tuple(x.shape[2:])}),"
                                 f" got {tuple(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("network was built with cond_channels=0 but got a `cond` tensor")
        if c_noise.shape != (x.shape[0],):
            raise ValueError(f"c_noise must be shaped (batch,) = ({x.shape[0]},); got {tuple(c_noise.shape)}")
        size = x.shape[2:]
        pad = [(0, -n % self.factor) for n in size]
        h = pad_axes(x, pad, self.periodic)
        emb = self.embed(c_noise)
        if self.cond_embed is not None:
            assert cond is not None  # checked above
            emb = emb + self.cond_embed(cond.to(x.dtype).flatten(2).mean(2))
        if noise is not None:
            assert self.noise_embed is not None
            emb = emb + self.noise_embed(noise)
        h = self.conv_in(h)
        skips = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb)
            skips.append(h)
        h = self._run(self.mid, h, emb)
        for blocks in self.up:
            h = self._run(blocks, torch.cat([h, skips.pop()], dim=1), emb)
        h = self.conv_out(F.silu(self.norm_out(h)))
        crop = tuple(slice(0, n) for n in size)
        return h[(slice(None), slice(None)) + crop].to(x.dtype)
