"""BlockLoader: exact resume, disjoint rank shards, every block once per epoch; eval blocks."""

import numpy as np
import pytest
import torch

from edlm.data.loader import BlockLoader, iter_eval_blocks
from edlm.errors import EdlmError

TOKENS = np.arange(1000, dtype=np.uint16)  # block i = [8i, 8i+8): identifiable blocks


def test_blocks_are_contiguous_and_cover_epoch():
    ld = BlockLoader(TOKENS, 8, 5, seed=1)
    assert ld.n_blocks == 125 and ld.steps_per_epoch == 25
    seen = []
    for _ in range(25):
        b = ld.next_batch()
        assert b.dtype == torch.int64 and b.shape == (5, 8)
        assert (b[:, 1:] - b[:, :-1] == 1).all()
        seen += (b[:, 0] // 8).tolist()
    assert sorted(seen) == list(range(125))
    assert ld.epoch == 1 and ld.position == 0
    assert (ld.next_batch()[:, 0] // 8).tolist() != seen[:5]  # a new permutation


def test_save_restore_continues_exactly():
    ld = BlockLoader(TOKENS, 8, 4, seed=3)
    for _ in range(37):  # crosses an epoch boundary (31 steps/epoch)
        ld.next_batch()
    state = ld.state_dict()
    want = [ld.next_batch() for _ in range(40)]
    fresh = BlockLoader(TOKENS, 8, 4, seed=3)
    import json

    fresh.load_state_dict(json.loads(json.dumps(state)))
    got = [fresh.next_batch() for _ in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    other_seed = BlockLoader(TOKENS, 8, 4, seed=4)
    with pytest.raises(EdlmError):
        other_seed.load_state_dict(state)


def test_rank_shards_disjoint_and_union_is_global_batch():
    W, B = 3, 4
    single = BlockLoader(TOKENS, 8, B * W, seed=9)
    ranks = [BlockLoader(TOKENS, 8, B, seed=9, rank=r, world_size=W) for r in range(W)]
    for _ in range(15):
        g = single.next_batch()
        parts = [ld.next_batch() for ld in ranks]
        starts = [set((p[:, 0] // 8).tolist()) for p in parts]
        assert all(not (starts[i] & starts[j]) for i in range(W) for j in range(i + 1, W))
        assert torch.equal(torch.cat(parts), g)


def test_too_small_split_is_a_clear_error():
    with pytest.raises(EdlmError, match="batch"):
        BlockLoader(TOKENS[:30], 8, 4)


def test_pad_per_document_mode():
    toks = np.arange(20, dtype=np.uint16)
    ld = BlockLoader(toks, 6, 2, shuffle=False, doc_boundaries=np.array([0, 3, 12, 20]), pad_id=99)
    b = ld.next_batch()
    assert b.tolist() == [[0, 1, 2, 99, 99, 99], [3, 4, 5, 6, 7, 8]]


@pytest.mark.parametrize("W", [1, 2, 3])
def test_eval_blocks_every_block_once(W):
    got = []
    for r in range(W):
        for b in iter_eval_blocks(TOKENS, 8, 7, rank=r, world_size=W):
            assert b.shape[0] <= 7
            got += (b[:, 0] // 8).tolist()
    assert sorted(got) == list(range(125))
    capped = list(iter_eval_blocks(TOKENS, 8, 7, max_blocks=10))
    assert sum(len(b) for b in capped) == 10
