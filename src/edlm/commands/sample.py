"""`edlm sample`: MDLM ancestral sampling, EDLM with --energy, or AR sampling, to a JSONL file."""

from __future__ import annotations

import argparse
import json

from edlm.errors import EdlmError
from edlm.utils import atomic_write_bytes, pick_device


def parse_window(s: str):
    if s.lower() in ("none", "off", ""):
        return None
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window {s!r}: expected T_LO,T_HI such as 0.8,1 (or none)") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"--window {s!r}: need 0 <= T_LO <= T_HI <= 1")
    return (lo, hi)


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=help_ + ". Rows: ids, text, seconds, method, steps, k, window.")
    p.add_argument("--ckpt", required=True, help="run folder of an MDLM or AR model")
    p.add_argument("--out", required=True, help="JSONL file to write (one sample per line)")
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--steps", type=int, default=64, help="denoising steps (MDLM/EDLM)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences generated together")
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the training length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy", default=None, metavar="KIND:RUN",
                   help="EDLM: ar:AR_RUN (full AR joint), coar:AR_RUN (carry-over) or nce:NCE_RUN")
    p.add_argument("--k", type=int, default=4, help="EDLM candidates per step")
    p.add_argument("--window", type=parse_window, default=(0.0, 1.0), metavar="T_LO,T_HI",
                   help="EDLM on steps whose t is in [T_LO, T_HI]; 'none' = plain MDLM")
    p.add_argument("--temperature", type=float, default=1.0, help="EDLM weights softmax(-E/tau); 1 = exact")
    p.add_argument("--unmask", default="random", choices=("random", "confidence"),
                   help="which positions a step unmasks: random (MDLM) or confidence (the schedule's expected "
                        "count, most confident draws first, as LLaDA; with --energy: EDLM on top of it)")
    p.add_argument("--prefix", default=None, help="text to keep fixed at the start of every sample")
    p.add_argument("--no-cache", action="store_true", help="recompute the denoiser even when x_t did not change")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="network precision: auto = bf16 autocast on a GPU, fp32 on the CPU (draws are float64)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser trunk (CUDA graphs on a GPU): faster after a one-off compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args):
    from edlm.data.tokenizers import tokenizer_for
    from edlm.runs import load_model
    from edlm.sampling.generate import GenerateRequest, generate

    if args.num < 1 or args.steps < 1 or args.k < 1 or args.batch_size < 1:
        raise EdlmError("--num, --steps, --k and --batch-size must be positive")
    if args.temperature <= 0:
        raise EdlmError("--temperature must be > 0")
    device = pick_device(args.device)
    models = load_model(args.ckpt, device)
    prefix = tokenizer_for(models[1]["data"]).encode(args.prefix) if args.prefix else None
    req = GenerateRequest(ckpt=args.ckpt, num=args.num, steps=args.steps, batch_size=args.batch_size,
                          length=args.length, seed=args.seed, energy=args.energy, k=args.k, window=args.window,
                          temperature=args.temperature, prefix=prefix, cache=not args.no_cache,
                          precision=args.precision, compile=args.compile, unmask=args.unmask)
    rows, summary = generate(req, device, models=models, quiet=args.quiet)
    atomic_write_bytes(args.out, "".join(json.dumps(r) + "\n" for r in rows).encode())
    summary["out"] = str(args.out)
    return summary
