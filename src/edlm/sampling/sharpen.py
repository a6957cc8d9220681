"""Sharpness knobs on the proposal: a token temperature T and a nucleus (top-p) threshold p, applied to each
position's distribution before the float64 draw, for every sampler (MDLM steps, EDLM candidates, confidence
unmasking, AR sampling).

    sh = Sharpen(token_temperature=0.8, top_p=0.95)
    logits = sh.logits(raw)          # (N, V) float32: raw / T, then every token outside the nucleus at -inf

The order is the usual one (temperature, then the nucleus of the tempered distribution):
  1. q_T(v) ∝ p(v)^(1/T)                    (T < 1 sharper, T > 1 flatter; T -> 0 is the argmax)
  2. keep the smallest set of the most probable tokens whose q_T-mass is >= p, renormalise.
The nucleus is computed in float64 from the tempered logits; ties at its edge are broken by token id (a stable
sort), so the set is deterministic. T = 1 and p = 1 is no Sharpen at all (`make_sharpen` returns None) and the
samplers then run exactly their old code: same tokens for the same seed.

What the knobs do NOT change: the energy (EDLM weighs candidates by the same E, whose log mu is the model's own,
unsharpened, log-probability) and the confidence of confidence unmasking (the model's own probability of the drawn
token, as LLaDA ranks by the softmax of the raw logits). So EDLM with T < 1 targets q_T * exp(-E) / Z: the energy's
correction of a sharper proposal, which is EDLM at T = 1. The categorical draw reports those raw log-probs
(sampling/categorical.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.config.sampling import check_sharpness


@dataclass(frozen=True)
class Sharpen:
    token_temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self):
        check_sharpness(self.token_temperature, self.top_p)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (N, V) unnormalised log-probs -> (N, V) float32 logits of the sharpened distribution (tokens outside
        the nucleus at -inf; the first column of every row's most probable token is always kept)."""
        x = raw.float()
        if self.token_temperature != 1.0:
            x = x / self.token_temperature
        if self.top_p < 1.0:
            x = x.masked_fill(~nucleus(x, self.top_p), -torch.inf)
        return x


def nucleus(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(N, V) logits -> (N, V) bool: the smallest set of most probable tokens per row whose probability mass is
    >= p (a token is kept when the mass strictly before it, in decreasing order, is below p)."""
    probs = torch.softmax(logits.double(), -1)
    sp, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = sp.cumsum(-1) - sp  # mass of the more probable tokens
    keep_sorted = before < p
    keep_sorted[:, 0] = True  # the mode, whatever p (p > 0 always asks for some mass)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def make_sharpen(token_temperature: float = 1.0, top_p: float = 1.0) -> Sharpen | None:
    """A Sharpen, or None when both knobs are at 1 (the samplers' unchanged path)."""
    check_sharpness(token_temperature, top_p)
    if token_temperature == 1.0 and top_p == 1.0:
        return None
    return Sharpen(float(token_temperature), float(top_p))


class SharpPosterior:
    """A posterior (sampling/denoiser.py) whose draws are sharpened: `logits` are the model's own (energies and
    confidence read them), `sharpen` tells the categorical draw what to draw from."""

    def __init__(self, post, sharpen: Sharpen):
        self.post, self.sharpen = post, sharpen

    @property
    def forwards(self) -> int:
        return self.post.forwards

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        return self.post.logits(rows)


def sharpened(posterior, sharpen: Sharpen | None):
    """posterior(x_t, t) -> the same function with sharpened draws (itself when sharpen is None)."""
    if sharpen is None:
        return posterior
    return lambda x_t, t: SharpPosterior(posterior(x_t, t), sharpen)
