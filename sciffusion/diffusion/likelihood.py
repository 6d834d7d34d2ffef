"""How unlikely a sample is under a denoiser: the diffusion bound on its negative log-likelihood.

For data noised as ``x + sigma n`` (any 1-3 spatial dims), the continuous-time variational bound (Kingma et al.
2021, "Variational diffusion models"; tight when the denoiser is the exact posterior mean) is, up to a constant
that does not depend on ``x``,

    -log p(x)  ~=  integral over sigma of  E_n || x - D(x + sigma n; sigma) ||^2  sigma^-3  d sigma
               =   integral over ln sigma of  E_n || x - D(x + sigma n; sigma) ||^2 / sigma^2  d ln sigma .

So the denoising error over noise levels, weighted by ``1 / sigma^2``, scores a sample; it is exact for Gaussian data
with the exact denoiser (``||x||^2 / 2`` for N(0, I)), which the tests check. A ``reference`` denoiser run on the same
noise gives the difference of the two bounds, ``-log p(x) + log p_ref(x)``, with far less Monte Carlo noise: with a
Gaussian reference of known density the sum is the model's own log-likelihood bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precond import DenoiserFn
from .random import Generator, randn_like
from .tensors import append_dims, check_batch


def denoising_nll(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, draws: int = 8, generator: Generator = None,
                  reference: DenoiserFn | None = None, **cond) -> Tensor:
    """The bound above per sample, ``(B,)`` float64 nats (x-independent constant dropped).

    ``x``: ``(B, C, *spatial)`` clean samples in the denoiser's units. ``sigmas``: the noise levels of the
    quadrature (any order, > 0; log-spaced over the range where the integrand lives, e.g. the sampling range); the
    integral is the trapezoid rule in ``ln sigma``, so levels outside them contribute nothing. ``draws`` noise draws
    per level, in antithetic pairs ``(n, -n)`` (even; the first-order noise term cancels). With ``reference`` the
    result is the model's bound minus the reference's, both on the same noise. ``cond`` goes to ``denoiser``.
    """
    check_batch(x, "x")
    if draws < 2 or draws % 2:
        raise ValueError(f"draws must be an even number >= 2 (antithetic pairs); got {draws}")
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().sort().values
    if s.numel() < 2 or not bool((s > 0).all()):
        raise ValueError("sigmas must hold at least two noise levels, all > 0")
    ln = s.log()
    gaps = ln[1:] - ln[:-1]
    weights = (torch.cat([gaps, gaps.new_zeros(1)]) + torch.cat([gaps.new_zeros(1), gaps])) / 2 / s**2
    dims = tuple(range(1, x.ndim))
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for level, w in zip(s.tolist(), weights.tolist()):
        sig = torch.full((x.shape[0],), level, dtype=x.dtype, device=x.device)
        for _ in range(draws // 2):
            n = randn_like(x, generator)
            for sign in (1.0, -1.0):
                z = x + append_dims(sig, x.ndim) * (sign * n)
                err = (x - denoiser(z, sig, **cond)).double().square().sum(dims)
                if reference is not None:
                    err = err - (x - reference(z, sig, **cond)).double().square().sum(dims)
                total = total + (w / draws) * err
    return total
