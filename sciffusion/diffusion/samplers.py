"""Stateless samplers over an explicit, descending sigma grid.

Signature: ``sampler(denoiser, x, sigmas, *, extra_args=None, generator=None, callback=None, **options) -> x0``

* ``x``: the starting point, already scaled to ``sigmas[0]`` (e.g. ``sigmas[0] * randn``), ``(B, C, *spatial)``.
* ``sigmas``: 1-D, non-increasing, finite, >= 0; usually ends in 0 (see :mod:`.noise`). The grid is used exactly as
  given, never rewritten. It is read to the host once before the loop, so the loop has no device-to-host syncs.
* ``generator``: a ``torch.Generator`` or one per sample (see :func:`.random.generators_from_seeds`); with one per
  sample, a member's path does not depend on the batch it is sampled in.
* ``callback``: called after every step with ``{"i", "x", "sigma", "sigma_next", "denoised"}``.
* ``extra_args``: the model's conditioning, a dict passed to every denoiser call as ``denoiser(x, sigma,
  **extra_args)`` (e.g. ``{"cond": tensor}``). Kept apart from the sampler's own options (k-diffusion's split), so a
  misspelt option is an error instead of something handed to the network.
* ``**options``: the sampler's own keyword-only settings (``S_churn``... for :func:`heun`, ``eta`` for :func:`ddim`,
  ``sigma_data`` for :func:`dpmpp_2m`). :func:`sample` checks them against :func:`sampler_options` and names the
  closest valid one; a sampler called directly with an unknown option raises ``TypeError`` as any function does.

The ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma`` (Karras et al. 2022, eq. 3 with s(t) = 1, sigma(t) = t).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from . import exponential as ex
from .precond import DenoiserFn
from .random import Generator, randn, randn_like
from .tensors import check_batch

Callback = Callable[[dict], None] | None
ExtraArgs = Mapping[str, object] | None


def validate_sigmas(sigmas: Tensor | Sequence[float]) -> list[float]:
    """Check a sampling grid and return it as Python floats (one host read for the whole loop)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 values; got shape {tuple(s.shape)}")
    vals = s.cpu().tolist()
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"sigmas must be finite; got NaN/inf in {vals}")
    if vals[-1] < 0:
        raise ValueError(f"sigmas must be >= 0; got {vals[-1]}")
    if any(b > a for a, b in zip(vals, vals[1:])):
        raise ValueError("sigmas must be non-increasing (from high noise to low)")
    if vals[0] <= 0:
        raise ValueError("sigmas[0] must be > 0")
    return vals


def _call(denoiser: DenoiserFn, x: Tensor, sigma: float, extra_args: Mapping[str, object] | None) -> Tensor:
    return denoiser(x, x.new_full((x.shape[0],), sigma, dtype=torch.float32), **(extra_args or {}))


def _prepare(x: Tensor, sigmas) -> list[float]:
    check_batch(x)
    return validate_sigmas(sigmas)


@torch.no_grad()
def euler(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None, generator: Generator = None,
          callback: Callback = None) -> Tensor:
    """First-order explicit Euler on the probability-flow ODE (1 NFE per step). Deterministic."""
    sig = _prepare(x, sigmas)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = _call(denoiser, x, s, extra_args)
        x = x + (x - denoised) / s * (s_next - s)
        if callback:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


def _churn_gammas(sig: Sequence[float], S_churn: float, S_tmin: float, S_tmax: float) -> list[float]:
    """EDM's per-step churn ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` inside ``[S_tmin, S_tmax]``, else 0."""
    if S_churn < 0:
        raise ValueError(f"S_churn must be >= 0; got {S_churn}")
    if S_churn > 0 and not any(S_tmin <= s <= S_tmax for s in sig[:-1]):
        raise ValueError(f"S_churn={S_churn} has no effect: no sigma of the grid lies in [S_tmin, S_tmax]")
    gamma_max = min(S_churn / (len(sig) - 1), math.sqrt(2) - 1)
    return [gamma_max if S_tmin <= s <= S_tmax else 0.0 for s in sig[:-1]]


