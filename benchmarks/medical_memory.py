"""Peak memory and time of scoring one large volume (a 512 x 512 x 400 CT by default) with `detect`'s path: the
volume on the host, tiles through the network, one noise level and one seed (a default run averages 3 x 4 such
passes: multiply the pass time by 12). Prints the peak resident memory against the volume's own size.

    python benchmarks/medical_memory.py [--shape 512 512 400] [--memory-gb 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from common import machine

from sciffusion.domains import medical as med
from sciffusion.domains.medical.intensity import IntensityNorm, smooth_field
from sciffusion.training import DiffusionModule, TrainedRun


def ct_like(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A body-shaped ellipsoid of soft tissue (~40 HU) with smooth structure, air (-1000 HU) around it."""
    rng = np.random.default_rng(seed)
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    r = sum(((gi - n / 2) / (0.45 * n)) ** 2 for gi, n in zip(g, shape))
    body = r < 1
    coarse = tuple(max(4, n // 64) for n in shape)
    tissue = 40 + 60 * np.asarray(smooth_field(coarse, rng, 4), np.float32)
    from scipy import ndimage
    tissue = ndimage.zoom(tissue, [n / c for n, c in zip(shape, coarse)], order=1)[tuple(slice(0, n) for n in shape)]
    return np.where(body, tissue, -1000.0).astype(np.float32), body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 400])
    ap.add_argument("--memory-gb", type=float, default=8.0)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    shape = tuple(args.shape)
    data, body = ct_like(shape)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    vol = med.Volume(data, affine, affine, shape)
    scan = med.Scan(vol, IntensityNorm.ct("soft_tissue")(data, body), body, IntensityNorm.ct("soft_tissue"))
    del data
    net = {"dims": 3, "in_channels": 1, "channels": args.channels, "num_res_blocks": 1}
    config = {"task": "anomaly", "memory_gb": args.memory_gb, "data": {},
              "anomaly": {"method": "diffusion", "sigmas": [0.1], "seeds": 1, "noise_factor": 4, "steps": 1,
                          "score": "bandpass", "smooth": 1.5, "background": 6.0, "fpr": 0.01},
              "model": {"net": net}}
    run = TrainedRun(DiffusionModule(net=net, sigma_data=0.2).eval(), None, config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GB (Linux reports kB)
    t = time.perf_counter()
    score, _ = med.detect(run, scan, threshold=0.1, device=args.device)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    volume_gb = float(np.prod(shape)) * 4 / 2**30
    patch, batch = med.plan_tiles(args.memory_gb, net, shape)
    print(f"machine: {machine()}, device {args.device}")
    if args.device.startswith("cuda"):
        print(f"accelerator peak: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB")
    print(f"volume {shape} ({volume_gb:.2f} GB float32), tiles {patch}^3 x {batch} per call, U-Net {args.channels}")
    print(f"one pass (1 level, 1 seed) + band-pass score: {seconds:.0f} s; finite: {bool(np.isfinite(score).all())}")
    print(f"peak resident memory {peak:.2f} GB (before scoring {before:.2f} GB): {peak / volume_gb:.1f}x the volume; "
          f"budget {args.memory_gb:g} GB")


if __name__ == "__main__":
    main()
