"""Quality checks of the low-precision options on `markov3`, whose exact log-probability is known.

    python benchmarks/round3_quality.py train  --runs /tmp/r3 --out results/float8_markov3_h200.json
    python benchmarks/round3_quality.py sample --runs /tmp/r3 --out results/quant_sampling_markov3_h200.json

train: two MDLM runs of `edlm train` (the ceiling study's `gpu` size, 8 x 512, length 128, `--compile` on a GPU),
same seed, same data, one plain (bf16 autocast) and one with `--kernels float8` (the blocks' Linear layers in
float8, torchao); their training and validation curves, and the final validation losses' relative difference
(the criterion: within 1%).
sample: the plain run's model (EMA weights) sampled by MDLM (same seeds) with its weights as trained and
quantised to fp8 and int8 (models.kernels.quantize_weights), bf16 autocast; each set of samples scored by
the language's exact log-probability: gen-NLL (nats/token) with its 95% bootstrap interval, unigram entropy,
and the difference to the plain weights with its interval (an interval holding 0: no measured difference).
--size tiny --device cpu: a dry run of the code paths (the kernels fall back to the plain path with a warning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_json  # noqa: E402

SIZES = {
    # the ceiling study's `gpu` size (benchmarks/ceiling_sweep.py), fewer steps: a numerics check, not a recipe
    "gpu": dict(model=dict(n_layers=8, d_model=512, n_heads=8, cond_dim=128, max_len=128, dropout=0.1,
                           init_std=0.02),
                train=dict(seq_len=128, batch_size=256, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema=0.999,
                           eval_every=50, eval_batches=8, loss_weight="flat", log_every=10, save_every=100_000)),
    "tiny": dict(model=dict(n_layers=2, d_model=32, n_heads=2, cond_dim=16, max_len=32, dropout=0.0, init_std=0.02),
                 train=dict(seq_len=32, batch_size=16, lr=2e-3, warmup_steps=5, lr_schedule="cosine", ema=0.9,
                            eval_every=5, eval_batches=2, loss_weight="flat", log_every=2, save_every=100_000)),
}


def curves(run: Path) -> dict:
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return {"train": [[r["step"], r["loss"]] for r in rows if "loss" in r],
            "val": [[r["step"], r["val"]["loss"]] for r in rows if "val" in r]}


def train(a) -> None:
    import edlm
    from edlm.config.model import TransformerConfig
    from edlm.config.train import TrainConfig
    from edlm.data import corpora

    corpora.prepare("markov3")
    size = SIZES[a.size]
    out = {**device_info(), "what": "float8 vs bf16 training, same seed and data", "language": "markov3",
           "size": a.size, "config": size, "steps": a.steps, "runs": {}}
    for name, kernels in (("bf16", ""), ("float8", "float8")):
        cfg = TrainConfig(objective="mdlm", data="markov3", max_steps=a.steps, seed=0, device=a.device,
                          compile=a.device == "cuda", kernels=kernels, **size["train"])
        t0 = time.perf_counter()
        summary = edlm.train((TransformerConfig(vocab_size=17, **size["model"]), cfg), out=Path(a.runs) / name)
        out["runs"][name] = {"kernels": kernels, "seconds": time.perf_counter() - t0, "summary": summary,
                             **curves(Path(a.runs) / name)}
        write_json(a.out, out, quiet=True)
    b, f = (out["runs"][k]["val"][-1][1] for k in ("bf16", "float8"))
    out["final_val"] = {"bf16": b, "float8": f, "rel_diff": (f - b) / b, "within_1pct": abs(f - b) / b <= 0.01}
    write_json(a.out, out)


def sample(a) -> None:
    from edlm.config.sampling import SamplerConfig
    from edlm.data.languages import load_language
    from edlm.diffusion.schedules import LogLinear
    from edlm.eval.stats import difference_interval, nll_interval, unigram_entropy
    from edlm.models.kernels import apply_kernels, resolve_kernels
    from edlm.runs.load import load_model
    from edlm.sampling.loop import model_denoiser
    from edlm.sampling.loop import sample as draw

    lang = load_language("markov3")
    run = Path(a.runs) / "bf16"
    L = SIZES[a.size]["model"]["max_len"]
    out = {**device_info(), "what": "MDLM samples with the weights as trained, fp8 and int8", "language": "markov3",
           "run": str(run), "num": a.num, "steps": a.sample_steps, "length": L, "autocast": "bf16", "rows": {}}
    scored = {}
    for weights in ("model", "fp8", "int8"):
        model, meta = load_model(run, a.device)
        apply_kernels(model, resolve_kernels(f"weights={weights}", a.device, training=False), training=False)
        mask = meta["mask_id"]
        g = torch.Generator(device=a.device).manual_seed(0)
        xs, t0 = [], time.perf_counter()
        with torch.no_grad(), torch.autocast(a.device, dtype=torch.bfloat16):
            for i in range(0, a.num, a.batch):
                x, _ = draw(model_denoiser(model, mask), LogLinear(), mask, SamplerConfig(steps=a.sample_steps),
                            batch=min(a.batch, a.num - i), length=L, generator=g, device=a.device)
                xs.append(x.cpu())
        x = torch.cat(xs)
        nll = (-lang.log_prob(x)).tolist()  # nats per sample (L tokens each)
        toks = [L] * len(nll)
        scored[weights] = (nll, toks)
        row = {"weights": weights, "seconds": time.perf_counter() - t0, "gen_nll": sum(nll) / sum(toks),
               "gen_nll_ci": nll_interval(nll, toks),
               "entropy": sum(unigram_entropy(r) for r in x.tolist()) / len(x)}
        if weights != "model":
            d = difference_interval(scored[weights], scored["model"])
            lo, hi = out["rows"]["model"]["gen_nll_ci"]
            row.update(diff_vs_model=d["diff"], diff_ci=d["ci"], inside_model_interval=lo <= row["gen_nll"] <= hi)
        out["rows"][weights] = row
        print(row, flush=True)
        write_json(a.out, out, quiet=True)
    out["data_entropy_rate"] = lang.entropy_rate
    write_json(a.out, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=("train", "sample"))
    ap.add_argument("--runs", required=True, help="folder of the two run folders (bf16/, float8/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="gpu", choices=tuple(SIZES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=400, help="training steps of each run")
    ap.add_argument("--num", type=int, default=512, help="samples per weight format")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sample-steps", type=int, default=128)
    a = ap.parse_args()
    train(a) if a.cmd == "train" else sample(a)


if __name__ == "__main__":
    main()
