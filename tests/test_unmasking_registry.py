"""The unmasking registry (edlm/config/unmasking.py, sampling/unmasking.py): a strategy is one module plus one
registration, and the loop, the config and the command line pick it up without any other edit."""

import sys
import types

import pytest
import torch

from edlm.cli import build_parser
from edlm.config.sampling import SamplerConfig
from edlm.config.unmasking import UNMASKINGS, Unmasking, register_unmasking
from edlm.diffusion.schedules import LogLinear
from edlm.sampling.loop import sample
from edlm.sampling.unmasking import strategy
from oracles import iid_denoiser

MASK = 3
PROBS = torch.tensor([[0.5, 0.3, 0.2]] * 6)


@pytest.fixture
def leftmost():
    """A toy strategy registered for one test: unmask the leftmost masked position of each sequence per step,
    its token from one factorised draw (the energy ignored)."""
    mod = types.ModuleType("edlm_test_leftmost")

    def step(inp):
        from edlm.sampling.importance import draw_candidates

        masked = inp.x == inp.mask_id
        first = masked & (masked.long().cumsum(1) == 1)
        cand, _ = draw_candidates(inp.post, inp.x, 1, inp.mask_id, inp.generator)
        return torch.where(first, cand[:, 0], inp.x), int(first.sum())

    mod.step = step
    mod.energy_step = lambda inp, energy, k: (*step(inp)[:1], torch.zeros(0, dtype=torch.float64),
                                              step(inp)[1])
    sys.modules[mod.__name__] = mod
    register_unmasking(Unmasking("leftmost", mod.__name__, "one position per step, left to right"))
    yield mod
    UNMASKINGS.pop("leftmost")
    sys.modules.pop(mod.__name__)


def test_builtins_are_registered_and_resolve():
    assert {"random", "confidence"} <= set(UNMASKINGS)
    for name in UNMASKINGS:
        mod = strategy(name)
        assert callable(mod.step) and callable(mod.energy_step)
    with pytest.raises(ValueError, match="unmask 'nope'"):
        strategy("nope")


def test_a_registered_strategy_drives_the_loop_and_the_cli(leftmost):
    seen = []
    x, _ = sample(iid_denoiser(PROBS, MASK), LogLinear(), MASK, SamplerConfig(steps=6, unmask="leftmost"),
                  batch=4, length=6, generator=torch.Generator().manual_seed(0),
                  callback=lambda i, x, t, e: seen.append((x != MASK).sum(1).tolist()))
    assert not (x == MASK).any()
    assert seen == [[n] * 4 for n in range(1, 7)]  # one position per step, every sequence
    args = build_parser().parse_args(["sample", "--ckpt", "r", "--out", "o.jsonl", "--unmask", "leftmost"])
    assert args.unmask == "leftmost"
    with pytest.raises(ValueError, match="min_unmask"):
        SamplerConfig(unmask="leftmost", min_unmask=2)  # it did not declare min_unmask support
