"""The Student-t copula of standardised shocks, fitted by maximum likelihood over a grid of degrees of freedom.

Shocks arrive as normal scores ``g`` (N(0, 1) margins; here the Gaussianised GARCH-t shocks). For ``nu`` degrees of
freedom the copula's data are ``x = t_nu^{-1}(Phi(g))``; its correlation ``R`` is their correlation, and its
log-density is that of the multivariate ``t_nu(0, R)`` at ``x`` less the ``t_nu`` marginal log-densities
(Demarta & McNeil 2005, the pseudo-likelihood of their eq. 5 with ``R`` estimated per ``nu``). A smaller ``nu``
makes joint extremes more likely at the same correlation (tail dependence
``2 t_{nu+1}(-sqrt((nu + 1)(1 - rho) / (1 + rho)))``);
``nu`` = infinity is the Gaussian copula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import gammaln

from .dcc import cholesky, shock_correlation

NU_GRID = (2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)


def t_scores(g: np.ndarray, nu: float) -> np.ndarray:
    """Normal scores -> ``t_nu`` quantiles of the same probability (through the tails' survival functions)."""
    return np.sign(g) * stats.t.isf(stats.norm.sf(np.abs(g)), nu)


def normal_scores(x: np.ndarray, nu: float) -> np.ndarray:
    """``t_nu`` values -> normal scores of the same probability (the inverse of :func:`t_scores`)."""
    return np.sign(x) * stats.norm.isf(stats.t.sf(np.abs(x), nu))


def copula_loglik(x: np.ndarray, R: np.ndarray, nu: float) -> float:
    """Sum over rows of the t copula's log-density at ``x`` ``(T, A)`` (t quantiles, complete rows)."""
    T, A = x.shape
    L = cholesky(R)
    m = np.linalg.solve(L, x.T)                                           # (A, T)
    maha = (m * m).sum(0)
    logdet = 2 * np.log(np.diag(L)).sum()
    joint = (gammaln((nu + A) / 2) - gammaln(nu / 2) - A / 2 * np.log(nu * np.pi) - logdet / 2
             - (nu + A) / 2 * np.log1p(maha / nu))
    margins = stats.t.logpdf(x, nu).sum(1)
    return float((joint - margins).sum())


@dataclass
class TCopula:
    """Fitted t copula: degrees of freedom ``nu`` and correlation ``R`` ``(A, A)``."""

    nu: float
    R: np.ndarray

    @classmethod
    def fit(cls, g: np.ndarray, grid: tuple[float, ...] = NU_GRID) -> TCopula:
        """Maximum likelihood over ``grid`` on the rows of ``g`` ``(T, A)`` with every asset observed (the
        correlation uses every pair observed together). With fewer complete rows than ``A + 10`` the likelihood is
        not informative and ``nu`` is the grid's largest (near-Gaussian)."""
        full = g[np.isfinite(g).all(1)]
        fits = []
        for nu in grid if len(full) >= g.shape[1] + 10 else grid[-1:]:
            x = t_scores(g, nu)
            R = shock_correlation(x)
            ll = copula_loglik(t_scores(full, nu), R, nu) if len(full) else 0.0
            fits.append((ll, nu, R))
        ll, nu, R = max(fits, key=lambda f: f[0])
        return cls(float(nu), R)

    def sample_normal_scores(self, rng: np.random.Generator, n: int, horizon: int) -> np.ndarray:
        """``(n, A, H)`` normal scores of independent daily draws from the copula."""
        A = len(self.R)
        z = np.einsum("ab,nbh->nah", cholesky(self.R), rng.standard_normal((n, A, horizon)))
        w = rng.chisquare(self.nu, (n, 1, horizon)) / self.nu
        return normal_scores(z / np.sqrt(w), self.nu)
