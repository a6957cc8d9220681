"""Where training metrics go: RUN/metrics.jsonl always, TensorBoard event files in RUN/tensorboard/ when asked
(`edlm train --log tensorboard`, log="tensorboard" in edlm.train; needs `pip install 'edlm[tensorboard]'`),
and the progress bar. Rank 0 writes; every rank takes part in reducing the objective's extra sums."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from edlm.errors import EdlmError
from edlm.safe_io import AppendFile
from edlm.train.config import TrainConfig
from edlm.train.distributed import Dist, all_reduce_sum
from edlm.train.optim import lr_at
from edlm.utils import progress

LOG_SINKS = ("tensorboard",)
"""where metrics may go besides metrics.jsonl (always written)"""


def check_log(log) -> tuple[str, ...]:
    """The extra metric sinks asked for (a name or names from LOG_SINKS), checked before anything runs: an
    unknown name, or TensorBoard asked for without the tensorboard package, is one EdlmError."""
    sinks = (log,) if isinstance(log, str) else tuple(log or ())
    unknown = [s for s in sinks if s not in LOG_SINKS]
    if unknown:
        raise EdlmError(f"unknown log {', '.join(map(repr, unknown))}: choose from {', '.join(LOG_SINKS)}")
    if "tensorboard" in sinks:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise EdlmError("logging to TensorBoard needs the tensorboard package: "
                            "pip install 'edlm[tensorboard]'") from None
    return tuple(dict.fromkeys(sinks))


class RunLog:
    """metrics.jsonl and the TensorBoard events if asked (written by rank 0), and the progress bar; close()
    releases them all."""

    def __init__(self, out: Path, d: Dist, cfg: TrainConfig, quiet: bool, step: int, sinks: tuple = ()):
        self.d, self.cfg = d, cfg
        # appended in place: never through a link, and a row cut short by a full disk is cut back out
        self.file = AppendFile(out / "metrics.jsonl") if d.is_main else None
        self.tb = None
        if "tensorboard" in sinks and d.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: on resume, events past the checkpoint (replayed now) are dropped, as in metrics.jsonl
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)
        self.bar = progress(total=cfg.max_steps, initial=step, desc=f"train {cfg.objective}", unit="step",
                            disable=quiet or not d.is_main or None)
        self.tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * d.world_size
        self.tok_since, self.time_since, self.t0 = 0, time.time(), time.time()

    def stepped(self) -> None:
        self.tok_since += self.tokens_per_step
        if self.d.is_main:
            self.bar.update(1)

    def train_row(self, run, loss: float, gnorm, sums: torch.Tensor, extra_sums: dict) -> dict:
        """Write (rank 0) and return the row of the step just taken: loss, lr, gradient norm, throughput and
        the objective's own metrics (its extra sums are reduced here: every rank takes part)."""
        now = time.time()
        row = {"step": run.step, "loss": loss, "lr": lr_at(run.step - 1, run.cfg), "grad_norm": float(gnorm),
               "tokens_per_second": self.tok_since / max(now - self.time_since, 1e-9), "elapsed": now - self.t0}
        if extra_sums:
            ex = {k: all_reduce_sum(v.clone(), self.d).item() for k, v in extra_sums.items()}
            row.update(run.objective.metrics(ex, sums[1].item()))
        self.tok_since, self.time_since = 0, now
        if self.d.is_main:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_second']:.0f}")
        self.write(row)
        return row

    def write(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
        if self.tb is not None:  # train/loss, train/lr, ... and val/loss, val/...
            for key, value in row.items():
                group, values = (key, value) if isinstance(value, dict) else ("train", {key: value})
                for name, v in values.items():
                    if name != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.tb.add_scalar(f"{group}/{name}", v, row["step"])

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
