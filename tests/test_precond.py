import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sciffusion as sf
from sciffusion.diffusion.precond import coefficients, network_target


class Oracle(torch.nn.Module):
    """A network that outputs exactly the training target of its parameterisation for known (x0, noise)."""

    def __init__(self, x0, noise, sigma, sd, param):
        super().__init__()
        self.out = network_target(x0, noise, sigma, sd, param)

    def forward(self, x_in, c_noise, **cond):
        return self.out


shapes = st.sampled_from([(3, 2, 7), (2, 1, 5, 6), (2, 2, 3, 4, 5)])


@given(shapes, st.floats(0.01, 50.0), st.floats(0.1, 3.0), st.sampled_from([torch.float32, torch.float64]))
def test_adapters_agree_on_x0(shape, s, sd, dtype):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, dtype=dtype)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    sigma = torch.full((shape[0],), s, dtype=torch.float64)
    x = x0 + s * noise
    for param in ("edm", "v", "eps", "x0"):
        D = sf.Denoiser(Oracle(x0.double(), noise.double(), sigma, sd, param), sd, param)(x, sigma)
        assert D.dtype == dtype and D.shape == x0.shape
        tol = 1e-4 * max(1.0, s) if dtype == torch.float32 else 1e-9 * max(1.0, s)
        assert torch.allclose(D.double(), x0.double(), atol=tol), param


def test_edm_coefficients_match_paper():
    s, sd = torch.tensor(0.7, dtype=torch.float64), 0.5
    c_skip, c_out, c_in = coefficients(s, sd, "edm")
    assert float(c_skip) == pytest.approx(sd**2 / (0.49 + sd**2))
    assert float(c_out) == pytest.approx(0.7 * sd / (0.49 + sd**2) ** 0.5)
    assert float(c_in) == pytest.approx(1 / (0.49 + sd**2) ** 0.5)


def test_v_target_is_salimans_ho_v():
    # with sigma_data = 1: z = alpha x0 + s_vp n, v = alpha n - s_vp x0
    g = torch.Generator().manual_seed(1)
    x0, n = torch.randn(4, 1, 8, generator=g, dtype=torch.float64), torch.randn(4, 1, 8, generator=g,
                                                                                dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 2.0, 9.0], dtype=torch.float64)
    alpha = (1 + sigma**2).rsqrt()[:, None, None]
    s_vp = (sigma / (1 + sigma**2).sqrt())[:, None, None]
    assert torch.allclose(network_target(x0, n, sigma, 1.0, "v"), alpha * n - s_vp * x0, atol=1e-12)


def test_vp_timestep_c_noise_reaches_the_network():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, c_noise):
            seen["c"] = c_noise
            return torch.zeros_like(x)

    vp = sf.VP()
    den = sf.Denoiser(Net(), 1.0, "eps", c_noise=vp.c_noise)
    sig = vp.t_to_sigma(torch.tensor([10.0, 500.0])).float()
    den(torch.zeros(2, 1, 4), sig)
    assert torch.allclose(seen["c"].double(), torch.tensor([10.0, 500.0], dtype=torch.float64), atol=1e-3)


def test_measure_sigma_data_ignores_nan_and_mask():
    x = torch.tensor([[[1.0, -1.0, float("nan"), 100.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    assert sf.measure_sigma_data(x, mask) == pytest.approx(torch.tensor([1.0, -1.0]).std().item())
    with pytest.raises(ValueError, match="constant"):
        sf.measure_sigma_data(torch.ones(1, 1, 5))


def test_bad_input_errors():
    den = sf.Denoiser(sf.UNet(dims=1, in_channels=2, channels=(8, 16)), 1.0)
    x = torch.randn(2, 2, 8)
    with pytest.raises(ValueError, match="1-3 spatial dims"):
        den(torch.randn(2, 8), torch.ones(2))
    with pytest.raises(ValueError, match="finite"):
        den(x, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="finite"):
        den(x, float("nan"))
    with pytest.raises(ValueError, match="channel mismatch"):
        den(torch.randn(2, 3, 8), torch.ones(2))
    with pytest.raises(ValueError, match=r"shaped \(batch,\)"):
        den(x, torch.ones(3))
    with pytest.raises(ValueError, match="parameterization"):
        sf.Denoiser(torch.nn.Identity(), 1.0, "score")


def test_towards_gaussian_blends_with_the_exact_base_denoiser():
    """w = 0 is the exact denoiser of N(0, sigma_data^2), w = 1 the model, and between them a convex blend; the
    blend of two Gaussian laws' exact denoisers is checked at many noise levels."""
    from sciffusion.diffusion import GaussianDenoiser, TowardsGaussian

    model = GaussianDenoiser(mean=0.0, std=2.0)  # sigma_data 2: the base is N(0, 4), the same law
    other = GaussianDenoiser(mean=1.0, std=0.5)
    other.sigma_data = 2.0  # declare a base N(0, 4) that differs from the model
    x = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.logspace(-2, 1.5, 64)
    base = GaussianDenoiser(0.0, 2.0)(x, sigma)
    for w in (0.0, 0.3, 1.0):
        got = TowardsGaussian(other, w)(x, sigma)
        torch.testing.assert_close(got, base + w * (other(x, sigma) - base))
    torch.testing.assert_close(TowardsGaussian(model, 0.4)(x, sigma), model(x, sigma))  # base == model: no change
    assert TowardsGaussian(other, 0.0).sigma_data == 2.0
