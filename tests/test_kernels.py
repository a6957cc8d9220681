"""The optional fused kernels (config/kernels.py, models/fused.py, models/kernels.py): parsing, the CPU fallback
(one warning, the plain path), clear errors, the custom ops' wiring against the plain layers (their CPU
reference), the losses' `targets` route against the plain route, and under the `gpu` marker the library
kernels' numerics against the plain path with stated tolerances."""

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from edlm.config.kernels import KernelsConfig
from edlm.config.model import TransformerConfig
from edlm.diffusion.losses import (
    IGNORE,
    ar_nll,
    ar_nll_sum,
    masked_log_likelihood,
    masked_log_likelihood_sum,
    token_log_probs,
)
from edlm.errors import EdlmError
from edlm.models import fused
from edlm.models import kernels as K
from edlm.models.layers import Attention, LayerNorm, Rotary, apply_rotary
from edlm.models.transformer import Transformer

CUDA = torch.cuda.is_available()
HAS_LIGER = importlib.util.find_spec("liger_kernel") is not None
HAS_AO = importlib.util.find_spec("torchao") is not None


def tiny(causal=False, **kw):
    torch.manual_seed(0)
    kw = {"vocab_size": 20, "n_layers": 2, "d_model": 32, "n_heads": 2, "cond_dim": 16, "max_len": 16,
          "init_std": 0.02, **kw}
    cfg = TransformerConfig(causal=causal, **kw)
    return Transformer(cfg)


def test_spec_parsing_and_errors():
    k = KernelsConfig.parse("liger, float8")
    assert (k.norm, k.rope, k.lce, k.float8, k.gelu) == (True, True, True, True, False)
    assert k.spec() == "norm,rope,lce,float8" and KernelsConfig.parse(k.spec()) == k
    assert KernelsConfig.parse("gelu,weights=int8").spec() == "gelu,weights=int8"
    assert not KernelsConfig.parse("").any and not KernelsConfig.parse("none").any
    for bad in ("flash", "weights=fp4", "liger;float8"):
        with pytest.raises(EdlmError, match="kernels"):
            KernelsConfig.parse(bad)
    with pytest.raises(EdlmError, match="sampling"):
        K.check_kernels("gelu", "cpu", training=True)
    with pytest.raises(EdlmError, match="not both"):
        K.check_kernels("gelu,weights=fp8", "cpu", training=False)


def test_cpu_falls_back_to_the_plain_path_with_one_warning():
    with pytest.warns(UserWarning, match="CUDA devices only") as rec:
        k = K.resolve_kernels("liger,float8", "cpu", training=True)
    assert len(rec) == 1 and k == KernelsConfig()
    m = tiny()
    K.apply_kernels(m, k, training=True)  # nothing to do
    assert not any(getattr(x, "fused", False) for x in m.modules()) and not m.kernels.any
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert K.resolve_kernels("", "cpu", training=True) == KernelsConfig()  # the default: silent


def test_missing_package_on_cuda_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(K.importlib.util, "find_spec", lambda n, *a: None if n in K.EXTRAS else real(n, *a))
    with pytest.raises(EdlmError, match=r"pip install 'edlm\[liger\]'"):
        K.check_kernels("norm", "cuda", training=True)
    with pytest.raises(EdlmError, match=r"pip install 'edlm\[float8\]'"):
        K.check_kernels("weights=fp8", "cuda", training=False)


def test_layer_norm_op_matches_the_plain_layer_forward_and_backward():
    # The op's CPU reference (what the CUDA path replaces with Liger's kernels) through the module's flag.
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, requires_grad=True)
    ln = LayerNorm(16)
    torch.nn.init.normal_(ln.weight)
    y0 = ln(x)
    g = torch.randn_like(y0)
    ref = torch.autograd.grad(y0, (x, ln.weight), g)
    ln.fused = True
    y1 = ln(x)
    got = torch.autograd.grad(y1, (x, ln.weight), g)
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=1e-6)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    xd, w = x.detach(), ln.weight.detach()
    torch.library.opcheck(fused._layer_norm_fwd, (xd, w, 1e-5))
    torch.library.opcheck(fused._layer_norm_bwd, (g, xd, w, *fused._layer_norm_fwd(xd, w, 1e-5)[1:]))


