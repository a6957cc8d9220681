"""Corpora: build once into ``<cache>/<name>/`` (manifest + one token file per split), then memory-map.

    prepare("wiki-char")            # fetch sources, clean, tokenise, split, write; instant when done
    info("wiki-char")               # the summary of a prepared corpus
    load_split("wiki-char", "train")  # read-only np.memmap of token ids (uint16, or uint32 if needed)

Layout of ``<cache>/<name>/``: ``train.bin``, ``valid.bin``, ``test.bin`` (raw little-endian ids) and
``manifest.json`` (written last, atomically: sources with versions, licences and sha256, counts, split
sizes and file hashes). A corpus whose manifest is missing/corrupt or whose files do not match it is
rebuilt by ``prepare``. Builds happen in a temporary sibling folder that is renamed into place, so an
interrupted build leaves nothing half-written.

Splits are by document: documents are ordered by a hash of (corpus, index) and the first ones go to test
until it holds >= 5% of the characters, then valid likewise, the rest to train; each split keeps the
original document order. ``text8`` instead uses the standard 90M/5M/5M positional split.

Manifest reading and paths live in manifest.py, the split writers the builders share in writers.py; this
module checks split files, prepares (staging, builder, manifest, install) and loads.

``textfile`` is stored under the name ``textfile`` (one at a time): preparing it with another --source or
--tokenizer rebuilds it. ``textfile:NAME`` corpora sit side by side, one folder each (``textfile-NAME``); one is
never replaced by another text unless asked (`force`), since runs trained on it name it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edlm.data.manifest import (  # noqa: F401 (CORPORA, LANGUAGES, manifest, corpus_dir: re-exported)
    CORPORA,
    FORMAT_VERSION,
    LANGUAGES,
    SPLITS,
    corpus_dir,
    files_ok,
    manifest,
    prepare_hint,
    read_manifest,
    root_flag,
    sample_sha256,
    summary,
)
from edlm.data.names import textfile_name
from edlm.data.writers import (  # noqa: F401 (re-exported for the builders' callers)
    SplitWriter,
    split_documents,
    token_dtype,
    write_bpe_docs,
    write_char_docs,
)
from edlm.errors import EdlmError
from edlm.safe_io import WRITE_FAILURES, lies_within, write_error
from edlm.utils import atomic_write_json, sha256_file
from edlm.validate import out_dir


def info(name: str, *, root: str | Path | None = None) -> dict:
    d = corpus_dir(name, root)
    m = manifest(name, root)
    if not files_ok(d, m, verify_hash=False):
        raise EdlmError(f"corpus {name!r} in {d} does not match its manifest (files missing or truncated); "
                        f"rebuild it: {prepare_hint(name, root)}")  # fmt: skip
    return {**summary(m, d), "build_seconds": m.get("build_seconds"), "created": m.get("created")}


def load_split(name: str, split: str, *, root: str | Path | None = None) -> np.ndarray:
    """Read-only memmap of one split's token ids, checked against the manifest first (check_split)."""
    if split not in SPLITS:
        raise EdlmError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    d = corpus_dir(name, root)
    m = manifest(name, root)
    sp = m["splits"][split]
    check_split(name, d / sp["file"], sp, np.dtype(m["dtype"]).itemsize, root)
    if sp["tokens"] == 0:
        return np.zeros(0, dtype=m["dtype"])
    return np.memmap(d / sp["file"], dtype=m["dtype"], mode="r", shape=(sp["tokens"],))


# Files up to this size are hashed in full, once per process (sha256 runs at ~1 GB/s: <= ~0.3 s);
# bigger ones by SAMPLE_BLOCKS blocks spread over the file, compared with the manifest's sample_sha256.
FULL_HASH_MAX = 256 << 20
_verified: set = set()  # (path, size, mtime_ns, inode) already checked in this process


