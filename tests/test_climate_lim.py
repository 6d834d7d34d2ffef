"""The linear inverse model at archive scale: EOFs from the Gram matrix of large anomalies (issue 30, part 3)."""

import numpy as np

from sciffusion.domains.climate.stats import LIM


def test_lim_from_the_gram_matrix_is_the_lim_from_the_svd():
    """Above ``max_elements`` the EOFs come from the T x T Gram matrix in column blocks: the same subspace, the same
    dynamics (A's eigenvalues), noise covariance and left-out variance as the SVD's (EOF signs may differ)."""
    rng = np.random.default_rng(0)
    T, C, H, W = 120, 2, 6, 10
    a = np.zeros((T, C, H, W))
    modes = rng.normal(size=(3, C, H, W))
    z = np.zeros(3)
    for t in range(T):
        z = np.array([0.9, 0.7, 0.5]) * z + rng.normal(size=3)
        a[t] = np.tensordot(z, modes, axes=1) + 0.3 * rng.normal(size=(C, H, W))
    a[:, 0, 0, 0] = np.nan  # a missing cell
    w = np.cos(np.deg2rad(np.linspace(-50, 50, H)))
    svd = LIM.fit(a, w, max_modes=3)
    gram = LIM.fit(a, w, max_modes=3, max_elements=500)      # T * D = 14280 > 500: Gram path, blocks of 4 columns
    np.testing.assert_allclose(gram.eofs.T @ gram.eofs, svd.eofs.T @ svd.eofs, atol=1e-8)  # same projector
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(gram.A).real), np.sort(np.linalg.eigvals(svd.A).real),
                               rtol=1e-8)
    np.testing.assert_allclose(gram.Q_chol @ gram.Q_chol.T, np.diag(np.sign(np.diag(gram.eofs @ svd.eofs.T))) @
                               (svd.Q_chol @ svd.Q_chol.T) @ np.diag(np.sign(np.diag(gram.eofs @ svd.eofs.T))),
                               atol=1e-8)
    np.testing.assert_allclose(gram.resid_std, svd.resid_std, rtol=1e-8)
