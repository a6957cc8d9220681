"""MDLM parameter names mapped to edlm's, and the checks `edlm convert` (convert.py) runs on a source's
tensors before writing anything: every key accounted for, shapes that fit, MDLM's rotary buffer.
"""

from __future__ import annotations

import torch

from edlm.errors import EdlmError

ROTARY_BASE = 10_000.0
BUFFERS = ("rotary_emb.inv_freq",)  # persistent buffer of MDLM's Rotary; recomputed by edlm
_SHOW = 12  # keys named per category in an error message


# ----------------------------------------------------------------------------------------------
# Parameter names
# ----------------------------------------------------------------------------------------------

def _block_names(adaln: bool) -> list[tuple[str, str]]:
    """(MDLM name, edlm name) inside one DDiTBlock, in MDLM's registration order."""
    names = [
        ("norm1.weight", "norm1.weight"),
        ("attn_qkv.weight", "attn.qkv.weight"),
        ("attn_out.weight", "attn.out.weight"),
        ("norm2.weight", "norm2.weight"),
        ("mlp.0.weight", "mlp.fc.weight"),
        ("mlp.0.bias", "mlp.fc.bias"),
        ("mlp.2.weight", "mlp.proj.weight"),
        ("mlp.2.bias", "mlp.proj.bias"),
    ]
    if adaln:
        names += [("adaLN_modulation.weight", "adaLN.weight"), ("adaLN_modulation.bias", "adaLN.bias")]
    return names


def parameter_map(n_blocks: int, *, dit: bool) -> dict[str, str]:
    """MDLM backbone parameter name (without `backbone.`) -> edlm name, in the order of MDLM's
    `backbone.parameters()` (which is the order of the EMA's shadow_params list).
    dit=True: the DiT (models/dit.py, HF modeling_mdlm.py); False: the AR baseline
    (models/autoregressive.py)."""
    m = {"vocab_embed.embedding": "embed.weight"}
    if dit:
        for i in (0, 2):
            for w in ("weight", "bias"):
                m[f"sigma_map.mlp.{i}.{w}"] = f"t_embed.mlp.{i}.{w}"
    for b in range(n_blocks):
        for src, dst in _block_names(dit):
            m[f"blocks.{b}.{src}"] = f"blocks.{b}.{dst}"
    m["output_layer.norm_final.weight"] = "final.norm.weight"
    m["output_layer.linear.weight"] = "final.linear.weight"
    m["output_layer.linear.bias"] = "final.linear.bias"
    if dit:
        m["output_layer.adaLN_modulation.weight"] = "final.adaLN.weight"
        m["output_layer.adaLN_modulation.bias"] = "final.adaLN.bias"
    return m


def _name_list(keys, prefix: str = "") -> str:
    keys = sorted(keys)
    shown = ", ".join(prefix + k for k in keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


# Checking
# ----------------------------------------------------------------------------------------------

def _split_backbone(sd: dict, ignore_prefixes=()) -> tuple[dict, list, list]:
    """-> (backbone tensors without the prefix, ignored keys, keys outside backbone.)"""
    bb, ignored, outside = {}, [], []
    for k, v in sd.items():
        if k.startswith("backbone."):
            bb[k[len("backbone."):]] = v
        elif any(k.startswith(p) for p in ignore_prefixes):
            ignored.append(k)
        else:
            outside.append(k)
    return bb, ignored, outside


def _n_blocks(bb: dict) -> int:
    idx = set()
    for k in bb:
        parts = k.split(".")
        if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
            idx.add(int(parts[1]))
    return max(idx) + 1 if idx else 0


def _check_keys(bb: dict, names: dict, outside: list, fmt: str, kind: str):
    expected = set(names)
    missing = sorted(expected - set(bb))
    unexpected = sorted(["backbone." + k for k in set(bb) - expected - set(BUFFERS)] + outside)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_name_list(missing, 'backbone.')}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_name_list(unexpected)}")
        hint = ""
        if kind == "AR" and any("adaLN_modulation" in k or "sigma_map" in k for k in unexpected):
            hint = " (adaLN/sigma_map weights: this looks like a DiT checkpoint, not the AR baseline)"
        elif kind == "DiT" and any("adaLN_modulation" in k for k in missing) and not any(
                "adaLN_modulation" in k for k in bb):
            hint = " (no adaLN weights: this looks like the AR baseline; use `fmt=mdlm-ar-lightning`)"
        raise EdlmError(f"{fmt}: the checkpoint does not match MDLM's {kind} layout; "
                        + "; ".join(parts) + hint)


def _check_shapes(bb: dict, names: dict, model_sd: dict, fmt: str):
    bad = [f"backbone.{k} {tuple(bb[k].shape)} (expected {tuple(model_sd[v].shape)})"
           for k, v in names.items() if tuple(bb[k].shape) != tuple(model_sd[v].shape)]
    if bad:
        more = f" (+{len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise EdlmError(f"{fmt}: tensor shapes do not match the model they describe: "
                        + ", ".join(bad[:_SHOW]) + more)


def _check_rotary(bb: dict, head_dim: int, fmt: str):
    inv = bb.get("rotary_emb.inv_freq")
    if inv is None:
        return
    want = 1.0 / (ROTARY_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if tuple(inv.shape) != tuple(want.shape) or not torch.allclose(inv.float(), want, rtol=1e-5, atol=0):
        raise EdlmError(f"{fmt}: backbone.rotary_emb.inv_freq {tuple(inv.shape)} is not base-10000 rotary "
                        f"for head size {head_dim} (wrong --n-heads, or a model edlm cannot reproduce)")


def _declared(fmt: str, hf_cfg: dict | None, hp: dict | None) -> dict:
    """Architecture numbers stated by the source (config.json / Lightning hyper-parameters)."""
    if fmt == "mdlm-hf":
        c = hf_cfg or {}
        keys = {"vocab_size": "vocab_size", "hidden_dim": "d_model", "n_heads": "n_heads",
                "n_blocks": "n_blocks", "cond_dim": "cond_dim", "model_length": "length",
                "dropout": "dropout", "time_conditioning": "time_conditioning"}
    else:
        c = hp or {}
        keys = {"hidden_size": "d_model", "n_heads": "n_heads", "n_blocks": "n_blocks",
                "cond_dim": "cond_dim", "length": "length", "dropout": "dropout"}
    return {dst: c[src] for src, dst in keys.items() if c.get(src) is not None}


# ----------------------------------------------------------------------------------------------
