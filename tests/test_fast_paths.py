"""Parity of the optimised paths with the plain ones (CPU, same seeds). Tolerances are stated per test.

The GPU benchmarks repeat the draw and loss checks on the device (results/bench_*.json record them).
"""

import pytest
import torch

from edlm.config.model import TransformerConfig
from edlm.config.sampling import SamplerConfig
from edlm.diffusion.losses import (
    TokenLogProbs,
    ar_token_log_probs,
    masked_log_likelihood,
    masked_rows_cap,
    mdlm_nelbo,
    token_log_probs,
)
from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import Cosine, LogLinear
from edlm.energy.ar import AREnergy
from edlm.models.transformer import Transformer
from edlm.sampling.categorical import _draw_plain, sample_categorical_reference, uniforms
from edlm.sampling.loop import model_denoiser, sample

V = 150  # not a multiple of the draw's block (64) nor of the output padding (128)


def _models(seed=0, L=24):
    torch.manual_seed(seed)
    dit = Transformer(TransformerConfig(vocab_size=V + 1, max_len=L)).eval()
    ar = Transformer(TransformerConfig(vocab_size=V + 1, max_len=L, causal=True)).eval()
    for m in (dit, ar):  # adaLN gates and the output layer start at zero (every block the identity):
        for p in m.parameters():  # give every zero-initialised weight real values, so position matters
            if p.dim() == 2 and not p.any():
                torch.nn.init.normal_(p, std=0.3)
        torch.nn.init.normal_(m.final.linear.weight, std=0.7)
    return dit, ar


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_level_draw_equals_flat_float64_draw(dtype):
    # Same logits, same uniforms: the blockwise inverse-CDF picks the token a flat float64 softmax + CDF
    # search picks. Tolerance: the weights are float32 exps (relative error ~1e-6 on some CPUs' vector
    # exp), so a uniform within 1e-5 of a CDF boundary may land on the neighbour; any other
    # difference fails. Log-probs of the same tokens agree within 1e-5.
    g = torch.Generator().manual_seed(0)
    n, W = 3000, V + 40  # 40 padding columns that must never be drawn
    logits = torch.randn(n, W, generator=g) * torch.tensor([0.5, 3.0, 12.0]).repeat(n // 3)[:, None]
    logits[:, V:] = 50.0  # huge padding logits: drawing one would be a visible bug
    logits = logits.to(dtype)
    u = uniforms(n, 4, g)
    tok, lp = _draw_plain(logits, u, V)
    ref_tok, ref_lp = sample_categorical_reference(logits, u, V)
    assert tok.max() < V
    same = tok == ref_tok
    cdf = torch.softmax(logits[:, :V].double(), -1).cumsum(-1)
    lo = torch.minimum(tok, ref_tok)
    boundary = cdf.gather(1, lo)  # the CDF value between the two candidates (tokens in between: ~0 mass)
    assert bool(((boundary - u).abs() < 1e-5)[~same].all()), "a draw differs away from a CDF boundary"
    assert int((~same).sum()) <= 3
    torch.testing.assert_close(lp[same], ref_lp[same], atol=1e-5, rtol=0)


def test_two_level_draw_keeps_tiny_probabilities():
    # A token at p = 5e-13 between two at ~0.5 owns its sliver of the float64 CDF: uniforms just inside
    # it draw it, uniforms just outside draw its neighbours (float32 CDFs have steps of 6e-8 there).
    eps = torch.exp(torch.tensor(-27.631021, dtype=torch.float64))  # ~1e-12
    logits = torch.tensor([[0.0, -27.631021, 0.0]], dtype=torch.float64)
    p0, p1 = 1 / (2 + eps), eps / (2 + eps)
    u = torch.stack([p0 - 0.5 * p1, p0 + 0.25 * p1, p0 + 0.75 * p1, p0 + 1.5 * p1])[None]
    tok, lp = _draw_plain(logits, u, 3)
    assert tok.tolist() == [[0, 1, 1, 2]]
    assert abs(lp[0, 1].item() - p1.log().item()) < 1e-4


def test_two_level_draw_with_whole_blocks_of_impossible_tokens():
    # Blocks whose every logit is -inf (a constrained vocabulary) weigh 0 and give no NaN, and are never drawn,
    # not even by the largest float64 uniform below 1; a token 300 nats below the mode is never drawn either.
    logits = torch.full((2, 200), float("-inf"))
    logits[0, 70:75] = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5])  # block 1 only
    logits[1, 130] = -300.0  # block 2: p = e^-300 / (1 + e^-300), ~1e-130
    logits[1, 5] = 0.0       # block 0 holds the mode
    top = 1 - 2.0 ** -53  # the largest float64 below 1 (uniforms lie in [0, 1))
    u = torch.tensor([[0.0, 0.3, 0.999999, top], [0.5, top, 0.0, 0.25]], dtype=torch.float64)
    tok, lp = _draw_plain(logits, u, 200)
    assert bool(torch.isfinite(lp).all())
    assert ((tok[0] >= 70) & (tok[0] < 75)).all()
    assert tok[1].tolist() == [5, 5, 5, 5]  # the sliver of block 2 sits past 1 - 1e-130: no float64 u reaches it
    ref_tok, ref_lp = sample_categorical_reference(logits[:1], u[:1], 200)
    assert torch.equal(tok[0], ref_tok[0])
    torch.testing.assert_close(lp[0], ref_lp[0], atol=1e-5, rtol=0)


