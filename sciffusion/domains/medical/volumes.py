"""Volumes in and out: NIfTI (nibabel) and DICOM series (pydicom), kept in canonical RAS orientation inside
sciffusion and written back in the input's own orientation, affine and header, so outputs overlay on the input.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...training.checkpoint import atomic_write


def _nib():
    try:
        import nibabel
    except ImportError:
        raise ImportError("medical volumes need nibabel: pip install 'sciffusion[medical]'") from None
    return nibabel


@dataclass
class Volume:
    """A 3-D scan in canonical RAS orientation.

    Attributes:
        data: ``(X, Y, Z)`` float32 voxels (axis 0 runs to the Right, 1 Anterior, 2 Superior).
        affine: 4x4 voxel -> world (mm, RAS) matrix of ``data``.
        source_affine, source_shape, header: the file's own affine, array shape and NIfTI header, used to write
            outputs back in the input's orientation.
        path: where it came from.
    """

    data: np.ndarray
    affine: np.ndarray
    source_affine: np.ndarray
    source_shape: tuple[int, ...]
    header: Any = None
    path: str = ""

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along each canonical axis."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def like(self, data: np.ndarray, affine: np.ndarray | None = None) -> Volume:
        """A volume with new voxels (and optionally a new canonical affine) but this one's header."""
        return Volume(np.asarray(data, np.float32), self.affine if affine is None else affine,
                      self.source_affine if affine is None else affine, tuple(data.shape), self.header, self.path)


def _from_image(img: Any, path: str) -> Volume:
    nib = _nib()
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3 or min(img.shape) < 2:
        raise ValueError(f"{path}: shape {tuple(shape)} is not a 3-D volume (a 2-D slice or a 4-D series was given)")
    canon = nib.as_closest_canonical(img)
    data = np.asarray(canon.get_fdata(dtype=np.float32))
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: {int((~np.isfinite(data)).sum())} voxels are NaN or infinite; fill or mask"
                         f" them first")
    return Volume(data, canon.affine.copy(), img.affine.copy(), tuple(img.shape), img.header.copy(), path)


def read_volume(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Volume:
    """Read a NIfTI file (``.nii``/``.nii.gz``), a DICOM series (a folder of ``.dcm`` files or a list of them)
    or a single multi-frame DICOM file, as a canonical :class:`Volume`.

    Errors name the problem: a missing file, a 2-D or 4-D image, NaN voxels, a DICOM series with missing or
    unevenly spaced slices.
    """
    if isinstance(path, (list, tuple)):
        return read_dicom(path)
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"volume {p} does not exist")
    if p.is_dir() or p.suffix.lower() in (".dcm", ".ima") or _is_dicom(p):
        return read_dicom(sorted(p.glob("*")) if p.is_dir() else [p])
    try:
        img = _nib().load(str(p))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ValueError(f"{p}: not a readable NIfTI volume ({e})") from None
    return _from_image(img, str(p))


