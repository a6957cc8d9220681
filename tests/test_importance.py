"""EDLM importance sampling: tests that would catch every defect listed in method.md section 5."""

import itertools

import torch

from edlm.config.sampling import SamplerConfig
from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage
from edlm.diffusion.schedules import LogLinear
from edlm.energy.base import TableEnergy
from edlm.sampling.importance import draw_candidates, importance_step, select
from edlm.sampling.loop import sample
from oracles import iid_denoiser, markov_denoiser

MASK = 3


def _codes(x):
    return x[:, 0] * 9 + x[:, 1] * 3 + x[:, 2]


def _target_and_energy():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]], dtype=torch.float64)
    outcomes = torch.tensor(list(itertools.product(range(3), repeat=3)))
    order = torch.randperm(27, generator=torch.Generator().manual_seed(0))
    e_table = torch.linspace(-1.5, 1.5, 27, dtype=torch.float64)[order]
    mu = probs[0, outcomes[:, 0]] * probs[1, outcomes[:, 1]] * probs[2, outcomes[:, 2]]
    target = mu * torch.exp(-e_table)
    energy = TableEnergy(lambda x0: e_table[_codes(x0)].float())
    return probs, target / target.sum(), mu, energy


def _one_step_tv(k, n=20000, seed=0):
    probs, target, _, energy = _target_and_energy()
    g = torch.Generator().manual_seed(seed)
    x_t = torch.full((n, 3), MASK)
    logp = iid_denoiser(probs.float(), MASK)(x_t, 1.0)
    x, ess, _ = importance_step(logp, x_t, 1.0, 0.0, 1.0, energy, k, MASK, generator=g)  # one step: all unmasked
    emp = torch.bincount(_codes(x), minlength=27).double() / n
    return 0.5 * (emp - target).abs().sum().item(), ess


def test_importance_sampling_approaches_target_as_k_grows():
    tv = {k: _one_step_tv(k)[0] for k in (1, 4, 64)}
    probs, target, mu, _ = _target_and_energy()
    tv_mu = 0.5 * (mu - target).abs().sum().item()
    assert abs(tv[1] - tv_mu) < 0.03  # k = 1 is the proposal itself
    assert tv[64] < 0.03, tv  # stated tolerance at k = 64 (self-normalised IS bias ~ 1/k, MC ~ 0.01)
    assert tv[64] < tv[4] < tv[1]


def test_lower_energy_is_chosen_more_often():
    g = torch.Generator().manual_seed(0)
    e = torch.tensor([[0.0, 1.0]]).expand(100000, 2)
    j, w, ess = select(e, 1.0, g)
    frac0 = (j == 0).double().mean().item()
    expect = 1 / (1 + torch.exp(torch.tensor(-1.0)).item())  # softmax(-E): 0.731
    assert abs(frac0 - expect) < 0.01
    assert torch.allclose(w[0], torch.tensor([expect, 1 - expect], dtype=torch.float64), atol=1e-6)
    # temperature: higher tau flattens the weights
    _, w2, _ = select(e[:1], 10.0, g)
    assert w2[0, 0] < w[0, 0]


def test_candidates_never_cross_sequences():
    # Sequence b's proposal puts all mass on token b; the energy checks each candidate row agrees with its
    # own x_t row and prefers a pattern. Any cross-sequence mix-up shows as a foreign token or a failed check.
    B, L, V, k = 5, 7, 6, 4
    mask = V
    g = torch.Generator().manual_seed(0)
    logp = torch.full((B, L, V), -1e9)
    for b in range(B):
        logp[b, :, b] = 0.0
    x_t = torch.full((B, L), mask)
    x_t[:, 0] = torch.arange(B)  # the first token identifies the sequence
    seen = []

    class Checking:
        def energy(self, x0, xt, t, *, log_mu=None):
            assert torch.equal(x0[:, 0], xt[:, 0])  # aligned rows
            assert torch.equal(x0[:, 0], torch.arange(B).repeat_interleave(k))  # b's k candidates together
            seen.append(x0.clone())
            return torch.randn(x0.shape[0], generator=g)

    x_s, _, _ = importance_step(logp, x_t, 1.0, 0.0, 1.0, Checking(), k, mask, generator=g)
    assert seen and torch.equal(x_s, torch.arange(B)[:, None].expand(B, L))


