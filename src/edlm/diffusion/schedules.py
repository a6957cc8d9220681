"""Noise schedules: alpha(t) = probability a token is still clean at time t in [0, 1], and alpha'(t).

alpha falls from ~1 at t=0 to ~0 at t=1. The NELBO weight alpha'(t)/(1-alpha(t)) is -1/t for the
log-linear schedule (MDLM's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

T_EPS = 1e-3
"""the smallest t drawn (MDLM's): t ~ U[T_EPS, 1] in training and the NELBO, which keeps the 1/t weight bounded.
A run stores its own (train.t_eps), which evaluation uses"""
SCHEDULE_EPS = 1e-3
"""the schedules' eps (MDLM's): log-linear alpha(1) = SCHEDULE_EPS, cosine alpha(0) = 1 - SCHEDULE_EPS"""


@dataclass(frozen=True)
class LogLinear:
    """alpha = 1 - (1-eps) t (sigma = -log(1-(1-eps)t) is linear in log space; MDLM's default)."""

    eps: float = SCHEDULE_EPS
    name: str = "loglinear"

    def alpha(self, t):
        return 1 - (1 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1 - self.eps)) if torch.is_tensor(t) else -(1 - self.eps)


@dataclass(frozen=True)
class Cosine:
    """alpha = (1-eps) cos(pi t / 2): spends more steps at low noise."""

    eps: float = SCHEDULE_EPS
    name: str = "cosine"

    def alpha(self, t):
        return (1 - self.eps) * _cos(math.pi / 2 * t)

    def dalpha(self, t):
        return -(1 - self.eps) * math.pi / 2 * _sin(math.pi / 2 * t)


@dataclass(frozen=True)
class Linear:
    """alpha = exp(-sigma(t)), sigma linear from sigma_min to sigma_max (SEDD's 'geometric' cousin)."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name: str = "linear"

    def alpha(self, t):
        return _exp(-(self.sigma_min + (self.sigma_max - self.sigma_min) * t))

    def dalpha(self, t):
        return -(self.sigma_max - self.sigma_min) * self.alpha(t)


def _cos(x):
    return torch.cos(x) if torch.is_tensor(x) else math.cos(x)


def _sin(x):
    return torch.sin(x) if torch.is_tensor(x) else math.sin(x)


def _exp(x):
    return torch.exp(x) if torch.is_tensor(x) else math.exp(x)


SCHEDULES = {"loglinear": LogLinear, "cosine": Cosine, "linear": Linear}


def get_schedule(name: str = "loglinear"):
    try:
        return SCHEDULES[name]()
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None


def pinned_alpha(schedule, t: float) -> float:
    """alpha(t) of the chain the sampler runs: pinned to 0 at t = 1 (it starts from all MASK) and to 1 at
    t = 0 (it ends with every token drawn), whatever the schedule's own end values (log-linear has
    alpha(1) = eps, cosine alpha(0) = 1 - eps). The likelihood bounds count both pinned jumps
    (eval/likelihood.py), so they bound the model that is actually sampled."""
    if t >= 1:
        return 0.0
    if t <= 0:
        return 1.0
    return float(schedule.alpha(t))


def nelbo_weight(schedule, t: torch.Tensor) -> torch.Tensor:
    """alpha'(t) / (1 - alpha(t)) (negative)."""
    return schedule.dalpha(t) / (1 - schedule.alpha(t))


def pinned_alpha_of(schedule, t: torch.Tensor) -> torch.Tensor:
    """pinned_alpha for a tensor of times (float64)."""
    a = torch.as_tensor(schedule.alpha(t.double().clamp(0.0, 1.0)), dtype=torch.float64)
    return torch.where(t >= 1, torch.zeros_like(a), torch.where(t <= 0, torch.ones_like(a), a))


def time_of_alpha(schedule, alpha: torch.Tensor, t_max: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """The time s in [0, t_max] where the pinned alpha reaches `alpha` (float64 tensors of one shape), by
    bisection (alpha falls with t, for every schedule). A target below alpha just under t_max (the pinned jump
    at t = 1) gives t_max; one above 1 gives 0."""
    lo = torch.zeros_like(t_max, dtype=torch.float64)
    hi = t_max.double().clone()
    for _ in range(iters):
        mid = (lo + hi) / 2
        later = pinned_alpha_of(schedule, mid) > alpha  # still cleaner than the target: s is later than mid
        lo = torch.where(later, mid, lo)
        hi = torch.where(later, hi, mid)
    return hi
