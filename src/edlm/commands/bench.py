"""`edlm bench`: sweep steps / k / window (and token temperature / top-p) for MDLM, EDLM, confidence unmasking and
AR; results.json, report.md (frontiers, matched entropy, MAUVE, repetition) and PNG plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edlm.commands import in_flag_terms
from edlm.commands.sample import parse_window
from edlm.errors import EdlmError
from edlm.validate import MAX_LOOP, STEPS_WHY, at_least, at_most, finite_in, out_dir, seed


def _ints(s):
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: expected comma-separated integers such as 8,16") from None


def _floats(s):
    try:
        return [float(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: expected comma-separated numbers such as 0.8,0.9,1") from None


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=help_ + ". Methods run for every run given: mdlm always; edlm-ar and "
                       "edlm-coar with --ar; edlm-nce with --nce; ar with --ar; confidence, confidence+edlm-ar and "
                       "confidence+edlm-nce when named in --methods. With --temperatures / --top-p every method is "
                       "drawn at every setting and report.md compares their frontiers (gen-NLL against entropy) "
                       "at matched entropy (docs/evaluation.md).")
    p.add_argument("--mdlm", required=True, help="MDLM run folder (the proposal)")
    p.add_argument("--ar", default=None, help="AR run folder (energy for EDLM-AR, and the AR baseline)")
    p.add_argument("--nce", default=None, help="NCE energy run folder")
    p.add_argument("--methods", default=None, help="comma-separated subset of mdlm,edlm-ar,edlm-coar,edlm-nce,ar,"
                   "confidence,confidence+edlm-ar,confidence+edlm-nce")
    p.add_argument("--steps", type=_ints, default=[8, 16, 32, 64], help="comma-separated step counts")
    p.add_argument("--k", type=_ints, default=[2, 8], help="comma-separated EDLM candidate counts")
    p.add_argument("--window", type=parse_window, action="append", default=None, metavar="T_LO,T_HI",
                   help="EDLM window (repeat for several); default 0,1")
    p.add_argument("--temperatures", type=_floats, default=[1.0], metavar="T,...",
                   help="TOKEN temperatures (every draw from p^(1/T); not the energy's temperature): each method at "
                        "each, a frontier per method in report.md and frontier.png")
    p.add_argument("--top-p", type=_floats, default=[1.0], metavar="P,...",
                   help="nucleus thresholds, each method at each (with --temperatures: every pair)")
    p.add_argument("--metrics", default="genppl", metavar="LIST",
                   help="genppl (always: gen-PPL, entropy, repetition), plus mauve: MAUVE of every setting against "
                        "held-out test-split text of the same length (features: --mauve-features)")
    p.add_argument("--mauve-features", default="smollm2-135m", metavar="NAME",
                   help="with --metrics mauve: the model whose hidden states are MAUVE's features")
    p.add_argument("--mauve-bootstrap", type=int, default=50, metavar="N",
                   help="with --metrics mauve: bootstrap replicates of each setting's MAUVE interval (0: none)")
    p.add_argument("--match-entropy", type=float, default=None, metavar="H",
                   help="compare the frontiers at this entropy (nats; default: the held-out data's own)")
    p.add_argument("--sample-only", action="store_true",
                   help="draw every setting's samples into OUT/samples and stop (no evaluator): e.g. on a GPU "
                        "machine; the same command without it later scores them, drawing nothing again")
    p.add_argument("--num", type=int, default=64, help="samples per setting")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--evaluator", default="true", help="sample scorer (see `edlm eval samples --help`)")
    p.add_argument("--out", default="bench", help="output folder (results.json, plots, samples/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="the networks' precision while sampling: auto = bf16 autocast on a GPU, fp32 on the CPU")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args):
    from edlm.api.methods import DEFAULT_METHODS, METHODS, get_method
    from edlm.bench import data_row, format_table, settings_for, strip_samples, sweep, write_report, write_results
    from edlm.utils import pick_device

    given = {"mdlm": args.mdlm, "ar": args.ar, "nce": args.nce}
    methods = args.methods.split(",") if args.methods else [
        m for m in DEFAULT_METHODS if all(given[r] for r in METHODS[m].runs)]
    for m in methods:
        for r in get_method(m).runs:
            if not given[r]:
                raise EdlmError(f"method {m} needs --{r} {r.upper()}_RUN")
    for name, values in (("--steps", args.steps), ("--k", args.k)):
        for v in values:
            at_least(name, v, 1)
    at_most("--steps", max(args.steps), MAX_LOOP, STEPS_WHY)
    at_least("--num", args.num, 1)
    for t in args.temperatures:
        finite_in("--temperatures", t, lo=0, lo_open=True)
    for p_ in args.top_p:
        finite_in("--top-p", p_, lo=0, hi=1, lo_open=True)
    from edlm.eval.metrics import parse_metrics

    try:
        metrics = parse_metrics(args.metrics)
    except EdlmError as e:
        raise in_flag_terms(e, ("metrics",)) from None
    if "repetition" in metrics or "genppl" not in metrics:
        metrics = tuple(dict.fromkeys(("genppl",) + metrics))  # bench always scores gen-PPL and repetition
    at_least("--mauve-bootstrap", args.mauve_bootstrap, 0)
    if args.match_entropy is not None:
        finite_in("--match-entropy", args.match_entropy, lo=0, lo_open=True)
    at_least("--batch-size", args.batch_size, 1)
    seed("--seed", args.seed)
    out_dir("--out", args.out)
    runs = {"mdlm": args.mdlm, "ar": args.ar, "nce": args.nce}
    data = _check_runs(runs, methods)
    windows = args.window or [(0.0, 1.0)]
    device = pick_device(args.device)
    from edlm.api.evaluators import get_evaluator

    evaluator = None if args.sample_only else args.evaluator
    if evaluator is not None:
        get_evaluator(evaluator, device)  # a bad --evaluator fails here, not after the first setting (cached)
    sweep_metrics = None if args.sample_only else _sweep_metrics(metrics, args, data, runs["mdlm"], device)
    settings = settings_for(methods, args.steps, args.k, windows, dict.fromkeys(args.temperatures),
                            dict.fromkeys(args.top_p))
    out = Path(args.out)
    created = not out.exists()
    try:
        rows = sweep(settings, runs, num=args.num, batch_size=args.batch_size, seed=args.seed, device=device,
                     evaluator=evaluator, out=args.out, quiet=args.quiet, metrics=sweep_metrics,
                     keep_samples=True, precision=args.precision)
        if args.sample_only:
            return {"data": data, "out": args.out, "sample_only": True, "device": str(device),
                    "device_name": _device_name(device), "torch": _torch_version(), "rows": rows}
        data_ = data_row(data, args.num, _length(runs["mdlm"]), args.evaluator, device, sweep_metrics)
    except BaseException as e:
        for d in (out / "samples", out):  # a failed bench leaves no empty folders behind (files are kept)
            if created and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if isinstance(e, EdlmError):  # the library names options; the command line names flags
            raise in_flag_terms(e, ("batch_size", "evaluator", "steps", "k", "window", "num"), dash=True) from None
        raise
    meta = {"data": data, "evaluator": args.evaluator, "device": str(device),
            "device_name": _device_name(device), "torch": _torch_version(), "num": args.num, "seed": args.seed,
            "runs": runs, "token_temperatures": args.temperatures, "top_p": args.top_p, "metrics": list(metrics)}
    report = write_report(args.out, meta, rows, data_, args.match_entropy)
    strip_samples(rows + [data_])
    res = write_results(args.out, meta, rows, report)
    print(format_table(rows), file=sys.stderr)
    return {**meta, "out": args.out, "plots": res["plots"], "report": str(Path(args.out) / "report.md"),
            "rows": rows}


def _length(mdlm_run) -> int:
    from edlm.runs.folder import read_meta

    return read_meta(mdlm_run).train.seq_len


def _sweep_metrics(metrics, args, corpus: str, mdlm_run, device):
    """MAUVE's reference (held-out test windows of the training length) and feature model, checked before any
    sampling; None without --metrics mauve."""
    from edlm.bench import SweepMetrics

    if "mauve" not in metrics:
        return None
    from edlm.api.evaluators import get_evaluator
    from edlm.eval.heldout import heldout_rows
    from edlm.eval.mauve import MauveConfig, require_mauve

    require_mauve()
    get_evaluator(args.mauve_features, device)
    return SweepMetrics(mauve=True, reference=heldout_rows(corpus, args.num, _length(mdlm_run)),
                        features=args.mauve_features, config=MauveConfig(bootstrap=args.mauve_bootstrap))


def _check_runs(runs: dict, methods) -> str:
    """Each run given is of the kind its flag says (an AR run passed as --mdlm must not be labelled mdlm),
    and the runs share a corpus. -> the corpus name."""
    from edlm.api.methods import METHODS
    from edlm.runs.folder import read_meta

    need = {"mdlm": True, **{r: any(r in METHODS[m].runs for m in methods) for r in ("ar", "nce")}}
    data = None
    for flag, path in runs.items():
        if path is None or not need[flag]:
            continue
        meta = read_meta(path)
        if meta.objective != flag:
            raise EdlmError(f"--{flag} {path} is a {meta.objective!r} run, not a {flag!r} run: pass it to "
                            f"--{meta.objective} instead")
        data = data or meta.data
    return data


def _torch_version() -> str:
    import torch

    return f"{torch.__version__}, {torch.get_num_threads()} threads"


def _device_name(device):
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
