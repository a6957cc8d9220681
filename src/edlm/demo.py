"""`edlm demo`: the whole method on one machine in minutes.

Prepares the corpus, trains a tiny MDLM, AR and NCE energy, samples MDLM, EDLM-AR, EDLM-NCE and AR at
several step counts, scores every sample with one evaluator (on a ground-truth language, its exact
likelihood), prints a table and writes OUT/results.json, PNG plots and OUT/sample_texts.md. Runs already
in OUT/runs are reused (or resumed), so a second call only re-samples.

The default language is `markov2-share0.7`: second order (the next token depends on the last TWO), with
one neighbour revealing part of it (H(x_t|x_{t-1}) = 1.84 nats, entropy rate 1.0, unigram 3.35), so a tiny
MDLM learns enough of it in 300 CPU steps while tokens drawn independently in one step still clash, and
the AR energy (which reads the pairs) has much to correct. The step counts are few on purpose (2, 4, 8 for
64 tokens). `--data synthetic --steps 4,8,16` is the first-order language of earlier versions;
`--data markov2` (share 0) needs far more MDLM training (docs/mdlm_recipe.md).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from edlm.api.trainer import train_run as train
from edlm.bench import Setting, format_table, sweep, write_results
from edlm.config.demo import DemoConfig
from edlm.data import corpora
from edlm.data.names import is_language
from edlm.presets import get_preset
from edlm.runs import checkpoint as ckpt
from edlm.runs.folder import is_run_folder, read_meta
from edlm.utils import pick_device


def _train_once(name, objective, dc: DemoConfig, out: Path, steps: int, **over) -> str:
    run = out / "runs" / name
    latest = ckpt.latest_dir(run) if is_run_folder(run) else None
    if latest is not None and json.loads((latest / "state.json").read_text())["step"] >= steps:
        print(f"[demo] reusing {run}", file=sys.stderr)
        return str(run)
    model_cfg, cfg = get_preset(dc.preset)
    cfg = replace(cfg, objective=objective, data=dc.data, max_steps=steps, seed=dc.seed, device=dc.device,
                  eval_every=0, save_every=steps, **over)
    print(f"[demo] training {name} ({steps} steps)", file=sys.stderr)
    train(cfg, model_cfg, run, resume=latest is not None, max_steps=steps)
    return str(run)


def run_demo(dc: DemoConfig) -> dict:
    t0 = time.time()
    out = Path(dc.out)
    device = pick_device(dc.device)
    corpora.prepare(dc.data)
    evaluator = dc.evaluator or ("true" if is_language(dc.data) else "smollm2-135m")
    runs = {"mdlm": _train_once("mdlm", "mdlm", dc, out, dc.mdlm_steps),
            "ar": _train_once("ar", "ar", dc, out, dc.ar_steps)}
    over = {"batch_size": dc.nce_batch} if dc.nce_batch else {}
    runs["nce"] = _train_once("nce", "nce", dc, out, dc.nce_steps, diffusion=runs["mdlm"], lr=dc.nce_lr,
                              nce_negatives=dc.nce_negatives, **over)
    settings = [Setting("mdlm", s) for s in dc.steps]
    settings += [Setting(m, s, dc.k, dc.window) for m in ("edlm-ar", "edlm-nce") for s in dc.steps]
    settings.append(Setting("ar", 0))
    print(f"[demo] sampling {len(settings)} settings x {dc.num} sequences, scoring with '{evaluator}'",
          file=sys.stderr)
    rows = sweep(settings, runs, num=dc.num, batch_size=dc.num, seed=dc.seed, device=device, evaluator=evaluator,
                 out=out)
    meta = {"data": dc.data, "evaluator": evaluator, "device": str(device), "config": asdict(dc), "runs": runs,
            "seconds": time.time() - t0}
    if is_language(dc.data):
        from edlm.data.languages import load_language

        lang = load_language(dc.data)
        meta["true_entropy_rate_nats"] = lang.entropy_rate
        seq_len = read_meta(Path(runs["mdlm"])).train.seq_len
        how = "estimate" if getattr(lang, "kind", "") == "lexicon" else "exact"
        meta["reference"] = {"label": f"data ({how}, L={seq_len})", "gen_ppl": math.exp(lang.block_entropy(seq_len))}
    res = write_results(out, meta, rows)
    write_sample_texts(out, rows, dc, evaluator)
    print(format_table(rows))
    print(f"[demo] {time.time() - t0:.0f} s; results in {out}/results.json, plots {', '.join(res['plots'])}",
          file=sys.stderr)
    keep = ("method", "steps", "k", "gen_ppl", "gen_nll", "gen_nll_ci95", "vs_mdlm", "entropy_nats", "seconds",
            "mean_ess")
    return {"data": dc.data, "evaluator": evaluator, "seconds": time.time() - t0, "out": str(out),
            "rows": [{k: r[k] for k in keep if k in r} for r in rows]}


def write_sample_texts(out: Path, rows: list[dict], dc: DemoConfig, evaluator: str, per: int = 3) -> None:
    """OUT/sample_texts.md: the first samples of every setting at the fewest steps, with their NLL/token."""
    from edlm.api.evaluators import evaluate_rows
    from edlm.utils import atomic_write_bytes

    few = min(dc.steps)
    lines = [f"# A few demo samples ({dc.data}; evaluator {evaluator})", "",
             f"First {per} samples of each setting at {few} steps (AR: its own sequential steps), with the NLL "
             "per token each gets from the evaluator.", ""]
    for r in rows:
        if r["steps"] not in (few, 0):
            continue
        name = f"{r['method']}_s{r['steps']}_k{r['k']}" + (
            f"_w{r['window'][0]:g}-{r['window'][1]:g}" if r.get("window") else "")
        path = out / "samples" / f"{name}.jsonl"
        if not path.exists():
            continue
        samples = [json.loads(x) for x in path.read_text().splitlines()[:per]]
        lines += [f"## {name}", "", "```"]
        for smp in samples:
            ev = evaluate_rows([smp], evaluator)
            lines.append(f"{smp['text']}   nll={ev['gen_nll']:.2f}")
        lines += ["```", ""]
    atomic_write_bytes(out / "sample_texts.md", "\n".join(lines).encode())
