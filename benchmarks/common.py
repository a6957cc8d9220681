"""Shared helpers for the GPU benchmarks: device facts, FLOP counts, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from edlm.utils import set_fused_default

# Benchmarks time the steady state of long jobs: the fused kernels compile at once (outside the timings,
# in the warm-up), as in `edlm train` / `edlm sample --compile`. EDLM_FUSED=off in the environment still wins.
set_fused_default("on")

# Dense bf16 peak (no sparsity), by device-name substring, in FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def commit() -> str:
    """The code's commit: $EDLM_COMMIT (set where the tree travels without .git), else git's HEAD (+dirty)."""
    if os.environ.get("EDLM_COMMIT"):
        return os.environ["EDLM_COMMIT"]
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_info() -> dict:
    base = {"torch": torch.__version__, "commit": commit(), "cpu_threads": torch.get_num_threads()}
    if not torch.cuda.is_available():
        return {"device": "cpu", "device_name": platform.processor() or platform.machine() or "cpu", **base}
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"device": "cuda", "device_name": name, **base, "peak_bf16_flops": peak, "cuda": torch.version.cuda}


SDPA = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def prefer_sdpa(name: str | None) -> str:
    """Put one SDPA backend first in torch's priority order for the rest of the process (None/'default':
    torch's own order). Returns the name of the backend torch then picks for the `small` attention shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "other":
        name = "flash" if prefer_sdpa("default") == "cudnn" else "cudnn"
    if name and name != "default":
        order = [getattr(SDPBackend, SDPA[name])] + [getattr(SDPBackend, v) for k, v in SDPA.items() if k != name]
        try:
            sdpa_kernel(order + [SDPBackend.MATH], set_priority=True).__enter__()  # left entered on purpose
        except TypeError:  # a torch without priorities: that backend (and math) only
            sdpa_kernel([order[0], SDPBackend.MATH]).__enter__()
    if not torch.cuda.is_available():
        return "cpu"
    q = torch.randn(2, 12, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
        torch.cuda.synchronize()
    names = " ".join(e.key for e in prof.key_averages()).lower()
    for key, label in (("cudnn", "cudnn"), ("flash", "flash"), ("fmha", "efficient"), ("efficient", "efficient")):
        if key in names:
            return label
    return "other"


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
