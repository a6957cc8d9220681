"""The ceiling question on an exact-likelihood language: MDLM, EDLM-AR, confidence unmasking and EDLM on top of
confidence, every sample scored by the language's own log p (no evaluator).

    # which language: an exact denoiser (forward-backward), no training: how much does drawing many tokens at
    # once cost each language, for MDLM and for confidence unmasking?
    python benchmarks/ceiling_sweep.py look --out results/ceiling_look.json

    # adaptive k (sampling/adaptive.py, --k-policy ess) next to fixed (k, window), exact denoiser and true energy:
    # gen-NLL with intervals, entropy, and the cost as energy candidate-evaluations per sample
    python benchmarks/ceiling_sweep.py look --adaptive --languages synthetic,markov3 --steps 4,8,16 \
        --out results/ceiling/adaptive_look_cpu.json

    # the sweep: prepare the language, train an MDLM and an AR, sample every cell, score exactly
    python benchmarks/ceiling_sweep.py sweep --size gpu --out results/ceiling_markov3_h200.json
    python benchmarks/ceiling_sweep.py sweep --size cpu --out results/ceiling_markov3_cpu.json

    # tables, intervals, speed-ups and plots from the JSON (benchmarks/ceiling_report.py)
    python benchmarks/ceiling_report.py results/ceiling_markov3_cpu.json

    # real text (ceiling_text.py): the GPU keeps every cell's ids, a CPU machine scores them with evaluators
    python benchmarks/ceiling_sweep.py sweep --size gpu-char --language wiki-char --out OUT.json
    python benchmarks/ceiling_sweep.py score --out OUT.json --evaluator smollm2-135m --evaluator gemma3-270m
    python benchmarks/ceiling_report.py OUT.json --evaluator smollm2-135m

Every cell keeps the per-sample gen-NLL (nats/token, exact: -log p(x) / L under the language) and unigram
entropy, so the report can bootstrap intervals over samples. Timing: before the first cell of each sampler
kind (MDLM, confidence, EDLM-AR with k candidates, EDLM on confidence with k), an untimed warm-up batch runs
the same code path (first-call costs: allocations, kernel compiles; model loading happens before any cell).
A cell's seconds/step = its sampling wall time (device synchronised) / the steps it ran; s/seq = wall time /
samples. The JSON is rewritten after every cell, so a time-out keeps what finished.

Adaptive k in the sweep: an `--extra` sampler name ending in `-ess` (edlm-ar-ess, confidence+edlm-ar-ess) runs
`--k-policy ess` with K as both the first step's k and k_max, e.g. `--extra edlm-ar-ess:16:8:1`; a further
`-m<M>` (edlm-ar-m2, edlm-ar-ess-m2) runs the energy only for sequences that unmask at least M positions on a step
(--min-unmask M). Every energy cell reports mean_k and energy candidates per sample (the cost).

What belongs here and what in `edlm bench`: a sweep over runs you already have (steps, k, window, unmasking
strategy, energy temperature, k policy, min-unmask, seeds), scored by one evaluator with intervals and plots, is
`edlm bench` / edlm.bench. This script keeps only what bench does not do: `look` (exact denoisers and the true
energy, no trained runs), training models of a named size before sampling, time budgets that cut cells to fit a
machine lease, untimed warm-ups per code path, an energy from a further run (the quarter-FLOPs AR), per-sample
arrays for ceiling_report.py, and real text sampled on one machine and scored on another (`score`). The
`-ess` / `-m<M>` suffixes are kept so that the studies' recorded commands still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ceiling_look import _floats, _ints, cpu_threads, facts, look, summarise  # noqa: E402
from ceiling_text import ExactScorer, TextScorer, cell_key, is_exact  # noqa: E402
from common import device_info  # noqa: E402

from edlm.config.model import TransformerConfig  # noqa: E402
from edlm.config.train import TrainConfig  # noqa: E402
from edlm.sampling.adaptive import KPolicy  # noqa: E402
from edlm.utils import atomic_write_bytes  # noqa: E402

# ------------------------------------------------------------------------------------------------------------
# The sweep with trained models.

def _preset(name: str) -> dict:
    """A preset's model and optimisation (presets.py) as a size's model/train dicts, validated every 250 steps."""
    from dataclasses import asdict

    from edlm.presets import get_preset

    m, t = get_preset(name)
    train = {k: getattr(t, k) for k in ("seq_len", "batch_size", "lr", "warmup_steps", "lr_schedule", "ema")}
    return dict(model=asdict(m), train={**train, "eval_every": 250, "eval_batches": 8})


SIZES = {
    # ~29M-parameter DiT as the `gpu-char` preset, at length 128 (the language's dependencies are 3 tokens)
    # with the `tiny` preset's fix for the zero-init saddle (docs/mdlm_recipe.md): with MDLM's zero-initialised
    # adaLN/output and 1/t weights this MDLM sat on markov3's unigram plateau for 1750 steps, then diverged
    # (validation 2.75 -> 3.20; results/ceiling/ceiling_markov3_h200_zero_init.json)
    "gpu": dict(model=dict(n_layers=8, d_model=512, n_heads=8, cond_dim=128, max_len=128, dropout=0.1,
                           init_std=0.02),
                train=dict(seq_len=128, batch_size=256, lr=1e-3, warmup_steps=200, lr_schedule="cosine",
                           ema=0.999, eval_every=250, eval_batches=8, loss_weight="flat"),
                mdlm_steps=4000, ar_steps=1500,
                batch=256, train_tokens=40_000_000, nce=dict(steps=1000, batch_size=128, lr=3e-4)),
    # real text (ceiling_text.py): the gpu-char / gpu-bpe presets' models and optimisation (MDLM's own init:
    # on real text one neighbour is informative, and these presets learned with it), length 256
    "gpu-char": dict(**_preset("gpu-char"), mdlm_steps=5000, ar_steps=3000, batch=256,
                     nce=dict(steps=1000, batch_size=64, lr=3e-4)),
    "gpu-bpe": dict(**_preset("gpu-bpe"), mdlm_steps=4000, ar_steps=2500, batch=128,
                    nce=dict(steps=800, batch_size=32, lr=3e-4)),
    # the `tiny` preset's size (4 layers, width 128, 0.8M parameters) at length 32: what one thread of a shared
    # 2-core CPU can train in minutes and sample 256 times per cell; about one epoch of the 2M training tokens,
    # so no dropout (the validation curve shows no over-fitting)
    "cpu": dict(model=dict(n_layers=4, d_model=128, n_heads=4, cond_dim=64, max_len=32, dropout=0.0),
                train=dict(seq_len=32, batch_size=64, lr=2e-3, warmup_steps=50, lr_schedule="cosine",
                           ema=0.99, eval_every=100, eval_batches=8), mdlm_steps=1000, ar_steps=500,
                batch=256, nce=dict(steps=300, batch_size=32, lr=1e-3)),
    # real text on the 2-core CPU machine (issue 18 without a GPU): the `cpu` size at length 64 on wiki-char, about
    # 6M training characters of the 32M (under one epoch: no dropout needed, the validation curve shows it)
    "cpu-char": dict(model=dict(n_layers=4, d_model=128, n_heads=4, cond_dim=64, max_len=64, dropout=0.0),
                     train=dict(seq_len=64, batch_size=64, lr=2e-3, warmup_steps=100, lr_schedule="cosine",
                                ema=0.99, eval_every=100, eval_batches=8), mdlm_steps=1500, ar_steps=800,
                     batch=256, nce=dict(steps=300, batch_size=32, lr=1e-3)),
    # plumbing check only
    "smoke": dict(model=dict(n_layers=1, d_model=32, n_heads=2, cond_dim=16, max_len=16, dropout=0.0),
                  train=dict(seq_len=16, batch_size=16, lr=3e-3, warmup_steps=2, ema=0.9, eval_every=5,
                             eval_batches=2), mdlm_steps=10, ar_steps=10, batch=8,
                  nce=dict(steps=5, batch_size=8, lr=1e-3)),
}


# Energy of each EDLM sampler kind: the run folder (under --runs) it loads. `edlm-arq` is an AR with a quarter
# of the MDLM's matmul FLOPs per token (half the width, same depth): EDLM's cost is 1 + w*k*c_E/c_mu, so a
# cheaper energy buys more candidates; is it still good enough to help?
ENERGY_RUNS = {"edlm-ar": "ar", "edlm-arq": "ar-quarter", "edlm-nce": "nce"}


def energy_of(sampler: str) -> str | None:
    """'edlm-ar' / 'confidence+edlm-nce' / 'edlm-arq-ess-m2' -> the energy's run folder name; plain samplers ->
    None."""
    return ENERGY_RUNS.get(sweep_sampler(sampler)[0].split("+")[-1])


def parse_cells(a) -> list[dict]:
    """Cells in the order they run: MDLM, confidence, then the energy cells, cheapest first."""
    cells = [{"sampler": "mdlm", "steps": s, "k": 1, "window": None} for s in _ints(a.mdlm_steps)]
    cells += [{"sampler": "confidence", "steps": s, "k": 1, "window": None} for s in _ints(a.conf_steps)]
    energy = []
    for s in _ints(a.edlm_steps):
        for k in _ints(a.edlm_k):
            for w in _floats(a.edlm_window):
                energy.append({"sampler": "edlm-ar", "steps": s, "k": k, "window": w})
    for s in _ints(a.conf_edlm_steps):
        for k in _ints(a.conf_edlm_k):
            for w in _floats(a.conf_edlm_window):
                energy.append({"sampler": "confidence+edlm-ar", "steps": s, "k": k, "window": w})
    for spec in filter(None, a.extra.split(",")):
        name, steps, k, w = spec.split(":")
        base, _, m = sweep_sampler(name)
        if energy_of(base) is None or (m > 1 and base.startswith("confidence")):
            raise SystemExit(f"--extra {spec!r}: SAMPLER is edlm-ar, edlm-arq, edlm-nce or confidence+ one of them, "
                             "optionally with -ess, and without confidence also with -m<M> (e.g. edlm-ar-ess-m2)")
        cell = {"sampler": name, "steps": int(steps), "k": int(k), "window": float(w)}
        if cell not in energy:
            energy.append(cell)
    energy.sort(key=lambda c: c["steps"] * (1 + c["window"] * c["k"]))
    return cells + energy


def sweep_sampler(name: str) -> tuple[str, bool, int]:
    """'edlm-ar-ess-m2' -> ('edlm-ar', True, 2): the base sampler, --k-policy ess, --energy-min-unmask."""
    m = 1
    head, sep, tail = name.rpartition("-m")
    if sep and tail.isdigit():
        name, m = head, int(tail)
    ess = name.endswith("-ess")
    return name.removesuffix("-ess"), ess, m


def val_curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_loss = {r["step"]: r["loss"] for r in rows if "loss" in r}
    return [{"step": r["step"], "val": r["val"]["loss"], "train": train_loss.get(r["step"])} for r in rows
            if "val" in r]


def run_cell(cell, a, models, energies, device, scorer, quiet=True, num=None, steps=None):
    """Sample one cell and score it (exact language) or keep its ids for `score` (real text). With num/steps
    (the untimed warm-up) nothing is scored or kept."""
    from edlm.api.generate import GenerateRequest, generate

    base, adaptive, m = sweep_sampler(cell["sampler"])
    run = energy_of(base)
    edlm = run is not None
    w = cell["window"]
    spec = f"{'nce' if run == 'nce' else 'ar'}:{Path(a.runs) / run}" if edlm else None
    req = GenerateRequest(ckpt=a.mdlm_run, num=num or a.num, steps=steps or cell["steps"], batch_size=a.batch,
                          seed=a.seed, energy=spec, k=cell["k"],
                          window=(1.0 - w, 1.0) if edlm else None,
                          unmask="confidence" if cell["sampler"].startswith("confidence") else "random",
                          k_policy=KPolicy(k_max=cell["k"]) if adaptive else None, min_unmask=m if edlm else 1)
    rows, summ = generate(req, device, models=models, energies=energies, quiet=quiet)
    x = torch.tensor([r["ids"] for r in rows])
    nll, ent = scorer.record(cell_key(cell), x) if num is None else (None, [0.0])
    return {**cell, **summarise(nll, ent), "seconds": summ["sampling_s"],
            "seconds_per_sample": summ["sampling_s"] / len(rows), "steps_run": summ["steps_run"],
            "seconds_per_step": summ["sampling_s"] / max(summ["steps_run"], 1),
            "batch": min(a.batch, len(rows)), "mean_ess": summ["mean_ess"],
            "candidates_per_sample": summ.get("energy_candidates_per_sample", 0.0), "mean_k": summ.get("mean_k"),
            "nll": None if nll is None else [round(v, 5) for v in nll], "ent": [round(v, 5) for v in ent]}


def sweep(a):
    from edlm.api.trainer import train_run as train
    from edlm.data import corpora
    from edlm.runs.load import load_model

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpu_threads(a.threads)
    size = SIZES[a.size]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    res = {**device_info(), "what": "ceiling sweep", "language": a.language, "size": a.size, "args": vars(a),
           "train": {}, "cells": [], "cut": []}
    if a.resume and out.exists():  # keep the cells of an earlier invocation (same runs), add the missing ones
        old = json.loads(out.read_text())
        res["earlier_invocations"] = old.pop("earlier_invocations", []) + [
            {k: old.get(k) for k in ("commit", "args", "elapsed_s", "sampling_s", "cut", "warmup_s")}]
        res["cells"], res["train"] = old["cells"], old.get("train", {})
        if "data" in old:
            res["data"] = old["data"]

    def save(msg=None):
        res["elapsed_s"] = time.time() - t_start
        atomic_write_bytes(out, json.dumps(res, indent=1).encode())  # a crash leaves the last complete file
        if msg:
            print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    exact = is_exact(a.language)
    prep = corpora.prepare(a.language, train_tokens=(a.train_tokens or size.get("train_tokens")) if exact else None)
    scorer = ExactScorer(a.language) if exact else TextScorer(a.language, out.with_suffix(".samples.jsonl.gz"))
    L = size["train"]["seq_len"]
    res["length"] = L
    res["language_facts"] = {**(facts(scorer.lang, L) if exact else {}), "train_tokens": prep.get("train_tokens"),
                             "exact": exact}
    if "data" not in res:  # kept on --resume (a real-text data row's ids are in the side file already)
        nll, ent = scorer.record("data", scorer.reference(a.num, L, a.seed))
        res["data"] = {**summarise(nll, ent), "nll": None if nll is None else [round(v, 5) for v in nll],
                       "ent": [round(v, 5) for v in ent]}
    runs = Path(a.runs)
    m_cfg = TransformerConfig(**size["model"])
    wanted = {energy_of(c["sampler"]) for c in parse_cells(a)} - {None}
    jobs = [("mdlm", "mdlm", a.mdlm_train or size["mdlm_steps"], m_cfg, {}),
            ("ar", "ar", a.ar_train or size["ar_steps"], replace(m_cfg, causal=True), {})]
    if "ar-quarter" in wanted:  # half the width and heads, same depth: about 1/4 of the matmul FLOPs
        q = replace(m_cfg, causal=True, d_model=m_cfg.d_model // 2, n_heads=max(m_cfg.n_heads // 2, 1))
        jobs.append(("ar-quarter", "ar", a.ar_train or size["ar_steps"], q, {}))
    if "nce" in wanted:  # initialised from the MDLM, which stays the frozen proposal
        n = size["nce"]
        jobs.append(("nce", "nce", a.nce_train or n["steps"], m_cfg,
                     {"diffusion": str(runs / "mdlm"), "batch_size": n["batch_size"], "lr": n["lr"],
                      "warmup_steps": min(100, n["steps"] // 10)}))
    for name, obj, steps, mc, over in jobs:
        path = runs / name
        done = path / "sweep_done.json"  # trained to the end (a time-out mid-run resumes from its checkpoint)
        if not done.exists():
            t_cfg = TrainConfig(**{**size["train"], "objective": obj, "data": a.language, "max_steps": steps,
                                   "save_every": min(250, steps), "log_every": 25, **over})
            t0 = time.time()
            s = train(t_cfg, mc, path, quiet=True, resume=(path / "run.json").exists())
            s = {**s, "wall_s_this_invocation": time.time() - t0}
            done.write_text(json.dumps(s))
        else:
            s = {k: v for k, v in res["train"].get(name, {}).items() if k != "curve"} or json.loads(done.read_text())
        res["train"][name] = {**s, "curve": val_curve(path)}
        save(f"train {name}: {json.dumps(res['train'][name])[:300]}")
    a.mdlm_run = str(runs / "mdlm")
    models = {a.mdlm_run: load_model(runs / "mdlm", dev)}
    models = models[a.mdlm_run]
    energies: dict = {}
    cells = parse_cells(a)
    warmed = set()
    budget = a.max_sample_seconds
    spent = 0.0
    rate: dict = {}  # seconds per step per kind, from cells already run (the plan for the rest)
    done = [{k: c[k] for k in ("sampler", "steps", "k", "window")} for c in res["cells"]]
    for cell in cells:
        if cell in done:
            continue
        kind = (cell["sampler"], cell["k"])
        if kind not in warmed:  # untimed: first-call costs of this code path
            t0 = time.time()
            run_cell(cell, a, models, energies, dev, scorer, num=min(a.batch, 32), steps=4)
            res.setdefault("warmup_s", {})[f"{kind[0]} k={kind[1]}"] = time.time() - t0
            warmed.add(kind)
        w = cell["window"] or 0.0
        plain = "confidence" if cell["sampler"].startswith("confidence") else "mdlm"
        est = None  # seconds, from the per-step cost of the plain sampler and of one energy candidate so far
        if plain in rate and (cell["k"] == 1 or cell["sampler"] in rate):
            est = cell["steps"] * a.num * (rate[plain] + w * cell["k"] * rate.get(cell["sampler"], 0.0))
        left = min(budget - spent if budget else float("inf"),
                   a.max_wall_seconds - (time.time() - t_start) if a.max_wall_seconds else float("inf"))
        if est is not None and est > left:
            res["cut"].append({**cell, "estimated_s": est})
            save(f"cut {cell} (estimated {est:.0f} s, {left:.0f} s left)")
            continue
        r = run_cell(cell, a, models, energies, dev, scorer)
        spent += r["seconds"]
        res["cells"].append(r)
        # seconds per step per sequence (steps_run counts the steps of every batch of `batch` sequences)
        per = r["seconds"] / max(r["steps_run"], 1) / r["batch"]
        if cell["k"] == 1:
            rate[cell["sampler"]] = per
        elif plain in rate:
            rate[cell["sampler"]] = max(per - rate[plain], 0.0) / max(w * cell["k"], 1e-9)
        save(f"{cell['sampler']} steps={cell['steps']} k={cell['k']} w={cell['window']}: gen-NLL "
             f"{'(later)' if r['gen_nll'] is None else format(r['gen_nll'], '.4f')} "
             f"H {r['entropy']:.3f} {r['seconds_per_step'] * 1e3:.1f} ms/step ESS {r['mean_ess']}")
    res["sampling_s"] = spent
    save("done")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("look")
    lk.add_argument("--out", required=True)
    lk.add_argument("--languages", default="markov2,markov3,lexicon")
    lk.add_argument("--steps", default="2,4,8,16,32")
    lk.add_argument("--num", type=int, default=256)
    lk.add_argument("--length", type=int, default=32)
    lk.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    lk.add_argument("--k", type=int, default=8)
    lk.add_argument("--adaptive", action="store_true",
                    help="adaptive k (--k-policy ess) next to fixed (k, window) with the true energy, costs counted")
    lk.add_argument("--fixed", default="2:0.2,8:0.2,2:1,4:1,8:1,16:1,4:1:2,8:1:2,16:1:2",
                    help="with --adaptive: fixed-k cells K:WINDOW[:M],... (EDLM on the steps with t >= 1 - WINDOW, or "
                         "with t in [LO, HI] for a WINDOW LO-HI; M: the energy only for sequences unmasking >= M "
                         "positions on the step)")
    lk.add_argument("--ess", default="8:8,16:16,2:16,16:16:2",
                    help="with --adaptive: ESS-policy cells K0:K_MAX[:M],... (first step's k, the most k), every step")
    lk.add_argument("--resume", action="store_true", help="with --adaptive: keep the cells in --out, add the others")
    sw = sub.add_parser("sweep")
    sw.add_argument("--out", required=True)
    sw.add_argument("--language", default="markov3")
    sw.add_argument("--size", default="cpu", choices=sorted(SIZES))
    sw.add_argument("--runs", default="/tmp/edlm-ceiling")
    sw.add_argument("--mdlm-train", type=int, default=0, help="training steps (0: the size's default)")
    sw.add_argument("--ar-train", type=int, default=0)
    sw.add_argument("--nce-train", type=int, default=0)
    sw.add_argument("--train-tokens", type=int, default=0,
                    help="tokens in the language's training split (0: the size's default, or 2M)")
    sw.add_argument("--num", type=int, default=256)
    sw.add_argument("--batch", type=int, default=0, help="sequences per batch (0: the size's default)")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default); no effect on a GPU")
    sw.add_argument("--mdlm-steps", default="16,32,64,128,256,512")
    sw.add_argument("--conf-steps", default="8,16,32,64")
    sw.add_argument("--edlm-steps", default="16,32,64")
    sw.add_argument("--edlm-k", default="2,4,8,16")
    sw.add_argument("--edlm-window", default="0.2,0.5,1.0")
    sw.add_argument("--conf-edlm-steps", default="8,16,32")
    sw.add_argument("--conf-edlm-k", default="8")
    sw.add_argument("--conf-edlm-window", default="1.0")
    sw.add_argument("--resume", action="store_true", help="keep the cells already in --out and run only the others")
    sw.add_argument("--extra", default="", help="more energy cells, SAMPLER:STEPS:K:WINDOW,... (SAMPLER: edlm-ar, "
                    "edlm-arq (a quarter-FLOPs AR), edlm-nce, or confidence+ any of them; with the suffix -ess, "
                    "e.g. edlm-ar-ess:16:8:1, k adapts by the ESS (--k-policy ess) starting at K with k_max = K; "
                    "with -m<M> (random unmasking only) the energy runs only where >= M positions unmask)")
    sw.add_argument("--max-sample-seconds", type=float, default=0,
                    help="skip (and list under 'cut') cells whose estimated time exceeds what is left (0: no limit)")
    sw.add_argument("--max-wall-seconds", type=float, default=0,
                    help="the same cut against the wall clock since this invocation started, training included: "
                         "for a run that must end inside a machine lease (0: no limit)")
    sc = sub.add_parser("score", help="real-text sweeps: per-sample NLL of every cell under language-model "
                        "evaluators, into the sweep's JSON (ceiling_text.py)")
    sc.add_argument("--out", required=True, help="the sweep's JSON")
    sc.add_argument("--samples", default="", help="its side file (default: OUT with .samples.jsonl.gz)")
    sc.add_argument("--evaluator", action="append", required=True,
                    help="smollm2-135m, gemma3-270m, edlm:AR_RUN, ... (repeat for several)")
    sc.add_argument("--batch", type=int, default=16)
    sc.add_argument("--device", default="cpu", help="where the evaluators run: cpu, cuda or auto (a GPU scores a "
                    "real-text cell in seconds where 2 CPU cores take minutes)")
    sc.add_argument("--eos", default="mdlm")
    sc.add_argument("--only", default="", help="score the data row and only the cells whose key SAMPLER|STEPS|K|"
                    "WINDOW matches one of these comma-separated patterns, in that order (e.g. "
                    "'mdlm|*,edlm-ar|*|8|1.0'); the report then analyses the scored cells and lists the others")
    sc.add_argument("--force", action="store_true", help="rescore cells that already have this evaluator")
    a = ap.parse_args()
    if a.cmd == "score":
        from ceiling_text import score as score_text

        score_text(a)
        return
    if a.cmd == "look":
        look(a)
    else:
        a.batch = a.batch or SIZES[a.size]["batch"]
        sweep(a)


if __name__ == "__main__":
    main()
