"""Gaps in time: leads count calendar steps, no training window, history or truth is taken across a missing step,
and every command names the gaps in one line (monthly, yearly, 6-hourly and cftime records)."""

import json
import warnings

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sciffusion.cli import main
from sciffusion.domains.climate import tasks as climate_tasks
from sciffusion.domains.climate.conventions import calendar, describe_gaps, steps_after
from sciffusion.domains.climate.fields import GapWarning
from sciffusion.domains.climate.stats import LIM, fit_anomaly_stats

TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2", "--threads", "1"]


def record(times, seed: int = 0) -> xr.Dataset:
    """An AR(1) field ``tas`` (K) on a 6 x 12 global grid at ``times``."""
    rng = np.random.default_rng(seed)
    a = np.zeros((len(times), 6, 12))
    for i in range(1, len(times)):
        a[i] = 0.7 * a[i - 1] + rng.normal(size=(6, 12))
    lat = np.linspace(-75, 75, 6)
    return xr.Dataset({"tas": (("time", "lat", "lon"), (280 + a).astype("float32"), {"units": "K"})},
                      coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                              "lon": ("lon", np.arange(12) * 30.0, {"units": "degrees_east"})})


def years_without(*missing: int, first: int = 1980, last: int = 2010) -> np.ndarray:
    return np.array([f"{y}-01-01" for y in range(first, last + 1) if y not in missing], "datetime64[ns]")


# --- the calendar -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("times, kind, pos", [
    (years_without(2005, first=2003, last=2008), "years", [0, 1, 3, 4, 5]),
    (pd.date_range("2000-01", periods=8, freq="MS").delete([2, 3]).values, "months", [0, 1, 4, 5, 6, 7]),
    (pd.date_range("2000-01-01", periods=6, freq="6h").delete(3).values, "delta", [0, 1, 2, 4, 5]),
    ([cftime.DatetimeNoLeap(2000, m, 16) for m in (1, 2, 3, 6, 7)], "months", [0, 1, 2, 5, 6]),
    (pd.date_range("2000-01", periods=5, freq="QS").values, "months", [0, 1, 2, 3, 4]),
])
def test_calendar_positions_count_missing_steps(times, kind, pos):
    got_kind, _, got = calendar(times)
    assert got_kind == kind and got.tolist() == pos
    # each row's successor one step later, or -1 where that step is missing (or past the end)
    want = [pos.index(p + 1) if p + 1 in pos else -1 for p in pos]
    assert steps_after(got, range(len(pos)), 1).tolist() == want
    assert (describe_gaps(times) is None) == (pos == list(range(len(pos))))


def test_gap_message_names_the_missing_stretch():
    msg = describe_gaps(years_without(2005, first=2003, last=2008))
    assert msg.startswith("the data have 1 gap in time (1 step missing between 2004-01-01 and 2006-01-01)")


def test_ar1_and_lim_leave_out_pairs_across_a_gap():
    """With ``breaks`` the statistics are those of the pairs inside each stretch: the same as fitting on the two
    stretches' pairs alone (a jump across the gap would pull phi down)."""
    rng = np.random.default_rng(1)
    a = np.cumsum(rng.normal(size=(40, 1, 2, 3)), axis=0) * 0.3
    a[20:] += 5.0  # the level after the gap differs: a pair across it is not a lag-one pair
    breaks = np.zeros(39, bool)
    breaks[19] = True
    ar1, _, resid, _ = fit_anomaly_stats(lambda lo, hi: a[lo:hi], 40, chunk=7, breaks=breaks)
    x0 = np.concatenate([a[:19], a[20:39]])
    x1 = np.concatenate([a[1:20], a[21:40]])
    phi = np.clip((x0 * x1).sum(0) / (x0 * x0).sum(0), 0, 0.999)
    np.testing.assert_allclose(ar1.phi, phi, rtol=1e-12)
    whole, _, _, _ = fit_anomaly_stats(lambda lo, hi: a[lo:hi], 40, chunk=7)
    assert not np.allclose(whole.phi, phi)  # the pair across the gap did count without breaks
    lim = LIM.fit(a, np.ones((2, 3)), breaks=breaks, max_modes=2)
    assert np.isfinite(lim.A).all()


# --- through the commands -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yearly_run(tmp_path_factory):
    """A yearly record with 2005 missing, trained on 1980-2000."""
    tmp = tmp_path_factory.mktemp("gaps")
    data = tmp / "yearly.nc"
    record(years_without(2005)).to_netcdf(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "forecast", "--data", str(data), "--train-period", "1980/2000", "--out",
                     str(tmp / "run"), *TINY]) == 0
    assert any(issubclass(w.category, GapWarning) for w in caught)
    return tmp, data


