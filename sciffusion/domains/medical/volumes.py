"""Volumes in and out: NIfTI (nibabel) and DICOM series (pydicom), kept in canonical RAS orientation inside
sciffusion and written back in the input's own orientation, affine and header, so outputs overlay on the input.
"""

from __future__ import annotations

import os
import pathlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...training.checkpoint import atomic_write


def nibabel_module():
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
    nib = nibabel_module()
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3 or min(img.shape) < 2:
        raise ValueError(f"{path}: shape {tuple(shape)} is not a 3-D volume (a 2-D slice or a 4-D series was given)")
    canon = nib.as_closest_canonical(img)
    try:
        data = np.asarray(canon.get_fdata(dtype=np.float32))  # nibabel reads the voxels here, not at load()
    except (EOFError, OSError, ValueError, zlib.error) as e:
        raise ValueError(f"{path}: the voxel data are truncated or corrupt ({e})") from None
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: {int((~np.isfinite(data)).sum())} voxels are NaN or infinite; fill or mask"
                         f" them first")
    return Volume(data, canon.affine.copy(), img.affine.copy(), tuple(img.shape), img.header.copy(), path)


def read_volume(path: str | os.PathLike | Sequence[str | os.PathLike], series: str | None = None) -> Volume:
    """Read a NIfTI file (``.nii``/``.nii.gz``), a DICOM folder or file list (``series``: the SeriesInstanceUID
    or description to take when the folder holds several; see :mod:`~sciffusion.domains.medical.dicom`) or one
    multi-frame DICOM file, as a canonical :class:`Volume`.

    Errors name the problem: a missing file, a 2-D or 4-D image, NaN voxels, a DICOM folder with several or no
    volume series, gantry tilt, missing or unevenly spaced slices.
    """
    if isinstance(path, (list, tuple)):
        return read_dicom(path, series)
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"volume {p} does not exist")
    if p.is_dir() or p.suffix.lower() in (".dcm", ".ima") or _is_dicom(p):
        return read_dicom(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p], series)
    try:
        img = nibabel_module().load(str(p))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ValueError(f"{p}: not a readable NIfTI volume ({e})") from None
    return _from_image(img, str(p))


def _is_dicom(p: pathlib.Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(files: Sequence[str | os.PathLike], series: str | None = None) -> Volume:
    """One DICOM series among ``files`` as a canonical :class:`Volume` (DICOM's LPS turned into RAS; rescale
    slope/intercept applied, so CT is in Hounsfield units). See :func:`~sciffusion.domains.medical.dicom.read_series`.
    """
    from .dicom import read_series

    data, affine, name = read_series(files, series)
    img = nibabel_module().Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    return _from_image(img, name)


def write_volume(path: str | os.PathLike, data: np.ndarray, reference: Volume, *, dtype: Any = np.float32,
                 affine: np.ndarray | None = None, descrip: str | None = None) -> pathlib.Path:
    """Write canonical ``data`` ``(X, Y, Z)`` as NIfTI in ``reference``'s own orientation, affine and header
    (atomically). ``affine``: the canonical affine of ``data`` if it is not on the reference grid (e.g. a
    super-resolved volume); the output then has the reference's orientation with that grid. The header's display
    range (``cal_min``/``cal_max``, the input's) is reset and ``descrip`` (what made the map; 79 bytes) set.
    """
    nib = nibabel_module()
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
    img.header["cal_min"], img.header["cal_max"] = 0.0, 0.0  # the input's display window does not fit a derived map
    if descrip is not None:
        img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    return save_nifti(path, img)


def tagged(path: str | os.PathLike, tag: str) -> pathlib.Path:
    """``scores.nii.gz`` -> ``scores_TAG.nii.gz``."""
    p = pathlib.Path(path)
    suffix = ".nii.gz" if p.name.endswith(".nii.gz") else p.suffix
    return p.with_name(p.name[: len(p.name) - len(suffix)] + f"_{tag}{suffix}")


def save_nifti(path: str | os.PathLike, img: Any) -> pathlib.Path:
    """Save a nibabel image atomically (a killed job leaves the old file or none)."""
    path = pathlib.Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"

    def write(tmp: str) -> None:  # nibabel picks the format from the suffix
        nibabel_module().save(img, tmp + suffix)
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
