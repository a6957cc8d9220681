"""Real-text experiment in one command (the GPU runs behind docs/studies/likelihood_numbers.md).

Trains MDLM, AR and an NCE energy on a prepared corpus, evaluates test likelihood bounds (AR exact,
MDLM NELBO, EDLM-coAR exact, EDLM-AR / EDLM-NCE with log Z bounds), then samples every method at
several step counts. Results are appended to OUT/results.json after every stage (a time-out keeps
what finished); all samples go to OUT/samples.jsonl.gz for scoring elsewhere (`edlm eval samples`).

    python benchmarks/real_text.py --data wiki-char --preset gpu-char --out OUT/wiki
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info  # noqa: E402

from edlm.api.energies import build_energy  # noqa: E402
from edlm.api.generate import GenerateRequest, generate  # noqa: E402
from edlm.api.trainer import train_run as train  # noqa: E402
from edlm.data import corpora  # noqa: E402
from edlm.data.loader import iter_eval_blocks  # noqa: E402
from edlm.eval.likelihood import EDLMSampler, LikelihoodPlan, evaluate_split  # noqa: E402
from edlm.eval.report import likelihood_report  # noqa: E402
from edlm.eval.stats import sample_stats  # noqa: E402
from edlm.presets import get_preset  # noqa: E402
from edlm.runs.load import load_model  # noqa: E402
from edlm.sampling.loop import model_denoiser  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", default="/tmp/edlm-runs")
    ap.add_argument("--mdlm-steps", type=int, default=4000)
    ap.add_argument("--ar-steps", type=int, default=3000)
    ap.add_argument("--nce-steps", type=int, default=800)
    ap.add_argument("--eval-blocks", type=int, default=1024)
    ap.add_argument("--logz-blocks", type=int, default=256)
    ap.add_argument("--sample-steps", default="16,32,64,128,256")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--window", default="0,1")
    ap.add_argument("--bound-steps", type=int, default=32, help="T of the T-step MDLM/EDLM likelihood bounds")
    a = ap.parse_args()
    out, runs = Path(a.out), Path(a.runs) / a.data
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = {**device_info(), "data": a.data, "preset": a.preset, "args": vars(a), "stages": {}}
    t_start = time.time()

    def save(stage, value):
        res["stages"][stage] = value
        res["elapsed"] = time.time() - t_start
        (out / "results.json").write_text(json.dumps(res, indent=2))
        print(f"[{time.time() - t_start:7.1f}s] {stage}: {json.dumps(value)[:400]}", flush=True)

    corpora.prepare(a.data)
    m_cfg, t_cfg = get_preset(a.preset)
    t_cfg = replace(t_cfg, data=a.data, eval_every=0, log_every=50)
    paths = {k: runs / k for k in ("mdlm", "ar", "nce")}
    for name, steps, over in (("mdlm", a.mdlm_steps, {}), ("ar", a.ar_steps, {}),
                              ("nce", a.nce_steps, {"diffusion": str(paths["mdlm"]), "lr": t_cfg.lr / 3,
                                                    "warmup_steps": 100})):
        if steps <= 0:
            continue
        s = train(replace(t_cfg, objective=name, max_steps=steps, save_every=steps, **over), m_cfg, paths[name],
                  resume=(paths[name] / "run.json").exists(), max_steps=steps, quiet=True)
        save(f"train_{name}", s)

    mdlm, meta = load_model(paths["mdlm"], dev)
    L = meta["train"]["seq_len"]
    test = corpora.load_split(a.data, "test")
    char = meta.get("tokenizer") == "char"

    char = meta.get("tokenizer") == "char"

    def report(r, objective, **kw):  # the same labelled report `edlm eval nelbo` prints
        return likelihood_report(r, objective=objective, char=char, **kw)

    def blocks(n):
        return iter_eval_blocks(test, L, 64, max_blocks=n)

    den = model_denoiser(mdlm, meta["mask_id"])
    ev = {}
    steps_b = a.bound_steps
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        r = evaluate_split(mdlm, meta, blocks(a.eval_blocks), LikelihoodPlan(steps=steps_b), device=dev)
        ev["mdlm"] = report(r, "mdlm", steps=steps_b)
        ar, ar_meta = load_model(paths["ar"], dev)
        r = evaluate_split(ar, ar_meta, blocks(a.eval_blocks), device=dev)
        ev["ar"] = report(r, "ar")
        for spec in (f"ar:{paths['ar']}", f"nce:{paths['nce']}"):
            if spec.startswith("nce") and not (paths["nce"] / "run.json").exists():
                continue
            energy, name = build_energy(spec, den, meta, dev, batch_size=256)
            plan = LikelihoodPlan(steps=steps_b, sampler=EDLMSampler(energy, k=a.k), logz_samples=8)
            r = evaluate_split(mdlm, meta, blocks(a.logz_blocks), plan, device=dev)
            ev[name] = report(r, "mdlm", steps=steps_b, energy=spec, k=a.k, window=(0.0, 1.0), logz_samples=8)
            save("likelihood", ev)
    save("likelihood", ev)

    all_rows, table = [], []
    models = {str(paths["mdlm"]): (mdlm, meta), str(paths["ar"]): load_model(paths["ar"], dev)}
    lo, hi = (float(v) for v in a.window.split(","))
    settings = [("ar", None, 0)]
    for s in map(int, a.sample_steps.split(",")):
        settings += [("mdlm", None, s), ("edlm-ar", f"ar:{paths['ar']}", s)]
        if (paths["nce"] / "run.json").exists():
            settings.append(("edlm-nce", f"nce:{paths['nce']}", s))
    energies: dict = {}  # each energy run loaded once for the whole sweep
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for method, energy, steps in settings:
            ck = str(paths["ar"] if method == "ar" else paths["mdlm"])
            req = GenerateRequest(ckpt=ck, num=a.num, steps=max(steps, 1), batch_size=a.num, seed=0, energy=energy,
                                  k=a.k, window=(lo, hi))
            rows, summ = generate(req, dev, models=models[ck], energies=energies, quiet=True)
            all_rows += rows
            st = sample_stats(rows)
            quality = {k: st[k] for k in st if k.startswith(("entropy", "distinct"))}
            table.append({"method": method, "steps": steps, "k": summ["k"],
                          "seconds_per_seq": summ["seconds_per_sample"], "mean_ess": summ["mean_ess"], **quality})
            save("samples", table)
            with gzip.open(out / "samples.jsonl.gz", "wt") as f:
                f.writelines(json.dumps(r) + "\n" for r in all_rows)
    save("done", {"seconds": time.time() - t_start})


if __name__ == "__main__":
    main()
