"""NFE against skill on the main job's real data: the climate forecast example's run scored at several numbers of
network calls, on its hand-set grid (EDM's rho-7 grid on [0.01, 20]) and on grids fitted by ``sampling.fit_nfe``.

    python benchmarks/climate_nfe.py [WORKDIR] [--run RUN]

Trains the run of ``examples/climate_forecast.py`` (or takes ``--run``), then forecasts 2030-2096, 3 leads,
8 members, normals bootstrapped in 10-year blocks, as the example does, at each setting, with the same seeds.
Score: the area-weighted fair CRPS averaged over the three leads, and the spread/skill ratio. Reference: the run's
default, DPM-Solver++(2M) at 12 NFE, run in the same process; ratios below are to it. A fitted run is the same
network (re-running ``train`` on the finished run only refits the grid and recalibrates the spread on the
validation years).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import shutil
import tempfile
import time

import torch
from common import machine

from sciffusion import datasets
from sciffusion.cli import main as cli
from sciffusion.domains.climate.conventions import to_internal
from sciffusion.domains.climate.evaluate import mean_over_leads, score_table, truth_for
from sciffusion.domains.climate.forecast import forecast

DATA = datasets.path("hadcm3_a1b")
TRAIN = ["train", "forecast", "--data", str(DATA), "--train-period", "1860/2029", "--trend", "2",
         "--set", "trainer.progress=false"]
FORECAST = {"init_period": "2030/2096", "leads": 3, "members": 8, "normal_uncertainty": 10.0}


def quiet(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli(argv) == 0, argv


def score(run: pathlib.Path, sampling: dict | None = None) -> dict[str, float]:
    t = time.perf_counter()
    fc = to_internal(forecast(run, DATA, sampling=sampling, **FORECAST))  # lead in steps, as evaluate reads it
    seconds = time.perf_counter() - t
    return {**mean_over_leads(score_table({"sciffusion": fc}, truth_for(fc, DATA))), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?")
    ap.add_argument("--run")
    ap.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 6, 8, 12, 24])
    ap.add_argument("--fit", type=int, nargs="+", default=[3, 4, 6, 8])
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sciffusion-nfe-"))
    run = pathlib.Path(args.run) if args.run else work / "run"
    if not args.run:
        t = time.perf_counter()
        quiet([*TRAIN, "--out", str(run)])
        print(f"# trained in {time.perf_counter() - t:.0f} s: {run}")
    print(f"# machine: {machine()}")
    ref = score(run)
    print(f"# reference (the run's default, dpmpp_2m 12 NFE): CRPS {ref['crps']:.4f}, spread/skill "
          f"{ref['spread_skill']:.3f}, {ref['seconds']:.1f} s")
    print("| sampler | grid | NFE | CRPS | vs 12-NFE default | spread/skill | forecast s |")
    print("|---|---|---|---|---|---|---|")

    def row(sampler, grid, n, s):
        print(f"| {sampler} | {grid} | {n} | {s['crps']:.4f} | {s['crps'] / ref['crps'] - 1:+.2%} | "
              f"{s['spread_skill']:.3f} | {s['seconds']:.1f} |", flush=True)

    for sampler in ("dpmpp_2m", "dpmpp_3m"):
        for n in args.nfe:
            row(sampler, "rho-7 [0.01, 20]", n, score(run, {"sampler": sampler, "steps": n}))
    for n in args.fit:
        fitted = work / f"fit{n}"
        shutil.rmtree(fitted, ignore_errors=True)
        shutil.copytree(run, fitted)
        quiet([*TRAIN, "--out", str(fitted), "--set", f"sampling.fit_nfe={n}"])
        grid = json.loads((fitted / "config.json").read_text())["sampling"]["grid"]
        row("dpmpp_2m", "fitted " + ", ".join(f"{g:.3g}" for g in grid[1:-1]), n, score(fitted))


if __name__ == "__main__":
    main()
