"""sciffusion: diffusion models for scientific data (climate fields, medical volumes, financial series)."""

from ._version import __version__
from .diffusion import *  # noqa: F401,F403
from .diffusion import __all__ as _diffusion_all
from .domains import climate, finance, medical
from .nets import UNet
from .training import (
    EMA,
    ArrayDataset,
    ConfigError,
    DiffusionDataModule,
    DiffusionModule,
    Normalizer,
    RunError,
    SamplingSpec,
    TrainedRun,
    export_run,
    fit,
    load_run,
    load_trained,
    sample_batched,
    save_run,
)

__all__ = ["__version__", "climate", "finance", "medical", "UNet", "EMA", "Normalizer", "RunError", "load_run",
           "save_run", "ArrayDataset",
           "DiffusionDataModule", "DiffusionModule", "TrainedRun", "export_run", "fit", "load_trained",
           "sample_batched", "SamplingSpec", "ConfigError", *_diffusion_all]
