"""The training guards: a NaN/inf loss, a diverging loss, or weights about to be saved that are non-finite or
diverged stop the run before anything is written, with a message that is true about the last checkpoint (`note()`: a
sentence from whoever keeps the checkpoints, e.g. edlm.runs.checkpoint.last_good_note for a run folder).

The divergence rule (--diverge_factor F, default 10; 0 = off): with L0 the loss of the run's first step,
  * a training loss read at step s >= --warmup_steps above F x L0 stops the run;
  * at every save, the weights about to be written are scored on the first validation batch (eval mode,
    fixed noise, no training RNG touched); a non-finite score or one above F x L0 refuses the save.
So every checkpoint written has finite weights whose loss was checked, and "the last good checkpoint" is.
"""

from __future__ import annotations

import math

import torch

from edlm.config.train import TrainConfig
from edlm.data.loader import iter_eval_blocks
from edlm.errors import EdlmError
from edlm.training.distributed import all_reduce_sum
from edlm.utils import non_finite

PROBE_SEED = 4321
"""the save-time probe's fixed noise: the same t and masks at every save, apart from validation's stream"""


def check_finite(first_bad: torch.Tensor, note) -> None:
    step, value = first_bad.tolist()
    if step >= 0:
        raise EdlmError(f"loss became {value} at step {int(step)}; training stopped and nothing was saved. "
                        f"{note()}")


def check_diverging(loss: float, step: int, initial: float, cfg: TrainConfig, note) -> None:
    """The divergence rule: after warm-up, a loss above diverge_factor x the first step's loss stops the run
    (it cannot come back from there: measured --lr 1e6 went on to a loss of 8e20 with exit 0)."""
    if cfg.diverge_factor and step >= cfg.warmup_steps and initial > 0 and loss > cfg.diverge_factor * initial:
        raise EdlmError(f"loss {loss:.4g} at step {step} is over {cfg.diverge_factor:g}x the first step's "
                        f"{initial:.4g}: the run is diverging (rule: `diverge_factor`, checked after "
                        f"`warmup_steps`); training stopped and nothing was saved. {note()}")


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


def check_before_save(probe: float | None, step: int, initial: float | None, cfg: TrainConfig, note) -> None:
    if probe is None:
        return
    bad = not math.isfinite(probe)
    if not bad and cfg.diverge_factor and initial and initial > 0:
        bad = probe > cfg.diverge_factor * initial
    if bad:
        raise EdlmError(f"after step {step} the weights score a validation loss of {probe:.4g} (first step's loss "
                        f"{initial:.4g}, rule: `diverge_factor` {cfg.diverge_factor:g}): the run is diverging, so "
                        f"they were not saved and training stopped. {note()}")


def check_finite_state(note, step: int, model_sd, ema_sd=None, optim_sd=None) -> None:
    """The guard before every save: NaN/inf weights, EMA or optimizer moments stop training unsaved."""
    for what, sd in (("weights", model_sd), ("EMA weights", ema_sd), ("optimizer state", optim_sd)):
        bad = non_finite(sd) if sd is not None else None
        if bad:
            raise EdlmError(f"after step {step} the {what} hold NaN/inf ({bad}); training stopped and nothing "
                            f"was saved. {note()}")
