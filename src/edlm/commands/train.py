"""`edlm train`: options are derived from the TrainConfig and TransformerConfig dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from edlm.commands import Paths, add_accept_data_change, in_flag_terms
from edlm.config.model import TransformerConfig
from edlm.config.train import RESUME_OVERRIDABLE, TrainConfig
from edlm.data.manifest import corpus_path
from edlm.errors import EdlmError
from edlm.presets import PRESETS
from edlm.runs.metrics_files import LOG_SINKS

MODEL_FIELDS = ("n_layers", "d_model", "n_heads", "cond_dim", "mlp_ratio", "max_len", "dropout",
                "attn_dropout", "time_conditioning")
MODEL_HELP = {"n_layers": "transformer blocks", "d_model": "hidden size", "n_heads": "attention heads",
              "cond_dim": "size of the time-conditioning vector (adaLN)", "mlp_ratio": "MLP width / hidden size",
              "max_len": "longest sequence the model accepts (rotary tables)",
              "dropout": "dropout on each block's two residual branches, training only (MDLM: 0.1)",
              "attn_dropout": "dropout on the attention probabilities, training only (MDLM: 0)",
              "time_conditioning": "condition the denoiser on t (MDLM's default: no)"}
OPTIONS = ({f.name for f in dataclasses.fields(TrainConfig)} | set(MODEL_FIELDS)
           | {"out", "resume", "overwrite", "preset", "log", "quiet", "accept_data_change"})
"""the option names a library error may mention (as `name`), each a flag of `edlm train`"""


def _add_fields(g, cls, names=None, helps=None):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        typ = hints[f.name]
        text = (helps or {}).get(f.name) or f.metadata.get("help", f.name)
        kw = {"default": None, "help": text + " (preset default if not given)"}
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is tuple:
            kw.update(type=float, nargs=2, metavar=("B1", "B2"))
        else:
            kw["type"] = {int: int, float: float}.get(typ, str)
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
        g.add_argument("--" + f.name, **kw)


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, description=help_ + ". Options not given come from --preset.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       epilog="On --resume the run's saved options win over the preset. These may be given to "
                       "change them from the checkpoint on (they are recorded in run.json): "
                       + ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDABLE) + ". Any other "
                       "option must repeat its saved value or be left out. A run folder is written by one training "
                       "at a time (train.lock). Training stops, saving nothing more, on a NaN/inf loss or weights "
                       "and on a diverging loss (see --diverge-factor). Options are spelled as edlm.train's "
                       "arguments, '_' as '-' (the older --max_steps spellings still work).")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model + training preset")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, run.json)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=(True, "auto"), metavar="auto",
                   help="continue the run in --out exactly where it stopped (its saved options win; see below); "
                        "--resume auto: continue it if --out holds a run, else start it")
    p.add_argument("--overwrite", action="store_true",
                   help="start the run in --out over: its checkpoints, metrics and run.json are removed first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log", action="append", choices=list(LOG_SINKS), default=None,
                   help="also log metrics to this (repeatable; metrics.jsonl is always written): tensorboard = "
                   "event files in OUT/tensorboard/ (pip install 'edlm[tensorboard]')")
    add_accept_data_change(p)
    _add_fields(p.add_argument_group("training (TrainConfig)"), TrainConfig)
    _add_fields(p.add_argument_group("model (TransformerConfig)"), TransformerConfig, MODEL_FIELDS, MODEL_HELP)
    return p


def given_options(args) -> tuple[dict, dict]:
    """The training and model options given on the command line (None = not given)."""
    given = lambda name: getattr(args, name, None) is not None
    tr = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if given(f.name)}
    if "betas" in tr:
        tr["betas"] = tuple(tr["betas"])
    return tr, {n: getattr(args, n) for n in MODEL_FIELDS if given(n)}


def run(args):
    """A thin layer over edlm.train: the preset by name, the options given on the command line."""
    from edlm.api import train

    tr, md = given_options(args)
    try:
        return train(preset=args.preset, out=args.out, resume=args.resume, overwrite=args.overwrite,
                     quiet=args.quiet, log=args.log or (), accept_data_change=args.accept_data_change, **tr, **md)
    except EdlmError as e:  # the library names options as `name`; here they are flags
        raise in_flag_terms(e, OPTIONS, dash=True) from None


def writes(args) -> Paths:
    data = args.data or (PRESETS[args.preset]()[1].data if args.preset in PRESETS else None)
    return Paths({"--out": args.out}, {"--diffusion": args.diffusion or None, f"corpus {data}": corpus_path(data)},
                 folders=("--out",))
