"""Scenarios given part of the path: some assets' log returns on the first days of the horizon are fixed (a stress
test: "the index falls 10% over days 1-3"), the rest of the path of every asset is sampled jointly with them.

A given return fixes the asset's GARCH shock on that day only if its variance is known, i.e. if every earlier day of
that asset's path is given too: so each asset's given days are a prefix, days 1..k. Then the shocks are known, hence
the Gaussianised shocks ``g``, hence linear combinations of the model's whitened coordinates (``g = L w``, ``w`` the
normaliser's affine map of the sampled ``x``): ``C_h x_h = y_h`` per day ``h``, imposed exactly by the engine's
:class:`~sciffusion.diffusion.KnownCombinations`. Under the base law (the zeroed network: N(0, I) whitened shocks)
the free part is drawn from its exact conditional law (tested against the closed form).

Forms of a given (``given=`` of :func:`~.scenarios.scenarios`, ``--given`` on the command line):

* ``"SP500=-0.02,-0.03,-0.01"``: daily log returns (fractions) of days 1, 2, 3;
* ``"SP500:3=-0.10"``: a total log return over days 1..3, spread evenly over them;
* a dict ``{"SP500": [-0.02, -0.03]}``; or a CSV file with columns ``asset``, ``day`` (1-based), ``log_return``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .garch import GarchT

PCT = 100.0


def parse_given(spec: str | os.PathLike | Sequence[str] | Mapping[str, Sequence[float]] | None,
                assets: Sequence[str], horizon: int) -> dict[str, np.ndarray]:
    """``{asset: log returns of days 1..k}`` from any form in the module's doc; one-line errors name the asset."""
    if spec is None or (not isinstance(spec, (str, os.PathLike, Mapping)) and len(spec) == 0):
        return {}
    if isinstance(spec, Mapping):
        out = {str(a): np.asarray(v, dtype=np.float64).ravel() for a, v in spec.items()}
    else:
        items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
        out = {}
        for item in items:
            text = str(item)
            if "=" not in text:
                out.update(_given_file(pathlib.Path(text), horizon))
                continue
            name, values = text.split("=", 1)
            name, _, days = name.partition(":")
            try:
                nums = [float(v) for v in values.split(",") if v.strip()]
                k = int(days) if days else None
            except ValueError:
                raise ValueError(f"--given {text!r}: expected ASSET=r1,r2,... or ASSET:DAYS=TOTAL (log returns "
                                 "as fractions)") from None
            if k is not None:
                if len(nums) != 1 or k < 1:
                    raise ValueError(f"--given {text!r}: ASSET:DAYS=TOTAL takes one total and DAYS >= 1")
                nums = [nums[0] / k] * k
            out[name.strip()] = np.asarray(nums, dtype=np.float64)
    for a, r in out.items():
        if a not in assets:
            raise ValueError(f"given asset {a!r} is not an asset of the run ({', '.join(list(assets)[:8])}...)")
        if not 1 <= len(r) <= horizon:
            raise ValueError(f"given asset {a!r}: {len(r)} days; give 1 to {horizon} (the run's horizon)")
        if not np.isfinite(r).all() or (np.abs(r) > 1).any():
            raise ValueError(f"given asset {a!r}: log returns must be finite fractions (|r| <= 1, 0.01 = 1%)")
    if len(out) == len(assets) and all(len(r) == horizon for r in out.values()):
        raise ValueError("every asset is given on every day: nothing is left to sample")
    return out


def _given_file(path: pathlib.Path, horizon: int) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"given file {path} does not exist (or write ASSET=r1,r2,...)")
    t = pd.read_csv(path)
    t.columns = [str(c).strip().lower() for c in t.columns]
    if not {"asset", "day", "log_return"} <= set(t.columns):
        raise ValueError(f"{path}: a given file needs the columns asset, day, log_return; it has {list(t.columns)}")
    out = {}
    for a, part in t.groupby("asset", sort=False):
        days = part["day"].astype(int).to_numpy()
        if sorted(days) != list(range(1, len(days) + 1)):
            raise ValueError(f"{path}: asset {a!r} is given on days {sorted(days)}; the given days of an asset must "
                             "be 1..k (a later day's GARCH variance depends on the days before it)")
        out[str(a)] = part.sort_values("day")["log_return"].astype(float).to_numpy()
    return out


def given_shocks(garch: GarchT, given: Mapping[str, np.ndarray], assets: Sequence[str], s2_next: np.ndarray,
                 horizon: int) -> np.ndarray:
    """Gaussianised shocks ``(O, A, H)`` of the given returns from each origin's next-day variances ``s2_next``
    ``(O, A)`` (percent^2), NaN where not given; the variance runs along the given prefix."""
    O, A = s2_next.shape
    r = np.full((O, A, horizon), np.nan)
    for a, v in given.items():
        r[:, list(assets).index(a), :len(v)] = v * PCT
    g = np.full_like(r, np.nan)
    s2 = s2_next.astype(np.float64).copy()
    for h in range(horizon):
        e = r[:, :, h] - garch.mu
        g[:, :, h] = garch.to_normal(e / np.sqrt(s2), axis=-1)
        s2 = garch.next_variance(e, s2)      # NaN e (not given): the expectation; only used where given
    return g


def whitened_constraints(g: np.ndarray, chol: np.ndarray, mean: np.ndarray, std: np.ndarray
                         ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """The given shocks ``g`` ``(O, A, H)`` (NaN = free) as constraints on the model's normalised coordinates
    ``x`` (``w = mean + std x``, ``g = chol w``): per day, ``C_h`` ``(k_h, A)`` and targets ``y`` ``(O, A, H)``
    (the first ``k_h`` rows of day h used), for :func:`~sciffusion.diffusion.combination_constraints`."""
    O, A, H = g.shape
    known = np.isfinite(g[0])                                   # (A, H): the same assets for every origin
    Ls = chol * std[None, :]
    offset = chol @ mean
    C: list[torch.Tensor | None] = []
    y = np.zeros((O, A, H))
    for h in range(H):
        rows = np.flatnonzero(known[:, h])
        if len(rows) == 0:
            C.append(None)
            continue
        C.append(torch.from_numpy(Ls[rows]))
        y[:, :len(rows), h] = g[:, rows, h] - offset[rows]
    return C, torch.from_numpy(y)
