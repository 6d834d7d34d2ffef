"""The denoiser contract and EDM preconditioning.

Every sampler calls ``denoiser(x, sigma, **cond) -> D`` where ``x = x0 + sigma * n`` is shaped
``(batch, channels, *spatial)``, ``sigma`` is ``(batch,)`` and ``D`` estimates ``x0`` (same shape as ``x``).
:class:`Denoiser` turns a raw network ``F(x_in, c_noise, **cond)`` into that contract (Karras et al. 2022, eq. 7):

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

The parameterisation fixes the coefficients, so a network trained to predict epsilon, v or x0 is sampled by the
same samplers:

=========  =====================  ==========================  ======================
           c_skip                 c_out                       F predicts
=========  =====================  ==========================  ======================
``edm``    sd^2 / (s^2 + sd^2)    s sd / sqrt(s^2 + sd^2)     EDM's scaled residual
``v``      sd^2 / (s^2 + sd^2)    -s sd / sqrt(s^2 + sd^2)    v (sd = 1: Salimans & Ho)
``eps``    1                      -s                          the noise n
``x0``     0                      1                           x0
``flow``   1 / (1 + s)            -s / (1 + s)                the velocity n - x0
``gen``    sd / s                 sd                          a sample's correction
=========  =====================  ==========================  ======================

and ``c_in = 1 / sqrt(s^2 + sd^2)`` for the first four (with ``sd = 1`` this is the VP scaling
``sqrt(alpha_bar)``). ``flow`` is rectified flow / flow matching (Lipman et al. 2023; Liu et al. 2023): the network
sees ``x_t = (1 - t) x0 + t n``, so ``c_in = 1 / (1 + s)`` (``t = s / (1 + s)``, :class:`~.noise.Flow`), and
predicts the velocity ``dx_t / dt = n - x0``, from which ``x0 = x_t - t v``. Like ``eps`` and ``x0`` it does not
use ``sigma_data`` (flow models take unit-scale data). ``gen`` is a one-pass generator's
(:mod:`~.crps`): at its one noise level its input is ``x = s z``, so ``D = sd z + sd F``: an untrained
(zero-output) generator draws ``N(0, sd^2)``, the Gaussian base law every diffusion model here starts from, and
training learns the correction ``F``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .tensors import append_dims, as_sigma, check_batch

PARAMETERIZATIONS = ("edm", "v", "eps", "x0", "flow", "gen")


class DenoiserFn(Protocol):
    """``denoiser(x, sigma, **extra_args) -> D``: any callable of the contract above (a plain function will do)."""

    def __call__(self, x: Tensor, sigma: Tensor, **cond) -> Tensor: ...


@runtime_checkable
class ScaledDenoiser(Protocol):
    """A denoiser that declares the standard deviation of its data, ``sigma_data`` (same units as ``x``).

    :class:`Denoiser` and the exact denoisers have it; wrappers (:class:`DenoiserWrapper`) pass on the one of the
    denoiser they wrap. The exact-Gaussian part of :func:`~sciffusion.diffusion.samplers.dpmpp_2m` reads it.
    """

    sigma_data: float

    def __call__(self, x: Tensor, sigma: Tensor, **cond) -> Tensor: ...


def declared_sigma_data(denoiser: DenoiserFn) -> float:
    """The ``sigma_data`` a denoiser declares (:class:`ScaledDenoiser`); a one-line error if it declares none."""
    if not isinstance(denoiser, ScaledDenoiser):
        raise ValueError(f"{type(denoiser).__name__} declares no sigma_data (the exact-Gaussian sampler needs it): "
                         "wrap the network in sciffusion.Denoiser or give the wrapper a sigma_data attribute")
    return float(denoiser.sigma_data)


class DenoiserWrapper(nn.Module):
    """Base class of denoisers built on another one (guidance, known values, tiling): it keeps the inner denoiser
    as ``self.denoiser`` and declares its ``sigma_data``, so samplers see the wrapper as the model it wraps."""

    def __init__(self, denoiser: DenoiserFn) -> None:
        super().__init__()
        self.denoiser = denoiser

    @property
    def sigma_data(self) -> float:
        return declared_sigma_data(self.denoiser)


class TowardsGaussian(DenoiserWrapper):
    """The denoiser shrunk towards the exact denoiser of the Gaussian base law N(0, sigma_data^2 I):

        D_w(x; sigma) = D_G(x; sigma) + w (D(x; sigma) - D_G(x; sigma)),
        D_G(x; sigma) = sigma_data^2 / (sigma^2 + sigma_data^2) x

    ``w = 1`` is the model, ``w = 0`` the base law exactly (for a model trained on whitened residuals of a
    statistical model, that statistical model), values between blend the two estimates of E[x0 | x]. A task that
    starts from a base it must not do worse than picks ``w`` on validation data ("do no harm").
    """

    def __init__(self, denoiser: DenoiserFn, weight: float) -> None:
        super().__init__(denoiser)
        self.weight = float(weight)

    def forward(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        sd2 = self.sigma_data ** 2
        s = append_dims(as_sigma(sigma, x), x.ndim).to(x.dtype)
        base = sd2 / (s * s + sd2) * x
        if self.weight == 0.0:  # the base alone: no network call
            return base
        return base + self.weight * (self.denoiser(x, sigma, **cond) - base)


def edm_c_noise(sigma: Tensor) -> Tensor:
    return torch.log(sigma.clamp_min(1e-20)) / 4


def coefficients(sigma: Tensor, sigma_data: float, parameterization: str = "edm") -> tuple[Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in)`` for noise levels ``sigma`` (any shape) and data standard deviation ``sigma_data``."""
    sd2 = sigma_data**2
    c_in = (sigma**2 + sd2).rsqrt()
    if parameterization in ("edm", "v"):
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * sigma_data * c_in * (1 if parameterization == "edm" else -1)
    elif parameterization == "eps":
        c_skip, c_out = torch.ones_like(sigma), -sigma
    elif parameterization == "x0":
        c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
    elif parameterization == "flow":  # x_t = x / (1 + s), D = x_t - t v with t = s / (1 + s)
        c_in = 1.0 / (1.0 + sigma)
        c_skip, c_out = c_in, -sigma * c_in
    elif parameterization == "gen":  # a one-pass generator: D = sd z + sd F for x = s z
        c_skip, c_out = sigma_data / sigma, torch.full_like(sigma, sigma_data)
    else:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")
    return c_skip, c_out, c_in


