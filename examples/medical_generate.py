"""Unconditional 3-D patch generation from the bundled MNI152 T1 template (2 mm), with a quick realism check.

Train on 32^3 patches of the left hemisphere, sample patches (and one 64^3 volume in blended tiles with shared
noise), and compare their voxel-intensity distribution and mean gradient magnitude with real patches of the right
hemisphere; real left-hemisphere patches give the floor.

    python examples/medical_generate.py [--work medical_generate_out] [--steps 300]

Writes ``samples.nii.gz`` (4-D), ``generate_slices.png`` and ``scores.json``; ~5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from scipy.stats import wasserstein_distance

import sciffusion as sf
from sciffusion.domains import medical as med
from sciffusion.domains.medical.patches import crop


def real_patches(scan: med.Scan, region: np.ndarray, n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.argwhere(region)
    return np.stack([crop(scan.x[0], centres[i], (size,) * 3) for i in rng.integers(len(centres), size=n)])


def stats(p: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    grad = lambda a: float(np.mean(np.linalg.norm(np.stack(np.gradient(a, axis=(1, 2, 3))), axis=0)))  # noqa: E731
    return {"intensity_w1": float(wasserstein_distance(p.ravel(), ref.ravel())),
            "gradient_ratio": grad(p) / grad(ref)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="medical_generate_out")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--num", type=int, default=16)
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    t1 = med.mni152(2)
    scan = med.prepare(t1, t1.data > 0)
    med.write_volume(work / "train.nii.gz", scan.x[0], t1)
    run_dir = work / "run"
    if not (run_dir / "run.json").exists():
        med.train_volume(work / "train.nii.gz", run_dir, hemisphere="left", max_steps=args.steps,
                         settings={"trainer.progress": False})
    run = sf.load_trained(run_dir)
    t_train = time.time() - t0

    t = time.time()
    gen = med.generate_volumes(run, args.num, seed=0)[:, 0]  # the one sequence
    t_sample = time.time() - t
    big = med.generate_volumes(run, 1, (64, 64, 64), seed=1000)[0, 0]
    from sciffusion.domains.medical.generate import write_samples
    write_samples(work / "samples.nii.gz", gen, run.metadata["spacing"])

    right = med.hemisphere(scan.mask, "right")
    left = med.hemisphere(scan.mask, "left")
    ref = real_patches(scan, right, 64, 32, 1)
    scores = {"generated": stats(gen, ref), "real left-hemisphere patches (floor)":
              stats(real_patches(scan, left, args.num, 32, 2), ref),
              "train_s": round(t_train, 1), "sample_s_per_patch": round(t_sample / args.num, 2)}
    (work / "scores.json").write_text(json.dumps(scores, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 5, figsize=(12, 5))
    for j in range(4):
        axes[0, j].imshow(gen[j][:, :, 16].T, origin="lower", cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"generated {j}", fontsize=8)
        axes[1, j].imshow(ref[j][:, :, 16].T, origin="lower", cmap="gray", vmin=0, vmax=1)
        axes[1, j].set_title(f"real {j}", fontsize=8)
    axes[0, 4].imshow(big[:, :, 32].T, origin="lower", cmap="gray", vmin=0, vmax=1)
    axes[0, 4].set_title("generated 64^3 (tiled)", fontsize=8)
    axes[1, 4].axis("off")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(work / "generate_slices.png", dpi=100)
    for k, v in scores.items():
        print(k, v)
    print(f"total {time.time() - t0:.0f} s; outputs in {work}/")


if __name__ == "__main__":
    main()
