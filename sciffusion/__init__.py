"""sciffusion: diffusion models for scientific data (climate fields, medical volumes, financial series)."""

from ._version import __version__
from .diffusion import *  # noqa: F401,F403
from .diffusion import __all__ as _diffusion_all
from .nets import UNet

__all__ = ["__version__", "UNet", *_diffusion_all]
