import pytest
import torch

import sciffusion as sf
from sciffusion.diffusion.exact import GaussianDenoiser
from sciffusion.diffusion.loss import loss_weight


def run(loss, den, x0, seed=0, **kw):
    return loss(den, x0, generator=torch.Generator().manual_seed(seed), sigma=torch.full((x0.shape[0],), 0.7), **kw)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.sigma_data = 1.0

    def forward(self, x, sigma, **cond):
        return self.a * x


def test_nan_cells_do_not_contribute():
    loss = sf.DiffusionLoss()
    x0 = torch.randn(4, 1, 6, 7, generator=torch.Generator().manual_seed(0))
    x0[:, :, :2, :3] = float("nan")
    den = Linear()
    l1 = run(loss, den, x0)
    l1.backward()
    assert torch.isfinite(l1) and torch.isfinite(den.a.grad)
    x_masked = x0.clone()
    x_masked[:, :, :2, :3] = 1e6  # whatever sits in the masked cells must not matter
    mask = ~torch.isnan(x0)
    l2 = run(loss, Linear(), x_masked, mask=mask)
    assert float(l1.detach()) == pytest.approx(float(l2), rel=1e-6)


def test_weight_map_zero_equals_mask_and_weights_scale():
    loss = sf.DiffusionLoss(weighting="uniform")
    x0 = torch.randn(3, 2, 10, generator=torch.Generator().manual_seed(1))
    w = torch.ones(1, 1, 10)
    w[..., 5:] = 0
    lw = run(loss, Linear(), x0, weight=w)
    lm = run(loss, Linear(), x0, mask=w.bool())
    assert float(lw) == pytest.approx(float(lm), rel=1e-6)


def test_exact_denoiser_attains_the_bayes_error():
    # For N(0, 1) data the posterior variance at sigma is s^2 / (1 + s^2): the x0-MSE of the exact denoiser.
    loss = sf.DiffusionLoss(weighting="uniform")
    x0 = torch.randn(20_000, 1, 4, generator=torch.Generator().manual_seed(2))
    val = run(loss, GaussianDenoiser(0.0, 1.0), x0)
    assert float(val) * 1.0 == pytest.approx(0.49 / 1.49, rel=0.02)  # uniform weight is 1/sd^2 = 1


def test_weightings():
    s = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    sd = 0.5
    assert torch.allclose(loss_weight(s, sd, "edm"), (s**2 + sd**2) / (s * sd) ** 2)
    snr = sd**2 / s**2
    assert torch.allclose(loss_weight(s, sd, "min_snr", gamma=5.0), torch.clamp(snr, max=5.0) / sd**2)
    assert torch.allclose(loss_weight(s, sd, "snr"), 1 / s**2)
    with pytest.raises(ValueError, match="weighting"):
        sf.DiffusionLoss(weighting="p2")


def test_cond_dropout_zeroes_some_conditions():
    seen = []

    class Rec(torch.nn.Module):
        sigma_data = 1.0

        def forward(self, x, sigma, cond=None):
            seen.append(cond)
            return x

    loss = sf.DiffusionLoss(cond_dropout=0.5)
    cond = torch.ones(1000, 1, 3)
    loss(Rec(), torch.zeros(1000, 1, 3), cond=cond, generator=torch.Generator().manual_seed(0))
    dropped = (seen[0].flatten(1).sum(1) == 0).float().mean()
    assert 0.4 < float(dropped) < 0.6
