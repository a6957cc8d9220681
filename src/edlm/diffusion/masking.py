"""The forward process q(x_t | x_0) of masked diffusion, and antithetic time draws."""

from __future__ import annotations

import torch

from edlm.diffusion.schedules import T_EPS


def antithetic_times(batch: int, *, eps: float = T_EPS, generator=None, device=None) -> torch.Tensor:
    """Stratified t: t_i = ((u + i/B) mod 1)(1-eps) + eps, one uniform u for the whole batch (lower variance)."""
    u = torch.rand((), generator=generator, device=device)
    t = (u + torch.arange(batch, device=device) / batch) % 1
    return t * (1 - eps) + eps


def mask_tokens(x0: torch.Tensor, alpha_t: torch.Tensor, mask_id: int, generator=None, u=None) -> torch.Tensor:
    """Each token independently becomes MASK with probability 1 - alpha_t. alpha_t: (B,) or scalar.
    u: optional pre-drawn uniforms (B, L) (lets every DDP rank slice one global draw)."""
    alpha_t = torch.as_tensor(alpha_t, device=x0.device, dtype=torch.float32)
    if alpha_t.dim() == 1:
        alpha_t = alpha_t[:, None]
    if u is None:
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
    return torch.where(u < 1 - alpha_t, torch.full_like(x0, mask_id), x0)