def test_rotary_op_matches_apply_rotary_forward_and_backward():
    torch.manual_seed(0)
    cos, sin = Rotary(8, 32).cos_sin(3, 5)
    q, k = (torch.randn(2, 3, 5, 8, requires_grad=True) for _ in range(2))
    a = (apply_rotary(q, cos, sin), apply_rotary(k, cos, sin))
    b = fused.rotary(q, k, cos, sin)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    ref, got = torch.autograd.grad(a, (q, k), (gq, gk)) + a, torch.autograd.grad(b, (q, k), (gq, gk)) + b
    for u, v in zip(ref, got, strict=True):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-6)
    torch.library.opcheck(fused._rope, (q.detach(), k.detach(), cos, sin, False))
    torch.library.opcheck(fused._rope, (q.detach(), k.detach(), cos, sin, True))


def test_model_with_the_layer_flags_equals_the_plain_model():
    m = tiny()
    x, t = torch.randint(0, 19, (3, 16)), torch.rand(3)
    ref = m(x, t)
    for mod in m.modules():
        if isinstance(mod, LayerNorm):
            mod.fused = True
        elif isinstance(mod, Attention):
            mod.fused_rope = True
    torch.testing.assert_close(m(x, t), ref, atol=1e-5, rtol=1e-5)


def test_targets_route_equals_logits_then_log_softmax():
    m = tiny()
    x, t = torch.randint(0, 19, (3, 16)), torch.rand(3)
    idx = torch.tensor([0, 5, 17, 40])
    y = torch.tensor([1, 2, IGNORE, 4])
    lp = m(x, t, rows=idx, targets=y, classes=19)
    ref = torch.where(y != IGNORE, token_log_probs(m(x, t, rows=idx), y.clamp(min=0), 19), 0.0)
    assert torch.equal(lp, ref)
    assert torch.equal(m(x, t, rows=idx, targets=y, classes=19, summed=True), ref.sum())
    full = m(x, t, targets=x, classes=19)  # every position: (B, L)
    assert full.shape == x.shape and torch.equal(full, token_log_probs(m(x, t), x, 19))


def _plain_targets(monkeypatch):
    """kernels.lce on, with the fused branch replaced by the plain one: the losses' `targets` route on a CPU."""
    orig = fused.target_log_probs
    monkeypatch.setattr(fused, "target_log_probs", lambda *a, **kw: orig(*a, **{**kw, "fused": False}))


@pytest.mark.parametrize("max_rows", [None, 48])
def test_losses_through_targets_equal_the_plain_losses(monkeypatch, max_rows):
    _plain_targets(monkeypatch)
    plain, routed = tiny(), tiny()
    routed.kernels = KernelsConfig(lce=True)
    mask = 19
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, mask, (4, 16), generator=g)
    x_t = torch.where(torch.rand(4, 16, generator=g) < 0.5, mask, x0)
    t = torch.rand(4, generator=g)
    a = masked_log_likelihood(plain, x0, x_t, t, mask, max_rows=max_rows)
    b = masked_log_likelihood(routed, x0, x_t, t, mask, max_rows=max_rows)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    s = masked_log_likelihood_sum(routed, x0, x_t, t, mask, max_rows=max_rows)
    torch.testing.assert_close(s, a.sum(), atol=1e-4, rtol=0)
    ga = torch.autograd.grad(a.sum(), list(plain.parameters()), allow_unused=True)
    gs = torch.autograd.grad(s, list(routed.parameters()), allow_unused=True)
    for u, v in zip(ga, gs, strict=True):
        if u is not None:
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-4)
    ar_p, ar_r = tiny(causal=True), tiny(causal=True)
    ar_r.kernels = KernelsConfig(lce=True)
    torch.testing.assert_close(ar_nll(ar_r, x0, mask), ar_nll(ar_p, x0, mask), atol=1e-5, rtol=0)
    torch.testing.assert_close(ar_nll_sum(ar_r, x0, mask), ar_nll(ar_p, x0, mask).sum(), atol=1e-4, rtol=0)


