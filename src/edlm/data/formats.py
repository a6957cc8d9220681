"""Text out of two file formats some sources ship: R's lazy-load data (.rdb) and reStructuredText.

r_string_vectors: an .rdb file is a run of objects, each a 4-byte big-endian length and a zlib stream of R's
serialisation format (XDR); a character vector is a STRSXP whose elements are CHARSXPs (length + bytes).
We read only that much: enough for data packages that are character vectors, like janeaustenr.

rst_to_text: the prose of a Sphinx page, dropping code (literal blocks after "::", doctest lines, code
directives), tables, comments, targets, API signatures and section underlines, and unwrapping inline markup
(:func:`len` -> len, ``x`` -> x, `text <url>`_ -> text).
"""

from __future__ import annotations

import re
import struct

from edlm.data.bounded import Budget, zlib_object
from edlm.errors import EdlmError

_STRSXP, _CHARSXP = 16, 9


def _r_strings(buf: bytes) -> list[str | None]:
    if not buf.startswith(b"X\n"):
        raise EdlmError("not an R serialisation in XDR format")
    pos = 2
    version = struct.unpack(">i", buf[pos : pos + 4])[0]
    pos += 12  # format version, R version that wrote it, oldest R version that reads it
    if version == 3:  # native encoding name
        n = struct.unpack(">i", buf[pos : pos + 4])[0]
        pos += 4 + n
    flags, length = struct.unpack(">ii", buf[pos : pos + 8])
    if flags & 0xFF != _STRSXP:
        raise EdlmError(f"R object of type {flags & 0xFF}, not a character vector")
    pos += 8
    out: list[str | None] = []
    for _ in range(length):
        flags, n = struct.unpack(">ii", buf[pos : pos + 8])
        pos += 8
        if flags & 0xFF != _CHARSXP:
            raise EdlmError("malformed character vector in R data")
        if n == -1:  # NA
            out.append(None)
            continue
        out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
        pos += n
    return out


def r_string_vectors(rdb: bytes) -> list[list[str | None]]:
    """Every object of an R lazy-load database (.rdb) that is a character vector, in file order."""
    out, pos, budget = [], 0, Budget("R data (.rdb), decompressed,")
    while pos + 4 < len(rdb):
        buf, rest = zlib_object(rdb[pos + 4 :], budget)
        pos = len(rdb) - len(rest)
        try:
            out.append(_r_strings(buf))
        except (EdlmError, struct.error):
            continue  # some other object (a data frame, the index): not text
    return out


_UNDERLINE = re.compile(r"^([=\-~^*#+`'\".:_])\1{2,}\s*$")
_TABLE = re.compile(r"^\s*(?:[+|].*[+|]|=+(?:\s+=+)+)\s*$")
_DOCTEST = re.compile(r"^\s*(?:>>>|\.\.\.)(?:\s|$)")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(?:([\w:-]+)::(.*)|.*)$")
# directives whose body is prose we keep; for API directives (function, class, ...) the signature is dropped
_KEEP = {"note", "warning", "seealso", "versionadded", "versionchanged", "deprecated", "important", "tip",
         "attention", "caution", "danger", "hint", "admonition", "impl-detail", "topic", "rubric", "glossary",
         "describe", "function", "class", "method", "attribute", "data", "exception", "module",
         "classmethod", "staticmethod", "decorator", "opcode", "cmdoption", "option", "envvar", "pdbcommand",
         "c:function", "c:macro", "c:type", "c:member", "c:var", "c:struct", "index"}  # fmt: skip
_LABEL = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
          "deprecated": "Deprecated since version {}:", "note": "Note:", "warning": "Warning:",
          "seealso": "See also:", "impl-detail": "CPython implementation detail:"}  # fmt: skip
_FIELD = re.compile(r"^\s*:[\w -]+:(?:\s|$)")  # ":synopsis: ...", ":platform: ..." (page metadata)
_NUMBERED = {"pep": "PEP {}", "rfc": "RFC {}", "issue": "bpo-{}", "gh": "gh-{}"}
_NUMROLE = re.compile(r":(pep|rfc|issue|gh):`([^`<]*?)(?:\s*<[^`>]*>)?`")
_ROLE = re.compile(r":[\w:+-]+:`(?:[^`<]*?<([^`>]*)>|~?!?([^`]*))`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``(.+?)``")
_EMPH = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_SUBST = re.compile(r"\|([\w-]+)\|")


def _inline(line: str) -> str:
    line = _NUMROLE.sub(lambda m: _NUMBERED[m.group(1)].format(m.group(2).split("#")[0].strip()), line)
    line = _ROLE.sub(lambda m: (m.group(1) or m.group(2) or "").strip(), line)
    line = _LINK.sub(r"\1", line)
    line = _LITERAL.sub(r"\1", line)
    line = _REF.sub(r"\1", line)
    line = _EMPH.sub(r"\1", line)
    return _SUBST.sub(r"\1", line).replace("\\", "")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_text(rst: str) -> str:
    """Paragraphs of prose from a reStructuredText page (blank line between paragraphs)."""
    lines = rst.replace("\t", "        ").splitlines()
    kept: list[str] = []
    skip_below: int | None = None  # drop lines indented deeper than this (a code block's or directive's body)
    literal_after: int | None = None  # indent of a paragraph ending in "::": deeper lines after it are code
    for line in lines:
        if not line.strip():
            kept.append("")
            continue
        ind = _indent(line)
        if skip_below is not None:
            if ind > skip_below:
                continue
            skip_below = None
        if literal_after is not None and ind > literal_after:
            skip_below, literal_after = literal_after, None
            continue
        literal_after = None
        m = _DIRECTIVE.match(line)
        if m:
            name, arg = m.group(2), (m.group(3) or "").strip()
            if name in _KEEP and name != "index":
                if name in _LABEL:  # as Sphinx renders them: "New in version 3.8."
                    kept.append(_LABEL[name].format(arg).strip())
                elif name in ("topic", "rubric"):
                    kept.append(arg)  # a title
                kept.append("")  # the body (indented prose) stays
                continue
            skip_below = ind  # code, index, toctree, comments, targets, tables, images: drop with the body
            continue
        if _UNDERLINE.match(line) or _TABLE.match(line) or _DOCTEST.match(line) or _FIELD.match(line):
            continue
        text = line.strip()
        if text.endswith("::"):
            literal_after = ind
            text = text[:-2].rstrip()
            text = text + ":" if text and not text.endswith(":") else text
        kept.append(text)
    paras = re.split(r"\n\s*\n", "\n".join(kept))  # inline markup may span lines: unwrap it per paragraph
    return "\n\n".join(_inline(" ".join(p.split())) for p in paras if p.strip())
