"""Tables and plots of a strong-energy sweep (benchmarks/strong_energy.py): per judge and proposal, every EDLM cell
against MDLM at the same steps (the gen-NLL difference with its 95% bootstrap interval), entropy beside it, the
cost (seconds per sample with the energy's, its share, candidates), the matched-quality speed-up with its interval,
the LM-alone baseline and the data. Writes "analysis" into the JSON and prints Markdown.

    python benchmarks/strong_energy_report.py results/strong_energy/wiki-char_cpu.json

Matched-quality speed-up of an EDLM cell: the seconds per sample MDLM (the same proposal) needs to reach the cell's
gen-NLL, over the cell's own seconds (energy included). MDLM's cost at a quality between two of its step counts is
interpolated (log seconds linear in gen-NLL) on its running best; "not reached" when no MDLM step count is as good.
The interval: 1000 bootstrap replicates of every cell's samples.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from edlm.eval.stats import difference_interval  # noqa: E402
from edlm.utils import atomic_write_bytes  # noqa: E402

DRAWS = 1000


def ratio(scores, idx=None):
    a = np.asarray(scores, dtype=np.float64)
    if idx is not None:
        a = a[idx]
    return a[..., 0].sum(-1) / a[..., 1].sum(-1)


def matched_cost(curve, g):
    """curve: [(steps, nll, seconds)] by steps. Seconds MDLM needs for gen-NLL <= g (None: never)."""
    best, prev = math.inf, None
    for _steps, nll, sec in curve:
        if nll < best:
            if nll <= g:
                if prev is None or prev[0] <= g:
                    return sec
                f = (prev[0] - g) / (prev[0] - nll)  # interpolate log-seconds between the two step counts
                return math.exp(math.log(prev[1]) + f * (math.log(sec) - math.log(prev[1])))
            best, prev = nll, (nll, sec)
    return None


def speedup(cell, mdlm_cells, judge, rng):
    """(point, [lo, hi], share of replicates where MDLM never matches)."""
    sec = cell["seconds_per_sample"]
    curve = [(m["steps"], m["judges"][judge]["gen_nll"], m["seconds_per_sample"]) for m in mdlm_cells]
    c = matched_cost(curve, cell["judges"][judge]["gen_nll"])
    point = None if c is None else c / sec
    reps = []
    sc = np.asarray(cell["judges"][judge]["scores"], dtype=np.float64)
    ms = [np.asarray(m["judges"][judge]["scores"], dtype=np.float64) for m in mdlm_cells]
    for _ in range(DRAWS):
        g = ratio(sc[rng.integers(0, len(sc), len(sc))])
        cur = [(m["steps"], ratio(s[rng.integers(0, len(s), len(s))]), m["seconds_per_sample"])
               for m, s in zip(mdlm_cells, ms, strict=True)]
        v = matched_cost(cur, g)
        reps.append(math.inf if v is None else v / sec)
    reps = np.asarray(reps)
    lo, hi = (np.quantile(reps, q, method="inverted_cdf") for q in (0.025, 0.975))  # no inf - inf
    fmt = lambda v: None if not math.isfinite(v) else float(v)
    return point, [fmt(lo), fmt(hi)], float(np.mean(~np.isfinite(reps)))


def analyse(res: dict) -> dict:
    cells = list(res["cells"].values())
    rng = np.random.default_rng(0)
    out = {}
    for judge in ("smollm2-135m", "gemma3-270m"):
        A = {"baselines": {}, "by_mdlm": {}}
        for c in cells:
            if c["kind"] in ("data", "lm") and judge in c["judges"]:
                name = "data" if c["kind"] == "data" else f"lm alone: {c['energy']}"
                j = c["judges"][judge]
                A["baselines"][name] = {"gen_nll": j["gen_nll"], "ci": j["gen_nll_ci95"], "entropy": c["entropy"],
                                        "seconds_per_sample": c.get("seconds_per_sample")}
        for tag in ("long", "short"):
            mdlm = sorted((c for c in cells if c["kind"] == "mdlm" and c["mdlm"] == tag and judge in c["judges"]),
                          key=lambda c: c["steps"])
            if not mdlm:
                continue
            by_steps = {m["steps"]: m for m in mdlm}
            rows = []
            for c in cells:
                if c["kind"] != "edlm" or c["mdlm"] != tag or judge not in c["judges"] or c["steps"] not in by_steps:
                    continue
                m = by_steps[c["steps"]]
                jc, jm = c["judges"][judge], m["judges"][judge]
                d = difference_interval(tuple(zip(*jc["scores"], strict=True)), tuple(zip(*jm["scores"], strict=True)))
                sp, sp_ci, never = speedup(c, mdlm, judge, rng)
                rows.append({"energy": c["energy"], "form": c["form"], "scale": c["scale"], "steps": c["steps"],
                             "k": c["k"], "window": c["window"], "gen_nll": jc["gen_nll"], "ci": jc["gen_nll_ci95"],
                             "diff_vs_mdlm": d["diff"], "diff_ci": d["ci"], "entropy": c["entropy"],
                             "entropy_change": c["entropy"] / m["entropy"] - 1, "mean_ess": c.get("mean_ess"),
                             "seconds_per_sample": c["seconds_per_sample"],
                             "mdlm_seconds_per_sample": m["seconds_per_sample"],
                             "energy_share_of_time": c.get("energy_share_of_time"),
                             "energy_candidates_per_sample": c.get("energy_candidates_per_sample"),
                             "energy_lm_tokens_per_sample": c.get("energy_lm_tokens_per_sample"),
                             "speedup": sp, "speedup_ci": sp_ci, "speedup_not_reached_share": never})
            A["by_mdlm"][tag] = {
                "mdlm": [{"steps": m["steps"], "gen_nll": m["judges"][judge]["gen_nll"],
                          "ci": m["judges"][judge]["gen_nll_ci95"], "entropy": m["entropy"],
                          "seconds_per_sample": m["seconds_per_sample"]} for m in mdlm],
                "edlm": rows}
            clear = [r for r in rows if r["diff_ci"][1] < 0 and abs(r["entropy_change"]) <= 0.05]
            A["by_mdlm"][tag]["best_equal_steps"] = min(rows, key=lambda r: r["diff_vs_mdlm"]) if rows else None
            A["by_mdlm"][tag]["best_clear_within_5pct_entropy"] = (min(clear, key=lambda r: r["diff_ci"][1])
                                                                   if clear else None)
        out[judge] = A
    return out


def f3(v):
    return "-" if v is None else f"{v:.3f}"


def markdown(res: dict, an: dict) -> str:
    lines = [f"## {res['corpus']} ({res.get('device_name', res.get('device'))}, torch {res.get('torch')}, "
             f"commit {res.get('commit')})"]
    for judge, A in an.items():
        lines.append(f"\n### judged by {judge}\n")
        for name, b in A["baselines"].items():
            lines.append(f"- {name}: gen-NLL {f3(b['gen_nll'])} [{f3(b['ci'][0])}, {f3(b['ci'][1])}], "
                         f"entropy {f3(b['entropy'])}")
        for tag, B in A["by_mdlm"].items():
            lines.append(f"\nMDLM ({tag} training): " + ", ".join(
                f"{m['steps']} steps {f3(m['gen_nll'])} (H {m['entropy']:.3f}, {m['seconds_per_sample']:.3f} s)"
                for m in B["mdlm"]))
            lines.append("\n| energy | form | scale | steps | k | window | gen-NLL | minus MDLM [95% CI] | entropy "
                         "(change) | ESS | s/sample (MDLM) | energy share | speed-up [95% CI] |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in sorted(B["edlm"], key=lambda r: (r["steps"], r["k"], r["form"], r["scale"], r["window"])):
                sp = "not reached" if r["speedup"] is None else f"{r['speedup']:.2f}x"
                ci = [("n.r." if v is None else f"{v:.2f}") for v in r["speedup_ci"]]
                lines.append(
                    f"| {r['energy']} | {r['form']} | {r['scale']:g} | {r['steps']} | {r['k']} | {r['window']:g} | "
                    f"{f3(r['gen_nll'])} | {r['diff_vs_mdlm']:+.3f} [{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}] "
                    f"| {r['entropy']:.3f} ({100 * r['entropy_change']:+.1f}%) | {f3(r['mean_ess'])} | "
                    f"{r['seconds_per_sample']:.3f} ({r['mdlm_seconds_per_sample']:.3f}) | "
                    f"{f3(r['energy_share_of_time'])} | {sp} [{ci[0]}, {ci[1]}] |")
    return "\n".join(lines)


def plots(res: dict, an: dict, stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for judge, A in an.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for tag, B in A["by_mdlm"].items():
            xs = [m["seconds_per_sample"] for m in B["mdlm"]]
            ax.plot(xs, [m["gen_nll"] for m in B["mdlm"]], "o-", label=f"MDLM ({tag})",
                    color="k" if tag == "long" else "0.6")
            for form, mk in (("residual", "s"), ("product", "^")):
                pts = [r for r in B["edlm"] if r["form"] == form]
                if pts:
                    ax.scatter([r["seconds_per_sample"] for r in pts], [r["gen_nll"] for r in pts], marker=mk,
                               label=f"EDLM {form} ({tag})", alpha=0.8)
        for name, b in A["baselines"].items():
            ax.axhline(b["gen_nll"], ls="--", lw=1, color="tab:green" if name == "data" else "tab:red")
            ax.text(0.01, b["gen_nll"], name, va="bottom", fontsize=7, transform=ax.get_yaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel("seconds per sample (energy included)")
        ax.set_ylabel(f"gen-NLL under {judge} (nats/token)")
        ax.set_title(f"{res['corpus']}: EDLM with an LM energy, judged by {judge}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = stem.with_name(f"{stem.name}_{judge}_quality_vs_time.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(str(p))
    return made


def report(a):
    path = Path(a.json)
    res = json.loads(path.read_text())
    an = analyse(res)
    res["analysis"] = an
    if not getattr(a, "no_plots", False):
        res["plots"] = plots(res, an, path.with_suffix(""))
    atomic_write_bytes(path, json.dumps(res, indent=1).encode())
    print(markdown(res, an))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--no-plots", action="store_true")
    report(ap.parse_args())
