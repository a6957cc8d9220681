"""Starting a run folder over (edlm.train(overwrite=True), `edlm train --overwrite`): remove what a training
wrote there, and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

OWNED = ("run.json", "latest.json", "checkpoints", "metrics.jsonl", "tensorboard", "curves.png")
"""what a training writes into its run folder (train.lock is the lock, held by the caller)"""


def clear_run(out: Path) -> list[str]:
    """Remove the training files of run folder `out` (OWNED); other files are kept. -> the names removed."""
    removed = []
    for name in OWNED:
        p = Path(out) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed
