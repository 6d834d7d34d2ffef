"""Anomaly scores of observed windows from a scenario run: how unlikely the next H days were, given the days before.

A window is the ``H`` days after an origin (the scenario run's horizon), all assets together. Its score is its
negative log-likelihood (nats, percent log returns) under the run's model, the model the scenarios are drawn from:
GJR-GARCH-t marginals along the observed path times the diffusion model's law of the window's whitened Gaussianised
shocks given the origin's context. The diffusion part is :func:`~sciffusion.diffusion.denoising_nll` (denoising
error over noise levels) taken relative to the exact Gaussian the network starts from, on the same noise, so

    sciffusion = ccc + (the model's bound - the Gaussian's)    and an untrained model scores exactly like ``ccc``.

Baselines by the same code: ``ccc`` (the exact NLL of the GJR-GARCH-t marginals with a Gaussian copula of the
training correlation: the constant-correlation model the scenarios build on) and ``zscore`` (the window's largest
absolute GARCH-standardised shock, blind to the other assets).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ...diffusion import denoising_nll, generators_from_seeds
from ...training.fit import TrainedRun, load_trained
from ...training.sampling import network_autocast, resolve_device
from .garch import day_number
from .scenarios import PCT, ShockModel, path_seeds, read_returns
from .series import period_slice

SCORES = ("sciffusion", "ccc", "zscore")


def marginal_nll(garch: Any, r_pct: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``(T, A)`` -log density of percent returns under GJR-GARCH-t with variances ``s2`` ``(T, A)``: the
    standardised t (unit variance) of ``(r - mu) / sigma``, plus ``log sigma``."""
    k = np.sqrt(garch.nu / (garch.nu - 2))
    z = (r_pct - garch.mu) / np.sqrt(s2)
    return -stats.t.logpdf(k * z, garch.nu) - np.log(k) + 0.5 * np.log(s2)


def window_scores(run: TrainedRun | str | os.PathLike, data: str | os.PathLike | pd.DataFrame,
                  period: str | None = None, *, every: int | None = None, levels: int = 24, draws: int = 8,
                  seed: int = 0, batch_size: int = 1024, device: str | None = None) -> pd.DataFrame:
    """Scores of the windows after every ``every``-th trading day of ``period`` (default: the run's horizon, so
    the windows tile the period) whose ``H`` days are all in the data and observed: a frame indexed by ``origin``
    (the last day before the window) with ``start``, ``end`` and the columns of ``SCORES`` (higher = more
    anomalous). ``levels`` log-spaced noise levels over the run's sampling range and ``draws`` noise draws per
    level (per window seeds from ``seed`` and the origin) estimate the diffusion part."""
    run = load_trained(run, task="scenarios")
    model = ShockModel.from_run(run)
    if model.dcc is not None:
        raise ValueError("score-windows needs a run with the constant-correlation base (data.copula=ccc); this "
                         "run's base is DCC")
    assets, kind = run.metadata["assets"], run.metadata.get("kind", "prices")
    r, _ = read_returns(data, kind, assets)
    C, H = model.context, model.horizon
    every = H if every is None else int(every)
    if every < 1:
        raise ValueError(f"every must be >= 1; got {every}")
    T = len(r)
    sel = pd.Series(np.arange(T), index=r.index).loc[period_slice(period)].to_numpy()
    rows = sel[::every] - 1  # the origin is the day before the window's first day
    rows = rows[(rows >= C - 1) & (rows + H < T)]
    r_pct = r.to_numpy() * PCT
    g, s2 = model.garch.gaussianised(r_pct)
    log_vol = 0.5 * np.log(s2[1:]) - np.log(model.sigma_bar)
    rows = np.array([o for o in rows if np.isfinite(g[o - C + 1:o + 1 + H]).all()], dtype=np.int64)
    if len(rows) == 0:
        raise ValueError(f"no complete {H}-day window with {C} days of history falls in {period!r}")
    span = rows[:, None] + 1 + np.arange(H)[None]                         # (N, H) rows of each window
    w = model.whiten(g[span].transpose(0, 2, 1))                         # (N, A, H)
    # -log p(r) of the constant-correlation model: marginals + Gaussian copula, 0.5 (|w|^2 - |g|^2) + log|L| a day
    marg = marginal_nll(model.garch, r_pct, s2[:-1])[span].sum((1, 2))
    copula = 0.5 * ((w**2).sum((1, 2)) - (g[span] ** 2).sum((1, 2))) + H * np.log(np.diag(model.chol)).sum()
    ccc = marg + copula
    z = (r_pct - model.garch.mu) / np.sqrt(s2[:-1])
    cov = model.read_covariates(data, r.index)
    extra = _diffusion_part(run, w, model.cond(g, log_vol, rows, cov), path_seeds(seed, day_number(r.index[rows]), 1),
                            levels, draws, batch_size, resolve_device(device))
    frame = pd.DataFrame({"start": r.index[rows + 1], "end": r.index[rows + H], "sciffusion": ccc + extra,
                          "ccc": ccc, "zscore": np.abs(z[span]).max((1, 2))},
                         index=pd.DatetimeIndex(r.index[rows], name="origin"))
    return frame


