"""Layer 1, the maths: domain-agnostic and rank-agnostic (``(batch, channels, *spatial)``, 1-3 spatial dims)."""

from .crps import GENERATOR_SIGMA, CRPSLoss, afcrps, one_pass_grid
from .exact import GaussianDenoiser, GaussianMixtureDenoiser, ring_mixture
from .guidance import (
    ClassifierFreeGuidance,
    KnownCombinations,
    KnownValues,
    combination_constraints,
    concat_condition,
    initial_state,
)
from .likelihood import denoising_nll
from .loss import DiffusionLoss, loss_weight
from .noise import (
    EDM,
    VE,
    VP,
    Fixed,
    Flow,
    NoiseProcess,
    alpha_bar_to_sigma,
    flow_t_to_sigma,
    karras_sigmas,
    logsnr_to_sigma,
    sigma_to_alpha_bar,
    sigma_to_flow_t,
    sigma_to_logsnr,
)
from .partial import partial_diffusion
from .precond import (
    Denoiser,
    DenoiserWrapper,
    ScaledDenoiser,
    TowardsGaussian,
    coefficients,
    declared_sigma_data,
    measure_sigma_data,
    network_target,
)
from .random import coarse_noise, derive_seed, generators_from_seeds, numpy_rng, randn, randn_like
from .samplers import (
    SAMPLERS,
    ancestral_step,
    check_options,
    ddim,
    ddpm,
    dpmpp_2m,
    dpmpp_2s,
    dpmpp_3m,
    euler,
    heun,
    nfe,
    sample,
    sampler_options,
    validate_sigmas,
)
from .schedule import fit_sigmas, steps_for_nfe
from .tensors import append_dims, check_batch
from .tiling import TiledDenoiser, blend_window, tile_starts

__all__ = [
    "EDM", "VE", "VP", "Fixed", "Flow", "flow_t_to_sigma", "sigma_to_flow_t", "NoiseProcess", "alpha_bar_to_sigma",
    "karras_sigmas", "logsnr_to_sigma",
    "sigma_to_alpha_bar", "sigma_to_logsnr", "Denoiser", "coefficients", "measure_sigma_data", "network_target",
    "DiffusionLoss", "loss_weight", "CRPSLoss", "afcrps", "GENERATOR_SIGMA", "one_pass_grid",
    "SAMPLERS", "ancestral_step", "ddim", "ddpm", "dpmpp_2m", "dpmpp_2s", "dpmpp_3m",
    "euler", "heun", "nfe",
    "sample", "validate_sigmas", "ClassifierFreeGuidance", "KnownValues", "KnownCombinations",
    "combination_constraints", "concat_condition", "initial_state",
    "partial_diffusion", "GaussianDenoiser", "GaussianMixtureDenoiser", "ring_mixture", "coarse_noise",
    "derive_seed", "numpy_rng",
    "DenoiserWrapper", "ScaledDenoiser", "TowardsGaussian", "declared_sigma_data", "check_options", "sampler_options",
    "generators_from_seeds", "randn", "randn_like", "append_dims", "check_batch",
    "fit_sigmas", "steps_for_nfe", "TiledDenoiser", "blend_window", "tile_starts", "denoising_nll",
]
