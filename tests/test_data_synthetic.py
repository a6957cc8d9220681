"""The synthetic language's exact probabilities: normalised, forward algorithm = brute force,
sample NLL = block entropy."""

import itertools

import pytest
import torch

from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage


@pytest.fixture(scope="module")
def tiny():
    return SyntheticLanguage(SyntheticConfig(vocab_size=4, successors=(1, 2), seed=3, eps=0.05))


def all_sequences(V, L):
    return torch.tensor(list(itertools.product(range(V), repeat=L)), dtype=torch.long)


def test_probabilities_sum_to_one_over_all_sequences(tiny):
    for L in (1, 2, 4):
        x = all_sequences(4, L)
        total = tiny.log_prob(x).exp().sum().item()
        assert abs(total - 1.0) < 1e-12, (L, total)


def test_marginal_matches_brute_force(tiny):
    L = 4
    x_all = all_sequences(4, L)
    p_all = tiny.log_prob(x_all).exp()
    g = torch.Generator().manual_seed(0)
    x = tiny.sample(16, L, generator=g)
    observed = torch.rand(16, L, generator=g) < 0.5
    observed[0] = False  # nothing observed: log 1 = 0
    observed[1] = True  # everything observed: the joint
    got = tiny.marginal_log_prob(x, observed)
    for b in range(16):
        keep = (x_all[:, observed[b]] == x[b, observed[b]]).all(1)
        want = p_all[keep].sum().log()
        assert abs(got[b].item() - want.item()) < 1e-10, b
    assert abs(got[0].item()) < 1e-12
    assert abs(got[1].item() - tiny.log_prob(x[1:2]).item()) < 1e-12


def test_conditional_is_normalised_over_completions(tiny):
    """sum over x0 consistent with x_t of p(x0 | x_t) = 1."""
    L, mask = 4, tiny.mask_id
    x_t = torch.tensor([[2, mask, mask, 1]])
    x_all = all_sequences(4, L)
    cons = x_all[(x_all[:, 0] == 2) & (x_all[:, 3] == 1)]
    total = tiny.conditional_log_prob(cons, x_t.expand(len(cons), -1), mask).exp().sum().item()
    assert abs(total - 1.0) < 1e-12


def test_sample_nll_matches_block_entropy():
    lang = SyntheticLanguage(SyntheticConfig())  # the corpus default: V=32, rate calibrated to 1.0
    assert abs(lang.entropy_rate - 1.0) < 1e-6
    L, n = 128, 4000
    x = lang.sample(n, L, generator=torch.Generator().manual_seed(0))
    nll = -lang.log_prob(x) / L
    # std of the per-sequence mean is ~0.1/sqrt(L)... measured ~0.01 per sequence; 4000 sequences -> ~2e-4
    assert abs(nll.mean().item() - lang.block_entropy(L)) < 5 * nll.std().item() / n**0.5 + 1e-3
    # independent per-position draws from the marginal are visibly worse (the point of this language)
    ind = torch.multinomial(
        lang.stationary.expand(n, -1), L, replacement=True, generator=torch.Generator().manual_seed(1)
    )
    assert (-lang.log_prob(ind) / L).mean().item() > 3 * lang.entropy_rate


def test_long_chain_is_stationary_and_matches_rate():
    lang = SyntheticLanguage(SyntheticConfig())
    chain = torch.from_numpy(lang.sample_chain(200_000, seed=[7]).astype("int64"))
    x = chain[: 200_000 // 100 * 100].view(-1, 100)
    assert abs((-lang.log_prob(x) / 100).mean().item() - lang.block_entropy(100)) < 0.02
    freq = torch.bincount(chain, minlength=32).double() / len(chain)
    assert (freq - lang.stationary).abs().max().item() < 0.01


def test_round_trip_dict_and_validation():
    lang = SyntheticLanguage(SyntheticConfig(seed=5))
    back = SyntheticLanguage.from_dict(lang.to_dict())
    x = lang.sample(4, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lang.log_prob(x), back.log_prob(x))
    assert SyntheticLanguage(SyntheticConfig(seed=6)).to_dict()["transition"] != lang.to_dict()["transition"]
    with pytest.raises(ValueError):
        lang.log_prob(torch.full((1, 4), lang.mask_id))