@pytest.mark.skipif(not HAS_AO, reason="torchao is not installed (pip install 'edlm[float8]')")
def test_float8_converts_exactly_the_block_linears():
    m = tiny(d_model=32)
    K.to_float8_training(m)
    conv = sorted(n for n, x in m.named_modules() if type(x).__name__ == "Float8Linear")
    assert conv == sorted(f"blocks.{i}.{s}" for i in range(2) for s in ("attn.qkv", "attn.out", "mlp.fc", "mlp.proj"))
    assert type(m.final.linear) is torch.nn.Linear and type(m.blocks[0].adaLN) is torch.nn.Linear
    with pytest.raises(EdlmError, match="multiples of 16"):
        K.to_float8_training(tiny(d_model=24, n_heads=2))


@pytest.mark.skipif(not HAS_AO, reason="torchao is not installed (pip install 'edlm[float8]')")
def test_int8_weights_stay_close_to_the_model_under_autocast():
    # int8 weights + dynamic int8 activations run on a CPU too (torch._int_mm), so their wiring is checked here;
    # fp8 needs an H100-class GPU (test_gpu_quantised_trunks_stay_close).
    m = tiny().eval()
    x, t = torch.randint(0, 19, (3, 16)), torch.rand(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = m.features(x, t).float()
        K.quantize_weights(m, "int8")
        got = m.features(x, t).float()
    assert type(m.blocks[0].mlp.fc.weight).__name__ != "Parameter" and not m.low_precision_weights
    assert ((got - ref).norm() / ref.norm()).item() < 0.05


def test_train_config_kernels_option(tmp_path, synthetic_data):
    # On the CPU: `--kernels liger` trains the plain path after one warning; a sampling-only option is exit 2.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    common = ["--n_layers", "1", "--d_model", "32", "--n_heads", "2", "--cond_dim", "16", "--max_len", "16",
              "--seq_len", "16", "--batch_size", "4", "--max_steps", "2", "--eval_every", "0", "--save_every", "2",
              "--data", "synthetic", "--device", "cpu", "--quiet"]
    r = subprocess.run([sys.executable, "-m", "edlm", "train", "--out", str(tmp_path / "a"), "--kernels", "liger",
                        *common], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CUDA devices only" in r.stderr
    assert json.loads((tmp_path / "a" / "run.json").read_text())["train"]["kernels"] == "liger"
    r = subprocess.run([sys.executable, "-m", "edlm", "train", "--out", str(tmp_path / "b"), "--kernels", "gelu",
                        *common], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "sampling" in r.stderr and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------------------
# GPU: the library kernels against the plain path (skipped without CUDA / the packages)

@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and HAS_LIGER), reason="needs a CUDA device and liger-kernel")
def test_gpu_liger_norm_and_rope_equal_the_plain_layers():
    # fp32 LayerNorm: 1e-5; rotary in bf16: one bf16 rounding (2^-8 relative) apart at most.
    torch.manual_seed(0)
    x = torch.randn(4096, 768, device="cuda", requires_grad=True)
    w = torch.randn(768, device="cuda", requires_grad=True)
    ln = LayerNorm(768).cuda()
    ln.weight.data.copy_(w)
    y0 = ln(x)
    g = torch.randn_like(y0)
    ref = torch.autograd.grad(y0, (x, ln.weight), g)
    ln.fused = True
    y1 = ln(x)
    got = torch.autograd.grad(y1, (x, ln.weight), g)
    torch.testing.assert_close(y1, y0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], ref[1], atol=1e-2, rtol=1e-4)  # a sum over 4096 rows
    cos, sin = Rotary(64, 1024).cuda().cos_sin(0, 1024)
    base = torch.randn(8, 1024, 3, 12, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k = base.permute(2, 0, 3, 1, 4)[:2]  # as Attention slices them out of the qkv product
    a = (apply_rotary(q, cos, sin), apply_rotary(k, cos, sin))
    b = fused.rotary(q, k, cos, sin)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    ref, got = torch.autograd.grad(a, (q, k), (gq, gk)) + a, torch.autograd.grad(b, (q, k), (gq, gk)) + b
    for u, v in zip(ref, got, strict=True):
        torch.testing.assert_close(u.float(), v.float(), atol=2e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and HAS_LIGER), reason="needs a CUDA device and liger-kernel")
