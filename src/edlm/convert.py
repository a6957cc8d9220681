"""Import public MDLM checkpoints (the kuleshov-group/mdlm format) as edlm run folders.

    summary = convert("mdlm-hf", "mdlm-owt/", "runs/mdlm-owt")          # the DiT from the HF hub
    summary = convert("mdlm-ar-lightning", "ar.ckpt", "runs/ar-owt")     # the AR baseline (Lightning)

Both sources hold the network under a `backbone.` prefix with MDLM's own parameter names. Every
name is mapped to an edlm name through `parameter_map`; a missing, unexpected or mis-shaped tensor
stops the conversion with an EdlmError naming the keys, before anything is written.

What the converted models compute (docs/convert.md; proven against an independent reference
implementation of MDLM's forward pass in tests/mdlm_reference.py):
- DiT: edlm's Transformer already matches MDLM's block (weight-only float32 LayerNorm, fused qkv
  laid out (3, heads, head_dim), rotate-half rotary on the whole head, adaLN chunks shift/scale/gate
  for attention then MLP, SiLU of the sigma embedding, modulated final layer). MDLM's data put
  <|endoftext|> (BOS) in slot 0 of every 1024-token block, so the converted model sees
  `prefix_token` there and edlm sequences are the 1023 tokens after it (max_len = length - 1).
  time_conditioning=False (mdlm-owt) feeds zeros in both codebases; a time-conditioned checkpoint
  reads sigma = -log(1 - (1 - 1e-3) t) (time_input="mdlm_sigma").
- AR: plain pre-norm blocks without adaLN (adaln=False), causal. MDLM's AR reads x0[:-1] of a block
  whose first token is BOS and scores x0[1:]; edlm's AR input is [BOS slot, x_1..x_{L-1}] and the
  slot is fed `prefix_token`, so both score the same tokens with the same context.
- The MASK id must be the last id (true for GPT-2 vocabularies, mask 50257 of 50258).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.convert_sources import _SHOW, _name_list, _read_hf, _read_lightning
from edlm.errors import EdlmError

FORMATS = ("mdlm-hf", "mdlm-ar-lightning")
GPT2_EOT = 50256
ROTARY_BASE = 10_000.0
MDLM_LOGLINEAR_EPS = 1e-3
BUFFERS = ("rotary_emb.inv_freq",)  # persistent buffer of MDLM's Rotary; recomputed by edlm
LIGHTNING_IGNORED_PREFIXES = ("noise.",)  # MDLM's noise schedule module (no tensors for loglinear)


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


# ----------------------------------------------------------------------------------------------
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
            hint = " (no adaLN weights: this looks like the AR baseline; use --from mdlm-ar-lightning)"
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
# Conversion
# ----------------------------------------------------------------------------------------------

def convert(fmt: str, src, out, *, data: str = "prose-bpe", seq_len: int | None = None,
            n_heads: int | None = None, bos_id: int | None = None) -> dict:
    """Convert and write the run folder `out`. Returns the summary printed by `edlm convert`."""
    from edlm.data import corpora
    from edlm.models.transformer import Transformer, TransformerConfig
    from edlm.run_folder import RunMeta, write_run
    from edlm.train import checkpoint as ckpt
    from edlm.train.config import TrainConfig

    if fmt not in FORMATS:
        raise EdlmError(f"unknown --from {fmt!r}; choose one of {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise EdlmError(f"--src {src} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdlmError(f"{out} already exists and is not empty: choose another --out")

    dit = fmt == "mdlm-hf"
    kind = "DiT" if dit else "AR"
    if dit:
        raw, hf_cfg, wfile = _read_hf(src)
        shadow, step, source = None, None, "config.json"
        stated = _declared(fmt, hf_cfg, None)
        bb, ignored, outside = _split_backbone(raw)
    else:
        raw, shadow, hp, step = _read_lightning(src)
        wfile, source = src, "the checkpoint's hyper_parameters"
        stated = _declared(fmt, None, hp)
        bb, ignored, outside = _split_backbone(raw, LIGHTNING_IGNORED_PREFIXES)

    # Layout: every tensor named and nothing else (blocks counted from the file, or as the config says).
    n_blocks = stated.get("n_blocks", _n_blocks(bb))
    names = parameter_map(n_blocks, dit=dit)
    _check_keys(bb, names, outside, fmt, kind)
    ignored += ["backbone." + b for b in BUFFERS if b in bb]

    # Sizes: as the source states them, else read from the tensors; every shape is checked below
    # against the model they describe (MDLM's MLP is always 4x wide).
    V, D = (int(n) for n in bb["vocab_embed.embedding"].shape)
    V, D = int(stated.get("vocab_size", V)), int(stated.get("d_model", D))
    cond_dim = int(stated.get("cond_dim", bb["sigma_map.mlp.0.weight"].shape[0] if dit else 128))
    if n_heads is not None and stated.get("n_heads") not in (None, n_heads):
        raise EdlmError(f"--n-heads {n_heads} contradicts {source} (n_heads = {stated['n_heads']})")
    heads = n_heads or stated.get("n_heads") or (D // 64 if D % 64 == 0 else None)
    if not heads or D % heads:
        raise EdlmError(f"{fmt}: cannot tell the number of attention heads for hidden size {D}: "
                        "pass --n-heads")

    length = int(stated.get("length", 1024))
    max_len = length - 1  # slot 0 of MDLM's blocks is the BOS (prefix_token); edlm sees the rest
    seq_len = max_len if seq_len is None else seq_len
    if not 1 <= seq_len <= max_len:
        raise EdlmError(f"--seq-len {seq_len}: the model was trained on {length}-token blocks whose first "
                        f"token is the BOS, so edlm sequences have 1..{max_len} tokens")
    mask_id = V - 1
    if bos_id is None:
        if mask_id != GPT2_EOT + 1:
            raise EdlmError(f"{fmt}: vocabulary of {V} ids is not GPT-2 + MASK: pass --bos-id, the id MDLM's "
                            "data put first in every block (the tokenizer's BOS)")
        bos_id = GPT2_EOT
    if not 0 <= bos_id < mask_id:
        raise EdlmError(f"--bos-id {bos_id} is outside the vocabulary [0, {mask_id})")

    time_cond = bool(stated.get("time_conditioning", False)) if dit else False
    cfg = TransformerConfig(vocab_size=V, out_vocab=V, n_layers=n_blocks, d_model=D, n_heads=heads,
                            cond_dim=cond_dim, mlp_ratio=4, max_len=max_len,
                            dropout=float(stated.get("dropout", 0.1)), causal=not dit,
                            time_conditioning=time_cond, adaln=dit,
                            time_input="mdlm_sigma" if time_cond else "t", prefix_token=bos_id, out_pad=1)
    model = Transformer(cfg)
    model_sd = model.state_dict()
    _check_shapes(bb, names, model_sd, fmt)
    _check_rotary(bb, D // heads, fmt)
    dtypes = sorted({str(bb[k].dtype).replace("torch.", "") for k in names})
    weights = {dst: bb[k].to(torch.float32).contiguous() for k, dst in names.items()}
    model.load_state_dict(weights, strict=True)

    ema_sd = None
    if shadow is not None:
        order = list(names)
        if len(shadow) != len(order):
            raise EdlmError(f"{fmt}: ema.shadow_params has {len(shadow)} tensors but the {kind} has "
                            f"{len(order)} parameters (MDLM keeps one per backbone parameter, in order)")
        bad = [f"ema.shadow_params[{i}] {tuple(t.shape)} for backbone.{k} {tuple(bb[k].shape)}"
               for i, (k, t) in enumerate(zip(order, shadow, strict=True))
               if tuple(t.shape) != tuple(bb[k].shape)]
        if bad:
            raise EdlmError(f"{fmt}: EMA tensors do not line up with the parameters: "
                            + ", ".join(bad[:_SHOW]))
        ema_sd = {names[k]: t.to(torch.float32).contiguous() for k, t in zip(order, shadow, strict=True)}

    try:
        man = corpora.manifest(data)
    except EdlmError as e:
        if "not prepared" not in str(e):
            raise
        man = None
    if man is not None and man["mask_id"] != mask_id:
        raise EdlmError(f"--data {data} has mask id {man['mask_id']}, but the checkpoint's vocabulary is "
                        f"{mask_id} tokens + MASK: choose a corpus with the checkpoint's tokenizer")
    tokenizer = man.get("tokenizer") if man else ("gpt2" if mask_id == GPT2_EOT + 1 else None)
    objective = "mdlm" if dit else "ar"
    train = TrainConfig(objective=objective, data=data, seq_len=seq_len, schedule="loglinear",
                        t_eps=MDLM_LOGLINEAR_EPS, ema=0.9999, max_steps=step or 0)
    meta = RunMeta.create(
        cfg, train, vocab_size=man["vocab_size"] if man else mask_id, mask_id=mask_id, tokenizer=tokenizer,
        converted={"from": fmt, "src": str(src.resolve()), "weights_file": wfile.name,
                          "source_step": step, "source_dtypes": dtypes, "ema": ema_sd is not None,
                          "bos_id": bos_id, "block_length": length,
                          "note": "MDLM blocks are [BOS] + tokens; edlm sequences are the tokens after the "
                                  "BOS, which the model sees as prefix_token (docs/convert.md)"})
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(out, step or 0, model, ema_sd, None, {"converted_from": fmt}, keep=1)
    write_run(out, meta)  # last: the folder is a run only once complete
    return {"from": fmt, "src": str(src), "out": str(out), "objective": objective,
            "params": model.num_params(), "missing": [], "unexpected": [], "ignored": ignored,
            "ema": ema_sd is not None, "step": step, "n_layers": n_blocks, "d_model": D, "n_heads": heads,
            "vocab_size": V, "seq_len": seq_len, "prefix_token": bos_id, "time_conditioning": time_cond,
            "data": data, "data_prepared": man is not None}
