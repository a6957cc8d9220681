"""The MDLM NELBO is an upper bound, tight for the true denoiser (exactness on the synthetic language)."""

import torch

from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage
from edlm.diffusion.losses import mdlm_nelbo
from edlm.diffusion.schedules import LogLinear
from edlm.eval.likelihood import discrete_nelbo
from oracles import ModelFromDenoiser, markov_denoiser


def _lang():
    return SyntheticLanguage(SyntheticConfig(vocab_size=6, successors=(1, 2), seed=3, target_entropy=0.6))


def test_nelbo_of_true_denoiser_equals_entropy():
    # With the exact posterior marginals, E[NELBO] = -log p(x): the bound is tight.
    lang, L, n = _lang(), 8, 4096
    g = torch.Generator().manual_seed(0)
    x0 = lang.sample(n, L, generator=g)
    model = ModelFromDenoiser(markov_denoiser(lang, 6), 6)
    nelbo = torch.cat([mdlm_nelbo(model, x0[i:i + 512], LogLinear(), 6, generator=g) for i in range(0, n, 512)])
    nll = -lang.log_prob(x0)
    diff = nelbo.double() - nll  # same x0: per-sequence difference has low variance
    se = diff.std() / n ** 0.5
    assert abs(diff.mean()) < 4 * se + 1e-3, (diff.mean(), se)


def test_nelbo_is_upper_bound_for_factorised_denoiser():
    # A denoiser that ignores context (unigram marginals) pays the full gap: NELBO >> entropy.
    lang, L, n = _lang(), 8, 2048
    g = torch.Generator().manual_seed(1)
    x0 = lang.sample(n, L, generator=g)
    uni = lang.stationary.log().float()

    class Unigram(torch.nn.Module):
        def forward(self, x_t, t=None):
            out = uni.expand(*x_t.shape, -1)
            return torch.cat([out, torch.full_like(out[..., :1], -1e9)], -1)

    nelbo = mdlm_nelbo(Unigram(), x0, LogLinear(), 6, generator=g).double().mean() / L
    assert nelbo > lang.block_entropy(L) + 0.2
    assert abs(nelbo - lang.unigram_entropy) < 0.05  # a context-free denoiser scores the unigram entropy


def test_discrete_nelbo_of_true_denoiser_is_tight():
    lang, L, n = _lang(), 6, 4096
    g = torch.Generator().manual_seed(2)
    x0 = lang.sample(n, L, generator=g)
    model = ModelFromDenoiser(markov_denoiser(lang, 6), 6)
    d = discrete_nelbo(model, x0, LogLinear(), 6, g, steps=1000)["mdlm_steps"] + lang.log_prob(x0)
    assert abs(d.mean()) < 4 * d.std() / n ** 0.5 + 1e-3
