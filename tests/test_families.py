"""``--family`` on the train verbs (issue 31, part 3): a flow-matching run trains, records its family and samples
through the same verbs; crps is refused until it exists; a setting that contradicts the family is refused."""

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


@pytest.mark.parametrize("extra, message", [
    (["--family", "crps"], "model.family crps (a CRPS-trained one-pass generator) is not available yet"),
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
