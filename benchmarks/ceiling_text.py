"""The ceiling sweep on real text: where ceiling_sweep.py scores a ground-truth language's samples at once with
its exact log p, a real-text sweep keeps every cell's samples (token ids) in a side file, and `score` rates
them later with language-model evaluators, on a machine that has them (the GGUF evaluators are larger than
what travels to the GPU machine):

    # on the GPU: train, sample every cell, keep the ids (OUT.samples.jsonl.gz beside OUT)
    python benchmarks/ceiling_sweep.py sweep --size gpu-char --language wiki-char --out OUT.json
    # on a CPU machine with the evaluators: per-sample NLL under each, into the same JSON
    python benchmarks/ceiling_sweep.py score --out OUT.json --evaluator smollm2-135m --evaluator gemma3-270m
    # the report, once per evaluator (no conclusion should rest on one)
    python benchmarks/ceiling_report.py OUT.json --evaluator smollm2-135m

Each cell then holds evals[EVALUATOR] = {"nll": per-sample NLL per evaluator token, ...}; the report copies one
evaluator's list into the cell's "nll" and runs the same analysis as for the exact languages. The "data" row
is `num` windows of the test split, of the sweep's length, at evenly spaced offsets.
"""

from __future__ import annotations

import fcntl
import gzip
import json
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch

from edlm.errors import EdlmError
from edlm.eval.stats import unigram_entropy
from edlm.utils import atomic_write_bytes, pick_device


def is_exact(name: str) -> bool:
    from edlm.data.names import is_language

    return name == "synthetic" or is_language(name)


def cell_key(cell: dict) -> str:
    """'data', or 'SAMPLER|STEPS|K|WINDOW' (the four fields that name a cell)."""
    if cell.get("sampler") is None:
        return "data"
    return f"{cell['sampler']}|{cell['steps']}|{cell['k']}|{cell['window']}"


class ExactScorer:
    """A ground-truth language: exact per-sample gen-NLL (nats/token) and unigram entropy at once."""

    exact = True

    def __init__(self, name: str):
        from edlm.data.languages import load_language

        self.lang = load_language(name)

    def reference(self, num: int, length: int, seed: int) -> torch.Tensor:
        return self.lang.sample(num, length, generator=torch.Generator().manual_seed(seed + 999))

    def record(self, key: str, x: torch.Tensor):
        from ceiling_look import score

        return score(self.lang, x)


class TextScorer:
    """A real-text corpus: unigram entropy now, the ids to a gzip JSON-lines side file (one line per cell, the
    latest line of a key wins, so a re-run cell replaces the old one), NLL later by `score`."""

    exact = False

    def __init__(self, name: str, samples: Path):
        self.name, self.samples = name, samples

    def reference(self, num: int, length: int, seed: int) -> torch.Tensor:
        from edlm.data.corpora import load_split

        test = load_split(self.name, "test")
        if len(test) < num * length:
            raise SystemExit(f"{self.name}'s test split has {len(test)} tokens, fewer than {num} x {length}")
        starts = np.linspace(0, len(test) - length, num).astype(np.int64)
        return torch.from_numpy(np.stack([np.asarray(test[s:s + length], dtype=np.int64) for s in starts]))

    def record(self, key: str, x: torch.Tensor):
        ids = x.cpu().tolist()
        with gzip.open(self.samples, "at") as f:
            f.write(json.dumps({"key": key, "ids": ids}) + "\n")
        return None, [unigram_entropy(r) for r in ids]


def read_samples(path: Path) -> dict[str, list[list[int]]]:
    out: dict = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[row["key"]] = row["ids"]
    return out


def update_json(out: Path, change) -> None:
    """change(res) applied to the sweep's JSON as it is on disk now, under a lock, written atomically: several
    `score` processes (one per evaluator, say, on a 2-core machine) and the report can share one sweep file
    without one writing back its stale copy over the others' work."""
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(out.read_text())
        change(res)
        atomic_write_bytes(out, json.dumps(res, indent=1).encode())


def save_eval(out: Path, key: str, ev: str, entry: dict) -> None:
    """One cell's evaluation into the sweep's JSON on disk (update_json)."""
    def change(res):
        cell = res["data"] if key == "data" else next(c for c in res["cells"] if cell_key(c) == key)
        cell.setdefault("evals", {})[ev] = entry
    update_json(out, change)


