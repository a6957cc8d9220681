"""Where the time goes: torch.profiler tables for a training step or an EDLM sampling run of `small`.

    python benchmarks/profile_step.py train --compile [--batch 64] [--mode max-autotune-no-cudagraphs]
    python benchmarks/profile_step.py edlm [--k 2 --window 0.2]
Prints (and writes under --out) the top kernels by CUDA time, plus the wall time per step / run, so
the kernel total can be compared with the wall clock (the gap is launch latency and host syncs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import timed  # noqa: E402

from edlm.config.model import TransformerConfig  # noqa: E402
from edlm.config.sampling import SamplerConfig  # noqa: E402
from edlm.diffusion.losses import mdlm_nelbo  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.energy.ar import AREnergy  # noqa: E402
from edlm.models.transformer import Transformer  # noqa: E402
from edlm.sampling.loop import model_denoiser, sample  # noqa: E402

V = 50257


def small(causal=False):
    return Transformer(TransformerConfig(vocab_size=V + 1, n_layers=12, d_model=768, n_heads=12, cond_dim=128,
                                         max_len=1024, causal=causal)).cuda()


def table(prof, n=25):
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=n, max_name_column_width=70)


def train(a):
    model = small()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if a.compile:
        model.compile_trunk(per_block=True, **({"mode": a.mode} if a.mode else {}))
    x = torch.randint(0, V, (a.batch, 1024), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = mdlm_nelbo(model, x, LogLinear(), V, generator=g).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dt = timed(step, warmup=4, iters=5)
    print(f"train step {dt * 1e3:.1f} ms ({a.batch * 1024 / dt:.0f} tok/s)", flush=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    return table(prof)


def edlm(a):
    dit, ar = small().eval(), small(causal=True).eval()
    for m in (dit, ar):
        torch.nn.init.normal_(m.final.linear.weight, std=0.02)
        m.compile_trunk(mode="reduce-overhead")
    den = model_denoiser(dit, V)
    energy = AREnergy(ar, den, V)
    cfg = SamplerConfig(steps=128, k=a.k, window=(1 - a.window, 1.0))

    def run():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            sample(den, LogLinear(), V, cfg, batch=a.batch, length=1024, energy=energy, device="cuda",
                   generator=torch.Generator(device="cuda").manual_seed(0))
        torch.cuda.synchronize()

    run()
    t0 = time.perf_counter()
    run()
    print(f"edlm k={a.k} window={a.window} batch={a.batch}: {time.perf_counter() - t0:.3f} s", flush=True)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        run()
    return table(prof, 30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("train", "edlm"))
    ap.add_argument("--out", default="/tmp/profile")
    ap.add_argument("--compile", action="store_true", help="train: compile each block")
    ap.add_argument("--mode", default=None, help="train: torch.compile mode")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 (train), 16 (edlm)")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--window", type=float, default=0.2)
    a = ap.parse_args()
    a.batch = a.batch or (32 if a.what == "train" else 16)
    torch.backends.cuda.matmul.allow_tf32 = True
    t = train(a) if a.what == "train" else edlm(a)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"{a.what}.txt").write_text(t)
    print(t, flush=True)


if __name__ == "__main__":
    main()
