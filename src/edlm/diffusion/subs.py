"""SUBS parameterisation: turn raw logits into x_theta(x0 | x_t).

MASK gets probability 0, and positions already unmasked in x_t copy their token (carry-over).
Returns log-probabilities over the real vocabulary only (V = mask_id, the MASK column dropped).
"""

from __future__ import annotations

import torch


def subs_log_probs(logits: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """logits: (B, L, >=V) -> log x_theta: (B, L, V) float32, V = mask_id."""
    logp = torch.log_softmax(logits[..., :mask_id].float(), dim=-1)
    unmasked = x_t != mask_id
    if unmasked.any():
        carry = torch.full_like(logp, float("-inf"))
        carry.scatter_(-1, x_t.clamp(max=mask_id - 1)[..., None], 0.0)
        logp = torch.where(unmasked[..., None], carry, logp)
    return logp


def gather_masked_log_probs(logp: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, mask_id: int):
    """Sum over masked positions of log x_theta(x0^l | x_t): (B, L, V), (B, L) -> (B,) float32."""
    lp = logp.gather(-1, x0[..., None]).squeeze(-1)
    return torch.where(x_t == mask_id, lp, torch.zeros_like(lp)).sum(-1)
