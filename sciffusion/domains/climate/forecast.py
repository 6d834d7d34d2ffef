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
import functools
import pathlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..._version import __version__
from ...diffusion import derive_seed
from ...tasks.outputs import provenance
from ...tasks.shards import Shard
from ...training.fit import TrainedRun, load_trained
from .conventions import MEMBER_ATTRS, calendar, contiguous, init_attrs, lead_coords, steps_after
from .fields import Grid, field_array, grid_coords, open_fields, output_attrs, output_coord, select_period, time_key
from .forecast_data import ForecastWindows, Preprocess, forcing_stats, read_static  # noqa: F401 (re-exported)
from .levels import stack_levels
from .stats import bootstrap_normals, cycle_keys, years
from .units import units_of


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
    forcings: list[str] = field(default_factory=list)  # given fields the run is conditioned on (``--forcings``)

    @functools.cached_property
    def pos(self) -> np.ndarray:
        """``(T,)`` calendar position of every time step of ds (:func:`~.conventions.calendar`)."""
        return calendar(self.ds[self.grid.time].values)[2]

    def forcing_at(self, lead: int) -> np.ndarray | None:
        """``(I, F, H, W)`` forcings at the valid time ``lead`` calendar steps after each initial time, read from
        the data (which must hold it: a forcing is given, not forecast); None without forcings."""
        if not self.forcings:
            return None
        rows = steps_after(self.pos, self.index, lead)
        if (rows < 0).any():
            t0 = self.times[int(np.argmax(rows < 0))]
            last = self.ds[self.grid.time].values[-1]
            raise ValueError(f"forcing(s) {self.forcings} are needed {lead} step(s) after the initial time {t0}, "
                             f"a time the data do not hold (a gap in time, or past their end at {last}); give data "
                             f"that hold the forcings over every valid time")
        out = field_array(self.ds.isel({self.grid.time: rows.tolist()}), self.forcings)
        empty = ~np.isfinite(out).any(axis=(2, 3))                      # (I, F): a forcing missing at that step
        if empty.any():
            i, f = map(int, np.argwhere(empty)[0])
            raise ValueError(f"forcing {self.forcings[f]!r} is missing (all NaN) at "
                             f"{self.ds[self.grid.time].values[rows[i]]}, a valid time of the forecast")
        return out

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


def training_anomalies(run: TrainedRun, st: Inits) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The run's training-period anomalies in ``st``'s data ``(T, C, H, W)`` with their cycle keys, fractional
    years (from the recent normal when ``st`` has one) and ``(T - 1,)`` breaks (True where two neighbours are not
    consecutive calendar steps: a gap in time); the baselines and the normal's bootstrap fit on them."""
    start, end = run.metadata["train_period"]
    ds = st.ds
    t = ds[st.grid.time].values
    idx = [i for i, v in enumerate(t) if str(v) >= start and str(v) <= end]
    if len(idx) < 3:
        raise ValueError(f"the data do not hold the run's training period {start} .. {end} needed by the baselines")
    x = field_array(ds.isel({st.grid.time: idx}), st.variables)
    keys, when = st.keys[idx], st.when[idx]
    a = x - st.prep.clim.at(keys, when)
    if st.normal_years:  # from the recent normal of each training time, as the forecasts' anomalies are
        a = a - recent_normal(a, range(len(a)), normal_steps(st.normal_years, st.step_years))
    return a, keys, when, np.diff(st.pos[idx]) > 1


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
    a_train, keys_train, when_train, _ = training_anomalies(run, st)
    block = max(1, int(round(float(normal_uncertainty) / st.step_years)))
    if block > len(a_train):
        raise ValueError(f"normal uncertainty blocks of {normal_uncertainty:g} years are longer than the training "
                         f"period ({len(a_train) * st.step_years:g} years)")
    dbeta = bootstrap_normals(st.prep.clim, a_train, keys_train, when_train, members, block, seed)

    def shift(keys: np.ndarray, when: np.ndarray) -> np.ndarray:
        return np.tensordot(st.prep.clim.design(keys, when), dbeta, axes=(1, 1))

    return shift


IMPLAUSIBLE = 10.0  # training standard deviations a variable's mean anomaly may reach before units are doubted


