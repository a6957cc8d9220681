"""Reading pickle-based torch files without running code from them.

    osd = load_torch_file(path, "a training state", refused="...")          # tensors, numbers, containers only
    ck = load_torch_file(path, "a Lightning checkpoint", refused="...", foreign=LIGHTNING_FOREIGN)

Every pickle-based file edlm reads (a `pytorch_model.bin` or Lightning `.ckpt` given to `edlm convert`, a run's
`optim.pt`, an older run's `rng.pt`) goes through `torch.load(weights_only=True)`. Its unpickler looks each
GLOBAL up as the exact string "module.name" in a table (never an import, never getattr along a dotted path),
implements only the protocol-2 opcodes torch.save writes (no STACK_GLOBAL, INST, OBJ, EXT), calls only what
the table holds, appends/sets items only on real lists and dicts, and accepts only ('storage', ...) persistent
ids. The table is torch's own (tensors, storages, dtypes, OrderedDict, set, complex, bytearray...) plus, when
a caller passes `foreign`, one `Foreign` subclass per exact (module, name) pair of that list.

A Foreign class stands for a class we do not import (omegaconf's config nodes, the tokenizer MDLM pickled
into its hyper-parameters). Calling it (REDUCE), creating it (NEWOBJ) or setting its state (BUILD) only stores
what the file gave; it has no other behaviour. So the names of that list resolve to our inert classes, never
to the real ones (even when those are importable), and no real global outside torch's table is ever reached.
Anything else is refused before it runs, with one EdlmError that names what the file asked for.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from edlm.errors import EdlmError


class Foreign:
    """An object of a class a file names that edlm does not import: it keeps the constructor arguments and
    the state the file gave (`args`, `state`) and does nothing else."""

    origin = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, state=None)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __repr__(self):
        return f"<{self.origin} (not loaded)>"


def foreign_classes(pairs) -> tuple[type, ...]:
    """One Foreign subclass per exact (module, name) pair; torch files it under f'{module}.{name}'."""
    out = []
    for module, name in pairs:
        if not (module and name and name.isidentifier() and all(p.isidentifier() for p in module.split("."))):
            raise ValueError(f"not an exact (module, name) pair: {(module, name)!r}")
        # __name__ (torch 2.4) and __qualname__ (2.5+) both make the key "module.name"
        out.append(type(name, (Foreign,), {"__module__": module, "__qualname__": name,
                                           "origin": f"{module}.{name}"}))
    return tuple(out)


# What MDLM's AR baseline checkpoint (Lightning 2.x, omegaconf 2.3, transformers' GPT-2 tokenizer) names
# beyond tensors: its hyper-parameters hold the Hydra config and the tokenizer. Found by listing the GLOBALs
# of a checkpoint those libraries wrote; the omegaconf node types and typing names a config may also hold are
# listed with them. Builtin types appear as metadata (object_type=dict): here they become inert too.
LIGHTNING_FOREIGN = foreign_classes([
    ("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
    ("omegaconf.base", "ContainerMetadata"), ("omegaconf.base", "Metadata"),
    ("omegaconf.nodes", "AnyNode"), ("omegaconf.nodes", "StringNode"), ("omegaconf.nodes", "IntegerNode"),
    ("omegaconf.nodes", "FloatNode"), ("omegaconf.nodes", "BooleanNode"), ("omegaconf.nodes", "BytesNode"),
    ("omegaconf.nodes", "PathNode"), ("omegaconf.nodes", "EnumNode"),
    ("typing", "Any"), ("typing", "Dict"), ("typing", "List"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "str"), ("builtins", "bool"), ("collections", "defaultdict"),
    ("transformers.models.gpt2.tokenization_gpt2_fast", "GPT2TokenizerFast"),
    ("transformers.models.gpt2.tokenization_gpt2", "GPT2Tokenizer"),
    ("transformers.models.bert.tokenization_bert_fast", "BertTokenizerFast"),
    ("tokenizers", "Tokenizer"), ("tokenizers", "AddedToken"), ("tokenizers.models", "Model"),
])


@contextlib.contextmanager
def _registered(classes):
    """torch's safe-global table with `classes` added, restored after (public API since torch 2.4)."""
    if not classes:
        yield
        return
    ser = torch.serialization
    before = list(ser.get_safe_globals())
    ser.add_safe_globals(list(classes))
    try:
        yield
    finally:
        ser.clear_safe_globals()
        ser.add_safe_globals(before)


