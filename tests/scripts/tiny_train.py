"""A tiny training job run as a real subprocess by the tests (kill-and-resume, DDP).

usage: tiny_train.py RUN_DIR MAX_STEPS [--devices N --strategy ddp] [--sleep SECONDS]
Writes RUN_DIR/final_rank{R}.safetensors with the rank's live and EMA weights when training ends.
"""

import argparse
import time

import lightning as L
import torch
from safetensors.torch import save_file

from sciffusion.training.data import DiffusionDataModule
from sciffusion.training.fit import fit
from sciffusion.training.module import DiffusionModule

p = argparse.ArgumentParser()
p.add_argument("run")
p.add_argument("max_steps", type=int)
p.add_argument("--devices", type=int, default=1)
p.add_argument("--strategy", default="auto")
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
torch.set_num_threads(1)


class Slow(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        time.sleep(a.sleep)


g = torch.Generator().manual_seed(0)
x = torch.randn(48, 2, 8, 16, generator=g)
dm = DiffusionDataModule.from_arrays(x, val_fraction=0.25, batch_size=4, seed=1)
torch.manual_seed(0)  # the same initial weights on every rank and in every run
m = DiffusionModule(net=dict(dims=2, in_channels=2, channels=[8, 16], num_res_blocks=1, dropout=0.1),
                    warmup_steps=3, ema_half_life=2, seed=5)
trainer = fit(m, dm, a.run, max_steps=a.max_steps, accelerator="cpu", devices=a.devices, strategy=a.strategy,
              checkpoint_every=2, val_every=4, progress=False, callbacks=[Slow()])
state = {f"net.{k}": v for k, v in m.net.state_dict().items()}
state |= {f"ema.{k}": v for k, v in m.ema.shadow.state_dict().items()}
save_file(state, f"{a.run}/final_rank{trainer.global_rank}.safetensors")
