"""The memory estimate of sampling/budget.py against measured peaks: each case runs in a fresh process on
random-weight networks, a small warm-up first (one-off library buffers), then the measured job.

CPU: the peak resident set (VmHWM, reset through /proc/self/clear_refs) minus the resident set just before the
job. CUDA: torch.cuda.max_memory_allocated minus memory_allocated before the job (what the caching allocator
handed out; its own reserve and the CUDA context are not the job's). Prints one JSON row per case with
measured, estimate and their ratio; the estimate should be at or above the measurement, within ~3x.

    PYTHONPATH=src python benchmarks/budget_check.py [--device cuda] [--cases all|small|cheap|big] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# name: (what, V, d_model, layers, heads, L, batch, num, steps, k, energy, stride)
CASES = {
    "mdlm-v32": ("sample", 32, 256, 4, 4, 256, 64, 64, 8, 1, None, None),
    "mdlm-v50k": ("sample", 50257, 256, 2, 4, 256, 16, 16, 4, 1, None, None),
    "edlm-ar-v32": ("sample", 32, 256, 2, 4, 256, 8, 8, 4, 16, "ar", None),
    "edlm-ar-v4k": ("sample", 4096, 128, 2, 4, 128, 4, 4, 4, 16, "ar", None),
    "edlm-nce-v32": ("sample", 32, 256, 2, 4, 256, 8, 8, 4, 16, "nce", None),
    "semiar-v32": ("sample", 32, 128, 2, 4, 128, 8, 8, 8, 1, None, 64),
    "ar-v4k": ("sample-ar", 4096, 256, 2, 4, 256, 32, 32, 0, 1, None, None),
    "rows-v32": ("sample", 32, 64, 1, 2, 512, 256, 20000, 1, 1, None, None),
    "nelbo-mdlm-v50k": ("nelbo", 50257, 256, 2, 4, 256, 16, 0, 0, 1, None, None),
    "nelbo-edlm-ar-v32": ("nelbo", 32, 256, 2, 4, 256, 8, 0, 4, 8, "ar", None),
    "nelbo-ar-v4k": ("nelbo-ar", 4096, 256, 2, 4, 256, 32, 0, 0, 1, None, None),
}
# cheap in FLOPs, big in memory (narrow networks, many sequences): what tests/test_security_bounds.py runs
CHEAP = {
    "cheap-edlm-ar": ("sample", 32, 64, 1, 2, 128, 8, 8, 2, 64, "ar", None),
    "cheap-nelbo-v8k": ("nelbo", 8192, 64, 1, 2, 128, 64, 0, 0, 1, None, None),
}
SMALL = ("mdlm-v32", "edlm-ar-v32", "nelbo-edlm-ar-v32")
BIG = {  # GPU sizes: GPT-2 width, 1024 tokens
    "mdlm-gpt2": ("sample", 50257, 768, 12, 12, 1024, 64, 64, 16, 1, None, None),
    "edlm-ar-gpt2": ("sample", 50257, 768, 12, 12, 1024, 8, 8, 8, 8, "ar", None),
    "edlm-nce-gpt2": ("sample", 50257, 768, 12, 12, 1024, 8, 8, 8, 8, "nce", None),
    "ar-gpt2": ("sample-ar", 50257, 768, 12, 12, 1024, 32, 32, 0, 1, None, None),
    "nelbo-mdlm-gpt2": ("nelbo", 50257, 768, 12, 12, 1024, 32, 0, 0, 1, None, None),
    "nelbo-edlm-ar-gpt2": ("nelbo", 50257, 768, 12, 12, 1024, 8, 0, 16, 8, "ar", None),
}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _fake_corpus(root: Path, V: int) -> str:
    """A manifest whose tokenizer is the synthetic one with V symbols (decoding only; no split files)."""
    from edlm.data.manifest import FORMAT_VERSION

    name = "synthetic"  # a valid corpus name, in a scratch $EDLM_DATA
    (root / name).mkdir(parents=True, exist_ok=True)
    split = {"tokens": 0}
    (root / name / "manifest.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "corpus": name, "tokenizer": "synthetic", "vocab_size": V,
        "splits": {"train": split, "valid": split, "test": split}}))
    return name


def child(name: str, device: str) -> dict:
    import torch

    from edlm.api import EnergyChoice, Run
    from edlm.config.model import TransformerConfig
    from edlm.config.train import TrainConfig
    from edlm.energy.nce import EnergyNet
    from edlm.eval.likelihood import EDLMSampler, LikelihoodPlan, evaluate_split
    from edlm.models.transformer import Transformer
    from edlm.runs.folder import RunMeta
    from edlm.sampling import budget

    what, V, D, nl, H, L, B, num, steps, k, energy, stride = {**CASES, **CHEAP, **BIG}[name]
    dev = torch.device(device)
    os.environ["EDLM_DATA"] = tempfile.mkdtemp(prefix="edlm-budget-")
    corpus = _fake_corpus(Path(os.environ["EDLM_DATA"]), V)
    torch.manual_seed(0)

    def run_of(objective, net_cls=Transformer):
        cfg = TransformerConfig(vocab_size=V + 1, n_layers=nl, d_model=D, n_heads=H, cond_dim=64, max_len=L,
                                init_std=0.02, causal=objective == "ar")
        meta = RunMeta.create(cfg, TrainConfig(objective=objective, data=corpus, seq_len=L), vocab_size=V,
                              mask_id=V, tokenizer="synthetic")
        return Run(path=objective, model=net_cls(cfg).eval().to(dev), meta=meta, device=dev)

    gen = run_of("ar" if what.endswith("-ar") else "mdlm")
    choice = None
    if energy:
        choice = EnergyChoice(energy, run_of("ar") if energy == "ar" else run_of("nce", EnergyNet))
    if what.startswith("sample"):
        def job(n, b, length):
            return gen.sample(num=n, steps=max(steps, 1), energy=choice, k=k, batch_size=b, length=length,
                              stride=stride if length > L else None, quiet=True)
        length = 2 * L if stride else L
        warm, real = (lambda: job(1, 1, min(length, 16))), (lambda: job(num, B, length))
        built = choice.build(gen)[0] if choice else None
        need = budget.sample_need(gen.model.cfg, V, batch=B, num=num, length=length, steps=max(steps, 1), k=k,
                                  energy=built, window=L if stride else None, autoregressive=what == "sample-ar")
    else:
        built = choice.build(gen)[0] if choice else None
        plan = LikelihoodPlan(steps=steps or None, logz_samples=8 if choice else 8)
        if choice:
            plan.sampler = EDLMSampler(built, k=k)
        x = torch.randint(0, V, (B, L))

        def job(b):
            return evaluate_split(gen.model, gen.meta, [x[:b]], plan, device=dev)
        warm, real = (lambda: job(1)), (lambda: job(B))
        need = budget.nelbo_need(gen.model.cfg, V, objective=gen.meta.objective, batch=B, blocks=B, length=L,
                                 steps=steps or None, k=k, logz_samples=8 if choice else 0,
                                 bound_draws=1, energy=built)
    warm()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        real()
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated() - base
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status("VmRSS:")
        real()
        measured = _status("VmHWM:") - base
    return {"case": name, "device": device, "measured_mb": round(measured / 1e6, 1),
            "estimate_mb": round(need.total / 1e6, 1), "ratio": round(need.total / max(measured, 1), 2),
            "biggest_term": need.biggest(), "parts_mb": {k: round(v / 1e6, 1) for k, v in need.parts.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", default="all", help="all | small | cheap | big | comma-separated names")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.device)))
        return
    names = {"all": list(CASES), "small": list(SMALL), "cheap": list(CHEAP), "big": list(BIG)}.get(a.cases) \
        or a.cases.split(",")
    rows = []
    for n in names:
        r = subprocess.run([sys.executable, __file__, "--child", n, "--device", a.device], capture_output=True,
                           text=True, env={**os.environ, "EDLM_NO_PROGRESS": "1"})
        row = json.loads(r.stdout.splitlines()[-1]) if r.returncode == 0 else {"case": n, "error": r.stderr[-800:]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
