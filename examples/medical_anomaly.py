"""Unsupervised lesion detection on the bundled MNI152 T1 template (2 mm), against the DAE and z-score baselines.

The protocol (``sciffusion.domains.medical.protocol``): train on the left hemisphere of the template; choose each
method's scoring (noise levels, band-pass or absolute error) on a validation case (``brain_benchmark(seed + 1)``:
other perturbations, other lesions); calibrate the threshold on a perturbed healthy copy (deformation, bias field,
noise); test on the right hemisphere of another perturbed copy with 8 synthetic white-matter lesions whose
intensities stay inside the healthy range.

    python examples/medical_anomaly.py [--work medical_anomaly_out] [--steps 400] [--seed 0]

Writes NIfTI inputs/score maps, ``scores.json`` and ``anomaly_slices.png`` to ``--work``; ~15 minutes on 2 CPU
cores (two 400-step trainings; runs already in ``--work`` are reused).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

import sciffusion as sf
from sciffusion.domains import medical as med


def train(work: pathlib.Path, method: str, steps: int, seed: int) -> pathlib.Path:
    out = work / f"run_{method}"
    if (out / "run.json").exists():
        return out
    med.train_anomaly(work / "train.nii.gz", out, mask=work / "train_mask.nii.gz", hemisphere="left", method=method,
                      calibration=work / "calibration.nii.gz", max_steps=steps, seed=seed,
                      settings={"trainer.progress": False})
    return out


def figure(path: pathlib.Path, b: med.protocol.Benchmark, maps: dict[str, np.ndarray]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax(b.truth.sum(axis=(0, 1))))  # the axial slice with most lesion voxels
    panels = [("test scan", b.test.x[0])] + list(maps.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img[:, :, z].T, origin="lower", cmap="gray" if name == "test scan" else "magma")
        ax.contour(b.truth[:, :, z].T, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"axial slice {z}: lesion outlines in cyan (right hemisphere = right side of each panel)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="medical_anomaly_out")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    b = med.brain_benchmark(seed=args.seed)
    ref = b.train.volume
    for name, arr, dtype in [("train", b.train.x[0], np.float32), ("train_mask", b.train.mask, np.uint8),
                             ("calibration", b.calibration.x[0], np.float32), ("test", b.test.x[0], np.float32),
                             ("test_lesions", b.truth, np.uint8), ("test_region", b.test_region, np.uint8)]:
        med.write_volume(work / f"{name}.nii.gz", arr.astype(dtype), ref, dtype=dtype)

    val = med.brain_benchmark(seed=args.seed + 1)  # the validation case: other perturbations and lesions
    results, maps = {}, {}
    for method in ("diffusion", "dae"):
        t = time.time()
        run = sf.load_trained(train(work, method, args.steps, args.seed))
        t_train = time.time() - t
        # Each method's scoring is chosen on the validation case, never on the test.
        chosen, val_auroc = med.choose_scoring(run, val.test, val.truth, val.test_region)
        t = time.time()
        score = med.anomaly_map(run, b.test, **chosen)
        t_score = time.time() - t
        # The threshold for the chosen settings (the run stores one for its own defaults; sciffusion detect reads it).
        thr = med.calibrate(run, [b.calibration], **chosen)
        med.write_volume(work / f"scores_{method}.nii.gz", score, ref)
        results[method] = {**med.detection_scores(score, b.truth, b.test_region, thr), "scoring": chosen,
                           "validation_auroc": round(val_auroc, 3), "train_s": round(t_train, 1),
                           "score_s": round(t_score, 1)}
        maps[f"{method} score"] = score
    healthy = [b.train]
    z = med.zscore_map(b.test, healthy)
    z_thr = med.threshold_at_fpr(med.zscore_map(b.calibration, healthy)[b.calibration.mask], 0.01)
    results["zscore"] = med.detection_scores(z, b.truth, b.test_region, z_thr)
    maps["z-score"] = z

    (work / "scores.json").write_text(json.dumps(results, indent=2))
    figure(work / "anomaly_slices.png", b, maps)
    print(f"{'method':<10} {'AUROC':>6} {'AUPRC':>6} {'bestDice':>8} {'Dice@thr':>8} {'FPR':>6}")
    for k, r in results.items():
        print(f"{k:<10} {r['auroc']:6.3f} {r['auprc']:6.3f} {r['best_dice']:8.3f} {r['dice']:8.3f} {r['fpr']:6.3f}"
              + (f"   scoring {r['scoring']} (validation AUROC {r['validation_auroc']})" if "scoring" in r else ""))
    print(f"lesion voxels {int(b.truth.sum())} of {int(b.test_region.sum())} in the test hemisphere; "
          f"total {time.time() - t0:.0f} s; outputs in {work}/")


if __name__ == "__main__":
    main()
