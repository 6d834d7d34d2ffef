import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sciffusion as sf


def rand_params(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@given(st.integers(1, 3), st.data())
def test_any_size_any_rank(dims, data):
    size = data.draw(st.lists(st.integers(3, 13), min_size=dims, max_size=dims))
    net = sf.UNet(dims=dims, in_channels=2, cond_channels=1, channels=(8, 16, 16), attention_levels=(1,))
    x, c = torch.randn(2, 2, *size), torch.randn(2, 1, *size)
    out = net(x, torch.randn(2), cond=c)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_periodic_axis_is_shift_equivariant(dims):
    # Rolling the input along the periodic (last) axis by a multiple of the downsampling factor rolls the output.
    periodic = (False,) * (dims - 1) + (True,)
    net = rand_params(sf.UNet(dims=dims, channels=(8, 16), attention_levels=(1,), periodic=periodic)).eval()
    size = (6,) * (dims - 1) + (16,)
    x = torch.randn(1, 1, *size)
    c = torch.zeros(1)
    out, out_rolled = net(x, c), net(torch.roll(x, 4, -1), c)
    assert torch.allclose(torch.roll(out, 4, -1), out_rolled, atol=1e-5)
    if dims == 2:  # the non-periodic axis is not equivariant (zero padding at the edges)
        assert not torch.allclose(torch.roll(out, 2, -2), net(torch.roll(x, 2, -2), c), atol=1e-3)


def test_errors_name_the_problem():
    net = sf.UNet(dims=2, in_channels=2, cond_channels=1, channels=(8, 16))
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="channel mismatch"):
        net(torch.randn(1, 3, 8, 8), torch.zeros(1), cond=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="condition mismatch"):
        net(x, torch.zeros(1), cond=torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="expects 1 condition channels"):
        net(x, torch.zeros(1))
    with pytest.raises(ValueError, match="spatial dims"):
        net(torch.randn(1, 2, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="dims must be"):
        sf.UNet(dims=4)
    with pytest.raises(ValueError, match="one flag per spatial axis"):
        sf.UNet(dims=2, periodic=(True,))


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = rand_params(sf.UNet(dims=2, channels=(8, 16), attention_levels=(0,)))
    b = rand_params(sf.UNet(dims=2, channels=(8, 16), attention_levels=(0,), gradient_checkpointing=True))
    x = torch.randn(2, 1, 8, 12)
    for net in (a, b):
        net.train()
        net(x, torch.ones(2)).square().sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5)


def test_dtype_follows_input_and_bf16_autocast():
    net = rand_params(sf.UNet(dims=1, channels=(8, 16)))
    den = sf.Denoiser(net.double(), 1.0)
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    assert den(x, torch.ones(2)).dtype == torch.float64
    net = net.float()
    den = sf.Denoiser(net, 1.0)
    x = torch.randn(2, 1, 16)
    ref = den(x, torch.ones(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = den(x, torch.ones(2))
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05 * float(ref.abs().max()) + 1e-3)
