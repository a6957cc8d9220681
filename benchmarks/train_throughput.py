"""Training throughput, MFU and peak memory of the DiT (MDLM) and causal model (AR).

    python benchmarks/train_throughput.py --out results/bench_train.json [--variants eager,blocks,trunk]
One step = the library's loss + backward + grad clipping + fused AdamW, bf16 autocast, random tokens.
Variants: eager; `blocks` = each block torch.compiled (what `edlm train --compile` does); `trunk` = the
whole trunk in one graph; `full-logits` = eager MDLM with the vocabulary projection at every position
(the plain path: the speed-up of projecting masked rows only, measured in the same run). Flags joined
with '+': `cap` = MDLM's masked rows through a static budget (losses.masked_rows_cap: no host sync);
`graph` = the whole step (loss, backward, clipping, AdamW(capturable)) captured in one CUDA graph and
replayed (needs `cap`); `cdt` = Inductor's coordinate-descent tuning of its Triton kernels; `drop` = the
`small` preset's dropout 0.1 on the residual branches (what `edlm train` runs; the default is none);
`adrop` = `drop` plus dropout 0.1 on the attention probabilities (edlm before `attn_dropout`); `ema` = an
EMA update (train/optim.EMA) in every step; `mat` = compile mode max-autotune-no-cudagraphs (Triton matrix
templates with fused epilogues; long compile). E.g. --variants blocks,blocks+cap,blocks+cap+graph.
Optional kernels (config/kernels.py; models/kernels.py): `norm` = Liger Kernel's LayerNorm, `rope` = its
rotary, `lce` = its fused linear + cross-entropy for the loss (AR: the summed path; MDLM: per-row, as the
NELBO weights each sequence; with `flat`, MDLM's flat weights, the summed path), `f8` = the blocks' Linear
layers in float8 (torchao); `fsdp` = FSDP2 over a process group of one (NCCL; the sharded code path on one
GPU, against the same variant without it). E.g. blocks+cap,blocks+cap+norm+rope,blocks+cap+lce,blocks+cap+f8.

FLOPs per token, stated: 6 * (block weights + adaLN + output layer) + 12 * layers * d * L (attention),
PaLM appendix-B convention, against the card's dense bf16 peak (989 TFLOP/s for H100/H200 SXM).
`mfu` counts the output layer at every position, as that convention does; for MDLM, which projects
only the masked positions (half of them on average), `mfu_executed` counts the FLOPs really done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, prefer_sdpa, timed, train_flops_per_token, write_json  # noqa: E402

from edlm.config.model import TransformerConfig  # noqa: E402
from edlm.diffusion.losses import (  # noqa: E402
    ar_nll,
    ar_nll_sum,
    masked_log_likelihood,
    masked_log_likelihood_sum,
    masked_rows_cap,
    mdlm_nelbo,
)
from edlm.diffusion.masking import antithetic_times, mask_tokens  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.models.kernels import apply_kernels, resolve_kernels  # noqa: E402
from edlm.models.transformer import Transformer  # noqa: E402
from edlm.training.optim import EMA  # noqa: E402

KERNEL_FLAGS = {"norm": "norm", "rope": "rope", "lce": "lce", "f8": "float8"}

DEV = "cuda"
"""the device (--device cpu: a dry run of the code paths on tiny setups; kernels fall back with a warning)"""
SMALL = dict(n_layers=12, d_model=768, n_heads=12, cond_dim=128)
TINY = dict(n_layers=2, d_model=32, n_heads=2, cond_dim=16)
SETUPS = {
    "small-owt-mdlm": dict(**SMALL, vocab=50258, L=1024, B=32),
    "small-owt-ar": dict(**SMALL, vocab=50258, L=1024, B=32, causal=True),
    "small-text8-mdlm": dict(**SMALL, vocab=28, L=256, B=128),
    "tiny-mdlm": dict(**TINY, vocab=64, L=32, B=4),  # dry runs on a CPU
    "tiny-ar": dict(**TINY, vocab=64, L=32, B=4, causal=True),
}


def build(s, dropout=0.0, attn_dropout=0.0):
    cfg = TransformerConfig(vocab_size=s["vocab"], n_layers=s["n_layers"], d_model=s["d_model"],
                            n_heads=s["n_heads"], cond_dim=s["cond_dim"], max_len=s["L"],
                            causal=s.get("causal", False), dropout=dropout, attn_dropout=attn_dropout)
    return Transformer(cfg).to(DEV)


def loss_parity(s):
    """Same batch and noise, bf16: masked-rows loss vs full-logits loss (the two paths must agree)."""
    torch.manual_seed(0)
    model = build(s)
    torch.nn.init.normal_(model.final.linear.weight, std=0.02)
    mask = s["vocab"] - 1
    x = torch.randint(0, mask, (8, s["L"]), device="cuda")
    x_t = torch.where(torch.rand(x.shape, device="cuda") < 0.5, mask, x)
    t = torch.full((8,), 0.5, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        rows = masked_log_likelihood(model, x, x_t, t, mask)
        full = masked_log_likelihood(lambda a, b: model(a, b), x, x_t, t, mask)
    return float(((rows - full).abs() / full.abs()).max())


def fused_loss_parity():
    """The fused token log-probs (custom backward) against autograd through a float32 log_softmax."""
    from edlm.diffusion.losses import token_log_probs

    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(4096, 50304, device="cuda", generator=g) * 3).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, 50257, (4096,), device="cuda", generator=g)
    w = torch.rand(4096, device="cuda", generator=g)
    a = token_log_probs(logits, y, 50257)
    (ga,) = torch.autograd.grad((a * w).sum(), logits)
    ref = torch.log_softmax(logits[:, :50257].float(), -1).gather(-1, y[:, None]).squeeze(-1)
    (gr,) = torch.autograd.grad((ref * w).sum(), logits)
    return {"fused_loss_max_abs_diff": float((a - ref).abs().max()),
            "fused_grad_max_abs_diff": float((ga.float() - gr.float()).abs().max())}


def bench(name, s, variant, steps, mode=None, profile_dir=None):
    base, *flags = variant.split("+")
    unknown = set(flags) - {"cap", "graph", "cdt", "drop", "adrop", "ema", "mat", "flat", "fsdp", *KERNEL_FLAGS}
    if unknown or base not in ("eager", "blocks", "trunk", "full-logits"):
        raise SystemExit(f"unknown variant {variant!r}")
    t_row = time.perf_counter()
    torch.manual_seed(0)
    torch._dynamo.reset()
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = "cdt" in flags
    drop = 0.1 if {"drop", "adrop"} & set(flags) else 0.0
    model = build(s, dropout=drop, attn_dropout=0.1 if "adrop" in flags else 0.0)
    cfg = model.cfg
    spec = ",".join(KERNEL_FLAGS[f] for f in flags if f in KERNEL_FLAGS)
    apply_kernels(model, resolve_kernels(spec, DEV, training=True), training=True)  # before compiling
    mode = "max-autotune-no-cudagraphs" if "mat" in flags else mode
    if base in ("blocks", "trunk"):
        model.compile_trunk(per_block=base == "blocks", **({"mode": mode} if mode else {}))
    if "fsdp" in flags:
        from edlm.training.distributed import Dist, wrap_model

        one_process_group()
        model = wrap_model(model, Dist(device=torch.device(DEV), group=True), "fsdp")
    ema = EMA(model, 0.9999) if "ema" in flags else None
    fwd = (lambda a, b: model(a, b)) if base == "full-logits" else model  # a lambda hides rows=
    graph = "graph" in flags
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=graph)
    x = torch.randint(0, s["vocab"] - 1, (s["B"], s["L"]), device=DEV)
    g = torch.Generator(device=DEV).manual_seed(0)
    mask = s["vocab"] - 1
    cap = masked_rows_cap(LogLinear(), s["B"], s["L"]) if "cap" in flags and not cfg.causal else None

    def step():
        with torch.autocast(DEV, dtype=torch.bfloat16, cache_enabled=not graph):
            if "lce" in flags and cfg.causal:  # the fused kernel's own sum (its gradients in the forward pass)
                loss = ar_nll_sum(fwd, x, mask) / s["B"]
            elif "flat" in flags and not cfg.causal:  # MDLM's flat weights: one sum over the masked rows
                t = antithetic_times(s["B"], generator=g, device=DEV)
                x_t = mask_tokens(x, LogLinear().alpha(t), mask, g)
                loss = -masked_log_likelihood_sum(fwd, x, x_t, t, mask, max_rows=cap) / s["B"]
            else:
                loss = (ar_nll(fwd, x, mask) if cfg.causal
                        else mdlm_nelbo(fwd, x, LogLinear(), mask, generator=g, max_rows=cap)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, 10_000)

    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if graph:
        step = capture(step, g)
    dt = timed(step, warmup=5 if base in ("blocks", "trunk") else 3, iters=steps)
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        try:
            (Path(profile_dir) / f"train_{name}_{variant}.txt").write_text(kernel_table(step))
        except Exception as e:  # noqa: BLE001 - a profiler failure must not cost the timing
            print(f"profile failed: {e!r}", flush=True)
    inductor_config.coordinate_descent_tuning = False
    tok_s = s["B"] * s["L"] / dt
    fpt = train_flops_per_token(cfg, s["L"])
    # MDLM projects the masked positions only: 1 - alpha_t of them, 1/2 on average under antithetic t
    # (with `cap` it projects `cap` rows, the unmasked fill rows weighted 0; not counted as useful FLOPs).
    head = 6 * cfg.d_model * cfg.n_out
    fpt_exec = fpt if (cfg.causal or base == "full-logits") else fpt - head * 0.5
    peak = device_info().get("peak_bf16_flops")
    return {"setup": name, "variant": variant, "compile_mode": mode, "kernels": spec, "batch": s["B"],
            "seq_len": s["L"], "params": sum(p.numel() for p in model.parameters()), "max_rows": cap,
            "flops_per_token": fpt, "flops_per_token_executed": fpt_exec, "step_seconds": dt,
            "tokens_per_second": tok_s, "mfu": tok_s * fpt / peak if peak else None,
            "mfu_executed": tok_s * fpt_exec / peak if peak else None,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if DEV == "cuda" else None,
            "row_wall_seconds": time.perf_counter() - t_row}  # build + compile + warm-up + timing


def one_process_group():
    """A process group of one (NCCL), once per process: what FSDP2 needs to shard over one GPU."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if DEV == "cuda":
            dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29512", rank=0, world_size=1,
                                    device_id=torch.device("cuda", torch.cuda.current_device()))
        else:  # the CPU dry run
            dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29512", rank=0, world_size=1)


