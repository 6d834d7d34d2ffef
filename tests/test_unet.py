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


def test_cond_embedding_makes_a_constant_condition_act_through_every_block():
    """With ``cond_embedding`` a condition constant along the axis reaches the blocks' scale/shift even where the
    first convolution ignores it; without it, that condition would have no path at all. Off by default, so the
    networks of existing runs keep their parameters."""
    torch.manual_seed(0)
    x, c_noise = torch.randn(2, 3, 16), torch.zeros(2)
    c1, c2 = torch.zeros(2, 4, 16), torch.ones(2, 4, 16)
    outs = {}
    for embed in (False, True):
        net = sf.UNet(dims=1, in_channels=3, cond_channels=4, channels=(8, 8), num_res_blocks=1,
                      cond_embedding=embed)
        assert torch.equal(net(x, c_noise, c1), torch.zeros_like(x))  # zero_init holds with the embedding too
        with torch.no_grad():
            for p in net.parameters():                  # undo zero_init (output layer, residual branches)
                if p.ndim > 1 and not p.any():
                    torch.nn.init.normal_(p, std=0.2)
            net.conv_in.conv.weight[:, 3:] = 0.0        # the concatenated condition channels: no path
        outs[embed] = (net(x, c_noise, c1) - net(x, c_noise, c2)).abs().max().item()
        names = {n.split(".")[0] for n, _ in net.named_parameters()}
        assert ("cond_embed" in names) is embed
    assert outs[False] == 0.0 and outs[True] > 1e-3
    with pytest.raises(ValueError, match="cond_embedding needs cond_channels"):
        sf.UNet(dims=1, in_channels=3, cond_embedding=True)


def _splits_agree(f, *xs, sizes=(1, 2, 3, 5, 16)):
    """``f`` of the whole batch equals, to the last bit, ``f`` of the batch cut into pieces of each size."""
    whole, n = f(*xs), len(xs[0])
    return all(torch.equal(torch.cat([f(*(x[i:i + b] for x in xs)) for i in range(0, n, b)]), whole) for b in sizes)


@pytest.mark.parametrize("threads", [1, 2])
def test_inference_products_are_batch_invariant_to_the_last_bit(threads):
    """At inference a sample's matrix products and convolutions do not depend on how many samples share its batch
    (oneDNN and MKL otherwise change kernel, and rounding, with the batch size and thread count), so a forecast made
    in batches, or sharded over processes, is bit for bit the one made in one piece. Training keeps the plain
    kernels (same values up to rounding)."""
    from sciffusion.nets.layers import Conv, Linear

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        lin = Linear(48, 96)
        # with one thread oneDNN gives a 1x1 convolution another kernel below 16 samples (not covered: see Conv)
        convs = [Conv(d, 6, 10, k) for d in (1, 2, 3) for k in ((3,) if threads == 1 else (1, 3))]
        shapes = {1: (40,), 2: (9, 14), 3: (5, 6, 7)}
        with torch.inference_mode():
            assert _splits_agree(lin, torch.randn(19, 48)) and _splits_agree(lin, torch.randn(19, 7, 48))
            for conv in convs:
                dims = conv.conv.weight.ndim - 2
                assert _splits_agree(conv, torch.randn(19, 6, *shapes[dims])), conv
        x = torch.randn(19, 48)
        assert torch.allclose(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-6)
        assert lin(x).requires_grad  # training takes the plain product, with gradients
        if threads == 1:
            return  # a whole network has 1x1 skip convolutions (see above)
        # a whole network, on activations whose per-sample sizes are whole vector widths (element-wise kernels such
        # as SiLU round the last partial vector of a tensor differently: see docs/benchmarks.md)
        net = sf.UNet(dims=1, in_channels=2, cond_channels=3, channels=(8, 16), num_res_blocks=1, cond_embedding=True)
        with torch.no_grad():
            for p in net.parameters():                  # undo zero_init, so every layer carries signal
                if p.ndim > 1 and not p.any():
                    torch.nn.init.normal_(p, std=0.2)
        with torch.inference_mode():
            args = torch.randn(19, 2, 64), torch.rand(19), torch.randn(19, 3, 64)
            assert _splits_agree(net, *args) and net(*args).abs().max() > 0.1
    finally:
        torch.set_num_threads(before)


def test_noise_vector_reaches_the_network_through_the_embedding_only():
    """FGN's way in: the first k input values modulate every block; the rest of the input is not seen."""
    torch.manual_seed(0)
    net = sf.UNet(dims=2, in_channels=1, channels=(8, 16), num_res_blocks=1, zero_init=False, noise_vector=4).eval()
    with torch.no_grad():  # the embedding's projections start at zero (as ADM's): give them weights to see through
        for p in net.parameters():
            if not p.abs().max() > 0:
                p.normal_(0.0, 0.2)
    x = torch.randn(2, 1, 4, 6)
    c = torch.zeros(2)
    with torch.no_grad():
        base = net(x, c)
        later = x.clone()
        later[:, :, 1:] += 5.0  # values past the first 4 of each sample
        first = x.clone()
        first[:, 0, 0, :4] += 1.0
        torch.testing.assert_close(net(later, c), base)
        assert (net(first, c) - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="noise_vector=4 needs at least that many input values"):
        net(torch.randn(2, 1, 1, 3), torch.zeros(2))
