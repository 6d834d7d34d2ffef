"""Daily price/return tables in: read, check, turn prices into log returns, select periods; scenario sets out.

A table is wide (one row per trading day, one column per asset: a pandas DataFrame with a DatetimeIndex, or a CSV or
parquet file with the dates in the first column or in a ``date`` column) or long (one row per (day, asset): a date
column, an asset column such as ``asset``/``ticker``/``symbol``/``permno``, and a value column such as
``adj_close``/``close``/``price``/``return``), as data vendors deliver them (CRSP, Bloomberg and Yahoo downloads).
Prices may be total-return index levels. Missing values stay missing: a return is NaN when either of its prices is,
and every later step masks it instead of filling it in.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

DATE_COLUMNS = ("date", "datetime", "time", "timestamp", "day", "trade_date", "caldt")
ASSET_COLUMNS = ("asset", "ticker", "symbol", "permno", "secid", "isin", "cusip", "ric", "instrument", "name", "id")
# value columns of a long table, in order of preference (an adjusted close is what a return should be made from)
PRICE_COLUMNS = ("adj_close", "adjclose", "adj close", "adjusted_close", "total_return_index", "tri", "close", "price",
                 "prc", "px_last", "value")
RETURN_COLUMNS = ("log_return", "logret", "return", "ret", "value")


def _column(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    """The first of ``names`` that is a column of ``df`` (case-insensitive), as spelt in ``df``."""
    lower = {str(c).strip().lower(): c for c in df.columns}
    return next((lower[n] for n in names if n in lower), None)


def _read_file(path: pathlib.Path) -> pd.DataFrame:
    """A CSV or parquet file as it is, columns and all (no index chosen yet)."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise ImportError("reading parquet needs pyarrow: pip install 'sciffusion[finance]'") from None
        except Exception as e:  # pyarrow's errors for a truncated or foreign file
            raise ValueError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    if name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
        try:
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as e:
            raise ValueError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    raise ValueError(f"{path}: expected a .csv or .parquet file of prices (dates in the first column)")


def as_wide(df: pd.DataFrame, value: str | None = None, kind: str = "prices") -> pd.DataFrame:
    """A table read as it comes -> wide, indexed by its date column (or its first column, or its index when that
    already holds dates). A long table (an asset column and a value column) is pivoted to one column per asset
    (sorted by name); ``value`` names its value column (default: the first of :data:`PRICE_COLUMNS` or, for
    ``kind="returns"``, :data:`RETURN_COLUMNS` present, or its only other column). A (day, asset) pair given
    twice is an error naming both."""
    if isinstance(df.index, pd.DatetimeIndex):
        df = df.rename_axis(df.index.name or "date").reset_index()
    elif df.index.name is not None:   # a named index is a column (a date column set as index by the caller)
        df = df.reset_index()
    else:                             # row numbers
        df = df.reset_index(drop=True)
    date = _column(df, DATE_COLUMNS) or df.columns[0]
    asset = _column(df, ASSET_COLUMNS)
    # Long only when the rows are (day, asset) pairs: days repeat, or one asset fills every row. A wide table's
    # text column (a sector, a name) has neither.
    if asset is None or asset == date or not (df[date].duplicated().any() or df[asset].nunique() == 1 < len(df)):
        return df.set_index(date)
    others = [c for c in df.columns if c not in (date, asset)]
    if value is not None:
        if value not in df.columns:
            raise ValueError(f"value column {value!r} is not in the table; its columns are {list(df.columns)}")
        col = value
    else:
        col = _column(df[others], RETURN_COLUMNS if kind == "returns" else PRICE_COLUMNS) if others else None
        if col is None:
            if len(others) != 1:
                raise ValueError(f"long table (date {date!r}, asset {asset!r}): which column holds the {kind}? "
                                 f"found {others}; call it e.g. {'ret' if kind == 'returns' else 'adj_close'} or "
                                 "keep only that one")
            col = others[0]
    key = df[[date, asset]].astype(str)
    dup = key.duplicated()
    if dup.any():
        d, a = key[dup].iloc[0]
        raise ValueError(f"asset {a!r} has two rows on {d} in the long table ({int(dup.sum())} duplicated pairs)")
    wide = df.pivot(index=date, columns=asset, values=col)
    wide.columns = [str(c) for c in wide.columns]
    return wide.rename_axis(None, axis=1)


def read_table(data: str | os.PathLike | pd.DataFrame, assets: Sequence[str] | None = None,
               value: str | None = None, kind: str = "prices") -> pd.DataFrame:
    """The table (wide or long, see the module's doc) as float64 with a strictly increasing DatetimeIndex and one
    column per asset, restricted to ``assets`` (default: every numeric column). One-line errors for a missing file
    or column, a non-date or non-monotonic index, duplicated days and non-numeric cells."""
    if isinstance(data, pd.DataFrame):
        return _checked(as_wide(data.copy(), value, kind), assets)
    path = pathlib.Path(data)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        return _checked(as_wide(_read_file(path), value, kind), assets)
    except ValueError as e:
        text = str(e)
        raise ValueError(text if str(path) in text else f"{path}: {text}") from None  # name the file once


def _checked(df: pd.DataFrame, assets: Sequence[str] | None) -> pd.DataFrame:
    """:func:`read_table`'s checks and conversions of a wide table."""
    try:
        df.index = pd.DatetimeIndex(pd.to_datetime(df.index))
    except (ValueError, TypeError) as e:
        raise ValueError(f"the index (first column) must hold dates: {e}") from None
    if df.index.has_duplicates:
        raise ValueError(f"the date {df.index[df.index.duplicated()][0].date()} appears twice in the table "
                         f"({int(df.index.duplicated().sum())} duplicated dates)")
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