def test_lazy_denoiser_samples_exactly_what_the_full_one_does():
    # The trunk-once / project-only-unmasking-rows path against full (B, L, V) log-probs every step,
    # MDLM and EDLM (AR energy, k = 3): identical samples for the same seed (fp32, CPU).
    dit, ar = _models()
    lazy = model_denoiser(dit, V)

    def full(x, t):
        return lazy(x, t)

    energy = AREnergy(ar, lazy, V)
    for e in (None, energy):
        out = []
        for den in (full, lazy):
            g = torch.Generator().manual_seed(3)
            x, st = sample(den, LogLinear(), V, SamplerConfig(steps=12, k=3, window=(0.5, 1.0)), batch=6, length=24,
                           energy=e, generator=g)
            out.append((x, st))
        assert torch.equal(out[0][0], out[1][0])
        assert not (out[1][0] == V).any()
        assert out[1][1].forwards <= out[0][1].forwards  # the lazy path never runs more


def test_lazy_denoiser_skips_steps_where_nothing_unmasks():
    dit, _ = _models()
    g = torch.Generator().manual_seed(0)
    x, st = sample(model_denoiser(dit, V), LogLinear(), V, SamplerConfig(steps=200), batch=1, length=8, generator=g)
    assert not (x == V).any()
    assert st.forwards <= 8  # at most one trunk run per unmasking step: 8 tokens, 200 steps


def test_masked_rows_loss_equals_full_logits_loss_and_gradients():
    # rows= projects only masked positions; the value and every gradient match the full projection.
    dit, _ = _models()
    dit.train()
    x0 = torch.randint(0, V, (4, 24), generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for model in (dit, lambda a, b: dit(a, b)):  # a lambda hides rows=: the full (B, L, V) path
        dit.zero_grad()
        loss = mdlm_nelbo(model, x0, LogLinear(), V, generator=torch.Generator().manual_seed(2)).sum()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("slack", [0, 5])
def test_static_row_budget_gives_the_same_loss_and_gradients(slack):
    # max_rows (the sync-free GPU path): a fixed number of rows in masked-first order, the unmasked fill
    # rows weighted 0. Same value and gradients as the boolean selection (exact count and with fill rows).
    dit, _ = _models()
    dit.train()
    x0 = torch.randint(0, V, (4, 24), generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for max_rows in (None, "exact"):
        dit.zero_grad()
        g = torch.Generator().manual_seed(2)
        t = antithetic_times(4, generator=g)
        x_t = mask_tokens(x0, LogLinear().alpha(t), V, g)
        n_masked = int((x_t == V).sum())
        budget = None if max_rows is None else n_masked + slack
        loss = masked_log_likelihood(dit, x0, x_t, t, V, max_rows=budget).sum()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None]))
    assert n_masked > 0
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    # rows= as flat int64 positions gives the bool mask's rows, in its order
    x_t = torch.where(torch.rand(4, 24, generator=torch.Generator().manual_seed(3)) < 0.5, V, x0)
    m = x_t == V
    torch.testing.assert_close(dit(x_t, None, rows=m.flatten().nonzero().squeeze(1)), dit(x_t, None, rows=m))


