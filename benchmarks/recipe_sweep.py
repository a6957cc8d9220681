"""Training-recipe sweep behind docs/mdlm_recipe.md: loss curves of tiny MDLM/AR runs per language and option.

    python benchmarks/recipe_sweep.py --grid stall --out out/sweep --jobs 8 --device cuda
    python benchmarks/recipe_sweep.py --grid final --out out/final --jobs 1 --device cpu --threads 2

Each job trains one run with `edlm.api.trainer.train_run` (validation every --eval-every steps, EMA weights),
then scores the whole test split (MDLM: NELBO bound, one t per sequence; AR: exact NLL) and writes
OUT/NAME.json: the curve (step, seconds, train loss, validation loss), the test NLL, its ratio to the
language's entropy rate, and the first step / second at which validation came within 15% and 10%.
Jobs run in parallel processes, each with --threads CPU threads (fp32 everywhere, also on a GPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path


def job(name, data, objective="mdlm", steps=1000, model=None, train=None, init=None, weight=None):
    return {"name": name, "data": data, "objective": objective, "steps": steps, "model": model or {},
            "train": train or {}, "init": init, "weight": weight}


def grid(which: str) -> list[dict]:
    langs = ("markov2", "markov3", "lexicon", "synthetic")
    if which == "baseline":  # today's tiny preset, every language, MDLM and AR
        return [job(f"{o}_{d}", d, o, 1000) for d in langs for o in ("mdlm", "ar")]
    if which == "stall":  # one option at a time on markov2
        d, out = "markov2", []
        opts = {
            "base": {}, "timecond": {"model": {"time_conditioning": True}},
            "warm0": {"train": {"warmup_steps": 1}}, "warm200": {"train": {"warmup_steps": 200}},
            "lr1e-3": {"train": {"lr": 1e-3}}, "lr4e-3": {"train": {"lr": 4e-3}},
            "b32": {"train": {"batch_size": 32}}, "b128": {"train": {"batch_size": 128}},
            "noanti": {"train": {"antithetic": False}}, "initgauss": {"init": "gauss"},
            "ema0": {"train": {"ema": 0.0}}, "layers2": {"model": {"n_layers": 2}},
        }
        for k, v in opts.items():
            out.append(job(f"mdlm_{d}_{k}", d, "mdlm", 1000, v.get("model"), v.get("train"), v.get("init")))
        return out
    if which == "fix":  # open gates (gate_init) and its neighbours, on markov2; then every language
        d, out = "markov2", []
        g1 = "gate1"
        opts = {
            "gate1": {"init": g1}, "gate0.1": {"init": "gate0.1"},
            "gate1_tc": {"init": g1, "model": {"time_conditioning": True}},
            "gauss_tc": {"model": {"time_conditioning": True}, "init": "gauss"},
            "gate1_lr4e-3": {"init": g1, "train": {"lr": 4e-3}}, "gate1_lr1e-3": {"init": g1, "train": {"lr": 1e-3}},
            "gate1_b128": {"init": g1, "train": {"batch_size": 128}},
            "gate1_b32": {"init": g1, "train": {"batch_size": 32}},
            "gate1_noanti": {"init": g1, "train": {"antithetic": False}},
        }
        for k, v in opts.items():
            out.append(job(f"mdlm_{d}_{k}", d, "mdlm", 1000, v.get("model"), v.get("train"), v.get("init")))
        for lang in langs:
            out.append(job(f"ar_{lang}_gate1", lang, "ar", 2000, init=g1))
            out.append(job(f"ar_{lang}_long", lang, "ar", 2000))
            if lang != "markov2":
                out.append(job(f"mdlm_{lang}_gate1", lang, "mdlm", 2000, init=g1))
        return out
    if which == "r3":  # which part of the Gaussian init matters; loss weighting; clipping; heads; batch
        d, out = "markov2", []
        opts = {
            "gfinal": {"init": "gauss_final"}, "gblocks": {"init": "gauss_blocks"},
            "flat": {"weight": "flat"}, "gauss_flat": {"init": "gauss", "weight": "flat"},
            "clip0": {"train": {"grad_clip": 0.0}}, "gauss_clip0": {"init": "gauss", "train": {"grad_clip": 0.0}},
            "heads8": {"model": {"n_heads": 8}}, "gauss_heads8": {"init": "gauss", "model": {"n_heads": 8}},
            "gauss_b128": {"init": "gauss", "train": {"batch_size": 128}},
            "gauss_lr4e-3": {"init": "gauss", "train": {"lr": 4e-3}},
            "gauss_lr1e-3": {"init": "gauss", "train": {"lr": 1e-3}},
            "gauss_flat_b128": {"init": "gauss", "weight": "flat", "train": {"batch_size": 128}},
        }
        for k, v in opts.items():
            out.append(job(f"mdlm_{d}_{k}", d, "mdlm", 1000, v.get("model"), v.get("train"), v.get("init"),
                           v.get("weight")))
        return out
    if which == "r4":
        d, out = "markov2", []
        b128, g = {"batch_size": 128}, "gauss"
        opts = {
            "gfb128": {}, "gfb128_lr1e-3": {"train": {"lr": 1e-3}},
            "gfb128_tc": {"model": {"time_conditioning": True}},
            "gfb128_p2": {"weight": "flat p=2"}, "gisb128_p2": {"weight": "is p=2"},
            "gfb128_p0.5": {"weight": "flat p=0.5"},
            "gfb256_lr1e-3": {"train": {"batch_size": 256, "lr": 1e-3}},
            "gfb128_d256": {"model": {"d_model": 256}},
            "gfb128_l6": {"model": {"n_layers": 6}},
            "gfb128_p2_tc": {"weight": "flat p=2", "model": {"time_conditioning": True}},
            "gfb128_warm200_lr1e-3": {"train": {"lr": 1e-3, "warmup_steps": 200}},
            "gfb128_l2_d256": {"model": {"n_layers": 2, "d_model": 256}},
        }
        for k, v in opts.items():
            out.append(job(f"mdlm_{d}_{k}", d, "mdlm", 1500, v.get("model"), {**b128, **v.get("train", {})}, g,
                           v.get("weight", "flat")))
        return out
    if which == "small2":  # smaller second-order languages for a CPU test
        out = []
        for V, rate in ((8, 1.0), (8, 0.8), (6, 1.0), (12, 1.0)):
            lang = {"order": 2, "vocab_size": V, "successors": (2, 3), "target_entropy": rate}
            for steps in (600,):
                j = job(f"mdlm_m2v{V}r{rate}", "markov2", "mdlm", steps)
                j["lang"] = lang
                out.append(j)
                j = job(f"ar_m2v{V}r{rate}", "markov2", "ar", steps)
                j["lang"] = lang
                out.append(j)
        return out
    if which == "long":  # how many steps the tiny MDLM needs on the harder languages; the knob's languages
        out = [job(f"mdlm_{d}_long", d, "mdlm", 8000) for d in ("markov2", "markov3", "lexicon")]
        out += [job("mdlm_markov2-share0.7", "markov2-share0.7", "mdlm", 2500),
                job("ar_markov2-share0.7", "markov2-share0.7", "ar", 1000),
                job("mdlm_markov2-share0.5", "markov2-share0.5", "mdlm", 2500)]
        return out
    if which == "decay":  # cosine learning-rate decay (the tiny preset's is constant), width, depth, batch
        cos = {"lr_schedule": "cosine"}
        opts = {"cos": {}, "cos_lr4e-3": {"train": {"lr": 4e-3}}, "cos_d256": {"model": {"d_model": 256}},
                "cos_b128": {"train": {"batch_size": 128}}, "cos_l6": {"model": {"n_layers": 6}},
                "cos_d256_b128": {"model": {"d_model": 256}, "train": {"batch_size": 128}}}
        out = [job(f"mdlm_markov2_{k}", "markov2", "mdlm", 2500, v.get("model"), {**cos, **v.get("train", {})})
               for k, v in opts.items()]
        out += [job(f"mdlm_{d}_cos6000", d, "mdlm", 6000, train=cos) for d in ("markov2", "markov3", "lexicon")]
        out += [job(f"mdlm_{d}_cos2500", d, "mdlm", 2500, train=cos) for d in ("markov3", "lexicon")]
        return out
    if which == "final":  # the new `tiny` (init_std 0.02, flat loss) on every language, MDLM and AR
        return [job(f"{o}_{d}_new", d, o, n) for d in langs for o, n in (("mdlm", 2500), ("ar", 2000))]
    raise SystemExit(f"unknown grid {which}")


def _reinit(model, how):
    """Experimental initialisations (the code's default zero-initialises adaLN and the output layer)."""
    import torch

    if how.startswith("gate"):  # open the residual gates (adaLN bias chunks 2 and 5) at step 0
        with torch.no_grad():
            for blk in model.blocks:
                blk.adaLN.bias.view(6, -1)[[2, 5]] = float(how[4:])
        return
    parts = {"gauss": ("adaLN", "final.linear"), "gauss_final": ("final.linear",),
             "gauss_blocks": ("blocks",)}[how]
    for n, p in model.named_parameters():  # DiT's zero-init replaced by small Gaussian weights
        if any(k in n for k in parts) and ("adaLN" in n or "final.linear" in n) and p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)


