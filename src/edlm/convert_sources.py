"""Reading the checkpoints `edlm convert` imports (convert.py): a Hugging Face folder or weights file, and a
Lightning .ckpt opened without running any of its pickled code.
"""

from __future__ import annotations

import json
import pickle
import types
from pathlib import Path

import torch

from edlm.errors import EdlmError

_SHOW = 12  # keys named per category in an error message


def _name_list(keys, prefix: str = "") -> str:
    keys = sorted(keys)
    shown = ", ".join(prefix + k for k in keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


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
    try:
        if wfile.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(wfile), device="cpu")
        else:
            sd = torch.load(wfile, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors/torch raise several types for bad files
        raise EdlmError(f"cannot read {wfile} as a weights file ({type(e).__name__}: {e})") from None
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


class _Inert:
    """Stand-in for a class a checkpoint names that we do not import (omegaconf, transformers,
    lightning...): it records what the pickle gives it and runs nothing."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(_args=args, _state=None, _items={}, _list=[])
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setitem__(self, key, value):
        self._items[key] = value

    def append(self, value):
        self._list.append(value)

    def extend(self, values):
        self._list.extend(values)


def _inert_pickle_module():
    """A pickle module for torch.load that resolves only tensor-rebuilding globals and a few safe
    builtins; every other global becomes an _Inert subclass (so no code from the file can run)."""
    allowed = {
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "slice"), ("builtins", "range"), ("builtins", "complex"), ("builtins", "bytearray"),
        ("torch", "Size"), ("torch", "device"), ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch.nn.parameter", "Parameter"),
    }
    stubs: dict[tuple[str, str], type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed or (module == "torch._utils" and name.startswith("_rebuild_")):
                return super().find_class(module, name)
            if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                             torch.memory_format)):
                return getattr(torch, name)
            key = (module, name)
            if key not in stubs:
                stubs[key] = type(name, (_Inert,), {"_origin": f"{module}.{name}"})
            return stubs[key]

    def load(f, **kw):
        return Unpickler(f, **kw).load()

    return types.SimpleNamespace(__name__="edlm_inert_pickle", Unpickler=Unpickler, load=load,
                                 UnpicklingError=pickle.UnpicklingError)


def _load_ckpt(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # it names classes beyond tensors (hyper-parameters: omegaconf config, tokenizer)
    except Exception as e:
        raise EdlmError(f"cannot read {path} as a torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_inert_pickle_module())
    except Exception as e:
        raise EdlmError(f"cannot read {path} as a torch checkpoint ({type(e).__name__}: {e})") from None


def _plain(v):
    """An int/float/bool/str from a plain value or an omegaconf value node read as _Inert."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, _Inert):
        st = v._state
        if isinstance(st, tuple) and st and isinstance(st[0], dict):
            st = st[0]
        if isinstance(st, dict) and "_val" in st:
            return _plain(st["_val"])
    return None


def _find_model_config(obj, depth: int = 0):
    """Best effort: the `model` section of MDLM's Hydra config among the Lightning hyper-parameters
    (a mapping with hidden_size and n_heads), or None."""
    if depth > 16:
        return None
    if isinstance(obj, _Inert):
        children = [obj._state, obj._items, list(obj._args), obj._list]
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
        found = _find_model_config(c, depth + 1)
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
