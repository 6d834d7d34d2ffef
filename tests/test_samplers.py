import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sciffusion as sf
from sciffusion.diffusion.exact import GaussianDenoiser, GaussianMixtureDenoiser

ALL = ["euler", "heun", "ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s"]
# Steps at which each sampler's discretisation error is well below the statistical tolerance of the moment tests
# (first-order samplers need many more; convergence order is checked separately below).
STEPS = {"euler": 200, "ddim": 200, "ddpm": 1000, "heun": 40, "dpmpp_2m": 40, "dpmpp_3m": 40, "dpmpp_2s": 40}


def draw(den, n, sampler, steps, seed=0, shape=(1, 1), grid=None, **kw):
    sig = grid if grid is not None else sf.karras_sigmas(steps, 0.01, 80.0, 7.0)
    return sf.sample(den, (n, *shape), sig, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                     dtype=torch.float64, **kw)


@pytest.mark.parametrize("sampler", ALL)
def test_gaussian_moments(sampler):
    den = GaussianDenoiser(mean=1.5, std=0.7)
    x = draw(den, 40_000, sampler, STEPS[sampler]).flatten()
    # Standard errors: mean 0.0035, std 0.0025; a wrong step (e.g. missing 1/sigma or a wrong noise term) is off by
    # >10x.
    assert float(x.mean()) == pytest.approx(1.5, abs=0.02)
    assert float(x.std()) == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize("sampler", ALL)
def test_mixture_weights_and_modes(sampler):
    means = torch.tensor([[[-2.0, 0.0]], [[2.0, 1.0]], [[0.0, 4.0]]], dtype=torch.float64)
    den = GaussianMixtureDenoiser(means, [0.3, 0.5, 0.4], weights=[0.2, 0.5, 0.3])
    x = draw(den, 20_000, sampler, STEPS[sampler], shape=(1, 2))
    k = den.responsibilities(x, torch.zeros(len(x))).argmax(1)
    frac = torch.bincount(k, minlength=3).double() / len(k)
    assert torch.allclose(frac, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), atol=0.02), frac
    for j, sd in enumerate([0.3, 0.5, 0.4]):
        xs = x[k == j].reshape(-1, 2)
        assert torch.allclose(xs.mean(0), means[j, 0], atol=0.05)
        assert float(xs.std(0).mean()) == pytest.approx(sd, rel=0.08)


def ode_error(sampler, steps):
    den = GaussianDenoiser(0.3, 0.5)
    grid = sf.karras_sigmas(steps, 0.05, 10.0, 7.0)[:-1]  # stop at sigma_min: every step is a full-order step
    x_T = torch.linspace(-30, 30, 101, dtype=torch.float64).reshape(101, 1, 1)
    x = sf.SAMPLERS[sampler](den, x_T, grid)
    exact = den.ode_solution(x_T, float(grid[0]), float(grid[-1]))
    return float((x - exact).abs().max())


