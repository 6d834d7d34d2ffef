"""Noise processes in sigma space.

Every process is written as ``x = x0 + sigma * n`` with ``n ~ N(0, I)``. A variance-preserving process
``z = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) n`` is the same thing scaled: ``x = z / sqrt(alpha_bar)`` with
``sigma = sqrt((1 - alpha_bar) / alpha_bar)``; so is a rectified flow ``x_t = (1 - t) x0 + t n``: ``x = x_t / (1 - t)``
with ``sigma = t / (1 - t)``. The scaling lives in the denoiser's ``c_in``, so one set of samplers serves DDPM, VE,
EDM and flow-matching models. A process gives two things: the distribution of training sigmas and the sampling
grid for ``N`` steps (descending, ending in 0).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .random import Generator, randn


# --- conversions -------------------------------------------------------------------------------------------------
def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """VP signal fraction ``alpha_bar = 1 / (1 + sigma^2)``."""
    return 1.0 / (1.0 + sigma**2)


def alpha_bar_to_sigma(alpha_bar: Tensor) -> Tensor:
    """Inverse of :func:`sigma_to_alpha_bar`: ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def sigma_to_logsnr(sigma: Tensor) -> Tensor:
    """Log signal-to-noise ratio of unit-scale data, ``log(1 / sigma^2)``."""
    return -2.0 * torch.log(sigma)


def logsnr_to_sigma(logsnr: Tensor) -> Tensor:
    """Inverse of :func:`sigma_to_logsnr`."""
    return torch.exp(-0.5 * logsnr)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """EDM grid (Karras et al. 2022, eq. 5): ``steps`` levels from ``sigma_max`` to ``sigma_min`` then a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max; got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_rho = 1.0 / rho
    sig = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.cat([sig, sig.new_zeros(1)]).to(device=device, dtype=dtype)


# --- processes ---------------------------------------------------------------------------------------------------
class NoiseProcess(ABC):
    """A forward process: training sigma distribution, sampling grid and the network's noise input ``c_noise``."""

    sigma_min: float
    sigma_max: float

    @abstractmethod
    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        """``n`` training noise levels, shape ``(n,)``."""

    @abstractmethod
    def sigmas(self, steps: int, *, device=None) -> Tensor:
        """Sampling grid for ``steps`` steps: ``steps + 1`` descending values, the last one 0."""

    def c_noise(self, sigma: Tensor) -> Tensor:
        """What the network is told about the noise level (EDM: ``ln(sigma) / 4``)."""
        return torch.log(sigma.clamp_min(1e-20)) / 4

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class EDM(NoiseProcess):
    """Karras et al. (2022): log-normal training sigmas, rho-spaced sampling grid."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 P_mean: float = -1.2, P_std: float = 1.2) -> None:
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.P_mean, self.P_std = P_mean, P_std

    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        return (self.P_mean + self.P_std * randn((n,), generator, device=device)).exp()

    def sigmas(self, steps: int, *, device=None) -> Tensor:
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho, device=device)


class Fixed(NoiseProcess):
    """One noise level for every sample: training with it is a denoising autoencoder (no diffusion), the baseline
    a diffusion model must beat on reconstruction-based tasks. Its sampling grid is the one step ``[sigma, 0]``."""

    def __init__(self, sigma: float = 0.5) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0; got {sigma}")
        self.sigma = self.sigma_min = self.sigma_max = float(sigma)

    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        return torch.full((n,), self.sigma, device=device)

    def sigmas(self, steps: int, *, device=None) -> Tensor:
        return torch.tensor([self.sigma, 0.0], device=device)


class VE(NoiseProcess):
    """Variance exploding (Song et al. 2021): log-uniform training sigmas, geometric sampling grid."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        u = torch.rand((n,), generator=generator if isinstance(generator, torch.Generator) else None, device=device)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u

    def sigmas(self, steps: int, *, device=None) -> Tensor:
        sig = torch.logspace(math.log10(self.sigma_max), math.log10(self.sigma_min), steps, dtype=torch.float64)
        return torch.cat([sig, sig.new_zeros(1)]).to(device=device, dtype=torch.float32)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return torch.log(0.5 * sigma.clamp_min(1e-20))


