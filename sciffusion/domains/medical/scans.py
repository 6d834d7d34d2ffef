"""From files to normalised training/inference inputs, the shared patch-training path, and tiled inference."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...diffusion import TiledDenoiser, derive_seed
from ...tasks.base import Flag, run_training
from ...training.data import DiffusionDataModule
from .cache import cache_cohort
from .cohort import Cohort, Subject, cohort_spacings, load_mask, load_subject, read_cohort
from .grids import resample_onto, same_grid, same_spacing, spacing_grid
from .intensity import IntensityNorm, foreground_mask
from .patches import PatchDataset, plan_tiles
from .volumes import Volume, check_mask, read_volume, write_volume

MEDICAL_DEFAULTS: dict[str, Any] = {
    "data": {"mask": None, "ct_window": None, "hemisphere": None, "percentiles": [0.5, 99.5], "patch": 32,
             "batch_size": 8, "augment": {"scale": 0.1, "bias": 0.15}, "cohort": None, "split": None,
             "resample": False, "series": None, "spacing": None, "cache_dtype": "float32"},
    "model": {"net": {"channels": [8, 16, 32], "num_res_blocks": 1}, "lr": 1e-3, "warmup_steps": 50,
              "ema_half_life": 50.0},
    "trainer": {"max_steps": 400, "checkpoint_every": 100, "val_every": 100},
    "memory_gb": 4.0,
}
# A scan whose voxels are more than this factor larger or smaller than the run's is not the data the run knows.
MAX_SPACING_RATIO = 3.0

COHORT_FLAGS = (
    Flag("--cohort", "data.cohort", "a cohort: a manifest (CSV/TSV: subject, one column per sequence, optional "
         "mask/label/split) or a pattern like bids/sub-{subject}/anat/sub-{subject}_{sequence}.nii.gz"),
    Flag("--split", "data.split", "only the cohort's subjects of this split (its split column)"),
    Flag("--resample", "data.resample", "resample a subject's sequences onto its first sequence's grid",
         nargs="?", const=True),
    Flag("--series", "data.series", "the DICOM series (SeriesInstanceUID or description) when a folder holds "
         "several"),
)
SCAN_TRAIN_FLAGS = (
    Flag("--data", "data.path", "training scans (NIfTI files or DICOM folders)", nargs="+"),
    Flag("--mask", "data.mask", "foreground masks (one, or one per scan); default: found from the data", nargs="+"),
    Flag("--hemisphere", "data.hemisphere", "train on patches of one hemisphere only: left or right"),
    Flag("--patch", "data.patch", "training patch size (voxels)", int),
    Flag("--ct-window", "data.ct_window", "CT: a window name (brain, soft_tissue, bone, lung)"),
    Flag("--spacing", "data.spacing", "voxel size (mm) the model works at (default: the cohort's median)", float,
         nargs=3),
    Flag("--memory-gb", "memory_gb", "memory budget of tiled whole-volume passes (GB)", float),
) + COHORT_FLAGS
SCAN_SAMPLE_FLAGS = (
    Flag("--data", "data.path", "the scan"),
    Flag("--mask", "data.mask", "its foreground mask (default: found from the data)"),
    Flag("--memory-gb", "memory_gb", "memory budget (GB)", float),
) + COHORT_FLAGS


@dataclass
class Scan:
    """A subject ready for the model: ``x`` normalised ``(C, X, Y, Z)`` (one channel per sequence) on the model's
    grid ``volume`` (the first sequence there), its foreground ``mask`` ``(X, Y, Z)`` and one normalisation per
    channel. ``inputs``: the sequences as read, on the input's own grid (default: ``volume``); ``resampled``:
    whether the model's grid differs from it (outputs go back there, :meth:`native`, :meth:`write`).

    A 3-D ``x`` is one channel; ``norm`` may be one :class:`IntensityNorm` or one per channel.
    """

    volume: Volume
    x: np.ndarray
    mask: np.ndarray
    norm: Any
    inputs: tuple[Volume, ...] = ()
    resampled: bool = False
    sequences: tuple[str, ...] = ()
    norms: list[IntensityNorm] = field(init=False)

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, np.float32)
        if self.x.ndim == 3:
            self.x = self.x[None]
        if self.x.ndim != 4 or self.x.shape[1:] != self.mask.shape:
            raise ValueError(f"scan voxels {self.x.shape} and mask {self.mask.shape} do not match (C, X, Y, Z)")
        self.norms = list(self.norm) if isinstance(self.norm, (list, tuple)) else [self.norm] * len(self.x)
        self.norm = self.norms[0]
        self.sequences = tuple(self.sequences) or tuple(f"channel{c}" for c in range(len(self.x)))
        self.inputs = tuple(self.inputs) or (self.volume,)

    @property
    def input(self) -> Volume:
        """The first sequence on the input's own grid."""
        return self.inputs[0]

    def native(self, data: np.ndarray, order: int = 1) -> np.ndarray:
        """A map ``(X, Y, Z)`` on the model grid, on the input's own grid."""
        if not self.resampled:
            return data
        return resample_onto(data, self.volume.affine, self.input.affine, self.input.data.shape, order)

    def write(self, path: str | os.PathLike, data: np.ndarray, *, dtype: Any = np.float32,
              descrip: str | None = None) -> pathlib.Path:
        """Write a map on the model grid as NIfTI on the input's grid, orientation and header (atomically)."""
        native = self.native(np.asarray(data, np.float32), order=0 if np.dtype(dtype).kind in "biu" else 1)
        return write_volume(path, native.astype(dtype), self.input, dtype=dtype, descrip=descrip)