@pytest.mark.parametrize("sampler,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2), ("ddim", 1), ("dpmpp_2s", 2)])
def test_convergence_order(sampler, order):
    e1, e2, e3 = (ode_error(sampler, n) for n in (40, 80, 160))
    rate = math.log2(e2 / e3)
    assert abs(rate - order) < 0.25, (e1, e2, e3, rate)
    assert e2 < e1


def mixture_ode_errors(sampler, sigma_data, steps=(20, 40, 80, 160), **options):
    """Max error against the ODE's solution (DPM-Solver++(2M) at 4000 steps, ~1e-7) on a bimodal mixture."""
    den = GaussianMixtureDenoiser(torch.tensor([[[-1.0]], [[1.0]]], dtype=torch.float64), [0.5, 0.5])
    x_T = torch.linspace(-30, 30, 101, dtype=torch.float64).reshape(101, 1, 1)
    a = den.sigma_data if sigma_data else 0.0
    ref = sf.dpmpp_2m(den, x_T, sf.karras_sigmas(4000, 0.05, 10.0, 7.0)[:-1], sigma_data=a)
    return [float((sf.SAMPLERS[sampler](den, x_T, sf.karras_sigmas(n, 0.05, 10.0, 7.0)[:-1], sigma_data=a,
                                        **options) - ref).abs().max()) for n in steps]


@pytest.mark.parametrize("sigma_data", [False, True])
def test_dpmpp_3m_is_third_order_and_the_corrector_raises_it(sigma_data):
    # Asymptotically the warm-up steps (first and second order, no history yet) add an h^2 term, so the measured
    # rate over 20-160 steps is 2.6-3.7 for the predictor (2M: 2.0) and 3.5-4.9 with the corrector.
    for options, lo in (({}, 2.5), ({"corrector": True}, 3.4)):
        e = mixture_ode_errors("dpmpp_3m", sigma_data, **options)
        rates = [math.log2(e[i] / e[i + 1]) for i in range(3)]
        assert min(rates) > lo, (options, e, rates)
    e2m = mixture_ode_errors("dpmpp_2m", sigma_data, steps=(40,))
    assert mixture_ode_errors("dpmpp_3m", sigma_data, steps=(40,))[0] < e2m[0] / 3


def test_dpmpp_3m_and_2s_with_sigma_data_are_exact_on_gaussian_data():
    den = GaussianDenoiser(0.0, 0.8)
    x_T = torch.linspace(-40, 40, 81, dtype=torch.float64).reshape(81, 1, 1)
    for steps in (2, 5, 12):
        grid = sf.karras_sigmas(steps, 0.05, 40.0, 7.0)[:-1]
        exact = den.ode_solution(x_T, float(grid[0]), float(grid[-1]))
        for name, kw in (("dpmpp_3m", {}), ("dpmpp_3m", {"corrector": True}), ("dpmpp_2s", {})):
            out = sf.SAMPLERS[name](den, x_T, grid, sigma_data=0.8, **kw)
            # exact up to the float32 sigma every denoiser is called with (2S's midpoints are not float32 values)
            assert float((out - exact).abs().max()) < 1e-6, (name, kw, steps)
            assert float((sf.SAMPLERS[name](den, x_T, grid, **kw) - exact).abs().max()) > 1e-3  # plain is not


def test_dpmpp_2s_churn_is_stochastic_and_calibrated():
    den = GaussianDenoiser(0.0, 0.8)
    x = draw(den, 20_000, "dpmpp_2s", 30, S_churn=20.0, S_tmin=0.05, S_tmax=50.0).flatten()
    assert float(x.std()) == pytest.approx(0.8, abs=0.02)
    a = draw(den, 8, "dpmpp_2s", 10, seed=1, S_churn=20.0)
    b = draw(den, 8, "dpmpp_2s", 10, seed=1)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="no effect"):
        draw(den, 8, "dpmpp_2s", 10, S_churn=10.0, S_tmin=1000.0)


def test_interpolation_weights_integrate_polynomials_exactly():
    from scipy.integrate import quad

    from sciffusion.diffusion import exponential as ex
    for a in (0.0, 0.7):
        lam, lam_next, nodes = -1.3, 0.4, [-1.3, -2.0, -2.9]
        w = ex.interpolation_weights(lam, lam_next, nodes, a)
        poly = lambda t: 1.0 + 0.5 * t - 0.25 * t * t  # noqa: E731 -- any quadratic
        exact = quad(lambda t: poly(t) / math.hypot(math.exp(-t), a), lam, lam_next)[0]
        assert sum(wj * poly(n) for wj, n in zip(w, nodes)) == pytest.approx(exact, rel=1e-10)
        one = ex.interpolation_weights(lam, lam_next, [lam], a)[0]
        assert one == pytest.approx(quad(lambda t: 1 / math.hypot(math.exp(-t), a), lam, lam_next)[0], rel=1e-10)
    with pytest.raises(ValueError, match="distinct"):
        ex.interpolation_weights(0.0, 1.0, [0.0, 0.0], 0.0)


