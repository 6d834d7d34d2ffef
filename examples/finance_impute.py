"""Imputation of missing stretches in real index prices: train, fill 2015-2018 gaps, score against baselines.

    python examples/finance_impute.py [WORKDIR]            (about 6 minutes on 2 CPU cores; needs the finance
                                                             and plots extras: pip install -e ".[finance,plots]")

Data: daily adjusted closes of the S&P 500 and NASDAQ Composite, 1999-2018, from the files the `arch` package
ships (no download). The protocol: 60 stretches of 1-10 trading days are blanked in 2015-2018 (one index, or one
time in four both), the model is trained on 1999-2014 (2014 validates), imputes every gap with 100 samples, and
`evaluate` scores it and three baselines on the same gaps: linear interpolation of log prices, a Brownian bridge with
GARCH volatilities, and the GARCH-CCC Gaussian conditional (the bridge plus the other index's same-day move).
The figure of the widest gaps goes to WORKDIR/plots. These are the commands a user types.
"""

import pathlib
import shlex
import subprocess
import sys
import tempfile

from sciffusion import datasets
from sciffusion.domains.finance import hide_stretches

work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sciffusion-impute-"))
work.mkdir(parents=True, exist_ok=True)
prices, masked = work / "prices.csv", work / "prices_with_gaps.csv"
full = datasets.market_prices()
full.to_csv(prices)
hide_stretches(full, "2015-01-01/2018-12-31", n=60, max_len=10, seed=0).to_csv(masked)
run, imputed, report = work / "run", work / "imputed.nc", work / "report.json"
steps = [
    ["train", "impute", "--data", prices, "--train-period", ":2014-12-31", "--out", run,
     "--set", "trainer.progress=false"],
    ["impute", "--run", run, "--data", masked, "--samples", "100", "--out", imputed],
    ["evaluate", "impute", "--run", run, "--data", prices, "--imputed", imputed, "--out", report,
     "--plots", work / "plots"],
]
for argv in steps:
    argv = [str(a) for a in argv]
    print("$ sciffusion " + shlex.join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "sciffusion.cli", *argv], check=True)
print(f"\nrun: {run}\nimputed: {imputed}\nreport: {report}\nplots: {work / 'plots'}")
