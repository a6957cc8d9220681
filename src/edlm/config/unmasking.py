"""The registry of unmasking strategies: which positions a masked-diffusion step unmasks, and how an energy
composes with it. A strategy is one module under edlm/sampling/ plus one `register_unmasking` line here.

    register_unmasking(Unmasking("random", "edlm.sampling.unmask_random", "MDLM's step ...", min_unmask=True))

The module defines two functions over a StepInput (edlm/sampling/unmasking.py):

    step(inp) -> (x_s (B, L), moved: int)                       a plain step
    energy_step(inp, energy, k) -> (x_s, ess (B_active,), moved)  the step with k candidates weighed by
                                                                  softmax(-E/tau) (EDLM); k an int, or a (B,)
                                                                  tensor (one k per sequence, adaptive k)

This table is plain data (names, module paths, help), so the configs validate names and the command line lists
its choices without importing the samplers; edlm.sampling.unmasking resolves the module when a sampler runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unmasking:
    name: str
    module: str
    """the edlm.sampling module that implements `step` and `energy_step`"""
    help: str
    min_unmask: bool = False
    """whether the strategy honours min_unmask > 1 (the energy only where a step unmasks that many)"""
    exact: bool = False
    """whether, with an exact denoiser and no energy, it samples the model's distribution"""


UNMASKINGS: dict[str, Unmasking] = {}


def register_unmasking(u: Unmasking) -> Unmasking:
    """Add (or replace) a strategy; its name becomes a choice of `unmask` / `--unmask` / bench `--unmask`."""
    UNMASKINGS[u.name] = u
    return u


def unmask_names() -> tuple[str, ...]:
    return tuple(UNMASKINGS)


register_unmasking(Unmasking(
    "random", "edlm.sampling.unmask_random",
    "MDLM's ancestral step: each masked position unmasks with the schedule's probability (exact)",
    min_unmask=True, exact=True))
register_unmasking(Unmasking(
    "confidence", "edlm.sampling.confidence",
    "the schedule's expected count per step, the most confident draws first (as LLaDA); biased: lower "
    "entropy"))
