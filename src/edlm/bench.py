"""The quality/speed sweep behind the paper's Table 3 and Figure 1, and its plots.

For each method (mdlm, edlm-ar, edlm-coar, edlm-nce, ar) and setting (steps, k, window) it samples,
scores the samples with one evaluator, and records gen-PPL, entropy and seconds per sequence.

    edlm bench --mdlm RUN --ar AR_RUN --nce NCE_RUN --steps 8,16,32 --k 2,8 --window 0,1 --out bench/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edlm.api.generate import GenerateRequest, generate
from edlm.api.generate import check as check_request
from edlm.api.methods import METHODS
from edlm.utils import atomic_write_bytes, atomic_write_json


@dataclass
class Setting:
    method: str  # a name in methods.METHODS: mdlm | edlm-ar | edlm-coar | edlm-nce | ar
    steps: int
    k: int = 1
    window: tuple[float, float] | None = None


def settings_for(methods, steps, ks, windows) -> list[Setting]:
    out = []
    for m in methods:
        if METHODS[m].generator == "ar":  # left to right: no steps, k or window
            out.append(Setting(m, 0))
            continue
        for s in steps:
            if METHODS[m].energy is None:
                out.append(Setting(m, s))
            else:
                out.extend(Setting(m, s, k, w) for k in ks for w in windows)
    return out


def _request(st: Setting, runs: dict, num: int, batch_size: int, seed: int) -> GenerateRequest:
    method = METHODS[st.method]
    energy = f"{method.energy}:{runs[method.runs[1]]}" if method.energy else None
    return GenerateRequest(ckpt=runs[method.generator], num=num, steps=max(st.steps, 1), batch_size=batch_size,
                           seed=seed, energy=energy, k=st.k, window=st.window)


def run_setting(st: Setting, runs: dict, models: dict, *, num, batch_size, seed, device, evaluator,
                samples_dir: Path | None, quiet=False, energies: dict | None = None) -> dict:
    from edlm.api.evaluators import evaluate_rows

    req = _request(st, runs, num, batch_size, seed)
    rows, summ = generate(req, device, models=models.get(req.ckpt), energies=energies, quiet=quiet)
    if samples_dir is not None:
        name = f"{st.method}_s{st.steps}_k{st.k}" + (f"_w{st.window[0]:g}-{st.window[1]:g}" if st.window else "")
        atomic_write_bytes(samples_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    ev = evaluate_rows(rows, evaluator, device=device, keep_scores=True)
    return {"method": st.method, "steps": st.steps, "k": st.k, "window": list(st.window) if st.window else None,
            "gen_ppl": ev["gen_ppl"], "gen_nll": ev["gen_nll"], "gen_nll_ci95": ev["gen_nll_ci95"],
            "scores": ev["scores"], "entropy_nats": ev["entropy_nats"],
            "entropy_bits": ev["entropy_bits"], "distinct_2": ev.get("distinct_2"),
            "seconds": summ["seconds_per_sample"], "mean_ess": summ["mean_ess"], "num": summ["num"]}


def sweep(settings, runs: dict, *, num=64, batch_size=64, seed=0, device="cpu", evaluator="true",
          out: Path | None = None, quiet=False, on_row=None) -> list[dict]:
    from edlm.runs.load import load_model

    models = {p: load_model(p, device) for p in {runs.get("mdlm"), runs.get("ar")} if p}
    energies: dict = {}
    for st in settings:  # every setting's checks and memory bound before the first one runs
        req = _request(st, runs, num, batch_size, seed)
        check_request(req, device, models=models.get(req.ckpt), energies=energies)
    samples_dir = None
    if out is not None:
        samples_dir = Path(out) / "samples"
        samples_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for st in settings:
        row = run_setting(st, runs, models, num=num, batch_size=batch_size, seed=seed, device=device,
                          evaluator=evaluator, samples_dir=samples_dir, quiet=quiet, energies=energies)
        rows.append(row)
        if on_row:
            on_row(row)
    compare_to_mdlm(rows)
    return rows


def compare_to_mdlm(rows: list[dict]) -> None:
    """Give every diffusion row that is not plain MDLM its gen-NLL minus MDLM's at the same step count, with a
    95% bootstrap interval over samples (`vs_mdlm`); then drop the per-sample scores the intervals need."""
    from edlm.eval.stats import difference_interval

    mdlm = {r["steps"]: r for r in rows if r["method"] == "mdlm"}
    for r in rows:
        base = mdlm.get(r["steps"])
        if r["method"] not in ("mdlm", "ar") and base is not None and r.get("scores") and base.get("scores"):
            a = [s for s in r["scores"] if s[1] > 0]
            b = [s for s in base["scores"] if s[1] > 0]
            r["vs_mdlm"] = difference_interval(([s[0] for s in a], [s[1] for s in a]),
                                               ([s[0] for s in b], [s[1] for s in b]))
    for r in rows:
        r.pop("scores", None)


def write_results(out: Path, meta: dict, rows: list[dict]) -> dict:
    from edlm.plots import plot_sweep

    out = Path(out)
    res = {**meta, "rows": rows}
    atomic_write_json(out / "results.json", res)
    res["plots"] = plot_sweep(rows, out, title=f"{meta.get('data', '')} ({meta.get('evaluator', '')})",
                              reference=meta.get("reference"))
    atomic_write_json(out / "results.json", res)
    return res


def format_table(rows: list[dict]) -> str:
    """One line per setting; `vs MDLM`: gen-NLL minus MDLM's at the same steps [95% bootstrap interval]."""
    head = (f"{'method':<10} {'steps':>5} {'k':>3} {'window':>9} {'gen_ppl':>9} {'entropy':>8} {'sec/seq':>8} "
            f"{'ESS':>5}  {'vs MDLM (nats/token)':<24}")
    lines = [head, "-" * len(head)]
    for r in rows:
        w = "-" if not r.get("window") else f"{r['window'][0]:g}-{r['window'][1]:g}"
        ess = "-" if r.get("mean_ess") is None else f"{r['mean_ess']:.2f}"
        steps = "-" if r["method"] == "ar" else r["steps"]
        vs = r.get("vs_mdlm")
        vs = "" if not vs else f"{vs['diff']:+.3f} [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]"
        lines.append(f"{r['method']:<10} {steps:>5} {r['k']:>3} {w:>9} {r['gen_ppl']:>9.3f} "
                     f"{r['entropy_nats']:>8.3f} {r['seconds']:>8.4f} {ess:>5}  {vs}")
    return "\n".join(lines)
