"""The one sampling path of trained models: a typed spec of how to sample, and one function that draws many
samples (ensemble members, scenario paths, volumes) in batches, one seed each, with a progress bar.

Tasks never write the sequence (settings -> device -> grid -> sampler options -> batches) themselves: they call
:meth:`~sciffusion.training.TrainedRun.sample`, or :func:`sample_batched` with a :class:`SamplingSpec` while a
model is still training (calibration).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..diffusion import declared_sigma_data, fit_sigmas, generators_from_seeds, karras_sigmas, sample
from ..diffusion.precond import Denoiser, DenoiserFn, TowardsGaussian
from ..diffusion.samplers import SAMPLERS, check_options, sampler_options, validate_sigmas
from .schema import check_config, dataclass_schema

# The sampler options a spec can hold (each is passed only when set, and only to a sampler that takes it).
OPTION_KEYS = ("S_churn", "S_tmin", "S_tmax", "S_noise", "eta", "corrector")
# The options that add noise (a grid is fitted without them, for the deterministic sampler).
NOISE_KEYS = ("S_churn", "S_tmin", "S_tmax", "S_noise", "eta")
# The settings an explicit grid replaces.
GRID_KEYS = ("steps", "sigma_min", "sigma_max", "rho")


@dataclass(frozen=True)
class SamplingSpec:
    """How a trained run samples: the ``sampling`` section of its config, typed.

    Built once from the run's stored settings plus the caller's overrides (:meth:`from_settings`); the grid is
    EDM's (Karras et al. 2022, eq. 5) over ``[sigma_min, sigma_max]`` plus a final 0.
    """

    sampler: str = "heun"  # name in sciffusion.SAMPLERS: euler, heun, ddim, ddpm, dpmpp_2m, dpmpp_3m, dpmpp_2s
    steps: int = 32  # steps over the grid (network calls: sciffusion.nfe(sampler, steps))
    sigma_min: float = 0.002  # smallest non-zero noise level of the grid, in normalised data units
    sigma_max: float = 80.0  # largest noise level (where sampling starts), in normalised data units
    rho: float = 7.0  # EDM's grid exponent: larger puts more steps at low noise
    # an explicit descending sigma grid, used exactly as given (replaces the four above)
    grid: list[float] | None = None
    S_churn: float | None = None  # heun, dpmpp_2s: total stochastic churn (EDM's spelling; None or 0: deterministic)
    S_tmin: float | None = None  # heun, dpmpp_2s: churn only where sigma >= S_tmin (sigma units)
    S_tmax: float | None = None  # heun, dpmpp_2s: churn only where sigma <= S_tmax (sigma units)
    S_noise: float | None = None  # heun, dpmpp_2s: std of the churn noise relative to the exact amount
    eta: float | None = None  # ddim: fresh-noise scale in [0, 1] (0 deterministic, 1 ancestral)
    corrector: bool | None = None  # dpmpp_3m: UniPC-style corrector (one order higher, no extra network call)
    exact_gaussian: bool = True  # integrate the N(0, sigma_data^2) part of the ODE exactly (dpmpp_2m)
    batch_size: int = 32  # samples per batch of network calls (the memory knob)
    device: str = "auto"  # cpu, cuda, cuda:N or auto (cuda when available)
    precision: str = "auto"  # network precision: auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32
    inflation: float | None = None  # scale of each sample's deviation from the conditional mean (spread fix)
    # weight w of the network against the exact Gaussian base law, D_G + w (D - D_G) (diffusion.TowardsGaussian):
    # 1 = the model as trained, 0 = the base law; tasks with a statistical base choose it on validation data
    net_weight: float = 1.0
    compile: bool = False  # sample through torch.compile(denoiser) (compiled once per shape; opt-in)
    calibrate: bool = True  # training: choose the inflation on the validation split (tasks with a condition)
    # training: fit the grid for this many network calls to the validation split (sciffusion.fit_sigmas, the
    # spec's sampler and sigma_max) and store it as `grid`; None keeps EDM's grid over [sigma_min, sigma_max]
    fit_nfe: int | None = None
    calibration_members: int = 8  # training: members per validation sample when calibrating

    def __post_init__(self) -> None:
        if self.grid is not None:
            object.__setattr__(self, "grid", validate_sigmas(self.grid))
            object.__setattr__(self, "steps", len(self.grid) - 1)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampling.sampler {self.sampler!r} is not a sampler; choose one of {sorted(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError(f"sampling.steps must be >= 1; got {self.steps}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"sampling needs 0 < sigma_min < sigma_max; got {self.sigma_min}, {self.sigma_max}")
        if self.batch_size < 1:
            raise ValueError(f"sampling.batch_size must be >= 1; got {self.batch_size}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"sampling.precision must be auto, bf16 or fp32; got {self.precision!r}")
        if not 0.0 <= self.net_weight <= 1.0:
            raise ValueError(f"sampling.net_weight must be in [0, 1]; got {self.net_weight}")
        if self.inflation is not None and not self.inflation > 0:
            raise ValueError(f"sampling.inflation must be > 0; got {self.inflation}")
        if self.fit_nfe is not None and self.fit_nfe < 1:
            raise ValueError(f"sampling.fit_nfe must be >= 1; got {self.fit_nfe}")
        check_options(self.sampler, self.set_options())

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> SamplingSpec:
        """The spec of a run's ``sampling`` settings with ``overrides`` on top (an override of None keeps the run's
        value). Unknown keys and wrong types are refused with the key named (:mod:`.schema`)."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        base = dict(settings or {})
        if "grid" not in given and any(k in given for k in GRID_KEYS):
            base.pop("grid", None)  # asking for other steps or another range replaces a stored (fitted) grid
        merged = check_config({"sampling": {**base, **given}}, {"sampling": dataclass_schema(cls)})
        return cls(**merged["sampling"])

    def replace(self, **changes: Any) -> SamplingSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def set_options(self) -> dict[str, Any]:
        """The sampler options this spec sets (None means the sampler's own default)."""
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}

    def options(self, denoiser: DenoiserFn) -> dict[str, Any]:
        """Keyword options for the sampler: the set ones, plus the denoiser's declared ``sigma_data`` when
        ``exact_gaussian`` is on and the sampler integrates the Gaussian part (it takes a ``sigma_data`` option)."""
        opts = self.set_options()
        if self.exact_gaussian and "sigma_data" in sampler_options(self.sampler):
            opts["sigma_data"] = declared_sigma_data(denoiser)
        return opts

    def sigmas(self, device: torch.device | str = "cpu") -> Tensor:
        """The sampling grid: ``grid`` as given, else EDM's over ``[sigma_min, sigma_max]`` with a final 0."""
        if self.grid is not None:
            return torch.tensor(self.grid, dtype=torch.float64, device=device)
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho, device=device)

    def shrink(self, denoiser: DenoiserFn) -> DenoiserFn:
        """``denoiser`` with the spec's ``net_weight`` applied (itself at weight 1)."""
        return denoiser if self.net_weight == 1.0 else TowardsGaussian(denoiser, self.net_weight)

    @property
    def sigma_start(self) -> float:
        """The noise level sampling starts from (the conditional mean is taken there)."""
        return float(self.grid[0]) if self.grid is not None else self.sigma_max

    def resolve_device(self, device: torch.device | str | None = None) -> torch.device:
        """``device`` if given, else the spec's (``auto``: CUDA when available)."""
        return resolve_device(device if device is not None else self.device)

    def autocast(self, device: torch.device) -> Any:
        """The network's precision context: bf16 autocast on CUDA unless ``precision`` is fp32 (the sampler's
        arithmetic and the preconditioning stay fp32 either way)."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def resolve_device(spec: torch.device | str | None) -> torch.device:
    """``auto`` (or None): CUDA when available (under a launcher, this process's GPU: ``LOCAL_RANK``), else CPU;
    anything else as torch reads it."""
    if spec is None or (isinstance(spec, str) and spec == "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ValueError(f"sampling.device {spec!r} is not a device (cpu, cuda, cuda:N or auto)") from None


def network_autocast(device: torch.device) -> Any:
    """bf16 autocast for the network on CUDA (the sampler's arithmetic stays fp32), nothing elsewhere."""
    return SamplingSpec().autocast(device)


def sample_batched(denoiser: DenoiserFn, shape: Sequence[int], seeds: Sequence[int], spec: SamplingSpec, *,
                   cond: Tensor | None = None, device: torch.device | str | None = None, progress: bool = False,
                   desc: str = "sampling", wrap: Callable[[DenoiserFn], DenoiserFn] | None = None,
                   per_sample: Mapping[str, Tensor] | None = None) -> Tensor:
    """``len(seeds)`` samples of one-sample shape ``shape`` (``(C, *spatial)``), returned ``(n, C, *spatial)`` fp32
    on the device (``device``, else the spec's).

    Sample ``i`` starts from the noise of ``seeds[i]`` (see :func:`~sciffusion.derive_seed`) and is conditioned on
    ``cond[i]`` (``cond`` is ``(n, ...)``), so it is the same whatever ``spec.batch_size`` is. ``progress`` shows
    one bar over all sampler steps of all batches. ``spec.inflation`` scales each sample's deviation from the
    model's conditional mean ``D(0; sigmas[0], cond)`` (see :func:`conditional_mean`): a spread correction that
    leaves every sample independent of the others.

    ``wrap`` turns the denoiser, after the spec's shrinkage towards the Gaussian base (``net_weight``), into another
    (tiling, known values), so a constraint it imposes holds for the shrunk model too; ``per_sample`` tensors
    ``(n, ...)`` reach it in ``extra_args``, sliced with the batch. Inflation moves samples off what a wrap imposes:
    sample constraints with ``inflation=None``.
    """
    n = len(seeds)
    if n < 1:
        raise ValueError("need at least one seed")
    inflation = 1.0 if spec.inflation is None else float(spec.inflation)
    if inflation != 1.0 and cond is None:
        raise ValueError("inflation scales deviations from the conditional mean, so it needs cond")
    if cond is not None and len(cond) != n:
        raise ValueError(f"cond has {len(cond)} rows for {n} seeds; give one condition per sample")
    for k, v in (per_sample or {}).items():
        if len(v) != n:
            raise ValueError(f"per-sample tensor {k!r} has {len(v)} rows for {n} seeds")
    device = spec.resolve_device(device)
    if spec.compile:
        denoiser = compiled(denoiser)
    denoiser = spec.shrink(denoiser)
    if wrap is not None:
        denoiser = wrap(denoiser)
    sigmas = spec.sigmas(device)
    options = spec.options(denoiser)
    chunks = range(0, n, spec.batch_size)
    out = []
    with tqdm(total=spec.steps * len(chunks), desc=desc, disable=not progress, unit="step") as bar, \
            torch.inference_mode():
        for lo in chunks:
            idx = slice(lo, min(n, lo + spec.batch_size))
            extra = {k: v[idx].to(device) for k, v in (per_sample or {}).items()}
            if cond is not None:
                extra["cond"] = cond[idx].to(device)
            with spec.autocast(device):
                x = sample(denoiser, (idx.stop - idx.start, *shape), sigmas, sampler=spec.sampler,
                           extra_args=extra or None, generator=generators_from_seeds(seeds[idx], device), device=device,
                           callback=lambda _: bar.update(1), **options)
            out.append(x.float())
    x = torch.cat(out)
    if inflation != 1.0:
        assert cond is not None
        m = conditional_mean(denoiser, shape, cond, spec.sigma_start, spec, device=device)
        x = m + inflation * (x - m)
    return x


def conditional_mean(denoiser: DenoiserFn, shape: Sequence[int], cond: Tensor, sigma: float, spec: SamplingSpec, *,
                     device: torch.device | str | None = None) -> Tensor:
    """``D(0; sigma, cond)`` for each row of ``cond``: at a large ``sigma`` the denoiser's estimate from a blank
    input is the model's conditional mean. Spread inflation scales each member's deviation from it, which keeps a
    member independent of how many others are drawn (inflating about the ensemble mean would not)."""
    device = spec.resolve_device(device if device is not None else cond.device)
    out = []
    with torch.inference_mode(), spec.autocast(device):
        for lo in range(0, len(cond), spec.batch_size):
            c = cond[lo:lo + spec.batch_size].to(device)
            x = torch.zeros((len(c), *shape), device=device)
            out.append(denoiser(x, torch.full((len(c),), float(sigma), device=device), cond=c).float())
    return torch.cat(out)


def fit_grid(denoiser: DenoiserFn, x: Tensor, spec: SamplingSpec, *, cond: Tensor | None = None, seed: int = 0,
             device: torch.device | str | None = None) -> SamplingSpec:
    """``spec`` with the grid :func:`~sciffusion.fit_sigmas` fits for ``spec.fit_nfe`` network calls of
    ``spec.sampler`` on the batch ``x`` ``(B, C, *spatial)`` (normalised units) and its conditions ``cond`` ``(B,
    ...)``, from ``spec.sigma_start``; the model as it samples (``net_weight``, the exact-Gaussian option). Churn and
    ``eta`` are left out of the fit (it needs a deterministic sampler) and kept for sampling."""
    if spec.fit_nfe is None:
        raise ValueError("sampling.fit_nfe is not set: nothing to fit")
    device = spec.resolve_device(device)
    den = spec.shrink(denoiser)
    options = {k: v for k, v in spec.options(den).items() if k not in NOISE_KEYS}
    extra = None if cond is None else {"cond": cond.to(device)}
    with torch.inference_mode(), spec.autocast(device):
        grid = fit_sigmas(den, x.to(device), spec.fit_nfe, spec.sampler, extra_args=extra,
                          sigma_max=spec.sigma_start, seed=seed, **options)
    return spec.replace(grid=grid.tolist())


def compiled_net(net: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(net)``, once per network object, kept in the network's ``__dict__``: out of the module
    registry, so state dicts, checkpoints and exported weights hold one copy under the usual names, and later calls
    (the next lead of a forecast, the next training step) reuse the compiled code."""
    if "_sciffusion_compiled" not in net.__dict__:
        net.__dict__["_sciffusion_compiled"] = torch.compile(net)
    return net.__dict__["_sciffusion_compiled"]


def compiled(denoiser: DenoiserFn) -> DenoiserFn:
    """``denoiser`` with its network through :func:`compiled_net` (any other denoiser compiled as a whole)."""
    if isinstance(denoiser, Denoiser):
        return Denoiser(compiled_net(denoiser.net), denoiser.sigma_data, denoiser.parameterization,
                        denoiser.c_noise)
    return torch.compile(denoiser)  # type: ignore[return-value]
