"""Conditioning at sampling time: classifier-free guidance and known values (inpainting).

Both wrap a denoiser and are denoisers themselves, so every sampler uses them unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precond import DenoiserFn, DenoiserWrapper
from .tensors import check_batch


class ClassifierFreeGuidance(DenoiserWrapper):
    """``D = D_uncond + scale * (D_cond - D_uncond)`` (Ho & Salimans 2022).

    The unconditional branch is the same denoiser with the ``cond`` tensor zeroed, which is what
    :class:`~sciffusion.diffusion.loss.DiffusionLoss` trains with ``cond_dropout > 0``. ``scale = 1`` is plain
    conditional sampling (one network call); otherwise both branches run in one batched call.
    """

    def __init__(self, denoiser: DenoiserFn, scale: float) -> None:
        super().__init__(denoiser)
        self.scale = float(scale)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None, **kw) -> Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance needs a `cond` tensor")
        if self.scale == 1.0:
            return self.denoiser(x, sigma, cond=cond, **kw)
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                             cond=torch.cat([cond, torch.zeros_like(cond)]), **kw)
        d_cond, d_uncond = both.chunk(2)
        return d_uncond + self.scale * (d_cond - d_uncond)


class KnownValues(DenoiserWrapper):
    """Keep observed values during sampling (imputation, forecasting by inpainting).

    ``known`` has the shape of a sample batch; ``mask`` (broadcastable to it, True where observed) marks the cells
    to keep. ``mode="replace"`` sets the denoised estimate to ``known`` on the mask: for every sampler the observed
    cells then follow ``known + sigma * n`` and land exactly on ``known`` at sigma 0, while the network sees them at
    every step. ``mode="guide"`` also moves the free cells along ``-grad_x |mask (D - known)|^2`` (reconstruction
    guidance, Ho et al. 2022, scaled by ``guidance_scale``), which makes them agree with the observations better at
    the cost of a backward pass per call.
    """

    def __init__(self, denoiser: DenoiserFn, known: Tensor, mask: Tensor, mode: str = "replace",
                 guidance_scale: float = 4.0) -> None:
        super().__init__(denoiser)
        check_batch(known, "known")
        if mode not in ("replace", "guide"):
            raise ValueError(f"mode must be 'replace' or 'guide'; got {mode!r}")
        try:
            mask = torch.broadcast_to(mask.to(torch.bool), known.shape)
        except RuntimeError:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to known "
                             f"{tuple(known.shape)}") from None
        if torch.isnan(known[mask]).any():
            raise ValueError("known values contain NaN inside the mask")
        self.mode, self.guidance_scale = mode, float(guidance_scale)
        self.known = torch.nan_to_num(known)
        self.mask = mask

    def forward(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        if x.shape != self.known.shape:
            raise ValueError(f"x shape {tuple(x.shape)} does not match known values {tuple(self.known.shape)}")
        known = self.known.to(x)
        if self.mode == "guide":
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                D = self.denoiser(xg, sigma, **cond)
                err = ((D - known) * self.mask).pow(2).sum()
                (grad,) = torch.autograd.grad(err, xg)
            # A step in x0 units along the gradient of the squared error (Ho et al. 2022, eq. 8, w_r alpha_t / 2).
            D = D.detach() - self.guidance_scale * 0.5 * grad
        else:
            D = self.denoiser(x, sigma, **cond)
        return torch.where(self.mask, known, D)


def initial_state(known: Tensor, mask: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """Starting point for inpainting: ``known + sigma * noise`` on the mask, ``sigma * noise`` elsewhere."""
    m = torch.broadcast_to(mask.to(torch.bool), known.shape)
    return torch.where(m, torch.nan_to_num(known), torch.zeros_like(known)) + sigma * noise


def concat_condition(*conds: Tensor) -> Tensor:
    """Stack condition fields along channels (``(B, C_i, *spatial)`` each -> ``(B, sum C_i, *spatial)``)."""
    if not conds:
        raise ValueError("concat_condition needs at least one tensor")
    for c in conds:
        check_batch(c, "cond")
    spatial = {tuple(c.shape[2:]) for c in conds}
    if len(spatial) != 1 or len({c.shape[0] for c in conds}) != 1:
        raise ValueError(f"condition tensors disagree in batch or spatial shape: {[tuple(c.shape) for c in conds]}")
    return torch.cat(conds, dim=1)


