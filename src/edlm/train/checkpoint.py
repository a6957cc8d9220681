"""Checkpoint folders, written atomically, and the loaders that say clearly what is wrong.

    RUN/
      run.json                 objective, model + train config, data manifest summary (the run's identity)
      metrics.jsonl            one row per log step
      latest.json              {"step": N, "dir": "checkpoints/step_000N"}: updated LAST, atomically
      checkpoints/step_000N/   model.safetensors, ema.safetensors, optim.pt, state.json (step, rng, loader)

A checkpoint folder is built under a temporary name and renamed into place; only then does latest.json
move. A crash at any point leaves the previous checkpoint intact and named by latest.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edlm.errors import EdlmError
from edlm.utils import atomic_write_json

FILES = ("model.safetensors", "state.json")


def full_cpu_state(module_or_sd) -> dict:
    """Full (unsharded) CPU tensors. FSDP2 holds DTensors: gathering them is a collective, so EVERY rank
    must call this, even though only rank 0 writes."""
    sd = module_or_sd.state_dict() if hasattr(module_or_sd, "state_dict") else module_or_sd
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().to("cpu").contiguous()
            for k, v in sd.items()}


def full_optimizer_state(model, optimizer) -> dict:
    """The optimizer state keyed by parameter NAME with full tensors (collective under FSDP2), so a
    checkpoint resumes on any number of devices and with or without sharding."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(model, optimizer, osd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=osd, options=StateDictOptions(full_state_dict=True))


def load_full_model_state(model, sd: dict) -> None:
    """Load full tensors into a plain, DDP or FSDP2 model (each rank keeps its own shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))


def save_checkpoint(run: Path, step: int, model_sd: dict, ema_sd: dict | None, optim_sd: dict | None,
                    state: dict, keep: int = 2, rng_extra: dict | None = None) -> Path:
    """Write already-gathered state (see full_cpu_state / full_optimizer_state); call on rank 0 only.
    A module or a device state dict is accepted too (single process)."""
    run = Path(run)
    model_sd = full_cpu_state(model_sd)
    ema_sd = full_cpu_state(ema_sd) if ema_sd is not None else None
    ckdir = run / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = ckdir / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_sd, str(tmp / "model.safetensors"))
    if ema_sd is not None:
        save_file(ema_sd, str(tmp / "ema.safetensors"))
    if optim_sd is not None:
        torch.save(optim_sd, tmp / "optim.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    rng.update(rng_extra or {})
    torch.save(rng, tmp / "rng.pt")
    atomic_write_json(tmp / "state.json", {"step": step, **state})
    final = ckdir / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_json(run / "latest.json", {"step": step, "dir": f"checkpoints/{name}"})
    for old in sorted(p for p in ckdir.glob("step_*") if p != final)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_run(run: Path) -> dict:
    run = Path(run)
    if not run.exists():
        raise EdlmError(f"no run at {run}: train one with `edlm train --out {run}` or check the path")
    meta = run / "run.json"
    if not meta.exists():
        raise EdlmError(f"{run} is not an edlm run folder (no run.json): pass the folder given to `edlm train --out`")
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise EdlmError(f"{meta} is corrupt ({e}); retrain or restore it from a backup") from None


def latest_dir(run: Path) -> Path | None:
    run = Path(run)
    p = run / "latest.json"
    if not p.exists():
        return None
    try:
        d = run / json.loads(p.read_text())["dir"]
    except (json.JSONDecodeError, KeyError):
        raise EdlmError(f"{p} is corrupt; delete it to fall back to the newest complete checkpoint") from None
    return d


def checkpoint_dir(run: Path) -> Path:
    """The latest complete checkpoint folder of a run, or a clear error."""
    run = Path(run)
    d = latest_dir(run)
    if d is None:
        raise EdlmError(f"{run} has no checkpoint yet (no latest.json): train it, or wait for its first save")
    missing = [f for f in FILES if not (d / f).exists()]
    if missing:
        raise EdlmError(f"checkpoint {d} is incomplete (missing {', '.join(missing)}): "
                        "it was truncated or deleted; restore it or retrain")
    return d


def load_weights(run: Path, *, ema: bool = True, device="cpu") -> tuple[dict, dict]:
    """-> (state_dict, state.json). Uses the EMA weights when present and asked for."""
    d = checkpoint_dir(run)
    f = d / ("ema.safetensors" if ema and (d / "ema.safetensors").exists() else "model.safetensors")
    try:
        sd = load_file(str(f), device=str(device))
    except Exception as e:  # safetensors raises several types for truncated files
        raise EdlmError(f"cannot read {f} ({e}): the checkpoint is truncated or corrupt; "
                        "retrain or restore it") from None
    return sd, json.loads((d / "state.json").read_text())


def load_training_state(d: Path, model, optimizer):
    if optimizer is not None and (d / "optim.pt").exists():
        load_optimizer_state(model, optimizer, torch.load(d / "optim.pt", map_location="cpu", weights_only=True))
    rng = torch.load(d / "rng.pt", map_location="cpu", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((d / "state.json").read_text()), rng
