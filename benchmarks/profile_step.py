"""Where the time goes: profile one training step and one sampling step of the `small` model on the GPU.

    python benchmarks/profile_step.py --out /tmp/profile [--compile]
Prints the top CUDA kernels by time for each, and the speed of each SDPA backend at the training shape
(fwd + bwd). Writes the profiler tables as text files under --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import timed  # noqa: E402

from edlm.diffusion.losses import mdlm_nelbo  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.models.transformer import Transformer, TransformerConfig  # noqa: E402
from edlm.sampling.loop import SamplerConfig, model_denoiser, sample  # noqa: E402

V = 50257


def small(causal=False):
    return TransformerConfig(vocab_size=V + 1, n_layers=12, d_model=768, n_heads=12, cond_dim=128, max_len=1024,
                             causal=causal)


def table(prof, n=25):
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=n, max_name_column_width=70)


def sdpa_backends():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(32, 12, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    out = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                def f():
                    F.scaled_dot_product_attention(q, k, v).sum().backward()
                out[name] = timed(f, warmup=3, iters=10)
        except Exception as e:  # noqa: BLE001
            out[name] = f"failed: {type(e).__name__}: {str(e)[:80]}"
    with torch.no_grad():
        try:
            out["default_fwd"] = timed(lambda: F.scaled_dot_product_attention(q, k, v), warmup=3, iters=10)
        except Exception as e:  # noqa: BLE001
            out["default_fwd"] = str(e)[:80]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="/tmp/profile")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--train-only", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    print("sdpa fwd+bwd seconds (32x12x1024x64 bf16):", sdpa_backends(), flush=True)

    model = Transformer(small()).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if a.compile:
        model.compile_trunk(per_block=True)
    fwd = model
    x = torch.randint(0, V, (32, 1024), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = mdlm_nelbo(fwd, x, LogLinear(), V, generator=g).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dt = timed(step, warmup=4, iters=5)
    print(f"train step {dt * 1e3:.1f} ms ({32 * 1024 / dt:.0f} tok/s)", flush=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    t = table(prof)
    (out / f"train{'_compiled' if a.compile else ''}.txt").write_text(t)
    print(t, flush=True)

    if a.train_only:
        return
    model.eval().to(torch.bfloat16)
    den = model_denoiser(model, V)
    for B in (16, 1):
        def run(steps=8, B=B):
            with torch.no_grad():
                sample(den, LogLinear(), V, SamplerConfig(steps=steps), batch=B, length=1024, device="cuda",
                       generator=torch.Generator(device="cuda").manual_seed(0))
        dt = timed(run, warmup=1, iters=2) / 8
        print(f"sampling batch {B}: {dt * 1e3:.1f} ms/step", flush=True)
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            run()
            torch.cuda.synchronize()
        t = table(prof, 20)
        (out / f"sample_b{B}.txt").write_text(t)
        print(t, flush=True)


if __name__ == "__main__":
    main()
