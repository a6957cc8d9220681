"""The command-line layer: one module per `edlm` command, each a thin layer over edlm's Python API."""

from __future__ import annotations

import re
from collections.abc import Mapping

from edlm.errors import EdlmError


def in_flag_terms(e: EdlmError, options, dash: bool = False) -> EdlmError:
    """A library error re-worded for the command line: each `option` it names (backticked, as the library
    writes option names) becomes --option (--opt-ion with dash; a mapping of options gives each its flag),
    `resume=True` becomes --resume and `eos='all'` becomes --eos all."""
    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in options:
            return m.group(0)
        if isinstance(options, Mapping):
            out = options[name]
        else:
            out = "--" + (name.replace("_", "-") if dash else name)
        if value is not None and value != "True":
            out += " " + value.strip("'\"")
        return out

    msg = re.sub(r"`([a-z_]+)(?:=([^`\s]+))?`", flag, str(e))
    return EdlmError(msg)


ACCEPT_FLAG = {"accept_data_change": "--accept-data-change"}
"""the library's `accept_data_change=True` as the commands' flag"""


def add_accept_data_change(p) -> None:
    p.add_argument("--accept-data-change", action="store_true",
                   help="use the run although its corpus changed since the run was made (another text prepared "
                   "under its name): a warning on stderr instead of an error (docs/reliability.md)")
