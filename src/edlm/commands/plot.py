"""`edlm plot RUN`: a run folder's training and validation loss curves as a PNG (edlm.plot_run)."""

from __future__ import annotations

from pathlib import Path

from edlm.commands import Paths
from edlm.validate import out_file


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, description=help_ + " (read from RUN/metrics.jsonl).")
    p.add_argument("run", metavar="RUN", help="run folder written by `edlm train`")
    p.add_argument("--out", default=None, metavar="PNG", help="image to write (default: RUN/curves.png)")
    return p


def run(args):
    from edlm.api import plot_run

    out_file("--out", args.out)
    return {"run": str(args.run), "png": str(plot_run(args.run, args.out))}


def writes(args) -> Paths:
    """The PNG may go into RUN (its default does), never over what the run holds."""
    from edlm.runs.folder import RUN_ENTRIES

    run = Path(args.run)
    return Paths({"--out": args.out if args.out is not None else run / "curves.png"},
                 {f"the run's {e}": run / e for e in RUN_ENTRIES})
