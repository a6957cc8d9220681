"""Checks of command-line values, run before any work starts: each failure is one EdlmError that names the
option and the range it accepts, and nothing has been written yet.

    at_least("--num", args.num, 1)
    finite_in("--temperature", args.temperature, lo=0, lo_open=True)
    out_file("--out", args.out)          # not a folder, and its folder exists (or can be made) and is writable
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from edlm.errors import EdlmError


def at_least(name: str, value, lo: int, *, optional: bool = False) -> None:
    """An integer option >= lo (None passes when optional)."""
    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or int(value) != value or value < lo:
        raise EdlmError(f"{name} must be an integer >= {lo}, got {value}")


def finite_in(name: str, value, lo: float | None = None, hi: float | None = None, *,
              lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite float option inside [lo, hi] (or the open ends asked for)."""
    bad = value is None or not math.isfinite(value)
    if not bad and lo is not None:
        bad = value <= lo if lo_open else value < lo
    if not bad and hi is not None:
        bad = value >= hi if hi_open else value > hi
    if bad:
        lo_s = "" if lo is None else f"{lo:g} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi:g}"
        raise EdlmError(f"{name} must be a finite number with {lo_s}{name}{hi_s}, got {value}")


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
    if window is not None and not (len(window) == 2 and 0 <= window[0] <= window[1] <= 1):
        raise EdlmError(f"window {window!r}: need (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, or None")
