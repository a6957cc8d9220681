"""Sampler contract tests: exactness on a factorised language, carry-over, no MASK emitted, float64 draws."""

import itertools

import pytest
import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import SCHEDULES, LogLinear
from edlm.sampling.ancestral import ancestral_step, posterior_step, time_grid
from edlm.sampling.categorical import sample_categorical
from edlm.sampling.loop import sample
from oracles import iid_denoiser

MASK = 3


def _chi2_pvalue(counts, probs):
    from math import exp, lgamma, log  # noqa: F401

    n = counts.sum()
    exp_ = probs * n
    stat = float(((counts - exp_) ** 2 / exp_).sum())
    df = len(counts) - 1
    # survival function of chi-square via the regularised gamma (torch.special)
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                          torch.tensor(stat / 2.0, dtype=torch.float64)))


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_sampler_exact_for_factorised_language(steps, schedule):
    # Position-specific distributions over V=3 tokens, L=3: 27 outcomes, chi-square on the joint.
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]])
    g = torch.Generator().manual_seed(steps)
    n = 6000
    x, _ = sample(iid_denoiser(probs, MASK), SCHEDULES[schedule](), MASK, SamplerConfig(steps=steps),
                  batch=n, length=3, generator=g)
    assert not (x == MASK).any()
    codes = x[:, 0] * 9 + x[:, 1] * 3 + x[:, 2]
    counts = torch.bincount(codes, minlength=27).double()
    target = torch.tensor([probs[0, a] * probs[1, b] * probs[2, c]
                           for a, b, c in itertools.product(range(3), repeat=3)], dtype=torch.float64)
    assert _chi2_pvalue(counts, target) > 1e-3


def test_unmasked_tokens_never_change_and_mask_never_emitted():
    g = torch.Generator().manual_seed(0)
    probs = torch.full((8, 3), 1 / 3)
    den = iid_denoiser(probs, MASK)
    x = torch.full((64, 8), MASK)
    x[:, ::2] = torch.randint(0, 3, (64, 4), generator=g)
    grid = time_grid(10)
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        nxt, _ = ancestral_step(den(x, t), x, LogLinear().alpha(t), LogLinear().alpha(s) if s > 0 else 1.0, MASK, g)
        keep = x != MASK
        assert torch.equal(nxt[keep], x[keep])
        assert ((nxt == MASK) <= (x == MASK)).all()  # masked can only become unmasked
        x = nxt
    assert not (x == MASK).any()


def test_posterior_step_uses_given_x0():
    g = torch.Generator().manual_seed(0)
    x_t = torch.full((4, 50), MASK)
    x0 = torch.randint(0, 3, (4, 50), generator=g)
    x_s = posterior_step(x0, x_t, 0.0, 1.0, MASK, g)  # alpha_s = 1: everything unmasked from x0
    assert torch.equal(x_s, x0)
    half = posterior_step(x0, x_t, 0.0, 0.5, MASK, g)
    moved = half != MASK
    assert torch.equal(half[moved], x0[moved]) and 0.3 < moved.float().mean() < 0.7


def test_categorical_is_float64_exact_in_the_tail():
    # A token with probability 1e-9 relative to the rest: float32 Gumbel tricks lose it, float64 keeps it.
    V = 1000
    logp = torch.full((1, V), -30.0)
    logp[0, 0] = 0.0
    g = torch.Generator().manual_seed(0)
    draws = sample_categorical(logp.expand(200000, V).contiguous(), 1, g)
    frac = (draws != 0).float().mean().item()
    expect = (V - 1) * torch.exp(torch.tensor(-30.0, dtype=torch.float64)).item()
    assert frac <= 1e-4 and expect < 1e-9  # sanity: nothing but the mode is drawn at this tail mass
    # moderately small probabilities are reproduced with the right frequency
    logp2 = torch.log(torch.tensor([[0.999, 0.001]]))
    d2 = sample_categorical(logp2.expand(400000, 2).contiguous(), 1, g)
    f = d2.float().mean().item()
    assert abs(f - 0.001) < 4 * (0.001 * 0.999 / 400000) ** 0.5


def test_cache_reuse_gives_same_samples_as_no_cache():
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 6)
    den = iid_denoiser(probs, MASK)
    den.time_conditioning = False  # declares itself time-independent: only then may its output be reused
    outs = []
    for cache in (True, False):
        g = torch.Generator().manual_seed(7)
        x, st = sample(den, LogLinear(), MASK, SamplerConfig(steps=50, cache=cache), batch=4, length=6, generator=g)
        outs.append((x, st.forwards))
    assert torch.equal(outs[0][0], outs[1][0])
    assert outs[0][1] < outs[1][1]  # 50 steps over 6 tokens: many steps change nothing and reuse the output


def test_callable_without_time_declaration_is_never_cached():
    # A plain callable may depend on t: reusing its output from an earlier t would draw from the wrong
    # distribution. Here it puts all mass on token 0 for t > 0.5 and on token 1 below: every token drawn
    # at t <= 0.5 must be 1, which a stale (cached) output from t > 0.5 would break.
    calls = []

    def den(x_t, t):
        calls.append(float(t) if not torch.is_tensor(t) else float(t.flatten()[0]))
        tok = 0 if calls[-1] > 0.5 else 1
        lp = torch.full((*x_t.shape, 3), -1e9)
        lp[..., tok] = 0.0
        carry = torch.full_like(lp, float("-inf"))
        carry.scatter_(-1, x_t.clamp(max=2)[..., None], 0.0)
        return torch.where((x_t != MASK)[..., None], carry, lp)

    g = torch.Generator().manual_seed(0)
    x, st = sample(den, LogLinear(), MASK, SamplerConfig(steps=40, cache=True), batch=64, length=4, generator=g)
    grid = [1 - i / 40 for i in range(41)]
    assert calls == grid[:len(calls)]  # called afresh at every step, with that step's t
    assert (x == 0).any() and (x == 1).any() and not (x == 2).any()
