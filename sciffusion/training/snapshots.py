"""EMA snapshots taken during training, so that a task can choose how long to have trained by a validation score.

Early stopping on the validation loss picks the step where the denoising loss is lowest; that is not always where
the scores users care about are best (a scenario model's joint scores, a forecast's CRPS), and for a model that
starts from an exact statistical base (finance: the zeroed network is the GARCH law) the loss can keep falling
while those scores get worse. So with ``trainer.snapshot_every = N`` the EMA weights are written every N optimizer
steps to ``RUN/checkpoints/snapshots/step-00000N.pt`` (rank 0, atomically, plain tensors); after training a
calibration hook scores each of them on validation data (:func:`snapshots_before`, :func:`load_snapshot`) and may
load the best into the module before the run is exported. The snapshots survive a kill, as the checkpoint does,
so a resumed run has the same candidates as an uninterrupted one.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import lightning as L
import torch
from torch import Tensor

from .checkpoint import atomic_write, load_tensors

SNAPSHOTS = "checkpoints/snapshots"
_NAME = re.compile(r"step-(\d+)\.pt$")


def snapshot_path(run_dir: str | os.PathLike, step: int) -> pathlib.Path:
    return pathlib.Path(run_dir) / SNAPSHOTS / f"step-{step:08d}.pt"


class Snapshots(L.Callback):
    """Write the EMA weights every ``every`` optimizer steps, before the last one (the final weights are the
    run's own)."""

    def __init__(self, run_dir: str | os.PathLike, every: int) -> None:
        if every < 1:
            raise ValueError(f"snapshot_every must be >= 1 step; got {every}")
        self.run_dir, self.every = pathlib.Path(run_dir), every

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every or step >= (trainer.max_steps or 0):
            return
        path = snapshot_path(self.run_dir, step)
        if path.exists():  # gradient accumulation calls this hook several times per step
            return
        ema = getattr(pl_module, "ema").shadow.state_dict()
        state = {k: v.detach().to("cpu", copy=True) for k, v in ema.items()}
        atomic_write(path, lambda tmp: torch.save(state, tmp))


def snapshots_before(run_dir: str | os.PathLike, step: int) -> list[int]:
    """The steps, ascending, of the snapshots in ``run_dir`` taken before ``step`` (a snapshot left by a longer
    earlier attempt does not count)."""
    folder = pathlib.Path(run_dir) / SNAPSHOTS
    found = (_NAME.search(p.name) for p in folder.glob("step-*.pt")) if folder.is_dir() else ()
    return sorted(s for s in (int(m.group(1)) for m in found if m) if s < step)


def load_snapshot(run_dir: str | os.PathLike, step: int) -> dict[str, Tensor]:
    """The EMA state dict of the snapshot at ``step`` (``weights_only`` loading)."""
    return load_tensors(snapshot_path(run_dir, step))
