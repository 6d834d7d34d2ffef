"""An evaluation protocol that does not flatter (see the field notes): synthetic lesions whose intensities stay
inside the healthy range, in a test scan that differs from the training data (smooth deformation, bias field,
noise), with a spatial split (train on one hemisphere, test on the other)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...datasets import path as dataset_path
from .intensity import bias_field, random_deformation, warp
from .scans import Scan, hemisphere, prepare
from .volumes import Volume, read_volume


def ellipsoid_profile(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray, softness: float) -> np.ndarray:
    """Soft ellipsoid: ``1 / (1 + exp((r - 1) / softness))`` with ``r`` the ellipsoidal radius (0.5 at the edge)."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, radii)))
    return (1.0 / (1.0 + np.exp(np.clip((r - 1.0) / softness, -50, 50)))).astype(np.float32)


def insert_lesions(x: np.ndarray, region: np.ndarray, rng: np.random.Generator, *, count: int = 6,
                   radius: tuple[float, float] = (2.0, 5.0), shift: tuple[float, float] = (0.15, 0.35),
                   softness: float = 0.15, healthy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add ``count`` non-overlapping soft ellipsoids (radii in voxels) centred in ``region``, each shifting the
    intensity by ``+-U(shift)`` and clipped to the 1st-99th percentile of ``healthy`` intensities (default: the
    region's), so no lesion voxel is brighter or darker than healthy tissue. Returns the scan and the lesion mask
    (``profile > 0.5``)."""
    lo, hi = np.percentile(x[region] if healthy is None else healthy, [1, 99])
    out, truth = x.copy(), np.zeros(x.shape, bool)
    free = region.copy()
    for _ in range(count):
        cand = np.argwhere(free)
        if len(cand) == 0:
            break
        c = cand[rng.integers(len(cand))].astype(np.float32)
        radii = rng.uniform(*radius, size=3).astype(np.float32)
        prof = ellipsoid_profile(x.shape, c, radii, softness)
        sign = rng.choice([-1.0, 1.0])
        lesion = np.clip(out + sign * rng.uniform(*shift) * prof, lo, hi)
        out = np.where(prof > 0.01, lesion, out)
        truth |= prof > 0.5
        # The next centre keeps a lesion radius clear of this lesion's footprint (so lesions never touch).
        r = int(np.ceil(radius[1]))
        free &= ~ndimage.maximum_filter(prof > 0.01, size=2 * r + 1)
    return out.astype(np.float32), truth


def perturb(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, deformation: float = 1.5,
            bias: float = 0.15, noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A scan that differs from ``x`` as another healthy acquisition would: a smooth random deformation of about
    ``deformation`` voxels, a bias field of strength ``bias`` and Gaussian noise of SD ``noise`` (normalised
    units) inside the warped mask. Returns the scan and its mask."""
    warped, disp = random_deformation(x, deformation, rng)
    m = warp(mask.astype(np.float32), disp) > 0.5
    y = warped * bias_field(x.shape, bias, rng) + noise * rng.standard_normal(x.shape).astype(np.float32)
    return np.where(m, y, 0.0).astype(np.float32), m


@dataclass
class Benchmark:
    """Scans of the protocol: ``train`` (healthy, patches from ``train_region`` only), ``calibration`` (healthy,
    perturbed, threshold set on its ``calibration_region``: the training hemisphere of an unseen acquisition),
    ``test`` (perturbed, lesions in ``test_region``: the other hemisphere) and the lesion ``truth``."""

    train: Scan
    train_region: np.ndarray
    calibration: Scan
    calibration_region: np.ndarray
    test: Scan
    test_region: np.ndarray
    truth: np.ndarray


def mni152(resolution: int = 2) -> Volume:
    """The MNI ICBM152 2009a T1 template: 2 mm from ``datasets/`` (bundled), 1 mm from an installed nilearn."""
    if resolution == 2:
        return read_volume(dataset_path("mni152_t1_2mm"))
    if resolution == 1:
        try:
            import nilearn.datasets.data as d
        except ImportError:
            raise ImportError("the 1 mm template comes with nilearn: pip install nilearn") from None
        return read_volume(pathlib.Path(d.__file__).parent / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    raise ValueError(f"resolution must be 1 or 2 (mm); got {resolution}")


def brain_benchmark(seed: int = 0, lesions: int = 8, radius: tuple[float, float] = (2.0, 4.5),
                    shift: tuple[float, float] = (0.15, 0.35)) -> Benchmark:
    """The protocol on the bundled 2 mm MNI template: train on the left hemisphere, calibrate on the left
    hemisphere of a perturbed copy, test on the right hemisphere of another perturbed copy with lesions placed in
    white matter (the radius range is 4-9 mm at 2 mm voxels)."""
    rng = np.random.default_rng(seed)
    t1 = mni152(2)
    train = prepare(t1, t1.data > 0)
    wm = read_volume(dataset_path("mni152_wm_2mm")).data > 127
    cal_x, cal_m = perturb(train.x, train.mask, rng)
    test_x, test_m = perturb(train.x, train.mask, rng)
    right = hemisphere(test_m, "right")
    sites = right & wm & ndimage.binary_erosion(test_m, iterations=int(np.ceil(radius[1])) + 1)
    test_x, truth = insert_lesions(test_x, sites, rng, count=lesions, radius=radius, shift=shift,
                                   healthy=train.x[train.mask])
    truth &= test_m
    as_scan = lambda x, m: Scan(t1.like(x), x, m, train.norm)  # noqa: E731  (already normalised)
    return Benchmark(train, hemisphere(train.mask, "left"), as_scan(cal_x, cal_m), hemisphere(cal_m, "left"),
                     as_scan(test_x, test_m), right, truth & right)
