"""Autoregressive sampling with a KV cache, float64 categorical draws, optional fixed prefix."""

from __future__ import annotations

import torch

from edlm.sampling.categorical import sample_categorical


@torch.no_grad()
def ar_sample(model, batch: int, length: int, bos_id: int, *, prefix: torch.Tensor | None = None,
              generator=None, device=None, temperature: float = 1.0, prefix_len: torch.Tensor | None = None,
              sharpen=None) -> torch.Tensor:
    """Returns (B, length) int64. prefix: (B, P) tokens to keep at the start; prefix_len (B,): row b keeps only
    its first prefix_len[b] (per-sample prefixes; generation runs from the shortest, the longer ones forced).
    sharpen: a sampling/sharpen.py Sharpen (token temperature, top-p) applied to each next-token distribution,
    or None."""
    caches = model.new_kv_caches()
    out = torch.empty(batch, length, dtype=torch.long, device=device)
    P = 0 if prefix is None else prefix.shape[1]
    if P:
        out[:, :P] = prefix
    start = P if prefix_len is None else int(prefix_len.min())
    inp = torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long, device=device), out[:, :start]], 1)
    logits = model(inp, kv_caches=caches)[:, -1, :bos_id]
    for i in range(start, length):
        tok = sample_categorical(logits.float() / temperature, 1, generator, sharpen=sharpen).squeeze(-1)
        if prefix_len is not None and i < P:
            tok = torch.where(i < prefix_len, out[:, i], tok)
        out[:, i] = tok
        if i + 1 < length:
            logits = model(tok[:, None], start=i + 1, kv_caches=caches)[:, -1, :bos_id]
    return out
