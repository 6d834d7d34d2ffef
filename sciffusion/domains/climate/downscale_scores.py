"""Scores of a downscaled ensemble against the fine truth: fair CRPS, RMSE and spread/skill per variable, the radial
power spectrum of the fine scales, and Diebold-Mariano tests against the interpolation baselines."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import xarray as xr

from ...metrics import diebold_mariano, newey_west_lag
from ...training.fit import TrainedRun, load_trained
from .downscale import DownscalePrep, coarse_input
from .fields import Grid, field_array
from .levels import split_levels
from .scores import ensemble_scores


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
                         plots: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Scores of the downscaled ensemble and the baselines against the fine truth: area-weighted fair CRPS,
    ensemble-mean RMSE, spread/skill, and the power spectrum ratio (mean over the finer half of the wavenumbers;
    1 = right amount of fine-scale variance, < 1 = too smooth)."""
    run = load_trained(run, task="downscale")
    prep = DownscalePrep.from_run(run)
    fine = Grid.from_dict(run.metadata["grid"])
    t = fc[fine.time].values
    ds, coarse, _, _ = coarse_input(run, data, f"{t[0]}/{t[-1]}")
    truth_np = field_array(ds, run.metadata["variables"])
    if truth_np.shape[0] != fc.sizes[fine.time]:
        raise ValueError("the truth's time steps do not match the downscaled file's")
    M = fc.sizes["member"]
    base = prep.interp(coarse)
    rng = np.random.default_rng(seed)
    land = prep.land
    methods = {
        "sciffusion": np.stack([split_levels(fc)[v].values for v in run.metadata["variables"]], axis=2),
        "bilinear": prep.denorm(base)[:, None],
        "bicubic": prep.denorm(prep.interp(coarse, "bicubic"))[:, None],
        "interp_bias_gaussian": prep.denorm(base[:, None] + prep.bias + prep.scale *
                                            rng.standard_normal((len(base), M, *base.shape[1:]))),
    }
    table: dict[str, Any] = {}
    for c, v in enumerate(run.metadata["variables"]):
        truth = xr.DataArray(np.where(land[c], np.nan, truth_np[:, c]), dims=("time", fine.lat, fine.lon),
                             coords={fine.lat: np.asarray(fine.lat_values)})
        spec_truth = radial_spectrum(truth.values)
        half = len(spec_truth) // 2
        table[v], spectra, per_time = {}, {"truth": spec_truth}, {}
        for name, arr in methods.items():
            x = np.where(land[c], np.nan, arr[:, :, c])
            da = xr.DataArray(x, dims=("time", "member", fine.lat, fine.lon),
                              coords={fine.lat: np.asarray(fine.lat_values)}).transpose("time", fine.lat, fine.lon,
                                                                                         "member")
            sc = ensemble_scores(da, truth, keep=())
            per_time[name] = ensemble_scores(da, truth, keep=("time",))["crps"].values
            spectra[name] = radial_spectrum(x)
            ratio = spectra[name] / spec_truth
            table[v][name] = {k: float(sc[k]) for k in ("crps", "rmse", "spread", "spread_skill")} | {
                "spectrum_ratio_fine": float(ratio[half:].mean()), "spectrum_ratio_all": float(ratio.mean())}
        for name in methods:  # Diebold-Mariano on the per-time area-mean CRPS (lag: the automatic Newey-West one)
            if name != "sciffusion" and len(per_time[name]) > 2:
                n = len(per_time[name])
                table[v][name]["versus"] = diebold_mariano(per_time["sciffusion"], per_time[name],
                                                           min(newey_west_lag(n), n - 1))
        if plots:
            from .plots import spectrum_plot

            spectrum_plot(spectra, v, plots)
    return table


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
