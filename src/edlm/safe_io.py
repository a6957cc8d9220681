"""Where and how edlm writes files: every file it creates, replaces or appends to goes through here.

    atomic_write_bytes(path, data)   # a temp file (random name, O_EXCL | O_NOFOLLOW) renamed over `path`
    f = AppendFile(path, new=True)   # O_APPEND | O_NOFOLLOW, a plain file with one name; each write whole
    check_outputs({"--out": out}, reads={"--ckpt": run})   # before any work: no output is an input

The rules they keep:
- Nothing is written through a symbolic link. A rename acts on the link itself, so an output named by a link
  replaces the link with the new file and never touches what it pointed to; files opened in place (appends,
  the training lock) refuse a link, a folder, or a file with a second name (hard link).
- A reader sees the old file or the new one, never half of one.
- A failed write (a full disk, a read-only folder) is one EdlmError naming the path and the way out, and
  leaves the old file as it was and no temporary file behind; an append is cut back to where it began.
- No output is one of the command's inputs or lies inside a folder it reads (compared resolved, so links and
  '..' do not hide it, and by identity, so hard links do not either).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edlm.errors import EdlmError


def current_umask() -> int:
    try:  # Linux >= 4.7 reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode_for(path: str | os.PathLike) -> int:
    """The mode a plain `open(path, "w")` would leave: the old file's mode when replacing a plain file, else
    0o666 minus the umask. (mkstemp creates 0600 files; a replaced samples file must not turn private. A
    link's target lends no mode: it is not what gets replaced.)"""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~current_umask()


def _fix(code) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space (or choose a path on another disk) and run again"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "choose a folder you can write, or make this one writable"
    if code == errno.EISDIR:
        return "a folder is where a file belongs: move it away or choose another path"
    if code == errno.ENOTDIR:
        return "a file is where a folder belongs on that path: move it away or choose another path"
    if code == errno.ELOOP:
        return "it is a symbolic link, which edlm never writes through: remove the link or choose another path"
    return "check the path and the disk, then run again"


def free_mib(path) -> float | None:
    """Free space (MiB) on the disk holding `path` (its nearest existing folder), None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 2**20
    except OSError:
        return None


def write_error(e: OSError, path=None) -> EdlmError:
    """An OSError met while writing `path`, as one EdlmError that says what to do. (numpy and others raise
    OSError without an errno for a short write: a full disk then shows in the free space.)"""
    where = path if path is not None else (e.filename or "a file")
    code, free = e.errno, free_mib(where)
    if code is None and free is not None and free < 1:
        code = errno.ENOSPC
    room = f"; {free:.1f} MiB free there" if free is not None and code in (errno.ENOSPC, errno.EDQUOT) else ""
    return EdlmError(f"cannot write {where} ({e.strerror or e}{room}): {_fix(code)}")


def os_error(e: OSError) -> EdlmError:
    """Any OSError that reached the command line (the machine's state, not the input), as one EdlmError."""
    where = f"{e.filename}: " if e.filename else ""
    return EdlmError(f"{where}{e.strerror or e}: {_fix(e.errno)}")


WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, None)
"""errno values that mean the disk, not the data, made a write fail (None: a short write, as numpy reports)"""


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename that follows never exposes lost data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, path) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace, so readers never see half a file. The temp name
    is random and created exclusively (never an existing file or a link); if `path` is a link, the link is
    replaced, not written through. On failure the old file is untouched and the temp file is gone."""
    path = Path(path)
    _make_parent(path)
    if path.is_dir() and not path.is_symlink():
        raise EdlmError(f"cannot write {path}: it is a folder; move it away or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(e, path) from None
    try:
        os.fchmod(fd, file_mode_for(path))
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(e, path) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n").encode())


def jsonable(o: Any) -> Any:
    """json.dumps' default= for paths, tensors and numpy values."""
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def open_in_place(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """os.open for a file edlm keeps and rewrites in place (a lock, a log): never through a link, only a plain
    file with one name. -> the fd. An existing link, folder, fifo or hard-linked file is an EdlmError; with
    O_EXCL, an existing name is FileExistsError."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EEXIST and os.path.islink(path)):
            raise EdlmError(f"{path} is a symbolic link, which edlm never writes through: remove it "
                            "(it is not a file edlm made) and run again") from None
        if e.errno == errno.EEXIST:  # asked for a new file (O_EXCL): the caller knows what that means
            raise
        raise write_error(e, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = "a file with another name too (a hard link)" if stat.S_ISREG(st.st_mode) else "not a plain file"
        raise EdlmError(f"{path} is {what}, so edlm will not write it: remove it and run again")
    os.set_blocking(fd, True)
    return fd


class AppendFile:
    """A file appended to in place (metrics.jsonl, sample rows as they come): opened without following a link
    (new=True: created, never an existing name: FileExistsError), and each write lands whole or is cut back to where it
    began, so a full disk leaves complete lines only."""

    def __init__(self, path: str | os.PathLike, *, new: bool = False):
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
        self.fd: int | None = open_in_place(self.path, flags, 0o666)  # minus the umask, like open(path, "a")

    def write(self, data: str | bytes) -> None:
        data = data.encode() if isinstance(data, str) else data
        start = os.fstat(self.fd).st_size
        try:
            _write_all(self.fd, data)
        except OSError as e:
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass
            raise write_error(e, self.path) from None

    def lock(self) -> bool:
        """Take an exclusive lock on it (held until close); False if another process holds one."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def locked_by_other(path: str | os.PathLike) -> bool:
    """Whether another process holds a lock (AppendFile.lock) on `path` now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# --- outputs against inputs ---------------------------------------------------------------------------------

def _resolved(p) -> str:
    return os.path.realpath(os.fspath(p))


def _inside(child: str, parent: str) -> bool:
    return child != parent and os.path.commonpath([child, parent]) == parent


def lies_within(path, folder) -> bool:
    """Whether `path` is `folder` or lies inside it, resolved (links and '..' followed)."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or _inside(p, f)


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, Any], reads: Mapping[str, Any] | None = None, *,
                  folders: Iterable[str] = ()) -> None:
    """Before any work: every output path (name -> path, None = not given) is non-empty, is not one of the
    inputs (name -> file or folder the command reads; None = none), does not lie inside an input folder, is
    not the same file as another output and does not lie inside an output folder (the output names listed
    in `folders`, which the command fills). One EdlmError naming the two and the fix."""
    outs = {k: v for k, v in outputs.items() if v is not None}
    for name, p in outs.items():
        if not str(p).strip():
            raise EdlmError(f"{name} is empty: give a path")
    ins = {k: v for k, v in (reads or {}).items() if v is not None and str(v).strip()}
    folders = set(folders)
    for name, p in outs.items():
        rp = _resolved(p)
        for iname, q in ins.items():
            rq = _resolved(q)
            if rp == rq or _same_file(p, q):
                raise EdlmError(f"{name} {p} is {q} ({iname}), which this command reads: writing it would "
                                f"destroy an input; give {name} another path")
            if _inside(rp, rq):
                raise EdlmError(f"{name} {p} lies inside {q} ({iname}), which this command reads: give {name} a "
                                f"path outside {q}")
    for (name, p), (oname, o) in itertools.combinations(outs.items(), 2):
        if _resolved(p) == _resolved(o):
            raise EdlmError(f"{name} and {oname} are the same path {p}: one output would overwrite the other; "
                            "give them different paths")
    for name, p in outs.items():
        for oname, o in outs.items():
            if oname in folders and _inside(_resolved(p), _resolved(o)):
                raise EdlmError(f"{name} {p} lies inside {o} ({oname}), which this command fills: give {name} a "
                                f"path outside {o}")


def check_kinds(base: str | os.PathLike, files: Iterable[str] = (), folders: Iterable[str] = ()) -> None:
    """Entries of `base` that, where present, must be plain files (`files`) or folders (`folders`): a folder
    where a file belongs, a file where a folder belongs, or a link in place of a file, is one EdlmError."""
    base = Path(base)
    for name in files:
        p = base / name
        if p.is_symlink():
            raise EdlmError(f"{p} is a symbolic link where edlm keeps a file of its own: remove the link (the "
                            "file it points to is not part of the run) and run again")
        if p.exists() and not p.is_file():
            raise EdlmError(f"{p} is a folder (or other non-file) where a file belongs: move it away and run "
                            "again")
    for name in folders:
        p = base / name
        if p.exists() and not p.is_dir():
            raise EdlmError(f"{p} is a file where a folder belongs: move it away and run again")
