"""The training loop's speed paths compute what the plain ones do: attention dropout off (as MDLM) without
touching the residual dropout, the EMA's one multi-tensor update, and the static row budget off the CPU."""

from __future__ import annotations

import torch

from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig
from edlm.diffusion.losses import masked_rows_cap
from edlm.models.transformer import Transformer
from edlm.training import objectives
from edlm.training.optim import EMA


def test_attention_dropout_is_off_by_default_and_old_configs_keep_theirs():
    cfg = TransformerConfig(vocab_size=11, n_layers=1, d_model=16, n_heads=2, cond_dim=8, max_len=8, dropout=0.5,
                            init_std=0.5)  # non-zero gates: the residual branches count
    model = Transformer(cfg).train()
    blk = model.blocks[0]
    assert blk.attn.dropout == 0.0 and blk.drop.p == 0.5
    torch.manual_seed(0)
    h = torch.randn(2, 8, 16)
    cos, sin = model.rotary.cos_sin(0, 8)
    # the attention sublayer is deterministic in training; the block (residual dropout) is not
    assert torch.equal(blk.attn(h, cos, sin, False), blk.attn(h, cos, sin, False))
    c = torch.randn(2, 8)
    assert not torch.equal(blk(h, c, cos, sin, False), blk(h, c, cos, sin, False))
    # run.json written before the field existed: attention dropped at `dropout`, as it was trained
    old = {k: v for k, v in cfg.to_dict().items() if k != "attn_dropout"}
    assert TransformerConfig.from_dict(old).attn_dropout == 0.5
    assert TransformerConfig.from_dict(cfg.to_dict()).attn_dropout == 0.0
    assert Transformer(TransformerConfig.from_dict(old)).blocks[0].attn.dropout == 0.5


def test_ema_update_is_the_per_tensor_lerp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model.register_buffer("count", torch.tensor(3))
    ema = EMA(model, 0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.count.fill_(7)
    ema.update(model, step=100)
    d = ema.decay_at(100)
    for k, v in model.state_dict().items():
        want = v.float() if not v.dtype.is_floating_point else start[k] * d + v.float() * (1 - d)
        torch.testing.assert_close(ema.state_dict()[k].float(), want.float(), rtol=1e-6, atol=1e-7)


def test_mdlm_objective_projects_a_static_row_budget_off_the_cpu(monkeypatch):
    seen = []

    def spy(model, x0, *args, max_rows=None, **kw):
        seen.append(max_rows)
        return torch.zeros(x0.shape[0], device=x0.device)

    monkeypatch.setattr(objectives, "mdlm_nelbo", spy)  # the NELBO weighting (the default)
    cfg = TrainConfig(objective="mdlm")
    obj = objectives.MDLMObjective(objectives.get_schedule(cfg.schedule), 10, cfg)
    net = torch.nn.Linear(1, 1)
    for device in ("cpu", "meta"):  # meta: any device that is not the CPU (a GPU's path, without a GPU)
        x0 = torch.zeros(32, 1024, dtype=torch.long, device=device)
        g = torch.Generator(device="cpu").manual_seed(0)
        if device == "meta":
            monkeypatch.setattr(objectives, "global_noise", lambda B, L, *a, **k: (torch.full((B,), 0.5, device="meta"),
                                                                                  torch.rand(B, L, device="meta")))
        obj(net, x0, g)
    cap = masked_rows_cap(obj.schedule, 32, 1024, t_eps=cfg.t_eps)
    assert seen == [None, cap] and cap == 17920
    # no static bound without stratified t: the plain path
    cfg2 = TrainConfig(objective="mdlm", antithetic=False)
    obj2 = objectives.MDLMObjective(obj.schedule, 10, cfg2)
    assert obj2._rows_cap(torch.zeros(32, 1024, device="meta"), 1) is None
    assert obj._rows_cap(torch.zeros(16, 1024, device="meta"), 2) == masked_rows_cap(obj.schedule, 16, 1024, world=2,
                                                                                       t_eps=cfg.t_eps)


def test_attn_dropout_is_a_train_flag_recorded_in_run_json(synthetic_data, tmp_path):
    import json

    from edlm.cli import main

    out = tmp_path / "run"
    main(["train", "--preset", "micro", "--data", "synthetic", "--out", str(out), "--max_steps", "1", "--quiet",
          "--attn_dropout", "0.05"])
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["attn_dropout"] == 0.05 and model["dropout"] == 0.0
