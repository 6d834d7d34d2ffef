"""The main job on bundled real data: train a diffusion forecaster, forecast an ensemble, score it against baselines.

    python examples/climate_forecast.py [WORKDIR]          (about 4 minutes on 2 CPU cores)

Data: HadCM3 A1B annual surface air temperature over North America, 1860-2099 (datasets/hadcm3_a1b_north_america,
Open Government Licence). Trains on 1860-2029 (its last 15% validates and calibrates the spread), forecasts 1-3 years
ahead from every year 2030-2096 with 8 members, each on its own climatology and trend refitted to the training years
resampled in 10-year blocks (the extrapolated trend's uncertainty), and scores the forecast and four baselines fitted
on 1860-2029: persistence, probabilistic climatology, damped persistence (per-cell AR(1)) and a linear inverse model
(the last two with the same per-member normals). These are the same three commands a user types; they are printed
as they run. The figures (CRPS by lead, rank
histogram, maps) need matplotlib (`pip install -e ".[plots]"`).
"""

import pathlib
import shlex
import subprocess
import sys
import tempfile

from sciffusion import datasets

work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sciffusion-climate-"))
data = datasets.path("hadcm3_a1b")
run, fc, scores = work / "run", work / "forecast.nc", work / "scores.json"
print(f"working in {work} (give a folder as the first argument to choose it)", flush=True)
steps = [
    ["train", "forecast", "--data", data, "--train-period", "1860/2029", "--trend", "2", "--out", run,
     "--set", "trainer.progress=false"],
    ["forecast", "--run", run, "--data", data, "--init-period", "2030/2096", "--leads", "3", "--members", "8",
     "--normal-uncertainty", "10", "--out", fc],
    ["evaluate", "forecast", "--forecast", fc, "--truth", data, "--run", run, "--out", scores,
     "--plots", work / "plots"],
]
for argv in steps:
    argv = [str(a) for a in argv]
    print("$ sciffusion " + shlex.join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "sciffusion.cli", *argv], check=True)
print(f"\nrun: {run}\nforecast: {fc}\nscores: {scores}\nplots: {work / 'plots'}")
