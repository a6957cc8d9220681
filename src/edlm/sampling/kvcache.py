"""Cached block decoding: a denoiser for one block of a longer window that reuses the keys and values of the
positions outside the block (as Fast-dLLM's prefix and dual caches do).

Block-wise generation (sampling/blocks.py) denoises one block [a, b) of a window at a time. The sampler sees
x = window[:, :b] (the left context, all unmasked, and the block) and the denoiser appends the window's tail
[b, hi) (masked positions of later blocks, or fixed infill tokens). Without a cache every network call runs
the whole window. With one, a call either

  * refreshes: runs the whole window once (the same numbers as no cache) and keeps every layer's keys and
    values of the positions outside what it will recompute; or
  * runs only the block (dual cache) or the block and the tail (prefix cache), attending over the kept keys
    and values.

`prefix` keeps the left context only; `dual` keeps the tail too. A refresh happens on a block's first call
and then on every `refresh`-th call (0 = only at the block's start; 1 = every call, which is exactly the
uncached denoiser).

An approximation for a bidirectional model: the left context's keys and values depend on every position of
the window, the block's included, so once the block's tokens change they are stale (a causal model would
make them exact; the models here attend both ways). The dual cache adds the tail's, which change as the
block fills in. How much this costs in sample quality is measured in docs/studies/fast_samplers.md. A
time-conditioned model's kept keys and values also carry the time of the refresh.
"""

from __future__ import annotations

import torch

from edlm.config.sampling import KV_CACHES
from edlm.diffusion.subs import subs_log_probs
from edlm.sampling.denoiser import ModelDenoiser, _times


class BlockDenoiser(ModelDenoiser):
    """The model's denoiser over x (B, b) = [left context | block], with `tail` (B, m) appended to what the
    network sees (m may be 0). `block_start` = a: the block's first position in x; positions before it are
    never asked for (they are unmasked). cache: "none", "prefix" or "dual"; refresh as in the module doc."""

    def __init__(self, model, mask_id: int, tail: torch.Tensor, block_start: int, cache: str = "none",
                 refresh: int = 0):
        super().__init__(model, mask_id)
        if cache not in KV_CACHES:
            raise ValueError(f"kv cache {cache!r}: use one of {', '.join(KV_CACHES)}")
        self.tail, self.a, self.cache, self.refresh = tail, block_start, cache, refresh
        self.kv = None
        self.calls = 0
        self.refreshes = 0
        """network calls that ran the whole window"""

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return subs_log_probs(self.model.head(self.features(x_t, t)), x_t, self.mask_id)

    def _window(self, x_t):
        return torch.cat([x_t, self.tail], 1) if self.tail.shape[1] else x_t

    def features(self, x_t: torch.Tensor, t) -> torch.Tensor:
        n, m = x_t.shape[1], self.tail.shape[1]
        times = _times(t, x_t)
        window = self._window(x_t)
        due = self.kv is None or (self.refresh > 0 and self.calls % self.refresh == 0)
        self.calls += 1
        # Nothing outside the recomputed span to keep (the first block of a window with no tail): run it all.
        span_hi = n if self.cache == "dual" else n + m
        if self.cache == "none" or (self.a == 0 and span_hi == n + m):
            self.refreshes += 1
            return self.model.trunk(window, times)[:, :n]
        if due:
            self.refreshes += 1
            f, kv = self.model.features_and_kv(window, times)
            keep = torch.ones(n + m, dtype=torch.bool, device=x_t.device)
            keep[self.a:span_hi] = False
            self.kv = self.model.kv_positions(kv, keep)
            return f[:, :n]
        fs = self.model.span_features(window[:, self.a:span_hi], times, self.a, self.kv)
        out = fs.new_zeros(x_t.shape[0], n, fs.shape[-1])  # rows before the block are never drawn
        out[:, self.a:] = fs[:, :n - self.a]
        return out
