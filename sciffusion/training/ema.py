"""Exponential moving average of weights, with the half-life counted in optimizer steps."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA(nn.Module):
    """Keeps ``shadow = beta * shadow + (1 - beta) * weights`` after each optimizer step, ``beta = 0.5 ** (1 / h)``
    for a half-life of ``h`` steps. Early on ``beta`` is capped at ``(1 + n) / (10 + n)`` so the average is not
    dominated by the random initialisation. Buffers (e.g. norm statistics) are copied, not averaged.
    """

    num_updates: Tensor  # a () long buffer, saved with the weights

    def __init__(self, model: nn.Module, half_life: float = 500.0) -> None:
        super().__init__()
        if not half_life > 0:
            raise ValueError(f"EMA half_life must be > 0 steps; got {half_life}")
        self.half_life = float(half_life)
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def decay(self) -> float:
        n = int(self.num_updates)
        return min(0.5 ** (1.0 / self.half_life), (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.decay()
        shadow = list(self.shadow.parameters())
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - beta)  # type: ignore[arg-type]  # Parameters are Tensors
        for b_s, b in zip(self.shadow.buffers(), model.buffers()):
            b_s.copy_(b)
        self.num_updates += 1
