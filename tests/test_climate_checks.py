"""Checks a user relies on without knowing: units that lie, which spread/skill is printed, a record too short
for an annual cycle, and output paths refused before any work (issue 30, parts 7 and 8 and its bad inputs)."""

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sciffusion.cli import main
from sciffusion.domains.climate.scores import ensemble_scores
from sciffusion.domains.climate.stats import choose_cycle
from sciffusion.training.checkpoint import remove_stale_temps

TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2", "--threads", "1"]


def monthly(units: str = "K", offset: float = 0.0) -> xr.Dataset:
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01", periods=60, freq="MS")
    a = np.zeros((60, 4, 8))
    for i in range(1, 60):
        a[i] = 0.6 * a[i - 1] + rng.normal(size=(4, 8))
    cycle = 5 * np.cos(2 * np.pi * np.arange(60) / 12)[:, None, None]
    return xr.Dataset({"tas": (("time", "lat", "lon"), (288 + cycle + a + offset).astype("float32"),
                               {"units": units})},
                      coords={"time": times, "lat": np.linspace(-60, 60, 4), "lon": np.arange(8) * 45.0})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checks")
    monthly().to_netcdf(tmp / "k.nc")
    assert main(["train", "forecast", "--data", str(tmp / "k.nc"), "--train-period", "2000-01/2003-12", "--out",
                 str(tmp / "run"), *TINY]) == 0
    return tmp


def test_celsius_labelled_kelvin_is_named(run):
    """A degC field whose units say K: the forecast says so in one warning naming the variable and the units."""
    monthly(offset=-273.15).to_netcdf(run / "liar.nc")
    with pytest.warns(UserWarning, match=r"tas: the data's mean lies -27\d\S* \(-\d+ training standard deviations\) "
                                         r"from the run's climatology; are the data in the units they claim \(K\)"):
        assert main(["forecast", "--run", str(run / "run"), "--data", str(run / "liar.nc"), "--init-period",
                     "2004-01/2004-03", "--leads", "1", "--members", "2", "--out", str(run / "liar_fc.nc")]) == 0
    with warnings.catch_warnings():  # honest data: no such warning
        warnings.filterwarnings("error", message=".*training standard deviations")
        assert main(["forecast", "--run", str(run / "run"), "--data", str(run / "k.nc"), "--init-period",
                     "2004-01/2004-03", "--leads", "1", "--members", "2", "--out", str(run / "fc.nc")]) == 0


def test_both_spread_skill_definitions_are_in_the_table(run, capsys):
    assert main(["forecast", "--run", str(run / "run"), "--data", str(run / "k.nc"), "--init-period",
                 "2004-01/2004-06", "--leads", "1", "--members", "4", "--out", str(run / "fc4.nc")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "forecast", "--run", str(run / "run"), "--data", str(run / "k.nc"), "--forecast",
                 str(run / "fc4.nc"), "--baselines", "persistence", "--out", str(run / "s.json")]) == 0
    assert "WeatherBench 2's spread / RMSE is spread_skill_wb2" in capsys.readouterr().out
    cell = json.loads((run / "s.json").read_text())["tas"]["sciffusion"]["1"]
    # GenCast's ratio is WeatherBench 2's times sqrt((M + 1) / M), 4 members here
    assert cell["spread_skill"] == pytest.approx(cell["spread_skill_wb2"] * np.sqrt(5 / 4), rel=1e-12)
    assert cell["spread_skill_wb2"] == pytest.approx(cell["spread"] / cell["rmse"], rel=1e-12)


def test_spread_skill_wb2_is_spread_over_rmse():
    rng = np.random.default_rng(3)
    fc = xr.DataArray(rng.normal(size=(5, 3, 4, 6)), dims=("init_time", "member", "lat", "lon"),
                      coords={"lat": np.linspace(-45, 45, 4), "lon": np.arange(6) * 60.0})
    truth = xr.DataArray(rng.normal(size=(5, 4, 6)), dims=("init_time", "lat", "lon"),
                         coords={"lat": fc.lat, "lon": fc.lon})
    s = ensemble_scores(fc, truth, keep=())
    assert float(s["spread_skill_wb2"]) == pytest.approx(float(s["spread"] / s["rmse"]), rel=1e-12)
    assert float(s["spread_skill"]) == pytest.approx(float(s["spread_skill_wb2"]) * np.sqrt(4 / 3), rel=1e-12)


