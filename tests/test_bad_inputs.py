"""A fuzz list of bad inputs, as a careless user gives them: truncated, corrupt and wrong-type files for every input
kind the CLI reads (netCDF, zarr, CSV/parquet tables, NIfTI, DICOM, NumPy arrays) and edited run directories. Each
must end with exit status 2, one line on stderr naming the problem (no traceback), and no output written."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from sciffusion import datasets
from sciffusion.cli import main

FAST = ["--set", "model.net.channels=[8,16]", "--set", "model.net.num_res_blocks=1", "--set", "trainer.progress=false",
        "--accelerator", "cpu", "--max-steps", "1"]


def truncated(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def garbage(dst: pathlib.Path, size: int = 4096) -> pathlib.Path:
    dst.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return dst


def wrong_type(dst: pathlib.Path) -> pathlib.Path:
    dst.write_text("date,price\n2020-01-01,1\n2020-01-02,2\n")  # a CSV under another name
    return dst


def a_nifti(d: pathlib.Path) -> pathlib.Path:
    import nibabel as nib

    path = d / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16)).astype("f4"), np.eye(4)), path)
    return path


def netcdf_cases(d: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    ostia = datasets.path("ostia_sst")
    zarr_bad = d / "bad.zarr"
    zarr_bad.mkdir()
    (zarr_bad / ".zgroup").write_text("{not json")
    empty = d / "empty.nc"
    empty.write_bytes(b"")
    return [("truncated netCDF", truncated(ostia, d / "half.nc")), ("garbage netCDF", garbage(d / "noise.nc")),
            ("CSV named .nc", wrong_type(d / "table.nc")), ("empty netCDF", empty),
            ("corrupt zarr store", zarr_bad), ("missing file", d / "nothere.nc")]


def table_cases(d: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    empty = d / "empty.csv"
    empty.write_text("")
    no_dates = d / "nodates.csv"
    no_dates.write_text("a,b\nx,1\ny,2\n")
    header_only = d / "header.csv"
    header_only.write_text("date,SPX\n")
    return [("garbage CSV", garbage(d / "noise.csv")), ("empty CSV", empty), ("CSV without dates", no_dates),
            ("CSV header only", header_only), ("garbage parquet", garbage(d / "noise.parquet")),
            ("missing table", d / "nothere.csv")]


def volume_cases(d: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    good = a_nifti(d)
    dicom = d / "dicom"
    dicom.mkdir()
    garbage(dicom / "IM0001.dcm")
    flat = d / "flat.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((16, 16), "f4"), np.eye(4)), flat)
    return [("truncated NIfTI", truncated(good, d / "half.nii.gz")), ("garbage NIfTI", garbage(d / "noise.nii")),
            ("CSV named .nii.gz", wrong_type(d / "table.nii.gz")), ("garbage DICOM folder", dicom),
            ("2-D NIfTI", flat), ("missing volume", d / "nothere.nii.gz")]


def array_cases(d: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    np.save(d / "good.npy", np.zeros((8, 1, 8, 8), "f4"))
    return [("truncated .npy", truncated(d / "good.npy", d / "half.npy")), ("garbage .npy", garbage(d / "noise.npy")),
            ("CSV named .npy", wrong_type(d / "table.npy")), ("missing array", d / "nothere.npy")]


CASES = {
    "netcdf": (netcdf_cases, lambda p, out: ["train", "forecast", "--data", str(p), "--out", str(out), *FAST]),
    "table": (table_cases, lambda p, out: ["train", "scenarios", "--data", str(p), "--out", str(out), *FAST]),
    "volume": (volume_cases, lambda p, out: ["train", "anomaly", "--data", str(p), "--out", str(out), *FAST]),
    "array": (array_cases, lambda p, out: ["train", "generate", "--data", str(p), "--out", str(out), *FAST]),
}


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "error: " in err, err
    return err


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_bad_input_file_is_a_one_line_error_and_writes_nothing(kind, tmp_path, capsys):
    make, argv = CASES[kind]
    cases = make(tmp_path)
    assert len(cases) >= 4
    for what, path in cases:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        out = tmp_path / "run"
        err = one_line_exit_2(argv(path, out), capsys)
        assert not out.exists(), what  # no run directory started for bad data
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, what  # nothing else written either
        assert len(err) < 400 and path.name in err, (what, err)  # short, and it names the file


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzrun")
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype("f4"))
    assert main(["train", "generate", "--data", str(d / "x.npy"), "--out", str(d / "run"), *FAST]) == 0
    return d / "run"


def _edit_json(name: str, change):
    def edit(run: pathlib.Path) -> None:
        path = run / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


RUN_EDITS = {
    "config.json not JSON": lambda r: (r / "config.json").write_text("{model: ["),
    "config.json deleted": lambda r: (r / "config.json").unlink(),
    "run.json deleted": lambda r: (r / "run.json").unlink(),
    "run.json without its file list": _edit_json("run.json", lambda j: {k: v for k, v in j.items() if k != "files"}),
    "weights truncated": lambda r: truncated(r / "weights.safetensors", r / "weights.safetensors"),
    "weights replaced by garbage": lambda r: garbage(r / "weights.safetensors"),
    "metadata.json emptied": lambda r: (r / "metadata.json").write_text(""),
    "config with an unknown model key": _edit_json("config.json", lambda c: {**c, "model": {**c["model"], "lrr": 1}}),
    "a run of the future": _edit_json("run.json", lambda j: {**j, "format": 99}),
}


@pytest.mark.parametrize("edit", sorted(RUN_EDITS))
def test_an_edited_run_directory_is_a_one_line_error_and_writes_nothing(edit, run, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    RUN_EDITS[edit](broken)
    out = tmp_path / "samples.npy"
    one_line_exit_2(["generate", "--run", str(broken), "--num", "2", "--out", str(out)], capsys)
    assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))
