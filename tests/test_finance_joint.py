"""Finance at portfolio scale: joint scores against scoringrules, portfolio weights, co-movement, the DCC and t
copula against closed forms and simulated truths, the baselines' use of the past, do-no-harm selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from sciffusion.domains.finance.baselines import GarchBaseline
from sciffusion.domains.finance.dcc import DCC, shock_correlation
from sciffusion.domains.finance.joint import co_movement, joint_scores, portfolio_returns, read_weights
from sciffusion.domains.finance.selection import choose_weight
from sciffusion.domains.finance.synthetic import regime_panel
from sciffusion.domains.finance.tcopula import TCopula, copula_loglik, normal_scores, t_scores
from sciffusion.metrics import energy_score, variogram_score

pytest.importorskip("arch")
sr = pytest.importorskip("scoringrules")


# --- scores ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fair", [True, False])
def test_energy_score_equals_scoringrules(fair):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 20, 4)), rng.standard_normal((7, 4))
    es = getattr(sr, "es_ensemble", getattr(sr, "energy_score", None))   # renamed in scoringrules 0.8
    ref = es(y, x, m_axis=-2, v_axis=-1, estimator="fair" if fair else "nrg")
    np.testing.assert_allclose(energy_score(x, y, fair=fair), ref, rtol=1e-10)


def test_variogram_score_equals_scoringrules():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 30, 6)), rng.standard_normal((5, 6))
    vs = getattr(sr, "vs_ensemble", getattr(sr, "variogram_score", None))
    ref = vs(y, x, m_axis=-2, v_axis=-1, p=0.5)
    np.testing.assert_allclose(variogram_score(x, y, p=0.5), ref, rtol=1e-10)


def test_variogram_score_prefers_the_right_dependence():
    rng = np.random.default_rng(2)
    R = np.array([[1.0, 0.8], [0.8, 1.0]])
    y = rng.multivariate_normal([0, 0], R, 400)
    right = rng.multivariate_normal([0, 0], R, (400, 200))
    wrong = rng.standard_normal((400, 200, 2))           # same margins, no dependence
    assert variogram_score(right, y).mean() < 0.9 * variogram_score(wrong, y).mean()
    # per-asset CRPS is blind to it: both sets have the same margins
    one = joint_scores(right[:, None], y[:, None])["crps_1d"].mean()
    two = joint_scores(wrong[:, None], y[:, None])["crps_1d"].mean()
    assert one == pytest.approx(two, rel=0.03)


def test_portfolio_returns_and_weights(tmp_path):
    lr = np.log(np.array([[1.1, 0.9, 1.0]]))
    assert portfolio_returns(lr, np.array([0.5, 0.25, 0.25]))[0] == pytest.approx(0.5 * 0.1 - 0.25 * 0.1)
    assets = ["A", "B", "C"]
    csv = tmp_path / "w.csv"
    csv.write_text("asset,weight\nB,0.25\nA,0.5\nC,0.25\n")
    np.testing.assert_allclose(read_weights(csv, assets), [0.5, 0.25, 0.25])
    js = tmp_path / "w.json"
    js.write_text(json.dumps({"A": 0.2, "B": 0.3, "C": 0.5}))
    np.testing.assert_allclose(read_weights(js, assets), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(read_weights(None, assets), [1 / 3] * 3)
    with pytest.raises(ValueError, match="sum to 1"):
        read_weights({"A": 0.5, "B": 0.5, "C": 0.5}, assets)
    with pytest.raises(ValueError, match="missing C; unknown D"):
        read_weights({"A": 0.5, "B": 0.25, "D": 0.25}, assets)
    csv.write_text("A,0.5\nB,abc\nC,0.5\n")
    with pytest.raises(ValueError, match="not a number"):
        read_weights(csv, assets)


def test_co_movement_by_hand():
    x = np.array([[-2.0, -2.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-2.0, -2.0, -2.0]])
    assert co_movement(x, np.full(3, -1.0), [1, 2, 3]) == {"1": 0.75, "2": 0.5, "3": 0.25}


def test_net_weight_choice_keeps_the_base_on_ties():
    assert choose_weight({0.0: 1.0, 0.5: 0.99995, 1.0: 1.001}) == 0.0      # within the tie margin
    assert choose_weight({0.0: 1.0, 0.5: 0.98, 1.0: 0.97}) == 1.0
    assert choose_weight({0.0: 1.0, 0.5: 0.97, 1.0: 0.97005}) == 0.5
    # with tests: only a significant gain counts
    ratios = {0.0: 1.0, 0.5: 0.99, 1.0: 0.98}
    assert choose_weight(ratios, {0.5: 0.01, 1.0: 0.2}) == 0.5
    assert choose_weight(ratios, {0.5: 0.3, 1.0: 0.2}) == 0.0
    assert choose_weight({0.0: 1.0, 1.0: 1.01}, {1.0: 0.001}) == 0.0          # significantly worse: not eligible


# --- DCC and the t copula -------------------------------------------------------------------------------------

def _dcc_path(a: float, b: float, qbar: np.ndarray, T: int, rng: np.random.Generator) -> np.ndarray:
    q, u = qbar.copy(), np.empty((T, len(qbar)))
    for t in range(T):
        d = np.sqrt(np.diag(q))
        u[t] = np.linalg.cholesky(q / np.outer(d, d)) @ rng.standard_normal(len(qbar))
        q = (1 - a - b) * qbar + a * np.outer(u[t], u[t]) + b * q
    return u


def test_dcc_filter_is_the_recursion_and_forecast_decays_to_qbar():
    rng = np.random.default_rng(3)
    qbar = shock_correlation(rng.standard_normal((50, 3)))
    m = DCC(0.1, 0.8, qbar)
    u = rng.standard_normal((20, 3))
    u[4, 1] = np.nan
    q = m.filter(u)
    assert q.shape == (21, 3, 3)
    np.testing.assert_allclose(q[0], qbar)
    outer = np.outer(u[3], u[3])
    np.testing.assert_allclose(q[4], 0.1 * qbar + 0.1 * outer + 0.8 * q[3])
    gap = np.where(np.isnan(np.outer(u[4], u[4])), qbar, np.outer(u[4], u[4]))   # missing: its rows stay qbar
    np.testing.assert_allclose(q[5], 0.1 * qbar + 0.1 * gap + 0.8 * q[4])
    np.testing.assert_allclose(m.filter(u, np.array([7, 2, 7])), q[[7, 2, 7]])    # rows asked for, in order
    f = m.forecast(q[-1], 200)
    np.testing.assert_allclose(f[0], m.correlation(q[-1]))
    np.testing.assert_allclose(f[-1], m.correlation(qbar), atol=1e-8)


def test_dcc_fit_recovers_the_parameters():
    rng = np.random.default_rng(4)
    qbar = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]])
    fit = DCC.fit(_dcc_path(0.05, 0.9, qbar, 1000, rng))
    assert abs(fit.a - 0.05) < 0.025 and abs(fit.b - 0.9) < 0.05
    const = DCC.fit(rng.multivariate_normal(np.zeros(3), qbar, 1000))
    assert const.a < 0.02                                                    # no dynamics: (almost) nothing learnt


def test_pairwise_correlation_uses_every_pair_observed_together():
    rng = np.random.default_rng(5)
    R = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.2], [0.3, 0.2, 1.0]])
    u = rng.multivariate_normal(np.zeros(3), R, 4000)
    u[:3000, 2] = np.nan                                                     # the third asset lists late
    c = shock_correlation(u)
    assert c[0, 1] == pytest.approx(np.corrcoef(u[:, :2].T)[0, 1], abs=1e-3)  # all 4000 days, not 1000
    assert np.allclose(c, c.T) and np.linalg.eigvalsh(c).min() > 0


def test_t_copula_density_and_fit():
    rng = np.random.default_rng(6)
    R = np.array([[1.0, 0.6], [0.6, 1.0]])
    nu = 4.0
    z = rng.multivariate_normal([0, 0], R, 3000) / np.sqrt(rng.chisquare(nu, (3000, 1)) / nu)
    ref = stats.multivariate_t(np.zeros(2), R, df=nu).logpdf(z[:10]) - stats.t.logpdf(z[:10], nu).sum(1)
    assert copula_loglik(z[:10], R, nu) == pytest.approx(ref.sum(), rel=1e-7)  # 1e-9 ridge
    np.testing.assert_allclose(t_scores(normal_scores(z, nu), nu), z, rtol=1e-8)
    fit = TCopula.fit(normal_scores(z, nu))
    assert fit.nu in (3.0, 4.0, 5.0) and fit.R[0, 1] == pytest.approx(0.6, abs=0.04)
    assert TCopula.fit(rng.multivariate_normal([0, 0], R, 3000)).nu >= 30       # Gaussian data: a large nu
    g = fit.sample_normal_scores(np.random.default_rng(7), 4000, 3)             # (n, A, H)
    assert g.shape == (4000, 2, 3) and abs(g.std() - 1) < 0.03                  # normal-score margins
    both = ((g[:, 0] < -2.33) & (g[:, 1] < -2.33)).mean()
    gauss = stats.multivariate_normal([0, 0], R).cdf([-2.33, -2.33])
    assert both > 1.5 * gauss                                                    # joint crashes: tail dependence


# --- baselines ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def panel():
    prices, stressed = regime_panel(4, 2500, seed=1)
    return np.log(prices).diff().iloc[1:], stressed.to_numpy()


@pytest.mark.parametrize("copula", ["gauss", "t", "dcc", "fhs"])
def test_baselines_use_only_the_past(panel, copula):
    r, _ = panel
    base = GarchBaseline(r.iloc[:1000], asymmetric=True, copula=copula)
    rows = np.array([1100, 1150])
    a = base.scenarios(r, rows, 50, 5, seed=0)
    changed = r.copy()
    changed.iloc[1160:] *= 3.0                                               # the future after both origins
    b = base.scenarios(changed, rows, 50, 5, seed=0)
    assert a.shape == (2, 5, 50, 4) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert 0.3 < a[:, 0].std() / r.iloc[1000:].std().mean() < 3


def test_dcc_baseline_follows_the_correlation_regime(panel):
    r, stressed = panel                                   # pairwise correlation 0.2 calm, 0.7 stressed
    base = GarchBaseline(r.iloc[:1800], asymmetric=True, copula="dcc")
    assert 0.01 < base.dcc.a < 0.15 and 0.6 < base.dcc.b < 0.99
    ran = np.convolve(stressed.astype(int), np.ones(15, int))[:len(stressed)] == 15      # 15 stressed days to t
    calm = np.convolve((~stressed).astype(int), np.ones(30, int))[:len(stressed)] == 30  # 30 calm days to t
    rows = [np.flatnonzero(m)[np.flatnonzero(m) > 1800] for m in (calm, ran)]
    assert min(map(len, rows)) >= 10
    rows = [x[::len(x) // 10][:10] for x in rows]
    sc = base.scenarios(r, np.concatenate(rows), 400, 1, seed=0)[:, 0]                     # (20, P, A)
    corr = np.array([np.corrcoef(s.T)[np.triu_indices(4, 1)].mean() for s in sc])
    assert corr[10:].mean() > corr[:10].mean() + 0.08


# --- scenarios given part of the path -------------------------------------------------------------------------

def _train_tiny(data, run, period, small_train, *extra):
    """A 2-step scenario run (context 20, horizon 5) through the CLI; returns the exit code."""
    from sciffusion.cli import main

    return main(["train", "scenarios", "--data", str(data), "--train-period", period, "--context", "20",
                 "--horizon", "5", "--max-steps", "2", "--out", str(run), *small_train, *extra])


def test_given_scenarios_hold_the_given_days_and_draw_the_rest_from_the_exact_conditional(tmp_path, prices,
                                                                                          small_train, capsys):
    from sciffusion.cli import main
    from sciffusion.diffusion import declared_sigma_data
    from sciffusion.domains.finance import scenarios
    from sciffusion.domains.finance.garch import GarchT
    from sciffusion.tasks.outputs import open_output
    from sciffusion.training.fit import load_trained

    data = tmp_path / "prices.csv"
    prices.loc[:"2004-06-30"].to_csv(data)
    run = tmp_path / "run"
    assert _train_tiny(data, run, ":2003-12-31", small_train) == 0
    # The base law (net_weight 0) is Gaussian in the model's coordinates, so the conditional is closed form.
    ds = scenarios(run, data, origins=["2004-03-01"], paths=4000, sampling={"net_weight": 0.0},
                   given=["SP500:2=-0.06"])
    lr = ds["log_return"].values.astype(np.float64)                   # (1, H, P, A)
    assert (lr[0, :2, :, 0] == np.float32(-0.03)).all() and np.isfinite(lr).all()   # the file stores float32
    t = load_trained(run)
    s = {k: v.numpy() for k, v in t.state.items()}
    garch, L = GarchT.from_state(s), s["chol"]
    sd = declared_sigma_data(t.denoiser())
    mean, std = t.normalizer.mean.numpy(), t.normalizer.std.numpy()
    mu_g, cov_g = L @ mean, L @ np.diag((std * sd) ** 2) @ L.T              # law of day 1's g under the base
    sigma1 = ds["garch_sigma"].values[0] * 100                               # (A,) next-day GARCH sd, percent
    g_given = garch.to_normal(((-0.03 * 100 - garch.mu) / sigma1)[None], axis=-1)[0, 0]
    cond_mean = mu_g[1] + cov_g[1, 0] / cov_g[0, 0] * (g_given - mu_g[0])
    cond_sd = np.sqrt(cov_g[1, 1] - cov_g[1, 0] ** 2 / cov_g[0, 0])
    g_nasdaq = garch.to_normal(((lr[0, 0, :, 1] * 100 - garch.mu[1]) / sigma1[1])[:, None], axis=-1)[:, 1]
    assert abs(g_nasdaq.mean() - cond_mean) < 4 * cond_sd / np.sqrt(4000)
    assert g_nasdaq.std() == pytest.approx(cond_sd, rel=0.06)
    assert cond_mean < -1.0                                                  # the index fell: so does NASDAQ
    # through the CLI, with the given recorded in the file; bad givens are one-line errors
    out = tmp_path / "stress.nc"
    assert main(["scenarios", "--run", str(run), "--data", str(data), "--origins", "2004-03-01/2004-03-05",
                 "--paths", "8", "--steps", "4", "--given", "NASDAQ=-0.02,-0.01", "--out", str(out)]) == 0
    f = open_output(out, "scenarios")
    assert json.loads(f.attrs["given"]) == {"NASDAQ": [-0.02, -0.01]}
    given = f["log_return"].sel(asset="NASDAQ").isel(horizon=[0, 1]).values
    assert (given == np.array([-0.02, -0.01], dtype=np.float32)[None, :, None]).all()
    for bad, msg in ((["DAX=-0.1"], "given asset 'DAX' is not an asset"),
                     (["SP500=" + ",".join(["-0.01"] * 6)], "6 days; give 1 to 5"),
                     (["SP500:x=-0.1"], "expected ASSET=r1,r2")):
        capsys.readouterr()
        assert main(["scenarios", "--run", str(run), "--data", str(data), "--paths", "2", "--given", *bad,
                     "--out", str(tmp_path / "x.nc")]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


def test_an_asset_that_lists_late_trains_or_is_named(tmp_path, small_train, capsys):
    from sciffusion.cli import main
    from sciffusion.domains.finance import scenarios

    prices, _ = regime_panel(3, 1300, seed=2, late_start={2: 300})
    data = tmp_path / "late.csv"
    prices.to_csv(data)
    run = tmp_path / "run"
    assert _train_tiny(data, run, ":2008-12-31", small_train) == 0
    ds = scenarios(run, data, origins=["2009-06-01"], paths=16)
    assert np.isfinite(ds["log_return"].values).all() and ds.sizes["asset"] == 3
    short = tmp_path / "short.csv"
    prices.iloc[:900].assign(S02=lambda d: d["S02"].where(d.index > d.index[800])).to_csv(short)
    capsys.readouterr()
    assert main(["train", "scenarios", "--data", str(short), "--context", "20", "--horizon", "5", "--max-steps",
                 "1", "--out", str(tmp_path / "r2"), *small_train]) == 2
    err = capsys.readouterr().err
    first = prices.index[802].date()
    assert "asset 'S02' has" in err and f"({first} to" in err and len(err.strip().splitlines()) == 1


def test_a_dcc_base_draws_the_dcc_correlation_forecast(tmp_path, small_train):
    from sciffusion.domains.finance import scenarios, simulate
    from sciffusion.domains.finance.garch import GarchT
    from sciffusion.domains.finance.scenarios import ShockModel, read_returns
    from sciffusion.training.fit import load_trained

    prices, _ = regime_panel(3, 1500, seed=3)
    data = tmp_path / "p.csv"
    prices.to_csv(data)
    run = tmp_path / "run"
    assert _train_tiny(data, run, ":2009-12-31", small_train, "--copula", "dcc") == 0
    t = load_trained(run)
    assert t.metadata["copula"] == "dcc" and 0 <= t.metadata["dcc"]["a"] < 1
    # the base is N(0, I) in the whitened coordinates exactly: unit normaliser and sigma_data 1
    from sciffusion.diffusion import declared_sigma_data
    assert (t.normalizer.mean == 0).all() and (t.normalizer.std == 1).all()
    assert declared_sigma_data(t.denoiser()) == 1.0
    model = ShockModel.from_run(t)
    r, _ = read_returns(data, "prices", t.metadata["assets"])
    g, _, _ = model.shocks(r.to_numpy())
    row = len(r) - 1
    R = model.dcc.correlation(model.dcc.filter(g, [row + 1]))[0]           # forecast for the day after the data
    ds = scenarios(run, data, paths=4000, sampling={"net_weight": 0.0})      # the base law exactly
    lr = ds["log_return"].values[0, 0].astype(np.float64) * 100               # (P, A), percent, day 1
    garch = GarchT.from_state({k: v.numpy() for k, v in t.state.items()})
    sigma = ds["garch_sigma"].values[0] * 100
    gs = garch.to_normal((lr - garch.mu) / sigma, axis=-1)
    np.testing.assert_allclose(np.corrcoef(gs.T), R, atol=0.05)
    # the same draws whitened back: N(0, I) up to the normaliser's affine map
    w = model.whiten(gs.T[None].transpose(2, 1, 0), model.factors(g, np.full(4000, row)))[:, :, 0]
    assert np.abs(np.corrcoef(w.T) - np.eye(3)).max() < 0.05
    long = simulate(run, data, days=12, paths=3, sampling={"net_weight": 0.0})
    assert long.shape == (3, 12, 3) and np.isfinite(long).all()
    # given scenarios on a DCC base: one rotation per origin (its own correlation forecast)
    stress = scenarios(run, data, origins=[str(r.index[-30].date()), str(r.index[-1].date())], paths=500,
                       sampling={"net_weight": 0.0}, given={"S00": [-0.03, -0.02]})
    x = stress["log_return"].values.astype(np.float64)                       # (O, H, P, A)
    np.testing.assert_array_equal(x[:, :2, :, 0], np.broadcast_to(np.float32([-0.03, -0.02])[None, :, None],
                                                                   (2, 2, 500)))
    assert x[:, 0, :, 1].mean() < np.median(ds["log_return"].values[0, 0, :, 1])  # the others follow the fall


def test_covariates_condition_the_scenarios_and_are_never_read_from_the_future(tmp_path, prices, small_train,
                                                                                 capsys):
    from sciffusion.cli import main
    from sciffusion.domains.finance import scenarios, simulate
    from sciffusion.domains.finance.scenarios import ShockModel
    from sciffusion.training.fit import load_trained

    table = prices.loc[:"2004-06-30"].copy()
    rng = np.random.default_rng(0)
    table["VIX"] = 20 + np.cumsum(rng.standard_normal(len(table)))      # a level series, not an asset
    table.iloc[3, 2] = np.nan                                            # a missing covariate day: carried forward
    data = tmp_path / "p.csv"
    table.to_csv(data)
    run = tmp_path / "run"
    assert _train_tiny(data, run, ":2003-12-31", small_train, "--covariates", "VIX") == 0
    t = load_trained(run)
    assert t.metadata["assets"] == ["SP500", "NASDAQ"] and t.metadata["covariates"] == ["VIX"]
    model = ShockModel.from_run(t)
    idx = np.log(table[["SP500", "NASDAQ"]]).diff().iloc[1:].index
    cov = model.read_covariates(data, idx)
    assert cov[2, 0] == table["VIX"].iloc[2] and np.isfinite(cov).all()  # row 2 of returns = table day 3: ffilled
    f = model.covariate_features(cov, [100])
    np.testing.assert_allclose(f[0], [(cov[100, 0] - model.cov_mean[0]) / model.cov_std[0],
                                      (cov[100, 0] - cov[95, 0]) / model.cov_std[0]], rtol=1e-6)
    ds = scenarios(run, data, origins="2004-03-01/2004-03-05", paths=4)
    later = table.copy()
    later.loc["2004-03-06":, "VIX"] = 80.0                               # the future of the covariate changes
    later.to_csv(tmp_path / "later.csv")
    same = scenarios(run, tmp_path / "later.csv", origins="2004-03-01/2004-03-05", paths=4)
    np.testing.assert_array_equal(ds["log_return"].values, same["log_return"].values)
    assert np.isfinite(simulate(run, data, days=12, paths=2)).all()
    capsys.readouterr()
    assert main(["scenarios", "--run", str(run), "--data", str(tmp_path / "p2.csv"), "--paths", "2",
                 "--out", str(tmp_path / "x.nc")]) == 2                 # no such file: one line
    table.drop(columns="VIX").to_csv(tmp_path / "novix.csv")
    capsys.readouterr()
    assert main(["scenarios", "--run", str(run), "--data", str(tmp_path / "novix.csv"), "--paths", "2",
                 "--out", str(tmp_path / "y.nc")]) == 2
    err = capsys.readouterr().err
    assert "VIX" in err and len(err.strip().splitlines()) == 1
