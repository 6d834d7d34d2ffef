"""Unsupervised anomaly detection in 3-D scans: train on healthy patches, flag what the model cannot rebuild.

A scan is noised with low-frequency (coarse) noise at a few levels, reconstructed in one step (or a few) by the
diffusion model over the whole volume in blended tiles, and the voxel error, averaged over levels and seeds and
smoothed, is the anomaly score (AnoDDPM's partial diffusion with the field notes' lessons: coarse noise, one-step
reconstruction, averaging). A threshold is calibrated on healthy scans at a stated voxel false-positive rate.

The same code trains the baselines: ``method: dae`` is the same U-Net trained as a denoising autoencoder at one
noise level (no diffusion), and :func:`zscore_map` the intensity z-score against the healthy training scans.

    sciffusion train anomaly --data healthy1.nii.gz [healthy2 ...] [--mask M.nii.gz] --out RUN
    sciffusion detect --run RUN --data scan.nii.gz --out scores.nii.gz [--binary lesions.nii.gz]
    sciffusion evaluate anomaly --scores scores.nii.gz --lesions truth.nii.gz [--mask M.nii.gz]
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ...diffusion import coarse_noise, generators_from_seeds, partial_diffusion
from ...tasks.base import Flag, Task, register, resolve_device
from ...tasks.outputs import report_scores
from ...training.config import merge
from ...training.fit import TrainedRun, load_trained
from .scans import (MEDICAL_DEFAULTS, SCAN_SAMPLE_FLAGS, SCAN_TRAIN_FLAGS, Scan, as_batch, prepare_like,
                    scans_from_config, tiled, train_on_patches)
from .scores import detection_scores, threshold_at_fpr
from .volumes import read_volume, write_volume

ANOMALY_DEFAULTS: dict[str, Any] = {
    "anomaly": {"method": "diffusion", "sigmas": [0.1, 0.2, 0.3], "dae_sigma": 0.2, "seeds": 4, "noise_factor": 4,
                "steps": 1, "smooth": 2.0, "fpr": 0.01, "calibration": None},
}


def _levels(run: TrainedRun) -> list[float]:
    a = run.config["anomaly"]
    return [float(a["dae_sigma"])] if a["method"] == "dae" else [float(s) for s in a["sigmas"]]


def anomaly_map(run: TrainedRun | str | os.PathLike, scan: Scan, *, sigmas: Sequence[float] | None = None,
                seeds: int | Sequence[int] | None = None, steps: int | None = None, smooth: float | None = None,
                memory_gb: float | None = None, device: str | torch.device | None = None) -> np.ndarray:
    """Voxel anomaly scores ``(X, Y, Z)`` of a prepared scan (0 outside its mask).

    For each noise level ``sigma`` (normalised intensity units) and seed: add coarse noise (the factor the model
    was trained with), reconstruct with ``steps`` denoiser steps over the whole volume in tiles, take ``|x - x_hat|``.
    The mean over levels and seeds is smoothed by a Gaussian of ``smooth`` voxels. Settings default to the run's.
    """
    run = load_trained(run, task="anomaly")
    a = run.config["anomaly"]
    sigmas = _levels(run) if sigmas is None else list(sigmas)
    seeds = list(range(int(a["seeds"]))) if seeds is None else (list(range(seeds)) if isinstance(seeds, int) else list(seeds))
    steps = int(a["steps"] if steps is None else steps)
    smooth = float(a["smooth"] if smooth is None else smooth)
    device = resolve_device(device)
    run.to(device)
    x = as_batch(scan.x, device)
    D = tiled(run.denoiser(), run.config["model"]["net"], scan.x.shape,
              float(memory_gb or run.config.get("memory_gb", 4.0)))
    err = torch.zeros_like(x)
    with torch.inference_mode():
        for i, sigma in enumerate(sigmas):
            for s in seeds:
                g = generators_from_seeds([s * 1009 + i], device)
                n = coarse_noise(x.shape, int(a["noise_factor"]), g, device=device)
                err += (partial_diffusion(D, x, sigma, steps=steps, noise=n, generator=g) - x).abs()
    score = (err / (len(sigmas) * len(seeds)))[0, 0].cpu().numpy()
    return masked_smooth(score, scan.mask, smooth)


def masked_smooth(score: np.ndarray, mask: np.ndarray, smooth: float) -> np.ndarray:
    """Gaussian smoothing inside ``mask`` only (normalised convolution), 0 outside: errors outside the foreground
    (never trained on) must not bleed into the border tissue, and border voxels must not be diluted by zeros."""
    m = mask.astype(np.float32)
    s = np.where(mask, score, 0.0).astype(np.float32)
    if smooth > 0:
        s = ndimage.gaussian_filter(s, smooth) / np.maximum(ndimage.gaussian_filter(m, smooth), 1e-6)
    return np.where(mask, s, 0.0).astype(np.float32)


def zscore_map(scan: Scan, healthy: Sequence[Scan], smooth: float = 2.0) -> np.ndarray:
    """The intensity z-score baseline ``|x - mu| / sd`` against healthy scans: per voxel when three or more
    healthy scans share the scan's grid (a registered population), else against the healthy foreground's global
    mean and SD (one template cannot give voxel statistics). Smoothed like :func:`anomaly_map`."""
    same = [h for h in healthy if h.x.shape == scan.x.shape]
    if len(same) >= 3:
        stack = np.stack([h.x for h in same])
        mu, sd = stack.mean(0), stack.std(0) + 1e-3
    else:
        v = np.concatenate([h.x[h.mask] for h in healthy])
        mu, sd = v.mean(), v.std()
    return masked_smooth(np.abs(scan.x - mu) / sd, scan.mask, smooth)


def calibrate(run: TrainedRun | str | os.PathLike, healthy: Sequence[Scan], fpr: float | None = None,
              regions: Sequence[np.ndarray] | None = None, **kwargs: Any) -> float:
    """The threshold that flags a fraction ``fpr`` (default: the run's) of healthy voxels (inside each scan's
    mask, or ``regions``) as anomalous. Use healthy scans the model was not trained on."""
    run = load_trained(run, task="anomaly")
    fpr = float(run.config["anomaly"]["fpr"] if fpr is None else fpr)
    regions = [h.mask for h in healthy] if regions is None else regions
    scores = np.concatenate([anomaly_map(run, h, **kwargs)[r] for h, r in zip(healthy, regions)])
    return threshold_at_fpr(scores, fpr)


def stored_threshold(run: TrainedRun) -> float | None:
    """The threshold calibrated at training (``--calibration``), if any."""
    return run.metadata.get("metrics", {}).get("threshold")


def detect(run: TrainedRun | str | os.PathLike, data: Any, mask: Any = None, *, out: str | os.PathLike | None = None,
           binary: str | os.PathLike | None = None, threshold: float | None = None, **kwargs: Any
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Score a scan (path or :class:`~sciffusion.domains.medical.volumes.Volume`) and write the score map (and,
    with a threshold, given or calibrated at training, the binary map) as NIfTI on the scan's grid."""
    run = load_trained(run, task="anomaly")
    scan = prepare_like(run.config["data"], data, mask)
    score = anomaly_map(run, scan, **kwargs)
    threshold = stored_threshold(run) if threshold is None else threshold
    pred = None if threshold is None else (score > threshold)
    if out is not None:
        write_volume(out, score, scan.volume)
    if binary is not None:
        if pred is None:
            raise ValueError("no threshold: train with --calibration healthy scans or pass --threshold")
        write_volume(binary, pred.astype(np.uint8), scan.volume, dtype=np.uint8)
    return score, pred


