"""Maps and plots people read: axes in degrees, colour bars with names and units, leads in whole steps of the data's
unit, one row of maps per level, coastlines from cartopy's Natural Earth data when it is on disk (never downloaded).
The labels are read off the figures' axes, the figures that ``evaluate --plots`` saves."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sciffusion.domains.climate import plots
from sciffusion.domains.climate.conventions import lead_coords, lead_unit, to_internal, to_layout
from sciffusion.domains.climate.levels import split_levels

pytest.importorskip("matplotlib")


def _forecast(times, leads: int = 2, levels=(500.0, 850.0), members: int = 3) -> xr.Dataset:
    """A ``(init_time, lead_time, member, level, lat, lon)`` forecast of air temperature in K, on a 6 x 8 grid."""
    rng = np.random.default_rng(0)
    lat = xr.DataArray(np.linspace(30, 55, 6), dims="lat", attrs={"units": "degrees_north"})
    lon = xr.DataArray(np.linspace(230, 300, 8), dims="lon", attrs={"units": "degrees_east"})
    level = xr.DataArray(np.asarray(levels), dims="level", attrs={"units": "hPa", "positive": "down"})
    x = 280 + rng.normal(size=(1, leads, members, len(levels), 6, 8))
    coords = {"init_time": [times[0]], **lead_coords(times[:1], list(times), leads), "member": np.arange(members),
              "level": level, "lat": lat, "lon": lon}
    t = xr.DataArray(x, dims=("init_time", "lead_time", "member", "level", "lat", "lon"), coords=coords,
                     attrs={"units": "K", "long_name": "air temperature"})
    return xr.Dataset({"t": t}, attrs={"sciffusion_task": "forecast"})


def _table(channels, leads: int = 2) -> dict:
    entry = {str(s): {"crps": 0.1 * s} for s in range(1, leads + 1)}
    return {v: {"sciffusion": {**entry, "rank_histogram": [3, 2, 2, 3]}, "persistence": entry} for v in channels}


def _labels(fig) -> set[str]:
    return {lab for ax in fig.axes for lab in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())}


@pytest.mark.parametrize(("times", "expected"), [
    (pd.date_range("2000-01-01", periods=6, freq="6h").values, (6.0, "hours")),
    (pd.date_range("2000-01-01", periods=6, freq="D").values, (1.0, "days")),
    (pd.date_range("2000-01-01", periods=6, freq="MS").values, (1.0, "months")),
    (pd.date_range("2000-01-01", periods=6, freq="YS").values, (1.0, "years")),
    (pd.to_datetime(["2000-01-01 00:00", "2000-01-01 05:00", "2000-01-01 12:00", "2000-01-01 23:00"]).values,
     (1.0, "time steps")),  # spacings of 5, 7 and 11 hours: no regular step
])
def test_lead_unit_is_the_data_step(times, expected):
    fc = _forecast(times)
    assert lead_unit(fc) == expected
    if expected[1] in ("hours", "days"):  # climpred writes integers with units; WB2 keeps the timedelta
        assert lead_unit(to_layout(fc, "climpred")) == expected
        assert lead_unit(to_layout(fc, "wb2")) == expected


def test_forecast_figures_label_axes_units_and_levels(monkeypatch):
    monkeypatch.setattr(plots, "coastlines", lambda: None)
    fc = _forecast(pd.date_range("2000-01-01", periods=6, freq="6h").values)
    flat = split_levels(to_internal(fc))  # as evaluate passes it: leads in steps
    truth = flat.isel(member=0, drop=True)
    figs = plots.forecast_figures(_table(list(flat.data_vars)), flat, truth, lead_unit(fc))
    assert set(figs) == {"t_500_crps_by_lead", "t_850_crps_by_lead", "t_500_rank_histogram",
                         "t_850_rank_histogram", "t_maps"}
    ax = figs["t_500_crps_by_lead"].axes[0]
    assert ax.get_xlabel() == "lead (hours)" and ax.get_ylabel() == "fair CRPS (K)"
    assert list(ax.get_xticks()) == [6.0, 12.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["6", "12"]
    maps = figs["t_maps"]
    panels = [a for a in maps.axes if a.get_title()]
    assert len(panels) == 8  # one row of 4 per level
    assert [a.get_title() for a in panels[::4]] == ["ensemble mean at 500 hPa", "ensemble mean at 850 hPa"]
    assert {a.get_xlabel() for a in panels} == {"longitude (°E)"}
    assert {a.get_ylabel() for a in panels} == {"latitude (°N)"}
    bars = {a.get_ylabel() for a in maps.axes if not a.get_title()}
    assert bars == {"air temperature (K)", "difference: air temperature (K)", "spread: air temperature (K)"}
    assert "lead 6 hours" in maps.get_suptitle()
    for f in figs.values():
        plots._pyplot().close(f)


def test_projected_grid_keeps_its_own_axis_names(monkeypatch):
    monkeypatch.setattr(plots, "coastlines", lambda: pytest.fail("no coastlines on a projected grid"))
    x = xr.DataArray(np.arange(3.0) * 2.5, dims="x", attrs={"units": "km", "standard_name": "projection_x_coordinate"})
    y = xr.DataArray(np.arange(2.0) * 2.5, dims="y", attrs={"units": "km", "standard_name": "projection_y_coordinate"})
    da = xr.DataArray(np.ones((2, 3)), dims=("y", "x"), coords={"y": y, "x": x}, attrs={"units": "mm"}, name="pr")
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    plots.draw_map(fig, ax, da, "pr", "viridis", plots.field_label(da))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (km)", "y (km)")
    assert fig.axes[1].get_ylabel() == "pr (mm)"
    plt.close(fig)


def _coastline_shapefile(root, lines) -> None:
    shapefile = pytest.importorskip("shapefile")  # pyshp, which cartopy installs
    d = root / "shapefiles" / "natural_earth" / "physical"
    d.mkdir(parents=True)
    with shapefile.Writer(str(d / "ne_110m_coastline"), shapeType=shapefile.POLYLINE) as w:
        w.field("name", "C")
        for line in lines:
            w.line([line])
            w.record("coast")


def test_coastlines_come_from_cartopy_data_on_disk(tmp_path, monkeypatch):
    cartopy = pytest.importorskip("cartopy")
    # A coast in -180..180 longitudes across the map's 0..360 ones, and one far away that is not drawn.
    _coastline_shapefile(tmp_path, [[(-120.0, 30.0), (-100.0, 50.0)], [(10.0, -40.0), (20.0, -30.0)]])
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path)
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path / "nowhere")
    plots.coastlines.cache_clear()
    try:
        fc = _forecast(pd.date_range("2000-01-01", periods=6, freq="MS").values, levels=(850.0,))
        flat = split_levels(to_internal(fc))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # data on disk: nothing to say
            figs = plots.forecast_figures(_table(list(flat.data_vars)), flat, flat.isel(member=0, drop=True),
                                          lead_unit(fc))
        panels = [a for a in figs["t_maps"].axes if a.get_title()]
        coasts = [ln for ln in panels[0].get_lines() if ln.get_gid() == "coastline"]
        assert len(coasts) == 1
        np.testing.assert_allclose(coasts[0].get_xdata(), [240.0, 260.0])  # shifted onto the map's longitudes
        assert panels[0].get_xlim() == pytest.approx((230.0, 300.0))
        for f in figs.values():
            plots._pyplot().close(f)
    finally:
        plots.coastlines.cache_clear()


def test_missing_coastline_data_is_said_once_and_maps_still_drawn(tmp_path, monkeypatch):
    cartopy = pytest.importorskip("cartopy")
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path)
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path)
    plots.coastlines.cache_clear()
    try:
        fc = split_levels(to_internal(_forecast(pd.date_range("2000-01-01", periods=6, freq="MS").values)))
        with pytest.warns(UserWarning, match="without coastlines") as said:
            for _ in range(2):
                figs = plots.forecast_figures(_table(list(fc.data_vars)), fc, fc.isel(member=0, drop=True))
                assert not [ln for a in figs["t_maps"].axes for ln in a.get_lines() if ln.get_gid() == "coastline"]
                for f in figs.values():
                    plots._pyplot().close(f)
        assert len([w for w in said if "coastlines" in str(w.message)]) == 1
        assert not list(tmp_path.iterdir())  # nothing downloaded
    finally:
        plots.coastlines.cache_clear()


def test_downscale_maps_one_row_per_level(monkeypatch):
    monkeypatch.setattr(plots, "coastlines", lambda: None)
    fc = split_levels(_forecast(pd.date_range("2000-01-01", periods=6, freq="MS").values)).isel(
        init_time=0, lead_time=0, drop=True)
    rows = [(fc[v].isel(member=0), fc[v], None) for v in ("t_500", "t_850")]
    fig = plots.downscale_maps_figure(rows, "t", "2000-02", shown=2)
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["truth at 500 hPa", "member 0 at 500 hPa", "member 1 at 500 hPa",
                                               "truth at 850 hPa", "member 0 at 850 hPa", "member 1 at 850 hPa"]
    assert {a.get_ylabel() for a in fig.axes if not a.get_title()} == {"air temperature (K)"}
    assert {a.get_xlabel() for a in panels} == {"longitude (°E)"}
    plots._pyplot().close(fig)
