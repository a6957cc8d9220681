"""Small shared helpers: atomic writes, JSON summary lines, progress bars, device choice."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

# the writers live in safe_io (no links followed, no half files); re-exported for the many callers
from edlm.safe_io import (  # noqa: F401
    atomic_write_bytes,
    atomic_write_json,
    current_umask,
    file_mode_for,
    fsync_path,
    jsonable,
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def summary_line(obj: dict) -> str:
    """The one-line JSON summary every command prints last on stdout."""
    return json.dumps(obj, sort_keys=False, default=jsonable)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", disable: bool | None = None, **kw):
    """A tqdm bar on stderr (stdout is reserved for the JSON summary line)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = os.environ.get("EDLM_NO_PROGRESS", "") not in ("", "0")
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                dynamic_ncols=True, leave=False, **kw)


def quiet_default(quiet: bool | None) -> bool:
    """The API's `quiet`: as given, or (None) quiet unless stderr is a terminal, where a progress bar helps."""
    if quiet is not None:
        return bool(quiet)
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return True


DEVICE_FORM = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps', a torch.device, or 'auto' (or None): CUDA when present, else CPU.
    Anything else, or a device this machine lacks, is an EdlmError (not torch's error, much later)."""
    from edlm.errors import EdlmError

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = DEVICE_FORM.fullmatch(str(name)) if isinstance(name, (str, torch.device)) else None
    if m is None:
        raise EdlmError(f"device {name!r} is not understood: use auto, cpu, cuda or cuda:N")
    kind, index = m.group(1), None if m.group(2) is None else int(m.group(2))
    if kind == "cuda" and not torch.cuda.is_available():
        raise EdlmError(f"device {str(name)!r}: this machine has no CUDA device; use cpu (or auto)")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise EdlmError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps" and not (torch.backends.mps.is_available() and index in (None, 0)):
        raise EdlmError(f"device {str(name)!r}: this machine has no MPS device; use cpu (or auto)")
    return name if isinstance(name, torch.device) else torch.device(name)


def cache_root() -> Path:
    """Where corpora and fetched packages live: $EDLM_DATA, default ~/.cache/edlm."""
    return Path(os.environ.get("EDLM_DATA") or Path.home() / ".cache" / "edlm")


# --- fused kernels: when to compile them ---------------------------------------------------------------
# Compiling the fused kernels costs seconds in every new process (Dynamo + Inductor imports, Triton builds:
# ~16 s of a one-sample `edlm sample` on an H200), while the plain kernels they replace cost at most a few
# ms per call. So by default ("auto") each fused function runs plain until the time its plain calls are
# estimated to have lost (calls x FUSED_CALL_S + logits x FUSED_ELEMENT_S) reaches the cost of compiling
# it: the ski-rental rule, never worse than twice the better of "always plain" and "compile at once" for
# the job that actually runs. "on" compiles at the first call, "off" never. The environment wins
# (EDLM_FUSED=auto|on|off; EDLM_NO_FUSED=1 is off); else what the code asked for with fused_policy()
# (training and `--compile` runs ask for "on": they have chosen to pay compile time); else auto.
FUSED_COMPILE_S = 10.0
"""estimated seconds to compile one fused function in a fresh process (cold caches). Measured on an H200
(results/cold_start_h200.json, `calibration`): 13.5 s for the first (Dynamo + Inductor imports, compile
workers), 2.2 s for the next"""
FUSED_CALL_S = 3e-4
"""estimated seconds a plain call loses to its fused version: launches (the draw: 0.55 vs 0.13 ms at 16-128
rows; the log-normaliser: none)..."""
FUSED_ELEMENT_S = 1e-11
"""...plus this per logit (float32 copies the fused kernel never writes; at 16384 x 50304 bf16 logits the
draw loses 1.8e-11 s a logit, the log-normaliser 0.7e-11)"""
_fused_mode: list[str | None] = [None]


def fused_mode() -> str:
    """'auto', 'on' or 'off' (see above)."""
    if os.environ.get("EDLM_NO_FUSED") == "1":
        return "off"
    env = {"1": "on", "0": "off"}.get(os.environ.get("EDLM_FUSED", "").lower(), os.environ.get("EDLM_FUSED", ""))
    if env.lower() in ("auto", "on", "off"):
        return env.lower()
    return _fused_mode[0] or "auto"


def set_fused_default(mode: str | None) -> None:
    """The code's choice for the rest of the process ('auto', 'on', 'off'; None: auto); see above."""
    if mode not in (None, "auto", "on", "off"):
        raise ValueError(f"fused mode {mode!r}: use auto, on or off")
    _fused_mode[0] = mode


@contextmanager
def fused_policy(mode: str | None):
    """Within the block, fused kernels follow `mode` ('auto', 'on', 'off'; None: unchanged) unless the
    environment says otherwise. A function already compiled stays compiled."""
    if mode not in (None, "auto", "on", "off"):
        raise ValueError(f"fused mode {mode!r}: use auto, on or off")
    old = _fused_mode[0]
    _fused_mode[0] = mode or old
    try:
        yield
    finally:
        _fused_mode[0] = old


def _on_gpu(t) -> bool:
    return t.device.type == "cuda"


def fused_on_gpu(fn):
    """fn, torch.compiled (dynamic row count) when its first argument is a CUDA tensor, plain on the CPU.

    For small pointwise + reduction functions over (N, V) logits, where the compiled kernel reads the
    logits once instead of materialising float32 copies. Same math either way (the CPU tests check the
    plain one against references). When it compiles follows fused_mode() (above); if compiling fails (no
    Triton, say) it warns once and stays plain. `call.compiled` says whether it has compiled."""
    state = {"compiled": None, "lost_s": 0.0}

    def call(*args, **kwargs):
        if state["compiled"] is False or not _on_gpu(args[0]):
            return fn(*args, **kwargs)
        if state["compiled"] is None:
            mode = fused_mode()
            if mode == "off":
                return fn(*args, **kwargs)
            if mode == "auto":
                state["lost_s"] += FUSED_CALL_S + FUSED_ELEMENT_S * args[0].numel()
                if state["lost_s"] < FUSED_COMPILE_S:
                    return fn(*args, **kwargs)
            state["compiled"] = torch.compile(fn)
            call.compiled = True
        # Only the row count varies between calls: marking dim 0 dynamic keeps one graph for every count
        # while the vocabulary width stays a constant the kernels are tuned for (with every dimension
        # dynamic the draw's block-sum kernel averaged 0.84 ms per call in an EDLM run on an H100, and
        # EDLM's k = 2 overhead was 1.12x its cost model instead of 1.10x).
        for a in args:
            if torch.is_tensor(a) and a.dim() > 0:
                torch._dynamo.maybe_mark_dynamic(a, 0)
        try:
            return state["compiled"](*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure falls back to the same plain math
            import warnings

            warnings.warn(f"compiled {fn.__name__} unavailable ({type(e).__name__}: {e}); running it eagerly",
                          stacklevel=2)
            state["compiled"] = False
            call.compiled = False
            return fn(*args, **kwargs)

    call.__name__, call.__doc__, call.compiled = fn.__name__, fn.__doc__, False
    return call


_T_IMPORT = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc, 10 ms ticks), else since edlm was imported."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        if age >= 0:
            return age
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter() - _T_IMPORT


def non_finite(tree, prefix: str = "") -> str | None:
    """The name of the first floating tensor holding a NaN or inf in a (nested) state dict, else None."""
    if torch.is_tensor(tree):
        return prefix or "tensor" if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else ()
    for k, v in items:
        bad = non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if bad:
            return bad
    return None
