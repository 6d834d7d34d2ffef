"""Shape helpers shared by the maths layer.

Every tensor of samples is shaped ``(batch, channels, *spatial)`` with 1, 2 or 3 spatial dims; noise levels
``sigma`` are shaped ``(batch,)`` and broadcast with :func:`append_dims`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append trailing singleton dims to ``x`` until it has ``target_ndim`` dims (``(B,) -> (B, 1, 1, ...)``)."""
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"cannot append dims: tensor has {x.ndim} dims, more than the target {target_ndim}")
    return x[(...,) + (None,) * missing]


def check_batch(x: Tensor, name: str = "x") -> None:
    """Raise a one-line ValueError unless ``x`` is ``(batch, channels, *spatial)`` with 1-3 spatial dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not 3 <= x.ndim <= 5:
        raise ValueError(
            f"{name} must be shaped (batch, channels, *spatial) with 1-3 spatial dims; got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def as_sigma(sigma: Tensor | float, x: Tensor, *, check_finite: bool = True) -> Tensor:
    """Return ``sigma`` as a ``(batch,)`` tensor on ``x``'s device, in fp32 or fp64 (never lower precision).

    A float or 0-d tensor is broadcast to the batch. The finiteness check needs the values on the host, so it is
    only done for CPU tensors and Python floats; samplers validate their whole grid once before the loop.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(sigma, (int, float)):
        if check_finite and not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0; got {sigma}")
        return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=dtype)
    sigma = sigma.to(device=x.device, dtype=dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or shaped (batch,) = ({x.shape[0]},); got {tuple(sigma.shape)}")
    if check_finite and sigma.device.type == "cpu" and not (torch.isfinite(sigma).all() and (sigma >= 0).all()):
        raise ValueError(f"sigma must be finite and >= 0; got {sigma.tolist()}")
    return sigma
