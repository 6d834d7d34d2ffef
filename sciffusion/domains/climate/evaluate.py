"""Baselines fitted on the run's training period, the truth for a forecast, and the score table.

Every baseline goes through the same :class:`~.forecast.Inits` and :func:`~.forecast.to_dataset` as the diffusion
forecast, and every forecast is scored by the same :func:`~.scores.ensemble_scores`:

* ``persistence``: the initial anomaly kept (plus the climatology of the valid time); deterministic.
* ``climatology``: probabilistic climatology, one member per training year (the training anomalies of the valid
  time's calendar group, or for daily data of its time of year), as WeatherBench 2's climatological ensemble.
* ``damped_persistence``: per-cell AR(1), mean ``phi^l a0`` and Gaussian noise of variance ``var (1 - phi^(2l))``.
* ``lim``: linear inverse model in the leading EOFs with its noise covariance (:class:`~.stats.LIM`).
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import numpy as np
import xarray as xr

from ...metrics import diebold_mariano, newey_west_lag
from ...training.fit import TrainedRun, load_trained
from .conventions import calendar, from_layout, steps_after, to_internal, to_layout
from .fields import field_array, open_fields, output_coord
from .forecast import initial_states, normal_shifts, to_dataset, training_anomalies
from .levels import split_levels, stack_levels
from .scores import EnsembleScores, rank_histogram
from .stats import LIM, same_time_of_year

BASELINES = ("persistence", "climatology", "damped_persistence", "lim")


class Baselines:
    """The baselines of a run, fitted once on its training period (the training anomalies, the LIM) and forecasting
    any batch of initial times (:meth:`forecasts`) for the same leads and grid as :func:`~.forecast.forecast` (and
    the same recent normal: ``normal_years``). With ``normal_uncertainty`` the two ensemble baselines that start from
    the initial anomaly (damped persistence, LIM) get one bootstrapped normal per member, as the model's members do
    (member ``m``'s is the model's member ``m``'s at the same seed); persistence and climatology keep the run's. The
    stochastic baselines draw from one generator seeded with ``seed`` that batch after batch continues: one batch
    gives exactly the draws of a one-shot call."""

    def __init__(self, run: TrainedRun | str | pathlib.Path, *, members: int = 16, seed: int = 0,
                 which: tuple[str, ...] = BASELINES, normal_years: float = 0.0,
                 normal_uncertainty: float = 0.0) -> None:
        unknown = set(which) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {BASELINES}")
        self.run = load_trained(run, task="forecast")
        self.which, self.members, self.seed = tuple(which), int(members), int(seed)
        self.normal_years, self.normal_uncertainty = float(normal_years), float(normal_uncertainty)
        self.rng = np.random.default_rng(seed)
        self._train: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lim: LIM | None = None

    def forecasts(self, data, *, init_period: str | None = None, init_times=None, leads: int = 3
                  ) -> dict[str, xr.Dataset]:
        """``{baseline: forecast}`` from the initial times in ``init_period`` (or exactly ``init_times``)."""
        run, members, shift_years = self.run, self.members, self.normal_uncertainty
        st = initial_states(run, data, init_period, self.normal_years, init_times)
        if self._train is None:  # the training period is read once, whatever the number of batches
            self._train = training_anomalies(run, st)
        a_train, keys_train, when_train, breaks = self._train
        a0 = st.a_hist[:, -1]                                   # (I, C, H, W)
        I, C, H, W = a0.shape
        valid = np.isfinite(a0)
        rng = self.rng
        ar1 = st.prep.ar1
        shift = normal_shifts(run, st, members, shift_years, self.seed)
        a0m = a0[:, None] if shift is None else a0[:, None] - shift(*st.past_time(0))       # (I, 1 or M, C, H, W)
        out: dict[str, xr.Dataset] = {}
        for name in self.which:
            if name == "persistence":
                an = np.stack([a0[:, None]] * leads, axis=1)                          # (I, L, 1, C, H, W)
            elif name == "climatology" and st.prep.clim.kind == "doy":  # the same time of year in each training year
                an = np.stack([a_train[same_time_of_year(when_train, st.when[st.index] + lead * st.step_years,
                                                         st.step_years)] for lead in range(1, leads + 1)], axis=1)
            elif name == "climatology":
                G = st.prep.clim.groups
                per_group = [a_train[keys_train % G == g] for g in range(G)]
                M = min(len(p) for p in per_group if len(p)) if any(len(p) for p in per_group) else 0
                an = np.stack([np.stack([per_group[(st.keys[i] + lead) % G][-M:] for i in st.index])
                               for lead in range(1, leads + 1)], axis=1)              # (I, L, M, C, H, W)
            elif name == "damped_persistence":
                an = np.stack([ar1.mean(a0m, lead) + ar1.std(lead) * rng.standard_normal((I, members, C, H, W))
                               for lead in range(1, leads + 1)], axis=1)
            else:
                if self._lim is None:
                    self._lim = LIM.fit(a_train, st.grid.cell_weights(), breaks=breaks)
                lim = self._lim
                an = np.stack([lim.ensemble(np.nan_to_num(a0m[i] if shift is not None else a0[i]), leads, members,
                                            rng) for i in range(I)])
                an = an.transpose(0, 2, 1, 3, 4, 5)                                   # (I, L, M, C, H, W)
            an = np.where(valid[:, None, None], an, np.nan)
            fields = an + np.stack([st.clim_at_lead(lead) for lead in range(1, leads + 1)], axis=1)[:, :, None]
            if shift is not None and name in ("damped_persistence", "lim"):
                fields = fields + np.stack([shift(*st.valid_time(lead)) for lead in range(1, leads + 1)], axis=1)
            out[name] = to_dataset(fields.astype(np.float32), st, f"{name} baseline",
                                   f"fitted on {run.metadata['train_period'][0]} .. {run.metadata['train_period'][1]}")
        return out


def baseline_forecasts(run: TrainedRun | str | pathlib.Path, data, *, init_period: str | None = None,
                       leads: int = 3, members: int = 16, seed: int = 0,
                       which: tuple[str, ...] = BASELINES, normal_years: float = 0.0,
                       normal_uncertainty: float = 0.0) -> dict[str, xr.Dataset]:
    """The baselines' forecasts from every initial time in ``init_period`` in one piece (:class:`Baselines`)."""
    return Baselines(run, members=members, seed=seed, which=which, normal_years=normal_years,
                     normal_uncertainty=normal_uncertainty).forecasts(data, init_period=init_period, leads=leads)


def truth_for(fc: xr.Dataset, data: str | pathlib.Path | xr.Dataset) -> xr.Dataset:
    """The observed fields at each (initial time, lead) of ``fc`` (NaN past the end of the data), in ``fc``'s own
    layout, lead coordinate and levels, so that ``fc - truth`` lines up."""
    layout = fc.attrs.get("sciffusion_layout", "sciffusion")
    named = from_layout(fc)
    flat = split_levels(to_internal(fc))
    variables = [str(v) for v in flat.data_vars]
    ds, g = open_fields(data, variables, units={v: flat[v].attrs.get("units") for v in variables})
    times = list(ds[g.time].values)
    row_of = {t: i for i, t in enumerate(times)}
    missing = [t for t in flat["init_time"].values if t not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} initial time(s) of the forecast are not in the data (first: {missing[0]})")
    I, L = flat.sizes["init_time"], flat.sizes["lead_time"]
    pos = calendar(times)[2]  # leads count calendar steps: a valid time in a gap has no truth (NaN), as past the end
    inits = [row_of[t0] for t0 in flat["init_time"].values]
    steps = [int(step) for step in flat["lead_time"].values]  # leads in steps of the data
    at = [steps_after(pos, inits, step) for step in steps]
    want = {(a, b): int(at[b][a]) for a in range(I) for b in range(L)}
    in_gap = [(flat["init_time"].values[a], steps[b]) for (a, b), j in want.items()
              if j < 0 and pos[inits[a]] + steps[b] <= pos[-1]]
    if in_gap:
        warnings.warn(f"{len(in_gap)} (initial time, lead) pair(s) have their truth in a gap in time and are not "
                      f"scored (first: {str(in_gap[0][0])[:19]} at lead {in_gap[0][1]})")
    rows = sorted({j for j in want.values() if j >= 0})  # read the valid times only, not the archive
    x = field_array(ds.isel({g.time: rows}), variables) if rows else None
    row = {j: r for r, j in enumerate(rows)}
    out = np.full((I, L, len(variables), *g.shape), np.nan)
    for (a, b), j in want.items():
        if x is not None and j >= 0:
            out[a, b] = x[row[j]]
    dims = ("init_time", "lead_time", g.lat, g.lon)
    truth = xr.Dataset({v: (dims, out[:, :, c], ds[v].attrs) for c, v in enumerate(variables)},
                       coords={"init_time": named["init_time"], "lead_time": named["lead_time"],
                               g.lat: output_coord(ds, g.lat), g.lon: output_coord(ds, g.lon)})
    return to_layout(stack_levels(truth), layout)


class ForecastScores:
    """The score table of several forecasts of the same initial times, streamed over batches of initial times:
    :meth:`update` with each batch's forecasts (``{method: Dataset}``) and truth, :meth:`compute` for the table
    (:func:`score_table`'s). Per variable and method it keeps :class:`~.scores.EnsembleScores` sums, the rank
    histogram's counts and the per-initial-time CRPS the Diebold-Mariano tests need (one number per initial time and
    lead), so memory holds one batch whatever the number of initial times."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], EnsembleScores] = {}
        self.ranks: dict[tuple[str, str], np.ndarray] = {}
        self.per_init: dict[tuple[str, str], list[xr.DataArray]] = {}
        self.order: dict[str, list[str]] = {}  # variables and their methods, in the order first seen

    def update(self, forecasts: dict[str, xr.Dataset], truth: xr.Dataset) -> ForecastScores:
        flat = {name: split_levels(to_internal(fc)) for name, fc in forecasts.items()}  # one entry per level
        truth = split_levels(truth)
        for v in truth.data_vars:
            v = str(v)
            methods = self.order.setdefault(v, [])
            for name, fc in flat.items():
                if name not in methods:
                    methods.append(name)
                key = (v, name)
                # scored per initial time once: the Diebold-Mariano tests take those, the totals their sums
                one = EnsembleScores(keep=("lead_time", "init_time")).update(fc[v], truth[v])
                self.per_init.setdefault(key, []).append(one.compute()["crps"])
                self.sums.setdefault(key, EnsembleScores(keep=("lead_time",))).merge(one.collapse(["init_time"]))
                if fc.sizes["member"] > 1:
                    counts = rank_histogram(fc[v].isel(lead_time=0), truth[v].isel(lead_time=0))
                    self.ranks[key] = counts if key not in self.ranks else self.ranks[key] + counts
        return self

    def compute(self) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for v, methods in self.order.items():
            table[v] = {}
            for name in methods:
                sc = self.sums[(v, name)].compute()
                entry: dict[str, Any] = {
                    str(int(lead)): {k: float(sc[k].sel(lead_time=lead))
                                     for k in ("crps", "rmse", "spread", "spread_skill", "spread_skill_wb2")}
                    for lead in sc["lead_time"].values}
                if (v, name) in self.ranks:
                    entry["rank_histogram"] = self.ranks[(v, name)].tolist()
                table[v][name] = entry
            if "sciffusion" in methods:
                for name in methods:
                    if name != "sciffusion":
                        versus = self.versus(v, "sciffusion", name)
                        if versus is not None:
                            table[v][name]["versus"] = versus
        return table

    def versus(self, variable: str, a: str, b: str) -> dict[str, dict[str, float]] | None:
        """Per lead, the Diebold-Mariano test of the per-initial-time area-mean CRPS of method ``a`` against ``b``
        (``mean_diff`` < 0: ``a`` better), on the initial times both scored; None with 2 or fewer of them.
        Consecutive initial times share errors (a drifting normal, lead overlap), so the Newey-West lag is the larger
        of lead - 1 and the usual automatic lag for their number."""
        ours = xr.concat(self.per_init[(variable, a)], "init_time")
        theirs = xr.concat(self.per_init[(variable, b)], "init_time")
        if ours.sizes["init_time"] <= 2:
            return None
        out = {}
        for lead in ours["lead_time"].values:
            x, y = ours.sel(lead_time=lead).values, theirs.sel(lead_time=lead).values
            n = int((np.isfinite(x) & np.isfinite(y)).sum())
            if n > 2:
                lag = min(max(int(lead) - 1, newey_west_lag(n)), n - 1)
                out[str(int(lead))] = diebold_mariano(x, y, lag)
        return out


def score_table(forecasts: dict[str, xr.Dataset], truth: xr.Dataset) -> dict[str, Any]:
    """``{variable: {method: {lead: {crps, rmse, spread, spread_skill, spread_skill_wb2}, "rank_histogram": [...],
    "versus": {...}}}}`` (:class:`ForecastScores` with one batch).

    With a ``"sciffusion"`` forecast among them, every other method's ``versus`` holds, per lead, the Diebold-Mariano
    test of the per-initial-time area-mean CRPS of sciffusion against it (``mean_diff`` < 0: sciffusion better).
    Consecutive initial times share errors (a drifting normal, lead overlap), so the Newey-West lag is the larger of
    lead - 1 and the usual automatic lag for their number."""
    return ForecastScores().update(forecasts, truth).compute()


def leads_of(entry: dict[str, Any]) -> list[str]:
    """The lead keys of a method's entry in a :func:`score_table` (its other keys are summaries)."""
    return [k for k in entry if k.isdigit()]


def mean_over_leads(table: dict[str, Any], method: str = "sciffusion") -> dict[str, float]:
    """A method's CRPS and spread/skill in a :func:`score_table`, averaged over every variable and lead (one
    number per score: what an NFE sweep compares)."""
    cells = [entry[lead] for methods in table.values() for entry in [methods[method]] for lead in leads_of(entry)]
    return {k: float(np.mean([c[k] for c in cells])) for k in ("crps", "spread_skill")}


def format_table(table: dict[str, Any]) -> str:
    lines = []
    for v, methods in table.items():
        leads = leads_of(next(iter(methods.values())))
        lines.append(f"{v}: area-weighted fair CRPS / ensemble-mean RMSE / spread-skill by lead (spread-skill: "
                     f"sqrt((M+1)/M) spread / RMSE as GenCast; WeatherBench 2's spread / RMSE is spread_skill_wb2 "
                     f"in the JSON)")
        lines.append(f"  {'method':<20}" + "".join(f"  lead {lead:<24}" for lead in leads))
        for name, entry in methods.items():
            cells = "".join(f"  {entry[lead]['crps']:.4f} / {entry[lead]['rmse']:.4f} / "
                            f"{entry[lead]['spread_skill']:.2f}".ljust(31) for lead in leads)
            lines.append(f"  {name:<20}{cells}")
        versus = {name: e["versus"] for name, e in methods.items() if e.get("versus")}
        if versus:
            lines.append("  sciffusion against each method: CRPS difference in % of the method's, Diebold-Mariano p "
                         "(per initial time; negative = sciffusion better)")
            for name, per_lead in versus.items():
                cells = "".join(
                    (f"  {1e2 * per_lead[lead]['mean_diff'] / methods[name][lead]['crps']:+.1f}% "
                     f"(p {per_lead[lead]['pvalue']:.3f})" if lead in per_lead else "  -").ljust(31)
                    for lead in leads)
                lines.append(f"  {name:<20}{cells}")
    return "\n".join(lines)


def evaluate_forecast(forecast_ds: xr.Dataset, data, run: TrainedRun | str | pathlib.Path | None = None, *,
                      baselines: tuple[str, ...] = BASELINES, members: int = 16, seed: int = 0,
                      batch: int = 64) -> dict[str, Any]:
    """Score a forecast (a file opened lazily will do) against the truth in ``data``, with the baselines of ``run``
    on the same initial times and leads, ``batch`` initial times at a time: memory holds one batch's forecast, truth
    and baselines, and the scores are accumulated (:class:`ForecastScores`). Returns the :func:`score_table` (the
    forecast is the method ``"sciffusion"``)."""
    if batch < 1:
        raise ValueError(f"the batch of initial times must be >= 1; got {batch}")
    forecast_ds = to_internal(forecast_ds)
    base = None
    if run is not None and baselines:
        base = Baselines(run, members=members, seed=seed, which=tuple(baselines),
                         normal_years=float(forecast_ds.attrs.get("sciffusion_normal_years", 0.0)),
                         normal_uncertainty=float(forecast_ds.attrs.get("sciffusion_normal_uncertainty", 0.0)))
    scores = ForecastScores()
    inits = forecast_ds["init_time"].values
    for lo in range(0, len(inits), batch):
        fc = forecast_ds.isel(init_time=slice(lo, lo + batch)).load()
        methods = {"sciffusion": fc}
        if base is not None:
            methods |= base.forecasts(data, init_times=list(fc["init_time"].values), leads=fc.sizes["lead_time"])
        scores.update(methods, truth_for(fc, data))
    return scores.compute()
