"""`edlm bench`: sweep steps / k / window / unmasking / energy temperature / k policy / min-unmask / seeds for
MDLM, EDLM and AR (and token temperature / top-p: frontiers at matched entropy, MAUVE, repetition in report.md);
JSON + PNG plots. A thin layer over edlm.bench (the same names, as flags)."""

from __future__ import annotations

import argparse

from edlm.commands import Paths, evaluator_path, in_flag_terms
from edlm.commands.sample import parse_window
from edlm.config.sampling import K_POLICIES
from edlm.config.unmasking import unmask_names
from edlm.errors import EdlmError

OPTIONS = ("mdlm", "ar", "nce", "methods", "steps", "k", "window", "unmask", "energy_temperatures", "k_policy",
           "k_max", "min_unmask", "seed", "num", "batch_size", "evaluator", "out", "device", "quiet", "temperatures",
           "top_p", "metrics", "mauve_features", "mauve_bootstrap", "match_entropy", "sample_only", "precision")


def _list(kind, example):
    def parse(s):
        try:
            return [kind(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r}: expected comma-separated values such as {example}") from None
    return parse


def _names(choices):
    def parse(s):
        out = [v for v in s.split(",") if v.strip()]
        bad = [v for v in out if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]!r}: choose from {', '.join(choices)}")
        return out
    return parse


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=help_ + ". Methods run for every run given: mdlm always; edlm-ar and "
                       "edlm-coar with --ar; edlm-nce with --nce; ar with --ar. Every list flag is one sweep axis; "
                       "each EDLM cell is compared with MDLM at the same steps, unmasking and seed (paired). "
                       "confidence, confidence+edlm-ar and confidence+edlm-nce run when named in --methods. With "
                       "--temperatures / --top-p every method is drawn at every setting and report.md compares "
                       "their frontiers (gen-NLL against entropy) at matched entropy (docs/evaluation.md).")
    p.add_argument("--mdlm", required=True, help="MDLM run folder (the proposal)")
    p.add_argument("--ar", default=None, help="AR run folder (energy for EDLM-AR, and the AR baseline)")
    p.add_argument("--nce", default=None, help="NCE energy run folder")
    p.add_argument("--methods", default=None, help="comma-separated subset of mdlm,edlm-ar,edlm-coar,edlm-nce,ar,"
                   "confidence,confidence+edlm-ar,confidence+edlm-nce")
    p.add_argument("--steps", type=_list(int, "8,16"), default=[8, 16, 32, 64], help="comma-separated step counts")
    p.add_argument("--k", type=_list(int, "2,8"), default=[2, 8], help="comma-separated EDLM candidate counts")
    p.add_argument("--window", type=parse_window, action="append", default=None, metavar="T_LO,T_HI",
                   help="EDLM window (repeat for several); default 0,1")
    p.add_argument("--unmask", type=_names(unmask_names()), default=["random"],
                   help="comma-separated unmasking strategies: " + ", ".join(unmask_names()))
    p.add_argument("--energy-temperatures", type=_list(float, "1,0.5"), default=[1.0], metavar="TAU,...",
                   help="comma-separated temperatures tau of the EDLM weights softmax(-E/tau) (1 = exact; "
                        "`edlm sample --temperature`)")
    p.add_argument("--k-policy", type=_names(K_POLICIES), default=["fixed"],
                   help="comma-separated: fixed (--k on every EDLM step) and/or ess (k starts at --k, then each "
                        "sequence's ESS sets its next k, up to --k-max)")
    p.add_argument("--k-max", type=int, default=16, help="with --k-policy ess: the most candidates a step draws")
    p.add_argument("--min-unmask", type=_list(int, "1,2"), default=[1], metavar="M,...",
                   help="comma-separated: EDLM runs the energy only for sequences that unmask at least M positions "
                        "on a step (random unmasking)")
    p.add_argument("--seed", type=_list(int, "0,1,2"), default=[0],
                   help="comma-separated seeds: each a cell of its own")
    p.add_argument("--temperatures", type=_list(float, "0.8,0.9,1"), default=[1.0], metavar="T,...",
                   help="TOKEN temperatures (every draw from p^(1/T); not the energy's --energy-temperatures): each "
                        "method at each, a frontier per method in report.md and frontier.png")
    p.add_argument("--top-p", type=_list(float, "0.9,0.95,1"), default=[1.0], metavar="P,...",
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
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="the networks' precision while sampling: auto = bf16 autocast on a GPU, fp32 on the CPU")
    p.add_argument("--num", type=int, default=64, help="samples per setting")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--evaluator", default="true", help="sample scorer (see `edlm eval samples --help`); checked "
                   "against the runs' corpus before anything is sampled")
    p.add_argument("--out", default="bench", help="output folder (results.json, plots, samples/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args):
    from edlm.bench import bench

    try:
        return bench(args.mdlm, args.ar, args.nce, methods=args.methods, steps=args.steps, k=args.k,
                     window=args.window, unmask=args.unmask, energy_temperatures=args.energy_temperatures,
                     k_policy=args.k_policy, k_max=args.k_max, min_unmask=args.min_unmask, seed=args.seed,
                     num=args.num, batch_size=args.batch_size, evaluator=args.evaluator, out=args.out,
                     device=args.device, quiet=args.quiet, temperatures=args.temperatures, top_p=args.top_p,
                     metrics=args.metrics, mauve_features=args.mauve_features, mauve_bootstrap=args.mauve_bootstrap,
                     match_entropy=args.match_entropy, sample_only=args.sample_only, precision=args.precision)
    except EdlmError as e:  # the library names options; the command line names flags
        raise in_flag_terms(e, OPTIONS, dash=True) from None


def writes(args) -> Paths:
    return Paths({"--out": args.out}, {"--mdlm": args.mdlm, "--ar": args.ar, "--nce": args.nce,
                                       "--evaluator": evaluator_path(args.evaluator),
                                       "--mauve-features": evaluator_path(args.mauve_features)}, folders=("--out",))
