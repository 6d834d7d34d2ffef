"""Climate domain: ingestion, scores against reference libraries, fitted statistics, forecast files, the CLI."""

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sciffusion import datasets
from sciffusion.cli import main
from sciffusion.domains.climate import Grid, canonical, crps_ensemble, open_fields, skill_spread, weighted_mean
from sciffusion.domains.climate.evaluate import baseline_forecasts, truth_for
from sciffusion.domains.climate.fields import select_period
from sciffusion.domains.climate.forecast import forecast
from sciffusion.domains.climate.scores import ensemble_scores, rank_histogram
from sciffusion.domains.climate.stats import AR1, LIM, Climatology, choose_cycle, cycle_keys, years

OSTIA = datasets.path("ostia_sst")
A1B = datasets.path("hadcm3_a1b")
TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=3", "--set", "sampling.calibration_members=3"]


def toy(lat=(30.0, 10.0, -10.0), lon=(-90.0, 0.0, 90.0, 180.0), nt=30, names=("latitude", "longitude")):
    t = pd.date_range("2000-01-01", periods=nt, freq="MS")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(nt, len(lat), len(lon))) + np.asarray(lat)[None, :, None] / 10
    ds = xr.Dataset({"tas": (("time", names[0], names[1]), data, {"units": "K", "long_name": "air temperature"})},
                    coords={"time": t, names[0]: (names[0], list(lat), {"units": "degrees_north"}),
                            names[1]: (names[1], list(lon), {"units": "degrees_east"})},
                    attrs={"title": "toy"})
    return ds


# --- ingestion ----------------------------------------------------------------------------------------------
def test_canonical_sorts_lat_wraps_lon_and_keeps_values_and_attrs():
    ds = toy(lon=(270.0, 0.0, 90.0, 180.0))
    out, grid = canonical(ds, ["tas"])
    assert grid.lat_values == (-10.0, 10.0, 30.0) and grid.lon_values == (0.0, 90.0, 180.0, 270.0)
    assert grid.periodic  # four 90-degree steps cover the globe
    for la, lo in [(30.0, 270.0), (-10.0, 0.0)]:
        assert float(out.tas.sel(latitude=la, longitude=lo)[3]) == float(ds.tas.sel(latitude=la, longitude=lo)[3])
    assert out.tas.attrs == ds.tas.attrs and out.attrs == ds.attrs
    assert out.latitude.attrs == ds.latitude.attrs


def test_negative_longitudes_stay_in_their_convention_and_regional_grids_are_not_periodic():
    out, grid = canonical(toy(lon=(10.0, -20.0, -10.0)), ["tas"])
    assert grid.lon_values == (-20.0, -10.0, 10.0) and not grid.periodic


def test_coordinate_names_found_from_cf_attributes():
    ds = toy(names=("yy", "xx"))
    ds["yy"].attrs["standard_name"] = "latitude"
    ds["xx"].attrs = {"units": "degrees_east"}
    _, grid = canonical(ds)
    assert (grid.lat, grid.lon, grid.time) == ("yy", "xx", "time")


def _no_lat(ds):
    ds = ds.rename(latitude="foo")
    ds["foo"].attrs = {}
    return ds


@pytest.mark.parametrize("mutate, variables, message", [
    (lambda ds: ds, ["sst"], "variable(s) ['sst'] not in the data"),
    (lambda ds: ds.isel(time=[0, 2, 1, 3]), ["tas"], "not strictly increasing"),
    (_no_lat, None, "no latitude dimension"),
    (lambda ds: ds.assign(tas=ds.tas.expand_dims(ens=[1, 2], axis=1)), ["tas"], "neither time, latitude"),
])
def test_bad_inputs_give_clear_errors(mutate, variables, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        canonical(mutate(toy()), variables)


def test_grid_check_names_both_grids():
    _, a = canonical(toy(), ["tas"])
    _, b = canonical(toy(lat=(40.0, 20.0, 0.0)), ["tas"])
    with pytest.raises(ValueError, match="does not match the run's 3x4 grid"):
        a.check(b)
    a.check(Grid.from_dict(a.to_dict()))
    w = a.lat_weights()
    assert w.mean() == pytest.approx(1.0) and w[1] > w[2]


def test_real_ostia_file_is_global_with_nan_land():
    ds, grid = open_fields(OSTIA)
    assert grid.periodic and grid.shape == (18, 432) and list(ds.data_vars) == ["surface_temperature"]
    frac = float(ds.surface_temperature.isnull().mean())
    assert 0.2 < frac < 0.35
    assert choose_cycle(ds.time.values) == "month"
    a1b, g2 = open_fields(A1B)
    assert not g2.periodic and choose_cycle(a1b.time.values) == "none"  # annual means, 360-day calendar


def test_select_period_forms():
    ds = toy(nt=36)
    assert select_period(ds, "time", "2000-03/2000-05").sizes["time"] == 3
    assert select_period(ds, "time", ":2000-12").sizes["time"] == 12
    assert select_period(ds, "time", "2002").sizes["time"] == 12
    with pytest.raises(ValueError, match="selects no time steps"):
        select_period(ds, "time", "1990/1991")


# --- scores -------------------------------------------------------------------------------------------------
def _ens(seed=0, shape=(6, 5, 7), members=9, lat=None):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-60, 60, shape[1]) if lat is None else lat
    fc = xr.DataArray(rng.normal(size=(*shape, members)), dims=("time", "lat", "lon", "member"), coords={"lat": lat})
    tr = xr.DataArray(rng.normal(size=shape), dims=("time", "lat", "lon"), coords={"lat": lat})
    return fc, tr


def test_crps_matches_properscoring_and_scoringrules():
    import properscoring
    import scoringrules

    fc, tr = _ens()
    np.testing.assert_allclose(crps_ensemble(fc, tr, fair=False).values,
                               properscoring.crps_ensemble(tr.values, fc.values), rtol=1e-12)
    np.testing.assert_allclose(crps_ensemble(fc, tr).values,
                               np.asarray(scoringrules.crps_ensemble(tr.values, fc.values, estimator="fair")),
                               rtol=1e-12)


def test_crps_and_spread_skip_nan_cells():
    fc, tr = _ens()
    tr[0, 0, 0] = np.nan
    c = crps_ensemble(fc, tr)
    assert np.isnan(c[0, 0, 0]) and np.isfinite(c[1]).all()
    assert np.isfinite(weighted_mean(c)).all()


def test_weighted_mean_by_hand():
    da = xr.DataArray([[1.0, 3.0], [5.0, np.nan]], dims=("lat", "lon"), coords={"lat": [0.0, 60.0]})
    w0, w1 = 1.0, np.cos(np.deg2rad(60.0))
    expected = (w0 * 1 + w0 * 3 + w1 * 5) / (2 * w0 + w1)
    assert float(weighted_mean(da)) == pytest.approx(expected)


