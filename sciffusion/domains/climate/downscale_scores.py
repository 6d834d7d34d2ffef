"""Scores of a downscaled ensemble against the fine truth: fair CRPS, RMSE and spread/skill per variable, the radial
power spectrum of the fine scales, and Diebold-Mariano tests against the interpolation baselines."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import xarray as xr

from ...metrics import diebold_mariano, newey_west_lag
from ...training.fit import TrainedRun, load_trained
from .downscale import DownscalePrep, block_mean, coarse_coords, coarse_input
from .fields import Grid
from .levels import split_levels
from .scores import EnsembleScores


# --- evaluation ----------------------------------------------------------------------------------------------
def radial_spectrum(x: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of ``(..., H, W)`` fields (mean removed, Hann window; NaN -> 0), averaged
    over the leading dims; bins of integer wavenumber ``1 .. min(H, W) // 2``."""
    H, W = x.shape[-2:]
    x = np.nan_to_num(x - np.nanmean(x, axis=(-2, -1), keepdims=True))
    win = np.outer(np.hanning(H), np.hanning(W))
    p = np.abs(np.fft.fft2(x * win)) ** 2
    p = p.reshape(-1, H, W).mean(0)
    ky, kx = np.fft.fftfreq(H) * H, np.fft.fftfreq(W) * W
    k = np.sqrt(ky[:, None] ** 2 * (W / H) ** 2 + kx[None, :] ** 2) if W >= H else np.sqrt(
        ky[:, None] ** 2 + kx[None, :] ** 2 * (H / W) ** 2)
    kmax = min(H, W) // 2
    bins = np.rint(k).astype(int)
    return np.array([p[bins == b].mean() for b in range(1, kmax + 1)])


