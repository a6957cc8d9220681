"""The one transformer behind every network here: bidirectional DiT (MDLM) or causal (AR).

    model = Transformer(TransformerConfig(vocab_size=28, causal=False))
    logits = model(x, t)            # x: (B, L) int64, t: (B,) in [0, 1] or None -> (B, L, n_out_padded)

`vocab_size` counts every input id (the MASK id included for diffusion). Time conditioning goes
through adaLN; with `time_conditioning=False` (MDLM's default) the model sees t = 0 always, so the
same weights serve a denoiser that ignores t and its output can be cached between sampler steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edlm.config.kernels import KernelsConfig
from edlm.config.model import TransformerConfig
from edlm.diffusion.schedules import SCHEDULE_EPS
from edlm.models import fused
from edlm.models.layers import Block, LayerNorm, Rotary, TimestepEmbedder, modulate


class FinalLayer(nn.Module):
    def __init__(self, dim: int, cond_dim: int, n_out: int, adaln: bool = True):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.adaLN = nn.Linear(cond_dim, 2 * dim) if adaln else None
        self.linear = nn.Linear(dim, n_out)
        for lin in (self.adaLN, self.linear):
            if lin is not None:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def features(self, x, c):
        if self.adaLN is None:
            return self.norm(x)
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
        if cfg.time_input not in ("t", "mdlm_sigma"):
            raise ValueError(f"time_input {cfg.time_input!r}: use 't' or 'mdlm_sigma'")
        self.t_embed = TimestepEmbedder(cfg.cond_dim) if cfg.adaln else None
        self._extra = 1 if cfg.prefix_token is not None and not cfg.causal else 0
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.max_len + self._extra)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout, cfg.adaln, cfg.attn_dropout)
            for _ in range(cfg.n_layers)
        )
        self.final = FinalLayer(cfg.d_model, cfg.cond_dim, cfg.n_out_padded, cfg.adaln)
        if cfg.init_std > 0:
            for name, p in self.named_parameters():
                if ("adaLN" in name or name.startswith("final.linear")) and p.dim() == 2:
                    nn.init.normal_(p, std=cfg.init_std)
        self._compiled_features, self._graphs = None, False  # set by compile_trunk()
        self._compile_kwargs, self._low = {}, None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def cond(self, t: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        if self.t_embed is None:
            return None
        if t is None or not self.cfg.time_conditioning:
            t = torch.zeros(batch, device=device)
        elif self.cfg.time_input == "mdlm_sigma":
            t = -torch.log1p(-(1 - SCHEDULE_EPS) * t.float())
        return torch.nn.functional.silu(self.t_embed(t))

    def hidden(self, h: torch.Tensor, c: torch.Tensor, start: int = 0, kv_caches=None) -> torch.Tensor:
        """Run the blocks on embeddings h (B, L, D) with conditioning c (B, cond_dim)."""
        L = h.shape[1]
        if start + L > self.cfg.max_len + self._extra:
            raise ValueError(f"sequence of length {start + L} exceeds the model's max_len {self.cfg.max_len}")
        cos, sin = self.rotary.cos_sin(start, L)
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, cos, sin, self.cfg.causal, None if kv_caches is None else kv_caches[i])
        return h

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None, start: int = 0, kv_caches=None):
        """x: (B, L) ids -> the output layer's input (B, L, D): everything but the vocabulary projection."""
        p = self.cfg.prefix_token
        if p is not None and (start == 0 or not self.cfg.causal):
            first = x.new_full((x.shape[0], 1), p)
            x = torch.cat([first, x if self._extra else x[:, 1:]], dim=1)
        c = self.cond(t, x.shape[0], x.device)
        h = self.hidden(self.embed(x), c, start, kv_caches)
        if self._extra:
            h = h[:, 1:]
        return self.final.features(h, c)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """features (..., D) -> logits (..., n_out_padded). Columns past n_out are padding: every consumer
        slices the classes it reads ([..., :mask_id]) inside its own (fused) kernel, which saves the
        two full-size copies a sliced view costs in the backward pass."""
        return self.final.linear(f)

    # Tells losses and samplers that forward() takes rows= (wrappers such as DDP hide the class).
    accepts_rows = True

    kernels = KernelsConfig()
    """the optional fused kernels this model runs (models.kernels.apply_kernels sets them)"""

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, *, start: int = 0, kv_caches=None,
                rows: torch.Tensor | None = None, targets: torch.Tensor | None = None, classes: int | None = None,
                summed: bool = False):
        """x: (B, L) ids -> logits (B, L, n_out_padded); columns past cfg.n_out are padding (see head()).
        `start`/`kv_caches` are for causal incremental decoding.
        rows: a (B, L) bool mask -> logits only there, (N, n_out) in row-major order: the vocabulary
        projection (a third of the small model's FLOPs at GPT-2's vocabulary) skips the other positions.
        Or (N,) int64 flat positions (b * L + l): logits there, in that order, with no host sync (a bool
        mask is counted on the host).
        targets: instead of logits, the log-probabilities (float32) of these classes under a softmax over the
        first `classes` columns, one per selected row ((B, L) for every position, (N,) with rows), or their
        sum with summed=True; models.fused.IGNORE marks a row that counts 0. With the `lce` kernel the
        projection and the softmax run fused, chunk by chunk, and no logits tensor exists (models/fused.py).
        It runs inside forward() so that DDP and FSDP2 see the output layer's weights used."""
        f = self.features(x, t, start, kv_caches) if kv_caches is not None else self.trunk(x, t, start)
        if rows is not None:
            f = f[rows] if rows.dtype == torch.bool else f.flatten(0, 1).index_select(0, rows)
        if targets is not None:
            lin = self.final.linear
            lp = fused.target_log_probs(f.reshape(-1, f.shape[-1]), lin.weight, lin.bias, targets.reshape(-1),
                                        classes or self.cfg.n_out, summed=summed, fused=self.kernels.lce)
            return lp if summed else lp.view(targets.shape)
        return self.head(f)

    low_precision_weights = True
    """compiled inference under bf16/fp16 autocast runs on copies of the Linear weights in that dtype
    (see _LowPrecisionTrunk); False: the compiled graph casts the float32 weights at every call"""

    def trunk(self, x: torch.Tensor, t: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        """features(), through the compiled graph when compile_trunk() was called."""
        if self._compiled_features is None:
            return self.features(x, t, start)
        fn = self._compiled_features
        low = self._low_precision_trunk(x)
        if low is not None:
            fn = low
        if not self._graphs:
            return fn(x, t, start)
        # CUDA-graph modes reuse their output buffer on the next replay: hand out a copy (B*L*D, cheap).
        torch.compiler.cudagraph_mark_step_begin()
        return fn(x, t, start).clone()

    def _low_precision_trunk(self, x):
        """The compiled trunk over low-precision weight copies, when it computes the same numbers: inference
        (no grad) under an autocast whose dtype the Linear layers would be cast to anyway; else None."""
        if not self.low_precision_weights or torch.is_grad_enabled():
            return None
        dev = x.device.type
        if not torch.is_autocast_enabled(dev):
            return None
        dtype = torch.get_autocast_dtype(dev)
        if dtype not in (torch.bfloat16, torch.float16):
            return None
        if self._low is None or self._low.dtype != dtype:
            self._low = _LowPrecisionTrunk(self, dtype, self._compile_kwargs)
        return self._low(x)

    def compile_trunk(self, *, per_block: bool = False, **kwargs):
        """torch.compile everything but the vocabulary projection, whose rows vary (static shapes: one graph
        per (B, L)). per_block=True compiles each block on its own instead (what FSDP2 wants; training);
        kwargs go to torch.compile (mode="reduce-overhead" adds CUDA graphs: sampling at small batch)."""
        if per_block:
            for blk in self.blocks:
                blk.compile(**kwargs)
        else:
            self._compiled_features = torch.compile(self.features, **kwargs)
            self._graphs = kwargs.get("mode") in ("reduce-overhead", "max-autotune")
            self._compile_kwargs, self._low = dict(kwargs), None
        return self

    def new_kv_caches(self) -> list[dict]:
        return [{} for _ in self.blocks]

    # Keys and values of some positions, reused while others change (cached block decoding,
    # sampling/kvcache.py). Positions are the visible ones (0 .. L-1); a prefix token's row, when the
    # model has one, is part of every K/V tensor (row 0) and always kept.

    def features_and_kv(self, x: torch.Tensor, t: torch.Tensor | None = None):
        """features(x, t) (B, L, D), the same numbers, and every layer's keys and values (after rotary):
        a list of (k, v), each (B, H, L', Dh) with L' = L (+1 for a prefix token's row)."""
        caches = self.new_kv_caches()
        f = self.features(x, t, 0, caches)
        return f, [(c["k"], c["v"]) for c in caches]

    def kv_positions(self, kv: list, keep: torch.Tensor) -> list:
        """kv as from features_and_kv, restricted to the visible positions where keep (L,) bool is True."""
        if self._extra:
            keep = torch.cat([keep.new_ones(1), keep])
        idx = keep.nonzero().squeeze(1)
        return [(k.index_select(2, idx), v.index_select(2, idx)) for k, v in kv]

    def span_features(self, x: torch.Tensor, t: torch.Tensor | None, lo: int, context: list) -> torch.Tensor:
        """Features (B, n, D) of the visible positions lo .. lo+n-1, given their ids x (B, n): each attends over
        the others of the span and over `context` (per-layer (k, v) of other positions, e.g. kv_positions of an
        earlier features_and_kv). Bidirectional models only. Exact when the context's keys and values are what
        a full forward would compute now; an approximation when they are older than the span's tokens."""
        if self.cfg.causal:
            raise ValueError("span_features attends both ways: use features(x, t, start, kv_caches) for a causal model")
        c = self.cond(t, x.shape[0], x.device)
        caches = [{"k": k, "v": v} for k, v in context]
        h = self.hidden(self.embed(x), c, lo + self._extra, caches)
        return self.final.features(h, c)


class _LowPrecisionTrunk:
    """A shadow of the model sharing every parameter and buffer except the Linear layers' weights and biases
    (the output layer's too, unused here), which are copies in the autocast dtype, and features() of that
    shadow compiled. Under autocast a Linear casts its float32 weights to that dtype at every call (in a
    CUDA-graphed sampling step on an H200 ~0.3 ms of ~8.8); the copies are those very casts made once, so
    the outputs are the same bits. The copies follow the model: before each call the weights' version
    counters and storage are compared with the copies' (an in-place update such as an optimizer step,
    EMA swap or load_state_dict bumps the counter; writes through `.data` bypass it) and the copies
    refreshed in place (static addresses for CUDA graphs)."""

    def __init__(self, model: Transformer, dtype: torch.dtype, compile_kwargs: dict):
        self.dtype = dtype
        memo = {id(v): v for v in [*model.parameters(), *model.buffers()]}
        saved = model._compiled_features, model._low
        model._compiled_features, model._low = None, None
        try:
            self.module = copy.deepcopy(model, memo)
        finally:
            model._compiled_features, model._low = saved
        self.pairs = []
        for mod in self.module.modules():
            if isinstance(mod, nn.Linear):
                for name in ("weight", "bias"):
                    src = getattr(mod, name)
                    if src is not None:
                        dst = nn.Parameter(src.detach().to(dtype), requires_grad=False)
                        setattr(mod, name, dst)
                        self.pairs.append((src, dst))
        self.key = self._key()
        module = self.module

        def low_precision_features(x, t=None, start=0):  # its own code object: its own Dynamo cache entries
            return module.features(x, t, start)

        self.compiled = torch.compile(low_precision_features, **compile_kwargs)

    def _key(self):
        return [(s._version, s.data_ptr()) for s, _ in self.pairs]

    def __call__(self, x):
        key = self._key()
        if key != self.key:
            with torch.no_grad():
                for s, d in self.pairs:
                    d.copy_(s)
            self.key = key
        return self.compiled
