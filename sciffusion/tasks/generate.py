"""Unconditional generation of arrays: learn the distribution of samples ``(N, C, *spatial)`` stored in a ``.npy``
file (1-3 spatial dims; NaN = missing) and draw new ones in physical units.

    sciffusion train generate --data samples.npy --out RUN
    sciffusion generate --run RUN --num 64 --out new.npy
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import torch

from ..diffusion import derive_seed
from ..training.checkpoint import atomic_write, source_label
from ..training.data import DiffusionDataModule
from ..training.fit import load_trained
from .base import Flag, Task, register, run_training


def read_array(path: str | pathlib.Path) -> np.ndarray:
    """Read a numeric ``.npy`` array (no pickles) shaped ``(N, C, *spatial)`` with 1-3 spatial dims."""
    path = pathlib.Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: the generate task reads .npy arrays (N, C, *spatial); got "
                         f"{path.suffix or 'no suffix'}")
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} does not exist") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a plain numeric .npy array ({e})") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path} holds {arr.dtype} values; need numbers")
    if not 3 <= arr.ndim <= 5:
        raise ValueError(f"{path} has shape {arr.shape}; need (samples, channels, *spatial) with 1-3 spatial dims")
    return arr


def write_array(path: str | pathlib.Path, arr: np.ndarray) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"output {path} must end in .npy")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_write(path, write)
    return path


@register
class Generate(Task):
    name = "generate"
    verb = "generate"
    shares_verb = True
    summary = "unconditional generation of arrays (N, C, *spatial) from a .npy file"
    sample_flags = (Flag("--num", "num", "number of samples to draw", int),)
    defaults: dict[str, Any] = {"num": 16}

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        x = torch.from_numpy(read_array(config["data"]["path"])).float()
        d = config["data"]
        dm = DiffusionDataModule.from_arrays(x, val_fraction=d["val_fraction"], batch_size=int(d["batch_size"]),
                                             num_workers=int(d["num_workers"]), seed=int(config["seed"]))
        net = {"dims": x.ndim - 2, "in_channels": x.shape[1]}
        meta = {"shape": list(x.shape[1:]), "source": source_label(config["data"]["path"])}
        return run_training(config, dm, net, meta)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        n = int(config["num"])
        if n < 1:
            raise ValueError(f"--num must be >= 1; got {n}")
        seeds = [derive_seed(int(config["seed"]), "sample", i) for i in range(n)]
        z = run.sample(run.metadata["shape"], seeds, sampling=config.get("sampling"), progress=True, desc="generate")
        x = run.normalizer.denormalize(z.cpu()) if run.normalizer is not None else z.cpu()
        return write_array(config["out"], x.numpy())