def _t_power(p: float):
    """Training t = u^p for antithetic u (p > 1 draws more low-noise sequences)."""
    from edlm.training import objectives as ob

    orig = ob.antithetic_times

    def draw(B, *, eps, generator=None, device=None):
        u = (orig(B, eps=0.0, generator=generator, device=device)) ** p
        return u * (1 - eps) + eps

    ob.antithetic_times = draw


def _is_weight(p: float):
    """Unbiased NELBO under t = u^p: each sequence's NELBO term times 1/q(t), q(t) = t^(1/p - 1) / p."""
    import torch

    from edlm.training import objectives as ob

    orig = ob.mdlm_nelbo

    def weighted(model, x0, schedule, mask_id, *, t=None, u=None, **kw):
        out = orig(model, x0, schedule, mask_id, t=t, u=u, **kw)
        if not torch.is_grad_enabled():
            return out
        return out * p * t.float() ** (1 - 1 / p)

    ob.mdlm_nelbo = weighted


def _flat_weight():
    """Training loss: masked-token cross-entropy with a constant weight 2 = 1/E[t] instead of the NELBO's 1/t
    (same minimiser at every t; the NELBO itself is still what validation and test report)."""
    import torch

    from edlm.diffusion.losses import masked_log_likelihood
    from edlm.diffusion.masking import mask_tokens
    from edlm.training import objectives as ob

    orig = ob.mdlm_nelbo

    def weighted(model, x0, schedule, mask_id, *, t=None, u=None, **kw):
        if not torch.is_grad_enabled():
            return orig(model, x0, schedule, mask_id, t=t, u=u, **kw)
        x_t = mask_tokens(x0, schedule.alpha(t), mask_id, None, u)
        return -2.0 * masked_log_likelihood(model, x0, x_t, t, mask_id)

    ob.mdlm_nelbo = weighted