def sample_texts(res: dict, an: dict, samples: Path, n: int) -> str:
    """Markdown: the first n samples (decoded) of the data row and of each sampler's best cell, with the cell's
    gen-NLL and entropy, so a reader sees what the numbers mean."""
    from edlm.data.tokenizers import tokenizer_for

    tok, ids = tokenizer_for(res["language"]), read_samples(samples)
    fams = an["families"]
    d = an["data"]
    parts = [f"# Samples: {res['language']}, scored by {res.get('scored_by')}", "",
             f"## data (test-split windows): gen-NLL {d['gen_nll']:.3f}, entropy {d['entropy']:.3f}", ""]
    parts += [f"    {tok.decode(x)!r}" for x in ids["data"][:n]]
    for c in an["cells"]:
        f = fams.get(c.get("family"))
        if not f or f["at_steps"] != c["steps"]:
            continue
        parts += ["", f"## {c['family']}, {c['steps']} steps (its best): gen-NLL {c['gen_nll']:.3f}, "
                  f"entropy {c['entropy']:.3f}", ""]
        parts += [f"    {tok.decode(x)!r}" for x in ids[cell_key(c)][:n]]
    return "\n".join(parts) + "\n"


def score(a) -> None:
    """Per-sample NLL of every cell (and the data row) under each --evaluator, written into the sweep's JSON."""
    from edlm.api.evaluators import evaluate_rows
    from edlm.data.tokenizers import tokenizer_for

    out = Path(a.out)
    try:  # before the JSON is read: a wrong device is one error, not a traceback after loading
        device = pick_device(a.device)
    except EdlmError as e:
        raise SystemExit(f"--device: {e}") from None
    res = json.loads(out.read_text())
    samples = read_samples(Path(a.samples) if a.samples else out.with_suffix(".samples.jsonl.gz"))
    corpus = res["language"]
    tok = tokenizer_for(corpus)
    targets = [("data", res["data"])] + [(cell_key(c), c) for c in res["cells"]]
    if a.only:  # a CPU too slow for every cell: score the data row and the cells named, in the order named
        pats = [p for p in a.only.split(",") if p]
        targets = [("data", res["data"])] + sorted(
            ((k, c) for k, c in targets[1:] if any(fnmatch(k, p) for p in pats)),
            key=lambda kc: min(i for i, p in enumerate(pats) if fnmatch(kc[0], p)))
    for ev in a.evaluator:
        for i, (key, cell) in enumerate(targets):
            if ev in cell.get("evals", {}) and not a.force:
                continue
            if key not in samples:
                raise SystemExit(f"no samples for {key} in the side file; was the sweep run with this --out?")
            rows = [{"ids": ids, "text": tok.decode(ids), "corpus": corpus} for ids in samples[key]]
            r = evaluate_rows(rows, ev, batch_size=a.batch, eos=a.eos, keep_scores=True, device=device)
            per = [n / t if t else float("nan") for n, t in r["scores"]]
            cell.setdefault("evals", {})[ev] = {
                "gen_nll": float(np.nanmean(per)), "gen_nll_token_weighted": r["gen_nll"],
                "gen_ppl": r["gen_ppl"], "nll": [round(v, 5) for v in per], "tokens": [t for _, t in r["scores"]],
                "unscored": r["samples_unscored"], "score_seconds": r["score_seconds"]}
            save_eval(out, key, ev, cell["evals"][ev])  # after every cell: an interrupted scoring resumes
            print(f"[{ev}] {i + 1}/{len(targets)} {key}: gen-NLL {cell['evals'][ev]['gen_nll']:.4f} "
                  f"({r['score_seconds']:.0f} s)", flush=True)


def pick_evaluator(res: dict, name: str | None) -> str | None:
    """For the report: copy one evaluator's per-sample NLL into every cell's "nll" / "gen_nll" (real text), or
    check that an exact sweep is not given one. Returns the evaluator's name (None: exact)."""
    cells = [res["data"]] + res["cells"]
    if all(c.get("nll") is not None for c in cells) and "evals" not in res["data"]:
        if name:
            raise SystemExit("this sweep is scored exactly (a ground-truth language): drop --evaluator")
        return None
    have = set(res["data"].get("evals", {}))
    if not name or name not in have:
        raise SystemExit(f"real-text sweep: pass --evaluator, one of {sorted(have) or 'none scored yet'} "
                         "(score with `ceiling_sweep.py score`)")
    # cells this evaluator has not scored (`score --only`) leave the analysis, by name
    res["unscored"] = [cell_key(c) for c in res["cells"] if name not in c.get("evals", {})]
    res["cells"] = [c for c in res["cells"] if name in c.get("evals", {})]
    cells = [res["data"]] + res["cells"]
    for c in cells:
        e = c["evals"][name]
        keep = [i for i, v in enumerate(e["nll"]) if v == v]  # drop unscored (empty) samples, NaN
        c["nll"], c["gen_nll"] = [e["nll"][i] for i in keep], e["gen_nll"]
        c["ent"] = [c["ent"][i] for i in keep]
    res["scored_by"] = name
    return name
