"""The one loop that drives every masked-diffusion sampler (MDLM, EDLM), from all-MASK to clean text.

`denoise(x_t, t) -> (B, L, V)` SUBS log-probs is any callable, or a ModelDenoiser (sampling/denoiser.py),
which computes log-probs only at the positions a step draws; samplers never own models. Steps whose
current time t lies in `window` use importance sampling with `energy`; all others are plain MDLM steps
(and consume the random stream identically, so an empty window reproduces MDLM exactly for the same
seed). Which positions a step unmasks is a registered strategy (`cfg.unmask`: edlm/config/unmasking.py,
sampling/unmasking.py): "random" is MDLM's step, "confidence" the most confident draws first
(sampling/confidence.py), each with or without the energy on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import pinned_alpha
from edlm.sampling.ancestral import time_grid
from edlm.sampling.denoiser import ModelDenoiser, posterior_of
from edlm.sampling.sharpen import make_sharpen, sharpened
from edlm.sampling.unmasking import StepInput, strategy


@dataclass
class SampleStats:
    forwards: int = 0
    energy_steps: int = 0
    """steps on which the energy ran (steps where nothing unmasks skip it)"""
    ess: list = field(default_factory=list)
    """per EDLM step, the effective sample size (B,) of its k candidates"""
    ks: list = field(default_factory=list)
    """per EDLM step, the k it drew (constant unless a k_policy adapts it; then the largest k of the step)"""
    seq_ks: list = field(default_factory=list)
    """with a k_policy: per EDLM step, the k of every sequence (B,) (0: it drew no candidates on that step)"""
    candidates: int = 0
    """energy candidate-evaluations spent: sum over EDLM steps of k x the sequences that unmasked something"""

    @property
    def mean_ess(self) -> float | None:
        return float(torch.cat(self.ess).mean()) if self.ess else None


def _recording(on_choice, into: list):
    """An on_choice that keeps each step's active sequences in `into` and calls `on_choice` (if any)."""
    def record(active, chosen, weights):
        into.append(active)
        if on_choice is not None:
            on_choice(active, chosen, weights)

    return record


def model_denoiser(model, mask_id: int) -> ModelDenoiser:
    """Wrap a DiT into a denoiser: denoise(x_t, t) -> SUBS log-probs, plus the lazy posterior samplers use."""
    return ModelDenoiser(model, mask_id)


def in_window(t: float, window) -> bool:
    return window is not None and window[0] <= t <= window[1]


@torch.no_grad()
def sample(denoise, schedule, mask_id: int, cfg: SamplerConfig, *, batch: int = 1, length: int | None = None,
           x_init: torch.Tensor | None = None, energy=None, generator=None, device=None, callback=None,
           on_choice=None):
    """Returns (x0 (B, L) int64, SampleStats). x_init: start state (MASK where to generate, tokens to keep).
    callback(i, x, t, ess): after step i, with the new x (B, L), the step's time t and the step's effective
    sample size (B,) when the energy ran on it (None on plain MDLM steps).
    on_choice(i, active (Ba,), chosen (Ba,), weights (Ba, k)): on EDLM steps, before callback, which of the
    k candidates won for each sequence that unmasked something (sampling/trace.py records it).

    Host syncs: one per step (plain: the positions that unmask, which size the projection; EDLM: the
    masked positions the candidates are drawn at). The denoiser output is reused while x_t does not
    change (cfg.cache), and a step that unmasks nothing runs no network at all."""
    if x_init is None:
        x = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    else:
        x = x_init.clone()
    stats, ess = SampleStats(), []
    grid = time_grid(cfg.steps)
    posterior = sharpened(posterior_of(denoise), make_sharpen(cfg.token_temperature, cfg.top_p))
    can_cache = cfg.cache and getattr(denoise, "time_conditioning", True) is False
    start = (x == mask_id).sum(1)  # masked positions per sequence at the start (confidence counts)
    remaining = int(start.sum())
    rule = strategy(cfg.unmask)
    post = None
    policy = cfg.k_policy
    # with a policy, one k per sequence (B,): each sequence's own ESS sets its next k (sampling/adaptive.py)
    k = cfg.k if policy is None else torch.full((x.shape[0],), policy.start(cfg.k), device=x.device)
    energy_on = energy is not None and (cfg.k > 1 if policy is None else policy.start(cfg.k) > 1)
    for i in range(cfg.steps):
        if remaining == 0:
            break
        t, s = grid[i], grid[i + 1]
        if post is None or not can_cache:
            stats.forwards += post.forwards if post is not None else 0
            post = posterior(x, t)
        a_t, a_s = pinned_alpha(schedule, t), pinned_alpha(schedule, s)
        e = None
        chose = None if on_choice is None else (lambda a, j, w, i=i: on_choice(i, a, j, w))
        if policy is not None:  # which sequences drew candidates: their ESS sets their own next k
            chose = _recording(chose, picked := [])
        inp = StepInput(post, x, t, s, a_t, a_s, start, mask_id, generator, cfg.temperature, cfg.min_unmask, chose)
        if energy_on and in_window(t, cfg.window):
            x, e, moved = rule.energy_step(inp, energy, k)
            if e.numel():  # the energy ran (some sequence unmasked something)
                stats.energy_steps += 1
                ess.append(e)
                if policy is None:
                    stats.ks.append(k)
                    stats.candidates += e.numel() * k
                else:  # this step's ESS sets the NEXT step's k, sequence by sequence
                    active = picked[0]
                    ka = k[active]
                    stats.ks.append(int(ka.max()))
                    stats.seq_ks.append(torch.zeros_like(k).index_copy_(0, active, ka).cpu())
                    stats.candidates += int(ka.sum())
                    k = k.index_copy(0, active, policy.next_ks(ka, e))
                    energy_on = bool((k > 1).any())
            else:
                e = None
        else:
            x, moved = rule.step(inp)
        remaining -= moved
        if moved:
            stats.forwards += post.forwards
            post = None
        if callback is not None:
            callback(i, x, t, e)
    stats.forwards += post.forwards if post is not None else 0
    stats.ess = [e.float().cpu() for e in ess]
    return x, stats
