"""The noise generator on resume: the exact stream on the same kind of device; a seeded one, with a warning,
when the checkpoint's state belongs to another kind (a run saved on a GPU, resumed on a CPU)."""

import pytest
import torch

from edlm.runs.resume import _restore_noise


def test_same_device_kind_continues_the_stream_exactly():
    a = torch.Generator().manual_seed(7)
    torch.rand(5, generator=a)
    saved = a.get_state()
    expected = torch.rand(4, generator=a)
    b = torch.Generator().manual_seed(123)
    _restore_noise(b, saved, seed=0, step=10, cdir="ckpt")
    assert torch.equal(torch.rand(4, generator=b), expected)


def test_state_from_another_device_kind_seeds_from_seed_and_step_with_one_warning():
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # a Philox state (seed + offset), as torch.cuda saves it
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(99)
        with pytest.warns(UserWarning, match="another kind of device"):
            _restore_noise(g, cuda_like, seed=3, step=40, cdir="ckpt")
        draws.append(torch.rand(4, generator=g))
    assert torch.equal(draws[0], draws[1])  # deterministic: the same resume twice draws the same noise
    other = torch.Generator()
    with pytest.warns(UserWarning):
        _restore_noise(other, cuda_like, seed=3, step=41, cdir="ckpt")
    assert not torch.equal(torch.rand(4, generator=other), draws[0])  # the step enters the seed
