"""Debian packages as sources: download one .deb with `apt-get download` and read files out of it.

A .deb is an ar archive whose member data.tar.{xz,gz,bz2} holds the installed files (names like
``./usr/share/...``). We read that tar in memory, decompressed through the cap of bounded.py; nothing is
installed and no root is needed to read.

A Debian source is pinned by its upstream version only ("3.11.2" matches 3.11.2-6+deb12u9): a stable release
replaces a package's Debian revision with each security or point update and drops the old one from the
index, so an exact pin would stop downloading within months. The manifest records the .deb actually read
(its file name carries the full version) and its sha256.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from edlm.data.bounded import decompressed, read_file
from edlm.errors import EdlmError

_AR_MAGIC = b"!<arch>\n"


def deb_prefix(name: str, version: str) -> str:
    """File-name prefix of every .deb of this package and upstream version (apt names them
    NAME_VERSION-REVISION_ARCH.deb; an epoch 'E:' is written 'E%3a')."""
    return f"{name}_{version}-"


def is_deb(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == _AR_MAGIC


def data_tar(path: str | Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb, opened in memory (the .deb and the decompressed tar within the cap)."""
    raw = read_file(Path(path))
    if not raw.startswith(_AR_MAGIC):
        raise EdlmError(f"{path} is not a Debian package (.deb); delete it and rerun to refetch")
    pos = len(_AR_MAGIC)
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            try:  # data.tar.zst: an EdlmError (tarfile cannot read zstd before Python 3.14)
                return tarfile.open(fileobj=decompressed(io.BytesIO(body), f"{name} in {Path(path).name}"), mode="r:")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise EdlmError(f"cannot read {name} in {path} ({e})") from None
        pos += 60 + size + (size & 1)  # members are padded to an even length
    raise EdlmError(f"{path} has no data.tar member; delete it and rerun to refetch")


def download(name: str, version: str, folder: Path, timeout: int = 900) -> Path:
    """`apt-get download NAME` into ``folder``; the .deb must be of upstream ``version``."""
    if shutil.which("apt-get") is None:
        raise EdlmError(f"`apt-get` is not available, so the Debian package {name} ({version}) cannot be "
                        f"fetched; on a Debian/Ubuntu machine run `apt-get download {name}` and copy the .deb "
                        "into the data cache's packages/ folder")  # fmt: skip
    try:
        proc = subprocess.run(["apt-get", "download", "-q", name], cwd=folder, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise EdlmError(f"`apt-get download {name}` timed out") from None
    got = sorted(folder.glob(f"{name}_*.deb"))
    if proc.returncode != 0 or not got:
        why = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise EdlmError(f"could not download the Debian package {name} ({why[-1] if why else proc.returncode}); "
                        "run `apt-get update` first, or fetch it on a Debian machine and copy the .deb into "
                        "the data cache's packages/ folder")  # fmt: skip
    if not got[0].name.startswith(deb_prefix(name, version)):
        raise EdlmError(f"apt-get offers {got[0].name}, not upstream version {version} of {name} (another "
                        f"Debian release?); copy a {deb_prefix(name, version)}*.deb into the data cache's "
                        "packages/ folder")  # fmt: skip
    return got[0]
