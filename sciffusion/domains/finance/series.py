"""Daily price/return tables in: read, check, turn prices into log returns, select periods; scenario sets out.

A table is a pandas DataFrame with a DatetimeIndex (one row per trading day) and one column per asset, or a CSV
(dates in the first column) or parquet file holding one. Missing values stay missing: a return is NaN when either of
its prices is, and every later step masks it instead of filling it in.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr


def read_table(data: str | os.PathLike | pd.DataFrame, assets: Sequence[str] | None = None) -> pd.DataFrame:
    """The table as float64 with a strictly increasing DatetimeIndex, restricted to ``assets`` (default: every
    numeric column). One-line errors for a missing file or column, a non-date or non-monotonic index."""
    if isinstance(data, pd.DataFrame):
        df = data.copy()
    else:
        path = pathlib.Path(data)
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".gz", ".txt"):
            df = pd.read_csv(path, index_col=0)
        else:
            raise ValueError(f"{path}: expected a .csv or .parquet file of prices (dates in the first column)")
    try:
        df.index = pd.DatetimeIndex(pd.to_datetime(df.index))
    except (ValueError, TypeError) as e:
        raise ValueError(f"the index (first column) must hold dates: {e}") from None
    if df.index.has_duplicates:
        raise ValueError(f"the date index has duplicates, e.g. {df.index[df.index.duplicated()][0].date()}")
    if not df.index.is_monotonic_increasing:
        bad = np.flatnonzero(np.diff(df.index.values) <= np.timedelta64(0))[0]
        raise ValueError(f"the date index is not increasing: {df.index[bad].date()} is followed by "
                         f"{df.index[bad + 1].date()}")
    if assets:
        missing = [a for a in assets if a not in df.columns]
        if missing:
            raise ValueError(f"asset(s) {missing} not in the data; columns are {list(df.columns)}")
        df = df[list(assets)]
    out, skipped = {}, []
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.all() and not assets:  # a text column (names, sectors): not an asset, and said so
            skipped.append(str(col))
            continue
        if bad.any():
            day = df.index[bad.to_numpy()][0]
            raise ValueError(f"asset {col!r} has a non-numeric cell {df[col][bad].iloc[0]!r} on {day.date()} "
                             f"({int(bad.sum())} such cells); fix or blank them (blank = missing)")
        out[col] = values.astype(np.float64)
    if skipped:
        warnings.warn(f"columns {skipped} hold no numbers and are not used as assets", stacklevel=2)
    if not out:
        raise ValueError("the data has no numeric columns (one column of prices or returns per asset)")
    return pd.DataFrame(out, index=df.index)


def log_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """``log(p_t / p_{t-1})`` per column (fractions, not percent), first row dropped; NaN where either price is
    NaN. Non-positive prices are an error (they have no log return)."""
    bad = (prices <= 0).to_numpy()
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"non-positive price {prices.iat[i, j]} for {prices.columns[j]} on "
                         f"{prices.index[i].date()}; give prices > 0 or pass returns (kind=returns)")
    return np.log(prices).diff().iloc[1:]


def period_slice(period: str | None) -> slice:
    """``"2010-01-04/2013-03-01"``, ``":2009-12-31"``, ``"2015-01-01:"`` or None -> a label slice (ends inclusive)."""
    if not period:
        return slice(None, None)
    sep = "/" if "/" in period else ":"
    if sep not in period:
        raise ValueError(f"period {period!r}: expected START/END, :END or START: (dates like 2010-01-04)")
    lo, hi = (p.strip() or None for p in period.split(sep, 1))
    try:
        lo, hi = (None if p is None else pd.Timestamp(p) for p in (lo, hi))
    except ValueError as e:
        raise ValueError(f"period {period!r}: {e}") from None
    if lo is not None and hi is not None and hi < lo:
        raise ValueError(f"period {period!r} ends before it starts")
    return slice(lo, hi)


def to_frame(ds: xr.Dataset) -> pd.DataFrame:
    """A scenario set (dims ``origin``, ``horizon``, ``path``, ``asset``) as a tidy frame: one row per
    (origin, horizon, path, asset), columns ``date`` (the scenario day) and the set's variables."""
    df = ds[[v for v in ("log_return", "price") if v in ds]].to_dataframe().reset_index()
    if "date" in ds:
        dates = ds["date"].to_series()
        df["date"] = dates.reindex(pd.MultiIndex.from_frame(df[["origin", "horizon"]])).to_numpy()
    return df