def test_calibrated_ensemble_has_spread_skill_one_and_flat_ranks():
    rng = np.random.default_rng(1)
    n, M = 20000, 10
    fc = xr.DataArray(rng.normal(size=(n, 1, M)), dims=("time", "lat", "member"), coords={"lat": [0.0]})
    tr = xr.DataArray(rng.normal(size=(n, 1)), dims=("time", "lat"), coords={"lat": [0.0]})
    ratio = float(skill_spread(fc, tr)["spread_skill"])
    assert ratio == pytest.approx(1.0, abs=0.03)
    hist = rank_histogram(fc, tr)
    assert hist.sum() == n and hist.min() > 0.8 * n / (M + 1)
    narrow = float(skill_spread(fc * 0.5, tr)["spread_skill"])
    assert narrow < 0.6
    hist_narrow = rank_histogram(fc * 0.5, tr)
    assert hist_narrow[0] > 2 * hist_narrow[M // 2]  # under-dispersed: U-shaped


def test_deterministic_forecast_crps_is_mae():
    fc, tr = _ens(members=1)
    sc = ensemble_scores(fc, tr, keep=())
    assert float(sc["crps"]) == pytest.approx(float(weighted_mean(abs(fc.isel(member=0) - tr))))
    assert np.isnan(float(sc["spread_skill"]))


# --- fitted statistics --------------------------------------------------------------------------------------
def test_climatology_recovers_a_seasonal_cycle_and_a_trend():
    from sciffusion.domains.climate.stats import cycle_keys, years

    t = pd.date_range("1990-01-01", periods=120, freq="MS")
    yrs = years(t.values)
    cycle = np.sin(2 * np.pi * (np.asarray(t.month) - 1) / 12)
    x = (cycle + 0.05 * (yrs - 1990) ** 2)[:, None, None, None] * np.ones((1, 1, 2, 3))
    clim = Climatology.fit(x, t.values, "month", trend_degree=2)
    back = clim.at(cycle_keys(t.values, "month"), years(t.values))
    np.testing.assert_allclose(back, x, atol=1e-8)
    later = clim.at(np.array([0]), np.array([2010.0]))  # extrapolated trend + January
    assert later[0, 0, 0, 0] == pytest.approx(0.05 * 20**2 + 0.0, abs=1e-6)


def test_years_follow_each_calendar():
    import cftime

    from sciffusion.domains.climate.stats import years

    got = years([cftime.datetime(2000, 7, 1, calendar="360_day"), cftime.datetime(2001, 3, 1, calendar="noleap"),
                 cftime.datetime(2004, 12, 31, calendar="all_leap")])
    np.testing.assert_allclose(got, [2000 + 180 / 360, 2001 + 59 / 365, 2004 + 365 / 366])
    t = pd.DatetimeIndex(["2000-03-01", "2001-03-01", "2001-01-01T06:00"]).values  # 2000 is a leap year
    np.testing.assert_allclose(years(t), [2000 + 60 / 366, 2001 + 59 / 365, 2001 + 0.25 / 365])


def daily(start="2000-01-01", years_=4, calendar="noleap", freq="D"):
    t = xr.date_range(start, periods=int(years_ * 365 * (4 if freq == "6h" else 1)), freq=freq, calendar=calendar,
                      use_cftime=True)
    return t.values


@pytest.mark.parametrize("calendar,freq", [("noleap", "D"), ("360_day", "D"), ("standard", "6h")])
def test_day_of_year_climatology_recovers_a_smooth_cycle_and_trend(calendar, freq):
    from sciffusion.domains.climate.stats import cycle_keys, years

    t = daily(calendar=calendar, freq=freq)
    assert choose_cycle(t) == "doy"
    yr = years(t)
    f = 2 * np.pi * np.mod(yr, 1)
    cells = np.arange(6.0).reshape(1, 1, 2, 3)
    x = (5 + cells) * np.cos(f)[:, None, None, None] + np.sin(2 * f)[:, None, None, None] + 0.1 * (yr - 2000)[
        :, None, None, None]
    x[:, :, 0, 0] = np.nan  # land
    clim = Climatology.fit(x, t, "auto", trend_degree=1)
    assert clim.kind == "doy" and clim.harmonics.shape == (6, 1, 2, 3)
    np.testing.assert_allclose(clim.at(cycle_keys(t, "doy"), years(t)), x, atol=1e-8)
    np.testing.assert_allclose(clim.harmonics[0, 0].ravel()[1:], 5 + cells.ravel()[1:], atol=1e-8)  # cos(f)
    assert np.isnan(clim.mean[0, 0, 0, 0]) and (clim.harmonics[:, 0, 0, 0] == 0).all()
    back = Climatology.from_state("doy", clim.state())
    np.testing.assert_allclose(back.at(np.zeros(3, int), yr[:3] + 10), clim.at(np.zeros(3, int), yr[:3] + 10))
    with pytest.raises(ValueError, match="needs the times"):
        clim.at(np.zeros(2, int))


def test_cycle_choice_and_same_time_of_year():
    from sciffusion.domains.climate.stats import same_time_of_year, years

    assert choose_cycle(daily(years_=1.5)) == "none"        # under two years: no cycle to fit
    assert choose_cycle(pd.date_range("2000-01", periods=36, freq="MS").values) == "month"
    t = pd.date_range("2000-03-20", "2004-12-31", freq="D").values  # a partial first year; 2000 and 2004 leap
    when = years(t)
    idx = same_time_of_year(when, np.array([2005 + 70 / 365, 2005 + 364.2 / 365]), 1 / 365)
    doy = pd.DatetimeIndex(t).day_of_year.values
    # 11 March is missing from 2000 (the data start on 20 March), so both targets keep the last four years
    assert idx.shape == (2, 4) and (pd.DatetimeIndex(t[idx[0]]).year == np.arange(2001, 2005)).all()
    assert (np.abs(doy[idx[0]] - 71) <= 1).all()
    assert (pd.DatetimeIndex(t[idx[1]]).strftime("%m-%d") == "12-31").all()


def test_daily_forecast_and_climatology_baseline(tmp_path):
    from sciffusion.domains.climate.stats import years

    rng = np.random.default_rng(0)
    t = daily(years_=4)
    f = 2 * np.pi * np.mod(years(t), 1)
    noise = np.zeros((len(t), 4, 8))
    for i in range(1, len(t)):
        noise[i] = 0.8 * noise[i - 1] + 0.6 * rng.normal(size=(4, 8))
    data = 10 * np.cos(f)[:, None, None] + noise
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), data, {"units": "K"})},
                    coords={"time": t, "lat": np.linspace(-30, 30, 4), "lon": np.arange(0, 360, 45.0)})
    path = tmp_path / "daily.nc"
    ds.to_netcdf(path)
    run, fc = tmp_path / "run", tmp_path / "fc.nc"
    assert main(["train", "forecast", "--data", str(path), "--train-period", "2000-01-01/2002-12-31", "--out",
                 str(run), "--max-steps", "3", *TINY]) == 0
    assert json.loads((run / "metadata.json").read_text())["climatology"] == "doy"
    assert main(["forecast", "--run", str(run), "--data", str(path), "--init-period", "2003-06-01/2003-06-10",
                 "--leads", "2", "--members", "3", "--out", str(fc)]) == 0
    out = xr.open_dataset(fc)
    truth = truth_for(out, path)["tas"]
    # the forecast sits on the summer trough of the cycle (-10 in June), not on the annual mean
    assert float(abs(out["tas"].mean("member") - truth).mean()) < 3
    base = baseline_forecasts(run, path, init_period="2003-06-01/2003-06-10", leads=2, which=("climatology",))
    clim = base["climatology"]["tas"]
    assert clim.sizes["member"] == 3  # one member per training year, each at the valid day of year
    assert float(abs(clim.mean("member") - truth).mean()) < 2.5 < float(abs(truth).mean())


def test_ar1_recovers_phi():
    rng = np.random.default_rng(0)
    phi = np.array([0.2, 0.7])[:, None, None]
    a = np.zeros((4000, 2, 1, 1))
    for t in range(1, 4000):
        a[t] = phi * a[t - 1] + rng.normal(size=(2, 1, 1))
    fit = AR1.fit(a)
    np.testing.assert_allclose(fit.phi, phi, atol=0.04)
    np.testing.assert_allclose(fit.var, 1 / (1 - phi**2), rtol=0.1)


def test_lim_recovers_the_propagator_and_keeps_spread():
    rng = np.random.default_rng(0)
    A = np.array([[0.8, 0.1], [-0.2, 0.6]])
    p = np.zeros((3000, 2))
    for t in range(1, 3000):
        p[t] = A @ p[t - 1] + rng.normal(size=2)
    patterns = np.linalg.qr(rng.normal(size=(12, 2)))[0].T  # two orthonormal spatial patterns over 12 cells
    a = (p @ patterns).reshape(3000, 1, 3, 4)
    lim = LIM.fit(a, np.ones(3), variance=0.999)
    assert lim.A.shape == (2, 2)
    evals = np.sort(np.abs(np.linalg.eigvals(lim.A)))
    np.testing.assert_allclose(evals, np.sort(np.abs(np.linalg.eigvals(A))), atol=0.05)
    ens = lim.ensemble(a[-1, ], 2, 500, rng)
    assert ens.shape == (500, 2, 1, 3, 4) and 0.5 < ens[:, 1].std() / a.std() < 1.5


# --- forecast end to end on real data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ostia_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ostia")
    run = d / "run"
    assert main(["train", "forecast", "--data", str(OSTIA), "--train-period", "2006-04/2009-03", "--out", str(run),
                 "--max-steps", "4", *TINY]) == 0
    fc = d / "fc.nc"
    assert main(["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-09",
                 "--leads", "2", "--members", "3", "--out", str(fc)]) == 0
    return run, fc


def test_forecast_file_format(ostia_run):
    run, path = ostia_run
    src, _ = open_fields(OSTIA)
    fc = xr.open_dataset(path)
    v = fc.surface_temperature
    assert v.dims == ("init_time", "lead_time", "member", "latitude", "longitude")
    assert v.shape == (6, 2, 3, 18, 432)
    assert v.attrs["units"] == "K" and v.attrs["standard_name"] == "surface_temperature"
    # the input's coordinates and their attributes, without the scalar coordinates (OSTIA's forecast_period) that
    # would say something false about a forecast
    xr.testing.assert_identical(fc.latitude, src.latitude.reset_coords(drop=True))
    xr.testing.assert_identical(fc.longitude, src.longitude.reset_coords(drop=True))
    assert "forecast_period" in src.coords and "forecast_period" not in fc.coords
    land = src.surface_temperature.sel(time="2009-09").isnull().values[0]
    assert np.isnan(v.isel(init_time=-1).values[:, :, land]).all()  # NaN where the input is NaN
    sea = v.isel(init_time=-1).values[:, :, ~land]
    assert np.isfinite(sea).all() and 280 < np.nanmean(sea) < 310  # physical units (K), not normalised
    assert "sciffusion" in fc.attrs["history"] and fc.attrs["sciffusion_task"] == "forecast"
    assert str(fc.init_time.values[0])[:7] == "2009-04"


