"""GPU checks: run with `python -m pytest -m gpu` on a CUDA machine (deselected by default, skipped without CUDA)."""

import pytest
import torch

import sciffusion as sf

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_unet_and_sampler_on_cuda_with_bf16(dims):
    net = sf.UNet(dims=dims, channels=(16, 32), attention_levels=(1,)).cuda()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    den = sf.Denoiser(net, 1.0)
    shape = (4, 1) + (16,) * dims
    gens = sf.generators_from_seeds(range(4), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        x = sf.sample(den, shape, sf.EDM().sigmas(8), sampler="heun", generator=gens, device="cuda")
    assert x.device.type == "cuda" and x.dtype == torch.float32 and torch.isfinite(x).all()
    part = sf.sample(den, (2,) + shape[1:], sf.EDM().sigmas(8), sampler="heun", device="cuda",
                     generator=sf.generators_from_seeds(range(2, 4), device="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        again = sf.sample(den, (2,) + shape[1:], sf.EDM().sigmas(8), sampler="heun", device="cuda",
                          generator=sf.generators_from_seeds(range(2, 4), device="cuda"))
    assert torch.allclose(x[2:], again, atol=1e-4)  # batch-size independent members on the GPU
    assert torch.allclose(part, again, atol=0.05 * float(part.abs().max()) + 1e-2)  # bf16 close to fp32


def test_training_path_on_cuda_uses_bf16_and_samples(tmp_path):
    from sciffusion.training.fit import default_precision

    assert default_precision("auto") == "bf16-mixed"
    x = torch.randn(32, 2, 16, 16)
    dm = sf.DiffusionDataModule.from_arrays(x, val_fraction=0.25, batch_size=8)
    model = sf.DiffusionModule(net=dict(dims=2, in_channels=2, channels=[16, 32], num_res_blocks=1), warmup_steps=2)
    trainer = sf.fit(model, dm, tmp_path, max_steps=4, accelerator="gpu", devices=1, progress=False)
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 4
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast
    sf.export_run(tmp_path / "run", model, trainer, {"task": "gpu"}, dm.normalizer)
    run = sf.load_trained(tmp_path / "run").to("cuda")
    z = run.sample((2, 16, 16), list(range(5)), sampling=sf.SamplingSpec(steps=6, sigma_max=20.0, batch_size=2),
                   device="cuda")
    assert z.device.type == "cuda" and z.dtype == torch.float32 and torch.isfinite(z).all()


def test_tiles_on_cuda_while_the_volume_stays_on_the_host():
    net = sf.UNet(dims=3, channels=(8, 16), zero_init=False).cuda().eval()
    den = sf.Denoiser(net, 0.3)
    x = torch.randn(1, 1, 40, 36, 28)  # on the host
    with torch.inference_mode():
        host = sf.TiledDenoiser(den.cpu(), 16, 4, 2)(x, 0.5)
        split = sf.TiledDenoiser(den.cuda(), 16, 4, 2, device="cuda")(x, 0.5)
    assert split.device.type == "cpu" and torch.allclose(split, host, atol=1e-4)
