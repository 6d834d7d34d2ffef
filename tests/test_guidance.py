import pytest
import torch

import sciffusion as sf
from sciffusion.diffusion.exact import GaussianDenoiser, GaussianMixtureDenoiser


def two_modes():
    means = torch.tensor([[[-2.0, -2.0]], [[2.0, 2.0]]], dtype=torch.float64)
    return GaussianMixtureDenoiser(means, 0.2)


def impute(mode, sampler, scale=4.0, n=400):
    den = two_modes()
    known = torch.zeros(n, 1, 2, dtype=torch.float64)
    known[: n // 2, 0, 0], known[n // 2:, 0, 0] = 2.0, -2.0  # observe the first coordinate only
    mask = torch.tensor([True, False]).reshape(1, 1, 2)
    wrapped = sf.KnownValues(den, known, mask, mode=mode, guidance_scale=scale)
    steps = 200 if sampler == "ddpm" else 30
    x = sf.sample(wrapped, known.shape, sf.karras_sigmas(steps, 0.01, 40.0), sampler=sampler,
                  generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(x[:, 0, 0], known[:, 0, 0])  # observed cells come back exactly
    right = torch.cat([x[: n // 2, 0, 1] > 0, x[n // 2:, 0, 1] < 0]).double().mean()
    return x[: n // 2, 0, 1], float(right)


def test_guided_ancestral_sampling_draws_the_exact_conditional():
    # The conditional of the free coordinate given the observed one is N(+-2, 0.2^2) (the other mode has ~0 mass).
    free, right = impute("guide", "ddpm")
    assert right > 0.99
    assert float(free.mean()) == pytest.approx(2.0, abs=0.05)
    assert float(free.std()) == pytest.approx(0.2, abs=0.04)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_guidance_steers_deterministic_samplers(sampler):
    _, weak = impute("replace", sampler)
    _, strong = impute("guide", sampler, scale=8.0)
    assert strong > 0.95 and strong > weak


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "ddpm"])
def test_replacement_is_informative_but_approximate(sampler):
    # Replacement alone is the known-approximate method (RePaint's harmonisation problem): far better than the
    # 50% of ignoring the observation, not exact.
    _, right = impute("replace", sampler)
    assert right > 0.75


def test_known_values_errors():
    den = GaussianDenoiser()
    with pytest.raises(ValueError, match="does not broadcast"):
        sf.KnownValues(den, torch.zeros(2, 1, 4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        sf.KnownValues(den, torch.full((1, 1, 2), float("nan")), torch.ones(1, 1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        sf.KnownValues(den, torch.zeros(1, 1, 2), torch.ones(1, 1, 2), mode="paint")


class CondLinear(torch.nn.Module):
    """D = c_skip x + cond: a toy conditional denoiser, unconditional when cond is 0."""

    sigma_data = 1.0

    def forward(self, x, sigma, cond=None):
        return 0.5 * x + cond


def test_classifier_free_guidance_formula():
    x, cond = torch.randn(3, 1, 4), torch.randn(3, 1, 4)
    sigma = torch.ones(3)
    d_c, d_u = 0.5 * x + cond, 0.5 * x
    for w in (0.0, 1.0, 3.0):
        out = sf.ClassifierFreeGuidance(CondLinear(), w)(x, sigma, cond=cond)
        assert torch.allclose(out, d_u + w * (d_c - d_u))
    with pytest.raises(ValueError, match="cond"):
        sf.ClassifierFreeGuidance(CondLinear(), 2.0)(x, sigma)


def test_concat_condition():
    a, b = torch.zeros(2, 1, 3, 4), torch.ones(2, 2, 3, 4)
    assert sf.concat_condition(a, b).shape == (2, 3, 3, 4)
    with pytest.raises(ValueError, match="disagree"):
        sf.concat_condition(a, torch.ones(2, 1, 3, 5))


def test_partial_diffusion_one_step_and_grid():
    den = GaussianDenoiser(0.0, 1.0)
    x0 = torch.randn(8, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn_like(x0)
    out = sf.partial_diffusion(den, x0, 0.5, noise=noise)
    assert torch.allclose(out, den(x0 + 0.5 * noise, 0.5))  # one step = D(x0 + sigma n, sigma)
    tiny = sf.partial_diffusion(den, x0, 1e-3, steps=4, sampler="heun", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(tiny, x0, atol=5e-3)  # almost no noise -> almost the input back
    far = sf.partial_diffusion(den, x0, 50.0, steps=30, sampler="heun", generator=torch.Generator().manual_seed(1))
    assert float((far - x0).pow(2).mean()) > 1.0  # fully noised -> an independent draw (expected MSE 2)
    with pytest.raises(ValueError, match="noise shape"):
        sf.partial_diffusion(den, x0, 0.5, noise=torch.zeros(1, 1, 5, 5))


@pytest.mark.parametrize("shape", [(4, 2, 40), (2, 1, 17, 23), (1, 1, 9, 10, 11)])
def test_coarse_noise_is_unit_variance_and_smooth(shape):
    z = sf.coarse_noise(shape, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert z.shape == shape
    assert float(z.std()) == pytest.approx(1.0, abs=0.05)
    # neighbours are strongly correlated, unlike white noise
    a, b = z.narrow(-1, 0, shape[-1] - 1).flatten(), z.narrow(-1, 1, shape[-1] - 1).flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.7


# --- known linear combinations (given portfolio/asset values in whitened coordinates) ---------------------------

def _combinations(n):
    # x ~ N(0, I) per position (channels 4, length 3); day 0: two combinations known, day 1: one, day 2: none.
    g = torch.Generator().manual_seed(0)
    C = [torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(1, 4, generator=g, dtype=torch.float64),
         None]
    y = torch.zeros(n, 2, 3, dtype=torch.float64)
    y[:, :2, 0], y[:, 0, 1] = torch.tensor([1.0, -0.5]), 0.7
    rotation, known, mask = sf.combination_constraints(C, y[:1])    # one group: the same y for every sample
    return C, y, sf.KnownCombinations(GaussianDenoiser(), rotation[None], known, mask), known


@pytest.mark.parametrize("sampler, kw", [("dpmpp_2m", {"sigma_data": 1.0}), ("dpmpp_2m", {}), ("heun", {}),
                                         ("euler", {}), ("ddpm", {})])
def test_known_combinations_hold_exactly_for_every_sampler(sampler, kw):
    C, y, wrapped, known = _combinations(50)
    x = sf.sample(wrapped, (50, 4, 3), sf.karras_sigmas(12, 0.01, 40.0), sampler=sampler,
                  generator=torch.Generator().manual_seed(1), dtype=torch.float64, **kw)
    torch.testing.assert_close(torch.einsum("kc,nc->nk", C[0], x[:, :, 0]), y[:, :2, 0], atol=1e-7, rtol=0)
    torch.testing.assert_close(x[:, :, 1] @ C[1][0], y[:, 0, 1], atol=1e-7, rtol=0)


def test_known_combinations_give_the_exact_gaussian_conditional():
    # The conditional law given C x = y is N(C'(CC')^-1 y, I - C'(CC')^-1 C), in closed form. The free rotated
    # coordinates are independent of the known ones, so the replacement is exact; the solver's own error is removed
    # by integrating the Gaussian part exactly (dpmpp_2m with sigma_data), so what is left is Monte Carlo noise.
    n = 20000
    C, y, wrapped, known = _combinations(n)
    x = sf.sample(wrapped, (n, 4, 3), sf.karras_sigmas(12, 0.01, 40.0), sampler="dpmpp_2m", sigma_data=1.0,
                  generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for day, (c, t) in enumerate([(C[0], torch.tensor([1.0, -0.5], dtype=torch.float64)),
                                  (C[1], torch.tensor([0.7], dtype=torch.float64))]):
        P = c.T @ torch.linalg.solve(c @ c.T, torch.eye(len(c), dtype=torch.float64))
        mean, cov = P @ t, torch.eye(4, dtype=torch.float64) - P @ c
        z = x[:, :, day]
        assert (z.mean(0) - mean).abs().max() < 0.03                  # SE 0.007
        assert (torch.cov(z.T) - cov).abs().max() < 0.04              # SE <= 0.01
    assert (x[:, :, 2].mean(0).abs() < 0.03).all() and ((x[:, :, 2].var(0) - 1).abs() < 0.04).all()


def test_known_combinations_per_group():
    # two groups with different constraints on one channel pair: each sample keeps its own group's
    c = [torch.tensor([[1.0, 1.0]], dtype=torch.float64)]
    r0, k0, mask = sf.combination_constraints(c, torch.tensor([[[2.0]]], dtype=torch.float64))
    r1, k1, _ = sf.combination_constraints([torch.tensor([[1.0, -1.0]], dtype=torch.float64)],
                                            torch.tensor([[[0.5]]], dtype=torch.float64))
    wrapped = sf.KnownCombinations(GaussianDenoiser(), torch.stack([r0, r1]), torch.cat([k0, k1]), mask)
    row = torch.tensor([0, 1, 1, 0])
    x = sf.sample(wrapped, (4, 2, 1), sf.karras_sigmas(8, 0.01, 40.0), sampler="dpmpp_2m", sigma_data=1.0,
                  generator=torch.Generator().manual_seed(0), dtype=torch.float64, extra_args={"row": row})
    sums, diffs = x[:, 0, 0] + x[:, 1, 0], x[:, 0, 0] - x[:, 1, 0]
    torch.testing.assert_close(sums[[0, 3]], torch.full((2,), 2.0, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(diffs[[1, 2]], torch.full((2,), 0.5, dtype=torch.float64), atol=1e-8, rtol=0)


def test_known_combinations_refuse_dependent_rows():
    c = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="not independent"):
        sf.combination_constraints([c], torch.zeros(1, 2, 1))
