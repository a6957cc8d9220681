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
numbers and names only) is read with torch.load(weights_only=True) through edlm.safe_load. Non-finite weights
are never saved and never loaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edlm.errors import EdlmError

# Reading lives in edlm.runs.folder (loading a run's model needs no writer); re-exported here for the writers
# and for code that reads and writes (resume).
from edlm.runs.folder import (  # noqa: E402, F401
    FILES,
    check_identity,
    checked_state,
    checkpoint_dir,
    fallback_advice,
    has_checkpoint,
    has_ema,
    has_run_state,
    identity,
    latest_dir,
    load_tensors,
    load_weights,
    newest_complete,
    read_run,
    read_state,
    verify_files,
)
from edlm.training.state import full_cpu_state, load_optimizer_state
from edlm.utils import atomic_write_json, file_mode_for, fsync_path, non_finite, sha256_file

FORMAT = 2  # 2: state.json lists its files with sizes + sha256, RNG in rng.safetensors; 1 (older): neither


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
        _remove(stale)
    tmp = ckdir / f".tmp-{name}"
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
    mode = file_mode_for(ckdir / name)  # 0o666 minus the umask (safetensors writes 0600)
    files = {}
    try:
        tmp.mkdir()  # a new folder of our own: the files below are created in it, never reached through a link
        for fname, write in writers.items():
            p = tmp / fname
            write(p)
            os.chmod(p, mode)
            fsync_path(p)
            files[fname] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        atomic_write_json(tmp / "state.json", {"step": step, "format": FORMAT, "files": files, **state})
        fsync_path(tmp)
    except Exception as e:  # noqa: BLE001 - a full disk comes as OSError, SafetensorError or torch's RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        free, why = shutil.disk_usage(ckdir).free / 2**20, (str(e).splitlines() or [""])[0]
        raise EdlmError(f"could not save step {step} in {ckdir} ({type(e).__name__}: {why}; "
                        f"{free:.0f} MiB free there): any earlier checkpoint is intact; free some space, then "
                        "resume") from None
    final = ckdir / name
    if final.exists() or final.is_symlink():  # the same step saved again after a resume from an earlier one
        _remove(final)
    tmp.rename(final)
    fsync_path(ckdir)
    atomic_write_json(run / "latest.json", {"step": step, "dir": f"checkpoints/{name}",
                                            "state_sha256": sha256_file(final / "state.json")})
    for old in sorted(p for p in ckdir.glob("step_*") if p != final)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _remove(p: Path) -> None:
    """A folder of ours, or a link in its place (removed itself: rmtree never follows one)."""
    if p.is_symlink() or not p.is_dir():
        p.unlink(missing_ok=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


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
    """torch.load(weights_only=True) through edlm.safe_load: tensors, numbers, strings and containers only."""
    from edlm.safe_load import load_torch_file

    return load_torch_file(p, "a training state", damaged=lambda: fallback_advice(d),
                           refused="resume only runs you trust; its weights stay usable by sample and eval "
                                   "(safetensors run no code)")


def last_good_note(run: Path) -> str:
    """A sentence on the run's last checkpoint that is TRUE: only a verified, finite checkpoint is called good."""
    restart = f"restart from step 0 with a lower `lr`, e.g. `edlm train --out {run} --resume --lr LR`"
    if not has_checkpoint(run):
        return f"No checkpoint was saved: {restart} (or more `warmup_steps`)"
    try:
        d = checkpoint_dir(run)
        state = read_state(d)
        name = "ema.safetensors" if has_ema(d, state) else "model.safetensors"
        verify_files(d, state, [name])
        bad = non_finite(load_file(str(d / name)))
    except EdlmError as e:
        return f"The run's latest checkpoint is not usable either: {e}"
    if bad:
        return (f"The run's latest checkpoint (step {state['step']}, saved by an edlm without this guard) holds "
                f"NaN/inf weights too: retrain in a new folder")
    checked = f", validation loss {state['save_loss']:.4g} when saved" if state.get("save_loss") is not None else ""
    return (f"The last good checkpoint (step {state['step']}: finite weights{checked}) in {run} is intact: "
            f"resume it with a lower `lr`, e.g. `edlm train --out {run} --resume --lr LR` (or more `warmup_steps`)")


class RunStore:
    """The training loop's checkpoint store for a run folder (edlm.training.loop.fit's `store`): checkpoints/ and
    latest.json of `out`, every state.json carrying the run's identity (the run.json fields its weights fit)."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.label = Path(out), meta, str(out)

    def save(self, step: int, model_sd: dict, ema_sd: dict | None, optim_sd: dict | None, state: dict, *,
             keep: int, rng_extra: dict | None = None) -> None:
        save_checkpoint(self.out, step, model_sd, ema_sd, optim_sd, {**state, "identity": identity(self.meta)},
                        keep=keep, rng_extra=rng_extra)

    def last_good_note(self) -> str:
        return last_good_note(self.out)
