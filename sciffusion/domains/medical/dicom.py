"""DICOM series in: files grouped by SeriesInstanceUID, one series chosen (by UID or description), its slices
ordered and spaced from ImagePositionPatient along the ImageOrientationPatient normal, rescaled to modality units.

Classic series (one slice per file), legacy multi-frame objects (frames along the normal, as RT dose grids) and
enhanced multi-frame objects (geometry and rescale per frame in the functional groups) all become one list of
:class:`Frame` and go through the same stacking and checks, so every kind gets the same errors: gantry tilt, uneven
or duplicated slice positions, mixed orientations, each naming the series. Compressed transfer syntaxes need a
pixel-data handler (``pip install 'sciffusion[dicom]'``: pylibjpeg; or gdcm).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Slices whose stack direction leaves the slice normal by more than this (degrees) come from a tilted gantry: their
# voxels are sheared, and an affine built from the normal would misplace them.
MAX_TILT_DEG = 0.5
# Consecutive slice gaps may differ by this fraction of the median gap (rounding in ImagePositionPatient).
GAP_RTOL = 0.05


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImportError("DICOM input needs pydicom: pip install 'sciffusion[medical]'") from None
    return pydicom


@dataclass
class Series:
    """One DICOM series of a folder: its UID, description, modality and files (headers only read)."""

    uid: str
    description: str
    modality: str
    files: list[pathlib.Path]
    frames: int        # slices in all (files x frames per file)
    is_volume: bool    # an image stack that can make a 3-D volume (not a localizer, not one 2-D image)

    def label(self) -> str:
        return f"{self.uid} {self.description!r} ({self.modality}, {self.frames} image(s))"


@dataclass
class Frame:
    """One 2-D image of a series with its geometry: ``position`` (LPS mm of the first pixel), ``row``/``col``
    direction cosines, ``spacing`` (row spacing, column spacing in mm), and ``pixels()`` in modality units."""

    position: np.ndarray
    row: np.ndarray
    col: np.ndarray
    spacing: tuple[float, float]
    pixels: Callable[[], np.ndarray]


def list_series(files: Sequence[str | os.PathLike]) -> list[Series]:
    """The series among ``files`` (non-DICOM files are skipped), in the order first seen."""
    pydicom = _pydicom()
    groups: dict[str, list[tuple[pathlib.Path, Any]]] = {}
    for f in (pathlib.Path(f) for f in files):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM (a README, a DICOMDIR's neighbours): skip, as scanners' folders hold them
            continue
        if "Rows" not in ds or "Columns" not in ds:
            continue  # no image: structured reports, RT plans, presentation states
        groups.setdefault(str(getattr(ds, "SeriesInstanceUID", "") or f.parent), []).append((f, ds))
    out = []
    for uid, items in groups.items():
        ds0 = items[0][1]
        n = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for _, ds in items)
        image_type = [str(v).upper() for v in (getattr(ds0, "ImageType", None) or [])]
        orientations = {tuple(np.round(np.array(ds.ImageOrientationPatient, float), 4)) for _, ds in items
                        if "ImageOrientationPatient" in ds}
        volume = n >= 2 and "LOCALIZER" not in image_type and len(orientations) <= 1
        out.append(Series(uid, str(getattr(ds0, "SeriesDescription", "") or ""), str(getattr(ds0, "Modality", "")),
                          sorted(f for f, _ in items), n, volume))
    return out


def choose_series(series: list[Series], choice: str | None, where: str) -> Series:
    """The series named by ``choice`` (a SeriesInstanceUID, or a description: exact, else a unique substring,
    case-insensitive), or the only volume series; otherwise an error that lists the candidates."""
    if not series:
        raise ValueError(f"{where}: no DICOM image series found")
    if choice is not None:
        c = str(choice).lower()
        hits = ([s for s in series if s.uid == choice] or [s for s in series if s.description.lower() == c]
                or [s for s in series if c in s.description.lower()])
        if len(hits) == 1:
            return hits[0]
        listing = "; ".join(s.label() for s in (hits or series))
        raise ValueError(f"{where}: series {choice!r} matches {len(hits)} series; choose one of: {listing}")
    volumes = [s for s in series if s.is_volume]
    if len(volumes) == 1:
        return volumes[0]
    if not volumes:
        raise ValueError(f"{where}: no DICOM series makes a 3-D volume (found: "
                         f"{'; '.join(s.label() for s in series)})")
    raise ValueError(f"{where}: {len(volumes)} image series qualify; choose one with --series UID or description: "
                     f"{'; '.join(s.label() for s in volumes)}")


def _decoded(ds: Any, f: pathlib.Path) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError without a handler for the syntax
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise ValueError(f"{f}: cannot decode pixel data ({name}): install a handler with pip install "
                         f"'sciffusion[dicom]' (pylibjpeg) or gdcm ({e})") from None


def _rescale(a: np.ndarray, slope: Any, intercept: Any) -> np.ndarray:
    return a * float(slope if slope not in (None, "") else 1) + float(intercept if intercept not in (None, "") else 0)


def _item(ds: Any, i: int, sequence: str) -> Any:
    """The ``sequence`` item of frame ``i`` in an enhanced object: per-frame functional groups first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", i), ("SharedFunctionalGroupsSequence", 0)):
        g = getattr(ds, groups, None)
        if g is not None and len(g) > index and sequence in g[index]:
            return getattr(g[index], sequence)[0]
    return None


