"""Training throughput and MFU of the DiT / causal model (one optimizer step = fwd + bwd + AdamW).

    python benchmarks/train_throughput.py --out results/bench_train.json [--compile] [--steps 20]
Writes JSON with the device, torch version, configs, tokens/s, MFU and peak memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, timed, train_flops_per_token, write_json  # noqa: E402

from edlm.diffusion.losses import ar_nll, mdlm_nelbo  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.models.transformer import Transformer, TransformerConfig  # noqa: E402

SETUPS = {
    "small-owt-mdlm": dict(n_layers=12, d_model=768, n_heads=12, cond_dim=128, max_len=1024, vocab=50258, L=1024, B=32),
    "small-owt-ar": dict(n_layers=12, d_model=768, n_heads=12, cond_dim=128, max_len=1024, vocab=50258, L=1024, B=32,
                         causal=True),
    "small-text8-mdlm": dict(n_layers=12, d_model=768, n_heads=12, cond_dim=128, max_len=256, vocab=28, L=256, B=128),
}


def bench(name, s, compile_, steps):
    cfg = TransformerConfig(vocab_size=s["vocab"], n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"],
                            cond_dim=s["cond_dim"], max_len=s["max_len"], causal=s.get("causal", False))
    dev = torch.device("cuda")
    model = Transformer(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    fwd = torch.compile(model) if compile_ else model
    x = torch.randint(0, s["vocab"] - 1, (s["B"], s["L"]), device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    sched = LogLinear()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mask = s["vocab"] - 1
            loss = (ar_nll(fwd, x, mask) if cfg.causal else mdlm_nelbo(fwd, x, sched, mask, generator=g)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    dt = timed(step, warmup=5 if compile_ else 3, iters=steps)
    tok_s = s["B"] * s["L"] / dt
    fpt = train_flops_per_token(cfg, s["L"])
    info = device_info()
    mfu = tok_s * fpt / info["peak_bf16_flops"] if info.get("peak_bf16_flops") else None
    return {"setup": name, "compile": compile_, "batch": s["B"], "seq_len": s["L"], "params": model.num_params(),
            "flops_per_token": fpt, "step_seconds": dt, "tokens_per_second": tok_s, "mfu": mfu,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/bench_train.json")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--setups", default=",".join(SETUPS))
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for name in a.setups.split(","):
        for c in ([False, True] if a.compile else [False]):
            rows.append(bench(name, SETUPS[name], c, a.steps))
            print(rows[-1], flush=True)
    write_json(a.out, {**device_info(), "flop_convention": "6N + 12*layers*d*L per token, N without input embedding",
                       "rows": rows})


if __name__ == "__main__":
    main()
