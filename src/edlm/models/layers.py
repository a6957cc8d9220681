"""Transformer pieces shared by the DiT and the causal model: norms, rotary, SDPA attention, adaLN.

Shapes: B batch, L length, D hidden, H heads, Dh = D / H.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edlm.models import fused


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias (as in MDLM's DiT)."""

    fused = False
    """Liger Kernel's forward and backward kernels (set by models.kernels.apply_kernels)"""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        if self.fused:
            return fused.layer_norm(x, self.weight, self.eps)
        return F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding, 'rotate half' convention. cos/sin tables are built once, in float32,
    and stay float32 when the model is cast (bf16 angles are off by whole radians past a few hundred
    positions)."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        cos, sin = self._tables(torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device):
        # Built on the CPU even under `with torch.device("meta")` (runs.load_model builds models there).
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64, device="cpu")
                                        / self.head_dim))
        freqs = torch.arange(self.max_len, dtype=torch.float64, device="cpu")[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().float().to(device), emb.sin().float().to(device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32:  # a dtype cast: rebuild in float32 where the tables now live
            self.cos, self.sin = self._tables(self.cos.device)
        return self

    def cos_sin(self, start: int, length: int):
        """-> cos, sin: (1, 1, length, Dh) float32 for positions start .. start+length-1."""
        return self.cos[None, None, start:start + length], self.sin[None, None, start:start + length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, L, Dh)
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot.float() * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention through torch SDPA (flash/efficient kernels where available)."""

    fused_rope = False
    """q and k rotated by one Liger Kernel launch (set by models.kernels.apply_kernels)"""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        assert dim % n_heads == 0, "hidden size must be divisible by the number of heads"
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x, cos, sin, causal: bool, kv_cache: dict | None = None):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.fused_rope:
            q, k = fused.rotary(q, k, cos, sin)
        else:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            # Incremental decoding: append this chunk's keys/values to the cache.
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=2)
                v = torch.cat([kv_cache["v"], v], dim=2)
            kv_cache["k"], kv_cache["v"] = k, v
        is_causal = causal and q.shape[2] == k.shape[2] and q.shape[2] > 1
        if causal and not is_causal and q.shape[2] > 1:
            # Several new queries against a longer cache: explicit causal mask offset by the cache length.
            off = k.shape[2] - q.shape[2]
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=x.device).tril(off)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    fused_gelu = False
    """inference (no grad): fc, bias and GELU in one cuBLASLt call (set by models.kernels.apply_kernels)"""

    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        self.fc = nn.Linear(dim, ratio * dim)
        self.proj = nn.Linear(ratio * dim, dim)

    def forward(self, x):
        if self.fused_gelu and not torch.is_grad_enabled():
            return self.proj(fused.linear_gelu(x, self.fc.weight, self.fc.bias))
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar (the noise level) followed by a 2-layer MLP."""

    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Block(nn.Module):
    """Pre-norm transformer block with adaLN modulation (shift, scale, gate) from the conditioning vector."""

    def __init__(self, dim: int, n_heads: int, cond_dim: int, mlp_ratio: int = 4, dropout: float = 0.0,
                 adaln: bool = True, attn_dropout: float = 0.0):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, n_heads, attn_dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)
        self.drop = nn.Dropout(dropout)
        # adaln=False: a plain pre-norm block (no modulation, unit gates), as MDLM's AR baseline.
        self.adaLN = nn.Linear(cond_dim, 6 * dim) if adaln else None
        if adaln:
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)

    def forward(self, x, c, cos, sin, causal: bool, kv_cache=None):
        if self.adaLN is None:
            x = x + self.drop(self.attn(self.norm1(x), cos, sin, causal, kv_cache))
            return x + self.drop(self.mlp(self.norm2(x)))
        # c: (B, cond_dim) -> six (B, 1, D) modulation vectors
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c)[:, None].chunk(6, dim=-1)
        h = self.attn(modulate(self.norm1(x), sh1, sc1), cos, sin, causal, kv_cache)
        # Gated residuals as in DiT/MDLM: zero-initialised gates make every block the identity at step 0.
        x = x + g1 * self.drop(h)
        h = self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x + g2 * self.drop(h)
