"""Every climate verb on a Copernicus-style archive of yearly netCDF files, in one interpreter, run by the tests as
a subprocess so that a crash inside netCDF-C/HDF5 (SIGSEGV) fails the test instead of ending pytest.

usage: yearly_archive.py DIR
Writes three yearly monthly ERA5-layout files (``valid_time`` in seconds, one pressure level, descending latitude,
int16 packing, scalar ``number``, string ``expver``) and trains, forecasts in three batches of initial times,
evaluates, trains with a forcing, and downscales, all through ``sciffusion.cli.main``; exits with the first verb's
non-zero status.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for layouts

from layouts import by_year, era5  # noqa: E402

from sciffusion.cli import main  # noqa: E402

out = pathlib.Path(sys.argv[1])
ds, enc = era5("2000-01-01", periods=36, levels=(850,), nlat=9, nlon=16, freq="MS")
by_year(ds, enc, out / "era5_monthly", "valid_time")
data = str(out / "era5_monthly_*.nc")
tiny = ["--accelerator", "cpu", "--set", "trainer.progress=false", "--set", "model.net.channels=[8,16]",
        "--set", "sampling.steps=2", "--set", "sampling.calibration_members=2", "--max-steps", "2", "--threads", "1"]
train = ["--data", data, "--train-period", "2000-01/2001-12", *tiny]
verbs = [
    ["train", "forecast", *train, "--variables", "t", "--out", str(out / "run")],
    # 12 initial times, 4 at a time: three batches, each reading the archive again
    ["forecast", "--run", str(out / "run"), "--data", data, "--init-period", "2002-01/2002-12", "--leads", "2",
     "--members", "2", "--batch-inits", "4", "--threads", "1", "--out", str(out / "fc.nc")],
    ["forecast", "--run", str(out / "run"), "--data", data, "--init-period", "2002-01/2002-12", "--leads", "2",
     "--members", "2", "--threads", "1", "--out", str(out / "fc_one.nc")],  # the same in one batch
    ["evaluate", "forecast", "--run", str(out / "run"), "--data", data, "--forecast", str(out / "fc.nc"),
     "--baselines", "persistence", "climatology", "--out", str(out / "scores.json")],
    ["train", "forecast", *train, "--variables", "t", "--forcings", "t2m", "--out", str(out / "forced")],
    ["forecast", "--run", str(out / "forced"), "--data", data, "--init-period", "2002-01/2002-09", "--leads", "2",
     "--members", "2", "--batch-inits", "3", "--threads", "1", "--out", str(out / "forced.nc")],
    ["train", "downscale", *train, "--variables", "t2m", "--factor", "2", "--out", str(out / "down")],
    ["downscale", "--run", str(out / "down"), "--data", data, "--period", "2002-01/2002-06", "--members", "2",
     "--threads", "1", "--out", str(out / "down.nc")],
    ["evaluate", "downscale", "--run", str(out / "down"), "--data", data, "--downscaled", str(out / "down.nc"),
     "--out", str(out / "down.json")],
]
for verb in verbs:
    code = main(verb)
    if code:
        print(f"exit {code} from {' '.join(verb[:2])}", file=sys.stderr)
        sys.exit(code)