def test_forecast_members_do_not_depend_on_the_ensemble_size(ostia_run):
    run, _ = ostia_run
    a = forecast(run, OSTIA, init_period="2009-05", leads=1, members=2)
    b = forecast(run, OSTIA, init_period="2009-05", leads=1, members=4)
    # Equal up to float32 rounding: the CPU convolution may take another algorithm for another batch size (1 ulp of
    # 300 K is 3e-5 K, seen once in 15,552 cells); reused or shifted noise would move members by kelvins.
    np.testing.assert_allclose(a.surface_temperature.values, b.surface_temperature.isel(member=[0, 1]).values,
                               rtol=1e-6, atol=0)
    assert not np.allclose(b.surface_temperature.isel(member=0).values, b.surface_temperature.isel(member=1).values,
                           equal_nan=True)


def test_run_records_calibration_and_grid(ostia_run, capsys):
    run, _ = ostia_run
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variables"] == ["surface_temperature"] and info["grid"]["periodic"] is True
    m = info["metrics"]
    # The inflation is the inverse of the measured raw spread/skill (clipped), and it is what the run samples with.
    assert m["val_spread_skill_raw"] > 0
    assert m["inflation"] == pytest.approx(float(np.clip(1 / m["val_spread_skill_raw"], 0.5, 4.0)), rel=1e-9)
    from sciffusion.training import load_trained

    assert load_trained(run).sampling_spec().inflation == pytest.approx(m["inflation"], rel=1e-9)


def test_baselines_and_evaluate(ostia_run, tmp_path, capsys):
    run, path = ostia_run
    fc = xr.open_dataset(path)
    base = baseline_forecasts(run, OSTIA, init_period="2009-04/2009-09", leads=2, members=5)
    assert set(base) == {"persistence", "climatology", "damped_persistence", "lim"}
    truth = truth_for(fc, OSTIA)
    src, _ = open_fields(OSTIA)
    np.testing.assert_array_equal(truth.surface_temperature.isel(init_time=0, lead_time=0).values,
                                  src.surface_temperature.sel(time="2009-05").values[0])
    # anomaly persistence at lead 1 = initial field - clim(init month) + clim(valid month)
    p = base["persistence"].surface_temperature
    assert p.sizes["member"] == 1 and base["climatology"].sizes["member"] == 3  # three training years per month
    assert base["lim"].surface_temperature.shape == (6, 2, 5, 18, 432)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "forecast", "--forecast", str(path), "--data", str(OSTIA), "--run", str(run),
                 "--out", str(out)]) == 0
    table = json.loads(out.read_text())["surface_temperature"]
    assert set(table) == {"sciffusion", "persistence", "climatology", "damped_persistence", "lim"}
    assert all(table[m]["1"]["crps"] > 0 for m in table)
    # Diebold-Mariano against each baseline: the mean of the per-initial-time differences is the difference of the
    # table's CRPS (every initial time has the same ocean cells), computed by an independent route here
    from sciffusion.metrics import diebold_mariano

    ours = ensemble_scores(fc.surface_temperature, truth.surface_temperature, keep=("lead_time", "init_time"))
    for m in ("persistence", "lim"):
        vs = table[m]["versus"]["1"]
        assert vs["mean_diff"] == pytest.approx(table["sciffusion"]["1"]["crps"] - table[m]["1"]["crps"], rel=1e-6)
        assert vs["n"] == 6 and 0 <= vs["pvalue"] <= 1
    theirs = ensemble_scores(base["persistence"].surface_temperature, truth.surface_temperature,
                             keep=("lead_time", "init_time"))
    ref = diebold_mariano(ours["crps"].isel(lead_time=1).values, theirs["crps"].isel(lead_time=1).values, 2)  # NW lag
    assert table["persistence"]["versus"]["2"]["stat"] == pytest.approx(ref["stat"])
    assert "versus" not in table["sciffusion"]
    printed = capsys.readouterr().out
    assert "area-weighted fair CRPS" in printed and "Diebold-Mariano" in printed


def test_recent_normal_by_hand_and_shared_by_every_method(ostia_run, tmp_path):
    from sciffusion.domains.climate.forecast import initial_states, recent_normal
    from sciffusion.training.fit import load_trained

    rng = np.random.default_rng(5)
    a = rng.normal(size=(12, 1, 2, 3))
    a[3, 0, 0, 0] = np.nan
    a[:, 0, 1, 2] = np.nan  # a land cell
    got = recent_normal(a, [0, 4, 11], 4)
    for j, i in enumerate([0, 4, 11]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the land cell's mean of nothing
            np.testing.assert_allclose(got[j], np.nanmean(a[max(0, i - 3):i + 1], axis=0), equal_nan=True)
    run, path = ostia_run
    plain = initial_states(load_trained(run), OSTIA, "2009-04/2009-09")
    st = initial_states(load_trained(run), OSTIA, "2009-04/2009-09", normal_years=1)   # 12 monthly steps
    np.testing.assert_allclose(st.a_hist + st.offset[:, None], plain.a_hist, equal_nan=True, atol=1e-9)
    np.testing.assert_allclose(st.clim_at_lead(2) - st.offset, plain.clim_at_lead(2), equal_nan=True, atol=1e-9)
    base0 = baseline_forecasts(run, OSTIA, init_period="2009-04/2009-09", leads=2, which=("persistence", "climatology"))
    base1 = baseline_forecasts(run, OSTIA, init_period="2009-04/2009-09", leads=2, which=("persistence", "climatology"),
                               normal_years=1)
    # persistence keeps the initial anomaly whatever it is taken from; the climatology's members are the training
    # anomalies of the valid month, each from its own recent normal, added to the initial time's normal
    xr.testing.assert_allclose(base0["persistence"], base1["persistence"])
    src = open_fields(OSTIA)[0].sel(time=slice("2006-04", "2009-03")).surface_temperature.values
    t = open_fields(OSTIA)[0].sel(time=slice("2006-04", "2009-03")).time.values
    from sciffusion.domains.climate.stats import cycle_keys, years
    a = src[:, None] - plain.prep.clim.at(cycle_keys(t, "month"), years(t))
    adj = a - recent_normal(a, range(len(a)), 12)
    month = (plain.keys[plain.index[0]] + 1) % 12
    want = adj[cycle_keys(t, "month") == month][-3:] + st.clim_at_lead(1)[0]
    got = base1["climatology"].surface_temperature.isel(init_time=0, lead_time=0).values
    np.testing.assert_allclose(got, want[:, 0], equal_nan=True, atol=1e-4)
    fc = tmp_path / "fc.nc"
    assert main(["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-09",
                 "--leads", "2", "--members", "3", "--normal-years", "1", "--out", str(fc)]) == 0
    assert xr.open_dataset(fc).attrs["sciffusion_normal_years"] == 1.0
    out = tmp_path / "scores.json"
    assert main(["evaluate", "forecast", "--forecast", str(fc), "--data", str(OSTIA), "--run", str(run),
                 "--baselines", "persistence", "--out", str(out)]) == 0


def test_training_on_recent_normal_anomalies_is_the_forecast_default(tmp_path):
    run, fc = tmp_path / "run", tmp_path / "fc.nc"
    assert main(["train", "forecast", "--data", str(OSTIA), "--train-period", "2006-04/2009-03", "--out", str(run),
                 "--max-steps", "2", "--normal-years", "1", *TINY]) == 0
    assert json.loads((run / "metadata.json").read_text())["normal_years"] == 1.0
    assert main(["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-05",
                 "--leads", "1", "--members", "2", "--out", str(fc)]) == 0
    assert xr.open_dataset(fc).attrs["sciffusion_normal_years"] == 1.0   # the run's normal unless overridden
    # the training windows take their anomalies from the recent normal of their initial time
    from sciffusion.domains.climate.forecast import recent_normal
    from sciffusion.domains.climate.forecast_data import ForecastWindows, Preprocess
    from sciffusion.domains.climate.stats import cycle_keys, years
    from sciffusion.training.fit import load_trained

    prep = Preprocess.from_run(load_trained(run))
    ds = open_fields(OSTIA)[0].sel(time=slice("2006-04", "2009-03"))
    t = ds.time.values
    keys, when = cycle_keys(t, "month"), years(t)
    a = ds.surface_temperature.values[:, None] - prep.clim.at(keys, when)
    off = recent_normal(a, range(len(a)), 12)
    w = ForecastWindows(ds, ["surface_temperature"], "time", [20], keys, when, prep, np.ones(18), off)
    item = w[0]
    k = prep.history
    want = prep.cond((a[20 - k + 1:21] - off[20])[None])[0]
    np.testing.assert_allclose(item["cond"].numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["train", "forecast", "--data", str(OSTIA), "--variables", "sst", "--out", "R"], "variable(s) ['sst'] not in"),
    (["train", "forecast", "--data", str(OSTIA), "--train-period", "1990/1991", "--out", "R"], "selects no time"),
    (["forecast", "--run", "R", "--out", "f.nc"], "missing --data"),
])
def test_forecast_cli_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "R").exists()


