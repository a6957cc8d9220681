"""The command-line layer: one module per `edlm` command, each a thin layer over edlm's Python API."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

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


def kebab_options(parser) -> None:
    """Every option of `parser` and its sub-parsers spelled --kebab-case (the same names as the Python API's
    arguments, '_' as '-'); an old --snake_case spelling still parses, but --help no longer shows it."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                kebab_options(child)
            continue
        new = [("--" + o[2:].replace("_", "-")) if o.startswith("--") else o for o in action.option_strings]
        for old, kebab in zip(action.option_strings, new, strict=True):
            if old != kebab:
                parser._option_string_actions.setdefault(kebab, action)
                if isinstance(action, argparse.BooleanOptionalAction):  # it reads which string was given
                    parser._option_string_actions[old] = argparse._StoreConstAction(
                        [old], action.dest, const=not old.startswith("--no-"), default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
        action.option_strings = new  # the old strings stay in _option_string_actions: accepted, not shown


def old_spelling(parser, old: str, new: str) -> None:
    """Accept option `old` (a former name) as `new`, without showing it in --help."""
    parser._option_string_actions[old] = parser._option_string_actions[new]


ACCEPT_FLAG = {"accept_data_change": "--accept-data-change"}
"""the library's `accept_data_change=True` as the commands' flag"""


def add_accept_data_change(p) -> None:
    p.add_argument("--accept-data-change", action="store_true",
                   help="use the run although its corpus changed since the run was made (another text prepared "
                   "under its name): a warning on stderr instead of an error (docs/reliability.md)")
@dataclass
class Paths:
    """What a command will write and read, by flag; a command module's `writes(args)` returns it and the CLI
    checks it (safe_io.check_outputs, with --json-out added) before the command runs."""

    outputs: dict = field(default_factory=dict)
    reads: dict = field(default_factory=dict)
    folders: tuple = ()
    """the outputs that are folders the command fills"""


def energy_run(spec) -> str | None:
    """What an --energy reads: the run folder of KIND:RUN, the model folder or file of lm:NAME (None for a built-in
    or hub name), the module file of py:FILE.py:FUNCTION (None for an importable module name or none given)."""
    kind, sep, path = (spec or "").partition(":")
    if kind == "lm":
        return evaluator_path(path)
    if kind == "py":
        module = path.rpartition(":")[0]
        return module if module.endswith(".py") else None
    return path if sep and path else None


def evaluator_path(spec) -> str | None:
    """The file or folder an --evaluator reads: edlm:RUN, gguf:FILE, or a local model folder."""
    spec = str(spec or "")
    for prefix in ("edlm:", "gguf:"):
        if spec.startswith(prefix):
            return spec[len(prefix):] or None
    return spec if spec and os.path.exists(spec) else None


