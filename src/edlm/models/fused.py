"""Library kernels behind the optional fused paths (config/kernels.py): Liger Kernel's LayerNorm, rotary and
fused linear + cross-entropy, and cuBLASLt's GELU epilogue. Nothing here is imported unless an option is on.

The Liger kernels are Triton kernels launched from Python. They are wrapped as torch custom ops (edlm::...),
so that torch.compile (each block compiled on its own in training, the whole trunk in sampling) treats each
as one opaque call with a known output shape instead of tracing into the launcher; their backward is
registered with the op. On a CPU tensor each op computes the same function with plain torch ops (a reference,
so the op's wiring, shapes and gradients can be tested without a GPU); the fused paths themselves are only
switched on for CUDA (models/kernels.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edlm.diffusion.losses import IGNORE, token_log_probs

# ------------------------------------------------------------------------------------------------------------
# LayerNorm (weight, no bias) through Liger's kernels


@torch.library.custom_op("edlm::layer_norm_fwd", mutates_args=())
def _layer_norm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    x = x.contiguous()
    if x.is_cuda:
        from liger_kernel.ops.layer_norm import layer_norm_forward

        y, _, mean, rstd, _, _ = layer_norm_forward(x, weight, torch.zeros_like(weight), eps)
        return y, mean, rstd
    xf = x.float().view(-1, x.shape[-1])
    mean = xf.mean(-1)
    rstd = torch.rsqrt(xf.var(-1, unbiased=False) + eps)
    y = ((xf - mean[:, None]) * rstd[:, None] * weight.float()).to(x.dtype).view(x.shape)
    return y, mean, rstd


@_layer_norm_fwd.register_fake
def _(x, weight, eps):
    n = x.numel() // x.shape[-1]
    return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(n, dtype=torch.float32),
            x.new_empty(n, dtype=torch.float32))


@torch.library.custom_op("edlm::layer_norm_bwd", mutates_args=())
def _layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                    rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dy, x = dy.contiguous(), x.contiguous()
    if x.is_cuda:
        from liger_kernel.ops.layer_norm import layer_norm_backward

        dx, dw, _ = layer_norm_backward(dy, x, weight, torch.zeros_like(weight), mean, rstd, needs_dw=True,
                                        needs_db=False)
        return dx, dw
    d = x.shape[-1]
    xf, g = x.float().view(-1, d), dy.float().view(-1, d)
    xhat = (xf - mean[:, None]) * rstd[:, None]
    gw = g * weight.float()
    dx = rstd[:, None] * (gw - gw.mean(-1, keepdim=True) - xhat * (gw * xhat).mean(-1, keepdim=True))
    return dx.to(x.dtype).view(x.shape), (g * xhat).sum(0).to(weight.dtype)


@_layer_norm_bwd.register_fake
def _(dy, x, weight, mean, rstd):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _ln_setup(ctx, inputs, output):
    x, weight, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)


def _ln_backward(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw = _layer_norm_bwd(dy, x, weight, mean, rstd)
    return dx, dw, None


_layer_norm_fwd.register_autograd(_ln_backward, setup_context=_ln_setup)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without bias over the last dim, computed in float32, output in x's dtype: what
    layers.LayerNorm computes (it then multiplies by the weight in x's dtype, here in float32)."""
    return _layer_norm_fwd(x, weight, eps)[0]


# ------------------------------------------------------------------------------------------------------------
# Rotary embedding of q and k (rotate-half convention) through Liger's kernel


def _rope_layout(t: torch.Tensor) -> torch.Tensor:
    """(B, H, L, Dh) -> a fresh (B, L, H, Dh)-contiguous copy seen as (B, H, L, Dh): Liger's kernel rotates
    in place in that layout, and an op must not write to its inputs."""
    return t.transpose(1, 2).clone(memory_format=torch.contiguous_format).transpose(1, 2)


