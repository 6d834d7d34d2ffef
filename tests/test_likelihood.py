"""The denoising bound on -log p(x) against closed forms (Gaussian and Gaussian-mixture data, exact denoisers)."""

import math

import pytest
import torch

from sciffusion.diffusion import GaussianDenoiser, GaussianMixtureDenoiser, denoising_nll, generators_from_seeds

FINE = torch.logspace(-3, 3, 241, dtype=torch.float64)


def nll(denoiser, x, sigmas=FINE, draws=2, seed=0, **kw):
    g = generators_from_seeds([seed] * len(x))  # the same noise for every sample: differences are exact
    return denoising_nll(denoiser, x, sigmas, draws=draws, generator=g, **kw)


def test_exact_for_gaussian_data_up_to_a_constant():
    x = torch.randn(6, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    for std in (1.0, 2.5):
        got = nll(GaussianDenoiser(0.0, std), x)
        want = 0.5 * x.square().sum((1, 2)) / std**2  # -log N(x; 0, std^2 I) + const
        torch.testing.assert_close(got - got[0], want - want[0], rtol=2e-3, atol=2e-3)


def test_reference_gives_the_log_density_ratio():
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = nll(GaussianDenoiser(0.5, 2.0), x, reference=GaussianDenoiser(0.0, 1.0))
    want = 0.5 * ((x - 0.5).square() / 4 - x.square()).sum((1, 2, 3))
    torch.testing.assert_close(got - got[0], want - want[0], rtol=2e-3, atol=2e-3)
    # a denoiser equal to the reference scores exactly zero whatever the noise
    same = denoising_nll(GaussianDenoiser(), x, FINE[::20], draws=4, reference=GaussianDenoiser())
    assert same.abs().max() == 0


def test_gaussian_mixture_log_density():
    mix = GaussianMixtureDenoiser(torch.tensor([[-2.0, 0.0], [2.0, 1.0]])[:, None, :], [0.5, 0.8], [0.3, 0.7])
    x = torch.tensor([[-2.0, 0.1], [2.2, 0.8], [0.0, 0.5], [1.0, -1.0], [-3.0, 1.0]], dtype=torch.float64)[:, None]

    def log_density(x):
        out = 0.0
        for mu, s, w in zip(mix.means, mix.stds, mix.weights):
            out = out + w * torch.exp(-0.5 * (x - mu).square().sum((1, 2)) / s**2) / (2 * math.pi * s**2)
        return out.log()

    R = 20000  # each point repeated: one batched call per level and noise sign
    got = denoising_nll(mix, x.repeat_interleave(R, 0), torch.logspace(-3, 2.5, 81, dtype=torch.float64), draws=2,
                        generator=torch.Generator().manual_seed(3)).reshape(len(x), R).mean(1)
    want = -log_density(x)
    # Monte Carlo SD ~0.02; the differences reach 4 nats
    torch.testing.assert_close(got - got[0], want - want[0], rtol=0, atol=0.1)


def test_bad_arguments():
    x = torch.zeros(2, 1, 4)
    with pytest.raises(ValueError, match="even"):
        denoising_nll(GaussianDenoiser(), x, FINE, draws=3)
    with pytest.raises(ValueError, match="two noise levels"):
        denoising_nll(GaussianDenoiser(), x, torch.tensor([0.5]))