def test_forecast_refuses_another_grid(ostia_run, tmp_path, capsys):
    run, _ = ostia_run
    src = xr.open_dataset(OSTIA).isel(longitude=slice(0, 200))
    other = tmp_path / "cut.nc"
    src.to_netcdf(other)
    assert main(["forecast", "--run", str(run), "--data", str(other), "--out", str(tmp_path / "f.nc")]) == 2
    assert "does not match the run's 18x432 grid" in capsys.readouterr().err
    assert not (tmp_path / "f.nc").exists()


def test_static_fields_and_on_demand_reading(tmp_path):
    ds = toy(lat=tuple(np.linspace(40, -40, 8)), lon=tuple(np.arange(0, 360, 22.5)), nt=40)
    orog = np.arange(8 * 16, dtype=float).reshape(8, 16)  # row 0 is latitude 40 (the toy's lats descend)
    ds = ds.assign(orog=(("latitude", "longitude"), orog))
    path = tmp_path / "toy.nc"
    ds.to_netcdf(path)
    run = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--variables", "tas", "--static", "orog", "--out", str(run),
                 "--max-steps", "2", "--set", "data.load_max_gb=0", *TINY]) == 0  # 0 GB: read samples on demand
    from sciffusion.training.fit import load_trained
    trained = load_trained(run)
    static = trained.state["static"].numpy()
    assert static.shape == (1, 8, 16)
    z = (orog - orog.mean()) / orog.std()
    np.testing.assert_allclose(static[0], z[::-1], rtol=1e-6)  # rows follow the sorted (ascending) latitudes
    assert trained.module.net.cond_channels == 2 + 1  # two past states + one static field
    bad = tmp_path / "bad.nc"
    ds.assign(orog=(("latitude", "longitude"), np.zeros((8, 16)))).isel(longitude=slice(0, 8)).to_netcdf(bad)
    assert main(["train", "forecast", "--data", str(bad), "--variables", "tas", "--static", "nope", "--out",
                 str(tmp_path / "r2"), "--max-steps", "1", *TINY]) == 2


# --- downscaling --------------------------------------------------------------------------------------------
from sciffusion.domains.climate.downscale import block_mean, interpolate  # noqa: E402
from sciffusion.domains.climate.downscale_scores import radial_spectrum  # noqa: E402


def test_block_mean_and_interpolation_geometry():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    bm = block_mean(x, 2)
    assert bm.shape == (1, 1, 2, 2) and bm[0, 0, 0, 0] == pytest.approx((1 + 4 + 5) / 3)
    assert np.isnan(block_mean(np.full((2, 2), np.nan), 2)).all()
    with pytest.raises(ValueError, match="not a multiple"):
        block_mean(np.zeros((3, 4)), 2)
    ramp = np.tile(np.arange(8.0), (2, 1))[None, None]  # a linear ramp in longitude
    up = interpolate(block_mean(ramp, 2), 2, periodic=False)
    np.testing.assert_allclose(up[0, 0, :, 2:6], ramp[0, 0, :, 2:6], atol=1e-12)  # exact away from the edges
    wave = np.sin(2 * np.pi * np.arange(16) / 16)[None, None, None].repeat(2, 2)
    upw = interpolate(block_mean(wave, 2), 2, periodic=True)
    assert np.abs(upw - wave).max() < 0.1  # wraps: no edge error on a global grid


def test_radial_spectrum_sees_fine_scales():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(8, 32, 32))
    smooth = interpolate(block_mean(noise[:, None], 4), 4, periodic=False)[:, 0]
    ratio = radial_spectrum(smooth) / radial_spectrum(noise)
    assert ratio[-4:].mean() < 0.2 and radial_spectrum(noise).shape == (16,)


