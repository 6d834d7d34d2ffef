"""Draw many samples (ensemble members, scenario paths, volumes) in batches, one seed each, with a progress bar."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..diffusion import generators_from_seeds, sample
from ..diffusion.samplers import SAMPLERS
from ..diffusion.precond import DenoiserFn


def network_autocast(device: torch.device) -> Any:
    """bf16 autocast for the network on CUDA (the sampler's arithmetic stays fp32), nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def with_sigma_data(denoiser: DenoiserFn, sampler: str | Callable, options: dict[str, Any],
                    exact_gaussian: bool) -> dict[str, Any]:
    """``options`` plus the denoiser's ``sigma_data`` when ``exact_gaussian`` and the sampler takes it (it then
    integrates the ``N(0, sigma_data^2)`` part of the ODE exactly); unchanged otherwise."""
    fn = SAMPLERS.get(sampler) if isinstance(sampler, str) else sampler
    if not exact_gaussian or fn is None or "sigma_data" not in inspect.signature(fn).parameters:
        return options
    if getattr(denoiser, "sigma_data", None) is None:
        raise ValueError("exact_gaussian needs a denoiser with a sigma_data attribute (a sciffusion Denoiser)")
    return {**options, "sigma_data": float(denoiser.sigma_data)}


def sample_batched(denoiser: DenoiserFn, shape: Sequence[int], sigmas: Tensor, seeds: Sequence[int], *,
                   sampler: str = "heun", cond: Tensor | None = None, batch_size: int = 32,
                   device: torch.device | str | None = None, progress: bool = False, desc: str = "sampling",
                   inflation: float = 1.0, exact_gaussian: bool = False, **sampler_kwargs: Any) -> Tensor:
    """``len(seeds)`` samples of one-sample shape ``shape`` (``(C, *spatial)``), returned ``(n, C, *spatial)`` on
    ``device``.

    Sample ``i`` starts from the noise of ``seeds[i]`` and is conditioned on ``cond[i]`` (``cond`` is ``(n, ...)``),
    so it is the same whatever ``batch_size`` is. On CUDA the network runs under bf16 autocast (the preconditioning
    and the sampler's arithmetic stay fp32). ``progress`` shows one bar over all sampler steps of all batches.
    ``inflation`` != 1 scales each sample's deviation from the model's conditional mean ``D(0; sigmas[0], cond)``
    (see :func:`conditional_mean`): a spread correction that leaves every sample independent of the others.
    ``exact_gaussian`` passes the denoiser's ``sigma_data`` to a sampler that takes it (``dpmpp_2m``: the
    ``N(0, sigma_data^2)`` part of the ODE is then integrated exactly); other samplers run as they are.
    """
    n = len(seeds)
    if n < 1:
        raise ValueError("need at least one seed")
    if inflation != 1.0 and cond is None:
        raise ValueError("inflation scales deviations from the conditional mean, so it needs cond")
    if cond is not None and len(cond) != n:
        raise ValueError(f"cond has {len(cond)} rows for {n} seeds; give one condition per sample")
    device = torch.device(device) if device is not None else (cond.device if cond is not None else torch.device("cpu"))
    sampler_kwargs = with_sigma_data(denoiser, sampler, sampler_kwargs, exact_gaussian)
    steps = len(sigmas) - 1
    chunks = range(0, n, batch_size)
    autocast = network_autocast(device)
    out = []
    with tqdm(total=steps * len(chunks), desc=desc, disable=not progress, unit="step") as bar, torch.inference_mode():
        for lo in chunks:
            idx = slice(lo, min(n, lo + batch_size))
            kw = dict(sampler_kwargs)
            if cond is not None:
                kw["cond"] = cond[idx].to(device)
            with autocast:
                x = sample(denoiser, (idx.stop - idx.start, *shape), sigmas, sampler=sampler,
                           generator=generators_from_seeds(seeds[idx], device), device=device,
                           callback=lambda _: bar.update(1), **kw)
            out.append(x.float())
    x = torch.cat(out)
    if inflation != 1.0:
        m = conditional_mean(denoiser, shape, cond, float(sigmas[0]), batch_size=batch_size, device=device)
        x = m + inflation * (x - m)
    return x


def conditional_mean(denoiser: DenoiserFn, shape: Sequence[int], cond: Tensor, sigma: float, *,
                     batch_size: int = 32, device: torch.device | str | None = None) -> Tensor:
    """``D(0; sigma, cond)`` for each row of ``cond``: at a large ``sigma`` the denoiser's estimate from a blank
    input is the model's conditional mean. Spread inflation scales each member's deviation from it, which keeps a
    member independent of how many others are drawn (inflating about the ensemble mean would not)."""
    device = torch.device(device) if device is not None else cond.device
    autocast = network_autocast(device)
    out = []
    with torch.inference_mode(), autocast:
        for lo in range(0, len(cond), batch_size):
            c = cond[lo:lo + batch_size].to(device)
            x = torch.zeros((len(c), *shape), device=device)
            out.append(denoiser(x, torch.full((len(c),), float(sigma), device=device), cond=c).float())
    return torch.cat(out)
