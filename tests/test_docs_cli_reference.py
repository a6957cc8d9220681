"""The site's CLI reference is rendered from the parsers `edlm` runs: every command, sub-action and option
is on the page, with its default, and nothing the parser lacks."""

import argparse
import importlib.util
from pathlib import Path

from edlm.cli import build_parser

HOOK = Path(__file__).resolve().parents[1] / "docs_hooks" / "cli_reference.py"


def load_hook():
    spec = importlib.util.spec_from_file_location("cli_reference", HOOK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def walk(parser, name="edlm"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for cmd, child in action.choices.items():
                yield from walk(child, f"{name} {cmd}")


def test_every_command_and_option_is_rendered():
    hook, parser = load_hook(), build_parser()
    page = hook.render(parser)
    commands = list(walk(parser))
    assert {"edlm data prepare", "edlm eval nelbo", "edlm sample", "edlm train"} <= {n for n, _ in commands}
    for name, sub in commands:
        assert f"`{name}`\n" in page, f"no section for {name}"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in page, f"{name}: {flag} missing"
    sample = page[page.index("### `edlm sample`"):page.index("### `edlm eval`")]
    assert "| `--steps STEPS` | `64` |" in sample  # the default comes from the parser


def test_help_text_is_escaped_for_markdown():
    hook = load_hook()
    assert hook.md_text("a [MASK*5] | <x> `k|v`") == r"a \[MASK\*5\] &#124; &lt;x&gt; `k|v`"
    assert hook.slug("edlm data prepare") == "edlm-data-prepare"
