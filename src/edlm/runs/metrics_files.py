"""Where a run's training metrics are kept: RUN/metrics.jsonl always, TensorBoard event files in RUN/tensorboard/
when asked (`edlm train --log tensorboard`, log="tensorboard" in edlm.train; needs `pip install 'edlm[tensorboard]'`).
The training log (edlm.training.metrics_log) hands every row to these sinks."""

from __future__ import annotations

import json
from pathlib import Path

from edlm.errors import EdlmError
from edlm.safe_io import AppendFile

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


class MetricsFile:
    """RUN/metrics.jsonl, one JSON row per line, appended row by row in place: never through a link, and a row
    cut short by a full disk is cut back out."""

    def __init__(self, out: Path):
        self.file = AppendFile(Path(out) / "metrics.jsonl")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.file.close()


class TensorBoardFiles:
    """RUN/tensorboard/: train/loss, train/lr, ... and val/loss, val/... as scalars."""

    def __init__(self, out: Path, step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, events past the checkpoint (replayed now) are dropped, as in metrics.jsonl
        self.tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=step + 1 if step else None)

    def write(self, row: dict) -> None:
        for key, value in row.items():
            group, values = (key, value) if isinstance(value, dict) else ("train", {key: value})
            for name, v in values.items():
                if name != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{group}/{name}", v, row["step"])

    def close(self) -> None:
        self.tb.close()


def metric_sinks(out: Path, step: int, log: tuple = ()) -> list:
    """The sinks of a run folder: metrics.jsonl, plus TensorBoard files when `log` names it (check_log first)."""
    sinks = [MetricsFile(out)]
    if "tensorboard" in log:
        sinks.append(TensorBoardFiles(out, step))
    return sinks