@pytest.mark.parametrize("summed", [False, True])
def test_gpu_fused_linear_cross_entropy_equals_the_plain_projection(summed):
    # bf16 products under autocast on both sides: log-probs within 2e-2 nats, gradients within 2% (norm).
    torch.manual_seed(0)
    V, n, d = 50257, 4096, 768
    f = torch.randn(n, d, device="cuda", requires_grad=True)
    lin = torch.nn.Linear(d, 50304).cuda()
    torch.nn.init.normal_(lin.weight, std=0.02)
    y = torch.randint(0, V, (n,), device="cuda")
    y[::7] = IGNORE
    w = torch.rand(n, device="cuda")
    out = []
    for fz in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lp = fused.target_log_probs(f, lin.weight, lin.bias, y, V, summed=summed, fused=fz)
        loss = lp if summed else (lp * w).sum()
        out.append((lp.detach(), torch.autograd.grad(loss, (f, lin.weight, lin.bias))))
    (a, ga), (b, gb) = out
    torch.testing.assert_close(b, a, atol=2e-2, rtol=1e-3)
    for u, v in zip(ga, gb, strict=True):
        assert ((u.float() - v.float()).norm() / u.float().norm()).item() < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_gpu_gelu_epilogue_equals_the_plain_mlp():
    from edlm.models.layers import MLP

    torch.manual_seed(0)
    mlp = MLP(768).cuda()
    x = torch.randn(16, 1024, 768, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = mlp(x).float()
        mlp.fused_gelu = True
        got = mlp(x).float()
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2  # bf16 rounding of the pre-activation, not more


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and HAS_AO), reason="needs a CUDA device and torchao")
@pytest.mark.parametrize("weights,tol", [("fp8", 0.08), ("int8", 0.05)])
def test_gpu_quantised_trunks_stay_close(weights, tol):
    # Relative error of the trunk's output (the sampler judges quality by gen-NLL, benchmarks/round3_quality.py).
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=1000, n_layers=4, d_model=512, n_heads=8, cond_dim=128, max_len=256,
                            init_std=0.02)
    m = Transformer(cfg).cuda().eval()
    x = torch.randint(0, 999, (8, 256), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = m.features(x).float()
        K.apply_kernels(m, K.resolve_kernels(f"weights={weights}", "cuda", training=False), training=False)
        got = m.features(x).float()
    assert ((got - ref).norm() / ref.norm()).item() < tol


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and HAS_AO), reason="needs a CUDA device and torchao")
def test_gpu_float8_training_step_tracks_bf16():
    # Same init, same batch: the float8 model's loss within 2% of bf16's over 20 steps of AdamW.
    from edlm.diffusion.losses import mdlm_nelbo
    from edlm.diffusion.schedules import LogLinear

    losses = {}
    for f8 in (False, True):
        torch.manual_seed(0)
        cfg = TransformerConfig(vocab_size=257, n_layers=4, d_model=512, n_heads=8, cond_dim=128, max_len=256,
                                init_std=0.02)
        m = Transformer(cfg).cuda()
        if f8:
            K.apply_kernels(m, K.resolve_kernels("float8", "cuda", training=True), training=True)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randint(0, 256, (32, 256), device="cuda", generator=g)
        for _ in range(20):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = mdlm_nelbo(m, x, LogLinear(), 256, generator=g).mean() / 256
            loss.backward()
            opt.step()
            opt.zero_grad()
        losses[f8] = loss.item()
    assert abs(losses[True] - losses[False]) / losses[False] < 0.02
