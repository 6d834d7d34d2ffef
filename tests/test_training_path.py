"""The Lightning path: step-indexed data order, one module, resume after SIGKILL, DDP, safe checkpoints, export."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from sciffusion.training import RunError
from sciffusion.training.data import DiffusionDataModule, StepBatchSampler
from sciffusion.training.fit import LAST, SafeCheckpointIO, export_run, fit, load_trained
from sciffusion.training.module import DiffusionModule
from sciffusion.training.sampling import SamplingSpec, conditional_mean, sample_batched

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "tiny_train.py"
TINY_NET = dict(dims=2, in_channels=2, channels=[8, 16], num_res_blocks=1)


@given(n=st.integers(1, 40), bs=st.integers(1, 8), world=st.integers(1, 3), start=st.integers(0, 30))
def test_batches_depend_only_on_the_step(n, bs, world, start):
    stop = 35
    full = [list(StepBatchSampler(n, bs, 0, stop, seed=3, rank=r, world=world)) for r in range(world)]
    for r in range(world):
        resumed = list(StepBatchSampler(n, bs, start, stop, seed=3, rank=r, world=world))
        assert resumed == full[r][start:]  # a resumed run sees the batches the uninterrupted run saw
        assert all(len(b) == bs and all(0 <= i < n for i in b) for b in resumed)
    if n >= bs * world:  # within one epoch, ranks and steps never repeat a sample
        per_epoch = n // (bs * world)
        seen = [i for k in range(min(per_epoch, stop)) for r in range(world) for i in full[r][k]]
        assert len(seen) == len(set(seen))


def test_from_arrays_fits_the_normaliser_on_the_training_part_only():
    x = torch.cat([torch.zeros(8, 1, 4, 4), torch.full((2, 1, 4, 4), 100.0)])
    x[:8] += torch.linspace(-1, 1, 8).view(8, 1, 1, 1)
    dm = DiffusionDataModule.from_arrays(x, val_fraction=0.2, batch_size=2)
    assert len(dm.train) == 8 and len(dm.val) == 2
    assert float(dm.normalizer.mean[0]) == pytest.approx(0.0, abs=1e-12)  # the 100s of the tail are not in it
    assert torch.all(dm.val.x > 50)  # the validation part is the tail, in order
    with pytest.raises(ValueError, match="no training samples"):
        DiffusionDataModule.from_arrays(x[:2], val_fraction=0.9)


def _module(**kw):
    torch.manual_seed(0)
    return DiffusionModule(net=TINY_NET, warmup_steps=4, ema_half_life=2, seed=1, **kw)


def test_fit_trains_warms_up_and_keeps_an_ema(tmp_path):
    x = torch.randn(40, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    dm = DiffusionDataModule.from_arrays(x, val_fraction=0.2, batch_size=4)
    m = _module(lr=1e-3)
    init = {k: v.clone() for k, v in m.net.state_dict().items()}
    trainer = fit(m, dm, tmp_path, max_steps=6, accelerator="cpu", checkpoint_every=4, progress=False)
    assert trainer.global_step == 6
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # warm-up done
    changed = [k for k, v in m.net.state_dict().items() if not torch.equal(v, init[k])]
    assert changed, "no weight moved"
    assert int(m.ema.num_updates) == 6
    ema_gap = max(float((a - b).detach().abs().max()) for a, b in zip(m.ema.shadow.parameters(), m.net.parameters()))
    assert ema_gap > 0
    assert (tmp_path / LAST).exists()
    assert "val_loss" in trainer.sciffusion_metrics and "train_loss" in trainer.sciffusion_metrics
    run = export_run(tmp_path / "run", m, trainer, {"task": "toy"}, dm.normalizer, {"shape": [2, 8, 8]})
    back = load_trained(run, task="toy")
    for a, b in zip(back.module.ema.shadow.parameters(), m.ema.shadow.parameters()):
        assert torch.equal(a, b)
    assert back.metadata["steps_trained"] == 6 and torch.equal(back.normalizer.mean, dm.normalizer.mean)
    with pytest.raises(RunError, match="not a 'forecast' run"):
        load_trained(run, task="forecast")


def test_malicious_training_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "evil": Payload()}, tmp_path / LAST)
    dm = DiffusionDataModule.from_arrays(torch.randn(8, 2, 8, 8), val_fraction=0.0, batch_size=4)
    with pytest.raises(RunError, match="refusing to load checkpoint"):
        fit(_module(), dm, tmp_path, max_steps=2, accelerator="cpu", progress=False)
    assert not marker.exists()
    with pytest.raises(RunError, match="does not exist"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


def _run_script(run, steps, *extra, **popen):
    cmd = [sys.executable, str(SCRIPT), str(run), str(steps), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    ref = _run_script(tmp_path / "ref", 12)
    victim = _run_script(tmp_path / "victim", 12, "--sleep", "0.3")
    ckpt = tmp_path / "victim" / LAST
    deadline = time.time() + 120
    while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # let it train past the checkpoint, so resuming has to redo steps
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim" / "final_rank0.safetensors").exists()
    step_at_kill = torch.load(ckpt, weights_only=True)["global_step"]
    assert 2 <= step_at_kill < 12
    resumed = _run_script(tmp_path / "victim", 12)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    a = load_file(tmp_path / "ref" / "final_rank0.safetensors")
    b = load_file(tmp_path / "victim" / "final_rank0.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume from step {step_at_kill}"


def test_ddp_two_cpu_processes_hold_identical_weights(tmp_path):
    init = _module()  # the script builds the same initial network with seed 0
    proc = _run_script(tmp_path / "ddp", 4, "--devices", "2", "--strategy", "ddp")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    r0 = load_file(tmp_path / "ddp" / "final_rank0.safetensors")
    r1 = load_file(tmp_path / "ddp" / "final_rank1.safetensors")
    assert r0.keys() == r1.keys() and len(r0) > 10
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    moved = any(not torch.equal(r0[f"net.{k}"], v) for k, v in init.net.state_dict().items())
    assert moved


def test_sample_batched_is_independent_of_batch_size():
    torch.manual_seed(0)
    m = DiffusionModule(net=dict(TINY_NET, zero_init=False))
    spec = SamplingSpec(sampler="heun", grid=[5.0, 1.0, 0.2, 0.0], batch_size=2)
    seeds = [7, 8, 9, 10, 11]
    a = sample_batched(m.denoiser(ema=False), (2, 8, 8), seeds, spec)
    b = sample_batched(m.denoiser(ema=False), (2, 8, 8), seeds, spec.replace(batch_size=5))
    assert a.shape == (5, 2, 8, 8)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0], a[1])
    cond = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    m2 = DiffusionModule(net=dict(TINY_NET, cond_channels=1, zero_init=False))
    plain = sample_batched(m2.denoiser(ema=False), (2, 8, 8), seeds, spec, cond=cond)
    wide = sample_batched(m2.denoiser(ema=False), (2, 8, 8), seeds, spec.replace(batch_size=5, inflation=2.0),
                          cond=cond)
    mean = conditional_mean(m2.denoiser(ema=False), (2, 8, 8), cond, 5.0, spec)
    torch.testing.assert_close(wide - mean, 2 * (plain - mean), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs cond"):
        sample_batched(m.denoiser(), (2, 8, 8), seeds, spec.replace(inflation=1.5))
    with pytest.raises(ValueError, match="one condition per sample"):
        sample_batched(m.denoiser(), (2, 8, 8), seeds, spec, cond=torch.zeros(2, 1, 8, 8))
