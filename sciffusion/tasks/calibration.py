"""Spread calibration on a validation split: the inflation of member deviations that makes spread/skill 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..diffusion import derive_seed
from ..training.module import DiffusionModule
from ..training.sampling import SamplingSpec, conditional_mean, sample_batched


def draw(module: DiffusionModule, shape: tuple[int, ...], seeds: list[int], spec: SamplingSpec,
         cond: torch.Tensor | None = None) -> torch.Tensor:
    """Samples ``(len(seeds), *shape)`` from a model that is still training (no :class:`TrainedRun` exists yet),
    on the module's device; the calibration hooks' one use of the sampling path."""
    device = next(module.parameters()).device
    return sample_batched(module.denoiser(), shape, seeds, spec, cond=cond, device=device)


def as_spec(sampling: dict[str, Any] | SamplingSpec) -> SamplingSpec:
    """A hook's sampling settings, typed."""
    return sampling if isinstance(sampling, SamplingSpec) else SamplingSpec.from_settings(sampling)


def spread_calibrator(val: Dataset, sampling: dict[str, Any] | SamplingSpec, seed: int,
                      max_items: int = 64) -> Callable[..., dict[str, Any]]:
    """A ``calibrate(module, sampling=None)`` hook for :func:`~sciffusion.tasks.run_training` (``sampling``: the
    settings to sample with, when training has changed them since, e.g. a fitted grid).

    It samples ``sampling.calibration_members`` members for (up to ``max_items``) validation samples (``x`` target,
                                                                                                      ``cond``, optional
    ``weight``), measures the weighted spread/skill ratio ``sqrt((M+1)/M) spread / RMSE`` of the samples around the
    truth, and returns the inflation ``1 / ratio`` (clipped to [0.5, 4]) of each member's deviation from the model's
    conditional mean, as ``{"sampling": {"inflation"}, "metrics": {...}}``.
    """

    built = as_spec(sampling)

    def calibrate(module: DiffusionModule, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = (built if sampling is None else as_spec(sampling)).replace(inflation=None)  # measure the raw spread
        members = spec.calibration_members
        if len(val) == 0 or not spec.calibrate or members < 2:
            return {}
        device = next(module.parameters()).device
        items = [val[i] for i in range(min(len(val), max_items))]
        x = torch.stack([it["x"] for it in items]).to(device)
        cond = torch.stack([it["cond"] for it in items]).repeat_interleave(members, 0).to(device)
        w = items[0]["weight"].to(device) if "weight" in items[0] else torch.ones((), device=device)
        den = module.denoiser()
        # Keyed by (validation item, member): the same draws whatever the batch size.
        seeds = [derive_seed(seed, "calibration", i // members, i % members) for i in range(len(cond))]
        z = draw(module, tuple(x.shape[1:]), seeds, spec, cond=cond)
        m = conditional_mean(den, x.shape[1:], cond, spec.sigma_start, spec, device=device)
        z, m = z.view(len(x), members, *x.shape[1:]), m.view(len(x), members, *x.shape[1:])
        ok = torch.isfinite(x)
        wt = torch.where(ok, w.expand_as(x), 0)
        mse = (torch.where(ok, z.mean(1) - x, 0) ** 2 * wt).sum() / wt.sum()
        var = (torch.where(ok, z.var(1), 0) * wt).sum() / wt.sum()
        ratio = float(np.sqrt((members + 1) / members) * var.sqrt() / mse.sqrt())
        inflation = float(np.clip(1.0 / ratio, 0.5, 4.0))
        # The deviation that gets inflated is from the conditional mean; report how far that is from the ensemble
        # mean, so a user can see whether inflating about it is sound for this model.
        gap = float(((m.mean(1) - z.mean(1)) ** 2).mean().sqrt() / var.sqrt())
        return {"sampling": {"inflation": inflation},
                "metrics": {"val_spread_skill_raw": ratio, "inflation": inflation, "calibration_samples": len(x),
                            "cond_mean_gap": gap}}

    return calibrate
