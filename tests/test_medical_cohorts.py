"""Medical cohorts: manifests and patterns, resampling round trips, multi-sequence channels, the memory-mapped
training cache (peak memory flat in the cohort size), DICOM series (grouping, geometry, enhanced multi-frame,
MONOCHROME1, tilt), batch screening with resume, and one-line errors for bad cohorts."""

from __future__ import annotations

import json
import pathlib
import tracemalloc

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from sciffusion.cli import main  # noqa: E402
from sciffusion.domains import medical as med  # noqa: E402
from sciffusion.domains.medical.cache import LazyArray, cache_cohort  # noqa: E402
from sciffusion.domains.medical.cohort import from_pattern, load_subject  # noqa: E402
from sciffusion.domains.medical.grids import resample_onto, spacing_grid  # noqa: E402
from sciffusion.domains.medical.patches import PatchDataset  # noqa: E402
from sciffusion.domains.medical.protocol import make_cohort  # noqa: E402

BOX = (slice(29, 69), slice(34, 82), slice(30, 66))  # a 40 x 48 x 36 crop of the 2 mm MNI brain


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def _ramp(shape=(10, 12, 8)):
    g = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return (1 + g[0] + 0.5 * g[1] + 0.25 * g[2]).astype(np.float32)


# ---- manifests and patterns ------------------------------------------------------------------------------------

def test_manifest_columns_paths_and_splits(tmp_path):
    for s in ("a", "b"):
        for q in ("T1", "FLAIR"):
            _save(tmp_path / f"{s}_{q}.nii.gz", _ramp(), np.eye(4))
    (tmp_path / "m.tsv").write_text("subject\tT1\tsplit\tFLAIR\tlabel\n"
                                    "a\ta_T1.nii.gz\ttrain\ta_FLAIR.nii.gz\t\n"
                                    "b\ta_T1.nii.gz\ttest\tb_FLAIR.nii.gz\tlesion\n")
    c = med.read_cohort(tmp_path / "m.tsv")
    assert c.sequences == ("T1", "FLAIR")  # sequences in column order, reserved columns left out
    assert [s.id for s in c] == ["a", "b"] and [s.split for s in c] == ["train", "test"]
    assert c.subjects[1].label == "lesion" and c.subjects[0].label is None
    assert c.subjects[1].sequences[1] == ("FLAIR", tmp_path / "b_FLAIR.nii.gz")  # relative to the manifest
    assert [s.id for s in c.select("test")] == ["b"]


@pytest.mark.parametrize("text, message", [
    ("subject,T1\na,missing.nii.gz\n", "row 2 \\(a\\): T1 file .*missing.nii.gz does not exist"),
    ("subject,T1\na,x.nii.gz\na,x.nii.gz\n", "row 3: subject 'a' appears twice"),
    ("subject,T1\n,x.nii.gz\n", "row 2: empty subject id"),
    ("subject,T1\na/b,x.nii.gz\n", "subject id 'a/b' must be"),
    ("subject,T1\na,\n", "row 2 \\(a\\): no file for T1"),
    ("T1\nx.nii.gz\n", "no 'subject' column"),
    ("subject,split\na,train\n", "no sequence column"),
])
def test_manifest_errors_name_the_row(tmp_path, text, message):
    _save(tmp_path / "x.nii.gz", _ramp(), np.eye(4))
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        med.read_cohort(tmp_path / "m.csv")


