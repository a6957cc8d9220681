"""Categorical draws in float64.

Sampling from float32 probabilities (or float32 Gumbel noise) truncates the tail and lowers the
effective temperature: lower generative perplexity AND lower entropy, a fake win. Every draw here
converts log-probs to float64 first, in row chunks so no float64 copy of a whole (B, L, V) tensor
is ever made.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24  # float64 elements per chunk (128 MiB)


def sample_categorical(logp: torch.Tensor, num_samples: int = 1, generator=None) -> torch.Tensor:
    """logp: (N, V) log-probs (any float dtype, rows may be unnormalised) -> (N, num_samples) int64."""
    N, V = logp.shape
    out = torch.empty(N, num_samples, dtype=torch.long, device=logp.device)
    rows = max(1, CHUNK_ELEMENTS // max(V, 1))
    for i in range(0, N, rows):
        p = torch.softmax(logp[i:i + rows].double(), dim=-1)
        out[i:i + rows] = torch.multinomial(p, num_samples, replacement=True, generator=generator)
    return out
