"""Forecast files in the conventions the ecosystem reads: lead times with units, valid times, CF standard names, and
the climpred and WeatherBench 2 layouts.

A forecast's lead is written as the verification tools expect it:

* a regular sub-monthly step (hourly, 6-hourly, daily): ``lead_time`` is a timedelta (``1 days``, ``2 days``);
* monthly or annual data: ``lead_time`` is an integer with ``units`` ``months`` or ``years`` (climpred's convention);
* anything else: an integer count of the input's steps.

Every layout also carries ``lead_step`` (the lead in steps of the input data, 1, 2, ...) and
``valid_time(init, lead)``, so :func:`to_internal` can read any of them back.

Layouts (``--layout``):

* ``sciffusion`` (default): ``(init_time, lead_time, member, [level], lat, lon)``;
* ``climpred``: ``init``, ``lead`` (an integer with ``units`` in days/hours/months/years), ``member``, as
  ``climpred.HindcastEnsemble`` takes them;
* ``wb2``: WeatherBench 2's forecast schema, ``time`` (the initial time), ``prediction_timedelta``,
  ``realization`` (a regular sub-monthly step only).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

LAYOUTS = ("sciffusion", "climpred", "wb2")
_RENAMES = {"climpred": {"init_time": "init", "lead_time": "lead"},
            "wb2": {"init_time": "time", "lead_time": "prediction_timedelta", "member": "realization"}}
INIT_DIM = {layout: _RENAMES.get(layout, {}).get("init_time", "init_time") for layout in LAYOUTS}  # the append dim
_DAY = datetime.timedelta(days=1)
_CLIMPRED_UNITS = (("days", "1D"), ("hours", "1h"), ("minutes", "1min"), ("seconds", "1s"))


def time_step(times: Sequence[Any]) -> tuple[str, Any]:
    """The data's step: ``("delta", timedelta)`` for a regular step under 28 days, ``("months", n)`` or
    ``("years", n)`` for monthly or annual data (n steps of a month or year), else ``("steps", 1)``. Gaps (missing
    steps) do not change it: see :func:`calendar`."""
    kind, step, _ = calendar(times)
    return kind, step


def calendar(times: Sequence[Any]) -> tuple[str, Any, np.ndarray]:
    """The data's step (as :func:`time_step`) and the position ``(T,)`` of each time on the regular calendar of
    that step, 0 for the first: ``0, 1, 3`` for 2003, 2004, 2006. The step is the most common spacing, and every
    spacing must be a whole number of steps (a gap, or several); for monthly and annual data spacings are counted
    in calendar months and years, each within 3.1 days per month or year of its length. Anything else, times out
    of order included, is ``("steps", 1)`` with positions ``0, 1, 2, ...`` (no gap can be told)."""
    t = list(times)
    plain = ("steps", 1, np.arange(len(t), dtype=np.int64))
    if len(t) < 2:
        return plain
    d = [_as_timedelta(b - a) for a, b in zip(t[:-1], t[1:])]
    if any(x <= datetime.timedelta(0) for x in d):
        return plain
    base = _most_common(d)
    if base < 28 * _DAY and all(x % base == datetime.timedelta(0) for x in d):
        return "delta", base, np.concatenate([[0], np.cumsum([x // base for x in d])]).astype(np.int64)
    days = np.array([x / _DAY for x in d])
    months = np.diff(np.array([_month_number(x) for x in t], dtype=np.int64))
    for unit, per, length in (("years", 12, 365.25), ("months", 1, 30.44)):
        if np.any(months % per):
            continue
        units_apart = months // per
        n = int(_most_common(list(units_apart)))
        if n < 1 or np.any(units_apart % n) or np.any(units_apart < 1):
            continue
        k = units_apart // n
        if np.all(np.abs(days - k * n * length) <= 3.1 * k * n):
            return unit, n, np.concatenate([[0], np.cumsum(k)]).astype(np.int64)
    return plain


def _most_common(values: Sequence[Any]) -> Any:
    """The most frequent value (the smallest among equally frequent ones)."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def _month_number(t: Any) -> int:
    """Months since year 0 of a numpy or cftime time."""
    if isinstance(t, np.datetime64):
        ts = pd.Timestamp(t)
        return ts.year * 12 + ts.month - 1
    return int(t.year) * 12 + int(t.month) - 1


