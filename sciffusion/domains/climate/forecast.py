"""Ensemble forecasting of gridded fields: condition on the last ``k`` states, sample the next one, roll out.

The model works on anomalies from the training period's climatology (per calendar month for monthly data) and
predicts the *residual* from damped persistence, ``r[t+1] = a[t+1] - phi * a[t]`` with a per-cell AR(1) ``phi``
fitted on the training period: with a few hundred training states, learning the residual is far easier than
learning the whole propagator, and a zero-initialised network starts out as the damped-persistence forecast.

    sciffusion train forecast --data F.nc --variables sst --train-period 1991-01/2015-12 --out RUN
    sciffusion forecast --run RUN --data F.nc --init-period 2016-01/2021-11 --leads 3 --members 16 --out FC.nc
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from ..._version import __version__
from ...diffusion import derive_seed
from ...tasks.base import Flag, Task, register, run_training
from ...tasks.calibration import spread_calibrator
from ...tasks.outputs import open_output, provenance, recorded_seed, report_scores, state_tensors, write_netcdf
from ...training.data import DiffusionDataModule
from ...training.fit import TrainedRun, load_trained
from .conventions import LAYOUTS, MEMBER_ATTRS, init_attrs, lead_coords, to_internal, to_layout
from .fields import Grid, open_fields, output_attrs, output_coord, static_field, time_key
from .levels import split_levels, stack_levels
from .sources import open_source
from .stats import AR1, Climatology, bootstrap_normals, cycle_keys, fit_anomaly_stats, years

DATA_HELP = ("netCDF files, zarr stores, quoted globs ('era5_*.nc') or URLs (gs://, s3://, https:// with their fsspec "
             "backend), joined along time")
LEVELS_HELP = "vertical levels to model, e.g. 500 850 (hPa also finds a coordinate in Pa); default: all"


def select_period(ds: xr.Dataset, time: str, period: str | None, what: str = "period") -> xr.Dataset:
    """``"1991-01/2015-12"``, ``":2009-12-31"`` or ``"2016/"`` (either end open) -> the matching time steps."""
    if not period:
        return ds
    p = str(period).strip()
    if "/" in p:
        start, end = p.split("/", 1)
    elif p.startswith(":") or p.endswith(":"):
        start, end = p.split(":", 1) if p.startswith(":") else (p[:-1], "")
    else:
        start = end = p  # one year or month: all of it
    out = ds.sel({time: slice(start or None, end or None)})
    if out.sizes[time] == 0:
        raise ValueError(f"{what} {period!r} selects no time steps (the data run from {ds[time].values[0]} to "
                         f"{ds[time].values[-1]})")
    return out


@dataclass
class Preprocess:
    """Everything fitted on the training period that turns fields into model inputs and samples back into fields."""

    history: int
    clim: Climatology
    ar1: AR1
    anom_std: np.ndarray     # (C,)
    resid_std: np.ndarray    # (C,)
    static: np.ndarray | None  # (S, H, W), standardised, NaN -> 0
    masked: bool             # whether any cell is missing: then a validity channel goes into the condition

    def cond(self, a_hist: np.ndarray) -> np.ndarray:
        """``(N, k, C, H, W)`` anomalies -> ``(N, cond_channels, H, W)`` float32 condition."""
        n, k, c, h, w = a_hist.shape
        z = a_hist / self.anom_std[None, None, :, None, None]
        parts = [np.nan_to_num(z, nan=0.0).reshape(n, k * c, h, w)]
        if self.static is not None:
            parts.append(np.broadcast_to(self.static, (n, *self.static.shape)))
        if self.masked:
            parts.append(np.isfinite(a_hist[:, -1]).all(1, keepdims=True).astype(np.float64))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def cond_channels(self, channels: int) -> int:
        return self.history * channels + (0 if self.static is None else len(self.static)) + int(self.masked)

    def target(self, a_prev: np.ndarray, a_next: np.ndarray) -> np.ndarray:
        return ((a_next - self.ar1.phi * a_prev) / self.resid_std[:, None, None]).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return state_tensors({**self.clim.state(), "phi": self.ar1.phi, "anom_var": self.ar1.var,
                              "anom_std": self.anom_std, "resid_std": self.resid_std, "static": self.static})

    @classmethod
    def from_run(cls, run: TrainedRun) -> Preprocess:
        s = {k: v.numpy() for k, v in run.state.items()}
        d = run.config["data"]
        return cls(int(d["history"]), Climatology.from_state(run.metadata["climatology"], s),
                   AR1(s["phi"], s["anom_var"]), s["anom_std"], s["resid_std"], s.get("static"),
                   bool(run.metadata["masked"]))


def _fields(ds: xr.Dataset, variables: Sequence[str]) -> np.ndarray:
    """``(time, C, lat, lon)`` float64 from a canonical dataset (reads the selected steps only)."""
    return np.stack([ds[v].values.astype(np.float64) for v in variables], axis=1)


def read_static(d: dict[str, Any], grid: Grid) -> np.ndarray | None:
    """Standardised static fields ``(S, H, W)`` (NaN -> 0) named by ``data.static``, from ``data.static_path`` or
    the data file, put on ``grid`` (checked against it)."""
    if not d.get("static"):
        return None
    names = [d["static"]] if isinstance(d["static"], str) else list(d["static"])
    where = d.get("static_path") or d["path"]
    with open_source(where) as src:
        out = []
        for name in names:
            if name not in src.variables:
                raise ValueError(f"static field {name!r} not found in {where}")
            f = static_field(src[name].load(), grid)
            sd = np.nanstd(f)
            out.append(np.nan_to_num((f - np.nanmean(f)) / (sd if sd > 0 else 1.0)))
    return np.stack(out)


class ForecastWindows(Dataset):
    """Training samples read on demand: ``x`` = normalised residual at ``t + 1``, ``cond`` = the ``k`` anomaly
    states up to ``t`` (+ static fields, + validity), ``weight`` = latitude weights. ``ds`` may be lazily backed
    (netCDF/zarr, dask): each sample reads ``k + 1`` time steps."""

    def __init__(self, ds: xr.Dataset, variables: Sequence[str], time: str, ends: Sequence[int], keys: np.ndarray,
                 when: np.ndarray, prep: Preprocess, lat_weights: np.ndarray, offsets: np.ndarray | None = None
                 ) -> None:
        self.ds, self.variables, self.time, self.ends = ds, list(variables), time, list(ends)
        self.keys, self.when, self.prep, self.offsets = keys, when, prep, offsets
        self.weight = torch.from_numpy(lat_weights.astype(np.float32))[None, :, None]

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        t, k = self.ends[j], self.prep.history
        x = _fields(self.ds.isel({self.time: slice(t - k + 1, t + 2)}), self.variables)
        a = x - self.prep.clim.at(self.keys[t - k + 1:t + 2], self.when[t - k + 1:t + 2])
        if self.offsets is not None:  # the recent normal of the initial time, for inputs and target alike
            a = a - self.offsets[t]
        return {"x": torch.from_numpy(self.prep.target(a[k - 1], a[k])),
                "cond": torch.from_numpy(self.prep.cond(a[None, :k])[0]), "weight": self.weight}


@register
class Forecast(Task):
    name = "forecast"
    verb = "forecast"
    summary = "ensemble forecasts of gridded fields (netCDF/zarr in, netCDF out)"
    defaults: dict[str, Any] = {
        "data": {"variables": None, "levels": None, "train_period": None, "history": 2, "climatology": "auto",
                 "trend": 0, "harmonics": 3, "normal_years": 0.0, "static": None, "static_path": None,
                 "val_fraction": 0.15,
                 "batch_size": 16, "load_max_gb": 2.0, "stats_chunk": 64, "holdout_stats": False},
        "model": {"net": {"channels": [16, 32, 64], "num_res_blocks": 1}, "lr": 5e-4, "warmup_steps": 50,
                  "ema_half_life": 100.0},
        "trainer": {"max_steps": 800, "checkpoint_every": 200, "val_every": 200},
        "sampling": {"sampler": "dpmpp_2m", "steps": 12, "sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0,
                     "exact_gaussian": True, "inflation": None, "calibrate": True, "calibration_members": 8},
        "forecast": {"init_period": None, "leads": 3, "members": 16, "normal_years": None, "normal_uncertainty": 0.0,
                     "layout": "sciffusion"},
    }
    train_flags = (
        Flag("--data", "data.path", DATA_HELP, nargs="+"),
        Flag("--variables", "data.variables",
             "variables to model, or single levels of them (t_850); default: every variable on (time, lat, lon), with "
             "or without a vertical level", nargs="+"),
        Flag("--levels", "data.levels", LEVELS_HELP, float, nargs="+"),
        Flag("--train-period", "data.train_period", "training period, e.g. 1991-01/2015-12 (its tail validates)"),
        Flag("--history", "data.history", "number of past states to condition on", int),
        Flag("--climatology", "data.climatology",
             "anomalies from: auto (month for monthly data, doy for daily/sub-daily), month, doy, none"),
        Flag("--trend", "data.trend", "per-cell polynomial trend degree removed with the climatology (0-3)", int),
        Flag("--normal-years", "data.normal_years",
             "train (and forecast) on anomalies from a recent normal: the mean anomaly of the last N years", float),
        Flag("--static", "data.static", "static (lat, lon) fields to condition on, e.g. land-sea mask", nargs="+"),
    )
    sample_flags = (
        Flag("--data", "data.path", "the states to start from (and the truth, if it is there): " + DATA_HELP,
             nargs="+"),
        Flag("--init-period", "forecast.init_period", "initial times, e.g. 2016-01/2021-11"),
        Flag("--leads", "forecast.leads", "number of steps to roll out", int),
        Flag("--members", "forecast.members", "ensemble members", int),
        Flag("--inflation", "sampling.inflation", "override the calibrated spread inflation", float),
        Flag("--normal-years", "forecast.normal_years",
             "anomalies from a recent normal of N years up to each initial time (default: the run's)", float),
        Flag("--layout", "forecast.layout", "file layout: sciffusion (init_time, lead_time, member), climpred (init, "
             "lead, member) or wb2 (time, prediction_timedelta, realization)"),
        Flag("--normal-uncertainty", "forecast.normal_uncertainty",
             "give each member its own climatology and trend, refitted to the training years resampled in blocks of "
             "N years (e.g. 10; 0 = off)", float),
    )
    required_sample = ("run", "out", "data.path")
    evaluate_flags = (
        Flag("--data", "data.path", "the truth (and the run's training period, for the baselines): " + DATA_HELP,
             nargs="+"),
        Flag("--forecast", "evaluate.forecast", "forecast file written by 'sciffusion forecast'"),
        Flag("--baselines", "evaluate.baselines", "baselines to score alongside (default: all; 'none' for none)",
             nargs="+"),
        Flag("--members", "evaluate.members", "members of the stochastic baselines (and of --nfe forecasts)", int),
        Flag("--nfe", "evaluate.nfe", "instead of scoring a file: forecast with the run at each of these numbers of "
             "network calls and report the cheapest within 1%% of the converged CRPS (needs --run)", int, nargs="+"),
        Flag("--samplers", "evaluate.samplers", "with --nfe: samplers to compare (default: the run's)", nargs="+"),
        Flag("--init-period", "evaluate.init_period", "with --nfe: initial times to forecast from"),
        Flag("--leads", "evaluate.leads", "with --nfe: steps to roll out", int),
        Flag("--normal-uncertainty", "evaluate.normal_uncertainty", "with --nfe: as for 'sciffusion forecast'", float),
        Flag("--store", "evaluate.store", "with --nfe: make the chosen sampler and steps the run's default",
             nargs="?", const=True),
    )
    required_evaluate = ("data.path",)

    # --- training --------------------------------------------------------------------------------------------
    def train(self, config: dict[str, Any]) -> pathlib.Path:
        d = config["data"]
        ds, grid = open_fields(d["path"], d["variables"], levels=d.get("levels"))
        variables = list(ds.data_vars)
        k = int(d["history"])
        if k < 1:
            raise ValueError(f"history must be >= 1; got {k}")
        train = select_period(ds, grid.time, d["train_period"], "train-period")
        if train.sizes[grid.time] < k + 8:
            raise ValueError(f"the training period has {train.sizes[grid.time]} time steps; need at least {k + 8}")
        if train.nbytes < float(d["load_max_gb"]) * 2**30:
            train = train.load()  # small enough: read once, not per sample
        times = train[grid.time].values
        # Statistics in streamed chunks of the time axis: the training period never has to fit in memory.
        chunk = int(d.get("stats_chunk", 64))
        ends = list(range(k - 1, len(times) - 1))
        n_val = int(round(len(ends) * float(d["val_fraction"])))
        # With holdout_stats the statistics leave the validation tail out too, so the calibration windows carry the
        # same out-of-sample error (an extrapolated trend, a drifting climatology) as real forecasts will.
        T = len(times) - (n_val if d.get("holdout_stats", False) else 0)

        def read(lo: int, hi: int) -> np.ndarray:
            return _fields(train.isel({grid.time: slice(lo, hi)}), variables)

        clim = Climatology.fit_stream(read, times[:T], d["climatology"], int(d.get("trend") or 0), chunk,
                                      n_harmonics=int(d.get("harmonics", 3)))
        keys, when = cycle_keys(times, clim.kind), years(times)
        step_years = float(np.median(np.diff(when)))
        offsets = None
        normal_years = float(d.get("normal_years") or 0.0)
        if normal_years > 0:  # anomalies from a recent normal, as the forecasts will take them (in memory)
            anomalies = read(0, len(times)) - clim.at(keys, when)
            offsets = recent_normal(anomalies, range(len(times)), normal_steps(normal_years, step_years))
            recent = anomalies - offsets

        def anomalies_of(lo: int, hi: int) -> np.ndarray:
            if offsets is not None:
                return recent[lo:hi]
            return read(lo, hi) - clim.at(keys[lo:hi], when[lo:hi])

        ar1, anom_std, resid_std, masked = fit_anomaly_stats(anomalies_of, T, chunk)
        if not (np.isfinite(resid_std).all() and (resid_std > 0).all()):
            raise ValueError(f"a variable of {variables} is constant or empty over the training period")
        static = read_static(d, grid)
        prep = Preprocess(k, clim, ar1, anom_std, resid_std, static, masked=masked)
        w = grid.lat_weights()
        tr = ForecastWindows(train, variables, grid.time, ends[:len(ends) - n_val], keys, when, prep, w, offsets)
        va = ForecastWindows(train, variables, grid.time, ends[len(ends) - n_val:], keys, when, prep, w, offsets)
        dm = DiffusionDataModule(tr, va if n_val else None, batch_size=int(d["batch_size"]),
                                 num_workers=int(d.get("num_workers", 0)), seed=int(config["seed"]))
        C = len(variables)
        net = {"dims": 2, "in_channels": C, "cond_channels": prep.cond_channels(C), "periodic": [False, grid.periodic]}
        meta = {"variables": variables, "grid": grid.to_dict(), "climatology": clim.kind, "masked": prep.masked,
                "step_years": step_years, "normal_years": normal_years,
                "attrs": {v: dict(ds[v].attrs) for v in variables}, "coord_attrs": {
                    c: dict(ds[c].attrs) for c in (grid.lat, grid.lon)},
                "train_period": [str(times[0]), str(times[-1])], "source": str(d["path"])}
        calibrate = spread_calibrator(va, config["sampling"], int(config["seed"]))
        return run_training(config, dm, net, meta, prep.state_dict(), calibrate)

    # --- sampling --------------------------------------------------------------------------------------------
    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        layout = config["forecast"].get("layout") or "sciffusion"
        if layout not in LAYOUTS:  # before sampling, not after
            raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
        fc = forecast(run, config["data"]["path"], init_period=config["forecast"].get("init_period"),
                      leads=int(config["forecast"]["leads"]), members=int(config["forecast"]["members"]),
                      seed=int(config["seed"]), sampling=config.get("sampling", {}), progress=True,
                      normal_years=config["forecast"].get("normal_years"),
                      normal_uncertainty=float(config["forecast"].get("normal_uncertainty") or 0.0))
        return write_netcdf(to_layout(fc, layout), config["out"])

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        from .evaluate import BASELINES, evaluate_forecast, format_table

        e = config.get("evaluate", {})
        if e.get("nfe"):
            return self.evaluate_nfe(config)
        if not e.get("forecast"):
            raise ValueError("give --forecast FILE to score, or --run RUN with --nfe N... to compare sampling costs")
        fc = to_internal(open_output(e["forecast"], "forecast"))
        base = e.get("baselines") or list(BASELINES)
        base = () if base in (["none"], "none") else tuple([base] if isinstance(base, str) else base)
        if base and not config.get("run"):
            raise ValueError("baselines need --run (they are fitted on the run's training period); or --baselines none")
        table = evaluate_forecast(fc, config["data"]["path"], config.get("run"), baselines=base,
                                  members=int(e.get("members", 16)),
                                  seed=recorded_seed(fc.attrs, config.get("seed")))
        if e.get("plots"):
            from .evaluate import truth_for
            from .plots import forecast_plots

            forecast_plots(table, split_levels(fc), truth_for(fc, config["data"]["path"]), e["plots"])
        return report_scores(table, format_table(table), config.get("out"))

    def evaluate_nfe(self, config: dict[str, Any]) -> pathlib.Path | str:
        """``--nfe``: the run's forecasts at each NFE (same seeds), scored by the mean fair CRPS over variables and
        leads; the report names the cheapest setting within 1% of the converged CRPS."""
        from ...tasks.nfe import format_nfe, nfe_settings, nfe_sweep, plot_nfe, store_sampling
        from .evaluate import mean_over_leads, score_table, truth_for

        e = config["evaluate"]
        if not config.get("run"):
            raise ValueError("--nfe forecasts with a trained run: give --run")
        run = load_trained(config["run"], task=self.name)
        spec = run.sampling_spec()
        data = config["data"]["path"]
        seed = int(config.get("seed") or 0)

        def score(overrides: dict[str, Any]) -> dict[str, Any]:
            fc = to_internal(forecast(run, data, init_period=e.get("init_period"), leads=int(e.get("leads") or 3),
                                      members=int(e.get("members") or 16), seed=seed, sampling=overrides,
                                      normal_uncertainty=float(e.get("normal_uncertainty") or 0.0)))
            means = mean_over_leads(score_table({"sciffusion": fc}, truth_for(fc, data)))
            return {"score": means["crps"], "spread_skill": means["spread_skill"]}

        report = nfe_sweep(score, nfe_settings(e["nfe"], e.get("samplers") or [spec.sampler]))
        text = format_nfe(report, "CRPS")
        if e.get("plots"):
            pathlib.Path(e["plots"]).mkdir(parents=True, exist_ok=True)
            plot_nfe(report, pathlib.Path(e["plots"]) / "nfe_crps.png", "mean fair CRPS")
        if e.get("store"):
            c = report["chosen"]
            store_sampling(config["run"], c)
            text += f"\nstored in {config['run']}: sampler {c['sampler']}, {c['steps']} steps"
        return report_scores({"nfe": report}, text, config.get("out"))


@dataclass
class Inits:
    """The initial states of a set of forecasts, read from ``data`` on the run's grid."""

    ds: xr.Dataset
    grid: Grid
    prep: Preprocess
    variables: list[str]
    index: list[int]         # time index of each initial state in ds
    keys: np.ndarray         # cycle group of every time step of ds
    when: np.ndarray         # fractional year of every time step of ds
    step_years: float        # the data's time step, in years (for valid times past the end of the data)
    a_hist: np.ndarray       # (I, k, C, H, W) anomalies up to each initial time (from the recent normal, if any)
    offset: np.ndarray | None = None  # (I, C, H, W) recent normal: mean anomaly of the years up to each initial time
    normal_years: float = 0.0

    @property
    def times(self) -> list:
        return [self.ds[self.grid.time].values[i] for i in self.index]

    def valid_time(self, lead: int) -> tuple[np.ndarray, np.ndarray]:
        """Cycle keys and fractional years ``(I,)`` of the valid times ``lead`` steps after each initial time (past
        the end of the data too)."""
        return (np.array([self.keys[i] + lead for i in self.index]),
                np.array([self.when[i] + lead * self.step_years for i in self.index]))

    def past_time(self, back: int) -> tuple[np.ndarray, np.ndarray]:
        """Cycle keys and fractional years ``(I,)`` of the states ``back`` steps before each initial time."""
        rows = [i - back for i in self.index]
        return self.keys[rows], self.when[rows]

    def clim_at_lead(self, lead: int) -> np.ndarray:
        """``(I, C, H, W)`` expected field at the valid time of ``lead``: the climatology, plus the recent normal's
        offset when there is one (every method's anomalies are taken from it)."""
        out = self.prep.clim.at(*self.valid_time(lead))
        return out if self.offset is None else out + self.offset


