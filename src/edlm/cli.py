"""The `edlm` command line.

Every subcommand lives in ``edlm.commands.<name>`` with ``add_parser(subparsers)`` and
``run(args) -> dict``. The dict is printed as ONE JSON object on the last stdout line (and written to
``--json-out``); progress goes to stderr. Bad input raises EdlmError: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Before torch loads OpenMP: its worker threads spin for a long time at every barrier, so on a small machine
# that runs anything else (another job, a second rank) a step gets 4-15x slower. Measured on 2 cores, tiny
# preset step: idle 0.18 s (default) vs 0.18 s (spin 10k); beside another torch job 1.7-2.8 s vs 0.48 s.
# (OMP_WAIT_POLICY=PASSIVE: 0.22 s idle, 0.36 s loaded.) The user's own setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from edlm import __version__  # noqa: E402
from edlm.commands import kebab_options  # noqa: E402
from edlm.errors import EdlmError  # noqa: E402
from edlm.utils import atomic_write_json, summary_line  # noqa: E402

COMMANDS = {
    "data": "prepare and inspect corpora (synthetic, markov2, markov3, lexicon, wiki-char, text8, prose-bpe, textfile)",
    "train": "train an MDLM, AR or NCE-energy model (one loop; torchrun for several devices)",
    "sample": "generate with MDLM, EDLM (--energy) or an AR model",
    "eval": "likelihood bounds (nelbo) and sample quality (samples)",
    "demo": "the one-command CPU demo: train tiny models on `markov2`, compare MDLM/EDLM/AR",
    "bench": "sweep steps/k/window for MDLM, EDLM and AR: JSON + plots",
    "convert": "import public MDLM checkpoints (kuleshov-group/mdlm format) into edlm",
    "plot": "training and validation loss curves of a run folder, as a PNG",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edlm",
        description="Energy-Based Diffusion Language Models: train, sample and evaluate MDLM, EDLM and AR.",
        epilog="Each command prints one JSON summary object as its last stdout line. "
        "Run `edlm COMMAND --help` for its options.",
    )
    p.add_argument("--version", action="version", version=f"edlm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        mod = importlib.import_module(f"edlm.commands.{name}")
        sp = mod.add_parser(sub, name, help_)
        sp.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
        sp.set_defaults(_run=mod.run, _writes=getattr(mod, "writes", None))
    kebab_options(p)  # one spelling: --max-steps (the old --max_steps still parses)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        from edlm.commands import Paths
        from edlm.safe_io import check_outputs
        from edlm.validate import out_file

        plan = args._writes(args) if args._writes else Paths()  # no output is an input, before any work
        check_outputs({**plan.outputs, "--json-out": getattr(args, "json_out", None)}, plan.reads,
                      folders=plan.folders)
        out_file("--json-out", getattr(args, "json_out", None))
        result = args._run(args)
    except EdlmError as e:
        print(f"edlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's state (a full disk, a read-only folder): one line too, never a traceback
        from edlm.safe_io import os_error

        print(f"edlm {args.command}: error: {os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edlm {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is None:
        result = {}
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 reports
    if args.json_out:
        try:
            atomic_write_json(args.json_out, result)
        except EdlmError as e:
            print(f"edlm {args.command}: error: {e}", file=sys.stderr)
            return 2
    print(summary_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
