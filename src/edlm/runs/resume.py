"""Resuming a run: options given on --resume, the checkpoint's pieces loaded into the live objects, and the
metrics log cut back to the checkpoint so the resumed run reads as one uninterrupted run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edlm.config.train import RESUME_OVERRIDABLE, TrainConfig
from edlm.errors import EdlmError
from edlm.runs import checkpoint as ckpt
from edlm.training.loop import NOISE_SEED_OFFSET
from edlm.training.state import load_full_model_state
from edlm.utils import atomic_write_bytes


def apply_overrides(out: Path, meta: dict, saved: TrainConfig, overrides: dict, rebind: dict | None = None) -> dict:
    """Options given on --resume: the overridable ones replace the saved values; a run-defining option may
    only repeat its saved value. rebind: the run's new corpus binding (runs/binding.py rebind). -> {key: [old,
    new]} of what changed, for run.json's "resumed" history (which binding.check_identity reads)."""
    changed = {}
    for k, v in overrides.items():
        if v is None:
            continue
        if k in RESUME_OVERRIDABLE:
            old = getattr(saved, k)
            v = tuple(v) if k == "betas" else v
            if v != old:
                setattr(saved, k, v)
                changed[k] = [list(old) if k == "betas" else old, list(v) if k == "betas" else v]
            continue
        old = meta["train"].get(k, meta["model"].get(k))
        if k in TrainConfig.__dataclass_fields__ or k in meta["model"]:
            if (list(v) if isinstance(v, tuple) else v) != old:
                raise EdlmError(f"`{k}` cannot change on `resume=True` (the run was made with {old}, you gave {v}): "
                                f"drop `{k}`, or start a new run; only {', '.join(RESUME_OVERRIDABLE)} may change")
    meta["train"].update({k: new for k, (_, new) in changed.items()})
    for k, v in (rebind or {}).items():
        if meta.get(k) != v:
            changed[k] = [meta.get(k), v]
            meta[k] = v
    return changed


def resume_from(out: Path, meta: dict, model, ema, opt, gen, loader, cfg) -> tuple[int, float | None]:
    """Load a verified checkpoint: weights, EMA, optimizer, RNGs, data position. Every piece the run needs
    must be there; the optimizer takes the (possibly overridden) config's betas and weight decay."""
    cdir, state = ckpt.checked_state(out)
    if "loader" not in state:
        raise EdlmError(f"{out} has no training state to resume (a converted or hand-made run): train a new "
                        "run from it instead (e.g. objective 'nce' with `diffusion` RUN)")
    ckpt.check_identity(meta, state, out)
    if ema is not None:
        if not ckpt.has_ema(cdir, state):
            raise EdlmError(f"checkpoint {cdir} has no ema.safetensors, but this run keeps an EMA: "
                            f"{ckpt.fallback_advice(cdir)}")
        # load the EMA through the model so it gets the model's sharding, then the real weights
        _load_into(model, ckpt.load_tensors(cdir, state, "ema.safetensors"), out)
        ema.load_state_dict(model.state_dict())
    _load_into(model, ckpt.load_tensors(cdir, state, "model.safetensors"), out)
    rng = ckpt.load_training_state(cdir, model, opt, state)
    for g in opt.param_groups:
        g["betas"] = tuple(cfg.betas)
    opt.param_groups[0]["weight_decay"] = cfg.weight_decay  # group 0 decays, group 1 never does
    if "noise" not in rng:
        raise EdlmError(f"the RNG state of {cdir} lacks the noise generator: {ckpt.fallback_advice(cdir)}")
    _restore_noise(gen, rng["noise"], cfg.seed, state["step"], cdir)
    loader.load_state_dict(state["loader"])
    return state["step"], state.get("initial_loss")


def _restore_noise(gen, saved, seed: int, step: int, cdir) -> None:
    """Continue the noise stream exactly when the run resumes on the kind of device it was saved on. CPU and
    CUDA generators are different algorithms (Mersenne Twister, 5056-byte state; Philox, 16 bytes), so a run
    saved on a GPU and resumed on a CPU (or back) cannot continue its stream: the generator is seeded as a new
    run's is (training/loop.py build_state), moved on by the step so the resumed run does not replay the noise of
    its first steps; one warning says so, and the weights, optimizer and data position stay exact."""
    if saved.numel() == gen.get_state().numel():
        gen.set_state(saved)
        return
    warnings.warn(f"{cdir}: the noise generator was saved on another kind of device (state of {saved.numel()} "
                  f"bytes, this {gen.device.type} generator needs {gen.get_state().numel()}); it is seeded from "
                  "(seed, step) instead, so the masking draws from here on differ from an uninterrupted run on "
                  "the original device (weights, optimizer and data order are restored exactly)", stacklevel=2)
    gen.manual_seed((int(seed) + NOISE_SEED_OFFSET + int(step)) % 2**64)


def _load_into(model, sd: dict, out: Path) -> None:
    try:
        load_full_model_state(model, sd)
    except (RuntimeError, KeyError, ValueError) as e:
        raise EdlmError(f"the checkpoint of {out} does not fit the model run.json describes "
                        f"({str(e).strip().splitlines()[-1][:160]}): run.json or the weights were edited") from None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (a crash between a log and a save), so the
    resumed run's metrics read as one uninterrupted run. A torn LAST line is a row cut off by the crash: it
    is always later than the checkpoint (each row is written before its step's save), so it goes too. A
    damaged line anywhere else is an error."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            row_step = row["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if i == len(lines) - 1:
                break
            raise EdlmError(f"{path} line {i + 1} is damaged (not a metrics row): remove or repair that line, "
                            "then `resume=True` again") from None
        if row_step <= step:
            keep.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())
