"""The strong-energy experiment: MDLM against EDLM with a pretrained LM as the energy (`lm:NAME`), each judged by
ANOTHER pretrained LM (SmolLM2-135M energy -> Gemma3-270m judge, and the reverse), next to the energy LM's own
samples (the "why not just sample the LM" baseline), across proposal strength, k, window, energy form and scale.

    # 1. the MDLMs (a short and a longer training budget per corpus): the `edlm train` commands of PLAN_TRAIN
    python benchmarks/strong_energy.py train --corpus wiki-char --runs runs/se
    # 2. every cell of a plan: sample, keep the ids (OUT.samples.jsonl.gz), score with the judges; resumable
    python benchmarks/strong_energy.py sweep --corpus wiki-char --runs runs/se --plan cpu \
        --out results/strong_energy/wiki-char_cpu.json
    # 3. tables (equal-steps differences with 95% intervals, entropy, cost, matched-quality speed-up) and plots
    python benchmarks/strong_energy.py report results/strong_energy/wiki-char_cpu.json

A cell is KIND|MDLM|STEPS|K|WINDOW|FORM|SCALE|ENERGY: kind data (test-split windows), mdlm, edlm (MDLM + the LM
energy) or lm (the LM's own ancestral samples, float64 draws, cut to the same length in the corpus's alphabet).
Every EDLM cell is judged only by the LM that was not its energy (the circularity guard refuses the other); MDLM,
data and LM cells by both. Costs: the sampler's seconds per sample with the energy's inside them (and its share),
denoiser forwards and energy candidates per sample, LM tokens the energy read. The JSON is rewritten after every
cell, so an interrupted sweep resumes where it stopped (`--resume`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from edlm.utils import atomic_write_bytes  # noqa: E402

LMS = ("smollm2-135m", "gemma3-270m")
OTHER = {"smollm2-135m": "gemma3-270m", "gemma3-270m": "smollm2-135m"}

# The MDLMs, a short and a longer training budget per corpus (the proposal's strength). cpu: the ceiling study's
# `cpu-char` model (4 x 128, 1.05M parameters without the vocabulary) at length 64; gpu: the gpu-char / gpu-bpe
# presets (8 x 512) at length 128.
CPU_MODEL = ["--preset", "tiny", "--n_layers", "4", "--d_model", "128", "--n_heads", "4", "--cond_dim", "64",
             "--max_len", "64", "--dropout", "0", "--seq_len", "64", "--lr", "2e-3", "--warmup_steps", "100",
             "--lr_schedule", "cosine", "--ema", "0.99", "--eval_every", "100", "--eval_batches", "8"]
PLAN_TRAIN = {
    "cpu": {"wiki-char": {"short": [*CPU_MODEL, "--batch_size", "64", "--max_steps", "300"],
                          "long": [*CPU_MODEL, "--batch_size", "64", "--max_steps", "1000"]},
            "prose-bpe": {"short": [*CPU_MODEL, "--batch_size", "32", "--max_steps", "150"],
                          "long": [*CPU_MODEL, "--batch_size", "32", "--max_steps", "600"]}},
    "gpu": {c: {tag: ["--preset", preset, "--seq_len", "128", "--max_len", "128", "--max_steps", str(n),
                      "--eval_every", "500"] for tag, n in (("short", 400), ("long", steps))}
            for c, preset, steps in (("wiki-char", "gpu-char", 3000), ("prose-bpe", "gpu-bpe", 2500))},
}


def cell(kind, mdlm="long", steps=0, k=1, window=0.0, form="", scale=0.0, energy=""):
    return {"kind": kind, "mdlm": mdlm if kind in ("mdlm", "edlm") else "", "steps": steps, "k": k,
            "window": window, "form": form, "scale": scale, "energy": energy}


def key(c: dict) -> str:
    return "|".join(str(c[f]) for f in ("kind", "mdlm", "steps", "k", "window", "form", "scale", "energy"))


def edlm_cells(mdlm, steps, k, window, forms, scales, energies):
    return [cell("edlm", mdlm, s, kk, w, f, sc, e) for e in energies for s in steps for kk in k for w in window
            for f in forms for sc in scales]


def plan(name: str, corpus: str) -> list[dict]:
    """The cells of a plan, in the order they run (cheap and central first, so a cut sweep keeps the answer)."""
    base = [cell("data")] + [cell("lm", energy=e) for e in LMS]
    mdlm = [cell("mdlm", m, s) for m in ("long", "short") for s in (4, 8, 16, 32, 64, 128)]
    if name == "smoke":
        return [cell("data"), cell("lm", energy="smollm2-135m"), cell("mdlm", "long", 4),
                cell("edlm", "long", 4, 2, 1.0, "product", 1.0, "smollm2-135m")]
    if name == "cpu":  # in order of what the question needs most, per proposal; a cut sweep keeps the first
        smol, gem = LMS
        e = []
        for tag in ("short", "long"):
            c = lambda steps, k, w, form, scale, lm, tag=tag: cell("edlm", tag, steps, k, w, form, scale, lm)
            e += [c(8, 4, 1.0, "product", 1.0, smol), c(8, 4, 1.0, "product", 1.0, gem),
                  c(8, 4, 1.0, "residual", 1.0, smol), c(8, 4, 1.0, "residual", 1.0, gem),
                  c(8, 16, 1.0, "product", 1.0, smol), c(8, 16, 0.2, "product", 1.0, smol),
                  c(8, 4, 1.0, "product", 2.0, smol), c(4, 16, 1.0, "product", 1.0, smol),
                  c(16, 4, 1.0, "product", 1.0, smol), c(8, 16, 1.0, "residual", 1.0, smol),
                  c(8, 16, 1.0, "product", 1.0, gem)]
        return base + mdlm + e
    if name == "gpu":  # the same questions on one H200, wider: every k, both windows and forms, three scales
        e = []
        for lm in LMS:
            e += edlm_cells("long", [4, 8, 16, 32], [4, 16], [1.0], ["residual", "product"], [1.0], [lm])
            e += edlm_cells("long", [8, 32], [16], [0.2], ["residual", "product"], [1.0], [lm])
            e += edlm_cells("long", [8], [4, 16], [1.0], ["product"], [0.5, 2.0], [lm])
            e += edlm_cells("long", [8], [16], [1.0], ["residual"], [0.5], [lm])
            e += edlm_cells("short", [8, 32], [4, 16], [1.0], ["residual", "product"], [1.0], [lm])
        return base + mdlm + [cell("mdlm", m, s) for m in ("long", "short") for s in (256, 512)] + e
    raise SystemExit(f"no plan {name!r} for {corpus!r}: cpu, gpu or smoke")


# ------------------------------------------------------------------------------------------------------------
def train(a):
    env = {"EDLM_NO_PROGRESS": "1"}
    for tag, extra in PLAN_TRAIN[a.scale][a.corpus].items():
        out = Path(a.runs) / f"{a.corpus}-{tag}"
        if (out / "train_done.json").exists():
            continue
        cmd = [sys.executable, "-m", "edlm", "train", "--objective", "mdlm", "--data", a.corpus, "--out", str(out),
               *extra, "--save_every", "100" if a.scale == "cpu" else "500", "--quiet", "--device", a.device]
        if (out / "run.json").exists():
            cmd.append("--resume")
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        p = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(p.stderr[-2000:])
        summ = json.loads(p.stdout.strip().splitlines()[-1])
        (out / "train_done.json").write_text(json.dumps({**summ, "wall_s": time.time() - t0, "cmd": cmd[1:]}))


# ------------------------------------------------------------------------------------------------------------
def normalise(corpus: str):
    """text -> ids of the corpus's tokenizer (the LM's text brought into the MDLM's alphabet), or None."""
    from edlm.data.tokenizers import tokenizer_for
    from edlm.data.wikifil import text8_normalize

    tok = tokenizer_for(corpus)
    if tok.name == "char":
        return lambda text: tok.encode(text8_normalize(text))
    return tok.encode


