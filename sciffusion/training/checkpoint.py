"""Run directories: atomic writes, tensors-only files, and a manifest that proves a run is whole.

A run directory holds ``weights.safetensors``, ``ema.safetensors`` (optional), ``normalizer.safetensors``
(optional), ``config.json``, ``metadata.json`` (coordinates, variables, anything a task needs to write outputs) and,
written last, ``run.json``: the package version and the SHA-256 of every file. A run killed mid-write has no
``run.json`` (or an old one whose hashes no longer match), so it is refused with a clear error instead of being half
read. Nothing here unpickles: tensors go through safetensors, and :func:`load_tensors` reads legacy ``.pt`` files
with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from glob import escape as glob_escape
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._version import __version__

MANIFEST = "run.json"
# The run format: bumped whenever what a run directory holds, or how its config is read, changes. Older formats are
# migrated on load by :func:`migrate_config` (the one place that knows them); newer ones are refused.
FORMAT = 2


class RunError(ValueError):
    """A run directory that is missing, incomplete, tampered with, or from an incompatible version."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the temp files that writers of ``path`` killed mid-write (SIGKILL, power loss) left beside it:
    ``.NAME.PID.XXXX.tmp`` files, and the ``.NAME.PID.tmp.zarr`` / ``.NAME.PID.old.zarr`` stores of a batched
    writer, whose process ``PID`` is gone. A live writer's are kept. Returns what it removed."""
    path = pathlib.Path(path)
    removed = []
    name = glob_escape(path.name)
    for pattern in (f".{name}.*.tmp", f".{name}.*.tmp.zarr", f".{name}.*.old.zarr"):
        for tmp in path.parent.glob(pattern):
            pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[str], None]) -> None:
    """Write ``data`` (bytes, or a function that writes a file at the temp path it is given) to ``path`` atomically:
    temp file in the same directory, fsync, rename, fsync of the directory. Readers see the old file or the new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_safetensors(data: bytes, path: pathlib.Path) -> dict[str, Tensor]:
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise RunError(f"{path} is not a valid safetensors file: {e}") from None


def _tensors_bytes(tensors: dict[str, Tensor]) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def source_label(obj: Any) -> str:
    """How a run's files name its data: a path as it is; an in-memory object (an ``xarray.Dataset``, a
    ``pandas.DataFrame``, an array) by its type and size, not by its repr (thousands of characters of values)."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return ", ".join(source_label(o) for o in obj)
    size = getattr(obj, "sizes", None) or getattr(obj, "shape", None)
    kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    return f"<in-memory {kind}{'' if size is None else ' ' + str(dict(size) if hasattr(size, 'items') else size)}>"


def save_run(run_dir: str | os.PathLike, *, weights: dict[str, Tensor], config: dict[str, Any],
             ema: dict[str, Tensor] | None = None, normalizer: dict[str, Tensor] | None = None,
             metadata: dict[str, Any] | None = None, state: dict[str, Tensor] | None = None) -> pathlib.Path:
    """Write a whole run directory; ``run.json`` goes last, so its presence means every other file is complete.
    ``state`` holds a task's other fitted tensors (climatology, regression coefficients, static fields)."""
    run = pathlib.Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "weights.safetensors": _tensors_bytes(weights),
        "config.json": json.dumps(config, indent=2, sort_keys=True, default=source_label).encode(),
        "metadata.json": json.dumps(metadata or {}, indent=2, sort_keys=True, default=source_label).encode(),
    }
    if ema is not None:
        files["ema.safetensors"] = _tensors_bytes(ema)
    if normalizer is not None:
        files["normalizer.safetensors"] = _tensors_bytes(normalizer)
    if state is not None:
        files["state.safetensors"] = _tensors_bytes(state)
    (run / MANIFEST).unlink(missing_ok=True)  # from here until the end, the run reads as incomplete
    for name, data in files.items():
        atomic_write(run / name, data)
    manifest = {"format": FORMAT, "sciffusion_version": __version__,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    atomic_write(run / MANIFEST, json.dumps(manifest, indent=2).encode())
    return run


def _major(version: str) -> int | None:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else None


def migrate_config(config: dict[str, Any], fmt: int) -> dict[str, Any]:
    """A run config of format ``fmt`` as the current format reads it.

    Format 1 (sciffusion 0.1): a ``sampling`` section without ``exact_gaussian`` sampled with the plain solver, and
    a ``superres`` section without ``base`` added its residual to linear interpolation; both are made explicit, so
    the defaults of new runs never change what an old run draws.
    """
    config = dict(config)
    if fmt < 2:
        if isinstance(config.get("sampling"), dict):
            config["sampling"] = {"exact_gaussian": False, **config["sampling"]}
        if isinstance(config.get("superres"), dict):
            config["superres"] = {"base": "linear", **config["superres"]}
    return config


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    run = pathlib.Path(run_dir)
    if not run.is_dir():
        raise RunError(f"run directory {run} does not exist")
    try:
        manifest = json.loads((run / MANIFEST).read_text())
    except FileNotFoundError:
        raise RunError(f"{run} is not a complete sciffusion run (no {MANIFEST}: interrupted or not a run "
                       "dir)") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{run / MANIFEST} is not valid JSON: {e.msg}") from None
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or not 1 <= fmt <= FORMAT:
        raise RunError(f"{run} has run format {fmt!r}; this sciffusion reads formats 1 to {FORMAT}")
    theirs = str(manifest.get("sciffusion_version", "?"))
    if _major(theirs) != _major(__version__):
        raise RunError(f"{run} was written by sciffusion {theirs}, incompatible with this {__version__}")
    return manifest


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a run directory. Returns ``{"weights", "ema", "normalizer", "state", "config", "metadata",
    "manifest"}`` (absent parts are None)."""
    run = pathlib.Path(run_dir)
    manifest = read_manifest(run)
    out: dict[str, Any] = {"manifest": manifest, "ema": None, "normalizer": None, "state": None}
    for name, digest in manifest["files"].items():
        path = run / name
        try:
            data = path.read_bytes()  # read once: hashed and parsed from the same bytes
        except FileNotFoundError:
            raise RunError(f"{run} is missing {name}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise RunError(f"{path} does not match its checksum in {MANIFEST} (modified or corrupted)")
        key = name.split(".")[0]
        try:
            out[key] = _read_safetensors(data, path) if name.endswith(".safetensors") else json.loads(data)
        except json.JSONDecodeError as e:
            raise RunError(f"{path} is not valid JSON: {e.msg}") from None
    if isinstance(out.get("config"), dict):
        out["config"] = migrate_config(out["config"], manifest["format"])
    return out


def load_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a tensors-only file (``.safetensors``, or a ``.pt``/``.ckpt`` via ``torch.load(weights_only=True)``).
    A file that would need arbitrary unpickling (code objects, classes) is refused, never executed."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path.read_bytes(), path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"refusing to load {path}: not a plain tensor file ({first[:160]})") from None


def run_family(config: dict[str, Any]) -> str:
    """The model family a run ``config`` was trained as: ``diffusion`` (also for runs made before families),
    ``flow`` or ``crps``."""
    return str(config.get("model", {}).get("family") or "diffusion")


def require_noise_levels(config: dict[str, Any], what: str) -> None:
    """Refuse ``what`` (which needs a denoiser at every noise level) for a run ``config`` of the ``crps`` family."""
    if run_family(config) == "crps":
        raise ValueError(f"{what} needs a diffusion or flow run: a CRPS-trained generator has no noise levels")
