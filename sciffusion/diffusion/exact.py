"""Exact denoisers for data whose posterior mean is known in closed form.

They obey the denoiser contract, so they test samplers (a sampler driven by the exact denoiser must reproduce the
data distribution) and measure solver error separately from network error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .random import Generator, randn
from .tensors import append_dims, as_sigma, check_batch


class GaussianDenoiser(nn.Module):
    """Data ``x0 ~ N(mean, std^2)`` independently per element: ``D(x, s) = mean + std^2 / (std^2 + s^2) (x - mean)``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.mean, self.std = float(mean), float(std)
        self.sigma_data = math.sqrt(self.std**2 + self.mean**2)

    def forward(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        s = append_dims(as_sigma(sigma, x), x.ndim).to(x.dtype)
        return self.mean + self.std**2 / (self.std**2 + s**2) * (x - self.mean)

    def ode_solution(self, x_start: Tensor, sigma_start: float, sigma: float) -> Tensor:
        """Exact probability-flow ODE solution from ``x_start`` at ``sigma_start`` to ``sigma``."""
        scale = math.sqrt((self.std**2 + sigma**2) / (self.std**2 + sigma_start**2))
        return self.mean + (x_start - self.mean) * scale


class GaussianMixtureDenoiser(nn.Module):
    """Data: each sample, flattened to a vector of size ``d = prod(sample_shape)``, is drawn from the mixture
    ``sum_k w_k N(means[k], stds[k]^2 I)``. ``means`` is ``(K, *sample_shape)``.

    ``D(x, s) = sum_k r_k(x, s) (mu_k + std_k^2 / (std_k^2 + s^2) (x - mu_k))`` with responsibilities
    ``r_k ∝ w_k N(x; mu_k, (std_k^2 + s^2) I)``.
    """

    means: Tensor  # (K, *sample_shape) buffers, float64
    stds: Tensor  # (K,)
    weights: Tensor  # (K,), summing to 1

    def __init__(self, means: Tensor, stds: float | Sequence[float] | Tensor,
                 weights: Sequence[float] | Tensor | None = None):
        super().__init__()
        K = means.shape[0]
        self.register_buffer("means", means.to(torch.float64))
        self.register_buffer("stds", torch.as_tensor(stds, dtype=torch.float64).expand(K).clone())
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights,
                                                                                                   dtype=torch.float64)
        if w.shape != (K,) or (w < 0).any():
            raise ValueError(f"weights must be {K} non-negative numbers")
        self.register_buffer("weights", w / w.sum())
        second = (self.weights[:, None] * (self.means.flatten(1) ** 2 + self.stds[:, None] ** 2)).sum(0).mean()
        mean = (self.weights[:, None] * self.means.flatten(1)).sum(0).mean()
        self.sigma_data = float((second - mean**2).sqrt())

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def sample(self, n: int, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """``n`` draws from the data distribution and their component labels."""
        g = generator if isinstance(generator, torch.Generator) else None
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        x = self.means[k] + append_dims(self.stds[k], self.means.ndim) * randn((n, *self.sample_shape), g,
                                                                             dtype=torch.float64)
        return x, k

    def responsibilities(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``(B, K)`` posterior component probabilities of noisy ``x`` at noise level ``sigma`` (``(B,)``)."""
        xf = x.to(torch.float64).flatten(1)
        d = xf.shape[1]
        var = self.stds[None] ** 2 + sigma.to(torch.float64)[:, None] ** 2  # (B, K)
        dist2 = torch.cdist(xf, self.means.flatten(1)) ** 2
        logp = torch.log(self.weights)[None] - 0.5 * dist2 / var - 0.5 * d * torch.log(var)
        return torch.softmax(logp, dim=1)

    def forward(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        check_batch(x)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x has sample shape {tuple(x.shape[1:])}, the mixture {self.sample_shape}")
        sigma = as_sigma(sigma, x).to(torch.float64)
        r = self.responsibilities(x, sigma)
        shrink = self.stds[None] ** 2 / (self.stds[None] ** 2 + sigma[:, None] ** 2)  # (B, K)
        xf, mu = x.to(torch.float64).flatten(1), self.means.flatten(1)
        est = mu[None] + shrink[..., None] * (xf[:, None] - mu[None])  # (B, K, d)
        return (r[..., None] * est).sum(1).reshape(x.shape).to(x.dtype)


def ring_mixture(modes: int = 8, radius: float = 3.0, std: float = 0.3) -> GaussianMixtureDenoiser:
    """The 2-D benchmark mixture: ``modes`` equal Gaussians on a circle; samples shaped ``(1, 2)``."""
    angle = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
    means = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)[:, None, :]
    return GaussianMixtureDenoiser(means, std)
