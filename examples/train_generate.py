"""Train through the one Lightning path and sample, from Python and from the command line (about 1 minute on CPU).

    python examples/train_generate.py [WORKDIR]

Data: 2-D fields with a known distribution (random-phase waves plus a fixed pattern), so the check at the end means
something: the samples' mean field and pixel standard deviation against the data's.
"""

import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch

import sciffusion as sf

work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
g = torch.Generator().manual_seed(0)
yy, xx = torch.meshgrid(torch.linspace(0, 2 * torch.pi, 16), torch.linspace(0, 2 * torch.pi, 16), indexing="ij")
phase = torch.rand(512, 1, 1, 1, generator=g) * 2 * torch.pi
x = 20 + 5 * torch.sin(xx + phase) + 2 * torch.cos(yy)  # (512, 1, 16, 16), physical units around 20

# Python API
dm = sf.DiffusionDataModule.from_arrays(x, val_fraction=0.1, batch_size=32)
model = sf.DiffusionModule(net=dict(dims=2, in_channels=1, channels=[32, 64], num_res_blocks=1),
                           sigma_data=sf.measure_sigma_data(dm.train.x), lr=1e-3, warmup_steps=50, ema_half_life=50)
trainer = sf.fit(model, dm, work / "py", max_steps=400, accelerator="cpu", checkpoint_every=100, progress=False)
sf.export_run(work / "py", model, trainer, {"task": "example"}, dm.normalizer)
run = sf.load_trained(work / "py")
spec = sf.SamplingSpec(sampler="heun", steps=24, sigma_min=0.01, sigma_max=20.0)
z = run.sample((1, 16, 16), [sf.derive_seed(0, "sample", i) for i in range(256)], sampling=spec, progress=True)
s = run.normalizer.denormalize(z)
print(f"mean-field RMSE {float((s.mean(0) - x.mean(0)).pow(2).mean().sqrt()):.3f} (data pixel std "
      f"{float(x.std()):.2f}); sample pixel std {float(s.std()):.2f}")

# The same through the command line
np.save(work / "x.npy", x.numpy())
cli = [sys.executable, "-m", "sciffusion.cli"]
subprocess.run([*cli, "train", "generate", "--data", str(work / "x.npy"), "--out", str(work / "cli"),
                "--max-steps", "200", "--accelerator", "cpu", "--set", "model.net.channels=[32,64]",
                "--set", "trainer.progress=false"], check=True)
subprocess.run([*cli, "generate", "--run", str(work / "cli"), "--num", "64", "--steps", "24",
                "--out", str(work / "samples.npy")], check=True)
print("CLI samples:", np.load(work / "samples.npy").shape, "in", work)