@torch.no_grad()
def heun(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None, generator: Generator = None,
         callback: Callback = None, S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = float("inf"),
         S_noise: float = 1.0) -> Tensor:
    """EDM Algorithm 2: Heun's second-order method with stochastic churn.

    At each step with ``S_tmin <= sigma <= S_tmax`` the noise is raised to ``sigma_hat = sigma (1 + gamma)``,
    ``gamma = min(S_churn / N, sqrt(2) - 1)``, by adding fresh noise scaled by ``S_noise``; then a Heun step to
    ``sigma_next`` (an Euler step when ``sigma_next`` is 0). NFE = 2 N - 1 when the grid ends in 0.

    Options (EDM's names and spelling, Table 5; k-diffusion's lower-case ``s_churn`` is refused by :func:`sample`):
        S_churn: total churn over the grid (0: deterministic); per step ``gamma = min(S_churn / N, sqrt(2) - 1)``.
        S_tmin, S_tmax: the churn window, in sigma units: steps with ``S_tmin <= sigma <= S_tmax`` are churned.
        S_noise: standard deviation of the added noise relative to the exact amount (EDM uses ~1.003-1.007).
    """
    sig = _prepare(x, sigmas)
    gammas = _churn_gammas(sig, S_churn, S_tmin, S_tmax)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        gamma = gammas[i]
        s_hat = s * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(s_hat**2 - s**2) * S_noise * randn_like(x, generator)
        denoised = _call(denoiser, x, s_hat, extra_args)
        d = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * d
        if s_next > 0:
            d_next = (x_next - _call(denoiser, x_next, s_next, extra_args)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
        if callback:
            callback({"i": i, "x": x, "sigma": s_hat, "sigma_next": s_next, "denoised": denoised})
    return x


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step ``sigma -> sigma_next`` into a deterministic move to ``sigma_down`` and fresh noise of std
    ``sigma_up``, ``sigma_down^2 + sigma_up^2 = sigma_next^2``. ``eta = 1`` is DDPM's posterior variance (in sigma
    space ``sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2``), ``eta = 0`` is deterministic DDIM."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


@torch.no_grad()
def ddim(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None, generator: Generator = None,
         callback: Callback = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021) in sigma space; ``eta`` in [0, 1] scales the fresh noise (0: deterministic, which
    equals :func:`euler` step for step; 1: ancestral DDPM). 1 NFE per step."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    sig = _prepare(x, sigmas)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = _call(denoiser, x, s, extra_args)
        s_down, s_up = ancestral_step(s, s_next, eta)
        x = denoised + (x - denoised) * (s_down / s)  # = x + d (s_down - s), d = (x - denoised) / s
        if s_up > 0:
            x = x + s_up * randn_like(x, generator)
        if callback:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


@torch.no_grad()
def ddpm(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None, generator: Generator = None,
         callback: Callback = None) -> Tensor:
    """Ancestral DDPM (Ho et al. 2020): draw ``x_next`` from the Gaussian posterior ``q(x_next | x, x0 = D)``.

    In sigma space the posterior has mean ``D + (sigma_next / sigma)^2 (x - D)`` and variance
    ``sigma_next^2 (1 - (sigma_next / sigma)^2)``. 1 NFE per step.
    """
    sig = _prepare(x, sigmas)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = _call(denoiser, x, s, extra_args)
        r2 = (s_next / s) ** 2
        x = denoised + r2 * (x - denoised)
        if s_next > 0:
            x = x + s_next * math.sqrt(1 - r2) * randn_like(x, generator)
        if callback:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


def _check_sigma_data(sigma_data: float) -> float:
    a = float(sigma_data)
    if a < 0 or not math.isfinite(a):
        raise ValueError(f"sigma_data must be a finite number >= 0; got {sigma_data}")
    return a