def normal_steps(normal_years: float, step_years: float) -> int:
    """The time steps a recent normal of ``normal_years`` averages (at least one)."""
    return max(1, int(round(normal_years / step_years)))


def recent_normal(anomalies: np.ndarray, index: Sequence[int], steps: int) -> np.ndarray:
    """``(I, C, H, W)``: for each initial time ``i`` of ``index``, the mean anomaly of time steps ``i - steps + 1 ..
    i`` (NaN-aware; fewer at the start of the data), known at ``i``: the per-cell "optimal climate normal" offset
    that takes over where an extrapolated trend drifts from the data."""
    fin = np.isfinite(anomalies)
    csum = np.concatenate([np.zeros((1, *anomalies.shape[1:])), np.cumsum(np.where(fin, anomalies, 0.0), axis=0)])
    cnt = np.concatenate([np.zeros((1, *anomalies.shape[1:])), np.cumsum(fin, axis=0)])
    lo = np.maximum(np.asarray(index) - steps + 1, 0)
    hi = np.asarray(index) + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt[hi] > cnt[lo], (csum[hi] - csum[lo]) / (cnt[hi] - cnt[lo]), np.nan)


def training_anomalies(run: TrainedRun, st: Inits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's training-period anomalies in ``st``'s data ``(T, C, H, W)`` with their cycle keys and fractional
    years (from the recent normal when ``st`` has one); the baselines and the normal's bootstrap fit on them."""
    start, end = run.metadata["train_period"]
    ds = st.ds
    t = ds[st.grid.time].values
    idx = [i for i, v in enumerate(t) if str(v) >= start and str(v) <= end]
    if len(idx) < 3:
        raise ValueError(f"the data do not hold the run's training period {start} .. {end} needed by the baselines")
    x = _fields(ds.isel({st.grid.time: idx}), st.variables)
    keys, when = st.keys[idx], st.when[idx]
    a = x - st.prep.clim.at(keys, when)
    if st.normal_years:  # from the recent normal of each training time, as the forecasts' anomalies are
        a = a - recent_normal(a, range(len(a)), normal_steps(st.normal_years, st.step_years))
    return a, keys, when


def normal_shifts(run: TrainedRun, st: Inits, members: int, normal_uncertainty: float, seed: int
                  ) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """With ``normal_uncertainty`` > 0 (years): ``shift(keys, when) -> (I, M, C, H, W)``, each member's normal minus
    the run's at those times, from the climatology refitted to the training anomalies resampled in blocks of that
    many years (:func:`~.stats.bootstrap_normals`; member ``m``'s from ``(seed, m)``). None when 0."""
    if not normal_uncertainty:
        return None
    if normal_uncertainty < 0:
        raise ValueError(f"normal uncertainty must be >= 0 years; got {normal_uncertainty}")
    if st.normal_years:
        raise ValueError("normal uncertainty perturbs the run's climatology, which a recent normal replaces: "
                         "use one or the other")
    a_train, keys_train, when_train = training_anomalies(run, st)
    block = max(1, int(round(float(normal_uncertainty) / st.step_years)))
    if block > len(a_train):
        raise ValueError(f"normal uncertainty blocks of {normal_uncertainty:g} years are longer than the training "
                         f"period ({len(a_train) * st.step_years:g} years)")
    dbeta = bootstrap_normals(st.prep.clim, a_train, keys_train, when_train, members, block, seed)

    def shift(keys: np.ndarray, when: np.ndarray) -> np.ndarray:
        return np.tensordot(st.prep.clim.design(keys, when), dbeta, axes=(1, 1))

    return shift


def initial_states(run: TrainedRun, data: str | pathlib.Path | xr.Dataset, init_period: str | None,
                   normal_years: float = 0.0) -> Inits:
    """The initial states in ``init_period``. With ``normal_years`` > 0 every anomaly is taken from a recent normal:
    the run's climatology plus the mean anomaly of the last ``normal_years`` years up to each initial time (data
    known at that time only), so a trend that drifts from the data after the training period stops biasing the
    forecasts of the model and of every baseline alike."""
    meta = run.metadata
    variables, grid = meta["variables"], Grid.from_dict(meta["grid"])
    ds, g = open_fields(data, variables)
    grid.check(g, f"{data}" if not isinstance(data, xr.Dataset) else "the data")
    prep = Preprocess.from_run(run)
    times = ds[g.time].values
    keys, when = cycle_keys(times, prep.clim.kind), years(times)
    chosen = select_period(ds.assign_coords(_i=(g.time, np.arange(len(times)))), g.time, init_period,
                           "init-period")["_i"].values
    k = prep.history
    index = [int(i) for i in chosen if i >= k - 1]
    if not index:
        raise ValueError(f"no initial time in {init_period!r} has the {k} past states the model needs")
    if normal_years < 0:
        raise ValueError(f"normal years must be >= 0; got {normal_years}")
    anomalies = _fields(ds, variables) - prep.clim.at(keys, when)
    step_years = float(meta["step_years"])
    a_hist = np.stack([anomalies[i - k + 1:i + 1] for i in index])
    offset = None
    if normal_years:
        offset = recent_normal(anomalies, index, normal_steps(normal_years, step_years))
        a_hist = a_hist - offset[:, None]
    return Inits(ds, g, prep, list(variables), index, keys, when, step_years, a_hist, offset, float(normal_years))


def forecast(run: TrainedRun | str | pathlib.Path, data: str | pathlib.Path | xr.Dataset, *,
             init_period: str | None = None, leads: int = 3, members: int = 16, seed: int = 0,
             sampling: dict[str, Any] | None = None, progress: bool = False, normal_years: float | None = None,
             normal_uncertainty: float = 0.0) -> xr.Dataset:
    """Roll out ``members`` forecasts of ``leads`` steps from every initial time in ``init_period``.

    Returns a Dataset with each variable shaped ``(init_time, lead_time, member, lat, lon)`` in physical units,
    the input's coordinates and attributes, NaN where the initial state is NaN. Member ``m`` of initial time ``i``
    at lead ``l`` is drawn from its own seed, so it does not depend on how many members or initial times are asked.
    The run's calibrated spread inflation scales each sampled residual's deviation from the model's conditional
    mean (:func:`~sciffusion.training.sampling.conditional_mean`). ``normal_years`` > 0 takes anomalies from the
    recent normal (see :func:`initial_states`; default: the run's ``data.normal_years``, 0 = none); the file records
    it, and ``evaluate`` gives the baselines the same.

    ``normal_uncertainty`` > 0 (years) gives each member its own climatology and trend, refitted to the training
    years resampled in blocks of that many years (:func:`~.stats.bootstrap_normals`; the data must hold the run's
    training period): the member's past states become anomalies from it and its forecasts are returned on it. A
    trend extrapolated past the training period is uncertain, and an ensemble that shares one normal misses that
    error (spread/skill under 1 on years after the training period while it is 1 on the validation years).
    """
    run = load_trained(run, task="forecast")
    if leads < 1 or members < 1:
        raise ValueError(f"leads and members must be >= 1; got {leads}, {members}")
    if normal_years is None:
        normal_years = float(run.metadata.get("normal_years", 0.0))
    st = initial_states(run, data, init_period, normal_years)
    prep, g = st.prep, st.grid
    spec = run.sampling_spec(sampling)
    I, C = st.a_hist.shape[0], len(st.variables)
    valid = np.isfinite(st.a_hist[:, -1])                                                   # (I, C, H, W)
    a_hist = np.repeat(st.a_hist, members, axis=0)                                          # (I*M, k, C, H, W)
    shift = normal_shifts(run, st, members, normal_uncertainty, seed)
    if shift is not None:  # each member's past states as anomalies from its own normal
        k = prep.history
        past = np.stack([shift(*st.past_time(k - 1 - j)) for j in range(k)], axis=2)    # (I, M, k, C, H, W)
        a_hist = a_hist - past.reshape(a_hist.shape)
    inflation = float(spec.inflation or 1.0)
    out = np.empty((I, leads, members, C, *g.shape), dtype=np.float32)
    inits = [time_key(t) for t in st.times]  # seeds keyed by the initial time itself, not its place in the file
    for lead in range(1, leads + 1):
        cond = torch.from_numpy(prep.cond(a_hist))
        seeds = [derive_seed(seed, "forecast", t, m, lead) for t in inits for m in range(members)]
        z = run.sample((C, *g.shape), seeds, cond=cond, sampling=spec, progress=progress,
                       desc=f"lead {lead}/{leads}").cpu().numpy().astype(np.float64)
        r = (z * prep.resid_std[None, :, None, None]).reshape(I, members, C, *g.shape)
        a_next = prep.ar1.phi * a_hist[:, -1].reshape(I, members, C, *g.shape) + r
        a_next = np.where(valid[:, None], a_next, np.nan)
        expected = st.clim_at_lead(lead)[:, None] + (0.0 if shift is None else shift(*st.valid_time(lead)))
        out[:, lead - 1] = (a_next + expected).astype(np.float32)
        a_hist = np.concatenate([a_hist[:, 1:], a_next.reshape(I * members, 1, C, *g.shape)], axis=1)
    note = (f"run {run.config.get('out')}, {members} members, {leads} leads, sampler {spec.sampler} {spec.steps} "
            f"steps, spread inflation {inflation:.3f}" + (f", recent normal of {normal_years:g} years"
                                                           if normal_years else "")
            + (f", normal bootstrapped in {normal_uncertainty:g}-year blocks" if normal_uncertainty else ""))
    return to_dataset(out, st, "sciffusion diffusion forecast", note,
                      {"sciffusion_inflation": inflation, "sciffusion_normal_years": float(normal_years),
                       "sciffusion_normal_uncertainty": float(normal_uncertainty or 0.0), **provenance(seed, spec)})


def to_dataset(out: np.ndarray, st: Inits, source: str, note: str, attrs: dict[str, Any] | None = None
               ) -> xr.Dataset:
    """``(I, L, M, C, H, W)`` fields -> Dataset of ``(init_time, lead_time, member, [level], lat, lon)`` variables
    with the input's attributes and coordinates, lead and valid times (:func:`~.conventions.lead_coords`) and a
    history line."""
    ds, g = st.ds, st.grid
    I, L, M = out.shape[:3]
    coords = {"init_time": ("init_time", np.asarray(st.times), init_attrs(ds[g.time].attrs)),
              **lead_coords(list(st.times), list(ds[g.time].values), L),
              "member": ("member", np.arange(M), MEMBER_ATTRS),
              g.lat: output_coord(ds, g.lat), g.lon: output_coord(ds, g.lon)}
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} sciffusion {__version__}"
    dims = ("init_time", "lead_time", "member", g.lat, g.lon)
    data_vars = {v: (dims, out[:, :, :, c], output_attrs(ds[v].attrs, dims)) for c, v in enumerate(st.variables)}
    history = f"{stamp} {source}: {note}" + ("\n" + ds.attrs["history"] if "history" in ds.attrs else "")
    return stack_levels(xr.Dataset(data_vars, coords=coords, attrs={
        **ds.attrs, "history": history, "source": source, "sciffusion_task": "forecast", **(attrs or {})}))