def _frames(f: pathlib.Path, ds: Any) -> list[Frame]:
    """The frames of one file: a classic slice, a legacy multi-frame stack or an enhanced multi-frame object."""
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    cache: dict[str, np.ndarray] = {}

    def all_pixels() -> np.ndarray:  # decoded once per file, however many frames it has
        if "a" not in cache:
            a = _decoded(ds, f)
            cache["a"] = a[None] if n == 1 else a
        return cache["a"]

    if "PerFrameFunctionalGroupsSequence" in ds:
        out = []
        for i in range(n):
            plane, ornt = _item(ds, i, "PlanePositionSequence"), _item(ds, i, "PlaneOrientationSequence")
            meas, pv = _item(ds, i, "PixelMeasuresSequence"), _item(ds, i, "PixelValueTransformationSequence")
            if plane is None or ornt is None or meas is None:
                raise ValueError(f"{f}: enhanced DICOM frame {i} has no plane position/orientation/pixel measures")
            iop = np.array(ornt.ImageOrientationPatient, float)
            slope, icpt = (getattr(pv, "RescaleSlope", 1), getattr(pv, "RescaleIntercept", 0)) if pv else (1, 0)
            out.append(Frame(np.array(plane.ImagePositionPatient, float), iop[:3], iop[3:],
                             tuple(float(v) for v in meas.PixelSpacing),  # type: ignore[arg-type]
                             lambda i=i, s=slope, c=icpt: _rescale(all_pixels()[i], s, c)))
        return out
    try:
        iop = np.array(ds.ImageOrientationPatient, float)
        origin = np.array(ds.ImagePositionPatient, float)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
    except AttributeError as e:
        raise ValueError(f"{f}: DICOM without image geometry ({e}); cannot build an affine") from None
    slope, icpt = getattr(ds, "RescaleSlope", 1), getattr(ds, "RescaleIntercept", 0)
    if n == 1:
        return [Frame(origin, iop[:3], iop[3:], spacing, lambda: _rescale(all_pixels()[0], slope, icpt))]  # type: ignore[arg-type]
    # Legacy multi-frame: frames along the normal at GridFrameOffsetVector (RT dose) or a constant spacing.
    normal = np.cross(iop[:3], iop[3:])
    offsets = getattr(ds, "GridFrameOffsetVector", None)
    if offsets is None or len(offsets) != n:
        dz = float(getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None) or 1.0)
        offsets = [k * dz for k in range(n)]
    scale = float(getattr(ds, "DoseGridScaling", 1) or 1) if "GridFrameOffsetVector" in ds else 1.0
    return [Frame(origin + float(o) * normal, iop[:3], iop[3:], spacing,  # type: ignore[arg-type]
                  lambda k=k: _rescale(all_pixels()[k], slope, icpt) * scale) for k, o in enumerate(offsets)]


