"""Confidence-based unmasking (LLaDA's low-confidence remasking, Fast-dLLM's fixed-count decoding), and EDLM on
top of it.

MDLM's step t -> s unmasks a RANDOM subset of the masked positions (each with probability
(alpha_s - alpha_t)/(1 - alpha_t)) and draws their tokens independently. Confidence-based unmasking instead

    1. draws a token at EVERY masked position from x_theta(.|x_t) (float64 inverse-CDF, as everywhere);
    2. keeps only the n most confident draws (confidence = the probability of the drawn token); the other
       positions stay masked and are drawn again at the next step, from a denoiser that now sees more;
    3. n = what the schedule unmasks in expectation on this step, rounded with the remainder carried
       (so the total is exact and the last step unmasks everything left), at least 1 while masks remain.

The count (`confidence_counts`): a sequence that started with M0 masked positions should have
M0 (1 - alpha_s) still masked after the step (alpha is pinned to 0 at t = 1 and 1 at t = 0), so it
unmasks n = masked_now - round(M0 (1 - alpha_s)), clamped to [1, masked_now]. Rounding the CUMULATIVE
target is the carried remainder: the per-step counts add up to M0 exactly. With more steps than masked
positions the "at least 1" makes the sampler finish after M0 steps (one position per step).

EDLM on top (`confidence_importance_step`): draw k full candidates from mu(.|x_t) (one batched float64
draw), weigh them by softmax(-E/tau) exactly as `importance_step` does, pick one, and keep the picked
candidate's n most confident positions (its own per-position probabilities under mu).

This is a deliberately biased sampler: it does not sample the model's distribution even for an exact
denoiser (it prefers high-probability tokens first), so report its entropy next to its quality.
"""

from __future__ import annotations

import torch

from edlm.sampling.denoiser import as_posterior
from edlm.sampling.importance import candidate_energies, draw_at_masked, select


def confidence_counts(masked: torch.Tensor, start: torch.Tensor, alpha_s: float) -> torch.Tensor:
    """How many positions each sequence unmasks on a step that ends at alpha_s.

    masked (B,) int: masked positions now; start (B,) int: masked positions when sampling began.
    -> (B,) int64, in [min(1, masked), masked]; equal to `masked` when alpha_s = 1."""
    target = torch.round(start.double() * (1.0 - alpha_s)).long()  # still masked after the step
    n = masked - target
    return torch.minimum(torch.clamp(n, min=1), masked).clamp(min=0)


def keep_most_confident(conf: torch.Tensor, eligible: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """conf (B, L) float, eligible (B, L) bool, n (B,) int -> (B, L) bool: the n[b] eligible positions of row
    b with the highest confidence (ties: the lower position first; a stable sort, so deterministic)."""
    score = torch.where(eligible, conf.double().clamp(min=-1e300), torch.full_like(conf, -torch.inf,
                                                                                 dtype=torch.float64))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # (B, L)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    return eligible & (rank < n[:, None])


def _draw_all_masked(post, x_t: torch.Tensor, k: int, mask_id: int, generator=None, seqs=None):
    """k tokens at every masked position (of the sequences `seqs`, default all) -> candidates (B, L, k) (x_t's
    tokens elsewhere) and their per-position log-probs (B, L, k) (0 at clean positions). One float64 draw."""
    B, L = x_t.shape
    cand, lp = draw_at_masked(post, x_t, k, mask_id, generator, seqs)
    return cand.view(B, L, k), lp.view(B, L, k)


def confidence_step(post, x_t: torch.Tensor, start: torch.Tensor, alpha_s: float, mask_id: int, generator=None):
    """One confidence-unmasking step. post: a posterior at x_t (sampling/denoiser.py) or (B, L, V) SUBS
    log-probs; start (B,): masked positions per sequence when sampling began.
    Returns (x_s, moved): x_s (B, L) and how many positions unmasked (a Python int)."""
    post = as_posterior(post)
    masked = x_t == mask_id
    n = confidence_counts(masked.sum(1), start, alpha_s)
    cand, lp = _draw_all_masked(post, x_t, 1, mask_id, generator)
    keep = keep_most_confident(lp[..., 0], masked, n)
    x_s = torch.where(keep, cand[..., 0], x_t)
    return x_s, int(keep.sum())


def confidence_importance_step(post, x_t: torch.Tensor, t: float, start: torch.Tensor, alpha_s: float, energy,
                               k: int, mask_id: int, temperature: float = 1.0, generator=None, on_choice=None):
    """EDLM on top of confidence unmasking: k full candidates from mu(.|x_t), one picked by softmax(-E/tau)
    (as `importance_step`), then the picked candidate's n most confident positions are kept.
    Returns (x_s, ess (B_active,), moved). Sequences with no mask left get no candidates and no ESS.
    on_choice(active, chosen, weights): as in `importance_step`. k: an int, or a (B,) tensor, one k per
    sequence (adaptive k); a sequence with k = 1 then takes a plain confidence step."""
    post = as_posterior(post)
    B, L = x_t.shape
    masked = x_t == mask_id
    n = confidence_counts(masked.sum(1), start, alpha_s)
    ks = k if torch.is_tensor(k) else None
    moved0 = 0
    if ks is not None:
        plain = ((n > 0) & (ks <= 1)).nonzero().squeeze(1)
        if plain.numel():  # one candidate needs no energy: the plain step, for those sequences only
            c1, lp1 = _draw_all_masked(post, x_t, 1, mask_id, generator, seqs=plain)
            rows = torch.zeros(B, dtype=torch.bool, device=x_t.device)
            rows[plain] = True
            keep1 = keep_most_confident(lp1[..., 0], masked & rows[:, None], n)
            x_t = torch.where(keep1, c1[..., 0], x_t)
            moved0 = int(keep1.sum())
        active = ((n > 0) & (ks > 1)).nonzero().squeeze(1)
    else:
        active = (n > 0).nonzero().squeeze(1)  # syncs once
    if active.numel() == 0:
        return x_t, x_t.new_zeros(0, dtype=torch.float64), moved0
    ka = None if ks is None else ks[active]
    width = k if ka is None else int(ka.max())
    cand, lp = _draw_all_masked(post, x_t, width, mask_id, generator, seqs=None if ks is None else active)
    cand, lp = cand[active].permute(0, 2, 1), lp[active].permute(0, 2, 1)  # (Ba, k, L)
    na = active.numel()
    xa = x_t[active]
    e = candidate_energies(energy, cand, lp.sum(-1), xa, t, ka)
    j, w, ess = select(e, temperature, generator)
    if on_choice is not None:
        on_choice(active, j, w)
    pick = torch.arange(na, device=x_t.device)
    x0, conf = cand[pick, j], lp[pick, j]  # (Ba, L)
    keep = keep_most_confident(conf, masked[active], n[active])
    x_s = x_t.clone()
    x_s[active] = torch.where(keep, x0, xa)
    return x_s, ess, int(keep.sum()) + moved0


def step(inp):
    """The registry's plain step (edlm/config/unmasking.py)."""
    return confidence_step(inp.post, inp.x, inp.start, inp.alpha_s, inp.mask_id, inp.generator)


def energy_step(inp, energy, k):
    """The registry's EDLM step."""
    return confidence_importance_step(inp.post, inp.x, inp.t, inp.start, inp.alpha_s, energy, k, inp.mask_id,
                                      inp.temperature, inp.generator, on_choice=inp.on_choice)
