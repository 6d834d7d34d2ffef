"""Climate at archive scale: peak memory and time per initial time (per time step) of ``train``, ``forecast`` and
``evaluate`` (``train downscale``, ``downscale``, ``evaluate downscale``) on a synthetic 6-hourly archive in
WeatherBench 2 layout (a zarr store of ``(time, level, latitude, longitude)``
variables, written lazily chunk by chunk), as the number of initial times (time steps) grows 10x.

The archive is smaller than the issue's 30 GB (this machine's disk and 2 cores), so the point measured is the one
that matters for any size: whether peak memory and time per initial time stay flat as the work grows. Each phase runs
in its own process so its peak resident memory (``ru_maxrss``) is its own. Run alone:

    python benchmarks/climate_archive.py                    # 64 x 128 grid, 3 variables x 4 levels, 4 years
    python benchmarks/climate_archive.py --years 1 --inits 20 200 --steps 20
    python benchmarks/climate_archive.py --tasks downscale --years 3 --steps 50
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time


def write_archive(path: pathlib.Path, years: float, lat: int, lon: int, levels: list[int], variables: int) -> float:
    """A WB2-layout zarr store written one chunk of 64 time steps at a time (never whole in memory); GB on disk."""
    import dask.array as da
    import numpy as np
    import pandas as pd
    import xarray as xr

    steps = int(years * 365 * 4)
    time_ = pd.date_range("2000-01-01", periods=steps, freq="6h")
    hours = (np.asarray(time_.hour) / 24.0)[:, None, None, None]
    doy = (np.asarray(time_.day_of_year) / 365.25)[:, None, None, None]

    def field(k: int) -> da.Array:
        rng = da.random.default_rng(k)
        noise = rng.standard_normal((steps, len(levels), lat, lon), chunks=(64, len(levels), lat, lon))
        cycle = 10 * np.cos(2 * np.pi * doy) + 3 * np.cos(2 * np.pi * hours)
        return (250 + 5 * k + cycle + noise).astype("float32")

    ds = xr.Dataset({f"var{k}": (("time", "level", "latitude", "longitude"), field(k), {"units": "K"})
                     for k in range(variables)},
                    coords={"time": time_, "level": ("level", levels, {"units": "hPa"}),
                            "latitude": np.linspace(-90 + 90 / lat, 90 - 90 / lat, lat),
                            "longitude": np.arange(lon) * 360.0 / lon})
    ds.to_zarr(path, mode="w")
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def child(phase: str, work: pathlib.Path, n: int, steps: int) -> None:
    """One phase in this process; ``n``: initial times (forecast) or time steps (downscale)."""
    import xarray as xr

    from sciffusion.cli import main

    store, run, ds_run = work / "archive.zarr", work / "run", work / "downscale_run"
    times = xr.open_zarr(store).time.values
    first = 2 * 365 * 4 + 8  # after the training years
    period = f"{str(times[first])[:19]}/{str(times[first + n - 1])[:19]}" if n else ""
    quiet = ["--set", "trainer.progress=false", "--set", "sampling.calibration_members=2", "--threads", "2"]
    commands = {
        "train": ["train", "forecast", "--data", str(store), "--train-period", "2000-01-01/2001-12-31",
                  "--max-steps", str(steps), "--out", str(run), *quiet],
        "forecast": ["forecast", "--run", str(run), "--data", str(store), "--init-period", period, "--leads", "2",
                     "--members", "2", "--set", "sampling.steps=4", "--out", str(work / f"fc{n}.nc"), *quiet[-2:]],
        "evaluate": ["evaluate", "forecast", "--forecast", str(work / f"fc{n}.nc"), "--data", str(store),
                     "--run", str(run), "--baselines", "none", "--out", str(work / f"scores{n}.json"), *quiet[-2:]],
        "train_downscale": ["train", "downscale", "--data", str(store), "--variables", "var0", "--factor", "4",
                            "--train-period", "2000-01-01/2001-12-31", "--max-steps", str(steps), "--out",
                            str(ds_run), *quiet],
        "downscale": ["downscale", "--run", str(ds_run), "--data", str(store), "--period", period, "--members", "2",
                      "--set", "sampling.steps=4", "--out", str(work / f"down{n}.nc"), *quiet[-2:]],
        "evaluate_downscale": ["evaluate", "downscale", "--downscaled", str(work / f"down{n}.nc"), "--data",
                               str(store), "--run", str(ds_run), "--out", str(work / f"dscores{n}.json"),
                               *quiet[-2:]],
    }
    t0 = time.perf_counter()
    code = main(commands[phase])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"phase": phase, "inits": n, "seconds": seconds, "peak_mib": peak, "code": code}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--years", type=float, default=4.0)
    ap.add_argument("--grid", type=int, nargs=2, default=[64, 128])
    ap.add_argument("--levels", type=int, nargs="+", default=[300, 500, 700, 850])
    ap.add_argument("--variables", type=int, default=3)
    ap.add_argument("--inits", type=int, nargs="+", default=[64, 640],
                    help="initial times to forecast (multiples of the batch, 64, so every batch is the same size)")
    ap.add_argument("--steps", type=int, default=100, help="training steps")
    ap.add_argument("--tasks", nargs="+", choices=["forecast", "downscale"], default=["forecast", "downscale"])
    ap.add_argument("--times", type=int, nargs="+", default=[64, 640],
                    help="time steps to downscale (multiples of the batch, 64)")
    ap.add_argument("--child", nargs=3, metavar=("PHASE", "WORK", "INITS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], pathlib.Path(a.child[1]), int(a.child[2]), a.steps)
        return
    from benchmarks.common import machine

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        t0 = time.perf_counter()
        gb = write_archive(work / "archive.zarr", a.years, *a.grid, a.levels, a.variables)
        print(f"archive: {gb:.2f} GB on disk ({a.years:g} years 6-hourly, {a.grid[0]}x{a.grid[1]}, {a.variables} "
              f"variables x {len(a.levels)} levels), written in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        phases = [("train", [0]), ("forecast", a.inits), ("evaluate", a.inits)] if "forecast" in a.tasks else []
        if "downscale" in a.tasks:
            phases += [("train_downscale", [0]), ("downscale", a.times), ("evaluate_downscale", a.times)]
        for phase, counts in phases:
            for n in counts:
                out = subprocess.run([sys.executable, "-m", "benchmarks.climate_archive", "--steps", str(a.steps),
                                      "--child", phase, str(work), str(n)], capture_output=True, text=True)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                if out.returncode or not line:
                    sys.exit(f"{phase} {n} failed:\n{out.stderr[-3000:]}")
                rows.append(json.loads(line[-1]))
                print(rows[-1], flush=True)
    print(f"\n{machine()}")
    print("| phase | initial times (forecast) or time steps (downscale) | seconds | seconds per one | peak memory "
          "(MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        per = f"{r['seconds'] / r['inits']:.3f}" if r["inits"] else ""
        print(f"| {r['phase']} | {r['inits'] or ''} | {r['seconds']:.1f} | {per} | {r['peak_mib']:.0f} |")
    for phase in ("forecast", "evaluate", "downscale", "evaluate_downscale"):
        f = [r for r in rows if r["phase"] == phase]
        if len(f) > 1:
            print(f"{phase}, {f[-1]['inits'] // f[0]['inits']}x the work: peak memory "
                  f"{f[-1]['peak_mib'] / f[0]['peak_mib']:.2f}x, time per one "
                  f"{(f[-1]['seconds'] / f[-1]['inits']) / (f[0]['seconds'] / f[0]['inits']):.2f}x")


if __name__ == "__main__":
    main()
