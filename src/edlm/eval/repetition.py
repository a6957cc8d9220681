"""Repetition and diversity of a set of samples, from their token ids (no model needed).

    rep_n([1, 2, 1, 2, 1], 2)            # bigrams 12 21 12 21: 2 unique of 4 -> 1 - 2/4 = 0.5
    repetition([[1, 2, 1, 2], [3, 4]], ns=(2,))
        -> {"rep_2": mean over samples of rep_n, "rep_2_ci95": [...], "set_rep_2": ..., "distinct_2": ...}

- rep-n (within a sample): 1 - unique n-grams / n-grams of ONE sample, averaged over the samples that have an
  n-gram. 0 = no n-gram repeats inside a sample; "the the the the" has rep-1 = 0.75. It catches the loops that
  sharpened samplers fall into, which gen-PPL rewards.
- set-rep-n (across the set): the share of the set's distinct n-grams that occur more than once in the whole set
  (in one sample or in several). With distinct-n (unique / all n-grams of the set, edlm.eval.stats) it catches
  samples that repeat EACH OTHER (mode collapse) even when none repeats itself.
Compare them with the same numbers of held-out data of the same length: natural text repeats too (a char-level
corpus has high rep-2), so only the difference says something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from edlm.eval.stats import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED, _ints, distinct_n, ngrams

DEFAULT_NS = (1, 2, 3, 4)


def rep_n(ids: Sequence[int], n: int) -> float | None:
    """1 - unique n-grams / n-grams within one sample; None when it has no n-gram."""
    if n < 1:
        raise ValueError("n must be >= 1")
    g = ngrams(ids, n)
    return 1.0 - len(set(g)) / len(g) if g else None


def set_rep_n(samples: Iterable[Sequence[int]], n: int) -> float | None:
    """Share of the distinct n-grams of the whole set that occur more than once in it; None without n-grams."""
    c: Counter = Counter()
    for s in samples:
        c.update(ngrams(s, n))
    return sum(1 for v in c.values() if v > 1) / len(c) if c else None


def mean_interval(values: Sequence[float], level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                  seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """Percentile bootstrap interval of a mean over samples (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    a = np.asarray(values, dtype=np.float64)
    r = a[np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))].mean(1)
    q = (1 - level) / 2
    return [float(np.quantile(r, q)), float(np.quantile(r, 1 - q))]


def repetition(samples: Iterable[Iterable[int]], ns: Sequence[int] = DEFAULT_NS) -> dict:
    """rep_n (mean, 95% interval), set_rep_n and distinct_n of a set of samples (token ids), for each n in ns."""
    ids = [_ints(s) for s in samples]
    out: dict = {"repetition_ns": list(ns)}
    for n in ns:
        per = [v for v in (rep_n(x, n) for x in ids) if v is not None]
        out[f"rep_{n}"] = float(np.mean(per)) if per else None
        out[f"rep_{n}_ci95"] = mean_interval(per)
        out[f"set_rep_{n}"] = set_rep_n(ids, n)
        out[f"distinct_{n}"] = distinct_n(ids, n)
    return out