def _rope_ref(q, k, cos, sin, sign: float):
    def rot(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    return tuple((x.float() * cos + sign * rot(x) * sin).to(x.dtype) for x in (q, k))


@torch.library.custom_op("edlm::rope", mutates_args=())
def _rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
          backward: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if q.is_cuda:
        from liger_kernel.ops.rope import rope_backward, rope_forward

        q, k = _rope_layout(q), _rope_layout(k)
        if backward:
            return tuple(rope_backward(q, k, cos, sin))
        return tuple(rope_forward(q, k, cos, sin)[:2])
    # The backward of a rotation by +theta is the rotation by -theta (sin -> -sin).
    return tuple(_rope_layout(t) for t in _rope_ref(q, k, cos, sin, -1.0 if backward else 1.0))


@_rope.register_fake
def _(q, k, cos, sin, backward):
    return _rope_layout(q), _rope_layout(k)


def _rope_setup(ctx, inputs, output):
    _, _, cos, sin, _ = inputs
    ctx.save_for_backward(cos, sin)


def _rope_backward(ctx, dq, dk):
    cos, sin = ctx.saved_tensors
    gq, gk = _rope(dq, dk, cos, sin, True)
    return gq, gk, None, None, None


_rope.register_autograd(_rope_backward, setup_context=_rope_setup)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q, k: (B, H, L, Dh); cos, sin: (1, 1, L, Dh) float32 -> q and k rotated (layers.apply_rotary on each)."""
    return _rope(q, k, cos, sin, False)


# ------------------------------------------------------------------------------------------------------------
# fc + bias + GELU (tanh) in one cuBLASLt call (inference)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu(x @ weight.T + bias, approximate='tanh') through torch._addmm_activation: on CUDA one cuBLASLt
    matrix product whose epilogue adds the bias and applies the GELU before the single write of the
    result. Under autocast the operands are cast as a Linear would be (the op has no autocast rule).
    No backward (torch defines none): inference only."""
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
        x, weight, bias = x.to(dt), weight.to(dt), bias.to(dt)
    shape = x.shape
    y = torch._addmm_activation(bias, x.reshape(-1, shape[-1]), weight.t(), use_gelu=True)
    return y.view(*shape[:-1], weight.shape[0])


# ------------------------------------------------------------------------------------------------------------
# Linear + log-softmax + gather without logits (Liger's fused linear cross-entropy)

CHUNK_MEM = 8
"""Liger's transient-logits budget, in units of rows x hidden: 8 gives chunks of ~2-4k rows at GPT-2's
vocabulary and width 768 (its default, 1, gives 512-row chunks: many small matrix products)"""
_MASKED = -1e4
"""added to the logits of the columns past `classes` (the MASK column and the padding): exp() of it is 0
in float32, and the columns keep the padded width that the fast matrix kernels want"""


def target_log_probs(f: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                     classes: int, *, summed: bool = False, fused: bool = False) -> torch.Tensor:
    """log softmax(f @ weight.T + bias)[..., :classes] at `targets`, float32, differentiable.
    f: (N, D); targets: (N,) int64, IGNORE for rows that count 0. Returns (N,) or, with summed=True,
    their sum (a scalar).

    fused=True: Liger's fused linear cross-entropy, chunks of rows at a time, no logits tensor kept. Its
    summed path computes the gradients during the forward pass (one pass over the projection); the per-row
    path recomputes each chunk's logits in the backward pass (one projection more) because the rows'
    weights are only known then. fused=False: the plain projection and diffusion.losses.token_log_probs."""
    if not fused:
        logits = F.linear(f, weight, bias)
        keep = targets != IGNORE
        lp = torch.where(keep, token_log_probs(logits, targets.clamp(min=0), classes), 0.0)
        return lp.sum() if summed else lp
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    dev = f.device.type
    dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    cols = torch.arange(weight.shape[0], device=f.device)
    b = torch.where(cols < classes, 0.0, _MASKED).to(dt)
    if bias is not None:
        b = bias.to(dt) + b
    loss = LigerFusedLinearCrossEntropyFunction.apply(
        f, weight, targets, b, None, IGNORE, 0.0, 0.0, "sum" if summed else "none", None, False, None, False,
        False, False, None, None, CHUNK_MEM)[0]
    return -loss.float()
