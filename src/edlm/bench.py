"""The quality/speed sweep behind the paper's Table 3 and Figure 1, and its plots.

For each method (mdlm, edlm-ar, edlm-coar, edlm-nce, ar) and setting (steps, k, window) it samples,
scores the samples with one evaluator, and records gen-PPL, entropy and seconds per sequence.

    edlm bench --mdlm RUN --ar AR_RUN --nce NCE_RUN --steps 8,16,32 --k 2,8 --window 0,1 --out bench/
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
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
    token_temperature: float = 1.0
    top_p: float = 1.0


def settings_for(methods, steps, ks, windows, temperatures=(1.0,), top_ps=(1.0,)) -> list[Setting]:
    """Every method at every (steps, k, window) it takes, each at every token temperature and top-p."""
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
    return [replace(st, token_temperature=t, top_p=p) for st in out for t in temperatures for p in top_ps]


def setting_name(st: Setting) -> str:
    """The samples file's name (sharpness only where it is not 1, so earlier names stay)."""
    name = f"{st.method}_s{st.steps}_k{st.k}" + (f"_w{st.window[0]:g}-{st.window[1]:g}" if st.window else "")
    if st.token_temperature != 1.0:
        name += f"_T{st.token_temperature:g}"
    if st.top_p != 1.0:
        name += f"_p{st.top_p:g}"
    return name.replace("+", "-on-")


def _reuse(path: Path, num: int, seed: int):
    """(rows, summary) of a finished cell's samples file (a resumed sweep), or None."""
    summ = path.with_suffix(".summary.json")
    if not (path.is_file() and summ.is_file()):
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if len(rows) != num or any(r.get("seed") != seed for r in rows):
        return None
    return rows, json.loads(summ.read_text())


def _request(st: Setting, runs: dict, num: int, batch_size: int, seed: int,
             precision: str = "auto") -> GenerateRequest:
    method = METHODS[st.method]
    energy = f"{method.energy}:{runs[method.runs[1]]}" if method.energy else None
    return GenerateRequest(ckpt=runs[method.generator], num=num, steps=max(st.steps, 1), batch_size=batch_size,
                           seed=seed, energy=energy, k=st.k, window=st.window, unmask=method.unmask,
                           token_temperature=st.token_temperature, top_p=st.top_p, precision=precision)


def run_setting(st: Setting, runs: dict, models: dict, *, num, batch_size, seed, device, evaluator,
                samples_dir: Path | None, quiet=False, energies: dict | None = None, metrics=None,
                precision: str = "auto") -> dict:
    """Sample one setting (or reuse its finished samples file: a resumed sweep) and score it. metrics: a
    SweepMetrics (MAUVE and its reference) or None (gen-PPL, entropy, repetition)."""
    method = METHODS[st.method]
    req = _request(st, runs, num, batch_size, seed, precision)
    ckpt = req.ckpt
    path = None if samples_dir is None else samples_dir / f"{setting_name(st)}.jsonl"
    done = None if path is None else _reuse(path, num, seed)
    if done is not None:
        rows, summ = done
    else:
        rows, summ = generate(req, device, models=models.get(ckpt), energies=energies, quiet=quiet)
        if path is not None:
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
            atomic_write_json(path.with_suffix(".summary.json"), summ)
    row = {"method": st.method, "steps": st.steps, "k": st.k, "window": list(st.window) if st.window else None}
    if evaluator is None:  # sampling only (score later with the same command and an evaluator)
        return {**row, "samples": None if path is None else str(path), "num": summ["num"],
                "seconds": summ["seconds_per_sample"]}
    if method.unmask != "random":
        row["unmask"] = method.unmask
    if st.token_temperature != 1.0 or st.top_p != 1.0:
        row.update(token_temperature=st.token_temperature, top_p=st.top_p)
    row.update(score_rows(rows, evaluator, device, metrics))
    row.update(seconds=summ["seconds_per_sample"], mean_ess=summ["mean_ess"], num=summ["num"])
    return row


