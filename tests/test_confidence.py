"""Confidence-based unmasking (sampling/confidence.py), alone and with the energy on top."""

import pytest
import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear, pinned_alpha
from edlm.energy.base import TableEnergy
from edlm.sampling.ancestral import time_grid
from edlm.sampling.categorical import sample_categorical
from edlm.sampling.confidence import (
    confidence_counts,
    confidence_importance_step,
    confidence_step,
    keep_most_confident,
)
from edlm.sampling.loop import sample
from oracles import iid_denoiser

MASK = 3


def _probs(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(L, 3, generator=g), -1)


def _energy_on_ones():
    return TableEnergy(lambda x0: 0.7 * (x0 == 1).sum(-1).float())


@pytest.mark.parametrize("with_energy", [False, True])
@pytest.mark.parametrize("steps", [1, 3, 8, 40])
def test_clean_tokens_kept_mask_never_emitted_all_filled(steps, with_energy):
    g = torch.Generator().manual_seed(steps)
    L = 12
    x0 = torch.full((32, L), MASK)
    x0[:, ::3] = torch.randint(0, 3, (32, 4), generator=g)  # fixed tokens (a prompt, or an infill)
    seen = []
    cfg = SamplerConfig(steps=steps, unmask="confidence", k=4 if with_energy else 1)
    x, stats = sample(iid_denoiser(_probs(L), MASK), LogLinear(), MASK, cfg, x_init=x0,
                      energy=_energy_on_ones() if with_energy else None, generator=g,
                      callback=lambda i, x, *_: seen.append(x.clone()))
    keep = x0 != MASK
    prev = x0
    for xs in seen:
        assert torch.equal(xs[keep], x0[keep])
        assert torch.equal(xs[prev != MASK], prev[prev != MASK])  # once written, a token never changes
        prev = xs
    assert not (x == MASK).any()
    assert ((x >= 0) & (x < 3)).all()
    if with_energy:
        assert stats.energy_steps >= 1 and len(stats.ess) >= 1


def test_counts_carry_the_remainder_and_add_up():
    a = LogLinear()
    for L, steps in [(10, 4), (64, 7), (16, 4), (5, 3), (256, 16)]:
        masked = start = torch.tensor([L])
        counts = []
        grid = time_grid(steps)
        for s in grid[1:]:
            n = confidence_counts(masked, start, pinned_alpha(a, s))
            counts.append(int(n))
            masked = masked - n
        assert sum(counts) == L and int(masked) == 0
        assert min(counts) >= 1
        assert max(counts) - min(counts) <= 1 + (L * 1e-3 > 0.5)  # the schedule's counts, rounded evenly
    # 10 positions in 4 steps of the log-linear schedule (eps = 1e-3): targets round(10 (1 - alpha_s)) =
    # 7, 5, 2, 0 still masked after each step
    masked, start, out = torch.tensor([10]), torch.tensor([10]), []
    for s in time_grid(4)[1:]:
        n = confidence_counts(masked, start, pinned_alpha(a, s))
        out.append(int(n))
        masked = masked - n
    assert out == [3, 2, 3, 2]


def test_more_steps_than_positions_unmasks_one_per_step_and_stops():
    L, steps = 6, 50
    g = torch.Generator().manual_seed(0)
    moved = []
    last = [torch.full((4, L), MASK)]

    def cb(i, x, *_):
        moved.append(int(((last[0] == MASK) & (x != MASK)).sum(1).max()))
        last[0] = x.clone()

    x, _ = sample(iid_denoiser(_probs(L), MASK), LogLinear(), MASK, SamplerConfig(steps=steps, unmask="confidence"),
                  batch=4, length=L, generator=g, callback=cb)
    assert not (x == MASK).any()
    assert moved == [1] * L  # the loop stops once nothing is masked


def test_count_per_step_in_the_sampler_matches_the_schedule():
    L, steps, B = 20, 6, 8
    g = torch.Generator().manual_seed(1)
    per_step = []
    prev = [torch.full((B, L), MASK)]

    def cb(i, x, *_):
        per_step.append(((prev[0] == MASK) & (x != MASK)).sum(1))
        prev[0] = x.clone()

    sample(iid_denoiser(_probs(L), MASK), LogLinear(), MASK, SamplerConfig(steps=steps, unmask="confidence"),
           batch=B, length=L, generator=g, callback=cb)
    left, expect = L, []
    for s in time_grid(steps)[1:]:
        target = round(L * (1 - pinned_alpha(LogLinear(), s)))
        expect.append(max(1, left - target) if left else 0)
        left -= expect[-1]
    assert torch.stack(per_step).tolist() == [[e] * B for e in expect]  # every sequence, the scheduled count


def test_the_most_confident_positions_go_first():
    # positions 0, 2, 5 are certain (p = 1), the rest uniform: a first step that unmasks 3 takes exactly those
    L = 8
    probs = torch.full((L, 3), 1 / 3)
    for p in (0, 2, 5):
        probs[p] = torch.tensor([0.0, 1.0, 0.0])
    x_t = torch.full((16, L), MASK)
    g = torch.Generator().manual_seed(0)
    start = torch.full((16,), L)
    alpha_s = 1 - 5 / 8  # leaves 5 masked: unmasks 3
    x_s, moved = confidence_step(iid_denoiser(probs, MASK)(x_t, 1.0), x_t, start, alpha_s, MASK, g)
    assert moved == 3 * 16
    assert (x_s[:, [0, 2, 5]] == 1).all()
    assert (x_s[:, [1, 3, 4, 6, 7]] == MASK).all()


