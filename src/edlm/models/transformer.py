"""The one transformer behind every network here: bidirectional DiT (MDLM) or causal (AR).

    model = Transformer(TransformerConfig(vocab_size=28, causal=False))
    logits = model(x, t)            # x: (B, L) int64, t: (B,) in [0, 1] or None -> (B, L, V)

`vocab_size` counts every input id (the MASK id included for diffusion). Time conditioning goes
through adaLN; with `time_conditioning=False` (MDLM's default) the model sees t = 0 always, so the
same weights serve a denoiser that ignores t and its output can be cached between sampler steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from edlm.models.layers import Block, LayerNorm, Rotary, TimestepEmbedder, modulate


@dataclass
class TransformerConfig:
    vocab_size: int = 28
    """number of input ids (MASK included for diffusion models)"""
    out_vocab: int | None = None
    """number of output classes (defaults to vocab_size)"""
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    cond_dim: int = 64
    mlp_ratio: int = 4
    max_len: int = 64
    dropout: float = 0.0
    causal: bool = False
    time_conditioning: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def n_out(self) -> int:
        return self.out_vocab or self.vocab_size


class FinalLayer(nn.Module):
    def __init__(self, dim: int, cond_dim: int, n_out: int):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.adaLN = nn.Linear(cond_dim, 2 * dim)
        self.linear = nn.Linear(dim, n_out)
        for lin in (self.adaLN, self.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def features(self, x, c):
        shift, scale = self.adaLN(c)[:, None].chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)

    def forward(self, x, c):
        return self.linear(self.features(x, c))


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.kaiming_uniform_(self.embed.weight, a=5 ** 0.5)
        self.t_embed = TimestepEmbedder(cfg.cond_dim)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.max_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.final = FinalLayer(cfg.d_model, cfg.cond_dim, cfg.n_out)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def cond(self, t: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if t is None or not self.cfg.time_conditioning:
            t = torch.zeros(batch, device=device)
        return torch.nn.functional.silu(self.t_embed(t))

    def hidden(self, h: torch.Tensor, c: torch.Tensor, start: int = 0, kv_caches=None) -> torch.Tensor:
        """Run the blocks on embeddings h (B, L, D) with conditioning c (B, cond_dim)."""
        L = h.shape[1]
        if start + L > self.cfg.max_len:
            raise ValueError(f"sequence of length {start + L} exceeds the model's max_len {self.cfg.max_len}")
        cos, sin = self.rotary.cos_sin(torch.arange(start, start + L, device=h.device))
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, cos, sin, self.cfg.causal, None if kv_caches is None else kv_caches[i])
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, *, start: int = 0, kv_caches=None):
        """x: (B, L) ids -> logits (B, L, n_out). `start`/`kv_caches` are for causal incremental decoding."""
        c = self.cond(t, x.shape[0], x.device)
        h = self.hidden(self.embed(x), c, start, kv_caches)
        return self.final(h, c)

    def new_kv_caches(self) -> list[dict]:
        return [{} for _ in self.blocks]
