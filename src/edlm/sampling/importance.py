"""EDLM parallel importance sampling (Algorithm 1 of Xu et al. 2025), one denoising step.

    1. k candidates x0^(1..k) ~ mu_theta(.|x_t) for every sequence, one batched float64 draw;
    2. E_j = E(x0^(j), x_t, t) for all B*k candidates in one batched energy call;
    3. j ~ softmax(-E / tau) over each sequence's own k candidates;
    4. x_s ~ q(x_s | x_t, x0^(j)).
Candidates of sequence b are rows b*k .. b*k+k-1 of the flattened batch (kept together by
construction: built as (B, k, L) and only ever reshaped, never re-ordered).
"""

from __future__ import annotations

import torch

from edlm.sampling.ancestral import posterior_step
from edlm.sampling.categorical import sample_categorical


def draw_candidates(logp: torch.Tensor, x_t: torch.Tensor, k: int, mask_id: int, generator=None):
    """-> candidates (B, k, L) and their log mu_theta(x0|x_t) (B, k) (masked positions only)."""
    B, L, V = logp.shape
    masked = x_t == mask_id
    cand = x_t[..., None].expand(B, L, k).clone()  # (B, L, k)
    if masked.any():
        cand[masked] = sample_categorical(logp[masked], k, generator)
    lp = logp.gather(-1, cand).masked_fill(~masked[..., None], 0.0).sum(1)  # (B, k)
    return cand.permute(0, 2, 1), lp


def select(energies: torch.Tensor, temperature: float = 1.0, generator=None):
    """energies (B, k) -> chosen index (B,), weights (B, k) float64, effective sample size (B,)."""
    w = torch.softmax(-energies.double() / temperature, dim=-1)  # lower energy -> more weight
    j = torch.multinomial(w, 1, generator=generator).squeeze(-1)
    ess = 1.0 / (w ** 2).sum(-1)
    return j, w, ess


def importance_step(logp: torch.Tensor, x_t: torch.Tensor, t: float, alpha_t: float, alpha_s: float,
                    energy, k: int, mask_id: int, temperature: float = 1.0, generator=None):
    """One EDLM step. logp: (B, L, V) proposal SUBS log-probs at x_t. Returns x_s (B, L), ess (B,)."""
    B, L, _ = logp.shape
    cand, log_mu = draw_candidates(logp, x_t, k, mask_id, generator)
    x0_flat = cand.reshape(B * k, L)
    xt_flat = x_t.repeat_interleave(k, dim=0)  # row b*k+j is sequence b
    t_flat = torch.full((B * k,), t, device=x_t.device)
    e = energy.energy(x0_flat, xt_flat, t_flat, log_mu=log_mu.reshape(B * k)).view(B, k)
    j, _, ess = select(e, temperature, generator)
    x0 = cand[torch.arange(B, device=x_t.device), j]
    return posterior_step(x0, x_t, alpha_t, alpha_s, mask_id, generator), ess
