"""`edlm convert`: turn a public MDLM checkpoint (kuleshov-group/mdlm format) into an edlm run folder."""

from __future__ import annotations

import argparse

from edlm.commands import Paths, in_flag_terms
from edlm.errors import EdlmError

# convert()'s arguments and the flags that give them
FLAGS = {"fmt": "--from", "src": "--src", "out": "--out", "data": "--data", "seq_len": "--seq-len",
         "n_heads": "--n-heads", "bos_id": "--bos-id"}


def add_parser(sub, name, help_):
    p = sub.add_parser(
        name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=help_ + ". mdlm-hf: the DiT of the kuleshov-group/mdlm-owt hub repository (folder with "
        "config.json and model.safetensors or pytorch_model.bin); mdlm-ar-lightning: the AR baseline's "
        "Lightning .ckpt (EMA weights kept as the run's EMA). Any missing, unexpected or mis-shaped tensor "
        "is an error naming the keys. See docs/convert.md.")
    p.add_argument("--from", dest="fmt", required=True, choices=["mdlm-hf", "mdlm-ar-lightning"],
                   help="source format")
    p.add_argument("--src", required=True,
                   help="hub folder or weights file (mdlm-hf), .ckpt file (mdlm-ar-lightning)")
    p.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    p.add_argument("--data", default="prose-bpe",
                   help="corpus the run names (tokenizer for decoding, splits for `edlm eval`); must "
                        "share the checkpoint's vocabulary")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence (default: block length - 1 = 1023, since slot 0 of MDLM's "
                        "blocks is the BOS)")
    p.add_argument("--n-heads", type=int, default=None,
                   help="attention heads when the source does not say (default: hidden size / 64, as MDLM)")
    p.add_argument("--bos-id", type=int, default=None,
                   help="the token MDLM's data put first in every block (default: GPT-2 <|endoftext|> 50256)")
    return p


def run(args):
    from edlm.runs.convert import convert
    from edlm.validate import at_least, existing_path, out_dir

    at_least("--seq-len", args.seq_len, 1, optional=True)
    at_least("--n-heads", args.n_heads, 1, optional=True)
    at_least("--bos-id", args.bos_id, 0, optional=True)
    existing_path("--src", args.src)
    out_dir("--out", args.out)

    try:
        return convert(args.fmt, args.src, args.out, data=args.data, seq_len=args.seq_len,
                       n_heads=args.n_heads, bos_id=args.bos_id)
    except EdlmError as e:  # the library names convert()'s arguments; here they are flags
        raise in_flag_terms(e, FLAGS) from None


def writes(args) -> Paths:
    return Paths({"--out": args.out}, {"--src": args.src}, folders=("--out",))
