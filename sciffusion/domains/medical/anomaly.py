"""Unsupervised anomaly detection in 3-D scans: train on healthy patches, flag what the model cannot rebuild.

A scan is noised with low-frequency (coarse) noise at a few levels, reconstructed in one step (or a few) by the
diffusion model over the whole volume in blended tiles, and the reconstruction error, averaged over levels and seeds,
becomes the anomaly score (AnoDDPM's partial diffusion with the field notes' lessons: coarse noise, one-step
reconstruction, averaging). By default the score is the band-passed signed error (a lesion is a blob of one sign;
misregistered edges give errors of alternating sign, a corrected bias field a smooth one); ``abs`` is AnoDDPM's
smoothed absolute error. :func:`choose_scoring` picks levels and score on a validation scan with known lesions. A
threshold is calibrated on healthy scans at a stated voxel false-positive rate.

The same code trains the baselines: ``method: dae`` is the same U-Net trained as a denoising autoencoder at one
noise level (no diffusion), and :func:`zscore_map` the intensity z-score against the healthy training scans.

    sciffusion train anomaly --data healthy1.nii.gz [healthy2 ...] [--mask M.nii.gz] --out RUN
    sciffusion detect --run RUN --data scan.nii.gz --out scores.nii.gz [--binary lesions.nii.gz]
    sciffusion evaluate anomaly --scores scores.nii.gz --lesions truth.nii.gz [--mask M.nii.gz]
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ...diffusion import coarse_noise, derive_seed, generators_from_seeds, partial_diffusion
from ...metrics import auroc
from ...training.fit import TrainedRun, load_trained
from ...training.sampling import resolve_device
from .batch import each_subject, nifti_name
from .cohort import Subject, read_cohort
from .grids import resample_onto
from .scans import (
    Scan,
    as_batch,
    check_sequences,
    prepare_like,
    prepare_subject,
    tiled,
    with_read_options,
)
from .scores import dice, threshold_at_fpr
from .volumes import Volume, read_volume, tagged, write_volume

# Scoring defaults chosen on a validation case of the protocol (brain_benchmark(seed=1): other perturbations and
# lesions than the reported test), not on the test: levels 0.05/0.1/0.3 and the band-pass score.
ANOMALY_DEFAULTS: dict[str, Any] = {
    "anomaly": {"method": "diffusion", "sigmas": [0.05, 0.1, 0.3], "dae_sigma": 0.2, "seeds": 4, "noise_factor": 4,
                "steps": 1, "score": "bandpass", "smooth": 1.5, "background": 6.0, "fpr": 0.01,
                "calibration": None, "validation": None, "validation_lesions": None},
}
SCORES = ("abs", "bandpass")
# What choose_scoring tries: (score, smooth, background) per mode, with every non-empty subset of the levels.
SCORING_CANDIDATES: tuple[tuple[str, float, float], ...] = (
    ("abs", 2.0, 0.0), ("bandpass", 1.0, 4.0), ("bandpass", 1.5, 6.0), ("bandpass", 2.0, 8.0))


def _levels(run: TrainedRun) -> list[float]:
    a = run.config["anomaly"]
    return [float(a["dae_sigma"])] if a["method"] == "dae" else [float(s) for s in a["sigmas"]]


def residuals(run: TrainedRun | str | os.PathLike, scan: Scan, sigmas: Sequence[float], *,
              seeds: int | Sequence[int] | None = None, steps: int | None = None, memory_gb: float | None = None,
              device: str | torch.device | None = None) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Per noise level ``sigma`` (normalised intensity units): the mean over seeds of the signed reconstruction
    error ``x_hat - x`` and of its absolute value, each ``(C, X, Y, Z)`` (one channel per sequence). ``x_hat`` is
    ``x`` plus coarse noise (the factor the model was trained with) reconstructed in ``steps`` denoiser steps over
    the whole volume in tiles. The noise of (seed, level) depends on those two only, so a level's residual is the
    same in any set of levels."""
    run = load_trained(run, task="anomaly")
    run.require_noise_levels("detection by partial diffusion")
    a = run.config["anomaly"]
    seeds = list(range(int(a["seeds"]))) if seeds is None else (list(range(seeds)) if isinstance(seeds,
                                                                                                 int) else list(seeds))
    steps = int(a["steps"] if steps is None else steps)
    device = resolve_device(device)
    run.to(device)
    # The whole volume, its noise and the sums stay on the host; only the tiles go to the device (a 512^3 CT does
    # not fit beside the network on most accelerators), and the noise is the same whichever device computes.
    host = torch.device("cpu")
    x = as_batch(scan.x, host)
    D = tiled(run.denoiser(), run.config["model"]["net"], scan.mask.shape,
              float(memory_gb or run.config.get("memory_gb", 4.0)), device=device)
    out = {}
    with torch.inference_mode():
        for sigma in sigmas:
            signed, absolute = torch.zeros_like(x), torch.zeros_like(x)
            for s in seeds:
                g = generators_from_seeds([derive_seed(s, "residual", f"{float(sigma):.9g}")], host)
                n = coarse_noise(x.shape, int(a["noise_factor"]), g, device=host)
                d = partial_diffusion(D, x, float(sigma), steps=steps, noise=n, generator=g)
                del n
                d -= x  # in place: a whole-volume buffer less at the peak
                signed += d
                absolute += d.abs_()
            out[float(sigma)] = ((signed / len(seeds))[0].cpu().numpy(), (absolute / len(seeds))[0].cpu().numpy())
    return out