def check_split(name: str, p: Path, sp: dict, itemsize: int, root=None) -> None:
    """The split file exists with the manifest's size and hash; else one EdlmError naming the rebuild."""
    fix = f"rebuild the corpus: {prepare_hint(name, root, force=True)}"
    try:
        st = p.stat()
    except OSError:
        raise EdlmError(f"corpus file {p} is missing: {fix}") from None
    if st.st_size != sp["tokens"] * itemsize:
        raise EdlmError(f"corpus file {p} is truncated or damaged ({st.st_size} bytes, the manifest says "
                        f"{sp['tokens'] * itemsize}): {fix}")
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _verified:
        return
    if st.st_size <= FULL_HASH_MAX:
        ok = sha256_file(p) == sp["sha256"]
    elif "sample_sha256" in sp:
        ok = sample_sha256(p) == sp["sample_sha256"]
    else:  # a big file of a manifest written before sampled checksums: hashing it all would take minutes
        print(f"edlm: note: {p} is checked by size only; run `edlm data prepare {name}{root_flag(root)}` once to "
              "add sampled checksums to its manifest (no rebuild)", file=sys.stderr)
        ok = True
    if not ok:
        raise EdlmError(f"corpus file {p} is damaged (its checksum differs from the manifest's): {fix}")
    _verified.add(key)


def check_cache_writable(root: Path) -> None:
    """Before a build: the data cache can take it (one EdlmError naming $EDLM_DATA / --root if not)."""
    try:
        out_dir("the data cache", root)
    except EdlmError as e:
        raise EdlmError(f"{e} (set $EDLM_DATA, or pass --root, to a folder you can write)") from None


def _staging(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.building-"))


def _install(tmp: Path, dest: Path) -> None:
    """Move a finished build into place (replacing any old one) with renames only."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare(name: str, *, root: str | Path | None = None, force: bool = False,
            source: str | Path | None = None, tokenizer: str | None = None,
            train_tokens: int | None = None) -> dict:  # fmt: skip
    """Build corpus ``name`` (or reuse a valid existing build) and return its summary dict.

    Your own text: name "textfile:NAME" (several side by side), source a UTF-8 file or a folder of .txt files,
    tokenizer "chars" (the default there: the file's own characters, kept exactly), "bytes" (UTF-8 bytes, kept
    exactly), "char" (text8's 27 symbols: case, punctuation, digits and newlines are changed or dropped) or
    "gpt2"; the summary's dropped_share says how much of the text the corpus does not keep as it is (a warning
    above 1%). A name already holding another text is refused unless force=True.
    train_tokens: ground-truth languages only, the training split's size (default 2M tokens; None reuses
    whatever size is prepared). root: the data cache (default $EDLM_DATA or ~/.cache/edlm)."""
    from edlm.data import builders

    t0 = time.time()
    d = corpus_dir(name, root)
    root_path = d.parent
    builder: Callable = builders.builder_for(name)
    request = builders.request_for(name, source=source, tokenizer=tokenizer, train_tokens=train_tokens)
    if not force:
        m = read_manifest(d)
        if m is not None and textfile_name(name) and not builders.same_request(m, request):
            old = m.get("request", {})
            raise EdlmError(f"corpus {name!r} already holds {old.get('source')} ({old.get('tokenizer')} tokens), and "
                            "runs trained on it name it: prepare this text under another name (textfile:OTHER), "
                            "or pass `force` to replace it")
        if m is not None and files_ok(d, m, verify_hash=True) and builders.same_request(m, request):
            if any("sample_sha256" not in m["splits"][s] for s in SPLITS):  # built before sampled checksums
                for s in SPLITS:
                    m["splits"][s]["sample_sha256"] = sample_sha256(d / m["splits"][s]["file"])
                try:
                    atomic_write_json(d / "manifest.json", m)
                except EdlmError:  # a read-only cache: the build is usable as it is, only checked more slowly
                    pass
            return {**summary(m, d), "cached": True, "seconds": round(time.time() - t0, 3)}
    if source is not None and lies_within(source, d):
        raise EdlmError(f"`source` {source} lies inside {d}, the corpus folder that prepare replaces: move it "
                        "out first")
    check_cache_writable(root_path)
    tmp = _staging(root_path, name)
    try:
        meta, vocab_size = builder(tmp, root=root_path, request=request)
        m = {"format_version": FORMAT_VERSION, "corpus": name, "vocab_size": vocab_size,
             "mask_id": vocab_size, "dtype": token_dtype(vocab_size).name, "request": request,
             **meta}  # fmt: skip
        m["build_seconds"] = round(time.time() - t0, 2)
        m["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(tmp / "manifest.json", m)  # last: its presence marks a complete build
        _install(tmp, d)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in WRITE_FAILURES:  # nothing half-built is left, the old build stays
            raise write_error(e, d) from None
        raise
    return {**summary(m, d), "cached": False, "seconds": round(time.time() - t0, 2)}
