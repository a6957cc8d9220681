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

import json
import shutil
from pathlib import Path

import torch

from edlm.diffusion.schedules import T_EPS
from edlm.errors import EdlmError
from edlm.runs.convert_names import (  # noqa: F401 (parameter_map re-exported)
    _SHOW,
    BUFFERS,
    ROTARY_BASE,
    _check_keys,
    _check_rotary,
    _check_shapes,
    _declared,
    _n_blocks,
    _name_list,
    _split_backbone,
    parameter_map,
)
from edlm.safe_io import check_outputs
from edlm.safe_load import LIGHTNING_FOREIGN, Foreign, load_torch_file

FORMATS = ("mdlm-hf", "mdlm-ar-lightning")
GPT2_EOT = 50256
LIGHTNING_IGNORED_PREFIXES = ("noise.",)  # MDLM's noise schedule module (no tensors for loglinear)


# ----------------------------------------------------------------------------------------------
# Reading the sources
# ----------------------------------------------------------------------------------------------

def _read_hf(src: Path) -> tuple[dict, dict | None, Path]:
    """A Hugging Face folder (config.json + model.safetensors or pytorch_model.bin) or one weights file."""
    if src.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (src / name).exists():
                wfile = src / name
                break
        else:
            if any(src.glob("*.index.json")):
                raise EdlmError(f"{src} holds a sharded checkpoint (*.index.json); mdlm-owt is one file: "
                                "pass the folder that holds model.safetensors")
            raise EdlmError(f"{src} holds neither model.safetensors nor pytorch_model.bin: pass the folder "
                            "of the kuleshov-group/mdlm-owt hub repository (or one of those files)")
        cfg_file = src / "config.json"
    else:
        wfile, cfg_file = src, src.parent / "config.json"
    if wfile.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(wfile), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
            raise EdlmError(f"cannot read {wfile} as a weights file ({type(e).__name__}: {e})") from None
    else:
        sd = load_torch_file(wfile, "a weights file", refused="use the model.safetensors of the hub repository "
                             "instead (safetensors files hold tensors only)")
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise EdlmError(f"{wfile} is not a state dict of tensors")
    cfg = None
    if cfg_file.exists():
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise EdlmError(f"{cfg_file} is not valid JSON ({e})") from None
        if cfg.get("model_type", "mdlm") != "mdlm":
            raise EdlmError(f"{cfg_file} describes a {cfg['model_type']!r} model, "
                            "not an MDLM (model_type 'mdlm')")
    return sd, cfg, wfile


_RESAVE = ("if you trust the file, keep only its weights: python -c \"import torch; ck = torch.load('{src}', "
           "weights_only=False); torch.save({{'state_dict': ck['state_dict'], 'ema': ck.get('ema')}}, "
           "'weights.ckpt')\" and convert weights.ckpt (pass --n-heads; docs/reliability.md)")


def _load_ckpt(path: Path):
    """The checkpoint as torch.load(weights_only=True) reads it, MDLM's config and tokenizer classes as inert
    Foreign objects (edlm.safe_load); anything else that is not tensors, numbers and containers is refused."""
    return load_torch_file(path, "a Lightning checkpoint", refused=_RESAVE.format(src=path),
                           damaged=lambda: "pass the .ckpt file MDLM's Lightning trainer wrote (download it again "
                                           "if it was cut short)", foreign=LIGHTNING_FOREIGN)


