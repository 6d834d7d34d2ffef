"""Window anomaly scores from a scenario run: the constant-correlation NLL by an independent route, seeds per
window, reaction to planted anomalies, the CLI."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sciffusion.cli import main
from sciffusion.domains.finance import detection_table, inject_window_anomalies, window_scores
from sciffusion.domains.finance.scenarios import PCT, ShockModel
from sciffusion.training.fit import load_trained

PERIOD = "2004-01-01/2004-12-31"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prices, small_train):
    d = tmp_path_factory.mktemp("windows")
    prices = prices.loc[:"2004-12-31"]
    data = d / "prices.csv"
    prices.to_csv(data)
    run = d / "run"
    assert main(["train", "scenarios", "--data", str(data), "--train-period", ":2003-12-31", "--context", "20",
                 "--horizon", "5", "--max-steps", "10", "--out", str(run), *small_train]) == 0
    return prices, data, run


def test_ccc_score_is_the_window_log_density(setup):
    prices, data, run = setup
    f = window_scores(run, data, PERIOD, levels=6, draws=2)
    assert len(f) == 50 and (f["end"] > f["start"]).all() and (f.index < f["start"]).all()
    m = ShockModel.from_run(load_trained(run))
    r = np.log(prices).diff().iloc[1:] * PCT
    s2 = m.garch.filter(r.to_numpy())[:-1]
    R = m.chol @ m.chol.T
    k = np.sqrt(m.garch.nu / (m.garch.nu - 2))
    for origin in f.index[[0, 17, 49]]:
        rows = r.index.get_indexer(r.loc[f.loc[origin, "start"]:f.loc[origin, "end"]].index)
        assert len(rows) == 5
        x = r.to_numpy()[rows]
        sd = np.sqrt(s2[rows])
        q = k * (x - m.garch.mu) / sd
        u = stats.t.cdf(q, m.garch.nu)                        # probability integral transform of each margin
        g = stats.norm.ppf(u)
        logf = stats.t.logpdf(q, m.garch.nu) + np.log(k / sd)  # density of the return itself
        copula = stats.multivariate_normal(np.zeros(2), R).logpdf(g) - stats.norm.logpdf(g).sum(1)
        assert f.loc[origin, "ccc"] == pytest.approx(-(logf.sum() + copula.sum()), rel=1e-6)
    assert (f["zscore"] > 0).all() and np.isfinite(f["sciffusion"]).all()


def test_scores_depend_on_the_window_only_and_react_to_anomalies(setup):
    prices, data, run = setup
    f = window_scores(run, data, PERIOD, levels=8, draws=4)
    part = window_scores(run, data, "2004-06-01/2004-08-31", every=1, levels=8, draws=4)
    both = f.index.intersection(part.index)
    assert len(both) >= 10
    pd.testing.assert_frame_equal(part.loc[both], f.loc[both])
    bad, labels = inject_window_anomalies(prices, PERIOD, 5, n=10, seed=1, scale=2.5, decouple_days=5)
    assert set(labels["kind"]) == {"volatility", "decoupling"} and labels.index.isin(f.index).all()
    g = window_scores(run, bad, PERIOD, levels=8, draws=4)
    assert (g.loc[labels.index, "ccc"] > f.loc[labels.index, "ccc"]).all()
    untouched = f.index[f.index < labels.index.min()]
    pd.testing.assert_frame_equal(g.loc[untouched], f.loc[untouched])
    table = detection_table(g, labels)
    assert table["ccc"]["auroc"] > 0.75 and table["sciffusion"]["auroc"] > 0.75  # chance: 0.5


def test_cli_scores_windows_and_prints_detection(setup, tmp_path, capsys):
    prices, data, run = setup
    bad, labels = inject_window_anomalies(prices, PERIOD, 5, n=6, seed=2)
    bad.to_csv(tmp_path / "bad.csv")
    labels.to_csv(tmp_path / "labels.csv")
    out = tmp_path / "scores.csv"
    assert main(["score-windows", "--run", str(run), "--data", str(tmp_path / "bad.csv"), "--period", PERIOD,
                 "--levels", "6", "--draws", "2", "--labels", str(tmp_path / "labels.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sciffusion" in printed and "AUROC" in printed and "zscore" in printed
    frame = pd.read_csv(out, parse_dates=["origin"], index_col="origin")
    assert list(frame.columns) == ["start", "end", "sciffusion", "ccc", "zscore"] and len(frame) == 50
    assert main(["score-windows", "--run", str(run), "--data", str(data), "--period", "2030-01-01/2030-12-31",
                 "--out", str(tmp_path / "none.csv")]) == 2
    assert "no complete 5-day window" in capsys.readouterr().err
    assert main(["score-windows", "--run", str(run), "--data", str(data), "--draws", "3",
                 "--out", str(tmp_path / "odd.csv")]) == 2
    assert "even" in capsys.readouterr().err
