"""Statistics fitted on the training period: the seasonal climatology, per-cell AR(1) (damped persistence) and a
linear inverse model. The diffusion forecast and the baselines use the same fitted objects, so they are compared on
equal terms.

Arrays are numpy ``(time, channel, lat, lon)``, float64; NaN = missing (e.g. land), and stays missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def cycle_keys(times, kind: str) -> np.ndarray:
    """Group index of each time: calendar month (0-11) for ``"month"``, all 0 for ``"none"``."""
    if kind == "none":
        return np.zeros(len(times), dtype=np.int64)
    if kind == "month":
        return np.asarray([t.month - 1 for t in _as_dates(times)], dtype=np.int64)
    raise ValueError(f"climatology must be 'month' or 'none'; got {kind!r}")


def _as_dates(times):
    import pandas as pd

    vals = np.asarray(times)
    if np.issubdtype(vals.dtype, np.datetime64):
        return list(pd.DatetimeIndex(vals))
    return list(vals)  # cftime objects have .month and .year


def choose_cycle(times) -> str:
    """``"month"`` for monthly data covering at least two years, else ``"none"`` (e.g. annual means). Daily or
    sub-daily data get ``"none"`` too: a day-of-year climatology is not implemented yet."""
    dates = _as_dates(times)
    return "month" if len(dates) >= 24 and _month_steps(dates) == {1} else "none"


def _month_steps(dates) -> set[int]:
    return {(b.year - a.year) * 12 + b.month - a.month for a, b in zip(dates[:-1], dates[1:])}


def check_monthly(times) -> None:
    if _month_steps(_as_dates(times)) != {1}:
        raise ValueError("a monthly climatology needs consecutive monthly time steps; this time axis skips or repeats "
                         "months (use climatology: none)")


def years(times) -> np.ndarray:
    """Times as fractional years (any calendar: ``year + (month - 1) / 12 + (day - 1) / 365``)."""
    return np.asarray([d.year + (d.month - 1) / 12 + (d.day - 1) / 365 for d in _as_dates(times)], dtype=np.float64)


@dataclass
class Climatology:
    """The expected field at a time: a polynomial trend per cell (degree ``len(trend) - 1``; none when ``trend`` is
    None) plus the mean per cycle group of what the trend leaves (``mean``, ``(groups, C, H, W)``). The group of a
    step ``l`` steps after a time of group ``g`` is ``(g + l) mod groups`` (monthly data advance a month a step).
    Trends are in ``u = (year - t0) / scale``; a trend extrapolated far past the training period is a guess."""

    kind: str
    mean: np.ndarray
    trend: np.ndarray | None = None   # (degree + 1, C, H, W), highest power first
    t0: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, x: np.ndarray, times, kind: str = "auto", trend_degree: int = 0) -> Climatology:
        """Fit on ``(T, C, H, W)`` fields in memory (see :meth:`fit_stream`)."""
        return cls.fit_stream(lambda lo, hi: x[lo:hi], times, kind, trend_degree, chunk=len(x))

    @classmethod
    def fit_stream(cls, read: Callable[[int, int], np.ndarray], times, kind: str = "auto", trend_degree: int = 0,
                   chunk: int = 64) -> Climatology:
        """Fit from ``read(lo, hi) -> (hi - lo, C, H, W)`` chunks of the time axis, so the training period never has
        to fit in memory. With a trend, trend and cycle are fitted jointly (powers of time without the constant plus
        one indicator per cycle group, through accumulated normal equations), so the trend does not soak up part of
        the cycle; cells with a gap anywhere keep the plain cycle means and no trend."""
        kind = choose_cycle(times) if kind == "auto" else kind
        if kind == "month":
            check_monthly(times)
        if not 0 <= trend_degree <= 3:
            raise ValueError(f"trend degree must be 0-3; got {trend_degree}")
        keys = cycle_keys(times, kind)
        groups = 12 if kind == "month" else 1
        present = [g for g in range(groups) if (keys == g).any()]
        ty = years(times)
        t0, scale = float(ty.mean()), float(max(np.ptp(ty) / 2, 1.0))
        u = (ty - t0) / scale
        sums = counts = xtx = xty = ok = None
        for lo in range(0, len(keys), chunk):
            x = np.asarray(read(lo, min(len(keys), lo + chunk)), dtype=np.float64)
            k = keys[lo:lo + len(x)]
            onehot = (k[:, None] == np.arange(groups)[None]).astype(np.float64)   # (n, G)
            fin = np.isfinite(x)
            xs = np.where(fin, x, 0.0)
            s = np.tensordot(onehot, xs, axes=(0, 0))
            c = np.tensordot(onehot, fin.astype(np.float64), axes=(0, 0))
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
            if trend_degree:
                design = np.concatenate([np.vander(u[lo:lo + len(x)], trend_degree + 1)[:, :-1],
                                         onehot[:, present]], axis=1)
                flat = xs.reshape(len(x), -1)
                a, b, f = design.T @ design, design.T @ flat, fin.reshape(len(x), -1).all(0)
                xtx, xty, ok = (a, b, f) if xtx is None else (xtx + a, xty + b, ok & f)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / counts, np.nan)
        trend = None
        if trend_degree:
            coef = np.linalg.solve(xtx, xty[:, ok])
            trend = np.zeros((trend_degree + 1, ok.size))
            trend[:-1, ok] = coef[:trend_degree]
            trend = trend.reshape(trend_degree + 1, *mean.shape[1:])
            m = mean.reshape(groups, -1)
            m[np.ix_(present, np.flatnonzero(ok))] = coef[trend_degree:]
        return cls(kind, mean, trend, t0 if trend_degree else 0.0, scale if trend_degree else 1.0)

    @staticmethod
    def _poly(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
        powers = np.vander(np.atleast_1d(u), len(coef))                      # (T, degree + 1)
        return np.tensordot(powers, np.nan_to_num(coef), axes=(1, 0))     # (T, C, H, W)

    @property
    def groups(self) -> int:
        return self.mean.shape[0]

    def at(self, keys: np.ndarray, when: np.ndarray | None = None) -> np.ndarray:
        """``(T, C, H, W)`` expected fields for cycle groups ``keys`` at fractional years ``when``."""
        out = self.mean[np.asarray(keys) % self.groups]
        if self.trend is not None:
            if when is None:
                raise ValueError("a climatology with a trend needs the times")
            out = out + self._poly(self.trend, (np.asarray(when, dtype=np.float64) - self.t0) / self.scale)
        return out

    def state(self) -> dict[str, np.ndarray]:
        d = {"clim_mean": self.mean, "clim_t0_scale": np.array([self.t0, self.scale])}
        if self.trend is not None:
            d["clim_trend"] = self.trend
        return d

    @classmethod
    def from_state(cls, kind: str, s: dict[str, np.ndarray]) -> Climatology:
        t0, scale = s.get("clim_t0_scale", np.array([0.0, 1.0]))
        return cls(kind, s["clim_mean"], s.get("clim_trend"), float(t0), float(scale))


@dataclass
class AR1:
    """Per-cell AR(1) of anomalies: ``a[t+1] = phi a[t] + e``, ``phi`` in [0, 0.999], stationary variance ``var``."""

    phi: np.ndarray   # (C, H, W)
    var: np.ndarray   # (C, H, W)

    @classmethod
    def fit(cls, a: np.ndarray) -> AR1:
        return fit_anomaly_stats(lambda lo, hi: a[lo:hi], len(a), chunk=len(a))[0]

    def mean(self, a0: np.ndarray, lead: int) -> np.ndarray:
        return self.phi**lead * a0

    def std(self, lead: int) -> np.ndarray:
        return np.sqrt(self.var * (1 - self.phi ** (2 * lead)))


def fit_anomaly_stats(read: Callable[[int, int], np.ndarray], T: int, chunk: int = 64
                      ) -> tuple[AR1, np.ndarray, np.ndarray, bool]:
    """One streamed pass over anomalies ``read(lo, hi) -> (n, C, H, W)``: the per-cell :class:`AR1`, the
    per-channel RMS anomaly ``(C,)``, the per-channel RMS of the AR(1) residual ``a[t+1] - phi a[t]`` ``(C,)`` and
    whether any cell is missing. The residual needs ``phi`` first; its sum of squares per cell is
    ``S11 - 2 phi S01 + phi^2 S00`` over the valid pairs, so one pass is enough."""
    s00 = s01 = s11 = npair = sq = nval = None
    prev = None
    masked = False
    for lo in range(0, T, chunk):
        a = np.asarray(read(lo, min(T, lo + chunk)), dtype=np.float64)
        masked = masked or bool(np.isnan(a).any())
        fin = np.isfinite(a)
        q, n = np.where(fin, a * a, 0).sum(0), fin.sum(0)
        sq, nval = (q, n) if sq is None else (sq + q, nval + n)
        seq = a if prev is None else np.concatenate([prev, a])
        x0, x1 = seq[:-1], seq[1:]
        ok = np.isfinite(x0) & np.isfinite(x1)
        parts = [np.where(ok, v, 0).sum(0) for v in (x0 * x0, x0 * x1, x1 * x1)] + [ok.sum(0)]
        s00, s01, s11, npair = parts if s00 is None else [t + p for t, p in zip((s00, s01, s11, npair), parts)]
        prev = a[-1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.clip(np.where(s00 > 0, s01 / s00, 0.0), 0.0, 0.999)
        var = np.where(nval > 0, sq / nval, np.nan)
        resid_sq = np.clip(s11 - 2 * phi * s01 + phi**2 * s00, 0, None)
        anom_std = np.sqrt(sq.sum((1, 2)) / nval.sum((1, 2)))
        resid_std = np.sqrt(resid_sq.sum((1, 2)) / npair.sum((1, 2)))
    return AR1(phi, var), anom_std, resid_std, masked


@dataclass
class LIM:
    """Linear inverse model: AR(1) ``p[t+1] = A p[t] + eta`` in the space of the leading area-weighted EOFs of the
    anomalies, ``eta ~ N(0, Q)`` with ``Q = C0 - A C0 A^T``; variance outside the kept EOFs is added back as
    independent per-cell noise, so the ensemble's per-cell spread is not truncated."""

    eofs: np.ndarray      # (K, D) orthonormal rows, in weighted space
    sqrt_w: np.ndarray    # (D,) sqrt(area weight); 1 elsewhere... NaN cells are excluded from D
    valid: np.ndarray     # (C*H*W,) bool: cells in the model
    A: np.ndarray         # (K, K)
    Q_chol: np.ndarray    # (K, K)
    resid_std: np.ndarray  # (D,) per-cell std of what the EOFs leave out

    @classmethod
    def fit(cls, a: np.ndarray, lat_weights: np.ndarray, variance: float = 0.9, max_modes: int | None = None) -> LIM:
        T = a.shape[0]
        flat = a.reshape(T, -1)
        valid = np.isfinite(flat).all(0)
        w = np.broadcast_to(lat_weights[None, :, None], a.shape[1:]).reshape(-1)[valid]
        sqrt_w = np.sqrt(w)
        X = flat[:, valid] * sqrt_w
        _, s, vt = np.linalg.svd(X, full_matrices=False)
        frac = np.cumsum(s**2) / (s**2).sum()
        K = int(np.searchsorted(frac, variance) + 1)
        K = min(K, max_modes or max(1, T // 5), len(s))
        eofs = vt[:K]
        P = X @ eofs.T                                      # (T, K)
        C0 = P[:-1].T @ P[:-1] / (T - 1)
        C1 = P[1:].T @ P[:-1] / (T - 1)
        A = C1 @ np.linalg.pinv(C0)
        Q = C0 - A @ C0 @ A.T
        evals, evecs = np.linalg.eigh((Q + Q.T) / 2)
        Q_chol = evecs * np.sqrt(np.clip(evals, 0, None))  # Q = L L^T with L = V sqrt(Lambda)
        resid = (X - P @ eofs) / sqrt_w
        return cls(eofs, sqrt_w, valid, A, Q_chol, resid.std(0))

    def ensemble(self, a0: np.ndarray, leads: int, members: int, rng: np.random.Generator) -> np.ndarray:
        """``(members, leads, C, H, W)`` anomaly trajectories from one initial anomaly ``a0`` (``(C, H, W)``)."""
        shape = a0.shape
        p = np.broadcast_to((a0.reshape(-1)[self.valid] * self.sqrt_w) @ self.eofs.T, (members, len(self.A))).copy()
        out = np.full((members, leads, int(np.prod(shape))), np.nan)
        for lead in range(leads):
            p = p @ self.A.T + rng.standard_normal(p.shape) @ self.Q_chol.T
            field = p @ self.eofs / self.sqrt_w + rng.standard_normal((members, self.valid.sum())) * self.resid_std
            out[:, lead][:, self.valid] = field
        return out.reshape(members, leads, *shape)
