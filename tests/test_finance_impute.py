"""Finance imputation: gaps and their totals, the Gaussian conditional against closed forms, the task end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from sciffusion.cli import main
from sciffusion.domains.finance import hide_stretches, imputation_scores
from sciffusion.domains.finance.gaps import GaussianConditional, find_gaps, project_totals, stretches
from sciffusion.domains.finance.impute import MaskedWindows, random_targets, window_summaries
from sciffusion.tasks.outputs import open_output

pytest.importorskip("arch")


def test_gaps_and_their_totals():
    p = np.array([[100.0, 10], [np.nan, 11], [np.nan, 12], [110, np.nan], [121, 13], [np.nan, 14]])
    r = np.log(p[1:] / p[:-1])
    gaps = find_gaps(r, p)
    # asset 0: prices 1-2 missing -> returns 0..2 missing, total log(110/100); price 5 missing at the end: unknown
    assert list(gaps.asset) == [0, 0, 1] and list(gaps.lo) == [0, 4, 2] and list(gaps.hi) == [2, 4, 3]
    np.testing.assert_allclose(gaps.total[[0, 2]], [np.log(110 / 100), np.log(13 / 12)])
    assert np.isnan(gaps.total[1])
    assert (gaps.gap_id[:3, 0] == 0).all() and gaps.gap_id[3, 0] == -1
    assert stretches(gaps.missing) == [(0, 4)]
    assert np.isnan(find_gaps(r).total).all()  # returns alone carry no totals


def _brute_conditional(z, observed, sigma, gap_of, c, corr):
    """Gaussian conditioning written out: joint of (all entries, observations, totals), Schur complement."""
    W, A = observed.shape
    cov = np.kron(np.eye(W), corr)
    rows = [np.eye(W * A)[i] for i in np.flatnonzero(observed.ravel())]
    y = list(z.ravel()[observed.ravel()])
    for k in np.unique(gap_of[gap_of >= 0]):
        rows.append(np.where((gap_of == k).ravel(), sigma.ravel(), 0.0))
        y.append(c[k])
    K = np.stack(rows)
    S_yy, S_xy = K @ cov @ K.T, cov @ K.T
    mean = S_xy @ np.linalg.solve(S_yy, np.asarray(y))
    post = cov - S_xy @ np.linalg.solve(S_yy, S_xy.T)
    return mean.reshape(W, A), post


def test_gaussian_conditional_matches_the_closed_form():
    rng = np.random.default_rng(0)
    W, A = 8, 3
    corr = np.array([[1, 0.8, 0.5], [0.8, 1, 0.3], [0.5, 0.3, 1]])
    z = rng.standard_normal((W, A))
    observed = np.ones((W, A), bool)
    observed[2:6, 0] = False       # a gap of asset 0 with a known total
    observed[4:7, :] = False       # every asset missing on days 4-6
    gap_of = np.full((W, A), -1)
    gap_of[2:7, 0] = 0
    sigma = rng.uniform(0.5, 2, (W, A))
    c = np.array([1.3])
    gc = GaussianConditional.of(z, observed, sigma, gap_of, c, corr)
    mean, post = _brute_conditional(z, observed, sigma, gap_of, c, corr)
    np.testing.assert_allclose(gc.mean, mean, atol=1e-8)
    np.testing.assert_allclose(gc.std, np.sqrt(np.clip(np.diag(post), 0, None)).reshape(W, A), atol=1e-6)
    draws = gc.sample(20000, rng)
    np.testing.assert_allclose(draws[:, observed], np.broadcast_to(z[observed], (20000, observed.sum())),
                               atol=1e-8)
    np.testing.assert_allclose((draws[:, 2:7, 0] * sigma[2:7, 0]).sum(1), 1.3, atol=1e-8)  # total met exactly
    flat = draws.reshape(20000, -1)
    np.testing.assert_allclose(np.cov(flat.T), post, atol=0.05)  # the right covariance, not just the mean
    # with corr = I, one asset's gap is a Brownian bridge: var 1 - sigma_t^2 / sum sigma^2 where nothing else binds
    bridge = GaussianConditional.of(z, observed, sigma, gap_of, c, np.eye(A))
    s = sigma[2:7, 0]
    np.testing.assert_allclose(bridge.std[2:7, 0] ** 2, 1 - s**2 / np.sum(s**2), atol=1e-8)


@given(st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_projection_meets_totals_and_is_exact_for_gaussians(seed, L):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.3, 3.0, (L + 4, 2))
    var = rng.uniform(0.2, 1.0, (L + 4, 2))
    gap_of = np.full((L + 4, 2), -1)
    gap_of[2:2 + L, 1] = 0
    z = rng.standard_normal((50, L + 4, 2)) * np.sqrt(var)
    out = project_totals(z, sigma, gap_of, np.array([0.7]), var=var)
    np.testing.assert_allclose((out[:, 2:2 + L, 1] * sigma[2:2 + L, 1]).sum(1), 0.7, atol=1e-9)
    np.testing.assert_array_equal(out[:, gap_of < 0], z[:, gap_of < 0])  # nothing outside the gap moves
    # Gaussian with independent entries: projecting a draw gives the conditional law's mean (kriging)
    gc = GaussianConditional.of(np.zeros((L + 4, 2)), np.zeros((L + 4, 2), bool), sigma, gap_of, np.array([0.7]),
                                np.eye(2))
    mean_proj = project_totals(np.zeros((1, L + 4, 2)), sigma, gap_of, np.array([0.7]))[0]
    np.testing.assert_allclose(mean_proj, gc.mean, atol=1e-8)


def test_training_windows_are_deterministic_and_masked():
    rng = np.random.default_rng(1)
    T, A = 400, 2
    z = rng.standard_normal((T, A))
    z[50:53, 1] = np.nan  # real missing days: never in the loss
    ds = MaskedWindows(z, z, np.ones((T, A)), np.eye(A), np.arange(0, T - 64), window=64, length=50, seed=3,
                       totals=True, max_gap=20)
    a, b = ds[7], ds[7]
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy())
    for i in range(50):
        it = ds[i]
        assert it["x"].shape == (A, 64) and it["cond"].shape[1] == 64 and it["mask"].any()
        assert np.isfinite(it["x"].numpy()).all() and np.isfinite(it["cond"].numpy()).all()
        assert not it["mask"][it["cond"][A:2 * A].bool()].any()  # observed entries are never targets
    t = random_targets(np.random.default_rng(0), (64, 2), 20)
    assert t.dtype == bool and t.shape == (64, 2) and t.any()
    f = window_summaries(np.stack([z[:64, 0], z[:64, 0]], 1), np.ones((64, 2), bool))
    assert f.shape == (3,) and f[2] == pytest.approx(1.0)  # identical shocks: correlation one


def test_scores_of_a_perfect_and_a_point_imputation(prices):
    p = prices.iloc[:300]
    masked = hide_stretches(p, "1999-06-01/1999-12-31", n=5, max_len=4, seed=0)
    miss = masked.isna().to_numpy()
    S = 4
    r = np.log(p).diff().to_numpy()
    ds = xr.Dataset({"log_return": (("sample", "time", "asset"), np.repeat(r[None], S, 0)),
                     "price": (("sample", "time", "asset"), np.repeat(p.to_numpy()[None], S, 0)),
                     "input_missing": (("time", "asset"), miss.astype(np.int8))},
                    coords={"time": p.index.values, "asset": list(p.columns)}, attrs={"kind": "prices"})
    s = imputation_scores(ds, p)
    assert s["entries"] == miss.sum() > 0
    assert s["crps_return_pct"] == pytest.approx(0, abs=1e-6) and s["coverage90_log_price"] == 1.0
    ds["price"] = ds["price"] * 1.01  # 1% off everywhere: CRPS of a point forecast is its absolute error
    assert imputation_scores(ds, p)["crps_log_price_pct"] == pytest.approx(100 * np.log(1.01), rel=1e-6)


def test_impute_end_to_end(tmp_path, prices, small_train):
    full = prices.loc[:"2004-06-30"]
    data, masked = tmp_path / "prices.csv", tmp_path / "masked.csv"
    full.to_csv(data)
    hole = hide_stretches(full, "2004-01-01/2004-06-30", n=6, max_len=6, seed=1)
    hole.iloc[-1, 0] = np.nan  # a gap at the end: its total is unknown
    hole.to_csv(masked)
    run = tmp_path / "run"
    assert main(["train", "impute", "--data", str(data), "--train-period", ":2003-12-31", "--window", "32",
                 "--max-gap", "8", "--max-steps", "10", "--out", str(run), *small_train]) == 0
    out = tmp_path / "imputed.nc"
    assert main(["impute", "--run", str(run), "--data", str(masked), "--samples", "6", "--steps", "4",
                 "--out", str(out)]) == 0
    ds = open_output(out, "impute")
    assert dict(ds.sizes) == {"sample": 6, "time": len(full), "asset": 2}
    obs = hole.notna().to_numpy()
    price = ds["price"].values
    np.testing.assert_array_equal(price[:, obs], np.broadcast_to(hole.to_numpy()[obs], (6, obs.sum())))
    assert np.isfinite(price).all() and np.isfinite(ds["log_return"].values[:, 1:]).all()
    # the imputed returns carry the prices to the next observed price: log returns add up to the price path
    np.testing.assert_allclose(np.exp(np.cumsum(ds["log_return"].values[:, 1:].astype(np.float64), 1))
                               * full.iloc[0].to_numpy(), price[:, 1:], rtol=1e-4)
    assert (np.ptp(price[:, ~obs], axis=0) > 0).all()  # samples differ where the value was missing
    # linear baseline: log prices on a straight line across each gap
    lin = tmp_path / "linear.nc"
    assert main(["impute", "--run", str(run), "--data", str(masked), "--method", "linear", "--samples", "2",
                 "--out", str(lin)]) == 0
    lp = np.log(open_output(lin, "impute")["price"].values[0, :, 1])
    known = np.isfinite(hole.iloc[:-1, 1].to_numpy())
    t = np.arange(len(known))
    np.testing.assert_allclose(lp[:-1], np.interp(t, t[known], np.log(hole.iloc[:-1, 1].to_numpy()[known])),
                               rtol=1e-10)
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "impute", "--run", str(run), "--data", str(data), "--imputed", str(out),
                 "--out", str(scores)]) == 0
    rep = json.loads(scores.read_text())
    assert set(rep["scores"]) == {"sciffusion", "linear", "bridge", "ccc"}
    assert rep["scores"]["ccc"]["crps_return_pct"] < rep["scores"]["linear"]["crps_return_pct"]
    # one-line errors: a stretch longer than the window allows
    long = full.copy()
    long.iloc[-40:-20, 0] = np.nan
    long.to_csv(masked)
    assert main(["impute", "--run", str(run), "--data", str(masked), "--out", str(out)]) == 2
    assert main(["train", "impute", "--data", str(data), "--window", "30", "--out", str(tmp_path / "r2")]) == 2


def test_gaussian_crps_and_detection_table_against_references():
    properscoring = pytest.importorskip("properscoring")
    from sklearn.metrics import average_precision_score, roc_auc_score

    from sciffusion.domains.finance.anomaly import crps_gaussian, detection_table
    rng = np.random.default_rng(0)
    y, mu, sd = rng.standard_normal(50), rng.standard_normal(50), rng.uniform(0.2, 2, 50)
    np.testing.assert_allclose(crps_gaussian(y, mu, sd), properscoring.crps_gaussian(y, mu, sd), rtol=1e-10)
    idx = pd.MultiIndex.from_product([pd.bdate_range("2020-01-01", periods=30), ["A", "B"]], names=["date", "asset"])
    scores = pd.DataFrame({"sciffusion": rng.random(60), "ccc": rng.random(60), "zscore": rng.random(60)}, index=idx)
    labels = pd.DataFrame({"anomaly": 1}, index=idx[[3, 10, 41]])
    y = np.isin(np.arange(60), [3, 10, 41])
    t = detection_table(scores, labels)
    assert t["ccc"]["auroc"] == pytest.approx(roc_auc_score(y, scores["ccc"]))
    assert t["zscore"]["auprc"] == pytest.approx(average_precision_score(y, scores["zscore"]))


def test_day_scores_end_to_end(tmp_path, prices):
    full = prices.loc[:"2004-06-30"]
    data = tmp_path / "prices.csv"
    full.to_csv(data)
    from sciffusion.domains.finance import inject_anomalies
    bad, labels = inject_anomalies(full, "2004-01-01/2004-06-30", n=6, size=6.0, seed=0)
    assert len(labels) == 6 and np.isfinite(bad.to_numpy()).all()
    changed = np.abs(np.log(bad).diff() - np.log(full).diff()).stack() > 1e-12
    assert set(changed[changed].index) == set(labels.index)  # exactly the labelled returns differ
    bad.to_csv(tmp_path / "bad.csv")
    labels.reset_index().to_csv(tmp_path / "labels.csv", index=False)
    run = tmp_path / "run"
    assert main(["train", "impute", "--data", str(data), "--train-period", ":2003-12-31", "--window", "32",
                 "--max-gap", "8", "--max-steps", "5", "--out", str(run), "--set", "model.net.channels=[8,8]",
                 "--set", "trainer.progress=false", "--set", "data.val_days=60"]) == 0
    out = tmp_path / "scores.csv"
    assert main(["score-days", "--run", str(run), "--data", str(tmp_path / "bad.csv"), "--period",
                 "2004-01-01/2004-06-30", "--samples", "8", "--steps", "4", "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out)]) == 0
    s = pd.read_csv(out, parse_dates=["date"]).set_index(["date", "asset"])
    n_days = len(full.loc["2004-01-01":"2004-06-30"])
    assert len(s) == 2 * n_days and s[["sciffusion", "ccc", "zscore"]].notna().all().all()
    assert (s["ccc"] > 0).all() and (s["sciffusion"] > -1e-9).all()
    # 6-typical-move breaks with the market stand out under the Gaussian conditional
    from sciffusion.domains.finance import detection_table
    assert detection_table(s, labels)["ccc"]["auroc"] > 0.8
    with pytest.raises(SystemExit):  # no training of its own
        main(["train", "day_scores", "--data", str(data), "--out", str(tmp_path / "x")])