def gaps(times: Sequence[Any]) -> list[tuple[int, int]]:
    """``(i, missing)`` for every gap: ``missing`` steps of the data's calendar are absent between ``times[i]``
    and ``times[i + 1]``."""
    _, _, pos = calendar(times)
    jumps = np.diff(pos)
    return [(int(i), int(jumps[i] - 1)) for i in np.flatnonzero(jumps > 1)]


def describe_gaps(times: Sequence[Any], what: str = "the data") -> str | None:
    """One line naming the gaps in ``times`` (the first three), or None when there is none."""
    found = gaps(times)
    if not found:
        return None
    t = list(times)
    parts = [f"{missing} step{'s' if missing > 1 else ''} missing between {_label(t[i])} and {_label(t[i + 1])}"
             for i, missing in found[:3]]
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return (f"{what} have {len(found)} gap{'s' if len(found) > 1 else ''} in time ({'; '.join(parts)}{more}): "
            f"leads count calendar steps, and no training window, history or truth is taken across a gap")


def _label(t: Any) -> str:
    iso = t.isoformat() if hasattr(t, "isoformat") else str(pd.Timestamp(t).isoformat())
    return str(iso).replace(" ", "T")[:19].removesuffix("T00:00:00")


def steps_after(pos: np.ndarray, rows: Sequence[int], lead: int) -> np.ndarray:
    """The row of the time ``lead`` calendar steps after each of ``rows`` (``pos``: :func:`calendar`
    positions), or -1 where that time is not in the data (a gap, or past its end)."""
    want = pos[np.asarray(rows, dtype=np.int64)] + lead
    at = np.searchsorted(pos, want).clip(max=len(pos) - 1)
    return np.where(pos[at] == want, at, -1)


def contiguous(pos: np.ndarray, last: int, n: int) -> bool:
    """Whether the ``n`` rows ending at row ``last`` are ``n`` consecutive calendar steps (no gap among them)."""
    first = last - n + 1
    return first >= 0 and int(pos[last] - pos[first]) == n - 1


def _as_timedelta(x: Any) -> datetime.timedelta:
    if isinstance(x, np.timedelta64):
        return pd.Timedelta(x).to_pytimedelta()
    return x


def _shift(t: Any, months: int) -> Any:
    """``t`` plus a number of calendar months, in its own calendar (day clipped to the month's length)."""
    if isinstance(t, np.datetime64):
        return (pd.Timestamp(t) + pd.DateOffset(months=months)).to_datetime64()
    y, m = divmod(t.month - 1 + months, 12)
    probe = t.replace(year=t.year + y, month=m + 1, day=1)
    return t.replace(year=t.year + y, month=m + 1, day=min(t.day, getattr(probe, "daysinmonth", 28)))


def lead_coords(init_times: Sequence[Any], data_times: Sequence[Any], leads: int) -> dict[str, Any]:
    """``lead_time``, ``lead_step`` and ``valid_time`` coordinates of a forecast of ``leads`` steps from
    ``init_times``, in the conventions of the module docstring."""
    kind, step = time_step(data_times)
    steps = np.arange(1, leads + 1)
    base = {"standard_name": "forecast_period", "long_name": "forecast lead"}
    if kind == "delta":
        lead = xr.Variable("lead_time", np.array([pd.Timedelta(step * int(s)) for s in steps], "timedelta64[ns]"),
                           base)
        valid = [[t + (np.timedelta64(pd.Timedelta(step * int(s))) if isinstance(t, np.datetime64) else step * int(s))
                  for s in steps] for t in init_times]
    elif kind in ("months", "years"):
        lead = xr.Variable("lead_time", steps * step, {**base, "units": kind})
        per = step * (12 if kind == "years" else 1)
        valid = [[_shift(t, per * int(s)) for s in steps] for t in init_times]
    else:
        lead = xr.Variable("lead_time", steps, {**base, "units": "time steps of the input data"})
        pos = {t: i for i, t in enumerate(data_times)}
        valid = [[data_times[pos[t] + s] if pos[t] + s < len(data_times) else None for s in steps]
                 for t in init_times]
    out: dict[str, Any] = {"lead_time": lead,
                           "lead_step": xr.Variable("lead_time", steps, {"long_name": "lead in steps of the input"})}
    if not any(v is None for row in valid for v in row):  # irregular steps past the end of the data: unknown
        numpy_times = isinstance(init_times[0], np.datetime64)
        out["valid_time"] = xr.Variable(("init_time", "lead_time"),
                                        np.asarray(valid, dtype="datetime64[ns]" if numpy_times else object),
                                        {"standard_name": "time", "long_name": "valid time"})
    return out