@pytest.fixture(scope="module")
def a1b_downscale(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    run, out = d / "run", d / "fine.nc"
    assert main(["train", "downscale", "--data", str(A1B), "--factor", "4", "--train-period", "1860/2029",
                 "--out", str(run), "--max-steps", "3", *TINY]) == 0
    assert main(["downscale", "--run", str(run), "--data", str(A1B), "--period", "2090/2099", "--members", "3",
                 "--out", str(out)]) == 0
    return run, out


def test_downscale_output_and_evaluate(a1b_downscale, tmp_path, capsys):
    run, out = a1b_downscale
    ds = xr.open_dataset(out)
    v = ds.air_temperature
    assert v.dims == ("time", "member", "latitude", "longitude") and v.shape == (10, 3, 36, 48)
    assert v.attrs["units"] == "K"
    src, _ = open_fields(A1B)
    np.testing.assert_allclose(ds.latitude.values, src.latitude.values[:36])
    assert 250 < float(v.mean()) < 310 and np.isfinite(v.values).all()
    assert ds.attrs["sciffusion_task"] == "downscale"
    scores = tmp_path / "s.json"
    assert main(["evaluate", "downscale", "--downscaled", str(out), "--data", str(A1B), "--run", str(run),
                 "--out", str(scores), "--plots", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["air_temperature_maps.png",
                                                                  "air_temperature_spectrum.png"]
    assert all(p.stat().st_size > 5000 for p in (tmp_path / "p").iterdir())
    table = json.loads(scores.read_text())["air_temperature"]
    assert set(table) == {"sciffusion", "bilinear", "bicubic", "interp_bias_gaussian"}
    assert table["bilinear"]["spectrum_ratio_fine"] < 1.0  # interpolation is too smooth
    assert table["sciffusion"]["crps"] > 0
    for m in ("bilinear", "interp_bias_gaussian"):  # per-time differences average to the table's difference
        vs = table[m]["versus"]
        assert vs["mean_diff"] == pytest.approx(table["sciffusion"]["crps"] - table[m]["crps"], rel=1e-6)
        assert 0 <= vs["pvalue"] <= 1
    assert "versus" not in table["sciffusion"]


def test_downscale_and_its_evaluation_in_batches_of_time_steps_are_the_one_shot_ones(a1b_downscale, tmp_path):
    """4 batches of 3 time steps (the last of 1) write the file of one batch of 10 (members seeded by their time,
    values to the batch tolerance), and scoring it 3 time steps at a time prints the same table."""
    run, one_shot = a1b_downscale
    out = tmp_path / "batched.nc"
    assert main(["downscale", "--run", str(run), "--data", str(A1B), "--period", "2090/2099", "--members", "3",
                 "--batch-times", "3", "--out", str(out)]) == 0
    with xr.open_dataset(out) as a, xr.open_dataset(one_shot) as b:
        actual, expected = a.load(), b.load()
    for ds in (expected, actual):
        ds.attrs.pop("history", None)
    assert_same_forecast(actual, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batched.nc"]  # the temporary store is gone
    tables = []
    for batch in ("3", "64"):
        scores = tmp_path / f"s{batch}.json"
        assert main(["evaluate", "downscale", "--downscaled", str(one_shot), "--data", str(A1B), "--run", str(run),
                     "--batch-times", batch, "--out", str(scores)]) == 0
        tables.append(json.loads(scores.read_text()))
    assert tables[0].keys() == tables[1].keys()
    for v in tables[1]:
        for name, e in tables[1][v].items():
            got = tables[0][v][name]
            for k in ("crps", "rmse", "spread", "spread_skill", "spectrum_ratio_fine", "spectrum_ratio_all"):
                assert got[k] == pytest.approx(e[k], rel=1e-9, nan_ok=True), (v, name, k)
            if "versus" in e:
                assert got["versus"]["pvalue"] == pytest.approx(e["versus"]["pvalue"], rel=1e-9)


def test_downscale_from_coarse_file_matches_from_fine(a1b_downscale, tmp_path):
    run, _ = a1b_downscale
    from sciffusion.domains.climate.downscale import downscale

    src = xr.open_dataset(A1B, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    fine = src.air_temperature.isel(time=slice(-3, None), latitude=slice(0, 36), longitude=slice(0, 48))
    coarse = fine.coarsen(latitude=4, longitude=4).mean()
    a = downscale(run, src.isel(time=slice(-3, None)), members=2)
    b = downscale(run, coarse.to_dataset(), members=2)
    np.testing.assert_allclose(a.air_temperature.values, b.air_temperature.values, rtol=1e-5)
    with pytest.raises(ValueError, match="neither the run's fine grid nor its coarse grid"):
        downscale(run, coarse.isel(longitude=slice(0, 10)).to_dataset(), members=1)


def test_spread_skill_by_hand():
    # two points, equal weights (lat 0), members {0, 2} and {1, 3}, truths 2 and 1
    fc = xr.DataArray([[[0.0, 2.0], [1.0, 3.0]]], dims=("time", "lat", "member"), coords={"lat": [0.0, 0.0]})
    tr = xr.DataArray([[2.0, 1.0]], dims=("time", "lat"), coords={"lat": [0.0, 0.0]})
    out = skill_spread(fc, tr)
    # ensemble means 1 and 2: errors -1 and +1 -> RMSE 1; variances (ddof 1) 2 and 2 -> spread sqrt(2)
    assert float(out["rmse"]) == pytest.approx(1.0)
    assert float(out["spread"]) == pytest.approx(np.sqrt(2.0))
    assert float(out["spread_skill"]) == pytest.approx(np.sqrt(3 / 2) * np.sqrt(2.0))


def test_evaluate_writes_plots(ostia_run, tmp_path):
    run, path = ostia_run
    plots = tmp_path / "plots"
    assert main(["evaluate", "forecast", "--forecast", str(path), "--truth", str(OSTIA), "--run", str(run),
                 "--baselines", "persistence", "--plots", str(plots)]) == 0
    names = sorted(p.name for p in plots.glob("*.png"))
    assert names == ["surface_temperature_crps_by_lead.png", "surface_temperature_maps.png",
                     "surface_temperature_rank_histogram.png"]
    assert all(p.stat().st_size > 5000 for p in plots.glob("*.png"))


def test_streamed_statistics_match_in_memory():
    from sciffusion.domains.climate.stats import cycle_keys, fit_anomaly_stats, years

    rng = np.random.default_rng(3)
    t = pd.date_range("1990-01-01", periods=50, freq="MS").values
    x = rng.normal(size=(50, 2, 3, 4)) + np.linspace(0, 2, 50)[:, None, None, None] ** 2
    x[:, 0, 0, 0] = np.nan  # a land cell
    x[7, 1, 2, 3] = np.nan  # a gap
    whole = Climatology.fit(x, t, "month", trend_degree=2)
    streamed = Climatology.fit_stream(lambda lo, hi: x[lo:hi], t, "month", 2, chunk=7)
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.trend, whole.trend, rtol=1e-9, atol=1e-12)
    a = x - whole.at(cycle_keys(t, "month"), years(t))
    ar_whole, sd_whole, rsd_whole, masked = fit_anomaly_stats(lambda lo, hi: a[lo:hi], 50, chunk=50)
    ar_s, sd_s, rsd_s, masked_s = fit_anomaly_stats(lambda lo, hi: a[lo:hi], 50, chunk=3)
    np.testing.assert_allclose(ar_s.phi, ar_whole.phi, rtol=1e-9)
    np.testing.assert_allclose(sd_s, sd_whole, rtol=1e-9)
    np.testing.assert_allclose(rsd_s, rsd_whole, rtol=1e-9)
    assert masked and masked_s
    # the one-pass residual equals the direct two-pass computation
    direct = np.sqrt(np.nanmean((a[1:] - ar_whole.phi * a[:-1]) ** 2, axis=(0, 2, 3)))
    np.testing.assert_allclose(rsd_s, direct, rtol=1e-9)


def test_streamed_downscale_statistics_match_in_memory():
    from sciffusion.domains.climate.downscale import fit_downscale_prep

    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 2, 8, 12)) * np.array([1.0, 5.0])[:, None, None] + 280
    x[:, 1, 0, :4] = np.nan  # land in one variable
    one = fit_downscale_prep(lambda lo, hi: x[lo:hi], 20, 4, False, None, chunk=20)
    many = fit_downscale_prep(lambda lo, hi: x[lo:hi], 20, 4, False, None, chunk=3)
    for name in ("mean", "std", "bias", "scale", "land"):
        np.testing.assert_allclose(getattr(many, name), getattr(one, name), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(one.mean, np.nanmean(x, axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(one.std, np.nanstd(x, axis=(0, 2, 3)), rtol=1e-9)
    assert one.land[1, 0, :4].all() and not one.land[0].any()


# --- the uncertainty of the normal (bootstrapped climatology and trend per member) ------------------------------

def test_design_reproduces_the_fitted_climatology():
    rng = np.random.default_rng(0)
    times = xr.date_range("2000-01-01", periods=3 * 365, freq="D", calendar="noleap", use_cftime=True)
    when = years(times)
    x = (0.3 * (when - 2001)[:, None, None, None] + np.sin(2 * np.pi * when)[:, None, None, None]
         + rng.normal(0, 0.1, (len(when), 1, 2, 3)))
    clim = Climatology.fit(x, times, "doy", trend_degree=2, n_harmonics=3)
    keys = cycle_keys(times, clim.kind)
    d = len(clim.trend) - 1
    coef = np.concatenate([clim.trend[:d], clim.harmonics, clim.mean], axis=0)  # the design's column order
    np.testing.assert_allclose(np.tensordot(clim.design(keys, when), coef, axes=(1, 0)), clim.at(keys, when),
                               atol=1e-10)


def test_bootstrap_normals_match_the_slope_standard_error():
    from sciffusion.domains.climate.stats import bootstrap_normals

    rng = np.random.default_rng(1)
    times = xr.date_range("1900-01-01", periods=120, freq="YS", use_cftime=True)
    when = years(times)
    x = 0.02 * (when - 1950)[:, None, None, None] + rng.normal(0, 0.5, (120, 1, 1, 400))
    clim = Climatology.fit(x, times, "none", trend_degree=1)
    keys = cycle_keys(times, clim.kind)
    a = x - clim.at(keys, when)
    # block = the whole record: the resample is the record itself, whose refit changes nothing
    same = bootstrap_normals(clim, a, keys, when, 2, block=120)
    assert np.abs(same).max() < 1e-10
    # iid blocks of one year: the spread of the refitted slopes is the OLS standard error (within sampling error)
    boot = bootstrap_normals(clim, a, keys, when, 200, block=1, seed=3)
    slope_sd = boot[:, 0].std(0).mean() / clim.scale  # per year
    u = when - when.mean()
    se = a.std() / np.sqrt((u**2).sum())
    assert slope_sd == pytest.approx(se, rel=0.1)
    # member m's refit depends on (seed, m) only
    np.testing.assert_array_equal(bootstrap_normals(clim, a, keys, when, 3, 10, seed=3),
                                  bootstrap_normals(clim, a, keys, when, 5, 10, seed=3)[:3])
    with pytest.raises(ValueError, match="block"):
        bootstrap_normals(clim, a, keys, when, 2, block=121)


def test_lim_ensemble_from_one_state_per_member():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 1, 4, 5))
    lim = LIM.fit(a, np.ones(4))
    one = lim.ensemble(a[-1], 2, 3, np.random.default_rng(7))
    each = lim.ensemble(np.stack([a[-1]] * 3), 2, 3, np.random.default_rng(7))
    np.testing.assert_allclose(one, each)
    with pytest.raises(ValueError, match="members"):
        lim.ensemble(np.stack([a[-1]] * 2), 2, 3, np.random.default_rng(7))


def sf_load(run):
    from sciffusion.training import load_trained

    return load_trained(run)


def test_forecast_with_normal_uncertainty(ostia_run, tmp_path):
    run, plain_path = ostia_run
    fc = tmp_path / "fc_nu.nc"
    assert main(["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-09",
                 "--leads", "2", "--members", "3", "--normal-uncertainty", "0.5", "--out", str(fc)]) == 0
    nu, plain = xr.open_dataset(fc), xr.open_dataset(plain_path)
    assert nu.attrs["sciffusion_normal_uncertainty"] == 0.5 and plain.attrs["sciffusion_normal_uncertainty"] == 0
    v, p = nu.surface_temperature, plain.surface_temperature
    assert v.shape == p.shape
    np.testing.assert_array_equal(np.isnan(v.values), np.isnan(p.values))  # land stays NaN
    assert np.nanmax(np.abs(v.values - p.values)) > 1e-3  # each member moved with its own normal
    # evaluate hands the same normals to the baselines that start from the initial anomaly
    from sciffusion.domains.climate.evaluate import baseline_forecasts

    with_nu = baseline_forecasts(run, OSTIA, init_period="2009-04/2009-09", leads=2, members=3,
                                 which=("damped_persistence", "persistence"), normal_uncertainty=0.5)
    without = baseline_forecasts(run, OSTIA, init_period="2009-04/2009-09", leads=2, members=3,
                                 which=("damped_persistence", "persistence"))
    xr.testing.assert_identical(with_nu["persistence"].surface_temperature, without["persistence"].surface_temperature)
    # Damped persistence member m starts from the anomaly from member m's normal and ends on that normal:
    # with - without = s_m(valid) - phi^lead s_m(init), s_m the normal shift the model's member m uses.
    from sciffusion.domains.climate.forecast import initial_states, normal_shifts

    st = initial_states(sf_load(run), OSTIA, "2009-04/2009-09")
    shift = normal_shifts(sf_load(run), st, 3, 0.5, seed=0)
    change = (with_nu["damped_persistence"].surface_temperature.values
              - without["damped_persistence"].surface_temperature.values)            # (I, L, M, H, W)
    for lead in (1, 2):
        expected = shift(*st.valid_time(lead)) - st.prep.ar1.mean(shift(*st.past_time(0)), lead)  # (I, M, C, H, W)
        sea = np.isfinite(change[:, lead - 1])  # land is NaN in both forecasts
        assert sea.mean() > 0.5
        np.testing.assert_allclose(change[:, lead - 1][sea], expected[:, :, 0][sea], rtol=0, atol=2e-4)  # float32
    assert np.abs(expected[:, 0, 0] - expected[:, 1, 0])[sea[:, 0]].max() > 1e-3  # each member has its own normal
    with pytest.raises(ValueError, match="one or the other"):
        forecast(run, OSTIA, init_period="2009-04/2009-09", leads=1, members=2, normal_years=1,
                 normal_uncertainty=0.5)


def test_evaluate_nfe_reports_each_setting_and_stores_the_cheapest_converged(ostia_run, tmp_path, capsys):
    import shutil

    from sciffusion.domains.climate.conventions import to_internal
    from sciffusion.domains.climate.evaluate import score_table

    run = tmp_path / "run"
    shutil.copytree(ostia_run[0], run)
    out = tmp_path / "nfe.json"
    assert main(["evaluate", "forecast", "--run", str(run), "--data", str(OSTIA), "--nfe", "2", "5",
                 "--samplers", "dpmpp_2m", "dpmpp_3m", "--init-period", "2009-04/2009-06", "--leads", "2",
                 "--members", "3", "--out", str(out), "--store"]) == 0
    report = json.loads(out.read_text())["nfe"]
    rows = report["rows"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("dpmpp_2m", 2), ("dpmpp_2m", 5), ("dpmpp_3m", 2),
                                                         ("dpmpp_3m", 5)]
    # the score of a row is the mean CRPS of the forecast that setting makes, computed here by the public route
    fc = to_internal(forecast(ostia_run[0], OSTIA, init_period="2009-04/2009-06", leads=2, members=3,
                              sampling={"sampler": "dpmpp_3m", "steps": 2}))
    entry = score_table({"sciffusion": fc}, truth_for(fc, OSTIA))["surface_temperature"]["sciffusion"]
    assert rows[2]["score"] == pytest.approx(np.mean([entry["1"]["crps"], entry["2"]["crps"]]), rel=1e-9)
    conv = report["converged"]
    assert conv["nfe"] == 5 and conv["sampler"] == "dpmpp_2m"
    ok = [r for r in rows if r["score"] <= conv["score"] * 1.01]
    assert report["chosen"]["nfe"] == min(r["nfe"] for r in ok)
    assert "cheapest within 1%" in capsys.readouterr().out
    from sciffusion.training import load_trained

    stored = load_trained(run).sampling_spec()
    assert (stored.sampler, stored.steps) == (report["chosen"]["sampler"], report["chosen"]["steps"])
    assert main(["evaluate", "forecast", "--data", str(OSTIA), "--nfe", "2"]) == 2  # no run to sample with
    assert main(["evaluate", "forecast", "--data", str(OSTIA)]) == 2  # neither a file nor --nfe
    assert "--forecast FILE" in capsys.readouterr().err


def test_python_api_trains_from_an_in_memory_dataset_as_the_cli_does_from_its_file(ostia_run, tmp_path):
    """``sf.climate.train_forecast(ds, ...)`` with the flags as keywords is the CLI's training: the same data in
    memory gives the same weights and so the same forecast as ``sciffusion train forecast --data FILE``."""
    import torch

    import sciffusion as sf
    from sciffusion.training.config import parse_assignment

    run_cli, _ = ostia_run
    settings = dict(parse_assignment(TINY[i + 1]) for i in range(len(TINY)) if TINY[i] == "--set")
    with xr.open_dataset(OSTIA) as f:
        ds = f.load()
    run = sf.climate.train_forecast(ds, tmp_path / "run", train_period="2006-04/2009-03", max_steps=4,
                                    accelerator="cpu", settings=settings)
    assert isinstance(run, sf.TrainedRun) and run.config["trainer"]["max_steps"] == 4
    assert run.metadata["source"].startswith("<in-memory xarray.Dataset {")  # a label, not the repr of the values
    cli = sf.load_trained(run_cli)
    for (name, a), (_, b) in zip(sorted(run.module.state_dict().items()), sorted(cli.module.state_dict().items())):
        assert torch.equal(a, b), name
    kw = dict(init_period="2009-04/2009-06", leads=2, members=2, seed=0)
    xr.testing.assert_identical(forecast(run, ds, **kw).drop_attrs(), forecast(cli, OSTIA, **kw).drop_attrs())


@pytest.mark.parametrize("options, message", [
    ({"train_perid": "2006/2008"}, "unknown keyword 'train_perid'; did you mean 'train_period'?"),
    ({"history": "two"}, "data.history='two' is not a"),
])
def test_python_api_names_a_bad_keyword(tmp_path, options, message):
    import sciffusion as sf
    from sciffusion.training.schema import ConfigError

    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("[", r"\[")):
        sf.climate.train_forecast(OSTIA, tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cf, expected", [
    ("K", "K"), ("degC", "degC"), ("degrees_Celsius", "degC"), ("m s-1", "m * s**-1"),
    ("kg m-2 s-1", "kg * m**-2 * s**-1"), ("m.s^-1", "m * s**-1"), ("%", "percent"), ("1", ""),
])
def test_cf_units_read_as_pint_expressions(cf, expected):
    from sciffusion.domains.climate.units import pint_units

    assert pint_units(cf) == expected


def test_unit_conversions_are_the_physical_ones():
    from sciffusion.domains.climate.units import affine

    assert affine("degC", "K") == pytest.approx((1.0, 273.15))
    assert affine("K", "degC") == pytest.approx((1.0, -273.15))
    assert affine("hPa", "Pa") == pytest.approx((100.0, 0.0))
    assert affine("km h-1", "m s-1") == pytest.approx((1 / 3.6, 0.0))
    assert affine("kg m-2 s-1", "kg m-2 d-1") == pytest.approx((86400.0, 0.0))
    with pytest.raises(ValueError, match="'m' cannot be converted to 'K'"):
        affine("m", "K")


def test_forecast_and_truth_in_other_units_are_converted_or_refused_by_name(ostia_run, tmp_path):
    """A run trained in K forecasts the same from data in degC; the truth in degC scores the same; data in metres
    are refused naming the variable and both units."""
    run, _ = ostia_run
    with xr.open_dataset(OSTIA) as f:
        kelvin = f.load()
    celsius = kelvin.copy()
    celsius["surface_temperature"] = (kelvin.surface_temperature - 273.15).assign_attrs(
        {**kelvin.surface_temperature.attrs, "units": "degC"})
    kw = dict(init_period="2009-04/2009-06", leads=2, members=2, seed=0)
    a, b = forecast(run, kelvin, **kw), forecast(run, celsius, **kw)
    assert b.surface_temperature.attrs["units"] == "K"
    np.testing.assert_allclose(b.surface_temperature.values, a.surface_temperature.values, rtol=0, atol=1e-4)
    t_k, t_c = truth_for(a, kelvin), truth_for(a, celsius)
    np.testing.assert_allclose(t_c.surface_temperature.values, t_k.surface_temperature.values, atol=1e-9)
    metres = kelvin.copy()
    metres["surface_temperature"] = kelvin.surface_temperature.assign_attrs(units="m")
    with pytest.raises(ValueError, match="'surface_temperature' of the data is in 'm' but the run's is in 'K'"):
        forecast(run, metres, **kw)


def test_the_forecast_file_is_the_forecast_object_written_whole(ostia_run):
    """Build the expected object in memory (the Python API, same arguments as the CLI call) and compare the file
    to it whole: values, coordinates, dims and every attribute, variable and global."""
    from sciffusion.domains.climate.conventions import to_layout
    from sciffusion.tasks.outputs import open_output

    run, path = ostia_run
    expected = to_layout(forecast(run, OSTIA, init_period="2009-04/2009-09", leads=2, members=3, seed=0),
                         "sciffusion")
    actual = open_output(path, "forecast")
    for ds in (expected, actual):  # the one attribute that may differ: when each was made
        ds.attrs.pop("history", None)
    xr.testing.assert_identical(actual.load(), expected)


def forced_archive(months: int = 96, seed: int = 0) -> xr.Dataset:
    """Monthly ``tas`` driven by a given forcing ``sst`` at the same step: tas_t = 0.5 tas_{t-1} + 2 sst_t + noise."""
    rng = np.random.default_rng(seed)
    sst = rng.normal(size=(months, 4, 8))
    tas = np.zeros_like(sst)
    for t in range(1, months):
        tas[t] = 0.5 * tas[t - 1] + 2 * sst[t] + 0.3 * rng.normal(size=(4, 8))
    coords = {"time": pd.date_range("2000-01-01", periods=months, freq="MS"), "lat": np.linspace(-30, 30, 4),
              "lon": np.arange(0, 360, 45.0)}
    return xr.Dataset({"tas": (("time", "lat", "lon"), tas + 280, {"units": "K"}),
                       "sst": (("time", "lat", "lon"), sst + 290, {"units": "K"})}, coords=coords)


def test_forcings_condition_each_step_on_the_given_field_at_its_valid_time(tmp_path):
    """``--forcings sst``: sst is not forecast, it conditions each step at the step's valid time. The forecast
    moves when the forcing at a valid time changes and not when it changes after the last valid time; data that do
    not reach a valid time's forcing are a one-line error."""
    import sciffusion as sf

    ds = forced_archive()
    path = tmp_path / "forced.nc"
    ds.to_netcdf(path)
    run_dir = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--train-period", "2000-01/2005-12", "--forcings", "sst",
                 "--out", str(run_dir), "--max-steps", "3", "--climatology", "none", *TINY]) == 0
    run = sf.load_trained(run_dir)
    assert run.metadata["variables"] == ["tas"] and run.metadata["forcings"] == ["sst"]
    assert run.config["model"]["net"]["cond_channels"] == 2 * 1 + 1  # two past states of tas, one forcing
    kw = dict(init_period="2006-06/2006-08", leads=2, members=2, seed=0)
    base = forecast(run, ds, **kw)
    assert list(base.data_vars) == ["tas"]
    later = ds.copy(deep=True)
    later["sst"][{"time": slice(82, None)}] = later["sst"][{"time": slice(82, None)}] + 5  # after 2006-10 (last valid)
    xr.testing.assert_identical(forecast(run, later, **kw).drop_attrs(), base.drop_attrs())
    at_valid = ds.copy(deep=True)
    at_valid["sst"][{"time": 78}] = at_valid["sst"][{"time": 78}] + 5  # 2006-07
    moved = forecast(run, at_valid, **kw)
    diff = np.abs(moved.tas.values - base.tas.values)  # (init June/July/August, lead, member, lat, lon)
    assert diff[0, 0].max() > 0 and diff[0, 1].max() > 0  # from June: July is lead 1 (and lead 2 follows it)
    assert diff[1:].max() == 0  # from July or August no valid time is July: the forcing there is not read
    with pytest.raises(ValueError, match=r"forcing\(s\) \['sst'\] are needed 1 step\(s\) after"):
        forecast(run, ds, init_period="2007-11/2007-12", leads=2, members=1)
    with pytest.raises(ValueError, match=r"forcing\(s\) \['sst'\] not in the data"):
        sf.climate.train_forecast(ds[["tas"]], tmp_path / "r2", forcings=["sst"], max_steps=1)


