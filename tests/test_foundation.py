"""The foundation: samplers' options apart from the model's arguments, declared sigma_data, one seed scheme, typed
configs, one sampling path, safe outputs and resumes, old runs migrated."""

import json
import pathlib
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

import sciffusion as sf
from sciffusion.cli import main
from sciffusion.diffusion import GaussianDenoiser

FAST = ["--set", "model.net.channels=[8,16]", "--set", "model.net.num_res_blocks=1", "--set", "trainer.progress=false",
        "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    d = tmp_path_factory.mktemp("arr")
    x = np.random.default_rng(0).normal(size=(24, 1, 8, 8)).astype("f4") * 2 + 5
    np.save(d / "x.npy", x)
    return d / "x.npy"


# --- samplers -----------------------------------------------------------------------------------------------------

def test_unknown_sampler_options_are_refused_with_the_closest_name():
    den, grid = GaussianDenoiser(), sf.karras_sigmas(4, 0.01, 10.0)
    with pytest.raises(ValueError, match=r"no option 's_churn'; did you mean 'S_churn'"):
        sf.sample(den, (2, 1, 3), grid, sampler="heun", s_churn=40)
    with pytest.raises(ValueError, match=r"sampler 'euler' has no option 'eta'"):
        sf.sample(den, (2, 1, 3), grid, sampler="euler", eta=1.0)
    with pytest.raises(TypeError):  # a sampler called directly has no **kwargs to swallow it either
        sf.heun(den, torch.zeros(2, 1, 3), grid, s_churn=40)
    assert sf.sampler_options("heun") == {"S_churn", "S_tmin", "S_tmax", "S_noise"}
    assert sf.sampler_options("dpmpp_2m") == {"sigma_data"}


def test_extra_args_reach_the_denoiser_and_options_do_not():
    seen = []

    def den(x, sigma, cond=None):
        seen.append(cond)
        return torch.zeros_like(x)

    c = torch.ones(2, 1, 3)
    sf.sample(den, (2, 1, 3), torch.tensor([1.0, 0.5, 0.0]), sampler="heun", extra_args={"cond": c}, S_churn=0.5)
    assert len(seen) == 3 and all(s is c for s in seen)


def test_wrappers_declare_the_sigma_data_of_what_they_wrap():
    inner = sf.Denoiser(sf.UNet(dims=1, channels=(8,)), sigma_data=0.7)
    known = torch.zeros(1, 1, 8)
    for w in (sf.ClassifierFreeGuidance(inner, 2.0), sf.KnownValues(inner, known, known > 0), sf.TiledDenoiser(inner,
                                                                                                               4)):
        assert isinstance(w, sf.ScaledDenoiser) and w.sigma_data == 0.7
    assert sf.declared_sigma_data(sf.TiledDenoiser(sf.KnownValues(inner, known, known > 0), 4)) == 0.7
    with pytest.raises(ValueError, match="declares no sigma_data"):
        sf.declared_sigma_data(lambda x, sigma, **kw: x)
    spec = sf.SamplingSpec(sampler="dpmpp_2m")
    assert spec.options(inner) == {"sigma_data": 0.7}
    assert spec.replace(exact_gaussian=False).options(inner) == {}
    assert sf.SamplingSpec(sampler="heun", S_churn=1.0).options(lambda x, s: x) == {"S_churn": 1.0}


# --- seeds --------------------------------------------------------------------------------------------------------

keys = st.recursive(st.integers(-2**70, 2**70) | st.text(max_size=5), lambda k: st.lists(k, max_size=3), max_leaves=4)


@given(seed=st.integers(0, 2**40), a=st.lists(keys, max_size=3), b=st.lists(keys, max_size=3))
def test_derive_seed_is_a_function_of_the_keys_only(seed, a, b):
    s = sf.derive_seed(seed, *a)
    assert s == sf.derive_seed(seed, *a) and 0 <= s < 2**64
    torch.Generator().manual_seed(s)  # torch takes every 64-bit value
    if [json.dumps(x) for x in a] != [json.dumps(x) for x in b]:
        assert s != sf.derive_seed(seed, *b)


def test_derive_seed_tells_kinds_and_neighbours_apart():
    assert len({sf.derive_seed(0, 1), sf.derive_seed(0, "1"), sf.derive_seed(0, [1]), sf.derive_seed(0, -1),
                sf.derive_seed(1, 0), sf.derive_seed(0, 0)}) == 6
    # path_seeds' old scheme gave key k's path p the seed base(k) + p: ranges of neighbouring keys could overlap
    seeds = {sf.derive_seed(0, "path", d, p) for d in range(200) for p in range(200)}
    assert len(seeds) == 40_000
    with pytest.raises(TypeError):
        sf.derive_seed(0, 1.5)


def test_two_identical_cli_trainings_give_identical_weights(arrays, tmp_path):
    torch.set_num_threads(1)
    for name in ("a", "b"):
        assert main(["train", "generate", "--data", str(arrays), "--out", str(tmp_path / name), "--max-steps", "3",
                     "--seed", "5", *FAST]) == 0
    wa, wb = (load_file(tmp_path / n / "weights.safetensors") for n in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert main(["train", "generate", "--data", str(arrays), "--out", str(tmp_path / "c"), "--max-steps", "3",
                 "--seed", "6", *FAST]) == 0
    wc = load_file(tmp_path / "c" / "weights.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)  # the seed reaches the weights


def test_initial_weights_follow_the_seed_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = sf.DiffusionModule(net=dict(dims=1, channels=[8], zero_init=False), seed=3)
    assert torch.equal(before, torch.get_rng_state())
    b = sf.DiffusionModule(net=dict(dims=1, channels=[8], zero_init=False), seed=3)
    c = sf.DiffusionModule(net=dict(dims=1, channels=[8], zero_init=False), seed=4)
    sa, sb, sc = (m.net.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and any(not torch.equal(sa[k], sc[k]) for k in sa)


# --- typed configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("trainer.maxsteps=5", "unknown config key trainer.maxsteps; did you mean trainer.max_steps?"),
    ("model.lrr=1", "unknown config key model.lrr; did you mean model.lr?"),
    ("model.lr=abc", "config key model.lr='abc' is not a float"),
    ("trainer.max_steps=2.5", "config key trainer.max_steps=2.5 is not a int"),
    ("model.net.channels=8", "config key model.net.channels=8 is not a list of int"),
    ("sampling.s_churn=40", "did you mean sampling.S_churn?"),
    ("trainer=3", "config key trainer is a section"),
])
def test_bad_config_keys_and_types_are_one_line_errors(arrays, tmp_path, capsys, setting, message):
    assert main(["train", "generate", "--data", str(arrays), "--out", str(tmp_path / "r"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_yaml_keys_are_checked_too_and_print_config_is_typed(arrays, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer:\n  max_step: 5\n")
    assert main(["train", "generate", "--data", str(arrays), "--out", "R", "--config", str(cfg)]) == 2
    assert "did you mean trainer.max_steps?" in capsys.readouterr().err
    cfg.write_text("model:\n  lr: 1\n")  # an int where a float is declared is coerced, not refused
    assert main(["train", "generate", "--data", str(arrays), "--out", "R", "--config", str(cfg),
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  lr: 1\.0$", out, re.M) and "max_steps: 2000" in out


def test_every_registered_task_has_a_schema_that_accepts_its_own_defaults():
    from sciffusion.domains import COMMANDS, TASKS

    assert {"score-days", "score-windows"} <= set(COMMANDS) and not {"day_scores", "window_scores"} & set(TASKS)
    for task in [*TASKS.values(), *COMMANDS.values()]:
        config = task.default_config()
        assert task.check(config) == json.loads(json.dumps(task.check(config)))
        with pytest.raises(sf.ConfigError, match="unknown config key"):
            task.check({**config, "trainer": {**config["trainer"], "max_stepz": 1}})


def test_sampling_spec_from_settings():
    spec = sf.SamplingSpec.from_settings({"sampler": "dpmpp_2m", "steps": 12}, {"steps": 4, "device": None})
    assert spec.steps == 4 and spec.device == "auto"
    assert torch.equal(spec.sigmas(), sf.karras_sigmas(4, spec.sigma_min, spec.sigma_max, spec.rho))
    grid = sf.SamplingSpec(grid=[3.0, 1.0, 0.0])
    assert grid.steps == 2 and grid.sigma_start == 3.0 and grid.sigmas().tolist() == [3.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="non-increasing"):
        sf.SamplingSpec(grid=[1.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="has no option 'eta'"):
        sf.SamplingSpec(sampler="heun", eta=0.5)


# --- one sampling path --------------------------------------------------------------------------------------------

def test_no_task_or_domain_module_writes_the_sampling_sequence():
    root = pathlib.Path(sf.__file__).parent
    banned = re.compile(r"\bsample_batched\(|\bsampling_sigmas\(|\bkarras_sigmas\(|\bsf\.sample\(|SAMPLERS\[|"
                        r"^(?!\s*def ).*(?<![.\w])sample\(\w+, |\bwith_sigma_data\(")
    for bad in ("x = sample_batched(den, shape, seeds, spec)", "z = sample(den, (1, 2), sigmas)",
                "s = sampling_sigmas(cfg, device)", "fn = SAMPLERS[name]"):
        assert banned.search(bad), bad  # the guard sees each way of writing the sequence by hand
    found = []
    for path in [*(root / "domains").rglob("*.py"), *(root / "tasks").rglob("*.py")]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if banned.search(line) and path.name != "calibration.py":
                found.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert found == []
    calibration = (root / "tasks" / "calibration.py").read_text()
    assert calibration.count("sample_batched(") == 1  # during training there is no TrainedRun yet


# --- outputs and resumes ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(arrays, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "2", *FAST]) == 0
    return run


def test_an_output_that_is_an_input_or_inside_the_run_is_refused(arrays, trained, tmp_path, capsys):
    before = arrays.read_bytes()
    assert main(["train", "generate", "--data", str(arrays), "--out", str(arrays)]) == 2
    assert "is the input given as data.path" in capsys.readouterr().err
    assert main(["generate", "--run", str(trained), "--out", str(trained / "config.json"), "--num", "1"]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert arrays.read_bytes() == before


def test_generate_num_zero_is_an_error(trained, tmp_path, capsys):
    assert main(["generate", "--run", str(trained), "--num", "0", "--out", str(tmp_path / "s.npy")]) == 2
    assert "--num must be >= 1" in capsys.readouterr().err and not (tmp_path / "s.npy").exists()


def test_resuming_with_another_network_or_data_is_refused(arrays, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "2", *FAST]) == 0
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "3", *FAST[:-2],
                 "--set", "model.net.channels=[8,8]", "--accelerator", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another model" in err and "a new --out starts afresh" in err
    other = tmp_path / "y.npy"
    np.save(other, np.load(arrays)[:20])
    assert main(["train", "generate", "--data", str(other), "--out", str(run), "--max-steps", "3", *FAST]) == 2
    assert "another data" in capsys.readouterr().err


def test_a_format_1_run_is_migrated_and_samples_as_it_did(trained, tmp_path):
    from sciffusion.training import load_run, save_run
    from sciffusion.training.checkpoint import MANIFEST

    run = load_run(trained)
    old = tmp_path / "old"
    cfg = {**run["config"], "sampling": {k: v for k, v in run["config"]["sampling"].items() if k != "exact_gaussian"}}
    save_run(old, weights=run["weights"], ema=run["ema"], normalizer=run["normalizer"], config=cfg,
             metadata=run["metadata"])
    manifest = json.loads((old / MANIFEST).read_text())
    (old / MANIFEST).write_text(json.dumps({**manifest, "format": 1, "sciffusion_version": "0.1.0"}))
    loaded = sf.load_trained(old)
    assert loaded.config["sampling"]["exact_gaussian"] is False
    assert sf.load_trained(trained).config["sampling"]["exact_gaussian"] is True
    (old / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(sf.RunError, match="reads formats 1 to 2"):
        sf.load_trained(old)


# --- imports and plugins --------------------------------------------------------------------------------------------

def test_the_maths_imports_without_lightning_xarray_pandas_or_the_domains():
    import subprocess
    import sys

    code = ("import sys, sciffusion.diffusion, sciffusion.nets; "
            "print([m for m in ('lightning', 'xarray', 'pandas', 'sciffusion.domains', 'sciffusion.training') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert sf.fit is sf.training.fit and sf.climate.forecast is not None  # the rest loads on first use
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sf.nope


PLUGIN = '''
from sciffusion.tasks import Task, register


@register
class Echo(Task):
    name = "echo-plugin"
    verb = "echo-plugin-sample"
    summary = "a third-party task found through the sciffusion.tasks entry-point group"
'''


def test_a_task_plugin_registers_through_the_entry_point_group(tmp_path):
    import subprocess
    import sys

    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "echo_plugin-0.1.dist-info"  # what pip leaves in site-packages for an installed package
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sciffusion.tasks]\necho = echo_plugin\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "sciffusion.cli", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "echo-plugin-sample" in proc.stdout
    train = subprocess.run([sys.executable, "-m", "sciffusion.cli", "train", "--help"], capture_output=True, text=True,
                           env=env)
    assert "echo-plugin" in train.stdout
    (tmp_path / "echo_plugin.py").write_text("raise RuntimeError('broken plugin')\n")
    proc = subprocess.run([sys.executable, "-m", "sciffusion.cli", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "'echo' (echo_plugin) failed" in proc.stderr


# --- spread calibration -------------------------------------------------------------------------------------------

class _ExactModule(torch.nn.Module):
    """Stands in for a trained DiffusionModule: its denoiser is exact for N(0, std^2) and ignores the condition."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the calibrator reads the device off a parameter
        self.std = std

    def denoiser(self):
        return GaussianDenoiser(0.0, self.std)


@pytest.mark.parametrize("truth_std", [1.0, 2.0, 0.5])
def test_spread_calibrator_against_an_exact_gaussian_model(truth_std):
    from sciffusion.tasks.calibration import spread_calibrator

    M, model_std = 8, 1.0
    g = torch.Generator().manual_seed(0)
    val = [{"x": torch.randn(1, 64, generator=g) * truth_std, "cond": torch.zeros(1, 64)} for _ in range(64)]
    spec = sf.SamplingSpec(sampler="dpmpp_2m", steps=8, sigma_min=0.01, sigma_max=20.0, calibration_members=M)
    found = spread_calibrator(val, spec, seed=0)(_ExactModule(model_std))
    # Members ~ N(0, s^2) around a truth ~ N(0, t^2): E spread^2 = s^2, E (mean - truth)^2 = t^2 + s^2 / M, so the
    # fair spread/skill sqrt((M+1)/M) s / sqrt(t^2 + s^2/M) is 1 exactly when t = s, and the inflation its inverse.
    expected = np.sqrt((M + 1) / M) * model_std / np.sqrt(truth_std**2 + model_std**2 / M)
    ratio = found["metrics"]["val_spread_skill_raw"]
    assert ratio == pytest.approx(expected, rel=0.04)  # 4,096 cells x 8 members: Monte Carlo SE ~1.5%
    assert found["sampling"]["inflation"] == pytest.approx(np.clip(1 / ratio, 0.5, 4.0), rel=1e-12)
    # The exact model's conditional mean is 0, so the gap to an M-member ensemble mean is its sampling error alone,
    # 1/sqrt(M) of the spread.
    assert found["metrics"]["cond_mean_gap"] == pytest.approx(1 / np.sqrt(M), rel=0.05)


# --- bad cells in price tables --------------------------------------------------------------------------------------

def test_a_non_numeric_price_cell_is_named_not_dropped(tmp_path, capsys):
    from sciffusion.domains.finance.series import read_table

    days = np.array(np.arange("2020-01-01", "2020-03-01", dtype="datetime64[D]"), dtype=str)
    rows = ["date,AAA,BBB,sector"] + [f"{d},{100 + i},{50 + i},tech" for i, d in enumerate(days)]
    rows[5] = rows[5].replace(",104,", ",abc,")
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\n")
    for assets in (None, ["AAA", "BBB"]):
        with pytest.raises(ValueError, match=r"asset 'AAA' has a non-numeric cell 'abc' on 2020-01-05"):
            read_table(path, assets)
    assert main(["train", "scenarios", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "asset 'AAA' has a non-numeric cell 'abc' on 2020-01-05" in capsys.readouterr().err
    path.write_text("\n".join(rows[:5] + [rows[5].replace(",abc,", ",,")] + rows[6:]) + "\n")  # blank = missing
    with pytest.warns(UserWarning, match=r"columns \['sector'\] hold no numbers"):
        table = read_table(path)
    assert list(table.columns) == ["AAA", "BBB"] and np.isnan(table["AAA"].iloc[4])


def test_a_grid_fitted_at_training_is_stored_used_and_replaced_by_other_steps(arrays, tmp_path):
    run = tmp_path / "fit"
    assert main(["train", "generate", "--data", str(arrays), "--out", str(run), "--max-steps", "2", *FAST,
                 "--set", "sampling.sampler=dpmpp_2m", "--set", "sampling.fit_nfe=4"]) == 0
    loaded = sf.load_trained(run)
    grid = loaded.config["sampling"]["grid"]
    assert len(grid) == 5 and grid[-1] == 0.0 and all(b <= a for a, b in zip(grid, grid[1:]))
    assert grid[0] == pytest.approx(loaded.sampling_spec().sigma_max)  # fitted from where sampling starts
    fit = json.loads((run / "metadata.json").read_text())["metrics"]["grid_fit"]
    assert fit["nfe"] == 4 and fit["grid"] == grid and fit["samples"] > 0
    assert loaded.sampling_spec().steps == 4 and loaded.sampling_spec().sigmas().tolist() == grid
    # another step count (or range) asked for at sampling replaces the fitted grid instead of being ignored
    other = loaded.sampling_spec({"steps": 6})
    assert other.grid is None and other.steps == 6 and len(other.sigmas()) == 7
    assert main(["generate", "--run", str(run), "--num", "2", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_a_cli_training_killed_and_resumed_equals_an_uninterrupted_one(arrays, tmp_path):
    """``sciffusion train`` killed with SIGKILL after a checkpoint, then run again with the same command, ends with
    the weights of a run that was never interrupted (batches and noise are indexed by step, not by epoch)."""
    import signal
    import subprocess
    import sys
    import time

    steps = 300
    cmd = [sys.executable, "-m", "sciffusion.cli", "train", "generate", "--data", str(arrays), "--max-steps",
           str(steps), "--threads", "1", "--set", "trainer.checkpoint_every=5", "--set", "trainer.val_every=1000",
           *FAST]
    victim = subprocess.Popen([*cmd, "--out", str(tmp_path / "victim")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "victim" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed: " + victim.stderr.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step_at_kill = torch.load(ckpt, weights_only=True)["global_step"]
    assert victim.returncode == -signal.SIGKILL and 5 <= step_at_kill < steps
    assert not (tmp_path / "victim" / "run.json").exists()  # no finished run was exported
    for out in ("victim", "ref"):
        done = subprocess.run([*cmd, "--out", str(tmp_path / out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    a = load_file(tmp_path / "ref" / "weights.safetensors")
    b = load_file(tmp_path / "victim" / "weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming from step {step_at_kill}"


def test_a_command_trains_nothing_and_its_verb_cannot_be_taken(capsys):
    """Day and window scores are commands (COMMANDS), not tasks: no ``train`` verb, and a task or command that
    takes a registered verb is refused."""
    from sciffusion.domains import COMMANDS
    from sciffusion.tasks import Command, Task, register, register_command

    with pytest.raises(SystemExit):
        main(["train", "score-days", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err
    assert COMMANDS["score-days"].reads_runs_of == "impute" and COMMANDS["score-windows"].reads_runs_of == "scenarios"

    class Clash(Command):
        verb = "score-days"
        reads_runs_of = "impute"
        summary = "x"

    class TaskClash(Task):
        name, verb, summary = "clash", "score-windows", "x"

    with pytest.raises(ValueError, match="clashes"):
        register_command(Clash)
    with pytest.raises(ValueError, match="clashes with a registered command"):
        register(TaskClash)
