"""Finance: input rules, GARCH against arch, backtests and stylized facts against references, scenarios end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sciffusion.cli import main
from sciffusion.domains.finance import (
    GarchT,
    acf,
    aggregated_kurtosis,
    backtest,
    christoffersen,
    diebold_mariano,
    es_z2,
    hill,
    kupiec,
    leverage,
    log_returns,
    pinball,
    read_table,
    to_frame,
)
from sciffusion.domains.finance.baselines import bootstrap_scenarios
from sciffusion.domains.finance.features import feature_count, summaries
from sciffusion.domains.finance.series import period_slice
from sciffusion.tasks.outputs import open_output

arch = pytest.importorskip("arch")  # the finance extra; part of the test extra, so this runs in CI


# --- input ---------------------------------------------------------------------------------------------------

def test_read_table_rules(tmp_path, prices):
    p = tmp_path / "p.csv"
    prices.iloc[:50].to_csv(p)
    df = read_table(p)
    pd.testing.assert_frame_equal(df, prices.iloc[:50], check_freq=False, check_names=False)
    swapped = prices.iloc[[0, 2, 1, 3]]
    with pytest.raises(ValueError, match="not increasing"):
        read_table(swapped)
    with pytest.raises(ValueError, match=f"the date {prices.index[1].date()} appears twice"):
        read_table(prices.iloc[[0, 1, 1, 2]])
    with pytest.raises(ValueError, match=r"asset\(s\) \['DAX'\]"):
        read_table(prices, ["DAX"])
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "none.csv")


def test_long_tables_and_parquet_read_as_the_wide_table(tmp_path, prices):
    wide = prices.iloc[:40]
    long = wide.rename_axis("Date").reset_index().melt(id_vars="Date", var_name="Ticker", value_name="Adj Close")
    long["Volume"] = 1e6                                   # other columns of a vendor download are ignored
    long = long.sample(frac=1.0, random_state=0)           # any row order
    expected = read_table(wide)[["NASDAQ", "SP500"]]      # a long table's assets come sorted (any row order)
    for path in (tmp_path / "long.csv", tmp_path / "long.parquet"):
        long.to_csv(path, index=False) if path.suffix == ".csv" else long.to_parquet(path, index=False)
        pd.testing.assert_frame_equal(read_table(path), expected, check_freq=False, check_names=False)
    wide.to_parquet(tmp_path / "wide.parquet")             # the DatetimeIndex kept by parquet
    pd.testing.assert_frame_equal(read_table(tmp_path / "wide.parquet"), read_table(wide), check_freq=False,
                                  check_names=False)
    one = long[long["Ticker"] == "SP500"]                  # one asset in long form is still long
    assert list(read_table(one).columns) == ["SP500"]
    both = long.assign(ret=0.01)
    assert (read_table(both, kind="returns") == 0.01).all().all()           # kind picks the value column
    assert read_table(both, value="ret").equals(read_table(both, kind="returns"))
    pd.testing.assert_frame_equal(read_table(both), expected, check_freq=False, check_names=False)
    day = wide.index[2]
    with pytest.raises(ValueError, match=f"asset 'SP500' has two rows on {day.date()}"):
        read_table(pd.concat([long, long[(long["Ticker"] == "SP500") & (long["Date"] == day)]]))
    two = long.rename(columns={"Adj Close": "x", "Volume": "y"})
    with pytest.raises(ValueError, match=r"which column holds the prices\? found \['x', 'y'\]; call it e.g. adj_close"):
        read_table(two)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        read_table(tmp_path / "bad.parquet")


def test_log_returns_mask_not_fill(prices):
    p = prices.iloc[:6].copy()
    p.iloc[2, 0] = np.nan
    r = log_returns(p)
    assert np.isnan(r.iloc[1, 0]) and np.isnan(r.iloc[2, 0])  # both returns touching the gap, no forward fill
    np.testing.assert_allclose(r.iloc[0, 1], np.log(p.iloc[1, 1] / p.iloc[0, 1]))
    np.testing.assert_allclose(np.exp(np.nansum(r.iloc[2:, 1])) * p.iloc[2, 1], p.iloc[-1, 1])  # round trip
    p.iloc[4, 1] = 0.0
    with pytest.raises(ValueError, match="non-positive price 0.0 for NASDAQ"):
        log_returns(p)


def test_day_numbers_whatever_the_index_unit():
    from sciffusion.domains.finance.garch import day_number

    for unit in ("s", "us", "ns"):
        idx = pd.DatetimeIndex(["1970-01-11", "2015-01-02", "2015-01-05"]).as_unit(unit)
        assert day_number(idx).tolist() == [10, 16437, 16440]
    assert day_number(pd.Timestamp("2015-01-02")).tolist() == [16437]


def test_period_slice():
    assert period_slice(":2009-12-31") == slice(None, pd.Timestamp("2009-12-31"))
    assert period_slice("2010-01-04/2013-03-01") == slice(pd.Timestamp("2010-01-04"), pd.Timestamp("2013-03-01"))
    with pytest.raises(ValueError, match="ends before"):
        period_slice("2013/2010")


# --- GARCH -----------------------------------------------------------------------------------------------------

def test_garch_filter_matches_arch(prices):
    r = 100 * log_returns(prices).iloc[:1500]
    g = GarchT.fit(r, asymmetric=True)
    for a, col in enumerate(r.columns):
        am = arch.arch_model(r[col], mean="Constant", vol="GARCH", p=1, o=1, q=1, dist="t", rescale=False)
        res = am.fit(disp="off")
        np.testing.assert_allclose([g.mu[a], g.omega[a], g.alpha[a], g.gamma[a], g.beta[a], g.nu[a]],
                                   res.params.values, rtol=1e-6)
        s2 = g.filter(r.to_numpy())
        np.testing.assert_allclose(np.sqrt(s2[:-1, a]), res.conditional_volatility.values, rtol=1e-10)
        f = res.forecast(horizon=1, reindex=False).variance.values[-1, 0]
        np.testing.assert_allclose(s2[-1, a], f, rtol=1e-10)  # the row after the data is the next-day forecast


def test_gaussianised_shocks_round_trip_and_law():
    g = GarchT(*(np.array([v]) for v in (0.0, 0.01, 0.05, 0.1, 0.85, 5.0)))
    rng = np.random.default_rng(0)
    z = rng.standard_t(5, size=(20000, 1)) * np.sqrt(3 / 5)  # standardised t(5)
    n = g.to_normal(z)
    assert stats.kstest(n[:, 0], "norm").pvalue > 1e-3
    np.testing.assert_allclose(g.from_normal(n), z, rtol=1e-9, atol=1e-12)
    assert np.isfinite(g.to_normal(np.array([[-40.0], [40.0]]))).all()


def test_simulation_follows_the_recursion():
    g = GarchT(*(np.array([v, v]) for v in (0.02, 0.02, 0.03, 0.12, 0.85, 7.0)))
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4000, 2, 30))
    r, after = g.simulate(np.array([[1.5, 0.5]]), z)
    # Feeding a path back through the filter reproduces its variances.
    s2 = np.empty((31, 2))
    s2[0] = [1.5, 0.5]
    for t in range(30):
        s2[t + 1] = g.next_variance(r[0, :, t] - g.mu, s2[t])
    np.testing.assert_allclose(after[0].T, s2[1:])
    np.testing.assert_allclose(r[:, :, 0].var(0), [1.5, 0.5], rtol=0.06)  # day-1 variance = the given one


# --- backtests and stylized facts ------------------------------------------------------------------------------

def test_kupiec_and_christoffersen_by_hand():
    hit = np.zeros(250, bool)
    hit[[10, 11, 50, 120, 200, 201, 240]] = True
    k = kupiec(hit, 0.01)
    x, n, p = 7, 250, 0.01
    lr = -2 * (np.log((1 - p) ** (n - x) * p**x) - np.log((1 - x / n) ** (n - x) * (x / n) ** x))
    assert k["exceedances"] == 7 and k["rate"] == pytest.approx(0.028)
    assert k["lr"] == pytest.approx(lr) and k["pvalue"] == pytest.approx(stats.chi2.sf(lr, 1))
    c = christoffersen(hit, 0.01)
    n01, n11, n10, n00 = 5, 2, 5, 237
    pi0, pi1, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 249
    lr_ind = -2 * ((n00 + n10) * np.log(1 - pi) + (n01 + n11) * np.log(pi)
                   - n00 * np.log(1 - pi0) - n01 * np.log(pi0) - n10 * np.log(1 - pi1) - n11 * np.log(pi1))
    assert c["lr_ind"] == pytest.approx(lr_ind) and c["lr_cc"] == pytest.approx(lr + lr_ind)
    assert c["pvalue_cc"] == pytest.approx(stats.chi2.sf(lr + lr_ind, 2))
    assert kupiec(np.zeros(100, bool), 0.01)["lr"] == pytest.approx(-2 * 100 * np.log(0.99))


def test_diebold_mariano_against_statsmodels_hac():
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    e = rng.standard_normal(400)
    d = 0.1 + np.convolve(e, [1.0, 0.6, 0.3], "same")  # autocorrelated loss differences, as overlapping windows give
    a, b = 1.0 + d, np.ones(400)
    for lag in (0, 2, 5):
        dm = diebold_mariano(a, b, lag)
        fit = sm.OLS(d, np.ones(400)).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False})
        assert dm["stat"] == pytest.approx(fit.tvalues[0], rel=1e-9)
        assert dm["pvalue"] == pytest.approx(fit.pvalues[0], rel=1e-6)
        assert dm["mean_diff"] == pytest.approx(d.mean())
    same = diebold_mariano(b + rng.normal(0, 1, 400), b + rng.normal(0, 1, 400))
    assert same["pvalue"] > 0.01 and diebold_mariano(a, b)["pvalue"] < 0.05
    with pytest.raises(ValueError, match="constant"):
        diebold_mariano(b + 1, b)
    with pytest.raises(ValueError, match="lag"):
        diebold_mariano(a, b, 400)


def test_backtests_accept_a_right_model_and_reject_a_narrow_one():
    rng = np.random.default_rng(2)
    y = rng.standard_t(4, 5000)
    right = rng.standard_t(4, (5000, 400))
    ok, narrow = backtest(y, right, 0.01), backtest(y, 0.6 * right, 0.01)
    assert ok["pvalue"] > 0.01 and abs(ok["es_z2"]) < 0.35
    assert narrow["pvalue"] < 1e-6 and narrow["es_z2"] < -1 and narrow["rate"] > 0.03
    q = stats.t.ppf(0.05, 4)
    assert pinball(np.full(5000, q), y, 0.05) < pinball(np.full(5000, q + 0.5), y, 0.05)
    assert es_z2(np.array([-3.0, 0.0]), np.array([-1.0, -1.0]), np.array([-1.5, -1.5]), 0.5) == pytest.approx(-1.0)


def test_stylized_facts_against_references():
    from statsmodels.tsa.stattools import acf as sm_acf

    rng = np.random.default_rng(3)
    x = rng.standard_t(5, 3000)
    np.testing.assert_allclose(acf(x, 20), sm_acf(x, nlags=20, adjusted=False, fft=False)[1:], atol=1e-12)
    pareto = rng.pareto(3.0, 200000) + 1
    assert hill(pareto, 0.02) == pytest.approx(3.0, rel=0.05)
    # A GJR path with leverage (gamma > 0, alpha = 0) has corr(r_t, r_{t+1}^2) < 0; a symmetric one does not.
    z = rng.standard_normal((1, 1, 100000))
    gjr = GarchT(*(np.array([v]) for v in (0.0, 0.02, 0.0, 0.15, 0.9, 8.0)))
    sym = GarchT(*(np.array([v]) for v in (0.0, 0.02, 0.08, 0.0, 0.9, 8.0)))
    assert leverage(gjr.simulate(np.array([[1.0]]), z)[0][0, 0], [1])[0] < -0.03
    assert abs(leverage(sym.simulate(np.array([[1.0]]), z)[0][0, 0], [1])[0]) < 0.02
    k = aggregated_kurtosis(rng.standard_t(5, 200000), (1, 20))
    assert k[1] > 3 and abs(k[20]) < 0.5


def test_summaries_by_hand():
    rng = np.random.default_rng(4)
    g = rng.standard_normal((80, 2))
    g[70, 0] = np.nan
    lv = rng.standard_normal((80, 2)) * 0.1
    f = summaries(g, lv, [79], 60)[0]
    w5 = g[75:80]
    w20 = g[60:80, 0][np.isfinite(g[60:80, 0])]
    np.testing.assert_allclose(f[:2], lv[79], rtol=1e-6)
    np.testing.assert_allclose(f[2:4], w5.sum(0) / np.sqrt(5), rtol=1e-5)
    np.testing.assert_allclose(f[4:6], 0.5 * np.log((w5**2).mean(0)), rtol=1e-5)
    np.testing.assert_allclose(f[6], w20.sum() / np.sqrt(19), rtol=1e-5)
    # dependence: each asset's correlation with the market (mean observed shock), and the average pairwise one
    win = g[20:80]
    m = np.nanmean(win, axis=1)
    ok0 = np.isfinite(win[:, 0])
    np.testing.assert_allclose(f[-3], np.corrcoef(win[ok0, 0], m[ok0])[0, 1], rtol=1e-5)
    np.testing.assert_allclose(f[-2], np.corrcoef(win[:, 1], m)[0, 1], rtol=1e-5)
    assert f.shape == (feature_count(2, 60),)


def test_average_correlation_feature_matches_the_pairwise_mean():
    rng = np.random.default_rng(5)
    A, T = 12, 400
    common = rng.standard_normal((T, 1))
    g = 0.6 * common + 0.8 * rng.standard_normal((T, A))   # every pair correlated 0.36
    f = summaries(g, np.zeros((T, A)), [T - 1], 250)[0]
    c = np.corrcoef(g[-250:].T)
    want = c[np.triu_indices(A, 1)].mean()
    assert abs(f[-1] - want) < 0.01 and abs(want - 0.36) < 0.1
    assert f.shape == (feature_count(A, 250),) and feature_count(500, 60) == 500 * 7 + 501


def test_bootstrap_uses_only_the_past(prices):
    r = log_returns(prices).iloc[:300]
    out = bootstrap_scenarios(r, np.array([100, 250]), 50, 5, seed=0)
    x = r.to_numpy()
    for i, row in enumerate((100, 250)):
        for p in range(50):
            block = out[i, :, p]
            starts = [s for s in range(row - 4 + 1) if np.allclose(x[s:s + 5], block)]
            assert starts, "every path is a block of the history before its origin"


# --- end to end ------------------------------------------------------------------------------------------------

def test_scenarios_end_to_end(tmp_path, prices, small_train):
    data = tmp_path / "prices.csv"
    prices.loc[:"2004-06-30"].to_csv(data)
    run = tmp_path / "run"
    assert main(["train", "scenarios", "--data", str(data), "--train-period", ":2003-12-31", "--context", "20",
                 "--horizon", "5", "--max-steps", "10", "--out", str(run), *small_train]) == 0
    out = tmp_path / "scen.nc"
    assert main(["scenarios", "--run", str(run), "--data", str(data), "--origins", "2004-03-01/2004-03-31",
                 "--every", "5", "--paths", "8", "--steps", "4", "--out", str(out)]) == 0
    ds = open_output(out, "scenarios")
    assert dict(ds.sizes) == {"origin": 5, "horizon": 5, "path": 8, "asset": 2}
    assert list(ds["asset"].values) == ["SP500", "NASDAQ"]
    last = prices.loc[pd.DatetimeIndex(ds["origin"].values)].to_numpy()
    np.testing.assert_allclose(ds["last_price"].values, last)
    np.testing.assert_allclose(ds["price"].values, last[:, None, None, :] * np.exp(np.cumsum(
        ds["log_return"].values.astype(np.float64), axis=1)), rtol=1e-5)
    idx = prices.index
    o = idx.get_loc(pd.Timestamp(ds["origin"].values[0]))
    assert (ds["date"].values[0] == idx[o + 1:o + 6].values).all()  # the scenario days are the data's next days
    sd = ds["log_return"].isel(horizon=0).std("path")
    assert (sd > 0.3 * ds["garch_sigma"]).all() and (sd < 3 * ds["garch_sigma"]).all()
    # A path depends on (seed, origin, path) only: one origin alone reproduces its paths from the full set.
    one = tmp_path / "one.nc"
    first = str(pd.Timestamp(ds["origin"].values[1]).date())
    assert main(["scenarios", "--run", str(run), "--data", str(data), "--origins", f"{first}/{first}",
                 "--paths", "3", "--steps", "4", "--out", str(one)]) == 0
    np.testing.assert_allclose(open_output(one, "scenarios")["log_return"].isel(origin=0).values,
                               ds["log_return"].isel(origin=1, path=slice(0, 3)).values, rtol=1e-5, atol=1e-7)
    frame = to_frame(ds)
    assert len(frame) == 5 * 5 * 8 * 2 and {"date", "log_return", "price"} <= set(frame.columns)
    report = tmp_path / "report.json"
    weights = tmp_path / "w.csv"
    weights.write_text("asset,weight\nNASDAQ,0.3\nSP500,0.7\n")
    assert main(["evaluate", "scenarios", "--run", str(run), "--data", str(data), "--scenarios", str(out),
                 "--long-days", "60", "--out", str(report), "--plots", str(tmp_path / "plots"),
                 "--weights", str(weights)]) == 0
    rep = json.loads(report.read_text())
    baselines = {"gjr_t", "garch_t", "tcop_gjr_t", "dcc_gjr_t", "fhs", "bootstrap"}
    assert set(rep["skill"]) == {"sciffusion"} | baselines
    for m in rep["skill"].values():
        assert 0 < m["SP500"]["crps_1d"] < 0.05 and m["SP500"]["var99"]["n"] == 5
    assert set(rep["versus"]) == baselines
    joint = rep["joint"]
    assert joint["weights"] == [0.7, 0.3] and set(joint["scores"]) == {"sciffusion"} | baselines
    assert set(joint["versus"]) == baselines and joint["versus"]["gjr_t"]["energy_1d"]["n"] == 5
    # the report's joint scores are joint_scores' on the file's scenarios and the data's returns
    from sciffusion.domains.finance.joint import joint_scores
    from sciffusion.domains.finance.report import truth_paths
    r = np.log(prices.loc[:"2004-06-30"]).diff().iloc[1:]
    y = truth_paths(r, r.index.get_indexer(pd.DatetimeIndex(ds["origin"].values)), 5)
    ref = joint_scores(ds["log_return"].values.astype(np.float64), y, np.array([0.7, 0.3]))
    assert joint["scores"]["sciffusion"]["portfolio_crps_hd"] == pytest.approx(np.nanmean(ref["portfolio_crps_hd"]))
    assert joint["portfolio_var"]["fhs"]["1d_var99"]["n"] == 5
    dm = rep["versus"]["gjr_t"]["SP500"]["crps_1d"]
    assert dm["n"] == 5 and dm["mean_diff"] == pytest.approx(rep["skill"]["sciffusion"]["SP500"]["crps_1d"]
                                                             - rep["skill"]["gjr_t"]["SP500"]["crps_1d"])
    assert {"real", "sciffusion", "gjr_t"} <= set(rep["stylized_facts"])
    assert len(rep["stylized_facts"]["sciffusion"]["SP500"]["acf_abs"]) == 50
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "acf_leverage.png", "fan_chart.png", "qq.png", "var_timeline.png"]


def test_bad_input_one_line_errors(tmp_path, prices, capsys):
    data = tmp_path / "p.csv"
    prices.iloc[:300].to_csv(data)
    assert main(["train", "scenarios", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "need at least" in capsys.readouterr().err
    bad = prices.iloc[:300].copy()
    bad.iloc[5, 0] = -1.0
    bad.to_csv(data)
    assert main(["train", "scenarios", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "non-positive price -1.0 for SP500" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_python_api_trains_on_a_frame_as_the_cli_does_on_its_file(tmp_path, prices, small_train):
    """``sf.finance.train_scenarios(frame, ...)``: the in-memory table gives the CLI run's weights exactly."""
    import torch

    import sciffusion as sf
    from sciffusion.training.config import parse_assignment

    frame = prices.loc[:"2004-06-30"]
    data = tmp_path / "prices.csv"
    frame.to_csv(data)
    flags = ["--train-period", ":2003-12-31", "--context", "20", "--horizon", "5", "--max-steps", "6"]
    assert main(["train", "scenarios", "--data", str(data), *flags, "--out", str(tmp_path / "cli"), *small_train]) == 0
    settings = dict(parse_assignment(small_train[i + 1]) for i in range(len(small_train)) if small_train[i] == "--set")
    rest = {small_train[i].lstrip("-").replace("-", "_"): small_train[i + 1] for i in range(len(small_train))
            if small_train[i].startswith("--") and small_train[i] != "--set"}
    run = sf.finance.train_scenarios(frame, tmp_path / "api", train_period=":2003-12-31", context=20, horizon=5,
                                     max_steps=6, settings=settings, **rest)
    cli = sf.load_trained(tmp_path / "cli")
    assert run.config["data"]["horizon"] == 5 and run.metadata["assets"] == cli.metadata["assets"]
    for (name, a), (_, b) in zip(sorted(run.module.state_dict().items()), sorted(cli.module.state_dict().items())):
        assert torch.equal(a, b), name