def _as_volume(item: Volume | str | os.PathLike, series: str | None = None) -> Volume:
    return item if isinstance(item, Volume) else read_volume(item, series)


def prepare(volume: Volume | str | os.PathLike | Sequence[Volume | str | os.PathLike],
            mask: Volume | str | os.PathLike | np.ndarray | None = None, *,
            ct_window: str | Sequence[float] | None = None, percentiles: Sequence[float] = (0.5, 99.5),
            spacing: Sequence[float | None] | None = None, sequences: Sequence[str] = (),
            series: str | None = None) -> Scan:
    """Read (if paths), mask (given, or the foreground found in the first sequence) and normalise a scan: MRI by
    each sequence's own foreground percentiles, CT by a fixed Hounsfield window (``ct_window``: a name in
    :data:`~sciffusion.domains.medical.intensity.CT_WINDOWS` or ``(level, width)``). A list of volumes is one
    subject's sequences (channels), all on one grid.

    ``spacing``: the voxel size (mm) to work at; the scan is resampled (linearly) onto it unless it is there
    already (within 1%); an entry ``None`` keeps that axis. More than 3x from it is an error.
    """
    vols = [_as_volume(v, series) for v in (volume if isinstance(volume, (list, tuple)) else [volume])]
    ref = vols[0]
    for v in vols:
        if float(v.data.max()) == float(v.data.min()):
            raise ValueError(f"{v.path or 'volume'}: every voxel is {float(v.data.min()):g}; a constant volume "
                             f"holds no anatomy")
        if not same_grid(v.affine, v.data.shape, ref.affine, ref.data.shape):
            raise ValueError(f"{v.path or 'a sequence'} is on another grid than {ref.path or 'the first'}; "
                             f"resample it onto the first sequence's grid first")
    given: np.ndarray | None = None
    if isinstance(mask, np.ndarray):
        if mask.shape != ref.data.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the volume's {ref.data.shape}")
        given = mask.astype(bool)
    elif mask is not None:
        given = check_mask(_as_volume(mask), ref)
    inputs = tuple(vols)
    if spacing is not None:
        target = np.array([own if s is None else float(s) for s, own in zip(spacing, ref.spacing)])
        ratio = ref.spacing / target
        if (ratio > MAX_SPACING_RATIO).any() or (ratio < 1 / MAX_SPACING_RATIO).any():
            raise ValueError(f"{ref.path or 'scan'}: voxel spacing {np.round(ref.spacing, 3).tolist()} mm is more "
                             f"than {MAX_SPACING_RATIO:g}x from the run's {np.round(target, 3).tolist()} mm")
        if not same_spacing(ref.spacing, target):
            affine, shape = spacing_grid(ref.affine, ref.data.shape, target)
            vols = [Volume(resample_onto(v.data, v.affine, affine, shape), affine, v.source_affine,
                           v.source_shape, v.header, v.path) for v in vols]
            if given is not None:
                given = resample_onto(given.astype(np.float32), ref.affine, affine, shape) > 0.5
    m = foreground_mask(vols[0].data) if given is None else given
    if not m.any():
        raise ValueError(f"{ref.path or 'scan'}: the foreground mask is empty")
    norms = [IntensityNorm.ct(ct_window if isinstance(ct_window, str) else tuple(ct_window)) if ct_window  # type: ignore[arg-type]
             else IntensityNorm.fit(v.data, m, tuple(percentiles)) for v in vols]  # type: ignore[arg-type]
    x = np.stack([n(v.data, m) for n, v in zip(norms, vols)])
    return Scan(vols[0], x, m, norms, inputs, vols[0] is not ref, tuple(sequences))


