"""CF ``units`` of the data against the run's: convert what converts (K/degC, Pa/hPa, m s-1/km h-1, ...), refuse
the rest by name, so a forecast from degC data with a run trained in K is not silently 273 K off.

CF writes units in UDUNITS notation (``m s-1``, ``kg m-2 s-1``, ``degC``, ``degrees_Celsius``); :func:`pint_units`
turns that into pint's expression syntax. Units that are the same string (the usual case) need no units library;
converting needs pint (``pip install 'sciffusion[climate]'``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import xarray as xr

# UDUNITS spellings pint does not know, and the ones that mean "no unit".
_ALIASES = {"degrees_Celsius": "degC", "degree_C": "degC", "deg_C": "degC", "celsius": "degC", "°C": "degC",
            "degK": "K", "deg_K": "K", "kelvin": "K", "%": "percent", "1": "", "-": "", "none": "", "unitless": ""}
_TOKEN = re.compile(r"^([A-Za-z_°%]+)\^?(-?\d+)?$")


def pint_units(cf: str) -> str:
    """A CF/UDUNITS unit string as a pint expression: ``"kg m-2 s-1"`` -> ``"kg * m**-2 * s**-1"``, ``"degC"`` as it
    is. Raises ValueError on a string it cannot read (e.g. a reference date: ``days since 1970-01-01``)."""
    text = cf.strip()
    if text in _ALIASES:
        return _ALIASES[text]
    if " since " in text:
        raise ValueError(f"{cf!r} is a time reference, not a unit")
    parts = []
    for token in re.split(r"[\s.*]+", text):
        m = _TOKEN.match(token)
        if not m:
            raise ValueError(f"cannot read the unit {token!r} of {cf!r}")
        name, power = _ALIASES.get(m.group(1), m.group(1)), m.group(2)
        parts.append(name if power is None else f"{name}**{power}")
    return " * ".join(p for p in parts if p)


@lru_cache(maxsize=1)
def _registry() -> Any:
    try:
        import pint
    except ImportError:
        raise ImportError("converting between units needs pint: pip install 'sciffusion[climate]'") from None
    return pint.UnitRegistry()


def affine(from_units: str, to_units: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``value_in_to = scale * value_in_from + offset`` (offset only for temperatures).
    Raises ValueError naming both when the units measure different things."""
    import pint

    reg = _registry()
    try:
        zero = reg.Quantity(0.0, pint_units(from_units)).to(pint_units(to_units)).magnitude
        one = reg.Quantity(1.0, pint_units(from_units)).to(pint_units(to_units)).magnitude
    except (pint.errors.DimensionalityError, pint.errors.UndefinedUnitError) as e:
        raise ValueError(f"{from_units!r} cannot be converted to {to_units!r} ({e})") from None
    return float(one - zero), float(zero)


def to_units(ds: xr.Dataset, wanted: Mapping[str, str | None], what: str = "the data") -> xr.Dataset:
    """``ds`` with each variable of ``wanted`` in the units given there (lazily: dask arrays stay lazy), its
    ``units`` attribute rewritten. A variable without ``units`` on either side is taken as it is (nothing to
    compare); units that do not convert are a one-line error naming the variable."""
    out = ds
    for name, target in wanted.items():
        if not target or name not in ds.data_vars:
            continue
        have = ds[name].attrs.get("units")
        if not have or str(have).strip() == str(target).strip():
            continue
        try:
            scale, offset = affine(str(have), str(target))
        except ValueError as e:
            raise ValueError(f"variable {name!r} of {what} is in {have!r} but the run's is in {target!r}: {e}"
                             ) from None
        if (scale, offset) == (1.0, 0.0):
            continue
        attrs = {**ds[name].attrs, "units": target}
        out = out.assign({name: (ds[name] * scale + offset).assign_attrs(attrs)})
    return out


def units_of(attrs: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """``{variable: units}`` of a run's stored variable attributes (``metadata["attrs"]``)."""
    return {v: a.get("units") for v, a in attrs.items()}
