"""`edlm eval nelbo` (likelihood bounds on a split) and `edlm eval samples` (sample quality)."""

from __future__ import annotations

import argparse
import math

from edlm.errors import EdlmError
from edlm.utils import pick_device, progress
from edlm.validate import at_least, existing_path


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    s = p.add_subparsers(dest="eval_what", metavar="WHAT", required=True)
    n = s.add_parser("nelbo", help="per-token NLL bound, perplexity bound and BPC on a split",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    n.add_argument("--ckpt", required=True, help="MDLM or AR run folder")
    n.add_argument("--split", default="test", choices=["train", "valid", "test"])
    n.add_argument("--t-samples", type=int, default=1, help="Monte-Carlo t draws per sequence (MDLM/EDLM)")
    n.add_argument("--energy", default=None, metavar="KIND:RUN",
                   help="EDLM bound: coar:AR_RUN (exact), ar:AR_RUN or nce:NCE_RUN (log Z estimated)")
    n.add_argument("--logz-samples", type=int, default=8, help="proposal draws n for the log Z estimate")
    n.add_argument("--max-blocks", type=int, default=None, help="evaluate at most this many sequences")
    n.add_argument("--batch-size", type=int, default=32)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--device", default="auto")
    n.add_argument("--quiet", action="store_true")
    n.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
    try:
        from edlm.eval.genppl import add_samples_parser
    except ImportError:
        add_samples_parser = None
    if add_samples_parser is not None:
        sp = add_samples_parser(s)
        sp.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
    return p


def run(args):
    at_least("--batch-size", args.batch_size, 1)
    if args.eval_what == "samples":
        from edlm.eval.genppl import samples_command

        at_least("--max-tokens", getattr(args, "max_tokens", None), 1, optional=True)
        existing_path("--samples", args.samples)
        return samples_command(args)
    at_least("--t-samples", args.t_samples, 1)
    at_least("--max-blocks", args.max_blocks, 1, optional=True)
    at_least("--seed", args.seed, 0)
    out = nelbo_command(args)
    if not math.isfinite(out["nll"]):  # a finite checkpoint can still overflow: never report NaN as a result
        raise EdlmError(f"the NLL bound of {args.ckpt} came out {out['nll']} (the model's outputs overflow): "
                        "this checkpoint cannot be evaluated; use an earlier one or retrain with a lower --lr")
    return out


def nelbo_command(args):
    from edlm.data import corpora
    from edlm.data.loader import iter_eval_blocks
    from edlm.eval.likelihood import evaluate_split
    from edlm.runs import load_model

    if args.logz_samples < 2:
        raise EdlmError("--logz-samples must be >= 2 (the upper bound needs leave-one-out estimates)")
    device = pick_device(args.device)
    model, meta = load_model(args.ckpt, device, expect="mdlm|ar")
    energy = kind = None
    name = meta["objective"]
    if args.energy:
        if meta["objective"] != "mdlm":
            raise EdlmError("--energy needs an MDLM --ckpt (the proposal)")
        from edlm.energy.factory import build_energy
        from edlm.sampling.loop import model_denoiser

        energy, name = build_energy(args.energy, model_denoiser(model, meta["mask_id"]), meta, device)
        kind = args.energy.split(":", 1)[0]
    tokens = corpora.load_split(meta["data"], args.split)
    L = meta["train"]["seq_len"]
    n_blocks = len(tokens) // L if args.max_blocks is None else min(args.max_blocks, len(tokens) // L)
    bar = progress(total=n_blocks, desc=f"eval {name}", unit="seq", disable=args.quiet or None)
    res = evaluate_split(model, meta, iter_eval_blocks(tokens, L, args.batch_size, max_blocks=n_blocks),
                         t_samples=args.t_samples, seed=args.seed, energy=energy, energy_kind=kind,
                         logz_samples=args.logz_samples, device=device, bar=bar)
    bar.close()
    ntok = res["tokens"]
    char = meta.get("tokenizer") == "char"
    out = {"model": name, "split": args.split, "tokens": ntok, "ckpt": str(args.ckpt), "data": meta["data"]}
    sums = res["sums"]
    if "nll" in sums:
        out["nll"] = sums["nll"] / ntok
        out["bound"] = "exact" if name == "ar" else ("upper (NELBO)" if kind in (None, "coar") else None)
    else:
        out["nll_lower"], out["nll_upper"] = sums["nll_lower"] / ntok, sums["nll_upper"] / ntok
        out["nll"] = out["nll_upper"]
        out["bound"] = "nll = nll_upper (asymptotic upper bound); nll_lower uses E[T_n] <= log Z (optimistic)"
        out["logz_samples"] = args.logz_samples
        out["bound_gap"] = out["nll_upper"] - out["nll_lower"]
        if out["bound_gap"] > 0.05:
            # A wide bracket means the n proposal draws did not cover the energy's mass: neither end is a
            # usable estimate (the upper end is only asymptotically an upper bound).
            out["warning"] = (f"log Z bracket is {out['bound_gap']:.3f} nats/token wide at n={args.logz_samples}: "
                              "the estimate is unreliable; raise --logz-samples or use coar:AR_RUN (exact)")
    out["ppl"] = math.exp(out["nll"])
    out["bpc"] = out["nll"] / math.log(2) if char else None
    out["t_samples"] = args.t_samples
    return out
