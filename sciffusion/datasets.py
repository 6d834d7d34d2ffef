"""Where the bundled sample data live (``datasets/`` of the source tree, or ``share/sciffusion/datasets`` of an
installed environment). Nothing is downloaded."""

from __future__ import annotations

import os
import pathlib
import sys

DATASETS = {
    "hadcm3_a1b": "hadcm3_a1b_north_america/A1B_north_america.nc",
    "ostia_sst": "ostia_monthly_sst/ostia_monthly.nc",
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
