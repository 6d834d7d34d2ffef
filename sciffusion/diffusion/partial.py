"""Partial diffusion: noise clean data to a level ``sigma``, then denoise back (SDEdit, AnoDDPM).

What the model cannot reconstruct from a partly noised input is what it finds unlikely: the anomaly and
super-resolution tasks build on this.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .noise import karras_sigmas
from .precond import DenoiserFn
from .random import Generator, randn_like
from .samplers import ExtraArgs, check_options, resolve_sampler
from .tensors import check_batch


def partial_diffusion(denoiser: DenoiserFn, x0: Tensor, sigma: float, *, steps: int = 1,
                      sampler: str | Callable = "euler", noise: Tensor | None = None, generator: Generator = None,
                      sigma_min: float = 0.002, rho: float = 7.0, extra_args: ExtraArgs = None,
                      **options) -> Tensor:
    """Reconstruct ``x0`` (``(B, C, *spatial)``) from ``x0 + sigma * noise``.

    ``steps = 1`` is a one-step reconstruction ``D(x0 + sigma n, sigma)``; more steps walk an EDM grid from
    ``sigma`` down to 0 with ``sampler``. ``noise`` defaults to white noise from ``generator``; pass e.g.
    :func:`~sciffusion.diffusion.random.coarse_noise` for low-frequency noise. ``extra_args`` go to every denoiser
    call, ``options`` to the sampler (checked as :func:`~sciffusion.diffusion.samplers.sample` checks them).
    """
    check_batch(x0, "x0")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    if noise is None:
        noise = randn_like(x0, generator)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 {tuple(x0.shape)}")
    fn = resolve_sampler(sampler)
    check_options(sampler, options)
    sigmas = karras_sigmas(steps, min(sigma_min, sigma), sigma, rho) if steps > 1 else torch.tensor([sigma, 0.0])
    return fn(denoiser, x0 + sigma * noise, sigmas, extra_args=extra_args, generator=generator, **options)
