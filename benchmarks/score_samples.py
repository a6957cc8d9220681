"""Score the samples a GPU run brought back (samples.jsonl.gz) with an evaluator, per (method, steps).

    python benchmarks/score_samples.py --samples OUT/samples.jsonl.gz --evaluator smollm2-135m \
        --per-setting 32 --out results/prose-bpe_samples_smollm2.json
Also reports the Figure-1 analogue: the smallest time per sequence at which each EDLM variant reaches
MDLM's best generative perplexity in the sweep (sampling times from the GPU run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_json  # noqa: E402

from edlm.api.evaluators import evaluate_rows  # noqa: E402


def matched_quality(table):
    mdlm = [r for r in table if r["method"] == "mdlm"]
    best = min(mdlm, key=lambda r: r["gen_ppl"])
    out = {"mdlm_best": {k: best[k] for k in ("steps", "gen_ppl", "seconds_per_sample")}}
    for m in sorted({r["method"] for r in table} - {"mdlm", "ar"}):
        ok = [r for r in table if r["method"] == m and r["gen_ppl"] <= best["gen_ppl"]]
        if ok:
            fastest = min(ok, key=lambda r: r["seconds_per_sample"])
            out[m] = {"steps": fastest["steps"], "gen_ppl": fastest["gen_ppl"],
                      "seconds_per_sample": fastest["seconds_per_sample"],
                      "speedup_vs_mdlm_best": best["seconds_per_sample"] / fastest["seconds_per_sample"]}
        else:
            out[m] = None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--evaluator", default="smollm2-135m")
    ap.add_argument("--per-setting", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    groups: dict = {}
    with gzip.open(a.samples, "rt") as f:
        for line in f:
            r = json.loads(line)
            groups.setdefault((r["method"], r["steps"]), []).append(r)
    table = []
    for (method, steps), rows in groups.items():
        ev = evaluate_rows(rows[: a.per_setting], a.evaluator, batch_size=a.batch_size)
        table.append({"method": method, "steps": steps if method != "ar" else 0, "k": rows[0]["k"],
                      "num": ev["num"], "gen_ppl": ev["gen_ppl"], "gen_nll": ev["gen_nll"],
                      "entropy_nats": ev["entropy_nats"], "entropy_bits": ev["entropy_bits"],
                      "distinct_2": ev["distinct_2"], "seconds_per_sample": ev["seconds_per_sample"]})
        print(table[-1], flush=True)
    write_json(a.out, {"samples": str(a.samples), "evaluator": a.evaluator, "per_setting": a.per_setting,
                       "scored_on": "CPU (2 cores)", "sampling_times_from": "the GPU run that made the samples",
                       "rows": table, "matched_quality": matched_quality(table)})


if __name__ == "__main__":
    main()
