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
from ...tasks.base import Flag, Task, register
from ...training.config import merge
from ...training.fit import TrainedRun, load_trained
from .patches import augment_intensity
from .scans import MEDICAL_DEFAULTS, SCAN_TRAIN_FLAGS, prepare_subject, tiled, train_on_patches, training_cohort
from .volumes import _nib, save_nifti, tagged

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
    nib = _nib()
    path = pathlib.Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"output {path} must end in .nii or .nii.gz")
    img = nib.Nifti1Image(np.moveaxis(samples.astype(np.float32), 0, -1), np.diag([*spacing, 1.0]))
    img.header.set_xyzt_units("mm")
    return save_nifti(path, img)


@register
class Volume(Task):
    name = "volume"
    verb = "generate"
    shares_verb = True
    summary = "unconditional generation of 3-D patches or volumes learned from scans (NIfTI/DICOM)"
    required_train = ("out",)  # the scans: --data or --cohort (checked with a clear error)
    defaults = merge(MEDICAL_DEFAULTS, VOLUME_DEFAULTS)
    train_flags = SCAN_TRAIN_FLAGS
    sample_flags = (
        Flag("--num", "num", "number of samples to draw", int),
        Flag("--shape", "shape", "volume size X Y Z (default: the training patch)", int, nargs=3),
        Flag("--memory-gb", "memory_gb", "memory budget of tiled sampling (GB)", float),
    )

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        config, cohort = training_cohort(config)
        p = int(config["data"]["patch"])
        augment = config["data"].get("augment") or {"scale": 0.0, "bias": 0.0}

        def make(x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
            return {"x": torch.from_numpy(augment_intensity(x, m, rng, **augment))}  # background included

        # Samples come back in the first subject's units (read again: the cache holds normalised voxels only).
        norms = prepare_subject(config["data"], cohort.subjects[0]).norms
        return train_on_patches(config, cohort, (p, p, p), make, {},
                                {"intensity": {"lo": norms[0].lo, "hi": norms[0].hi, "mode": norms[0].mode},
                                 "intensities": [n.to_dict() for n in norms]})

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        z = generate_volumes(run, int(4 if config.get("num") is None else config["num"]), config.get("shape"),
                             seed=int(config.get("seed", 0)),
                             sampling=config.get("sampling"), memory_gb=config.get("memory_gb"))
        norms = run.metadata.get("intensities") or [run.metadata["intensity"]]
        names = run.metadata.get("sequences") or ["image"]
        for c, (i, name) in enumerate(zip(norms, names)):
            out = config["out"] if len(norms) == 1 else tagged(config["out"], name)
            write_samples(out, z[:, c] * (i["hi"] - i["lo"]) + i["lo"], run.metadata["spacing"])
        return pathlib.Path(config["out"])