def test_bids_folder_and_pattern(tmp_path):
    for s in ("01", "02"):
        d = tmp_path / f"sub-{s}" / "anat"
        d.mkdir(parents=True)
        for q in ("T1w", "FLAIR"):
            _save(d / f"sub-{s}_{q}.nii.gz", _ramp(), np.eye(4))
    c = med.read_cohort(tmp_path)
    assert [s.id for s in c] == ["01", "02"] and c.sequences == ("FLAIR", "T1w")
    assert c.subjects[0].sequences[1][1] == tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    (tmp_path / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz").unlink()
    with pytest.raises(ValueError, match="subject 02: no file for FLAIR"):
        from_pattern(str(tmp_path / "sub-{subject}/anat/sub-{subject}_{sequence}.nii.gz"))


# ---- grids -----------------------------------------------------------------------------------------------------

def test_resampling_round_trip_keeps_grid_and_smooth_values():
    affine = np.array([[0.9, 0, 0.1, -20], [0, 1.1, 0, 5], [0, 0, 1.3, 7], [0, 0, 0, 1.0]])
    shape = (30, 26, 22)
    g = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    data = (np.sin(g[0] / 5) + np.cos(g[1] / 6) * g[2] / 10).astype(np.float32)
    coarse_aff, coarse_shape = spacing_grid(affine, shape, [2.0, 2.0, 2.0])
    assert np.allclose(med.Volume(data, coarse_aff, coarse_aff, coarse_shape).spacing, 2.0)
    # same field of view: the outer voxel edges stay within half a new voxel of the old ones
    old_edge = affine[:3, :3] @ (np.array(shape) - 0.5) + affine[:3, 3]
    new_edge = coarse_aff[:3, :3] @ (np.array(coarse_shape) - 0.5) + coarse_aff[:3, 3]
    assert np.abs(old_edge - new_edge).max() <= 1.0 + 1e-6
    coarse = resample_onto(data, affine, coarse_aff, coarse_shape)
    back = resample_onto(coarse, coarse_aff, affine, shape)
    assert back.shape == shape and back.dtype == np.float32
    inner = tuple(slice(3, n - 3) for n in shape)
    assert np.abs(back - data)[inner].max() < 0.05  # a smooth field survives two linear interpolations
    # identity grid: exact; a pure translation by whole voxels: a shifted copy
    np.testing.assert_allclose(resample_onto(data, affine, affine, shape), data, atol=1e-6)
    mask = data > 0.3
    assert resample_onto(mask, affine, affine, shape, order=0).dtype == bool


def test_prepare_resamples_to_the_run_spacing_and_writes_back(tmp_path):
    t1 = med.mni152(2)
    vol = t1.like(t1.data[BOX[0], BOX[1], BOX[2]])
    scan = med.prepare(vol, spacing=[3.0, 3.0, 3.0])
    assert scan.resampled and np.allclose(scan.volume.spacing, 3.0) and scan.x.shape[1:] == scan.mask.shape
    assert scan.x.shape[1:] == (27, 32, 24)  # round(n * 2 / 3)
    same = med.prepare(vol, spacing=[2.01, 2.0, 1.99])  # within 1%: the input's voxels, untouched
    assert not same.resampled and same.x.shape[1:] == vol.data.shape
    out = scan.write(tmp_path / "m.nii.gz", scan.x[0])
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, vol.affine)
    assert img.shape == vol.data.shape and img.get_data_dtype() == np.float32
    with pytest.raises(ValueError, match="more than 3x from the run's"):
        med.prepare(vol, spacing=[7.0, 7.0, 7.0])


def test_written_maps_have_their_own_description(tmp_path):
    src = nib.Nifti1Image(_ramp(), np.eye(4))
    src.header["descrip"] = b"scanner T1"
    src.header["cal_min"], src.header["cal_max"] = 0.0, 900.0
    nib.save(src, str(tmp_path / "in.nii.gz"))
    vol = med.read_volume(tmp_path / "in.nii.gz")
    out = nib.load(str(med.write_volume(tmp_path / "o.nii.gz", vol.data * 0.5, vol, descrip="sciffusion score")))
    assert out.header["descrip"].tobytes().rstrip(b"\0") == b"sciffusion score"
    assert float(out.header["cal_max"]) == 0.0 and int(out.header["sform_code"]) >= 1


# ---- sequences as channels -------------------------------------------------------------------------------------

