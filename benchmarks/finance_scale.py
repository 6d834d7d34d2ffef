"""Finance at portfolio scale: time and peak memory to train a scenario model (fixed steps) and to draw 10,000 paths
x 20 days, for 20, 100 and 500 assets, on synthetic regime-switching panels (``finance.synthetic.regime_panel``).

Each phase runs in its own process so its peak resident memory (``ru_maxrss``) is its own; the table printed at the
end gives seconds and MiB per asset count and the ratios to the smallest panel (linear growth in assets would be
5x and 25x). Run alone (two torch processes on 2 cores slow each other many times over):

    python benchmarks/finance_scale.py                      # 20, 100, 500 assets; 200 training steps
    python benchmarks/finance_scale.py --assets 20 --steps 50
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


def child(phase: str, work: pathlib.Path, assets: int, steps: int, paths: int) -> None:
    from sciffusion.cli import main

    data, run = work / f"panel{assets}.csv", work / f"run{assets}"
    t0 = time.perf_counter()
    if phase == "train":
        code = main(["train", "scenarios", "--data", str(data), "--train-period", ":2013-12-31", "--max-steps",
                     str(steps), "--out", str(run), "--seed", "0"])
    else:
        from sciffusion.domains.finance import scenarios

        ds = scenarios(run, data, origins=None, paths=paths, seed=0)
        code = 0 if ds["log_return"].shape == (1, 20, paths, assets) else 1
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"phase": phase, "assets": assets, "seconds": seconds, "peak_mib": peak, "code": code}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=int, nargs="+", default=[20, 100, 500])
    ap.add_argument("--steps", type=int, default=200, help="training steps per model")
    ap.add_argument("--paths", type=int, default=10_000, help="paths drawn from the last day")
    ap.add_argument("--days", type=int, default=2520, help="trading days per panel (10 years)")
    ap.add_argument("--child", nargs=3, metavar=("PHASE", "WORK", "ASSETS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], pathlib.Path(a.child[1]), int(a.child[2]), a.steps, a.paths)
        return
    from benchmarks.common import machine
    from sciffusion.domains.finance.synthetic import regime_panel

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for n in a.assets:
            regime_panel(n, a.days, seed=0)[0].to_csv(work / f"panel{n}.csv")
            for phase in ("train", "sample"):
                out = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--paths", str(a.paths),
                                      "--child", phase, str(work), str(n)], capture_output=True, text=True)
                line = [x for x in out.stdout.splitlines() if x.startswith("{")]
                if out.returncode or not line:
                    sys.exit(f"{phase} with {n} assets failed:\n{out.stderr[-2000:]}")
                rows.append(json.loads(line[-1]))
                print(f"{phase:6s} {n:4d} assets: {rows[-1]['seconds']:8.1f} s {rows[-1]['peak_mib']:8.0f} MiB",
                      flush=True)
    print(f"\nmachine: {machine()}; {a.days} days, {a.steps} training steps, {a.paths} paths x 20 days")
    print(f"{'phase':6s} {'assets':>6s} {'seconds':>9s} {'x first':>8s} {'peak MiB':>9s} {'x first':>8s}")
    for phase in ("train", "sample"):
        mine = [r for r in rows if r["phase"] == phase]
        for r in mine:
            print(f"{phase:6s} {r['assets']:6d} {r['seconds']:9.1f} {r['seconds'] / mine[0]['seconds']:8.2f} "
                  f"{r['peak_mib']:9.0f} {r['peak_mib'] / mine[0]['peak_mib']:8.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    main()
