"""The climate tasks: the CLI adapters of ``sciffusion train forecast|downscale``, ``forecast``, ``downscale`` and
``evaluate``, and the Python API that trains them (:func:`train_forecast`, :func:`train_downscale`)."""

from __future__ import annotations

import pathlib
import time
from typing import Any, ClassVar

import numpy as np

from ...diffusion import nfe
from ...tasks.base import TASKS, Flag, Task, register, run_training
from ...tasks.calibration import spread_calibrator
from ...tasks.outputs import open_output, recorded_seed, report_scores
from ...tasks.shards import current_shard, write_sharded
from ...training.checkpoint import source_label
from ...training.data import DiffusionDataModule
from ...training.fit import TrainedRun, load_trained
from .conventions import INIT_DIM, LAYOUTS, calendar, contiguous, lead_unit, to_internal, to_layout
from .downscale import (
    DownscaleSamples,
    crop_to_factor,
    downscale_batches,
    fit_downscale_prep,
)
from .downscale_scores import evaluate_downscaling, format_downscale_table
from .evaluate import (
    BASELINES,
    ForecastScores,
    evaluate_forecast,
    format_table,
    mean_over_leads,
    score_table,
    truth_for,
)
from .fields import field_array, open_fields, select_period
from .forecast import forecast, forecast_batches, normal_steps, recent_normal
from .forecast_data import ForecastWindows, Preprocess, forcing_stats, read_static
from .levels import split_levels
from .stats import Climatology, cycle_keys, fit_anomaly_stats, years

DATA_HELP = ("netCDF files, zarr stores, quoted globs ('era5_*.nc') or URLs (gs://, s3://, https:// with their fsspec "
             "backend), joined along time")
LEVELS_HELP = "vertical levels to model, e.g. 500 850 (hPa also finds a coordinate in Pa); default: all"


NETCDF_OUT = (".nc", ".nc4", ".netcdf")


