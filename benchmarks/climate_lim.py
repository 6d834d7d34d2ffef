"""Peak memory and time of the linear inverse model's fit on an archive-sized state: the SVD of the weighted
anomalies against the Gram-matrix path that ``LIM.fit`` takes above ``max_elements`` (issue 30, part 3).

    python benchmarks/climate_lim.py [--steps 1460] [--channels 8] [--grid 64 128]

Each fit runs in its own process (peak resident memory of that process); the anomalies are AR(1) noise with a few
large-scale modes. The anomalies alone take steps x channels x cells x 8 bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(path: str, steps: int, channels: int, lat: int, lon: int) -> None:
    import numpy as np

    from sciffusion.domains.climate.stats import LIM

    rng = np.random.default_rng(0)
    a = np.empty((steps, channels, lat, lon))
    a[0] = rng.standard_normal((channels, lat, lon))
    for t in range(1, steps):
        a[t] = 0.8 * a[t - 1] + 0.6 * rng.standard_normal((channels, lat, lon))
    w = np.cos(np.deg2rad(np.linspace(-88, 88, lat)))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    lim = LIM.fit(a, w, max_elements=2**62) if path == "svd" else LIM.fit(a, w)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"path": path, "seconds": seconds, "peak_mib": peak, "anomalies_mib": a.nbytes / 2**20,
                      "before_fit_mib": base, "modes": int(lim.eofs.shape[0])}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1460)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--grid", type=int, nargs=2, default=[64, 128])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.steps, a.channels, *a.grid)
        return
    for path in ("gram", "svd"):
        out = subprocess.run([sys.executable, __file__, "--child", path, "--steps", str(a.steps), "--channels",
                              str(a.channels), "--grid", *map(str, a.grid)], capture_output=True, text=True)
        print(out.stdout.strip() or f"{path} failed (exit {out.returncode}): {out.stderr[-500:]}", flush=True)


if __name__ == "__main__":
    main()
