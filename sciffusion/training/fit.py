"""Run a training job with Lightning and turn it into a run directory; load a run back for sampling.

A run directory ``RUN`` holds, while training, ``RUN/checkpoints/last.ckpt`` (the full training state, written
atomically every ``checkpoint_every`` steps; a killed run resumes from it) and ``RUN/logs/version_N/metrics.csv``
(one per start); when
training ends, the exported run (:func:`~sciffusion.training.save_run`: weights, EMA weights, normaliser, resolved
config, metadata, manifest) that every sampling command reads.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger

from ..diffusion import Denoiser
from ..diffusion.precond import DenoiserFn
from .checkpoint import (
    RunError,
    atomic_write,
    load_run,
    require_noise_levels,
    run_family,
    save_run,
    source_label,
)
from .data import DiffusionDataModule, dataset_length
from .module import DiffusionModule
from .normalizer import Normalizer
from .sampling import SamplingSpec, sample_batched
from .snapshots import Snapshots

LAST = "checkpoints/last.ckpt"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically (temp file, fsync, rename) and read with ``weights_only=True``:
    a killed run never leaves half a checkpoint, and a checkpoint that would run code when unpickled is refused."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except FileNotFoundError:
            raise RunError(f"checkpoint {path} does not exist") from None
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(f"refusing to load checkpoint {path}: not a plain training state ({first[:160]})") from None


class StepCheckpoint(L.Callback):
    """Save the whole training state to ``path`` every ``every`` optimizer steps and when training ends."""

    def __init__(self, path: pathlib.Path, every: int) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 step; got {every}")
        self.path, self.every = path, every

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


def default_precision(accelerator: str) -> str:
    """bf16 autocast on GPUs, full fp32 elsewhere."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if gpu else "32-true"


