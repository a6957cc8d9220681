"""First-hitting sampling: MDLM's reverse process in continuous time, one network call per unmasked token.

In the step sampler a masked position unmasks between t and s < t with probability (alpha_s - alpha_t) /
(1 - alpha_t), independently of the others; as the steps get finer, no two positions unmask together and the
sampler converges to the continuous-time process. That process can be sampled exactly, event by event: with
n positions masked at time t, each still masked at s with probability (1 - alpha_s) / (1 - alpha_t), the
NEXT unmasking happens at the s where

    (1 - alpha_s) = (1 - alpha_t) u^(1/n),   u ~ U(0, 1)       (the first of n independent times)

at one of the n positions chosen uniformly, whose token is drawn from x_theta(. | x_t, s). Then t = s and
again, until nothing is masked. So a sample costs exactly one network call per generated token, whatever the
number of steps it stands for, and it has the law of the step sampler in the limit of infinitely many steps
(tests/test_fast_samplers.py checks it on an enumerable case). For a denoiser without time conditioning the
times do not change the draws at all; they are drawn anyway, for a time-conditioned denoiser and for the
EDLM window (the energy runs on events whose time lies in it: importance sampling over k candidates, the
winner's token at the chosen position).

`cfg.steps` and `cfg.unmask` do not apply. The sequences of a batch advance together, one token each per
call, each at its own time.
"""

from __future__ import annotations

import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import pinned_alpha_of, time_of_alpha
from edlm.sampling.ancestral import draw_at
from edlm.sampling.denoiser import posterior_of
from edlm.sampling.importance import energy_move
from edlm.sampling.loop import SampleStats


def next_event(schedule, t: torch.Tensor, n: torch.Tensor, generator=None) -> torch.Tensor:
    """t (B,) float64 current times, n (B,) masked positions (>= 1) -> (B,) the time of the next unmasking."""
    u = torch.rand(t.shape, dtype=torch.float64, generator=generator, device=t.device)
    still = (1.0 - pinned_alpha_of(schedule, t)) * u ** (1.0 / n.double())
    return time_of_alpha(schedule, 1.0 - still, t)


def pick_one(x: torch.Tensor, live: torch.Tensor, mask_id: int, generator=None) -> torch.Tensor:
    """(B, L) bool: one masked position per live sequence, uniformly at random (float64 scores, argmax)."""
    score = torch.rand(x.shape, dtype=torch.float64, generator=generator, device=x.device)
    score = score.masked_fill(x != mask_id, -1.0)
    move = torch.zeros_like(x, dtype=torch.bool)
    move.scatter_(1, score.argmax(1, keepdim=True), True)
    return move & live[:, None] & (x == mask_id)


@torch.no_grad()
def sample_first_hit(denoise, schedule, mask_id: int, cfg: SamplerConfig, *, batch: int = 1,
                     length: int | None = None, x_init: torch.Tensor | None = None, energy=None, generator=None,
                     device=None, callback=None, on_choice=None):
    """As sampling/loop.sample (same arguments, same (x0, SampleStats) result); callback(i, x, t, ess) after
    event i (t: the latest event time in the batch), on_choice as there."""
    x = torch.full((batch, length), mask_id, dtype=torch.long, device=device) if x_init is None else x_init.clone()
    B = x.shape[0]
    t = torch.ones(B, dtype=torch.float64, device=x.device)
    posterior = posterior_of(denoise)
    stats, ess = SampleStats(), []
    k = cfg.k if cfg.k_policy is None else cfg.k_policy.start(cfg.k)
    n = (x == mask_id).sum(1)
    i = 0
    while True:
        live = n > 0
        if not bool(live.any()):  # the one host sync of an event
            break
        s = torch.where(live, next_event(schedule, t, n.clamp(min=1), generator), t)
        move = pick_one(x, live, mask_id, generator)
        post = posterior(x, s.float())
        e = None
        use = live.clone() if energy is not None and k > 1 and cfg.window is not None else None
        if use is not None:
            use &= (s >= cfg.window[0]) & (s <= cfg.window[1])
        if use is not None and bool(use.any()):
            x, _ = draw_at(post, x, move & ~use[:, None], mask_id, generator)
            x, e, k = energy_move(post, x, s.float(), move & use[:, None], energy, k, mask_id, cfg, generator,
                                  on_choice, i, stats, ess)
        else:
            x, _ = draw_at(post, x, move, mask_id, generator)
        stats.forwards += post.forwards
        n = n - live.long()
        t = s
        if callback is not None:
            callback(i, x, float(s[live].max()), e)
        i += 1
    stats.ess = [e.float().cpu() for e in ess]
    return x, stats