def test_subject_sequences_share_a_grid_or_are_resampled(tmp_path):
    _save(tmp_path / "t1.nii.gz", _ramp(), np.eye(4))
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    _save(tmp_path / "t2.nii.gz", _ramp((5, 6, 4)), shifted)
    (tmp_path / "m.csv").write_text("subject,T1,T2\ns1,t1.nii.gz,t2.nii.gz\n")
    c = med.read_cohort(tmp_path / "m.csv")
    with pytest.raises(ValueError, match="row 2 \\(s1\\): T2 is on another grid than T1.*--resample"):
        load_subject(c.subjects[0])
    vols = load_subject(c.subjects[0], resample=True)
    assert all(v.data.shape == (10, 12, 8) for v in vols) and np.allclose(vols[1].affine, vols[0].affine)
    scan = med.prepare_subject({"resample": True}, c.subjects[0])
    assert scan.x.shape == (2, 10, 12, 8) and scan.sequences == ("T1", "T2") and len(scan.norms) == 2


def test_constant_and_empty_volumes_are_refused(tmp_path):
    _save(tmp_path / "z.nii.gz", np.zeros((6, 6, 6), np.float32), np.eye(4))
    (tmp_path / "m.csv").write_text("subject,T1\nzero,z.nii.gz\n")
    with pytest.raises(ValueError, match="row 2 \\(zero\\): .*every voxel is 0"):
        med.prepare_subject({}, med.read_cohort(tmp_path / "m.csv").subjects[0])


def test_multi_sequence_patches_and_per_channel_scores():
    rng = np.random.default_rng(0)
    x = rng.random((2, 12, 12, 12)).astype(np.float32)
    mask = np.ones((12, 12, 12), bool)
    ds = PatchDataset([x], [mask], (6, 6, 6), 4, augment={"scale": 0.1, "bias": 0.0})
    item = ds[1]
    assert item["x"].shape == (2, 6, 6, 6) and item["mask"].shape == (1, 6, 6, 6)
    ones = PatchDataset([np.ones((2, 8, 8, 8), np.float32)], [np.ones((8, 8, 8), bool)], (4, 4, 4), 3,
                        augment={"scale": 0.3, "bias": 0.0})[0]["x"].numpy()
    inside = ones[0] != 0  # the crop may reach past the volume's edge (zeros there)
    g0, g1 = ones[0][inside], ones[1][inside]
    assert np.allclose(g0, g0[0]) and np.allclose(g1, g1[0]) and not np.isclose(g0[0], g1[0])  # a gain each
    signed = np.zeros((2, 16, 16, 16), np.float32)
    signed[1, 6:10, 6:10, 6:10] = 1.0  # a blob in the second sequence only (FLAIR-only lesion)
    per = med.score_map(signed, np.abs(signed), np.ones((16, 16, 16), bool))
    assert per.shape == (2, 16, 16, 16) and per[0].max() == 0 and per[1].max() > 0
    np.testing.assert_array_equal(med.combine(per), per[1])


# ---- the memory-mapped cache -----------------------------------------------------------------------------------

def _peak_while_training_patches(tmp_path, n, shape=(48, 48, 48)):
    rng = np.random.default_rng(n)
    tmp_path.mkdir()
    rows = ["subject,T1"]
    for i in range(n):
        _save(tmp_path / f"s{i}.nii.gz", (rng.random(shape) + 1).astype(np.float32), np.eye(4))
        rows.append(f"s{i},s{i}.nii.gz")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cohort = med.read_cohort(tmp_path / "m.csv")
    tracemalloc.start()
    cached = cache_cohort(cohort, tmp_path / "cache", lambda s: med.prepare_subject({}, s), lambda m: m, {})
    ds = PatchDataset([c.x for c in cached], [c.mask for c in cached], (16, 16, 16), 64, centres=[c.centres
                                                                                              for c in cached])
    for i in range(64):
        ds[i]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, cached