def hemisphere(mask: np.ndarray, side: str | None, margin: int = 2) -> np.ndarray:
    """``mask`` restricted to one hemisphere of a canonical (RAS) scan: ``left`` is the low half of axis 0,
    ``right`` the high half, each ``margin`` voxels short of the mid-plane (the centre of the mask's extent)."""
    if side in (None, "both"):
        return mask
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    mid = 0.5 * (xs[0] + xs[-1])
    i = np.arange(mask.shape[0])[:, None, None]
    if side == "left":
        return mask & (i < mid - margin)
    if side == "right":
        return mask & (i > mid + margin)
    raise ValueError(f"hemisphere must be left, right or both; got {side!r}")


def _subject_id(path: Any, n: int) -> str:
    stem = pathlib.Path(str(path)).name.split(".nii")[0].split(".dcm")[0] if isinstance(path, (str, os.PathLike)) \
        else f"scan{n}"
    clean = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).lstrip("._-")
    return clean or f"scan{n}"


def config_cohort(config: dict[str, Any], training: bool = False) -> Cohort:
    """The subjects a medical command works on: ``data.cohort`` (a manifest, pattern or DataFrame; with a
    ``split`` column, training takes the ``train`` rows unless ``data.split`` names another), or the scans of
    ``data.path`` with their ``data.mask`` (one for all, or one per scan), one sequence each."""
    d = config["data"]
    if d.get("cohort") is not None and d.get("path") is not None:
        raise ValueError("give the scans with --data or a --cohort, not both")
    if d.get("cohort") is not None:
        cohort = read_cohort(d["cohort"], d.get("series"))
        split = d.get("split") or ("train" if training and any(s.split for s in cohort) else None)
        chosen = cohort.select(split)
        if not len(chosen):
            raise ValueError(f"cohort {cohort.source}: no subject in split {split!r}")
        return chosen
    if d.get("path") is None:
        raise ValueError("give the scans: --data FILE [FILE ...] or --cohort MANIFEST")
    paths = d["path"] if isinstance(d["path"], (list, tuple)) else [d["path"]]
    masks = d.get("mask")
    masks = [None] * len(paths) if masks is None else (masks if isinstance(masks, (list, tuple)) else [masks])
    if len(masks) not in (1, len(paths)):
        raise ValueError(f"give one --mask for all scans or one per scan; got {len(masks)} for {len(paths)}")
    masks = masks * len(paths) if len(masks) == 1 else masks
    subjects, seen = [], set()
    for n, (p, m) in enumerate(zip(paths, masks)):
        sid = _subject_id(p, n)
        sid = sid if sid not in seen else f"{sid}_{n}"
        seen.add(sid)
        subjects.append(Subject(sid, (("image", p),), m, where=f"--data {n + 1}"))
    return Cohort(subjects, ("image",), "--data", d.get("series"))


READ_OPTIONS = ("resample", "series")  # how to read inputs: a sampling verb's flags override the run's