def capture(step, generator, warmup=3):
    """The whole training step as one CUDA graph: warm up on a side stream (compiles, cuDNN plans, the
    optimizer's state), capture one step, return its replay. Nothing in the step may sync with the host."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)  # the step draws t and the masks from it
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def kernel_table(step, n=30) -> str:
    """torch.profiler's top CUDA kernels over 2 steps, with the kernel total next to the wall time."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 2
    ev = prof.key_averages()
    total = sum(e.self_device_time_total for e in ev) / 2e3
    head = f"wall per step (profiled) {wall * 1e3:.1f} ms; CUDA kernel time per step {total:.1f} ms\n"
    return head + ev.table(sort_by="self_cuda_time_total", row_limit=n, max_name_column_width=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench_train.json")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--variants", default="eager,blocks,trunk")
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--batch", type=int, default=0, help="override every setup's batch size")
    ap.add_argument("--mode", default=None, help="torch.compile mode for the compiled variants")
    ap.add_argument("--sdpa", default="default",
                    help="SDPA backend put first: default, cudnn, flash, efficient, or other (cudnn unless torch "
                    "picks cudnn already, then flash)")
    ap.add_argument("--no-parity", action="store_true", help="skip the loss / gradient parity checks")
    ap.add_argument("--profile", default=None, metavar="DIR", help="also write each variant's kernel table here")
    ap.add_argument("--strict", action="store_true", help="a failing variant fails the run (dry runs)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run (tiny-* setups, --no-parity)")
    a = ap.parse_args()
    global DEV
    DEV = a.device
    sdpa = prefer_sdpa(a.sdpa)
    if a.batch:
        for s in SETUPS.values():
            s["B"] = a.batch
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    head = {**device_info(), "flop_convention": __doc__.split("FLOPs per token, stated: ")[1].split("\n\n")[0],
            "sdpa_requested": a.sdpa, "sdpa_backend": sdpa}
    if not a.no_parity:
        head.update(loss_parity_max_rel_diff_bf16=loss_parity(SETUPS["small-owt-mdlm"]), **fused_loss_parity())
    for name in a.setups.split(","):
        for v in a.variants.split(","):
            if v.startswith("full-logits") and SETUPS[name].get("causal"):
                continue
            try:
                rows.append(bench(name, SETUPS[name], v, a.steps, a.mode, a.profile))
            except torch.OutOfMemoryError:
                rows.append({"setup": name, "variant": v, "oom": True})
            except Exception as e:  # noqa: BLE001 - one variant failing (a capture, say) must not cost the others
                if a.strict:
                    raise
                rows.append({"setup": name, "variant": v, "error": f"{type(e).__name__}: {e}"[:2000]})
            if DEV == "cuda":
                torch.cuda.empty_cache()
            print(rows[-1], flush=True)
            write_json(a.out, {**head, "rows": rows}, quiet=True)
    write_json(a.out, {**head, "rows": rows})


if __name__ == "__main__":
    main()
