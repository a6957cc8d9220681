"""Shared helpers for the GPU benchmarks: device facts, FLOP counts, timing, JSON output."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

# Dense bf16 peak (no sparsity), by device-name substring, in FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def device_info() -> dict:
    if not torch.cuda.is_available():
        return {"device": "cpu", "device_name": platform.processor() or "cpu", "torch": torch.__version__}
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"device": "cuda", "device_name": name, "torch": torch.__version__, "peak_bf16_flops": peak,
            "cuda": torch.version.cuda}


def train_flops_per_token(cfg, seq_len: int) -> float:
    """6 * (per-token weights: blocks + output layer) + attention: 12 * layers * d_model * seq_len
    (forward + backward; the PaLM appendix-B convention). adaLN is not counted: it runs once per sequence
    on the conditioning vector, not per token. Neither are the embeddings (lookups) nor the output
    layer's padding rows (padding buys speed, not model FLOPs)."""
    d, n_l = cfg.d_model, cfg.n_layers
    per_layer = 12 * d * d  # qkv + out (4 d^2) + MLP (8 d^2)
    n = n_l * per_layer + d * cfg.n_out
    return 6 * n + 12 * n_l * d * seq_len


def timed(fn, *, warmup=3, iters=10, sync=True):
    for _ in range(warmup):
        fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def write_json(path, obj, quiet: bool = False):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    if not quiet:
        print(json.dumps(obj))
