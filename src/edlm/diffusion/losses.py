"""Training/evaluation losses, returned as SUMS (plus token counts) so callers divide once.

MDLM continuous-time NELBO per sequence:
    L = E_t [ alpha'_t / (1 - alpha_t) * sum_{l: x_t^l = MASK} log x_theta^l(x0^l | x_t) ]  (>= 0)
"""

from __future__ import annotations

import torch

from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import nelbo_weight
from edlm.diffusion.subs import gather_masked_log_probs, subs_log_probs


def mdlm_nelbo(model, x0: torch.Tensor, schedule, mask_id: int, *, generator=None, t=None, u=None,
               t_eps: float = 1e-3, antithetic: bool = True) -> torch.Tensor:
    """Per-sequence NELBO estimate (B,) in nats (sum over positions, one t per sequence).
    t (B,) and u (B, L) may be given (pre-drawn noise); otherwise they are drawn from `generator`."""
    B = x0.shape[0]
    if t is None:
        if antithetic:
            t = antithetic_times(B, eps=t_eps, generator=generator, device=x0.device)
        else:
            t = torch.rand(B, generator=generator, device=x0.device) * (1 - t_eps) + t_eps
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, generator, u)
    logp = subs_log_probs(model(x_t, t), x_t, mask_id)
    return nelbo_weight(schedule, t).float() * gather_masked_log_probs(logp, x0, x_t, mask_id)


def mdlm_discrete_nelbo(model, x0, schedule, mask_id: int, num_steps: int, *, generator=None):
    """Discrete-time (T steps) NELBO estimate: t on the grid i/T, weight T*(alpha_s-alpha_t)/(1-alpha_t)."""
    B = x0.shape[0]
    i = torch.randint(1, num_steps + 1, (B,), generator=generator, device=x0.device)
    t, s = i / num_steps, (i - 1) / num_steps
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, generator)
    logp = subs_log_probs(model(x_t, t), x_t, mask_id)
    w = num_steps * (schedule.alpha(s) - schedule.alpha(t)) / (1 - schedule.alpha(t))
    return -w.float() * gather_masked_log_probs(logp, x0, x_t, mask_id)


def ar_token_log_probs(model, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """log p_AR(x^l | x^{<l}) for every position (B, L), float32. The input is [BOS, x^1..x^{L-1}],
    so the first token is scored too and sum(-1) is the exact log p_AR(x) of the whole sequence.
    BOS reuses the MASK id, which an AR model never sees otherwise."""
    inp = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)
    logits = model(inp)[..., :bos_id].float()
    return torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)


def ar_nll(model, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Per-sequence AR negative log-likelihood (B,) in nats, every one of the L tokens scored."""
    return -ar_token_log_probs(model, x, bos_id).sum(-1)
