"""MDLM ancestral sampling pieces: the time grid, the plain step and the posterior step from a given x0.

Step t -> s < t: a masked position is unmasked with probability (alpha_s - alpha_t)/(1 - alpha_t) and
then takes a token drawn from x_theta; unmasked positions never change. Drawing "unmask?" first and
the token second is the same distribution as MDLM's categorical over V+1, and it only draws tokens
where one can change.
"""

from __future__ import annotations

import torch

from edlm.sampling.categorical import sample_rows
from edlm.sampling.denoiser import as_posterior


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> list[float]:
    """steps+1 times from t_max down to t_min. Ending at alpha(0) = 1 unmasks every token left by a
    sampled (not argmax) final denoise, so the sampler is exact."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return [t_max - (t_max - t_min) * i / steps for i in range(steps + 1)]


def unmask_prob(alpha_t: float, alpha_s: float) -> float:
    return min(1.0, max(0.0, (alpha_s - alpha_t) / max(1.0 - alpha_t, 1e-12)))


def unmask_draw(x_t: torch.Tensor, alpha_t: float, alpha_s: float, mask_id: int, generator=None):
    """Which positions unmask from t to s: each masked one independently with unmask_prob. (B, L) bool."""
    return (x_t == mask_id) & (torch.rand(x_t.shape, generator=generator, device=x_t.device)
                               < unmask_prob(alpha_t, alpha_s))


def ancestral_step(post, x_t: torch.Tensor, alpha_t: float, alpha_s: float, mask_id: int, generator=None):
    """post: a posterior at x_t (sampling/denoiser.py) or (B, L, V) SUBS log-probs. Returns (x_s, moved):
    x_s (B, L) and how many positions unmasked (a Python int: the one host sync of the step, which
    sizes the rows the vocabulary projection runs on)."""
    post = as_posterior(post)
    move = unmask_draw(x_t, alpha_t, alpha_s, mask_id, generator)
    rows = move.flatten().nonzero().squeeze(1)
    x_s = x_t.clone()
    if rows.numel():
        x_s.view(-1)[rows] = sample_rows(post, rows, mask_id, 1, generator)[0].squeeze(1)
    return x_s, int(rows.numel())


def draw_at(post, x_t: torch.Tensor, move: torch.Tensor, mask_id: int, generator=None):
    """x_t with the positions `move` (B, L) bool (masked ones) drawn from the posterior: the token half of a
    step whose positions some other rule chose (first-hit, threshold). Returns (x_s, moved)."""
    rows = move.flatten().nonzero().squeeze(1)
    x_s = x_t.clone()
    if rows.numel():
        x_s.view(-1)[rows] = sample_rows(as_posterior(post), rows, mask_id, 1, generator)[0].squeeze(1)
    return x_s, int(rows.numel())


def posterior_step(x0: torch.Tensor, x_t: torch.Tensor, alpha_t: float, alpha_s: float, mask_id: int,
                   generator=None) -> torch.Tensor:
    """x_s ~ q(x_s | x_t, x0): unmask each masked position with the same probability, taking x0's token."""
    return torch.where(unmask_draw(x_t, alpha_t, alpha_s, mask_id, generator), x0, x_t)
