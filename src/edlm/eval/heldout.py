"""Held-out text shaped like a set of samples: windows of a corpus split, as sample rows.

    rows = heldout_rows("wiki-char", num=256, length=64)   # [{"ids", "text", "corpus", "method": "data"}, ...]

The reference every sample metric is read against: the evaluator's gen-NLL and entropy of real text of the same
length (the data's own point on a frontier), MAUVE's second distribution, repetition of natural text. `num` windows
of `length` tokens, evenly spaced over the split (deterministic: the same call gives the same windows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from edlm.errors import EdlmError


def heldout_rows(corpus: str, num: int, length: int, split: str = "test") -> list[dict]:
    """`num` evenly spaced windows of `length` tokens of the split, decoded with the corpus's tokenizer."""
    from edlm.data.corpora import load_split
    from edlm.data.tokenizers import tokenizer_for

    if num < 1 or length < 1:
        raise EdlmError(f"held-out windows need num >= 1 and length >= 1 (got {num}, {length})")
    tokens = load_split(corpus, split)
    if len(tokens) < length:
        raise EdlmError(f"the {split} split of {corpus} has {len(tokens)} tokens, fewer than one window of {length}")
    tok = tokenizer_for(corpus)
    starts = np.linspace(0, len(tokens) - length, num).astype(np.int64)
    rows = []
    for s in starts:
        ids = [int(v) for v in tokens[s:s + length]]
        rows.append({"ids": ids, "text": tok.decode(ids), "corpus": corpus, "method": "data", "split": split})
    return rows


def shape_of(rows: Sequence[dict]) -> tuple[str, int]:
    """(corpus, length) of a set of sample rows: their one corpus and their most common length in tokens."""
    corpora = {r.get("corpus") for r in rows}
    if len(corpora) != 1 or None in corpora:
        raise EdlmError("the samples name no corpus, or several: give the reference text yourself (a samples "
                        "file of held-out text)" if None in corpora else
                        f"the samples come from several corpora ({', '.join(sorted(map(str, corpora)))}); "
                        "evaluate one corpus at a time")
    length = Counter(len(r["ids"]) for r in rows).most_common(1)[0][0]
    return corpora.pop(), length
