"""The fast samplers' speed on one GPU: the `small` model (12 x 768) at length 1024, block-wise generation.

    python benchmarks/fast_samplers_gpu.py --out $OUT/fast_samplers_h200.json          # ~5 minutes on an H200
    python benchmarks/fast_samplers_gpu.py --mdlm runs/owt-mdlm --ar runs/owt-ar ...   # trained runs, if at hand

Needs no data and no network: without --mdlm the networks are the `small` preset with random weights (speed of a
network call does not depend on its weights; the threshold sampler's step count does, so its rows are marked
`weights: random` and say nothing about a trained model's steps). Every method generates the same number of
sequences from all-MASK in blocks of --block tokens (--steps per block for the step sampler) and is timed with
the device synchronised, after one warm-up batch; speed-ups are ratios to the plain step sampler measured in
this process. bf16 autocast for the networks, float64 draws (as `edlm sample` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear
from edlm.energy.ar import AREnergy
from edlm.models.transformer import Transformer
from edlm.presets import get_preset
from edlm.sampling.blocks import block_plan, sample_blocks
from edlm.sampling.fast import block_denoiser, sampler_fn
from edlm.sampling.loop import model_denoiser

METHODS = {  # name -> (SamplerConfig fields, kv cache, energy?)
    "plain": ({}, "none", False),
    "prefix": ({}, "prefix", False),
    "dual": ({}, "dual", False),
    "first-hit": ({"sampler": "first-hit"}, "none", False),
    "first-hit+dual": ({"sampler": "first-hit"}, "dual", False),
    "threshold-0.9": ({"sampler": "threshold", "threshold": 0.9}, "none", False),
    "threshold-0.9+dual": ({"sampler": "threshold", "threshold": 0.9}, "dual", False),
    "plain+E": ({"k": 4}, "none", True),
    "dual+E": ({"k": 4}, "dual", True),
    "plain+E-noshare": ({"k": 4}, "none", "noshare"),
}


def build(path, causal: bool, device, vocab: int, preset: str = "small", length: int = 1024):
    if path:
        from edlm.runs.load import load_model

        model, meta = load_model(path, device)
        return model.eval(), meta["mask_id"]
    cfg, _ = get_preset(preset)
    from dataclasses import replace

    cfg = replace(cfg, vocab_size=vocab + 1, out_vocab=vocab, causal=causal, dropout=0.0, init_std=0.02,
                  max_len=max(cfg.max_len, length))
    torch.manual_seed(1 if causal else 0)
    return Transformer(cfg).to(device).eval(), vocab


def run_method(name, model, ar, mask_id, a, device, gen):
    fields, cache, energy_kind = METHODS[name]
    cfg = SamplerConfig(steps=a.steps, **fields)
    energy = None
    if energy_kind:
        energy = AREnergy(ar, model_denoiser(model, mask_id), mask_id, share_prefix=energy_kind != "noshare")
    plan = block_plan(a.length, a.length, a.length, a.block)
    calls = [0, 0]

    def view(xv, tail, start, cb, oc):
        den = block_denoiser(model, mask_id, tail, start, cache, a.refresh)
        x, st = sampler_fn(cfg.sampler)(den, LogLinear(), mask_id, cfg, x_init=xv, energy=energy, generator=gen,
                                        callback=cb)
        calls[0] += st.forwards
        calls[1] += den.refreshes
        return x, st

    x0 = torch.full((a.batch, a.length), mask_id, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        x, _ = sample_blocks(view, x0, plan, mask_id, a.steps)
    sync()
    dt = time.perf_counter() - t0
    assert not (x == mask_id).any()
    return {"seconds": dt, "tokens_per_second": a.batch * a.length / dt, "network_calls": calls[0],
            "full_window_calls": calls[1], "ar_tokens": energy.tokens if energy else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mdlm", default=None, help="an MDLM run (default: the small preset, random weights)")
    p.add_argument("--ar", default=None, help="an AR run for the energy (default: small, causal, random weights)")
    p.add_argument("--vocab", type=int, default=50257, help="vocabulary without runs (GPT-2's)")
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--steps", type=int, default=32, help="steps per block (step sampler)")
    p.add_argument("--refresh", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--preset", default="small", help="the networks' size without runs")
    p.add_argument("--device", default="cuda", help="cuda (the study) or cpu (a smoke run)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    model, mask_id = build(a.mdlm, False, device, a.vocab, a.preset, a.length)
    ar, _ = build(a.ar, True, device, a.vocab, a.preset, a.length)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "preset": a.preset,
           "torch": torch.__version__, "length": a.length, "block": a.block,
           "steps_per_block": a.steps, "batch": a.batch, "refresh": a.refresh,
           "weights": "run" if a.mdlm else "random", "methods": {}}
    names = a.methods.split(",")
    run_method("plain", model, ar, mask_id, argparse.Namespace(**{**vars(a), "length": 2 * a.block}), device, gen)
    for r in range(a.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            res = run_method(name, model, ar, mask_id, a, device, gen)
            out["methods"].setdefault(name, []).append(res)
            print(json.dumps({"method": name, "repeat": r, **res}), flush=True)
            Path(a.out).write_text(json.dumps(out, indent=1))
    plain = sum(x["seconds"] for x in out["methods"]["plain"])
    for name, rs in out["methods"].items():
        out.setdefault("speedup_vs_plain", {})[name] = plain / sum(x["seconds"] for x in rs)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["speedup_vs_plain"]))


if __name__ == "__main__":
    main()
