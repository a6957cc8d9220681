"""Tables for `ceiling_sweep.py look --adaptive`: every cell's gen-NLL [95% CI], entropy and energy cost, and each
ESS-policy / short-window cell against fixed k on every step AT EQUAL COST.

    python benchmarks/adaptive_report.py results/ceiling/adaptive_look_cpu.json

Equal cost: the fixed-k-every-step cells of the same language and step count (MDLM at 0 candidates, then k = 2, 4,
8, 16 on every step) form a curve of gen-NLL against energy candidates per sample; it is interpolated at the
cell's own cost (linearly in log candidates; `_interp`). diff = cell - curve (negative: the cell beats fixed k at
its cost), with a 95% percentile bootstrap interval: each replicate resamples every cell's samples (independent
cells, 2000 replicates, seed 0).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _interp(x, xs, ys):
    """The curve at cost x: linear in log(candidates) between fixed-k points (gen-NLL falls about linearly in
    log k, and a chord in linear cost would lie above that convex curve, flattering the cell), linear from MDLM
    (cost 0) to the first point. xs increasing, xs[0] = 0."""
    if x <= xs[1]:
        return np.interp(x, xs[:2], ys[:2])
    return np.interp(np.log(x), np.log(xs[1:]), ys[1:])


def name(c) -> str:
    m = c.get("min_unmask", 1)
    tail = f", energy if >= {m} unmask" if m > 1 else ""
    if c["sampler"] == "mdlm":
        return "MDLM"
    if c["sampler"] == "edlm-ess":
        return f"ESS policy k0={c['k']} k_max={c['k_max']}{tail}"
    w = c["window"]
    w = f"t in [{w[0]:g}, {w[1]:g}]" if isinstance(w, list) else f"w={w:g}"
    return f"fixed k={c['k']} {w}{tail}"


def on_fixed_curve(c) -> bool:
    """MDLM and fixed k on every step with the energy for every sequence: the reference curve."""
    return c["sampler"] == "mdlm" or (c["sampler"] == "edlm" and c["window"] == 1.0 and c.get("min_unmask", 1) == 1)


def report(path: str, n_boot: int = 2000) -> str:
    res = json.loads(open(path).read())
    rng = np.random.default_rng(0)
    lines = []
    for lang, out in res["languages"].items():
        d = out["data"]
        lines += ["", f"**{lang}** (exact samples: gen-NLL {d['gen_nll']:.3f}, entropy {d['entropy']:.3f})", "",
                  "| steps | sampler | gen-NLL [95% CI] | entropy | candidates/sample | mean k | vs fixed k every step "
                  "at equal cost: diff [95% CI] |", "|---|---|---|---|---|---|---|"]
        by_steps: dict = {}
        for c in out["cells"]:
            by_steps.setdefault(c["steps"], []).append(c)
        for steps, cells in by_steps.items():
            curve = sorted([c for c in cells if on_fixed_curve(c)], key=lambda c: c["candidates_per_sample"])
            xs = np.array([c["candidates_per_sample"] for c in curve])
            boots = {id(c): np.array(c["nll"])[rng.integers(0, len(c["nll"]), (n_boot, len(c["nll"])))].mean(1)
                     for c in cells}
            curve_b = np.stack([boots[id(c)] for c in curve], 1)  # (n_boot, points)
            for c in cells:
                diff = ""
                on_curve = any(c is p for p in curve)
                if not on_curve and c["candidates_per_sample"] <= xs[-1]:
                    point = _interp(c["candidates_per_sample"], xs, [p["gen_nll"] for p in curve])
                    db = boots[id(c)] - np.array([_interp(c["candidates_per_sample"], xs, row) for row in curve_b])
                    lo, hi = np.percentile(db, [2.5, 97.5])
                    diff = f"{c['gen_nll'] - point:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                mk = "" if c.get("mean_k") is None else f"{c['mean_k']:.2f}"
                lo, hi = c["gen_nll_ci"]
                lines.append(f"| {steps} | {name(c)} | {c['gen_nll']:.3f} [{lo:.3f}, {hi:.3f}] | {c['entropy']:.3f} | "
                             f"{c['candidates_per_sample']:.1f} | {mk} | {diff} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
