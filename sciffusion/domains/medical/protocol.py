"""An evaluation protocol that does not flatter (see the field notes): synthetic lesions whose intensities stay
inside the healthy range, in a test scan that differs from the training data (smooth deformation, bias field,
noise), with a spatial split (train on one hemisphere, test on the other)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
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
    cal_x, cal_m = perturb(train.x[0], train.mask, rng)
    test_x, test_m = perturb(train.x[0], train.mask, rng)
    right = hemisphere(test_m, "right")
    sites = right & wm & ndimage.binary_erosion(test_m, iterations=int(np.ceil(radius[1])) + 1)
    test_x, truth = insert_lesions(test_x, sites, rng, count=lesions, radius=radius, shift=shift,
                                   healthy=train.x[0][train.mask])
    truth &= test_m
    as_scan = lambda x, m: Scan(t1.like(x), x, m, train.norm)  # noqa: E731  (already normalised)
    return Benchmark(train, hemisphere(train.mask, "left"), as_scan(cal_x, cal_m), hemisphere(cal_m, "left"),
                     as_scan(test_x, test_m), right, truth & right)


def second_contrast(t1: np.ndarray, mask: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """A T2/FLAIR-like stand-in sequence on the T1's grid from real anatomy: white matter dark, the darkest T1
    tissue (CSF) bright, built from the normalised T1 and the white-matter map (a second real contrast, not a copy:
    its intensity is not a monotone function of the T1's)."""
    t = np.clip(t1, 0, 1)
    return np.where(mask, 0.25 + 0.6 * (1 - t) ** 2 - 0.2 * wm + 0.15 * t * (1 - wm), 0.0).astype(np.float32)


def make_cohort(folder: str | pathlib.Path, subjects: int, *, sequences: Sequence[str] = ("T1", "FLAIR"),
                seed: int = 0, box: tuple[slice, ...] | None = None, spacings: Sequence[float] | None = None,
                deformation: float = 1.5, bias: float = 0.15, noise: float = 0.02, lesions: int = 0,
                lesion_sequence: str | None = None, split: Sequence[str] | None = None,
                lesion_splits: Sequence[str] = ("test",)) -> pathlib.Path:
    """Write a synthetic multi-sequence cohort of the bundled 2 mm MNI anatomy and its manifest
    (``folder/cohort.csv``): each subject a :func:`perturb`-ed copy (its own deformation, bias field and noise)
    of the T1 and of :func:`second_contrast`, cropped to ``box``; subject ``i`` at isotropic spacing
    ``spacings[i % len]`` mm (resampled, so cohorts mix grids); with ``lesions`` > 0, that many soft lesions in white
    matter of the ``lesion_sequence`` only (default: every sequence) and a ``label`` column with the lesion masks.
    ``split``: split names cycled over the subjects (a ``split`` column); lesions then go to the subjects of
    ``lesion_splits`` only, the others stay healthy."""
    from .grids import resample_onto, spacing_grid
    from .volumes import write_volume

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t1 = mni152(2)
    box = box or tuple(slice(0, n) for n in t1.data.shape)
    ref = t1.like(t1.data[box], affine=t1.affine.copy())
    ref.affine[:3, 3] = t1.affine[:3, :3] @ np.array([s.start or 0 for s in box]) + t1.affine[:3, 3]
    ref.source_affine = ref.affine
    base = prepare(ref, ref.data > 0)
    wm = read_volume(dataset_path("mni152_wm_2mm")).data[box] / 255.0
    contrasts = {"T1": base.x[0], "FLAIR": second_contrast(base.x[0], base.mask, wm)}
    rows = []
    for i in range(subjects):
        rng = np.random.default_rng([seed, i])
        warped, disp = random_deformation(base.x[0], deformation, rng)
        m = warp(base.mask.astype(np.float32), disp) > 0.5
        field = bias_field(m.shape, bias, rng)
        imgs = {}
        for k, name in enumerate(sequences):
            src = contrasts[name] if name in contrasts else contrasts["FLAIR" if k else "T1"]
            y = warp(src, disp) * field + noise * rng.standard_normal(m.shape).astype(np.float32)
            imgs[name] = np.where(m, y, 0.0).astype(np.float32)
        truth = np.zeros(m.shape, bool)
        ill = lesions > 0 and (split is None or split[i % len(split)] in lesion_splits)
        if ill:
            sites = m & (warp(wm, disp) > 0.5) & ndimage.binary_erosion(m, iterations=6)
            for name in sequences:
                if lesion_sequence in (None, name):
                    # the same lesion sites in each affected sequence: one draw sequence per subject
                    imgs[name], truth = insert_lesions(imgs[name], sites, np.random.default_rng([seed, i, 1]),
                                                       count=lesions, healthy=imgs[name][m])
        affine, shape = ref.affine, m.shape
        if spacings:
            affine, shape = spacing_grid(ref.affine, m.shape, [float(spacings[i % len(spacings)])] * 3)
        row: dict[str, str] = {"subject": f"sub{i:03d}"}
        for name, img in imgs.items():
            data = img if shape == m.shape and np.allclose(affine, ref.affine) else \
                resample_onto(img, ref.affine, affine, shape)
            out = ref.like(data, affine=affine)
            write_volume(folder / f"sub{i:03d}_{name}.nii.gz", data, out)
            row[name] = f"sub{i:03d}_{name}.nii.gz"
        if ill:
            lab = truth if shape == m.shape else resample_onto(truth.astype(np.float32), ref.affine, affine,
                                                              shape) > 0.5
            write_volume(folder / f"sub{i:03d}_lesions.nii.gz", lab.astype(np.uint8), ref.like(lab, affine=affine),
                         dtype=np.uint8)
            row["label"] = f"sub{i:03d}_lesions.nii.gz"
        if split is not None:
            row["split"] = split[i % len(split)]
        rows.append(row)
    import pandas as pd

    path = folder / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
