"""Writing a corpus's split files: token dtype, the SplitWriter, the by-document split and the document
writers the builders share (char and GPT-2 BPE)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edlm.data.manifest import SPLITS, sample_sha256
from edlm.data.tokenizers import char_tokenizer
from edlm.utils import progress, sha256_file

WIKI_CHAR_MIN_CHARS = 7_000_000


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id incl. MASK fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size + 1 <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


class SplitWriter:
    """Appends token chunks to <dir>/<split>.bin and counts tokens, characters and documents."""

    def __init__(self, folder: Path, vocab_size: int):
        self.folder, self.vocab_size, self.dtype = folder, vocab_size, token_dtype(vocab_size)
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.docs = dict.fromkeys(SPLITS, 0)
        self.chars = dict.fromkeys(SPLITS, 0)
        self._files = {s: open(folder / f"{s}.bin", "wb") for s in SPLITS}

    def add(self, split: str, ids, docs: int = 0, chars: int = 0) -> None:
        a = np.asarray(ids)
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        a.astype(self.dtype).tofile(self._files[split])
        self.tokens[split] += int(a.size)
        self.docs[split] += docs
        self.chars[split] += chars

    def close(self) -> dict:
        for f in self._files.values():
            f.close()
        return {s: {"file": f"{s}.bin", "tokens": self.tokens[s], "documents": self.docs[s],
                    "chars": self.chars[s], "sha256": sha256_file(self.folder / f"{s}.bin"),
                    "sample_sha256": sample_sha256(self.folder / f"{s}.bin")}
                for s in SPLITS}  # fmt: skip


def split_documents(name: str, lengths: list[int], fracs=(0.05, 0.05)) -> np.ndarray:
    """Split index per document (0 train, 1 valid, 2 test), deterministic in (name, index): documents in
    hash order fill test to fracs[1] of the characters, then valid to fracs[0], the rest is train."""
    n = len(lengths)
    keys = [hashlib.sha256(f"{name}:{i}".encode()).digest()[:8] for i in range(n)]
    order = sorted(range(n), key=keys.__getitem__)
    total = float(sum(lengths))
    out = np.zeros(n, dtype=np.int8)
    pos = 0
    # test first, then valid; each takes at least one document and leaves at least one for the others
    for split, frac, reserve in ((2, fracs[1], 2), (1, fracs[0], 1)):
        got = 0
        while n - pos > reserve and (got == 0 or got < frac * total):
            out[order[pos]] = split
            got += max(lengths[order[pos]], 1)
            pos += 1
    return out


def write_char_docs(w: SplitWriter, name: str, docs: list[str]) -> None:
    """text8-format documents -> char ids; a single space joins documents within a split."""
    tok = char_tokenizer()
    where = split_documents(name, [len(d) for d in docs])
    for si, s in enumerate(SPLITS):
        sel = [d for d, k in zip(docs, where, strict=True) if k == si]
        text = " ".join(sel)
        w.add(s, tok.encode_array(text), docs=len(sel), chars=len(text))


def write_bpe_docs(w: SplitWriter, name: str, docs: list[str], tok, batch: int = 256) -> np.ndarray:
    """Documents -> GPT-2 ids with EOS after each document, tokenised in batches (tokenizers' threads).
    Returns the tokens of each document (EOS included), in the order of ``docs``, for per-source counts."""
    where = split_documents(name, [len(d) for d in docs])
    counts = np.zeros(len(docs), dtype=np.int64)
    bar = progress(total=len(docs), desc=f"{name}: tokenising", unit="doc")
    eos = tok.eos_id
    for si, s in enumerate(SPLITS):
        idx = np.flatnonzero(where == si)
        for lo in range(0, len(idx), batch):
            part = idx[lo : lo + batch]
            chunk = [docs[i] for i in part]
            ids = []
            for i, e in zip(part, tok.encode_batch(chunk), strict=True):
                ids.extend(e)
                ids.append(eos)
                counts[i] = len(e) + 1
            w.add(s, np.asarray(ids, dtype=np.int64), docs=len(chunk), chars=sum(map(len, chunk)))
            bar.update(len(chunk))
    bar.close()
    return counts
