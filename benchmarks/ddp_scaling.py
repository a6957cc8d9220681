"""DDP on 1 vs N GPUs through torchrun: loss match at the same global batch, and scaling efficiency.

    python benchmarks/ddp_scaling.py --gpus 2 --out results/ddp_scaling.json
Runs (1) one GPU at the global batch, (2) one GPU at the per-device batch (throughput reference) and
(3) N GPUs at the per-device batch. Efficiency = tokens/s(N) / (N * tokens/s(1 GPU, per-device batch)).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_json  # noqa: E402


def run(n, batch, out, a):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "-m", "edlm", "train",
           "--preset", a.preset, "--data", a.data, "--objective", a.objective, "--out", str(out),
           "--batch_size", str(batch), "--max_steps", str(a.steps), "--log_every", "10", "--eval_every", "0",
           "--save_every", str(a.steps), "--quiet", "--parallel", a.parallel]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "EDLM_NO_PROGRESS": "1"})
    if r.returncode:
        print(r.stderr[-4000:])
        raise SystemExit(f"run failed: {' '.join(cmd)}")
    rows = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "tokens_per_second" in r]
    speeds = [r["tokens_per_second"] for r in rows]
    tok = statistics.median(speeds[2:]) if len(speeds) > 3 else speeds[-1]  # skip warm-up rows
    return {"gpus": n, "per_device_batch": batch, "losses": [r["loss"] for r in rows], "tokens_per_second": tok}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--preset", default="gpu-char")
    ap.add_argument("--data", default="wiki-char")
    ap.add_argument("--objective", default="mdlm")
    ap.add_argument("--batch", type=int, default=128, help="per-device batch on N GPUs")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--parallel", default="ddp")
    ap.add_argument("--runs", default="/tmp/ddp-runs")
    ap.add_argument("--out", default="results/ddp_scaling.json")
    a = ap.parse_args()
    root = Path(a.runs)
    ref = run(1, a.batch * a.gpus, root / "one_global", a)
    one = run(1, a.batch, root / "one_local", a)
    many = run(a.gpus, a.batch, root / "many", a)
    diffs = [abs(x - y) for x, y in zip(ref["losses"], many["losses"], strict=True)]
    write_json(a.out, {**device_info(), "args": vars(a), "one_gpu_global_batch": ref, "one_gpu_local_batch": one,
                       "n_gpus": many, "max_abs_loss_diff": max(diffs),
                       "mean_abs_loss_diff": sum(diffs) / len(diffs),
                       "scaling_efficiency": many["tokens_per_second"] / (a.gpus * one["tokens_per_second"])})


if __name__ == "__main__":
    main()