def test_leads_and_valid_times_count_calendar_years_across_a_gap(yearly_run):
    tmp, data = yearly_run
    with pytest.warns(GapWarning) as caught:
        assert main(["forecast", "--run", str(tmp / "run"), "--data", str(data), "--init-period", "2003/2004",
                     "--leads", "3", "--members", "2", "--out", str(tmp / "fc.nc")]) == 0
    gap = next(w for w in caught if issubclass(w.category, GapWarning))
    assert str(gap.message).startswith(f"the data ({data}) have 1 gap in time (1 step missing between 2004-01-01 "
                                       "and 2006-01-01)")
    # the CLI prints sciffusion's own warnings as one line, without the source line
    line = warnings.formatwarning(gap.message, gap.category, gap.filename, gap.lineno)
    assert line == f"sciffusion: warning: {gap.message}\n"
    with xr.open_dataset(tmp / "fc.nc") as fc:
        assert fc["lead_time"].attrs["units"] == "years" and fc["lead_time"].values.tolist() == [1, 2, 3]
        got = [[str(t)[:4] for t in row] for row in fc["valid_time"].values]
    assert got == [["2004", "2005", "2006"], ["2005", "2006", "2007"]]


def test_an_initial_time_whose_history_crosses_the_gap_is_skipped_and_named(yearly_run):
    tmp, data = yearly_run
    with pytest.warns(UserWarning, match=r"1 initial time\(s\) skipped: their 2 past states cross a gap in time "
                                         r"\(2006-01-01"):
        assert main(["forecast", "--run", str(tmp / "run"), "--data", str(data), "--init-period", "2004/2008",
                     "--leads", "1", "--members", "2", "--out", str(tmp / "fc2.nc")]) == 0
    with xr.open_dataset(tmp / "fc2.nc") as fc:
        assert [str(t)[:4] for t in fc["init_time"].values] == ["2004", "2007", "2008"]


def test_truth_in_the_gap_is_not_scored(yearly_run):
    tmp, data = yearly_run
    assert main(["forecast", "--run", str(tmp / "run"), "--data", str(data), "--init-period", "2002/2004",
                 "--leads", "2", "--members", "2", "--out", str(tmp / "fc3.nc")]) == 0
    with pytest.warns(UserWarning, match=r"2 \(initial time, lead\) pair\(s\) have their truth in a gap"):
        assert main(["evaluate", "forecast", "--run", str(tmp / "run"), "--data", str(data), "--forecast",
                     str(tmp / "fc3.nc"), "--baselines", "persistence", "lim", "--out", str(tmp / "s.json")]) == 0
    table = json.loads((tmp / "s.json").read_text())["tas"]
    assert all(np.isfinite(table[m][lead]["crps"]) for m in ("sciffusion", "persistence", "lim") for lead in "12")


def test_training_windows_never_straddle_a_missing_year_of_months(tmp_path, monkeypatch):
    """Monthly data with 2003 missing: every training window (history + target) is consecutive months."""
    seen = []

    class Recording(climate_tasks.ForecastWindows):
        def __init__(self, ds, variables, time, ends, *args, **kwargs):
            seen.append((ds[time].values, list(ends)))
            super().__init__(ds, variables, time, ends, *args, **kwargs)

    monkeypatch.setattr(climate_tasks, "ForecastWindows", Recording)
    times = pd.date_range("2000-01", "2006-12", freq="MS")
    data = tmp_path / "monthly.nc"
    record(times[times.year != 2003].values).to_netcdf(data)
    with pytest.warns(GapWarning, match="12 steps missing between 2002-12-01 and 2004-01-01"):
        assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01/2005-12", "--out",
                     str(tmp_path / "run"), *TINY]) == 0
    t, ends = seen[0][0], seen[0][1] + seen[1][1]
    months = pd.DatetimeIndex(t).year * 12 + pd.DatetimeIndex(t).month
    assert ends and all(months[e + 1] - months[e - 1] == 2 for e in ends)  # history 2 + target: 3 in a row
    assert len(ends) == (36 - 2) + (24 - 2)  # 2000-2002 and 2004-2005, each loses its first two as ends


def test_six_hourly_leads_stay_timedeltas_across_a_missing_step(tmp_path):
    times = pd.date_range("2000-01-01", periods=200, freq="6h").delete(150).values
    data = tmp_path / "six.nc"
    record(times).to_netcdf(data)
    with pytest.warns(GapWarning):
        assert main(["train", "forecast", "--data", str(data), "--train-period", "2000-01-01/2000-02-05", "--out",
                     str(tmp_path / "run"), *TINY]) == 0
        assert main(["forecast", "--run", str(tmp_path / "run"), "--data", str(data), "--init-period",
                     "2000-02-07T00/2000-02-08T00", "--leads", "2", "--members", "2",
                     "--out", str(tmp_path / "fc.nc")]) == 0
    with xr.open_dataset(tmp_path / "fc.nc") as fc:
        assert fc["lead_time"].values.tolist() == [pd.Timedelta("6h").value, pd.Timedelta("12h").value]
        first = pd.Timestamp(fc["init_time"].values[0])
        assert pd.Timestamp(fc["valid_time"].values[0, 0]) == first + pd.Timedelta("6h")
