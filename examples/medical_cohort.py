"""Screening a multi-sequence cohort: train on healthy subjects, calibrate on held-out healthy ones, score lesion
and control subjects with `detect --cohort`, against the denoising-autoencoder and intensity z-score baselines.

The cohort (``make_cohort``): copies of the bundled 2 mm MNI152 anatomy, each subject with its own smooth
deformation, bias field and noise, two sequences (the T1 and a FLAIR-like second contrast built from the T1 and the
white-matter map), some subjects at 2.5 mm (resampled, so the cohort mixes grids). Lesions go into the FLAIR of the
test and validation subjects only (invisible in the T1, intensities inside the healthy range). Splits: 4 train,
2 calibration (healthy: the threshold), 2 validation (lesions: each method's levels and score are chosen there at
training, as ``train anomaly --cohort`` does), 2 test (lesions), 2 control (healthy). Nothing is tuned on the test.

    python examples/medical_cohort.py [--work medical_cohort_out] [--steps 400] [--seed 0]

Reports voxel AUROC / AUPRC / best Dice pooled over the test subjects, Dice at the calibrated threshold, and the
subject-level rule (a cluster above threshold larger than any healthy calibration subject's) on test and control
subjects, with the time per subject. ~25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from sciffusion.cli import main as cli
from sciffusion.domains import medical as med
from sciffusion.domains.medical.anomaly import largest_cluster_ml
from sciffusion.domains.medical.protocol import make_cohort

SPLITS = ["train", "train", "calibration", "test", "control", "train", "train", "calibration", "test", "control",
          "validation", "validation"]


def run_cli(*args: object) -> None:
    code = cli([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"sciffusion {' '.join(map(str, args))} failed ({code})")


def maps_of(folder: pathlib.Path, cohort: med.Cohort, split: str, tag: str = "score"
            ) -> list[tuple[med.Subject, np.ndarray]]:
    return [(s, med.read_volume(folder / f"{s.id}_{tag}.nii.gz").data) for s in cohort if s.split == split]


def zscore_maps(cohort: med.Cohort, spacing: list[float]) -> dict[str, np.ndarray]:
    """The z-score baseline for every subject (against the training subjects), on each subject's own grid."""
    prep = {s.id: med.prepare_subject({"spacing": spacing}, s) for s in cohort}
    healthy = [prep[s.id] for s in cohort if s.split == "train"]
    return {sid: p.native(med.zscore_map(p, healthy)) for sid, p in prep.items()}


def evaluate(cohort: med.Cohort, maps: dict[str, np.ndarray], labels: dict[str, pathlib.Path], fpr: float = 0.01
             ) -> dict[str, float]:
    """Voxel scores pooled over the test subjects at a threshold calibrated on the calibration subjects, and the
    subject-level cluster rule on test and control subjects."""
    masks = {s.id: med.prepare_subject({}, s).mask for s in cohort}
    cal = [s for s in cohort if s.split == "calibration"]
    thr = med.threshold_at_fpr(np.concatenate([maps[s.id][masks[s.id]] for s in cal]), fpr)
    spacing = {s.id: med.read_volume(s.sequences[0][1]).spacing for s in cohort}
    cluster = max(largest_cluster_ml(maps[s.id] > thr, masks[s.id], spacing[s.id]) for s in cal)
    test = [s for s in cohort if s.split == "test"]
    truth = np.concatenate([med.read_volume(labels[s.id]).data[masks[s.id]] > 0.5 for s in test])
    score = np.concatenate([maps[s.id][masks[s.id]] for s in test])
    table = med.detection_scores(score, truth, np.ones_like(truth), thr)
    flagged = {split: float(np.mean([largest_cluster_ml(maps[s.id] > thr, masks[s.id], spacing[s.id]) > cluster
                                     for s in cohort if s.split == split])) for split in ("test", "control")}
    return {**table, "flagged_test": flagged["test"], "flagged_control": flagged["control"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="medical_cohort_out")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    t0 = time.time()
    manifest = make_cohort(work / "data", len(SPLITS), seed=args.seed, spacings=[2.0, 2.0, 2.5], lesions=6,
                           lesion_sequence="FLAIR", split=SPLITS, lesion_splits=("test", "validation"))
    cohort = med.read_cohort(manifest)
    labels = {s.id: manifest.parent / s.label for s in cohort if s.label}  # the lesion masks
    results: dict[str, dict] = {}
    maps: dict[str, dict[str, np.ndarray]] = {}
    for method in ("diffusion", "dae"):
        run = work / f"run_{method}"
        t = time.time()
        if not (run / "run.json").exists():
            run_cli("train", "anomaly", "--cohort", manifest, "--method", method, "--max-steps", args.steps,
                    "--seed", args.seed, "--set", "trainer.progress=false", "--out", run)
        t_train = time.time() - t
        t = time.time()
        run_cli("detect", "--run", run, "--cohort", manifest, "--split", "test", "--out", work / f"detect_{method}")
        n_test = sum(s.split == "test" for s in cohort)
        per_subject = (time.time() - t) / n_test
        for split in ("calibration", "control"):
            run_cli("detect", "--run", run, "--cohort", manifest, "--split", split, "--out", work / f"detect_{method}")
        maps[method] = {s.id: m for split in ("calibration", "test", "control")
                        for s, m in maps_of(work / f"detect_{method}", cohort, split)}
        chosen = json.loads((run / "config.json").read_text())["anomaly"]
        results[method] = {**evaluate(cohort, maps[method], labels), "train_s": round(t_train), "s_per_subject":
                           round(per_subject, 1), "scoring": {k: chosen[k] for k in ("sigmas", "score", "smooth",
                                                                                     "background")}}
        for q in cohort.sequences:  # each sequence's own map, thresholded on its own (the lesions are in FLAIR)
            one = {s.id: m for split in ("calibration", "test", "control")
                   for s, m in maps_of(work / f"detect_{method}", cohort, split, f"score_{q}")}
            results[f"{method}[{q}]"] = evaluate(cohort, one, labels)
    spacing = json.loads((work / "run_diffusion" / "config.json").read_text())["data"]["spacing"]
    results["zscore"] = evaluate(cohort, zscore_maps(cohort, spacing), labels)
    (work / "scores.json").write_text(json.dumps(results, indent=2))
    print(f"{'method':<10} {'AUROC':>6} {'AUPRC':>6} {'bestDice':>8} {'Dice@thr':>8} {'FPR':>6} {'flag test':>9} "
          f"{'flag ctrl':>9} {'s/subject':>9}")
    for k, r in results.items():
        print(f"{k:<10} {r['auroc']:6.3f} {r['auprc']:6.3f} {r['best_dice']:8.3f} {r['dice']:8.3f} {r['fpr']:6.3f} "
              f"{r['flagged_test']:9.2f} {r['flagged_control']:9.2f} {r.get('s_per_subject', ''):>9}")
    for k in ("diffusion", "dae"):
        print(f"{k} scoring chosen on the validation subjects: {results[k]['scoring']}")
    print(f"total {time.time() - t0:.0f} s; outputs in {work}/")


if __name__ == "__main__":
    main()