class VP(NoiseProcess):
    """Variance preserving, discrete time (DDPM): ``T`` steps with a ``linear`` (Ho et al. 2020) or ``cosine``
    (Nichol & Dhariwal 2021) beta schedule. Training draws a timestep uniformly; sampling uses ``steps`` timesteps
    evenly spaced from ``T - 1`` down to (but not including) 0, then sigma 0: spending a network call at t = 0, where
    sigma is ~0.01, buys nothing. ``c_noise`` is the (fractional) timestep, which a network trained on this
    process expects.
    """

    def __init__(self, schedule: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008) -> None:
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"VP schedule must be 'linear' or 'cosine'; got {schedule!r}")
        self.schedule, self.timesteps = schedule, timesteps
        self.beta_start, self.beta_end, self.cosine_s = beta_start, beta_end, cosine_s
        alpha_bar = torch.cumprod(1.0 - self.betas(), 0)
        self._log_sigmas = torch.log(alpha_bar_to_sigma(alpha_bar))  # float64, increasing in t
        self.sigma_min = float(self._log_sigmas[0].exp())
        self.sigma_max = float(self._log_sigmas[-1].exp())

    def betas(self) -> Tensor:
        """The ``T`` betas of the schedule (float64)."""
        T = self.timesteps
        if self.schedule == "linear":
            return torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64)
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + self.cosine_s) / (1 + self.cosine_s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)

    def alpha_bar(self, t: Tensor) -> Tensor:
        return sigma_to_alpha_bar(self.t_to_sigma(t))

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma at (fractional) timestep ``t`` in ``[0, T-1]``, linear in log sigma between integers."""
        t = t.to(torch.float64).clamp(0, self.timesteps - 1)
        lo = t.floor().long().clamp(max=self.timesteps - 2)
        w = t - lo
        ls = self._log_sigmas.to(t.device)
        return ((1 - w) * ls[lo] + w * ls[lo + 1]).exp()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`t_to_sigma` (clamped to the schedule's range)."""
        ls = self._log_sigmas.to(sigma.device)
        x = torch.log(sigma.to(torch.float64)).clamp(ls[0], ls[-1])
        hi = torch.searchsorted(ls, x.contiguous()).clamp(1, self.timesteps - 1)
        lo = hi - 1
        w = (x - ls[lo]) / (ls[hi] - ls[lo])
        return lo.to(torch.float64) + w

    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        g = generator if isinstance(generator, torch.Generator) else None
        t = torch.randint(0, self.timesteps, (n,), generator=g, device=device)
        return self.t_to_sigma(t).to(torch.float32)

    def sigmas(self, steps: int, *, device=None) -> Tensor:
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in [1, {self.timesteps}]; got {steps}")
        t = torch.linspace(self.timesteps - 1, 0, steps + 1, dtype=torch.float64)[:-1]
        sig = self.t_to_sigma(t)
        return torch.cat([sig, sig.new_zeros(1)]).to(device=device, dtype=torch.float32)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.sigma_to_t(sigma).to(sigma.dtype)


# --- flow matching -----------------------------------------------------------------------------------------------
def flow_t_to_sigma(t: Tensor) -> Tensor:
    """Rectified-flow time ``t`` in ``[0, 1)`` to sigma: ``x_t = (1 - t) x0 + t n`` is ``(1 - t) (x0 + sigma n)``
    with ``sigma = t / (1 - t)``."""
    return t / (1.0 - t)


def sigma_to_flow_t(sigma: Tensor) -> Tensor:
    """Inverse of :func:`flow_t_to_sigma`: ``t = sigma / (1 + sigma)``."""
    return sigma / (1.0 + sigma)


class Flow(NoiseProcess):
    """Rectified flow / conditional flow matching (Lipman et al. 2023; Liu et al. 2023): straight paths
    ``x_t = (1 - t) x0 + t n`` from the data (``t = 0``) to noise (``t = 1``), written in sigma space as
    ``x = x_t / (1 - t) = x0 + sigma n`` with ``sigma = t / (1 - t)``; the scaling ``1 - t = 1 / (1 + sigma)`` is the
    ``flow`` parameterisation's ``c_in`` (:func:`~sciffusion.diffusion.precond.coefficients`), as VP's is, so every
    sampler, guidance and the grid fit serve it unchanged (Euler in sigma is Euler in ``t`` along the flow: DDIM).

    Args:
        loc, scale: training times are logit-normal, ``logit(t) ~ N(loc, scale^2)`` (Esser et al. 2024, SD3: 0 and
            1), which is a log-normal sigma: ``ln(sigma) = logit(t)``.
        shift: the sampling grid is uniform in ``t`` and then shifted, ``t' = shift t / (1 + (shift - 1) t)``;
            ``shift > 1`` spends more steps at high noise (SD3 uses 3 at high resolution), 1 keeps it uniform.
        sigma_max: where the grid starts, ``t_max = sigma_max / (1 + sigma_max)`` (pure noise, ``t = 1``, is infinite
            in sigma space; at 1e3 the data's share of ``x_t`` is 0.1% of its scale).
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0, shift: float = 1.0, sigma_max: float = 1000.0) -> None:
        if not scale > 0 or not shift > 0 or not sigma_max > 0:
            raise ValueError(f"scale, shift and sigma_max must be > 0; got {scale}, {shift}, {sigma_max}")
        self.loc, self.scale, self.shift = float(loc), float(scale), float(shift)
        self.sigma_max = float(sigma_max)
        self.sigma_min = 0.0

    def sample_sigma(self, n: int, *, generator: Generator = None, device=None) -> Tensor:
        return (self.loc + self.scale * randn((n,), generator, device=device)).exp()

    def times(self, steps: int, *, device=None) -> Tensor:
        """The ``steps + 1`` flow times of the sampling grid, from ``t_max`` down to 0 (float64)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        t_max = self.sigma_max / (1.0 + self.sigma_max)
        t = torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64, device=device)
        return self.shift * t / (1.0 + (self.shift - 1.0) * t)

    def sigmas(self, steps: int, *, device=None) -> Tensor:
        return flow_t_to_sigma(self.times(steps, device=device)).to(torch.float32)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The flow time ``t``, what networks trained as flows are told."""
        return sigma_to_flow_t(sigma)


PROCESSES = {"edm": EDM, "ve": VE, "vp": VP, "fixed": Fixed, "flow": Flow}
