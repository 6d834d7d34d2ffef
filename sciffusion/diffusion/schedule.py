"""Sigma grids fitted to a denoiser and its data: few-step sampling without hand-set ranges.

:func:`fit_sigmas` chooses the grid for a given number of network calls (NFE) by minimising the solver's
discretisation error on a batch of the user's data, in the spirit of "Align Your Steps" (Sabour et al. 2024), with
a direct objective: the mean absolute difference between the few-step solution and an accurate solution of the same
probability-flow ODE from the same starting noise. Since both start from the same noise, that difference bounds the
Wasserstein-1 distance between the few-step samples and the ODE's own distribution, so a smaller error is a better
sampler whatever the data. The fit runs in two stages:

1. the range and spacing of EDM's grid (Karras et al. 2022, eq. 5): ``log sigma_min`` and ``rho``, starting from
   ``[sigma_data / 20, 10 sigma_data]`` with ``rho = 7`` (``sigma_data``: the data's standard deviation);
2. for up to :data:`FREE_FORM_MAX_STEPS` steps, every grid point freely (log-spacing kept positive), from stage 1.

Both stages use Nelder-Mead on a fixed batch and fixed noise, so the objective is deterministic. ``sigma_max``
stays where sampling starts (``10 sigma_data`` unless given): it sets the starting distribution, not the error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from .noise import karras_sigmas
from .precond import DenoiserFn
from .random import randn
from .samplers import check_options, dpmpp_2m, resolve_sampler
from .samplers import nfe as count_nfe
from .tensors import check_batch

FREE_FORM_MAX_STEPS = 20  # above this many steps only the EDM family (range and rho) is fitted
_STOCHASTIC = {"ddpm"}


def steps_for_nfe(sampler: str | Callable, nfe: int) -> int:
    """Grid steps that spend ``nfe`` network calls (a grid ending in 0): ``nfe`` for one-call samplers,
    ``(nfe + 1) // 2`` for Heun and DPM-Solver++(2S)."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1; got {nfe}")
    return nfe if count_nfe(sampler, 2) == 2 else (nfe + 1) // 2


def _check_deterministic(sampler: str | Callable, options: Mapping[str, object]) -> None:
    name = sampler if isinstance(sampler, str) else getattr(sampler, "__name__", "")
    noisy = any(float(options.get(k, 0.0) or 0.0) > 0 for k in ("S_churn", "eta"))  # type: ignore[arg-type]
    if name in _STOCHASTIC or noisy:
        raise ValueError(f"fit_sigmas fits the grid of a deterministic (ODE) sampler; {name!r} with "
                         f"{dict(options)} adds noise (fit the grid with S_churn=0 / eta=0 and reuse it)")


def path_error(denoiser: DenoiserFn, x_T: Tensor, reference: Tensor, grid: Tensor, sampler: Callable, *,
               extra_args: Mapping[str, object] | None = None, **options) -> float:
    """Mean absolute difference between the solution over ``grid`` from ``x_T`` and ``reference``."""
    out = sampler(denoiser, x_T, grid, extra_args=extra_args, **options)
    return float((out - reference).abs().mean())


def _grid_from_gaps(top: float, z: np.ndarray) -> Tensor:
    """``[top, ..., sigma_min, 0]`` from log-gaps ``z``: ``log sigma_j = log top - sum_{m<=j} e^z_m``."""
    logs = math.log(top) - np.cumsum(np.exp(np.clip(z, -30.0, 5.0)))
    sig = np.minimum.accumulate(np.concatenate([[top], np.exp(logs)]))  # never increasing, even by an ulp
    return torch.tensor([*sig.tolist(), 0.0], dtype=torch.float64)


