"""Denoising score-matching loss with sigma sampling, weightings, weight maps and masks."""

from __future__ import annotations

import torch
from torch import Tensor

from .noise import EDM, NoiseProcess
from .precond import Denoiser
from .random import Generator, coarse_noise, randn_like
from .tensors import append_dims, check_batch

WEIGHTINGS = ("edm", "min_snr", "snr", "uniform", "flow")


def loss_weight(sigma: Tensor, sigma_data: float, weighting: str = "edm", gamma: float = 5.0) -> Tensor:
    """Per-sigma weight ``lambda(sigma)`` on the x0-space error ``|D - x0|^2``.

    ``edm``: ``(s^2 + sd^2) / (s sd)^2`` (the network sees a unit-weighted target; Karras et al. 2022);
    ``min_snr``: ``min(SNR, gamma) / sd^2`` with ``SNR = sd^2 / s^2`` (Hang et al. 2023; the same weight whether the
    network predicts x0, eps or v); ``snr``: ``1 / s^2`` (DDPM's epsilon-MSE); ``uniform``: ``1 / sd^2`` (x0-MSE);
    ``flow``: ``(1 + s)^2 / s^2``, the conditional flow-matching loss (the squared error of the velocity ``n - x0``:
    ``D - x0 = -s / (1 + s) (v_pred - v)``).
    """
    sd2 = sigma_data**2
    if weighting == "edm":
        return (sigma**2 + sd2) / (sigma * sigma_data) ** 2
    if weighting == "min_snr":
        return torch.clamp(sd2 / sigma**2, max=gamma) / sd2
    if weighting == "snr":
        return 1.0 / sigma**2
    if weighting == "uniform":
        return torch.full_like(sigma, 1.0 / sd2)
    if weighting == "flow":
        return ((1.0 + sigma) / sigma) ** 2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")


def loss_cells(x0: Tensor, mask: Tensor | None = None, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``x0`` with missing cells (NaN, or ``mask`` False) set to 0, and the per-cell loss weight ``w`` (0 there,
    ``weight`` elsewhere, 1 without it), both shaped like ``x0``."""
    valid = ~torch.isnan(x0)
    if mask is not None:
        if mask.dim() > x0.dim():
            raise ValueError(f"mask has {mask.dim()} dims, more than x0's {x0.dim()}")
        valid = valid & mask.to(torch.bool).expand_as(x0)
    w = valid.to(x0.dtype)
    if weight is not None:
        w = w * weight.to(x0)
    return torch.where(valid, x0, torch.zeros_like(x0)), w


def weighted_error(D: Tensor, target: Tensor, w: Tensor) -> Tensor:
    """Per-sample ``sum(w |D - target|^2) / sum(w)`` over all but the batch dim, in fp32."""
    dims = tuple(range(1, target.ndim))
    return (w * (D.float() - target.float()) ** 2).sum(dims) / w.sum(dims).clamp_min(1e-12)


class DiffusionLoss:
    """``E_sigma E_n [ lambda(sigma) * mean_w |D(x0 + sigma n, sigma) - x0|^2 ]``.

    Args:
        process: gives the training sigma distribution (default :class:`EDM`, log-normal).
        weighting: see :func:`loss_weight`.
        cond_dropout: probability of zeroing the ``cond`` tensor of a sample (trains the unconditional branch for
            classifier-free guidance).
        noise_factor: 1 trains on white noise; ``k > 1`` on :func:`~sciffusion.diffusion.random.coarse_noise` drawn at
            ``1/k`` resolution (low-frequency noise hides blob-sized structure: reconstruction-based anomaly
            detection, AnoDDPM). A model trained so must be used with the same noise.

    ``__call__(denoiser, x0, *, mask=None, weight=None, generator=None, sigma=None, **cond)``:
    ``x0`` is ``(batch, channels, *spatial)``; NaN cells of ``x0`` and cells where ``mask`` is False are left out of
    the loss (and fed to the network as 0); ``weight`` (broadcastable to ``x0``, e.g. latitude weights) weights the
    per-element error. Each sample's error is the weighted mean over its valid cells. Returns the scalar loss; the
    per-sample losses are in ``self.last_per_sample``.
    """

    def __init__(self, process: NoiseProcess | None = None, weighting: str = "edm", gamma: float = 5.0,
                 cond_dropout: float = 0.0, noise_factor: int = 1) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1); got {cond_dropout}")
        if int(noise_factor) < 1:
            raise ValueError(f"noise_factor must be >= 1; got {noise_factor}")
        self.noise_factor = int(noise_factor)
        self.process = process or EDM()
        self.weighting, self.gamma, self.cond_dropout = weighting, gamma, cond_dropout
        self.last_per_sample: Tensor | None = None

    def __call__(self, denoiser: Denoiser, x0: Tensor, *, mask: Tensor | None = None, weight: Tensor | None = None,
                 generator: Generator = None, sigma: Tensor | None = None, **cond) -> Tensor:
        check_batch(x0, "x0")
        x0, w = loss_cells(x0, mask, weight)
        if sigma is None:
            sigma = self.process.sample_sigma(x0.shape[0], generator=generator, device=x0.device)
        sigma = sigma.to(device=x0.device, dtype=torch.float32)
        if self.cond_dropout > 0 and cond.get("cond") is not None:
            c = cond["cond"]
            g = generator if isinstance(generator, torch.Generator) else None
            keep = torch.rand(c.shape[0], generator=g, device=c.device) >= self.cond_dropout
            cond = {**cond, "cond": c * append_dims(keep.to(c.dtype), c.ndim)}
        n = (randn_like(x0, generator) if self.noise_factor == 1 else
             coarse_noise(x0.shape, self.noise_factor, generator, device=x0.device, dtype=x0.dtype))
        x = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * n
        D = denoiser(x, sigma, **cond)
        per_sample = loss_weight(sigma, denoiser.sigma_data, self.weighting, self.gamma) * weighted_error(D, x0, w)
        self.last_per_sample = per_sample.detach()
        return per_sample.mean()
