"""The quality/speed sweep behind the paper's Table 3 and Figure 1, and its plots: `edlm bench` and edlm.bench.

For each method (mdlm, edlm-ar, edlm-coar, edlm-nce, ar) and setting (steps, k, window, unmask strategy, energy
temperature, k policy, min-unmask, seed) it samples, scores the samples with one evaluator, and records gen-NLL
with its 95% interval, entropy and seconds per sequence; every EDLM cell gets its difference from MDLM at the
same steps, unmasking and seed (paired: the same seed's stream) with an interval. With token temperatures /
top-p thresholds every method is drawn at every setting and report.md compares their frontiers (gen-NLL against
entropy) at matched entropy, with the held-out data's own row, MAUVE where asked and repetition.

    edlm bench --mdlm RUN --ar AR_RUN --nce NCE_RUN --steps 8,16,32 --k 2,8 --window 0,1 --out bench/
    edlm.bench(mdlm="runs/mdlm", ar="runs/ar", steps=[4, 8], k=[4], unmask=["random", "confidence"],
               evaluator="edlm:runs/judge", out="bench")     # the same, from Python: returns the JSON

The module is callable (`edlm.bench(...)` is `bench()` below) so that the function and the module, which the
command line and the demo import, share the name.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

from edlm.api.generate import GenerateRequest, generate
from edlm.api.generate import check as check_request
from edlm.api.methods import METHODS
from edlm.errors import EdlmError
from edlm.utils import atomic_write_bytes, atomic_write_json


@dataclass
class Setting:
    method: str  # a name in methods.METHODS: mdlm | edlm-ar | edlm-coar | edlm-nce | ar
    steps: int
    k: int = 1
    window: tuple[float, float] | None = None
    unmask: str = "random"
    temperature: float = 1.0
    """the energy's temperature tau in softmax(-E / tau)"""
    k_policy: str = "fixed"
    min_unmask: int = 1
    seed: int | None = None
    """None: the sweep's seed"""
    token_temperature: float = 1.0
    """every token draw from p^(1/T) (sampling/sharpen.py); not the energy's `temperature`"""
    top_p: float = 1.0


def settings_for(methods, steps, ks, windows, *, unmask=("random",), temperatures=(1.0,), k_policies=("fixed",),
                 min_unmask=(1,), seeds=(None,), token_temperatures=(1.0,), top_ps=(1.0,)) -> list[Setting]:
    """Every combination that applies: AR once per seed; MDLM per steps, unmask and seed; EDLM also per k,
    window, energy temperature, k policy and min-unmask (min-unmask > 1 only with strategies that honour it);
    each at every token temperature and top-p."""
    from edlm.config.unmasking import UNMASKINGS

    out = []
    for seed in seeds:
        for m in methods:
            if METHODS[m].generator == "ar":  # left to right: no steps, k or window
                out.append(Setting(m, 0, seed=seed))
                continue
            for s in steps:
                for u in unmask:
                    if METHODS[m].energy is None:
                        out.append(Setting(m, s, unmask=u, seed=seed))
                        continue
                    out.extend(Setting(m, s, k, w, u, tau, kp, mu, seed) for k in ks for w in windows
                               for tau in temperatures for kp in k_policies for mu in min_unmask
                               if mu == 1 or UNMASKINGS[u].min_unmask)
    return [replace(st, token_temperature=tt, top_p=p) for st in out for tt in token_temperatures for p in top_ps]


def cell_name(st: Setting) -> str:
    """The samples file of a cell (the settings at their defaults add nothing to the name)."""
    name = f"{st.method}_s{st.steps}_k{st.k}" + (f"_w{st.window[0]:g}-{st.window[1]:g}" if st.window else "")
    extra = [st.unmask if st.unmask != "random" else "", f"tau{st.temperature:g}" if st.temperature != 1 else "",
             "ess" if st.k_policy != "fixed" else "", f"m{st.min_unmask}" if st.min_unmask != 1 else "",
             f"seed{st.seed}" if st.seed is not None else "",
             f"T{st.token_temperature:g}" if st.token_temperature != 1 else "",
             f"p{st.top_p:g}" if st.top_p != 1 else ""]
    return (name + "".join(f"_{e}" for e in extra if e)).replace("+", "-on-")