@register
class Forecast(Task):
    name = "forecast"
    verb = "forecast"
    out_suffixes = {"sample": (*NETCDF_OUT, ".zarr")}  # what --out may name (refused before sampling otherwise)
    compares_runs: ClassVar[bool] = True  # 'evaluate forecast --run A B C'
    summary = "ensemble forecasts of gridded fields (netCDF/zarr in, netCDF out)"
    defaults: dict[str, Any] = {
        "data": {"variables": None, "levels": None, "train_period": None, "history": 2, "climatology": "auto",
                 "trend": 0, "harmonics": 3, "normal_years": 0.0, "static": None, "static_path": None,
                 "forcings": None,
                 "val_fraction": 0.15,
                 "batch_size": 16, "load_max_gb": 2.0, "stats_chunk": 64, "holdout_stats": False},
        "model": {"net": {"channels": [16, 32, 64], "num_res_blocks": 1}, "lr": 5e-4, "warmup_steps": 50,
                  "ema_half_life": 100.0},
        "trainer": {"max_steps": 800, "checkpoint_every": 200, "val_every": 200},
        "sampling": {"sampler": "dpmpp_2m", "steps": 12, "sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0,
                     "exact_gaussian": True, "inflation": None, "calibrate": True, "calibration_members": 8},
        "forecast": {"init_period": None, "leads": 3, "members": 16, "normal_years": None, "normal_uncertainty": 0.0,
                     "layout": "sciffusion", "batch_inits": 64},
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
        Flag("--forcings", "data.forcings", "time-varying fields that are given, not forecast (insolation, prescribed "
             "SST, a scenario's forcing): conditions at each step's valid time; the forecast data must hold them "
             "over every valid time", nargs="+"),
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
        Flag("--batch-inits", "forecast.batch_inits", "initial times forecast (and held in memory) at a time; the "
             "output is appended batch after batch (.nc, or a .zarr store)", int),
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
        Flag("--batch-inits", "evaluate.batch_inits", "initial times scored (and held in memory, with their truth and "
             "baselines) at a time; the scores are accumulated", int),
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
        forcings = [d["forcings"]] if isinstance(d.get("forcings"), str) else list(d.get("forcings") or [])
        wanted = None if d["variables"] is None else [*d["variables"], *forcings]
        ds, grid = open_fields(d["path"], wanted, levels=d.get("levels"))
        missing = [f for f in forcings if f not in ds.data_vars]
        if missing:
            raise ValueError(f"forcing(s) {missing} not in the data; variables are {list(ds.data_vars)}")
        variables = [v for v in ds.data_vars if v not in forcings]
        if not variables:
            raise ValueError(f"every variable is a forcing ({forcings}); there is nothing to forecast")
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
        pos = calendar(times)[2]  # windows of k + 1 consecutive calendar steps: none straddles a gap in time
        ends = [t for t in range(k - 1, len(times) - 1) if contiguous(pos, t + 1, k + 1)]
        if not ends:
            raise ValueError(f"no {k + 1} consecutive time steps in the training period (gaps in time)")
        n_val = int(round(len(ends) * float(d["val_fraction"])))
        # With holdout_stats the statistics leave the validation tail out too, so the calibration windows carry the
        # same out-of-sample error (an extrapolated trend, a drifting climatology) as real forecasts will.
        T = len(times) - (n_val if d.get("holdout_stats", False) else 0)

        def read(lo: int, hi: int) -> np.ndarray:
            return field_array(train.isel({grid.time: slice(lo, hi)}), variables)

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

        ar1, anom_std, resid_std, masked = fit_anomaly_stats(anomalies_of, T, chunk, breaks=np.diff(pos) > 1)
        if not (np.isfinite(resid_std).all() and (resid_std > 0).all()):
            raise ValueError(f"a variable of {variables} is constant or empty over the training period")
        static = read_static(d, grid)
        f_mean, f_std = forcing_stats(train.isel({grid.time: slice(0, T)}), forcings)
        prep = Preprocess(k, clim, ar1, anom_std, resid_std, static, masked=masked, forcing_mean=f_mean,
                          forcing_std=f_std)
        w = grid.cell_weights()
        split = {"train": ends[:len(ends) - n_val], "val": ends[len(ends) - n_val:]}
        tr, va = (ForecastWindows(train, variables, grid.time, split[s], keys, when, prep, w, offsets, forcings)
                  for s in ("train", "val"))
        dm = DiffusionDataModule(tr, va if n_val else None, batch_size=int(d["batch_size"]),
                                 num_workers=int(d.get("num_workers", 0)), seed=int(config["seed"]))
        C = len(variables)
        net = {"dims": 2, "in_channels": C, "cond_channels": prep.cond_channels(C), "periodic": [False, grid.periodic]}
        meta = {"variables": variables, "grid": grid.to_dict(), "climatology": clim.kind, "masked": prep.masked,
                "step_years": step_years, "normal_years": normal_years,
                "attrs": {v: dict(ds[v].attrs) for v in variables}, "coord_attrs": {
                    c: dict(ds[c].attrs) for c in (grid.lat, grid.lon)},
                "train_period": [str(times[0]), str(times[-1])], "source": source_label(d["path"]),
                "forcings": forcings, "forcing_attrs": {f: dict(ds[f].attrs) for f in forcings}}
        calibrate = spread_calibrator(va, config["sampling"], int(config["seed"]))
        return run_training(config, dm, net, meta, prep.state_dict(), calibrate)

    # --- sampling --------------------------------------------------------------------------------------------
    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        layout = config["forecast"].get("layout") or "sciffusion"
        if layout not in LAYOUTS:  # before sampling, not after
            raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
        f = config["forecast"]
        shard = current_shard()
        batches = forecast_batches(run, config["data"]["path"], init_period=f.get("init_period"),
                                   batch=int(f.get("batch_inits") or 64), leads=int(f["leads"]),
                                   members=int(f["members"]), seed=int(config["seed"]),
                                   sampling=config.get("sampling", {}), progress=True,
                                   normal_years=f.get("normal_years"),
                                   normal_uncertainty=float(f.get("normal_uncertainty") or 0.0), shard=shard)
        # One batch of initial times in memory at a time, appended to the output as it comes; under torchrun each
        # process makes every WORLD_SIZE-th batch and process 0 joins them.
        return write_sharded(((i, to_layout(b, layout)) for i, b in batches), config["out"], INIT_DIM[layout],
                             shard)

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        e = config.get("evaluate", {})
        if isinstance(config.get("run"), list):
            return self.evaluate_runs(config)
        if e.get("nfe"):
            return self.evaluate_nfe(config)
        if not e.get("forecast"):
            raise ValueError("give --forecast FILE to score, or --run RUN with --nfe N... to compare sampling costs")
        written = open_output(e["forecast"], "forecast", lazy=True)
        fc = to_internal(written)  # scored a batch of initial times at a time
        base = e.get("baselines") or list(BASELINES)
        base = () if base in (["none"], "none") else tuple([base] if isinstance(base, str) else base)
        if base and not config.get("run"):
            raise ValueError("baselines need --run (they are fitted on the run's training period); or --baselines none")
        table = evaluate_forecast(fc, config["data"]["path"], config.get("run"), baselines=base,
                                  members=int(e.get("members", 16)),
                                  seed=recorded_seed(fc.attrs, config.get("seed")),
                                  batch=int(e.get("batch_inits") or 64))
        if e.get("plots"):
            from .plots import forecast_plots  # matplotlib: only with --plots

            # The maps show the last initial time: its truth is all that is read.
            last = written.isel({INIT_DIM[written.attrs.get("sciffusion_layout", "sciffusion")]: [-1]})
            truth = split_levels(to_internal(truth_for(last, config["data"]["path"])))
            forecast_plots(table, split_levels(fc.isel(init_time=[-1])), truth, e["plots"], lead_unit(written))
        return report_scores(table, format_table(table), config.get("out"))

    def evaluate_runs(self, config: dict[str, Any]) -> pathlib.Path | str:
        """``--run A B C``: forecast with each run from the same initial times, members and seeds, and score them
        side by side: each run's scores and sampling wall time, and the Diebold-Mariano test of every pair."""
        e, data = config["evaluate"], config["data"]["path"]
        if e.get("nfe") or e.get("forecast"):
            raise ValueError("several --run forecast and compare; give neither --forecast nor --nfe with them")
        runs = [str(r) for r in config["run"]]
        names = [pathlib.Path(r).name for r in runs]
        labels = names if len(set(names)) == len(names) else runs
        forecasts, info = {}, {}
        for label, path in zip(labels, runs):
            run = load_trained(path, task=self.name)
            start = time.perf_counter()
            fc = forecast(run, data, init_period=e.get("init_period"), leads=int(e.get("leads") or 3),
                          members=int(e.get("members") or 16), seed=int(config.get("seed") or 0),
                          normal_uncertainty=float(e.get("normal_uncertainty") or 0.0))
            spec = run.sampling_spec()
            info[label] = {"run": path, "family": run.family, "sampling_seconds": time.perf_counter() - start,
                           "nfe_per_member_and_lead": nfe(spec.sampler, spec.steps)}
            forecasts[label] = to_internal(fc)
        common = sorted(set.intersection(*(set(fc["init_time"].values) for fc in forecasts.values())))
        if len(common) < 3:
            raise ValueError(f"the runs share {len(common)} initial time(s) in the period; need at least 3")
        forecasts = {k: fc.sel(init_time=common) for k, fc in forecasts.items()}
        first = next(iter(forecasts.values()))
        scores = ForecastScores().update(forecasts, truth_for(first, data))
        table = scores.compute()
        pairs = {v: {f"{a} vs {b}": scores.versus(v, a, b) for i, a in enumerate(labels) for b in labels[i + 1:]}
                 for v in table}
        report = {"runs": info, "scores": table, "pairs": pairs, "init_times": len(common)}
        return report_scores(report, format_runs(report), config.get("out"))

    def evaluate_nfe(self, config: dict[str, Any]) -> pathlib.Path | str:
        """``--nfe``: the run's forecasts at each NFE (same seeds), scored by the mean fair CRPS over variables and
        leads; the report names the cheapest setting within 1% of the converged CRPS."""
        from ...tasks.nfe import format_nfe, nfe_settings, nfe_sweep, plot_nfe, store_sampling

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


@register
class Downscale(Task):
    name = "downscale"
    verb = "downscale"
    out_suffixes = {"sample": NETCDF_OUT}
    summary = "downscaling of gridded fields to an ensemble on a finer grid (netCDF in, netCDF out)"
    defaults: dict[str, Any] = {
        "data": {"variables": None, "levels": None, "train_period": None, "factor": 4, "static": None,
                 "static_path": None, "val_fraction": 0.15, "batch_size": 16, "load_max_gb": 2.0, "stats_chunk": 64},
        "model": {"net": {"channels": [16, 32, 64], "num_res_blocks": 1}, "lr": 5e-4, "warmup_steps": 50,
                  "ema_half_life": 100.0},
        "trainer": {"max_steps": 800, "checkpoint_every": 200, "val_every": 200},
        "sampling": {"sampler": "dpmpp_2m", "steps": 12, "sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0,
                     "exact_gaussian": True, "inflation": None, "calibrate": True, "calibration_members": 8},
        "downscale": {"period": None, "members": 8, "batch_times": 64},
        "evaluate": {"batch_times": 64},
    }
    train_flags = (
        Flag("--data", "data.path", "fine fields: " + DATA_HELP, nargs="+"),
        Flag("--variables", "data.variables", "variables to downscale, or single levels of them (t_850)",
             nargs="+"),
        Flag("--levels", "data.levels", LEVELS_HELP, float, nargs="+"),
        Flag("--factor", "data.factor", "integer refinement factor (coarse cell = factor x factor fine cells)", int),
        Flag("--train-period", "data.train_period", "training period, e.g. 1860/2029 (its tail validates)"),
        Flag("--static", "data.static", "static fine-grid fields to condition on (orography, land-sea mask)",
             nargs="+"),
    )
    sample_flags = (
        Flag("--data", "data.path", "coarse fields on the run's coarse grid, or fine fields (coarsened first): "
             + DATA_HELP, nargs="+"),
        Flag("--period", "downscale.period", "time steps to downscale, e.g. 2030/2099"),
        Flag("--members", "downscale.members", "ensemble members", int),
        Flag("--inflation", "sampling.inflation", "override the calibrated spread inflation", float),
        Flag("--batch-times", "downscale.batch_times", "time steps made at a time (memory holds one batch; the "
             "output is the same for any batch)", int),
    )
    required_sample = ("run", "out", "data.path")
    evaluate_flags = (Flag("--downscaled", "evaluate.downscaled", "file written by 'sciffusion downscale'"),
                      Flag("--data", "data.path", "the fine truth: " + DATA_HELP, nargs="+"),
                      Flag("--batch-times", "evaluate.batch_times", "time steps scored at a time (memory holds one "
                           "batch; the scores are the same for any batch)", int))
    required_evaluate = ("evaluate.downscaled", "data.path", "run")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        d = config["data"]
        f = int(d["factor"])
        if f < 2:
            raise ValueError(f"factor must be an integer >= 2; got {d['factor']}")
        ds, full_grid = open_fields(d["path"], d["variables"], levels=d.get("levels"))
        ds, grid = crop_to_factor(ds, full_grid, f)
        static = read_static(d, full_grid)
        static = None if static is None else static[:, :grid.shape[0], :grid.shape[1]]
        variables = list(ds.data_vars)
        train = select_period(ds, grid.time, d["train_period"], "train-period")
        if train.sizes[grid.time] < 8:
            raise ValueError(f"the training period has {train.sizes[grid.time]} time steps; need at least 8")
        if train.nbytes < float(d.get("load_max_gb", 2.0)) * 2**30:
            train = train.load()  # small enough: read once, not per sample
        prep = fit_downscale_prep(lambda lo, hi: field_array(train.isel({grid.time: slice(lo, hi)}), variables),
                                  train.sizes[grid.time], f, grid.periodic, static, int(d.get("stats_chunk", 64)))
        T = train.sizes[grid.time]
        n_val = int(round(T * float(d["val_fraction"])))
        w = grid.cell_weights()
        tr = DownscaleSamples(train, variables, grid.time, range(0, T - n_val), prep, w)
        va = DownscaleSamples(train, variables, grid.time, range(T - n_val, T), prep, w)
        dm = DiffusionDataModule(tr, va if n_val else None, batch_size=int(d["batch_size"]),
                                 num_workers=int(d.get("num_workers", 0)), seed=int(config["seed"]))
        C = len(variables)
        net = {"dims": 2, "in_channels": C, "cond_channels": C + (0 if static is None else len(static)),
               "periodic": [False, grid.periodic]}
        times = train[grid.time].values
        meta = {"variables": variables, "grid": grid.to_dict(), "factor": f,
                "attrs": {v: dict(ds[v].attrs) for v in variables},
                "coord_attrs": {c: dict(ds[c].attrs) for c in (grid.lat, grid.lon)},
                "train_period": [str(times[0]), str(times[-1])], "source": source_label(d["path"])}
        calibrate = spread_calibrator(va, config["sampling"], int(config["seed"]))
        return run_training(config, dm, net, meta, prep.state_dict(), calibrate)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        d, shard = config["downscale"], current_shard()
        run = load_trained(config["run"], task=self.name)
        batches = downscale_batches(run, config["data"]["path"], period=d.get("period"),
                                    members=int(d["members"]), seed=int(config["seed"]),
                                    sampling=config.get("sampling", {}), batch=int(d.get("batch_times") or 64),
                                    shard=shard, progress=True)
        # One batch of time steps in memory at a time, appended to the output as it comes (as the forecast does).
        return write_sharded(batches, config["out"], run.metadata["grid"]["time"], shard)

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        e = config["evaluate"]
        fc = open_output(e["downscaled"], "downscale", lazy=True)  # scored a batch of time steps at a time
        table = evaluate_downscaling(fc, config["data"]["path"], config["run"],
                                     seed=recorded_seed(fc.attrs, config.get("seed")), plots=e.get("plots"),
                                     batch=int(e.get("batch_times") or 64))
        return report_scores(table, format_downscale_table(table), config.get("out"))


def format_runs(report: dict[str, Any]) -> str:
    """The text of :meth:`Forecast.evaluate_runs`: the score table, each run's cost, every pair's DM test."""
    lines = [format_table(report["scores"]), "", f"sampling ({report['init_times']} initial times):"]
    for label, r in report["runs"].items():
        lines.append(f"  {label:<20} {r['family']:<10} {r['sampling_seconds']:8.1f} s, "
                     f"{r['nfe_per_member_and_lead']} network calls per member and lead")
    labels = list(report["runs"])
    for v, pairs in report["pairs"].items():
        lines.append(f"{v}: CRPS difference of each pair in % of the second's, Diebold-Mariano p (per initial time)")
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                cells = "".join(
                    (f"  lead {lead}: {1e2 * dm['mean_diff'] / report['scores'][v][b][lead]['crps']:+.1f}% "
                     f"(p {dm['pvalue']:.3f})").ljust(30) for lead, dm in (pairs[f"{a} vs {b}"] or {}).items())
                lines.append(f"  {f'{a} vs {b}':<30}{cells}")
    return "\n".join(lines)


def train_forecast(data: Any, out: str | pathlib.Path, *, settings: dict[str, Any] | None = None,
                   **options: Any) -> TrainedRun:
    """Train an ensemble forecaster, as ``sciffusion train forecast`` does, and return the run.

    ``data``: an ``xarray.Dataset`` or what ``--data`` takes (files, zarr stores, globs, URLs). ``options``: the
    command's flags as keywords, e.g. ``train_period="1860/2029"``, ``variables=["tas"]``, ``levels=[500, 850]``,
    ``history=2``, ``trend=2``, ``max_steps=800``, ``seed=0``. ``settings``: any other config key, dotted
    (``{"model.lr": 1e-3}``). Forecast with :func:`~sciffusion.domains.climate.forecast.forecast`."""
    return TASKS["forecast"].train_with(data, out, settings=settings, **options)


def train_downscale(data: Any, out: str | pathlib.Path, *, settings: dict[str, Any] | None = None,
                    **options: Any) -> TrainedRun:
    """Train a downscaler on fine fields (coarsened by ``factor`` to make its inputs), as ``sciffusion train
    downscale`` does, and return the run. Keywords as :func:`train_forecast`, plus ``factor=4`` and ``static=``.
    Downscale with :func:`~sciffusion.domains.climate.downscale.downscale`."""
    return TASKS["downscale"].train_with(data, out, settings=settings, **options)