def with_read_options(run_data: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """A run's ``data`` settings with the reading options a sampling command was given (``--resample``,
    ``--series``): how this cohort's files are read, not how the run prepares them."""
    return {**run_data, **{k: (given or {})[k] for k in READ_OPTIONS if (given or {}).get(k)}}


def prepare_subject(data_config: dict[str, Any], subject: Subject, series: str | None = None,
                    spacing: Sequence[float | None] | None = None) -> Scan:
    """A cohort subject prepared with a run's ``data`` settings (its sequences as channels, its mask); errors
    name the subject."""
    series = series if series is not None else data_config.get("series")
    vols = load_subject(subject, resample=bool(data_config.get("resample")), series=series)
    mask = subject.mask if isinstance(subject.mask, np.ndarray) else load_mask(subject, vols[0], series)
    try:
        return prepare_like(data_config, vols, mask, sequences=[n for n, _ in subject.sequences], spacing=spacing)
    except ValueError as e:
        raise subject.error(str(e)) from None


def prepare_like(data_config: dict[str, Any], volume: Any, mask: Any = None, *, sequences: Sequence[str] = (),
                 spacing: Sequence[float | None] | None = None) -> Scan:
    """:func:`prepare` with a run's ``data`` settings (CT window, MRI percentiles, the spacing it works at), so
    training, calibration and inference scans are prepared the same way. ``spacing`` overrides the run's."""
    return prepare(volume, mask, ct_window=data_config.get("ct_window"),
                   percentiles=data_config.get("percentiles", (0.5, 99.5)),
                   spacing=data_config.get("spacing") if spacing is None else spacing, sequences=sequences,
                   series=data_config.get("series"))


def check_sequences(run_sequences: Sequence[str] | None, cohort: Cohort) -> None:
    """A cohort given to a trained run has its sequences, in its order (a run trained on single scans takes any
    one-sequence cohort)."""
    if run_sequences is None:
        run_sequences = ("image",)
    ours, theirs = list(run_sequences), list(cohort.sequences)
    generic = ours == ["image"] or theirs == ["image"]
    if len(ours) != len(theirs) or (ours != theirs and not generic):
        raise ValueError(f"the run was trained on sequences {ours}; {cohort.source} has {theirs}")


def training_cohort(config: dict[str, Any]) -> tuple[dict[str, Any], Cohort]:
    """The training subjects and the config with ``data.spacing`` resolved: given, or the cohort's median voxel
    size (so every patch covers the same physical size); stored with the run, used for every later scan."""
    cohort = config_cohort(config, training=True)
    d = dict(config["data"])
    if d.get("spacing") is None:
        d["spacing"] = [float(v) for v in np.median(cohort_spacings(cohort), axis=0)]
    return {**config, "data": d}, cohort


def train_on_patches(config: dict[str, Any], cohort: Cohort, crop_shape: Sequence[int],
                     make: Callable | None, net: dict[str, Any], metadata: dict[str, Any],
                     calibrate: Callable | None = None) -> Any:
    """The medical training path: every subject prepared once into the run's cache folder (memory-mapped, so the
    cohort need not fit in memory), random patches inside each subject's (hemisphere-restricted) mask, a fixed set
    of validation patches, then the shared :func:`~sciffusion.tasks.base.run_training`. ``config`` comes from
    :func:`training_cohort`."""
    d, seed = config["data"], int(config["seed"])
    settings = {k: d.get(k) for k in ("ct_window", "percentiles", "spacing", "resample", "series", "hemisphere")}
    cached = cache_cohort(cohort, pathlib.Path(config["out"]) / "cache",
                          lambda s: prepare_subject(d, s), lambda m: hemisphere(m, d.get("hemisphere")), settings,
                          str(d.get("cache_dtype") or "float32"), progress=_progress("cache"))
    b = int(d["batch_size"])
    vols, masks, centres = [c.x for c in cached], [c.mask for c in cached], [c.centres for c in cached]
    kw = dict(centres=centres, make=make, augment=d.get("augment"))
    train = PatchDataset(vols, masks, crop_shape, int(config["trainer"]["max_steps"]) * b, seed, **kw)
    val = PatchDataset(vols, masks, crop_shape, 4 * b, derive_seed(seed, "validation"), **kw)
    dm = DiffusionDataModule(train, val, batch_size=b, num_workers=int(d.get("num_workers", 0)), seed=seed)
    meta = {"spacing": [float(v) for v in d["spacing"]], "patch": int(d["patch"]),
            "sources": [c.info["source"] for c in cached], "normalisation": cached[0].info["normalisation"],
            "sequences": list(cohort.sequences), "subjects": len(cached), **metadata}
    return run_training(config, dm, {"dims": 3, "in_channels": len(cohort.sequences), **net}, meta,
                        calibrate=calibrate)


def _progress(desc: str) -> Callable[[Sequence[Any]], Any]:
    def bar(items: Sequence[Any]) -> Any:
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=len(items) < 2, leave=False)

    return bar


def tiled(denoiser: Any, net: dict[str, Any], shape: Sequence[int], memory_gb: float,
          device: torch.device | str | None = None) -> TiledDenoiser:
    """``denoiser`` over whole volumes of ``shape`` in tiles sized by the memory budget (GB), the tiles computed on
    ``device`` (default: where the volume is)."""
    patch, batch = plan_tiles(memory_gb, net, shape)
    return TiledDenoiser(denoiser, patch, patch // 4, batch, device=device)


def as_batch(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Scan voxels ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) as a batch of one ``(1, C, X, Y, Z)``."""
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)
    return t[None] if t.ndim == 4 else t[None, None]
