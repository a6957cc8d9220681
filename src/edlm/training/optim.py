"""AdamW, the learning-rate schedule and the EMA of the weights."""

from __future__ import annotations

import math

import torch


def make_optimizer(model, cfg, device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in n else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


def lr_at(step: int, cfg) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine down to min_lr_ratio * lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        lo = cfg.min_lr_ratio
        return cfg.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
    return cfg.lr


class EMA:
    """Exponential moving average of the parameters (float32 shadow copies)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in _full_state(model).items()}

    def decay_at(self, step: int) -> float:
        """Warm-up of the decay, (1 + step) / (10 + step) capped at `decay`: a short run's EMA must not stay
        near the initial weights (0.999 ** 400 still gives them weight 0.67)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model, step: int):
        d = self.decay_at(step)
        shadows, values = [], []
        for k, v in _full_state(model).items():
            s = self.shadow[k]
            if not v.dtype.is_floating_point:
                s.copy_(v)
            elif type(v) is torch.Tensor:
                shadows.append(s)
                values.append(v.detach().float())
            else:  # FSDP2's DTensors: one lerp per tensor, local to each shard
                s.lerp_(v.detach().float(), 1 - d)
        if shadows:
            # One multi-tensor kernel for the whole model instead of ~200 launches (the same arithmetic).
            torch._foreach_lerp_(shadows, values, 1 - d)

    def state_dict(self):
        return self.shadow

    def load_state_dict(self, sd):
        for k, v in sd.items():
            self.shadow[k].copy_(v)


def _full_state(model):
    # Under FSDP2 these are DTensors: the EMA keeps the same sharding (elementwise updates stay local),
    # and checkpointing gathers them like the weights.
    return model.state_dict()
