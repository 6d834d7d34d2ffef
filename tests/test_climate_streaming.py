"""``evaluate forecast`` streams: scores accumulated over batches of initial times equal the one-piece table
(issue 30, part 3)."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from layouts import ar1_monthly

from sciffusion.cli import main
from sciffusion.domains.climate.evaluate import ForecastScores, score_table
from sciffusion.domains.climate.scores import EnsembleScores, ensemble_scores

TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2", "--threads", "1"]


def fields(members: int, seed: int, nan_cell: bool = True) -> tuple[xr.Dataset, xr.Dataset]:
    rng = np.random.default_rng(seed)
    dims = ("init_time", "lead_time", "member", "lat", "lon")
    coords = {"init_time": pd.date_range("2000-01", periods=7, freq="MS").values, "lead_time": [1, 2],
              "member": np.arange(members), "lat": np.linspace(-60, 60, 4), "lon": np.arange(5) * 72.0}
    fc = xr.Dataset({"tas": (dims, rng.normal(size=(7, 2, members, 4, 5)))}, coords=coords)
    truth = xr.Dataset({"tas": (("init_time", "lead_time", "lat", "lon"), rng.normal(size=(7, 2, 4, 5)))},
                       coords={k: v for k, v in coords.items() if k != "member"})
    if nan_cell:
        truth["tas"][3, 1, 2, 2] = np.nan  # a truth missing in one cell of one batch
    return fc, truth


@pytest.mark.parametrize("members", [1, 5])
def test_scores_streamed_over_batches_equal_the_one_piece_scores(members):
    fc, truth = fields(members, seed=members)
    acc = EnsembleScores()
    for lo in range(0, 7, 3):
        part = {"init_time": slice(lo, lo + 3)}
        acc.update(fc["tas"].isel(part), truth["tas"].isel(part))
    xr.testing.assert_allclose(acc.compute(), ensemble_scores(fc["tas"], truth["tas"]), rtol=1e-12)


def test_the_score_table_streamed_is_the_one_piece_table():
    fc, truth = fields(5, seed=0)
    det, _ = fields(1, seed=1)
    whole = score_table({"sciffusion": fc, "persistence": det}, truth)
    acc = ForecastScores()
    for lo in range(0, 7, 2):
        part = {"init_time": slice(lo, lo + 2)}
        acc.update({"sciffusion": fc.isel(part), "persistence": det.isel(part)}, truth.isel(part))
    streamed = acc.compute()
    assert streamed.keys() == whole.keys() and streamed["tas"].keys() == whole["tas"].keys()
    for name, entry in whole["tas"].items():
        for lead in ("1", "2"):
            for k, v in entry[lead].items():
                assert streamed["tas"][name][lead][k] == pytest.approx(v, rel=1e-12, nan_ok=True), (name, lead, k)
        assert streamed["tas"][name].get("rank_histogram") == entry.get("rank_histogram")
    assert streamed["tas"]["persistence"]["versus"] == whole["tas"]["persistence"]["versus"]


def test_evaluate_in_batches_through_the_cli(tmp_path):
    """Batches of 2 initial times against one batch: the model's, persistence's and climatology's scores and their
    Diebold-Mariano tests are the same (the stochastic baselines draw the same law in another order)."""
    ar1_monthly(60).to_netcdf(tmp_path / "m.nc")
    data, run = str(tmp_path / "m.nc"), str(tmp_path / "run")
    assert main(["train", "forecast", "--data", data, "--train-period", "2000-01/2003-12", "--out", run, *TINY]) == 0
    assert main(["forecast", "--run", run, "--data", data, "--init-period", "2004-01/2004-09", "--leads", "2",
                 "--members", "3", "--out", str(tmp_path / "fc.nc")]) == 0
    tables = {}
    for batch in (2, 1000):
        out = tmp_path / f"s{batch}.json"
        assert main(["evaluate", "forecast", "--run", run, "--data", data, "--forecast", str(tmp_path / "fc.nc"),
                     "--batch-inits", str(batch), "--members", "4", "--out", str(out)]) == 0
        tables[batch] = json.loads(out.read_text())["tas"]
    for name in ("sciffusion", "persistence", "climatology"):
        for lead in ("1", "2"):
            for k, v in tables[1000][name][lead].items():
                assert tables[2][name][lead][k] == pytest.approx(v, rel=1e-9, nan_ok=True), (name, lead, k)
    for name in ("persistence", "climatology"):
        assert tables[2][name]["versus"]["1"]["pvalue"] == pytest.approx(tables[1000][name]["versus"]["1"]["pvalue"],
                                                                          rel=1e-9)
    for name in ("damped_persistence", "lim"):  # another draw of the same law: close, not equal
        assert tables[2][name]["1"]["crps"] == pytest.approx(tables[1000][name]["1"]["crps"], rel=0.15)
