"""Diversity and speed statistics of generated samples (no model needed).

    unigram_entropy([0, 0, 1, 1])          # log 2 = 0.693 nats: the entropy of the sample's own histogram
    distinct_n([[1, 2, 3], [1, 2, 4]], 2)  # 3 unique bigrams of 4 -> 0.75

The unigram entropy is the diversity measure of the MDLM/EDLM papers: low-temperature or degenerate
samplers lower generative perplexity by repeating tokens, and this number exposes it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np


def _ints(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def unigram_entropy(ids: Iterable[int]) -> float:
    """Entropy (nats) of the empirical token distribution of ONE sample; 0.0 for an empty sample."""
    counts = Counter(_ints(ids))
    n = sum(counts.values())
    if n == 0:
        return 0.0
    return -sum(c / n * math.log(c / n) for c in counts.values())


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The n-grams of one sample (none cross sample boundaries)."""
    ids = _ints(ids)
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(samples: Iterable[Iterable[int]], n: int) -> float | None:
    """Unique n-grams over all samples / all n-grams of all samples (None when there is no n-gram)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    seen: set[tuple[int, ...]] = set()
    total = 0
    for s in samples:
        g = ngrams(_ints(s), n)
        total += len(g)
        seen.update(g)
    return len(seen) / total if total else None


def sample_stats(rows: Sequence[dict], max_n: int = 4) -> dict:
    """Entropy (mean over samples, nats and bits), distinct-1..max_n, time per sample and tokens/s, and the
    sampler settings (method/steps/k/window/corpus) carried from the rows: one value when all rows agree,
    else the sorted list of the values seen."""
    ids = [_ints(r["ids"]) for r in rows]
    ents = [unigram_entropy(x) for x in ids]
    h = sum(ents) / len(ents) if ents else float("nan")
    out: dict = {"entropy_nats": h, "entropy_bits": h / math.log(2)}
    for n in range(1, max_n + 1):
        out[f"distinct_{n}"] = distinct_n(ids, n)
    secs = [r.get("seconds") for r in rows]
    if rows and all(isinstance(s, (int, float)) for s in secs):
        total = float(sum(secs))
        out["seconds_per_sample"] = total / len(rows)
        out["tokens_per_second"] = sum(len(x) for x in ids) / total if total > 0 else None
    else:
        out["seconds_per_sample"] = out["tokens_per_second"] = None
    out["seq_len"] = sum(len(x) for x in ids) / len(ids) if ids else 0
    for key in ("method", "steps", "k", "window", "corpus"):
        out[key] = carried(rows, key)
    return out


def carried(rows: Sequence[dict], key: str):
    """The value of ``key`` shared by all rows, or the sorted distinct values when they differ."""
    vals = []
    for r in rows:
        v = r.get(key)
        if v not in vals:
            vals.append(v)
    if len(vals) <= 1:
        return vals[0] if vals else None
    try:
        return sorted(vals, key=lambda v: (v is None, str(type(v)), v))
    except TypeError:
        return vals


BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0  # fixed: the same samples always give the same interval


def _resample_ratio(nll: Sequence[float], tokens: Sequence[int], draws: int, seed: int):
    """`draws` bootstrap replicates of sum(nll) / sum(tokens), samples drawn with replacement (numpy)."""
    a, b = np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    return a[idx].sum(1) / b[idx].sum(1)


def _percentiles(r, level: float) -> list[float]:
    q = (1 - level) / 2
    return [float(np.quantile(r, q)), float(np.quantile(r, 1 - q))]


def nll_interval(nll: Sequence[float], tokens: Sequence[int], level: float = 0.95,
                 draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """Percentile bootstrap interval over samples of the token-weighted mean NLL (gen-NLL) of scored samples:
    sample i contributes nll[i] nats over tokens[i] tokens. None for fewer than 2 samples."""
    if len(nll) < 2:
        return None
    return _percentiles(_resample_ratio(nll, tokens, draws, seed), level)


def difference_interval(a: tuple[Sequence[float], Sequence[int]], b: tuple[Sequence[float], Sequence[int]],
                        level: float = 0.95, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict:
    """gen-NLL of sample set a minus that of b (independent samples, each resampled on its own): the difference
    and its percentile bootstrap interval. An interval that contains 0 is no evidence of a difference."""
    d = _resample_ratio(*a, draws, seed) - _resample_ratio(*b, draws, seed + 1)
    diff = sum(a[0]) / sum(a[1]) - sum(b[0]) / sum(b[1])
    return {"diff": float(diff), "ci": _percentiles(d, level), "level": level}


def paired_difference_interval(a: tuple[Sequence[float], Sequence[int]], b: tuple[Sequence[float], Sequence[int]],
                               level: float = 0.95, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict:
    """As difference_interval, for PAIRED sample sets (sample i of a and of b drawn from the same seed and stream
    position): each bootstrap replicate takes the same indices from both, so what the pairs share cancels."""
    an, at = np.asarray(a[0], dtype=np.float64), np.asarray(a[1], dtype=np.float64)
    bn, bt = np.asarray(b[0], dtype=np.float64), np.asarray(b[1], dtype=np.float64)
    if len(an) != len(bn):
        raise ValueError(f"paired sets need equal sizes, not {len(an)} and {len(bn)}")
    idx = np.random.default_rng(seed).integers(0, len(an), size=(draws, len(an)))
    d = an[idx].sum(1) / at[idx].sum(1) - bn[idx].sum(1) / bt[idx].sum(1)
    diff = an.sum() / at.sum() - bn.sum() / bt.sum()
    return {"diff": float(diff), "ci": _percentiles(d, level), "level": level}