def fit(module: DiffusionModule, datamodule: DiffusionDataModule, run_dir: str | os.PathLike, *, max_steps: int,
        accelerator: str = "auto", devices: int | str | list[int] = "auto", strategy: str = "auto",
        num_nodes: int = 1, precision: str | None = None, grad_clip: float | None = 1.0, checkpoint_every: int = 200,
        val_every: int | None = None, snapshot_every: int | None = None, resume: bool = True, progress: bool = True,
        callbacks: list[L.Callback] | None = None, identity: dict[str, Any] | None = None) -> L.Trainer:
    """Train ``module`` on ``datamodule`` for ``max_steps`` optimizer steps, resuming from ``run_dir``'s last
    checkpoint when there is one (and ``resume``). ``identity`` (what defines the run: task, model, data) is stored
    in the run and a resume whose identity differs is refused (:func:`check_identity`). Devices, strategy (``"ddp"``
    for several GPUs or CPU processes),
    nodes and precision go to :class:`lightning.Trainer`. ``snapshot_every``: keep the EMA weights every that many
    steps (:mod:`~sciffusion.training.snapshots`)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}")
    run = pathlib.Path(run_dir)
    last = run / LAST
    if identity is not None:
        check_identity(run, identity, resuming=resume and last.exists())
    trainer = L.Trainer(
        max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        precision=cast(Any, precision or default_precision(accelerator)),  # a checked string, not a Literal
        gradient_clip_val=grad_clip,
        callbacks=[StepCheckpoint(last, checkpoint_every),
                   *([Snapshots(run, snapshot_every)] if snapshot_every else []), *(callbacks or [])],
        plugins=[SafeCheckpointIO()],
        logger=CSVLogger(run, name="logs"), enable_checkpointing=False, use_distributed_sampler=False,
        val_check_interval=val_every or max_steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=min(50, max(1, max_steps // 10)),
    )
    with warnings.catch_warnings():
        # The EMA copy is in eval mode on purpose; Lightning warns about any eval-mode module at fit start.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        # Batches are indexed by step (StepBatchSampler): resuming mid-"epoch" is exact, whatever Lightning fears.
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable")
        warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.exists() else None)
    metrics = _scalars(trainer.logged_metrics)
    if datamodule.val is not None and dataset_length(datamodule.val) > 0:
        for m in trainer.validate(module, datamodule=datamodule, verbose=False):  # the run reports its final val_loss
            metrics.update(_scalars(m))
    setattr(trainer, "sciffusion_metrics", metrics)  # what export_run records (validate() resets logged_metrics)
    return trainer


IDENTITY = "checkpoints/identity.json"


def check_identity(run: pathlib.Path, identity: dict[str, Any], resuming: bool) -> None:
    """Store what defines a run (``identity``: task, model config, data fingerprint) when it starts; when it
    resumes, refuse one whose identity differs, naming what differs (resuming another network would end in a size
    mismatch deep in Lightning, resuming on other data would silently continue)."""
    path = run / IDENTITY
    mine = json.loads(json.dumps(identity, sort_keys=True, default=source_label))
    if resuming and path.exists():
        try:
            theirs = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise RunError(f"{path} is not valid JSON; start afresh with a new --out") from None
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise RunError(f"{run} holds a run with another {', '.join(differ)}; it cannot be resumed with these "
                           "settings (a new --out starts afresh)")
        return
    atomic_write(path, json.dumps(mine, indent=2, sort_keys=True).encode())


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def export_run(run_dir: str | os.PathLike, module: DiffusionModule, trainer: L.Trainer, config: dict[str, Any],
               normalizer: Normalizer | None = None, metadata: dict[str, Any] | None = None,
               state: dict[str, torch.Tensor] | None = None) -> pathlib.Path:
    """Write the sampling-ready run (rank 0 only): weights, EMA weights, normaliser, config, metadata with
    ``steps_trained`` and the last logged metrics."""
    run = pathlib.Path(run_dir)
    if not trainer.is_global_zero:
        return run
    metrics = getattr(trainer, "sciffusion_metrics", None) or _scalars(trainer.logged_metrics)
    meta = {**(metadata or {}), "steps_trained": int(trainer.global_step),
            "metrics": {**metrics, **(metadata or {}).get("metrics", {})}}
    config = {**config, "model": dict(module.hparams)}
    return save_run(run, weights=module.net.state_dict(), ema=module.ema.shadow.state_dict(), config=config,
                    normalizer=None if normalizer is None else normalizer.state_dict(), metadata=meta, state=state)


# The sampling settings a one-pass generator fixes (its grid is one Euler step from GENERATOR_SIGMA to 0).
ONE_PASS_FIXED = ("sampler", "steps", "grid", "sigma_min", "sigma_max", "rho", "fit_nfe", "S_churn", "eta")


@dataclass
class TrainedRun:
    """A loaded run: the module (EMA and live weights), its normaliser, config and metadata."""

    module: DiffusionModule
    normalizer: Normalizer | None
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def denoiser(self, ema: bool = True) -> Denoiser:
        return self.module.denoiser(ema=ema)

    def to(self, device: torch.device | str) -> TrainedRun:
        self.module.to(device)
        return self

    def sampling_spec(self, overrides: Mapping[str, Any] | SamplingSpec | None = None) -> SamplingSpec:
        """How this run samples: its stored ``sampling`` settings with ``overrides`` on top (an override of None
        keeps the run's value); a :class:`SamplingSpec` is used as it is."""
        if isinstance(overrides, SamplingSpec):
            return overrides
        if self.one_pass:
            asked = sorted(k for k, v in (overrides or {}).items() if v is not None and k in ONE_PASS_FIXED
                           and v != self.config.get("sampling", {}).get(k))
            if asked:
                raise ValueError(f"this run is a CRPS-trained generator: it samples in one network pass, so "
                                 f"sampling.{', sampling.'.join(asked)} cannot be changed")
        return SamplingSpec.from_settings(self.config.get("sampling"), overrides)

    @property
    def family(self) -> str:
        """The model family the run was trained as: ``diffusion``, ``flow`` or ``crps``."""
        return run_family(self.config)

    @property
    def one_pass(self) -> bool:
        """Whether the run is a one-pass generator (``crps``): no noise levels to start part-way down, no grid
        to choose or distil."""
        return self.family == "crps"

    def require_noise_levels(self, what: str) -> None:
        """Refuse, in one line, what needs a denoiser at every noise level (partial diffusion, distillation) on a
        one-pass generator."""
        require_noise_levels(self.config, what)

    def sample(self, shape: Sequence[int], seeds: Sequence[int], *, cond: torch.Tensor | None = None,
               sampling: Mapping[str, Any] | SamplingSpec | None = None,
               wrap: Callable[[DenoiserFn], DenoiserFn] | None = None, device: torch.device | str | None = None,
               progress: bool = False, desc: str = "sampling",
               per_sample: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Draw ``len(seeds)`` samples of one-sample shape ``shape`` (``(C, *spatial)``) with the run's EMA
        denoiser: the one sampling path every task uses (:func:`~sciffusion.training.sampling.sample_batched`).

        ``seeds`` come from :func:`~sciffusion.derive_seed` (one per sample, keyed by what the sample is);
        ``cond`` is ``(n, C_cond, *spatial)``; ``sampling`` overrides the run's settings; ``wrap`` turns the
        denoiser into another one (tiling, guidance, known values) that declares the same ``sigma_data``, and
        ``per_sample`` holds tensors ``(n, ...)`` that reach it sliced like ``cond`` (a sample's known values). The
        run is moved to the device first. Returns fp32 ``(n, C, *spatial)`` on the device.
        """
        spec = self.sampling_spec(sampling)
        device = spec.resolve_device(device)
        self.to(device)
        return sample_batched(self.denoiser(), shape, seeds, spec, cond=cond, device=device, progress=progress,
                              desc=desc, wrap=wrap, per_sample=per_sample)


def load_trained(run_dir: str | os.PathLike | TrainedRun, task: str | None = None) -> TrainedRun:
    """Load an exported run (verified by :func:`~sciffusion.training.load_run`); ``task`` checks the run's task.
    An already loaded :class:`TrainedRun` is returned as it is (after the task check), so APIs take either."""
    if isinstance(run_dir, TrainedRun):
        if task is not None and run_dir.config.get("task") != task:
            raise RunError(f"the run is a {run_dir.config.get('task')!r} run, not a {task!r} run")
        return run_dir
    run = load_run(run_dir)
    cfg = run["config"]
    if task is not None and cfg.get("task") != task:
        raise RunError(f"{run_dir} is a {cfg.get('task')!r} run, not a {task!r} run")
    if "model" not in cfg:
        raise RunError(f"{run_dir} has no model config; it was not written by sciffusion train")
    module = DiffusionModule(**cfg["model"])
    try:
        module.net.load_state_dict(run["weights"])
        module.ema.shadow.load_state_dict(run["ema"] if run["ema"] is not None else run["weights"])
    except RuntimeError as e:
        raise RunError(f"{run_dir}: weights do not fit the configured network ({str(e).splitlines()[0]})") from None
    module.eval()
    norm = None if run["normalizer"] is None else Normalizer.from_state_dict(run["normalizer"])
    return TrainedRun(module, norm, cfg, run["metadata"], run["state"] or {})