@torch.no_grad()
def lm_samples(ev, n: int, new_tokens: int, seed: int, batch: int, sep: str) -> list[str]:
    """n plain ancestral samples of the evaluator's LM from its BOS: every token drawn from the full softmax in
    float64 (no top-k, no top-p), documents joined by `sep` where the LM ends one."""
    model, tok = ev.model, ev.tok
    g = torch.Generator().manual_seed(seed)
    special = set(tok.all_special_ids)
    texts = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        inp = torch.full((b, 1), int(ev.bos if ev.bos is not None else ev.eos), device=ev.device)
        past, out = None, []
        for _ in range(new_tokens):
            o = model(input_ids=inp, past_key_values=past, use_cache=True)
            past = o.past_key_values
            p = torch.softmax(o.logits[:, -1].double(), -1).cpu()
            inp = torch.multinomial(p, 1, generator=g).to(ev.device)
            out.append(inp.cpu())
        for row in torch.cat(out, 1).tolist():
            docs, cur = [], []
            for t in row:
                if t in special:
                    docs.append(cur)
                    cur = []
                else:
                    cur.append(t)
            docs.append(cur)
            texts.append(sep.join(tok.decode(d) for d in docs))
    return texts


class Sweep:
    def __init__(self, a):
        self.a = a
        self.out = Path(a.out)
        self.side = self.out.with_suffix(".samples.jsonl.gz")
        self.dev = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        from common import device_info  # here, not at import: it sets the process's fused-kernel default

        self.res = {**device_info(), "what": "strong-energy sweep", "corpus": a.corpus, "plan": a.plan,
                    "args": vars(a), "cells": {}, "train": {}}
        if a.resume and self.out.exists():
            old = json.loads(self.out.read_text())
            self.res["cells"] = old.get("cells", {})
            self.res["earlier"] = old.get("earlier", []) + [{k: old.get(k) for k in ("commit", "elapsed_s")}]
        self.models: dict = {}
        self.energies: dict = {}
        self.t0 = time.time()

    def save(self, msg: str):
        self.res["elapsed_s"] = time.time() - self.t0
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.out, json.dumps(self.res, indent=1).encode())
        print(f"[{time.time() - self.t0:7.0f}s] {msg}", flush=True)

    def mdlm(self, tag):
        from edlm.runs.load import load_model

        if tag not in self.models:
            path = Path(self.a.runs) / f"{self.a.corpus}-{tag}"
            self.models[tag] = (str(path), *load_model(path, self.dev))
            done = path / "train_done.json"
            self.res["train"][tag] = json.loads(done.read_text()) if done.exists() else {"run": str(path)}
        return self.models[tag]

    def sample(self, c) -> tuple[list[dict], dict]:
        from edlm.api.energies import build_energy
        from edlm.api.generate import GenerateRequest, generate
        from edlm.sampling.loop import model_denoiser

        a = self.a
        if c["kind"] == "data":
            from edlm.data import corpora
            from edlm.data.tokenizers import tokenizer_for

            tok = tokenizer_for(a.corpus)
            split = corpora.load_split(a.corpus, "test")
            starts = np.linspace(0, len(split) - a.length - 1, a.num).astype(int)
            rows = [{"ids": [int(i) for i in split[s:s + a.length]], "corpus": a.corpus} for s in starts]
            for r in rows:
                r["text"] = tok.decode(r["ids"])
            return rows, {}
        if c["kind"] == "lm":
            from edlm.api.evaluators import get_evaluator
            from edlm.data.tokenizers import tokenizer_for

            ev = get_evaluator(c["energy"], self.dev)
            tok, enc = tokenizer_for(a.corpus), normalise(a.corpus)
            sep = " " if tok.name == "char" else "<|endoftext|>"
            t0 = time.perf_counter()
            texts = lm_samples(ev, a.num, a.lm_tokens, a.seed, a.batch, sep)
            dt = time.perf_counter() - t0
            rows = []
            for t in texts:
                ids = enc(t)[:a.length]
                if len(ids) == a.length:
                    rows.append({"ids": ids, "text": tok.decode(ids), "corpus": a.corpus,
                                 "seconds": dt / len(texts)})
            return rows, {"seconds_per_sample": dt / len(texts), "short_samples_dropped": len(texts) - len(rows),
                          "lm_new_tokens": a.lm_tokens}
        path, model, meta = self.mdlm(c["mdlm"])
        spec = None
        energies = {}
        if c["kind"] == "edlm":
            spec = f"lm:{c['energy']}"
            opts = {"form": c["form"], "scale": c["scale"], "batch_size": a.energy_batch}
            ek = (c["mdlm"], c["energy"], c["form"], c["scale"])
            if ek not in self.energies:
                self.energies[ek] = build_energy(spec, model_denoiser(model, meta["mask_id"]), meta, self.dev,
                                                 options=opts)
            energies = {spec: self.energies[ek]}
        w = c["window"]
        req = GenerateRequest(ckpt=path, num=a.num, steps=c["steps"], batch_size=a.batch, length=a.length,
                              seed=a.seed, energy=spec, k=c["k"], window=(1.0 - w, 1.0) if spec else None)
        rows, summ = generate(req, self.dev, models=(model, meta), energies=energies, quiet=True)
        keep = ("sampling_s", "seconds_per_sample", "mean_ess", "energy_seconds", "energy_seconds_per_sample",
                "energy_share_of_time", "energy_candidates_per_sample", "energy_lm_tokens_per_sample",
                "denoiser_forwards_per_sample", "all_vetoed", "energy_level", "energy_form", "energy_scale",
                "method")
        return rows, {k: summ[k] for k in keep if k in summ}

    def judge(self, c, rows) -> dict:
        from edlm.api.evaluators import evaluate_rows

        out = {}
        for j in LMS:
            if c["kind"] in ("edlm", "lm") and j == c["energy"]:
                continue  # never judged by the model that chose (or wrote) them
            s = evaluate_rows(rows, j, device=self.dev, batch_size=self.a.judge_batch, keep_scores=True)
            out[j] = {k: s[k] for k in ("gen_nll", "gen_nll_ci95", "tokens_scored", "score_seconds")}
            out[j]["scores"] = [[round(n, 4), t] for n, t in s["scores"]]
        return out

    def run(self):
        from edlm.eval.stats import sample_stats, unigram_entropy

        cells = plan(self.a.plan, self.a.corpus)
        if self.a.only:
            from fnmatch import fnmatch

            pats = self.a.only.split(",")
            cells = [c for c in cells if any(fnmatch(key(c), p) for p in pats)]
        for c in cells:
            k = key(c)
            if k in self.res["cells"]:
                continue
            if self.a.max_wall_seconds and time.time() - self.t0 > self.a.max_wall_seconds:
                self.save(f"wall limit: stopping before {k}")
                break
            t0 = time.time()
            rows, cost = self.sample(c)
            t_sample = time.time() - t0
            with gzip.open(self.side, "at") as f:  # every cell's ids, for rescoring later
                for r in rows:
                    f.write(json.dumps({"cell": k, "ids": r["ids"]}) + "\n")
            st = sample_stats(rows)
            judged = self.judge(c, rows)
            self.res["cells"][k] = {**c, "num": len(rows), **cost, "wall_s": time.time() - t0,
                                    "sample_wall_s": t_sample, "entropy": st["entropy_nats"],
                                    "ent": [round(unigram_entropy(r["ids"]), 4) for r in rows],
                                    "texts": [r["text"] for r in rows[:3]], "judges": judged}
            nll = " ".join(f"{j}={v['gen_nll']:.3f}" for j, v in judged.items())
            self.save(f"{k}: {nll} H={st['entropy_nats']:.3f} s/sample={cost.get('seconds_per_sample', 0):.3f} "
                      f"ESS={cost.get('mean_ess')}")
        self.save("done")