def warn_implausible(anomalies: np.ndarray, prep: Preprocess, variables: Sequence[str],
                     attrs: dict[str, Any]) -> None:
    """One warning per variable whose mean anomaly ``(T, C, H, W)`` from the run's climatology is more than
    :data:`IMPLAUSIBLE` training standard deviations: data in other units than their ``units`` attribute says
    (degC labelled K) would otherwise be forecast without a word, 110-297 K from a 15 degC field."""
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(anomalies, axis=(0, 2, 3))
    for c, v in enumerate(variables):
        off = float(mean[c]) / float(prep.anom_std[c])
        if np.isfinite(off) and abs(off) > IMPLAUSIBLE:
            units = attrs.get(v, {}).get("units", "no units attribute")
            warnings.warn(f"{v}: the data's mean lies {float(mean[c]):.4g} ({off:+.0f} training standard deviations) "
                          f"from the run's climatology; are the data in the units they claim ({units})?")


def init_indices(ds: xr.Dataset, time: str, init_period: str | None, history: int,
                 init_times: Sequence[Any] | None = None) -> list[int]:
    """Time indices of the initial times in ``init_period`` (or exactly ``init_times``) that have the ``history``
    past states the model needs, as consecutive steps of the data's calendar: an initial time whose history falls
    in a gap in time is skipped, and the skipped ones are named in one warning. An empty choice is a one-line
    error."""
    times = ds[time].values
    if init_times is not None:
        pos = {t: i for i, t in enumerate(times)}
        absent = [t for t in init_times if t not in pos]
        if absent:
            raise ValueError(f"initial time {absent[0]} is not in the data")
        chosen = np.array([pos[t] for t in init_times], dtype=np.int64)
    else:
        chosen = select_period(ds.assign_coords(_i=(time, np.arange(len(times)))), time, init_period,
                               "init-period")["_i"].values
    pos = calendar(times)[2]
    index = [int(i) for i in chosen if contiguous(pos, int(i), history)]
    across = [times[i] for i in chosen if i >= history - 1 and not contiguous(pos, int(i), history)]
    if across:
        warnings.warn(f"{len(across)} initial time(s) skipped: their {history} past states cross a gap in time "
                      f"({', '.join(str(t)[:19] for t in across[:4])}{' ...' if len(across) > 4 else ''})")
    if not index:
        raise ValueError(f"no initial time in {init_period!r} has the {history} past states the model needs")
    return index


def initial_states(run: TrainedRun, data: str | pathlib.Path | xr.Dataset, init_period: str | None,
                   normal_years: float = 0.0, init_times: Sequence[Any] | None = None) -> Inits:
    """The initial states in ``init_period`` (or exactly ``init_times``, values of the data's time coordinate).
    With ``normal_years`` > 0 every anomaly is taken from a recent normal: the run's climatology plus the mean
    anomaly of the last ``normal_years`` years up to each initial time (data known at that time only), so a trend
    that drifts from the data after the training period stops biasing the forecasts of the model and of every
    baseline alike. Only the time steps from the first initial time's oldest needed state to the last initial
    time are read (the rest of an archive stays on disk)."""
    meta = run.metadata
    variables, grid, forcings = meta["variables"], Grid.from_dict(meta["grid"]), list(meta.get("forcings", []))
    units = units_of({**meta.get("attrs", {}), **meta.get("forcing_attrs", {})})
    ds, g = open_fields(data, [*variables, *forcings], units=units)
    grid.check(g, f"{data}" if not isinstance(data, xr.Dataset) else "the data")
    prep = Preprocess.from_run(run)
    times = ds[g.time].values
    keys, when = cycle_keys(times, prep.clim.kind), years(times)
    k = prep.history
    index = init_indices(ds, g.time, init_period, k, init_times)
    if normal_years < 0:
        raise ValueError(f"normal years must be >= 0; got {normal_years}")
    step_years = float(meta["step_years"])
    steps = normal_steps(normal_years, step_years) if normal_years else 1
    lo = max(0, min(index) - max(k, steps) + 1)  # the oldest state (or recent-normal year) any initial time needs
    rows = slice(lo, max(index) + 1)
    anomalies = field_array(ds.isel({g.time: rows}), variables) - prep.clim.at(keys[rows], when[rows])
    warn_implausible(anomalies, prep, variables, meta.get("attrs", {}))
    local = [i - lo for i in index]
    a_hist = np.stack([anomalies[i - k + 1:i + 1] for i in local])
    offset = None
    if normal_years:
        offset = recent_normal(anomalies, local, steps)
        a_hist = a_hist - offset[:, None]
    return Inits(ds, g, prep, list(variables), index, keys, when, step_years, a_hist, offset, float(normal_years),
                 forcings)