def test_ddim_eta0_is_euler_and_eta1_is_ddpm():
    den = GaussianDenoiser(0.0, 1.0)
    x = torch.randn(64, 1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    grid = sf.EDM().sigmas(12)
    assert torch.allclose(sf.ddim(den, x, grid, eta=0.0), sf.euler(den, x, grid), atol=1e-10)
    a = sf.ddim(den, x, grid, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = sf.ddpm(den, x, grid, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-10)


@given(st.sampled_from(ALL), st.sampled_from([(5, 1, 6), (4, 2, 3, 5), (3, 1, 2, 3, 4)]),
       st.sampled_from([torch.float32, torch.float64]))
def test_member_independent_of_batch(sampler, shape, dtype):
    den = GaussianDenoiser(0.0, 1.0)
    grid = sf.EDM().sigmas(6)
    seeds = list(range(100, 100 + shape[0]))
    kw = {"S_churn": 5.0} if sampler in ("heun", "dpmpp_2s") else {}
    full = sf.sample(den, shape, grid, sampler=sampler, generator=sf.generators_from_seeds(seeds), dtype=dtype, **kw)
    assert full.shape == shape and full.dtype == dtype
    part = sf.sample(den, (2, *shape[1:]), grid, sampler=sampler, generator=sf.generators_from_seeds(seeds[-2:]),
                     dtype=dtype, **kw)
    assert torch.allclose(full[-2:], part, atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert not torch.allclose(full[0], full[1])


def test_heun_churn_is_stochastic_and_calibrated():
    den = GaussianDenoiser(0.0, 0.8)
    x = draw(den, 20_000, "heun", 100, S_churn=40.0, S_tmin=0.05, S_tmax=50.0).flatten()
    assert float(x.std()) == pytest.approx(0.8, abs=0.02)
    a = draw(den, 8, "heun", 10, seed=1, S_churn=40.0)
    b = draw(den, 8, "heun", 10, seed=1, S_churn=0.0)
    assert not torch.allclose(a, b)  # churn must not be silently ignored
    with pytest.raises(ValueError, match="no effect"):
        draw(den, 8, "heun", 10, S_churn=10.0, S_tmin=1000.0)


def test_callback_sees_every_step():
    seen = []
    draw(GaussianDenoiser(), 4, "dpmpp_2m", 7, callback=lambda d: seen.append((d["i"], d["sigma"])))
    assert [i for i, _ in seen] == list(range(7))
    assert seen[0][1] == pytest.approx(80.0, rel=1e-5)


@pytest.mark.parametrize("bad,msg", [([1.0, float("nan"), 0.0], "finite"), ([1.0, 2.0, 0.0], "non-increasing"),
                                     ([1.0], "at least 2"), ([[1.0, 0.0]], "1-D"), ([0.5, -0.1], ">= 0")])
def test_bad_grids(bad, msg):
    with pytest.raises(ValueError, match=msg):
        sf.euler(GaussianDenoiser(), torch.zeros(1, 1, 2), torch.tensor(bad))


def test_bad_sample_shape_and_sampler():
    with pytest.raises(ValueError, match="1-3 spatial dims"):
        sf.euler(GaussianDenoiser(), torch.zeros(2, 3), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="unknown sampler"):
        sf.sample(GaussianDenoiser(), (1, 1, 2), torch.tensor([1.0, 0.0]), sampler="plms")
    with pytest.raises(ValueError, match="generators"):
        sf.sample(GaussianDenoiser(), (3, 1, 2), torch.tensor([1.0, 0.0]), generator=sf.generators_from_seeds(2))


def test_nfe_counts():
    calls = []

    class Counting(GaussianDenoiser):
        def forward(self, x, sigma, **c):
            calls.append(1)
            return super().forward(x, sigma)

    for name in ALL:
        calls.clear()
        draw(Counting(), 2, name, 9)
        assert len(calls) == sf.nfe(name, 9), name


# --- DPM-Solver++(2M) with the Gaussian part integrated exactly (sigma_data > 0) -----------------------------------

def test_dpmpp_sigma_data_exact_on_gaussian_data_at_any_step_count():
    den = GaussianDenoiser(0.0, 0.8)
    x_T = torch.linspace(-40, 40, 81, dtype=torch.float64).reshape(81, 1, 1)
    for steps in (2, 5, 12):
        grid = sf.karras_sigmas(steps, 0.05, 40.0, 7.0)[:-1]  # stop at sigma_min: compare with the ODE's solution
        exact = den.ode_solution(x_T, float(grid[0]), float(grid[-1]))
        assert torch.allclose(sf.dpmpp_2m(den, x_T, grid, sigma_data=0.8), exact, rtol=1e-12, atol=1e-12)
        assert float((sf.dpmpp_2m(den, x_T, grid) - exact).abs().max()) > 1e-3  # the plain solver is not exact
    # Through to sigma 0 (a final denoising step) the standard deviation of the samples is 0.8 up to sigma_min^2.
    x = draw(GaussianDenoiser(0.0, 0.8), 40_000, "dpmpp_2m", 6, sigma_data=0.8).flatten()
    assert float(x.std()) == pytest.approx(0.8, abs=0.015)
    assert float(draw(GaussianDenoiser(0.0, 0.8), 40_000, "dpmpp_2m", 6).std()) > 0.815  # plain: 3% too wide


NEAR_GAUSSIAN = {  # one-dimensional mixtures with unit-ish variance, like normalised residuals and shocks
    "skewed": ([-0.3, 0.4], [0.95, 0.9], [0.55, 0.45]),
    "bimodal": ([-1.0, 1.0], [0.5, 0.5], [0.5, 0.5]),
    "fat-tailed": ([0.0, 0.0], [0.8, 2.0], [0.85, 0.15]),
}


@pytest.mark.parametrize("name", sorted(NEAR_GAUSSIAN))
def test_dpmpp_sigma_data_more_accurate_on_near_gaussian_data(name):
    means, stds, weights = NEAR_GAUSSIAN[name]
    den = GaussianMixtureDenoiser(torch.tensor(means, dtype=torch.float64).reshape(2, 1, 1), stds, weights)
    x_T = 20.0 * torch.randn(2000, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sf.dpmpp_2m(den, x_T, sf.karras_sigmas(1000, 0.01, 20.0, 7.0))
    grid = sf.karras_sigmas(12, 0.01, 20.0, 7.0)
    plain = float((sf.dpmpp_2m(den, x_T, grid) - ref).abs().mean())
    split = float((sf.dpmpp_2m(den, x_T, grid, sigma_data=den.sigma_data) - ref).abs().mean())
    assert split < plain / 4, (plain, split)  # measured 6-38x smaller at 12 steps


def test_dpmpp_sigma_data_second_order_on_a_mixture():
    den = GaussianMixtureDenoiser(torch.tensor([[[-1.0]], [[1.0]]], dtype=torch.float64), [0.5, 0.5])
    x_T = torch.linspace(-30, 30, 101, dtype=torch.float64).reshape(101, 1, 1)
    ref = sf.dpmpp_2m(den, x_T, sf.karras_sigmas(2000, 0.05, 10.0, 7.0)[:-1], sigma_data=den.sigma_data)
    e = [float((sf.dpmpp_2m(den, x_T, sf.karras_sigmas(n, 0.05, 10.0, 7.0)[:-1], sigma_data=den.sigma_data)
                - ref).abs().max()) for n in (40, 80, 160)]
    assert abs(math.log2(e[1] / e[2]) - 2) < 0.35, e


def test_dpmpp_sigma_data_zero_is_the_plain_solver_and_bad_values_fail():
    den = GaussianMixtureDenoiser(torch.tensor([[[-1.0]], [[1.0]]], dtype=torch.float64), [0.5, 0.5])
    x_T = torch.linspace(-30, 30, 11, dtype=torch.float64).reshape(11, 1, 1)
    grid = sf.karras_sigmas(7, 0.01, 20.0, 7.0)
    # the plain step written out: x <- (s'/s) x + (1 - s'/s) d, d the 2M extrapolation of the denoised values
    x, old, h_last = x_T.clone(), None, None
    sig = grid.tolist()
    for s, s_next in zip(sig, sig[1:]):
        d0 = den(x, torch.full((len(x),), s, dtype=torch.float64))
        if s_next == 0:
            x = d0
            continue
        h = math.log(s / s_next)
        d = d0 if old is None else d0 + (d0 - old) * h / (2 * h_last)
        x, old, h_last = (s_next / s) * x + (1 - s_next / s) * d, d0, h
    assert torch.allclose(sf.dpmpp_2m(den, x_T, grid, sigma_data=0.0), x, atol=1e-12)
    with pytest.raises(ValueError, match="sigma_data"):
        sf.dpmpp_2m(den, x_T, grid, sigma_data=-1.0)


def test_sample_batched_exact_gaussian_passes_sigma_data():
    den = sf.Denoiser(torch.nn.Identity(), sigma_data=0.8)  # stand-in net ignored below: a Gaussian denoiser
    gauss = GaussianDenoiser(0.0, 0.8)
    den.forward = lambda x, sigma, **cond: gauss(x, sigma)
    spec = sf.SamplingSpec(sampler="dpmpp_2m", steps=6, sigma_min=0.01, sigma_max=20.0, batch_size=20_000)
    seeds = list(range(20_000))
    exact = sf.sample_batched(den, (1, 1), seeds, spec)
    plain = sf.sample_batched(den, (1, 1), seeds, spec.replace(exact_gaussian=False))
    assert float(exact.std()) == pytest.approx(0.8, abs=0.015)
    assert float(plain.std()) > 0.85
    # samplers that do not take sigma_data run as they are
    heun = spec.replace(sampler="heun", batch_size=100)
    assert torch.equal(sf.sample_batched(den, (1, 1), seeds[:100], heun),
                       sf.sample_batched(den, (1, 1), seeds[:100], heun.replace(exact_gaussian=False)))
