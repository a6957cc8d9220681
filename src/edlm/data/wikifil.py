"""Text cleaning: text8 format (a Python take on the idea of Matt Mahoney's wikifil.pl) and prose sources.

text8 format: lower-case letters a-z and single spaces only; digits are spelled out as words
("1984" -> " one nine eight four "); everything else becomes a space and runs of spaces collapse to one.
One deliberate difference from text8: accented Latin letters are folded to their base letter
("café" -> "cafe") instead of turning into spaces.

``clean_wikitext`` removes MediaWiki markup from an article's source the way wikifil does (references,
templates, tables, link targets, images, categories, interlanguage links, HTML tags and entities), but
on the whole article rather than line by line, so templates spanning lines are removed too.
"""

from __future__ import annotations

import html
import io
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from edlm.data.bounded import bz2_decompress

_DIGITS = {
    str(i): f" {w} " for i, w in enumerate("zero one two three four five six seven eight nine".split())
}
_DIGIT_RE = re.compile(r"[0-9]")
_NON_AZ = re.compile(r"[^a-z]+")


def text8_normalize(text: str, legacy: bool = False) -> str:
    """Any text -> text8 format ([a-z ] only, digits spelled out, single spaces, stripped). Accents fold to
    their base letter; any other character without an ASCII form (dashes, curly quotes) becomes a space, as
    in text8, so "speaker—no" gives "speaker no". legacy: drop those characters instead ("speakerno"), the
    behaviour before issue 18, kept so that the *-small corpora stay byte-identical to their first builds."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        if legacy:
            text = text.encode("ascii", "ignore").decode("ascii")
        else:
            text = "".join(c if c.isascii() else ("" if unicodedata.combining(c) else " ") for c in text)
    text = _DIGIT_RE.sub(lambda m: _DIGITS[m.group()], text.lower())
    return _NON_AZ.sub(" ", text).strip()


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced open_ ... close spans (nested), e.g. {{templates}} and {| tables |}."""
    out, depth, i, n = [], 0, 0, len(text)
    lo, lc = len(open_), len(close)
    start = 0
    while i < n:
        if text.startswith(open_, i):
            if depth == 0:
                out.append(text[start:i])
            depth += 1
            i += lo
        elif depth and text.startswith(close, i):
            depth -= 1
            i += lc
            if depth == 0:
                start = i
        else:
            i += 1
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


_RE_COMMENT = re.compile(r"<!--.*?-->", re.S)
_RE_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_RE_TAG = re.compile(r"<[^>]*>")
_RE_URL = re.compile(r"\[(?:https?|ftp):[^\] ]*")
_RE_IMGOPT = re.compile(r"\|(?:thumb|left|right|center|frame|frameless|upright|\d+px)", re.I)
_RE_IMAGE = re.compile(r"\[\[(?:image|file):[^\[\]|]*\|", re.I)
_RE_CATEGORY = re.compile(r"\[\[category:([^|\]]*)[^\]]*\]\]", re.I)
_RE_INTERLANG = re.compile(r"\[\[[a-z\-]+:[^\]]*\]\]")
_RE_LINKTARGET = re.compile(r"\[\[[^|\]]*\|")
_RE_BRACES = re.compile(r"\{[^}]*\}")
_RE_ENTITY = re.compile(r"&[^; ]*;")


def clean_wikitext(text: str, text8: bool = True, legacy: bool = False) -> str:
    """MediaWiki article source -> text8 format (or, with text8=False, plain prose keeping case,
    punctuation and paragraphs: for BPE corpora)."""
    text = html.unescape(html.unescape(text))  # the dump escapes once; articles sometimes escape again
    text = _RE_COMMENT.sub(" ", text)
    text = _RE_REF.sub(" ", text)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = _RE_TAG.sub(" ", text)
    text = _RE_URL.sub("[", text)
    text = _RE_IMGOPT.sub("", text)
    text = _RE_IMAGE.sub("[[", text)
    text = _RE_CATEGORY.sub(r"[[\1]]", text)
    text = _RE_INTERLANG.sub(" ", text)
    text = _RE_LINKTARGET.sub("[[", text)
    text = _RE_BRACES.sub(" ", text)
    text = text.replace("[", " " if text8 else "").replace("]", " " if text8 else "")
    text = _RE_ENTITY.sub(" ", text)
    if text8:
        return text8_normalize(text, legacy)
    text = re.sub(r"'{2,}", "", text)  # bold/italic quotes
    text = re.sub(r"(?m)^\s*=+\s*(.*?)\s*=+\s*$", r"\n\1\n", text)  # == Heading ==
    text = re.sub(r"(?m)^[*#:;]+\s*", "", text)  # list bullets / indents
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def iter_wiki_articles(xml_bz2: bytes) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of every main-namespace, non-redirect page of a bz2 MediaWiki XML dump."""
    data = bz2_decompress(xml_bz2, "the MediaWiki dump")
    title = ns = text = None
    for _, el in ET.iterparse(io.BytesIO(data), events=("end",)):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "title":
            title = el.text or ""
        elif tag == "ns":
            ns = (el.text or "").strip()
        elif tag == "text":
            text = el.text or ""
        elif tag == "redirect":
            text = None
        elif tag == "page":
            if text and ns in (None, "0") and not text.lstrip().lower().startswith("#redirect"):
                yield title, text
            title = ns = text = None
            el.clear()


# ---- prose sources (for BPE: keep case and punctuation, only undo the source's own format) ----------

_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def brown_to_text(raw: str) -> list[str]:
    """One Brown corpus file ("word/tag word/tag", paragraphs indented) -> paragraphs of plain text."""
    paras = []
    for block in re.split(r"\n\s*\n", raw):
        words = [m.group(1) for m in _BROWN_TOKEN.finditer(block)]
        if not words:
            continue
        s = " ".join(words).replace("``", '"').replace("''", '"')
        s = re.sub(r" ([,.;:?!)])", r"\1", s)
        s = re.sub(r"\( ", "(", s)
        s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
        s = re.sub(r'" (.*?) "', r'"\1"', s)
        paras.append(s)
    return paras


_GUT_START = re.compile(r"\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*\n", re.I)
_GUT_END = re.compile(
    r"\n[^\n]*\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG|\nEnd of (?:the )?Project Gutenberg", re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence if present (text between the START/END markers)."""
    text = text.replace("\r\n", "\n")
    m = _GUT_START.search(text)
    if m:
        text = text[m.end() :]
    m = _GUT_END.search(text)
    if m:
        text = text[: m.start()]
    return text.strip()


def unwrap_lines(text: str) -> str:
    """Join hard-wrapped lines within paragraphs (blank lines separate paragraphs)."""
    paras = [re.sub(r"\s*\n\s*", " ", p.strip()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if p)
