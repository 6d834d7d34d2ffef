"""Voxel grids: resampling a volume onto another grid (a target spacing, another sequence's grid, back onto the
input's own grid), with the same world-coordinate mapping everywhere. A grid is a canonical 4x4 affine (voxel
centre -> RAS mm) and a shape."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# Spacings within this fraction of each other are the same (header rounding): no resampling, voxels untouched.
SPACING_RTOL = 0.01


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each axis of ``affine``."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def same_spacing(a: Sequence[float], b: Sequence[float], rtol: float = SPACING_RTOL) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=0))


def same_grid(affine_a: np.ndarray, shape_a: Sequence[int], affine_b: np.ndarray, shape_b: Sequence[int],
              atol: float = 1e-3) -> bool:
    """Whether two grids are one: same shape and affines within ``atol`` mm."""
    return tuple(shape_a) == tuple(shape_b) and bool(np.allclose(affine_a, affine_b, atol=atol))


def spacing_grid(affine: np.ndarray, shape: Sequence[int], spacing: Sequence[float]
                 ) -> tuple[np.ndarray, tuple[int, ...]]:
    """The grid with the axes' directions of ``(affine, shape)`` and voxel size ``spacing`` (mm) covering the same
    field of view: ``round(n * old / new)`` voxels per axis, the outer voxel edges where the old ones were."""
    old = spacing_of(affine)
    new = np.asarray(spacing, float)
    if new.shape != (3,) or not (new > 0).all():
        raise ValueError(f"a target spacing needs three sizes > 0 (mm); got {list(spacing)}")
    r = new / old
    shape_out = tuple(int(max(1, round(n / q))) for n, q in zip(shape, r))
    out = np.array(affine, float)
    out[:3, :3] = out[:3, :3] * r
    # voxel centre 0 of the new grid sits half a new voxel inside the old grid's edge: old index (r - 1) / 2
    out[:3, 3] = (np.asarray(affine)[:3, :3] @ ((r - 1) / 2)) + np.asarray(affine)[:3, 3]
    return out, shape_out


def resample_onto(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int],
                  order: int = 1) -> np.ndarray:
    """``data`` ``(X, Y, Z)`` on grid ``affine`` interpolated (spline ``order``: 0 nearest for labels, 1 linear)
    onto ``(target_affine, target_shape)``; beyond the source's edge the nearest voxel is repeated. Float32 (the
    input's dtype for ``order=0``)."""
    m = np.linalg.solve(np.asarray(affine, float), np.asarray(target_affine, float))  # target voxel -> source voxel
    data = np.asarray(data)
    src = data.astype(np.float32) if order > 0 else data.astype(np.uint8) if data.dtype == bool else data
    out = ndimage.affine_transform(src, m[:3, :3], m[:3, 3], output_shape=tuple(int(n) for n in target_shape),
                                   order=order, mode="nearest")
    return out.astype(bool) if order == 0 and data.dtype == bool else out
