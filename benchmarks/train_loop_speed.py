"""The real training loop against the bare benchmark step, on the same card in the same process.

    python benchmarks/train_loop_speed.py --data prose-bpe --steps 150 --out results/train_loop_h200.json

Each run is `edlm train --preset small --compile` (the library's train(): data loading, dropout, EMA,
clipping, AdamW, the NaN / divergence guards, logging; validation and saving only at the end) for --steps
steps at the preset's batch 32 x 1024 on a GPT-2-token corpus. Its speed is the median tokens/s of its
metrics.jsonl rows (one per 10 steps) after the first --skip rows (compiling). Right after each run,
train_throughput.py's bare step of the same model and objective (compiled blocks, the static row budget,
the same dropout, an EMA update) is timed: `loop_vs_bench` = bare step time / loop step time (1 = the loop
adds nothing). Runs (--runs, comma-separated):
  mdlm        the MDLM loss, dropout 0.1 on the residual branches only (attn_dropout 0: MDLM's DiT, the default)
  mdlm-adrop  the same with the attention probabilities dropped at 0.1 too (edlm before attn_dropout existed)
  ar          the AR loss (causal), dropout as `mdlm`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_json  # noqa: E402
from train_throughput import SETUPS, bench  # noqa: E402

from edlm.api.trainer import train_run as train  # noqa: E402
from edlm.presets import PRESETS  # noqa: E402

RUNS = {"mdlm": ("mdlm", 0.0, "small-owt-mdlm", "blocks+cap+drop+ema"),
        "mdlm-adrop": ("mdlm", 0.1, "small-owt-mdlm", "blocks+cap+adrop+ema"),
        "ar": ("ar", 0.0, "small-owt-ar", "blocks+drop+ema")}


def loop_speed(name: str, data: str, steps: int, skip: int, root: Path) -> dict:
    objective, attn_dropout, _, _ = RUNS[name]
    model_cfg, cfg = PRESETS["small"]()
    model_cfg = replace(model_cfg, attn_dropout=attn_dropout)
    cfg = replace(cfg, objective=objective, data=data, max_steps=steps, compile=True, eval_every=0,
                  save_every=steps, eval_batches=2, log_every=10, warmup_steps=100)
    out = root / name
    t0 = time.perf_counter()
    summary = train(cfg, model_cfg, out, quiet=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_second"] for r in rows if "tokens_per_second" in r][skip:]
    if not tps:
        raise SystemExit(f"{name}: no metrics rows past the first {skip}; raise --steps")
    med = statistics.median(tps)
    return {"run": name, "objective": objective, "attn_dropout": attn_dropout, "dropout": model_cfg.dropout,
            "batch": cfg.batch_size, "seq_len": cfg.seq_len, "steps": steps, "rows_used": len(tps),
            "loop_tokens_per_second": med, "loop_step_seconds": cfg.batch_size * cfg.seq_len / med,
            "loop_tokens_per_second_rows": tps, "wall_seconds_incl_compile_and_final_save": wall,
            "final_loss": summary.get("loss")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="prose-bpe", help="a prepared corpus with the GPT-2 vocabulary")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--skip", type=int, default=3, help="metrics rows left out at the start (compiling)")
    ap.add_argument("--runs", default="mdlm,mdlm-adrop,ar")
    ap.add_argument("--bench-steps", type=int, default=20)
    ap.add_argument("--out", default="results/train_loop.json")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("train_loop_speed.py needs a CUDA GPU (the `small` preset at length 1024)")
    torch.backends.cuda.matmul.allow_tf32 = True
    head = {**device_info(), "note": __doc__.split("\n\n")[1].strip()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.runs.split(","):
            row = loop_speed(name, a.data, a.steps, a.skip, Path(tmp))
            _, _, setup, variant = RUNS[name]
            b = bench(setup, SETUPS[setup], variant, a.bench_steps)
            row.update(bench_variant=variant, bench_step_seconds=b["step_seconds"],
                       bench_tokens_per_second=b["tokens_per_second"], bench_mfu=b["mfu"],
                       loop_mfu=b["mfu"] * b["step_seconds"] / row["loop_step_seconds"],
                       loop_vs_bench=b["step_seconds"] / row["loop_step_seconds"])
            rows.append(row)
            torch.cuda.empty_cache()
            print({k: v for k, v in row.items() if k != "loop_tokens_per_second_rows"}, flush=True)
            write_json(a.out, {**head, "rows": rows}, quiet=True)
    write_json(a.out, {**head, "rows": rows})


if __name__ == "__main__":
    main()