def evaluate_downscaling(fc: xr.Dataset, data, run: TrainedRun | str | pathlib.Path, seed: int = 0,
                         plots: str | pathlib.Path | None = None, batch: int = 64) -> dict[str, Any]:
    """Scores of the downscaled ensemble and the baselines against the fine truth: area-weighted fair CRPS,
    ensemble-mean RMSE, spread/skill, and the power spectrum ratio (mean over the finer half of the wavenumbers;
    1 = right amount of fine-scale variance, < 1 = too smooth). Streamed: ``batch`` time steps of ``fc`` (which may
    be opened lazily), the truth and the baselines are in memory at a time; the scores are the same for any batch
    (to rounding), the Gaussian baseline's draws too."""
    if batch < 1:
        raise ValueError(f"the batch of time steps must be >= 1; got {batch}")
    run = load_trained(run, task="downscale")
    prep = DownscalePrep.from_run(run)
    fine = Grid.from_dict(run.metadata["grid"])
    variables = list(run.metadata["variables"])
    t = fc[fine.time].values
    src = coarse_input(run, data, f"{t[0]}/{t[-1]}")
    if not src.is_fine:
        raise ValueError("evaluate downscale needs the fine truth: give --data on the run's fine grid")
    T = src.steps
    if T != fc.sizes[fine.time]:
        raise ValueError("the truth's time steps do not match the downscaled file's")
    M = fc.sizes["member"]
    split = split_levels(fc)
    rng = np.random.default_rng(seed)  # one stream over the batches: the draws of one batch of everything
    land = prep.land
    scores: dict[tuple[str, str], EnsembleScores] = {}
    per_time: dict[tuple[str, str], list[np.ndarray]] = {}
    power: dict[tuple[str, str], np.ndarray] = {}  # spectra times their batch's steps; / T at the end
    last: dict[str, tuple[xr.DataArray, xr.DataArray, xr.DataArray]] = {}
    lat = (fine.lat, np.asarray(fine.lat_values), dict(fc[fine.lat].attrs) if fine.lat in fc.coords else {})
    lon = (fine.lon, np.asarray(fine.lon_values), dict(fc[fine.lon].attrs) if fine.lon in fc.coords else {})
    for lo in range(0, T, batch):
        hi = min(T, lo + batch)
        truth_np = src.fine_fields(lo, hi)
        coarse = block_mean(truth_np, prep.factor)
        base = prep.interp(coarse)
        methods = {
            "sciffusion": np.stack([split[v].isel({fine.time: slice(lo, hi)}).values for v in variables], axis=2),
            "bilinear": prep.denorm(base)[:, None],
            "bicubic": prep.denorm(prep.interp(coarse, "bicubic"))[:, None],
            "interp_bias_gaussian": prep.denorm(base[:, None] + prep.bias + prep.scale *
                                                rng.standard_normal((len(base), M, *base.shape[1:]))),
        }
        for c, v in enumerate(variables):
            truth = xr.DataArray(np.where(land[c], np.nan, truth_np[:, c]), dims=("time", fine.lat, fine.lon),
                                 coords={fine.lat: lat[1]})
            _add(power, (v, "truth"), radial_spectrum(truth.values) * (hi - lo))
            for name, arr in methods.items():
                x = np.where(land[c], np.nan, arr[:, :, c])
                da = xr.DataArray(x, dims=("time", "member", fine.lat, fine.lon), coords={fine.lat: lat[1]})
                one = EnsembleScores(keep=("time",)).update(da.transpose("time", fine.lat, fine.lon, "member"), truth)
                per_time.setdefault((v, name), []).append(one.compute()["crps"].values)
                scores.setdefault((v, name), EnsembleScores(keep=())).merge(one.collapse(["time"]))
                _add(power, (v, name), radial_spectrum(x) * (hi - lo))
            if plots and hi == T:  # the maps show the last time step
                f, at = prep.factor, split[v].attrs
                coarse_axes = tuple((n, coarse_coords(val, f), a) for n, val, a in (lat, lon))
                last[v] = (_on_grid(truth.values[-1], (lat, lon), at),
                           _on_grid(methods["sciffusion"][-1, :, c], (lat, lon), at, member=np.arange(M)),
                           _on_grid(coarse[-1, c], coarse_axes, at))
    table: dict[str, Any] = {}
    spectra_of: dict[str, dict[str, np.ndarray]] = {}
    for v in variables:
        spectra = {name: power[(v, name)] / T for (w, name) in power if w == v}
        spectra_of[v] = spectra
        half = len(spectra["truth"]) // 2
        table[v] = {}
        for name in methods:
            sc = scores[(v, name)].compute()
            ratio = spectra[name] / spectra["truth"]
            table[v][name] = {k: float(sc[k]) for k in ("crps", "rmse", "spread", "spread_skill")} | {
                "spectrum_ratio_fine": float(ratio[half:].mean()), "spectrum_ratio_all": float(ratio.mean())}
        mine = np.concatenate(per_time[(v, "sciffusion")])
        for name in methods:  # Diebold-Mariano on the per-time area-mean CRPS (lag: the automatic Newey-West one)
            theirs = np.concatenate(per_time[(v, name)])
            if name != "sciffusion" and len(theirs) > 2:
                n = len(theirs)
                table[v][name]["versus"] = diebold_mariano(mine, theirs, min(newey_west_lag(n), n - 1))
    if plots:
        from .plots import by_variable, downscale_maps_figure, save_figures, spectrum_figure

        when = str(t[-1])[:19]
        figures = {f"{v}_spectrum": spectrum_figure(spectra_of[v], v) for v in variables}
        for variable, channels in by_variable(variables, split).items():
            figures[f"{variable}_maps"] = downscale_maps_figure([last[v] for v in channels], variable, when)
        save_figures(figures, plots)
    return table


def _on_grid(a: np.ndarray, axes: tuple, attrs: dict[str, Any], **leading: np.ndarray) -> xr.DataArray:
    """``a`` as a DataArray on ``axes`` (``(name, values, attrs)`` of latitude and longitude), after ``leading``
    dims, with ``attrs`` (the variable's name and units, for the maps)."""
    coords = {**leading, **{n: (n, val, at) for n, val, at in axes}}
    return xr.DataArray(a, dims=(*leading, *(n for n, _, _ in axes)), coords=coords, attrs=attrs)


def _add(sums: dict[Any, np.ndarray], key: Any, value: np.ndarray) -> None:
    sums[key] = value if key not in sums else sums[key] + value


def format_downscale_table(table: dict[str, Any]) -> str:
    lines = []
    for v, methods in table.items():
        lines.append(f"{v}: area-weighted fair CRPS / RMSE / spread-skill / power ratio (finer half of wavenumbers)")
        for name, e in methods.items():
            vs = e.get("versus")
            against = (f"   sciffusion {1e2 * vs['mean_diff'] / e['crps']:+.1f}% (Diebold-Mariano p {vs['pvalue']:.3f})"
                       if vs else "")
            lines.append(f"  {name:<22} {e['crps']:.4f} / {e['rmse']:.4f} / {e['spread_skill']:.2f} / "
                         f"{e['spectrum_ratio_fine']:.2f}{against}")
    return "\n".join(lines)