def _diffusion_part(run: TrainedRun, w: np.ndarray, cond: np.ndarray, seeds: list[int], levels: int, draws: int,
                    batch_size: int, device: torch.device) -> np.ndarray:
    """The model's denoising bound minus that of the exact Gaussian N(0, I) of ``w`` (in the run's normalised
    units, where it is N(-mean/std, 1/std^2) per channel), on common noise: ``(N,)`` nats."""
    norm = run.normalizer
    s = run.config["sampling"]
    run.to(device)
    D = run.denoiser()
    m = (-norm.mean / norm.std).to(device=device, dtype=torch.float32)[None, :, None]
    v = (1 / norm.std**2).to(device=device, dtype=torch.float32)[None, :, None]

    def gaussian(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        s2 = sigma.to(x.dtype)[:, None, None] ** 2
        return m + v / (v + s2) * (x - m)

    sigmas = torch.logspace(np.log10(float(s["sigma_min"])), np.log10(float(s["sigma_max"])), int(levels),
                            dtype=torch.float64)
    y = norm.normalize(torch.from_numpy(w.astype(np.float32)))
    c = torch.from_numpy(cond)
    out = []
    with torch.inference_mode(), network_autocast(device):
        for lo in range(0, len(y), batch_size):
            sl = slice(lo, lo + batch_size)
            out.append(denoising_nll(D, y[sl].to(device), sigmas, draws=draws, reference=gaussian,
                                     generator=generators_from_seeds(seeds[sl], device), cond=c[sl].to(device)))
    return torch.cat(out).cpu().numpy()


def inject_window_anomalies(prices: pd.DataFrame, period: str, horizon: int, *, n: int = 10, seed: int = 0,
                            scale: float = 2.0, burst_days: int = 3, decouple_days: int = 5
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluation protocol: ``n`` of the ``horizon``-day windows that tile ``period`` (as
    :func:`window_scores` with its default ``every``) get one anomaly each; half a volatility burst (every asset's
    returns on ``burst_days`` consecutive days times ``scale``: co-moving, correlation kept), half a decoupling (one
    asset's returns on ``decouple_days`` consecutive days replaced by its own returns from another window of the
    period: its marginal law kept, its co-movement with the others broken). Returns (prices with the changes
    carried forward, labels indexed by ``origin`` with the ``kind``)."""
    rng = np.random.default_rng(seed)
    lp = np.log(prices)
    x = lp.diff().to_numpy()
    sel = np.flatnonzero(np.isin(prices.index, prices.loc[period_slice(period)].index))
    sel = sel[sel > 0]
    starts = sel[::horizon]
    starts = starts[starts + horizon <= sel[-1] + 1]
    if len(starts) < n + 1:
        raise ValueError(f"{period!r} holds {len(starts)} windows of {horizon} days; need more than n = {n}")
    chosen = rng.choice(len(starts), size=n, replace=False)
    free = np.delete(starts, chosen)  # decoupled returns come from windows without an anomaly
    out, labels = lp.copy(), []
    for i, k in enumerate(chosen):
        s0 = int(starts[k])
        if i % 2 == 0:
            L = min(burst_days, horizon)
            t = s0 + int(rng.integers(horizon - L + 1))
            days = np.arange(t, t + L)
            for a in range(prices.shape[1]):
                _carry(out, days, a, (scale - 1) * x[days, a])
            kind = "volatility"
        else:
            L = min(decouple_days, horizon)
            t = s0 + int(rng.integers(horizon - L + 1))
            a = int(rng.integers(prices.shape[1]))
            src = int(rng.choice(free)) + int(rng.integers(horizon - L + 1))
            days = np.arange(t, t + L)
            _carry(out, days, a, x[src:src + L, a] - x[days, a])
            kind = "decoupling"
        labels.append((prices.index[s0 - 1], kind))
    lab = pd.DataFrame({"kind": [k for _, k in labels]},
                       index=pd.DatetimeIndex([d for d, _ in labels], name="origin"))
    return np.exp(out), lab.sort_index()


def _carry(logp: pd.DataFrame, days: np.ndarray, asset: int, delta: np.ndarray) -> None:
    """Add ``delta`` to the returns of ``days`` of one asset: every later log price moves with it."""
    for t, d in zip(days, delta):
        logp.iloc[t:, asset] += d

