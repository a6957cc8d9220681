"""The energy interface: anything with `energy(x0, x_t, t, *, log_mu=None) -> (B,)`.

EDLM's denoiser is p(x0|x_t) ∝ mu_theta(x0|x_t) * exp(-E(x0, x_t, t)); lower energy = more likely.
`log_mu` (B,) is log mu_theta(x0|x_t) when the caller already has it (the sampler does), so an
energy that needs it (the AR residual) need not run the proposal again.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Energy(Protocol):
    """An energy correcting a proposal mu(x0|x_t)."""

    normalised: bool
    """True when mu * exp(-E) sums to 1 over x0 for every x_t (log Z = 0): the EDLM likelihood under this
    energy is then an exact log-probability (carry-over AR), not an estimate. See is_normalised."""

    def energy(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *,
               log_mu: torch.Tensor | None = None) -> torch.Tensor: ...


def is_normalised(energy) -> bool:
    """energy.normalised; an energy that does not say (a user's own, a test's) is taken as unnormalised."""
    return bool(getattr(energy, "normalised", False))


class TableEnergy:
    """A known energy over an enumerable space, looked up by a function of x0 (tests, toy problems)."""

    normalised = False

    def __init__(self, fn):
        self.fn = fn

    def energy(self, x0, x_t, t, *, log_mu=None):
        return self.fn(x0)
