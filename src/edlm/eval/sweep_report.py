"""One report per sampler sweep: frontiers (gen-NLL against entropy), the matched-entropy table, pairwise verdicts,
MAUVE and repetition, as a JSON dict, a Markdown page (rendered from the JSON, so a table in the docs is generated,
not typed) and a PNG.

    rep = frontier_report(rows, data)      # rows: bench rows with per-sample "scores" and "entropies"
    md = render_markdown(rep)              # the tables
    plot_frontier(rep, "frontier.png")

A curve is one sampler configuration (method, steps, k, window) across the sharpness settings it was drawn at
(token temperature, top-p); its cells are ordered by entropy. The data's own point (the evaluator on held-out text
of the same length) is the reference: the matched level defaults to its entropy.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from edlm.eval.frontier import Cell, Curve, compare, matched, matched_difference

CELL_KEYS = ("method", "steps", "k", "window", "unmask", "token_temperature", "top_p", "num", "gen_ppl", "gen_nll",
             "gen_nll_ci95", "entropy_nats", "entropy_ci95", "seconds", "mean_ess", "mauve", "mauve_ci95",
             "rep_2", "rep_3", "rep_4", "set_rep_4", "distinct_4")


def curve_label(r: dict) -> str:
    """method, plus steps / k / window where they apply (AR has none)."""
    if r["method"] == "ar":
        return "ar"
    parts = [r["method"], f"{r['steps']} steps"]
    if r.get("k", 1) > 1:
        parts.append(f"k={r['k']}")
        w = r.get("window")
        if w and list(w) != [0.0, 1.0]:
            parts.append(f"w={w[0]:g}-{w[1]:g}")
    return " ".join(parts)


def knob_label(r: dict) -> str:
    bits = []
    if r.get("token_temperature", 1.0) != 1.0 or r.get("top_p", 1.0) == 1.0:
        bits.append(f"T={r.get('token_temperature', 1.0):g}")
    if r.get("top_p", 1.0) != 1.0:
        bits.append(f"p={r['top_p']:g}")
    return " ".join(bits)


def cell_of(r: dict) -> Cell:
    return Cell.of(r["scores"], r["entropies"], knob=knob_label(r))


def frontier_report(rows: list[dict], data: dict | None = None, level: float | None = None) -> dict:
    """rows: sweep rows each with "scores" (per sample [nll, tokens]) and "entropies" (per sample); data: the
    held-out text's row (the same keys) or None; level: the entropy to compare at (default: the data's).
    -> the report dict (module doc); the per-sample lists are not copied into it."""
    curves: dict[str, list[dict]] = {}
    for r in rows:
        curves.setdefault(curve_label(r), []).append(r)
    built = {lab: Curve(lab, [cell_of(r) for r in rs]) for lab, rs in curves.items()}
    rep: dict = {"cells": [], "curves": {}, "matched": [], "pairs": []}
    for lab, rs in curves.items():
        for r in sorted(rs, key=lambda r: (r.get("token_temperature", 1.0), r.get("top_p", 1.0))):
            pt = cell_of(r).point()
            cell = {k: r.get(k) for k in CELL_KEYS if k in r}
            cell.update(curve=lab, knob=knob_label(r), entropy_nats=pt["entropy"], entropy_ci95=pt["entropy_ci95"],
                        gen_nll=pt["gen_nll"], gen_nll_ci95=pt["gen_nll_ci95"])
            rep["cells"].append(cell)
        rep["curves"][lab] = {"entropy_range": list(built[lab].range), "cells": len(rs)}
    if data is not None:
        pt = cell_of(data).point()
        rep["data"] = {**{k: data.get(k) for k in CELL_KEYS if k in data}, "entropy_nats": pt["entropy"],
                       "entropy_ci95": pt["entropy_ci95"], "gen_nll": pt["gen_nll"],
                       "gen_nll_ci95": pt["gen_nll_ci95"], "method": "data", "what": data.get("what")}
    if level is None and data is not None:
        level, rep["level_from"] = rep["data"]["entropy_nats"], "the data's entropy"
    elif level is not None:
        rep["level_from"] = "given"
    rep["level"] = level
    if level is not None:
        rep["matched"] = [matched(c, level) for c in built.values()]
    for a, b in itertools.combinations(built.values(), 2):
        pair = compare(a, b)
        if level is not None:
            pair["at_level"] = matched_difference(a, b, level)
        rep["pairs"].append(pair)
    return rep


# -- Markdown --------------------------------------------------------------------------------------------------
def _ci(v, ci, f="{:.3f}") -> str:
    if v is None:
        return "-"
    s = f.format(v)
    return s if not ci else f"{s} [{f.format(ci[0])}, {f.format(ci[1])}]"


def _num(v, f="{:.3f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)


def render_markdown(rep: dict, title: str = "Sampler frontiers") -> str:
    """The report's tables as Markdown: cells (with the data's row), matched entropy, pairwise verdicts."""
    meta = rep.get("meta", {})
    out = [f"# {title}", ""]
    if meta:
        bits = [f"{k}: {meta[k]}" for k in ("data", "evaluator", "num", "device", "device_name", "torch", "commit")
                if meta.get(k) is not None]
        out += ["; ".join(bits) + ".", ""]
    out += ["gen-NLL: nats per evaluator token (lower is better only at equal entropy); entropy: mean unigram "
            "entropy of a sample (nats); [95% bootstrap intervals over samples]. rep-n: repeated n-grams within a "
            "sample; MAUVE against held-out text (higher is closer).", ""]
    has_mauve = any(c.get("mauve") is not None for c in rep["cells"]) or (rep.get("data") or {}).get("mauve")
    head = "| sampler | setting | entropy | gen-NLL | rep-4 | " + ("MAUVE | " if has_mauve else "") + "s/sample |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    rows = ([rep["data"]] if rep.get("data") else []) + rep["cells"]
    for c in rows:
        name = "data (held-out)" if c.get("method") == "data" else c["curve"]
        mv = f" {_ci(c.get('mauve'), c.get('mauve_ci95'))} |" if has_mauve else ""
        out.append(f"| {name} | {c.get('knob', '-') or '-'} | {_ci(c['entropy_nats'], c.get('entropy_ci95'))} | "
                   f"{_ci(c['gen_nll'], c.get('gen_nll_ci95'))} | {_num(c.get('rep_4'))} |{mv} "
                   f"{_num(c.get('seconds'), '{:.4f}')} |")
    if rep.get("level") is not None:
        out += ["", f"## At matched entropy {rep['level']:.3f} nats ({rep.get('level_from', '')})", "",
                "gen-NLL of each curve interpolated at that entropy between its two bracketing cells (their samples "
                "bootstrapped); '-' where the curve does not reach it (its entropy range in brackets).", "",
                "| sampler | gen-NLL at matched entropy | between | entropy range |", "|---|---|---|---|"]
        for m in sorted(rep["matched"], key=lambda m: (m["gen_nll"] is None, m["gen_nll"] or 0)):
            br = "-" if m["gen_nll"] is None else " and ".join(dict.fromkeys(map(str, m["bracket_knobs"])))
            out.append(f"| {m['label']} | {_ci(m['gen_nll'], m.get('gen_nll_ci95'))} | {br} | "
                       f"{m['range'][0]:.3f}-{m['range'][1]:.3f} |")
    if rep["pairs"]:
        out += ["", "## Pairs over their shared entropy range", "",
                "below / above: one frontier lower at every level of the shared range (9 levels); separated: the "
                "difference's 95% interval excludes 0 at every level. 'a - b at matched': the gen-NLL difference "
                "at the matched entropy, and at the middle of the shared range.", "",
                "| a | b | verdict | a - b at matched entropy | a - b mid-range (entropy) |", "|---|---|---|---|---|"]
        for p in rep["pairs"]:
            at = p.get("at_level")
            at = "-" if not at else _ci(at["diff"], at["ci95"], "{:+.3f}")
            mid = p.get("mid")
            mid = "-" if not mid else f"{_ci(mid['diff'], mid['ci95'], '{:+.3f}')} ({mid['level']:.3f})"
            out.append(f"| {p['a']} | {p['b']} | {p['text']} | {at} | {mid} |")
    return "\n".join(out) + "\n"


def render_matched_table(rep: dict, baseline: str | None = None) -> str:
    """A compact Markdown table for a results page: per curve, its gen-NLL at the matched entropy, its difference
    to `baseline` (a curve label, default the first one starting with "mdlm") there (or, where one of the two does
    not reach that entropy, at the middle of the range they share, which the cell names), and its T = 1 cell's
    entropy, gen-NLL and MAUVE. Generated from the report dict, so the page's numbers are the JSON's."""
    labels = list(rep["curves"])
    base = baseline or next((lab for lab in labels if lab.startswith("mdlm")), None)
    diffs = {}
    for p in rep["pairs"]:
        at = p.get("at_level") or p.get("mid")  # where the level is not shared: the middle of the shared range
        if at and base in (p["a"], p["b"]):
            sign = 1 if p["a"] != base else -1
            other = p["a"] if p["a"] != base else p["b"]
            lo, hi = sorted(sign * v for v in at["ci95"])
            where = "" if p.get("at_level") else f" at entropy {at['level']:.3f}"
            diffs[other] = (sign * at["diff"], [lo, hi], where)
    plain = {c["curve"]: c for c in rep["cells"] if c.get("knob") == "T=1"}
    lvl = rep.get("level")
    head = (f"| sampler | gen-NLL at entropy {lvl:.3f} | minus {base} there | at T=1: entropy, gen-NLL, MAUVE |"
            if lvl is not None else "| sampler | - | - | at T=1: entropy, gen-NLL, MAUVE |")
    out = [head, "|---|---|---|---|"]
    m = {x["label"]: x for x in rep.get("matched", [])}
    if rep.get("data"):
        d = rep["data"]
        out.append(f"| data (held-out) | {_num(d['gen_nll'])} | | {_num(d['entropy_nats'])}, {_num(d['gen_nll'])}, "
                   f"{_num(d.get('mauve'), '{:.3f}')} |")
    for lab in labels:
        mm = m.get(lab) or {}
        g = "not reached" if mm.get("gen_nll") is None else _ci(mm["gen_nll"], mm.get("gen_nll_ci95"))
        dd = "" if lab == base else ("no shared entropy" if lab not in diffs else
                                     _ci(diffs[lab][0], diffs[lab][1], "{:+.3f}") + diffs[lab][2])
        c = plain.get(lab, {})
        t1 = "-" if not c else f"{_num(c.get('entropy_nats'))}, {_num(c.get('gen_nll'))}, {_num(c.get('mauve'))}"
        out.append(f"| {lab} | {g} | {dd} | {t1} |")
    return "\n".join(out) + "\n"


# -- the plot --------------------------------------------------------------------------------------------------
def plot_frontier(rep: dict, path: str | Path, title: str = "") -> str:
    """gen-NLL against entropy, one curve per sampler with 95% intervals on both axes, the data's point marked,
    the matched level as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    by: dict = {}
    for c in rep["cells"]:
        by.setdefault(c["curve"], []).append(c)
    for lab, cs in by.items():
        cs = sorted(cs, key=lambda c: c["entropy_nats"])
        xs, ys = [c["entropy_nats"] for c in cs], [c["gen_nll"] for c in cs]
        xe = [[x - c["entropy_ci95"][0] for x, c in zip(xs, cs, strict=True)],
              [c["entropy_ci95"][1] - x for x, c in zip(xs, cs, strict=True)]]
        ye = [[y - c["gen_nll_ci95"][0] for y, c in zip(ys, cs, strict=True)],
              [c["gen_nll_ci95"][1] - y for y, c in zip(ys, cs, strict=True)]]
        line = ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker="o", ms=4, capsize=2, lw=1.2, label=lab)
        for x, y, c in zip(xs, ys, cs, strict=True):
            if c.get("knob"):
                ax.annotate(c["knob"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points",
                            color=line[0].get_color())
    d = rep.get("data")
    if d:
        ax.errorbar([d["entropy_nats"]], [d["gen_nll"]],
                    xerr=[[d["entropy_nats"] - d["entropy_ci95"][0]], [d["entropy_ci95"][1] - d["entropy_nats"]]],
                    yerr=[[d["gen_nll"] - d["gen_nll_ci95"][0]], [d["gen_nll_ci95"][1] - d["gen_nll"]]],
                    marker="*", ms=14, color="black", capsize=3, ls="none", label="data (held-out)")
    if rep.get("level") is not None:
        ax.axvline(rep["level"], color="gray", ls=":", lw=1)
    ax.set_xlabel("entropy (mean unigram entropy of a sample, nats)")
    ax.set_ylabel("gen-NLL (nats per evaluator token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
