"""DPM-Solver++(2M) with its Gaussian part integrated exactly (``sigma_data``) against the plain solver, at equal NFE,
with the exact denoisers of four mixtures: three near-Gaussian 1-D ones (like the normalised residuals and shocks the
tasks model) and the 2-D ring of ``sampler_nfe.py`` (far from Gaussian).

    python benchmarks/sampler_gaussian_split.py [--samples 4000]

Error = mean |x - x_ref| over samples that start from the same noise, x_ref the plain solver at 2000 steps (the ODE's
solution to ~1e-6); grid: EDM's rho-7 grid on [0.01, 20] (the tasks' default). The ratio plain / split is printed:
above 1, the split solver is closer to the exact ODE solution at that NFE.
"""

from __future__ import annotations

import argparse

import torch
from common import machine

import sciffusion as sf
from sciffusion.diffusion.exact import GaussianMixtureDenoiser, ring_mixture


def mixture_1d(means, stds, weights):
    return GaussianMixtureDenoiser(torch.tensor(means, dtype=torch.float64).reshape(len(means), 1, 1), stds, weights)


CASES = {
    "skewed (1-D)": lambda: mixture_1d([-0.3, 0.4], [0.95, 0.9], [0.55, 0.45]),
    "bimodal (1-D)": lambda: mixture_1d([-1.0, 1.0], [0.5, 0.5], [0.5, 0.5]),
    "fat-tailed (1-D)": lambda: mixture_1d([0.0, 0.0], [0.8, 2.0], [0.85, 0.15]),
    "ring (2-D)": ring_mixture,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=4000)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"# {machine()}")
    print("| data | sigma_data | NFE | plain | split | plain / split |")
    print("|---|---|---|---|---|---|")
    for name, make in CASES.items():
        den = make()
        g = torch.Generator().manual_seed(0)
        x_T = 20.0 * torch.randn((args.samples, *den.sample_shape), generator=g, dtype=torch.float64)
        ref = sf.dpmpp_2m(den, x_T, sf.karras_sigmas(2000, 0.01, 20.0, 7.0))
        for nfe in (6, 12, 24):
            grid = sf.karras_sigmas(nfe, 0.01, 20.0, 7.0)
            plain = float((sf.dpmpp_2m(den, x_T, grid) - ref).abs().mean())
            split = float((sf.dpmpp_2m(den, x_T, grid, sigma_data=den.sigma_data) - ref).abs().mean())
            print(f"| {name} | {den.sigma_data:.2f} | {nfe} | {plain:.4f} | {split:.4f} | {plain / split:.1f}x |")


if __name__ == "__main__":
    main()