@pytest.mark.parametrize("freq, n", [("6h", 4), ("3h", 8), ("D", 1)])
def test_sub_daily_climatology_has_a_mean_per_time_of_day(freq, n):
    """The diurnal cycle: 6-hourly data get one group per time of day beside the annual harmonics, so a cycle of
    amplitude 5 K at four fixed hours is removed (daily data keep one group); l steps later is group (g + l) mod n."""
    from sciffusion.domains.climate.stats import cycle_keys, steps_per_day

    t = xr.date_range("2000-01-01", periods=3 * 365 * {"6h": 4, "3h": 8, "D": 1}[freq], freq=freq, use_cftime=True
                      ).values
    assert steps_per_day(t) == n
    keys = cycle_keys(t, "doy")
    assert keys.max() == n - 1 and ((keys[1:] - keys[:-1]) % n == 1 % n).all()  # a step advances one time of day
    f = 2 * np.pi * np.mod(years(t), 1)
    hours = np.array([d.hour for d in t])
    diurnal = 5 * np.cos(2 * np.pi * hours / 24)
    x = (3 * np.cos(f) + diurnal)[:, None, None, None] + np.zeros((1, 1, 2, 2))
    clim = Climatology.fit(x, t, "doy")
    assert clim.groups == n
    assert np.abs(clim.at(keys, years(t)) - x).max() < 0.05
    if n > 1:  # one mean for every time of day (the old climatology) misses the whole diurnal cycle
        one = Climatology.fit_stream(lambda lo, hi: x[lo:hi], t, "doy", 0, chunk=len(x))
        one.mean = one.mean.mean(0, keepdims=True)
        assert np.abs(one.at(keys, years(t)) - x).max() > 4


