"""Layer 3, training: normaliser, EMA, safe atomic run directories (the Lightning path builds on these)."""

from .checkpoint import RunError, atomic_write, load_run, load_tensors, read_manifest, save_run
from .ema import EMA
from .normalizer import Normalizer

__all__ = ["EMA", "Normalizer", "RunError", "atomic_write", "load_run", "load_tensors", "read_manifest", "save_run"]
