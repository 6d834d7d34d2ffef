"""Climate archives as users download them: levels, several files, zarr stores, URLs, and their bad inputs."""

import json
import os
import pathlib
import warnings

import numpy as np
import pytest
import xarray as xr
from layouts import by_year, cmip6, era5, split_by_time, wb2

from sciffusion.cli import main
from sciffusion.domains.climate import open_fields
from sciffusion.domains.climate.fields import output_attrs
from sciffusion.domains.climate.levels import LEVEL_ATTR, split_levels, stack_levels

TINY = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2"]


def _train_forecast(tmp_path, data, extra=(), init="2000-03-01/2000-03-04", leads=2):
    run, fc = tmp_path / "run", tmp_path / "fc.nc"
    data = list(data) if isinstance(data, (list, tuple)) else [data]
    assert main(["train", "forecast", "--data", *data, "--out", str(run), *extra, *TINY]) == 0
    assert main(["forecast", "--run", str(run), "--data", *data, "--init-period", init, "--leads", str(leads),
                 "--members", "2", "--out", str(fc)]) == 0
    return run, xr.open_dataset(fc)


# --- levels as channels ------------------------------------------------------------------------------------------
def test_split_then_stack_gives_back_the_dataset():
    ds, _ = era5(periods=5)
    ds = ds.drop_vars(["number", "expver"])
    flat = split_levels(ds, keep={"valid_time", "latitude", "longitude"})
    assert list(flat.data_vars) == ["t_1000", "t_850", "t_500", "t2m"]
    assert all(set(flat[v].dims) == {"valid_time", "latitude", "longitude"} for v in flat.data_vars)
    np.testing.assert_array_equal(flat["t_850"].values, ds["t"].sel(pressure_level=850).values)
    xr.testing.assert_identical(stack_levels(flat), ds)


def test_levels_select_by_value_and_hpa_finds_pascal():
    ds, _ = cmip6(months=3)
    flat = split_levels(ds[["ta"]], keep={"time", "lat", "lon"}, levels=[500])
    assert list(flat.data_vars) == ["ta_50000"]
    with pytest.raises(ValueError, match=r"none of the levels 700 is in 'ta''s 'plev' \(it has 85000, 50000, 25000 Pa"):
        split_levels(ds[["ta"]], keep={"time", "lat", "lon"}, levels=[700])


def test_output_attrs_drop_pointers_and_gone_cell_methods():
    a = {"units": "K", "cell_methods": "time: mean (interval: 1 day) area: mean", "cell_measures": "area: areacella",
         "bounds": "lat_bnds", "grid_mapping": "crs"}
    assert output_attrs(a, ["init_time", "lat", "lon"]) == {"units": "K", "cell_methods": "area: mean"}
    assert output_attrs(a, ["time", "lat", "lon"]) == {"units": "K",
                                                        "cell_methods": "time: mean (interval: 1 day) area: mean"}


# --- the layouts, through the CLI --------------------------------------------------------------------------------
def test_era5_files_train_forecast_and_evaluate(tmp_path, capsys):
    ds, enc = era5(periods=120)
    split_by_time(ds, enc, 3, tmp_path / "era5", "valid_time")  # one file per stretch, as users download
    glob = str(tmp_path / "era5_*.nc")
    run, fc = _train_forecast(tmp_path, glob)
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["variables"] == ["t_1000", "t_850", "t_500", "t2m"]  # mixed 3-D and 2-D variables, one channel each
    assert fc["t"].dims == ("init_time", "lead_time", "member", "pressure_level", "latitude", "longitude")
    assert fc["t2m"].dims == ("init_time", "lead_time", "member", "latitude", "longitude")
    src = xr.open_dataset(tmp_path / "era5_0.nc")
    xr.testing.assert_identical(fc["pressure_level"], src["pressure_level"].reset_coords(drop=True))
    assert fc["t"].attrs == {k: v for k, v in src["t"].attrs.items()}  # the variable's own attributes, no more
    assert fc["t"].encoding["dtype"] == np.float32  # not the input's int16 packing, which would clip forecasts
    assert "number" not in fc.coords and "expver" not in fc.coords
    # physical units on every level: the forecast of 500 hPa is colder than of 1000 hPa, as the data
    assert float(fc["t"].sel(pressure_level=500).mean()) < float(fc["t"].sel(pressure_level=1000).mean()) - 10
    assert fc.attrs["Conventions"] == "CF-1.7" and "cfgrib" in fc.attrs["history"]
    capsys.readouterr()
    assert main(["evaluate", "forecast", "--run", str(run), "--data", glob, "--forecast", str(tmp_path / "fc.nc"),
                 "--baselines", "persistence", "--out", str(tmp_path / "s.json")]) == 0
    table = json.loads((tmp_path / "s.json").read_text())
    assert set(table) == {"t_1000", "t_850", "t_500", "t2m"}  # scored per (variable, level)
    assert table["t_850"]["sciffusion"]["1"]["crps"] > 0


