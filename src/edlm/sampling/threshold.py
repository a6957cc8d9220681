"""Threshold decoding (Fast-dLLM's confidence-aware parallel decoding): each step unmasks every masked position
whose most probable token has probability above a threshold, and at least one position per sequence (the
most confident), so the number of steps adapts to how sure the denoiser is.

The positions are chosen from the denoiser's top probabilities, before any token is drawn; the tokens at
those positions are then DRAWN from x_theta (float64, as everywhere), not taken by argmax. Conditional on the
positions, each token follows the model's marginal; what is approximate is drawing several positions at once
from a factorised denoiser, which is exactly what the threshold trades for speed (a position above 0.9 gets
its top token at least 9 times in 10). With an energy, the step is EDLM's: k candidates from mu(.|x_t) are
weighed by softmax(-E/tau) and the winner's tokens fill the chosen positions (sampling/importance.py).

A step's time t (what a time-conditioned denoiser and the EDLM window see) is where the schedule has the
sequence's masked fraction still masked: 1 - alpha(t) = masked / masked at the start. `cfg.steps` and
`cfg.unmask` do not apply; a run takes at most one step per position to generate.
"""

from __future__ import annotations

import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import time_of_alpha
from edlm.sampling.ancestral import draw_at
from edlm.sampling.denoiser import posterior_of
from edlm.sampling.importance import energy_move
from edlm.sampling.loop import SampleStats, in_window


def top_probability(post, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """(B, L) float64: the largest probability of x_theta at each masked position, -1 elsewhere."""
    masked = x_t == mask_id
    rows = masked.flatten().nonzero().squeeze(1)
    top = torch.full((x_t.numel(),), -1.0, dtype=torch.float64, device=x_t.device)
    if rows.numel():
        lg = post.logits(rows)[:, :mask_id].double()
        top[rows] = (lg.max(-1).values - torch.logsumexp(lg, -1)).exp()
    return top.view(x_t.shape)


def threshold_positions(top: torch.Tensor, threshold: float) -> torch.Tensor:
    """top (B, L) as from top_probability -> (B, L) bool: masked positions above the threshold, plus each
    sequence's most confident masked position (ties: the first), so a sequence with a mask always moves."""
    masked = top >= 0
    best = torch.zeros_like(masked)
    best.scatter_(1, top.argmax(1, keepdim=True), True)
    return masked & ((top > threshold) | best)


@torch.no_grad()
def sample_threshold(denoise, schedule, mask_id: int, cfg: SamplerConfig, *, batch: int = 1,
                     length: int | None = None, x_init: torch.Tensor | None = None, energy=None, generator=None,
                     device=None, callback=None, on_choice=None):
    """As sampling/loop.sample (same arguments and result); the threshold is cfg.threshold."""
    x = torch.full((batch, length), mask_id, dtype=torch.long, device=device) if x_init is None else x_init.clone()
    posterior = posterior_of(denoise)
    stats, ess = SampleStats(), []
    k = cfg.k if cfg.k_policy is None else cfg.k_policy.start(cfg.k)
    start = (x == mask_id).sum(1).double().clamp(min=1)
    i = 0
    while True:
        n = (x == mask_id).sum(1)
        if not bool((n > 0).any()):  # syncs once
            break
        t = time_of_alpha(schedule, 1.0 - n.double() / start, torch.ones_like(start))
        post = posterior(x, t.float())
        move = threshold_positions(top_probability(post, x, mask_id), cfg.threshold)
        t_step = float(t[n > 0].max())
        e = None
        if energy is not None and k > 1 and in_window(t_step, cfg.window):
            x, e, k = energy_move(post, x, t.float(), move, energy, k, mask_id, cfg, generator, on_choice, i, stats,
                                  ess)
        else:
            x, _ = draw_at(post, x, move, mask_id, generator)
        stats.forwards += post.forwards
        if callback is not None:
            callback(i, x, t_step, e)
        i += 1
    stats.ess = [e.float().cpu() for e in ess]
    return x, stats
