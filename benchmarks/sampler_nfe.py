"""Sample quality against NFE with the exact denoiser of a 2-D Gaussian mixture (8 modes on a circle of radius 3,
std 0.3), for every sampler and grid, against the floor of the metric.

    python benchmarks/sampler_nfe.py [--samples 30000] [--repeats 3] [--quick]

Metric: sliced Wasserstein-1 (512 directions) between ``--samples`` samples and as many fresh data draws, averaged
over ``--repeats`` (other noise, other data each time). Floor: the same metric between two independent data draws
of that size (what a perfect sampler scores), averaged the same way. Cells: distance (ratio to the floor). The
``fit_sigmas`` grid is fitted by :func:`sciffusion.fit_sigmas` on 2,000 separate training draws and other noise,
once per sampler and NFE; the fit's time is printed beside the table. The 1000-step ancestral DDPM sampler on the
VP-linear grid is the reference run in the same process.
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
    "edm-0.1-20": lambda n: sf.karras_sigmas(n, 0.1, 20.0, 7.0),  # a range set by hand from this data's scales
}
GM = sf.ring_mixture()
# (label, sampler, options): the Gaussian split integrates N(0, sigma_data^2) exactly (sigma_data = 2.14 here)
SAMPLERS = [
    ("euler", "euler", {}), ("heun", "heun", {}), ("ddim", "ddim", {}), ("ddpm", "ddpm", {}),
    ("dpmpp_2m", "dpmpp_2m", {}), ("dpmpp_2m split", "dpmpp_2m", {"sigma_data": GM.sigma_data}),
    ("dpmpp_3m split", "dpmpp_3m", {"sigma_data": GM.sigma_data}),
    ("dpmpp_3m split+corrector", "dpmpp_3m", {"sigma_data": GM.sigma_data, "corrector": True}),
    ("dpmpp_2s split", "dpmpp_2s", {"sigma_data": GM.sigma_data}),
]
NFES = (5, 10, 20, 50)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="NFE 5 and 10 only, the fitted grid and the 2M/3M rows")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    n, reps = args.samples, args.repeats
    refs = [GM.sample(n, torch.Generator().manual_seed(100 + r))[0] for r in range(reps)]
    floor = sum(sliced_wasserstein(refs[r], GM.sample(n, torch.Generator().manual_seed(200 + r))[0])
                for r in range(reps)) / reps
    train = GM.sample(2000, torch.Generator().manual_seed(7))[0].double()

    def score(sampler, grid, options):
        total = 0.0
        for r in range(reps):
            x = sf.sample(GM, (n, 1, 2), grid, sampler=sampler, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(300 + r), **options)
            total += sliced_wasserstein(x, refs[r])
        return total / reps

    def cell(d):
        return f"{d:.4f} ({d / floor:.2f}x)"

    print(f"# machine: {machine()}")
    print(f"# samples {n}, repeats {reps}; floor (two data draws): {floor:.4f};"
          f" reference ddpm/vp-linear/1000 NFE: {cell(score('ddpm', GRIDS['vp-linear'](1000), {}))}")
    nfes = (5, 10) if args.quick else NFES
    grids = ["edm-0.1-20", "fit_sigmas"] if args.quick else [*GRIDS, "fit_sigmas"]
    rows = [s for s in SAMPLERS if not args.quick or s[1] in ("dpmpp_2m", "dpmpp_3m")]
    print("| sampler | grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
    print("|---|---|" + "---|" * len(nfes))
    fit_times = []
    for label, sampler, options in rows:
        for grid in grids:
            cells = []
            for k in nfes:
                steps = sf.steps_for_nfe(sampler, k)
                if grid == "fit_sigmas":
                    if sampler == "ddpm":  # stochastic: fit_sigmas fits ODE samplers only
                        cells.append("-")
                        continue
                    t = time.perf_counter()
                    sig = sf.fit_sigmas(GM, train, k, sampler, seed=1, **options)
                    fit_times.append((label, k, time.perf_counter() - t))
                else:
                    sig = GRIDS[grid](steps)
                cells.append(cell(score(sampler, sig, options)))
            print(f"| {label} | {grid} | " + " | ".join(cells) + " |", flush=True)
    print("# fit_sigmas time (s): " + ", ".join(f"{lab}@{k}: {s:.1f}" for lab, k, s in fit_times))


if __name__ == "__main__":
    main()
