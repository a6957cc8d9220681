"""Semi-autoregressive generation: sequences longer than the model's context, block by block (MDLM paper,
section on arbitrary-length generation), for MDLM and EDLM alike.

The first block denoises positions [0, W) (W = the context the model was trained on). Every later block
slides the window `stride` tokens on: [hi - W, hi) with hi = previous hi + stride, so it sees the last
W - stride tokens already generated as fixed context and denoises the `stride` new ones. Fixed tokens
(an infill template or a prefix) keep their values in whichever block holds them; a block does not see
fixed tokens beyond its window (they become context once the window reaches them).

Earlier blocks never change: a block's window is handed to the ordinary sampler, which never touches a
token that is not MASK, and the positions before the new ones are all unmasked by then.
"""

from __future__ import annotations

import torch

from edlm.errors import EdlmError
from edlm.sampling.loop import SampleStats


def block_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (lo, hi) windows covering n positions: [(0, W), (W + s - W, W + s), ...], the last ending at n."""
    if window < 1 or not 1 <= stride <= window:
        raise EdlmError(f"stride {stride} must be between 1 and the block length {window}")
    hi = min(window, n)
    out = [(0, hi)]
    while hi < n:
        hi = min(hi + stride, n)
        out.append((max(0, hi - window), hi))
    return out


def sample_long(sample_block, x_init: torch.Tensor, window: int, stride: int, mask_id: int, steps: int, *,
                callback=None, on_choice=None, on_block=None):
    """x_init (B, N) with MASK where to generate -> (x (B, N), SampleStats summed over blocks).

    sample_block(x_win (B, w), callback, on_choice) -> (x_win, SampleStats): one ordinary sampler run.
    callback(i, x, t, ess) sees the FULL sequences (B, N) after every step, i counting on across blocks
    (block b's steps are b * steps + 0 .. steps - 1, where `steps` is the sampler's steps per block);
    on_choice(i, active, chosen, weights) likewise; on_block(b, lo, hi) is told where each block starts."""
    x = x_init.clone()
    total = SampleStats()
    offset = 0
    for b, (lo, hi) in enumerate(block_windows(x.shape[1], window, stride)):
        if on_block is not None:
            on_block(b, lo, hi)
        if not (x[:, lo:hi] == mask_id).any():
            continue  # all fixed already (an infill template's given block): nothing to denoise

        def cb(i, xw, t, e, lo=lo, hi=hi, off=offset):
            if callback is not None:
                full = x.clone()
                full[:, lo:hi] = xw
                callback(off + i, full, t, e)

        def oc(i, a, j, w, off=offset):
            on_choice(off + i, a, j, w)

        xw, st = sample_block(x[:, lo:hi], cb, None if on_choice is None else oc)
        x[:, lo:hi] = xw
        total.forwards += st.forwards
        total.energy_steps += st.energy_steps
        total.ess.extend(st.ess)
        total.ks.extend(st.ks)
        total.candidates += st.candidates
        offset += steps
    return x, total
