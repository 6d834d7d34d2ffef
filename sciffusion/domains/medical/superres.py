"""Through-plane super-resolution: rebuild the slices a thick-slice acquisition skipped.

Training pairs come from thin-slice scans: keep every k-th slice (k drawn from ``factors``, phase at random),
interpolate between the kept ones (``base``: a not-a-knot cubic spline by default, or linear), and learn the residual
``truth - base`` conditioned on the base volume, which slices were kept and each voxel's distance to them
(CorrDiff's mean-plus-residual split). The output layer is zero-initialised, so an untrained model returns the
base interpolation exactly: the model starts from the better of the two baselines and can only add to it. Whole
volumes are sampled in blended tiles with the noise shared across overlaps.

    sciffusion train superres --data thin1.nii.gz [thin2 ...] --out RUN
    sciffusion superres --run RUN --data thick.nii.gz --out thin.nii.gz [--factor 4] [--mode mean|sample]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from ...diffusion import derive_seed
from ...training.fit import TrainedRun, load_trained
from ...training.sampling import conditional_mean
from .cohort import Subject
from .grids import resample_onto
from .patches import augment_intensity
from .scans import (
    Scan,
    prepare_like,
    prepare_subject,
    tiled,
    with_read_options,
)
from .volumes import Volume, read_volume, tagged, write_volume

SUPERRES_DEFAULTS: dict[str, Any] = {
    "superres": {"axis": 2, "factors": [2, 3, 4, 5], "base": "cubic", "mode": "mean", "samples": 1},
    "sampling": {"sampler": "heun", "steps": 12, "sigma_min": 0.002, "sigma_max": 10.0, "rho": 7.0},
}


def linear_fill(x: np.ndarray, kept: np.ndarray, axis: int) -> np.ndarray:
    """Fill the slices of ``x`` along ``axis`` where ``kept`` is False by linear interpolation between the
    nearest kept slices (constant beyond the first and last). Kept slices are returned unchanged."""
    idx = np.flatnonzero(kept)
    if len(idx) == 0:
        raise ValueError("no kept slice to interpolate from")
    n = x.shape[axis]
    pos = np.arange(n)
    right = np.clip(np.searchsorted(idx, pos), 0, len(idx) - 1)
    left = np.clip(right - (idx[right] > pos), 0, len(idx) - 1)
    l, r = idx[left], idx[right]
    w = np.where(r > l, (pos - l) / np.maximum(r - l, 1), 0.0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n
    xl, xr = np.take(x, l, axis=axis), np.take(x, r, axis=axis)
    return (xl + (xr - xl) * w.reshape(shape)).astype(np.float32)


def cubic_fill(x: np.ndarray, kept: np.ndarray, axis: int) -> np.ndarray:
    """Fill the slices of ``x`` along ``axis`` where ``kept`` is False by a not-a-knot cubic spline through the
    kept slices (a line through two, a parabola through three), constant beyond the first and last kept slices as
    :func:`linear_fill`. Kept slices are returned unchanged."""
    idx = np.flatnonzero(kept)
    if len(idx) < 2:
        return linear_fill(x, kept, axis)
    pos = np.clip(np.arange(x.shape[axis]), idx[0], idx[-1])
    out = CubicSpline(idx, np.take(x, idx, axis=axis).astype(np.float64), axis=axis)(pos)
    return np.where(_along(kept, axis, x.shape), x, out).astype(np.float32)


BASES = {"linear": linear_fill, "cubic": cubic_fill}


def base_fill(x: np.ndarray, kept: np.ndarray, axis: int, base: str) -> np.ndarray:
    """The interpolation the model's residual is added to (``linear`` or ``cubic``)."""
    if base not in BASES:
        raise ValueError(f"base must be one of {sorted(BASES)}; got {base!r}")
    return BASES[base](x, kept, axis)


def base_upsample(thick: np.ndarray, k: int, axis: int, base: str) -> np.ndarray:
    """Through-plane interpolation of a thick volume by ``k`` with the model's ``base`` (:func:`linear_upsample` or
    :func:`cubic_upsample`)."""
    grid, kept = thin_grid(thick, k, axis)
    return base_fill(grid, kept, axis, base)