def test_masked_rows_cap_bounds_antithetic_masking():
    # The bound holds the worst stratified draw's mean plus 10 sd; empirically never reached, and far
    # below batch * length for the training setups.
    assert masked_rows_cap(LogLinear(), 32, 1024) == 17920  # 16384 on average
    assert masked_rows_cap(LogLinear(), 1, 16) == 16  # never above batch * length
    assert masked_rows_cap(LogLinear(), 8, 1024, world=4) > masked_rows_cap(LogLinear(), 32, 1024) / 4
    for sched in (LogLinear(), Cosine()):
        cap = masked_rows_cap(sched, 16, 256, sigmas=3.0)
        g = torch.Generator().manual_seed(0)
        x0 = torch.zeros(16, 256, dtype=torch.long)
        worst = max(int((mask_tokens(x0, sched.alpha(antithetic_times(16, generator=g)), 1, g) == 1).sum())
                    for _ in range(300))
        assert worst <= cap


def test_token_log_probs_equal_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, V + 10, generator=g) * 4
    y = torch.randint(0, V, (5, 7), generator=g)
    ref = torch.log_softmax(logits[..., :V].double(), -1).gather(-1, y[..., None]).squeeze(-1)
    torch.testing.assert_close(token_log_probs(logits, y, V).double(), ref, atol=1e-5, rtol=0)
    _, ar = _models()
    x = torch.randint(0, V, (3, 24), generator=g)
    lp = ar_token_log_probs(ar, x, V)
    inp = torch.cat([torch.full((3, 1), V), x[:, :-1]], 1)
    ref = torch.log_softmax(ar(inp)[..., :V].double(), -1).gather(-1, x[..., None]).squeeze(-1)
    torch.testing.assert_close(lp.double(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hand_written_log_prob_gradient_equals_autograd(dtype):
    # The GPU training path's backward (softmax minus one-hot, zero on padding columns), run here with
    # the plain kernels: value and gradient equal autograd through log_softmax. Tolerance 1e-5 (fp32),
    # one bf16 rounding of the gradient (bf16).
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, V + 20, generator=g) * 3).to(dtype).requires_grad_()
    y = torch.randint(0, V, (64,), generator=g)
    w = torch.rand(64, generator=g)
    a = TokenLogProbs.apply(logits, y, V)
    (ga,) = torch.autograd.grad((a * w).sum(), logits)
    ref = torch.log_softmax(logits[:, :V].float(), -1).gather(-1, y[:, None]).squeeze(-1)
    (gr,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=0)
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(ga.float(), gr.float(), atol=tol, rtol=0)
    assert not ga[:, V:].any()


def test_masked_log_likelihood_accepts_plain_callables():
    dit, _ = _models()
    x0 = torch.randint(0, V, (2, 24))
    x_t = torch.where(torch.rand(2, 24) < 0.5, V, x0)
    t = torch.full((2,), 0.5)
    a = masked_log_likelihood(dit, x0, x_t, t, V)
    b = masked_log_likelihood(lambda u, s: dit(u, s), x0, x_t, t, V)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("per_block", [False, True])
def test_compiled_trunk_computes_the_same_function(per_block):
    # Dynamo's trace of the trunk (aot_eager: no C++ compiler needed) gives the eager outputs.
    dit, _ = _models()
    x = torch.randint(0, V + 1, (3, 24))
    t = torch.rand(3)
    ref = dit(x, t)
    dit.compile_trunk(per_block=per_block, backend="aot_eager")
    torch.testing.assert_close(dit(x, t), ref, atol=1e-5, rtol=1e-5)


def test_low_precision_weight_copies_give_the_same_bits_and_follow_the_weights():
    # Compiled inference under bf16 autocast runs on bf16 copies of the Linear weights: the casts autocast
    # makes anyway, made once, so the same bits; an in-place weight update refreshes the copies.
    dit, _ = _models()
    x = torch.randint(0, V + 1, (3, 24))
    t = torch.rand(3)
    dit.compile_trunk(backend="aot_eager")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            dit.low_precision_weights = False
            ref = dit.trunk(x, t)
            dit.low_precision_weights = True
            assert torch.equal(dit.trunk(x, t), ref)
            assert dit._low is not None and dit._low.pairs[0][1].dtype == torch.bfloat16
            dit.blocks[0].mlp.fc.weight.mul_(1.5)  # the copies must follow
    torch.testing.assert_close(dit.trunk(x, t), dit.features(x, t), atol=1e-5, rtol=1e-5)


def test_rotary_tables_stay_float32_when_the_model_is_cast():
    dit, _ = _models()
    cos = dit.rotary.cos.clone()
    dit.to(torch.bfloat16)
    assert dit.rotary.cos.dtype == torch.float32
    torch.testing.assert_close(dit.rotary.cos, cos)


