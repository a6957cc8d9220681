"""`edlm eval nelbo` (labelled likelihoods on a split: bounds, exact, estimates) and `edlm eval samples`."""

from __future__ import annotations

import argparse
import math

from edlm.commands import (
    Paths,
    add_accept_data_change,
    energy_run,
    evaluator_path,
    in_flag_terms,
)
from edlm.commands.sample import parse_window
from edlm.data.manifest import corpus_path
from edlm.errors import EdlmError
from edlm.utils import pick_device
from edlm.validate import (
    BOUND_STEPS_WHY,
    MAX_LOOP,
    PASSES_WHY,
    at_least,
    at_most,
    existing_path,
    finite_in,
    seed,
    temperature,
)

NELBO_OPTIONS = ("ckpt", "split", "t_samples", "steps", "energy", "k", "window", "temperature", "min_unmask",
                 "bound_draws", "logz_samples", "t_eps", "max_blocks", "batch_size", "seed", "device",
                 "accept_data_change")


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    s = p.add_subparsers(dest="eval_what", metavar="WHAT", required=True)
    n = s.add_parser("nelbo", help="likelihood on a split: bounds (MDLM), exact (AR), EDLM bound and estimate",
                     description="Per-token NLL, perplexity and BPC on a split, each labelled with what it is "
                     "(docs/likelihood.md). MDLM run: the continuous-time NELBO (an upper bound); with --steps T "
                     "also the NELBO of the T-step sampler. AR run: the exact NLL. With --energy: the paper's "
                     "EDLM likelihood (an ESTIMATE, not a bound), and with --steps T the NELBO of the T-step "
                     "EDLM sampler with that energy, --k, --window, --temperature and --min-unmask (an upper "
                     "bound on that sampler's NLL).",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    n.add_argument("--ckpt", required=True, help="MDLM or AR run folder")
    n.add_argument("--split", default="test", choices=["train", "valid", "test"])
    n.add_argument("--t-samples", type=int, default=1, help="Monte-Carlo t draws per sequence (MDLM/EDLM)")
    n.add_argument("--steps", type=int, default=None, metavar="T",
                   help="also the T-step bounds: of the T-step MDLM sampler and, with --energy, of the EDLM one")
    n.add_argument("--energy", default=None, metavar="KIND:RUN",
                   help="EDLM: ar:AR_RUN, coar:AR_RUN or nce:NCE_RUN (estimate; with --steps also a bound)")
    n.add_argument("--k", type=int, default=4, help="EDLM sampler's candidates per step (for the --steps bound; "
                   "the default is `edlm sample`'s)")
    n.add_argument("--window", type=parse_window, default=(0.0, 1.0), metavar="T_LO,T_HI",
                   help="EDLM sampler's window (for the --steps bound)")
    n.add_argument("--temperature", type=float, default=1.0,
                   help="EDLM sampler's energy temperature tau (--steps bound)")
    n.add_argument("--min-unmask", type=int, default=1, metavar="M",
                   help="EDLM sampler's --min-unmask (--steps bound): the energy only where a step unmasks at least "
                        "M positions of a sequence, as `edlm sample --min-unmask M` samples")
    n.add_argument("--bound-draws", type=int, default=8, metavar="R",
                   help="EDLM --steps bound: average its correction over R draws (any R is a bound; larger R "
                   "is tighter and costs R x k energy forwards per sequence)")
    n.add_argument("--logz-samples", type=int, default=8, help="proposal draws n for the estimate's log Z")
    n.add_argument("--t-eps", type=float, default=None,
                   help="smallest t of the continuous integral (default: the run's own train.t_eps)")
    n.add_argument("--max-blocks", type=int, default=None, help="evaluate at most this many sequences")
    n.add_argument("--batch-size", type=int, default=32)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--device", default="auto")
    n.add_argument("--quiet", action="store_true")
    n.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
    sp = add_samples_parser(s)
    sp.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
    for q in (n, sp):
        add_accept_data_change(q)
    return p


def add_samples_parser(subparsers):
    """`edlm eval samples` (eval/genppl.py's evaluate_rows behind flags); lives here: argparse only in commands/."""
    from edlm.eval import scoring
    from edlm.eval.evaluators import BUILTIN_HELP

    p = subparsers.add_parser(
        "samples",
        help="generative perplexity, entropy, distinct-n, repetition and MAUVE of a samples file",
        description="Score a samples JSONL file (from `edlm sample`) under an evaluator model and report "
        "generative perplexity (token-weighted), mean unigram entropy per sample (nats, bits), "
        "distinct-1..4 and time per sample; with --metrics also repetition (rep-n, repeated n-grams) and MAUVE "
        "against held-out text. Evaluators: " + BUILTIN_HELP + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--samples", required=True, metavar="FILE.jsonl", help="rows written by `edlm sample --out`"
    )
    p.add_argument(
        "--evaluator",
        default=None,
        metavar="NAME",
        help="true | smollm2-135m | gemma3-270m | edlm:RUN_DIR | gguf:FILE | HF name or folder (needed by the "
        "genppl metric)",
    )
    p.add_argument(
        "--metrics",
        default="genppl",
        metavar="LIST",
        help="comma-separated: genppl (generative perplexity, entropy, distinct-n, speed), repetition (rep-n within "
        "samples, repeated n-grams across the set), mauve (MAUVE against held-out text of the same length from the "
        "samples' corpus, or --reference; docs/evaluation.md). Entropy is always reported",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="FILE",
        help="mauve: the reference texts instead of held-out windows of the corpus: a samples-style .jsonl or a "
        "text file, one text a line",
    )
    p.add_argument("--mauve-features", default="smollm2-135m", metavar="NAME",
                   help="mauve: the model whose hidden states are the features (a text evaluator or edlm:AR_RUN)")
    p.add_argument("--mauve-layer", type=int, default=-1, help="mauve: hidden state to use (-1: the last layer)")
    p.add_argument("--mauve-max-tokens", type=int, default=None,
                   help="mauve: feature-model tokens per text (default: its context)")
    p.add_argument("--mauve-buckets", type=int, default=None,
                   help="mauve: k-means clusters (default: samples / 10, MAUVE's own)")
    p.add_argument("--mauve-bootstrap", type=int, default=50,
                   help="mauve: bootstrap replicates over samples for mauve_ci95 (0: none)")
    p.add_argument("--mauve-seeds", type=int, default=5, help="mauve: k-means seeds for the mauve_seeds spread")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="score at most this many tokens per sample (evaluator tokens)",
    )
    p.add_argument(
        "--eos",
        choices=scoring.EOS_MODES,
        default="mdlm",
        help="mdlm (default): as MDLM's gen-PPL does, score every document of the sample and only the first "
        "EOS (later EOS tokens are context, never scored); right for models trained on blocks of a document "
        "stream, whose text after an EOS is the next document. first: score each sample up to and including "
        "its first EOS, as one document (the evaluator "
        "predicts its end; what the sampler wrote after it is not scored). all: every "
        "token, every EOS included. Samples of corpora without an EOS (char, synthetic) are scored whole in "
        "every mode",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        metavar="N",
        help="a sample longer than the evaluator's context is scored in sliding windows of the context that "
        "advance N tokens: every token is predicted once, each with at least context - N tokens before it "
        "(None: half the context; 1 <= N < context)",
    )
    p.add_argument("--allow-circular", action="store_true",
                   help="score samples even when their EDLM energy was this evaluator's model (refused by default: "
                        "a model judging the candidates it picked itself measures the selection, not the text)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args):
    at_least("--batch-size", args.batch_size, 1)
    if args.eval_what == "samples":
        at_least("--max-tokens", getattr(args, "max_tokens", None), 1, optional=True)
        existing_path("--samples", args.samples)
        try:
            return samples_command(args)
        except EdlmError as e:  # the library names evaluate_rows' options; here they are flags
            raise in_flag_terms(e, ("batch_size", "max_tokens", "eos", "stride", "evaluator", "metrics", "mauve_layer",
                                    "mauve_buckets", "mauve_max_tokens", "mauve_bootstrap", "mauve_seeds",
                                    "accept_data_change"),
                                dash=True) from None
    at_least("--t-samples", args.t_samples, 1)
    at_least("--max-blocks", args.max_blocks, 1, optional=True)
    seed("--seed", args.seed)
    at_least("--steps", args.steps, 1, optional=True)
    for flag, value in (("--steps", args.steps), ("--t-samples", args.t_samples), ("--bound-draws", args.bound_draws)):
        at_most(flag, value, MAX_LOOP, BOUND_STEPS_WHY if flag == "--steps" else PASSES_WHY)
    at_least("--k", args.k, 1)
    at_least("--bound-draws", args.bound_draws, 1)
    at_least("--min-unmask", args.min_unmask, 1)
    if args.logz_samples < 2:
        raise EdlmError("--logz-samples must be >= 2 (the estimate's upper end needs leave-one-out terms)")
    temperature("--temperature", args.temperature)
    if args.t_eps is not None:
        finite_in("--t-eps", args.t_eps, 0.0, 1.0, lo_open=True, hi_open=True)
    try:
        out = nelbo_command(args)
    except EdlmError as e:  # Run.nelbo names its arguments; here they are flags
        raise in_flag_terms(e, NELBO_OPTIONS, dash=True) from None
    for name, entry in out["results"].items():  # a finite checkpoint can still overflow: never report NaN
        if entry["nll"] is not None and not math.isfinite(entry["nll"]):
            raise EdlmError(f"the {name} NLL of {args.ckpt} came out {entry['nll']} (the outputs overflow): "
                            "this checkpoint cannot be evaluated; use an earlier one or retrain with a lower --lr")
    return out


def nelbo_command(args):
    """A thin layer over edlm.Run.nelbo (its flags are checked in run(), before any work); warnings to stderr."""
    import sys

    from edlm.api import load

    run_ = load(args.ckpt, pick_device(args.device), expect="mdlm|ar", accept_data_change=args.accept_data_change)
    if args.energy and run_.meta.objective != "mdlm":
        raise EdlmError("--energy needs an MDLM --ckpt (the proposal)")
    out = run_.nelbo(split=args.split, steps=args.steps, energy=args.energy, k=args.k, window=args.window,
                     temperature=args.temperature, min_unmask=args.min_unmask, t_samples=args.t_samples,
                     bound_draws=args.bound_draws,
                     logz_samples=args.logz_samples, t_eps=args.t_eps, max_blocks=args.max_blocks,
                     batch_size=args.batch_size, seed=args.seed, quiet=args.quiet)
    for w in out["warnings"]:
        print(f"edlm eval nelbo: warning: {in_flag_terms(EdlmError(w), NELBO_OPTIONS, dash=True)}", file=sys.stderr)
    return out


def samples_command(args) -> dict:
    """`edlm eval samples`: read the samples file and score it (edlm.api.evaluators.evaluate_samples)."""
    from edlm.api.evaluators import evaluate_samples
    from edlm.eval.genppl import read_samples
    from edlm.eval.mauve import MauveConfig
    from edlm.eval.metrics import parse_metrics, read_reference

    metrics = parse_metrics(args.metrics)
    if "genppl" in metrics and args.evaluator is None:
        raise EdlmError("--metrics genppl needs --evaluator NAME (e.g. smollm2-135m, or true on an exact language)")
    if args.reference is not None and "mauve" not in metrics:
        raise EdlmError("--reference is MAUVE's reference text: add mauve to --metrics")
    for name in ("mauve_max_tokens", "mauve_buckets"):
        at_least("--" + name.replace("_", "-"), getattr(args, name), 1, optional=True)
    at_least("--mauve-bootstrap", args.mauve_bootstrap, 0)
    at_least("--mauve-seeds", args.mauve_seeds, 1)
    cfg = MauveConfig(layer=args.mauve_layer, max_tokens=args.mauve_max_tokens, buckets=args.mauve_buckets,
                      bootstrap=args.mauve_bootstrap, seeds=args.mauve_seeds)
    reference = None
    if args.reference is not None:
        existing_path("--reference", args.reference)
        reference = read_reference(args.reference)
    out = evaluate_samples(read_samples(args.samples), metrics=metrics, evaluator=args.evaluator,
                           reference=reference, reference_name=args.reference, mauve_features=args.mauve_features,
                           mauve=cfg, device=args.device, batch_size=args.batch_size, max_tokens=args.max_tokens,
                           eos=args.eos, stride=args.stride, show_progress=not args.quiet,
                           allow_circular=args.allow_circular,
                           accept_data_change=getattr(args, "accept_data_change", False))
    out["samples"] = str(args.samples)
    return out


def writes(args) -> Paths:
    if args.eval_what == "samples":
        return Paths(reads={"--samples": args.samples, "--evaluator": evaluator_path(args.evaluator),
                            "--reference": args.reference, "--mauve-features": evaluator_path(args.mauve_features)})
    return Paths(reads={"--ckpt": args.ckpt, "--energy": energy_run(args.energy),
                        "the run's corpus": _corpus_of(args.ckpt)})


def _corpus_of(run):
    """The corpus folder a run was trained on (None if its run.json cannot be read: loading says why)."""
    from edlm.runs.folder import read_run

    try:
        return corpus_path(read_run(run).get("data"))
    except (EdlmError, OSError):
        return None
