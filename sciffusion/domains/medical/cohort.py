"""Cohorts: many subjects, each with one or more sequences (T1, T2, FLAIR, CT...) that become channels.

A cohort comes from a manifest (CSV or TSV, one row per subject; reserved columns ``subject``, ``mask``,
``label``, ``split``; every other column is a sequence, in column order; relative paths are relative to the
manifest), from a pandas DataFrame of the same shape, or from a BIDS-like folder pattern::

    bids/sub-{subject}/anat/sub-{subject}_{sequence}.nii.gz

(``{subject}`` and ``{sequence}`` match one path component's text each; a sequence named ``mask`` is the
subject's mask; a folder with ``sub-*`` subfolders uses the pattern above). Every subject must have every
sequence. Errors name the manifest row (or the subject) and what is wrong with it.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .grids import resample_onto, same_grid
from .volumes import Volume, read_volume

RESERVED = ("subject", "mask", "label", "split")
BIDS_PATTERN = "sub-{subject}/anat/sub-{subject}_{sequence}.nii*"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Subject:
    """One subject: ``sequences`` (name, path or :class:`Volume`) in channel order, an optional ``mask``,
    ``label`` (a class name, or the path of a lesion mask on the subject's grid) and ``split``; ``where`` says where
    it was defined (for errors)."""

    id: str
    sequences: tuple[tuple[str, Any], ...]
    mask: Any = None
    label: str | None = None
    split: str | None = None
    where: str = ""

    def error(self, problem: str) -> ValueError:
        return ValueError(f"{self.where or 'subject'} ({self.id}): {problem}")


@dataclass
class Cohort:
    """Subjects sharing one list of ``sequences`` (channel names)."""

    subjects: list[Subject]
    sequences: tuple[str, ...]
    source: str = ""
    series: str | None = field(default=None)  # DICOM series to take from every subject's folders

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def select(self, split: str | None) -> Cohort:
        """The subjects of one ``split`` (``None``: all)."""
        if split is None:
            return self
        return replace(self, subjects=[s for s in self.subjects if s.split == split])

    def paths(self) -> list[Any]:
        """Every file of the cohort (what identifies its data)."""
        return [p for s in self.subjects for _, p in s.sequences] + [s.mask for s in self.subjects if s.mask]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def _check_id(subject: str, where: str) -> str:
    if not _SAFE_ID.match(subject):
        raise ValueError(f"{where}: subject id {subject!r} must be letters, digits, '.', '_' or '-' (it names the "
                         f"output files)")
    return subject


def from_frame(frame: Any, base: str | os.PathLike | None = None, source: str = "manifest") -> Cohort:
    """A cohort from a table (pandas DataFrame) with a ``subject`` column and one column per sequence."""
    columns = [str(c).strip() for c in frame.columns]
    if "subject" not in columns:
        raise ValueError(f"{source}: no 'subject' column (columns: {', '.join(columns)})")
    sequences = tuple(c for c in columns if c not in RESERVED)
    if not sequences:
        raise ValueError(f"{source}: no sequence column besides {', '.join(c for c in columns if c in RESERVED)}")
    root = pathlib.Path(base) if base is not None else None
    subjects, seen = [], set()
    for n, row in enumerate(frame.itertuples(index=False), start=2):  # row 1 is the header
        values = dict(zip(columns, row))
        where = f"{source} row {n}"
        if _missing(values["subject"]):
            raise ValueError(f"{where}: empty subject id")
        sid = _check_id(str(values["subject"]).strip(), where)
        if sid in seen:
            raise ValueError(f"{where}: subject {sid!r} appears twice")
        seen.add(sid)

        def path(col: str) -> Any:
            v = values[col]
            if isinstance(v, Volume):
                return v
            if _missing(v):
                raise ValueError(f"{where} ({sid}): no file for {col}")
            p = pathlib.Path(str(v).strip())
            p = p if p.is_absolute() or root is None else root / p
            if not p.exists():
                raise ValueError(f"{where} ({sid}): {col} file {p} does not exist")
            return p

        mask = None if "mask" not in values or _missing(values["mask"]) else path("mask")
        text = lambda k: None if k not in values or _missing(values[k]) else str(values[k]).strip()  # noqa: E731
        label = text("label")
        if label is not None and root is not None and (root / label).is_file():
            label = str(root / label)  # a lesion mask: made absolute, as the sequences' paths
        subjects.append(Subject(sid, tuple((c, path(c)) for c in sequences), mask, label, text("split"), where))
    if not subjects:
        raise ValueError(f"{source}: the manifest lists no subject")
    return Cohort(subjects, sequences, source)


def read_manifest(path: str | os.PathLike) -> Cohort:
    """A cohort from a CSV or TSV manifest (tab-separated when the name ends in ``.tsv`` or the header has tabs)."""
    import pandas as pd

    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"cohort manifest {p} does not exist")
    with open(p, encoding="utf-8") as f:
        header = f.readline()
    sep = "\t" if p.suffix.lower() == ".tsv" or "\t" in header else ","
    try:
        frame = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, comment="#")
    except Exception as e:  # pandas raises ParserError, UnicodeDecodeError...
        raise ValueError(f"{p}: not a readable manifest ({e})") from None
    return from_frame(frame, p.parent, p.name)


def from_pattern(pattern: str) -> Cohort:
    """A cohort from a path pattern with ``{subject}`` (and ``{sequence}``) placeholders; see the module doc."""
    if "{subject}" not in pattern:
        raise ValueError(f"cohort pattern {pattern!r} needs a {{subject}} placeholder")
    p = pathlib.Path(pattern)
    anchor = pathlib.Path(*[part for part in p.parts[:next(i for i, q in enumerate(p.parts) if "{" in q)]] or ["."])
    rest = str(p.relative_to(anchor)) if anchor != pathlib.Path(".") else str(p)
    glob = re.sub(r"\{(subject|sequence)\}", "*", rest)
    regex, used = "", set()
    for piece in re.split(r"(\{subject\}|\{sequence\})", rest):
        name = piece[1:-1] if piece in ("{subject}", "{sequence}") else None
        if name is None:
            regex += re.escape(piece).replace(r"\*", "[^/]*")
        elif name in used:
            regex += f"(?P={name})"
        else:
            regex += f"(?P<{name}>[^/]+?)"
            used.add(name)
    found: dict[str, dict[str, pathlib.Path]] = {}
    for f in sorted(anchor.glob(glob)):
        m = re.fullmatch(regex, f.relative_to(anchor).as_posix())
        if m:
            seq = m.groupdict().get("sequence", "image")
            found.setdefault(m["subject"], {})[seq.split(".nii")[0]] = f
    if not found:
        raise ValueError(f"cohort pattern {pattern!r} matches no file")
    sequences = tuple(sorted({s for v in found.values() for s in v} - {"mask"}))
    subjects = []
    for sid, files in sorted(found.items()):
        where = f"{pattern} subject {sid}"
        lacking = [s for s in sequences if s not in files]
        if lacking:
            raise ValueError(f"{where}: no file for {', '.join(lacking)}")
        subjects.append(Subject(_check_id(sid, where), tuple((s, files[s]) for s in sequences), files.get("mask"),
                                where=where))
    return Cohort(subjects, sequences, pattern)


def read_cohort(source: Any, series: str | None = None) -> Cohort:
    """A :class:`Cohort` from a manifest path, a pattern, a BIDS-like folder, a DataFrame or a cohort."""
    if isinstance(source, Cohort):
        return source if series is None else replace(source, series=series)
    if hasattr(source, "itertuples"):
        return replace(from_frame(source, source="DataFrame"), series=series)
    text = str(source)
    if "{subject}" in text:
        cohort = from_pattern(text)
    elif pathlib.Path(text).is_dir():
        if not any(pathlib.Path(text).glob("sub-*")):
            raise ValueError(f"{text}: a cohort folder needs sub-* subject folders (BIDS), or give a manifest")
        cohort = from_pattern(str(pathlib.Path(text) / BIDS_PATTERN))
    else:
        cohort = read_manifest(text)
    return replace(cohort, series=series)


def load_subject(subject: Subject, *, resample: bool = False, series: str | None = None) -> list[Volume]:
    """A subject's sequences as volumes on one grid: the first sequence's. Sequences on other grids are an error
    naming them, or (``resample``) linearly interpolated onto the first one's grid."""
    vols = []
    for name, item in subject.sequences:
        try:
            vols.append(item if isinstance(item, Volume) else read_volume(item, series))
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise subject.error(f"{name}: {e}") from None
    ref = vols[0]
    for (name, _), v in zip(subject.sequences[1:], vols[1:]):
        if same_grid(v.affine, v.data.shape, ref.affine, ref.data.shape):
            continue
        if not resample:
            first = subject.sequences[0][0]
            raise subject.error(f"{name} is on another grid than {first} (shape {v.data.shape} vs "
                                f"{ref.data.shape}, spacing {np.round(v.spacing, 3).tolist()} vs "
                                f"{np.round(ref.spacing, 3).tolist()} mm); pass --resample to resample it onto "
                                f"{first}'s grid")
    return [v if same_grid(v.affine, v.data.shape, ref.affine, ref.data.shape)
            else ref.like(resample_onto(v.data, v.affine, ref.affine, ref.data.shape)) for v in vols]


def load_mask(subject: Subject, reference: Volume, series: str | None = None) -> Volume | None:
    if subject.mask is None:
        return None
    try:
        return subject.mask if isinstance(subject.mask, Volume) else read_volume(subject.mask, series)
    except (ValueError, FileNotFoundError) as e:
        raise subject.error(f"mask: {e}") from None


def cohort_spacings(cohort: Cohort | Sequence[Subject]) -> np.ndarray:
    """``(subjects, 3)`` voxel sizes (mm, canonical axes) of each subject's first sequence, from headers only for
    NIfTI files (DICOM folders are read)."""
    return np.array([header_spacing(s.sequences[0][1]) for s in cohort])


def header_spacing(item: Any) -> np.ndarray:
    if isinstance(item, Volume):
        return item.spacing
    p = pathlib.Path(item)
    if p.is_file() and p.name.endswith((".nii", ".nii.gz")):
        from .volumes import nibabel_module

        nib = nibabel_module()
        try:
            img = nib.load(str(p))
        except Exception as e:  # nibabel raises several types for unreadable files
            raise ValueError(f"{p}: not a readable NIfTI volume ({e})") from None
        ornt = nib.orientations.io_orientation(img.affine)
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        return np.array([zooms[int(np.flatnonzero(ornt[:, 0] == a)[0])] for a in range(3)])
    return read_volume(p).spacing
