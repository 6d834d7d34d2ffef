"""Sample quality against NFE with the exact denoiser of a 2-D Gaussian mixture (8 modes on a circle of radius 3,
std 0.3): sliced Wasserstein-1 distance of 20,000 samples to 20,000 fresh data draws, for every sampler and grid.

    python benchmarks/sampler_nfe.py [--samples 20000] [--quick]

Ratios are against the 1000-step ancestral DDPM sampler on the VP-linear grid, run in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

import sciffusion as sf
from sciffusion.metrics import sliced_wasserstein

GRIDS = {
    "vp-linear": lambda n: sf.VP().sigmas(n),
    "edm-default": lambda n: sf.karras_sigmas(n, 0.002, 80.0, 7.0),
    "edm-fitted": lambda n: sf.karras_sigmas(n, 0.1, 20.0, 7.0),  # sigma range fitted to this data's scales
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="skip the 1000-NFE runs but the reference")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gm = sf.ring_mixture()
    ref, _ = gm.sample(args.samples, torch.Generator().manual_seed(1))
    floors = [sliced_wasserstein(ref, gm.sample(args.samples, torch.Generator().manual_seed(s))[0]) for s in (2, 3, 4)]

    def run(sampler, grid, nfe):
        steps = (nfe + 1) // 2 if sampler == "heun" else nfe
        t = time.perf_counter()
        x = sf.sample(gm, (args.samples, 1, 2), GRIDS[grid](steps), sampler=sampler, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(3))
        return sliced_wasserstein(x, ref), time.perf_counter() - t

    base, _ = run("ddpm", "vp-linear", 1000)
    print(f"# machine: {machine()}")
    print(f"# data floor (two data draws): {min(floors):.4f}-{max(floors):.4f};"
          f" reference ddpm/vp-linear/1000 NFE: {base:.4f}")
    print("| sampler | grid | " + " | ".join(f"NFE {n}" for n in (5, 10, 20, 50, 1000)) + " |")
    print("|---|---|" + "---|" * 5)
    for sampler in ("euler", "heun", "ddim", "ddpm", "dpmpp_2m"):
        for grid in GRIDS:
            cells = []
            for nfe in (5, 10, 20, 50, 1000):
                if nfe == 1000 and (args.quick or grid == "edm-fitted"):
                    cells.append("-")
                    continue
                d, _ = run(sampler, grid, nfe)
                cells.append(f"{d:.3f} ({d / base:.2f}x)")
            print(f"| {sampler} | {grid} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