def test_cache_peak_memory_is_flat_in_cohort_size(tmp_path):
    small, _ = _peak_while_training_patches(tmp_path / "a", 2)
    large, cached = _peak_while_training_patches(tmp_path / "b", 10)
    subject_bytes = 48 ** 3 * 4
    assert large < small + subject_bytes  # ten subjects cost what two do: one subject in memory at a time
    assert isinstance(cached[0].x, LazyArray) and cached[0].x.shape == (1, 48, 48, 48)
    # entries are reused: a second caching prepares nothing
    index = json.loads((tmp_path / "b" / "cache" / "index.json").read_text())
    calls = []
    cohort = med.read_cohort(tmp_path / "b" / "m.csv")
    cache_cohort(cohort, tmp_path / "b" / "cache", lambda s: calls.append(s) or med.prepare_subject({}, s),
                 lambda m: m, {})
    assert calls == [] and len(index) == 10
    # the cached voxels are the prepared scan's
    np.testing.assert_array_equal(np.asarray(cached[3].x.array), med.prepare_subject({}, cohort.subjects[3]).x)


# ---- DICOM -----------------------------------------------------------------------------------------------------

pydicom = pytest.importorskip("pydicom")


def _ct_series(folder, positions, *, uid=None, description="AX", tilt=0.0, name="s", image_type=None,
               orientation=None):
    import pydicom.data
    folder.mkdir(parents=True, exist_ok=True)
    src = pathlib.Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
    uid = uid or pydicom.uid.generate_uid()
    arr = pydicom.dcmread(str(src)).pixel_array
    for n, z in enumerate(positions):
        ds = pydicom.dcmread(str(src))
        ds.SeriesInstanceUID, ds.SeriesDescription = uid, description
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]) + tilt * n,
                                   z]
        if orientation is not None:
            ds.ImageOrientationPatient = orientation[n % len(orientation)]
        if image_type is not None:
            ds.ImageType = image_type
        ds.PixelData = (arr + 10 * n).astype(arr.dtype).tobytes()
        ds.save_as(str(folder / f"{name}{n:02d}.dcm"))
    return uid, arr


def test_dicom_folder_with_localizer_and_axial_series(tmp_path):
    folder = tmp_path / "exam"
    axial, _ = _ct_series(folder, [5.0 * i for i in range(6)], description="AX T1")
    _ct_series(folder, [0.0, 0.0, 0.0], description="LOC", name="l", image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
               orientation=[[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]])
    vol = med.read_volume(folder)  # the localizer is skipped: one volume series remains
    assert vol.data.shape == (128, 128, 6) and np.isclose(vol.spacing[2], 5.0)
    series = med.list_series(sorted(folder.iterdir()))
    assert {s.description for s in series} == {"AX T1", "LOC"} and [s.is_volume for s in series].count(True) == 1
    other, _ = _ct_series(folder, [2.5 * i for i in range(4)], description="COR T2", name="c")
    with pytest.raises(ValueError, match="2 image series qualify") as e:
        med.read_volume(folder)
    assert "'AX T1' (CT, 6 image(s))" in str(e.value) and "'COR T2' (CT, 4 image(s))" in str(e.value)
    assert med.read_volume(folder, series="cor t2").data.shape[2] == 4  # by description, case-insensitive
    assert med.read_volume(folder, series=axial).data.shape[2] == 6      # by UID
    with pytest.raises(ValueError, match="series 'sagittal' matches 0 series"):
        med.read_volume(folder, series="sagittal")


def test_dicom_gantry_tilt_and_no_image_series_are_named(tmp_path):
    _ct_series(tmp_path / "tilt", [5.0 * i for i in range(5)], description="TILTED", tilt=1.0)
    with pytest.raises(ValueError, match="TILTED: gantry tilt of 11.3 degrees"):
        med.read_volume(tmp_path / "tilt")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "README.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no DICOM image series found"):
        med.read_dicom([tmp_path / "none" / "README.txt"])


def test_dicom_monochrome1_is_inverted(tmp_path):
    _ct_series(tmp_path / "m2", [5.0 * i for i in range(3)])
    normal = med.read_volume(tmp_path / "m2").data
    for f in (tmp_path / "m2").iterdir():
        ds = pydicom.dcmread(str(f))
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(str(f))
    inverted = med.read_volume(tmp_path / "m2").data
    np.testing.assert_allclose(inverted, normal.max() + normal.min() - normal)


