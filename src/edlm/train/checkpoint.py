"""Checkpoint folders, written atomically, checked on load, and the loaders that say clearly what is wrong.

    RUN/
      run.json                 objective, model + train config, data manifest summary (the run's identity)
      metrics.jsonl            one row per log step
      latest.json              {"step": N, "dir": "checkpoints/step_000N", "state_sha256": ...}: moved LAST
      checkpoints/step_000N/   model.safetensors, ema.safetensors, optim.pt, rng.safetensors, state.json

A checkpoint folder is built under a temporary name and renamed into place; only then does latest.json
move. A crash at any point leaves the previous checkpoint intact and named by latest.json.

state.json lists every other file of its folder with its size and sha256, and latest.json holds the sha256
of state.json, so any missing, truncated or altered piece is found before it is used: one EdlmError naming
the file and the way out, never a silent fallback (no fresh Adam state, no raw weights instead of EMA).
Nothing here unpickles code: weights and RNG states are safetensors, and the optimizer state (tensors,
numbers and names only) is read with torch.load(weights_only=True). Non-finite weights are never saved and
never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edlm.errors import EdlmError
from edlm.utils import atomic_write_json, file_mode_for, fsync_path, sha256_file

FILES = ("model.safetensors", "state.json")
FORMAT = 2  # 2: state.json lists its files with sizes + sha256, RNG in rng.safetensors; 1 (older): neither


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


def non_finite(tree, prefix: str = "") -> str | None:
    """The name of the first floating tensor holding a NaN or inf in a (nested) state dict, else None."""
    if torch.is_tensor(tree):
        return prefix or "tensor" if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else ()
    for k, v in items:
        bad = non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if bad:
            return bad
    return None


def save_checkpoint(run: Path, step: int, model_sd: dict, ema_sd: dict | None, optim_sd: dict | None,
                    state: dict, keep: int = 2, rng_extra: dict | None = None) -> Path:
    """Write already-gathered state (see full_cpu_state / full_optimizer_state); call on rank 0 only.
    A module or a device state dict is accepted too (single process). Refuses non-finite state."""
    run = Path(run)
    model_sd = full_cpu_state(model_sd)
    ema_sd = full_cpu_state(ema_sd) if ema_sd is not None else None
    for what, sd in (("weights", model_sd), ("EMA weights", ema_sd), ("optimizer state", optim_sd)):
        bad = non_finite(sd) if sd is not None else None
        if bad:  # the training loop's guard (guards.check_finite_state) says more; this one never lets it by
            raise EdlmError(f"refusing to save step {step}: the {what} hold NaN/inf ({bad})")
    ckdir = run / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    for stale in ckdir.glob(".tmp-step_*"):  # left by a crash mid-save; never referenced by latest.json
        shutil.rmtree(stale, ignore_errors=True)
    tmp = ckdir / f".tmp-{name}"
    tmp.mkdir()
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    rng.update(rng_extra or {})
    writers = {"model.safetensors": lambda p: save_file(model_sd, str(p)),
               "rng.safetensors": lambda p: save_file({k: v.contiguous() for k, v in rng.items()}, str(p))}
    if ema_sd is not None:
        writers["ema.safetensors"] = lambda p: save_file(ema_sd, str(p))
    if optim_sd is not None:
        writers["optim.pt"] = lambda p: torch.save(optim_sd, p)
    mode = file_mode_for(tmp / "state.json")  # 0o666 minus the umask (safetensors writes 0600)
    files = {}
    for fname, write in writers.items():
        p = tmp / fname
        write(p)
        os.chmod(p, mode)
        fsync_path(p)
        files[fname] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    atomic_write_json(tmp / "state.json", {"step": step, "format": FORMAT, "files": files, **state})
    fsync_path(tmp)
    final = ckdir / name
    if final.exists():  # the same step saved again after a resume from an earlier one
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_path(ckdir)
    atomic_write_json(run / "latest.json", {"step": step, "dir": f"checkpoints/{name}",
                                            "state_sha256": sha256_file(final / "state.json")})
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
        out = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdlmError(f"{meta} is corrupt ({e}); restore it from a backup or retrain") from None
    if not isinstance(out, dict) or not {"objective", "model", "train", "mask_id"} <= out.keys():
        raise EdlmError(f"{meta} is incomplete (objective, model, train or mask_id missing); restore it "
                        "from a backup or retrain")
    return out


def read_state(d: Path, expect_sha: str | None = None) -> dict:
    """state.json of a checkpoint folder, checked against latest.json's hash when given."""
    state, problem = _state_problem(d, expect_sha)
    if problem:
        raise EdlmError(f"{problem}: {fallback_advice(d)}")
    return state