def test_chosen_candidate_drives_the_posterior_step():
    # The energy makes candidate 'all zeros' the only acceptable one: the result must be it.
    B, L, k = 64, 4, 16
    g = torch.Generator().manual_seed(0)
    logp = torch.log(torch.full((B, L, 2), 0.5))
    x_t = torch.full((B, L), 2)
    energy = TableEnergy(lambda x0: torch.where(x0.sum(-1) == 0, 0.0, 50.0))
    torch.rand(x_t.shape, generator=g)  # importance_step draws which positions unmask first
    cand, _ = draw_candidates(logp, x_t, k, 2, g)
    has_zero = (cand.sum(-1) == 0).any(-1)
    x_s, _, moved = importance_step(logp, x_t, 1.0, 0.0, 1.0, energy, k, 2, generator=torch.Generator().manual_seed(0))
    assert moved == B * L  # alpha_s = 1: every position unmasks
    g2 = torch.Generator().manual_seed(0)
    torch.rand(x_t.shape, generator=g2)
    cand2, _ = draw_candidates(logp, x_t, k, 2, g2)  # the same candidates importance_step drew
    assert torch.equal(cand, cand2)
    assert torch.equal(x_s.sum(-1) == 0, has_zero)


def test_empty_window_reproduces_mdlm_exactly():
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 8)
    den = iid_denoiser(probs, MASK)
    energy = TableEnergy(lambda x0: x0.sum(-1).float())
    runs = []
    for energy_, window in ((None, (0.0, 1.0)), (energy, None), (energy, (2.0, 3.0))):
        g = torch.Generator().manual_seed(11)
        x, st = sample(den, LogLinear(), MASK, SamplerConfig(steps=6, k=4, window=window), batch=16, length=8,
                       energy=energy_, generator=g)
        runs.append(x)
        assert st.energy_steps == 0
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_edlm_with_true_energy_samples_the_true_joint_in_few_steps():
    # A Markov language, its exact denoiser as proposal and E = -log p(x0) + log mu(x0|x_t): the EDLM target
    # is the true p(x0 | x_t), so even ONE step gives the joint, where MDLM gives the product of marginals.
    lang = SyntheticLanguage(SyntheticConfig(vocab_size=3, successors=(1, 1), seed=1, target_entropy=0.4))
    mask, n = 3, 20000
    den = markov_denoiser(lang, mask)

    class TrueAR:
        def energy(self, x0, x_t, t, *, log_mu=None):
            return (-lang.log_prob(x0) + log_mu.double()).float()

    outs = {}
    for name, energy in (("mdlm", None), ("edlm", TrueAR())):
        g = torch.Generator().manual_seed(0)
        x, _ = sample(den, LogLinear(), mask, SamplerConfig(steps=1, k=32), batch=n, length=3, energy=energy,
                      generator=g)
        outs[name] = (-lang.log_prob(x).mean() / 3).item()
    true = lang.block_entropy(3)
    assert outs["edlm"] < outs["mdlm"] - 0.1
    assert abs(outs["edlm"] - true) < 0.03, (outs, true)


def test_ess_and_energy_only_for_sequences_that_unmask_something():
    # Row 0 starts fully given: nothing of it can unmask, its k candidates would be identical (ESS = k by
    # construction). It must get no energy forward and no ESS; nor may any step where nothing unmasks.
    probs, _, _, _ = _target_and_energy()
    seen = []

    class Sharp:
        def energy(self, x0, x_t, t, *, log_mu=None):
            seen.append(x_t.clone())
            return 50.0 * x0.sum(-1).float()  # strongly prefers low tokens: ESS near 1 when candidates differ

    g = torch.Generator().manual_seed(0)
    x_init = torch.full((6, 3), MASK)
    x_init[0] = torch.tensor([2, 1, 0])
    x, st = sample(iid_denoiser(probs.float(), MASK), LogLinear(), MASK, SamplerConfig(steps=12, k=4),
                   x_init=x_init, energy=Sharp(), generator=g)
    assert torch.equal(x[0], x_init[0])
    rows = torch.cat(seen)
    assert (rows == MASK).any(1).all()  # no fully unmasked sequence was ever scored
    assert len(seen) == st.energy_steps and all(r.shape[0] % 4 == 0 for r in seen)
    ess = torch.cat(st.ess)
    assert ess.numel() == sum(r.shape[0] for r in seen) // 4
    assert ess.max() < 4 - 1e-6 and ess.mean() < 2.0  # no ESS = k entries from idle sequences
