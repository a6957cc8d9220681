"""What one masked-diffusion step gets (StepInput) and the strategy that runs it, found by name in the registry
(edlm/config/unmasking.py). The loop (sampling/loop.py) calls `strategy(name).step(inp)` on plain steps and
`.energy_step(inp, energy, k)` on EDLM steps; a new strategy is a module with those two functions plus its
registration, with no edit to the loop, the command line or the bench.

    s = strategy("confidence")
    x, moved = s.step(StepInput(post, x, t, s_time, alpha_t, alpha_s, start, mask_id, generator))
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

from edlm.config.unmasking import UNMASKINGS


@dataclass
class StepInput:
    """One step t -> s of the loop, for any strategy."""

    post: object
    """the denoiser's posterior at x (sampling/denoiser.py) or (B, L, V) SUBS log-probs"""
    x: torch.Tensor
    """x_t (B, L), MASK where still to generate"""
    t: float
    s: float
    alpha_t: float
    alpha_s: float
    start: torch.Tensor
    """(B,) masked positions per sequence when sampling began (count-based strategies)"""
    mask_id: int
    generator: torch.Generator | None = None
    temperature: float = 1.0
    """the energy's temperature tau in softmax(-E / tau)"""
    min_unmask: int = 1
    on_choice: object = None
    """on_choice(active (Ba,), chosen (Ba,), weights (Ba, k)) on EDLM steps (traces)"""


_LOADED: dict[str, ModuleType] = {}


def strategy(name: str) -> ModuleType:
    """The module implementing unmasking strategy `name` (ValueError naming the choices if unknown)."""
    if name not in UNMASKINGS:
        raise ValueError(f"unmask {name!r}: use one of {', '.join(UNMASKINGS)}")
    path = UNMASKINGS[name].module
    if path not in _LOADED:
        mod = importlib.import_module(path)
        missing = [f for f in ("step", "energy_step") if not callable(getattr(mod, f, None))]
        if missing:
            raise ValueError(f"unmasking strategy {name!r}: {path} lacks {', '.join(missing)}")
        _LOADED[path] = mod
    return _LOADED[path]
