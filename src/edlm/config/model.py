"""The transformer's configuration: one dataclass for every network here (DiT, causal AR, the NCE energy's trunk).

    TransformerConfig(vocab_size=28, n_layers=4, d_model=128, causal=False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edlm.diffusion.schedules import SCHEDULE_EPS  # noqa: F401 (named in time_input's doc)


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
    """dropout on each block's two residual branches (training only), as MDLM's DiT"""
    attn_dropout: float = 0.0
    """dropout on the attention probabilities (training only). 0 = MDLM, whose flash-attention call passes
    0; configs saved before this field existed dropped them at `dropout` and keep doing so on resume"""
    causal: bool = False
    time_conditioning: bool = False
    # The three fields below exist to load checkpoints of other codebases faithfully (`edlm convert`,
    # docs/convert.md); their defaults are edlm's own architecture.
    adaln: bool = True
    """adaLN conditioning in every block and the final layer (False: plain pre-norm blocks with unit
    gates and no time path, as MDLM's AR baseline)"""
    time_input: str = "t"
    """what the time embedding reads when time_conditioning: 't', or 'mdlm_sigma' = MDLM's log-linear
    total noise -log(1 - (1 - SCHEDULE_EPS) t), which MDLM's DiT was conditioned on"""
    prefix_token: int | None = None
    """a token the original model always saw at position 0 (MDLM: <|endoftext|> as BOS). Non-causal: it
    is prepended to every input and its output row dropped; causal: it is fed in edlm's BOS slot.
    max_len still counts the visible tokens only"""
    init_std: float = 0.0
    """std of a normal initialisation of the adaLN modulation and output-layer weights. 0 = DiT/MDLM's
    zero-init (every block the identity, the output uniform at step 0): on languages where one neighbour
    tells little, a zero-initialised MDLM sits at the unigram plateau for hundreds of steps, because a masked
    position gets no gradient towards attending to its neighbours (docs/mdlm_recipe.md)"""
    out_pad: int = 128
    """the output layer has n_out rounded up to a multiple of this (GPT-2's 50258 -> 50304): odd widths
    fall off the GPU's fast matrix kernels (measured 2x slower on H200). Extra rows are never read"""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.setdefault("out_pad", 1)  # configs saved before padding existed: the unpadded layer
        known.setdefault("attn_dropout", known.get("dropout", 0.0))  # older edlm dropped attention at `dropout`
        return cls(**known)

    @property
    def n_out(self) -> int:
        return self.out_vocab or self.vocab_size

    @property
    def n_out_padded(self) -> int:
        return -(-self.n_out // self.out_pad) * self.out_pad