def stack(frames: list[Frame], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames -> voxels ``(cols, rows, slices)`` and their LPS affine, slices sorted along the normal. Errors for
    mixed orientations or pixel spacings, gantry tilt, duplicated and unevenly spaced (missing) slices."""
    f0 = frames[0]
    for fr in frames[1:]:
        if not (np.allclose(fr.row, f0.row, atol=1e-4) and np.allclose(fr.col, f0.col, atol=1e-4)):
            raise ValueError(f"{where}: slices have different orientations (a localizer or a multi-plane series)")
        if not np.allclose(fr.spacing, f0.spacing, rtol=1e-4):
            raise ValueError(f"{where}: slices have different pixel spacings")
    normal = np.cross(f0.row, f0.col)
    frames = sorted(frames, key=lambda fr: float(fr.position @ normal))
    z = np.array([float(fr.position @ normal) for fr in frames])
    gaps = np.diff(z)
    if (gaps <= 1e-6).any():
        raise ValueError(f"{where}: {int((gaps <= 1e-6).sum())} duplicated slice positions")
    dz = float(np.median(gaps))
    if not np.allclose(gaps, dz, rtol=GAP_RTOL):
        missing = int(round((z[-1] - z[0]) / dz)) + 1 - len(z)
        raise ValueError(f"{where}: uneven slice spacing: {missing} slice(s) missing between {z[0]:.1f} and "
                         f"{z[-1]:.1f} mm (spacing {dz:.2f} mm)")
    step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
    tilt = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), -1, 1))))
    if tilt > MAX_TILT_DEG:
        raise ValueError(f"{where}: gantry tilt of {tilt:.1f} degrees (slices are sheared); correct the tilt "
                         f"first (e.g. dcm2niix does)")
    arr = np.stack([fr.pixels() for fr in frames])  # (slices, rows, cols)
    dr, dc = f0.spacing
    lps = np.eye(4)
    # Voxel (i=column, j=row, k=slice) -> LPS: columns run along the row direction, rows along the column one.
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = f0.row * dc, f0.col * dr, step, frames[0].position
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))), lps


def read_series(files: Sequence[str | os.PathLike], series: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Voxels ``(cols, rows, slices)`` in modality units, their RAS affine and a name for the source, of the chosen
    series among ``files`` (see :func:`choose_series`). MONOCHROME1 images are inverted (high values dark)."""
    pydicom = _pydicom()
    paths = [pathlib.Path(f) for f in files]
    where = str(paths[0].parent if len(paths) > 1 else paths[0]) if paths else "DICOM input"
    if not paths:
        raise ValueError("no DICOM files given")
    chosen = choose_series(list_series(paths), series, where)
    name = f"{where} series {chosen.description or chosen.uid}"
    frames, photometric = [], set()
    for f in chosen.files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as e:
            raise ValueError(f"{f}: not a readable DICOM file ({e})") from None
        if "PixelData" not in ds:
            continue
        photometric.add(str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")))
        frames.extend(_frames(f, ds))
    if len(frames) < 2:
        raise ValueError(f"{name}: one 2-D image is not a volume; give the whole series")
    if len(photometric) > 1:
        raise ValueError(f"{name}: mixed photometric interpretations {sorted(photometric)}")
    data, lps = stack(frames, name)
    if photometric == {"MONOCHROME1"}:  # minimum is white: invert so high values are bright, as everywhere else
        data = (data.max() + data.min() - data).astype(np.float32)
    elif not photometric <= {"MONOCHROME2"}:
        raise ValueError(f"{name}: {sorted(photometric)[0]} images are not grey-level scans")
    return data.astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, name
