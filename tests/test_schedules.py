"""Contract tests shared by every noise schedule."""

import math

import pytest
import torch

from edlm.diffusion.schedules import SCHEDULES, LogLinear, nelbo_weight


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_contract(name):
    s = SCHEDULES[name]()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert (a[1:] < a[:-1]).all(), "alpha must decrease"
    assert a[0] > 0.99 and a[-1] < 0.01
    # alpha' matches a central finite difference
    h = 1e-5
    tm = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    fd = (s.alpha(tm + h) - s.alpha(tm - h)) / (2 * h)
    assert torch.allclose(s.dalpha(tm), fd, rtol=1e-4, atol=1e-6)
    assert (nelbo_weight(s, tm) < 0).all()


def test_loglinear_weight_is_minus_one_over_t():
    s = LogLinear()
    t = torch.tensor([0.01, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    assert torch.allclose(nelbo_weight(s, t), -1 / t, rtol=1e-12)
    assert math.isclose(s.alpha(1.0), 1e-3)
