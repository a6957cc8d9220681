"""`edlm plot RUN`: a run folder's training and validation loss curves as a PNG (edlm.plot_run)."""

from __future__ import annotations

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
