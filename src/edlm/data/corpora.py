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

``textfile`` is stored under the name ``textfile`` (one at a time): preparing it with another --source or
--tokenizer rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edlm.data import fetch as F
from edlm.data.names import LANGUAGES, is_language
from edlm.errors import EdlmError
from edlm.utils import atomic_write_json, cache_root, progress

CORPORA = (*LANGUAGES, "wiki-char", "text8", "prose-bpe", "textfile", "openwebtext", "lm1b")
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1
SUMMARY_KEYS = ("corpus", "path", "vocab_size", "mask_id", "train_tokens", "valid_tokens", "test_tokens",
                "sources", "tokenizer", "chars", "documents", "entropy_rate_nats", "block_entropy_nats",
                "unigram_entropy_nats", "neighbour_entropy_nats", "knob")  # fmt: skip
WIKI_CHAR_MIN_CHARS = 7_000_000


def _check_name(name: str) -> None:
    if name not in CORPORA and not is_language(name):
        raise EdlmError(f"unknown corpus {name!r}; valid names: {', '.join(CORPORA)}, and "
                        f"markov2-shareS / markov3-shareS with S in [0, 1] (the Markov language with its knob, "
                        f"e.g. `edlm data prepare markov2-share0.7`)")  # fmt: skip


def corpus_dir(name: str, root: str | Path | None = None) -> Path:
    _check_name(name)
    return Path(root or cache_root()) / name


def _root_flag(root) -> str:
    return f" --root {root}" if root else ""


def _read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        return None
    if not all(isinstance(m.get("splits", {}).get(s), dict) for s in SPLITS):
        return None
    return m


def _files_ok(d: Path, m: dict, verify_hash: bool) -> bool:
    itemsize = np.dtype(m["dtype"]).itemsize
    for s in SPLITS:
        sp = m["splits"][s]
        p = d / sp["file"]
        try:
            if p.stat().st_size != sp["tokens"] * itemsize:
                return False
        except OSError:
            return False
        if verify_hash and F.sha256_file(p) != sp["sha256"]:
            return False
    return True


def manifest(name: str, root: str | Path | None = None) -> dict:
    """The manifest of a prepared corpus (EdlmError naming `edlm data prepare NAME` if there is none)."""
    d = corpus_dir(name, root)
    m = _read_manifest(d)
    if m is None:
        if d.exists():
            raise EdlmError(f"corpus {name!r} is damaged or incomplete in {d.parent} (manifest.json unreadable); "
                            f"rebuild it with `edlm data prepare {name} --force{_root_flag(root)}`")
        raise EdlmError(
            f"corpus {name!r} is not prepared in {d.parent}; run `edlm data prepare {name}{_root_flag(root)}`"
        )
    return m


def summary(m: dict, d: Path) -> dict:
    out = {k: m[k] for k in SUMMARY_KEYS if k in m}
    out["path"] = str(d)
    for s in SPLITS:
        out[f"{s}_tokens"] = m["splits"][s]["tokens"]
    return out


def info(name: str, *, root: str | Path | None = None) -> dict:
    d = corpus_dir(name, root)
    m = manifest(name, root)
    if not _files_ok(d, m, verify_hash=False):
        raise EdlmError(f"corpus {name!r} in {d} does not match its manifest (files missing or truncated); "
                        f"rebuild it with `edlm data prepare {name}{_root_flag(root)}`")  # fmt: skip
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
SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 1 << 16
_verified: set = set()  # (path, size, mtime_ns, inode) already checked in this process


