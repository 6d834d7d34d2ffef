"""Medical volumes: I/O round trips, normalisation, seam-free tiling, memory plan, scores against sklearn and
scikit-image, the lesion protocol, super-resolution maths and the CLI end to end on a small real volume."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import CubicSpline

nib = pytest.importorskip("nibabel")

from sciffusion.cli import main  # noqa: E402
from sciffusion.diffusion import DiffusionLoss, Fixed, TiledDenoiser, blend_window, tile_starts  # noqa: E402
from sciffusion.domains import medical as med  # noqa: E402
from sciffusion.domains.medical.scans import prepare_like  # noqa: E402
from sciffusion.domains.medical.superres import (  # noqa: E402
    base_upsample,
    cubic_fill,
    cubic_upsample,
    linear_fill,
    linear_upsample,
    thin_affine,
)
from sciffusion.training import DiffusionModule, TrainedRun  # noqa: E402
from sciffusion.training.fit import load_trained as sf_load  # noqa: E402


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.fixture(scope="module")
def small_t1():
    """A 2 mm MNI crop (40 x 48 x 36), small enough for CLI runs in seconds."""
    v = med.mni152(2)
    return v.data[29:69, 34:82, 30:66].copy(), v.affine


# ---- I/O -------------------------------------------------------------------------------------------------------

def test_nifti_round_trip_keeps_orientation_affine_and_voxels(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((7, 9, 5)).astype(np.float32)
    # An LPI-like, axis-permuted affine: the file is far from canonical RAS.
    affine = np.array([[0, -2.0, 0, 30], [0, 0, -3.0, 20], [1.5, 0, 0, -10], [0, 0, 0, 1]])
    src = _save(tmp_path / "in.nii.gz", data, affine)
    vol = med.read_volume(src)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert np.allclose(vol.spacing, [2.0, 3.0, 1.5])  # R from voxel axis 1, A from axis 2, S from axis 0
    out = med.write_volume(tmp_path / "out.nii.gz", vol.data, vol)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    # The world coordinate of every voxel is the same in the canonical copy and in the file.
    i, j, k = 3, 4, 2
    world = affine @ np.array([i, j, k, 1.0])
    idx = np.round(np.linalg.inv(vol.affine) @ world).astype(int)[:3]
    assert vol.data[tuple(idx)] == data[i, j, k]


@pytest.mark.parametrize("shape, msg", [((8, 8), "not a 3-D volume"), ((8, 8, 1), "not a 3-D volume"),
                                        ((6, 6, 6, 3), "not a 3-D volume")])
def test_read_rejects_non_volumes(tmp_path, shape, msg):
    p = _save(tmp_path / "x.nii", np.zeros(shape, np.float32), np.eye(4))
    with pytest.raises(ValueError, match=msg):
        med.read_volume(p)


def test_read_rejects_nan_and_missing(tmp_path):
    a = np.ones((5, 5, 5), np.float32)
    a[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 voxels are NaN"):
        med.read_volume(_save(tmp_path / "nan.nii.gz", a, np.eye(4)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        med.read_volume(tmp_path / "nope.nii.gz")


def test_mask_must_match_shape_and_affine(tmp_path):
    vol = med.read_volume(_save(tmp_path / "v.nii.gz", np.arange(216, dtype=np.float32).reshape(6, 6, 6), np.eye(4)))
    wrong_shape = med.read_volume(_save(tmp_path / "m1.nii.gz", np.ones((6, 6, 5), np.uint8), np.eye(4)))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    wrong_aff = med.read_volume(_save(tmp_path / "m2.nii.gz", np.ones((6, 6, 6), np.uint8), shifted))
    with pytest.raises(ValueError, match="shape"):
        med.prepare(vol, wrong_shape)
    with pytest.raises(ValueError, match="affine differs"):
        med.prepare(vol, wrong_aff)


def _dicom_series(tmp_path, positions):
    pytest.importorskip("pydicom")
    import pydicom.data
    src = pathlib.Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
    folder = tmp_path / "series"
    folder.mkdir()
    base = pydicom.dcmread(str(src))
    arr = base.pixel_array
    for n, z in enumerate(positions):
        ds = pydicom.dcmread(str(src))
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z]
        ds.InstanceNumber = n + 1
        ds.PixelData = (arr + 10 * n).astype(arr.dtype).tobytes()
        ds.save_as(str(folder / f"s{(7 * n) % 11:02d}.dcm"))  # names out of order: sorting is by position
    return folder, arr, base


def test_dicom_series_sorted_by_position_in_hounsfield_units(tmp_path):
    folder, arr, base = _dicom_series(tmp_path, [-75.7 + 5.0 * i for i in range(5)])
    vol = med.read_volume(folder)
    assert vol.data.shape == (128, 128, 5)
    assert np.allclose(vol.spacing, [0.661468, 0.661468, 5.0], atol=1e-4)
    # Slice k is the file at the k-th position (pixel values + 10 k), with the rescale applied (HU).
    col, row = 40, 70
    j = 127 - row  # canonical RAS flips DICOM's posterior-going rows
    i = 127 - col  # and its left-going columns
    for k in range(5):
        assert vol.data[i, j, k] == pytest.approx(float(arr[row, col]) + 10 * k + float(base.RescaleIntercept))


def test_dicom_series_with_missing_slice_is_rejected(tmp_path):
    folder, _, _ = _dicom_series(tmp_path, [0.0, 5.0, 10.0, 20.0, 25.0])
    with pytest.raises(ValueError, match="1 slice\\(s\\) missing"):
        med.read_volume(folder)


# ---- intensity -------------------------------------------------------------------------------------------------

def test_intensity_normalisation_mri_percentiles_and_ct_window():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    norm = med.IntensityNorm.fit(data, mask, (1, 99))
    x = norm(data, mask)
    assert x[~mask].max() == 0 and 0 <= x.min() and x.max() <= 1
    assert np.mean(x[mask] >= 1.0 - 1e-6) == pytest.approx(0.01, abs=0.005)
    inner = mask & (x > 1e-4) & (x < 1 - 1e-4)
    np.testing.assert_allclose(norm.inverse(norm(data))[inner], data[inner], rtol=1e-5)
    ct = med.IntensityNorm.ct("brain")  # level 40, width 80 HU
    np.testing.assert_allclose(ct(np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0])), [0, 0, 0.5, 1, 1])


def test_foreground_mask_finds_the_object():
    data = np.full((30, 30, 30), 5.0, np.float32)
    data[8:22, 8:22, 8:22] = 100.0
    data[14, 14, 14] = 5.0  # a hole inside is filled
    m = med.foreground_mask(data + np.random.default_rng(0).normal(0, 1, data.shape))
    assert m.sum() == 14 ** 3 and m[14, 14, 14]


# ---- tiling ----------------------------------------------------------------------------------------------------

class _Pointwise(torch.nn.Module):
    """A per-voxel map: every tile computes the same value for a voxel, so any blend must return it exactly."""

    sigma_data = 1.0

    def forward(self, x, sigma, cond=None):
        out = 2 * x + sigma.view(-1, *[1] * (x.ndim - 1))
        return out if cond is None else out + cond


@settings(max_examples=25, deadline=None)
@given(dims=st.integers(1, 3), size=st.integers(5, 40), patch=st.integers(2, 24), frac=st.floats(0, 0.45),
       batch=st.integers(1, 5))
def test_tiled_pointwise_map_is_exact(dims, size, patch, frac, batch):
    shape = (2, 1) + tuple(size + 3 * i for i in range(dims))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(size))
    cond = torch.randn(shape)
    tiled = TiledDenoiser(_Pointwise(), patch, int(frac * patch), batch)
    sigma = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(tiled(x, sigma, cond=cond), _Pointwise()(x, sigma, cond=cond), rtol=0, atol=1e-5)


def test_tile_starts_cover_with_overlap():
    for size, patch, overlap in [(99, 32, 8), (64, 32, 8), (33, 32, 4), (10, 32, 8)]:
        s = tile_starts(size, patch, overlap)
        covered = np.zeros(size, bool)
        for a in s:
            covered[a:a + patch] = True
        assert covered.all() and s[0] == 0 and min(s[-1] + patch, size) == size
        assert all(b - a <= patch - overlap for a, b in zip(s, s[1:]))
    w = blend_window((16, 8), 3)
    assert w.min() > 0 and w.max() == 1 and w[8, 4] == 1


def test_plan_tiles_respects_budget_and_rejects_too_small():
    net = {"channels": [8, 16, 32], "num_res_blocks": 1}
    p4, b4 = med.plan_tiles(4.0, net, (197, 233, 189))
    p1, _ = med.plan_tiles(1.0, net, (197, 233, 189))
    assert p4 >= p1 and p4 % 8 == 0 and b4 >= 1
    with pytest.raises(ValueError, match="raise --memory-gb"):
        med.plan_tiles(0.3, net, (197, 233, 189))


@pytest.mark.slow
def test_whole_1mm_volume_tiled_pass_within_4gb(tmp_path):
    """A 197 x 233 x 189 volume through a tiled U-Net pass under the 4 GB plan: peak RSS of the process."""
    code = (
        "import resource, torch, numpy as np\n"
        "from sciffusion.diffusion import Denoiser, coarse_noise, partial_diffusion\n"
        "from sciffusion.nets import UNet\n"
        "from sciffusion.domains.medical.scans import tiled\n"
        "torch.set_num_threads(2)\n"
        "net={'channels':[8,16,32],'num_res_blocks':1}\n"
        "D=tiled(Denoiser(UNet(dims=3, **net, zero_init=False), 0.3), net, (197,233,189), 4.0)\n"
        "x=torch.rand(1,1,197,233,189)\n"
        "with torch.inference_mode(): y=partial_diffusion(D, x, 0.2, noise=coarse_noise(x.shape, 4))\n"
        "assert y.shape==x.shape and torch.isfinite(y).all()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_gb = int(out.stdout.split()[-1]) / 2**20
    assert peak_gb < 4.0, f"peak {peak_gb:.2f} GB"


# ---- scores ----------------------------------------------------------------------------------------------------

def test_detection_scores_match_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=(15, 16, 17)), 1)  # ties on purpose
    t = rng.random(s.shape) < 0.05 + 0.4 * (s > 1)
    m = rng.random(s.shape) < 0.8
    assert med.auroc(s, t, m) == pytest.approx(skm.roc_auc_score(t[m], s[m]), abs=1e-12)
    assert med.auprc(s, t, m) == pytest.approx(skm.average_precision_score(t[m], s[m]), abs=1e-12)
    best, thr = med.best_dice(s, t, m)
    assert best == pytest.approx(skm.f1_score(t[m], s[m] >= thr))
    assert all(skm.f1_score(t[m], s[m] >= q) <= best + 1e-12 for q in np.unique(s[m])[::7])
    assert med.dice(s > 0.5, t, m) == pytest.approx(skm.f1_score(t[m], s[m] > 0.5))


def test_psnr_ssim_match_skimage():
    skimetrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    x = rng.random((20, 22, 24))
    y = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1)
    assert med.psnr(y, x) == pytest.approx(skimetrics.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-9)
    ref = skimetrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
    assert med.ssim(y, x) == pytest.approx(ref, abs=1e-9)


def test_threshold_at_fpr_flags_that_fraction_of_healthy_voxels():
    h = np.random.default_rng(5).normal(size=100_000)
    thr = med.threshold_at_fpr(h, 0.01)
    assert np.mean(h > thr) == pytest.approx(0.01, abs=1e-3)
    with pytest.raises(ValueError, match="false-positive rate"):
        med.threshold_at_fpr(h, 1.5)


# ---- protocol ----------------------------------------------------------------------------------------------------

def test_lesions_stay_inside_the_healthy_intensity_range():
    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 0.8, (40, 40, 40)).astype(np.float32)
    region = np.zeros(x.shape, bool)
    region[10:30, 10:30, 10:30] = True
    y, truth = med.insert_lesions(x, region, rng, count=4, shift=(0.3, 0.5))
    lo, hi = np.percentile(x[region], [1, 99])
    assert truth.sum() > 50
    assert y[truth].min() >= lo - 1e-6 and y[truth].max() <= hi + 1e-6
    assert np.abs(y - x)[truth].mean() > 0.1  # the lesions do change the tissue
    np.testing.assert_array_equal(y[~np.isclose(y, x)].size > 0, True)


def test_brain_benchmark_split_and_fair_lesions():
    b = med.brain_benchmark(seed=0)
    assert b.truth.sum() > 300
    assert not (b.truth & ~b.test_region).any()
    assert not (b.train_region & b.test_region).any()  # spatial split
    healthy = b.train.x[0][b.train.mask]
    assert b.test.x[0][b.truth].max() <= np.percentile(healthy, 99) + 0.1  # noise on top, no bright outliers
    # Intensity alone cannot find these lesions: the z-score baseline is near chance.
    z = med.zscore_map(b.test, [b.train])
    assert med.auroc(z, b.truth, b.test_region) < 0.65


# ---- super-resolution maths --------------------------------------------------------------------------------------

def test_linear_and_cubic_upsampling_are_exact_on_polynomials():
    z = np.arange(9, dtype=np.float64)
    ramp = np.broadcast_to(3.0 + 0.5 * z, (4, 5, 9)).astype(np.float32)
    np.testing.assert_allclose(linear_upsample(ramp[:, :, ::4], 4), ramp, rtol=1e-6)
    cube = np.broadcast_to(0.01 * z ** 3 - 0.2 * z, (4, 5, 9))
    np.testing.assert_allclose(cubic_upsample(cube[:, :, ::2], 2), cube, atol=1e-5)
    kept = np.zeros(9, bool)
    kept[[1, 5]] = True
    filled = linear_fill(ramp, kept, 2)
    np.testing.assert_allclose(filled[:, :, 1:6], ramp[:, :, 1:6], rtol=1e-6)
    assert (filled[:, :, 0] == ramp[:, :, 1]).all() and (filled[:, :, 8] == ramp[:, :, 5]).all()
    aff = thin_affine(np.diag([1.0, 1.0, 4.0, 1.0]), 4, 2)
    assert aff[2, 2] == 1.0
    # the cubic base: exact on a cubic between the first and last kept slices (random phase), constant beyond
    z = np.arange(20, dtype=np.float64)
    cube = np.broadcast_to(0.01 * z ** 3 - 0.2 * z ** 2 + z, (3, 4, 20)).astype(np.float32)
    kept = (z - 2) % 3 == 0
    filled = cubic_fill(cube, kept, 2)
    np.testing.assert_allclose(filled[:, :, 2:18], cube[:, :, 2:18], rtol=1e-5, atol=1e-4)
    assert (filled[:, :, :2] == cube[:, :, 2:3]).all() and (filled[:, :, 18:] == cube[:, :, 17:18]).all()
    assert (filled[:, :, kept] == cube[:, :, kept]).all()
    thick = cube[:, :, ::4]
    spline = CubicSpline(np.arange(thick.shape[2]) * 4, thick.astype(np.float64), axis=2)(np.arange(17))  # scipy
    np.testing.assert_allclose(base_upsample(thick, 4, 2, "cubic"), spline, atol=1e-5)
    np.testing.assert_array_equal(base_upsample(thick, 4, 2, "cubic"), cubic_upsample(thick, 4))
    np.testing.assert_array_equal(base_upsample(thick, 4, 2, "linear"), linear_upsample(thick, 4))
    with pytest.raises(ValueError, match="base must be"):
        base_upsample(thick, 4, 2, "sinc")


def test_untrained_superres_model_returns_linear_interpolation(small_t1):
    data, affine = small_t1
    vol = med.Volume(data, affine, affine, data.shape)
    scan = med.prepare(vol, data > 0)
    config = {"task": "superres", "superres": {"axis": 2, "mode": "mean", "samples": 1},
              "sampling": {"sampler": "heun", "steps": 16, "sigma_min": 0.002, "sigma_max": 5.0, "rho": 7.0},
              "model": {"net": {"dims": 3, "in_channels": 1, "cond_channels": 3, "channels": [4, 8]}}}
    run = TrainedRun(DiffusionModule(net=config["model"]["net"], sigma_data=0.1).eval(), None, config)
    thick = med.Scan(vol, scan.x[0][:, :, ::3], scan.mask[:, :, ::3], scan.norm)
    lin = linear_upsample(thick.x[0], 3)
    np.testing.assert_allclose(med.superresolve(run, thick, 3, mode="mean")[0], lin, atol=1e-6)
    # Sampling from the zero-initialised model draws residuals from its prior N(0, sigma_data^2); kept slices stay.
    res = med.superresolve(run, thick, 3, mode="sample")[0] - lin
    assert np.abs(res[:, :, ::3]).max() == 0
    inside = linear_upsample(thick.mask.astype(np.float32), 3) > 0.5
    inside[:, :, ::3] = False
    assert np.std(res[inside]) == pytest.approx(0.1, rel=0.1)
    # with the cubic base (the default of new runs) the untrained model returns the cubic baseline
    config["superres"]["base"] = "cubic"
    np.testing.assert_allclose(med.superresolve(run, thick, 3, mode="mean")[0], cubic_upsample(thick.x[0], 3),
                               atol=1e-5)


def test_dae_is_a_fixed_sigma_and_coarse_noise_changes_the_loss():
    p = Fixed(0.3)
    assert torch.equal(p.sample_sigma(4), torch.full((4,), 0.3)) and p.sigmas(10).tolist() == pytest.approx([0.3, 0])

    class Zero(torch.nn.Module):
        sigma_data = 1.0

        def forward(self, x, sigma, **c):
            return x  # identity "denoiser": error = sigma * noise

    x0 = torch.zeros(2, 1, 32, 32, 32)
    g = torch.Generator().manual_seed(0)
    white = DiffusionLoss(p, weighting="uniform")(Zero(), x0, generator=g)
    coarse = DiffusionLoss(p, weighting="uniform", noise_factor=4)(Zero(), x0, generator=g)
    assert white.item() == pytest.approx(0.09, rel=0.05) and coarse.item() == pytest.approx(0.09, rel=0.05)
    with pytest.raises(ValueError, match="noise_factor"):
        DiffusionLoss(p, noise_factor=0)


# ---- end to end (CLI) --------------------------------------------------------------------------------------------

def _cli(*args):
    assert main([str(a) for a in args]) == 0


def test_band_pass_score_keeps_blobs_and_drops_drifts_and_edges():
    shape = (32, 32, 32)
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    idx = np.indices(shape)
    drift = 0.3 + 0.01 * idx[0]                                   # a smooth intensity error (bias field)
    edges = 0.3 * (-1.0) ** (idx[0] + idx[1] + idx[2])             # errors of alternating sign
    blob = 0.3 * np.exp(-((idx - 16) ** 2).sum(0) / (2 * 2.5**2))  # a lesion-sized blob of one sign
    bp = lambda e: med.score_map(e, np.abs(e), mask, "bandpass", 1.5, 6.0)  # noqa: E731
    inner = np.zeros(shape, bool)
    inner[8:-8, 8:-8, 8:-8] = True
    assert bp(drift)[inner].max() < 0.02 and bp(edges)[inner].max() < 0.01  # the drift alone is 0.3-0.6
    assert bp(blob)[16, 16, 16] > 0.1 and bp(blob + drift + edges).argmax() == np.ravel_multi_index((16, 16, 16), shape)
    ab = med.score_map(edges, np.abs(edges), mask, "abs", 2.0)
    assert ab[inner].min() > 0.29  # the absolute error keeps the edges
    assert (bp(blob)[~mask] == 0).all()
    with pytest.raises(ValueError, match="wider"):
        med.score_map(blob, blob, mask, "bandpass", 3.0, 2.0)
    with pytest.raises(ValueError, match="score must be"):
        med.score_map(blob, blob, mask, "max")


def test_cli_anomaly_train_detect_evaluate(tmp_path, small_t1, capsys):
    data, affine = small_t1
    rng = np.random.default_rng(0)
    healthy = _save(tmp_path / "healthy.nii.gz", data, affine)
    cal = _save(tmp_path / "cal.nii.gz", data * (1 + 0.02 * rng.normal(size=data.shape)) * (data > 0), affine)
    scan_data = data.copy()
    scan_data[15:21, 20:26, 15:21] *= 0.6
    truth = np.zeros(data.shape, np.uint8)
    truth[15:21, 20:26, 15:21] = 1
    scan = _save(tmp_path / "scan.nii.gz", scan_data, affine)
    lesions = _save(tmp_path / "truth.nii.gz", truth, affine)
    run = tmp_path / "run"
    _cli("train", "anomaly", "--data", healthy, "--calibration", cal, "--patch", 16, "--max-steps", 3,
         "--batch-size", 2, "--set", "trainer.progress=false", "--set", "anomaly.seeds=1", "--out", run,
         "--validation", scan, "--validation-lesions", lesions)
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["metrics"]["threshold"] > 0 and meta["method"] == "diffusion"
    # the scoring chosen on the validation scan is stored in the run, and the threshold is calibrated for it
    stored = json.loads((run / "config.json").read_text())["anomaly"]
    assert set(stored["sigmas"]) <= {0.05, 0.1, 0.2, 0.3} and stored["score"] in ("abs", "bandpass")
    assert 0 <= meta["metrics"]["validation_auroc"] <= 1
    _cli("detect", "--run", run, "--data", scan, "--out", tmp_path / "s.nii.gz", "--binary", tmp_path / "b.nii.gz")
    s, b = nib.load(str(tmp_path / "s.nii.gz")), nib.load(str(tmp_path / "b.nii.gz"))
    np.testing.assert_allclose(s.affine, affine)
    assert s.shape == data.shape and set(np.unique(np.asanyarray(b.dataobj))) <= {0, 1}
    score = np.asanyarray(s.dataobj)
    assert score[data == 0].max() == 0 and score[data > 0].max() > 0
    # detect uses the run's settings (one seed, its levels) unless a flag overrides them
    trained = sf_load(run)
    prepared = prepare_like(trained.config["data"], scan)
    np.testing.assert_allclose(score, med.anomaly_map(trained, prepared), rtol=1e-5, atol=1e-7)
    _cli("detect", "--run", run, "--data", scan, "--out", tmp_path / "s2.nii.gz", "--sigmas", 0.2, "--score", "abs")
    np.testing.assert_allclose(np.asanyarray(nib.load(str(tmp_path / "s2.nii.gz")).dataobj),
                               med.anomaly_map(trained, prepared, sigmas=[0.2], score="abs"), rtol=1e-5, atol=1e-7)
    # a level's residual does not depend on the other levels asked for
    one = med.residuals(trained, prepared, [0.2])[0.2][0]
    np.testing.assert_array_equal(one, med.residuals(trained, prepared, [0.1, 0.2])[0.2][0])
    region = prepared.mask
    chosen, auc = med.choose_scoring(trained, prepared, truth > 0, region, levels=[0.1, 0.2])
    assert set(chosen) == {"sigmas", "score", "smooth", "background"} and 0 <= auc <= 1
    assert auc == pytest.approx(med.auroc(med.anomaly_map(trained, prepared, **chosen)[region], truth[region] > 0))
    capsys.readouterr()
    _cli("evaluate", "anomaly", "--run", run, "--scores", tmp_path / "s.nii.gz", "--lesions", lesions,
         "--out", tmp_path / "scores.json")
    table = json.loads((tmp_path / "scores.json").read_text())
    assert {"auroc", "auprc", "best_dice", "dice", "fpr"} <= set(table) and 0 <= table["auroc"] <= 1
    # The baseline of the same code: a denoising autoencoder (fixed sigma) run.
    _cli("train", "anomaly", "--data", healthy, "--method", "dae", "--patch", 16, "--max-steps", 2,
         "--batch-size", 2, "--set", "trainer.progress=false", "--out", tmp_path / "dae")
    cfg = json.loads((tmp_path / "dae" / "config.json").read_text())
    assert cfg["model"]["process"] == {"name": "fixed", "sigma": 0.2}


def test_cli_superres_writes_thin_volume_on_the_right_grid(tmp_path, small_t1):
    data, affine = small_t1
    thin = _save(tmp_path / "thin.nii.gz", data, affine)
    thick_aff = affine.copy()
    thick_aff[:3, 2] *= 4
    thick = _save(tmp_path / "thick.nii.gz", data[:, :, ::4], thick_aff)
    run = tmp_path / "run"
    _cli("train", "superres", "--data", thin, "--patch", 16, "--max-steps", 2, "--batch-size", 2,
         "--set", "trainer.progress=false", "--out", run)
    _cli("superres", "--run", run, "--data", thick, "--out", tmp_path / "out.nii.gz")  # factor from spacing
    out = nib.load(str(tmp_path / "out.nii.gz"))
    n = data[:, :, ::4].shape[2]
    assert out.shape == (40, 48, (n - 1) * 4 + 1)
    np.testing.assert_allclose(out.affine, affine)
    got = np.asanyarray(out.dataobj)
    np.testing.assert_allclose(got[:, :, ::4], data[:, :, ::4], rtol=1e-6)  # the acquired slices, exactly
    between = got[:, :, 1:-1:4]
    assert np.isfinite(between).all() and np.abs(between - 0.5 * (got[:, :, :-4:4] + got[:, :, 4::4])).mean() < 20
    assert main(["superres", "--run", str(run), "--data", str(thin), "--out", str(tmp_path / "x.nii.gz")]) == 2


def test_medical_errors_are_one_line(tmp_path, capsys):
    p = _save(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32), np.eye(4))
    assert main(["train", "anomaly", "--data", str(p), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a 3-D volume" in err[0]
    shutil.rmtree(tmp_path / "r", ignore_errors=True)
    vol = _save(tmp_path / "vol.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    assert main(["train", "anomaly", "--data", str(vol), "--validation", str(vol), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--validation and --validation-lesions go together" in err[0]


def test_cli_generate_is_shared_and_dispatched_on_the_run(tmp_path, small_t1, capsys):
    data, affine = small_t1
    scan = _save(tmp_path / "scan.nii.gz", data, affine)
    run = tmp_path / "run"
    _cli("train", "volume", "--data", scan, "--patch", 16, "--max-steps", 2, "--batch-size", 2,
         "--set", "trainer.progress=false", "--out", run)
    _cli("generate", "--run", run, "--num", 2, "--steps", 3, "--out", tmp_path / "s.nii.gz")
    img = nib.load(str(tmp_path / "s.nii.gz"))
    assert img.shape == (16, 16, 16, 2) and np.allclose(np.diag(img.affine)[:3], 2.0)
    a = np.asanyarray(img.dataobj)
    assert np.isfinite(a).all() and not np.allclose(a[..., 0], a[..., 1])  # own seeds
    _cli("generate", "--run", run, "--num", 1, "--steps", 2, "--shape", 20, 36, 18, "--memory-gb", 0.7,
         "--out", tmp_path / "big.nii.gz")  # larger than one tile: blended tiles, shared noise
    assert nib.load(str(tmp_path / "big.nii.gz")).shape == (20, 36, 18, 1)
    # A run of a task that does not sample with `generate` is refused in one line.
    _cli("train", "superres", "--data", scan, "--patch", 16, "--max-steps", 1, "--batch-size", 2,
         "--set", "trainer.progress=false", "--out", tmp_path / "sr")
    capsys.readouterr()
    assert main(["generate", "--run", str(tmp_path / "sr"), "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "is a 'superres' run" in capsys.readouterr().err


def test_a_verb_is_shared_only_by_tasks_that_say_so():
    from sciffusion.tasks.base import Task, register

    class Clash(Task):
        name, verb, summary = "clash_test", "generate", "x"

    with pytest.raises(ValueError, match="clashes"):
        register(Clash)
