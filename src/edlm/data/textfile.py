"""Your own text as a corpus (`textfile`, `textfile:NAME`): documents, what each tokenizer keeps, lossless writing.

    docs, loss = documents([open("notes.txt").read()], "chars")
    loss["dropped_share"]   # 0.0 for bytes / chars; text8's `char` drops case, punctuation, digits, newlines

Documents are paragraphs (blank-line separated), so even one file splits into train / valid / test. With
`bytes` or `chars` each document keeps the blank lines after it and nothing is changed: the documents, in
order, are the file byte for byte. With `char` (text8) and `gpt2` a document is a stripped paragraph (the
blank lines between paragraphs become a space or an EOS), and `char` also folds case, spells digits out and
drops every other symbol. `dropped_share` counts the characters inside paragraphs that the corpus does not keep
as they are; preparing warns above WARN_SHARE.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

from edlm.data.manifest import SPLITS
from edlm.data.tokenizers import CHAR_ALPHABET, BytesTokenizer, CharsTokenizer
from edlm.data.writers import SplitWriter, split_documents

WARN_SHARE = 0.01
_BREAK = re.compile(r"(\n\s*\n)")
_ENDS_BLANK = re.compile(r"\n\s*\n\s*$")


def documents(texts: list[str], kind: str) -> tuple[list[str], dict]:
    """The documents of `texts` for tokenizer `kind`, and what was lost: {"dropped_share", "dropped_top"}."""
    if kind in ("bytes", "chars"):
        docs = [d for t in texts for d in _lossless_paragraphs(t)]
        return docs, {"dropped_share": 0.0, "dropped_top": {}}
    from edlm.data.wikifil import text8_normalize

    paras, crs = [], 0
    for t in texts:
        crs += t.count("\r\n")
        paras += [d.strip() for d in re.split(r"\n\s*\n", t.replace("\r\n", "\n")) if d.strip()]
    lost = Counter({"\r": crs}) if crs else Counter()
    total = sum(map(len, paras)) + crs  # the characters inside paragraphs, as the file has them
    if kind == "char":
        keep = set(CHAR_ALPHABET)
        for p in paras:
            lost.update(c for c in p if c not in keep)
        paras = [d for d in (text8_normalize(x) for x in paras) if d]
    n = sum(lost.values())
    return paras, {"dropped_share": round(n / max(total, 1), 6),
                   "dropped_top": {c: k for c, k in lost.most_common(8)}}


def _lossless_paragraphs(text: str) -> list[str]:
    """Paragraphs, each with the blank lines after it; whitespace before the first goes with it: "".join == text."""
    parts = _BREAK.split(text)
    docs, lead = [], ""
    for i in range(0, len(parts), 2):
        d = parts[i] + (parts[i + 1] if i + 1 < len(parts) else "")
        if d.strip():
            docs.append(lead + d)
            lead = ""
        else:
            lead += d
    if lead and docs:
        docs[-1] += lead
    return docs


def warn_if_lossy(loss: dict, tokenizer: str) -> str | None:
    """The warning for a corpus that drops more than WARN_SHARE of its text (printed on stderr), or None."""
    share = loss.get("dropped_share") or 0.0
    if share <= WARN_SHARE:
        return None
    top = ", ".join(f"{c!r} x{k}" for c, k in list(loss.get("dropped_top", {}).items())[:5])
    msg = (f"the {tokenizer!r} tokenizer keeps {100 * (1 - share):.1f}% of the text's characters as they are: "
           f"{100 * share:.1f}% are dropped or changed (most often {top}); the 'chars' tokenizer (the file's own "
           "characters) or 'bytes' keep every character")
    print(f"edlm: warning: {msg}", file=sys.stderr)
    return msg


def lossless_tokenizer(kind: str, docs: list[str]):
    """bytes: the 256 byte values; chars: every character of the documents (all splits), in code-point order."""
    return BytesTokenizer() if kind == "bytes" else CharsTokenizer.of("".join(docs))


def write_lossless_docs(w: SplitWriter, name: str, docs: list[str], tok) -> None:
    """Each split: its documents in order, a blank line added after one that does not end in one (the last
    paragraph of a file), so documents never run into each other."""
    where = split_documents(name, [len(d) for d in docs])
    for si, s in enumerate(SPLITS):
        sel = [d if _ENDS_BLANK.search(d) else d + "\n\n" for d, k in zip(docs, where, strict=True) if k == si]
        text = "".join(sel)
        w.add(s, tok.encode_array(text), docs=len(sel), chars=len(text))
