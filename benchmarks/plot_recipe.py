"""The figure of docs/mdlm_recipe.md from recipe_sweep.py outputs: validation NELBO / entropy rate vs step.

    python benchmarks/plot_recipe.py --sweeps out/sweep --out docs/mdlm_recipe.png

Left: MDLM on markov2, one option changed at a time from the old `tiny` (zero-init, 1/t-weighted NELBO).
Right: every language, the old and the new `tiny` MDLM and the AR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LEFT = [("stall/mdlm_markov2_base", "old tiny (zero-init, NELBO weight)", "k", "-"),
        ("stall/mdlm_markov2_timecond", "+ time conditioning", "tab:gray", ":"),
        ("stall/mdlm_markov2_warm0", "no warm-up", "tab:olive", ":"),
        ("stall/mdlm_markov2_lr4e-3", "lr 4e-3", "tab:pink", ":"),
        ("stall/mdlm_markov2_b128", "batch 128", "tab:cyan", ":"),
        ("stall/mdlm_markov2_noanti", "no antithetic t", "tab:brown", ":"),
        ("fix/mdlm_markov2_gate1", "residual gates opened (=1)", "tab:purple", "--"),
        ("r3/mdlm_markov2_flat", "flat masked-token loss", "tab:orange", "-"),
        ("stall/mdlm_markov2_initgauss", "normal init (std 0.02)", "tab:blue", "-"),
        ("r3/mdlm_markov2_gauss_flat", "normal init + flat loss (new tiny)", "tab:red", "-")]
COLORS = {"markov2": "tab:red", "markov3": "tab:blue", "lexicon": "tab:green", "synthetic": "tab:gray"}


def load(root: Path, name: str):
    p = root / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def curve(rec):
    pts = [(c["step"], c["val"] / rec["entropy_rate"]) for c in rec["curve"] if "val" in c]
    return [p[0] for p in pts], [p[1] for p in pts]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sweeps", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(a.sweeps)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name, label, color, ls in LEFT:
        rec = load(root, name)
        if rec:
            ax1.plot(*curve(rec), color=color, ls=ls, label=label, lw=1.3)
    ax1.set_title("MDLM on markov2: one change at a time (1000 steps)", fontsize=9)
    for lang, color in COLORS.items():
        for name, ls, lab in ((f"final/mdlm_{lang}_new", "-", "MDLM new tiny"),
                              (f"base/mdlm_{lang}", ":", "MDLM old tiny"),
                              (f"final/ar_{lang}_new", "--", "AR new tiny")):
            rec = load(root, name)
            if rec:
                ax2.plot(*curve(rec), color=color, ls=ls, lw=1.3, label=f"{lang}: {lab}")
    ax2.set_title("every language: old vs new tiny, and the AR", fontsize=9)
    for ax in (ax1, ax2):
        ax.axhline(1.15, color="k", lw=0.8, ls="-.")
        ax.set_xlabel("training step (batch 64 x 64 tokens)")
        ax.set_ylabel("validation NELBO (MDLM) or NLL (AR) / entropy rate")
        ax.set_yscale("log")
        ax.set_ylim(0.95, 5)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=1 if ax is ax1 else 2)
    fig.tight_layout()
    fig.savefig(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
