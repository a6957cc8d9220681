"""The MDLM training recipe of the `tiny` preset (docs/mdlm_recipe.md): normal init of adaLN and the output
layer, the flat masked-token loss (validation still the NELBO), and that the tiny MDLM learns a
second-order language where one neighbour tells little."""

from dataclasses import replace

import pytest
import torch

from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig
from edlm.diffusion.losses import masked_log_likelihood, mdlm_nelbo
from edlm.diffusion.masking import mask_tokens
from edlm.diffusion.schedules import get_schedule
from edlm.models.transformer import Transformer
from edlm.training.objectives import MDLMObjective, global_noise


def test_init_std_replaces_the_zero_init():
    zero = Transformer(TransformerConfig())
    assert all(float(p.detach().abs().max()) == 0 for n, p in zero.named_parameters()
               if ("adaLN" in n or n.startswith("final.linear")) and p.dim() == 2)
    torch.manual_seed(0)
    m = Transformer(TransformerConfig(init_std=0.02))
    for n, p in m.named_parameters():
        if ("adaLN" in n or n.startswith("final.linear")) and p.dim() == 2:
            assert 0.015 < float(p.detach().std()) < 0.025, n
    # the saddle: with zero-init the attention gets no gradient at step 0; with init_std it does
    x = torch.randint(0, 27, (2, 8))
    for net, has_grad in ((zero, False), (m, True)):
        net.zero_grad()
        torch.log_softmax(net(x, None)[..., :27], -1)[..., 0].sum().backward()
        g = float(net.blocks[0].attn.qkv.weight.grad.abs().max())
        assert (g > 0) == has_grad, g


def test_flat_loss_trains_and_eval_reports_the_nelbo():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=9, n_layers=1, d_model=16, n_heads=2, cond_dim=8, max_len=8,
                                          init_std=0.02))
    sched, mask = get_schedule("loglinear"), 8
    x0 = torch.randint(0, 8, (16, 8))
    flat = MDLMObjective(sched, mask, TrainConfig(loss_weight="flat"))
    nelbo = MDLMObjective(sched, mask, TrainConfig(loss_weight="nelbo"))
    assert flat.flat == pytest.approx(2.0, rel=1e-5)  # 1 / E[t] for t ~ U(t_eps, 1)
    t, u = global_noise(16, 8, 0, 1, torch.Generator().manual_seed(3), "cpu", t_eps=1e-3, antithetic=True)
    x_t = mask_tokens(x0, sched.alpha(t), mask, u=u)
    with torch.no_grad():
        want_flat = float(-2.0 * masked_log_likelihood(model, x0, x_t, t, mask).sum())
        want_nelbo = float(mdlm_nelbo(model, x0, sched, mask, t=t, u=u).sum())
    model.train()
    got, count, _ = flat(model, x0, torch.Generator().manual_seed(3))
    assert float(got.detach()) == pytest.approx(want_flat * flat.flat / 2.0, rel=1e-5) and count == x0.numel()
    assert float(nelbo(model, x0, torch.Generator().manual_seed(3))[0].detach()) == pytest.approx(want_nelbo, rel=1e-5)
    model.eval()  # validation: the NELBO whatever the training weight
    assert float(flat(model, x0, torch.Generator().manual_seed(3))[0].detach()) == pytest.approx(want_nelbo, rel=1e-5)


@pytest.mark.slow
def test_tiny_mdlm_learns_a_second_order_language(data_root, monkeypatch):
    """A 6-symbol order-2 member of the family (share 0: H(x_t|x_{t-1}) = 1.64 vs the unigram 1.75, rate
    1.0): the tiny MDLM's test NELBO gets within 15% of the entropy rate in 350 steps (measured 1.12 at 350;
    the old zero-init / 1/t recipe stays near the unigram much longer). The 32-symbol `markov2` needs far
    more than a CPU test has (docs/mdlm_recipe.md)."""
    import edlm.data.languages as langs
    from edlm.api.trainer import train_run as train
    from edlm.data import corpora
    from edlm.data.languages import load_language
    from edlm.data.loader import iter_eval_blocks
    from edlm.eval.likelihood import evaluate_split
    from edlm.presets import tiny
    from edlm.runs.load import load_model

    cfg = langs.MarkovConfig(order=2, vocab_size=6, successors=(2, 3), target_entropy=1.0)
    monkeypatch.setitem(langs.FAMILY, "markov2", lambda: langs.MarkovLanguage(cfg))
    corpora.prepare("markov2")
    lang = load_language("markov2")
    assert lang.config.vocab_size == 6 and lang.neighbour_entropy > lang.unigram_entropy - 0.35
    torch.manual_seed(0)
    m, t = tiny()
    t = replace(t, data="markov2", max_steps=350, eval_every=0, save_every=350, device="cpu")
    train(t, m, data_root / "run", quiet=True)
    model, meta = load_model(data_root / "run")
    test = corpora.load_split("markov2", "test")
    res = evaluate_split(model, meta, iter_eval_blocks(test, 64, 128, max_blocks=512))
    ratio = res["sums"]["mdlm"] / res["tokens"] / lang.entropy_rate
    assert ratio <= 1.15, ratio
