"""Skill per cost of the model families on the main job (issue 31, part 4): the same data, network, commands and
scores, trained as diffusion (the default), as a flow-matching model or as a CRPS-trained one-pass generator, one
training seed per call.

    python benchmarks/family_climate.py --family flow --seed 0 [--threads 1] [--work DIR]

Runs the three commands of examples/climate_forecast.py (HadCM3 A1B, train 1860-2029, forecast 2030-2096, 3 leads,
8 members, bootstrapped normals) with ``--family``, and prints one line: per-lead CRPS and spread/skill of the
model, the Diebold-Mariano p against damped persistence and the LIM, training and sampling wall time. Two families
at once: give each ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from sciffusion import datasets

FAMILIES = {
    "diffusion": [],
    "flow": ["--family", "flow"],
    "crps": ["--family", "crps"],
}

p = argparse.ArgumentParser()
p.add_argument("--family", choices=sorted(FAMILIES), default="diffusion")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=None)
p.add_argument("--work", default=None)
p.add_argument("--set", action="append", default=[], help="more config keys for training, KEY=VALUE")
a = p.parse_args()
work = pathlib.Path(a.work or tempfile.mkdtemp(prefix=f"family-{a.family}-{a.seed}-"))
data = datasets.path("hadcm3_a1b")
run, fc, scores = work / "run", work / "forecast.nc", work / "scores.json"
threads = ["--threads", str(a.threads)] if a.threads else []


def sciffusion(*argv) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sciffusion.cli", *map(str, argv), *threads], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


train_s = sciffusion("train", "forecast", "--data", data, "--train-period", "1860/2029", "--trend", "2", "--out", run,
                     "--seed", a.seed, "--set", "trainer.progress=false", *FAMILIES[a.family],
                     *(x for kv in a.set for x in ("--set", kv)))
sample_s = sciffusion("forecast", "--run", run, "--data", data, "--init-period", "2030/2096", "--leads", "3",
                      "--members", "8", "--normal-uncertainty", "10", "--out", fc)
sciffusion("evaluate", "forecast", "--forecast", fc, "--truth", data, "--run", run, "--out", scores)
table = json.loads(scores.read_text())
var = next(iter(table))
ours = table[var]["sciffusion"]
cells = []
for lead in ("1", "2", "3"):
    dm = {b: table[var][b]["versus"][lead]["pvalue"] for b in ("damped_persistence", "lim")}
    cells.append(f"lead {lead}: CRPS {ours[lead]['crps']:.4f} spread/skill {ours[lead]['spread_skill']:.2f} "
                 f"(DM p vs damped persistence {dm['damped_persistence']:.3f}, vs LIM {dm['lim']:.3f}; "
                 f"damped persistence {table[var]['damped_persistence'][lead]['crps']:.4f}, "
                 f"LIM {table[var]['lim'][lead]['crps']:.4f})")
print(f"{a.family} seed {a.seed}: train {train_s:.0f} s, forecast {sample_s:.0f} s; " + "; ".join(cells))
