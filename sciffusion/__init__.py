"""sciffusion: diffusion models for scientific data (climate fields, medical volumes, financial series).

The maths (``sciffusion.diffusion``) and the U-Net load eagerly and need only torch and numpy; the training layer
(Lightning) and the domains (xarray, pandas, their readers) load on first use of one of their names
(``sf.fit``, ``sf.climate``...), so ``import sciffusion.diffusion`` stays light (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .diffusion import *  # noqa: F401,F403
from .diffusion import __all__ as _diffusion_all
from .nets import UNet

# name -> the module that defines it, imported when the name is first used.
_LAZY = {
    **{name: ".training" for name in (
        "EMA", "ArrayDataset", "ConfigError", "DiffusionDataModule", "DiffusionModule", "Normalizer", "RunError",
        "SamplingSpec", "TrainedRun", "export_run", "fit", "load_run", "load_trained", "sample_batched", "save_run")},
    **{name: ".domains" for name in ("climate", "finance", "medical")},
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sciffusion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["__version__", "UNet", *_LAZY, *_diffusion_all]