def test_auto_climatology_fits_the_annual_cycle_on_most_of_two_years_and_says_when_it_cannot():
    almost_two = pd.date_range("2000-01-01", periods=4 * 730 - 1, freq="6h").values  # one step short of two years
    assert choose_cycle(almost_two) == "doy"
    with pytest.warns(UserWarning, match=r"climatology auto: the training period spans 0\.\d\d years, too short"):
        assert choose_cycle(pd.date_range("2000-01-01", periods=200, freq="D").values) == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_cycle(pd.date_range("2000", periods=30, freq="YS").values) == "none"  # annual means: silent


@pytest.mark.parametrize("out, message", [
    ("/sys/x.nc", "cannot write /sys/x.nc: "),
    ("{tmp}", "cannot write {tmp}: this command writes .nc or .nc4 or .netcdf or .zarr files"),
    ("{tmp}/fc.csv", "cannot write {tmp}/fc.csv: this command writes .nc or"),
    ("{tmp}/folder.nc", "cannot write {tmp}/folder.nc: it is a directory"),
])
def test_an_unwritable_output_is_refused_before_sampling(run, tmp_path, capsys, monkeypatch, out, message):
    import sciffusion.domains.climate.tasks as climate_tasks

    (tmp_path / "folder.nc").mkdir()
    monkeypatch.setattr(climate_tasks, "forecast_batches",
                        lambda *a, **k: pytest.fail("sampling started before the output was checked"))
    out = out.format(tmp=tmp_path)
    assert main(["forecast", "--run", str(run / "run"), "--data", str(run / "k.nc"), "--init-period",
                 "2004-01/2004-03", "--leads", "1", "--members", "2", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sciffusion forecast: error: {message.format(tmp=tmp_path)}") and len(err.splitlines()) == 1


def test_a_killed_forecasts_hidden_store_is_removed_by_the_next_run(run, tmp_path):
    dead = tmp_path / f".fc.nc.{2**22 + 12345}.tmp.zarr"   # a PID above pid_max's default: no such process
    (dead / "tas").mkdir(parents=True)
    live = tmp_path / f".fc.nc.{os.getpid()}.tmp.zarr"
    live.mkdir()
    assert remove_stale_temps(tmp_path / "fc.nc") == [dead]
    assert not dead.exists() and live.exists()
    live.rmdir()
    (dead / "tas").mkdir(parents=True)
    assert main(["forecast", "--run", str(run / "run"), "--data", str(run / "k.nc"), "--init-period",
                 "2004-01/2004-06", "--leads", "1", "--members", "2", "--batch-inits", "2",
                 "--out", str(tmp_path / "fc.nc")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.nc"]


def test_python_api_names_a_wrong_data_type_and_fractional_leads(run):
    """What a new user types by mistake gets a one-line message naming the problem, not a TypeError from deep
    inside (issue 32, part 5)."""
    import sciffusion as sf

    values = monthly()["tas"].values
    with pytest.raises(TypeError, match=r"data must be a path, a glob, a URL, a list of them or an xarray Dataset; "
                                        r"got numpy\.ndarray"):
        sf.climate.train_forecast(values, run / "bad", train_period="2000-01/2003-12")
    assert not (run / "bad").exists()  # refused before anything is written
    with pytest.raises(TypeError, match=r"the list holds a ndarray"):
        sf.climate.open_fields([str(run / "k.nc"), values])
    from sciffusion.domains.climate.forecast import forecast

    with pytest.raises(TypeError, match=r"leads and members must be whole numbers; got 2\.5, 16"):
        forecast(run / "run", monthly(), init_period="2004-01/2004-03", leads=2.5)
