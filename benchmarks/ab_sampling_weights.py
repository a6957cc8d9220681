"""Same-run A/B of the compiled MDLM sampler with and without bf16 Linear-weight copies
(Transformer.low_precision_weights), alternating the two paths `--repeat` times after both are compiled
and warm: a sampling step is ~8.8 ms and its non-trunk part varies by ~0.3 ms between single runs.

    python benchmarks/ab_sampling_weights.py --out results/ab_sampling_weights_h200.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, timed, write_json  # noqa: E402
from sampling_speed import build, run_one  # noqa: E402

from edlm.sampling.loop import model_denoiser  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/ab_sampling_weights.json")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=4)
    a = ap.parse_args()
    V, L = 50257, 1024
    dit = build(V, L, False, 0)
    den = model_denoiser(dit, V)
    dit.compile_trunk(mode="reduce-overhead")
    res = {"fp32w": [], "bf16w": []}
    trunk = {}
    xs = {}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        xt = torch.where(torch.rand(a.batch, L, device="cuda") < 0.5, V,
                         torch.randint(0, V, (a.batch, L), device="cuda"))
        for name in res:  # compile, capture, warm
            dit.low_precision_weights = name == "bf16w"
            run_one(den, None, V, L, a.batch, 8, 1, None)
            trunk[name] = timed(lambda: den.features(xt, 0.5), warmup=3, iters=30)  # noqa: B023
        for _ in range(a.repeat):
            for name in res:
                dit.low_precision_weights = name == "bf16w"
                dt, _, _, x = run_one(den, None, V, L, a.batch, a.steps, 1, None)
                res[name].append(dt / a.steps)
                xs.setdefault(name, x)
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {**device_info(), "batch": a.batch, "steps": a.steps, "length": L,
           "step_seconds": res, "median_step_seconds": med,
           "median_seconds_per_seq": {k: v * a.steps / a.batch for k, v in med.items()},
           "trunk_seconds": trunk, "ratio_bf16w_over_fp32w": med["bf16w"] / med["fp32w"],
           "same_tokens": float((xs["fp32w"] == xs["bf16w"]).float().mean())}
    write_json(a.out, out)


if __name__ == "__main__":
    main()