def _enhanced(path, frames=4, spacing=(0.8, 0.7), dz=2.5, slope=2.0, intercept=-100.0):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 1000, (frames, 6, 5)).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = generate_uid(), "MR", "enhanced"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 6, 5, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    meas, ornt = Dataset(), Dataset()
    meas.PixelSpacing, meas.SliceThickness = list(spacing), dz
    ornt.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Seq([meas]), Seq([ornt])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    per = []
    for k in reversed(range(frames)):  # frames stored in reverse order: sorting is by position
        f, pos, pv = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [10.0, 20.0, 30.0 + dz * k]
        pv.RescaleSlope, pv.RescaleIntercept = slope, intercept
        f.PlanePositionSequence, f.PixelValueTransformationSequence = Seq([pos]), Seq([pv])
        per.append(f)
    ds.PerFrameFunctionalGroupsSequence = Seq(per)
    ds.PixelData = pixels[::-1].tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return pixels * slope + intercept


def test_enhanced_multiframe_dicom_geometry_and_rescale(tmp_path):
    truth = _enhanced(tmp_path / "e.dcm")  # (frames, rows, cols), frame k at z = 30 + 2.5 k
    vol = med.read_volume(tmp_path / "e.dcm")
    assert vol.data.shape == (5, 6, 4) and np.allclose(vol.spacing, [0.7, 0.8, 2.5])
    # canonical RAS flips DICOM's left-going columns and posterior-going rows
    np.testing.assert_allclose(vol.data, np.transpose(truth, (2, 1, 0))[::-1, ::-1, :])
    assert np.allclose(vol.affine[:3, 3], [-10.0 - 0.7 * 4, -20.0 - 0.8 * 5, 30.0])


def test_legacy_multiframe_dose_grid():
    import pydicom.data
    src = pathlib.Path(pydicom.data.__file__).parent / "test_files" / "rtdose.dcm"
    ds = pydicom.dcmread(str(src))
    vol = med.read_volume(src)  # 15 frames along the normal at GridFrameOffsetVector, in Gy (DoseGridScaling)
    assert vol.data.shape == (10, 10, 15) and np.allclose(vol.spacing, [10.0, 10.0, 5.0])
    assert vol.data.max() == pytest.approx(float(ds.pixel_array.max()) * float(ds.DoseGridScaling), rel=1e-5)


def test_compressed_dicom_without_a_handler_names_the_extra(tmp_path):
    import pydicom.data
    files = pathlib.Path(pydicom.data.__file__).parent / "test_files"
    undecodable = None
    for name in ("MR_small_jpeg_ls_lossless.dcm", "JPEG-lossy.dcm", "JPEG2000.dcm"):
        try:
            pydicom.dcmread(str(files / name)).pixel_array
        except Exception:
            undecodable = files / name
            break
    if undecodable is None:
        pytest.skip("every compressed test file decodes here: the missing-handler error cannot be reached")
    for n in range(3):  # a three-slice series of the compressed image
        ds = pydicom.dcmread(str(undecodable))
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * n]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.save_as(str(tmp_path / f"c{n}.dcm"))
    with pytest.raises(ValueError, match="cannot decode pixel data.*sciffusion\\[dicom\\]"):
        med.read_volume(tmp_path)


# ---- batch screening and the CLI -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cohort")
    manifest = make_cohort(work / "data", 5, box=BOX, spacings=[2.0, 2.0, 2.5, 2.0], lesions=2,
                           lesion_sequence="FLAIR", split=["train", "train", "calibration", "test", "validation"],
                           lesion_splits=("test", "validation"))
    run = work / "run"
    assert main(["train", "anomaly", "--cohort", str(manifest), "--patch", "16", "--max-steps", "3",
                 "--batch-size", "2", "--set", "trainer.progress=false", "--set", "anomaly.seeds=1",
                 "--out", str(run)]) == 0
    return manifest, run


