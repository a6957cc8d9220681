"""A corpus's manifest and paths: names, ``<cache>/<name>/``, reading manifest.json and checking its files.

Imports no other data module but names.py (a leaf), so tokenizers, languages and builders can read a
manifest without importing corpora (which builds corpora through the builders): data/ has no import cycle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edlm.data.names import LANGUAGES, folder_name, is_language, textfile_name
from edlm.errors import EdlmError
from edlm.utils import cache_root, sha256_file

CORPORA = (*LANGUAGES, "wiki-char", "text8", "prose-bpe", "textfile", "openwebtext", "lm1b", "wiki-char-small",
           "prose-bpe-small")
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1
SUMMARY_KEYS = ("corpus", "path", "vocab_size", "mask_id", "train_tokens", "valid_tokens", "test_tokens",
                "sources", "tokenizer", "chars", "documents", "entropy_rate_nats", "block_entropy_nats",
                "unigram_entropy_nats", "neighbour_entropy_nats", "knob", "dropped_share", "dropped_top",
                "warnings")  # fmt: skip
# A split file's sampled checksum: the size plus SAMPLE_BLOCKS blocks of SAMPLE_BLOCK bytes spread over it.
SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 1 << 16


def check_name(name: str) -> None:
    if not isinstance(name, str):
        raise EdlmError(f"a corpus name is a string, not {name!r}")
    if name not in CORPORA and not is_language(name) and textfile_name(name) is None:
        raise EdlmError(f"unknown corpus {name!r}; valid names: {', '.join(CORPORA)}, textfile:NAME (your own "
                        f"text, one corpus per NAME), and markov2-shareS / markov3-shareS with S in [0, 1] (the "
                        f"Markov language with its knob, e.g. markov2-share0.7)")  # fmt: skip


def corpus_dir(name: str, root: str | Path | None = None) -> Path:
    check_name(name)
    return Path(root or cache_root()) / folder_name(name)


def corpus_path(name, root=None) -> Path | None:
    """The folder of corpus `name` in the data cache, or None for no name or a name that is not a corpus (the
    command or the training that reads it says why): what a write check compares outputs with."""
    try:
        return corpus_dir(name, root) if name else None
    except EdlmError:
        return None


def root_flag(root) -> str:
    return f" --root {root}" if root else ""


def prepare_hint(name: str, root=None, force: bool = False) -> str:
    """How to (re)build corpus `name`, in both languages: the Python call and the command."""
    args = [repr(name)] + ([f"root={str(root)!r}"] if root else []) + (["force=True"] if force else [])
    return (f"edlm.prepare({', '.join(args)}) in Python, `edlm data prepare {name}"
            f"{' --force' if force else ''}{root_flag(root)}` on the command line")


def read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        return None
    if not all(isinstance(m.get("splits", {}).get(s), dict) for s in SPLITS):
        return None
    return m


def files_ok(d: Path, m: dict, verify_hash: bool) -> bool:
    itemsize = np.dtype(m["dtype"]).itemsize
    for s in SPLITS:
        sp = m["splits"][s]
        p = d / sp["file"]
        try:
            if p.stat().st_size != sp["tokens"] * itemsize:
                return False
        except OSError:
            return False
        if verify_hash and sha256_file(p) != sp["sha256"]:
            return False
    return True


def manifest(name: str, root: str | Path | None = None) -> dict:
    """The manifest of a prepared corpus (EdlmError naming `edlm data prepare NAME` if there is none)."""
    d = corpus_dir(name, root)
    m = read_manifest(d)
    if m is None:
        if d.exists():
            raise EdlmError(f"corpus {name!r} is damaged or incomplete in {d.parent} (manifest.json unreadable); "
                            f"rebuild it: {prepare_hint(name, root, force=True)}")
        raise EdlmError(f"corpus {name!r} is not prepared in {d.parent}; prepare it: {prepare_hint(name, root)}")
    return m


def summary(m: dict, d: Path) -> dict:
    out = {k: m[k] for k in SUMMARY_KEYS if k in m}
    out["path"] = str(d)
    for s in SPLITS:
        out[f"{s}_tokens"] = m["splits"][s]["tokens"]
    return out


# What a manifest says about WHEN and FROM WHERE a corpus was built, not WHAT it holds: left out of its hash,
# so re-preparing the same text (another day, from a copy at another path) keeps a run's binding.
# sample_sha256 is derived from the split files (and added to old manifests by `prepare`).
PROVENANCE = ("build_seconds", "created", "request", "sources")


def manifest_sha256(m: dict) -> str:
    """sha256 of a manifest's canonical content (sorted-key JSON, provenance left out): through the split
    files' sha256 it binds the corpus's tokens, through vocab_size, mask_id, dtype, tokenizer and the rest
    their meaning. What a run records as `data_sha256`; cheap (the manifest only, no data read)."""
    c = {k: v for k, v in m.items() if k not in PROVENANCE}
    c["splits"] = {s: {k: v for k, v in sp.items() if k != "sample_sha256"} for s, sp in m["splits"].items()}
    return hashlib.sha256(json.dumps(c, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sample_sha256(path: Path) -> str:
    """sha256 of the size plus SAMPLE_BLOCKS evenly spaced 64 KiB blocks (first and last included): catches a
    zeroed, truncated-and-padded or swapped file at the cost of reading 4 MiB."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        span = max(size - SAMPLE_BLOCK, 0)
        for i in range(SAMPLE_BLOCKS):
            f.seek(span * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()
