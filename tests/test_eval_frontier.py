"""Frontier math (eval/frontier.py) on synthetic curves whose answer is known."""

import numpy as np
import pytest

from edlm.eval.frontier import Cell, Curve, compare, matched, matched_difference


def cell(x, y, n=400, noise=0.05, seed=0, knob=None, tokens=10):
    """A cell whose mean entropy is x and whose gen-NLL is y (plus zero-mean noise per sample)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, noise, n) if noise else np.zeros(n)
    e -= e.mean()
    f = rng.normal(0, noise, n) if noise else np.zeros(n)
    f -= f.mean()
    scores = [[(y + v) * tokens, tokens] for v in f]
    return Cell.of(scores, list(x + e), knob=knob)


def curve(label, pts, **kw):
    return Curve(label, [cell(x, y, seed=i + 7 * len(label), knob=i, **kw) for i, (x, y) in enumerate(pts)])


def test_cell_point_and_interval():
    c = cell(2.0, 3.0)
    p = c.point()
    assert p["entropy"] == pytest.approx(2.0) and p["gen_nll"] == pytest.approx(3.0) and p["num"] == 400
    assert p["entropy_ci95"][0] < 2.0 < p["entropy_ci95"][1] and p["gen_nll_ci95"][0] < 3.0 < p["gen_nll_ci95"][1]
    assert p["gen_nll_ci95"][1] - p["gen_nll_ci95"][0] < 0.02  # sd 0.05 / sqrt(400) * 4


def test_cell_drops_unscored_samples_and_weights_by_tokens():
    c = Cell.of([[10.0, 5], [0.0, 0], [30.0, 5]], [1.0, 9.0, 2.0])
    assert c.y == pytest.approx(4.0) and c.x == pytest.approx(1.5)
    with pytest.raises(ValueError):
        Cell.of([[1.0, 1]], [1.0, 2.0])


def test_interpolation_on_a_linear_curve_is_exact():
    # y = 2x + 1 through cells at x = 1, 2, 3 given out of order: at 2.5 the answer is 6 exactly
    c = Curve("lin", [cell(3, 7, noise=0), cell(1, 3, noise=0), cell(2, 5, noise=0)])
    assert c.range == (1.0, 3.0)
    assert c.value(2.5) == pytest.approx(6.0) and c.value(1.0) == pytest.approx(3.0)
    assert c.value(0.99) is None and c.value(3.01) is None  # no extrapolation
    m = matched(c, 2.5)
    assert m["gen_nll"] == pytest.approx(6.0) and m["gen_nll_ci95"] == pytest.approx([6.0, 6.0])
    assert m["bracket_entropy"] == pytest.approx([2.0, 3.0])
    assert matched(c, 4.0)["gen_nll"] is None and matched(c, 4.0)["range"] == [1.0, 3.0]
    # with noise the interval holds the answer and the point is near it
    n = Curve("lin", [cell(x, 2 * x + 1, seed=x) for x in (1, 2, 3)])
    m = matched(n, 2.5)
    assert m["gen_nll_ci95"][0] < 6.0 < m["gen_nll_ci95"][1] and m["gen_nll"] == pytest.approx(6.0, abs=1e-9)


def test_a_frontier_shifted_down_by_a_constant_is_below_and_separated():
    pts = [(1.0, 4.0), (1.5, 3.2), (2.0, 2.9), (2.6, 2.7)]
    a = curve("a", [(x, y - 0.3) for x, y in pts])
    b = curve("b", [(x + 0.1, y) for x, y in pts])  # a slightly different entropy range: compared where shared
    r = compare(a, b)
    assert r["relation"] == "below" and r["separated"]
    assert r["shared"] == pytest.approx([1.1, 2.6], abs=1e-9)
    assert "a lies below b" in r["text"] and "separated" in r["text"]
    for _lo, hi in r["diff_ci95"]:
        assert hi < 0
    back = compare(b, a)
    assert back["relation"] == "above" and back["separated"] and "a lies below b" in back["text"]
    # same x: the matched difference is the shift, and its interval holds it
    a2, b2 = curve("a", [(x, y - 0.3) for x, y in pts]), curve("b", pts)
    d = matched_difference(a2, b2, 1.8)
    assert d["diff"] == pytest.approx(-0.3, abs=1e-9) and d["ci95"][0] < -0.3 < d["ci95"][1]
    assert matched_difference(a2, b2, 5.0) is None


def test_a_small_shift_inside_the_noise_overlaps():
    pts = [(1.0, 4.0), (2.0, 3.0)]
    a = curve("a", [(x, y - 0.002) for x, y in pts], noise=0.5, n=100)
    r = compare(a, curve("b", pts, noise=0.5, n=100))
    assert r["relation"] in ("below", "crossing") and not r["separated"]


def test_crossing_frontiers():
    a = curve("a", [(0.0, 2.0), (1.0, 1.0), (2.0, 0.0)])  # 2 - x
    b = curve("b", [(0.0, 1.0), (2.0, 1.0)])  # flat at 1: they cross at x = 1
    r = compare(a, b)
    assert r["relation"] == "crossing" and not r["separated"]
    assert "separated on both sides" in r["text"]
    d = np.array(r["diff"])
    assert d[0] > 0.9 and d[-1] < -0.9 and np.allclose(d, 1 - np.array(r["levels"]), atol=1e-9)


def test_no_shared_range_and_single_cell_curves():
    a = curve("a", [(1.0, 3.0), (1.5, 2.0)])
    b = curve("b", [(2.0, 1.0), (3.0, 0.5)])
    assert compare(a, b)["relation"] == "none"
    point = Curve("ar", [cell(1.2, 1.0)])  # one cell inside a's range: compared at that one entropy
    r = compare(point, a)
    assert r["relation"] == "below" and len(r["levels"]) == 1 and r["levels"][0] == pytest.approx(1.2)


def test_below_everywhere_but_separated_only_where_the_gap_is_wide():
    # the gap shrinks from 1.0 at x = 1 to 0.01 at x = 3 (a sampler whose advantage fades as T grows)
    a = curve("a", [(1.0, 4.0 - 1.0), (2.0, 3.0 - 0.5), (3.0, 2.0 - 0.01)], noise=0.3, n=300)
    b = curve("b", [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0)], noise=0.3, n=300)
    r = compare(a, b)
    assert r["relation"] == "below" and not r["separated"]
    assert "separated at" in r["text"] and "of 9" in r["text"] and "entropy 1.000-" in r["text"]
    assert r["mid"]["level"] == pytest.approx(2.0) and r["mid"]["diff"] == pytest.approx(-0.5, abs=1e-9)
