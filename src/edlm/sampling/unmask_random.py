"""The "random" unmasking strategy (MDLM's ancestral step), registered in edlm/config/unmasking.py: a plain step
unmasks each masked position with the schedule's probability (sampling/ancestral.py); an EDLM step draws k
candidates and keeps one by importance weights (sampling/importance.py)."""

from __future__ import annotations

from edlm.sampling.ancestral import ancestral_step
from edlm.sampling.importance import importance_step


def step(inp):
    return ancestral_step(inp.post, inp.x, inp.alpha_t, inp.alpha_s, inp.mask_id, inp.generator)


def energy_step(inp, energy, k):
    return importance_step(inp.post, inp.x, inp.t, inp.alpha_t, inp.alpha_s, energy, k, inp.mask_id,
                           inp.temperature, inp.generator, on_choice=inp.on_choice, min_unmask=inp.min_unmask)