def sweep(a):
    torch.set_num_threads(a.threads)
    a.length = a.length or 64
    if not a.lm_tokens:
        a.lm_tokens = 48 if a.corpus == "wiki-char" else 96
    Sweep(a).run()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--corpus", required=True, choices=sorted(PLAN_TRAIN["cpu"]))
    tr.add_argument("--runs", required=True)
    tr.add_argument("--scale", default="cpu", choices=sorted(PLAN_TRAIN))
    tr.add_argument("--device", default="cpu")
    sw = sub.add_parser("sweep")
    sw.add_argument("--corpus", required=True, choices=sorted(PLAN_TRAIN["cpu"]))
    sw.add_argument("--runs", required=True, help="where `train` put CORPUS-short and CORPUS-long")
    sw.add_argument("--plan", default="cpu", choices=("cpu", "gpu", "smoke"))
    sw.add_argument("--out", required=True)
    sw.add_argument("--num", type=int, default=128)
    sw.add_argument("--length", type=int, default=64)
    sw.add_argument("--batch", type=int, default=64, help="sequences sampled together")
    sw.add_argument("--energy-batch", type=int, default=256, help="candidates per LM forward of the energy")
    sw.add_argument("--judge-batch", type=int, default=64)
    sw.add_argument("--lm-tokens", type=int, default=0, help="LM tokens drawn per LM-alone sample before the cut "
                    "to --length (0: 48 for wiki-char, 96 for prose-bpe)")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--threads", type=int, default=2)
    sw.add_argument("--device", default="cpu")
    sw.add_argument("--only", default="", help="run only cells whose key matches one of these fnmatch patterns")
    sw.add_argument("--resume", action="store_true")
    sw.add_argument("--max-wall-seconds", type=float, default=0)
    rp = sub.add_parser("report")
    rp.add_argument("json")
    rp.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    if a.cmd == "train":
        train(a)
    elif a.cmd == "sweep":
        sweep(a)
    else:
        from strong_energy_report import report

        report(a)


if __name__ == "__main__":
    main()
