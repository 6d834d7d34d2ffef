import json
import subprocess
import sys

import numpy as np
import pytest

import sciffusion as sf
from sciffusion.cli import main


def test_info_reports_a_run(tmp_path, capsys):
    net = sf.UNet(dims=1, channels=(8, 16))
    sf.save_run(tmp_path / "run", weights=net.state_dict(), config={"task": "toy"},
                metadata={"variables": ["sst"], "steps_trained": 12})
    assert main(["info", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "toy" and out["variables"] == ["sst"] and out["steps_trained"] == 12
    assert out["parameters"] == sum(p.numel() for p in net.parameters())


def test_info_error_is_one_line_exit_2(tmp_path):
    (tmp_path / "half").mkdir()
    proc = subprocess.run([sys.executable, "-m", "sciffusion.cli", "info", str(tmp_path / "half")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a complete sciffusion run" in proc.stderr


def test_sliced_wasserstein_matches_scipy_in_1d():
    import scipy.stats
    import torch

    from sciffusion.metrics import sliced_wasserstein

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 1, generator=g), torch.randn(500, 1, generator=g) * 2 + 1
    # In 1-D every unit direction is +-1 and W1 is symmetric under reflection: sliced W1 = W1.
    ref = scipy.stats.wasserstein_distance(a.flatten().numpy(), b.flatten().numpy())
    assert sliced_wasserstein(a, b, projections=8) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="equal sample counts"):
        sliced_wasserstein(a, b[:10])


# --- train / sample verbs, configs, errors ------------------------------------------------------------------------

from sciffusion.training.config import merge, parse_assignment, parse_value, set_key  # noqa: E402

FAST = ["--set", "model.net.channels=[8,16]", "--set", "model.net.num_res_blocks=1", "--set", "trainer.progress=false",
        "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    d = tmp_path_factory.mktemp("arr")
    x = np.random.default_rng(0).normal(size=(40, 2, 8, 8)).astype("f4") * np.array([3, 0.5], "f4")[:, None, None] + 10
    np.save(d / "x.npy", x)
    return d / "x.npy"


@pytest.fixture(scope="module")
def trained(arrays, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "gen"
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "6", *FAST]) == 0
    return run


def test_config_helpers():
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    cfg = {"a": 1}
    set_key(cfg, "m.n.o", 2)
    assert cfg == {"a": 1, "m": {"n": {"o": 2}}}
    with pytest.raises(ValueError, match="holds a value"):
        set_key(cfg, "a.b", 1)
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("[sst, t2m]") == ["sst", "t2m"]
    assert parse_value("1991-01/2015-12") == "1991-01/2015-12" and parse_value("auto") == "auto"
    assert parse_assignment("model.lr=0.5") == ("model.lr", 0.5)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignment("model.lr")


def test_print_config_resolves_defaults_yaml_flags_and_set(tmp_path, capsys, arrays):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer: {max_steps: 77, val_every: 5}\nmodel: {lr: 0.01}\nseed: 4\n")
    assert main(["train", "generate", "--config", str(cfg), "--data", str(arrays), "--out", "R", "--seed", "9",
                 "--set", "model.lr=0.002", "--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["trainer"]["max_steps"] == 77 and out["trainer"]["val_every"] == 5  # from the YAML
    assert out["seed"] == 9 and out["model"]["lr"] == 0.002  # flags and --set beat the YAML
    assert out["data"]["path"] == str(arrays) and out["task"] == "generate"
    assert out["trainer"]["grad_clip"] == 1.0  # defaults fill the rest


def test_train_then_generate_writes_physical_units(trained, tmp_path, capsys):
    assert main(["info", str(trained)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "generate" and info["steps_trained"] == 6 and "val_loss" in info["metrics"]
    out = tmp_path / "s.npy"
    assert main(["generate", "--run", str(trained), "--num", "3", "--steps", "4", "--out", str(out)]) == 0
    s = np.load(out)
    assert s.shape == (3, 2, 8, 8) and np.isfinite(s).all()
    assert 5 < s.mean() < 15  # denormalised: the data live around 10, the model works around 0
    again = tmp_path / "t.npy"
    assert main(["generate", "--run", str(trained), "--num", "3", "--steps", "4", "--out", str(again)]) == 0
    np.testing.assert_array_equal(np.load(again), s)  # seeded
    assert not list(tmp_path.glob(".*.tmp"))


def test_training_resumes_to_more_steps(arrays, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "3", *FAST]) == 0
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "5", *FAST]) == 0
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["steps_trained"] == 5


@pytest.mark.parametrize("argv, message", [
    (["train", "generate", "--out", "R"], "missing --data"),
    (["train", "generate", "--data", "nope.npy", "--out", "R"], "does not exist"),
    (["train", "generate", "--data", "x.csv", "--out", "R"], "reads .npy arrays"),
    (["train", "generate", "--config", "nope.yaml", "--data", "x.npy", "--out", "R"], "config file nope.yaml"),
    (["generate", "--run", "nowhere", "--out", "s.npy"], "does not exist"),
    (["generate", "--out", "s.npy"], "missing --run"),
    (["train", "generate", "--data", "x.npy", "--out", "R", "--set", "oops"], "KEY=VALUE"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8), "f4"))
    (tmp_path / "x.csv").write_text("a\n1\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "R").exists() and not (tmp_path / "s.npy").exists()


def test_generate_refuses_a_run_of_another_task(trained, tmp_path, capsys):
    import shutil

    from sciffusion.training import load_run, save_run

    run = load_run(trained)
    other = tmp_path / "other"
    save_run(other, weights=run["weights"], config={**run["config"], "task": "forecast"}, metadata=run["metadata"])
    assert main(["generate", "--run", str(other), "--out", str(tmp_path / "s.npy")]) == 2
    assert "is a 'forecast' run; 'generate' samples ['generate', 'volume']" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    (bad / "config.json").write_text((bad / "config.json").read_text().replace("generate", "generatf"))
    assert main(["generate", "--run", str(bad), "--out", str(tmp_path / "s.npy")]) == 2
    assert "does not match its checksum" in capsys.readouterr().err


def test_threads_sets_torch_threads_on_every_verb_and_bad_counts_are_refused(tmp_path, capsys, monkeypatch):
    import torch

    from sciffusion.cli import main

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(12, 1, 8, 8)).astype("f4"))
    run = tmp_path / "r"
    fast = ["--set", "model.net.channels=[8,16]", "--set", "model.net.num_res_blocks=1", "--set",
            "trainer.progress=false", "--accelerator", "cpu"]
    assert main(["train", "generate", "--data", str(data), "--out", str(run), "--max-steps", "1", "--threads", "1",
                 *fast]) == 0
    assert main(["generate", "--run", str(run), "--num", "1", "--out", str(tmp_path / "s.npy"), "--threads",
                 "2", "--steps", "2"]) == 0
    assert seen == [1, 2]
    assert main(["generate", "--run", str(run), "--num", "1", "--out", str(tmp_path / "t.npy"), "--threads",
                 "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU path of the GPU script")
def test_gpu_script_skips_cleanly_without_cuda():
    import os
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0 and "no CUDA device here: skipped" in out.stdout, out.stderr
