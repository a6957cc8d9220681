"""The quality/speed sweep behind the paper's Table 3 and Figure 1, and its plots: `edlm bench` and edlm.bench.

For each method (mdlm, edlm-ar, edlm-coar, edlm-nce, ar) and setting (steps, k, window, unmask strategy, energy
temperature, k policy, min-unmask, seed) it samples, scores the samples with one evaluator, and records gen-NLL
with its 95% interval, entropy and seconds per sequence; every EDLM cell gets its difference from MDLM at the
same steps, unmasking and seed (paired: the same seed's stream) with an interval.

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
from dataclasses import dataclass
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


def settings_for(methods, steps, ks, windows, *, unmask=("random",), temperatures=(1.0,), k_policies=("fixed",),
                 min_unmask=(1,), seeds=(None,)) -> list[Setting]:
    """Every combination that applies: AR once per seed; MDLM per steps, unmask and seed; EDLM also per k,
    window, energy temperature, k policy and min-unmask (min-unmask > 1 only with strategies that honour it)."""
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
    return out


def cell_name(st: Setting) -> str:
    """The samples file of a cell (the settings at their defaults add nothing to the name)."""
    name = f"{st.method}_s{st.steps}_k{st.k}" + (f"_w{st.window[0]:g}-{st.window[1]:g}" if st.window else "")
    extra = [st.unmask if st.unmask != "random" else "", f"tau{st.temperature:g}" if st.temperature != 1 else "",
             "ess" if st.k_policy != "fixed" else "", f"m{st.min_unmask}" if st.min_unmask != 1 else "",
             f"seed{st.seed}" if st.seed is not None else ""]
    return name + "".join(f"_{e}" for e in extra if e)


def _request(st: Setting, runs: dict, num: int, batch_size: int, seed: int, k_max: int = 16) -> GenerateRequest:
    method = METHODS[st.method]
    energy = f"{method.energy}:{runs[method.runs[1]]}" if method.energy else None
    policy = None
    if st.k_policy != "fixed":
        from edlm.config.sampling import KPolicy

        policy = KPolicy(k_max=max(k_max, st.k))
    return GenerateRequest(ckpt=runs[method.generator], num=num, steps=max(st.steps, 1), batch_size=batch_size,
                           seed=seed if st.seed is None else st.seed, energy=energy, k=st.k, window=st.window,
                           unmask=st.unmask, temperature=st.temperature, k_policy=policy, min_unmask=st.min_unmask)


def run_setting(st: Setting, runs: dict, models: dict, *, num, batch_size, seed, device, evaluator,
                samples_dir: Path | None, quiet=False, energies: dict | None = None, k_max: int = 16) -> dict:
    from edlm.api.evaluators import evaluate_rows

    req = _request(st, runs, num, batch_size, seed, k_max)
    rows, summ = generate(req, device, models=models.get(req.ckpt), energies=energies, quiet=quiet)
    if samples_dir is not None:
        atomic_write_bytes(samples_dir / f"{cell_name(st)}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    ev = evaluate_rows(rows, evaluator, device=device, keep_scores=True)
    return {"method": st.method, "steps": st.steps, "k": st.k, "window": list(st.window) if st.window else None,
            "unmask": st.unmask, "temperature": st.temperature, "k_policy": st.k_policy,
            "min_unmask": st.min_unmask, "seed": req.seed,
            "gen_ppl": ev["gen_ppl"], "gen_nll": ev["gen_nll"], "gen_nll_ci95": ev["gen_nll_ci95"],
            "scores": ev["scores"], "entropy_nats": ev["entropy_nats"],
            "entropy_bits": ev["entropy_bits"], "distinct_2": ev.get("distinct_2"),
            "seconds": summ["seconds_per_sample"], "mean_ess": summ["mean_ess"], "mean_k": summ.get("mean_k"),
            "num": summ["num"]}


def sweep(settings, runs: dict, *, num=64, batch_size=64, seed=0, device="cpu", evaluator="true",
          out: Path | None = None, quiet=False, on_row=None, k_max: int = 16) -> list[dict]:
    from edlm.runs.load import load_model

    models = {p: load_model(p, device) for p in {runs.get("mdlm"), runs.get("ar")} if p}
    energies: dict = {}
    for st in settings:  # every setting's checks and memory bound before the first one runs
        req = _request(st, runs, num, batch_size, seed, k_max)
        check_request(req, device, models=models.get(req.ckpt), energies=energies)
    samples_dir = None
    if out is not None:
        samples_dir = Path(out) / "samples"
        samples_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for st in settings:
        row = run_setting(st, runs, models, num=num, batch_size=batch_size, seed=seed, device=device,
                          evaluator=evaluator, samples_dir=samples_dir, quiet=quiet, energies=energies, k_max=k_max)
        rows.append(row)
        if on_row:
            on_row(row)
    compare_to_mdlm(rows)
    return rows


def compare_to_mdlm(rows: list[dict]) -> None:
    """Give every diffusion row that is not plain MDLM its gen-NLL minus MDLM's at the same steps, unmasking and
    seed, with a 95% bootstrap interval over samples (`vs_mdlm`; paired, since both come from the same seed's
    stream); then drop the per-sample scores the intervals need."""
    from edlm.eval.stats import difference_interval, paired_difference_interval

    key = lambda r: (r["steps"], r.get("unmask", "random"), r.get("seed"))  # noqa: E731
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
        lines.append(f"{r['method']:<10} {steps:>5} {r['k']:>3} {w:>9} {extra}{r['gen_ppl'] or float('nan'):>9.3f} "
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
          quiet: bool | None = None) -> dict:
    """Sample every cell of the sweep, score it with `evaluator`, write OUT/results.json, OUT/samples/*.jsonl and
    the plots; returns what `edlm bench` prints. Each axis takes one value or a list (or "a,b" text):

    mdlm / ar / nce: run folders (the proposal; the AR energy and AR baseline; the NCE energy). methods: a subset
    of mdlm, edlm-ar, edlm-coar, edlm-nce, ar (default: each whose runs are given). steps, k; window: (t_lo, t_hi)
    pairs (default (0, 1)); unmask: registered strategies ("random", "confidence"); energy_temperatures: the
    energy's tau; k_policy: "fixed" and/or "ess" (k then starts at each k, bounded by k_max); min_unmask; seed:
    one seed or several (each a cell; EDLM cells are compared with MDLM at the same seed, paired). evaluator:
    checked against the runs' corpus before anything is sampled; it must not be the energy's own run."""
    from edlm.api.evaluators import get_evaluator
    from edlm.api.methods import DEFAULT_METHODS, get_method
    from edlm.config.sampling import K_POLICIES
    from edlm.config.unmasking import UNMASKINGS
    from edlm.utils import pick_device, quiet_default
    from edlm.validate import MAX_LOOP, STEPS_WHY, at_least, at_most, out_dir
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
    at_least("`num`", num, 1)
    at_least("`batch_size`", batch_size, 1)
    out_dir("`out`", out)
    data = _check_runs(runs, methods)
    device = pick_device(device)
    ev = get_evaluator(evaluator, device)  # a bad evaluator fails here, not after the first cell (cached)
    ev.check_rows([{"ids": [], "corpus": data}])  # and one that cannot score this corpus, too
    _not_the_energy(evaluator, runs, methods)
    windows = [tuple(w) for w in window] if window else [(0.0, 1.0)]
    settings = settings_for(methods, axes["steps"], axes["k"], windows, unmask=unmasks, temperatures=taus,
                            k_policies=policies, min_unmask=axes["min_unmask"], seeds=axes["seed"])
    outp = Path(out)
    created = not outp.exists()
    try:
        rows = sweep(settings, runs, num=num, batch_size=batch_size, seed=axes["seed"][0], device=device,
                     evaluator=evaluator, out=outp, quiet=quiet_default(quiet), k_max=k_max)
    except BaseException:
        for d in (outp / "samples", outp):  # a failed bench leaves no empty folders behind (files are kept)
            if created and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    meta = {"data": data, "evaluator": evaluator, "device": str(device), "device_name": _device_name(device),
            "runs": runs}
    res = write_results(outp, meta, rows)
    print(format_table(rows), file=sys.stderr)
    return {**meta, "out": str(out), "plots": res["plots"], "rows": rows}


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
