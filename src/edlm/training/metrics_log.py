"""The training log: each logged step's row (loss, lr, gradient norm, throughput, the objective's own metrics)
handed to the sinks a caller gives (a run folder's metrics.jsonl and TensorBoard files: edlm.runs.metrics_files),
and the progress bar. Rank 0 writes; every rank takes part in reducing the objective's extra sums."""

from __future__ import annotations

import time

import torch

from edlm.config.train import TrainConfig
from edlm.training.distributed import Dist, all_reduce_sum
from edlm.training.optim import lr_at
from edlm.utils import progress


class TrainLog:
    """Rows to the sinks (objects with write(row) and close(); give them on rank 0 only) and the progress bar;
    close() releases them all."""

    def __init__(self, d: Dist, cfg: TrainConfig, quiet: bool, step: int, sinks: list | tuple = ()):
        self.d, self.cfg = d, cfg
        self.sinks = list(sinks) if d.is_main else []
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
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        self.bar.close()
        for sink in self.sinks:
            sink.close()