def fit_sigmas(denoiser: DenoiserFn, data: Tensor, nfe: int, sampler: str | Callable = "dpmpp_2m", *,
               extra_args: Mapping[str, object] | None = None, sigma_max: float | None = None,
               reference_steps: int = 256, max_evals: int = 300, seed: int = 0, **options) -> Tensor:
    """A descending sigma grid, ending in 0, for ``sampler`` at ``nfe`` network calls, fitted to ``data``.

    Args:
        denoiser: ``D(x, sigma, **extra_args)``, in the same units as ``data``.
        data: a batch of the data, ``(B, C, *spatial)`` (a few hundred to a few thousand samples of validation
            data); its standard deviation sets the starting range, and the fit runs on ``B`` noise draws of its
            shape.
        nfe: network calls the grid is for (steps: :func:`steps_for_nfe`).
        sampler: a deterministic sampler's name or function; ``options`` are its own (``sigma_data``...).
        extra_args: the model's conditioning for the batch (tensors with ``B`` rows), as samplers take it.
        sigma_max: where sampling starts; default ``10 * std(data)``.
        reference_steps: steps of the accurate solution (DPM-Solver++(2M) on EDM's grid, with ``options``'
            ``sigma_data`` when given).
        max_evals: objective evaluations per stage (each costs ``nfe`` network calls on the batch).
        seed: the noise draws of the fit.

    Returns:
        ``(steps + 1,)`` float64 on the CPU: ``sigma_max`` first, 0 last; pass it to any sampler as ``sigmas``.
    """
    from scipy.optimize import minimize  # here, not at the top: ``import sciffusion`` stays torch + numpy only

    check_batch(data)
    fn = resolve_sampler(sampler)
    check_options(sampler, options)
    _check_deterministic(sampler, options)
    steps = steps_for_nfe(sampler, nfe)
    finite = data.detach().double()
    std = float(finite[torch.isfinite(finite)].std())  # missing values (NaN) are left out of the scale
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"data must vary to set the sigma range; got standard deviation {std}")
    top = float(sigma_max) if sigma_max is not None else 10.0 * std
    if not top > 0:
        raise ValueError(f"sigma_max must be > 0; got {sigma_max}")
    gen = torch.Generator(device=data.device).manual_seed(int(seed))
    x_T = randn(tuple(data.shape), gen, device=data.device, dtype=data.dtype) * top
    a = float(options.get("sigma_data", 0.0))
    with torch.no_grad():
        ref_grid = karras_sigmas(reference_steps, min(top, std) * 1e-3, top, 7.0, dtype=torch.float64)
        reference = dpmpp_2m(denoiser, x_T, ref_grid, extra_args=extra_args, sigma_data=a)

    def error(grid: Tensor) -> float:
        with torch.no_grad():
            e = path_error(denoiser, x_T, reference, grid, fn, extra_args=extra_args, **options)
        return e if math.isfinite(e) else float("inf")

    if steps == 1:  # one step from sigma_max straight to 0: nothing to fit
        return torch.tensor([top, 0.0], dtype=torch.float64)

    # Stage 1: EDM's family, log(sigma_min / sigma_max) < 0 and rho in [1, 20].
    def family(p: np.ndarray) -> Tensor:
        lo = top * math.exp(-math.exp(p[0]))
        grid = karras_sigmas(steps, lo, top, float(np.clip(p[1], 1.0, 20.0)), dtype=torch.float64)
        grid[0] = top  # exactly where sampling starts, not its rho-th power's round trip
        return grid

    start = np.array([math.log(math.log(20.0 * top / std)) if top > std / 20 else 0.0, 7.0])
    res = minimize(lambda p: error(family(p)), start, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-7, "initial_simplex": np.array(
                       [start, start + [0.3, 0.0], start + [0.0, 3.0]])})
    best = family(res.x)
    if steps > FREE_FORM_MAX_STEPS:
        return best
    # Stage 2: every point, from stage 1's grid.
    logs = torch.log(best[:-1]).numpy()
    z0 = np.log(np.maximum(-np.diff(logs), 1e-6))
    res2 = minimize(lambda z: error(_grid_from_gaps(top, z)), z0, method="Nelder-Mead",
                    options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-7, "adaptive": True})
    return _grid_from_gaps(top, res2.x) if res2.fun < res.fun else best