def _mean_over(res: dict[float, tuple[np.ndarray, np.ndarray]], levels: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """The signed and absolute :func:`residuals` averaged over ``levels``."""
    return (sum(res[v][0] for v in levels) / len(levels), sum(res[v][1] for v in levels) / len(levels))


def score_map(signed: np.ndarray, absolute: np.ndarray, mask: np.ndarray, score: str = "bandpass",
              smooth: float = 1.5, background: float = 6.0) -> np.ndarray:
    """Voxel scores from mean residuals (0 outside ``mask``). ``abs``: the absolute error smoothed by ``smooth``
    voxels (AnoDDPM's map). ``bandpass``: ``|G_smooth * e - G_background * e|`` of the signed error ``e``, both
    Gaussians inside the mask: a lesion is a blob of one sign, while the errors of misregistered edges alternate in
    sign and cancel, and a smooth intensity drift (bias field) the model corrects is removed by the background.
    Residuals ``(C, X, Y, Z)`` give one map per channel."""
    if signed.ndim == mask.ndim + 1:
        return np.stack([score_map(s, a, mask, score, smooth, background) for s, a in zip(signed, absolute)])
    if score == "abs":
        return masked_smooth(absolute, mask, smooth)
    if score == "bandpass":
        if not background > smooth:
            raise ValueError(f"background ({background}) must be wider than smooth ({smooth})")
        band = masked_smooth(signed, mask, smooth) - masked_smooth(signed, mask, background)
        return np.where(mask, np.abs(band), 0.0).astype(np.float32)
    raise ValueError(f"score must be one of {SCORES}; got {score!r}")


def anomaly_map(run: TrainedRun | str | os.PathLike, scan: Scan, *, sigmas: Sequence[float] | None = None,
                seeds: int | Sequence[int] | None = None, steps: int | None = None, score: str | None = None,
                smooth: float | None = None, background: float | None = None, memory_gb: float | None = None,
                device: str | torch.device | None = None, per_channel: bool = False) -> np.ndarray:
    """Voxel anomaly scores ``(X, Y, Z)`` of a prepared scan (0 outside its mask): the :func:`residuals` at each
    level, averaged over levels, through :func:`score_map`, combined over channels by :func:`combine`;
    ``per_channel``: the maps of each sequence ``(C, X, Y, Z)`` instead. Settings default to the run's."""
    run = load_trained(run, task="anomaly")
    a = run.config["anomaly"]
    levels = residuals(run, scan, _levels(run) if sigmas is None else list(sigmas), seeds=seeds, steps=steps,
                       memory_gb=memory_gb, device=device)
    signed, absolute = _mean_over(levels, list(levels))
    pick = lambda v, k, d: float(a.get(k, d) if v is None else v)  # noqa: E731
    maps = score_map(signed, absolute, scan.mask, a.get("score", "abs") if score is None else score,
                     pick(smooth, "smooth", 2.0), pick(background, "background", 6.0))
    return maps if per_channel else combine(maps)


def combine(maps: np.ndarray) -> np.ndarray:
    """One score per voxel from per-channel maps ``(C, X, Y, Z)``: the largest (a lesion seen in any one
    sequence, FLAIR only say, is flagged; the channels share one normalised intensity scale)."""
    return maps.max(axis=0) if maps.ndim == 4 else maps


def choose_scoring(run: TrainedRun | str | os.PathLike, scan: Scan | Sequence[Scan], truth: Any, region: Any, *,
                   levels: Sequence[float] | None = None,
                   candidates: Sequence[tuple[str, float, float]] = SCORING_CANDIDATES, **kwargs: Any
                   ) -> tuple[dict[str, Any], float]:
    """Scoring settings chosen on validation scans with known lesions (``truth``; AUROC inside ``region``, pooled
    over the scans when lists are given): every non-empty subset of ``levels`` (default 0.05/0.1/0.2/0.3; a DAE
    run: its one level) with every ``(score, smooth, background)`` candidate. Returns (the settings, as keyword
    arguments of :func:`anomaly_map`, and their AUROC). Choose on scans other than the ones you report on."""
    run = load_trained(run, task="anomaly")
    scans, truths, regions = ([scan], [truth], [region]) if isinstance(scan, Scan) else (list(scan), truth, region)
    if levels is None:
        levels = _levels(run) if run.config["anomaly"]["method"] == "dae" else [0.05, 0.1, 0.2, 0.3]
    res = [residuals(run, sc, levels, **kwargs) for sc in scans]
    target = np.concatenate([t[r] for t, r in zip(truths, regions)])
    best: tuple[dict[str, Any], float] = ({}, -1.0)
    for k in range(1, len(levels) + 1):
        for subset in itertools.combinations([float(v) for v in levels], k):
            means = [_mean_over(r, subset) for r in res]
            for score, smooth, background in candidates:
                pooled = np.concatenate([combine(score_map(sg, ab, sc.mask, score, smooth, background))[r]
                                         for (sg, ab), sc, r in zip(means, scans, regions)])
                auc = auroc(pooled, target)
                if auc > best[1]:
                    best = ({"sigmas": list(subset), "score": score, "smooth": smooth, "background": background}, auc)
    return best


def masked_smooth(score: np.ndarray, mask: np.ndarray, smooth: float) -> np.ndarray:
    """Gaussian smoothing inside ``mask`` only (normalised convolution), 0 outside: errors outside the foreground
    (never trained on) must not bleed into the border tissue, and border voxels must not be diluted by zeros."""
    m = mask.astype(np.float32)
    s = np.where(mask, score, 0.0).astype(np.float32)
    if smooth > 0:
        s = ndimage.gaussian_filter(s, smooth) / np.maximum(ndimage.gaussian_filter(m, smooth), 1e-6)
    return np.where(mask, s, 0.0).astype(np.float32)


def zscore_map(scan: Scan, healthy: Sequence[Scan], smooth: float = 2.0) -> np.ndarray:
    """The intensity z-score baseline ``|x - mu| / sd`` against healthy scans, per channel, the largest over
    channels: per voxel when three or more healthy scans share the scan's grid (a registered population), else
    against the healthy foreground's global mean and SD (one template cannot give voxel statistics). Smoothed like
    :func:`anomaly_map`."""
    same = [h for h in healthy if h.x.shape == scan.x.shape]
    if len(same) >= 3:
        stack = np.stack([h.x for h in same])
        mu, sd = stack.mean(0), stack.std(0) + 1e-3
    else:
        v = np.concatenate([h.x[:, h.mask] for h in healthy], axis=1)  # (C, voxels)
        mu, sd = v.mean(1)[:, None, None, None], v.std(1)[:, None, None, None]
    z = np.abs(scan.x - mu) / sd
    return combine(np.stack([masked_smooth(c, scan.mask, smooth) for c in z]))


def calibrate(run: TrainedRun | str | os.PathLike, healthy: Sequence[Scan], fpr: float | None = None,
              regions: Sequence[np.ndarray] | None = None, **kwargs: Any) -> float:
    """The threshold that flags a fraction ``fpr`` (default: the run's) of healthy voxels (inside each scan's
    mask, or ``regions``) as anomalous. Use healthy scans the model was not trained on."""
    return calibration(run, healthy, fpr, regions, **kwargs)["threshold"]


def calibration(run: TrainedRun | str | os.PathLike, healthy: Sequence[Scan], fpr: float | None = None,
                regions: Sequence[np.ndarray] | None = None, **kwargs: Any) -> dict[str, float]:
    """:func:`calibrate`'s ``threshold`` and ``cluster_ml``: the largest connected cluster above it in any
    healthy scan (mL), the subject-level rule of :func:`screen` (a subject is flagged when a cluster of its map is
    larger than any healthy scan's: cluster-extent thresholding)."""
    run = load_trained(run, task="anomaly")
    fpr = float(run.config["anomaly"]["fpr"] if fpr is None else fpr)
    regions = [h.mask for h in healthy] if regions is None else regions
    maps = [anomaly_map(run, h, **kwargs) for h in healthy]
    threshold = threshold_at_fpr(np.concatenate([m[r] for m, r in zip(maps, regions)]), fpr)
    cluster = max(largest_cluster_ml(m > threshold, r, h.volume.spacing) for m, r, h in zip(maps, regions, healthy))
    return {"threshold": threshold, "cluster_ml": cluster}


def largest_cluster_ml(flags: np.ndarray, region: np.ndarray, spacing: Sequence[float]) -> float:
    """The volume (mL) of the largest face-connected cluster of ``flags`` inside ``region``."""
    labels, n = ndimage.label(flags & region)
    if n == 0:
        return 0.0
    return float(np.bincount(labels.ravel())[1:].max() * np.prod(spacing) / 1000.0)


def lesion_scores(score: np.ndarray, pred: np.ndarray | None, mask: np.ndarray, subject: Subject, scan: Scan
                  ) -> dict[str, float]:
    """A subject's map against its lesion mask (the manifest's ``label`` file, on the subject's grid): lesion
    volume (mL), voxel AUROC inside the mask and Dice at the threshold."""
    truth_vol = read_volume(str(subject.label))
    if truth_vol.data.shape != score.shape:
        raise subject.error(f"lesion mask shape {truth_vol.data.shape} does not match the scan {score.shape}")
    truth = truth_vol.data > 0.5
    out = {"lesion_ml": float(truth.sum() * np.prod(scan.input.spacing) / 1000.0)}
    if truth[mask].any() and not truth[mask].all():
        out["lesion_auroc"] = auroc(score[mask], truth[mask])
    if pred is not None:
        out["dice"] = dice(pred, truth, mask)
    return out


def on_model_grid(scan: Scan, lesions: Any) -> np.ndarray:
    """A lesion mask (path or volume on the scan's own grid) on the grid the model scores ``scan`` at."""
    vol = lesions if isinstance(lesions, Volume) else read_volume(lesions)
    if vol.data.shape != scan.input.data.shape:
        raise ValueError(f"lesion mask shape {vol.data.shape} does not match the scan {scan.input.data.shape}")
    return resample_onto(vol.data.astype(np.float32), vol.affine, scan.volume.affine, scan.mask.shape) > 0.5


def stored_threshold(run: TrainedRun) -> float | None:
    """The threshold calibrated at training (``--calibration``), if any."""
    return run.metadata.get("metrics", {}).get("threshold")


def _describe(run: TrainedRun) -> str:
    a = run.config["anomaly"]
    return f"sciffusion anomaly score {a.get('score', 'abs')} {a['method']} sigmas {_levels(run)}"


def detect(run: TrainedRun | str | os.PathLike, data: Any, mask: Any = None, *, out: str | os.PathLike | None = None,
           binary: str | os.PathLike | None = None, threshold: float | None = None,
           read_options: dict[str, Any] | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Score a scan (a path, a :class:`~sciffusion.domains.medical.volumes.Volume`, a list of them: one subject's
    sequences, or a prepared :class:`Scan`) and write the score map (and, with a threshold, given or calibrated at
    training, the binary map) as NIfTI on the scan's own grid; with several sequences also one map per sequence
    (``out_SEQUENCE.nii.gz``). ``read_options``: ``{"series": ..., "resample": ...}`` over the run's. Returns the
    maps on the scan's grid."""
    run = load_trained(run, task="anomaly")
    settings = with_read_options(run.config["data"], read_options)
    if not isinstance(data, Scan) and settings.get("series") and not isinstance(data, (list, tuple, Volume)):
        data = read_volume(data, settings["series"])
    scan = data if isinstance(data, Scan) else prepare_like(settings, data, mask)
    per = anomaly_map(run, scan, per_channel=True, **kwargs)
    score = scan.native(combine(per))
    threshold = stored_threshold(run) if threshold is None else threshold
    pred = None if threshold is None else (score > threshold) & (scan.native(scan.mask.astype(np.float32)) > 0.5)
    if binary is not None and pred is None:
        raise ValueError("no threshold: train with --calibration healthy scans or pass --threshold")
    if out is not None:
        write_volume(out, score, scan.input, descrip=_describe(run))
        if len(per) > 1:
            for name, m in zip(scan.sequences, per):
                scan.write(tagged(out, name), m, descrip=f"{_describe(run)} {name}")
    if binary is not None and pred is not None:
        write_volume(binary, pred.astype(np.uint8), scan.input, dtype=np.uint8,
                     descrip=f"sciffusion anomaly > {threshold:.4g}")
    return score, pred


def screen(run: TrainedRun | str | os.PathLike, cohort: Any, out: str | os.PathLike, *,
           threshold: float | None = None, progress: bool = True, read_options: dict[str, Any] | None = None,
           **kwargs: Any) -> pathlib.Path:
    """Score every subject of a cohort (a manifest, pattern, DataFrame or
    :class:`~sciffusion.domains.medical.cohort.Cohort`): ``out/SUBJECT_score.nii.gz`` (and per sequence
    ``SUBJECT_score_SEQUENCE.nii.gz``), with a threshold ``SUBJECT_binary.nii.gz``, and ``out/scores.csv``: the
    anomalous volume (mL, above the threshold inside the mask), the max and mean score in the mask, the largest
    cluster, and ``flagged``: whether that cluster is larger than any healthy calibration scan's (empty for runs
    calibrated before this existed); with a lesion mask as the subject's ``label``, its lesion volume, AUROC and
    Dice. ``read_options`` as :func:`detect`'s. Resumable (see :mod:`~sciffusion.domains.medical.batch`)."""
    run = load_trained(run, task="anomaly")
    cohort = read_cohort(cohort)
    check_sequences(run.metadata.get("sequences"), cohort)
    threshold = stored_threshold(run) if threshold is None else threshold
    cluster_ml = run.metadata.get("metrics", {}).get("cluster_ml")

    def work(subject: Subject, folder: pathlib.Path) -> dict[str, Any]:
        scan = prepare_subject(with_read_options(run.config["data"], read_options), subject, series=cohort.series)
        score, pred = detect(run, scan, out=nifti_name(folder, subject.id, "score"),
                             binary=None if threshold is None else nifti_name(folder, subject.id, "binary"),
                             threshold=threshold, **kwargs)
        mask = scan.native(scan.mask.astype(np.float32)) > 0.5
        row: dict[str, Any] = {"max_score": float(score[mask].max()), "mean_score": float(score[mask].mean())}
        if pred is not None:
            voxel_ml = float(np.prod(scan.input.spacing)) / 1000.0
            largest = largest_cluster_ml(pred, mask, scan.input.spacing)
            row.update(anomalous_ml=float(pred.sum()) * voxel_ml, largest_cluster_ml=largest,
                       flagged="" if cluster_ml is None else bool(largest > cluster_ml))
        if subject.label and pathlib.Path(subject.label).is_file():  # a lesion mask: score the subject against it
            row.update(lesion_scores(score, pred, mask, subject, scan))
        return row

    return each_subject(cohort, out, work, "scores.csv", "detect", progress)

