"""Step distillation: the target that teaches a student to take, in one Euler step, what the teacher does in many.

The method is progressive distillation's (Salimans & Ho 2022) done in one round: for a student grid
``sigma_0 > ... > sigma_{N-1} > 0`` and a noised training sample ``x = x0 + sigma_i n``, the teacher solves the
probability-flow ODE from ``(x, sigma_i)`` to ``sigma_{i+1}`` with ``substeps`` DPM-Solver++(2M) steps (its own
solver, Gaussian split included), landing at ``x_next``; the student's target is the denoised value with which one
Euler step from ``x`` lands exactly there (:func:`euler_denoised`). Trained with the denoising loss's weight, the
student's ``N``-step Euler sampler then follows the teacher's ODE solution. Why this one: it keeps the model a
denoiser, so every conditioning input, wrapper and sampling path of a run works unchanged, and it needs no
adversarial or auxiliary network (consistency distillation needs an EMA target network and a metric, and is weaker
at 2-4 steps without the adversarial terms of later work).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .precond import DenoiserFn
from .samplers import dpmpp_2m


def euler_denoised(x: Tensor, sigma: float, sigma_next: float, x_next: Tensor) -> Tensor:
    """The ``D`` with which the Euler step ``x + (sigma_next - sigma) (x - D) / sigma`` lands on ``x_next``
    (``x_next`` itself when ``sigma_next`` is 0)."""
    if sigma_next == 0:
        return x_next
    return x - sigma * (x_next - x) / (sigma_next - sigma)


def teacher_grid(sigma: float, sigma_next: float, substeps: int, sigma_min: float) -> Tensor:
    """The teacher's grid for one student step: ``substeps`` log-evenly spaced steps from ``sigma`` to
    ``sigma_next``, or, when ``sigma_next`` is 0, to ``sigma_min`` and a final step to 0."""
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1; got {substeps}")
    end = sigma_next if sigma_next > 0 else min(sigma_min, sigma)
    steps = substeps if sigma_next > 0 else max(substeps - 1, 1)
    grid = torch.logspace(torch.log10(torch.tensor(sigma, dtype=torch.float64)),
                          torch.log10(torch.tensor(end, dtype=torch.float64)), steps + 1, dtype=torch.float64)
    grid[0], grid[-1] = sigma, end
    return grid if sigma_next > 0 else torch.cat([grid, grid.new_zeros(1)])


@torch.no_grad()
def step_target(teacher: DenoiserFn, x: Tensor, sigma: float, sigma_next: float, *, substeps: int,
                sigma_min: float, sigma_data: float = 0.0, extra_args: Mapping[str, object] | None = None) -> Tensor:
    """The student's target denoised value at ``(x, sigma)`` for the student step ``sigma -> sigma_next``:
    :func:`euler_denoised` of the teacher's ``substeps``-step DPM-Solver++(2M) solution (``sigma_data``: its
    Gaussian split). ``x`` is ``(B, C, *spatial)``; the target has its shape."""
    x_next = dpmpp_2m(teacher, x, teacher_grid(sigma, sigma_next, substeps, sigma_min), extra_args=extra_args,
                      sigma_data=sigma_data)
    return euler_denoised(x, sigma, sigma_next, x_next)