def test_output_layer_padding_and_old_configs():
    cfg = TransformerConfig(vocab_size=V + 1)
    assert cfg.n_out_padded == 256 and Transformer(cfg).final.linear.out_features == 256
    old = {k: v for k, v in cfg.to_dict().items() if k != "out_pad"}  # saved before padding existed
    assert TransformerConfig.from_dict(old).n_out_padded == V + 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_gpu_kernels_equal_plain_ones():
    # The compiled draw and log-prob kernels (GPU only) against the plain math on the same inputs.
    from edlm.sampling.categorical import _draw_fused

    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(2048, V + 40, device="cuda", generator=g) * 3).to(torch.bfloat16)
    u = torch.rand(2048, 4, dtype=torch.float64, device="cuda", generator=g)
    a, la = _draw_plain(logits, u, V)
    b, lb = _draw_fused(logits, u, V)
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
    x = logits.float().requires_grad_()
    y = torch.randint(0, V, (2048,), device="cuda", generator=g)
    lp = token_log_probs(x, y, V)
    (gx,) = torch.autograd.grad(lp.sum(), x)
    ref = torch.log_softmax(x[:, :V], -1).gather(-1, y[:, None]).squeeze(-1)
    (gr,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx, gr, atol=1e-6, rtol=0)


def test_fused_kernels_compile_only_once_the_job_pays_for_it(monkeypatch):
    # The compile policy of utils.fused_on_gpu, with the GPU check and torch.compile faked (CPU): "auto"
    # runs plain until the estimated loss of the plain calls reaches FUSED_COMPILE_S, "on" compiles at the
    # first call, "off" (or EDLM_NO_FUSED=1) never; the environment wins over the code's choice.
    import edlm.utils as U

    compiled = []

    def fake_compile(fn):
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(U, "_on_gpu", lambda t: True)
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch._dynamo, "maybe_mark_dynamic", lambda t, d: None)
    monkeypatch.delenv("EDLM_FUSED", raising=False)
    monkeypatch.delenv("EDLM_NO_FUSED", raising=False)
    x = torch.zeros(100, 1000)  # 1e5 logits a call
    per_call = U.FUSED_CALL_S + U.FUSED_ELEMENT_S * x.numel()
    calls_to_pay = int(U.FUSED_COMPILE_S / per_call) + 1

    def double(t):
        return t * 2

    f = U.fused_on_gpu(double)
    for _ in range(calls_to_pay - 1):
        f(x)
    assert not f.compiled and compiled == []
    f(x)
    assert f.compiled and compiled == ["double"]
    with U.fused_policy("on"):
        g = U.fused_on_gpu(double)
        g(x)
        assert g.compiled
        monkeypatch.setenv("EDLM_NO_FUSED", "1")  # the environment wins
        h = U.fused_on_gpu(double)
        for _ in range(calls_to_pay + 1):
            h(x)
        assert not h.compiled
    monkeypatch.delenv("EDLM_NO_FUSED")
    monkeypatch.setenv("EDLM_FUSED", "on")
    assert U.fused_mode() == "on"
    with U.fused_policy("off"):
        assert U.fused_mode() == "on"
    monkeypatch.setenv("EDLM_FUSED", "off")
    k = U.fused_on_gpu(double)
    for _ in range(calls_to_pay + 1):
        k(x)
    assert not k.compiled and U.fused_mode() == "off"


def test_models_load_without_random_init_and_equal_the_saved_ones(tmp_path):
    # runs.load_model builds on the meta device and takes the checkpoint's tensors (cold start): same
    # outputs as the model that was saved, rotary tables rebuilt in float32.
    from edlm.runs.checkpoint import save_checkpoint
    from edlm.runs.load import load_model
    from edlm.utils import atomic_write_json

    dit, _ = _models()
    atomic_write_json(tmp_path / "run.json", {"objective": "mdlm", "data": "synthetic", "mask_id": V,
                                              "model": dit.cfg.to_dict(), "train": {"seq_len": 24}})
    save_checkpoint(tmp_path, 1, dit, None, None, {})
    loaded, meta = load_model(tmp_path)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert loaded.rotary.cos.dtype == torch.float32
    x, t = torch.randint(0, V + 1, (2, 24)), torch.rand(2)
    torch.testing.assert_close(loaded(x, t), dit(x, t), atol=0, rtol=0)
