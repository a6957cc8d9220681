"""Which steps does the energy pay on? EDLM with the exact denoiser and the true energy of a Markov language
(no training), the energy run on a window of steps only: none (MDLM), the early steps (t near 1, few tokens
visible), the late steps (most of the context visible), or every step.

    python benchmarks/window_look.py --out results/ceiling/window_look_cpu.json
    # the same windows with trained models (e.g. the demo's runs): an MDLM proposal and an AR energy
    python benchmarks/window_look.py --languages markov2-share0.7 --mdlm edlm-demo/runs/mdlm \
        --energy ar:edlm-demo/runs/ar --steps 2,4,8 --length 64 --out results/ceiling/window_look_demo_cpu.json

The GPU sweep (docs/studies/ceiling_markov3_h200.md) found that windows covering only the first steps (t >= 0.8 or
t >= 0.5: the paper's speed setting is t >= 0.8) change nothing measurable, while the energy on every step
helps at every step count. This look separates early from late with a perfect model, so the answer does not
depend on what a trained MDLM happens to get wrong. A window (lo, hi) runs the energy at steps whose current
t is in [lo, hi]; with the log-linear schedule each step unmasks the same expected number of tokens, so a
window of width w costs w x k candidate evaluations per step on average whichever end it sits at.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ceiling_look import (  # noqa: E402
    cpu_threads,
    data_row,
    exact_draw,
    exact_language,
    markov_oracle,
    score,
    summarise,
)
from common import device_info  # noqa: E402

from edlm.config.sampling import SamplerConfig  # noqa: E402

# disjoint halves and quarters: a window holds the steps whose current t is in [lo, hi], and the grid's t values
# are multiples of 1/steps, so the early windows start just above 0.5 / 0.75 to not share a step with the late
WINDOWS = {"none": None, "first quarter": (0.7501, 1.0), "first half": (0.5001, 1.0), "last half": (0.0, 0.5),
           "last quarter": (0.0, 0.25), "every step": (0.0, 1.0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--languages", default="synthetic,markov3")
    ap.add_argument("--steps", default="4,8,16")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mdlm", help="a trained MDLM run instead of the exact denoiser (one language: its data)")
    ap.add_argument("--energy", help="with --mdlm (required there): the energy spec, e.g. ar:RUN")
    a = ap.parse_args()
    if a.mdlm and not a.energy:
        ap.error("--mdlm needs --energy (e.g. ar:RUN)")
    cpu_threads(a.threads)
    how = f"trained MDLM, energy {a.energy}" if a.mdlm else "exact denoiser, true energy"
    res = {**device_info(), "what": f"energy window look ({how})", "args": vars(a),
           "windows": {k: v for k, v in WINDOWS.items()}, "languages": {}}
    for name in a.languages.split(","):
        lang = exact_language(name)
        den = markov_oracle(lang) if not a.mdlm else None
        out = res["languages"][name] = {"data": data_row(lang, a.num, a.length), "cells": []}
        for steps in map(int, a.steps.split(",")):
            for label, window in WINDOWS.items():
                if a.mdlm:
                    x, energy_steps, ess = trained(a, steps, window)
                else:
                    cfg = SamplerConfig(steps=steps, k=a.k if window else 1, window=window)
                    x, st = exact_draw(lang, den, cfg, a.num, a.length)
                    energy_steps, ess = st.energy_steps, st.mean_ess
                nll, ent = score(lang, x)
                cell = {"steps": steps, "window": label, "k": a.k if window else 1,
                        **summarise(nll, ent, intervals=True), "energy_steps": energy_steps, "mean_ess": ess,
                        "nll": [round(v, 5) for v in nll]}
                out["cells"].append(cell)
                print(name, steps, label, f"{cell['gen_nll']:.3f} {cell['gen_nll_ci']} H {cell['entropy']:.3f} "
                      f"energy steps {energy_steps}", flush=True)
                Path(a.out).write_text(json.dumps(res, indent=1))


def trained(a, steps: int, window):
    """Sample with the trained MDLM (and energy) through the CLI's own path -> ids, energy steps, mean ESS."""
    from edlm.api.generate import GenerateRequest, generate

    energy = a.energy if window else None
    req = GenerateRequest(ckpt=a.mdlm, num=a.num, steps=steps, batch_size=a.num, seed=steps, length=a.length,
                          energy=energy, k=a.k if window else 1, window=window)
    rows, summ = generate(req, torch.device("cpu"), quiet=True)
    return torch.tensor([r["ids"] for r in rows]), summ.get("energy_steps"), summ.get("mean_ess")


if __name__ == "__main__":
    main()
