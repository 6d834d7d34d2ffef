"""The almost-fair CRPS and the loss of a one-pass generator (``sciffusion.diffusion.crps``), against the fair and
empirical ensemble CRPS of the metrics module (checked there against scoringrules and properscoring)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sciffusion as sf
from sciffusion.metrics import crps_ensemble_np


@settings(max_examples=30, deadline=None)
@given(M=st.integers(2, 6), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_afcrps_is_the_mixture_of_the_fair_and_the_empirical_crps(M, alpha, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(M, 5, 3)), rng.normal(size=(5, 3))
    fair = crps_ensemble_np(np.moveaxis(x, 0, -1), y, fair=True)
    empirical = crps_ensemble_np(np.moveaxis(x, 0, -1), y, fair=False)
    got = sf.afcrps(torch.from_numpy(x), torch.from_numpy(y), alpha).numpy()
    np.testing.assert_allclose(got, alpha * fair + (1 - alpha) * empirical, rtol=1e-10, atol=1e-12)


def test_afcrps_refuses_one_member_and_alpha_out_of_range():
    with pytest.raises(ValueError, match="at least 2 members"):
        sf.afcrps(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        sf.afcrps(torch.zeros(2, 3), torch.zeros(3), alpha=1.5)
    with pytest.raises(ValueError, match="members >= 2"):
        sf.CRPSLoss(members=1)


class Affine(torch.nn.Module):
    """A generator ``mu + s * z`` (per sample, ``mu`` from the condition): its CRPS has a closed form."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x_in, c_noise, cond=None):
        return cond + self.s * x_in * np.sqrt(2.0)  # x0 parameterisation at sigma 1, sigma_data 1: c_in = 1 / sqrt(2)


def test_crps_loss_of_a_gaussian_generator_is_its_closed_form_and_minimal_at_the_truth_law():
    """Truth Y ~ N(0, 1), a generator X ~ N(0, s^2): the fair CRPS is unbiased for E|X - Y| - E|X - X'| / 2
    = sqrt(2 / pi) (sqrt(1 + s^2) - s / sqrt(2)), lowest at s = 1 (the CRPS is proper)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 1, 1, generator=g, dtype=torch.float64)
    cond = torch.zeros_like(x0)
    losses = {}
    for s in (0.5, 1.0, 1.5):
        den = sf.Denoiser(Affine(s), sigma_data=1.0, parameterization="x0")
        loss = sf.CRPSLoss(members=8, alpha=1.0)(den, x0, cond=cond, generator=torch.Generator().manual_seed(1))
        expected = np.sqrt(2 / np.pi) * (np.sqrt(1 + s**2) - s / np.sqrt(2))
        assert float(loss) == pytest.approx(expected, rel=0.02), s
        losses[s] = float(loss)
    assert losses[1.0] < losses[0.5] and losses[1.0] < losses[1.5]


def test_crps_loss_weights_and_masks_cells_as_the_diffusion_loss_does():
    """Per sample, the score is the weighted mean over valid cells: a NaN cell and a masked cell change nothing
    but the cells they are; a weight of 0 is a mask."""
    den = sf.Denoiser(Affine(1.0), sigma_data=1.0, parameterization="x0")
    x0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    cond = torch.zeros_like(x0)
    loss = sf.CRPSLoss(members=3)
    mask = torch.ones_like(x0, dtype=torch.bool)
    mask[:, :, 0] = False
    w = torch.ones(1, 1, 4, 4)
    w[..., 0, :] = 0.0
    nan = x0.clone()
    nan[:, :, 0] = float("nan")
    a = loss(den, x0, mask=mask, cond=cond, generator=torch.Generator().manual_seed(3))
    b = loss(den, x0, weight=w, cond=cond, generator=torch.Generator().manual_seed(3))
    c = loss(den, nan, cond=cond, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(a) and float(a) == pytest.approx(float(b), rel=1e-6) == pytest.approx(float(c), rel=1e-6)
    d = loss(den, x0, cond=cond, generator=torch.Generator().manual_seed(3))
    assert float(d) != pytest.approx(float(a), rel=1e-3)  # the masked row did count before


def test_one_euler_step_on_the_one_pass_grid_is_one_generator_call():
    den = sf.Denoiser(Affine(0.7), sigma_data=1.0, parameterization="x0")
    cond = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    grid = torch.tensor(sf.one_pass_grid(), dtype=torch.float64)
    g = sf.generators_from_seeds([1, 2, 3, 4])
    x = sf.sample(den, (4, 1, 3, 3), grid, sampler="euler", extra_args={"cond": cond}, generator=g)
    z = sf.randn((4, 1, 3, 3), sf.generators_from_seeds([1, 2, 3, 4]))
    torch.testing.assert_close(x, cond + 0.7 * z * sf.GENERATOR_SIGMA, rtol=1e-5, atol=1e-6)


def test_an_untrained_gen_generator_draws_the_gaussian_base_law():
    """``gen``: D = sd z + sd F; with F = 0 (a zero-initialised U-Net) one Euler step on the one-pass grid draws
    N(0, sd^2), the law an untrained diffusion model samples."""
    net = sf.UNet(dims=1, in_channels=1, channels=(8, 16), num_res_blocks=1)  # zero_init: outputs 0
    den = sf.Denoiser(net, sigma_data=0.7, parameterization="gen")
    x = sf.sample(den, (4000, 1, 8), torch.tensor(sf.one_pass_grid()), sampler="euler",
                  generator=torch.Generator().manual_seed(0))
    z = sf.randn((4000, 1, 8), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, 0.7 * z, rtol=1e-5, atol=1e-6)
