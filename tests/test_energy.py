"""Energies: coAR is normalised exactly, the AR residual has the right form, NCE learns on `synthetic`."""

import itertools
from dataclasses import replace

import pytest
import torch

from conftest import micro_configs
from edlm.config.model import TransformerConfig
from edlm.diffusion.losses import ar_token_log_probs
from edlm.energy.ar import AREnergy
from edlm.energy.nce import EnergyNet, nce_loss
from edlm.models.transformer import Transformer


def _random_ar(V, L, seed=0):
    torch.manual_seed(seed)
    m = Transformer(TransformerConfig(vocab_size=V + 1, n_layers=2, d_model=16, n_heads=2, cond_dim=8,
                                      max_len=L, causal=True))
    for p in m.parameters():  # move off the zero init so the AR is far from uniform
        torch.nn.init.normal_(p, std=0.5)
    return m.eval()


def test_coar_normaliser_is_exactly_one():
    V, L = 3, 4
    ar = _random_ar(V, L)
    e = AREnergy(ar, None, mask_id=V, carry_over=True)
    x_t = torch.tensor([[V, 1, V, 0]])
    masked = (x_t[0] == V).nonzero().squeeze(-1)
    x0 = x_t.repeat(V ** len(masked), 1)
    for row, vals in enumerate(itertools.product(range(V), repeat=len(masked))):
        x0[row, masked] = torch.tensor(vals)
    with torch.no_grad():
        total = torch.logsumexp(e.ar_log_prob(x0, x_t.expand_as(x0)).double(), 0)
    assert abs(total.item()) < 1e-5
    # the full joint restricted to the same x_t is NOT normalised (it is p_AR(agreeing with x_t))
    with torch.no_grad():
        full = torch.logsumexp(AREnergy(ar, None, V).ar_log_prob(x0, x_t.expand_as(x0)).double(), 0)
    assert full.item() < -0.01


def test_ar_model_is_a_normalised_joint():
    V, L = 3, 3
    ar = _random_ar(V, L, seed=1)
    x = torch.tensor(list(itertools.product(range(V), repeat=L)))
    with torch.no_grad():
        total = torch.logsumexp(ar_token_log_probs(ar, x, bos_id=V).sum(-1).double(), 0)
    assert abs(total.item()) < 1e-5


def test_ar_energy_target_is_ar_restricted_to_x_t():
    # mu * exp(-E) = p_AR(x0) exactly (the mu terms cancel), for any proposal log-probs.
    V, L = 3, 4
    ar = _random_ar(V, L, seed=2)
    x0 = torch.randint(0, V, (5, L))
    x_t = x0.clone()
    x_t[:, 1:3] = V
    log_mu = torch.randn(5)
    e = AREnergy(ar, None, V).energy(x0, x_t, torch.ones(5), log_mu=log_mu)
    with torch.no_grad():
        lp_ar = ar_token_log_probs(ar, x0, V).sum(-1)
    assert torch.allclose(log_mu - e, lp_ar, atol=1e-5)


def test_energy_net_starts_constant_and_nce_loss_optimum():
    cfg = TransformerConfig(vocab_size=7, n_layers=1, d_model=16, n_heads=2, cond_dim=8, max_len=8)
    net = EnergyNet(cfg)
    x = torch.randint(0, 7, (4, 8))
    assert torch.equal(net(x, x, torch.rand(4)), torch.zeros(4))
    # with n negatives the logit is -E - log n: E = 0 and n = 1 gives loss 2 log 2 per positive
    loss, correct = nce_loss(torch.zeros(3), torch.zeros(3, 1))
    assert torch.allclose(loss, torch.full((3,), 2 * torch.log(torch.tensor(2.0))))