def test_cohort_training_records_sequences_spacing_and_calibration(cohort_run):
    manifest, run = cohort_run
    meta = json.loads((run / "metadata.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert meta["sequences"] == ["T1", "FLAIR"] and meta["subjects"] == 2  # the train split only
    assert config["model"]["net"]["in_channels"] == 2 and config["data"]["spacing"] == [2.0, 2.0, 2.0]
    # the threshold comes from the cohort's own calibration subject
    assert meta["metrics"]["calibration_scans"] == 1 and meta["metrics"]["threshold"] > 0
    assert meta["metrics"]["cluster_ml"] >= 0
    # the scoring is chosen on the cohort's validation subject (its label is a lesion mask) and stored
    assert meta["metrics"]["validation_scans"] == 1 and 0 <= meta["metrics"]["validation_auroc"] <= 1
    assert set(config["anomaly"]["sigmas"]) <= {0.05, 0.1, 0.2, 0.3} and config["anomaly"]["score"] in ("abs",
                                                                                                       "bandpass")


def test_detect_cohort_writes_maps_table_and_resumes(cohort_run, tmp_path):
    manifest, run = cohort_run
    out = tmp_path / "det"
    assert main(["detect", "--run", str(run), "--cohort", str(manifest), "--out", str(out)]) == 0
    table = (out / "scores.csv").read_text().splitlines()
    assert table[0].startswith("subject,") and len(table) == 6
    assert {"anomalous_ml", "max_score", "mean_score", "flagged", "largest_cluster_ml"} <= set(table[0].split(","))
    cohort = med.read_cohort(manifest)
    for s in cohort:
        score = nib.load(str(out / f"{s.id}_score.nii.gz"))
        src = nib.load(str(s.sequences[0][1]))
        np.testing.assert_allclose(score.affine, src.affine)  # on the subject's own grid, 2.5 mm one included
        assert score.shape == src.shape
        for q in ("T1", "FLAIR"):
            assert (out / f"{s.id}_score_{q}.nii.gz").exists()
        assert set(np.unique(np.asanyarray(nib.load(str(out / f"{s.id}_binary.nii.gz")).dataobj))) <= {0, 1}
    import csv
    rows = {r["subject"]: r for r in csv.DictReader((out / "scores.csv").open())}
    ill = rows["sub003"]  # the test subject: its label column is its lesion mask
    assert float(ill["lesion_ml"]) > 0 and 0 <= float(ill["lesion_auroc"]) <= 1 and 0 <= float(ill["dice"]) <= 1
    assert rows["sub000"]["lesion_ml"] == ""  # healthy subjects have no lesion mask
    combined = np.asanyarray(nib.load(str(out / "sub000_score.nii.gz")).dataobj)
    per = [np.asanyarray(nib.load(str(out / f"sub000_score_{q}.nii.gz")).dataobj) for q in ("T1", "FLAIR")]
    np.testing.assert_allclose(combined, np.maximum(*per), atol=1e-6)
    # resume: a subject with a row is skipped; a subject whose row is gone is redone
    before = (out / "sub001_score.nii.gz").stat().st_mtime_ns
    (out / ".done" / "sub002.json").unlink()
    assert main(["detect", "--run", str(run), "--cohort", str(manifest), "--out", str(out)]) == 0
    assert (out / "sub001_score.nii.gz").stat().st_mtime_ns == before
    assert (out / "scores.csv").read_text().splitlines() == table
    assert not list(out.glob(".*.tmp"))


def test_cohort_errors_are_one_line(cohort_run, tmp_path, capsys):
    manifest, run = cohort_run
    (tmp_path / "one.csv").write_text(f"subject,T1\na,{manifest.parent / 'sub000_T1.nii.gz'}\n")
    capsys.readouterr()
    assert main(["detect", "--run", str(run), "--cohort", str(tmp_path / "one.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on sequences ['T1', 'FLAIR']" in err[0]
    (tmp_path / "gone.csv").write_text("subject,T1,FLAIR\na,nope.nii.gz,nope.nii.gz\n")
    gone = str(tmp_path / "gone.csv")
    assert main(["detect", "--run", str(run), "--cohort", gone, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 2 (a): T1 file" in err[0]
    assert main(["detect", "--run", str(run), "--out", str(tmp_path / "o.nii.gz")]) == 2
    assert "--data or the subjects with --cohort" in capsys.readouterr().err


def test_superres_and_generate_with_two_sequences(cohort_run, tmp_path):
    manifest, _ = cohort_run
    run = tmp_path / "sr"
    assert main(["train", "superres", "--cohort", str(manifest), "--patch", "12", "--max-steps", "2",
                 "--batch-size", "2", "--set", "trainer.progress=false", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["net"]["cond_channels"] == 4  # 2 bases + 2
    # a thick cohort: every 3rd axial slice of two subjects
    rows = ["subject,T1,FLAIR"]
    cohort = med.read_cohort(manifest)
    for s in cohort.subjects[:2]:
        names = []
        for q, p in s.sequences:
            img = nib.load(str(p))
            aff = img.affine.copy()
            aff[:3, 2] *= 3
            names.append(_save(tmp_path / f"{s.id}_{q}_thick.nii.gz", np.asanyarray(img.dataobj)[:, :, ::3], aff).name)
        rows.append(f"{s.id},{names[0]},{names[1]}")
    (tmp_path / "thick.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "thin"
    assert main(["superres", "--run", str(run), "--cohort", str(tmp_path / "thick.csv"), "--out", str(out)]) == 0
    table = (out / "superres.csv").read_text().splitlines()
    assert table[0] == "subject,factor,slices" and table[1].startswith("sub000,3,")
    for q in ("T1", "FLAIR"):
        thick = nib.load(str(tmp_path / f"sub000_{q}_thick.nii.gz"))
        thin = nib.load(str(out / f"sub000_thin_{q}.nii.gz"))
        assert thin.shape[2] == (thick.shape[2] - 1) * 3 + 1
        np.testing.assert_allclose(np.asanyarray(thin.dataobj)[:, :, ::3], np.asanyarray(thick.dataobj), rtol=1e-5,
                                   atol=1e-4)  # the acquired slices of each sequence, exactly
    gen = tmp_path / "gen"
    assert main(["train", "volume", "--cohort", str(manifest), "--patch", "12", "--max-steps", "2",
                 "--batch-size", "2", "--set", "trainer.progress=false", "--out", str(gen)]) == 0
    assert main(["generate", "--run", str(gen), "--num", "2", "--steps", "2", "--out", str(tmp_path / "g.nii.gz")]) == 0
    for q in ("T1", "FLAIR"):
        assert nib.load(str(tmp_path / f"g_{q}.nii.gz")).shape == (12, 12, 12, 2)


def test_tiled_denoiser_compute_device_keeps_the_output_on_the_input_device():
    import torch

    from sciffusion.diffusion import TiledDenoiser

    seen = []

    def denoiser(x, sigma):
        seen.append(x.device)
        return 2 * x

    x = torch.randn(1, 2, 20, 18, 12)
    out = TiledDenoiser(denoiser, 8, 2, 3, device="cpu")(x, 0.5)
    assert out.device == x.device and set(seen) == {torch.device("cpu")}
    torch.testing.assert_close(out, 2 * x)  # blended tiles of a pointwise map: exact


def test_sampling_flags_that_say_how_to_read_override_the_run():
    from sciffusion.domains.medical.scans import with_read_options

    run = {"spacing": [2.0, 2.0, 2.0], "resample": False, "series": None, "percentiles": [0.5, 99.5]}
    got = with_read_options(run, {"resample": True, "series": "AX T1", "spacing": [1.0, 1.0, 1.0]})
    assert got == {**run, "resample": True, "series": "AX T1"}  # how the files are read, not how they are prepared
    assert with_read_options(run, {"resample": False, "series": None}) == run
