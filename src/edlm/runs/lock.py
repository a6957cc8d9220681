"""One writer per run folder: RUN/train.lock, held by the training that writes the folder.

    with RunLock(run):      # EdlmError naming the holder (pid, host, since) if another training has it
        ...train...

The lock is an exclusive flock on RUN/train.lock, and the file says who holds it (pid, host, start time).
The kernel drops a flock when its process dies, however it dies, so a killed training never leaves a
stale lock: a left-over train.lock whose pid is dead is simply taken over. Where the filesystem has no
flock, the pid + host in the file decide instead (a dead pid on this host = stale).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from edlm.errors import EdlmError
from edlm.safe_io import open_in_place, write_error

LOCK_NAME = "train.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    def __init__(self, run: str | Path):
        self.path = Path(run) / LOCK_NAME
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.fd: int | None = None

    @staticmethod
    def _holder(fd: int) -> dict:
        """Who the file says holds it, read through our own fd (never reopened by name)."""
        try:
            h = json.loads(os.pread(fd, 4096, 0) or "{}")
            return h if isinstance(h, dict) else {}
        except (OSError, ValueError):
            return {}

    def _busy(self, h: dict) -> EdlmError:
        where = "this host" if h.get("host") == self.me["host"] else f"host {h.get('host', '?')}"
        return EdlmError(f"{self.path.parent} is in use by another training (pid {h.get('pid', '?')} on {where}, "
                         f"since {h.get('since', '?')}): wait for it or stop it, or use another `out`")

    def acquire(self) -> RunLock:
        for _ in range(5):  # the file may be replaced between open and flock: then look again
            # never through a link, a folder or a hard-linked file: the truncate below would hit its target
            fd = open_in_place(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                h = self._holder(fd)
                os.close(fd)
                raise self._busy(h) from None
            except OSError:  # no flock on this filesystem: trust the pid + host written in the file
                h = self._holder(fd)
                if h.get("pid") and (h.get("host") != self.me["host"] or _pid_alive(int(h["pid"]))):
                    os.close(fd)
                    raise self._busy(h) from None
            try:
                same = os.lstat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # a releasing holder unlinked it after our open: that inode locks nothing
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(self.me) + "\n").encode())
            except OSError as e:  # a full disk: say so now, before training, and leave no empty lock behind
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise write_error(e, self.path) from None
            self.fd = fd
            return self
        raise EdlmError(f"could not take {self.path}: other trainings keep taking it; retry")

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked, so nobody locks the old inode meanwhile
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