@pytest.mark.slow
def test_nce_learns_on_synthetic(synthetic_data, tmp_path):
    from edlm.api.trainer import train_run as train
    from edlm.data import corpora
    from edlm.data.synthetic import load_language
    from edlm.diffusion.masking import mask_tokens
    from edlm.diffusion.subs import subs_log_probs
    from edlm.runs.load import load_model
    from edlm.sampling.importance import draw_candidates

    m, t = micro_configs("mdlm", max_steps=150, lr=3e-3, warmup_steps=10, batch_size=32, log_every=50)
    m = replace(m, d_model=64, n_heads=4)
    train(t, m, tmp_path / "mdlm", quiet=True)
    _, tn = micro_configs("nce", max_steps=150, lr=1e-3, warmup_steps=10, batch_size=32, log_every=50,
                          diffusion=str(tmp_path / "mdlm"))
    train(tn, m, tmp_path / "nce", quiet=True)
    mdlm, meta = load_model(tmp_path / "mdlm")
    net, _ = load_model(tmp_path / "nce")
    lang, mask = load_language(), meta["mask_id"]

    # The trained MDLM's NELBO is an upper bound: >= the exact block entropy, within Monte-Carlo error.
    from edlm.data.loader import iter_eval_blocks
    from edlm.eval.likelihood import evaluate_split

    test_tokens = corpora.load_split("synthetic", "test")
    per_t = [evaluate_split(mdlm, meta, iter_eval_blocks(test_tokens, 16, 256, max_blocks=1024), seed=s)
             for s in range(4)]
    nll = torch.tensor([r["sums"]["mdlm"] / r["tokens"] for r in per_t], dtype=torch.float64)
    assert nll.mean() >= lang.block_entropy(16) - 3 * nll.std() / 2
    assert nll.mean() < 2.0 * lang.block_entropy(16)  # and it learned something (unigram entropy is ~3.1)
    g = torch.Generator().manual_seed(0)
    x0 = torch.from_numpy(corpora.load_split("synthetic", "test")[: 256 * 16].astype("int64")).view(256, 16)
    tt = torch.rand(256, generator=g) * 0.8 + 0.2
    x_t = mask_tokens(x0, 1 - tt, mask, g)
    with torch.no_grad():
        logp = subs_log_probs(mdlm(x_t, tt), x_t, mask)
        neg, lmu_neg = draw_candidates(logp, x_t, 1, mask, g)
        neg, lmu_neg = neg[:, 0], lmu_neg[:, 0]
        lmu_pos = logp.gather(-1, x0[..., None]).squeeze(-1).masked_fill(x_t != mask, 0).sum(-1)
        e_pos, e_neg = net(x0, x_t, tt), net(neg, x_t, tt)
    acc = ((e_pos < 0).float().mean() + (e_neg > 0).float().mean()).item() / 2
    assert acc > 0.6, acc
    # -E should track the exact log-ratio log p_true(x0|x_t) - log mu(x0|x_t)
    ratio = torch.cat([lang.conditional_log_prob(x0, x_t, mask) - lmu_pos.double(),
                       lang.conditional_log_prob(neg, x_t, mask) - lmu_neg.double()])
    negE = torch.cat([-e_pos, -e_neg]).double()
    corr = torch.corrcoef(torch.stack([negE, ratio]))[0, 1].item()
    assert corr > 0.4, corr


def test_logz_bounds_bracket_the_true_normaliser():
    # Known Z: proposal mu uniform over 6 outcomes, target weights w = exp(-E); Z = mean(w).
    from edlm.eval.likelihood import logz_bounds

    g = torch.Generator().manual_seed(0)
    neg_e = torch.tensor([0.0, 0.5, -1.0, 1.5, -0.3, 0.2], dtype=torch.float64)
    log_z = torch.logsumexp(neg_e, 0) - torch.log(torch.tensor(6.0, dtype=torch.float64))
    for n in (4, 32):
        draws = neg_e[torch.randint(0, 6, (20000, n), generator=g)]
        t_n, u_n = logz_bounds(draws)
        se = t_n.std() / 20000 ** 0.5
        assert t_n.mean() < log_z + 3 * se  # E[T_n] <= log Z (Jensen)
        assert u_n.mean() > log_z - 3 * se  # the leave-one-out correction lands above
        assert (u_n.mean() - t_n.mean()) < (0.05 if n == 32 else 0.3)  # and the bracket narrows with n


def test_leave_one_out_logz_terms_match_high_precision_when_one_candidate_dominates():
    # One proposal ahead by 40 or 100 nats (ordinary for sequence log-probs at L = 256-1024). log(sum - s_i)
    # cancels to 0 there (the old code then clamped to 1e-300 and gave U_n = 1204.9 for a 40-nat lead);
    # a log-sum-exp over the other n-1 values is exact. Reference: 60-digit decimal arithmetic.
    from decimal import Decimal, getcontext

    from edlm.eval.likelihood import logz_bounds

    getcontext().prec = 60
    for lead in (40.0, 100.0):
        vals = [lead, 0.0, 0.5, -1.0, 1.5, -0.3, 0.2, 2.0]
        n = len(vals)
        d = [Decimal(v) for v in vals]

        def log_mean(xs):
            return (sum(x.exp() for x in xs) / len(xs)).ln()

        t_n = log_mean(d)
        loo = sum(log_mean(d[:i] + d[i + 1:]) for i in range(n)) / n
        u_ref = float((2 * n - 1) * t_n - 2 * (n - 1) * loo)
        got_t, got_u = logz_bounds(torch.tensor([vals], dtype=torch.float64))
        assert got_t.item() == pytest.approx(float(t_n), rel=1e-12, abs=1e-12)
        assert got_u.item() == pytest.approx(u_ref, rel=1e-12, abs=1e-9), (lead, got_u.item(), u_ref)


def test_energy_net_reads_the_backbone_prefix_token():
    # A backbone converted from MDLM always saw its BOS (prefix_token) at position 0; the energy net must
    # feed it too (and keep the real tokens at positions 1..L), or it runs the backbone off-distribution.
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=9, n_layers=1, d_model=16, n_heads=2, cond_dim=8, max_len=6,
                            prefix_token=7)
    net = EnergyNet(cfg)
    for prm in net.parameters():  # zero-initialised gates and output layer would hide everything
        torch.nn.init.normal_(prm, std=0.3)
    x0 = torch.randint(0, 7, (3, 6))
    x_t = torch.where(torch.rand(3, 6) < 0.5, torch.full_like(x0, 8), x0)
    t = torch.rand(3)
    with torch.no_grad():
        e = net(x0, x_t, t)
        net.backbone.cfg.prefix_token = 5  # another BOS must change the energy: it is read
        e_other = net(x0, x_t, t)
    assert e.shape == (3,) and not torch.allclose(e, e_other)
