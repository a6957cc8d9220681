"""CPU throughput of the `tiny` preset (4 x 128, length 64): training and sampling tokens/s on N threads.

    python benchmarks/cpu_throughput.py --threads 2 --out results/cpu_tiny.json      (< 1 minute)
Training: one step = the library's MDLM (or AR) loss + backward + grad clipping + AdamW, fp32, batch 64
(the preset's), random tokens of the synthetic corpus's vocabulary (32 + MASK). Sampling: MDLM ancestral
sampling, batch 16, 64 steps, and EDLM with a `tiny` AR energy (k = 4 inside the window t in [0.8, 1]);
tokens/s = generated tokens / wall time. Random weights (the speed does not depend on them). Also the
top operators of one training step by CPU time (torch.profiler), which say what limits it. Run it on an
otherwise idle machine: with other work on the cores the figures say little.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_json  # noqa: E402

from edlm.config.model import TransformerConfig  # noqa: E402
from edlm.config.sampling import SamplerConfig  # noqa: E402
from edlm.diffusion.losses import ar_nll, mdlm_nelbo  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.energy.ar import AREnergy  # noqa: E402
from edlm.models.transformer import Transformer  # noqa: E402
from edlm.presets import tiny  # noqa: E402
from edlm.sampling.loop import model_denoiser, sample  # noqa: E402


def model(V, causal=False, seed=0):
    torch.manual_seed(seed)
    m = Transformer(TransformerConfig(**{**tiny()[0].to_dict(), "vocab_size": V + 1, "causal": causal}))
    torch.nn.init.normal_(m.final.linear.weight, std=0.02)
    return m


def train_rate(V, L, B, causal, seconds):
    m = model(V, causal).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, L), generator=g)

    def step():
        loss = (ar_nll(m, x, V) if causal else mdlm_nelbo(m, x, LogLinear(), V, generator=g)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    dt = (time.perf_counter() - t0) / n
    return {"step_seconds": dt, "tokens_per_second": B * L / dt, "steps_timed": n, "params": m.num_params()}, step


def sample_rate(V, L, B, steps, k, seconds):
    den = model_denoiser(model(V).eval(), V)
    energy = AREnergy(model(V, True, 1).eval(), den, V) if k > 1 else None
    cfg = SamplerConfig(steps=steps, k=k, window=(0.8, 1.0))

    def run():
        return sample(den, LogLinear(), V, cfg, batch=B, length=L, energy=energy,
                      generator=torch.Generator().manual_seed(0))

    run()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        st = run()[1]
        n += 1
    dt = (time.perf_counter() - t0) / n
    return {"seconds_per_batch": dt, "tokens_per_second": B * L / dt, "forwards": st.forwards,
            "energy_steps": st.energy_steps, "batches_timed": n}


def top_ops(step, n=8):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    return [{"op": e.key, "share_of_cpu_time": e.self_cpu_time_total / total, "calls": e.count} for e in ev[:n]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/cpu_tiny.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=32, help="real tokens (synthetic corpus: 32)")
    ap.add_argument("--seconds", type=float, default=5.0, help="timing window per row")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _, tcfg = tiny()
    L, B, V = tcfg.seq_len, tcfg.batch_size, a.vocab
    head = {**device_info(), "threads": a.threads, "preset": "tiny", "length": L, "vocab": V,
            "note": "fp32, random weights and tokens; wall-clock windows of --seconds after warm-up"}
    rows = []
    t0 = time.perf_counter()
    for causal in (False, True):
        r, step = train_rate(V, L, B, causal, a.seconds)
        rows.append({"what": "train", "objective": "ar" if causal else "mdlm", "batch": B, **r,
                     "top_ops": top_ops(step)})
        print(rows[-1], flush=True)
    for k in (1, 4):
        r = sample_rate(V, L, 16, 64, k, a.seconds)
        rows.append({"what": "sample", "method": "edlm-ar" if k > 1 else "mdlm", "batch": 16, "steps": 64, "k": k,
                     "window": [0.8, 1.0] if k > 1 else None, **r})
        print(rows[-1], flush=True)
    write_json(a.out, {**head, "rows": rows, "wall_seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
