"""Entropy, distinct-n and the speed/settings summary on hand-made inputs with known answers."""

import math

import pytest

from edlm.eval.stats import carried, distinct_n, sample_stats, unigram_entropy


def test_unigram_entropy_known_values():
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy([7, 7, 7, 7]) == 0.0
    assert unigram_entropy([0, 1, 0, 1]) == pytest.approx(math.log(2))
    assert unigram_entropy([3, 1, 4, 5]) == pytest.approx(math.log(4))
    # histogram {a: 2, b: 1, c: 1}: -(1/2 log 1/2 + 2 * 1/4 log 1/4) = 1.5 log 2
    assert unigram_entropy([9, 9, 2, 5]) == pytest.approx(1.5 * math.log(2))
    # order does not matter, only the sample's own histogram
    assert unigram_entropy([2, 9, 5, 9]) == unigram_entropy([9, 9, 2, 5])


def test_distinct_n_known_values():
    s = [[1, 2, 3], [1, 2, 4]]
    assert distinct_n(s, 1) == pytest.approx(4 / 6)  # unigrams 1,2,3,1,2,4 -> {1,2,3,4}
    assert distinct_n(s, 2) == pytest.approx(3 / 4)  # (1,2),(2,3),(1,2),(2,4)
    assert distinct_n(s, 3) == pytest.approx(2 / 2)
    assert distinct_n(s, 4) is None  # no 4-gram at all
    # n-grams never cross sample boundaries: (3, 1) must not be counted
    assert distinct_n([[1, 2, 3], [1]], 2) == pytest.approx(2 / 2)
    assert distinct_n([[5, 5, 5, 5]], 2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        distinct_n(s, 0)


def test_sample_stats_mean_entropy_speed_and_settings():
    rows = [
        {"ids": [0, 1, 0, 1], "seconds": 1.0, "method": "mdlm", "steps": 8, "k": 0, "window": None},
        {"ids": [2, 2, 2, 2], "seconds": 3.0, "method": "mdlm", "steps": 8, "k": 0, "window": None},
    ]
    st = sample_stats(rows)
    assert st["entropy_nats"] == pytest.approx(math.log(2) / 2)  # mean of log 2 and 0
    assert st["entropy_bits"] == pytest.approx(0.5)
    assert st["seconds_per_sample"] == pytest.approx(2.0)
    assert st["tokens_per_second"] == pytest.approx(8 / 4.0)
    assert st["distinct_1"] == pytest.approx(3 / 8)
    assert (st["method"], st["steps"], st["k"], st["window"]) == ("mdlm", 8, 0, None)
    rows[1]["steps"] = 16
    assert sample_stats(rows)["steps"] == [8, 16]
    del rows[0]["seconds"]
    assert sample_stats(rows)["seconds_per_sample"] is None


def test_carried_values():
    assert carried([{"window": [0, 1]}, {"window": [0, 1]}], "window") == [0, 1]
    assert carried([{}, {}], "k") is None


def test_nll_interval_covers_the_true_mean():
    """Coverage of the 95% percentile bootstrap for the token-weighted mean NLL: over 200 simulated sample sets
    (64 samples, per-sample NLL ~ tokens * Gamma), the interval holds the true mean 88-99% of the time
    (binomial s.e. 1.5% around 95%; the percentile bootstrap under-covers a little at n = 64)."""
    import numpy as np

    from edlm.eval.stats import nll_interval

    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        tokens = rng.integers(32, 65, size=64)
        nll = tokens * rng.gamma(4.0, 0.5, size=64)  # true per-token mean 2.0
        lo, hi = nll_interval(nll.tolist(), tokens.tolist(), draws=500)
        hits += lo <= 2.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    assert nll_interval([1.0], [4]) is None


def test_difference_interval_separates_only_real_differences():
    import numpy as np

    from edlm.eval.stats import difference_interval

    rng = np.random.default_rng(1)
    tok = [64] * 128
    a = (64 * rng.normal(2.0, 0.3, 128)).tolist()
    same = (64 * rng.normal(2.0, 0.3, 128)).tolist()
    worse = (64 * rng.normal(2.2, 0.3, 128)).tolist()
    d0 = difference_interval((same, tok), (a, tok))
    d1 = difference_interval((worse, tok), (a, tok))
    assert d0["ci"][0] < 0 < d0["ci"][1]  # same distribution: 0 inside
    assert 0 < d1["ci"][0] < d1["diff"] < d1["ci"][1]  # 0.2 nats worse: interval above 0
    assert abs(d1["diff"] - (sum(worse) - sum(a)) / (64 * 128)) < 1e-12
