"""Unconditional generation of 3-D patches (or larger volumes, tiled with shared noise) learned from scans.

    sciffusion train volume --data scan1.nii.gz [scan2 ...] --out RUN
    sciffusion generate --run RUN --num 8 --out samples.nii.gz [--shape 64 64 64]

``generate`` is shared with the generic array task: the run says which one samples. The output is one 4-D NIfTI
``(X, Y, Z, sample)`` per sequence (``out_SEQUENCE.nii.gz`` when the run has several) at the training voxel
spacing, in the first training subject's intensity units of that sequence.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
import torch

from ...diffusion import derive_seed
from ...training.fit import TrainedRun, load_trained
from .scans import tiled
from .volumes import nibabel_module, save_nifti

VOLUME_DEFAULTS: dict[str, Any] = {
    "data": {"augment": {"scale": 0.0, "bias": 0.0}},
    "num": 4,
    "shape": None,
}


def generate_volumes(run: TrainedRun | str | os.PathLike, num: int, shape: tuple[int, int, int] | None = None, *,
                     seed: int = 0, sampling: dict[str, Any] | None = None, memory_gb: float | None = None,
                     device: str | torch.device | None = None) -> np.ndarray:
    """``num`` samples ``(num, C, X, Y, Z)`` (one channel per sequence) in normalised intensity (0..1 = the
    training scans' 0.5-99.5th percentiles); ``shape`` defaults to the training patch. Shapes larger than the
    memory plan's tile are sampled in blended tiles over one shared noise field. Sample ``i`` is drawn from
    ``derive_seed(seed, "volume", i)``."""
    run = load_trained(run, task="volume")
    if num < 1:
        raise ValueError(f"--num must be >= 1; got {num}")
    p = int(run.metadata["patch"])
    shape = tuple(int(n) for n in (shape or (p, p, p)))
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"--shape needs three sizes >= 2; got {shape}")
    budget = float(memory_gb or run.config.get("memory_gb", 4))
    seeds = [derive_seed(seed, "volume", i) for i in range(num)]
    channels = int(run.config["model"]["net"].get("in_channels", 1))
    x = run.sample((channels, *shape), seeds, sampling=sampling, device=device, progress=True, desc="generate",
                   wrap=lambda D: tiled(D, run.config["model"]["net"], shape, budget))
    return x.cpu().numpy()


def write_samples(path: str | os.PathLike, samples: np.ndarray, spacing: list[float]) -> pathlib.Path:
    """Samples ``(N, X, Y, Z)`` as one 4-D NIfTI ``(X, Y, Z, N)`` with a RAS affine of the given spacing."""
    nib = nibabel_module()
    path = pathlib.Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"output {path} must end in .nii or .nii.gz")
    img = nib.Nifti1Image(np.moveaxis(samples.astype(np.float32), 0, -1), np.diag([*spacing, 1.0]))
    img.header.set_xyzt_units("mm")
    return save_nifti(path, img)

