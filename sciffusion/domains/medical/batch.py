"""Running a trained model over a cohort: one subject at a time with a progress bar, outputs named after the
subject, a CSV table of one row per subject. Resumable and safe under interruption: every output is written
atomically and a subject's row last (in ``DIR/.done/``), so a subject with a row is complete and is skipped when
the command is run again; the table is rebuilt from the rows at the end."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from ...training.checkpoint import atomic_write
from .cohort import Cohort, Subject

DONE = ".done"


def nifti_name(folder: pathlib.Path, subject: str, tag: str) -> pathlib.Path:
    return folder / f"{subject}_{tag}.nii.gz"


def each_subject(cohort: Cohort, out: str | os.PathLike, work: Callable[[Subject, pathlib.Path], dict[str, Any]],
                 table: str, desc: str, progress: bool = True) -> pathlib.Path:
    """``work(subject, out) -> row`` for every subject without a row yet; returns the table ``out/table``."""
    folder = pathlib.Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} must be a folder when the input is a cohort")
    (folder / DONE).mkdir(parents=True, exist_ok=True)
    rows = []
    for subject in tqdm(cohort.subjects, desc=desc, disable=not progress, unit="subject"):
        done = folder / DONE / f"{subject.id}.json"
        if done.exists():
            rows.append(json.loads(done.read_text()))
            continue
        row = {"subject": subject.id, **({"label": subject.label} if subject.label is not None else {}),
               **work(subject, folder)}
        atomic_write(done, json.dumps(row).encode())
        rows.append(row)
    return write_table(folder / table, rows)


def write_table(path: pathlib.Path, rows: list[dict[str, Any]]) -> pathlib.Path:
    """Rows as CSV (columns in first-seen order), atomically."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode())
    return path
