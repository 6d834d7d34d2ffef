"""Statistics fitted on the training period: the seasonal climatology, per-cell AR(1) (damped persistence) and a
linear inverse model. The diffusion forecast and the baselines use the same fitted objects, so they are compared on
equal terms.

Arrays are numpy ``(time, channel, lat, lon)``, float64; NaN = missing (e.g. land), and stays missing.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...diffusion import numpy_rng

CYCLES = ("month", "doy", "none")


def seconds_of_day(times) -> np.ndarray:
    """Seconds since midnight of each time (any calendar)."""
    return np.asarray([d.hour * 3600 + d.minute * 60 + d.second for d in _as_dates(times)], dtype=np.int64)


def steps_per_day(times) -> int:
    """Time steps per day of regular sub-daily data (4 for 6-hourly: the times of day are multiples of 6 h); 1 for
    daily or coarser data, or for times of day that are not an even division of the day."""
    if len(times) < 2:
        return 1
    sod = np.unique(seconds_of_day(times))
    if len(sod) < 2:
        return 1
    step = int(np.gcd.reduce(np.diff(np.r_[sod, sod[0] + 86400])))
    return 86400 // step if step > 0 and 86400 % step == 0 else 1


def cycle_keys(times, kind: str) -> np.ndarray:
    """Group index of each time: calendar month (0-11) for ``"month"``; for ``"doy"`` the time of day (0 for daily
    data; 0-3 for 6-hourly: the diurnal cycle is one mean per time of day, and ``l`` steps later is group
    ``(g + l) mod 4``), the annual cycle being a smooth function of the time of year read from the fractional
    years; all 0 for ``"none"``."""
    if kind == "none":
        return np.zeros(len(times), dtype=np.int64)
    if kind == "doy":
        n = steps_per_day(times)
        if n == 1:
            return np.zeros(len(times), dtype=np.int64)
        return np.rint(seconds_of_day(times) / (86400 / n)).astype(np.int64) % n
    if kind == "month":
        return np.asarray([t.month - 1 for t in _as_dates(times)], dtype=np.int64)
    raise ValueError(f"climatology must be one of {', '.join(CYCLES)}; got {kind!r}")


def _as_dates(times):
    import pandas as pd

    vals = np.asarray(times)
    if np.issubdtype(vals.dtype, np.datetime64):
        return list(pd.DatetimeIndex(vals))
    return list(vals)  # cftime objects have .month, .year, .dayofyr and .calendar


MIN_CYCLES = 1.5  # years a daily or sub-daily record must span for ``auto`` to fit the annual harmonics


def choose_cycle(times) -> str:
    """``"month"`` for monthly data covering at least two years, ``"doy"`` (a smooth day-of-year cycle, a few annual
    harmonics) for daily or sub-daily data covering most of two years (:data:`MIN_CYCLES`), else ``"none"`` (e.g.
    annual means, or too short a record), said in one warning: the model and the persistence baselines then work
    on raw fields, annual cycle included."""
    dates = _as_dates(times)
    if len(dates) >= 24 and _month_steps(dates) == {1}:
        return "month"
    ty = years(times) if len(dates) > 1 else np.zeros(1)
    sub_monthly = len(dates) > 1 and bool(np.median(np.diff(ty)) < 20 / 365)
    if sub_monthly and np.ptp(ty) >= MIN_CYCLES:
        return "doy"
    if sub_monthly or (len(dates) > 1 and _month_steps(dates) == {1}):
        warnings.warn(f"climatology auto: the training period spans {np.ptp(ty):.2f} years, too short to fit an "
                      f"annual cycle; none is removed (set --climatology doy or month to fit one anyway)")
    return "none"


def _month_steps(dates) -> set[int]:
    return {(b.year - a.year) * 12 + b.month - a.month for a, b in zip(dates[:-1], dates[1:])}


def check_monthly(times) -> None:
    if _month_steps(_as_dates(times)) != {1}:
        raise ValueError("a monthly climatology needs consecutive monthly time steps; this time axis skips or repeats "
                         "months (use climatology: none)")


@functools.lru_cache(maxsize=4096)
def _year_days(calendar: str, year: int) -> int:
    import cftime

    return (cftime.datetime(year + 1, 1, 1, calendar=calendar) - cftime.datetime(year, 1, 1, calendar=calendar)).days


def years(times) -> np.ndarray:
    """Times as fractional years in their own calendar: ``year + (day of year - 1 + time of day) / days in that
    year`` (360 for ``360_day``, 365 for ``noleap``, 365 or 366 for the standard calendar), so a time of year is the
    same fraction in every year and sub-daily steps keep their hour."""
    out = np.empty(len(times), dtype=np.float64)
    for i, d in enumerate(_as_dates(times)):
        if hasattr(d, "is_leap_year"):  # pandas Timestamp
            doy, days = d.day_of_year, 366 if d.is_leap_year else 365
        else:
            doy, days = d.dayofyr, _year_days(d.calendar or "standard", d.year)
        out[i] = d.year + (doy - 1 + (d.hour * 3600 + d.minute * 60 + d.second) / 86400) / days
    return out


def harmonics(when: np.ndarray, n: int) -> np.ndarray:
    """``(T, 2n)`` annual harmonics ``cos(2 pi k f), sin(2 pi k f)`` for k = 1..n of the time-of-year fraction ``f``
    of fractional years ``when``."""
    f = 2 * np.pi * np.mod(np.asarray(when, dtype=np.float64), 1.0)[:, None] * np.arange(1, n + 1)[None]
    return np.stack([np.cos(f), np.sin(f)], axis=2).reshape(len(f), 2 * n)


def regressors(u: np.ndarray, when: np.ndarray, degree: int, n_harmonics: int, onehot: np.ndarray) -> np.ndarray:
    """``(T, K)`` columns of the climatology's least squares: powers 1..``degree`` of scaled time ``u`` (highest
    first; the constant lives in the group indicators), the annual harmonics of ``when``, the group indicators."""
    return np.concatenate([np.vander(u, degree + 1)[:, :-1], harmonics(when, n_harmonics), onehot], axis=1)


def same_time_of_year(when: np.ndarray, targets: np.ndarray, step: float) -> np.ndarray:
    """``(len(targets), M)`` indices into ``when`` (fractional years): for each target, the time of each year of
    ``when`` nearest to the target's time of year (circular distance), keeping the years whose nearest time is within
    ``step`` years of it (partial first and last years may not be) and the last ``M`` of them, ``M`` the fewest any
    target has. The day-of-year analogue of "the same calendar month in every training year"."""
    when = np.asarray(when, dtype=np.float64)
    year, phase = np.floor(when), np.mod(when, 1.0)
    out = []
    for p in np.mod(np.asarray(targets, dtype=np.float64), 1.0):
        d = np.abs(np.mod(phase - p + 0.5, 1.0) - 0.5)
        picks = []
        for y in np.unique(year):
            idx = np.flatnonzero(year == y)
            j = idx[np.argmin(d[idx])]
            if d[j] <= step:
                picks.append(j)
        out.append(picks)
    M = min(len(o) for o in out)
    if M == 0:
        raise ValueError("no training year has a time near the valid time of year")
    return np.array([o[len(o) - M:] for o in out], dtype=np.int64)


@dataclass
class Climatology:
    """The expected field at a time: a polynomial trend per cell (degree ``len(trend) - 1``; none when ``trend`` is
    None), plus a smooth annual cycle of ``len(harmonics) / 2`` harmonics of the time of year (``"doy"``: daily and
    sub-daily data), plus the mean per cycle group of what those leave (``mean``, ``(groups, C, H, W)``; 12 calendar
    months for ``"month"``, one per time of day for ``"doy"`` (the diurnal cycle of sub-daily data; one for daily
    data), else one). The group of a step ``l`` steps after a time of group ``g`` is
    ``(g + l) mod groups`` (monthly data advance a month a step). Trends are in ``u = (year - t0) / scale``; a trend
    extrapolated far past the training period is a guess."""

    kind: str
    mean: np.ndarray
    trend: np.ndarray | None = None       # (degree + 1, C, H, W), highest power first
    t0: float = 0.0
    scale: float = 1.0
    harmonics: np.ndarray | None = None   # (2 n, C, H, W): cos, sin of harmonic 1, then 2, ...

    @classmethod
    def fit(cls, x: np.ndarray, times, kind: str = "auto", trend_degree: int = 0, n_harmonics: int = 3
            ) -> Climatology:
        """Fit on ``(T, C, H, W)`` fields in memory (see :meth:`fit_stream`)."""
        return cls.fit_stream(lambda lo, hi: x[lo:hi], times, kind, trend_degree, chunk=len(x),
                              n_harmonics=n_harmonics)

    @classmethod
    def fit_stream(cls, read: Callable[[int, int], np.ndarray], times, kind: str = "auto", trend_degree: int = 0,
                   chunk: int = 64, n_harmonics: int = 3) -> Climatology:
        """Fit from ``read(lo, hi) -> (hi - lo, C, H, W)`` chunks of the time axis, so the training period never has
        to fit in memory. A day-of-year cycle (``"doy"``) is ``n_harmonics`` annual harmonics (3, as is usual for
        daily climatologies: smooth, and stable with a few decades of data). Trend, harmonics and group means are
        fitted jointly by least squares (powers of time without the constant, the harmonics, one indicator per
        group, through accumulated normal equations), so the trend does not soak up part of the cycle; cells with a
        gap anywhere keep the plain group means, no trend and no harmonics."""
        kind = choose_cycle(times) if kind == "auto" else kind
        if kind not in CYCLES:
            raise ValueError(f"climatology must be one of {', '.join(CYCLES)}; got {kind!r}")
        if kind == "month":
            check_monthly(times)
        if not 0 <= trend_degree <= 3:
            raise ValueError(f"trend degree must be 0-3; got {trend_degree}")
        nh = int(n_harmonics) if kind == "doy" else 0
        if kind == "doy" and not 1 <= nh <= 12:
            raise ValueError(f"a day-of-year climatology needs 1-12 harmonics; got {n_harmonics}")
        keys = cycle_keys(times, kind)
        groups = 12 if kind == "month" else steps_per_day(times) if kind == "doy" else 1  # months, times of day
        present = [g for g in range(groups) if (keys == g).any()]
        ty = years(times)
        t0, scale = float(ty.mean()), float(max(np.ptp(ty) / 2, 1.0))
        u = (ty - t0) / scale
        regress = bool(trend_degree or nh)
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
            if regress:
                span = slice(lo, lo + len(x))
                design = regressors(u[span], ty[span], trend_degree, nh, onehot[:, present])
                flat = xs.reshape(len(x), -1)
                a, b, f = design.T @ design, design.T @ flat, fin.reshape(len(x), -1).all(0)
                xtx, xty, ok = (a, b, f) if xtx is None else (xtx + a, xty + b, ok & f)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / counts, np.nan)
        trend = harm = None
        if regress:
            coef = np.linalg.solve(xtx, xty[:, ok])
            cell_shape = mean.shape[1:]

            def part(rows: slice, n: int) -> np.ndarray:
                out = np.zeros((n, ok.size))
                out[:rows.stop - rows.start, ok] = coef[rows]
                return out.reshape(n, *cell_shape)

            d = trend_degree
            trend = part(slice(0, d), d + 1) if d else None     # the constant lives in the group means
            harm = part(slice(d, d + 2 * nh), 2 * nh) if nh else None
            m = mean.reshape(groups, -1)
            m[np.ix_(present, np.flatnonzero(ok))] = coef[d + 2 * nh:]
        return cls(kind, mean, trend, t0 if trend_degree else 0.0, scale if trend_degree else 1.0, harm)

    def design(self, keys: np.ndarray, when: np.ndarray) -> np.ndarray:
        """``(T, K)`` regressors of the fit at cycle groups ``keys`` and fractional years ``when``: the trend's powers
        of time without the constant, the harmonics, one indicator per cycle group."""
        d = 0 if self.trend is None else len(self.trend) - 1
        nh = 0 if self.harmonics is None else len(self.harmonics) // 2
        when = np.atleast_1d(np.asarray(when, dtype=np.float64))
        onehot = (np.asarray(keys)[:, None] % self.groups == np.arange(self.groups)[None]).astype(np.float64)
        return regressors((when - self.t0) / self.scale, when, d, nh, onehot)

    @staticmethod
    def _poly(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
        powers = np.vander(np.atleast_1d(u), len(coef))                      # (T, degree + 1)
        return np.tensordot(powers, np.nan_to_num(coef), axes=(1, 0))     # (T, C, H, W)

    @property
    def groups(self) -> int:
        return self.mean.shape[0]

    def at(self, keys: np.ndarray, when: np.ndarray | None = None) -> np.ndarray:
        """``(T, C, H, W)`` expected fields for cycle groups ``keys`` at fractional years ``when`` (needed with a
        trend or a day-of-year cycle; see :func:`years`)."""
        out = self.mean[np.asarray(keys) % self.groups]
        if (self.trend is not None or self.harmonics is not None) and when is None:
            raise ValueError("a climatology with a trend or a day-of-year cycle needs the times")
        if self.trend is not None:
            out = out + self._poly(self.trend, (np.asarray(when, dtype=np.float64) - self.t0) / self.scale)
        if self.harmonics is not None:
            basis = harmonics(np.atleast_1d(when), len(self.harmonics) // 2)
            out = out + np.tensordot(basis, self.harmonics, axes=(1, 0))
        return out

    def state(self) -> dict[str, np.ndarray]:
        d = {"clim_mean": self.mean, "clim_t0_scale": np.array([self.t0, self.scale])}
        if self.trend is not None:
            d["clim_trend"] = self.trend
        if self.harmonics is not None:
            d["clim_harmonics"] = self.harmonics
        return d

    @classmethod
    def from_state(cls, kind: str, s: dict[str, np.ndarray]) -> Climatology:
        t0, scale = s.get("clim_t0_scale", np.array([0.0, 1.0]))
        return cls(kind, s["clim_mean"], s.get("clim_trend"), float(t0), float(scale), s.get("clim_harmonics"))


def bootstrap_normals(clim: Climatology, anomalies: np.ndarray, keys: np.ndarray, when: np.ndarray, members: int,
                      block: int, seed: int = 0) -> np.ndarray:
    """How uncertain the fitted normal is: ``(members, K, C, H, W)`` perturbations of the regression coefficients of
    ``clim`` (see :meth:`Climatology.design`), one per member, each the refit of the climatology to its training
    ``anomalies`` ``(T, C, H, W)`` (the fit's residuals, at ``keys``/``when``) resampled in moving blocks of ``block``
    time steps (a residual block bootstrap: the blocks keep the year-to-year and the spatial correlation). The
    perturbation of the normal at any time is ``design(keys, when) @ perturbation``; it grows where the trend is
    extrapolated. Member ``m``'s blocks come from ``(seed, m)`` only. Cells with a gap get none."""
    T = len(anomalies)
    if not 1 <= block <= T:
        raise ValueError(f"the bootstrap block must be 1..{T} time steps (the training length); got {block}")
    X = clim.design(keys, when)
    pinv = np.linalg.pinv(X)                                                  # (K, T): least squares on X
    cells = anomalies.reshape(T, -1)
    ok = np.isfinite(cells).all(0)
    E = np.where(ok, cells, 0.0)
    out = np.empty((members, X.shape[1], *anomalies.shape[1:]))
    for m in range(members):
        rng = numpy_rng(int(seed), "normal", m)
        starts = rng.integers(0, T - block + 1, size=-(-T // block))
        idx = (starts[:, None] + np.arange(block)[None]).reshape(-1)[:T]
        out[m] = (pinv @ E[idx] * ok).reshape(X.shape[1], *anomalies.shape[1:])
    return out


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


def fit_anomaly_stats(read: Callable[[int, int], np.ndarray], T: int, chunk: int = 64,
                      breaks: np.ndarray | None = None) -> tuple[AR1, np.ndarray, np.ndarray, bool]:
    """One streamed pass over anomalies ``read(lo, hi) -> (n, C, H, W)``: the per-cell :class:`AR1`, the
    per-channel RMS anomaly ``(C,)``, the per-channel RMS of the AR(1) residual ``a[t+1] - phi a[t]`` ``(C,)`` and
    whether any cell is missing. The residual needs ``phi`` first; its sum of squares per cell is
    ``S11 - 2 phi S01 + phi^2 S00`` over the valid pairs, so one pass is enough. ``breaks`` ``(T - 1,)``: True
    where steps ``t`` and ``t + 1`` are not consecutive (a gap in time); those pairs are left out."""
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
        if breaks is not None:  # pair j of this chunk is the step from row first + j to the next
            first = lo - (0 if prev is None else 1)
            ok &= ~breaks[first:first + len(x0)][:, None, None, None]
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
    def fit(cls, a: np.ndarray, weights: np.ndarray, variance: float = 0.9, max_modes: int | None = None,
            breaks: np.ndarray | None = None, max_elements: int = 2**24) -> LIM:
        """Fit on anomalies ``(T, C, H, W)`` with area ``weights`` ``(H, W)`` (or ``(H,)`` latitude weights);
        ``breaks`` ``(T - 1,)``: True where steps ``t`` and ``t + 1`` are not consecutive (a gap in time), pairs
        left out of the lag covariances.

        The EOFs come from the SVD of the weighted anomalies ``X`` ``(T, D)`` when it is small (up to
        ``max_elements``); above that from the eigenvectors of the ``T x T`` Gram matrix ``X X^T``, accumulated over
        column blocks, so memory holds the anomalies and ``T^2`` numbers, not the SVD's several copies of ``X``: a
        6-hourly archive of 8 variables on 64 x 128 cells needed 23.6 GB that way (the LIM in a truncated EOF space,
        Penland and Sardeshmukh 1995, never needs more than the leading modes)."""
        T = a.shape[0]
        flat = a.reshape(T, -1)
        valid = np.isfinite(flat).all(0)
        w2 = weights[:, None] if weights.ndim == 1 else weights
        w = np.broadcast_to(w2[None], a.shape[1:]).reshape(-1)[valid]
        sqrt_w = np.sqrt(w)
        cols = np.flatnonzero(valid)
        D = len(cols)
        block = max(1, max_elements // max(T, 1))

        def X_of(lo: int, hi: int) -> np.ndarray:  # weighted anomalies of columns lo:hi of the valid cells
            return flat[:, cols[lo:hi]] * sqrt_w[lo:hi]

        if T * D <= max_elements:
            X = X_of(0, D)
            _, s, vt = np.linalg.svd(X, full_matrices=False)
            power = s**2
        else:
            G = np.zeros((T, T))
            for lo in range(0, D, block):
                Xb = X_of(lo, lo + block)
                G += Xb @ Xb.T
            power, U = np.linalg.eigh(G)
            power, U = np.clip(power[::-1], 0, None), U[:, ::-1]  # descending, like the SVD's
        frac = np.cumsum(power) / power.sum()
        K = int(np.searchsorted(frac, variance) + 1)
        K = min(K, max_modes or max(1, T // 5), len(power))
        if T * D <= max_elements:
            eofs = vt[:K]
            P = X @ eofs.T                                      # (T, K)
        else:
            s_K = np.sqrt(power[:K])
            eofs = np.concatenate([(U[:, :K].T @ X_of(lo, lo + block)) / s_K[:, None]
                                   for lo in range(0, D, block)], axis=1)
            P = U[:, :K] * s_K                                  # X eofs^T = U S
        keep = np.ones(T - 1, bool) if breaks is None else ~np.asarray(breaks, bool)
        P0, P1 = P[:-1][keep], P[1:][keep]
        C0 = P0.T @ P0 / len(P0)
        C1 = P1.T @ P0 / len(P0)
        A = C1 @ np.linalg.pinv(C0)
        Q = C0 - A @ C0 @ A.T
        evals, evecs = np.linalg.eigh((Q + Q.T) / 2)
        Q_chol = evecs * np.sqrt(np.clip(evals, 0, None))  # Q = L L^T with L = V sqrt(Lambda)
        if T * D <= max_elements:
            resid_std = ((X - P @ eofs) / sqrt_w).std(0)
        else:  # per column block: what the EOFs leave out of each cell
            resid_std = np.concatenate([((X_of(lo, lo + block) - P @ eofs[:, lo:lo + block]) / sqrt_w[lo:lo + block])
                                        .std(0) for lo in range(0, D, block)])
        return cls(eofs, sqrt_w, valid, A, Q_chol, resid_std)

    def ensemble(self, a0: np.ndarray, leads: int, members: int, rng: np.random.Generator) -> np.ndarray:
        """``(members, leads, C, H, W)`` anomaly trajectories from one initial anomaly ``a0`` (``(C, H, W)``), or from
        one per member (``(members, C, H, W)``)."""
        per_member = a0.ndim == 4
        if per_member and len(a0) != members:
            raise ValueError(f"got {len(a0)} initial anomalies for {members} members")
        shape = a0.shape[1:] if per_member else a0.shape
        flat = a0.reshape(members if per_member else 1, -1)[:, self.valid]
        p = np.broadcast_to((flat * self.sqrt_w) @ self.eofs.T, (members, len(self.A))).copy()
        out = np.full((members, leads, int(np.prod(shape))), np.nan)
        for lead in range(leads):
            p = p @ self.A.T + rng.standard_normal(p.shape) @ self.Q_chol.T
            field = p @ self.eofs / self.sqrt_w + rng.standard_normal((members, self.valid.sum())) * self.resid_std
            out[:, lead][:, self.valid] = field
        return out.reshape(members, leads, *shape)