def _whole_unit(step: pd.Timedelta) -> tuple[str, pd.Timedelta]:
    """The largest of days, hours, minutes, seconds that divides ``step`` (seconds when none does)."""
    return next(((u, pd.Timedelta(d)) for u, d in _CLIMPRED_UNITS if step % pd.Timedelta(d) == pd.Timedelta(0)),
                ("seconds", pd.Timedelta("1s")))


def lead_unit(fc: xr.Dataset) -> tuple[float, str]:
    """The size of one lead step and its unit, for axes: ``(6.0, "hours")`` for a 6-hourly forecast, ``(1.0,
    "months")``, ``(1.0, "years")``, ``(1.0, "time steps")`` for an irregular step. ``fc`` in any layout, as written
    (its ``lead_step`` still there)."""
    fc = from_layout(fc)
    lead = fc["lead_time"]
    if "lead_step" not in fc.coords or lead.size == 0:
        return 1.0, "time steps"
    n = int(fc["lead_step"].values[0])
    if np.issubdtype(lead.dtype, np.timedelta64):
        unit, one = _whole_unit(pd.Timedelta(lead.values[0]) / n)
        return float((pd.Timedelta(lead.values[0]) / n) / one), unit
    unit = str(lead.attrs.get("units", ""))
    if unit in ("months", "years", *(u for u, _ in _CLIMPRED_UNITS)):  # climpred's integer leads with units
        return float(lead.values[0]) / n, unit
    return 1.0, "time steps"


def init_attrs(time_attrs: dict[str, Any]) -> dict[str, Any]:
    """The initial time's attributes: the input time's, with the CF name of a forecast's reference time."""
    return {**{k: v for k, v in time_attrs.items() if k not in ("bounds", "axis")},
            "standard_name": "forecast_reference_time", "long_name": "initial time"}


MEMBER_ATTRS = {"standard_name": "realization", "long_name": "ensemble member"}


def to_layout(fc: xr.Dataset, layout: str) -> xr.Dataset:
    """A forecast in the ``sciffusion`` layout written in ``layout`` (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if layout == "sciffusion":
        return fc
    lead = fc["lead_time"]
    if layout == "wb2" and not np.issubdtype(lead.dtype, np.timedelta64):
        raise ValueError(f"the wb2 layout needs a regular sub-monthly time step; this forecast's lead is in "
                         f"{lead.attrs.get('units', 'steps')} (use --layout climpred)")
    if layout == "climpred" and np.issubdtype(lead.dtype, np.timedelta64):  # climpred wants integers with units
        step = pd.Timedelta(lead.values[0]) / int(fc["lead_step"].values[0])
        unit, one = _whole_unit(step)
        ints = np.rint(lead.values / np.timedelta64(one)).astype("int64")
        fc = fc.assign_coords(lead_time=("lead_time", ints, {**lead.attrs, "units": unit}))
    return fc.rename(_RENAMES[layout]).assign_attrs(sciffusion_layout=layout)


def from_layout(fc: xr.Dataset) -> xr.Dataset:
    """A forecast in any layout with the ``sciffusion`` layout's names (its lead coordinate as written)."""
    layout = fc.attrs.get("sciffusion_layout", "sciffusion")
    if layout in _RENAMES:
        fc = fc.rename({v: k for k, v in _RENAMES[layout].items() if v in fc.dims or v in fc.coords})
        fc.attrs = {k: v for k, v in fc.attrs.items() if k != "sciffusion_layout"}
    return fc


def to_internal(fc: xr.Dataset) -> xr.Dataset:
    """Any layout read back as the ``sciffusion`` one with ``lead_time`` as integer steps (1, 2, ...): what the
    scores and baselines index by. Files written before lead units existed pass unchanged."""
    fc = from_layout(fc)
    if "lead_step" in fc.coords:
        fc = fc.assign_coords(lead_time=("lead_time", fc["lead_step"].values.astype("int64"),
                                         {"long_name": "lead in steps of the input"})).drop_vars("lead_step")
    return fc.drop_vars([c for c in ("valid_time",) if c in fc.coords and fc[c].ndim == 2])