def _state_problem(d: Path, expect_sha: str | None = None) -> tuple[dict | None, str | None]:
    p = d / "state.json"
    if not p.exists():
        return None, f"checkpoint {d} is incomplete (missing state.json)"
    try:
        state = json.loads(p.read_text())
        files = state.get("files", {}) if isinstance(state, dict) else None
        ok = isinstance(state.get("step"), int) and isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
            for v in files.values())
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        return None, f"{p} is damaged (not readable as a checkpoint state)"
    if expect_sha and sha256_file(p) != expect_sha:
        return None, f"{p} does not match the sha256 latest.json holds for it (one of the two is damaged)"
    return state, None


IDENTITY = ("objective", "data", "mask_id", "model")  # what a checkpoint's weights only fit


def identity(meta: dict) -> dict:
    return {k: meta.get(k) for k in IDENTITY}


def check_identity(meta: dict, state: dict, run: Path) -> None:
    """run.json still describes the network this checkpoint holds (checkpoints since format 2 keep a copy)."""
    saved = state.get("identity")
    if saved is None:
        return
    now = json.loads(json.dumps(identity(meta)))
    diff = [k for k in IDENTITY if now.get(k) != saved.get(k)]
    if diff:
        raise EdlmError(f"{Path(run) / 'run.json'} no longer matches its checkpoint of step {state['step']} "
                        f"({', '.join(diff)} differ): it was edited or damaged; restore it from a backup")


def verify_files(d: Path, state: dict, names) -> None:
    """Each named file exists with the size and sha256 recorded in state.json (format 2), or at least
    exists (older checkpoints, which recorded nothing)."""
    for name in names:
        problem = _file_problem(d, state, name)
        if problem:
            raise EdlmError(f"{problem}: {fallback_advice(d)}")


def _file_problem(d: Path, state: dict, name: str) -> str | None:
    recorded, p = state.get("files"), d / name
    if recorded is not None and name not in recorded:
        return f"checkpoint {d} has no {name} (it was saved without it)"
    if not p.exists():
        return f"checkpoint {d} is incomplete (missing {name})"
    if recorded is None:
        return None
    rec, size = recorded[name], p.stat().st_size
    if size != rec["bytes"]:
        return f"{p} is truncated or corrupt ({size} bytes, saved with {rec['bytes']})"
    if sha256_file(p) != rec["sha256"]:
        return f"{p} is damaged (its sha256 differs from the one saved in state.json)"
    return None


def _complete(d: Path) -> bool:
    """A checkpoint folder whose state.json reads and whose files all match it (used to find fallbacks)."""
    try:
        state, problem = _state_problem(d)
        return problem is None and not any(_file_problem(d, state, n) for n in state.get("files") or FILES[:1])
    except OSError:
        return False


def newest_complete(run: Path, before: Path | None = None) -> Path | None:
    ckdir = Path(run) / "checkpoints"
    dirs = sorted((p for p in ckdir.glob("step_*") if p.is_dir() and p != before), reverse=True)
    return next((p for p in dirs if _complete(p)), None)


def fallback_advice(d: Path) -> str:
    """How to get past a damaged checkpoint folder d (error path only: hashes the other folders)."""
    run = d.parent.parent
    other = newest_complete(run, before=d)
    if other is None:
        return "no other complete checkpoint exists; restore this one from a backup or retrain"
    return (f"move {d.name} and latest.json out of {run}; --resume, sample and eval then use "
            f"checkpoints/{other.name} (the newest complete checkpoint)")


def latest_dir(run: Path) -> Path | None:
    """The folder latest.json names (None if there is no latest.json); a damaged latest.json is an error
    that names the checkpoint a fix would fall back to."""
    d, _ = _latest(Path(run))
    return d


