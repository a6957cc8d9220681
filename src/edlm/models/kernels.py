"""Switch a model onto the optional kernels of a KernelsConfig (config/kernels.py), or refuse clearly.

    k = resolve_kernels("norm,rope,lce,float8", device, training=True)   # checks, before any work
    apply_kernels(model, k, training=True)                                # then compile, wrap, train

resolve_kernels: on a CPU every option is dropped with one warning (the libraries' kernels are CUDA/Triton
only, and a run trained with them must still resume or sample on a CPU); on CUDA a missing package is one
EdlmError naming the extra to install. apply_kernels sets the layers' flags (models/layers.py), converts the
blocks' Linear layers to float8 training (torchao.float8) or quantises them for inference (torchao's
quantize_); call it before torch.compile and before DDP/FSDP2 wrap the model.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import nn

from edlm.config.kernels import KernelsConfig
from edlm.errors import EdlmError
from edlm.models.layers import MLP, Attention, LayerNorm

BLOCK_LINEARS = (".attn.qkv", ".attn.out", ".mlp.fc", ".mlp.proj")
"""the Linear layers float8 and weight quantisation convert: the blocks' matrix products, not the adaLN
(one row per sequence) nor the output layer (which the losses and the sampler's draw read at full precision)"""
EXTRAS = {"liger_kernel": "liger", "torchao": "float8"}


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise EdlmError(f"kernels {what} need the package {module!r}: pip install 'edlm[{EXTRAS[module]}]' "
                        f"(docs/performance.md)")


def check_kernels(spec, device, *, training: bool) -> KernelsConfig:
    """Parse and check `spec` for `device` (EdlmError: unknown name, an option for the wrong job, a package
    missing on CUDA); nothing is dropped here. -> the parsed config."""
    k = KernelsConfig.parse(spec)
    if not k.any:
        return k
    if training and (k.gelu or k.weights != "model"):
        raise EdlmError("kernels gelu and weights= are for sampling (inference); training takes liger, norm, rope, "
                        "lce, float8")
    if k.gelu and k.weights != "model":
        raise EdlmError("kernels: gelu runs on plain weights; choose gelu or weights=, not both")
    if torch.device(device).type == "cuda":
        if k.liger:
            _need("liger_kernel", "norm, rope and lce")
        if k.float8 or k.weights != "model":
            _need("torchao", "float8 and weights=")
    return k


def resolve_kernels(spec, device, *, training: bool) -> KernelsConfig:
    """The KernelsConfig that will run on `device`: check_kernels, then on a CPU the plain path (one warning)."""
    k = check_kernels(spec, device, training=training)
    if k.any and torch.device(device).type != "cuda":
        warnings.warn(f"kernels {k.spec()!r} run on CUDA devices only: the plain PyTorch path runs on {device}",
                      stacklevel=2)
        return KernelsConfig()
    if k.norm or k.rope:
        # measured once on an H100 (torch 2.11, liger-kernel 0.8.5; docs/performance.md): the `small` model's
        # training step with both crashed with a CUDA error, while the small-size numerics tests passed
        warnings.warn("kernels `norm` / `rope` (Liger) crashed the `small` model's training step in their one GPU "
                      "measurement (H100, torch 2.11, liger-kernel 0.8.5): check a short run before relying on them",
                      stacklevel=2)
    return k


def _transformers(model: nn.Module):
    from edlm.models.transformer import Transformer

    return [m for m in model.modules() if isinstance(m, Transformer)]


def _block_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and fqn.startswith("blocks.") and fqn.endswith(BLOCK_LINEARS)


def apply_kernels(model: nn.Module, k: KernelsConfig, *, training: bool) -> nn.Module:
    """Put every Transformer inside `model` (an energy's backbone too) on the kernels of `k` (from
    resolve_kernels: already checked for this device). In place; returns the model."""
    if not k.any:
        return model
    for tr in _transformers(model):
        tr.kernels = k
        for m in tr.modules():
            if isinstance(m, LayerNorm):
                m.fused = k.norm
            elif isinstance(m, Attention):
                m.fused_rope = k.rope
            elif isinstance(m, MLP):
                m.fused_gelu = k.gelu
        if k.float8:
            to_float8_training(tr)
        if k.weights != "model" and not training:
            quantize_weights(tr, k.weights)
    return model


def to_float8_training(tr: nn.Module) -> None:
    """The blocks' Linear layers as torchao Float8Linear (dynamic tensor-wise scales: e4m3 forward, e5m2 for
    the gradients); the float32 master weights and the optimizer are unchanged, so checkpoints are too."""
    from torchao.float8 import convert_to_float8_training

    bad = sorted({d for n, m in tr.named_modules() if _block_linear(m, n)
                  for d in (m.in_features, m.out_features) if d % 16})
    if bad:
        raise EdlmError(f"kernels float8: the blocks' widths must be multiples of 16 (float8 matrix products); "
                        f"found {bad}")
    convert_to_float8_training(tr, module_filter_fn=_block_linear)


def quantize_weights(tr: nn.Module, weights: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Inference only: the blocks' Linear layers cast to `dtype` (the autocast dtype sampling runs under, so
    autocast leaves the quantised weights alone) and quantised by torchao: 'fp8' = float8 e4m3 weights with
    per-row scales and per-row dynamic float8 activations (torch._scaled_mm); 'int8' = int8 weights and
    dynamic int8 activations (torch._int_mm). The model is not trainable afterwards. The bf16 weight copies
    of compiled sampling (Transformer.low_precision_weights) are switched off: they would undo this."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8DynamicActivationInt8WeightConfig,
        PerRow,
        quantize_,
    )

    if weights == "fp8":
        cfg = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    elif weights == "int8":
        cfg = Int8DynamicActivationInt8WeightConfig(version=2, set_inductor_config=False)
    else:
        raise EdlmError(f"kernels: weights={weights!r}: choose fp8 or int8")
    for name, m in tr.named_modules():
        if _block_linear(m, name):
            m.to(dtype)
    with torch.no_grad():
        quantize_(tr, cfg, filter_fn=_block_linear)
    tr.low_precision_weights = False
