"""Repetition and diversity of samples (eval/repetition.py) on hand-made strings."""

import pytest

from edlm.eval.repetition import rep_n, repetition, set_rep_n


def ids(s):
    return [ord(c) for c in s]


def test_rep_n_within_one_sample():
    assert rep_n(ids("abcd"), 1) == 0.0
    assert rep_n(ids("aaaa"), 1) == pytest.approx(0.75)  # 1 unique of 4
    assert rep_n(ids("ababa"), 2) == pytest.approx(0.5)  # ab ba ab ba: 2 unique of 4
    assert rep_n(ids("the the the"), 3) == pytest.approx(1 - 4 / 9)  # 'the', 'he ', 'e t', ' th'
    assert rep_n(ids("ab"), 3) is None
    with pytest.raises(ValueError):
        rep_n(ids("ab"), 0)


def test_set_rep_counts_ngrams_seen_more_than_once_in_the_set():
    # bigrams: ab, bc | ab, bd | xy: 'ab' occurs twice, of 4 distinct
    assert set_rep_n([ids("abc"), ids("abd"), ids("xy")], 2) == pytest.approx(1 / 4)
    assert set_rep_n([ids("abc"), ids("abc")], 3) == 1.0  # two copies: every trigram repeats
    assert set_rep_n([ids("abc"), ids("xyz")], 2) == 0.0
    assert set_rep_n([ids("a")], 2) is None


def test_repetition_summary():
    r = repetition([ids("aaaa"), ids("abcd"), ids("abab")], ns=(1, 2))
    assert r["rep_1"] == pytest.approx((0.75 + 0.0 + 0.5) / 3)
    assert r["rep_2"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)  # aa x3: 1 unique of 3; ab ba ab: 2 of 3
    lo, hi = r["rep_1_ci95"]
    assert lo <= r["rep_1"] <= hi
    assert r["distinct_1"] == pytest.approx(4 / 12) and r["repetition_ns"] == [1, 2]
    assert r["set_rep_1"] == pytest.approx(2 / 4)  # a, b repeat; c, d do not
    one = repetition([ids("x")], ns=(2,))
    assert one["rep_2"] is None and one["rep_2_ci95"] is None and one["set_rep_2"] is None


def test_score_takes_the_metrics_of_eval_samples():
    """edlm.score, the API twin of `edlm eval samples`, takes --metrics: repetition needs no evaluator."""
    import pytest

    import edlm
    from edlm.errors import EdlmError

    rows = [{"ids": [1, 1, 1, 2], "corpus": "synthetic", "seed": 0}, {"ids": [1, 2, 3, 4], "corpus": "synthetic"}]
    out = edlm.score(rows, metrics="repetition")
    assert out["rep_1"] == pytest.approx((2 / 4 + 0) / 2) and out["metrics"] == ["repetition"]
    with pytest.raises(EdlmError, match="reference"):
        edlm.score(rows, metrics="repetition", reference=rows)
    with pytest.raises(EdlmError, match="evaluator"):
        edlm.score(rows)
