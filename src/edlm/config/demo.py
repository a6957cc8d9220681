"""`edlm demo`'s settings: the language, the three trainings, the sweep."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DemoConfig:
    data: str = "markov2-share0.7"
    out: str = "edlm-demo"
    preset: str = "tiny"
    steps: list[int] = field(default_factory=lambda: [2, 4, 8])
    num: int = 96
    k: int = 8
    window: tuple[float, float] = (0.0, 1.0)
    mdlm_steps: int = 300
    ar_steps: int = 120
    nce_steps: int = 100
    nce_batch: int = 32
    """NCE training batch (0: the preset's); an NCE step costs ~2.5 MDLM steps at the same batch"""
    nce_lr: float = 1e-3
    nce_negatives: int = 1
    evaluator: str | None = None
    device: str = "auto"
    seed: int = 0