def test_a_six_hourly_forecast_starts_from_the_right_time_of_day(tmp_path):
    """Through the CLI: 6-hourly data with a strong diurnal cycle; the forecast's mean at each lead follows the
    cycle of its valid time of day (the climatology of the valid time, not of the initial time)."""
    t = xr.date_range("2001-01-01", periods=3 * 365 * 4, freq="6h", use_cftime=True).values
    hours = np.array([d.hour for d in t])
    rng = np.random.default_rng(0)
    data = 280 + 8 * np.cos(2 * np.pi * hours / 24)[:, None, None] + 0.2 * rng.normal(size=(len(t), 4, 8))
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), data, {"units": "K"})},
                    coords={"time": t, "lat": np.linspace(-30, 30, 4), "lon": np.arange(0, 360, 45.0)})
    path = tmp_path / "six.nc"
    ds.to_netcdf(path)
    run = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--train-period", "2001-01-01/2002-12-31", "--out",
                 str(run), "--max-steps", "2", "--climatology", "doy", *TINY]) == 0
    fc = forecast(run, ds, init_period="2003-06-01T00/2003-06-01T18", leads=3, members=2)
    truth = truth_for(fc, ds)
    err = np.abs(fc.tas.mean("member") - truth.tas)
    assert float(err.max()) < 3 < 8  # an initial-time climatology would be up to 16 K off at a half-day lead


@pytest.mark.parametrize("out_name, zarr_installed", [("fc.nc", True), ("fc.zarr", True), ("fc.nc", False)])
def test_a_forecast_written_in_batches_of_initial_times_is_the_one_shot_forecast(ostia_run, tmp_path, monkeypatch,
                                                                               out_name, zarr_installed):
    """``--batch-inits 2``: six initial times forecast two at a time and appended to the output (through a zarr
    store; joined in memory without zarr) give exactly the forecast made in one piece."""
    import importlib.util

    from sciffusion.domains.climate.conventions import to_layout

    run, _ = ostia_run
    if not zarr_installed:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    out = tmp_path / out_name
    assert main(["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-09",
                 "--leads", "2", "--members", "3", "--batch-inits", "2", "--out", str(out)]) == 0
    expected = to_layout(forecast(run, OSTIA, init_period="2009-04/2009-09", leads=2, members=3, seed=0),
                         "sciffusion")
    with xr.open_dataset(out) as f:
        actual = f.load()
    for ds in (expected, actual):
        ds.attrs.pop("history", None)
    assert_same_forecast(actual, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]  # the temporary store is gone


# A member's values do not depend on the batch at inference in principle (its seed comes from its initial time), but
# oneDNN picks another kernel for a 1x1 convolution of fewer than 16 samples with one thread (docs/benchmarks.md,
# "Batch-invariant inference"): with OMP_NUM_THREADS=1 the last float32 bits differ between batch sizes. Measured
# here: at most one float32 unit in the last place of a ~300 K value (3.05e-5 K) after two leads.
BATCH_ATOL = 2e-4  # K, on SST forecasts of ~300 K


def assert_same_forecast(actual: xr.Dataset, expected: xr.Dataset, atol: float = BATCH_ATOL) -> None:
    """Coordinates, attributes, dims and dtypes identical; data values equal to ``atol``."""
    names = list(expected.data_vars)
    assert list(actual.data_vars) == names
    xr.testing.assert_identical(actual.drop_vars(names), expected.drop_vars(names))
    for v in names:
        assert actual[v].dims == expected[v].dims and actual[v].dtype == expected[v].dtype
        assert actual[v].attrs == expected[v].attrs
        np.testing.assert_allclose(actual[v].values, expected[v].values, rtol=0, atol=atol, equal_nan=True)


