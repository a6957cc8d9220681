"""Autoregressive sampling with a KV cache, float64 categorical draws, optional fixed prefix."""

from __future__ import annotations

import torch

from edlm.sampling.categorical import sample_categorical


@torch.no_grad()
def ar_sample(model, batch: int, length: int, bos_id: int, *, prefix: torch.Tensor | None = None,
              generator=None, device=None, temperature: float = 1.0, sharpen=None) -> torch.Tensor:
    """Returns (B, length) int64. prefix: (B, P) tokens to keep at the start. sharpen: a sampling/sharpen.py
    Sharpen (token temperature, top-p) applied to each next-token distribution, or None."""
    caches = model.new_kv_caches()
    out = torch.empty(batch, length, dtype=torch.long, device=device)
    P = 0 if prefix is None else prefix.shape[1]
    if P:
        out[:, :P] = prefix
    inp = torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long, device=device), out[:, :P]], 1)
    logits = model(inp, kv_caches=caches)[:, -1, :bos_id]
    for i in range(P, length):
        tok = sample_categorical(logits.float() / temperature, 1, generator, sharpen=sharpen).squeeze(-1)
        out[:, i] = tok
        if i + 1 < length:
            logits = model(tok[:, None], start=i + 1, kv_caches=caches)[:, -1, :bos_id]
    return out
