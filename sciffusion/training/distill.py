"""Distilling a trained run into a few-step run (``sciffusion distill``): the student module and its settings.

The student is the teacher's network, trained further on the task's own data with the target of
:mod:`sciffusion.diffusion.distill` (one round of progressive distillation onto a fixed ``steps``-step grid), and
sampled with Euler steps over that grid. It is an ordinary run: the same network, preconditioning and conditioning,
so every sampling verb and wrapper uses it; its config's ``distill`` section and its metadata say what it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..diffusion import declared_sigma_data, karras_sigmas
from ..diffusion.distill import step_target
from ..diffusion.loss import loss_cells, loss_weight, weighted_error
from .module import DiffusionModule
from .sampling import NOISE_KEYS, SamplingSpec


@dataclass(frozen=True)
class DistillConfig:
    """The ``distill`` section of a distilled run's config."""

    teacher: str  # the teacher run's directory
    steps: int = 4  # student steps (network calls per sample: Euler, one each)
    substeps: int = 4  # teacher DPM-Solver++(2M) steps per student step (teacher NFE per target: steps * substeps)
    sigma_min: float = 0.05  # the student grid's smallest non-zero sigma (normalised units); rho-7 from sigma_max
    sigma_min_teacher: float = 0.002  # where the teacher's solve of the last student step stops before its 0 step

    def __post_init__(self) -> None:
        if self.steps < 1 or self.substeps < 1:
            raise ValueError(f"distill steps and substeps must be >= 1; got {self.steps}, {self.substeps}")
        if not 0 < self.sigma_min_teacher <= self.sigma_min:
            raise ValueError(f"distill needs 0 < sigma_min_teacher <= sigma_min; got {self.sigma_min_teacher}, "
                             f"{self.sigma_min}")

    def grid(self, sigma_max: float) -> list[float]:
        """The student's grid: EDM's rho-7 grid of ``steps`` steps on ``[sigma_min, sigma_max]``, then 0."""
        grid = karras_sigmas(self.steps, min(self.sigma_min, sigma_max), sigma_max, 7.0, dtype=torch.float64)
        grid[0] = sigma_max  # exactly where the teacher starts, not the rho-th power's round trip
        return grid.tolist()


class DistillationModule(DiffusionModule):
    """A student :class:`DiffusionModule` (the teacher's network and weights) trained on the step-distillation
    target; ``teacher`` is the teacher's denoiser as it samples (EMA weights, ``net_weight``), frozen."""

    def __init__(self, model: dict[str, Any], teacher: torch.nn.Module, teacher_spec: SamplingSpec,
                 distill: DistillConfig) -> None:
        super().__init__(**model)
        self.teacher = teacher.requires_grad_(False).eval()
        # the teacher's own solver for the targets: DPM-Solver++(2M), its Gaussian part exact when the run says so
        self.teacher_sigma_data = declared_sigma_data(teacher) if teacher_spec.exact_gaussian else 0.0
        self.distill = distill
        self.grid = distill.grid(teacher_spec.sigma_start)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x0, w = loss_cells(batch["x"], batch.get("mask"), batch.get("weight"))
        # one student step per batch (the global RNG is reseeded from the run seed before every step)
        i = int(torch.randint(len(self.grid) - 1, ()))
        sigma, sigma_next = self.grid[i], self.grid[i + 1]
        x = x0 + sigma * torch.randn_like(x0)
        cond = {"cond": batch["cond"]} if batch.get("cond") is not None else {}
        target = step_target(self.teacher, x, sigma, sigma_next, substeps=self.distill.substeps,
                             sigma_min=self.distill.sigma_min_teacher, sigma_data=self.teacher_sigma_data,
                             extra_args=cond)
        s = x.new_full((x.shape[0],), sigma, dtype=torch.float32)
        D = self.training_denoiser()(x, s, **cond)
        hp: Any = self.hparams
        loss = (loss_weight(s, hp.sigma_data, hp.weighting) * weighted_error(D, target, w)).mean()
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss


def distillation_module(model: dict[str, Any], distill: dict[str, Any]) -> tuple[DistillationModule, dict]:
    """The student of ``distill["teacher"]``, started from the teacher's EMA weights, and the sampling settings of
    the distilled run (Euler over the student grid; the inflation is recalibrated by the task's hook)."""
    from .fit import load_trained

    cfg = DistillConfig(**distill)
    teacher = load_trained(cfg.teacher)
    teacher.require_noise_levels("distillation")
    if teacher.config.get("distill"):
        raise ValueError(f"{cfg.teacher} is itself a distilled run; distil its teacher "
                         f"({teacher.config['distill'].get('teacher')}) with the steps you want")
    spec = teacher.sampling_spec()
    model = {**teacher.config["model"], **{k: v for k, v in model.items() if k in ("lr", "warmup_steps",
                                                                                 "ema_half_life", "seed")}}
    shrunk = spec.shrink(teacher.denoiser())
    assert isinstance(shrunk, torch.nn.Module)  # the run's denoiser, or TowardsGaussian around it
    module = DistillationModule(model, shrunk, spec, cfg)
    weights = teacher.module.ema.shadow.state_dict()
    module.net.load_state_dict(weights)
    module.ema.shadow.load_state_dict(weights)
    sampling = {**teacher.config.get("sampling", {}), "sampler": "euler", "grid": module.grid,
                "steps": len(module.grid) - 1, "inflation": None,
                "fit_nfe": None, "net_weight": 1.0, "corrector": None, **{k: None for k in NOISE_KEYS}}
    SamplingSpec.from_settings(sampling)
    return module, {"sampling": sampling, "distill": dataclasses.asdict(cfg), "model": model}
