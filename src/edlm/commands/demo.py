"""`edlm demo`: train tiny MDLM/AR/NCE models and compare MDLM, EDLM-AR, EDLM-NCE and AR sampling."""

from __future__ import annotations

import argparse

from edlm.commands import Paths, evaluator_path
from edlm.data.manifest import corpus_path


def _ints(s):
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: expected comma-separated integers such as 4,8,16") from None


def add_parser(sub, name, help_):
    from edlm.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=help_ + ". About 4 minutes on 2 idle CPU cores; uses the GPU if present. "
                       "Writes OUT/results.json and PNG plots; re-running reuses the trained runs.")
    p.add_argument("--data", default=d.data, help="corpus: a ground-truth language (exact scoring: synthetic, "
                   "markov2, markov3, lexicon, or markov2-shareS with the knob S in [0, 1]) or e.g. wiki-char")
    p.add_argument("--out", default=d.out, help="output folder (runs/, samples/, results.json, *.png)")
    p.add_argument("--preset", default=d.preset, help="model preset for all three models")
    p.add_argument("--steps", type=_ints, default=d.steps, help="comma-separated sampling step counts")
    p.add_argument("--num", type=int, default=d.num, help="samples per setting")
    p.add_argument("--k", type=int, default=d.k, help="EDLM candidates per step")
    p.add_argument("--mdlm-steps", type=int, default=d.mdlm_steps, help="MDLM training steps")
    p.add_argument("--ar-steps", type=int, default=d.ar_steps, help="AR training steps")
    p.add_argument("--nce-steps", type=int, default=d.nce_steps, help="NCE energy training steps")
    p.add_argument("--nce-batch", type=int, default=d.nce_batch, help="NCE energy training batch (0: the preset's)")
    p.add_argument("--nce-lr", type=float, default=d.nce_lr, help="NCE energy learning rate")
    p.add_argument("--nce-negatives", type=int, default=d.nce_negatives, help="NCE negatives per positive")
    p.add_argument("--evaluator", default=None,
                   help="sample scorer (default: 'true' on a ground-truth language, smollm2-135m otherwise)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def run(args):
    from edlm.demo import DemoConfig, run_demo
    from edlm.validate import at_least, finite_in, out_dir

    for v in args.steps:
        at_least("--steps", v, 1)
    for name in ("num", "k", "mdlm_steps", "ar_steps", "nce_steps"):
        at_least("--" + name.replace("_", "-"), getattr(args, name), 1)
    at_least("--seed", args.seed, 0)
    at_least("--nce-batch", args.nce_batch, 0)
    at_least("--nce-negatives", args.nce_negatives, 1)
    finite_in("--nce-lr", args.nce_lr, 0, 1, lo_open=True)
    out_dir("--out", args.out)

    return run_demo(DemoConfig(data=args.data, out=args.out, preset=args.preset, steps=args.steps, num=args.num,
                               k=args.k, mdlm_steps=args.mdlm_steps, ar_steps=args.ar_steps,
                               nce_steps=args.nce_steps, nce_batch=args.nce_batch, nce_lr=args.nce_lr,
                               nce_negatives=args.nce_negatives, evaluator=args.evaluator,
                               device=args.device,
                               seed=args.seed))


def writes(args) -> Paths:
    return Paths({"--out": args.out}, {"--evaluator": evaluator_path(args.evaluator), f"corpus {args.data}":
                                       corpus_path(args.data)}, folders=("--out",))