def load_torch_file(path, what: str, *, refused: str, damaged=None, foreign: tuple[type, ...] = ()):
    """torch.load(path, weights_only=True) on the CPU, with the Foreign classes `foreign` known by name.
    A refusal or an unreadable file is one EdlmError ending with the way out: `refused` when the file names
    what could run code, `damaged()` when it cannot be read (a callable: the advice may cost work)."""
    path = Path(path)
    try:
        # warnings.catch_warnings: torch warns about the pickle protocol of crafted files; the error says it all
        with _registered(foreign), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's unpickler met something it will not run, or garbage
        reason = _torch_reason(str(e))
        why = _refusal(path, foreign, reason)
        if why:
            raise EdlmError(f"refusing to load {path} ({what}): {why}; {refused}") from None
        error = f"UnpicklingError: {reason}"
    except Exception as e:  # noqa: BLE001 - a truncated zip raises RuntimeError, a bad header others
        error = f"{type(e).__name__}: {_first_line(e)}"
    advice = damaged() if damaged is not None else refused
    raise EdlmError(f"cannot read {path} as {what} ({error}): it is not a torch file, or it is truncated or "
                    f"corrupt; {advice}")


def _torch_reason(message: str) -> str:
    """torch's own reason, without the paragraph torch >= 2.6 wraps around it."""
    message = message.split("WeightsUnpickler error:")[-1].split("Check the documentation of torch.load")[0]
    return " ".join(message.split())[:300]


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


# Opcodes torch's weights-only unpickler does not implement; each can name or build an object.
_UNSUPPORTED = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "NEWOBJ_EX"}


# torch's messages when its unpickler refuses to call, build or fill something (else: a damaged stream).
_REFUSALS = ("Unsupported global", "unrecognized function", "Can only", "persistent_load", "blocked")


def _refusal(path: Path, foreign, torch_reason: str) -> str | None:
    """Why torch refused the file, in words, or None when it looks damaged rather than refused: the first
    global outside the table, else the first opcode torch does not run, else torch's reason when it is a
    refusal. (Only for the message: torch's unpickler is what refused.)"""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        known = set(_get_allowed_globals()) | {c.origin for c in foreign}
    except Exception:  # noqa: BLE001 - a private table; without it every name is reported
        known = {c.origin for c in foreign}
    names, ops = _pickle_contents(path)
    for n in names:
        if n not in known:
            return f"it names {n}, which could run code"
    if ops:
        return f"its pickle uses the {ops[0]} instruction, which could run code"
    if any(r in torch_reason for r in _REFUSALS):
        return f"it holds more than tensors, numbers and containers, which could run code ({torch_reason})"
    return None


def _as_torch_reads(module: str, name: str) -> str:
    """The key torch looks up for a GLOBAL: Python 2 names (protocol 2 writes __builtin__) mapped first."""
    try:
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:  # private tables; the stdlib's are the same up to a few entries
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
    return f"{module}.{name}"


def _pickle_contents(path: Path) -> tuple[list[str], list[str]]:
    """The GLOBAL/INST names ("module.name", as written) and unsupported opcodes of the pickles torch.load
    would read: data.pkl of a zip file, else the legacy format's leading pickles. pickletools only parses."""
    names, ops = [], []
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                with zipfile.ZipFile(f) as z:
                    pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                    streams, count = [io.BytesIO(z.read(pkl[0]))] if pkl else [], 1
            else:
                f.seek(0)
                streams, count = [f], 4  # magic number, protocol, sys info, then the object
            for stream in streams:
                for _ in range(count):
                    for op, arg, _pos in pickletools.genops(stream):
                        if op.name in ("GLOBAL", "INST"):
                            names.append(_as_torch_reads(*str(arg).split(" ", 1)))
                        if op.name in _UNSUPPORTED:
                            ops.append(op.name)
    except Exception:  # noqa: BLE001 - a damaged stream: report what was read so far
        pass
    return names, ops
