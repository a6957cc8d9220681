"""The samplers by name (SamplerConfig.sampler), each a function with loop.sample's arguments and result, and
the denoiser of one block (sampling/blocks.py) with or without a key/value cache. The hooks that
sampling/generate.py calls; a sampler registry can take these entries as they are.

    fn = sampler_fn("first-hit")
    x, stats = fn(denoise, schedule, mask_id, cfg, x_init=x, generator=g)
"""

from __future__ import annotations

from edlm.config.sampling import KV_CACHES, SAMPLERS
from edlm.errors import EdlmError
from edlm.sampling.firsthit import sample_first_hit
from edlm.sampling.kvcache import BlockDenoiser
from edlm.sampling.loop import sample
from edlm.sampling.threshold import sample_threshold

SAMPLER_FUNCTIONS = {"step": sample, "first-hit": sample_first_hit, "threshold": sample_threshold}


def sampler_fn(name: str):
    """The sampling function of a sampler name: step, first-hit or threshold."""
    try:
        return SAMPLER_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"sampler {name!r}: use one of {', '.join(SAMPLERS)}") from None


def block_denoiser(model, mask_id: int, tail, block_start: int, kv_cache: str = "none", refresh: int = 0):
    """The denoiser of one block: x = [left context | block] seen with `tail` appended (sampling/kvcache.py)."""
    return BlockDenoiser(model, mask_id, tail, block_start, kv_cache, refresh)


def _count(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


def check_fast(obj: str, *, sampler="step", threshold=0.9, block_size=None, kv_cache="none", kv_refresh=0,
               unmask="random", stride=None) -> None:
    """The options of the fast samplers (GenerateRequest's sampler, threshold, block_size, kv_cache, kv_refresh)
    for a run of objective `obj`, before any work."""
    if sampler not in SAMPLERS:
        raise EdlmError(f"`sampler` {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise EdlmError(f"`threshold` {threshold!r}: give a probability in [0, 1]")
    if kv_cache not in KV_CACHES:
        raise EdlmError(f"`kv_cache` {kv_cache!r}: use one of {', '.join(KV_CACHES)}")
    if block_size is not None and not _count(block_size, 1):
        raise EdlmError(f"`block_size` {block_size!r}: give 1 or more tokens per block")
    if not _count(kv_refresh, 0):
        raise EdlmError(f"`kv_refresh` {kv_refresh!r}: give 0 (only at each block's start) or more")
    used = [n for n, on in (("sampler", sampler != "step"), ("block_size", block_size is not None),
                            ("kv_cache", kv_cache != "none")) if on]
    if used and obj != "mdlm":
        raise EdlmError(f"`{used[0]}` applies to an MDLM run; this run is autoregressive")
    if sampler != "step" and unmask != "random":
        raise EdlmError(f"`unmask` {unmask!r} is a rule of the step sampler; the {sampler} sampler chooses its own "
                        "positions")
    if kv_cache != "none" and stride is None and block_size is None:
        raise EdlmError(f"`kv_cache` {kv_cache!r} keeps the keys and values outside the block being denoised: give "
                        "`block_size` (blocks within the sample) or `stride` (semi-autoregressive windows)")
