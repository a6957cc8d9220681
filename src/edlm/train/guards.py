"""The training guards: a NaN/inf loss, a diverging loss, or weights about to be saved that are non-finite or
diverged stop the run before anything is written, with a message that is true about the last checkpoint.

The divergence rule (--diverge_factor F, default 10; 0 = off): with L0 the loss of the run's first step,
  * a training loss read at step s >= --warmup_steps above F x L0 stops the run;
  * at every save, the weights about to be written are scored on the first validation batch (eval mode,
    fixed noise, no training RNG touched); a non-finite score or one above F x L0 refuses the save.
So every checkpoint written has finite weights whose loss was checked, and "the last good checkpoint" is.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from edlm.data.loader import iter_eval_blocks
from edlm.errors import EdlmError
from edlm.train import checkpoint as ckpt
from edlm.train.config import TrainConfig
from edlm.train.distributed import all_reduce_sum

PROBE_SEED = 4321
"""the save-time probe's fixed noise: the same t and masks at every save, apart from validation's stream"""


def check_finite(first_bad: torch.Tensor, out) -> None:
    step, value = first_bad.tolist()
    if step >= 0:
        raise EdlmError(f"loss became {value} at step {int(step)}; training stopped and nothing was saved. "
                        f"{last_good_note(Path(out))}")


def check_diverging(loss: float, step: int, initial: float, cfg: TrainConfig, out) -> None:
    """The divergence rule: after warm-up, a loss above diverge_factor x the first step's loss stops the run
    (it cannot come back from there: measured --lr 1e6 went on to a loss of 8e20 with exit 0)."""
    if cfg.diverge_factor and step >= cfg.warmup_steps and initial > 0 and loss > cfg.diverge_factor * initial:
        raise EdlmError(f"loss {loss:.4g} at step {step} is over {cfg.diverge_factor:g}x the first step's "
                        f"{initial:.4g}: the run is diverging (rule: `diverge_factor`, checked after "
                        f"`warmup_steps`); training stopped and nothing was saved. {last_good_note(Path(out))}")


@torch.no_grad()
def probe_loss(model, objective, tokens, cfg: TrainConfig, d, device, autocast) -> float | None:
    """The loss of the current weights on the first validation batch (all ranks take part)."""
    x0 = next(iter_eval_blocks(tokens, cfg.seq_len, cfg.batch_size, rank=d.rank, world_size=d.world_size,
                               max_blocks=cfg.batch_size * d.world_size), None)
    if x0 is None:
        return None
    model.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(PROBE_SEED)
    with autocast:
        s, c, _ = objective(model, x0.to(device), gen)
    sums = torch.stack([s.float(), torch.tensor(float(c), device=device)])
    all_reduce_sum(sums, d)
    return (sums[0] / sums[1].clamp(min=1)).item()


def check_before_save(probe: float | None, step: int, initial: float | None, cfg: TrainConfig, out) -> None:
    if probe is None:
        return
    bad = not math.isfinite(probe)
    if not bad and cfg.diverge_factor and initial and initial > 0:
        bad = probe > cfg.diverge_factor * initial
    if bad:
        raise EdlmError(f"after step {step} the weights score a validation loss of {probe:.4g} (first step's loss "
                        f"{initial:.4g}, rule: `diverge_factor` {cfg.diverge_factor:g}): the run is diverging, so "
                        f"they were not saved and training stopped. {last_good_note(Path(out))}")


def check_finite_state(run: Path, step: int, model_sd, ema_sd=None, optim_sd=None) -> None:
    """The guard before every save: NaN/inf weights, EMA or optimizer moments stop training unsaved."""
    for what, sd in (("weights", model_sd), ("EMA weights", ema_sd), ("optimizer state", optim_sd)):
        bad = ckpt.non_finite(sd) if sd is not None else None
        if bad:
            raise EdlmError(f"after step {step} the {what} hold NaN/inf ({bad}); training stopped and nothing "
                            f"was saved. {last_good_note(Path(run))}")


def last_good_note(run: Path) -> str:
    """A sentence on the run's last checkpoint that is TRUE: only a verified, finite checkpoint is called good."""
    restart = f"restart from step 0 with a lower `lr`, e.g. `edlm train --out {run} --resume --lr LR`"
    if not ckpt.has_checkpoint(run):
        return f"No checkpoint was saved: {restart} (or more `warmup_steps`)"
    try:
        d = ckpt.checkpoint_dir(run)
        state = ckpt.read_state(d)
        name = "ema.safetensors" if ckpt.has_ema(d, state) else "model.safetensors"
        ckpt.verify_files(d, state, [name])
        bad = ckpt.non_finite(load_file(str(d / name)))
    except EdlmError as e:
        return f"The run's latest checkpoint is not usable either: {e}"
    if bad:
        return (f"The run's latest checkpoint (step {state['step']}, saved by an edlm without this guard) holds "
                f"NaN/inf weights too: retrain in a new folder")
    checked = f", validation loss {state['save_loss']:.4g} when saved" if state.get("save_loss") is not None else ""
    return (f"The last good checkpoint (step {state['step']}: finite weights{checked}) in {run} is intact: "
            f"resume it with a lower `lr`, e.g. `edlm train --out {run} --resume --lr LR` (or more `warmup_steps`)")
