"""Conditioning at sampling time: classifier-free guidance and known values (inpainting).

Both wrap a denoiser and are denoisers themselves, so every sampler uses them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .precond import DenoiserFn, DenoiserWrapper
from .tensors import check_batch


class ClassifierFreeGuidance(DenoiserWrapper):
    """``D = D_uncond + scale * (D_cond - D_uncond)`` (Ho & Salimans 2022).

    The unconditional branch is the same denoiser with the ``cond`` tensor zeroed, which is what
    :class:`~sciffusion.diffusion.loss.DiffusionLoss` trains with ``cond_dropout > 0``. ``scale = 1`` is plain
    conditional sampling (one network call); otherwise both branches run in one batched call.
    """

    def __init__(self, denoiser: DenoiserFn, scale: float) -> None:
        super().__init__(denoiser)
        self.scale = float(scale)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None, **kw) -> Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance needs a `cond` tensor")
        if self.scale == 1.0:
            return self.denoiser(x, sigma, cond=cond, **kw)
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                             cond=torch.cat([cond, torch.zeros_like(cond)]), **kw)
        d_cond, d_uncond = both.chunk(2)
        return d_uncond + self.scale * (d_cond - d_uncond)


class KnownValues(DenoiserWrapper):
    """Keep observed values during sampling (imputation, forecasting by inpainting).

    ``known`` has the shape of a sample batch; ``mask`` (broadcastable to it, True where observed) marks the cells
    to keep. ``mode="replace"`` sets the denoised estimate to ``known`` on the mask: for every sampler the observed
    cells then follow ``known + sigma * n`` and land exactly on ``known`` at sigma 0, while the network sees them at
    every step. ``mode="guide"`` also moves the free cells along ``-grad_x |mask (D - known)|^2`` (reconstruction
    guidance, Ho et al. 2022, scaled by ``guidance_scale``), which makes them agree with the observations better at
    the cost of a backward pass per call.
    """

    def __init__(self, denoiser: DenoiserFn, known: Tensor, mask: Tensor, mode: str = "replace",
                 guidance_scale: float = 4.0) -> None:
        super().__init__(denoiser)
        check_batch(known, "known")
        if mode not in ("replace", "guide"):
            raise ValueError(f"mode must be 'replace' or 'guide'; got {mode!r}")
        try:
            mask = torch.broadcast_to(mask.to(torch.bool), known.shape)
        except RuntimeError:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to known "
                             f"{tuple(known.shape)}") from None
        if torch.isnan(known[mask]).any():
            raise ValueError("known values contain NaN inside the mask")
        self.mode, self.guidance_scale = mode, float(guidance_scale)
        self.known = torch.nan_to_num(known)
        self.mask = mask

    def forward(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        if x.shape != self.known.shape:
            raise ValueError(f"x shape {tuple(x.shape)} does not match known values {tuple(self.known.shape)}")
        known = self.known.to(x)
        if self.mode == "guide":
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                D = self.denoiser(xg, sigma, **cond)
                err = ((D - known) * self.mask).pow(2).sum()
                (grad,) = torch.autograd.grad(err, xg)
            # A step in x0 units along the gradient of the squared error (Ho et al. 2022, eq. 8, w_r alpha_t / 2).
            D = D.detach() - self.guidance_scale * 0.5 * grad
        else:
            D = self.denoiser(x, sigma, **cond)
        return torch.where(self.mask, known, D)


class KnownCombinations(DenoiserWrapper):
    """Keep known linear combinations of the channels at each position: ``C_p x_p = y_p`` for the channel vector
    ``x_p`` of every spatial position ``p`` (a scenario's given portfolio returns, one asset's shock seen through a
    whitening).

    Each ``C_p`` is ``(k_p, C)`` of full row rank. With its SVD ``C_p = U S V'``, the constraint says that the ``k_p``
    coordinates ``V' x_p`` equal ``S^-1 U' y_p``. The wrapper turns the denoised estimate into those rotated
    coordinates ``Q_p = [V, V_perp]'``, replaces the constrained ones (as :class:`KnownValues` does with
    ``mode="replace"``) and turns it back. The noise of the diffusion is isotropic, so the rotated process is the
    same diffusion; every sampler therefore lands exactly on the constraint at sigma 0, and for data with
    independent rotated coordinates (N(0, I), the whitened base law of a scenario model) the free part's law is the
    exact conditional one.

    ``rotation`` ``(G, *spatial, C, C)``: the ``Q_p`` of each of ``G`` groups of samples (scenario origins);
    ``known`` ``(G, C, *spatial)``: the rotated targets in the first ``k_p`` channels (anything elsewhere); ``mask``
    ``(C, *spatial)``: True on those channels (the same for every group). Build them with
    :func:`combination_constraints`. Each call takes ``row`` ``(B,)``, the group of each sample in the batch (the
    ``per_sample`` of the sampling path; default: every sample in group 0), so the rotations are held once per group,
    not once per sample.
    """

    def __init__(self, denoiser: DenoiserFn, rotation: Tensor, known: Tensor, mask: Tensor) -> None:
        super().__init__(denoiser)
        check_batch(known, "known")
        G, C, spatial = known.shape[0], mask.shape[0], tuple(mask.shape[1:])
        if tuple(rotation.shape) != (G, *spatial, C, C):
            raise ValueError(f"rotation must be {(G, *spatial, C, C)}; got {tuple(rotation.shape)}")
        if tuple(known.shape[1:]) != (C, *spatial):
            raise ValueError(f"known must be (groups, {C}, {', '.join(map(str, spatial))}); got {tuple(known.shape)}")
        self.rotation, self.known, self.mask = rotation, torch.nan_to_num(known), mask.to(torch.bool)

    @staticmethod
    def _turn(q: Tensor, x: Tensor, back: bool) -> Tensor:
        """``Q x`` (or ``Q' x`` when ``back``) per sample and position; ``q`` ``(B, *spatial, C, C)``."""
        xc = x.movedim(1, -1).unsqueeze(-1)                                  # (B, *spatial, C, 1)
        out = (q.transpose(-1, -2) if back else q) @ xc
        return out.squeeze(-1).movedim(-1, 1)

    def forward(self, x: Tensor, sigma: Tensor, row: Tensor | None = None, **cond) -> Tensor:
        row = torch.zeros(len(x), dtype=torch.long) if row is None else row.long().cpu()
        q = self.rotation[row].to(x)
        known = self.known[row].to(x)
        d = self._turn(q, self.denoiser(x, sigma, **cond), back=False)
        return self._turn(q, torch.where(self.mask.to(x.device), known, d), back=True)


def combination_constraints(C: Sequence[Tensor | None], y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(rotation ``(L, C, C)``, known ``(B, C, L)``, mask ``(C, L)``) of one group for :class:`KnownCombinations`
    on a 1-D axis of length ``L``: ``C[l]`` ``(k_l, C)`` (or None: nothing known at position ``l``) and ``y``
    ``(B, K, L)`` the targets, row ``j`` of ``C[l]`` in ``y[:, j, l]`` (K >= every k_l). Stack groups' rotations
    and known values along a new first dim. float64 throughout (the SVD of an ill-conditioned ``C`` loses digits in
    float32)."""
    L = len(C)
    n = next(c.shape[1] for c in C if c is not None) if any(c is not None for c in C) else None
    if n is None:
        raise ValueError("combination_constraints: nothing is known")
    rotation = torch.eye(n, dtype=torch.float64).repeat(L, 1, 1)
    known = torch.zeros((y.shape[0], n, L), dtype=torch.float64)
    mask = torch.zeros((n, L), dtype=torch.bool)
    for ell, c in enumerate(C):
        if c is None or len(c) == 0:
            continue
        c = c.to(torch.float64)
        k = c.shape[0]
        U, S, Vh = torch.linalg.svd(c, full_matrices=True)
        if S[-1] <= 1e-10 * S[0]:
            raise ValueError(f"the known combinations at position {ell} are not independent (rank < {k})")
        rotation[ell] = Vh                                                   # rows: V' (k) then V_perp'
        known[:, :k, ell] = (y[:, :k, ell].to(torch.float64) @ U) / S        # S^-1 U' y, for each batch row
        mask[:k, ell] = True
    return rotation, known, mask


def initial_state(known: Tensor, mask: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """Starting point for inpainting: ``known + sigma * noise`` on the mask, ``sigma * noise`` elsewhere."""
    m = torch.broadcast_to(mask.to(torch.bool), known.shape)
    return torch.where(m, torch.nan_to_num(known), torch.zeros_like(known)) + sigma * noise


def concat_condition(*conds: Tensor) -> Tensor:
    """Stack condition fields along channels (``(B, C_i, *spatial)`` each -> ``(B, sum C_i, *spatial)``)."""
    if not conds:
        raise ValueError("concat_condition needs at least one tensor")
    for c in conds:
        check_batch(c, "cond")
    spatial = {tuple(c.shape[2:]) for c in conds}
    if len(spatial) != 1 or len({c.shape[0] for c in conds}) != 1:
        raise ValueError(f"condition tensors disagree in batch or spatial shape: {[tuple(c.shape) for c in conds]}")
    return torch.cat(conds, dim=1)


