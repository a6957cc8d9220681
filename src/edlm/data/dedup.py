"""Dropping duplicate documents before a corpus is split, so no text sits in two splits.

Two checks, both on the normalised text (lower-cased, digits spelled out, everything but letters folded to
single spaces: text8_normalize):
- exact: the same normalised text, i.e. copies differing only in wrapping, punctuation, quotes or case;
- near: passages shared with an earlier document, either way round: most of the new document was seen
  before (a collection of works already read on their own, another edition), or the new document holds most
  of an earlier one (Brown's sample cg35 is a stretch of Eisenhower's 1960 State of the Union address: in
  either order only one of the two is kept, so the passage cannot sit in two splits). Passages are 8-word
  shingles starting at content-chosen words (about one word in 8, chosen by the word's hash, so two copies
  pick the same places whatever their offsets); the share that counts is NEAR_SHARE. Common phrases alone
  come nowhere near it: in the real corpora the drops are Milton's Comus (in two files), Isaiah 36 (= 2 Kings
  18) and Brown cg35.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter

from edlm.data.wikifil import text8_normalize


def doc_key(doc: str) -> bytes:
    """16-byte hash of the normalised text: equal for documents that differ only in case, spacing,
    punctuation or line breaks."""
    return _key(text8_normalize(doc))


def _key(norm: str) -> bytes:
    return hashlib.blake2b(norm.encode("ascii"), digest_size=16).digest()


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
        self.owner: dict[int, int] = {}  # passage -> the first kept document that has it
        self.sizes: list[int] = []  # passages of each kept document
        self.near = 0  # how many of the drops were near duplicates

    def _is_near(self, sh: set[int]) -> bool:
        if len(sh) < MIN_SHINGLES:
            return False
        owners = Counter(self.owner[x] for x in sh if x in self.owner)
        if sum(owners.values()) >= NEAR_SHARE * len(sh):  # mostly seen before
            return True
        return any(n >= NEAR_SHARE * self.sizes[j] and self.sizes[j] >= MIN_SHINGLES  # holds most of one
                   for j, n in owners.items())  # fmt: skip

    def keep(self, docs: list[str]) -> tuple[list[str], int, int]:
        """(the documents not seen before, how many were dropped, their characters)."""
        out, dropped, chars = [], 0, 0
        for d in docs:
            norm = text8_normalize(d)
            k = _key(norm)
            sh = shingles(norm)
            exact = k in self.seen
            if exact or self._is_near(sh):
                dropped += 1
                chars += len(d)
                self.near += not exact
                continue
            self.seen.add(k)
            for x in sh:
                self.owner.setdefault(x, len(self.sizes))
            self.sizes.append(len(sh))
            out.append(d)
        return out, dropped, chars