def thin_grid(thick: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Place thick slices on the thin grid (every k-th of ``(n - 1) k + 1`` slices); returns the grid (zeros in
    the gaps) and the kept-slice flags."""
    n = thick.shape[axis]
    shape = list(thick.shape)
    shape[axis] = (n - 1) * k + 1
    out = np.zeros(shape, np.float32)
    idx = [slice(None)] * thick.ndim
    idx[axis] = slice(None, None, k)
    out[tuple(idx)] = thick
    return out, kept_slices(n, k)


def kept_slices(n: int, k: int) -> np.ndarray:
    """Flags of the acquired slices on the thin grid of ``n`` thick slices: every k-th of ``(n - 1) k + 1``."""
    return np.arange((n - 1) * k + 1) % k == 0


def _along(v: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """A per-slice vector ``v`` broadcast along ``axis`` to ``shape``."""
    return np.broadcast_to(v.reshape([-1 if a == axis else 1 for a in range(len(shape))]), shape)


def linear_upsample(thick: np.ndarray, k: int, axis: int = 2) -> np.ndarray:
    """Linear (here: trilinear, as the in-plane grid is unchanged) through-plane interpolation by ``k``."""
    grid, kept = thin_grid(thick, k, axis)
    return linear_fill(grid, kept, axis)


def cubic_upsample(thick: np.ndarray, k: int, axis: int = 2) -> np.ndarray:
    """Cubic-spline (not-a-knot) through-plane interpolation by ``k``: the cubic baseline, and the cubic model's
    base (the same :func:`cubic_fill`)."""
    grid, kept = thin_grid(thick, k, axis)
    return cubic_fill(grid, kept, axis)


def _cond(base: np.ndarray, kept: np.ndarray, axis: int) -> np.ndarray:
    """Condition channels ``(C + 2, *shape)`` of a base volume ``(C, *shape)`` (spatial ``axis``): the base
    (interpolated) sequences, the kept-slice flag and the distance to the nearest kept slice in units of 5 slices
    (so one model serves factors 2-5)."""
    idx = np.flatnonzero(kept)
    pos = np.arange(len(kept))
    dist = np.min(np.abs(pos[:, None] - idx[None, :]), axis=1) / 5.0
    spatial = base.shape[1:]
    flag, d = _along(kept.astype(np.float32), axis, spatial), _along(dist, axis, spatial)
    return np.concatenate([base, flag[None], d[None]]).astype(np.float32)


def training_pair(factors: list[int], axis: int, patch: int, augment: dict[str, float], base: str = "linear"):
    """``make(x, mask, rng)`` for :class:`~sciffusion.domains.medical.patches.PatchDataset`: a crop ``(C, ...)``
    longer by ``2 * max(factors)`` along spatial ``axis`` -> residual target (over the ``base`` interpolation),
    condition and loss mask of the central patch."""
    margin = max(factors)

    def make(x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        x = augment_intensity(x, m, rng, **augment)
        k = int(rng.choice(factors))
        n = x.shape[axis + 1]
        kept = (np.arange(n) - int(rng.integers(k))) % k == 0
        lin = base_fill(x, kept, axis + 1, base)
        sl = [slice(None)] * 3
        sl[axis] = slice(margin, margin + patch)
        sl = tuple(sl)
        cond = _cond(lin, kept, axis)[(slice(None),) + sl]
        target = (x - lin)[(slice(None),) + sl]
        loss_mask = m[sl] & ~_along(kept[sl[axis]], axis, m[sl].shape)
        return {"x": torch.from_numpy(np.ascontiguousarray(target)), "cond": torch.from_numpy(cond.copy()),
                "mask": torch.from_numpy(np.ascontiguousarray(loss_mask))[None]}

    return make


def superresolve(run: TrainedRun | str | os.PathLike, thick: Scan, factor: int, **kwargs: Any) -> np.ndarray:
    """Thin volume ``(C, ..., (n - 1) factor + 1, ...)`` (normalised units) from a prepared thick scan: the base
    volume plus the model's residual (see :func:`superres_residual` for the keyword arguments)."""
    lin, res = superres_residual(run, thick, factor, **kwargs)
    return lin + res


def superres_residual(run: TrainedRun | str | os.PathLike, thick: Scan, factor: int, *, mode: str | None = None,
                      samples: int | None = None, seed: int = 0, sampling: dict[str, Any] | None = None,
                      memory_gb: float | None = None, device: str | torch.device | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The base (interpolated) thin volume and the model's residual on it, both normalised
    ``(C, ..., (n - 1) factor + 1, ...)``; runs from before ``superres.base`` existed use linear.

    ``mode="mean"``: the model's conditional mean (one network pass at a high noise level; the best PSNR);
    ``mode="sample"``: the mean of ``samples`` posterior samples (one is a sharp, plausible volume). The residual
    is 0 on the kept slices and outside the (interpolated) foreground.
    """
    run = load_trained(run, task="superres")
    sr = run.config["superres"]
    axis, mode = int(sr["axis"]), mode or sr["mode"]
    samples = int(samples or sr["samples"])
    if factor < 2:
        raise ValueError(f"factor must be >= 2; got {factor}")
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode must be mean or sample; got {mode!r}")
    spec = run.sampling_spec(sampling)
    device = spec.resolve_device(device)
    run.to(device)
    kept = kept_slices(thick.mask.shape[axis], factor)
    lin = base_upsample(thick.x, factor, axis + 1, sr.get("base", "linear"))
    mask = linear_upsample(thick.mask.astype(np.float32), factor, axis) > 0.5
    cond = torch.from_numpy(_cond(lin, kept, axis))[None].to(device)
    budget = float(memory_gb or run.config.get("memory_gb", 4))

    def wrap(D: Any) -> Any:
        return tiled(D, run.config["model"]["net"], mask.shape, budget)

    if mode == "mean":
        # At 10 sigma_data the noisy input carries almost nothing, so D returns E[residual | cond]; higher
        # levels are rarely seen in training (log-normal sigmas) and less accurate.
        D = wrap(run.denoiser())
        top = min(spec.sigma_start, 10.0 * D.sigma_data)
        res = conditional_mean(D, lin.shape, cond, top, spec, device=device)[0]
    else:
        # One volume at a time (each is a whole tiled volume); sample i is keyed by its number.
        seeds = [derive_seed(seed, "superres", i) for i in range(samples)]
        res = run.sample(lin.shape, seeds, cond=cond.expand(samples, *cond.shape[1:]),
                         sampling=spec.replace(batch_size=1), wrap=wrap, device=device).mean(0)
    res = res.float().cpu().numpy()
    return lin, np.where(mask & ~_along(kept, axis, mask.shape), res, 0.0).astype(np.float32)


def thin_affine(affine: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """The affine of the thin grid: the slice axis' step divided by ``factor``, same first slice."""
    out = affine.copy()
    out[:3, axis] /= factor
    return out


def prepare_thick(run: TrainedRun, item: Any, series: str | None = None, mask: Any = None,
                  read_options: dict[str, Any] | None = None) -> Scan:
    """A thick scan (path, volume, or cohort subject) prepared at the run's in-plane spacing; its slice axis is
    kept as acquired. ``read_options``: ``--resample``/``--series`` over the run's."""
    d = with_read_options(run.config["data"], read_options)
    if not isinstance(item, (Subject, Volume, list, tuple)) and d.get("series"):
        item = read_volume(item, d["series"])
    if d.get("spacing") is not None:
        d["spacing"] = [None if i == int(run.config["superres"]["axis"]) else float(v)
                        for i, v in enumerate(d["spacing"])]
    if isinstance(item, Subject):
        return prepare_subject(d, item, series)
    return prepare_like(d, item, mask)


def write_thin(run: TrainedRun, thick: Scan, out: str | os.PathLike, factor: int | None = None, **kwargs: Any) -> int:
    """Super-resolve a prepared thick scan and write it (one file per sequence when there are several,
    ``out_SEQUENCE.nii.gz``) in the scan's units and in-plane grid: its own slices and background exactly, plus
    the model's residual scaled by each sequence's normalisation. Returns the factor used."""
    axis = int(run.config["superres"]["axis"])
    k = factor or int(round(thick.volume.spacing[axis] / run.metadata["spacing"][axis]))
    if k < 2:
        raise ValueError(f"the scan's slice spacing {thick.volume.spacing[axis]:.2f} mm is not thicker than the "
                         f"training scans' {run.metadata['spacing'][axis]:.2f} mm; pass --factor")
    _, residual = superres_residual(run, thick, int(k), **kwargs)
    base = run.config["superres"].get("base", "linear")
    src = thick.input
    grid = thin_affine(src.affine, k, axis)
    shape = list(src.data.shape)
    shape[axis] = (shape[axis] - 1) * k + 1
    names = [None] if len(residual) == 1 else list(thick.sequences)
    for c, name in enumerate(names):
        res = residual[c] * (thick.norms[c].hi - thick.norms[c].lo)
        if thick.resampled:  # back from the run's in-plane grid onto the scan's own
            res = resample_onto(res, thin_affine(thick.volume.affine, k, axis), grid, shape)
        target = out if name is None else tagged(out, name)
        write_volume(target, base_upsample(thick.inputs[c].data, int(k), axis, base) + res, src, affine=grid,
                     descrip=f"sciffusion superres x{k} {run.config['superres'].get('mode', 'mean')}")
    return int(k)