def test_a_forecast_reads_only_the_time_steps_its_initial_times_need(ostia_run):
    """An archive opened lazily (dask) whose early time steps cannot be read: forecasting from its last months
    reads only the states those initial times need, never the rest of the record."""
    dask = pytest.importorskip("dask")
    import dask.array as da

    run, _ = ostia_run
    with xr.open_dataset(OSTIA) as f:
        src = f.load()
    values = src.surface_temperature.values
    t0 = int(np.flatnonzero(src.time.dt.strftime("%Y-%m").values == "2009-08")[0])
    allowed = t0 - 1  # history 2: the state before the first initial time

    def step(i: int) -> np.ndarray:
        if i < allowed:
            raise AssertionError(f"time step {i} was read; the forecast needs {allowed} onwards")
        return values[i]

    lazy = da.stack([da.from_delayed(dask.delayed(step)(i), shape=values.shape[1:], dtype=values.dtype)
                     for i in range(len(values))])
    ds = src.copy()
    ds["surface_temperature"] = (src.surface_temperature.dims, lazy, src.surface_temperature.attrs)
    fc = forecast(run, ds, init_period="2009-08/2009-09", leads=2, members=2, seed=0)
    expected = forecast(run, src, init_period="2009-08/2009-09", leads=2, members=2, seed=0)
    xr.testing.assert_identical(fc.drop_attrs(), expected.drop_attrs())


def regional(kind: str, months: int = 48, seed: int = 0) -> xr.Dataset:
    """A small monthly regional archive on a rotated-pole grid (rlat/rlon with 2-D true lat/lon, as CORDEX writes
    it) or a projected one (x/y in metres, as a Lambert-conformal regional model writes it)."""
    rng = np.random.default_rng(seed)
    H, W = 6, 8
    t = pd.date_range("2000-01-01", periods=months, freq="MS")
    data = 280 + 3 * np.cos(2 * np.pi * np.arange(months) / 12)[:, None, None] + rng.normal(size=(months, H, W))
    if kind == "rotated":
        rlat, rlon = np.linspace(-10, 10, H), np.linspace(-12, 12, W)
        lat2 = 50 + 2.5 * rlat[:, None] + 0.2 * rlon[None]   # true latitudes 25-75: where cos varies a lot
        lon2 = 10 + 1.5 * rlon[None] + 0 * rlat[:, None]
        coords = {"time": t, "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "units": "degrees"}),
                  "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "units": "degrees"}),
                  "lat": (("rlat", "rlon"), lat2, {"standard_name": "latitude", "units": "degrees_north"}),
                  "lon": (("rlat", "rlon"), lon2, {"standard_name": "longitude", "units": "degrees_east"})}
        dims = ("time", "rlat", "rlon")
    else:
        coords = {"time": t,
                  "y": ("y", np.arange(H) * 25e3, {"standard_name": "projection_y_coordinate", "units": "m"}),
                  "x": ("x", 500e3 + np.arange(W) * 25e3, {"standard_name": "projection_x_coordinate",
                                                         "units": "m"})}
        dims = ("time", "y", "x")
    return xr.Dataset({"tas": (dims, data, {"units": "K"})}, coords=coords)


def test_rotated_pole_grids_are_weighted_by_the_true_latitude():
    ds = regional("rotated")
    _, grid = open_fields(ds)
    assert (grid.lat, grid.lon) == ("rlat", "rlon") and not grid.periodic
    expected = np.cos(np.deg2rad(ds.lat.values))
    np.testing.assert_allclose(grid.cell_weights(), expected / expected.mean(), rtol=1e-12)
    assert grid.weighting == "cos(true latitude 'lat')"
    rotated = np.cos(np.deg2rad(ds.rlat.values))  # what the rotated latitude alone would give: nearly flat
    assert np.ptp(rotated / rotated.mean()) < 0.1 < np.ptp(grid.cell_weights())
    field = ds.tas.isel(time=0)
    w = np.cos(np.deg2rad(ds.lat))
    np.testing.assert_allclose(float(weighted_mean(field)), float((field * w).sum() / w.sum()), rtol=1e-12)


def test_projected_grids_keep_their_coordinates_and_weigh_cells_equally():
    ds = regional("projected")
    out, grid = open_fields(ds)
    np.testing.assert_array_equal(out.x.values, ds.x.values)  # metres are not wrapped into 0-360
    assert (grid.lat, grid.lon) == ("y", "x") and not grid.periodic and grid.weighting.startswith("uniform")
    np.testing.assert_array_equal(grid.cell_weights(), np.ones(grid.shape))
    field = ds.tas.isel(time=0)
    np.testing.assert_allclose(float(weighted_mean(field)), float(field.mean()), rtol=1e-12)


@pytest.mark.parametrize("kind", ["rotated", "projected"])
def test_regional_grids_train_forecast_and_evaluate_through_the_cli(kind, tmp_path, capsys):
    ds = regional(kind)
    path = tmp_path / f"{kind}.nc"
    ds.to_netcdf(path)
    run, fc, scores = tmp_path / "run", tmp_path / "fc.nc", tmp_path / "scores.json"
    assert main(["train", "forecast", "--data", str(path), "--train-period", "2000-01/2002-12", "--out", str(run),
                 "--max-steps", "2", *TINY]) == 0
    assert main(["forecast", "--run", str(run), "--data", str(path), "--init-period", "2003-01/2003-06",
                 "--leads", "2", "--members", "2", "--out", str(fc)]) == 0
    out = xr.open_dataset(fc)
    lat, lon = ("rlat", "rlon") if kind == "rotated" else ("y", "x")
    assert out.tas.dims == ("init_time", "lead_time", "member", lat, lon)
    xr.testing.assert_identical(out[lon].reset_coords(drop=True), ds[lon].reset_coords(drop=True))
    assert out.attrs["sciffusion_area_weights"] == ("cos(true latitude 'lat')" if kind == "rotated"
                                                    else "uniform (projected grid without a 2-D latitude)")
    if kind == "rotated":  # the true latitude goes out with the forecast, so its scores weigh cells by it
        np.testing.assert_allclose(out["lat"].values, ds["lat"].values)
    assert main(["evaluate", "forecast", "--forecast", str(fc), "--data", str(path), "--run", str(run),
                 "--out", str(scores)]) == 0
    table = json.loads(scores.read_text())["tas"]
    assert all(np.isfinite(table[m][lead]["crps"]) for m in ("sciffusion", "lim") for lead in ("1", "2"))


def test_a_forcing_missing_for_some_steps_is_a_one_line_error(tmp_path, capsys):
    ds = forced_archive()
    ds["sst"][{"time": 30}] = np.nan  # a step of the training period without its forcing
    path = tmp_path / "gap.nc"
    ds.to_netcdf(path)
    assert main(["train", "forecast", "--data", str(path), "--train-period", "2000-01/2005-12", "--forcings", "sst",
                 "--out", str(tmp_path / "run"), "--max-steps", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert "forcing 'sst' is missing (all NaN) at 2002-07-01" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    forced_archive().to_netcdf(tmp_path / "good.nc")
    assert main(["train", "forecast", "--data", str(tmp_path / "good.nc"), "--train-period", "2000-01/2005-12",
                 "--forcings", "sst", "--out", str(tmp_path / "r2"), "--max-steps", "1", *TINY]) == 0
    later = forced_archive()
    later["sst"][{"time": 80}] = np.nan  # a valid time of the forecast below (2006-09)
    with pytest.raises(ValueError, match="forcing 'sst' is missing \\(all NaN\\) at 2006-09-01"):
        forecast(tmp_path / "r2", later, init_period="2006-07/2006-08", leads=2, members=1)


def test_two_processes_under_torchrun_write_the_single_process_forecast(ostia_run, tmp_path):
    """``torchrun --nproc-per-node 2 -m sciffusion.cli forecast ... --batch-inits 2``: the two processes (gloo)
    make alternate batches of initial times and process 0 joins them; the file is the one-process forecast."""
    import subprocess
    import sys

    pytest.importorskip("zarr")
    run, _ = ostia_run
    verb = ["forecast", "--run", str(run), "--data", str(OSTIA), "--init-period", "2009-04/2009-09", "--leads", "2",
            "--members", "3", "--batch-inits", "2", "--threads", "1"]  # one thread each: the same arithmetic
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
              "sciffusion.cli", "--"]
    for cmd, name in ((launch + verb, "two.nc"), ([sys.executable, "-m", "sciffusion.cli", *verb], "one.nc")):
        done = subprocess.run([*cmd, "--out", str(tmp_path / name)], capture_output=True, text=True, timeout=300,
                              env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    with xr.open_dataset(tmp_path / "two.nc") as a, xr.open_dataset(tmp_path / "one.nc") as b:
        two, one = a.load(), b.load()
    for ds in (two, one):
        ds.attrs.pop("history", None)
    xr.testing.assert_identical(two, one)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.nc", "two.nc"]  # the parts are gone


def test_each_process_makes_every_world_size_th_batch():
    from sciffusion.tasks.shards import Shard, current_shard

    assert [i for i, _ in Shard(1, 3).mine("abcdefg")] == [1, 4]
    assert [x for _, x in Shard(0, 1).mine("abc")] == ["a", "b", "c"]
    assert current_shard() == Shard(0, 1)  # no launcher here
