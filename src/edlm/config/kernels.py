"""Which optional GPU kernels a model runs: a small config, parsed from a comma-separated spec.

    KernelsConfig.parse("norm,rope,lce")      # Liger Kernel's LayerNorm, rotary and fused linear + cross-entropy
    KernelsConfig.parse("float8")             # the trunk's Linear layers trained in float8 (torchao)
    KernelsConfig.parse("gelu,weights=fp8")   # sampling: GELU in the matrix epilogue, fp8 trunk weights

Every option changes how a number is computed, never what the model is: a checkpoint trained with any of them
loads and runs without them, and the empty spec is PyTorch's plain path (SDPA attention, plain ops). They need a
CUDA device and an optional package (docs/performance.md: `pip install 'edlm[liger]'` / `'edlm[float8]'`); on a
CPU each is dropped with one warning (models.kernels.resolve_kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from edlm.errors import EdlmError

LIGER = ("norm", "rope", "lce")
"""the options that Liger Kernel provides ('liger' in a spec names all three)"""
WEIGHTS = ("model", "fp8", "int8")


@dataclass(frozen=True)
class KernelsConfig:
    norm: bool = False
    """LayerNorm forward and backward through Liger Kernel's Triton kernels (each block's two norms and the
    final layer's), in place of the compiled plain ops"""
    rope: bool = False
    """the rotary embedding of q and k in one Liger Kernel launch (forward and backward)"""
    lce: bool = False
    """training losses through Liger Kernel's fused linear + cross-entropy: the vocabulary projection and the
    log-softmax in chunks, with no (rows, vocabulary) logits tensor kept for the backward pass (the AR loss at
    every position, MDLM's at the masked rows)"""
    float8: bool = False
    """training: the blocks' Linear layers (qkv, attention output, MLP) in float8 with dynamic tensor-wise
    scales (torchao.float8); the adaLN and output layers stay as they are"""
    gelu: bool = False
    """inference: the MLP's first Linear, its bias and the GELU (tanh) in one cuBLASLt call with a GELU
    epilogue (torch._addmm_activation); training keeps the plain path (no fused backward exists in torch)"""
    weights: str = "model"
    """inference: the blocks' Linear weights as they are ('model'), or quantised by torchao: 'fp8' (float8
    weights and per-row dynamic float8 activations, H100/H200 class GPUs) or 'int8' (int8 weights and
    dynamic int8 activations)"""

    @classmethod
    def parse(cls, spec: str | KernelsConfig | None) -> KernelsConfig:
        """'' / 'none' -> the plain path; 'norm,rope,lce,float8,gelu,weights=fp8'; 'liger' = norm,rope,lce."""
        if isinstance(spec, KernelsConfig):
            return spec
        out: dict = {}
        for item in filter(None, (s.strip() for s in (spec or "").split(","))):
            if item == "none":
                continue
            if item == "liger":
                out.update(dict.fromkeys(LIGER, True))
            elif item.startswith("weights="):
                w = item.split("=", 1)[1]
                if w not in WEIGHTS:
                    raise EdlmError(f"kernels: weights={w!r}: choose one of {', '.join(WEIGHTS)}")
                out["weights"] = w
            elif item in {f.name for f in fields(cls)} - {"weights"}:
                out[item] = True
            else:
                raise EdlmError(f"kernels: unknown option {item!r}: choose from liger, norm, rope, lce, float8, "
                                f"gelu, weights=fp8|int8 (comma-separated)")
        return cls(**out)

    def spec(self) -> str:
        """The canonical spec string ('' for the plain path)."""
        names = [f.name for f in fields(self) if f.name != "weights" and getattr(self, f.name)]
        return ",".join(names + ([f"weights={self.weights}"] if self.weights != "model" else []))

    @property
    def any(self) -> bool:
        return self != KernelsConfig()

    @property
    def liger(self) -> bool:
        return self.norm or self.rope or self.lce