def sample_sha256(path: Path) -> str:
    """sha256 of the size plus SAMPLE_BLOCKS evenly spaced 64 KiB blocks (first and last included): catches a
    zeroed, truncated-and-padded or swapped file at the cost of reading 4 MiB."""
    import hashlib

    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        span = max(size - SAMPLE_BLOCK, 0)
        for i in range(SAMPLE_BLOCKS):
            f.seek(span * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def check_split(name: str, p: Path, sp: dict, itemsize: int, root=None) -> None:
    """The split file exists with the manifest's size and hash; else one EdlmError naming the rebuild."""
    fix = f"rebuild the corpus with `edlm data prepare {name} --force{_root_flag(root)}`"
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
        ok = F.sha256_file(p) == sp["sha256"]
    elif "sample_sha256" in sp:
        ok = sample_sha256(p) == sp["sample_sha256"]
    else:  # a big file of a manifest written before sampled checksums: hashing it all would take minutes
        print(f"edlm: note: {p} is checked by size only; run `edlm data prepare {name}{_root_flag(root)}` once to "
              "add sampled checksums to its manifest (no rebuild)", file=sys.stderr)
        ok = True
    if not ok:
        raise EdlmError(f"corpus file {p} is damaged (its checksum differs from the manifest's): {fix}")
    _verified.add(key)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id incl. MASK fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size + 1 <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


# ---- building ------------------------------------------------------------------------------------


class SplitWriter:
    """Appends token chunks to <dir>/<split>.bin and counts tokens, characters and documents."""

    def __init__(self, folder: Path, vocab_size: int):
        self.folder, self.vocab_size, self.dtype = folder, vocab_size, token_dtype(vocab_size)
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.docs = dict.fromkeys(SPLITS, 0)
        self.chars = dict.fromkeys(SPLITS, 0)
        self._files = {s: open(folder / f"{s}.bin", "wb") for s in SPLITS}

    def add(self, split: str, ids, docs: int = 0, chars: int = 0) -> None:
        a = np.asarray(ids)
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        a.astype(self.dtype).tofile(self._files[split])
        self.tokens[split] += int(a.size)
        self.docs[split] += docs
        self.chars[split] += chars

    def close(self) -> dict:
        for f in self._files.values():
            f.close()
        return {s: {"file": f"{s}.bin", "tokens": self.tokens[s], "documents": self.docs[s],
                    "chars": self.chars[s], "sha256": F.sha256_file(self.folder / f"{s}.bin"),
                    "sample_sha256": sample_sha256(self.folder / f"{s}.bin")}
                for s in SPLITS}  # fmt: skip


def split_documents(name: str, lengths: list[int], fracs=(0.05, 0.05)) -> np.ndarray:
    """Split index per document (0 train, 1 valid, 2 test), deterministic in (name, index): documents in
    hash order fill test to fracs[1] of the characters, then valid to fracs[0], the rest is train."""
    n = len(lengths)
    keys = [hashlib.sha256(f"{name}:{i}".encode()).digest()[:8] for i in range(n)]
    order = sorted(range(n), key=keys.__getitem__)
    total = float(sum(lengths))
    out = np.zeros(n, dtype=np.int8)
    pos = 0
    # test first, then valid; each takes at least one document and leaves at least one for the others
    for split, frac, reserve in ((2, fracs[1], 2), (1, fracs[0], 1)):
        got = 0
        while n - pos > reserve and (got == 0 or got < frac * total):
            out[order[pos]] = split
            got += max(lengths[order[pos]], 1)
            pos += 1
    return out


def write_char_docs(w: SplitWriter, name: str, docs: list[str]) -> None:
    """text8-format documents -> char ids; a single space joins documents within a split."""
    from edlm.data.tokenizers import char_tokenizer

    tok = char_tokenizer()
    where = split_documents(name, [len(d) for d in docs])
    for si, s in enumerate(SPLITS):
        sel = [d for d, k in zip(docs, where, strict=True) if k == si]
        text = " ".join(sel)
        w.add(s, tok.encode_array(text), docs=len(sel), chars=len(text))


def write_bpe_docs(w: SplitWriter, name: str, docs: list[str], tok, batch: int = 256) -> None:
    """Documents -> GPT-2 ids with EOS after each document, tokenised in batches (tokenizers' threads)."""
    where = split_documents(name, [len(d) for d in docs])
    bar = progress(total=len(docs), desc=f"{name}: tokenising", unit="doc")
    eos = tok.eos_id
    for si, s in enumerate(SPLITS):
        sel = [d for d, k in zip(docs, where, strict=True) if k == si]
        for lo in range(0, len(sel), batch):
            chunk = sel[lo : lo + batch]
            ids = []
            for e in tok.encode_batch(chunk):
                ids.extend(e)
                ids.append(eos)
            w.add(s, np.asarray(ids, dtype=np.int64), docs=len(chunk), chars=sum(map(len, chunk)))
            bar.update(len(chunk))
    bar.close()


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
            source: str | Path | None = None, tokenizer: str | None = None) -> dict:  # fmt: skip
    """Build corpus ``name`` (or reuse a valid existing build) and return its summary dict."""
    from edlm.data import builders

    t0 = time.time()
    d = corpus_dir(name, root)
    root_path = d.parent
    builder: Callable = builders.builder_for(name)
    request = builders.request_for(name, source=source, tokenizer=tokenizer)
    if not force:
        m = _read_manifest(d)
        if m is not None and _files_ok(d, m, verify_hash=True) and builders.same_request(m, request):
            if any("sample_sha256" not in m["splits"][s] for s in SPLITS):  # built before sampled checksums
                for s in SPLITS:
                    m["splits"][s]["sample_sha256"] = sample_sha256(d / m["splits"][s]["file"])
                atomic_write_json(d / "manifest.json", m)
            return {**summary(m, d), "cached": True, "seconds": round(time.time() - t0, 3)}
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**summary(m, d), "cached": False, "seconds": round(time.time() - t0, 2)}
