"""Where the bundled sample data live (``datasets/`` of the source tree, or ``share/sciffusion/datasets`` of an
installed environment). Nothing is downloaded."""

from __future__ import annotations

import os
import pathlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DATASETS = {
    "hadcm3_a1b": "hadcm3_a1b_north_america/A1B_north_america.nc",
    "ostia_sst": "ostia_monthly_sst/ostia_monthly.nc",
    "mni152_t1_2mm": "mni152_2mm/mni152_t1_2mm.nii.gz",
    "mni152_wm_2mm": "mni152_2mm/mni152_wm_2mm.nii.gz",
}


def roots() -> list[pathlib.Path]:
    env = os.environ.get("SCIFFUSION_DATASETS")
    return [pathlib.Path(p) for p in ([env] if env else [])] + [
        pathlib.Path(__file__).resolve().parents[1] / "datasets",   # source tree / editable install
        pathlib.Path(sys.prefix) / "share" / "sciffusion" / "datasets",  # wheel install (data-files)
    ]


def path(name: str) -> pathlib.Path:
    """The file of bundled dataset ``name`` (see ``datasets/README.md``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; bundled: {sorted(DATASETS)}")
    for root in roots():
        p = root / DATASETS[name]
        if p.exists():
            return p
    raise FileNotFoundError(f"bundled dataset {name!r} not found under {[str(r) for r in roots()]}")


def market_prices(names: tuple[str, ...] = ("sp500", "nasdaq")) -> pd.DataFrame:
    """Daily adjusted closes 1999-01-04..2018-12-31 of the S&P 500 and NASDAQ Composite indices, one column per
    index, read from the files the ``arch`` package ships (``arch.data``; Yahoo Finance data, see
    ``datasets/README.md``). Needs the ``finance`` extra."""
    import importlib

    import pandas as pd

    cols = {}
    for n in names:
        try:
            mod = importlib.import_module(f"arch.data.{n}")
        except ImportError as e:
            raise ImportError(f"market data {n!r} come with the 'arch' package: pip install 'sciffusion[finance]' "
                              f"({e})") from None
        cols[n.upper()] = mod.load()["Adj Close"]
    df = pd.DataFrame(cols)
    df.index.name = "date"
    return df
