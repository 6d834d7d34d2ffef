"""Flow matching (rectified flow) as a process in sigma space: conversions, the velocity parameterisation against
exact denoisers, the loss, the grid, and every sampler on it (issue 31, part 1)."""

import math

import pytest
import torch

import sciffusion as sf
from sciffusion.diffusion import Flow, flow_t_to_sigma, network_target, sigma_to_flow_t
from sciffusion.diffusion.exact import GaussianDenoiser, GaussianMixtureDenoiser

ALL = ["euler", "heun", "ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s"]
STEPS = {"euler": 200, "ddim": 200, "ddpm": 1000, "heun": 40, "dpmpp_2m": 40, "dpmpp_3m": 40, "dpmpp_2s": 40}


class VelocityNet(torch.nn.Module):
    """A 'network' that returns a given velocity field ``v(x_t, t)``: what a perfectly trained flow model outputs."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x_in, c_noise, cond=None):
        return self.v(x_in, c_noise.reshape(-1, *([1] * (x_in.ndim - 1))))


def flow_denoiser(v, sigma_data=1.0):
    """The ``flow`` parameterisation of a velocity field, told the flow time ``t`` as flow networks are."""
    return sf.Denoiser(VelocityNet(v), sigma_data, "flow", c_noise=Flow().c_noise)


def gaussian_velocity(sd):
    """Exact E[n - x0 | x_t] for x0 ~ N(0, sd^2): x_t = (1 - t) x0 + t n is Gaussian with variance
    (1 - t)^2 sd^2 + t^2, and the regressions of x0 and n on it give (t - (1 - t) sd^2) x_t / that variance."""
    return lambda x_t, t: (t - (1 - t) * sd**2) / ((1 - t) ** 2 * sd**2 + t**2) * x_t


def test_time_and_sigma_conversions_round_trip():
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    torch.testing.assert_close(sigma_to_flow_t(flow_t_to_sigma(t)), t)
    torch.testing.assert_close(flow_t_to_sigma(torch.tensor([0.5], dtype=torch.float64)),
                               torch.tensor([1.0], dtype=torch.float64))


@pytest.mark.parametrize("sd", [0.5, 1.0, 2.0])
def test_exact_gaussian_velocity_is_the_exact_denoiser(sd):
    """The flow parameterisation turns the exact velocity of Gaussian data into the exact denoiser, at every
    noise level: c_skip = c_in = 1 / (1 + sigma), c_out = -sigma / (1 + sigma)."""
    den = flow_denoiser(gaussian_velocity(sd), sigma_data=sd)
    exact = GaussianDenoiser(0.0, sd)
    x = torch.randn(64, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    for s in (0.01, 0.3, 1.0, 7.0, 300.0):
        sigma = torch.full((64,), s, dtype=torch.float64)
        torch.testing.assert_close(den(x, sigma), exact(x, sigma), rtol=1e-10, atol=1e-10)


def test_exact_mixture_velocity_is_the_exact_denoiser():
    """For a Gaussian mixture the velocity is (x_t - E[x0 | x_t]) / t from the exact mixture denoiser (x = x_t /
    (1 - t) in sigma space); its flow parameterisation gives the mixture denoiser back."""
    means = torch.tensor([[[-2.0, 0.0]], [[2.0, 1.0]]], dtype=torch.float64)
    mix = GaussianMixtureDenoiser(means, [0.3, 0.5], weights=[0.4, 0.6])

    def v(x_t, t):
        sigma = flow_t_to_sigma(t).reshape(-1)
        return (x_t - mix(x_t / (1 - t), sigma)) / t

    den = flow_denoiser(v, sigma_data=mix.sigma_data)
    x = torch.randn(32, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    for s in (0.05, 0.8, 20.0):
        sigma = torch.full((32,), s, dtype=torch.float64)
        torch.testing.assert_close(den(x, sigma), mix(x, sigma), rtol=1e-9, atol=1e-9)


def test_network_target_and_loss_are_the_velocity_mse():
    """``network_target`` of the flow parameterisation is n - x0, and DiffusionLoss with the ``flow`` weighting is
    the mean squared velocity error of conditional flow matching."""
    g = torch.Generator().manual_seed(2)
    x0, n = torch.randn(8, 2, 5, generator=g), torch.randn(8, 2, 5, generator=g)
    sigma = torch.rand(8, generator=g) * 3 + 0.1
    torch.testing.assert_close(network_target(x0, n, sigma, 1.0, "flow"), n - x0)
    net = torch.nn.Conv1d(2, 2, 1)
    den = sf.Denoiser(lambda x_in, c, cond=None: net(x_in), 1.0, "flow")
    loss = sf.DiffusionLoss(Flow(), weighting="flow")
    got = loss(den, x0, generator=torch.Generator().manual_seed(3))
    g2 = torch.Generator().manual_seed(3)
    s = Flow().sample_sigma(8, generator=g2)
    noise = torch.randn(x0.shape, generator=g2)
    t = sigma_to_flow_t(s)[:, None, None]
    x_t = (1 - t) * x0 + t * noise
    want = ((net(x_t) - (noise - x0)) ** 2).mean((1, 2)).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_training_times_are_logit_normal():
    s = Flow(loc=0.5, scale=0.8).sample_sigma(200_000, generator=torch.Generator().manual_seed(4))
    logit = torch.log(sigma_to_flow_t(s) / (1 - sigma_to_flow_t(s)))
    assert float(logit.mean()) == pytest.approx(0.5, abs=0.01) and float(logit.std()) == pytest.approx(0.8, abs=0.01)


def test_grid_is_uniform_in_time_then_shifted():
    t = Flow(sigma_max=999.0).times(4)
    torch.testing.assert_close(t, torch.tensor([0.999, 0.74925, 0.4995, 0.24975, 0.0], dtype=torch.float64))
    ts = Flow(sigma_max=999.0, shift=3.0).times(4)
    torch.testing.assert_close(ts, 3 * t / (1 + 2 * t))
    assert (ts[1:-1] > t[1:-1]).all()  # a shift > 1 spends the steps at higher noise
    sig = Flow(shift=3.0).sigmas(10)
    sf.validate_sigmas(sig)  # descending, ending in 0: the samplers' grid contract
    assert float(sig[-1]) == 0.0


def test_one_euler_step_is_exact_for_a_point_mass():
    """Straight paths: for a point-mass law every path is a line to the point, and one Euler step lands on it."""
    c = torch.tensor([[[1.5, -0.5]]], dtype=torch.float64)
    den = flow_denoiser(lambda x_t, t: (x_t - c) / t)   # v = n - x0 with x0 = c: (x_t - c) / t
    x = torch.randn(16, 1, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1000
    out = sf.euler(den, x, Flow().sigmas(1).double())
    torch.testing.assert_close(out, c.expand_as(out), rtol=0, atol=1e-9)


def test_euler_in_sigma_is_euler_in_flow_time():
    """The engine's Euler step on x = x_t / (1 - t) is the flow's Euler step x_t' = x_t + (t' - t) v."""
    sd, steps = 0.7, 6
    v = gaussian_velocity(sd)
    proc = Flow(sigma_max=50.0, shift=2.0)
    t = proc.times(steps)
    x_t = torch.randn(32, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x = x_t / (1 - t[0])
    got = sf.euler(flow_denoiser(v, sd), x, flow_t_to_sigma(t))
    for a, b in zip(t[:-1], t[1:]):
        x_t = x_t + (b - a) * v(x_t, a)
    # the samplers hand the denoiser sigma in float32 (samplers.py, _call): agreement to ~1e-8, not 1e-15
    torch.testing.assert_close(got, x_t, rtol=1e-6, atol=1e-7)


def ode_error(sampler, steps):
    den = GaussianDenoiser(0.3, 0.5)
    grid = Flow(sigma_max=10.0).sigmas(steps).double()[:-1]  # stop before 0: every step is a full-order step
    x_T = torch.linspace(-30, 30, 101, dtype=torch.float64).reshape(101, 1, 1)
    x = sf.SAMPLERS[sampler](den, x_T, grid)
    return float((x - den.ode_solution(x_T, float(grid[0]), float(grid[-1]))).abs().max())


@pytest.mark.parametrize("sampler,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order_on_the_flow_grid(sampler, order):
    e1, e2, e3 = (ode_error(sampler, n) for n in (40, 80, 160))
    rate = math.log2(e2 / e3)
    assert abs(rate - order) < 0.3, (e1, e2, e3, rate)


@pytest.mark.parametrize("sampler", ALL)
def test_every_sampler_draws_the_gaussian_on_the_flow_grid(sampler):
    den = GaussianDenoiser(mean=1.5, std=0.7)
    x = sf.sample(den, (40_000, 1, 1), Flow().sigmas(STEPS[sampler]), sampler=sampler,
                  generator=torch.Generator().manual_seed(7), dtype=torch.float64).flatten()
    assert float(x.mean()) == pytest.approx(1.5, abs=0.02)
    assert float(x.std()) == pytest.approx(0.7, abs=0.02)


def test_flow_is_a_process_of_the_training_config():
    from sciffusion.training.module import build_process

    proc = build_process({"name": "flow", "shift": 3.0})
    assert isinstance(proc, Flow) and proc.shift == 3.0


def mixture_velocity_denoiser():
    """The two-mode mixture of test_guidance as a flow model: its exact velocity, flow-parameterised."""
    means = torch.tensor([[[-2.0, -2.0]], [[2.0, 2.0]]], dtype=torch.float64)
    mix = GaussianMixtureDenoiser(means, 0.2)

    def v(x_t, t):
        return (x_t - mix(x_t / (1 - t), flow_t_to_sigma(t).reshape(-1))) / t

    return flow_denoiser(v, mix.sigma_data)


def test_known_values_guidance_works_on_a_flow_model():
    """Imputation by reconstruction guidance, unchanged, on the flow grid: observing the first coordinate of a
    two-mode law picks the mode (the conditional has ~0 mass on the other)."""
    n = 200
    known = torch.zeros(n, 1, 2, dtype=torch.float64)
    known[: n // 2, 0, 0], known[n // 2:, 0, 0] = 2.0, -2.0
    mask = torch.tensor([True, False]).reshape(1, 1, 2)
    wrapped = sf.KnownValues(mixture_velocity_denoiser(), known, mask, mode="guide", guidance_scale=4.0)
    x = sf.sample(wrapped, known.shape, Flow(sigma_max=40.0).sigmas(200), sampler="ddpm",
                  generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(x[:, 0, 0], known[:, 0, 0])
    right = torch.cat([x[: n // 2, 0, 1] > 0, x[n // 2:, 0, 1] < 0]).double().mean()
    assert float(right) > 0.97


def test_fit_sigmas_and_the_likelihood_bound_take_a_flow_model():
    """The grid fit and the denoising bound only see D(x, sigma): a flow model's bound equals its exact
    denoiser's, and the fitted grid is a valid descending grid that samples the law."""
    den, exact = mixture_velocity_denoiser(), GaussianMixtureDenoiser(
        torch.tensor([[[-2.0, -2.0]], [[2.0, 2.0]]], dtype=torch.float64), 0.2)
    x = sf.sample(exact, (256, 1, 2), sf.karras_sigmas(40, 0.01, 40.0), sampler="heun",
                  generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    levels = torch.logspace(-2, 1.5, 24, dtype=torch.float64)
    nll = sf.denoising_nll(den, x, levels, generator=torch.Generator().manual_seed(2))
    ref = sf.denoising_nll(exact, x, levels, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
    grid = sf.fit_sigmas(den, x, 8, "dpmpp_2m", sigma_max=40.0, max_evals=40, reference_steps=64)
    sf.validate_sigmas(grid)
    assert len(grid) == 9 and float(grid[-1]) == 0.0
