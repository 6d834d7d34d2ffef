"""Layer 2, networks: one U-Net for 1-D, 2-D and 3-D data."""

from .unet import UNet

__all__ = ["UNet"]