@torch.no_grad()
def dpmpp_2m(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None,
             generator: Generator = None, callback: Callback = None, sigma_data: float = 0.0) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in ``lambda = -ln(sigma)``, data prediction.

    The first step (and a final step to sigma 0) is first order. 1 NFE per step.

    ``sigma_data > 0`` splits the denoiser into the exact denoiser of ``N(0, sigma_data^2)``,
    ``sigma_data^2 / (sigma^2 + sigma_data^2) x`` (EDM's skip term), and the rest ``R``. The linear part of the ODE
    is then integrated exactly (``x / sqrt(sigma^2 + sigma_data^2)`` is constant under it) and only ``R`` is
    extrapolated, with DPM-Solver++'s multistep weights and the exact integral of its weight,
    ``(asinh(sigma_data / sigma_next) - asinh(sigma_data / sigma)) / sigma_data``. Unit-variance Gaussian data
    then come out exact at any number of steps (plain DPM-Solver++(2M) over EDM's grid, 12 steps from sigma 20,
    gives them a standard deviation of 1.055); near-Gaussian data (normalised residuals and shocks) gain most.
    ``sigma_data = 0`` is the plain solver, its limit.
    """
    sig = _prepare(x, sigmas)
    a = _check_sigma_data(sigma_data)
    old_rest, h_last = None, None
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = _call(denoiser, x, s, extra_args)
        rest = denoised - ex.linear_coefficient(s, a) * x if a > 0 else denoised
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            d = rest
            if old_rest is not None and h_last is not None and h > 0:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * rest - (1 / (2 * r)) * old_rest
            if a > 0:
                root, root_next = math.hypot(s, a), math.hypot(s_next, a)
                weight = root_next * (math.asinh(a / s_next) - math.asinh(a / s)) / a
                x = (root_next / root) * x + weight * d
            else:
                x = (s_next / s) * x - math.expm1(-h) * d
            h_last = h
        old_rest = rest
        if callback:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


def _split_step(x: Tensor, s: float, s_next: float, a: float, rests: Sequence[Tensor], weights: Sequence[float],
                ) -> Tensor:
    """One exponential-integrator step in the Gaussian-split frame (:mod:`.exponential`):
    ``x' = root(s') (x / root(s) + sum_j w_j R_j)``."""
    r_next = ex.root(s_next, a)
    out = (r_next / ex.root(s, a)) * x
    for w, r in zip(weights, rests):
        out = out + (r_next * w) * r
    return out


@torch.no_grad()
def dpmpp_3m(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None,
             generator: Generator = None, callback: Callback = None, sigma_data: float = 0.0,
             corrector: bool = False) -> Tensor:
    """DPM-Solver++(3M): third-order multistep in ``lambda = -ln(sigma)``, data prediction. 1 NFE per step.

    The rest ``R`` of the denoiser (all of it when ``sigma_data = 0``; see :mod:`.exponential`) is extrapolated by
    the quadratic in ``lambda`` through its last three values and that polynomial is integrated exactly, so the
    method is third order on any grid (the first two steps are first and second order: there is no history yet).
    A final step to sigma 0 returns the denoised value, as every sampler here does.

    Options:
        sigma_data: the scale of the Gaussian part integrated exactly, in data units (0: the plain solver). As for
            :func:`dpmpp_2m`, unit-variance Gaussian data come out exact at any number of steps.
        corrector: a UniPC-style corrector (UniC, Zhao et al. 2023): the model value at the new point, which the
            next step needs anyway, re-integrates the step just taken through that point as well (one order higher,
            no extra network call); the next step starts from the corrected state. The callback sees the
            predicted state.
    """
    sig = _prepare(x, sigmas)
    a = _check_sigma_data(sigma_data)
    lams: list[float] = []  # lambda and rest R of the last (up to three) evaluations, newest last
    rests: list[Tensor] = []
    prev: tuple[Tensor, float] | None = None  # the state and sigma the last step started from (for the corrector)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = _call(denoiser, x, s, extra_args)
        lam = -math.log(s)
        if lams and lams[-1] == lam:  # a repeated sigma: keep the newer value only
            lams.pop(), rests.pop()
        lams.append(lam)
        rests.append(denoised - ex.linear_coefficient(s, a) * x)
        del lams[:-3], rests[:-3]
        if corrector and prev is not None and len(lams) >= 2:
            x_prev, s_prev = prev
            nodes = lams[-3:]
            x = _split_step(x_prev, s_prev, s, a, rests[-3:],
                            ex.interpolation_weights(-math.log(s_prev), lam, nodes, a))
        if s_next == 0:
            x = denoised
        elif s_next < s:
            prev = (x, s)
            x = _split_step(x, s, s_next, a, rests, ex.interpolation_weights(lam, -math.log(s_next), lams, a))
        if callback:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


@torch.no_grad()
def dpmpp_2s(denoiser: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: ExtraArgs = None,
             generator: Generator = None, callback: Callback = None, sigma_data: float = 0.0, S_churn: float = 0.0,
             S_tmin: float = 0.0, S_tmax: float = float("inf"), S_noise: float = 1.0) -> Tensor:
    """DPM-Solver++(2S) with EDM's stochastic churn: the second-order stochastic sampler GenCast uses.

    Each step first churns as :func:`heun` does (noise raised from ``sigma`` to ``sigma_hat = sigma (1 + gamma)``
    with fresh noise), then takes a second-order single step to ``sigma_next``: a first-order step to the
    ``lambda`` midpoint ``sqrt(sigma_hat sigma_next)``, a model call there, and the step integrated with the
    linear interpolant of ``R`` through both values (:mod:`.exponential`). A final step to sigma 0 returns the
    denoised value. NFE = 2 N - 1 when the grid ends in 0.

    Options: ``sigma_data`` as for :func:`dpmpp_2m`; ``S_churn``, ``S_tmin``, ``S_tmax``, ``S_noise`` as for
    :func:`heun` (EDM's names; 0 churn is the deterministic DPM-Solver++(2S)).
    """
    sig = _prepare(x, sigmas)
    a = _check_sigma_data(sigma_data)
    gammas = _churn_gammas(sig, S_churn, S_tmin, S_tmax)
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        s_hat = s * (1 + gammas[i])
        if gammas[i] > 0:
            x = x + math.sqrt(s_hat**2 - s**2) * S_noise * randn_like(x, generator)
        denoised = _call(denoiser, x, s_hat, extra_args)
        if s_next == 0:
            x = denoised
        elif s_next < s_hat:
            r0 = denoised - ex.linear_coefficient(s_hat, a) * x
            s_mid = math.sqrt(s_hat * s_next)
            x_mid = _split_step(x, s_hat, s_mid, a, [r0], [ex.first_order_weight(s_hat, s_mid, a)])
            r1 = _call(denoiser, x_mid, s_mid, extra_args) - ex.linear_coefficient(s_mid, a) * x_mid
            lam, lam_mid, lam_next = -math.log(s_hat), -math.log(s_mid), -math.log(s_next)
            x = _split_step(x, s_hat, s_next, a, [r0, r1], ex.interpolation_weights(lam, lam_next, [lam, lam_mid], a))
        if callback:
            callback({"i": i, "x": x, "sigma": s_hat, "sigma_next": s_next, "denoised": denoised})
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": euler, "heun": heun, "ddim": ddim, "ddpm": ddpm, "dpmpp_2m": dpmpp_2m, "dpmpp_3m": dpmpp_3m,
    "dpmpp_2s": dpmpp_2s,
}


# Keyword-only arguments every sampler takes that are not its own options.
COMMON_ARGS = frozenset({"extra_args", "generator", "callback"})


def resolve_sampler(sampler: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A sampler function from its name in :data:`SAMPLERS` (or the function itself)."""
    if callable(sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[sampler]


def sampler_options(sampler: str | Callable[..., Tensor]) -> frozenset[str]:
    """The options a sampler takes: its keyword-only parameters other than ``extra_args``, ``generator`` and
    ``callback``. Its signature is the one place they are declared."""
    params = inspect.signature(resolve_sampler(sampler)).parameters.values()
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY) - COMMON_ARGS


def check_options(sampler: str | Callable[..., Tensor], options: Mapping[str, object]) -> None:
    """Refuse options the sampler does not take, naming the closest valid one (``s_churn`` -> ``S_churn``)."""
    valid = sampler_options(sampler)
    name = sampler if isinstance(sampler, str) else getattr(sampler, "__name__", repr(sampler))
    for key in options:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5) or [
            v for v in valid if v.lower() == key.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        takes = ", ".join(sorted(valid)) or "no options"
        raise ValueError(f"sampler {name!r} has no option {key!r}{hint} (it takes {takes})")


def nfe(sampler: str | Callable, steps: int, ends_in_zero: bool = True) -> int:
    """Network evaluations a sampler makes over a grid of ``steps`` steps."""
    name = sampler if isinstance(sampler, str) else sampler.__name__
    if name in ("heun", "dpmpp_2s"):
        return 2 * steps - (1 if ends_in_zero else 0)
    return steps


def sample(denoiser: DenoiserFn, shape: Sequence[int], sigmas: Tensor, *, sampler: str | Callable = "heun",
           extra_args: ExtraArgs = None, generator: Generator = None, device=None, dtype=torch.float32,
           callback: Callback = None, **options) -> Tensor:
    """Draw samples: start from ``sigmas[0] * N(0, I)`` shaped ``shape`` and run ``sampler`` down the grid.

    ``extra_args`` go to every denoiser call (the condition); ``options`` are the sampler's own (``S_churn``,
    ``eta``...), checked by :func:`check_options`.
    """
    fn = resolve_sampler(sampler)
    check_options(sampler, options)
    x = randn(shape, generator, device=device, dtype=dtype) * float(torch.as_tensor(sigmas)[0])
    return fn(denoiser, x, sigmas, extra_args=extra_args, generator=generator, callback=callback, **options)
