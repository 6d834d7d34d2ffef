"""Two torch jobs sharing the machine: wall time of one job alone, of two side by side with torch's default threads,
and of two side by side with ``--threads`` splitting the cores.

    python benchmarks/threads.py [--steps 60]

The job is ``sciffusion train generate`` for ``--steps`` optimizer steps of a small 2-D U-Net on 64 random 32x32
fields, run through the CLI in subprocesses as a user would start them. Ratios are to the job alone (default
threads), run first in the same process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import machine


def jobs(argv: list[str], n: int) -> float:
    """Wall time until ``n`` copies of the job, started together, have all finished."""
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        procs = [subprocess.Popen([sys.executable, "-m", "sciffusion.cli", *argv, "--out", f"{d}/r{i}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a job failed: exit codes {codes}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        data = f"{d}/x.npy"
        np.save(data, np.random.default_rng(0).normal(size=(64, 1, 32, 32)).astype("f4"))
        job = ["train", "generate", "--data", data, "--max-steps", str(args.steps), "--accelerator", "cpu",
               "--set", "trainer.progress=false", "--set", "model.net.channels=[16,32]", "--batch-size", "16"]
        env_note = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        print(f"# machine: {machine()}, {cores} cores, {env_note}; job: {args.steps} steps")
        alone = jobs(job, 1)
        two = jobs(job, 2)
        split = jobs([*job, "--threads", str(max(1, cores // 2))], 2)
        print("| setting | wall s | vs one job alone |")
        print("|---|---|---|")
        for name, s in (("one job, default threads", alone), ("two jobs, default threads", two),
                        (f"two jobs, --threads {max(1, cores // 2)} each", split)):
            print(f"| {name} | {s:.1f} | {s / alone:.2f}x |")


if __name__ == "__main__":
    main()