def _plain(v):
    """An int/float/bool/str from a plain value or an omegaconf value node read as Foreign."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, Foreign):
        st = v.state
        if isinstance(st, tuple) and st and isinstance(st[0], dict):
            st = st[0]
        if isinstance(st, dict) and "_val" in st:
            return _plain(st["_val"])
    return None


def _find_model_config(obj, depth: int = 0, seen: set | None = None):
    """Best effort: the `model` section of MDLM's Hydra config among the Lightning hyper-parameters
    (a mapping with hidden_size and n_heads), or None. omegaconf nodes point at their parents: each object
    is visited once."""
    seen = set() if seen is None else seen
    if depth > 16 or id(obj) in seen:
        return None
    seen.add(id(obj))
    if isinstance(obj, Foreign):
        children = [obj.state, list(obj.args)]
    elif isinstance(obj, dict):
        if "n_heads" in obj and "hidden_size" in obj:
            out = {k: _plain(obj[k]) for k in ("hidden_size", "n_heads", "n_blocks", "cond_dim", "length",
                                               "dropout", "causal") if k in obj}
            if isinstance(out.get("n_heads"), int) and isinstance(out.get("hidden_size"), int):
                return out
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    else:
        return None
    for c in children:
        found = _find_model_config(c, depth + 1, seen)
        if found is not None:
            return found
    return None


def _read_lightning(src: Path):
    if src.is_dir():
        raise EdlmError(f"{src} is a folder: pass the AR baseline's Lightning .ckpt file")
    ck = _load_ckpt(src)
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise EdlmError(f"{src} is not a Lightning checkpoint (no 'state_dict' mapping)")
    sd = ck["state_dict"]
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise EdlmError(f"{src}: state_dict entries that are not tensors: {_name_list(bad)}")
    ema = ck.get("ema")
    shadow = None
    if ema is not None:
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if not isinstance(shadow, (list, tuple)) or not all(torch.is_tensor(t) for t in shadow):
            raise EdlmError(f"{src}: 'ema' is not MDLM's ExponentialMovingAverage state "
                            "(a dict whose shadow_params is a list of tensors)")
    step = ck.get("global_step")
    return sd, shadow, _find_model_config(ck.get("hyper_parameters")), step if isinstance(step, int) else None


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------

def convert(fmt: str, src, out, *, data: str = "prose-bpe", seq_len: int | None = None,
            n_heads: int | None = None, bos_id: int | None = None) -> dict:
    """Convert and write the run folder `out`. Returns the summary printed by `edlm convert`."""
    from edlm.config.model import TransformerConfig
    from edlm.config.train import TrainConfig
    from edlm.data import corpora
    from edlm.models.transformer import Transformer
    from edlm.runs import checkpoint as ckpt
    from edlm.runs.binding import manifest_binding
    from edlm.runs.folder import RunMeta, write_run

    if fmt not in FORMATS:
        raise EdlmError(f"unknown `fmt` {fmt!r}; choose one of {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise EdlmError(f"`src` {src} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdlmError(f"{out} already exists and is not empty: choose another `out`")
    check_outputs({"`out`": out}, {"`src`": src})

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
            raise EdlmError(f"{fmt}: vocabulary of {V} ids is not GPT-2 + MASK: pass `bos_id`, the id MDLM's "
                            "data put first in every block (the tokenizer's BOS)")
        bos_id = GPT2_EOT
    if not 0 <= bos_id < mask_id:
        raise EdlmError(f"`bos_id` {bos_id} is outside the vocabulary [0, {mask_id})")

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
        raise EdlmError(f"`data` {data} has mask id {man['mask_id']}, but the checkpoint's vocabulary is "
                        f"{mask_id} tokens + MASK: choose a corpus with the checkpoint's tokenizer")
    tokenizer = man.get("tokenizer") if man else ("gpt2" if mask_id == GPT2_EOT + 1 else None)
    objective = "mdlm" if dit else "ar"
    train = TrainConfig(objective=objective, data=data, seq_len=seq_len, schedule="loglinear",
                        t_eps=T_EPS, ema=0.9999, max_steps=step or 0)
    meta = RunMeta.create(
        cfg, train, vocab_size=man["vocab_size"] if man else mask_id, mask_id=mask_id, tokenizer=tokenizer,
        **(manifest_binding(man) if man else {}),
        converted={"from": fmt, "src": str(src.resolve()), "weights_file": wfile.name,
                          "source_step": step, "source_dtypes": dtypes, "ema": ema_sd is not None,
                          "bos_id": bos_id, "block_length": length,
                          "note": "MDLM blocks are [BOS] + tokens; edlm sequences are the tokens after the "
                                  "BOS, which the model sees as prefix_token (docs/convert.md)"})
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        ckpt.save_checkpoint(out, step or 0, model, ema_sd, None,
                             {"converted_from": fmt, "identity": ckpt.identity(meta.raw)}, keep=1)
        write_run(out, meta)  # last: the folder is a run only once complete
    except BaseException:  # a full disk, say: leave `out` as it was (absent or empty), not half a run
        shutil.rmtree(out, ignore_errors=True)
        if not created:
            out.mkdir(exist_ok=True)
        raise
    return {"from": fmt, "src": str(src), "out": str(out), "objective": objective,
            "params": model.num_params(), "missing": [], "unexpected": [], "ignored": ignored,
            "ema": ema_sd is not None, "step": step, "n_layers": n_blocks, "d_model": D, "n_heads": heads,
            "vocab_size": V, "seq_len": seq_len, "prefix_token": bos_id, "time_conditioning": time_cond,
            "data": data, "data_prepared": man is not None}
