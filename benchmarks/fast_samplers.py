"""The fast samplers' speed and what it costs in quality (docs/studies/fast_samplers.md).

    # sample: every method, round by round (one batch of each per round, in a rotating order, so that a load
    # change on a shared machine hits every method alike); rows appended as they finish (resumable)
    python benchmarks/fast_samplers.py sweep --mdlm runs/markov3-mdlm --ar runs/markov3-ar --length 1024 \\
        --stride 32 --num 32 --batch-size 8 --out results/fast_samplers/markov3_1024.jsonl
    gzip -9 results/fast_samplers/markov3_1024.jsonl   # as kept in the repository (report reads either)
    # score (exact log p on markov3 / lexicon; an evaluator such as smollm2-135m on text), intervals, Pareto
    python benchmarks/fast_samplers.py report results/fast_samplers/markov3_1024.jsonl.gz --evaluator true \\
        --out results/fast_samplers/markov3_1024.json --plot results/fast_samplers/markov3_1024.png

Speed is the CPU time of the sampling calls (process time, one thread: what a core spends, which another
process's load changes less than wall time) and wall time beside it; a method's speed-up is its tokens per
CPU-second over the plain sampler's, as a ratio per round (the same seeds, the same minutes): the median
over rounds, with their range (min, max). Quality: gen-NLL per token with a 95% bootstrap interval over samples, and the
difference to the plain sampler with its own interval; entropy next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PLAIN = "plain-32"
PAIRS = [("prefix-32", "plain-32"), ("prefix-8", "plain-8"), ("dual-blocks8-8", "blocks8-8"),
         ("dual-blocks8-4", "blocks8-4"), ("dual-blocks16-4", "blocks16-4"), ("prefix-8+E", "plain-8+E")]
"""(a, b): a's quality minus b's, where they differ in one option only (the cache's own cost)"""

# name -> (GenerateRequest fields, energy?). "steps" are per block (per window without block_size).
METHODS = {
    "plain-32": ({"steps": 32}, False),
    "plain-16": ({"steps": 16}, False),
    "plain-8": ({"steps": 8}, False),
    "first-hit": ({"sampler": "first-hit"}, False),
    "prefix-32": ({"steps": 32, "kv_cache": "prefix"}, False),
    "prefix-8": ({"steps": 8, "kv_cache": "prefix"}, False),
    "blocks8-8": ({"steps": 8, "block_size": 8}, False),  # the block-wise cells without the cache: its cost apart
    "blocks8-4": ({"steps": 4, "block_size": 8}, False),
    "blocks16-4": ({"steps": 4, "block_size": 16}, False),
    "confidence-32": ({"steps": 32, "unmask": "confidence"}, False),  # most-confident-first: threshold's order
    "dual-blocks8-8": ({"steps": 8, "block_size": 8, "kv_cache": "dual"}, False),
    "dual-blocks8-4": ({"steps": 4, "block_size": 8, "kv_cache": "dual"}, False),
    "dual-blocks16-4": ({"steps": 4, "block_size": 16, "kv_cache": "dual"}, False),
    "threshold-0.9": ({"sampler": "threshold", "threshold": 0.9}, False),
    "threshold-0.5": ({"sampler": "threshold", "threshold": 0.5}, False),
    "threshold-0.5+prefix": ({"sampler": "threshold", "threshold": 0.5, "kv_cache": "prefix"}, False),
    "threshold-0.9+dual-blocks8": ({"sampler": "threshold", "threshold": 0.9, "block_size": 8,
                                    "kv_cache": "dual"}, False),
    "first-hit+dual-blocks8": ({"sampler": "first-hit", "block_size": 8, "kv_cache": "dual"}, False),
    "plain-32+E": ({"steps": 32}, True),
    "plain-8+E": ({"steps": 8}, True),
    "prefix-8+E": ({"steps": 8, "kv_cache": "prefix"}, True),
    "threshold-0.9+E": ({"sampler": "threshold", "threshold": 0.9}, True),
    "threshold-0.5+prefix+E": ({"sampler": "threshold", "threshold": 0.5, "kv_cache": "prefix"}, True),
    "dual-blocks8-4+E": ({"steps": 4, "block_size": 8, "kv_cache": "dual"}, True),
    "plain-8+E-noshare": ({"steps": 8}, True),  # the AR energy without its shared prefix: the saving
}


def _done(out: Path) -> set:
    if not out.exists():
        return set()
    return {(r["method"], r["round"]) for r in map(json.loads, out.read_text().splitlines()) if r.get("ids")}


def sweep(a) -> None:
    import torch

    from edlm.config.sampling import GenerateRequest
    from edlm.energy.ar import AREnergy
    from edlm.runs.load import load_model
    from edlm.sampling.generate import generate
    from edlm.sampling.loop import model_denoiser

    torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    model, meta = load_model(a.mdlm, dev)
    ar = load_model(a.ar, dev, expect="ar")[0] if a.ar else None
    names = a.methods.split(",") if a.methods else [m for m in METHODS if ar is not None or not METHODS[m][1]]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    rounds = -(-a.num // a.batch_size)
    started = time.time()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no method always runs first
        for name in order:
            if (name, r) in done:
                continue
            if a.max_wall_seconds and time.time() - started > a.max_wall_seconds:
                print(json.dumps({"stopped": "max_wall_seconds", "round": r}))
                return
            fields, with_energy = METHODS[name]
            energy = None
            if with_energy:
                e = AREnergy(ar, model_denoiser(model, meta["mask_id"]), meta["mask_id"],
                             share_prefix=not name.endswith("noshare"))
                energy = (e, "edlm-ar")
            req = GenerateRequest(ckpt=a.mdlm, num=a.batch_size, batch_size=a.batch_size, length=a.length,
                                  seed=a.seed + r, stride=a.stride if a.length > model.cfg.max_len else None,
                                  energy=f"ar:{a.ar}" if with_energy else None, k=a.k, precision="fp32",
                                  **{"steps": 32, **fields})
            c0, w0 = time.process_time(), time.perf_counter()
            rows, summary = generate(req, dev, model, meta, energy=energy, quiet=True)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            rec = {"method": name, "round": r, "cpu_s": cpu, "wall_s": wall, "length": a.length,
                   "stride": req.stride, "corpus": meta["data"], "k": a.k if with_energy else 1,
                   "network_calls": summary.get("network_calls_per_batch"),
                   "ar_tokens": energy[0].tokens if energy else None, "fields": fields, "energy": with_energy,
                   "ids": [row["ids"] for row in rows]}
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps({k: rec[k] for k in ("method", "round", "cpu_s", "wall_s", "network_calls")}),
                  flush=True)


def _score(recs, evaluator: str, corpus: str, tokenizer) -> list:
    """(nll, tokens) per sample, in the order of recs' ids."""
    from edlm.api.evaluators import evaluate_rows

    rows = []
    for rec in recs:
        for ids in rec["ids"]:
            row = {"ids": ids, "corpus": corpus}
            if tokenizer is not None:
                row["text"] = tokenizer.decode(ids)
            rows.append(row)
    res = evaluate_rows(rows, evaluator, keep_scores=True, batch_size=8)
    return res["scores"]


def bad_words(ids, words: set, space: int) -> tuple[int, int]:
    """(misspelt, whole) words of a lexicon sample: the space-delimited runs between its first and last space (the
    runs at the ends may be cut). Exact log p is -inf for a sample with one misspelt word, so on `lexicon` the
    study reports this rate instead (a ratio of sums, with the gen-NLL's bootstrap)."""
    cuts = [i for i, c in enumerate(ids) if c == space]
    runs = [tuple(ids[i + 1:j]) for i, j in zip(cuts[:-1], cuts[1:], strict=True)]
    return sum(r not in words for r in runs), len(runs)


def _text(path: Path) -> str:
    """A sweep's rows, as written or gzipped (results/fast_samplers keeps them as .jsonl.gz)."""
    import gzip

    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def report(a) -> None:
    import numpy as np

    from edlm.data.names import is_language
    from edlm.data.tokenizers import tokenizer_for
    from edlm.eval.stats import difference_interval, nll_interval, unigram_entropy

    recs = [json.loads(line) for p in a.jsonl for line in _text(Path(p)).splitlines()]
    corpus = recs[0]["corpus"]
    tok = None if is_language(corpus) else tokenizer_for(corpus)
    by: dict[str, list] = {}
    for rec in recs:
        by.setdefault(rec["method"], []).append(rec)
    scores = {}
    cache = Path(a.out).with_suffix(f".scores.{a.evaluator.replace(':', '_').replace('/', '_')}.json")
    if cache.exists():
        scores = json.loads(cache.read_text())
    for name, rs in by.items():
        rs.sort(key=lambda r: r["round"])
        key = f"{name}:{len(rs)}"
        if key not in scores:
            scores[key] = _score(rs, a.evaluator, corpus, tok)
            cache.write_text(json.dumps(scores))
    plain = {r["round"]: r for r in by.get(PLAIN, [])}
    words, space = None, None
    if corpus == "lexicon":
        from edlm.data.languages import make_language

        lang = make_language(corpus)
        words, space = set(lang.words), lang.SPACE
    out = {"evaluator": a.evaluator, "corpus": corpus, "plain": PLAIN, "methods": {}}
    per_sample = {}
    for name, rs in by.items():
        sc = scores[f"{name}:{len(rs)}"]
        nll, ntok = [s[0] for s in sc], [s[1] for s in sc]
        per_sample[name] = {"nll": list(zip(nll, ntok, strict=True))}
        if words is not None:
            per_sample[name]["bad_words"] = [bad_words(ids, words, space) for r in rs for ids in r["ids"]]
        n_seq = sum(len(r["ids"]) for r in rs)
        length = rs[0]["length"]
        cpu = sum(r["cpu_s"] for r in rs)
        ratios = [(plain[r["round"]]["cpu_s"] / len(plain[r["round"]]["ids"])) / (r["cpu_s"] / len(r["ids"]))
                  for r in rs if r["round"] in plain]
        m = {"samples": n_seq, "length": length, "energy": rs[0]["energy"], "fields": rs[0]["fields"],
             "gen_nll": sum(nll) / sum(ntok), "gen_nll_ci95": nll_interval(nll, ntok),
             "entropy_nats": float(np.mean([unigram_entropy(ids) for r in rs for ids in r["ids"]])),
             "cpu_s_per_seq": cpu / n_seq, "wall_s_per_seq": sum(r["wall_s"] for r in rs) / n_seq,
             "tokens_per_cpu_s": n_seq * length / cpu,
             "network_calls_per_batch": (float(np.mean([r["network_calls"] for r in rs]))  # None: not counted
                                         if all(r["network_calls"] is not None for r in rs) else None),
             "speedup_vs_plain": float(np.median(ratios)) if ratios else None,
             "speedup_range": [float(min(ratios)), float(max(ratios))] if ratios else None,
             "speedup_rounds": len(ratios)}
        if rs[0].get("ar_tokens"):
            run_, full = (sum(r["ar_tokens"][i] for r in rs) for i in (0, 1))
            m["ar_tokens_run_over_plain"] = run_ / full
        if PLAIN in by and name != PLAIN:
            ps = scores[f"{PLAIN}:{len(by[PLAIN])}"]
            m["minus_plain"] = difference_interval((nll, ntok), ([s[0] for s in ps], [s[1] for s in ps]))
        if words is not None:
            bw = [bad_words(ids, words, space) for r in rs for ids in r["ids"]]
            m["bad_word_rate"] = sum(b for b, _ in bw) / max(1, sum(n for _, n in bw))
            m["bad_word_rate_ci95"] = nll_interval([b for b, _ in bw], [n for _, n in bw])
            if PLAIN in by and name != PLAIN:
                pw = [bad_words(ids, words, space) for r in by[PLAIN] for ids in r["ids"]]
                m["bad_word_rate_minus_plain"] = difference_interval(([b for b, _ in bw], [n for _, n in bw]),
                                                                     ([b for b, _ in pw], [n for _, n in pw]))
        if not np.isfinite(m["gen_nll"]):  # lexicon: a misspelt word has probability 0 (bad_word_rate instead)
            m["gen_nll"], m["gen_nll_ci95"] = None, None
            m.pop("minus_plain", None)
        out["methods"][name] = m
    for x, y in PAIRS:  # one option apart: its own cost, on the quality the report ranks by
        if x in by and y in by:
            key = "bad_words" if words is not None else "nll"
            pa, pb = (per_sample[n][key] for n in (x, y))
            out.setdefault("pairs", {})[f"{x} minus {y}"] = difference_interval(
                ([u for u, _ in pa], [v for _, v in pa]), ([u for u, _ in pb], [v for _, v in pb]))
    Path(a.out).write_text(json.dumps(out, indent=1))
    if a.plot:
        plot(out, a.plot, a.title or Path(a.out).stem)
    for name, m in sorted(out["methods"].items(), key=lambda kv: kv[1]["cpu_s_per_seq"]):
        d = m.get("minus_plain")
        nll = (f"{m['gen_nll']:.3f} [{m['gen_nll_ci95'][0]:.3f},{m['gen_nll_ci95'][1]:.3f}]"
               if m["gen_nll"] is not None else "gen-NLL inf")
        print(f"{name:28s} {nll} H={m['entropy_nats']:.3f} cpu/seq={m['cpu_s_per_seq']:.2f}s "
              f"x{m['speedup_vs_plain'] or 0:.2f}"
              + (f" d={d['diff']:+.3f} [{d['ci'][0]:+.3f},{d['ci'][1]:+.3f}]" if d else "")
              + (f" bad-words={m['bad_word_rate']:.3f} [{m['bad_word_rate_ci95'][0]:.3f},"
                 f"{m['bad_word_rate_ci95'][1]:.3f}]" if "bad_word_rate" in m else ""))


def plot(out: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    key = "bad_word_rate" if any("bad_word_rate" in m for m in out["methods"].values()) else "gen_nll"
    for name, m in out["methods"].items():
        y, (lo, hi) = m[key], m[key + "_ci95"]
        color = "C3" if m["energy"] else ("C0" if name.startswith(("plain", "blocks")) else "C2")
        ax.errorbar(m["cpu_s_per_seq"], y, yerr=[[y - lo], [hi - y]], fmt="o", color=color, capsize=2, ms=4)
        ax.annotate(name, (m["cpu_s_per_seq"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if PLAIN in out["methods"]:
        lo, hi = out["methods"][PLAIN][key + "_ci95"]
        ax.axhspan(lo, hi, color="C0", alpha=0.12, label=f"{PLAIN}: 95% interval")
    ax.set_xscale("log")
    ax.set_xlabel("CPU seconds per sequence (1 thread; log scale)")
    ax.set_ylabel(f"gen-NLL per token ({out['evaluator']}; 95% interval)" if key == "gen_nll"
                  else "misspelt words / words (95% interval)")
    ax.set_title(f"{title}: blue plain, green fast samplers, red with the AR energy", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--mdlm", required=True)
    s.add_argument("--ar", default=None, help="AR run: the energy (methods ending +E)")
    s.add_argument("--length", type=int, default=1024)
    s.add_argument("--stride", type=int, default=32, help="semi-AR stride when the length exceeds the context")
    s.add_argument("--num", type=int, default=32)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--methods", default=None, help="comma-separated (default: all)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--max-wall-seconds", type=float, default=0)
    s.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("jsonl", nargs="+")
    r.add_argument("--evaluator", default="true")
    r.add_argument("--out", required=True)
    r.add_argument("--plot", default=None)
    r.add_argument("--title", default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("EDLM_NO_PROGRESS", "1")
    sweep(a) if a.cmd == "sweep" else report(a)


if __name__ == "__main__":
    main()