def test_wb2_zarr_with_levels_and_variables(tmp_path):
    pytest.importorskip("zarr")
    ds, _ = wb2(periods=100)
    store = tmp_path / "wb2.zarr"
    ds.to_zarr(store)
    run, fc = _train_forecast(tmp_path, str(store), ["--variables", "temperature", "2m_temperature", "--levels", "500",
                                                     "850"])
    assert json.loads((run / "metadata.json").read_text())["variables"] == [
        "temperature_500", "temperature_850", "2m_temperature"]
    assert "geopotential" not in fc
    np.testing.assert_array_equal(fc["level"].values, [500, 850])
    assert fc["level"].dtype == np.int64


def test_cmip6_noleap_pascal_levels_and_bounds(tmp_path):
    ds, enc = cmip6(months=72)
    path = tmp_path / "ta_Amon.nc"
    ds.to_netcdf(path, encoding=enc)
    run, fc = _train_forecast(tmp_path, str(path), ["--levels", "500", "250"], init="2004-01/2004-06")
    assert json.loads((run / "metadata.json").read_text())["variables"] == ["ta_50000", "ta_25000"]
    np.testing.assert_array_equal(fc["plev"].values, [50000.0, 25000.0])
    assert fc["plev"].attrs == ds["plev"].attrs
    assert "bounds" not in fc["lat"].attrs and "bounds" not in fc["lon"].attrs  # lat_bnds is not written
    assert "cell_methods" not in fc["ta"].attrs and "cell_measures" not in fc["ta"].attrs
    assert type(fc["init_time"].values[0]).__name__ == "DatetimeNoLeap"


# --- several files and URLs --------------------------------------------------------------------------------------
def test_several_files_read_as_the_whole_file(tmp_path):
    ds, enc = era5(periods=30)
    whole = tmp_path / "whole.nc"
    ds.to_netcdf(whole, encoding=enc)
    paths = split_by_time(ds, enc, 3, tmp_path / "part", "valid_time")
    a, ga = open_fields(str(whole))
    b, gb = open_fields(list(reversed(paths)))  # any order: joined in time order
    assert ga == gb
    xr.testing.assert_identical(a.load().reset_coords(drop=True), b.load().reset_coords(drop=True))


def test_fsspec_url_to_a_zarr_store():
    pytest.importorskip("zarr")
    fsspec = pytest.importorskip("fsspec")
    ds, _ = wb2(periods=6)
    ds.to_zarr("memory://wb2-test.zarr", mode="w")
    try:
        flat, g = open_fields("memory://wb2-test.zarr", ["temperature_500"])
        np.testing.assert_array_equal(flat["temperature_500"].values, ds["temperature"].sel(level=500).values)
    finally:
        fsspec.filesystem("memory").rm("/wb2-test.zarr", recursive=True)


def test_files_packed_differently_are_each_unpacked_with_their_own_scale(tmp_path):
    """The data store packs each yearly file with its own int16 scale_factor/add_offset: not a bad input. Each file
    is unpacked with its own, so the joined record equals the unpacked fields to each file's packing step."""
    ds, enc = era5(periods=20)
    other = {v: {**e, "scale_factor": 3 * e["scale_factor"], "add_offset": e["add_offset"] + 7.0}
             for v, e in enc.items() if "scale_factor" in e}
    ds.isel(valid_time=slice(0, 10)).to_netcdf(tmp_path / "a.nc", encoding=enc)
    ds.isel(valid_time=slice(10, 20)).to_netcdf(tmp_path / "b.nc", encoding={**enc, **other})
    joined, _ = open_fields([str(tmp_path / "a.nc"), str(tmp_path / "b.nc")])
    expected = split_levels(ds)
    assert list(joined.data_vars) == list(expected.data_vars) == ["t_1000", "t_850", "t_500", "t2m"]
    for v in expected.data_vars:
        packed = "t2m" if v == "t2m" else "t"
        step = np.where(np.arange(20) < 10, enc[packed]["scale_factor"], other[packed]["scale_factor"])[:, None, None]
        err = abs(joined[v] - expected[v]).transpose(*expected[v].dims).values  # aligned on the coordinates
        assert err.shape == expected[v].shape
        assert (err <= 0.5 * step + 1e-4).all(), v  # half a packing step (and float32 rounding) at most
        assert (err[10:] > 0.5 * enc[packed]["scale_factor"] + 1e-4).any()  # the second file's coarser step shows


