"""``--family`` on the train verbs (issue 31, part 3): a flow-matching run and a CRPS-trained generator train,
record their family and sample through the same verbs; what a generator cannot do (other grids, distillation) is
refused in one line; a setting that contradicts the family is refused."""

import json

import numpy as np
import pytest
import xarray as xr
from layouts import ar1_monthly

from sciffusion.cli import main
from sciffusion.training.fit import load_trained
from sciffusion.training.schema import resolve_family

TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("family") / "m.nc"
    ar1_monthly(48).to_netcdf(path)
    return path


def test_a_flow_run_trains_records_its_family_and_forecasts(data, tmp_path, capsys):
    assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01/2002-12", "--family", "flow",
                 "--out", str(tmp_path / "run"), *TINY]) == 0
    run = load_trained(tmp_path / "run")
    assert run.config["model"]["family"] == "flow"
    assert run.module.hparams["parameterization"] == "flow" and run.module.hparams["weighting"] == "flow"
    assert run.module.hparams["process"] == "flow"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "flow"
    assert main(["forecast", "--run", str(tmp_path / "run"), "--data", str(data), "--init-period", "2003-01/2003-03",
                 "--leads", "2", "--members", "2", "--out", str(tmp_path / "fc.nc")]) == 0
    with xr.open_dataset(tmp_path / "fc.nc") as fc:
        assert np.isfinite(fc["tas"]).all() and fc.sizes["member"] == 2


def test_the_python_api_takes_the_family(data, tmp_path):
    import sciffusion as sf

    run = sf.climate.train_forecast(str(data), tmp_path / "api", train_period="2000-01/2002-12", family="flow",
                                    max_steps=2, threads=1, settings={"trainer.progress": False,
                                                                      "model.net.channels": [8, 16],
                                                                      "sampling.calibration_members": 2})
    assert run.module.hparams["parameterization"] == "flow"


def test_a_crps_run_is_a_one_pass_generator_through_the_same_verbs(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01/2002-12", "--family", "crps",
                 "--out", str(run_dir), *TINY]) == 0
    run = load_trained(run_dir)
    assert run.family == "crps" and run.one_pass
    h = run.module.hparams
    assert (h["parameterization"], h["loss"], h["crps_members"], h["crps_alpha"]) == ("gen", "crps", 2, 0.95)
    spec = run.sampling_spec()
    assert (spec.sampler, spec.grid) == ("euler", [1.0, 0.0])
    assert spec.inflation == run.metadata["metrics"]["inflation"]  # calibrated about G(0) as the other families
    capsys.readouterr()
    assert main(["info", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "crps"
    out = tmp_path / "fc.nc"
    assert main(["forecast", "--run", str(run_dir), "--data", str(data), "--init-period", "2003-01/2003-03",
                 "--leads", "2", "--members", "3", "--out", str(out)]) == 0
    with xr.open_dataset(out) as fc:
        assert np.isfinite(fc["tas"]).all() and fc.sizes["member"] == 3
        assert float(fc["tas"].std("member").mean()) > 0  # members differ: the noise reaches the output
    # one network call per member and lead
    calls = []
    den = run.denoiser()
    net_forward = den.net.forward
    den.net.forward = lambda *a, **k: calls.append(1) or net_forward(*a, **k)
    import torch

    cond = torch.zeros(3, run.module.net.cond_channels, 4, 5)
    run.sample((1, 4, 5), [1, 2, 3], cond=cond, sampling=spec.replace(inflation=None))
    assert len(calls) == 1  # one batch of 3 members, one pass
    run.sample((1, 4, 5), [1, 2, 3], cond=cond, sampling=spec)
    assert len(calls) == 3  # inflated: one more pass for G(0), about which the members are scaled
    with pytest.raises(ValueError, match="CRPS-trained generator: it samples in one network pass, so "
                                         "sampling.steps cannot be changed"):
        run.sampling_spec({"steps": 12})
    assert main(["distill", "--run", str(run_dir), "--steps", "1", "--out", str(tmp_path / "d")]) == 2
    assert "distillation needs a diffusion or flow run" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("extra, message", [
    (["--family", "crps", "--set", "model.parameterization=v"],
     "model.family crps sets model.parameterization=gen; the config has parameterization=v"),
    (["--family", "flow", "--set", "model.parameterization=v"],
     "model.family flow sets model.parameterization=flow; the config has parameterization=v"),
])
def test_refused_families_are_one_line_errors(data, tmp_path, capsys, extra, message):
    assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01/2002-12", *extra,
                 "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_resolve_family_keeps_explicit_flow_options():
    out = resolve_family({"family": "flow", "process": {"name": "flow", "shift": 3.0}})
    assert out == {"family": "flow", "process": {"name": "flow", "shift": 3.0}, "parameterization": "flow",
                   "weighting": "flow"}
    assert resolve_family({"process": "vp"}) == {"family": "diffusion", "process": "vp"}


def test_evaluate_forecast_compares_runs_side_by_side(data, tmp_path, capsys):
    """``evaluate forecast --run A B``: each run forecasts the same initial times with the same seeds; the table
    has both, their sampling cost, and the Diebold-Mariano test of the pair on the per-initial-time CRPS."""
    runs = {}
    for family in ("diffusion", "crps"):
        runs[family] = tmp_path / family
        assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01/2002-12", "--family",
                     family, "--out", str(runs[family]), *TINY]) == 0
    out = tmp_path / "compare.json"
    capsys.readouterr()
    assert main(["evaluate", "forecast", "--run", str(runs["diffusion"]), str(runs["crps"]), "--data", str(data),
                 "--init-period", "2003-01/2003-06", "--leads", "2", "--members", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["init_times"] == 6 and list(report["runs"]) == ["diffusion", "crps"]
    assert report["runs"]["crps"]["family"] == "crps" and report["runs"]["crps"]["nfe_per_member_and_lead"] == 1
    assert report["runs"]["diffusion"]["nfe_per_member_and_lead"] == 2  # TINY: 2 steps of DPM-Solver++(2M)
    scores = report["scores"]["tas"]
    for lead in ("1", "2"):
        dm = report["pairs"]["tas"]["diffusion vs crps"][lead]
        assert dm["mean_diff"] == pytest.approx(scores["diffusion"][lead]["crps"] - scores["crps"][lead]["crps"],
                                                rel=1e-6, abs=1e-9)
        assert 0 <= dm["pvalue"] <= 1
    assert "diffusion vs crps" in text and "network calls per member and lead" in text
    # one run's forecast scored from its file gives the same CRPS as in the comparison
    fc = tmp_path / "crps.nc"
    assert main(["forecast", "--run", str(runs["crps"]), "--data", str(data), "--init-period", "2003-01/2003-06",
                 "--leads", "2", "--members", "3", "--out", str(fc)]) == 0
    alone = tmp_path / "alone.json"
    assert main(["evaluate", "forecast", "--forecast", str(fc), "--data", str(data), "--run", str(runs["crps"]),
                 "--baselines", "none", "--out", str(alone)]) == 0
    own = json.loads(alone.read_text())["tas"]["sciffusion"]
    for lead in ("1", "2"):
        assert own[lead]["crps"] == pytest.approx(scores["crps"][lead]["crps"], rel=1e-6)


def test_several_runs_only_where_they_are_compared(data, tmp_path, capsys):
    assert main(["evaluate", "downscale", "--run", str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(data),
                 "--downscaled", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sciffusion evaluate: error: --run takes one run here; 'evaluate forecast' is the command that "
                   "compares several"]
