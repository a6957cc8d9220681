"""Block-wise generation: the positions to generate are denoised in left-to-right blocks, each by an ordinary
sampler run, inside the semi-autoregressive windows of sampling/semiar.py (or the one window of an in-context
sample). What a block's run sees and what it may change:

    window [lo, hi)                                 what the network sees (at most its context)
    [lo, a)   left context: earlier blocks, fixed   unmasked; never changes
    [a, b)    the block                             its MASK positions are generated
    [b, hi)   the tail: later blocks (MASK), fixed  seen by the network, never drawn here

The sampler is handed x = window[:, lo:b] (so an energy scores the left context and the block, never the
unknown tail) and a denoiser that appends the tail (sampling/kvcache.py, where the block's network calls may
reuse the keys and values of the positions outside it).

    plan = block_plan(n=256, window=64, stride=32, block=16)   # [(lo, a, b, hi), ...]
"""

from __future__ import annotations

import torch

from edlm.errors import EdlmError
from edlm.sampling.loop import SampleStats
from edlm.sampling.semiar import block_windows


def block_plan(n: int, window: int, stride: int, block: int | None = None) -> list[tuple[int, int, int, int]]:
    """(lo, a, b, hi) per block: the network's window [lo, hi) and the block [a, b) denoised in it. The windows
    are semiar.block_windows(n, window, stride); each window's new positions (from the previous window's end)
    are split into blocks of `block` (None: one block per window)."""
    if block is not None and block < 1:
        raise EdlmError(f"block size {block}: give 1 or more")
    out, done = [], 0
    for lo, hi in block_windows(n, window, stride):
        step = block or (hi - done)
        for a in range(done, hi, step):
            out.append((lo, a, min(a + step, hi), hi))
        done = hi
    return out


def add_stats(total: SampleStats, st: SampleStats) -> None:
    total.forwards += st.forwards
    total.energy_steps += st.energy_steps
    total.ess.extend(st.ess)
    total.ks.extend(st.ks)
    total.candidates += st.candidates


def sample_blocks(sample_view, x_init: torch.Tensor, plan, mask_id: int, steps: int, *, callback=None,
                  on_choice=None, on_block=None):
    """x_init (B, N) with MASK where to generate -> (x (B, N), SampleStats summed over blocks).

    sample_view(x (B, b - lo), tail (B, hi - b), a - lo, callback, on_choice) -> (x, SampleStats): one sampler
    run over a block. callback(i, x, t, ess) sees the FULL sequences (B, N) after every step, i counting on
    across blocks (a block takes max(steps, the steps it ran) indices); on_choice likewise; on_block(j, lo, b)
    is told where each block's view starts and ends."""
    x = x_init.clone()
    total = SampleStats()
    offset = 0
    for j, (lo, a, b, hi) in enumerate(plan):
        if on_block is not None:
            on_block(j, lo, b)
        if not (x[:, a:b] == mask_id).any():
            continue  # nothing to generate here (fixed tokens, a prefix)
        ran = [0]

        def cb(i, xv, t, e, lo=lo, b=b, off=offset, ran=ran):
            ran[0] = i + 1
            if callback is not None:
                full = x.clone()
                full[:, lo:b] = xv
                callback(off + i, full, t, e)

        def oc(i, act, ch, w, off=offset):
            on_choice(off + i, act, ch, w)

        xv, st = sample_view(x[:, lo:b], x[:, b:hi], a - lo, cb, None if on_choice is None else oc)
        x[:, lo:b] = xv
        add_stats(total, st)
        offset += max(steps, ran[0])
    return x, total