def _is_dicom(p: pathlib.Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(files: Sequence[str | os.PathLike]) -> Volume:
    """A DICOM series (one slice per file, sorted by position along the slice normal) or one multi-frame file.

    The affine is built from ImageOrientationPatient, ImagePositionPatient and PixelSpacing (DICOM's LPS turned
    into RAS); RescaleSlope/Intercept are applied (CT in Hounsfield units). Slices must be evenly spaced.
    """
    try:
        import pydicom
    except ImportError:
        raise ImportError("DICOM input needs pydicom: pip install 'sciffusion[medical]'") from None
    files = [pathlib.Path(f) for f in files if pathlib.Path(f).is_file()]
    if not files:
        raise ValueError("no DICOM files given")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as e:
            raise ValueError(f"{f}: not a readable DICOM file ({e})") from None
        if "PixelData" in ds:
            slices.append((f, ds))
    if not slices:
        raise ValueError(f"none of the {len(files)} DICOM files holds pixel data")
    f0, ds0 = slices[0]
    try:
        row, col = (np.array(ds0.ImageOrientationPatient[:3], float), np.array(ds0.ImageOrientationPatient[3:], float))
        dr, dc = (float(v) for v in ds0.PixelSpacing)
    except AttributeError as e:
        raise ValueError(f"{f0}: DICOM without image geometry ({e}); cannot build an affine") from None
    normal = np.cross(row, col)
    frames = int(getattr(ds0, "NumberOfFrames", 1) or 1)
    if len(slices) == 1 and frames == 1:
        raise ValueError(f"{f0}: one 2-D DICOM slice is not a volume; give the whole series (a folder)")

    def scale(ds, a):
        return a * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)

    if len(slices) == 1:  # multi-frame: frames along the normal, spaced by SpacingBetweenSlices/SliceThickness
        arr = scale(ds0, ds0.pixel_array.astype(np.float32))  # (frames, rows, cols)
        dz = float(getattr(ds0, "SpacingBetweenSlices", None) or getattr(ds0, "SliceThickness", 1.0))
        origin = np.array(ds0.ImagePositionPatient, float)
    else:
        pos = [(float(np.dot(np.array(ds.ImagePositionPatient, float), normal)), f, ds) for f, ds in slices]
        pos.sort(key=lambda t: t[0])
        z = np.array([p for p, _, _ in pos])
        gaps = np.diff(z)
        if (gaps <= 1e-6).any():
            raise ValueError(f"DICOM series has {int((gaps <= 1e-6).sum())} duplicated slice positions")
        dz = float(np.median(gaps))
        if not np.allclose(gaps, dz, rtol=0.05):
            missing = int(round((z[-1] - z[0]) / dz)) + 1 - len(z)
            raise ValueError(f"DICOM series has uneven slice spacing: {missing} slice(s) missing between "
                             f"{z[0]:.1f} and {z[-1]:.1f} mm (spacing {dz:.2f} mm)")
        arr = np.stack([scale(ds, ds.pixel_array.astype(np.float32)) for _, _, ds in pos])
        origin = np.array(pos[0][2].ImagePositionPatient, float)
    # Voxel (i=column, j=row, k=slice) -> LPS; then LPS -> RAS flips x and y.
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, normal * dz, origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))  # (frames, rows, cols) -> (cols, rows, frames)
    nib = _nib()
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    return _from_image(img, str(f0.parent if len(slices) > 1 else f0))


def write_volume(path: str | os.PathLike, data: np.ndarray, reference: Volume, *, dtype: Any = np.float32,
                 affine: np.ndarray | None = None) -> pathlib.Path:
    """Write canonical ``data`` ``(X, Y, Z)`` as NIfTI in ``reference``'s own orientation, affine and header
    (atomically). ``affine``: the canonical affine of ``data`` if it is not on the reference grid (e.g. a
    super-resolved volume); the output then has the reference's orientation with that grid.
    """
    nib = _nib()
    path = pathlib.Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"output {path} must end in .nii or .nii.gz")
    data = np.asarray(data)
    canon_affine = reference.affine if affine is None else affine
    if affine is None and data.shape != reference.data.shape:
        raise ValueError(f"data shape {data.shape} does not match the reference volume {reference.data.shape}")
    # Canonical -> the reference's own axis order and directions.
    src_ornt = nib.orientations.io_orientation(reference.source_affine)
    canon_ornt = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(canon_ornt, src_ornt)
    out = nib.orientations.apply_orientation(data, back)
    out_affine = canon_affine @ nib.orientations.inv_ornt_aff(back, data.shape)
    header = reference.header.copy() if isinstance(reference.header, nib.Nifti1Header) else None
    img = nib.Nifti1Image(out.astype(dtype), out_affine, header)
    img.set_qform(out_affine, code=int(header["qform_code"]) or 1 if header is not None else 1)
    img.set_sform(out_affine, code=int(header["sform_code"]) or 1 if header is not None else 1)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    return save_nifti(path, img)


def save_nifti(path: str | os.PathLike, img: Any) -> pathlib.Path:
    """Save a nibabel image atomically (a killed job leaves the old file or none)."""
    path = pathlib.Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"

    def write(tmp: str) -> None:  # nibabel picks the format from the suffix
        _nib().save(img, tmp + suffix)
        os.replace(tmp + suffix, tmp)

    atomic_write(path, write)
    return path


def check_mask(mask: Volume, volume: Volume, name: str = "mask") -> np.ndarray:
    """A boolean mask on ``volume``'s grid: same shape and affine (to 1e-3 mm), else a one-line error."""
    if mask.data.shape != volume.data.shape:
        raise ValueError(f"{name} shape {mask.data.shape} does not match the volume's {volume.data.shape}")
    if not np.allclose(mask.affine, volume.affine, atol=1e-3):
        raise ValueError(f"{name} affine differs from the volume's (resample it onto the scan's grid first)")
    m = mask.data > 0.5
    if not m.any():
        raise ValueError(f"{name} is empty")
    return m
