"""The one loop that drives every masked-diffusion sampler (MDLM, EDLM), from all-MASK to clean text.

`denoise(x_t, t) -> (B, L, V)` SUBS log-probs is any callable (see `model_denoiser`); samplers never
own models. Steps whose current time t lies in `window` use importance sampling with `energy`;
all others are plain MDLM steps (and consume the random stream identically, so an empty window
reproduces MDLM exactly for the same seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edlm.diffusion.subs import subs_log_probs
from edlm.sampling.ancestral import ancestral_step, time_grid
from edlm.sampling.importance import importance_step


@dataclass
class SamplerConfig:
    steps: int = 64
    k: int = 1
    """candidates per step inside the window (EDLM); 1 or no energy = plain MDLM"""
    window: tuple[float, float] | None = (0.0, 1.0)
    """EDLM is used at steps whose current t is in [t_lo, t_hi]; None = never"""
    temperature: float = 1.0
    cache: bool = True
    """reuse the denoiser output when x_t did not change (only valid without time conditioning)"""


@dataclass
class SampleStats:
    forwards: int = 0
    energy_steps: int = 0
    ess: list = field(default_factory=list)

    @property
    def mean_ess(self) -> float | None:
        return float(torch.cat(self.ess).mean()) if self.ess else None


def model_denoiser(model, mask_id: int):
    """Wrap a DiT into denoise(x_t, t) -> SUBS log-probs."""

    def denoise(x_t, t):
        tt = t if torch.is_tensor(t) else torch.full((x_t.shape[0],), float(t), device=x_t.device)
        return subs_log_probs(model(x_t, tt), x_t, mask_id)

    denoise.time_conditioning = bool(getattr(model.cfg, "time_conditioning", False))
    return denoise


def in_window(t: float, window) -> bool:
    return window is not None and window[0] <= t <= window[1]


@torch.no_grad()
def sample(denoise, schedule, mask_id: int, cfg: SamplerConfig, *, batch: int = 1, length: int | None = None,
           x_init: torch.Tensor | None = None, energy=None, generator=None, device=None, callback=None):
    """Returns (x0 (B, L) int64, SampleStats). x_init: start state (MASK where to generate, tokens to keep)."""
    if x_init is None:
        x = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    else:
        x = x_init.clone()
    stats = SampleStats()
    grid = time_grid(cfg.steps)
    logp, cached_for = None, None
    can_cache = cfg.cache and not getattr(denoise, "time_conditioning", False)
    for i in range(cfg.steps):
        t, s = grid[i], grid[i + 1]
        if not (x == mask_id).any():
            break
        if logp is None or not can_cache or not torch.equal(cached_for, x):
            logp, cached_for = denoise(x, t), x
            stats.forwards += 1
        a_t, a_s = float(schedule.alpha(t)), float(schedule.alpha(s)) if s > 0 else 1.0
        if energy is not None and cfg.k > 1 and in_window(t, cfg.window):
            x, ess = importance_step(logp, x, t, a_t, a_s, energy, cfg.k, mask_id, cfg.temperature, generator)
            stats.energy_steps += 1
            stats.ess.append(ess.float().cpu())
        else:
            x = ancestral_step(logp, x, a_t, a_s, mask_id, generator)
        if callback is not None:
            callback(i, x)
    return x, stats
