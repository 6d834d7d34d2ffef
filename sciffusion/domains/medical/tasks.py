"""The medical tasks: the CLI adapters of ``sciffusion train anomaly|superres|volume``, ``detect``, ``superres``,
``generate`` and ``evaluate``, and the Python API that trains them (:func:`train_anomaly`, :func:`train_superres`,
:func:`train_volume`)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import torch

from ...tasks.base import TASKS, Flag, Task, register
from ...tasks.outputs import report_scores
from ...training.config import merge
from ...training.fit import TrainedRun, load_trained
from .anomaly import (
    ANOMALY_DEFAULTS,
    SCORES,
    calibration,
    choose_scoring,
    detect,
    on_model_grid,
    screen,
    stored_threshold,
)
from .batch import each_subject, nifti_name
from .cohort import Subject, read_cohort
from .generate import VOLUME_DEFAULTS, generate_volumes, write_samples
from .patches import augment_intensity
from .scans import (
    MEDICAL_DEFAULTS,
    SCAN_SAMPLE_FLAGS,
    SCAN_TRAIN_FLAGS,
    check_sequences,
    config_cohort,
    prepare_like,
    prepare_subject,
    train_on_patches,
    training_cohort,
)
from .scores import detection_scores
from .superres import BASES, SUPERRES_DEFAULTS, prepare_thick, training_pair, write_thin
from .volumes import read_volume, tagged


@register
class Anomaly(Task):
    name = "anomaly"
    verb = "detect"
    summary = "unsupervised voxel anomaly maps of 3-D scans (NIfTI/DICOM) from a model of healthy patches"
    required_train = ("out",)  # the scans: --data or --cohort (checked with a clear error)
    defaults = merge(MEDICAL_DEFAULTS, ANOMALY_DEFAULTS)
    train_flags = SCAN_TRAIN_FLAGS + (
        Flag("--method", "anomaly.method", "diffusion, or dae (the denoising-autoencoder baseline)"),
        Flag("--calibration", "anomaly.calibration", "held-out healthy scans to set the threshold on (default with "
             "a --cohort: its subjects of split 'calibration')", nargs="+"),
        Flag("--fpr", "anomaly.fpr", "voxel false-positive rate of the calibrated threshold", float),
        Flag("--validation", "anomaly.validation", "a scan with known lesions to choose levels and score on "
             "(default with a --cohort: its split 'validation' subjects whose label is a lesion mask)"),
        Flag("--validation-lesions", "anomaly.validation_lesions", "the lesion mask of --validation (NIfTI)"),
        Flag("--sigmas", "anomaly.sigmas", "noise levels the scores average (normalised intensity)", float,
             nargs="+"),
        Flag("--score", "anomaly.score", "bandpass (signed error, band-passed) or abs (smoothed absolute error)"),
    )
    sample_flags = SCAN_SAMPLE_FLAGS + (
        Flag("--binary", "binary", "also write the thresholded map here"),
        Flag("--threshold", "threshold", "score threshold (default: the run's calibrated one)", float),
        Flag("--seeds", "anomaly.seeds", "noise seeds to average", int),
        Flag("--sigmas", "anomaly.sigmas", "noise levels to average (normalised intensity)", float, nargs="+"),
        Flag("--score", "anomaly.score", "bandpass (signed error, band-passed) or abs (smoothed absolute error)"),
    )
    run_settings = ("sampling", "anomaly")
    evaluate_flags = (
        Flag("--scores", "scores", "a score map written by sciffusion detect"),
        Flag("--lesions", "lesions", "the ground-truth lesion mask (NIfTI)"),
        Flag("--mask", "data.mask", "evaluate inside this mask (default: where scores are defined)"),
        Flag("--threshold", "threshold", "score threshold for Dice (default: the run's calibrated one)", float),
    )
    required_sample = ("run", "out")
    required_evaluate = ("scores", "lesions")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        a = config["anomaly"]
        if a["method"] not in ("diffusion", "dae"):
            raise ValueError(f"--method must be diffusion or dae; got {a['method']!r}")
        if a.get("score", "abs") not in SCORES:
            raise ValueError(f"--score must be one of {SCORES}; got {a['score']!r}")
        if bool(a.get("validation")) != bool(a.get("validation_lesions")):
            raise ValueError("--validation and --validation-lesions go together (a scan and its lesion mask)")
        if a["method"] == "dae":  # the baseline: one noise level, no diffusion
            config = merge(config, {"model": {"process": {"name": "fixed", "sigma": float(a["dae_sigma"])}}})
        config = merge(config, {"model": {"noise_factor": int(a["noise_factor"])}})
        config, cohort = training_cohort(config)
        p = int(config["data"]["patch"])
        calibration_subjects = validation_subjects = None
        if config["data"].get("cohort") is not None:  # the cohort's own held-out subjects
            everyone = read_cohort(config["data"]["cohort"], config["data"].get("series"))
            if not a.get("calibration"):
                calibration_subjects = everyone.select("calibration").subjects or None
            if not a.get("validation"):
                validation_subjects = [s for s in everyone.select("validation")
                                       if s.label and pathlib.Path(s.label).is_file()] or None

        def calibrate_on_holdout(module: Any, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
            run = TrainedRun(module, None, config if sampling is None else {**config, "sampling": sampling})
            found: dict[str, Any] = {"metrics": {}}
            settings: dict[str, Any] = {}
            # choose levels and score on scans with known lesions (--validation, or the cohort's validation
            # subjects whose label is a lesion mask) and store them in the run
            pairs = [(prepare_like(config["data"], a["validation"]), a["validation_lesions"])] \
                if a.get("validation") else \
                [(prepare_subject(config["data"], s), s.label) for s in validation_subjects or []]
            if pairs:
                truths = [on_model_grid(scan, lesions) for scan, lesions in pairs]
                settings, auc = choose_scoring(run, [p[0] for p in pairs], truths, [p[0].mask for p in pairs])
                found["config"] = {"anomaly": settings}
                found["metrics"].update(validation_auroc=auc, validation_scans=len(pairs))
            held = [prepare_like(config["data"], f) for f in a.get("calibration") or []]
            if not held and calibration_subjects is not None:  # the cohort's own held-out healthy subjects
                held = [prepare_subject(config["data"], s) for s in calibration_subjects]
            if held:
                found["metrics"].update(calibration(run, held, **settings), calibration_fpr=float(a["fpr"]),
                                        calibration_scans=len(held))
            return found

        return train_on_patches(config, cohort, (p, p, p), None, {}, {"method": a["method"]},
                                calibrate=calibrate_on_holdout)

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        a = config.get("anomaly", {})
        kw = dict(threshold=config.get("threshold"), seeds=a.get("seeds"), sigmas=a.get("sigmas"), score=a.get("score"),
                  smooth=a.get("smooth"), background=a.get("background"), memory_gb=config.get("memory_gb"),
                  device=config.get("sampling", {}).get("device"))
        kw["read_options"] = config["data"]
        if config["data"].get("cohort") is not None:
            return screen(run, config_cohort(config), config["out"], **kw)
        if config["data"].get("path") is None:
            raise ValueError("give the scan with --data or the subjects with --cohort")
        detect(run, config["data"]["path"], config["data"].get("mask"), out=config["out"], binary=config.get("binary"),
               **kw)
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


@register
class SuperRes(Task):
    name = "superres"
    verb = "superres"
    summary = "through-plane super-resolution of thick-slice 3-D scans (NIfTI/DICOM)"
    required_train = ("out",)  # the scans: --data or --cohort (checked with a clear error)
    defaults = merge(MEDICAL_DEFAULTS, SUPERRES_DEFAULTS)
    train_flags = SCAN_TRAIN_FLAGS + (
        Flag("--factors", "superres.factors", "slice factors to train on", int, nargs="+"),
        Flag("--axis", "superres.axis", "slice axis in RAS order: 0 sagittal, 1 coronal, 2 axial", int),
        Flag("--base", "superres.base", "interpolation the model adds its residual to: cubic (default) or linear"),
    )
    sample_flags = SCAN_SAMPLE_FLAGS + (
        Flag("--factor", "factor", "slice factor (default: thick spacing / training spacing)", int),
        Flag("--mode", "superres.mode", "mean (best PSNR) or sample"),
        Flag("--samples", "superres.samples", "posterior samples to average in sample mode", int),
    )
    required_sample = ("run", "out")

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        sr, d = config["superres"], config["data"]
        factors = [int(k) for k in sr["factors"]]
        if not factors or min(factors) < 2:
            raise ValueError(f"factors must be integers >= 2; got {factors}")
        axis, p = int(sr["axis"]), int(d["patch"])
        crop = [p, p, p]
        crop[axis] += 2 * max(factors)
        base = str(sr.get("base", "cubic"))
        if base not in BASES:
            raise ValueError(f"--base must be one of {sorted(BASES)}; got {base!r}")
        make = training_pair(factors, axis, p, d.get("augment") or {"scale": 0.0, "bias": 0.0}, base)
        config, cohort = training_cohort(config)
        return train_on_patches(config, cohort, crop, make, {"cond_channels": len(cohort.sequences) + 2},
                                {"factors": factors, "axis": axis})

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        kw = dict(factor=config.get("factor"), seed=int(config.get("seed", 0)), sampling=config.get("sampling"),
                  memory_gb=config.get("memory_gb"), **{k: config.get("superres", {}).get(k)
                                                        for k in ("mode", "samples")})
        if config["data"].get("cohort") is not None:
            cohort = config_cohort(config)
            check_sequences(run.metadata.get("sequences"), cohort)

            def work(subject: Subject, folder: pathlib.Path) -> dict[str, Any]:
                thick = prepare_thick(run, subject, cohort.series, read_options=config["data"])
                k = write_thin(run, thick, nifti_name(folder, subject.id, "thin"), **kw)
                return {"factor": k, "slices": (thick.input.data.shape[int(run.config["superres"]["axis"])] - 1) * k
                        + 1}

            return each_subject(cohort, config["out"], work, "superres.csv", "superres")
        if config["data"].get("path") is None:
            raise ValueError("give the thick scan with --data or the subjects with --cohort")
        write_thin(run, prepare_thick(run, config["data"]["path"], mask=config["data"].get("mask"),
                                      read_options=config["data"]), config["out"], **kw)
        return pathlib.Path(config["out"])


@register
class Volume(Task):
    name = "volume"
    verb = "generate"
    shares_verb = True
    summary = "unconditional generation of 3-D patches or volumes learned from scans (NIfTI/DICOM)"
    required_train = ("out",)  # the scans: --data or --cohort (checked with a clear error)
    defaults = merge(MEDICAL_DEFAULTS, VOLUME_DEFAULTS)
    train_flags = SCAN_TRAIN_FLAGS
    sample_flags = (
        Flag("--num", "num", "number of samples to draw", int),
        Flag("--shape", "shape", "volume size X Y Z (default: the training patch)", int, nargs=3),
        Flag("--memory-gb", "memory_gb", "memory budget of tiled sampling (GB)", float),
    )

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        config, cohort = training_cohort(config)
        p = int(config["data"]["patch"])
        augment = config["data"].get("augment") or {"scale": 0.0, "bias": 0.0}

        def make(x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
            return {"x": torch.from_numpy(augment_intensity(x, m, rng, **augment))}  # background included

        # Samples come back in the first subject's units (read again: the cache holds normalised voxels only).
        norms = prepare_subject(config["data"], cohort.subjects[0]).norms
        return train_on_patches(config, cohort, (p, p, p), make, {},
                                {"intensity": {"lo": norms[0].lo, "hi": norms[0].hi, "mode": norms[0].mode},
                                 "intensities": [n.to_dict() for n in norms]})

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        run = load_trained(config["run"], task=self.name)
        z = generate_volumes(run, int(4 if config.get("num") is None else config["num"]), config.get("shape"),
                             seed=int(config.get("seed", 0)),
                             sampling=config.get("sampling"), memory_gb=config.get("memory_gb"))
        norms = run.metadata.get("intensities") or [run.metadata["intensity"]]
        names = run.metadata.get("sequences") or ["image"]
        for c, (i, name) in enumerate(zip(norms, names)):
            out = config["out"] if len(norms) == 1 else tagged(config["out"], name)
            write_samples(out, z[:, c] * (i["hi"] - i["lo"]) + i["lo"], run.metadata["spacing"])
        return pathlib.Path(config["out"])


def train_anomaly(data: Any = None, out: str | pathlib.Path | None = None, *, settings: dict[str, Any] | None = None,
                  **options: Any) -> TrainedRun:
    """Train an anomaly detector on healthy scans, as ``sciffusion train anomaly`` does, and return the run.

    ``data``: healthy NIfTI/DICOM paths, or none with ``cohort=`` (a manifest, a BIDS-like folder or a
    ``pandas.DataFrame``; its ``calibration``/``validation`` splits set the threshold and the scoring).
    ``options``: the command's flags as keywords, e.g. ``cohort="cohort.csv"``, ``calibration=[...]``,
    ``spacing=[2, 2, 2]``, ``max_steps=400``, ``seed=0``. ``settings``: any other config key, dotted. Screen with
    :func:`~sciffusion.domains.medical.anomaly.detect` or :func:`~sciffusion.domains.medical.anomaly.screen`."""
    return TASKS["anomaly"].train_with(data, out, settings=settings, **options)


def train_superres(data: Any = None, out: str | pathlib.Path | None = None, *, settings: dict[str, Any] | None = None,
                   **options: Any) -> TrainedRun:
    """Train a through-plane super-resolution model on thin-slice scans, as ``sciffusion train superres`` does, and
    return the run. Keywords as :func:`train_anomaly`. Rebuild thin slices with
    :func:`~sciffusion.domains.medical.superres.superresolve`."""
    return TASKS["superres"].train_with(data, out, settings=settings, **options)


def train_volume(data: Any = None, out: str | pathlib.Path | None = None, *, settings: dict[str, Any] | None = None,
                 **options: Any) -> TrainedRun:
    """Train an unconditional volume (patch) generator, as ``sciffusion train volume`` does, and return the run.
    Keywords as :func:`train_anomaly`. Sample with :func:`~sciffusion.domains.medical.generate.generate_volumes`."""
    return TASKS["volume"].train_with(data, out, settings=settings, **options)
