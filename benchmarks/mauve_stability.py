"""How many samples a stable MAUVE needs: the spread of MAUVE over repeated draws at 128 / 256 / 512 / 1024 samples.

    python benchmarks/mauve_stability.py --samples mdlm.jsonl --features smollm2-135m \
        --sizes 128,256,512,1024 --repeats 5 --out results/frontiers/mauve_stability_wiki-char.json

Pools: the samples file (at least 2 x the largest size is best: the repeats then differ at every size), held-out
test windows of the samples' corpus and length (the reference), and held-out VALID windows (a second draw of real
text: "data vs data" is MAUVE's ceiling at that size, what a perfect sampler would score). Features are computed
once per pool. For each size n and repeat r: n texts drawn without replacement from each pool (seed r), MAUVE with
k-means seed 25 + r and no bootstrap. The JSON has every value and the mean / sd / min / max per size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info  # noqa: E402

from edlm.api.evaluators import get_evaluator  # noqa: E402
from edlm.eval.genppl import read_samples  # noqa: E402
from edlm.eval.heldout import heldout_rows, shape_of  # noqa: E402
from edlm.eval.mauve import MauveConfig, features, mauve_score  # noqa: E402
from edlm.utils import atomic_write_json  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--features", default="smollm2-135m")
    ap.add_argument("--sizes", default="128,256,512,1024")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pool", type=int, default=0, help="held-out windows per pool (0: as many as samples)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sizes = [int(v) for v in a.sizes.split(",")]
    rows = read_samples(a.samples)
    corpus, length = shape_of(rows)
    pool = a.pool or len(rows)
    if max(sizes) > min(len(rows), pool):
        raise SystemExit(f"the largest size {max(sizes)} exceeds the pools ({len(rows)} samples, {pool} windows)")
    ev = get_evaluator(a.features)
    t0 = time.time()
    feats = {"samples": features(ev, rows), "test": features(ev, heldout_rows(corpus, pool, length, "test")),
             "valid": features(ev, heldout_rows(corpus, pool, length, "valid"))}
    res = {**device_info(), "what": "MAUVE stability", "samples": a.samples, "corpus": corpus, "length": length,
           "features": ev.name, "pool": {k: len(v) for k, v in feats.items()}, "features_s": time.time() - t0,
           "repeats": a.repeats, "by_size": []}
    for n in sizes:
        entry = {"n": n}
        for name, p in (("samples_vs_test", feats["samples"]), ("valid_vs_test", feats["valid"])):
            vals = []
            for r in range(a.repeats):
                rng = np.random.default_rng(r)
                ip = rng.choice(len(p), n, replace=False)
                iq = rng.choice(len(feats["test"]), n, replace=False)
                cfg = MauveConfig(seed=25 + r, bootstrap=0, seeds=1)
                vals.append(mauve_score(p[ip], feats["test"][iq], cfg)["mauve"])
            entry[name] = {"values": vals, "mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)),
                           "min": float(np.min(vals)), "max": float(np.max(vals))}
        res["by_size"].append(entry)
        print(json.dumps(entry), flush=True)
        atomic_write_json(Path(a.out), res)
    res["elapsed_s"] = time.time() - t0
    atomic_write_json(Path(a.out), res)


if __name__ == "__main__":
    main()
