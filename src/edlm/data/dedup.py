"""Dropping duplicate documents before a corpus is split, so no text sits in two splits.

Two checks, both on the normalised text (lower-cased, digits spelled out, everything but letters folded to
single spaces: text8_normalize):
- exact: the same normalised text, i.e. copies differing only in wrapping, punctuation, quotes or case;
- near: most of a document's passages were seen before: a collection that holds works already read on
  their own, the same book with another header or a few lines changed. Passages are 8-word shingles
  starting at content-chosen words (about one word in 8, chosen by the word's hash, so two copies pick the
  same places whatever their offsets); a document with at least NEAR_SHARE of its shingles already seen in
  earlier documents is dropped. Common phrases alone come nowhere near that share (measured: no document of
  the corpora is dropped that is not a copy).
"""

from __future__ import annotations

import hashlib
import zlib

from edlm.data.wikifil import text8_normalize


def doc_key(doc: str) -> bytes:
    """16-byte hash of the normalised text: equal for documents that differ only in case, spacing,
    punctuation or line breaks."""
    return hashlib.blake2b(text8_normalize(doc).encode("ascii"), digest_size=16).digest()


SHINGLE_WORDS = 8
NEAR_SHARE = 0.5
MIN_SHINGLES = 20  # shorter documents are judged by the exact check only


def shingles(norm: str) -> set[int]:
    """Hashes of the 8-word passages starting at the words whose own hash is 0 mod 8."""
    words = norm.split()
    out = set()
    for i in range(len(words) - SHINGLE_WORDS + 1):
        if zlib.crc32(words[i].encode()) & 7 == 0:
            passage = " ".join(words[i : i + SHINGLE_WORDS]).encode()
            out.add(int.from_bytes(hashlib.blake2b(passage, digest_size=8).digest(), "little"))
    return out


class Deduper:
    """Keeps the first copy of each document across every source it is fed, in feeding order."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.passages: set[int] = set()
        self.near = 0  # how many of the drops were near duplicates

    def keep(self, docs: list[str]) -> tuple[list[str], int, int]:
        """(the documents not seen before, how many were dropped, their characters)."""
        out, dropped, chars = [], 0, 0
        for d in docs:
            norm = text8_normalize(d)
            k = hashlib.blake2b(norm.encode("ascii"), digest_size=16).digest()
            sh = shingles(norm)
            near = len(sh) >= MIN_SHINGLES and len(sh & self.passages) >= NEAR_SHARE * len(sh)
            if k in self.seen or near:
                dropped += 1
                chars += len(d)
                self.near += k not in self.seen
                continue
            self.seen.add(k)
            self.passages |= sh
            out.append(d)
        return out, dropped, chars
