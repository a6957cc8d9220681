"""The command-line layer: one module per `edlm` command, each a thin layer over edlm's Python API."""

from __future__ import annotations

import re

from edlm.errors import EdlmError


def in_flag_terms(e: EdlmError, options, dash: bool = False) -> EdlmError:
    """A library error re-worded for the command line: each `option` it names (backticked, as the library
    writes option names) becomes --option (--opt-ion with dash), and `resume=True` becomes --resume."""
    def flag(m: re.Match) -> str:
        name = m.group(1)
        if name not in options:
            return m.group(0)
        return "--" + (name.replace("_", "-") if dash else name)

    msg = re.sub(r"`([a-z_]+)(?:=True)?`", flag, str(e))
    return EdlmError(msg)