def run_job(j: dict, out: str, device: str, threads: int, eval_every: int) -> dict:
    import os

    import torch

    if j.get("lang"):  # a smaller member of the family, prepared as `markov2` in its own data cache
        import edlm.data.languages as langs

        os.environ["EDLM_DATA"] = str(Path(out) / "data" / j["name"])
        langs.FAMILY["markov2"] = lambda: langs.MarkovLanguage(langs.MarkovConfig(**j["lang"]))
        from edlm.data import corpora

        corpora.prepare("markov2")

    torch.set_num_threads(threads)
    from edlm.api import trainer
    from edlm.data import corpora
    from edlm.data.languages import load_language
    from edlm.data.loader import iter_eval_blocks
    from edlm.eval.likelihood import evaluate_split
    from edlm.presets import get_preset
    from edlm.runs.load import load_model

    w = j.get("weight") or ""
    if "flat" in w:
        _flat_weight()
    if "p=" in w:
        p = float(w.split("p=")[1])
        _t_power(p)
        if "is" in w:
            _is_weight(p)
    if j["init"]:
        orig = trainer.build_model

        def build(objective, cfg):
            m = orig(objective, cfg)
            _reinit(m, j["init"])
            return m

        trainer.build_model = build
    mcfg, tcfg = get_preset("tiny")
    mcfg = replace(mcfg, **j["model"])
    tcfg = replace(tcfg, objective=j["objective"], data=j["data"], max_steps=j["steps"], eval_every=eval_every,
                   eval_batches=8, save_every=j["steps"], device=device, precision="fp32", **j["train"])
    run = Path(out) / "runs" / j["name"]
    t0 = time.time()
    summ = trainer.train_run(tcfg, mcfg, run, quiet=True)
    train_s = time.time() - t0
    model, meta = load_model(run, device)
    L = tcfg.seq_len
    test = corpora.load_split(j["data"], "test")
    res = evaluate_split(model, meta, iter_eval_blocks(test, L, 128, max_blocks=len(test) // L), device=device)
    nll = res["sums"]["mdlm" if "mdlm" in res["sums"] else "ar"] / res["tokens"]
    H = load_language(j["data"]).entropy_rate
    curve, t_of = [], {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val" in r:
            curve.append({"step": r["step"], "val": r["val"]["loss"]})
        elif "loss" in r:
            t_of[r["step"]] = r["elapsed"]
            curve.append({"step": r["step"], "loss": r["loss"], "seconds": r["elapsed"], "gnorm": r["grad_norm"]})
    reach = {}
    for tgt in (1.15, 1.10):
        hit = next((c for c in curve if "val" in c and c["val"] <= tgt * H), None)
        reach[f"{tgt:.2f}"] = None if hit is None else {"step": hit["step"], "seconds": t_of.get(hit["step"])}
    rec = {**j, "entropy_rate": H, "test_nll": nll, "ratio": nll / H, "train_seconds": train_s,
           "tokens_per_second": summ.get("tokens_per_second"), "reach": reach, "curve": curve,
           "device": device, "threads": threads}
    (Path(out) / f"{j['name']}.json").write_text(json.dumps(rec))
    print(f"{j['name']:<28} test {nll:.4f} ratio {nll / H:.3f} train {train_s:.0f}s reach {reach}", flush=True)
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="baseline")
    p.add_argument("--only", default=None, help="comma-separated job names to run from the grid")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-every", type=int, default=50)
    a = p.parse_args()
    jobs = grid(a.grid)
    if a.only:
        keep = set(a.only.split(","))
        jobs = [j for j in jobs if j["name"] in keep]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    from edlm.data import corpora

    for d in sorted({j["data"] for j in jobs if not j.get("lang")}):
        corpora.prepare(d)
    args = [(j, a.out, a.device, a.threads, a.eval_every) for j in jobs]
    if a.jobs == 1:
        for x in args:
            run_job(*x)
    else:
        with mp.get_context("spawn").Pool(a.jobs) as pool:
            pool.starmap(run_job, args)


if __name__ == "__main__":
    main()
