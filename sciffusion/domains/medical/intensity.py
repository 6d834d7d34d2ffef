"""Intensity handling for MRI and CT: foreground masks, per-scan normalisation, and the smooth random fields
(bias field, deformation) used for augmentation and for building test scans that differ from the training data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

CT_WINDOWS = {"brain": (40.0, 80.0), "soft_tissue": (40.0, 400.0), "bone": (400.0, 1800.0), "lung": (-600.0, 1500.0)}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises the between-class variance of the histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    # Between well-separated classes the criterion is flat: take the middle of the plateau, not its first bin.
    top = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(centres[(top[0] + top[-1]) // 2])


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Boolean foreground of a scan: voxels above half of Otsu's threshold (or all non-zero voxels of a
    skull-stripped scan whose background is exactly 0), the largest connected component, holes filled. Half, so
    dark tissue inside the body (CSF, a hypointense lesion) stays in the mask; give a mask file when it matters."""
    zero = data == 0
    if zero.mean() > 0.2:  # skull-stripped / masked already: background is exact zeros
        m = ~zero
    else:
        m = data > 0.5 * otsu_threshold(data.ravel())
    labels, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, labels, range(1, n + 1))
        m = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(m)


@dataclass
class IntensityNorm:
    """``x -> (clip(x, lo, hi) - lo) / (hi - lo)``: healthy tissue in [0, 1].

    MRI has no absolute scale, so ``lo``/``hi`` are percentiles of each scan's foreground (:meth:`fit`); CT is in
    Hounsfield units, so a fixed window ``level +- width / 2`` (:meth:`ct`) is used for every scan.
    """

    lo: float
    hi: float
    mode: str = "mri"

    @classmethod
    def fit(cls, data: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> IntensityNorm:
        v = data[mask]
        if v.size == 0:
            raise ValueError("the foreground mask is empty; cannot normalise intensities")
        lo, hi = np.percentile(v, percentiles)
        if not hi > lo:
            raise ValueError(f"foreground intensities are constant ({lo}); nothing to normalise")
        return cls(float(lo), float(hi), "mri")

    @classmethod
    def ct(cls, window: str | tuple[float, float] = "brain") -> IntensityNorm:
        level, width = CT_WINDOWS[window] if isinstance(window, str) else window
        return cls(level - width / 2, level + width / 2, "ct")

    def __call__(self, data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        x = (np.clip(data, self.lo, self.hi) - self.lo) / (self.hi - self.lo)
        if mask is not None:
            x = np.where(mask, x, 0.0)
        return x.astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * (self.hi - self.lo) + self.lo).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, control: int = 4) -> np.ndarray:
    """A smooth zero-mean unit-variance random field: white noise on a ``control``-point grid, cubic-upsampled."""
    coarse = rng.standard_normal((control,) * len(shape))
    f = ndimage.zoom(coarse, [n / control for n in shape], order=3, mode="nearest", grid_mode=True)
    f = f[tuple(slice(0, n) for n in shape)]
    return ((f - f.mean()) / max(f.std(), 1e-12)).astype(np.float32)


def bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator, control: int = 4) -> np.ndarray:
    """A multiplicative MRI bias field ``exp(strength * smooth_field)`` (strength 0.1-0.3 is typical)."""
    return np.exp(strength * smooth_field(shape, rng, control)).astype(np.float32)


def random_deformation(data: np.ndarray, amplitude: float, rng: np.random.Generator, control: int = 6,
                       order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``data`` with a smooth random displacement of about ``amplitude`` voxels (RMS per axis).

    Returns the warped volume and the displacement ``(3, X, Y, Z)``; warp a mask with the same displacement via
    :func:`warp`.
    """
    disp = np.stack([amplitude * smooth_field(data.shape, rng, control) for _ in range(data.ndim)])
    return warp(data, disp, order), disp


def warp(data: np.ndarray, disp: np.ndarray, order: int = 1) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in data.shape], indexing="ij")
    coords = [g + d for g, d in zip(grid, disp)]
    return ndimage.map_coordinates(data, coords, order=order, mode="nearest").astype(data.dtype)
