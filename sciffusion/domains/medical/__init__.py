"""Medical volumes: NIfTI/DICOM in and out, 3-D patches and tiled whole-volume passes, anomaly detection with
calibrated thresholds, through-plane super-resolution, and the scores and evaluation protocol."""

from .anomaly import (
    anomaly_map,
    calibrate,
    calibration,
    choose_scoring,
    combine,
    detect,
    residuals,
    score_map,
    screen,
    zscore_map,
)
from .cohort import Cohort, Subject, read_cohort
from .dicom import list_series
from .generate import generate_volumes
from .grids import resample_onto, spacing_grid
from .intensity import IntensityNorm, bias_field, foreground_mask, random_deformation
from .patches import PatchDataset, plan_tiles
from .protocol import brain_benchmark, insert_lesions, mni152, perturb
from .scans import Scan, hemisphere, prepare, prepare_subject
from .scores import auprc, auroc, best_dice, detection_scores, dice, psnr, ssim, threshold_at_fpr
from .superres import cubic_upsample, linear_upsample, superresolve
from .tasks import Anomaly, SuperRes, train_anomaly, train_superres, train_volume
from .tasks import Volume as VolumeGeneration
from .volumes import Volume, read_dicom, read_volume, write_volume

__all__ = ["train_anomaly", "train_superres", "train_volume", "VolumeGeneration", "generate_volumes", "Anomaly",
           "anomaly_map", "calibrate", "calibration", "choose_scoring", "combine", "detect", "screen", "Cohort",
           "Subject", "read_cohort", "list_series", "resample_onto", "spacing_grid", "residuals", "score_map",
           "zscore_map", "IntensityNorm", "bias_field", "foreground_mask", "random_deformation", "PatchDataset",
           "plan_tiles", "brain_benchmark", "insert_lesions", "mni152", "perturb", "Scan", "hemisphere", "prepare",
           "auprc", "auroc", "best_dice", "detection_scores", "dice", "psnr", "ssim", "SuperRes", "cubic_upsample",
           "linear_upsample", "superresolve", "threshold_at_fpr", "Volume", "read_dicom", "read_volume",
           "write_volume", "prepare_subject"]
