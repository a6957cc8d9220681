"""Batches of fixed-length blocks from a token stream: deterministic, resumable, split across DDP ranks.

Wrap mode (MDLM style): the split's token stream (documents already concatenated, with EOS between
them for BPE corpora) is cut into contiguous non-overlapping blocks of ``seq_len``; the ragged tail is
dropped. Each epoch visits the blocks in a permutation seeded by (seed, epoch). A *global batch* is
``batch_size * world_size`` consecutive blocks of that permutation; rank r takes its own contiguous
``batch_size`` of them, so ranks never overlap and together cover the global batch. The incomplete last
global batch of an epoch is skipped so that all ranks take the same number of steps.

    loader = BlockLoader(load_split("synthetic", "train"), seq_len=128, batch_size=32, seed=0)
    x = loader.next_batch()          # (32, 128) int64
    state = loader.state_dict()      # {"epoch": 0, "position": 1, "seed": 0, ...}: JSON-able
    BlockLoader(...).load_state_dict(state)   # continues with exactly the batch that would follow

Pad mode (``doc_boundaries`` given, ``pad_id`` set): each block is the start of one document (cut to
``seq_len``), padded with ``pad_id``; blocks are documents, everything else is the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from edlm.errors import EdlmError

STATE_VERSION = 1


class BlockLoader:
    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        doc_boundaries: np.ndarray | None = None,
        pad_id: int | None = None,
    ):
        if seq_len < 1 or batch_size < 1 or world_size < 1 or not (0 <= rank < world_size):
            raise ValueError(
                f"bad loader geometry: seq_len={seq_len} batch_size={batch_size} "
                f"rank={rank} world_size={world_size}"
            )
        self.tokens = tokens
        self.seq_len, self.batch_size = int(seq_len), int(batch_size)
        self.seed, self.rank, self.world_size, self.shuffle = (
            int(seed),
            int(rank),
            int(world_size),
            bool(shuffle),
        )
        self.pad_id = pad_id
        if doc_boundaries is not None:
            if pad_id is None:
                raise ValueError("pad-per-document mode needs pad_id (e.g. the mask or EOS id)")
            b = np.asarray(doc_boundaries, dtype=np.int64)
            self._starts, self._ends = b[:-1], b[1:]
            self.n_blocks = len(self._starts)
        else:
            self._starts = self._ends = None
            self.n_blocks = len(tokens) // self.seq_len
        self.global_batch = self.batch_size * self.world_size
        self.steps_per_epoch = self.n_blocks // self.global_batch
        if self.steps_per_epoch == 0:
            raise EdlmError(
                f"split has {self.n_blocks} blocks of {seq_len} tokens, fewer than one global batch of "
                f"{self.global_batch} (batch_size x world_size); use a smaller `batch_size` or `seq_len`, or a "
                "bigger corpus"
            )
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
            else:
                self._perm = np.arange(self.n_blocks)
            self._perm_epoch = epoch
        return self._perm

    def _block(self, i: int) -> np.ndarray:
        if self._starts is None:
            s = i * self.seq_len
            return np.asarray(self.tokens[s : s + self.seq_len])
        s, e = int(self._starts[i]), int(self._ends[i])
        out = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        doc = np.asarray(self.tokens[s : min(e, s + self.seq_len)])
        out[: len(doc)] = doc
        return out

    def block_indices(self) -> np.ndarray:
        """Indices of the blocks the next batch of this rank will hold (does not advance)."""
        lo = self.position * self.global_batch + self.rank * self.batch_size
        return self._order(self.epoch)[lo : lo + self.batch_size]

    def next_batch(self) -> torch.Tensor:
        """(batch_size, seq_len) int64; rolls over to the next epoch (new permutation) as needed."""
        idx = self.block_indices()
        batch = np.stack([self._block(int(i)) for i in idx]).astype(np.int64)
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return torch.from_numpy(batch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    def __len__(self) -> int:
        """Steps per epoch (iteration itself is infinite)."""
        return self.steps_per_epoch

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "seq_len": self.seq_len,
            "n_blocks": self.n_blocks,
            "global_batch": self.global_batch,
            "blocks_done": self.position * self.global_batch,
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a position. A different world size / batch size is accepted when the saved number of
        blocks consumed this epoch is a multiple of the new global batch."""
        for k in ("seq_len", "n_blocks", "seed", "shuffle"):
            if k in d and d[k] != getattr(self, k):
                raise EdlmError(
                    f"loader state was saved with {k}={d[k]} but this loader has "
                    f"{k}={getattr(self, k)}; resume with the same data settings"
                )
        blocks_done = int(
            d.get("blocks_done", int(d["position"]) * int(d.get("global_batch", self.global_batch)))
        )
        if blocks_done % self.global_batch:
            raise EdlmError(
                f"loader state stopped after {blocks_done} blocks of its epoch, not a multiple of "
                f"the new global batch {self.global_batch}; resume with the original "
                "batch_size x world_size"
            )
        self.epoch, self.position = int(d["epoch"]), blocks_done // self.global_batch
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0


def iter_eval_blocks(
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    max_blocks: int | None = None,
) -> Iterator[torch.Tensor]:
    """Every block of a split exactly once, in order: (<=batch_size, seq_len) int64 batches.

    Rank r gets blocks r, r + world_size, r + 2*world_size, ... (so ranks are disjoint, their union is every
    block, and counts differ by at most one); the last batch may be smaller. ``max_blocks`` caps the total
    over all ranks (the first max_blocks blocks). Reduce metrics as sums over tokens across ranks.
    """
    n = len(tokens) // seq_len
    if max_blocks is not None:
        n = min(n, int(max_blocks))
    mine = np.arange(rank, n, world_size)
    for lo in range(0, len(mine), batch_size):
        idx = mine[lo : lo + batch_size]
        yield torch.from_numpy(
            np.stack([np.asarray(tokens[i * seq_len : (i + 1) * seq_len]) for i in idx]).astype(np.int64)
        )