def test_keep_most_confident_respects_eligibility_counts_and_ties():
    conf = torch.tensor([[-0.1, -5.0, -0.1, -2.0, -0.05], [-1.0, -1.0, -1.0, -1.0, -1.0]])
    elig = torch.tensor([[True, True, True, True, False], [True, False, True, True, True]])
    keep = keep_most_confident(conf, elig, torch.tensor([2, 3]))
    assert keep.tolist() == [[True, False, True, False, False], [True, False, True, True, False]]
    # -inf confidences (a zero-probability draw never happens, but the ranking must not break) and n = 0
    conf = torch.tensor([[float("-inf"), -1.0, -300.0]])
    keep = keep_most_confident(conf, torch.ones(1, 3, dtype=torch.bool), torch.tensor([3]))
    assert keep.all()
    assert not keep_most_confident(conf, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0])).any()


@pytest.mark.parametrize("with_energy", [False, True])
def test_same_seed_same_tokens(with_energy):
    L = 10
    cfg = SamplerConfig(steps=5, unmask="confidence", k=4 if with_energy else 1)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(123)
        x, _ = sample(iid_denoiser(_probs(L), MASK), LogLinear(), MASK, cfg, batch=16, length=L,
                      energy=_energy_on_ones() if with_energy else None, generator=g)
        outs.append(x)
    assert torch.equal(outs[0], outs[1])
    g = torch.Generator().manual_seed(124)
    other, _ = sample(iid_denoiser(_probs(L), MASK), LogLinear(), MASK, cfg, batch=16, length=L,
                      energy=_energy_on_ones() if with_energy else None, generator=g)
    assert not torch.equal(outs[0], other)


@pytest.mark.parametrize("steps", [1, 4])
def test_one_position_language_is_the_exact_draw(steps):
    # With one position nothing competes for the slot: the first step draws it from the denoiser.
    probs = torch.tensor([[0.55, 0.3, 0.15]])
    n = 40000
    g = torch.Generator().manual_seed(steps)
    x, _ = sample(iid_denoiser(probs, MASK), LogLinear(), MASK, SamplerConfig(steps=steps, unmask="confidence"),
                  batch=n, length=1, generator=g)
    freq = torch.bincount(x[:, 0], minlength=3).double() / n
    assert (freq - probs[0].double()).abs().max() < 0.01  # 3.5 standard errors
    # token for token, it is the float64 categorical draw from the denoiser's row with the same uniforms
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, _ = sample(iid_denoiser(probs, MASK), LogLinear(), MASK, SamplerConfig(steps=steps, unmask="confidence"),
                  batch=500, length=1, generator=g1)
    b = sample_categorical(probs.log().expand(500, 3), 1, g2)
    assert torch.equal(a, b)


def test_one_position_with_energy_is_importance_sampling_of_the_target():
    # L = 1: EDLM on top of confidence is plain self-normalised importance sampling of mu exp(-E)
    probs = torch.tensor([[0.55, 0.3, 0.15]], dtype=torch.float64)
    e = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    target = probs[0] * torch.exp(-e)
    target = target / target.sum()
    n, k = 40000, 64
    g = torch.Generator().manual_seed(0)
    x_t = torch.full((n, 1), MASK)
    logp = iid_denoiser(probs.float(), MASK)(x_t, 1.0)
    x, ess, moved = confidence_importance_step(logp, x_t, 1.0, torch.ones(n, dtype=torch.long), 1.0,
                                               TableEnergy(lambda x0: e[x0[:, 0]].float()), k, MASK, generator=g)
    assert moved == n and ess.shape == (n,)
    freq = torch.bincount(x[:, 0], minlength=3).double() / n
    assert (freq - target).abs().max() < 0.015  # MC ~ 0.0025, self-normalised IS bias ~ 1/k


def test_energy_pick_supplies_the_kept_tokens():
    # near-zero temperature: the lowest-energy candidate always wins; the kept tokens must be its tokens
    B, L, k = 6, 9, 5
    g = torch.Generator().manual_seed(3)
    probs = _probs(L, seed=3)
    x_t = torch.full((B, L), MASK)
    x_t[:, 0] = torch.arange(B) % 3
    rec = {}

    class Recording:
        def energy(self, x0, xt, t, *, log_mu=None):
            e = (x0 * torch.arange(1, L + 1)).sum(-1).float() + 0.001 * torch.arange(x0.shape[0])  # no ties
            assert torch.equal(x0[:, 0], xt[:, 0])  # candidates aligned with their own sequence
            rec["x0"], rec["e"] = x0.view(B, k, L), e.view(B, k)
            return e

    start = torch.full((B,), L - 1)
    x_s, ess, moved = confidence_importance_step(iid_denoiser(probs, MASK)(x_t, 1.0), x_t, 1.0, start, 0.5,
                                                 Recording(), k, MASK, temperature=1e-4, generator=g)
    best = rec["x0"][torch.arange(B), rec["e"].argmin(1)]
    new = (x_t == MASK) & (x_s != MASK)
    assert torch.equal(x_s[new], best[new])
    assert (new.sum(1) == confidence_counts(torch.full((B,), L - 1), start, 0.5)).all()
    assert moved == int(new.sum())


def test_unknown_unmask_mode_is_refused():
    with pytest.raises(ValueError, match="unmask"):
        SamplerConfig(unmask="greedy")
