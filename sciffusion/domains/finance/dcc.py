"""DCC(1,1): the dynamic conditional correlation of standardised shocks (Engle 2002), fitted by composite likelihood.

With ``u_t`` the shocks (N(0, 1) margins; here the Gaussianised GARCH-t shocks) and ``Qbar`` their correlation,

    Q_{t+1} = (1 - a - b) Qbar + a u_t u_t' + b Q_t,      R_t = diag(Q_t)^{-1/2} Q_t diag(Q_t)^{-1/2}

(``a, b >= 0``, ``a + b < 1``). Fitting ``(a, b)`` by the full Gaussian likelihood costs O(T A^3); the composite
likelihood of the ``A - 1`` contiguous pairs (Engle, Shephard & Sheppard 2008; Pakel et al. 2021), each a bivariate
DCC with the same ``(a, b)``, is consistent and costs O(T A), so the same code fits 5 and 500 assets. A missing
shock leaves its rows of ``Q`` to the long-run part for that day (its outer product is replaced by ``Qbar``).
The multi-step forecast is Engle & Sheppard's (2001): ``E Q_{t+h} = Qbar + (a + b)^(h-1) (Q_{t+1} - Qbar)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


def shock_correlation(u: np.ndarray) -> np.ndarray:
    """Correlation ``(A, A)`` of shocks ``(T, A)`` from the pairs observed together (pairwise-complete), made
    positive definite by eigenvalue clipping, so an asset that lists late does not shorten every other pair."""
    ok = np.isfinite(u)
    x = np.where(ok, u, 0.0)
    n = ok.T.astype(np.float64) @ ok
    s = x.T @ ok
    ss = (x * x).T @ ok
    sp = x.T @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_i, mean_j = s / n, s.T / n
        cov = sp / n - mean_i * mean_j
        var_i, var_j = ss / n - mean_i**2, ss.T / n - mean_j**2
        c = cov / np.sqrt(var_i * var_j)
    c = np.where(np.isfinite(c) & (n > 2), c, 0.0)
    np.fill_diagonal(c, 1.0)
    w, v = np.linalg.eigh((c + c.T) / 2)
    c = (v * np.maximum(w, 1e-4)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / np.outer(d, d)


def _pair_nll(params: np.ndarray, u: np.ndarray, qbar: np.ndarray) -> float:
    """Negative composite log-likelihood of contiguous pairs ``(i, i + 1)`` for ``(a, b)``."""
    a, b = params
    if a < 0 or b < 0 or a + b >= 0.999:
        return 1e12
    x, y = u[:, :-1], u[:, 1:]
    ok = np.isfinite(x) & np.isfinite(y)
    rho_bar = np.diag(qbar, 1)
    qxx, qyy, qxy = np.ones(x.shape[1]), np.ones(x.shape[1]), rho_bar.copy()
    c = 1.0 - a - b
    nll = 0.0
    for t in range(len(u)):
        r = np.clip(qxy / np.sqrt(qxx * qyy), -0.999, 0.999)
        o = ok[t]
        xt, yt = x[t, o], y[t, o]
        rt = r[o]
        det = 1.0 - rt * rt
        nll += 0.5 * float(np.sum(np.log(det) + (xt * xt - 2 * rt * xt * yt + yt * yt) / det - xt * xt - yt * yt))
        ex, ey = np.where(o, x[t], 0.0), np.where(o, y[t], 0.0)
        qxx = c + a * np.where(o, ex * ex, 1.0) + b * qxx
        qyy = c + a * np.where(o, ey * ey, 1.0) + b * qyy
        qxy = c * rho_bar + a * np.where(o, ex * ey, rho_bar) + b * qxy
    return nll


@dataclass
class DCC:
    """Fitted DCC(1,1): ``a``, ``b`` and the long-run correlation ``qbar`` ``(A, A)``."""

    a: float
    b: float
    qbar: np.ndarray

    @classmethod
    def fit(cls, u: np.ndarray) -> DCC:
        """Fit to shocks ``u`` ``(T, A)`` (NaN = missing); one asset gives ``a = b = 0`` (nothing to correlate)."""
        qbar = shock_correlation(u)
        if u.shape[1] < 2:
            return cls(0.0, 0.0, qbar)
        best = min((minimize(_pair_nll, np.array(x0), args=(u, qbar), method="Nelder-Mead",
                             options={"xatol": 1e-4, "fatol": 1e-3, "maxiter": 200}) for x0 in ((0.02, 0.95),
                                                                                               (0.05, 0.85))),
                   key=lambda r: r.fun)
        a, b = (float(v) for v in best.x)
        if not (a >= 0 and b >= 0 and a + b < 0.999):
            a, b = 0.0, 0.0
        return cls(a, b, qbar)

    def filter(self, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``Q_t`` for ``t = 0 .. T`` ``(T + 1, A, A)``: row ``t`` is known before day ``t`` (``Q_0 = Qbar``), the
        last row the next day's. With ``rows``, only those rows ``(len(rows), A, A)``, in that order (memory
        O(len(rows) A^2) rather than O(T A^2): 500 assets over 10 years would be 5 GB)."""
        T, A = u.shape
        want = np.arange(T + 1) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(want) and (want.min() < 0 or want.max() > T):
            raise ValueError(f"rows must be in [0, {T}]")
        out = np.empty((len(want), A, A))
        where: dict[int, list[int]] = {}
        for i, t in enumerate(want):
            where.setdefault(int(t), []).append(i)
        q = self.qbar.copy()
        c = 1.0 - self.a - self.b
        last = int(want.max()) if len(want) else -1
        for t in range(last + 1):
            for i in where.get(t, ()):
                out[i] = q
            if t == last:
                break
            ok = np.isfinite(u[t])
            x = np.where(ok, u[t], 0.0)
            outer = np.where(ok[:, None] & ok[None, :], np.outer(x, x), self.qbar)
            q = c * self.qbar + self.a * outer + self.b * q
        return out

    def step(self, q: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``Q_{t+1}`` from ``Q_t`` ``(..., A, A)`` and complete shocks ``u_t`` ``(..., A)`` (a simulated path)."""
        return ((1.0 - self.a - self.b) * self.qbar + self.a * u[..., :, None] * u[..., None, :] + self.b * q)

    def correlation(self, q: np.ndarray) -> np.ndarray:
        """``R`` from ``Q`` (any leading dims)."""
        d = np.sqrt(np.einsum("...ii->...i", q))
        return q / (d[..., :, None] * d[..., None, :])

    def forecast(self, q_next: np.ndarray, horizon: int) -> np.ndarray:
        """Correlations ``(..., H, A, A)`` of days ``t + 1 .. t + H`` from ``Q_{t+1}`` ``(..., A, A)``."""
        k = (self.a + self.b) ** np.arange(horizon)
        q = self.qbar + k[:, None, None] * (q_next[..., None, :, :] - self.qbar)
        return self.correlation(q)

    def state(self, prefix: str = "dcc_") -> dict[str, np.ndarray]:
        return {prefix + "ab": np.array([self.a, self.b]), prefix + "qbar": self.qbar}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray], prefix: str = "dcc_") -> DCC:
        a, b = (float(v) for v in s[prefix + "ab"])
        return cls(a, b, np.asarray(s[prefix + "qbar"], dtype=np.float64))


def cholesky(r: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of correlation matrices ``(..., A, A)`` (a tiny ridge keeps them positive
    definite)."""
    A = r.shape[-1]
    return np.linalg.cholesky(r + 1e-9 * np.eye(A))
