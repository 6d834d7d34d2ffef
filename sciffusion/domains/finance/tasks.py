"""The finance tasks: the CLI adapters of ``sciffusion train scenarios|impute``, ``scenarios``, ``impute``,
``score-days``, ``score-windows`` and ``evaluate``, and the Python API that trains them (:func:`train_scenarios`,
:func:`train_impute`)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...tasks.base import TASKS, Command, Flag, Task, register, register_command, run_training
from ...tasks.outputs import open_output, recorded_seed, report_scores, state_tensors, write_netcdf
from ...training.checkpoint import atomic_write, source_label
from ...training.data import DiffusionDataModule
from ...training.fit import TrainedRun
from ...training.normalizer import Normalizer
from .anomaly import day_scores, print_detection
from .dcc import DCC
from .features import feature_count
from .garch import GarchT, correlation_factor
from .impute import (
    BASELINES,
    MaskedWindows,
    cond_channels,
    impute,
    impute_baseline,
)
from .impute_scores import format_imputation, imputation_report
from .report import format_report, risk_report
from .scenarios import PCT, ShockModel, read_returns, scenarios
from .selection import net_weight_selector
from .series import period_slice, read_table
from .windows import window_scores

TABLE_FLAGS = (  # what every task training on a daily table takes
    Flag("--kind", "data.kind", "the table holds 'prices' (default) or 'returns' (log, fractions)"),
    Flag("--assets", "data.assets", "columns to model (default: every numeric column)", nargs="+"),
    Flag("--train-period", "data.train_period", "training period, e.g. :2014-12-31 (its last val-days validate)"),
)



@register
class Scenarios(Task):
    name = "scenarios"
    verb = "scenarios"
    summary = "market scenario paths conditioned on recent history (prices CSV/parquet in, netCDF out)"
    defaults: dict[str, Any] = {
        "data": {"kind": "prices", "assets": None, "train_period": None, "context": 60, "horizon": 20, "copula": "ccc",
                 "covariates": None,
                 "val_days": 250, "batch_size": 64, "select_net_weight": True, "selection_paths": 16},
        "model": {"net": {"channels": [32, 64, 64], "num_res_blocks": 1}, "lr": 5e-4, "warmup_steps": 50,
                  "ema_half_life": 100.0, "cond_dropout": 0.1},
        "trainer": {"max_steps": 1000, "checkpoint_every": 250, "val_every": 250, "snapshot_every": 250},
        "sampling": {"sampler": "dpmpp_2m", "steps": 12, "sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0,
                     "exact_gaussian": True, "batch_size": 4096},
        "scenarios": {"origins": None, "every": 1, "paths": 200, "given": None},
        "evaluate": {"long_days": 1000, "long_paths": 16, "weights": None},
    }
    train_flags = TABLE_FLAGS + (
        Flag("--context", "data.context", "days of history each scenario is conditioned on", int),
        Flag("--covariates", "data.covariates", "columns that condition the scenarios but are not simulated "
             "(e.g. VIX, a rate), known up to each origin", str, nargs="+"),
        Flag("--copula", "data.copula", "base law of the joint shocks: ccc (constant correlation, default) or dcc "
             "(DCC(1,1) dynamic correlation)"),
        Flag("--horizon", "data.horizon", "days per scenario path", int),
    )
    sample_flags = (
        Flag("--data", "data.path", "prices (or returns) up to and including the origins"),
        Flag("--origins", "scenarios.origins", "origin dates, e.g. 2015-01-02/2018-12-31 (default: the last day)"),
        Flag("--every", "scenarios.every", "take every k-th trading day of the origin period", int),
        Flag("--paths", "scenarios.paths", "paths per origin", int),
        Flag("--given", "scenarios.given", "fix assets' log returns on days 1..k: ASSET=r1,r2,... or "
             "ASSET:DAYS=TOTAL (spread evenly) or a CSV of asset,day,log_return", str, nargs="+"),
    )
    required_sample = ("run", "out", "data.path")
    evaluate_flags = (
        Flag("--scenarios", "evaluate.scenarios", "scenario file written by 'sciffusion scenarios'"),
        Flag("--long-days", "evaluate.long_days", "length of the long simulated paths for the stylized facts", int),
        Flag("--weights", "evaluate.weights",
             "portfolio weights for the joint scores and VaR backtests: CSV of asset,weight rows or JSON "
             "{asset: weight} (default: equal weights)"),
    )
    required_evaluate = ("evaluate.scenarios", "data.path", "run")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        d = config["data"]
        C, H = int(d["context"]), int(d["horizon"])
        if C < 5 or H < 1:
            raise ValueError(f"context must be >= 5 and horizon >= 1; got {C} and {H}")
        covariates = tuple(d.get("covariates") or ())
        assets = d.get("assets")
        if covariates:
            columns = list(read_table(d["path"]).columns)
            missing = [c for c in covariates if c not in columns]
            if missing:
                raise ValueError(f"covariate(s) {missing} not in the data; columns are {columns[:10]}")
            assets = [a for a in (assets or columns) if a not in covariates]
            if not assets:
                raise ValueError("every column is a covariate: no asset is left to model")
        r, _ = read_returns(d["path"], d.get("kind", "prices"), assets)
        r = r.loc[period_slice(d.get("train_period"))]
        n_val = int(d.get("val_days", 250))
        if len(r) < C + H + n_val + 250:
            raise ValueError(f"the training period has {len(r)} returns; need at least {C + H + n_val + 250} "
                             f"(context {C} + horizon {H} + {n_val} validation days + 250)")
        copula = d.get("copula", "ccc")
        if copula not in ("ccc", "dcc"):
            raise ValueError(f"data.copula must be 'ccc' or 'dcc'; got {copula!r}")
        garch = GarchT.fit(r * PCT)
        g, s2 = garch.gaussianised(r.to_numpy() * PCT)
        model = ShockModel(garch, np.sqrt(np.nanmean(s2, axis=0)), correlation_factor(g), C, H,
                           DCC.fit(g) if copula == "dcc" else None, covariates)
        cov = model.read_covariates(d["path"], r.index)
        if cov is not None:
            model.cov_mean, model.cov_std = np.nanmean(cov, axis=0), np.nanstd(cov, axis=0)
            flat = [c for c, v in zip(covariates, model.cov_std) if not v > 0]
            if flat:
                raise ValueError(f"covariate(s) {flat} are constant or missing in the training period")
        log_vol = 0.5 * np.log(s2[1:]) - np.log(model.sigma_bar)
        ends = np.arange(C - 1, len(r) - H)
        x = np.empty((len(ends), r.shape[1], H), dtype=np.float32)         # (N, A, H), NaN = missing
        for lo in range(0, len(ends), 256):  # in chunks: one DCC factor per window is (N, A, A)
            e = ends[lo:lo + 256]
            x[lo:lo + 256] = model.whiten(np.stack([g[i + 1:i + 1 + H].T for i in e]), model.factors(g, e))
        cond = model.cond(g, log_vol, ends, cov)
        # The whitened shocks are N(0, I) under the base by construction: with DCC, keep that scale exactly (a fitted
        # per-channel std would turn the base into N(mean, std^2) and bend its correlation away from DCC's forecast,
        # 2.6% on the variogram score of a synthetic panel). CCC keeps the fitted normaliser (in sample it is 0 / 1).
        unit = Normalizer(torch.zeros(r.shape[1]), torch.ones(r.shape[1])) if model.dcc is not None else None
        if unit is not None and not config["model"].get("sigma_data"):
            config["model"]["sigma_data"] = 1.0  # and so is sigma_data: D_G is then the DCC base exactly
        dm = DiffusionDataModule.from_arrays(torch.from_numpy(x), torch.from_numpy(cond), normalizer=unit,
                                             mask=torch.from_numpy(np.isfinite(x)),
                                             val_fraction=min(n_val / len(ends), 0.5),
                                             batch_size=int(d["batch_size"]), seed=int(config["seed"]))
        A = r.shape[1]
        net = {"dims": 1, "in_channels": A, "cond_channels": feature_count(A, C) + 2 * len(covariates) + 1}
        meta = {"assets": list(r.columns), "kind": d.get("kind", "prices"),
                "train_period": [str(r.index[0].date()), str(r.index[-1].date())], "source": source_label(d["path"]),
                "garch": {k: v.tolist() for k, v in vars(garch).items()}, "copula": copula,
                "covariates": list(covariates)}
        if model.dcc is not None:
            meta["dcc"] = {"a": model.dcc.a, "b": model.dcc.b}
        select = None
        n_windows = len(dm.val) if dm.val is not None else 0
        if d.get("select_net_weight", True) and n_windows:  # do no harm: never worse on validation than CCC
            val_ends = ends[len(ends) - n_windows:]
            s2_val = s2[val_ends + 1]
            L_val = model.factors(g, val_ends)

            def to_returns(z: torch.Tensor, rows: np.ndarray) -> np.ndarray:
                g_paths = model.colour(dm.normalizer.denormalize(z).numpy().astype(np.float64), L_val, rows)
                return model.paths(g_paths, s2_val[rows])[0]

            y_val = np.stack([r.to_numpy()[e + 1:e + 1 + H] for e in val_ends])
            select = net_weight_selector(cond[len(ends) - n_windows:], y_val, to_returns, config["sampling"],
                                         int(config["seed"]), paths=int(d.get("selection_paths", 16)),
                                         run_dir=config["out"], base=f"{copula.upper()}-GJR-t")
        return run_training(config, dm, net, meta, model.state_dict(), select)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        s = config["scenarios"]
        ds = scenarios(config["run"], config["data"]["path"], origins=s.get("origins"), every=int(s.get("every", 1)),
                       paths=int(s["paths"]), seed=int(config["seed"]), sampling=config.get("sampling", {}),
                       progress=True, given=s.get("given"))
        return write_netcdf(ds, config["out"])

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        e = config.get("evaluate", {})
        scen = open_output(e["scenarios"], "scenarios")
        report = risk_report(scen, config["data"]["path"], config["run"], seed=recorded_seed(scen.attrs,
                                                                                             config.get("seed")),
                             long_days=int(e.get("long_days", 1000)), long_paths=int(e.get("long_paths", 16)),
                             plots=e.get("plots"), weights=e.get("weights"))
        return report_scores(report, format_report(report), config.get("out"))


@register
class Impute(Task):
    name = "impute"
    verb = "impute"
    summary = "fill missing stretches of daily prices/returns with sampled paths (CSV/parquet in, netCDF out)"
    defaults: dict[str, Any] = {
        "data": {"kind": "prices", "assets": None, "train_period": None, "window": 64, "max_gap": 20,
                 "val_days": 250, "batch_size": 64},
        "model": {"net": {"channels": [32, 64, 64], "num_res_blocks": 1}, "lr": 5e-4, "warmup_steps": 50,
                  "ema_half_life": 100.0},
        "trainer": {"max_steps": 1000, "checkpoint_every": 250, "val_every": 250},
        "sampling": {"sampler": "dpmpp_2m", "steps": 16, "sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0,
                     "exact_gaussian": True, "batch_size": 4096},
        "impute": {"samples": 100, "method": "sciffusion"},
    }
    train_flags = TABLE_FLAGS + (
        Flag("--window", "data.window", "days the model sees around a gap (a multiple of 4)", int),
        Flag("--max-gap", "data.max_gap", "longest hidden stretch in training, days", int),
    )
    sample_flags = (
        Flag("--data", "data.path", "the table with gaps (NaN or empty cells)"),
        Flag("--samples", "impute.samples", "imputations drawn per gap", int),
        Flag("--method", "impute.method", f"sciffusion (default) or a baseline: {', '.join(BASELINES)}"),
    )
    required_sample = ("run", "out", "data.path")
    evaluate_flags = (
        Flag("--imputed", "evaluate.imputed", "file written by 'sciffusion impute'"),
    )
    required_evaluate = ("evaluate.imputed", "data.path", "run")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        d = config["data"]
        W, n_val, max_gap = int(d["window"]), int(d.get("val_days", 250)), int(d["max_gap"])
        if W % 4 or W < 16:
            raise ValueError(f"window must be a multiple of 4 and >= 16 (the U-Net halves it twice); got {W}")
        if not 1 <= max_gap <= W // 2:
            raise ValueError(f"max_gap must be in 1 .. window/2 = {W // 2}; got {max_gap}")
        kind = d.get("kind", "prices")
        r, _ = read_returns(d["path"], kind, d.get("assets"))
        r = r.loc[period_slice(d.get("train_period"))]
        if len(r) < n_val + W + 250:
            raise ValueError(f"the training period has {len(r)} returns; need at least {n_val + W + 250} "
                             f"(window {W} + {n_val} validation days + 250)")
        garch = GarchT.fit(r * PCT)
        x = r.to_numpy() * PCT
        sigma = np.sqrt(garch.filter(x)[:-1])
        z = (x - garch.mu) / sigma
        g = garch.to_normal(z)
        T, A = g.shape
        steps, bs, seed = int(config["trainer"]["max_steps"]), int(d["batch_size"]), int(config["seed"])
        common = dict(window=W, seed=seed, totals=kind == "prices", max_gap=max_gap)
        chol = correlation_factor(z)
        train = MaskedWindows(g, z, sigma, chol @ chol.T, np.arange(0, T - n_val - W + 1),
                              length=max(steps * bs, bs), **common)
        val = MaskedWindows(g, z, sigma, chol @ chol.T, np.arange(T - n_val, T - W + 1),
                            length=512, **{**common, "seed": seed + 1})
        identity = Normalizer(torch.zeros(A), torch.ones(A))  # targets are standardised by construction
        dm = DiffusionDataModule(train, val, batch_size=bs, seed=seed, normalizer=identity)
        net = {"dims": 1, "in_channels": A, "cond_channels": cond_channels(A)}
        meta = {"assets": list(r.columns), "kind": kind, "source": source_label(d["path"]),
                "train_period": [str(r.index[0].date()), str(r.index[-1].date())]}
        state = state_tensors({**garch.state(), "chol": chol})
        return run_training(config, dm, net, meta, state)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        s = config["impute"]
        method = s.get("method") or "sciffusion"
        kw = dict(samples=int(s["samples"]), seed=int(config["seed"]))
        ds = (impute(config["run"], config["data"]["path"], sampling=config.get("sampling", {}), progress=True,
                     **kw) if method == "sciffusion" else impute_baseline(config["run"], config["data"]["path"],
                                                                         method, **kw))
        return write_netcdf(ds, config["out"])

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        ds = open_output(config["evaluate"]["imputed"], "impute")
        full = read_table(config["data"]["path"], list(ds["asset"].values))  # read once: scores and plot
        table = imputation_report(ds, full, config["run"], seed=recorded_seed(ds.attrs, config.get("seed")))
        if config.get("evaluate", {}).get("plots"):
            from .plots import imputation_plot

            truth = full.reindex(pd.DatetimeIndex(ds["time"].values)).to_numpy()
            if ds.attrs.get("kind") != "prices":
                truth = np.nancumsum(truth, axis=0)
            table["plots"] = [imputation_plot(ds, truth, config["evaluate"]["plots"])]
        return report_scores(table, format_imputation(table), config.get("out"))


@register_command
class DayScores(Command):
    verb = "score-days"
    reads_runs_of = "impute"
    summary = "anomaly scores of observed daily returns from an imputation run (prices in, CSV out)"
    defaults: dict[str, Any] = {"score": {"period": None, "samples": 32, "groups": 4, "labels": None}}
    flags_of_run = (
        Flag("--data", "data.path", "prices (or returns) to score, with the history before the period"),
        Flag("--period", "score.period", "days to score, e.g. 2015-01-01/2018-12-31 (default: all)"),
        Flag("--samples", "score.samples", "imputations per hidden entry", int),
        Flag("--labels", "score.labels", "CSV of known anomalies (columns date, asset): print AUROC/AUPRC"),
    )
    required_run = ("run", "out", "data.path")

    def run(self, config: dict[str, Any]) -> Any:
        s = config["score"]
        frame = day_scores(config["run"], config["data"]["path"], s.get("period"), samples=int(s["samples"]),
                           groups=int(s.get("groups", 4)), seed=int(config["seed"]),
                           sampling=config.get("sampling", {}))
        atomic_write(config["out"], frame.to_csv().encode())
        if s.get("labels"):
            print_detection(frame, s["labels"], ["date", "asset"])
        return config["out"]


@register_command
class WindowScores(Command):
    verb = "score-windows"
    reads_runs_of = "scenarios"
    summary = "anomaly scores (negative log-likelihood) of observed H-day windows from a scenario run (CSV out)"
    defaults: dict[str, Any] = {"score": {"period": None, "every": None, "levels": 24, "draws": 8, "labels": None}}
    flags_of_run = (
        Flag("--data", "data.path", "prices (or returns) to score, with the history before the period"),
        Flag("--period", "score.period", "windows starting in this period, e.g. 2015-01-01/2018-12-31"),
        Flag("--every", "score.every", "a window after every k-th day (default: the horizon, windows tile)", int),
        Flag("--levels", "score.levels", "noise levels of the likelihood bound", int),
        Flag("--draws", "score.draws", "noise draws per level (even)", int),
        Flag("--labels", "score.labels", "CSV of anomalous windows (column origin): print AUROC/AUPRC"),
    )
    required_run = ("run", "out", "data.path")

    def run(self, config: dict[str, Any]) -> Any:
        s = config["score"]
        frame = window_scores(config["run"], config["data"]["path"], s.get("period"), every=s.get("every"),
                              levels=int(s["levels"]), draws=int(s["draws"]), seed=int(config["seed"]),
                              device=config.get("sampling", {}).get("device"))
        atomic_write(config["out"], frame.to_csv().encode())
        if s.get("labels"):
            print_detection(frame, s["labels"], ["origin"])
        return config["out"]


def train_scenarios(data: Any, out: str | pathlib.Path, *, settings: dict[str, Any] | None = None,
                    **options: Any) -> TrainedRun:
    """Train a scenario generator, as ``sciffusion train scenarios`` does, and return the run.

    ``data``: a ``pandas.DataFrame`` (wide: dates x assets; or long: date, ticker, value) or a CSV/parquet path.
    ``options``: the command's flags as keywords, e.g. ``kind="prices"``, ``assets=["SPX", "NDX"]``,
    ``train_period=":2014-12-31"``, ``horizon=20``, ``copula="dcc"``, ``covariates=["vix"]``, ``max_steps=500``,
    ``seed=0``. ``settings``: any other config key, dotted (``{"model.lr": 1e-3}``). Draw with
    :func:`~sciffusion.domains.finance.scenarios.scenarios`."""
    return TASKS["scenarios"].train_with(data, out, settings=settings, **options)


def train_impute(data: Any, out: str | pathlib.Path, *, settings: dict[str, Any] | None = None,
                 **options: Any) -> TrainedRun:
    """Train an imputer of missing stretches, as ``sciffusion train impute`` does, and return the run. Keywords
    as :func:`train_scenarios`. Fill gaps with :func:`~sciffusion.domains.finance.impute.impute`."""
    return TASKS["impute"].train_with(data, out, settings=settings, **options)
