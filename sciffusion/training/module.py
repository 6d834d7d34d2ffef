"""The one LightningModule every task trains: a U-Net, EDM preconditioning, the diffusion loss and an EMA copy.

Lightning runs the loop, logging, precision and devices; this module only says what one step is. Randomness is a
function of the seed: the initial weights of ``derive_seed(seed, "weights")``, each step's noise of
``derive_seed(seed, "step", global_step, rank)`` (the global RNG is reseeded before every step), so two runs with one
seed are bit-identical on one thread, and a run resumed from a checkpoint draws the same noise as one that was
never interrupted.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..diffusion import CRPSLoss, Denoiser, DiffusionLoss, derive_seed, karras_sigmas
from ..diffusion.noise import PROCESSES
from ..nets import UNet
from .ema import EMA
from .sampling import compiled_net


def build_process(spec: str | dict[str, Any]):
    """``"edm"`` or ``{"name": "vp", "schedule": "cosine", ...}`` -> a noise process."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", "edm")
    if name not in PROCESSES:
        raise ValueError(f"process must be one of {sorted(PROCESSES)}; got {name!r}")
    return PROCESSES[name](**spec)


class DiffusionModule(L.LightningModule):
    """Train ``Denoiser(UNet(**net))`` with :class:`~sciffusion.DiffusionLoss`, keeping an :class:`EMA` for sampling.

    Batches are dicts: ``x`` (target, ``(B, C, *spatial)``, normalised; NaN = missing), optional ``cond``
    (``(B, C_cond, *spatial)``, concatenated to the U-Net input), ``mask`` (True = in the loss) and ``weight``
    (e.g. latitude weights, broadcastable to ``x``).

    Args:
        net: keyword arguments of :class:`~sciffusion.UNet` (plain values, so the config can rebuild it).
        sigma_data: standard deviation of ``x`` (measure it on the training split).
        parameterization: ``edm`` / ``v`` / ``eps`` / ``x0`` / ``flow`` / ``gen``.
        process: noise process for training sigmas (name or dict with ``name``).
        weighting, cond_dropout, noise_factor: see :class:`~sciffusion.DiffusionLoss`.
        lr, weight_decay, warmup_steps: AdamW with a linear learning-rate warm-up over ``warmup_steps`` steps.
        ema_half_life: EMA half-life in optimizer steps.
        seed: base seed of the per-step noise.
        compile: train through ``torch.compile(net)`` (opt-in: compiling takes seconds to minutes, once per run;
            measured in ``benchmarks/unet_throughput.py``).
        family: the model family the run was configured as (``diffusion``, ``flow``, ``crps``), recorded; what it
            sets is already in the arguments above (:func:`~sciffusion.training.schema.resolve_family`).
        loss: ``denoising`` (:class:`~sciffusion.DiffusionLoss`) or ``crps`` (:class:`~sciffusion.CRPSLoss`: a
            one-pass generator trained on the almost-fair CRPS of ``crps_members`` samples per example, with
            ``crps_alpha`` the weight of the fair CRPS in it).
    """

    def __init__(self, net: dict[str, Any], sigma_data: float = 0.5, parameterization: str = "edm",
                 process: str | dict[str, Any] = "edm", weighting: str = "edm", cond_dropout: float = 0.0,
                 lr: float = 2e-4, weight_decay: float = 0.0, warmup_steps: int = 100, ema_half_life: float = 500.0,
                 seed: int = 0, noise_factor: int = 1, compile: bool = False, family: str = "diffusion",
                 loss: str = "denoising", crps_members: int = 2, crps_alpha: float = 0.95) -> None:
        super().__init__()
        # by name: a subclass's own arguments (a distillation teacher) are not the model's config
        self.save_hyperparameters(*HPARAMS)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}")
        with torch.random.fork_rng(devices=[]):  # the weights follow the seed; the caller's RNG is left as it was
            torch.manual_seed(derive_seed(seed, "weights"))
            self.net = UNet(**net)
        self.ema = EMA(self.net, ema_half_life)
        if loss == "crps":
            if cond_dropout or noise_factor != 1:
                raise ValueError("a CRPS-trained generator takes neither cond_dropout nor noise_factor")
            self.loss_fn: DiffusionLoss | CRPSLoss = CRPSLoss(crps_members, crps_alpha)
        elif loss == "denoising":
            self.loss_fn = DiffusionLoss(build_process(process), weighting=weighting, cond_dropout=cond_dropout,
                                         noise_factor=noise_factor)
        else:
            raise ValueError(f"loss must be denoising or crps; got {loss!r}")

    def denoiser(self, ema: bool = True) -> Denoiser:
        """The model as a sampler-ready denoiser ``D(x, sigma, cond=...)``; the EMA weights by default."""
        net = self.ema.shadow if ema else self.net
        return Denoiser(net, self.hparams["sigma_data"], self.hparams["parameterization"])

    def training_denoiser(self) -> Denoiser:
        """The live (not EMA) weights through the compiled network when ``compile`` is set."""
        net = compiled_net(self.net) if self.hparams["compile"] else self.net
        return Denoiser(net, self.hparams["sigma_data"], self.hparams["parameterization"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(derive_seed(self.hparams["seed"], "step", self.global_step, self.global_rank))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss_fn(self.training_denoiser(), batch["x"], mask=batch.get("mask"), weight=batch.get("weight"),
                            cond=batch.get("cond"))
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.net)  # here, not in on_train_batch_end: checkpoint callbacks run before that hook

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # The same sigmas and noise at every validation: curves compare across steps and runs.
        x = batch["x"]
        B = x.shape[0]
        sigma = karras_sigmas(B, 0.02, 20.0, device=x.device)[:B] if B > 1 else torch.ones(1, device=x.device)
        g = torch.Generator(device=x.device).manual_seed(batch_idx)
        loss = self.loss_fn(self.denoiser(ema=True), x, mask=batch.get("mask"), weight=batch.get("weight"),
                            cond=batch.get("cond"), sigma=sigma, generator=g)
        self.log("val_loss", loss, prog_bar=True, batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warm = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# The arguments that rebuild a DiffusionModule (stored as the run's ``model`` config).
HPARAMS = tuple(inspect.signature(DiffusionModule.__init__).parameters)[1:]