@dataclass
class SweepMetrics:
    """What a sweep measures beyond gen-PPL, entropy and repetition: MAUVE against `reference` rows."""

    mauve: bool = False
    reference: list | None = None
    features: str = "smollm2-135m"
    config: object = None  # an edlm.eval.mauve.MauveConfig
    cache: dict = field(default_factory=dict)  # the reference's features, computed once per sweep


def score_rows(rows: list[dict], evaluator, device, metrics: SweepMetrics | None = None) -> dict:
    """The sweep's numbers for one set of rows: gen-PPL / gen-NLL with interval and per-sample scores, entropy
    (mean and per sample), distinct-2, repetition, and MAUVE when asked."""
    from edlm.api.evaluators import evaluate_samples
    from edlm.eval.mauve import MauveConfig
    from edlm.eval.repetition import DEFAULT_NS
    from edlm.eval.stats import unigram_entropy

    m = metrics or SweepMetrics()
    names = ("genppl", "repetition") + (("mauve",) if m.mauve else ())
    ev = evaluate_samples(rows, metrics=names, evaluator=evaluator, device=device, keep_scores=True,
                          reference=m.reference, reference_name="held-out test windows" if m.mauve else None,
                          mauve_features=m.features, mauve=m.config or MauveConfig(),
                          feature_cache=m.cache)
    out = {"gen_ppl": ev["gen_ppl"], "gen_nll": ev["gen_nll"], "gen_nll_ci95": ev["gen_nll_ci95"],
           "scores": ev["scores"], "entropies": [unigram_entropy(r["ids"]) for r in rows],
           "entropy_nats": ev["entropy_nats"], "entropy_bits": ev["entropy_bits"], "distinct_2": ev.get("distinct_2")}
    for n in DEFAULT_NS:
        for key in (f"rep_{n}", f"rep_{n}_ci95", f"set_rep_{n}", f"distinct_{n}"):
            out[key] = ev.get(key)
    for key in ("mauve", "mauve_ci95", "mauve_seeds", "mauve_star", "mauve_num_samples", "mauve_num_reference",
                "mauve_features", "mauve_settings", "mauve_reference"):
        if key in ev:
            out[key] = ev[key]
    return out


def sweep(settings, runs: dict, *, num=64, batch_size=64, seed=0, device="cpu", evaluator="true",
          out: Path | None = None, quiet=False, on_row=None, metrics: SweepMetrics | None = None,
          keep_samples: bool = False, precision: str = "auto") -> list[dict]:
    """Every setting sampled and scored, in order (a samples file already in OUT/samples is reused). Rows keep
    their per-sample scores and entropies only with keep_samples (for frontier_report; strip_samples drops
    them)."""
    from edlm.runs.load import load_model

    models = {p: load_model(p, device) for p in {runs.get("mdlm"), runs.get("ar")} if p}
    energies: dict = {}
    for st in settings:  # every setting's checks and memory bound before the first one runs
        req = _request(st, runs, num, batch_size, seed, precision)
        check_request(req, device, models=models.get(req.ckpt), energies=energies)
    samples_dir = None
    if out is not None:
        samples_dir = Path(out) / "samples"
        samples_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for st in settings:
        row = run_setting(st, runs, models, num=num, batch_size=batch_size, seed=seed, device=device,
                          evaluator=evaluator, samples_dir=samples_dir, quiet=quiet, energies=energies,
                          metrics=metrics, precision=precision)
        rows.append(row)
        if on_row:
            on_row(row)
    compare_to_mdlm(rows)
    if not keep_samples:
        strip_samples(rows)
    return rows


def _sharpness(r: dict) -> tuple:
    return r.get("token_temperature", 1.0), r.get("top_p", 1.0)


def strip_samples(rows: list[dict]) -> None:
    """Drop the per-sample lists (scores, entropies) the intervals and frontiers needed."""
    for r in rows:
        r.pop("scores", None)
        r.pop("entropies", None)


