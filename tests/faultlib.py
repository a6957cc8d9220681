"""Helpers of the fault-injection tests: damage a file, run the CLI in-process, snapshot a folder."""

import hashlib
import json
from pathlib import Path

from edlm.cli import main

MICRO = ["--preset", "micro", "--data", "synthetic", "--quiet"]


def damage(path: Path, how: str) -> None:
    """missing | truncated (first half kept) | zeroed (same size) | flipped (one bit in the middle) |
    garbage (not JSON) | empty-json ({})."""
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(path.stat().st_size))
    elif how == "flipped":
        b = bytearray(path.read_bytes())
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
    elif how == "garbage":
        path.write_bytes(b"\x00not json at all{")
    elif how == "empty-json":
        path.write_text("{}")
    else:
        raise ValueError(how)


def cli(capsys, argv) -> tuple[int, str]:
    """(exit code, stderr without notes). An unexpected exception escapes and fails the calling test."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = "\n".join(ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("edlm: note:"))
    return rc, err


def assert_one_clear_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and ": error: " in err, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def latest_dir(run: Path) -> Path:
    return run / json.loads((run / "latest.json").read_text())["dir"]


def loss_rows(run: Path) -> list:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def as_unbound(run: Path) -> None:
    """Make `run` what an edlm before run binding wrote: run.json without the corpus hashes, the latest
    checkpoint's identity only objective, data, mask_id and model (latest.json's state hash kept right)."""
    meta = json.loads((run / "run.json").read_text())
    for k in ("data_sha256", "tokenizer_sha256", "data_request"):
        meta.pop(k, None)
    (run / "run.json").write_text(json.dumps(meta))
    d = latest_dir(run)
    state = json.loads((d / "state.json").read_text())
    state["identity"] = {k: meta[k] for k in ("objective", "data", "mask_id", "model")}
    (d / "state.json").write_text(json.dumps(state))
    lj = json.loads((run / "latest.json").read_text())
    lj["state_sha256"] = hashlib.sha256((d / "state.json").read_bytes()).hexdigest()
    (run / "latest.json").write_text(json.dumps(lj))
