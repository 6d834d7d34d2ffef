"""Missing stretches of a daily table, their known totals, and the Gaussian conditioning both imputers share.

A price missing on days ``s .. e`` leaves the returns ``s .. e+1`` missing, but not their sum: it is the log price
change between the two observed prices around the gap. Imputed returns must add up to it, or the filled-in prices
would jump at the end of the gap. A return table (``kind=returns``) carries no such totals.

Inside a gap the model's unknowns are standardised GARCH shocks ``z_t`` (``r_t = mu + sigma_t z_t``, percent), so a
known total is the linear constraint ``sum_t sigma_t z_t = c = 100 total - n mu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Gaps:
    """Runs of missing returns per asset; ``gap_id`` ``(T, A)`` is the run's number (-1 where observed), ``total``
    ``(K,)`` its known sum (fraction log return; NaN where unknown), ``asset``/``lo``/``hi`` ``(K,)`` where it is
    (rows ``lo .. hi`` inclusive)."""

    gap_id: np.ndarray
    total: np.ndarray
    asset: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        return self.gap_id >= 0


def find_gaps(r: np.ndarray, prices: np.ndarray | None = None) -> Gaps:
    """Gaps of returns ``r`` ``(T, A)`` (NaN = missing). ``prices`` ``(T + 1, A)`` (row ``i + 1`` closes the day of
    return ``i``) give each run a total where the prices on both sides of it are observed."""
    T, A = r.shape
    gap_id = np.full((T, A), -1, dtype=np.int64)
    total, asset, lo, hi = [], [], [], []
    for a in range(A):
        miss = np.isnan(r[:, a])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], miss.astype(np.int8), [0]])))
        for s, e in zip(edges[::2], edges[1::2] - 1):
            gap_id[s:e + 1, a] = len(total)
            known = prices is not None and np.isfinite(prices[s, a]) and np.isfinite(prices[e + 1, a])
            total.append(np.log(prices[e + 1, a] / prices[s, a]) if known else np.nan)
            asset.append(a), lo.append(s), hi.append(e)
    return Gaps(gap_id, np.asarray(total, dtype=np.float64), np.asarray(asset, dtype=np.int64),
                np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))


def stretches(missing: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``(lo, hi)`` (inclusive) of rows where any asset is missing: what one imputation window must cover."""
    rows = missing.any(axis=1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows, [0]])))
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def project_totals(z: np.ndarray, sigma: np.ndarray, gap_of: np.ndarray, c: np.ndarray,
                   var: np.ndarray | None = None) -> np.ndarray:
    """Shocks ``z`` ``(S, W, A)`` moved onto every known total: ``z += v sigma (c - sum sigma z) / sum v sigma^2``
    per gap, ``v`` (``var``, default 1) each entry's variance. Draws from independent Gaussians with variances
    ``var`` become exact draws given the totals (a Brownian bridge for ``var = 1``)."""
    z = z.copy()
    v = np.ones(sigma.shape) if var is None else var
    for k in np.unique(gap_of[gap_of >= 0]):
        sel = gap_of == k
        w = v[sel] * sigma[sel]
        miss = c[k] - z[:, sel] @ sigma[sel]
        z[:, sel] += miss[:, None] * w[None] / np.sum(w * sigma[sel])
    return z


@dataclass
class GaussianConditional:
    """The law of shocks ``(W, A)`` that are i.i.d. over days with correlation ``corr`` across assets, given the
    observed entries and the known totals: ``mean`` and ``std`` ``(W, A)`` (0 std where observed) and exact draws.

    Conditioning by kriging: a prior draw ``z`` becomes ``z + S K^T (K S K^T)^-1 (y - K z)``, ``K`` stacking the
    observations and the totals' rows (``sum sigma z = c``). With ``corr = I`` each asset gets its own Brownian
    bridge; with the training correlation it is the GARCH-CCC model's conditional law.
    """

    mean: np.ndarray
    std: np.ndarray
    corr: np.ndarray
    K: np.ndarray      # (m, W A)
    y: np.ndarray      # (m,)
    gain: np.ndarray   # (W A, m)

    @classmethod
    def of(cls, z_obs: np.ndarray, observed: np.ndarray, sigma: np.ndarray, gap_of: np.ndarray, c: np.ndarray,
           corr: np.ndarray) -> GaussianConditional:
        W, A = observed.shape
        n = W * A
        cov = np.kron(np.eye(W), corr)  # entries ordered (day, asset)
        obs = np.flatnonzero(observed.ravel())
        ks = [k for k in np.unique(gap_of[gap_of >= 0])]
        K = np.concatenate([np.eye(n)[obs], np.stack([np.where((gap_of == k).ravel(), sigma.ravel(), 0.0)
                                                      for k in ks]) if ks else np.zeros((0, n))])
        y = np.concatenate([z_obs.ravel()[obs], np.asarray(c, dtype=np.float64)[ks] if ks else []])
        if len(K):
            gain = np.linalg.solve(K @ cov @ K.T + 1e-10 * np.eye(len(K)), K @ cov).T
        else:
            gain = np.zeros((n, 0))
        post = np.where(observed.ravel(), 0.0, np.diag(cov) - np.einsum("im,mi->i", gain, K @ cov))
        return cls((gain @ y).reshape(W, A), np.sqrt(np.clip(post, 0, None)).reshape(W, A), corr, K, y, gain)

    def sample(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        """Exact draws ``(samples, W, A)``."""
        W, A = self.mean.shape
        chol = np.linalg.cholesky(self.corr + 1e-12 * np.eye(A))
        prior = (rng.standard_normal((samples, W, A)) @ chol.T).reshape(samples, -1)
        return (prior + (self.y[None] - prior @ self.K.T) @ self.gain.T).reshape(samples, W, A)