def _request(st: Setting, runs: dict, num: int, batch_size: int, seed: int, k_max: int = 16,
             precision: str = "auto") -> GenerateRequest:
    method = METHODS[st.method]
    energy = f"{method.energy}:{runs[method.runs[1]]}" if method.energy else None
    policy = None
    if st.k_policy != "fixed":
        from edlm.config.sampling import KPolicy

        policy = KPolicy(k_max=max(k_max, st.k))
    return GenerateRequest(ckpt=runs[method.generator], num=num, steps=max(st.steps, 1), batch_size=batch_size,
                           seed=seed if st.seed is None else st.seed, energy=energy, k=st.k, window=st.window,
                           unmask=method.unmask if method.unmask != "random" else st.unmask,
                           temperature=st.temperature, k_policy=policy, min_unmask=st.min_unmask,
                           token_temperature=st.token_temperature, top_p=st.top_p, precision=precision)


def _reuse(path: Path, num: int, seed: int):
    """(rows, summary) of a finished cell's samples file (a resumed sweep), or None."""
    summ = path.with_suffix(".summary.json")
    if not (path.is_file() and summ.is_file()):
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if len(rows) != num or any(r.get("seed") != seed for r in rows):
        return None
    return rows, json.loads(summ.read_text())


def run_setting(st: Setting, runs: dict, models: dict, *, num, batch_size, seed, device, evaluator,
                samples_dir: Path | None, quiet=False, energies: dict | None = None, k_max: int = 16,
                metrics=None, precision: str = "auto") -> dict:
    """Sample one setting (or reuse its finished samples file: a resumed sweep) and score it. evaluator None:
    sampling only. metrics: a SweepMetrics (MAUVE and its reference) or None (gen-PPL, entropy, repetition)."""
    req = _request(st, runs, num, batch_size, seed, k_max, precision)
    path = None if samples_dir is None else samples_dir / f"{cell_name(st)}.jsonl"
    done = None if path is None else _reuse(path, num, req.seed)
    if done is not None:
        rows, summ = done
    else:
        rows, summ = generate(req, device, models=models.get(req.ckpt), energies=energies, quiet=quiet)
        if path is not None:
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
            atomic_write_json(path.with_suffix(".summary.json"), summ)
    row = {"method": st.method, "steps": st.steps, "k": st.k, "window": list(st.window) if st.window else None,
           "unmask": req.unmask, "temperature": st.temperature, "k_policy": st.k_policy,
           "min_unmask": st.min_unmask, "seed": req.seed}
    if st.token_temperature != 1.0 or st.top_p != 1.0:
        row.update(token_temperature=st.token_temperature, top_p=st.top_p)
    if evaluator is None:  # sampling only (score later with the same call and an evaluator)
        return {**row, "samples": None if path is None else str(path), "num": summ["num"],
                "seconds": summ["seconds_per_sample"]}
    row.update(score_rows(rows, evaluator, device, metrics))
    row.update(seconds=summ["seconds_per_sample"], mean_ess=summ["mean_ess"], mean_k=summ.get("mean_k"),
               num=summ["num"])
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
          out: Path | None = None, quiet=False, on_row=None, k_max: int = 16, metrics: SweepMetrics | None = None,
          keep_samples: bool = False, precision: str = "auto") -> list[dict]:
    """Every setting sampled and scored, in order (a samples file already in OUT/samples is reused). Rows keep
    their per-sample scores and entropies only with keep_samples (for frontier_report; strip_samples drops
    them)."""
    from edlm.runs.load import load_model

    models = {p: load_model(p, device) for p in {runs.get("mdlm"), runs.get("ar")} if p}
    energies: dict = {}
    for st in settings:  # every setting's checks and memory bound before the first one runs
        req = _request(st, runs, num, batch_size, seed, k_max, precision)
        check_request(req, device, models=models.get(req.ckpt), energies=energies)
    samples_dir = None
    if out is not None:
        samples_dir = Path(out) / "samples"
        samples_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for st in settings:
        row = run_setting(st, runs, models, num=num, batch_size=batch_size, seed=seed, device=device,
                          evaluator=evaluator, samples_dir=samples_dir, quiet=quiet, energies=energies, k_max=k_max,
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
    """Give every diffusion row that is not plain MDLM its gen-NLL minus MDLM's at the same steps, unmasking and
    seed (and token temperature / top-p), with a 95% bootstrap interval over samples (`vs_mdlm`; paired, since both
    come from the same seed's stream)."""
    from edlm.eval.stats import difference_interval, paired_difference_interval

    key = lambda r: (r["steps"], r.get("unmask", "random"), r.get("seed"), *_sharpness(r))  # noqa: E731
    mdlm = {key(r): r for r in rows if r["method"] == "mdlm"}
    for r in rows:
        base = mdlm.get(key(r))
        if r["method"] not in ("mdlm", "ar") and base is not None and r.get("scores") and base.get("scores"):
            a, b = r["scores"], base["scores"]
            if len(a) == len(b) and r.get("seed") is not None:
                keep = [i for i in range(len(a)) if a[i][1] > 0 and b[i][1] > 0]
                r["vs_mdlm"] = {**paired_difference_interval(([a[i][0] for i in keep], [a[i][1] for i in keep]),
                                                             ([b[i][0] for i in keep], [b[i][1] for i in keep])),
                                "paired": True}
            else:
                a = [s for s in a if s[1] > 0]
                b = [s for s in b if s[1] > 0]
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
    varied = [c for c, dflt in (("unmask", "random"), ("temperature", 1.0), ("k_policy", "fixed"),
                                ("min_unmask", 1)) if any(r.get(c, dflt) != dflt for r in rows)]
    if len({r.get("seed") for r in rows}) > 1:
        varied.append("seed")
    head = (f"{'method':<10} {'steps':>5} {'k':>3} {'window':>9} " + "".join(f"{c:>11} " for c in varied)
            + f"{'gen_ppl':>9} {'entropy':>8} {'sec/seq':>8} {'ESS':>5}  {'vs MDLM (nats/token)':<24}")
    lines = [head, "-" * len(head)]
    for r in rows:
        w = "-" if not r.get("window") else f"{r['window'][0]:g}-{r['window'][1]:g}"
        ess = "-" if r.get("mean_ess") is None else f"{r['mean_ess']:.2f}"
        steps = "-" if r["method"] == "ar" else r["steps"]
        vs = r.get("vs_mdlm")
        vs = "" if not vs else f"{vs['diff']:+.3f} [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]"
        extra = "".join(f"{r.get(c)!s:>11} " for c in varied)
        m = r["method"] + ("" if _sharpness(r) == (1.0, 1.0) else
                           f" T={r['token_temperature']:g}" + (f" p={r['top_p']:g}" if r["top_p"] != 1 else ""))
        lines.append(f"{m:<10} {steps:>5} {r['k']:>3} {w:>9} {extra}{r['gen_ppl'] or float('nan'):>9.3f} "
                     f"{r['entropy_nats']:>8.3f} {r['seconds']:>8.4f} {ess:>5}  {vs}")
    return "\n".join(lines)


def _listify(name: str, value, kind=int) -> list:
    """A sweep axis as a list: a single value, a list, or a comma-separated string ("8,16")."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return [v if kind is str else kind(v) for v in value]
    except (TypeError, ValueError):
        raise EdlmError(f"`{name}` {value!r}: give {kind.__name__} values, e.g. a list or '1,2'") from None


def bench(mdlm, ar=None, nce=None, *, methods=None, steps=(8, 16, 32, 64), k=(2, 8), window=None,
          unmask=("random",), energy_temperatures=(1.0,), k_policy=("fixed",), k_max: int = 16, min_unmask=(1,),
          seed=0, num: int = 64, batch_size: int = 64, evaluator: str = "true", out="bench", device="auto",
          quiet: bool | None = None, temperatures=(1.0,), top_p=(1.0,), metrics="genppl",
          mauve_features: str = "smollm2-135m", mauve_bootstrap: int = 50, match_entropy: float | None = None,
          sample_only: bool = False, precision: str = "auto") -> dict:
    """Sample every cell of the sweep, score it with `evaluator`, write OUT/results.json, OUT/samples/*.jsonl and
    the plots; returns what `edlm bench` prints. Each axis takes one value or a list (or "a,b" text):

    mdlm / ar / nce: run folders (the proposal; the AR energy and AR baseline; the NCE energy). methods: a subset
    of mdlm, edlm-ar, edlm-coar, edlm-nce, ar (default: each whose runs are given). steps, k; window: (t_lo, t_hi)
    pairs (default (0, 1)); unmask: registered strategies ("random", "confidence"); energy_temperatures: the
    energy's tau; k_policy: "fixed" and/or "ess" (k then starts at each k, bounded by k_max); min_unmask; seed:
    one seed or several (each a cell; EDLM cells are compared with MDLM at the same seed, paired). evaluator:
    checked against the runs' corpus before anything is sampled; it must not be the energy's own run.

    temperatures: TOKEN temperatures (every draw from p^(1/T); not the energy's), top_p: nucleus thresholds; each
    method at each, and OUT/report.md + OUT/frontier.png compare the frontiers (gen-NLL against entropy) at
    matched entropy (`match_entropy`, default the held-out data's own). metrics: genppl (always, with
    repetition), plus mauve (against held-out test windows; features from `mauve_features`). sample_only: draw
    every cell into OUT/samples and stop; the same call without it scores them, drawing nothing again.
    precision: the networks' precision while sampling (auto, bf16, fp32)."""
    from edlm.api.evaluators import get_evaluator
    from edlm.api.methods import DEFAULT_METHODS, get_method
    from edlm.config.sampling import K_POLICIES
    from edlm.config.unmasking import UNMASKINGS
    from edlm.utils import pick_device, quiet_default
    from edlm.validate import MAX_LOOP, STEPS_WHY, at_least, at_most, finite_in, out_dir
    from edlm.validate import seed as check_seed
    from edlm.validate import temperature as check_temperature

    runs = {"mdlm": str(mdlm) if mdlm else None, "ar": str(ar) if ar else None, "nce": str(nce) if nce else None}
    methods = _listify("methods", methods, str) if methods else [
        m for m in DEFAULT_METHODS if all(runs[r] for r in METHODS[m].runs)]
    for m in methods:
        for r in get_method(m).runs:
            if not runs[r]:
                raise EdlmError(f"method {m} needs `{r}` {r.upper()}_RUN")
    axes = {"steps": _listify("steps", steps), "k": _listify("k", k), "min_unmask": _listify("min_unmask", min_unmask),
            "seed": _listify("seed", seed)}
    for name, values in axes.items():
        for v in values:
            if name == "seed":
                check_seed("`seed`", v)
            else:
                at_least(f"`{name}`", v, 1)
    at_most("`steps`", max(axes["steps"]), MAX_LOOP, STEPS_WHY)
    unmasks, policies = _listify("unmask", unmask, str), _listify("k_policy", k_policy, str)
    taus = _listify("energy_temperatures", energy_temperatures, float)
    for u in unmasks:
        if u not in UNMASKINGS:
            raise EdlmError(f"`unmask` {u!r}: use one of {', '.join(UNMASKINGS)}")
    for p in policies:
        if p not in K_POLICIES:
            raise EdlmError(f"`k_policy` {p!r}: use one of {', '.join(K_POLICIES)}")
    for tau in taus:
        check_temperature("`energy_temperatures`", tau)
    at_least("`k_max`", k_max, 1)
    token_ts, top_ps = _listify("temperatures", temperatures, float), _listify("top_p", top_p, float)
    for tt in token_ts:
        finite_in("`temperatures`", tt, lo=0, lo_open=True)
    for p_ in top_ps:
        finite_in("`top_p`", p_, lo=0, hi=1, lo_open=True)
    from edlm.eval.metrics import parse_metrics

    metric_names = parse_metrics(metrics)
    metric_names = tuple(dict.fromkeys(("genppl",) + metric_names))  # bench always scores gen-PPL and repetition
    at_least("`mauve_bootstrap`", mauve_bootstrap, 0)
    if match_entropy is not None:
        finite_in("`match_entropy`", match_entropy, lo=0, lo_open=True)
    if precision not in ("auto", "bf16", "fp32"):
        raise EdlmError(f"`precision` {precision!r}: use auto, bf16 or fp32")
    at_least("`num`", num, 1)
    at_least("`batch_size`", batch_size, 1)
    out_dir("`out`", out)
    data = _check_runs(runs, methods)
    device = pick_device(device)
    if not sample_only:
        ev = get_evaluator(evaluator, device)  # a bad evaluator fails here, not after the first cell (cached)
        ev.check_rows([{"ids": [], "corpus": data}])  # and one that cannot score this corpus, too
        _not_the_energy(evaluator, runs, methods)
    sweep_metrics = None if sample_only else _sweep_metrics(metric_names, mauve_features, mauve_bootstrap, num,
                                                             data, runs["mdlm"], device)
    windows = [tuple(w) for w in window] if window else [(0.0, 1.0)]
    settings = settings_for(methods, axes["steps"], axes["k"], windows, unmask=unmasks, temperatures=taus,
                            k_policies=policies, min_unmask=axes["min_unmask"], seeds=axes["seed"],
                            token_temperatures=list(dict.fromkeys(token_ts)), top_ps=list(dict.fromkeys(top_ps)))
    outp = Path(out)
    created = not outp.exists()
    try:
        rows = sweep(settings, runs, num=num, batch_size=batch_size, seed=axes["seed"][0], device=device,
                     evaluator=None if sample_only else evaluator, out=outp, quiet=quiet_default(quiet),
                     k_max=k_max, metrics=sweep_metrics, keep_samples=True, precision=precision)
        if sample_only:
            return {"data": data, "out": str(out), "sample_only": True, "device": str(device),
                    "device_name": _device_name(device), "torch": _torch_version(), "rows": rows}
        data_ = data_row(data, num, _length(runs["mdlm"]), evaluator, device, sweep_metrics)
    except BaseException:
        for d in (outp / "samples", outp):  # a failed bench leaves no empty folders behind (files are kept)
            if created and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    meta = {"data": data, "evaluator": evaluator, "device": str(device), "device_name": _device_name(device),
            "torch": _torch_version(), "num": num, "seed": axes["seed"][0], "runs": runs,
            "token_temperatures": token_ts, "top_p": top_ps, "metrics": list(metric_names)}
    report = write_report(outp, meta, rows, data_, match_entropy)
    strip_samples(rows + [data_])
    res = write_results(outp, meta, rows, report)
    print(format_table(rows), file=sys.stderr)
    return {**meta, "out": str(out), "plots": res["plots"], "report": str(outp / "report.md"), "rows": rows}


def _length(mdlm_run) -> int:
    from edlm.runs.folder import read_meta

    return read_meta(mdlm_run).train.seq_len


def _sweep_metrics(metrics, features: str, bootstrap: int, num: int, corpus: str, mdlm_run, device):
    """MAUVE's reference (held-out test windows of the training length) and feature model, checked before any
    sampling; None without the mauve metric."""
    if "mauve" not in metrics:
        return None
    from edlm.api.evaluators import get_evaluator
    from edlm.eval.heldout import heldout_rows
    from edlm.eval.mauve import MauveConfig, require_mauve

    require_mauve()
    get_evaluator(features, device)
    return SweepMetrics(mauve=True, reference=heldout_rows(corpus, num, _length(mdlm_run)), features=features,
                        config=MauveConfig(bootstrap=bootstrap))


def _torch_version() -> str:
    import torch

    return f"{torch.__version__}, {torch.get_num_threads()} threads"


def _not_the_energy(evaluator: str, runs: dict, methods) -> None:
    """An AR run that is an EDLM method's energy cannot judge its samples (it favours them by construction)."""
    if not isinstance(evaluator, str) or not evaluator.startswith("edlm:"):
        return
    judge = Path(evaluator[5:]).resolve()
    for m in methods:
        meth = METHODS[m]
        if meth.energy and runs.get(meth.runs[1]) and Path(runs[meth.runs[1]]).resolve() == judge:
            raise EdlmError(f"evaluator {evaluator} is the energy of {m}: its gen-NLL favours {m} by construction; "
                            "judge with a model trained apart (another AR run, or an outside model such as "
                            "smollm2-135m)")


def _check_runs(runs: dict, methods) -> str:
    """Each run given is of the kind its argument says (an AR run passed as `mdlm` must not be labelled mdlm),
    and the runs share a corpus. -> the corpus name."""
    from edlm.runs.folder import read_meta

    need = {"mdlm": True, **{r: any(r in METHODS[m].runs for m in methods) for r in ("ar", "nce")}}
    data = None
    for flag, path in runs.items():
        if path is None or not need[flag]:
            continue
        meta = read_meta(path)
        if meta.objective != flag:
            raise EdlmError(f"`{flag}` {path} is a {meta.objective!r} run, not a {flag!r} run: pass it as "
                            f"`{meta.objective}` instead")
        data = data or meta.data
    return data


def _device_name(device):
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
