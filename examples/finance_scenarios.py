"""Market scenarios on real index data: train, generate 2015-2018 scenarios, write the risk and realism report.

    python examples/finance_scenarios.py [WORKDIR]          (about 4 minutes on 2 CPU cores; needs the finance
                                                              and plots extras: pip install -e ".[finance,plots]")

Data: daily adjusted closes of the S&P 500 and NASDAQ Composite, 1999-2018, from the files the `arch` package
ships (no download). Trains on 1999-2014 (2014 validates), draws 200 joint 20-day paths of both indices from every
second trading day of 2015-2018, and scores them against GJR-GARCH-t and GARCH-t with a Gaussian copula, GJR-t with
a t copula and with DCC correlation (all fitted on 1999-2014), filtered and plain historical simulation: CRPS, joint
scores (energy, variogram, portfolio CRPS), VaR/ES backtests (Kupiec, Christoffersen, Acerbi-Szekely) per asset and
for the equal-weight portfolio, tail co-movement, stylized facts; figures
(fan chart, VaR timeline, QQ, ACF/leverage) go to WORKDIR/plots. These are the commands a user types.
"""

import pathlib
import shlex
import subprocess
import sys
import tempfile

from sciffusion import datasets

work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sciffusion-finance-"))
work.mkdir(parents=True, exist_ok=True)
prices = work / "prices.csv"
datasets.market_prices().to_csv(prices)
run, scen, report = work / "run", work / "scenarios.nc", work / "report.json"
steps = [
    ["train", "scenarios", "--data", prices, "--train-period", ":2014-12-31", "--out", run,
     "--set", "trainer.progress=false"],
    ["scenarios", "--run", run, "--data", prices, "--origins", "2015-01-02/2018-12-31", "--every", "2",
     "--paths", "200", "--out", scen],
    ["evaluate", "scenarios", "--run", run, "--data", prices, "--scenarios", scen, "--out", report,
     "--plots", work / "plots"],
]
for argv in steps:
    argv = [str(a) for a in argv]
    print("$ sciffusion " + shlex.join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "sciffusion.cli", *argv], check=True)
print(f"\nrun: {run}\nscenarios: {scen}\nreport: {report}\nplots: {work / 'plots'}")
