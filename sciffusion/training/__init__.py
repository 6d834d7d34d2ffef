"""Layer 3, training: the Lightning module and data module, normaliser, EMA, safe atomic run directories."""

from .checkpoint import RunError, atomic_write, load_run, load_tensors, read_manifest, save_run
from .data import ArrayDataset, DiffusionDataModule, StepBatchSampler
from .ema import EMA
from .fit import TrainedRun, export_run, fit, load_trained
from .module import DiffusionModule
from .normalizer import Normalizer
from .sampling import SamplingSpec, sample_batched
from .schema import ConfigError

__all__ = ["EMA", "Normalizer", "RunError", "atomic_write", "load_run", "load_tensors", "read_manifest", "save_run",
           "ArrayDataset", "DiffusionDataModule", "StepBatchSampler", "DiffusionModule", "TrainedRun", "export_run",
           "fit", "load_trained", "sample_batched", "SamplingSpec", "ConfigError"]
