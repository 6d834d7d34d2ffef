import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sciffusion as sf
from sciffusion.training import EMA, Normalizer, RunError, atomic_write, load_run, load_tensors, save_run


# --- normaliser -----------------------------------------------------------------------------------------------
@given(st.sampled_from([(6, 2, 5), (4, 3, 4, 5), (3, 1, 2, 3, 4)]), st.booleans())
def test_normalizer_round_trip_and_nan(shape, log):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 10 + 1
    x[0, 0].view(-1)[0] = float("nan")
    norm = Normalizer.fit(x, log=log)
    z = norm.normalize(x)
    assert torch.isnan(z[0, 0].view(-1)[0])
    back = norm.denormalize(z)
    assert torch.allclose(back, x, equal_nan=True, rtol=1e-10)
    zc = z.transpose(0, 1).reshape(shape[1], -1)
    for c in range(shape[1]):
        v = zc[c][~torch.isnan(zc[c])]
        assert float(v.mean()) == pytest.approx(0.0, abs=1e-9) and float(v.std()) == pytest.approx(1.0, rel=1e-9)


def test_normalizer_streamed_fit_equals_full_fit_and_uses_train_only():
    x = torch.randn(50, 2, 8, dtype=torch.float64) * torch.tensor([1.0, 5.0]).reshape(1, 2, 1) + 3
    a, b = Normalizer.fit(x), Normalizer.fit(x.split(7))
    assert torch.allclose(a.mean, b.mean) and torch.allclose(a.std, b.std)
    assert torch.allclose(a.mean, x.transpose(0, 1).reshape(2, -1).mean(1))
    state = Normalizer.from_state_dict(a.state_dict())
    assert torch.equal(state.mean, a.mean) and state.log == a.log


def test_normalizer_errors():
    with pytest.raises(ValueError, match="constant"):
        Normalizer.fit(torch.ones(4, 1, 3))
    with pytest.raises(ValueError, match="fewer than 2 finite"):
        Normalizer.fit(torch.full((4, 1, 3), float("nan")))
    with pytest.raises(ValueError, match="> -1"):
        Normalizer.fit(torch.tensor([[[-3.0, 1.0]]]), log=True)
    with pytest.raises(ValueError, match="channels"):
        Normalizer.fit(torch.randn(4, 2, 3)).normalize(torch.randn(4, 3, 3))


# --- EMA ------------------------------------------------------------------------------------------------------
def test_ema_half_life():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, half_life=10)
    for _ in range(200):  # get past the warm-up cap
        ema.update(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(10):
        ema.update(model)
    assert float(ema.shadow.weight) == pytest.approx(0.5, abs=1e-6)  # half-way after one half-life
    with pytest.raises(ValueError, match="half_life"):
        EMA(model, 0)


# --- run directories ------------------------------------------------------------------------------------------
def make_run(tmp_path):
    net = sf.UNet(dims=1, channels=(8, 16))
    norm = Normalizer.fit(torch.randn(10, 1, 4))
    return save_run(tmp_path / "run", weights=net.state_dict(), ema=net.state_dict(), normalizer=norm.state_dict(),
                    config={"task": "toy", "channels": [8, 16]}, metadata={"variables": ["x"]}), net


def test_run_round_trip(tmp_path):
    run, net = make_run(tmp_path)
    loaded = load_run(run)
    assert loaded["config"]["task"] == "toy" and loaded["metadata"]["variables"] == ["x"]
    net2 = sf.UNet(dims=1, channels=(8, 16))
    net2.load_state_dict(loaded["weights"])
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), k
    assert Normalizer.from_state_dict(loaded["normalizer"]).channels == 1
    assert not list(run.glob("*.tmp"))


def test_tampered_incomplete_and_foreign_runs_are_refused(tmp_path):
    run, _ = make_run(tmp_path)
    w = run / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(RunError, match="checksum"):
        load_run(run)
    (run / "run.json").unlink()
    with pytest.raises(RunError, match="not a complete sciffusion run"):
        load_run(run)
    run2, _ = make_run(tmp_path / "b")
    m = json.loads((run2 / "run.json").read_text())
    m["sciffusion_version"] = "9.9.0"
    (run2 / "run.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="incompatible"):
        load_run(run2)
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nope")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(RunError, match="refusing to load"):
        load_tensors(bad)
    assert not pathlib.Path(MARKER).exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_tensors(good)["w"], torch.ones(2))


def test_atomic_write_survives_a_kill_mid_write(tmp_path):
    # A writer killed (SIGKILL) while producing a new version leaves the old file intact and no partial target.
    target = tmp_path / "out.bin"
    atomic_write(target, b"old")
    script = textwrap.dedent(f"""
        import os, signal
        from sciffusion.training import atomic_write
        def writer(tmp):
            with open(tmp, "wb") as f:
                f.write(b"partial")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, writer)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert target.read_bytes() == b"old"
    # The killed writer's temp file is left (nothing runs after SIGKILL); the next write of the target removes it,
    # and keeps a live writer's temp file (this process's, made by hand here).
    left = list(tmp_path.glob(".out.bin.*.tmp"))
    assert len(left) == 1 and left[0].read_bytes() == b"partial"
    live = tmp_path / f".out.bin.{os.getpid()}.busy.tmp"
    live.write_bytes(b"in progress")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(tmp_path.glob(".out.bin.*.tmp")) == [live]


def test_atomic_write_gives_the_umask_mode(tmp_path):
    import stat

    from sciffusion.training.checkpoint import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        atomic_write(tmp_path / "b.bin", lambda p: pathlib.Path(p).write_bytes(b"y"))
    finally:
        os.umask(old)
    for name in ("a.bin", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644  # not mkstemp's 0600


@pytest.mark.slow  # compiling on 2 CPU cores takes minutes (230 s measured with other jobs running)
def test_compiled_sampling_and_training_match_eager(tmp_path):
    """sampling.compile and model.compile: the same numbers through torch.compile (CPU inductor) as eagerly."""
    import sciffusion as sf
    from sciffusion.training.sampling import SamplingSpec, sample_batched

    torch.manual_seed(0)
    net = sf.UNet(dims=1, in_channels=1, channels=(8, 16), num_res_blocks=1)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    den = sf.Denoiser(net, 1.0)
    spec = SamplingSpec(sampler="dpmpp_2m", steps=3, sigma_max=20.0, sigma_min=0.05, batch_size=4)
    eager = sample_batched(den, (1, 16), list(range(6)), spec)
    comp = sample_batched(den, (1, 16), list(range(6)), spec.replace(compile=True))
    assert torch.allclose(eager, comp, atol=1e-4) and not torch.equal(eager[0], eager[1])
    assert "_sciffusion_compiled" in net.__dict__ and "_sciffusion_compiled" not in dict(net.named_modules())
    m = sf.DiffusionModule(net={"dims": 1, "channels": [8], "num_res_blocks": 1}, compile=True)
    assert set(m.state_dict()) == set(sf.DiffusionModule(net={"dims": 1, "channels": [8],
                                                                "num_res_blocks": 1}).state_dict())
    x = torch.randn(4, 1, 8)
    loss = m.loss_fn(m.training_denoiser(), x, sigma=torch.ones(4), generator=torch.Generator().manual_seed(0))
    ref = m.loss_fn(m.denoiser(ema=False), x, sigma=torch.ones(4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss, ref, atol=1e-5)