def compare_to_mdlm(rows: list[dict]) -> None:
    """Give every diffusion row that is not plain MDLM its gen-NLL minus MDLM's at the same step count (and token
    temperature / top-p), with a 95% bootstrap interval over samples (`vs_mdlm`)."""
    from edlm.eval.stats import difference_interval

    mdlm = {(r["steps"], *_sharpness(r)): r for r in rows if r["method"] == "mdlm"}
    for r in rows:
        base = mdlm.get((r["steps"], *_sharpness(r)))
        if r["method"] not in ("mdlm", "ar") and base is not None and r.get("scores") and base.get("scores"):
            a = [s for s in r["scores"] if s[1] > 0]
            b = [s for s in base["scores"] if s[1] > 0]
            r["vs_mdlm"] = difference_interval(([s[0] for s in a], [s[1] for s in a]),
                                               ([s[0] for s in b], [s[1] for s in b]))


def data_row(corpus: str, num: int, length: int, evaluator, device, metrics: SweepMetrics | None = None) -> dict:
    """The held-out text's row: `num` windows of `length` tokens of the corpus's valid split (MAUVE's reference is
    the test split, so the data's own MAUVE is a ceiling), scored as every setting is."""
    from edlm.eval.heldout import heldout_rows

    rows = heldout_rows(corpus, num, length, split="valid")
    row = {"method": "data", "what": f"{corpus} valid split, {num} windows of {length} tokens", "steps": 0, "k": 0,
           "window": None, "num": num, "seconds": None, "mean_ess": None}
    row.update(score_rows(rows, evaluator, device, metrics))
    return row


def write_results(out: Path, meta: dict, rows: list[dict], report: dict | None = None) -> dict:
    """OUT/results.json (meta, rows, the report) and the step plots (rows at token temperature 1, top-p 1)."""
    from edlm.plots import plot_sweep

    out = Path(out)
    res = {**meta, "rows": rows}
    if report is not None:
        res["report"] = report
    atomic_write_json(out / "results.json", res)
    plain = [r for r in rows if _sharpness(r) == (1.0, 1.0)]
    res["plots"] = plot_sweep(plain, out, title=f"{meta.get('data', '')} ({meta.get('evaluator', '')})",
                              reference=meta.get("reference")) if plain else []
    if report is not None:
        res["plots"].append(report["plot"])
    atomic_write_json(out / "results.json", res)
    return res


def write_report(out: Path, meta: dict, rows: list[dict], data: dict | None, level: float | None = None) -> dict:
    """The sweep's one report: frontiers, matched entropy, pairs, MAUVE, repetition (edlm.eval.sweep_report) as
    OUT/report.md and OUT/frontier.png; returns the report dict (results.json keeps it). Rows and data still hold
    their per-sample lists."""
    from edlm.eval.sweep_report import frontier_report, plot_frontier, render_markdown

    out = Path(out)
    rep = frontier_report(rows, data, level)
    rep["meta"] = {k: v for k, v in meta.items() if k != "runs"}
    title = f"{meta.get('data', '')}, evaluator {meta.get('evaluator', '')}"
    rep["plot"] = plot_frontier(rep, out / "frontier.png", title=f"gen-NLL against entropy: {title}")
    atomic_write_bytes(out / "report.md", render_markdown(rep, title=f"Sampler frontiers: {title}").encode())
    return rep


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
        m = r["method"] + ("" if _sharpness(r) == (1.0, 1.0) else
                           f" T={r['token_temperature']:g}" + (f" p={r['top_p']:g}" if r["top_p"] != 1 else ""))
        lines.append(f"{m:<10} {steps:>5} {r['k']:>3} {w:>9} {r['gen_ppl']:>9.3f} "
                     f"{r['entropy_nats']:>8.3f} {r['seconds']:>8.4f} {ess:>5}  {vs}")
    return "\n".join(lines)
