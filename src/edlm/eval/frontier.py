"""Frontiers: gen-NLL against entropy as a sharpness knob (token temperature, top-p) moves, and which sampler is
better at MATCHED entropy. A single (gen-NLL, entropy) point cannot rank samplers: any of them reaches a lower
gen-NLL by giving up entropy. Comparing curves over the entropy range they share can.

    a = Curve("mdlm", [Cell.of(scores, entropies, knob=T) for T, scores, entropies in ...])
    compare(a, b)                     # below / above / crossing over the shared range, with intervals
    matched(a, level=data_entropy)    # a's gen-NLL interpolated at that entropy, with an interval

- A cell is one sampler at one knob setting: per sample its summed NLL (nats), scored tokens and unigram entropy.
  Its point: x = mean entropy, y = token-weighted gen-NLL (sum nll / sum tokens).
- A curve joins its cells, ordered by x, with straight lines; its value at an entropy h is the linear
  interpolation between the two cells that bracket h (None outside the curve's range: no extrapolation).
- Intervals are percentile bootstraps over samples: a replicate resamples every cell's samples with replacement
  (x and y from the same resample), recomputes the cell points, and interpolates between the SAME two bracketing
  cells (chosen on the point estimates). Cells of different curves are independent samples, so a difference of two
  curves resamples each on its own stream.
- `compare` evaluates the difference a - b on a grid of levels spanning the shared range: "below" when a's value
  is lower at every level, "above" when higher, "crossing" otherwise; "separated" when the difference's 95%
  interval excludes 0 at every level (else the intervals overlap somewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edlm.eval.stats import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED

LEVELS = 9
"""grid points over a shared entropy range in compare()"""


@dataclass
class Cell:
    nll: np.ndarray
    """(n,) summed NLL of each sample, nats"""
    tokens: np.ndarray
    """(n,) scored tokens of each sample"""
    entropy: np.ndarray
    """(n,) unigram entropy of each sample, nats"""
    knob: object = None
    """the setting it was drawn at (e.g. "T=0.8"), for labels"""

    @classmethod
    def of(cls, scores: Sequence[Sequence[float]], entropy: Sequence[float], knob: object = None) -> Cell:
        """scores: per sample (nll, tokens) (evaluate_rows(keep_scores=True)'s "scores"); samples with no scored
        token are dropped from both."""
        keep = [i for i, s in enumerate(scores) if s[1] > 0]
        if len(scores) != len(entropy):
            raise ValueError(f"{len(scores)} scores but {len(entropy)} entropies")
        if not keep:
            raise ValueError("a cell needs at least one sample with scored tokens")
        return cls(np.asarray([scores[i][0] for i in keep], dtype=np.float64),
                   np.asarray([scores[i][1] for i in keep], dtype=np.float64),
                   np.asarray([entropy[i] for i in keep], dtype=np.float64), knob)

    @property
    def x(self) -> float:
        return float(self.entropy.mean())

    @property
    def y(self) -> float:
        return float(self.nll.sum() / self.tokens.sum())

    def replicates(self, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(draws,) bootstrap replicates of (x, y), each from one resample of the samples."""
        idx = rng.integers(0, len(self.nll), size=(draws, len(self.nll)))
        return self.entropy[idx].mean(1), self.nll[idx].sum(1) / self.tokens[idx].sum(1)

    def point(self, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> dict:
        """x, y and their intervals: {"entropy", "entropy_ci95", "gen_nll", "gen_nll_ci95", "num"}."""
        xs, ys = self.replicates(draws, np.random.default_rng(seed))
        return {"entropy": self.x, "entropy_ci95": _pct(xs, level), "gen_nll": self.y, "gen_nll_ci95": _pct(ys, level),
                "num": len(self.nll)}


@dataclass
class Curve:
    label: str
    cells: list[Cell] = field(default_factory=list)

    def __post_init__(self):
        if not self.cells:
            raise ValueError(f"curve {self.label!r} has no cell")
        self.cells = sorted(self.cells, key=lambda c: c.x)

    @property
    def xs(self) -> np.ndarray:
        return np.array([c.x for c in self.cells])

    @property
    def ys(self) -> np.ndarray:
        return np.array([c.y for c in self.cells])

    @property
    def range(self) -> tuple[float, float]:
        return float(self.xs[0]), float(self.xs[-1])

    def bracket(self, h: float) -> tuple[int, int] | None:
        """Indices (i, j) of the cells whose x bracket h (i == j when one cell sits at h); None outside the range."""
        xs = self.xs
        if h < xs[0] or h > xs[-1]:
            return None
        j = int(np.searchsorted(xs, h, side="left"))
        if xs[j] == h:
            return j, j
        return j - 1, j

    def value(self, h: float) -> float | None:
        """The curve's gen-NLL at entropy h (linear between the bracketing cells), None outside its range."""
        b = self.bracket(h)
        return None if b is None else float(_lerp(self.xs[list(b)], self.ys[list(b)], h))

    def replicate_values(self, levels: Sequence[float], draws: int, rng: np.random.Generator) -> np.ndarray:
        """(draws, len(levels)) bootstrap replicates of the curve's value at each level (NaN outside its range);
        every replicate resamples every cell once, so the values at different levels are one consistent curve."""
        reps = [c.replicates(draws, rng) for c in self.cells]
        X = np.stack([r[0] for r in reps], 1)  # (draws, C)
        Y = np.stack([r[1] for r in reps], 1)
        out = np.full((draws, len(levels)), np.nan)
        for k, h in enumerate(levels):
            b = self.bracket(h)
            if b is not None:
                out[:, k] = _lerp(X[:, list(b)], Y[:, list(b)], h)
        return out


def _lerp(x2, y2, h):
    """Value at h of the line through (x2[..., 0], y2[..., 0]) and (x2[..., 1], y2[..., 1]) (the mean of the two
    y when the x coincide); x2, y2 (..., 2)."""
    x2, y2 = np.asarray(x2, dtype=np.float64), np.asarray(y2, dtype=np.float64)
    dx = x2[..., 1] - x2[..., 0]
    flat = np.abs(dx) < 1e-12
    w = np.where(flat, 0.5, (h - x2[..., 0]) / np.where(flat, 1.0, dx))
    return y2[..., 0] + w * (y2[..., 1] - y2[..., 0])


def _pct(r: np.ndarray, level: float = 0.95) -> list[float]:
    q = (1 - level) / 2
    return [float(np.quantile(r, q)), float(np.quantile(r, 1 - q))]


def matched(curve: Curve, level: float, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict:
    """The curve's gen-NLL at entropy `level` with a 95% interval (the samples of its two bracketing cells
    bootstrapped), or gen_nll None when the level is outside the curve's entropy range."""
    b = curve.bracket(level)
    out: dict = {"label": curve.label, "level": level, "range": list(curve.range)}
    if b is None:
        return {**out, "gen_nll": None, "gen_nll_ci95": None}
    vals = curve.replicate_values([level], draws, np.random.default_rng(seed))[:, 0]
    knobs = [curve.cells[i].knob for i in b]
    return {**out, "gen_nll": curve.value(level), "gen_nll_ci95": _pct(vals), "bracket_knobs": knobs,
            "bracket_entropy": [float(curve.xs[i]) for i in b]}


def shared_range(a: Curve, b: Curve) -> tuple[float, float] | None:
    lo, hi = max(a.range[0], b.range[0]), min(a.range[1], b.range[1])
    return (lo, hi) if lo <= hi else None


def compare(a: Curve, b: Curve, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED,
            levels: int = LEVELS) -> dict:
    """Is a's frontier below b's over the entropy range they share? The difference a - b (gen-NLL, nats/token)
    at `levels` evenly spaced entropies of the shared range, each with a 95% bootstrap interval, and a verdict:
    relation "below" / "above" (a lower / higher at every level) / "crossing" / "none" (no shared range);
    separated: the difference's interval excludes 0 at every level."""
    out: dict = {"a": a.label, "b": b.label}
    rng = shared_range(a, b)
    if rng is None:
        return {**out, "relation": "none", "separated": False, "shared": None,
                "text": f"{a.label} and {b.label} share no entropy range ({_r(a.range)} vs {_r(b.range)})"}
    hs = np.linspace(rng[0], rng[1], levels if rng[1] > rng[0] else 1)
    d = np.array([a.value(h) - b.value(h) for h in hs])
    ra = a.replicate_values(hs, draws, np.random.default_rng(seed))
    rb = b.replicate_values(hs, draws, np.random.default_rng(seed + 1))
    ci = [_pct(ra[:, k] - rb[:, k]) for k in range(len(hs))]
    clear = [hi < 0 or lo > 0 for lo, hi in ci]
    if (d < 0).all():
        rel = "below"
    elif (d > 0).all():
        rel = "above"
    else:
        rel = "crossing"
    sep = all(clear)
    out.update(relation=rel, separated=sep, shared=[float(rng[0]), float(rng[1])], levels=hs.tolist(),
               diff=d.tolist(), diff_ci95=ci)
    span = f"entropy {_r(rng)}"
    if rel == "crossing":
        lower = [h for h, v, c in zip(hs, d, clear, strict=True) if v < 0 and c]
        higher = [h for h, v, c in zip(hs, d, clear, strict=True) if v > 0 and c]
        if lower and higher:
            how = "the intervals separated on both sides of the crossing"
        elif lower or higher:
            who = a.label if lower else b.label
            how = f"only {who}'s lead is outside the intervals"
        else:
            how = "inside the intervals everywhere"
        out["text"] = f"{a.label} and {b.label} cross over {span} ({how})"
    else:
        who, other = (a.label, b.label) if rel == "below" else (b.label, a.label)
        if sep:
            how = "separated (the difference's 95% interval excludes 0 at every level)"
        else:
            at = [h for h, c in zip(hs, clear, strict=True) if c]
            how = "the intervals overlapping at every level" if not at else (
                f"the intervals overlapping at some levels (separated at {len(at)} of {len(hs)}: "
                f"entropy {_r((min(at), max(at)))})")
        out["text"] = f"{who} lies below {other} over {span}, {how}"
    mid = len(hs) // 2
    out["mid"] = {"level": float(hs[mid]), "diff": float(d[mid]), "ci95": ci[mid]}
    return out


def matched_difference(a: Curve, b: Curve, level: float, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = BOOTSTRAP_SEED) -> dict | None:
    """a's gen-NLL minus b's at entropy `level`, with a 95% interval; None when either curve does not reach it."""
    if a.bracket(level) is None or b.bracket(level) is None:
        return None
    ra = a.replicate_values([level], draws, np.random.default_rng(seed))[:, 0]
    rb = b.replicate_values([level], draws, np.random.default_rng(seed + 1))[:, 0]
    return {"diff": a.value(level) - b.value(level), "ci95": _pct(ra - rb), "level": level}


def _r(r) -> str:
    return f"{r[0]:.3f}-{r[1]:.3f}"
