"""Sampling speed of MDLM and EDLM (AR energy) for the paper-size model at length 1024.

    python benchmarks/sampling_speed.py --out results/bench_sampling.json
Seconds per sequence and peak memory; for EDLM the overhead (EDLM time / MDLM time, same batch and
steps) next to its cost model
    1 + (energy steps / steps) * t_energy(B*k sequences) / t_step(MDLM, B)
where t_step is the measured MDLM time per step: "the sampler adds nothing beyond the energy forwards".
Models: `small` DiT and `small` causal AR, random weights (speed does not depend on them, except through
caching, which at 1024 tokens and <= 1024 steps rarely triggers), fp32 weights under bf16 autocast,
as `edlm sample` runs them. Paths: `plain` = full (B, L, V) log-probs every step (the unoptimised
path); `lazy` = trunk once per x_t, vocabulary projection and float64 draw only where tokens unmask;
`lazy+compiled` = that with the trunk compiled into CUDA graphs (`edlm sample --compile`), over bf16
copies of the Linear weights (Transformer.low_precision_weights); `lazy+compiled-fp32w` = the same graph
casting the float32 weights at every call (the code before issue 13 round two), for a same-run ratio;
`lazy+autotuned` = `lazy+compiled` with torch.compile's max-autotune mode (Triton matrix templates with
fused epilogues, CUDA graphs; minutes of compiling), an experiment, not an `edlm sample` option.
Optional kernels (config/kernels.py) as suffixes of a path, each on a fresh copy of the same model (same seed,
same weights): `+fp8w` / `+int8w` = the blocks' Linear weights quantised by torchao (fp8: float8 weights and
per-row dynamic float8 activations; int8: int8 weights and dynamic int8 activations), `+gelu` = the MLP's
first product with its bias and GELU in one cuBLASLt call. E.g. --paths lazy+compiled,lazy+compiled+fp8w.
Their tokens differ from the plain path's (other rounding): judge them by quality (round3_quality.py), not
token identity. --device cpu: a dry run (tiny sizes with --tiny; kernels fall back with a warning).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, prefer_sdpa, timed, write_json  # noqa: E402

from edlm.config.model import TransformerConfig  # noqa: E402
from edlm.config.sampling import SamplerConfig  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.energy.ar import AREnergy  # noqa: E402
from edlm.models.kernels import apply_kernels, resolve_kernels  # noqa: E402
from edlm.models.transformer import Transformer  # noqa: E402
from edlm.sampling.loop import model_denoiser, sample  # noqa: E402

DEV = "cuda"
"""--device cpu: a dry run of the code paths"""
SIZE = dict(n_layers=12, d_model=768, n_heads=12, cond_dim=128)
KERNEL_SUFFIX = {"fp8w": "weights=fp8", "int8w": "weights=int8", "gelu": "gelu"}


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def build(V, L, causal, seed):
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=V + 1, max_len=L, causal=causal, **SIZE)
    m = Transformer(cfg).to(DEV).eval()
    torch.nn.init.normal_(m.final.linear.weight, std=0.02)  # non-uniform outputs
    return m


def run_one(den, energy, mask, L, B, steps, k, window, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    sync()
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    x, st = sample(den, LogLinear(), mask, SamplerConfig(steps=steps, k=k, window=window), batch=B, length=L,
                   energy=energy, generator=g, device=DEV)
    sync()
    mem = torch.cuda.max_memory_allocated() / 1e9 if DEV == "cuda" else None
    return time.perf_counter() - t0, st, mem, x


def draw_parity(V, n=4096, k=4):
    """The fused (compiled) categorical draw against the plain one, same bf16 logits and uniforms."""
    from edlm.sampling.categorical import _draw_fused, _draw_plain

    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(n, V + 47, device="cuda", generator=g) * 3).to(torch.bfloat16)
    u = torch.rand(n, k, dtype=torch.float64, device="cuda", generator=g)
    a, la = _draw_plain(logits, u, V)
    b, lb = _draw_fused(logits, u, V)
    return {"draw_same_tokens": float((a == b).float().mean()), "draw_max_logp_diff": float((la - lb).abs().max())}


def profile_run(out_dir, fn, n=30, name="sampling_mdlm_b16_s128"):
    """Top kernels (CUDA time) and the kernel total of one run, next to its wall time."""
    from torch.profiler import ProfilerActivity, profile

    try:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        ev = prof.key_averages()
        kern = sum(e.self_device_time_total for e in ev) / 1e6
        text = (f"wall {wall:.3f} s (profiled); self CUDA time of all events {kern:.3f} s\n"
                + ev.table(sort_by="self_cuda_time_total", row_limit=n, max_name_column_width=90))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.txt").write_text(text)
        print(text, flush=True)
    except Exception as e:  # noqa: BLE001 - a profiler failure must not cost the timings
        print(f"profile failed: {e!r}", flush=True)


def kernel_path(p, V, L, mask, reference):
    """A path with optional kernels (`+fp8w`, `+int8w`, `+gelu` on `lazy` or `lazy+compiled`): a fresh DiT with
    the same weights, the kernels applied, compiled as `lazy+compiled` is if named; MDLM batch 16, 128 steps."""
    parts = p.split("+")
    spec = ",".join(KERNEL_SUFFIX[x] for x in parts if x in KERNEL_SUFFIX)
    core = "+".join(x for x in parts if x not in KERNEL_SUFFIX)
    if core not in ("lazy", "lazy+compiled"):
        raise SystemExit(f"path {p!r}: kernels go on lazy or lazy+compiled")
    m = build(V, L, False, 0)
    apply_kernels(m, resolve_kernels(spec, DEV, training=False), training=False)
    t0 = time.perf_counter()
    if core == "lazy+compiled":
        m.compile_trunk(mode="reduce-overhead")
    den = model_denoiser(m, mask)
    run_one(den, None, mask, L, 16, 4, 1, None)  # compile / capture / first calls, outside the timing
    warm = time.perf_counter() - t0
    dt, st, mem, x = run_one(den, None, mask, L, 16, 128, 1, None)
    xt = torch.where(torch.rand(16, L, device=DEV) < 0.5, mask, torch.randint(0, V, (16, L), device=DEV))
    t_trunk = timed(lambda: den.features(xt, 0.5), warmup=3, iters=20)
    row = {"method": "mdlm", "path": p, "kernels": spec, "batch": 16, "steps": 128, "seconds_per_seq": dt / 16,
           "seconds": dt, "forwards": st.forwards, "peak_memory_gb": mem, "t_trunk": t_trunk, "t_step": dt / 128,
           "trunk_share": t_trunk * st.forwards / dt, "warmup_seconds": warm,
           "same_tokens_as_plain": float((x == reference).float().mean()) if reference is not None else None}
    return row  # the model and its graphs go with this frame


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench_sampling.json")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--mdlm", default="1:128,16:128,64:128,1:1024,16:1024,64:1024", help="batch:steps pairs")
    ap.add_argument("--edlm", default="16:128:2:0.2,16:128:2:1.0,16:128:4:0.2,16:128:4:1.0,16:128:8:0.2,"
                                      "16:128:8:1.0,64:128:8:0.2,1:128:2:0.2",
                    help="batch:steps:k:window_width tuples")
    ap.add_argument("--paths", default="plain,lazy,lazy+compiled-fp32w,lazy+compiled",
                    help="paths timed at batch 16 / 128 steps (all other rows use the last one)")
    ap.add_argument("--sdpa", default="default", help="SDPA backend put first: default, cudnn, flash, efficient")
    ap.add_argument("--profile", default=None, metavar="DIR", help="write a profile of MDLM batch 16 / 128 steps "
                    "and of each EDLM row")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the code paths")
    ap.add_argument("--tiny", action="store_true", help="a 2 x 32 model (dry runs)")
    a = ap.parse_args()
    global DEV
    DEV = a.device
    if a.tiny:
        SIZE.update(n_layers=2, d_model=32, n_heads=2, cond_dim=16)
    sdpa = prefer_sdpa(a.sdpa)
    V, L, mask = a.vocab, a.length, a.vocab
    dit, ar = build(V, L, False, 0), build(V, L, True, 1)
    lazy = model_denoiser(dit, mask)

    def plain(x, t):  # a plain callable: the sampler gets full (B, L, V) log-probs every step
        return lazy(x, t)

    paths = a.paths.split(",")
    energy = AREnergy(ar, lazy, mask)
    head = {**device_info(), "model": "small DiT + small causal AR (12x768), fp32 weights, bf16 autocast, random",
            "size": dict(SIZE), "length": L, "vocab": V, **(draw_parity(V) if DEV == "cuda" else {}),
            "sdpa_requested": a.sdpa, "sdpa_backend": sdpa, "quantised_inductor_config": "torch's (torchao's "
            "recommended Inductor settings not applied: the same compiler settings on every path)",
            "cost_model": "1 + (energy steps / steps) * t_energy(B*k) / t_step(MDLM, B)"}
    rows, mdlm_step, warmed = [], {}, set()

    def emit(row):
        rows.append(row)
        print(row, flush=True)
        write_json(a.out, {**head, "rows": rows}, quiet=True)

    def warm(B):  # compile / CUDA-graph capture for this batch shape, outside the timings
        key = (B, dit.low_precision_weights, dit._compile_kwargs.get("mode"))
        if key not in warmed and dit._compiled_features is not None:
            run_one(lazy, None, mask, L, B, 4, 1, None)
            warmed.add(key)

    base_paths = [p for p in paths if not set(p.split("+")) & set(KERNEL_SUFFIX)]
    base_label = base_paths[-1] if base_paths else "lazy"
    with torch.no_grad(), torch.autocast(DEV, dtype=torch.bfloat16):
        run_one(lazy, None, mask, L, 4, 4, 1, None)  # CUDA/cuBLAS warm-up
        samples = {}
        for p in paths:  # the same configuration on each path, same seed
            if set(p.split("+")) & set(KERNEL_SUFFIX):
                emit(kernel_path(p, V, L, mask, samples.get(paths[0])))
                continue
            dit.low_precision_weights = ar.low_precision_weights = not p.endswith("-fp32w")
            want = ("max-autotune" if p == "lazy+autotuned" else "reduce-overhead" if p.startswith("lazy+compiled")
                    else None)
            if want and dit._compile_kwargs.get("mode") != want:
                if dit._compiled_features is not None:
                    torch._dynamo.reset()  # no cache entry of the previous mode may serve the new one
                dit._compiled_features, dit._low = None, None
                dit.compile_trunk(mode=want)
                if ar._compiled_features is None:
                    ar.compile_trunk(mode="reduce-overhead")
            t0 = time.perf_counter()
            warm(16)
            if want:
                print(f"{p}: warm-up (compile and capture, if new) {time.perf_counter() - t0:.1f} s", flush=True)
            den = plain if p == "plain" else lazy
            dt, st, mem, x = run_one(den, None, mask, L, 16, 128, 1, None)
            samples[p] = x
            # the trunk alone (one forward at batch 16), to split a step into trunk and everything else
            xt = torch.where(torch.rand(16, L, device=DEV) < 0.5, mask, torch.randint(0, V, (16, L), device=DEV))
            t_trunk = timed(lambda: lazy.features(xt, 0.5), warmup=3, iters=20)  # noqa: B023 (called at once)
            emit({"method": "mdlm", "path": p, "batch": 16, "steps": 128, "seconds_per_seq": dt / 16,
                  "seconds": dt, "forwards": st.forwards, "peak_memory_gb": mem, "t_trunk": t_trunk,
                  "t_step": dt / 128, "trunk_share": t_trunk * st.forwards / dt,
                  "same_tokens_as_plain": float((x == samples[paths[0]]).float().mean())})
            if a.profile and p == paths[-1]:
                profile_run(a.profile, lambda: run_one(lazy, None, mask, L, 16, 128, 1, None))
            mdlm_step[(16, 128)] = dt / 128
        for spec in filter(None, a.mdlm.split(",")):
            B, S = map(int, spec.split(":"))
            if (B, S) == (16, 128):
                continue
            warm(B)
            dt, st, mem, _ = run_one(lazy, None, mask, L, B, S, 1, None)
            mdlm_step[(B, S)] = dt / S
            emit({"method": "mdlm", "path": base_label, "batch": B, "steps": S, "seconds_per_seq": dt / B,
                  "seconds": dt, "forwards": st.forwards, "peak_memory_gb": mem})
        for spec in filter(None, a.edlm.split(",")):
            B, S, k, w = spec.split(":")
            B, S, k, w = int(B), int(S), int(k), float(w)
            warm(B)
            run_one(lazy, energy, mask, L, B, 2, k, (0.0, 1.0))  # compiles/captures the energy's shapes
            if (B, S) not in mdlm_step:
                mdlm_step[(B, S)] = run_one(lazy, None, mask, L, B, S, 1, None)[0] / S
            try:
                dt, st, mem, _ = run_one(lazy, energy, mask, L, B, S, k, (1 - w, 1.0))
            except torch.OutOfMemoryError:
                emit({"method": "edlm-ar", "batch": B, "steps": S, "k": k, "window": w, "oom": True})
                if DEV == "cuda":
                    torch.cuda.empty_cache()
                continue
            if a.profile:
                profile_run(a.profile, lambda: run_one(lazy, energy, mask, L, B, S, k, (1 - w, 1.0)),  # noqa: B023
                            name=f"sampling_edlm_b{B}_s{S}_k{k}_w{w}")
            xk = torch.randint(0, V, (B * k, L), device=DEV)
            t_en = timed(lambda: energy.ar_log_prob(xk, xk), warmup=2, iters=5)  # noqa: B023 (called at once)
            frac = st.energy_steps / S
            t_mdlm = mdlm_step[(B, S)] * S
            emit({"method": "edlm-ar", "path": base_label, "batch": B, "steps": S, "k": k, "window": w,
                  "seconds_per_seq": dt / B, "seconds": dt, "mdlm_seconds": t_mdlm, "overhead": dt / t_mdlm,
                  "cost_model": 1 + frac * t_en / mdlm_step[(B, S)], "energy_steps": st.energy_steps,
                  # what an energy step costs beyond its energy forward (candidate projection + draw at
                  # every masked position, the step's bookkeeping)
                  "extra_per_energy_step": (dt - t_mdlm - st.energy_steps * t_en) / max(st.energy_steps, 1),
                  "t_mdlm_step": mdlm_step[(B, S)], "t_energy_fwd": t_en, "peak_memory_gb": mem})
    write_json(a.out, {**head, "rows": rows})


if __name__ == "__main__":
    main()
