"""MkDocs hook: the CLI reference page, rendered at build time from the argparse parsers of `edlm.cli`.

Nothing on the page is written by hand: `build_parser()` is the parser `edlm` itself runs, and every
command, sub-action, argument, default and help string comes from it. The page is a virtual file at
`reference/cli.md` (mkdocs.yml puts it in the nav), so it cannot go stale in git.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PAGE = "reference/cli.md"
WIDTH = 100  # usage lines are wrapped as a 100-column terminal would show them


def _import_build_parser(root: Path):
    """This checkout's parser, not whatever edlm another environment has installed."""
    src = str(root / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from edlm.cli import build_parser

    return build_parser


_CODE = re.compile(r"(`[^`]*`)")


def md_text(text: str) -> str:
    """Help text as Markdown: one line, and Markdown's special characters escaped outside `code spans`."""
    out = []
    for piece in _CODE.split(" ".join(str(text).split())):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            out.append(piece)  # a pipe in a code span does not split a table cell
            continue
        piece = piece.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")
        out.append(re.sub(r"([\\*_\[\]])", r"\\\1", piece))
    return "".join(out)


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog=parser.prog, width=WIDTH, max_help_position=32)


def usage(parser: argparse.ArgumentParser) -> str:
    f = _formatter(parser)
    f.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return f.format_help().strip()


def _default(action: argparse.Action) -> str:
    d = action.default
    if d is None or d is argparse.SUPPRESS or isinstance(action, (argparse._StoreTrueAction,
                                                                     argparse._StoreFalseAction)):
        return ""
    if isinstance(d, str) and d == "":
        return '`""`'
    return f"`{d}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = _formatter(parser)._expand_help(action) if action.help else ""
    text = md_text(text)
    shown = "{" in _formatter(parser)._format_action_invocation(action)  # the metavar lists them already
    if action.choices and not shown and not isinstance(action, argparse._SubParsersAction):
        choices = ", ".join(f"`{c}`" for c in action.choices)
        if choices not in text:
            text = f"{text} (choices: {choices})" if text else f"choices: {choices}"
    return text


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    inv = _formatter(parser)._format_action_invocation(action)
    return ", ".join(f"`{part.strip()}`" for part in inv.split(", "))


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _sentence(text: str) -> str:
    text = md_text(text)
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def render_parser(parser: argparse.ArgumentParser, name: str, depth: int, summary: str = "",
                  shown_epilogs: set | None = None) -> list[str]:
    """One command's section: its usage, description, arguments by group, epilog (once per page), then its
    sub-commands."""
    shown_epilogs = set() if shown_epilogs is None else shown_epilogs
    lines = [f"{'#' * depth} `{name}`", ""]
    desc = parser.description or ""
    if summary and not desc.lower().startswith(summary.lower().rstrip(".")):
        lines += [_sentence(summary), ""]
    if desc and not summary.lower().startswith(desc.lower().rstrip(".")):
        lines += [_sentence(desc), ""]
    lines += ["```text", usage(parser), "```", ""]
    for group in parser._action_groups:
        rows = [a for a in group._group_actions
                if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                          argparse._SubParsersAction))]
        if not rows:
            continue
        title = group.title or "arguments"
        title = title[0].upper() + title[1:]
        lines += [f"**{title}**", "", "| argument | default | description |", "|---|---|---|"]
        for a in rows:
            lines.append(f"| {_invocation(parser, a)} | {_default(a)} | {_help(parser, a)} |")
        lines.append("")
    sub = _subparsers(parser)
    if sub is not None:
        lines += ["| command | what it does |", "|---|---|"]
        for choice in sub._choices_actions:
            anchor = slug(f"{name} {choice.dest}")
            lines.append(f"| [`{name} {choice.dest}`](#{anchor}) | {md_text(choice.help or '')} |")
        lines.append("")
    if parser.epilog and parser.epilog not in shown_epilogs:
        shown_epilogs.add(parser.epilog)
        fmt_raw = parser.formatter_class is argparse.RawDescriptionHelpFormatter
        lines += (["```text", parser.epilog.rstrip(), "```", ""] if fmt_raw else [md_text(parser.epilog), ""])
    if sub is not None:
        helps = {c.dest: c.help or "" for c in sub._choices_actions}
        for cmd, child in sub.choices.items():
            lines += render_parser(child, f"{name} {cmd}", min(depth + 1, 4), helps.get(cmd, ""), shown_epilogs)
    return lines


def slug(title: str) -> str:
    """The anchor Python-Markdown's toc gives a heading `title` (lower case, words joined by '-')."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def render(parser: argparse.ArgumentParser) -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated when the site is built from the parsers `edlm` runs (`edlm.cli.build_parser`); "
        "`edlm COMMAND --help` prints the same. Every command prints one JSON object as its last stdout "
        "line (also written to `--json-out PATH`); bad input is one error line and exit code 2. "
        "A walk through the common commands: [the CLI tour](../cli.md).",
        "",
    ]
    lines += render_parser(parser, parser.prog, 2)
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    root = Path(config.config_file_path).resolve().parent
    text = render(_import_build_parser(root)())
    old = files.get_file_from_path(PAGE)
    if old is not None:
        files.remove(old)
    files.append(File.generated(config, PAGE, content=text))
    return files
