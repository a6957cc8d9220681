"""Read a ceiling_sweep.py JSON: intervals, the ceiling, EDLM vs MDLM at equal steps, the matched-quality speed-up,
plots. Writes the analysis into the same JSON (key "analysis"), PNGs beside it, and prints markdown tables.

    python benchmarks/ceiling_report.py results/ceiling_markov3_cpu.json [--boot 2000]

Intervals: 95% percentile bootstrap over samples (each cell resampled on its own; cells are independent
draws). "Beats" at equal steps means the two cells' 95% intervals do not overlap (conservative); the interval
of the difference is given too. EDLM on top of confidence is compared with
confidence alone (key "against"). The best gen-NLL of a sampler over step counts is bootstrapped as a minimum
(every cell of the sampler resampled, the minimum taken), so picking the best cell is part of the interval.
Matched-quality speed-up: MDLM's best mean gen-NLL is the target, reached at MDLM's step count s* in t_MDLM
seconds per sample; a sampler's time to reach it is read off its (log seconds, gen-NLL) curve by linear
interpolation at the first crossing; speed-up = t_MDLM / t_sampler. Each bootstrap replicate redoes the
whole computation (target, s*, crossing); a replicate in which the sampler never reaches the target counts
as "not reached" (speed-up 0). Timings are one measurement per cell and are not resampled.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from ceiling_text import pick_evaluator, sample_texts, update_json

from edlm.utils import atomic_write_bytes


def family(c) -> str:
    if c["sampler"] in ("mdlm", "confidence"):
        return c["sampler"]
    w = c["window"]
    return f"{c['sampler']} k={c['k']} w={w:g}"


def ci(a) -> list[float]:
    return [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))]


def crossing_time(steps_sorted, means, secs, target):
    """First time (seconds per sample) at which the curve reaches `target` (interpolating gen-NLL linearly in
    log seconds between neighbouring step counts); None if it never does."""
    for i, m in enumerate(means):
        if m <= target:
            if i == 0:
                return secs[0]
            m0, m1 = means[i - 1], m
            f = (m0 - target) / (m0 - m1) if m0 != m1 else 1.0
            return math.exp(math.log(secs[i - 1]) + f * (math.log(secs[i]) - math.log(secs[i - 1])))
    return None


def forwards(c) -> float:
    """Network forwards per sample: the denoiser's steps that ran plus one per energy candidate scored (an energy
    the size of the denoiser, as edlm-ar / edlm-nce here, costs about one denoiser forward per candidate). A cost
    that other jobs on the same GPU cannot inflate, beside the measured seconds. ``steps_run`` counts the
    steps of every batch, so a cell sampled in several batches (num > batch) divides it by their number."""
    batches = -(-c.get("num", 1) // c.get("batch", c.get("num", 1)))
    return c["steps_run"] / batches + c.get("candidates_per_sample", 0.0)


def multiplicity(equal_steps: list[dict]) -> dict:
    """How many energy-vs-MDLM comparisons at equal steps have a difference interval excluding 0, on each side,
    beside what chance alone gives: with n comparisons at 95%, about n/20 exclude 0 with no effect at all
    (roughly: the comparisons share MDLM's cells, so they are not independent). A sweep of 30 cells with one
    'significant' cell has shown nothing."""
    es = [e for e in equal_steps if e.get("against", "mdlm") == "mdlm" and e["family"] != "confidence"]
    lower = sum(e["diff_ci"][1] < 0 for e in es)
    higher = sum(e["diff_ci"][0] > 0 for e in es)
    return {"comparisons": len(es), "diff_excludes_0_lower": lower, "diff_excludes_0_higher": higher,
            "clear_of_mdlm_lower": sum(bool(e["beats_mdlm"]) for e in es),
            "clear_of_mdlm_higher": sum(bool(e["loses_to_mdlm"]) for e in es), "expected_by_chance": 0.05 * len(es)}


def analyse(res: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cells = res["cells"]
    fams: dict[str, list[dict]] = {}
    for c in cells:
        fams.setdefault(family(c), []).append(c)
    for f in fams:
        fams[f].sort(key=lambda c: c["steps"])
    # bootstrap replicates of every cell's mean gen-NLL and entropy: (n_boot,) per cell
    boot = {}
    for c in cells:
        nll, ent = np.asarray(c["nll"]), np.asarray(c["ent"])
        idx = rng.integers(0, len(nll), (n_boot, len(nll)))
        boot[id(c)] = (nll[idx].mean(1), ent[idx].mean(1))
    data = res.get("data")
    out: dict = {"n_boot": n_boot, "cells": [], "families": {}, "equal_steps": [], "speedup": {}}
    if data:
        nll, ent = np.asarray(data["nll"]), np.asarray(data["ent"])
        idx = rng.integers(0, len(nll), (n_boot, len(nll)))
        out["data"] = {"gen_nll": float(nll.mean()), "gen_nll_ci": ci(nll[idx].mean(1)),
                       "entropy": float(ent.mean()), "entropy_ci": ci(ent[idx].mean(1)), "num": len(nll)}
    for c in cells:
        bn, be = boot[id(c)]
        out["cells"].append({"family": family(c), "sampler": c["sampler"], "steps": c["steps"], "k": c["k"],
                             "window": c["window"], "gen_nll": c["gen_nll"], "gen_nll_ci": ci(bn),
                             "entropy": c["entropy"], "entropy_ci": ci(be), "seconds_per_sample":
                             c["seconds_per_sample"], "seconds_per_step": c["seconds_per_step"],
                             "steps_run": c["steps_run"], "forwards": forwards(c), "mean_ess": c["mean_ess"],
                             "num": c["num"]})
    by_key = {(family(c), c["steps"]): c for c in cells}
    # the ceiling: best gen-NLL at any step count, bootstrapped as a minimum
    for f, cs in fams.items():
        means = [c["gen_nll"] for c in cs]
        b = np.min(np.stack([boot[id(c)][0] for c in cs]), 0)
        best = cs[int(np.argmin(means))]
        out["families"][f] = {"best_gen_nll": min(means), "best_gen_nll_ci": ci(b), "at_steps": best["steps"],
                              "entropy_at_best": best["entropy"], "entropy_at_best_ci": ci(boot[id(best)][1]),
                              "seconds_per_sample_at_best": best["seconds_per_sample"],
                              "seconds_per_step_at_best": best["seconds_per_step"],
                              "steps": [c["steps"] for c in cs]}
    # EDLM (and confidence) vs MDLM at equal steps; EDLM on confidence vs confidence alone
    for f, cs in fams.items():
        if f == "mdlm":
            continue
        for c in cs:
            base = "confidence" if f.startswith("confidence+") else "mdlm"
            m = by_key.get((base, c["steps"]))
            if m is None:
                continue
            bd = boot[id(c)][0] - boot[id(m)][0]
            ci_c, ci_m = ci(boot[id(c)][0]), ci(boot[id(m)][0])
            out["equal_steps"].append({
                "family": f, "against": base, "steps": c["steps"], "gen_nll": c["gen_nll"],
                "mdlm_gen_nll": m["gen_nll"],
                "diff": c["gen_nll"] - m["gen_nll"], "diff_ci": ci(bd),
                "beats_mdlm": ci_c[1] < ci_m[0], "loses_to_mdlm": ci_c[0] > ci_m[1],
                "entropy": c["entropy"], "mdlm_entropy": m["entropy"],
                "entropy_diff_ci": ci(boot[id(c)][1] - boot[id(m)][1]),
                "time_ratio": c["seconds_per_sample"] / m["seconds_per_sample"],
                "forwards_ratio": forwards(c) / forwards(m)})
    out["multiplicity"] = multiplicity(out["equal_steps"])
    # matched-quality speed-up against MDLM's best, in measured seconds and in network forwards
    for key, cost in (("speedup", lambda c: c["seconds_per_sample"]), ("speedup_forwards", forwards)):
        if "mdlm" in fams:
            out[key] = speedups(fams, boot, n_boot, cost)
    return out


def speedups(fams, boot, n_boot, cost) -> dict:
    """Per family: the cost (cost(cell) per sample) at which it first reaches MDLM's best gen-NLL, as a speed-up
    over MDLM at its best, with a bootstrap interval (MDLM's best re-picked in every replicate)."""
    res = {}
    ms = fams["mdlm"]
    m_cost = [cost(c) for c in ms]
    m_boot = np.stack([boot[id(c)][0] for c in ms])  # (n_cells, n_boot)
    m_means = [c["gen_nll"] for c in ms]
    i_best = int(np.argmin(m_means))
    target, t_m = m_means[i_best], m_cost[i_best]
    for f, cs in fams.items():
        if f == "mdlm":
            continue
        costs = [cost(c) for c in cs]
        t_f = crossing_time([c["steps"] for c in cs], [c["gen_nll"] for c in cs], costs, target)
        fb = np.stack([boot[id(c)][0] for c in cs])
        sp = np.zeros(n_boot)
        for r in range(n_boot):
            ib = int(np.argmin(m_boot[:, r]))
            tt = crossing_time(None, fb[:, r].tolist(), costs, float(m_boot[ib, r]))
            sp[r] = 0.0 if tt is None else m_cost[ib] / tt
        reached = float((sp > 0).mean())
        lo, hi = ci(sp)
        res[f] = {
            "mdlm_target": target, "mdlm_steps": ms[i_best]["steps"], "mdlm_cost_per_sample": t_m,
            "reached": t_f is not None, "cost_per_sample": t_f,
            "speedup": (t_m / t_f) if t_f else None,
            "speedup_ci": [lo if lo > 0 else None, hi if hi > 0 else None],
            "reached_fraction": reached,
            "steps_range": [cs[0]["steps"], cs[-1]["steps"]]}
    return res


def seq_len(res: dict):
    """The sample length: stored by newer sweeps, else the size preset's training length."""
    if res.get("length"):
        return res["length"]
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from ceiling_sweep import SIZES

    return SIZES[res["size"]]["train"]["seq_len"]


def plots(res: dict, an: dict, stem: Path, train_stem: Path | None = None) -> list[str]:
    """Curves of the samplers run at 3 or more step counts (bands: 95% bootstrap intervals), and the k x window
    grid at the step count where it is fullest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = an["cells"]
    fams: dict[str, list[dict]] = {}
    for c in cells:
        fams.setdefault(c["family"], []).append(c)
    # the curves: families run at 3+ step counts, the energy only on every step (w = 1) plus the paper's speed
    # setting (k=2, w=0.2); the other windows are in the k x window grid plot
    def curve(f):
        w = fams[f][0]["window"]
        return len(fams[f]) >= 3 and (w is None or w == 1.0 or (fams[f][0]["k"] == 2 and w == 0.2))

    shown = [f for f in fams if curve(f)]
    title = (f"{res['language']}, L={seq_len(res)}, "
             f"{res.get('device_name', '')}, {an['cells'][0]['num']} samples/cell")
    styles = ["-", "--", "-.", ":"]
    files = []
    ev = res.get("scored_by")
    nll_label = "gen-NLL (nats/token, exact)" if ev is None else f"gen-NLL (nats per {ev} token)"
    for name, xk, yk, xl, yl in (("quality_vs_steps", "steps", "gen_nll", "sampling steps", nll_label),
                                 ("quality_vs_time", "seconds_per_sample", "gen_nll", "seconds per sample", nll_label),
                                 ("quality_vs_forwards", "forwards", "gen_nll",
                                  "network forwards per sample (denoiser steps + energy candidates)", nll_label),
                                 ("entropy_vs_steps", "steps", "entropy", "sampling steps",
                                  "unigram entropy (nats)")):
        fig, ax = plt.subplots(figsize=(8.2, 4.2), dpi=80)
        for i, f in enumerate(shown):
            cs = sorted(fams[f], key=lambda c: c[xk])
            x = [c[xk] for c in cs]
            ax.plot(x, [c[yk] for c in cs], marker="o", ms=3, label=f, lw=1.3, ls=styles[i % len(styles)],
                    color=f"C{i}")
            ax.fill_between(x, [c[yk + "_ci"][0] for c in cs], [c[yk + "_ci"][1] for c in cs], alpha=0.2,
                            color=f"C{i}")
        d = an.get("data")
        if d:
            key = "gen_nll" if yk == "gen_nll" else "entropy"
            ax.axhspan(*d[key + "_ci"], color="gray", alpha=0.3)
            ax.axhline(d[key], color="gray", ls="--", lw=1,
                       label="data (exact samples)" if ev is None else "data (test-split windows)")
        ax.set_xscale("log", base=2 if xk == "steps" else 10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = stem.parent / f"{stem.name}_{name}.png"
        fig.savefig(p)
        plt.close(fig)
        files.append(str(p))
    runs = {k: v["curve"] for k, v in res.get("train", {}).items() if v.get("curve")}
    if runs:  # over-fitting shows here: validation turning up while training loss still falls
        fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.0), dpi=80, squeeze=False)
        for ax, (name, cv) in zip(axes[0], runs.items(), strict=True):
            ax.plot([r["step"] for r in cv], [r["val"] for r in cv], marker="o", ms=2, label="validation")
            tr = [r for r in cv if r.get("train") is not None]
            ax.plot([r["step"] for r in tr], [r["train"] for r in tr], lw=1, alpha=0.7, label="training batch")
            ax.set_title(f"{name} ({res['train'][name].get('params', 0) / 1e6:.0f}M parameters)", fontsize=8)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("loss (nats/token; NCE: its own loss)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title.rsplit(",", 1)[0], fontsize=8)
        fig.tight_layout()
        base = train_stem or stem  # the curves do not depend on the evaluator: one file per sweep, named without it
        p = base.parent / f"{base.name}_training.png"
        fig.savefig(p)
        plt.close(fig)
        files.append(str(p))
    grid = [c for c in cells if c["sampler"] == "edlm-ar"]
    if grid:
        counts: dict[int, int] = {}
        for c in grid:
            counts[c["steps"]] = counts.get(c["steps"], 0) + 1
        at = max(counts, key=lambda s: (counts[s], s))
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=80)
        m = next((c for c in cells if c["sampler"] == "mdlm" and c["steps"] == at), None)
        if m:
            ax.axhspan(*m["gen_nll_ci"], color="gray", alpha=0.3)
            ax.axhline(m["gen_nll"], color="gray", ls="--", lw=1, label=f"MDLM, {at} steps")
        for i, w in enumerate(sorted({c["window"] for c in grid if c["steps"] == at})):
            cs = sorted((c for c in grid if c["steps"] == at and c["window"] == w), key=lambda c: c["k"])
            x = [c["k"] * (1 + 0.04 * (i - 1)) for c in cs]
            ax.errorbar(x, [c["gen_nll"] for c in cs], yerr=[[c["gen_nll"] - c["gen_nll_ci"][0] for c in cs],
                        [c["gen_nll_ci"][1] - c["gen_nll"] for c in cs]], marker="o", ms=3, capsize=2,
                        label=f"EDLM-AR, window {w:g}", color=f"C{i}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("candidates k")
        ax.set_ylabel(nll_label)
        ax.set_title(f"{title.split(',')[0]}: EDLM-AR at {at} steps (95% intervals)", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = stem.parent / f"{stem.name}_grid.png"
        fig.savefig(p)
        plt.close(fig)
        files.append(str(p))
    return files


def f3(v, ci_=None):
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" [{ci_[0]:.3f}, {ci_[1]:.3f}]" if ci_ else "")


def tables(res: dict, an: dict) -> str:
    lines = []
    d = an.get("data")
    if d:
        what = "exact samples" if res.get("scored_by") is None else f"test-split windows, {res['scored_by']}"
        lines.append(f"data ({what}, n={d['num']}): gen-NLL {f3(d['gen_nll'], d['gen_nll_ci'])}, "
                     f"entropy {f3(d['entropy'], d['entropy_ci'])}")
    lines += ["", "| sampler | best gen-NLL [95% CI] | at steps | entropy [95% CI] | s/step | s/sample |",
              "|---|---|---|---|---|---|"]
    for f, v in sorted(an["families"].items(), key=lambda kv: kv[1]["best_gen_nll"]):
        lines.append(f"| {f} | {f3(v['best_gen_nll'], v['best_gen_nll_ci'])} | {v['at_steps']} | "
                     f"{f3(v['entropy_at_best'], v['entropy_at_best_ci'])} | {v['seconds_per_step_at_best']:.4f} | "
                     f"{v['seconds_per_sample_at_best']:.5f} |")
    lines += ["", "| sampler | vs | steps | gen-NLL | theirs | diff [95% CI] | better (no overlap) | entropy (theirs) "
              "| entropy diff [95% CI] | time x | forwards x |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in an["equal_steps"]:
        verdict = "yes" if e["beats_mdlm"] else ("worse" if e["loses_to_mdlm"] else "no (overlap)")
        dh = e["entropy"] - e["mdlm_entropy"]
        lines.append(f"| {e['family']} | {e.get('against', 'mdlm')} | {e['steps']} | {e['gen_nll']:.3f} | "
                     f"{e['mdlm_gen_nll']:.3f} | {f3(e['diff'], e['diff_ci'])} | {verdict} | "
                     f"{e['entropy']:.3f} ({e['mdlm_entropy']:.3f}) | {f3(dh, e['entropy_diff_ci'])} | "
                     f"{e['time_ratio']:.2f} | {e['forwards_ratio']:.2f} |")
    mu = an.get("multiplicity")
    if mu and mu["comparisons"]:
        lines += ["", f"Energy samplers vs MDLM at equal steps: {mu['comparisons']} comparisons; the difference's "
                  f"interval excludes 0 in {mu['diff_excludes_0_lower']} (lower gen-NLL) and "
                  f"{mu['diff_excludes_0_higher']} (higher); cells clear of MDLM's: {mu['clear_of_mdlm_lower']} "
                  f"lower, {mu['clear_of_mdlm_higher']} higher. With no effect at all, about "
                  f"{mu['expected_by_chance']:.1f} would exclude 0 by chance."]
    lines += ["", "| sampler | reaches MDLM's best? | speed-up in seconds [95% CI] | in forwards [95% CI] | "
              "replicates reaching it |", "|---|---|---|---|---|"]

    def sp(s):
        lo, hi = s["speedup_ci"]
        rng = f"[{'not reached' if lo is None else f'{lo:.2f}'}, {'not reached' if hi is None else f'{hi:.2f}'}]"
        return f"{s['speedup']:.2f}x {rng}" if s["speedup"] else f"no {rng}"
    fw = an.get("speedup_forwards", {})
    for f, s in an["speedup"].items():
        lines.append(f"| {f} | {'yes' if s['reached'] else 'no'} | {sp(s)} | {sp(fw[f]) if f in fw else '-'} | "
                     f"{s['reached_fraction']:.0%} |")
    if an.get("unscored"):
        lines += ["", f"not scored by this evaluator (left out): {', '.join(an['unscored'])}"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--evaluator", help="real-text sweeps: whose per-sample NLL to analyse (ceiling_sweep.py score)")
    ap.add_argument("--texts", type=int, default=0,
                    help="real-text sweeps: write this many decoded samples of the data and of each sampler's best "
                    "cell to OUT_EVALUATOR_texts.md")
    a = ap.parse_args()
    path = Path(a.json)
    scored = json.loads(path.read_text())  # a copy whose cells take the evaluator's NLL; the file keeps all
    ev = pick_evaluator(scored, a.evaluator)
    side = path.with_suffix(".samples.jsonl.gz")
    if a.texts and ev is not None and not side.exists():  # before anything is written
        raise SystemExit(f"--texts needs the sweep's side file {side} (the samples' ids); copy it beside the JSON")
    an = analyse(scored, a.boot)
    if scored.get("unscored"):
        an["unscored"] = scored["unscored"]
    tag = None if ev is None else ev.replace(":", "-").replace("/", "-")
    stem = path.with_suffix("") if ev is None else path.with_name(f"{path.stem}_{tag}")
    if not a.no_plots:
        an["plots"] = plots(scored, an, stem, path.with_suffix(""))
    key = "analysis" if ev is None else f"analysis_{ev}"
    update_json(path, lambda res: res.__setitem__(key, an))  # a score process may be writing the same file
    if a.texts and ev is not None:
        md = Path(f"{stem}_texts.md")
        atomic_write_bytes(md, sample_texts(scored, an, side, a.texts).encode())
        print(f"sample texts: {md}")
    print(tables(scored, an))


if __name__ == "__main__":
    main()
