"""Merge gpu_round3.sh's result files and print the short table (python benchmarks/round3_summary.py WORK OUT).

WORK holds the per-section JSON (train_*.json, sampling.json, float8.json, quant.json); OUT receives
bench_train_r3.json (every training row), bench_sampling_r3.json, float8_markov3.json,
quant_sampling_markov3.json and round3_summary.json (the table's numbers, device, torch, commit)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def load(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def main(work: Path, out: Path, tag: str) -> None:
    head, rows = None, []
    for f in sorted(work.glob("train_*.json")):
        d = load(f)
        if d:
            head = head or {k: v for k, v in d.items() if k != "rows"}
            rows += d.get("rows", [])
    summary = {**(head or {}), "train": [], "sampling": [], "float8": None, "quant": None}
    if head:
        (out / f"bench_train_r3{tag}.json").write_text(json.dumps({**head, "rows": rows}, indent=2) + "\n")
    lines = ["training (bare step, bf16): setup | variant | ms/step | tokens/s | MFU | peak GB | vs first row"]
    base: dict = {}
    for r in rows:
        if "step_seconds" not in r:
            why = r.get("error", "oom" if r.get("oom") else "?")
            lines.append(f"  {r.get('setup')} | {r.get('variant')} | {why}"[:200])
            continue
        b = base.setdefault(r["setup"], r["step_seconds"])
        mfu = f"{r['mfu']:.3f}" if r.get("mfu") else "-"
        mem = f"{r['peak_memory_gb']:.1f}" if r.get("peak_memory_gb") else "-"
        lines.append(f"  {r['setup']} | {r['variant']} | {r['step_seconds'] * 1e3:.1f} | "
                     f"{r['tokens_per_second']:.0f} | {mfu} | {mem} | {r['step_seconds'] / b:.3f}x")
        summary["train"].append({k: r.get(k) for k in ("setup", "variant", "kernels", "step_seconds",
                                                        "tokens_per_second", "mfu", "peak_memory_gb")})
    d = load(work / "sampling.json")
    if d:
        shutil.copy(work / "sampling.json", out / f"bench_sampling_r3{tag}.json")
        lines.append("sampling (MDLM, batch 16, 128 steps): path | s/seq | ms/step | trunk ms | vs first row")
        first = None
        for r in d.get("rows", []):
            if "seconds_per_seq" not in r:
                continue
            first = first or r["seconds_per_seq"]
            lines.append(f"  {r['path']} | {r['seconds_per_seq']:.4f} | {r['t_step'] * 1e3:.2f} | "
                         f"{(r.get('t_trunk') or 0) * 1e3:.2f} | {r['seconds_per_seq'] / first:.3f}x")
            summary["sampling"].append({k: r.get(k) for k in ("path", "kernels", "seconds_per_seq", "t_step", "t_trunk",
                                                             "same_tokens_as_plain")})
    d = load(work / "float8.json")
    if d:
        shutil.copy(work / "float8.json", out / f"float8_markov3{tag}.json")
        fv = d.get("final_val")
        summary["float8"] = fv
        if fv:
            lines.append(f"float8 vs bf16 training (markov3, {d.get('steps')} steps): final val {fv['bf16']:.4f} vs "
                         f"{fv['float8']:.4f}, {100 * fv['rel_diff']:+.2f}% (within 1%: {fv['within_1pct']})")
        else:
            lines.append(f"float8 vs bf16 training: incomplete ({list(d.get('runs', {}))} done)")
    d = load(work / "quant.json")
    if d:
        shutil.copy(work / "quant.json", out / f"quant_sampling_markov3{tag}.json")
        summary["quant"] = d.get("rows")
        lines.append("sampling weights (markov3, exact gen-NLL nats/token [95% CI]; diff vs trained weights [CI])")
        for w, r in d.get("rows", {}).items():
            ci = r.get("gen_nll_ci") or [float("nan")] * 2
            extra = f" | diff {r['diff_vs_model']:+.4f} [{r['diff_ci'][0]:+.4f}, {r['diff_ci'][1]:+.4f}]" \
                if "diff_ci" in r else ""
            lines.append(f"  {w} | {r['gen_nll']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] | entropy {r['entropy']:.3f}{extra}")
    (out / f"round3_summary{tag}.json").write_text(json.dumps({**summary, "table": lines}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