# --- bad inputs: one line, exit 2, nothing written -----------------------------------------------------------------
def _overlap(tmp_path):
    ds, enc = era5(periods=20)
    ds.isel(valid_time=slice(0, 12)).to_netcdf(tmp_path / "a.nc", encoding=enc)
    ds.isel(valid_time=slice(10, 20)).to_netcdf(tmp_path / "b.nc", encoding=enc)
    return [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]


def _other_grid(tmp_path):
    ds, enc = era5(periods=20)
    ds.isel(valid_time=slice(0, 10)).to_netcdf(tmp_path / "a.nc", encoding=enc)
    ds.isel(valid_time=slice(10, 20), longitude=slice(0, 8)).to_netcdf(tmp_path / "b.nc", encoding=enc)
    return [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]


def _other_vars(tmp_path):
    ds, enc = era5(periods=20)
    ds.isel(valid_time=slice(0, 10)).to_netcdf(tmp_path / "a.nc", encoding=enc)
    ds.isel(valid_time=slice(10, 20)).drop_vars("t2m").to_netcdf(tmp_path / "b.nc", encoding={"t": enc["t"]})
    return [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]


def _one(tmp_path):
    ds, enc = era5(periods=20)
    ds.to_netcdf(tmp_path / "a.nc", encoding=enc)
    return [str(tmp_path / "a.nc")]


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: [str(p / "nothing_*.nc")], [], "no file matches"),
    (_overlap, [], "overlap in time"),
    (_other_grid, [], "other 'longitude' coordinates"),
    (_other_vars, [], "holds variables ['t']"),
    (_one, ["--levels", "700"], "none of the levels 700 is in 't'"),
    (_one, ["--variables", "t_700"], "variable(s) ['t_700'] not in the data"),
    (lambda p: ["nosuchproto://bucket/x.zarr"], [], "unknown URL protocol 'nosuchproto'"),
])
def test_bad_archives_are_one_line_errors(make, extra, message, tmp_path, capsys):
    data = make(tmp_path)
    capsys.readouterr()
    assert main(["train", "forecast", "--data", *data, "--out", str(tmp_path / "R"), *extra, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "R").exists()


def test_url_without_its_backend_names_what_to_install(capsys, tmp_path):
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed: the missing-backend message cannot be shown")
    except ImportError:
        pass
    assert main(["train", "forecast", "--data", "gs://bucket/era5.zarr", "--out", str(tmp_path / "R"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gs:// URLs needs a backend" in err and "gcsfs" in err, err


def test_level_attr_is_json_with_the_origin():
    ds, _ = era5(periods=3)
    flat = split_levels(ds, keep={"valid_time", "latitude", "longitude"}, levels=[850])
    origin = json.loads(flat["t_850"].attrs[LEVEL_ATTR])
    assert origin["variable"] == "t" and origin["dim"] == "pressure_level" and origin["value"] == 850.0
    assert origin["coord_attrs"]["units"] == "hPa"


# --- outputs the ecosystem reads -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def daily_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("daily")
    ds, enc = era5(periods=120, levels=(850, 500))
    ds.to_netcdf(d / "era5.nc", encoding=enc)
    assert main(["train", "forecast", "--data", str(d / "era5.nc"), "--out", str(d / "run"), *TINY]) == 0
    return d


def _forecast(d, layout, name):
    out = d / name
    assert main(["forecast", "--run", str(d / "run"), "--data", str(d / "era5.nc"), "--init-period",
                 "2000-03-01/2000-03-05", "--leads", "3", "--members", "2", "--layout", layout, "--out", str(out)]) == 0
    return xr.open_dataset(out)


def test_daily_forecast_has_timedelta_leads_valid_times_and_cf_names(daily_run):
    from sciffusion.domains.climate.conventions import to_internal

    fc = _forecast(daily_run, "sciffusion", "fc.nc")
    np.testing.assert_array_equal(fc["lead_time"].values, np.array([1, 2, 3], "timedelta64[D]").astype("m8[ns]"))
    np.testing.assert_array_equal(fc["lead_step"].values, [1, 2, 3])
    np.testing.assert_array_equal(fc["valid_time"].values, fc["init_time"].values[:, None] + fc["lead_time"].values)
    assert fc["init_time"].attrs["standard_name"] == "forecast_reference_time"
    assert fc["lead_time"].attrs["standard_name"] == "forecast_period"
    assert fc["member"].attrs["standard_name"] == "realization"
    for layout in ("climpred", "wb2"):  # every layout reads back as the same forecast
        other = _forecast(daily_run, layout, f"fc_{layout}.nc")
        xr.testing.assert_identical(to_internal(other).drop_attrs(), to_internal(fc).drop_attrs())


def test_wb2_layout_is_the_weatherbench_forecast_schema(daily_run):
    fc = _forecast(daily_run, "wb2", "wb2.nc")
    assert fc["t"].dims == ("time", "prediction_timedelta", "realization", "pressure_level", "latitude", "longitude")
    assert np.issubdtype(fc["prediction_timedelta"].dtype, np.timedelta64)


def test_climpred_and_xskillscore_take_the_files_unchanged(daily_run, monkeypatch):
    climpred = pytest.importorskip("climpred")
    xs = pytest.importorskip("xskillscore")
    from xml.etree import ElementTree

    import cf_xarray.accessor

    # climpred downloads the CF standard-name table to add attributes (no network here); it skips that step when
    # the table does not parse, which is what this stands in for. The schema checks all run.
    def offline(*args, **kwargs):
        raise ElementTree.ParseError("offline")

    monkeypatch.setattr(cf_xarray.accessor.CFDatasetAccessor, "add_canonical_attributes", offline)
    from sciffusion.domains.climate.evaluate import truth_for

    fc = _forecast(daily_run, "climpred", "cp.nc")
    assert fc["lead"].attrs["units"] == "days" and fc["lead"].dtype == np.int64
    obs = xr.open_dataset(daily_run / "era5.nc").drop_vars(["number", "expver"]).rename(valid_time="time")
    obs = obs.sortby("latitude")[["t2m"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hind = climpred.HindcastEnsemble(fc[["t2m"]]).add_observations(obs)
        skill = hind.verify(metric="crps", comparison="m2o", dim=["init", "member"], alignment="same_inits")
    assert skill["t2m"].sizes["lead"] == 3 and np.isfinite(skill["t2m"].values).all()
    truth = truth_for(fc, daily_run / "era5.nc")
    crps = xs.crps_ensemble(truth["t2m"], fc["t2m"], member_dim="member", dim=[])
    assert crps.dims == ("init", "lead", "latitude", "longitude") and np.isfinite(crps.values).all()


def test_monthly_and_noleap_leads_are_calendar_months(tmp_path):
    ds, enc = cmip6(months=48)
    ds.to_netcdf(tmp_path / "ta.nc", encoding=enc)
    _, fc = _train_forecast(tmp_path, str(tmp_path / "ta.nc"), ["--levels", "500"], init="2003-01/2003-03", leads=2)
    assert fc["lead_time"].attrs["units"] == "months" and list(fc["lead_time"].values) == [1, 2]
    v = fc["valid_time"].values
    assert (v[0, 0].year, v[0, 0].month, v[0, 1].month, v[2, 1].month) == (2003, 2, 3, 5)
    assert type(v[0, 0]).__name__ == "DatetimeNoLeap"
    with pytest.raises(ValueError, match="wb2 layout needs a regular sub-monthly time step"):
        from sciffusion.domains.climate.conventions import to_layout

        to_layout(fc, "wb2")


def test_time_step_kinds():
    import pandas as pd

    from sciffusion.domains.climate.conventions import time_step

    assert time_step(pd.date_range("2000", periods=5, freq="6h").values) == ("delta", pd.Timedelta("6h"))
    assert time_step(pd.date_range("2000", periods=5, freq="MS").values) == ("months", 1)
    assert time_step(pd.date_range("2000", periods=5, freq="QS").values) == ("months", 3)
    assert time_step(pd.date_range("2000", periods=5, freq="YS").values) == ("years", 1)
    # a daily record with two days missing is still daily; spacings that are no whole number of one step are not
    assert time_step(np.array(["2000-01-01", "2000-01-02", "2000-01-05"], "datetime64[ns]")) == ("delta",
                                                                                                 pd.Timedelta("1D"))
    assert time_step(np.array(["2000-01-01", "2000-01-02", "2000-01-03T05"], "datetime64[ns]"))[0] == "steps"


# --- a Copernicus-style archive of yearly files, every verb, in a subprocess -------------------------------------
@pytest.fixture(scope="module")
def yearly_archive(tmp_path_factory):
    """``tests/scripts/yearly_archive.py`` run as a subprocess: train, forecast in 3 batches and in one, evaluate,
    a forcing, downscale and its evaluation on three yearly ERA5-layout files. Each batch of a forecast opened the
    archive again, and two netCDF-C handles on one HDF5 file (with ERA5's string ``expver``) crashed the interpreter
    at the second batch (SIGSEGV, exit -11): in a subprocess that is a failed test, not the end of pytest."""
    import subprocess
    import sys

    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    out = tmp_path_factory.mktemp("yearly")
    script = pathlib.Path(__file__).parent / "scripts" / "yearly_archive.py"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    return out


def test_yearly_netcdf_archive_runs_every_verb_without_crashing(yearly_archive):
    out = yearly_archive
    with xr.open_dataset(out / "fc.nc") as a, xr.open_dataset(out / "fc_one.nc") as b:
        batched, whole = a.load(), b.load()
    assert batched.sizes["init_time"] == 12 and batched.sizes["lead_time"] == 2
    np.testing.assert_array_equal(batched["init_time"].values, np.array(
        [f"2002-{m:02d}-01" for m in range(1, 13)], dtype="datetime64[ns]"))
    # three batches or one: the same coordinates and attributes, the same values to float32 rounding (the products'
    # kernels may differ with the batch; see test_climate's batching test)
    xr.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-4)
    assert sorted(batched.coords) == sorted(whole.coords) and batched.attrs.keys() == whole.attrs.keys()
    assert np.isfinite(batched["t"]).all() and "expver" not in batched.coords
    scores = json.loads((out / "scores.json").read_text())
    assert scores["t_850"]["sciffusion"]["1"]["crps"] > 0 and "persistence" in scores["t_850"]
    with xr.open_dataset(out / "forced.nc") as f:
        assert f.sizes["init_time"] == 9 and np.isfinite(f["t"]).all()
    with xr.open_dataset(out / "down.nc") as d:
        assert d.sizes["valid_time"] == 6 and np.isfinite(d["t2m"]).all()
    assert json.loads((out / "down.json").read_text())["t2m"]["sciffusion"]["crps"] > 0


def test_yearly_archive_under_torchrun_is_the_one_process_forecast(yearly_archive, tmp_path):
    """Two processes (gloo) forecast alternate batches of initial times from the yearly files and process 0 joins
    them: each process opens the archive once, and the file equals the one-process forecast."""
    import subprocess
    import sys

    out = yearly_archive
    verb = ["forecast", "--run", str(out / "run"), "--data", str(out / "era5_monthly_*.nc"), "--init-period",
            "2002-01/2002-12", "--leads", "2", "--members", "2", "--batch-inits", "4", "--threads", "1"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
              "sciffusion.cli", "--"]
    done = subprocess.run([*launch, *verb, "--out", str(tmp_path / "two.nc")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    with xr.open_dataset(tmp_path / "two.nc") as a, xr.open_dataset(out / "fc.nc") as b:
        two, one = a.load(), b.load()
    xr.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-4)
    assert two.sizes["init_time"] == 12


def test_netcdf_reads_in_threads_beside_a_netcdf_writer_do_not_crash(tmp_path):
    """dask's threads read the yearly files (through the one store per file and xarray's netCDF lock) while the
    main thread writes netCDF files and reopens the source: no crash, the same values every time."""
    import subprocess
    import sys

    ds, enc = era5("2000-01-01", periods=36, levels=(850,), freq="MS")
    by_year(ds, enc, tmp_path / "era5", "valid_time")
    code = f"""
import concurrent.futures as cf, numpy as np, xarray as xr
from sciffusion.domains.climate.sources import open_source
pattern = {str(tmp_path / 'era5_*.nc')!r}
first = open_source(pattern)
want = first["t"].values
def read(i):
    src = open_source(pattern)
    return float(np.abs(src["t"].isel(valid_time=slice(i % 30, i % 30 + 6)).values).sum())
with cf.ThreadPoolExecutor(4) as pool:
    jobs = [pool.submit(read, i) for i in range(40)]
    for k in range(10):
        xr.Dataset({{"x": ("t", np.arange(1000.0))}}).to_netcdf({str(tmp_path)!r} + f"/w{{k}}.nc")
        open_source(pattern).close()
    got = [j.result() for j in jobs]
assert np.array_equal(open_source(pattern)["t"].values, want)
assert got == [float(np.abs(want[i % 30:i % 30 + 6]).sum()) for i in range(40)]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", f"exit {done.returncode}: {done.stderr[-3000:]}"