@register
class Anomaly(Task):
    name = "anomaly"
    verb = "detect"
    summary = "unsupervised voxel anomaly maps of 3-D scans (NIfTI/DICOM) from a model of healthy patches"
    defaults = merge(MEDICAL_DEFAULTS, ANOMALY_DEFAULTS)
    train_flags = SCAN_TRAIN_FLAGS + (
        Flag("--method", "anomaly.method", "diffusion, or dae (the denoising-autoencoder baseline)"),
        Flag("--calibration", "anomaly.calibration", "held-out healthy scans to set the threshold on", nargs="+"),
        Flag("--fpr", "anomaly.fpr", "voxel false-positive rate of the calibrated threshold", float),
    )
    sample_flags = SCAN_SAMPLE_FLAGS + (
        Flag("--binary", "binary", "also write the thresholded map here"),
        Flag("--threshold", "threshold", "score threshold (default: the run's calibrated one)", float),
        Flag("--seeds", "anomaly.seeds", "noise seeds to average", int),
    )
    evaluate_flags = (
        Flag("--scores", "scores", "a score map written by sciffusion detect"),
        Flag("--lesions", "lesions", "the ground-truth lesion mask (NIfTI)"),
        Flag("--mask", "data.mask", "evaluate inside this mask (default: where scores are defined)"),
        Flag("--threshold", "threshold", "score threshold for Dice (default: the run's calibrated one)", float),
    )
    required_sample = ("run", "out", "data.path")
    required_evaluate = ("scores", "lesions")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        a = config["anomaly"]
        if a["method"] not in ("diffusion", "dae"):
            raise ValueError(f"--method must be diffusion or dae; got {a['method']!r}")
        if a["method"] == "dae":  # the baseline: one noise level, no diffusion
            config = merge(config, {"model": {"process": {"name": "fixed", "sigma": float(a["dae_sigma"])}}})
        config = merge(config, {"model": {"noise_factor": int(a["noise_factor"])}})
        scans = scans_from_config(config)
        p = int(config["data"]["patch"])

        def calibrate_on_holdout(module: Any) -> dict[str, Any]:
            if not a.get("calibration"):
                return {}
            run = TrainedRun(module, None, config)
            held = [prepare_like(config["data"], f) for f in a["calibration"]]
            thr = calibrate(run, held)
            return {"metrics": {"threshold": thr, "calibration_fpr": float(a["fpr"])}}

        return train_on_patches(config, scans, (p, p, p), None, {"in_channels": 1}, {"method": a["method"]},
                                calibrate=calibrate_on_holdout)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        a = config.get("anomaly", {})
        detect(run, config["data"]["path"], config["data"].get("mask"), out=config["out"], binary=config.get("binary"),
               threshold=config.get("threshold"), seeds=a.get("seeds"), memory_gb=config.get("memory_gb"),
               device=config.get("sampling", {}).get("device"))
        return pathlib.Path(config["out"])

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        scores = read_volume(config["scores"])
        truth = read_volume(config["lesions"])
        if truth.data.shape != scores.data.shape:
            raise ValueError(f"lesion mask shape {truth.data.shape} does not match the scores {scores.data.shape}")
        mask_path = config.get("data", {}).get("mask")
        mask = read_volume(mask_path).data > 0.5 if mask_path else scores.data != 0
        thr = config.get("threshold")
        if thr is None and config.get("run"):
            thr = stored_threshold(load_trained(config["run"], task=self.name))
        table = detection_scores(scores.data, truth.data > 0.5, mask, thr)
        return report_scores(table, json.dumps(table, indent=2), config.get("out"))