def network_target(x0: Tensor, noise: Tensor, sigma: Tensor, sigma_data: float, parameterization: str) -> Tensor:
    """What ``F`` should output for clean ``x0`` noised with ``noise`` at ``sigma`` (``(batch,)``):
    ``(x0 - c_skip * x) / c_out``, written in closed form so it is exact where ``c_out`` is 0."""
    s = append_dims(sigma, x0.ndim)
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x0
    if parameterization == "flow":
        return noise - x0
    c_skip, c_out, _ = coefficients(s, sigma_data, parameterization)
    return (x0 - c_skip * (x0 + s * noise)) / c_out


def measure_sigma_data(data: Tensor | Callable[[], Tensor], mask: Tensor | None = None) -> float:
    """Standard deviation of the data (NaN cells and cells outside ``mask`` ignored): EDM's ``sigma_data``.

    Measured, not assumed: normalised fields rarely have exactly the textbook 0.5.
    """
    x = data() if callable(data) else data
    valid = torch.isfinite(x)
    if mask is not None:
        valid = valid & mask.bool()
    vals = x[valid].double()
    if vals.numel() < 2:
        raise ValueError("cannot measure sigma_data: fewer than two finite values in the data")
    sd = float(vals.std())
    if sd <= 0:
        raise ValueError("cannot measure sigma_data: the data are constant")
    return sd


class Denoiser(nn.Module):
    """Wrap a network ``F(x_in, c_noise, cond=None) -> out`` as a denoiser ``D(x, sigma, **cond)``.

    Args:
        net: the network; its output must have the shape of ``x``.
        sigma_data: data standard deviation (use :func:`measure_sigma_data`).
        parameterization: ``"edm"``, ``"v"``, ``"eps"``, ``"x0"``, ``"flow"`` or ``"gen"`` (see module docstring).
        c_noise: maps sigma ``(batch,)`` to the network's noise input; default ``ln(sigma) / 4``. For a network
            trained on a DDPM schedule pass ``VP().c_noise`` (the fractional timestep).

    The preconditioning is computed in fp32 (fp64 for fp64 inputs) whatever autocast does to the network, and the
    output has the dtype of ``x``.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, parameterization: str = "edm",
                 c_noise: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0; got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.parameterization = parameterization
        self.c_noise = c_noise or edm_c_noise

    def forward(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        check_batch(x)
        sigma = as_sigma(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in coefficients(sigma, self.sigma_data,
                                                                            self.parameterization))
        xs = x.to(sigma.dtype)
        out = self.net(c_in * xs, self.c_noise(sigma), **cond)
        if out.shape != x.shape:
            raise ValueError(f"network output shape {tuple(out.shape)} does not match input shape {tuple(x.shape)}")
        return (c_skip * xs + c_out * out.to(sigma.dtype)).to(x.dtype)
