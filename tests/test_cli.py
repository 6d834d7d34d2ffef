import json
import subprocess
import sys

import pytest

import sciffusion as sf
from sciffusion.cli import main


def test_info_reports_a_run(tmp_path, capsys):
    net = sf.UNet(dims=1, channels=(8, 16))
    sf.save_run(tmp_path / "run", weights=net.state_dict(), config={"task": "toy"},
                metadata={"variables": ["sst"], "steps_trained": 12})
    assert main(["info", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "toy" and out["variables"] == ["sst"] and out["steps_trained"] == 12
    assert out["parameters"] == sum(p.numel() for p in net.parameters())


def test_info_error_is_one_line_exit_2(tmp_path):
    (tmp_path / "half").mkdir()
    proc = subprocess.run([sys.executable, "-m", "sciffusion.cli", "info", str(tmp_path / "half")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a complete sciffusion run" in proc.stderr


def test_sliced_wasserstein_matches_scipy_in_1d():
    import scipy.stats
    import torch

    from sciffusion.metrics import sliced_wasserstein

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 1, generator=g), torch.randn(500, 1, generator=g) * 2 + 1
    # In 1-D every unit direction is +-1 and W1 is symmetric under reflection: sliced W1 = W1.
    ref = scipy.stats.wasserstein_distance(a.flatten().numpy(), b.flatten().numpy())
    assert sliced_wasserstein(a, b, projections=8) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="equal sample counts"):
        sliced_wasserstein(a, b[:10])
