"""CRPS-trained one-pass generators: a network maps (condition, noise) to a sample in one call, trained on the
score itself (Gneiting & Raftery 2007) over an ensemble of ``M >= 2`` samples per training example, as FGN
(Alet et al. 2025, WeatherNext 2) and AIFS-ENS (Lang et al. 2024) are.

The generator is written in the engine's terms so that every sampling path takes it unchanged: it is a
:class:`~sciffusion.diffusion.precond.Denoiser` evaluated at the one noise level :data:`GENERATOR_SIGMA`, and the
noise it transforms is the sampler's starting noise ``GENERATOR_SIGMA * z``. Its ``gen`` parameterisation,
``D = sd z + sd F(z, cond)``, makes an untrained (zero-output) generator draw ``N(0, sd^2)``, the Gaussian base law
an untrained diffusion model samples, so training corrects the base instead of growing a spread from nothing (with
``x0``, ``D = F``, a zero-initialised generator draws no spread at all: measured on the main job, that start left
the trained generator under-dispersed, spread/skill 0.61). One
Euler step from ``GENERATOR_SIGMA`` to 0 returns ``D(x)`` exactly (``x + (0 - s) (x - D) / s = D``), so the grid
``[GENERATOR_SIGMA, 0]`` with the ``euler`` sampler is one network call per member, seeded like any other sample.
The noise enters as input channels (the U-Net's ``x``), one standard normal per output cell.

The training score is the almost-fair CRPS of AIFS-ENS, per cell, for members ``x_1..x_M`` and truth ``y``:

    afCRPS_a = 1/M sum_j |x_j - y| - (a / (2 M (M - 1)) + (1 - a) / (2 M^2)) sum_{j != k} |x_j - x_k|

``a = 1`` is the fair CRPS (unbiased for the CRPS of the generator's law; with two members its gradient can let
the members collapse onto each other once, which ``a < 1`` discourages), ``a = 0`` the empirical CRPS of the
M-member ensemble (which rewards under-dispersion). AIFS-ENS uses ``a = 0.95``; so does the default here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import loss_cells
from .precond import Denoiser
from .random import Generator, randn
from .tensors import check_batch

#: The noise level a generator is evaluated at: its input is ``GENERATOR_SIGMA * z``, ``z ~ N(0, I)``.
GENERATOR_SIGMA = 1.0
#: AIFS-ENS's weight of the fair CRPS in the almost-fair CRPS (the rest is the empirical CRPS).
DEFAULT_ALPHA = 0.95


def one_pass_grid() -> list[float]:
    """The sampling grid of a one-pass generator: from :data:`GENERATOR_SIGMA` to 0 in one Euler step."""
    return [GENERATOR_SIGMA, 0.0]


def afcrps(members: Tensor, target: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """Almost-fair CRPS per cell (module docstring). ``members``: ``(M, *shape)``, ``M >= 2``; ``target``:
    ``shape``. Returns ``shape``. ``alpha=1``: fair CRPS; ``alpha=0``: the ensemble's empirical CRPS."""
    M = members.shape[0]
    if M < 2:
        raise ValueError(f"the CRPS of an ensemble needs at least 2 members; got {M}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    skill = (members - target).abs().mean(0)
    pairs = torch.zeros_like(skill)
    for j in range(M - 1):  # each unordered pair once: memory of one field, not M^2
        pairs = pairs + (members[j] - members[j + 1:]).abs().sum(0)
    spread = 2.0 * pairs * (alpha / (2.0 * M * (M - 1)) + (1.0 - alpha) / (2.0 * M * M))
    return skill - spread


class CRPSLoss:
    """``E [ mean_w afCRPS(G(z_1..z_M; cond), x0) ]``: the training loss of a one-pass generator ``G``, the
    denoiser (any parameterisation; ``gen`` is meant for it) evaluated at :data:`GENERATOR_SIGMA` (module
    docstring).

    Args:
        members: samples per training example (``M >= 2``); FGN and AIFS-ENS train with 2 to 4.
        alpha: weight of the fair CRPS in the almost-fair CRPS (:func:`afcrps`).

    ``__call__(denoiser, x0, *, mask=None, weight=None, generator=None, sigma=None, **cond)`` as
    :class:`~sciffusion.DiffusionLoss`: NaN cells and ``mask`` False are left out, ``weight`` (latitude weights)
    weights each cell's CRPS, each sample's score is the weighted mean over its valid cells. ``sigma`` is ignored (a
    generator has one noise level). Returns the scalar loss; per-sample losses in ``self.last_per_sample``.
    """

    def __init__(self, members: int = 2, alpha: float = DEFAULT_ALPHA) -> None:
        if int(members) < 2:
            raise ValueError(f"a CRPS-trained generator needs members >= 2 per example; got {members}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
        self.members, self.alpha = int(members), float(alpha)
        self.last_per_sample: Tensor | None = None

    def __call__(self, denoiser: Denoiser, x0: Tensor, *, mask: Tensor | None = None, weight: Tensor | None = None,
                 generator: Generator = None, sigma: Tensor | None = None, **cond) -> Tensor:
        check_batch(x0, "x0")
        x0, w = loss_cells(x0, mask, weight)
        B, M = x0.shape[0], self.members
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError("CRPSLoss takes one torch.Generator (or None), not one per sample")
        z = randn((M * B, *x0.shape[1:]), generator, device=x0.device, dtype=x0.dtype)
        # member-major: rows m*B .. (m+1)*B - 1 are member m of every example
        rep = {k: (v.repeat(M, *([1] * (v.ndim - 1))) if isinstance(v, Tensor) else v) for k, v in cond.items()}
        s = torch.full((M * B,), GENERATOR_SIGMA, device=x0.device, dtype=torch.float32)
        out = denoiser(GENERATOR_SIGMA * z, s, **rep).float().view(M, *x0.shape)
        score = afcrps(out, x0.float(), self.alpha)
        dims = tuple(range(1, x0.ndim))
        per_sample = (w * score).sum(dims) / w.sum(dims).clamp_min(1e-12)
        self.last_per_sample = per_sample.detach()
        return per_sample.mean()
