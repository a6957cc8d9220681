"""A run folder: run.json (RunMeta: read here, and written here by training and `edlm convert` alike), and
reading latest.json, checkpoint folders and their weights, checked on the way in.

The checkpoint layout and its guarantees are described in runs/checkpoint.py, which writes checkpoints; loading
a run's model (runs/load.py) reads through this module alone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file

from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig
from edlm.errors import EdlmError
from edlm.runs.binding import check_identity, identity  # noqa: F401 (re-exported: runs, training)
from edlm.utils import atomic_write_json, non_finite, sha256_file  # noqa: F401 (non_finite re-exported)

FILES = ("model.safetensors", "state.json")
RUN_ENTRIES = ("run.json", "latest.json", "metrics.jsonl", "train.lock", "checkpoints", "tensorboard")
"""what a run folder holds of its own (no command's output may replace one)"""


@dataclass
class RunMeta:
    """A typed view of a run folder's run.json (plus the step of the loaded checkpoint)."""

    objective: str
    """"mdlm", "ar" or "nce" (an energy network)"""
    data: str
    """corpus the run was trained on (its tokenizer and splits)"""
    mask_id: int
    tokenizer: str | None
    model: TransformerConfig
    train: TrainConfig
    step: int | None
    raw: dict = field(repr=False)
    """run.json as a dict (with "step" when loaded with weights): what write_run writes, key for key"""

    @classmethod
    def from_dict(cls, d: dict) -> RunMeta:
        return cls(objective=d["objective"], data=d.get("data"), mask_id=int(d["mask_id"]),
                   tokenizer=d.get("tokenizer"), model=TransformerConfig.from_dict(d["model"]),
                   train=TrainConfig.from_dict(d["train"]), step=d.get("step"), raw=d)

    @classmethod
    def create(cls, model: TransformerConfig, train: TrainConfig, *, vocab_size: int, mask_id: int,
               tokenizer: str | None, global_batch: int | None = None, **extra) -> RunMeta:
        """The run.json of a new run (trained or converted); `extra`: further entries (e.g. "converted")."""
        from edlm import __version__

        d = {"objective": train.objective, "data": train.data, "mask_id": mask_id, "vocab_size": vocab_size,
             "tokenizer": tokenizer, "model": model.to_dict(), "train": train.to_dict(),
             "diffusion": train.diffusion or None, "edlm_version": __version__}
        if global_batch is not None:
            d["global_batch"] = global_batch
        return cls.from_dict({**d, **extra})

    def to_dict(self) -> dict:
        return dict(self.raw)


def as_meta(meta: RunMeta | dict) -> RunMeta:
    """A RunMeta from either a RunMeta or run.json's dict (as load_model returns it)."""
    return meta if isinstance(meta, RunMeta) else RunMeta.from_dict(meta)


def is_run_folder(path: Path) -> bool:
    """Whether `path` looks like a run folder (has a run.json; read_run checks it)."""
    return (Path(path) / "run.json").is_file()


def write_run(run: Path, meta: RunMeta) -> None:
    """Write RUN/run.json (atomically: a reader sees the old file or the new one). The loaded checkpoint's
    step is not part of it."""
    atomic_write_json(Path(run) / "run.json", {k: v for k, v in meta.raw.items() if k != "step"})


def read_meta(run: Path) -> RunMeta:
    """RUN/run.json, checked, as a RunMeta."""
    return RunMeta.from_dict(read_run(run))


def read_run(run: Path) -> dict:
    run = Path(run)
    if not run.exists():
        raise EdlmError(f"no run at {run}: check the path, or train one there (edlm.train(..., out={str(run)!r}) in "
                        f"Python, `edlm train --out {run}` on the command line)")
    meta = run / "run.json"
    if not meta.exists():
        raise EdlmError(f"{run} is not an edlm run folder (no run.json): pass the folder given to `edlm train --out`")
    if not meta.is_file():
        raise EdlmError(f"{meta} is a folder (or other non-file) where the run's config file belongs: move it "
                        "away and restore run.json from a backup")
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


def checkpoint_dir(run: Path, quiet: bool = False) -> Path:
    """The checkpoint a run continues from: the one latest.json names, verified; without latest.json (lost,
    or moved aside as advised) the newest complete folder, said on stderr (unless quiet: a caller that looks
    before the one that uses it). Never silently nothing."""
    run = Path(run)
    d, _ = _latest(run)
    if d is None:
        d = newest_complete(run)
        if d is None:
            if any((run / "checkpoints").glob("step_*")):
                raise EdlmError(f"{run} has no latest.json and none of its checkpoint folders is complete: "
                                "restore one from a backup or retrain in a new folder")
            raise EdlmError(f"{run} has no checkpoint yet (no latest.json): train it, or wait for its first save")
        if not quiet:
            print(f"edlm: note: {run} has no latest.json; using checkpoints/{d.name}, its newest complete "
                  "checkpoint", file=sys.stderr)
        return d
    if not d.is_dir():
        raise EdlmError(f"latest.json of {run} names {d.name}, which does not exist: {fallback_advice(d)}")
    return d


def checked_state(run: Path, quiet: bool = False) -> tuple[Path, dict]:
    """(checkpoint folder, its verified state.json)."""
    run = Path(run)
    d = checkpoint_dir(run, quiet)
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
