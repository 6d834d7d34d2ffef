"""U-Net throughput: training step and denoiser call (samples/s), peak memory, and achieved FLOP/s as a fraction of
a plain matmul measured in the same process (fp32 2048^2 on the CPU; bf16 8192^2 on CUDA, so there the fraction is
the bf16 model-FLOP utilisation against the dense peak this GPU reaches). ``--compile`` adds the torch.compile'd
U-Net, its compile time counted apart. Where `diffusers` is installed, its `UNet2DModel` at a
matched configuration runs in the same way and the ratio is printed.

    python benchmarks/unet_throughput.py [--device cpu|cuda] [--repeats 3] [--compile] [--cases ...]

Each case runs in a fresh subprocess so that its peak resident memory (CPU) or peak allocated memory (CUDA) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

CASES = {
    # name: (dims, spatial, batch, in, cond, out, channels)
    "2d-64x128": (2, (64, 128), 8, 1, 1, 1, (64, 128, 256)),
    "3d-64^3": (3, (64, 64, 64), 1, 1, 0, 1, (32, 64, 128)),
    # the GPU cases (benchmarks/gpu.sh): a 1-degree-like field and a 96^3 medical patch
    "2d-128x256": (2, (128, 256), 16, 4, 4, 4, (128, 256, 512)),
    "3d-96^3": (3, (96, 96, 96), 2, 1, 0, 1, (64, 128, 256)),
}
CPU_CASES = ("2d-64x128", "3d-64^3")


def build(impl: str, case: str):
    dims, spatial, batch, c_in, c_cond, c_out, ch = CASES[case]
    if impl in ("sciffusion", "sciffusion-compiled"):
        import sciffusion as sf

        net = sf.UNet(dims=dims, in_channels=c_in, cond_channels=c_cond, out_channels=c_out, channels=ch,
                      num_res_blocks=2, attention_levels=(len(ch) - 1,))
        call = torch.compile(net) if impl == "sciffusion-compiled" else net

        def fwd(x, t):
            return call(x[:, :c_in], t, cond=x[:, c_in:] if c_cond else None)
    else:
        from diffusers import UNet2DModel

        net = UNet2DModel(sample_size=spatial, in_channels=c_in + c_cond, out_channels=c_out, block_out_channels=ch,
                          layers_per_block=2, down_block_types=("DownBlock2D",) * (len(ch) - 1) + ("AttnDownBlock2D",),
                          up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (len(ch) - 1))

        def fwd(x, t):
            return net(x, t).sample
    return net, fwd, (batch, c_in + c_cond, *spatial)


def matmul_flops(device: str) -> float:
    """FLOP/s of a plain square matmul: fp32 2048^2 on the CPU; bf16 8192^2 on CUDA (the dense peak that MFU is a
    fraction of, measured rather than read off a data sheet)."""
    if device == "cuda":
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ a
        torch.cuda.synchronize()
        n, t = 20, time.perf_counter()
        for _ in range(n):
            a @ a
        torch.cuda.synchronize()
        return n * 2 * 8192**3 / (time.perf_counter() - t)
    a = torch.randn(2048, 2048, device=device)
    for _ in range(3):
        a @ a
    n, t = 10, time.perf_counter()
    for _ in range(n):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    return n * 2 * 2048**3 / (time.perf_counter() - t)


def one(impl: str, case: str, mode: str, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    net, fwd, shape = build(impl, case)
    net = net.to(device)
    x = torch.randn(shape, device=device)
    t = torch.rand(shape[0], device=device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            if mode == "train":
                net.train()
                loss = fwd(x, t).float().square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                net.eval()
                with torch.no_grad():
                    fwd(x, t)

    if impl == "sciffusion-compiled":  # count FLOPs on the eager network; time the compile on its own
        eager, _, _ = build("sciffusion", case)
        eager = eager.to(device)
        with FlopCounterMode(display=False) as fc:
            out = eager(x[:, :CASES[case][3]], t, cond=x[:, CASES[case][3]:] if CASES[case][4] else None)
            if mode == "train":
                out.float().square().mean().backward()
        flops = fc.get_total_flops()
        t_c = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t_c
    else:
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        compile_s = 0.0
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / repeats
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"impl": impl, "case": case, "mode": mode, "params": sum(p.numel() for p in net.parameters()),
            "samples_per_s": shape[0] / dt, "flops_per_s": flops / dt, "matmul_flops_per_s": matmul_flops(device),
            "peak_gb": peak / 1e9, "compile_s": compile_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=3, metavar=("IMPL", "CASE", "MODE"))
    ap.add_argument("--cases", nargs="+", help=f"default: {', '.join(CPU_CASES)} (CPU), all (CUDA)")
    ap.add_argument("--compile", action="store_true", help="also the torch.compile'd U-Net (compile time apart)")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.one:
        print(json.dumps(one(*args.one, args.device, args.repeats)))
        return
    impls = ["sciffusion"] + (["sciffusion-compiled"] if args.compile else [])
    try:
        import diffusers  # noqa: F401
        impls.append("diffusers")
    except ImportError:
        pass
    cases = args.cases or (list(CASES) if args.device == "cuda" else list(CPU_CASES))
    print(f"# device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}),"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| case | mode | impl | params | samples/s | GFLOP/s | of matmul | peak GB | vs diffusers | vs eager |"
          " compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for mode in ("train", "forward"):
            rows = {}
            for impl in impls:
                if impl == "diffusers" and CASES[case][0] != 2:
                    continue
                out = subprocess.run([sys.executable, __file__, "--device", args.device, "--repeats",
                                      str(args.repeats), "--one", impl, case, mode], capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"| {case} | {mode} | {impl} | failed: {out.stderr.strip().splitlines()[-1]} |")
                    continue
                rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            for impl, r in rows.items():
                ratio = (f"{r['samples_per_s'] / rows['diffusers']['samples_per_s']:.2f}x"
                         if "diffusers" in rows and impl.startswith("sciffusion") else "")
                eager = (f"{r['samples_per_s'] / rows['sciffusion']['samples_per_s']:.2f}x"
                         if impl == "sciffusion-compiled" and "sciffusion" in rows else "")
                print(f"| {case} | {mode} | {impl} | {r['params'] / 1e6:.1f}M | {r['samples_per_s']:.2f} |"
                      f" {r['flops_per_s'] / 1e9:.0f} | {r['flops_per_s'] / r['matmul_flops_per_s']:.0%} |"
                      f" {r['peak_gb']:.2f} | {ratio} | {eager} | {r['compile_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
