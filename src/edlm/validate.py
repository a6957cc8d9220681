"""Checks of option and argument values, run before any work starts: each failure is one EdlmError that names
the option and the range it accepts, and nothing has been written yet. The command line passes its flag names
("--num"), the Python API its argument names ("num").

    at_least("--num", args.num, 1)
    finite_in("--temperature", args.temperature, lo=0, lo_open=True)
    out_file("--out", args.out)          # not a folder, and its folder exists (or can be made) and is writable
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path

from edlm.errors import EdlmError

SEED_LIMIT = 2 ** 64
"""seeds are 64-bit: 0 <= seed < 2**64 (torch.Generator.manual_seed takes no more)"""
TEMPERATURE_MIN = 1e-6
"""the smallest importance-sampling temperature: energies are float32 sums, so gaps under ~1e-6 of their size
are rounding and a temperature this low already puts all the weight on the lowest energy; tinier (and
denormal) ones only overflow -E / temperature to inf and the weights to NaN"""

MAX_LOOP = 1_000_000
"""the most passes of one loop an argument may ask for (sampler steps, t draws, bound draws): a million passes
already take minutes to hours, and beyond it a typo (an extra 000) would hang the job instead of failing"""
STEPS_WHY = "each step is a pass of the sampler loop, and past a few times the length most steps unmask nothing"
BOUND_STEPS_WHY = "long before that many steps the T-step bound is the continuous-time one"
PASSES_WHY = "each is a pass over every batch"


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def at_least(name: str, value, lo: int, *, optional: bool = False) -> None:
    """An integer option >= lo (None passes when optional)."""
    if value is None and optional:
        return
    if not _is_int(value) or value < lo:
        raise EdlmError(f"{name} must be an integer >= {lo}, got {value!r}")


def at_most(name: str, value, hi: int, why: str) -> None:
    """An integer option <= hi, a sanity bound; `why` says what is beyond it."""
    if value is not None and value > hi:
        raise EdlmError(f"{name} {value} is more than {hi}: {why}")


def seed(name: str, value) -> None:
    """A random seed: an integer in [0, 2**64)."""
    at_least(name, value, 0)
    if value >= SEED_LIMIT:
        raise EdlmError(f"{name} must be below 2**64 = {SEED_LIMIT} (seeds are 64-bit), got {value}")


def finite_in(name: str, value, lo: float | None = None, hi: float | None = None, *,
              lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite float option inside [lo, hi] (or the open ends asked for)."""
    bad = not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value)
    if not bad and lo is not None:
        bad = value <= lo if lo_open else value < lo
    if not bad and hi is not None:
        bad = value >= hi if hi_open else value > hi
    if bad:
        lo_s = "" if lo is None else f"{lo:g} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi:g}"
        raise EdlmError(f"{name} must be a finite number with {lo_s}{name}{hi_s}, got {value!r}")


def temperature(name: str, value) -> None:
    """An importance-sampling temperature: finite, > 0, and not below TEMPERATURE_MIN."""
    finite_in(name, value, lo=0, lo_open=True)
    if value < TEMPERATURE_MIN:
        raise EdlmError(f"{name} {value:g} is below {TEMPERATURE_MIN:g}: at {TEMPERATURE_MIN:g} the weights "
                        "softmax(-E / temperature) already all go to the lowest energy, and smaller values overflow "
                        f"to NaN; give {TEMPERATURE_MIN:g} or more")


def token_ids(name: str, ids, vocab: int, mask_id: int | None = None) -> list[int]:
    """Token ids given as a list, tuple or 1-D tensor/array of integers in [0, vocab), none of them the MASK
    id -> a list of ints. Text as bytes, floats, nested lists and other types are refused."""
    if isinstance(ids, (str, bytes, bytearray)):
        kind = "bytes" if not isinstance(ids, str) else "text"
        raise EdlmError(f"{name} is {kind} where token ids are wanted: give a list of integer ids"
                        + (" (or text: decode the bytes first)" if kind == "bytes" else ""))
    if hasattr(ids, "tolist") and getattr(ids, "ndim", 1) == 1:
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise EdlmError(f"{name} {ids!r} is not understood: give text or a list of integer token ids")
    for p, i in enumerate(ids):
        if not _is_int(i):
            raise EdlmError(f"{name}: position {p} holds {i!r}, not an integer token id")
        if mask_id is not None and i == mask_id:
            raise EdlmError(f"{name}: position {p} holds the MASK id {mask_id}; fixed tokens cannot be MASK "
                            "(to leave positions blank, use an infill)")
        if not 0 <= i < vocab:
            raise EdlmError(f"{name}: token {i} at position {p} is outside the vocabulary (0..{vocab - 1})")
    return [int(i) for i in ids]


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above path's parent (what mkdir -p would create under)."""
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def out_file(name: str, path) -> None:
    """An output FILE: not an existing folder, and creatable/replaceable by us. Creates nothing."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise EdlmError(f"{name} {p} is a folder; give a file path such as {p / 'out.jsonl'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise EdlmError(f"{name} {p} exists and is read-only; choose another path or make it writable")
    _check_dir_writable(name, p)


def out_dir(name: str, path) -> None:
    """An output FOLDER: not an existing file, and creatable (or writable) by us. Creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise EdlmError(f"{name} {p} is a file, not a folder; choose a folder path")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise EdlmError(f"{name} {p} is not writable; choose another folder or fix its permissions")
        return
    _check_dir_writable(name, p)


def _check_dir_writable(name: str, p: Path) -> None:
    anc = _writable_ancestor(p)
    if not anc.is_dir():
        raise EdlmError(f"{name} {p}: {anc} is not a folder; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise EdlmError(f"{name} {p}: cannot write in {anc} (permission denied); choose another path")


def existing_path(name: str, path) -> None:
    if path is not None and not Path(path).exists():
        raise EdlmError(f"{name} {path} does not exist; check the path")


def window_in_unit(window) -> None:
    """An importance-sampling window (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, or None (an argument's check)."""
    ok = window is None or (isinstance(window, (list, tuple)) and len(window) == 2
                            and all(isinstance(w, Real) and not isinstance(w, bool) for w in window)
                            and 0 <= window[0] <= window[1] <= 1)
    if not ok:
        raise EdlmError(f"window {window!r}: need (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, or None")
