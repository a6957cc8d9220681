"""Sampling speed of MDLM and EDLM (AR energy) for the paper-size model at length 1024.

    python benchmarks/sampling_speed.py --out results/bench_sampling.json
Reports seconds per sequence, peak memory, and the EDLM overhead next to its cost model
    1 + (fraction of steps in the window) * (energy forward on B*k / denoiser forward on B).
Weights are random (speed does not depend on them, except through caching, which at 1024 tokens and
<= 1024 steps rarely triggers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, timed, write_json  # noqa: E402

from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.energy.ar import AREnergy  # noqa: E402
from edlm.models.transformer import Transformer, TransformerConfig  # noqa: E402
from edlm.sampling.loop import SamplerConfig, model_denoiser, sample  # noqa: E402


def build(V, L, causal):
    cfg = TransformerConfig(vocab_size=V + 1, n_layers=12, d_model=768, n_heads=12, cond_dim=128, max_len=L,
                            causal=causal)
    m = Transformer(cfg).cuda().eval()
    torch.nn.init.normal_(m.final.linear.weight, std=0.02)  # non-uniform outputs
    return m.to(torch.bfloat16)


def run_one(den, energy, mask, L, B, steps, k, window):
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    _, st = sample(den, LogLinear(), mask, SamplerConfig(steps=steps, k=k, window=window), batch=B, length=L,
                   energy=energy, generator=g, device="cuda")
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return dt, st, torch.cuda.max_memory_allocated() / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/bench_sampling.json")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--mdlm", default="1:128,16:128,64:128,16:1024", help="batch:steps pairs")
    ap.add_argument("--edlm", default="16:128:2:0.2,16:128:2:1.0,16:128:8:0.2,16:128:4:1.0,64:128:8:0.2",
                    help="batch:steps:k:window_width tuples")
    a = ap.parse_args()
    V, L, mask = a.vocab, a.length, a.vocab
    den_model, ar = build(V, L, False), build(V, L, True)
    den = model_denoiser(den_model, mask)

    def d(x, t):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return den(x, t)

    d.time_conditioning = False
    energy = AREnergy(ar, d, mask)
    rows = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        run_one(d, None, mask, L, 4, 8, 1, None)  # warm-up
        for spec in a.mdlm.split(","):
            B, S = map(int, spec.split(":"))
            dt, st, mem = run_one(d, None, mask, L, B, S, 1, None)
            rows.append({"method": "mdlm", "batch": B, "steps": S, "seconds_per_seq": dt / B, "seconds": dt,
                         "forwards": st.forwards, "peak_memory_gb": mem})
            print(rows[-1], flush=True)
        for spec in a.edlm.split(","):
            B, S, k, w = spec.split(":")
            B, S, k, w = int(B), int(S), int(k), float(w)
            base = next((r for r in rows if r["method"] == "mdlm" and r["batch"] == B and r["steps"] == S), None)
            if base is None:
                dt0, _, _ = run_one(d, None, mask, L, B, S, 1, None)
            else:
                dt0 = base["seconds"]
            try:
                dt, st, mem = run_one(d, energy, mask, L, B, S, k, (1 - w, 1.0))
            except torch.OutOfMemoryError:
                rows.append({"method": "edlm-ar", "batch": B, "steps": S, "k": k, "window": w, "oom": True})
                torch.cuda.empty_cache()
                continue
            x = torch.randint(0, V, (B, L), device="cuda")
            xk = torch.randint(0, V, (B * k, L), device="cuda")
            t_den = timed(lambda: d(x, 1.0), warmup=2, iters=5)  # noqa: B023 (called at once)
            t_en = timed(lambda: energy.ar_log_prob(xk, xk), warmup=2, iters=5)  # noqa: B023
            frac = st.energy_steps / S
            rows.append({"method": "edlm-ar", "batch": B, "steps": S, "k": k, "window": w,
                         "seconds_per_seq": dt / B, "seconds": dt, "overhead": dt / dt0,
                         "cost_model": 1 + frac * t_en / t_den, "energy_steps": st.energy_steps,
                         "t_denoiser_fwd": t_den, "t_energy_fwd": t_en, "peak_memory_gb": mem})
            print(rows[-1], flush=True)
    write_json(a.out, {**device_info(), "model": "small DiT + small causal AR (12x768), bf16, random weights",
                       "length": L, "vocab": V, "rows": rows})


if __name__ == "__main__":
    main()