def forecast(run: TrainedRun | str | pathlib.Path, data: str | pathlib.Path | xr.Dataset, *,
             init_period: str | None = None, leads: int = 3, members: int = 16, seed: int = 0,
             sampling: dict[str, Any] | None = None, progress: bool = False, normal_years: float | None = None,
             normal_uncertainty: float = 0.0, init_times: Sequence[Any] | None = None) -> xr.Dataset:
    """Roll out ``members`` forecasts of ``leads`` steps from every initial time in ``init_period``.

    Returns a Dataset with each variable shaped ``(init_time, lead_time, member, lat, lon)`` in physical units,
    the input's coordinates and attributes, NaN where the initial state is NaN. Member ``m`` of initial time ``i``
    at lead ``l`` is drawn from its own seed, so it does not depend on how many members or initial times are asked.
    The run's calibrated spread inflation scales each sampled residual's deviation from the model's conditional
    mean (:func:`~sciffusion.training.sampling.conditional_mean`). ``normal_years`` > 0 takes anomalies from the
    recent normal (see :func:`initial_states`; default: the run's ``data.normal_years``, 0 = none); the file records
    it, and ``evaluate`` gives the baselines the same. ``init_times`` (values of the data's time coordinate)
    replaces ``init_period``; :func:`forecast_batches` uses it to forecast an archive a batch at a time.

    ``normal_uncertainty`` > 0 (years) gives each member its own climatology and trend, refitted to the training
    years resampled in blocks of that many years (:func:`~.stats.bootstrap_normals`; the data must hold the run's
    training period): the member's past states become anomalies from it and its forecasts are returned on it. A
    trend extrapolated past the training period is uncertain, and an ensemble that shares one normal misses that
    error (spread/skill under 1 on years after the training period while it is 1 on the validation years).
    """
    run = load_trained(run, task="forecast")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in (leads, members)):
        raise TypeError(f"leads and members must be whole numbers; got {leads!r}, {members!r}")
    if leads < 1 or members < 1:
        raise ValueError(f"leads and members must be >= 1; got {leads}, {members}")
    if normal_years is None:
        normal_years = float(run.metadata.get("normal_years", 0.0))
    st = initial_states(run, data, init_period, normal_years, init_times)
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
        forcing = st.forcing_at(lead)  # (I, F, H, W), the same for every member
        cond = torch.from_numpy(prep.cond(a_hist, None if forcing is None else np.repeat(forcing, members, axis=0)))
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


def forecast_batches(run: TrainedRun | str | pathlib.Path, data: str | pathlib.Path | xr.Dataset, *,
                     init_period: str | None = None, batch: int = 64, shard: Shard | None = None, **options: Any
                     ) -> Iterator[tuple[int, xr.Dataset]]:
    """``(batch number, forecast)`` of the initial times in ``init_period``, ``batch`` initial times at a time (in
    order), so that memory holds one batch's states and members, whatever the number of initial times; a member's
    values do not depend on the batching (its seed comes from its initial time). With ``shard`` (processes under
    torchrun), only this process's batches. Write them with :func:`~sciffusion.tasks.shards.write_sharded`.
    ``options``: those of :func:`forecast`."""
    if batch < 1:
        raise ValueError(f"the batch of initial times must be >= 1; got {batch}")
    run = load_trained(run, task="forecast")
    ds, g = open_fields(data, run.metadata["variables"])
    times = ds[g.time].values
    usable = [times[i] for i in init_indices(ds, g.time, init_period, int(run.config["data"]["history"]))]
    chunks = [usable[lo:lo + batch] for lo in range(0, len(usable), batch)]
    for i, chunk in (shard or Shard()).mine(chunks):
        yield i, forecast(run, data, init_times=chunk, **options)


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
              g.lat: output_coord(ds, g.lat), g.lon: output_coord(ds, g.lon),
              **grid_coords(ds, g)}
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} sciffusion {__version__}"
    dims = ("init_time", "lead_time", "member", g.lat, g.lon)
    data_vars = {v: (dims, out[:, :, :, c], output_attrs(ds[v].attrs, dims)) for c, v in enumerate(st.variables)}
    history = f"{stamp} {source}: {note}" + ("\n" + ds.attrs["history"] if "history" in ds.attrs else "")
    return stack_levels(xr.Dataset(data_vars, coords=coords, attrs={
        **ds.attrs, "history": history, "source": source, "sciffusion_task": "forecast",
        "sciffusion_area_weights": g.weighting, **(attrs or {})}))
