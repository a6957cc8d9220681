"""An independent reference of the networks in kuleshov-group/mdlm, for the `edlm convert` tests.

Written for these tests from a reading of the public model code (models/dit.py, models/autoregressive.py,
the hub's modeling_mdlm.py): the module tree reproduces MDLM's parameter NAMES and registration ORDER
(so `state_dict()` is a same-shaped MDLM checkpoint and `parameters()` is the order of MDLM's EMA list);
the forward pass is spelled out with plain tensor algebra and shares no code with edlm.models:

- LayerNorm: weight only, no bias, eps 1e-5, computed in float32.
- Rotary: base 10000 over the whole head; positions 0..S-1; the non-interleaved form used by
  flash-attn's apply_rotary_emb_qkv_: the head splits into halves (a, b) and becomes
  (a cos - b sin, b cos + a sin), with one angle per half-dimension; q and k rotate, v does not.
- qkv: one bias-free linear whose 3*D outputs are laid out (3, heads, head_dim); softmax(q k^T / sqrt(Dh)).
- DiT block: six adaLN chunks (shift, scale, gate) for attention then (shift, scale, gate) for the MLP;
  x + gate * branch; MLP = Linear, tanh-GELU, Linear.
- conditioning: c = SiLU(MLP(cos/sin features of sigma)), 256 features (cos first), max period 10000;
  sigma = 0 when time conditioning is off.
- final layer: modulate(LayerNorm(x), shift, scale) then Linear (shift first).
- AR: the same block without adaLN (unit gates), causal attention, final layer without modulation;
  the MASK logit is set to -1000 and log_softmax taken.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def layer_norm_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + 1e-5) * weight


def rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, S, H, Dh); cos/sin: (S, Dh/2)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def attention_ref(q, k, v, causal: bool) -> torch.Tensor:
    """(B, S, H, Dh) each -> (B, S, H, Dh), explicit softmax."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if causal:
        S = q.shape[1]
        future = torch.ones(S, S, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


def sigma_features(sigma: torch.Tensor, n: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    half = n // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    ang = sigma.float()[:, None] * freqs[None, :]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class _Norm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class _VocabEmbed(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(vocab, dim))


class _SigmaMap(nn.Module):
    def __init__(self, cond_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))


class _Rotary(nn.Module):
    def __init__(self, head_dim):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def tables(self, S: int):
        ang = torch.arange(S, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        return ang.cos(), ang.sin()


class _Block(nn.Module):
    def __init__(self, dim, n_heads, cond_dim, adaln: bool):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = _Norm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(0.0)
        self.norm2 = _Norm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * dim, dim))
        self.dropout2 = nn.Dropout(0.0)
        if adaln:
            self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x, c, cos, sin, causal):
        B, S, D = x.shape
        H = self.n_heads
        if hasattr(self, "adaLN_modulation"):
            m = self.adaLN_modulation(c)[:, None, :]
            sh_a, sc_a, g_a, sh_m, sc_m, g_m = (m[..., i * D:(i + 1) * D] for i in range(6))
        else:
            zero, one = torch.zeros(1, 1, D), torch.ones(1, 1, D)
            sh_a, sc_a, g_a, sh_m, sc_m, g_m = zero, zero, one, zero, zero, one
        h = layer_norm_ref(x, self.norm1.weight) * (1 + sc_a) + sh_a
        qkv = (h @ self.attn_qkv.weight.T).reshape(B, S, 3, H, D // H)
        q = rotate_ref(qkv[:, :, 0], cos, sin)
        k = rotate_ref(qkv[:, :, 1], cos, sin)
        v = qkv[:, :, 2]
        a = attention_ref(q, k, v, causal).reshape(B, S, D) @ self.attn_out.weight.T
        x = x + g_a * a
        h = layer_norm_ref(x, self.norm2.weight) * (1 + sc_m) + sh_m
        w0, b0 = self.mlp[0].weight, self.mlp[0].bias
        w2, b2 = self.mlp[2].weight, self.mlp[2].bias
        u = h @ w0.T + b0
        u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
        return x + g_m * (u @ w2.T + b2)


class _Final(nn.Module):
    def __init__(self, dim, vocab, cond_dim, adaln: bool):
        super().__init__()
        self.norm_final = _Norm(dim)
        self.linear = nn.Linear(dim, vocab)
        if adaln:
            self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x, c):
        h = layer_norm_ref(x, self.norm_final.weight)
        if hasattr(self, "adaLN_modulation"):
            m = self.adaLN_modulation(c)[:, None, :]
            D = x.shape[-1]
            h = h * (1 + m[..., D:]) + m[..., :D]
        return h @ self.linear.weight.T + self.linear.bias


class _Backbone(nn.Module):
    def __init__(self, vocab, dim, n_heads, cond_dim, n_blocks, dit: bool):
        super().__init__()
        self.vocab_embed = _VocabEmbed(dim, vocab)
        if dit:
            self.sigma_map = _SigmaMap(cond_dim)
        self.rotary_emb = _Rotary(dim // n_heads)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, cond_dim, dit) for _ in range(n_blocks))
        self.output_layer = _Final(dim, vocab, cond_dim, dit)


class ReferenceMDLM(nn.Module):
    """state_dict(): `backbone.`-prefixed MDLM names. dit=True: the DiT; False: the AR baseline."""

    def __init__(self, vocab, dim, n_heads, cond_dim, n_blocks, *, dit: bool, time_conditioning=False):
        super().__init__()
        self.dit, self.time_conditioning, self.mask_index = dit, time_conditioning, vocab - 1
        self.backbone = _Backbone(vocab, dim, n_heads, cond_dim, n_blocks, dit)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        bb = self.backbone
        x = bb.vocab_embed.embedding[ids]
        c = None
        if self.dit:
            if sigma is None or not self.time_conditioning:
                sigma = torch.zeros(ids.shape[0])
            s = bb.sigma_map.mlp
            h = s[0](sigma_features(sigma))
            h = h * torch.sigmoid(h)
            c = s[2](h)
            c = c * torch.sigmoid(c)
        cos, sin = bb.rotary_emb.tables(ids.shape[1])
        for blk in bb.blocks:
            x = blk(x, c, cos, sin, causal=not self.dit)
        return bb.output_layer(x, c)

    @torch.no_grad()
    def subs_log_probs(self, xt: torch.Tensor, sigma=None) -> torch.Tensor:
        """MDLM's SUBS output: MASK logit -1e6, normalised; unmasked rows copy their token."""
        out = self.logits(xt, sigma).clone()
        out[:, :, self.mask_index] += -1e6
        out = out - torch.logsumexp(out, dim=-1, keepdim=True)
        keep = xt != self.mask_index
        out[keep] = -1e6
        out[keep, xt[keep]] = 0.0
        return out

    @torch.no_grad()
    def ar_token_log_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """MDLM's AR loss terms on a block x0 (B, S): reads x0[:, :-1], scores x0[:, 1:] -> (B, S-1)."""
        out = self.logits(x0[:, :-1]).clone()
        out[:, :, self.mask_index] = -1000.0
        return out.log_softmax(-1).gather(-1, x0[:, 1:, None]).squeeze(-1)


def randomize(model: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Random weights everywhere (adaLN included, so modulation and gates are exercised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 2)[-2] in ("norm1", "norm2", "norm_final"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.ndim > 1 else 16
                p.copy_(scale * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model
