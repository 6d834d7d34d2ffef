import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sciffusion as sf
from sciffusion.diffusion.noise import VP

sigmas = st.floats(1e-3, 1e3)


@given(sigmas)
def test_alpha_bar_and_logsnr_round_trip(s):
    sig = torch.tensor([s], dtype=torch.float64)
    assert torch.allclose(sf.alpha_bar_to_sigma(sf.sigma_to_alpha_bar(sig)), sig, rtol=1e-9)
    assert torch.allclose(sf.logsnr_to_sigma(sf.sigma_to_logsnr(sig)), sig, rtol=1e-12)
    # VP identities: alpha_bar = sigmoid(logsnr)
    assert torch.allclose(sf.sigma_to_alpha_bar(sig), torch.sigmoid(sf.sigma_to_logsnr(sig)), rtol=1e-9)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_table_matches_ddpm_cumprod(schedule):
    vp = VP(schedule)
    betas = vp.betas()
    if schedule == "linear":  # Ho et al. 2020
        assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1000)
    assert torch.allclose(vp.alpha_bar(t), alpha_bar, rtol=1e-9)
    if schedule == "cosine":  # Nichol & Dhariwal eq. 17 away from the clipped end
        def f(u):
            return math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        assert float(alpha_bar[499]) == pytest.approx(f(500) / f(0), rel=1e-6)


@given(st.floats(0.0, 999.0))
def test_vp_timestep_round_trip(t):
    vp = VP()
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(vp.sigma_to_t(vp.t_to_sigma(tt))) == pytest.approx(t, abs=1e-6)


@pytest.mark.parametrize("process", [sf.EDM(), sf.VE(), VP(), VP("cosine")], ids=repr)
@pytest.mark.parametrize("steps", [1, 2, 10, 50])
def test_grids_descend_to_zero(process, steps):
    s = process.sigmas(steps)
    assert s.shape == (steps + 1,) and s[-1] == 0
    assert (s[:-1] > 0).all() and (s[1:] <= s[:-1]).all()
    assert float(s[0]) == pytest.approx(process.sigma_max, rel=1e-5)


def test_karras_endpoints_and_rho_formula():
    s = sf.karras_sigmas(18, 0.002, 80.0, 7.0).double()
    assert float(s[0]) == pytest.approx(80.0, rel=1e-6) and float(s[-2]) == pytest.approx(0.002, rel=1e-5)
    i = 5  # Karras eq. 5
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert float(s[i]) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="sigma_min"):
        sf.karras_sigmas(10, 1.0, 0.5)


def test_training_sigma_distributions(gen):
    s = sf.EDM().sample_sigma(200_000, generator=gen)
    assert float(s.log().mean()) == pytest.approx(-1.2, abs=0.01)
    assert float(s.log().std()) == pytest.approx(1.2, abs=0.01)
    ve = sf.VE(0.02, 100.0).sample_sigma(200_000, generator=gen)
    u = (ve.log() - math.log(0.02)) / math.log(5000)  # log-uniform -> uniform
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01) and float(u.var()) == pytest.approx(1 / 12, abs=0.003)
    vp = VP()
    t = vp.sigma_to_t(vp.sample_sigma(100_000, generator=gen))
    assert float(t.mean()) == pytest.approx(499.5, abs=5)


def test_vp_rejects_bad_schedule():
    with pytest.raises(ValueError, match="schedule"):
        VP("quadratic")
