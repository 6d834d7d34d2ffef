"""Anomalous days in real index prices: score every 2015-2018 return with an imputation run, against baselines.

    python examples/finance_anomaly.py [WORKDIR]           (about 7 minutes on 2 CPU cores, 2 if WORKDIR already
                                                             holds the run of examples/finance_impute.py)

Data: S&P 500 and NASDAQ Composite adjusted closes 1999-2018 (`arch.data`, no download). The protocol: 40 single-day
anomalies are planted in 2015-2018 (half a jump of 3 typical moves against the other index, half the sign of a
large move flipped), every observed return of the period is hidden in turn and imputed from the rest of its window,
and the score is the CRPS of the true return under those imputations. Baselines on the same days: the GARCH-CCC
Gaussian conditional (closed-form CRPS) and the absolute GARCH z-score. These are the commands a user types.
"""

import pathlib
import shlex
import subprocess
import sys
import tempfile

from sciffusion import datasets
from sciffusion.domains.finance import inject_anomalies

work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sciffusion-anomaly-"))
work.mkdir(parents=True, exist_ok=True)
prices, planted, labels = work / "prices.csv", work / "prices_planted.csv", work / "labels.csv"
full = datasets.market_prices()
full.to_csv(prices)
bad, lab = inject_anomalies(full, "2015-01-01/2018-12-31", n=40, size=3.0, seed=0)
bad.to_csv(planted)
lab.reset_index().to_csv(labels, index=False)
run, scores = work / "run", work / "day_scores.csv"
steps = [] if (run / "run.json").exists() else [
    ["train", "impute", "--data", prices, "--train-period", ":2014-12-31", "--out", run,
     "--set", "trainer.progress=false"]]
steps.append(["score-days", "--run", run, "--data", planted, "--period", "2015-01-01/2018-12-31",
              "--labels", labels, "--out", scores])
for argv in steps:
    argv = [str(a) for a in argv]
    print("$ sciffusion " + shlex.join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "sciffusion.cli", *argv], check=True)
print(f"\nrun: {run}\nscores: {scores}")