def _latest(run: Path) -> tuple[Path | None, str | None]:
    p = run / "latest.json"
    if not p.exists():
        return None, None
    try:
        lj = json.loads(p.read_text())
        parts = Path(lj["dir"]).parts  # only ever checkpoints/step_N: a damaged path must not lead elsewhere
        if len(parts) != 2 or parts[0] != "checkpoints" or not parts[1].startswith("step_"):
            raise KeyError("dir")
        d = run / lj["dir"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        other = newest_complete(run)
        fix = (f"move it out of {run}; --resume, sample and eval then use checkpoints/{other.name} (the newest "
               "complete checkpoint)" if other else "no complete checkpoint exists to fall back to; retrain")
        raise EdlmError(f"{p} is corrupt: {fix}") from None
    return d, lj.get("state_sha256")


def has_checkpoint(run: Path) -> bool:
    """A latest.json or any checkpoint folder: the run has saved state (which must then load, or fail)."""
    run = Path(run)
    return (run / "latest.json").exists() or any((run / "checkpoints").glob("step_*"))


def has_run_state(run: Path) -> bool:
    return has_checkpoint(run) or (Path(run) / "metrics.jsonl").exists()


def checkpoint_dir(run: Path) -> Path:
    """The checkpoint a run continues from: the one latest.json names, verified; without latest.json (lost,
    or moved aside as advised) the newest complete folder, said on stderr. Never silently nothing."""
    run = Path(run)
    d, _ = _latest(run)
    if d is None:
        d = newest_complete(run)
        if d is None:
            if any((run / "checkpoints").glob("step_*")):
                raise EdlmError(f"{run} has no latest.json and none of its checkpoint folders is complete: "
                                "restore one from a backup or retrain in a new folder")
            raise EdlmError(f"{run} has no checkpoint yet (no latest.json): train it, or wait for its first save")
        print(f"edlm: note: {run} has no latest.json; using checkpoints/{d.name}, its newest complete "
              "checkpoint", file=sys.stderr)
        return d
    if not d.is_dir():
        raise EdlmError(f"latest.json of {run} names {d.name}, which does not exist: {fallback_advice(d)}")
    return d


def checked_state(run: Path) -> tuple[Path, dict]:
    """(checkpoint folder, its verified state.json)."""
    run = Path(run)
    d = checkpoint_dir(run)
    _, sha = _latest(run)
    return d, read_state(d, sha if (run / "latest.json").exists() else None)


def has_ema(d: Path, state: dict) -> bool:
    """Whether the checkpoint holds EMA weights: its file list says so; older checkpoints listed nothing,
    but one written by the training loop (it has a loader state) of a run with --ema > 0 always had them."""
    if "files" in state:
        return "ema.safetensors" in state["files"]
    if (d / "ema.safetensors").exists():
        return True
    try:
        return "loader" in state and read_run(d.parent.parent)["train"].get("ema", 0) > 0
    except EdlmError:
        return False


def load_weights(run: Path, *, ema: bool = True, device="cpu") -> tuple[dict, dict]:
    """-> (state_dict, state.json). The EMA weights when the checkpoint has them and ema=True; a checkpoint
    that recorded EMA weights but lost them is an error, not a quiet switch to the raw weights."""
    d, state = checked_state(run)
    name = "ema.safetensors" if ema and has_ema(d, state) else "model.safetensors"
    return load_tensors(d, state, name, device), state


def load_tensors(d: Path, state: dict, name: str, device="cpu") -> dict:
    """One verified, finite safetensors file of checkpoint folder d."""
    verify_files(d, state, [name])
    f = d / name
    try:
        sd = load_file(str(f), device=str(device))
    except Exception as e:  # safetensors raises several types for truncated files
        raise EdlmError(f"cannot read {f} ({e}): the checkpoint is truncated or corrupt; "
                        f"{fallback_advice(d)}") from None
    bad = non_finite(sd)
    if bad:
        raise EdlmError(f"{f} holds NaN/inf weights ({bad}): it was saved by a diverged run; "
                        f"{fallback_advice(d)}")
    return sd


def load_training_state(d: Path, model, optimizer, state: dict):
    """Optimizer + RNG states of checkpoint folder d (state = its verified state.json). -> the RNG dict."""
    fmt2 = "files" in state
    names = ["rng.safetensors" if fmt2 else "rng.pt"] + (["optim.pt"] if optimizer is not None else [])
    verify_files(d, state, names)
    if optimizer is not None:
        osd = _torch_load(d / "optim.pt", d)
        try:
            load_optimizer_state(model, optimizer, osd)
        except Exception as e:  # noqa: BLE001 - key/shape mismatches come as several types
            raise EdlmError(f"{d / 'optim.pt'} does not fit this model ({type(e).__name__}: {e}): "
                            f"{fallback_advice(d)}") from None
    if fmt2:
        try:
            flat = load_file(str(d / "rng.safetensors"))
        except Exception as e:  # noqa: BLE001
            raise EdlmError(f"cannot read {d / 'rng.safetensors'} ({e}): {fallback_advice(d)}") from None
        rng = {k: v for k, v in flat.items() if not k.startswith("cuda.")}
        cuda = [flat[k] for k in sorted((k for k in flat if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
        if cuda:
            rng["cuda"] = cuda
    else:
        rng = _torch_load(d / "rng.pt", d)
    try:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise EdlmError(f"the RNG state in {d} is damaged ({e}): {fallback_advice(d)}") from None
    return rng


def _torch_load(p: Path, d: Path):
    """torch.load that never runs code: weights_only=True admits tensors, numbers, strings and containers."""
    import pickle

    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():  # torch's restricted unpickler met a global it will not call
            raise EdlmError(f"refusing to load {p}: it holds more than tensors and numbers, and unpickling it "
                            "could run code. Resume only runs you trust; its weights stay usable by sample and "
                            "eval (safetensors run no code)") from None
        raise EdlmError(f"cannot read {p} (not a torch file): it is damaged; {fallback_advice(d)}") from None
    except Exception as e:  # noqa: BLE001 - a truncated zip raises RuntimeError, others vary
        raise EdlmError(f"cannot read {p} ({type(e).__name__}): it is truncated or corrupt; "
                        f"{fallback_advice(d)}") from None
