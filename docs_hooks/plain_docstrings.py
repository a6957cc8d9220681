"""Griffe extension (mkdocstrings): render edlm's plain-text docstrings as they read in the source.

edlm's docstrings are prose, not Markdown: `[MASK*5]`, `x_t`, `mu*exp(-E)` or `<cache>` mean what they
say, and Markdown would turn them into emphasis, links or HTML. This extension escapes Markdown's special
characters in the docstring text before mkdocstrings renders it, and leaves alone what is code already:
backtick spans, fenced blocks and indented blocks (the examples).
"""

from __future__ import annotations

import re

import griffe

_SPAN = re.compile(r"(`+).+?\1")
_SPECIAL = re.compile(r"([\\*_\[\]])")


def _plain(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text).replace("<", "&lt;").replace(">", "&gt;")


def _escape_text(line: str) -> str:
    out, pos = [], 0
    for m in _SPAN.finditer(line):
        out.append(_plain(line[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_plain(line[pos:]))
    text = "".join(out)
    return re.sub(r"^(\s*)#", r"\1\\#", text)  # a line starting with '#' is not a heading


def escape_docstring(text: str) -> str:
    """The docstring with Markdown specials escaped outside code spans, fenced and indented code blocks."""
    lines, out = text.split("\n"), []
    fence, code, blank = None, False, True
    for line in lines:
        stripped = line.strip()
        if fence:
            out.append(line)
            fence = None if stripped.startswith(fence) else fence
        elif stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            out.append(line)
        elif not stripped:
            out.append(line)
        elif (blank or code) and line.startswith("    "):
            code = True
            out.append(line)
        else:
            code = False
            out.append(_escape_text(line))
        blank = not stripped
    return "\n".join(out)


class PlainDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = escape_docstring(obj.docstring.value)
